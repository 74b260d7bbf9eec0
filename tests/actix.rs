//! The actix-web middleware and extractor (feature `actix`) on a real actix-web `HttpServer` on
//! 127.0.0.1, driven by hyper's client and by raw TCP: every conformance vector, the rejections
//! as the Tower layer answers them, the body limit while the body streams, and the
//! deduplication behaviours against the memory store and a real `redis-server`.

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use metigan_webhook::idempotency::{
    BoxFuture, Claim, Dedupe, DedupeKey, Duplicate, IdempotencyStore, MemoryStore, StoreError,
    Token,
};
use metigan_webhook::{MetiganSignatureLayer, Reason, Rejection, VerifiedEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use common::{cases, now, post as http_post, Answer};

const SECRET: &str = "whsec_actix_suite";
const PATH: &str = "/hook";

// ---------------------------------------------------------------------------------------------
// A real actix-web server
// ---------------------------------------------------------------------------------------------

/// An actix-web `HttpServer` on a free port of 127.0.0.1, on its own thread and actix system
/// (two workers); stopped when dropped.
struct ActixServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for ActixServer {
    fn drop(&mut self) {
        // Sends the stop command at once; the server's thread ends by itself.
        drop(self.handle.stop(false));
    }
}

/// Serves `App::new().configure(configure)` on every worker.
fn serve<F>(configure: F) -> ActixServer
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    serve_with(configure, true)
}

/// [`serve`], choosing `HttpServer::h1_allow_half_closed` (`true`, actix-web's default, lets a
/// request run to its end after the client closed its side of the connection).
fn serve_with<F>(configure: F, allow_half_closed: bool) -> ActixServer
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || App::new().configure(configure.clone()))
                .workers(2)
                .h1_allow_half_closed(allow_half_closed)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)
                .unwrap()
                .run();
            tx.send(server.handle()).unwrap();
            server.await.unwrap();
        });
    });
    let handle = rx.recv().expect("the server started");
    ActixServer { addr, handle }
}

/// Puts the reason of the `Rejection` (or the code of the `Duplicate`) the middleware left in
/// the response's extensions in an `x-rejection` header, as an outer middleware would reshape it.
fn expose_rejection<B>(mut response: ServiceResponse<B>) -> ServiceResponse<B> {
    let code = {
        let extensions = response.response().extensions();
        extensions
            .get::<Rejection>()
            .map(|r| r.reason().code())
            .or_else(|| extensions.get::<Duplicate>().map(|d| d.code()))
    };
    if let Some(code) = code {
        response.headers_mut().insert(
            HeaderName::from_static("x-rejection"),
            HeaderValue::from_static(code),
        );
    }
    response
}

/// POSTs with hyper's client; `Err` when the server closes the connection without an answer
/// (a handler that panicked).
async fn try_post(addr: SocketAddr, headers: &[(&str, &str)], body: String) -> Result<Answer, ()> {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let mut req = http::Request::post(format!("http://{addr}{PATH}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = client.request(req.body(Full::new(Bytes::from(body))).unwrap());
    let response = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("an answer within 10 s")
        .map_err(|_| ())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|_| ())?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// Every conformance vector
// ---------------------------------------------------------------------------------------------

/// Echoes what the handler saw, so the test can check it: the event, and that the body
/// extractor reads the same verified bytes.
async fn echo(event: VerifiedEvent, body: web::Bytes) -> HttpResponse {
    assert_eq!(event.body(), &body[..]);
    HttpResponse::Ok().body(format!(
        "ok {} {}",
        event.event_type(),
        event.secret_index()
    ))
}

#[tokio::test]
async fn every_vector_through_the_middleware_over_http() {
    // One server, one resource per case, each wrapped with the layer of its case.
    let cases = cases();
    let layers: Vec<MetiganSignatureLayer> = cases
        .iter()
        .map(|case| {
            let now = case.now;
            MetiganSignatureLayer::builder()
                .secrets(&case.secrets)
                .tolerance(Duration::from_secs(case.tolerance))
                .clock(move || now)
                .build()
                .unwrap()
        })
        .collect();
    let server = serve(move |config| {
        for (i, layer) in layers.iter().enumerate() {
            config.service(
                web::resource(format!("/case/{i}"))
                    .wrap(layer.clone())
                    .route(web::post().to(echo)),
            );
        }
    });
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(sig) = &case.signature_header {
            headers.push(("x-webhook-signature", sig));
        }
        if let Some(ts) = &case.timestamp_header {
            headers.push(("x-webhook-timestamp", ts));
        }
        let answer = http_post(
            server.addr,
            &format!("/case/{i}"),
            &headers,
            case.body.clone(),
        )
        .await;
        let got = if answer.status.is_success() {
            assert!(
                answer.text().starts_with("ok "),
                "{}: {}",
                case.name,
                answer.text()
            );
            "ok".to_owned()
        } else {
            let text = answer.text();
            let code = text.split(':').next().unwrap_or_default().to_owned();
            let reason = Reason::from_code(&code)
                .unwrap_or_else(|| panic!("{}: unexpected body {text:?}", case.name));
            assert_eq!(answer.status, reason.status(), "{}", case.name);
            assert_eq!(
                text,
                format!("{code}: {}\n", reason.description()),
                "{}",
                case.name
            );
            assert_eq!(
                answer.headers["content-type"], "text/plain; charset=utf-8",
                "{}",
                case.name
            );
            code
        };
        if got != case.expect {
            failures.push(format!(
                "{}: expected {}, got {got}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// Rejections, the body limit, the extractor
// ---------------------------------------------------------------------------------------------

/// Counts the handler's calls.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl Counter {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A server whose one route is behind `layer`, the rejection exposed in `x-rejection`.
fn serve_counted(layer: MetiganSignatureLayer, counter: &Counter) -> ActixServer {
    let counter = counter.clone();
    serve(move |config| {
        let counter = counter.clone();
        config.service(
            web::resource(PATH)
                .wrap(layer.clone())
                .wrap_fn(|req, srv| {
                    let answer = srv.call(req);
                    async move { answer.await.map(expose_rejection) }
                })
                .route(
                    web::post().to(move |event: VerifiedEvent, body: web::Bytes| {
                        counter.0.fetch_add(1, Ordering::SeqCst);
                        async move {
                            assert_eq!(event.body(), &body[..]);
                            HttpResponse::Ok().body(format!(
                                "{} {}",
                                event.event_type(),
                                event.webhook_id().unwrap_or("-")
                            ))
                        }
                    }),
                ),
        );
    })
}

fn layer_with_limit(limit: usize) -> MetiganSignatureLayer {
    MetiganSignatureLayer::builder()
        .secret(SECRET)
        .body_limit(limit)
        .build()
        .unwrap()
}

/// A response read from a raw connection: status, head, `Content-Length` body.
struct RawAnswer {
    status: u16,
    head: String,
    body: String,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then_some(value.trim())
        })
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` body, within 10 s.
async fn read_response(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> RawAnswer {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = Vec::new();
        let head_end = loop {
            if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read the answer");
            assert!(
                n > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(&buffer)
            );
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
        let mut answer = RawAnswer {
            status: head.split(' ').nth(1).unwrap().parse().unwrap(),
            head,
            body: String::new(),
        };
        let len: usize = answer
            .header("content-length")
            .map_or(0, |l| l.parse().unwrap());
        while buffer.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read the answer body");
            assert!(n > 0, "closed inside the answer body");
            buffer.extend_from_slice(&chunk[..n]);
        }
        answer.body = String::from_utf8_lossy(&buffer[head_end..head_end + len]).into_owned();
        answer
    })
    .await
    .expect("an answer within 10 s")
}

fn request_head(headers: &[(&str, &str)]) -> String {
    let mut head = format!("POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head + "\r\n"
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_answered_before_the_body_is_sent() {
    let counter = Counter::default();
    let server = serve_counted(layer_with_limit(1024), &counter);
    // Only the head goes out; the connection stays open. Waiting for the body would time out.
    let signature = metigan_webhook::sign(SECRET, now(), b"{}");
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = request_head(&[
        ("x-webhook-signature", &signature),
        ("content-type", "application/json"),
        ("content-length", "10000000"),
    ]);
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert!(
        answer.body.starts_with("body_too_large: "),
        "{}",
        answer.body
    );
    assert_eq!(answer.header("x-rejection"), Some("body_too_large"));
    assert_eq!(counter.get(), 0);
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_at_the_limit() {
    let counter = Counter::default();
    let limit = 4096;
    let server = serve_counted(layer_with_limit(limit), &counter);
    let signature = metigan_webhook::sign(SECRET, now(), b"{}");
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = request_head(&[
        ("x-webhook-signature", &signature),
        ("transfer-encoding", "chunked"),
    ]);
    write.write_all(head.as_bytes()).await.unwrap();
    // No length, and a body that never ends: 1 KiB chunks until the test stops. Only the limit
    // enforced while the body streams can produce an answer.
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            let mut piece = format!("{:x}\r\n", 1024).into_bytes();
            piece.extend_from_slice(&[b'x'; 1024]);
            piece.extend_from_slice(b"\r\n");
            while write.write_all(&piece).await.is_ok() {
                sent.fetch_add(1024, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let answer = read_response(&mut read).await;
    writer.abort();
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert!(
        answer.body.starts_with("body_too_large: "),
        "{}",
        answer.body
    );
    assert_eq!(answer.header("x-rejection"), Some("body_too_large"));
    assert!(sent.load(Ordering::SeqCst) > limit);
    assert_eq!(counter.get(), 0);
}

#[tokio::test]
async fn a_chunked_body_at_the_limit_passes_and_one_byte_more_does_not() {
    let counter = Counter::default();
    let body = common::event_body("email.sent", "msg-chunked");
    let server = serve_counted(layer_with_limit(body.len()), &counter);
    for (extra, status) in [("", 200), (" ", 413)] {
        let padded = format!("{body}{extra}");
        let signature = metigan_webhook::sign(SECRET, now(), padded.as_bytes());
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let mut request = request_head(&[
            ("x-webhook-signature", &signature),
            ("x-webhook-id", "wh_chunked"),
            ("transfer-encoding", "chunked"),
        ])
        .into_bytes();
        // In pieces of 7 bytes.
        for piece in padded.as_bytes().chunks(7) {
            request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            request.extend_from_slice(piece);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        stream.write_all(&request).await.unwrap();
        let answer = read_response(&mut stream).await;
        assert_eq!(answer.status, status, "{}{}", answer.head, answer.body);
        if status == 200 {
            assert_eq!(answer.body, "email.sent wh_chunked");
        }
    }
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn rejections_are_answered_as_the_tower_layer_answers_them() {
    let counter = Counter::default();
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .max_buffered_bytes(1000)
        .build()
        .unwrap();
    let server = serve_counted(layer, &counter);
    let addr = server.addr;
    let body = common::event_body("email.opened", "m-1");

    let unsigned = http_post(addr, PATH, &[], body.clone()).await;
    let forged = metigan_webhook::sign("whsec_other", now(), body.as_bytes());
    let forged = http_post(
        addr,
        PATH,
        &[("x-webhook-signature", &forged)],
        body.clone(),
    )
    .await;
    let stale = metigan_webhook::sign(SECRET, now() - 301, body.as_bytes());
    let stale = http_post(addr, PATH, &[("x-webhook-signature", &stale)], body.clone()).await;
    let not_json = metigan_webhook::sign(SECRET, now(), b"[1]");
    let not_json = http_post(addr, PATH, &[("x-webhook-signature", &not_json)], "[1]").await;
    // Within the 1 MiB limit, but over the bound on bytes buffered at once: 503, not read.
    let big = "x".repeat(2000);
    let over_budget = metigan_webhook::sign(SECRET, now(), big.as_bytes());
    let over_budget = http_post(addr, PATH, &[("x-webhook-signature", &over_budget)], big).await;

    for (answer, reason) in [
        (&unsigned, Reason::MissingSignature),
        (&forged, Reason::SignatureMismatch),
        (&stale, Reason::TimestampOutOfTolerance),
        (&not_json, Reason::InvalidPayload),
        (&over_budget, Reason::Overloaded),
    ] {
        assert_eq!(answer.status, reason.status(), "{reason}");
        assert_eq!(
            answer.text(),
            format!("{}: {}\n", reason.code(), reason.description())
        );
        assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(answer.headers["x-rejection"], reason.code());
    }
    assert_eq!(over_budget.headers["retry-after"], "5");
    assert!(!forged.headers.contains_key("retry-after"));
    assert_eq!(
        counter.get(),
        0,
        "the handler never runs for a rejected request"
    );

    let sig = metigan_webhook::sign(SECRET, now(), body.as_bytes());
    let ok = http_post(
        addr,
        PATH,
        &[("x-webhook-signature", &sig), ("x-webhook-id", "wh_1")],
        body,
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "email.opened wh_1");
    assert!(!ok.headers.contains_key("x-rejection"));
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn on_the_post_route_the_method_is_checked_before_the_signature() {
    let counter = Counter::default();
    let c = counter.clone();
    let server = serve(move |config| {
        let c = c.clone();
        let handler = move |_event: VerifiedEvent| {
            c.0.fetch_add(1, Ordering::SeqCst);
            async { HttpResponse::Ok().body("OK") }
        };
        config.service(
            web::resource(PATH).route(web::post().to(handler).wrap(layer_with_limit(1024))),
        );
    });
    let get = common::send(
        http::Request::get(format!("http://{}{PATH}", server.addr))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    let unsigned = http_post(server.addr, PATH, &[], "{}").await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    let event = common::event_body("email.sent", "m-1");
    let answer = common::post_signed(server.addr, PATH, SECRET, &event).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn the_extractor_without_the_middleware_answers_500() {
    let server = serve(|config| {
        config.route(
            PATH,
            web::post().to(|_event: VerifiedEvent| async { "never" }),
        );
    });
    let body = common::event_body("email.sent", "m-1");
    let sig = metigan_webhook::sign(SECRET, now(), body.as_bytes());
    let answer = http_post(server.addr, PATH, &[("x-webhook-signature", &sig)], body).await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.text(),
        "webhook receiver misconfigured: signature layer missing\n"
    );
}

/// The value of the counter `metigan_webhook_requests_total{outcome="<outcome>"}` in a
/// Prometheus scrape (0 when absent).
fn requests_total(scrape: &str, outcome: &str) -> u64 {
    let series = format!("metigan_webhook_requests_total{{outcome=\"{outcome}\"}} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn the_middleware_records_the_same_metrics_as_the_tower_layer() {
    // The process-wide recorder: other tests of this binary record too, so the counts are
    // compared as at-least deltas.
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let layer = MetiganSignatureLayer::new(SECRET).unwrap();
    let server = serve(move |config| {
        config.route(PATH, web::post().to(echo).wrap(layer.clone()));
    });
    let before = handle.render();
    let body = common::event_body("email.sent", "m-metrics");
    for _ in 0..3 {
        let sig = metigan_webhook::sign(SECRET, now(), body.as_bytes());
        let answer = http_post(
            server.addr,
            PATH,
            &[("x-webhook-signature", &sig)],
            body.clone(),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    let forged = format!("t={},v1={}", now(), "0".repeat(64));
    for _ in 0..2 {
        let answer = http_post(
            server.addr,
            PATH,
            &[("x-webhook-signature", &forged)],
            body.clone(),
        )
        .await;
        assert_eq!(answer.status, 401);
    }
    let after = handle.render();
    let grew = |outcome| requests_total(&after, outcome) - requests_total(&before, outcome);
    assert!(grew("accepted") >= 3, "{after}");
    assert!(grew("signature_mismatch") >= 2, "{after}");
    assert!(
        after.contains(metigan_webhook::metrics::VERIFICATION_DURATION_SECONDS),
        "the verification time is recorded: {after}"
    );
}

// ---------------------------------------------------------------------------------------------
// Deduplication
// ---------------------------------------------------------------------------------------------

/// What the handler saw: calls per `<event>:<messageId>`, and a gate for slow handlers.
#[derive(Clone, Default)]
struct Handler {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    gate: Arc<Notify>,
    started: Arc<Notify>,
}

impl Handler {
    fn calls(&self, key: &str) -> usize {
        self.calls.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }

    /// The handler's behaviour is chosen by `data.mode` of the event.
    async fn handle(self, event: VerifiedEvent) -> HttpResponse {
        let key = format!(
            "{}:{}",
            event.event_type(),
            event.message_id().unwrap_or("-")
        );
        let count = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(key).or_default();
            *count += 1;
            *count
        };
        match event
            .data()
            .get("mode")
            .and_then(|m| m.as_str())
            .unwrap_or("ok")
        {
            "fail-once" if count == 1 => HttpResponse::InternalServerError().body("try again"),
            "panic-once" if count == 1 => panic!("handler panicked on purpose"),
            "gate" => {
                self.started.notify_one();
                self.gate.notified().await;
                HttpResponse::Ok().body("OK")
            }
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                HttpResponse::Ok().body("OK")
            }
            _ => HttpResponse::Ok().body("OK"),
        }
    }
}

fn body(event: &str, message_id: Option<&str>, mode: &str) -> String {
    let id = message_id.map_or(String::new(), |id| format!(r#""messageId":"{id}","#));
    format!(r#"{{"event":"{event}",{id}"data":{{"recipient":"a@example.com","mode":"{mode}"}}}}"#)
}

async fn deliver(addr: SocketAddr, body: &str) -> Answer {
    deliver_with(addr, body, &[]).await
}

async fn deliver_with(addr: SocketAddr, body: &str, extra: &[(&str, &str)]) -> Answer {
    let sig = metigan_webhook::sign(SECRET, now(), body.as_bytes());
    let mut headers = vec![("x-webhook-signature", sig.as_str())];
    headers.extend_from_slice(extra);
    http_post(addr, PATH, &headers, body.to_owned()).await
}

/// Delivers until the answer is 200, while it is 409 (a claim released in the background),
/// for at most 5 s.
async fn deliver_until_ok(addr: SocketAddr, body: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = deliver(addr, body).await.status;
        if status == StatusCode::OK {
            return;
        }
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the claim was released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server deduplicating with `dedupe`. Inside the middleware, a `wrap_fn` answers the first
/// request whose body asks for it (`"mode":"error-once"`) with an error instead of calling the
/// handler, as a failing inner middleware would.
fn serve_dedupe(dedupe: Dedupe) -> (ActixServer, Handler) {
    serve_dedupe_with(dedupe, true)
}

fn serve_dedupe_with(dedupe: Dedupe, allow_half_closed: bool) -> (ActixServer, Handler) {
    let handler = Handler::default();
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .deduplicate(dedupe)
        .build()
        .unwrap();
    let h = handler.clone();
    let errored = Arc::new(AtomicBool::new(false));
    let server = serve_with(
        move |config| {
            let h = h.clone();
            let errored = errored.clone();
            config.service(
                web::resource(PATH)
                    .wrap_fn(move |req, srv| {
                        use actix_web::HttpMessage;
                        let fail = req
                            .extensions()
                            .get::<VerifiedEvent>()
                            .and_then(|e| {
                                e.data()
                                    .get("mode")
                                    .and_then(|m| m.as_str())
                                    .map(str::to_owned)
                            })
                            .is_some_and(|mode| mode == "error-once")
                            && !errored.swap(true, Ordering::SeqCst);
                        let answer = (!fail).then(|| srv.call(req));
                        async move {
                            match answer {
                                Some(answer) => answer.await,
                                None => {
                                    Err(actix_web::error::ErrorServiceUnavailable("database down"))
                                }
                            }
                        }
                    })
                    .wrap(layer.clone())
                    .wrap_fn(|req, srv| {
                        let answer = srv.call(req);
                        async move { answer.await.map(expose_rejection) }
                    })
                    .route(web::post().to(move |event: VerifiedEvent| h.clone().handle(event))),
            );
        },
        allow_half_closed,
    );
    (server, handler)
}

async fn concurrent_duplicates_run_once(dedupe: Dedupe) {
    let (server, handler) = serve_dedupe(dedupe);
    let addr = server.addr;
    let event = body("email.delivered", Some("m-1"), "gate");
    let first = tokio::spawn({
        let event = event.clone();
        async move { deliver(addr, &event).await }
    });
    handler.started.notified().await;
    // The same delivery while the first runs: 409 with Retry-After, the handler not called.
    let second = deliver(addr, &event).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text());
    assert_eq!(second.headers["retry-after"], "5");
    assert_eq!(second.headers["x-rejection"], "in_flight");
    assert_eq!(
        second.text(),
        "in_flight: this event is being processed; retry later\n"
    );
    handler.gate.notify_one();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    // After its success: 200 without running the handler.
    let third = deliver(addr, &event).await;
    assert_eq!(third.status, StatusCode::OK);
    assert_eq!(third.text(), "OK");
    assert!(!third.headers.contains_key("retry-after"));
    assert_eq!(third.headers["x-rejection"], "already_processed");
    assert_eq!(handler.calls("email.delivered:m-1"), 1);
}

async fn simultaneous_duplicates_run_once(dedupe: Dedupe) {
    let (server, handler) = serve_dedupe(dedupe);
    let addr = server.addr;
    let event = body("email.opened", Some("m-2"), "ok");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let event = event.clone();
            tokio::spawn(async move { deliver(addr, &event).await.status })
        })
        .collect();
    for task in tasks {
        let status = task.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "{status}"
        );
    }
    assert_eq!(handler.calls("email.opened:m-2"), 1);
}

async fn non_2xx_releases(dedupe: Dedupe) {
    let (server, handler) = serve_dedupe(dedupe);
    let event = body("email.bounced", Some("m-3"), "fail-once");
    assert_eq!(deliver(server.addr, &event).await.status, 500);
    assert_eq!(
        deliver(server.addr, &event).await.status,
        200,
        "the retry runs"
    );
    assert_eq!(deliver(server.addr, &event).await.status, 200);
    assert_eq!(handler.calls("email.bounced:m-3"), 2);
}

async fn panic_releases(dedupe: Dedupe) {
    let (server, handler) = serve_dedupe(dedupe);
    let event = body("email.clicked", Some("m-4"), "panic-once");
    let sig = metigan_webhook::sign(SECRET, now(), event.as_bytes());
    // actix-web does not catch a handler's panic: the connection is dropped without an answer,
    // and the unwinding future releases its claim from its destructor.
    let answer = try_post(server.addr, &[("x-webhook-signature", &sig)], event.clone()).await;
    assert!(answer.is_err() || answer.unwrap().status.is_server_error());
    deliver_until_ok(server.addr, &event).await;
    assert_eq!(deliver(server.addr, &event).await.status, 200);
    assert_eq!(handler.calls("email.clicked:m-4"), 2);
}

async fn error_releases(dedupe: Dedupe) {
    let (server, handler) = serve_dedupe(dedupe);
    let event = body("email.sent", Some("m-5"), "error-once");
    let failed = deliver(server.addr, &event).await;
    assert_eq!(failed.status, 503, "{}", failed.text());
    assert_eq!(failed.text(), "database down");
    assert_eq!(handler.calls("email.sent:m-5"), 0);
    assert_eq!(
        deliver(server.addr, &event).await.status,
        200,
        "the retry runs"
    );
    assert_eq!(deliver(server.addr, &event).await.status, 200);
    assert_eq!(handler.calls("email.sent:m-5"), 1);
}

async fn client_that_leaves_releases(dedupe: Dedupe) {
    // By default actix-web runs a request to its end after its client left; without
    // half-closed connections it drops the request's future with the connection.
    let (server, handler) = serve_dedupe_with(dedupe, false);
    let slow = body("email.failed", Some("m-6"), "slow");
    // The client gives up while the handler runs: the request's future is dropped, and its
    // claim released from the guard's destructor.
    let attempt =
        tokio::time::timeout(Duration::from_millis(300), deliver(server.addr, &slow)).await;
    assert!(attempt.is_err(), "the slow handler is still running");
    deliver_until_ok(server.addr, &body("email.failed", Some("m-6"), "ok")).await;
    assert_eq!(handler.calls("email.failed:m-6"), 2);
}

async fn slow_handler_keeps_its_claim(dedupe: Dedupe) {
    // A lease of 300 ms and a handler that runs until released, well past two leases.
    let (server, handler) = serve_dedupe(dedupe.lease(Duration::from_millis(300)));
    let addr = server.addr;
    let event = body("email.opened", Some("m-lease"), "gate");
    let first = tokio::spawn({
        let event = event.clone();
        async move { deliver(addr, &event).await }
    });
    handler.started.notified().await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let retry = deliver(addr, &event).await;
    assert_eq!(retry.status, StatusCode::CONFLICT, "{}", retry.text());
    handler.gate.notify_one();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(deliver(addr, &event).await.status, StatusCode::OK);
    assert_eq!(handler.calls("email.opened:m-lease"), 1, "run once");
}

async fn lease_and_ttl_expire(store: Arc<dyn IdempotencyStore>, dedupe: Dedupe) {
    let dedupe = dedupe
        .lease(Duration::from_secs(1))
        .ttl(Duration::from_secs(1));
    let (server, handler) = serve_dedupe(dedupe);
    let addr = server.addr;
    // A holder that died: a claim nobody will complete.
    let token = metigan_webhook::idempotency::new_token();
    let claim = store
        .claim("contact.created:m-8", &token, Duration::from_secs(1))
        .await;
    assert_eq!(claim.unwrap(), Claim::Acquired);
    let event = body("contact.created", Some("m-8"), "ok");
    assert_eq!(deliver(addr, &event).await.status, StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(deliver(addr, &event).await.status, 200, "lease expired");
    assert_eq!(deliver(addr, &event).await.status, 200);
    assert_eq!(
        handler.calls("contact.created:m-8"),
        1,
        "done within the TTL"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(deliver(addr, &event).await.status, 200);
    assert_eq!(
        handler.calls("contact.created:m-8"),
        2,
        "the done key expired"
    );
}

async fn keys_and_unverified_requests(dedupe: Dedupe) {
    let (server, handler) = serve_dedupe(dedupe);
    let addr = server.addr;
    // A forged request with the same messageId never claims the key.
    let event = body("email.delivered", Some("m-9"), "ok");
    let forged = metigan_webhook::sign("whsec_attacker", now(), event.as_bytes());
    let answer = http_post(
        addr,
        PATH,
        &[("x-webhook-signature", &forged)],
        event.clone(),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(deliver(addr, &event).await.status, 200);
    assert_eq!(handler.calls("email.delivered:m-9"), 1);
    // Other event types of the same email are all processed.
    for kind in ["email.opened", "email.clicked"] {
        assert_eq!(
            deliver(addr, &body(kind, Some("m-9"), "ok")).await.status,
            200
        );
        assert_eq!(handler.calls(&format!("{kind}:m-9")), 1);
    }
    // No messageId: not deduplicated.
    let anonymous = body("audience.updated", None, "ok");
    deliver(addr, &anonymous).await;
    deliver(addr, &anonymous).await;
    assert_eq!(handler.calls("audience.updated:-"), 2);
}

async fn alternative_keys(dedupe: Dedupe) {
    // X-Webhook-Id: two bodies with one id are one delivery.
    let (server, handler) = serve_dedupe(dedupe.clone().key(DedupeKey::WebhookId));
    let id = [("x-webhook-id", "delivery-1")];
    deliver_with(server.addr, &body("email.sent", Some("a"), "ok"), &id).await;
    deliver_with(server.addr, &body("email.sent", Some("b"), "ok"), &id).await;
    assert_eq!(handler.total(), 1);

    // Body digest: only byte-identical bodies are duplicates.
    let (server, handler) = serve_dedupe(dedupe.clone().key(DedupeKey::BodyDigest));
    let same = body("email.sent", None, "ok");
    deliver(server.addr, &same).await;
    deliver(server.addr, &same).await;
    deliver(server.addr, &same.replace("a@example.com", "b@example.com")).await;
    assert_eq!(handler.total(), 2);

    // A custom function of the request head (converted from actix-web's): a header of ours.
    let key = DedupeKey::custom(|_event, parts| {
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(parts.uri.path(), PATH);
        assert!(parts
            .extensions
            .get::<metigan_webhook::PeerAddr>()
            .is_some());
        parts
            .headers
            .get("x-delivery")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let (server, handler) = serve_dedupe(dedupe.key(key));
    let one = [("x-delivery", "d-1")];
    deliver_with(server.addr, &body("email.sent", Some("x"), "ok"), &one).await;
    deliver_with(server.addr, &body("email.opened", Some("y"), "ok"), &one).await;
    deliver_with(
        server.addr,
        &body("email.opened", Some("y"), "ok"),
        &[("x-delivery", "d-2")],
    )
    .await;
    assert_eq!(handler.total(), 2);
}

/// The shared scenarios as tests of one store. `$setup` is an async fn returning what must
/// stay alive during the test (a Redis server) and the store (cheap to clone).
macro_rules! shared_suite {
    ($setup:ident) => {
        #[tokio::test]
        async fn concurrent_duplicates_run_once() {
            let (_keep, store) = $setup().await;
            super::concurrent_duplicates_run_once(Dedupe::new(store)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn simultaneous_duplicates_run_once() {
            let (_keep, store) = $setup().await;
            super::simultaneous_duplicates_run_once(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn non_2xx_releases() {
            let (_keep, store) = $setup().await;
            super::non_2xx_releases(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn panic_releases() {
            let (_keep, store) = $setup().await;
            super::panic_releases(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn error_releases() {
            let (_keep, store) = $setup().await;
            super::error_releases(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn client_that_leaves_releases() {
            let (_keep, store) = $setup().await;
            super::client_that_leaves_releases(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn slow_handler_keeps_its_claim() {
            let (_keep, store) = $setup().await;
            super::slow_handler_keeps_its_claim(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn lease_and_ttl_expire() {
            let (_keep, store) = $setup().await;
            let handle = Arc::new(store.clone());
            super::lease_and_ttl_expire(handle, Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn keys_and_unverified_requests() {
            let (_keep, store) = $setup().await;
            super::keys_and_unverified_requests(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn alternative_keys() {
            let (_keep, store) = $setup().await;
            super::alternative_keys(Dedupe::new(store)).await;
        }
    };
}

/// A store shared with the test.
struct SharedStore<S>(Arc<S>);

impl<S> Clone for SharedStore<S> {
    fn clone(&self) -> Self {
        SharedStore(self.0.clone())
    }
}

impl<S: IdempotencyStore> IdempotencyStore for SharedStore<S> {
    fn claim(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> BoxFuture<Result<Claim, StoreError>> {
        self.0.claim(key, token, lease)
    }
    fn complete(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
    ) -> BoxFuture<Result<bool, StoreError>> {
        self.0.complete(key, token, ttl)
    }
    fn release(&self, key: &str, token: &Token) -> BoxFuture<Result<(), StoreError>> {
        self.0.release(key, token)
    }
    fn release_detached(&self, key: &str, token: &Token) {
        self.0.release_detached(key, token)
    }
    fn hold(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> metigan_webhook::idempotency::Hold {
        self.0.hold(key, token, lease)
    }
}

/// A store that cannot be reached: every operation fails.
struct DownStore;

fn failure<T: Send + 'static>() -> BoxFuture<Result<T, StoreError>> {
    Box::pin(std::future::ready(Err(StoreError::new("injected failure"))))
}

impl IdempotencyStore for DownStore {
    fn claim(&self, _: &str, _: &Token, _: Duration) -> BoxFuture<Result<Claim, StoreError>> {
        failure()
    }
    fn complete(&self, _: &str, _: &Token, _: Duration) -> BoxFuture<Result<bool, StoreError>> {
        failure()
    }
    fn release(&self, _: &str, _: &Token) -> BoxFuture<Result<(), StoreError>> {
        failure()
    }
}

/// A store that is down answers 503 with Retry-After without running the handler, or, failing
/// open, runs it.
async fn store_down_answers_503_or_fails_open<F: Future<Output = ()>>(
    closed: Dedupe,
    open: Dedupe,
    before_the_outage: impl FnOnce(SocketAddr) -> F,
) -> (SocketAddr, Handler, ActixServer, ActixServer) {
    let (server, handler) = serve_dedupe(closed);
    let (open_server, open_handler) = serve_dedupe(open);
    before_the_outage(server.addr).await;
    let event = body("email.delivered", Some("m-11"), "ok");
    let answer = deliver(server.addr, &event).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    assert_eq!(answer.headers["retry-after"], "5");
    assert_eq!(
        answer.text(),
        "store_unavailable: deduplication store unreachable; retry later\n"
    );
    assert_eq!(
        handler.calls("email.delivered:m-11"),
        0,
        "not run while the store is down"
    );
    let answer = deliver(open_server.addr, &event).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(open_handler.calls("email.delivered:m-11"), 1);
    (server.addr, handler, server, open_server)
}

mod memory {
    use super::*;

    async fn setup() -> ((), SharedStore<MemoryStore>) {
        ((), SharedStore(Arc::new(MemoryStore::default())))
    }

    shared_suite!(setup);

    /// actix-web's default (half-closed connections allowed): the request of a client that
    /// left runs to its end, and its handler's 2xx marks the key done.
    #[tokio::test]
    async fn by_default_a_client_that_leaves_does_not_stop_its_handler() {
        let (server, handler) = serve_dedupe(Dedupe::in_memory());
        let event = body("email.opened", Some("m-left"), "gate");
        let attempt =
            tokio::time::timeout(Duration::from_millis(300), deliver(server.addr, &event)).await;
        assert!(attempt.is_err(), "the handler is still running");
        handler.started.notified().await;
        let retry = deliver(server.addr, &event).await;
        assert_eq!(retry.status, StatusCode::CONFLICT, "still in flight");
        handler.gate.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let retry = deliver(server.addr, &event).await;
            if retry.status == StatusCode::OK {
                assert_eq!(retry.headers["x-rejection"], "already_processed");
                break;
            }
            assert_eq!(retry.status, StatusCode::CONFLICT);
            assert!(
                tokio::time::Instant::now() < deadline,
                "the handler finished"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(handler.calls("email.opened:m-left"), 1);
    }

    #[tokio::test]
    async fn a_store_that_is_down_answers_503_or_fails_open() {
        let noop = |_| async {};
        super::store_down_answers_503_or_fails_open(
            Dedupe::new(DownStore),
            Dedupe::new(DownStore).fail_open(),
            noop,
        )
        .await;
    }
}

mod redis {
    use super::redis_server::RedisServer;
    use super::*;
    use metigan_webhook::idempotency::RedisStore;

    /// A fresh server per test: tests run in parallel and one of them stops its server.
    async fn store() -> (RedisServer, RedisStore) {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url()).await.unwrap();
        (server, store)
    }

    shared_suite!(store);

    #[tokio::test]
    async fn an_unreachable_redis_answers_503_or_fails_open_then_recovers() {
        let (mut redis, store) = store().await;
        let before = body("email.delivered", Some("m-10"), "ok");
        let redis_ref = &mut redis;
        let (addr, handler, _server, _open) = super::store_down_answers_503_or_fails_open(
            Dedupe::new(store.clone()),
            Dedupe::new(store).fail_open(),
            |addr| async move {
                assert_eq!(deliver(addr, &before).await.status, 200);
                redis_ref.stop();
            },
        )
        .await;
        // Redis back: the retry is processed.
        redis.restart();
        let event = body("email.delivered", Some("m-11"), "ok");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = deliver(addr, &event).await;
            if answer.status == StatusCode::OK {
                break;
            }
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(
                tokio::time::Instant::now() < deadline,
                "the store reconnects"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(handler.calls("email.delivered:m-11"), 1);
    }
}

//! The layer served by bare hyper 1 (through hyper-util) over `hyper::body::Incoming` on
//! 127.0.0.1, with real TCP: what the inner service receives, every rejection, bodies that are
//! too large (declared or streamed) or broken mid-stream, and `ConcurrencyLimit` inside the
//! layer.
//!
//! Raw `TcpStream`s are used where the hyper client would not send what the test needs (a body
//! that never comes, an invalid chunk, chunks spaced in time).

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use metigan_webhook::{
    sign, BoxError, EventType, MetiganSignatureLayer, Rejection, VerifiedBody, VerifiedEvent,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use common::{event_body, send, Answer};

const SECRET: &str = "whsec_hyper_test_secret";
/// The fixed clock of every layer here: signatures are made for this instant.
const NOW: u64 = 1_700_000_000;
/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The recording inner service and the server
// ---------------------------------------------------------------------------------------------

/// What the inner service saw for one call.
#[derive(Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    event: Option<VerifiedEvent>,
}

/// Counts the calls of the inner service and keeps what each one received.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

type InnerFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static>,
>;

impl Recorder {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// The inner service: records the request, waits `delay` (to make calls overlap), answers
    /// `200 handled`.
    fn service(
        &self,
        delay: Duration,
    ) -> impl Service<
        Request<VerifiedBody>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = InnerFuture,
    > + Clone
           + Send
           + 'static {
        let recorder = self.clone();
        tower::service_fn(move |req: Request<VerifiedBody>| -> InnerFuture {
            let recorder = recorder.clone();
            Box::pin(async move {
                recorder.calls.fetch_add(1, Ordering::SeqCst);
                let now = recorder.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                recorder.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                recorder.seen.lock().unwrap().push(Seen {
                    method: parts.method,
                    uri: parts.uri,
                    version: parts.version,
                    headers: parts.headers,
                    body,
                    event: parts.extensions.get::<VerifiedEvent>().cloned(),
                });
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                recorder.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(Response::new(Full::new(Bytes::from_static(b"handled"))))
            })
        })
    }
}

/// The layer of these tests: fixed clock, given body limit.
fn layer(body_limit: usize) -> MetiganSignatureLayer {
    MetiganSignatureLayer::builder()
        .secret(SECRET)
        .body_limit(body_limit)
        .clock(|| NOW)
        .build()
        .unwrap()
}

/// Copies the reason of the `Rejection` found in the response extensions into an
/// `x-rejection` header, so the tests can see over the wire that the extension is there for an
/// outer layer.
fn expose_rejection<B>(mut response: Response<B>) -> Response<B> {
    let code = response
        .extensions()
        .get::<Rejection>()
        .map(|rejection| rejection.reason().code());
    if let Some(code) = code {
        response
            .headers_mut()
            .insert("x-rejection", HeaderValue::from_static(code));
    }
    response
}

/// Serves `service` with hyper-util's auto (HTTP/1 + HTTP/2) connection builder on a free port
/// of 127.0.0.1; the server stops with the test's runtime.
async fn serve<S, B>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                // Connection errors (a client that sends garbage, resets, ...) are part of
                // some tests: the answer, if any, is checked on the client side.
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A server with the layer around the recorder (and the rejection exposed in a header).
async fn serve_recorder(recorder: &Recorder, body_limit: usize) -> SocketAddr {
    let service = ServiceBuilder::new()
        .map_response(expose_rejection)
        .layer(layer(body_limit))
        .service(recorder.service(Duration::ZERO));
    serve(service).await
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP
// ---------------------------------------------------------------------------------------------

/// A response read from a raw connection.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP/1.1 response (head, then a `Content-Length` body) from `stream`, within
/// [`LIMIT`]. Bytes after it stay in `buffer` (for a final response after a `100 Continue`).
async fn read_response(stream: &mut (impl AsyncRead + Unpin), buffer: &mut Vec<u8>) -> RawAnswer {
    tokio::time::timeout(LIMIT, async {
        let head_end = loop {
            if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read the answer");
            assert!(
                n > 0,
                "connection closed before a complete answer head: {:?}",
                String::from_utf8_lossy(buffer)
            );
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
        buffer.drain(..head_end);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {head:?}"));
        let mut answer = RawAnswer {
            status,
            head,
            body: Vec::new(),
        };
        let len: usize = answer
            .header("content-length")
            .map_or(0, |len| len.parse().unwrap());
        while buffer.len() < len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read the answer body");
            assert!(n > 0, "connection closed inside the answer body");
            buffer.extend_from_slice(&chunk[..n]);
        }
        answer.body = buffer.drain(..len).collect();
        answer
    })
    .await
    .expect("an answer within the time limit")
}

/// The head of a POST to `/webhooks` with the given headers.
fn request_head(headers: &[(&str, &str)]) -> String {
    let mut head = String::from("POST /webhooks HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// One chunk of a chunked body, framed.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A signed POST through hyper's client.
async fn post_signed(addr: SocketAddr, body: &str, extra: &[(&str, &str)]) -> Answer {
    let header = sign(SECRET, NOW, body.as_bytes());
    let mut req = Request::post(format!("http://{addr}/webhooks"))
        .header("x-webhook-signature", header)
        .header("content-type", "application/json");
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    send(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

fn assert_rejected(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "{code}: {}", answer.text());
    assert!(
        answer.text().starts_with(code),
        "body should start with {code}: {:?}",
        answer.text()
    );
    assert_eq!(
        answer.headers["content-type"], "text/plain; charset=utf-8",
        "{code}"
    );
    assert_eq!(
        answer.headers["x-rejection"], code,
        "Rejection in extensions"
    );
}

// ---------------------------------------------------------------------------------------------
// Success
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn inner_service_receives_the_exact_request_and_the_event() {
    let recorder = Recorder::default();
    let addr = serve_recorder(&recorder, 64 * 1024).await;

    // Whitespace, key order, escapes and non-ASCII must all reach the handler untouched.
    let body = "{\n  \"timestamp\": 1700000000123,\r\n  \"event\" : \"email.delivered\",\n  \
                \"messageId\":\"msg_42\", \"data\": {\"recipient\":\"ren\u{e9}e@example.com\",\
                \"subject\":\"Caf\\u00e9 \u{2615}\"}\n}\n";
    let signature = sign(SECRET, NOW, body.as_bytes());
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/hooks/metigan?source=test&n=1"))
        .header("x-webhook-signature", &signature)
        .header("x-webhook-id", "wh_delivery_123")
        .header("x-webhook-timestamp", NOW.to_string())
        .header("content-type", "application/json")
        .header("x-custom", "kept as is")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let answer = send(req).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(&answer.body[..], b"handled");
    assert!(answer.headers.get("x-rejection").is_none());

    assert_eq!(recorder.calls(), 1);
    let seen = recorder.take().pop().unwrap();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, "/hooks/metigan?source=test&n=1");
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(&seen.body[..], body.as_bytes());
    for (name, value) in [
        ("x-webhook-signature", signature.as_str()),
        ("x-webhook-id", "wh_delivery_123"),
        ("x-webhook-timestamp", &NOW.to_string()),
        ("content-type", "application/json"),
        ("content-length", &body.len().to_string()),
        ("x-custom", "kept as is"),
    ] {
        assert_eq!(seen.headers[name], value, "{name}");
    }
    let multi: Vec<_> = seen.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);

    let event = seen.event.expect("VerifiedEvent in the extensions");
    assert_eq!(event.event_type(), &EventType::EmailDelivered);
    assert_eq!(event.message_id(), Some("msg_42"));
    assert_eq!(event.timestamp_ms(), Some(1_700_000_000_123));
    assert_eq!(event.signed_at(), NOW);
    assert_eq!(event.webhook_id(), Some("wh_delivery_123"));
    assert_eq!(event.secret_index(), 0);
    assert_eq!(event.recipient(), Some("ren\u{e9}e@example.com"));
    assert_eq!(event.subject(), Some("Caf\u{e9} \u{2615}"));
    assert_eq!(&event.body()[..], body.as_bytes());
}

#[tokio::test]
async fn chunked_body_in_several_pieces_arrives_whole_and_unchanged() {
    let recorder = Recorder::default();
    let addr = serve_recorder(&recorder, 64 * 1024).await;

    let body = event_body("email.opened", "msg_chunked");
    let signature = sign(SECRET, NOW, body.as_bytes());
    let headers = [
        ("x-webhook-signature", signature.as_str()),
        ("x-webhook-id", "wh_chunked"),
        ("content-type", "application/json"),
        ("transfer-encoding", "chunked"),
        ("user-agent", "raw-tcp-test"),
    ];
    let mut stream = connect(addr).await;
    stream
        .write_all(request_head(&headers).as_bytes())
        .await
        .unwrap();
    // Five pieces, a pause after each so hyper sees them as separate frames (one of them is a
    // single byte).
    let bytes = body.as_bytes();
    let cuts = [0, 1, 17, 40, 90, bytes.len()];
    for window in cuts.windows(2) {
        stream
            .write_all(&chunk(&bytes[window[0]..window[1]]))
            .await
            .unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_response(&mut stream, &mut Vec::new()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, b"handled");

    assert_eq!(recorder.calls(), 1);
    let seen = recorder.take().pop().unwrap();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, "/webhooks");
    assert_eq!(&seen.body[..], bytes);
    // Exactly the headers that were written, nothing added, nothing removed.
    let mut expected = HeaderMap::new();
    expected.insert("host", HeaderValue::from_static("127.0.0.1"));
    for (name, value) in headers {
        expected.insert(name, HeaderValue::from_str(value).unwrap());
    }
    assert_eq!(seen.headers, expected);
    let event = seen.event.unwrap();
    assert_eq!(event.event_type(), &EventType::EmailOpened);
    assert_eq!(event.message_id(), Some("msg_chunked"));
    assert_eq!(event.signed_at(), NOW);
    assert_eq!(event.webhook_id(), Some("wh_chunked"));
    assert_eq!(&event.body()[..], bytes);
}

#[tokio::test]
async fn http2_requests_are_verified_too() {
    let recorder = Recorder::default();
    let addr = serve_recorder(&recorder, 64 * 1024).await;

    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let body = event_body("email.clicked", "msg_h2");
    let good = Request::post(format!("http://{addr}/h2"))
        .header("x-webhook-signature", sign(SECRET, NOW, body.as_bytes()))
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, client.request(good))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);

    let bad = Request::post(format!("http://{addr}/h2"))
        .header("x-webhook-signature", sign("wrong", NOW, body.as_bytes()))
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, client.request(bad))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(recorder.calls(), 1);
    let seen = recorder.take().pop().unwrap();
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.uri.path(), "/h2");
    assert_eq!(&seen.body[..], body.as_bytes());
    assert_eq!(seen.event.unwrap().event_type(), &EventType::EmailClicked);
}

// ---------------------------------------------------------------------------------------------
// Bodies that are too large or broken
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn declared_content_length_over_the_limit_is_answered_without_reading_the_body() {
    let recorder = Recorder::default();
    let addr = serve_recorder(&recorder, 1024).await;

    // A valid signature header for a body that will never be sent: only the headers go out,
    // and the connection stays open. If the layer waited for the body, this would time out.
    let signature = sign(SECRET, NOW, b"{}");
    let mut stream = connect(addr).await;
    stream
        .write_all(
            request_head(&[
                ("x-webhook-signature", &signature),
                ("content-type", "application/json"),
                ("content-length", "10000000"),
            ])
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let answer = read_response(&mut stream, &mut Vec::new()).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.text().starts_with("body_too_large"), "{answer:?}");
    assert_eq!(answer.header("x-rejection"), Some("body_too_large"));
    assert_eq!(recorder.calls(), 0);
}

#[tokio::test]
async fn declared_too_large_with_expect_continue_gets_413_and_no_100_continue() {
    let recorder = Recorder::default();
    let addr = serve_recorder(&recorder, 1024).await;

    let signature = sign(SECRET, NOW, b"{}");
    let mut stream = connect(addr).await;
    stream
        .write_all(
            request_head(&[
                ("x-webhook-signature", &signature),
                ("content-length", "10000000"),
                ("expect", "100-continue"),
            ])
            .as_bytes(),
        )
        .await
        .unwrap();
    // hyper sends `100 Continue` only when the body is polled: the first (and only) answer
    // must be the 413, so a well-behaved client never uploads the body at all.
    let answer = read_response(&mut stream, &mut Vec::new()).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.header("x-rejection"), Some("body_too_large"));
    assert_eq!(recorder.calls(), 0);
}

#[tokio::test]
async fn expect_continue_on_a_good_request_gets_100_then_200() {
    let recorder = Recorder::default();
    let addr = serve_recorder(&recorder, 1024).await;

    let body = event_body("email.sent", "msg_continue");
    let signature = sign(SECRET, NOW, body.as_bytes());
    let mut stream = connect(addr).await;
    let length = body.len().to_string();
    stream
        .write_all(
            request_head(&[
                ("x-webhook-signature", &signature),
                ("content-length", &length),
                ("expect", "100-continue"),
            ])
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let interim = read_response(&mut stream, &mut buffer).await;
    assert_eq!(interim.status, 100, "{interim:?}");
    stream.write_all(body.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream, &mut buffer).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(recorder.calls(), 1);
    assert_eq!(&recorder.take()[0].body[..], body.as_bytes());
}

#[tokio::test]
async fn endless_chunked_body_is_cut_at_the_limit() {
    let recorder = Recorder::default();
    let limit = 4096;
    let addr = serve_recorder(&recorder, limit).await;

    let signature = sign(SECRET, NOW, b"{}");
    let stream = connect(addr).await;
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(
            request_head(&[
                ("x-webhook-signature", &signature),
                ("transfer-encoding", "chunked"),
            ])
            .as_bytes(),
        )
        .await
        .unwrap();
    // No Content-Length, and the body never ends: 1 KiB chunks until the server stops
    // reading. Only the streaming limit can produce an answer.
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            let piece = chunk(&[b'x'; 1024]);
            while write.write_all(&piece).await.is_ok() {
                sent.fetch_add(1024, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let answer = read_response(&mut read, &mut Vec::new()).await;
    writer.abort();
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.text().starts_with("body_too_large"), "{answer:?}");
    assert_eq!(answer.header("x-rejection"), Some("body_too_large"));
    assert!(sent.load(Ordering::SeqCst) > limit);
    assert_eq!(recorder.calls(), 0);
}

#[tokio::test]
async fn finite_chunked_body_over_the_limit_is_rejected_and_one_at_the_limit_is_not() {
    let recorder = Recorder::default();
    let limit = 300;
    let addr = serve_recorder(&recorder, limit).await;

    // A valid, signed event padded to exactly `limit + 1` bytes, then to exactly `limit`.
    for (len, status) in [(limit + 1, 413), (limit, 200)] {
        let mut body = event_body("email.sent", "msg_pad");
        body.insert_str(1, &" ".repeat(len - body.len()));
        assert_eq!(body.len(), len);
        let signature = sign(SECRET, NOW, body.as_bytes());
        let mut stream = connect(addr).await;
        let mut request = request_head(&[
            ("x-webhook-signature", &signature),
            ("transfer-encoding", "chunked"),
        ])
        .into_bytes();
        for piece in body.as_bytes().chunks(100) {
            request.extend(chunk(piece));
        }
        request.extend_from_slice(b"0\r\n\r\n");
        stream.write_all(&request).await.unwrap();
        let answer = read_response(&mut stream, &mut Vec::new()).await;
        assert_eq!(answer.status, status, "{len} bytes: {answer:?}");
    }
    // Only the request at the limit reached the handler.
    assert_eq!(recorder.calls(), 1);
    assert_eq!(recorder.take()[0].body.len(), limit);
}

#[tokio::test]
async fn invalid_chunk_size_mid_stream_is_a_body_read_error() {
    let recorder = Recorder::default();
    let addr = serve_recorder(&recorder, 64 * 1024).await;

    let body = event_body("email.sent", "msg_broken");
    let signature = sign(SECRET, NOW, body.as_bytes());
    let mut stream = connect(addr).await;
    let mut request = request_head(&[
        ("x-webhook-signature", &signature),
        ("transfer-encoding", "chunked"),
    ])
    .into_bytes();
    request.extend(chunk(&body.as_bytes()[..20]));
    stream.write_all(&request).await.unwrap();
    stream.flush().await.unwrap();
    // Let the first chunk be read as a frame before the broken size line arrives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"zz\r\nnot a chunk\r\n").await.unwrap();
    // hyper's chunk decoder fails, `Incoming` yields the error, the layer answers 400 and hyper
    // still writes it (then closes the connection, the framing being lost).
    let answer = read_response(&mut stream, &mut Vec::new()).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.text().starts_with("body_read_error"), "{answer:?}");
    assert_eq!(answer.header("x-rejection"), Some("body_read_error"));
    assert_eq!(recorder.calls(), 0);
}

#[tokio::test]
async fn body_cut_short_by_a_half_close_is_a_body_read_error() {
    let recorder = Recorder::default();
    let addr = serve_recorder(&recorder, 64 * 1024).await;

    let body = event_body("email.sent", "msg_short");
    let signature = sign(SECRET, NOW, body.as_bytes());
    let mut stream = connect(addr).await;
    let declared = (body.len() + 100).to_string();
    stream
        .write_all(
            request_head(&[
                ("x-webhook-signature", &signature),
                ("content-length", &declared),
            ])
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    // End of the write side with 100 declared bytes missing. hyper reports the early EOF as a
    // body error and, the write side of the connection being still open, writes the 400
    // before closing: both variants of a broken body get their answer.
    stream.shutdown().await.unwrap();
    let answer = read_response(&mut stream, &mut Vec::new()).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.text().starts_with("body_read_error"), "{answer:?}");
    assert_eq!(answer.header("x-rejection"), Some("body_read_error"));
    assert_eq!(recorder.calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// Rejections never reach the inner service
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_rejection_reaches_the_inner_service() {
    let recorder = Recorder::default();
    let limit = 512;
    let addr = serve_recorder(&recorder, limit).await;

    let good = event_body("email.bounced", "msg_reject");
    let sig = |secret: &str, t: u64, body: &str| sign(secret, t, body.as_bytes());
    let v1_only = sig(SECRET, NOW, &good).replace(&format!("t={NOW},"), "");
    let changed = good.replace("msg_reject", "msg_rejecT");
    let too_large = format!(
        "{{\"event\":\"email.sent\",\"pad\":\"{}\"}}",
        "x".repeat(limit)
    );
    let not_json = "event=email.sent";
    let event_number = "{\"event\":7}";
    let no_event = "{\"messageId\":\"m\"}";

    // (what, signature header, body, status, code)
    let cases: Vec<(&str, Option<String>, &str, u16, &str)> = vec![
        ("no header", None, &good, 401, "missing_signature"),
        (
            "empty header",
            Some(String::new()),
            &good,
            401,
            "missing_signature",
        ),
        (
            "no v1",
            Some(format!("t={NOW}")),
            &good,
            401,
            "missing_signature",
        ),
        ("no t", Some(v1_only), &good, 401, "malformed_signature"),
        (
            "bad t",
            Some(sig(SECRET, NOW, &good).replace("t=", "t=x")),
            &good,
            401,
            "malformed_signature",
        ),
        (
            "stale",
            Some(sig(SECRET, NOW - 301, &good)),
            &good,
            401,
            "timestamp_out_of_tolerance",
        ),
        (
            "future",
            Some(sig(SECRET, NOW + 301, &good)),
            &good,
            401,
            "timestamp_out_of_tolerance",
        ),
        (
            "wrong secret",
            Some(sig("whsec_other", NOW, &good)),
            &good,
            401,
            "signature_mismatch",
        ),
        (
            "body changed",
            Some(sig(SECRET, NOW, &good)),
            &changed,
            401,
            "signature_mismatch",
        ),
        (
            "too large",
            Some(sig(SECRET, NOW, &too_large)),
            &too_large,
            413,
            "body_too_large",
        ),
        (
            "not JSON",
            Some(sig(SECRET, NOW, not_json)),
            not_json,
            400,
            "invalid_payload",
        ),
        (
            "event not a string",
            Some(sig(SECRET, NOW, event_number)),
            event_number,
            400,
            "invalid_payload",
        ),
        (
            "no event",
            Some(sig(SECRET, NOW, no_event)),
            no_event,
            400,
            "invalid_payload",
        ),
    ];
    for (what, header, body, status, code) in cases {
        let mut req = Request::post(format!("http://{addr}/webhooks"))
            .header("content-type", "application/json");
        if let Some(header) = header {
            req = req.header("x-webhook-signature", header);
        }
        let answer = send(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await;
        assert_rejected(&answer, status, code);
        assert_eq!(recorder.calls(), 0, "{what}: the inner service was called");
    }

    // The same server does call the inner service for a good request: the counter works.
    let answer = post_signed(addr, &good, &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.headers.get("x-rejection").is_none());
    assert_eq!(recorder.calls(), 1);
}

/// DESIGN.md 2.6: the body must be a JSON *object* with a string `event`. A JSON array is
/// not an envelope, yet serde's derived `Deserialize` for a struct also accepts a sequence, so
/// `["email.sent"]` (fields taken by position) currently verifies and reaches the handler as an
/// `email.sent` event. Library bug, reported to the lead: this test fails until `Envelope::parse`
/// refuses non-objects.
#[tokio::test]
async fn signed_json_array_is_invalid_payload_not_an_event() {
    let recorder = Recorder::default();
    let addr = serve_recorder(&recorder, 1024).await;
    for body in [
        "[\"email.sent\"]",
        "[\"email.delivered\",\"msg_1\",{\"recipient\":\"a@b.c\"},1700000000000]",
    ] {
        let answer = post_signed(addr, body, &[]).await;
        assert_rejected(&answer, 400, "invalid_payload");
    }
    assert_eq!(
        recorder.calls(),
        0,
        "a JSON array reached the handler as an event"
    );
}

// ---------------------------------------------------------------------------------------------
// ConcurrencyLimit inside the layer
// ---------------------------------------------------------------------------------------------

/// Opens a connection that sends a well-formed forged header (a fresh `t`, 64 zeros) and part of
/// a body, then never finishes it: chunked, or with a `Content-Length` it never reaches.
async fn forged_upload_that_never_ends(addr: SocketAddr, chunked: bool) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let framing = if chunked {
        "transfer-encoding: chunked\r\n".to_owned()
    } else {
        "content-length: 60000\r\n".to_owned()
    };
    let head = format!(
        "POST /webhooks HTTP/1.1\r\nhost: x\r\nx-webhook-signature: t={NOW},v1={}\r\n{framing}\r\n",
        "0".repeat(64)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let part = if chunked {
        format!("400\r\n{}\r\n", "x".repeat(0x400))
    } else {
        "x".repeat(1024)
    };
    stream.write_all(part.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn forged_uploads_that_never_end_hold_no_permit_of_a_concurrency_limit_of_one() {
    let recorder = Recorder::default();
    let service = ServiceBuilder::new()
        .layer(layer(64 * 1024))
        .concurrency_limit(1)
        .service(recorder.service(Duration::ZERO));
    let addr = serve(service).await;

    // Eight forged bodies that never end, both framings, all being read by the layer.
    let mut attackers = Vec::new();
    for i in 0..8 {
        attackers.push(forged_upload_that_never_ends(addr, i % 2 == 0).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A correctly signed delivery is answered at once: the one permit is free.
    let started = std::time::Instant::now();
    let body = event_body("email.delivered", "msg_during_flood");
    let answer = tokio::time::timeout(Duration::from_secs(3), post_signed(addr, &body, &[]))
        .await
        .expect("the valid delivery is answered while the forged uploads hang");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(recorder.calls(), 1);
    drop(attackers);
}

#[tokio::test]
async fn concurrency_limit_inside_the_layer_under_concurrent_hyper_requests() {
    let recorder = Recorder::default();
    // Each future asks its own clone of the ConcurrencyLimit for readiness before calling it
    // (calling a clone that was not made ready panics with "service not ready").
    let service = ServiceBuilder::new()
        .layer(layer(64 * 1024))
        .concurrency_limit(1)
        .service(recorder.service(Duration::from_millis(5)));
    let addr = serve(service).await;

    let requests = 24;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..requests {
        tasks.spawn(async move {
            let body = event_body("email.delivered", &format!("msg_{i}"));
            post_signed(addr, &body, &[]).await
        });
    }
    let mut ok = 0;
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("no panic");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(&answer.body[..], b"handled");
        ok += 1;
    }
    assert_eq!(ok, requests);
    assert_eq!(recorder.calls(), requests);
    // The limit held: never two handler calls at once.
    assert_eq!(recorder.max_in_flight.load(Ordering::SeqCst), 1);
    let mut ids: Vec<String> = recorder
        .take()
        .into_iter()
        .map(|seen| seen.event.unwrap().message_id().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..requests).map(|i| format!("msg_{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

type InProcess = Request<Full<Bytes>>;

/// Polls `service` for readiness once, without waiting.
fn is_ready<S: Service<InProcess>>(service: &mut S) -> bool {
    let waker = std::task::Waker::noop();
    matches!(
        service.poll_ready(&mut std::task::Context::from_waker(waker)),
        std::task::Poll::Ready(Ok(()))
    )
}

#[tokio::test]
async fn concurrency_limit_in_process_permits_are_taken_only_by_verified_requests() {
    let recorder = Recorder::default();
    let permits = 3;
    let limited =
        tower::limit::ConcurrencyLimit::new(recorder.service(Duration::from_millis(50)), permits);
    // Clones of a `ConcurrencyLimit` share its permits: a fresh clone tells whether one is free
    // (and gives it back when dropped).
    let permit_free = || {
        let waker = std::task::Waker::noop();
        let mut probe = limited.clone();
        Service::<Request<VerifiedBody>>::poll_ready(
            &mut probe,
            &mut std::task::Context::from_waker(waker),
        )
        .is_ready()
    };
    let mut service = layer(64 * 1024).layer(limited.clone());

    let request = |i: usize| {
        let body = event_body("email.sent", &format!("msg_{i}"));
        Request::post("/webhooks")
            .header("x-webhook-signature", sign(SECRET, NOW, body.as_bytes()))
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };

    // The layer is always ready, and a call takes nothing before its request is verified:
    // three times the permits in futures that were never polled, and every permit is free.
    let mut futures = Vec::new();
    for i in 0..permits * 3 {
        assert!(is_ready(&mut service), "the layer is always ready");
        futures.push(service.call(request(i)));
    }
    assert!(permit_free(), "unpolled futures hold no permit");

    // Polled, they go through the limit: never more than `permits` handlers at once.
    let answers = tokio::time::timeout(LIMIT, futures_util::future::join_all(futures))
        .await
        .expect("futures complete");
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(answer.extensions().get::<Rejection>().is_none());
    }
    assert_eq!(recorder.calls(), permits * 3);
    assert!(recorder.max_in_flight.load(Ordering::SeqCst) <= permits);
    assert!(permit_free(), "the permits are back");

    // A verified request polled into the handler holds a permit; dropping its future gives it
    // back.
    let mut running = Vec::new();
    for i in 0..permits {
        let mut future = Box::pin(service.call(request(100 + i)));
        let waker = std::task::Waker::noop();
        assert!(future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_pending());
        running.push(future);
    }
    assert!(!permit_free(), "every permit is held by a running handler");
    drop(running);
    assert!(permit_free(), "dropped futures released their permits");

    // A rejected request answers without the inner service.
    let unsigned = Request::post("/webhooks")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let answer = ServiceExt::<InProcess>::ready(&mut service)
        .await
        .unwrap()
        .call(unsigned)
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer
            .extensions()
            .get::<Rejection>()
            .map(|r| r.reason().code()),
        Some("missing_signature")
    );
    assert_eq!(
        recorder.calls(),
        permits * 4,
        "the rejected request was not one of them"
    );
}

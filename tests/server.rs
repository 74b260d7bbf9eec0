//! `metigan_webhook::server` on 127.0.0.1 with timeouts of a few hundred milliseconds: each
//! bound proven by a client that tries to break it (silent, half a head, a trickled body, a
//! handler too slow, too many connections, slow clients at shutdown).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metigan_webhook::server::{Server, ServerBody};
use metigan_webhook::{MetiganSignatureLayer, PeerAddr, VerifiedEvent};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use common::{event_body, now};

const SECRET: &str = "whsec_server_test";
const PATH: &str = "/webhooks/metigan";
/// Slack for the scheduler of a busy 2-core machine on top of every deadline.
const MARGIN: Duration = Duration::from_millis(700);
/// No test step waits longer than this.
const LIMIT: Duration = Duration::from_secs(10);

/// The timeouts of most tests: short, and far enough apart to tell which one fired.
fn quick() -> Server {
    Server::new()
        .header_read_timeout(Duration::from_millis(300))
        .body_read_timeout(Duration::from_millis(800))
        .request_timeout(Duration::from_millis(1500))
        .shutdown_timeout(Duration::from_millis(500))
}

/// The receiver's shape: the signature layer on the webhook route (`POST` only), plus routes
/// that show the peer address and take their time.
fn app() -> Router {
    let layer = MetiganSignatureLayer::new(SECRET).unwrap();
    Router::new()
        .route(
            PATH,
            post(|event: VerifiedEvent| async move { event.event_type().to_string() })
                .route_layer(layer),
        )
        .route(
            "/peer",
            get(|Extension(PeerAddr(peer)): Extension<PeerAddr>| async move { peer.to_string() }),
        )
        .route(
            "/sleep/{ms}",
            get(
                |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "slept"
                },
            ),
        )
}

/// A server running on a free port until `stop` is sent.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
}

async fn start(server: Server, app: Router) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(listener, app, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, served }
}

impl Running {
    /// Sends the shutdown signal; returns how long `serve` took to return.
    async fn shut_down(self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.send(());
        tokio::time::timeout(LIMIT, self.served)
            .await
            .expect("serve returns")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

/// Reads until the server closes the connection (EOF or reset); returns what was read and
/// when it was closed, measured from `since`.
async fn until_closed(stream: &mut (impl AsyncRead + Unpin), since: Instant) -> (String, Duration) {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(LIMIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server closed the connection within {LIMIT:?}"
    );
    (String::from_utf8_lossy(&read).into_owned(), since.elapsed())
}

/// Reads one response whose body has a `content-length`.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(LIMIT, async {
        loop {
            let text = String::from_utf8_lossy(&read).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if read.len() >= end + 4 + len {
                    return text;
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole response: {text}");
            read.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response")
}

fn assert_between(elapsed: Duration, low: Duration, high: Duration, what: &str) {
    assert!(
        elapsed >= low && elapsed <= high,
        "{what}: {elapsed:?}, expected between {low:?} and {high:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let server = start(quick(), app()).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (read, elapsed) = until_closed(&mut stream, started).await;
    assert_eq!(read, "");
    let timeout = Duration::from_millis(300);
    assert_between(
        elapsed,
        timeout - Duration::from_millis(50),
        timeout + MARGIN,
        "silent",
    );
    println!("silent connection closed after {elapsed:?}");
    server.shut_down().await;
}

#[tokio::test]
async fn half_a_request_head_is_closed_after_the_header_read_timeout() {
    let server = start(quick(), app()).await;
    let timeout = Duration::from_millis(300);
    // HTTP/1.1 and the first bytes of the HTTP/2 preface (hyper-util waits for the rest to
    // choose a protocol).
    for partial in [
        &b"POST /webhooks/metigan HTTP/1.1\r\nhost: x\r\ncontent-le"[..],
        &b"PRI * HTTP/2.0\r\n"[..],
    ] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(partial).await.unwrap();
        let (_, elapsed) = until_closed(&mut stream, started).await;
        assert_between(
            elapsed,
            timeout - Duration::from_millis(50),
            timeout + MARGIN,
            "half a head",
        );
        println!("half a head closed after {elapsed:?}");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let server = start(quick(), app()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Two requests on one connection, 200 ms apart (each pause under the timeout)...
    for _ in 0..2 {
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...then silence: closed one timeout after the last answer.
    let since = Instant::now() - Duration::from_millis(200);
    let (_, elapsed) = until_closed(&mut stream, since).await;
    assert_between(
        elapsed,
        Duration::from_millis(250),
        Duration::from_millis(300) + MARGIN,
        "idle keep-alive",
    );
    server.shut_down().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_read_timeout() {
    let server = start(quick(), app()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let request = Request::get(format!("http://{}/peer", server.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    response.into_body().collect().await.unwrap();
    let answered = Instant::now();
    // The client keeps the connection open; the server ends it.
    let ended = tokio::time::timeout(LIMIT, driver).await;
    assert!(ended.is_ok(), "the HTTP/2 connection was closed");
    let elapsed = answered.elapsed();
    assert!(
        elapsed <= Duration::from_millis(300) + MARGIN,
        "{elapsed:?}"
    );
    server.shut_down().await;
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_body_read_timeout_counted_for_the_whole_body() {
    let server = start(quick(), app()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let signature = format!("t={},v1={}", now(), "0".repeat(64));
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\nx-webhook-signature: {signature}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 200 ms: each pause is far under the 800 ms timeout, the whole body is not.
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if writer.write_all(b"{").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (answer, elapsed) = until_closed(&mut reader, started).await;
    trickle.abort();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body_read_error"), "{answer}");
    let timeout = Duration::from_millis(800);
    assert_between(
        elapsed,
        timeout - Duration::from_millis(50),
        timeout + MARGIN,
        "trickle",
    );
    println!("trickled body answered and closed after {elapsed:?}");
    server.shut_down().await;
}

#[tokio::test]
async fn a_request_not_answered_in_time_gets_503_with_retry_after() {
    let server = start(quick(), app()).await;
    let started = Instant::now();
    let answer = common::send(
        Request::get(format!("http://{}/sleep/5000", server.addr))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.headers["retry-after"], "5");
    assert!(
        answer.text().starts_with("request_timeout"),
        "{}",
        answer.text()
    );
    let timeout = Duration::from_millis(1500);
    assert_between(
        elapsed,
        timeout - Duration::from_millis(50),
        timeout + MARGIN,
        "503",
    );

    // A gRPC request gets a trailers-only UNAVAILABLE instead of a text body.
    let answer = common::send(
        Request::get(format!("http://{}/sleep/5000", server.addr))
            .header("content-type", "application/grpc")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["grpc-status"], "14");
    assert_eq!(answer.headers["grpc-message"], "request_timeout");
    assert!(answer.body.is_empty());

    // In time: the handler's answer.
    let answer = common::send(
        Request::get(format!("http://{}/sleep/100", server.addr))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (answer.status.as_u16(), answer.text().as_str()),
        (200, "slept")
    );
    server.shut_down().await;
}

#[tokio::test]
async fn every_request_carries_the_peer_address_and_the_webhook_route_answers_405_to_get() {
    let server = start(quick(), app()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.ends_with(&local.to_string()), "{answer}");

    stream
        .write_all(format!("GET {PATH} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: post"),
        "{answer}"
    );

    // And a signed delivery is verified and answered.
    let body = event_body("email.delivered", "m1");
    let answer = common::post_signed(server.addr, PATH, SECRET, &body).await;
    assert_eq!(
        (answer.status.as_u16(), answer.text().as_str()),
        (200, "email.delivered")
    );
    server.shut_down().await;
}

#[tokio::test]
async fn no_connection_is_accepted_past_max_connections_until_one_closes() {
    let server = start(
        quick()
            .header_read_timeout(Duration::from_secs(5))
            .max_connections(2),
        app(),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut stream).await;
        held.push(stream);
    }
    // The third connects (the kernel's backlog takes it) but is not served...
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served while two connections were held");
    // ...until one of the two closes.
    drop(held.pop());
    let freed = Instant::now();
    let answer = read_response(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(freed.elapsed() < MARGIN, "{:?}", freed.elapsed());
    drop(held);
    server.shut_down().await;
}

/// Starts a request whose body is trickled forever on a new connection.
async fn slow_upload(addr: SocketAddr) -> (tokio::net::tcp::OwnedReadHalf, JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\nx-webhook-signature: t={},v1={}\r\n\
         content-length: 100000\r\n\r\n",
        now(),
        "0".repeat(64)
    );
    let trickle = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        loop {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (reader, trickle)
}

#[tokio::test]
async fn shutdown_with_slow_clients_returns_within_the_shutdown_timeout() {
    // Timeouts longer than the test: only the shutdown deadline can end these clients.
    let server = start(
        Server::new()
            .header_read_timeout(Duration::from_secs(30))
            .body_read_timeout(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(30))
            .shutdown_timeout(Duration::from_millis(500)),
        app(),
    )
    .await;
    let mut uploads = Vec::new();
    for _ in 0..5 {
        uploads.push(slow_upload(server.addr).await);
    }
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let addr = server.addr;
    let took = server.shut_down().await;
    assert_between(
        took,
        Duration::from_millis(450),
        Duration::from_millis(500) + MARGIN,
        "shutdown",
    );
    println!("shutdown with 5 slow uploads attached took {took:?}");
    // Every client sees its connection end, and nothing is accepted any more.
    let now = Instant::now();
    let (read, _) = until_closed(&mut silent, now).await;
    assert_eq!(read, "");
    for (mut reader, trickle) in uploads {
        until_closed(&mut reader, now).await;
        trickle.abort();
    }
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_closes_idle_connections_at_once() {
    let server = start(quick().shutdown_timeout(Duration::from_secs(5)), app()).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"GET /sleep/400 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = server.shut_down().await;
    // The request finished (300 ms more), well before the 5 s deadline.
    assert!(took < Duration::from_millis(300) + MARGIN, "{took:?}");
    let (answer, _) = until_closed(&mut busy, Instant::now()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("slept"), "{answer}");
    let (read, _) = until_closed(&mut idle, Instant::now()).await;
    assert_eq!(read, "");
}

#[tokio::test]
async fn a_handshake_is_bounded_by_the_header_read_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A handshake that waits for a byte the client never sends.
    let handshake = |mut stream: TcpStream| async move {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        Ok(stream)
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(quick().serve_with(listener, handshake, app(), async {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (_, elapsed) = until_closed(&mut stream, started).await;
    let timeout = Duration::from_millis(300);
    assert_between(
        elapsed,
        timeout - Duration::from_millis(50),
        timeout + MARGIN,
        "handshake",
    );
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}

#[tokio::test]
async fn any_tower_service_can_be_served_over_http1_and_http2() {
    // A bare service_fn, reading the whole body.
    let service = tower::service_fn(|request: Request<ServerBody>| async move {
        let body = request.into_body().collect().await?.to_bytes();
        Ok::<_, metigan_webhook::server::BodyError>(http::Response::new(Full::new(body)))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(quick().serve(listener, service, std::future::pending::<()>()));

    let answer = common::post(addr, "/", &[], "echo over http/1.1").await;
    assert_eq!(answer.text(), "echo over http/1.1");

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            Request::post(format!("http://{addr}/"))
                .body(Full::new(Bytes::from_static(b"echo over h2")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"echo over h2");
    served.abort();
}

/// The bound on `serve`'s arguments accepts the usual service types (compile-time check).
#[allow(dead_code)]
fn accepts<S, B>(_: S)
where
    S: tower::Service<Request<ServerBody>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<metigan_webhook::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<metigan_webhook::BoxError>,
{
}

#[allow(dead_code)]
fn usual_services_fit() {
    accepts(Router::new());
    accepts(tonic::service::Routes::default());
    accepts(tower::service_fn(|_: Request<ServerBody>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
    }));
}

#[tokio::test]
async fn timeouts_too_long_for_the_clock_are_capped_not_a_panic() {
    let server = start(
        Server::new()
            .header_read_timeout(Duration::MAX)
            .body_read_timeout(Duration::MAX)
            .request_timeout(Duration::MAX)
            .shutdown_timeout(Duration::MAX)
            .max_connections(usize::MAX),
        app(),
    )
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(stream);
    // Nothing in flight: the shutdown closes the idle connection at once.
    assert!(server.shut_down().await < MARGIN);
    let (read, _) = until_closed(&mut idle, Instant::now()).await;
    assert_eq!(read, "");
}

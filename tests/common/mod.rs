//! Shared helpers of the integration tests: real servers on 127.0.0.1 and a plain HTTP client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// One case of `../shared/vectors/signatures.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub name: String,
    pub secrets: Vec<String>,
    pub now: u64,
    pub tolerance: u64,
    pub signature_header: Option<String>,
    #[serde(default)]
    pub timestamp_header: Option<String>,
    pub body: String,
    pub expect: String,
}

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

/// Where the shared vectors live: `$METIGAN_VECTORS`, or `../shared/vectors` beside the repo.
pub fn vectors_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("METIGAN_VECTORS") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for candidate in [
        manifest.join("../shared/vectors"),
        manifest.join("tests/vectors"),
    ] {
        if candidate.join("signatures.json").exists() {
            return candidate;
        }
    }
    panic!("signature vectors not found: set METIGAN_VECTORS or place ../shared/vectors");
}

/// Reads every conformance case at test time.
pub fn cases() -> Vec<Case> {
    let path = vectors_dir().join("signatures.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let vectors: Vectors = serde_json::from_str(&text).expect("valid vectors file");
    assert!(vectors.cases.len() >= 50, "vectors file looks truncated");
    vectors.cases
}

/// Current unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Serves an axum router on a free port of 127.0.0.1; the server stops with the runtime.
pub async fn serve_axum(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `req` with hyper's client and reads the whole answer (10 s limit).
pub async fn send(req: Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answer within 10 s")
        .expect("request sent");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// POSTs `body` to `http://addr/path` with the given headers.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut req = Request::post(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(req.body(Full::new(body.into())).unwrap()).await
}

/// POSTs a body signed now with `secret`.
pub async fn post_signed(addr: SocketAddr, path: &str, secret: &str, body: &str) -> Answer {
    let header = metigan_webhook::sign(secret, now(), body.as_bytes());
    post(
        addr,
        path,
        &[
            ("x-webhook-signature", &header),
            ("content-type", "application/json"),
        ],
        body.to_owned(),
    )
    .await
}

/// A realistic event body.
pub fn event_body(event: &str, message_id: &str) -> String {
    format!(
        r#"{{"event":"{event}","messageId":"{message_id}","data":{{"recipient":"jane@example.com","subject":"Welcome!","status":"delivered"}},"timestamp":1700000000000}}"#
    )
}

/// Captures everything `tracing` logs on this thread while the guard lives (use a
/// current-thread runtime: the server tasks it spawns log on the same thread).
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Installs a subscriber writing plain text at every level into a new capture.
    pub fn install() -> (LogCapture, tracing::subscriber::DefaultGuard) {
        let capture = LogCapture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

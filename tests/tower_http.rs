//! tower-http's `TraceLayer`, `TimeoutLayer` and `CompressionLayer` on either side of the layer.

mod common;

use std::io::Read;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use common::{event_body, now, post as http_post, serve_axum, Answer};

const SECRET: &str = "whsec_tower_http_test";

/// A handler whose answer is long enough to be compressed, and that sleeps on demand.
async fn handler(event: VerifiedEvent) -> String {
    if event.message_id() == Some("slow") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    format!("{} ", event.event_type()).repeat(40)
}

fn metigan() -> MetiganSignatureLayer {
    MetiganSignatureLayer::new(SECRET).unwrap()
}

fn timeout() -> TimeoutLayer {
    #[allow(deprecated)]
    TimeoutLayer::new(Duration::from_secs(1))
}

/// The tower-http layers outside (before) the signature layer.
fn outside() -> Router {
    Router::new().route("/hook", post(handler)).layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(timeout())
            .layer(CompressionLayer::new())
            .layer(metigan()),
    )
}

/// The tower-http layers inside (after) the signature layer.
fn inside() -> Router {
    Router::new().route("/hook", post(handler)).layer(
        ServiceBuilder::new()
            .layer(metigan())
            .layer(TraceLayer::new_for_http())
            .layer(timeout())
            .layer(CompressionLayer::new()),
    )
}

fn gunzip(answer: &Answer) -> String {
    assert_eq!(answer.headers["content-encoding"], "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&answer.body[..])
        .read_to_string(&mut text)
        .expect("valid gzip");
    text
}

async fn signed(addr: std::net::SocketAddr, message_id: &str) -> Answer {
    let body = event_body("email.delivered", message_id);
    let sig = metigan_webhook::sign(SECRET, now(), body.as_bytes());
    http_post(
        addr,
        "/hook",
        &[("x-webhook-signature", &sig), ("accept-encoding", "gzip")],
        body,
    )
    .await
}

async fn exercise(app: Router, rejection_compressed: bool) -> String {
    let (capture, _guard) = common::LogCapture::install();

    let addr = serve_axum(app).await;

    // Success: compressed by CompressionLayer wherever it is.
    let ok = signed(addr, "fast").await;
    assert_eq!(ok.status, 200);
    assert!(gunzip(&ok).starts_with("email.delivered email.delivered"));

    // Rejection: compressed only when CompressionLayer is outside (inside, it never runs).
    let unsigned = http_post(
        addr,
        "/hook",
        &[("accept-encoding", "gzip")],
        event_body("email.delivered", "x"),
    )
    .await;
    assert_eq!(unsigned.status, 401);
    let text = if rejection_compressed {
        gunzip(&unsigned)
    } else {
        assert!(unsigned.headers.get("content-encoding").is_none());
        unsigned.text()
    };
    assert!(text.starts_with("missing_signature"), "{text}");

    // Timeout: the slow (5 s) handler is cut at 1 s with 408, wherever TimeoutLayer is.
    let started = std::time::Instant::now();
    let slow = signed(addr, "slow").await;
    assert_eq!(slow.status, 408);
    assert!(started.elapsed() < Duration::from_secs(4));

    let log = capture.text();
    assert!(log.contains("Metigan webhook rejected"), "{log}");
    assert!(
        log.contains("reason=\"missing_signature\"") || log.contains("reason=missing_signature"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "the secret never reaches a log");
    assert!(
        !log.contains("jane@example.com"),
        "the body never reaches a log"
    );
    log
}

#[tokio::test]
async fn tower_http_layers_outside() {
    let log = exercise(outside(), true).await;
    // TraceLayer outside sees every request, rejected ones included.
    assert!(
        log.matches("finished processing request").count() >= 2,
        "{log}"
    );
    assert!(log.contains("status=401"), "{log}");
}

#[tokio::test]
async fn tower_http_layers_inside() {
    let log = exercise(inside(), false).await;
    // TraceLayer inside sees only verified requests.
    assert!(log.contains("finished processing request"), "{log}");
    assert!(!log.contains("status=401"), "{log}");
}

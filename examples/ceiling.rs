//! The receiver without its signature layer: the ceiling of the HTTP benchmark
//! (`bench/http/run.sh`, see BENCHMARKS.md). Never deploy this: it trusts any request.
//!
//! ```sh
//! PORT=3001 cargo run --release --example ceiling
//! ```
//!
//! Same server (`metigan_webhook::server` with its defaults), route and handler as
//! `examples/receiver.rs`: the body is read, the envelope parsed and the receiver's line
//! (escaped) printed to stdout. Only the signature check (and the deduplication, which the
//! layer carries) is skipped, so the receiver's throughput divided by this one's is the cost of
//! the layer in a real server.

#[path = "support/escape.rs"]
mod escape;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use metigan_webhook::server::{shutdown_signal, Server};
use metigan_webhook::{Envelope, EventType, VerifiedEvent, DEFAULT_BODY_LIMIT};

use escape::Escaped;

/// The line printed for one event (the receiver's).
fn describe(event: &VerifiedEvent) -> String {
    let recipient = Escaped(event.recipient().unwrap_or("unknown recipient"));
    match event.event_type() {
        EventType::EmailDelivered => format!("Email delivered to {recipient}"),
        EventType::EmailOpened => format!("Email opened by {recipient}"),
        EventType::EmailClicked => format!("Link clicked in email to {recipient}"),
        EventType::EmailBounced => format!("Email bounced for {recipient}"),
        other => format!("Received event: {}", Escaped(other.as_str())),
    }
}

/// The receiver's handler, with the event built from the unverified body. It takes the request
/// itself (no copy of its headers) and reads the body within the layer's default limit, as the
/// layer does. The event has no `X-Webhook-Id`: the handler does not use it, and copying it
/// into a `String` (all `VerifiedEvent::new` takes) would cost the ceiling an allocation the
/// layer does not make.
async fn handle(request: Request) -> (StatusCode, &'static str) {
    let Ok(body) = axum::body::to_bytes(request.into_body(), DEFAULT_BODY_LIMIT).await else {
        return (StatusCode::BAD_REQUEST, "body_read_error");
    };
    let Ok(envelope) = Envelope::parse(body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload");
    };
    let event = VerifiedEvent::new(envelope, 0, None, 0);
    let line = describe(&event);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    (StatusCode::OK, "OK")
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let port = match std::env::var("PORT").map(|port| port.parse::<u16>()) {
        Ok(Ok(port)) => port,
        Ok(Err(_)) => {
            eprintln!("ceiling: PORT must be a number from 0 to 65535");
            return ExitCode::from(2);
        }
        Err(_) => 3001,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("ceiling: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!("listening on http://{addr}/webhooks/metigan (NO signature check)");
    let app = Router::new().route("/webhooks/metigan", post(handle));
    match Server::new().serve(listener, app, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceiling: server error: {e}");
            ExitCode::from(1)
        }
    }
}

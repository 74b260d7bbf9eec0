//! A tonic server with gRPC services and a Metigan webhook route on one port.
//!
//! The gRPC health service (`grpc.health.v1.Health`) is served as usual; only
//! `POST /webhooks/metigan` is behind [`MetiganSignatureLayer`], and another method on that
//! route answers 405 before the layer runs. Each verified event prints one line on stdout;
//! rejections are logged on stderr (reason only) and answered 401/413/400.
//!
//! `metigan_webhook::server` serves both on one port: HTTP/2 for gRPC clients, HTTP/1.1 for
//! Metigan, with the receiver's edge limits from the same environment variables
//! (`HEADER_READ_TIMEOUT_SECS`, `BODY_READ_TIMEOUT_SECS`, `REQUEST_TIMEOUT_SECS`,
//! `MAX_CONNECTIONS`, `SHUTDOWN_TIMEOUT_SECS`, `MAX_BUFFERED_BYTES`; see `examples/receiver.rs`).
//! The header-read timeout also closes a gRPC connection that has had no call in flight for
//! that long: clients reconnect on their next call.
//!
//! Run it (the secret is the one Metigan shows for the webhook, used verbatim):
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_test PORT=50051 cargo run --example tonic
//! ```
//!
//! Try it from another shell with curl. `sign` is a helper mode of this example: it prints an
//! `X-Webhook-Signature` value for a body, made now with `WEBHOOK_SECRET` by
//! `metigan_webhook::sign`, so no gRPC tooling is needed:
//!
//! ```sh
//! BODY='{"event":"email.delivered","messageId":"msg_1","data":{"recipient":"jane@example.com"},"timestamp":1700000000000}'
//! SIG=$(WEBHOOK_SECRET=whsec_test cargo run -q --example tonic -- sign "$BODY")
//! curl -i http://127.0.0.1:50051/webhooks/metigan \
//!   -H "X-Webhook-Signature: $SIG" -H 'Content-Type: application/json' --data-raw "$BODY"
//! # 200; the server prints: email.delivered message_id=msg_1 recipient=jane@example.com ...
//! curl -i http://127.0.0.1:50051/webhooks/metigan --data-raw "$BODY"
//! # 401 missing_signature: ...
//! ```
//!
//! The health service answers any gRPC client on the same port, e.g.
//! `grpc_health_probe -addr=127.0.0.1:50051`, without a signature.

#[path = "support/edge.rs"]
mod edge;

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::routing::post;
use axum::Extension;
use metigan_webhook::server::shutdown_signal;
use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};
use tonic::service::Routes;

/// The verified event, one line on stdout. The handler answers 200 quickly: Metigan retries
/// after 30 s without an answer, so real work belongs in a queue.
async fn webhook(Extension(event): Extension<VerifiedEvent>) -> &'static str {
    // Escaped: a value with a newline cannot forge a second line.
    println!(
        "{} message_id={} recipient={} webhook_id={} signed_at={}",
        event.event_type().as_str().escape_debug(),
        event.message_id().unwrap_or("-").escape_debug(),
        event.recipient().unwrap_or("-").escape_debug(),
        event.webhook_id().unwrap_or("-").escape_debug(),
        event.signed_at(),
    );
    "ok"
}

fn secret() -> Result<String, String> {
    std::env::var("WEBHOOK_SECRET")
        .map_err(|_| "WEBHOOK_SECRET is not set (the webhook's secret from Metigan)".to_owned())
}

fn port() -> Result<u16, String> {
    match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT must be a port number, got {port:?}")),
        Err(_) => Ok(50051),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let secret = secret()?;

    // Helper mode: `tonic sign '<body>'` prints a signature header value for that body.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, body] = args.as_slice() {
        if command == "sign" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            println!("{}", metigan_webhook::sign(&secret, now, body.as_bytes()));
            return Ok(());
        }
    }
    if !args.is_empty() {
        return Err("usage: tonic [sign <body>]".to_owned());
    }

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // A secret with a pasted newline or spaces is refused here, with a message that does not
    // contain it.
    let server = edge::server()?;
    let max_buffered = edge::max_buffered_bytes()?;
    let layer = MetiganSignatureLayer::builder()
        .secret(&secret)
        .max_buffered_bytes(max_buffered)
        .build()
        .map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
    let addr = SocketAddr::from(([0, 0, 0, 0], port()?));

    let (_health_reporter, health) = tonic_health::server::health_reporter();
    // gRPC services first, then the webhook route: only its POST handler is behind the layer.
    let app = Routes::new(health)
        .into_axum_router()
        .route("/webhooks/metigan", post(webhook).route_layer(layer));

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().unwrap_or(addr);
    eprintln!("listening on http://{local}: gRPC health + POST /webhooks/metigan");
    server
        .serve(listener, app, shutdown_signal())
        .await
        .map_err(|e| format!("server: {e}"))
}

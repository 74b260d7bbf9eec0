//! The Metigan webhook receiver: an axum service that verifies every delivery and prints one
//! line per event, served by `metigan_webhook::server` so that it can face the internet.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... cargo run --release --example receiver
//! # listens on 0.0.0.0:$PORT (default 3000), route POST /webhooks/metigan
//! ```
//!
//! Verified events answer `200 OK` and print one line to stdout; rejected requests answer
//! 401 / 413 / 400 with the reason code (logged to stderr). Another method than `POST` on the
//! route answers `405` before the signature is checked (a health checker's `GET` is not a
//! rejection). Set `RUST_LOG` to change the log level (default `info`). What is printed from an
//! event is escaped: a control character in a recipient cannot forge a second line.
//!
//! Retried deliveries are deduplicated on `<event>:<messageId>`: in memory by default, in Redis
//! when `REDIS_URL` is set (so several receivers behind one URL never process an event twice).
//! A duplicate answers `200 OK` and prints nothing. `DEDUPE=off` turns deduplication off, for a
//! handler that is idempotent by itself (the HTTP benchmark also uses it, to show what the
//! in-memory deduplication costs).
//!
//! Every limit of the edge is an environment variable (seconds may be fractional, `0.5`):
//!
//! | variable | default | bounds |
//! |---|---|---|
//! | `HEADER_READ_TIMEOUT_SECS` | 10 | time to send a request head, from the connection's start or the previous answer; idle connections are closed after it |
//! | `BODY_READ_TIMEOUT_SECS` | 10 | time for a whole body, from the request's arrival (`400 body_read_error` after it) |
//! | `REQUEST_TIMEOUT_SECS` | 25 | time to answer, under Metigan's 30 s (`503` + `Retry-After` after it) |
//! | `MAX_CONNECTIONS` | 1024 | connections served at once; more wait until one closes |
//! | `SHUTDOWN_TIMEOUT_SECS` | 10 | after SIGTERM / Ctrl-C, time for the requests in flight to finish |
//! | `MAX_BUFFERED_BYTES` | 67108864 (64 MiB) | body bytes buffered at once by all requests; a request that would pass it gets `503` + `Retry-After` (`overloaded`); at least the 1 MiB body limit |
//!
//! A value that is not a positive number stops the receiver at start with one line (exit
//! code 2).

#[path = "support/edge.rs"]
mod edge;
#[path = "support/escape.rs"]
mod escape;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::routing::post;
use axum::Router;
use metigan_webhook::idempotency::{Dedupe, RedisStore};
use metigan_webhook::server::{shutdown_signal, Server};
use metigan_webhook::{EventType, MetiganSignatureLayer, VerifiedEvent};

use escape::Escaped;

/// The line printed for one event.
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

async fn handle(event: VerifiedEvent) -> &'static str {
    let line = describe(&event);
    // One line per event, flushed at once so a pipe sees it immediately.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    "OK"
}

/// The application: one route, its method checked before the signature layer.
fn app(layer: MetiganSignatureLayer) -> Router {
    // `route_layer` on the method router wraps the POST handler only: a GET (a health checker,
    // a browser) gets 405 from the router without the layer reading, checking or logging it,
    // and unknown paths still answer 404.
    Router::new().route("/webhooks/metigan", post(handle).route_layer(layer))
}

struct Config {
    layer: MetiganSignatureLayer,
    addr: SocketAddr,
    server: Server,
}

async fn config() -> Result<Config, String> {
    let secret = std::env::var("WEBHOOK_SECRET").map_err(|_| {
        "WEBHOOK_SECRET is not set: export the secret shown in Metigan's webhook settings"
            .to_owned()
    })?;
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| format!("PORT must be a number from 0 to 65535, got {port:?}"))?,
        Err(_) => 3000,
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let server = edge::server()?;
    let max_buffered = edge::max_buffered_bytes()?;
    let builder = MetiganSignatureLayer::builder()
        .secret(&secret)
        .max_buffered_bytes(max_buffered);
    // Check the secret before connecting anywhere.
    MetiganSignatureLayer::new(&secret).map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    match std::env::var("DEDUPE").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "on") => {}
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err("DEDUPE must be `on` or `off`".to_owned());
        }
        Ok("off") if redis_url.is_some() => {
            return Err("DEDUPE=off and REDIS_URL are both set: choose one".to_owned());
        }
        Ok("off") => {
            let layer = builder
                .build()
                .map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
            tracing::info!("deduplication is off (DEDUPE=off)");
            return Ok(Config {
                layer,
                addr,
                server,
            });
        }
        Ok(other) => return Err(format!("DEDUPE must be `on` or `off`, got {other:?}")),
    }
    let dedupe = match redis_url {
        Some(url) => {
            let store = RedisStore::connect(&url)
                .await
                .map_err(|e| format!("REDIS_URL: {e}"))?;
            tracing::info!("deduplicating in Redis");
            Dedupe::new(store)
        }
        None => Dedupe::in_memory(),
    };
    let layer = builder
        .deduplicate(dedupe)
        .build()
        .map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
    Ok(Config {
        layer,
        addr,
        server,
    })
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

    let Config {
        layer,
        addr,
        server,
    } = match config().await {
        Ok(config) => config,
        Err(message) => {
            eprintln!("receiver: {message}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("receiver: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().map_or(addr, |a| a);
    tracing::info!(?server, "listening on http://{local}/webhooks/metigan");
    match server.serve(listener, app(layer), shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("receiver: server error: {e}");
            ExitCode::from(1)
        }
    }
}

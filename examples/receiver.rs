//! The Metigan webhook receiver: an axum service that verifies every delivery and prints one
//! line per event.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... cargo run --release --example receiver
//! # listens on 0.0.0.0:$PORT (default 3000), route POST /webhooks/metigan
//! ```
//!
//! Verified events answer `200 OK` and print one line to stdout; rejected requests answer
//! 401 / 413 / 400 with the reason code (logged to stderr). Set `RUST_LOG` to change the log
//! level (default `info`).
//!
//! Retried deliveries are deduplicated on `<event>:<messageId>`: in memory by default, in Redis
//! when `REDIS_URL` is set (so several receivers behind one URL never process an event twice).
//! A duplicate answers `200 OK` and prints nothing. `DEDUPE=off` turns deduplication off, for a
//! handler that is idempotent by itself (the HTTP benchmark also uses it, to show what the
//! in-memory deduplication costs).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::routing::post;
use axum::Router;
use metigan_webhook::idempotency::{Dedupe, RedisStore};
use metigan_webhook::{EventType, MetiganSignatureLayer, VerifiedEvent};

/// The line printed for one event.
fn describe(event: &VerifiedEvent) -> String {
    let recipient = event.recipient().unwrap_or("unknown recipient");
    match event.event_type() {
        EventType::EmailDelivered => format!("Email delivered to {recipient}"),
        EventType::EmailOpened => format!("Email opened by {recipient}"),
        EventType::EmailClicked => format!("Link clicked in email to {recipient}"),
        EventType::EmailBounced => format!("Email bounced for {recipient}"),
        other => format!("Received event: {other}"),
    }
}

async fn handle(event: VerifiedEvent) -> &'static str {
    let line = describe(&event);
    // One line per event, flushed at once so a pipe sees it immediately.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    "OK"
}

/// The application: one route behind the signature layer.
fn app(layer: MetiganSignatureLayer) -> Router {
    Router::new()
        .route("/webhooks/metigan", post(handle))
        // `route_layer`: unknown paths still answer 404 instead of 401.
        .route_layer(layer)
}

async fn config() -> Result<(MetiganSignatureLayer, SocketAddr), String> {
    let secret = std::env::var("WEBHOOK_SECRET").map_err(|_| {
        "WEBHOOK_SECRET is not set: export the secret shown in Metigan's webhook settings"
            .to_owned()
    })?;
    let builder = MetiganSignatureLayer::builder().secret(&secret);
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| format!("PORT must be a number from 0 to 65535, got {port:?}"))?,
        Err(_) => 3000,
    };
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
            return Ok((layer, SocketAddr::from(([0, 0, 0, 0], port))));
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
    Ok((layer, SocketAddr::from(([0, 0, 0, 0], port))))
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

    let (layer, addr) = match config().await {
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
    tracing::info!("listening on http://{local}/webhooks/metigan");
    match axum::serve(listener, app(layer))
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("receiver: server error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Ctrl-C or SIGTERM: finish the requests in flight, then exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

//! Answer at once, work later: verified events go into a bounded in-process queue and a
//! background worker processes them, as Metigan's guide advises for slow work (Metigan waits
//! 30 s for an answer, then retries).
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... cargo run --example queue
//! # PORT (default 3000), QUEUE_CAPACITY (default 1024),
//! # WORK_DELAY_MS (simulated slow work per event, default 0)
//! ```
//!
//! It is served by `metigan_webhook::server`, with the receiver's edge limits from the same
//! environment variables (`HEADER_READ_TIMEOUT_SECS`, `BODY_READ_TIMEOUT_SECS`,
//! `REQUEST_TIMEOUT_SECS`, `MAX_CONNECTIONS`, `SHUTDOWN_TIMEOUT_SECS`, `MAX_BUFFERED_BYTES`;
//! see `examples/receiver.rs`). A method other than `POST` answers 405 before the layer runs.
//!
//! # When is the dedupe key completed?
//!
//! The layer claims the key (`<event>:<messageId>`) before calling the handler, and completes it
//! only when the handler answers 2xx; any other answer releases it. So the handler answers:
//!
//! - `200 OK` only once `try_send` has put the event in the queue: **queued ⇔ 2xx ⇔ key done**.
//!   A retry of a queued event is answered `200` by the layer and not queued twice;
//! - `503 Service Unavailable` with `Retry-After` when the queue is full (or the worker is
//!   gone): **not queued ⇔ non-2xx ⇔ key released**, so Metigan's retry is queued normally.
//!
//! `try_send` never waits, so the answer is immediate even when the worker is slow. (Awaiting
//! `send` instead would hold the request until there is room: also correct for the key, but
//! a full queue then costs Metigan its 30 s timeout instead of a quick 503.)
//!
//! What this does **not** cover: events still in the queue when the process dies are lost, since
//! their keys are done and Metigan will not redeliver them. On SIGTERM / Ctrl-C the server stops
//! accepting and the worker drains the queue before the process exits; if a crash must not
//! lose work, enqueue into something durable (a database table, a Redis stream, a message
//! broker) in the handler the same way: answer 2xx only once the write is committed.
//!
//! The worker prints `processing <event> <messageId>` and `processed <event> <messageId>` on
//! stdout for every event.

#[path = "support/edge.rs"]
mod edge;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use metigan_webhook::idempotency::Dedupe;
use metigan_webhook::server::{shutdown_signal, Server};
use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};
use tokio::sync::mpsc;

/// The handler's side of the queue.
#[derive(Clone)]
struct Queue {
    sender: mpsc::Sender<VerifiedEvent>,
}

async fn enqueue(State(queue): State<Queue>, event: VerifiedEvent) -> Response {
    match queue.sender.try_send(event) {
        // Queued: the 2xx makes the layer complete the dedupe key.
        Ok(()) => (StatusCode::OK, "queued").into_response(),
        // Not queued: the non-2xx makes the layer release the key; Metigan retries.
        Err(mpsc::error::TrySendError::Full(event)) => {
            tracing::warn!(event = %event.event_type(), "queue full, asking Metigan to retry");
            busy("queue full, retry later\n")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => busy("worker stopped, retry later\n"),
    }
}

fn busy(message: &'static str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        message,
    )
        .into_response()
}

/// The background worker: one event at a time, until every sender is gone and the queue is
/// empty.
async fn work(mut receiver: mpsc::Receiver<VerifiedEvent>, delay: Duration) {
    while let Some(event) = receiver.recv().await {
        let id = event.message_id().unwrap_or("-").to_owned();
        say(&format!("processing {} {id}", event.event_type()));
        // Your slow work here (send a follow-up, update a CRM, ...).
        tokio::time::sleep(delay).await;
        say(&format!("processed {} {id}", event.event_type()));
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn app(layer: MetiganSignatureLayer, queue: Queue) -> Router {
    // The method first: a GET gets 405 without the layer reading or logging it.
    Router::new()
        .route("/webhooks/metigan", post(enqueue).route_layer(layer))
        .with_state(queue)
}

struct Config {
    layer: MetiganSignatureLayer,
    addr: SocketAddr,
    server: Server,
    capacity: usize,
    delay: Duration,
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("{name} must be a number, got {value:?}")),
        Err(_) => Ok(default),
    }
}

fn config() -> Result<Config, String> {
    let secret = std::env::var("WEBHOOK_SECRET")
        .map_err(|_| "WEBHOOK_SECRET is not set: export the webhook's secret".to_owned())?;
    let server = edge::server()?;
    let max_buffered = edge::max_buffered_bytes()?;
    let layer = MetiganSignatureLayer::builder()
        .secret(secret)
        .max_buffered_bytes(max_buffered)
        .deduplicate(Dedupe::in_memory())
        .build()
        .map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
    let capacity: usize = number("QUEUE_CAPACITY", 1024)?;
    if capacity == 0 {
        return Err("QUEUE_CAPACITY must be at least 1".into());
    }
    Ok(Config {
        layer,
        addr: SocketAddr::from(([0, 0, 0, 0], number("PORT", 3000)?)),
        server,
        capacity,
        delay: Duration::from_millis(number("WORK_DELAY_MS", 0)?),
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
    let config = match config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("queue: {message}");
            return ExitCode::from(2);
        }
    };
    let (sender, receiver) = mpsc::channel(config.capacity);
    let worker = tokio::spawn(work(receiver, config.delay));
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("queue: cannot listen on {}: {e}", config.addr);
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().unwrap_or(config.addr);
    tracing::info!(
        capacity = config.capacity,
        "listening on http://{local}/webhooks/metigan"
    );
    let served = config
        .server
        .serve(
            listener,
            app(config.layer, Queue { sender }),
            shutdown_signal(),
        )
        .await;
    // The server, and with it every sender, is gone: the worker drains what is queued, then
    // stops.
    tracing::info!("draining the queue");
    let drained = worker.await;
    match (served, drained) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("queue: server error: {e}");
            ExitCode::from(1)
        }
        (_, Err(e)) => {
            eprintln!("queue: worker failed: {e}");
            ExitCode::from(1)
        }
    }
}

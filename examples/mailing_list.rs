//! Metigan's three use cases against a real SQLite database: list hygiene on bounces,
//! unsubscribing on spam complaints (with an alert), and engagement counters.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... MAILING_LIST_DB=mailing_list.sqlite3 cargo run --example mailing_list
//! # PORT (default 3000); the schema is created on start if the file is new
//! ```
//!
//! It is served by `metigan_webhook::server`, with the receiver's edge limits from the same
//! environment variables (`HEADER_READ_TIMEOUT_SECS`, `BODY_READ_TIMEOUT_SECS`,
//! `REQUEST_TIMEOUT_SECS`, `MAX_CONNECTIONS`, `SHUTDOWN_TIMEOUT_SECS`, `MAX_BUFFERED_BYTES`;
//! see `examples/receiver.rs`). A method other than `POST` answers 405 before the layer runs.
//!
//! | event | effect |
//! |---|---|
//! | `email.bounced`, hard (`data.bounceType` = `hard`) | the contact's `status` becomes `invalid` |
//! | `email.bounced`, soft (or no bounce type) | the contact's `bounce_count` goes up by one |
//! | `email.complained` | `status` = `unsubscribed`, `unsubscribe_reason` = `spam_complaint`, and an alert through the [`Notifier`] (stderr by default) |
//! | `email.opened` / `email.clicked` | the user's `opens` / `clicks` go up by one (user: `data.userId`, else the recipient) |
//!
//! # Never counted twice
//!
//! Two layers of deduplication, for two different failures:
//!
//! - the signature layer deduplicates in memory (`Dedupe::in_memory()`): a retry of an event
//!   already answered `200`, or one arriving while the first is still running, never reaches
//!   the handler;
//! - the handler records the same key (`<event>:<messageId>`) in `processed_events` **in the same
//!   SQLite transaction** as the effect. That covers what memory cannot: a restart between two
//!   deliveries, or a crash after the commit but before the `200` reached Metigan. Either the
//!   effect and the key are both committed, or neither is and the retry applies it.
//!
//! A database error answers `500`: the layer releases its key and Metigan retries later.

#[path = "support/edge.rs"]
mod edge;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use metigan_webhook::idempotency::Dedupe;
use metigan_webhook::server::{shutdown_signal, Server};
use metigan_webhook::{EventType, MetiganSignatureLayer, VerifiedEvent};
use rusqlite::{params, Connection, OptionalExtension};

/// The schema, created on start when missing.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contacts (
    email              TEXT PRIMARY KEY,
    status             TEXT NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'invalid', 'unsubscribed')),
    bounce_count       INTEGER NOT NULL DEFAULT 0,
    last_bounce_reason TEXT,
    unsubscribe_reason TEXT,
    updated_at_ms      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS engagement (
    user_id          TEXT PRIMARY KEY,
    opens            INTEGER NOT NULL DEFAULT 0,
    clicks           INTEGER NOT NULL DEFAULT 0,
    last_clicked_url TEXT,
    updated_at_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS processed_events (
    key             TEXT PRIMARY KEY,
    processed_at_ms INTEGER NOT NULL
);
";

/// Something worth a human's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    /// A recipient marked an email as spam; they were unsubscribed.
    SpamComplaint {
        /// Who complained.
        recipient: String,
        /// The email they complained about.
        message_id: Option<String>,
    },
}

/// Where alerts go: implement it for Slack, PagerDuty, email...
pub trait Notifier: Send + Sync + 'static {
    /// Called once per alert, after the change is committed.
    fn alert(&self, alert: &Alert);
}

/// The default notifier: one line on stderr.
#[derive(Debug, Default)]
pub struct StderrNotifier;

impl Notifier for StderrNotifier {
    fn alert(&self, alert: &Alert) {
        match alert {
            Alert::SpamComplaint {
                recipient,
                message_id,
            } => {
                // Escaped: a recipient with a newline cannot forge a second line.
                let mut err = std::io::stderr().lock();
                let _ = writeln!(
                    err,
                    "ALERT spam complaint: {} was unsubscribed (messageId {})",
                    recipient.escape_debug(),
                    message_id.as_deref().unwrap_or("-").escape_debug()
                );
            }
        }
    }
}

#[derive(Clone)]
struct App {
    db: Arc<Mutex<Connection>>,
    notifier: Arc<dyn Notifier>,
}

/// What one event did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Applied(Option<Alert>),
    AlreadyProcessed,
    Ignored(&'static str),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The layer's default key: `<event>:<messageId>`.
fn key_of(event: &VerifiedEvent) -> Option<String> {
    event
        .message_id()
        .map(|id| format!("{}:{id}", event.event_type()))
}

/// Applies one event in one transaction (effect and processed key together).
fn apply(conn: &mut Connection, event: &VerifiedEvent) -> rusqlite::Result<Outcome> {
    let tx = conn.transaction()?;
    let now = now_ms();
    let at = event
        .timestamp_ms()
        .and_then(|ms| i64::try_from(ms).ok())
        .unwrap_or(now);
    if let Some(key) = key_of(event) {
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO processed_events (key, processed_at_ms) VALUES (?1, ?2)",
            params![key, now],
        )?;
        if inserted == 0 {
            return Ok(Outcome::AlreadyProcessed);
        }
    }
    let outcome = match event.event_type() {
        EventType::EmailBounced => match event.recipient() {
            None => Outcome::Ignored("bounce without a recipient"),
            Some(email) if event.is_hard_bounce() => {
                tx.execute(
                    "INSERT INTO contacts (email, status, last_bounce_reason, updated_at_ms)
                     VALUES (?1, 'invalid', ?2, ?3)
                     ON CONFLICT (email) DO UPDATE SET status = 'invalid',
                         last_bounce_reason = excluded.last_bounce_reason,
                         updated_at_ms = excluded.updated_at_ms",
                    params![email, event.bounce_reason(), at],
                )?;
                Outcome::Applied(None)
            }
            Some(email) => {
                tx.execute(
                    "INSERT INTO contacts (email, bounce_count, last_bounce_reason, updated_at_ms)
                     VALUES (?1, 1, ?2, ?3)
                     ON CONFLICT (email) DO UPDATE SET bounce_count = bounce_count + 1,
                         last_bounce_reason = excluded.last_bounce_reason,
                         updated_at_ms = excluded.updated_at_ms",
                    params![email, event.bounce_reason(), at],
                )?;
                Outcome::Applied(None)
            }
        },
        EventType::EmailComplained => match event.recipient() {
            None => Outcome::Ignored("complaint without a recipient"),
            Some(email) => {
                tx.execute(
                    "INSERT INTO contacts (email, status, unsubscribe_reason, updated_at_ms)
                     VALUES (?1, 'unsubscribed', 'spam_complaint', ?2)
                     ON CONFLICT (email) DO UPDATE SET status = 'unsubscribed',
                         unsubscribe_reason = 'spam_complaint',
                         updated_at_ms = excluded.updated_at_ms",
                    params![email, at],
                )?;
                Outcome::Applied(Some(Alert::SpamComplaint {
                    recipient: email.to_owned(),
                    message_id: event.message_id().map(str::to_owned),
                }))
            }
        },
        kind @ (EventType::EmailOpened | EventType::EmailClicked) => {
            match event.user_id().or(event.recipient()) {
                None => Outcome::Ignored("engagement event without userId or recipient"),
                Some(user) => {
                    let clicked = *kind == EventType::EmailClicked;
                    tx.execute(
                        "INSERT INTO engagement (user_id, opens, clicks, last_clicked_url,
                                                 updated_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (user_id) DO UPDATE SET
                             opens = opens + excluded.opens,
                             clicks = clicks + excluded.clicks,
                             last_clicked_url = coalesce(excluded.last_clicked_url,
                                                         last_clicked_url),
                             updated_at_ms = excluded.updated_at_ms",
                        params![
                            user,
                            i64::from(!clicked),
                            i64::from(clicked),
                            if clicked { event.clicked_url() } else { None },
                            at
                        ],
                    )?;
                    Outcome::Applied(None)
                }
            }
        }
        _ => Outcome::Ignored("not a mailing-list event"),
    };
    tx.commit()?;
    Ok(outcome)
}

async fn handle(State(app): State<App>, event: VerifiedEvent) -> (StatusCode, &'static str) {
    let db = app.db.clone();
    let work = event.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut conn = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        apply(&mut conn, &work)
    })
    .await;
    match result {
        Ok(Ok(outcome)) => {
            let id = event.message_id().unwrap_or("-");
            match &outcome {
                Outcome::Applied(alert) => {
                    tracing::info!(event = %event.event_type(), message_id = id, "applied");
                    if let Some(alert) = alert {
                        // After the commit: a rolled-back change never alerts.
                        app.notifier.alert(alert);
                    }
                }
                Outcome::AlreadyProcessed => {
                    tracing::info!(event = %event.event_type(), message_id = id, "already processed")
                }
                Outcome::Ignored(why) => {
                    tracing::info!(event = %event.event_type(), message_id = id, "ignored: {why}")
                }
            }
            (StatusCode::OK, "OK")
        }
        Ok(Err(e)) => {
            // Not 2xx: the layer releases its key, Metigan retries.
            tracing::error!(event = %event.event_type(), "database error: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "database error\n")
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "worker failed\n"),
    }
}

fn app(layer: MetiganSignatureLayer, state: App) -> Router {
    // The method first: a GET gets 405 without the layer reading or logging it.
    Router::new()
        .route("/webhooks/metigan", post(handle).route_layer(layer))
        .with_state(state)
}

fn open(path: &PathBuf) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: readers (a dashboard, the tests) do not block the receiver.
    let _mode: Option<String> = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .optional()?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

struct Config {
    layer: MetiganSignatureLayer,
    db: PathBuf,
    addr: SocketAddr,
    server: Server,
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
    let db = std::env::var_os("MAILING_LIST_DB")
        .map_or_else(|| PathBuf::from("mailing_list.sqlite3"), PathBuf::from);
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| format!("PORT must be a number from 0 to 65535, got {port:?}"))?,
        Err(_) => 3000,
    };
    Ok(Config {
        layer,
        db,
        addr: SocketAddr::from(([0, 0, 0, 0], port)),
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
        db: db_path,
        addr,
        server,
    } = match config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("mailing_list: {message}");
            return ExitCode::from(2);
        }
    };
    let conn = match open(&db_path) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("mailing_list: cannot open {}: {e}", db_path.display());
            return ExitCode::from(1);
        }
    };
    let state = App {
        db: Arc::new(Mutex::new(conn)),
        notifier: Arc::new(StderrNotifier),
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("mailing_list: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(db = %db_path.display(), "listening on http://{local}/webhooks/metigan");
    match server
        .serve(listener, app(layer, state), shutdown_signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailing_list: server error: {e}");
            ExitCode::from(1)
        }
    }
}

//! The Metigan webhook receiver: an axum service that verifies every delivery, stores it in a
//! durable inbox, answers, and prints one line per event from the inbox's worker; served by
//! `metigan_webhook::server` so that it can face the internet.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... cargo run --release --example receiver
//! # listens on 0.0.0.0:$PORT (default 3000), route POST /webhooks/metigan
//! ```
//!
//! A verified event is answered `200 OK` once it is committed to the inbox file
//! (`metigan-inbox.redb` in the working directory); the worker then prints one line per event to
//! stdout. Rejected requests answer 401 / 413 / 400 with the reason code (logged to stderr).
//! Another method than `POST` on the route answers `405` before the signature is checked (a
//! health checker's `GET` is not a rejection). Set `RUST_LOG` to change the log level (default
//! `info`). What is printed from an event is escaped: a control character in a recipient cannot
//! forge a second line.
//!
//! # The inbox
//!
//! Every event answered `200 OK` is on disk, and is handled (its line printed) at least once,
//! whatever happens to the process: the next start on the same file handles what the last one
//! acknowledged and did not finish. A handler that fails is retried with backoff, then kept as
//! a dead letter. `INBOX=off` handles each event inside the request instead, as the receiver
//! did before the inbox: the answer waits for the handler, and a handler that fails answers
//! `500 handler_failed` (Metigan retries it).
//!
//! | variable | default | what it sets |
//! |---|---|---|
//! | `INBOX` | `on` | `off`: no file, no worker; each event is handled inside its request |
//! | `INBOX_PATH` | `metigan-inbox.redb` | the inbox file (created with mode 0600). One receiver per file: a second one on the same file exits at once with one line (exit code 1) |
//! | `DATABASE_URL` | unset | `postgres://user:password@host:port/database`: the inbox in PostgreSQL instead of a file, shared by every receiver pointed at it (the tables are created when missing). Any worker takes over the events of a receiver that died once their lease has run out. Not with `INBOX_PATH` |
//! | `INBOX_CONCURRENCY` | 4 | handler runs at once. With more than 1, the lines of events stored together may come out in another order |
//! | `INBOX_LEASE_SECS` | 60 | how long a running event is held without renewal (renewed every third of it while its handler runs); after a crash, its event runs again once the lease has run out |
//! | `INBOX_MAX_ATTEMPTS` | 15 | runs before a failing event becomes a dead letter |
//! | `INBOX_BACKOFF_SECS` | 30 | delay before the first retry, doubled for each next one up to 4 h, each spread by ±25 % |
//! | `ADMIN_ADDR` | unset | serves the inbox's JSON admin API there (e.g. `127.0.0.1:9090`), for `metigan-webhook inbox stats|list|show|replay|purge`; no authentication, so an internal address only |
//!
//! # Metrics
//!
//! | variable | default | what it sets |
//! |---|---|---|
//! | `METRICS_ADDR` | unset | serves the crate's metrics (`metigan_webhook::metrics`: requests by outcome, verification time, signed-timestamp skew, deduplication store errors, the inbox's depth, oldest queued event, handler outcomes, replays) in Prometheus text format at `GET /metrics` there (e.g. `127.0.0.1:9100`); no authentication, so an internal address only |
//!
//! On SIGTERM or Ctrl-C the receiver stops accepting connections and the worker stops taking
//! events, at once; the requests in flight and the handlers running have `SHUTDOWN_TIMEOUT_SECS`
//! to finish. Handlers still running then are stopped and their events given back; everything
//! not handled stays in the file for the next start.
//!
//! # Deduplication
//!
//! Retried deliveries are deduplicated on `<event>:<messageId>`, by `DEDUPE`:
//!
//! - `on` (the default): twice. The layer, in front, answers a duplicate of an event it has
//!   already passed on with `200 OK` without touching the file, and one that arrives while the
//!   first is still being stored with `409 Conflict` + `Retry-After`; it remembers keys in
//!   memory, or in Redis when `REDIS_URL` is set, so that several receivers (each with its own
//!   inbox file) behind one URL never store an event twice. The inbox, behind it, finds the key
//!   in the same atomic write as the append (keys kept 24 h, across restarts): a duplicate that
//!   passes the layer (after a restart emptied its memory, or when Redis forgot) is answered
//!   `200 OK` and not stored again.
//! - `inbox`: only the inbox's key: every copy of a delivery, concurrent ones too, is answered
//!   `200 OK` once the first is stored, and stored once. Not with `REDIS_URL` or `INBOX=off`.
//! - `off`: neither: every delivery is handled, for a handler that is idempotent by itself (the
//!   HTTP benchmark also uses it, to show what the in-memory deduplication costs).
//!
//! Either way a duplicate prints nothing. The inbox itself is at least once: an event whose
//! handler was running when the process died runs again after the restart.
//!
//! # Testing aids
//!
//! | variable | default | what it does |
//! |---|---|---|
//! | `HANDLER_DELAY_MS` | 0 | every handler run takes that long (in both modes), to watch the inbox absorb a burst |
//! | `HANDLER_FAIL` | unset | comma-separated rules: `<event type>` (every run fails, transient: retried until the last attempt), `<event type>:<n>` (the first `n` runs of each event fail, counted in this process), `<event type>:permanent` (a dead letter at once). Example: `email.bounced,email.opened:3` |
//!
//! # The edge
//!
//! Every limit of the edge is an environment variable (seconds may be fractional, `0.5`):
//!
//! | variable | default | bounds |
//! |---|---|---|
//! | `HEADER_READ_TIMEOUT_SECS` | 10 | time to send a request head, from the connection's start or the previous answer; idle connections are closed after it |
//! | `BODY_READ_TIMEOUT_SECS` | 10 | time for a whole body, from the request's arrival (`400 body_read_error` after it) |
//! | `REQUEST_TIMEOUT_SECS` | 25 | time to answer, under Metigan's 30 s (`503` + `Retry-After` after it) |
//! | `MAX_CONNECTIONS` | 1024 | connections served at once; more wait until one closes |
//! | `SHUTDOWN_TIMEOUT_SECS` | 10 | after SIGTERM / Ctrl-C, time for the requests in flight and the running handlers to finish |
//! | `MAX_BUFFERED_BYTES` | 67108864 (64 MiB) | body bytes buffered at once by all requests; a request that would pass it gets `503` + `Retry-After` (`overloaded`); at least the 1 MiB body limit |
//!
//! # Exit codes
//!
//! 0 after SIGTERM or Ctrl-C. 2 with one line on stderr when a variable is missing or wrong
//! (a value that is not a positive number, for example) or Redis cannot be reached. 1 with one
//! line when the inbox file cannot be opened (another receiver holds it, or it cannot be
//! created), PostgreSQL cannot be reached at the start (`DATABASE_URL`), or the port cannot be
//! bound. Once running, a PostgreSQL that goes away makes each delivery answer `503` with
//! `Retry-After` (Metigan retries it) until it is back; the pool reconnects by itself.

#[path = "support/aids.rs"]
mod aids;
#[path = "support/edge.rs"]
mod edge;
#[path = "support/escape.rs"]
mod escape;
#[path = "support/metrics.rs"]
mod metrics;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{post, post_service};
use axum::Router;
use metigan_webhook::idempotency::{Dedupe, DedupeKey, RedisStore};
use metigan_webhook::inbox::{
    Backoff, ErrorKind, FileStore, HandlerError, Inbox, PostgresStore, Worker, DEFAULT_BACKOFF_CAP,
};
use metigan_webhook::server::{shutdown_signal, Server};
use metigan_webhook::{EventType, MetiganSignatureLayer, VerifiedEvent};
use tokio::net::TcpListener;
use tokio::sync::watch;

use aids::Aids;
use escape::Escaped;

const PATH: &str = "/webhooks/metigan";

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

/// What the receiver does with each event: the testing aids, then one line on stdout.
#[derive(Clone)]
struct Handler {
    aids: Aids,
}

impl Handler {
    async fn handle(self, event: VerifiedEvent) -> Result<(), HandlerError> {
        self.aids.before(&event).await?;
        let line = describe(&event);
        // One line per event, flushed at once so a pipe sees it immediately.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        Ok(())
    }
}

/// The application with the inbox: the layer verifies, the inbox's service stores and answers.
fn inbox_app(layer: MetiganSignatureLayer, inbox: &Inbox) -> Router {
    // `route_layer` on the method router wraps the POST service only: a GET (a health checker,
    // a browser) gets 405 from the router without the layer reading, checking or logging it,
    // and unknown paths still answer 404.
    Router::new().route(PATH, post_service(inbox.service()).route_layer(layer))
}

/// The application without the inbox (`INBOX=off`): the handler runs inside the request.
fn in_request_app(layer: MetiganSignatureLayer, handler: Handler) -> Router {
    let handle = move |event: VerifiedEvent| {
        let handler = handler.clone();
        async move {
            match handler.handle(event).await {
                Ok(()) => Ok("OK"),
                Err(error) => {
                    tracing::warn!(%error, "the handler failed; answered 500 (Metigan retries)");
                    Err((StatusCode::INTERNAL_SERVER_ERROR, "handler_failed\n"))
                }
            }
        }
    };
    Router::new().route(PATH, post(handle).route_layer(layer))
}

/// `DEDUPE`: which deduplication runs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deduplication {
    /// The layer's (memory or Redis), then the inbox's key.
    On,
    /// The inbox's key only.
    Inbox,
    /// None.
    Off,
}

/// Where the inbox keeps its events.
enum Location {
    /// `INBOX_PATH`: one redb file, one receiver.
    File(PathBuf),
    /// `DATABASE_URL`: PostgreSQL, shared by every receiver pointed at it.
    Postgres(String),
}

/// The inbox's settings (`INBOX_*`, `DATABASE_URL`, `ADMIN_ADDR`).
struct InboxSettings {
    location: Location,
    /// Whether the inbox deduplicates on `<event>:<messageId>`.
    keyed: bool,
    concurrency: usize,
    lease: Duration,
    max_attempts: u32,
    backoff: Duration,
    admin: Option<SocketAddr>,
}

impl InboxSettings {
    fn from_env(keyed: bool) -> Result<InboxSettings, String> {
        let path = edge::var("INBOX_PATH")?;
        let location =
            match (edge::var("DATABASE_URL")?, path) {
                (Some(_), Some(_)) => return Err(
                    "DATABASE_URL and INBOX_PATH are both set: the inbox is either in PostgreSQL \
                     or in a file, choose one"
                        .to_owned(),
                ),
                (Some(url), None) => Location::Postgres(url),
                (None, path) => Location::File(PathBuf::from(
                    path.unwrap_or_else(|| "metigan-inbox.redb".to_owned()),
                )),
            };
        let max_attempts = edge::count("INBOX_MAX_ATTEMPTS", 15, 1)?;
        Ok(InboxSettings {
            location,
            keyed,
            concurrency: edge::count("INBOX_CONCURRENCY", 4, 1)?,
            lease: edge::seconds("INBOX_LEASE_SECS", 60)?,
            max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
            backoff: edge::seconds("INBOX_BACKOFF_SECS", 30)?,
            admin: admin_addr()?,
        })
    }

    /// Opens the file (or connects to PostgreSQL) and starts the worker, which first handles
    /// what a previous run left.
    async fn start(
        &self,
        handler: Handler,
    ) -> Result<(Inbox, Worker, Option<Arc<FileStore>>), String> {
        let key = if self.keyed {
            DedupeKey::EventAndMessageId
        } else {
            DedupeKey::custom(|_, _| None)
        };
        let builder = Inbox::builder().key(key);
        let (inbox, file, place) = match &self.location {
            Location::File(path) => {
                let file = FileStore::open(path).map_err(|e| {
                    if e.kind() == ErrorKind::AlreadyOpen {
                        format!(
                            "{e}: is another receiver running? Give this one its own INBOX_PATH"
                        )
                    } else {
                        e.to_string()
                    }
                })?;
                // Kept to report the file's commits and syncs at the end.
                let file = Arc::new(file);
                let inbox = builder.store(file.clone());
                (inbox, Some(file), path.display().to_string())
            }
            Location::Postgres(url) => {
                // The error never holds the URL (nor its password).
                let store = PostgresStore::connect(url)
                    .await
                    .map_err(|e| format!("DATABASE_URL: {e}"))?;
                (
                    builder.store(store),
                    None,
                    "PostgreSQL (DATABASE_URL)".to_owned(),
                )
            }
        };
        if let Ok(counts) = inbox.counts().await {
            tracing::info!(
                at = %place,
                waiting = counts.queued + counts.running + counts.retrying,
                dead = counts.dead,
                concurrency = self.concurrency,
                lease = ?self.lease,
                "inbox open"
            );
        }
        // Over PostgreSQL the worker also looks at the queue every second, as that store asks:
        // other receivers append without waking it.
        let worker = inbox
            .worker()
            .concurrency(self.concurrency)
            .lease(self.lease)
            .max_attempts(self.max_attempts)
            .backoff(Backoff::new(
                self.backoff,
                DEFAULT_BACKOFF_CAP.max(self.backoff),
            ))
            .spawn_fn(move |event| handler.clone().handle(event))
            .map_err(|e| e.to_string())?;
        Ok((inbox, worker, file))
    }
}

/// `ADMIN_ADDR`: where the inbox's JSON admin API is served.
fn admin_addr() -> Result<Option<SocketAddr>, String> {
    let Some(addr) = edge::var("ADMIN_ADDR")? else {
        return Ok(None);
    };
    addr.parse().map(Some).map_err(|_| {
        format!("ADMIN_ADDR must be an address and port, such as 127.0.0.1:9090, got {addr:?}")
    })
}

/// The router served on `ADMIN_ADDR`: the inbox's JSON admin API (stats, list, show, replay,
/// purge), which `metigan-webhook inbox ...` talks to. It has no authentication: bind it to an
/// internal address only.
fn admin_router(inbox: &Inbox) -> Result<Router, String> {
    Ok(metigan_webhook::inbox::admin::router(inbox.clone()))
}

struct Config {
    layer: MetiganSignatureLayer,
    addr: SocketAddr,
    server: Server,
    shutdown_timeout: Duration,
    handler: Handler,
    /// `None` with `INBOX=off`.
    inbox: Option<InboxSettings>,
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
    let shutdown_timeout = edge::shutdown_timeout()?;
    let max_buffered = edge::max_buffered_bytes()?;
    let builder = MetiganSignatureLayer::builder()
        .secret(&secret)
        .max_buffered_bytes(max_buffered);
    // Check the secret before connecting anywhere.
    MetiganSignatureLayer::new(&secret).map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    let inbox_on = match edge::var("INBOX")?.as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => return Err(format!("INBOX must be `on` or `off`, got {other:?}")),
    };
    let deduplication = match edge::var("DEDUPE")?.as_deref() {
        None | Some("on") => Deduplication::On,
        Some("inbox") => Deduplication::Inbox,
        Some("off") => Deduplication::Off,
        Some(other) => {
            return Err(format!(
                "DEDUPE must be `on`, `inbox` or `off`, got {other:?}"
            ))
        }
    };
    match (deduplication, &redis_url, inbox_on) {
        (Deduplication::Off, Some(_), _) => {
            return Err("DEDUPE=off and REDIS_URL are both set: choose one".to_owned());
        }
        (Deduplication::Inbox, Some(_), _) => {
            return Err("DEDUPE=inbox and REDIS_URL are both set: choose one".to_owned());
        }
        (Deduplication::Inbox, None, false) => {
            return Err("DEDUPE=inbox needs the inbox, and INBOX=off is set".to_owned());
        }
        _ => {}
    }
    let inbox = if inbox_on {
        Some(InboxSettings::from_env(
            deduplication != Deduplication::Off,
        )?)
    } else {
        if edge::var("ADMIN_ADDR")?.is_some() {
            return Err("ADMIN_ADDR needs the inbox, and INBOX=off is set".to_owned());
        }
        if edge::var("DATABASE_URL")?.is_some() {
            return Err("DATABASE_URL is the inbox's store, and INBOX=off is set".to_owned());
        }
        None
    };
    let aids = Aids::from_env()?;
    if aids.fails_something() {
        tracing::warn!("HANDLER_FAIL is set: some handler runs fail on purpose (a testing aid)");
    }
    let handler = Handler { aids };
    let builder = match deduplication {
        Deduplication::Off => {
            tracing::info!("deduplication is off (DEDUPE=off)");
            builder
        }
        Deduplication::Inbox => {
            tracing::info!("deduplication by the inbox only (DEDUPE=inbox)");
            builder
        }
        Deduplication::On => {
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
            builder.deduplicate(dedupe)
        }
    };
    let layer = builder
        .build()
        .map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
    Ok(Config {
        layer,
        addr,
        server,
        shutdown_timeout,
        handler,
        inbox,
    })
}

/// Completes once `stop` says so.
fn stopped(stop: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut stopped = stop.subscribe();
    async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }
}

/// Binds `addr`, or says why not in one line.
async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
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
        shutdown_timeout,
        handler,
        inbox,
    } = match config().await {
        Ok(config) => config,
        Err(message) => {
            eprintln!("receiver: {message}");
            return ExitCode::from(2);
        }
    };
    // The recorder before the inbox and the layer run, so that it sees everything they record.
    let metrics = match metrics::from_env().await {
        Ok(metrics) => metrics,
        Err((code, message)) => {
            eprintln!("receiver: {message}");
            return ExitCode::from(code);
        }
    };
    // The inbox first: a second receiver on the same file stops here, whatever its port.
    let (inbox, worker, file) = match &inbox {
        Some(settings) => match settings.start(handler.clone()).await {
            Ok((inbox, worker, file)) => (Some((inbox, settings.admin)), Some(worker), file),
            Err(message) => {
                eprintln!("receiver: {message}");
                return ExitCode::from(1);
            }
        },
        None => (None, None, None),
    };
    let admin = match &inbox {
        Some((inbox, Some(admin_addr))) => match admin_router(inbox) {
            Ok(router) => match bind(*admin_addr).await {
                Ok(listener) => Some((listener, router)),
                Err(message) => {
                    eprintln!("receiver: ADMIN_ADDR: {message}");
                    return ExitCode::from(1);
                }
            },
            Err(message) => {
                eprintln!("receiver: {message}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let listener = match bind(addr).await {
        Ok(listener) => listener,
        Err(message) => {
            eprintln!("receiver: {message}");
            return ExitCode::from(1);
        }
    };
    let app = match &inbox {
        Some((inbox, _)) => inbox_app(layer, inbox),
        None => in_request_app(layer, handler),
    };

    // One stop for everything: the signal, or a server that ended on its own.
    let stop = Arc::new(watch::Sender::new(false));
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.send_replace(true);
        }
    });
    if let Some((listener, _)) = &admin {
        let local = listener.local_addr().map_or(addr, |a| a);
        tracing::info!("inbox admin on http://{local}/");
    }
    if let Some((listener, router)) = metrics {
        let local = listener.local_addr().map_or(addr, |a| a);
        tracing::info!("metrics on http://{local}/metrics");
        tokio::spawn(server.clone().serve(listener, router, stopped(&stop)));
    }
    let local = listener.local_addr().map_or(addr, |a| a);
    tracing::info!(?server, "listening on http://{local}{PATH}");

    let serving = async {
        let served = server.clone().serve(listener, app, stopped(&stop)).await;
        stop.send_replace(true);
        served
    };
    let admin_serving = async {
        let Some((listener, router)) = admin else {
            return Ok(());
        };
        let served = server.clone().serve(listener, router, stopped(&stop)).await;
        stop.send_replace(true);
        served
    };
    // The worker stops taking events as soon as the shutdown begins, and has the same deadline
    // as the requests in flight: events not handled by then stay in the file.
    let draining = async {
        if let Some(worker) = worker {
            stopped(&stop).await;
            let report = worker.shutdown(shutdown_timeout).await;
            tracing::info!(
                "inbox worker stopped: {} handler runs finished, {} stopped at the deadline and \
                 given back, {} abandoned (taken again when their leases run out); events not \
                 handled yet stay in the file for the next start",
                report.finished,
                report.released,
                report.abandoned
            );
        }
    };
    let (served, admin_served, ()) = tokio::join!(serving, admin_serving, draining);
    // Closes the inbox file (its writer commits what is queued, then unlocks it).
    drop(inbox);
    if let Some(file) = file {
        let stats = file.stats();
        // Group commit at work: far fewer syncs than appends under concurrency.
        tracing::info!(
            appends = stats.appends,
            commits = stats.commits,
            durable_commits = stats.durable_commits,
            syncs = stats.syncs,
            syncs_per_append =
                format_args!("{:.3}", stats.syncs as f64 / stats.appends.max(1) as f64),
            "inbox file closed"
        );
    }
    match served.and(admin_served) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("receiver: server error: {e}");
            ExitCode::from(1)
        }
    }
}

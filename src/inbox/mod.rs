//! A durable inbox: answer `200 OK` only once the event is on disk, then run your handler for
//! it with retries, leases, dead letters and replay (feature `inbox`).
//!
//! Metigan waits 30 s for an answer and retries what is not acknowledged. Handling an event
//! inside the request risks that timeout; handing it to an in-memory queue and answering at
//! once loses it if the process dies before the queue is drained, and Metigan never sends it
//! again. The inbox does what hosted webhook gateways do: it stores each verified event
//! durably, answers, and delivers it to your handler afterwards, at least once.
//!
//! - [`InboxService`] goes behind [`MetiganSignatureLayer`](crate::MetiganSignatureLayer). It
//!   appends the event (raw body, signed `t`, `X-Webhook-Id`, deduplication key, time received)
//!   and answers `200 OK` once the write is committed and synced. A duplicate key (by default
//!   the layer's `<event>:<messageId>`, see [`InboxBuilder::key`]) is recognised in the same
//!   atomic write: `200 OK`, no second record; an event without a key is always appended. A
//!   store that cannot commit answers `503` with `Retry-After`, never a 2xx.
//! - [`FileStore`] keeps everything in one redb file (pure Rust, no server), created with mode
//!   `0600` and locked against a second opener. Concurrent appends share one transaction and
//!   one sync (group commit).
//! - A [`Worker`] claims stored events and runs your handler, an
//!   `async fn(VerifiedEvent) -> Result<(), E>` or a `tower::Service`, with bounded
//!   concurrency. Each claim holds a lease, renewed while the handler runs: a slow handler
//!   keeps its event, a crashed process's events are taken again once their leases run out.
//!   Failures are retried with exponential backoff and jitter; a [`HandlerError`] can be
//!   permanent (straight to dead letters) or ask for its own delay. After the last attempt the
//!   event is a dead letter, with its last error and attempt count. A new event wakes the
//!   worker at once. The outcomes of handlers that end together are recorded together
//!   ([`InboxStore::settle_many`]: one transaction and one sync with [`FileStore`]); each
//!   event counts as handled only once its own outcome is synced.
//! - [`Inbox`] counts events per [`State`], lists and shows them (bodies only on request),
//!   replays dead letters and purges done events after a retention period. The `admin`
//!   router (feature `inbox-admin`) answers the same as JSON on an internal port, for the
//!   `metigan-webhook inbox` commands.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::post_service, Router};
//! use metigan_webhook::inbox::{HandlerError, Inbox};
//! use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};
//!
//! async fn handle(event: VerifiedEvent) -> Result<(), HandlerError> {
//!     println!("{} for {:?}", event.event_type(), event.recipient());
//!     Ok(())
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let inbox = Inbox::open("metigan-inbox.redb")?;
//! let worker = inbox.worker().concurrency(8).spawn_fn(handle)?;
//!
//! // The method is dispatched first: another method than POST answers 405.
//! let layer = MetiganSignatureLayer::new("whsec_example")?;
//! let app: Router =
//!     Router::new().route("/webhooks/metigan", post_service(inbox.service()).route_layer(layer));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//!
//! worker.shutdown(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! With tower or hyper: `ServiceBuilder::new().layer(layer).service(inbox.service())`. As an
//! axum handler: `post(move |req: axum::extract::Request| inbox.receive(req))`.
//!
//! # What it guarantees
//!
//! Every event answered `200 OK` is on disk and reaches your handler at least once, whatever
//! happens to the process afterwards. "At least once" means a handler may see an event twice:
//! when the process dies while the handler runs, or after it finished but before its outcome
//! was recorded. Make the handler idempotent (an upsert, a unique constraint on
//! `messageId`), or accept the rare duplicate.
//!
//! # Retries and dead letters
//!
//! Defaults: 15 attempts, delays from 30 s doubling to at most 4 h, each spread by ±25 %
//! ([`Backoff`]): 87,330 s (about 24 h 15 min) nominally from the first attempt to the last.
//! Leases last 60 s and are renewed every 20 s. An event whose lease ran out during its last
//! attempt (its worker crashed every time) becomes a dead letter instead of being claimed
//! again. A replay queues a dead letter again, with its attempts started over, its key kept
//! and its replay count increased.
//!
//! # Shutdown
//!
//! [`Worker::shutdown`] takes no new event, lets running handlers finish within a deadline,
//! then stops the rest and gives their events back (due at once, the attempt not counted):
//! the next start runs them. Dropping a [`Worker`] stops it like a crash: its events are taken
//! again when their leases run out.
//!
//! # What is stored
//!
//! The raw body (which holds personal data: recipients, subjects), the signed `t`,
//! `X-Webhook-Id`, the index of the secret that matched, the event type, `messageId`, the
//! deduplication key, times, attempts and the handler's last error text. No other header and
//! no secret. [`Inbox::purge`] removes done events after your retention period; keys are kept
//! for their own TTL so a late retry is still recognised.

#[cfg(feature = "inbox-admin")]
pub mod admin;
mod backoff;
mod error;
mod file;
mod handle;
mod handler;
#[cfg(feature = "postgres")]
pub mod postgres;
mod service;
mod store;
mod worker;

pub use backoff::{Backoff, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP};
pub use error::{ErrorKind, InboxError};
pub use file::{FileStats, FileStore};
pub use handle::{Inbox, InboxBuilder};
pub use handler::{handler_fn, HandlerError, HandlerFn, MAX_ERROR_LEN};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
pub use service::{AckBody, InboxService, ResponseFuture};
pub use store::{
    Appended, BoxFuture, ClaimRequest, Claimed, ClaimedEvent, Counts, EventId, InboxStore, Lease,
    ListQuery, NewEvent, Page, Purged, Settle, State, StoredEvent, MAX_LIST_LIMIT,
};
#[cfg(feature = "metrics")]
pub use worker::DEFAULT_METRICS_INTERVAL;
pub use worker::{
    ShutdownReport, Worker, WorkerBuilder, DEFAULT_CONCURRENCY, DEFAULT_LEASE,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_POLL_INTERVAL,
};

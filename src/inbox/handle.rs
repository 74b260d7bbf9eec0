//! [`Inbox`]: one store, the service that appends to it, the workers that drain it, and what
//! operators use to see and repair it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::error::InboxError;
use super::file::FileStore;
use super::service::{InboxService, ResponseFuture};
use super::store::{Counts, EventId, InboxStore, ListQuery, Page, Purged, StoredEvent};
use super::worker::WorkerBuilder;
use crate::idempotency::{DedupeKey, DEFAULT_RETRY_AFTER, DEFAULT_TTL, MAX_DURATION};

/// How many events [`Inbox::purge`] removes per transaction.
const PURGE_CHUNK: usize = 10_000;

/// What the service and the workers of one inbox share.
pub(super) struct Shared {
    pub(super) store: Arc<dyn InboxStore>,
    /// Wakes a waiting worker when an event is stored or replayed.
    pub(super) wake: Notify,
    pub(super) key: DedupeKey,
    pub(super) key_ttl: Duration,
    pub(super) retry_after: Duration,
}

/// A durable inbox: see the [module docs](super).
///
/// Cheap to clone (one `Arc`); every clone is the same inbox.
#[derive(Clone)]
pub struct Inbox {
    shared: Arc<Shared>,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("key", &self.shared.key)
            .field("key_ttl", &self.shared.key_ttl)
            .field("retry_after", &self.shared.retry_after)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// Opens (or creates, mode `0600`) the inbox file at `path` with the default settings.
    ///
    /// # Errors
    ///
    /// As [`FileStore::open`]: the file is held by another store, or cannot be used.
    pub fn open(path: impl AsRef<Path>) -> Result<Inbox, InboxError> {
        Inbox::builder().open(path)
    }

    /// An inbox over `store`, with the default settings.
    pub fn new(store: impl InboxStore) -> Inbox {
        Inbox::builder().store(store)
    }

    /// A builder for the inbox's settings.
    pub fn builder() -> InboxBuilder {
        InboxBuilder::default()
    }

    /// The service that stores verified events and answers: put it behind
    /// [`MetiganSignatureLayer`](crate::MetiganSignatureLayer).
    pub fn service(&self) -> InboxService {
        InboxService::new(self.shared.clone())
    }

    /// Appends the request's verified event and answers, as [`InboxService`] does: for an
    /// axum handler (`post(move |req: Request| inbox.receive(req))`) or your own service.
    pub fn receive<B>(&self, req: http::Request<B>) -> ResponseFuture {
        super::service::receive(&self.shared, req)
    }

    /// A builder for a worker that runs your handler for each stored event.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.shared.clone())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn InboxStore> {
        &self.shared.store
    }

    /// How many events are in each state.
    ///
    /// # Errors
    ///
    /// The store's, when it cannot be read.
    pub async fn counts(&self) -> Result<Counts, InboxError> {
        self.shared.store.counts().await
    }

    /// A page of events, oldest first (bodies only with [`ListQuery::with_body`]).
    ///
    /// # Errors
    ///
    /// The store's, when it cannot be read.
    pub async fn list(&self, query: ListQuery) -> Result<Page, InboxError> {
        self.shared.store.list(query).await
    }

    /// One event, without its body.
    ///
    /// # Errors
    ///
    /// The store's, when it cannot be read.
    pub async fn get(&self, id: EventId) -> Result<Option<StoredEvent>, InboxError> {
        self.shared.store.get(id, false).await
    }

    /// One event with its raw body (which holds personal data: ask only when you need it).
    ///
    /// # Errors
    ///
    /// The store's, when it cannot be read.
    pub async fn get_with_body(&self, id: EventId) -> Result<Option<StoredEvent>, InboxError> {
        self.shared.store.get(id, true).await
    }

    /// Queues dead letter `id` again (its key kept, its replay count increased, its attempts
    /// started over) and wakes a worker. `Ok(false)` when `id` is not a dead letter.
    ///
    /// # Errors
    ///
    /// The store's, when it cannot commit.
    pub async fn replay(&self, id: EventId) -> Result<bool, InboxError> {
        let replayed = self.shared.store.replay(id).await?;
        if replayed {
            crate::record::replays(1);
            self.shared.wake.notify_one();
        }
        Ok(replayed)
    }

    /// [`replay`](Self::replay)s every dead letter; returns how many.
    ///
    /// # Errors
    ///
    /// The store's, when it cannot commit.
    pub async fn replay_dead(&self) -> Result<u64, InboxError> {
        let count = self.shared.store.replay_dead().await?;
        if count > 0 {
            crate::record::replays(count);
            self.shared.wake.notify_one();
        }
        Ok(count)
    }

    /// Removes done events finished more than `retention` ago, and deduplication keys past
    /// their TTL (keys outlive their events: a retried delivery is still recognised for the
    /// key's whole TTL). Dead letters are kept until replayed.
    ///
    /// # Errors
    ///
    /// The store's, when it cannot commit (what was removed before stays removed).
    pub async fn purge(&self, retention: Duration) -> Result<Purged, InboxError> {
        let mut total = Purged::default();
        loop {
            let purged = self.shared.store.purge(retention, PURGE_CHUNK).await?;
            total.events += purged.events;
            total.keys += purged.keys;
            if purged.events < PURGE_CHUNK as u64 && purged.keys < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

/// Builds an [`Inbox`].
///
/// ```no_run
/// use std::time::Duration;
/// use metigan_webhook::idempotency::DedupeKey;
/// use metigan_webhook::inbox::Inbox;
///
/// # fn main() -> Result<(), metigan_webhook::inbox::InboxError> {
/// let inbox = Inbox::builder()
///     .key(DedupeKey::EventAndMessageId)
///     .key_ttl(Duration::from_secs(7 * 24 * 3600))
///     .open("metigan-inbox.redb")?;
/// # drop(inbox); Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct InboxBuilder {
    key: DedupeKey,
    key_ttl: Duration,
    retry_after: Duration,
}

impl Default for InboxBuilder {
    fn default() -> Self {
        InboxBuilder {
            key: DedupeKey::EventAndMessageId,
            key_ttl: DEFAULT_TTL,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

impl InboxBuilder {
    /// How the deduplication key of an event is made (default `<event>:<messageId>`, as the
    /// layer's deduplication); events without a key are always appended.
    pub fn key(mut self, key: DedupeKey) -> Self {
        self.key = key;
        self
    }

    /// How long a key is remembered after its event was stored (default 24 h), whatever
    /// becomes of the event.
    pub fn key_ttl(mut self, ttl: Duration) -> Self {
        self.key_ttl = ttl.clamp(Duration::from_millis(1), MAX_DURATION);
        self
    }

    /// The `Retry-After` of a `503` answered when the store cannot commit (default 5 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after.min(MAX_DURATION);
        self
    }

    /// An inbox over the file at `path` ([`FileStore`]).
    ///
    /// # Errors
    ///
    /// As [`FileStore::open`].
    pub fn open(self, path: impl AsRef<Path>) -> Result<Inbox, InboxError> {
        Ok(self.store(FileStore::open(path)?))
    }

    /// An inbox over `store`.
    pub fn store(self, store: impl InboxStore) -> Inbox {
        Inbox {
            shared: Arc::new(Shared {
                store: Arc::new(store),
                wake: Notify::new(),
                key: self.key,
                key_ttl: self.key_ttl,
                retry_after: self.retry_after,
            }),
        }
    }
}

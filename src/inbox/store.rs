//! The store trait of the inbox and the records it reads and writes.
//!
//! [`FileStore`](super::FileStore) implements it over one redb file; another database can slot
//! in behind the same trait (and the same behaviour tests).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::error::InboxError;
use crate::event::VerifiedEvent;

pub use crate::idempotency::BoxFuture;

/// The number of a stored event, unique in its store and growing with each append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(u64);

impl EventId {
    /// The event numbered `n`.
    pub const fn new(n: u64) -> Self {
        EventId(n)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for EventId {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(EventId)
    }
}

/// Where a stored event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Stored, waiting for the worker.
    Queued,
    /// A worker holds its lease and runs the handler (or held it, and the lease has not yet
    /// run out).
    Running,
    /// The handler failed; the next attempt waits for its backoff.
    Retrying,
    /// A dead letter: the handler failed permanently or on every attempt. Only a replay runs it
    /// again.
    Dead,
    /// Handled successfully.
    Done,
}

impl State {
    /// Every state, in the order of [`Counts`].
    pub const ALL: [State; 5] = [
        State::Queued,
        State::Running,
        State::Retrying,
        State::Dead,
        State::Done,
    ];

    /// `queued`, `running`, `retrying`, `dead` or `done`.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Dead => "dead",
            State::Done => "done",
        }
    }

    /// The state named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// The state's number as the stores record it (0 queued, 1 running, 2 retrying, 3 dead,
    /// 4 done): part of their on-disk formats, so never renumbered.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) const fn code(self) -> u8 {
        match self {
            State::Queued => 0,
            State::Running => 1,
            State::Retrying => 2,
            State::Dead => 3,
            State::Done => 4,
        }
    }

    /// The state numbered `code` by [`code`](Self::code).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn from_code(code: u8) -> Option<State> {
        State::ALL.into_iter().find(|state| state.code() == code)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to append: what the inbox service keeps of a verified request.
///
/// Only the body, the signed `t`, `X-Webhook-Id` and the index of the secret that matched are
/// kept of the request (no other header, and never a secret), with the envelope's event type
/// and `messageId` for listings.
#[derive(Clone)]
#[non_exhaustive]
pub struct NewEvent {
    /// The raw body, exactly as received and signed.
    pub body: Bytes,
    /// The signed timestamp `t`, in seconds.
    pub signed_at: u64,
    /// The `X-Webhook-Id` header, when present.
    pub webhook_id: Option<String>,
    /// Which configured secret matched (0 = the first).
    pub secret_index: usize,
    /// The envelope's `event`.
    pub event_type: String,
    /// The envelope's `messageId`, when present.
    pub message_id: Option<String>,
    /// The deduplication key; `None` appends the event whatever was stored before.
    pub key: Option<String>,
    /// How long the key is remembered after the append.
    pub key_ttl: Duration,
    /// When the request was received.
    pub received_at: SystemTime,
}

impl NewEvent {
    /// The record of `event`, received now, with its deduplication `key` remembered for
    /// `key_ttl`.
    pub fn from_event(event: &VerifiedEvent, key: Option<String>, key_ttl: Duration) -> Self {
        NewEvent {
            body: event.body().clone(),
            signed_at: event.signed_at(),
            webhook_id: event.webhook_id().map(str::to_owned),
            secret_index: event.secret_index(),
            event_type: event.event_type().as_str().to_owned(),
            message_id: event.message_id().map(str::to_owned),
            key,
            key_ttl,
            received_at: SystemTime::now(),
        }
    }
}

impl fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the body: it holds personal data.
        f.debug_struct("NewEvent")
            .field("event_type", &self.event_type)
            .field("message_id", &self.message_id)
            .field("key", &self.key)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The outcome of [`InboxStore::append`]; both are committed answers (`200 OK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// A new record, durably committed.
    Stored(EventId),
    /// The key was already stored (within its TTL): nothing was written.
    Duplicate(EventId),
}

impl Appended {
    /// The record's id (the earlier one for a duplicate).
    pub fn id(self) -> EventId {
        match self {
            Appended::Stored(id) | Appended::Duplicate(id) => id,
        }
    }
}

/// Proof that a worker holds an event: only the lease's holder can renew or settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    id: EventId,
    token: u64,
}

impl Lease {
    /// The lease numbered `token` on event `id` (stores make them in [`InboxStore::claim`]).
    pub const fn new(id: EventId, token: u64) -> Self {
        Lease { id, token }
    }

    /// The event held.
    pub const fn id(self) -> EventId {
        self.id
    }

    /// The claim's number, unique per claim in its store.
    pub const fn token(self) -> u64 {
        self.token
    }
}

/// What [`InboxStore::claim`] is asked for.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// At most this many events.
    pub limit: usize,
    /// How long each claimed event is held unless renewed.
    pub lease: Duration,
    /// An event whose lease ran out during its last allowed attempt (its worker crashed every
    /// time) becomes a dead letter instead of being claimed again.
    pub max_attempts: u32,
}

impl ClaimRequest {
    /// Claim at most `limit` events for `lease` each.
    pub const fn new(limit: usize, lease: Duration, max_attempts: u32) -> Self {
        ClaimRequest {
            limit,
            lease,
            max_attempts,
        }
    }
}

/// A claimed event: what the worker needs to rebuild the [`VerifiedEvent`] and run it.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClaimedEvent {
    /// The lease now held.
    pub lease: Lease,
    /// The raw body.
    pub body: Bytes,
    /// The signed timestamp `t`.
    pub signed_at: u64,
    /// The `X-Webhook-Id` header, when it was present.
    pub webhook_id: Option<String>,
    /// Which configured secret matched.
    pub secret_index: usize,
    /// This attempt's number, from 1 (counted since the append or the last replay).
    pub attempt: u32,
    /// How many times the event was replayed from dead letters.
    pub replays: u32,
}

impl ClaimedEvent {
    /// The event as the worker receives it.
    pub fn new(lease: Lease, body: Bytes, signed_at: u64, attempt: u32) -> Self {
        ClaimedEvent {
            lease,
            body,
            signed_at,
            webhook_id: None,
            secret_index: 0,
            attempt,
            replays: 0,
        }
    }
}

impl fmt::Debug for ClaimedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedEvent")
            .field("lease", &self.lease)
            .field("attempt", &self.attempt)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The answer to [`InboxStore::claim`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Claimed {
    /// The events now held, oldest due first.
    pub events: Vec<ClaimedEvent>,
    /// How long until the next event not claimed here becomes due (a retry's time, or a
    /// lease running out); `None` when none waits.
    pub next_due: Option<Duration>,
}

impl Claimed {
    /// An answer holding `events`, the next one due in `next_due`.
    pub fn new(events: Vec<ClaimedEvent>, next_due: Option<Duration>) -> Self {
        Claimed { events, next_due }
    }
}

/// How a worker ends its hold of an event ([`InboxStore::settle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settle {
    /// The handler succeeded.
    Done,
    /// The handler failed; run it again `after` this long.
    Retry {
        /// The delay before the next attempt.
        after: Duration,
        /// The handler's error.
        error: String,
    },
    /// A dead letter, with the handler's last error.
    Dead {
        /// The handler's error.
        error: String,
    },
    /// Give the event back untouched (graceful shutdown): due at once, and this attempt is not
    /// counted.
    Release,
}

/// How many events are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// [`State::Queued`].
    pub queued: u64,
    /// [`State::Running`].
    pub running: u64,
    /// [`State::Retrying`].
    pub retrying: u64,
    /// [`State::Dead`].
    pub dead: u64,
    /// [`State::Done`].
    pub done: u64,
}

impl Counts {
    /// The count of `state`.
    pub fn get(&self, state: State) -> u64 {
        match state {
            State::Queued => self.queued,
            State::Running => self.running,
            State::Retrying => self.retrying,
            State::Dead => self.dead,
            State::Done => self.done,
        }
    }

    /// The count of `state`, mutably.
    pub fn get_mut(&mut self, state: State) -> &mut u64 {
        match state {
            State::Queued => &mut self.queued,
            State::Running => &mut self.running,
            State::Retrying => &mut self.retrying,
            State::Dead => &mut self.dead,
            State::Done => &mut self.done,
        }
    }

    /// Events in every state together.
    pub fn total(&self) -> u64 {
        State::ALL.into_iter().map(|state| self.get(state)).sum()
    }
}

/// The most events one [`ListQuery`] returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Which events [`InboxStore::list`] returns: oldest first, a page at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only events in this state (`None`: every event).
    pub state: Option<State>,
    /// Only events after this one: the cursor of the previous [`Page`].
    pub after: Option<EventId>,
    /// At most this many (1 to [`MAX_LIST_LIMIT`]; default 50).
    pub limit: usize,
    /// Include each event's raw body (default: not).
    pub with_body: bool,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            state: None,
            after: None,
            limit: 50,
            with_body: false,
        }
    }
}

impl ListQuery {
    /// The first 50 events of every state, without bodies.
    pub fn new() -> Self {
        ListQuery::default()
    }

    /// Only events in `state`.
    pub fn state(mut self, state: State) -> Self {
        self.state = Some(state);
        self
    }

    /// Only events after `cursor` (the previous page's [`Page::next`]).
    pub fn after(mut self, cursor: EventId) -> Self {
        self.after = Some(cursor);
        self
    }

    /// At most `limit` events, clamped to 1..=[`MAX_LIST_LIMIT`].
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.clamp(1, MAX_LIST_LIMIT);
        self
    }

    /// Include the raw bodies (they hold personal data: ask only when you need them).
    pub fn with_body(mut self) -> Self {
        self.with_body = true;
        self
    }
}

/// One page of [`InboxStore::list`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Page {
    /// The events, oldest first.
    pub events: Vec<StoredEvent>,
    /// The cursor of the next page (`ListQuery::after`), when there may be more.
    pub next: Option<EventId>,
}

impl Page {
    /// A page holding `events`, followed by more after `next`.
    pub fn new(events: Vec<StoredEvent>, next: Option<EventId>) -> Self {
        Page { events, next }
    }
}

/// A stored event as an operator sees it. Its body is there only when asked for.
#[derive(Clone)]
#[non_exhaustive]
pub struct StoredEvent {
    /// Its id.
    pub id: EventId,
    /// Its state.
    pub state: State,
    /// The envelope's `event`.
    pub event_type: String,
    /// The envelope's `messageId`.
    pub message_id: Option<String>,
    /// The deduplication key it was stored under.
    pub key: Option<String>,
    /// The `X-Webhook-Id` header.
    pub webhook_id: Option<String>,
    /// The signed timestamp `t`, in seconds.
    pub signed_at: u64,
    /// Which configured secret matched.
    pub secret_index: usize,
    /// When it was received.
    pub received_at: SystemTime,
    /// Attempts started since the append or the last replay.
    pub attempts: u32,
    /// How many times it was replayed.
    pub replays: u32,
    /// The handler's last error.
    pub last_error: Option<String>,
    /// When it is due: when a queued event was queued, the next attempt of a retrying event,
    /// the end of a running event's lease; `None` for dead and done events.
    pub due_at: Option<SystemTime>,
    /// When it became done or dead.
    pub finished_at: Option<SystemTime>,
    /// The raw body, when asked for.
    pub body: Option<Bytes>,
}

impl StoredEvent {
    /// A queued event numbered `id` of type `event_type`, with every other field empty.
    pub fn new(id: EventId, event_type: impl Into<String>) -> Self {
        StoredEvent {
            id,
            state: State::Queued,
            event_type: event_type.into(),
            message_id: None,
            key: None,
            webhook_id: None,
            signed_at: 0,
            secret_index: 0,
            received_at: UNIX_EPOCH,
            attempts: 0,
            replays: 0,
            last_error: None,
            due_at: None,
            finished_at: None,
            body: None,
        }
    }
}

impl fmt::Debug for StoredEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredEvent")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("event_type", &self.event_type)
            .field("message_id", &self.message_id)
            .field("attempts", &self.attempts)
            .field("replays", &self.replays)
            .field("last_error", &self.last_error)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

/// What [`InboxStore::purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Purged {
    /// Done events finished before the retention period.
    pub events: u64,
    /// Deduplication keys past their TTL.
    pub keys: u64,
}

impl Purged {
    /// `events` events and `keys` keys removed.
    pub const fn new(events: u64, keys: u64) -> Self {
        Purged { events, keys }
    }
}

/// Where the inbox keeps its events: [`FileStore`](super::FileStore) (one redb file), or your
/// own database.
///
/// Every method is one atomic step. In particular [`append`](Self::append) must find a
/// duplicate key in the same atomic write that stores the event, and answer only once that
/// write is durable (committed and synced), since the inbox answers `200 OK` on its word.
/// Times are the store's own clock; durations are given relative to it.
pub trait InboxStore: Send + Sync + 'static {
    /// Stores `event` durably, unless its key is already stored and not expired.
    fn append(&self, event: NewEvent) -> BoxFuture<Result<Appended, InboxError>>;

    /// Takes up to `request.limit` due events (queued, retrying whose time has come, running
    /// whose lease ran out), oldest due first, each under a new lease, counting an attempt.
    fn claim(&self, request: ClaimRequest) -> BoxFuture<Result<Claimed, InboxError>>;

    /// Extends `lease` to `duration` from now. `Ok(false)`: the lease is no longer held
    /// (another claim took the event after it ran out, or it was settled).
    fn renew(&self, lease: Lease, duration: Duration) -> BoxFuture<Result<bool, InboxError>>;

    /// Ends `lease` with `outcome`. `Ok(false)`: the lease is no longer held; nothing changed.
    fn settle(&self, lease: Lease, outcome: Settle) -> BoxFuture<Result<bool, InboxError>>;

    /// Ends many leases at once: one answer per settlement, in order, each what
    /// [`settle`](Self::settle) would have answered. The worker settles the events whose
    /// handlers ended together through this, so a store that writes them in one durable
    /// transaction (as [`FileStore`](super::FileStore) does) makes one sync for all of them.
    ///
    /// The default calls [`settle`](Self::settle) for each, one after the other.
    fn settle_many(
        &self,
        settlements: Vec<(Lease, Settle)>,
    ) -> BoxFuture<Vec<Result<bool, InboxError>>> {
        let each: Vec<_> = settlements
            .into_iter()
            .map(|(lease, outcome)| self.settle(lease, outcome))
            .collect();
        Box::pin(async move {
            let mut answers = Vec::with_capacity(each.len());
            for settled in each {
                answers.push(settled.await);
            }
            answers
        })
    }

    /// How often a worker should look at the store when nothing woke it, when the store says:
    /// a store that other processes append to (their appends do not wake this process's
    /// worker) answers how soon their events should be taken. `None` (the default): the
    /// worker's own default, since only this process appends.
    fn poll_interval(&self) -> Option<Duration> {
        None
    }

    /// How many events are in each state.
    fn counts(&self) -> BoxFuture<Result<Counts, InboxError>>;

    /// A page of events, oldest first.
    fn list(&self, query: ListQuery) -> BoxFuture<Result<Page, InboxError>>;

    /// One event, with its body when `with_body`.
    fn get(
        &self,
        id: EventId,
        with_body: bool,
    ) -> BoxFuture<Result<Option<StoredEvent>, InboxError>>;

    /// Queues a dead letter again: attempts start over, its key is kept and its replay count
    /// grows. `Ok(false)` when `id` is not a dead letter.
    fn replay(&self, id: EventId) -> BoxFuture<Result<bool, InboxError>>;

    /// [`replay`](Self::replay)s every dead letter; returns how many.
    fn replay_dead(&self) -> BoxFuture<Result<u64, InboxError>>;

    /// Removes up to `limit` done events finished more than `retention` ago, and up to `limit`
    /// deduplication keys past their TTL (whatever their event's state).
    fn purge(&self, retention: Duration, limit: usize) -> BoxFuture<Result<Purged, InboxError>>;
}

impl<S: InboxStore + ?Sized> InboxStore for Arc<S> {
    fn append(&self, event: NewEvent) -> BoxFuture<Result<Appended, InboxError>> {
        (**self).append(event)
    }
    fn claim(&self, request: ClaimRequest) -> BoxFuture<Result<Claimed, InboxError>> {
        (**self).claim(request)
    }
    fn renew(&self, lease: Lease, duration: Duration) -> BoxFuture<Result<bool, InboxError>> {
        (**self).renew(lease, duration)
    }
    fn settle(&self, lease: Lease, outcome: Settle) -> BoxFuture<Result<bool, InboxError>> {
        (**self).settle(lease, outcome)
    }
    fn settle_many(
        &self,
        settlements: Vec<(Lease, Settle)>,
    ) -> BoxFuture<Vec<Result<bool, InboxError>>> {
        (**self).settle_many(settlements)
    }
    fn poll_interval(&self) -> Option<Duration> {
        (**self).poll_interval()
    }
    fn counts(&self) -> BoxFuture<Result<Counts, InboxError>> {
        (**self).counts()
    }
    fn list(&self, query: ListQuery) -> BoxFuture<Result<Page, InboxError>> {
        (**self).list(query)
    }
    fn get(
        &self,
        id: EventId,
        with_body: bool,
    ) -> BoxFuture<Result<Option<StoredEvent>, InboxError>> {
        (**self).get(id, with_body)
    }
    fn replay(&self, id: EventId) -> BoxFuture<Result<bool, InboxError>> {
        (**self).replay(id)
    }
    fn replay_dead(&self) -> BoxFuture<Result<u64, InboxError>> {
        (**self).replay_dead()
    }
    fn purge(&self, retention: Duration, limit: usize) -> BoxFuture<Result<Purged, InboxError>> {
        (**self).purge(retention, limit)
    }
}

/// Milliseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn to_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant `millis` after the Unix epoch.
pub(crate) fn from_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(millis))
        .unwrap_or(UNIX_EPOCH)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

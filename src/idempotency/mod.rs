//! Deduplication of retried deliveries.
//!
//! Metigan retries a delivery that did not get a 2xx answer within 30 s, so one event can
//! arrive several times. With [`deduplicate`](crate::MetiganSignatureBuilder::deduplicate) the layer
//! claims a key for every verified event before calling your handler:
//!
//! - the first delivery claims the key and runs the handler; a 2xx answer marks the key done,
//!   anything else (non-2xx, an error, a panic, a dropped future) releases it so the retry runs;
//! - a duplicate of a done key answers `200 OK` without calling the handler;
//! - a duplicate while the first is still running answers `409 Conflict` with `Retry-After`;
//! - a claim whose holder died expires after its lease; a done key after its TTL;
//! - when the store cannot be reached the layer answers `503` with `Retry-After` (Metigan
//!   retries later), or, with [`Dedupe::fail_open`], runs the handler anyway and logs a warning.
//!
//! Only verified events are deduplicated: a forged or rejected request never claims a key.
//!
//! # What it guarantees
//!
//! Metigan delivers at least once. With deduplication, within the TTL, your handler *succeeds*
//! at most once per key, and never runs twice at the same time for one key (across instances
//! with `RedisStore`, feature `redis`). A handler that fails may run again on
//! the retry: that is the point. Effects a handler commits before failing are not rolled back.
//! The edges of this guarantee (a handler outliving its lease, a success the store could not
//! record, releases from destructors, eviction from a full memory store) are listed in the
//! crate's README, section "Deduplicating retried deliveries".
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use metigan_webhook::MetiganSignatureLayer;
//! use metigan_webhook::idempotency::{Dedupe, DedupeKey};
//!
//! let layer = MetiganSignatureLayer::builder()
//!     .secret("whsec_example")
//!     .deduplicate(Dedupe::in_memory().ttl(Duration::from_secs(24 * 3600)))
//!     .build()
//!     .unwrap();
//! # drop(layer);
//! ```

mod guard;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use sha2::{Digest, Sha256};

use crate::event::VerifiedEvent;

pub(crate) use guard::ClaimGuard;

pub use memory::{MemoryStore, DEFAULT_CAPACITY};
#[cfg(feature = "redis")]
pub use redis::{RedisStore, DEFAULT_PREFIX};

/// A boxed, `Send` future, as returned by [`IdempotencyStore`] methods.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Proof of a claim: only its holder can complete or release the key.
///
/// The layer's own tokens are kept inline (no allocation per request); tokens made with
/// [`Token::new`] own their text.
#[derive(Clone)]
pub struct Token(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; 48] },
    Owned(Box<str>),
}

impl Token {
    /// Wraps a token value (unique per claim).
    pub fn new(value: impl Into<String>) -> Self {
        Token(Repr::Owned(value.into().into_boxed_str()))
    }

    /// The token's value.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ASCII hex digits and dashes are written inline.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Owned(text) => text,
        }
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Token {}

impl std::hash::Hash for Token {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The outcome of [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The key was free: the caller's token holds it until it completes or releases it, or the
    /// lease runs out.
    Acquired,
    /// Another delivery of this key holds a live claim.
    InFlight,
    /// The key was already processed successfully (within its TTL).
    Done,
}

/// The store could not answer (unreachable, timed out, full).
#[derive(Debug, Clone)]
pub struct StoreError {
    message: String,
}

impl StoreError {
    /// An error with a message for the logs (it must not contain secrets or bodies).
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "idempotency store error: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

/// Where claims and done keys live. Implemented by [`MemoryStore`] and, with the `redis`
/// feature, `RedisStore`; implement it for your own database.
///
/// Every method must be atomic with respect to the others for one key: two concurrent `claim`s
/// of a free key must not both return [`Claim::Acquired`]. The token is chosen by the caller
/// before `claim` is called, so a claim whose answer was lost can still be released.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` with `token` for `lease` if it is neither claimed nor done.
    fn claim(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> BoxFuture<Result<Claim, StoreError>>;

    /// Marks a claimed key done for `ttl`, if `token` still holds it (or its lease ran out
    /// and nobody claimed the key since).
    ///
    /// `Ok(true)` when the key is now done; `Ok(false)` when another claim holds it (this
    /// claim's lease ran out and another delivery took the key): nothing changes, and the
    /// layer logs a warning.
    fn complete(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
    ) -> BoxFuture<Result<bool, StoreError>>;

    /// Frees a claimed key, if `token` still holds it.
    fn release(&self, key: &str, token: &Token) -> BoxFuture<Result<(), StoreError>>;

    /// Frees a claimed key from a destructor (the request's future was dropped): must not block
    /// and cannot be awaited. The default does nothing, so the claim expires with its lease.
    fn release_detached(&self, key: &str, token: &Token) {
        let _ = (key, token);
    }

    /// Marks a claimed key done from a destructor: the handler answered 2xx, and the request's
    /// future was dropped while [`complete`](Self::complete) was still pending. Must not block
    /// and cannot be awaited. The default does nothing: the claim then stays until its lease
    /// runs out (it is never released, which would let a retry run a handler that already
    /// succeeded).
    fn complete_detached(&self, key: &str, token: &Token, ttl: Duration) {
        let _ = (key, token, ttl);
    }

    /// Keeps `token`'s claim on `key` alive while its handler runs, so that a handler slower
    /// than the lease is not run a second time by a retry. The layer calls it once the claim is
    /// acquired, and drops the returned [`Hold`] once the outcome is recorded (or the request
    /// ends).
    ///
    /// A store shared by several processes renews the lease every `lease / 3` until then
    /// (`RedisStore` does, on the Tokio runtime); the lease still frees the key of an instance
    /// that died. The default renews nothing: the claim then lasts its lease, however long the
    /// handler runs.
    fn hold(&self, key: &str, token: &Token, lease: Duration) -> Hold {
        let _ = (key, token, lease);
        Hold::none()
    }

    /// [`claim`](Self::claim) for a store that can answer without waiting (one in this
    /// process's memory): `Some(answer)` spares the layer a boxed future and a step of its
    /// state machine. The default, `None`, means "await `claim`". When it answers, it must have
    /// exactly the effect `claim` would have.
    fn claim_immediately(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> Option<Result<Claim, StoreError>> {
        let _ = (key, token, lease);
        None
    }

    /// [`complete`](Self::complete) without waiting, as
    /// [`claim_immediately`](Self::claim_immediately); `None` (the default) means "await
    /// `complete`".
    fn complete_immediately(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
    ) -> Option<Result<bool, StoreError>> {
        let _ = (key, token, ttl);
        None
    }

    /// [`release`](Self::release) without waiting, as
    /// [`claim_immediately`](Self::claim_immediately); `None` (the default) means "await
    /// `release`".
    fn release_immediately(&self, key: &str, token: &Token) -> Option<Result<(), StoreError>> {
        let _ = (key, token);
        None
    }
}

/// Keeps a claim alive while its handler runs; returned by [`IdempotencyStore::hold`].
///
/// It owns whatever renews the claim (a task handle, say) and stops the renewal when it is
/// dropped.
#[must_use = "the claim is renewed only while the hold lives"]
pub struct Hold(Option<Box<dyn std::any::Any + Send + Sync>>);

impl Hold {
    /// A hold that renews nothing.
    pub const fn none() -> Self {
        Hold(None)
    }

    /// A hold that keeps `renewal` until the claim's outcome is recorded; give `renewal` a
    /// `Drop` that stops renewing.
    pub fn new(renewal: impl Send + Sync + 'static) -> Self {
        Hold(Some(Box::new(renewal)))
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("renewing", &self.0.is_some())
            .finish()
    }
}

type KeyFn = dyn Fn(&VerifiedEvent, &Parts) -> Option<String> + Send + Sync;

/// How the deduplication key of an event is made.
#[derive(Clone)]
pub enum DedupeKey {
    /// `<event>:<messageId>` (the default): Metigan's guidance is to dedupe on `messageId`, and
    /// the event type is part of the key because one email's `delivered`, `opened` and
    /// `clicked` events share a `messageId`. Events without `messageId` are not deduplicated.
    EventAndMessageId,
    /// The `X-Webhook-Id` header (events without it are not deduplicated). Metigan documents it
    /// both as the webhook's id and as a delivery id: use it only if yours is per delivery.
    WebhookId,
    /// The SHA-256 of the raw body: byte-identical retries are deduplicated, anything else is
    /// not.
    BodyDigest,
    /// Your own function of the event and the request head; `None` skips deduplication.
    Custom(Arc<KeyFn>),
}

impl DedupeKey {
    /// A key made by your own function.
    pub fn custom(
        f: impl Fn(&VerifiedEvent, &Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        DedupeKey::Custom(Arc::new(f))
    }

    /// The key of one event, or `None` when it is not deduplicated. Keys longer than 128
    /// bytes are replaced by their SHA-256, so a store never holds more than that per key.
    pub(crate) fn key_of(&self, event: &VerifiedEvent, parts: &Parts) -> Option<String> {
        let key = self.raw_key_of(event, parts)?;
        Some(if key.len() > 128 {
            digest_key(key.as_bytes())
        } else {
            key
        })
    }

    fn raw_key_of(&self, event: &VerifiedEvent, parts: &Parts) -> Option<String> {
        match self {
            DedupeKey::EventAndMessageId => event.message_id().map(|id| {
                let kind = event.event_type().as_str();
                let mut key = String::with_capacity(kind.len() + 1 + id.len());
                key.push_str(kind);
                key.push(':');
                key.push_str(id);
                key
            }),
            DedupeKey::WebhookId => event.webhook_id().map(|id| format!("webhook-id:{id}")),
            DedupeKey::BodyDigest => Some(digest_key(event.body())),
            DedupeKey::Custom(f) => f(event, parts),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
fn digest_key(bytes: &[u8]) -> String {
    let mut key = String::with_capacity(7 + 64);
    key.push_str("sha256:");
    crate::signature::push_hex(&mut key, &Sha256::digest(bytes));
    key
}

impl fmt::Debug for DedupeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DedupeKey::EventAndMessageId => f.write_str("EventAndMessageId"),
            DedupeKey::WebhookId => f.write_str("WebhookId"),
            DedupeKey::BodyDigest => f.write_str("BodyDigest"),
            DedupeKey::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The deduplication settings given to [`deduplicate`](crate::MetiganSignatureBuilder::deduplicate).
#[derive(Clone)]
pub struct Dedupe {
    pub(crate) store: Arc<dyn IdempotencyStore>,
    pub(crate) key: DedupeKey,
    pub(crate) lease: Duration,
    pub(crate) ttl: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) fail_open: bool,
}

impl fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedupe")
            .field("key", &self.key)
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .field("retry_after", &self.retry_after)
            .field("fail_open", &self.fail_open)
            .finish_non_exhaustive()
    }
}

/// Default claim lease: longer than Metigan's 30 s delivery timeout.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Default lifetime of a done key: one day.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest lease, TTL or `Retry-After` accepted (ten years); longer ones are clamped, so
/// "forever" (`Duration::MAX`) is safe to pass.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Default `Retry-After` of 409 and 503 answers.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

impl Dedupe {
    /// Deduplicates with `store`, keyed by `<event>:<messageId>`, lease 60 s, TTL 24 h.
    pub fn new(store: impl IdempotencyStore) -> Self {
        Dedupe {
            store: Arc::new(store),
            key: DedupeKey::EventAndMessageId,
            lease: DEFAULT_LEASE,
            ttl: DEFAULT_TTL,
            retry_after: DEFAULT_RETRY_AFTER,
            fail_open: false,
        }
    }

    /// Deduplicates in this process's memory ([`MemoryStore::default`]).
    pub fn in_memory() -> Self {
        Dedupe::new(MemoryStore::default())
    }

    /// Chooses the key (default [`DedupeKey::EventAndMessageId`]).
    pub fn key(mut self, key: DedupeKey) -> Self {
        self.key = key;
        self
    }

    /// How long a claim lives if its holder never completes or releases it (a crashed
    /// instance); default 60 s. While the handler runs, the layer keeps the claim alive
    /// ([`IdempotencyStore::hold`]: Redis renews it every `lease / 3`, the memory store holds
    /// it until the request ends), so a slow handler does not lose its key; a shorter lease
    /// frees the keys of a dead instance sooner.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.clamp(Duration::from_millis(1), MAX_DURATION);
        self
    }

    /// How long a done key is remembered; default 24 h.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.clamp(Duration::from_millis(1), MAX_DURATION);
        self
    }

    /// The `Retry-After` of 409 (in flight) and 503 (store unreachable) answers; default 5 s.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after.min(MAX_DURATION);
        self
    }

    /// When the store cannot be reached, run the handler anyway (and log a warning) instead of
    /// answering 503. Duplicates may then be processed twice.
    pub fn fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }
}

/// How a deduplicated request was answered without calling the handler; put in the response's
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Duplicate {
    /// The key was already processed: `200 OK`.
    AlreadyProcessed,
    /// The key is being processed by another delivery: `409 Conflict` with `Retry-After`.
    InFlight,
    /// The store could not be reached: `503 Service Unavailable` with `Retry-After`.
    StoreUnavailable,
}

impl Duplicate {
    pub(crate) fn status(self) -> http::StatusCode {
        match self {
            Duplicate::AlreadyProcessed => http::StatusCode::OK,
            Duplicate::InFlight => http::StatusCode::CONFLICT,
            Duplicate::StoreUnavailable => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short code: `already_processed`, `in_flight` or `store_unavailable`.
    pub const fn code(self) -> &'static str {
        match self {
            Duplicate::AlreadyProcessed => "already_processed",
            Duplicate::InFlight => "in_flight",
            Duplicate::StoreUnavailable => "store_unavailable",
        }
    }

    pub(crate) fn body(self) -> &'static str {
        match self {
            Duplicate::AlreadyProcessed => "OK",
            Duplicate::InFlight => "in_flight: this event is being processed; retry later\n",
            Duplicate::StoreUnavailable => {
                "store_unavailable: deduplication store unreachable; retry later\n"
            }
        }
    }

    pub(crate) fn grpc_status(self) -> u16 {
        match self {
            Duplicate::AlreadyProcessed => 0,
            Duplicate::InFlight => 10,
            Duplicate::StoreUnavailable => 14,
        }
    }
}

/// A unique, unpredictable claim token (no extra dependency: std's randomly seeded
/// hasher, a counter and the process id).
pub fn new_token() -> Token {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // The process id is a system call on some platforms: read it once.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    let random = hasher.finish();
    // `pppppppp-nnnnnnnnnnnnnnnn-rrrrrrrrrrrrrrrr`, written in place: no allocation.
    let mut bytes = [0u8; 48];
    let mut len = 0usize;
    for part in [
        &pid.to_be_bytes()[..],
        &n.to_be_bytes(),
        &random.to_be_bytes(),
    ] {
        if len > 0 {
            bytes[len] = b'-';
            len += 1;
        }
        crate::signature::hex_into(part, &mut bytes[len..len + 2 * part.len()]);
        len += 2 * part.len();
    }
    Token(Repr::Inline {
        len: len as u8,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_inline_and_compare_by_text() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 42);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c == b'-' || c.is_ascii_hexdigit()));
        assert_eq!(Token::new(a.as_str()), a, "same text, same token");
        assert_eq!(format!("{a:?}"), "Token(..)");
    }
}

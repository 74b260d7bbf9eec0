//! The in-memory store: sharded, bounded, expiring, no background thread.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{BoxFuture, Claim, IdempotencyStore, StoreError, Token, MAX_DURATION};

/// At most this many shards; fewer for small capacities, so each shard holds at least
/// [`MIN_SHARD_CAPACITY`] keys.
const MAX_SHARDS: usize = 32;
const MIN_SHARD_CAPACITY: usize = 64;

/// Default capacity of [`MemoryStore`]: 100,000 keys.
pub const DEFAULT_CAPACITY: usize = 100_000;

enum Entry {
    InFlight { token: Token, expires: Instant },
    Done { expires: Instant },
}

impl Entry {
    fn expires(&self) -> Instant {
        match self {
            Entry::InFlight { expires, .. } | Entry::Done { expires } => *expires,
        }
    }
}

/// Deduplication state in this process's memory: the default store.
///
/// - **Bounded**: at most `capacity` keys (default 100,000; keys are at most 128 bytes, longer
///   ones are hashed), split over up to 32 shards (each holding at least 64 keys) so concurrent
///   requests rarely wait on the same lock. When a shard is full, expired keys are dropped
///   first, then the done keys closest to expiry (an eighth of the shard at a time, so the cost
///   is amortised). Keys in flight are never evicted: if a shard holds only live claims, a new
///   claim fails with a [`StoreError`] (the layer answers 503).
/// - **Expiring**: claims live for their lease, done keys for their TTL, checked on access: no
///   background thread or timer, no runtime needed.
/// - One process only: use `RedisStore` (feature `redis`) when several instances receive the
///   same webhook.
pub struct MemoryStore {
    shards: Box<[Mutex<HashMap<String, Entry>>]>,
    shard_capacity: usize,
    hasher: RandomState,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &(self.shard_capacity * self.shards.len()))
            .field("len", &self.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryStore {
    /// A store holding at most about `capacity` keys (rounded up to fill its shards; at least
    /// 64).
    pub fn with_capacity(capacity: usize) -> Self {
        let shards = (capacity / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        let shard_capacity = capacity.div_ceil(shards).max(MIN_SHARD_CAPACITY);
        MemoryStore {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_capacity,
            hasher: RandomState::new(),
        }
    }

    /// How many keys are held (expired ones included until they are next touched).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, Entry>> {
        let index = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        lock(&self.shards[index])
    }

    /// The synchronous claim (the trait wraps it in a ready future).
    fn claim_now(&self, key: &str, token: &Token, lease: Duration) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get(key) {
            if entry.expires() > now {
                return Ok(match entry {
                    Entry::InFlight { .. } => Claim::InFlight,
                    Entry::Done { .. } => Claim::Done,
                });
            }
        } else if shard.len() >= self.shard_capacity {
            make_room(&mut shard, now, self.shard_capacity)?;
        }
        shard.insert(
            key.to_owned(),
            Entry::InFlight {
                token: token.clone(),
                expires: deadline(now, lease),
            },
        );
        Ok(Claim::Acquired)
    }

    fn complete_now(&self, key: &str, token: &Token, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let ours = match shard.get(key) {
            Some(Entry::InFlight { token: held, .. }) if held == token => true,
            // Our lease ran out and nobody claimed the key since: the work is done, say so.
            Some(entry) => entry.expires() <= now,
            None => true,
        };
        if ours {
            if !shard.contains_key(key) && shard.len() >= self.shard_capacity {
                make_room(&mut shard, now, self.shard_capacity)?;
            }
            shard.insert(
                key.to_owned(),
                Entry::Done {
                    expires: deadline(now, ttl),
                },
            );
        }
        Ok(())
    }

    fn release_now(&self, key: &str, token: &Token) {
        let mut shard = self.shard(key);
        if matches!(shard.get(key), Some(Entry::InFlight { token: held, .. }) if held == token) {
            shard.remove(key);
        }
    }
}

/// `now + duration`, without overflow.
fn deadline(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration.min(MAX_DURATION))
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 60 * 60)))
        .unwrap_or(now)
}

/// A poisoned shard only means another thread panicked while holding it; the map itself is
/// always left consistent (single inserts/removes), so keep using it.
fn lock(shard: &Mutex<HashMap<String, Entry>>) -> MutexGuard<'_, HashMap<String, Entry>> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drops expired entries, then, if still full, the done entries closest to expiry.
fn make_room(
    shard: &mut HashMap<String, Entry>,
    now: Instant,
    capacity: usize,
) -> Result<(), StoreError> {
    shard.retain(|_, entry| entry.expires() > now);
    if shard.len() < capacity {
        return Ok(());
    }
    let mut done: Vec<(Instant, String)> = shard
        .iter()
        .filter_map(|(key, entry)| match entry {
            Entry::Done { expires } => Some((*expires, key.clone())),
            Entry::InFlight { .. } => None,
        })
        .collect();
    if done.is_empty() {
        return Err(StoreError::new(format!(
            "memory store full: {capacity} claims in flight in one shard"
        )));
    }
    let evict = (capacity / 8).clamp(1, done.len());
    done.select_nth_unstable(evict - 1);
    for (_, key) in done.into_iter().take(evict) {
        shard.remove(&key);
    }
    Ok(())
}

impl IdempotencyStore for MemoryStore {
    fn claim(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> BoxFuture<Result<Claim, StoreError>> {
        let result = self.claim_now(key, token, lease);
        Box::pin(std::future::ready(result))
    }

    fn complete(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
    ) -> BoxFuture<Result<(), StoreError>> {
        let result = self.complete_now(key, token, ttl);
        Box::pin(std::future::ready(result))
    }

    fn release(&self, key: &str, token: &Token) -> BoxFuture<Result<(), StoreError>> {
        self.release_now(key, token);
        Box::pin(std::future::ready(Ok(())))
    }

    fn release_detached(&self, key: &str, token: &Token) {
        self.release_now(key, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(60);

    fn claim(store: &MemoryStore, key: &str, lease: Duration) -> (Claim, Token) {
        let token = super::super::new_token();
        (store.claim_now(key, &token, lease).unwrap(), token)
    }

    #[test]
    fn claim_complete_release() {
        let store = MemoryStore::default();
        let (first, token) = claim(&store, "k", LEASE);
        assert_eq!(first, Claim::Acquired);
        assert_eq!(claim(&store, "k", LEASE).0, Claim::InFlight);
        // Only the holder can release.
        store.release_now("k", &Token::new("someone else"));
        assert_eq!(claim(&store, "k", LEASE).0, Claim::InFlight);
        store.release_now("k", &token);
        let (again, token) = claim(&store, "k", LEASE);
        assert_eq!(again, Claim::Acquired);
        store.complete_now("k", &token, LEASE).unwrap();
        assert_eq!(claim(&store, "k", LEASE).0, Claim::Done);
        // Releasing a done key does nothing.
        store.release_now("k", &token);
        assert_eq!(claim(&store, "k", LEASE).0, Claim::Done);
    }

    #[test]
    fn leases_and_ttls_expire() {
        let store = MemoryStore::default();
        assert_eq!(
            claim(&store, "k", Duration::from_millis(30)).0,
            Claim::Acquired
        );
        std::thread::sleep(Duration::from_millis(60));
        let (again, token) = claim(&store, "k", LEASE);
        assert_eq!(again, Claim::Acquired);
        store
            .complete_now("k", &token, Duration::from_millis(30))
            .unwrap();
        assert_eq!(claim(&store, "k", LEASE).0, Claim::Done);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(claim(&store, "k", LEASE).0, Claim::Acquired);
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let store = MemoryStore::default();
        let (first, token) = claim(&store, "k", Duration::MAX);
        assert_eq!(first, Claim::Acquired);
        store.complete_now("k", &token, Duration::MAX).unwrap();
        assert_eq!(claim(&store, "k", Duration::MAX).0, Claim::Done);
    }

    #[test]
    fn small_capacities_still_hold_their_live_claims() {
        let store = MemoryStore::with_capacity(64);
        for i in 0..64 {
            assert_eq!(
                claim(&store, &format!("live-{i}"), LEASE).0,
                Claim::Acquired
            );
        }
    }

    #[test]
    fn bounded_evicts_done_keys_never_claims() {
        let store = MemoryStore::with_capacity(256);
        let capacity = store.shard_capacity * store.shards.len();
        for i in 0..10_000 {
            let key = format!("done-{i}");
            let (_, token) = claim(&store, &key, LEASE);
            store.complete_now(&key, &token, LEASE).unwrap();
        }
        assert!(store.len() <= capacity, "{}", store.len());
        // Fill with live claims until a shard refuses: never more than its capacity.
        let mut refused = false;
        for i in 0..10_000 {
            let token = super::super::new_token();
            match store.claim_now(&format!("live-{i}"), &token, LEASE) {
                Ok(Claim::Acquired) => {}
                Ok(other) => panic!("{other:?}"),
                Err(_) => {
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused, "a shard full of live claims refuses new ones");
        assert!(store.len() <= capacity);
    }
}

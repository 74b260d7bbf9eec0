//! The in-memory store: sharded, bounded, expiring, no background thread.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

use siphasher::sip128::{Hasher128, SipHasher13};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{BoxFuture, Claim, Hold, IdempotencyStore, StoreError, Token, MAX_DURATION};

/// At most this many shards; fewer for small capacities, so each shard holds at least
/// [`MIN_SHARD_CAPACITY`] keys.
const MAX_SHARDS: usize = 32;
const MIN_SHARD_CAPACITY: usize = 64;

/// Default capacity of [`MemoryStore`]: 100,000 keys.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// One key's state in 16 bytes: when it expires (milliseconds since the store was created) and
/// who holds it (a keyed hash of the claim's token; 0 once done).
#[derive(Clone, Copy)]
struct Entry {
    expires: u64,
    holder: u64,
}

const DONE: u64 = 0;

/// Keys are 128-bit keyed hashes (SipHash-1-3-128 under a random key of the process), so an
/// entry costs the same whatever the key's length, and no string is allocated or kept per key.
/// Two different keys share a hash with probability about 2^-128 per pair. The map itself does
/// not hash them again: they are random already.
type Map = HashMap<u128, Entry, PassThrough>;

/// One shard: its keys, and estimates of the span of its done keys' expiry instants, kept as
/// keys complete and raised by each eviction, so that eviction needs no sort, no copy of the
/// keys and nothing allocated. They only steer which done keys go first: wrong estimates cost
/// an extra pass, never a claim in flight or the capacity bound.
struct Shard {
    map: Map,
    oldest_done: u64,
    newest_done: u64,
}

/// A shard reserves room for at most this many keys when it is made (so a default store does not
/// rehash while it fills); a larger one grows as keys arrive.
const MAX_RESERVED_PER_SHARD: usize = 1 << 14;

impl Shard {
    fn new(capacity: usize) -> Self {
        Shard {
            map: Map::with_capacity_and_hasher(capacity.min(MAX_RESERVED_PER_SHARD), PassThrough),
            oldest_done: u64::MAX,
            newest_done: 0,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed; fold anything else in for completeness.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Deduplication state in this process's memory: the default store.
///
/// - **Bounded**: at most `capacity` keys (default 100,000), split over up to 32 shards (each
///   holding at least 64 keys) so concurrent requests rarely wait on the same lock. A key
///   takes one 32-byte table slot whatever its length (a 128-bit keyed hash and a 16-byte
///   entry; the table keeps some slots spare), and no heap allocation of its own; the
///   receiver's peak RSS with a full store is measured in BENCHMARKS.md. When a shard is full, expired keys
///   are dropped first, then the done keys closest to expiry (an eighth of the shard at a time,
///   so the cost is amortised). Keys in flight are never evicted: if a shard holds only live
///   claims, a new claim fails with a [`StoreError`] (the layer answers 503).
/// - **Expiring**: claims live for their lease, done keys for their TTL, checked on access: no
///   background thread or timer, no runtime needed. A claim the layer holds while its handler
///   runs ([`IdempotencyStore::hold`]) does not expire until the layer completes or releases
///   it, which it always does when the request ends: in one process no holder can die and
///   leave its claim behind.
/// - One process only: use `RedisStore` (feature `redis`) when several instances receive the
///   same webhook.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    /// SipHash keys for the keys and for the tokens, random per store.
    key_key: [u64; 2],
    token_key: [u64; 2],
    epoch: Instant,
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
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(shard_capacity)))
                .collect(),
            shard_capacity,
            key_key: random_key(),
            token_key: random_key(),
            epoch: Instant::now(),
        }
    }

    /// How many keys are held (expired ones included until they are next touched).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key_hash(&self, key: &str) -> u128 {
        let mut hasher = SipHasher13::new_with_keys(self.key_key[0], self.key_key[1]);
        hasher.write(key.as_bytes());
        hasher.finish128().as_u128()
    }

    fn holder(&self, token: &Token) -> u64 {
        let mut hasher = SipHasher13::new_with_keys(self.token_key[0], self.token_key[1]);
        hasher.write(token.as_str().as_bytes());
        // Never 0, which marks a done key.
        hasher.finish128().h1.max(1)
    }

    fn now(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    fn shard(&self, key: u128) -> MutexGuard<'_, Shard> {
        let index = ((key >> 64) as u64 % self.shards.len() as u64) as usize;
        lock(&self.shards[index])
    }

    fn claim_now(&self, key: &str, token: &Token, lease: Duration) -> Result<Claim, StoreError> {
        let key = self.key_hash(key);
        let now = self.now();
        let mut shard = self.shard(key);
        match shard.map.get(&key) {
            Some(entry) if entry.expires > now => {
                return Ok(if entry.holder == DONE {
                    Claim::Done
                } else {
                    Claim::InFlight
                });
            }
            Some(_) => {}
            None if shard.map.len() >= self.shard_capacity => {
                make_room(&mut shard, now, self.shard_capacity)?;
            }
            None => {}
        }
        shard.map.insert(
            key,
            Entry {
                expires: now.saturating_add(millis(lease)),
                holder: self.holder(token),
            },
        );
        Ok(Claim::Acquired)
    }

    fn complete_now(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.key_hash(key);
        let now = self.now();
        let expires = now.saturating_add(millis(ttl));
        let holder = self.holder(token);
        let mut shard = self.shard(key);
        let done = Entry {
            expires,
            holder: DONE,
        };
        match shard.map.get_mut(&key) {
            // Ours, or our lease ran out and nobody claimed the key since (the work is done,
            // say so): done, in place.
            Some(entry) if entry.holder == holder || entry.expires <= now => *entry = done,
            // Another holder's now.
            Some(_) => return Ok(false),
            None => {
                if shard.map.len() >= self.shard_capacity {
                    make_room(&mut shard, now, self.shard_capacity)?;
                }
                shard.map.insert(key, done);
            }
        }
        shard.oldest_done = shard.oldest_done.min(expires);
        shard.newest_done = shard.newest_done.max(expires);
        Ok(true)
    }

    /// Pins a held claim until it is completed or released: in one process, a claim's holder
    /// cannot die while the store lives (the layer settles every claim when its request ends,
    /// even when the request's future is dropped), so holding it is renewing it forever.
    fn hold_now(&self, key: &str, token: &Token) {
        let key = self.key_hash(key);
        let holder = self.holder(token);
        let mut shard = self.shard(key);
        if let Some(entry) = shard.map.get_mut(&key) {
            if entry.holder == holder {
                entry.expires = u64::MAX;
            }
        }
    }

    fn release_now(&self, key: &str, token: &Token) {
        let key = self.key_hash(key);
        let holder = self.holder(token);
        let mut shard = self.shard(key);
        if shard
            .map
            .get(&key)
            .is_some_and(|entry| entry.holder == holder)
        {
            shard.map.remove(&key);
        }
    }
}

/// Milliseconds, clamped to the longest duration accepted.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.min(MAX_DURATION).as_millis()).unwrap_or(u64::MAX)
}

/// A poisoned shard only means another thread panicked while holding it; the map itself is
/// always left consistent (single inserts/removes), so keep using it.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Two random 64-bit words, from the standard library's per-process random seed.
fn random_key() -> [u64; 2] {
    let state = RandomState::new();
    [state.hash_one(0u8), state.hash_one(1u8)]
}

/// Frees room in a full shard, allocating nothing. When some done key may have expired, expired
/// entries are dropped first, alone; if that is not enough (and in the steady state of a full
/// store, where nothing has expired yet), one pass drops every expired entry and about an
/// eighth of the shard's done entries, those closest to expiry (done keys expire in the order
/// they completed, one TTL per store in practice, so the first eighth of their expiry span
/// holds about an eighth of them). If that frees less than half the eighth, the span widens
/// and another pass runs; the widest takes every done key. Claims in flight are never evicted.
fn make_room(shard: &mut Shard, now: u64, capacity: usize) -> Result<(), StoreError> {
    if shard.oldest_done <= now {
        shard.map.retain(|_, entry| entry.expires > now);
        if shard.map.len() < capacity {
            return Ok(());
        }
    }
    let target = (capacity / 8).max(1);
    let (oldest, newest) = (shard.oldest_done, shard.newest_done);
    let mut span = newest.saturating_sub(oldest) / 8;
    loop {
        let threshold = oldest.saturating_add(span).min(newest);
        let mut freed = 0;
        shard.map.retain(|_, entry| {
            let drop = entry.expires <= now
                || (freed < target && entry.holder == DONE && entry.expires <= threshold);
            freed += usize::from(drop);
            !drop
        });
        if oldest <= newest {
            shard.oldest_done = threshold;
        }
        if shard.map.len() < capacity && (freed * 2 >= target || threshold >= newest) {
            return Ok(());
        }
        if threshold >= newest || oldest > newest {
            if shard.map.len() < capacity {
                return Ok(());
            }
            return Err(StoreError::new(format!(
                "memory store full: {capacity} claims in flight in one shard"
            )));
        }
        span = span.saturating_mul(2).max(1);
    }
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
    ) -> BoxFuture<Result<bool, StoreError>> {
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

    fn complete_detached(&self, key: &str, token: &Token, ttl: Duration) {
        if let Err(error) = self.complete_now(key, token, ttl) {
            tracing::warn!(%error, "could not mark a webhook done; its claim stays until evicted");
        }
    }

    /// Pins the claim until it is completed or released (see the store's docs).
    fn hold(&self, key: &str, token: &Token, _lease: Duration) -> Hold {
        self.hold_now(key, token);
        Hold::none()
    }

    fn claim_immediately(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> Option<Result<Claim, StoreError>> {
        Some(self.claim_now(key, token, lease))
    }

    fn complete_immediately(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
    ) -> Option<Result<bool, StoreError>> {
        Some(self.complete_now(key, token, ttl))
    }

    fn release_immediately(&self, key: &str, token: &Token) -> Option<Result<(), StoreError>> {
        self.release_now(key, token);
        Some(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(60);

    use super::super::new_token;

    fn claim(store: &MemoryStore, key: &str, lease: Duration) -> (Claim, Token) {
        let token = new_token();
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
    fn a_held_claim_outlives_its_lease_and_complete_reports_another_holder() {
        let store = MemoryStore::default();
        let short = Duration::from_millis(20);
        let (first, token) = claim(&store, "k", short);
        assert_eq!(first, Claim::Acquired);
        let _hold = store.hold("k", &token, short);
        // Someone else's token cannot pin it.
        store.hold_now("k", &Token::new("someone else"));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            claim(&store, "k", LEASE).0,
            Claim::InFlight,
            "held past its lease"
        );
        assert!(store.complete_now("k", &token, LEASE).unwrap());
        assert_eq!(claim(&store, "k", LEASE).0, Claim::Done);

        // Without a hold the lease runs out, another delivery claims the key, and the first
        // holder's late completion changes nothing and says so.
        let (_, late) = claim(&store, "j", short);
        std::thread::sleep(Duration::from_millis(50));
        let (again, newer) = claim(&store, "j", LEASE);
        assert_eq!(again, Claim::Acquired);
        assert!(!store.complete_now("j", &late, LEASE).unwrap());
        assert_eq!(claim(&store, "j", LEASE).0, Claim::InFlight);
        store.complete_detached("j", &newer, LEASE);
        assert_eq!(claim(&store, "j", LEASE).0, Claim::Done);
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
    fn eviction_takes_the_done_keys_closest_to_expiry() {
        let store = MemoryStore::with_capacity(64);
        assert_eq!((store.shards.len(), store.shard_capacity), (1, 64));
        // Expiries one second apart, in an order unrelated to the keys' table order.
        for i in 0..64u64 {
            let key = format!("k{i}");
            let (_, token) = claim(&store, &key, LEASE);
            let ttl = Duration::from_secs(100 + (i * 37) % 64);
            store.complete_now(&key, &token, ttl).unwrap();
        }
        assert_eq!(claim(&store, "one more", LEASE).0, Claim::Acquired);
        let held = |key: &str| {
            let key = store.key_hash(key);
            store.shard(key).map.contains_key(&key)
        };
        let evicted: Vec<u64> = (0..64u64)
            .filter(|i| !held(&format!("k{i}")))
            .map(|i| (i * 37) % 64)
            .collect();
        // An eighth of 64 is 8: at least half of that, and only from the earliest expiries.
        assert!((4..=8).contains(&evicted.len()), "{evicted:?}");
        assert!(evicted.iter().all(|ttl| *ttl < 16), "{evicted:?}");
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

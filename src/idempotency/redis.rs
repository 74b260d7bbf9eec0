//! The Redis store: deduplication shared by several instances (feature `redis`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{BoxFuture, Claim, Hold, IdempotencyStore, StoreError, Token};

/// Claims atomically: `SET NX PX` with a unique token, else tell done from in flight.
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == 'done' then return 0 end
return 2
";

/// Marks done only if the caller still holds the claim (or it lapsed and nobody took it).
const COMPLETE: &str = r"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] or held == false then
  redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
  return 1
end
return 0
";

/// Frees the key only if the caller still holds the claim.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Extends the lease only if the caller still holds the claim.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
    renew: Script,
}

/// Deduplication state in Redis, shared by every instance that uses the same server and
/// prefix.
///
/// A claim is `SET <prefix><key> <token> NX PX <lease>`: atomic, so two instances never both
/// run the handler for one key. Completing (`done` for the TTL) and releasing are Lua scripts
/// that act only if the caller's token still holds the key, so a slow instance whose lease
/// ran out cannot overwrite or free a newer claim.
///
/// Uses the `redis` crate's `ConnectionManager`, which reconnects by itself; every operation
/// is bounded by a timeout (default 2 s), after which the layer answers 503 (or runs the
/// handler in fail-open mode). Needs a Tokio runtime.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    scripts: Arc<Scripts>,
    prefix: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Default prefix of the keys written to Redis.
pub const DEFAULT_PREFIX: &str = "metigan-webhook:";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

fn store_error(context: &str, error: &redis::RedisError) -> StoreError {
    StoreError::new(format!("redis {context}: {}", error.kind_description()))
}

trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for redis::RedisError {
    fn kind_description(&self) -> String {
        // The error's category and code only: never the URL (it may hold a password).
        if self.is_timeout() {
            "timed out".to_owned()
        } else if self.is_connection_refusal() {
            "connection refused".to_owned()
        } else if self.is_io_error()
            || self.is_connection_dropped()
            || self.is_unrecoverable_error()
        {
            "connection lost".to_owned()
        } else {
            format!("{:?}", self.kind())
        }
    }
}

impl RedisStore {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379/0`) and checks the server answers.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the URL is invalid or the server cannot be reached within 2 s.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|_| StoreError::new("invalid redis URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEFAULT_TIMEOUT))
            .set_response_timeout(Some(DEFAULT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = tokio::time::timeout(
            DEFAULT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| StoreError::new("redis connect: timed out"))?
        .map_err(|e| store_error("connect", &e))?;
        let store = RedisStore::from_connection(connection);
        let mut check = store.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut check)
            .await
            .map_err(|e| store_error("ping", &e))?;
        // Load the scripts now, so the first claims do not pay for it (`EVALSHA` would miss).
        for script in [
            &store.scripts.claim,
            &store.scripts.complete,
            &store.scripts.release,
            &store.scripts.renew,
        ] {
            script
                .load_async(&mut check)
                .await
                .map_err(|e| store_error("script load", &e))?;
        }
        Ok(store)
    }

    /// Uses an existing connection manager.
    pub fn from_connection(connection: ConnectionManager) -> Self {
        RedisStore {
            connection,
            scripts: Arc::new(Scripts {
                claim: Script::new(CLAIM),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
                renew: Script::new(RENEW),
            }),
            prefix: Arc::from(DEFAULT_PREFIX),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Prefixes every key (default `metigan-webhook:`), to share a Redis with other data.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// Bounds every operation (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn with_retries<T, F>(&self, mut attempt: impl FnMut() -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let deadline = tokio::time::Instant::now() + RECORD_RETRY_FOR;
        let mut pause = Duration::from_millis(50);
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) if tokio::time::Instant::now() + pause >= deadline => return Err(error),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn run<T: Send + 'static>(
        &self,
        context: &'static str,
        script: fn(&Scripts) -> &Script,
        key: String,
        args: (String, u64),
        map: fn(i64) -> T,
    ) -> BoxFuture<Result<T, StoreError>> {
        let mut connection = self.connection.clone();
        let scripts = self.scripts.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let call = async {
                script(&scripts)
                    .key(&key)
                    .arg(&args.0)
                    .arg(args.1)
                    .invoke_async::<i64>(&mut connection)
                    .await
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(value)) => Ok(map(value)),
                Ok(Err(error)) => Err(store_error(context, &error)),
                Err(_) => Err(StoreError::new(format!("redis {context}: timed out"))),
            }
        })
    }
}

/// Stops a renewal task when its claim's outcome is recorded.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Milliseconds for `PX`, within what Redis accepts.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.min(super::MAX_DURATION).as_millis())
        .unwrap_or(1)
        .max(1)
}

/// How long `complete` and `release` keep retrying through an outage.
const RECORD_RETRY_FOR: Duration = Duration::from_secs(5);

impl IdempotencyStore for RedisStore {
    fn claim(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> BoxFuture<Result<Claim, StoreError>> {
        let claim = self.run(
            "claim",
            |s| &s.claim,
            self.full_key(key),
            (token.as_str().to_owned(), millis(lease)),
            |answer| answer,
        );
        Box::pin(async move {
            Ok(match claim.await? {
                1 => Claim::Acquired,
                0 => Claim::Done,
                _ => Claim::InFlight,
            })
        })
    }

    fn complete(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
    ) -> BoxFuture<Result<bool, StoreError>> {
        // Recording the outcome rides out a short outage (a Redis restart): retried for a few
        // seconds, while the claim it replaces is still in place.
        let store = self.clone();
        let (key, token, ttl) = (self.full_key(key), token.as_str().to_owned(), millis(ttl));
        Box::pin(async move {
            store
                .with_retries(|| {
                    let args = (token.clone(), ttl);
                    store.run("complete", |s| &s.complete, key.clone(), args, |n| n == 1)
                })
                .await
        })
    }

    fn release(&self, key: &str, token: &Token) -> BoxFuture<Result<(), StoreError>> {
        let store = self.clone();
        let (key, token) = (self.full_key(key), token.as_str().to_owned());
        Box::pin(async move {
            store
                .with_retries(|| {
                    let args = (token.clone(), 0);
                    store.run("release", |s| &s.release, key.clone(), args, |_| ())
                })
                .await
        })
    }

    fn complete_detached(&self, key: &str, token: &Token, ttl: Duration) {
        // As `release_detached`: spawned on the current runtime; without one the claim stays
        // until its lease runs out (it is never released).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let complete = self.complete(key, token, ttl);
            runtime.spawn(async move {
                if let Err(error) = complete.await {
                    tracing::warn!(%error, "could not mark a webhook done; its claim expires with the lease");
                }
            });
        }
    }

    /// Renews the lease every `lease / 3` from a task on the current Tokio runtime, until the
    /// hold is dropped. A renewal that finds another holder stops and logs a warning; one that
    /// fails (Redis unreachable) is tried again at the next tick, while the lease still runs.
    fn hold(&self, key: &str, token: &Token, lease: Duration) -> Hold {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Hold::none();
        };
        let store = self.clone();
        let (key, token) = (self.full_key(key), token.as_str().to_owned());
        let every = (lease / 3).max(Duration::from_millis(1));
        let task = runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let args = (token.clone(), millis(lease));
                match store
                    .run("renew", |s| &s.renew, key.clone(), args, |n| n == 1)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(
                            "a running webhook handler lost its deduplication claim (its lease                              ran out before it was renewed): a retry may run it again"
                        );
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not renew a deduplication claim; trying again");
                    }
                }
            }
        });
        Hold::new(AbortOnDrop(task.abort_handle()))
    }

    fn release_detached(&self, key: &str, token: &Token) {
        // Best effort from a destructor: spawn the release on the current runtime; without one
        // (or if it fails) the claim simply expires with its lease.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let release = self.release(key, token);
            runtime.spawn(async move {
                if let Err(error) = release.await {
                    tracing::warn!(%error, "could not release a dropped claim; it will expire");
                }
            });
        }
    }
}

//! The claim held from the moment it is requested until its outcome is recorded.

use std::sync::Arc;
use std::time::Duration;

use super::{BoxFuture, Claim, IdempotencyStore, StoreError, Token};

/// A claim on a key, made with a token chosen before the store is asked, so that even a claim
/// whose answer never arrived (the future was dropped, the store timed out) can be released.
///
/// While armed, dropping it releases the key from the destructor
/// ([`IdempotencyStore::release_detached`]); [`disarm`](Self::disarm) once the outcome is
/// recorded.
pub(crate) struct ClaimGuard {
    store: Arc<dyn IdempotencyStore>,
    key: String,
    token: Token,
    armed: bool,
}

impl ClaimGuard {
    pub(crate) fn new(store: Arc<dyn IdempotencyStore>, key: String, token: Token) -> Self {
        ClaimGuard {
            store,
            key,
            token,
            armed: true,
        }
    }

    /// Asks the store for the key.
    pub(crate) fn claim(&self, lease: Duration) -> BoxFuture<Result<Claim, StoreError>> {
        self.store.claim(&self.key, &self.token, lease)
    }

    /// Marks the key done (the handler answered 2xx).
    pub(crate) fn complete(&self, ttl: Duration) -> BoxFuture<Result<(), StoreError>> {
        self.store.complete(&self.key, &self.token, ttl)
    }

    /// Frees the key (the handler failed).
    pub(crate) fn release(&self) -> BoxFuture<Result<(), StoreError>> {
        self.store.release(&self.key, &self.token)
    }

    /// [`claim`](Self::claim), when the store answers without waiting.
    pub(crate) fn claim_immediately(&self, lease: Duration) -> Option<Result<Claim, StoreError>> {
        self.store.claim_immediately(&self.key, &self.token, lease)
    }

    /// Records the outcome: [`complete`](Self::complete) when `completing`, else
    /// [`release`](Self::release); `Err` with the future to await when the store cannot answer
    /// at once.
    pub(crate) fn record(
        &self,
        completing: bool,
        ttl: Duration,
    ) -> Result<Result<(), StoreError>, BoxFuture<Result<(), StoreError>>> {
        let now = if completing {
            self.store.complete_immediately(&self.key, &self.token, ttl)
        } else {
            self.store.release_immediately(&self.key, &self.token)
        };
        match now {
            Some(recorded) => Ok(recorded),
            None if completing => Err(self.complete(ttl)),
            None => Err(self.release()),
        }
    }

    /// The outcome is recorded (or the key was never ours): nothing to do on drop.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!(
                "webhook request ended before its outcome was recorded: releasing its claim"
            );
            self.store.release_detached(&self.key, &self.token);
        }
    }
}

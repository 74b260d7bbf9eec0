//! The claim held from the moment it is requested until its outcome is recorded.

use std::sync::Arc;
use std::time::Duration;

use super::{BoxFuture, Claim, Hold, IdempotencyStore, StoreError, Token};

/// What dropping an armed guard does.
#[derive(Clone, Copy)]
enum OnDrop {
    /// The outcome is unknown or a failure: free the key so the retry runs.
    Release,
    /// The handler answered 2xx and its completion was being recorded: finish recording it,
    /// never release (a retry would run a handler that already succeeded).
    Complete(Duration),
    /// The outcome is recorded (or the key was never ours).
    Nothing,
}

/// A claim on a key, made with a token chosen before the store is asked, so that even a claim
/// whose answer never arrived (the future was dropped, the store timed out) can be released.
///
/// Dropping it settles the claim from the destructor
/// ([`IdempotencyStore::release_detached`], or [`IdempotencyStore::complete_detached`] once a
/// 2xx is being recorded); [`disarm`](Self::disarm) once the outcome is recorded.
pub(crate) struct ClaimGuard {
    store: Arc<dyn IdempotencyStore>,
    key: String,
    token: Token,
    on_drop: OnDrop,
    /// Renews the claim while the handler runs; dropped with the guard.
    hold: Hold,
}

impl ClaimGuard {
    pub(crate) fn new(store: Arc<dyn IdempotencyStore>, key: String, token: Token) -> Self {
        ClaimGuard {
            store,
            key,
            token,
            on_drop: OnDrop::Release,
            hold: Hold::none(),
        }
    }

    /// Asks the store for the key.
    pub(crate) fn claim(&self, lease: Duration) -> BoxFuture<Result<Claim, StoreError>> {
        self.store.claim(&self.key, &self.token, lease)
    }

    /// [`claim`](Self::claim), when the store answers without waiting.
    pub(crate) fn claim_immediately(&self, lease: Duration) -> Option<Result<Claim, StoreError>> {
        self.store.claim_immediately(&self.key, &self.token, lease)
    }

    /// The claim is acquired: keep it alive until the outcome is recorded.
    pub(crate) fn hold(&mut self, lease: Duration) {
        self.hold = self.store.hold(&self.key, &self.token, lease);
    }

    /// Records the outcome: complete the key when `completing` (the handler answered 2xx),
    /// else release it. `Ok` with the answer when the store gives it at once, `Err` with the
    /// future to await otherwise. From here on a dropped guard finishes a completion instead of
    /// releasing the key.
    pub(crate) fn record(
        &mut self,
        completing: bool,
        ttl: Duration,
    ) -> Result<Result<bool, StoreError>, BoxFuture<Result<bool, StoreError>>> {
        let (key, token) = (&self.key, &self.token);
        if completing {
            self.on_drop = OnDrop::Complete(ttl);
            match self.store.complete_immediately(key, token, ttl) {
                Some(recorded) => Ok(recorded),
                None => Err(self.store.complete(key, token, ttl)),
            }
        } else {
            match self.store.release_immediately(key, token) {
                Some(recorded) => Ok(recorded.map(|()| true)),
                None => {
                    let release = self.store.release(key, token);
                    Err(Box::pin(async move { release.await.map(|()| true) }))
                }
            }
        }
    }

    /// Settles the claim once its outcome's recording has ended.
    pub(crate) fn recorded(mut self, result: Result<bool, StoreError>) {
        let completing = matches!(self.on_drop, OnDrop::Complete(_));
        if result.is_err() {
            use crate::record::{store_error, StoreOp};
            store_error(if completing {
                StoreOp::Complete
            } else {
                StoreOp::Release
            });
        }
        match result {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "a webhook handler succeeded after its deduplication claim had passed to another \
                 delivery (its lease ran out): that delivery may run the handler again"
            ),
            Err(error) if completing => {
                // The handler succeeded and the answer is 2xx, so Metigan will not retry: keep
                // the claim (releasing it would let a duplicate already on its way run the
                // handler again); it expires with its lease.
                tracing::warn!(%error, "could not mark the webhook done; its claim expires with the lease");
            }
            Err(error) => {
                tracing::warn!(%error, "could not release the claim; retrying in the background");
                return;
            }
        }
        self.on_drop = OnDrop::Nothing;
    }

    /// [`claim`](Self::claim) as one future, answered at once by an in-process store.
    #[cfg(feature = "actix")]
    pub(crate) async fn acquire(&self, lease: Duration) -> Result<Claim, StoreError> {
        match self.claim_immediately(lease) {
            Some(claimed) => claimed,
            None => self.claim(lease).await,
        }
    }

    /// [`record`](Self::record) then [`recorded`](Self::recorded), as one future. Dropped
    /// before it ends, the guard settles the claim from its destructor (a completion already
    /// under way is finished, never turned into a release).
    #[cfg(feature = "actix")]
    pub(crate) async fn finish(mut self, completing: bool, ttl: Duration) {
        let result = match self.record(completing, ttl) {
            Ok(result) => result,
            Err(pending) => pending.await,
        };
        self.recorded(result);
    }

    /// The outcome is recorded (or the key was never ours): nothing to do on drop.
    pub(crate) fn disarm(mut self) {
        self.on_drop = OnDrop::Nothing;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        match self.on_drop {
            OnDrop::Nothing => {}
            OnDrop::Release => {
                tracing::debug!(
                    "webhook request ended before its outcome was recorded: releasing its claim"
                );
                self.store.release_detached(&self.key, &self.token);
            }
            OnDrop::Complete(ttl) => {
                tracing::debug!(
                    "webhook request ended while its success was being recorded: recording it \
                     in the background"
                );
                self.store.complete_detached(&self.key, &self.token, ttl);
            }
        }
    }
}

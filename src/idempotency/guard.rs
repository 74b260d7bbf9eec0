//! The claim held while the handler runs: released if it is dropped unfinished.

use std::sync::Arc;
use std::time::Duration;

use super::{BoxFuture, IdempotencyStore, StoreError, Token};

/// A held claim. Completing or releasing it consumes it; dropping it unfinished (the request's
/// future was dropped, or a panic unwound through it) releases the key from the destructor, so
/// the retry can run.
pub(crate) struct ClaimGuard {
    store: Arc<dyn IdempotencyStore>,
    key: String,
    token: Option<Token>,
}

impl ClaimGuard {
    pub(crate) fn new(store: Arc<dyn IdempotencyStore>, key: String, token: Token) -> Self {
        ClaimGuard {
            store,
            key,
            token: Some(token),
        }
    }

    /// Marks the key done (the handler answered 2xx).
    pub(crate) fn complete(mut self, ttl: Duration) -> BoxFuture<Result<(), StoreError>> {
        match self.token.take() {
            Some(token) => self.store.complete(&self.key, &token, ttl),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }

    /// Frees the key (the handler failed).
    pub(crate) fn release(mut self) -> BoxFuture<Result<(), StoreError>> {
        match self.token.take() {
            Some(token) => self.store.release(&self.key, &token),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            tracing::debug!("webhook request dropped before it finished: releasing its claim");
            self.store.release_detached(&self.key, &token);
        }
    }
}

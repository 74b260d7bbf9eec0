//! [`HandlerError`]: how a handler tells the worker what to do with an event it could not
//! handle, and [`handler_fn`], which turns an async function into a handler.

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use crate::event::VerifiedEvent;

/// The longest error text kept with an event; longer texts are cut (at a character boundary).
pub const MAX_ERROR_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transient,
    Permanent,
    RetryAfter(Duration),
}

/// Why a handler failed, and what the worker should do about it.
///
/// Any `std::error::Error` converts into a *transient* error (retried with backoff), so a
/// handler can use `?` freely. [`HandlerError::permanent`] sends the event straight to dead
/// letters; [`HandlerError::retry_after`] sets the next attempt's delay.
///
/// The text is stored with the event and shown to operators: keep secrets out of it.
///
/// ```
/// use std::time::Duration;
/// use metigan_webhook::inbox::HandlerError;
///
/// let e = HandlerError::retry_after(Duration::from_secs(30), "rate limited by the CRM");
/// assert_eq!(e.retry_delay(), Some(Duration::from_secs(30)));
/// assert!(HandlerError::permanent("unknown customer").is_permanent());
/// let io: HandlerError = std::io::Error::other("connection reset").into();
/// assert!(!io.is_permanent() && io.retry_delay().is_none());
/// ```
#[derive(Clone)]
pub struct HandlerError {
    kind: Kind,
    message: String,
}

impl HandlerError {
    fn with(kind: Kind, message: impl fmt::Display) -> Self {
        let mut message = message.to_string();
        if message.len() > MAX_ERROR_LEN {
            let mut end = MAX_ERROR_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        HandlerError { kind, message }
    }

    /// A failure worth retrying later, with backoff (what `?` on any error gives).
    pub fn transient(message: impl fmt::Display) -> Self {
        Self::with(Kind::Transient, message)
    }

    /// A failure that retrying cannot fix: the event becomes a dead letter at once.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::with(Kind::Permanent, message)
    }

    /// A transient failure whose next attempt should wait `delay` (instead of the backoff's).
    /// It still counts as an attempt.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> Self {
        Self::with(Kind::RetryAfter(delay), message)
    }

    /// Whether the event goes straight to dead letters.
    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
    }

    /// The delay asked for by [`retry_after`](Self::retry_after).
    pub fn retry_delay(&self) -> Option<Duration> {
        match self.kind {
            Kind::RetryAfter(delay) => Some(delay),
            Kind::Transient | Kind::Permanent => None,
        }
    }

    /// The error's text (at most [`MAX_ERROR_LEN`] bytes).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    /// A transient error whose text is the error's, followed by its sources.
    fn from(error: E) -> Self {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        HandlerError::transient(text)
    }
}

/// A handler made of an async function; see [`handler_fn`].
#[derive(Clone, Copy)]
pub struct HandlerFn<F> {
    f: F,
}

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerFn").finish_non_exhaustive()
    }
}

/// Turns `async fn(VerifiedEvent) -> Result<(), E>` into a handler (a `tower::Service` of
/// [`VerifiedEvent`]) for the worker.
pub fn handler_fn<F>(f: F) -> HandlerFn<F> {
    HandlerFn { f }
}

impl<F, Fut, E> Service<VerifiedEvent> for HandlerFn<F>
where
    F: FnMut(VerifiedEvent) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    type Response = ();
    type Error = E;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: VerifiedEvent) -> Fut {
        (self.f)(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let e = HandlerError::transient("é".repeat(MAX_ERROR_LEN));
        assert!(e.message().len() <= MAX_ERROR_LEN);
        assert!(e.message().chars().all(|c| c == 'é'));
    }

    #[test]
    fn sources_are_kept_in_the_text() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("saving the bounce")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e: HandlerError = Outer(std::io::Error::other("disk full")).into();
        assert_eq!(e.message(), "saving the bounce: disk full");
    }
}

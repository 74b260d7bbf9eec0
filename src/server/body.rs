//! [`ServerBody`]: the request body with the body-read deadline.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// The request body the served service receives: the bytes as they arrive, cut off with a
/// [`BodyError`] once the body-read deadline of its request has passed.
///
/// The deadline counts from the request's arrival, for the whole body: a client trickling a
/// byte every few seconds is cut off as surely as one that stops sending. `MetiganSignature`
/// answers such a request `400 body_read_error`; axum, tonic and hyper services see the error
/// as any other body error.
pub struct ServerBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Created the first time the body has nothing ready: a body that is already complete when
    /// it is read (the usual webhook) never registers a timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl ServerBody {
    pub(crate) fn new(inner: Incoming, arrived: Instant, timeout: Duration) -> Self {
        ServerBody {
            inner,
            deadline: arrived + timeout,
            timeout,
            sleep: None,
        }
    }
}

impl fmt::Debug for ServerBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBody")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        // The body first: only a body with nothing ready needs the timer.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(BodyError::read)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(BodyError::timed_out(this.timeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a [`ServerBody`] could not be read: the connection failed, or the body did not arrive
/// within the body-read timeout.
#[derive(Debug)]
pub struct BodyError {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Read(hyper::Error),
    TimedOut(Duration),
}

impl BodyError {
    fn read(error: hyper::Error) -> Self {
        BodyError {
            kind: Kind::Read(error),
        }
    }

    fn timed_out(timeout: Duration) -> Self {
        BodyError {
            kind: Kind::TimedOut(timeout),
        }
    }

    /// Whether the body-read deadline passed (rather than the connection failing).
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::TimedOut(_))
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Read(error) => write!(f, "error reading the request body: {error}"),
            Kind::TimedOut(timeout) => write!(
                f,
                "the request body did not arrive within the body-read timeout ({timeout:?})"
            ),
        }
    }
}

impl StdError for BodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            Kind::Read(error) => Some(error),
            Kind::TimedOut(_) => None,
        }
    }
}

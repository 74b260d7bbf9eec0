//! The two body types of the layer: what the inner service receives, and what it answers.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The request body the inner service receives: the verified bytes, exactly as received.
///
/// One fixed type fits axum's `Router`, tonic's `Routes` and hyper services alike (all accept
/// any `Body<Data = Bytes>`), and it cannot fail: the bytes were already read and checked.
#[derive(Default, Clone)]
pub struct VerifiedBody {
    bytes: Option<Bytes>,
}

impl VerifiedBody {
    /// A body yielding `bytes` in one frame.
    pub fn new(bytes: Bytes) -> Self {
        VerifiedBody {
            bytes: (!bytes.is_empty()).then_some(bytes),
        }
    }

    /// The remaining bytes (empty once the body was polled to the end).
    pub fn into_bytes(self) -> Bytes {
        self.bytes.unwrap_or_default()
    }
}

impl fmt::Debug for VerifiedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the body: it may hold personal data.
        f.debug_struct("VerifiedBody")
            .field("len", &self.bytes.as_ref().map_or(0, Bytes::len))
            .finish()
    }
}

impl From<Bytes> for VerifiedBody {
    fn from(bytes: Bytes) -> Self {
        VerifiedBody::new(bytes)
    }
}

impl Body for VerifiedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.bytes.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

pin_project! {
    /// The response body of [`MetiganSignature`](crate::MetiganSignature): the inner service's
    /// body, or the short body of a rejection.
    ///
    /// `Default` is an empty body, so tower-http layers that build their own responses (such as
    /// `TimeoutLayer`) compose on either side of the layer.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Fixed { bytes: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn fixed(bytes: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Fixed {
                bytes: (!bytes.is_empty()).then_some(bytes),
            },
        }
    }

    /// The bytes of a body the layer made itself (`None` for the inner service's).
    #[cfg(feature = "actix")]
    pub(crate) fn into_fixed(self) -> Option<Bytes> {
        match self.kind {
            Kind::Fixed { bytes } => Some(bytes.unwrap_or_default()),
            Kind::Inner { .. } => None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::fixed(Bytes::new())
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            Kind::Fixed { .. } => f.write_str("ResponseBody::Fixed"),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Fixed { bytes } => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes.into()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Fixed { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Fixed { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        // The bodies here are always ready: one poll with a no-op waker is enough.
        let mut fut = std::pin::pin!(fut);
        match fut
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            Poll::Ready(out) => out,
            Poll::Pending => unreachable!("ready bodies"),
        }
    }

    #[test]
    fn verified_body_yields_its_bytes_once() {
        let body = VerifiedBody::new(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let bytes = block_on(body.collect()).unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
        assert!(VerifiedBody::default().is_end_stream());
    }

    #[test]
    fn response_body_fixed_and_default() {
        let body: ResponseBody<http_body_util::Full<Bytes>> =
            ResponseBody::fixed(Bytes::from_static(b"no"));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(&block_on(body.collect()).unwrap().to_bytes()[..], b"no");
        let empty = ResponseBody::<http_body_util::Full<Bytes>>::default();
        assert!(empty.is_end_stream());
        let inner = ResponseBody::inner(http_body_util::Full::new(Bytes::from_static(b"in")));
        assert_eq!(&block_on(inner.collect()).unwrap().to_bytes()[..], b"in");
    }
}

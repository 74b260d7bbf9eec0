//! [`ResponseFuture`]: buffer the body within the limit, verify, then call the inner service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{ResponseBody, VerifiedBody};
use crate::event::{Envelope, VerifiedEvent};
use crate::layer::Config;
use crate::rejection::{Reason, Rejection};
use crate::service::rejection_response;
use crate::signature::SignatureHeader;

pin_project! {
    /// Response future of [`MetiganSignature`](crate::MetiganSignature).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<VerifiedBody>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<VerifiedBody>>,
    {
        Buffering {
            #[pin]
            body: B,
            pending: Option<Pending<S>>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Rejected {
            rejection: Option<Rejection>,
            grpc: bool,
        },
    }
}

/// What the buffering step carries until the body is complete.
struct Pending<S> {
    inner: S,
    parts: Parts,
    config: Arc<Config>,
    signature: SignatureHeader,
    buffer: Buffer,
    grpc: bool,
}

/// Collects the body within the limit. A body that arrives in one chunk (the usual case with
/// hyper and a small event) is kept as is: no copy.
struct Buffer {
    first: Option<Bytes>,
    rest: BytesMut,
    len: usize,
    limit: usize,
    expected: usize,
}

impl Buffer {
    fn push(&mut self, mut chunk: impl Buf) -> Result<(), Reason> {
        let len = chunk.remaining();
        if len == 0 {
            return Ok(());
        }
        if self.len + len > self.limit {
            return Err(Reason::BodyTooLarge);
        }
        self.len += len;
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk.copy_to_bytes(len));
            return Ok(());
        }
        if let Some(first) = self.first.take() {
            self.rest
                .reserve(self.expected.max(self.len).min(self.limit));
            self.rest.extend_from_slice(&first);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            self.rest.extend_from_slice(part);
            chunk.advance(n);
        }
        Ok(())
    }

    fn finish(&mut self) -> Bytes {
        match self.first.take() {
            Some(bytes) => bytes,
            None => std::mem::take(&mut self.rest).freeze(),
        }
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    pub(crate) fn rejected(rejection: Rejection, grpc: bool) -> Self {
        ResponseFuture {
            state: State::Rejected {
                rejection: Some(rejection),
                grpc,
            },
        }
    }

    pub(crate) fn buffering(
        req: Request<B>,
        inner: S,
        config: Arc<Config>,
        signature: SignatureHeader,
        grpc: bool,
        expected: u64,
    ) -> Self {
        let expected = usize::try_from(expected).unwrap_or(usize::MAX);
        let (parts, body) = req.into_parts();
        let limit = config.body_limit;
        ResponseFuture {
            state: State::Buffering {
                body,
                pending: Some(Pending {
                    inner,
                    parts,
                    config,
                    signature,
                    buffer: Buffer {
                        first: None,
                        rest: BytesMut::new(),
                        len: 0,
                        limit,
                        expected,
                    },
                    grpc,
                }),
            },
        }
    }
}

/// Verifies the complete body and builds the request for the inner service.
fn verify<S>(pending: Pending<S>) -> Result<(S, Request<VerifiedBody>), (Rejection, bool)> {
    let Pending {
        inner,
        mut parts,
        config,
        signature,
        mut buffer,
        grpc,
    } = pending;
    let body = buffer.finish();
    let verified = config
        .verifier
        .check_body(&signature, &body)
        .map_err(|rejection| (rejection, grpc))?;
    let envelope = Envelope::parse(body.clone()).map_err(|rejection| (rejection, grpc))?;
    let webhook_id = parts
        .headers
        .get(&config.webhook_id_header)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let event = VerifiedEvent::new(
        envelope,
        verified.timestamp(),
        webhook_id,
        verified.secret_index(),
    );
    parts.extensions.insert(event);
    Ok((inner, Request::from_parts(parts, VerifiedBody::new(body))))
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Buffering { mut body, pending } => {
                    let outcome = loop {
                        let Some(pending_ref) = pending.as_mut() else {
                            // Only reachable if polled after a panic inside this future.
                            break Err((Rejection::new(Reason::BodyReadError), false));
                        };
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    if let Err(reason) = pending_ref.buffer.push(data) {
                                        break Err((reason.into(), pending_ref.grpc));
                                    }
                                }
                            }
                            Some(Err(_)) => {
                                break Err((Reason::BodyReadError.into(), pending_ref.grpc))
                            }
                            None => match pending.take() {
                                Some(done) => break verify(done),
                                None => break Err((Rejection::new(Reason::BodyReadError), false)),
                            },
                        }
                    };
                    match outcome {
                        Ok((mut inner, request)) => State::Calling {
                            future: inner.call(request),
                        },
                        Err((rejection, grpc)) => State::Rejected {
                            rejection: Some(rejection),
                            grpc,
                        },
                    }
                }
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Rejected { rejection, grpc } => {
                    let rejection = rejection
                        .take()
                        .unwrap_or(Rejection::new(Reason::BodyReadError));
                    return Poll::Ready(Ok(rejection_response(rejection, *grpc)));
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

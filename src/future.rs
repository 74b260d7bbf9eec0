//! [`ResponseFuture`]: buffer the body within the limit, verify, then call the inner service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{ResponseBody, VerifiedBody};
use crate::event::{Envelope, VerifiedEvent};
use crate::idempotency::{BoxFuture, Claim, ClaimGuard, Duplicate, StoreError};
use crate::layer::Config;
use crate::rejection::{Reason, Rejection};
use crate::service::{duplicate_response, rejection_response};
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
        Claiming {
            claim: BoxFuture<Result<Claim, StoreError>>,
            pending: Option<Claimant<S>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            guard: Option<ClaimGuard>,
            config: Arc<Config>,
        },
        Finishing {
            store_op: BoxFuture<Result<(), StoreError>>,
            output: Option<Result<S::Response, S::Error>>,
        },
        Rejected {
            rejection: Option<Rejection>,
            grpc: bool,
        },
        Answered {
            duplicate: Duplicate,
            retry_after: Duration,
            grpc: bool,
        },
    }
}

/// A verified request waiting for its deduplication claim.
struct Claimant<S> {
    inner: S,
    request: Request<VerifiedBody>,
    key: String,
    config: Arc<Config>,
    grpc: bool,
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

/// What follows a complete, verified body.
enum Verdict<S> {
    /// Call the inner service without deduplication.
    Call(S, Request<VerifiedBody>, Arc<Config>),
    /// Claim the key first.
    Claim(Claimant<S>),
    /// Reject.
    Reject(Rejection, bool),
}

/// Verifies the complete body and builds the request for the inner service.
fn verify<S>(pending: Pending<S>) -> Verdict<S> {
    match verify_inner(pending) {
        Ok(verdict) => verdict,
        Err((rejection, grpc)) => Verdict::Reject(rejection, grpc),
    }
}

fn verify_inner<S>(pending: Pending<S>) -> Result<Verdict<S>, (Rejection, bool)> {
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
    let key = config
        .dedupe
        .as_ref()
        .and_then(|dedupe| dedupe.key.key_of(&event, &parts));
    parts.extensions.insert(event);
    let request = Request::from_parts(parts, VerifiedBody::new(body));
    Ok(match key {
        Some(key) => Verdict::Claim(Claimant {
            inner,
            request,
            key,
            config,
            grpc,
        }),
        None => Verdict::Call(inner, request, config),
    })
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
                    let verdict = loop {
                        let Some(pending_ref) = pending.as_mut() else {
                            // Only reachable if polled after a panic inside this future.
                            break Verdict::Reject(Reason::BodyReadError.into(), false);
                        };
                        let grpc = pending_ref.grpc;
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    if let Err(reason) = pending_ref.buffer.push(data) {
                                        break Verdict::Reject(reason.into(), grpc);
                                    }
                                }
                            }
                            Some(Err(_)) => {
                                break Verdict::Reject(Reason::BodyReadError.into(), grpc)
                            }
                            None => match pending.take() {
                                Some(done) => break verify(done),
                                None => break Verdict::Reject(Reason::BodyReadError.into(), grpc),
                            },
                        }
                    };
                    match verdict {
                        Verdict::Call(mut inner, request, config) => State::Calling {
                            future: inner.call(request),
                            guard: None,
                            config,
                        },
                        Verdict::Claim(claimant) => match &claimant.config.dedupe {
                            Some(dedupe) => State::Claiming {
                                claim: dedupe.store.claim(&claimant.key, dedupe.lease),
                                pending: Some(claimant),
                            },
                            None => {
                                let Claimant {
                                    mut inner,
                                    request,
                                    config,
                                    ..
                                } = claimant;
                                State::Calling {
                                    future: inner.call(request),
                                    guard: None,
                                    config,
                                }
                            }
                        },
                        Verdict::Reject(rejection, grpc) => State::Rejected {
                            rejection: Some(rejection),
                            grpc,
                        },
                    }
                }
                StateProj::Claiming { claim, pending } => {
                    let claimed = ready!(claim.as_mut().poll(cx));
                    let Some(Claimant {
                        mut inner,
                        request,
                        key,
                        config,
                        grpc,
                    }) = pending.take()
                    else {
                        return Poll::Ready(Ok(rejection_response(
                            Reason::BodyReadError.into(),
                            false,
                        )));
                    };
                    let Some(dedupe) = config.dedupe.as_ref() else {
                        return Poll::Ready(Ok(rejection_response(
                            Reason::BodyReadError.into(),
                            grpc,
                        )));
                    };
                    let answer = |duplicate| State::Answered {
                        duplicate,
                        retry_after: dedupe.retry_after,
                        grpc,
                    };
                    match claimed {
                        Ok(Claim::Acquired(token)) => {
                            let guard = ClaimGuard::new(dedupe.store.clone(), key, token);
                            State::Calling {
                                future: inner.call(request),
                                guard: Some(guard),
                                config: config.clone(),
                            }
                        }
                        Ok(Claim::InFlight) => answer(Duplicate::InFlight),
                        Ok(Claim::Done) => answer(Duplicate::AlreadyProcessed),
                        Err(error) if dedupe.fail_open => {
                            tracing::warn!(
                                %error,
                                "deduplication store unavailable: processing without deduplication (fail-open)"
                            );
                            State::Calling {
                                future: inner.call(request),
                                guard: None,
                                config: config.clone(),
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "deduplication store unavailable: answering 503");
                            answer(Duplicate::StoreUnavailable)
                        }
                    }
                }
                StateProj::Calling {
                    future,
                    guard,
                    config,
                } => {
                    let output = ready!(future.poll(cx));
                    let (Some(guard), Some(dedupe)) = (guard.take(), config.dedupe.as_ref()) else {
                        return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                    };
                    // Done only on 2xx; anything else frees the key so the retry runs again.
                    let store_op = match &output {
                        Ok(response) if response.status().is_success() => {
                            guard.complete(dedupe.ttl)
                        }
                        _ => guard.release(),
                    };
                    State::Finishing {
                        store_op,
                        output: Some(output),
                    }
                }
                StateProj::Finishing { store_op, output } => {
                    if let Err(error) = ready!(store_op.as_mut().poll(cx)) {
                        tracing::warn!(%error, "could not record the outcome in the deduplication store");
                    }
                    return match output.take() {
                        Some(output) => Poll::Ready(output.map(|r| r.map(ResponseBody::inner))),
                        None => {
                            Poll::Ready(Ok(rejection_response(Reason::BodyReadError.into(), false)))
                        }
                    };
                }
                StateProj::Rejected { rejection, grpc } => {
                    let rejection = rejection
                        .take()
                        .unwrap_or(Rejection::new(Reason::BodyReadError));
                    return Poll::Ready(Ok(rejection_response(rejection, *grpc)));
                }
                StateProj::Answered {
                    duplicate,
                    retry_after,
                    grpc,
                } => {
                    return Poll::Ready(Ok(duplicate_response(*duplicate, *retry_after, *grpc)));
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

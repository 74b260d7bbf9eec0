//! [`ResponseFuture`]: buffer the body within the limit, verify, claim the deduplication key,
//! call the inner service, record the outcome.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{ResponseBody, VerifiedBody};
use crate::buffer::Buffer;
use crate::event::{Envelope, VerifiedEvent};
use crate::idempotency::{new_token, BoxFuture, Claim, ClaimGuard, Duplicate, StoreError};
use crate::layer::Config;
use crate::rejection::{Reason, Rejection};
use crate::response::{duplicate_response, rejection_response};
use crate::service::is_grpc;
use crate::signature::SignatureHeader;

pin_project! {
    /// Response future of [`MetiganSignature`](crate::MetiganSignature).
    ///
    /// A state machine: read the body (bounded), verify it, claim the deduplication key when
    /// deduplication is on, call the inner service, then record the outcome in the store.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<VerifiedBody>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Buffering { .. } => "Buffering",
            State::Claiming { .. } => "Claiming",
            State::Calling { .. } => "Calling",
            State::Finishing { .. } => "Finishing",
            State::Rejected { .. } => "Rejected",
            State::Answered { .. } => "Answered",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
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
            claimant: Option<Claimant<S>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            guard: Option<ClaimGuard>,
            config: Arc<Config>,
        },
        Finishing {
            store_op: BoxFuture<Result<(), StoreError>>,
            // Still armed: dropping the future here releases the key from the destructor.
            guard: Option<ClaimGuard>,
            completing: bool,
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
        Done,
    }
}

/// What the buffering step carries until the body is complete.
struct Pending<S> {
    inner: S,
    parts: Parts,
    config: Arc<Config>,
    signature: SignatureHeader,
    buffer: Buffer,
}

/// A verified request waiting for its deduplication claim. The guard is armed from the start:
/// if the claim lands but this future is dropped (or the store errs) before the answer, the
/// key is released anyway.
struct Claimant<S> {
    inner: S,
    request: Request<VerifiedBody>,
    guard: ClaimGuard,
    config: Arc<Config>,
}

/// What follows a complete body.
enum Verdict<S> {
    /// Call the inner service without deduplication.
    Call(S, Request<VerifiedBody>, Arc<Config>),
    /// Claim the key first.
    Claim(Claimant<S>),
    /// Reject.
    Reject(Rejection, bool),
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
        expected: u64,
    ) -> Self {
        let (parts, body) = req.into_parts();
        let buffer = Buffer::new(config.body_limit, expected);
        ResponseFuture {
            state: State::Buffering {
                body,
                pending: Some(Pending {
                    inner,
                    parts,
                    config,
                    signature,
                    buffer,
                }),
            },
        }
    }
}

/// Verifies the complete body and decides what comes next.
fn verify<S>(pending: Pending<S>) -> Verdict<S> {
    let Pending {
        inner,
        mut parts,
        config,
        signature,
        mut buffer,
    } = pending;
    let body = buffer.finish();
    let verified = match config.verifier.check_body(&signature, &body) {
        Ok(verified) => verified,
        Err(rejection) => return Verdict::Reject(rejection, is_grpc(&parts.headers)),
    };
    let envelope = match Envelope::parse(body.clone()) {
        Ok(envelope) => envelope,
        Err(rejection) => return Verdict::Reject(rejection, is_grpc(&parts.headers)),
    };
    // Informative only; a value that is not visible ASCII is dropped.
    let event = VerifiedEvent::from_request(
        envelope,
        verified.timestamp(),
        parts.headers.get(&config.webhook_id_header),
        verified.secret_index(),
    );
    let key = config
        .dedupe
        .as_ref()
        .and_then(|dedupe| Some((dedupe, dedupe.key.key_of(&event, &parts)?)));
    let guard = key.map(|(dedupe, key)| ClaimGuard::new(dedupe.store.clone(), key, new_token()));
    parts.extensions.insert(event);
    let request = Request::from_parts(parts, VerifiedBody::new(body));
    match guard {
        Some(guard) => Verdict::Claim(Claimant {
            inner,
            request,
            guard,
            config,
        }),
        None => Verdict::Call(inner, request, config),
    }
}

/// The state that follows the store's answer to a claim.
fn after_claim<S, B>(claimed: Result<Claim, StoreError>, claimant: Claimant<S>) -> State<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    let Claimant {
        mut inner,
        request,
        guard,
        config,
    } = claimant;
    let (retry_after, fail_open) = config
        .dedupe
        .as_ref()
        .map_or((crate::idempotency::DEFAULT_RETRY_AFTER, false), |d| {
            (d.retry_after, d.fail_open)
        });
    // The layer answers a duplicate itself, the gRPC way for a gRPC request.
    let answer = |duplicate, request: Request<VerifiedBody>| State::Answered {
        duplicate,
        retry_after,
        grpc: is_grpc(request.headers()),
    };
    match claimed {
        Ok(Claim::Acquired) => State::Calling {
            future: inner.call(request),
            guard: Some(guard),
            config,
        },
        Ok(Claim::InFlight) => {
            guard.disarm();
            answer(Duplicate::InFlight, request)
        }
        Ok(Claim::Done) => {
            guard.disarm();
            answer(Duplicate::AlreadyProcessed, request)
        }
        // The claim may have landed before the error: `guard` is dropped armed, which
        // releases it in the background.
        Err(error) if fail_open => {
            tracing::warn!(
                %error,
                "deduplication store unavailable: processing without deduplication (fail-open)"
            );
            drop(guard);
            State::Calling {
                future: inner.call(request),
                guard: None,
                config,
            }
        }
        Err(error) => {
            tracing::warn!(%error, "deduplication store unavailable: answering 503");
            drop(guard);
            answer(Duplicate::StoreUnavailable, request)
        }
    }
}

/// Settles the claim once its outcome's recording has ended.
fn recorded(result: Result<(), StoreError>, guard: ClaimGuard, completing: bool) {
    match result {
        Ok(()) => guard.disarm(),
        Err(error) if completing => {
            // The handler succeeded and the answer is 2xx, so Metigan will not retry: keep the
            // claim (releasing it would let a duplicate already on its way run the handler
            // again); it expires with its lease.
            tracing::warn!(%error, "could not mark the webhook done; its claim expires with the lease");
            guard.disarm();
        }
        Err(error) => {
            tracing::warn!(%error, "could not release the claim; retrying in the background");
            drop(guard);
        }
    }
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
                        let pending_ref =
                            pending.as_mut().expect("buffering state holds its request");
                        let reject = |reason: Reason| {
                            Verdict::Reject(reason.into(), is_grpc(&pending_ref.parts.headers))
                        };
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    if let Err(reason) = pending_ref.buffer.push(data) {
                                        break reject(reason);
                                    }
                                }
                            }
                            Some(Err(_)) => break reject(Reason::BodyReadError),
                            None => break verify(pending.take().expect("taken once, at the end")),
                        }
                    };
                    match verdict {
                        Verdict::Call(mut inner, request, config) => State::Calling {
                            future: inner.call(request),
                            guard: None,
                            config,
                        },
                        Verdict::Claim(claimant) => {
                            let lease = claimant
                                .config
                                .dedupe
                                .as_ref()
                                .map_or(crate::idempotency::DEFAULT_LEASE, |dedupe| dedupe.lease);
                            // An in-process store answers at once: no boxed future, no step.
                            match claimant.guard.claim_immediately(lease) {
                                Some(claimed) => after_claim(claimed, claimant),
                                None => State::Claiming {
                                    claim: claimant.guard.claim(lease),
                                    claimant: Some(claimant),
                                },
                            }
                        }
                        Verdict::Reject(rejection, grpc) => State::Rejected {
                            rejection: Some(rejection),
                            grpc,
                        },
                    }
                }
                StateProj::Claiming { claim, claimant } => {
                    let claimed = ready!(claim.as_mut().poll(cx));
                    after_claim(
                        claimed,
                        claimant.take().expect("claiming state holds its request"),
                    )
                }
                StateProj::Calling {
                    future,
                    guard,
                    config,
                } => {
                    let output = ready!(future.poll(cx));
                    match guard.take() {
                        None => {
                            self.as_mut().project().state.set(State::Done);
                            return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                        }
                        Some(guard) => {
                            // Done only on 2xx; anything else frees the key so the retry runs.
                            let completing =
                                matches!(&output, Ok(response) if response.status().is_success());
                            let ttl = config
                                .dedupe
                                .as_ref()
                                .map_or(crate::idempotency::DEFAULT_TTL, |d| d.ttl);
                            match guard.record(completing, ttl) {
                                Ok(result) => {
                                    recorded(result, guard, completing);
                                    self.as_mut().project().state.set(State::Done);
                                    return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                                }
                                Err(store_op) => State::Finishing {
                                    store_op,
                                    guard: Some(guard),
                                    completing,
                                    output: Some(output),
                                },
                            }
                        }
                    }
                }
                StateProj::Finishing {
                    store_op,
                    guard,
                    completing,
                    output,
                } => {
                    let result = ready!(store_op.as_mut().poll(cx));
                    let guard = guard.take().expect("finishing state holds its claim");
                    recorded(result, guard, *completing);
                    let output = output.take().expect("finishing state holds the answer");
                    self.as_mut().project().state.set(State::Done);
                    return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                }
                StateProj::Rejected { rejection, grpc } => {
                    let grpc = *grpc;
                    let rejection = rejection
                        .take()
                        .expect("rejected state holds its rejection");
                    self.as_mut().project().state.set(State::Done);
                    return Poll::Ready(Ok(rejection_response(rejection, grpc)));
                }
                StateProj::Answered {
                    duplicate,
                    retry_after,
                    grpc,
                } => {
                    let response = duplicate_response(*duplicate, *retry_after, *grpc);
                    self.as_mut().project().state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Done => panic!("ResponseFuture polled after it completed"),
            };
            self.as_mut().project().state.set(next);
        }
    }
}

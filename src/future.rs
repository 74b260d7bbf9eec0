//! [`ResponseFuture`]: buffer the body within the limit, verify, claim the deduplication key,
//! wait for the inner service to be ready, call it, record the outcome.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{ResponseBody, VerifiedBody};
use crate::buffer::{Buffer, Reservation};
use crate::event::{Envelope, VerifiedEvent};
use crate::idempotency::{new_token, BoxFuture, Claim, ClaimGuard, Duplicate, StoreError};
use crate::layer::Config;
use crate::log::Outcome;
use crate::peer::PeerAddr;
use crate::record;
use crate::rejection::{Reason, Rejection};
use crate::response::{duplicate_response, rejection_response};
use crate::service::is_grpc;
use crate::signature::SignatureHeader;

pin_project! {
    /// Response future of [`MetiganSignature`](crate::MetiganSignature).
    ///
    /// A state machine: read the body (bounded), verify it, claim the deduplication key when
    /// deduplication is on, wait for the inner service to be ready, call it, then record the
    /// outcome in the store.
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
            State::Readying { .. } => "Readying",
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
            waiting: Option<Waiting<S>>,
        },
        Readying {
            waiting: Option<Waiting<S>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            guard: Option<ClaimGuard>,
            config: Arc<Config>,
        },
        Finishing {
            store_op: BoxFuture<Result<bool, StoreError>>,
            // Still armed: dropping the future here finishes the completion (or the release)
            // from the destructor.
            guard: Option<ClaimGuard>,
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

/// What the buffering step carries until the body is complete. Its reservation of the layer's
/// buffer budget is given back when it is dropped: once the body is verified or refused.
struct Pending<S> {
    inner: S,
    parts: Parts,
    config: Arc<Config>,
    signature: SignatureHeader,
    buffer: Buffer,
}

/// A verified request: waiting for its deduplication claim (when `guard` is set), then for the
/// inner service to be ready. The guard is armed from the start: if the claim lands but this
/// future is dropped (or the store errs) before the answer, the key is released anyway.
struct Waiting<S> {
    inner: S,
    request: Request<VerifiedBody>,
    guard: Option<ClaimGuard>,
    config: Arc<Config>,
}

/// The next state, or the inner service's readiness error.
type Step<S, B> = Result<State<S, B>, <S as Service<Request<VerifiedBody>>>::Error>;

fn peer(extensions: &Extensions) -> Option<std::net::SocketAddr> {
    extensions.get::<PeerAddr>().map(|peer| peer.0)
}

/// Logs a rejection (rate-limited, with the client's address when known) and answers it.
fn reject<S, B>(
    config: &Config,
    rejection: Rejection,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> State<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    record::rejected(rejection.reason());
    config
        .rejection_log
        .record(Outcome::Rejected(rejection.reason()), peer(extensions));
    State::Rejected {
        rejection: Some(rejection),
        grpc: is_grpc(headers),
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    pub(crate) fn rejected(config: &Config, rejection: Rejection, req: &Request<B>) -> Self {
        ResponseFuture {
            state: reject(config, rejection, req.headers(), req.extensions()),
        }
    }

    pub(crate) fn buffering(
        req: Request<B>,
        inner: S,
        config: Arc<Config>,
        signature: SignatureHeader,
        expected: usize,
        reservation: Reservation,
    ) -> Self {
        let (parts, body) = req.into_parts();
        let buffer = Buffer::new(config.body_limit, expected, reservation);
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

/// Verifies the complete body, then claims its key.
fn verify<S, B>(pending: Pending<S>, cx: &mut Context<'_>) -> Step<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    let Pending {
        inner,
        mut parts,
        config,
        signature,
        mut buffer,
    } = pending;
    let body = buffer.finish();
    // The body is complete: its bytes leave the layer's budget with the buffer.
    drop(buffer);
    let checked = verify_body(
        &config,
        &signature,
        body.clone(),
        parts.headers.get(&config.webhook_id_header),
    );
    let event = match checked {
        Ok(event) => event,
        Err(rejection) => {
            return Ok(reject(
                &config,
                rejection,
                &parts.headers,
                &parts.extensions,
            ))
        }
    };
    let guard = config.dedupe.as_ref().and_then(|dedupe| {
        let key = dedupe.key.key_of(&event, &parts)?;
        Some(ClaimGuard::new(dedupe.store.clone(), key, new_token()))
    });
    parts.extensions.insert(event);
    let waiting = Waiting {
        inner,
        request: Request::from_parts(parts, VerifiedBody::new(body)),
        guard,
        config,
    };
    claim(waiting, cx)
}

/// Checks the HMAC of the complete body, then parses its envelope, into the verified event.
/// Shared by the Tower service and the actix-web middleware.
pub(crate) fn verify_body(
    config: &Config,
    signature: &SignatureHeader,
    body: Bytes,
    webhook_id: Option<&HeaderValue>,
) -> Result<VerifiedEvent, Rejection> {
    let timer = record::Timer::start();
    let checked = config
        .verifier
        .check_body(signature, &body)
        .and_then(|verified| Ok((verified, Envelope::parse(body)?)));
    timer.verified();
    let (verified, envelope) = checked?;
    record::skew(|| config.now(), verified.timestamp());
    // Informative only; a value that is not visible ASCII is dropped.
    Ok(VerifiedEvent::from_request(
        envelope,
        verified.timestamp(),
        webhook_id,
        verified.secret_index(),
    ))
}

/// Claims the key of a verified request (when it has one), then goes on to the inner service.
fn claim<S, B>(waiting: Waiting<S>, cx: &mut Context<'_>) -> Step<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    let Some(guard) = &waiting.guard else {
        return start(waiting, cx);
    };
    let lease = lease_of(&waiting.config);
    // An in-process store answers at once: no boxed future, no step.
    match guard.claim_immediately(lease) {
        Some(claimed) => after_claim(claimed, waiting, cx),
        None => Ok(State::Claiming {
            claim: guard.claim(lease),
            waiting: Some(waiting),
        }),
    }
}

pub(crate) fn lease_of(config: &Config) -> Duration {
    config
        .dedupe
        .as_ref()
        .map_or(crate::idempotency::DEFAULT_LEASE, |dedupe| dedupe.lease)
}

pub(crate) fn ttl_of(config: &Config) -> Duration {
    config
        .dedupe
        .as_ref()
        .map_or(crate::idempotency::DEFAULT_TTL, |dedupe| dedupe.ttl)
}

pub(crate) fn retry_after_of(config: &Config) -> Duration {
    config
        .dedupe
        .as_ref()
        .map_or(crate::idempotency::DEFAULT_RETRY_AFTER, |d| d.retry_after)
}

/// What the store's answer to a claim means for the request.
pub(crate) enum Claimed {
    /// Call the handler: holding the claim, or without one when the store failed and the
    /// layer fails open.
    Run(Option<ClaimGuard>),
    /// Answer without calling the handler (logged already).
    Answer(Duplicate),
}

/// Settles the store's answer to a claim. Shared by the Tower service and the actix-web
/// middleware.
pub(crate) fn settle_claim(
    config: &Config,
    mut guard: ClaimGuard,
    claimed: Result<Claim, StoreError>,
    peer: Option<std::net::SocketAddr>,
) -> Claimed {
    let fail_open = config.dedupe.as_ref().is_some_and(|d| d.fail_open);
    let answer = |duplicate| {
        record::deduplicated(duplicate);
        config
            .rejection_log
            .record(Outcome::Duplicate(duplicate), peer);
        Claimed::Answer(duplicate)
    };
    match claimed {
        Ok(Claim::Acquired) => {
            // Renewed while the request waits for the handler and while it runs.
            guard.hold(lease_of(config));
            Claimed::Run(Some(guard))
        }
        Ok(Claim::InFlight) => {
            guard.disarm();
            answer(Duplicate::InFlight)
        }
        Ok(Claim::Done) => {
            guard.disarm();
            answer(Duplicate::AlreadyProcessed)
        }
        // The claim may have landed before the error: `guard` is dropped armed, which
        // releases it in the background.
        Err(error) if fail_open => {
            record::store_error(record::StoreOp::Claim);
            tracing::warn!(
                %error,
                "deduplication store unavailable: processing without deduplication (fail-open)"
            );
            drop(guard);
            Claimed::Run(None)
        }
        Err(error) => {
            record::store_error(record::StoreOp::Claim);
            tracing::warn!(%error, "deduplication store unavailable: answering 503");
            drop(guard);
            answer(Duplicate::StoreUnavailable)
        }
    }
}

/// The state that follows the store's answer to a claim.
fn after_claim<S, B>(
    claimed: Result<Claim, StoreError>,
    mut waiting: Waiting<S>,
    cx: &mut Context<'_>,
) -> Step<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    let Some(guard) = waiting.guard.take() else {
        return start(waiting, cx);
    };
    let peer = peer(waiting.request.extensions());
    match settle_claim(&waiting.config, guard, claimed, peer) {
        Claimed::Run(guard) => {
            waiting.guard = guard;
            start(waiting, cx)
        }
        // The layer answers a duplicate itself, the gRPC way for a gRPC request.
        Claimed::Answer(duplicate) => Ok(State::Answered {
            duplicate,
            retry_after: retry_after_of(&waiting.config),
            grpc: is_grpc(waiting.request.headers()),
        }),
    }
}

/// Asks the inner service for readiness (its own clone's: never a clone that another call made
/// ready) and calls it once it is ready.
fn start<S, B>(mut waiting: Waiting<S>, cx: &mut Context<'_>) -> Step<S, B>
where
    S: Service<Request<VerifiedBody>>,
{
    match waiting.inner.poll_ready(cx) {
        Poll::Pending => Ok(State::Readying {
            waiting: Some(waiting),
        }),
        // `waiting` is dropped with its guard armed: the claim is released.
        Poll::Ready(Err(error)) => Err(error),
        Poll::Ready(Ok(())) => {
            let Waiting {
                mut inner,
                request,
                guard,
                config,
            } = waiting;
            record::accepted();
            Ok(State::Calling {
                future: inner.call(request),
                guard,
                config,
            })
        }
    }
}

/// Whether an answer is a success to remember: a 2xx, and for gRPC a `grpc-status` of 0 (or
/// none in the head: a status sent in trailers is not seen here).
fn succeeded<B>(response: &Response<B>) -> bool {
    response.status().is_success()
        && response
            .headers()
            .get("grpc-status")
            .is_none_or(|status| status.as_bytes() == b"0")
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let step: Step<S, B> = match self.as_mut().project().state.project() {
                StateProj::Buffering { mut body, pending } => {
                    let Some(pending_ref) = pending.as_mut() else {
                        return Poll::Pending;
                    };
                    let refused = loop {
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    if let Err(reason) = pending_ref.buffer.push(data) {
                                        break Some(reason);
                                    }
                                }
                            }
                            Some(Err(_)) => break Some(Reason::BodyReadError),
                            None => break None,
                        }
                    };
                    match (refused, pending.take()) {
                        (Some(reason), Some(p)) => Ok(reject(
                            &p.config,
                            reason.into(),
                            &p.parts.headers,
                            &p.parts.extensions,
                        )),
                        (None, Some(p)) => verify(p, cx),
                        (_, None) => Ok(State::Done),
                    }
                }
                StateProj::Claiming { claim, waiting } => {
                    let claimed = ready!(claim.as_mut().poll(cx));
                    match waiting.take() {
                        Some(waiting) => after_claim(claimed, waiting, cx),
                        None => Ok(State::Done),
                    }
                }
                StateProj::Readying { waiting } => {
                    let Some(w) = waiting.as_mut() else {
                        return Poll::Pending;
                    };
                    // Wait here, so `start` is entered only once the service is ready.
                    if w.inner.poll_ready(cx).is_pending() {
                        return Poll::Pending;
                    }
                    match waiting.take() {
                        Some(waiting) => start(waiting, cx),
                        None => Ok(State::Done),
                    }
                }
                StateProj::Calling {
                    future,
                    guard,
                    config,
                } => {
                    let output = ready!(future.poll(cx));
                    let Some(mut guard) = guard.take() else {
                        self.as_mut().project().state.set(State::Done);
                        return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                    };
                    // Done only on success; anything else frees the key so the retry runs.
                    let completing = matches!(&output, Ok(response) if succeeded(response));
                    match guard.record(completing, ttl_of(config)) {
                        Ok(result) => {
                            guard.recorded(result);
                            self.as_mut().project().state.set(State::Done);
                            return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                        }
                        Err(store_op) => Ok(State::Finishing {
                            store_op,
                            guard: Some(guard),
                            output: Some(output),
                        }),
                    }
                }
                StateProj::Finishing {
                    store_op,
                    guard,
                    output,
                } => {
                    let result = ready!(store_op.as_mut().poll(cx));
                    if let Some(guard) = guard.take() {
                        guard.recorded(result);
                    }
                    let output = output.take();
                    self.as_mut().project().state.set(State::Done);
                    match output {
                        Some(output) => {
                            return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)))
                        }
                        None => return Poll::Pending,
                    }
                }
                StateProj::Rejected { rejection, grpc } => {
                    let grpc = *grpc;
                    let rejection = rejection.take();
                    self.as_mut().project().state.set(State::Done);
                    match rejection {
                        Some(rejection) => {
                            return Poll::Ready(Ok(rejection_response(rejection, grpc)))
                        }
                        None => return Poll::Pending,
                    }
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
            match step {
                Ok(next) => self.as_mut().project().state.set(next),
                Err(error) => {
                    self.as_mut().project().state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
            }
        }
    }
}

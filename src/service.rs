//! [`MetiganSignature`], the service made by the layer.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::body::{ResponseBody, VerifiedBody};
use crate::buffer::Reservation;
use crate::config_error::ConfigError;
use crate::future::ResponseFuture;
use crate::layer::{Config, MetiganSignatureLayer};
use crate::rejection::{Reason, Rejection};
use crate::signature::SignatureHeader;
use crate::BoxError;

/// Middleware that verifies Metigan webhooks before calling `S`; made by
/// [`MetiganSignatureLayer`].
///
/// `S` receives a `Request<VerifiedBody>` with the [`VerifiedEvent`](crate::VerifiedEvent) in
/// its extensions. It is never called for a rejected request.
pub struct MetiganSignature<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for MetiganSignature<S> {
    fn clone(&self) -> Self {
        MetiganSignature {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S> std::fmt::Debug for MetiganSignature<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetiganSignature").finish_non_exhaustive()
    }
}

impl<S> MetiganSignature<S> {
    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        MetiganSignature { inner, config }
    }

    /// Wraps `inner` with a one-secret layer (see [`MetiganSignatureLayer::new`]).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an empty secret or one with surrounding whitespace.
    pub fn new(inner: S, secret: impl AsRef<str>) -> Result<Self, ConfigError> {
        Ok(Self::from_config(
            inner,
            MetiganSignatureLayer::new(secret)?.config().clone(),
        ))
    }

    /// A one-secret layer: a shortcut for [`MetiganSignatureLayer::new`].
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an empty secret or one with surrounding whitespace.
    pub fn layer(secret: impl AsRef<str>) -> Result<MetiganSignatureLayer, ConfigError> {
        MetiganSignatureLayer::new(secret)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Whether the request is gRPC (its rejections are then answered the gRPC way). Only asked
/// when a request is answered by the layer itself.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|ct| ct.as_bytes().get(..16))
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"application/grpc"))
}

/// The body's declared length: its exact size (hyper's, from `Content-Length`) when it knows
/// it, else the `Content-Length` header or the body's lower bound, whichever is larger.
/// Only a hint: the limit and the budget are enforced again while the body is read.
fn declared_length<B: Body>(headers: &HeaderMap, body: &B) -> u64 {
    let hint = body.size_hint();
    if let Some(exact) = hint.exact() {
        return exact;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| parse_content_length(value.as_bytes()));
    declared.unwrap_or(0).max(hint.lower())
}

/// A `Content-Length` value, or `None` when it is not a number.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// What a request admitted by the checks that need no body carries into the reading of its
/// body: the parsed signature header, the declared length, and that length reserved from the
/// layer's buffer budget.
pub(crate) struct Admitted {
    pub(crate) signature: SignatureHeader,
    pub(crate) expected: usize,
    pub(crate) reservation: Reservation,
}

/// Every check that needs no body, in the order of the spec: the signature header and its
/// timestamp, then the declared length against the limit (413) and the buffer budget (503).
/// Shared by the Tower service and the actix-web middleware.
pub(crate) fn admit<'a>(
    config: &Config,
    signature: Option<&[u8]>,
    timestamp: impl FnOnce() -> Option<&'a [u8]>,
    declared: u64,
) -> Result<Admitted, Rejection> {
    let signature = config
        .verifier
        .check_header_with(signature, timestamp, config.now())?;
    let expected = match usize::try_from(declared) {
        Ok(declared) if declared <= config.body_limit => declared,
        _ => return Err(Reason::BodyTooLarge.into()),
    };
    // A declared length is reserved whole, now: past the layer's bound, the request is
    // answered 503 before a byte of it is read.
    let reservation =
        Reservation::new(&config.budget, expected).ok_or(Rejection::new(Reason::Overloaded))?;
    Ok(Admitted {
        signature,
        expected,
        reservation,
    })
}

impl<S, B, ResBody> Service<Request<B>> for MetiganSignature<S>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>> + Clone,
    B: Body,
    B::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Data: From<Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    /// Always ready: the inner service's readiness is asked for only once a request is
    /// verified (and its deduplication key claimed), so an unverified request, however slowly
    /// its body arrives, holds none of the inner service's capacity (a `ConcurrencyLimit`
    /// permit, a connection slot, a buffer slot).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &self.config;

        // Every check that needs no body runs first: nothing is read from a request that is
        // unsigned, malformed, stale or declared too large.
        let headers = req.headers();
        let admitted = admit(
            config,
            headers.get(&config.signature_header).map(|v| v.as_bytes()),
            || headers.get(&config.timestamp_header).map(|v| v.as_bytes()),
            declared_length(headers, req.body()),
        );
        let Admitted {
            signature,
            expected,
            reservation,
        } = match admitted {
            Ok(admitted) => admitted,
            Err(rejection) => return ResponseFuture::rejected(config, rejection, &req),
        };

        // `self.inner` was never asked for readiness (see `poll_ready`), so cloning it takes
        // nothing from it: the clone asks for its own readiness in the future, once the request
        // is verified, and is called only after it answered ready.
        let inner = self.inner.clone();
        ResponseFuture::buffering(req, inner, config.clone(), signature, expected, reservation)
    }
}

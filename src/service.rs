//! [`MetiganSignature`], the service made by the layer.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::body::{ResponseBody, VerifiedBody};
use crate::future::ResponseFuture;
use crate::layer::{Config, MetiganSignatureLayer};
use crate::rejection::{Reason, Rejection};
use crate::signature::ConfigError;
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

/// A `Content-Length` over the limit is rejected before the body is read. A body that knows
/// its exact length (hyper's, from that same header) answers without a header lookup; either
/// way the limit is enforced again while the body is read.
fn declared_too_large<B: Body>(headers: &HeaderMap, body: &B, limit: usize) -> bool {
    let limit = limit as u64;
    let hint = body.size_hint();
    if let Some(exact) = hint.exact() {
        return exact > limit;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    declared.is_some_and(|len| len > limit) || hint.lower() > limit
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &self.config;

        // Every check that needs no body runs first: nothing is read from a request that is
        // unsigned, malformed, stale or declared too large.
        let headers = req.headers();
        let checked = config.verifier.check_header_with(
            headers.get(&config.signature_header).map(|v| v.as_bytes()),
            || headers.get(&config.timestamp_header).map(|v| v.as_bytes()),
            config.now(),
        );
        let signature = match checked {
            Ok(signature) => signature,
            Err(rejection) => return ResponseFuture::rejected(rejection, is_grpc(headers)),
        };
        if declared_too_large(headers, req.body(), config.body_limit) {
            let grpc = is_grpc(headers);
            return ResponseFuture::rejected(Rejection::new(Reason::BodyTooLarge), grpc);
        }

        // The inner service was made ready by `poll_ready`; a clone of it may not be. Move the
        // ready one into the future and keep the clone for the next `poll_ready`
        // (tower-service: "Be careful when cloning inner services"). Calling a fresh clone
        // instead panics under `ConcurrencyLimit`.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let expected = req.body().size_hint().lower();
        ResponseFuture::buffering(req, inner, self.config.clone(), signature, expected)
    }
}

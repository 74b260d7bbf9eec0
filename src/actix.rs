//! actix-web integration: the layer's verification and deduplication as actix-web middleware,
//! and [`VerifiedEvent`] as a handler argument.
//!
//! [`MetiganSignatureLayer`] implements actix-web's [`Transform`], so the layer you configure
//! for Tower is also the middleware you `wrap` an actix-web route with: one builder, the same
//! options. Every request through it is handled as the Tower layer handles it:
//!
//! 1. the signature header, its timestamp and a declared `Content-Length` are checked before a
//!    byte of the body is read (a declared body over the limit is answered `413` at once);
//! 2. the body is read with the limit enforced while it streams (chunked bodies too), within the
//!    layer's bound on bytes buffered at once;
//! 3. the HMAC of the raw bytes is checked in constant time against every secret, then the
//!    envelope is parsed into the [`VerifiedEvent`];
//! 4. with [`deduplicate`](crate::MetiganSignatureBuilder::deduplicate), the event's key is
//!    claimed in the store before your handler runs, marked done when it answers 2xx and released
//!    otherwise (an error, a panic, a request dropped with its connection), so a retry runs it
//!    again.
//!
//! A rejected request gets the answer the Tower layer gives (the same status, body,
//! `Content-Type` and `Retry-After`; always the HTTP form, as actix-web does not serve gRPC), and
//! its [`Rejection`] (or, for a deduplicated delivery, its
//! [`Duplicate`](crate::idempotency::Duplicate)) is put in the response's extensions. Your
//! handler is never called for it.
//!
//! The handler takes the event as an argument (the [`FromRequest`] impl of [`VerifiedEvent`]);
//! the verified bytes are given back to the request, so `web::Bytes`, `String` or `web::Json`
//! extractors read the same body. Those extractors keep their own limits (256 KiB for
//! `web::Bytes` unless `web::PayloadConfig` says otherwise), while [`VerifiedEvent::body`] always
//! has the whole verified body, up to the layer's limit.
//!
//! # When the client leaves
//!
//! By default actix-web runs a request to its end after its client closed the connection (HTTP/1
//! half-closed connections are allowed): the handler finishes and its answer decides, as usual,
//! whether the key is done or released. With `HttpServer::h1_allow_half_closed(false)` the
//! request's future is dropped with the connection, and its claim is released at once from the
//! claim's guard, as it is when a handler panics.
//!
//! # Why middleware, and not an extractor alone
//!
//! An extractor runs before the handler and never sees its answer, so it could verify but not
//! deduplicate: a key must be marked done only once the handler answered 2xx, and released when
//! it failed. Middleware sees both sides, so verification and deduplication live in one place,
//! configured once, and the extractor only hands the handler what the middleware verified. A
//! handler that takes a [`VerifiedEvent`] on a route without the middleware answers `500` and
//! logs why ([`MissingVerifiedEvent`]): a missing signature check is a server bug, never a reason
//! to run the handler unverified.
//!
//! # Example
//!
//! ```
//! use actix_web::{test, web, App, HttpResponse};
//! use metigan_webhook::{idempotency::Dedupe, MetiganSignatureLayer, VerifiedEvent};
//!
//! async fn webhook(event: VerifiedEvent) -> HttpResponse {
//!     println!("{} for {:?}", event.event_type(), event.recipient());
//!     HttpResponse::Ok().body("processed")
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let layer = MetiganSignatureLayer::builder()
//!     .secret("whsec_example")
//!     .deduplicate(Dedupe::in_memory())
//!     .build()
//!     .unwrap();
//! // On the POST route only: another method answers 405 before the layer runs.
//! let app = test::init_service(App::new().service(
//!     web::resource("/webhooks/metigan").route(web::post().to(webhook).wrap(layer)),
//! ))
//! .await;
//!
//! // A signed delivery reaches the handler.
//! let body = r#"{"event":"email.delivered","messageId":"m-1","data":{}}"#;
//! let now = std::time::SystemTime::now()
//!     .duration_since(std::time::UNIX_EPOCH)
//!     .unwrap()
//!     .as_secs();
//! let signature = metigan_webhook::sign("whsec_example", now, body.as_bytes());
//! let signed = || {
//!     test::TestRequest::post()
//!         .uri("/webhooks/metigan")
//!         .insert_header(("x-webhook-signature", signature.as_str()))
//!         .set_payload(body)
//!         .to_request()
//! };
//! assert_eq!(test::call_and_read_body(&app, signed()).await, "processed");
//!
//! // Its retry is answered `200 OK` by the middleware, without running the handler again.
//! let retry = test::call_service(&app, signed()).await;
//! assert_eq!(retry.status(), 200);
//! assert_eq!(test::read_body(retry).await, "OK");
//!
//! // A forgery never reaches the handler.
//! let forged = test::TestRequest::post()
//!     .uri("/webhooks/metigan")
//!     .insert_header(("x-webhook-signature", "t=1,v1=00"))
//!     .set_payload(body)
//!     .to_request();
//! assert_eq!(test::call_service(&app, forged).await.status(), 401);
//! # });
//! ```
//!
//! # Runtime
//!
//! actix-web runs each worker on its own single-threaded Tokio runtime and its futures are not
//! `Send`; the stores' futures are, which is all they need to be awaited there. `RedisStore`
//! (feature `redis`) spawns its lease renewals and background releases on the worker's runtime,
//! so connect it inside the actix-web system (in `main` under `#[actix_web::main]`), as you would
//! any Tokio client.

use std::future::{poll_fn, ready, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self as actix_header, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use futures_core::future::LocalBoxFuture;
use futures_core::Stream;

use crate::body::ResponseBody;
use crate::buffer::Buffer;
use crate::event::VerifiedEvent;
use crate::extract::{MissingVerifiedEvent, MISSING_LAYER_BODY};
use crate::future::{lease_of, retry_after_of, settle_claim, ttl_of, verify_body, Claimed};
use crate::idempotency::{new_token, ClaimGuard};
use crate::layer::{Config, MetiganSignatureLayer};
use crate::log::Outcome;
use crate::peer::PeerAddr;
use crate::rejection::{Reason, Rejection};
use crate::response::{duplicate_response, rejection_response};
use crate::service::{admit, parse_content_length, Admitted};

/// Wraps an actix-web service (a route, a resource, a scope or a whole `App`) with the layer's
/// verification and deduplication; see the [module docs](crate::actix).
impl<S, B> Transform<S, ServiceRequest> for MetiganSignatureLayer
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = MetiganSignatureMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(MetiganSignatureMiddleware {
            service: Rc::new(service),
            config: self.config().clone(),
        }))
    }
}

/// The actix-web middleware made by [`MetiganSignatureLayer`]'s [`Transform`] impl (one per
/// worker thread): verifies every request, and deduplicates verified ones, before calling the
/// wrapped service.
pub struct MetiganSignatureMiddleware<S> {
    service: Rc<S>,
    config: Arc<Config>,
}

impl<S> std::fmt::Debug for MetiganSignatureMiddleware<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetiganSignatureMiddleware")
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for MetiganSignatureMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        Box::pin(handle(self.service.clone(), self.config.clone(), req))
    }
}

/// The answer to a request the middleware answers itself.
type Answer<B> = Result<ServiceResponse<EitherBody<B>>, Error>;

/// Verifies, claims, calls the service, records the outcome: the steps of the Tower layer's
/// `ResponseFuture`, written as one `async fn` (actix-web's futures are boxed and local anyway).
async fn handle<S, B>(service: Rc<S>, config: Arc<Config>, mut req: ServiceRequest) -> Answer<B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    // Every check that needs no body runs first: nothing is read from a request that is
    // unsigned, malformed, stale or declared too large.
    let headers = req.headers();
    let header = |name: &http::HeaderName| headers.get(name.as_str()).map(HeaderValue::as_bytes);
    let declared = headers
        .get(actix_header::CONTENT_LENGTH)
        .and_then(|value| parse_content_length(value.as_bytes()))
        .unwrap_or(0);
    let admitted = admit(
        &config,
        header(&config.signature_header),
        || header(&config.timestamp_header),
        declared,
    );
    let Admitted {
        signature,
        expected,
        reservation,
    } = match admitted {
        Ok(admitted) => admitted,
        Err(rejection) => return Ok(reject(&config, req, rejection)),
    };

    // The body, within the limit and the layer's buffer budget, checked chunk by chunk.
    let mut buffer = Buffer::new(config.body_limit, expected, reservation);
    let mut payload = req.take_payload();
    loop {
        match poll_fn(|cx| Pin::new(&mut payload).poll_next(cx)).await {
            Some(Ok(chunk)) => {
                if let Err(reason) = buffer.push(chunk) {
                    return Ok(reject(&config, req, reason.into()));
                }
            }
            Some(Err(_)) => return Ok(reject(&config, req, Reason::BodyReadError.into())),
            None => break,
        }
    }
    let body = buffer.finish();
    // The body is complete: its bytes leave the layer's budget with the buffer.
    drop(buffer);

    let webhook_id = req
        .headers()
        .get(config.webhook_id_header.as_str())
        .and_then(|value| http::HeaderValue::from_bytes(value.as_bytes()).ok());
    let event = match verify_body(&config, &signature, body.clone(), webhook_id.as_ref()) {
        Ok(event) => event,
        Err(rejection) => return Ok(reject(&config, req, rejection)),
    };
    // The handler's own body extractors read the verified bytes.
    req.set_payload(Payload::from(body));

    let guard = config.dedupe.as_ref().and_then(|dedupe| {
        let key = dedupe.key.key_of(&event, &http_parts(&req, &dedupe.key))?;
        Some(ClaimGuard::new(dedupe.store.clone(), key, new_token()))
    });
    req.extensions_mut().insert(event);
    let Some(guard) = guard else {
        crate::record::accepted();
        return service
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };

    // The guard is armed from here on: if this future is dropped (the client left) or the
    // handler panics, the claim is released from its destructor.
    let claimed = guard.acquire(lease_of(&config)).await;
    let guard = match settle_claim(&config, guard, claimed, req.peer_addr()) {
        Claimed::Run(guard) => guard,
        Claimed::Answer(duplicate) => {
            let response = duplicate_response(duplicate, retry_after_of(&config), false);
            return Ok(answer(req, response));
        }
    };
    crate::record::accepted();
    let output = service.call(req).await;
    if let Some(guard) = guard {
        // Done only on success; anything else frees the key so the retry runs.
        let completing = matches!(&output, Ok(response) if response.status().is_success());
        guard.finish(completing, ttl_of(&config)).await;
    }
    output.map(ServiceResponse::map_into_left_body)
}

/// Logs a rejection (rate-limited, with the client's address) and answers it as the Tower
/// layer does.
fn reject<B>(
    config: &Config,
    req: ServiceRequest,
    rejection: Rejection,
) -> ServiceResponse<EitherBody<B>> {
    crate::record::rejected(rejection.reason());
    config
        .rejection_log
        .record(Outcome::Rejected(rejection.reason()), req.peer_addr());
    answer(req, rejection_response(rejection, false))
}

/// An answer of the crate's own (a rejection or a deduplicated delivery), as actix-web's
/// response: the same status, headers, body and extensions.
fn answer<B>(
    req: ServiceRequest,
    response: http::Response<ResponseBody<()>>,
) -> ServiceResponse<EitherBody<B>> {
    let (parts, body) = response.into_parts();
    let status =
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = body.into_fixed().unwrap_or_default();
    let mut response = HttpResponse::with_body(status, bytes).map_into_boxed_body();
    for (name, value) in &parts.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    {
        let mut extensions = response.extensions_mut();
        if let Some(rejection) = parts.extensions.get::<Rejection>() {
            extensions.insert(rejection.clone());
        }
        if let Some(duplicate) = parts.extensions.get::<crate::idempotency::Duplicate>() {
            extensions.insert(*duplicate);
        }
    }
    req.into_response(response).map_into_right_body()
}

/// The request head as `http` 1's `Parts` (actix-web 4 is built on `http` 0.2), for a
/// [`DedupeKey::Custom`](crate::idempotency::DedupeKey::Custom) function; the other keys never
/// read it, so they get an empty one. The client's address is in its extensions as
/// [`PeerAddr`].
fn http_parts(req: &ServiceRequest, key: &crate::idempotency::DedupeKey) -> http::request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    if !matches!(key, crate::idempotency::DedupeKey::Custom(_)) {
        return parts;
    }
    if let Ok(method) = http::Method::from_bytes(req.method().as_str().as_bytes()) {
        parts.method = method;
    }
    if let Ok(uri) = http::Uri::try_from(req.uri().to_string()) {
        parts.uri = uri;
    }
    parts.version = match req.version() {
        actix_web::http::Version::HTTP_09 => http::Version::HTTP_09,
        actix_web::http::Version::HTTP_10 => http::Version::HTTP_10,
        actix_web::http::Version::HTTP_2 => http::Version::HTTP_2,
        actix_web::http::Version::HTTP_3 => http::Version::HTTP_3,
        _ => http::Version::HTTP_11,
    };
    for (name, value) in req.headers() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            parts.headers.append(name, value);
        }
    }
    if let Some(peer) = req.peer_addr() {
        parts.extensions.insert(PeerAddr(peer));
    }
    parts
}

/// Takes the event the middleware verified; on a route without it, answers `500` and logs how
/// to fix it.
///
/// ```
/// use actix_web::{web, App, HttpResponse};
/// use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};
///
/// async fn webhook(event: VerifiedEvent, body: web::Bytes) -> HttpResponse {
///     assert_eq!(event.body(), &body[..]);
///     HttpResponse::Ok().body("OK")
/// }
///
/// let layer = MetiganSignatureLayer::new("whsec_example").unwrap();
/// let app = App::new().service(
///     web::resource("/webhooks/metigan").route(web::post().to(webhook).wrap(layer)),
/// );
/// # drop(app);
/// ```
impl FromRequest for VerifiedEvent {
    type Error = MissingVerifiedEvent;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<VerifiedEvent>()
                .cloned()
                .ok_or(MissingVerifiedEvent),
        )
    }
}

/// `500 Internal Server Error`, logged with how to fix it.
impl ResponseError for MissingVerifiedEvent {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        tracing::error!("{self}");
        HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(Bytes::from_static(MISSING_LAYER_BODY.as_bytes()))
    }
}

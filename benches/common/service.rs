//! The layer as the in-process benchmarks drive it (`layer.rs`, `metrics.rs`): a trivial inner
//! service behind it, requests as hyper hands them over, and futures polled to their end.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use metigan_webhook::idempotency::Dedupe;
use metigan_webhook::{sign, MetiganSignatureLayer, VerifiedBody, VerifiedEvent};
use tower::{Service, ServiceBuilder, ServiceExt};

use super::common::{event_body, NOW, SECRET};

/// Polls a future that never waits (full bodies, an always-ready service) to its end.
pub fn run<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the layer waited on a ready body"),
    }
}

/// The layer around a trivial inner service that only checks the event is there.
pub fn service(
    dedupe: bool,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<impl http_body::Body>,
    Error = Infallible,
    Future = impl Future,
> + Clone {
    let mut layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .clock(|| NOW);
    if dedupe {
        layer = layer.deduplicate(Dedupe::in_memory());
    }
    let layer = layer.build().expect("valid secret");
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<VerifiedBody>| async move {
            let ok = req.extensions().get::<VerifiedEvent>().is_some();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(if ok {
                b"OK"
            } else {
                b"no event"
            }))))
        })
}

/// A POST as hyper would hand it over: path, content type, declared length and the body.
pub fn request(body: &Bytes, signature: Option<&HeaderValue>) -> Request<Full<Bytes>> {
    let mut builder = Request::post("/webhooks/metigan")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .header("x-webhook-id", "wh_0123456789");
    if let Some(signature) = signature {
        builder = builder.header("x-webhook-signature", signature.clone());
    }
    builder
        .body(Full::new(body.clone()))
        .expect("valid request")
}

pub fn status_of<S, B>(svc: &S, req: Request<Full<Bytes>>) -> StatusCode
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
{
    match run(svc.clone().oneshot(req)) {
        Ok(response) => response.status(),
        Err(never) => match never {},
    }
}

/// The event of `event_body(1024)` with its messageId replaced by `n` (same length), signed.
pub fn unique_event(n: u64) -> (Bytes, HeaderValue) {
    let mut body = event_body(1024);
    let id = b"msg_2f9c81d07be34a6f9d1e";
    let at = body
        .windows(id.len())
        .position(|w| w == id)
        .expect("the messageId");
    body[at + 4..at + id.len()].copy_from_slice(format!("{n:020}").as_bytes());
    let signature = HeaderValue::try_from(sign(SECRET, NOW, &body)).expect("header");
    (Bytes::from(body), signature)
}

//! The answers the layer gives itself: rejections and deduplicated deliveries. They are
//! logged, rate-limited, where they are decided (`log.rs`).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;

use crate::body::ResponseBody;
use crate::idempotency::Duplicate;
use crate::layer::OVERLOADED_RETRY_AFTER;
use crate::rejection::{Reason, Rejection};

fn grpc_response<B>(status: u16, message: Option<&'static str>) -> Response<ResponseBody<B>> {
    // Trailers-only: HTTP 200, the gRPC status in the headers, no body (a text body would
    // break gRPC clients).
    let mut response = Response::new(ResponseBody::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(status));
    if let Some(message) = message {
        headers.insert("grpc-message", HeaderValue::from_static(message));
    }
    response
}

fn text_response<B>(status: http::StatusCode, text: &'static str) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::fixed(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Builds the answer to a rejected request: a short `text/plain` body naming the reason, or a
/// trailers-only gRPC response, with `Retry-After` when the layer is overloaded; the
/// [`Rejection`] goes in the extensions. Allocates nothing but the response itself.
pub(crate) fn rejection_response<B>(rejection: Rejection, grpc: bool) -> Response<ResponseBody<B>> {
    let reason = rejection.reason();
    let mut response = if grpc {
        grpc_response(u16::from(reason.grpc_status()), Some(reason.code()))
    } else {
        text_response(reason.status(), reason.http_body())
    };
    if reason == Reason::Overloaded {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(OVERLOADED_RETRY_AFTER),
        );
    }
    response.extensions_mut().insert(rejection);
    response
}

/// Answers a deduplicated delivery without calling the handler: 200 (already processed), 409
/// (in flight) or 503 (store unreachable), the last two with `Retry-After` (gRPC: 0, 10
/// `ABORTED`, 14 `UNAVAILABLE`). The [`Duplicate`] goes in the extensions.
pub(crate) fn duplicate_response<B>(
    duplicate: Duplicate,
    retry_after: Duration,
    grpc: bool,
) -> Response<ResponseBody<B>> {
    let mut response = if grpc {
        grpc_response(duplicate.grpc_status(), Some(duplicate.code()))
    } else {
        text_response(duplicate.status(), duplicate.body())
    };
    if duplicate != Duplicate::AlreadyProcessed {
        let secs = retry_after.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response.extensions_mut().insert(duplicate);
    response
}

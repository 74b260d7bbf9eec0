//! [`InboxService`]: stores the verified event, then answers.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tower_service::Service;

use super::error::InboxError;
use super::handle::Shared;
use super::store::{Appended, BoxFuture, NewEvent};
use crate::body::VerifiedBody;
use crate::event::VerifiedEvent;

/// The service that appends each verified event to the inbox and answers `200 OK` once it is
/// committed; made by [`Inbox::service`](super::Inbox::service).
///
/// It reads the [`VerifiedEvent`] that [`MetiganSignatureLayer`](crate::MetiganSignatureLayer)
/// put in the request's extensions (the request body itself is not read again), so it must sit
/// behind the layer. Its answers:
///
/// - `200 OK` once the event is durably committed, or when its key was already stored
///   (nothing is written then); the [`Appended`] outcome is in the response's extensions;
/// - `503 Service Unavailable` with `Retry-After` when the store cannot commit (Metigan
///   retries later): never a 2xx without a commit;
/// - `500 Internal Server Error` when the request carries no verified event (the service is
///   not behind the layer), with an error in the log.
///
/// It accepts any request body type (the layer's `VerifiedBody`, axum's `Body`), so it also
/// fits axum's `post_service`.
#[derive(Clone)]
pub struct InboxService {
    shared: Arc<Shared>,
}

impl fmt::Debug for InboxService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxService").finish_non_exhaustive()
    }
}

impl InboxService {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        InboxService { shared }
    }
}

impl<B> Service<Request<B>> for InboxService {
    type Response = Response<AckBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        receive(&self.shared, req)
    }
}

/// Appends the request's verified event and answers: what [`InboxService`] and
/// [`Inbox::receive`](super::Inbox::receive) do.
pub(super) fn receive<B>(shared: &Arc<Shared>, req: Request<B>) -> ResponseFuture {
    let (parts, _body) = req.into_parts();
    let Some(event) = parts.extensions.get::<VerifiedEvent>() else {
        tracing::error!(
            "inbox: the request has no VerifiedEvent: put the inbox service behind \
             MetiganSignatureLayer; answered 500"
        );
        return ResponseFuture::ready(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "inbox_misconfigured: no verified event (the inbox must sit behind the signature layer)\n",
        ));
    };
    let key = shared.key.key_of(event, &parts);
    let record = NewEvent::from_event(event, key, shared.key_ttl);
    ResponseFuture {
        state: State::Appending {
            append: shared.store.append(record),
            shared: shared.clone(),
        },
    }
}

/// The future of [`InboxService`]: waits for the commit, then answers.
pub struct ResponseFuture {
    state: State,
}

enum State {
    Appending {
        append: BoxFuture<Result<Appended, InboxError>>,
        shared: Arc<Shared>,
    },
    Ready(Option<Response<AckBody>>),
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Appending { .. } => "Appending",
            State::Ready(_) => "Ready",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl ResponseFuture {
    fn ready(response: Response<AckBody>) -> Self {
        ResponseFuture {
            state: State::Ready(Some(response)),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<AckBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match &mut self.state {
            State::Appending { append, shared } => match append.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(appended)) => {
                    if let Appended::Stored(_) = appended {
                        shared.wake.notify_one();
                    }
                    let mut response = text(StatusCode::OK, "OK");
                    response.extensions_mut().insert(appended);
                    response
                }
                Poll::Ready(Err(error)) => {
                    tracing::warn!(%error, "inbox: the event could not be stored; answered 503");
                    let mut response = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "inbox_unavailable: the event could not be stored; retry later\n",
                    );
                    let secs = shared.retry_after.as_secs().max(1);
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    response
                }
            },
            // Polled again after it answered: answer 500 rather than panic.
            State::Ready(response) => response.take().unwrap_or_else(|| {
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "polled after completion\n",
                )
            }),
        };
        self.state = State::Ready(None);
        Poll::Ready(Ok(response))
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<AckBody> {
    let mut response = Response::new(AckBody::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The body of the inbox's short answers: a few bytes in one frame (the same one-chunk body the
/// layer hands to its inner service, under the name of what it is here).
#[derive(Default)]
pub struct AckBody(VerifiedBody);

impl AckBody {
    fn new(bytes: Bytes) -> Self {
        AckBody(VerifiedBody::new(bytes))
    }
}

impl fmt::Debug for AckBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AckBody").field(&self.0).finish()
    }
}

impl Body for AckBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

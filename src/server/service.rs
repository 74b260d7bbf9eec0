//! The hyper service around the served Tower service: the peer address, the body-read
//! deadline, the whole-request deadline and the connection's count of requests in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::activity::{Activity, InFlight};
use super::body::ServerBody;
use crate::{BoxError, PeerAddr};

/// The `Retry-After` of a request that timed out, in seconds.
const RETRY_AFTER_SECS: u32 = 5;

/// The deadlines every request of a connection gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub(crate) body: Duration,
    pub(crate) request: Duration,
}

/// Serves one connection's requests with the user's service.
#[derive(Debug)]
pub(crate) struct Handler<S> {
    service: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
    deadlines: Deadlines,
}

impl<S> Handler<S> {
    pub(crate) fn new(
        service: S,
        peer: SocketAddr,
        activity: Arc<Activity>,
        deadlines: Deadlines,
    ) -> Self {
        Handler {
            service,
            peer,
            activity,
            deadlines,
        }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Handler<S>
where
    S: Service<Request<ServerBody>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<Answer<B>>;
    type Error = BoxError;
    type Future = HandlerFuture<S>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let arrived = Instant::now();
        let in_flight = self.activity.begin();
        let grpc = is_grpc(&request);
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(PeerAddr(self.peer));
        let body = ServerBody::new(body, arrived, self.deadlines.body);
        HandlerFuture {
            state: State::Ready {
                // The service is made ready and called in the future: the clone that was made
                // ready is the one called (tower-service's "be careful when cloning").
                service: self.service.clone(),
                request: Request::from_parts(parts, body),
            },
            sleep: tokio::time::sleep_until(arrived + self.deadlines.request),
            in_flight: Some(in_flight),
            grpc,
            peer: self.peer,
            timeout: self.deadlines.request,
        }
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

pin_project! {
    /// The answer to one request: the service's, or `503` once the request deadline passed.
    pub(crate) struct HandlerFuture<S>
    where
        S: Service<Request<ServerBody>>,
    {
        #[pin]
        state: State<S>,
        // Polled only while the service is pending: an answer ready at once registers no
        // timer.
        #[pin]
        sleep: Sleep,
        in_flight: Option<InFlight>,
        grpc: bool,
        peer: SocketAddr,
        timeout: Duration,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateOwned]
    enum State<S>
    where
        S: Service<Request<ServerBody>>,
    {
        Ready { service: S, request: Request<ServerBody> },
        Called { #[pin] future: S::Future },
        Done,
    }
}

impl<S, B> Future for HandlerFuture<S>
where
    S: Service<Request<ServerBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<Answer<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready { service, .. } => match service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        if let StateOwned::Ready {
                            mut service,
                            request,
                        } = this.state.as_mut().project_replace(State::Done)
                        {
                            let future = service.call(request);
                            this.state.set(State::Called { future });
                        }
                    }
                    Poll::Ready(Err(error)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error.into()));
                    }
                    Poll::Pending => break,
                },
                StateProj::Called { future } => match future.poll(cx) {
                    Poll::Ready(result) => {
                        this.state.set(State::Done);
                        let in_flight = this.in_flight.take();
                        return Poll::Ready(
                            result
                                .map(|response| response.map(|body| Answer::inner(body, in_flight)))
                                .map_err(Into::into),
                        );
                    }
                    Poll::Pending => break,
                },
                StateProj::Done => return Poll::Ready(Err("polled after completion".into())),
            }
        }
        if this.sleep.poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Dropping the service's future cancels its work (and, behind the signature layer,
        // releases a deduplication claim so the retry runs).
        this.state.set(State::Done);
        tracing::warn!(
            peer = %this.peer,
            timeout = ?this.timeout,
            "request not answered within the request timeout: 503"
        );
        Poll::Ready(Ok(timed_out(*this.grpc, this.in_flight.take())))
    }
}

/// `503` with `Retry-After`, or for a gRPC request a trailers-only `UNAVAILABLE` (which gRPC
/// clients retry), naming `request_timeout`.
fn timed_out<B>(grpc: bool, in_flight: Option<InFlight>) -> Response<Answer<B>> {
    let text = (!grpc).then_some(Bytes::from_static(
        b"request_timeout: the request was not answered in time, retry later\n",
    ));
    let mut response = Response::new(Answer {
        kind: Kind::Own { text },
        in_flight,
    });
    if !grpc {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    let headers = response.headers_mut();
    if grpc {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        headers.insert("grpc-message", HeaderValue::from_static("request_timeout"));
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
}

pin_project! {
    /// The response body: the service's, or the timeout's text. The request counts as in flight
    /// (keeping the connection from being closed as idle) until it is sent or dropped.
    pub(crate) struct Answer<B> {
        #[pin]
        kind: Kind<B>,
        in_flight: Option<InFlight>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Own { text: Option<Bytes> },
    }
}

impl<B> Answer<B> {
    fn inner(body: B, in_flight: Option<InFlight>) -> Self {
        Answer {
            kind: Kind::Inner { body },
            in_flight,
        }
    }
}

impl<B> Body for Answer<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match this.kind.project() {
            KindProj::Inner { body } => match body.poll_frame(cx) {
                Poll::Ready(frame) => frame.map(|frame| frame.map_err(Into::into)),
                Poll::Pending => return Poll::Pending,
            },
            KindProj::Own { text } => text.take().map(|text| Ok(Frame::data(text))),
        };
        if !matches!(frame, Some(Ok(_))) {
            // The end, or an error: the request is over.
            this.in_flight.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Own { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Own { text } => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
        }
    }
}

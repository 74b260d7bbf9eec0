//! One connection, from the handshake to its close: HTTP/1.1 or HTTP/2, closed when idle
//! for the header-read timeout, shut down gracefully on the server's signal.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;
use tower_service::Service;

use super::activity::Activity;
use super::body::ServerBody;
use super::service::{Deadlines, Handler};
use crate::BoxError;

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) builder: auto::Builder<TokioExecutor>,
    pub(crate) header_read_timeout: Duration,
    pub(crate) deadlines: Deadlines,
}

/// One accepted connection.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) at: Instant,
    /// The connection's slot under `max_connections`, freed when the connection ends.
    pub(crate) slot: OwnedSemaphorePermit,
}

/// Runs one connection to its end.
///
/// From its acceptance, a connection has `header_read_timeout` to finish the handshake and
/// send a request's headers; after each request, the same time to send the next one. hyper's
/// own HTTP/1 header timeout does not cover a connection that never sends a byte (hyper-util
/// waits for the first bytes to choose HTTP/1 or HTTP/2 without a timer), nor HTTP/2, so the
/// deadline is kept here, from the count of requests in flight.
pub(crate) async fn run<H, F, IO, S, B>(
    accepted: Accepted,
    handshake: H,
    service: S,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
) where
    H: FnOnce(TcpStream) -> F,
    F: Future<Output = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<ServerBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Accepted {
        stream,
        peer,
        at,
        slot: _slot,
    } = accepted;
    let timeout = shared.header_read_timeout;
    let handshake = tokio::time::timeout_at(at + timeout, handshake(stream));
    let io = tokio::select! {
        // Shutting down: a connection without a request yet has nothing to finish.
        _ = shutdown.changed() => return,
        io = handshake => match io {
            Ok(Ok(io)) => io,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "handshake not done within the header-read timeout");
                return;
            }
        },
    };

    let activity = Activity::new(at);
    let handler = Handler::new(service, peer, Arc::clone(&activity), shared.deadlines);
    let mut connection = pin!(shared.builder.serve_connection(TokioIo::new(io), handler));
    let mut idle = pin!(tokio::time::sleep_until(at + timeout));
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection closed with an error");
                }
                return;
            }
            // The sender is dropped or sends once: either way, finish what is in flight.
            _ = shutdown.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = idle.as_mut() => match activity.idle_deadline(timeout) {
                Some(deadline) if deadline <= Instant::now() => {
                    // Nothing in flight: dropping the connection closes the socket.
                    tracing::debug!(%peer, "closing a connection idle for the header-read timeout");
                    return;
                }
                Some(deadline) => idle.as_mut().reset(deadline),
                None => idle.as_mut().reset(Instant::now() + timeout),
            },
        }
    }
}

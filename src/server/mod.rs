//! An HTTP server for a webhook endpoint on the open internet: any Tower service over
//! HTTP/1.1 and HTTP/2, with every way a client can hold the server bounded in time or number.
//!
//! `axum::serve` and a bare hyper accept loop set no timer: a connection that sends nothing, half
//! a request head or one byte of body every few seconds stays open forever, and a graceful
//! shutdown waits for it forever. [`Server`] bounds each of these:
//!
//! | setting | default | what happens when it passes |
//! |---|---|---|
//! | [`header_read_timeout`](Server::header_read_timeout) | 10 s | a connection that has not sent a complete request head (counted from its acceptance, TLS handshake included, or from the end of its previous request: idle keep-alive connections too) is closed |
//! | [`body_read_timeout`](Server::body_read_timeout) | 10 s | the body, counted from the request's arrival for the whole body, ends with a [`BodyError`]; `MetiganSignature` answers `400 body_read_error` |
//! | [`request_timeout`](Server::request_timeout) | 25 s | the service has not answered: `503 Service Unavailable` with `Retry-After` (gRPC: trailers-only `UNAVAILABLE`); the service's future is dropped |
//! | [`max_connections`](Server::max_connections) | 1024 | no connection is accepted until one closes (the others wait in the listen backlog) |
//! | [`shutdown_timeout`](Server::shutdown_timeout) | 10 s | after the shutdown signal, connections still open are closed and `serve` returns |
//!
//! Metigan waits 30 s for an answer, then retries: the defaults answer every delivery before
//! that, even a slow one, and a real delivery's body arrives in milliseconds.
//!
//! Every request gets the client's address as a [`PeerAddr`](crate::PeerAddr) in its
//! extensions, so the signature layer's rejection log lines name it.
//!
//! # Example
//!
//! The receiver of the crate's README, served with the defaults; a method other than `POST`
//! answers `405` before the signature layer runs:
//!
//! ```
//! use axum::{routing::post, Router};
//! use metigan_webhook::server::Server;
//! use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! async fn handle(event: VerifiedEvent) -> &'static str {
//!     println!("{}", event.event_type());
//!     "OK"
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = MetiganSignatureLayer::new("whsec_example")?;
//! let app = Router::new().route("/webhooks/metigan", post(handle).route_layer(layer));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(Server::new().serve(listener, app, async {
//!     let _ = stopped.await;
//! }));
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client
//!     .write_all(b"GET /webhooks/metigan HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
//!     .await?;
//! let mut answer = String::new();
//! client.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
//!
//! let _ = stop.send(());
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! In a program, bind `0.0.0.0` and pass [`shutdown_signal()`]. [`Server::serve_with`] adds a
//! handshake, such as TLS, before HTTP.
//!
//! # HTTP/2
//!
//! Both protocols are served on one port (HTTP/2 with prior knowledge, or through ALPN with
//! [`serve_with`](Server::serve_with)), so tonic services work. An HTTP/2 connection takes at
//! most 100 concurrent streams, is pinged every 20 s and closed when a ping is not answered
//! within 10 s; the header-read timeout closes it when it has had no request in flight for that
//! long.
//!
//! # What it does not bound
//!
//! Sending a response: a client that does not read a large answer holds its connection until
//! the shutdown deadline (webhook answers are a few bytes, which the socket takes at once).
//! Memory per request is the layer's to bound (`body_limit`, `max_buffered_bytes`), and the
//! rate of requests a proxy's or firewall's.

mod activity;
mod body;
mod connection;
mod service;
mod signal;

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

pub use body::{BodyError, ServerBody};
pub use signal::shutdown_signal;

use crate::BoxError;
use connection::{Accepted, Shared};
use service::Deadlines;

/// HTTP/2 streams one connection may have open at once.
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after an accept error that is not about one connection (out of file
/// descriptors, for example), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// The longest timeout the builder keeps: a longer one is taken as this (an instant that far
/// ahead still fits every clock).
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// `timeout`, at most [`MAX_TIMEOUT`].
const fn bounded(timeout: Duration) -> Duration {
    if timeout.as_secs() >= MAX_TIMEOUT.as_secs() {
        MAX_TIMEOUT
    } else {
        timeout
    }
}

/// Serves a Tower service with bounded timeouts, a connection cap and a graceful-shutdown
/// deadline (see the [module docs](self)).
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::post, Router};
/// use metigan_webhook::server::{shutdown_signal, Server};
/// use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = MetiganSignatureLayer::new(std::env::var("WEBHOOK_SECRET")?)?;
/// let app = Router::new().route(
///     "/webhooks/metigan",
///     post(|event: VerifiedEvent| async move { event.event_type().to_string() })
///         .route_layer(layer),
/// );
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// Server::new()
///     .header_read_timeout(Duration::from_secs(10)) // the defaults, written out
///     .body_read_timeout(Duration::from_secs(10))
///     .request_timeout(Duration::from_secs(25))
///     .max_connections(1024)
///     .shutdown_timeout(Duration::from_secs(10))
///     .serve(listener, app, shutdown_signal())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Server {
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    request_timeout: Duration,
    max_connections: usize,
    shutdown_timeout: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with the defaults: 10 s to send a request head, 10 s for a body, 25 s for an
    /// answer, 1024 connections, 10 s to shut down.
    ///
    /// Every timeout can be set up to a year (a longer one is taken as a year).
    pub const fn new() -> Self {
        Server {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(25),
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    /// The time a connection has to send a complete request head: from its acceptance (a TLS
    /// handshake included) and again after each request; default 10 s.
    ///
    /// A connection that sends nothing, sends half a head, or stays idle between requests for
    /// this long is closed.
    pub const fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = bounded(timeout);
        self
    }

    /// The time a request's whole body has to arrive, from the request's arrival; default 10 s.
    ///
    /// Past it, the body ends with a [`BodyError`] (`MetiganSignature` answers
    /// `400 body_read_error`, and the connection is closed).
    pub const fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = bounded(timeout);
        self
    }

    /// The time the service has to answer a request, from its arrival; default 25 s, under the
    /// 30 s Metigan waits.
    ///
    /// Past it, the service's future is dropped and the client gets `503 Service Unavailable`
    /// with `Retry-After: 5` (a gRPC request: trailers-only `grpc-status` 14 `UNAVAILABLE`).
    pub const fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = bounded(timeout);
        self
    }

    /// The number of connections served at once; default 1024 (0 is taken as 1).
    ///
    /// When they are all taken, the server stops accepting until one closes; new clients wait
    /// in the kernel's listen backlog.
    pub const fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// How long [`serve`](Self::serve) lets the requests in flight finish after the shutdown
    /// signal, before it closes the connections still open; default 10 s.
    pub const fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = bounded(timeout);
        self
    }

    /// Serves `service` on every connection of `listener` until `shutdown` completes, then
    /// stops accepting, lets the requests in flight finish within the shutdown timeout, and
    /// returns.
    ///
    /// `service` is any Tower service of `Request<ServerBody>` (an axum `Router`, tonic
    /// `Routes`, a `tower::ServiceBuilder` stack, `tower::service_fn`); it is cloned for every
    /// request. Needs a Tokio runtime with its timer, as `#[tokio::main]` builds.
    ///
    /// # Errors
    ///
    /// None today: like `axum::serve`, an accept error that concerns one connection is
    /// skipped, and any other (out of file descriptors, for example) is logged and retried
    /// after a short pause. The `io::Result` keeps `server.serve(..).await?` the same as with
    /// `axum::serve`.
    pub async fn serve<S, B>(
        self,
        listener: TcpListener,
        service: S,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        S: Service<Request<ServerBody>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let plain = |stream| std::future::ready(Ok(stream));
        self.serve_with(listener, plain, service, shutdown).await
    }

    /// Like [`serve`](Self::serve), with a `handshake` run on every accepted connection before
    /// HTTP, such as a TLS accept; it must finish within the header-read timeout.
    ///
    /// A handshake that fails or times out closes that connection only (logged at `debug`).
    /// With TLS, offer `h2` and `http/1.1` through ALPN for both protocols.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # async fn run(config: Arc<tokio_rustls::rustls::ServerConfig>) -> std::io::Result<()> {
    /// use metigan_webhook::server::{shutdown_signal, Server};
    ///
    /// let acceptor = tokio_rustls::TlsAcceptor::from(config);
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
    /// let handshake = move |stream| acceptor.accept(stream);
    /// Server::new()
    ///     .serve_with(listener, handshake, axum::Router::new(), shutdown_signal())
    ///     .await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`serve`](Self::serve).
    pub async fn serve_with<H, F, IO, S, B>(
        self,
        listener: TcpListener,
        handshake: H,
        service: S,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        H: Fn(TcpStream) -> F + Send + Sync + 'static,
        F: Future<Output = io::Result<IO>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<ServerBody>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let shared = Arc::new(self.shared());
        let handshake = Arc::new(handshake);
        let slots = Arc::new(Semaphore::new(
            self.max_connections.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let (stop_connections, stopping) = watch::channel(());
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);

        loop {
            while connections.try_join_next().is_some() {}
            // A free slot first: while every slot is taken, nothing is accepted.
            let slot = tokio::select! {
                biased;
                () = shutdown.as_mut() => break,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break, // never closed
                },
            };
            let (stream, peer) = tokio::select! {
                biased;
                () = shutdown.as_mut() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) if is_connection_error(&error) => continue,
                    Err(error) => {
                        tracing::error!(%error, "accept failed; retrying");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            // Answers are small and written at once: no reason to wait for Nagle.
            let _ = stream.set_nodelay(true);
            let accepted = Accepted {
                stream,
                peer,
                at: Instant::now(),
                slot,
            };
            let handshake = Arc::clone(&handshake);
            connections.spawn(connection::run(
                accepted,
                move |stream| handshake(stream),
                service.clone(),
                Arc::clone(&shared),
                stopping.clone(),
            ));
        }

        drop(listener);
        let _ = stop_connections.send(());
        while connections.try_join_next().is_some() {}
        let open = connections.len();
        if open > 0 {
            tracing::info!(open, "shutting down: finishing the requests in flight");
        }
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                timeout = ?self.shutdown_timeout,
                "closing the connections still open after the shutdown timeout"
            );
            connections.shutdown().await;
        }
        Ok(())
    }

    fn shared(&self) -> Shared {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
            .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
        Shared {
            builder,
            header_read_timeout: self.header_read_timeout,
            deadlines: Deadlines {
                body: self.body_read_timeout,
                request: self.request_timeout,
            },
        }
    }
}

/// An accept error about the one connection being accepted (the client gave up before it was
/// accepted, for example): the next accept is unaffected.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

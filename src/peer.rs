//! [`PeerAddr`]: the client's address, for the layer's rejection log lines.

use std::net::SocketAddr;

/// The address of the client that sent a request, put in the request's extensions by the
/// server.
///
/// When a request carries it, the layer names it in the log line of every rejection, so an
/// operator can tell a forged flood from a misconfigured secret. The crate's
/// `server` module (feature `server`) inserts it for every request; with another server,
/// insert it yourself, for example from axum's `ConnectInfo`:
///
/// ```
/// use std::net::SocketAddr;
/// use http::Request;
/// use metigan_webhook::PeerAddr;
///
/// let mut request = Request::new(());
/// request.extensions_mut().insert(PeerAddr(SocketAddr::from(([127, 0, 0, 1], 40000))));
/// assert!(request.extensions().get::<PeerAddr>().is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

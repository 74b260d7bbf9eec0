//! [`shutdown_signal`]: the usual reason to stop a server.

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `docker stop`, systemd and
/// Kubernetes send): pass it as the `shutdown` future of [`Server::serve`](super::Server::serve).
///
/// If a signal handler cannot be installed, that signal is simply never seen.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// use metigan_webhook::server::{shutdown_signal, Server};
///
/// let app = axum::Router::new();
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// Server::new().serve(listener, app, shutdown_signal()).await
/// # }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

//! A Metigan webhook receiver on bare hyper 1 + hyper-util, no framework: the signature layer
//! around a `tower::service_fn` handler, at any path.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... PORT=3000 cargo run --example hyper
//! ```
//!
//! `PORT` defaults to 3000 (all interfaces). Each verified event prints one line to stdout and
//! answers `200 OK`; rejected requests answer 401 / 413 / 400 with the reason code and are
//! logged to stderr (`RUST_LOG` sets the level, default `info`). Ctrl-C stops accepting and
//! lets the requests in flight finish.
//!
//! Try it with a delivery signed like Metigan does (HMAC-SHA256 of `<t>.<body>`):
//!
//! ```sh
//! body='{"event":"email.delivered","messageId":"msg_1","data":{"recipient":"jane@example.com"},"timestamp":1700000000000}'
//! t=$(date +%s)
//! sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$WEBHOOK_SECRET" | sed 's/^.* //')
//! curl -i localhost:3000/webhooks -H "X-Webhook-Signature: t=$t,v1=$sig" \
//!      -H 'Content-Type: application/json' --data "$body"
//! # 200 OK, and the server prints: email.delivered messageId=msg_1 recipient=jane@example.com
//! curl -i localhost:3000/webhooks --data "$body"
//! # 401 missing_signature
//! ```

use std::convert::Infallible;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metigan_webhook::{MetiganSignatureLayer, VerifiedBody, VerifiedEvent};
use tower::ServiceBuilder;

/// The handler: runs only for verified requests, with the event in the extensions.
async fn handle(req: Request<VerifiedBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(event) = req.extensions().get::<VerifiedEvent>() else {
        // Unreachable behind the layer; answer 500 rather than panic if it is ever misused.
        let mut response = Response::new(Full::new(Bytes::from_static(b"no verified event\n")));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(response);
    };
    let line = format!(
        "{} messageId={} recipient={}",
        event.event_type(),
        event.message_id().unwrap_or("-"),
        event.recipient().unwrap_or("-"),
    );
    // One line per event, flushed at once so a pipe sees it immediately.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    Ok(Response::new(Full::new(Bytes::from_static(b"OK"))))
}

/// Reads the configuration from the environment; the error is a one-line message.
fn config() -> Result<(MetiganSignatureLayer, SocketAddr), String> {
    let secret = std::env::var("WEBHOOK_SECRET").map_err(|_| {
        "WEBHOOK_SECRET is not set: export the secret shown in Metigan's webhook settings"
            .to_owned()
    })?;
    let layer =
        MetiganSignatureLayer::new(&secret).map_err(|err| format!("WEBHOOK_SECRET: {err}"))?;
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| format!("PORT must be a port number, got {port:?}"))?,
        Err(_) => 3000,
    };
    Ok((layer, SocketAddr::from(([0, 0, 0, 0], port))))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let (layer, addr) = match config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("listening on http://{addr} (any path)");

    // The whole application: verification, then the handler. Cloned once per connection.
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(handle));
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());

    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let connection = builder
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "connection error");
            }
        });
    }

    eprintln!("shutting down");
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("some connections did not finish within 10 s");
    }
    ExitCode::SUCCESS
}

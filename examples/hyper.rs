//! A Metigan webhook receiver without a framework: the signature layer around a
//! `tower::service_fn` handler, at any path, served by `metigan_webhook::server` (hyper 1 +
//! hyper-util underneath).
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... PORT=3000 cargo run --example hyper
//! ```
//!
//! `PORT` defaults to 3000 (all interfaces). Each verified event prints one line to stdout and
//! answers `200 OK`; rejected requests answer 401 / 413 / 400 with the reason code and are
//! logged to stderr (`RUST_LOG` sets the level, default `info`). A method other than `POST`
//! answers `405` with `Allow: POST` before the layer runs. Ctrl-C or SIGTERM stops accepting and
//! lets the requests in flight finish. The edge limits are the receiver's environment variables
//! (`HEADER_READ_TIMEOUT_SECS`, `BODY_READ_TIMEOUT_SECS`, `REQUEST_TIMEOUT_SECS`,
//! `MAX_CONNECTIONS`, `SHUTDOWN_TIMEOUT_SECS`, `MAX_BUFFERED_BYTES`; see `examples/receiver.rs`).
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

#[path = "support/edge.rs"]
mod edge;

use std::convert::Infallible;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use metigan_webhook::server::{shutdown_signal, Server, ServerBody};
use metigan_webhook::{MetiganSignatureLayer, ResponseBody, VerifiedBody, VerifiedEvent};
use tower::{Service, ServiceBuilder, ServiceExt};

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
        event.event_type().as_str().escape_debug(),
        event.message_id().unwrap_or("-").escape_debug(),
        event.recipient().unwrap_or("-").escape_debug(),
    );
    // One line per event, flushed at once so a pipe sees it immediately.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    Ok(Response::new(Full::new(Bytes::from_static(b"OK"))))
}

/// Webhooks are POSTed: any other method gets `405` before the layer reads or logs anything.
async fn post_only<S>(
    verified: S,
    req: Request<ServerBody>,
) -> Result<Response<Either<ResponseBody<Full<Bytes>>, Full<Bytes>>>, Infallible>
where
    S: Service<
        Request<ServerBody>,
        Response = Response<ResponseBody<Full<Bytes>>>,
        Error = Infallible,
    >,
{
    if req.method() != Method::POST {
        let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
            b"method not allowed: webhooks are POSTed\n",
        ))));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(response);
    }
    let response = verified.oneshot(req).await?;
    Ok(response.map(Either::Left))
}

/// Reads the configuration from the environment; the error is a one-line message.
fn config() -> Result<(MetiganSignatureLayer, SocketAddr, Server), String> {
    let secret = std::env::var("WEBHOOK_SECRET").map_err(|_| {
        "WEBHOOK_SECRET is not set: export the secret shown in Metigan's webhook settings"
            .to_owned()
    })?;
    let server = edge::server()?;
    let max_buffered = edge::max_buffered_bytes()?;
    let layer = MetiganSignatureLayer::builder()
        .secret(&secret)
        .max_buffered_bytes(max_buffered)
        .build()
        .map_err(|err| format!("WEBHOOK_SECRET: {err}"))?;
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| format!("PORT must be a port number, got {port:?}"))?,
        Err(_) => 3000,
    };
    Ok((layer, SocketAddr::from(([0, 0, 0, 0], port)), server))
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

    let (layer, addr, server) = match config() {
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
    let local = listener.local_addr().unwrap_or(addr);
    eprintln!("listening on http://{local} (any path)");

    // The whole application: the method, then verification, then the handler. The server
    // clones it for every request.
    let verified = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(handle));
    let app = tower::service_fn(move |req| post_only(verified.clone(), req));
    match server.serve(listener, app, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: server: {err}");
            ExitCode::FAILURE
        }
    }
}

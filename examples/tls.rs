//! The receiver over HTTPS (Metigan only delivers to `https://` URLs), with rustls and its `ring`
//! crypto provider (no C toolchain beyond what `ring` needs, no cmake).
//!
//! ```sh
//! # A real certificate, from PEM files (the chain, then the private key):
//! WEBHOOK_SECRET=whsec_... TLS_CERT=fullchain.pem TLS_KEY=privkey.pem PORT=443 \
//!     cargo run --release --example tls
//!
//! # Local development: no TLS_CERT/TLS_KEY, a self-signed certificate for localhost,
//! # 127.0.0.1 and ::1 is generated at start and its PEM written to TLS_DEV_CERT_OUT
//! # (default: metigan-webhook-dev-cert.pem in the temp dir), for clients to trust:
//! WEBHOOK_SECRET=whsec_... cargo run --example tls
//! curl --cacert /tmp/metigan-webhook-dev-cert.pem https://localhost:3443/webhooks/metigan ...
//! ```
//!
//! `PORT` defaults to 3443. HTTP/1.1 and HTTP/2 are offered through ALPN. The server is
//! `metigan_webhook::server` with the TLS accept as its handshake: the handshake and the first
//! request head must arrive within the header-read timeout, so a client that connects and sends
//! nothing cannot hold a connection. Every edge limit is the receiver's environment variable
//! (`HEADER_READ_TIMEOUT_SECS`, `BODY_READ_TIMEOUT_SECS`, `REQUEST_TIMEOUT_SECS`,
//! `MAX_CONNECTIONS`, `SHUTDOWN_TIMEOUT_SECS`, `MAX_BUFFERED_BYTES`; see `examples/receiver.rs`).
//! On SIGTERM / Ctrl-C the server stops accepting and gives open connections
//! `SHUTDOWN_TIMEOUT_SECS` (10) to finish. A method other than `POST` answers 405 before the
//! signature layer runs.
//!
//! Behind a TLS-terminating proxy or load balancer (nginx, a cloud load balancer, a tunnel),
//! you do not need this: run the plain `receiver` example behind it.

#[path = "support/edge.rs"]
mod edge;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use metigan_webhook::server::{shutdown_signal, Server};
use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

async fn handle(event: VerifiedEvent) -> &'static str {
    let mut out = std::io::stdout().lock();
    // Escaped: an event type with a newline cannot forge a second line.
    let kind = event.event_type().as_str().escape_debug();
    let _ = writeln!(out, "Received event: {kind}").and_then(|()| out.flush());
    "OK"
}

/// The method is checked first: a GET gets 405 without the layer reading or logging it.
fn app(layer: MetiganSignatureLayer) -> Router {
    Router::new().route("/webhooks/metigan", post(handle).route_layer(layer))
}

/// The certificate chain and key, from `TLS_CERT` / `TLS_KEY` or generated.
fn certificate() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert = std::env::var_os("TLS_CERT").filter(|v| !v.is_empty());
    let key = std::env::var_os("TLS_KEY").filter(|v| !v.is_empty());
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
            let chain = CertificateDer::pem_file_iter(&cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("TLS_CERT {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "TLS_CERT {}: no PEM certificate in the file",
                    cert.display()
                ));
            }
            let key = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| format!("TLS_KEY {}: {e}", key.display()))?;
            tracing::info!(cert = %cert.display(), "using the certificate from TLS_CERT");
            Ok((chain, key))
        }
        (Some(_), None) | (None, Some(_)) => Err(
            "set both TLS_CERT and TLS_KEY (PEM files), or neither for a self-signed \
             development certificate"
                .into(),
        ),
        (None, None) => self_signed(),
    }
}

/// A self-signed certificate for local use; its PEM is written where clients can trust it.
fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a self-signed certificate: {e}"))?;
    let out = std::env::var_os("TLS_DEV_CERT_OUT")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || std::env::temp_dir().join("metigan-webhook-dev-cert.pem"),
            PathBuf::from,
        );
    std::fs::write(&out, generated.cert.pem())
        .map_err(|e| format!("cannot write the certificate to {}: {e}", out.display()))?;
    tracing::warn!(
        "no TLS_CERT/TLS_KEY: using a self-signed certificate for localhost, 127.0.0.1 and ::1, \
         written to {} (trust it with `curl --cacert {}`); never in production",
        out.display(),
        out.display()
    );
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    Ok((vec![generated.cert.der().clone()], key))
}

fn tls_config() -> Result<Arc<ServerConfig>, String> {
    let (chain, key) = certificate()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS_CERT / TLS_KEY do not form a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct Config {
    layer: MetiganSignatureLayer,
    tls: Arc<ServerConfig>,
    addr: SocketAddr,
    server: Server,
}

fn config() -> Result<Config, String> {
    let secret = std::env::var("WEBHOOK_SECRET")
        .map_err(|_| "WEBHOOK_SECRET is not set: export the webhook's secret".to_owned())?;
    let server = edge::server()?;
    let max_buffered = edge::max_buffered_bytes()?;
    let layer = MetiganSignatureLayer::builder()
        .secret(secret)
        .max_buffered_bytes(max_buffered)
        .build()
        .map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| format!("PORT must be a number from 0 to 65535, got {port:?}"))?,
        Err(_) => 3443,
    };
    Ok(Config {
        layer,
        tls: tls_config()?,
        addr: SocketAddr::from(([0, 0, 0, 0], port)),
        server,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Config {
        layer,
        tls,
        addr,
        server,
    } = match config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("tls: {message}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("tls: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!("listening on https://{local}/webhooks/metigan");

    // The TLS accept is the server's handshake, bounded by the header-read timeout.
    let acceptor = TlsAcceptor::from(tls);
    let handshake = move |stream| acceptor.accept(stream);
    match server
        .serve_with(listener, handshake, app(layer), shutdown_signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls: server error: {e}");
            ExitCode::from(1)
        }
    }
}

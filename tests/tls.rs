//! `examples/tls.rs` over real HTTPS on 127.0.0.1: with its generated self-signed certificate,
//! and with a certificate and key from files.

mod common;

#[path = "common/example.rs"]
mod example;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use metigan_webhook::testing::SampleEvent;
use metigan_webhook::EventType;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use example::Example;

const SECRET: &str = "whsec_tls_example_test";

fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "tls-{name}-{}-{}",
        std::process::id(),
        common::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A client trusting only `cert_pem`.
fn connector(cert_pem: &[u8]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// POSTs `body` over HTTPS (HTTP/1.1) to `server` at `addr`, with an optional signature.
async fn post_tls(
    connector: &TlsConnector,
    server: &str,
    addr: std::net::SocketAddr,
    body: Bytes,
    signature: Option<String>,
) -> Result<(StatusCode, String), String> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(server.to_owned()).map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let mut request = Request::post(format!("https://{server}/webhooks/metigan"))
            .header("host", server)
            .header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header("x-webhook-signature", signature);
        }
        let response = sender
            .send_request(request.body(Full::new(body)).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

/// A plain-HTTP POST: the TLS server cannot answer it.
async fn post_plain(addr: std::net::SocketAddr) -> Result<StatusCode, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let request = Request::post("/webhooks/metigan")
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let answer = sender.send_request(request).await;
    driver.abort();
    answer.map(|r| r.status()).map_err(|e| e.to_string())
}

fn event(kind: EventType) -> (Bytes, String) {
    let body = SampleEvent::new(kind)
        .with_message_id(format!("tls-{}", common::now()))
        .to_body();
    let signature = metigan_webhook::sign(SECRET, common::now(), &body);
    (body, signature)
}

#[tokio::test]
async fn self_signed_development_certificate() {
    let dir = temp_dir("dev");
    let cert_out = dir.join("dev-cert.pem");
    let mut server = Example::start(
        "tls",
        &[
            ("WEBHOOK_SECRET", SECRET),
            ("TLS_CERT", ""),
            ("TLS_KEY", ""),
            ("TLS_DEV_CERT_OUT", cert_out.to_str().unwrap()),
        ],
    )
    .await;
    let pem = std::fs::read(&cert_out).expect("the dev certificate was written");
    let client = connector(&pem);

    // Signed: 200 and the event printed; by name and by IP address.
    for name in ["localhost", "127.0.0.1"] {
        let (body, signature) = event(EventType::EmailDelivered);
        let (status, text) = post_tls(&client, name, server.addr, body, Some(signature))
            .await
            .unwrap();
        assert_eq!((status, text.as_str()), (StatusCode::OK, "OK"), "{name}");
        assert_eq!(server.next_line().await, "Received event: email.delivered");
    }
    // Unsigned, over TLS: 401 with the reason.
    let (body, _) = event(EventType::EmailOpened);
    let (status, text) = post_tls(&client, "localhost", server.addr, body, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.starts_with("missing_signature"), "{text}");

    // A client that does not trust the certificate cannot connect.
    let stranger = connector(b"");
    let (body, signature) = event(EventType::EmailDelivered);
    let err = post_tls(&stranger, "localhost", server.addr, body, Some(signature))
        .await
        .unwrap_err();
    assert!(err.starts_with("handshake"), "{err}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = tokio::time::timeout(Duration::from_secs(10), post_plain(server.addr))
        .await
        .expect("the server closes the connection");
    assert!(plain.is_err(), "{plain:?}");

    let (rest, _) = server.stop().await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn certificate_and_key_from_files() {
    let dir = temp_dir("files");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();

    let mut server = Example::start(
        "tls",
        &[
            ("WEBHOOK_SECRET", SECRET),
            ("TLS_CERT", cert.to_str().unwrap()),
            ("TLS_KEY", key.to_str().unwrap()),
        ],
    )
    .await;
    let client = connector(generated.cert.pem().as_bytes());
    let (body, signature) = event(EventType::EmailBounced);
    let (status, text) = post_tls(&client, "localhost", server.addr, body, Some(signature))
        .await
        .unwrap();
    assert_eq!((status, text.as_str()), (StatusCode::OK, "OK"));
    assert_eq!(server.next_line().await, "Received event: email.bounced");
    server.stop().await;

    // Configuration mistakes: a clear message and exit code 2, before listening.
    let (code, stderr) = example::run_to_exit(
        "tls",
        &[
            ("WEBHOOK_SECRET", SECRET),
            ("TLS_CERT", cert.to_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("set both TLS_CERT and TLS_KEY"), "{stderr}");
    let missing = dir.join("missing.pem");
    let (code, stderr) = example::run_to_exit(
        "tls",
        &[
            ("WEBHOOK_SECRET", SECRET),
            ("TLS_CERT", missing.to_str().unwrap()),
            ("TLS_KEY", key.to_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("TLS_CERT"), "{stderr}");
    // The key of another certificate.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    let (code, stderr) = example::run_to_exit(
        "tls",
        &[
            ("WEBHOOK_SECRET", SECRET),
            ("TLS_CERT", cert.to_str().unwrap()),
            ("TLS_KEY", other_key.to_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("usable pair"), "{stderr}");
}

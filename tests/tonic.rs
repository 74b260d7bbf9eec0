//! The layer with tonic 0.14, over real connections on 127.0.0.1:
//!
//! - in front of every gRPC service (`Server::builder().layer(..)`): real tonic clients get
//!   proper gRPC statuses (trailers-only answers), never a text body, and the services behind
//!   the layer are never called for a rejected request;
//! - on one webhook route beside gRPC services on one port (`tonic::service::Routes` + axum),
//!   served by tonic's server, by `axum::serve` and by `metigan_webhook::server`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metigan_webhook::{sign, MetiganSignatureLayer, VerifiedBody, VerifiedEvent};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::util::MapRequestLayer;

use common::{event_body, now, Answer};

const SECRET: &str = "whsec_tonic_integration_secret";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// Upper bound of every network step of these tests.
const LIMIT: Duration = Duration::from_secs(10);

/// Runs `fut`, failing the test if it takes longer than [`LIMIT`].
async fn bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// A tonic health client for `http://addr` (HTTP/2 prior knowledge), with timeouts.
async fn health_client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(LIMIT)
        .timeout(LIMIT);
    let channel = bounded("connect", channel.connect())
        .await
        .expect("tonic channel connects");
    HealthClient::new(channel)
}

/// The exact bytes tonic sends for `HealthCheckRequest { service }`: the 5-byte gRPC frame
/// header (not compressed, big-endian length) and the protobuf message (field 1, a string).
fn grpc_frame(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        let len = u8::try_from(service.len())
            .ok()
            .filter(|len| *len < 128)
            .expect("one-byte varint length only");
        message.push(0x0a);
        message.push(len);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// A health check request carrying `x-webhook-signature`, signed now over the exact gRPC body.
fn signed_check(service: &str) -> tonic::Request<HealthCheckRequest> {
    let header = sign(SECRET, now(), &grpc_frame(service));
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    request
        .metadata_mut()
        .insert("x-webhook-signature", header.parse().unwrap());
    request
}

/// Serves the health service with the layer in front of every service, and a counter of the
/// requests that got past the layer (between the layer and tonic's routes).
async fn serve_grpc_behind_layer(layer: MetiganSignatureLayer) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = {
        let calls = calls.clone();
        MapRequestLayer::new(move |req: Request<VerifiedBody>| {
            assert!(
                req.extensions().get::<VerifiedEvent>().is_some(),
                "the layer only lets verified requests through"
            );
            calls.fetch_add(1, Ordering::SeqCst);
            req
        })
    };
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .layer(counter)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (addr, calls)
}

/// Sends `req` over HTTP/2 with prior knowledge (like a gRPC client) and reads the answer.
async fn send_h2<B>(req: Request<B>) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<B>();
    let response = bounded("h2 request", client.request(req))
        .await
        .expect("h2 request sent");
    let (parts, body) = response.into_parts();
    let body = bounded("h2 body", body.collect())
        .await
        .expect("h2 body read")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn unsigned_grpc_call_is_unauthenticated_and_never_reaches_the_service() {
    let (addr, calls) = serve_grpc_behind_layer(MetiganSignatureLayer::new(SECRET).unwrap()).await;
    let mut client = health_client(addr).await;

    let status = bounded(
        "unsigned check",
        client.check(HealthCheckRequest::default()),
    )
    .await
    .expect_err("an unsigned call is rejected");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "missing_signature", "{status:?}");

    // A signature in the right format but made with another secret: still 16.
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    let forged = sign("whsec_someone_else", now(), &grpc_frame(""));
    request
        .metadata_mut()
        .insert("x-webhook-signature", forged.parse().unwrap());
    let status = bounded("forged check", client.check(request))
        .await
        .expect_err("a forged call is rejected");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "signature_mismatch", "{status:?}");

    // A stale signature: 16 with its own reason.
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    let stale = sign(SECRET, now() - 3600, &grpc_frame(""));
    request
        .metadata_mut()
        .insert("x-webhook-signature", stale.parse().unwrap());
    let status = bounded("stale check", client.check(request))
        .await
        .expect_err("a stale call is rejected");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "timestamp_out_of_tolerance", "{status:?}");

    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the health service was called"
    );
}

#[tokio::test]
async fn rejections_are_trailers_only_grpc_answers() {
    let (addr, calls) = serve_grpc_behind_layer(MetiganSignatureLayer::new(SECRET).unwrap()).await;
    let answer = send_h2(
        Request::post(format!("http://{addr}{HEALTH_CHECK}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(grpc_frame(""))))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(header(&answer, "grpc-status"), Some("16"));
    assert_eq!(header(&answer, "grpc-message"), Some("missing_signature"));
    assert_eq!(header(&answer, "content-type"), Some("application/grpc"));
    assert!(
        answer.body.is_empty(),
        "text body on a gRPC answer: {answer:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn correctly_signed_grpc_call_is_verified_then_refused_as_invalid_payload() {
    // The signature is checked over the raw gRPC body tonic sends: it matches, and then the
    // envelope check refuses the protobuf body (3 INVALID_ARGUMENT). A gRPC body is never a
    // Metigan event, so this is as far as a gRPC call can go through the layer.
    let (addr, calls) = serve_grpc_behind_layer(MetiganSignatureLayer::new(SECRET).unwrap()).await;
    let mut client = health_client(addr).await;
    for service in ["", "grpc.health.v1.Health"] {
        let status = bounded("signed check", client.check(signed_check(service)))
            .await
            .expect_err("a gRPC body is not a Metigan event");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), "invalid_payload", "{status:?}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the health service was called"
    );
}

#[tokio::test]
async fn grpc_body_over_the_limit_is_resource_exhausted() {
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .body_limit(16)
        .build()
        .unwrap();
    let (addr, calls) = serve_grpc_behind_layer(layer).await;

    // Streamed: tonic declares no length, the limit trips while the body is read.
    let mut client = health_client(addr).await;
    let service = "a-service-name-longer-than-the-limit";
    assert!(grpc_frame(service).len() > 16);
    let status = bounded("large check", client.check(signed_check(service)))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "body_too_large", "{status:?}");

    // Declared: `content-length` over the limit is answered before any body byte is read. The
    // body never sends a byte: if the layer tried to read it, this would hang until the timeout.
    let never = StreamBody::new(futures_util::stream::pending::<
        Result<Frame<Bytes>, std::convert::Infallible>,
    >());
    let answer = send_h2(
        Request::post(format!("http://{addr}{HEALTH_CHECK}"))
            .header("content-type", "application/grpc+proto")
            .header("te", "trailers")
            .header("content-length", "1000")
            .header("x-webhook-signature", sign(SECRET, now(), &[0u8; 1000]))
            .body(never)
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(header(&answer, "grpc-status"), Some("8"), "{answer:?}");
    assert_eq!(header(&answer, "grpc-message"), Some("body_too_large"));
    assert!(answer.body.is_empty(), "{answer:?}");

    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the health service was called"
    );
}

#[tokio::test]
async fn verified_requests_do_get_through_to_the_routes_behind_the_layer() {
    // The control of the tests above: the counter does count what gets past the layer. A
    // signed JSON event over HTTP/2 reaches tonic's routes, whose fallback answers
    // UNIMPLEMENTED (12) for a path no gRPC service owns.
    let (addr, calls) = serve_grpc_behind_layer(MetiganSignatureLayer::new(SECRET).unwrap()).await;
    let body = event_body("email.delivered", "msg_h2");
    let answer = send_h2(
        Request::post(format!("http://{addr}/webhooks/metigan"))
            .header("content-type", "application/json")
            .header("x-webhook-signature", sign(SECRET, now(), body.as_bytes()))
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(header(&answer, "grpc-status"), Some("12"), "{answer:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// One port: gRPC services and a webhook route behind the layer.
// ---------------------------------------------------------------------------------------------

/// What the webhook handler saw.
#[derive(Debug)]
struct Seen {
    event: String,
    message_id: Option<String>,
    recipient: Option<String>,
    webhook_id: Option<String>,
    body: Bytes,
}

/// The health gRPC service (not behind the layer) and `POST /webhooks/metigan` (behind it) in
/// one axum router, built from tonic's `Routes`.
fn one_port_app(layer: MetiganSignatureLayer, seen: mpsc::UnboundedSender<Seen>) -> axum::Router {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let webhook = post(move |event: VerifiedEvent, body: Bytes| {
        let seen = seen.clone();
        async move {
            let answer = format!("ok {}", event.event_type());
            seen.send(Seen {
                event: event.event_type().to_string(),
                message_id: event.message_id().map(str::to_owned),
                recipient: event.recipient().map(str::to_owned),
                webhook_id: event.webhook_id().map(str::to_owned),
                body,
            })
            .unwrap();
            answer
        }
    })
    // On the method router: a GET gets 405 before the layer.
    .route_layer(layer);
    Routes::new(health)
        .into_axum_router()
        .route("/webhooks/metigan", webhook)
}

async fn check_one_port(addr: SocketAddr, seen: &mut mpsc::UnboundedReceiver<Seen>) {
    // Signed event: 200, and the handler saw the verified event and the body unchanged.
    let body = event_body("email.delivered", "msg_one_port");
    let signature = sign(SECRET, now(), body.as_bytes());
    let answer = bounded(
        "signed POST",
        common::post(
            addr,
            "/webhooks/metigan",
            &[
                ("x-webhook-signature", &signature),
                ("x-webhook-id", "wh_123"),
                ("content-type", "application/json"),
            ],
            body.clone(),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.text(), "ok email.delivered");
    let event = seen.try_recv().expect("the handler ran");
    assert_eq!(event.event, "email.delivered");
    assert_eq!(event.message_id.as_deref(), Some("msg_one_port"));
    assert_eq!(event.recipient.as_deref(), Some("jane@example.com"));
    assert_eq!(event.webhook_id.as_deref(), Some("wh_123"));
    assert_eq!(event.body, body.as_bytes());

    // Unsigned: 401 with the reason, the handler is not called.
    let answer = bounded(
        "unsigned POST",
        common::post(
            addr,
            "/webhooks/metigan",
            &[("content-type", "application/json")],
            event_body("email.delivered", "msg_unsigned"),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        answer.text().starts_with("missing_signature"),
        "{}",
        answer.text()
    );
    assert_eq!(
        header(&answer, "content-type"),
        Some("text/plain; charset=utf-8")
    );

    // Tampered body: 401 signature_mismatch, the handler is not called.
    let tampered = event_body("email.delivered", "msg_tampered");
    let answer = bounded(
        "tampered POST",
        common::post(
            addr,
            "/webhooks/metigan",
            &[("x-webhook-signature", &signature)],
            tampered,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.text().starts_with("signature_mismatch"));
    assert!(seen.try_recv().is_err(), "the handler ran for a rejection");

    // Another method: 405 from the router, the layer does not run.
    let get = Request::get(format!("http://{addr}/webhooks/metigan"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = bounded("GET", common::send(get)).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&answer, "allow"), Some("POST"));

    // gRPC on the same port, not behind the layer: served.
    let mut client = health_client(addr).await;
    let response = bounded("health check", client.check(HealthCheckRequest::default()))
        .await
        .expect("the health service is not behind the layer");
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test]
async fn webhook_route_beside_grpc_on_one_port_with_tonic_server() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let app = one_port_app(MetiganSignatureLayer::new(SECRET).unwrap(), tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        Server::builder()
            .accept_http1(true) // Metigan POSTs over HTTP/1.1
            .add_routes(Routes::from(app))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    check_one_port(addr, &mut seen).await;
}

#[tokio::test]
async fn webhook_route_beside_grpc_on_one_port_with_axum_serve() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let addr = common::serve_axum(one_port_app(
        MetiganSignatureLayer::new(SECRET).unwrap(),
        tx,
    ))
    .await;
    check_one_port(addr, &mut seen).await;
}

#[tokio::test]
async fn webhook_route_beside_grpc_on_one_port_with_the_crate_server() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let app = one_port_app(MetiganSignatureLayer::new(SECRET).unwrap(), tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(metigan_webhook::server::Server::new().serve(
        listener,
        app,
        std::future::pending::<()>(),
    ));
    check_one_port(addr, &mut seen).await;
}

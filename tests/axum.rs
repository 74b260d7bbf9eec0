//! axum 0.8: the three ways to attach the layer, the extractor, and the `from_fn` composition.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::{from_fn, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use metigan_webhook::{EventType, MetiganSignatureLayer, Rejection, VerifiedEvent};
use tower::ServiceBuilder;
use tower_http::map_request_body::MapRequestBodyLayer;

use common::{event_body, post as http_post, post_signed, serve_axum};

const SECRET: &str = "whsec_axum_test";

fn layer() -> MetiganSignatureLayer {
    MetiganSignatureLayer::new(SECRET).unwrap()
}

/// The handler takes the verified event as an argument (feature `axum`).
async fn handler(event: VerifiedEvent) -> String {
    format!(
        "{}|{}|{}",
        event.event_type(),
        event.message_id().unwrap_or("-"),
        event.recipient().unwrap_or("-")
    )
}

async fn check_protected(addr: std::net::SocketAddr, path: &str) {
    let body = event_body("email.opened", "m-1");
    let ok = post_signed(addr, path, SECRET, &body).await;
    assert_eq!(ok.status, 200, "{path}: {}", ok.text());
    assert_eq!(ok.text(), "email.opened|m-1|jane@example.com");
    let unsigned = http_post(addr, path, &[], body.clone()).await;
    assert_eq!(unsigned.status, 401, "{path}");
    assert!(unsigned.text().starts_with("missing_signature"));
    let forged = post_signed(addr, path, "whsec_attacker", &body).await;
    assert_eq!(forged.status, 401, "{path}");
    assert!(forged.text().starts_with("signature_mismatch"));
}

#[tokio::test]
async fn router_layer() {
    let app = Router::new().route("/hook", post(handler)).layer(layer());
    let addr = serve_axum(app).await;
    check_protected(addr, "/hook").await;
    // `Router::layer` also wraps the fallback: an unsigned request anywhere is refused.
    assert_eq!(http_post(addr, "/nowhere", &[], "{}").await.status, 401);
}

#[tokio::test]
async fn route_layer_leaves_other_routes_alone() {
    let app = Router::new()
        .route("/hook", post(handler))
        .route_layer(layer())
        .route("/health", get(|| async { "up" }));
    let addr = serve_axum(app).await;
    check_protected(addr, "/hook").await;
    assert_eq!(http_post(addr, "/nowhere", &[], "{}").await.status, 404);
    let health = common::send(
        http::Request::get(format!("http://{addr}/health"))
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(health.text(), "up");
}

#[tokio::test]
async fn single_route_layer() {
    let app = Router::new()
        .route("/hook", post(handler).layer(layer()))
        .route("/open", post(|body: String| async move { body }));
    let addr = serve_axum(app).await;
    check_protected(addr, "/hook").await;
    let open = http_post(addr, "/open", &[], "plain").await;
    assert_eq!(open.text(), "plain");
}

#[tokio::test]
async fn extension_and_typed_data_work_without_the_extractor() {
    #[derive(serde::Deserialize)]
    struct Data {
        recipient: String,
    }
    let app = Router::new()
        .route(
            "/hook",
            post(|Extension(event): Extension<VerifiedEvent>| async move {
                assert_eq!(event.event_type(), &EventType::EmailDelivered);
                event.data_as::<Data>().unwrap().recipient
            }),
        )
        .layer(layer());
    let addr = serve_axum(app).await;
    let ok = post_signed(addr, "/hook", SECRET, &event_body("email.delivered", "m")).await;
    assert_eq!(ok.text(), "jane@example.com");
}

#[tokio::test]
async fn extractor_without_the_layer_is_a_clear_500() {
    let app = Router::new().route("/hook", post(handler));
    let addr = serve_axum(app).await;
    let answer = post_signed(addr, "/hook", SECRET, &event_body("email.opened", "m")).await;
    assert_eq!(answer.status, 500);
    assert!(
        answer.text().contains("signature layer missing"),
        "{}",
        answer.text()
    );
}

#[tokio::test]
async fn rejection_is_in_the_response_extensions_for_outer_layers() {
    // An outer `from_fn` reshapes rejections into JSON using the typed `Rejection`.
    async fn reshape(req: Request, next: Next) -> Response {
        let mut response = next.run(req).await;
        if let Some(rejection) = response.extensions().get::<Rejection>().cloned() {
            *response.body_mut() =
                axum::body::Body::from(format!(r#"{{"error":"{}"}}"#, rejection.reason()));
        }
        response
    }
    let app = Router::new()
        .route("/hook", post(handler))
        .layer(ServiceBuilder::new().layer(from_fn(reshape)).layer(layer()));
    let addr = serve_axum(app).await;
    let answer = http_post(addr, "/hook", &[], "{}").await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.text(), r#"{"error":"missing_signature"}"#);
}

#[tokio::test]
async fn from_fn_inside_the_layer_needs_map_request_body() {
    // The documented composition: `from_fn` expects `Request<axum::body::Body>`, the layer
    // hands on `Request<VerifiedBody>`; `MapRequestBodyLayer::new(Body::new)` bridges them.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = Router::new().route("/hook", post(handler)).layer(
        ServiceBuilder::new()
            .layer(layer())
            .layer(MapRequestBodyLayer::new(axum::body::Body::new))
            .layer(from_fn(move |req: Request, next: Next| {
                let counter = counter.clone();
                async move {
                    // Runs only for verified requests, and sees the event.
                    assert!(req.extensions().get::<VerifiedEvent>().is_some());
                    counter.fetch_add(1, Ordering::SeqCst);
                    next.run(req).await
                }
            })),
    );
    let addr = serve_axum(app).await;
    check_protected(addr, "/hook").await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "only the signed request got through"
    );
}

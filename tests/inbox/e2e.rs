//! End to end over HTTP on 127.0.0.1: axum, the signature layer, the inbox service and a
//! worker; each event's handler runs once, whatever the duplicates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{post as post_route, post_service};
use axum::Router;
use http::StatusCode;
use metigan_webhook::inbox::{HandlerError, Inbox};
use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};

use crate::common::{event_body, post, post_signed, serve_axum};
use crate::{eventually, TempDir};

const SECRET: &str = "whsec_inbox_e2e";
const PATH: &str = "/webhooks/metigan";
const HANDLER_PATH: &str = "/webhooks/handler";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_signed_delivery_is_handled_once() {
    let dir = TempDir::new("e2e");
    let inbox = Inbox::open(dir.file()).unwrap();
    let runs: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let worker = inbox
        .worker()
        .concurrency(4)
        .spawn_fn({
            let runs = runs.clone();
            move |event: VerifiedEvent| {
                let key = format!(
                    "{}:{}",
                    event.event_type(),
                    event.message_id().unwrap_or("-")
                );
                *runs.lock().unwrap().entry(key).or_default() += 1;
                async { Ok::<(), HandlerError>(()) }
            }
        })
        .unwrap();
    // The service on one route, the same inbox as a handler on another.
    let app = Router::new()
        .route(PATH, post_service(inbox.service()))
        .route(
            HANDLER_PATH,
            post_route({
                let inbox = inbox.clone();
                move |req: axum::extract::Request| inbox.receive(req)
            }),
        )
        .route_layer(MetiganSignatureLayer::new(SECRET).unwrap());
    let addr = serve_axum(app).await;

    // Twenty events, each delivered twice in a row (once on each route).
    for n in 0..20 {
        let body = event_body("email.delivered", &format!("msg-{n}"));
        for path in [PATH, HANDLER_PATH] {
            let answer = post_signed(addr, path, SECRET, &body).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        }
    }
    // One delivery, 100 concurrent copies.
    let body = event_body("email.opened", "msg-copies");
    let copies: Vec<_> = (0..100)
        .map(|_| {
            let body = body.clone();
            tokio::spawn(async move { post_signed(addr, PATH, SECRET, &body).await.status })
        })
        .collect();
    for copy in copies {
        assert_eq!(copy.await.unwrap(), StatusCode::OK);
    }
    // A forged delivery is refused by the layer and never stored.
    let forged = event_body("email.bounced", "msg-forged");
    let answer = post(
        addr,
        PATH,
        &[(
            "x-webhook-signature",
            &format!("t={},v1={}", crate::common::now(), "0".repeat(64)),
        )],
        forged,
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    eventually(Duration::from_secs(10), "21 events done", || async {
        inbox.counts().await.unwrap().done == 21
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts = inbox.counts().await.unwrap();
    assert_eq!(counts.total(), 21, "{counts:?}");
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 21, "{runs:?}");
    assert!(runs.values().all(|&n| n == 1), "{runs:?}");
    assert_eq!(runs["email.opened:msg-copies"], 1);
    let report = worker.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.abandoned, 0);
}

//! Deduplication semantics, one suite run against each store: in memory, and a real
//! `redis-server` started on a free port of 127.0.0.1.

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use metigan_webhook::idempotency::{
    new_token, BoxFuture, Claim, Dedupe, DedupeKey, Duplicate, Hold, IdempotencyStore, MemoryStore,
    StoreError, Token,
};
use metigan_webhook::{MetiganSignatureLayer, VerifiedBody, VerifiedEvent};
use tokio::sync::Notify;
use tower::{Service, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;

use common::{now, post as http_post, serve_axum, Answer};

const SECRET: &str = "whsec_dedupe_suite";
const PATH: &str = "/hook";

type Req = http::Request<Full<Bytes>>;

/// What the handler saw: calls per `<event>:<messageId>`, and a gate for slow handlers.
#[derive(Clone, Default)]
struct Handler {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    gate: Arc<Notify>,
    started: Arc<Notify>,
}

impl Handler {
    fn calls(&self, key: &str) -> usize {
        self.calls.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }

    /// The handler's behaviour is chosen by `data.mode` of the event.
    async fn handle(&self, event: VerifiedEvent) -> (StatusCode, &'static str) {
        let key = format!(
            "{}:{}",
            event.event_type(),
            event.message_id().unwrap_or("-")
        );
        let count = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(key).or_default();
            *count += 1;
            *count
        };
        match event
            .data()
            .get("mode")
            .and_then(|m| m.as_str())
            .unwrap_or("ok")
        {
            "fail-once" if count == 1 => (StatusCode::INTERNAL_SERVER_ERROR, "try again"),
            "panic-once" if count == 1 => panic!("handler panicked on purpose"),
            "gate" => {
                self.started.notify_one();
                self.gate.notified().await;
                (StatusCode::OK, "OK")
            }
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                (StatusCode::OK, "OK")
            }
            "nap" => {
                tokio::time::sleep(Duration::from_millis(600)).await;
                (StatusCode::OK, "OK")
            }
            _ => (StatusCode::OK, "OK"),
        }
    }
}

fn body(event: &str, message_id: Option<&str>, mode: &str) -> String {
    let id = message_id.map_or(String::new(), |id| format!(r#""messageId":"{id}","#));
    format!(r#"{{"event":"{event}",{id}"data":{{"recipient":"a@example.com","mode":"{mode}"}}}}"#)
}

async fn deliver(addr: SocketAddr, body: &str) -> Answer {
    deliver_with(addr, body, &[]).await
}

async fn deliver_with(addr: SocketAddr, body: &str, extra: &[(&str, &str)]) -> Answer {
    let sig = metigan_webhook::sign(SECRET, now(), body.as_bytes());
    let mut headers = vec![("x-webhook-signature", sig.as_str())];
    headers.extend_from_slice(extra);
    http_post(addr, PATH, &headers, body.to_owned()).await
}

async fn serve(dedupe: Dedupe) -> (SocketAddr, Handler) {
    let handler = Handler::default();
    let h = handler.clone();
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .deduplicate(dedupe)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            PATH,
            post(move |event: VerifiedEvent| async move { h.handle(event).await }),
        )
        .layer(layer)
        // Outermost: a panicking handler becomes a 500 (the claim is released on unwind).
        .layer(CatchPanicLayer::new());
    (serve_axum(app).await, handler)
}

// ---------------------------------------------------------------------------------------
// The scenarios, each taking the store under test.
// ---------------------------------------------------------------------------------------

async fn concurrent_duplicates_run_once(dedupe: Dedupe) {
    let (addr, handler) = serve(dedupe).await;
    let event = body("email.delivered", Some("m-1"), "gate");
    let first = tokio::spawn({
        let event = event.clone();
        async move { deliver(addr, &event).await }
    });
    handler.started.notified().await;
    // Same delivery while the first is running: 409 with Retry-After, handler not called.
    let second = deliver(addr, &event).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text());
    assert_eq!(second.headers["retry-after"], "5");
    assert!(second.text().starts_with("in_flight"));
    handler.gate.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    // After success: 200 without running the handler.
    let third = deliver(addr, &event).await;
    assert_eq!(third.status, StatusCode::OK);
    assert_eq!(third.text(), "OK");
    assert_eq!(handler.calls("email.delivered:m-1"), 1);
}

async fn simultaneous_duplicates_run_once(dedupe: Dedupe) {
    let (addr, handler) = serve(dedupe).await;
    let event = body("email.opened", Some("m-2"), "ok");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let event = event.clone();
        tasks.push(tokio::spawn(
            async move { deliver(addr, &event).await.status },
        ));
    }
    for task in tasks {
        let status = task.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "{status}"
        );
    }
    assert_eq!(handler.calls("email.opened:m-2"), 1);
}

async fn non_2xx_releases(dedupe: Dedupe) {
    let (addr, handler) = serve(dedupe).await;
    let event = body("email.bounced", Some("m-3"), "fail-once");
    assert_eq!(deliver(addr, &event).await.status, 500);
    assert_eq!(deliver(addr, &event).await.status, 200, "the retry runs");
    assert_eq!(deliver(addr, &event).await.status, 200);
    assert_eq!(handler.calls("email.bounced:m-3"), 2);
}

async fn panic_releases(dedupe: Dedupe) {
    let (addr, handler) = serve(dedupe).await;
    let event = body("email.clicked", Some("m-4"), "panic-once");
    assert_eq!(deliver(addr, &event).await.status, 500);
    // The unwinding future releases its claim from its destructor: at once in memory, from a
    // spawned task with Redis, so a retry right after may still see it in flight (409).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = deliver(addr, &event).await.status;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(tokio::time::Instant::now() < deadline, "the retry runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(deliver(addr, &event).await.status, 200);
    assert_eq!(handler.calls("email.clicked:m-4"), 2);
}

async fn error_releases(dedupe: Dedupe) {
    // A plain tower service whose first call fails with an error.
    let calls = Arc::new(Mutex::new(0usize));
    let c = calls.clone();
    let inner = tower::service_fn(move |_req: http::Request<VerifiedBody>| {
        let c = c.clone();
        async move {
            let mut calls = c.lock().unwrap();
            *calls += 1;
            if *calls == 1 {
                Err("database down".to_owned())
            } else {
                Ok(http::Response::new(Full::new(Bytes::from_static(b"OK"))))
            }
        }
    });
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .deduplicate(dedupe)
        .build()
        .unwrap();
    let mut service = tower::ServiceBuilder::new().layer(layer).service(inner);
    let event = body("email.sent", Some("m-5"), "ok");
    let request = || {
        let sig = metigan_webhook::sign(SECRET, now(), event.as_bytes());
        http::Request::post(PATH)
            .header("x-webhook-signature", sig)
            .body(Full::new(Bytes::from(event.clone())))
            .unwrap()
    };
    let err = ServiceExt::<Req>::ready(&mut service)
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap_err();
    assert_eq!(err, "database down");
    let ok = ServiceExt::<Req>::ready(&mut service)
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let dup = ServiceExt::<Req>::ready(&mut service)
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap();
    assert_eq!(dup.status(), 200);
    assert_eq!(*calls.lock().unwrap(), 2);
}

async fn dropped_future_releases(dedupe: Dedupe) {
    let (addr, handler) = serve(dedupe.clone()).await;
    let slow = body("email.failed", Some("m-6"), "slow");
    // The client gives up (a timeout): hyper drops the request's future with the connection.
    let attempt = tokio::time::timeout(Duration::from_millis(300), deliver(addr, &slow)).await;
    assert!(attempt.is_err(), "the slow handler is still running");
    // In process, deterministically: drop the future while the handler runs.
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .deduplicate(dedupe)
        .build()
        .unwrap();
    // The first call never finishes on its own; later ones answer at once.
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = first.clone();
    let mut service = tower::ServiceBuilder::new().layer(layer).service_fn(
        move |_req: http::Request<VerifiedBody>| {
            let block = f.swap(false, std::sync::atomic::Ordering::SeqCst);
            async move {
                if block {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"OK"))))
            }
        },
    );
    let event = body("email.failed", Some("m-7"), "ok");
    let request = || {
        let sig = metigan_webhook::sign(SECRET, now(), event.as_bytes());
        http::Request::post(PATH)
            .header("x-webhook-signature", sig)
            .body(Full::new(Bytes::from(event.clone())))
            .unwrap()
    };
    let pending = ServiceExt::<Req>::ready(&mut service)
        .await
        .unwrap()
        .call(request());
    let pending = tokio::time::timeout(Duration::from_millis(100), pending).await;
    assert!(pending.is_err(), "still running: dropped by the timeout");
    // The memory store releases in the destructor; Redis from a spawned task: poll briefly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let retry = ServiceExt::<Req>::ready(&mut service)
            .await
            .unwrap()
            .call(request());
        let retry = retry.await.unwrap();
        if retry.status() == StatusCode::OK {
            assert_eq!(retry.into_body().collect().await.unwrap().to_bytes(), "OK");
            break;
        }
        assert_eq!(retry.status(), StatusCode::CONFLICT);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped claim was released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Over HTTP: once the server noticed the client left, the retry runs the handler again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let again = body("email.failed", Some("m-6"), "ok");
        // Same key (event + messageId), fast mode now.
        let answer = deliver(addr, &again).await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert_eq!(answer.status, StatusCode::CONFLICT);
        assert!(
            tokio::time::Instant::now() < deadline,
            "claim released after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handler.calls("email.failed:m-6"), 2);
}

async fn slow_handler_keeps_its_claim(dedupe: Dedupe) {
    // A lease of 300 ms and a handler that runs until released, well past two leases.
    let (addr, handler) = serve(dedupe.lease(Duration::from_millis(300))).await;
    let event = body("email.opened", Some("m-lease"), "gate");
    let first = tokio::spawn({
        let event = event.clone();
        async move { deliver(addr, &event).await }
    });
    handler.started.notified().await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    // The claim was renewed while the handler ran: the retry is told to come back later.
    let retry = tokio::time::timeout(Duration::from_secs(3), deliver(addr, &event))
        .await
        .expect("answered at once, not run a second time");
    assert_eq!(retry.status, StatusCode::CONFLICT, "{}", retry.text());
    handler.gate.notify_one();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(deliver(addr, &event).await.status, StatusCode::OK);
    assert_eq!(handler.calls("email.opened:m-lease"), 1, "run once");
}

type Answering =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<Full<Bytes>>, Infallible>> + Send>>;

/// In process: a handler answering 200 with `grpc-status` in its head, taken in turn from
/// `statuses` (the last one repeats). The service's type is spelled out so its future's `Debug`
/// (the layer's state) stays visible.
#[allow(clippy::type_complexity)]
fn grpc_handler(
    dedupe: Dedupe,
    statuses: &'static [&'static str],
) -> (
    metigan_webhook::MetiganSignature<
        tower::util::ServiceFn<impl FnMut(http::Request<VerifiedBody>) -> Answering + Clone>,
    >,
    Arc<AtomicUsize>,
) {
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .deduplicate(dedupe)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = tower::ServiceBuilder::new().layer(layer).service_fn(
        move |_req: http::Request<VerifiedBody>| -> Answering {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let status = statuses[n.min(statuses.len() - 1)];
            Box::pin(async move {
                let mut response = http::Response::new(Full::new(Bytes::new()));
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static(status));
                Ok::<_, Infallible>(response)
            })
        },
    );
    (service, calls)
}

fn signed_request(event: &str) -> Req {
    let sig = metigan_webhook::sign(SECRET, now(), event.as_bytes());
    http::Request::post(PATH)
        .header("x-webhook-signature", sig)
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from(event.to_owned())))
        .unwrap()
}

async fn grpc_error_in_a_2xx_releases(dedupe: Dedupe) {
    // 13 INTERNAL in an HTTP 200: a failure, so the retry runs; then 0 OK is remembered.
    let (mut service, calls) = grpc_handler(dedupe, &["13", "0"]);
    let event = body("email.sent", Some("m-grpc"), "ok");
    for (expected_calls, expected_status) in [(1, "13"), (2, "0"), (2, "0")] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let answer = loop {
            let answer = ServiceExt::<Req>::ready(&mut service)
                .await
                .unwrap()
                .call(signed_request(&event))
                .await
                .unwrap();
            // A release from Redis may still be on its way: 10 ABORTED (in flight) until then.
            if answer.headers()["grpc-status"] != "10" {
                break answer;
            }
            assert!(tokio::time::Instant::now() < deadline, "released");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(answer.headers()["grpc-status"], expected_status);
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
    }
}

/// Polls `future` (with a waker that does nothing) until its state is `state`, or it ends.
async fn poll_until_state<F: Future + Unpin + std::fmt::Debug>(
    future: &mut F,
    state: &str,
) -> bool {
    let waker = std::task::Waker::noop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let polled =
            std::pin::Pin::new(&mut *future).poll(&mut std::task::Context::from_waker(waker));
        if polled.is_ready() {
            return false;
        }
        if format!("{future:?}").contains(state) {
            return true;
        }
        assert!(tokio::time::Instant::now() < deadline, "reached {state}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A 2xx being recorded when the request's future is dropped is still recorded: the retry is
/// answered as a duplicate and the handler does not run again.
async fn dropped_while_completing_stays_done(dedupe: Dedupe) {
    let (mut service, calls) = grpc_handler(dedupe, &["0"]);
    let event = body("email.clicked", Some("m-complete"), "ok");
    let mut future = Box::pin(
        ServiceExt::<Req>::ready(&mut service)
            .await
            .unwrap()
            .call(signed_request(&event)),
    );
    assert!(
        poll_until_state(&mut future, "Finishing").await,
        "the store's `complete` answers later"
    );
    drop(future);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = ServiceExt::<Req>::ready(&mut service)
            .await
            .unwrap()
            .call(signed_request(&event))
            .await
            .unwrap();
        if answer.extensions().get::<Duplicate>() == Some(&Duplicate::AlreadyProcessed) {
            break;
        }
        assert_eq!(
            answer.extensions().get::<Duplicate>(),
            Some(&Duplicate::InFlight),
            "never released: the handler does not run again"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "completed in the background"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
}

async fn lease_and_ttl_expire(store: Arc<dyn IdempotencyStore>, dedupe: Dedupe) {
    let dedupe = dedupe
        .lease(Duration::from_secs(1))
        .ttl(Duration::from_secs(1));
    let (addr, handler) = serve(dedupe).await;
    // A holder that died: a claim nobody will complete (prefixed like the layer's keys).
    let token = metigan_webhook::idempotency::new_token();
    let claim = store
        .claim("contact.created:m-8", &token, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(claim, Claim::Acquired);
    let event = body("contact.created", Some("m-8"), "ok");
    assert_eq!(deliver(addr, &event).await.status, StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(deliver(addr, &event).await.status, 200, "lease expired");
    assert_eq!(handler.calls("contact.created:m-8"), 1);
    assert_eq!(deliver(addr, &event).await.status, 200);
    assert_eq!(
        handler.calls("contact.created:m-8"),
        1,
        "done within the TTL"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(deliver(addr, &event).await.status, 200);
    assert_eq!(
        handler.calls("contact.created:m-8"),
        2,
        "done key expired after its TTL"
    );
}

async fn keys_and_unverified_requests(dedupe: Dedupe) {
    let (addr, handler) = serve(dedupe).await;
    // A forged request with the same messageId never claims the key.
    let event = body("email.delivered", Some("m-9"), "ok");
    let forged = metigan_webhook::sign("whsec_attacker", now(), event.as_bytes());
    let answer = http_post(
        addr,
        PATH,
        &[("x-webhook-signature", &forged)],
        event.clone(),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(deliver(addr, &event).await.status, 200);
    assert_eq!(handler.calls("email.delivered:m-9"), 1);
    // Other event types of the same email are all processed.
    for kind in ["email.opened", "email.clicked"] {
        assert_eq!(
            deliver(addr, &body(kind, Some("m-9"), "ok")).await.status,
            200
        );
        assert_eq!(handler.calls(&format!("{kind}:m-9")), 1);
    }
    // No messageId: not deduplicated.
    let anonymous = body("audience.updated", None, "ok");
    deliver(addr, &anonymous).await;
    deliver(addr, &anonymous).await;
    assert_eq!(handler.calls("audience.updated:-"), 2);
}

async fn alternative_keys(dedupe: Dedupe) {
    // X-Webhook-Id: two bodies with one id are one delivery.
    let (addr, handler) = serve(dedupe.clone().key(DedupeKey::WebhookId)).await;
    let id = [("x-webhook-id", "delivery-1")];
    deliver_with(addr, &body("email.sent", Some("a"), "ok"), &id).await;
    deliver_with(addr, &body("email.sent", Some("b"), "ok"), &id).await;
    assert_eq!(handler.total(), 1);

    // Body digest: only byte-identical bodies are duplicates.
    let (addr, handler) = serve(dedupe.clone().key(DedupeKey::BodyDigest)).await;
    let same = body("email.sent", None, "ok");
    deliver(addr, &same).await;
    deliver(addr, &same).await;
    deliver(addr, &same.replace("a@example.com", "b@example.com")).await;
    assert_eq!(handler.total(), 2);

    // A custom function: here, the recipient.
    let key = DedupeKey::custom(|event, _parts| event.recipient().map(str::to_owned));
    let (addr, handler) = serve(dedupe.key(key)).await;
    deliver(addr, &body("email.sent", Some("x"), "ok")).await;
    deliver(addr, &body("email.opened", Some("y"), "ok")).await;
    assert_eq!(handler.total(), 1);
}

// ---------------------------------------------------------------------------------------
// The suite against each store.
// ---------------------------------------------------------------------------------------

/// The shared scenarios as tests of one store. `$setup` is an async fn returning what must
/// stay alive during the test (a Redis server) and the store (cheap to clone).
macro_rules! shared_suite {
    ($setup:ident) => {
        #[tokio::test]
        async fn concurrent_duplicates_run_once() {
            let (_keep, store) = $setup().await;
            super::concurrent_duplicates_run_once(Dedupe::new(store)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn simultaneous_duplicates_run_once() {
            let (_keep, store) = $setup().await;
            super::simultaneous_duplicates_run_once(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn non_2xx_releases() {
            let (_keep, store) = $setup().await;
            super::non_2xx_releases(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn panic_releases() {
            let (_keep, store) = $setup().await;
            super::panic_releases(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn error_releases() {
            let (_keep, store) = $setup().await;
            super::error_releases(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn dropped_future_releases() {
            let (_keep, store) = $setup().await;
            super::dropped_future_releases(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn slow_handler_keeps_its_claim() {
            let (_keep, store) = $setup().await;
            super::slow_handler_keeps_its_claim(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn grpc_error_in_a_2xx_releases() {
            let (_keep, store) = $setup().await;
            super::grpc_error_in_a_2xx_releases(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn lease_and_ttl_expire() {
            let (_keep, store) = $setup().await;
            let handle = Arc::new(store.clone());
            super::lease_and_ttl_expire(handle, Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn keys_and_unverified_requests() {
            let (_keep, store) = $setup().await;
            super::keys_and_unverified_requests(Dedupe::new(store)).await;
        }

        #[tokio::test]
        async fn alternative_keys() {
            let (_keep, store) = $setup().await;
            super::alternative_keys(Dedupe::new(store)).await;
        }
    };
}

mod memory {
    use super::*;

    fn dedupe() -> Dedupe {
        Dedupe::in_memory()
    }

    async fn setup() -> ((), SharedStore<MemoryStore>) {
        ((), SharedStore(Arc::new(MemoryStore::default())))
    }

    shared_suite!(setup);

    #[tokio::test]
    async fn dropped_while_completing_stays_done() {
        let slow = SlowStore {
            inner: Arc::new(MemoryStore::default()),
            delay: Duration::from_millis(300),
        };
        super::dropped_while_completing_stays_done(Dedupe::new(slow)).await;
    }

    #[tokio::test]
    async fn a_completion_that_finds_another_holder_is_logged() {
        let (capture, _guard) = common::LogCapture::install();
        // A store that does not renew claims, and a handler slower than the lease: the retry
        // takes the key while the first delivery still runs.
        let store = SlowStore {
            inner: Arc::new(MemoryStore::default()),
            delay: Duration::ZERO,
        };
        let (addr, handler) = serve(Dedupe::new(store).lease(Duration::from_millis(200))).await;
        let event = body("email.bounced", Some("m-late"), "nap");
        let first = tokio::spawn({
            let event = event.clone();
            async move { deliver(addr, &event).await }
        });
        tokio::time::sleep(Duration::from_millis(350)).await;
        let second = deliver(addr, &event).await;
        assert_eq!(second.status, StatusCode::OK);
        assert_eq!(first.await.unwrap().status, StatusCode::OK);
        assert_eq!(handler.calls("email.bounced:m-late"), 2);
        let log = capture.text();
        assert_eq!(
            log.matches("succeeded after its deduplication claim had passed")
                .count(),
            1,
            "{log}"
        );
        assert!(log.contains("WARN"), "{log}");
    }

    #[tokio::test]
    async fn dropped_while_claiming_releases() {
        super::dropped_while_waiting_on_the_store(StatusCode::OK).await;
    }

    #[tokio::test]
    async fn dropped_while_releasing_releases() {
        super::dropped_while_waiting_on_the_store(StatusCode::INTERNAL_SERVER_ERROR).await;
    }

    /// `complete` fails after a 2xx: the answer stays 2xx and the claim is kept (until its
    /// lease), so a duplicate already on its way is not processed again.
    #[tokio::test]
    async fn failed_complete_keeps_the_claim() {
        let store = FaultyStore {
            complete_fails: true,
            ..FaultyStore::default()
        };
        let (addr, handler) = serve(Dedupe::new(store.clone())).await;
        let event = body("email.sent", Some("m-c"), "ok");
        assert_eq!(deliver(addr, &event).await.status, 200);
        assert_eq!(deliver(addr, &event).await.status, StatusCode::CONFLICT);
        assert_eq!(handler.calls("email.sent:m-c"), 1);
        assert_eq!(store.detached.load(Ordering::SeqCst), 0);
    }

    /// `release` fails after a non-2xx: released again from the destructor, so the retry runs.
    #[tokio::test]
    async fn failed_release_is_retried_in_the_background() {
        let store = FaultyStore {
            release_fails: true,
            ..FaultyStore::default()
        };
        let (addr, handler) = serve(Dedupe::new(store.clone())).await;
        let event = body("email.sent", Some("m-r"), "fail-once");
        assert_eq!(deliver(addr, &event).await.status, 500);
        assert_eq!(store.detached.load(Ordering::SeqCst), 1);
        assert_eq!(deliver(addr, &event).await.status, 200);
        assert_eq!(handler.calls("email.sent:m-r"), 2);
    }

    /// A claim that landed but answered an error: 503, and the key is released (not blocked
    /// for the lease); in fail-open mode the handler runs and the key is released too.
    #[tokio::test]
    async fn claim_error_after_it_landed_releases_the_key() {
        let store = FaultyStore {
            claim_fails: true,
            ..FaultyStore::default()
        };
        let (addr, handler) = serve(Dedupe::new(store.clone())).await;
        let event = body("email.sent", Some("m-l"), "ok");
        assert_eq!(deliver(addr, &event).await.status, 503);
        assert_eq!(handler.calls("email.sent:m-l"), 0);
        assert_eq!(store.detached.load(Ordering::SeqCst), 1);
        let free = store
            .inner
            .claim("email.sent:m-l", &new_token(), Duration::from_secs(60));
        assert_eq!(free.await.unwrap(), Claim::Acquired, "not left claimed");

        let store = FaultyStore {
            claim_fails: true,
            ..FaultyStore::default()
        };
        let (addr, handler) = serve(Dedupe::new(store.clone()).fail_open()).await;
        assert_eq!(deliver(addr, &event).await.status, 200);
        assert_eq!(handler.calls("email.sent:m-l"), 1);
        assert_eq!(store.detached.load(Ordering::SeqCst), 1);
    }

    /// gRPC requests get trailers-only answers for duplicates too: 0 (already processed),
    /// 10 ABORTED (in flight), 14 UNAVAILABLE (store unreachable).
    #[tokio::test]
    async fn grpc_duplicates_get_grpc_statuses() {
        let memory = Arc::new(MemoryStore::default());
        let layer = |store: SharedStore<MemoryStore>| {
            MetiganSignatureLayer::builder()
                .secret(SECRET)
                .deduplicate(Dedupe::new(store))
                .build()
                .unwrap()
        };
        let ok = tower::service_fn(|_req: http::Request<VerifiedBody>| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"OK"))))
        });
        let request = |message_id: &str| {
            let event = body("email.sent", Some(message_id), "ok");
            let sig = metigan_webhook::sign(SECRET, now(), event.as_bytes());
            http::Request::post("/hook")
                .header("content-type", "application/grpc")
                .header("x-webhook-signature", sig)
                .body(Full::new(Bytes::from(event)))
                .unwrap()
        };
        let grpc = |response: &http::Response<_>| {
            (
                response.status(),
                response.headers().get("grpc-status").cloned(),
                response.headers().get("grpc-message").cloned(),
            )
        };
        let service = tower::ServiceBuilder::new()
            .layer(layer(SharedStore(memory.clone())))
            .service(ok);
        let first = service.clone().oneshot(request("g-1")).await.unwrap();
        assert_eq!(first.status(), 200);
        assert!(
            first.headers().get("grpc-status").is_none(),
            "the handler's own answer"
        );
        let again = service.clone().oneshot(request("g-1")).await.unwrap();
        assert_eq!(
            grpc(&again),
            (
                StatusCode::OK,
                Some("0".parse().unwrap()),
                Some("already_processed".parse().unwrap())
            )
        );
        memory
            .claim("email.sent:g-2", &new_token(), Duration::from_secs(60))
            .await
            .unwrap();
        let busy = service.clone().oneshot(request("g-2")).await.unwrap();
        assert_eq!(
            grpc(&busy),
            (
                StatusCode::OK,
                Some("10".parse().unwrap()),
                Some("in_flight".parse().unwrap())
            )
        );
        let full = Arc::new(MemoryStore::with_capacity(1));
        for i in 0..64 {
            full.claim(&format!("f-{i}"), &new_token(), Duration::from_secs(60))
                .await
                .unwrap();
        }
        let service = tower::ServiceBuilder::new()
            .layer(layer(SharedStore(full)))
            .service(ok);
        let unavailable = service.oneshot(request("g-3")).await.unwrap();
        assert_eq!(
            grpc(&unavailable),
            (
                StatusCode::OK,
                Some("14".parse().unwrap()),
                Some("store_unavailable".parse().unwrap())
            )
        );
    }

    #[tokio::test]
    async fn forever_is_a_valid_ttl_and_lease() {
        let dedupe = dedupe().ttl(Duration::MAX).lease(Duration::MAX);
        let (addr, handler) = serve(dedupe).await;
        let event = body("email.sent", Some("m-forever"), "ok");
        assert_eq!(deliver(addr, &event).await.status, 200);
        assert_eq!(deliver(addr, &event).await.status, 200);
        assert_eq!(handler.calls("email.sent:m-forever"), 1);
    }

    /// The in-memory equivalent of "store unavailable": a store full of live claims answers
    /// 503 (fail-closed) or runs the handler (fail-open).
    #[tokio::test]
    async fn full_store_is_unavailable() {
        // The smallest store: one shard of 64 keys, filled with live claims.
        let store = Arc::new(MemoryStore::with_capacity(1));
        let shared = SharedStore(store.clone());
        for i in 0..64 {
            let claim = store.claim(
                &format!("filler-{i}"),
                &new_token(),
                Duration::from_secs(60),
            );
            assert_eq!(claim.await.unwrap(), Claim::Acquired);
        }
        let (addr, handler) = serve(Dedupe::new(shared.clone())).await;
        let event = body("email.sent", Some("m-full"), "ok");
        let answer = deliver(addr, &event).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers["retry-after"], "5");
        assert_eq!(handler.total(), 0);
        let (addr, handler) = serve(Dedupe::new(shared).fail_open()).await;
        assert_eq!(deliver(addr, &event).await.status, StatusCode::OK);
        assert_eq!(handler.total(), 1);
    }

    /// Issue #3's load check: 1,000 concurrent deliveries, 10 of each of 100 keys, on a
    /// two-worker runtime: each key's handler runs exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousand_concurrent_duplicates_of_hundred_keys() {
        let (addr, handler) = serve(dedupe()).await;
        let mut tasks = Vec::new();
        for round in 0..10 {
            for key in 0..100 {
                let event = body("email.delivered", Some(&format!("load-{key}")), "ok");
                tasks.push(tokio::spawn(async move {
                    let _ = round;
                    deliver(addr, &event).await.status
                }));
            }
        }
        let mut statuses = HashMap::new();
        for task in tasks {
            *statuses
                .entry(task.await.unwrap().as_u16())
                .or_insert(0usize) += 1;
        }
        assert_eq!(handler.total(), 100, "statuses: {statuses:?}");
        for key in 0..100 {
            assert_eq!(handler.calls(&format!("email.delivered:load-{key}")), 1);
        }
        assert!(
            statuses.keys().all(|s| *s == 200 || *s == 409),
            "{statuses:?}"
        );
    }
}

/// A store that applies every operation at once but answers only after `delay`, so a test can
/// drop the request's future while the layer waits for it.
struct SlowStore {
    inner: Arc<MemoryStore>,
    delay: Duration,
}

impl IdempotencyStore for SlowStore {
    fn claim(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> BoxFuture<Result<Claim, StoreError>> {
        let applied = self.inner.claim(key, token, lease);
        let delay = self.delay;
        Box::pin(async move {
            let claim = applied.await;
            tokio::time::sleep(delay).await;
            claim
        })
    }
    fn complete(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
    ) -> BoxFuture<Result<bool, StoreError>> {
        let delay = self.delay;
        let (inner, key, token) = (self.inner.clone(), key.to_owned(), token.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            inner.complete(&key, &token, ttl).await
        })
    }
    fn release(&self, key: &str, token: &Token) -> BoxFuture<Result<(), StoreError>> {
        let delay = self.delay;
        let (inner, key, token) = (self.inner.clone(), key.to_owned(), token.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            inner.release(&key, &token).await
        })
    }
    fn release_detached(&self, key: &str, token: &Token) {
        self.inner.release_detached(key, token)
    }
    fn complete_detached(&self, key: &str, token: &Token, ttl: Duration) {
        self.inner.complete_detached(key, token, ttl)
    }
    // No `hold`: its claims last their lease, however long the handler runs.
}

/// Drops the request's future while the layer waits on the store, then checks the key is free.
async fn dropped_while_waiting_on_the_store(status: StatusCode) {
    let memory = Arc::new(MemoryStore::default());
    let slow = SlowStore {
        inner: memory.clone(),
        delay: Duration::from_millis(300),
    };
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .deduplicate(Dedupe::new(slow))
        .build()
        .unwrap();
    let mut service = tower::ServiceBuilder::new().layer(layer).service_fn(
        move |_req: http::Request<VerifiedBody>| async move {
            let mut response = http::Response::new(Full::new(Bytes::from_static(b"done")));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        },
    );
    let event = body("email.sent", Some("m-slow"), "ok");
    let sig = metigan_webhook::sign(SECRET, now(), event.as_bytes());
    let request = http::Request::post(PATH)
        .header("x-webhook-signature", sig)
        .body(Full::new(Bytes::from(event.clone())))
        .unwrap();
    let future = ServiceExt::<Req>::ready(&mut service)
        .await
        .unwrap()
        .call(request);
    // 100 ms: inside the claim's 300 ms (status 200 below is never reached), or, for a failing
    // handler, the claim answered after 300 ms and the release is pending until 600 ms.
    let wait = if status.is_success() { 100 } else { 450 };
    let dropped = tokio::time::timeout(Duration::from_millis(wait), future).await;
    assert!(
        dropped.is_err(),
        "the future was still waiting on the store"
    );
    // The claim was applied; the dropped future released it.
    let claim = memory.claim("email.sent:m-slow", &new_token(), Duration::from_secs(60));
    assert_eq!(
        claim.await.unwrap(),
        Claim::Acquired,
        "key released on drop"
    );
}

/// A memory store whose operations can be made to fail after they took effect, counting the
/// releases made from destructors.
#[derive(Clone, Default)]
struct FaultyStore {
    inner: Arc<MemoryStore>,
    claim_fails: bool,
    complete_fails: bool,
    release_fails: bool,
    detached: Arc<AtomicUsize>,
}

fn failure<T: Send + 'static>() -> BoxFuture<Result<T, StoreError>> {
    Box::pin(std::future::ready(Err(StoreError::new("injected failure"))))
}

impl IdempotencyStore for FaultyStore {
    fn claim(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> BoxFuture<Result<Claim, StoreError>> {
        let applied = self.inner.claim(key, token, lease);
        if self.claim_fails {
            // The claim lands, but its answer is lost.
            drop(applied);
            return failure();
        }
        applied
    }
    fn complete(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
    ) -> BoxFuture<Result<bool, StoreError>> {
        if self.complete_fails {
            return failure();
        }
        self.inner.complete(key, token, ttl)
    }
    fn release(&self, key: &str, token: &Token) -> BoxFuture<Result<(), StoreError>> {
        if self.release_fails {
            return failure();
        }
        self.inner.release(key, token)
    }
    fn release_detached(&self, key: &str, token: &Token) {
        self.detached.fetch_add(1, Ordering::SeqCst);
        self.inner.release_detached(key, token)
    }
}

/// Lets a test keep a handle on the store given to the layer.
struct SharedStore<S>(Arc<S>);

impl<S> Clone for SharedStore<S> {
    fn clone(&self) -> Self {
        SharedStore(self.0.clone())
    }
}

impl<S: IdempotencyStore> IdempotencyStore for SharedStore<S> {
    fn claim(
        &self,
        key: &str,
        token: &Token,
        lease: Duration,
    ) -> BoxFuture<Result<Claim, StoreError>> {
        self.0.claim(key, token, lease)
    }
    fn complete(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
    ) -> BoxFuture<Result<bool, StoreError>> {
        self.0.complete(key, token, ttl)
    }
    fn release(&self, key: &str, token: &Token) -> BoxFuture<Result<(), StoreError>> {
        self.0.release(key, token)
    }
    fn release_detached(&self, key: &str, token: &Token) {
        self.0.release_detached(key, token)
    }
    fn complete_detached(&self, key: &str, token: &Token, ttl: Duration) {
        self.0.complete_detached(key, token, ttl)
    }
    fn hold(&self, key: &str, token: &Token, lease: Duration) -> Hold {
        self.0.hold(key, token, lease)
    }
}

mod redis {
    use super::redis_server::RedisServer;
    use super::*;
    use metigan_webhook::idempotency::RedisStore;

    /// A fresh server per test: tests run in parallel and one of them stops its server.
    async fn store() -> (RedisServer, RedisStore) {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url()).await.unwrap();
        (server, store)
    }

    shared_suite!(store);

    #[tokio::test]
    async fn dropped_while_completing_stays_done() {
        let (_server, store) = store().await;
        super::dropped_while_completing_stays_done(Dedupe::new(store)).await;
    }

    #[tokio::test]
    async fn unreachable_store_answers_503_or_fails_open() {
        let (mut server, store) = store().await;
        let (addr, handler) = serve(Dedupe::new(store.clone())).await;
        let (open_addr, open_handler) = serve(Dedupe::new(store).fail_open()).await;
        let event = body("email.delivered", Some("m-10"), "ok");
        assert_eq!(deliver(addr, &event).await.status, 200);

        server.stop();
        let other = body("email.delivered", Some("m-11"), "ok");
        let answer = deliver(addr, &other).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.text()
        );
        assert_eq!(answer.headers["retry-after"], "5");
        assert!(answer.text().starts_with("store_unavailable"));
        assert_eq!(
            handler.calls("email.delivered:m-11"),
            0,
            "not run while Redis is down"
        );

        // Fail-open: processed anyway (with a warning in the log).
        let answer = deliver(open_addr, &other).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(open_handler.calls("email.delivered:m-11"), 1);

        // Redis back: the retry is processed.
        server.restart();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = deliver(addr, &other).await;
            if answer.status == StatusCode::OK {
                break;
            }
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(tokio::time::Instant::now() < deadline, "store reconnects");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(handler.calls("email.delivered:m-11"), 1);
    }

    /// Only the token holding a key can complete or release it; a lapsed holder cannot touch
    /// the claim that replaced it; completing a key whose claim expired marks it done.
    #[tokio::test]
    async fn tokens_own_their_claims() {
        let (_server, store) = store().await;
        let (t1, t2) = (new_token(), new_token());
        let claim =
            |token: &Token, lease: u64| store.claim("k", token, Duration::from_millis(lease));
        assert_eq!(claim(&t1, 100).await.unwrap(), Claim::Acquired);
        assert_eq!(claim(&t2, 60_000).await.unwrap(), Claim::InFlight);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            claim(&t2, 60_000).await.unwrap(),
            Claim::Acquired,
            "t1's lease ran out"
        );
        store.release("k", &t1).await.unwrap();
        store
            .complete("k", &t1, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            claim(&new_token(), 60_000).await.unwrap(),
            Claim::InFlight,
            "still t2's"
        );
        store
            .complete("k", &t2, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(claim(&new_token(), 60_000).await.unwrap(), Claim::Done);
        // A key nobody holds any more (lease expired) is marked done by its last holder.
        let t3 = new_token();
        assert_eq!(
            store
                .claim("k2", &t3, Duration::from_millis(50))
                .await
                .unwrap(),
            Claim::Acquired
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        store
            .complete("k2", &t3, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            store
                .claim("k2", &new_token(), Duration::from_secs(1))
                .await
                .unwrap(),
            Claim::Done
        );
    }

    #[tokio::test]
    async fn connect_fails_fast_when_unreachable() {
        let server = RedisServer::start();
        let url = server.url();
        drop(server);
        let started = std::time::Instant::now();
        let err = RedisStore::connect(&url).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("redis"), "{err}");
        let err = RedisStore::connect("redis://user:hunter2@127.0.0.1:1/")
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

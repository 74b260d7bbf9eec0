//! The admin router (feature `inbox-admin`) served on 127.0.0.1 over a real inbox file: each
//! endpoint's JSON as a worker drives events through every state, its errors, and `503` from a
//! store that cannot be read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use metigan_webhook::inbox::{
    admin, Appended, BoxFuture, ClaimRequest, Claimed, Counts, EventId, HandlerError, Inbox,
    InboxError, InboxStore, Lease, ListQuery, NewEvent, Page, Purged, Settle, StoredEvent,
};
use metigan_webhook::VerifiedEvent;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::common::{self, serve_axum, Answer};
use crate::{event, eventually, new_event, request, TempDir};

/// Sends `method path` (and `headers`) to the admin router at `addr`.
async fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    common::send(req.body(Full::new(Bytes::new())).unwrap()).await
}

/// The status and JSON of `method path`; every answer is JSON that no cache keeps.
async fn json_of(addr: SocketAddr, method: &str, path: &str) -> (StatusCode, Value) {
    let answer = call(addr, method, path, &[]).await;
    assert_eq!(
        answer.headers["content-type"], "application/json",
        "{method} {path}"
    );
    assert_eq!(answer.headers["cache-control"], "no-store");
    let value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", answer.text()));
    (answer.status, value)
}

async fn ok(addr: SocketAddr, method: &str, path: &str) -> Value {
    let (status, value) = json_of(addr, method, path).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}: {value}");
    value
}

/// The `{"error": ..}` of a refused request, checked to have `status`.
async fn refused(addr: SocketAddr, method: &str, path: &str, status: StatusCode) -> String {
    let (got, value) = json_of(addr, method, path).await;
    assert_eq!(got, status, "{method} {path}: {value}");
    let object = value.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{value}");
    object["error"].as_str().expect("a message").to_owned()
}

async fn stats(addr: SocketAddr) -> Value {
    ok(addr, "GET", "/inbox/stats").await
}

fn counts(queued: u64, running: u64, retrying: u64, dead: u64, done: u64) -> Value {
    json!({"queued": queued, "running": running, "retrying": retrying, "dead": dead,
           "done": done, "total": queued + running + retrying + dead + done})
}

/// Waits until the stats are `expected`.
async fn stats_become(addr: SocketAddr, expected: Value) {
    eventually(
        Duration::from_secs(10),
        &format!("stats {expected}"),
        || {
            let expected = expected.clone();
            async move { stats(addr).await == expected }
        },
    )
    .await;
}

/// Appends an event through the service; its id.
async fn deliver(inbox: &Inbox, message_id: &str) -> u64 {
    crate::deliver(inbox, message_id).await.get()
}

/// An RFC 3339 UTC time with milliseconds.
fn assert_time(value: &Value) {
    let text = value.as_str().unwrap_or_else(|| panic!("a time: {value}"));
    let bytes = text.as_bytes();
    assert_eq!(bytes.len(), 24, "{text}");
    assert!(
        text.ends_with('Z') && bytes[10] == b'T' && bytes[19] == b'.',
        "{text}"
    );
    assert!(text.starts_with("20"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_json_as_events_go_through_their_states() {
    let dir = TempDir::new("admin");
    let inbox = Inbox::open(dir.file()).unwrap();
    // Events whose messageId starts with `bad` fail permanently until the handler is fixed.
    let fixed = Arc::new(AtomicBool::new(false));
    let worker = inbox
        .worker()
        .spawn_fn({
            let fixed = fixed.clone();
            move |event: VerifiedEvent| {
                let fails = !fixed.load(Ordering::SeqCst)
                    && event.message_id().is_some_and(|id| id.starts_with("bad"));
                async move {
                    if fails {
                        return Err(HandlerError::permanent("smtp relay refused\nfake: line"));
                    }
                    Ok(())
                }
            }
        })
        .unwrap();
    let addr = serve_axum(admin::router(inbox.clone())).await;

    assert_eq!(stats(addr).await, counts(0, 0, 0, 0, 0));
    let ok_1 = deliver(&inbox, "ok-1").await;
    let bad_1 = deliver(&inbox, "bad-1").await;
    let ok_2 = deliver(&inbox, "ok-2").await;
    stats_become(addr, counts(0, 0, 0, 1, 2)).await;

    // The dead letter, listed without its body.
    let page = ok(addr, "GET", "/inbox/events?state=dead").await;
    assert_eq!(page["next_cursor"], Value::Null, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    let dead = &events[0];
    assert_eq!(dead["id"], bad_1);
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["event_type"], "email.delivered");
    assert_eq!(dead["message_id"], "bad-1");
    assert_eq!(dead["key"], "email.delivered:bad-1");
    assert_eq!(dead["webhook_id"], "wh_test");
    assert_eq!(dead["secret_index"], 0);
    assert!(dead["signed_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["replays"], 0);
    assert_eq!(dead["last_error"], "smtp relay refused\nfake: line");
    assert_eq!(dead["due_at"], Value::Null);
    assert_time(&dead["received_at"]);
    assert_time(&dead["finished_at"]);
    assert!(dead.get("body").is_none(), "{dead}");

    // Pages follow each other by cursor, oldest first.
    let first = ok(addr, "GET", "/inbox/events?limit=2").await;
    let ids: Vec<_> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [ok_1, bad_1]);
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
    let second = ok(
        addr,
        "GET",
        &format!("/inbox/events?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(second["events"][0]["id"], ok_2);
    assert_eq!(second["events"].as_array().unwrap().len(), 1);
    let done = ok(addr, "GET", "/inbox/events?state=done&limit=1000").await;
    assert_eq!(done["events"].as_array().unwrap().len(), 2);
    assert!(done["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["state"] == "done" && e.get("body").is_none()));

    // One event: without its body unless asked.
    let shown = ok(addr, "GET", &format!("/inbox/events/{bad_1}")).await;
    assert_eq!(&shown, dead);
    let with_body = ok(addr, "GET", &format!("/inbox/events/{bad_1}?body=true")).await;
    let body = common::event_body("email.delivered", "bad-1");
    assert_eq!(with_body["body"], body.as_str());
    assert_eq!(with_body["body_encoding"], "utf-8");
    assert_eq!(with_body["body_bytes"], body.len());
    assert_eq!(with_body["id"], bad_1);

    // Replaying what is not a dead letter, or nothing.
    let error = refused(
        addr,
        "POST",
        &format!("/inbox/events/{ok_1}/replay"),
        StatusCode::CONFLICT,
    )
    .await;
    assert!(error.contains("is done, not dead"), "{error}");
    let error = refused(
        addr,
        "POST",
        "/inbox/events/999/replay",
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(error, "no event 999");
    refused(addr, "GET", "/inbox/events/999", StatusCode::NOT_FOUND).await;
    assert_eq!(stats(addr).await, counts(0, 0, 0, 1, 2));

    // Fixed, the dead letter is replayed and processed; its key and id are kept.
    fixed.store(true, Ordering::SeqCst);
    let replayed = ok(addr, "POST", &format!("/inbox/events/{bad_1}/replay")).await;
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    assert_eq!(replayed["event"]["id"], bad_1);
    assert_eq!(replayed["event"]["replays"], 1);
    assert_eq!(replayed["event"]["key"], "email.delivered:bad-1");
    assert_ne!(replayed["event"]["state"], "dead");
    stats_become(addr, counts(0, 0, 0, 0, 3)).await;
    let shown = ok(addr, "GET", &format!("/inbox/events/{bad_1}")).await;
    assert_eq!(shown["state"], "done");
    assert_eq!(shown["replays"], 1);
    // A second replay of it is refused: it is no longer dead.
    refused(
        addr,
        "POST",
        &format!("/inbox/events/{bad_1}/replay"),
        StatusCode::CONFLICT,
    )
    .await;

    // Broken again: two more dead letters, replayed together once fixed.
    fixed.store(false, Ordering::SeqCst);
    deliver(&inbox, "bad-2").await;
    deliver(&inbox, "bad-3").await;
    stats_become(addr, counts(0, 0, 0, 2, 3)).await;
    fixed.store(true, Ordering::SeqCst);
    assert_eq!(
        ok(addr, "POST", "/inbox/replay").await,
        json!({"replayed": 2})
    );
    stats_become(addr, counts(0, 0, 0, 0, 5)).await;
    assert_eq!(
        ok(addr, "POST", "/inbox/replay").await,
        json!({"replayed": 0})
    );

    // Purge: nothing is an hour old; everything done is at least 0 s old. Keys stay.
    assert_eq!(
        ok(addr, "POST", "/inbox/purge?older_than_secs=3600").await,
        json!({"purged_events": 0, "purged_keys": 0})
    );
    assert_eq!(
        ok(addr, "POST", "/inbox/purge?older_than_secs=0").await,
        json!({"purged_events": 5, "purged_keys": 0})
    );
    assert_eq!(stats(addr).await, counts(0, 0, 0, 0, 0));
    refused(
        addr,
        "GET",
        &format!("/inbox/events/{ok_1}"),
        StatusCode::NOT_FOUND,
    )
    .await;
    // The key outlives its event: a retried delivery is still a duplicate.
    let response = inbox
        .service()
        .oneshot(request(event(Some("ok-1"))))
        .await
        .unwrap();
    assert!(matches!(
        response.extensions().get::<Appended>(),
        Some(Appended::Duplicate(_))
    ));
    assert_eq!(stats(addr).await, counts(0, 0, 0, 0, 0));

    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_json_errors() {
    let dir = TempDir::new("admin-errors");
    let inbox = Inbox::open(dir.file()).unwrap();
    let id = deliver(&inbox, "m-1").await;
    let addr = serve_axum(admin::router(inbox.clone())).await;

    for (method, path, expected) in [
        (
            "GET",
            "/inbox/events?sate=dead",
            "unknown parameter \"sate\"",
        ),
        ("GET", "/inbox/events?state=deceased", "state: \"deceased\""),
        ("GET", "/inbox/events?limit=0", "limit: \"0\""),
        ("GET", "/inbox/events?limit=5000", "from 1 to 1000"),
        ("GET", "/inbox/events?cursor=abc", "cursor: \"abc\""),
        ("GET", "/inbox/events/abc", "\"abc\" is not an event id"),
        ("GET", "/inbox/events/1?body=yes", "body: \"yes\""),
        ("GET", "/inbox/stats?all=1", "unknown parameter \"all\""),
        ("POST", "/inbox/replay?all=true", "unknown parameter"),
        ("POST", "/inbox/events/x/replay", "\"x\" is not an event id"),
        ("POST", "/inbox/purge", "older_than_secs is required"),
        (
            "POST",
            "/inbox/purge?older_than_secs=7d",
            "\"7d\" is not a number",
        ),
    ] {
        let error = refused(addr, method, path, StatusCode::BAD_REQUEST).await;
        assert!(error.contains(expected), "{method} {path}: {error}");
    }

    // A web page cannot call it, not even to read.
    for (method, path) in [
        ("GET", "/inbox/stats".to_owned()),
        ("GET", format!("/inbox/events/{id}?body=true")),
        ("POST", "/inbox/replay".to_owned()),
        ("POST", "/inbox/purge?older_than_secs=0".to_owned()),
    ] {
        let answer = call(addr, method, &path, &[("origin", "https://evil.example")]).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
        let value: Value = serde_json::from_slice(&answer.body).unwrap();
        assert!(value["error"].as_str().unwrap().contains("web pages"));
    }

    // Methods it does not take, with what it takes; paths it does not serve (an empty 404:
    // no fallback of its own, so that the router merges into an application's).
    for (method, path, allow) in [
        ("GET", "/inbox/replay".to_owned(), "POST"),
        ("GET", format!("/inbox/events/{id}/replay"), "POST"),
        ("PUT", "/inbox/purge?older_than_secs=0".to_owned(), "POST"),
        ("DELETE", format!("/inbox/events/{id}"), "GET, HEAD"),
        ("POST", "/inbox/stats".to_owned(), "GET, HEAD"),
        ("POST", "/inbox/events".to_owned(), "GET, HEAD"),
    ] {
        let error = refused(addr, method, &path, StatusCode::METHOD_NOT_ALLOWED).await;
        assert!(error.contains(allow), "{method} {path}: {error}");
        let answer = call(addr, method, &path, &[]).await;
        assert_eq!(answer.headers["allow"], allow, "{method} {path}");
    }
    assert_eq!(
        call(addr, "GET", "/inbox", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // Nothing changed.
    assert_eq!(stats(addr).await["queued"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_utf8_is_shown_in_base64() {
    let dir = TempDir::new("admin-base64");
    let inbox = Inbox::open(dir.file()).unwrap();
    let mut record = new_event(Some("m-1"));
    record.body = Bytes::from_static(b"{\"a\":\"\xff\xfe\"}");
    let id = inbox.store().append(record).await.unwrap().id();
    let addr = serve_axum(admin::router(inbox.clone())).await;

    let shown = ok(addr, "GET", &format!("/inbox/events/{id}?body=1")).await;
    assert_eq!(shown["body_encoding"], "base64");
    assert_eq!(shown["body"], "eyJhIjoi//4ifQ==");
    assert_eq!(shown["body_bytes"], 10);
    let shown = ok(addr, "GET", &format!("/inbox/events/{id}?body=false")).await;
    assert!(shown.get("body").is_none());
}

/// A store whose every operation fails, as a full or broken disk would.
struct BrokenStore;

fn broken<T: Send + 'static>() -> BoxFuture<Result<T, InboxError>> {
    Box::pin(async { Err(InboxError::storage("the disk is on fire")) })
}

impl InboxStore for BrokenStore {
    fn append(&self, _: NewEvent) -> BoxFuture<Result<Appended, InboxError>> {
        broken()
    }
    fn claim(&self, _: ClaimRequest) -> BoxFuture<Result<Claimed, InboxError>> {
        broken()
    }
    fn renew(&self, _: Lease, _: Duration) -> BoxFuture<Result<bool, InboxError>> {
        broken()
    }
    fn settle(&self, _: Lease, _: Settle) -> BoxFuture<Result<bool, InboxError>> {
        broken()
    }
    fn counts(&self) -> BoxFuture<Result<Counts, InboxError>> {
        broken()
    }
    fn list(&self, _: ListQuery) -> BoxFuture<Result<Page, InboxError>> {
        broken()
    }
    fn get(&self, _: EventId, _: bool) -> BoxFuture<Result<Option<StoredEvent>, InboxError>> {
        broken()
    }
    fn replay(&self, _: EventId) -> BoxFuture<Result<bool, InboxError>> {
        broken()
    }
    fn replay_dead(&self) -> BoxFuture<Result<u64, InboxError>> {
        broken()
    }
    fn purge(&self, _: Duration, _: usize) -> BoxFuture<Result<Purged, InboxError>> {
        broken()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_answers_503() {
    let addr = serve_axum(admin::router(Inbox::new(BrokenStore))).await;
    for (method, path) in [
        ("GET", "/inbox/stats"),
        ("GET", "/inbox/events?state=dead"),
        ("GET", "/inbox/events/1"),
        ("GET", "/inbox/events/1?body=true"),
        ("POST", "/inbox/events/1/replay"),
        ("POST", "/inbox/replay"),
        ("POST", "/inbox/purge?older_than_secs=60"),
    ] {
        let error = refused(addr, method, path, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(error, "inbox: the disk is on fire", "{method} {path}");
    }
}

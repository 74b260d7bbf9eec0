//! The inbox service: 200 only after a commit, 503 when the store cannot commit, duplicates
//! and keyless events, and the answer to a request that was not verified.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use metigan_webhook::idempotency::DedupeKey;
use metigan_webhook::inbox::{
    Appended, BoxFuture, ClaimRequest, Claimed, Counts, EventId, FileStore, Inbox, InboxError,
    InboxStore, Lease, ListQuery, NewEvent, Page, Purged, Settle, StoredEvent,
};
use metigan_webhook::VerifiedBody;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::{event, request, TempDir};

/// A store around another that can fail every append, or hold each one until released.
struct Faulty<S> {
    inner: Arc<S>,
    fail: Arc<AtomicBool>,
    gate: Option<Arc<Semaphore>>,
}

impl<S: InboxStore> InboxStore for Faulty<S> {
    fn append(&self, event: NewEvent) -> BoxFuture<Result<Appended, InboxError>> {
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async { Err(InboxError::storage("injected: the disk is gone")) });
        }
        let (inner, gate) = (self.inner.clone(), self.gate.clone());
        Box::pin(async move {
            // Held before the inner store sees the event: nothing is written meanwhile.
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            inner.append(event).await
        })
    }
    fn claim(&self, request: ClaimRequest) -> BoxFuture<Result<Claimed, InboxError>> {
        self.inner.claim(request)
    }
    fn renew(&self, lease: Lease, duration: Duration) -> BoxFuture<Result<bool, InboxError>> {
        self.inner.renew(lease, duration)
    }
    fn settle(&self, lease: Lease, outcome: Settle) -> BoxFuture<Result<bool, InboxError>> {
        self.inner.settle(lease, outcome)
    }
    fn counts(&self) -> BoxFuture<Result<Counts, InboxError>> {
        self.inner.counts()
    }
    fn list(&self, query: ListQuery) -> BoxFuture<Result<Page, InboxError>> {
        self.inner.list(query)
    }
    fn get(&self, id: EventId, body: bool) -> BoxFuture<Result<Option<StoredEvent>, InboxError>> {
        self.inner.get(id, body)
    }
    fn replay(&self, id: EventId) -> BoxFuture<Result<bool, InboxError>> {
        self.inner.replay(id)
    }
    fn replay_dead(&self) -> BoxFuture<Result<u64, InboxError>> {
        self.inner.replay_dead()
    }
    fn purge(&self, retention: Duration, limit: usize) -> BoxFuture<Result<Purged, InboxError>> {
        self.inner.purge(retention, limit)
    }
}

/// `InboxStore::settle_many`'s default (one `settle` after the other, as a store that does not
/// write them together gets it) answers like the file store's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_settle_many_answers_each_settlement_like_settle() {
    let dir = TempDir::new("default-settle-many");
    let store = Faulty {
        inner: Arc::new(FileStore::open(dir.file()).unwrap()),
        fail: Arc::default(),
        gate: None,
    };
    crate::suite::settle_many_answers_each_settlement_like_settle(store).await;
}

async fn post(inbox: &Inbox, message_id: Option<&str>) -> http::Response<Vec<u8>> {
    let response = inbox
        .service()
        .oneshot(request(event(message_id)))
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    http::Response::from_parts(parts, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_waits_for_the_commit() {
    let dir = TempDir::new("gate");
    let gate = Arc::new(Semaphore::new(0));
    let store = Faulty {
        inner: Arc::new(FileStore::open(dir.file()).unwrap()),
        fail: Arc::default(),
        gate: Some(gate.clone()),
    };
    let inbox = Inbox::new(store);
    let pending = tokio::spawn({
        let inbox = inbox.clone();
        async move { post(&inbox, Some("m-1")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "no answer before the store commits");
    assert_eq!(inbox.counts().await.unwrap().total(), 0);
    gate.add_permits(1);
    let response = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(inbox.counts().await.unwrap().queued, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_200_is_synced_and_readable_when_it_is_answered() {
    let dir = TempDir::new("synced");
    let store = Arc::new(FileStore::open(dir.file()).unwrap());
    let inbox = Inbox::new(store.clone());
    for n in 0..10 {
        let syncs = store.stats().syncs;
        let response = post(&inbox, Some(&format!("m-{n}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(store.stats().syncs > syncs, "synced before the answer");
        let appended = *response.extensions().get::<Appended>().unwrap();
        assert!(inbox.get(appended.id()).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_answers_503_with_retry_after() {
    let dir = TempDir::new("faulty");
    let fail = Arc::new(AtomicBool::new(true));
    let store = Faulty {
        inner: Arc::new(FileStore::open(dir.file()).unwrap()),
        fail: fail.clone(),
        gate: None,
    };
    let inbox = Inbox::builder()
        .retry_after(Duration::from_secs(7))
        .store(store);
    for message_id in [Some("m-1"), None] {
        let response = post(&inbox, message_id).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "7");
        let body = String::from_utf8(response.into_body()).unwrap();
        assert!(body.starts_with("inbox_unavailable"), "{body}");
    }
    assert_eq!(inbox.counts().await.unwrap().total(), 0);
    // Once the store works again, Metigan's retry is stored (the key was never taken).
    fail.store(false, Ordering::SeqCst);
    assert_eq!(post(&inbox, Some("m-1")).await.status(), StatusCode::OK);
    assert_eq!(inbox.counts().await.unwrap().queued, 1);
}

/// A tmpfs of 4 MiB mounted on a directory, unmounted when dropped; `None` when this process
/// may not mount (not root, or no mount capability).
struct SmallFs(TempDir);

impl SmallFs {
    fn mount() -> Option<SmallFs> {
        let dir = TempDir::new("smallfs");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A real storage failure, not an injected one: the file system fills up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_file_system_answers_503_never_2xx() {
    let Some(fs) = SmallFs::mount() else {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let path = fs.0.file();
    let inbox = Inbox::open(&path).unwrap();
    assert_eq!(post(&inbox, Some("before")).await.status(), StatusCode::OK);
    // Fill what is left of the file system.
    let filler = fs.0.path().join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    let mut refused = 0;
    for n in 0..50 {
        let response = post(&inbox, Some(&format!("full-{n}"))).await;
        match response.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert!(response.headers().contains_key("retry-after"));
            }
            StatusCode::OK => {
                // Answered 200: then it must really be stored.
                let appended = *response.extensions().get::<Appended>().unwrap();
                assert!(inbox.get(appended.id()).await.unwrap().is_some());
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "a full file system refused nothing");
    println!("full file system: {refused} of 50 appends answered 503");
    drop(inbox);
}

/// Fills what is left of the file system with `filler`.
fn fill(filler: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

/// A full disk poisons redb's database ("Previous I/O error"): once space is freed, the store
/// reopens its file by itself and appends are answered 200 again, with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_file_system_heals_once_space_is_freed() {
    let Some(fs) = SmallFs::mount() else {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let store = Arc::new(FileStore::open(fs.0.file()).unwrap());
    let inbox = Inbox::new(store.clone());
    let mut acknowledged = Vec::new();
    for n in 0..3 {
        let id = format!("before-{n}");
        assert_eq!(post(&inbox, Some(&id)).await.status(), StatusCode::OK);
        acknowledged.push(id);
    }
    let filler = fs.0.path().join("filler");
    fill(&filler);
    let mut refused = 0;
    for n in 0..50 {
        let id = format!("full-{n}");
        match post(&inbox, Some(&id)).await.status() {
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            StatusCode::OK => acknowledged.push(id),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "a full file system refused nothing");
    // Still refused while the disk is full: the reopening does not pretend.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = post(&inbox, Some("still-full")).await;
    match response.status() {
        StatusCode::SERVICE_UNAVAILABLE => {}
        StatusCode::OK => acknowledged.push("still-full".into()),
        other => panic!("unexpected {other}"),
    }

    // Space again: the same inbox, not reopened by hand, answers 200 within a few seconds.
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = post(&inbox, Some("after-0")).await.status();
        if status == StatusCode::OK {
            acknowledged.push("after-0".into());
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "still 503 10 s after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 1..5 {
        let id = format!("after-{n}");
        assert_eq!(post(&inbox, Some(&id)).await.status(), StatusCode::OK);
        acknowledged.push(id);
    }
    println!(
        "full file system: {refused} of 50 appends answered 503, then 200 again once space \
         was freed"
    );

    // Every acknowledged event is there, and a worker processes each of them.
    let stored = inbox.list(ListQuery::new().limit(1000)).await.unwrap();
    let mut ids: Vec<String> = stored
        .events
        .iter()
        .filter_map(|event| event.message_id.clone())
        .collect();
    ids.sort();
    let mut expected = acknowledged.clone();
    expected.sort();
    for id in &expected {
        assert!(ids.contains(id), "{id} was acknowledged but is not stored");
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let worker = inbox
        .worker()
        .spawn_fn({
            let seen = seen.clone();
            move |event: metigan_webhook::VerifiedEvent| {
                seen.lock()
                    .unwrap()
                    .push(event.message_id().unwrap_or_default().to_owned());
                async { Ok::<(), metigan_webhook::inbox::HandlerError>(()) }
            }
        })
        .unwrap();
    crate::eventually(Duration::from_secs(10), "every event processed", || {
        let (inbox, expected) = (inbox.clone(), expected.len() as u64);
        async move { inbox.counts().await.unwrap().done >= expected }
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let seen = seen.lock().unwrap().clone();
    for id in &expected {
        assert!(seen.contains(id), "{id} was not processed");
    }
    drop(inbox);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_answers_200_and_stores_one_record() {
    let dir = TempDir::new("dup");
    let inbox = Inbox::open(dir.file()).unwrap();
    let first = post(&inbox, Some("m-1")).await;
    let second = post(&inbox, Some("m-1")).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let id = first.extensions().get::<Appended>().unwrap().id();
    assert_eq!(
        second.extensions().get::<Appended>(),
        Some(&Appended::Duplicate(id))
    );
    assert_eq!(inbox.counts().await.unwrap().total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_message_id_are_always_appended() {
    let dir = TempDir::new("nokey");
    let inbox = Inbox::open(dir.file()).unwrap();
    for _ in 0..3 {
        let response = post(&inbox, None).await;
        assert!(matches!(
            response.extensions().get::<Appended>(),
            Some(Appended::Stored(_))
        ));
    }
    assert_eq!(inbox.counts().await.unwrap().queued, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_configurable_as_for_the_layer() {
    let dir = TempDir::new("key");
    let inbox = Inbox::builder()
        .key(DedupeKey::custom(|event, _parts| {
            event.recipient().map(|r| format!("recipient:{r}"))
        }))
        .open(dir.file())
        .unwrap();
    // Two message ids, one recipient: one record under this key.
    assert_eq!(post(&inbox, Some("m-1")).await.status(), StatusCode::OK);
    assert_eq!(post(&inbox, Some("m-2")).await.status(), StatusCode::OK);
    let page = inbox.list(ListQuery::new()).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(
        page.events[0].key.as_deref(),
        Some("recipient:jane@example.com")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_without_a_verified_event_answers_500_and_says_why() {
    let (logs, _guard) = crate::common::LogCapture::install();
    let dir = TempDir::new("unverified");
    let inbox = Inbox::open(dir.file()).unwrap();
    let req = http::Request::post("/")
        .body(VerifiedBody::default())
        .unwrap();
    let response = inbox.service().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(logs
        .text()
        .contains("put the inbox service behind MetiganSignatureLayer"));
    assert_eq!(inbox.counts().await.unwrap().total(), 0);
}

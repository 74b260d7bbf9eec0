//! The worker: retries with growing delays, dead letters, replay, leases (renewed, and taken
//! again after a crash), graceful shutdown, concurrency and wake-up latency.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use metigan_webhook::inbox::{
    Appended, Backoff, BoxFuture, ClaimRequest, Claimed, Counts, EventId, FileStore, HandlerError,
    Inbox, InboxError, InboxStore, Lease, ListQuery, NewEvent, Page, Purged, Settle, State,
    StoredEvent,
};
use metigan_webhook::VerifiedEvent;
use tower::ServiceExt;

use crate::{deliver, event, eventually, new_event, request, TempDir};

/// `worker_suite!(make)` turns the behaviours below into tests of the worker over one store
/// (`make().await` returns an inbox on a fresh store and a guard kept alive for the test): the
/// file store here, the PostgreSQL store in `postgres.rs`.
macro_rules! worker_suite {
    ($make:path) => {
        worker_suite!(@tests $make;
            a_failing_handler_is_retried_with_growing_delays_then_processed_once,
            a_permanent_error_makes_a_dead_letter_at_once,
            after_the_last_attempt_the_event_is_dead_with_its_last_error_and_count,
            a_replayed_dead_letter_is_processed_once_the_handler_is_fixed,
            retry_after_sets_the_next_delay_and_a_panic_is_retried,
            a_handler_slower_than_its_lease_is_not_run_twice,
            a_killed_workers_event_is_taken_again_once_its_lease_runs_out,
            graceful_shutdown_waits_until_its_deadline_then_gives_events_back,
            concurrency_bounds_the_handlers_running_at_once,
            a_stored_body_that_is_not_an_envelope_is_a_dead_letter,
            a_new_event_wakes_the_worker_at_once,
            purge_keeps_keys_and_dead_letters
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (inbox, _guard) = $make().await;
                tokio::time::timeout(
                    std::time::Duration::from_secs(60),
                    crate::worker::$name(inbox),
                )
                .await
                .expect("the test finished within 60 s");
            }
        )*
    };
}

/// The worker over the file store.
mod file {
    use metigan_webhook::inbox::Inbox;

    use crate::TempDir;

    async fn file_inbox() -> (Inbox, TempDir) {
        let dir = TempDir::new("worker");
        (Inbox::open(dir.file()).unwrap(), dir)
    }

    worker_suite!(file_inbox);
}

async fn shown(inbox: &Inbox, id: EventId) -> StoredEvent {
    inbox.get(id).await.unwrap().expect("stored")
}

async fn wait_for_state(inbox: &Inbox, id: EventId, state: State, within: Duration) {
    eventually(within, &format!("event {id} {state}"), || async {
        shown(inbox, id).await.state == state
    })
    .await;
}

/// When each call of a handler started.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Instant>>>);

impl Calls {
    /// Records a call; its number, from 1.
    fn record(&self) -> usize {
        let mut calls = self.0.lock().unwrap();
        calls.push(Instant::now());
        calls.len()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn times(&self) -> Vec<Instant> {
        self.0.lock().unwrap().clone()
    }
}

pub async fn a_failing_handler_is_retried_with_growing_delays_then_processed_once(inbox: Inbox) {
    let calls = Calls::default();
    let worker = inbox
        .worker()
        .backoff(Backoff::new(
            Duration::from_millis(300),
            Duration::from_secs(60),
        ))
        .spawn_fn({
            let calls = calls.clone();
            move |_event: VerifiedEvent| {
                let n = calls.record();
                async move {
                    if n <= 3 {
                        return Err(HandlerError::transient(format!("failure {n}")));
                    }
                    Ok(())
                }
            }
        })
        .unwrap();
    let id = deliver(&inbox, "m-retry").await;
    wait_for_state(&inbox, id, State::Done, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls.count(),
        4,
        "three failures, one success, nothing after"
    );
    let times = calls.times();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    println!("retry delays: {gaps:?}");
    // Nominal 300, 600, 1200 ms, each within ±25 %.
    assert!(gaps[0] >= Duration::from_millis(225), "{gaps:?}");
    assert!(gaps[0] < gaps[1] && gaps[1] < gaps[2], "growing: {gaps:?}");
    let event = shown(&inbox, id).await;
    assert_eq!(event.attempts, 4);
    assert_eq!(event.last_error.as_deref(), Some("failure 3"));
    assert_eq!(worker.shutdown(Duration::from_secs(1)).await.abandoned, 0);
}

pub async fn a_permanent_error_makes_a_dead_letter_at_once(inbox: Inbox) {
    let calls = Calls::default();
    let worker = inbox
        .worker()
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(10),
        ))
        .spawn_fn({
            let calls = calls.clone();
            move |_event: VerifiedEvent| {
                calls.record();
                async { Err::<(), _>(HandlerError::permanent("unknown customer")) }
            }
        })
        .unwrap();
    let id = deliver(&inbox, "m-perm").await;
    wait_for_state(&inbox, id, State::Dead, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.count(), 1);
    let event = shown(&inbox, id).await;
    assert_eq!(event.attempts, 1);
    assert_eq!(event.last_error.as_deref(), Some("unknown customer"));
    worker.shutdown(Duration::from_secs(1)).await;
}

pub async fn after_the_last_attempt_the_event_is_dead_with_its_last_error_and_count(inbox: Inbox) {
    let calls = Calls::default();
    let worker = inbox
        .worker()
        .max_attempts(3)
        .backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_secs(1),
        ))
        .spawn_fn({
            let calls = calls.clone();
            move |_event: VerifiedEvent| {
                let n = calls.record();
                async move { Err::<(), _>(std::io::Error::other(format!("boom {n}"))) }
            }
        })
        .unwrap();
    let id = deliver(&inbox, "m-max").await;
    wait_for_state(&inbox, id, State::Dead, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(calls.count(), 3);
    let event = shown(&inbox, id).await;
    assert_eq!(event.attempts, 3);
    assert_eq!(event.last_error.as_deref(), Some("boom 3"));
    let dead = inbox
        .list(ListQuery::new().state(State::Dead))
        .await
        .unwrap();
    assert_eq!(dead.events.len(), 1);
    worker.shutdown(Duration::from_secs(1)).await;
}

pub async fn a_replayed_dead_letter_is_processed_once_the_handler_is_fixed(inbox: Inbox) {
    let fixed = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(AtomicUsize::new(0));
    let worker = inbox
        .worker()
        .max_attempts(2)
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(10),
        ))
        .spawn_fn({
            let (fixed, successes) = (fixed.clone(), successes.clone());
            move |_event: VerifiedEvent| {
                let ok = fixed.load(Ordering::SeqCst);
                if ok {
                    successes.fetch_add(1, Ordering::SeqCst);
                }
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err(HandlerError::transient("the CRM rejects it"))
                    }
                }
            }
        })
        .unwrap();
    let id = deliver(&inbox, "m-fixme").await;
    wait_for_state(&inbox, id, State::Dead, Duration::from_secs(5)).await;
    fixed.store(true, Ordering::SeqCst);
    assert!(inbox.replay(id).await.unwrap());
    wait_for_state(&inbox, id, State::Done, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(successes.load(Ordering::SeqCst), 1);
    let event = shown(&inbox, id).await;
    assert_eq!((event.replays, event.attempts), (1, 1));
    assert_eq!(event.key.as_deref(), Some("email.delivered:m-fixme"));
    worker.shutdown(Duration::from_secs(1)).await;
}

pub async fn retry_after_sets_the_next_delay_and_a_panic_is_retried(inbox: Inbox) {
    let calls = Calls::default();
    // The default backoff would wait 30 s: only the handler's own delay brings it back soon.
    let worker = inbox
        .worker()
        .spawn_fn({
            let calls = calls.clone();
            move |_event: VerifiedEvent| {
                let n = calls.record();
                async move {
                    match n {
                        1 => Err(HandlerError::retry_after(
                            Duration::from_millis(300),
                            "rate limited",
                        )),
                        2 => panic!("handler bug"),
                        _ => Ok(()),
                    }
                }
            }
        })
        .unwrap();
    let id = deliver(&inbox, "m-later").await;
    // The panic's retry then waits for the default backoff (30 s): it stays retrying.
    eventually(Duration::from_secs(5), "second call", || async {
        calls.count() >= 2
    })
    .await;
    let times = calls.times();
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(290) && gap < Duration::from_secs(3),
        "{gap:?}"
    );
    wait_for_state(&inbox, id, State::Retrying, Duration::from_secs(5)).await;
    let event = shown(&inbox, id).await;
    assert_eq!(event.last_error.as_deref(), Some("the handler panicked"));
    assert_eq!(event.attempts, 2);
    worker.shutdown(Duration::from_secs(1)).await;
}

pub async fn a_handler_slower_than_its_lease_is_not_run_twice(inbox: Inbox) {
    let calls = Calls::default();
    let handler = {
        let calls = calls.clone();
        move |_event: VerifiedEvent| {
            calls.record();
            async {
                tokio::time::sleep(Duration::from_millis(2000)).await;
                Ok::<(), HandlerError>(())
            }
        }
    };
    // Two workers on one inbox, each ready to take an expired lease at once.
    let lease = Duration::from_millis(600);
    let first = inbox
        .worker()
        .lease(lease)
        .spawn_fn(handler.clone())
        .unwrap();
    let second = inbox.worker().lease(lease).spawn_fn(handler).unwrap();
    let id = deliver(&inbox, "m-slow").await;
    wait_for_state(&inbox, id, State::Done, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.count(), 1, "renewed every 200 ms, never taken again");
    assert_eq!(shown(&inbox, id).await.attempts, 1);
    first.shutdown(Duration::from_secs(1)).await;
    second.shutdown(Duration::from_secs(1)).await;
}

pub async fn a_killed_workers_event_is_taken_again_once_its_lease_runs_out(inbox: Inbox) {
    let lease = Duration::from_millis(400);
    let started = Arc::new(tokio::sync::Notify::new());
    let doomed = inbox
        .worker()
        .lease(lease)
        .spawn_fn({
            let started = started.clone();
            move |_event: VerifiedEvent| {
                started.notify_one();
                std::future::pending::<Result<(), HandlerError>>()
            }
        })
        .unwrap();
    let appended_at = Instant::now();
    let id = deliver(&inbox, "m-crash").await;
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .unwrap();
    drop(doomed); // the crash: no release, no settle

    let calls = Calls::default();
    let rescuer = inbox
        .worker()
        .lease(lease)
        .spawn_fn({
            let calls = calls.clone();
            move |_event: VerifiedEvent| {
                calls.record();
                async { Ok::<(), HandlerError>(()) }
            }
        })
        .unwrap();
    wait_for_state(&inbox, id, State::Done, Duration::from_secs(5)).await;
    let taken_after = calls.times()[0] - appended_at;
    println!("a crashed worker's event was taken again {taken_after:?} after its append");
    assert!(
        taken_after >= lease,
        "not before the lease ran out: {taken_after:?}"
    );
    assert!(
        taken_after < lease + Duration::from_secs(2),
        "soon after it ran out: {taken_after:?}"
    );
    assert_eq!(calls.count(), 1);
    assert_eq!(shown(&inbox, id).await.attempts, 2);
    rescuer.shutdown(Duration::from_secs(1)).await;
}

pub async fn graceful_shutdown_waits_until_its_deadline_then_gives_events_back(inbox: Inbox) {
    let medium = deliver(&inbox, "medium").await;
    let slow = deliver(&inbox, "slow").await;
    let waiting = deliver(&inbox, "waiting").await;
    let calls = Calls::default();
    let worker = inbox
        .worker()
        .concurrency(2)
        .spawn_fn({
            let calls = calls.clone();
            move |event: VerifiedEvent| {
                calls.record();
                let pause = match event.message_id() {
                    Some("medium") => Duration::from_millis(300),
                    _ => Duration::from_secs(60),
                };
                async move {
                    tokio::time::sleep(pause).await;
                    Ok::<(), HandlerError>(())
                }
            }
        })
        .unwrap();
    eventually(Duration::from_secs(5), "two handlers started", || async {
        calls.count() == 2
    })
    .await;
    let started = Instant::now();
    let report = worker.shutdown(Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert_eq!(
        (report.finished, report.released, report.abandoned),
        (1, 1, 0),
        "{report:?}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        calls.count(),
        2,
        "no new event taken after the shutdown began"
    );
    assert_eq!(shown(&inbox, medium).await.state, State::Done);
    let released = shown(&inbox, slow).await;
    assert_eq!((released.state, released.attempts), (State::Queued, 0));
    assert_eq!(shown(&inbox, waiting).await.state, State::Queued);

    // The next start runs what was left.
    let next = inbox
        .worker()
        .spawn_fn(|_event: VerifiedEvent| async { Ok::<(), HandlerError>(()) })
        .unwrap();
    wait_for_state(&inbox, slow, State::Done, Duration::from_secs(5)).await;
    wait_for_state(&inbox, waiting, State::Done, Duration::from_secs(5)).await;
    next.shutdown(Duration::from_secs(1)).await;
}

pub async fn concurrency_bounds_the_handlers_running_at_once(inbox: Inbox) {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    // A tower service as the handler.
    let service = tower::service_fn({
        let (running, most) = (running.clone(), most.clone());
        move |_event: VerifiedEvent| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        }
    });
    let worker = inbox.worker().concurrency(3).spawn(service).unwrap();
    for n in 0..12 {
        deliver(&inbox, &format!("m-{n}")).await;
    }
    eventually(Duration::from_secs(10), "all done", || async {
        inbox.counts().await.unwrap().done == 12
    })
    .await;
    assert_eq!(most.load(Ordering::SeqCst), 3);
    worker.shutdown(Duration::from_secs(1)).await;
}

/// Handlers that end together have their outcomes recorded together: the worker's settlements
/// share syncs (one per batch of handlers, not one per event), and each event is still done
/// only once its outcome is synced. On one runtime thread, as the benchmark's receiver runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn settlements_of_handlers_that_end_together_share_syncs() {
    const EVENTS: u64 = 512;
    const CONCURRENCY: usize = 4;
    let dir = TempDir::new("settle-batch");
    let file = Arc::new(FileStore::open(dir.file()).unwrap());
    let batches = Arc::new(Mutex::new(Vec::new()));
    let inbox = Inbox::builder().store(Recording {
        inner: file.clone(),
        batches: batches.clone(),
        panic_next: Arc::default(),
    });
    for n in 0..EVENTS {
        deliver(&inbox, &format!("m-{n}")).await;
    }
    let before = file.stats();
    let handled = Arc::new(AtomicUsize::new(0));
    let worker = inbox
        .worker()
        .concurrency(CONCURRENCY)
        .spawn_fn({
            let handled = handled.clone();
            move |_event: VerifiedEvent| {
                let handled = handled.clone();
                async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandlerError>(())
                }
            }
        })
        .unwrap();
    eventually(Duration::from_secs(30), "all done", || async {
        inbox.counts().await.unwrap().done == EVENTS
    })
    .await;
    worker.shutdown(Duration::from_secs(1)).await;
    let after = file.stats();
    let syncs = after.syncs - before.syncs;
    let per_event = syncs as f64 / EVENTS as f64;
    println!(
        "worker: {EVENTS} events at concurrency {CONCURRENCY}: {syncs} syncs ({per_event:.3} per \
         event), {} commits",
        after.commits - before.commits
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        EVENTS as usize,
        "each run once"
    );
    let batches = batches.lock().unwrap().clone();
    let settled: usize = batches.iter().sum();
    assert_eq!(
        settled, EVENTS as usize,
        "every outcome through settle_many"
    );
    assert!(
        batches.len() < EVENTS as usize / 2,
        "{} settle_many calls for {EVENTS} outcomes",
        batches.len()
    );
    // One sync per event without batching; about one per `CONCURRENCY` events with it.
    assert!(per_event < 0.5, "{per_event:.3} syncs per event");
}

/// A store whose `settle_many` panics once does not stop the worker: that batch fails, and its
/// handler's task records the outcome again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_panics_while_settling_fails_that_batch_only() {
    let dir = TempDir::new("settle-panic");
    let panic_next = Arc::new(AtomicBool::new(true));
    let inbox = Inbox::builder().store(Recording {
        inner: Arc::new(FileStore::open(dir.file()).unwrap()),
        batches: Arc::default(),
        panic_next: panic_next.clone(),
    });
    let calls = Calls::default();
    let worker = inbox
        .worker()
        .spawn_fn({
            let calls = calls.clone();
            move |_event: VerifiedEvent| {
                calls.record();
                async { Ok::<(), HandlerError>(()) }
            }
        })
        .unwrap();
    let first = deliver(&inbox, "m-1").await;
    wait_for_state(&inbox, first, State::Done, Duration::from_secs(10)).await;
    assert!(!panic_next.load(Ordering::SeqCst), "the panic happened");
    // The settler still works for the next event.
    let second = deliver(&inbox, "m-2").await;
    wait_for_state(&inbox, second, State::Done, Duration::from_secs(10)).await;
    assert_eq!(calls.count(), 2, "each handler ran once");
    worker.shutdown(Duration::from_secs(1)).await;
}

/// A store around the file store that records the size of each `settle_many` call, and panics
/// in the next one when `panic_next` is raised.
struct Recording {
    inner: Arc<FileStore>,
    batches: Arc<Mutex<Vec<usize>>>,
    panic_next: Arc<AtomicBool>,
}

impl InboxStore for Recording {
    fn append(&self, event: NewEvent) -> BoxFuture<Result<Appended, InboxError>> {
        self.inner.append(event)
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
    fn settle_many(
        &self,
        settlements: Vec<(Lease, Settle)>,
    ) -> BoxFuture<Vec<Result<bool, InboxError>>> {
        self.batches.lock().unwrap().push(settlements.len());
        if self.panic_next.swap(false, Ordering::SeqCst) {
            // Nothing reaches the file: the panic comes first.
            return Box::pin(async { panic!("injected: the store panics while settling") });
        }
        self.inner.settle_many(settlements)
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

pub async fn a_stored_body_that_is_not_an_envelope_is_a_dead_letter(inbox: Inbox) {
    let mut record = new_event(None);
    record.body = Bytes::from_static(b"not json");
    let id = inbox.store().append(record).await.unwrap().id();
    let calls = Calls::default();
    let worker = inbox
        .worker()
        .spawn_fn({
            let calls = calls.clone();
            move |_event: VerifiedEvent| {
                calls.record();
                async { Ok::<(), HandlerError>(()) }
            }
        })
        .unwrap();
    wait_for_state(&inbox, id, State::Dead, Duration::from_secs(5)).await;
    assert_eq!(calls.count(), 0);
    let event = shown(&inbox, id).await;
    assert!(event.last_error.unwrap().contains("not a Metigan envelope"));
    worker.shutdown(Duration::from_secs(1)).await;
}

/// A new event reaches an idle worker's handler at once: no polling delay.
pub async fn a_new_event_wakes_the_worker_at_once(inbox: Inbox) {
    let calls = Calls::default();
    let worker = inbox
        .worker()
        .poll_interval(Duration::from_secs(60))
        .spawn_fn({
            let calls = calls.clone();
            move |_event: VerifiedEvent| {
                calls.record();
                async { Ok::<(), HandlerError>(()) }
            }
        })
        .unwrap();
    let mut from_request = Vec::new();
    let mut from_answer = Vec::new();
    for n in 0..20 {
        // Let the worker settle into its idle wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        deliver(&inbox, &format!("m-{n}")).await;
        let answered = Instant::now();
        eventually(Duration::from_secs(2), "handler called", || async {
            calls.count() > n
        })
        .await;
        let called = calls.times()[n];
        from_request.push(called.saturating_duration_since(sent));
        from_answer.push(called.saturating_duration_since(answered));
    }
    from_request.sort();
    from_answer.sort();
    println!(
        "wake-up: request sent -> handler called: median {:?}, max {:?}; 200 received -> \
         handler called: median {:?}, max {:?}",
        from_request[10], from_request[19], from_answer[10], from_answer[19]
    );
    // Well under 100 ms; the bound on the slowest allows for a loaded CI machine.
    assert!(
        from_request[10] < Duration::from_millis(50),
        "{from_request:?}"
    );
    assert!(
        from_request[19] < Duration::from_millis(250),
        "{from_request:?}"
    );
    worker.shutdown(Duration::from_secs(1)).await;
}

pub async fn purge_keeps_keys_and_dead_letters(inbox: Inbox) {
    let worker = inbox
        .worker()
        .spawn_fn(|_event: VerifiedEvent| async { Ok::<(), HandlerError>(()) })
        .unwrap();
    let id = deliver(&inbox, "m-purge").await;
    wait_for_state(&inbox, id, State::Done, Duration::from_secs(5)).await;
    assert_eq!(
        inbox.purge(Duration::from_secs(3600)).await.unwrap().events,
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let purged = inbox.purge(Duration::from_millis(1)).await.unwrap();
    assert_eq!((purged.events, purged.keys), (1, 0));
    assert!(inbox.get(id).await.unwrap().is_none());
    // The key outlives the record: Metigan's late retry is still a duplicate.
    let response = inbox
        .service()
        .oneshot(request(event(Some("m-purge"))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.extensions().get::<Appended>(),
        Some(&Appended::Duplicate(id))
    );
    assert_eq!(inbox.store().counts().await.unwrap().total(), 0);
    worker.shutdown(Duration::from_secs(1)).await;
}

//! The receiver binary killed with SIGKILL under load, then restarted on the same inbox file:
//! every event that was answered 2xx is handled (its line printed), and only the handlers that
//! were running at the kill may run twice. Bounded: 2,000 events, 2 minutes at most.

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::Instant;

use common::now;
use receiver::{Receiver, TempDir, SECRET};

const PATH: &str = "/webhooks/metigan";
/// Unique events sent, by that many concurrent clients.
const EVENTS: usize = 2000;
const CLIENTS: usize = 64;
/// The receiver is killed once this many events are acknowledged.
const KILL_AFTER: usize = 800;
/// The worker's concurrency, low with a slow handler, so that a backlog builds up.
const CONCURRENCY: usize = 2;
const HANDLER_DELAY_MS: &str = "10";

fn body(i: usize) -> String {
    format!(
        r#"{{"event":"email.delivered","messageId":"crash-{i}","data":{{"recipient":"crash-{i}@example.com","subject":"Crash test"}},"timestamp":1700000000000}}"#
    )
}

/// The event a printed line is for.
fn index_of(line: &str) -> usize {
    line.strip_prefix("Email delivered to crash-")
        .and_then(|rest| rest.strip_suffix("@example.com"))
        .and_then(|i| i.parse().ok())
        .filter(|i| *i < EVENTS)
        .unwrap_or_else(|| panic!("an unexpected line: {line:?}"))
}

/// What the clients saw.
#[derive(Default)]
struct Sent {
    /// Events answered 2xx.
    acked: Mutex<Vec<usize>>,
    acks: AtomicUsize,
    /// Answers by status; transport errors (the kill) as 0.
    statuses: Mutex<BTreeMap<u16, usize>>,
}

/// Sends the events it takes from `next` until they run out or the receiver is gone; never
/// sends an event twice.
async fn client(
    addr: std::net::SocketAddr,
    next: Arc<AtomicUsize>,
    killed: Arc<AtomicBool>,
    sent: Arc<Sent>,
) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    while !killed.load(Ordering::SeqCst) {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= EVENTS {
            break;
        }
        let body = body(i);
        let signature = metigan_webhook::sign(SECRET, now(), body.as_bytes());
        let request = http::Request::post(format!("http://{addr}{PATH}"))
            .header("x-webhook-signature", signature)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), async {
            let response = client.request(request).await.ok()?;
            let status = response.status().as_u16();
            response.into_body().collect().await.ok()?;
            Some(status)
        })
        .await
        .ok()
        .flatten();
        *sent
            .statuses
            .lock()
            .unwrap()
            .entry(answer.unwrap_or(0))
            .or_default() += 1;
        match answer {
            Some(status) if (200..300).contains(&status) => {
                sent.acked.lock().unwrap().push(i);
                sent.acks.fetch_add(1, Ordering::SeqCst);
            }
            Some(status) => {
                assert!(
                    !killed.load(Ordering::SeqCst) && status == 503,
                    "event {i} answered {status}"
                );
            }
            // The receiver was killed: resend nothing.
            None => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_then_restart_handles_every_acknowledged_event() {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .expect("the crash test finishes within 2 minutes");
}

async fn run() {
    let dir = TempDir::new("crash");
    let inbox = dir.inbox();
    let concurrency = CONCURRENCY.to_string();
    let env = [
        ("INBOX_PATH", inbox.as_str()),
        ("INBOX_CONCURRENCY", concurrency.as_str()),
        ("HANDLER_DELAY_MS", HANDLER_DELAY_MS),
        // Short, so that the events running at the kill are taken again soon after the restart.
        ("INBOX_LEASE_SECS", "1"),
    ];
    let first = Receiver::start(&env).await;
    let addr = first.addr;

    let next = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Sent::default());
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        clients.spawn(client(addr, next.clone(), killed.clone(), sent.clone()));
    }
    while sent.acks.load(Ordering::SeqCst) < KILL_AFTER {
        if let Some(Err(e)) = clients.try_join_next() {
            std::panic::resume_unwind(e.into_panic());
        }
        assert!(
            !clients.is_empty(),
            "every event was sent before {KILL_AFTER} were acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let killed_at = started.elapsed();
    let acks_at_kill = sent.acks.load(Ordering::SeqCst);
    killed.store(true, Ordering::SeqCst);
    let (run1, _) = first.kill().await;
    while let Some(result) = clients.join_next().await {
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let acked: HashSet<usize> = sent.acked.lock().unwrap().iter().copied().collect();
    let mut printed: HashMap<usize, usize> = HashMap::new();
    for line in &run1 {
        *printed.entry(index_of(line)).or_default() += 1;
    }
    let printed_in_run1 = printed.len();
    let waiting = acked.iter().filter(|i| !printed.contains_key(i)).count();
    assert!(
        waiting > 0,
        "no backlog at the kill: every acknowledged event was already handled"
    );

    // Restart on the same file; nothing is sent again.
    let restarted = Instant::now();
    let mut second = Receiver::start(&env).await;
    let restart_took = restarted.elapsed();
    let mut run2 = Vec::new();
    let mut missing: HashSet<usize> = acked
        .iter()
        .copied()
        .filter(|i| !printed.contains_key(i))
        .collect();
    let deadline = restarted + Duration::from_secs(60);
    while !missing.is_empty() && Instant::now() < deadline {
        if let Some(line) = second.line_within(Duration::from_millis(200)).await {
            missing.remove(&index_of(&line));
            run2.push(line);
        }
    }
    let drained = restarted.elapsed();
    // Then until the inbox is quiet for longer than a lease: a handler that was running at the
    // kill runs again once its lease has run out, acknowledged or not.
    while let Some(line) = second.line_within(Duration::from_millis(1500)).await {
        run2.push(line);
    }
    run2.extend(second.stop().await.0);

    let mut printed_in_run2 = HashSet::new();
    for line in &run2 {
        let i = index_of(line);
        printed_in_run2.insert(i);
        *printed.entry(i).or_default() += 1;
    }
    let duplicates: usize = printed.values().map(|n| n - 1).sum();
    let statuses = sent.statuses.lock().unwrap().clone();
    println!(
        "crash test: {} requests sent by {CLIENTS} clients (answers by status, 0 = cut by the \
         kill: {statuses:?}); SIGKILL after {acks_at_kill} acknowledgements, {killed_at:?} into \
         the run; acknowledged in all: {}; handled in run 1: {printed_in_run1} (handler {HANDLER_DELAY_MS} \
         ms, concurrency {CONCURRENCY}), acknowledged but not handled at the kill: {waiting}; \
         restart took {restart_took:?}; handled in run 2: {}; every acknowledged event handled \
         {drained:?} after the restart; handled twice: {duplicates}; handled in all: {}",
        statuses.values().sum::<usize>(),
        acked.len(),
        printed_in_run2.len(),
        printed.len(),
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged events never handled, such as {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        printed.values().all(|n| *n <= 2),
        "an event handled three times"
    );
    assert!(
        duplicates <= CONCURRENCY,
        "{duplicates} events handled twice; at most the {CONCURRENCY} running at the kill may be"
    );
}

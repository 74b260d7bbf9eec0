//! Receivers sharing one PostgreSQL inbox (`DATABASE_URL`), as real processes against a real
//! PostgreSQL server started by each test: copies of one delivery spread over two receivers are
//! handled once; a receiver killed with SIGKILL leaves its acknowledged events to the other; a
//! PostgreSQL restart answers 503 while it is down and loses nothing. Each test is bounded (a
//! fixed number of events, two minutes at most).

mod common;
#[path = "common/postgres_server.rs"]
mod postgres_server;
#[path = "common/receiver.rs"]
mod receiver;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::Instant;

use common::now;
use postgres_server::PostgresServer;
use receiver::{Receiver, SECRET};

const PATH: &str = "/webhooks/metigan";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The body of event `i` of the run named `run`.
fn body(run: &str, i: usize) -> String {
    format!(
        r#"{{"event":"email.delivered","messageId":"{run}-{i}","data":{{"recipient":"{run}-{i}@example.com","subject":"Shared inbox"}},"timestamp":1700000000000}}"#
    )
}

/// The event a printed line is for.
fn index_of(run: &str, line: &str) -> usize {
    line.strip_prefix(&format!("Email delivered to {run}-"))
        .and_then(|rest| rest.strip_suffix("@example.com"))
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("an unexpected line: {line:?}"))
}

/// One signed delivery of event `i`; its status and `Retry-After`, or `None` when the
/// connection failed (a killed receiver) or no answer came within 20 s.
async fn deliver(
    client: &HttpClient,
    addr: SocketAddr,
    run: &str,
    i: usize,
) -> Option<(u16, Option<String>)> {
    let body = body(run, i);
    let signature = metigan_webhook::sign(SECRET, now(), body.as_bytes());
    let request = http::Request::post(format!("http://{addr}{PATH}"))
        .header("x-webhook-signature", signature)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        let response = client.request(request).await.ok()?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        response.into_body().collect().await.ok()?;
        Some((status, retry_after))
    })
    .await
    .ok()
    .flatten()
}

/// The database's URL for a receiver, and the settings every receiver here shares.
fn receiver_env(url: &str, concurrency: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", url.to_owned()),
        ("INBOX_CONCURRENCY", concurrency.to_owned()),
        ("HANDLER_DELAY_MS", "5".to_owned()),
        // Short, so that the events of a killed receiver are taken over soon.
        ("INBOX_LEASE_SECS", "1".to_owned()),
        // Quick retries of settlements that failed while PostgreSQL was down.
        ("INBOX_BACKOFF_SECS", "0.2".to_owned()),
    ]
}

async fn start_receiver(env: &[(&'static str, String)]) -> Receiver {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Receiver::start(&env).await
}

async fn start_postgres() -> PostgresServer {
    tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
}

/// Reads lines from every receiver until each of `wanted` has been printed (or `limit` passes),
/// then until all are quiet for `quiet`; returns how often each event was printed.
async fn collect_lines(
    run: &str,
    receivers: &mut [&mut Receiver],
    wanted: &HashSet<usize>,
    limit: Duration,
    quiet: Duration,
) -> HashMap<usize, usize> {
    let mut printed: HashMap<usize, usize> = HashMap::new();
    let deadline = Instant::now() + limit;
    let mut quiet_since = Instant::now();
    loop {
        let mut any = false;
        for receiver in receivers.iter_mut() {
            for line in receiver.take_lines() {
                *printed.entry(index_of(run, &line)).or_default() += 1;
                any = true;
            }
        }
        let now = Instant::now();
        if any {
            quiet_since = now;
        }
        let all_in = wanted.iter().all(|i| printed.contains_key(i));
        if (all_in && now - quiet_since >= quiet) || now >= deadline {
            return printed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_each_delivery_spread_over_two_receivers_are_handled_once() {
    tokio::time::timeout(Duration::from_secs(120), copies_are_handled_once())
        .await
        .expect("finished within 2 minutes");
}

async fn copies_are_handled_once() {
    const RUN: &str = "copies";
    const EVENTS: usize = 40;
    const COPIES: usize = 10;
    let postgres = start_postgres().await;
    let env = receiver_env(&postgres.url(), "4");
    let mut a = start_receiver(&env).await;
    let mut b = start_receiver(&env).await;
    let addrs = [a.addr, b.addr];
    // 400 deliveries at once: every copy of every event, alternating between the receivers.
    let client = http_client();
    let mut sends = JoinSet::new();
    for n in 0..EVENTS * COPIES {
        let (i, addr) = (n % EVENTS, addrs[n % 2]);
        let client = client.clone();
        sends.spawn(async move { (i, deliver(&client, addr, RUN, i).await) });
    }
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut answered_ok = HashSet::new();
    while let Some(sent) = sends.join_next().await {
        let (i, answer) = sent.unwrap();
        let (status, _) = answer.unwrap_or_else(|| panic!("no answer for a copy of event {i}"));
        *statuses.entry(status).or_default() += 1;
        // 409: a copy that arrived while the first was being stored by the same receiver; a
        // sender retries it later, as Metigan does.
        assert!(
            status == 200 || status == 409,
            "event {i} answered {status}"
        );
        if status == 200 {
            answered_ok.insert(i);
        }
    }
    assert_eq!(
        answered_ok.len(),
        EVENTS,
        "every event answered 200 at least once"
    );
    let wanted: HashSet<usize> = (0..EVENTS).collect();
    let printed = collect_lines(
        RUN,
        &mut [&mut a, &mut b],
        &wanted,
        Duration::from_secs(30),
        Duration::from_secs(2),
    )
    .await;
    let runs: usize = printed.values().sum();
    println!(
        "two receivers, one PostgreSQL inbox: {} deliveries ({EVENTS} events x {COPIES} copies, \
         alternating), answers {statuses:?}, handler runs {runs}",
        EVENTS * COPIES
    );
    assert_eq!(printed.len(), EVENTS, "every event handled");
    assert_eq!(
        runs, EVENTS,
        "exactly one handler run per event: {printed:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// What the clients of a stream saw.
#[derive(Default)]
struct Sent {
    /// Events answered 2xx, and by which receiver (0 or 1).
    acked: Mutex<Vec<(usize, usize)>>,
    acks: AtomicUsize,
    statuses: Mutex<BTreeMap<u16, usize>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_mid_stream_leaves_its_events_to_the_other() {
    tokio::time::timeout(Duration::from_secs(120), killed_receiver())
        .await
        .expect("finished within 2 minutes");
}

async fn killed_receiver() {
    const RUN: &str = "kill";
    const EVENTS: usize = 1000;
    const CLIENTS: usize = 32;
    const KILL_AFTER: usize = 400;
    const CONCURRENCY: usize = 2;
    let postgres = start_postgres().await;
    let env = receiver_env(&postgres.url(), "2");
    let first = start_receiver(&env).await;
    let mut survivor = start_receiver(&env).await;
    let addrs = [first.addr, survivor.addr];
    let next = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Sent::default());
    let client = http_client();
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let (next, killed, sent, client) =
            (next.clone(), killed.clone(), sent.clone(), client.clone());
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= EVENTS {
                    return;
                }
                // Alternating; once the first receiver is dead, the survivor only.
                let to = if killed.load(Ordering::SeqCst) {
                    1
                } else {
                    i % 2
                };
                let answer = deliver(&client, addrs[to], RUN, i).await;
                let status = answer.as_ref().map_or(0, |(status, _)| *status);
                *sent.statuses.lock().unwrap().entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    sent.acked.lock().unwrap().push((i, to));
                    sent.acks.fetch_add(1, Ordering::SeqCst);
                } else {
                    // Cut by the kill (0); no other answer is expected. Not sent again: an
                    // event never acknowledged need not be handled.
                    assert!(
                        status == 0 && to == 0,
                        "event {i} answered {status} by {to}"
                    );
                }
            }
        });
    }
    while sent.acks.load(Ordering::SeqCst) < KILL_AFTER {
        if let Some(Err(e)) = clients.try_join_next() {
            std::panic::resume_unwind(e.into_panic());
        }
        assert!(!clients.is_empty(), "the stream ended before the kill");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    killed.store(true, Ordering::SeqCst);
    let (first_lines, _) = first.kill().await;
    let acks_at_kill = sent.acks.load(Ordering::SeqCst);
    while let Some(result) = clients.join_next().await {
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let acked = sent.acked.lock().unwrap().clone();
    let acked_ids: HashSet<usize> = acked.iter().map(|(i, _)| *i).collect();
    let by_first: HashSet<usize> = acked
        .iter()
        .filter(|(_, to)| *to == 0)
        .map(|(i, _)| *i)
        .collect();
    let mut printed_by_first: HashMap<usize, usize> = HashMap::new();
    for line in &first_lines {
        *printed_by_first.entry(index_of(RUN, line)).or_default() += 1;
    }
    let left_by_first = by_first
        .iter()
        .filter(|i| !printed_by_first.contains_key(i))
        .count();
    assert!(
        left_by_first > 0,
        "the killed receiver had handled everything it acknowledged: no takeover to test"
    );
    let wanted: HashSet<usize> = acked_ids
        .iter()
        .copied()
        .filter(|i| !printed_by_first.contains_key(i))
        .collect();
    let printed_by_survivor = collect_lines(
        RUN,
        &mut [&mut survivor],
        &wanted,
        Duration::from_secs(60),
        Duration::from_millis(1500),
    )
    .await;
    let taken_over = by_first
        .iter()
        .filter(|i| !printed_by_first.contains_key(i) && printed_by_survivor.contains_key(i))
        .count();
    let mut printed = printed_by_first.clone();
    for (i, n) in &printed_by_survivor {
        *printed.entry(*i).or_default() += n;
    }
    let missing: Vec<usize> = acked_ids
        .iter()
        .copied()
        .filter(|i| !printed.contains_key(i))
        .collect();
    let twice: usize = printed.values().map(|n| n - 1).sum();
    let statuses = sent.statuses.lock().unwrap().clone();
    println!(
        "two receivers, one PostgreSQL inbox, one SIGKILLed after {acks_at_kill} \
         acknowledgements: answers {statuses:?} (0 = cut by the kill); acknowledged {} ({} by \
         the killed one, {left_by_first} of them not handled by it before the kill, \
         {taken_over} of those handled by the survivor); handled twice {twice}; never handled {}",
        acked_ids.len(),
        by_first.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged, never handled: {missing:?}"
    );
    assert_eq!(
        taken_over, left_by_first,
        "the survivor took every one over"
    );
    assert!(
        twice <= CONCURRENCY,
        "{twice} events handled twice; at most the {CONCURRENCY} running at the kill may be"
    );
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_stream_answers_503_while_down_and_loses_nothing() {
    tokio::time::timeout(Duration::from_secs(120), postgres_restart())
        .await
        .expect("finished within 2 minutes");
}

async fn postgres_restart() {
    const RUN: &str = "restart";
    const EVENTS: usize = 600;
    const CLIENTS: usize = 16;
    const STOP_AFTER: usize = 200;
    let mut postgres = start_postgres().await;
    let env = receiver_env(&postgres.url(), "4");
    let mut receiver = start_receiver(&env).await;
    let addr = receiver.addr;
    let next = Arc::new(AtomicUsize::new(0));
    // Set while PostgreSQL is known to be down (after the stop returned, before the start).
    let down = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Sent::default());
    let answers_while_down = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let client = http_client();
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let (next, down, sent, client, while_down) = (
            next.clone(),
            down.clone(),
            sent.clone(),
            client.clone(),
            answers_while_down.clone(),
        );
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= EVENTS {
                    return;
                }
                // As Metigan does: an event not answered 2xx is sent again, until it is.
                loop {
                    let was_down = down.load(Ordering::SeqCst);
                    let answer = deliver(&client, addr, RUN, i).await;
                    let still_down = down.load(Ordering::SeqCst);
                    let (status, retry_after) =
                        answer.unwrap_or_else(|| panic!("no answer for event {i}"));
                    *sent.statuses.lock().unwrap().entry(status).or_default() += 1;
                    if was_down && still_down {
                        *while_down.lock().unwrap().entry(status).or_default() += 1;
                        assert_eq!(
                            status, 503,
                            "event {i} answered {status} while PostgreSQL was down"
                        );
                    }
                    match status {
                        200..=299 => {
                            sent.acked.lock().unwrap().push((i, 0));
                            sent.acks.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        503 => {
                            assert!(retry_after.is_some(), "503 without Retry-After");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        // The first copy is still being stored: try again shortly.
                        409 => tokio::time::sleep(Duration::from_millis(50)).await,
                        other => panic!("event {i} answered {other}"),
                    }
                }
            }
        });
    }
    while sent.acks.load(Ordering::SeqCst) < STOP_AFTER {
        if let Some(Err(e)) = clients.try_join_next() {
            std::panic::resume_unwind(e.into_panic());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let acks_before = sent.acks.load(Ordering::SeqCst);
    let mut postgres = tokio::task::spawn_blocking(move || {
        postgres.stop();
        postgres
    })
    .await
    .unwrap();
    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    down.store(false, Ordering::SeqCst);
    let postgres = tokio::task::spawn_blocking(move || {
        postgres.start_again();
        postgres
    })
    .await
    .unwrap();
    while let Some(result) = clients.join_next().await {
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let while_down = answers_while_down.lock().unwrap().clone();
    assert!(
        while_down.get(&503).copied().unwrap_or(0) > 0,
        "no delivery was answered while PostgreSQL was down: {while_down:?}"
    );
    let acked: HashSet<usize> = sent.acked.lock().unwrap().iter().map(|(i, _)| *i).collect();
    assert_eq!(acked.len(), EVENTS, "every event acknowledged in the end");
    let printed = collect_lines(
        RUN,
        &mut [&mut receiver],
        &acked,
        Duration::from_secs(60),
        Duration::from_millis(1500),
    )
    .await;
    let twice: usize = printed.values().map(|n| n - 1).sum();
    let missing: Vec<usize> = acked
        .iter()
        .copied()
        .filter(|i| !printed.contains_key(i))
        .collect();
    let statuses = sent.statuses.lock().unwrap().clone();
    println!(
        "PostgreSQL stopped for 2 s after {acks_before} acknowledgements: answers to the \
         deliveries sent and answered while it was down {while_down:?}; answers in all \
         {statuses:?}; {} events acknowledged, handled {}, twice {twice}, never {}",
        acked.len(),
        printed.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged, never handled: {missing:?}"
    );
    receiver.stop().await;
    drop(postgres);
}

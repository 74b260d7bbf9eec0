//! Load and fault: a few hundred concurrent clients send thousands of requests (valid unique
//! and duplicated events, forged, stale and oversized ones) to the receiver with the Redis
//! store, while Redis is restarted once in the middle. Every valid event is processed exactly
//! once, every invalid one gets its status, and the only 5xx are the designed 503s.
//! Bounded: about 2,600 requests, 2 minutes at most.

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use receiver::{Receiver, SECRET};
use redis_server::RedisServer;

use common::now;

const UNIQUE: usize = 1200;
const CLIENTS: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    Forged,
    Stale,
    Oversized,
}

struct Job {
    kind: Kind,
    body: Bytes,
    /// Signed when sent (a retry is re-signed, as Metigan does), except for stale and forged.
    secret: &'static str,
    age: u64,
}

fn event(i: usize) -> String {
    format!(
        r#"{{"event":"email.delivered","messageId":"load-{i}","data":{{"recipient":"user-{i}@example.com","subject":"Load test {i}"}},"timestamp":1700000000000}}"#
    )
}

fn jobs() -> Vec<Job> {
    let mut jobs = Vec::new();
    for i in 0..UNIQUE {
        // Every event once, a third of them twice more: duplicates in flight and after.
        let copies = if i % 3 == 0 { 3 } else { 1 };
        for _ in 0..copies {
            jobs.push(Job {
                kind: Kind::Valid,
                body: Bytes::from(event(i)),
                secret: SECRET,
                age: 0,
            });
        }
    }
    for i in 0..300 {
        jobs.push(Job {
            kind: Kind::Forged,
            body: Bytes::from(event(10_000 + i)),
            secret: "whsec_attacker",
            age: 0,
        });
        jobs.push(Job {
            kind: Kind::Stale,
            body: Bytes::from(event(20_000 + i)),
            secret: SECRET,
            age: 3600,
        });
    }
    let big = Bytes::from(format!(
        r#"{{"event":"email.delivered","messageId":"big","data":{{"pad":"{}"}}}}"#,
        "x".repeat(1024 * 1024 + 100)
    ));
    for _ in 0..20 {
        jobs.push(Job {
            kind: Kind::Oversized,
            body: big.clone(),
            secret: SECRET,
            age: 0,
        });
    }
    // A fixed shuffle (xorshift), so the mix is the same every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..jobs.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        jobs.swap(i, (state % (i as u64 + 1)) as usize);
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_a_redis_restart_processes_every_event_once() {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .expect("the load test finishes within 2 minutes");
}

async fn run() {
    let mut redis = RedisServer::start_persistent();
    let mut receiver = Receiver::start(&[("REDIS_URL", &redis.url())]).await;
    let addr = receiver.addr;
    let jobs = jobs();
    let total = jobs.len();
    let queue = Arc::new(Mutex::new(jobs));
    let done = Arc::new(AtomicUsize::new(0));
    // status counts per kind, first answers and retries alike
    let seen: Arc<Mutex<BTreeMap<(Kind, u16), usize>>> = Arc::default();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let transport_errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (queue, done, seen, client) =
            (queue.clone(), done.clone(), seen.clone(), client.clone());
        let transport_errors = transport_errors.clone();
        workers.spawn(async move {
            loop {
                let Some(job) = queue.lock().unwrap().pop() else {
                    break;
                };
                // Like Metigan: retry a valid delivery until it gets a 2xx (bounded).
                for attempt in 0.. {
                    assert!(attempt < 200, "a valid delivery never succeeded");
                    let sig = metigan_webhook::sign(job.secret, now() - job.age, &job.body);
                    let req = http::Request::post(format!("http://{addr}/webhooks/metigan"))
                        .header("x-webhook-signature", sig)
                        .header("content-type", "application/json")
                        .body(Full::new(job.body.clone()))
                        .unwrap();
                    let status = match client.request(req).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let _ = response.into_body().collect().await;
                            status
                        }
                        // A rejected request's body is not read, so the server closes that
                        // connection after answering; a request the pool had already sent on
                        // it fails in transit. A real sender retries: so do we.
                        Err(_) => {
                            transport_errors.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    *seen.lock().unwrap().entry((job.kind, status)).or_default() += 1;
                    let retry = job.kind == Kind::Valid && (status == 503 || status == 409);
                    if !retry {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    // Restart Redis once, when about 40% of the requests are done.
    while done.load(Ordering::SeqCst) < total * 2 / 5 {
        // A worker that failed ends the test at once with its own message.
        if let Some(Err(e)) = workers.try_join_next() {
            std::panic::resume_unwind(e.into_panic());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restart_at = started.elapsed();
    // Down for a second: requests meanwhile find the store unreachable.
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart_gracefully(Duration::from_secs(1));
        redis
    })
    .await
    .unwrap();
    let restarted_after = started.elapsed() - restart_at;

    while let Some(result) = workers.join_next().await {
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let elapsed = started.elapsed();
    // The receiver's inbox worker prints after the answer, and a stop leaves what it has not
    // handled yet for the next start: wait for the lines first (and a moment for any extra).
    let mut stdout = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stdout.len() < UNIQUE && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stdout.extend(receiver.take_lines());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peak_rss_kib = receiver.peak_rss_kib();
    stdout.extend(receiver.stop().await.0);
    let seen = seen.lock().unwrap().clone();
    eprintln!(
        "{total} requests in {elapsed:?} by {CLIENTS} clients; Redis restarted at {restart_at:?} \
         (down {restarted_after:?}); receiver peak RSS {} MiB; statuses: {seen:?}; \
         retried after a transport error: {}",
        peak_rss_kib / 1024,
        transport_errors.load(Ordering::SeqCst)
    );

    // Every valid unique event processed exactly once, duplicates included in the count.
    let mut printed = HashSet::new();
    for line in &stdout {
        assert!(printed.insert(line.clone()), "processed twice: {line}");
    }
    let expected: HashSet<String> = (0..UNIQUE)
        .map(|i| format!("Email delivered to user-{i}@example.com"))
        .collect();
    assert_eq!(
        printed, expected,
        "each valid event exactly once, nothing else"
    );

    // Every invalid request rejected with its status; no 5xx but the designed 503s.
    for ((kind, status), count) in &seen {
        let allowed: &[u16] = match kind {
            Kind::Valid => &[200, 409, 503],
            Kind::Forged | Kind::Stale => &[401],
            Kind::Oversized => &[413],
        };
        assert!(
            allowed.contains(status),
            "{kind:?} answered {status} ({count} times)"
        );
    }
    assert_eq!(seen.get(&(Kind::Forged, 401)), Some(&300));
    assert_eq!(seen.get(&(Kind::Stale, 401)), Some(&300));
    assert_eq!(seen.get(&(Kind::Oversized, 413)), Some(&20));
    // The restart was felt: some deliveries met the unreachable store and were retried.
    assert!(
        seen.get(&(Kind::Valid, 503)).is_some_and(|n| *n > 0),
        "Redis was down for a second under load: expected some 503s, got {seen:?}"
    );
    // A debug build with 200 connections and 1 MiB bodies in flight: measured at 18 MiB; the
    // bound leaves room for allocator noise, not for buffering that grows with the load.
    assert!(peak_rss_kib < 48 * 1024, "peak RSS {peak_rss_kib} KiB");
    drop(redis);
}

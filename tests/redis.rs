//! Several receivers sharing one real Redis: a delivery is processed once in total.

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::HashMap;
use std::time::Duration;

use common::{event_body, now, post};
use receiver::{receiver_binary, Receiver, SECRET};
use redis_server::RedisServer;

const PATH: &str = "/webhooks/metigan";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_sharing_redis_process_each_delivery_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut a = Receiver::start(&[("REDIS_URL", &url)]).await;
    let mut b = Receiver::start(&[("REDIS_URL", &url)]).await;

    // 40 events, each delivered 10 times, alternately to both instances, all at once.
    let events = 40;
    let copies = 10;
    let mut tasks = Vec::new();
    for copy in 0..copies {
        for i in 0..events {
            let addr = if (copy + i) % 2 == 0 { a.addr } else { b.addr };
            let body = event_body("email.opened", &format!("shared-{i}"));
            tasks.push(tokio::spawn(async move {
                let sig = metigan_webhook::sign(SECRET, now(), body.as_bytes());
                post(addr, PATH, &[("x-webhook-signature", &sig)], body)
                    .await
                    .status
                    .as_u16()
            }));
        }
    }
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for task in tasks {
        *statuses.entry(task.await.unwrap()).or_default() += 1;
    }
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 409),
        "only processed, duplicate (200) or in flight (409): {statuses:?}"
    );

    // A later retry of every event, to both: processed already, nothing runs.
    for i in 0..events {
        for addr in [a.addr, b.addr] {
            let body = event_body("email.opened", &format!("shared-{i}"));
            let sig = metigan_webhook::sign(SECRET, now(), body.as_bytes());
            let answer = post(addr, PATH, &[("x-webhook-signature", &sig)], body).await;
            assert_eq!(answer.status, 200);
        }
    }

    // Each receiver's inbox worker prints after the answer, and a stop leaves what it has not
    // handled yet for the next start: wait for the lines first (and a moment for any extra).
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out_a.len() + out_b.len() < events && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        out_a.extend(a.take_lines());
        out_b.extend(b.take_lines());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    out_a.extend(a.stop().await.0);
    out_b.extend(b.stop().await.0);
    let total = out_a.len() + out_b.len();
    assert_eq!(
        total, events,
        "each event printed exactly once across both receivers (a: {}, b: {}, statuses {statuses:?})",
        out_a.len(),
        out_b.len()
    );
    assert!(
        out_a
            .iter()
            .chain(&out_b)
            .all(|l| l == "Email opened by jane@example.com"),
        "{out_a:?} {out_b:?}"
    );
}

#[tokio::test]
async fn receiver_exits_with_one_line_when_redis_is_unreachable() {
    let redis = RedisServer::start();
    let url = redis.url();
    drop(redis);
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(receiver_binary())
            .env("WEBHOOK_SECRET", SECRET)
            .env("PORT", "0")
            .env("REDIS_URL", &url)
            .output(),
    )
    .await
    .expect("exits promptly")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("REDIS_URL"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

//! The receiver's `METRICS_ADDR`, through the real binary on 127.0.0.1: known traffic, then a
//! scrape of `/metrics` (Prometheus text format) and the exact value of every counter.

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::time::Instant;

use common::{event_body, now, post as http_post, post_signed, send};
use receiver::{Receiver, SECRET};
use redis_server::RedisServer;

const PATH: &str = "/webhooks/metigan";

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One scrape: every sample line, `name{labels}` to value, and the whole text.
struct Scrape {
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    /// The value of `series` (`name` or `name{label="value"}`), 0 when absent.
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    fn requests(&self, outcome: &str) -> f64 {
        self.get(&format!(
            "metigan_webhook_requests_total{{outcome=\"{outcome}\"}}"
        ))
    }
}

async fn scrape(metrics: &str) -> Scrape {
    let request = Request::get(format!("http://{metrics}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(request).await;
    assert_eq!(answer.status, 200);
    let content_type = answer.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = answer.text();
    let samples = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect();
    Scrape { samples, text }
}

/// Scrapes until `done` holds (10 s at most: the inbox gauges are refreshed every 5 s).
async fn scrape_until(metrics: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scraped = scrape(metrics).await;
        if done(&scraped) {
            return scraped;
        }
        assert!(Instant::now() < deadline, "{}", scraped.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deliver(addr: SocketAddr, body: &str) -> u16 {
    post_signed(addr, PATH, SECRET, body).await.status.as_u16()
}

/// The layer's outcomes, its histograms and the inbox's numbers after known traffic: accepted
/// events, duplicates, every kind of header and body rejection, a dead letter and its replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_after_known_traffic() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut receiver = Receiver::start(&[
        ("METRICS_ADDR", &metrics),
        ("ADMIN_ADDR", &admin),
        ("HANDLER_FAIL", "email.bounced:permanent"),
    ])
    .await;
    let addr = receiver.addr;

    // Before any traffic the inbox gauges are there (the worker sets them as it starts).
    let empty = scrape_until(&metrics, |s| {
        s.samples
            .contains_key("metigan_webhook_inbox_events{state=\"queued\"}")
    })
    .await;
    assert_eq!(empty.requests("accepted"), 0.0);

    // 4 accepted (one of them fails permanently in the worker), 2 duplicates.
    for (event, id) in [
        ("email.delivered", "m-1"),
        ("email.delivered", "m-2"),
        ("email.opened", "m-3"),
        ("email.bounced", "b-1"),
    ] {
        assert_eq!(deliver(addr, &event_body(event, id)).await, 200);
    }
    let first = event_body("email.delivered", "m-1");
    for _ in 0..2 {
        assert_eq!(deliver(addr, &first).await, 200);
    }
    // Rejections: 2 forged, 1 unsigned, 1 malformed, 1 stale, 1 too large, 1 not an envelope.
    for _ in 0..2 {
        let forged = post_signed(addr, PATH, "whsec_attacker", &first).await;
        assert_eq!(forged.status, 401);
    }
    assert_eq!(http_post(addr, PATH, &[], first.clone()).await.status, 401);
    let malformed = [("x-webhook-signature", "t=abc,v1=00")];
    assert_eq!(
        http_post(addr, PATH, &malformed, first.clone())
            .await
            .status,
        401
    );
    let stale = metigan_webhook::sign(SECRET, now() - 1000, first.as_bytes());
    let stale = [("x-webhook-signature", stale.as_str())];
    assert_eq!(
        http_post(addr, PATH, &stale, first.clone()).await.status,
        401
    );
    let large = "x".repeat(1024 * 1024 + 1);
    assert_eq!(post_signed(addr, PATH, SECRET, &large).await.status, 413);
    assert_eq!(deliver(addr, "[1]").await, 400);
    // Not a rejection: another method is answered 405 before the layer.
    let get = Request::get(format!("http://{addr}{PATH}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(get).await.status, 405);

    let s = scrape_until(&metrics, |s| {
        s.get("metigan_webhook_inbox_events{state=\"done\"}") == 3.0
            && s.get("metigan_webhook_inbox_events{state=\"dead\"}") == 1.0
    })
    .await;
    for (outcome, expected) in [
        ("accepted", 4.0),
        ("duplicate", 2.0),
        ("signature_mismatch", 2.0),
        ("missing_signature", 1.0),
        ("malformed_signature", 1.0),
        ("timestamp_out_of_tolerance", 1.0),
        ("body_too_large", 1.0),
        ("invalid_payload", 1.0),
        ("in_flight", 0.0),
        ("store_unavailable", 0.0),
        ("overloaded", 0.0),
    ] {
        assert_eq!(s.requests(outcome), expected, "{outcome}\n{}", s.text);
    }
    let requests: f64 = s
        .samples
        .iter()
        .filter(|(series, _)| series.starts_with("metigan_webhook_requests_total{"))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(
        requests, 13.0,
        "every request counted once (the 405 is not)"
    );
    // Bodies read: the accepted, the duplicates, the forged and the invalid one.
    assert_eq!(
        s.get("metigan_webhook_verification_duration_seconds_count"),
        9.0
    );
    let verify_sum = s.get("metigan_webhook_verification_duration_seconds_sum");
    assert!(verify_sum > 0.0 && verify_sum < 1.0, "{verify_sum}");
    assert_eq!(
        s.get("metigan_webhook_verification_duration_seconds_bucket{le=\"+Inf\"}"),
        9.0
    );
    // Skew of verified envelopes only (the stale and forged ones never reach it), signed now.
    assert_eq!(s.get("metigan_webhook_signature_skew_seconds_count"), 6.0);
    let skew_sum = s.get("metigan_webhook_signature_skew_seconds_sum");
    assert!(skew_sum.abs() <= 6.0 * 3.0, "{skew_sum}");
    assert_eq!(
        s.get("metigan_webhook_signature_skew_seconds_bucket{le=\"-10\"}"),
        0.0
    );
    assert_eq!(
        s.get("metigan_webhook_signature_skew_seconds_bucket{le=\"10\"}"),
        6.0
    );
    // The inbox.
    for (state, expected) in [
        ("queued", 0.0),
        ("running", 0.0),
        ("retrying", 0.0),
        ("dead", 1.0),
        ("done", 3.0),
    ] {
        let series = format!("metigan_webhook_inbox_events{{state=\"{state}\"}}");
        assert_eq!(s.get(&series), expected, "{state}");
    }
    assert_eq!(
        s.get("metigan_webhook_inbox_oldest_queued_age_seconds"),
        0.0
    );
    let outcome = |s: &Scrape, outcome: &str| {
        s.get(&format!(
            "metigan_webhook_inbox_handler_outcomes_total{{outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(outcome(&s, "succeeded"), 3.0);
    assert_eq!(outcome(&s, "dead_lettered"), 1.0);
    assert_eq!(outcome(&s, "retried"), 0.0);
    assert_eq!(s.get("metigan_webhook_inbox_replays_total"), 0.0);
    assert_eq!(
        s.get("metigan_webhook_dedupe_store_errors_total{operation=\"claim\"}"),
        0.0
    );
    // Bounded labels: no messageId, no address.
    assert!(
        !s.text.contains("m-1") && !s.text.contains("127.0.0.1"),
        "{}",
        s.text
    );
    assert!(s.text.contains("# HELP metigan_webhook_requests_total"));

    // The dead letter replayed through the admin API fails again.
    let replay = http_post(admin.parse().unwrap(), "/inbox/replay", &[], "").await;
    assert_eq!(replay.status, 200, "{}", replay.text());
    let s = scrape_until(&metrics, |s| outcome(s, "dead_lettered") == 2.0).await;
    assert_eq!(s.get("metigan_webhook_inbox_replays_total"), 1.0);
    assert_eq!(outcome(&s, "succeeded"), 3.0);
    assert_eq!(s.requests("accepted"), 4.0, "a replay is not a request");

    let lines = receiver.take_lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    receiver.stop().await;
}

/// `in_flight` and `store_unavailable`, and the store error behind the second, with the layer's
/// deduplication in Redis and the handler inside the request (`INBOX=off`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_and_an_unreachable_store() {
    let mut redis = RedisServer::start();
    let metrics = format!("127.0.0.1:{}", free_port());
    let url = redis.url();
    let receiver = Receiver::start(&[
        ("METRICS_ADDR", &metrics),
        ("INBOX", "off"),
        ("REDIS_URL", &url),
        ("HANDLER_DELAY_MS", "1500"),
    ])
    .await;
    let addr = receiver.addr;

    let slow = event_body("email.delivered", "slow-1");
    let first = tokio::spawn({
        let slow = slow.clone();
        async move { deliver(addr, &slow).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        deliver(addr, &slow).await,
        409,
        "the first is still running"
    );
    assert_eq!(first.await.unwrap(), 200);

    redis.stop();
    let other = event_body("email.delivered", "other-1");
    assert_eq!(deliver(addr, &other).await, 503);

    let s = scrape(&metrics).await;
    for (outcome, expected) in [
        ("accepted", 1.0),
        ("in_flight", 1.0),
        ("store_unavailable", 1.0),
        ("duplicate", 0.0),
    ] {
        assert_eq!(s.requests(outcome), expected, "{outcome}\n{}", s.text);
    }
    assert_eq!(
        s.get("metigan_webhook_dedupe_store_errors_total{operation=\"claim\"}"),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(s.get("metigan_webhook_signature_skew_seconds_count"), 3.0);
    // No inbox: no inbox numbers.
    assert!(!s.text.contains("metigan_webhook_inbox_"), "{}", s.text);
    receiver.stop().await;
}

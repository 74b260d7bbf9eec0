//! `examples/queue.rs` over real HTTP on 127.0.0.1: 200 as soon as an event is queued, 503
//! when the queue is full, the dedupe key completed only for queued events, and a drained queue
//! on SIGTERM.

mod common;

#[path = "common/example.rs"]
mod example;

use std::time::{Duration, Instant};

use metigan_webhook::testing::SampleEvent;
use metigan_webhook::EventType;

use common::{post_signed, Answer};
use example::Example;

const SECRET: &str = "whsec_queue_example_test";
const PATH: &str = "/webhooks/metigan";

async fn deliver(queue: &Example, message_id: &str) -> Answer {
    let body = SampleEvent::new(EventType::EmailDelivered)
        .with_message_id(message_id)
        .to_body();
    post_signed(
        queue.addr,
        PATH,
        SECRET,
        std::str::from_utf8(&body).unwrap(),
    )
    .await
}

#[tokio::test]
async fn answers_at_once_refuses_when_full_and_completes_keys_only_when_queued() {
    // One slot in the queue, 1.5 s of work per event.
    let mut queue = Example::start(
        "queue",
        &[
            ("WEBHOOK_SECRET", SECRET),
            ("QUEUE_CAPACITY", "1"),
            ("WORK_DELAY_MS", "1500"),
        ],
    )
    .await;

    // A is answered at once and taken by the worker.
    let started = Instant::now();
    let a = deliver(&queue, "A").await;
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "queued"));
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "not blocked by the work"
    );
    assert_eq!(queue.next_line().await, "processing email.delivered A");

    // B fills the one slot while A is being processed; C finds the queue full.
    let b = deliver(&queue, "B").await;
    assert_eq!((b.status.as_u16(), b.text().as_str()), (200, "queued"));
    let c = deliver(&queue, "C").await;
    assert_eq!(c.status.as_u16(), 503, "{}", c.text());
    assert_eq!(c.headers["retry-after"], "5");

    // A retry of A (queued, so its key is done): 200 from the layer, not queued again.
    let again = deliver(&queue, "A").await;
    assert_eq!((again.status.as_u16(), again.text().as_str()), (200, "OK"));

    assert_eq!(queue.next_line().await, "processed email.delivered A");
    assert_eq!(queue.next_line().await, "processing email.delivered B");
    assert_eq!(queue.next_line().await, "processed email.delivered B");

    // C was refused, so its key was released: Metigan's retry is queued and processed.
    let retry = deliver(&queue, "C").await;
    assert_eq!(
        (retry.status.as_u16(), retry.text().as_str()),
        (200, "queued")
    );
    assert_eq!(queue.next_line().await, "processing email.delivered C");
    assert_eq!(queue.next_line().await, "processed email.delivered C");

    // Queued right before SIGTERM: drained before the process exits.
    let d = deliver(&queue, "D").await;
    assert_eq!(d.status.as_u16(), 200);
    assert_eq!(queue.next_line().await, "processing email.delivered D");
    let (rest, _) = queue.stop().await;
    assert_eq!(rest, vec!["processed email.delivered D".to_owned()]);
}

#[tokio::test]
async fn refuses_to_start_without_a_valid_configuration() {
    let (code, stderr) = example::run_to_exit("queue", &[]).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("WEBHOOK_SECRET is not set"), "{stderr}");
    let (code, stderr) = example::run_to_exit(
        "queue",
        &[("WEBHOOK_SECRET", SECRET), ("QUEUE_CAPACITY", "0")],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("QUEUE_CAPACITY"), "{stderr}");
}

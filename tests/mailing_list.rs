//! `examples/mailing_list.rs` end to end: signed events over HTTP on 127.0.0.1, then the rows
//! of its SQLite database. Retries, also across a restart, never count twice.

mod common;

#[path = "common/example.rs"]
mod example;

use std::path::{Path, PathBuf};

use metigan_webhook::testing::SampleEvent;
use metigan_webhook::EventType;
use rusqlite::{Connection, OptionalExtension};

use common::post_signed;
use example::Example;

const SECRET: &str = "whsec_mailing_list_test";
const PATH: &str = "/webhooks/metigan";

fn db_path(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "mailing-list-{test}-{}-{}",
        std::process::id(),
        common::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("list.sqlite3")
}

async fn start(db: &Path) -> Example {
    Example::start(
        "mailing_list",
        &[
            ("WEBHOOK_SECRET", SECRET),
            ("MAILING_LIST_DB", db.to_str().unwrap()),
        ],
    )
    .await
}

/// Delivers `event` (signed now) and expects `200 OK`.
async fn deliver(list: &Example, event: &SampleEvent) {
    let body = event.to_body();
    let answer = post_signed(list.addr, PATH, SECRET, std::str::from_utf8(&body).unwrap()).await;
    assert_eq!(
        (answer.status.as_u16(), answer.text().as_str()),
        (200, "OK"),
        "{:?}",
        event.event_type()
    );
}

fn bounce(id: &str, email: &str, kind: &str) -> SampleEvent {
    SampleEvent::new(EventType::EmailBounced)
        .with_message_id(id)
        .with_field("recipient", email)
        .with_field("bounceType", kind)
        .with_field(
            "metadata.bounceReason",
            format!("{kind} bounce for {email}"),
        )
}

fn engagement(kind: EventType, id: &str, user: &str) -> SampleEvent {
    SampleEvent::new(kind)
        .with_message_id(id)
        .with_field("userId", user)
        .with_field("metadata.url", "https://acme.example/pricing")
}

type Contact = (String, i64, Option<String>, Option<String>);

fn contact(db: &Connection, email: &str) -> Option<Contact> {
    db.query_row(
        "SELECT status, bounce_count, last_bounce_reason, unsubscribe_reason
         FROM contacts WHERE email = ?1",
        [email],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
    )
    .optional()
    .unwrap()
}

fn engagement_of(db: &Connection, user: &str) -> Option<(i64, i64, Option<String>)> {
    db.query_row(
        "SELECT opens, clicks, last_clicked_url FROM engagement WHERE user_id = ?1",
        [user],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .optional()
    .unwrap()
}

#[tokio::test]
async fn bounces_complaints_and_engagement_land_in_sqlite_exactly_once() {
    let db = db_path("exactly-once");
    let list = start(&db).await;

    let hard = bounce("m-hard", "gone@example.com", "hard");
    let soft1 = bounce("m-soft-1", "full@example.com", "soft");
    let soft2 = bounce("m-soft-2", "full@example.com", "soft");
    let complaint = SampleEvent::new(EventType::EmailComplained)
        .with_message_id("m-spam")
        .with_field("recipient", "angry@example.com");
    let open1 = engagement(EventType::EmailOpened, "m-news-1", "usr_1");
    let open2 = engagement(EventType::EmailOpened, "m-news-2", "usr_1");
    let click = engagement(EventType::EmailClicked, "m-news-1", "usr_1");
    // No userId: counted for the recipient.
    let anonymous_open = SampleEvent::new(EventType::EmailOpened)
        .with_message_id("m-anon")
        .with_data(serde_json::json!({ "recipient": "anon@example.com" }));
    let unrelated = SampleEvent::new(EventType::AudienceCreated).with_message_id("m-aud");

    for event in [
        &hard,
        &soft1,
        &soft2,
        &complaint,
        &open1,
        &open2,
        &click,
        &anonymous_open,
        &unrelated,
    ] {
        deliver(&list, event).await;
    }
    // Metigan's retries of every one: answered 200, counted once.
    for event in [&hard, &soft1, &complaint, &open1, &click] {
        deliver(&list, event).await;
    }

    // The restart loses the in-memory dedupe; the processed_events table still knows.
    let (_, stderr) = list.stop().await;
    let alerts_before: Vec<&String> = stderr.iter().filter(|l| l.contains("ALERT")).collect();
    let list = start(&db).await;
    for event in [&soft2, &open2, &complaint] {
        deliver(&list, event).await;
    }
    // A new soft bounce after the restart does count.
    deliver(&list, &bounce("m-soft-3", "full@example.com", "soft")).await;
    let (_, stderr_after) = list.stop().await;

    // The spam complaint alerted exactly once (none for its retries, nor after the restart).
    let alerts_after = stderr_after.iter().filter(|l| l.contains("ALERT")).count();
    assert_eq!(alerts_after, 0, "{stderr_after:?}");
    assert_eq!(alerts_before.len(), 1, "{alerts_before:?}");

    let db = Connection::open(&db).unwrap();
    assert_eq!(
        contact(&db, "gone@example.com"),
        Some((
            "invalid".into(),
            0,
            Some("hard bounce for gone@example.com".into()),
            None
        ))
    );
    assert_eq!(
        contact(&db, "full@example.com"),
        Some((
            "active".into(),
            3,
            Some("soft bounce for full@example.com".into()),
            None
        ))
    );
    assert_eq!(
        contact(&db, "angry@example.com"),
        Some((
            "unsubscribed".into(),
            0,
            None,
            Some("spam_complaint".into())
        ))
    );
    assert_eq!(
        engagement_of(&db, "usr_1"),
        Some((2, 1, Some("https://acme.example/pricing".into())))
    );
    assert_eq!(engagement_of(&db, "anon@example.com"), Some((1, 0, None)));
    let mut statement = db
        .prepare("SELECT key FROM processed_events ORDER BY key")
        .unwrap();
    let keys: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        keys,
        [
            "audience.created:m-aud",
            "email.bounced:m-hard",
            "email.bounced:m-soft-1",
            "email.bounced:m-soft-2",
            "email.bounced:m-soft-3",
            "email.clicked:m-news-1",
            "email.complained:m-spam",
            "email.opened:m-anon",
            "email.opened:m-news-1",
            "email.opened:m-news-2",
        ]
    );
}

#[tokio::test]
async fn the_complaint_alert_goes_to_stderr_once() {
    let db = db_path("alert");
    let mut list = start(&db).await;
    let complaint = SampleEvent::new(EventType::EmailComplained)
        .with_message_id("m-alert")
        .with_field("recipient", "spam@example.com");
    deliver(&list, &complaint).await;
    let line = list.wait_stderr("ALERT").await;
    assert_eq!(
        line,
        "ALERT spam complaint: spam@example.com was unsubscribed (messageId m-alert)"
    );
    deliver(&list, &complaint).await;
    let (_, stderr) = list.stop().await;
    assert!(
        !stderr.iter().any(|l| l.contains("ALERT")),
        "a retry alerted again: {stderr:?}"
    );
}

//! The durable inbox (feature `inbox`): the store's behaviour suite, run against the file
//! store; the file store's own promises; the service; the worker; and an end-to-end run over
//! HTTP on 127.0.0.1; with `inbox-admin`, the admin router over HTTP.

#[path = "../common/mod.rs"]
mod common;

#[macro_use]
mod suite;
#[macro_use]
mod worker;
#[cfg(feature = "inbox-admin")]
mod admin;
#[cfg(all(feature = "inbox-admin", feature = "cli"))]
mod admin_cli;
mod e2e;
mod file;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
#[path = "../common/postgres_server.rs"]
mod postgres_server;
mod service;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use metigan_webhook::inbox::{Appended, EventId, Inbox, NewEvent};
use metigan_webhook::{Envelope, VerifiedBody, VerifiedEvent};
use tower::ServiceExt;

/// A fresh directory under the target's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "inbox-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The inbox file's path in it.
    pub fn file(&self) -> PathBuf {
        self.0.join("inbox.redb")
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A verified `email.delivered` event, with `messageId` when given.
pub fn event(message_id: Option<&str>) -> VerifiedEvent {
    let body = match message_id {
        Some(id) => common::event_body("email.delivered", id),
        None => r#"{"event":"email.delivered","data":{"recipient":"jane@example.com"}}"#.into(),
    };
    let envelope = Envelope::parse(Bytes::from(body)).unwrap();
    VerifiedEvent::new(envelope, common::now(), Some("wh_test".into()), 0)
}

/// What the service would append for [`event`], keyed `email.delivered:<id>` for an hour.
pub fn new_event(message_id: Option<&str>) -> NewEvent {
    let key = message_id.map(|id| format!("email.delivered:{id}"));
    NewEvent::from_event(&event(message_id), key, Duration::from_secs(3600))
}

/// A request as the layer hands it on: the verified event in its extensions.
pub fn request(event: VerifiedEvent) -> Request<VerifiedBody> {
    let mut req = Request::post("/webhooks/metigan")
        .body(VerifiedBody::new(event.body().clone()))
        .unwrap();
    req.extensions_mut().insert(event);
    req
}

/// Appends one event through the inbox's service, as the layer hands it on; its id.
pub async fn deliver(inbox: &Inbox, message_id: &str) -> EventId {
    let response = inbox
        .service()
        .oneshot(request(event(Some(message_id))))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    response.extensions().get::<Appended>().unwrap().id()
}

/// Polls `check` every 5 ms until it is true; panics after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

//! The durable inbox (feature `inbox`): the store's behaviour suite, run against the file
//! store, and the file store's own promises.

#[path = "../common/mod.rs"]
mod common;

#[macro_use]
mod suite;
mod file;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use metigan_webhook::inbox::NewEvent;
use metigan_webhook::{Envelope, VerifiedEvent};

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

//! The receiver's testing aids: `HANDLER_DELAY_MS` makes every handler run take that long, to
//! watch the inbox absorb a burst; `HANDLER_FAIL` makes the runs of some event types fail, to
//! watch retries, dead letters and replays. Neither belongs in a real handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metigan_webhook::inbox::HandlerError;
use metigan_webhook::VerifiedEvent;

use crate::edge;

/// How the runs of one event type fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// Every run, with a transient error (retried with backoff until the last attempt).
    Always,
    /// The first `n` runs of each event (per `messageId`), with a transient error.
    First(u32),
    /// Every run, with a permanent error (a dead letter at once).
    Permanent,
}

/// What every handler run goes through before it does its work.
#[derive(Clone, Default)]
pub struct Aids {
    delay: Duration,
    fail: Arc<HashMap<String, Fail>>,
    /// Failed runs so far per `<event>:<messageId>`, for `<event>:<n>` rules.
    failed: Arc<Mutex<HashMap<String, u32>>>,
}

impl Aids {
    /// Reads `HANDLER_DELAY_MS` (default 0) and `HANDLER_FAIL` (default: nothing fails).
    ///
    /// `HANDLER_FAIL` is a comma-separated list of `<event type>` (every run fails, transient),
    /// `<event type>:<n>` (the first `n` runs of each event fail, transient; counted in this
    /// process) and `<event type>:permanent` (every run fails, permanent).
    pub fn from_env() -> Result<Aids, String> {
        let delay = edge::count("HANDLER_DELAY_MS", 0, 0)?;
        let delay = Duration::from_millis(u64::try_from(delay).unwrap_or(u64::MAX));
        let mut fail = HashMap::new();
        for rule in edge::var("HANDLER_FAIL")?.unwrap_or_default().split(',') {
            let rule = rule.trim();
            if rule.is_empty() {
                continue;
            }
            let (kind, how) = match rule.rsplit_once(':') {
                None => (rule, Fail::Always),
                Some((kind, "permanent")) => (kind, Fail::Permanent),
                Some((kind, n)) => match n.parse::<u32>() {
                    Ok(n) if n > 0 => (kind, Fail::First(n)),
                    _ => {
                        return Err(format!(
                            "HANDLER_FAIL: {rule:?} must be `<event>`, `<event>:<n>` (n at \
                             least 1) or `<event>:permanent`"
                        ))
                    }
                },
            };
            fail.insert(kind.to_owned(), how);
        }
        Ok(Aids {
            delay,
            fail: Arc::new(fail),
            failed: Arc::default(),
        })
    }

    /// Whether `HANDLER_FAIL` names anything (logged at start).
    pub fn fails_something(&self) -> bool {
        !self.fail.is_empty()
    }

    /// Waits `HANDLER_DELAY_MS`, then fails as `HANDLER_FAIL` says for this event.
    pub async fn before(&self, event: &VerifiedEvent) -> Result<(), HandlerError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let kind = event.event_type().as_str();
        // The texts name the rule (the operator's own words), never the event's content.
        match self.fail.get_key_value(kind) {
            None => Ok(()),
            Some((rule, Fail::Always)) => Err(HandlerError::transient(format!(
                "HANDLER_FAIL makes every {rule} run fail"
            ))),
            Some((rule, Fail::Permanent)) => Err(HandlerError::permanent(format!(
                "HANDLER_FAIL makes every {rule} run fail permanently"
            ))),
            Some((rule, Fail::First(n))) => {
                let key = format!("{kind}:{}", event.message_id().unwrap_or_default());
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                let count = failed.entry(key).or_default();
                if *count >= *n {
                    return Ok(());
                }
                *count += 1;
                Err(HandlerError::transient(format!(
                    "HANDLER_FAIL makes the first {n} runs of each {rule} fail (this was run {count})"
                )))
            }
        }
    }
}

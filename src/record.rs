//! Where the crate records its metrics: through the `metrics` facade with the `metrics`
//! feature, nothing at all without it (every function here is then empty and inlined away).
//!
//! Every name and label value is a literal, so that each key is a `static` of the `metrics`
//! macros: recording allocates nothing and hashes nothing per request, recorder or not (a
//! label value from a variable would build a `Vec` of labels at each call). The names are the
//! constants of [`crate::metrics`]; a unit test checks they agree.

use crate::idempotency::Duplicate;
use crate::rejection::Reason;

/// `counter!(name, label => value).increment(n)` with every part literal (static key).
#[cfg(feature = "metrics")]
macro_rules! count {
    ($name:literal, $label:literal => $value:literal, $n:expr) => {
        ::metrics::counter!($name, $label => $value).increment($n)
    };
    ($name:literal, $n:expr) => {
        ::metrics::counter!($name).increment($n)
    };
}

/// `metigan_webhook_requests_total{outcome}`, the outcome given as a literal.
#[cfg(feature = "metrics")]
macro_rules! request {
    ($outcome:literal) => {
        count!("metigan_webhook_requests_total", "outcome" => $outcome, 1)
    };
}

/// A request the layer passed on to the inner service.
#[inline]
pub(crate) fn accepted() {
    #[cfg(feature = "metrics")]
    request!("accepted");
}

/// A request the layer refused.
#[inline]
pub(crate) fn rejected(reason: Reason) {
    #[cfg(feature = "metrics")]
    match reason {
        Reason::MissingSignature => request!("missing_signature"),
        Reason::MalformedSignature => request!("malformed_signature"),
        Reason::TimestampOutOfTolerance => request!("timestamp_out_of_tolerance"),
        Reason::BodyTooLarge => request!("body_too_large"),
        Reason::BodyReadError => request!("body_read_error"),
        Reason::SignatureMismatch => request!("signature_mismatch"),
        Reason::InvalidPayload => request!("invalid_payload"),
        Reason::Overloaded => request!("overloaded"),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// A request deduplication answered without the inner service.
#[inline]
pub(crate) fn deduplicated(duplicate: Duplicate) {
    #[cfg(feature = "metrics")]
    match duplicate {
        Duplicate::AlreadyProcessed => request!("duplicate"),
        Duplicate::InFlight => request!("in_flight"),
        Duplicate::StoreUnavailable => request!("store_unavailable"),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = duplicate;
}

/// A deduplication store operation that failed.
#[derive(Clone, Copy)]
pub(crate) enum StoreOp {
    Claim,
    Complete,
    Release,
}

/// `metigan_webhook_dedupe_store_errors_total{operation}`.
#[inline]
pub(crate) fn store_error(operation: StoreOp) {
    #[cfg(feature = "metrics")]
    match operation {
        StoreOp::Claim => {
            count!("metigan_webhook_dedupe_store_errors_total", "operation" => "claim", 1)
        }
        StoreOp::Complete => {
            count!("metigan_webhook_dedupe_store_errors_total", "operation" => "complete", 1)
        }
        StoreOp::Release => {
            count!("metigan_webhook_dedupe_store_errors_total", "operation" => "release", 1)
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = operation;
}

/// Times the verification of a body.
pub(crate) struct Timer {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Timer {
    #[inline]
    pub(crate) fn start() -> Timer {
        Timer {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// Records the time since [`start`](Self::start) as a verification's duration.
    #[inline]
    pub(crate) fn verified(self) {
        #[cfg(feature = "metrics")]
        ::metrics::histogram!("metigan_webhook_verification_duration_seconds")
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// The skew of a verified request's signed timestamp: `now() - signed_at`, in seconds (the
/// clock is read only when the feature is on).
#[inline]
pub(crate) fn skew(now: impl FnOnce() -> u64, signed_at: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!("metigan_webhook_signature_skew_seconds")
        .record(now() as f64 - signed_at as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (now, signed_at);
}

/// How an inbox handler run ended.
#[cfg(feature = "inbox")]
#[derive(Clone, Copy)]
pub(crate) enum HandlerOutcome {
    Succeeded,
    Retried,
    DeadLettered,
    Released,
}

/// `metigan_webhook_inbox_handler_outcomes_total{outcome}`.
#[cfg(feature = "inbox")]
#[inline]
pub(crate) fn handler_outcome(outcome: HandlerOutcome) {
    #[cfg(feature = "metrics")]
    match outcome {
        HandlerOutcome::Succeeded => {
            count!("metigan_webhook_inbox_handler_outcomes_total", "outcome" => "succeeded", 1)
        }
        HandlerOutcome::Retried => {
            count!("metigan_webhook_inbox_handler_outcomes_total", "outcome" => "retried", 1)
        }
        HandlerOutcome::DeadLettered => {
            count!("metigan_webhook_inbox_handler_outcomes_total", "outcome" => "dead_lettered", 1)
        }
        HandlerOutcome::Released => {
            count!("metigan_webhook_inbox_handler_outcomes_total", "outcome" => "released", 1)
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// Dead letters queued again.
#[cfg(feature = "inbox")]
#[inline]
pub(crate) fn replays(count: u64) {
    #[cfg(feature = "metrics")]
    count!("metigan_webhook_inbox_replays_total", count);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// The inbox's depth per state and the age of its oldest queued event.
#[cfg(all(feature = "inbox", feature = "metrics"))]
pub(crate) fn inbox_gauges(counts: &crate::inbox::Counts, oldest_queued_age: f64) {
    use crate::inbox::State;
    macro_rules! depth {
        ($state:literal, $value:expr) => {
            ::metrics::gauge!("metigan_webhook_inbox_events", "state" => $state)
                .set($value as f64)
        };
    }
    for state in State::ALL {
        let n = counts.get(state);
        match state {
            State::Queued => depth!("queued", n),
            State::Running => depth!("running", n),
            State::Retrying => depth!("retrying", n),
            State::Dead => depth!("dead", n),
            State::Done => depth!("done", n),
        }
    }
    ::metrics::gauge!("metigan_webhook_inbox_oldest_queued_age_seconds").set(oldest_queued_age);
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use crate::metrics::*;

    /// The literals above are the documented names.
    #[test]
    fn names_are_the_public_constants() {
        let source = include_str!("record.rs");
        for name in [
            REQUESTS_TOTAL,
            VERIFICATION_DURATION_SECONDS,
            SIGNATURE_SKEW_SECONDS,
            DEDUPE_STORE_ERRORS_TOTAL,
            INBOX_EVENTS,
            INBOX_OLDEST_QUEUED_AGE_SECONDS,
            INBOX_HANDLER_OUTCOMES_TOTAL,
            INBOX_REPLAYS_TOTAL,
        ] {
            assert!(source.contains(&format!("\"{name}\"")), "{name}");
        }
        let literals = source.matches("\"metigan_webhook_").count();
        assert!(literals >= 8, "{literals}");
    }
}

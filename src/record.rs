//! Where the crate records its metrics: through the `metrics` facade with the `metrics`
//! feature, nothing at all without it (every function here is then empty and inlined away).

#[cfg(feature = "metrics")]
use crate::metrics as names;

/// One request the layer answered itself, or passed on (`accepted`).
#[inline]
pub(crate) fn request(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(names::REQUESTS_TOTAL, "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// A deduplication store error, by `operation` (`claim`, `complete`, `release`).
#[inline]
pub(crate) fn store_error(operation: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(names::DEDUPE_STORE_ERRORS_TOTAL, "operation" => operation).increment(1);
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
        ::metrics::histogram!(names::VERIFICATION_DURATION_SECONDS)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// The skew of a verified request's signed timestamp: `now() - signed_at`, in seconds (the
/// clock is read only when the feature is on).
#[inline]
pub(crate) fn skew(now: impl FnOnce() -> u64, signed_at: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(names::SIGNATURE_SKEW_SECONDS).record(now() as f64 - signed_at as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (now, signed_at);
}

/// How an inbox handler run ended: `succeeded`, `retried`, `dead_lettered`, `released`.
#[cfg(feature = "inbox")]
#[inline]
pub(crate) fn handler_outcome(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(names::INBOX_HANDLER_OUTCOMES_TOTAL, "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// Dead letters queued again.
#[cfg(feature = "inbox")]
#[inline]
pub(crate) fn replays(count: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(names::INBOX_REPLAYS_TOTAL).increment(count);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// The inbox's depth per state and the age of its oldest queued event.
#[cfg(all(feature = "inbox", feature = "metrics"))]
pub(crate) fn inbox_gauges(counts: &crate::inbox::Counts, oldest_queued_age: f64) {
    for state in crate::inbox::State::ALL {
        ::metrics::gauge!(names::INBOX_EVENTS, "state" => state.as_str())
            .set(counts.get(state) as f64);
    }
    ::metrics::gauge!(names::INBOX_OLDEST_QUEUED_AGE_SECONDS).set(oldest_queued_age);
}

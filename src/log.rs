//! The layer's log lines for requests it answers itself, rate-limited so that a flood of
//! forged requests cannot fill a disk with warnings.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::idempotency::Duplicate;
use crate::rejection::Reason;

/// At most this many lines per window; the rest are counted and summed up in one line.
const LINES_PER_WINDOW: u32 = 10;
/// One second.
const WINDOW_MS: u64 = 1000;

/// What a line is about: a rejection reason, or a delivery answered by deduplication.
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    Rejected(Reason),
    Duplicate(Duplicate),
}

impl Outcome {
    const COUNT: usize = Reason::ALL.len() + 3;

    fn index(self) -> usize {
        match self {
            Outcome::Rejected(reason) => Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0),
            Outcome::Duplicate(Duplicate::AlreadyProcessed) => Reason::ALL.len(),
            Outcome::Duplicate(Duplicate::InFlight) => Reason::ALL.len() + 1,
            Outcome::Duplicate(_) => Reason::ALL.len() + 2,
        }
    }

    fn code_of(index: usize) -> &'static str {
        match Reason::ALL.get(index) {
            Some(reason) => reason.code(),
            None => match index - Reason::ALL.len() {
                0 => Duplicate::AlreadyProcessed.code(),
                1 => Duplicate::InFlight.code(),
                _ => Duplicate::StoreUnavailable.code(),
            },
        }
    }
}

/// Rate-limits the layer's lines: the first ten of each second are written as they come,
/// with the client's address when it is known; the others are counted, per reason, and
/// written as one summary line when the next second's first line is.
pub(crate) struct RejectionLog {
    epoch: Instant,
    window_start: AtomicU64,
    lines: AtomicU32,
    suppressed: [AtomicU64; Outcome::COUNT],
}

impl Default for RejectionLog {
    fn default() -> Self {
        RejectionLog {
            epoch: Instant::now(),
            window_start: AtomicU64::new(0),
            lines: AtomicU32::new(0),
            suppressed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl fmt::Debug for RejectionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectionLog").finish_non_exhaustive()
    }
}

/// `reason=count` pairs of a summary line.
struct Counts<'a>(&'a [(usize, u64)]);

impl fmt::Display for Counts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (index, count)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={count}", Outcome::code_of(*index))?;
        }
        Ok(())
    }
}

impl RejectionLog {
    /// Writes (or counts) the line of one answered request.
    pub(crate) fn record(&self, outcome: Outcome, peer: Option<SocketAddr>) {
        if self.admit() {
            let peer = peer.map(tracing::field::display);
            match outcome {
                Outcome::Rejected(reason) => {
                    tracing::warn!(reason = reason.code(), peer, "Metigan webhook rejected");
                }
                Outcome::Duplicate(duplicate) => tracing::info!(
                    outcome = duplicate.code(),
                    peer,
                    "Metigan webhook delivery not processed again"
                ),
            }
        } else {
            self.suppressed[outcome.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether this line may be written; opens a new window (and writes the summary of the
    /// last one) when a second has passed.
    fn admit(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let start = self.window_start.load(Ordering::Acquire);
        if now.saturating_sub(start) >= WINDOW_MS
            && self
                .window_start
                .compare_exchange(start, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.lines.store(0, Ordering::Release);
            self.summarise(now.saturating_sub(start));
        }
        self.lines.fetch_add(1, Ordering::AcqRel) < LINES_PER_WINDOW
    }

    fn summarise(&self, elapsed_ms: u64) {
        let mut counts = [(0usize, 0u64); Outcome::COUNT];
        let mut n = 0;
        for (index, counter) in self.suppressed.iter().enumerate() {
            let count = counter.swap(0, Ordering::AcqRel);
            if count > 0 {
                counts[n] = (index, count);
                n += 1;
            }
        }
        if n > 0 {
            let total: u64 = counts[..n].iter().map(|(_, c)| c).sum();
            tracing::warn!(
                suppressed = total,
                over_secs = elapsed_ms / 1000,
                counts = %Counts(&counts[..n]),
                "Metigan webhook: more requests were answered than logged (at most {LINES_PER_WINDOW} lines a second)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_ten_lines_then_counts() {
        let log = RejectionLog::default();
        let admitted = (0..100).filter(|_| log.admit()).count();
        assert_eq!(admitted, LINES_PER_WINDOW as usize);
        for _ in 0..5 {
            log.record(Outcome::Rejected(Reason::SignatureMismatch), None);
        }
        log.record(Outcome::Duplicate(Duplicate::InFlight), None);
        let mismatch = Outcome::Rejected(Reason::SignatureMismatch).index();
        assert_eq!(log.suppressed[mismatch].load(Ordering::Relaxed), 5);
        assert_eq!(Outcome::code_of(mismatch), "signature_mismatch");
        let in_flight = Outcome::Duplicate(Duplicate::InFlight).index();
        assert_eq!(Outcome::code_of(in_flight), "in_flight");
        assert_eq!(
            Counts(&[(mismatch, 5), (in_flight, 1)]).to_string(),
            "signature_mismatch=5 in_flight=1"
        );
    }
}

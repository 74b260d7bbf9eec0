//! [`Backoff`]: how long the worker waits before running a failed event again.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The first retry's nominal delay: 30 s.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(30);
/// The longest nominal delay: 4 h.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(4 * 60 * 60);

/// Exponential backoff with jitter.
///
/// After the `n`-th failed attempt (from 1) the nominal delay is `base * 2^(n-1)`, at most
/// `cap`; the actual delay is the nominal one times a random factor in `[0.75, 1.25)`, so
/// events that failed together do not come back together, and each delay is still longer
/// than the one before (until the cap).
///
/// The default (30 s base, 4 h cap) with the default 15 attempts waits 30 s, 1, 2, 4, 8, 16,
/// 32 min, 1 h 4 min, 2 h 8 min, then 4 h five times: 87,330 s (24 h 15 min) between the first
/// attempt and the last, nominally ([`total`](Self::total)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP)
    }
}

impl Backoff {
    /// Delays starting at `base` and doubling up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    /// The nominal delay after failed attempt `attempt` (from 1), without jitter.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        self.base
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX)
            .min(self.cap)
    }

    /// The delay after failed attempt `attempt`, with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        // A factor in [0.75, 1.25) from 16 random bits.
        let factor = 0.75 + (random() >> 48) as f64 / 65_536.0 / 2.0;
        let nominal = self.nominal(attempt);
        Duration::try_from_secs_f64(nominal.as_secs_f64() * factor).unwrap_or(nominal)
    }

    /// The nominal time from the first attempt to the last of `max_attempts`: the sum of the
    /// delays between them.
    pub fn total(&self, max_attempts: u32) -> Duration {
        (1..max_attempts).fold(Duration::ZERO, |sum, attempt| {
            sum.saturating_add(self.nominal(attempt))
        })
    }
}

/// 64 random bits: std's randomly keyed hasher over a counter (no extra dependency; jitter
/// needs no cryptographic quality).
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spans_about_a_day() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (1..15).map(|n| backoff.nominal(n).as_secs()).collect();
        assert_eq!(
            delays,
            [30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 14400, 14400, 14400, 14400, 14400]
        );
        assert_eq!(backoff.total(15), Duration::from_secs(87_330));
    }

    #[test]
    fn jitter_stays_within_a_quarter_and_delays_grow() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(3600));
        for _ in 0..1000 {
            for attempt in 1..8 {
                let nominal = backoff.nominal(attempt);
                let delay = backoff.delay(attempt);
                assert!(delay >= nominal.mul_f64(0.75) && delay < nominal.mul_f64(1.25));
                assert!(backoff.delay(attempt + 1) > delay);
            }
        }
        assert_eq!(backoff.nominal(u32::MAX), Duration::from_secs(3600));
        assert_eq!(backoff.nominal(0), Duration::from_millis(100));
    }
}

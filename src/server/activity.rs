//! What a connection is doing: the requests in flight, and since when it has had none.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Shared by a connection's driver and the requests it serves.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When the connection was accepted: the origin of `idle_since`.
    accepted: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds from `accepted` to the end of the last request (0: none yet).
    idle_since: AtomicU64,
}

impl Activity {
    pub(crate) fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Activity {
            accepted,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        })
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// When an idle connection must be closed: `timeout` after its last request ended (or
    /// after it was accepted); `None` while a request is in flight.
    pub(crate) fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = Duration::from_nanos(self.idle_since.load(Ordering::SeqCst));
        Some(self.accepted + since + timeout)
    }
}

/// One request in flight on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let elapsed = activity.accepted.elapsed().as_nanos();
        // Stored before the count drops, so a driver that sees no request in flight never
        // reads an older end than this one.
        activity
            .idle_since
            .store(u64::try_from(elapsed).unwrap_or(u64::MAX), Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_counts_from_the_end_of_the_last_request() {
        let timeout = Duration::from_secs(10);
        let accepted = Instant::now();
        let activity = Activity::new(accepted);
        assert_eq!(activity.idle_deadline(timeout), Some(accepted + timeout));

        let first = activity.begin();
        let second = activity.begin();
        assert_eq!(activity.idle_deadline(timeout), None);
        drop(first);
        assert_eq!(activity.idle_deadline(timeout), None, "one still in flight");
        std::thread::sleep(Duration::from_millis(20));
        let before = Instant::now();
        drop(second);
        let after = Instant::now();
        let deadline = activity.idle_deadline(timeout).unwrap();
        assert!(deadline >= before + timeout && deadline <= after + timeout);
    }
}

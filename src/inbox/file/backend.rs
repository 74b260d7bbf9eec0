//! redb's file backend, counting the syncs it makes (each one an `fdatasync` of the file) and
//! noting its first I/O error.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use redb::StorageBackend;

/// Counters shared by the backend and the store's handle.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) syncs: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) durable_commits: AtomicU64,
    pub(super) appends: AtomicU64,
    pub(super) operations: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// redb's `FileBackend` (which holds an exclusive `flock` on the file while it lives), counting
/// `sync_data` calls and raising `failed` at its first I/O error.
///
/// redb refuses every write transaction of a `Database` once its backend has failed once
/// ("Previous I/O error"), so `failed` tells the writer exactly when the database must be
/// closed and reopened.
#[derive(Debug)]
pub(super) struct CountingBackend {
    inner: Arc<dyn StorageBackend>,
    counters: Arc<Counters>,
    failed: Arc<AtomicBool>,
}

impl CountingBackend {
    /// Wraps `inner` (a locked [`FileBackend`], see [`file_backend`]; tests inject failing
    /// ones).
    pub(super) fn new(
        inner: Arc<dyn StorageBackend>,
        counters: Arc<Counters>,
        failed: Arc<AtomicBool>,
    ) -> Self {
        CountingBackend {
            inner,
            counters,
            failed,
        }
    }

    fn check<T>(&self, result: Result<T, io::Error>) -> Result<T, io::Error> {
        if result.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        result
    }
}

impl StorageBackend for CountingBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.check(self.inner.len())
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.check(self.inner.read(offset, len))
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.check(self.inner.set_len(len))
    }

    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        Counters::add(&self.counters.syncs, 1);
        self.check(self.inner.sync_data(eventual))
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.check(self.inner.write(offset, data))
    }
}

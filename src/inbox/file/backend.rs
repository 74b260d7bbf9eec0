//! redb's file backend, counting the syncs it makes (each one an `fdatasync` of the file).

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{DatabaseError, StorageBackend};

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

/// [`FileBackend`] (which holds an exclusive `flock` on the file while it lives), counting
/// `sync_data` calls.
#[derive(Debug)]
pub(super) struct CountingBackend {
    inner: FileBackend,
    counters: Arc<Counters>,
}

impl CountingBackend {
    /// Locks `file` (fails with `DatabaseAlreadyOpen` when another open file holds it).
    pub(super) fn new(file: File, counters: Arc<Counters>) -> Result<Self, DatabaseError> {
        Ok(CountingBackend {
            inner: FileBackend::new(file)?,
            counters,
        })
    }
}

impl StorageBackend for CountingBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        Counters::add(&self.counters.syncs, 1);
        self.inner.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }
}

//! [`FileStore`]: the inbox in one redb file (pure Rust, ACID, synced on every commit).

mod backend;
mod tables;
mod writer;

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{Database, DatabaseError, ReadableTable, StorageBackend};
use tokio::sync::oneshot;

use self::backend::{Counters, CountingBackend};
use self::tables::{code, storage, Record, Tables, BODIES, EVENTS, STATES};
use self::writer::{Answer, Command, Op};
use super::error::{ErrorKind, InboxError};
use super::store::{
    Appended, BoxFuture, ClaimRequest, Claimed, Counts, EventId, InboxStore, Lease, ListQuery,
    NewEvent, Page, Purged, Settle, State, StoredEvent,
};

/// The inbox in one file: the default store.
///
/// - **Durable**: an append is answered once its transaction is committed and the file synced
///   (`fdatasync`); redb's copy-on-write commits leave the file consistent whenever the process
///   or the machine stops.
/// - **Group commit**: one writer thread applies every change; the changes queued while it
///   commits one batch all go into the next transaction, committed with a single sync, so
///   concurrent appends share syncs instead of queueing for one each.
/// - **Private**: the file is created with mode `0600` (owner only): it holds verified bodies,
///   which hold personal data. An existing file keeps its mode; a warning is logged when others
///   may read it.
/// - **One owner**: the file is locked (`flock`) while a store has it open; a second store on
///   the same file, in this process or another, fails at once with
///   [`ErrorKind::AlreadyOpen`](super::ErrorKind::AlreadyOpen).
///
/// Claims and lease renewals are committed without a sync of their own (the next durable
/// commit carries them): a crash may undo one, and the event is then claimed again, which
/// at-least-once delivery allows. Appends, settlements, replays and purges are synced before
/// they are answered.
///
/// - **Self-healing**: after an I/O error (a full disk, say) redb refuses every later write
///   until the database is reopened; the store then drops the database and opens a new one
///   over the same file, which stays locked, by itself (at most once every 100 ms to 1 s,
///   backing off), refusing changes and reads meanwhile (503 for an append: nothing is
///   answered 2xx without a commit). It logs one warning when this starts and one line when
///   the database is back.
///
/// Reads (counts, listings) run on Tokio's blocking pool from a snapshot, beside the writer.
/// Dropping the store stops its writer thread (after the batch in progress) and unlocks the
/// file.
pub struct FileStore {
    commands: Option<mpsc::Sender<Command>>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    path: PathBuf,
}

/// What a [`FileStore`] has done since it was opened, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStats {
    /// Appends answered (stored or duplicate).
    pub appends: u64,
    /// Commands applied (appends, claims, renewals, settlements, ...).
    pub operations: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Transactions committed durably (synced).
    pub durable_commits: u64,
    /// Syncs of the file (`fdatasync`), opening included.
    pub syncs: u64,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish()
    }
}

impl FileStore {
    /// Opens the inbox file at `path`, creating it (mode `0600`) when it does not exist.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AlreadyOpen`](super::ErrorKind::AlreadyOpen) when another store holds the
    /// file (this process or another); [`ErrorKind::Storage`](super::ErrorKind::Storage) when
    /// it cannot be created, read or written, or is not an inbox file.
    pub fn open(path: impl AsRef<Path>) -> Result<FileStore, InboxError> {
        FileStore::open_with(path.as_ref(), |file| Arc::new(file))
    }

    /// [`FileStore::open`], with the file's backend wrapped by `wrap` (tests inject faults).
    fn open_with(
        path: &Path,
        wrap: impl FnOnce(FileBackend) -> Arc<dyn StorageBackend>,
    ) -> Result<FileStore, InboxError> {
        let shown = path.display().to_string();
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|error| {
            InboxError::new(ErrorKind::Storage, format!("cannot open {shown}: {error}"))
        })?;
        warn_if_shared(&file, &shown);
        // Locks the file (`flock`) until the last database over it is dropped.
        let backend = FileBackend::new(file).map_err(|e| open_error(&shown, e))?;
        let opener = Opener {
            path: path.to_path_buf(),
            counters: Arc::new(Counters::default()),
            backend: wrap(backend),
        };
        let opened = opener.open()?;
        // Create every table once, so that readers find them.
        let txn = opened.db.begin_write().map_err(storage)?;
        drop(Tables::open(&txn)?);
        txn.commit().map_err(storage)?;

        let counters = opener.counters.clone();
        let db = Arc::new(opened.db);
        let shared = Arc::new(Shared::new(db.clone()));
        let (commands, receiver) = mpsc::channel();
        let writer = {
            let shared = shared.clone();
            let open = writer::Open {
                db,
                failed: opened.failed,
            };
            std::thread::Builder::new()
                .name("metigan-inbox-writer".into())
                .spawn(move || writer::run(open, shared, opener, receiver))
                .map_err(|error| {
                    InboxError::storage(format!("cannot start the writer thread: {error}"))
                })?
        };
        Ok(FileStore {
            commands: Some(commands),
            shared,
            writer: Some(writer),
            counters,
            path: path.to_path_buf(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the store has done so far.
    pub fn stats(&self) -> FileStats {
        let c = &self.counters;
        FileStats {
            appends: c.appends.load(Ordering::Relaxed),
            operations: c.operations.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            durable_commits: c.durable_commits.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
        }
    }

    /// Sends `op` to the writer; `pick` takes the expected answer out.
    fn request<T: Send + 'static>(
        &self,
        op: Op,
        pick: fn(Answer) -> Option<T>,
    ) -> BoxFuture<Result<T, InboxError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .commands
            .as_ref()
            .is_some_and(|commands| commands.send(Command { op, reply }).is_ok());
        Box::pin(async move {
            if !sent {
                return Err(InboxError::closed());
            }
            let answer = answer.await.map_err(|_| InboxError::closed())??;
            pick(answer).ok_or_else(|| InboxError::storage("the writer gave an unexpected answer"))
        })
    }

    /// Runs `read` on a snapshot, on Tokio's blocking pool when there is a runtime.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, InboxError> + Send + 'static,
    ) -> BoxFuture<Result<T, InboxError>> {
        let Some(db) = self.shared.get() else {
            return Box::pin(std::future::ready(Err(InboxError::storage(
                "the inbox file is being reopened after an I/O error",
            ))));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn_blocking(move || read(&db));
                Box::pin(async move {
                    task.await
                        .map_err(|_| InboxError::storage("a read of the inbox failed"))?
                })
            }
            Err(_) => {
                let result = read(&db);
                Box::pin(std::future::ready(result))
            }
        }
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        // Closing the channel stops the writer once its batch is committed; waiting for it
        // means the file is unlocked when `drop` returns (unless a read still runs).
        self.commands = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("inbox: the writer thread panicked");
            }
        }
    }
}

/// The database the reads use: the writer replaces it when it reopens the file after an I/O
/// error, and empties it meanwhile (a read then fails, as a write would).
struct Shared {
    db: RwLock<Option<Arc<Database>>>,
}

impl Shared {
    fn new(db: Arc<Database>) -> Self {
        Shared {
            db: RwLock::new(Some(db)),
        }
    }

    /// The database, unless it is closed for a reopening.
    fn get(&self) -> Option<Arc<Database>> {
        // The lock only guards a swap of `Arc`s: a poisoned lock still holds a valid value.
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the database; returns the one it held.
    fn set(&self, db: Option<Arc<Database>>) -> Option<Arc<Database>> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *slot, db)
    }
}

/// Opens (and reopens) a database over the file. It holds the file, locked, for the store's
/// whole life: the lock is never released (and the path never opened again) to reopen.
struct Opener {
    path: PathBuf,
    counters: Arc<Counters>,
    backend: Arc<dyn StorageBackend>,
}

/// A freshly opened database, and the flag its backend raises at its first I/O error.
struct Opened {
    db: Database,
    failed: Arc<AtomicBool>,
}

impl Opener {
    /// A database over the file (redb repairs it first when it was not closed cleanly).
    fn open(&self) -> Result<Opened, InboxError> {
        let failed = Arc::new(AtomicBool::new(false));
        let backend =
            CountingBackend::new(self.backend.clone(), self.counters.clone(), failed.clone());
        let db = redb::Builder::new()
            .create_with_backend(backend)
            .map_err(|e| open_error(&self.path.display().to_string(), e))?;
        Ok(Opened { db, failed })
    }
}

fn open_error(path: &str, error: DatabaseError) -> InboxError {
    match error {
        DatabaseError::DatabaseAlreadyOpen => InboxError::new(
            ErrorKind::AlreadyOpen,
            format!(
                "{path} is already open (another process, or another store in this process, \
                 holds its lock)"
            ),
        ),
        other => InboxError::new(ErrorKind::Storage, format!("cannot open {path}: {other}")),
    }
}

/// Logs a warning when an existing inbox file may be read by others than its owner.
fn warn_if_shared(file: &std::fs::File, path: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = file.metadata() {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "inbox: {path} has mode {mode:o}: others than its owner may read the \
                     events it holds; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (file, path);
}

fn snapshot_error(error: impl fmt::Display) -> InboxError {
    storage(error)
}

fn count(db: &Database) -> Result<Counts, InboxError> {
    let txn = db.begin_read().map_err(snapshot_error)?;
    let states = txn.open_table(STATES).map_err(snapshot_error)?;
    let mut counts = Counts::default();
    for state in State::ALL {
        let c = code(state);
        let n = states
            .range((c, 0)..=(c, u64::MAX))
            .map_err(storage)?
            .count();
        *counts.get_mut(state) = n as u64;
    }
    Ok(counts)
}

fn list(db: &Database, query: ListQuery) -> Result<Page, InboxError> {
    let txn = db.begin_read().map_err(snapshot_error)?;
    let events = txn.open_table(EVENTS).map_err(snapshot_error)?;
    let bodies = txn.open_table(BODIES).map_err(snapshot_error)?;
    let start = query.after.map_or(0, |id| id.get().saturating_add(1));
    let limit = query.limit.clamp(1, super::store::MAX_LIST_LIMIT);
    // One more than asked: whether a next page exists.
    let mut ids = Vec::with_capacity(limit + 1);
    match query.state {
        Some(state) => {
            let states = txn.open_table(STATES).map_err(snapshot_error)?;
            let c = code(state);
            for entry in states.range((c, start)..=(c, u64::MAX)).map_err(storage)? {
                let (key, _) = entry.map_err(storage)?;
                ids.push(key.value().1);
                if ids.len() > limit {
                    break;
                }
            }
        }
        None => {
            for entry in events.range(start..).map_err(storage)? {
                let (key, _) = entry.map_err(storage)?;
                ids.push(key.value());
                if ids.len() > limit {
                    break;
                }
            }
        }
    }
    let more = ids.len() > limit;
    ids.truncate(limit);
    let mut page = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(event) = view(&events, &bodies, id, query.with_body)? {
            page.push(event);
        }
    }
    let next = if more {
        page.last().map(|event| event.id)
    } else {
        None
    };
    Ok(Page::new(page, next))
}

fn view(
    events: &impl ReadableTable<u64, &'static [u8]>,
    bodies: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
    with_body: bool,
) -> Result<Option<StoredEvent>, InboxError> {
    let Some(bytes) = events.get(id).map_err(storage)? else {
        return Ok(None);
    };
    let mut event = Record::decode(id, bytes.value())?.view(id)?;
    if with_body {
        event.body = bodies
            .get(id)
            .map_err(storage)?
            .map(|body| bytes::Bytes::copy_from_slice(body.value()));
    }
    Ok(Some(event))
}

impl InboxStore for FileStore {
    fn append(&self, event: NewEvent) -> BoxFuture<Result<Appended, InboxError>> {
        self.request(Op::Append(event), |answer| match answer {
            Answer::Appended(appended) => Some(appended),
            _ => None,
        })
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<Result<Claimed, InboxError>> {
        self.request(Op::Claim(request), |answer| match answer {
            Answer::Claimed(claimed) => Some(claimed),
            _ => None,
        })
    }

    fn renew(&self, lease: Lease, duration: Duration) -> BoxFuture<Result<bool, InboxError>> {
        self.request(Op::Renew(lease, duration), flag)
    }

    fn settle(&self, lease: Lease, outcome: Settle) -> BoxFuture<Result<bool, InboxError>> {
        self.request(Op::Settle(lease, outcome), flag)
    }

    /// All of them in one transaction, committed with one sync: every answer, or the same
    /// error for each.
    fn settle_many(
        &self,
        settlements: Vec<(Lease, Settle)>,
    ) -> BoxFuture<Vec<Result<bool, InboxError>>> {
        let n = settlements.len();
        if n == 0 {
            return Box::pin(std::future::ready(Vec::new()));
        }
        let flags = self.request(Op::SettleMany(settlements), |answer| match answer {
            Answer::Flags(flags) => Some(flags),
            _ => None,
        });
        Box::pin(async move {
            match flags.await {
                Ok(flags) if flags.len() == n => flags.into_iter().map(Ok).collect(),
                Ok(_) => {
                    let error = InboxError::storage("the writer gave an unexpected answer");
                    vec![Err(error); n]
                }
                Err(error) => vec![Err(error); n],
            }
        })
    }

    fn counts(&self) -> BoxFuture<Result<Counts, InboxError>> {
        self.read(count)
    }

    fn list(&self, query: ListQuery) -> BoxFuture<Result<Page, InboxError>> {
        self.read(move |db| list(db, query))
    }

    fn get(
        &self,
        id: EventId,
        with_body: bool,
    ) -> BoxFuture<Result<Option<StoredEvent>, InboxError>> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(snapshot_error)?;
            let events = txn.open_table(EVENTS).map_err(snapshot_error)?;
            let bodies = txn.open_table(BODIES).map_err(snapshot_error)?;
            view(&events, &bodies, id.get(), with_body)
        })
    }

    fn replay(&self, id: EventId) -> BoxFuture<Result<bool, InboxError>> {
        self.request(Op::Replay(id), flag)
    }

    fn replay_dead(&self) -> BoxFuture<Result<u64, InboxError>> {
        self.request(Op::ReplayDead, |answer| match answer {
            Answer::Count(count) => Some(count),
            _ => None,
        })
    }

    fn purge(&self, retention: Duration, limit: usize) -> BoxFuture<Result<Purged, InboxError>> {
        self.request(Op::Purge(retention, limit), |answer| match answer {
            Answer::Purged(purged) => Some(purged),
            _ => None,
        })
    }
}

fn flag(answer: Answer) -> Option<bool> {
    match answer {
        Answer::Flag(flag) => Some(flag),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;
    use crate::inbox::store::Appended;

    /// The file's backend, failing every call while `fail` is raised.
    #[derive(Debug)]
    struct Faulty {
        inner: FileBackend,
        fail: Arc<AtomicBool>,
        calls_while_failing: Arc<AtomicUsize>,
    }

    impl Faulty {
        fn check(&self) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                self.calls_while_failing.fetch_add(1, Ordering::SeqCst);
                return Err(io::Error::other("injected: no space left on device"));
            }
            Ok(())
        }
    }

    impl StorageBackend for Faulty {
        fn len(&self) -> io::Result<u64> {
            self.check()?;
            self.inner.len()
        }
        fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
            self.check()?;
            self.inner.read(offset, len)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> io::Result<()> {
            self.check()?;
            self.inner.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
    }

    fn event(n: u32) -> NewEvent {
        let body = format!(r#"{{"event":"email.delivered","messageId":"m-{n}","data":{{}}}}"#);
        let envelope = crate::Envelope::parse(bytes::Bytes::from(body)).unwrap();
        let event = crate::VerifiedEvent::new(envelope, 1_700_000_000, None, 0);
        NewEvent::from_event(&event, Some(format!("m-{n}")), Duration::from_secs(3600))
    }

    fn temp_file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("metigan-inbox-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("inbox.redb")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_io_error_closes_the_database_and_it_is_reopened_once_the_disk_works() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let path = temp_file("reopen");
        let fail = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let store = FileStore::open_with(&path, |inner| {
            Arc::new(Faulty {
                inner,
                fail: fail.clone(),
                calls_while_failing: calls.clone(),
            })
        })
        .unwrap();
        let first = store.append(event(1)).await.unwrap();
        assert!(matches!(first, Appended::Stored(_)));

        fail.store(true, Ordering::SeqCst);
        for n in 2..5 {
            let error = store.append(event(n)).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Storage);
        }
        // Still one owner: the file stays locked while the store reopens it.
        assert_eq!(
            FileStore::open(&path).unwrap_err().kind(),
            ErrorKind::AlreadyOpen
        );
        // A failing disk is not hammered: reopening backs off (100 ms, 200 ms, ... 1 s).
        let before = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let attempts = calls.load(Ordering::SeqCst) - before;
        assert!(attempts <= 10, "{attempts} backend calls in 1.5 s");
        println!("{attempts} backend calls in 1.5 s of failures");
        assert!(store.append(event(5)).await.is_err());

        // The disk works again: reopened without traffic, within the longest backoff.
        fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = Instant::now();
        let second = store.append(event(6)).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(matches!(second, Appended::Stored(_)));
        assert!(store.get(first.id(), true).await.unwrap().is_some());
        assert!(store.get(second.id(), false).await.unwrap().is_some());
        // Nothing refused was stored; both acknowledged events are.
        assert_eq!(store.counts().await.unwrap().total(), 2);
        assert_eq!(
            FileStore::open(&path).unwrap_err().kind(),
            ErrorKind::AlreadyOpen
        );
        drop(store);
        // Closed cleanly: the file opens again with both events.
        let reopened = FileStore::open(&path).unwrap();
        assert_eq!(reopened.counts().await.unwrap().total(), 2);
        drop(reopened);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}

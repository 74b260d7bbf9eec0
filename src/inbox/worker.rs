//! The worker: claims stored events and runs the handler for each, at least once.

use std::fmt;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tower_service::Service;

use super::backoff::Backoff;
use super::error::{ErrorKind, InboxError};
use super::handle::Shared;
use super::handler::{handler_fn, HandlerError};
use super::store::{BoxFuture, ClaimRequest, ClaimedEvent, Lease, Settle};
use crate::event::{Envelope, VerifiedEvent};
use crate::idempotency::MAX_DURATION;
use crate::record::{self, HandlerOutcome};

/// Default number of handlers run at once: 4.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default lease of a claimed event: 60 s, renewed every 20 s while its handler runs.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Default attempts before an event becomes a dead letter: 15 (about a day with the default
/// [`Backoff`]).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 15;
/// Default longest wait between two looks at the store when nothing wakes the worker: 30 s.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// Default interval between two refreshes of the inbox gauges: 5 s.
#[cfg(feature = "metrics")]
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest lease accepted (renewals come every third of it).
const MIN_LEASE: Duration = Duration::from_millis(30);
/// The pause after the store failed to answer a claim.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How long handlers stopped at the shutdown deadline get to give their events back.
const RELEASE_GRACE: Duration = Duration::from_secs(5);
/// At most this many settlements go to the store in one call.
const MAX_SETTLE_BATCH: usize = 1024;
/// The most turns of the runtime the settler lets pass while more outcomes arrive.
const SETTLE_TURNS: usize = 4;
/// Pauses between attempts to record a handler's outcome.
const SETTLE_PAUSES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(1),
];

/// Builds and starts a [`Worker`]; made by [`Inbox::worker`](super::Inbox::worker).
#[must_use]
pub struct WorkerBuilder {
    shared: Arc<Shared>,
    concurrency: usize,
    lease: Duration,
    max_attempts: u32,
    backoff: Backoff,
    poll_interval: Duration,
    #[cfg(feature = "metrics")]
    metrics_interval: Duration,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// Everything a worker's tasks share.
struct Config {
    shared: Arc<Shared>,
    /// Where handler tasks queue their outcomes for the settler task.
    settlements: mpsc::UnboundedSender<Pending>,
    /// What the settler task reports.
    settling: Arc<Settling>,
    concurrency: usize,
    lease: Duration,
    max_attempts: u32,
    backoff: Backoff,
    poll_interval: Duration,
}

impl WorkerBuilder {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        let poll_interval = shared
            .store
            .poll_interval()
            .unwrap_or(DEFAULT_POLL_INTERVAL);
        WorkerBuilder {
            shared,
            concurrency: DEFAULT_CONCURRENCY,
            lease: DEFAULT_LEASE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            poll_interval,
            #[cfg(feature = "metrics")]
            metrics_interval: DEFAULT_METRICS_INTERVAL,
        }
    }

    /// How many handlers run at once (default 4; at least 1).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How long a claimed event is held without renewal (default 60 s, at least 30 ms). The
    /// worker renews it every third of that while the handler runs, so a slow handler keeps
    /// its event; a worker that died loses it when the lease runs out, and another takes it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.clamp(MIN_LEASE, MAX_DURATION);
        self
    }

    /// Attempts before an event becomes a dead letter (default 15; at least 1).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The delays between attempts (default: 30 s doubling up to 4 h, with jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest the worker waits before looking at the store again when nothing woke it
    /// (default: what the store asks for, such as 1 s for
    /// [`PostgresStore`](super::PostgresStore) whose other instances append without waking
    /// this worker; otherwise 30 s). A new event, a replay, a finished handler, a retry's time and a lease
    /// running out all wake it sooner; this only bounds the wait for changes made outside
    /// this inbox.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.clamp(Duration::from_millis(1), MAX_DURATION);
        self
    }

    /// How often the worker refreshes the inbox gauges of [`metrics`](crate::metrics) (default
    /// 5 s, at least 10 ms): one count per state and one listing of the oldest queued event.
    #[cfg(feature = "metrics")]
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = interval.clamp(Duration::from_millis(10), MAX_DURATION);
        self
    }

    /// Starts the worker on the current Tokio runtime, running `handler` (a `tower::Service`
    /// of [`VerifiedEvent`]) for each stored event.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoRuntime`](super::ErrorKind::NoRuntime) outside a Tokio runtime.
    pub fn spawn<S>(self, handler: S) -> Result<Worker, InboxError>
    where
        S: Service<VerifiedEvent> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<HandlerError>,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            InboxError::new(
                ErrorKind::NoRuntime,
                "the worker must be started inside a Tokio runtime",
            )
        })?;
        let (settlements, queue) = mpsc::unbounded_channel();
        let settling = Arc::new(Settling::default());
        runtime.spawn(settler(self.shared.clone(), queue, settling.clone()));
        let config = Arc::new(Config {
            shared: self.shared,
            settlements,
            settling,
            concurrency: self.concurrency,
            lease: self.lease,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            poll_interval: self.poll_interval,
        });
        let (control, phase) = watch::channel(Phase::Running);
        #[cfg(feature = "metrics")]
        runtime.spawn(refresh_gauges(
            config.shared.clone(),
            self.metrics_interval,
            phase.clone(),
        ));
        let main = runtime.spawn(run(config, handler, phase));
        Ok(Worker {
            main: Some(main),
            control,
        })
    }

    /// [`spawn`](Self::spawn) with an async function as the handler.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoRuntime`](super::ErrorKind::NoRuntime) outside a Tokio runtime.
    pub fn spawn_fn<F, Fut, E>(self, handler: F) -> Result<Worker, InboxError>
    where
        F: FnMut(VerifiedEvent) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        self.spawn(handler_fn(handler))
    }
}

/// Where the worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Take no new event; running handlers go on.
    Stopping,
    /// Stop the handlers still running and give their events back.
    Cancel,
}

/// A running worker. [`shutdown`](Self::shutdown) stops it gracefully; dropping it stops it at
/// once, like a crash: its running handlers are dropped and their events are taken again when
/// their leases run out.
pub struct Worker {
    main: Option<JoinHandle<JoinSet<End>>>,
    control: watch::Sender<Phase>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("phase", &*self.control.borrow())
            .finish_non_exhaustive()
    }
}

/// How a graceful shutdown went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Handlers that finished (successfully or not) before the deadline.
    pub finished: usize,
    /// Handlers stopped at the deadline; their events were given back, due at once.
    pub released: usize,
    /// Handlers that could not give their events back (a store error, or no answer within 5
    /// s of the deadline): those events are taken again when their leases run out.
    pub abandoned: usize,
}

impl Worker {
    /// Stops taking events, lets running handlers finish within `deadline`, then stops those
    /// still running and gives their events back to the store (due at once, the attempt not
    /// counted), so the next start runs them. Events not yet started stay queued.
    pub async fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        let Some(mut main) = self.main.take() else {
            return report;
        };
        let deadline = after(deadline);
        let _ = self.control.send(Phase::Stopping);
        // The main loop stops at once, unless it waits for the store: bounded by the deadline.
        let mut tasks = match tokio::time::timeout_at(deadline, &mut main).await {
            Ok(Ok(tasks)) => tasks,
            Ok(Err(error)) => {
                tracing::error!(%error, "inbox: the worker stopped abnormally");
                return report;
            }
            Err(_) => {
                main.abort();
                tracing::warn!(
                    "inbox: the worker did not stop within its deadline (the store did not \
                     answer); its events are taken again when their leases run out"
                );
                return report;
            }
        };
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(end)) => report.note(end),
                Ok(None) => return report,
                Err(_) => break,
            }
        }
        let _ = self.control.send(Phase::Cancel);
        let grace = after(RELEASE_GRACE);
        loop {
            match tokio::time::timeout_at(grace, tasks.join_next()).await {
                Ok(Some(end)) => report.note(end),
                Ok(None) => break,
                Err(_) => {
                    report.abandoned += tasks.len();
                    tasks.abort_all();
                    break;
                }
            }
        }
        report
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(main) = self.main.take() {
            // Aborting the main task drops its set of handler tasks, which aborts them.
            main.abort();
        }
    }
}

/// The instant `delay` from now (ten years at most, so it never overflows).
fn after(delay: Duration) -> Instant {
    Instant::now() + delay.min(MAX_DURATION)
}

/// How one handler task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its outcome is recorded.
    Settled,
    /// Stopped at the shutdown deadline; the event is given back.
    Released,
    /// Its outcome could not be recorded; the lease will run out.
    Unrecorded,
}

impl ShutdownReport {
    fn note(&mut self, end: Result<End, JoinError>) {
        match end {
            Ok(End::Settled) => self.finished += 1,
            Ok(End::Released) => self.released += 1,
            Ok(End::Unrecorded) | Err(_) => self.abandoned += 1,
        }
    }
}

/// The main loop: claims as many events as there are free slots, runs each in its own task,
/// and sleeps until a new event, a free slot, the next due time or a shutdown.
async fn run<S>(config: Arc<Config>, handler: S, mut phase: watch::Receiver<Phase>) -> JoinSet<End>
where
    S: Service<VerifiedEvent> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<HandlerError>,
{
    let store = config.shared.store.clone();
    let mut tasks = JoinSet::new();
    // Set once a batch of settlements the loop waited for is recorded: claim then, whatever.
    let mut settled = false;
    loop {
        // Handlers whose outcomes were recorded together end at about the same time: let them
        // (a few turns of the runtime at most, while more end), so that one claim refills
        // every freed slot instead of one claim each.
        let mut turns = 0;
        loop {
            let mut ended = false;
            while let Some(end) = tasks.try_join_next() {
                log_join(end);
                ended = true;
            }
            if tasks.is_empty() || (turns > 0 && !ended) || turns == SETTLE_TURNS {
                break;
            }
            turns += 1;
            tokio::task::yield_now().await;
        }
        if *phase.borrow() != Phase::Running {
            return tasks;
        }
        let free = config.concurrency.saturating_sub(tasks.len());
        let mut wait = config.poll_interval;
        // Created before the look at the settler, so that a batch recorded in between counts.
        let batch_recorded = config.settling.recorded.notified();
        // Slots freed while other handlers' outcomes are being recorded: those free theirs
        // when that write commits, and a claim sent now would be committed after it anyway.
        // Wait for it, so that one claim refills every slot freed (and the handlers started
        // together end together, their outcomes sharing one sync) instead of one claim per
        // slot, staggered.
        let hold = !std::mem::take(&mut settled)
            && free > 0
            && free < config.concurrency
            && config.settling.pending.load(Ordering::Acquire) > 0;
        if free > 0 && !hold {
            let request = ClaimRequest::new(free, config.lease, config.max_attempts);
            match store.claim(request).await {
                Ok(claimed) => {
                    let stopping = *phase.borrow() != Phase::Running;
                    let got = claimed.events.len();
                    for event in claimed.events {
                        if stopping {
                            // Claimed as the shutdown began: give it back untouched.
                            let lease = event.lease;
                            settle(&config, lease, Settle::Release).await;
                            continue;
                        }
                        let run = run_one(config.clone(), handler.clone(), event, phase.clone());
                        tasks.spawn(run);
                    }
                    if got == 0 {
                        if let Some(next) = claimed.next_due {
                            // At least a millisecond: never spin on an event due "now".
                            wait = wait.min(next.max(Duration::from_millis(1)));
                        }
                    } else if let Some(next) = claimed.next_due {
                        wait = wait.min(next);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "inbox: the worker could not claim events; trying again in 1 s");
                    wait = ERROR_PAUSE;
                }
            }
        }
        let free = config.concurrency.saturating_sub(tasks.len());
        let recorded = hold.then_some(batch_recorded);
        let woke = wait_for_work(
            &config,
            &mut tasks,
            &mut phase,
            free > 0 && !hold,
            wait,
            recorded,
        )
        .await;
        match woke {
            Woke::Closed => return tasks,
            Woke::Recorded => settled = true,
            Woke::Work => {}
        }
    }
}

/// Why [`wait_for_work`] returned.
enum Woke {
    /// Something to look at.
    Work,
    /// The batch of settlements waited for is recorded.
    Recorded,
    /// The worker's handle is gone.
    Closed,
}

/// Waits for a reason to look at the store again: a phase change, a handler task that ended,
/// the batch of settlements in `recorded`, and with room for more handlers, a new event or
/// the timer.
async fn wait_for_work(
    config: &Config,
    tasks: &mut JoinSet<End>,
    phase: &mut watch::Receiver<Phase>,
    has_room: bool,
    wait: Duration,
    recorded: Option<tokio::sync::futures::Notified<'_>>,
) -> Woke {
    let mut woken = pin!(config.shared.wake.notified());
    let mut timer = pin!(tokio::time::sleep(wait));
    let mut changed = pin!(phase.changed());
    let mut recorded = pin!(recorded);
    poll_fn(|cx| {
        if let Poll::Ready(result) = changed.as_mut().poll(cx) {
            return Poll::Ready(if result.is_err() {
                Woke::Closed
            } else {
                Woke::Work
            });
        }
        if !tasks.is_empty() {
            if let Poll::Ready(Some(end)) = tasks.poll_join_next(cx) {
                log_join(end);
                return Poll::Ready(Woke::Work);
            }
        }
        if let Some(recorded) = recorded.as_mut().as_pin_mut() {
            if recorded.poll(cx).is_ready() {
                return Poll::Ready(Woke::Recorded);
            }
        }
        if has_room && (woken.as_mut().poll(cx).is_ready() || timer.as_mut().poll(cx).is_ready()) {
            return Poll::Ready(Woke::Work);
        }
        Poll::Pending
    })
    .await
}

fn log_join(end: Result<End, JoinError>) {
    if let Err(error) = end {
        if error.is_panic() {
            tracing::error!("inbox: a worker task panicked");
        }
    }
}

/// Rebuilds the verified event from what was stored.
fn rebuild(claimed: &ClaimedEvent) -> Option<VerifiedEvent> {
    let envelope = Envelope::parse(claimed.body.clone()).ok()?;
    Some(VerifiedEvent::new(
        envelope,
        claimed.signed_at,
        claimed.webhook_id.clone(),
        claimed.secret_index,
    ))
}

/// Runs the handler for one claimed event, renewing its lease until it ends, and records the
/// outcome.
async fn run_one<S>(
    config: Arc<Config>,
    mut handler: S,
    claimed: ClaimedEvent,
    mut phase: watch::Receiver<Phase>,
) -> End
where
    S: Service<VerifiedEvent> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<HandlerError>,
{
    let lease = claimed.lease;
    let Some(event) = rebuild(&claimed) else {
        let error = "the stored body is not a Metigan envelope".to_owned();
        record::handler_outcome(HandlerOutcome::DeadLettered);
        return settle(&config, lease, Settle::Dead { error }).await;
    };
    let call: Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>> =
        Box::pin(async move {
            poll_fn(|cx| handler.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            handler.call(event).await.map(drop).map_err(Into::into)
        });
    let cancelled = async move {
        if phase.wait_for(|p| *p == Phase::Cancel).await.is_err() {
            // The worker's handle is gone: the task is being aborted; never "cancel".
            std::future::pending::<()>().await;
        }
    };
    let result = supervise(&config, lease, CatchUnwind(call), cancelled).await;
    let outcome = match result {
        None => {
            record::handler_outcome(HandlerOutcome::Released);
            return settle(&config, lease, Settle::Release).await.released();
        }
        Some(Ok(())) => Settle::Done,
        Some(Err(error)) => decide(&config, lease, claimed.attempt, error),
    };
    record::handler_outcome(match outcome {
        Settle::Done => HandlerOutcome::Succeeded,
        Settle::Retry { .. } => HandlerOutcome::Retried,
        Settle::Dead { .. } => HandlerOutcome::DeadLettered,
        Settle::Release => HandlerOutcome::Released,
    });
    settle(&config, lease, outcome).await
}

impl End {
    fn released(self) -> End {
        match self {
            End::Settled => End::Released,
            other => other,
        }
    }
}

/// What to do with an event whose handler failed on attempt `attempt`.
fn decide(config: &Config, lease: Lease, attempt: u32, error: HandlerError) -> Settle {
    let id = lease.id();
    let message = error.message().to_owned();
    if error.is_permanent() {
        tracing::warn!(event = %id, attempt, error = %message, "inbox: handler failed permanently; dead letter");
        return Settle::Dead { error: message };
    }
    if attempt >= config.max_attempts {
        tracing::warn!(event = %id, attempt, error = %message, "inbox: handler failed on the last attempt; dead letter");
        return Settle::Dead { error: message };
    }
    let after = error
        .retry_delay()
        .unwrap_or_else(|| config.backoff.delay(attempt));
    tracing::info!(event = %id, attempt, error = %message, retry_in = ?after, "inbox: handler failed; will retry");
    Settle::Retry {
        after,
        error: message,
    }
}

/// What the settler task tells the main loop.
#[derive(Default)]
struct Settling {
    /// Outcomes queued or being written.
    pending: AtomicUsize,
    /// Notified (all waiters) after each batch is recorded and answered.
    recorded: Notify,
}

/// One outcome waiting for the settler, and where its answer goes.
struct Pending {
    lease: Lease,
    outcome: Settle,
    reply: oneshot::Sender<Result<bool, InboxError>>,
}

/// The settler task: hands the store every outcome queued meanwhile in one
/// [`settle_many`](super::InboxStore::settle_many), so the handlers that end together share one
/// durable write (one sync with [`FileStore`](super::FileStore)) instead of one each. Each
/// handler's task still waits for its own answer: an event counts as handled only once its
/// outcome is durable. Ends when every sender (the worker's tasks) is gone.
async fn settler(
    shared: Arc<Shared>,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    settling: Arc<Settling>,
) {
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.push(first);
        // The handlers ending at about the same time queue theirs meanwhile: the settler lets
        // the tasks ready to run go first, as long as that brings more (a few turns at most).
        // A lone outcome waits for nothing but one turn of the runtime.
        for _ in 0..SETTLE_TURNS {
            tokio::task::yield_now().await;
            let before = batch.len();
            while batch.len() < MAX_SETTLE_BATCH {
                match queue.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() >= MAX_SETTLE_BATCH {
                break;
            }
        }
        let n = batch.len();
        let (settlements, replies): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|pending| ((pending.lease, pending.outcome), pending.reply))
            .unzip();
        // A store that panics fails this batch (each task tries again), not the settler.
        let mut settlements = Some(settlements);
        let mut write: Option<BoxFuture<Vec<Result<bool, InboxError>>>> = None;
        let written = poll_fn(|cx| {
            catch_unwind(AssertUnwindSafe(|| {
                let write = write.get_or_insert_with(|| {
                    shared
                        .store
                        .settle_many(settlements.take().unwrap_or_default())
                });
                write.as_mut().poll(cx)
            }))
            .unwrap_or_else(|_| Poll::Ready(Vec::new()))
        })
        .await;
        let mut answers = written.into_iter();
        for reply in replies {
            let answer = answers.next().unwrap_or_else(|| {
                Err(InboxError::storage(
                    "the store gave no answer for this settlement (it panicked, or answered fewer)",
                ))
            });
            // A task that went away (aborted) no longer needs its answer.
            let _ = reply.send(answer);
        }
        settling.pending.fetch_sub(n, Ordering::AcqRel);
        settling.recorded.notify_waiters();
    }
}

/// Queues `outcome` for the settler and waits until the store has recorded it.
async fn settle_once(config: &Config, lease: Lease, outcome: Settle) -> Result<bool, InboxError> {
    let (reply, answer) = oneshot::channel();
    let pending = Pending {
        lease,
        outcome,
        reply,
    };
    config.settling.pending.fetch_add(1, Ordering::AcqRel);
    if config.settlements.send(pending).is_err() {
        config.settling.pending.fetch_sub(1, Ordering::AcqRel);
        return Err(InboxError::closed());
    }
    answer.await.map_err(|_| InboxError::closed())?
}

/// Records `outcome`, trying again a few times when the store fails.
async fn settle(config: &Config, lease: Lease, outcome: Settle) -> End {
    let mut pauses = SETTLE_PAUSES.iter();
    loop {
        match settle_once(config, lease, outcome.clone()).await {
            Ok(true) => return End::Settled,
            Ok(false) => {
                tracing::warn!(event = %lease.id(), "inbox: the event's lease was lost (it ran out and another claim took the event); this run's outcome is not recorded");
                return End::Unrecorded;
            }
            Err(error) => match pauses.next() {
                Some(pause) => tokio::time::sleep(*pause).await,
                None => {
                    tracing::error!(event = %lease.id(), %error, "inbox: the handler's outcome could not be recorded; the event runs again when its lease runs out");
                    return End::Unrecorded;
                }
            },
        }
    }
}

/// Drives `call` to its end, renewing `lease` every third of the configured lease meanwhile.
/// `None` when `cancelled` completes first (the call is then dropped).
async fn supervise<F>(
    config: &Config,
    lease: Lease,
    call: F,
    cancelled: impl Future<Output = ()>,
) -> Option<Result<(), HandlerError>>
where
    F: Future<Output = Result<(), HandlerError>>,
{
    let every = config.lease / 3;
    let mut call = pin!(call);
    let mut cancelled = pin!(cancelled);
    let mut timer = pin!(tokio::time::sleep(every));
    let mut renewing: Option<BoxFuture<Result<bool, InboxError>>> = None;
    poll_fn(|cx| {
        if let Poll::Ready(result) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        if cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        loop {
            if let Some(renewal) = renewing.as_mut() {
                let Poll::Ready(result) = renewal.as_mut().poll(cx) else {
                    break;
                };
                renewing = None;
                match result {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(event = %lease.id(), "inbox: the event's lease was lost while its handler ran; it may run twice"),
                    Err(error) => tracing::warn!(event = %lease.id(), %error, "inbox: the event's lease could not be renewed"),
                }
            }
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
            timer.as_mut().reset(after(every));
            renewing = Some(config.shared.store.renew(lease, config.lease));
        }
        Poll::Pending
    })
    .await
}

/// A handler's future, with a panic turned into a transient error.
struct CatchUnwind<F>(F);

impl<F> Future for CatchUnwind<F>
where
    F: Future<Output = Result<(), HandlerError>> + Unpin,
{
    type Output = Result<(), HandlerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(poll) => poll,
            Err(_) => Poll::Ready(Err(HandlerError::transient("the handler panicked"))),
        }
    }
}

/// Sets the inbox gauges now, then every `interval`, until the worker stops or is dropped.
#[cfg(feature = "metrics")]
async fn refresh_gauges(
    shared: Arc<Shared>,
    interval: Duration,
    mut phase: watch::Receiver<Phase>,
) {
    use super::store::{ListQuery, State};
    loop {
        let oldest = shared
            .store
            .list(ListQuery::new().state(State::Queued).limit(1))
            .await;
        match (shared.store.counts().await, oldest) {
            (Ok(counts), Ok(oldest)) => {
                let age = oldest.events.first().map_or(0.0, |event| {
                    std::time::SystemTime::now()
                        .duration_since(event.received_at)
                        .map_or(0.0, |age| age.as_secs_f64())
                });
                record::inbox_gauges(&counts, age);
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%error, "inbox: could not read the store for the metrics gauges");
            }
        }
        match tokio::time::timeout(interval, phase.wait_for(|p| *p != Phase::Running)).await {
            // Timed out: refresh again.
            Err(_) => {}
            // Stopping, or the worker's handle is gone.
            Ok(_) => return,
        }
    }
}

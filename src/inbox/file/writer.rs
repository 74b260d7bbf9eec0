//! The writer thread: every change to the file goes through it, in batches. It takes every
//! command queued while the previous batch was being committed, applies them all in one write
//! transaction, commits once (one sync) and then answers each caller. Under load, many
//! appends share one commit (group commit); alone, an append is committed at once, with no
//! added wait.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable};
use tokio::sync::oneshot;

use super::backend::Counters;
use super::tables::{code, first_due, storage, Record, Tables};
use super::{Opener, Shared};
use crate::inbox::error::InboxError;
use crate::inbox::store::{
    millis_of, to_millis, Appended, ClaimRequest, Claimed, ClaimedEvent, EventId, Lease, NewEvent,
    Purged, Settle, State,
};

/// At most this many commands share one transaction.
const MAX_BATCH: usize = 4096;
/// A batch stops growing once its bodies reach this many bytes.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// A change asked of the writer.
pub(super) enum Op {
    Append(NewEvent),
    Claim(ClaimRequest),
    Renew(Lease, Duration),
    Settle(Lease, Settle),
    /// Many settlements in one transaction (one sync for all).
    SettleMany(Vec<(Lease, Settle)>),
    Replay(EventId),
    ReplayDead,
    Purge(Duration, usize),
}

/// The writer's answer to one [`Op`].
pub(super) enum Answer {
    Appended(Appended),
    Claimed(Claimed),
    Flag(bool),
    Flags(Vec<bool>),
    Count(u64),
    Purged(Purged),
}

pub(super) type Reply = oneshot::Sender<Result<Answer, InboxError>>;

/// One command and where its answer goes.
pub(super) struct Command {
    pub(super) op: Op,
    pub(super) reply: Reply,
}

/// What an op needs of the commit that follows it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Effect {
    /// It changed nothing.
    None,
    /// It changed what a crash may undo without breaking a promise (a claim, a renewal: the
    /// event is then claimed again, which at-least-once allows).
    Volatile,
    /// It must survive a crash before it is answered (an append, a settlement, a replay).
    Durable,
}

/// The shortest wait between two attempts to reopen the file after an I/O error.
const MIN_REOPEN_DELAY: Duration = Duration::from_millis(100);
/// The longest: the backoff doubles up to this.
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(1);

/// The database the writer uses, and the flag its backend raises at its first I/O error.
pub(super) struct Open {
    pub(super) db: Arc<Database>,
    pub(super) failed: Arc<AtomicBool>,
}

/// The database after an I/O error: closed, to be reopened at `retry_at`.
struct Broken {
    /// The failed database, until every read that holds it is done and it can be dropped
    /// (which unlocks the file for the reopening).
    old: Option<Arc<Database>>,
    retry_at: Instant,
    delay: Duration,
    /// Commands refused since the failure.
    refused: u64,
    attempts: u64,
}

enum Db {
    Open(Open),
    Broken(Broken),
}

/// Runs until every sender is gone.
pub(super) fn run(open: Open, shared: Arc<Shared>, opener: Opener, commands: Receiver<Command>) {
    let mut db = Db::Open(open);
    let mut batch: Vec<Command> = Vec::new();
    loop {
        let first = match &db {
            Db::Open(_) => match commands.recv() {
                Ok(command) => command,
                Err(_) => break,
            },
            // Closed: reopen when its time comes, whether or not commands arrive.
            Db::Broken(broken) => {
                let wait = broken.retry_at.saturating_duration_since(Instant::now());
                match commands.recv_timeout(wait) {
                    Ok(command) => command,
                    Err(RecvTimeoutError::Timeout) => {
                        db = reopen(db, &shared, &opener);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut bytes = body_len(&first.op);
        batch.push(first);
        // A small batch first lets the threads that feed the writer run (twice at most): on a
        // busy core, appends queued meanwhile then share this commit and its sync instead of
        // each waiting for the next (BENCHMARKS.md section 8).
        let mut yields = 0;
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match commands.try_recv() {
                Ok(command) => {
                    bytes += body_len(&command.op);
                    batch.push(command);
                }
                Err(_) if yields < 2 && batch.len() < 32 => {
                    yields += 1;
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<Reply>) = batch
            .drain(..)
            .map(|command| (command.op, command.reply))
            .unzip();
        if matches!(&db, Db::Broken(broken) if broken.retry_at <= Instant::now()) {
            db = reopen(db, &shared, &opener);
        }
        let open = match &mut db {
            Db::Open(open) => open,
            Db::Broken(broken) => {
                // Not reopened yet: refused at once (503 for an append), logged once per
                // streak (when it began).
                broken.refused = broken.refused.saturating_add(replies.len() as u64);
                let error = InboxError::storage(
                    "the inbox file is being reopened after an I/O error; nothing was written",
                );
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                continue;
            }
        };
        // A panic inside the database must not take the writer down with it: every caller of
        // the batch gets an error (503 for an append), and the next batch tries again.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            apply_batch(&open.db, ops, &opener.counters)
        }))
        .unwrap_or_else(|_| Err(InboxError::storage("the database panicked during a commit")));
        let mut broke = None;
        match outcome {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that went away no longer needs its answer.
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(error) => {
                let refused = replies.len() as u64;
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                if open.failed.load(Ordering::Acquire) {
                    // redb refuses every later write of this database: close it (reads too)
                    // and reopen the file.
                    tracing::warn!(
                        %error,
                        path = %opener.path.display(),
                        "inbox: an I/O error failed a write transaction (nothing of it was \
                         committed); closing the database and reopening it over the file \
                         (still locked) until it works, answering 503 meanwhile"
                    );
                    // Reads stop taking it; those in flight keep their own `Arc`.
                    shared.set(None);
                    broke = Some(refused);
                } else {
                    tracing::warn!(%error, "inbox: a write transaction failed; nothing of it was committed");
                }
            }
        }
        if let Some(refused) = broke {
            db = match db {
                Db::Open(open) => Db::Broken(Broken {
                    old: Some(open.db),
                    retry_at: Instant::now() + MIN_REOPEN_DELAY,
                    delay: MIN_REOPEN_DELAY,
                    refused,
                    attempts: 0,
                }),
                broken @ Db::Broken(_) => broken,
            };
        }
    }
}

/// Tries to reopen the file of a broken database; backs off when it cannot yet.
fn reopen(db: Db, shared: &Shared, opener: &Opener) -> Db {
    let mut broken = match db {
        Db::Open(open) => return Db::Open(open),
        Db::Broken(broken) => broken,
    };
    broken.attempts = broken.attempts.saturating_add(1);
    // The old database must be gone before another one uses the file: a snapshot read from it
    // could see pages the new one reuses.
    if let Some(old) = broken.old.take() {
        match Arc::try_unwrap(old) {
            Ok(old) => {
                // Dropping it may try to write (and fail): never a reason to stop.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
            }
            Err(old) => {
                // A read still holds it: soon done.
                broken.old = Some(old);
                broken.retry_at = Instant::now() + MIN_REOPEN_DELAY;
                return Db::Broken(broken);
            }
        }
    }
    let opened = catch_unwind(AssertUnwindSafe(|| opener.open()))
        .unwrap_or_else(|_| Err(InboxError::storage("the database panicked while opening")));
    match opened {
        Ok(opened) => {
            let db = Arc::new(opened.db);
            shared.set(Some(db.clone()));
            tracing::info!(
                path = %opener.path.display(),
                refused = broken.refused,
                attempts = broken.attempts,
                "inbox: the database is reopened after an I/O error; writes work again"
            );
            Db::Open(Open {
                db,
                failed: opened.failed,
            })
        }
        Err(error) => {
            tracing::debug!(%error, "inbox: cannot reopen the file yet");
            broken.delay = broken.delay.saturating_mul(2).min(MAX_REOPEN_DELAY);
            broken.retry_at = Instant::now() + broken.delay;
            Db::Broken(broken)
        }
    }
}

fn body_len(op: &Op) -> usize {
    match op {
        Op::Append(event) => event.body.len(),
        _ => 0,
    }
}

/// Applies `ops` in one transaction and commits it: all of them, or none.
fn apply_batch(
    db: &Database,
    ops: Vec<Op>,
    counters: &Counters,
) -> Result<Vec<Answer>, InboxError> {
    let now = to_millis(SystemTime::now());
    let mut txn = db.begin_write().map_err(storage)?;
    let mut answers = Vec::with_capacity(ops.len());
    let mut effect = Effect::None;
    let mut appends = 0;
    let operations = ops.len() as u64;
    {
        let mut tables = Tables::open(&txn)?;
        for op in ops {
            if matches!(op, Op::Append(_)) {
                appends += 1;
            }
            let (answer, op_effect) = apply(&mut tables, op, now)?;
            answers.push(answer);
            effect = effect.max(op_effect);
        }
    }
    if effect == Effect::None {
        txn.abort().map_err(storage)?;
    } else {
        txn.set_durability(if effect == Effect::Durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        txn.commit().map_err(storage)?;
        Counters::add(&counters.commits, 1);
        if effect == Effect::Durable {
            Counters::add(&counters.durable_commits, 1);
        }
    }
    Counters::add(&counters.appends, appends);
    counters.operations.fetch_add(operations, Ordering::Relaxed);
    Ok(answers)
}

fn apply(t: &mut Tables<'_>, op: Op, now: u64) -> Result<(Answer, Effect), InboxError> {
    match op {
        Op::Append(event) => append(t, event, now),
        Op::Claim(request) => claim(t, request, now),
        Op::Renew(lease, duration) => {
            let renewed = match held(t, lease)? {
                Some(mut record) => {
                    let until = now.saturating_add(millis_of(duration));
                    let id = lease.id().get();
                    t.transition(id, &mut record, State::Running, Some(until), now)?;
                    true
                }
                None => false,
            };
            Ok(flag(renewed, Effect::Volatile))
        }
        Op::Settle(lease, outcome) => {
            let Some(record) = held(t, lease)? else {
                return Ok(flag(false, Effect::None));
            };
            settle(t, lease.id().get(), record, outcome, now)?;
            Ok(flag(true, Effect::Durable))
        }
        Op::SettleMany(settlements) => {
            let mut flags = Vec::with_capacity(settlements.len());
            let mut effect = Effect::None;
            for (lease, outcome) in settlements {
                // A lease settled earlier in the list is no longer held: `false`, like a
                // second `settle`.
                let settled = match held(t, lease)? {
                    Some(record) => {
                        settle(t, lease.id().get(), record, outcome, now)?;
                        effect = Effect::Durable;
                        true
                    }
                    None => false,
                };
                flags.push(settled);
            }
            Ok((Answer::Flags(flags), effect))
        }
        Op::Replay(id) => {
            let replayed = replay(t, id.get(), now)?;
            Ok(flag(replayed, Effect::Durable))
        }
        Op::ReplayDead => {
            let dead = code(State::Dead);
            let ids = collect(t.states.range((dead, 0)..=(dead, u64::MAX)), usize::MAX)?;
            let mut count = 0;
            for (_, id) in ids {
                if replay(t, id, now)? {
                    count += 1;
                }
            }
            let effect = if count > 0 {
                Effect::Durable
            } else {
                Effect::None
            };
            Ok((Answer::Count(count), effect))
        }
        Op::Purge(retention, limit) => purge(t, retention, limit, now),
    }
}

fn flag(value: bool, effect: Effect) -> (Answer, Effect) {
    (
        Answer::Flag(value),
        if value { effect } else { Effect::None },
    )
}

/// Up to `limit` keys of a range (of a table whose keys own their data: integer tuples).
fn collect<K, T>(
    range: Result<redb::Range<'_, K, ()>, redb::StorageError>,
    limit: usize,
) -> Result<Vec<T>, InboxError>
where
    K: redb::Key + 'static,
    for<'a> K: redb::Value<SelfType<'a> = T>,
{
    let mut keys = Vec::new();
    for entry in range.map_err(storage)? {
        if keys.len() >= limit {
            break;
        }
        let (key, _) = entry.map_err(storage)?;
        keys.push(key.value());
    }
    Ok(keys)
}

/// The record held by `lease`, if it is still held by it.
fn held(t: &Tables<'_>, lease: Lease) -> Result<Option<Record>, InboxError> {
    Ok(t.load(lease.id().get())?
        .filter(|record| record.state == code(State::Running) && record.token == lease.token()))
}

fn append(t: &mut Tables<'_>, event: NewEvent, now: u64) -> Result<(Answer, Effect), InboxError> {
    if let Some(key) = event.key.as_deref() {
        let existing = t.keys.get(key).map_err(storage)?.map(|v| v.value());
        if let Some((id, expires)) = existing {
            if expires > now {
                return Ok((
                    Answer::Appended(Appended::Duplicate(EventId::new(id))),
                    Effect::None,
                ));
            }
            // Expired but not yet purged: the key starts over with this event.
            t.key_expiry.remove((expires, key)).map_err(storage)?;
        }
    }
    let id = t.next_id()?;
    let record = Record {
        state: code(State::Queued),
        event_type: event.event_type,
        message_id: event.message_id,
        key: event.key,
        webhook_id: event.webhook_id,
        signed_at: event.signed_at,
        secret_index: event.secret_index as u64,
        received_ms: to_millis(event.received_at),
        attempts: 0,
        replays: 0,
        last_error: None,
        due_ms: Some(now),
        finished_ms: None,
        token: 0,
    };
    t.bodies.insert(id, event.body.as_ref()).map_err(storage)?;
    t.insert(id, &record)?;
    if let Some(key) = record.key.as_deref() {
        let expires = now.saturating_add(millis_of(event.key_ttl));
        t.keys.insert(key, (id, expires)).map_err(storage)?;
        t.key_expiry.insert((expires, key), ()).map_err(storage)?;
    }
    Ok((
        Answer::Appended(Appended::Stored(EventId::new(id))),
        Effect::Durable,
    ))
}

fn claim(
    t: &mut Tables<'_>,
    request: ClaimRequest,
    now: u64,
) -> Result<(Answer, Effect), InboxError> {
    let due = collect(t.due.range(..=(now, u64::MAX)), request.limit)?;
    let mut events = Vec::with_capacity(due.len());
    let mut effect = Effect::None;
    for (due_ms, id) in due {
        let Some(mut record) = t.load(id)? else {
            // An index entry without its record: drop it.
            t.due.remove((due_ms, id)).map_err(storage)?;
            effect = effect.max(Effect::Volatile);
            continue;
        };
        if record.state()? == State::Running && record.attempts >= request.max_attempts {
            // Its lease ran out during its last attempt: its worker stopped or crashed every
            // time. A dead letter, rather than an event that brings every worker down.
            record.last_error = Some(format!(
                "the lease ran out during attempt {} (the worker stopped or crashed)",
                record.attempts
            ));
            t.transition(id, &mut record, State::Dead, None, now)?;
            effect = Effect::Durable;
            continue;
        }
        record.attempts = record.attempts.saturating_add(1);
        record.token = t.next_token()?;
        let until = now.saturating_add(millis_of(request.lease));
        t.transition(id, &mut record, State::Running, Some(until), now)?;
        effect = effect.max(Effect::Volatile);
        let body = t
            .bodies
            .get(id)
            .map_err(storage)?
            .map(|body| Bytes::copy_from_slice(body.value()))
            .unwrap_or_default();
        let mut event = ClaimedEvent::new(
            Lease::new(EventId::new(id), record.token),
            body,
            record.signed_at,
            record.attempts,
        );
        event.webhook_id = record.webhook_id;
        event.secret_index = usize::try_from(record.secret_index).unwrap_or(usize::MAX);
        event.replays = record.replays;
        events.push(event);
    }
    let next_due =
        first_due(&t.due)?.map(|(due, _)| Duration::from_millis(due.saturating_sub(now)));
    Ok((Answer::Claimed(Claimed::new(events, next_due)), effect))
}

fn settle(
    t: &mut Tables<'_>,
    id: u64,
    mut record: Record,
    outcome: Settle,
    now: u64,
) -> Result<(), InboxError> {
    match outcome {
        Settle::Done => t.transition(id, &mut record, State::Done, None, now),
        Settle::Retry { after, error } => {
            record.last_error = Some(error);
            let at = now.saturating_add(millis_of(after));
            t.transition(id, &mut record, State::Retrying, Some(at), now)
        }
        Settle::Dead { error } => {
            record.last_error = Some(error);
            t.transition(id, &mut record, State::Dead, None, now)
        }
        Settle::Release => {
            record.attempts = record.attempts.saturating_sub(1);
            let state = if record.last_error.is_some() {
                State::Retrying
            } else {
                State::Queued
            };
            t.transition(id, &mut record, state, Some(now), now)
        }
    }
}

fn replay(t: &mut Tables<'_>, id: u64, now: u64) -> Result<bool, InboxError> {
    let Some(mut record) = t.load(id)? else {
        return Ok(false);
    };
    if record.state != code(State::Dead) {
        return Ok(false);
    }
    record.attempts = 0;
    record.replays = record.replays.saturating_add(1);
    t.transition(id, &mut record, State::Queued, Some(now), now)?;
    Ok(true)
}

fn purge(
    t: &mut Tables<'_>,
    retention: Duration,
    limit: usize,
    now: u64,
) -> Result<(Answer, Effect), InboxError> {
    let cutoff = now.saturating_sub(millis_of(retention));
    let finished = collect(t.finished.range(..=(cutoff, u64::MAX)), limit)?;
    for &(at, id) in &finished {
        t.delete_done(id, at)?;
    }
    let mut expired: Vec<(u64, String)> = Vec::new();
    for entry in t
        .key_expiry
        .range(..(now.saturating_add(1), ""))
        .map_err(storage)?
    {
        if expired.len() >= limit {
            break;
        }
        let (key, _) = entry.map_err(storage)?;
        let (at, name) = key.value();
        expired.push((at, name.to_owned()));
    }
    for (at, name) in &expired {
        t.key_expiry.remove((*at, name.as_str())).map_err(storage)?;
        let current = t
            .keys
            .get(name.as_str())
            .map_err(storage)?
            .map(|v| v.value());
        if current.is_some_and(|(_, expires)| expires == *at) {
            t.keys.remove(name.as_str()).map_err(storage)?;
        }
    }
    let purged = Purged::new(finished.len() as u64, expired.len() as u64);
    let effect = if purged == Purged::default() {
        Effect::None
    } else {
        Effect::Durable
    };
    Ok((Answer::Purged(purged), effect))
}

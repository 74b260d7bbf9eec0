//! The file's tables, the record kept per event, and the one place where an event changes
//! state (so its indexes always agree with it).
//!
//! - `events`: id -> the record (JSON, small); `bodies`: id -> the raw body, written once.
//! - `states`: (state, id): listing and counting per state.
//! - `due`: (due ms, id) for queued, retrying and running events: what `claim` scans.
//! - `finished`: (finished ms, id) for done events: what `purge` scans.
//! - `keys`: key -> (id, expiry ms), and `key_expiry`: (expiry ms, key), so keys outlive
//!   purged events for exactly their TTL.
//! - `meta`: the next id and the next lease token.

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::inbox::error::InboxError;
use crate::inbox::store::{from_millis, EventId, State, StoredEvent};

pub(super) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
pub(super) const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
pub(super) const BODIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("bodies");
pub(super) const STATES: TableDefinition<'_, (u8, u64), ()> = TableDefinition::new("states");
pub(super) const DUE: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new("due");
pub(super) const FINISHED: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new("finished");
pub(super) const KEYS: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("keys");
pub(super) const KEY_EXPIRY: TableDefinition<'_, (u64, &str), ()> =
    TableDefinition::new("key_expiry");

const NEXT_ID: &str = "next_id";
const NEXT_TOKEN: &str = "next_token";

/// A state's code in the `states` table.
pub(super) const fn code(state: State) -> u8 {
    match state {
        State::Queued => 0,
        State::Running => 1,
        State::Retrying => 2,
        State::Dead => 3,
        State::Done => 4,
    }
}

fn state_of(code: u8) -> Option<State> {
    State::ALL
        .into_iter()
        .find(|state| self::code(*state) == code)
}

/// What is kept of an event besides its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) state: u8,
    pub(super) event_type: String,
    pub(super) message_id: Option<String>,
    pub(super) key: Option<String>,
    pub(super) webhook_id: Option<String>,
    pub(super) signed_at: u64,
    pub(super) secret_index: u64,
    pub(super) received_ms: u64,
    pub(super) attempts: u32,
    pub(super) replays: u32,
    pub(super) last_error: Option<String>,
    /// Set exactly when the event is in `due`.
    pub(super) due_ms: Option<u64>,
    /// Set when it became done or dead.
    pub(super) finished_ms: Option<u64>,
    /// The token of the lease that holds (or last held) it.
    pub(super) token: u64,
}

impl Record {
    pub(super) fn state(&self) -> Result<State, InboxError> {
        state_of(self.state).ok_or_else(|| InboxError::storage("a record has an unknown state"))
    }

    pub(super) fn decode(id: u64, bytes: &[u8]) -> Result<Record, InboxError> {
        serde_json::from_slice(bytes)
            .map_err(|_| InboxError::storage(format!("the record of event {id} is corrupt")))
    }

    fn encode(&self) -> Result<Vec<u8>, InboxError> {
        serde_json::to_vec(self).map_err(InboxError::storage)
    }

    /// The operator's view of the record.
    pub(super) fn view(&self, id: u64) -> Result<StoredEvent, InboxError> {
        let mut event = StoredEvent::new(EventId::new(id), self.event_type.clone());
        event.state = self.state()?;
        event.message_id = self.message_id.clone();
        event.key = self.key.clone();
        event.webhook_id = self.webhook_id.clone();
        event.signed_at = self.signed_at;
        event.secret_index = usize::try_from(self.secret_index).unwrap_or(usize::MAX);
        event.received_at = from_millis(self.received_ms);
        event.attempts = self.attempts;
        event.replays = self.replays;
        event.last_error = self.last_error.clone();
        event.due_at = self.due_ms.map(from_millis);
        event.finished_at = self.finished_ms.map(from_millis);
        Ok(event)
    }
}

pub(super) fn storage(error: impl std::fmt::Display) -> InboxError {
    InboxError::storage(error)
}

/// Every table, open in one write transaction.
pub(super) struct Tables<'txn> {
    pub(super) meta: Table<'txn, &'static str, u64>,
    pub(super) events: Table<'txn, u64, &'static [u8]>,
    pub(super) bodies: Table<'txn, u64, &'static [u8]>,
    pub(super) states: Table<'txn, (u8, u64), ()>,
    pub(super) due: Table<'txn, (u64, u64), ()>,
    pub(super) finished: Table<'txn, (u64, u64), ()>,
    pub(super) keys: Table<'txn, &'static str, (u64, u64)>,
    pub(super) key_expiry: Table<'txn, (u64, &'static str), ()>,
}

impl<'txn> Tables<'txn> {
    /// Opens (creating when needed) every table.
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, InboxError> {
        Ok(Tables {
            meta: txn.open_table(META).map_err(storage)?,
            events: txn.open_table(EVENTS).map_err(storage)?,
            bodies: txn.open_table(BODIES).map_err(storage)?,
            states: txn.open_table(STATES).map_err(storage)?,
            due: txn.open_table(DUE).map_err(storage)?,
            finished: txn.open_table(FINISHED).map_err(storage)?,
            keys: txn.open_table(KEYS).map_err(storage)?,
            key_expiry: txn.open_table(KEY_EXPIRY).map_err(storage)?,
        })
    }

    fn next(&mut self, name: &str) -> Result<u64, InboxError> {
        let n = self
            .meta
            .get(name)
            .map_err(storage)?
            .map_or(1, |v| v.value());
        self.meta.insert(name, n + 1).map_err(storage)?;
        Ok(n)
    }

    /// A new event id (1, 2, ...; never reused).
    pub(super) fn next_id(&mut self) -> Result<u64, InboxError> {
        self.next(NEXT_ID)
    }

    /// A new lease token.
    pub(super) fn next_token(&mut self) -> Result<u64, InboxError> {
        self.next(NEXT_TOKEN)
    }

    pub(super) fn load(&self, id: u64) -> Result<Option<Record>, InboxError> {
        match self.events.get(id).map_err(storage)? {
            Some(bytes) => Record::decode(id, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn save(&mut self, id: u64, record: &Record) -> Result<(), InboxError> {
        self.events
            .insert(id, record.encode()?.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Inserts a new record and its indexes.
    pub(super) fn insert(&mut self, id: u64, record: &Record) -> Result<(), InboxError> {
        self.states
            .insert((record.state, id), ())
            .map_err(storage)?;
        if let Some(due) = record.due_ms {
            self.due.insert((due, id), ()).map_err(storage)?;
        }
        self.save(id, record)
    }

    /// Moves `record` to `state`, due at `due` (`None`: not due), keeping every index in step,
    /// and saves it. Done and dead events get `finished` as their finishing time.
    pub(super) fn transition(
        &mut self,
        id: u64,
        record: &mut Record,
        state: State,
        due: Option<u64>,
        now: u64,
    ) -> Result<(), InboxError> {
        let new = code(state);
        if record.state != new {
            self.states.remove((record.state, id)).map_err(storage)?;
            self.states.insert((new, id), ()).map_err(storage)?;
        }
        if record.due_ms != due {
            if let Some(old) = record.due_ms {
                self.due.remove((old, id)).map_err(storage)?;
            }
            if let Some(due) = due {
                self.due.insert((due, id), ()).map_err(storage)?;
            }
        }
        if record.state == code(State::Done) {
            if let Some(finished) = record.finished_ms {
                self.finished.remove((finished, id)).map_err(storage)?;
            }
        }
        record.finished_ms = match state {
            State::Done | State::Dead => Some(now),
            State::Queued | State::Running | State::Retrying => None,
        };
        if state == State::Done {
            self.finished.insert((now, id), ()).map_err(storage)?;
        }
        record.state = new;
        record.due_ms = due;
        self.save(id, record)
    }

    /// Deletes a done event, its body and its indexes (not its key: keys live their TTL).
    pub(super) fn delete_done(&mut self, id: u64, finished: u64) -> Result<(), InboxError> {
        self.finished.remove((finished, id)).map_err(storage)?;
        self.states
            .remove((code(State::Done), id))
            .map_err(storage)?;
        self.events.remove(id).map_err(storage)?;
        self.bodies.remove(id).map_err(storage)?;
        Ok(())
    }
}

/// The first key of `table` in `range`, read without holding the table borrowed.
pub(super) fn first_due(
    table: &impl ReadableTable<(u64, u64), ()>,
) -> Result<Option<(u64, u64)>, InboxError> {
    Ok(table.first().map_err(storage)?.map(|(key, _)| key.value()))
}

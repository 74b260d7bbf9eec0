//! [`PostgresStore`]: the inbox in PostgreSQL, so that several receivers and their workers share
//! one durable queue.
//!
//! # Schema
//!
//! [`PostgresStore::connect`] creates what it needs when it is missing (under an advisory lock,
//! so several instances may start at once), in the connection's current schema (set
//! `options=-csearch_path=NAME` in the URL to use another):
//!
//! ```sql
//! CREATE TABLE metigan_inbox_events (
//!     id           BIGSERIAL PRIMARY KEY,
//!     state        SMALLINT NOT NULL,  -- 0 queued, 1 running, 2 retrying, 3 dead, 4 done
//!     event_type   TEXT NOT NULL,
//!     message_id   TEXT,
//!     key          TEXT,
//!     webhook_id   TEXT,
//!     signed_at    BIGINT NOT NULL,
//!     secret_index BIGINT NOT NULL,
//!     received_ms  BIGINT NOT NULL,
//!     attempts     INTEGER NOT NULL DEFAULT 0,
//!     replays      INTEGER NOT NULL DEFAULT 0,
//!     last_error   TEXT,
//!     due_ms       BIGINT,             -- set exactly for queued, retrying and running events
//!     finished_ms  BIGINT,             -- set for done and dead events
//!     token        BIGINT NOT NULL DEFAULT 0,
//!     body         BYTEA NOT NULL
//! );
//! CREATE INDEX metigan_inbox_events_due ON metigan_inbox_events (due_ms, id)
//!     WHERE due_ms IS NOT NULL;
//! CREATE INDEX metigan_inbox_events_state ON metigan_inbox_events (state, id);
//! CREATE INDEX metigan_inbox_events_finished ON metigan_inbox_events (finished_ms, id)
//!     WHERE state = 4;
//! CREATE TABLE metigan_inbox_keys (
//!     key        TEXT PRIMARY KEY,
//!     event_id   BIGINT NOT NULL,
//!     expires_ms BIGINT NOT NULL
//! );
//! CREATE INDEX metigan_inbox_keys_expiry ON metigan_inbox_keys (expires_ms);
//! CREATE SEQUENCE metigan_inbox_tokens;
//! ```
//!
//! To create it yourself (a migration tool, a role without `CREATE`), run
//! [`PostgresStore::SCHEMA`] once; `connect` then finds everything in place.
//!
//! # How it keeps the inbox's promises
//!
//! - An append is one statement: the key is inserted with `ON CONFLICT DO NOTHING` and the
//!   event only when the key was free, so a duplicate is found in the same transaction that
//!   would store it. PostgreSQL answers the commit once its WAL is flushed (with the default
//!   `synchronous_commit = on`), and only then does the inbox answer `200 OK`.
//! - Workers take due events with `FOR UPDATE SKIP LOCKED`, under a lease: two workers never
//!   take the same event, and a worker that died leaves its events to the others once their
//!   lease has run out.
//! - Times (due, leases, TTLs, retention) are read from the database's clock, so instances
//!   whose clocks disagree still agree on when a lease ends.
//! - When PostgreSQL cannot be reached, every operation fails at once with a storage error
//!   (the inbox service then answers `503` with `Retry-After`); the pool reconnects by itself.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{NoTls, Row, Socket};

use super::error::InboxError;
use super::store::{
    from_millis, millis_of, to_millis, Appended, BoxFuture, ClaimRequest, Claimed, ClaimedEvent,
    Counts, EventId, InboxStore, Lease, ListQuery, NewEvent, Page, Purged, Settle, State,
    StoredEvent, MAX_LIST_LIMIT,
};

/// The database clock in milliseconds since the Unix epoch, fixed for one statement.
macro_rules! now_ms {
    () => {
        "(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
    };
}

/// The columns a [`StoredEvent`] is read from, the body last.
macro_rules! view_columns {
    () => {
        "id, state, event_type, message_id, key, webhook_id, signed_at, secret_index, \
         received_ms, attempts, replays, last_error, due_ms, finished_ms"
    };
}

/// The default number of connections a store keeps open at most.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// How often a worker over this store looks at the queue when nothing woke it (the
/// [`InboxStore::poll_interval`] it asks for).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The default time allowed to open a connection or to wait for a free one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Durations longer than this (100 years) are clamped, so `now + duration` never overflows.
const MAX_MILLIS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// A state's code in the `state` column.
fn code(state: State) -> i16 {
    i16::from(state.code())
}

fn state_of(code: i16) -> Result<State, InboxError> {
    u8::try_from(code)
        .ok()
        .and_then(State::from_code)
        .ok_or_else(|| InboxError::storage("PostgreSQL: an event has an unknown state"))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(millis_of(duration)).map_or(MAX_MILLIS, |ms| ms.min(MAX_MILLIS))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_u32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// A PostgreSQL error as an inbox storage error. Only the database's message (or the client's
/// own error) is kept: never a statement's parameters, which hold bodies.
fn storage(error: tokio_postgres::Error) -> InboxError {
    match error.as_db_error() {
        Some(db) => InboxError::storage(format!(
            "PostgreSQL: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => InboxError::storage(format!("PostgreSQL: {error}")),
    }
}

fn pool_error(error: deadpool_postgres::PoolError) -> InboxError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => storage(error),
        other => InboxError::storage(format!("PostgreSQL: no connection: {other}")),
    }
}

/// Settings of a [`PostgresStore`] before it connects.
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    max_connections: usize,
    connect_timeout: Duration,
}

impl Default for PostgresStoreBuilder {
    fn default() -> Self {
        PostgresStoreBuilder {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl PostgresStoreBuilder {
    /// Keep at most `max` connections open (default [`DEFAULT_MAX_CONNECTIONS`], at least 1).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Give up opening a connection, or waiting for a free one, after `timeout` (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]). The operation then fails with a storage error.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Connects to `url` (`postgres://user:password@host:port/database`, or any form
    /// tokio-postgres accepts), without TLS, and creates the schema when it is missing. For a
    /// database reached over a network, prefer [`connect_with_tls`](Self::connect_with_tls).
    ///
    /// # Errors
    ///
    /// A storage error when the URL is invalid, the server cannot be reached, or the schema
    /// cannot be created. The message never contains the password.
    pub async fn connect(self, url: &str) -> Result<PostgresStore, InboxError> {
        self.connect_with_tls(url, NoTls).await
    }

    /// Connects to `url` through `tls`, any tokio-postgres TLS connector (from
    /// `tokio-postgres-rustls` or `postgres-native-tls`, say), and creates the schema when it
    /// is missing. Whether TLS is required follows the URL's `sslmode` (`require` refuses a
    /// server without TLS; the default, `prefer`, falls back to plain TCP).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with_tls<T>(self, url: &str, tls: T) -> Result<PostgresStore, InboxError>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|_| {
            InboxError::storage("PostgreSQL: the database URL is not valid (postgres://user:password@host:port/database)")
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("metigan-webhook");
        }
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.connect_timeout))
            .create_timeout(Some(self.connect_timeout))
            .recycle_timeout(Some(self.connect_timeout))
            .build()
            .map_err(|e| InboxError::storage(format!("PostgreSQL: cannot build the pool: {e}")))?;
        let store = PostgresStore { pool };
        store.create_schema().await?;
        Ok(store)
    }
}

/// The inbox in PostgreSQL (feature `postgres`): every receiver and worker pointed at the same
/// database shares one queue, and any worker takes over the events of an instance that died
/// once their lease has run out.
///
/// It behaves exactly as [`FileStore`](super::FileStore) (the same behaviour suite runs
/// against both); what differs is where the events live. See the module's documentation for
/// the schema.
///
/// ```no_run
/// # async fn run() -> Result<(), metigan_webhook::inbox::InboxError> {
/// use metigan_webhook::inbox::{Inbox, PostgresStore};
///
/// let store = PostgresStore::connect("postgres://webhooks:secret@db.internal/webhooks").await?;
/// let inbox = Inbox::new(store);
/// # let _ = inbox;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// The statements that create the store's tables, indexes and sequence when they are
    /// missing (each `IF NOT EXISTS`).
    pub const SCHEMA: &'static str = "
        CREATE TABLE IF NOT EXISTS metigan_inbox_events (
            id           BIGSERIAL PRIMARY KEY,
            state        SMALLINT NOT NULL,
            event_type   TEXT NOT NULL,
            message_id   TEXT,
            key          TEXT,
            webhook_id   TEXT,
            signed_at    BIGINT NOT NULL,
            secret_index BIGINT NOT NULL,
            received_ms  BIGINT NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 0,
            replays      INTEGER NOT NULL DEFAULT 0,
            last_error   TEXT,
            due_ms       BIGINT,
            finished_ms  BIGINT,
            token        BIGINT NOT NULL DEFAULT 0,
            body         BYTEA NOT NULL
        );
        CREATE INDEX IF NOT EXISTS metigan_inbox_events_due
            ON metigan_inbox_events (due_ms, id) WHERE due_ms IS NOT NULL;
        CREATE INDEX IF NOT EXISTS metigan_inbox_events_state
            ON metigan_inbox_events (state, id);
        CREATE INDEX IF NOT EXISTS metigan_inbox_events_finished
            ON metigan_inbox_events (finished_ms, id) WHERE state = 4;
        CREATE TABLE IF NOT EXISTS metigan_inbox_keys (
            key        TEXT PRIMARY KEY,
            event_id   BIGINT NOT NULL,
            expires_ms BIGINT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS metigan_inbox_keys_expiry
            ON metigan_inbox_keys (expires_ms);
        CREATE SEQUENCE IF NOT EXISTS metigan_inbox_tokens;
    ";

    /// Connects to `url` with the default settings and creates the schema when it is missing.
    /// See [`PostgresStoreBuilder::connect`].
    ///
    /// # Errors
    ///
    /// A storage error when the server cannot be reached or the schema cannot be created.
    pub async fn connect(url: &str) -> Result<PostgresStore, InboxError> {
        PostgresStoreBuilder::default().connect(url).await
    }

    /// Settings before connecting: the pool's size and timeouts.
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder::default()
    }

    async fn create_schema(&self) -> Result<(), InboxError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let txn = client.transaction().await.map_err(storage)?;
        // Two instances starting at once must not race on `CREATE ... IF NOT EXISTS`.
        txn.batch_execute("SELECT pg_advisory_xact_lock(7302118551)")
            .await
            .map_err(storage)?;
        txn.batch_execute(Self::SCHEMA).await.map_err(storage)?;
        txn.commit().await.map_err(storage)
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, InboxError>> + Send + 'static,
    ) -> BoxFuture<Result<T, InboxError>> {
        Box::pin(work)
    }
}

async fn execute(
    pool: &Pool,
    sql: &'static str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, InboxError> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached(sql).await.map_err(storage)?;
    client.execute(&statement, params).await.map_err(storage)
}

async fn query(
    pool: &Pool,
    sql: &'static str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, InboxError> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached(sql).await.map_err(storage)?;
    client.query(&statement, params).await.map_err(storage)
}

const APPEND_KEYED: &str = concat!(
    "WITH k AS (
        INSERT INTO metigan_inbox_keys (key, event_id, expires_ms)
        VALUES ($1, nextval(pg_get_serial_sequence('metigan_inbox_events', 'id')), ",
    now_ms!(),
    " + $2)
        ON CONFLICT (key) DO NOTHING
        RETURNING event_id
    )
    INSERT INTO metigan_inbox_events
        (id, state, event_type, message_id, key, webhook_id, signed_at, secret_index,
         received_ms, due_ms, body)
    SELECT k.event_id, 0, $3::text, $4::text, $1::text, $5::text, $6::bigint, $7::bigint,
           $8::bigint, ",
    now_ms!(),
    ", $9::bytea FROM k
    RETURNING id"
);

const APPEND_UNKEYED: &str = concat!(
    "INSERT INTO metigan_inbox_events
        (state, event_type, message_id, key, webhook_id, signed_at, secret_index, received_ms,
         due_ms, body)
    VALUES (0, $1, $2, NULL, $3, $4, $5, $6, ",
    now_ms!(),
    ", $7)
    RETURNING id"
);

const KEY_HOLDER: &str = concat!(
    "SELECT event_id, expires_ms > ",
    now_ms!(),
    " FROM metigan_inbox_keys WHERE key = $1"
);

const DROP_EXPIRED_KEY: &str = concat!(
    "DELETE FROM metigan_inbox_keys WHERE key = $1 AND expires_ms <= ",
    now_ms!()
);

const CLAIM: &str = concat!(
    "WITH due AS (
        SELECT id, due_ms AS was_due FROM metigan_inbox_events
        WHERE due_ms <= ",
    now_ms!(),
    "
        ORDER BY due_ms, id
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    ), judged AS (
        SELECT e.id, (e.state = 1 AND e.attempts >= $2) AS expired_last
        FROM metigan_inbox_events e JOIN due ON e.id = due.id
    )
    UPDATE metigan_inbox_events e SET
        state = CASE WHEN j.expired_last THEN 3 ELSE 1 END,
        last_error = CASE WHEN j.expired_last
            THEN 'the lease ran out during attempt ' || e.attempts || ' (the worker stopped or crashed)'
            ELSE e.last_error END,
        attempts = CASE WHEN j.expired_last THEN e.attempts ELSE e.attempts + 1 END,
        token = CASE WHEN j.expired_last THEN e.token ELSE nextval('metigan_inbox_tokens') END,
        due_ms = CASE WHEN j.expired_last THEN NULL ELSE ",
    now_ms!(),
    " + $3 END,
        finished_ms = CASE WHEN j.expired_last THEN ",
    now_ms!(),
    " ELSE NULL END
    FROM due, judged j
    WHERE e.id = due.id AND j.id = due.id
    RETURNING e.id, j.expired_last, e.token, e.attempts, e.replays, e.signed_at, e.webhook_id,
              e.secret_index, e.body, due.was_due,
              (SELECT min(x.due_ms) FROM metigan_inbox_events x
               WHERE x.due_ms IS NOT NULL AND x.id NOT IN (SELECT id FROM due)) - ",
    now_ms!(),
    " AS next_due"
);

const NEXT_DUE: &str = concat!(
    "SELECT min(due_ms) - ",
    now_ms!(),
    " FROM metigan_inbox_events WHERE due_ms IS NOT NULL"
);

const RENEW: &str = concat!(
    "UPDATE metigan_inbox_events SET due_ms = ",
    now_ms!(),
    " + $3 WHERE id = $1 AND state = 1 AND token = $2"
);

const SETTLE_DONE: &str = concat!(
    "UPDATE metigan_inbox_events SET state = 4, due_ms = NULL, finished_ms = ",
    now_ms!(),
    " WHERE id = $1 AND state = 1 AND token = $2"
);

const SETTLE_RETRY: &str = concat!(
    "UPDATE metigan_inbox_events SET state = 2, last_error = $3, due_ms = ",
    now_ms!(),
    " + $4, finished_ms = NULL WHERE id = $1 AND state = 1 AND token = $2"
);

const SETTLE_DEAD: &str = concat!(
    "UPDATE metigan_inbox_events SET state = 3, last_error = $3, due_ms = NULL, finished_ms = ",
    now_ms!(),
    " WHERE id = $1 AND state = 1 AND token = $2"
);

const SETTLE_RELEASE: &str = concat!(
    "UPDATE metigan_inbox_events SET
        attempts = GREATEST(attempts - 1, 0),
        state = CASE WHEN last_error IS NULL THEN 0 ELSE 2 END,
        due_ms = ",
    now_ms!(),
    ", finished_ms = NULL
    WHERE id = $1 AND state = 1 AND token = $2"
);

/// Every settlement of a batch in one statement (one round trip, one commit): `$1` ids, `$2`
/// tokens, `$3` kinds (0 done, 1 retry, 2 dead, 3 release), `$4` errors, `$5` retry delays.
const SETTLE_MANY: &str = concat!(
    "WITH s AS (
        SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::smallint[], $4::text[], $5::bigint[])
            AS s(id, token, kind, error, after_ms)
    )
    UPDATE metigan_inbox_events e SET
        state = CASE s.kind WHEN 0 THEN 4 WHEN 1 THEN 2 WHEN 2 THEN 3
            ELSE CASE WHEN e.last_error IS NULL THEN 0 ELSE 2 END END,
        last_error = CASE WHEN s.kind IN (1, 2) THEN s.error ELSE e.last_error END,
        attempts = CASE WHEN s.kind = 3 THEN GREATEST(e.attempts - 1, 0) ELSE e.attempts END,
        due_ms = CASE s.kind WHEN 1 THEN ",
    now_ms!(),
    " + s.after_ms WHEN 3 THEN ",
    now_ms!(),
    " ELSE NULL END,
        finished_ms = CASE WHEN s.kind IN (0, 2) THEN ",
    now_ms!(),
    " ELSE NULL END
    FROM s
    WHERE e.id = s.id AND e.state = 1 AND e.token = s.token
    RETURNING e.id, e.token"
);

const REPLAY: &str = concat!(
    "UPDATE metigan_inbox_events SET attempts = 0, replays = replays + 1, state = 0, due_ms = ",
    now_ms!(),
    ", finished_ms = NULL WHERE id = $1 AND state = 3"
);

const REPLAY_DEAD: &str = concat!(
    "UPDATE metigan_inbox_events SET attempts = 0, replays = replays + 1, state = 0, due_ms = ",
    now_ms!(),
    ", finished_ms = NULL WHERE state = 3"
);

const COUNTS: &str = "SELECT state, count(*) FROM metigan_inbox_events GROUP BY state";

const LIST_ALL: &str = concat!(
    "SELECT ",
    view_columns!(),
    ", CASE WHEN $3 THEN body END FROM metigan_inbox_events
    WHERE id > $1 ORDER BY id LIMIT $2"
);

const LIST_STATE: &str = concat!(
    "SELECT ",
    view_columns!(),
    ", CASE WHEN $3 THEN body END FROM metigan_inbox_events
    WHERE state = $4 AND id > $1 ORDER BY state, id LIMIT $2"
);

const GET: &str = concat!(
    "SELECT ",
    view_columns!(),
    ", CASE WHEN $2 THEN body END FROM metigan_inbox_events WHERE id = $1"
);

const PURGE_EVENTS: &str = concat!(
    "DELETE FROM metigan_inbox_events WHERE id IN (
        SELECT id FROM metigan_inbox_events
        WHERE state = 4 AND finished_ms <= ",
    now_ms!(),
    " - $1
        ORDER BY finished_ms, id LIMIT $2
    )"
);

const PURGE_KEYS: &str = concat!(
    "DELETE FROM metigan_inbox_keys WHERE key IN (
        SELECT key FROM metigan_inbox_keys WHERE expires_ms <= ",
    now_ms!(),
    "
        ORDER BY expires_ms LIMIT $1
    )"
);

fn view(row: &Row) -> Result<StoredEvent, InboxError> {
    let id: i64 = row.try_get(0).map_err(storage)?;
    let state: i16 = row.try_get(1).map_err(storage)?;
    let event_type: String = row.try_get(2).map_err(storage)?;
    let mut event = StoredEvent::new(EventId::new(to_u64(id)), event_type);
    event.state = state_of(state)?;
    event.message_id = row.try_get(3).map_err(storage)?;
    event.key = row.try_get(4).map_err(storage)?;
    event.webhook_id = row.try_get(5).map_err(storage)?;
    event.signed_at = to_u64(row.try_get(6).map_err(storage)?);
    event.secret_index = usize::try_from(row.try_get::<_, i64>(7).map_err(storage)?).unwrap_or(0);
    event.received_at = from_millis(to_u64(row.try_get(8).map_err(storage)?));
    event.attempts = to_u32(row.try_get(9).map_err(storage)?);
    event.replays = to_u32(row.try_get(10).map_err(storage)?);
    event.last_error = row.try_get(11).map_err(storage)?;
    event.due_at = row
        .try_get::<_, Option<i64>>(12)
        .map_err(storage)?
        .map(|ms| from_millis(to_u64(ms)));
    event.finished_at = row
        .try_get::<_, Option<i64>>(13)
        .map_err(storage)?
        .map(|ms| from_millis(to_u64(ms)));
    event.body = row
        .try_get::<_, Option<Vec<u8>>>(14)
        .map_err(storage)?
        .map(Bytes::from);
    Ok(event)
}

async fn append(pool: Pool, event: NewEvent) -> Result<Appended, InboxError> {
    let signed_at = to_i64(event.signed_at);
    let secret_index = i64::try_from(event.secret_index).unwrap_or(i64::MAX);
    let received = to_i64(to_millis(event.received_at));
    let body: &[u8] = event.body.as_ref();
    let Some(key) = event.key.as_deref() else {
        let rows = query(
            &pool,
            APPEND_UNKEYED,
            &[
                &event.event_type,
                &event.message_id,
                &event.webhook_id,
                &signed_at,
                &secret_index,
                &received,
                &body,
            ],
        )
        .await?;
        let id: i64 = rows
            .first()
            .ok_or_else(|| InboxError::storage("PostgreSQL: the append returned no id"))?
            .try_get(0)
            .map_err(storage)?;
        return Ok(Appended::Stored(EventId::new(to_u64(id))));
    };
    let ttl = millis(event.key_ttl);
    // A key that expired but is not purged yet is dropped, and the append tried again; a few
    // rounds at most, even when other instances race on the same key.
    for _ in 0..4 {
        let rows = query(
            &pool,
            APPEND_KEYED,
            &[
                &key,
                &ttl,
                &event.event_type,
                &event.message_id,
                &event.webhook_id,
                &signed_at,
                &secret_index,
                &received,
                &body,
            ],
        )
        .await?;
        if let Some(row) = rows.first() {
            let id: i64 = row.try_get(0).map_err(storage)?;
            return Ok(Appended::Stored(EventId::new(to_u64(id))));
        }
        let holder = query(&pool, KEY_HOLDER, &[&key]).await?;
        // No holder: purged in the meantime, so the next round tries again.
        if let Some(row) = holder.first() {
            let id: i64 = row.try_get(0).map_err(storage)?;
            let live: bool = row.try_get(1).map_err(storage)?;
            if live {
                return Ok(Appended::Duplicate(EventId::new(to_u64(id))));
            }
            execute(&pool, DROP_EXPIRED_KEY, &[&key]).await?;
        }
    }
    Err(InboxError::storage(
        "PostgreSQL: the deduplication key kept changing during the append; nothing was stored",
    ))
}

async fn claim(pool: Pool, request: ClaimRequest) -> Result<Claimed, InboxError> {
    let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
    let max_attempts = i32::try_from(request.max_attempts).unwrap_or(i32::MAX);
    let lease = millis(request.lease);
    let mut events = Vec::new();
    // Read from the claim's own rows when it took any (one round trip under a backlog), else
    // asked on its own.
    let mut next_due = None;
    if limit > 0 {
        let rows = query(&pool, CLAIM, &[&limit, &max_attempts, &lease]).await?;
        if let Some(row) = rows.first() {
            next_due = Some(
                row.try_get::<_, Option<i64>>(10)
                    .map_err(storage)?
                    .map(|ms| Duration::from_millis(to_u64(ms))),
            );
        }
        let mut taken = Vec::with_capacity(rows.len());
        for row in &rows {
            let expired_last: bool = row.try_get(1).map_err(storage)?;
            if expired_last {
                continue;
            }
            let id: i64 = row.try_get(0).map_err(storage)?;
            let token: i64 = row.try_get(2).map_err(storage)?;
            let attempts: i32 = row.try_get(3).map_err(storage)?;
            let replays: i32 = row.try_get(4).map_err(storage)?;
            let signed_at: i64 = row.try_get(5).map_err(storage)?;
            let webhook_id: Option<String> = row.try_get(6).map_err(storage)?;
            let secret_index: i64 = row.try_get(7).map_err(storage)?;
            let body: Vec<u8> = row.try_get(8).map_err(storage)?;
            let was_due: i64 = row.try_get(9).map_err(storage)?;
            let mut event = ClaimedEvent::new(
                Lease::new(EventId::new(to_u64(id)), to_u64(token)),
                Bytes::from(body),
                to_u64(signed_at),
                to_u32(attempts),
            );
            event.webhook_id = webhook_id;
            event.secret_index = usize::try_from(secret_index).unwrap_or(usize::MAX);
            event.replays = to_u32(replays);
            taken.push((was_due, id, event));
        }
        // `RETURNING` keeps no order: oldest due first, as the trait promises.
        taken.sort_by_key(|(due, id, _)| (*due, *id));
        events = taken.into_iter().map(|(_, _, event)| event).collect();
    }
    let next_due = match next_due {
        Some(next_due) => next_due,
        None => match query(&pool, NEXT_DUE, &[]).await?.first() {
            Some(row) => row
                .try_get::<_, Option<i64>>(0)
                .map_err(storage)?
                .map(|ms| Duration::from_millis(to_u64(ms))),
            None => None,
        },
    };
    Ok(Claimed::new(events, next_due))
}

async fn settle(pool: Pool, lease: Lease, outcome: Settle) -> Result<bool, InboxError> {
    let id = to_i64(lease.id().get());
    let token = to_i64(lease.token());
    let changed = match outcome {
        Settle::Done => execute(&pool, SETTLE_DONE, &[&id, &token]).await?,
        Settle::Retry { after, error } => {
            let after = millis(after);
            execute(&pool, SETTLE_RETRY, &[&id, &token, &error, &after]).await?
        }
        Settle::Dead { error } => execute(&pool, SETTLE_DEAD, &[&id, &token, &error]).await?,
        Settle::Release => execute(&pool, SETTLE_RELEASE, &[&id, &token]).await?,
    };
    Ok(changed > 0)
}

async fn settle_many(
    pool: Pool,
    settlements: Vec<(Lease, Settle)>,
) -> Result<Vec<bool>, InboxError> {
    let n = settlements.len();
    let (mut ids, mut tokens, mut kinds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut errors, mut afters) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // A lease settled twice in one batch: the first settlement counts, as one after the other
    // (the second finds the lease gone); only the first is sent.
    let mut seen = std::collections::HashSet::with_capacity(n);
    let first: Vec<bool> = settlements
        .iter()
        .map(|(lease, _)| seen.insert(*lease))
        .collect();
    for ((lease, outcome), _) in settlements.iter().zip(&first).filter(|(_, first)| **first) {
        ids.push(to_i64(lease.id().get()));
        tokens.push(to_i64(lease.token()));
        let (kind, error, after): (i16, Option<&str>, i64) = match outcome {
            Settle::Done => (0, None, 0),
            Settle::Retry { after, error } => (1, Some(error), millis(*after)),
            Settle::Dead { error } => (2, Some(error), 0),
            Settle::Release => (3, None, 0),
        };
        kinds.push(kind);
        errors.push(error);
        afters.push(after);
    }
    let rows = query(
        &pool,
        SETTLE_MANY,
        &[&ids, &tokens, &kinds, &errors, &afters],
    )
    .await?;
    let mut settled = std::collections::HashSet::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get(0).map_err(storage)?;
        let token: i64 = row.try_get(1).map_err(storage)?;
        settled.insert((id, token));
    }
    Ok(settlements
        .iter()
        .zip(first)
        .map(|((lease, _), first)| {
            first && settled.contains(&(to_i64(lease.id().get()), to_i64(lease.token())))
        })
        .collect())
}

async fn list(pool: Pool, list: ListQuery) -> Result<Page, InboxError> {
    let after = list.after.map_or(0, |id| to_i64(id.get()));
    let limit = list.limit.clamp(1, MAX_LIST_LIMIT);
    // One more than asked: whether a next page exists.
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let rows = match list.state {
        Some(state) => {
            query(
                &pool,
                LIST_STATE,
                &[&after, &fetch, &list.with_body, &code(state)],
            )
            .await?
        }
        None => query(&pool, LIST_ALL, &[&after, &fetch, &list.with_body]).await?,
    };
    let more = rows.len() > limit;
    let mut events = Vec::with_capacity(limit);
    for row in rows.iter().take(limit) {
        events.push(view(row)?);
    }
    let next = if more {
        events.last().map(|event| event.id)
    } else {
        None
    };
    Ok(Page::new(events, next))
}

impl InboxStore for PostgresStore {
    fn append(&self, event: NewEvent) -> BoxFuture<Result<Appended, InboxError>> {
        self.run(append(self.pool.clone(), event))
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<Result<Claimed, InboxError>> {
        self.run(claim(self.pool.clone(), request))
    }

    fn renew(&self, lease: Lease, duration: Duration) -> BoxFuture<Result<bool, InboxError>> {
        let pool = self.pool.clone();
        self.run(async move {
            let id = to_i64(lease.id().get());
            let token = to_i64(lease.token());
            let duration = millis(duration);
            Ok(execute(&pool, RENEW, &[&id, &token, &duration]).await? > 0)
        })
    }

    fn settle(&self, lease: Lease, outcome: Settle) -> BoxFuture<Result<bool, InboxError>> {
        self.run(settle(self.pool.clone(), lease, outcome))
    }

    fn settle_many(
        &self,
        settlements: Vec<(Lease, Settle)>,
    ) -> BoxFuture<Vec<Result<bool, InboxError>>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let n = settlements.len();
            match settle_many(pool, settlements).await {
                Ok(answers) => answers.into_iter().map(Ok).collect(),
                // One statement: it failed for all of them.
                Err(error) => vec![Err(error); n],
            }
        })
    }

    fn poll_interval(&self) -> Option<Duration> {
        // Other receivers append to the same tables without waking this worker: events
        // acknowledged by one that died are taken within a second.
        Some(POLL_INTERVAL)
    }

    fn counts(&self) -> BoxFuture<Result<Counts, InboxError>> {
        let pool = self.pool.clone();
        self.run(async move {
            let mut counts = Counts::default();
            for row in query(&pool, COUNTS, &[]).await? {
                let state: i16 = row.try_get(0).map_err(storage)?;
                let count: i64 = row.try_get(1).map_err(storage)?;
                *counts.get_mut(state_of(state)?) = to_u64(count);
            }
            Ok(counts)
        })
    }

    fn list(&self, query: ListQuery) -> BoxFuture<Result<Page, InboxError>> {
        self.run(list(self.pool.clone(), query))
    }

    fn get(
        &self,
        id: EventId,
        with_body: bool,
    ) -> BoxFuture<Result<Option<StoredEvent>, InboxError>> {
        let pool = self.pool.clone();
        self.run(async move {
            let id = to_i64(id.get());
            match query(&pool, GET, &[&id, &with_body]).await?.first() {
                Some(row) => Ok(Some(view(row)?)),
                None => Ok(None),
            }
        })
    }

    fn replay(&self, id: EventId) -> BoxFuture<Result<bool, InboxError>> {
        let pool = self.pool.clone();
        self.run(async move {
            let id = to_i64(id.get());
            Ok(execute(&pool, REPLAY, &[&id]).await? > 0)
        })
    }

    fn replay_dead(&self) -> BoxFuture<Result<u64, InboxError>> {
        let pool = self.pool.clone();
        self.run(async move { execute(&pool, REPLAY_DEAD, &[]).await })
    }

    fn purge(&self, retention: Duration, limit: usize) -> BoxFuture<Result<Purged, InboxError>> {
        let pool = self.pool.clone();
        self.run(async move {
            let retention = millis(retention);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let events = execute(&pool, PURGE_EVENTS, &[&retention, &limit]).await?;
            let keys = execute(&pool, PURGE_KEYS, &[&limit]).await?;
            Ok(Purged::new(events, keys))
        })
    }
}

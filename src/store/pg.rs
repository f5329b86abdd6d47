//! The shared backend: the log in a PostgreSQL database, for several tenure
//! nodes on one trusted, replicated database (`tenure serve --store
//! postgres://…`).
//!
//! **Tables.** In a schema of their own (`tenure` unless the URL says
//! `?schema=NAME`): `streams` (id, name) and `events` (the same columns as
//! the embedded log's, with the event's link in the hash chain), and
//! `meta` (the schema version).
//!
//! **One writer at a time, gap-free `$all`.** PostgreSQL hands out sequence
//! values in order but commits transactions in any order, so a follower
//! that reads "position > last seen" could skip an event committed late
//! with a smaller position. Here every append batch takes one
//! transaction-scoped advisory lock (`pg_advisory_xact_lock`, keyed by the
//! schema) before it reads the head, and holds it until its commit:
//! batches commit one after another, in position order, and PostgreSQL
//! makes a commit visible before it releases the transaction's locks. A
//! reader therefore always sees a prefix of the log. The same lock makes
//! positions contiguous and lets each batch continue the hash chain from
//! the head it read, exactly as the embedded log does. It serializes the
//! writers of all nodes; group commit (one transaction per batch, up to
//! [`BATCH_EVENTS_MAX`] events) is what keeps that fast, and so does a
//! batch being one statement, the lock held for no round trip: placed by
//! the writer while no other node has appended ([`APPEND_FUNCTION`]),
//! placed by PostgreSQL after the head it finds otherwise
//! ([`PLACE_FUNCTION`]).
//!
//! **Durability.** A batch is answered after its `COMMIT` returns, which
//! with PostgreSQL's default `synchronous_commit = on` is after its WAL is
//! flushed.
//!
//! **Following.** Each node broadcasts its own batches as they commit; a
//! listener thread (`LISTEN`, woken by the `pg_notify` each batch sends,
//! and polling every [`POLL_EVERY`] in case a notification is lost) reads
//! what other nodes appended and broadcasts it too (a notification of this
//! node's own batch, tagged with the node, is not read back).
//! Subscriptions skip what they saw already and read the log for any gap,
//! as on SQLite.
//!
//! **Failures.** A failed batch is answered with [`StoreError::Io`] and the
//! writer reconnects for the next one. The outcome of a batch whose
//! `COMMIT` failed on the network is unknown to the caller (it may have
//! committed); the listener then finds it in the log like another node's.
//!
//! The `postgres` crate (the blocking face of `tokio-postgres`) is used on
//! threads of the store's own, as the embedded store does with SQLite: the
//! writer, [`READERS`] readers and the listener each own one connection, so
//! no pool is needed.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, NoTls};
use sha2::{Digest, Sha256};
use tenure_events::chain::{self, Body};
use tenure_events::{AccountId, ChainHash, ChainHead, NewEvent, RecordedEvent, StreamId};
use tokio::sync::{broadcast, oneshot};
use uuid::Uuid;

use super::sqlite::{WriterMetrics, BATCH_EVENTS_MAX};
use super::streams::{StreamCache, StreamMap, StreamState};
use super::subscription::{FetchAll, LiveBatch};
use super::{
    AppendCallback, AppendError, Appended, EventStore, ExpectedVersion, StoreError, StoreFuture, Subscription,
};
use crate::metrics::StoreMetrics;

/// Connections (and threads) serving stream loads and catch-up reads.
const READERS: usize = 2;

/// How often the listener looks for other nodes' events when no
/// notification came.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// Live batches a subscriber may fall behind before it reads the log.
const LIVE_BATCHES_BUFFERED: usize = 1024;

/// The schema this build writes.
const SCHEMA_VERSION: &str = "1";

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "tenure";

const COLUMNS: &str = "e.position, s.name, e.version, e.event_id, e.event_type, e.schema_version, e.time_us, \
                       e.account, e.request_id, e.causation_id, e.payload, e.hash";

/// The planned path of an append batch, one statement (and so one round
/// trip, its own transaction): the writer has placed the batch after the
/// head it last saw, with positions, versions and links. The function
/// takes the lock, and appends only if the head is still that position
/// (no other node appended since, so what the writer remembers of its
/// streams holds). It creates the streams the writer takes as new (their
/// row ids come back in the order given; events name them by placeholder,
/// -(index + 1)): if one exists after all, the unique name fails the
/// statement, which writes nothing. It inserts the events and notifies. It
/// answers NULL when the head moved; the writer then takes the placing
/// path ([`PLACE_FUNCTION`]), as after a failure on a stream's name.
/// Created (or replaced) with the schema: derived from this build, no
/// data of its own.
const APPEND_FUNCTION: &str = "
CREATE OR REPLACE FUNCTION tenure_append_v1(
    p_lock bigint, p_head bigint, p_created text[],
    p_positions bigint[], p_streams bigint[], p_versions bigint[], p_event_ids uuid[], p_types text[],
    p_schema_versions integer[], p_times bigint[], p_accounts text[], p_requests uuid[], p_causes uuid[],
    p_payloads text[], p_hashes bytea[], p_channel text, p_notice text)
RETURNS bigint[] LANGUAGE plpgsql AS $fn$
DECLARE
    head bigint;
    ids bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT COALESCE(MAX(position), 0) INTO head FROM events;
    IF head <> p_head THEN
        RETURN NULL;
    END IF;
    WITH made AS (INSERT INTO streams (name) SELECT UNNEST(p_created) RETURNING id, name)
    SELECT COALESCE(array_agg(made.id ORDER BY given.ord), '{}') INTO ids
        FROM made JOIN UNNEST(p_created) WITH ORDINALITY AS given (name, ord) ON given.name COLLATE \"C\" = made.name;
    INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, time_us, account,
                        request_id, causation_id, payload, hash)
    SELECT b.position, CASE WHEN b.stream < 0 THEN ids[-b.stream] ELSE b.stream END, b.version, b.event_id,
           b.event_type, b.schema_version, b.time_us, b.account, b.request_id, b.causation_id, b.payload, b.hash
    FROM UNNEST(p_positions, p_streams, p_versions, p_event_ids, p_types, p_schema_versions, p_times,
                p_accounts, p_requests, p_causes, p_payloads, p_hashes)
         AS b (position, stream, version, event_id, event_type, schema_version, time_us, account,
               request_id, causation_id, payload, hash);
    IF cardinality(p_positions) > 0 THEN
        PERFORM pg_notify(p_channel, p_notice);
    END IF;
    RETURN ids;
END
$fn$;";

/// The placing path of an append batch, also one statement: PostgreSQL
/// places the batch after whatever head the log has, under the lock, so
/// the lock is held for the statement and its commit only, however many
/// nodes append (a transaction driven from the writer would hold it over
/// several round trips). For each request in order (`p_names`,
/// `p_expected`: -1 for any version, `p_counts` events each) it looks each
/// of the batch's streams up once, by key (id and version; set-wise in a
/// large batch), skips a
/// request whose expected version does not match, creates (in one insert)
/// the streams that get their first events, and gives each event its position, version and link:
/// `sha256(previous link || canonical bytes)`, the canonical bytes joined
/// from the format byte (1), the position, the stream's canonical string
/// (`p_strings`), the version and the event's canonical body (`p_bodies`),
/// which the writer encodes (`tenure_events::chain`). It inserts, notifies
/// (`LAST/TAG/EVENTS`: the last position, this node's tag, so its listener
/// need not read the batch back, and the events as a JSON array of arrays,
/// [`NoticeEvent`], so that other nodes need not read them either; without
/// `/EVENTS` when that would not fit in a notification's 8,000 bytes), and
/// answers the head it placed the batch after, each
/// stream's id (NULL: none) and version before the batch in order of first
/// mention, the created streams' ids in order, and the last link: the
/// writer decides the same batch against that head and those streams
/// (`Plan`) and checks it reaches the same link.
const PLACE_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION tenure_place_v1(
    p_lock bigint, p_names text[], p_strings bytea[], p_expected bigint[], p_counts integer[],
    p_event_ids uuid[], p_types text[], p_schema_versions integer[], p_times bigint[], p_accounts text[],
    p_requests uuid[], p_causes uuid[], p_payloads text[], p_bodies bytea[], p_channel text, p_node text,
    OUT head_position bigint, OUT head_hash bytea, OUT found_ids bigint[], OUT found_versions bigint[],
    OUT created_ids bigint[], OUT last_hash bytea)
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := cardinality(p_event_ids);
    seen text[] := '{}';
    ks integer[];
    ids bigint[] := '{}';
    versions bigint[] := '{}';
    creating text[] := '{}';
    positions bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    stream_ids bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    event_versions bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    hashes bytea[] := array_fill(NULL::bytea, ARRAY[n]);
    event_streams text[] := array_fill(NULL::text, ARRAY[n]);
    notice text;
    pos bigint;
    link bytea;
    sid bigint;
    v bigint;
    k integer;
    e integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT ev.position, ev.hash INTO pos, link FROM events ev ORDER BY ev.position DESC LIMIT 1;
    IF pos IS NULL THEN
        pos := 0;
        link := decode(repeat('00', 32), 'hex');
    END IF;
    head_position := pos;
    head_hash := link;
    found_ids := '{}';
    found_versions := '{}';
    created_ids := '{}';
    IF cardinality(p_names) > 32 THEN
        -- A large batch (expiries name thousands of streams): the batch's
        -- streams in order of first mention, each request's index among
        -- them, and each one's id and version, looked up by key in three
        -- statements rather than two per stream below.
        SELECT coalesce(array_agg(d.n ORDER BY d.o), '{}') INTO seen
            FROM (SELECT u.n, min(u.o) AS o FROM unnest(p_names) WITH ORDINALITY AS u (n, o) GROUP BY u.n) AS d;
        SELECT array_agg(d.k ORDER BY u.o) INTO ks
            FROM unnest(p_names) WITH ORDINALITY AS u (n, o)
            JOIN unnest(seen) WITH ORDINALITY AS d (n, k) ON d.n = u.n;
        SELECT coalesce(array_agg(f.id ORDER BY f.k), '{}'),
               coalesce(array_agg(coalesce((SELECT max(ev.version) FROM events ev WHERE ev.stream_id = f.id), 0)
                                  ORDER BY f.k), '{}')
            INTO ids, versions
            FROM (SELECT d.k, (SELECT s.id FROM streams s WHERE s.name = d.n) AS id
                  FROM unnest(seen) WITH ORDINALITY AS d (n, k)) AS f;
        found_ids := ids;
        found_versions := versions;
    END IF;
    FOR r IN 1 .. coalesce(cardinality(p_names), 0) LOOP
        IF ks IS NOT NULL THEN
            k := ks[r];
        ELSE
            k := array_position(seen, p_names[r]);
            IF k IS NULL THEN
                SELECT s.id INTO sid FROM streams s WHERE s.name = p_names[r];
                v := 0;
                IF sid IS NOT NULL THEN
                    SELECT coalesce(max(ev.version), 0) INTO v FROM events ev WHERE ev.stream_id = sid;
                END IF;
                seen := array_append(seen, p_names[r]);
                ids := array_append(ids, sid);
                versions := array_append(versions, v);
                found_ids := array_append(found_ids, sid);
                found_versions := array_append(found_versions, v);
                k := cardinality(seen);
            END IF;
        END IF;
        v := versions[k];
        IF p_expected[r] >= 0 AND p_expected[r] <> v THEN
            e := e + p_counts[r];
            CONTINUE;
        END IF;
        IF p_counts[r] = 0 THEN
            CONTINUE;
        END IF;
        sid := ids[k];
        IF sid IS NULL THEN
            -- Created below, with the others: -(its index among them) until then.
            creating := array_append(creating, p_names[r]);
            sid := -cardinality(creating);
            ids[k] := sid;
        END IF;
        FOR j IN 1 .. p_counts[r] LOOP
            e := e + 1;
            pos := pos + 1;
            v := v + 1;
            link := sha256(link || '\x01'::bytea || int8send(pos) || p_strings[r] || int8send(v) || p_bodies[e]);
            positions[e] := pos;
            stream_ids[e] := sid;
            event_versions[e] := v;
            hashes[e] := link;
            event_streams[e] := p_names[r];
        END LOOP;
        versions[k] := v;
    END LOOP;
    IF cardinality(creating) > 0 THEN
        WITH made AS (INSERT INTO streams (name) SELECT unnest(creating) RETURNING id, name)
        SELECT array_agg(made.id ORDER BY given.ord) INTO created_ids
            FROM made JOIN unnest(creating) WITH ORDINALITY AS given (name, ord) ON given.name COLLATE "C" = made.name;
    END IF;
    IF pos > head_position THEN
        INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, time_us, account,
                            request_id, causation_id, payload, hash)
        SELECT b.position, CASE WHEN b.stream_id < 0 THEN created_ids[-b.stream_id] ELSE b.stream_id END,
               b.version, b.event_id, b.event_type, b.schema_version, b.time_us, b.account, b.request_id,
               b.causation_id, b.payload, b.hash
        FROM UNNEST(positions, stream_ids, event_versions, p_event_ids, p_types, p_schema_versions, p_times,
                    p_accounts, p_requests, p_causes, p_payloads, hashes)
             AS b (position, stream_id, version, event_id, event_type, schema_version, time_us, account,
                   request_id, causation_id, payload, hash)
        WHERE b.position IS NOT NULL;
        notice := pos::text || '/' || p_node;
        -- An event takes over 200 bytes in the notice: more than 40 never fit.
        IF pos - head_position <= 40 THEN
            SELECT notice || '/' || json_agg(json_build_array(b.position, b.stream, b.version, b.event_id,
                       b.event_type, b.schema_version, b.time_us, b.account, b.request_id, b.causation_id,
                       b.payload, encode(b.hash, 'hex')) ORDER BY b.position)::text
                INTO notice
                FROM UNNEST(positions, event_streams, event_versions, p_event_ids, p_types, p_schema_versions,
                            p_times, p_accounts, p_requests, p_causes, p_payloads, hashes)
                     AS b (position, stream, version, event_id, event_type, schema_version, time_us, account,
                           request_id, causation_id, payload, hash)
                WHERE b.position IS NOT NULL;
            IF octet_length(notice) >= 8000 THEN
                notice := pos::text || '/' || p_node;
            END IF;
        END IF;
        PERFORM pg_notify(p_channel, notice);
    END IF;
    last_hash := link;
END
$fn$;"#;

/// Calls [`PLACE_FUNCTION`].
const PLACE: &str = "SELECT head_position, head_hash, found_ids, found_versions, created_ids, last_hash \
                     FROM tenure_place_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

/// Calls [`APPEND_FUNCTION`].
const APPEND: &str =
    "SELECT tenure_append_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

/// After the planned path missed, the writer tries it again on every this
/// many-th batch (and on every batch once it hits again).
const PLANNED_RETRY_EVERY: u64 = 16;

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Where a PostgreSQL log lives: the connection settings and the schema.
#[derive(Clone)]
pub struct PostgresTarget {
    config: postgres::Config,
    schema: String,
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PostgresTarget")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("schema", &self.schema)
            .finish()
    }
}

impl PostgresTarget {
    /// Parses `postgres://user@host:port/db?schema=NAME` (or the key=value
    /// form). `schema` is ours, every other parameter is libpq's.
    pub fn parse(url: &str) -> Result<PostgresTarget, String> {
        let (base, schema) = split_schema(url)?;
        let config = postgres::Config::from_str(&base).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        PostgresTarget::new(config, schema.as_deref().unwrap_or(DEFAULT_SCHEMA))
    }

    pub fn new(config: postgres::Config, schema: &str) -> Result<PostgresTarget, String> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!(
                "schema {schema:?}: use 1 to 63 lowercase letters, digits and underscores, not starting with a digit"
            ));
        }
        Ok(PostgresTarget {
            config,
            schema: schema.to_owned(),
        })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A connection whose search path is the schema. Blocking: call it on a
    /// thread of its own, never on an async runtime's.
    pub fn connect(&self) -> Result<Client, StoreError> {
        self.connect_with(&self.config)
    }

    /// A connection like [`PostgresTarget::connect`]'s that fails within
    /// `timeout` when the server stops answering (connecting, or a request
    /// unacknowledged that long: TCP user timeout), rather than after the
    /// kernel's minutes: the timers' election must notice a lost session
    /// quickly.
    pub(crate) fn connect_watchful(&self, timeout: std::time::Duration) -> Result<Client, StoreError> {
        let mut config = self.config.clone();
        config
            .connect_timeout(timeout)
            .tcp_user_timeout(timeout)
            .keepalives(true)
            .keepalives_idle(timeout);
        self.connect_with(&config)
    }

    fn connect_with(&self, config: &postgres::Config) -> Result<Client, StoreError> {
        let mut client = config
            .connect(NoTls)
            .map_err(|e| StoreError::Io(format!("cannot connect to PostgreSQL: {e}")))?;
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
            .map_err(io)?;
        Ok(client)
    }

    /// The advisory lock every append batch of this schema holds.
    fn lock_key(&self) -> i64 {
        let digest = Sha256::digest(format!("tenure-log:{}", self.schema).as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(bytes)
    }

    /// The session advisory lock held by the node that runs the timers
    /// (`store::election`); another key than the writers' lock.
    pub(crate) fn timers_key(&self) -> i64 {
        let digest = Sha256::digest(format!("tenure-timers:{}", self.schema).as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(bytes)
    }

    /// The channel the writers notify on.
    fn channel(&self) -> String {
        format!("tenure_{}", self.schema)
    }
}

/// Takes our `schema` parameter out of a URL's query string.
fn split_schema(url: &str) -> Result<(String, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => schema = Some(value.to_owned()),
            _ => rest.push(pair),
        }
    }
    let base = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((base, schema))
}

/// Creates the schema and its tables if needed and answers the log's head.
fn prepare(client: &mut Client, target: &PostgresTarget) -> Result<ChainHead, StoreError> {
    let schema = &target.schema;
    // Several nodes may start at once: one creates, the others wait.
    let mut tx = client.transaction().map_err(io)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&target.lock_key()])
        .map_err(io)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         SET LOCAL search_path TO \"{schema}\";
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS streams (
             id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             name TEXT COLLATE \"C\" NOT NULL UNIQUE
         );
         CREATE TABLE IF NOT EXISTS events (
             position       BIGINT  PRIMARY KEY,
             stream_id      BIGINT  NOT NULL REFERENCES streams (id),
             version        BIGINT  NOT NULL,
             event_id       UUID    NOT NULL,
             event_type     TEXT    NOT NULL,
             schema_version INTEGER NOT NULL,
             time_us        BIGINT  NOT NULL,
             account        TEXT    NOT NULL,
             request_id     UUID,
             causation_id   UUID,
             payload        TEXT    NOT NULL,
             hash           BYTEA   NOT NULL,
             UNIQUE (stream_id, version)
         );
         CREATE TABLE IF NOT EXISTS timers_leader (
             id    INTEGER PRIMARY KEY CHECK (id = 1),
             url   TEXT NOT NULL,
             since TIMESTAMPTZ NOT NULL
         );
         CREATE INDEX IF NOT EXISTS events_by_causation ON events (causation_id) WHERE causation_id IS NOT NULL;
         INSERT INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}') ON CONFLICT DO NOTHING;
         {APPEND_FUNCTION}
         {PLACE_FUNCTION}"
    ))
    .map_err(io)?;
    let version: String = tx
        .query_one("SELECT value FROM meta WHERE key = 'schema_version'", &[])
        .and_then(|r| r.try_get(0))
        .map_err(io)?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::Io(format!(
            "schema {schema} holds a log of schema version {version}; this build reads {SCHEMA_VERSION}"
        )));
    }
    tx.commit().map_err(io)?;
    head(client)
}

const HEAD: &str = "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1";

/// The last event's position and link (or the empty head).
fn head<C: postgres::GenericClient>(client: &mut C) -> Result<ChainHead, StoreError> {
    head_of(client.query_opt(HEAD, &[]).map_err(io)?)
}

/// The head from the row of [`HEAD`].
fn head_of(row: Option<postgres::Row>) -> Result<ChainHead, StoreError> {
    let Some(row) = row else {
        return Ok(ChainHead::EMPTY);
    };
    let position: i64 = row.try_get(0).map_err(io)?;
    let hash: &[u8] = row.try_get(1).map_err(io)?;
    Ok(ChainHead {
        position: u64::try_from(position).map_err(|e| StoreError::Corrupt(format!("head position: {e}")))?,
        hash: ChainHash::try_from(hash)
            .map_err(|len| StoreError::Corrupt(format!("position {position}: hash of {len} bytes")))?,
    })
}

/// Accounts met while reading a page: each parsed once.
#[derive(Default)]
struct Accounts(HashMap<String, AccountId>);

impl Accounts {
    fn get(&mut self, name: &str) -> Result<AccountId, tenure_events::IdError> {
        if let Some(account) = self.0.get(name) {
            return Ok(account.clone());
        }
        let account: AccountId = name.parse()?;
        self.0.insert(name.to_owned(), account.clone());
        Ok(account)
    }
}

/// An event as `events` holds it, its stream by name: a row read, or an
/// element of a notification's JSON array ([`PLACE_FUNCTION`]).
#[derive(serde::Deserialize)]
struct StoredEvent(
    i64,
    String,
    i64,
    Uuid,
    String,
    i32,
    i64,
    String,
    Option<Uuid>,
    Option<Uuid>,
    String,
    ChainHash,
);

impl StoredEvent {
    fn recorded(self, accounts: &mut Accounts) -> Result<RecordedEvent, StoreError> {
        let StoredEvent(
            position,
            stream,
            version,
            event_id,
            event_type,
            schema_version,
            time_us,
            account,
            request_id,
            causation_id,
            payload,
            hash,
        ) = self;
        let corrupt =
            |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("position {position}: {what}: {e}"));
        Ok(RecordedEvent {
            position: u64::try_from(position).map_err(|e| corrupt("position", &e))?,
            stream: StreamId::new(stream).map_err(|e| corrupt("stream", &e))?,
            version: u64::try_from(version).map_err(|e| corrupt("version", &e))?,
            event_id,
            event_type,
            schema_version: u32::try_from(schema_version).map_err(|e| corrupt("schema version", &e))?,
            time: chrono::DateTime::from_timestamp_micros(time_us).ok_or_else(|| corrupt("time", &time_us))?,
            account: accounts.get(&account).map_err(|e| corrupt("account", &e))?,
            request_id,
            causation_id,
            payload,
            hash,
        })
    }
}

fn row_to_event(row: &postgres::Row, accounts: &mut Accounts) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get(0).map_err(io)?;
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("position {position}: {what}: {e}"));
    let hash: &[u8] = row.try_get(11).map_err(|e| corrupt("hash", &e))?;
    StoredEvent(
        position,
        row.try_get(1).map_err(|e| corrupt("stream", &e))?,
        row.try_get(2).map_err(|e| corrupt("version", &e))?,
        row.try_get(3).map_err(|e| corrupt("event id", &e))?,
        row.try_get(4).map_err(|e| corrupt("event type", &e))?,
        row.try_get(5).map_err(|e| corrupt("schema version", &e))?,
        row.try_get(6).map_err(|e| corrupt("time", &e))?,
        row.try_get(7).map_err(|e| corrupt("account", &e))?,
        row.try_get(8).map_err(|e| corrupt("request id", &e))?,
        row.try_get(9).map_err(|e| corrupt("causation id", &e))?,
        row.try_get(10).map_err(|e| corrupt("payload", &e))?,
        ChainHash::try_from(hash).map_err(|len| corrupt("hash", &format!("{len} bytes instead of 32")))?,
    )
    .recorded(accounts)
}

fn query_events<C: postgres::GenericClient>(
    client: &mut C,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = client.query(sql, params).map_err(io)?;
    let mut accounts = Accounts::default();
    rows.iter().map(|row| row_to_event(row, &mut accounts)).collect()
}

/// A page of `$all`. Positions have no gaps, so the page is bounded on both
/// sides (`$1 <= position < $2`, `$2` being `$1` plus the page's size,
/// which is `$3`): the planner walks the position
/// index for at most `$3` rows whatever the statistics of a young schema
/// say. Each event's stream name comes by the stream's key, row by row,
/// not by a join, which a planner without statistics turned into a
/// sequential scan of `streams` on every page (measured with three nodes:
/// about 1,900 rows of `streams` read per grant, against 34 with one
/// node). `tests/store_postgres.rs` checks the plan.
pub const READ_PAGE: &str = "SELECT e.position, (SELECT s.name FROM streams s WHERE s.id = e.stream_id), \
     e.version, e.event_id, e.event_type, e.schema_version, e.time_us, e.account, e.request_id, e.causation_id, \
     e.payload, e.hash FROM events e WHERE e.position >= $1 AND e.position < $2 ORDER BY e.position LIMIT $3";

fn read_page<C: postgres::GenericClient>(
    client: &mut C,
    from: u64,
    max: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let (max, until) = (max as u64, from.saturating_add(max as u64));
    query_events(client, READ_PAGE, &[&sql_int(from), &sql_int(until), &sql_int(max)])
}

/// A PostgreSQL log opened for reading only, for the offline tools
/// (`tenure replay`, `tenure verify` with `--store`): it never writes or
/// creates anything, and reads while servers append. Blocking: use it off
/// any async runtime.
pub struct PostgresLogReader {
    client: Client,
    target: PostgresTarget,
}

impl PostgresLogReader {
    /// Opens the schema's log; an error if it holds none.
    pub fn open(target: &PostgresTarget) -> Result<PostgresLogReader, StoreError> {
        let mut client = target.connect()?;
        let tables: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = $1 AND table_name IN ('events', 'streams', 'meta')",
                &[&target.schema],
            )
            .and_then(|r| r.try_get(0))
            .map_err(io)?;
        if tables != 3 {
            return Err(StoreError::Io(format!(
                "no event log in schema {} of that database",
                target.schema
            )));
        }
        Ok(PostgresLogReader {
            client,
            target: target.clone(),
        })
    }

    /// Which log this is, for messages.
    pub fn describe(&self) -> String {
        format!("schema {} in PostgreSQL", self.target.schema)
    }

    pub fn head(&mut self) -> Result<ChainHead, StoreError> {
        head(&mut self.client)
    }

    /// Up to `max` events from position `from` on, in position order.
    pub fn read_page(&mut self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        read_page(&mut self.client, from, max)
    }
}

/// The PostgreSQL event store. Cheap to clone; [`PostgresStore::close`] (or
/// dropping the last clone) lets queued appends finish and stops the threads.
#[derive(Clone)]
pub struct PostgresStore {
    handle: Arc<Handle>,
}

struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.close();
    }
}

struct WriteJob {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    reply: AppendCallback,
    queued: std::time::Instant,
}

type ReadJob = Box<dyn FnOnce(Result<&mut Client, StoreError>) + Send>;

struct Inner {
    writer: Mutex<Option<crossbeam_channel::Sender<WriteJob>>>,
    readers: Mutex<Option<crossbeam_channel::Sender<ReadJob>>>,
    /// Dropping it stops the listener.
    listener: Mutex<Option<crossbeam_channel::Sender<()>>>,
    live: Mutex<Option<broadcast::Sender<LiveBatch>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

/// What the threads and the handles all see: the newest head known.
struct Shared {
    head: AtomicU64,
    chain: Mutex<ChainHead>,
    /// This node's tag in the notices of its writer's batches
    /// (`POSITION/TAG`): the writer broadcasts them, so the listener skips
    /// them, even one whose notification arrives before the writer has its
    /// answer. A batch whose answer was lost (committed, the writer saw an
    /// error) is read by the listener at the next poll, or when the
    /// writer's next batch waits for it ([`Shared::publish`]).
    node: String,
    /// This node's batches that came after events of other nodes not yet
    /// broadcast, in order: the listener broadcasts them once it has read
    /// those (see [`Shared::publish`]).
    pending: Mutex<Vec<LiveBatch>>,
}

impl Shared {
    /// Moves the head forward (never back: the writer and the listener may
    /// both report the same events).
    fn advance(&self, to: ChainHead) {
        let mut chain = self.chain.lock();
        if to.position > chain.position {
            *chain = to;
            self.head.store(to.position, Ordering::Release);
        }
    }

    /// Broadcasts a batch of this node's writer, or, when events of other
    /// nodes that come before it are not broadcast yet, leaves it to the
    /// listener, which reads those (it has their notifications) and then
    /// sends it on ([`Shared::flush`]). Broadcast first, the batch would
    /// show every subscriber a gap, and each would read the missing events
    /// from the log itself, besides the listener.
    fn publish(&self, batch: Vec<RecordedEvent>, live: &broadcast::Sender<LiveBatch>) {
        let Some(first) = batch.first().map(|e| e.position) else {
            return;
        };
        let mut pending = self.pending.lock();
        if pending.is_empty() && first <= self.head.load(Ordering::Acquire) + 1 {
            self.send(Arc::new(batch), live);
        } else {
            pending.push(Arc::new(batch));
        }
    }

    /// Broadcasts the pending batches the head has reached (dropping those
    /// it has passed, read from the log with the others').
    fn flush(&self, live: &broadcast::Sender<LiveBatch>) {
        let mut pending = self.pending.lock();
        let mut ready = 0;
        for batch in pending.iter() {
            let first = batch.first().map_or(0, |e| e.position);
            if first > self.head.load(Ordering::Acquire) + 1 {
                break;
            }
            self.send(Arc::clone(batch), live);
            ready += 1;
        }
        pending.drain(..ready);
    }

    /// Whether batches of this node wait for the listener to read others'.
    fn waiting(&self) -> bool {
        !self.pending.lock().is_empty()
    }

    /// Moves the head to the end of `batch` and broadcasts it, unless the
    /// head has passed it already.
    fn send(&self, batch: LiveBatch, live: &broadcast::Sender<LiveBatch>) {
        let Some(last) = batch.last() else { return };
        if last.position <= self.head.load(Ordering::Acquire) {
            return;
        }
        self.advance(ChainHead {
            position: last.position,
            hash: last.hash,
        });
        let _ = live.send(batch);
    }

    /// Whether a batch ending at `position` is broadcast already.
    fn covers(&self, position: u64) -> bool {
        position <= self.head.load(Ordering::Acquire)
    }
}

impl PostgresStore {
    /// Opens (creating the schema and tables if needed) the log at `url`.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let target = PostgresTarget::parse(url).map_err(StoreError::Io)?;
        PostgresStore::open_target(target, None)
    }

    /// Opens the log, its writer counting into `metrics` (the server's).
    pub fn open_target(target: PostgresTarget, metrics: Option<StoreMetrics>) -> Result<PostgresStore, StoreError> {
        // The blocking client must not run on an async runtime's thread.
        let setup = target.clone();
        let chain = std::thread::Builder::new()
            .name("tenure-pg-setup".into())
            .spawn(move || -> Result<ChainHead, StoreError> {
                let mut client = setup.connect()?;
                prepare(&mut client, &setup)
            })
            .map_err(io)?
            .join()
            .map_err(|_| StoreError::Io("the PostgreSQL set-up thread panicked".into()))??;

        let (write_tx, write_rx) = crossbeam_channel::unbounded::<WriteJob>();
        let (read_tx, read_rx) = crossbeam_channel::unbounded::<ReadJob>();
        let (live_tx, _) = broadcast::channel(LIVE_BATCHES_BUFFERED);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(Shared {
            head: AtomicU64::new(chain.position),
            chain: Mutex::new(chain),
            node: Uuid::new_v4().simple().to_string(),
            pending: Mutex::new(Vec::new()),
        });
        let inner = Arc::new(Inner {
            writer: Mutex::new(Some(write_tx)),
            readers: Mutex::new(Some(read_tx)),
            listener: Mutex::new(Some(stop_tx)),
            live: Mutex::new(Some(live_tx.clone())),
            threads: Mutex::new(Vec::new()),
            shared: Arc::clone(&shared),
        });

        let mut threads = Vec::new();
        for i in 0..READERS {
            let rx = read_rx.clone();
            let target = target.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tenure-pg-read-{i}"))
                    .spawn(move || {
                        let mut conn: Option<Client> = None;
                        while let Ok(job) = rx.recv() {
                            if conn.as_ref().is_none_or(Client::is_closed) {
                                conn = None;
                                match target.connect() {
                                    Ok(c) => conn = Some(c),
                                    Err(e) => {
                                        job(Err(e));
                                        continue;
                                    }
                                }
                            }
                            if let Some(c) = conn.as_mut() {
                                job(Ok(c));
                            }
                        }
                    })
                    .map_err(io)?,
            );
        }
        let listener = Listener {
            target: target.clone(),
            live: live_tx.clone(),
            shared: Arc::clone(&shared),
            metrics: metrics.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("tenure-pg-listen".into())
                .spawn(move || listener.run(stop_rx))
                .map_err(io)?,
        );
        let writer = Writer {
            lock_key: target.lock_key(),
            channel: target.channel(),
            target,
            conn: None,
            streams: StreamCache::default(),
            head: chain,
            live: live_tx,
            shared,
            metrics: metrics.map(WriterMetrics::new),
            batches: 0,
            planned_misses: 0,
        };
        threads.push(
            std::thread::Builder::new()
                .name("tenure-pg-write".into())
                .spawn(move || writer.run(write_rx))
                .map_err(io)?,
        );
        *inner.threads.lock() = threads;
        Ok(PostgresStore {
            handle: Arc::new(Handle { inner }),
        })
    }

    /// Stops accepting appends, lets queued ones finish, and stops the threads.
    pub fn close(&self) {
        self.handle.inner.close();
    }
}

impl Inner {
    fn close(&self) {
        drop(self.writer.lock().take());
        drop(self.live.lock().take());
        drop(self.listener.lock().take());
        drop(self.readers.lock().take());
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }

    fn read<T, F>(&self, f: F) -> StoreFuture<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(conn.and_then(f));
        });
        let sent = self
            .readers
            .lock()
            .as_ref()
            .map(|r| r.send(job).is_ok())
            .unwrap_or(false);
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    fn read_all(&self, from_position: u64, max_count: usize) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        self.read(move |conn| read_page(conn, from_position, max_count))
    }
}

/// Follows what other nodes append (and what this node's writer appended
/// but could not report) into the live broadcast.
struct Listener {
    target: PostgresTarget,
    live: broadcast::Sender<LiveBatch>,
    shared: Arc<Shared>,
    metrics: Option<StoreMetrics>,
}

impl Listener {
    fn run(self, stop: crossbeam_channel::Receiver<()>) {
        let mut conn: Option<Client> = None;
        loop {
            if let Err(crossbeam_channel::TryRecvError::Disconnected) = stop.try_recv() {
                return;
            }
            if conn.as_ref().is_none_or(Client::is_closed) {
                conn = self.listen().ok();
                if conn.is_none() {
                    // The database is away: try again after a poll period.
                    if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) = stop.recv_timeout(POLL_EVERY) {
                        return;
                    }
                    continue;
                }
            }
            let Some(client) = conn.as_mut() else { continue };
            // Wait for a notification or the poll period, whichever first.
            let woke = client
                .notifications()
                .timeout_iter(POLL_EVERY)
                .next()
                .map(|n| n.map(|n| self.follow(&n)));
            let woke = match woke {
                Ok(woke) => woke,
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL listener connection failed; reconnecting");
                    conn = None;
                    continue;
                }
            };
            // A poll (no notification) always reads; a notification only
            // when it announces a batch this node has not broadcast and
            // does not carry its events. On one node every batch is the
            // writer's own, so nothing is read back.
            let mut news = woke != Some(true);
            // Drain what else is queued: once one needs a read, one
            // catch-up serves them all.
            while let Ok(Some(n)) = client.notifications().iter().next() {
                if !news {
                    news = !self.follow(&n);
                }
            }
            self.shared.flush(&self.live);
            // Batches of this node's still waiting for others' events read them.
            news |= self.shared.waiting();
            if !news {
                continue;
            }
            if let Err(e) = self.catch_up(client) {
                tracing::warn!(error = %e, "PostgreSQL listener could not read the log; reconnecting");
                conn = None;
            }
            self.shared.flush(&self.live);
        }
    }

    fn listen(&self) -> Result<Client, StoreError> {
        let mut client = self.target.connect()?;
        client
            .batch_execute(&format!("LISTEN \"{}\"", self.target.channel()))
            .map_err(io)?;
        Ok(client)
    }

    /// Whether a notification leaves nothing to read: it announces this
    /// node's own batch (tagged) or one broadcast
    /// already, or it carries its batch's events (`LAST/TAG/EVENTS`, see
    /// [`PLACE_FUNCTION`]) right after the head, which are broadcast here.
    fn follow(&self, notification: &postgres::Notification) -> bool {
        let mut parts = notification.payload().splitn(3, '/');
        let position = parts.next().and_then(|p| p.parse::<u64>().ok());
        let node = parts.next();
        if node == Some(self.shared.node.as_str()) || position.is_some_and(|p| self.shared.covers(p)) {
            return true;
        }
        let Some(events) = parts.next() else {
            return false;
        };
        let mut accounts = Accounts::default();
        let batch = serde_json::from_str::<Vec<StoredEvent>>(events)
            .map_err(|e| StoreError::Corrupt(format!("a notification's events: {e}")))
            .and_then(|stored| stored.into_iter().map(|e| e.recorded(&mut accounts)).collect());
        let batch: Vec<RecordedEvent> = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "reading the log instead");
                return false;
            }
        };
        let (Some(first), count) = (batch.first().map(|e| e.position), batch.len()) else {
            return false;
        };
        let _order = self.shared.pending.lock();
        if first > self.shared.head.load(Ordering::Acquire) + 1 {
            return false;
        }
        self.shared.send(Arc::new(batch), &self.live);
        self.count("notice", count);
        true
    }

    /// Counts events followed `from` a notice or the log.
    fn count(&self, from: &str, events: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.followed.with_label_values(&[from]).inc_by(events as u64);
        }
    }

    /// Broadcasts the events past the newest head this node knows. A page
    /// shorter than asked for reached the head: what commits after it
    /// notifies again (or the next poll finds it), so no read is spent on
    /// finding nothing more (with three nodes that empty read was every
    /// other read).
    fn catch_up(&self, client: &mut Client) -> Result<(), StoreError> {
        const PAGE: usize = 4096;
        loop {
            let known = self.shared.head.load(Ordering::Acquire);
            let page = read_page(client, known + 1, PAGE)?;
            if page.is_empty() {
                return Ok(());
            }
            let full = page.len() >= PAGE;
            self.count("log", page.len());
            // Under the writer's lock on pending batches, so that its next
            // batch is not broadcast before this page.
            let _order = self.shared.pending.lock();
            self.shared.send(Arc::new(page), &self.live);
            if !full {
                return Ok(());
            }
        }
    }
}

/// The writer's statements, prepared once per connection.
struct Statements {
    find: postgres::Statement,
    append: postgres::Statement,
    place: postgres::Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, StoreError> {
        Ok(Statements {
            find: client
                .prepare(
                    "SELECT s.name, s.id, COALESCE((SELECT MAX(e.version) FROM events e WHERE e.stream_id = s.id), 0) \
                     FROM streams s WHERE s.name = ANY($1::text[])",
                )
                .map_err(io)?,
            append: client.prepare(APPEND).map_err(io)?,
            place: client.prepare(PLACE).map_err(io)?,
        })
    }
}

type Outcome = Result<Appended, AppendError>;

/// A batch written: each request's outcome, the events, every stream the
/// batch names as it is after it, and the head after it.
type Written = (Vec<Outcome>, Vec<RecordedEvent>, StreamMap, ChainHead);

struct Writer {
    target: PostgresTarget,
    lock_key: i64,
    channel: String,
    conn: Option<(Client, Statements)>,
    /// Valid while no other writer appended: checked against the head.
    streams: StreamCache,
    /// The head after this writer's last batch (or as last read).
    head: ChainHead,
    live: broadcast::Sender<LiveBatch>,
    shared: Arc<Shared>,
    metrics: Option<WriterMetrics>,
    /// Batches written, and planned paths missed in a row (see [`Writer::write`]).
    batches: u64,
    planned_misses: u32,
}

impl Writer {
    fn run(mut self, rx: crossbeam_channel::Receiver<WriteJob>) {
        while let Ok(first) = rx.recv() {
            let mut events = first.events.len();
            let mut jobs = vec![first];
            while events < BATCH_EVENTS_MAX {
                match rx.try_recv() {
                    Ok(job) => {
                        events += job.events.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(jobs);
        }
    }

    fn commit(&mut self, jobs: Vec<WriteJob>) {
        let queued: Vec<std::time::Instant> = jobs.iter().map(|j| j.queued).collect();
        let (requests, replies): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|j| ((j.stream, j.expected, j.events), j.reply))
            .unzip();
        match self.write(requests) {
            Ok((outcomes, recorded, touched, head)) => {
                self.head = head;
                self.streams.remember(touched);
                if let Some(metrics) = &mut self.metrics {
                    metrics.committed(&recorded, &queued);
                }
                self.shared.publish(recorded, &self.live);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    reply(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "PostgreSQL append failed; reconnecting for the next batch");
                self.conn = None;
                self.streams.clear();
                if let Some(metrics) = &self.metrics {
                    metrics.answered(&queued);
                }
                for reply in replies {
                    reply(Err(e.clone().into()));
                }
            }
        }
    }

    /// Writes a batch in one statement: placed by this writer when its view
    /// of the log is current (see [`APPEND`]), else placed by PostgreSQL
    /// after the head it finds (see [`PLACE`]).
    fn write(&mut self, requests: Vec<(StreamId, ExpectedVersion, Vec<NewEvent>)>) -> Result<Written, StoreError> {
        if self.conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            self.conn = None;
            let mut client = self.target.connect()?;
            let statements = Statements::prepare(&mut client)?;
            self.conn = Some((client, statements));
        }
        self.batches = self.batches.wrapping_add(1);
        // After a miss (another node appended), the next batches go
        // straight to the placing path, trying the planned one again now
        // and then: with several busy nodes it would mostly miss.
        let try_planned = self.planned_misses == 0 || self.batches % PLANNED_RETRY_EVERY == 0;
        if try_planned {
            // Streams the writer does not remember, looked up in one query
            // (outside the lock: valid if the head has not moved, which the
            // planned path checks).
            let found = if self.decidable(&requests) {
                StreamMap::default()
            } else {
                self.find(&requests)?
            };
            if let Some(written) = self.write_planned(&requests, found)? {
                self.planned_misses = 0;
                self.count("planned");
                return Ok(written);
            }
            self.planned_misses = self.planned_misses.saturating_add(1);
            tracing::debug!(
                head = self.head.position,
                "the planned append missed; PostgreSQL places the batch"
            );
        }
        let written = self.write_placed(&requests)?;
        self.count("placed");
        Ok(written)
    }

    /// Counts a batch written by `path` (see [`StoreMetrics`]).
    fn count(&self, path: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.metrics.shared_batches.with_label_values(&[path]).inc();
        }
    }

    /// The ids and versions of the batch's streams the cache does not hold
    /// and the log does (a stream in neither is new), in one query: a
    /// batch of expiries names thousands of streams a node has not seen
    /// lately, which PL/pgSQL's loop in [`PLACE_FUNCTION`] would take a
    /// statement each to look up.
    fn find(&mut self, requests: &[(StreamId, ExpectedVersion, Vec<NewEvent>)]) -> Result<StreamMap, StoreError> {
        let Some((conn, statements)) = self.conn.as_mut() else {
            return Err(StoreError::Closed);
        };
        let mut unknown: Vec<&str> = requests
            .iter()
            .filter(|(stream, ..)| !self.streams.contains(stream))
            .map(|(stream, ..)| stream.as_str())
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        let mut found = StreamMap::default();
        for row in conn.query(&statements.find, &[&unknown]).map_err(io)? {
            let name: String = row.try_get(0).map_err(io)?;
            let id: i64 = row.try_get(1).map_err(io)?;
            let version: i64 = row.try_get(2).map_err(io)?;
            let stream = StreamId::new(name).map_err(|e| StoreError::Corrupt(format!("a stream's name: {e}")))?;
            let version =
                u64::try_from(version).map_err(|e| StoreError::Corrupt(format!("{stream}'s version: {e}")))?;
            found.insert(stream, StreamState { id: Some(id), version });
        }
        Ok(found)
    }

    /// Whether the planned path can decide the batch: a stream the cache
    /// does not hold is taken as new there, which is fine for an append that
    /// creates it (the statement fails if it exists), not for one whose
    /// outcome depends on its version.
    fn decidable(&self, requests: &[(StreamId, ExpectedVersion, Vec<NewEvent>)]) -> bool {
        requests.iter().all(|(stream, expected, events)| {
            self.streams.contains(stream)
                || (!events.is_empty() && matches!(expected, ExpectedVersion::Any | ExpectedVersion::Exact(0)))
        })
    }

    /// The batch in one round trip (see [`Writer::decidable`]): [`APPEND`]
    /// appends it if the head is still this writer's and every stream it
    /// takes as new is new, and answers `None` (nothing written) otherwise.
    fn write_planned(
        &mut self,
        requests: &[(StreamId, ExpectedVersion, Vec<NewEvent>)],
        found: StreamMap,
    ) -> Result<Option<Written>, StoreError> {
        let Some((conn, statements)) = self.conn.as_mut() else {
            return Err(StoreError::Closed);
        };
        let mut plan = Plan::new(requests, found, &self.streams, self.head);
        let bodies: Vec<Body<'_>> = plan.written.iter().map(Body::from).collect();
        let columns = Columns::of(&bodies);
        let placed = Placed::of(&plan.written);
        let expected_head = sql_int(self.head.position);
        let position = plan.head.position;
        let started = std::time::Instant::now();
        let notice = format!("{position}/{}", self.shared.node);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.lock_key, &expected_head, &plan.created];
        params.extend(placed.params(&plan.stream_ids, &columns, &self.channel, &notice));
        let row = conn.query_one(&statements.append, &params);
        let row = match row {
            Ok(row) => row,
            Err(e)
                if e.as_db_error().is_some_and(|db| {
                    *db.code() == postgres::error::SqlState::UNIQUE_VIOLATION && db.table() == Some("streams")
                }) =>
            {
                // A stream taken as new exists: nothing was written.
                return Ok(None);
            }
            Err(e) => return Err(io(e)),
        };
        let created_ids: Option<Vec<i64>> = row.try_get(0).map_err(io)?;
        let Some(created_ids) = created_ids else {
            // Nothing written: another writer appended.
            return Ok(None);
        };
        if let Some(metrics) = &self.metrics {
            metrics.metrics.fsync.observe(started.elapsed().as_secs_f64());
        }
        plan.resolve(&created_ids)?;
        Ok(Some((plan.outcomes, plan.written, plan.touched, plan.head)))
    }

    /// The batch placed by PostgreSQL ([`PLACE`]) after the head it finds
    /// under the lock; the writer then decides the same batch against that
    /// head and the streams as PostgreSQL found them, and checks that both
    /// reach the same link.
    fn write_placed(&mut self, requests: &[(StreamId, ExpectedVersion, Vec<NewEvent>)]) -> Result<Written, StoreError> {
        let Some((conn, statements)) = self.conn.as_mut() else {
            return Err(StoreError::Closed);
        };
        let names: Vec<&str> = requests.iter().map(|(stream, ..)| stream.as_str()).collect();
        let strings: Vec<Vec<u8>> = names.iter().map(|name| chain::canonical_string(name)).collect();
        let expected: Vec<i64> = requests
            .iter()
            .map(|(_, expected, _)| match expected {
                ExpectedVersion::Any => -1,
                ExpectedVersion::Exact(version) => sql_int(*version),
            })
            .collect();
        let counts: Vec<i32> = requests
            .iter()
            .map(|(.., events)| i32::try_from(events.len()).unwrap_or(i32::MAX))
            .collect();
        let bodies: Vec<Body<'_>> = requests
            .iter()
            .flat_map(|(.., events)| events.iter().map(Body::from))
            .collect();
        let canonical: Vec<Vec<u8>> = bodies.iter().map(chain::canonical_body).collect();
        let columns = Columns::of(&bodies);
        let started = std::time::Instant::now();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.lock_key, &names, &strings, &expected, &counts];
        params.extend(columns.params());
        params.extend([&canonical as &(dyn ToSql + Sync), &self.channel, &self.shared.node]);
        let row = conn.query_one(&statements.place, &params).map_err(io)?;
        if let Some(metrics) = &self.metrics {
            metrics.metrics.fsync.observe(started.elapsed().as_secs_f64());
        }
        let odd = |what: &str| StoreError::Corrupt(format!("PostgreSQL's placing append answered {what}"));
        let position: i64 = row.try_get(0).map_err(io)?;
        let hash: Vec<u8> = row.try_get(1).map_err(io)?;
        let head = ChainHead {
            position: u64::try_from(position).map_err(|_| odd("a negative head"))?,
            hash: ChainHash::try_from(hash.as_slice()).map_err(|_| odd("a head hash that is not 32 bytes"))?,
        };
        let found_ids: Vec<Option<i64>> = row.try_get(2).map_err(io)?;
        let found_versions: Vec<i64> = row.try_get(3).map_err(io)?;
        let created: Vec<i64> = row.try_get(4).map_err(io)?;
        let last: Vec<u8> = row.try_get(5).map_err(io)?;
        if head != self.head {
            // Another writer appended since this one's last batch: what it
            // remembers of streams may be stale.
            self.streams.clear();
        }
        // The streams as PostgreSQL found them, in order of first mention.
        let mut states = found_ids.into_iter().zip(found_versions);
        let mut found = StreamMap::default();
        for (stream, ..) in requests {
            if !found.contains_key(stream) {
                let (id, version) = states.next().ok_or_else(|| odd("fewer streams than the batch names"))?;
                let version = u64::try_from(version).map_err(|_| odd("a negative version"))?;
                found.insert(stream.clone(), StreamState { id, version });
            }
        }
        let mut plan = Plan::new(requests, found, &self.streams, head);
        if plan.created.len() != created.len() {
            return Err(odd("another number of created streams than the writer's plan"));
        }
        plan.resolve(&created)?;
        if plan.head.hash.0.as_slice() != last.as_slice() {
            return Err(odd(&format!(
                "a chain that ends elsewhere than the writer's plan (at {})",
                plan.head
            )));
        }
        Ok((plan.outcomes, plan.written, plan.touched, plan.head))
    }
}

/// A batch decided against a head and what is known of its streams:
/// each request's outcome, the events to write with their positions,
/// versions and links, and each event's stream row id. A stream the batch
/// creates holds a placeholder id, -(its index in `created` + 1), until
/// [`Plan::resolve`].
struct Plan {
    outcomes: Vec<Outcome>,
    written: Vec<RecordedEvent>,
    stream_ids: Vec<i64>,
    created: Vec<String>,
    /// Every stream the batch names, as it is after the batch.
    touched: StreamMap,
    /// The head after the batch.
    head: ChainHead,
}

impl Plan {
    /// `found`: streams read from the log for this batch (read before
    /// `cache`); a stream in neither is new.
    fn new(
        requests: &[(StreamId, ExpectedVersion, Vec<NewEvent>)],
        found: StreamMap,
        cache: &StreamCache,
        head: ChainHead,
    ) -> Plan {
        let mut touched = found;
        let mut created: Vec<String> = Vec::new();
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut written: Vec<RecordedEvent> = Vec::new();
        let mut stream_ids: Vec<i64> = Vec::new();
        let mut position = head.position;
        let mut link = head.hash;
        for (stream, expected, events) in requests {
            let known = touched.get(stream).copied().or_else(|| cache.get(stream));
            let state = known.unwrap_or(StreamState { id: None, version: 0 });
            if let ExpectedVersion::Exact(want) = *expected {
                if want != state.version {
                    touched.insert(stream.clone(), state);
                    outcomes.push(Err(AppendError::Conflict {
                        expected: *expected,
                        actual: state.version,
                    }));
                    continue;
                }
            }
            let id = match state.id {
                Some(id) => id,
                None if events.is_empty() => {
                    outcomes.push(Ok(Appended {
                        first_position: position.max(1),
                        last_position: position,
                        version: 0,
                    }));
                    continue;
                }
                None => {
                    created.push(stream.as_str().to_owned());
                    -(created.len() as i64)
                }
            };
            let first_position = position + 1;
            let mut version = state.version;
            for event in events {
                position += 1;
                version += 1;
                let mut recorded = RecordedEvent::from_new(event.clone(), stream.clone(), version, position);
                recorded.chain_after(&link);
                link = recorded.hash;
                written.push(recorded);
                stream_ids.push(id);
            }
            outcomes.push(Ok(Appended {
                first_position: first_position.min(position.max(1)),
                last_position: position,
                version,
            }));
            touched.insert(stream.clone(), StreamState { id: Some(id), version });
        }
        Plan {
            outcomes,
            written,
            stream_ids,
            created,
            touched,
            head: ChainHead { position, hash: link },
        }
    }

    /// Replaces the placeholder ids of created streams with their row ids,
    /// `ids[i]` that of `created[i]`.
    fn resolve(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let real = |placeholder: i64| {
            usize::try_from(-placeholder - 1)
                .ok()
                .and_then(|i| ids.get(i))
                .copied()
                .ok_or_else(|| StoreError::Io("PostgreSQL did not return the id of a stream it created".into()))
        };
        for id in self.stream_ids.iter_mut().filter(|id| **id < 0) {
            *id = real(*id)?;
        }
        for state in self.touched.values_mut() {
            if let Some(id) = state.id.filter(|id| *id < 0) {
                state.id = Some(real(id)?);
            }
        }
        Ok(())
    }
}

/// What a batch's events are, one array per column of `events` (apart
/// from where they are placed: see [`Placed`]).
struct Columns<'a> {
    event_ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    times: Vec<i64>,
    accounts: Vec<&'a str>,
    requests: Vec<Option<Uuid>>,
    causes: Vec<Option<Uuid>>,
    payloads: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    /// The columns in the order both functions take them.
    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.event_ids,
            &self.types,
            &self.schema_versions,
            &self.times,
            &self.accounts,
            &self.requests,
            &self.causes,
            &self.payloads,
        ]
    }

    fn of(bodies: &[Body<'a>]) -> Columns<'a> {
        Columns {
            event_ids: bodies.iter().map(|e| *e.event_id).collect(),
            types: bodies.iter().map(|e| e.event_type).collect(),
            schema_versions: bodies
                .iter()
                .map(|e| i32::try_from(e.schema_version).unwrap_or(i32::MAX))
                .collect(),
            times: bodies.iter().map(|e| e.time.timestamp_micros()).collect(),
            accounts: bodies.iter().map(|e| e.account.as_str()).collect(),
            requests: bodies.iter().map(|e| e.request_id.copied()).collect(),
            causes: bodies.iter().map(|e| e.causation_id.copied()).collect(),
            payloads: bodies.iter().map(|e| e.payload).collect(),
        }
    }
}

/// Where the writer placed a batch's events: positions, versions, links.
struct Placed<'a> {
    positions: Vec<i64>,
    versions: Vec<i64>,
    hashes: Vec<&'a [u8]>,
}

impl<'a> Placed<'a> {
    fn of(written: &'a [RecordedEvent]) -> Placed<'a> {
        Placed {
            positions: written.iter().map(|e| sql_int(e.position)).collect(),
            versions: written.iter().map(|e| sql_int(e.version)).collect(),
            hashes: written.iter().map(|e| e.hash.0.as_slice()).collect(),
        }
    }

    /// The parameters that end [`APPEND`]'s: the events' columns, then the
    /// channel to notify and the notice (the batch's last position).
    fn params<'b>(
        &'b self,
        stream_ids: &'b Vec<i64>,
        columns: &'b Columns<'_>,
        channel: &'b String,
        notice: &'b String,
    ) -> Vec<&'b (dyn ToSql + Sync)> {
        let mut params: Vec<&'b (dyn ToSql + Sync)> = vec![&self.positions, stream_ids, &self.versions];
        params.extend(columns.params());
        params.extend([&self.hashes as &(dyn ToSql + Sync), channel, notice]);
        params
    }
}

impl EventStore for PostgresStore {
    fn append_then(&self, stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>, done: AppendCallback) {
        let job = WriteJob {
            stream,
            expected,
            events,
            reply: done,
            queued: std::time::Instant::now(),
        };
        let refused = match self.handle.inner.writer.lock().as_ref() {
            Some(writer) => writer.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = refused {
            (job.reply)(Err(StoreError::Closed.into()));
        }
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        let stream = stream.clone();
        self.handle.inner.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM events e JOIN streams s ON s.id = e.stream_id \
                 WHERE s.name = $1 AND e.version >= $2 ORDER BY e.version LIMIT $3"
            );
            query_events(
                conn,
                &sql,
                &[&stream.as_str(), &sql_int(from_version), &sql_int(max_count as u64)],
            )
        })
    }

    fn read_all(&self, from_position: u64, max_count: usize) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        self.handle.inner.read_all(from_position, max_count)
    }

    fn subscribe_all(&self, from_position: u64) -> Subscription {
        let inner = Arc::clone(&self.handle.inner);
        let fetch: FetchAll = Arc::new(move |from, max| inner.read_all(from, max));
        Subscription::following(from_position, self.handle.inner.live.lock().as_ref(), fetch)
    }

    fn head(&self) -> u64 {
        self.handle.inner.shared.head.load(Ordering::Acquire)
    }

    fn chain_head(&self) -> ChainHead {
        *self.handle.inner.shared.chain.lock()
    }

    fn read_caused_by(&self, causes: Vec<Uuid>) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        self.handle.inner.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM events e JOIN streams s ON s.id = e.stream_id \
                 WHERE e.causation_id = ANY($1) ORDER BY e.position"
            );
            query_events(conn, &sql, &[&causes])
        })
    }

    fn stream_names(&self, prefix: &str, max_count: usize) -> StoreFuture<Result<Vec<StreamId>, StoreError>> {
        let prefix = prefix.to_owned();
        self.handle.inner.read(move |conn| {
            // Names sort bytewise (COLLATE "C"): a range scan from the prefix.
            let rows = conn
                .query(
                    "SELECT name FROM streams WHERE name >= $1 ORDER BY name LIMIT $2",
                    &[&prefix, &sql_int(max_count as u64)],
                )
                .map_err(io)?;
            let mut out = Vec::new();
            for row in rows {
                let name: String = row.try_get(0).map_err(io)?;
                if !name.starts_with(&prefix) {
                    break;
                }
                out.push(StreamId::new(name).map_err(|e| StoreError::Corrupt(format!("stream name: {e}")))?);
            }
            Ok(out)
        })
    }

    fn health(&self) -> Result<(), StoreError> {
        if self.handle.inner.writer.lock().is_none() {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    fn is_shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(positions: std::ops::RangeInclusive<u64>) -> Vec<RecordedEvent> {
        let stream = StreamId::new("test/s").expect("a valid stream");
        positions
            .map(|p| RecordedEvent::from_new(super::super::conformance::event(p), stream.clone(), p, p))
            .collect()
    }

    fn received(rx: &mut broadcast::Receiver<LiveBatch>) -> Vec<(u64, u64)> {
        let mut got = Vec::new();
        while let Ok(b) = rx.try_recv() {
            got.push((b[0].position, b[b.len() - 1].position));
        }
        got
    }

    /// A batch of this node's that follows events of other nodes not yet
    /// broadcast waits for the listener to read them: subscribers see the
    /// log in order, with no gap to read for themselves.
    #[test]
    fn the_writers_batch_after_unread_events_waits_for_the_listener() {
        let shared = Shared {
            head: AtomicU64::new(2),
            chain: Mutex::new(ChainHead::EMPTY),
            node: "n".into(),
            pending: Mutex::new(Vec::new()),
        };
        let (live, mut rx) = broadcast::channel(16);
        shared.publish(batch(3..=4), &live);
        assert_eq!(received(&mut rx), [(3, 4)], "no gap: broadcast at once");

        // Another node appended 5..=6; this node's writer placed 7..=8.
        shared.publish(batch(7..=8), &live);
        shared.publish(batch(9..=9), &live);
        assert!(received(&mut rx).is_empty(), "broadcast before 5..=6");
        assert!(shared.waiting());
        // The listener reads 5..=6, then sends on what waited.
        shared.send(Arc::new(batch(5..=6)), &live);
        shared.flush(&live);
        assert_eq!(received(&mut rx), [(5, 6), (7, 8), (9, 9)]);
        assert!(!shared.waiting());
        assert_eq!(shared.head.load(Ordering::Acquire), 9);

        // A waiting batch the listener read with the others' is not sent twice.
        shared.publish(batch(12..=13), &live);
        shared.send(Arc::new(batch(10..=13)), &live);
        shared.flush(&live);
        assert_eq!(received(&mut rx), [(10, 13)]);
        assert!(!shared.waiting());
    }

    #[test]
    fn the_schema_parameter_is_ours_and_the_rest_is_libpq_s() {
        let (base, schema) = split_schema("postgres://u@h:5432/db?sslmode=disable&schema=s1").expect("parse");
        assert_eq!(base, "postgres://u@h:5432/db?sslmode=disable");
        assert_eq!(schema.as_deref(), Some("s1"));
        let target = PostgresTarget::parse("postgres://u@h/db").expect("parse");
        assert_eq!(target.schema(), DEFAULT_SCHEMA);
        for bad in ["", "1a", "A", "a-b", "a\"b"] {
            let url = format!("postgres://u@h/db?schema={bad}");
            assert!(PostgresTarget::parse(&url).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn schemas_lock_apart() {
        let a = PostgresTarget::parse("postgres://u@h/db?schema=a").expect("a");
        let b = PostgresTarget::parse("postgres://u@h/db?schema=b").expect("b");
        assert_ne!(a.lock_key(), b.lock_key());
        assert_eq!(a.lock_key(), a.clone().lock_key());
    }
}

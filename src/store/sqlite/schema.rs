//! The tables of the embedded log, their versions, and the migrations
//! between them.
//!
//! - **Schema 1**: streams, events, meta.
//! - **Schema 2**: every event carries its link in the hash chain
//!   (`events.hash`, see `tenure_events::chain`), and an index finds the
//!   events a given event caused (`events_by_causation`, partial: only
//!   events with a causation id, so ordinary appends do not pay for it).
//!   A schema-1 file is chained when it is first opened for writing.
//! - **Schema 3**: snapshots of projections and key spaces
//!   (`snapshots`, `snapshot_chunks`; see `crate::snapshot`). They are
//!   derived data: a file without them is whole, and the migration only
//!   creates the two tables.

use rusqlite::{params, Connection, OptionalExtension};
use tenure_events::{ChainHash, ChainHead};

use super::rows::{self, io};
use crate::store::StoreError;

/// The schema this build writes.
pub(super) const SCHEMA_VERSION: u32 = 3;

/// Events chained per transaction while migrating from schema 1: bounds
/// the memory and the WAL of a migration of a long log.
const MIGRATION_PAGE: usize = 50_000;

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS streams (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
) STRICT;
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    stream_id      INTEGER NOT NULL REFERENCES streams (id),
    version        INTEGER NOT NULL,
    event_id       BLOB    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    time_us        INTEGER NOT NULL,  -- microseconds since 1970-01-01T00:00:00Z
    account        TEXT    NOT NULL,
    request_id     BLOB,
    causation_id   BLOB,
    payload        TEXT    NOT NULL,
    hash           BLOB    NOT NULL   -- SHA-256(previous hash || canonical bytes), see tenure_events::chain
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS events_by_stream ON events (stream_id, version);
";

const CAUSATION_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS events_by_causation ON events (causation_id) WHERE causation_id IS NOT NULL;";

/// Snapshots (schema 3). A snapshot's bytes are written in chunks, each in
/// a short transaction of its own, so a large one never holds the write
/// lock for long; it counts only once `complete` is set, in the last one.
pub(crate) const SNAPSHOTS: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL,  -- 'projections' or 'keyspace/{account}'
    format_version INTEGER NOT NULL,  -- of the encoding (crate::snapshot::FORMAT_VERSION)
    position       INTEGER NOT NULL,  -- the last event of the log folded in
    version        INTEGER NOT NULL,  -- an entity's stream version at that event (0: none)
    link           BLOB    NOT NULL,  -- the chain hash at `position`
    written_at_us  INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,  -- length of the encoded snapshot
    checksum       BLOB    NOT NULL,  -- SHA-256 over the header fields and the bytes
    complete       INTEGER NOT NULL   -- 1 once every chunk is written
) STRICT;
CREATE INDEX IF NOT EXISTS snapshots_by_name ON snapshots (name, position);
CREATE TABLE IF NOT EXISTS snapshot_chunks (
    snapshot_id INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    PRIMARY KEY (snapshot_id, seq)
) STRICT;
";

const META: &str = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;";

/// The schema version recorded in the file, if it has one.
pub(super) fn version(conn: &Connection) -> Result<Option<u32>, StoreError> {
    let has_meta: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
            [],
            |r| r.get(0),
        )
        .map_err(io)?;
    if !has_meta {
        return Ok(None);
    }
    let value: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .optional()
        .map_err(io)?;
    value
        .map(|v| {
            v.parse()
                .map_err(|_| StoreError::Corrupt(format!("schema version {v:?} is not a number")))
        })
        .transpose()
}

/// Creates the tables of a new file, or brings an older file up to
/// [`SCHEMA_VERSION`]. Answers the head of the chain.
pub(super) fn prepare(conn: &mut Connection, file: &str) -> Result<ChainHead, StoreError> {
    match version(conn)? {
        None => {
            conn.execute_batch(META).map_err(io)?;
            conn.execute_batch(TABLES).map_err(io)?;
            conn.execute_batch(CAUSATION_INDEX).map_err(io)?;
            conn.execute_batch(SNAPSHOTS).map_err(io)?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION.to_string()],
            )
            .map_err(io)?;
        }
        Some(1) => {
            chain_schema_1(conn, file)?;
            add_snapshots(conn, file)?;
        }
        Some(2) => add_snapshots(conn, file)?,
        Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(StoreError::Corrupt(format!(
                "{file} has schema version {other}; this build reads up to {SCHEMA_VERSION}"
            )))
        }
    }
    head(conn)
}

/// The last position and its link (the empty head for an empty log).
pub(super) fn head(conn: &Connection) -> Result<ChainHead, StoreError> {
    let last: Option<(i64, Option<Vec<u8>>)> = conn
        .query_row(
            "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(io)?;
    let Some((position, hash)) = last else {
        return Ok(ChainHead::EMPTY);
    };
    let position = u64::try_from(position).map_err(|e| StoreError::Corrupt(format!("position {position}: {e}")))?;
    let hash = hash
        .as_deref()
        .map(ChainHash::try_from)
        .transpose()
        .map_err(|len| StoreError::Corrupt(format!("position {position}: a chain hash of {len} bytes")))?
        .ok_or_else(|| StoreError::Corrupt(format!("position {position} has no chain hash")))?;
    Ok(ChainHead { position, hash })
}

/// Schema 1 to 2: adds the hash column and fills it, oldest event first,
/// a page per transaction; the version moves to 2 only once every event
/// is chained, so an interrupted migration starts again from the first
/// event next time (recomputing the same links).
fn chain_schema_1(conn: &mut Connection, file: &str) -> Result<(), StoreError> {
    let events: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .map_err(io)?;
    tracing::info!(
        file,
        events,
        "the event log predates the hash chain (schema 1): chaining it"
    );
    let started = std::time::Instant::now();
    let has_hash: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('events') WHERE name = 'hash')",
            [],
            |r| r.get(0),
        )
        .map_err(io)?;
    if !has_hash {
        conn.execute_batch("ALTER TABLE events ADD COLUMN hash BLOB")
            .map_err(io)?;
    }
    conn.execute_batch(CAUSATION_INDEX).map_err(io)?;
    let mut link = ChainHash::ZERO;
    let mut names = rows::Names::default();
    let mut next = 1;
    let mut chained = 0u64;
    loop {
        let page = rows::read_page(conn, &mut names, rows::Columns::WithoutHash, next, MIGRATION_PAGE)?;
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        let tx = conn.transaction().map_err(io)?;
        {
            let mut update = tx
                .prepare_cached("UPDATE events SET hash = ?1 WHERE position = ?2")
                .map_err(io)?;
            for mut event in page {
                event.chain_after(&link);
                link = event.hash;
                update
                    .execute(params![link.0.as_slice(), rows::to_sql_int(event.position)])
                    .map_err(io)?;
                chained += 1;
            }
        }
        tx.commit().map_err(io)?;
        tracing::info!(file, chained, of = events, "chaining the event log");
    }
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'", [])
        .map_err(io)?;
    tracing::info!(
        file,
        chained,
        head = %ChainHead { position: next - 1, hash: link },
        millis = started.elapsed().as_millis() as u64,
        "the event log is chained (schema 2)"
    );
    Ok(())
}

/// Schema 2 to 3: the snapshot tables, in one transaction with the version.
fn add_snapshots(conn: &mut Connection, file: &str) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(io)?;
    tx.execute_batch(SNAPSHOTS).map_err(io)?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
        [SCHEMA_VERSION.to_string()],
    )
    .map_err(io)?;
    tx.commit().map_err(io)?;
    tracing::info!(file, "the event log has room for snapshots (schema 3)");
    Ok(())
}

//! Where snapshots live: two tables of the log's own SQLite file
//! (`snapshots`, `snapshot_chunks`, schema 3), written through a
//! connection of their own, never the group-commit writer's.
//!
//! **Writing without stalling the log.** SQLite lets one connection write
//! at a time, and the event writer waits (its busy handler sleeps 1, 2, 5 ms
//! …) while another holds the lock. So a snapshot's bytes go in chunks of
//! [`CHUNK_BYTES`], each in a transaction of its own that holds the lock for
//! well under a millisecond, with a pause of [`CHUNK_PAUSE`] after each in
//! which the event writer always gets its turn. The header row is written
//! first with `complete = 0`; the last transaction sets it to 1. A snapshot
//! that is not complete (the process died while writing it) is never read,
//! and is deleted at the next start.
//!
//! Chunk transactions do not fsync (`synchronous = NORMAL`): a snapshot is
//! derived data, and the next commit of an event fsyncs the WAL, chunks
//! included. Losing the tail of the WAL can only lose a whole suffix of
//! transactions, so a `complete` snapshot always has all its chunks.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use sha2::{Digest as _, Sha256};
use tenure_events::ChainHash;

use crate::store::{SqliteStore, StoreError};

/// Bytes per chunk (and per transaction) of a snapshot.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// The pause after each chunk written or deleted: longer than the event
/// writer's first retries (1 + 2 ms), so it is never kept waiting by more
/// than one chunk.
pub const CHUNK_PAUSE: Duration = Duration::from_millis(4);

/// Complete snapshots kept per name: the newest and the one before it (if
/// the newest turns out unreadable, the one before saves most of the fold).
pub const KEPT_PER_NAME: usize = 2;

/// A stored snapshot's header: everything but its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: i64,
    /// `projections` or `keyspace/{account}`.
    pub name: String,
    pub format_version: u32,
    /// The last event of the log folded in.
    pub position: u64,
    /// An entity's stream version at `position` (0 for the projections).
    pub version: u64,
    /// The chain hash of the event at `position`: ties the snapshot to this
    /// log, not to another one that reached the same position.
    pub link: ChainHash,
    pub written_at_us: i64,
    pub bytes: u64,
    pub checksum: [u8; 32],
}

impl Header {
    /// SHA-256 over the header's fields and the bytes: a snapshot whose
    /// bytes or header changed after it was written does not match.
    pub fn checksum_of(
        name: &str,
        format_version: u32,
        position: u64,
        version: u64,
        link: &ChainHash,
        bytes: &[u8],
    ) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update(format_version.to_be_bytes());
        h.update(position.to_be_bytes());
        h.update(version.to_be_bytes());
        h.update(link.0);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
        h.finalize().into()
    }
}

fn io(e: rusqlite::Error) -> StoreError {
    StoreError::Io(format!("snapshots: {e}"))
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("snapshot {what} {v} is negative")))
}

/// The snapshot tables, through a connection of their own.
pub struct SnapshotFile {
    conn: Connection,
    /// Pause between chunks (none for read-only use and tests that ask).
    pause: Duration,
}

impl SnapshotFile {
    /// Opens the snapshot tables of `data_dir`'s log for reading and
    /// writing; the store must have been opened first (it creates them).
    pub fn open(data_dir: &Path) -> Result<SnapshotFile, StoreError> {
        let path = data_dir.join(SqliteStore::FILE_NAME);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        // No checkpoints of its own: the store's checkpointer does them.
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")
            .map_err(io)?;
        Ok(SnapshotFile {
            conn,
            pause: CHUNK_PAUSE,
        })
    }

    /// The file of a node's own snapshots when the log is not in the data
    /// directory (PostgreSQL): snapshots are derived data of one node,
    /// checked against the shared log's chain like any other, so each node
    /// keeps its own beside its data. Created with its tables if missing.
    pub fn open_own(data_dir: &Path) -> Result<SnapshotFile, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Io(format!("cannot create data directory {}: {e}", data_dir.display())))?;
        let path = data_dir.join(Self::OWN_FILE_NAME);
        let conn =
            Connection::open(&path).map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(io)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;")
            .map_err(io)?;
        conn.execute_batch(crate::store::SNAPSHOT_TABLES).map_err(io)?;
        Ok(SnapshotFile {
            conn,
            pause: CHUNK_PAUSE,
        })
    }

    /// See [`SnapshotFile::open_own`].
    pub const OWN_FILE_NAME: &'static str = "snapshots.sqlite3";

    /// Opens them read-only (`tenure verify`): answers `None` for a log
    /// without snapshot tables (schema 2).
    pub fn open_read_only(data_dir: &Path) -> Result<Option<SnapshotFile>, StoreError> {
        let path = data_dir.join(SqliteStore::FILE_NAME);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;").map_err(io)?;
        let has: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'snapshots')",
                [],
                |r| r.get(0),
            )
            .map_err(io)?;
        Ok(has.then_some(SnapshotFile {
            conn,
            pause: Duration::ZERO,
        }))
    }

    /// Writes a snapshot, chunk by chunk, and marks it complete; then
    /// deletes the older ones of the same name beyond [`KEPT_PER_NAME`].
    /// `stall` (a test knob) is called after the first chunk.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        chunk_bytes: usize,
        name: &str,
        format_version: u32,
        position: u64,
        version: u64,
        link: &ChainHash,
        bytes: &[u8],
        stall: &dyn Fn(),
    ) -> Result<Header, StoreError> {
        let checksum = Header::checksum_of(name, format_version, position, version, link, bytes);
        let written_at_us = chrono::Utc::now().timestamp_micros();
        let mut chunks = bytes.chunks(chunk_bytes.max(1));
        let id = {
            let tx = self.conn.transaction().map_err(io)?;
            tx.execute(
                "INSERT INTO snapshots (name, format_version, position, version, link, written_at_us, bytes, \
                 checksum, complete) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
                params![
                    name,
                    format_version,
                    int(position),
                    int(version),
                    link.0.as_slice(),
                    written_at_us,
                    int(bytes.len() as u64),
                    checksum.as_slice()
                ],
            )
            .map_err(io)?;
            let id = tx.last_insert_rowid();
            if let Some(first) = chunks.next() {
                tx.execute(
                    "INSERT INTO snapshot_chunks (snapshot_id, seq, data) VALUES (?1, 0, ?2)",
                    params![id, first],
                )
                .map_err(io)?;
            }
            tx.commit().map_err(io)?;
            id
        };
        stall();
        for (seq, chunk) in chunks.enumerate() {
            std::thread::sleep(self.pause);
            self.conn
                .execute(
                    "INSERT INTO snapshot_chunks (snapshot_id, seq, data) VALUES (?1, ?2, ?3)",
                    params![id, int(seq as u64 + 1), chunk],
                )
                .map_err(io)?;
        }
        self.conn
            .execute("UPDATE snapshots SET complete = 1 WHERE id = ?1", [id])
            .map_err(io)?;
        let older: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT id FROM snapshots WHERE name = ?1 AND complete = 1 ORDER BY position DESC, id DESC",
                )
                .map_err(io)?;
            let ids = stmt
                .query_map([name], |r| r.get::<_, i64>(0))
                .map_err(io)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io)?;
            ids.into_iter().skip(KEPT_PER_NAME).collect()
        };
        for old in older {
            self.delete(old)?;
        }
        Ok(Header {
            id,
            name: name.to_owned(),
            format_version,
            position,
            version,
            link: *link,
            written_at_us,
            bytes: bytes.len() as u64,
            checksum,
        })
    }

    /// Deletes a snapshot: its header first (it is then never read), then
    /// its chunks a few at a time.
    pub fn delete(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])
            .map_err(io)?;
        loop {
            std::thread::sleep(self.pause);
            let deleted = self
                .conn
                .execute(
                    "DELETE FROM snapshot_chunks WHERE rowid IN \
                     (SELECT rowid FROM snapshot_chunks WHERE snapshot_id = ?1 LIMIT 4)",
                    [id],
                )
                .map_err(io)?;
            if deleted == 0 {
                return Ok(());
            }
        }
    }

    /// Deletes what a process that died while writing left: incomplete
    /// snapshots, and chunks without a header.
    pub fn delete_incomplete(&mut self) -> Result<usize, StoreError> {
        let ids: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM snapshots WHERE complete = 0")
                .map_err(io)?;
            let ids = stmt
                .query_map([], |r| r.get::<_, i64>(0))
                .map_err(io)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io)?;
            ids
        };
        let orphans: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT DISTINCT snapshot_id FROM snapshot_chunks \
                     WHERE snapshot_id NOT IN (SELECT id FROM snapshots)",
                )
                .map_err(io)?;
            let ids = stmt
                .query_map([], |r| r.get::<_, i64>(0))
                .map_err(io)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io)?;
            ids
        };
        let n = ids.len();
        for id in ids.into_iter().chain(orphans) {
            self.delete(id)?;
        }
        Ok(n)
    }

    /// The complete snapshots named `name` (every name if `None`), newest
    /// (highest position) first.
    pub fn headers(&self, name: Option<&str>) -> Result<Vec<Header>, StoreError> {
        let sql = "SELECT id, name, format_version, position, version, link, written_at_us, bytes, checksum \
                   FROM snapshots WHERE complete = 1 AND (?1 IS NULL OR name = ?1) \
                   ORDER BY name, position DESC, id DESC";
        let mut stmt = self.conn.prepare_cached(sql).map_err(io)?;
        let rows = stmt
            .query_map([name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Vec<u8>>(8)?,
                ))
            })
            .map_err(io)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, format_version, position, version, link, written_at_us, bytes, checksum) =
                row.map_err(io)?;
            let link = ChainHash::try_from(link.as_slice())
                .map_err(|len| StoreError::Corrupt(format!("snapshot {id}: a link of {len} bytes")))?;
            let checksum: [u8; 32] = checksum
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("snapshot {id}: a checksum of {} bytes", checksum.len())))?;
            out.push(Header {
                id,
                name,
                format_version: u32::try_from(format_version).unwrap_or(u32::MAX),
                position: uint(position, "position")?,
                version: uint(version, "version")?,
                link,
                written_at_us,
                bytes: uint(bytes, "length")?,
                checksum,
            });
        }
        Ok(out)
    }

    /// A snapshot's bytes, checked against its header: every chunk in
    /// order, the length, the checksum. An error names what is wrong.
    pub fn read(&self, header: &Header) -> Result<Vec<u8>, String> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, data FROM snapshot_chunks WHERE snapshot_id = ?1 ORDER BY seq")
            .map_err(|e| format!("cannot read its chunks: {e}"))?;
        let rows = stmt
            .query_map([header.id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(|e| format!("cannot read its chunks: {e}"))?;
        let capacity = usize::try_from(header.bytes).unwrap_or(0).min(1 << 32);
        let mut bytes = Vec::with_capacity(capacity);
        for (expected, row) in rows.enumerate() {
            let (seq, data) = row.map_err(|e| format!("cannot read its chunks: {e}"))?;
            if seq != expected as i64 {
                return Err(format!("chunk {expected} is missing"));
            }
            bytes.extend_from_slice(&data);
        }
        if bytes.len() as u64 != header.bytes {
            return Err(format!("it holds {} bytes, not {}", bytes.len(), header.bytes));
        }
        let checksum = Header::checksum_of(
            &header.name,
            header.format_version,
            header.position,
            header.version,
            &header.link,
            &bytes,
        );
        if checksum != header.checksum {
            return Err("its checksum does not match".into());
        }
        Ok(bytes)
    }

    /// How many snapshots (complete or not) are stored: for tests.
    pub fn count(&self) -> Result<(u64, u64), StoreError> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(complete), 0), COUNT(*) - COALESCE(SUM(complete), 0) FROM snapshots",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .optional()
            .map_err(io)
            .map(|r| r.unwrap_or((0, 0)))
    }
}

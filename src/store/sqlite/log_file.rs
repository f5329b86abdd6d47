//! A data directory's log opened read-only, for the offline tools (`tenure
//! replay`, `tenure verify`): it never writes or migrates, and it reads
//! while a server appends (WAL readers do not block the writer, nor it
//! them).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use tenure_events::{ChainHead, RecordedEvent};

use super::rows::{self, io, Columns};
use super::schema;
use super::SqliteStore;
use crate::store::StoreError;

pub struct SqliteLogFile {
    conn: Connection,
    names: rows::Names,
    path: PathBuf,
    columns: Columns,
}

impl SqliteLogFile {
    /// Opens `data_dir`'s log read-only; an error if there is none.
    pub fn open(data_dir: &Path) -> Result<SqliteLogFile, StoreError> {
        let path = data_dir.join(SqliteStore::FILE_NAME);
        if !path.is_file() {
            return Err(StoreError::Io(format!("no event log at {}", path.display())));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;").map_err(io)?;
        let columns = match schema::version(&conn)? {
            Some(1) => Columns::WithoutHash,
            // Schema 3 only adds the snapshot tables.
            Some(2) | Some(schema::SCHEMA_VERSION) => Columns::WithHash,
            None => {
                return Err(StoreError::Corrupt(format!(
                    "{} is not a tenure event log",
                    path.display()
                )))
            }
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "{} has schema version {other}; this build reads up to {}",
                    path.display(),
                    schema::SCHEMA_VERSION
                )))
            }
        };
        Ok(SqliteLogFile {
            names: rows::Names::preload(&conn)?,
            conn,
            path,
            columns,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the events carry their links (schema 2). A log written
    /// before the chain existed is chained the first time a server opens it.
    pub fn is_chained(&self) -> bool {
        self.columns == Columns::WithHash
    }

    /// The last position and its link (the link is zero in an unchained log).
    pub fn head(&self) -> Result<ChainHead, StoreError> {
        match self.columns {
            Columns::WithHash => schema::head(&self.conn),
            Columns::WithoutHash => {
                let position: i64 = self
                    .conn
                    .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| r.get(0))
                    .map_err(io)?;
                Ok(ChainHead {
                    position: u64::try_from(position).unwrap_or_default(),
                    hash: tenure_events::ChainHash::ZERO,
                })
            }
        }
    }

    /// Up to `max` events from position `from` on, in position order.
    pub fn read_page(&mut self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        rows::read_page(&self.conn, &mut self.names, self.columns, from, max)
    }
}

//! Reading events out of the `events` table: the columns, and turning a row
//! back into a [`RecordedEvent`]. A malformed row is reported with its
//! position, never skipped.

use std::collections::HashMap;

use chrono::DateTime;
use rusqlite::{params, Connection};
use tenure_events::{AccountId, ChainHash, RecordedEvent, StreamId};
use uuid::Uuid;

use crate::store::StoreError;

pub(super) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

pub(super) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Stream names (by row id) and account names already met while reading:
/// a long read then allocates each once, not once per event (they are
/// shared `Arc<str>`s). The server's readers use one per read (a page), so
/// nothing is kept between reads; the offline tools preload every stream
/// of the log once ([`Names::preload`]).
#[derive(Default)]
pub(crate) struct Names {
    /// Every stream by row id (ids are dense: 1, 2, 3, …), when preloaded.
    preloaded: Vec<Option<StreamId>>,
    /// Streams met during this read that were not preloaded.
    met: HashMap<i64, StreamId, foldhash::fast::RandomState>,
    accounts: HashMap<Box<str>, AccountId, foldhash::fast::RandomState>,
    /// The account of the previous row: runs of one account are common.
    last_account: Option<AccountId>,
}

/// Streams and accounts remembered at most (and the most streams preloaded).
const NAMES_MAX: usize = 1 << 20;

impl Names {
    /// Names every stream of the log at once, if there are not too many:
    /// one scan of the streams table instead of a lookup per stream met.
    pub(super) fn preload(conn: &Connection) -> Result<Names, StoreError> {
        let mut names = Names::default();
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM streams", [], |r| r.get(0))
            .map_err(io)?;
        if usize::try_from(count).is_ok_and(|c| c <= NAMES_MAX) {
            let mut stmt = conn.prepare("SELECT id, name FROM streams WHERE id < ?1").map_err(io)?;
            let mut rows = stmt.query([NAMES_MAX as i64]).map_err(io)?;
            while let Some(row) = rows.next().map_err(io)? {
                let id: i64 = row.get(0).map_err(io)?;
                let name: String = row.get(1).map_err(io)?;
                let stream = StreamId::new(name).map_err(|e| StoreError::Corrupt(format!("stream {id}: {e}")))?;
                let slot = usize::try_from(id).unwrap_or_default();
                if slot >= names.preloaded.len() {
                    names.preloaded.resize(slot + 1, None);
                }
                names.preloaded[slot] = Some(stream);
            }
        }
        Ok(names)
    }

    fn stream(&mut self, conn: &Connection, id: i64) -> Result<StreamId, StoreError> {
        let preloaded = usize::try_from(id)
            .ok()
            .and_then(|i| self.preloaded.get(i))
            .and_then(Option::as_ref);
        if let Some(stream) = preloaded.or_else(|| self.met.get(&id)) {
            return Ok(stream.clone());
        }
        let name: String = conn
            .prepare_cached("SELECT name FROM streams WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .map_err(|e| StoreError::Corrupt(format!("stream {id}: {e}")))?;
        let stream = StreamId::new(name).map_err(|e| StoreError::Corrupt(format!("stream {id}: {e}")))?;
        if self.met.len() >= NAMES_MAX {
            self.met.clear();
        }
        self.met.insert(id, stream.clone());
        Ok(stream)
    }

    fn account(&mut self, name: &str) -> Result<AccountId, tenure_events::IdError> {
        if let Some(last) = self.last_account.as_ref().filter(|a| a.as_str() == name) {
            return Ok(last.clone());
        }
        let account = match self.accounts.get(name) {
            Some(account) => account.clone(),
            None => {
                let account: AccountId = name.parse()?;
                if self.accounts.len() >= NAMES_MAX {
                    self.accounts.clear();
                }
                self.accounts.insert(name.into(), account.clone());
                account
            }
        };
        self.last_account = Some(account.clone());
        Ok(account)
    }
}

/// Which columns a query selects: schema 1 has no hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Columns {
    WithHash,
    WithoutHash,
}

impl Columns {
    /// The columns of a recorded event, from `events e` (the stream by its
    /// row id, named through [`Names`]).
    pub(super) fn select(self) -> &'static str {
        match self {
            Columns::WithHash => {
                "e.position, e.stream_id, e.version, e.event_id, e.event_type, e.schema_version, e.time_us, \
                 e.account, e.request_id, e.causation_id, e.payload, e.hash"
            }
            Columns::WithoutHash => {
                "e.position, e.stream_id, e.version, e.event_id, e.event_type, e.schema_version, e.time_us, \
                 e.account, e.request_id, e.causation_id, e.payload, NULL"
            }
        }
    }
}

/// Up to `max` events of `$all` from position `from` on, in order.
pub(super) fn read_page(
    conn: &Connection,
    names: &mut Names,
    columns: Columns,
    from: u64,
    max: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {} FROM events e WHERE e.position >= ?1 ORDER BY e.position LIMIT ?2",
        columns.select()
    );
    query_events(conn, names, &sql, params![to_sql_int(from), to_sql_int(max as u64)])
}

pub(super) fn query_events(
    conn: &Connection,
    names: &mut Names,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(io)?;
    let mut rows = stmt.query(params).map_err(io)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(io)? {
        out.push(row_to_event(conn, names, row)?);
    }
    Ok(out)
}

/// A row of [`Columns::select`] as an event. A row without a hash (schema
/// 1, or a hash removed by hand) reads with [`ChainHash::ZERO`], which no
/// chain check accepts.
pub(super) fn row_to_event(
    conn: &Connection,
    names: &mut Names,
    row: &rusqlite::Row<'_>,
) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.get(0).map_err(io)?;
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("position {position}: {what}: {e}"));
    let get = |i: usize, what: &str| -> Result<rusqlite::types::ValueRef<'_>, StoreError> {
        row.get_ref(i).map_err(|e| corrupt(what, &e))
    };
    let text = |i: usize, what: &str| -> Result<String, StoreError> {
        get(i, what)?.as_str().map(str::to_owned).map_err(|e| corrupt(what, &e))
    };
    let int =
        |i: usize, what: &str| -> Result<i64, StoreError> { get(i, what)?.as_i64().map_err(|e| corrupt(what, &e)) };
    let uuid = |i: usize, what: &str| -> Result<Option<Uuid>, StoreError> {
        match get(i, what)?.as_blob_or_null().map_err(|e| corrupt(what, &e))? {
            None => Ok(None),
            Some(bytes) => Uuid::from_slice(bytes).map(Some).map_err(|e| corrupt(what, &e)),
        }
    };
    let hash = match get(11, "hash")?.as_blob_or_null().map_err(|e| corrupt("hash", &e))? {
        None => ChainHash::ZERO,
        Some(bytes) => {
            ChainHash::try_from(bytes).map_err(|len| corrupt("hash", &format!("{len} bytes instead of 32")))?
        }
    };
    let time_us = int(6, "time")?;
    Ok(RecordedEvent {
        position: u64::try_from(position).map_err(|e| corrupt("position", &e))?,
        stream: names.stream(conn, int(1, "stream")?)?,
        version: u64::try_from(int(2, "version")?).map_err(|e| corrupt("version", &e))?,
        event_id: uuid(3, "event id")?.ok_or_else(|| corrupt("event id", &"missing"))?,
        event_type: text(4, "event type")?,
        schema_version: u32::try_from(int(5, "schema version")?).map_err(|e| corrupt("schema version", &e))?,
        time: DateTime::from_timestamp_micros(time_us).ok_or_else(|| corrupt("time", &time_us))?,
        account: names
            .account(get(7, "account")?.as_str().map_err(|e| corrupt("account", &e))?)
            .map_err(|e| corrupt("account", &e))?,
        request_id: uuid(8, "request id")?,
        causation_id: uuid(9, "causation id")?,
        payload: text(10, "payload")?,
        hash,
    })
}

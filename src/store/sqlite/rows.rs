//! Reading events out of the `events` table: the columns, and turning a row
//! back into a [`RecordedEvent`]. A malformed row is reported with its
//! position, never skipped.

use chrono::DateTime;
use rusqlite::{params, Connection};
use tenure_events::{ChainHash, RecordedEvent, StreamId};
use uuid::Uuid;

use crate::store::StoreError;

pub(super) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

pub(super) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Which columns a query selects: schema 1 has no hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Columns {
    WithHash,
    WithoutHash,
}

impl Columns {
    /// The columns of a recorded event, from `events e JOIN streams s`.
    pub(super) fn select(self) -> &'static str {
        match self {
            Columns::WithHash => {
                "e.position, s.name, e.version, e.event_id, e.event_type, e.schema_version, e.time_us, \
                 e.account, e.request_id, e.causation_id, e.payload, e.hash"
            }
            Columns::WithoutHash => {
                "e.position, s.name, e.version, e.event_id, e.event_type, e.schema_version, e.time_us, \
                 e.account, e.request_id, e.causation_id, e.payload, NULL"
            }
        }
    }
}

/// Up to `max` events of `$all` from position `from` on, in order.
pub(super) fn read_page(
    conn: &Connection,
    columns: Columns,
    from: u64,
    max: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {} FROM events e JOIN streams s ON s.id = e.stream_id \
         WHERE e.position >= ?1 ORDER BY e.position LIMIT ?2",
        columns.select()
    );
    query_events(conn, &sql, params![to_sql_int(from), to_sql_int(max as u64)])
}

pub(super) fn query_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(io)?;
    let mut rows = stmt.query(params).map_err(io)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(io)? {
        out.push(row_to_event(row)?);
    }
    Ok(out)
}

/// A row of [`Columns::select`] as an event. A row without a hash (schema
/// 1, or a hash removed by hand) reads with [`ChainHash::ZERO`], which no
/// chain check accepts.
pub(super) fn row_to_event(row: &rusqlite::Row<'_>) -> Result<RecordedEvent, StoreError> {
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
        stream: StreamId::new(text(1, "stream")?).map_err(|e| corrupt("stream", &e))?,
        version: u64::try_from(int(2, "version")?).map_err(|e| corrupt("version", &e))?,
        event_id: uuid(3, "event id")?.ok_or_else(|| corrupt("event id", &"missing"))?,
        event_type: text(4, "event type")?,
        schema_version: u32::try_from(int(5, "schema version")?).map_err(|e| corrupt("schema version", &e))?,
        time: DateTime::from_timestamp_micros(time_us).ok_or_else(|| corrupt("time", &time_us))?,
        account: text(7, "account")?.parse().map_err(|e| corrupt("account", &e))?,
        request_id: uuid(8, "request id")?,
        causation_id: uuid(9, "causation id")?,
        payload: text(10, "payload")?,
        hash,
    })
}

//! Reading events: a row (or a notice's element) into a recorded event,
//! pages of `$all`, and the read-only log of the offline tools.

use std::collections::HashMap;

use postgres::Client;
use tenure_events::{AccountId, ChainHash, ChainHead, RecordedEvent, StreamId};
use uuid::Uuid;

use super::schema::head;
use super::target::PostgresTarget;
use super::{io, sql_int};
use crate::store::StoreError;

/// Accounts met while reading a page: each parsed once.
#[derive(Default)]
pub(super) struct Accounts(HashMap<String, AccountId>);

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
/// element of a notification's JSON array ([`PLACE_FUNCTION`](super::schema::PLACE_FUNCTION)).
#[derive(serde::Deserialize)]
pub(super) struct StoredEvent(
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
    pub(super) fn recorded(self, accounts: &mut Accounts) -> Result<RecordedEvent, StoreError> {
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

pub(super) fn query_events<C: postgres::GenericClient>(
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

pub(super) fn read_page<C: postgres::GenericClient>(
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
                &[&target.schema()],
            )
            .and_then(|r| r.try_get(0))
            .map_err(io)?;
        if tables != 3 {
            return Err(StoreError::Io(format!(
                "no event log in schema {} of that database",
                target.schema()
            )));
        }
        Ok(PostgresLogReader {
            client,
            target: target.clone(),
        })
    }

    /// Which log this is, for messages.
    pub fn describe(&self) -> String {
        format!("schema {} in PostgreSQL", self.target.schema())
    }

    pub fn head(&mut self) -> Result<ChainHead, StoreError> {
        head(&mut self.client)
    }

    /// Up to `max` events from position `from` on, in position order.
    pub fn read_page(&mut self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        read_page(&mut self.client, from, max)
    }
}

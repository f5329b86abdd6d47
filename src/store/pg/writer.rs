//! The writer: one thread, one connection, every append batch of the node
//! in one statement, planned by the writer ([`APPEND`]) or placed by
//! PostgreSQL ([`PLACE`]).

use std::sync::Arc;

use postgres::types::ToSql;
use postgres::Client;
use tenure_events::chain::{self, Body};
use tenure_events::{ChainHash, ChainHead, RecordedEvent, StreamId};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::follow::Shared;
use super::schema::{APPEND, PLACE};
use super::target::PostgresTarget;
use super::{io, sql_int};
use crate::store::batch::{self, Batch, Outcome, Request, WriteJob, Written};
use crate::store::sqlite::WriterMetrics;
use crate::store::streams::{StreamCache, StreamMap, StreamState};
use crate::store::subscription::LiveBatch;
use crate::store::{ExpectedVersion, StoreError};

/// After the planned path missed, the writer tries it again on every this
/// many-th batch (and on every batch once it hits again).
const PLANNED_RETRY_EVERY: u64 = 16;

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

pub(super) struct Writer {
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
    pub(super) fn new(
        target: PostgresTarget,
        head: ChainHead,
        live: broadcast::Sender<LiveBatch>,
        shared: Arc<Shared>,
        metrics: Option<crate::metrics::StoreMetrics>,
    ) -> Writer {
        Writer {
            lock_key: target.lock_key(),
            channel: target.channel(),
            target,
            conn: None,
            streams: StreamCache::default(),
            head,
            live,
            shared,
            metrics: metrics.map(WriterMetrics::new),
            batches: 0,
            planned_misses: 0,
        }
    }

    pub(super) fn run(mut self, rx: crossbeam_channel::Receiver<WriteJob>) {
        while let Some(jobs) = batch::next_batch(&rx) {
            self.commit(jobs);
        }
    }

    fn commit(&mut self, jobs: Vec<WriteJob>) {
        let (queued, requests, replies) = batch::split(jobs);
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
    fn write(&mut self, requests: Vec<Request>) -> Result<Written, StoreError> {
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

    /// Counts a batch written by `path` (see [`StoreMetrics`](crate::metrics::StoreMetrics)).
    fn count(&self, path: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.metrics.shared_batches.with_label_values(&[path]).inc();
        }
    }

    /// The ids and versions of the batch's streams the cache does not hold
    /// and the log does (a stream in neither is new), in one query: a
    /// batch of expiries names thousands of streams a node has not seen
    /// lately, which PL/pgSQL's loop in [`PLACE_FUNCTION`](super::schema::PLACE_FUNCTION) would take a
    /// statement each to look up.
    fn find(&mut self, requests: &[Request]) -> Result<StreamMap, StoreError> {
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
    fn decidable(&self, requests: &[Request]) -> bool {
        requests.iter().all(|(stream, expected, events)| {
            self.streams.contains(stream)
                || (!events.is_empty() && matches!(expected, ExpectedVersion::Any | ExpectedVersion::Exact(0)))
        })
    }

    /// The batch in one round trip (see [`Writer::decidable`]): [`APPEND`]
    /// appends it if the head is still this writer's and every stream it
    /// takes as new is new, and answers `None` (nothing written) otherwise.
    fn write_planned(&mut self, requests: &[Request], found: StreamMap) -> Result<Option<Written>, StoreError> {
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
        let notice = format!("{position}/{}", self.shared.node());
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
    fn write_placed(&mut self, requests: &[Request]) -> Result<Written, StoreError> {
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
        let node = self.shared.node();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.lock_key, &names, &strings, &expected, &counts];
        params.extend(columns.params());
        params.extend([&canonical as &(dyn ToSql + Sync), &self.channel, &node]);
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
    fn new(requests: &[Request], found: StreamMap, cache: &StreamCache, head: ChainHead) -> Plan {
        let mut batch = Batch::new(head, found, requests.len());
        let mut created: Vec<String> = Vec::new();
        let mut written: Vec<RecordedEvent> = Vec::new();
        let mut stream_ids: Vec<i64> = Vec::new();
        for (stream, expected, events) in requests {
            let state = batch
                .known(stream)
                .or_else(|| cache.get(stream))
                .unwrap_or(StreamState { id: None, version: 0 });
            let new_stream = |stream: &StreamId| {
                created.push(stream.as_str().to_owned());
                Ok::<_, std::convert::Infallible>(-(created.len() as i64))
            };
            let place_event = |recorded: RecordedEvent, id: i64| {
                written.push(recorded);
                stream_ids.push(id);
                Ok(())
            };
            let Ok(()) = batch.append(
                stream.clone(),
                *expected,
                state,
                events.iter().cloned(),
                new_stream,
                place_event,
            );
        }
        Plan {
            outcomes: batch.outcomes,
            written,
            stream_ids,
            created,
            touched: batch.touched,
            head: batch.head,
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

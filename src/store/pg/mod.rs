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
//! [`BATCH_EVENTS_MAX`](crate::store::batch::BATCH_EVENTS_MAX) events) is what keeps that fast, and so does a
//! batch being one statement, the lock held for no round trip: placed by
//! the writer while no other node has appended ([`APPEND_FUNCTION`](schema::APPEND_FUNCTION)),
//! placed by PostgreSQL after the head it finds otherwise
//! ([`PLACE_FUNCTION`](schema::PLACE_FUNCTION)).
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
//!
//! **Code map.** `target`: where a log lives (URL, schema, lock keys,
//! channel). `schema`: the tables and the two append functions, created
//! with the schema. `writer`: the writer thread and its two paths.
//! `follow`: what the node's threads share of the head, and the listener.
//! `rows`: events read back (rows, notices, pages) and the offline reader.
//! This file: the store itself, its threads, and the `EventStore` face.

mod follow;
mod rows;
mod schema;
mod target;
mod writer;

pub use rows::{PostgresLogReader, READ_PAGE};
pub use target::{PostgresTarget, DEFAULT_SCHEMA};

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use postgres::Client;
use tenure_events::{ChainHead, NewEvent, RecordedEvent, StreamId};
use tokio::sync::broadcast;
use uuid::Uuid;

use self::follow::{Listener, Shared};
use self::rows::{query_events, read_page};
use self::writer::Writer;
use super::batch::{self, WriteJob};
use super::readers;
use super::subscription::{FetchAll, LiveBatch};
use super::{AppendCallback, EventStore, ExpectedVersion, StoreError, StoreFuture, Subscription};
use crate::metrics::StoreMetrics;

/// Connections (and threads) serving stream loads and catch-up reads.
const READERS: usize = 2;

/// How often the listener looks for other nodes' events when no
/// notification came.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// Live batches a subscriber may fall behind before it reads the log.
const LIVE_BATCHES_BUFFERED: usize = 1024;

const COLUMNS: &str = "e.position, s.name, e.version, e.event_id, e.event_type, e.schema_version, e.time_us, \
                       e.account, e.request_id, e.causation_id, e.payload, e.hash";

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
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

type ReadJob = Box<dyn FnOnce(Result<&mut Client, StoreError>) + Send>;

struct Inner {
    writer: batch::Queue,
    readers: readers::Readers<ReadJob>,
    /// Dropping it stops the listener.
    listener: Mutex<Option<crossbeam_channel::Sender<()>>>,
    live: Mutex<Option<broadcast::Sender<LiveBatch>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
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
                schema::prepare(&mut client, &setup)
            })
            .map_err(io)?
            .join()
            .map_err(|_| StoreError::Io("the PostgreSQL set-up thread panicked".into()))??;

        let (write_tx, write_rx) = crossbeam_channel::unbounded::<WriteJob>();
        let (read_tx, read_rx) = crossbeam_channel::unbounded::<ReadJob>();
        let (live_tx, _) = broadcast::channel(LIVE_BATCHES_BUFFERED);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(Shared::new(chain, Uuid::new_v4().simple().to_string()));
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
        let listener = Listener::new(target.clone(), live_tx.clone(), Arc::clone(&shared), metrics.clone());
        threads.push(
            std::thread::Builder::new()
                .name("tenure-pg-listen".into())
                .spawn(move || listener.run(stop_rx))
                .map_err(io)?,
        );
        let writer = Writer::new(target, chain, live_tx, shared, metrics);
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
        readers::ask(&self.readers, |answer| -> ReadJob {
            Box::new(move |conn| {
                let _ = answer.send(conn.and_then(f));
            })
        })
    }

    fn read_all(&self, from_position: u64, max_count: usize) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        self.read(move |conn| read_page(conn, from_position, max_count))
    }
}

impl EventStore for PostgresStore {
    fn append_then(&self, stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>, done: AppendCallback) {
        batch::enqueue(&self.handle.inner.writer, stream, expected, events, done);
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
        self.handle.inner.shared.head()
    }

    fn chain_head(&self) -> ChainHead {
        self.handle.inner.shared.chain_head()
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

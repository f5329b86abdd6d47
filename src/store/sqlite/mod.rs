//! The embedded backend: one SQLite file in the data directory, in WAL mode
//! with `synchronous=FULL`, so a committed transaction is fsynced.
//!
//! **Group commit.** One writer thread owns the only write connection. It
//! takes every append waiting in its queue (up to
//! [`BATCH_EVENTS_MAX`](super::batch::BATCH_EVENTS_MAX) events), writes
//! them all in one transaction, commits once (one fsync),
//! and only then answers each caller. Appends that arrive while a commit is
//! in flight wait for the next one, so the batch grows with the load and the
//! fsync cost is shared.
//!
//! Reads go to a small pool of read-only connections on their own threads;
//! WAL lets them read while the writer writes.

mod log_file;
mod rows;
mod schema;

pub use log_file::SqliteLogFile;
pub(crate) use schema::SNAPSHOTS as SNAPSHOT_TABLES;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tenure_events::{ChainHead, NewEvent, RecordedEvent, StreamId};
use tokio::sync::broadcast;
use uuid::Uuid;

use self::rows::{io, to_sql_int, Columns};
use super::batch::{self, Batch, Request, WriteJob, Written};
use super::readers;
use super::streams::{StreamCache, StreamMap, StreamState};
use super::subscription::{FetchAll, LiveBatch};
use super::{AppendCallback, EventStore, ExpectedVersion, StoreError, StoreFuture, Subscription};
use crate::metrics::StoreMetrics;

/// Read-only connections (and threads) serving stream loads and catch-up reads.
const READERS: usize = 2;

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// WAL frames (pages) past which the writer itself checkpoints between two
/// commits, so that its next transaction restarts the WAL from the start.
/// Under a steady write load the writer never begins a transaction exactly
/// when the checkpointer thread has copied the whole WAL, so without this the
/// WAL would grow for ever. The checkpointer thread has copied nearly all of
/// it already, so the writer's checkpoint is short. (A RESTART checkpoint
/// from the checkpointer thread would do the same but blocks every writer
/// while it waits: stalls of up to 2.4 s were measured.)
const WAL_RESTART_FRAMES: i64 = 8192;

/// Live batches a subscriber may fall behind before it reads from the log instead.
const LIVE_BATCHES_BUFFERED: usize = 1024;

const INSERT: &str =
    "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, time_us, \
                      account, request_id, causation_id, payload, hash) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// Counters of the writer, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Transactions committed (each one fsync).
    pub commits: u64,
    /// Events written.
    pub events: u64,
}

/// The embedded event store. Cheap to clone; [`SqliteStore::close`] (or
/// dropping the last clone) lets queued appends finish and stops the threads.
#[derive(Clone)]
pub struct SqliteStore {
    handle: Arc<Handle>,
}

/// Closes the store when the last [`SqliteStore`] clone is dropped.
/// Subscriptions hold [`Inner`] directly, so they do not keep it open.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.close();
    }
}

type ReadJob = Box<dyn FnOnce(&Connection, &mut rows::Names) + Send>;

struct Inner {
    writer: batch::Queue,
    readers: readers::Readers<ReadJob>,
    /// Dropping it stops the checkpointer.
    checkpointer: Mutex<Option<crossbeam_channel::Sender<()>>>,
    live: Mutex<Option<broadcast::Sender<LiveBatch>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

/// What the writer thread and the handles both see.
#[derive(Default)]
struct Shared {
    head: AtomicU64,
    /// The head with its link, moved with `head` after each commit.
    chain: Mutex<ChainHead>,
    poisoned: AtomicBool,
    commits: AtomicU64,
    events: AtomicU64,
}

impl SqliteStore {
    /// The file the log lives in, inside the data directory.
    pub const FILE_NAME: &'static str = "events.sqlite3";

    /// Opens (creating if needed) the log in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_metrics(data_dir, None)
    }

    /// Opens the log, its writer counting into `metrics` (the server's).
    pub fn open_with_metrics(data_dir: &Path, metrics: Option<StoreMetrics>) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Io(format!("cannot create data directory {}: {e}", data_dir.display())))?;
        let path = data_dir.join(Self::FILE_NAME);
        let conn =
            Connection::open(&path).map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(io)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Io(format!(
                "{} cannot use WAL mode (got {mode})",
                path.display()
            )));
        }
        // The writer never checkpoints: the checkpointer thread does, so a
        // commit never waits for the database file. (A larger page cache was
        // measured: it slowed small commits, see ops/bench/RESULTS.md.)
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = 67108864;",
        )
        .map_err(io)?;
        let mut conn = conn;
        let chain = schema::prepare(&mut conn, &path.display().to_string())?;

        let (write_tx, write_rx) = crossbeam_channel::unbounded::<WriteJob>();
        let (read_tx, read_rx) = crossbeam_channel::unbounded::<ReadJob>();
        let (live_tx, _) = broadcast::channel(LIVE_BATCHES_BUFFERED);
        let (checkpoint_tx, checkpoint_rx) = crossbeam_channel::bounded::<()>(0);
        let inner = Arc::new(Inner {
            writer: Mutex::new(Some(write_tx)),
            readers: Mutex::new(Some(read_tx)),
            checkpointer: Mutex::new(Some(checkpoint_tx)),
            live: Mutex::new(Some(live_tx.clone())),
            threads: Mutex::new(Vec::new()),
            shared: Arc::new(Shared {
                head: AtomicU64::new(chain.position),
                chain: Mutex::new(chain),
                ..Shared::default()
            }),
        });

        let mut threads = Vec::new();
        for i in 0..READERS {
            let reader = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(io)?;
            reader.execute_batch("PRAGMA busy_timeout = 5000;").map_err(io)?;
            let rx = read_rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("tenure-sqlite-read-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        // Names live for one read only: the server keeps no
                        // copy of every stream name it ever read.
                        job(&reader, &mut rows::Names::default());
                    }
                })
                .map_err(io)?;
            threads.push(handle);
        }
        let checkpoint_conn = Connection::open(&path).map_err(io)?;
        checkpoint_conn
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(io)?;
        threads.push(
            std::thread::Builder::new()
                .name("tenure-sqlite-checkpoint".into())
                .spawn(move || checkpoint(checkpoint_conn, checkpoint_rx))
                .map_err(io)?,
        );
        let shared = Arc::clone(&inner.shared);
        let handle = std::thread::Builder::new()
            .name("tenure-sqlite-write".into())
            .spawn(move || Writer::new(conn, chain, live_tx, shared, metrics).run(write_rx))
            .map_err(io)?;
        threads.push(handle);
        *inner.threads.lock() = threads;
        Ok(SqliteStore {
            handle: Arc::new(Handle { inner }),
        })
    }

    /// Stops accepting appends, lets queued ones finish, and stops the threads.
    pub fn close(&self) {
        self.handle.inner.close();
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.handle.inner.shared.commits.load(Ordering::Relaxed),
            events: self.handle.inner.shared.events.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn close(&self) {
        drop(self.writer.lock().take());
        drop(self.live.lock().take());
        drop(self.checkpointer.lock().take());
        let threads = std::mem::take(&mut *self.threads.lock());
        // The writer goes first so queued appends are answered; readers stop
        // once their channel is closed too.
        drop(self.readers.lock().take());
        for t in threads {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }

    fn read<T, F>(&self, f: F) -> StoreFuture<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut rows::Names) -> Result<T, StoreError> + Send + 'static,
    {
        readers::ask(&self.readers, |answer| -> ReadJob {
            Box::new(move |conn, names| {
                let _ = answer.send(f(conn, names));
            })
        })
    }

    fn read_all(
        self: &Arc<Self>,
        from_position: u64,
        max_count: usize,
    ) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        self.read(move |conn, names| rows::read_page(conn, names, Columns::WithHash, from_position, max_count))
    }
}

/// Copies what the WAL holds into the database file without blocking
/// anyone (PASSIVE), and says how many frames the WAL holds.
fn passive_checkpoint(conn: &Connection, by: &'static str) -> Option<i64> {
    let started = std::time::Instant::now();
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match result {
        Ok((wal_frames, copied)) => {
            let micros = started.elapsed().as_micros() as u64;
            tracing::debug!(target: "tenure::store::checkpoint", by, wal_frames, copied, micros, "checkpoint");
            Some(wal_frames)
        }
        Err(e) => {
            tracing::warn!(error = %e, by, "WAL checkpoint failed");
            None
        }
    }
}

/// Copies the WAL into the database file every [`CHECKPOINT_EVERY`] without
/// blocking anyone. Stops when `stop`'s sender is dropped.
fn checkpoint(conn: Connection, stop: crossbeam_channel::Receiver<()>) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        passive_checkpoint(&conn, "checkpointer");
    }
}

struct Writer {
    conn: Connection,
    /// Frames in the WAL after the last commit, from SQLite's WAL hook.
    wal_frames: Arc<AtomicI64>,
    streams: StreamCache,
    /// The last durable position and its link in the chain.
    head: ChainHead,
    live: broadcast::Sender<LiveBatch>,
    shared: Arc<Shared>,
    metrics: Option<WriterMetrics>,
}

/// The writer's metrics, with the counter of each event type resolved once
/// (every backend's writer counts with it).
pub(super) struct WriterMetrics {
    pub(super) metrics: StoreMetrics,
    by_type: HashMap<String, prometheus::IntCounter, foldhash::fast::RandomState>,
}

impl WriterMetrics {
    pub(super) fn new(metrics: StoreMetrics) -> WriterMetrics {
        WriterMetrics {
            metrics,
            by_type: HashMap::default(),
        }
    }

    /// Counts a committed batch: its events by type (consecutive events of
    /// one type in one add), its size, and its appends' latency.
    pub(super) fn committed(&mut self, recorded: &[RecordedEvent], queued: &[std::time::Instant]) {
        let mut events = recorded.iter().peekable();
        while let Some(first) = events.next() {
            let mut run = 1;
            while events.next_if(|e| e.event_type == first.event_type).is_some() {
                run += 1;
            }
            let counter = match self.by_type.get(first.event_type.as_str()) {
                Some(counter) => counter,
                None => {
                    let counter = self.metrics.events.with_label_values(&[first.event_type.as_str()]);
                    self.by_type.entry(first.event_type.clone()).or_insert(counter)
                }
            };
            counter.inc_by(run);
        }
        self.metrics.batch_events.observe(recorded.len() as f64);
        self.answered(queued);
    }

    pub(super) fn answered(&self, queued: &[std::time::Instant]) {
        let now = std::time::Instant::now();
        for at in queued {
            self.metrics
                .append_latency
                .observe(now.saturating_duration_since(*at).as_secs_f64());
        }
    }
}

impl Writer {
    fn new(
        mut conn: Connection,
        head: ChainHead,
        live: broadcast::Sender<LiveBatch>,
        shared: Arc<Shared>,
        metrics: Option<StoreMetrics>,
    ) -> Writer {
        let wal_frames = Arc::new(AtomicI64::new(0));
        let frames = Arc::clone(&wal_frames);
        let hooked = conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            frames.store(i64::from(pages), Ordering::Relaxed);
            Ok(())
        }));
        if let Err(e) = hooked {
            tracing::warn!(error = %e, "no WAL hook: the WAL restarts only when the checkpointer catches up");
        }
        Writer {
            conn,
            wal_frames,
            streams: StreamCache::default(),
            head,
            live,
            shared,
            metrics: metrics.map(WriterMetrics::new),
        }
    }

    fn run(mut self, rx: crossbeam_channel::Receiver<WriteJob>) {
        while let Some(jobs) = batch::next_batch(&rx) {
            self.commit(jobs);
            if self.wal_frames.load(Ordering::Relaxed) > WAL_RESTART_FRAMES {
                // Between two commits: the next one restarts the WAL.
                passive_checkpoint(&self.conn, "writer");
                self.wal_frames.store(0, Ordering::Relaxed);
            }
        }
    }

    fn commit(&mut self, jobs: Vec<WriteJob>) {
        let (queued, requests, replies) = batch::split(jobs);
        if self.shared.poisoned.load(Ordering::Acquire) {
            for reply in replies {
                reply(Err(StoreError::Poisoned.into()));
            }
            return;
        }
        let started = std::time::Instant::now();
        let jobs = requests.len();
        let written = self.write(requests);
        tracing::debug!(target: "tenure::store::batch", jobs, events = written.as_ref().map(|w| w.1.len()).unwrap_or(0), micros = started.elapsed().as_micros() as u64, "commit");
        match written {
            Ok((outcomes, recorded, streams, head)) => {
                self.head = head;
                self.streams.remember(streams);
                let written = recorded.len() as u64;
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared.events.fetch_add(written, Ordering::Relaxed);
                // The link first: whoever sees the new position finds its link.
                *self.shared.chain.lock() = head;
                self.shared.head.store(head.position, Ordering::Release);
                if let Some(metrics) = &mut self.metrics {
                    metrics.committed(&recorded, &queued);
                }
                if written > 0 {
                    let _ = self.live.send(Arc::new(recorded));
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    reply(outcome);
                }
            }
            Err(e) => {
                // After a failed write or fsync the file's state is unknown
                // (PostgreSQL's fsyncgate): refuse every later write.
                tracing::error!(error = %e, "event store write failed; refusing further writes");
                self.shared.poisoned.store(true, Ordering::Release);
                let err = StoreError::Io(e.to_string());
                if let Some(metrics) = &self.metrics {
                    metrics.answered(&queued);
                }
                for reply in replies {
                    reply(Err(err.clone().into()));
                }
            }
        }
    }

    fn write(&mut self, requests: Vec<Request>) -> Result<Written, rusqlite::Error> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // What this transaction changes; it joins the cache only once
        // committed. Each event's link is computed here, in the
        // transaction that writes it: the chain costs no I/O of its own.
        let mut batch = Batch::new(self.head, StreamMap::default(), requests.len());
        let mut written = Vec::new();
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            // A stream the writer does not remember: its row id and version in one read.
            let mut find = tx.prepare_cached(
                "SELECT id, (SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = streams.id) \
                 FROM streams WHERE name = ?1",
            )?;
            let mut create = tx.prepare_cached("INSERT INTO streams (name) VALUES (?1)")?;
            for (stream, expected, events) in requests {
                let known = batch.known(&stream).or_else(|| self.streams.get(&stream));
                let state = match known {
                    Some(state) => state,
                    None => match find
                        .query_row([stream.as_str()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                        .optional()?
                    {
                        Some((id, version)) => StreamState {
                            id: Some(id),
                            version: version as u64,
                        },
                        None => StreamState { id: None, version: 0 },
                    },
                };
                let new_stream = |stream: &StreamId| {
                    create.execute([stream.as_str()])?;
                    Ok(tx.last_insert_rowid())
                };
                let put_event = |recorded: RecordedEvent, id: i64| {
                    insert.execute(params![
                        to_sql_int(recorded.position),
                        id,
                        to_sql_int(recorded.version),
                        recorded.event_id.as_bytes().as_slice(),
                        recorded.event_type,
                        recorded.schema_version,
                        recorded.time.timestamp_micros(),
                        recorded.account.as_str(),
                        recorded.request_id.as_ref().map(|u| u.as_bytes().as_slice()),
                        recorded.causation_id.as_ref().map(|u| u.as_bytes().as_slice()),
                        recorded.payload,
                        recorded.hash.0.as_slice(),
                    ])?;
                    written.push(recorded);
                    Ok::<_, rusqlite::Error>(())
                };
                batch.append(stream, expected, state, events.into_iter(), new_stream, put_event)?;
            }
        }
        let committing = std::time::Instant::now();
        tx.commit()?;
        if let Some(metrics) = &self.metrics {
            metrics.metrics.fsync.observe(committing.elapsed().as_secs_f64());
        }
        Ok((batch.outcomes, written, batch.touched, batch.head))
    }
}

impl EventStore for SqliteStore {
    fn append_then(&self, stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>, done: AppendCallback) {
        if self.handle.inner.shared.poisoned.load(Ordering::Acquire) {
            return done(Err(StoreError::Poisoned.into()));
        }
        batch::enqueue(&self.handle.inner.writer, stream, expected, events, done);
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        let stream = stream.clone();
        self.handle.inner.read(move |conn, names| {
            let sql = format!(
                "SELECT {} FROM events e JOIN streams s ON s.id = e.stream_id \
                 WHERE s.name = ?1 AND e.version >= ?2 ORDER BY e.version LIMIT ?3",
                Columns::WithHash.select()
            );
            rows::query_events(
                conn,
                names,
                &sql,
                params![stream.as_str(), to_sql_int(from_version), to_sql_int(max_count as u64)],
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
        self.handle.inner.read(move |conn, names| {
            let sql = format!(
                "SELECT {} FROM events e WHERE e.causation_id = ?1",
                Columns::WithHash.select()
            );
            let mut out = Vec::new();
            for cause in causes {
                out.extend(rows::query_events(conn, names, &sql, [cause.as_bytes().as_slice()])?);
            }
            out.sort_by_key(|e| e.position);
            out.dedup_by_key(|e| e.position);
            Ok(out)
        })
    }

    fn stream_names(&self, prefix: &str, max_count: usize) -> StoreFuture<Result<Vec<StreamId>, StoreError>> {
        let prefix = prefix.to_owned();
        self.handle.inner.read(move |conn, _| {
            // A range scan of the unique index on names from the prefix on,
            // ending at the first name without it.
            let mut stmt = conn
                .prepare_cached("SELECT name FROM streams WHERE name >= ?1 ORDER BY name")
                .map_err(io)?;
            let mut rows = stmt.query([prefix.as_str()]).map_err(io)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(io)? {
                if out.len() >= max_count {
                    break;
                }
                let name: String = row.get(0).map_err(io)?;
                if !name.starts_with(&prefix) {
                    break;
                }
                out.push(StreamId::new(name).map_err(|e| StoreError::Corrupt(format!("stream name: {e}")))?);
            }
            Ok(out)
        })
    }

    fn health(&self) -> Result<(), StoreError> {
        if self.handle.inner.shared.poisoned.load(Ordering::Acquire) {
            Err(StoreError::Poisoned)
        } else if self.handle.inner.writer.lock().is_none() {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }
}

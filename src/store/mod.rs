//! The event log: the [`EventStore`] trait and its backends.
//!
//! A store keeps streams of events. Appends name the version the caller
//! expects the stream to be at and fail with a typed
//! [`AppendError::Conflict`] otherwise; that is what lets one actor per
//! entity own its stream. Every event also gets a global position in `$all`,
//! which projections read and follow live through [`Subscription`].
//!
//! Backends: [`SqliteStore`] (embedded, on disk, the default),
//! [`PostgresStore`] (shared by several nodes) and [`MemoryStore`] (a test
//! helper only). Every backend runs the same
//! conformance suite ([`conformance`]).

mod batch;
pub mod conformance;
mod copy;
mod election;
#[cfg(feature = "esdb")]
mod esdb;
mod memory;
pub mod pg;
mod readers;
mod sqlite;
mod streams;
mod subscription;

pub use copy::{copy_log, CopyError};
pub use election::{Election, Role};
#[cfg(feature = "esdb")]
pub use esdb::EsdbStore;
pub use memory::MemoryStore;
pub use pg::{PostgresLogReader, PostgresStore, PostgresTarget};
pub(crate) use sqlite::SNAPSHOT_TABLES;
pub use sqlite::{SqliteLogFile, SqliteStore, StoreStats};
pub use subscription::{Batch, Subscription};

use futures::future::BoxFuture;
use tenure_events::{ChainHead, NewEvent, RecordedEvent, StreamId};
use uuid::Uuid;

/// The log a server runs on: the embedded one, or a shared one.
#[derive(Clone)]
pub enum LogStore {
    Embedded(SqliteStore),
    Postgres(PostgresStore),
}

impl LogStore {
    /// The store behind the trait the actors and projections use.
    pub fn shared(&self) -> std::sync::Arc<dyn EventStore> {
        match self {
            LogStore::Embedded(s) => std::sync::Arc::new(s.clone()),
            LogStore::Postgres(s) => std::sync::Arc::new(s.clone()),
        }
    }

    /// The embedded store, if that is the one.
    pub fn sqlite(&self) -> Option<&SqliteStore> {
        match self {
            LogStore::Embedded(s) => Some(s),
            LogStore::Postgres(_) => None,
        }
    }

    /// Lets queued appends finish and stops the store's threads.
    pub fn close(&self) {
        match self {
            LogStore::Embedded(s) => s.close(),
            LogStore::Postgres(s) => s.close(),
        }
    }
}

/// A log opened for reading by the offline tools: a data directory's
/// file, or a schema in PostgreSQL. (One per offline tool run: its size
/// does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum LogFile {
    Sqlite(SqliteLogFile),
    Postgres(PostgresLogReader),
}

impl From<SqliteLogFile> for LogFile {
    fn from(log: SqliteLogFile) -> LogFile {
        LogFile::Sqlite(log)
    }
}

impl From<PostgresLogReader> for LogFile {
    fn from(log: PostgresLogReader) -> LogFile {
        LogFile::Postgres(log)
    }
}

impl LogFile {
    /// Which log this is, for messages.
    pub fn describe(&self) -> String {
        match self {
            LogFile::Sqlite(log) => log.path().display().to_string(),
            LogFile::Postgres(log) => log.describe(),
        }
    }

    /// Whether the events carry their links (a PostgreSQL log always does).
    pub fn is_chained(&self) -> bool {
        match self {
            LogFile::Sqlite(log) => log.is_chained(),
            LogFile::Postgres(_) => true,
        }
    }

    /// The last position and its link.
    pub fn head(&mut self) -> Result<ChainHead, StoreError> {
        match self {
            LogFile::Sqlite(log) => log.head(),
            LogFile::Postgres(log) => log.head(),
        }
    }

    /// Up to `max` events from position `from` on, in position order.
    pub fn read_page(&mut self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        match self {
            LogFile::Sqlite(log) => log.read_page(from, max),
            LogFile::Postgres(log) => log.read_page(from, max),
        }
    }
}

/// A future the store hands back, independent of the caller's lifetime.
pub type StoreFuture<T> = BoxFuture<'static, T>;

/// Called with an append's outcome once it is known (for a disk backend:
/// after the fsync), on a thread of the store's choosing: it must be quick.
pub type AppendCallback = Box<dyn FnOnce(Result<Appended, AppendError>) + Send>;

/// The version a stream must be at for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must hold exactly this many events (0: it must not exist).
    Exact(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// The store itself failed: nothing the caller did wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("event store I/O failed: {0}")]
    Io(String),
    /// An earlier write failed; the store refuses further writes until it is
    /// reopened, because after a failed fsync the state of the file is unknown.
    #[error("event store refuses writes after an earlier failure; restart the server")]
    Poisoned,
    #[error("event store is closed")]
    Closed,
    #[error("event store holds a malformed event: {0}")]
    Corrupt(String),
}

/// Why an append did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("stream is at version {actual}, not the expected {expected}")]
    Conflict { expected: ExpectedVersion, actual: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where an append's events landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Global position of the first event appended (of the last one when
    /// nothing was appended).
    pub first_position: u64,
    pub last_position: u64,
    /// The stream's version after the append.
    pub version: u64,
}

/// An append-only log of streams.
///
/// Every method starts its work when called (not when the returned future is
/// first polled): two appends called one after the other by the same caller
/// reach the log in that order.
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if the stream is at `expected`, and calls
    /// `done` with the outcome once it is known: for a disk backend, after the
    /// fsync. Callbacks of one caller's appends run in order. Actors use this
    /// form: a callback that posts a message costs nothing while the append
    /// is in flight, where a future would be polled with every other one of
    /// the actor's.
    fn append_then(&self, stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>, done: AppendCallback);

    /// [`EventStore::append_then`] as a future: resolves once the events are
    /// durable.
    fn append(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreFuture<Result<Appended, AppendError>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.append_then(
            stream,
            expected,
            events,
            Box::new(move |outcome| {
                let _ = reply.send(outcome);
            }),
        );
        Box::pin(async move { answer.await.unwrap_or(Err(StoreError::Closed.into())) })
    }

    /// Up to `max_count` events of `stream` with version >= `from_version`
    /// (versions start at 1), in version order.
    fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>>;

    /// Up to `max_count` events of `$all` with position >= `from_position`
    /// (positions start at 1), in position order.
    fn read_all(&self, from_position: u64, max_count: usize) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>>;

    /// Every event with position >= `from_position`: first those already in
    /// the log, then new ones as they become durable.
    fn subscribe_all(&self, from_position: u64) -> Subscription;

    /// The global position of the last durable event (0 for an empty log).
    fn head(&self) -> u64;

    /// The last durable position with its link in the hash chain
    /// (`tenure_events::chain`), which every backend computes as it appends.
    fn chain_head(&self) -> ChainHead;

    /// The events caused by any of `causes` (whose causation id is one of
    /// them), in position order. The audit follows these links.
    fn read_caused_by(&self, causes: Vec<Uuid>) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>>;

    /// The names of the streams that start with `prefix`, in name order, at
    /// most `max_count` of them (the instances of an account: `instance/a/`).
    fn stream_names(&self, prefix: &str, max_count: usize) -> StoreFuture<Result<Vec<StreamId>, StoreError>>;

    /// Whether the store still accepts writes.
    fn health(&self) -> Result<(), StoreError>;

    /// Whether other processes (other tenure nodes) may append to this log
    /// too: their events then reach this node only through `$all`, and an
    /// actor's state can be stale (see ARCHITECTURE.md, "Several nodes").
    fn is_shared(&self) -> bool {
        false
    }
}

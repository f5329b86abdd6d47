//! The log in EventStoreDB / KurrentDB (cargo feature `esdb`): **untested
//! here**. No such server can be installed on the machines this project is
//! built on, so its conformance suite (`tests/store_esdb.rs`) runs only
//! where `TENURE_ESDB_URL` points at one; README "The log in EventStoreDB"
//! says so.
//!
//! Kept small, and honest about what it is:
//! - The whole tenure log is **one** EventStoreDB stream (`tenure-log` by
//!   default): tenure's position N is that stream's revision N - 1, so
//!   `$all` has no gaps and the hash chain is computed as on every
//!   backend. Each event is stored whole (envelope and link) as JSON.
//! - **Appends** go through one writer task that checks expected versions
//!   against the log it has read, then appends the batch with the log
//!   stream's expected revision. If another node appended first
//!   (`WrongExpectedVersion`), it reads what was appended and checks again:
//!   optimistic concurrency on the one stream serializes the nodes.
//! - **Reads are served from memory**: each node keeps the whole log it has
//!   read (a mirror) and polls the stream for other nodes' events every
//!   200 ms. Fine for the logs of a test or a small installation; a large
//!   log needs an index this backend does not have.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tenure_events::{AccountId, ChainHash, ChainHead, NewEvent, RecordedEvent, StreamId};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::subscription::{FetchAll, LiveBatch};
use super::{
    AppendCallback, AppendError, Appended, EventStore, ExpectedVersion, StoreError, StoreFuture, Subscription,
};

/// The stream holding the log unless the URL names another (`?stream=`).
pub const DEFAULT_STREAM: &str = "tenure-log";

/// How often a node reads other nodes' appends.
const POLL: Duration = Duration::from_millis(200);

/// Events read from the server at a time.
const PAGE: usize = 4096;

/// One tenure event as the log stream stores it.
#[derive(Serialize, Deserialize)]
struct Stored {
    position: u64,
    stream: String,
    version: u64,
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    time: DateTime<Utc>,
    account: String,
    request_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    payload: String,
    hash: String,
}

impl Stored {
    fn of(e: &RecordedEvent) -> Stored {
        Stored {
            position: e.position,
            stream: e.stream.to_string(),
            version: e.version,
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            time: e.time,
            account: e.account.to_string(),
            request_id: e.request_id,
            causation_id: e.causation_id,
            payload: e.payload.clone(),
            hash: e.hash.to_string(),
        }
    }

    /// The event, its link checked against the one before it.
    fn into_recorded(self, before: &ChainHash) -> Result<RecordedEvent, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("event at position {}: {what}", self.position));
        let stream = StreamId::new(self.stream.clone()).map_err(|e| corrupt(e.to_string()))?;
        let account: AccountId = self
            .account
            .parse()
            .map_err(|e: tenure_events::IdError| corrupt(e.to_string()))?;
        let new = NewEvent {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            time: self.time,
            account,
            request_id: self.request_id,
            causation_id: self.causation_id,
            payload: self.payload.clone(),
        };
        let mut recorded = RecordedEvent::from_new(new, stream, self.version, self.position);
        recorded.chain_after(before);
        if recorded.hash.to_string() != self.hash {
            return Err(corrupt("its link in the hash chain does not match".into()));
        }
        Ok(recorded)
    }
}

/// The log as this node has read it (see the module's documentation).
type Mirror = super::memory::State;

struct Job {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    done: AppendCallback,
}

struct Shared {
    mirror: Mutex<Mirror>,
    live: broadcast::Sender<LiveBatch>,
}

/// The log in one EventStoreDB stream (see the module's documentation).
#[derive(Clone)]
pub struct EsdbStore {
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedSender<Job>,
    _runtime: Arc<Background>,
}

/// The client's runtime (gRPC needs tokio), shut down without waiting when
/// the last handle goes: a store may be dropped on another runtime.
struct Background(Option<tokio::runtime::Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl EsdbStore {
    /// Connects to `esdb://HOST:PORT?tls=false[&stream=NAME]` and reads the
    /// log stream.
    pub fn open(url: &str) -> Result<EsdbStore, StoreError> {
        let (url, stream) = match url.split_once("stream=") {
            Some((base, name)) => (
                base.trim_end_matches(['?', '&']).to_owned(),
                name.split('&').next().unwrap_or(DEFAULT_STREAM).to_owned(),
            ),
            None => (url.to_owned(), DEFAULT_STREAM.to_owned()),
        };
        let settings: eventstore::ClientSettings = url
            .parse()
            .map_err(|e| StoreError::Io(format!("not an EventStoreDB URL: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tenure-esdb")
            .enable_all()
            .build()
            .map_err(io)?;
        let shared = Arc::new(Shared {
            mirror: Mutex::new(Mirror::default()),
            live: broadcast::channel(1024).0,
        });
        let (jobs, rx) = mpsc::unbounded_channel();
        // The first read of the log, on the client's runtime, waited for
        // here (the caller may be on a runtime of its own).
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let first = Arc::clone(&shared);
        runtime.spawn(async move {
            let client = match eventstore::Client::new(settings) {
                Ok(client) => client,
                Err(e) => {
                    let _ = ready_tx.send(Err(io(e)));
                    return;
                }
            };
            let writer = Writer {
                client,
                stream,
                shared: first,
            };
            match writer.catch_up().await {
                Ok(()) => {
                    let _ = ready_tx.send(Ok(()));
                    writer.run(rx).await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        ready
            .recv()
            .map_err(|_| StoreError::Io("the EventStoreDB client stopped".into()))??;
        Ok(EsdbStore {
            shared,
            jobs,
            _runtime: Arc::new(Background(Some(runtime))),
        })
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

struct Writer {
    client: eventstore::Client,
    stream: String,
    shared: Arc<Shared>,
}

impl Writer {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                job = jobs.recv() => {
                    let Some(job) = job else { return };
                    let mut batch = vec![job];
                    while let Ok(more) = jobs.try_recv() {
                        batch.push(more);
                    }
                    self.write(batch).await;
                }
                _ = poll.tick() => {
                    if let Err(e) = self.catch_up().await {
                        tracing::warn!(error = %e, "cannot read the EventStoreDB log");
                    }
                }
            }
        }
    }

    /// Reads what other nodes appended after the mirror's head.
    async fn catch_up(&self) -> Result<(), StoreError> {
        loop {
            let from = self.shared.mirror.lock().events.len() as u64;
            let options = eventstore::ReadStreamOptions::default()
                .forwards()
                .position(eventstore::StreamPosition::Position(from))
                .max_count(PAGE);
            let mut read = match self.client.read_stream(self.stream.as_str(), &options).await {
                Ok(read) => read,
                Err(eventstore::Error::ResourceNotFound) => return Ok(()),
                Err(e) => return Err(io(e)),
            };
            let mut batch = Vec::new();
            loop {
                let next = match read.next().await {
                    Ok(next) => next,
                    Err(eventstore::Error::ResourceNotFound) => None,
                    Err(e) => return Err(io(e)),
                };
                let Some(resolved) = next else { break };
                let stored: Stored = resolved.get_original_event().as_json().map_err(io)?;
                batch.push(stored);
            }
            if batch.is_empty() {
                return Ok(());
            }
            let full = batch.len() == PAGE;
            let mut mirror = self.shared.mirror.lock();
            let mut added = Vec::with_capacity(batch.len());
            for stored in batch {
                let head = mirror.head();
                if stored.position != head.position + 1 {
                    return Err(StoreError::Corrupt(format!(
                        "the log stream holds position {} after {}",
                        stored.position, head.position
                    )));
                }
                let recorded = stored.into_recorded(&head.hash)?;
                added.push(recorded.clone());
                mirror.push(recorded);
            }
            drop(mirror);
            let _ = self.shared.live.send(Arc::new(added));
            if !full {
                return Ok(());
            }
        }
    }

    /// Appends the jobs whose expected versions hold, as one write with the
    /// log stream's expected revision; on a lost race, reads and retries.
    async fn write(&self, jobs: Vec<Job>) {
        let mut jobs: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
        loop {
            let mut answers: Vec<(usize, Result<Appended, AppendError>)> = Vec::new();
            let (recorded, expected_revision) = {
                let mirror = self.shared.mirror.lock();
                let mut head = mirror.head();
                let mut versions: HashMap<StreamId, u64> = HashMap::new();
                let mut recorded = Vec::new();
                for (i, job) in jobs.iter().enumerate() {
                    let Some(job) = job else { continue };
                    let current = versions
                        .get(&job.stream)
                        .or_else(|| mirror.versions.get(&job.stream))
                        .copied()
                        .unwrap_or(0);
                    if let ExpectedVersion::Exact(want) = job.expected {
                        if want != current {
                            answers.push((
                                i,
                                Err(AppendError::Conflict {
                                    expected: job.expected,
                                    actual: current,
                                }),
                            ));
                            continue;
                        }
                    }
                    let first = head.position + 1;
                    let mut version = current;
                    for event in &job.events {
                        version += 1;
                        let mut e =
                            RecordedEvent::from_new(event.clone(), job.stream.clone(), version, head.position + 1);
                        e.chain_after(&head.hash);
                        head = ChainHead {
                            position: e.position,
                            hash: e.hash,
                        };
                        recorded.push(e);
                    }
                    versions.insert(job.stream.clone(), version);
                    answers.push((
                        i,
                        Ok(Appended {
                            first_position: first.min(head.position.max(1)),
                            last_position: head.position,
                            version,
                        }),
                    ));
                }
                let expected = match mirror.events.len() as u64 {
                    0 => eventstore::ExpectedRevision::NoStream,
                    n => eventstore::ExpectedRevision::Exact(n - 1),
                };
                (recorded, expected)
            };
            let outcome = if recorded.is_empty() {
                Ok(())
            } else {
                let data: Result<Vec<eventstore::EventData>, _> = recorded
                    .iter()
                    .map(|e| eventstore::EventData::json("TenureEvent", &Stored::of(e)).map(|d| d.id(e.event_id)))
                    .collect();
                match data {
                    Err(e) => Err(io(e)),
                    Ok(data) => {
                        let options = eventstore::AppendToStreamOptions::default().expected_revision(expected_revision);
                        match self.client.append_to_stream(self.stream.as_str(), &options, data).await {
                            Ok(_) => Ok(()),
                            Err(eventstore::Error::WrongExpectedVersion { .. }) => {
                                // Another node appended first: read it, check again.
                                if let Err(e) = self.catch_up().await {
                                    Err(e)
                                } else {
                                    continue;
                                }
                            }
                            Err(e) => Err(io(e)),
                        }
                    }
                }
            };
            match outcome {
                Ok(()) => {
                    if !recorded.is_empty() {
                        let mut mirror = self.shared.mirror.lock();
                        for e in &recorded {
                            mirror.push(e.clone());
                        }
                        drop(mirror);
                        let _ = self.shared.live.send(Arc::new(recorded));
                    }
                    for (i, answer) in answers {
                        if let Some(job) = jobs[i].take() {
                            (job.done)(answer);
                        }
                    }
                }
                Err(e) => {
                    for job in jobs.iter_mut().filter_map(Option::take) {
                        (job.done)(Err(AppendError::Store(e.clone())));
                    }
                }
            }
            return;
        }
    }
}

impl EventStore for EsdbStore {
    fn append_then(&self, stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>, done: AppendCallback) {
        let job = Job {
            stream,
            expected,
            events,
            done,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            (job.done)(Err(StoreError::Closed.into()));
        }
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        let events = self.shared.mirror.lock().read_stream(stream, from_version, max_count);
        Box::pin(futures::future::ready(Ok(events)))
    }

    fn read_all(&self, from_position: u64, max_count: usize) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        let events = self.shared.mirror.lock().read_all(from_position, max_count);
        Box::pin(futures::future::ready(Ok(events)))
    }

    fn subscribe_all(&self, from_position: u64) -> Subscription {
        let shared = Arc::clone(&self.shared);
        let fetch: FetchAll = Arc::new(move |from, max| {
            let page = shared.mirror.lock().read_all(from, max);
            Box::pin(futures::future::ready(Ok(page)))
        });
        Subscription::following(from_position, Some(&self.shared.live), fetch)
    }

    fn head(&self) -> u64 {
        self.shared.mirror.lock().events.len() as u64
    }

    fn chain_head(&self) -> ChainHead {
        self.shared.mirror.lock().head()
    }

    fn read_caused_by(&self, causes: Vec<Uuid>) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        let events = self.shared.mirror.lock().caused_by(&causes);
        Box::pin(futures::future::ready(Ok(events)))
    }

    fn stream_names(&self, prefix: &str, max_count: usize) -> StoreFuture<Result<Vec<StreamId>, StoreError>> {
        let names = self.shared.mirror.lock().stream_names(prefix, max_count);
        Box::pin(futures::future::ready(Ok(names)))
    }

    fn health(&self) -> Result<(), StoreError> {
        if self.jobs.is_closed() {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    fn is_shared(&self) -> bool {
        true
    }
}

//! An in-memory store: a **test helper only**, never the thing tested. It
//! runs the conformance suite so the suite itself is known to be backend
//! neutral, and lets pure actor tests run without a disk.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tenure_events::{ChainHead, NewEvent, RecordedEvent, StreamId};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::subscription::{FetchAll, LiveBatch};
use super::{
    AppendCallback, AppendError, Appended, EventStore, ExpectedVersion, StoreError, StoreFuture, Subscription,
};

/// A whole log held in memory, with the reads every backend answers: the
/// state of [`MemoryStore`], and the mirror of the log an EventStoreDB node
/// reads from.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) events: Vec<RecordedEvent>,
    pub(crate) versions: HashMap<StreamId, u64>,
}

impl State {
    pub(crate) fn head(&self) -> ChainHead {
        self.events.last().map_or(ChainHead::EMPTY, |e| ChainHead {
            position: e.position,
            hash: e.hash,
        })
    }

    pub(crate) fn push(&mut self, e: RecordedEvent) {
        self.versions.insert(e.stream.clone(), e.version);
        self.events.push(e);
    }

    pub(crate) fn read_all(&self, from_position: u64, max_count: usize) -> Vec<RecordedEvent> {
        let start = usize::try_from(from_position.max(1) - 1).unwrap_or(usize::MAX);
        self.events.iter().skip(start).take(max_count).cloned().collect()
    }

    pub(crate) fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Vec<RecordedEvent> {
        self.events
            .iter()
            .filter(|e| &e.stream == stream && e.version >= from_version)
            .take(max_count)
            .cloned()
            .collect()
    }

    pub(crate) fn caused_by(&self, causes: &[Uuid]) -> Vec<RecordedEvent> {
        self.events
            .iter()
            .filter(|e| e.causation_id.is_some_and(|c| causes.contains(&c)))
            .cloned()
            .collect()
    }

    pub(crate) fn stream_names(&self, prefix: &str, max_count: usize) -> Vec<StreamId> {
        let mut names: Vec<StreamId> = self
            .versions
            .keys()
            .filter(|s| s.as_str().starts_with(prefix))
            .cloned()
            .collect();
        names.sort();
        names.truncate(max_count);
        names
    }
}

#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    live: broadcast::Sender<LiveBatch>,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore {
            state: Arc::default(),
            live: broadcast::channel(1024).0,
        }
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

fn read_all(state: &Mutex<State>, from_position: u64, max_count: usize) -> Vec<RecordedEvent> {
    state.lock().read_all(from_position, max_count)
}

impl EventStore for MemoryStore {
    fn append_then(&self, stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>, done: AppendCallback) {
        let mut state = self.state.lock();
        let current = state.versions.get(&stream).copied().unwrap_or(0);
        if let ExpectedVersion::Exact(want) = expected {
            if want != current {
                drop(state);
                return done(Err(AppendError::Conflict {
                    expected,
                    actual: current,
                }));
            }
        }
        let head = state.events.len() as u64;
        let mut link = state.events.last().map(|e| e.hash).unwrap_or_default();
        let mut version = current;
        let mut batch = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            version += 1;
            let mut recorded = RecordedEvent::from_new(event, stream.clone(), version, head + 1 + i as u64);
            recorded.chain_after(&link);
            link = recorded.hash;
            batch.push(recorded);
        }
        let last_position = head + batch.len() as u64;
        let appended = Appended {
            first_position: (head + 1).min(last_position.max(1)),
            last_position,
            version,
        };
        for e in &batch {
            state.push(e.clone());
        }
        drop(state);
        if !batch.is_empty() {
            let _ = self.live.send(Arc::new(batch));
        }
        done(Ok(appended));
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        let events = self.state.lock().read_stream(stream, from_version, max_count);
        Box::pin(futures::future::ready(Ok(events)))
    }

    fn read_all(&self, from_position: u64, max_count: usize) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        Box::pin(futures::future::ready(Ok(read_all(
            &self.state,
            from_position,
            max_count,
        ))))
    }

    fn subscribe_all(&self, from_position: u64) -> Subscription {
        let live = self.live.subscribe();
        let state = Arc::clone(&self.state);
        let fetch: FetchAll =
            Arc::new(move |from, max| Box::pin(futures::future::ready(Ok(read_all(&state, from, max)))));
        Subscription::new(from_position, live, fetch)
    }

    fn head(&self) -> u64 {
        self.state.lock().events.len() as u64
    }

    fn chain_head(&self) -> ChainHead {
        self.state.lock().head()
    }

    fn read_caused_by(&self, causes: Vec<Uuid>) -> StoreFuture<Result<Vec<RecordedEvent>, StoreError>> {
        let events = self.state.lock().caused_by(&causes);
        Box::pin(futures::future::ready(Ok(events)))
    }

    fn stream_names(&self, prefix: &str, max_count: usize) -> StoreFuture<Result<Vec<StreamId>, StoreError>> {
        let names = self.state.lock().stream_names(prefix, max_count);
        Box::pin(futures::future::ready(Ok(names)))
    }

    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

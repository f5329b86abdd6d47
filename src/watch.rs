//! Watches (etcd's Watch), fed by the log. The gRPC `Watch` stream and the
//! gateway's `/v3/watch` both run [`Watcher`]s; this module knows nothing
//! of their wire formats.
//!
//! **One reader of the log for every watch.** [`Watches`] is a task that
//! follows `$all` (on a shared log: every node's writes) and keeps, for each
//! account somebody watches, that account's key space folded from its
//! stream, so it can turn each `KeyPut`/`KeyDeleted` into the event etcd
//! would send (the key's version and create revision, the value before).
//! It hands each batch of an account's events to that account's watchers
//! as one shared `Arc`, over a bounded channel per watcher; each watcher
//! filters for its range.
//!
//! **History.** A watch from a past revision replays the account's stream
//! from the log (tenure compacts nothing, so every revision is there) up
//! to where the task stood when the watcher joined it, then takes the
//! task's batches: the join is a point in the stream, so nothing is missed
//! or sent twice (events are delivered by stream version, each once).
//!
//! **Slow watchers cost bounded memory.** A watcher that falls
//! [`HUB_BUFFER`] batches or [`WATCHER_BYTES`] bytes behind the task is
//! dropped by it, as etcd moves a slow watcher to its unsynced set. When
//! its client reads again it joins again: the task keeps each watched
//! account's last [`RECENT_EVENTS`] events, at most [`RECENT_BYTES`] of
//! them (the batches it already shared), so a watcher
//! that is not further behind than that takes them from there, with no
//! read of the log; one further behind replays the stream from the log,
//! at most [`REPLAYS_AT_ONCE`] such replays at a time (each folds the key
//! space). A client that never reads holds one full channel and what its
//! transport buffers, nothing more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tenure_events::{AccountId, Bytes, KeyspaceEvent, RecordedEvent, StreamId};
use tokio::sync::{mpsc, oneshot};

use crate::domain::keyspace::{revision_of, KeyRange, KeyValue, Keyspace};
use crate::domain::Aggregate;
use crate::store::{EventStore, StoreError, Subscription};

/// Batches a watcher may lag behind the log's reader before it is dropped
/// from it (and catches up from the log when it is read again).
pub const HUB_BUFFER: usize = 256;

/// Bytes of events (their keys and values and a fixed share for each) a
/// watcher may lag behind the log's reader before it is dropped, as for
/// [`HUB_BUFFER`]: batches hold up to thousands of events of up to a
/// request's size each, so a count of batches alone bounds nothing. A
/// batch that comes to an empty queue is always taken, so a watcher holds
/// at most this plus one batch.
pub const WATCHER_BYTES: usize = 8 << 20;

/// How often the reader forgets the accounts nobody watches any more.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Events of each watched account the reader keeps for watchers catching
/// up (in the batches it shared: the memory is the batches').
pub const RECENT_EVENTS: usize = 16_384;

/// And at most this many bytes of them (counted as for [`WATCHER_BYTES`]);
/// the last batch is kept whatever its size.
pub const RECENT_BYTES: usize = 16 << 20;

/// What a [`WatchEvent`] costs beyond its key and value, about.
const EVENT_OVERHEAD: usize = 128;

/// The memory a batch holds, about: each event's key and value and a fixed
/// share. (The value before a change is the value of an earlier event or
/// of the reader's key space, shared, so it is not counted again.)
fn batch_bytes(events: &[WatchEvent]) -> usize {
    events
        .iter()
        .map(|e| EVENT_OVERHEAD + e.key.len() + e.kv.value.len())
        .sum()
}

/// The reader's end of a watcher's queue: at most [`HUB_BUFFER`] batches
/// and [`WATCHER_BYTES`] bytes (plus one batch) wait in it.
struct QueueTx {
    /// Each batch with its bytes.
    tx: mpsc::Sender<(Batch, usize)>,
    queued: Arc<AtomicUsize>,
}

/// The watcher's end of its queue.
struct Queue {
    rx: mpsc::Receiver<(Batch, usize)>,
    queued: Arc<AtomicUsize>,
}

fn queue() -> (QueueTx, Queue) {
    let (tx, rx) = mpsc::channel(HUB_BUFFER);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            queued: Arc::clone(&queued),
        },
        Queue { rx, queued },
    )
}

impl QueueTx {
    /// Queues `batch` of `bytes` for the watcher; false if the watcher is
    /// too far behind (or gone): then it is to be dropped.
    fn offer(&self, batch: &Batch, bytes: usize) -> bool {
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(bytes) > WATCHER_BYTES {
            return false;
        }
        // Counted before it can be received, so the count never goes below
        // what is in the queue.
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        if self.tx.try_send((Arc::clone(batch), bytes)).is_ok() {
            true
        } else {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            false
        }
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl Queue {
    async fn recv(&mut self) -> Option<Batch> {
        let (batch, bytes) = self.rx.recv().await?;
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        Some(batch)
    }
}

/// Watchers replaying a stream from the log at once: each folds the key
/// space, so this bounds their memory and keeps them from starving the
/// writers.
pub const REPLAYS_AT_ONCE: usize = 2;

/// Events of the log read at a time, and events a replay answers at most
/// at once.
const PAGE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of a key, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: Bytes,
    /// After a put, the key; after a delete, only its `mod_revision` (the
    /// delete's revision) is set, as in etcd.
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev: Option<KeyValue>,
    /// The event's version in the key space's stream (the cursor of
    /// delivery: each version is delivered once).
    pub version: u64,
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// Applies `event` (version `version` of the stream) to `state` and
/// answers the watch event it is.
fn apply(state: &mut Keyspace, event: &KeyspaceEvent, version: u64, at: DateTime<Utc>) -> WatchEvent {
    let (kind, key) = match event {
        KeyspaceEvent::Put(e) => (EventKind::Put, e.key.clone()),
        KeyspaceEvent::Deleted(e) => (EventKind::Delete, e.key.clone()),
    };
    let prev = state.get(key.as_slice()).cloned();
    state.evolve(event, at);
    let deleted = || KeyValue {
        value: Bytes::default(),
        create_revision: 0,
        mod_revision: revision_of(event),
        version: 0,
        lease: None,
    };
    let kv = match kind {
        EventKind::Put => state.get(key.as_slice()).cloned().unwrap_or_else(deleted),
        EventKind::Delete => deleted(),
    };
    WatchEvent {
        kind,
        key,
        kv,
        prev,
        version,
    }
}

/// The key space event `recorded` holds, if it is one.
fn decode(recorded: &RecordedEvent) -> Result<Option<KeyspaceEvent>, StoreError> {
    recorded
        .decode_as::<KeyspaceEvent>()
        .map_err(|e| StoreError::Corrupt(format!("event at position {} does not decode: {e}", recorded.position)))
}

type Batch = Arc<Vec<WatchEvent>>;

/// A watcher's place at the log reader.
struct Joined {
    /// The stream version the reader has applied for the account: the
    /// channel brings every event after it.
    version: u64,
    /// The events after the version the watcher asked to resume from, when
    /// the reader still had them all (see [`RECENT_EVENTS`]).
    recent: Option<Vec<Batch>>,
    /// The account's revision at that version.
    revision: i64,
    events: Queue,
}

struct Join {
    account: AccountId,
    /// Resume after this stream version, from the reader's recent events
    /// if it still has them.
    after: Option<u64>,
    reply: oneshot::Sender<Result<Joined, StoreError>>,
}

/// The log's reader for every watch of this node (see the module doc).
#[derive(Clone)]
pub struct Watches {
    joins: mpsc::UnboundedSender<Join>,
    store: Arc<dyn EventStore>,
    replays: Arc<tokio::sync::Semaphore>,
}

/// An account somebody watches, as the reader keeps it.
struct Watched {
    state: Keyspace,
    version: u64,
    watchers: Vec<QueueTx>,
    /// The last batches shared, at most [`RECENT_EVENTS`] events, and the
    /// stream version before the first of them.
    recent: std::collections::VecDeque<Batch>,
    recent_events: usize,
    recent_bytes: usize,
    recent_after: u64,
}

impl Watches {
    /// Starts the reader on the current runtime, from the log's head; it
    /// ends when `closing` turns true.
    pub fn start(store: Arc<dyn EventStore>, closing: tokio::sync::watch::Receiver<bool>) -> Watches {
        let (joins, requests) = mpsc::unbounded_channel();
        tokio::spawn(run(Arc::clone(&store), requests, closing));
        Watches {
            joins,
            store,
            replays: Arc::new(tokio::sync::Semaphore::new(REPLAYS_AT_ONCE)),
        }
    }

    async fn join(&self, account: &AccountId, after: Option<u64>) -> Result<Joined, StoreError> {
        let (reply, answer) = oneshot::channel();
        let join = Join {
            account: account.clone(),
            after,
            reply,
        };
        self.joins.send(join).map_err(|_| StoreError::Closed)?;
        answer.await.unwrap_or(Err(StoreError::Closed))
    }
}

impl Watched {
    fn new(state: Keyspace, version: u64) -> Watched {
        Watched {
            state,
            version,
            watchers: Vec::new(),
            recent: std::collections::VecDeque::new(),
            recent_events: 0,
            recent_bytes: 0,
            recent_after: version,
        }
    }

    /// Keeps `batch` (of `bytes`) among the recent ones, forgetting the
    /// oldest beyond [`RECENT_EVENTS`] or [`RECENT_BYTES`] (but not the
    /// last).
    fn remember(&mut self, batch: &Batch, bytes: usize) {
        self.recent.push_back(Arc::clone(batch));
        self.recent_events += batch.len();
        self.recent_bytes += bytes;
        while (self.recent_events > RECENT_EVENTS || self.recent_bytes > RECENT_BYTES) && self.recent.len() > 1 {
            let Some(oldest) = self.recent.pop_front() else { break };
            self.recent_events -= oldest.len();
            self.recent_bytes -= batch_bytes(&oldest);
            if let Some(last) = oldest.last() {
                self.recent_after = last.version;
            }
        }
    }

    /// The recent batches with events after version `after`, if none of
    /// those was forgotten.
    fn recent_after(&self, after: u64) -> Option<Vec<Batch>> {
        (after >= self.recent_after).then(|| {
            self.recent
                .iter()
                .filter(|b| b.last().is_some_and(|e| e.version > after))
                .cloned()
                .collect()
        })
    }
}

/// Folds `account`'s key space from its stream, up to log position `upto`.
async fn load(store: &dyn EventStore, account: &AccountId, upto: u64) -> Result<Watched, StoreError> {
    let stream = StreamId::keyspace(account);
    let mut state = Keyspace::default();
    let mut version = 0;
    loop {
        let page = store.read_stream(&stream, version + 1, PAGE).await?;
        for recorded in &page {
            if recorded.position > upto {
                return Ok(Watched::new(state, version));
            }
            if let Some(event) = decode(recorded)? {
                state.evolve(&event, recorded.time);
            }
            version = recorded.version;
        }
        if page.len() < PAGE {
            return Ok(Watched::new(state, version));
        }
    }
}

async fn run(
    store: Arc<dyn EventStore>,
    mut joins: mpsc::UnboundedReceiver<Join>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    // The log is followed only while someone watches: with nobody
    // watching, each group commit would wake this task for nothing.
    let mut position = store.head();
    let mut log: Option<Subscription> = None;
    let mut watched: HashMap<AccountId, Watched> = HashMap::new();
    // Watchers that went away are dropped as batches reach them; this
    // also drops those of accounts that see no more writes.
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        if watched.is_empty() {
            // The last watcher went (or a join failed): stop following.
            log = None;
        }
        tokio::select! {
            _ = sweep.tick() => {
                watched.retain(|_, account| {
                    account.watchers.retain(|tx| !tx.is_closed());
                    !account.watchers.is_empty()
                });
            }
            join = joins.recv() => {
                let Some(join) = join else { return };
                if !watched.contains_key(&join.account) {
                    if log.is_none() {
                        // Loaded up to the durable head, followed after it.
                        position = store.head();
                        log = Some(store.subscribe_all(position + 1));
                    }
                    match load(store.as_ref(), &join.account, position).await {
                        Ok(loaded) => {
                            watched.insert(join.account.clone(), loaded);
                        }
                        Err(e) => {
                            let _ = join.reply.send(Err(e));
                            continue;
                        }
                    }
                }
                if let Some(account) = watched.get_mut(&join.account) {
                    let (tx, events) = queue();
                    account.watchers.push(tx);
                    let joined = Joined {
                        version: account.version,
                        recent: join.after.and_then(|after| account.recent_after(after)),
                        revision: account.state.revision(),
                        events,
                    };
                    let _ = join.reply.send(Ok(joined));
                }
            }
            batch = next_batch(&mut log) => {
                let batch = match batch {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "watches cannot read the log; they end");
                        return;
                    }
                };
                if watched.is_empty() {
                    // Nobody watches: nothing to fold or send.
                    position = batch.last().map_or(position, |e| e.position);
                    continue;
                }
                let mut changed: HashMap<AccountId, Vec<WatchEvent>> = HashMap::new();
                for recorded in batch.iter() {
                    position = recorded.position;
                    let Some(account) = watched.get_mut(&recorded.account) else { continue };
                    if recorded.version <= account.version || recorded.stream != StreamId::keyspace(&recorded.account) {
                        continue;
                    }
                    match decode(recorded) {
                        Ok(Some(event)) => {
                            let seen = apply(&mut account.state, &event, recorded.version, recorded.time);
                            changed.entry(recorded.account.clone()).or_default().push(seen);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "a key space event does not decode; watches skip it"),
                    }
                    account.version = recorded.version;
                }
                for (account, events) in changed {
                    let bytes = batch_bytes(&events);
                    let events: Batch = Arc::new(events);
                    if let Some(entry) = watched.get_mut(&account) {
                        entry.remember(&events, bytes);
                        // A full queue drops its watcher, which catches up
                        // when it is read again.
                        entry.watchers.retain(|tx| tx.offer(&events, bytes));
                        if entry.watchers.is_empty() {
                            watched.remove(&account);
                        }
                    }
                }
            }
            _ = closed(&mut closing) => return,
        }
    }
}

/// The log's next batch, or never without a subscription.
async fn next_batch(log: &mut Option<Subscription>) -> Result<Option<crate::store::Batch>, StoreError> {
    match log {
        Some(log) => log.next_batch().await,
        None => std::future::pending().await,
    }
}

/// Resolves once `closing` turns true (or its sender is gone).
pub async fn closed(closing: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|closed| *closed).await;
}

/// What a watch sees: a range of keys, minus the kinds it filters out.
#[derive(Clone, Debug)]
pub struct Filter {
    pub range: KeyRange,
    pub no_put: bool,
    pub no_delete: bool,
}

impl Filter {
    fn admits(&self, event: &WatchEvent) -> bool {
        let kind_wanted = match event.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        };
        kind_wanted && self.range.contains(event.key.as_slice())
    }
}

enum Phase {
    /// Not joined to the reader (dropped as too slow): join again.
    Detached,
    /// Reading the stream from the log up to `until`, where the reader
    /// stood at the join; then `events`.
    Replay {
        state: Keyspace,
        next_version: u64,
        until: u64,
        events: Queue,
        /// One of the [`REPLAYS_AT_ONCE`] places, once taken.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// Delivering the reader's recent batches (up to version `until`),
    /// then `events`.
    Recent {
        batches: std::collections::VecDeque<Batch>,
        until: u64,
        events: Queue,
    },
    Live(Queue),
}

/// One watch: [`Watcher::next`] answers its events in order, each once.
pub struct Watcher {
    watches: Watches,
    account: AccountId,
    pub filter: Filter,
    /// Events below this revision are not wanted (the watch's start).
    start_revision: i64,
    /// The stream version of the last event delivered or passed over.
    delivered: u64,
    phase: Phase,
}

impl Watcher {
    /// Starts a watch of `account` from `start_revision` (0: from now,
    /// meaning after `now`, the revision of every change acknowledged
    /// before this call); answers it with the revision it started at.
    pub async fn start(
        watches: &Watches,
        account: AccountId,
        filter: Filter,
        start_revision: i64,
        now: i64,
    ) -> Result<(Watcher, i64), StoreError> {
        let joined = watches.join(&account, None).await?;
        let current = joined.revision.max(now);
        let start_revision = if start_revision > 0 {
            start_revision
        } else {
            current + 1
        };
        let (phase, delivered) = if start_revision > joined.revision {
            // Nothing the reader passed is wanted.
            (Phase::Live(joined.events), joined.version)
        } else {
            (
                Phase::Replay {
                    state: Keyspace::default(),
                    next_version: 1,
                    until: joined.version,
                    events: joined.events,
                    permit: None,
                },
                0,
            )
        };
        let watcher = Watcher {
            watches: watches.clone(),
            account,
            filter,
            start_revision,
            delivered,
            phase,
        };
        Ok((watcher, current))
    }

    /// The events of `batch` this watch wants; it has passed them all.
    fn take(&mut self, batch: &Batch) -> Vec<WatchEvent> {
        let out: Vec<WatchEvent> = batch.iter().filter(|e| self.wanted(e)).cloned().collect();
        if let Some(last) = batch.last() {
            self.delivered = self.delivered.max(last.version);
        }
        out
    }

    fn wanted(&self, event: &WatchEvent) -> bool {
        event.version > self.delivered && event.revision() >= self.start_revision && self.filter.admits(event)
    }

    /// The next events of the watch (never empty), as soon as there are
    /// some; an error when the log cannot be read or the server stops.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>, StoreError> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Detached) {
                Phase::Detached => {
                    let joined = self.watches.join(&self.account, Some(self.delivered)).await?;
                    self.phase = match joined.recent {
                        Some(batches) => Phase::Recent {
                            batches: batches.into(),
                            until: joined.version,
                            events: joined.events,
                        },
                        None => Phase::Replay {
                            state: Keyspace::default(),
                            next_version: 1,
                            until: joined.version,
                            events: joined.events,
                            permit: None,
                        },
                    };
                }
                Phase::Recent {
                    mut batches,
                    until,
                    events,
                } => {
                    let Some(batch) = batches.pop_front() else {
                        self.delivered = self.delivered.max(until);
                        self.phase = Phase::Live(events);
                        continue;
                    };
                    let out = self.take(&batch);
                    self.phase = Phase::Recent { batches, until, events };
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
                Phase::Replay {
                    mut state,
                    mut next_version,
                    until,
                    events,
                    permit,
                } => {
                    if next_version > until {
                        self.phase = Phase::Live(events);
                        continue;
                    }
                    let permit = match permit {
                        Some(permit) => permit,
                        None => Arc::clone(&self.watches.replays)
                            .acquire_owned()
                            .await
                            .map_err(|_| StoreError::Closed)?,
                    };
                    let stream = StreamId::keyspace(&self.account);
                    let page = self.watches.store.read_stream(&stream, next_version, PAGE).await?;
                    let mut out = Vec::new();
                    for recorded in page.iter().take_while(|r| r.version <= until) {
                        if let Some(event) = decode(recorded)? {
                            let seen = apply(&mut state, &event, recorded.version, recorded.time);
                            if self.wanted(&seen) {
                                out.push(seen);
                            }
                        }
                        next_version = recorded.version + 1;
                    }
                    if page.len() < PAGE {
                        // The reader's version is durable: the stream holds it.
                        next_version = next_version.max(until + 1);
                    }
                    if next_version > until {
                        self.delivered = self.delivered.max(until);
                    } else if let Some(last) = out.last() {
                        self.delivered = last.version;
                    }
                    self.phase = Phase::Replay {
                        state,
                        next_version,
                        until,
                        events,
                        permit: Some(permit),
                    };
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
                Phase::Live(mut events) => match events.recv().await {
                    Some(batch) => {
                        let out = self.take(&batch);
                        self.phase = Phase::Live(events);
                        if !out.is_empty() {
                            return Ok(out);
                        }
                    }
                    // Dropped as too slow (or the reader ended: joining
                    // again says which).
                    None => self.phase = Phase::Detached,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(versions: std::ops::RangeInclusive<u64>) -> Batch {
        batch_of(versions, 0)
    }

    /// Events whose values are `value_bytes` long.
    fn batch_of(versions: std::ops::RangeInclusive<u64>, value_bytes: usize) -> Batch {
        Arc::new(
            versions
                .map(|version| WatchEvent {
                    kind: EventKind::Put,
                    key: Bytes::from("k"),
                    kv: KeyValue {
                        value: Bytes::from(vec![b'v'; value_bytes]),
                        create_revision: 2,
                        mod_revision: version as i64 + 1,
                        version: version as i64,
                        lease: None,
                    },
                    prev: None,
                    version,
                })
                .collect(),
        )
    }

    #[test]
    fn recent_batches_serve_a_watcher_not_further_behind_than_they_reach() {
        let mut account = Watched::new(Keyspace::default(), 10);
        assert_eq!(
            account.recent_after(10).map(|b| b.len()),
            Some(0),
            "nothing after 10 yet"
        );
        assert!(account.recent_after(9).is_none(), "9 is before what the reader keeps");
        let size = RECENT_EVENTS as u64 / 4;
        let mut next = 11;
        for _ in 0..6 {
            let b = batch(next..=next + size - 1);
            account.remember(&b, batch_bytes(&b));
            next += size;
        }
        // Six batches of a quarter each: the two oldest were forgotten.
        assert!(account.recent_events <= RECENT_EVENTS);
        assert_eq!(account.recent.len(), 4);
        let oldest_kept = 11 + 2 * size;
        assert!(account.recent_after(oldest_kept - 2).is_none());
        let resumed = account.recent_after(oldest_kept - 1).expect("covered");
        assert_eq!(resumed.len(), 4);
        let resumed = account.recent_after(oldest_kept + size).expect("covered");
        assert_eq!(
            resumed.len(),
            3,
            "the batch holding the next version and the later ones"
        );
        assert_eq!(resumed[0].first().map(|e| e.version), Some(oldest_kept + size));
    }

    #[test]
    fn recent_batches_are_bounded_in_bytes_too_but_the_last_is_kept() {
        let mut account = Watched::new(Keyspace::default(), 0);
        // 1 MiB values: 16 of them fill the recent bytes long before the
        // count of events.
        let value = 1 << 20;
        for version in 1..=40 {
            let b = batch_of(version..=version, value);
            account.remember(&b, batch_bytes(&b));
            assert!(account.recent_bytes <= RECENT_BYTES, "after version {version}");
            assert_eq!(
                account.recent_bytes,
                account.recent.iter().map(|b| batch_bytes(b)).sum::<usize>()
            );
        }
        let kept = RECENT_BYTES / (value + 1 + EVENT_OVERHEAD);
        assert_eq!(account.recent.len(), kept);
        assert!(account.recent_after(40 - kept as u64 - 1).is_none());
        assert_eq!(account.recent_after(40 - kept as u64).map(|b| b.len()), Some(kept));
        // One batch larger than the bound on its own is still kept.
        let huge = batch_of(41..=41, RECENT_BYTES + 1);
        account.remember(&huge, batch_bytes(&huge));
        assert_eq!(account.recent.len(), 1);
        assert_eq!(account.recent_after(40).map(|b| b.len()), Some(1));
    }

    #[tokio::test]
    async fn a_watcher_s_queue_takes_no_more_bytes_than_its_bound_plus_one_batch() {
        let (tx, mut rx) = queue();
        let big = batch_of(1..=1, WATCHER_BYTES + 1);
        // An empty queue takes a batch whatever its size...
        assert!(tx.offer(&big, batch_bytes(&big)));
        // ...and then nothing more until it is read.
        let small = batch(2..=2);
        assert!(!tx.offer(&small, batch_bytes(&small)));
        assert_eq!(rx.recv().await.map(|b| b[0].version), Some(1));
        assert_eq!(tx.queued.load(Ordering::Acquire), 0);
        // Batches of 1 MiB: the queue fills at WATCHER_BYTES.
        let mut taken = 0;
        let mut version = 3;
        loop {
            let b = batch_of(version..=version, 1 << 20);
            if !tx.offer(&b, batch_bytes(&b)) {
                break;
            }
            taken += 1;
            version += 1;
        }
        assert_eq!(taken, WATCHER_BYTES / ((1 << 20) + 1 + EVENT_OVERHEAD));
        assert!(tx.queued.load(Ordering::Acquire) <= WATCHER_BYTES);
        // Reading gives the room back, and nothing was lost or reordered.
        for expected in 3..version {
            assert_eq!(rx.recv().await.map(|b| b[0].version), Some(expected));
        }
        assert_eq!(tx.queued.load(Ordering::Acquire), 0);
        assert!(tx.offer(&small, batch_bytes(&small)));
    }
}

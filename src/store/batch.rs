//! What both log writers (SQLite's and PostgreSQL's) share: the queue of
//! appends, taking them a batch at a time (group commit), and deciding
//! each append of a batch against its stream: its outcome, and its events'
//! positions, versions and links. Only how a stream gets its row id and
//! how an event is written differ, and the writer says those.

use parking_lot::Mutex;
use tenure_events::{ChainHead, NewEvent, RecordedEvent, StreamId};

use super::streams::{StreamMap, StreamState};
use super::{AppendCallback, AppendError, Appended, ExpectedVersion, StoreError};

/// Upper bound of events in one transaction: keeps a commit's latency and the
/// writer's memory bounded while still sharing one fsync among many appends.
pub const BATCH_EVENTS_MAX: usize = 32_768;

/// An append waiting for a writer.
pub(super) struct WriteJob {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub reply: AppendCallback,
    /// When the append was queued (its latency counts from here).
    pub queued: std::time::Instant,
}

/// An append as a writer decides it: stream, expected version, events.
pub(super) type Request = (StreamId, ExpectedVersion, Vec<NewEvent>);

/// A batch taken apart: when each append was queued, the appends, and
/// whom to answer, in the same order.
pub(super) fn split(jobs: Vec<WriteJob>) -> (Vec<std::time::Instant>, Vec<Request>, Vec<AppendCallback>) {
    let mut queued = Vec::with_capacity(jobs.len());
    let mut requests = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        queued.push(job.queued);
        requests.push((job.stream, job.expected, job.events));
        replies.push(job.reply);
    }
    (queued, requests, replies)
}

/// The queue of a store's writer; `None` once the store is closed.
pub(super) type Queue = Mutex<Option<crossbeam_channel::Sender<WriteJob>>>;

/// Queues an append for the writer, or answers it [`StoreError::Closed`]
/// when the store is closed.
pub(super) fn enqueue(
    queue: &Queue,
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    done: AppendCallback,
) {
    let job = WriteJob {
        stream,
        expected,
        events,
        reply: done,
        queued: std::time::Instant::now(),
    };
    // Sent under the lock so that one caller's appends queue in order;
    // a refused job is answered after the lock is released.
    let refused = match queue.lock().as_ref() {
        Some(writer) => writer.send(job).err().map(|e| e.0),
        None => Some(job),
    };
    if let Some(job) = refused {
        (job.reply)(Err(StoreError::Closed.into()));
    }
}

/// Waits for the next append and takes every append queued behind it, up
/// to [`BATCH_EVENTS_MAX`] events: appends that arrive while a commit is
/// in flight share the next one. `None` once the store is closed.
pub(super) fn next_batch(queue: &crossbeam_channel::Receiver<WriteJob>) -> Option<Vec<WriteJob>> {
    let first = queue.recv().ok()?;
    let mut events = first.events.len();
    let mut jobs = vec![first];
    while events < BATCH_EVENTS_MAX {
        match queue.try_recv() {
            Ok(job) => {
                events += job.events.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// One append's outcome.
pub(super) type Outcome = Result<Appended, AppendError>;

/// A batch written: each append's outcome, the events, every stream the
/// batch names as it is after it, and the head after it.
pub(super) type Written = (Vec<Outcome>, Vec<RecordedEvent>, StreamMap, ChainHead);

/// A batch being decided, append after append, after a head.
pub(super) struct Batch {
    /// Each append's outcome so far, in order.
    pub outcomes: Vec<Outcome>,
    /// Every stream the batch named so far, as it is after the batch (and
    /// the streams found for it beforehand).
    pub touched: StreamMap,
    /// The head after the batch so far.
    pub head: ChainHead,
}

impl Batch {
    /// A batch after `head`; `found`: streams read from the log for it.
    pub fn new(head: ChainHead, found: StreamMap, appends: usize) -> Batch {
        Batch {
            outcomes: Vec::with_capacity(appends),
            touched: found,
            head,
        }
    }

    /// What the batch knows of `stream`: an earlier append of it named the
    /// stream, or it was found for the batch.
    pub fn known(&self, stream: &StreamId) -> Option<StreamState> {
        self.touched.get(stream).copied()
    }

    /// Decides an append of `events` to `stream`, whose state before it is
    /// `state`. A wrong expected version is a conflict, and an empty
    /// append to a stream that does not exist succeeds at version 0: both
    /// write nothing. Otherwise a stream without a row id gets one from
    /// `create`, and `write` takes each event, placed (position, version,
    /// link), with its stream's row id.
    pub fn append<E>(
        &mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        state: StreamState,
        events: impl ExactSizeIterator<Item = NewEvent>,
        create: impl FnOnce(&StreamId) -> Result<i64, E>,
        mut write: impl FnMut(RecordedEvent, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        let position = self.head.position;
        if let ExpectedVersion::Exact(want) = expected {
            if want != state.version {
                self.touched.insert(stream, state);
                self.outcomes.push(Err(AppendError::Conflict {
                    expected,
                    actual: state.version,
                }));
                return Ok(());
            }
        }
        let id = match state.id {
            Some(id) => id,
            None if events.len() == 0 => {
                self.outcomes.push(Ok(Appended {
                    first_position: position.max(1),
                    last_position: position,
                    version: 0,
                }));
                return Ok(());
            }
            None => create(&stream)?,
        };
        let (mut head, mut version) = (self.head, state.version);
        for event in events {
            head.position += 1;
            version += 1;
            let mut recorded = RecordedEvent::from_new(event, stream.clone(), version, head.position);
            recorded.chain_after(&head.hash);
            head.hash = recorded.hash;
            write(recorded, id)?;
        }
        self.outcomes.push(Ok(Appended {
            first_position: (position + 1).min(head.position.max(1)),
            last_position: head.position,
            version,
        }));
        self.head = head;
        self.touched.insert(stream, StreamState { id: Some(id), version });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::event;

    fn stream(name: &str) -> StreamId {
        StreamId::new(name).expect("a valid stream")
    }

    /// Decides `appends` (stream, expected version, events) after position
    /// 10, `a` known at version 3 (row 1): the outcomes, each written
    /// event as (stream, position, version, row id), and the streams
    /// created.
    #[allow(clippy::type_complexity)]
    fn decide(appends: &[(&str, ExpectedVersion, u64)]) -> (Batch, Vec<(String, u64, u64, i64)>, Vec<String>) {
        let head = ChainHead {
            position: 10,
            hash: tenure_events::ChainHash([7; 32]),
        };
        let mut found = StreamMap::default();
        found.insert(
            stream("test/a"),
            StreamState {
                id: Some(1),
                version: 3,
            },
        );
        let mut batch = Batch::new(head, found, appends.len());
        let (mut written, mut created) = (Vec::new(), Vec::new());
        let mut link = head.hash;
        for (name, expected, count) in appends {
            let state = batch
                .known(&stream(name))
                .unwrap_or(StreamState { id: None, version: 0 });
            let events = (0..*count).map(event).collect::<Vec<_>>();
            let new_stream = |s: &StreamId| {
                created.push(s.to_string());
                Ok::<_, ()>(100 + created.len() as i64)
            };
            let write = |e: RecordedEvent, id: i64| {
                let mut relinked = e.clone();
                relinked.chain_after(&link);
                assert_eq!(relinked.hash, e.hash, "each event linked after the one before");
                link = e.hash;
                written.push((e.stream.to_string(), e.position, e.version, id));
                Ok(())
            };
            batch
                .append(stream(name), *expected, state, events.into_iter(), new_stream, write)
                .expect("no failure");
        }
        assert_eq!(batch.head.hash, link, "the head's link is the last event's");
        (batch, written, created)
    }

    #[test]
    fn appends_continue_positions_and_versions_and_create_streams_once() {
        let (batch, written, created) = decide(&[
            ("test/a", ExpectedVersion::Exact(3), 2),
            ("test/b", ExpectedVersion::Any, 1),
            ("test/b", ExpectedVersion::Exact(1), 1),
        ]);
        assert_eq!(
            written,
            [
                ("test/a".into(), 11, 4, 1),
                ("test/a".into(), 12, 5, 1),
                ("test/b".into(), 13, 1, 101),
                ("test/b".into(), 14, 2, 101),
            ]
        );
        assert_eq!(created, ["test/b"], "a stream is created once, on its first append");
        let versions: Vec<_> = batch.outcomes.iter().map(|o| o.as_ref().map(|a| a.version)).collect();
        assert_eq!(versions, [Ok(5), Ok(1), Ok(2)]);
        assert_eq!(batch.head.position, 14);
        assert_eq!(
            batch.known(&stream("test/b")),
            Some(StreamState {
                id: Some(101),
                version: 2
            })
        );
    }

    #[test]
    fn a_conflict_or_an_empty_append_to_a_new_stream_writes_nothing() {
        let (batch, written, created) = decide(&[
            ("test/a", ExpectedVersion::Exact(2), 1),
            ("test/new", ExpectedVersion::Any, 0),
            ("test/a", ExpectedVersion::Exact(3), 0),
        ]);
        assert!(written.is_empty());
        assert!(created.is_empty(), "an empty append creates no stream");
        assert!(matches!(
            batch.outcomes[0],
            Err(AppendError::Conflict {
                expected: ExpectedVersion::Exact(2),
                actual: 3
            })
        ));
        let empty = |i: usize| {
            batch.outcomes[i]
                .as_ref()
                .map(|a| (a.first_position, a.last_position, a.version))
        };
        assert_eq!(empty(1), Ok((10, 10, 0)));
        assert_eq!(
            empty(2),
            Ok((10, 10, 3)),
            "an empty append to a stream answers its version"
        );
        assert_eq!(batch.head.position, 10);
    }
}

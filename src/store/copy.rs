//! Moving a whole log from one store to another (`tenure store copy`):
//! every event keeps its position, stream version, identity, time and
//! payload, so the destination's hash chain comes out link for link the
//! same, which the copy checks at its end.

use std::sync::mpsc;

use tenure_events::{ChainHead, NewEvent, RecordedEvent};

use super::{AppendError, EventStore, ExpectedVersion, LogFile, StoreError};

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the destination already holds {0} events; copy into an empty log")]
    NotEmpty(u64),
    #[error("{0} predates the hash chain; start `tenure serve` on it once to chain it")]
    Unchained(String),
    #[error("position {position}: the destination wrote it at {written}; the copy is not faithful")]
    Misplaced { position: u64, written: u64 },
    #[error("position {position}: {error}")]
    Refused { position: u64, error: AppendError },
    #[error("the copy ends at {copied}, the source at {source_head}")]
    Diverged { copied: ChainHead, source_head: ChainHead },
}

/// Copies every event of `from` into the empty `to`, in order, a page at a
/// time (each page is a handful of group commits in the destination);
/// `progress` hears the position reached. Answers the head both logs share.
pub fn copy_log(mut from: LogFile, to: &dyn EventStore, mut progress: impl FnMut(u64)) -> Result<ChainHead, CopyError> {
    if !from.is_chained() {
        return Err(CopyError::Unchained(from.describe()));
    }
    if to.head() > 0 {
        return Err(CopyError::NotEmpty(to.head()));
    }
    let source_head = from.head()?;
    let mut failure: Option<CopyError> = None;
    crate::history::read_log(from, |events| match copy_page(events, to) {
        Ok(()) => {
            progress(events.last().map_or(0, |e| e.position));
            true
        }
        Err(e) => {
            failure = Some(e);
            false
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let copied = to.chain_head();
    // Events appended to the source during the copy are not copied: the
    // copy answers the head it reached, which must be the source's at the
    // start or later and on the same chain.
    if copied.position < source_head.position || (copied.position == source_head.position && copied != source_head) {
        return Err(CopyError::Diverged { copied, source_head });
    }
    Ok(copied)
}

/// Appends one page, each run of one stream's events as one append whose
/// expected version is the stream's before it, and waits for all of them.
fn copy_page(events: &[RecordedEvent], to: &dyn EventStore) -> Result<(), CopyError> {
    let (done, outcomes) = mpsc::channel();
    let mut runs = 0;
    let mut start = 0;
    while start < events.len() {
        let first = &events[start];
        let end = events[start..]
            .iter()
            .position(|e| e.stream != first.stream)
            .map_or(events.len(), |n| start + n);
        let batch: Vec<NewEvent> = events[start..end].iter().map(to_new).collect();
        let done = done.clone();
        let position = first.position;
        to.append_then(
            first.stream.clone(),
            ExpectedVersion::Exact(first.version.saturating_sub(1)),
            batch,
            Box::new(move |outcome| {
                let _ = done.send((position, outcome));
            }),
        );
        runs += 1;
        start = end;
    }
    drop(done);
    let mut problem = None;
    for _ in 0..runs {
        let Ok((position, outcome)) = outcomes.recv() else {
            return Err(StoreError::Closed.into());
        };
        let found = match outcome {
            Ok(appended) if appended.first_position == position => None,
            Ok(appended) => Some(CopyError::Misplaced {
                position,
                written: appended.first_position,
            }),
            Err(error) => Some(CopyError::Refused { position, error }),
        };
        // The earliest problem is the one to report.
        if let Some(found) = found {
            let earlier = match (&problem, &found) {
                (None, _) => true,
                (Some(CopyError::Misplaced { position: p, .. } | CopyError::Refused { position: p, .. }), _) => {
                    position < *p
                }
                _ => false,
            };
            if earlier {
                problem = Some(found);
            }
        }
    }
    problem.map_or(Ok(()), Err)
}

fn to_new(e: &RecordedEvent) -> NewEvent {
    NewEvent {
        event_id: e.event_id,
        event_type: e.event_type.clone(),
        schema_version: e.schema_version,
        time: e.time,
        account: e.account.clone(),
        request_id: e.request_id,
        causation_id: e.causation_id,
        payload: e.payload.clone(),
    }
}

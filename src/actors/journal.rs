//! The part every entity actor shares: its stream, the appends in flight, and
//! the replies that must wait for them.
//!
//! Actors **pipeline**: a command is decided on the state that includes every
//! earlier command's events, even those not yet durable, and its append is
//! queued right behind theirs (the store keeps one caller's appends in
//! order, and each carries its expected version). What an actor says is
//! never released before the events it depends on are durable: every reply
//! is held until all appends submitted before it have been acknowledged by
//! the store. So a busy entity is as fast as group commit, and a caller never
//! sees a state that could still be lost.
//!
//! If an append fails (a conflict or a store failure) the actor's state can
//! no longer be trusted: it drops its held replies, the registry forgets it,
//! and the next command activates a fresh one from the log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorFutureExt, AsyncContext, Context};
use futures::future::BoxFuture;
use tenure_events::{DecodeError, NewEvent, RecordedEvent, StreamId};
use tokio::sync::oneshot;

use crate::store::{AppendError, Appended, EventStore, ExpectedVersion, StoreError};

/// Events read per page when an actor loads its stream.
const LOAD_PAGE: usize = 4096;

pub struct Journal {
    store: Arc<dyn EventStore>,
    stream: StreamId,
    /// The stream's version including appends not yet durable.
    version: u64,
    submitted: u64,
    durable: u64,
    held: VecDeque<(u64, Box<dyn FnOnce()>)>,
    failed: bool,
    /// Messages handled, compared with the registry's count of messages
    /// routed when the actor asks to passivate.
    handled: u64,
    last_active: Instant,
}

/// An actor that owns a [`Journal`].
pub trait Journaled: Actor<Context = Context<Self>> {
    fn journal(&mut self) -> &mut Journal;

    /// Called after an append failed or the stream could not be loaded: the
    /// actor must leave the registry and stop.
    fn journal_failed(&mut self, ctx: &mut Context<Self>);
}

impl Journal {
    pub fn new(store: Arc<dyn EventStore>, stream: StreamId) -> Journal {
        Journal {
            store,
            stream,
            version: 0,
            submitted: 0,
            durable: 0,
            held: VecDeque::new(),
            failed: false,
            handled: 0,
            last_active: Instant::now(),
        }
    }

    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    pub fn store(&self) -> Arc<dyn EventStore> {
        Arc::clone(&self.store)
    }

    /// Records that a message was handled (for passivation).
    pub fn touch(&mut self) {
        self.handled += 1;
        self.last_active = Instant::now();
    }

    pub fn handled(&self) -> u64 {
        self.handled
    }

    pub fn idle_for(&self) -> std::time::Duration {
        self.last_active.elapsed()
    }

    /// No append is in flight.
    pub fn is_settled(&self) -> bool {
        self.submitted == self.durable
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Runs `f` once every append submitted so far is durable: at once when
    /// none is in flight.
    pub fn after_durable(&mut self, f: impl FnOnce() + 'static) {
        if self.is_settled() {
            f();
        } else {
            self.held.push_back((self.submitted, Box::new(f)));
        }
    }

    /// Sends `value` once every append submitted so far is durable.
    pub fn reply<T: 'static>(&mut self, tx: oneshot::Sender<T>, value: T) {
        self.after_durable(move || {
            let _ = tx.send(value);
        });
    }

    fn release(&mut self) {
        while self.held.front().is_some_and(|(seq, _)| *seq <= self.durable) {
            if let Some((_, f)) = self.held.pop_front() {
                f();
            }
        }
    }

    fn loaded(&mut self, version: u64) {
        self.version = version;
    }
}

/// Appends `events` behind every earlier append of this actor and calls
/// `done` once the store has answered. The caller has already applied the
/// events to its state.
pub fn submit<A, F>(act: &mut A, ctx: &mut Context<A>, events: Vec<NewEvent>, done: F)
where
    A: Journaled,
    F: FnOnce(&mut A, &mut Context<A>, Result<Appended, AppendError>) + 'static,
{
    let journal = act.journal();
    let expected = ExpectedVersion::Exact(journal.version);
    journal.version += events.len() as u64;
    journal.submitted += 1;
    let seq = journal.submitted;
    let append = journal.store.append(journal.stream.clone(), expected, events);
    ctx.spawn(actix::fut::wrap_future::<_, A>(append).map(move |result, act, ctx| {
        if result.is_ok() {
            let journal = act.journal();
            journal.durable = journal.durable.max(seq);
            done(act, ctx, result);
            act.journal().release();
        } else {
            let journal = act.journal();
            journal.failed = true;
            tracing::warn!(stream = %journal.stream, error = ?result.as_ref().err(), "append failed; the actor stops");
            done(act, ctx, result);
            // Held replies are dropped: their callers learn the entity went away.
            act.journal().held.clear();
            act.journal_failed(ctx);
        }
    }));
}

/// Why an actor could not load its stream.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at position {position} does not decode: {source}")]
    Decode { position: u64, source: DecodeError },
}

/// Reads a whole stream, page by page, folding each event into `state`;
/// resolves to the state and the stream's version.
pub fn load<S, F>(
    store: Arc<dyn EventStore>,
    stream: StreamId,
    mut state: S,
    mut fold: F,
) -> BoxFuture<'static, Result<(S, u64), LoadError>>
where
    S: Send + 'static,
    F: FnMut(&mut S, &RecordedEvent) -> Result<(), DecodeError> + Send + 'static,
{
    Box::pin(async move {
        let mut version = 0;
        loop {
            let page = store.read_stream(&stream, version + 1, LOAD_PAGE).await?;
            let full = page.len() == LOAD_PAGE;
            for event in &page {
                assert_eq!(event.version, version + 1, "stream versions are contiguous");
                fold(&mut state, event).map_err(|source| LoadError::Decode {
                    position: event.position,
                    source,
                })?;
                version = event.version;
            }
            if !full {
                return Ok((state, version));
            }
        }
    })
}

/// Starts loading the actor's stream and holds its mailbox until the state
/// is in place (`ctx.wait`): commands queue meanwhile.
pub fn activate_from_log<A, S, F, P>(act: &mut A, ctx: &mut Context<A>, init: S, fold: F, put: P)
where
    A: Journaled,
    S: Send + 'static,
    F: FnMut(&mut S, &RecordedEvent) -> Result<(), DecodeError> + Send + 'static,
    P: FnOnce(&mut A, S) + 'static,
{
    let journal = act.journal();
    let loading = load(journal.store(), journal.stream().clone(), init, fold);
    ctx.wait(
        actix::fut::wrap_future::<_, A>(loading).map(move |result, act, ctx| match result {
            Ok((state, version)) => {
                act.journal().loaded(version);
                put(act, state);
            }
            Err(e) => {
                let journal = act.journal();
                journal.failed = true;
                tracing::error!(stream = %journal.stream, error = %e, "cannot load stream; the actor stops");
                act.journal_failed(ctx);
            }
        }),
    );
}

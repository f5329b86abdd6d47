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
//! Appends are **batched per actor**: the events of every command an actor
//! handles in one go (its mailbox drained) leave as one append, up to
//! [`BATCH_EVENTS_MAX`] events. A key space deleting the keys of thousands of
//! expiring leases makes a few large appends, not thousands of small ones.
//!
//! The store answers each append through a callback that posts an
//! [`AppendDone`] message to the actor (not a future spawned in the actor's
//! context: actix polls every such future on each wake-up, which made a busy
//! key space quadratic). Completions arrive in submission order.
//!
//! If an append fails (a conflict or a store failure) the actor's state can
//! no longer be trusted: it drops its held replies, the registry forgets it,
//! and the next command activates a fresh one from the log. Except for a
//! conflict on a shared log, when the actor can put its state back to the
//! stream's durable version ([`Journaled::journal_conflicted`]; the key
//! space does): it then stays, and only what was decided on top of the
//! failed append is void.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message};
use futures::future::BoxFuture;
use tenure_events::{DecodeError, NewEvent, RecordedEvent, StreamId};

use super::{CommandError, Reply};
use crate::store::{AppendError, Appended, EventStore, ExpectedVersion, StoreError};

/// Events an actor gathers into one append at most.
pub const BATCH_EVENTS_MAX: usize = 4096;

/// Events read per page when an actor loads its stream.
const LOAD_PAGE: usize = 4096;

/// What to do once an append is answered.
type Continuation<A> = Box<dyn FnOnce(&mut A, &mut Context<A>, Result<Appended, AppendError>)>;

struct OpenBatch<A: Actor<Context = Context<A>>> {
    seq: u64,
    expected: u64,
    events: Vec<NewEvent>,
    continuations: Vec<Continuation<A>>,
}

/// The store's answer to one of the actor's appends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AppendDone {
    seq: u64,
    result: Result<Appended, AppendError>,
}

pub struct Journal<A: Actor<Context = Context<A>>> {
    store: Arc<dyn EventStore>,
    stream: StreamId,
    /// The stream's version including appends not yet durable.
    version: u64,
    /// The stream's version as far as the store has acknowledged it.
    durable_version: u64,
    submitted: u64,
    durable: u64,
    /// Events decided but not yet sent to the store, and what to do once
    /// they are durable; sent when the mailbox is drained or the batch is full.
    open: Option<OpenBatch<A>>,
    in_flight: VecDeque<(u64, Vec<Continuation<A>>)>,
    held: VecDeque<(u64, Box<dyn FnOnce()>)>,
    failed: bool,
    /// Whether a batch may be sent while an earlier one is in flight. Not
    /// on a shared log: there a batch that conflicts (another node wrote
    /// the stream) must not be followed by one decided on top of it, which
    /// could still match the stream's version by chance; later commands
    /// gather in the open batch until the one in flight is answered.
    pipelined: bool,
    /// Messages handled, compared with the registry's count of messages
    /// routed when the actor asks to passivate.
    handled: u64,
    last_active: Instant,
}

/// An actor that owns a [`Journal`]. Its `Handler<AppendDone>` calls
/// [`completed`].
pub trait Journaled: Actor<Context = Context<Self>> + Handler<AppendDone> {
    fn journal(&mut self) -> &mut Journal<Self>;

    /// Called after an append failed or the stream could not be loaded: the
    /// actor must leave the registry and stop.
    fn journal_failed(&mut self, ctx: &mut Context<Self>);

    /// Called when an append conflicted on a shared log (another node
    /// appended to the stream first, up to version `actual`): an actor that
    /// can put its state back to the stream's durable version does so and
    /// answers `true`; it then stays, and folds the other node's events
    /// before its next command. One that answers `false` stops, and the
    /// next command activates a fresh actor from the log.
    fn journal_conflicted(&mut self, _actual: u64) -> bool {
        false
    }
}

impl<A: Actor<Context = Context<A>>> Journal<A> {
    pub fn new(store: Arc<dyn EventStore>, stream: StreamId) -> Journal<A> {
        Journal {
            pipelined: !store.is_shared(),
            store,
            stream,
            version: 0,
            durable_version: 0,
            submitted: 0,
            durable: 0,
            open: None,
            in_flight: VecDeque::new(),
            held: VecDeque::new(),
            failed: false,
            handled: 0,
            last_active: Instant::now(),
        }
    }

    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The stream's version, appends not yet durable included.
    pub fn version(&self) -> u64 {
        self.version
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

    /// `messages` the actor held back and now sends itself again
    /// (`ctx.notify`) were counted when they first came: their second
    /// handling must not count them again, or the count would pass the
    /// registry's and the actor could never passivate.
    pub fn handled_again(&mut self, messages: usize) {
        self.handled = self.handled.saturating_sub(messages as u64);
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

    /// Answers `reply` once every append submitted so far is durable.
    pub fn reply<T: Send + 'static>(&mut self, reply: Reply<T>, result: Result<T, CommandError>) {
        self.after_durable(move || reply.send(result));
    }

    fn release(&mut self) {
        while self.held.front().is_some_and(|(seq, _)| *seq <= self.durable) {
            if let Some((_, f)) = self.held.pop_front() {
                f();
            }
        }
    }

    /// The state now holds the stream up to `version`, all of it durable.
    pub(crate) fn loaded(&mut self, version: u64) {
        self.version = version;
        self.durable_version = version;
    }
}

/// Appends `events` behind every earlier append of this actor and calls
/// `done` once the store has answered. The caller has already applied the
/// events to its state. The events join the actor's open batch, which is
/// sent once the actor has handled every message waiting for it.
pub fn submit<A, F>(act: &mut A, ctx: &mut Context<A>, events: Vec<NewEvent>, done: F)
where
    A: Journaled,
    F: FnOnce(&mut A, &mut Context<A>, Result<Appended, AppendError>) + 'static,
{
    let journal = act.journal();
    if journal.open.is_none() {
        journal.submitted += 1;
        journal.open = Some(OpenBatch {
            seq: journal.submitted,
            expected: journal.version,
            events: Vec::new(),
            continuations: Vec::new(),
        });
        // Spawned items run after the mailbox is drained.
        ctx.spawn(actix::fut::wrap_future::<_, A>(std::future::ready(())).map(|(), act, ctx| flush(act, ctx)));
    }
    journal.version += events.len() as u64;
    let full = match journal.open.as_mut() {
        Some(batch) => {
            batch.events.extend(events);
            batch.continuations.push(Box::new(done));
            batch.events.len() >= BATCH_EVENTS_MAX
        }
        None => unreachable!("a batch was opened above"),
    };
    if full {
        flush(act, ctx);
    }
}

/// Sends the open batch, if any, to the store.
fn flush<A: Journaled>(act: &mut A, ctx: &mut Context<A>) {
    let addr = ctx.address();
    let journal = act.journal();
    if !journal.pipelined && !journal.in_flight.is_empty() {
        return; // sent when the append in flight is answered
    }
    let Some(batch) = journal.open.take() else { return };
    let seq = batch.seq;
    journal.in_flight.push_back((seq, batch.continuations));
    journal.store.append_then(
        journal.stream.clone(),
        ExpectedVersion::Exact(batch.expected),
        batch.events,
        Box::new(move |result| addr.do_send(AppendDone { seq, result })),
    );
}

/// Handles the store's answer to an append: runs its continuations, then
/// releases the replies that waited for it; on failure, stops the actor
/// (unless it rolled back after a conflict on a shared log).
pub fn completed<A: Journaled>(act: &mut A, ctx: &mut Context<A>, msg: AppendDone) {
    let journal = act.journal();
    let Some((seq, continuations)) = journal.in_flight.pop_front() else {
        return; // the actor already failed and dropped what was in flight
    };
    assert_eq!(seq, msg.seq, "appends complete in the order they were submitted");
    let conflict = conflict_on_shared_log(journal, &msg.result);
    if let Ok(appended) = &msg.result {
        journal.durable = seq;
        journal.durable_version = appended.version;
        for done in continuations {
            done(act, ctx, msg.result.clone());
        }
        act.journal().release();
        if act.journal().open.is_some() && act.journal().in_flight.is_empty() {
            flush(act, ctx); // the batch held back while this one was in flight
        }
    } else if let Some(actual) = conflict.filter(|&actual| act.journal_conflicted(actual)) {
        // The actor put its state back to the durable version: everything
        // decided on top of the failed append is void. Its callers and those
        // of the batch held back behind it hear of the conflict and send
        // their commands again; held replies (decided on the void state)
        // are dropped, which their callers see as a stopped actor.
        let journal = act.journal();
        tracing::debug!(stream = %journal.stream, actual, "append conflicted; rolled back to the durable version");
        let open = journal.open.take().map(|batch| batch.continuations).unwrap_or_default();
        journal.held.clear();
        journal.version = journal.durable_version;
        journal.durable = journal.submitted;
        for done in continuations.into_iter().chain(open) {
            done(act, ctx, msg.result.clone());
        }
    } else {
        let journal = act.journal();
        journal.failed = true;
        tracing::warn!(stream = %journal.stream, error = ?msg.result.as_ref().err(), "append failed; the actor stops");
        // Out of the registry before anyone hears of the failure: a caller
        // that tries again at once must reach a fresh actor that reads the
        // stream, not this one on its way out (which would answer Stopped).
        act.journal_failed(ctx);
        for done in continuations {
            done(act, ctx, msg.result.clone());
        }
        // Held replies and later continuations are dropped: their callers
        // learn that the entity went away.
        let journal = act.journal();
        journal.held.clear();
        journal.open = None;
        journal.in_flight.clear();
    }
}

/// The version another node's append took the stream to, when `result`
/// is a conflict on a shared log (whose actors send one batch at a time).
fn conflict_on_shared_log<A: Actor<Context = Context<A>>>(
    journal: &Journal<A>,
    result: &Result<Appended, AppendError>,
) -> Option<u64> {
    match result {
        Err(AppendError::Conflict { actual, .. }) if !journal.pipelined && journal.in_flight.is_empty() => {
            Some(*actual)
        }
        _ => None,
    }
}

/// Implements [`Journaled`] and `Handler<AppendDone>` for an entity actor
/// with fields `journal`, `hub` and the given key field: on failure it
/// leaves the given registry of the hub and stops; with `conflicted:`, a
/// conflict on a shared log calls that method of the actor instead (see
/// [`Journaled::journal_conflicted`]).
macro_rules! journaled {
    ($actor:ty, registry: $registry:ident, key: $key:ident $(, conflicted: $conflicted:ident)?) => {
        impl actix::Handler<$crate::actors::journal::AppendDone> for $actor {
            type Result = ();

            fn handle(&mut self, msg: $crate::actors::journal::AppendDone, ctx: &mut actix::Context<Self>) {
                $crate::actors::journal::completed(self, ctx, msg);
            }
        }

        impl $crate::actors::journal::Journaled for $actor {
            fn journal(&mut self) -> &mut $crate::actors::journal::Journal<Self> {
                &mut self.journal
            }

            fn journal_failed(&mut self, ctx: &mut actix::Context<Self>) {
                use actix::{ActorContext, AsyncContext};
                self.hub.$registry.forget(&self.$key, &ctx.address());
                ctx.stop();
            }

            $(
                fn journal_conflicted(&mut self, actual: u64) -> bool {
                    self.$conflicted(actual)
                }
            )?
        }
    };
}
pub(crate) use journaled;

/// Why an actor could not load its stream.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at position {position} does not decode: {source}")]
    Decode { position: u64, source: DecodeError },
    #[error("the stream skips from version {expected} to {found} at position {position}")]
    Gap { position: u64, expected: u64, found: u64 },
}

/// Reads a whole stream, page by page, folding each event into `state`;
/// resolves to the state and the stream's version.
pub fn load<S, F>(
    store: Arc<dyn EventStore>,
    stream: StreamId,
    state: S,
    fold: F,
) -> BoxFuture<'static, Result<(S, u64), LoadError>>
where
    S: Send + 'static,
    F: FnMut(&mut S, &RecordedEvent) -> Result<(), DecodeError> + Send + 'static,
{
    load_after(store, stream, state, 0, fold)
}

/// Like [`load`], from a `state` already at stream version `version` (a
/// snapshot's): folds the events after it.
pub fn load_after<S, F>(
    store: Arc<dyn EventStore>,
    stream: StreamId,
    mut state: S,
    version: u64,
    mut fold: F,
) -> BoxFuture<'static, Result<(S, u64), LoadError>>
where
    S: Send + 'static,
    F: FnMut(&mut S, &RecordedEvent) -> Result<(), DecodeError> + Send + 'static,
{
    Box::pin(async move {
        let mut version = version;
        loop {
            let page = store.read_stream(&stream, version + 1, LOAD_PAGE).await?;
            let full = page.len() == LOAD_PAGE;
            for event in &page {
                if event.version != version + 1 {
                    return Err(LoadError::Gap {
                        position: event.position,
                        expected: version + 1,
                        found: event.version,
                    });
                }
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
    activate_with(act, ctx, loading, put);
}

/// Holds the actor's mailbox until `loading` resolves to its state and
/// stream version (`ctx.wait`), then puts the state in place; on failure the
/// actor stops.
pub fn activate_with<A, S, P>(
    _act: &mut A,
    ctx: &mut Context<A>,
    loading: BoxFuture<'static, Result<(S, u64), LoadError>>,
    put: P,
) where
    A: Journaled,
    S: Send + 'static,
    P: FnOnce(&mut A, S) + 'static,
{
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

//! The key space actor: owns one account's keys (stream `keyspace/{account}`).
//!
//! It stays resident (it is the key index); reads are answered from its state
//! once every write they may have observed is durable.
//!
//! Its stream grows without bound, so it activates from its newest valid
//! snapshot (`crate::snapshot`) and folds only the events after it; it
//! hands out a snapshot of itself when asked ([`TakeSnapshot`]), once the
//! events it holds are durable.

use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use tenure_events::{AccountId, Bytes, DeleteCause, KeyspaceEvent, LeaseId, NewEvent, StreamId};

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use tenure_events::{DecodeError, RecordedEvent};

use super::journal::{activate_with, journaled, load, load_after, submit, Journal, LoadError};
use super::registry::{Activation, Entity};
use super::{command_span, log_outcome, Cmd, CommandError, Hub, LimitReached, Reply};
use crate::domain::keyspace::{
    txn::TxnContext, KeyRange, KeyValue, Keyspace, KeyspaceCommand, KeyspaceRejection, LeaseUpdate, RangeOptions,
    RangeResult, Undo,
};
use crate::domain::Aggregate;
use crate::snapshot::Snapshots;
use crate::store::EventStore;

pub struct KeyspaceActor {
    hub: Arc<Hub>,
    account: AccountId,
    state: Keyspace,
    /// Where this key space publishes its durable revision.
    published: Arc<std::sync::atomic::AtomicI64>,
    /// This key space's share of the key count metric (its durable keys).
    keys: crate::metrics::GaugeShare,
    journal: Journal<Self>,
    load: bool,
    /// The snapshot this actor started from or last handed out: its
    /// stream version and size (none: the default).
    snapshot: crate::snapshot::Mark,
    /// The stream version other nodes' appends reached, as the projector
    /// told ([`Follow`]); while it is past this actor's, messages wait
    /// for the actor to fold the events it lacks (a shared log only).
    behind: u64,
    /// The batches [`Follow`] brought while an append of this actor's was
    /// in flight, folded once it is settled (at most [`FOLLOWED_MAX`]
    /// batches; past that, and at a gap, the actor reads its stream).
    followed: Vec<crate::store::Batch>,
    /// On a shared log, what puts back each command's events that the
    /// store has not acknowledged yet, oldest first: when an append
    /// conflicts with another node's, the actor rolls its state back to
    /// the durable version and stays, instead of reloading its stream
    /// (`None` on a log of one node, where appends do not conflict).
    undo: Option<std::collections::VecDeque<Vec<Undo>>>,
    /// A read of the stream's tail started by [`KeyspaceActor::ready`] is
    /// under way: the state is out (moved into the read) until it ends.
    /// `ctx.wait` does not cover it fully: a message the actor sent itself
    /// (`ctx.notify`) can still be handled in the same turn of the context
    /// as the handler that started the read.
    loading: bool,
    /// When the actor last rolled back after a conflict: the winner's
    /// events are on their way in a [`Follow`] (this node's listener reads
    /// them anyway), so for [`FOLLOW_WAIT`] the actor waits for them
    /// instead of reading its stream's tail itself.
    rolled_back_at: Option<std::time::Instant>,
}

/// How long a key space that rolled back waits for the winner's events to
/// come in a [`Follow`] before it reads them from the store.
const FOLLOW_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Followed batches a key space keeps while an append of its own is in flight.
const FOLLOWED_MAX: usize = 256;

/// Asks a key space for a snapshot of itself if its stream has grown by
/// at least `every_events` since its last one, or by more when it is
/// large (`snapshot::due_after`; `None`: by one event); answered once what
/// it holds is durable (`None`: not due).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TakeSnapshot {
    pub every_events: Option<u64>,
    pub reply: tokio::sync::oneshot::Sender<Option<Taken>>,
}

/// A key space's snapshot: its encoding at a stream version.
pub struct Taken {
    pub version: u64,
    pub bytes: Vec<u8>,
}

/// A put's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutDone {
    pub revision: i64,
    /// The key before the put, when asked for and when it existed.
    pub prev: Option<KeyValue>,
}

/// A delete's answer (also a revoke's and an expiry's: their keys).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Deleted {
    pub revision: i64,
    pub count: usize,
    /// The deleted keys, when asked for.
    pub prev_kvs: Vec<(Bytes, KeyValue)>,
}

/// A range read's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeDone {
    pub revision: i64,
    pub result: RangeResult,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Put {
    pub key: Bytes,
    /// `None`: keep the key's value (etcd's `ignore_value`).
    pub value: Option<Bytes>,
    /// Only the lease actor sends `Set(Some(lease))`, after checking the
    /// lease is live.
    pub lease: LeaseUpdate,
    pub prev_kv: bool,
    pub cmd: Cmd,
    pub reply: Reply<PutDone>,
}

/// etcd's Txn. Only lease actors send one whose puts name leases, with
/// `live_leases` the ones they found live (and hold live till it is done).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Txn {
    pub txn: crate::domain::keyspace::txn::Txn,
    pub live_leases: Vec<LeaseId>,
    pub cmd: Cmd,
    pub reply: Reply<TxnDone>,
}

/// A txn's answer: the revision after it (its header's) and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnDone {
    pub revision: i64,
    pub outcome: crate::domain::keyspace::txn::TxnOutcome,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteRange {
    pub range: KeyRange,
    pub prev_kv: bool,
    pub cmd: Cmd,
    pub reply: Reply<Deleted>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteLeaseKeys {
    pub lease: LeaseId,
    pub cause: DeleteCause,
    pub cmd: Cmd,
    pub reply: Reply<Deleted>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Range {
    pub range: KeyRange,
    pub options: RangeOptions,
    pub reply: Reply<RangeDone>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseKeys {
    pub lease: LeaseId,
    pub reply: Reply<Vec<Bytes>>,
}

/// Another node appended to this key space's stream (a shared log), up to
/// stream version `version`: the actor folds the events it has not seen,
/// holding its mailbox meanwhile (once no append of its own is in flight),
/// and until then puts every other message back (`KeyspaceActor::ready`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Follow {
    pub version: u64,
    /// The batch that told it (shared, not copied): when its events of
    /// this stream continue the actor's state and no append of its own is
    /// in flight, the actor folds them at once instead of reading its
    /// stream again.
    pub events: crate::store::Batch,
}

/// The keys of each of `leases`, in the same order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KeysOfLeases {
    pub leases: Vec<LeaseId>,
    pub reply: Reply<Vec<Vec<Bytes>>>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct LeasesWithKeys {
    pub reply: Reply<Vec<LeaseId>>,
}

impl Entity for KeyspaceActor {
    type Key = AccountId;

    fn activate(account: AccountId, activation: Activation, hub: Arc<Hub>) -> KeyspaceActor {
        let journal = Journal::new(Arc::clone(&hub.store), StreamId::keyspace(&account));
        let published = hub.revisions.slot(&account);
        let keys = crate::metrics::GaugeShare::new(hub.metrics.keys.clone());
        let hub_shared = hub.store.is_shared();
        KeyspaceActor {
            hub,
            account,
            state: Keyspace::default(),
            published,
            keys,
            journal,
            load: activation != Activation::Fresh,
            snapshot: Default::default(),
            behind: 0,
            followed: Vec::new(),
            undo: hub_shared.then(std::collections::VecDeque::new),
            loading: false,
            rolled_back_at: None,
        }
    }
}

impl Actor for KeyspaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.load {
            let loading = load_keyspace(
                Arc::clone(&self.hub.store),
                self.hub.snapshots.clone(),
                self.account.clone(),
            );
            activate_with(self, ctx, loading, |act, (state, from_snapshot)| {
                act.state = state;
                act.snapshot = from_snapshot;
                act.publish(act.state.revision());
                act.keys.set(act.state.len());
            });
        }
    }
}

journaled!(KeyspaceActor, registry: keyspaces, key: account, conflicted: roll_back);

fn fold(state: &mut Keyspace, e: &RecordedEvent) -> Result<(), DecodeError> {
    if let Some(event) = e.decode_as::<KeyspaceEvent>()? {
        state.evolve(&event, e.time);
    }
    Ok(())
}

/// A key space loaded: (state, the snapshot it started from, the default:
/// none) and the stream's version.
type Loading = BoxFuture<'static, Result<((Keyspace, crate::snapshot::Mark), u64), LoadError>>;

/// The key space from its newest valid snapshot and the events after it,
/// or else from its whole stream; with the snapshot used (the default:
/// none).
fn load_keyspace(store: Arc<dyn EventStore>, snapshots: Option<Arc<Snapshots>>, account: AccountId) -> Loading {
    let stream = StreamId::keyspace(&account);
    Box::pin(async move {
        if let Some(snapshots) = snapshots {
            if let Some((mark, state)) = snapshots.restore_keyspace(&store, &account).await {
                let version = mark.at;
                // The tail must follow the snapshot's revision: evolve
                // asserts it, and a snapshot is not trusted to.
                let broken = Arc::new(AtomicBool::new(false));
                let seen = Arc::clone(&broken);
                let checked = move |state: &mut Keyspace, e: &RecordedEvent| {
                    if let Some(event) = e.decode_as::<KeyspaceEvent>()? {
                        if seen.load(Ordering::Relaxed) || !state.can_follow(&event) {
                            seen.store(true, Ordering::Relaxed);
                        } else {
                            state.evolve(&event, e.time);
                        }
                    }
                    Ok(())
                };
                let loaded = load_after(Arc::clone(&store), stream.clone(), state, version, checked).await?;
                if !broken.load(Ordering::Relaxed) {
                    let (state, at) = loaded;
                    return Ok(((state, mark), at));
                }
                snapshots.rejected(
                    &crate::snapshot::keyspace_name(&account),
                    version,
                    "the stream's next event does not follow its revision".into(),
                );
            }
        }
        let (state, at) = load(store, stream, Keyspace::default(), fold).await?;
        Ok(((state, Default::default()), at))
    })
}

impl KeyspaceActor {
    fn publish(&self, revision: i64) {
        self.published.fetch_max(revision, std::sync::atomic::Ordering::Release);
    }

    /// Decides `command`, applies and appends its events; `done` gets the
    /// revision after them once they are durable (at once, after earlier
    /// appends, when there are none).
    fn execute(
        &mut self,
        ctx: &mut Context<Self>,
        command: KeyspaceCommand,
        cmd: &Cmd,
        done: impl FnOnce(Result<i64, CommandError>) + 'static,
    ) {
        let now = self.hub.clock.now();
        match self.state.decide(command, now) {
            Ok(events) => self.record(ctx, events, cmd, done),
            Err(rejection) => self.journal.after_durable(move || done(Err(rejection.into()))),
        }
    }

    /// Applies and appends `events`; `done` gets the revision after them
    /// once they are durable (at once, after earlier appends, when there
    /// are none).
    fn record(
        &mut self,
        ctx: &mut Context<Self>,
        events: Vec<KeyspaceEvent>,
        cmd: &Cmd,
        done: impl FnOnce(Result<i64, CommandError>) + 'static,
    ) {
        let now = self.hub.clock.now();
        if events.is_empty() {
            let revision = self.state.revision();
            self.journal.after_durable(move || done(Ok(revision)));
            return;
        }
        let mut undo = Vec::new();
        let new_events: Vec<NewEvent> = events
            .iter()
            .map(|e| {
                match self.undo {
                    Some(_) => undo.push(self.state.evolve_undoable(e, now)),
                    None => self.state.evolve(e, now),
                }
                NewEvent::new(e, &cmd.meta, now)
            })
            .collect();
        if let Some(pending) = self.undo.as_mut() {
            pending.push_back(undo);
        }
        let (revision, keys) = (self.state.revision(), self.state.len());
        submit(self, ctx, new_events, move |act, _, result| {
            if result.is_ok() {
                if let Some(pending) = act.undo.as_mut() {
                    pending.pop_front(); // durable: nothing to put back
                }
                act.publish(revision);
                act.keys.set(keys);
            }
            done(result.map(|_| revision).map_err(Into::into))
        });
    }

    fn delete(
        &mut self,
        ctx: &mut Context<Self>,
        command: KeyspaceCommand,
        cmd: Cmd,
        prev: Vec<(Bytes, KeyValue)>,
        name: &'static str,
        reply: Reply<Deleted>,
    ) {
        let span = command_span(&cmd, name, self.journal.stream());
        let count = match &command {
            KeyspaceCommand::DeleteRange { range } => self.state.range(range, 0).count,
            KeyspaceCommand::DeleteLeaseKeys { lease, .. } => self.state.lease_keys(*lease).len(),
            KeyspaceCommand::Put { .. } | KeyspaceCommand::Txn { .. } => 0,
        };
        self.execute(ctx, command, &cmd, move |result| {
            let result = result.map(|revision| Deleted {
                revision,
                count,
                prev_kvs: prev,
            });
            log_outcome(&span, &result);
            reply.send(result);
        });
    }
}

impl Handler<Put> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: Put, ctx: &mut Context<Self>) {
        if !self.ready(ctx) {
            return self.later(ctx, msg);
        }
        self.journal.touch();
        let prev = if msg.prev_kv {
            self.state.get(msg.key.as_slice()).cloned()
        } else {
            None
        };
        let span = command_span(&msg.cmd, "put", self.journal.stream());
        let reply = msg.reply;
        let command = KeyspaceCommand::Put {
            key: msg.key,
            value: msg.value,
            lease: msg.lease,
            max_keys: self.hub.projections.directory.read().limits(&self.account).max_keys,
        };
        let account = self.account.clone();
        self.execute(ctx, command, &msg.cmd, move |result| {
            let result = result.map(|revision| PutDone { revision, prev }).map_err(|e| match e {
                CommandError::Keyspace(KeyspaceRejection::KeyLimitReached { max }) => LimitReached {
                    account,
                    limit: "max_keys",
                    what: "keys",
                    max,
                }
                .into(),
                other => other,
            });
            log_outcome(&span, &result);
            reply.send(result);
        });
    }
}

impl Handler<Txn> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: Txn, ctx: &mut Context<Self>) {
        if !self.ready(ctx) {
            return self.later(ctx, msg);
        }
        self.journal.touch();
        let span = command_span(&msg.cmd, "txn", self.journal.stream());
        let context = TxnContext {
            live_leases: msg.live_leases,
            max_keys: self.hub.projections.directory.read().limits(&self.account).max_keys,
        };
        let reply = msg.reply;
        let decided = msg.txn.check_keys().and_then(|()| self.state.txn(&msg.txn, &context));
        let (events, outcome) = match decided {
            Ok(decided) => decided,
            Err(rejection) => {
                let result = Err(match rejection {
                    KeyspaceRejection::KeyLimitReached { max } => LimitReached {
                        account: self.account.clone(),
                        limit: "max_keys",
                        what: "keys",
                        max,
                    }
                    .into(),
                    other => other.into(),
                });
                log_outcome(&span, &result);
                return self.journal.reply(reply, result);
            }
        };
        self.record(ctx, events, &msg.cmd, move |result| {
            let result = result.map(|revision| TxnDone { revision, outcome });
            log_outcome(&span, &result);
            reply.send(result);
        });
    }
}

impl Handler<DeleteRange> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: DeleteRange, ctx: &mut Context<Self>) {
        if !self.ready(ctx) {
            return self.later(ctx, msg);
        }
        self.journal.touch();
        let prev = if msg.prev_kv {
            self.state.range(&msg.range, 0).kvs
        } else {
            Vec::new()
        };
        self.delete(
            ctx,
            KeyspaceCommand::DeleteRange { range: msg.range },
            msg.cmd,
            prev,
            "delete",
            msg.reply,
        );
    }
}

impl Handler<DeleteLeaseKeys> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: DeleteLeaseKeys, ctx: &mut Context<Self>) {
        if !self.ready(ctx) {
            return self.later(ctx, msg);
        }
        self.journal.touch();
        let command = KeyspaceCommand::DeleteLeaseKeys {
            lease: msg.lease,
            cause: msg.cause,
        };
        self.delete(ctx, command, msg.cmd, Vec::new(), "delete-lease-keys", msg.reply);
    }
}

impl Handler<Range> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: Range, ctx: &mut Context<Self>) {
        if !self.ready(ctx) {
            return self.later(ctx, msg);
        }
        self.journal.touch();
        let done = RangeDone {
            revision: self.state.revision(),
            result: self.state.range_with(&msg.range, &msg.options),
        };
        self.journal.reply(msg.reply, Ok(done));
    }
}

impl Handler<LeaseKeys> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: LeaseKeys, ctx: &mut Context<Self>) {
        if !self.ready(ctx) {
            return self.later(ctx, msg);
        }
        self.journal.touch();
        let keys = self.state.lease_keys(msg.lease);
        self.journal.reply(msg.reply, Ok(keys));
    }
}

impl Handler<KeysOfLeases> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: KeysOfLeases, ctx: &mut Context<Self>) {
        if !self.ready(ctx) {
            return self.later(ctx, msg);
        }
        self.journal.touch();
        let keys = msg.leases.iter().map(|lease| self.state.lease_keys(*lease)).collect();
        self.journal.reply(msg.reply, Ok(keys));
    }
}

impl Handler<LeasesWithKeys> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: LeasesWithKeys, ctx: &mut Context<Self>) {
        if !self.ready(ctx) {
            return self.later(ctx, msg);
        }
        self.journal.touch();
        let leases = self.state.leases_with_keys();
        self.journal.reply(msg.reply, Ok(leases));
    }
}

impl Handler<TakeSnapshot> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: TakeSnapshot, ctx: &mut Context<Self>) {
        self.journal.touch();
        let version = self.journal.version();
        if self.loading || version == 0 || !self.snapshot.due_at(version, msg.every_events) {
            let _ = msg.reply.send(None);
            return;
        }
        // The state now is the state at `version` (events not yet durable
        // included), encoded here, handed out once they are durable; if
        // they fail, the reply is dropped with them.
        let encoded = crate::snapshot::encode(&self.state.snapshot());
        // Its maps are rebuilt with full nodes when due, on a turn of their
        // own: puts waiting meanwhile wait for one of the two, not both
        // (at 700,000 keys: encoding 188 ms, rebuilding 129 ms).
        ctx.notify(Compact);
        match encoded {
            Ok(bytes) => {
                self.snapshot = crate::snapshot::Mark {
                    at: version,
                    bytes: bytes.len() as u64,
                };
                let reply = msg.reply;
                self.journal.after_durable(move || {
                    let _ = reply.send(Some(Taken { version, bytes }));
                });
            }
            Err(e) => {
                tracing::warn!(account = %self.account, error = %e, "cannot encode the key space's snapshot");
                let _ = msg.reply.send(None);
            }
        }
    }
}

/// Rebuilds the key space's big maps with full nodes, if enough keys were
/// inserted since the last time (`Keyspace::compact`); sent by the actor
/// to itself after a snapshot.
#[derive(Message)]
#[rtype(result = "()")]
struct Compact;

impl Handler<Compact> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, _: Compact, _: &mut Context<Self>) {
        // While a read of the stream's tail holds the state, there is
        // nothing to rebuild here; the next snapshot asks again.
        if !self.loading {
            self.state.compact();
        }
    }
}

impl Handler<Follow> for KeyspaceActor {
    type Result = ();

    fn handle(&mut self, msg: Follow, ctx: &mut Context<Self>) {
        self.journal.touch();
        self.behind = self.behind.max(msg.version);
        // Usually not behind: the batch held only this actor's own events.
        if self.behind > self.journal.version() {
            if self.journal.is_settled() && !self.journal.is_failed() && !self.loading {
                self.fold_followed(std::slice::from_ref(&msg.events));
            } else if self.followed.len() < FOLLOWED_MAX {
                self.followed.push(msg.events);
            }
        }
        self.ready(ctx);
    }
}

/// How long a message waits before it is tried again while the actor has
/// an append in flight and other nodes' events to fold (a shared log).
const BEHIND_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

impl KeyspaceActor {
    /// Whether the actor holds every event other nodes appended that it
    /// has been told of. If not, it starts folding them when it can (no
    /// append of its own in flight: that one will conflict, or come
    /// before them) and the caller puts its message back.
    fn ready(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.loading {
            return false;
        }
        if self.behind <= self.journal.version() {
            self.followed.clear();
            self.rolled_back_at = None;
            return true;
        }
        if self.journal.is_settled() && !self.journal.is_failed() {
            let followed = std::mem::take(&mut self.followed);
            self.fold_followed(&followed);
            if self.behind <= self.journal.version() {
                self.rolled_back_at = None;
                return true;
            }
            if self.waits_for_follow() {
                return false;
            }
            self.rolled_back_at = None;
            let from = self.journal.version();
            let state = std::mem::take(&mut self.state);
            let loading = load_after(self.journal.store(), self.journal.stream().clone(), state, from, fold);
            self.loading = true;
            activate_with(self, ctx, loading, |act, state| {
                act.loading = false;
                act.state = state;
                act.publish(act.state.revision());
                act.keys.set(act.state.len());
            });
        }
        false
    }

    /// Another node appended to the stream first, up to version `actual`:
    /// puts back every event not yet acknowledged, newest first (their
    /// commands are answered with the conflict, and sent again), and folds
    /// the other node's events before the next command (see
    /// [`KeyspaceActor::ready`]). What a reload of the stream would have
    /// done, without reading it.
    fn roll_back(&mut self, actual: u64) -> bool {
        let Some(pending) = self.undo.as_mut() else {
            return false;
        };
        while let Some(command) = pending.pop_back() {
            for undo in command.into_iter().rev() {
                self.state.undo(undo);
            }
        }
        self.behind = self.behind.max(actual);
        self.rolled_back_at = Some(std::time::Instant::now());
        self.hub.metrics.keyspace_rollbacks.inc();
        true
    }

    /// Folds the events of a [`Follow`] that continue this actor's stream
    /// version (no append of its own may be in flight: its state is then
    /// the durable one). It stops at a gap or an event it cannot decode;
    /// [`KeyspaceActor::ready`] reads the rest from the store.
    fn fold_followed(&mut self, batches: &[crate::store::Batch]) {
        let before = self.journal.version();
        let mut version = before;
        let stream = self.journal.stream();
        let events = batches.iter().flat_map(|b| b.iter()).filter(|e| e.stream == *stream);
        for e in events.skip_while(|e| e.version <= before) {
            if e.version != version + 1 || fold(&mut self.state, e).is_err() {
                break;
            }
            version = e.version;
        }
        if version > before {
            self.journal.loaded(version);
            self.publish(self.state.revision());
            self.keys.set(self.state.len());
        }
    }

    /// Whether the actor rolled back less than [`FOLLOW_WAIT`] ago (and
    /// still lacks the winner's events).
    fn waits_for_follow(&self) -> bool {
        self.rolled_back_at.is_some_and(|at| at.elapsed() < FOLLOW_WAIT)
    }

    /// Puts `msg` back in the mailbox: right behind the fold that
    /// [`KeyspaceActor::ready`] started (which holds the mailbox), or after
    /// [`BEHIND_RETRY`] while an append is in flight or the actor waits
    /// for a [`Follow`].
    fn later<M>(&mut self, ctx: &mut Context<Self>, msg: M)
    where
        M: Message<Result = ()> + Send + 'static,
        Self: Handler<M>,
    {
        if self.journal.is_settled() && !self.waits_for_follow() {
            ctx.notify(msg);
        } else {
            ctx.notify_later(msg, BEHIND_RETRY);
        }
    }
}

/// Asks the account's key space to delete the keys of an ended `lease`,
/// answering `reply`. A deletion that conflicted with another node's
/// append (or whose key space stopped) is sent again to a reloaded key
/// space, a few times: the lease has ended, so its keys must go.
pub fn delete_lease_keys(
    hub: &Arc<Hub>,
    account: &AccountId,
    lease: LeaseId,
    cause: DeleteCause,
    cmd: Cmd,
    reply: Reply<Deleted>,
) {
    route_deletion(Arc::clone(hub), account.clone(), lease, cause, cmd, reply, 1);
}

/// Attempts at deleting an ended lease's keys (see [`delete_lease_keys`]).
const DELETE_ATTEMPTS: u32 = 8;

fn route_deletion(
    hub: Arc<Hub>,
    account: AccountId,
    lease: LeaseId,
    cause: DeleteCause,
    cmd: Cmd,
    reply: Reply<Deleted>,
    attempt: u32,
) {
    let again = (Arc::clone(&hub), account.clone(), cause.clone(), cmd.clone());
    let answer = Reply::new(move |result: Result<Deleted, CommandError>| match result {
        Err(e) if e.is_retryable() && attempt < DELETE_ATTEMPTS && again.0.store.health().is_ok() => {
            let (hub, account, cause, cmd) = again;
            tracing::debug!(lease = %lease, account = %account, attempt, error = %e, "deleting an ended lease's keys again");
            route_deletion(hub, account, lease, cause, cmd, reply, attempt + 1);
        }
        other => reply.send(other),
    });
    let msg = DeleteLeaseKeys {
        lease,
        cause,
        cmd,
        reply: answer,
    };
    if !hub.store.is_shared() {
        return hub.keyspaces.route(&hub, &account, Activation::Load, msg);
    }
    // On a shared log, other nodes' puts with the lease that came before
    // its end in the log must be in the key space first: the projections
    // apply everything up to the end (telling the key space of those puts,
    // `Follow`) before the deletion is sent; puts after it are the timers'
    // node's to clean up (`actors::follow`).
    let head = hub.store.head();
    actix_rt::spawn(async move {
        hub.projections.caught_up(head).await;
        hub.keyspaces.route(&hub, &account, Activation::Load, msg);
    });
}

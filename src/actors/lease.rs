//! The lease actor: owns one lease (stream `lease/{account}/{id}`).
//!
//! A lease need not have one: a grant with a server-chosen ID is appended
//! without an actor ([`grant_fresh`]), keep-alives never reach one, and an
//! expiry of a lease without one needs none ([`expire_idle`]).
//!
//! It is also the gate for everything that depends on the lease being live:
//!
//! - **put with a lease** comes here first; the actor checks the lease is
//!   live and forwards the put to the key space. Because the actor handles
//!   one message at a time, no revoke or expiry can slip between the check
//!   and the forward. A **txn** whose puts name this lease comes here the
//!   same way ([`TxnWithLeases`]); it is forwarded whether or not the lease
//!   is live, with the answer, because only the key space knows which
//!   branch runs (etcd refuses a dead lease only on the chosen path). A txn
//!   naming several leases visits their actors one after another; each but
//!   the last, having found its lease live, is *pinned* until the txn is
//!   answered: it holds revokes and expiries (and txns behind them) back
//!   till then, so no lease ends between its check and the key space
//!   having the txn;
//! - **revoke and expiry** append `LeaseRevoked`/`LeaseExpired`, and once that
//!   is durable forward `DeleteLeaseKeys` to the key space, which answers the
//!   caller after the deletions are durable. Puts this actor forwarded
//!   earlier are ahead of the delete in the key space's mailbox, so they are
//!   deleted too; later puts are refused here.
//!
//! If the server dies between the two appends, the keys are left on an ended
//! lease; start-up recovery (`server::recover`) deletes them before the
//! server takes requests, so no key stays attached to a dead lease.
//!
//! **Keep-alives do not come here.** They move the deadline in the expiry
//! queue (`Control::keep_alive`), without an event, so a passivated lease
//! stays passivated while it is kept alive. The actor reads the queue
//! whenever the deadline matters (a put, an expiry): once the queue has
//! applied this grant of the lease, its deadline and its *ending* mark are
//! the truth; before that, no keep-alive can have reached the grant and the
//! deadline the log implies is.

use std::sync::Arc;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message};
use chrono::{DateTime, Utc};
use tenure_events::{DeleteCause, LeaseEvent, LeaseId, Metadata, NewEvent, StreamId};
use tenure_projections::{GrantState, LeaseKey};

use super::entity::{self, Passivating};
use super::journal::{activate_from_log, journaled, submit, Journal};
use super::keyspace::{self, Deleted, PutDone};
use super::registry::{Activation, Entity};
use super::{command_span, log_outcome, Cmd, CommandError, Hub, Reply};
use crate::domain::keyspace::LeaseUpdate;
use crate::domain::lease::{Lease, LeaseCommand, LeaseRejection};
use crate::domain::Aggregate;
use crate::store::ExpectedVersion;
use uuid::Uuid;

pub struct LeaseActor {
    hub: Arc<Hub>,
    key: LeaseKey,
    state: Lease,
    /// The stream version of the lease's last `LeaseGranted` (which grant
    /// of this ID the expiry queue's entry must be to speak for it).
    granted: Option<u64>,
    journal: Journal<Self>,
    load: bool,
    /// Start from the expiry queue's record of the grant if it has one
    /// ([`LeaseActor::load_projected`]).
    projected: bool,
    /// Txns this actor found the lease live for and forwarded, not yet
    /// answered ([`TxnWithLeases`]): while any is, the lease cannot end.
    pins: usize,
    /// Revokes and expiries that came while pinned, handled once unpinned.
    deferred: Vec<Deferred>,
    /// A [`Stale`] notice that came while pinned (its version).
    stale_while_pinned: Option<u64>,
}

/// A message that would end the lease, held while the lease is pinned.
enum Deferred {
    Revoke(Revoke),
    Expire(Expire),
    /// A txn that came after one of those.
    Txn(TxnWithLeases),
}

/// A grant's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    pub lease: LeaseId,
    pub ttl_s: i64,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Grant {
    pub ttl_s: i64,
    pub cmd: Cmd,
    pub reply: Reply<Granted>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Revoke {
    pub cmd: Cmd,
    pub reply: Reply<Deleted>,
}

/// From the expiry driver: end the grant of the lease recorded at stream
/// version `granted`, whose deadline (keep-alives included) has passed. The
/// driver has marked it *ending* in the expiry queue, so it cannot be
/// renewed any more.
///
/// It also carries what the queue folded of that grant (`ttl_s`,
/// `refreshed`): when the lease's actor is not active, [`expire_idle`]
/// ends the lease from that, taking its stream to be at version
/// `granted`, instead of activating an actor that reads the stream. That
/// is what reading it gives whenever the stream ends with that grant; if
/// it holds more (a revoke not yet applied to the queue, an old log's
/// keep-alive), the `LeaseExpired` append, expecting version `granted`,
/// conflicts and nothing is written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Expire {
    pub granted: u64,
    pub deadline: DateTime<Utc>,
    pub ttl_s: i64,
    pub refreshed: DateTime<Utc>,
    pub reply: Reply<Deleted>,
}

/// A put of a key with this lease; forwarded to the key space if the lease is live.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PutWithLease {
    pub key: tenure_events::Bytes,
    /// `None`: keep the key's value (etcd's `ignore_value`).
    pub value: Option<tenure_events::Bytes>,
    pub prev_kv: bool,
    pub cmd: Cmd,
    pub reply: Reply<PutDone>,
}

impl Entity for LeaseActor {
    type Key = LeaseKey;

    fn activate(key: LeaseKey, activation: Activation, hub: Arc<Hub>) -> LeaseActor {
        let journal = Journal::new(Arc::clone(&hub.store), StreamId::lease(&key.account, key.lease));
        LeaseActor {
            projected: activation == Activation::Projected && !hub.store.is_shared(),
            hub,
            key,
            state: Lease::default(),
            granted: None,
            journal,
            load: activation != Activation::Fresh,
            pins: 0,
            deferred: Vec::new(),
            stale_while_pinned: None,
        }
    }
}

impl Actor for LeaseActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        entity::schedule_passivation(self, ctx);
        if self.projected {
            self.load_projected(ctx);
        } else if self.load {
            self.load_from_log(ctx);
        }
    }
}

journaled!(LeaseActor, registry: leases, key: key);

impl Passivating for LeaseActor {
    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// No live lease: nothing worth keeping in memory.
    fn holds_nothing(&self) -> bool {
        !matches!(self.state, Lease::Live { .. })
    }

    fn leave_registry(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.pins > 0 {
            return false;
        }
        let handled = self.journal.handled();
        self.hub.leases.try_passivate(&self.key, &ctx.address(), handled)
    }
}

impl LeaseActor {
    fn passivate_if_idle(&mut self, ctx: &mut Context<Self>) {
        entity::passivate_if_idle(self, ctx);
    }

    /// Starts from the expiry queue's record of the grant instead of the
    /// stream, if the queue holds the lease once it has applied everything
    /// durable when the actor started; else reads the stream. Holds the
    /// mailbox until the state is in place.
    ///
    /// Reading the stream would give the same whenever it ends with that
    /// grant, and a put with a lease right after its grant (the etcd
    /// pattern) would otherwise read it, since a grant starts no actor.
    /// Nothing can end the lease unseen: an actor of the lease that
    /// stopped had its appends durable before (so before this one started,
    /// and the queue has applied them), none other is active (this one is
    /// starting), and an expiry without an actor marks the queue's entry
    /// *ending* first, which [`LeaseActor::is_live`] reads. Only on an
    /// embedded store: on a shared one, other nodes' appends need not be
    /// durable here yet. If the stream holds more than the grant (an old
    /// log's keep-alive events), this actor's first append to it
    /// conflicts, and the command is sent again to an actor that reads
    /// the stream.
    fn load_projected(&mut self, ctx: &mut Context<Self>) {
        let head = self.hub.store.head();
        let hub = Arc::clone(&self.hub);
        let caught_up = async move { hub.projections.caught_up(head).await };
        ctx.wait(actix::fut::wrap_future::<_, Self>(caught_up).map(|(), act, ctx| {
            let record = act.hub.projections.expiry.lock().grant_record(&act.key);
            match record {
                Some(record) => {
                    act.state = live_from_queue(act.key.lease, record.ttl_s, record.refreshed, act.hub.config.epoch);
                    act.granted = Some(record.version);
                    act.journal.loaded(record.version);
                }
                None => act.load_from_log(ctx),
            }
        }));
    }

    /// Reads the stream and folds it into the state, holding the mailbox
    /// until it is in place.
    fn load_from_log(&mut self, ctx: &mut Context<Self>) {
        let floor = self.hub.config.epoch;
        activate_from_log(
            self,
            ctx,
            (Lease::default(), None),
            |(state, granted), e| {
                if let Some(event) = e.decode_as::<LeaseEvent>()? {
                    if matches!(event, LeaseEvent::Granted(_)) {
                        *granted = Some(e.version);
                    }
                    state.evolve(&event, e.time);
                }
                Ok(())
            },
            move |act, (mut state, granted)| {
                state.resume(floor);
                act.state = state;
                act.granted = granted;
            },
        );
    }

    /// Live for clients at `now` (a put with the lease is accepted): the
    /// expiry queue decides once it has applied this grant, since
    /// keep-alives move the deadline there and an expiry under way is
    /// marked there; until then the deadline the log implies does.
    fn is_live(&self, now: DateTime<Utc>) -> bool {
        let (Lease::Live { .. }, Some(granted)) = (&self.state, self.granted) else {
            return false;
        };
        match self.hub.projections.expiry.lock().grant(&self.key, granted) {
            GrantState::Unseen => self.state.is_live(now),
            GrantState::Live { deadline } => now < deadline,
            GrantState::Ending => false,
        }
    }

    /// Decides `command`, applies and appends its events, and calls `done`
    /// with the outcome once the append is durable. A rejection is passed to
    /// `done` after the appends in flight are durable.
    fn execute<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        command: LeaseCommand,
        meta: &Metadata,
        done: impl FnOnce(
                &mut Self,
                &mut Context<Self>,
                Result<Vec<NewEvent>, CommandError>,
            ) -> Option<(Reply<T>, Result<T, CommandError>)>
            + 'static,
    ) {
        let now = self.hub.clock.now();
        match self.state.decide(command, now) {
            Err(rejection) => {
                if let Some((reply, result)) = done(self, ctx, Err(rejection.into())) {
                    self.journal.reply(reply, result);
                }
            }
            Ok(events) => {
                let first_version = self.journal.version() + 1;
                let new_events: Vec<NewEvent> = events
                    .iter()
                    .zip(first_version..)
                    .map(|(e, version)| {
                        if matches!(e, LeaseEvent::Granted(_)) {
                            self.granted = Some(version);
                        }
                        self.state.evolve(e, now);
                        NewEvent::new(e, meta, now)
                    })
                    .collect();
                let written = new_events.clone();
                let grants = events.iter().any(|e| matches!(e, LeaseEvent::Granted(_)));
                submit(self, ctx, new_events, move |act, ctx, result| {
                    let result = result.map(|_| written).map_err(|e| match e {
                        // A grant's stream was written first by someone
                        // else (a fresh actor's stream existed after all,
                        // or another node granted the ID): the ID is taken.
                        crate::store::AppendError::Conflict { .. } if grants => {
                            LeaseRejection::AlreadyExists(act.key.lease).into()
                        }
                        other => CommandError::from(other),
                    });
                    if let Some((reply, result)) = done(act, ctx, result) {
                        reply.send(result);
                    }
                    act.passivate_if_idle(ctx);
                });
            }
        }
        self.passivate_if_idle(ctx);
    }

    /// After the lease ended (durably), deletes its keys; the key space
    /// answers `reply`.
    fn delete_keys(&self, ended: &NewEvent, cause: DeleteCause, span: tracing::Span, reply: Reply<Deleted>) {
        delete_keys(
            &self.hub,
            &self.key,
            (ended.request_id, ended.event_id),
            cause,
            span,
            reply,
        );
    }
}

/// After the lease `key` ended (durably) by the event `ended` (its request
/// and event IDs), deletes its keys; the key space answers `reply`.
fn delete_keys(
    hub: &Arc<Hub>,
    key: &LeaseKey,
    (request_id, event_id): (Option<Uuid>, Uuid),
    cause: DeleteCause,
    span: tracing::Span,
    reply: Reply<Deleted>,
) {
    let mut meta = Metadata::new(key.account.clone());
    meta.request_id = request_id;
    meta.causation_id = Some(event_id);
    let cmd = Cmd { meta, span };
    keyspace::delete_lease_keys(hub, &key.account, key.lease, cause, cmd, reply);
}

/// Counts an expiry in the metrics, with how long after its deadline the
/// lease ended (at `ended`).
fn count_expiry(hub: &Hub, ended: DateTime<Utc>, deadline: Option<DateTime<Utc>>) {
    let leases = &hub.metrics.leases;
    leases.expired.inc();
    if let Some(deadline) = deadline {
        let lag = (ended - deadline).to_std().unwrap_or_default();
        leases.expiry_lag.observe(lag.as_secs_f64());
    }
}

/// The lease as folding its stream up to a grant the expiry queue holds
/// gives (the queue's TTL and grant time), resumed at this process's start.
fn live_from_queue(lease: LeaseId, ttl_s: i64, refreshed: DateTime<Utc>, epoch: DateTime<Utc>) -> Lease {
    let mut state = Lease::Live {
        id: lease,
        ttl_s,
        refreshed_at: refreshed,
    };
    state.resume(epoch);
    state
}

/// A grant's answer, from the lease's state once the grant is applied.
fn granted(state: &Lease) -> Result<Granted, CommandError> {
    match *state {
        Lease::Live { id, ttl_s, .. } => Ok(Granted { lease: id, ttl_s }),
        _ => Err(CommandError::Unavailable("lease ended while being granted".into())),
    }
}

/// A lease [`expire_idle`] ended: its `LeaseExpired` is durable, its keys
/// are still to delete ([`Expired::delete_keys`]).
pub struct Expired {
    key: LeaseKey,
    /// The `LeaseExpired` event's ID and time.
    event_id: Uuid,
    time: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    reply: Reply<Deleted>,
}

impl Expired {
    /// Deletes the lease's keys; the key space answers the expiry's reply.
    pub fn delete_keys(self, hub: &Arc<Hub>) {
        count_expiry(hub, self.time, self.deadline);
        let lease = self.key.lease;
        let span = tracing::info_span!("command", command = "expire", lease = %lease, account = %self.key.account);
        let ended = (None, self.event_id);
        delete_keys(
            hub,
            &self.key,
            ended,
            DeleteCause::LeaseExpired { lease },
            span,
            self.reply,
        );
    }
}

/// Ends the lease `key` whose actor is not active (the registry handed
/// `msg` back, see [`Registry::route_if_active`]) without activating one,
/// which would cost more than the rest of the expiry (an actor started,
/// passivated and freed for each of a million expiring leases).
///
/// It decides on the state `msg` carries and appends `LeaseExpired`
/// expecting the stream at version `msg.granted`, what an actor reading
/// the stream would find whenever the stream ends with that grant: if the
/// stream holds more (a revoke, an old log's keep-alive), the append
/// conflicts, nothing is written, and `msg`'s reply hears of the conflict.
/// Nothing else about the lease can change meanwhile: the expiry driver marked the lease *ending* in the expiry
/// queue before, so a keep-alive finds it gone and an actor activated now
/// (for a put or a txn) finds it not live; a revoke's actor and this
/// append both expect the grant's version, and only one of them is
/// written. Puts an earlier actor forwarded are already in the key space's
/// mailbox, ahead of the deletion that follows.
///
/// Once the append is durable, `expired` gets the lease (on the store's
/// thread: it should only pass it on); its keys are still to delete.
///
/// [`Registry::route_if_active`]: super::registry::Registry::route_if_active
pub fn expire_idle(hub: &Arc<Hub>, key: LeaseKey, msg: Expire, expired: impl FnOnce(Expired) + Send + 'static) {
    let state = live_from_queue(key.lease, msg.ttl_s, msg.refreshed, hub.config.epoch);
    let deadline = state.deadline().map(|logged| logged.max(msg.deadline));
    let now = hub.clock.now();
    let command = LeaseCommand::Expire {
        lease: key.lease,
        deadline: msg.deadline,
    };
    let event = match state.decide(command, now).map(|events| events.into_iter().next()) {
        Ok(Some(event)) => NewEvent::new(&event, &Metadata::new(key.account.clone()), now),
        Ok(None) => return msg.reply.send(Err(LeaseRejection::NotFound(key.lease).into())),
        Err(rejection) => return msg.reply.send(Err(rejection.into())),
    };
    let stream = StreamId::lease(&key.account, key.lease);
    let (expected, reply) = (ExpectedVersion::Exact(msg.granted), msg.reply);
    let (event_id, time) = (event.event_id, event.time);
    hub.store.append_then(
        stream,
        expected,
        vec![event],
        Box::new(move |result| match result {
            Ok(_) => expired(Expired {
                key,
                event_id,
                time,
                deadline,
                reply,
            }),
            Err(e) => reply.send(Err(e.into())),
        }),
    );
}

/// Grants the lease `key`, a server-chosen ID whose stream should not
/// exist yet, without starting an actor when none is active for it (the
/// registry hands `msg` back, see [`Registry::route_if_active`]): it
/// decides on a lease never granted and appends `LeaseGranted` expecting
/// an empty stream, so if the stream exists after all the append
/// conflicts and the grant answers "already exists". An actor started
/// for this ID meanwhile (a client that named the ID before its grant
/// was answered) may have read the stream empty: it is told the stream
/// moved on ([`Stale`]) before the grant is answered, so no one who heard
/// of the grant meets an actor that does not know it.
///
/// A grant is most of what a lease ever writes (keep-alives are not
/// events, an expiry needs no actor either): a lease granted here may
/// never start an actor at all. The reply is sent from the store's
/// thread once the append is durable.
///
/// [`Registry::route_if_active`]: super::registry::Registry::route_if_active
pub fn grant_fresh(hub: &Arc<Hub>, key: LeaseKey, msg: Grant) {
    let Err(Grant { ttl_s, cmd, reply }) = hub.leases.route_if_active(&key, msg) else {
        return; // an active actor decides
    };
    let stream = StreamId::lease(&key.account, key.lease);
    let span = command_span(&cmd, "grant", &stream);
    let now = hub.clock.now();
    let command = LeaseCommand::Grant {
        lease: key.lease,
        ttl_s,
        min_ttl_s: hub.config.min_ttl_s,
    };
    let mut state = Lease::default();
    let decided = state
        .decide(command, now)
        .map_err(CommandError::from)
        .and_then(|events| {
            let new_events: Vec<NewEvent> = events
                .iter()
                .map(|e| {
                    state.evolve(e, now);
                    NewEvent::new(e, &cmd.meta, now)
                })
                .collect();
            granted(&state).map(|answer| (answer, new_events))
        });
    let (answer, new_events) = match decided {
        Ok(decided) => decided,
        Err(e) => {
            let result = Err(e);
            log_outcome(&span, &result);
            return reply.send(result);
        }
    };
    let version = new_events.len() as u64;
    let owned = Arc::clone(hub);
    hub.store.append_then(
        stream,
        ExpectedVersion::Exact(0),
        new_events,
        Box::new(move |result| {
            let result = match result {
                Ok(_) => {
                    owned.leases.tell_if_active(&key, Stale { version });
                    owned.metrics.leases.granted.inc();
                    Ok(answer)
                }
                Err(crate::store::AppendError::Conflict { .. }) => Err(LeaseRejection::AlreadyExists(key.lease).into()),
                Err(e) => Err(CommandError::from(e)),
            };
            log_outcome(&span, &result);
            reply.send(result);
        }),
    );
}

impl Handler<Grant> for LeaseActor {
    type Result = ();

    fn handle(&mut self, msg: Grant, ctx: &mut Context<Self>) {
        self.journal.touch();
        let command = LeaseCommand::Grant {
            lease: self.key.lease,
            ttl_s: msg.ttl_s,
            min_ttl_s: self.hub.config.min_ttl_s,
        };
        let (span, reply) = (command_span(&msg.cmd, "grant", self.journal.stream()), msg.reply);
        self.execute(ctx, command, &msg.cmd.meta, move |act, _, result| {
            let result = result.and_then(|_| granted(&act.state));
            if result.is_ok() {
                act.hub.metrics.leases.granted.inc();
            }
            log_outcome(&span, &result);
            Some((reply, result))
        });
    }
}

impl Handler<Revoke> for LeaseActor {
    type Result = ();

    fn handle(&mut self, msg: Revoke, ctx: &mut Context<Self>) {
        self.journal.touch();
        if self.pins > 0 {
            return self.deferred.push(Deferred::Revoke(msg));
        }
        let (span, reply) = (command_span(&msg.cmd, "revoke", self.journal.stream()), msg.reply);
        let lease = self.key.lease;
        self.execute(
            ctx,
            LeaseCommand::Revoke { lease },
            &msg.cmd.meta,
            move |act, _, result| match result {
                Ok(events) => {
                    log_outcome(&span, &Ok(()));
                    act.hub.metrics.leases.revoked.inc();
                    if let Some(ended) = events.first() {
                        act.delete_keys(ended, DeleteCause::LeaseRevoked { lease }, span, reply);
                    }
                    None
                }
                Err(e) => {
                    let result = Err(e);
                    log_outcome(&span, &result);
                    Some((reply, result))
                }
            },
        );
    }
}

impl Handler<Expire> for LeaseActor {
    type Result = ();

    fn handle(&mut self, msg: Expire, ctx: &mut Context<Self>) {
        self.journal.touch();
        if self.pins > 0 {
            return self.deferred.push(Deferred::Expire(msg));
        }
        let lease = self.key.lease;
        let meta = Metadata::new(self.key.account.clone());
        let span = tracing::info_span!("command", command = "expire", entity = %self.journal.stream());
        let reply = msg.reply;
        if self.granted != Some(msg.granted) {
            // The grant the driver meant has ended (and the ID may have been
            // granted again): the log says so, and the queue follows.
            self.journal.reply(reply, Err(LeaseRejection::NotFound(lease).into()));
            self.passivate_if_idle(ctx);
            return;
        }
        let deadline = self.state.deadline().map(|logged| logged.max(msg.deadline));
        self.execute(
            ctx,
            LeaseCommand::Expire {
                lease,
                deadline: msg.deadline,
            },
            &meta,
            move |act, _, result| match result {
                Ok(events) => {
                    tracing::debug!(parent: &span, outcome = "expired");
                    if let Some(ended) = events.first() {
                        count_expiry(&act.hub, ended.time, deadline);
                        act.delete_keys(ended, DeleteCause::LeaseExpired { lease }, span, reply);
                    }
                    None
                }
                Err(e) => Some((reply, Err(e))),
            },
        );
    }
}

/// A txn whose puts attach keys to `leases` (this one first): each lease's
/// actor in turn checks its lease, and the last forwards the txn to the
/// key space with the leases found live. Each actor that found its lease
/// live is **pinned** until the txn is answered: it holds any revoke or
/// expiry back till then, so that lease's key deletion comes after the
/// txn in the key space's mailbox, as a put's does (a single lease's
/// actor forwards to the key space itself, so the pin costs nothing more).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TxnWithLeases {
    pub txn: crate::domain::keyspace::txn::Txn,
    /// The leases still to check, in order (each of this account).
    pub leases: Vec<LeaseId>,
    /// The leases found live so far.
    pub live: Vec<LeaseId>,
    pub cmd: Cmd,
    pub reply: Reply<keyspace::TxnDone>,
}

/// A txn this actor was pinned for has been answered.
#[derive(Message)]
#[rtype(result = "()")]
struct Unpin;

impl Handler<TxnWithLeases> for LeaseActor {
    type Result = ();

    fn handle(&mut self, mut msg: TxnWithLeases, ctx: &mut Context<Self>) {
        self.journal.touch();
        if !self.deferred.is_empty() {
            // A revoke or expiry is waiting: the txn comes after it (and
            // cannot keep it waiting for ever).
            return self.deferred.push(Deferred::Txn(msg));
        }
        let mut reply = msg.reply;
        let next = msg.leases.iter().position(|l| *l != self.key.lease);
        if self.is_live(self.hub.clock.now()) {
            msg.live.push(self.key.lease);
            // The last actor forwards to the key space itself: its
            // mailbox keeps the order, as for a put.
            if next.is_some() {
                self.pins += 1;
                let me = ctx.address();
                // Sent when the txn is answered, or its reply dropped.
                reply = Reply::new(move |result| {
                    me.do_send(Unpin);
                    reply.send(result);
                });
            }
        }
        let account = self.key.account.clone();
        match next {
            Some(next) => {
                let next_key = LeaseKey {
                    account: account.clone(),
                    lease: msg.leases[next],
                };
                let forward = TxnWithLeases {
                    txn: msg.txn,
                    leases: msg.leases.split_off(next),
                    live: msg.live,
                    cmd: msg.cmd,
                    reply,
                };
                self.hub.leases.route(&self.hub, &next_key, Activation::Load, forward);
            }
            None => {
                let txn = keyspace::Txn {
                    txn: msg.txn,
                    live_leases: msg.live,
                    cmd: msg.cmd,
                    reply,
                };
                self.hub.keyspaces.route(&self.hub, &account, Activation::Load, txn);
            }
        }
        if self.pins == 0 {
            self.passivate_if_idle(ctx);
        }
    }
}

impl Handler<Unpin> for LeaseActor {
    type Result = ();

    fn handle(&mut self, _: Unpin, ctx: &mut Context<Self>) {
        self.pins = self.pins.saturating_sub(1);
        if self.pins > 0 {
            return;
        }
        let deferred = std::mem::take(&mut self.deferred);
        let stale = self.stale_while_pinned.take();
        self.journal
            .handled_again(deferred.len() + usize::from(stale.is_some()));
        for deferred in deferred {
            match deferred {
                Deferred::Revoke(msg) => ctx.notify(msg),
                Deferred::Expire(msg) => ctx.notify(msg),
                Deferred::Txn(msg) => ctx.notify(msg),
            }
        }
        if let Some(version) = stale {
            ctx.notify(Stale { version });
        }
    }
}

impl Handler<PutWithLease> for LeaseActor {
    type Result = ();

    fn handle(&mut self, msg: PutWithLease, ctx: &mut Context<Self>) {
        self.journal.touch();
        if !self.is_live(self.hub.clock.now()) {
            let result = Err(LeaseRejection::NotFound(self.key.lease).into());
            log_outcome(&command_span(&msg.cmd, "put", self.journal.stream()), &result);
            self.journal.reply(msg.reply, result);
            self.passivate_if_idle(ctx);
            return;
        }
        let put = keyspace::Put {
            key: msg.key,
            value: msg.value,
            lease: LeaseUpdate::Set(Some(self.key.lease)),
            prev_kv: msg.prev_kv,
            cmd: msg.cmd,
            reply: msg.reply,
        };
        self.hub
            .keyspaces
            .route(&self.hub, &self.key.account, Activation::Load, put);
    }
}

/// The lease's stream was written up to `version` without this actor
/// (another node on a shared log, or [`grant_fresh`]): an actor that has
/// not seen it stops, if nothing of its own is in flight (that would
/// conflict), so the next command loads the lease as the log has it; if
/// messages are on their way to it, it reads its stream again first.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stale {
    pub version: u64,
}

impl Handler<Stale> for LeaseActor {
    type Result = ();

    fn handle(&mut self, msg: Stale, ctx: &mut Context<Self>) {
        self.journal.touch();
        if self.pins > 0 {
            self.stale_while_pinned = self.stale_while_pinned.max(Some(msg.version));
            return;
        }
        if msg.version <= self.journal.version() || !self.journal.is_settled() {
            return; // up to date, or an append in flight will conflict
        }
        if self.leave_registry(ctx) {
            actix::ActorContext::stop(ctx);
        } else {
            // Messages are on their way to this actor: it reads the
            // stream again before it handles them.
            self.load_from_log(ctx);
        }
    }
}

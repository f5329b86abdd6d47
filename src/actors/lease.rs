//! The lease actor: owns one lease (stream `lease/{account}/{id}`).
//!
//! It is also the gate for everything that depends on the lease being live:
//!
//! - **put with a lease** comes here first; the actor checks the lease is
//!   live and forwards the put to the key space. Because the actor handles
//!   one message at a time, no revoke or expiry can slip between the check
//!   and the forward;
//! - **revoke and expiry** append `LeaseRevoked`/`LeaseExpired`, and once that
//!   is durable forward `DeleteLeaseKeys` to the key space, which answers the
//!   caller after the deletions are durable. Puts this actor forwarded
//!   earlier are ahead of the delete in the key space's mailbox, so they are
//!   deleted too; later puts are refused here.
//!
//! If the server dies between the two appends, the keys are left on an ended
//! lease; start-up recovery (`server::recover`) deletes them before the
//! server takes requests, so no key stays attached to a dead lease.

use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use tenure_events::{DeleteCause, LeaseEvent, LeaseId, Metadata, NewEvent, StreamId};
use tenure_projections::LeaseKey;

use super::entity::{self, Passivating};
use super::journal::{activate_from_log, journaled, submit, Journal};
use super::keyspace::{self, Deleted, PutDone};
use super::registry::{Activation, Entity};
use super::{command_span, log_outcome, Cmd, CommandError, Hub, Reply};
use crate::domain::keyspace::LeaseUpdate;
use crate::domain::lease::{Lease, LeaseCommand, LeaseRejection, TimeToLive};
use crate::domain::Aggregate;

pub struct LeaseActor {
    hub: Arc<Hub>,
    key: LeaseKey,
    state: Lease,
    journal: Journal<Self>,
    load: bool,
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

/// Answers the lease's granted TTL.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KeepAlive {
    pub cmd: Cmd,
    pub reply: Reply<i64>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Revoke {
    pub cmd: Cmd,
    pub reply: Reply<Deleted>,
}

/// From the expiry driver: end the lease if its deadline has passed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Expire {
    pub reply: Reply<Deleted>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct GetTimeToLive {
    pub reply: Reply<TimeToLive>,
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
            hub,
            key,
            state: Lease::default(),
            journal,
            load: activation == Activation::Load,
        }
    }
}

impl Actor for LeaseActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        entity::schedule_passivation(self, ctx);
        if self.load {
            let floor = self.hub.config.epoch;
            activate_from_log(
                self,
                ctx,
                Lease::default(),
                |state, e| {
                    if let Some(event) = e.decode_as::<LeaseEvent>()? {
                        state.evolve(&event, e.time);
                    }
                    Ok(())
                },
                move |act, mut state| {
                    state.resume(floor);
                    act.state = state;
                },
            );
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
        let handled = self.journal.handled();
        self.hub.leases.try_passivate(&self.key, &ctx.address(), handled)
    }
}

impl LeaseActor {
    fn passivate_if_idle(&mut self, ctx: &mut Context<Self>) {
        entity::passivate_if_idle(self, ctx);
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
                let new_events: Vec<NewEvent> = events
                    .iter()
                    .map(|e| {
                        self.state.evolve(e, now);
                        NewEvent::new(e, meta, now)
                    })
                    .collect();
                let written = new_events.clone();
                submit(self, ctx, new_events, move |act, ctx, result| {
                    let result = result.map(|_| written).map_err(|e| match e {
                        // A fresh actor's stream existed after all: the ID is taken.
                        crate::store::AppendError::Conflict { .. } => {
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
        let mut meta = Metadata::new(self.key.account.clone());
        meta.request_id = ended.request_id;
        meta.causation_id = Some(ended.event_id);
        let msg = keyspace::DeleteLeaseKeys {
            lease: self.key.lease,
            cause,
            cmd: Cmd { meta, span },
            reply,
        };
        self.hub
            .keyspaces
            .route(&self.hub, &self.key.account, Activation::Load, msg);
    }
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
            let result = result.and_then(|_| match act.state {
                Lease::Live { id, ttl_s, .. } => Ok(Granted { lease: id, ttl_s }),
                _ => Err(CommandError::Unavailable("lease ended while being granted".into())),
            });
            if result.is_ok() {
                act.hub.metrics.leases.granted.inc();
            }
            log_outcome(&span, &result);
            Some((reply, result))
        });
    }
}

impl Handler<KeepAlive> for LeaseActor {
    type Result = ();

    fn handle(&mut self, msg: KeepAlive, ctx: &mut Context<Self>) {
        self.journal.touch();
        let (span, reply) = (command_span(&msg.cmd, "keep-alive", self.journal.stream()), msg.reply);
        self.execute(
            ctx,
            LeaseCommand::KeepAlive { lease: self.key.lease },
            &msg.cmd.meta,
            move |act, _, result| {
                let result = result.and_then(|_| match act.state {
                    Lease::Live { ttl_s, .. } => Ok(ttl_s),
                    _ => Err(LeaseRejection::NotFound(act.key.lease).into()),
                });
                if result.is_ok() {
                    act.hub.metrics.leases.renewed.inc();
                }
                log_outcome(&span, &result);
                Some((reply, result))
            },
        );
    }
}

impl Handler<Revoke> for LeaseActor {
    type Result = ();

    fn handle(&mut self, msg: Revoke, ctx: &mut Context<Self>) {
        self.journal.touch();
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
        let lease = self.key.lease;
        let meta = Metadata::new(self.key.account.clone());
        let span = tracing::info_span!("command", command = "expire", entity = %self.journal.stream());
        let reply = msg.reply;
        let deadline = self.state.deadline();
        self.execute(
            ctx,
            LeaseCommand::Expire { lease },
            &meta,
            move |act, _, result| match result {
                Ok(events) => {
                    tracing::debug!(parent: &span, outcome = "expired");
                    let leases = &act.hub.metrics.leases;
                    leases.expired.inc();
                    if let (Some(ended), Some(deadline)) = (events.first(), deadline) {
                        let lag = (ended.time - deadline).to_std().unwrap_or_default();
                        leases.expiry_lag.observe(lag.as_secs_f64());
                    }
                    if let Some(ended) = events.first() {
                        act.delete_keys(ended, DeleteCause::LeaseExpired { lease }, span, reply);
                    }
                    None
                }
                Err(e) => Some((reply, Err(e))),
            },
        );
    }
}

impl Handler<GetTimeToLive> for LeaseActor {
    type Result = ();

    fn handle(&mut self, msg: GetTimeToLive, ctx: &mut Context<Self>) {
        self.journal.touch();
        let ttl = self.state.time_to_live(self.hub.clock.now());
        let result = ttl.ok_or_else(|| LeaseRejection::NotFound(self.key.lease).into());
        self.journal.reply(msg.reply, result);
        self.passivate_if_idle(ctx);
    }
}

impl Handler<PutWithLease> for LeaseActor {
    type Result = ();

    fn handle(&mut self, msg: PutWithLease, ctx: &mut Context<Self>) {
        self.journal.touch();
        if !self.state.is_live(self.hub.clock.now()) {
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

//! The workload actor: owns one workload reservation (stream
//! `workload/{uuid}`): its creation (signature checked), the node's
//! results, and its deletion by its owner or by expiry.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};
use tenure_events::{NewEvent, StreamId, WorkloadEvent};
use uuid::Uuid;

use super::journal::{activate_from_log, journaled, submit, Journal};
use super::registry::{Activation, Entity};
use super::{command_span, log_outcome, Cmd, CommandError, Hub, Reply};
use crate::domain::workload::{WorkloadCommand, WorkloadState};
use crate::domain::Aggregate;

pub struct WorkloadActor {
    hub: Arc<Hub>,
    id: Uuid,
    state: WorkloadState,
    journal: Journal<Self>,
    load: bool,
}

/// Carries out one command; answers how many events it recorded once they
/// are durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Execute {
    pub command: WorkloadCommand,
    pub cmd: Cmd,
    pub reply: Reply<usize>,
}

impl Entity for WorkloadActor {
    type Key = Uuid;

    fn activate(id: Uuid, activation: Activation, hub: Arc<Hub>) -> WorkloadActor {
        let journal = Journal::new(Arc::clone(&hub.store), StreamId::workload(id));
        WorkloadActor {
            hub,
            id,
            state: WorkloadState::default(),
            journal,
            load: activation == Activation::Load,
        }
    }
}

impl Actor for WorkloadActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.hub.config.passivate_after / 2).clamp(Duration::from_millis(10), Duration::from_secs(30));
        ctx.run_interval(every, |act, ctx| act.passivate_if_idle(ctx));
        if self.load {
            activate_from_log(
                self,
                ctx,
                WorkloadState::default(),
                |state, e| {
                    if let Some(event) = e.decode_as::<WorkloadEvent>()? {
                        state.evolve(&event, e.time);
                    }
                    Ok(())
                },
                |act, state| act.state = state,
            );
        }
    }
}

journaled!(WorkloadActor, registry: workloads, key: id);

impl WorkloadActor {
    /// Reservations are read from the projection, so an idle actor goes.
    fn passivate_if_idle(&mut self, ctx: &mut Context<Self>) {
        if !self.journal.is_settled() || self.journal.is_failed() {
            return;
        }
        let absent = self.state == WorkloadState::Absent;
        if (absent || self.journal.idle_for() >= self.hub.config.passivate_after)
            && self
                .hub
                .workloads
                .try_passivate(&self.id, &ctx.address(), self.journal.handled())
        {
            ctx.stop();
        }
    }
}

impl Handler<Execute> for WorkloadActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        self.journal.touch();
        let span = command_span(&msg.cmd, "workload", self.journal.stream());
        let now = self.hub.clock.now();
        let reply = msg.reply;
        let events = match self.state.decide(msg.command, now) {
            Ok(events) => events,
            Err(rejection) => {
                let result = Err(rejection.into());
                log_outcome(&span, &result);
                self.journal.reply(reply, result);
                return;
            }
        };
        if events.is_empty() {
            self.journal.reply(reply, Ok(0));
            return;
        }
        let count = events.len();
        let new_events: Vec<NewEvent> = events
            .iter()
            .map(|e| {
                self.state.evolve(e, now);
                NewEvent::new(e, &msg.cmd.meta, now)
            })
            .collect();
        submit(self, ctx, new_events, move |_, _, result| {
            let result = result.map(|_| count).map_err(CommandError::from);
            log_outcome(&span, &result);
            reply.send(result);
        });
    }
}

//! The workload actor: owns one workload reservation (stream
//! `workload/{uuid}`): its creation (signature checked), the node's
//! results, and its deletion by its owner or by expiry.

use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use tenure_events::StreamId;
use uuid::Uuid;

use super::entity::{self, AggregateActor, Passivating};
use super::journal::{journaled, Journal};
use super::registry::{Activation, Entity};
use super::{Cmd, Hub, Reply};
use crate::domain::workload::{WorkloadCommand, WorkloadState};

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
            load: activation != Activation::Fresh,
        }
    }
}

impl Actor for WorkloadActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        entity::schedule_passivation(self, ctx);
        if self.load {
            entity::load(self, ctx);
        }
    }
}

journaled!(WorkloadActor, registry: workloads, key: id);

impl AggregateActor for WorkloadActor {
    type State = WorkloadState;

    fn state(&mut self) -> &mut WorkloadState {
        &mut self.state
    }

    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.hub.clock.now()
    }
}

impl Passivating for WorkloadActor {
    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Reservations are read from the projection; only an absent one (a
    /// refused creation) holds nothing at all.
    fn holds_nothing(&self) -> bool {
        self.state == WorkloadState::Absent
    }

    fn leave_registry(&mut self, ctx: &mut Context<Self>) -> bool {
        let handled = self.journal.handled();
        self.hub.workloads.try_passivate(&self.id, &ctx.address(), handled)
    }
}

impl Handler<Execute> for WorkloadActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        entity::execute(self, ctx, msg.command, msg.cmd, "workload", msg.reply);
    }
}

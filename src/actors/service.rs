//! The service and instance actors: one per account and name (streams
//! `service/{account}/{name}` and `instance/{account}/{name}`). Names are
//! unique per account because each name has one actor deciding.

use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use tenure_events::{AccountId, StreamId};

use super::entity::{self, AggregateActor, Passivating};
use super::journal::{journaled, Journal};
use super::registry::{Activation, Entity};
use super::{Cmd, Hub, Reply};
use crate::domain::service::{Instance, InstanceCommand, Service, ServiceCommand};

/// An account's entity named `name`.
pub type NamedKey = (AccountId, String);

macro_rules! named_actor {
    ($actor:ident, $state:ty, $command:ty, $message:ident, $registry:ident, $stream:path, $absent:expr, $name:literal) => {
        pub struct $actor {
            hub: Arc<Hub>,
            key: NamedKey,
            state: $state,
            journal: Journal<Self>,
        }

        /// Carries out one command; answers how many events it recorded.
        #[derive(Message)]
        #[rtype(result = "()")]
        pub struct $message {
            pub command: $command,
            pub cmd: Cmd,
            pub reply: Reply<usize>,
        }

        impl Entity for $actor {
            type Key = NamedKey;

            fn activate(key: NamedKey, _: Activation, hub: Arc<Hub>) -> $actor {
                let journal = Journal::new(Arc::clone(&hub.store), $stream(&key.0, &key.1));
                $actor {
                    hub,
                    key,
                    state: Default::default(),
                    journal,
                }
            }
        }

        impl Actor for $actor {
            type Context = Context<Self>;

            fn started(&mut self, ctx: &mut Context<Self>) {
                entity::schedule_passivation(self, ctx);
                entity::load(self, ctx);
            }
        }

        journaled!($actor, registry: $registry, key: key);

        impl AggregateActor for $actor {
            type State = $state;

            fn state(&mut self) -> &mut $state {
                &mut self.state
            }

            fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
                self.hub.clock.now()
            }
        }

        impl Passivating for $actor {
            fn hub(&self) -> &Arc<Hub> {
                &self.hub
            }

            fn holds_nothing(&self) -> bool {
                self.state == $absent
            }

            fn leave_registry(&mut self, ctx: &mut Context<Self>) -> bool {
                let handled = self.journal.handled();
                self.hub.$registry.try_passivate(&self.key, &ctx.address(), handled)
            }
        }

        impl Handler<$message> for $actor {
            type Result = ();

            fn handle(&mut self, msg: $message, ctx: &mut Context<Self>) {
                entity::execute(self, ctx, msg.command, msg.cmd, $name, msg.reply);
            }
        }
    };
}

named_actor!(
    ServiceActor,
    Service,
    ServiceCommand,
    ExecuteService,
    services,
    StreamId::service,
    Service::Absent,
    "service"
);
named_actor!(
    InstanceActor,
    Instance,
    InstanceCommand,
    ExecuteInstance,
    instances,
    StreamId::instance,
    Instance::Absent,
    "instance"
);

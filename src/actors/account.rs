//! The account actor: owns one account (stream `account/{name}`): its
//! tokens, public key and limits. Accounts are few and small, so their
//! actors stay resident once loaded.
//!
//! Authentication does not ask this actor: it reads the directory
//! projection, and `Control` waits for the projection to apply a change
//! before answering, so a created token works, and a revoked one stops
//! working, from the moment the change is acknowledged.

use std::sync::Arc;

use actix::{Actor, Context, Handler, Message};
use tenure_events::{AccountEvent, AccountId, NewEvent, StreamId};

use super::journal::{activate_from_log, journaled, submit, Journal};
use super::registry::{Activation, Entity};
use super::{command_span, log_outcome, Cmd, CommandError, Hub, Reply};
use crate::domain::account::{Account, AccountCommand};
use crate::domain::Aggregate;

pub struct AccountActor {
    hub: Arc<Hub>,
    name: AccountId,
    state: Account,
    journal: Journal<Self>,
}

/// Carries out one account command; answers how many events it recorded
/// (0 when the command changed nothing) once they are durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Execute {
    pub command: AccountCommand,
    pub cmd: Cmd,
    pub reply: Reply<usize>,
}

impl Entity for AccountActor {
    type Key = AccountId;

    fn activate(name: AccountId, _: Activation, hub: Arc<Hub>) -> AccountActor {
        let journal = Journal::new(Arc::clone(&hub.store), StreamId::account(&name));
        AccountActor {
            hub,
            name,
            state: Account::default(),
            journal,
        }
    }
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        activate_from_log(
            self,
            ctx,
            Account::default(),
            |state, e| {
                if let Some(event) = e.decode_as::<AccountEvent>()? {
                    state.evolve(&event, e.time);
                }
                Ok(())
            },
            |act, state| act.state = state,
        );
    }
}

journaled!(AccountActor, registry: accounts, key: name);

impl Handler<Execute> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        self.journal.touch();
        let span = command_span(&msg.cmd, "account", self.journal.stream());
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

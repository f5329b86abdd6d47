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
use tenure_events::{AccountId, StreamId};

use super::entity::{self, AggregateActor};
use super::journal::{journaled, Journal};
use super::registry::{Activation, Entity};
use super::{Cmd, Hub, Reply};
use crate::domain::account::{Account, AccountCommand};

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
        entity::load(self, ctx);
    }
}

journaled!(AccountActor, registry: accounts, key: name);

impl AggregateActor for AccountActor {
    type State = Account;

    fn state(&mut self) -> &mut Account {
        &mut self.state
    }

    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.hub.clock.now()
    }
}

impl Handler<Execute> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        entity::execute(self, ctx, msg.command, msg.cmd, "account", msg.reply);
    }
}

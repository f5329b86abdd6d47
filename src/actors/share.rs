//! The share actor: owns one share reservation (stream `share/{token}`).
//!
//! Tokens are global, so one actor per token decides who holds it: two
//! accounts reserving the same name at once are serialized here, and the
//! second gets a 409. Whether the current backend session still serves is
//! read from the expiry queue (its lease's liveness), not stored here.

use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use tenure_events::StreamId;
use tenure_projections::LeaseKey;

use super::entity::{self, AggregateActor, Passivating};
use super::journal::{journaled, Journal};
use super::registry::{Activation, Entity};
use super::{Cmd, Hub, Reply};
use crate::domain::share::{Share, ShareCommand};

pub struct ShareActor {
    hub: Arc<Hub>,
    token: String,
    state: Share,
    journal: Journal<Self>,
}

/// Carries out one share command; answers how many events it recorded
/// once they are durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Execute {
    pub command: ShareCommand,
    pub cmd: Cmd,
    pub reply: Reply<usize>,
}

impl Entity for ShareActor {
    type Key = String;

    fn activate(token: String, _: Activation, hub: Arc<Hub>) -> ShareActor {
        let journal = Journal::new(Arc::clone(&hub.store), StreamId::share(&token));
        ShareActor {
            hub,
            token,
            state: Share::default(),
            journal,
        }
    }
}

impl Actor for ShareActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        entity::schedule_passivation(self, ctx);
        entity::load(self, ctx);
    }
}

journaled!(ShareActor, registry: shares, key: token);

impl AggregateActor for ShareActor {
    type State = Share;

    fn state(&mut self) -> &mut Share {
        &mut self.state
    }

    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.hub.clock.now()
    }
}

impl Passivating for ShareActor {
    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// A free token: nothing to keep.
    fn holds_nothing(&self) -> bool {
        self.state == Share::Free
    }

    fn leave_registry(&mut self, ctx: &mut Context<Self>) -> bool {
        let handled = self.journal.handled();
        self.hub.shares.try_passivate(&self.token, &ctx.address(), handled)
    }
}

impl ShareActor {
    /// Whether the current session's lease is live.
    fn session_live(&self) -> bool {
        match &self.state {
            Share::Reserved {
                owner,
                session: Some((_, lease)),
                ..
            } => self.hub.projections.expiry.lock().is_live(&LeaseKey {
                account: owner.clone(),
                lease: *lease,
            }),
            _ => false,
        }
    }
}

impl Handler<Execute> for ShareActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        let command = match msg.command {
            ShareCommand::StartSession {
                caller,
                session,
                lease,
                address,
                replace,
                ..
            } => ShareCommand::StartSession {
                caller,
                session,
                lease,
                address,
                replace,
                current_live: self.session_live(),
            },
            other => other,
        };
        entity::execute(self, ctx, command, msg.cmd, "share", msg.reply);
    }
}

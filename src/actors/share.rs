//! The share actor: owns one share reservation (stream `share/{token}`).
//!
//! Tokens are global, so one actor per token decides who holds it: two
//! accounts reserving the same name at once are serialized here, and the
//! second gets a 409. Whether the current backend session still serves is
//! read from the expiry queue (its lease's liveness), not stored here.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};
use tenure_events::{NewEvent, ShareEvent, StreamId};
use tenure_projections::LeaseKey;

use super::journal::{activate_from_log, journaled, submit, Journal};
use super::registry::{Activation, Entity};
use super::{command_span, log_outcome, Cmd, CommandError, Hub, Reply};
use crate::domain::share::{Share, ShareCommand};
use crate::domain::Aggregate;

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
        let every = (self.hub.config.passivate_after / 2).clamp(Duration::from_millis(10), Duration::from_secs(30));
        ctx.run_interval(every, |act, ctx| act.passivate_if_idle(ctx));
        activate_from_log(
            self,
            ctx,
            Share::default(),
            |state, e| {
                if let Some(event) = e.decode_as::<ShareEvent>()? {
                    state.evolve(&event, e.time);
                }
                Ok(())
            },
            |act, state| act.state = state,
        );
    }
}

journaled!(ShareActor, registry: shares, key: token);

impl ShareActor {
    /// Stops when idle long enough, or at once when the token is free.
    fn passivate_if_idle(&mut self, ctx: &mut Context<Self>) {
        if !self.journal.is_settled() || self.journal.is_failed() {
            return;
        }
        let free = self.state == Share::Free;
        if (free || self.journal.idle_for() >= self.hub.config.passivate_after)
            && self
                .hub
                .shares
                .try_passivate(&self.token, &ctx.address(), self.journal.handled())
        {
            ctx.stop();
        }
    }

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
        self.journal.touch();
        let span = command_span(&msg.cmd, "share", self.journal.stream());
        let now = self.hub.clock.now();
        let reply = msg.reply;
        let command = match msg.command {
            ShareCommand::StartSession {
                caller,
                session,
                lease,
                replace,
                ..
            } => ShareCommand::StartSession {
                caller,
                session,
                lease,
                replace,
                current_live: self.session_live(),
            },
            other => other,
        };
        let events = match self.state.decide(command, now) {
            Ok(events) => events,
            Err(rejection) => {
                let result = Err(rejection.into());
                log_outcome(&span, &result);
                self.journal.reply(reply, result);
                return;
            }
        };
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

//! What the simple entity actors share (account, share, workload): loading
//! the aggregate from its stream, carrying out a command on it, and
//! passivating when idle. Each such actor only says where its state, hub and
//! registry are.

use std::sync::Arc;
use std::time::Duration;

use actix::{ActorContext, AsyncContext, Context};
use tenure_events::{EventSet, NewEvent};

use super::journal::{activate_from_log, submit, Journaled};
use super::{command_span, log_outcome, Cmd, CommandError, Hub, Reply};
use crate::domain::Aggregate;

/// An actor that frees its memory when idle.
pub trait Passivating: Journaled {
    fn hub(&self) -> &Arc<Hub>;

    /// Nothing worth keeping in memory: passivate at once.
    fn holds_nothing(&self) -> bool;

    /// Asks the registry to let the actor go (granted only if no message is
    /// on its way to it).
    fn leave_registry(&mut self, ctx: &mut Context<Self>) -> bool;
}

/// Checks for passivation every half `--passivate-after` (between 10 ms
/// and 30 s).
pub fn schedule_passivation<A: Passivating>(act: &A, ctx: &mut Context<A>) {
    let every = (act.hub().config.passivate_after / 2).clamp(Duration::from_millis(10), Duration::from_secs(30));
    ctx.run_interval(every, |act, ctx| passivate_if_idle(act, ctx));
}

/// Stops the actor if nothing is in flight and it holds nothing or has been
/// idle for `--passivate-after`.
pub fn passivate_if_idle<A: Passivating>(act: &mut A, ctx: &mut Context<A>) {
    let journal = act.journal();
    if !journal.is_settled() || journal.is_failed() {
        return;
    }
    let idle = journal.idle_for() >= act.hub().config.passivate_after;
    if (act.holds_nothing() || idle) && act.leave_registry(ctx) {
        ctx.stop();
    }
}

/// An actor owning one aggregate, whose commands answer how many events
/// they recorded.
pub trait AggregateActor: Journaled
where
    <Self::State as Aggregate>::Event: EventSet + Send + 'static,
    <Self::State as Aggregate>::Rejection: Into<CommandError>,
{
    type State: Aggregate + Send + 'static;

    fn state(&mut self) -> &mut Self::State;

    fn clock_now(&self) -> chrono::DateTime<chrono::Utc>;
}

/// Loads the actor's aggregate from its stream (holding the mailbox until
/// it is in place).
pub fn load<A>(act: &mut A, ctx: &mut Context<A>)
where
    A: AggregateActor,
    <A::State as Aggregate>::Event: EventSet + Send + 'static,
    <A::State as Aggregate>::Rejection: Into<CommandError>,
{
    activate_from_log(
        act,
        ctx,
        A::State::default(),
        |state, e| {
            if let Some(event) = e.decode_as::<<A::State as Aggregate>::Event>()? {
                state.evolve(&event, e.time);
            }
            Ok(())
        },
        |act, state| *act.state() = state,
    );
}

/// Decides `command`, applies and appends its events, and answers how many
/// it recorded once they are durable (a rejection or "nothing to record"
/// once the appends before it are durable).
pub fn execute<A>(
    act: &mut A,
    ctx: &mut Context<A>,
    command: <A::State as Aggregate>::Command,
    cmd: Cmd,
    name: &'static str,
    reply: Reply<usize>,
) where
    A: AggregateActor,
    <A::State as Aggregate>::Event: EventSet + Send + 'static,
    <A::State as Aggregate>::Rejection: Into<CommandError>,
{
    act.journal().touch();
    let span = command_span(&cmd, name, act.journal().stream());
    let now = act.clock_now();
    let events = match act.state().decide(command, now) {
        Ok(events) => events,
        Err(rejection) => {
            let result = Err(rejection.into());
            log_outcome(&span, &result);
            act.journal().reply(reply, result);
            return;
        }
    };
    if events.is_empty() {
        act.journal().reply(reply, Ok(0));
        return;
    }
    let count = events.len();
    let new_events: Vec<NewEvent> = events
        .iter()
        .map(|e| {
            act.state().evolve(e, now);
            NewEvent::new(e, &cmd.meta, now)
        })
        .collect();
    submit(act, ctx, new_events, move |_, _, result| {
        let result = result.map(|_| count).map_err(CommandError::from);
        log_outcome(&span, &result);
        reply.send(result);
    });
}

//! Given/when/then for aggregates: `given([events]).at(now).when(command)`
//! then `.then([events])` or `.then_rejects(rejection)`.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

use super::Aggregate;

/// A fixed test time, `s` seconds after a round moment.
pub fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap_or_default()
}

pub struct Given<A: Aggregate> {
    state: A,
    now: DateTime<Utc>,
}

/// State folded from `events`, all happening at `t(0)`; commands run at `t(0)`
/// unless [`Given::at`] says otherwise.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for e in events {
        state.evolve(&e, t(0));
    }
    Given { state, now: t(0) }
}

impl<A: Aggregate> Given<A> {
    /// One more event, happening at `at`.
    pub fn event_at(mut self, at: DateTime<Utc>, event: A::Event) -> Self {
        self.state.evolve(&event, at);
        self
    }

    /// The command runs at `now`.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    pub fn when(self, command: A::Command) -> Then<A> {
        Then {
            outcome: self.state.decide(command, self.now),
        }
    }
}

pub struct Then<A: Aggregate> {
    outcome: Result<Vec<A::Event>, A::Rejection>,
}

impl<A: Aggregate> Then<A>
where
    A::Event: Debug + PartialEq,
    A::Rejection: Debug + PartialEq,
{
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        assert_eq!(self.outcome, Ok(expected));
    }

    #[track_caller]
    pub fn then_rejects(self, rejection: A::Rejection) {
        assert_eq!(self.outcome, Err(rejection));
    }

    /// The outcome itself, for checks that `then` cannot say.
    pub fn outcome(self) -> Result<Vec<A::Event>, A::Rejection> {
        self.outcome
    }
}

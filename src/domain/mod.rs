//! Pure entity logic: what a command decides and how events change state.
//!
//! **Architecture Invariant:** `domain` knows nothing of actix, HTTP, the
//! store or the OS clock. Time comes in as an argument. Everything here is a
//! function of its inputs, so it is tested with given/when/then alone.

pub mod account;
pub mod keyspace;
pub mod lease;
pub mod service;
pub mod share;
#[cfg(test)]
pub(crate) mod testing;
pub mod workload;

use chrono::{DateTime, Utc};

/// An entity folded from its stream.
pub trait Aggregate: Default {
    type Command;
    type Event;
    type Rejection;

    /// What happens if `command` is carried out at `now`: the events to append,
    /// or why not. Never changes the state; [`Aggregate::evolve`] does that.
    fn decide(&self, command: Self::Command, now: DateTime<Utc>) -> Result<Vec<Self::Event>, Self::Rejection>;

    /// Applies one event that happened at `at`.
    fn evolve(&mut self, event: &Self::Event, at: DateTime<Utc>);
}

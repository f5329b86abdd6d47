//! Pure folds of tenure's event log into the read models the system runs on.
//!
//! **Architecture Invariant:** of tenure's crates, this one depends on
//! `tenure-events` only (and otherwise on pure libraries: chrono, serde,
//! sha2). A
//! projection sees envelopes, never actors, stores or HTTP; it is fed by
//! whoever reads the log (the live subscription in the server, a replay tool
//! offline) and must end in the same state either way.
//!
//! Every projection has a stable [`Projection::NAME`] and a checkpoint (the
//! last global position applied). Applying an event at or below the
//! checkpoint changes nothing, so feeding the same event twice is harmless.

mod catalog;
pub mod compact;
mod digest;
mod directory;
mod expiry;
mod routing;
mod services;
mod set;
mod shares;
pub mod snapshot;
mod workloads;

pub use catalog::Catalog;
pub use digest::Digest;
pub use directory::{AccountView, Directory, TokenView};
pub use expiry::{Due, ExpiryQueue, GrantRecord, GrantState, LeaseKey, LiveLease, NotLive};
pub use routing::{Route, Routes, RoutingTable};
pub use services::{InstanceView, ServiceView, Services};
pub use set::ProjectionSet;
pub use shares::{GrantView, SessionView, ShareView, Shares};
pub use workloads::{ResultView, WorkloadView, Workloads};

use tenure_events::RecordedEvent;

/// A fold of the log into a read model.
pub trait Projection {
    /// A stable name, used for checkpoints and in logs.
    const NAME: &'static str;

    /// The global position of the last event applied (0 before any).
    fn checkpoint(&self) -> u64;

    /// Applies one event. Events at or below the checkpoint are ignored.
    fn apply(&mut self, event: &RecordedEvent);
}

/// Moves a projection's checkpoint to `event`'s position; false if the event
/// was already applied (at or below the checkpoint), which must then change
/// nothing.
pub(crate) fn advance(checkpoint: &mut u64, event: &RecordedEvent) -> bool {
    if event.position <= *checkpoint {
        return false;
    }
    *checkpoint = event.position;
    true
}

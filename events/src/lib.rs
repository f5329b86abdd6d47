//! The events of tenure and their envelope: the only serialized format.
//!
//! Every change in tenure is an event appended to a stream. A stream belongs to
//! one entity (a lease, an account's key space, ...). This crate defines:
//!
//! - the identifiers ([`AccountId`], [`LeaseId`], [`StreamId`]);
//! - the envelope ([`NewEvent`] before it is stored, [`RecordedEvent`] after);
//! - the typed payloads, grouped per entity ([`LeaseEvent`], [`KeyspaceEvent`])
//!   and gathered in [`Event`], each with a stable type name and schema version;
//! - the hash chain over stored events ([`chain`]): the canonical bytes of an
//!   envelope, defined once for every backend;
//! - decoding with upcasting: an event written with an older schema version is
//!   upgraded to the current one before it is deserialized.
//!
//! Golden JSON fixtures of every event type and version live in
//! `events/tests/golden/`; they must keep decoding after any change.

mod account;
mod bytes;
pub mod chain;
mod envelope;
mod event;
mod ids;
pub mod service;
mod share;
pub mod workload;

pub use account::{
    allows_one_more, AccountCreated, AccountKeyRegistered, AccountLimitsSet, AccountTokenCreated, AccountTokenRevoked,
    Limits, UNLIMITED,
};
pub use bytes::Bytes;
pub use chain::{ChainHash, ChainHead};
pub use envelope::{Metadata, NewEvent, RecordedEvent};
pub use event::{
    AccountEvent, DecodeError, DeleteCause, Event, EventSet, InstanceEvent, KeyDeleted, KeyPut, KeyspaceEvent,
    LeaseEvent, LeaseExpired, LeaseGranted, LeaseKeptAlive, LeaseRevoked, ServiceEvent, ShareEvent, WorkloadEvent,
};
pub use ids::{AccountId, IdError, LeaseId, StreamId};
pub use share::{
    BackendMode, SessionEnd, ShareAccessGranted, ShareMode, ShareReleased, ShareReserved, ShareSessionEnded,
    ShareSessionStarted,
};

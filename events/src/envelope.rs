use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::{AccountId, ChainHash, DecodeError, Event, EventSet, StreamId};

/// Who asked for a change and why: carried by every command into the
/// envelope of every event the command produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The account the change belongs to.
    pub account: AccountId,
    /// The request that caused the change (the HTTP request id), if any.
    pub request_id: Option<Uuid>,
    /// The event that caused the change, when one event leads to another
    /// (a lease's expiry causes the deletion of its keys).
    pub causation_id: Option<Uuid>,
}

impl Metadata {
    pub fn new(account: AccountId) -> Metadata {
        Metadata {
            account,
            request_id: None,
            causation_id: None,
        }
    }
}

/// An event ready to be appended: the envelope minus what the store assigns
/// (stream, version, global position).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// When the event happened, UTC, microsecond precision (what the stores keep).
    pub time: DateTime<Utc>,
    pub account: AccountId,
    pub request_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// The payload, serialized as JSON.
    pub payload: String,
}

impl NewEvent {
    /// Wraps a typed event in an envelope with a fresh event id.
    ///
    /// The id is a UUIDv7: time-ordered (wall clock, then a counter), so
    /// the log's index of causation ids, whose keys are the ids of the
    /// events that caused others (a lease's end causing its keys'
    /// deletions), grows at its end instead of at random places. With
    /// random ids every deletion of a mass expiry touched a random page of
    /// that index.
    pub fn new<E: EventSet>(event: &E, meta: &Metadata, time: DateTime<Utc>) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            time: time.trunc_subsecs(6),
            account: meta.account.clone(),
            request_id: meta.request_id,
            causation_id: meta.causation_id,
            payload: event.encode(),
        }
    }
}

/// An event as stored: its envelope with the stream, the version within the
/// stream (1 for the first event) and the global position in the log
/// (`$all`, 1 for the first event ever).
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    pub position: u64,
    pub stream: StreamId,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub time: DateTime<Utc>,
    pub account: AccountId,
    pub request_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub payload: String,
    /// The event's link in the hash chain over the log ([`crate::chain`]),
    /// set by the store; [`ChainHash::ZERO`] before it is stored.
    pub hash: ChainHash,
}

impl RecordedEvent {
    pub fn from_new(event: NewEvent, stream: StreamId, version: u64, position: u64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream,
            version,
            event_id: event.event_id,
            event_type: event.event_type,
            schema_version: event.schema_version,
            time: event.time,
            account: event.account,
            request_id: event.request_id,
            causation_id: event.causation_id,
            payload: event.payload,
            hash: ChainHash::ZERO,
        }
    }

    /// Sets this event's link in the chain, given the link before it.
    pub fn chain_after(&mut self, previous: &ChainHash) {
        self.hash = previous.next(self);
    }

    /// The typed event, upcast to the current schema version.
    pub fn decode(&self) -> Result<Event, DecodeError> {
        Event::decode(&self.event_type, self.schema_version, &self.payload)
    }

    /// The typed event if it belongs to the event set `E`; `Ok(None)` for
    /// events of other sets.
    pub fn decode_as<E: EventSet>(&self) -> Result<Option<E>, DecodeError> {
        E::decode(&self.event_type, self.schema_version, &self.payload)
    }
}

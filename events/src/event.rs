use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::{
    AccountCreated, AccountKeyRegistered, AccountLimitsSet, AccountTokenCreated, AccountTokenRevoked,
};
use crate::service::{InstanceRegistered, InstanceRemoved, ServiceCreated, ServiceDeleted};
use crate::share::{ShareAccessGranted, ShareReleased, ShareReserved, ShareSessionEnded, ShareSessionStarted};
use crate::workload::{WorkloadDeleteRequested, WorkloadReserved, WorkloadResultReported};
use crate::{Bytes, LeaseId};

/// Why a stored event could not be turned back into a typed event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("event type {event_type} has schema version {found}, newer than this build knows ({known})")]
    FutureVersion { event_type: String, found: u32, known: u32 },
    #[error("event type {event_type} schema version {version} has no upcaster")]
    NoUpcaster { event_type: String, version: u32 },
    #[error("payload of {event_type} v{version} does not decode: {reason}")]
    Payload {
        event_type: String,
        version: u32,
        reason: String,
    },
}

/// A group of event types belonging to one kind of entity.
pub trait EventSet: Sized {
    /// The stable type name stored in the envelope (`LeaseGranted`).
    fn event_type(&self) -> &'static str;
    /// The current schema version of this event's type.
    fn schema_version(&self) -> u32;
    /// The payload as JSON.
    fn encode(&self) -> String;
    /// The typed event for a stored type, version and payload; `Ok(None)` when
    /// the type does not belong to this set.
    fn decode(event_type: &str, schema_version: u32, payload: &str) -> Result<Option<Self>, DecodeError>;
}

/// Brings a payload written at an older schema version up to the current one.
/// Each entry upgrades one version to the next; none exist yet because every
/// event type is still at version 1. Add an arm here (and a golden fixture of
/// the old version) whenever a payload changes shape.
fn upcast<'p>(event_type: &str, version: u32, current: u32, payload: &'p str) -> Result<Cow<'p, str>, DecodeError> {
    match version.cmp(&current) {
        std::cmp::Ordering::Equal => Ok(Cow::Borrowed(payload)),
        std::cmp::Ordering::Greater => Err(DecodeError::FutureVersion {
            event_type: event_type.to_owned(),
            found: version,
            known: current,
        }),
        std::cmp::Ordering::Less => Err(DecodeError::NoUpcaster {
            event_type: event_type.to_owned(),
            version,
        }),
    }
}

macro_rules! event_set {
    ($(#[$doc:meta])* $set:ident { $($variant:ident($ty:ident) = $name:literal v $version:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq)]
        pub enum $set {
            $($variant($ty)),+
        }

        impl $set {
            /// Every type name of this set with its current schema version.
            pub const TYPES: &'static [(&'static str, u32)] = &[$(($name, $version)),+];
        }

        impl EventSet for $set {
            fn event_type(&self) -> &'static str {
                match self { $($set::$variant(_) => $name),+ }
            }

            fn schema_version(&self) -> u32 {
                match self { $($set::$variant(_) => $version),+ }
            }

            fn encode(&self) -> String {
                let json = match self { $($set::$variant(e) => serde_json::to_string(e)),+ };
                // Payload structs hold only strings, numbers and string-keyed
                // structs, which always serialize.
                json.expect("event payloads always serialize to JSON")
            }

            fn decode(event_type: &str, schema_version: u32, payload: &str) -> Result<Option<Self>, DecodeError> {
                match event_type {
                    $($name => {
                        let payload = upcast(event_type, schema_version, $version, payload)?;
                        serde_json::from_str::<$ty>(&payload)
                            .map(|e| Some($set::$variant(e)))
                            .map_err(|err| DecodeError::Payload {
                                event_type: event_type.to_owned(),
                                version: schema_version,
                                reason: err.to_string(),
                            })
                    })+
                    _ => Ok(None),
                }
            }
        }

        $(impl From<$ty> for $set {
            fn from(e: $ty) -> $set { $set::$variant(e) }
        })+
    };
}

/// A lease was granted with a TTL (after raising it to the minimum).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGranted {
    pub lease: LeaseId,
    pub ttl_s: i64,
    /// The TTL the client asked for, before it was raised to the minimum.
    pub requested_ttl_s: i64,
}

/// A lease's remaining TTL was reset to its granted TTL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeptAlive {
    pub lease: LeaseId,
}

/// A lease was revoked by its holder; its keys are deleted next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevoked {
    pub lease: LeaseId,
}

/// A lease's TTL ran out; its keys are deleted next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseExpired {
    pub lease: LeaseId,
    /// The deadline that passed.
    pub deadline: DateTime<Utc>,
}

/// A key was created or changed in an account's key space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPut {
    pub key: Bytes,
    pub value: Bytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
    /// The key space's revision after this change (etcd's mod_revision).
    pub revision: i64,
}

/// A key was deleted. Deletions made by one command share one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDeleted {
    pub key: Bytes,
    pub revision: i64,
    pub cause: DeleteCause,
}

/// Why a key was deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeleteCause {
    /// A client deleted it.
    Request,
    /// Its lease was revoked.
    LeaseRevoked { lease: LeaseId },
    /// Its lease expired.
    LeaseExpired { lease: LeaseId },
    /// Its lease had ended (revoked or expired) before its keys were removed,
    /// and the server removed them while recovering at start-up.
    LeaseEnded { lease: LeaseId },
}

event_set! {
    /// The events of a lease's stream.
    LeaseEvent {
        Granted(LeaseGranted) = "LeaseGranted" v 1,
        KeptAlive(LeaseKeptAlive) = "LeaseKeptAlive" v 1,
        Revoked(LeaseRevoked) = "LeaseRevoked" v 1,
        Expired(LeaseExpired) = "LeaseExpired" v 1,
    }
}

event_set! {
    /// The events of an account's key space stream.
    KeyspaceEvent {
        Put(KeyPut) = "KeyPut" v 1,
        Deleted(KeyDeleted) = "KeyDeleted" v 1,
    }
}

event_set! {
    /// The events of an account's own stream.
    AccountEvent {
        Created(AccountCreated) = "AccountCreated" v 1,
        TokenCreated(AccountTokenCreated) = "AccountTokenCreated" v 1,
        TokenRevoked(AccountTokenRevoked) = "AccountTokenRevoked" v 1,
        KeyRegistered(AccountKeyRegistered) = "AccountKeyRegistered" v 1,
        LimitsSet(AccountLimitsSet) = "AccountLimitsSet" v 1,
    }
}

event_set! {
    /// The events of a share reservation's stream.
    ShareEvent {
        Reserved(ShareReserved) = "ShareReserved" v 1,
        SessionStarted(ShareSessionStarted) = "ShareSessionStarted" v 1,
        SessionEnded(ShareSessionEnded) = "ShareSessionEnded" v 1,
        AccessGranted(ShareAccessGranted) = "ShareAccessGranted" v 1,
        Released(ShareReleased) = "ShareReleased" v 1,
    }
}

event_set! {
    /// The events of a workload reservation's stream.
    WorkloadEvent {
        Reserved(WorkloadReserved) = "WorkloadReserved" v 1,
        ResultReported(WorkloadResultReported) = "WorkloadResultReported" v 1,
        DeleteRequested(WorkloadDeleteRequested) = "WorkloadDeleteRequested" v 1,
    }
}

event_set! {
    /// The events of a service's stream.
    ServiceEvent {
        Created(ServiceCreated) = "ServiceCreated" v 1,
        Deleted(ServiceDeleted) = "ServiceDeleted" v 1,
    }
}

event_set! {
    /// The events of an instance's stream.
    InstanceEvent {
        Registered(InstanceRegistered) = "InstanceRegistered" v 1,
        Removed(InstanceRemoved) = "InstanceRemoved" v 1,
    }
}

/// Any event of tenure.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Lease(LeaseEvent),
    Keyspace(KeyspaceEvent),
    Account(AccountEvent),
    Share(ShareEvent),
    Workload(WorkloadEvent),
    Service(ServiceEvent),
    Instance(InstanceEvent),
}

impl Event {
    /// Decodes a stored event of any known type.
    pub fn decode(event_type: &str, schema_version: u32, payload: &str) -> Result<Event, DecodeError> {
        if let Some(e) = LeaseEvent::decode(event_type, schema_version, payload)? {
            return Ok(Event::Lease(e));
        }
        if let Some(e) = KeyspaceEvent::decode(event_type, schema_version, payload)? {
            return Ok(Event::Keyspace(e));
        }
        if let Some(e) = AccountEvent::decode(event_type, schema_version, payload)? {
            return Ok(Event::Account(e));
        }
        if let Some(e) = ShareEvent::decode(event_type, schema_version, payload)? {
            return Ok(Event::Share(e));
        }
        if let Some(e) = WorkloadEvent::decode(event_type, schema_version, payload)? {
            return Ok(Event::Workload(e));
        }
        if let Some(e) = ServiceEvent::decode(event_type, schema_version, payload)? {
            return Ok(Event::Service(e));
        }
        if let Some(e) = InstanceEvent::decode(event_type, schema_version, payload)? {
            return Ok(Event::Instance(e));
        }
        Err(DecodeError::UnknownType(event_type.to_owned()))
    }

    /// Every known event type with its current schema version.
    pub fn types() -> impl Iterator<Item = (&'static str, u32)> {
        LeaseEvent::TYPES
            .iter()
            .chain(KeyspaceEvent::TYPES)
            .chain(AccountEvent::TYPES)
            .chain(ShareEvent::TYPES)
            .chain(WorkloadEvent::TYPES)
            .chain(ServiceEvent::TYPES)
            .chain(InstanceEvent::TYPES)
            .copied()
    }
}

impl EventSet for Event {
    fn event_type(&self) -> &'static str {
        match self {
            Event::Lease(e) => e.event_type(),
            Event::Keyspace(e) => e.event_type(),
            Event::Account(e) => e.event_type(),
            Event::Share(e) => e.event_type(),
            Event::Workload(e) => e.event_type(),
            Event::Service(e) => e.event_type(),
            Event::Instance(e) => e.event_type(),
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            Event::Lease(e) => e.schema_version(),
            Event::Keyspace(e) => e.schema_version(),
            Event::Account(e) => e.schema_version(),
            Event::Share(e) => e.schema_version(),
            Event::Workload(e) => e.schema_version(),
            Event::Service(e) => e.schema_version(),
            Event::Instance(e) => e.schema_version(),
        }
    }

    fn encode(&self) -> String {
        match self {
            Event::Lease(e) => e.encode(),
            Event::Keyspace(e) => e.encode(),
            Event::Account(e) => e.encode(),
            Event::Share(e) => e.encode(),
            Event::Workload(e) => e.encode(),
            Event::Service(e) => e.encode(),
            Event::Instance(e) => e.encode(),
        }
    }

    fn decode(event_type: &str, schema_version: u32, payload: &str) -> Result<Option<Event>, DecodeError> {
        match Event::decode(event_type, schema_version, payload) {
            Ok(e) => Ok(Some(e)),
            Err(DecodeError::UnknownType(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> LeaseId {
        LeaseId::new(0x525b80fbbf3b906e).expect("positive")
    }

    #[test]
    fn events_round_trip_through_their_payload() {
        let events: Vec<Event> = vec![
            Event::Lease(
                LeaseGranted {
                    lease: lease(),
                    ttl_s: 100,
                    requested_ttl_s: 100,
                }
                .into(),
            ),
            Event::Lease(LeaseKeptAlive { lease: lease() }.into()),
            Event::Lease(LeaseRevoked { lease: lease() }.into()),
            Event::Keyspace(
                KeyPut {
                    key: "k".into(),
                    value: "v".into(),
                    lease: Some(lease()),
                    revision: 2,
                }
                .into(),
            ),
            Event::Keyspace(
                KeyPut {
                    key: "k".into(),
                    value: "v".into(),
                    lease: None,
                    revision: 3,
                }
                .into(),
            ),
            Event::Keyspace(
                KeyDeleted {
                    key: "k".into(),
                    revision: 4,
                    cause: DeleteCause::LeaseExpired { lease: lease() },
                }
                .into(),
            ),
        ];
        for e in events {
            let back = Event::decode(e.event_type(), e.schema_version(), &e.encode()).expect("decodes");
            assert_eq!(back, e);
        }
    }

    #[test]
    fn unknown_types_and_future_versions_are_refused() {
        assert_eq!(
            Event::decode("Nope", 1, "{}"),
            Err(DecodeError::UnknownType("Nope".into()))
        );
        assert!(matches!(
            Event::decode("LeaseRevoked", 2, r#"{"lease":"1"}"#),
            Err(DecodeError::FutureVersion { found: 2, known: 1, .. })
        ));
        assert!(matches!(
            Event::decode("LeaseRevoked", 1, "{}"),
            Err(DecodeError::Payload { .. })
        ));
    }

    #[test]
    fn a_put_without_lease_omits_the_field() {
        let e = KeyspaceEvent::from(KeyPut {
            key: "a".into(),
            value: "b".into(),
            lease: None,
            revision: 2,
        });
        assert_eq!(e.encode(), r#"{"key":"a","value":"b","revision":2}"#);
    }
}

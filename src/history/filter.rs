//! Which events a query asks for, and how an event looks in JSON.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tenure_events::{AccountId, ChainHash, RecordedEvent, StreamId};
use uuid::Uuid;

/// Whose events a caller reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryScope {
    /// The admin, or local mode.
    All,
    /// An account: its own events only.
    Account(AccountId),
}

impl HistoryScope {
    /// Whether the caller may see this event.
    pub fn admits(&self, event: &RecordedEvent) -> bool {
        match self {
            HistoryScope::All => true,
            HistoryScope::Account(a) => *a == event.account,
        }
    }
}

/// The filters of `/v1/events` and `tenure events`; every one given must
/// hold. The caller's scope (an account sees only its own events) is
/// applied on top, by whoever builds the filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events of this account.
    pub account: Option<AccountId>,
    /// Events of this stream (`lease/default/1a20…`).
    pub stream: Option<StreamId>,
    /// Events of streams of this kind: the part of the stream name before
    /// the first `/` (`lease`, `keyspace`, `account`, `share`, `workload`,
    /// `service`, `instance`).
    pub kind: Option<String>,
    /// Events of streams whose entity (the last part of the stream name) is
    /// this: a lease ID, a share token, a service or instance name, an
    /// account name (its own stream and its key space).
    pub entity: Option<String>,
    /// Events of these types (any of them).
    pub types: Vec<String>,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events at or before this time.
    pub until: Option<DateTime<Utc>>,
}

impl EventFilter {
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.account.as_ref().is_none_or(|a| *a == event.account)
            && self.stream.as_ref().is_none_or(|s| *s == event.stream)
            && self.kind.as_deref().is_none_or(|k| k == event.stream.category())
            && self
                .entity
                .as_deref()
                .is_none_or(|e| event.stream.as_str().rsplit('/').next() == Some(e))
            && (self.types.is_empty() || self.types.contains(&event.event_type))
            && self.since.is_none_or(|t| event.time >= t)
            && self.until.is_none_or(|t| event.time <= t)
    }
}

/// An event as `/v1/events`, its stream and `/v1/audit` show it.
// Its OpenAPI schema (`Event`) is derived here, so it cannot drift from it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub struct EventView {
    pub position: u64,
    pub time: DateTime<Utc>,
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub account: AccountId,
    #[schema(value_type = String, min_length = 1, max_length = 512)]
    pub stream: StreamId,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub id: Uuid,
    pub request_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// What the event did, in a few words.
    pub summary: String,
    /// The payload as stored (JSON); a payload that is not JSON as a string.
    pub payload: serde_json::Value,
    /// The event's link in the hash chain.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    pub hash: ChainHash,
}

impl EventView {
    pub fn new(event: &RecordedEvent) -> EventView {
        EventView {
            position: event.position,
            time: event.time,
            account: event.account.clone(),
            stream: event.stream.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            id: event.event_id,
            request_id: event.request_id,
            causation_id: event.causation_id,
            summary: super::summary::summary(event),
            payload: serde_json::from_str(&event.payload)
                .unwrap_or_else(|_| serde_json::Value::String(event.payload.clone())),
            hash: event.hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_events::{EventSet, KeyPut, KeyspaceEvent, LeaseEvent, LeaseId, LeaseRevoked, Metadata, NewEvent};

    fn recorded(account: &str, stream: StreamId, event: impl EventSet, second: i64) -> RecordedEvent {
        let account: AccountId = account.parse().expect("valid account");
        let time = DateTime::from_timestamp(1_767_225_600 + second, 0).unwrap_or_default();
        let new = NewEvent::new(&event, &Metadata::new(account), time);
        RecordedEvent::from_new(new, stream, 1, 1)
    }

    #[test]
    fn every_filter_given_must_hold() {
        let a: AccountId = "a".parse().expect("valid");
        let lease = LeaseId::new(0xab).expect("positive");
        let revoke = recorded(
            "a",
            StreamId::lease(&a, lease),
            LeaseEvent::from(LeaseRevoked { lease }),
            10,
        );
        let put = recorded(
            "a",
            StreamId::keyspace(&a),
            KeyspaceEvent::from(KeyPut {
                key: "k".into(),
                value: "v".into(),
                lease: None,
                revision: 2,
            }),
            20,
        );
        let check = |filter: EventFilter, expect: [bool; 2]| {
            assert_eq!([filter.matches(&revoke), filter.matches(&put)], expect, "{filter:?}");
        };
        let at = |s: i64| DateTime::from_timestamp(1_767_225_600 + s, 0);
        check(EventFilter::default(), [true, true]);
        check(
            EventFilter {
                account: Some("b".parse().expect("valid")),
                ..EventFilter::default()
            },
            [false, false],
        );
        check(
            EventFilter {
                kind: Some("lease".into()),
                ..EventFilter::default()
            },
            [true, false],
        );
        check(
            EventFilter {
                entity: Some("00000000000000ab".into()),
                ..EventFilter::default()
            },
            [true, false],
        );
        check(
            EventFilter {
                entity: Some("a".into()),
                ..EventFilter::default()
            },
            [false, true],
        );
        check(
            EventFilter {
                stream: Some(StreamId::keyspace(&a)),
                ..EventFilter::default()
            },
            [false, true],
        );
        check(
            EventFilter {
                types: vec!["KeyDeleted".into(), "KeyPut".into()],
                ..EventFilter::default()
            },
            [false, true],
        );
        check(
            EventFilter {
                since: at(10),
                until: at(19),
                ..EventFilter::default()
            },
            [true, false],
        );
        check(
            EventFilter {
                since: at(11),
                kind: Some("keyspace".into()),
                ..EventFilter::default()
            },
            [false, true],
        );
    }
}

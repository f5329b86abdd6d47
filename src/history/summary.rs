//! One line saying what an event did, for people reading the log (`tenure
//! events`, `tenure audit`, the dashboard's feed). The entity is named by
//! the stream; the line says what happened to it.

use tenure_events::{
    AccountEvent, Bytes, DeleteCause, Event, InstanceEvent, KeyspaceEvent, LeaseEvent, RecordedEvent, ServiceEvent,
    ShareEvent, WorkloadEvent,
};

/// Longest key or value shown whole; longer ones are cut with an ellipsis.
const SHOWN_BYTES_MAX: usize = 48;

/// What the event did, in a few words.
pub fn summary(event: &RecordedEvent) -> String {
    let entity = event.stream.as_str().rsplit('/').next().unwrap_or_default();
    match event.decode() {
        Ok(decoded) => describe(entity, &decoded),
        Err(e) => format!("(cannot decode: {e})"),
    }
}

fn shown(bytes: &Bytes) -> String {
    let text = bytes.to_string_lossy();
    if text.chars().count() <= SHOWN_BYTES_MAX {
        return format!("{text:?}");
    }
    let cut: String = text.chars().take(SHOWN_BYTES_MAX).collect();
    format!("{cut:?}…")
}

fn describe(entity: &str, event: &Event) -> String {
    match event {
        Event::Lease(e) => match e {
            LeaseEvent::Granted(g) if g.ttl_s != g.requested_ttl_s => format!(
                "lease {} granted with TTL {}s (asked {}s)",
                g.lease, g.ttl_s, g.requested_ttl_s
            ),
            LeaseEvent::Granted(g) => format!("lease {} granted with TTL {}s", g.lease, g.ttl_s),
            LeaseEvent::KeptAlive(k) => format!("lease {} kept alive", k.lease),
            LeaseEvent::Revoked(r) => format!("lease {} revoked", r.lease),
            LeaseEvent::Expired(x) => format!("lease {} expired (deadline {})", x.lease, x.deadline.to_rfc3339()),
        },
        Event::Keyspace(e) => match e {
            KeyspaceEvent::Put(p) => match p.lease {
                Some(lease) => format!("put {} = {} with lease {lease}", shown(&p.key), shown(&p.value)),
                None => format!("put {} = {}", shown(&p.key), shown(&p.value)),
            },
            KeyspaceEvent::Deleted(d) => {
                let why = match &d.cause {
                    DeleteCause::Request => "by request".to_owned(),
                    DeleteCause::LeaseRevoked { lease } => format!("lease {lease} revoked"),
                    DeleteCause::LeaseExpired { lease } => format!("lease {lease} expired"),
                    DeleteCause::LeaseEnded { lease } => format!("lease {lease} had ended (recovery)"),
                };
                format!("deleted {} ({why})", shown(&d.key))
            }
        },
        Event::Account(e) => match e {
            AccountEvent::Created(_) => format!("account {entity} created"),
            AccountEvent::TokenCreated(t) => match &t.label {
                Some(label) => format!("token {} issued ({label})", t.token),
                None => format!("token {} issued", t.token),
            },
            AccountEvent::TokenRevoked(t) => format!("token {} revoked", t.token),
            AccountEvent::KeyRegistered(_) => "public key registered".to_owned(),
            AccountEvent::LimitsSet(l) => {
                let limits: Vec<String> = l.limits.named().iter().map(|(n, v)| format!("{n}={v}")).collect();
                format!("limits set: {}", limits.join(" "))
            }
        },
        Event::Share(e) => match e {
            ShareEvent::Reserved(r) => format!(
                "share {} reserved by {} ({}, {}) for {}",
                r.token,
                r.owner,
                word(&r.mode),
                word(&r.backend_mode),
                r.target
            ),
            ShareEvent::SessionStarted(s) => format!("session started, held by lease {}", s.lease),
            ShareEvent::SessionEnded(s) => format!("session ended ({})", word(&s.cause)),
            ShareEvent::AccessGranted(g) => format!("access {} granted to {}", g.grant, g.account),
            ShareEvent::Released(r) => format!("share {} released", r.token),
        },
        Event::Workload(e) => match e {
            WorkloadEvent::Reserved(r) => {
                format!("{} workload reserved on node {} for {}s", r.kind, r.node, r.duration_s)
            }
            WorkloadEvent::ResultReported(r) if r.error.is_empty() => format!("node reported {}", word(&r.state)),
            WorkloadEvent::ResultReported(r) => format!("node reported {}: {}", word(&r.state), r.error),
            WorkloadEvent::DeleteRequested(d) => format!("to delete ({})", word(&d.reason)),
        },
        Event::Service(e) => match e {
            ServiceEvent::Created(s) => {
                let ports: Vec<String> = s
                    .ports
                    .iter()
                    .map(|p| format!("{}:{}", p.port, p.destination_port))
                    .collect();
                format!("service {} created at {} ({})", s.name, s.fqdn, ports.join(" "))
            }
            ServiceEvent::Deleted(d) => format!("service {entity} deleted ({})", word(&d.reason)),
        },
        Event::Instance(e) => match e {
            InstanceEvent::Registered(i) => format!(
                "instance {} attached to {} at {}, held by lease {}",
                i.name, i.service, i.address, i.lease
            ),
            InstanceEvent::Removed(_) => format!("instance {entity} removed"),
        },
    }
}

/// An enum as the log writes it (`last_instance_removed`), as words.
pub fn word(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s.replace('_', " "),
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use tenure_events::{
        AccountId, EventSet, KeyDeleted, KeyPut, LeaseExpired, LeaseGranted, LeaseId, Metadata, NewEvent, StreamId,
    };

    fn recorded(stream: StreamId, event: impl EventSet) -> RecordedEvent {
        let time = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let new = NewEvent::new(&event, &Metadata::new(AccountId::default_account()), time);
        RecordedEvent::from_new(new, stream, 1, 1)
    }

    #[test]
    fn summaries_say_what_happened() {
        let account = AccountId::default_account();
        let lease = LeaseId::new(0x525b80fbbf3b906e).expect("positive");
        let check = |event: RecordedEvent, expect: &str| assert_eq!(summary(&event), expect);
        check(
            recorded(
                StreamId::lease(&account, lease),
                LeaseEvent::from(LeaseGranted {
                    lease,
                    ttl_s: 2,
                    requested_ttl_s: 1,
                }),
            ),
            "lease 525b80fbbf3b906e granted with TTL 2s (asked 1s)",
        );
        check(
            recorded(
                StreamId::lease(&account, lease),
                LeaseEvent::from(LeaseExpired {
                    lease,
                    deadline: DateTime::from_timestamp(1_767_225_700, 0).unwrap_or_default(),
                }),
            ),
            "lease 525b80fbbf3b906e expired (deadline 2026-01-01T00:01:40+00:00)",
        );
        check(
            recorded(
                StreamId::keyspace(&account),
                KeyspaceEvent::from(KeyPut {
                    key: "k".into(),
                    value: "x".repeat(60).into(),
                    lease: Some(lease),
                    revision: 2,
                }),
            ),
            &format!("put \"k\" = \"{}\"… with lease 525b80fbbf3b906e", "x".repeat(48)),
        );
        check(
            recorded(
                StreamId::keyspace(&account),
                KeyspaceEvent::from(KeyDeleted {
                    key: "k".into(),
                    revision: 3,
                    cause: DeleteCause::LeaseExpired { lease },
                }),
            ),
            "deleted \"k\" (lease 525b80fbbf3b906e expired)",
        );
        let mut broken = recorded(
            StreamId::keyspace(&account),
            KeyspaceEvent::from(KeyDeleted {
                key: "k".into(),
                revision: 3,
                cause: DeleteCause::Request,
            }),
        );
        broken.payload = "{}".into();
        assert!(summary(&broken).starts_with("(cannot decode: "), "{}", summary(&broken));
    }
}

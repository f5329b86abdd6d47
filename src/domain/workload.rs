//! A workload reservation (zos `provision`): a typed workload for a node,
//! signed by its owner's ed25519 key, decommissioned when its duration runs
//! out or when its owner deletes it. The node learns both by polling, and
//! reports results.
//!
//! ## What is signed
//!
//! The signature covers the **canonical form** of the reservation: the
//! JSON object `{"created", "data", "duration_s", "node", "owner", "type"}`
//! (`created` in Unix seconds, `data` exactly as submitted) serialized as
//! RFC 8785 (JCS) does: object keys sorted, no whitespace, strings with
//! JSON's minimal escapes. Workload data holds no floating-point numbers,
//! so JCS's number rule never comes up. The signature itself, the
//! server-assigned ID, results and the to-delete flag are not signed.

use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tenure_events::workload::{
    DeleteReason, ResultState, Workload, WorkloadDeleteRequested, WorkloadReserved, WorkloadResultReported,
};
use tenure_events::{AccountId, WorkloadEvent};

use super::Aggregate;

/// The longest reservation: ten years.
pub const MAX_DURATION_S: i64 = 10 * 365 * 86_400;
/// How far in the future `created` may be (clock skew between the owner
/// and the server).
pub const MAX_CLOCK_SKEW_S: i64 = 300;
/// The longest node ID and error message.
pub const MAX_NODE_LEN: usize = 128;
pub const MAX_ERROR_LEN: usize = 4096;

/// The signed part of a reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub node: String,
    pub owner: AccountId,
    pub kind: String,
    pub data: Value,
    /// Unix seconds.
    pub created: i64,
    pub duration_s: i64,
}

impl Signed {
    /// The bytes the owner signs (see the module documentation).
    pub fn canonical(&self) -> Vec<u8> {
        let value = serde_json::json!({
            "created": self.created,
            "data": self.data,
            "duration_s": self.duration_s,
            "node": self.node,
            "owner": self.owner.as_str(),
            "type": self.kind,
        });
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        out
    }
}

/// RFC 8785: keys sorted (by UTF-16 code units, which for the ASCII keys of
/// workloads is byte order), no whitespace.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        // Strings, numbers, booleans and null serialize as JCS wants.
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// Signs the canonical form with an ed25519 secret key (the CLI and tests
/// use it; the server only verifies). Answers the signature in base64.
pub fn sign(signed: &Signed, key: &ed25519_dalek::SigningKey) -> String {
    use ed25519_dalek::Signer;
    base64::engine::general_purpose::STANDARD.encode(key.sign(&signed.canonical()).to_bytes())
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WorkloadState {
    #[default]
    Absent,
    Active {
        owner: AccountId,
        expires_at: DateTime<Utc>,
        to_delete: Option<DeleteReason>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadCommand {
    /// `public_key`: the owner's registered key (base64), if any.
    Reserve {
        signed: Signed,
        signature: String,
        public_key: Option<String>,
    },
    /// From the node.
    ReportResult {
        state: ResultState,
        error: String,
        data: Value,
    },
    /// The owner deletes it before it expires.
    Delete { caller: AccountId },
    /// The expiry timers: decommission it if its time has run out.
    Expire,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadRejection {
    #[error("reservation not found")]
    NotFound,
    #[error("reservation already exists")]
    AlreadyExists,
    #[error("node_id: must be 1 to {MAX_NODE_LEN} characters of a-z, A-Z, 0-9, '-', '_' or '.'")]
    InvalidNode,
    #[error("{0}")]
    InvalidWorkload(String),
    #[error("duration: must be 1 to {MAX_DURATION_S} seconds, got {0}")]
    InvalidDuration(i64),
    #[error("the reservation expired on arrival: created {created} plus {duration_s}s is in the past")]
    ExpiredOnArrival { created: DateTime<Utc>, duration_s: i64 },
    #[error("created: {0} is more than {MAX_CLOCK_SKEW_S}s in the future")]
    CreatedInFuture(DateTime<Utc>),
    #[error("the owner has no registered public key: register one with `tenure account key set`")]
    NoPublicKey,
    #[error("signature: {0}")]
    BadSignature(&'static str),
    #[error("error: at most {MAX_ERROR_LEN} bytes")]
    ErrorTooLong,
    /// The expiry timers were early.
    #[error("the reservation is not due until {0}")]
    NotDue(DateTime<Utc>),
}

/// The workload types, as `type` names them.
pub const TYPES: [&str; 6] = ["container", "volume", "network", "zdb", "debug", "kubernetes"];

/// Checks that `data` is a workload of type `kind`; errors name the field.
pub fn check_workload(kind: &str, data: &Value) -> Result<Workload, WorkloadRejection> {
    use tenure_events::workload as w;
    fn typed<T: serde::de::DeserializeOwned>(data: &Value) -> Result<T, WorkloadRejection> {
        serde_path_to_error::deserialize(data).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." {
                "data".to_owned()
            } else {
                format!("data.{path}")
            };
            WorkloadRejection::InvalidWorkload(format!("{path}: {}", e.into_inner()))
        })
    }
    match kind {
        "container" => typed::<w::Container>(data).map(Workload::Container),
        "volume" => typed::<w::Volume>(data).map(Workload::Volume),
        "network" => typed::<w::Network>(data).map(Workload::Network),
        "zdb" => typed::<w::Zdb>(data).map(Workload::Zdb),
        "debug" => typed::<w::Debug>(data).map(Workload::Debug),
        "kubernetes" => typed::<w::Kubernetes>(data).map(Workload::Kubernetes),
        other => Err(WorkloadRejection::InvalidWorkload(format!(
            "type: unknown workload type {other:?}; one of {}",
            TYPES.join(", ")
        ))),
    }
}

fn check_node(node: &str) -> Result<(), WorkloadRejection> {
    let ok = (1..=MAX_NODE_LEN).contains(&node.len())
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then_some(()).ok_or(WorkloadRejection::InvalidNode)
}

fn verify(signed: &Signed, signature: &str, public_key: &str) -> Result<(), WorkloadRejection> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key: [u8; 32] = b64
        .decode(public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(WorkloadRejection::NoPublicKey)?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| WorkloadRejection::NoPublicKey)?;
    let signature: [u8; 64] = b64
        .decode(signature)
        .map_err(|_| WorkloadRejection::BadSignature("not base64"))?
        .try_into()
        .map_err(|_| WorkloadRejection::BadSignature("an ed25519 signature is 64 bytes"))?;
    let signature = ed25519_dalek::Signature::from_bytes(&signature);
    key.verify_strict(&signed.canonical(), &signature).map_err(|_| {
        WorkloadRejection::BadSignature("does not verify with the owner's public key over this reservation")
    })
}

impl Aggregate for WorkloadState {
    type Command = WorkloadCommand;
    type Event = WorkloadEvent;
    type Rejection = WorkloadRejection;

    fn decide(&self, command: WorkloadCommand, now: DateTime<Utc>) -> Result<Vec<WorkloadEvent>, WorkloadRejection> {
        match (self, command) {
            (
                WorkloadState::Absent,
                WorkloadCommand::Reserve {
                    signed,
                    signature,
                    public_key,
                },
            ) => {
                check_node(&signed.node)?;
                check_workload(&signed.kind, &signed.data)?;
                if !(1..=MAX_DURATION_S).contains(&signed.duration_s) {
                    return Err(WorkloadRejection::InvalidDuration(signed.duration_s));
                }
                let created = DateTime::from_timestamp(signed.created, 0)
                    .ok_or_else(|| WorkloadRejection::InvalidWorkload("created: not a Unix time".into()))?;
                if created > now + TimeDelta::seconds(MAX_CLOCK_SKEW_S) {
                    return Err(WorkloadRejection::CreatedInFuture(created));
                }
                if created + TimeDelta::seconds(signed.duration_s) <= now {
                    return Err(WorkloadRejection::ExpiredOnArrival {
                        created,
                        duration_s: signed.duration_s,
                    });
                }
                let public_key = public_key.ok_or(WorkloadRejection::NoPublicKey)?;
                verify(&signed, &signature, &public_key)?;
                Ok(vec![WorkloadReserved {
                    node: signed.node,
                    owner: signed.owner,
                    kind: signed.kind,
                    data: signed.data,
                    created,
                    duration_s: signed.duration_s,
                    signature,
                }
                .into()])
            }
            (WorkloadState::Active { .. }, WorkloadCommand::Reserve { .. }) => Err(WorkloadRejection::AlreadyExists),
            (WorkloadState::Absent, _) => Err(WorkloadRejection::NotFound),
            (WorkloadState::Active { .. }, WorkloadCommand::ReportResult { state, error, data }) => {
                if error.len() > MAX_ERROR_LEN {
                    return Err(WorkloadRejection::ErrorTooLong);
                }
                Ok(vec![WorkloadResultReported { state, error, data }.into()])
            }
            (WorkloadState::Active { owner, to_delete, .. }, WorkloadCommand::Delete { caller }) => {
                if *owner != caller {
                    return Err(WorkloadRejection::NotFound);
                }
                if to_delete.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![WorkloadDeleteRequested {
                    reason: DeleteReason::Request,
                }
                .into()])
            }
            (
                WorkloadState::Active {
                    expires_at, to_delete, ..
                },
                WorkloadCommand::Expire,
            ) => {
                if to_delete.is_some() {
                    return Ok(vec![]);
                }
                if now < *expires_at {
                    return Err(WorkloadRejection::NotDue(*expires_at));
                }
                Ok(vec![WorkloadDeleteRequested {
                    reason: DeleteReason::Expired,
                }
                .into()])
            }
        }
    }

    fn evolve(&mut self, event: &WorkloadEvent, _at: DateTime<Utc>) {
        match event {
            WorkloadEvent::Reserved(e) => {
                *self = WorkloadState::Active {
                    owner: e.owner.clone(),
                    expires_at: e.created + TimeDelta::seconds(e.duration_s),
                    to_delete: None,
                }
            }
            WorkloadEvent::DeleteRequested(e) => {
                if let WorkloadState::Active { to_delete, .. } = self {
                    to_delete.get_or_insert(e.reason);
                }
            }
            WorkloadEvent::ResultReported(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{given, t};

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[42; 32])
    }

    fn public_key() -> String {
        base64::engine::general_purpose::STANDARD.encode(key().verifying_key().to_bytes())
    }

    fn signed() -> Signed {
        Signed {
            node: "node-1".into(),
            owner: "alice".parse().expect("valid"),
            kind: "container".into(),
            data: serde_json::json!({
                "flist": "https://hub.grid.tf/tf-official-apps/base:latest.flist",
                "env": {"B": "2", "A": "1"},
                "network": {"network_id": "net1", "ips": ["10.1.1.2"]},
                "capacity": {"cpu": 2, "memory": 2048},
            }),
            created: t(0).timestamp(),
            duration_s: 3600,
        }
    }

    fn reserve(signed: Signed, signature: String) -> WorkloadCommand {
        WorkloadCommand::Reserve {
            signed,
            signature,
            public_key: Some(public_key()),
        }
    }

    fn reserved_event(signed: &Signed, signature: &str) -> WorkloadEvent {
        WorkloadReserved {
            node: signed.node.clone(),
            owner: signed.owner.clone(),
            kind: signed.kind.clone(),
            data: signed.data.clone(),
            created: t(0),
            duration_s: signed.duration_s,
            signature: signature.into(),
        }
        .into()
    }

    #[test]
    fn the_canonical_form_sorts_keys_at_every_level_without_whitespace() {
        let canonical = String::from_utf8(signed().canonical()).expect("utf-8");
        assert_eq!(
            canonical,
            format!(
                "{{\"created\":{},\"data\":{{\"capacity\":{{\"cpu\":2,\"memory\":2048}},\"env\":{{\"A\":\"1\",\"B\":\"2\"}},\
                 \"flist\":\"https://hub.grid.tf/tf-official-apps/base:latest.flist\",\"network\":{{\"ips\":[\"10.1.1.2\"],\
                 \"network_id\":\"net1\"}}}},\"duration_s\":3600,\"node\":\"node-1\",\"owner\":\"alice\",\"type\":\"container\"}}",
                t(0).timestamp()
            )
        );
    }

    #[test]
    fn a_signed_reservation_is_recorded_and_tampering_with_any_field_is_rejected() {
        let original = signed();
        let signature = sign(&original, &key());
        given::<WorkloadState>([])
            .when(reserve(original.clone(), signature.clone()))
            .then([reserved_event(&original, &signature)]);

        let tampered: Vec<(&str, Signed)> = vec![
            (
                "node",
                Signed {
                    node: "node-2".into(),
                    ..original.clone()
                },
            ),
            (
                "owner",
                Signed {
                    owner: "mallory".parse().expect("valid"),
                    ..original.clone()
                },
            ),
            (
                "type",
                Signed {
                    kind: "debug".into(),
                    ..original.clone()
                },
            ),
            (
                "created",
                Signed {
                    created: original.created - 1,
                    ..original.clone()
                },
            ),
            (
                "duration",
                Signed {
                    duration_s: 7200,
                    ..original.clone()
                },
            ),
            ("data", {
                let mut s = original.clone();
                s.data["capacity"]["memory"] = serde_json::json!(4096);
                s
            }),
            ("data env", {
                let mut s = original.clone();
                s.data["env"]["A"] = serde_json::json!("x");
                s
            }),
        ];
        for (what, changed) in tampered {
            let outcome = WorkloadState::Absent.decide(reserve(changed, signature.clone()), t(0));
            assert!(
                matches!(
                    outcome,
                    Err(WorkloadRejection::BadSignature(_)) | Err(WorkloadRejection::InvalidWorkload(_))
                ),
                "tampered {what}: {outcome:?}"
            );
        }
    }

    #[test]
    fn unsigned_badly_signed_unkeyed_expired_and_invalid_reservations_are_refused() {
        let s = signed();
        let good = sign(&s, &key());
        let check = |command: WorkloadCommand, now, rejection: WorkloadRejection| {
            given::<WorkloadState>([]).at(now).when(command).then_rejects(rejection);
        };
        check(
            reserve(s.clone(), String::new()),
            t(0),
            WorkloadRejection::BadSignature("an ed25519 signature is 64 bytes"),
        );
        check(
            reserve(s.clone(), "%%%".into()),
            t(0),
            WorkloadRejection::BadSignature("not base64"),
        );
        let other = sign(&s, &ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
        check(
            reserve(s.clone(), other),
            t(0),
            WorkloadRejection::BadSignature("does not verify with the owner's public key over this reservation"),
        );
        check(
            WorkloadCommand::Reserve {
                signed: s.clone(),
                signature: good.clone(),
                public_key: None,
            },
            t(0),
            WorkloadRejection::NoPublicKey,
        );
        check(
            reserve(s.clone(), good.clone()),
            t(3600),
            WorkloadRejection::ExpiredOnArrival {
                created: t(0),
                duration_s: 3600,
            },
        );
        check(
            reserve(s.clone(), good.clone()),
            t(-301),
            WorkloadRejection::CreatedInFuture(t(0)),
        );
        check(
            reserve(
                Signed {
                    duration_s: 0,
                    ..s.clone()
                },
                good.clone(),
            ),
            t(0),
            WorkloadRejection::InvalidDuration(0),
        );
        check(
            reserve(
                Signed {
                    node: "a/b".into(),
                    ..s.clone()
                },
                good.clone(),
            ),
            t(0),
            WorkloadRejection::InvalidNode,
        );
        let outcome = WorkloadState::Absent.decide(
            reserve(
                Signed {
                    data: serde_json::json!({"size": "big", "type": "ssd"}),
                    kind: "volume".into(),
                    ..s
                },
                good,
            ),
            t(0),
        );
        assert!(
            matches!(&outcome, Err(WorkloadRejection::InvalidWorkload(m)) if m.starts_with("data.size:")),
            "{outcome:?}"
        );
    }

    #[test]
    fn every_documented_type_parses() {
        for (kind, data) in [
            ("volume", serde_json::json!({"size": 10, "type": "hdd"})),
            ("network", serde_json::json!({"name": "net1", "iprange": "10.1.0.0/16"})),
            (
                "zdb",
                serde_json::json!({"size": 5, "mode": "seq", "disk_type": "ssd", "public": true}),
            ),
            (
                "debug",
                serde_json::json!({"host": "10.0.0.1", "port": 6379, "channel": "logs"}),
            ),
            (
                "kubernetes",
                serde_json::json!({"size": 1, "network_id": "net1", "ip": "10.1.1.3", "cluster_secret": "ab"}),
            ),
        ] {
            let workload = check_workload(kind, &data).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(workload.kind(), kind);
        }
        assert!(check_workload("vm", &serde_json::json!({})).is_err());
        assert!(check_workload("volume", &serde_json::json!({"size": 1, "type": "ssd", "extra": 1})).is_err());
    }

    #[test]
    fn results_delete_and_expiry() {
        let s = signed();
        let reserved = reserved_event(&s, "sig");
        given::<WorkloadState>([reserved.clone()])
            .when(WorkloadCommand::ReportResult {
                state: ResultState::Ok,
                error: String::new(),
                data: serde_json::json!({"id": "c1"}),
            })
            .then([WorkloadResultReported {
                state: ResultState::Ok,
                error: String::new(),
                data: serde_json::json!({"id": "c1"}),
            }
            .into()]);
        let requested: WorkloadEvent = WorkloadDeleteRequested {
            reason: DeleteReason::Request,
        }
        .into();
        given::<WorkloadState>([reserved.clone()])
            .when(WorkloadCommand::Delete {
                caller: "alice".parse().expect("valid"),
            })
            .then([requested.clone()]);
        given::<WorkloadState>([reserved.clone()])
            .when(WorkloadCommand::Delete {
                caller: "bob".parse().expect("valid"),
            })
            .then_rejects(WorkloadRejection::NotFound);
        given::<WorkloadState>([reserved.clone(), requested.clone()])
            .when(WorkloadCommand::Delete {
                caller: "alice".parse().expect("valid"),
            })
            .then([]);
        given::<WorkloadState>([reserved.clone()])
            .at(t(3599))
            .when(WorkloadCommand::Expire)
            .then_rejects(WorkloadRejection::NotDue(t(3600)));
        given::<WorkloadState>([reserved.clone()])
            .at(t(3600))
            .when(WorkloadCommand::Expire)
            .then([WorkloadDeleteRequested {
                reason: DeleteReason::Expired,
            }
            .into()]);
        given::<WorkloadState>([reserved, requested])
            .at(t(3600))
            .when(WorkloadCommand::Expire)
            .then([]);
        given::<WorkloadState>([])
            .when(WorkloadCommand::Expire)
            .then_rejects(WorkloadRejection::NotFound);
    }
}

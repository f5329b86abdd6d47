//! Golden vectors of the hash chain: envelopes with the canonical bytes and
//! links an independent implementation computed for them. Every backend's
//! chain rests on this format, so these must never change.

use std::path::Path;

use chrono::{DateTime, Utc};
use tenure_events::chain::canonical_bytes;
use tenure_events::{ChainHash, RecordedEvent, StreamId};
use uuid::Uuid;

#[derive(serde::Deserialize)]
struct Vector {
    position: u64,
    stream: String,
    version: u64,
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    time: DateTime<Utc>,
    account: String,
    request_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    payload: String,
    canonical_hex: String,
    hash: ChainHash,
}

#[derive(serde::Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

fn vectors() -> Vec<Vector> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chain/vectors.json");
    let text = std::fs::read_to_string(&path).expect("the vectors file is readable");
    serde_json::from_str::<Vectors>(&text)
        .expect("the vectors parse")
        .vectors
}

fn envelope(v: &Vector) -> RecordedEvent {
    RecordedEvent {
        position: v.position,
        stream: StreamId::new(v.stream.clone()).expect("valid stream"),
        version: v.version,
        event_id: v.event_id,
        event_type: v.event_type.clone(),
        schema_version: v.schema_version,
        time: v.time,
        account: v.account.parse().expect("valid account"),
        request_id: v.request_id,
        causation_id: v.causation_id,
        payload: v.payload.clone(),
        hash: ChainHash::ZERO,
    }
}

#[test]
fn canonical_bytes_and_links_match_the_golden_vectors() {
    let vectors = vectors();
    assert!(vectors.len() >= 4, "the vectors cover several events");
    let mut previous = ChainHash::ZERO;
    for v in &vectors {
        let mut event = envelope(v);
        assert_eq!(
            hex::encode(canonical_bytes(&event)),
            v.canonical_hex,
            "canonical bytes of position {}",
            v.position
        );
        event.chain_after(&previous);
        assert_eq!(event.hash, v.hash, "link of position {}", v.position);
        previous = event.hash;
    }
}

#[test]
fn any_change_to_an_envelope_changes_its_link() {
    let v = &vectors()[1];
    let base = envelope(v);
    let link = |e: &RecordedEvent| ChainHash::ZERO.next(e);
    let original = link(&base);
    let mut changes: Vec<(&str, RecordedEvent)> = Vec::new();
    let mut e = base.clone();
    e.position += 1;
    changes.push(("position", e));
    let mut e = base.clone();
    e.stream = StreamId::new("keyspace/other").expect("valid");
    changes.push(("stream", e));
    let mut e = base.clone();
    e.version += 1;
    changes.push(("version", e));
    let mut e = base.clone();
    e.event_id = Uuid::nil();
    changes.push(("event id", e));
    let mut e = base.clone();
    e.event_type = "KeyDeleted".into();
    changes.push(("type", e));
    let mut e = base.clone();
    e.schema_version = 2;
    changes.push(("schema version", e));
    let mut e = base.clone();
    e.time += chrono::TimeDelta::microseconds(1);
    changes.push(("time", e));
    let mut e = base.clone();
    e.account = "other".parse().expect("valid");
    changes.push(("account", e));
    let mut e = base.clone();
    e.request_id = None;
    changes.push(("request id", e));
    let mut e = base.clone();
    e.causation_id = Some(Uuid::nil());
    changes.push(("causation id", e));
    let mut e = base.clone();
    e.payload.replace_range(0..1, " ");
    changes.push(("payload", e));
    for (what, changed) in changes {
        assert_ne!(link(&changed), original, "a change of the {what} keeps the link");
    }
}

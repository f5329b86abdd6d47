//! Golden fixtures: one JSON file per event type and schema version. Every
//! fixture must keep decoding, and a fixture of the current version must
//! re-encode to exactly the same payload.

use std::collections::BTreeSet;
use std::path::Path;

use tenure_events::{Event, EventSet};

#[derive(serde::Deserialize)]
struct Fixture {
    event_type: String,
    schema_version: u32,
    payload: serde_json::Value,
}

fn fixtures() -> Vec<(String, Fixture)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("golden fixture directory exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable fixture");
        let fixture: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((path.display().to_string(), fixture));
    }
    out
}

#[test]
fn every_fixture_decodes_and_current_ones_reencode_identically() {
    for (path, f) in fixtures() {
        let payload = f.payload.to_string();
        let event = Event::decode(&f.event_type, f.schema_version, &payload).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(event.event_type(), f.event_type, "{path}");
        if f.schema_version == event.schema_version() {
            let reencoded: serde_json::Value = serde_json::from_str(&event.encode()).expect("valid JSON");
            assert_eq!(reencoded, f.payload, "{path}: re-encoding changed the payload");
        }
    }
}

#[test]
fn every_event_type_and_version_has_a_fixture() {
    let have: BTreeSet<(String, u32)> = fixtures()
        .into_iter()
        .map(|(_, f)| (f.event_type, f.schema_version))
        .collect();
    for (event_type, version) in Event::types() {
        for v in 1..=version {
            assert!(
                have.contains(&(event_type.to_owned(), v)),
                "no golden fixture for {event_type} v{v} in events/tests/golden/"
            );
        }
    }
}

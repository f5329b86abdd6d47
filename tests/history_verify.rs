//! `tenure verify` on real logs: an untouched log passes; a byte edited in a
//! payload, a row deleted, two rows' payloads swapped and a cut-off tail
//! (against a recorded head) each fail, naming the position; a log written
//! before the hash chain existed is chained when a server first opens it,
//! with exactly the golden links, and then verifies; the projections a
//! running server holds equal those rebuilt from its log (keep-alives,
//! which are not in it, included); and a log with the keep-alive events an
//! older server wrote still verifies, replays and serves.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use common::binary::{stdout, ServerProcess, BIN};
use common::TestServer;
use reqwest::StatusCode;
use rusqlite::{params, Connection};
use serde_json::json;
use tenure::snapshot::store::{Header, SnapshotFile};
use tenure::snapshot::{decode, encode, FORMAT_VERSION};
use tenure_projections::snapshot::SetSnapshot;

fn verify(dir: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["verify", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("TENURE_ENDPOINT")
        .output()
        .expect("run tenure verify")
}

/// A log with a little of everything: leases with keys, an expiry and a
/// revoke (with their key deletions), a service with an instance, a
/// reserved share, and a keep-alive (which records nothing). Answers the
/// data directory and the head.
async fn scripted_history(server: &TestServer) -> String {
    let lease = server.grant(10).await;
    for key in ["a", "b"] {
        assert_eq!(server.put_key(key, "v", Some(&lease)).await.0, StatusCode::OK);
    }
    let other = server.grant(100).await;
    assert_eq!(server.put_key("c", "w", Some(&other)).await.0, StatusCode::OK);
    assert_eq!(server.put_key("plain", "x", None).await.0, StatusCode::OK);
    let (status, _) = server.post(&format!("/v1/leases/{other}/keepalive"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let session = server.session_with_header(None);
    session.create_service("web", json!(["443:8080/tls+http"])).await;
    session.attach("web-1", "web", "127.0.0.1:9", 100).await;
    let (status, body) = server
        .post(
            "/v1/shares",
            json!({"mode": "public", "target": "http://127.0.0.1:9", "unique_name": "demo"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.clock.advance(Duration::from_secs(11));
    server
        .wait_for_log("the first lease's expiry and its keys' deletion", |events| {
            common::count_type(events, "KeyDeleted") == 2
        })
        .await;
    let (status, _) = server.delete(&format!("/v1/leases/{other}")).await;
    assert_eq!(status, StatusCode::OK);
    // A txn: two puts (one with a lease) and a deletion at one revision.
    let last = server.grant(100).await;
    let last_id = i64::from_str_radix(&last, 16).expect("a hex lease ID");
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let txn = json!({"success": [
        {"request_put": {"key": b64("t/1"), "value": b64("v"), "lease": last_id}},
        {"request_put": {"key": b64("t/2"), "value": b64("v")}},
        {"request_delete_range": {"key": b64("plain")}},
    ]});
    let (status, body) = server.post("/v3/kv/txn", txn).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, health) = server.get("/healthz").await;
    health["head"].as_str().expect("a head").to_owned()
}

/// A copy of a data directory's log files.
fn copy_log(from: &Path) -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(from).expect("data dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.starts_with("events.sqlite3") {
            std::fs::copy(&path, temp.path().join(&name)).expect("copy");
        }
    }
    let dir = temp.path().to_path_buf();
    (temp, dir)
}

fn sql(dir: &Path) -> Connection {
    Connection::open(dir.join("events.sqlite3")).expect("open the log with rusqlite")
}

fn payload(conn: &Connection, position: i64) -> String {
    conn.query_row("SELECT payload FROM events WHERE position = ?1", [position], |r| {
        r.get(0)
    })
    .expect("payload")
}

fn fails_at(out: &Output, position: u64, what: &str) {
    let printed = stdout(out);
    assert_eq!(out.status.code(), Some(1), "verify should fail: {printed}");
    assert!(
        printed.contains(&format!("FAILED: position {position}: ")) && printed.contains(what),
        "expected position {position} ({what}) in: {printed}"
    );
}

#[actix_rt::test]
async fn verify_passes_an_untouched_log_and_names_the_first_damage_in_a_tampered_one() {
    let mut server = TestServer::start().await;
    let head = scripted_history(&server).await;
    server.stop().await;
    let (position, _) = head.split_once(':').expect("POSITION:HASH");
    let last: u64 = position.parse().expect("a position");
    assert!(last >= 15, "a history of {last} events");

    let untouched = verify(&server.dir, &["--expect-head", &head]);
    assert!(untouched.status.success(), "{}", stdout(&untouched));
    assert!(
        stdout(&untouched).contains(&format!("head: {head}")),
        "{}",
        stdout(&untouched)
    );

    // One byte of one payload.
    let (_t1, edited) = copy_log(&server.dir);
    {
        let conn = sql(&edited);
        let mut text = payload(&conn, 6);
        let i = text.find('"').expect("a JSON payload") + 1;
        let byte = text.as_bytes()[i];
        text.replace_range(i..=i, if byte == b'x' { "y" } else { "x" });
        conn.execute("UPDATE events SET payload = ?1 WHERE position = 6", [&text])
            .expect("edit");
    }
    fails_at(&verify(&edited, &[]), 6, "does not match its chain hash");

    // A row deleted.
    let (_t2, deleted) = copy_log(&server.dir);
    sql(&deleted)
        .execute("DELETE FROM events WHERE position = 9", [])
        .expect("delete");
    fails_at(&verify(&deleted, &[]), 9, "position 9 is missing");

    // Two rows' payloads swapped.
    let (_t3, swapped) = copy_log(&server.dir);
    {
        let conn = sql(&swapped);
        let (p2, p3) = (payload(&conn, 2), payload(&conn, 3));
        assert_ne!(p2, p3);
        conn.execute(
            "UPDATE events SET payload = CASE position WHEN 2 THEN ?1 ELSE ?2 END WHERE position IN (2, 3)",
            params![p3, p2],
        )
        .expect("swap");
    }
    fails_at(&verify(&swapped, &[]), 2, "does not match its chain hash");

    // The tail cut off: the chain that is left is whole, so only the head
    // recorded elsewhere tells, or a snapshot taken past the cut.
    let (_t4, cut) = copy_log(&server.dir);
    sql(&cut)
        .execute("DELETE FROM events WHERE position > ?1", [last as i64 - 2])
        .expect("cut");
    let past = verify(&cut, &[]);
    assert_eq!(past.status.code(), Some(1), "{}", stdout(&past));
    assert!(
        stdout(&past).contains("the log holds no such event"),
        "{}",
        stdout(&past)
    );
    sql(&cut)
        .execute_batch("DELETE FROM snapshots; DELETE FROM snapshot_chunks;")
        .expect("no snapshots");
    assert!(verify(&cut, &[]).status.success(), "a cut log alone still chains");
    fails_at(
        &verify(&cut, &["--expect-head", &head]),
        last - 1,
        "events were cut off",
    );

    // A bad expected head is a usage error, not a verdict.
    let bad = verify(&server.dir, &["--expect-head", "12:abc"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--expect-head"));
}

/// The schema-1 tables, as the release before the hash chain created them.
const SCHEMA_1: &str = "
CREATE TABLE streams (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE) STRICT;
CREATE TABLE events (
    position INTEGER PRIMARY KEY, stream_id INTEGER NOT NULL REFERENCES streams (id), version INTEGER NOT NULL,
    event_id BLOB NOT NULL, event_type TEXT NOT NULL, schema_version INTEGER NOT NULL, time_us INTEGER NOT NULL,
    account TEXT NOT NULL, request_id BLOB, causation_id BLOB, payload TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX events_by_stream ON events (stream_id, version);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
";

#[derive(serde::Deserialize)]
struct Vector {
    position: i64,
    stream: String,
    version: i64,
    event_id: uuid::Uuid,
    event_type: String,
    schema_version: i64,
    time: chrono::DateTime<chrono::Utc>,
    account: String,
    request_id: Option<uuid::Uuid>,
    causation_id: Option<uuid::Uuid>,
    payload: String,
    hash: String,
}

#[actix_rt::test]
async fn a_log_from_before_the_chain_is_chained_on_first_open_and_verifies() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().to_path_buf();
    // The golden vectors' envelopes, written the way schema 1 held them.
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("events/tests/chain/vectors.json"))
        .expect("the golden vectors");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let vectors: Vec<Vector> = serde_json::from_value(doc["vectors"].clone()).expect("vectors");
    {
        let conn = sql(&dir);
        conn.execute_batch(SCHEMA_1).expect("schema 1");
        for v in &vectors {
            conn.execute("INSERT OR IGNORE INTO streams (name) VALUES (?1)", [&v.stream])
                .expect("stream");
            let stream: i64 = conn
                .query_row("SELECT id FROM streams WHERE name = ?1", [&v.stream], |r| r.get(0))
                .expect("stream id");
            conn.execute(
                "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    v.position,
                    stream,
                    v.version,
                    v.event_id.as_bytes().as_slice(),
                    v.event_type,
                    v.schema_version,
                    v.time.timestamp_micros(),
                    v.account,
                    v.request_id.as_ref().map(|u| u.as_bytes().to_vec()),
                    v.causation_id.as_ref().map(|u| u.as_bytes().to_vec()),
                    v.payload,
                ],
            )
            .expect("event");
        }
    }
    // Before: nothing to verify the chain with.
    let unchained = verify(&dir, &[]);
    assert_eq!(unchained.status.code(), Some(1));
    assert!(
        stdout(&unchained).contains("predates the hash chain"),
        "{}",
        stdout(&unchained)
    );

    // A server opens it: the migration chains it, and it serves it.
    let mut server = TestServer::start_in(dir.clone(), tenure::clock::ManualClock::at_epoch()).await;
    let (_, health) = server.get("/healthz").await;
    let last = vectors.last().expect("vectors");
    assert_eq!(health["head"], format!("{}:{}", last.position, last.hash), "{health}");
    let events = server.events().await;
    for (event, v) in events.iter().zip(&vectors) {
        assert_eq!(event.hash.to_string(), v.hash, "the link of position {}", v.position);
    }
    // It goes on appending to the same chain.
    server.grant(30).await;
    let (_, health) = server.get("/healthz").await;
    let head = health["head"].as_str().expect("head").to_owned();
    server.stop().await;
    let verified = verify(&dir, &["--expect-head", &head]);
    assert!(verified.status.success(), "{}", stdout(&verified));
}

#[test]
fn a_running_servers_projections_equal_those_rebuilt_from_its_log() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(temp.path(), &[]);
    let lease = server.cli(&["lease", "grant", "100"]);
    let lease = stdout(&lease).split_whitespace().nth(1).expect("lease id").to_owned();
    assert!(server
        .cli(&["put", "k", "v", &format!("--lease={lease}")])
        .status
        .success());
    assert!(server.cli(&["service", "create", "web", "443:8080"]).status.success());
    assert!(server
        .cli(&["reserve", "public", "http://127.0.0.1:9", "--unique-name", "demo"])
        .status
        .success());
    // A keep-alive moves a deadline in the server's memory, not in the log:
    // the digests (of what the log determines) still agree.
    assert!(server.cli(&["lease", "keep-alive", &lease, "--once"]).status.success());
    // Verified while the server runs, against its own projections.
    let out = Command::new(BIN)
        .args(["verify", "--data-dir"])
        .arg(temp.path())
        .args(["--endpoint", &server.endpoint])
        .output()
        .expect("run tenure verify");
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}");
    for name in [
        "catalog",
        "directory",
        "expiry-queue",
        "routing",
        "services",
        "shares",
        "workloads",
    ] {
        assert!(printed.contains(name), "{name} compared: {printed}");
    }
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_that_differ_from_the_servers_are_named() {
    use tenure::history::{verify_log, ServerDigests, VerifyError};
    use tenure::store::{EventStore, ExpectedVersion, SqliteLogFile, SqliteStore};
    let temp = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(temp.path()).expect("store");
    let account = tenure_events::AccountId::default_account();
    let lease = tenure_events::LeaseId::new(7).expect("positive");
    let granted = tenure_events::LeaseEvent::from(tenure_events::LeaseGranted {
        lease,
        ttl_s: 10,
        requested_ttl_s: 10,
    });
    let event = tenure_events::NewEvent::new(
        &granted,
        &tenure_events::Metadata::new(account.clone()),
        chrono::Utc::now(),
    );
    store
        .append(
            tenure_events::StreamId::lease(&account, lease),
            ExpectedVersion::Exact(0),
            vec![event],
        )
        .await
        .expect("append");
    store.close();
    let mut folded = tenure_projections::ProjectionSet::new(chrono::DateTime::<chrono::Utc>::MIN_UTC, "x.localhost");
    let mut log = SqliteLogFile::open(temp.path()).expect("log");
    folded.apply(&log.read_page(1, 10).expect("read")[0]);
    let mut digests: std::collections::BTreeMap<String, String> =
        folded.digests().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let server = |digests| ServerDigests {
        position: 1,
        domain: "x.localhost".into(),
        digests,
    };
    let same = verify_log(log, None, Some(&server(digests.clone())), |_| {}).expect("the same projections");
    assert_eq!(same.projections.len(), 7);
    digests.insert("expiry-queue".into(), "0".repeat(64));
    let log = SqliteLogFile::open(temp.path()).expect("log");
    match verify_log(log, None, Some(&server(digests)), |_| {}) {
        Err(VerifyError::Projection { name, position, .. }) => {
            assert_eq!((name.as_str(), position), ("expiry-queue", 1))
        }
        other => panic!("expected a projection mismatch, got {other:?}"),
    }
}

/// A log from before keep-alives left it holds `LeaseKeptAlive` events:
/// they still decode, verify, replay (moving the deadline replay shows),
/// show in the lease's audit, and a server loads the lease (which then
/// gets its full TTL from the server's start, and is kept alive without
/// events from then on).
#[actix_rt::test]
async fn a_log_with_keep_alive_events_from_an_older_server_still_verifies_replays_and_serves() {
    use tenure::store::{EventStore, ExpectedVersion, SqliteStore};
    use tenure_events::{AccountId, LeaseEvent, LeaseGranted, LeaseId, LeaseKeptAlive, Metadata, NewEvent, StreamId};
    let temp = tempfile::tempdir().expect("temp dir");
    let clock = tenure::clock::ManualClock::at_epoch();
    let t0 = {
        use tenure::clock::Clock;
        clock.now()
    };
    let at = |s: i64| t0 + chrono::TimeDelta::seconds(s);
    let account = AccountId::default_account();
    let lease = LeaseId::new(0x1a20).expect("positive");
    let store = SqliteStore::open(temp.path()).expect("store");
    let meta = Metadata::new(account.clone());
    let events: Vec<(LeaseEvent, i64)> = vec![
        (
            LeaseGranted {
                lease,
                ttl_s: 10,
                requested_ttl_s: 10,
            }
            .into(),
            0,
        ),
        (LeaseKeptAlive { lease }.into(), 6),
        (LeaseKeptAlive { lease }.into(), 12),
    ];
    for (version, (event, s)) in events.iter().enumerate() {
        store
            .append(
                StreamId::lease(&account, lease),
                ExpectedVersion::Exact(version as u64),
                vec![NewEvent::new(event, &meta, at(*s))],
            )
            .await
            .expect("append");
    }
    store.close();

    let verified = verify(temp.path(), &[]);
    assert!(verified.status.success(), "{}", stdout(&verified));
    let replay = |until: &str| {
        let out = Command::new(BIN)
            .args(["replay", "--data-dir"])
            .arg(temp.path())
            .args(["--until", until, "--what", "leases", "-o", "json"])
            .output()
            .expect("run tenure replay");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).expect("JSON")["leases"][0].clone()
    };
    let shown = replay("3");
    assert_eq!(shown["refreshed_at"], json!(at(12)), "{shown}");
    assert_eq!(shown["deadline"], json!(at(22)), "{shown}");

    // A server started at t=30 loads the lease with a full TTL from then.
    clock.advance(Duration::from_secs(30));
    let server = TestServer::start_in(temp.path().to_path_buf(), clock.clone()).await;
    let (status, body) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!((status, body["ttl"].as_i64()), (StatusCode::OK, Some(10)), "{body}");
    let (status, audit) = server.get(&format!("/v1/audit?entity={lease}")).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let summaries: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["summary"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        summaries,
        vec![
            format!("lease {lease} granted with TTL 10s"),
            format!("lease {lease} kept alive"),
            format!("lease {lease} kept alive"),
        ]
    );
    clock.advance(Duration::from_secs(8));
    let (status, _) = server.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    clock.advance(Duration::from_secs(9));
    let (status, body) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!((status, body["ttl"].as_i64()), (StatusCode::OK, Some(1)), "{body}");
    assert_eq!(server.store().head(), 3, "the new keep-alive was not written");
    clock.advance(Duration::from_secs(1));
    server
        .wait_for_log("the expiry", |events| common::count_type(events, "LeaseExpired") == 1)
        .await;
}

/// Rewrites a stored snapshot with these bytes and format version, its
/// checksum made to match (what a buggy or another build would write).
fn rewrite_snapshot(dir: &Path, header: &Header, format_version: u32, bytes: &[u8]) {
    let conn = sql(dir);
    let checksum = Header::checksum_of(
        &header.name,
        format_version,
        header.position,
        header.version,
        &header.link,
        bytes,
    );
    conn.execute("DELETE FROM snapshot_chunks WHERE snapshot_id = ?1", [header.id])
        .expect("delete chunks");
    conn.execute(
        "INSERT INTO snapshot_chunks (snapshot_id, seq, data) VALUES (?1, 0, ?2)",
        params![header.id, bytes],
    )
    .expect("chunk");
    conn.execute(
        "UPDATE snapshots SET format_version = ?1, bytes = ?2, checksum = ?3 WHERE id = ?4",
        params![format_version, bytes.len() as i64, checksum.as_slice(), header.id],
    )
    .expect("header");
}

/// `tenure verify` folds the log alone and compares every stored snapshot
/// with that fold at the snapshot's position: equal ones are listed; one
/// that differs (its checksum made to match, so a server would have read
/// it) is a failure naming the projection; one of another format version
/// is named as not compared.
#[actix_rt::test]
async fn verify_compares_each_stored_snapshot_with_the_logs_own_fold() {
    let mut server = TestServer::start().await;
    scripted_history(&server).await;
    server.stop().await; // a clean stop writes the snapshots
    let headers = SnapshotFile::open_read_only(&server.dir)
        .expect("open")
        .expect("snapshot tables")
        .headers(None)
        .expect("headers");
    let names: Vec<&str> = headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["keyspace/default", "projections"]);

    let out = verify(&server.dir, &[]);
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains(&format!(
            "snapshots equal the log's fold at their position: keyspace/default at {}, projections at {}",
            headers[0].position, headers[1].position
        )),
        "{printed}"
    );

    let (_temp, dir) = copy_log(&server.dir);
    let file = SnapshotFile::open_read_only(&dir).expect("open").expect("tables");
    let projections = &headers[1];
    let mut set: SetSnapshot = decode(&file.read(projections).expect("reads back")).expect("decodes");
    set.catalog.push("zzz".parse().expect("an account"));
    rewrite_snapshot(&dir, projections, FORMAT_VERSION, &encode(&set).expect("encodes"));
    let out = verify(&dir, &[]);
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains(&format!(
            "FAILED: snapshot projections at position {}: differs from what the log folds into: catalog",
            projections.position
        )),
        "{printed}"
    );

    let keyspace = &headers[0];
    let bytes = file.read(keyspace).expect("reads back");
    rewrite_snapshot(&dir, keyspace, FORMAT_VERSION + 1, &bytes);
    rewrite_snapshot(&dir, projections, FORMAT_VERSION + 1, &bytes);
    let out = verify(&dir, &[]);
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains(&format!(
            "snapshot keyspace/default at {} is of format version {}, not {FORMAT_VERSION}: not compared",
            keyspace.position,
            FORMAT_VERSION + 1
        )),
        "{printed}"
    );
}

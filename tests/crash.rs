//! kill -9 while clients issue commands: after a restart every acknowledged
//! command is there, and the log reads back whole.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::binary::{signal, ServerProcess};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tenure::store::{EventStore, SqliteStore};

/// What a client was told was done.
#[derive(Default)]
struct Acked {
    leases: Vec<String>,
    /// key -> value, for keys whose put was acknowledged and no delete tried.
    present: HashMap<String, String>,
    /// Keys whose delete was acknowledged.
    deleted: Vec<String>,
}

async fn client(endpoint: String, id: usize, acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    let ok = |r: Result<reqwest::Response, reqwest::Error>| r.ok().filter(|r| r.status().is_success());
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let Some(res) = ok(http
            .post(format!("{endpoint}/v1/leases"))
            .json(&json!({"ttl": 1000}))
            .send()
            .await)
        else {
            return;
        };
        let Ok(body) = res.json::<Value>().await else { return };
        let lease = body["id"].as_str().unwrap_or_default().to_owned();
        acked.lock().leases.push(lease.clone());

        let key = format!("c{id}/{n}");
        let value = format!("v{n}");
        let put = http
            .put(format!("{endpoint}/v1/keys?key={key}"))
            .json(&json!({"value": value, "lease": lease}));
        if ok(put.send().await).is_none() {
            return;
        }
        acked.lock().present.insert(key.clone(), value);

        if n % 3 == 0 {
            // From here on the key's fate is unknown until the delete is acknowledged.
            acked.lock().present.remove(&key);
            if ok(http.delete(format!("{endpoint}/v1/keys?key={key}")).send().await).is_none() {
                return;
            }
            acked.lock().deleted.push(key);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::start(dir.path(), &[]);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|id| {
            tokio::spawn(client(
                server.endpoint.clone(),
                id,
                Arc::clone(&acked),
                Arc::clone(&stop),
            ))
        })
        .collect();

    // Let the clients get going, then kill the server mid-flight.
    let started = std::time::Instant::now();
    while acked.lock().leases.len() < 500 {
        assert!(started.elapsed() < common::PATIENCE, "clients made no progress");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reap");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }

    let server = ServerProcess::start(dir.path(), &[]);
    let http = reqwest::Client::new();
    let acked = std::mem::take(&mut *acked.lock());
    assert!(acked.leases.len() >= 500);
    for lease in &acked.leases {
        let res = http
            .get(format!("{}/v1/leases/{lease}", server.endpoint))
            .send()
            .await
            .expect("get lease");
        assert_eq!(
            res.status(),
            200,
            "acknowledged lease {lease} is missing after the crash"
        );
    }
    for (key, value) in &acked.present {
        let res = http
            .get(format!("{}/v1/keys?key={key}", server.endpoint))
            .send()
            .await
            .expect("get key");
        assert_eq!(res.status(), 200, "acknowledged key {key} is missing after the crash");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["value"].as_str(), Some(value.as_str()));
    }
    for key in &acked.deleted {
        let res = http
            .get(format!("{}/v1/keys?key={key}", server.endpoint))
            .send()
            .await
            .expect("get key");
        assert_eq!(
            res.status(),
            404,
            "acknowledged delete of {key} is undone after the crash"
        );
    }
    server.terminate();

    // The log reads back whole: contiguous positions, contiguous versions
    // per stream, every event decodes.
    let store = SqliteStore::open(dir.path()).expect("open the log");
    let events = store.read_all(1, usize::MAX).await.expect("read the log");
    assert_eq!(events.len() as u64, store.head());
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1);
        let v = versions.entry(e.stream.as_str().to_owned()).or_default();
        *v += 1;
        assert_eq!(e.version, *v, "stream {} versions", e.stream);
        e.decode()
            .unwrap_or_else(|err| panic!("event {} does not decode: {err}", e.position));
    }
    let head = store.chain_head();
    store.close();

    // And its hash chain is whole across the crash: `tenure verify` passes
    // and reaches the head the store reports.
    let verified = std::process::Command::new(common::binary::BIN)
        .args(["verify", "--data-dir"])
        .arg(dir.path())
        .args(["--expect-head", &head.to_string()])
        .env_remove("TENURE_ENDPOINT")
        .output()
        .expect("run tenure verify");
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}

/// A keep-alive is not durable: a lease kept alive past its TTL up to a
/// kill -9 owes its life after the restart to the rule that a restart gives
/// every live lease its full TTL (counted from the restart), not to any
/// record of the renewals, of which the log has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_kept_alive_up_to_a_kill_9_has_its_full_ttl_after_the_restart() {
    const TTL_S: u64 = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    let http = reqwest::Client::new();
    let json = |res: reqwest::Response| async move {
        let status = res.status();
        (status, res.json::<Value>().await.expect("a JSON answer"))
    };
    let position = |endpoint: String| {
        let http = http.clone();
        async move {
            let res = http.get(format!("{endpoint}/healthz")).send().await.expect("healthz");
            res.json::<Value>().await.expect("JSON")["position"]
                .as_u64()
                .expect("a position")
        }
    };
    let res = http
        .post(format!("{}/v1/leases", server.endpoint))
        .json(&json!({ "ttl": TTL_S }))
        .send()
        .await
        .expect("grant");
    let lease = json(res).await.1["id"].as_str().expect("lease id").to_owned();
    let put = http
        .put(format!("{}/v1/keys?key=held", server.endpoint))
        .json(&json!({ "value": "v", "lease": lease }))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 200);
    let head = position(server.endpoint.clone()).await;

    // Kept alive every 500 ms for 1.5 TTLs: past the grant's deadline.
    let kept_since = std::time::Instant::now();
    while kept_since.elapsed() < std::time::Duration::from_millis(TTL_S * 1500) {
        let res = http
            .post(format!("{}/v1/leases/{lease}/keepalive", server.endpoint))
            .send()
            .await
            .expect("keep-alive");
        let (status, body) = json(res).await;
        assert_eq!((status.as_u16(), body["ttl"].as_u64()), (200, Some(TTL_S)), "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(
        position(server.endpoint.clone()).await,
        head,
        "keep-alives were written"
    );

    signal(server.child.id(), "KILL");
    let mut server = server;
    server.child.wait().expect("reap");
    let restarted_at = std::time::Instant::now();
    let server = ServerProcess::start(dir.path(), &[]);
    assert_eq!(position(server.endpoint.clone()).await, head, "nothing written since");

    // Its TTL counts from the restart: alive now, and still alive just
    // before one TTL after the restart began.
    let ttl_left = |endpoint: String| {
        let http = http.clone();
        let lease = lease.clone();
        async move {
            let res = http
                .get(format!("{endpoint}/v1/leases/{lease}"))
                .send()
                .await
                .expect("timetolive");
            (
                res.status().as_u16(),
                res.json::<Value>().await.expect("JSON")["ttl"].as_u64(),
            )
        }
    };
    let (status, left) = ttl_left(server.endpoint.clone()).await;
    assert_eq!(status, 200, "the lease did not survive the crash");
    assert!(left >= Some(TTL_S - 1), "{left:?} s left of {TTL_S}");
    let almost = std::time::Duration::from_millis(TTL_S * 1000 - 500);
    tokio::time::sleep(almost.saturating_sub(restarted_at.elapsed())).await;
    assert_eq!(
        ttl_left(server.endpoint.clone()).await.0,
        200,
        "expired before a full TTL"
    );
    let key = |endpoint: String| {
        let http = http.clone();
        async move {
            http.get(format!("{endpoint}/v1/keys?key=held"))
                .send()
                .await
                .expect("get key")
                .status()
                .as_u16()
        }
    };
    assert_eq!(key(server.endpoint.clone()).await, 200);

    // Not kept alive any more, it then expires, and its key with it.
    let started = std::time::Instant::now();
    while key(server.endpoint.clone()).await != 404 {
        assert!(started.elapsed() < common::PATIENCE, "the lease never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ttl_left(server.endpoint.clone()).await.0, 404);
    assert!(
        restarted_at.elapsed() >= std::time::Duration::from_secs(TTL_S),
        "expired {:?} after the restart",
        restarted_at.elapsed()
    );
    server.terminate();
}

/// Grants a lease with a key and answers its ID.
async fn lease_with_key(http: &reqwest::Client, endpoint: &str, key: &str) -> String {
    let res = http
        .post(format!("{endpoint}/v1/leases"))
        .json(&json!({"ttl": 1000}))
        .send()
        .await
        .expect("grant");
    assert!(res.status().is_success());
    let lease = res.json::<Value>().await.expect("json")["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let res = http
        .put(format!("{endpoint}/v1/keys?key={key}"))
        .json(&json!({"value": key, "lease": lease}))
        .send()
        .await
        .expect("put");
    assert!(res.status().is_success());
    lease
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    let res = http.get(url).send().await.expect("get");
    assert!(res.status().is_success());
    res.json().await.expect("json")
}

/// What a server holds that a snapshot covers: its projections' digests at
/// their position, and every key with its revisions.
async fn server_state(endpoint: &str) -> (Value, Value) {
    let http = reqwest::Client::new();
    let projections = get(&http, format!("{endpoint}/v1/projections")).await;
    let keys = get(&http, format!("{endpoint}/v1/keys?prefix=")).await;
    (projections, keys)
}

fn incomplete_snapshots(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join(SqliteStore::FILE_NAME),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open");
    conn.query_row("SELECT COUNT(*) FROM snapshots WHERE complete = 0", [], |r| r.get(0))
        .expect("count")
}

fn written_chunks_of_incomplete(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join(SqliteStore::FILE_NAME),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open");
    conn.query_row(
        "SELECT COUNT(*) FROM snapshot_chunks WHERE snapshot_id IN (SELECT id FROM snapshots WHERE complete = 0)",
        [],
        |r| r.get(0),
    )
    .expect("count")
}

/// The chunks of 64 bytes the incomplete snapshots need.
fn needed_chunks_of_incomplete(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join(SqliteStore::FILE_NAME),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open");
    conn.query_row(
        "SELECT COALESCE(SUM((bytes + 63) / 64), 0) FROM snapshots WHERE complete = 0",
        [],
        |r| r.get(0),
    )
    .expect("count")
}

/// kill -9 while a snapshot is being written (a test knob stops the writer
/// after its first chunk, so the kill lands there every time): the restart
/// ignores the half-written snapshot, starts from the last complete one and
/// the log after it, and holds exactly what a start from the log alone
/// holds, every acknowledged command included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_snapshot_is_written_restarts_correctly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::new();
    let every = ["--snapshot-every-events", "20"];

    // A first life that ends cleanly: complete snapshots.
    let server = ServerProcess::start(dir.path(), &every);
    let mut leases = Vec::new();
    for i in 0..30 {
        leases.push(lease_with_key(&http, &server.endpoint, &format!("first/{i}")).await);
    }
    server.terminate();
    assert_eq!(incomplete_snapshots(dir.path()), 0);

    // A second life killed in the middle of its first snapshot.
    let marker = dir.path().join("stalled");
    let marker_text = marker.to_string_lossy().into_owned();
    let mut server = ServerProcess::start_env(
        dir.path(),
        &every,
        "warn",
        std::process::Stdio::inherit(),
        &[("TENURE_TEST_SNAPSHOT_STALL", marker_text.as_str())],
    );
    let mut n = 0;
    while !marker.exists() {
        assert!(n < 500, "no snapshot started after {n} leases");
        leases.push(lease_with_key(&http, &server.endpoint, &format!("second/{n}")).await);
        n += 1;
    }
    // Commands go on while the snapshot is stuck; then revoke a few.
    for i in 0..10 {
        leases.push(lease_with_key(&http, &server.endpoint, &format!("third/{i}")).await);
    }
    let revoked: Vec<String> = leases.drain(..5).collect();
    for lease in &revoked {
        let res = http
            .delete(format!("{}/v1/leases/{lease}", server.endpoint))
            .send()
            .await
            .expect("revoke");
        assert!(res.status().is_success());
    }
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reap");
    assert!(
        incomplete_snapshots(dir.path()) >= 1,
        "the kill left a snapshot half written"
    );
    assert!(
        written_chunks_of_incomplete(dir.path()) < needed_chunks_of_incomplete(dir.path()),
        "only part of its bytes"
    );

    // A copy to start from the log alone.
    let copy = tempfile::tempdir().expect("temp dir");
    for file in std::fs::read_dir(dir.path()).expect("dir") {
        let file = file.expect("entry");
        if file.file_type().expect("type").is_file() {
            std::fs::copy(file.path(), copy.path().join(file.file_name())).expect("copy");
        }
    }

    let log = dir.path().join("server.log");
    let server = ServerProcess::start_logging(
        dir.path(),
        &every,
        "info",
        std::process::Stdio::from(std::fs::File::create(&log).expect("log file")),
    );
    assert_eq!(
        incomplete_snapshots(dir.path()),
        0,
        "the half-written snapshot is deleted"
    );
    for lease in &leases {
        get(&http, format!("{}/v1/leases/{lease}", server.endpoint)).await;
    }
    for lease in &revoked {
        let res = http
            .get(format!("{}/v1/leases/{lease}", server.endpoint))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 404, "revoked lease {lease} is back");
    }
    let ours = server_state(&server.endpoint).await;
    assert_eq!(
        ours.1["kvs"].as_array().map(Vec::len),
        Some(leases.len()),
        "a key per live lease: {}",
        ours.1
    );
    let alone = ServerProcess::start(copy.path(), &["--no-snapshot-restore"]);
    assert_eq!(server_state(&alone.endpoint).await, ours);
    alone.terminate();
    server.terminate();
    let printed = std::fs::read_to_string(&log).expect("read the log");
    assert!(
        printed.contains("started from a snapshot"),
        "the restart used the complete snapshots: {printed}"
    );
    // stderr is a file here, not a terminal: plain text, no colour codes.
    assert!(!printed.contains('\u{1b}'), "escape codes in a log file: {printed}");
}

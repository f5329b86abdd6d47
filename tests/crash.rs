//! kill -9 while clients issue commands: after a restart every acknowledged
//! command is there, and the log reads back whole.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::binary::ServerProcess;
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

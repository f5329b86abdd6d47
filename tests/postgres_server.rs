//! A server whose log is in the machine's real PostgreSQL (`--store`): its
//! commands land there, a restart comes back from there (and from the
//! node's own snapshots), and the binary takes the flag.

mod common;

use common::binary::ServerProcess;
use common::pg::Schema;
use common::{count_type, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tenure::snapshot::SnapshotEvent;

#[actix_rt::test]
async fn leases_and_keys_live_in_postgres_and_come_back_after_a_restart() {
    let schema = Schema::fresh();
    let mut server = TestServer::start_on(schema.target()).await;
    let lease = server.grant(100).await;
    let (status, body) = server.put_key("held", "v1", Some(&lease)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.put_key("plain", "v2", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revoked = server.grant(100).await;
    let (status, body) = server.delete(&format!("/v1/leases/{revoked}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The events are rows of the schema's tables, nowhere else: the data
    // directory holds no embedded log.
    let events = server.events().await;
    assert_eq!(count_type(&events, "LeaseGranted"), 2);
    assert_eq!(count_type(&events, "LeaseRevoked"), 1);
    let rows = schema.query_i64("SELECT COUNT(*) FROM events");
    assert_eq!(rows, vec![events.len() as i64]);
    assert!(!server.dir.join(tenure::store::SqliteStore::FILE_NAME).exists());
    let (_, health) = server.get("/healthz").await;
    assert_eq!(health["position"], json!(events.len()), "{health}");

    // A clean stop writes this node's snapshots; the restart starts from
    // them and the log's tail, on the same schema.
    server.restart().await;
    let restored = server
        .running()
        .snapshots
        .events()
        .iter()
        .filter(|e| matches!(e, SnapshotEvent::Restored { .. }))
        .count();
    assert!(restored >= 2, "projections and the key space from snapshots");
    assert_eq!(server.value("held").await.as_deref(), Some("v1"));
    assert_eq!(server.value("plain").await.as_deref(), Some("v2"));
    let (status, body) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!((status, body["ttl"].as_i64()), (StatusCode::OK, Some(100)), "{body}");
    let (status, _) = server.get(&format!("/v1/leases/{revoked}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // New commands continue the log and its hash chain.
    let (status, body) = server.put_key("after", "v3", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = server.events().await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1);
    }
    tenure::store::conformance::assert_chained(&events);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_on_postgres_and_refuses_a_bad_store() {
    let schema = Schema::fresh();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = schema.url();
    let log = dir.path().join("server.log");
    let server = ServerProcess::start_logging(
        dir.path(),
        &["--store", &url],
        "info",
        std::process::Stdio::from(std::fs::File::create(&log).expect("log file")),
    );
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/v3/lease/grant", server.endpoint))
        .json(&json!({ "TTL": "60" }))
        .send()
        .await
        .expect("grant");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert!(body["ID"].is_string(), "{body}");
    server.terminate();
    assert_eq!(
        schema.query_i64("SELECT COUNT(*) FROM events WHERE event_type = 'LeaseGranted'"),
        vec![1]
    );
    // The node took the timers once and gave them up once, when it stopped.
    let logged = std::fs::read_to_string(&log).expect("server log");
    let count = |what: &str| logged.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("tenure::cluster: this node runs the timers"), 1, "{logged}");
    assert_eq!(count("this node no longer runs the timers"), 1, "{logged}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenure"))
        .args(["serve", "--store", "mysql://nope", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run tenure");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--store") && stderr.contains("PostgreSQL"), "{stderr}");
}

/// `tenure verify` and `tenure replay` read a log in PostgreSQL with
/// `--store`: the chain checks out and the replay shows the state; a row
/// changed behind the servers' back fails the verify, naming its position.
#[actix_rt::test]
async fn verify_and_replay_read_the_log_in_postgres() {
    let schema = Schema::fresh();
    let mut server = TestServer::start_on(schema.target()).await;
    let lease = server.grant(100).await;
    let (status, body) = server.put_key("held", "v1", Some(&lease)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.put_key("plain", "v2", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let head = server.log().chain_head();
    server.stop().await;
    let url = schema.url();
    let tenure = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenure"))
            .args(args)
            .output()
            .expect("run tenure")
    };

    let out = tenure(&["verify", "--store", &url, "--expect-head", &head.to_string()]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains(&format!("ok: {} events", head.position)), "{printed}");

    let out = tenure(&["replay", "--store", &url, "--what", "leases,keys", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(state["leases"][0]["id"], json!(lease), "{state}");
    let keys: Vec<&str> = state["keys"][0]["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert_eq!(keys, ["held", "plain"], "{state}");

    schema.execute("UPDATE events SET payload = replace(payload, 'v2', 'v9') WHERE position = 3");
    let out = tenure(&["verify", "--store", &url]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("FAILED") && printed.contains('3'), "{printed}");

    let out = tenure(&["verify", "--store", &format!("{}_none", url)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no event log"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tenure store copy` moves a whole log from a data directory to
/// PostgreSQL and back: positions and hashes kept (verify against the
/// source's head passes on both copies), a server on the copy serves the
/// same state, and a copy into a log that is not empty is refused.
#[actix_rt::test]
async fn store_copy_round_trips_between_a_data_directory_and_postgres() {
    let mut server = TestServer::start().await;
    let lease = server.grant(100).await;
    for i in 0..20 {
        let (status, body) = server.put_key(&format!("k{i}"), &format!("v{i}"), Some(&lease)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = server.delete("/v1/keys?key=k3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let head = server.log().chain_head();
    server.stop().await;
    let tenure = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenure"))
            .args(args)
            .output()
            .expect("run tenure");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let schema = Schema::fresh();
    let url = schema.url();
    let dir = server.dir.to_string_lossy().into_owned();

    let (ok, out, err) = tenure(&["store", "copy", "--from", &dir, "--to", &url]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("head: {head}")), "{out}");
    let (ok, out, err) = tenure(&["verify", "--store", &url, "--expect-head", &head.to_string()]);
    assert!(ok, "{out}{err}");

    let back = tempfile::tempdir().expect("temp dir");
    let back_dir = back.path().to_string_lossy().into_owned();
    let (ok, out, err) = tenure(&["store", "copy", "--from", &url, "--to", &back_dir]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = tenure(&["verify", "--data-dir", &back_dir, "--expect-head", &head.to_string()]);
    assert!(ok, "{out}{err}");

    // Not into a log that holds events.
    let (ok, _, err) = tenure(&["store", "copy", "--from", &dir, "--to", &url]);
    assert!(!ok);
    assert!(err.contains("already holds"), "{err}");

    // A server on the PostgreSQL copy serves what the original held.
    let on_copy = TestServer::start_on(schema.target()).await;
    assert_eq!(on_copy.value("k1").await.as_deref(), Some("v1"));
    assert_eq!(on_copy.value("k3").await, None);
    let (status, body) = on_copy.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut on_copy = on_copy;
    on_copy.stop().await;
}

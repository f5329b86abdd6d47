//! Three `tenure serve` processes on one PostgreSQL log: the one running
//! the timers is killed (SIGKILL), another takes them over, every due lease
//! expires exactly once and its key is deleted once, and a lease kept alive
//! through another node all along never expires.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::binary::ServerProcess;
use common::pg::Schema;
use common::PATIENCE;
use serde_json::{json, Value};

const LEASES: usize = 12;
const TTL: i64 = 3;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn v3(http: &reqwest::Client, node: &str, path: &str, body: Value) -> Value {
    let response = http
        .post(format!("{node}/v3{path}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success(), "{path}: {}", response.status());
    let text = response.text().await.expect("body");
    serde_json::from_str(text.lines().next().unwrap_or("{}")).expect("JSON")
}

/// The nodes (by index) that say they run the timers, among `alive`.
async fn leading(http: &reqwest::Client, nodes: &[String], alive: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    for &i in alive {
        let health: Value = match http.get(format!("{}/healthz", nodes[i])).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if health["timers"] == "leading" {
            out.push(i);
        }
    }
    out
}

/// Polls (the election moves every 500 ms) until exactly one of `alive`
/// runs the timers.
async fn one_leader(http: &reqwest::Client, nodes: &[String], alive: &[usize]) -> usize {
    let started = Instant::now();
    loop {
        if let [one] = leading(http, nodes, alive).await[..] {
            return one;
        }
        assert!(started.elapsed() < PATIENCE, "no single node took the timers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn killing_the_timers_leader_hands_them_over_and_each_lease_expires_once() {
    let schema = Schema::fresh();
    let url = schema.url();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut processes: Vec<Option<ServerProcess>> = dirs
        .iter()
        .map(|d| Some(ServerProcess::start(d.path(), &["--store", &url, "--min-ttl", "1"])))
        .collect();
    let nodes: Vec<String> = processes
        .iter()
        .map(|p| p.as_ref().map(|p| p.endpoint.clone()).unwrap_or_default())
        .collect();
    let http = reqwest::Client::new();
    let leader = one_leader(&http, &nodes, &[0, 1, 2]).await;
    let (granting, keeping) = ((leader + 1) % 3, (leader + 2) % 3);

    // Leases with a key each, through a node that does not run the timers.
    let mut leases = Vec::new();
    for i in 0..LEASES {
        let granted = v3(&http, &nodes[granting], "/lease/grant", json!({ "TTL": TTL })).await;
        let lease = granted["ID"].as_str().expect("lease ID").to_owned();
        let put = json!({ "key": b64(&format!("k{i}")), "value": b64("v"), "lease": lease });
        v3(&http, &nodes[granting], "/kv/put", put).await;
        leases.push(lease);
    }
    let kept = leases[0].clone();

    // One lease is kept alive through the third node, every half TTL,
    // for the whole test; the timers' leader dies meanwhile.
    let keep_alive = {
        let (http, node, lease) = (http.clone(), nodes[keeping].clone(), kept.clone());
        actix_rt::spawn(async move {
            loop {
                let answer = v3(&http, &node, "/lease/keepalive", json!({ "ID": lease })).await;
                assert_eq!(answer["result"]["TTL"], TTL.to_string(), "kept alive: {answer}");
                // The client's keep-alive period (TTL / 2), as etcd's clients pace them.
                tokio::time::sleep(Duration::from_millis(TTL as u64 * 500)).await;
            }
        })
    };
    let killed = Instant::now();
    if let Some(mut process) = processes[leader].take() {
        process.child.kill().expect("SIGKILL the leader");
        process.child.wait().expect("reaped");
    }
    let survivors = [granting, keeping];
    let successor = one_leader(&http, &nodes, &survivors).await;
    eprintln!(
        "timers taken over by node {successor} {:?} after the kill",
        killed.elapsed()
    );

    // Every lease not kept alive expires: exactly one LeaseExpired each,
    // one KeyDeleted each; the kept one none.
    let expired = |schema: &Schema| {
        schema.query_i64(
            "SELECT COUNT(*) FROM events e JOIN streams s ON s.id = e.stream_id
             WHERE e.event_type = 'LeaseExpired' GROUP BY s.name ORDER BY s.name",
        )
    };
    let started = Instant::now();
    while expired(&schema).len() < LEASES - 1 {
        assert!(
            started.elapsed() < PATIENCE,
            "the leases did not expire: {:?}",
            expired(&schema)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deleted_keys = || schema.query_i64("SELECT COUNT(*) FROM events WHERE event_type = 'KeyDeleted'")[0];
    while deleted_keys() < (LEASES - 1) as i64 {
        assert!(started.elapsed() < PATIENCE, "the keys were not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another TTL for any duplicate to show up.
    tokio::time::sleep(Duration::from_secs(TTL as u64)).await;
    keep_alive.abort();
    let counts = expired(&schema);
    assert_eq!(counts.len(), LEASES - 1, "every lease but the kept one expired");
    assert!(counts.iter().all(|&n| n == 1), "each exactly once: {counts:?}");
    assert_eq!(deleted_keys(), (LEASES - 1) as i64, "each key deleted once");
    let kept_stream = format!(
        "lease/default/{}",
        tenure_events::LeaseId::new(kept.parse().expect("an ID")).expect("non-zero")
    );
    let kept_expired = schema.query_i64(&format!(
        "SELECT COUNT(*) FROM events e JOIN streams s ON s.id = e.stream_id
         WHERE e.event_type = 'LeaseExpired' AND s.name = '{kept_stream}'"
    ));
    assert_eq!(kept_expired, vec![0], "the lease kept alive through the handover lives");
    let key = v3(&http, &nodes[keeping], "/kv/range", json!({ "key": b64("k0") })).await;
    assert_eq!(key["kvs"][0]["value"], b64("v"), "{key}");
}

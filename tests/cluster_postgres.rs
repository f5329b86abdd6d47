//! Three tenure nodes on one log in the machine's real PostgreSQL: any node
//! takes any command, every node ends up with the same keys (the log's),
//! one node runs the timers and gets every keep-alive, and each due lease
//! expires exactly once. In-process nodes with manual clocks here; the
//! process kill of the timers' leader is in `cluster_failover.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use common::pg::Schema;
use common::{TestServer, PATIENCE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tenure_events::{KeyspaceEvent, RecordedEvent};

const NODES: usize = 3;
const LEASES: usize = 12;
const OPS_PER_NODE: usize = 80;
const TTL: i64 = 30;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(v: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

/// An answer: status, body, and the log position the node had reached.
struct Answer {
    status: StatusCode,
    body: Value,
    position: u64,
}

async fn v3(node: &TestServer, path: &str, body: Value, min_position: Option<u64>) -> Answer {
    let mut request = node.http.post(format!("{}/v3{path}", node.base)).json(&body);
    if let Some(position) = min_position {
        request = request.header("tenure-min-position", position);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let position = response
        .headers()
        .get("tenure-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("every answer carries Tenure-Position");
    let text = response.text().await.expect("body");
    let line = text.lines().next().unwrap_or("{}");
    let body = serde_json::from_str(line).unwrap_or(Value::Null);
    Answer { status, body, position }
}

/// Puts `key` (value `v`) through `node`, which must answer 200; the
/// answer's position.
async fn put_ok(node: &TestServer, key: String) -> u64 {
    let body = json!({ "key": b64(&key), "value": b64("v") });
    let answer = v3(node, "/kv/put", body, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.position
}

/// The one node that runs the timers, once exactly one does.
async fn leader(nodes: &[TestServer]) -> usize {
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut leading = Vec::new();
            for (i, node) in nodes.iter().enumerate() {
                let (_, health) = node.get("/healthz").await;
                if health["timers"] == "leading" {
                    leading.push(i);
                }
            }
            if let [one] = leading[..] {
                return one;
            }
            // A poll of the election, which moves every 500 ms.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    found.expect("one node takes the timers")
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// What one node's client saw acknowledged.
#[derive(Default)]
struct Seen {
    /// Acknowledged puts: (key, value, revision).
    puts: Vec<(String, String, i64)>,
    /// Leases whose revoke was acknowledged.
    revoked: BTreeSet<String>,
    position: u64,
    conflicts: usize,
}

async fn client(node: &TestServer, seed: u64, leases: &[String], tag: usize) -> Seen {
    let mut rng = Rng(seed);
    let mut seen = Seen::default();
    for i in 0..OPS_PER_NODE {
        let lease = &leases[rng.below(leases.len())];
        let answer = match rng.below(5) {
            0 | 1 => {
                let (key, value) = (format!("held/{}", rng.below(6)), format!("n{tag}-{i}"));
                let body = json!({ "key": b64(&key), "value": b64(&value), "lease": lease });
                let answer = v3(node, "/kv/put", body, None).await;
                match answer.status {
                    StatusCode::OK => {
                        let revision = answer.body["header"]["revision"].as_str().expect("revision");
                        seen.puts.push((key, value, revision.parse().expect("a number")));
                    }
                    // The lease was revoked on some node first, or other
                    // nodes kept winning the key space (refused: not done).
                    status => assert!(
                        [StatusCode::NOT_FOUND, StatusCode::CONFLICT].contains(&status),
                        "{}",
                        answer.body
                    ),
                }
                answer
            }
            2 => {
                let (key, value) = (format!("plain/{}", rng.below(4)), format!("n{tag}-{i}"));
                let answer = v3(node, "/kv/put", json!({ "key": b64(&key), "value": b64(&value) }), None).await;
                match answer.status {
                    StatusCode::OK => {
                        let revision = answer.body["header"]["revision"].as_str().expect("revision");
                        seen.puts.push((key, value, revision.parse().expect("a number")));
                    }
                    status => assert_eq!(status, StatusCode::CONFLICT, "{}", answer.body),
                }
                answer
            }
            3 if leases.iter().position(|l| l == lease).is_some_and(|p| p >= LEASES / 2) => {
                let answer = v3(node, "/lease/revoke", json!({ "ID": lease }), None).await;
                match answer.status {
                    StatusCode::OK => {
                        seen.revoked.insert(lease.clone());
                    }
                    status => assert!(
                        [StatusCode::NOT_FOUND, StatusCode::CONFLICT].contains(&status),
                        "{}",
                        answer.body
                    ),
                }
                answer
            }
            _ => {
                // Through this node to the one running the timers.
                let answer = v3(node, "/lease/keepalive", json!({ "ID": lease }), None).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
                answer
            }
        };
        if answer.status == StatusCode::CONFLICT {
            seen.conflicts += 1;
        }
        seen.position = seen.position.max(answer.position);
    }
    seen
}

/// Every key each node holds, once it has applied the log up to `position`.
async fn keys(node: &TestServer, position: u64) -> BTreeMap<String, (String, String, String)> {
    let all = json!({ "key": b64("\0"), "range_end": b64("\0") });
    let answer = v3(node, "/kv/range", all, Some(position)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let kvs = answer.body["kvs"].as_array().cloned().unwrap_or_default();
    kvs.iter()
        .map(|kv| {
            let lease = kv["lease"].as_str().unwrap_or("0").to_owned();
            let revision = kv["mod_revision"].as_str().unwrap_or_default().to_owned();
            (unb64(&kv["key"]), (unb64(&kv["value"]), lease, revision))
        })
        .collect()
}

fn keyspace_events(events: &[RecordedEvent]) -> Vec<(i64, KeyspaceEvent)> {
    events
        .iter()
        .filter(|e| e.stream.category() == "keyspace")
        .filter_map(|e| e.decode_as::<KeyspaceEvent>().expect("decodes"))
        .map(|e| {
            let revision = match &e {
                KeyspaceEvent::Put(p) => p.revision,
                KeyspaceEvent::Deleted(d) => d.revision,
            };
            (revision, e)
        })
        .collect()
}

#[actix_rt::test]
async fn three_nodes_take_any_command_and_agree_with_the_log() {
    let schema = Schema::fresh();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(TestServer::start_on(schema.target()).await);
    }
    let leading = leader(&nodes).await;

    // Leases granted on every node.
    let mut leases = Vec::new();
    for i in 0..LEASES {
        let answer = v3(&nodes[i % NODES], "/lease/grant", json!({ "TTL": TTL }), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        leases.push(answer.body["ID"].as_str().expect("lease ID").to_owned());
    }

    // Concurrent puts, revokes and keep-alives of the same leases and keys
    // through the three nodes.
    let clients = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| client(node, 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1), &leases, i));
    let seen = futures::future::join_all(clients).await;
    let position = seen.iter().map(|s| s.position).max().unwrap_or(0);
    // A command that lost to other nodes' appends COMMAND_ATTEMPTS times
    // answers 409 and did nothing; the model counts only what succeeded.
    let conflicts: usize = seen.iter().map(|s| s.conflicts).sum();
    eprintln!("{conflicts} of {} commands answered 409", NODES * OPS_PER_NODE);
    let revoked: BTreeSet<String> = seen.iter().flat_map(|s| s.revoked.iter().cloned()).collect();

    // Every node, caught up with what was acknowledged anywhere, holds the
    // same keys.
    let on_each = futures::future::join_all(nodes.iter().map(|n| keys(n, position))).await;
    for (i, other) in on_each.iter().enumerate().skip(1) {
        assert_eq!(&on_each[0], other, "node 0 and node {i} disagree");
    }

    // They are the log's: revisions strictly increase along the stream (no
    // two nodes wrote the same revision), every acknowledged put is in it,
    // and the keys are its fold.
    let events = nodes[0].events().await;
    let changes = keyspace_events(&events);
    for pair in changes.windows(2) {
        assert!(
            pair[0].0 <= pair[1].0,
            "revisions never go back: {:?}",
            (pair[0].0, pair[1].0)
        );
    }
    let mut puts: BTreeMap<i64, (String, String)> = BTreeMap::new();
    let mut folded: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for (revision, change) in &changes {
        match change {
            KeyspaceEvent::Put(p) => {
                let (key, value) = (p.key.to_string_lossy(), p.value.to_string_lossy());
                assert!(
                    puts.insert(*revision, (key.clone(), value.clone())).is_none(),
                    "one put per revision"
                );
                folded.insert(key, (value, *revision));
            }
            KeyspaceEvent::Deleted(d) => {
                folded.remove(&d.key.to_string_lossy());
            }
        }
    }
    for (key, value, revision) in seen.iter().flat_map(|s| s.puts.iter()) {
        assert_eq!(
            puts.get(revision),
            Some(&(key.clone(), value.clone())),
            "an acknowledged put is in the log at its revision"
        );
    }
    let held: BTreeMap<String, (String, i64)> = on_each[0]
        .iter()
        .map(|(k, (v, _, rev))| (k.clone(), (v.clone(), rev.parse().expect("a revision"))))
        .collect();
    assert_eq!(held, folded, "the nodes hold the log's keys");

    // No key is left on a revoked lease, on any node.
    for (key, (_, lease, _)) in &on_each[0] {
        assert!(
            !revoked.contains(lease),
            "{key} is still attached to revoked lease {lease}"
        );
    }

    // Time passes on every node: the leader expires every live lease, each
    // exactly once, and their keys go everywhere.
    let live: Vec<&String> = leases.iter().filter(|l| !revoked.contains(*l)).collect();
    for node in &nodes {
        node.clock.advance(std::time::Duration::from_secs(TTL as u64 * 2));
    }
    let expired = |events: &[RecordedEvent], lease: &str| {
        let id: i64 = lease.parse().expect("a lease ID");
        let name = tenure_events::LeaseId::new(id).expect("non-zero").to_string();
        events
            .iter()
            .filter(|e| e.event_type == "LeaseExpired" && e.stream.as_str().ends_with(&format!("/{name}")))
            .count()
    };
    let events = nodes[(leading + 1) % NODES]
        .wait_for_log("every live lease expired", |events| {
            live.iter().all(|l| expired(events, l) >= 1)
        })
        .await;
    let head = events.last().map_or(0, |e| e.position);
    for lease in &live {
        assert_eq!(expired(&events, lease), 1, "lease {lease} expires exactly once");
    }
    for lease in &revoked {
        assert_eq!(expired(&events, lease), 0, "revoked lease {lease} does not expire");
    }
    // Their keys are deleted after each expiry is durable: wait for the
    // deletions to reach the log, then for every node to apply them.
    let leased_keys = |events: &[RecordedEvent]| {
        let mut held = BTreeSet::new();
        for (_, change) in keyspace_events(events) {
            match change {
                KeyspaceEvent::Put(p) if p.lease.is_some() => held.insert(p.key.to_string_lossy()),
                KeyspaceEvent::Put(p) => held.remove(&p.key.to_string_lossy()),
                KeyspaceEvent::Deleted(d) => held.remove(&d.key.to_string_lossy()),
            };
        }
        held
    };
    let events = nodes[leading]
        .wait_for_log("no key left on a lease", |events| {
            events.last().is_some_and(|e| e.position >= head) && leased_keys(events).is_empty()
        })
        .await;
    let head = events.last().map_or(0, |e| e.position);
    for node in &nodes {
        let held = keys(node, head).await;
        assert!(
            held.values().all(|(_, lease, _)| lease == "0"),
            "no key is left on an expired lease: {held:?}"
        );
    }
    for mut node in nodes {
        node.stop().await;
    }
}

#[actix_rt::test]
async fn a_keep_alive_on_any_node_reaches_the_timers_and_a_read_waits_for_its_position() {
    let schema = Schema::fresh();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(TestServer::start_on(schema.target()).await);
    }
    let leading = leader(&nodes).await;
    let (follower, other) = ((leading + 1) % NODES, (leading + 2) % NODES);

    // Granted on one follower, kept alive through the other: the leader's
    // deadline moves, so the lease outlives its TTL on the leader's clock.
    let grant = v3(&nodes[follower], "/lease/grant", json!({ "TTL": 10 }), None).await;
    let lease = grant.body["ID"].as_str().expect("lease ID").to_owned();
    let put = json!({ "key": b64("svc/a"), "value": b64("10.0.0.1"), "lease": lease });
    let put = v3(&nodes[follower], "/kv/put", put, None).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    for _ in 0..3 {
        for node in &nodes {
            node.clock.advance(std::time::Duration::from_secs(6));
        }
        let kept = v3(
            &nodes[other],
            "/lease/keepalive",
            json!({ "ID": lease }),
            Some(put.position),
        )
        .await;
        assert_eq!(kept.body["result"]["TTL"], "10", "{}", kept.body);
    }
    // 18 s after the grant, beyond its 10 s TTL: alive, as the leader says
    // through any node.
    let ttl = v3(&nodes[other], "/lease/timetolive", json!({ "ID": lease }), None).await;
    let remaining: i64 = ttl.body["TTL"].as_str().unwrap_or("-1").parse().expect("a number");
    assert!((1..=10).contains(&remaining), "{}", ttl.body);
    let events = nodes[leading].events().await;
    assert_eq!(common::count_type(&events, "LeaseExpired"), 0);

    // A read with the writer's position sees the write on any node.
    let put = json!({ "key": b64("svc/b"), "value": b64("10.0.0.2") });
    let written = v3(&nodes[follower], "/kv/put", put, None).await;
    let read = json!({ "key": b64("svc/b") });
    let read = v3(&nodes[other], "/kv/range", read, Some(written.position)).await;
    assert_eq!(read.body["kvs"][0]["value"], b64("10.0.0.2"), "{}", read.body);

    // A malformed position is refused, naming the header.
    let response = nodes[other]
        .http
        .post(format!("{}/v3/kv/range", nodes[other].base))
        .header("tenure-min-position", "soon")
        .json(&json!({ "key": b64("svc/b") }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("JSON");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Tenure-Min-Position"),
        "{body}"
    );

    // Without keep-alives the lease ends on the leader's clock, once.
    for node in &nodes {
        node.clock.advance(std::time::Duration::from_secs(11));
    }
    let events = nodes[follower]
        .wait_for_log("the lease expired and its key deleted", |events| {
            common::count_type(events, "LeaseExpired") == 1 && common::count_type(events, "KeyDeleted") == 1
        })
        .await;
    let head = events.last().map_or(0, |e| e.position);
    let gone = v3(&nodes[other], "/kv/range", json!({ "key": b64("svc/a") }), Some(head)).await;
    assert!(gone.body.get("kvs").is_none(), "{}", gone.body);
    for mut node in nodes {
        node.stop().await;
    }
}

/// Waits (polling `/healthz`) until every node has applied the log as far
/// as the furthest one.
async fn in_step(nodes: &[TestServer]) {
    async fn positions(nodes: &[TestServer]) -> Vec<u64> {
        let polls = nodes
            .iter()
            .map(|n| async move { n.get("/healthz").await.1["position"].as_u64().unwrap_or(0) });
        futures::future::join_all(polls).await
    }
    let target = positions(nodes).await.into_iter().max().unwrap_or(0);
    let reached = tokio::time::timeout(PATIENCE, async {
        while positions(nodes).await.into_iter().any(|p| p < target) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    reached.expect("the nodes apply the log");
}

#[actix_rt::test]
async fn with_auth_a_keep_alive_is_sent_on_with_the_callers_token() {
    let schema = Schema::fresh();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(TestServer::start_on_with(schema.target(), common::with_auth).await);
    }
    let leading = leader(&nodes).await;
    let (follower, other) = ((leading + 1) % NODES, (leading + 2) % NODES);
    let alice = nodes[follower].account_with_token("alice", json!({})).await;
    let bob = nodes[follower].account_with_token("bob", json!({})).await;
    let (status, granted) = nodes[follower]
        .session(&alice)
        .post("/v1/leases", json!({ "ttl": 10 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    let lease = granted["id"].as_str().expect("lease ID").to_owned();
    in_step(&nodes).await;

    // Through the other follower, with alice's token, to the leader: the
    // lease outlives its TTL on the leader's clock.
    let path = format!("/v1/leases/{lease}/keepalive");
    for _ in 0..3 {
        for node in &nodes {
            node.clock.advance(std::time::Duration::from_secs(6));
        }
        let (status, body) = nodes[other].session(&alice).post(&path, json!({})).await;
        assert_eq!((status, body["ttl"].as_i64()), (StatusCode::OK, Some(10)), "{body}");
    }
    // Bob's token names another account: not his lease, wherever it is
    // decided. No token: refused where it arrives.
    let (status, body) = nodes[other].session(&bob).post(&path, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = nodes[other].call(reqwest::Method::POST, &path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = nodes[leading].session(&alice).get(&format!("/v1/leases/{lease}")).await;
    assert_eq!(status, StatusCode::OK, "alive 18 s after a 10 s grant: {body}");
    for mut node in nodes {
        node.stop().await;
    }
}

/// A watch on one node sees the writes made through the others, in
/// revision order, each once: every node follows the whole log.
#[actix_rt::test]
async fn a_watch_on_one_node_sees_the_writes_of_every_node() {
    let schema = Schema::fresh();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(TestServer::start_on(schema.target()).await);
    }
    let create = json!({"create_request": {"key": b64("w/"), "range_end": b64("w0"), "prev_kv": true}});
    let mut watch = nodes[0]
        .http
        .post(format!("{}/v3/watch", nodes[0].base))
        .body(create.to_string())
        .send()
        .await
        .expect("watch");
    let mut pending: Vec<u8> = Vec::new();
    let mut events: Vec<Value> = Vec::new();
    let mut created = false;
    let mut revisions = Vec::new();
    for i in 0..9 {
        if i == 0 {
            // The watch exists before the first write.
            while !created {
                let chunk = tokio::time::timeout(PATIENCE, watch.chunk())
                    .await
                    .expect("in time")
                    .expect("readable");
                pending.extend_from_slice(&chunk.expect("not ended"));
                created = String::from_utf8_lossy(&pending).contains("\"created\":true");
            }
            pending.clear();
        }
        let node = &nodes[i % NODES];
        let put = v3(
            node,
            "/kv/put",
            json!({"key": b64(&format!("w/{}", i % 4)), "value": b64(&i.to_string())}),
            None,
        )
        .await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
        revisions.push(
            put.body["header"]["revision"]
                .as_str()
                .expect("revision")
                .parse::<i64>()
                .expect("a number"),
        );
    }
    while events.len() < revisions.len() {
        if let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&line).expect("a JSON line");
            events.extend(value["result"]["events"].as_array().cloned().unwrap_or_default());
            continue;
        }
        let chunk = tokio::time::timeout(PATIENCE, watch.chunk())
            .await
            .expect("in time")
            .expect("readable");
        pending.extend_from_slice(&chunk.expect("not ended"));
    }
    let seen: Vec<i64> = events
        .iter()
        .map(|e| {
            e["kv"]["mod_revision"]
                .as_str()
                .expect("mod_revision")
                .parse()
                .expect("a number")
        })
        .collect();
    assert_eq!(seen, revisions, "every write once, in revision order");
    // The fifth put overwrote the first one's key: its value before is there.
    assert_eq!(unb64(&events[4]["prev_kv"]["value"]), "0");
    assert_eq!(unb64(&events[4]["kv"]["value"]), "4");
    drop(watch);
    for mut node in nodes {
        node.stop().await;
    }
}

/// A counter's value on a node's `/metrics` (0 when absent).
async fn metric(node: &TestServer, line_start: &str) -> f64 {
    let text = node.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Two nodes writing one account's key space at the same time: the node
/// whose append loses the race puts its unacknowledged changes back and
/// folds the winner's, instead of dropping its key space and reading the
/// stream again. Each node activates the key space once however often its
/// appends conflict, and both end with every acknowledged put.
#[actix_rt::test]
async fn a_key_space_that_loses_a_race_rolls_back_instead_of_reloading() {
    const ROUNDS_MAX: usize = 40;
    const PUTS: usize = 24;
    let schema = Schema::fresh();
    let nodes = [
        TestServer::start_on(schema.target()).await,
        TestServer::start_on(schema.target()).await,
    ];
    // Each node's key space active (and current) before the race.
    for node in &nodes {
        let answer = v3(node, "/kv/put", json!({ "key": b64("warm"), "value": b64("up") }), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }

    let mut acknowledged = BTreeMap::new();
    let mut position = 0;
    let mut rounds = 0;
    // Rounds of concurrent puts through both nodes until appends have
    // conflicted (each round usually makes some).
    while rounds < ROUNDS_MAX {
        rounds += 1;
        let puts = (0..PUTS).flat_map(|i| {
            nodes.iter().enumerate().map(move |(n, node)| async move {
                let key = format!("race/{rounds}/{n}/{i}");
                let body = json!({ "key": b64(&key), "value": b64(&format!("v{n}")) });
                (key, n, v3(node, "/kv/put", body, None).await)
            })
        });
        for (key, n, answer) in futures::future::join_all(puts).await {
            position = position.max(answer.position);
            // A put that lost COMMAND_ATTEMPTS races in a row answers 409
            // and did nothing; the others must all be there.
            if answer.status == StatusCode::OK {
                acknowledged.insert(key, format!("v{n}"));
            } else {
                assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
            }
        }
        let mut rollbacks = 0.0;
        for node in &nodes {
            rollbacks += metric(node, "tenure_keyspace_rollbacks_total").await;
        }
        if rollbacks > 0.0 {
            break;
        }
    }
    let mut rollbacks = 0.0;
    for node in &nodes {
        rollbacks += metric(node, "tenure_keyspace_rollbacks_total").await;
        let activated = metric(node, "tenure_actors_activated_total{kind=\"keyspace\"}").await;
        assert_eq!(activated, 1.0, "the key space was activated once on each node");
    }
    assert!(
        rollbacks > 0.0,
        "no append conflicted in {rounds} rounds of concurrent puts"
    );

    for (n, node) in nodes.iter().enumerate() {
        let held = keys(node, position).await;
        for (key, value) in &acknowledged {
            assert_eq!(held.get(key).map(|v| &v.0), Some(value), "node {n} lacks {key}");
        }
    }
}

/// A node alone on the log places each group commit itself. Once another
/// node has appended, PostgreSQL places its next batch; alone again, it
/// comes back to placing them itself (tried every 16th batch).
#[actix_rt::test]
async fn a_node_alone_on_the_log_places_its_batches_itself() {
    const PLANNED: &str = "tenure_store_batches_total{path=\"planned\"}";
    const PLACED: &str = "tenure_store_batches_total{path=\"placed\"}";
    let schema = Schema::fresh();
    let nodes = [
        TestServer::start_on(schema.target()).await,
        TestServer::start_on(schema.target()).await,
    ];
    let put = |n: usize, i: usize| put_ok(&nodes[n], format!("k/{n}/{i}"));
    let before = metric(&nodes[0], PLANNED).await;
    for i in 0..5 {
        put(0, i).await;
    }
    let alone = metric(&nodes[0], PLANNED).await;
    assert!(alone > before, "no batch of a node alone was placed by the node");

    put(1, 0).await;
    let placed_before = metric(&nodes[0], PLACED).await;
    put(0, 5).await;
    assert!(
        metric(&nodes[0], PLACED).await > placed_before,
        "after another node appended, PostgreSQL must place the next batch"
    );

    let again = metric(&nodes[0], PLANNED).await;
    for i in 6..30 {
        put(0, i).await;
    }
    assert!(
        metric(&nodes[0], PLANNED).await > again,
        "alone again, the node never came back to placing its batches"
    );
    for mut node in nodes {
        node.stop().await;
    }
}

/// A batch PostgreSQL places carries its events in its notification, so
/// the other nodes follow it without reading the log (that they get
/// exactly the log's events is `store_postgres`'s
/// `events_followed_from_a_notification_are_the_logs`).
#[actix_rt::test]
async fn other_nodes_follow_a_placed_batch_from_its_notification() {
    const NOTICE: &str = "tenure_store_followed_events_total{from=\"notice\"}";
    let schema = Schema::fresh();
    let nodes = [
        TestServer::start_on(schema.target()).await,
        TestServer::start_on(schema.target()).await,
    ];
    let put = |n: usize, key: String| put_ok(&nodes[n], key);
    put(0, "first".into()).await;
    let before = metric(&nodes[0], NOTICE).await;
    // Node 1's writer last saw the log before node 0's put: PostgreSQL
    // places its batches, and node 0 reads them from the notifications.
    let mut position = 0;
    for i in 0..5 {
        position = put(1, format!("k/{i}")).await;
    }
    let held = keys(&nodes[0], position).await;
    for i in 0..5 {
        assert_eq!(held.get(&format!("k/{i}")).map(|v| v.0.as_str()), Some("v"));
    }
    assert!(
        metric(&nodes[0], NOTICE).await > before,
        "node 0 read node 1's placed batches from the log instead of their notifications"
    );
    for mut node in nodes {
        node.stop().await;
    }
}

//! Workload reservations (zos-style) over HTTP: signed reservations, a node
//! agent loop that long-polls its feed and reports results, deletions and
//! expiries reaching the node, and isolation between accounts.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{with_auth, Session, TestServer, ADMIN_TOKEN, PATIENCE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tenure::clock::Clock;
use tenure::domain::workload::{sign, Signed};
use tokio::sync::mpsc;

fn owner_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42; 32])
}

/// Registers the owner's public key.
async fn register_key(session: &Session, key: &ed25519_dalek::SigningKey) {
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    let (status, body) = session.put("/v1/account/key", json!({ "public_key": public })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A signed reservation body.
fn reservation(owner: &str, node: &str, kind: &str, data: Value, created: i64, duration: i64) -> Value {
    let signed = Signed {
        node: node.into(),
        owner: owner.parse().expect("valid"),
        kind: kind.into(),
        data: data.clone(),
        created,
        duration_s: duration,
    };
    let signature = sign(&signed, &owner_key());
    json!({
        "node_id": node, "type": kind, "data": data, "created": created,
        "duration": duration, "signature": signature,
    })
}

fn container() -> Value {
    json!({
        "flist": "https://hub.grid.tf/tf-official-apps/base:latest.flist",
        "network": {"network_id": "net1", "ips": ["10.1.1.2"]},
        "capacity": {"cpu": 1, "memory": 512},
    })
}

/// What the node agent saw in one poll item.
#[derive(Debug, Clone)]
struct Seen {
    id: u64,
    to_delete: bool,
    reason: Option<String>,
}

/// The node agent: long-polls its feed from its cursor, reports `ok` for
/// new reservations and `deleted` for to-delete ones, and tells the test.
fn spawn_agent(server: &TestServer, node: &'static str) -> mpsc::UnboundedReceiver<Seen> {
    let admin = server.session(ADMIN_TOKEN);
    let (tx, rx) = mpsc::unbounded_channel();
    actix_rt::spawn(async move {
        let mut cursor = 0u64;
        loop {
            let (status, answer) = admin
                .get(&format!("/v1/nodes/{node}/reservations?from={cursor}&timeout=5"))
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            for r in answer["reservations"].as_array().cloned().unwrap_or_default() {
                let id = r["id"].as_u64().expect("id");
                let to_delete = r["to_delete"].as_bool().unwrap_or_default();
                let result = if to_delete {
                    json!({"state": "deleted"})
                } else {
                    json!({"state": "ok", "data": {"id": format!("{node}-{id}")}})
                };
                let (status, body) = admin.put(&format!("/v1/reservations/{id}/result"), result).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let reason = r["delete_reason"].as_str().map(str::to_owned);
                if tx.send(Seen { id, to_delete, reason }).is_err() {
                    return;
                }
            }
            cursor = answer["next"].as_u64().expect("next cursor");
        }
    });
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("the agent saw something in time")
        .expect("the agent runs")
}

#[actix_rt::test]
async fn a_node_agent_sees_reservations_deletions_and_expiries_and_reports_results() {
    let server = TestServer::start_with(with_auth).await;
    let alice = server.session(&server.account_with_token("alice", json!({})).await);
    register_key(&alice, &owner_key()).await;
    let now = server.clock.now().timestamp();
    let mut agent = spawn_agent(&server, "node-1");

    // Two reservations: the agent, already waiting in its long poll, gets
    // them in order and reports ok.
    let (status, first) = alice
        .post(
            "/v1/reservations",
            reservation("alice", "node-1", "container", container(), now, 3600),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let volume = json!({"size": 10, "type": "ssd"});
    let (status, second) = alice
        .post(
            "/v1/reservations",
            reservation("alice", "node-1", "volume", volume, now, 60),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let (first_id, second_id) = (first["id"].as_u64().expect("id"), second["id"].as_u64().expect("id"));
    assert!(first_id < second_id, "IDs increase");
    let seen = [next(&mut agent).await, next(&mut agent).await];
    assert_eq!([seen[0].id, seen[1].id], [first_id, second_id]);
    assert!(seen.iter().all(|s| !s.to_delete));
    // The owner sees the node's latest result.
    let (_, shown) = alice.get(&format!("/v1/reservations/{first_id}")).await;
    assert_eq!(shown["result"]["state"], "ok", "{shown}");
    assert_eq!(shown["result"]["data"], json!({"id": format!("node-1-{first_id}")}));

    // A reservation for another node is not in this feed.
    alice
        .post(
            "/v1/reservations",
            reservation(
                "alice",
                "node-2",
                "debug",
                json!({"host": "h", "port": 1, "channel": "c"}),
                now,
                60,
            ),
        )
        .await;

    // Deleted by its owner: the node sees it again, to delete.
    let (status, deleted) = alice.delete(&format!("/v1/reservations/{first_id}")).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["to_delete"], true);
    let seen = next(&mut agent).await;
    assert_eq!(
        (seen.id, seen.to_delete, seen.reason.as_deref()),
        (first_id, true, Some("request"))
    );

    // Expired: the decommission timers mark it, the node sees it.
    server.clock.advance(Duration::from_secs(61));
    let seen = next(&mut agent).await;
    assert_eq!(
        (seen.id, seen.to_delete, seen.reason.as_deref()),
        (second_id, true, Some("expired"))
    );
    let (_, shown) = alice.get(&format!("/v1/reservations/{second_id}")).await;
    assert_eq!(shown["result"]["state"], "deleted", "{shown}");

    // Results, deletions and expiries are events.
    let events = server.events().await;
    assert_eq!(common::count_type(&events, "WorkloadReserved"), 3);
    // (node-2's debug reservation expired too.)
    assert_eq!(common::count_type(&events, "WorkloadDeleteRequested"), 3);
    assert_eq!(common::count_type(&events, "WorkloadResultReported"), 4);

    // A poll from 0 gives every reservation once, by its latest change.
    let admin = server.session(ADMIN_TOKEN);
    let (_, all) = admin.get("/v1/nodes/node-1/reservations?from=0&timeout=0").await;
    let ids: Vec<u64> = all["reservations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [first_id, second_id]);
    let seqs: Vec<u64> = all["reservations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs[0] < seqs[1] && seqs[0] > first_id, "{all}");
    // Nothing new: an empty answer at once with timeout=0, the cursor stays.
    let next_cursor = all["next"].as_u64().expect("next");
    let (_, empty) = admin
        .get(&format!("/v1/nodes/node-1/reservations?from={next_cursor}&timeout=0"))
        .await;
    assert_eq!(empty, json!({"reservations": [], "next": next_cursor}));
}

#[actix_rt::test]
async fn unsigned_badly_signed_and_expired_reservations_are_refused_with_a_reason() {
    let server = TestServer::start_with(with_auth).await;
    let alice = server.session(&server.account_with_token("alice", json!({})).await);
    let now = server.clock.now().timestamp();
    let good = reservation("alice", "node-1", "container", container(), now, 3600);

    // No key registered yet.
    let (status, body) = alice.post("/v1/reservations", good.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("no_public_key")),
        "{body}"
    );
    register_key(&alice, &owner_key()).await;

    let mut unsigned = good.clone();
    unsigned.as_object_mut().expect("object").remove("signature");
    let (status, body) = alice.post("/v1/reservations", unsigned).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap_or_default().contains("signature"),
        "{body}"
    );

    let mut tampered = good.clone();
    tampered["data"]["capacity"]["memory"] = json!(65536);
    let (status, body) = alice.post("/v1/reservations", tampered).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_signature")),
        "{body}"
    );
    let mut moved = good.clone();
    moved["node_id"] = json!("node-9");
    let (status, body) = alice.post("/v1/reservations", moved).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_signature")),
        "{body}"
    );

    let stale = reservation("alice", "node-1", "container", container(), now - 7200, 3600);
    let (status, body) = alice.post("/v1/reservations", stale).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("expired")),
        "{body}"
    );

    let bad_type = reservation("alice", "node-1", "volume", json!({"size": -1, "type": "ssd"}), now, 60);
    let (status, body) = alice.post("/v1/reservations", bad_type).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap_or_default().starts_with("data.size:"),
        "{body}"
    );

    // None of them was recorded; the good one is.
    assert_eq!(common::count_type(&server.events().await, "WorkloadReserved"), 0);
    let (status, body) = alice.post("/v1/reservations", good).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[actix_rt::test]
async fn another_account_cannot_see_or_delete_my_reservations_and_accounts_cannot_poll_nodes() {
    let server = TestServer::start_with(with_auth).await;
    let alice = server.session(&server.account_with_token("alice", json!({})).await);
    let bob = server.session(&server.account_with_token("bob", json!({})).await);
    register_key(&alice, &owner_key()).await;
    register_key(&bob, &owner_key()).await;
    let now = server.clock.now().timestamp();
    let (_, mine) = alice
        .post(
            "/v1/reservations",
            reservation("alice", "node-1", "container", container(), now, 3600),
        )
        .await;
    let id = mine["id"].as_u64().expect("id");

    let (status, body) = bob.get(&format!("/v1/reservations/{id}")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("reservation_not_found"))
    );
    let (status, _) = bob.delete(&format!("/v1/reservations/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(bob.get("/v1/reservations").await.1, json!({"reservations": []}));
    // Bob cannot reserve in Alice's name, even with a signature by the same key.
    let mut as_alice = reservation("alice", "node-1", "container", container(), now, 3600);
    as_alice["owner"] = json!("alice");
    let (status, body) = bob.post("/v1/reservations", as_alice).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let signed_for_alice = reservation("alice", "node-1", "container", container(), now, 3600);
    let (status, body) = bob.post("/v1/reservations", signed_for_alice).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_signature")),
        "{body}"
    );
    // Nodes are the operator's: account tokens cannot poll or report.
    let (status, _) = bob.get("/v1/nodes/node-1/reservations?timeout=0").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = alice
        .put(&format!("/v1/reservations/{id}/result"), json!({"state": "ok"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, shown) = alice.get(&format!("/v1/reservations/{id}")).await;
    assert_eq!(shown["to_delete"], false);
}

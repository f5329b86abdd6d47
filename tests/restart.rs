//! Restarts: what was acknowledged is back, every live lease gets its full
//! TTL again, keys left on an ended lease by an interrupted revoke or expiry
//! are deleted before the server answers, and passivated actors come back.

mod common;

use std::time::Duration;

use chrono::TimeDelta;
use common::{count_type, TestServer, PATIENCE};
use reqwest::StatusCode;
use serde_json::json;
use tenure::clock::{Clock, ManualClock};
use tenure::store::{EventStore, ExpectedVersion, SqliteStore};
use tenure_events::{
    AccountId, DeleteCause, Event, KeyPut, KeyspaceEvent, LeaseEvent, LeaseExpired, LeaseGranted, LeaseId,
    LeaseRevoked, Metadata, NewEvent, StreamId,
};

#[actix_rt::test]
async fn leases_and_keys_come_back_and_live_leases_get_their_full_ttl_again() {
    let mut server = TestServer::start().await;
    let lease = server.grant(100).await;
    server.put_key("key1", "hello", Some(&lease)).await;
    server.put_key("plain", "v", None).await;
    server.clock.advance(Duration::from_secs(60));
    let (_, body) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!(body["ttl"], 40);

    server.restart().await;
    let (status, body) = server.get(&format!("/v1/leases/{lease}?keys=true")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"id": lease, "granted_ttl": 100, "ttl": 100, "keys": ["key1"]})
    );
    assert_eq!(server.value("key1").await.as_deref(), Some("hello"));
    assert_eq!(server.value("plain").await.as_deref(), Some("v"));
    let (_, body) = server.get("/v1/leases").await;
    assert_eq!(body["leases"], json!([{"id": lease}]));
    // Revisions continue where they were.
    let (_, body) = server.put_key("after", "v", None).await;
    assert_eq!(body["revision"], 4);

    // The full TTL counts from the restart: alive at +99 s, gone at +100 s.
    server.clock.advance(Duration::from_secs(99));
    assert_eq!(server.value("key1").await.as_deref(), Some("hello"));
    server.clock.advance(Duration::from_secs(1));
    server
        .wait_for_log("the expiry", |es| count_type(es, "KeyDeleted") == 1)
        .await;
    assert_eq!(server.value("key1").await, None);
}

fn lease(n: i64) -> LeaseId {
    LeaseId::new(n).expect("positive")
}

async fn append(store: &SqliteStore, stream: StreamId, events: Vec<Event>, at: chrono::DateTime<chrono::Utc>) {
    let meta = Metadata::new(AccountId::default_account());
    let new: Vec<NewEvent> = events.iter().map(|e| NewEvent::new(e, &meta, at)).collect();
    store.append(stream, ExpectedVersion::Any, new).await.expect("append");
}

/// A log as a crash between a lease's end and the deletion of its keys
/// leaves it: the server must delete those keys before it answers anything.
#[actix_rt::test]
async fn keys_left_on_ended_leases_are_deleted_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::at_epoch();
    let at = clock.now();
    let account = AccountId::default_account();
    {
        let store = SqliteStore::open(dir.path()).expect("open");
        let granted = |n: i64| {
            Event::Lease(LeaseEvent::from(LeaseGranted {
                lease: lease(n),
                ttl_s: 60,
                requested_ttl_s: 60,
            }))
        };
        let put = |key: &str, l: Option<i64>, revision: i64| {
            Event::Keyspace(KeyspaceEvent::from(KeyPut {
                key: key.into(),
                value: "v".into(),
                lease: l.map(lease),
                revision,
            }))
        };
        append(&store, StreamId::lease(&account, lease(1)), vec![granted(1)], at).await;
        append(&store, StreamId::lease(&account, lease(2)), vec![granted(2)], at).await;
        append(&store, StreamId::lease(&account, lease(3)), vec![granted(3)], at).await;
        append(
            &store,
            StreamId::keyspace(&account),
            vec![
                put("revoked", Some(1), 2),
                put("expired", Some(2), 3),
                put("live", Some(3), 4),
                put("orphan", Some(4), 5),
            ],
            at,
        )
        .await;
        let revoked = Event::Lease(LeaseRevoked { lease: lease(1) }.into());
        append(&store, StreamId::lease(&account, lease(1)), vec![revoked], at).await;
        let expired = Event::Lease(
            LeaseExpired {
                lease: lease(2),
                deadline: at + TimeDelta::seconds(60),
            }
            .into(),
        );
        append(&store, StreamId::lease(&account, lease(2)), vec![expired], at).await;
        store.close();
    }

    let server = TestServer::start_in(dir.path().to_path_buf(), clock).await;
    assert_eq!(server.value("revoked").await, None);
    assert_eq!(server.value("expired").await, None);
    assert_eq!(
        server.value("orphan").await,
        None,
        "a key on a lease that never existed"
    );
    assert_eq!(server.value("live").await.as_deref(), Some("v"));
    let events = server.events().await;
    let causes: Vec<DeleteCause> = events
        .iter()
        .filter_map(|e| match e.decode() {
            Ok(Event::Keyspace(KeyspaceEvent::Deleted(d))) => Some(d.cause),
            _ => None,
        })
        .collect();
    assert_eq!(
        causes,
        vec![
            DeleteCause::LeaseEnded { lease: lease(1) },
            DeleteCause::LeaseEnded { lease: lease(2) },
            DeleteCause::LeaseEnded { lease: lease(4) },
        ]
    );
}

#[actix_rt::test]
async fn passivated_actors_are_activated_again_from_the_log() {
    let server = TestServer::start_with(|c| c.passivate_after = Duration::from_millis(20)).await;
    let lease = server.grant(60).await;
    server.put_key("k", "v", Some(&lease)).await;
    let hub = server.running().control.hub().clone();
    wait_until("the lease actor to passivate", || hub.leases.is_empty()).await;

    // A keep-alive leaves a passivated lease passivated: it moves the
    // deadline in the expiry queue, without reading the lease's stream.
    server.clock.advance(Duration::from_secs(50));
    let (status, _) = server.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(hub.leases.is_empty(), "a keep-alive activated the lease actor");

    // t=80, past the grant's deadline (t=60): activated again by a put, the
    // actor goes by the deadline the keep-alive set (t=110).
    server.clock.advance(Duration::from_secs(30));
    let (status, body) = server.put_key("k2", "v", Some(&lease)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get(&format!("/v1/leases/{lease}?keys=true")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"id": lease, "granted_ttl": 60, "ttl": 30, "keys": ["k", "k2"]})
    );
    wait_until("the lease actor to passivate again", || hub.leases.is_empty()).await;
    let (status, body) = server.delete(&format!("/v1/leases/{lease}")).await;
    assert_eq!((status, body["deleted_keys"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(server.value("k").await, None);
}

/// Passivation runs on wall time (it is about memory, not about the
/// domain), so this polls for it.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

//! Expiry with a manual clock: nothing here waits on wall time for a TTL.
//! The test moves the clock, then follows the log until the expected events
//! are there.

mod common;

use std::time::Duration;

use common::{count_type, TestServer};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use tenure::clock::Clock;
use tenure::domain::keyspace::LeaseUpdate;
use tenure::store::EventStore;
use tenure_events::{AccountId, DeleteCause, Event, KeyspaceEvent, LeaseEvent, Metadata};

#[actix_rt::test]
async fn a_lease_expires_at_its_deadline_and_its_keys_go_with_it() {
    let server = TestServer::start().await;
    let lease = server.grant(10).await;
    server.put_key("key5", "hehe", Some(&lease)).await;
    server.put_key("key6", "hihi", Some(&lease)).await;
    server.put_key("free", "x", None).await;

    server.clock.advance(Duration::from_secs(9));
    let (status, body) = server.get(&format!("/v1/leases/{lease}?keys=true")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"id": lease, "granted_ttl": 10, "ttl": 1, "keys": ["key5", "key6"]})
    );

    server.clock.advance(Duration::from_secs(1));
    let events = server
        .wait_for_log("the lease's keys to be deleted", |es| count_type(es, "KeyDeleted") == 2)
        .await;
    assert_eq!(server.value("key5").await, None);
    assert_eq!(server.value("key6").await, None);
    assert_eq!(server.value("free").await.as_deref(), Some("x"));
    let (status, _) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The log tells what happened and why.
    let expired = events
        .iter()
        .find(|e| e.event_type == "LeaseExpired")
        .expect("expiry recorded");
    let deletions: Vec<_> = events.iter().filter(|e| e.event_type == "KeyDeleted").collect();
    for d in &deletions {
        assert_eq!(d.causation_id, Some(expired.event_id));
        match d.decode().expect("decodes") {
            Event::Keyspace(KeyspaceEvent::Deleted(k)) => {
                assert_eq!(k.revision, 5, "one revision for all of the lease's keys");
                assert_eq!(
                    k.cause,
                    DeleteCause::LeaseExpired {
                        lease: lease.parse().expect("id")
                    }
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn keep_alive_postpones_expiry() {
    let server = TestServer::start().await;
    let lease = server.grant(10).await;
    server.put_key("k", "v", Some(&lease)).await;
    server.clock.advance(Duration::from_secs(8));
    let (status, _) = server.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    server.clock.advance(Duration::from_secs(8)); // t=16: past the first deadline
    let (status, body) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!((status, body["ttl"].as_i64()), (StatusCode::OK, Some(2)));
    assert_eq!(server.value("k").await.as_deref(), Some("v"));

    server.clock.advance(Duration::from_secs(2)); // t=18: the new deadline
    server
        .wait_for_log("the expiry", |es| count_type(es, "KeyDeleted") == 1)
        .await;
    assert_eq!(server.value("k").await, None);
    assert_eq!(count_type(&server.events().await, "LeaseExpired"), 1);
}

/// Keep-alives are not durable and not events: they move the deadline in
/// the expiry queue only. The log (and its head) stay where they were while
/// a lease is kept alive for six times its TTL, over /v1 and over etcd's
/// /v3; once the keep-alives stop, it expires one TTL after the last.
#[actix_rt::test]
async fn keep_alives_record_nothing_and_keep_a_lease_alive_past_its_ttl() {
    let server = TestServer::start().await;
    let granted_at = server.clock.now();
    let lease = server.grant(10).await;
    let decimal = i64::from_str_radix(&lease, 16).expect("a hex lease ID");
    assert_eq!(server.put_key("k", "v", Some(&lease)).await.0, StatusCode::OK);
    let head = server.store().head();
    let logged = server.events().await.len();
    assert_eq!(logged as u64, head);

    for round in 0..12 {
        server.clock.advance(Duration::from_secs(5));
        if round % 2 == 0 {
            let (status, body) = server.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
            assert_eq!((status, body["ttl"].as_i64()), (StatusCode::OK, Some(10)), "{body}");
        } else {
            let (status, body) = server.post("/v3/lease/keepalive", json!({ "ID": decimal })).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["result"]["TTL"], "10", "{body}");
        }
        let (status, body) = server.get(&format!("/v1/leases/{lease}")).await;
        assert_eq!((status, body["ttl"].as_i64()), (StatusCode::OK, Some(10)), "{body}");
    }
    // t=60: six TTLs after the grant, and nothing was written.
    assert_eq!(server.store().head(), head, "keep-alives moved the log's head");
    assert_eq!(server.events().await.len(), logged);
    let (_, health) = server.get("/healthz").await;
    assert_eq!(health["position"].as_u64(), Some(head));
    assert_eq!(server.value("k").await.as_deref(), Some("v"));

    server.clock.advance(Duration::from_secs(9));
    assert_eq!(server.value("k").await.as_deref(), Some("v"));
    server.clock.advance(Duration::from_secs(1));
    let events = server
        .wait_for_log("the expiry and the key's deletion", |es| {
            count_type(es, "LeaseExpired") == 1 && count_type(es, "KeyDeleted") == 1
        })
        .await;
    assert_eq!(events.len(), logged + 2, "the expiry and the deletion, nothing else");
    let expired = events
        .iter()
        .find_map(|e| match e.decode() {
            Ok(Event::Lease(LeaseEvent::Expired(x))) => Some(x),
            _ => None,
        })
        .expect("the expiry");
    assert_eq!(
        expired.deadline,
        granted_at + chrono::TimeDelta::seconds(70),
        "the deadline the last keep-alive set"
    );
}

/// Read-your-writes: a keep-alive sent the moment a grant is answered finds
/// the lease, though the expiry queue learns of grants from the log a little
/// later; and one sent the moment a revoke is answered does not.
#[actix_rt::test]
async fn a_keep_alive_right_after_a_grant_finds_the_lease_and_after_a_revoke_does_not() {
    let server = TestServer::start().await;
    let control = server.running().control.clone();
    let meta = || Metadata::new(AccountId::default_account());
    for _ in 0..200 {
        let lease = control.grant(meta(), None, 10).await.expect("grant").lease;
        assert_eq!(control.keep_alive(meta(), lease).await, Ok(10));
        control.revoke(meta(), lease).await.expect("revoke");
        assert_eq!(
            control.keep_alive(meta(), lease).await,
            Err(tenure::actors::CommandError::Lease(
                tenure::domain::lease::LeaseRejection::NotFound(lease)
            ))
        );
    }
}

/// Keep-alives that race the clock across their lease's deadline: each
/// either renews the lease (which then must not expire) or finds it gone
/// (and then it expires). Never both, never neither.
#[actix_rt::test]
async fn keep_alives_racing_the_deadline_either_renew_or_find_the_lease_gone() {
    const LEASES: usize = 300;
    let server = TestServer::start().await;
    let mut leases = Vec::new();
    for _ in 0..LEASES {
        leases.push(server.grant(10).await);
    }
    server.clock.advance(Duration::from_millis(9_985));
    let server = &server;
    let keep_alives = futures::future::join_all(leases.iter().map(|lease| async move {
        let (status, _) = server.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
        (lease.clone(), status)
    }));
    // The clock crosses every deadline while the keep-alives are in flight
    // (the pauses only let them interleave; nothing waits for a TTL).
    let clock = server.clock.clone();
    let ticks = async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_micros(300)).await;
            clock.advance(Duration::from_millis(1));
        }
    };
    let (answers, ()) = futures::join!(keep_alives, ticks);
    let renewed: Vec<&String> = answers
        .iter()
        .filter(|(_, s)| *s == StatusCode::OK)
        .map(|(l, _)| l)
        .collect();
    let gone: Vec<&String> = answers
        .iter()
        .filter(|(_, s)| *s == StatusCode::NOT_FOUND)
        .map(|(l, _)| l)
        .collect();
    assert_eq!(renewed.len() + gone.len(), LEASES, "{answers:?}");
    println!("{} renewed, {} found gone", renewed.len(), gone.len());

    let events = server
        .wait_for_log("the expiry of every lease found gone", |es| {
            count_type(es, "LeaseExpired") >= gone.len()
        })
        .await;
    let expired: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e.event_type == "LeaseExpired")
        .map(|e| e.stream.as_str().rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    let gone: std::collections::BTreeSet<String> = gone.into_iter().cloned().collect();
    assert_eq!(
        expired, gone,
        "expired exactly the leases whose keep-alive found them gone"
    );
    for lease in renewed {
        let (status, body) = server.get(&format!("/v1/leases/{lease}")).await;
        assert_eq!(status, StatusCode::OK, "{lease} was renewed: {body}");
    }
}

#[actix_rt::test]
async fn a_lease_past_its_deadline_is_dead_even_before_the_expiry_is_recorded() {
    let server = TestServer::start().await;
    let lease = server.grant(5).await;
    server.clock.advance(Duration::from_secs(5));
    // Whether or not the driver got there first, the lease is gone for clients.
    let (status, _) = server.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.put_key("late", "v", Some(&lease)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server
        .wait_for_log("the expiry", |es| count_type(es, "LeaseExpired") == 1)
        .await;
    assert_eq!(count_type(&server.events().await, "KeyPut"), 0);
}

#[actix_rt::test]
async fn a_revoked_lease_is_not_expired_later() {
    let server = TestServer::start().await;
    let lease = server.grant(5).await;
    let other = server.grant(6).await;
    server.delete(&format!("/v1/leases/{lease}")).await;
    server.clock.advance(Duration::from_secs(10));
    server
        .wait_for_log("the other lease's expiry", |es| count_type(es, "LeaseExpired") == 1)
        .await;
    let events = server.events().await;
    let expired: Vec<_> = events.iter().filter(|e| e.event_type == "LeaseExpired").collect();
    assert_eq!(expired.len(), 1);
    assert!(expired[0].stream.as_str().ends_with(&other));
}

/// Thousands of leases due in the same second are all expired at once: no
/// rate limit. (How fast is measured by `ops/bench`, not asserted here.)
#[actix_rt::test]
async fn every_lease_due_at_once_expires_with_its_key() {
    let server = TestServer::start().await;
    let control = server.running().control.clone();
    let leases = 3000;
    let account = AccountId::default_account();
    let granted: Vec<_> = futures::stream::iter(0..leases)
        .map(|i| {
            let (control, account) = (control.clone(), account.clone());
            async move {
                let lease = control
                    .grant(Metadata::new(account.clone()), None, 30)
                    .await
                    .expect("grant")
                    .lease;
                let key = format!("job/{i:05}").into();
                control
                    .put(
                        Metadata::new(account),
                        key,
                        Some("v".into()),
                        LeaseUpdate::Set(Some(lease)),
                        false,
                    )
                    .await
                    .expect("put");
                lease
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert_eq!(granted.len(), leases);
    let (_, body) = server.get("/v1/keys?prefix=job/&limit=1").await;
    assert_eq!(body["count"], leases);

    server.clock.advance(Duration::from_secs(30));
    server
        .wait_for_log("every key to be deleted", |es| count_type(es, "KeyDeleted") == leases)
        .await;
    let (_, body) = server.get("/v1/keys?prefix=job/&limit=1").await;
    assert_eq!(body["count"], 0);
    let (_, body) = server.get("/v1/leases").await;
    assert_eq!(body["leases"], json!([]));
    assert_eq!(count_type(&server.events().await, "LeaseExpired"), leases);
}

#[actix_rt::test]
async fn grants_and_keep_alives_start_no_lease_actor() {
    let server = TestServer::start().await;
    let hub = server.running().control.hub().clone();
    let mut leases = Vec::new();
    for _ in 0..5 {
        leases.push(server.grant(30).await);
    }
    for lease in &leases {
        let (status, body) = server.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(
        hub.leases.activations(),
        0,
        "a grant or a keep-alive started a lease actor"
    );

    // The leases are as live as ever: a put with one passes its gate.
    let (status, body) = server.put_key("k", "v", Some(&leases[0])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get(&format!("/v1/leases/{}?keys=true", leases[0])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"], json!(["k"]));
}

/// A client that names a lease ID before the server grants it (a guess:
/// server-chosen IDs count up) is refused, and starts a lease actor that
/// reads the lease as never granted; the grant, made without an actor,
/// must not leave a put after it refused.
#[actix_rt::test]
async fn a_put_naming_an_id_before_its_grant_is_refused_and_one_after_it_is_not() {
    let server = TestServer::start().await;
    let first = server.grant(30).await;
    let raw = u64::from_str_radix(&first, 16).expect("a hex lease ID");
    let next = format!("{:016x}", raw + 1);

    let (status, body) = server.put_key("early", "v", Some(&next)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let granted = server.grant(30).await;
    assert_eq!(granted, next, "server-chosen IDs count up");
    let (status, body) = server.put_key("late", "v", Some(&granted)).await;
    assert_eq!(status, StatusCode::OK, "a put after the grant was answered: {body}");
    assert_eq!(server.value("early").await, None);
    let (status, body) = server.delete(&format!("/v1/leases/{granted}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.value("late").await, None, "the revoke deleted the lease's key");
}

/// A revoke that reaches a lease's actor while a txn with its lease holds
/// it (pinned) waits for the txn, and the actor still passivates after:
/// the held revoke is counted once, not once when it came and again when
/// the actor sends it to itself.
#[actix_rt::test]
async fn a_revoke_held_behind_a_txn_with_two_leases_lets_the_actor_passivate() {
    use tenure::domain::keyspace::txn::{Txn, TxnOp};
    let server = TestServer::start_with(|c| c.passivate_after = Duration::from_millis(50)).await;
    let control = server.running().control.clone();
    let hub = control.hub().clone();
    let meta = || Metadata::new(AccountId::default_account());
    let first = control.grant(meta(), None, 30).await.expect("grant").lease;
    let second = control.grant(meta(), None, 30).await.expect("grant").lease;
    let put = |key: &str, lease| TxnOp::Put {
        key: key.as_bytes().to_vec().into(),
        value: Some(b"v".to_vec().into()),
        lease: LeaseUpdate::Set(Some(lease)),
        prev_kv: false,
    };
    let txn = Txn {
        compare: Vec::new(),
        success: vec![put("a", first), put("b", second)],
        failure: Vec::new(),
    };
    // Both are routed to the first lease's actor in this order before
    // either is answered: the txn pins it, the revoke waits.
    let (txned, revoked) = futures::join!(control.txn(meta(), txn), control.revoke(meta(), first));
    assert!(txned.expect("txn").outcome.succeeded);
    revoked.expect("revoke");
    assert_eq!(server.value("a").await, None, "the revoke came after the txn");
    assert_eq!(server.value("b").await.as_deref(), Some("v"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !hub.leases.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "lease actors still active: {}",
            hub.leases.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

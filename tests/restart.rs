//! Restarts: what was acknowledged is back, every live lease gets its full
//! TTL again, keys left on an ended lease by an interrupted revoke or expiry
//! are deleted before the server answers, and passivated actors come back.

mod common;

use std::time::Duration;

use chrono::TimeDelta;
use common::{count_type, TestServer, PATIENCE};
use reqwest::StatusCode;
use serde_json::json;
use tenure::actors::keyspace::RangeDone;
use tenure::clock::{Clock, ManualClock};
use tenure::domain::keyspace::{KeyRange, RangeOptions};
use tenure::server::ServerConfig;
use tenure::snapshot::store::{Header, SnapshotFile};
use tenure::snapshot::{SnapshotEvent, FORMAT_VERSION};
use tenure::store::{EventStore, ExpectedVersion, SqliteStore};
use tenure_events::{
    AccountId, ChainHash, DeleteCause, Event, KeyPut, KeyspaceEvent, LeaseEvent, LeaseExpired, LeaseGranted, LeaseId,
    LeaseRevoked, Metadata, NewEvent, StreamId,
};
use tenure_projections::snapshot::SetSnapshot;

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

/// Leases whose actors have passivated expire without an actor being
/// activated (the driver appends `LeaseExpired` itself, expecting the
/// grant's version): each ends once, its keys deleted by its expiry. A
/// lease whose actor is active goes through its actor; one revoked while
/// passivated is not expired.
#[actix_rt::test]
async fn passivated_leases_expire_without_activating_their_actors() {
    let server = TestServer::start_with(|c| c.passivate_after = Duration::from_millis(20)).await;
    let mut leases = Vec::new();
    for i in 0..20 {
        let lease = server.grant(10).await;
        server.put_key(&format!("k{i:02}"), "v", Some(&lease)).await;
        leases.push(lease);
    }
    let hub = server.running().control.hub().clone();
    wait_until("the lease actors to passivate", || hub.leases.is_empty()).await;
    let revoked = leases.pop().expect("a lease");
    let (status, _) = server.delete(&format!("/v1/leases/{revoked}")).await;
    assert_eq!(status, StatusCode::OK);
    wait_until("the revoked lease's actor to passivate", || hub.leases.is_empty()).await;
    let activations = hub.leases.activations();

    server.clock.advance(Duration::from_secs(10));
    let events = server
        .wait_for_log("every key to go", |es| count_type(es, "KeyDeleted") == 20)
        .await;
    assert_eq!(
        hub.leases.activations(),
        activations,
        "an expiry activated a lease actor"
    );
    let expired: Vec<_> = events.iter().filter(|e| e.event_type == "LeaseExpired").collect();
    let mut ended: Vec<String> = expired
        .iter()
        .map(|e| e.stream.as_str().rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    ended.sort();
    leases.sort();
    assert_eq!(ended, leases, "each lease but the revoked one expired once");
    for e in &expired {
        assert_eq!(e.version, 2, "appended right after the grant");
        let caused = events.iter().filter(|d| d.causation_id == Some(e.event_id)).count();
        assert_eq!(caused, 1, "its key's deletion names the expiry as its cause");
    }
    let (_, body) = server.get("/v1/keys?prefix=k&limit=1").await;
    assert_eq!(body["count"], 0);
    let metrics = server.metrics_text().await;
    assert!(
        metrics.lines().any(|l| l == "tenure_leases_expired_total 19"),
        "expiries counted: {metrics}"
    );
}

/// The expiry driver ends a passivated lease from what the expiry queue
/// knows (its grant) instead of reading its stream. A stream holding more
/// than the grant (here an old log's `LeaseKeptAlive`) makes that first
/// `LeaseExpired` append conflict; the driver then tries again at once
/// with an actor that reads the stream, and the lease ends once, at the
/// deadline the keep-alive set, its keys with it.
#[actix_rt::test]
async fn an_expiry_from_the_queue_s_grant_falls_back_to_the_stream_when_it_holds_more() {
    let server = TestServer::start_with(|c| c.passivate_after = Duration::from_millis(20)).await;
    let lease = server.grant(10).await;
    let kept = server.grant(10).await;
    server.put_key("k", "v", Some(&lease)).await;
    server.put_key("kept", "v", Some(&kept)).await;
    let hub = server.running().control.hub().clone();
    wait_until("the lease actors to passivate", || hub.leases.is_empty()).await;

    // An old server's keep-alive of `kept` at t=5: deadline t=15.
    let account = AccountId::default_account();
    let id: LeaseId = kept.parse().expect("lease id");
    let at = server.clock.now() + TimeDelta::seconds(5);
    let event = NewEvent::new(
        &LeaseEvent::from(tenure_events::LeaseKeptAlive { lease: id }),
        &Metadata::new(account.clone()),
        at,
    );
    server
        .log()
        .append(StreamId::lease(&account, id), ExpectedVersion::Exact(1), vec![event])
        .await
        .expect("append");

    server.clock.advance(Duration::from_secs(10));
    server
        .wait_for_log("the first lease's key to go", |es| count_type(es, "KeyDeleted") == 1)
        .await;
    assert_eq!(server.value("kept").await.as_deref(), Some("v"));
    server.clock.advance(Duration::from_secs(5));
    let events = server
        .wait_for_log("the second lease's key to go", |es| count_type(es, "KeyDeleted") == 2)
        .await;
    let expired: Vec<(String, u64, LeaseEvent)> = events
        .iter()
        .filter(|e| e.event_type == "LeaseExpired")
        .map(|e| {
            let Ok(Event::Lease(event)) = e.decode() else {
                panic!("a lease event")
            };
            (e.stream.to_string(), e.version, event)
        })
        .collect();
    let start = server.clock.now() - TimeDelta::seconds(15);
    assert_eq!(
        expired,
        vec![
            (
                format!("lease/{account}/{lease}"),
                2,
                LeaseEvent::from(LeaseExpired {
                    lease: lease.parse().expect("lease id"),
                    deadline: start + TimeDelta::seconds(10),
                })
            ),
            (
                format!("lease/{account}/{kept}"),
                3,
                LeaseEvent::from(LeaseExpired {
                    lease: id,
                    deadline: start + TimeDelta::seconds(15),
                })
            ),
        ]
    );
    assert_eq!(server.value("k").await, None);
    assert_eq!(server.value("kept").await, None);
}

/// A put with a lease starts the lease's actor from the expiry queue's
/// record of the grant, without reading the stream. A stream holding more
/// than the grant (an old log's `LeaseKeptAlive`) makes that actor's first
/// append conflict: a revoke through it is sent again to an actor that
/// reads the stream, and ends the lease once.
#[actix_rt::test]
async fn a_lease_actor_started_from_the_queue_falls_back_to_the_stream_when_it_holds_more() {
    let server = TestServer::start().await;
    let hub = server.running().control.hub().clone();
    let lease = server.grant(60).await;
    let account = AccountId::default_account();
    let id: LeaseId = lease.parse().expect("lease id");
    let event = NewEvent::new(
        &LeaseEvent::from(tenure_events::LeaseKeptAlive { lease: id }),
        &Metadata::new(account.clone()),
        server.clock.now(),
    );
    server
        .log()
        .append(StreamId::lease(&account, id), ExpectedVersion::Exact(1), vec![event])
        .await
        .expect("append");

    let (status, body) = server.put_key("k", "v", Some(&lease)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(hub.leases.activations(), 1, "the put started the lease's actor");
    let (status, body) = server.delete(&format!("/v1/leases/{lease}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        hub.leases.activations(),
        2,
        "the revoke conflicted on the queue's version and went to an actor that read the stream"
    );
    assert_eq!(server.value("k").await, None);
    let events = server
        .wait_for_log("the lease's key to go", |es| count_type(es, "KeyDeleted") == 1)
        .await;
    let revoked: Vec<u64> = events
        .iter()
        .filter(|e| e.event_type == "LeaseRevoked")
        .map(|e| e.version)
        .collect();
    assert_eq!(revoked, vec![3], "revoked once, after the grant and the keep-alive");
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

/// Damages every stored snapshot of the data directory (the server
/// stopped) with `damage`, which gets the connection, a snapshot's id and
/// header, and may rewrite them.
fn damage_snapshots(dir: &std::path::Path, damage: fn(&rusqlite::Connection, &Header)) -> usize {
    let headers = SnapshotFile::open_read_only(dir)
        .expect("open")
        .expect("snapshot tables")
        .headers(None)
        .expect("headers");
    let conn = rusqlite::Connection::open(dir.join(SqliteStore::FILE_NAME)).expect("open the file");
    for header in &headers {
        damage(&conn, header);
    }
    headers.len()
}

/// Rewrites a snapshot's header and bytes, with a checksum that matches
/// them: what a snapshot written by another build (or a buggy one) is.
fn rewrite(
    conn: &rusqlite::Connection,
    header: &Header,
    format_version: u32,
    position: u64,
    link: &ChainHash,
    bytes: &[u8],
) {
    let checksum = Header::checksum_of(&header.name, format_version, position, header.version, link, bytes);
    conn.execute("DELETE FROM snapshot_chunks WHERE snapshot_id = ?1", [header.id])
        .expect("delete chunks");
    conn.execute(
        "INSERT INTO snapshot_chunks (snapshot_id, seq, data) VALUES (?1, 0, ?2)",
        rusqlite::params![header.id, bytes],
    )
    .expect("chunk");
    conn.execute(
        "UPDATE snapshots SET format_version = ?1, position = ?2, link = ?3, bytes = ?4, checksum = ?5 WHERE id = ?6",
        rusqlite::params![
            format_version,
            position as i64,
            link.0.as_slice(),
            bytes.len() as i64,
            checksum.as_slice(),
            header.id
        ],
    )
    .expect("header");
}

fn stored_bytes(conn: &rusqlite::Connection, header: &Header) -> Vec<u8> {
    let mut stmt = conn
        .prepare("SELECT data FROM snapshot_chunks WHERE snapshot_id = ?1 ORDER BY seq")
        .expect("prepare");
    let chunks = stmt
        .query_map([header.id], |r| r.get::<_, Vec<u8>>(0))
        .expect("chunks")
        .collect::<Result<Vec<_>, _>>()
        .expect("chunks");
    chunks.concat()
}

/// Snapshots at a clean stop.
fn snapshot_at_stop(config: &mut ServerConfig) {
    config.snapshots.every_events = 1_000_000;
}

fn log_alone(config: &mut ServerConfig) {
    config.snapshots.restore = false;
    config.snapshots.write = false;
}

/// A server's state: its projections (what a snapshot keeps, and the
/// deadlines) and its keys.
async fn state(server: &TestServer) -> (u64, SetSnapshot, Vec<(String, i64)>, RangeDone) {
    let hub = server.running().control.hub().clone();
    let (position, set) = hub.projections.snapshot_state();
    let deadlines = hub
        .projections
        .expiry
        .lock()
        .iter_live()
        .map(|(k, l)| (k.lease.to_string(), l.deadline.timestamp()))
        .collect();
    let keys = server
        .running()
        .control
        .range(
            &AccountId::default_account(),
            KeyRange::prefix(""),
            RangeOptions::default(),
        )
        .await
        .expect("range");
    (position, set, deadlines, keys)
}

/// Each kind of damage to the stored snapshots is found at start-up: the
/// snapshot is ignored with a warning naming why, and the state is the one
/// the log alone folds into; the snapshots written after are used again.
#[actix_rt::test]
async fn a_damaged_or_old_snapshot_is_ignored_with_a_warning_and_rebuilt() {
    type Damage = fn(&rusqlite::Connection, &Header);
    let cases: [(&str, Damage, &str); 6] = [
        (
            "a byte of the bytes flipped",
            |conn, h| {
                let mut bytes = stored_bytes(conn, h);
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                conn.execute("DELETE FROM snapshot_chunks WHERE snapshot_id = ?1", [h.id])
                    .expect("delete");
                conn.execute(
                    "INSERT INTO snapshot_chunks (snapshot_id, seq, data) VALUES (?1, 0, ?2)",
                    rusqlite::params![h.id, bytes],
                )
                .expect("chunk");
            },
            "checksum does not match",
        ),
        (
            "a chunk missing",
            |conn, h| {
                conn.execute("DELETE FROM snapshot_chunks WHERE snapshot_id = ?1", [h.id])
                    .expect("delete");
            },
            "holds 0 bytes",
        ),
        (
            "an older format version",
            |conn, h| rewrite(conn, h, FORMAT_VERSION - 1, h.position, &h.link, &stored_bytes(conn, h)),
            "format version",
        ),
        (
            "bytes that do not decode, with a matching checksum",
            |conn, h| rewrite(conn, h, FORMAT_VERSION, h.position, &h.link, &[0xff; 7]),
            "does not decode",
        ),
        (
            "a link that is not the log's",
            |conn, h| {
                rewrite(
                    conn,
                    h,
                    FORMAT_VERSION,
                    h.position,
                    &ChainHash([7; 32]),
                    &stored_bytes(conn, h),
                )
            },
            "another event",
        ),
        (
            "a position past the log's head",
            |conn, h| {
                rewrite(
                    conn,
                    h,
                    FORMAT_VERSION,
                    h.position + 1000,
                    &h.link,
                    &stored_bytes(conn, h),
                )
            },
            "past the log's head",
        ),
    ];
    for (what, damage, reason) in cases {
        let mut server = TestServer::start_with(snapshot_at_stop).await;
        let kept = server.grant(100).await;
        server.put_key("kept", "v1", Some(&kept)).await;
        let revoked = server.grant(50).await;
        server.put_key("gone", "v2", Some(&revoked)).await;
        server.put_key("plain", "v3", None).await;
        server.delete(&format!("/v1/leases/{revoked}")).await;
        server.stop().await;
        assert_eq!(
            damage_snapshots(&server.dir, damage),
            2,
            "{what}: the projections' and the key space's"
        );

        server.restart().await;
        let events = server.running().snapshots.events();
        let rejected: Vec<&SnapshotEvent> = events
            .iter()
            .filter(|e| matches!(e, SnapshotEvent::Rejected { reason: r, .. } if r.contains(reason)))
            .collect();
        assert_eq!(rejected.len(), 2, "{what}: both refused for {reason:?}: {events:?}");
        assert!(
            !events.iter().any(|e| matches!(e, SnapshotEvent::Restored { .. })),
            "{what}: {events:?}"
        );
        assert_eq!(server.value("kept").await.as_deref(), Some("v1"), "{what}");
        assert_eq!(server.value("gone").await, None, "{what}");
        let ours = state(&server).await;
        server.stop().await;

        // The same as a server started from the log alone.
        let copy = tempfile::tempdir().expect("temp dir");
        for file in std::fs::read_dir(&server.dir).expect("dir") {
            let file = file.expect("entry");
            std::fs::copy(file.path(), copy.path().join(file.file_name())).expect("copy");
        }
        let mut alone = TestServer::start_in_with(copy.path().to_path_buf(), server.clock.clone(), log_alone).await;
        assert_eq!(state(&alone).await, ours, "{what}");
        alone.stop().await;

        // The stop wrote good snapshots: the next start uses them.
        server.restart().await;
        let restored = server
            .running()
            .snapshots
            .events()
            .into_iter()
            .filter(|e| matches!(e, SnapshotEvent::Restored { .. }))
            .count();
        assert_eq!(restored, 2, "{what}: {:?}", server.running().snapshots.events());
        assert_eq!(state(&server).await, ours, "{what}");
        server.stop().await;
    }
}

/// Snapshots every 10 events, and nothing by time.
fn snapshot_every_ten(config: &mut ServerConfig) {
    config.snapshots.every_events = 10;
    config.snapshots.every = std::time::Duration::from_secs(3600);
    config.snapshots.on_stop = false;
}

/// Snapshots every 10 events and at a clean stop, nothing by time.
fn snapshot_every_ten_and_at_stop(config: &mut ServerConfig) {
    snapshot_every_ten(config);
    config.snapshots.on_stop = true;
}

/// A start from a large key space snapshot knows its size: its next
/// snapshot by count waits as long as after one the process wrote itself,
/// not `every_events`.
#[actix_rt::test]
async fn a_start_from_a_large_snapshot_waits_as_long_for_the_next() {
    let mut server = TestServer::start_with(snapshot_every_ten_and_at_stop).await;
    let value = "v".repeat(640);
    for i in 0..10 {
        let (status, _) = server.put_key(&format!("k{i}"), &value, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    server.restart().await;
    let restored = server.running().snapshots.events();
    assert!(
        restored
            .iter()
            .any(|e| matches!(e, SnapshotEvent::Restored { name, .. } if name.starts_with("keyspace/"))),
        "{restored:?}"
    );
    // 40 overwrites: past every_events (10), short of the ~100 that a
    // snapshot of ~6.5 KB asks for.
    for round in 0..40 {
        let (status, _) = server.put_key(&format!("k{}", round % 10), &value, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Snapshots are taken one round at a time, the projections' first: once
    // three of theirs are written, two rounds have asked the key space.
    let projections = |events: &[SnapshotEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, SnapshotEvent::Written { name, .. } if name == "projections"))
            .count()
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let events = loop {
        let events = server.running().snapshots.events();
        if projections(&events) >= 3 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(projections(&events) >= 3, "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SnapshotEvent::Written { name, .. } if name.starts_with("keyspace/"))),
        "no key space snapshot 40 events after a start from one of ~6.5 KB: {events:?}"
    );
    server.stop().await;
}

/// A key space whose snapshot is large is snapshotted less often: the
/// events between two of its snapshots are at least the last one's bytes
/// over `BYTES_PER_EVENT`, however small `every_events` is, so a snapshot
/// costs the same per event whatever the size of what it holds.
#[actix_rt::test]
async fn a_large_key_space_waits_for_events_in_proportion_to_its_snapshot() {
    let server = TestServer::start_with(snapshot_every_ten).await;
    let value = "v".repeat(640);
    let keyspace = |events: &[SnapshotEvent]| -> Vec<(u64, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                SnapshotEvent::Written { name, position, bytes } if name.starts_with("keyspace/") => {
                    Some((*position, *bytes))
                }
                _ => None,
            })
            .collect()
    };
    // Ten keys of 640 bytes: a snapshot of ~6.5 KB, next due ~100 events
    // after it, not 10. Overwrites keep it at that size.
    let mut written = Vec::new();
    for round in 0..400 {
        let (status, _) = server.put_key(&format!("k{}", round % 10), &value, None).await;
        assert_eq!(status, StatusCode::OK);
        written = keyspace(&server.running().snapshots.events());
        if written.len() >= 3 {
            break;
        }
    }
    assert!(written.len() >= 3, "three key space snapshots in 400 puts: {written:?}");
    for pair in written.windows(2) {
        let ((first, bytes), (next, _)) = (pair[0], pair[1]);
        assert!(bytes > 6_400, "ten values of 640 bytes: {written:?}");
        assert!(
            next - first >= bytes / tenure::snapshot::BYTES_PER_EVENT,
            "{} events after a snapshot of {bytes} bytes: {written:?}",
            next - first
        );
    }
    // The projections, small, still follow every_events.
    let projections = server
        .running()
        .snapshots
        .events()
        .iter()
        .filter(|e| matches!(e, SnapshotEvent::Written { name, .. } if name == "projections"))
        .count();
    assert!(projections > 3 * written.len(), "{projections} projections' snapshots");
}

/// Snapshots by time only (every 20 ms): never by count, nor at a stop.
fn snapshot_by_time(config: &mut ServerConfig) {
    config.snapshots.every_events = 1_000_000;
    config.snapshots.every = Duration::from_millis(20);
    config.snapshots.on_stop = false;
}

/// The timer follows the size rule too: a tick snapshots the small read
/// models for a few events, but not a large key space, which waits for one
/// event per `BYTES_PER_EVENT` of its last snapshot (a tick at a million
/// keys would otherwise stall the key space every `every` for little gain).
#[actix_rt::test]
async fn a_timer_tick_snapshots_a_large_key_space_only_for_enough_events() {
    let server = TestServer::start_with(snapshot_by_time).await;
    let written = |server: &TestServer, prefix: &str| -> Vec<(u64, u64)> {
        server
            .running()
            .snapshots
            .events()
            .iter()
            .filter_map(|e| match e {
                SnapshotEvent::Written { name, position, bytes } if name.starts_with(prefix) => {
                    Some((*position, *bytes))
                }
                _ => None,
            })
            .collect()
    };
    // Ten keys of 640 bytes, overwritten until a tick has snapshotted all
    // of them (~6.5 KB: next due ~100 events after).
    let value = "v".repeat(640);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut round = 0;
    let (at, bytes) = loop {
        let (status, _) = server.put_key(&format!("k{}", round % 10), &value, None).await;
        assert_eq!(status, StatusCode::OK);
        round += 1;
        if let Some(&large) = written(&server, "keyspace/").iter().find(|(_, bytes)| *bytes > 6_400) {
            break large;
        }
        assert!(std::time::Instant::now() < deadline, "no key space snapshot by time");
    };
    let before = written(&server, "keyspace/").len();
    // Enough overwrites for the small projections to be due, too few for
    // the key space.
    let projections_bytes = written(&server, "projections").last().map_or(0, |&(_, bytes)| bytes);
    let overwrites = projections_bytes / tenure::snapshot::BYTES_PER_EVENT + 2;
    assert!(
        overwrites + 10 < bytes / tenure::snapshot::BYTES_PER_EVENT,
        "the projections ({projections_bytes} B) must be due before the key space ({bytes} B)"
    );
    for i in 0..overwrites {
        let (status, _) = server.put_key(&format!("k{}", i % 10), &value, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let head = server.running().store.shared().head();
    // A tick after the last overwrite wrote the projections at it or past.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !written(&server, "projections")
        .iter()
        .any(|&(position, _)| position >= head)
    {
        assert!(std::time::Instant::now() < deadline, "no projections' snapshot by time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let keyspace = written(&server, "keyspace/");
    assert_eq!(
        keyspace.len(),
        before,
        "{overwrites} events after a key space snapshot of {bytes} bytes at {at}: {keyspace:?}"
    );
}

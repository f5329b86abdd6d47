//! The history over HTTP and offline, on in-process servers with a manual
//! clock: `/v1/events` pages and filters, the live stream resuming after a
//! reconnect, the audit of a lease, and `tenure replay --until` against
//! what the server showed at those moments.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::binary::{stdout, BIN};
use common::{TestServer, PATIENCE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tenure::clock::Clock;

fn positions(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .expect("a list of events")
        .iter()
        .map(|e| e["position"].as_u64().expect("a position"))
        .collect()
}

fn types(events: &Value) -> Vec<String> {
    events
        .as_array()
        .expect("a list of events")
        .iter()
        .map(|e| e["type"].as_str().expect("a type").to_owned())
        .collect()
}

#[actix_rt::test]
async fn events_are_paged_and_filtered_with_a_cursor_and_the_head() {
    let server = TestServer::start().await;
    let lease = server.grant(10).await;
    assert_eq!(server.put_key("a", "1", Some(&lease)).await.0, StatusCode::OK);
    server.clock.advance(Duration::from_secs(1));
    assert_eq!(server.put_key("b", "2", None).await.0, StatusCode::OK);
    server.clock.advance(Duration::from_secs(1));
    let other = server.grant(20).await;
    let (status, _) = server.delete(&format!("/v1/leases/{lease}")).await;
    assert_eq!(status, StatusCode::OK);
    // 1 grant, 2 put, 3 put, 4 grant, 5 revoke, 6 delete of "a"

    let (status, page) = server.get("/v1/events?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(positions(&page["events"]), vec![1, 2]);
    assert_eq!((page["next"].as_u64(), page["head"].as_u64()), (Some(3), Some(6)));
    let (_, page) = server.get("/v1/events?from=3&limit=100").await;
    assert_eq!(positions(&page["events"]), vec![3, 4, 5, 6]);
    assert_eq!(page["next"], 7);

    let first = &server.get("/v1/events?limit=1").await.1["events"][0];
    assert_eq!(first["type"], "LeaseGranted");
    assert_eq!(first["stream"], format!("lease/default/{lease}"));
    assert_eq!(first["account"], "default");
    assert_eq!(first["payload"]["ttl_s"], 10);
    assert_eq!(first["summary"], format!("lease {lease} granted with TTL 10s"));
    assert!(
        first["request_id"].is_string() && first["causation_id"].is_null(),
        "{first}"
    );
    let log = server.events().await;
    assert_eq!(first["hash"], log[0].hash.to_string());

    let at = log[2].time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let cases = [
        ("kind=lease".to_owned(), vec![1, 4, 5]),
        ("type=KeyPut,KeyDeleted".to_owned(), vec![2, 3, 6]),
        (format!("entity={lease}"), vec![1, 5]),
        (format!("stream=lease/default/{other}"), vec![4]),
        ("stream=keyspace/default&from=3".to_owned(), vec![3, 6]),
        ("account=default&type=LeaseRevoked".to_owned(), vec![5]),
        ("account=nobody".to_owned(), vec![]),
        (format!("since={at}"), vec![3, 4, 5, 6]),
        (format!("until={at}"), vec![1, 2, 3]),
    ];
    for (query, expect) in cases {
        let (status, page) = server.get(&format!("/v1/events?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(positions(&page["events"]), expect, "{query}");
    }

    // Following `next` through one stream's pages finds each event once.
    for i in 0..7 {
        assert_eq!(server.put_key(&format!("p{i}"), "v", None).await.0, StatusCode::OK);
        server.grant(30).await;
    }
    let mut from = 1;
    let mut seen = Vec::new();
    loop {
        let (_, page) = server
            .get(&format!("/v1/events?stream=keyspace/default&limit=2&from={from}"))
            .await;
        seen.extend(positions(&page["events"]));
        from = page["next"].as_u64().expect("next");
        if from > page["head"].as_u64().expect("head") {
            break;
        }
    }
    let expect: Vec<u64> = server
        .events()
        .await
        .iter()
        .filter(|e| e.stream.as_str() == "keyspace/default")
        .map(|e| e.position)
        .collect();
    assert_eq!(seen, expect);

    // Bad input names the parameter.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("from=-1", "from"),
        ("since=yesterday", "since"),
        ("stream=", "stream"),
        ("account=Not-An-Account", "account"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = server.get(&format!("/v1/events?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap_or_default().contains(field),
            "{query}: {body}"
        );
    }
}

/// Reads SSE frames (`id` and `data`) from a live response until `count`
/// events arrived; answers them and the last id seen.
async fn read_frames(response: &mut reqwest::Response, count: usize) -> (Vec<Value>, u64) {
    let mut events = Vec::new();
    let mut last_id = 0;
    let mut pending = String::new();
    let read = tokio::time::timeout(PATIENCE, async {
        while events.len() < count {
            let chunk = response
                .chunk()
                .await
                .expect("the stream reads")
                .expect("the stream stays open");
            pending.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            while let Some(end) = pending.find("\n\n") {
                let frame: String = pending.drain(..end + 2).collect();
                for line in frame.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        last_id = id.parse().expect("a numeric id");
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        events.push(serde_json::from_str(data).expect("JSON data"));
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "timed out after {} of {count} events", events.len());
    (events, last_id)
}

#[actix_rt::test]
async fn the_live_stream_resumes_after_a_reconnect_without_loss_or_duplicates() {
    let server = TestServer::start().await;
    let session = server.session_with_header(None);
    for i in 0..3 {
        assert_eq!(server.put_key(&format!("k{i}"), "v", None).await.0, StatusCode::OK);
    }
    // From the start: the history first, then live.
    let mut live = session
        .call_raw(reqwest::Method::GET, "/v1/events/stream?from=1&kind=keyspace", None)
        .await;
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(
        live.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let (seen, _) = read_frames(&mut live, 3).await;
    assert_eq!(positions(&Value::from(seen)), vec![1, 2, 3]);
    // Live: a grant (filtered out) and a put.
    server.grant(10).await;
    assert_eq!(server.put_key("k3", "v", None).await.0, StatusCode::OK);
    let (seen, last) = read_frames(&mut live, 1).await;
    assert_eq!(positions(&Value::from(seen)), vec![5]);
    assert_eq!(last, 5);
    drop(live);

    // While disconnected.
    for i in 4..7 {
        assert_eq!(server.put_key(&format!("k{i}"), "v", None).await.0, StatusCode::OK);
    }
    let resumed = server
        .http
        .get(format!("{}/v1/events/stream?kind=keyspace", server.base))
        .header("last-event-id", last.to_string())
        .send()
        .await
        .expect("reconnect");
    let mut resumed = resumed;
    let (seen, _) = read_frames(&mut resumed, 3).await;
    assert_eq!(positions(&Value::from(seen)), vec![6, 7, 8], "exactly what was missed");
    assert_eq!(server.put_key("k7", "v", None).await.0, StatusCode::OK);
    let (seen, _) = read_frames(&mut resumed, 1).await;
    assert_eq!(positions(&Value::from(seen)), vec![9], "then live again");

    // Without `from`, a stream starts at the present.
    let mut fresh = session.call_raw(reqwest::Method::GET, "/v1/events/stream", None).await;
    let lease = server.grant(30).await;
    let (seen, _) = read_frames(&mut fresh, 1).await;
    assert_eq!(seen[0]["stream"], format!("lease/default/{lease}"));

    let bad = server
        .http
        .get(format!("{}/v1/events/stream", server.base))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.expect("JSON error");
    assert!(
        body["message"].as_str().unwrap_or_default().contains("Last-Event-ID"),
        "{body}"
    );
}

#[actix_rt::test]
async fn a_lease_audit_tells_its_whole_story_with_the_deletions_it_caused() {
    let server = TestServer::start().await;
    let lease = server.grant(10).await;
    for key in ["key5", "key6"] {
        assert_eq!(server.put_key(key, "v", Some(&lease)).await.0, StatusCode::OK);
    }
    server.clock.advance(Duration::from_secs(5));
    // A keep-alive is no event: the audit shows the grant, the expiry (at
    // the deadline the keep-alive set) and what it caused, not the renewal.
    let (status, _) = server.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let bystander = server.grant(100).await;
    server.clock.advance(Duration::from_secs(11));
    server
        .wait_for_log("the expiry's key deletions", |events| {
            common::count_type(events, "KeyDeleted") == 2
        })
        .await;

    let (status, audit) = server.get(&format!("/v1/audit?entity={lease}")).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    assert_eq!(audit["entity"], format!("lease/{lease}"));
    assert_eq!(
        types(&audit["events"]),
        vec!["LeaseGranted", "LeaseExpired", "KeyDeleted", "KeyDeleted"]
    );
    let events = audit["events"].as_array().expect("events");
    let deadline: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(events[1]["payload"]["deadline"].clone()).expect("a deadline");
    assert_eq!(
        deadline,
        server.clock.now() - chrono::TimeDelta::seconds(1),
        "expired at the deadline the keep-alive set (t=15), not the grant's (t=10)"
    );
    let expiry = events[1]["position"].as_u64().expect("position");
    let deleted: BTreeSet<String> = events[2..]
        .iter()
        .map(|e| {
            assert_eq!(e["caused_by"], expiry, "{e}");
            e["payload"]["key"].as_str().expect("key").to_owned()
        })
        .collect();
    assert_eq!(deleted, BTreeSet::from(["key5".to_owned(), "key6".to_owned()]));
    assert!(events[..2].iter().all(|e| e["caused_by"].is_null()));
    assert!(
        !events
            .iter()
            .any(|e| e["stream"] == format!("lease/default/{bystander}")),
        "another lease's events stay out"
    );
    // The same by kind; unknown and malformed entities.
    let (_, explicit) = server.get(&format!("/v1/audit?entity=lease/{lease}")).await;
    assert_eq!(explicit["events"], audit["events"]);
    let (status, body) = server.get("/v1/audit?entity=00000000000000ff").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = server.get("/v1/audit?entity=gadget/x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server.get("/v1/audit").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap_or_default().contains("entity"),
        "{body}"
    );
}

#[actix_rt::test]
async fn a_name_shared_by_two_kinds_of_entity_must_be_said_with_its_kind() {
    let server = TestServer::start().await;
    let session = server.session_with_header(None);
    session.create_service("demo", json!(["443:8080"])).await;
    let (status, _) = server
        .post(
            "/v1/shares",
            json!({"mode": "public", "target": "http://127.0.0.1:9", "unique_name": "demo"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = server.get("/v1/audit?entity=demo").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("share/demo") && message.contains("service/demo"),
        "{body}"
    );
    let (_, share) = server.get("/v1/audit?entity=share/demo").await;
    assert_eq!(types(&share["events"]), vec!["ShareReserved"]);
    // A service's story holds its instances'.
    session.attach("demo-1", "demo", "127.0.0.1:9", 30).await;
    let (_, service) = server.get("/v1/audit?entity=service/demo").await;
    assert_eq!(types(&service["events"]), vec!["ServiceCreated", "InstanceRegistered"]);
}

/// An instance as both show it: (name, address, live).
type InstanceShown = (String, String, bool);

/// What the server showed at a moment, in the terms replay shows it.
#[derive(Debug, PartialEq)]
struct Shown {
    /// (lease, granted TTL, seconds left, keys)
    leases: Vec<(String, i64, i64, Vec<String>)>,
    /// (key, value, create revision, mod revision, version, lease)
    keys: Vec<(String, String, i64, i64, i64, Option<String>)>,
    /// (token, target, serving)
    shares: Vec<(String, String, bool)>,
    /// (service, FQDN, [(instance, address, live)])
    services: Vec<(String, String, Vec<InstanceShown>)>,
    routes: Value,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// A key as both show it (the same field names in `/v1/keys` and replay).
fn key_shown(kv: &Value) -> (String, String, i64, i64, i64, Option<String>) {
    (
        text(&kv["key"]),
        text(&kv["value"]),
        kv["create_revision"].as_i64().expect("create"),
        kv["mod_revision"].as_i64().expect("mod"),
        kv["version"].as_i64().expect("version"),
        kv["lease"].as_str().map(str::to_owned),
    )
}

/// A service and its instances as both show them.
fn service_shown(s: &Value) -> (String, String, Vec<InstanceShown>) {
    let instances = s["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| (text(&i["name"]), text(&i["address"]), i["live"] == true))
        .collect();
    (text(&s["name"]), text(&s["fqdn"]), instances)
}

async fn shown_by_server(server: &TestServer) -> Shown {
    let mut leases = Vec::new();
    for lease in server.get("/v1/leases").await.1["leases"].as_array().expect("leases") {
        let id = text(&lease["id"]);
        let (status, ttl) = server.get(&format!("/v1/leases/{id}?keys=true")).await;
        assert_eq!(status, StatusCode::OK, "{ttl}");
        let keys = ttl["keys"].as_array().expect("keys").iter().map(text).collect();
        leases.push((
            id,
            ttl["granted_ttl"].as_i64().expect("ttl"),
            ttl["ttl"].as_i64().expect("left"),
            keys,
        ));
    }
    let keys = server.get("/v1/keys?prefix=").await.1["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(key_shown)
        .collect();
    let shares = server.get("/v1/shares").await.1["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| (text(&s["token"]), text(&s["target"]), s["session"]["live"] == true))
        .collect();
    let services = server.get("/v1/services").await.1["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(service_shown)
        .collect();
    let routes = serde_json::to_value(&**server.running().control.hub().projections.routes.load()).expect("routes");
    Shown {
        leases,
        keys,
        shares,
        services,
        routes,
    }
}

fn shown_by_replay(state: &Value) -> Shown {
    let leases = state["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|l| {
            assert_eq!(l["state"], "live", "{l}");
            let keys = l["keys"].as_array().expect("keys").iter().map(text).collect();
            (
                text(&l["id"]),
                l["ttl"].as_i64().expect("ttl"),
                l["remaining"].as_i64().expect("left"),
                keys,
            )
        })
        .collect();
    let keys = state["keys"]
        .as_array()
        .expect("key spaces")
        .iter()
        .flat_map(|space| space["keys"].as_array().expect("keys").clone())
        .map(|kv| key_shown(&kv))
        .collect();
    let shares = state["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| (text(&s["token"]), text(&s["target"]), s["serving"] == true))
        .collect();
    let services = state["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(service_shown)
        .collect();
    Shown {
        leases,
        keys,
        shares,
        services,
        routes: state["routes"].clone(),
    }
}

#[actix_rt::test]
async fn replay_until_a_moment_shows_what_the_server_showed_then() {
    let mut server = TestServer::start().await;
    let session = server.session_with_header(None);
    let mut moments = Vec::new();
    let tick = Duration::from_millis(1500);
    // Each moment is recorded, then the clock moves on, so that what
    // happens next is stamped after it.
    macro_rules! moment {
        () => {{
            moments.push((server.clock.now(), shown_by_server(&server).await));
            server.clock.advance(tick);
        }};
    }

    let short = server.grant(10).await;
    let long = server.grant(60).await;
    assert_eq!(server.put_key("a", "1", Some(&short)).await.0, StatusCode::OK);
    assert_eq!(server.put_key("b", "2", Some(&long)).await.0, StatusCode::OK);
    assert_eq!(server.put_key("c", "3", None).await.0, StatusCode::OK);
    moment!();

    // A keep-alive moves the deadline in the server's memory only: replay,
    // which has the log alone, counts the short lease's TTL from its grant
    // (below).
    let (status, _) = server.post(&format!("/v1/leases/{short}/keepalive"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.put_key("c", "33", Some(&long)).await.0, StatusCode::OK);
    session.create_service("web", json!(["443:8080/tls+http"])).await;
    let instance_lease = session.attach("web-1", "web", "127.0.0.1:9001", 20).await;
    let (status, _) = server
        .post(
            "/v1/shares",
            json!({"mode": "public", "target": "http://127.0.0.1:9002", "unique_name": "demo"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let session_lease = server.grant(30).await;
    let (status, body) = server
        .post("/v1/shares/demo/sessions", json!({"lease": session_lease}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    moment!();

    // The short lease expires (its key with it); the instance's lease too.
    server.clock.advance(Duration::from_secs(21));
    server
        .wait_for_log("two expiries", |events| common::count_type(events, "LeaseExpired") == 2)
        .await;
    server
        .wait_for_log("the expired key's deletion", |events| {
            common::count_type(events, "KeyDeleted") == 1
        })
        .await;
    let _ = instance_lease;
    moment!();

    let (status, _) = server.delete(&format!("/v1/leases/{long}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.delete("/v1/keys?key=c").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.put_key("d", "4", None).await.0, StatusCode::OK);
    moment!();
    server.stop().await;

    assert_eq!(moments.len(), 4);
    for (i, (at, shown)) in moments.iter().enumerate() {
        let until = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let out = Command::new(BIN)
            .args(["replay", "--data-dir"])
            .arg(&server.dir)
            .args(["--until", &until, "-o", "json"])
            .output()
            .expect("run tenure replay");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let state: Value = serde_json::from_str(&stdout(&out)).expect("replay prints JSON");
        let mut replayed = shown_by_replay(&state);
        if i == 1 {
            // Kept alive just now, the server says 10 s are left; the log
            // says 8 (10 from the grant, 1.5 s ago).
            let short = replayed
                .leases
                .iter_mut()
                .find(|l| l.0 == short)
                .expect("the short lease");
            assert_eq!(short.2, 8);
            short.2 = 10;
        }
        assert_eq!(&replayed, shown, "moment {i} ({until})");
    }
    // The moments differ, so the comparisons compare something.
    let distinct: BTreeSet<String> = moments.iter().map(|(_, s)| format!("{s:?}")).collect();
    assert_eq!(distinct.len(), moments.len());
}

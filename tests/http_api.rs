//! End to end over real HTTP against an in-process server: the `/v1` API for
//! leases and keys, its errors, and what it writes to the log.

mod common;

use common::{count_type, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tenure::clock::Clock;
use tenure::domain::lease::MAX_TTL_S;

#[actix_rt::test]
async fn grant_put_get_timetolive_revoke() {
    let server = TestServer::start().await;
    let lease = server.grant(100).await;
    assert_eq!(lease.len(), 16);

    let (status, body) = server.put_key("key1", "hello", Some(&lease)).await;
    assert_eq!((status, body["revision"].as_i64()), (StatusCode::OK, Some(2)));
    let (status, body) = server.get("/v1/keys?key=key1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"key": "key1", "value": "hello", "create_revision": 2, "mod_revision": 2, "version": 1, "lease": lease})
    );

    let (status, body) = server.get(&format!("/v1/leases/{lease}?keys=true")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"id": lease, "granted_ttl": 100, "ttl": 100, "keys": ["key1"]})
    );

    let (status, body) = server.delete(&format!("/v1/leases/{lease}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"id": lease, "revision": 3, "deleted_keys": 1}));
    // Once the revoke is acknowledged, the key is gone.
    assert_eq!(server.value("key1").await, None);
    let (status, body) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("lease_not_found"))
    );
}

#[actix_rt::test]
async fn ttl_below_the_minimum_is_raised_and_keep_alive_answers_the_granted_ttl() {
    let server = TestServer::start().await;
    let (status, body) = server.post("/v1/leases", json!({"ttl": 1})).await;
    assert_eq!((status, body["ttl"].as_i64()), (StatusCode::OK, Some(2)));
    let id = body["id"].as_str().expect("id");
    let (status, body) = server.post(&format!("/v1/leases/{id}/keepalive"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"id": id, "ttl": 2}));
}

#[actix_rt::test]
async fn keep_alive_resets_the_remaining_ttl() {
    let server = TestServer::start().await;
    let lease = server.grant(30).await;
    server.clock.advance(std::time::Duration::from_secs(20));
    let (_, body) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!(body["ttl"], 10);
    let (status, _) = server.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server.get(&format!("/v1/leases/{lease}")).await;
    assert_eq!(body["ttl"], 30);
}

#[actix_rt::test]
async fn client_chosen_ids_and_duplicates() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post("/v1/leases", json!({"ttl": 10, "id": "525b80fbbf3b906e"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"id": "525b80fbbf3b906e", "ttl": 10}));
    let (status, body) = server
        .post("/v1/leases", json!({"ttl": 10, "id": "525b80fbbf3b906e"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "lease_exists");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("525b80fbbf3b906e")),
        "{body}"
    );
}

#[actix_rt::test]
async fn list_shows_every_acknowledged_live_lease() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(server.grant(60).await);
    }
    // Read-your-writes: the list includes every grant acknowledged before it.
    let (status, body) = server.get("/v1/leases").await;
    assert_eq!(status, StatusCode::OK);
    let mut listed: Vec<String> = body["leases"]
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    listed.sort();
    assert_eq!(listed, ids);
    server.delete(&format!("/v1/leases/{}", ids[0])).await;
    let (_, body) = server.get("/v1/leases").await;
    assert_eq!(body["leases"].as_array().map(Vec::len), Some(19));
}

#[actix_rt::test]
async fn keys_by_prefix_limits_and_deletes() {
    let server = TestServer::start().await;
    for key in ["a/1", "a/2", "a/3", "b/1"] {
        server.put_key(key, "v", None).await;
    }
    let (status, body) = server.get("/v1/keys?prefix=a/&limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((body["count"].as_u64(), body["more"].as_bool()), (Some(3), Some(true)));
    let keys: Vec<&str> = body["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .filter_map(|kv| kv["key"].as_str())
        .collect();
    assert_eq!(keys, ["a/1", "a/2"]);
    let (_, all) = server.get("/v1/keys?prefix=").await;
    assert_eq!(all["count"], 4);

    let (status, body) = server.delete("/v1/keys?prefix=a/").await;
    assert_eq!((status, body["deleted"].as_u64()), (StatusCode::OK, Some(3)));
    let (_, body) = server.delete("/v1/keys?key=a/1").await;
    assert_eq!(body["deleted"], 0);
    let (_, body) = server.delete("/v1/keys?key=b/1").await;
    assert_eq!(body["deleted"], 1);
}

#[actix_rt::test]
async fn keys_in_the_path_are_percent_decoded_bytes() {
    let server = TestServer::start().await;
    let (status, _) = server.put("/v1/keys/dir/sub%20key", json!({"value": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.get("/v1/keys/dir/sub%20key").await;
    assert_eq!((status, body["key"].as_str()), (StatusCode::OK, Some("dir/sub key")));
    // Bytes that are not UTF-8 travel as base64.
    let (status, _) = server
        .put("/v1/keys/bin%FF", json!({"value": {"base64": "//4="}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server.get("/v1/keys/bin%FF").await;
    assert_eq!(body["key"], json!({"base64": "Ymlu/w=="}));
    assert_eq!(body["value"], json!({"base64": "//4="}));
    let (status, body) = server.delete("/v1/keys/dir/sub%20key").await;
    assert_eq!((status, body["deleted"].as_u64()), (StatusCode::OK, Some(1)));
}

#[actix_rt::test]
async fn put_moves_a_key_between_leases_and_prev_kv_shows_the_old_one() {
    let server = TestServer::start().await;
    let (one, two) = (server.grant(60).await, server.grant(60).await);
    server.put_key("k", "v1", Some(&one)).await;
    let (_, body) = server
        .put("/v1/keys?key=k&prev_kv=true", json!({"value": "v2", "lease": two}))
        .await;
    assert_eq!(body["prev_kv"]["value"], "v1");
    assert_eq!(body["prev_kv"]["lease"], json!(one));
    let (_, body) = server.get(&format!("/v1/leases/{one}?keys=true")).await;
    assert_eq!(body["keys"], json!([]));
    server.delete(&format!("/v1/leases/{one}")).await;
    assert_eq!(server.value("k").await.as_deref(), Some("v2"));
    server.delete(&format!("/v1/leases/{two}")).await;
    assert_eq!(server.value("k").await, None);
}

/// One row per bad request: method, path, body, expected status and code.
#[actix_rt::test]
async fn bad_requests_get_4xx_json_errors_naming_the_problem() {
    let server = TestServer::start().await;
    let check = |method: &str, path: &str, body: Option<&str>, status: u16, code: &str, mention: &str| {
        let server = &server;
        let (method, path, body, code, mention) = (
            method.to_owned(),
            path.to_owned(),
            body.map(str::to_owned),
            code.to_owned(),
            mention.to_owned(),
        );
        async move {
            let mut req = server
                .http
                .request(method.parse().expect("method"), format!("{}{path}", server.base));
            if let Some(body) = body {
                req = req.header("content-type", "application/json").body(body);
            }
            let res = req.send().await.expect("request");
            let got_status = res.status().as_u16();
            let body: Value = res.json().await.expect("JSON error body");
            assert_eq!(got_status, status, "{method} {path}: {body}");
            assert_eq!(body["code"], code.as_str(), "{method} {path}: {body}");
            let message = body["message"].as_str().expect("message");
            assert!(
                message.contains(&mention),
                "{method} {path}: {message:?} should mention {mention:?}"
            );
        }
    };
    check("POST", "/v1/leases", Some(r#"{"ttl": 0}"#), 400, "invalid_ttl", "ttl").await;
    check("POST", "/v1/leases", Some(r#"{"ttl": -3}"#), 400, "invalid_ttl", "ttl").await;
    check(
        "POST",
        "/v1/leases",
        Some(r#"{"ttl": "ten"}"#),
        400,
        "invalid_field",
        "ttl",
    )
    .await;
    let too_large = format!(r#"{{"ttl": {}}}"#, MAX_TTL_S + 1);
    check(
        "POST",
        "/v1/leases",
        Some(&too_large),
        400,
        "ttl_too_large",
        "too large",
    )
    .await;
    check(
        "POST",
        "/v1/leases",
        Some(r#"{"ttl": 5, "id": "zz"}"#),
        400,
        "invalid_field",
        "id",
    )
    .await;
    check("POST", "/v1/leases", Some(r#"{"ttl": 5"#), 400, "bad_json", "JSON").await;
    check(
        "POST",
        "/v1/leases",
        Some(r#"{"tll": 5}"#),
        400,
        "invalid_field",
        "unknown field `tll`",
    )
    .await;
    check("POST", "/v1/leases", None, 400, "invalid_body", "ttl").await;
    check(
        "GET",
        "/v1/leases/0000000000000abc",
        None,
        404,
        "lease_not_found",
        "0000000000000abc",
    )
    .await;
    check(
        "POST",
        "/v1/leases/0000000000000abc/keepalive",
        None,
        404,
        "lease_not_found",
        "abc",
    )
    .await;
    check(
        "DELETE",
        "/v1/leases/0000000000000abc",
        None,
        404,
        "lease_not_found",
        "abc",
    )
    .await;
    check("GET", "/v1/leases/nothex", None, 400, "invalid_lease_id", "nothex").await;
    check(
        "PUT",
        "/v1/keys?key=k",
        Some(r#"{"value": "v", "lease": "0000000000000abc"}"#),
        404,
        "lease_not_found",
        "abc",
    )
    .await;
    check("PUT", "/v1/keys?key=k", Some(r#"{}"#), 400, "invalid_body", "value").await;
    check(
        "PUT",
        "/v1/keys?key=",
        Some(r#"{"value": "v"}"#),
        400,
        "empty_key",
        "key",
    )
    .await;
    check(
        "PUT",
        "/v1/keys?prefix=a",
        Some(r#"{"value": "v"}"#),
        400,
        "invalid_query",
        "prefix",
    )
    .await;
    check("GET", "/v1/keys", None, 400, "invalid_query", "prefix").await;
    check("GET", "/v1/keys?key=a&prefix=b", None, 400, "invalid_query", "not both").await;
    check("GET", "/v1/keys?key=a&limit=x", None, 400, "invalid_query", "limit").await;
    check("GET", "/v1/keys?key=absent", None, 404, "key_not_found", "absent").await;
    check("GET", "/v1/nothing", None, 404, "no_route", "/v1/nothing").await;
    check("PATCH", "/v1/leases", None, 405, "method_not_allowed", "PATCH").await;
    let huge = format!(r#"{{"value": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    check("PUT", "/v1/keys?key=big", Some(&huge), 400, "body_too_large", "bytes").await;
    // Nothing of the above was written.
    assert!(server.events().await.is_empty());
}

#[actix_rt::test]
async fn bodies_without_a_json_content_type_are_accepted() {
    // `curl -d` sends application/x-www-form-urlencoded.
    let server = TestServer::start().await;
    let res = server
        .http
        .post(format!("{}/v1/leases", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"ttl": 10}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
}

#[actix_rt::test]
async fn every_event_records_account_request_and_time() {
    let server = TestServer::start().await;
    let res = server
        .http
        .post(format!("{}/v1/leases", server.base))
        .json(&json!({"ttl": 10}))
        .send()
        .await
        .expect("grant");
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let lease: Value = res.json().await.expect("json");
    let lease = lease["id"].as_str().expect("id").to_owned();
    server.put_key("k", "v", Some(&lease)).await;
    server.delete(&format!("/v1/leases/{lease}")).await;

    let events = server.events().await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["LeaseGranted", "KeyPut", "LeaseRevoked", "KeyDeleted"]);
    assert_eq!(
        events[0].request_id.map(|u| u.to_string()),
        request_id,
        "the grant's request id is in its event"
    );
    assert_eq!(events[0].stream.as_str(), format!("lease/default/{lease}"));
    assert_eq!(events[1].stream.as_str(), "keyspace/default");
    for e in &events {
        assert_eq!(e.account.as_str(), "default");
        assert_eq!(e.time, server.clock.now());
        assert!(e.request_id.is_some());
        e.decode().expect("every event decodes");
    }
    // The deletion was caused by the revocation.
    assert_eq!(events[3].causation_id, Some(events[2].event_id));
    assert_eq!(events[3].request_id, events[2].request_id);
    assert_eq!(count_type(&events, "KeyDeleted"), 1);
}

#[actix_rt::test]
async fn healthz_reports_the_log_position_and_the_head_of_its_chain() {
    let server = TestServer::start().await;
    let (_, body) = server.get("/healthz").await;
    assert_eq!(body["head"], format!("0:{}", "0".repeat(64)), "an empty log: {body}");
    server.grant(10).await;
    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let events = server.events().await;
    let head = format!("1:{}", events[0].hash);
    assert_eq!(
        body,
        json!({"status": "ok", "position": 1, "head": head, "timers": "leading"})
    );
}

/// etcd's base64 of a key or value.
fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `/v3/kv/range` of every key, at `revision` (0: now).
async fn v3_all_at(server: &TestServer, revision: i64) -> (StatusCode, Value) {
    server
        .post(
            "/v3/kv/range",
            json!({"key": "AA==", "range_end": "AA==", "revision": revision}),
        )
        .await
}

/// The `(key, value, create, mod, version, lease)` of each key in a `/v3`
/// range reply (absent fields are etcd's zero values).
fn v3_kvs(reply: &Value) -> Vec<(String, String, i64, i64, i64, i64)> {
    let int = |kv: &Value, field: &str| kv[field].as_str().map_or(0, |v| v.parse().expect("an int64"));
    let text = |kv: &Value, field: &str| {
        use base64::Engine;
        let raw = kv[field].as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).expect("base64");
        String::from_utf8(bytes).expect("UTF-8")
    };
    reply["kvs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|kv| {
            (
                text(kv, "key"),
                text(kv, "value"),
                int(kv, "create_revision"),
                int(kv, "mod_revision"),
                int(kv, "version"),
                int(kv, "lease"),
            )
        })
        .collect()
}

/// A range at a past revision answers the key space as it was then (read
/// from the log, so the same after a restart), under the current revision.
#[actix_rt::test]
async fn a_range_at_a_past_revision_reads_the_log_and_survives_a_restart() {
    let mut server = TestServer::start().await;
    let lease = server.grant(60).await;
    let lease_id = i64::from_str_radix(&lease, 16).expect("a hex lease ID");
    server.put_key("a", "1", None).await; // 2
    server.put_key("b", "1", Some(&lease)).await; // 3
    server.put_key("a", "2", None).await; // 4
    let (status, body) = server.delete(&format!("/v1/leases/{lease}")).await; // 5: b deleted
    assert_eq!((status, body["revision"].as_i64()), (StatusCode::OK, Some(5)));
    server.put_key("c", "1", None).await; // 6

    let kv = |k: &str, v: &str, create: i64, modified: i64, version: i64, lease: i64| {
        (k.to_owned(), v.to_owned(), create, modified, version, lease)
    };
    let expected = [
        (1, vec![]),
        (2, vec![kv("a", "1", 2, 2, 1, 0)]),
        (3, vec![kv("a", "1", 2, 2, 1, 0), kv("b", "1", 3, 3, 1, lease_id)]),
        (4, vec![kv("a", "2", 2, 4, 2, 0), kv("b", "1", 3, 3, 1, lease_id)]),
        (5, vec![kv("a", "2", 2, 4, 2, 0)]),
        (6, vec![kv("a", "2", 2, 4, 2, 0), kv("c", "1", 6, 6, 1, 0)]),
    ];
    let mut replies = Vec::new();
    for (revision, kvs) in &expected {
        let (status, body) = v3_all_at(&server, *revision).await;
        assert_eq!(status, StatusCode::OK, "at {revision}: {body}");
        assert_eq!(&v3_kvs(&body), kvs, "at {revision}: {body}");
        let count = body["count"].as_str().map_or(0, |c| c.parse().expect("a count"));
        assert_eq!(count, kvs.len(), "at {revision}: {body}");
        assert_eq!(
            body["header"]["revision"], "6",
            "at {revision}: the header has the current revision"
        );
        replies.push(body);
    }
    let (_, now) = v3_all_at(&server, 0).await;
    assert_eq!(now, replies[5], "revision 6 is now");
    let (status, body) = v3_all_at(&server, 7).await;
    assert_eq!((status, body["code"].as_i64()), (StatusCode::BAD_REQUEST, Some(11)));
    assert_eq!(
        body["message"],
        "etcdserver: mvcc: required revision is a future revision"
    );

    server.restart().await;
    for ((revision, _), before) in expected.iter().zip(&replies) {
        let (status, body) = v3_all_at(&server, *revision).await;
        assert_eq!(
            (status, &body),
            (StatusCode::OK, before),
            "at {revision} after the restart"
        );
    }
    // Options apply to the past key space: b alone at 4, counted with a.
    let (_, body) = server
        .post(
            "/v3/kv/range",
            json!({"key": b64("a"), "range_end": b64("c"), "revision": 4, "min_create_revision": 3}),
        )
        .await;
    assert_eq!(v3_kvs(&body), [kv("b", "1", 3, 3, 1, lease_id)]);
    assert_eq!(body["count"], "2");
}

/// A revision past the one published (the key space is not loaded yet, so
/// nothing is published) but below the key space's own: the key space is
/// loaded to learn that, and the range still reads the past.
#[actix_rt::test]
async fn a_past_revision_of_a_key_space_not_yet_loaded_is_read_from_the_log() {
    use tenure::store::{EventStore, ExpectedVersion};
    use tenure_events::{AccountId, KeyPut, KeyspaceEvent, Metadata, NewEvent, StreamId};

    let server = TestServer::start().await;
    // Written to the log directly, as if by an earlier server: no key
    // space actor has loaded them.
    let account = AccountId::default_account();
    let meta = Metadata::new(account.clone());
    let events: Vec<NewEvent> = [("k", "old", 2), ("k", "new", 3)]
        .into_iter()
        .map(|(key, value, revision)| {
            let put = KeyspaceEvent::from(KeyPut {
                key: key.into(),
                value: value.into(),
                lease: None,
                revision,
            });
            NewEvent::new(&put, &meta, server.clock.now())
        })
        .collect();
    server
        .store()
        .append(StreamId::keyspace(&account), ExpectedVersion::Exact(0), events)
        .await
        .expect("append");

    let (status, body) = server
        .post("/v3/kv/range", json!({"key": b64("k"), "revision": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(v3_kvs(&body), [("k".to_owned(), "old".to_owned(), 2, 2, 1, 0)]);
    assert_eq!(body["header"]["revision"], "3");
}

/// A txn's writes share one revision in the log and in replies; they are
/// read back the same at every revision, after a restart too; a txn puts
/// keys with leases that must be live, and those keys go with their lease.
#[actix_rt::test]
async fn a_txn_writes_at_one_revision_that_replays_and_its_lease_is_checked() {
    let mut server = TestServer::start().await;
    server.put_key("a", "1", None).await; // 2
    let put = |key: &str, value: &str| json!({"request_put": {"key": b64(key), "value": b64(value)}});
    let cas = json!({
        "compare": [{"key": b64("a"), "target": "VALUE", "result": "EQUAL", "value": b64("1")}],
        "success": [put("a", "2"), put("b", "1"), {"request_delete_range": {"key": b64("zzz")}}],
        "failure": [{"request_range": {"key": b64("a")}}],
    });
    let (status, body) = server.post("/v3/kv/txn", cas.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["succeeded"], true);
    assert_eq!(body["header"]["revision"], "3");
    assert_eq!(
        body["responses"][0],
        json!({"response_put": {"header": {"revision": "3"}}})
    );
    let puts: Vec<i64> = server
        .events()
        .await
        .iter()
        .filter(|e| e.event_type == "KeyPut")
        .map(|e| {
            serde_json::from_str::<Value>(&e.payload).expect("JSON")["revision"]
                .as_i64()
                .expect("revision")
        })
        .collect();
    assert_eq!(puts, [2, 3, 3]);
    // Again: the compare fails, nothing is written, the revision stays.
    let (status, body) = server.post("/v3/kv/txn", cas).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("succeeded").is_none(), "false is left out: {body}");
    assert_eq!(body["header"]["revision"], "3");
    assert_eq!(v3_kvs(&body["responses"][0]["response_range"])[0].1, "2");

    let kv = |k: &str, v: &str, create: i64, modified: i64, version: i64| {
        (k.to_owned(), v.to_owned(), create, modified, version, 0)
    };
    let expected = vec![kv("a", "2", 2, 3, 2), kv("b", "1", 3, 3, 1)];
    assert_eq!(v3_kvs(&v3_all_at(&server, 3).await.1), expected);
    assert_eq!(v3_kvs(&v3_all_at(&server, 2).await.1), vec![kv("a", "1", 2, 2, 1)]);
    server.restart().await;
    assert_eq!(v3_kvs(&v3_all_at(&server, 0).await.1), expected);
    assert_eq!(v3_kvs(&v3_all_at(&server, 2).await.1), vec![kv("a", "1", 2, 2, 1)]);

    // Leases: one live lease is fine; its keys go with it.
    let on = |key: &str, lease: &str| {
        let id = i64::from_str_radix(lease, 16).expect("a hex lease ID");
        json!({"request_put": {"key": b64(key), "value": b64("v"), "lease": id}})
    };
    let (l1, l2) = (server.grant(60).await, server.grant(60).await);
    let (status, body) = server
        .post("/v3/kv/txn", json!({"success": [on("l/1", &l1), on("l/2", &l1)]}))
        .await;
    assert_eq!(
        (status, &body["header"]["revision"]),
        (StatusCode::OK, &json!("4")),
        "{body}"
    );
    // Two leases: each key on its own; each lease's end takes its keys.
    let (status, body) = server
        .post("/v3/kv/txn", json!({"success": [on("l/3", &l1), on("l/4", &l2)]}))
        .await;
    assert_eq!(
        (status, &body["header"]["revision"]),
        (StatusCode::OK, &json!("5")),
        "{body}"
    );
    server.delete(&format!("/v1/leases/{l1}")).await;
    for key in ["l/1", "l/2", "l/3"] {
        assert_eq!(server.value(key).await, None, "{key} went with its lease");
    }
    assert_eq!(server.value("l/4").await.as_deref(), Some("v"));
    // An ended lease: refused on the branch that runs, whatever the other.
    for leases in [vec![&l1], vec![&l1, &l2], vec![&l2, &l1]] {
        let puts: Vec<Value> = leases
            .iter()
            .enumerate()
            .map(|(i, l)| on(&format!("l/x{i}"), l))
            .collect();
        let (status, body) = server.post("/v3/kv/txn", json!({ "success": puts })).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (StatusCode::NOT_FOUND, Some(5)),
            "{body}"
        );
        assert_eq!(body["message"], "etcdserver: requested lease not found");
    }
    let (status, body) = server
        .post(
            "/v3/kv/txn",
            json!({"success": [on("l/5", &l2)], "failure": [on("l/6", &l1)]}),
        )
        .await;
    assert_eq!((status, &body["succeeded"]), (StatusCode::OK, &json!(true)), "{body}");
    server.delete(&format!("/v1/leases/{l2}")).await;
    assert_eq!(server.value("l/4").await, None);
    assert_eq!(server.value("l/5").await, None);

    // Too many operations, as etcd counts them.
    let many: Vec<Value> = (0..129).map(|i| put(&format!("m/{i}"), "x")).collect();
    let (status, body) = server.post("/v3/kv/txn", json!({"success": many})).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(3)),
        "{body}"
    );
    assert_eq!(body["message"], "etcdserver: too many operations in txn request");
}

/// Txns putting keys with two leases race the revoke of each: whichever
/// wins, no key is left on a revoked lease (the first lease's actor holds
/// its revoke until the txn it vouched for is in the key space). The
/// window the pin closes is narrow: with the pin taken out, a few runs of
/// this test did not hit it, so it guards the outcome, and the argument
/// for the pin is in `actors::lease`.
#[actix_rt::test]
async fn txns_with_two_leases_racing_their_revokes_leave_no_key_on_an_ended_lease() {
    // Lease actors passivated at once: the second lease's actor then reads
    // its stream before it forwards, which widens the window the pin closes.
    let server = TestServer::start_with(|c| c.passivate_after = std::time::Duration::ZERO).await;
    for round in 0..8 {
        let (l1, l2) = (server.grant(60).await, server.grant(60).await);
        let id = |lease: &str| i64::from_str_radix(lease, 16).expect("a hex lease ID");
        let (i1, i2) = (id(&l1), id(&l2));
        let txns = (0..24).map(|i| {
            let server = &server;
            async move {
                let body = json!({"success": [
                    {"request_put": {"key": b64(&format!("r{round}/a{i}")), "value": b64("v"), "lease": i1}},
                    {"request_put": {"key": b64(&format!("r{round}/b{i}")), "value": b64("v"), "lease": i2}},
                ]});
                let (status, body) = server.post("/v3/kv/txn", body).await;
                assert!(
                    status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                    "{status}: {body}"
                );
            }
        });
        let revoked = if round % 2 == 0 { &l1 } else { &l2 };
        let revoke = async {
            let (status, body) = server.delete(&format!("/v1/leases/{revoked}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        };
        let mut all: Vec<futures::future::LocalBoxFuture<'_, ()>> = txns
            .map(|f| Box::pin(f) as futures::future::LocalBoxFuture<'_, ()>)
            .collect();
        all.insert(12, Box::pin(revoke));
        futures::future::join_all(all).await;
        let (_, body) = server
            .post(
                "/v3/kv/range",
                json!({"key": b64(&format!("r{round}/")), "range_end": b64(&format!("r{round}0"))}),
            )
            .await;
        let gone = id(revoked);
        let on_revoked = v3_kvs(&body).into_iter().filter(|kv| kv.5 == gone).count();
        assert_eq!(on_revoked, 0, "round {round}: keys left on the revoked lease: {body}");
    }
}

//! Accounts and auth end to end, on a real server with bearer tokens:
//! authentication on every route, isolation between accounts, limits, and
//! the admin endpoints.

mod common;

use common::{with_auth, TestServer, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tenure_events::RecordedEvent;

/// Every route of the API, with a body that would be valid (but the
/// description, `GET /v1/openapi.json`, which is public).
fn every_route() -> Vec<(Method, &'static str, Option<Value>)> {
    let lease = "00000000000000aa";
    vec![
        (Method::POST, "/v1/leases", Some(json!({"ttl": 10}))),
        (Method::GET, "/v1/leases", None),
        (Method::GET, "/v1/leases/00000000000000aa", None),
        (Method::DELETE, "/v1/leases/00000000000000aa", None),
        (Method::POST, "/v1/leases/00000000000000aa/keepalive", None),
        (Method::GET, "/v1/keys?key=a", None),
        (Method::PUT, "/v1/keys?key=a", Some(json!({"value": "v"}))),
        (Method::DELETE, "/v1/keys?key=a", None),
        (Method::GET, "/v1/keys/a", None),
        (Method::PUT, "/v1/keys/a", Some(json!({"value": "v"}))),
        (Method::DELETE, "/v1/keys/a", None),
        (Method::POST, "/v1/accounts", Some(json!({"name": "zed"}))),
        (Method::GET, "/v1/accounts", None),
        (Method::GET, "/v1/accounts/alice", None),
        (Method::POST, "/v1/accounts/alice/tokens", Some(json!({}))),
        (Method::GET, "/v1/accounts/alice/tokens", None),
        (Method::DELETE, "/v1/accounts/alice/tokens/abcdefgh", None),
        (Method::PUT, "/v1/accounts/alice/limits", Some(json!({"max_leases": 1}))),
        (Method::GET, "/v1/account", None),
        (Method::PUT, "/v1/account/key", Some(json!({"public_key": "x"}))),
        (Method::GET, "/v1/no-such-route", None),
        (Method::GET, "/v1/events", None),
        (Method::GET, "/v1/events?account=alice", None),
        (Method::GET, "/v1/events/stream", None),
        (Method::GET, "/v1/audit?entity=00000000000000aa", None),
        (Method::GET, "/v1/projections", None),
        (Method::GET, "/v1/overview", None),
        (Method::GET, "/v1/overview/leases", None),
        (
            Method::POST,
            "/v3/kv/put",
            Some(json!({"key": "YQ==", "value": "dg=="})),
        ),
        (Method::POST, "/v3/kv/range", Some(json!({"key": "YQ=="}))),
        (Method::POST, "/v3/kv/deleterange", Some(json!({"key": "YQ=="}))),
        (Method::POST, "/v3/lease/grant", Some(json!({"TTL": 10}))),
        (Method::POST, "/v3/lease/keepalive", Some(json!({"ID": lease}))),
        (Method::POST, "/v3/lease/revoke", Some(json!({"ID": 170}))),
        (Method::POST, "/v3/kv/lease/revoke", Some(json!({"ID": 170}))),
        (Method::POST, "/v3/lease/timetolive", Some(json!({"ID": 170}))),
        (Method::POST, "/v3/kv/lease/timetolive", Some(json!({"ID": 170}))),
        (Method::POST, "/v3/lease/leases", Some(json!({}))),
        (Method::POST, "/v3/kv/lease/leases", Some(json!({}))),
    ]
}

#[actix_rt::test]
async fn every_route_refuses_a_missing_revoked_or_malformed_token_with_401_json() {
    let server = TestServer::start_with(with_auth).await;
    let admin = server.session(ADMIN_TOKEN);
    let token = server.account_with_token("alice", json!({})).await;
    let (status, body) = admin.get("/v1/accounts/alice/tokens").await;
    assert_eq!(status, StatusCode::OK);
    let id = body["tokens"][0]["id"].as_str().expect("token id").to_owned();
    let (status, body) = admin.delete(&format!("/v1/accounts/alice/tokens/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = server.events().await.len();

    let headers: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("revoked token", Some(format!("Bearer {token}"))),
        ("unknown token", Some("Bearer tnr_aaaaaaaa_bbbbbbbb".into())),
        ("basic scheme", Some("Basic YWxpY2U6c2VjcmV0".into())),
        ("no token", Some("Bearer".into())),
        ("two words", Some("Bearer a b".into())),
        ("token without scheme", Some(token.clone())),
    ];
    for (what, header) in headers {
        let session = server.session_with_header(header);
        for (method, path, body) in every_route() {
            let res = session.call_raw(method.clone(), path, body).await;
            let status = res.status();
            let challenge = res.headers().get("www-authenticate").cloned();
            let text = res.text().await.expect("body");
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {method} {path}: {text}");
            assert_eq!(
                challenge.as_ref().and_then(|v| v.to_str().ok()),
                Some("Bearer realm=\"tenure\""),
                "{what}: {method} {path}"
            );
            let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
            if path.starts_with("/v3") {
                assert_eq!(body["code"], 16, "{what}: {path}: {body}");
                assert!(body["error"].is_string(), "{what}: {path}: {body}");
            } else {
                let code = body["code"].as_str().unwrap_or_default();
                assert!(
                    ["missing_token", "invalid_token", "malformed_authorization"].contains(&code),
                    "{what}: {path}: {body}"
                );
            }
            assert!(!text.contains(&token), "the token is echoed back: {text}");
        }
    }
    // Nothing was written by any of them.
    assert_eq!(server.events().await.len(), before);
    // The health check stays open (load balancers probe it without a token).
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    // So does the API's description, the one exception under /v1 (and
    // tests/openapi.rs checks that every route it describes refuses).
    let session = server.session_with_header(None);
    let (status, doc) = session.get("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
}

/// The events appended since `since`, by account.
fn accounts_of(events: &[RecordedEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.account.to_string(), e.stream.to_string()))
        .collect()
}

#[actix_rt::test]
async fn another_account_finds_nothing_of_mine_and_changes_nothing() {
    let server = TestServer::start_with(with_auth).await;
    let a = server.session(&server.account_with_token("a", json!({})).await);
    let b = server.session(&server.account_with_token("b", json!({})).await);

    // A's entities: a lease with a key, a plain key.
    let lease = a.grant(100).await;
    let lease_dec = i64::from_str_radix(&lease, 16).expect("hex lease");
    assert_eq!(a.put_key("key1", "a-value", Some(&lease)).await.0, StatusCode::OK);
    assert_eq!(a.put_key("key2", "a-plain", None).await.0, StatusCode::OK);
    let (_, a_leases_before) = a.get("/v1/leases").await;
    let (_, a_keys_before) = a.get("/v1/keys?prefix=key").await;
    let position = server.events().await.len();

    // B, with A's lease ID and A's key names, on every endpoint.
    let not_found = |status: StatusCode, body: &Value, what: &str| {
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}");
    };
    let (s, body) = b.get(&format!("/v1/leases/{lease}")).await;
    not_found(s, &body, "timetolive");
    assert_eq!(body["code"], "lease_not_found");
    let (s, body) = b.get(&format!("/v1/leases/{lease}?keys=true")).await;
    not_found(s, &body, "timetolive with keys");
    let (s, body) = b.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await;
    not_found(s, &body, "keep-alive");
    let (s, body) = b.delete(&format!("/v1/leases/{lease}")).await;
    not_found(s, &body, "revoke");
    let (s, body) = b.get("/v1/leases").await;
    assert_eq!((s, body), (StatusCode::OK, json!({"leases": []})), "list");
    let (s, body) = b.get("/v1/keys?key=key1").await;
    not_found(s, &body, "get ?key=");
    let (s, body) = b.get("/v1/keys/key2").await;
    not_found(s, &body, "get path");
    let (s, body) = b.get("/v1/keys?prefix=key").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["kvs"], json!([]), "prefix get");
    let (s, body) = b.delete("/v1/keys?key=key1").await;
    assert_eq!(
        (s, &body["deleted"]),
        (StatusCode::OK, &json!(0)),
        "delete ?key=: {body}"
    );
    let (s, body) = b.delete("/v1/keys/key2").await;
    assert_eq!(
        (s, &body["deleted"]),
        (StatusCode::OK, &json!(0)),
        "delete path: {body}"
    );
    let (s, body) = b.delete("/v1/keys?prefix=key").await;
    assert_eq!(
        (s, &body["deleted"]),
        (StatusCode::OK, &json!(0)),
        "delete prefix: {body}"
    );
    let (s, body) = b.put_key("key1", "b-value", Some(&lease)).await;
    not_found(s, &body, "put with A's lease");

    // The etcd gateway, the same.
    let (s, body) = b.post("/v3/lease/timetolive", json!({"ID": lease_dec})).await;
    assert_eq!(
        (s, &body["TTL"]),
        (StatusCode::OK, &json!("-1")),
        "v3 timetolive: {body}"
    );
    let (s, body) = b.post("/v3/lease/revoke", json!({"ID": lease_dec})).await;
    assert_eq!(
        (s, &body["code"]),
        (StatusCode::NOT_FOUND, &json!(5)),
        "v3 revoke: {body}"
    );
    let (s, body) = b.post("/v3/lease/keepalive", json!({"ID": lease_dec})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body["result"]["TTL"].is_null(),
        "v3 keep-alive of a missing lease has no TTL: {body}"
    );
    let (s, body) = b.post("/v3/lease/leases", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.get("leases").is_none_or(|l| l == &json!([])), "v3 leases: {body}");
    let (s, body) = b.post("/v3/kv/range", json!({"key": "a2V5MQ=="})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.get("kvs").is_none(), "v3 range: {body}");
    let (s, body) = b.post("/v3/kv/deleterange", json!({"key": "a2V5MQ=="})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.get("deleted").is_none(), "v3 delete: {body}");
    let (s, body) = b
        .post(
            "/v3/kv/put",
            json!({"key": "a2V5MQ==", "value": "eA==", "lease": lease_dec}),
        )
        .await;
    assert_eq!(
        (s, &body["code"]),
        (StatusCode::NOT_FOUND, &json!(5)),
        "v3 put with A's lease: {body}"
    );

    // Admin endpoints: forbidden alike for A's account and a missing one,
    // so they reveal nothing.
    let (s, forbidden_a) = b.get("/v1/accounts/a").await;
    let (_, forbidden_missing) = b.get("/v1/accounts/nobody").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(forbidden_a, forbidden_missing);

    // B owns its own `key1` and may pick A's lease ID for its own lease:
    // names are per account.
    assert_eq!(b.put_key("key1", "b-value", None).await.0, StatusCode::OK);
    let (s, body) = b.post("/v1/leases", json!({"ttl": 50, "id": lease})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        b.post(&format!("/v1/leases/{lease}/keepalive"), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(b.delete(&format!("/v1/leases/{lease}")).await.0, StatusCode::OK);

    // A sees exactly what it had.
    assert_eq!(a.get("/v1/leases").await.1, a_leases_before);
    assert_eq!(a.get("/v1/keys?prefix=key").await.1, a_keys_before);
    let (_, ttl) = a.get(&format!("/v1/leases/{lease}?keys=true")).await;
    assert_eq!(ttl["granted_ttl"], 100, "{ttl}");
    assert_eq!(ttl["keys"], json!(["key1"]), "{ttl}");

    // The log: everything B did since is B's, in B's streams.
    let events = server.events().await;
    let since = accounts_of(&events[position..]);
    assert!(!since.is_empty(), "B's own writes are in the log");
    for (account, stream) in since {
        assert_eq!(account, "b", "{stream}");
        assert!(stream.ends_with("/b") || stream.contains("/b/"), "{stream}");
    }

    // The history: B reads its own events only, whatever it asks; the
    // admin reads everyone's.
    let accounts_in = |page: &Value| -> Vec<String> {
        page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["account"].as_str().expect("account").to_owned())
            .collect()
    };
    let (s, page) = b.get("/v1/events?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let seen = accounts_in(&page);
    assert!(
        !seen.is_empty() && seen.iter().all(|a| a == "b"),
        "B's events only: {seen:?}"
    );
    for query in ["account=a", &format!("entity={lease}&account=a")] {
        let (s, body) = b.get(&format!("/v1/events?{query}")).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{query}"
        );
    }
    let (s, page) = b.get(&format!("/v1/events?entity={lease}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        accounts_in(&page).iter().all(|a| a == "b"),
        "A's lease ID names only B's own lease: {page}"
    );
    let (_, a_page) = a.get("/v1/events?limit=1000").await;
    assert!(accounts_in(&a_page).iter().all(|x| x == "a"));
    assert!(!accounts_in(&a_page).is_empty());
    let admin = server.session(ADMIN_TOKEN);
    let (s, all) = admin.get("/v1/events?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    let everyone: std::collections::BTreeSet<String> = accounts_in(&all).into_iter().collect();
    assert!(everyone.contains("a") && everyone.contains("b"), "{everyone:?}");
    let (_, only_a) = admin.get("/v1/events?account=a&limit=1000").await;
    assert_eq!(accounts_in(&only_a), accounts_in(&a_page));

    // Audits: A's lease is B's to see only as B's own (a different lease).
    let (s, body) = b.get("/v1/audit?entity=key2").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = b.get("/v1/audit?entity=account/a").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = b.get(&format!("/v1/audit?entity={lease}&account=a")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, mine) = b.get(&format!("/v1/audit?entity={lease}")).await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    assert_eq!(mine["streams"], json!([format!("lease/b/{lease}")]));
    let (s, theirs) = admin.get(&format!("/v1/audit?entity={lease}&account=a")).await;
    assert_eq!(s, StatusCode::OK, "{theirs}");
    assert_eq!(theirs["streams"], json!([format!("lease/a/{lease}")]));

    // The live stream: B follows from the start and gets its own events only.
    let mut live = b
        .call_raw(Method::GET, "/v1/events/stream?from=1&type=LeaseRevoked", None)
        .await;
    assert_eq!(live.status(), StatusCode::OK);
    let chunk = tokio::time::timeout(common::PATIENCE, async {
        let mut text = String::new();
        while !text.contains("data: ") {
            let chunk = live.chunk().await.expect("reads").expect("open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("B's revoke arrives");
    assert!(
        chunk.contains(r#""account":"b""#) && !chunk.contains(r#""account":"a""#),
        "{chunk}"
    );

    // The projections' digests are the admin's.
    let (s, _) = b.get("/v1/projections").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, digests) = admin.get("/v1/projections").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(digests["digests"].as_object().map(|d| d.len()), Some(7), "{digests}");
}

#[actix_rt::test]
async fn the_admin_manages_accounts_but_owns_no_entities_and_accounts_cannot_manage() {
    let server = TestServer::start_with(with_auth).await;
    let admin = server.session(ADMIN_TOKEN);
    let (status, body) = admin
        .post("/v1/accounts", json!({"name": "alice", "limits": {"max_leases": 5}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["limits"]["max_leases"], 5);
    assert_eq!(body["limits"]["max_keys"], -1);
    let (status, body) = admin.post("/v1/accounts", json!({"name": "alice"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("account_exists"))
    );
    let (status, body) = admin.post("/v1/accounts", json!({"name": "Bad Name"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap_or_default().starts_with("name:"),
        "{body}"
    );
    let (status, body) = admin.get("/v1/accounts/nobody").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("account_not_found"))
    );
    let (status, body) = admin.post("/v1/accounts/nobody/tokens", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A token is shown once; listings show its ID and label only.
    let (status, issued) = admin.post("/v1/accounts/alice/tokens", json!({"label": "ci"})).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let token = issued["token"].as_str().expect("token").to_owned();
    let id = issued["id"].as_str().expect("id").to_owned();
    assert!(token.starts_with(&format!("tnr_{id}_")), "{issued}");
    let (_, listed) = admin.get("/v1/accounts/alice/tokens").await;
    assert_eq!(listed["tokens"][0]["id"], id.as_str());
    assert_eq!(listed["tokens"][0]["label"], "ci");
    assert!(!listed.to_string().contains(&token));
    let (_, all) = admin.get("/v1/accounts").await;
    assert_eq!(all["accounts"][0]["name"], "alice");
    assert!(!all.to_string().contains(&token));

    // The admin owns nothing; an account manages nothing.
    let (status, body) = admin.get("/v1/leases").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let alice = server.session(&token);
    for (method, path, body) in [
        (Method::GET, "/v1/accounts", None),
        (Method::POST, "/v1/accounts", Some(json!({"name": "mallory"}))),
        (Method::POST, "/v1/accounts/alice/tokens", Some(json!({}))),
        (
            Method::PUT,
            "/v1/accounts/alice/limits",
            Some(json!({"max_leases": -1})),
        ),
        (Method::DELETE, &format!("/v1/accounts/alice/tokens/{id}"), None),
    ] {
        let (status, body) = alice.call(method.clone(), path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
    }
    let (status, me) = alice.get("/v1/account").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["usage"], json!({"leases": 0, "keys": 0}));

    // The account registers and rotates its own ed25519 key.
    let (status, body) = alice.put("/v1/account/key", json!({"public_key": "AAAA"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap_or_default().starts_with("public_key:"),
        "{body}"
    );
    let key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    let (status, body) = alice.put("/v1/account/key", json!({"public_key": key})).await;
    assert_eq!((status, &body["public_key"]), (StatusCode::OK, &json!(key)), "{body}");

    // A revoked token stops working as soon as the revoke is answered.
    let (status, _) = admin.delete(&format!("/v1/accounts/alice/tokens/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(alice.get("/v1/account").await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = admin.delete(&format!("/v1/accounts/alice/tokens/{id}")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("token_not_found"))
    );

    // Each account event records the account and the request that caused it.
    let res = admin
        .call_raw(Method::POST, "/v1/accounts/alice/tokens", Some(json!({})))
        .await;
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_owned();
    let events = server.events().await;
    let last = events.last().expect("events");
    assert_eq!(last.event_type, "AccountTokenCreated");
    assert_eq!(last.account.as_str(), "alice");
    assert_eq!(last.stream.as_str(), "account/alice");
    assert_eq!(last.request_id.map(|id| id.to_string()), Some(request_id));
}

#[actix_rt::test]
async fn accounts_tokens_and_limits_survive_a_restart() {
    let mut server = TestServer::start_with(with_auth).await;
    let token = server.account_with_token("alice", json!({"max_keys": 1})).await;
    server.restart().await;
    let alice = server.session(&token);
    assert_eq!(alice.put_key("k1", "v", None).await.0, StatusCode::OK);
    let (status, body) = alice.put_key("k2", "v", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
}

fn limit_message(body: &Value) -> String {
    assert_eq!(body["code"], "limit_reached", "{body}");
    body["message"].as_str().unwrap_or_default().to_owned()
}

#[actix_rt::test]
async fn reaching_a_limit_refuses_the_next_command_and_releasing_frees_the_slot() {
    let server = TestServer::start_with(with_auth).await;
    let admin = server.session(ADMIN_TOKEN);
    let c = server.session(
        &server
            .account_with_token("c", json!({"max_leases": 2, "max_keys": 2}))
            .await,
    );

    // Leases.
    let first = c.grant(100).await;
    let _second = c.grant(100).await;
    let before = server.events().await.len();
    let (status, body) = c.post("/v1/leases", json!({"ttl": 100})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let message = limit_message(&body);
    assert!(message.contains("max_leases") && message.contains('2'), "{message}");
    let (status, body) = c.post("/v3/lease/grant", json!({"TTL": 100})).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!(8)),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap_or_default().contains("max_leases"),
        "{body}"
    );
    assert_eq!(server.events().await.len(), before, "a refused grant writes nothing");
    assert_eq!(c.delete(&format!("/v1/leases/{first}")).await.0, StatusCode::OK);
    let third = c.grant(100).await;

    // A lease that expires frees its slot too.
    let (status, body) = c.post("/v1/leases", json!({"ttl": 5})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(c.delete(&format!("/v1/leases/{third}")).await.0, StatusCode::OK);
    let short = c.grant(5).await;
    server.clock.advance(std::time::Duration::from_secs(6));
    server
        .wait_for_log("the short lease expires", |events| {
            common::count_type(events, "LeaseExpired") == 1
        })
        .await;
    c.grant(100).await;
    let (_, ttl) = c.get(&format!("/v1/leases/{short}")).await;
    assert_eq!(ttl["code"], "lease_not_found");

    // Keys: creating is limited, changing is not; deleting frees a slot.
    assert_eq!(c.put_key("k1", "v", None).await.0, StatusCode::OK);
    assert_eq!(c.put_key("k2", "v", None).await.0, StatusCode::OK);
    let before = server.events().await.len();
    let (status, body) = c.put_key("k3", "v", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let message = limit_message(&body);
    assert!(message.contains("max_keys"), "{message}");
    let (status, body) = c.post("/v3/kv/put", json!({"key": "azM=", "value": "dg=="})).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!(8)),
        "{body}"
    );
    assert_eq!(server.events().await.len(), before, "a refused put writes nothing");
    assert_eq!(c.get("/v1/keys?key=k3").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.put_key("k1", "changed", None).await.0, StatusCode::OK);
    assert_eq!(c.delete("/v1/keys?key=k2").await.0, StatusCode::OK);
    assert_eq!(c.put_key("k3", "v", None).await.0, StatusCode::OK);

    // Lifting the limits lifts the refusals.
    let (status, body) = admin
        .put("/v1/accounts/c/limits", json!({"max_leases": -1, "max_keys": -1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.grant(100).await;
    assert_eq!(c.put_key("k4", "v", None).await.0, StatusCode::OK);
}

#[actix_rt::test]
async fn concurrent_grants_never_pass_the_lease_limit() {
    let server = TestServer::start_with(with_auth).await;
    let token = server.account_with_token("d", json!({"max_leases": 3})).await;
    let d = server.session(&token);
    let grants = (0..24).map(|_| d.post("/v1/leases", json!({"ttl": 100})));
    let results = futures::future::join_all(grants).await;
    let granted = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((granted, refused), (3, 21), "{results:?}");
    let (_, list) = d.get("/v1/leases").await;
    assert_eq!(list["leases"].as_array().map(Vec::len), Some(3));
}

#[actix_rt::test]
async fn limits_are_checked_and_name_the_field_at_fault() {
    let server = TestServer::start_with(with_auth).await;
    let admin = server.session(ADMIN_TOKEN);
    server.account_with_token("e", json!({})).await;
    for (body, field) in [
        (json!({"max_leases": -2}), "max_leases"),
        (json!({"max_keys": "many"}), "max_keys"),
        (json!({"max_services": 1.5}), "max_services"),
        (json!({"max_shares": 1}), "max_shares"),
    ] {
        let (status, answer) = admin.put("/v1/accounts/e/limits", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap_or_default().contains(field),
            "{body}: {answer}"
        );
    }
    let (status, answer) = admin
        .put(
            "/v1/accounts/e/limits",
            json!({"max_reserved_shares": 4, "max_services": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["limits"],
        json!({"max_leases": -1, "max_keys": -1, "max_reserved_shares": 4, "max_services": 0})
    );
    let (status, _) = admin.put("/v1/accounts/nobody/limits", json!({"max_keys": 1})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[actix_rt::test]
async fn local_mode_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = tenure::server::ServerConfig::new(dir.path());
    config.listen = "0.0.0.0:0".parse().expect("address");
    let error = match tenure::server::start(config).await {
        Ok(running) => {
            running.stop().await;
            panic!("a server without auth listened on 0.0.0.0");
        }
        Err(e) => e.to_string(),
    };
    assert!(error.contains("without --auth"), "{error}");
    // Nothing was created: the refusal comes before the store opens.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[actix_rt::test]
async fn local_mode_is_one_default_account_that_also_administers() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    let (status, me) = local.get("/v1/account").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "default");
    // A key registered in local mode creates the `default` account.
    let key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    let (status, body) = local.put("/v1/account/key", json!({"public_key": key})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = local.post("/v1/accounts", json!({"name": "later"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

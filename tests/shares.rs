//! Share reservations over HTTP: reserving and conflicts, sessions held by
//! leases, access grants, release, limits and isolation between accounts.

mod common;

use common::{with_auth, Session, TestServer, ADMIN_TOKEN};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tenure::store::EventStore;
use tenure_projections::{Projection, Shares};

async fn reserve(session: &Session, body: Value) -> Value {
    let (status, share) = session.post("/v1/shares", body).await;
    assert_eq!(status, StatusCode::CREATED, "{share}");
    share
}

#[actix_rt::test]
async fn reserved_tokens_are_unique_and_conflicts_are_409_not_500() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    let share = reserve(&local, json!({"mode": "public", "target": "http://localhost:9090"})).await;
    let token = share["token"].as_str().expect("token");
    assert_eq!(token.len(), 12, "{share}");
    assert!(
        token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{share}"
    );
    assert_eq!(
        share["frontend"],
        json!(format!("http://{token}.tenure.localhost:8080/"))
    );
    assert_eq!(share["backend_mode"], "proxy");
    assert_eq!(share["session"], Value::Null);

    let named = reserve(
        &local,
        json!({"mode": "private", "target": "/srv/www", "backend_mode": "web", "unique_name": "docs-site"}),
    )
    .await;
    assert_eq!(named["token"], "docs-site");
    assert!(
        named.get("frontend").is_none(),
        "private shares have no public frontend: {named}"
    );
    let (status, body) = local
        .post(
            "/v1/shares",
            json!({"mode": "public", "target": "http://x", "unique_name": "docs-site"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "share_reserved");
    assert_eq!(body["message"], "share 'docs-site': the token is already reserved");

    for (body, field) in [
        (json!({"mode": "public", "target": "localhost:9090"}), "target"),
        (
            json!({"mode": "public", "target": "http://x", "unique_name": "No"}),
            "unique_name",
        ),
        (json!({"mode": "open", "target": "http://x"}), "mode"),
        (json!({"mode": "public"}), "target"),
        (
            json!({"mode": "public", "target": "/srv", "backend_mode": "web", "extra": 1}),
            "extra",
        ),
    ] {
        let (status, answer) = local.post("/v1/shares", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap_or_default().contains(field),
            "{body}: {answer}"
        );
    }

    // Released, the name is free again.
    assert_eq!(local.delete("/v1/shares/docs-site").await.0, StatusCode::OK);
    let (status, body) = local.get("/v1/shares/docs-site").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("share_not_found"))
    );
    reserve(
        &local,
        json!({"mode": "public", "target": "http://x", "unique_name": "docs-site"}),
    )
    .await;
}

#[actix_rt::test]
async fn a_session_serves_while_its_lease_lives_and_one_at_a_time() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    reserve(
        &local,
        json!({"mode": "public", "target": "http://localhost:9090", "unique_name": "web1"}),
    )
    .await;

    // A session needs a live lease of the caller.
    let (status, body) = local
        .post("/v1/shares/web1/sessions", json!({"lease": "00000000000000ff"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("lease_not_found"))
    );
    let first_lease = local.grant(5).await;
    let (status, first) = local
        .post("/v1/shares/web1/sessions", json!({"lease": first_lease}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["target"], "http://localhost:9090");
    let (_, share) = local.get("/v1/shares/web1").await;
    assert_eq!(share["session"]["live"], true, "{share}");
    assert_eq!(share["session"]["id"], first["session"]);

    // A second backend: refused, unless it replaces the first.
    let second_lease = local.grant(5).await;
    let (status, body) = local
        .post("/v1/shares/web1/sessions", json!({"lease": second_lease}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("session_active"))
    );
    let (status, second) = local
        .post(
            "/v1/shares/web1/sessions",
            json!({"lease": second_lease, "replace": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let first_id = first["session"].as_str().expect("id");
    let (status, _) = local.delete(&format!("/v1/shares/web1/sessions/{first_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the replaced session is gone");

    // The backend dies: its lease expires, the session no longer serves, and
    // a new backend needs no --replace.
    server.clock.advance(std::time::Duration::from_secs(6));
    server
        .wait_for_log("both leases expire", |events| {
            common::count_type(events, "LeaseExpired") == 2
        })
        .await;
    let (_, share) = local.get("/v1/shares/web1").await;
    assert_eq!(share["session"]["live"], false, "{share}");
    let third_lease = local.grant(5).await;
    let (status, third) = local
        .post("/v1/shares/web1/sessions", json!({"lease": third_lease}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{third}");

    // Stopping ends the session; the reservation stays.
    let third_id = third["session"].as_str().expect("id");
    let (status, _) = local.delete(&format!("/v1/shares/web1/sessions/{third_id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, share) = local.get("/v1/shares/web1").await;
    assert_eq!(share["session"], Value::Null);

    // Releasing revokes the session's lease.
    let fourth_lease = local.grant(100).await;
    local
        .post("/v1/shares/web1/sessions", json!({"lease": fourth_lease}))
        .await;
    assert_eq!(local.delete("/v1/shares/web1").await.0, StatusCode::OK);
    let (status, _) = local.get(&format!("/v1/leases/{fourth_lease}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the session's lease is revoked");
}

#[actix_rt::test]
async fn a_web_share_session_needs_the_address_of_its_files_and_a_proxy_one_refuses_it() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    reserve(
        &local,
        json!({"mode": "public", "target": "/srv/www", "backend_mode": "web", "unique_name": "files"}),
    )
    .await;
    reserve(
        &local,
        json!({"mode": "public", "target": "http://localhost:9090", "unique_name": "app"}),
    )
    .await;
    let lease = local.grant(30).await;
    for (token, body) in [
        ("files", json!({"lease": lease})),
        ("files", json!({"lease": lease, "address": "no-port"})),
        ("app", json!({"lease": lease, "address": "127.0.0.1:8000"})),
    ] {
        let (status, refused) = local.post(&format!("/v1/shares/{token}/sessions"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{token}: {refused}");
        assert_eq!(refused["code"], "invalid_field");
        assert!(
            refused["message"].as_str().is_some_and(|m| m.starts_with("address: ")),
            "{refused}"
        );
    }
    let (status, started) = local
        .post(
            "/v1/shares/files/sessions",
            json!({"lease": lease, "address": "127.0.0.1:8000"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let (_, share) = local.get("/v1/shares/files").await;
    assert_eq!(share["session"]["address"], "127.0.0.1:8000");
    let routes = server.running().control.hub().projections.routes.load_full();
    assert_eq!(
        routes.hosts.get("files.tenure.localhost"),
        Some(&tenure_projections::Route::Share {
            target: Some("http://127.0.0.1:8000".into()),
            backend_mode: tenure_events::BackendMode::Web,
            grants: None,
        }),
        "the proxy sends the share's requests where its files are served"
    );
}

#[actix_rt::test]
async fn access_grants_are_events_for_private_shares_and_keep_only_a_hash() {
    let server = TestServer::start_with(with_auth).await;
    let alice = server.session(&server.account_with_token("alice", json!({})).await);
    let bob = server.session(&server.account_with_token("bob", json!({})).await);
    reserve(
        &alice,
        json!({"mode": "private", "target": "http://localhost:9090", "unique_name": "secret"}),
    )
    .await;
    reserve(
        &alice,
        json!({"mode": "public", "target": "http://localhost:9090", "unique_name": "open"}),
    )
    .await;

    // Whoever holds a private share's token may get access (zrok's model).
    let (status, access) = bob.post("/v1/shares/secret/access", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{access}");
    let secret = access["secret"].as_str().expect("secret").to_owned();
    assert_eq!(access["header"], "X-Tenure-Access");
    assert_eq!(access["frontend"], "http://secret.tenure.localhost:8080/");
    let (status, body) = bob.post("/v1/shares/open/access", json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("public_share"))
    );
    let (status, _) = bob.post("/v1/shares/nosuch/access", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let events = server.events().await;
    let granted = events
        .iter()
        .find(|e| e.event_type == "ShareAccessGranted")
        .expect("the grant is an event");
    assert_eq!(granted.account.as_str(), "bob");
    assert_eq!(granted.stream.as_str(), "share/secret");
    assert!(!granted.payload.contains(&secret));
    assert!(granted.payload.contains(&tenure::auth::sha256_hex(&secret)));
    let (_, share) = alice.get("/v1/shares/secret").await;
    assert_eq!(share["access_grants"], 1);
}

#[actix_rt::test]
async fn another_account_can_neither_see_nor_serve_nor_release_my_shares() {
    let server = TestServer::start_with(with_auth).await;
    let alice = server.session(&server.account_with_token("alice", json!({})).await);
    let bob = server.session(&server.account_with_token("bob", json!({})).await);
    reserve(
        &alice,
        json!({"mode": "public", "target": "http://localhost:9090", "unique_name": "mine"}),
    )
    .await;
    let alice_lease = alice.grant(100).await;
    let (status, session) = alice
        .post("/v1/shares/mine/sessions", json!({"lease": alice_lease}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let session_id = session["session"].as_str().expect("id").to_owned();
    let before = server.events().await.len();

    let bob_lease = bob.grant(100).await;
    let after_grant = server.events().await.len();
    let not_found = |(status, body): (StatusCode, Value), what: &str| {
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}");
        assert_eq!(body["code"], "share_not_found", "{what}: {body}");
    };
    not_found(bob.get("/v1/shares/mine").await, "get");
    not_found(
        bob.post("/v1/shares/mine/sessions", json!({"lease": bob_lease, "replace": true}))
            .await,
        "share reserved",
    );
    not_found(
        bob.delete(&format!("/v1/shares/mine/sessions/{session_id}")).await,
        "stop session",
    );
    not_found(bob.delete("/v1/shares/mine").await, "release");
    let (_, list) = bob.get("/v1/shares").await;
    assert_eq!(list, json!({"shares": []}));
    // Alice's lease is not Bob's to hold a session with, on his own share either.
    reserve(
        &bob,
        json!({"mode": "public", "target": "http://localhost:9091", "unique_name": "his"}),
    )
    .await;
    let (status, _) = bob.post("/v1/shares/his/sessions", json!({"lease": alice_lease})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Tokens are global: a held name is a 409 for everyone.
    let (status, _) = bob
        .post(
            "/v1/shares",
            json!({"mode": "public", "target": "http://x", "unique_name": "mine"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (_, share) = alice.get("/v1/shares/mine").await;
    assert_eq!(share["session"]["id"], json!(session_id));
    assert_eq!(share["session"]["live"], true);
    // Bob's attempts wrote nothing but his own grant and his own share.
    let events = server.events().await;
    assert_eq!(before + 1, after_grant);
    for e in &events[after_grant..] {
        assert_eq!(e.account.as_str(), "bob", "{}", e.stream);
        assert_eq!(e.stream.as_str(), "share/his");
    }
}

#[actix_rt::test]
async fn the_reserved_share_limit_refuses_the_next_and_release_frees_it() {
    let server = TestServer::start_with(with_auth).await;
    let admin = server.session(ADMIN_TOKEN);
    let carol = server.session(
        &server
            .account_with_token("carol", json!({"max_reserved_shares": 1}))
            .await,
    );
    reserve(
        &carol,
        json!({"mode": "public", "target": "http://x", "unique_name": "one"}),
    )
    .await;
    let before = server.events().await.len();
    let (status, body) = carol
        .post(
            "/v1/shares",
            json!({"mode": "public", "target": "http://x", "unique_name": "two"}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "limit_reached");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_reserved_shares"),
        "{body}"
    );
    assert_eq!(
        server.events().await.len(),
        before,
        "a refused reservation writes nothing"
    );
    let (status, _) = carol.get("/v1/shares/two").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(carol.delete("/v1/shares/one").await.0, StatusCode::OK);
    reserve(
        &carol,
        json!({"mode": "public", "target": "http://x", "unique_name": "two"}),
    )
    .await;
    admin
        .put("/v1/accounts/carol/limits", json!({"max_reserved_shares": -1}))
        .await;
    reserve(&carol, json!({"mode": "private", "target": "http://x"})).await;
    let (_, me) = carol.get("/v1/account").await;
    assert_eq!(me["limits"]["max_reserved_shares"], -1);
}

#[actix_rt::test]
async fn reservations_survive_a_restart_and_the_projection_replays_to_the_same_state() {
    let mut server = TestServer::start().await;
    let local = server.session_with_header(None);
    reserve(
        &local,
        json!({"mode": "public", "target": "http://localhost:9090", "unique_name": "keep"}),
    )
    .await;
    reserve(
        &local,
        json!({"mode": "private", "target": "http://localhost:9091", "unique_name": "gone"}),
    )
    .await;
    let lease = local.grant(100).await;
    local.post("/v1/shares/keep/sessions", json!({"lease": lease})).await;
    local.post("/v1/shares/gone/access", json!({})).await;
    local.delete("/v1/shares/gone").await;
    let (_, before) = local.get("/v1/shares").await;

    server.restart().await;
    let local = server.session_with_header(None);
    let (_, after) = local.get("/v1/shares").await;
    assert_eq!(after, before);
    assert_eq!(after["shares"].as_array().map(Vec::len), Some(1));

    // The live projection equals one folded from the log from scratch.
    let mut replayed = Shares::default();
    for e in server.store().read_all(1, usize::MAX).await.expect("read the log") {
        replayed.apply(&e);
    }
    let live = server.running().control.hub().projections.shares.lock().clone();
    assert_eq!(replayed, live);
    assert!(live.get("keep").is_some_and(|s| s.session.is_some()));
    assert_eq!(live.get("gone"), None);
}

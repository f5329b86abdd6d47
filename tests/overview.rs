//! The dashboard's reads over HTTP: `/v1/overview` and
//! `/v1/overview/leases` (what each caller may see, time left on the
//! manual clock, requests in flight through the real proxy, paging), and
//! the dashboard's files.

mod common;

use std::time::Duration;

use actix_web::{web, HttpResponse};
use common::{with_auth, TestServer, ADMIN_TOKEN, PATIENCE};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x[field].as_str().expect(field).to_owned())
        .collect()
}

#[actix_rt::test]
async fn an_account_sees_its_own_things_and_the_admin_every_accounts() {
    let server = TestServer::start_with(with_auth).await;
    let a = server.session(&server.account_with_token("a", json!({})).await);
    let b = server.session(&server.account_with_token("b", json!({})).await);
    let admin = server.session(ADMIN_TOKEN);
    for (who, name) in [(&a, "a"), (&b, "b")] {
        who.create_service(&format!("svc-{name}"), json!(["443:8080/tls+http"]))
            .await;
        who.attach(&format!("inst-{name}"), &format!("svc-{name}"), "127.0.0.1:9", 60)
            .await;
        let (s, body) = who
            .post("/v1/shares", json!({"mode": "public", "target": "http://127.0.0.1:9"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    b.grant(30).await;

    let (s, mine) = b.get("/v1/overview").await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    assert_eq!(strings(&mine["services"], "account"), ["b"]);
    assert_eq!(strings(&mine["shares"], "account"), ["b"]);
    assert_eq!(mine["live_leases"], 2, "the instance's lease and the other");
    assert!(mine.get("accounts").is_none(), "accounts are the admin's: {mine}");
    let hosts = strings(&mine["routes"], "host");
    assert_eq!(hosts.len(), 2, "b's service and share: {hosts:?}");
    assert!(hosts.iter().all(|h| !h.starts_with("svc-a")), "{hosts:?}");
    let instance = &mine["services"][0]["instances"][0];
    assert_eq!(instance["live"], true, "{instance}");
    assert_eq!(instance["remaining_ms"], 60_000, "{instance}");
    let (s, page) = b.get("/v1/overview/leases").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 2);
    assert_eq!(strings(&page["leases"], "account"), ["b", "b"]);

    let (s, all) = admin.get("/v1/overview").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(strings(&all["services"], "account"), ["a", "b"]);
    assert_eq!(strings(&all["shares"], "account").len(), 2);
    assert_eq!(all["live_leases"], 3);
    let accounts = &all["accounts"];
    assert_eq!(strings(accounts, "name"), ["a", "b"]);
    assert_eq!(accounts[1]["live_leases"], 2, "{accounts}");
    assert_eq!(accounts[1]["services"], 1, "{accounts}");
    let (_, page) = admin.get("/v1/overview/leases").await;
    assert_eq!(page["total"], 3);
    assert_eq!(strings(&page["leases"], "account"), ["a", "b", "b"]);

    let no_token = server.session_with_header(None);
    assert_eq!(no_token.get("/v1/overview").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(no_token.get("/v1/overview/leases").await.0, StatusCode::UNAUTHORIZED);
}

#[actix_rt::test]
async fn leases_come_in_windows_with_their_keys_and_count_down_on_the_clock() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(local.grant(100).await);
    }
    ids.sort();
    let (s, body) = local.put_key("k1", "v", Some(&ids[3])).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = local.put_key("k2", "v", Some(&ids[3])).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let mut seen = Vec::new();
    for offset in (0..30).step_by(7) {
        let (s, page) = local.get(&format!("/v1/overview/leases?offset={offset}&limit=7")).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(
            (page["total"].as_u64(), page["offset"].as_u64()),
            (Some(25), Some(offset))
        );
        seen.extend(strings(&page["leases"], "id"));
    }
    assert_eq!(seen, ids, "the windows cover every lease once, in ID order");

    let (_, page) = local.get("/v1/overview/leases?limit=5").await;
    assert_eq!(page["leases"][3]["keys"], json!(["k1", "k2"]));
    assert_eq!(page["leases"][2]["keys"], json!([]));
    assert_eq!(page["leases"][3]["ttl"], 100);
    assert_eq!(page["leases"][3]["remaining_ms"], 100_000);
    server.clock.advance(Duration::from_millis(40_250));
    let (_, page) = local.get("/v1/overview/leases?limit=5").await;
    assert_eq!(page["leases"][3]["remaining_ms"], 59_750);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=-1", "offset"),
        ("limit=x", "limit"),
        ("color=red", "color"),
    ] {
        let (s, body) = local.get(&format!("/v1/overview/leases?{query}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{query}: {body}");
    }
}

#[actix_rt::test]
async fn an_instance_shows_the_requests_the_proxy_has_in_flight_to_it() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    // A backend that holds each request until the test lets it go.
    let (release, held) = tokio::sync::watch::channel(false);
    let address = common::actix_backend(move |config| {
        let held = held.clone();
        config.default_service(web::to(move || {
            let mut held = held.clone();
            async move {
                let _ = held.wait_for(|go| *go).await;
                HttpResponse::Ok().body("done")
            }
        }));
    })
    .await;
    let fqdn = local.create_service("slow", json!(["443:8080/tls+http"])).await;
    local.attach("slow-1", "slow", &address, 60).await;
    local.attach("idle-1", "slow", "127.0.0.1:9", 60).await;

    let in_flight = |overview: &Value| -> Vec<(String, u64)> {
        overview["services"][0]["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().expect("name").to_owned(),
                    i["in_flight"].as_u64().expect("count"),
                )
            })
            .collect()
    };
    let proxy = format!("http://{}", server.running().proxy_addr.expect("the proxy runs"));
    // Least connections: with one request held at slow-1, the next ones
    // would go to idle-1 (which refuses), so send them all at once and
    // count what reaches the slow backend.
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let (proxy, fqdn) = (proxy.clone(), fqdn.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .get(format!("{proxy}/"))
                    .header("host", fqdn)
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let held_now = loop {
        let (_, overview) = local.get("/v1/overview").await;
        let counts = in_flight(&overview);
        let slow = counts.iter().find(|(n, _)| n == "slow-1").map_or(0, |(_, c)| *c);
        if slow > 0 {
            break counts;
        }
        assert!(started.elapsed() < PATIENCE, "no request in flight shown: {overview}");
        tokio::task::yield_now().await;
    };
    // (idle-1 refuses connections: a request to it may or may not be in
    // flight at this moment.)
    assert!(held_now.iter().any(|(name, _)| name == "idle-1"), "{held_now:?}");
    release.send(true).expect("release the backend");
    for request in requests {
        let _ = request.await.expect("the request task");
    }
    // The proxy counts a request until it has finished forwarding it, which
    // may be just after the client has its answer: poll.
    let started = std::time::Instant::now();
    loop {
        let (_, overview) = local.get("/v1/overview").await;
        let counts = in_flight(&overview);
        if counts == [("idle-1".to_owned(), 0), ("slow-1".to_owned(), 0)] {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "still in flight once answered: {counts:?}"
        );
        tokio::task::yield_now().await;
    }
}

#[actix_rt::test]
async fn the_dashboard_files_come_from_the_binary_with_a_self_only_policy() {
    let server = TestServer::start_with(with_auth).await;
    let http = reqwest::Client::new();
    for (path, content_type, contains) in [
        ("/", "text/html", "/dashboard/app.js"),
        ("/dashboard", "text/html", "<title>tenure</title>"),
        ("/dashboard/app.js", "text/javascript", "/v1/overview"),
        ("/dashboard/style.css", "text/css", ".scroller"),
    ] {
        // No token: the page itself is public, the API behind it is not.
        let res = http.get(format!("{}{path}", server.base)).send().await.expect("answer");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let header = |h: &str| {
            res.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert!(
            header("content-security-policy").starts_with("default-src 'self'"),
            "{path}"
        );
        let body = res.text().await.expect("body");
        assert!(body.contains(contains), "{path}");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} fetches nothing elsewhere"
        );
    }
    let (s, body) = server.session_with_header(None).get("/dashboard/secrets.txt").await;
    assert_eq!((s, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("no_route")));
    let (s, body) = server
        .session_with_header(None)
        .call(reqwest::Method::POST, "/dashboard", None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

//! The data-plane proxy against real HTTP backends started by the test:
//! the Unikraft-style service flow, automatic services, the zrok-style
//! share flow with private grants, errors, redirects, and the routing
//! table rebuilt from the log.

mod common;

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tenure::store::EventStore;
use tenure_projections::{Projection, RoutingTable};

/// A real HTTP backend that answers who it is and what it was sent.
async fn backend(name: &'static str) -> String {
    common::actix_backend(move |config| {
        config.default_service(web::to(move |req: HttpRequest, body: web::Bytes| async move {
            let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
            HttpResponse::Ok().json(json!({
                "backend": name,
                "path": req.uri().to_string(),
                "host": header("host"),
                "x-forwarded-for": header("x-forwarded-for"),
                "x-forwarded-host": header("x-forwarded-host"),
                "x-forwarded-proto": header("x-forwarded-proto"),
                "body": String::from_utf8_lossy(&body),
            }))
        }));
    })
    .await
}

/// Requests through the proxy with a Host header.
struct Frontend {
    base: String,
    http: reqwest::Client,
}

impl Frontend {
    fn of(server: &TestServer) -> Frontend {
        let addr = server.running().proxy_addr.expect("the proxy runs");
        Frontend {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    async fn get(&self, host: &str, path: &str) -> (StatusCode, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("host", host)
            .send()
            .await
            .expect("the proxy answers");
        (res.status(), res.text().await.expect("body"))
    }

    async fn backend_of(&self, host: &str) -> String {
        let (status, body) = self.get(host, "/").await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
        let body: Value = serde_json::from_str(&body).expect("backend JSON");
        body["backend"].as_str().expect("backend name").to_owned()
    }
}

#[actix_rt::test]
async fn the_unikraft_flow_balances_over_live_instances_then_503() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    let proxy = Frontend::of(&server);
    let (a, b) = (backend("a").await, backend("b").await);

    let fqdn = local.create_service("my-service", json!(["443:8080/tls+http"])).await;
    assert!(
        fqdn.starts_with("my-service-") && fqdn.ends_with(".tenure.localhost"),
        "{fqdn}"
    );
    let suffix = &fqdn["my-service-".len()..fqdn.len() - ".tenure.localhost".len()];
    assert_eq!(suffix.len(), 8);
    assert!(
        suffix.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{fqdn}"
    );

    // No instance yet: the host is known, nothing serves it.
    let (status, body) = proxy.get(&fqdn, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains(&fqdn), "{body}");

    local.attach("inst-a", "my-service", &a, 5).await;
    local.attach("inst-b", "my-service", &b, 100).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(proxy.backend_of(&fqdn).await);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "requests reach both instances"
    );

    // What the backend sees: the path, and who asked.
    let (_, body) = proxy.get(&fqdn.to_uppercase(), "/hello?x=1").await;
    let seen: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(seen["path"], "/hello?x=1");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], json!(fqdn.to_uppercase()));
    assert_eq!(seen["x-forwarded-proto"], "http");

    // Instance a's keep-alive stops: after its TTL, everything goes to b.
    server.clock.advance(Duration::from_secs(6));
    server
        .wait_for_log("inst-a's lease expires", |events| {
            common::count_type(events, "LeaseExpired") == 1
        })
        .await;
    local.get("/v1/leases").await; // the projections have caught up
    for _ in 0..10 {
        assert_eq!(proxy.backend_of(&fqdn).await, "b");
    }
    let (_, instances) = local.get("/v1/instances").await;
    assert_eq!(instances["instances"][0]["live"], false, "{instances}");

    // The last one removed: 503.
    let (status, _) = local.delete("/v1/instances/inst-b").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = proxy.get(&fqdn, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // Removing a service with instances is refused without force.
    local.attach("inst-c", "my-service", &a, 100).await;
    let (status, body) = local.delete("/v1/services/my-service").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("service_has_instances"))
    );
    let (status, _) = local.delete("/v1/services/my-service?force=true").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = proxy.get(&fqdn, "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, format!("no route for host '{fqdn}'\n"));
}

#[actix_rt::test]
async fn a_deploy_with_ports_gets_a_service_that_goes_with_its_last_instance() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    let proxy = Frontend::of(&server);
    let a = backend("a").await;
    let lease = local.grant(100).await;
    let body = json!({ "name": "http-go", "ports": ["443:8080"], "address": a, "lease": lease });
    let (status, deployed) = local.post("/v1/instances", body).await;
    assert_eq!(status, StatusCode::CREATED, "{deployed}");
    assert_eq!(deployed["auto"], true);
    assert_eq!(deployed["service"], "http-go");
    let fqdn = deployed["fqdn"].as_str().expect("fqdn").to_owned();
    assert_eq!(deployed["url"], json!(format!("http://{fqdn}:8080/")));
    assert_eq!(proxy.backend_of(&fqdn).await, "a");

    let (status, removed) = local.delete("/v1/instances/http-go").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(removed["service_deleted"], "http-go");
    assert_eq!(local.get("/v1/services/http-go").await.0, StatusCode::NOT_FOUND);
    let events = server.events().await;
    let deleted = events
        .iter()
        .find(|e| e.event_type == "ServiceDeleted")
        .expect("an event");
    assert!(deleted.payload.contains("last_instance_removed"), "{}", deleted.payload);
    assert_eq!(proxy.get(&fqdn, "/").await.0, StatusCode::NOT_FOUND);
}

#[actix_rt::test]
async fn the_zrok_flow_serves_a_share_while_its_session_lives_and_private_ones_need_a_grant() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    let proxy = Frontend::of(&server);
    let target = backend("share-backend").await;

    let (_, share) = local
        .post(
            "/v1/shares",
            json!({"mode": "public", "target": format!("http://{target}")}),
        )
        .await;
    let token = share["token"].as_str().expect("token").to_owned();
    let host = format!("{token}.tenure.localhost");
    assert_eq!(proxy.get(&host, "/").await.0, StatusCode::SERVICE_UNAVAILABLE);

    let lease = local.grant(100).await;
    let (status, session) = local
        .post(&format!("/v1/shares/{token}/sessions"), json!({ "lease": lease }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(proxy.backend_of(&host).await, "share-backend");
    let session_id = session["session"].as_str().expect("id");
    local.delete(&format!("/v1/shares/{token}/sessions/{session_id}")).await;
    let (status, body) = proxy.get(&host, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains(&host));

    // A private share: 403 without a grant, 200 with one.
    local
        .post(
            "/v1/shares",
            json!({"mode": "private", "target": format!("http://{target}/base"), "unique_name": "team"}),
        )
        .await;
    let lease = local.grant(100).await;
    local.post("/v1/shares/team/sessions", json!({ "lease": lease })).await;
    let host = "team.tenure.localhost";
    let (status, body) = proxy.get(host, "/").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, access) = local.post("/v1/shares/team/access", json!({})).await;
    let secret = access["secret"].as_str().expect("secret");
    let res = proxy
        .http
        .get(format!("{}/page", proxy.base))
        .header("host", host)
        .header("x-tenure-access", secret)
        .send()
        .await
        .expect("answer");
    assert_eq!(res.status(), StatusCode::OK);
    let seen: Value = res.json().await.expect("JSON");
    assert_eq!(seen["path"], "/base/page", "the target's path prefixes the request's");
    let res = proxy
        .http
        .get(format!("{}/", proxy.base))
        .header("host", host)
        .header("x-tenure-access", "tnra_wrong")
        .send()
        .await
        .expect("answer");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[actix_rt::test]
async fn backends_that_refuse_are_502_and_port_80_redirects_when_asked() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    let proxy = Frontend::of(&server);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let fqdn = local.create_service("broken", json!(["443:8080/tls+http"])).await;
    local.attach("gone", "broken", &dead, 100).await;
    let (status, body) = proxy.get(&fqdn, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains(&fqdn), "{body}");

    let fqdn = local
        .create_service("web", json!(["443:8080/tls+http", "80:8080/http+redirect"]))
        .await;
    let (status, _) = proxy.get(&fqdn, "/x?y=1").await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    let res = proxy
        .http
        .get(format!("{}/x?y=1", proxy.base))
        .header("host", &fqdn)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        res.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("https://{fqdn}/x?y=1").as_str())
    );

    let (status, body) = proxy.get("nobody.example", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "no route for host 'nobody.example'\n")
    );
}

#[actix_rt::test]
async fn port_rules_and_names_are_checked_by_the_api() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    for (body, names) in [
        (json!({"name": "s1", "ports": ["443:8080/http"]}), "ports"),
        (json!({"name": "s1", "ports": ["80:8080/tls+http"]}), "ports"),
        (json!({"name": "s1", "ports": ["8443:8080/tls+redirect"]}), "ports"),
        (json!({"name": "s1", "ports": ["443"]}), "ports[0]"),
        (json!({"name": "s1", "ports": []}), "ports"),
        (json!({"name": "S 1", "ports": ["443:8080"]}), "name"),
        (
            json!({"name": "s1", "ports": ["443:8080"], "soft_limit": 10, "hard_limit": 5}),
            "soft_limit",
        ),
    ] {
        let (status, answer) = local.post("/v1/services", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap_or_default().contains(names),
            "{body}: {answer}"
        );
    }
    local.create_service("s1", json!(["443:8080"])).await;
    let (status, body) = local
        .post("/v1/services", json!({"name": "s1", "ports": ["443:8080"]}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("service_exists"))
    );
    let lease = local.grant(100).await;
    let (status, body) = local
        .post(
            "/v1/instances",
            json!({"name": "i1", "service": "nope", "address": "127.0.0.1:1", "lease": lease}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("service_not_found"))
    );
    let (status, body) = local
        .post(
            "/v1/instances",
            json!({"name": "i1", "service": "s1", "address": "nowhere", "lease": lease}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = local
        .post(
            "/v1/instances",
            json!({"name": "i1", "service": "s1", "address": "127.0.0.1:1", "lease": "00000000000000ff"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("lease_not_found"))
    );
}

/// A small deterministic generator (xorshift) for the random sequence.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[actix_rt::test]
async fn the_routing_table_rebuilt_from_the_log_equals_the_live_one() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut leases: Vec<String> = Vec::new();
    for step in 0..120 {
        match rng.below(8) {
            0 => {
                let name = format!("svc{}", rng.below(4));
                local
                    .post("/v1/services", json!({"name": name, "ports": ["443:8080"]}))
                    .await;
            }
            1 => {
                let name = format!("svc{}", rng.below(4));
                local.delete(&format!("/v1/services/{name}?force=true")).await;
            }
            2 | 3 => {
                let lease = local.grant(100).await;
                leases.push(lease.clone());
                let body = json!({
                    "name": format!("inst{step}"), "service": format!("svc{}", rng.below(4)),
                    "address": format!("127.0.0.1:{}", 9000 + rng.below(50)), "lease": lease,
                });
                local.post("/v1/instances", body).await;
            }
            4 if !leases.is_empty() => {
                let lease = leases.swap_remove(rng.below(leases.len() as u64) as usize);
                local.delete(&format!("/v1/leases/{lease}")).await;
            }
            5 => {
                let name = format!("sh{}", rng.below(3));
                let mode = if rng.below(2) == 0 { "public" } else { "private" };
                local
                    .post(
                        "/v1/shares",
                        json!({"mode": mode, "target": "http://127.0.0.1:9999", "unique_name": name}),
                    )
                    .await;
            }
            6 => {
                let lease = local.grant(100).await;
                leases.push(lease.clone());
                let name = format!("sh{}", rng.below(3));
                local
                    .post(
                        &format!("/v1/shares/{name}/sessions"),
                        json!({"lease": lease, "replace": true}),
                    )
                    .await;
                local.post(&format!("/v1/shares/{name}/access"), json!({})).await;
            }
            _ => {
                let name = format!("sh{}", rng.below(3));
                local.delete(&format!("/v1/shares/{name}")).await;
            }
        }
    }
    local.get("/v1/leases").await; // caught up
    let live = server.running().control.hub().projections.routing.lock().routes();
    let mut replayed = RoutingTable::new("tenure.localhost");
    for e in server.store().read_all(1, usize::MAX).await.expect("read the log") {
        replayed.apply(&e);
    }
    assert_eq!(replayed.routes(), live);
    assert!(!live.hosts.is_empty(), "the sequence made some routes");
    // And what the proxy serves is what was published.
    assert_eq!(**server.running().control.hub().projections.routes.load(), live);
}

/// A tweak: the proxy also terminates TLS, with a self-signed certificate
/// for `*.tenure.localhost` made now (in the data directory).
fn with_tls(config: &mut tenure::server::ServerConfig) {
    let dir = config.data_dir.join("tls");
    std::fs::create_dir_all(&dir).expect("tls dir");
    let certified = rcgen::generate_simple_self_signed(vec!["*.tenure.localhost".to_owned()]).expect("a certificate");
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).expect("write key");
    config.proxy_tls = Some(tenure::server::ProxyTls {
        listen: "127.0.0.1:0".parse().expect("address"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    });
}

/// One HTTPS request over a fresh TLS connection that trusts `cert_pem`.
async fn https_get(addr: std::net::SocketAddr, cert_pem: &str, host: &str, path: &str) -> (StatusCode, Value) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("PEM"))
        .expect("trust the test certificate");
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(host.to_owned()).expect("server name");
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("HTTP over TLS");
    actix_rt::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", host)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[actix_rt::test]
async fn the_proxy_terminates_tls_with_the_certificate_it_was_given() {
    let server = TestServer::start_with(with_tls).await;
    let local = server.session_with_header(None);
    let a = backend("a").await;
    let fqdn = local
        .create_service("secure", json!(["443:8080/tls+http", "80:8080/http+redirect"]))
        .await;
    local.attach("s1", "secure", &a, 100).await;
    let cert = std::fs::read_to_string(server.dir.join("tls/cert.pem")).expect("cert");
    let addr = server.running().proxy_tls_addr.expect("the TLS listener runs");
    let (status, seen) = https_get(addr, &cert, &fqdn, "/over-tls").await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["backend"], "a");
    assert_eq!(seen["path"], "/over-tls");
    assert_eq!(
        seen["x-forwarded-proto"], "https",
        "the backend learns the client used TLS"
    );
    // The plain listener redirects the same host to https.
    assert_eq!(
        Frontend::of(&server).get(&fqdn, "/").await.0,
        StatusCode::MOVED_PERMANENTLY
    );
}

/// A tweak: the proxy gives backends 300 ms to answer.
fn impatient(config: &mut tenure::server::ServerConfig) {
    config.proxy_backend_timeout = Duration::from_millis(300);
}

#[actix_rt::test]
async fn a_backend_that_does_not_answer_in_time_is_504() {
    let server = TestServer::start_with(impatient).await;
    let local = server.session_with_header(None);
    // Accepts connections, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = silent.local_addr().expect("addr").to_string();
    actix_rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let fqdn = local.create_service("slow", json!(["443:8080"])).await;
    local.attach("slow-1", "slow", &address, 100).await;
    let (status, body) = Frontend::of(&server).get(&fqdn, "/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body, format!("the backend of host '{fqdn}' did not answer in time\n"));
}

//! Shared by the end-to-end tests: a real server in-process on 127.0.0.1:0
//! with a temporary data directory and a manual clock, and a real HTTP client.
#![allow(dead_code)]

pub mod binary;
pub mod etcd;
pub mod pg;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tenure::clock::ManualClock;
use tenure::server::{self, Running, ServerConfig};
use tenure::store::{EventStore, SqliteStore};
use tenure_events::RecordedEvent;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct TestServer {
    running: Option<Running>,
    pub base: String,
    pub clock: ManualClock,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
    tweak: fn(&mut ServerConfig),
    /// The shared log this server runs on, if not the embedded one.
    pub store: Option<tenure::store::PostgresTarget>,
}

fn no_tweak(_: &mut ServerConfig) {}

impl TestServer {
    /// A fresh server on a fresh data directory.
    pub async fn start() -> TestServer {
        TestServer::start_with(no_tweak).await
    }

    /// A fresh server (fresh data directory) on a shared log in PostgreSQL.
    pub async fn start_on(store: tenure::store::PostgresTarget) -> TestServer {
        TestServer::start_on_with(store, no_tweak).await
    }

    /// [`TestServer::start_on`] with settings.
    pub async fn start_on_with(store: tenure::store::PostgresTarget, tweak: fn(&mut ServerConfig)) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = TestServer {
            running: None,
            base: String::new(),
            clock: ManualClock::at_epoch(),
            dir: temp.path().to_path_buf(),
            _temp: Some(temp),
            http: reqwest::Client::new(),
            tweak,
            store: Some(store),
        };
        server.boot().await;
        server
    }

    /// A server on an existing data directory, with the given clock.
    pub async fn start_in(dir: PathBuf, clock: ManualClock) -> TestServer {
        let mut server = TestServer {
            running: None,
            base: String::new(),
            clock,
            dir,
            _temp: None,
            http: reqwest::Client::new(),
            tweak: no_tweak,
            store: None,
        };
        server.boot().await;
        server
    }

    /// A server on an existing data directory, with the given clock and
    /// settings.
    pub async fn start_in_with(dir: PathBuf, clock: ManualClock, tweak: fn(&mut ServerConfig)) -> TestServer {
        let mut server = TestServer {
            running: None,
            base: String::new(),
            clock,
            dir,
            _temp: None,
            http: reqwest::Client::new(),
            tweak,
            store: None,
        };
        server.boot().await;
        server
    }

    pub async fn start_with(tweak: fn(&mut ServerConfig)) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let mut server = TestServer {
            running: None,
            base: String::new(),
            clock: ManualClock::at_epoch(),
            dir,
            _temp: Some(temp),
            http: reqwest::Client::new(),
            tweak,
            store: None,
        };
        server.boot().await;
        server
    }

    async fn boot(&mut self) {
        let mut config = ServerConfig::new(&self.dir);
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.proxy_listen = Some("127.0.0.1:0".parse().expect("address"));
        config.proxy_threads = 2;
        config.clock = Arc::new(self.clock.clone());
        config.actor_threads = 2;
        config.http_workers = 2;
        config.store = self.store.clone();
        (self.tweak)(&mut config);
        let running = server::start(config).await.expect("server starts");
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    /// Stops the server and starts a new one on the same data directory and clock.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("server is running")
    }

    pub fn store(&self) -> SqliteStore {
        self.running().store.sqlite().cloned().expect("the embedded store")
    }

    /// A request without an `Authorization` header.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.session_with_header(None).call(method, path, body).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `GET /metrics` (no token), as Prometheus's text.
    pub async fn metrics_text(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.base)).send().await;
        response.expect("scrape").text().await.expect("metrics")
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Grants a lease and returns its ID.
    pub async fn grant(&self, ttl: i64) -> String {
        let (status, body) = self.post("/v1/leases", serde_json::json!({ "ttl": ttl })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_str().expect("lease id").to_owned()
    }

    pub async fn put_key(&self, key: &str, value: &str, lease: Option<&str>) -> (StatusCode, Value) {
        self.put(
            &format!("/v1/keys?key={key}"),
            serde_json::json!({ "value": value, "lease": lease }),
        )
        .await
    }

    /// The value of a key, or None.
    pub async fn value(&self, key: &str) -> Option<String> {
        let (status, body) = self.get(&format!("/v1/keys?key={key}")).await;
        match status {
            StatusCode::OK => Some(body["value"].as_str().expect("text value").to_owned()),
            StatusCode::NOT_FOUND => None,
            other => panic!("get {key}: {other} {body}"),
        }
    }

    /// Every event in the log.
    pub async fn events(&self) -> Vec<RecordedEvent> {
        self.log().read_all(1, usize::MAX).await.expect("read the log")
    }

    /// The log the server runs on, whichever store holds it.
    pub fn log(&self) -> Arc<dyn EventStore> {
        self.running().store.shared()
    }

    /// Waits (following the log, not sleeping) until `done` holds for the
    /// events in the log; panics after [`PATIENCE`].
    pub async fn wait_for_log(&self, what: &str, done: impl Fn(&[RecordedEvent]) -> bool) -> Vec<RecordedEvent> {
        let store = self.log();
        let mut subscription = store.subscribe_all(1);
        let mut seen = Vec::new();
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                if done(&seen) {
                    return;
                }
                match subscription.next_batch().await.expect("log readable") {
                    Some(batch) => seen.extend(batch.iter().cloned()),
                    None => panic!("store closed while waiting for {what}"),
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for {what}");
        seen
    }
}

pub fn count_type(events: &[RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// The admin token of servers started with [`with_auth`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A tweak for [`TestServer::start_with`]: bearer-token auth with [`ADMIN_TOKEN`].
pub fn with_auth(config: &mut ServerConfig) {
    config.auth = Some(server::AuthConfig {
        admin_token: Some(ADMIN_TOKEN.into()),
    });
}

/// Requests to a server with a fixed `Authorization` header (or none).
pub struct Session {
    base: String,
    http: reqwest::Client,
    authorization: Option<String>,
}

impl TestServer {
    /// A session sending `Authorization: Bearer {token}`.
    pub fn session(&self, token: &str) -> Session {
        self.session_with_header(Some(format!("Bearer {token}")))
    }

    /// A session sending this `Authorization` header value, or none.
    pub fn session_with_header(&self, authorization: Option<String>) -> Session {
        Session {
            base: self.base.clone(),
            http: self.http.clone(),
            authorization,
        }
    }

    /// Creates an account (with `limits`) as the admin and answers a token of it.
    pub async fn account_with_token(&self, name: &str, limits: Value) -> String {
        let admin = self.session(ADMIN_TOKEN);
        let (status, body) = admin
            .post("/v1/accounts", serde_json::json!({ "name": name, "limits": limits }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        admin.token(name).await
    }
}

impl Session {
    /// A session against any server at `base` (`http://127.0.0.1:PORT`),
    /// sending `Authorization: Bearer {token}` when there is a token.
    pub fn new(base: &str, token: Option<&str>) -> Session {
        Session {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            authorization: token.map(|t| format!("Bearer {t}")),
        }
    }

    pub async fn call_raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(auth) = &self.authorization {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request reaches the server")
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let res = self.call_raw(method, path, body).await;
        let status = res.status();
        let text = res.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: body is not JSON: {text:?}"));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Issues a token of `account` (as the admin) and answers it.
    pub async fn token(&self, account: &str) -> String {
        let (status, body) = self
            .post(&format!("/v1/accounts/{account}/tokens"), serde_json::json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Grants a lease and answers its ID.
    pub async fn grant(&self, ttl: i64) -> String {
        let (status, body) = self.post("/v1/leases", serde_json::json!({ "ttl": ttl })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_str().expect("lease id").to_owned()
    }

    pub async fn put_key(&self, key: &str, value: &str, lease: Option<&str>) -> (StatusCode, Value) {
        self.put(
            &format!("/v1/keys?key={key}"),
            serde_json::json!({ "value": value, "lease": lease }),
        )
        .await
    }

    /// Creates a service with these port rules and answers its FQDN.
    pub async fn create_service(&self, name: &str, ports: Value) -> String {
        let (status, service) = self
            .post("/v1/services", serde_json::json!({ "name": name, "ports": ports }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{service}");
        service["fqdn"].as_str().expect("fqdn").to_owned()
    }

    /// Registers an instance of `service` at `address`, alive while a lease
    /// of `ttl` seconds is; answers the lease.
    pub async fn attach(&self, name: &str, service: &str, address: &str, ttl: i64) -> String {
        let lease = self.grant(ttl).await;
        let body = serde_json::json!({ "name": name, "service": service, "address": address, "lease": lease });
        let (status, registered) = self.post("/v1/instances", body).await;
        assert_eq!(status, StatusCode::CREATED, "{registered}");
        lease
    }
}

/// A real HTTP backend (actix-web, one worker) on 127.0.0.1 whose routes
/// `configure` sets, running until the test ends; answers its address.
pub async fn actix_backend<F>(configure: F) -> String
where
    F: Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static,
{
    let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind a backend");
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    addr.to_string()
}

//! `GET /metrics`: the counters move by exactly the commands the test sends
//! (leases, keys, events by type, HTTP requests by route and status, the
//! proxy's answers by status), the live gauges follow, the histograms
//! count; and with `--auth` only the admin token may scrape.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use common::{TestServer, ADMIN_TOKEN, PATIENCE};
use reqwest::StatusCode;
use serde_json::json;

/// One scrape: every sample by its series (the name and its labels, sorted).
#[derive(Debug)]
struct Scrape {
    samples: HashMap<String, f64>,
}

/// A series' key: `name{a="1",b="2"}` with labels sorted by name.
fn series(name: &str, labels: &BTreeMap<String, String>) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

impl Scrape {
    /// Parses the text format: `# ` lines are comments, every other line
    /// is `name{label="value",...} value` (labels optional).
    fn parse(text: &str) -> Scrape {
        let mut samples = HashMap::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (name, labels, value) = match line.find('{') {
                Some(open) => {
                    let (labels, rest) = parse_labels(&line[open + 1..]);
                    (&line[..open], labels, rest.trim())
                }
                None => {
                    let (name, value) = line.split_once(' ').unwrap_or_else(|| panic!("sample line: {line}"));
                    (name, BTreeMap::new(), value.trim())
                }
            };
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("sample value: {line}"));
            let previous = samples.insert(series(name, &labels), value);
            assert!(previous.is_none(), "a series appears twice: {line}");
        }
        Scrape { samples }
    }

    /// A sample's value (0 if the series is not there yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.get(&series(name, &labels)).copied().unwrap_or(0.0)
    }
}

/// Parses `a="x",b="y"}` (after the `{`), answering the labels and the rest
/// of the line after the `}`.
fn parse_labels(text: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        rest = rest.strip_prefix(',').unwrap_or(rest);
        let (name, after) = rest.split_once("=\"").expect("a label");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closed label value") {
                (_, '\\') => match chars.next().expect("an escape") {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        rest = &after[end + 1..];
    }
}

/// The difference of every series the test asserts on between two scrapes.
struct Delta<'a> {
    before: &'a Scrape,
    after: &'a Scrape,
}

impl Delta<'_> {
    fn of(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.after.get(name, labels) - self.before.get(name, labels)
    }
}

async fn scrape(server: &TestServer) -> Scrape {
    let res = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    Scrape::parse(&res.text().await.expect("body"))
}

/// Scrapes until `ready` holds (what moves after the answer that caused
/// it, like an expiry's), or [`PATIENCE`] runs out; answers the last scrape.
async fn scrape_until(server: &TestServer, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let started = std::time::Instant::now();
    loop {
        let scraped = scrape(server).await;
        if ready(&scraped) || started.elapsed() > PATIENCE {
            return scraped;
        }
        // A poll of the server's state, not a wait for time to pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A backend answering `/` with 200 and `/teapot` with 418.
async fn backend() -> String {
    common::actix_backend(|config| {
        config
            .route("/", web::get().to(|| async { HttpResponse::Ok().body("ok") }))
            .route(
                "/teapot",
                web::get().to(|| async {
                    HttpResponse::build(actix_web::http::StatusCode::IM_A_TEAPOT).body("short and stout")
                }),
            );
    })
    .await
}

const LEASES_GRANTED: &str = "tenure_leases_granted_total";
const LEASES_RENEWED: &str = "tenure_leases_renewed_total";
const LEASES_REVOKED: &str = "tenure_leases_revoked_total";
const LEASES_EXPIRED: &str = "tenure_leases_expired_total";
const LEASES_LIVE: &str = "tenure_leases_live";
const KEYS: &str = "tenure_keys";
const EVENTS: &str = "tenure_events_appended_total";
const HTTP: &str = "tenure_http_requests_total";
const PROXY: &str = "tenure_proxy_requests_total";
const ACTIVATED: &str = "tenure_actors_activated_total";
const PASSIVATED: &str = "tenure_actors_passivated_total";

fn event(event_type: &str) -> [(&str, &str); 1] {
    [("event_type", event_type)]
}

fn http<'a>(method: &'a str, route: &'a str, status: &'a str) -> [(&'a str, &'a str); 3] {
    [("method", method), ("route", route), ("status", status)]
}

#[actix_rt::test]
async fn counters_move_by_exactly_the_commands_sent() {
    let server = TestServer::start().await;
    let local = server.session_with_header(None);

    // Before the baseline: a service with a live instance behind the proxy,
    // one without (503), and the key space in use.
    let address = backend().await;
    let served = local.create_service("served", json!(["443:8080/tls+http"])).await;
    let empty = local.create_service("empty", json!(["443:8080/tls+http"])).await;
    local.attach("inst", "served", &address, 3600).await;
    let (status, body) = local.put_key("warm", "up", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let before = scrape(&server).await;

    // Leases and keys: 3 grants (one of 5 s, to expire), 2 keep-alives,
    // 4 puts (2 on the lease that will expire, 1 on the one revoked), 1 revoke.
    let kept = server.grant(60).await;
    let revoked = server.grant(60).await;
    let expiring = server.grant(5).await;
    for _ in 0..2 {
        let (status, body) = server.post(&format!("/v1/leases/{kept}/keepalive"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for (key, lease) in [
        ("e1", Some(&expiring)),
        ("e2", Some(&expiring)),
        ("r1", Some(&revoked)),
        ("k1", None),
    ] {
        let (status, body) = server.put_key(key, "v", lease.map(String::as_str)).await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
    }
    let (status, body) = server.delete(&format!("/v1/leases/{revoked}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // HTTP 404s: two paths no route matches, one key that is not there.
    for path in ["/nope", "/v2/leases"] {
        assert_eq!(server.get(path).await.0, StatusCode::NOT_FOUND);
    }
    assert_eq!(server.get("/v1/keys?key=absent").await.0, StatusCode::NOT_FOUND);

    // The proxy: 3 answers of 200 and 1 of 418 from the backend, 2 unknown
    // hosts (404), 1 service without an instance (503).
    let proxy = format!("http://{}", server.running().proxy_addr.expect("the proxy runs"));
    let through = |host: String, path: &'static str| {
        let request = server.http.get(format!("{proxy}{path}")).header("host", host);
        async move { request.send().await.expect("the proxy answers").status() }
    };
    for _ in 0..3 {
        assert_eq!(through(served.clone(), "/").await, StatusCode::OK);
    }
    assert_eq!(through(served.clone(), "/teapot").await, StatusCode::IM_A_TEAPOT);
    for host in ["nobody.tenure.localhost", "nothing.example"] {
        assert_eq!(through(host.to_owned(), "/").await, StatusCode::NOT_FOUND);
    }
    assert_eq!(through(empty.clone(), "/").await, StatusCode::SERVICE_UNAVAILABLE);

    // Every command above was answered after what it counts moved.
    let after = scrape(&server).await;
    let d = Delta {
        before: &before,
        after: &after,
    };
    assert_eq!(d.of(LEASES_GRANTED, &[]), 3.0);
    assert_eq!(d.of(LEASES_RENEWED, &[]), 2.0);
    assert_eq!(d.of(LEASES_REVOKED, &[]), 1.0);
    assert_eq!(d.of(LEASES_EXPIRED, &[]), 0.0);
    assert_eq!(d.of(LEASES_LIVE, &[]), 2.0, "3 granted, 1 revoked");
    assert_eq!(d.of(KEYS, &[]), 3.0, "4 put, 1 deleted with its lease");
    for (event_type, count) in [
        ("LeaseGranted", 3.0),
        // Keep-alives are counted as renewals, and record no event.
        ("LeaseKeptAlive", 0.0),
        ("LeaseRevoked", 1.0),
        ("LeaseExpired", 0.0),
        ("KeyPut", 4.0),
        ("KeyDeleted", 1.0),
    ] {
        assert_eq!(d.of(EVENTS, &event(event_type)), count, "{event_type}");
    }
    for (labels, count) in [
        (http("POST", "/v1/leases", "200"), 3.0),
        (http("POST", "/v1/leases/{id}/keepalive", "200"), 2.0),
        (http("DELETE", "/v1/leases/{id}", "200"), 1.0),
        (http("PUT", "/v1/keys", "200"), 4.0),
        (http("GET", "/v1/keys", "404"), 1.0),
        (http("GET", "unmatched", "404"), 2.0),
        // The baseline scrape itself.
        (http("GET", "/metrics", "200"), 1.0),
    ] {
        assert_eq!(d.of(HTTP, &labels), count, "{labels:?}");
    }
    assert_eq!(
        d.of(
            "tenure_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/v1/leases")]
        ),
        3.0
    );
    for (status, count) in [("200", 3.0), ("418", 1.0), ("404", 2.0), ("503", 1.0)] {
        assert_eq!(d.of(PROXY, &[("status", status)]), count, "proxy {status}");
    }
    assert_eq!(d.of("tenure_proxy_upstream_seconds_count", &[]), 4.0);
    assert_eq!(
        d.of(ACTIVATED, &[("kind", "lease")]),
        2.0,
        "a grant starts no lease actor; the first put with a lease starts one (the revoke finds it)"
    );
    for histogram in [
        "tenure_store_batch_events_count",
        "tenure_store_fsync_seconds_count",
        "tenure_store_append_seconds_count",
    ] {
        assert!(d.of(histogram, &[]) >= 1.0, "{histogram} moved");
    }
    let head = after.get("tenure_log_head_position", &[]);
    assert!(head > before.get("tenure_log_head_position", &[]));
    assert_eq!(
        after.get("tenure_projection_lag_positions", &[("projection", "expiry-queue")]),
        0.0,
        "the scrape waits for the projections"
    );

    // The expiry, 3 s after the 5 s lease's deadline by the manual clock.
    server.clock.advance(Duration::from_secs(8));
    // The counters move in the actors after the events are durable: poll.
    let expired = scrape_until(&server, |s| {
        s.get(LEASES_EXPIRED, &[]) - before.get(LEASES_EXPIRED, &[]) >= 1.0
            && s.get(KEYS, &[]) - before.get(KEYS, &[]) <= 1.0
            && s.get(PASSIVATED, &[("kind", "lease")]) - before.get(PASSIVATED, &[("kind", "lease")]) >= 2.0
    })
    .await;
    let d = Delta {
        before: &after,
        after: &expired,
    };
    assert_eq!(d.of(LEASES_EXPIRED, &[]), 1.0);
    assert_eq!(
        d.of(LEASES_GRANTED, &[]) + d.of(LEASES_RENEWED, &[]) + d.of(LEASES_REVOKED, &[]),
        0.0
    );
    assert_eq!(d.of(LEASES_LIVE, &[]), -1.0);
    assert_eq!(d.of(KEYS, &[]), -2.0, "the expired lease's two keys");
    assert_eq!(d.of(EVENTS, &event("LeaseExpired")), 1.0);
    assert_eq!(d.of(EVENTS, &event("KeyDeleted")), 2.0);
    assert_eq!(d.of("tenure_lease_expiry_lag_seconds_count", &[]), 1.0);
    assert_eq!(d.of("tenure_lease_expiry_lag_seconds_sum", &[]), 3.0);
    let d = Delta {
        before: &before,
        after: &expired,
    };
    assert_eq!(
        d.of(PASSIVATED, &[("kind", "lease")]),
        2.0,
        "the revoked and the expired lease's actors"
    );
    assert_eq!(
        d.of("tenure_actors_active", &[("kind", "lease")]),
        0.0,
        "the kept lease, only granted and kept alive, never had an actor"
    );

    // The sample dashboard charts every family there is, and none that is not.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ops/grafana/tenure.json"))
        .expect("the dashboard");
    let charted: std::collections::BTreeSet<String> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("tenure_"))
        .map(|word| family(word).to_owned())
        .collect();
    let exposed: std::collections::BTreeSet<String> = expired
        .samples
        .keys()
        .map(|s| family(&s[..s.find('{').unwrap_or(s.len())]).to_owned())
        .collect();
    assert_eq!(charted, exposed);
}

/// A sample's family: its name without a histogram's suffix.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

#[actix_rt::test]
async fn with_auth_only_the_admin_token_scrapes() {
    let server = TestServer::start_with(common::with_auth).await;
    let token = server.account_with_token("alice", json!({})).await;
    let get = |authorization: Option<String>| {
        let mut request = server.http.get(format!("{}/metrics", server.base));
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        async move {
            let res = request.send().await.expect("answer");
            let status = res.status();
            (status, res.text().await.expect("body"))
        }
    };

    let (status, body) = get(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(error["code"], "missing_token", "{body}");
    let (status, _) = get(Some("Bearer not-a-token".into())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get(Some(format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(error["code"], "forbidden", "{body}");

    let (status, body) = get(Some(format!("Bearer {ADMIN_TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let scraped = Scrape::parse(&body);
    // The refusals above are counted like any request.
    assert_eq!(scraped.get(HTTP, &http("GET", "/metrics", "401")), 2.0);
    assert_eq!(scraped.get(HTTP, &http("GET", "/metrics", "403")), 1.0);
    assert_eq!(scraped.get(EVENTS, &event("AccountCreated")), 1.0);
}

#[actix_rt::test]
async fn other_methods_on_metrics_answer_405() {
    let server = TestServer::start().await;
    let (status, body) = server.post("/metrics", json!({})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["code"], "method_not_allowed");
}

//! The operator dashboard in a real headless Chromium (Debian's `chromium`
//! driven through `chromedriver` with fantoccini), against the real
//! `tenure serve` binary with its real clock.
//!
//! Without `chromium` and `chromedriver` the tests say so and skip, unless
//! `TENURE_REQUIRE_BROWSER=1` (set by `.ci/run`, which installs them): then
//! they fail.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::ServerProcess;
use common::Session;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const ADMIN: &str = "admin-dashboard-5c1e9a0b7d3f2468";
/// How long the page may take to show something it is told (long: a
/// loaded machine is slow, and speed is measured by benchmarks, not here).
const PATIENCE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the browser is here; `None` (after saying why) when the test
/// should skip.
fn browser_available() -> Option<PathBuf> {
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    match (driver, Path::new(CHROMIUM).exists()) {
        (Some(driver), true) => Some(driver),
        _ => {
            let why = "skipped: Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)";
            assert!(
                std::env::var("TENURE_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "TENURE_REQUIRE_BROWSER=1 but {why}"
            );
            eprintln!("{why}");
            None
        }
    }
}

async fn start_driver(path: &Path) -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(res) = http.get(format!("{}/status", driver.url)).send().await {
            if res.status().is_success() {
                return driver;
            }
        }
        assert!(started.elapsed() < PATIENCE, "chromedriver did not start");
        tokio::time::sleep(POLL).await;
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--window-size=1500,1400",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// chromedriver, a Chromium session on `url` (its profile under `dir`) and
/// a directory that outlives the test for its screenshots.
async fn open_dashboard(driver_path: &Path, dir: &Path, url: &str) -> (Driver, Client, PathBuf) {
    let driver = start_driver(driver_path).await;
    let page = browser(&driver, &dir.join("profile")).await;
    page.goto(url).await.expect("open the dashboard");
    (driver, page, screenshot_dir())
}

/// Polls `check` until it answers something, or fails saying `what`.
async fn until<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(started.elapsed() < patience, "the page never showed {what}");
        tokio::time::sleep(POLL).await;
    }
}

async fn count(page: &Client, css: &str) -> usize {
    page.find_all(Locator::Css(css)).await.map(|v| v.len()).unwrap_or(0)
}

async fn shown(page: &Client, css: &str) -> bool {
    count(page, css).await > 0
}

async fn text(page: &Client, css: &str) -> Option<String> {
    page.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// The seconds a `12s` countdown shows.
fn seconds(text: &str) -> Option<u64> {
    text.trim().strip_suffix('s')?.parse().ok()
}

async fn screenshot(page: &Client, dir: &Path, name: &str) {
    let png = page.screenshot().await.expect("a screenshot");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("save the screenshot");
    println!("dashboard screenshot: {}", path.display());
}

/// A directory that outlives the test, for its screenshots.
fn screenshot_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("tenure-dashboard-")
        .tempdir()
        .expect("temp dir")
        .keep()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_services_shares_leases_and_live_events() {
    let Some(driver_path) = browser_available() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let api = Session::new(&server.endpoint, None);

    api.create_service("web", json!(["443:8080/tls+http"])).await;
    let instance_leases = [
        api.attach("web-1", "web", "127.0.0.1:9101", 60).await,
        api.attach("web-2", "web", "127.0.0.1:9102", 60).await,
    ];
    let (status, share) = api
        .post(
            "/v1/shares",
            json!({ "mode": "public", "target": "http://127.0.0.1:9103" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{share}");
    let share = share["token"].as_str().expect("token").to_owned();
    let kept = api.grant(30).await;
    let revoked = api.grant(300).await;
    let (status, body) = api.put_key("config/a", "1", Some(&kept)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_driver, page, shots) = open_dashboard(&driver_path, dir.path(), &format!("{}/", server.endpoint)).await;

    // The service with both instances, the share, the leases and the key.
    until("the service's two instances", PATIENCE, || async {
        (count(&page, r#"#services tr[data-service="web"][data-instance]"#).await == 2).then_some(())
    })
    .await;
    for lease in &instance_leases {
        let css = format!(r#"#services [data-entity="lease/{lease}"]"#);
        assert!(shown(&page, &css).await, "instance lease {lease} on the page");
    }
    until("the share", PATIENCE, || async {
        shown(&page, &format!(r#"#shares tr[data-share="{share}"]"#))
            .await
            .then_some(())
    })
    .await;
    let routes = text(&page, "#routes").await.unwrap_or_default();
    assert!(
        routes.contains("127.0.0.1:9101") && routes.contains("127.0.0.1:9102"),
        "routes: {routes}"
    );
    let lease_row = format!(r#"#leases [data-lease="{kept}"]"#);
    until("the leases", PATIENCE, || async {
        shown(&page, &lease_row).await.then_some(())
    })
    .await;
    let row = text(&page, &lease_row).await.unwrap_or_default();
    assert!(row.contains("config/a"), "the lease's key in its row: {row:?}");

    // Its remaining time goes down.
    let left = format!("{lease_row} .left");
    let first = until("a countdown", PATIENCE, || async {
        text(&page, &left).await.as_deref().and_then(seconds)
    })
    .await;
    assert!(first <= 30, "a 30 s lease shows {first}s left");
    until("the countdown going down", PATIENCE, || async {
        let now = text(&page, &left).await.as_deref().and_then(seconds)?;
        (now < first).then_some(())
    })
    .await;

    // A new grant is in the live event stream within a second of its answer.
    let fresh = api.grant(60).await;
    let acknowledged = Instant::now();
    let in_stream = format!(r#"#events [data-entity="lease/{fresh}"]"#);
    until("the new grant in the event stream", PATIENCE, || async {
        shown(&page, &in_stream).await.then_some(())
    })
    .await;
    let delay = acknowledged.elapsed();
    assert!(
        delay < Duration::from_secs(1),
        "the grant reached the page after {delay:?}"
    );

    // A revoked lease disappears from the list.
    let revoked_row = format!(r#"#leases [data-lease="{revoked}"]"#);
    assert!(
        shown(&page, &revoked_row).await,
        "lease {revoked} listed before its revocation"
    );
    let (status, body) = api.delete(&format!("/v1/leases/{revoked}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until("the revoked lease gone", PATIENCE, || async {
        (!shown(&page, &revoked_row).await).then_some(())
    })
    .await;

    screenshot(&page, &shots, "dashboard-local.png").await;

    // Clicking the lease shows its audit trail, from its grant on.
    page.find(Locator::Css(&format!(r#"#leases [data-entity="lease/{kept}"]"#)))
        .await
        .expect("the lease's link")
        .click()
        .await
        .expect("click the lease");
    until("the lease's audit trail", PATIENCE, || async {
        let trail = text(&page, "#audit-rows").await?;
        trail.contains("LeaseGranted").then_some(())
    })
    .await;

    screenshot(&page, &shots, "dashboard-audit.png").await;
    page.close().await.expect("close the browser");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_an_account_sees_only_its_own_things_and_the_admin_all() {
    let Some(driver_path) = browser_available() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, ADMIN).expect("write the admin token");
    let admin_arg = admin_file.display().to_string();
    let server = ServerProcess::start(&dir.path().join("data"), &["--auth", "--admin-token-file", &admin_arg]);
    let admin = Session::new(&server.endpoint, Some(ADMIN));
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        let (status, body) = admin.post("/v1/accounts", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        tokens.push(admin.token(name).await);
    }
    let alice = Session::new(&server.endpoint, Some(&tokens[0]));
    let bob = Session::new(&server.endpoint, Some(&tokens[1]));
    alice.create_service("alice-svc", json!(["443:8080/tls+http"])).await;
    bob.create_service("bob-svc", json!(["443:8080/tls+http"])).await;
    let alice_lease = alice.grant(120).await;
    let bob_lease = bob.grant(120).await;

    let (_driver, page, shots) =
        open_dashboard(&driver_path, dir.path(), &format!("{}/dashboard", server.endpoint)).await;

    // It asks for a token, and shows alice's things only.
    let form = until("the token form", PATIENCE, || async {
        page.find(Locator::Css("#token")).await.ok()
    })
    .await;
    until("the token form shown", PATIENCE, || async {
        form.is_displayed().await.ok().filter(|shown| *shown).map(|_| ())
    })
    .await;
    form.send_keys(&tokens[0]).await.expect("type the token");
    page.find(Locator::Css("#login button"))
        .await
        .expect("the open button")
        .click()
        .await
        .expect("submit the token");
    let alice_row = format!(r#"#leases [data-lease="{alice_lease}"]"#);
    until("alice's lease", PATIENCE, || async {
        shown(&page, &alice_row).await.then_some(())
    })
    .await;
    until("alice's service", PATIENCE, || async {
        shown(&page, r#"#services tr[data-service="alice-svc"]"#)
            .await
            .then_some(())
    })
    .await;
    let own_event = format!(r#"#events [data-entity="lease/{alice_lease}"]"#);
    until("alice's events", PATIENCE, || async {
        shown(&page, &own_event).await.then_some(())
    })
    .await;
    assert!(
        !shown(&page, r#"#services tr[data-service="bob-svc"]"#).await,
        "bob's service on alice's page"
    );
    assert!(
        !shown(&page, &format!(r#"[data-lease="{bob_lease}"]"#)).await,
        "bob's lease on alice's page"
    );
    assert!(
        !shown(&page, &format!(r#"[data-entity="lease/{bob_lease}"]"#)).await,
        "bob's lease in alice's events"
    );
    assert!(
        !shown(&page, "#accounts-section:not([hidden])").await,
        "accounts on an account's page"
    );
    let who = text(&page, "#who").await.unwrap_or_default();
    assert_eq!(who, "account alice");
    screenshot(&page, &shots, "dashboard-alice.png").await;

    // The admin sees both accounts' things, and the accounts.
    page.find(Locator::Css("#signout"))
        .await
        .expect("sign out")
        .click()
        .await
        .expect("click sign out");
    let form = until("the token form again", PATIENCE, || async {
        let form = page.find(Locator::Css("#token")).await.ok()?;
        form.is_displayed().await.ok().filter(|shown| *shown).map(|_| form)
    })
    .await;
    form.send_keys(ADMIN).await.expect("type the admin token");
    page.find(Locator::Css("#login button"))
        .await
        .expect("the open button")
        .click()
        .await
        .expect("submit the admin token");
    for css in [
        r#"#services tr[data-service="alice-svc"]"#.to_owned(),
        r#"#services tr[data-service="bob-svc"]"#.to_owned(),
        format!(r#"#leases [data-lease="{bob_lease}"]"#),
        r#"#accounts tr[data-account-row="bob"]"#.to_owned(),
    ] {
        until(&css, PATIENCE, || async { shown(&page, &css).await.then_some(()) }).await;
    }
    page.close().await.expect("close the browser");
    server.terminate();
}

/// Grants `n` leases of `ttl` seconds, `parallel` requests at a time.
async fn grant_many(api: &Session, n: usize, ttl: i64, parallel: usize) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|_| api.grant(ttl))
        .buffer_unordered(parallel)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_stays_responsive_with_10000_leases_and_1000_events_a_second() {
    const LEASES: usize = 10_000;
    const RATE: usize = 1_000;
    const SECONDS: usize = 3;
    let Some(driver_path) = browser_available() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let api = Session::new(&server.endpoint, None);
    grant_many(&api, LEASES, 600, 32).await;

    let (_driver, page, shots) = open_dashboard(&driver_path, dir.path(), &format!("{}/", server.endpoint)).await;
    until("10,000 leases counted", PATIENCE, || async {
        (text(&page, "#leases-count").await.as_deref() == Some("(10000)")).then_some(())
    })
    .await;
    // Frame gaps from now on, measured in the page.
    page.execute(
        "window.gaps = []; let last = performance.now();
         const frame = (t) => { window.gaps.push(t - last); last = t; requestAnimationFrame(frame); };
         requestAnimationFrame(frame);",
        vec![],
    )
    .await
    .expect("install the frame probe");

    // 1,000 key puts a second for a few seconds: each is an event.
    // (Keep-alives would not do: they record no event.)
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0;
    while sent < RATE * SECONDS {
        tick.tick().await;
        let due = (started.elapsed().as_millis() as usize * RATE / 1000).min(RATE * SECONDS);
        let batch: Vec<_> = (sent..due)
            .map(|i| {
                let api = &api;
                async move {
                    let (status, body) = api.put_key(&format!("load/{i}"), "v", None).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            })
            .collect();
        futures::future::join_all(batch).await;
        sent = due;
    }
    let burst = started.elapsed();
    // The last put reaches the page; the lists stay windows.
    let (_, health) = api.get("/healthz").await;
    let head = health["position"].as_u64().expect("the head");
    let newest = format!(r#"#events [data-position="{head}"]"#);
    until("the last put in the event stream", PATIENCE, || async {
        shown(&page, &newest).await.then_some(())
    })
    .await;
    let caught_up = started.elapsed() - burst;
    let lease_rows = count(&page, "#leases .row").await;
    let event_rows = count(&page, "#events .row").await;
    assert!(
        lease_rows <= 100,
        "{lease_rows} lease rows in the page for 10,000 leases"
    );
    assert!(event_rows <= 100, "{event_rows} event rows in the page");

    let gaps = page
        .execute("return window.gaps.slice(1).sort((a, b) => a - b);", vec![])
        .await
        .expect("read the frame gaps");
    let gaps: Vec<f64> = gaps
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if let (Some(max), false) = (gaps.last(), gaps.is_empty()) {
        let p99 = gaps[(gaps.len() * 99 / 100).min(gaps.len() - 1)];
        println!(
            "dashboard under load: {sent} put events in {burst:?}, on the page {caught_up:?} after the last, {} frames, frame gap p99 {p99:.1} ms, max {max:.1} ms; {lease_rows} lease rows and {event_rows} event rows in the DOM",
            gaps.len()
        );
    }
    screenshot(&page, &shots, "dashboard-10000-leases.png").await;
    page.close().await.expect("close the browser");
    server.terminate();
}

//! The OpenAPI description of `/v1` (`GET /v1/openapi.json`): it lists
//! exactly the routes the router serves, it is public while every other
//! route refuses a request without a token, and schemathesis, run against
//! the real binary with it, finds no 5xx and no answer that breaks it.
//!
//! schemathesis comes from PyPI (`pip install schemathesis`; `.ci/run`
//! installs it in a venv). Without a `schemathesis` command its tests say so
//! and skip, unless `TENURE_REQUIRE_SCHEMATHESIS=1` (as in CI), where a
//! missing schemathesis fails them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::binary::ServerProcess;
use common::{with_auth, TestServer, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The methods `/v1` could route; each path must answer 405 to the ones it
/// does not document.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// The document's operations: path template → its methods.
fn operations(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            let methods = METHODS
                .iter()
                .filter(|m| item.contains_key(&m.to_lowercase()))
                .map(|m| (*m).to_owned())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// A concrete path for a template: each `{param}` becomes `x1`.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e + 1);
        out.push_str("x1");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The path templates of every resource the router has under `/v1`, read
/// from the app's resource map (the routes `api::configure` registers, not
/// a list kept by hand). actix has no public way to list them, so this
/// reads the map's `Debug` form: each node's `patterns` and, by its
/// indentation, its parent (a scope's prefix joins its children's).
async fn router_templates() -> BTreeSet<String> {
    use actix_web::{test, web, App, HttpRequest};
    let app = test::init_service(App::new().configure(tenure::api::configure).route(
        "/__resource_map",
        web::get().to(|req: HttpRequest| async move { format!("{:#?}", req.resource_map()) }),
    ))
    .await;
    let req = test::TestRequest::get().uri("/__resource_map").to_request();
    let map = String::from_utf8(test::call_and_read_body(&app, req).await.to_vec()).expect("UTF-8");

    // (indentation, pattern) of each node, in order; then each leaf's
    // pattern joined with its ancestors'.
    let lines: Vec<&str> = map.lines().collect();
    let mut nodes: Vec<(usize, String, bool)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_end().ends_with("ResourceMap {") {
            let indent = line.len() - line.trim_start().len();
            let pattern = lines[i..]
                .iter()
                .position(|l| l.trim() == "patterns: Single(")
                .and_then(|at| lines.get(i + at + 1))
                .map(|l| l.trim().trim_end_matches(',').trim_matches('"').replace("\\\\", "\\"))
                .expect("each node has a pattern");
            nodes.push((indent, pattern, false));
        } else if line.trim() == "nodes: None," {
            if let Some(last) = nodes.last_mut() {
                last.2 = true;
            }
        }
    }
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut templates = BTreeSet::new();
    for (indent, pattern, leaf) in nodes {
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let full = format!("{}{pattern}", stack.last().map_or("", |(_, p)| p.as_str()));
        if leaf {
            templates.insert(tenure::api::openapi::template(&full));
        }
        stack.push((indent, full));
    }
    templates.retain(|t| t.starts_with("/v1/"));
    assert!(
        templates.contains("/v1/leases") && templates.contains("/v1/keys/{key}"),
        "the resource map was not read (did actix change its Debug form?): {templates:?}\n{map}"
    );
    templates
}

#[actix_rt::test]
async fn the_document_describes_exactly_the_routes_of_the_router() {
    let server = TestServer::start().await;
    let (status, doc) = server.get("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = operations(&doc);

    // Every resource of the router is documented, and nothing else is.
    let routed = router_templates().await;
    let paths: BTreeSet<String> = documented.keys().cloned().collect();
    let undocumented: Vec<_> = routed.difference(&paths).collect();
    let unrouted: Vec<_> = paths.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document (add #[utoipa::path] and list them in src/api/openapi.rs): {undocumented:?}"
    );
    assert!(unrouted.is_empty(), "documented paths no route serves: {unrouted:?}");

    // Each path serves exactly the documented methods: the others answer
    // 405 with the allowed ones. `probe=1` makes handlers that read a query
    // string refuse at once (so nothing long-polls or streams).
    for (template, methods) in &documented {
        let path = format!("{}?probe=1", concrete(template));
        for method in METHODS {
            let res = server
                .session_with_header(None)
                .call_raw(Method::from_bytes(method.as_bytes()).expect("a method"), &path, None)
                .await;
            let status = res.status();
            let allow = res
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let body: Value = res.json().await.unwrap_or(Value::Null);
            if methods.contains(method) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {body}");
                assert_ne!(body["code"], "no_route", "{method} {path}: {body}");
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {body}");
                assert_eq!(body["code"], "method_not_allowed", "{method} {path}");
                let allowed: BTreeSet<String> = allow
                    .unwrap_or_default()
                    .split(',')
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty())
                    .collect();
                assert_eq!(&allowed, methods, "the Allow header of {method} {path}");
            }
        }
    }
}

#[actix_rt::test]
async fn the_document_is_public_and_every_documented_route_else_needs_a_token() {
    let server = TestServer::start_with(with_auth).await;
    let anonymous = server.session_with_header(None);
    let (status, doc) = anonymous.get("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    // With --auth the document says the token is required.
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    for (template, methods) in operations(&doc) {
        if template == "/v1/openapi.json" {
            continue;
        }
        for method in methods {
            let path = concrete(&template);
            let res = anonymous
                .call_raw(Method::from_bytes(method.as_bytes()).expect("a method"), &path, None)
                .await;
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_eq!(body["code"], "missing_token", "{method} {path}");
        }
    }
    // And with a token, the document is the same.
    let (status, again) = server.session(ADMIN_TOKEN).get("/v1/openapi.json").await;
    assert_eq!((status, again), (StatusCode::OK, doc));
}

#[actix_rt::test]
async fn in_local_mode_the_token_is_optional() {
    let server = TestServer::start().await;
    let (status, doc) = server.get("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["security"], json!([{}, {"bearer": []}]));
    assert_eq!(doc["paths"]["/v1/openapi.json"]["get"]["security"], json!([{}]));
}

/// The schemathesis command, or `None` (after saying why) if there is none
/// and none is required.
fn schemathesis() -> Option<&'static str> {
    const COMMAND: &str = "schemathesis";
    let found = Command::new(COMMAND)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if found {
        return Some(COMMAND);
    }
    assert!(
        std::env::var("TENURE_REQUIRE_SCHEMATHESIS").as_deref() != Ok("1"),
        "TENURE_REQUIRE_SCHEMATHESIS=1 but there is no schemathesis command (pip install schemathesis)"
    );
    eprintln!("SKIPPED: no schemathesis command on PATH; `pip install schemathesis` to run the OpenAPI fuzzing test");
    None
}

/// Examples per operation and phase: the two runs take about a minute each
/// on two busy cores.
const MAX_EXAMPLES: &str = "25";
/// A fixed seed, so a failure reproduces.
const SEED: &str = "20261202";

/// Runs schemathesis against a server and fails with its output if it
/// finds anything. Every check runs (schemathesis 4 runs all of them unless
/// told otherwise; `--checks all` on the command line would override the
/// per-operation settings of tests/schemathesis.toml).
fn run_schemathesis(command: &str, endpoint: &str, extra: &[&str]) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let work = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let out = Command::new(command)
        .arg("--config-file")
        .arg(&config)
        .args(["--no-color", "run"])
        .arg(format!("{endpoint}/v1/openapi.json"))
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--request-timeout", "30"])
        // The live event stream never ends.
        .args(["--exclude-path", "/v1/events/stream"])
        .args(["--generation-database", "none"])
        .args(extra)
        // schemathesis writes what it finds under its working directory.
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{printed}",
        out.status
    );
    let summary: Vec<&str> = printed.lines().rev().take(12).collect();
    eprintln!(
        "schemathesis passed in {:.0?}:\n{}",
        started.elapsed(),
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn schemathesis_finds_nothing_wrong_in_local_mode() {
    let Some(command) = schemathesis() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    run_schemathesis(command, &server.endpoint, &[]);
    server.terminate();
}

#[actix_rt::test]
async fn schemathesis_finds_nothing_wrong_with_an_account_token() {
    let Some(command) = schemathesis() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, format!("{ADMIN_TOKEN}\n")).expect("write the admin token");
    let admin_arg = admin_file.display().to_string();
    let server = ServerProcess::start(&dir.path().join("data"), &["--auth", "--admin-token-file", &admin_arg]);

    // An account and its token, made by the admin.
    let http = reqwest::Client::new();
    let admin = |method: Method, path: &str| {
        http.request(method, format!("{}{path}", server.endpoint))
            .bearer_auth(ADMIN_TOKEN)
    };
    let res = admin(Method::POST, "/v1/accounts")
        .json(&json!({"name": "fuzz"}))
        .send()
        .await
        .expect("create an account");
    assert_eq!(res.status(), StatusCode::CREATED);
    let issued: Value = admin(Method::POST, "/v1/accounts/fuzz/tokens")
        .send()
        .await
        .expect("issue a token")
        .json()
        .await
        .expect("JSON");
    let token = issued["token"].as_str().expect("a token").to_owned();

    // schemathesis blocks this thread; the server is another process.
    let header = format!("Authorization: Bearer {token}");
    run_schemathesis(command, &server.endpoint, &["--header", &header]);
    server.terminate();
}

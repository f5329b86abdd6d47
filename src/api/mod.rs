//! The HTTP API (actix-web). Routes are registered in [`configure`], so
//! tests build exactly the server's app.

pub mod accounts;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod etcd_error;
pub mod extract;
pub mod history;
pub mod metrics;
pub mod openapi;
pub mod overview;
pub mod routing;
pub mod schema;
pub mod services;
pub mod shares;
pub mod v1;
pub mod v3;
pub mod v3_txn;
pub mod v3_watch;
pub mod workloads;

use actix_web::http::header::HeaderValue;
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::control::Control;
pub use error::ApiError;

/// Registers every route, and JSON errors for bad paths and query strings.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::bad_request("invalid_query", format!("query string: {err}")).into()),
    )
    .app_data(routing::AllowedMethods(openapi::allowed_methods))
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::bad_request("invalid_path", format!("path: {err}")).into()),
    )
    .route("/healthz", web::get().to(healthz))
    .configure(dashboard::configure)
    .configure(metrics::configure)
    // Public (no token), so registered before the `/v1` scope and its middleware.
    .service(openapi::resource())
    .service(
        web::scope("/v1")
            .wrap(actix_web::middleware::from_fn(auth::v1))
            .configure(v1::configure)
            .configure(accounts::configure)
            .configure(shares::configure)
            .configure(services::configure)
            .configure(workloads::configure)
            .configure(history::configure)
            .configure(overview::configure),
    )
    .service(
        web::scope("/v3")
            .wrap(actix_web::middleware::from_fn(auth::v3))
            .configure(v3::configure)
            .configure(v3_txn::configure)
            .configure(v3_watch::configure),
    )
    .default_service(web::to(not_found));
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    /// Global position of the last durable event.
    position: u64,
    /// That position and its link in the hash chain, `POSITION:HASH`: record
    /// it elsewhere, and `tenure verify --expect-head` proves later that the
    /// log up to it is intact.
    head: tenure_events::ChainHead,
    /// `leading` if this node runs the timers (always, on an embedded
    /// log), `following` if another node of a shared log does.
    timers: &'static str,
}

async fn healthz(control: web::Data<Control>) -> Result<HttpResponse, ApiError> {
    control
        .health()
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()))?;
    let head = control.hub().store.chain_head();
    Ok(HttpResponse::Ok().json(Health {
        status: "ok",
        position: head.position,
        head,
        timers: if control.hub().leading.load(std::sync::atomic::Ordering::Acquire) {
            "leading"
        } else {
            "following"
        },
    }))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::not_found(
        "no_route",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// Copies the request id (from the tracing middleware) into the
/// `x-request-id` response header, so callers can find their request in the
/// logs and in the log of events.
pub fn request_id_header(res: &mut actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>) {
    let id = res
        .request()
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string());
    if let Some(value) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        res.headers_mut()
            .insert(actix_web::http::header::HeaderName::from_static("x-request-id"), value);
    }
}

/// Counts an answered request in the HTTP metrics, by method, route
/// pattern (`unmatched` when no route matched) and status, and how long
/// it took to its response head.
pub fn count_request<B>(
    metrics: &crate::metrics::HttpMetrics,
    method: &actix_web::http::Method,
    started: std::time::Instant,
    res: Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
) -> Result<actix_web::dev::ServiceResponse<B>, actix_web::Error> {
    let (route, status) = match &res {
        Ok(res) => (res.request().match_pattern(), res.status()),
        Err(e) => (None, e.as_response_error().status_code()),
    };
    metrics.record(method.as_str(), route.as_deref(), status.as_u16(), started.elapsed());
    res
}

/// Logs answers that are our fault (5xx) at error level; the caller's
/// mistakes (4xx) are recorded on the request span only.
pub fn log_server_error(res: &actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>) {
    if res.status().is_server_error() {
        let error = res.response().error().map(ToString::to_string).unwrap_or_default();
        tracing::error!(status = res.status().as_u16(), %error, "request failed");
    }
}

/// The root span of every HTTP request: method, path and request id, built
/// only when the span is enabled (tracing-actix-web's default span also
/// formats the client address and more on every request, enabled or not).
pub struct RootSpan;

impl tracing_actix_web::RootSpanBuilder for RootSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        let request_id = request.extensions().get::<tracing_actix_web::RequestId>().copied();
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.path(),
            request_id = request_id.map(tracing::field::display),
            account = tracing::field::Empty,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        let status = match outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        span.record("status", status.as_u16());
    }
}

/// Read-your-writes across nodes: a request carrying `Tenure-Min-Position:
/// N` is served once this node's projections (and, through them, its key
/// spaces) have applied the log up to position N. Every answer carries the
/// log position this node had reached when it answered in
/// `Tenure-Position`, so a client passes on to the next node what the last
/// one told it.
pub use crate::cluster::{MIN_POSITION_HEADER, POSITION_HEADER};
/// How long a request waits for its `Tenure-Min-Position` (503 after).
const MIN_POSITION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until this node has applied the position the request asks for
/// (see [`MIN_POSITION_HEADER`]); an answer to send instead if it is
/// malformed or not reached in time.
pub async fn wait_for_min_position(req: &actix_web::dev::ServiceRequest) -> Result<(), error::ApiError> {
    let Some(value) = req.headers().get(MIN_POSITION_HEADER) else {
        return Ok(());
    };
    let position: u64 = value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
        error::ApiError::bad_request(
            "invalid_field",
            "Tenure-Min-Position: must be a log position (a non-negative integer)",
        )
    })?;
    let Some(control) = req.app_data::<web::Data<Control>>() else {
        return Ok(());
    };
    let projections = &control.hub().projections;
    tokio::time::timeout(MIN_POSITION_WAIT, projections.caught_up(position))
        .await
        .map_err(|_| {
            error::ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_caught_up",
                format!(
                    "Tenure-Min-Position: this node has applied the log up to position {}, not yet {position}; retry",
                    projections.checkpoint()
                ),
            )
        })
}

/// Adds the log position this node has reached (see [`POSITION_HEADER`]).
pub fn position_header(res: &mut actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>) {
    let head = res
        .request()
        .app_data::<web::Data<Control>>()
        .map(|control| control.hub().store.head());
    if let Some(head) = head {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(POSITION_HEADER),
            HeaderValue::from(head),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// The modules of `api/` each file imports, from its source (test code
    /// left out): `super::x` or `crate::api::x` for a sibling `x`, and `mod`
    /// for an item of this file; for this file, the children it names.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut sources = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("src/api is readable") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("a file name")
                    .to_owned();
                let source = std::fs::read_to_string(&path).expect("a source file");
                // Comments (doc links included) import nothing.
                let code: String = source
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                sources.insert(name, code);
            }
        }
        let modules: BTreeSet<String> = sources.keys().filter(|m| *m != "mod").cloned().collect();
        let ident = |s: &str| {
            s.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        };
        sources
            .iter()
            .map(|(name, code)| {
                let mut uses = BTreeSet::new();
                if name == "mod" {
                    for module in &modules {
                        if code.contains(&format!("{module}::")) {
                            uses.insert(module.clone());
                        }
                    }
                } else {
                    for prefix in ["super::", "crate::api::"] {
                        for (at, _) in code.match_indices(prefix) {
                            let item = ident(&code[at + prefix.len()..]);
                            if item.is_empty() {
                                continue;
                            }
                            uses.insert(if modules.contains(&item) {
                                item
                            } else {
                                "mod".to_owned()
                            });
                        }
                    }
                }
                uses.remove(name);
                (name.clone(), uses)
            })
            .collect()
    }

    /// ARCHITECTURE.md: the modules of `api/` do not import in a circle.
    #[test]
    fn the_api_modules_do_not_import_in_a_circle() {
        let graph = imports();
        assert!(
            graph["mod"].contains("v1"),
            "the scan sees mod.rs mount the routes: {graph:?}"
        );
        assert!(
            graph["auth"].contains("error"),
            "the scan sees auth import error: {graph:?}"
        );
        // Depth-first search; a module met again on the current path closes a circle.
        fn visit(
            graph: &BTreeMap<String, BTreeSet<String>>,
            module: &str,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) {
            if let Some(at) = path.iter().position(|m| m == module) {
                panic!("api/ imports in a circle: {} -> {module}", path[at..].join(" -> "));
            }
            if done.contains(module) {
                return;
            }
            path.push(module.to_owned());
            for next in graph.get(module).into_iter().flatten() {
                visit(graph, next, path, done);
            }
            path.pop();
            done.insert(module.to_owned());
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            visit(&graph, module, &mut Vec::new(), &mut done);
        }
    }
}

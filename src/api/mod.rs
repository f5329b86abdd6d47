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

/// A resource whose other methods answer 405 with a JSON body.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut res = actix_web::ResponseError::error_response(&ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.path()),
    ));
    // The methods the path allows, as the OpenAPI document lists them.
    let allowed = req
        .match_pattern()
        .and_then(|pattern| openapi::allowed_methods(&pattern));
    if let Some(allow) = allowed {
        res.headers_mut()
            .insert(actix_web::http::header::ALLOW, HeaderValue::from_static(allow));
    }
    res
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

//! `/v1/shares`: zrok-style reserved shares of the calling account.

use actix_web::{web, HttpResponse};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use tenure_events::{BackendMode, LeaseId, ShareMode};
use tenure_projections::ShareView;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, JsonBody};
use super::schema;
use crate::control::Control;
use crate::domain::share::check_unique_name;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::routing::resource;
    cfg.service(
        resource("/shares")
            .route(web::post().to(reserve))
            .route(web::get().to(list)),
    )
    .service(
        resource("/shares/{token}")
            .route(web::get().to(get))
            .route(web::delete().to(release)),
    )
    .service(resource("/shares/{token}/sessions").route(web::post().to(start_session)))
    .service(resource("/shares/{token}/sessions/{session}").route(web::delete().to(stop_session)))
    .service(resource("/shares/{token}/access").route(web::post().to(grant_access)));
}

/// The frontend URL of a share: `http://TOKEN.DOMAIN:PORT/`.
pub fn frontend_url(control: &Control, token: &str) -> String {
    let config = &control.hub().config;
    format!("http://{token}.{}:{}/", config.domain, config.frontend_port)
}

/// A share's backend session.
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
struct SessionJson {
    id: Uuid,
    /// The lease that holds it.
    #[schema(value_type = schema::LeaseId)]
    lease: LeaseId,
    #[schema(value_type = schema::Timestamp)]
    started_at: String,
    /// Its lease is live: the share is being served.
    live: bool,
    /// A web share's: where its backend serves the files.
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
}

/// A reserved share.
#[derive(Serialize, ToSchema)]
#[schema(as = Share)]
struct ShareJson {
    token: String,
    #[schema(value_type = schema::ShareMode)]
    mode: ShareMode,
    #[schema(value_type = schema::BackendMode)]
    backend_mode: BackendMode,
    /// A URL (proxy) or a directory (web).
    target: String,
    /// The token is a name the owner chose.
    unique_name: bool,
    /// Public shares only: where the frontend serves it.
    #[serde(skip_serializing_if = "Option::is_none")]
    frontend: Option<String>,
    #[schema(value_type = schema::Timestamp)]
    reserved_at: String,
    session: Option<SessionJson>,
    /// How many access grants it has (private shares).
    access_grants: usize,
}

/// A share's token: generated, or a unique name.
#[derive(ToSchema)]
#[schema(pattern = "^[a-z0-9-]{3,32}$")]
#[allow(dead_code)] // a schema only
struct ShareToken(String);

const TOKEN_PATH: &str = "The share's token (generated, or its unique name).";
const SHARE_404: &str = "No such share of the caller's (`share_not_found`).";

fn share_json(control: &Control, view: ShareView) -> ShareJson {
    let session = view.session.map(|s| SessionJson {
        id: s.id,
        lease: s.lease,
        started_at: s.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        live: control.session_live(&view.owner, &s),
        address: s.address,
    });
    ShareJson {
        frontend: (view.mode == ShareMode::Public).then(|| frontend_url(control, &view.token)),
        token: view.token,
        mode: view.mode,
        backend_mode: view.backend_mode,
        target: view.target,
        unique_name: view.unique_name,
        reserved_at: view.reserved_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        session,
        access_grants: view.grants.len(),
    }
}

/// A token in a path: generated tokens and unique names share one form.
fn token(raw: &str) -> Result<String, ApiError> {
    check_unique_name(raw)
        .map(|()| raw.to_owned())
        .map_err(|_| ApiError::not_found("share_not_found", format!("share '{raw}' not found")))
}

/// Adds the share's token to a rejection's message.
fn about(token: &str) -> impl Fn(crate::actors::CommandError) -> ApiError + '_ {
    move |e| {
        let mut error = ApiError::from(e);
        if error.code.starts_with("share") || error.code.starts_with("session") || error.code == "public_share" {
            error.message = format!("share '{token}': {}", error.message);
        }
        error
    }
}

#[derive(Deserialize, ToSchema)]
#[schema(as = NewShare, examples(json!({"mode": "public", "target": "http://localhost:9090"})))]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    #[schema(value_type = schema::ShareMode)]
    mode: ShareMode,
    /// `proxy`: an http or https URL with a host; `web`: an absolute
    /// directory path. At most 2,048 bytes, no control characters.
    #[schema(min_length = 1, max_length = 2048)]
    target: String,
    /// A token of the caller's choice instead of a generated one.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9-]{3,32}$")]
    unique_name: Option<String>,
    /// `proxy` when left out.
    #[serde(default = "proxy")]
    #[schema(value_type = schema::BackendMode)]
    backend_mode: BackendMode,
}

fn proxy() -> BackendMode {
    BackendMode::Proxy
}

/// Reserves a share.
#[utoipa::path(post, path = "/v1/shares", tag = "shares", operation_id = "reserve_share",
    request_body = ReserveBody,
    responses(
        (status = 201, description = "The share, reserved.", body = ShareJson),
        (status = 400, description = "A malformed body, target or name (`bad_json`, `invalid_body`, `invalid_field`).", body = ErrorBody),
        (status = 409, description = "The unique name is taken (`share_reserved`).", body = ErrorBody),
        (status = 429, description = "The account's `max_reserved_shares` (`limit_reached`).", body = ErrorBody),
    ))]
async fn reserve(
    control: web::Data<Control>,
    caller: Caller,
    body: JsonBody<ReserveBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    if let Some(name) = &body.unique_name {
        check_unique_name(name).map_err(|e| ApiError::bad_request("invalid_field", e))?;
    }
    let name = body.unique_name.clone().unwrap_or_default();
    let view = control
        .reserve(
            caller.meta(),
            body.mode,
            body.backend_mode,
            body.target,
            body.unique_name,
        )
        .await
        .map_err(about(&name))?;
    Ok(HttpResponse::Created().json(share_json(&control, view)))
}

#[derive(Serialize, ToSchema)]
struct ShareList {
    shares: Vec<ShareJson>,
}

/// The caller's reserved shares.
#[utoipa::path(get, path = "/v1/shares", tag = "shares", operation_id = "list_shares",
    responses((status = 200, description = "The shares.", body = ShareList)))]
async fn list(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let shares = control.shares(&caller.account).await;
    Ok(HttpResponse::Ok().json(ShareList {
        shares: shares.into_iter().map(|s| share_json(&control, s)).collect(),
    }))
}

/// One of the caller's shares.
#[utoipa::path(get, path = "/v1/shares/{token}", tag = "shares", operation_id = "get_share",
    params(("token" = inline(ShareToken), Path, description = TOKEN_PATH)),
    responses(
        (status = 200, description = "The share.", body = ShareJson),
        (status = 404, description = SHARE_404, body = ErrorBody),
    ))]
async fn get(control: web::Data<Control>, caller: Caller, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let token = token(&path)?;
    let view = control.share(&caller.account, &token).await.map_err(about(&token))?;
    Ok(HttpResponse::Ok().json(share_json(&control, view)))
}

#[derive(Serialize, ToSchema)]
#[schema(as = ReleasedShare)]
struct Released {
    /// The token.
    released: String,
}

/// Releases a share (its session, if any, ends).
#[utoipa::path(delete, path = "/v1/shares/{token}", tag = "shares", operation_id = "release_share",
    params(("token" = inline(ShareToken), Path, description = TOKEN_PATH)),
    responses(
        (status = 200, description = "The share, released.", body = Released),
        (status = 404, description = SHARE_404, body = ErrorBody),
    ))]
async fn release(
    control: web::Data<Control>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = token(&path)?;
    control.release(caller.meta(), &token).await.map_err(about(&token))?;
    Ok(HttpResponse::Ok().json(Released { released: token }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = NewSession, examples(json!({"lease": "1a203af6dc400000"})))]
#[serde(deny_unknown_fields)]
struct SessionBody {
    /// The caller's live lease that holds the session.
    #[schema(value_type = schema::LeaseId)]
    lease: LeaseId,
    /// A web share's backend: where it serves the files (`HOST:PORT`);
    /// a proxy share's session has none.
    #[serde(default)]
    address: Option<String>,
    /// End the share's live session, if any, and take over.
    #[serde(default)]
    replace: bool,
}

#[derive(Serialize, ToSchema)]
struct SessionStarted {
    token: String,
    session: Uuid,
    #[schema(value_type = schema::LeaseId)]
    lease: LeaseId,
    target: String,
}

/// Starts the share's backend session, held by a lease of the caller's.
#[utoipa::path(post, path = "/v1/shares/{token}/sessions", tag = "shares", operation_id = "start_session",
    params(("token" = inline(ShareToken), Path, description = TOKEN_PATH)),
    request_body = SessionBody,
    responses(
        (status = 201, description = "The session, started.", body = SessionStarted),
        (status = 400, description = "A malformed body or address (`bad_json`, `invalid_body`, `invalid_field`).", body = ErrorBody),
        (status = 404, description = "No such share or lease (`share_not_found`, `lease_not_found`).", body = ErrorBody),
        (status = 409, description = "A session is live (`session_active`: give `replace`).", body = ErrorBody),
    ))]
async fn start_session(
    control: web::Data<Control>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody<SessionBody>,
) -> Result<HttpResponse, ApiError> {
    let token = token(&path)?;
    let session = control
        .start_session(caller.meta(), &token, body.0.lease, body.0.address, body.0.replace)
        .await
        .map_err(about(&token))?;
    let target = control
        .share(&caller.account, &token)
        .await
        .map_err(about(&token))?
        .target;
    Ok(HttpResponse::Created().json(SessionStarted {
        token,
        session: session.id,
        lease: session.lease,
        target,
    }))
}

#[derive(Serialize, ToSchema)]
struct SessionStopped {
    token: String,
    /// The session.
    stopped: Uuid,
}

/// Ends a share's session.
#[utoipa::path(delete, path = "/v1/shares/{token}/sessions/{session}", tag = "shares", operation_id = "stop_session",
    params(
        ("token" = inline(ShareToken), Path, description = TOKEN_PATH),
        ("session" = Uuid, Path, description = "The session's ID."),
    ),
    responses(
        (status = 200, description = "The session, ended.", body = SessionStopped),
        (status = 400, description = "The session is not a UUID (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such share or session (`share_not_found`, `session_not_found`).", body = ErrorBody),
    ))]
async fn stop_session(
    control: web::Data<Control>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (raw_token, raw_session) = path.into_inner();
    let token = token(&raw_token)?;
    let session: Uuid = raw_session
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_path", format!("session: not a UUID: {raw_session:?}")))?;
    control
        .stop_session(caller.meta(), &token, session)
        .await
        .map_err(about(&token))?;
    Ok(HttpResponse::Ok().json(SessionStopped {
        token,
        stopped: session,
    }))
}

/// An access grant to a private share.
#[derive(Serialize, ToSchema)]
#[schema(as = AccessGrant)]
struct AccessJson {
    token: String,
    grant: String,
    /// Shown only in this answer: requests carrying it in the
    /// `X-Tenure-Access` header are routed to the private share.
    secret: String,
    frontend: String,
    /// The header to send the secret in: `X-Tenure-Access`.
    header: &'static str,
}

/// Grants access to a private share.
#[utoipa::path(post, path = "/v1/shares/{token}/access", tag = "shares", operation_id = "grant_access",
    params(("token" = inline(ShareToken), Path, description = TOKEN_PATH)),
    responses(
        (status = 201, description = "The grant and its secret, shown only here.", body = AccessJson),
        (status = 400, description = "The share is public (`public_share`).", body = ErrorBody),
        (status = 404, description = SHARE_404, body = ErrorBody),
    ))]
async fn grant_access(
    control: web::Data<Control>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = token(&path)?;
    let (grant, secret) = control
        .grant_access(caller.meta(), &token)
        .await
        .map_err(about(&token))?;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(AccessJson {
            frontend: frontend_url(&control, &token),
            token,
            grant,
            secret,
            header: "X-Tenure-Access",
        }))
}

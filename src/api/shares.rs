//! `/v1/shares`: zrok-style reserved shares of the calling account.

use actix_web::{web, HttpResponse};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use tenure_events::{BackendMode, LeaseId, ShareMode};
use tenure_projections::ShareView;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use crate::control::Control;
use crate::domain::share::check_unique_name;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
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

#[derive(Serialize)]
struct SessionJson {
    id: Uuid,
    lease: LeaseId,
    started_at: String,
    /// Its lease is live: the share is being served.
    live: bool,
    /// A web share's: where its backend serves the files.
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
}

#[derive(Serialize)]
struct ShareJson {
    token: String,
    mode: ShareMode,
    backend_mode: BackendMode,
    target: String,
    unique_name: bool,
    /// Public shares only.
    #[serde(skip_serializing_if = "Option::is_none")]
    frontend: Option<String>,
    reserved_at: String,
    session: Option<SessionJson>,
    access_grants: usize,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    mode: ShareMode,
    target: String,
    #[serde(default)]
    unique_name: Option<String>,
    #[serde(default = "proxy")]
    backend_mode: BackendMode,
}

fn proxy() -> BackendMode {
    BackendMode::Proxy
}

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

#[derive(Serialize)]
struct ShareList {
    shares: Vec<ShareJson>,
}

async fn list(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let shares = control.shares(&caller.account).await;
    Ok(HttpResponse::Ok().json(ShareList {
        shares: shares.into_iter().map(|s| share_json(&control, s)).collect(),
    }))
}

async fn get(control: web::Data<Control>, caller: Caller, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let token = token(&path)?;
    let view = control.share(&caller.account, &token).await.map_err(about(&token))?;
    Ok(HttpResponse::Ok().json(share_json(&control, view)))
}

#[derive(Serialize)]
struct Released {
    released: String,
}

async fn release(
    control: web::Data<Control>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = token(&path)?;
    control.release(caller.meta(), &token).await.map_err(about(&token))?;
    Ok(HttpResponse::Ok().json(Released { released: token }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    /// The caller's live lease that holds the session.
    lease: LeaseId,
    /// A web share's backend: where it serves the files (`HOST:PORT`).
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    replace: bool,
}

#[derive(Serialize)]
struct SessionStarted {
    token: String,
    session: Uuid,
    lease: LeaseId,
    target: String,
}

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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "token": token, "stopped": session })))
}

#[derive(Serialize)]
struct AccessJson {
    token: String,
    grant: String,
    /// Shown only in this answer: requests carrying it in the
    /// `X-Tenure-Access` header are routed to the private share.
    secret: String,
    frontend: String,
    header: &'static str,
}

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

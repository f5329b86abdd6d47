//! `/v1/reservations` (workload reservations, zos-style) and
//! `/v1/nodes/{node}/reservations` (the nodes' long-polled feeds).

use actix_web::{web, HttpResponse};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use tenure_events::workload::{DeleteReason, ResultState};
use tenure_events::AccountId;
use tenure_projections::WorkloadView;

use super::auth::AdminCaller;
use super::error::ApiError;
use super::extract::{Caller, JsonBody, QueryArgs};
use crate::control::Control;
use crate::domain::workload::Signed;

/// The longest a poll waits for a reservation, and the most it returns.
pub const MAX_POLL_WAIT_S: u64 = 60;
pub const MAX_POLL_ITEMS: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(
        resource("/reservations")
            .route(web::post().to(reserve))
            .route(web::get().to(list)),
    )
    .service(
        resource("/reservations/{id}")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .service(resource("/reservations/{id}/result").route(web::put().to(report_result)))
    .service(resource("/nodes/{node}/reservations").route(web::get().to(poll)));
}

#[derive(Serialize)]
struct ResultJson {
    state: ResultState,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    data: serde_json::Value,
    at: String,
}

/// A reservation as owners and nodes see it.
#[derive(Serialize)]
struct ReservationJson {
    id: u64,
    node_id: String,
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
    owner: AccountId,
    /// Unix seconds, as signed.
    created: i64,
    /// Seconds, as signed.
    duration: i64,
    expires_at: String,
    signature: String,
    to_delete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    delete_reason: Option<DeleteReason>,
    /// The feed position of its latest change (poll from `seq + 1`).
    seq: u64,
    result: Option<ResultJson>,
}

impl From<WorkloadView> for ReservationJson {
    fn from(w: WorkloadView) -> ReservationJson {
        ReservationJson {
            id: w.id,
            node_id: w.node,
            kind: w.kind,
            data: w.data,
            owner: w.owner,
            created: w.created.timestamp(),
            duration: w.duration_s,
            expires_at: w.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            signature: w.signature,
            to_delete: w.to_delete.is_some(),
            delete_reason: w.to_delete,
            seq: w.seq,
            result: w.result.map(|r| ResultJson {
                state: r.state,
                error: r.error,
                data: r.data,
                at: r.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            }),
        }
    }
}

fn reservation_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request("invalid_path", format!("id: a reservation ID is a number, got {raw:?}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    node_id: String,
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
    /// Unix seconds.
    created: i64,
    /// Seconds.
    duration: i64,
    /// The owner: your account (optional; it is signed either way).
    #[serde(default)]
    owner: Option<String>,
    /// ed25519 over the canonical form, standard base64.
    signature: String,
}

async fn reserve(
    control: web::Data<Control>,
    caller: Caller,
    body: JsonBody<ReserveBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    if body
        .owner
        .as_deref()
        .is_some_and(|owner| owner != caller.account.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("owner: must be your account '{}'", caller.account),
        ));
    }
    let signed = Signed {
        node: body.node_id,
        owner: caller.account.clone(),
        kind: body.kind,
        data: body.data,
        created: body.created,
        duration_s: body.duration,
    };
    let view = control.reserve_workload(caller.meta(), signed, body.signature).await?;
    Ok(HttpResponse::Created().json(ReservationJson::from(view)))
}

#[derive(Serialize)]
struct ReservationList {
    reservations: Vec<ReservationJson>,
}

async fn list(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let all = control.workloads(&caller.account).await;
    Ok(HttpResponse::Ok().json(ReservationList {
        reservations: all.into_iter().map(ReservationJson::from).collect(),
    }))
}

async fn get(control: web::Data<Control>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = control.workload(&caller.account, reservation_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(ReservationJson::from(view)))
}

async fn delete(control: web::Data<Control>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = control.delete_workload(caller.meta(), reservation_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(ReservationJson::from(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    state: ResultState,
    #[serde(default)]
    error: String,
    #[serde(default)]
    data: serde_json::Value,
}

async fn report_result(
    control: web::Data<Control>,
    node: AdminCaller,
    id: web::Path<String>,
    body: JsonBody<ResultBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let view = control
        .report_result(
            Some(node.request_id),
            reservation_id(&id)?,
            body.state,
            body.error,
            body.data,
        )
        .await?;
    Ok(HttpResponse::Ok().json(ReservationJson::from(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollQuery {
    #[serde(default)]
    from: u64,
    /// Seconds to wait when there is nothing (default 30, at most 60; 0: answer at once).
    #[serde(default = "default_wait")]
    timeout: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_wait() -> u64 {
    30
}

fn default_limit() -> usize {
    MAX_POLL_ITEMS
}

#[derive(Serialize)]
struct PollAnswer {
    reservations: Vec<ReservationJson>,
    /// Where the next poll starts: the last `seq` + 1 (or `from` if none).
    next: u64,
}

async fn poll(
    control: web::Data<Control>,
    _: AdminCaller,
    node: web::Path<String>,
    query: QueryArgs<PollQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.0;
    if query.timeout > MAX_POLL_WAIT_S {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("timeout: at most {MAX_POLL_WAIT_S} seconds"),
        ));
    }
    let limit = query.limit.clamp(1, MAX_POLL_ITEMS);
    let wait = std::time::Duration::from_secs(query.timeout);
    let found = control.poll(&node, query.from, limit, wait).await;
    let next = found.last().map_or(query.from, |w| w.seq + 1);
    Ok(HttpResponse::Ok().json(PollAnswer {
        reservations: found.into_iter().map(ReservationJson::from).collect(),
        next,
    }))
}

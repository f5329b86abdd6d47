//! `/v1/reservations` (workload reservations, zos-style) and
//! `/v1/nodes/{node}/reservations` (the nodes' long-polled feeds).

use actix_web::{web, HttpResponse};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use tenure_events::workload::{DeleteReason, ResultState};
use tenure_events::AccountId;
use tenure_projections::WorkloadView;
use utoipa::{IntoParams, ToSchema};

use super::auth::AdminCaller;
use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, JsonBody, QueryArgs};
use super::schema;
use crate::control::Control;
use crate::domain::workload::Signed;

/// The longest a poll waits for a reservation, and the most it returns.
pub const MAX_POLL_WAIT_S: u64 = 60;
pub const MAX_POLL_ITEMS: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::routing::resource;
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

/// What the node reported.
#[derive(Serialize, ToSchema)]
#[schema(as = WorkloadResult)]
struct ResultJson {
    #[schema(value_type = schema::ResultState)]
    state: ResultState,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    /// What the node made (its form depends on the workload's type).
    data: serde_json::Value,
    #[schema(value_type = schema::Timestamp)]
    at: String,
}

/// A reservation as owners and nodes see it.
#[derive(Serialize, ToSchema)]
#[schema(as = Reservation)]
struct ReservationJson {
    /// Its ID: the log position of its creation.
    id: u64,
    node_id: String,
    #[serde(rename = "type")]
    kind: String,
    /// The workload, as signed.
    data: serde_json::Value,
    #[schema(value_type = schema::AccountName)]
    owner: AccountId,
    /// Unix seconds, as signed.
    created: i64,
    /// Seconds, as signed.
    duration: i64,
    #[schema(value_type = schema::Timestamp)]
    expires_at: String,
    signature: String,
    to_delete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::DeleteReason>)]
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

const ID_PATH: &str = "The reservation's ID.";
const RESERVATION_404: &str = "No such reservation of the caller's (`reservation_not_found`).";

/// A signed workload reservation.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewReservation)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    /// The node: 1 to 128 of a-z, A-Z, 0-9, '-', '_', '.'.
    #[schema(pattern = "^[a-zA-Z0-9._-]{1,128}$")]
    node_id: String,
    #[serde(rename = "type")]
    #[schema(value_type = WorkloadType)]
    kind: String,
    /// The workload (its form depends on `type`).
    #[schema(value_type = Object)]
    data: serde_json::Value,
    /// Unix seconds: at most 300 s ahead of the server's clock.
    created: i64,
    /// Seconds; `created + duration` must be in the future.
    #[schema(minimum = 1, maximum = 315_360_000)]
    duration: i64,
    /// The owner: your account (optional; it is signed either way).
    #[serde(default)]
    #[schema(value_type = Option<schema::AccountName>)]
    owner: Option<String>,
    /// ed25519 over the canonical form, by the account's registered key:
    /// standard base64 of its 64 bytes.
    #[schema(pattern = "^[A-Za-z0-9+/]{85}[AQgw]==$")]
    signature: String,
}

/// A workload's type.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only
#[serde(rename_all = "snake_case")]
enum WorkloadType {
    Container,
    Volume,
    Network,
    Zdb,
    Debug,
    Kubernetes,
}

/// Reserves a workload on a node, signed by the caller's key.
#[utoipa::path(post, path = "/v1/reservations", tag = "reservations", operation_id = "create_reservation",
    request_body = ReserveBody,
    responses(
        (status = 201, description = "The reservation, created.", body = ReservationJson),
        (status = 400, description = "A malformed body or workload, a bad signature, no registered key, or a reservation that has expired on arrival (`bad_json`, `invalid_body`, `invalid_field`, `invalid_signature`, `no_public_key`, `expired`).", body = ErrorBody),
        (status = 409, description = "The same reservation exists (`reservation_exists`).", body = ErrorBody),
    ))]
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

#[derive(Serialize, ToSchema)]
struct ReservationList {
    reservations: Vec<ReservationJson>,
}

/// The caller's reservations.
#[utoipa::path(get, path = "/v1/reservations", tag = "reservations", operation_id = "list_reservations",
    responses((status = 200, description = "The reservations, by ID.", body = ReservationList)))]
async fn list(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let all = control.workloads(&caller.account).await;
    Ok(HttpResponse::Ok().json(ReservationList {
        reservations: all.into_iter().map(ReservationJson::from).collect(),
    }))
}

/// One of the caller's reservations.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations", operation_id = "get_reservation",
    params(("id" = u64, Path, description = ID_PATH, maximum = 18_446_744_073_709_551_615_u64)),
    responses(
        (status = 200, description = "The reservation.", body = ReservationJson),
        (status = 400, description = "The ID is not a number (`invalid_path`).", body = ErrorBody),
        (status = 404, description = RESERVATION_404, body = ErrorBody),
    ))]
async fn get(control: web::Data<Control>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = control.workload(&caller.account, reservation_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(ReservationJson::from(view)))
}

/// Asks for a reservation to be deleted: its node sees it on its next poll.
#[utoipa::path(delete, path = "/v1/reservations/{id}", tag = "reservations", operation_id = "delete_reservation",
    params(("id" = u64, Path, description = ID_PATH, maximum = 18_446_744_073_709_551_615_u64)),
    responses(
        (status = 200, description = "The reservation, to be deleted.", body = ReservationJson),
        (status = 400, description = "The ID is not a number (`invalid_path`).", body = ErrorBody),
        (status = 404, description = RESERVATION_404, body = ErrorBody),
    ))]
async fn delete(control: web::Data<Control>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = control.delete_workload(caller.meta(), reservation_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(ReservationJson::from(view)))
}

/// What a node made of a reservation.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewWorkloadResult)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    #[schema(value_type = schema::ResultState)]
    state: ResultState,
    /// Why it failed: at most 4,096 bytes.
    #[serde(default)]
    #[schema(max_length = 4096)]
    error: String,
    /// What the node made.
    #[serde(default)]
    data: serde_json::Value,
}

/// Reports what a node made of a reservation (admin: the node).
#[utoipa::path(put, path = "/v1/reservations/{id}/result", tag = "nodes", operation_id = "report_result",
    params(("id" = u64, Path, description = ID_PATH, maximum = 18_446_744_073_709_551_615_u64)),
    request_body = ResultBody,
    responses(
        (status = 200, description = "The reservation with its result.", body = ReservationJson),
        (status = 400, description = "A malformed ID or body (`invalid_path`, `bad_json`, `invalid_body`, `invalid_field`).", body = ErrorBody),
        (status = 404, description = "No such reservation (`reservation_not_found`).", body = ErrorBody),
    ))]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PollQuery {
    /// The first feed position wanted: the last answer's `next`.
    #[serde(default)]
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    from: u64,
    /// Seconds to wait when there is nothing (default 30, at most 60; 0: answer at once).
    #[serde(default = "default_wait")]
    #[param(maximum = 60)]
    timeout: u64,
    /// At most this many reservations (1 to 1,000; more or less is clamped).
    #[serde(default = "default_limit")]
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    limit: usize,
}

fn default_wait() -> u64 {
    30
}

fn default_limit() -> usize {
    MAX_POLL_ITEMS
}

#[derive(Serialize, ToSchema)]
struct PollAnswer {
    reservations: Vec<ReservationJson>,
    /// Where the next poll starts: the last `seq` + 1 (or `from` if none).
    next: u64,
}

/// A node's feed of reservations, long-polled (admin: the node).
#[utoipa::path(get, path = "/v1/nodes/{node}/reservations", tag = "nodes", operation_id = "poll_node",
    params(("node" = String, Path, description = "The node's ID."), PollQuery),
    responses(
        (status = 200, description = "The reservations changed at or after `from`, and where to poll next.", body = PollAnswer),
        (status = 400, description = "A malformed query (`invalid_query`).", body = ErrorBody),
    ))]
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

//! `/v1/overview` and `/v1/overview/leases`: the operator dashboard's
//! reads. What the caller may see (its own entities; every account's for
//! the admin and in local mode), with what the per-entity routes do not
//! show: the seconds each lease has left, the requests in flight per
//! instance, the routes, and the accounts.
//!
//! Remaining times are given in milliseconds with the server's `now`, so a
//! page counts down by itself between reads.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tenure_events::service::Handler;
use tenure_events::workload::{DeleteReason, ResultState};
use tenure_events::{AccountId, BackendMode, Bytes, LeaseId, ShareMode};
use tenure_projections::{LiveLease, Route};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::HistoryReader;
use super::error::{ApiError, ErrorBody};
use super::extract::QueryArgs;
use super::schema;
use crate::control::{Control, Overview, LEASE_PAGE_MAX};
use crate::proxy::InFlight;

/// Leases per page when the caller does not say.
const DEFAULT_LEASE_PAGE: usize = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::routing::resource;
    cfg.service(resource("/overview").route(web::get().to(overview)))
        .service(resource("/overview/leases").route(web::get().to(leases)));
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds from `now` to `deadline`, never below zero.
fn remaining_ms(now: DateTime<Utc>, deadline: DateTime<Utc>) -> i64 {
    (deadline - now).num_milliseconds().max(0)
}

/// What the dashboard shows, all at once.
#[derive(Serialize, ToSchema)]
#[schema(as = Overview)]
struct OverviewJson {
    /// The server's clock when this was read.
    #[schema(value_type = schema::Timestamp)]
    now: String,
    /// The log position the projections had reached.
    position: u64,
    live_leases: usize,
    services: Vec<ServiceRow>,
    routes: Vec<RouteRow>,
    shares: Vec<ShareRow>,
    workloads: Vec<WorkloadRow>,
    /// Every account, for the admin (and in local mode) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    accounts: Option<Vec<AccountRow>>,
}

#[derive(Serialize, ToSchema)]
struct PortRow {
    port: u16,
    destination_port: u16,
    #[schema(value_type = Vec<schema::PortHandler>)]
    handlers: Vec<Handler>,
}

#[derive(Serialize, ToSchema)]
struct ServiceRow {
    #[schema(value_type = schema::AccountName)]
    account: AccountId,
    name: String,
    fqdn: String,
    ports: Vec<PortRow>,
    /// Created by a deploy: deleted with its last instance.
    auto: bool,
    instances: Vec<InstanceRow>,
}

#[derive(Serialize, ToSchema)]
struct InstanceRow {
    name: String,
    address: String,
    #[schema(value_type = schema::LeaseId)]
    lease: LeaseId,
    /// Its lease is live: it gets traffic.
    live: bool,
    /// Milliseconds its lease has left, if live.
    remaining_ms: Option<i64>,
    /// Requests the proxy has in flight to its address.
    in_flight: usize,
}

#[derive(Serialize, ToSchema)]
struct RouteRow {
    host: String,
    /// `service` or `share`.
    kind: &'static str,
    /// Where requests for the host go now (empty: the proxy answers 503).
    backends: Vec<String>,
    /// A private share: only requests with an access grant pass.
    private: bool,
}

#[derive(Serialize, ToSchema)]
struct SessionRow {
    id: Uuid,
    #[schema(value_type = schema::LeaseId)]
    lease: LeaseId,
    live: bool,
    remaining_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct ShareRow {
    #[schema(value_type = schema::AccountName)]
    account: AccountId,
    token: String,
    #[schema(value_type = schema::ShareMode)]
    mode: ShareMode,
    #[schema(value_type = schema::BackendMode)]
    backend_mode: BackendMode,
    target: String,
    session: Option<SessionRow>,
    access_grants: usize,
}

#[derive(Serialize, ToSchema)]
struct WorkloadResultRow {
    #[schema(value_type = schema::ResultState)]
    state: ResultState,
    error: String,
}

#[derive(Serialize, ToSchema)]
struct WorkloadRow {
    #[schema(value_type = schema::AccountName)]
    account: AccountId,
    id: u64,
    node: String,
    #[serde(rename = "type")]
    kind: String,
    #[schema(value_type = schema::Timestamp)]
    created: String,
    #[schema(value_type = schema::Timestamp)]
    expires_at: String,
    /// Milliseconds until its duration runs out (zero once it has).
    remaining_ms: i64,
    #[schema(value_type = Option<schema::DeleteReason>)]
    to_delete: Option<DeleteReason>,
    result: Option<WorkloadResultRow>,
}

#[derive(Serialize, ToSchema)]
struct AccountRow {
    #[schema(value_type = schema::AccountName)]
    name: AccountId,
    #[schema(value_type = schema::Timestamp)]
    created_at: String,
    tokens: usize,
    live_leases: usize,
    services: usize,
    shares: usize,
    workloads: usize,
}

impl OverviewJson {
    fn new(o: Overview, in_flight: &std::collections::HashMap<String, usize>) -> OverviewJson {
        let now = o.now;
        let remaining = |l: &Option<LiveLease>| l.map(|l| remaining_ms(now, l.deadline));
        OverviewJson {
            now: time(now),
            position: o.position,
            live_leases: o.live_leases,
            services: o
                .services
                .into_iter()
                .map(|s| ServiceRow {
                    account: s.account,
                    name: s.service.name,
                    fqdn: s.service.fqdn,
                    ports: s
                        .service
                        .ports
                        .into_iter()
                        .map(|p| PortRow {
                            port: p.port,
                            destination_port: p.destination_port,
                            handlers: p.handlers,
                        })
                        .collect(),
                    auto: s.service.auto,
                    instances: s
                        .instances
                        .into_iter()
                        .map(|(i, lease)| InstanceRow {
                            live: lease.is_some(),
                            remaining_ms: remaining(&lease),
                            in_flight: in_flight.get(&i.address).copied().unwrap_or(0),
                            name: i.name,
                            address: i.address,
                            lease: i.lease,
                        })
                        .collect(),
                })
                .collect(),
            routes: o
                .routes
                .into_iter()
                .map(|(host, route)| match route {
                    Route::Service { backends, .. } => RouteRow {
                        host,
                        kind: "service",
                        backends,
                        private: false,
                    },
                    Route::Share { target, grants, .. } => RouteRow {
                        host,
                        kind: "share",
                        backends: target.into_iter().collect(),
                        private: grants.is_some(),
                    },
                })
                .collect(),
            shares: o
                .shares
                .into_iter()
                .map(|s| ShareRow {
                    session: s.share.session.map(|session| SessionRow {
                        id: session.id,
                        lease: session.lease,
                        live: s.session_lease.is_some(),
                        remaining_ms: remaining(&s.session_lease),
                    }),
                    account: s.share.owner,
                    token: s.share.token,
                    mode: s.share.mode,
                    backend_mode: s.share.backend_mode,
                    target: s.share.target,
                    access_grants: s.share.grants.len(),
                })
                .collect(),
            workloads: o
                .workloads
                .into_iter()
                .map(|w| WorkloadRow {
                    remaining_ms: remaining_ms(now, w.expires_at),
                    created: time(w.created),
                    expires_at: time(w.expires_at),
                    account: w.owner,
                    id: w.id,
                    node: w.node,
                    kind: w.kind,
                    to_delete: w.to_delete,
                    result: w.result.map(|r| WorkloadResultRow {
                        state: r.state,
                        error: r.error,
                    }),
                })
                .collect(),
            accounts: o.accounts.map(|accounts| {
                accounts
                    .into_iter()
                    .map(|a| AccountRow {
                        created_at: time(a.account.created_at),
                        tokens: a.account.tokens.len(),
                        name: a.account.name,
                        live_leases: a.live_leases,
                        services: a.services,
                        shares: a.shares,
                        workloads: a.workloads,
                    })
                    .collect()
            }),
        }
    }
}

/// What the caller may see, for the dashboard: services and their
/// instances (with the requests in flight), routes, shares, workload
/// reservations and, for the admin and in local mode, every account.
#[utoipa::path(get, path = "/v1/overview", tag = "dashboard", operation_id = "overview",
    responses((status = 200, description = "The overview, with the server's clock.", body = OverviewJson)))]
async fn overview(
    control: web::Data<Control>,
    reader: HistoryReader,
    in_flight: Option<web::Data<InFlight>>,
) -> Result<HttpResponse, ApiError> {
    let in_flight = in_flight.map(|f| f.snapshot()).unwrap_or_default();
    let overview = control.overview(&reader.scope).await;
    Ok(HttpResponse::Ok().json(OverviewJson::new(overview, &in_flight)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LeasesQuery {
    /// Leases to skip, in (account, ID) order.
    #[serde(default)]
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    offset: usize,
    /// At most this many (1 to 1,000; default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = LeaseRow)]
struct LeaseRowJson {
    #[schema(value_type = schema::AccountName)]
    account: AccountId,
    #[schema(value_type = schema::LeaseId)]
    id: LeaseId,
    /// The granted TTL, seconds.
    ttl: i64,
    remaining_ms: i64,
    #[schema(value_type = Vec<schema::Bytes>)]
    keys: Vec<Bytes>,
}

/// A page of the live leases the caller may see.
#[derive(Serialize, ToSchema)]
#[schema(as = LeasePage)]
struct LeasePageJson {
    #[schema(value_type = schema::Timestamp)]
    now: String,
    /// Live leases the caller may see, in all.
    total: usize,
    offset: usize,
    leases: Vec<LeaseRowJson>,
}

/// A page of the live leases the caller may see, with their keys and the
/// milliseconds they have left.
#[utoipa::path(get, path = "/v1/overview/leases", tag = "dashboard", operation_id = "overview_leases",
    params(LeasesQuery),
    responses(
        (status = 200, description = "The page, with the server's clock.", body = LeasePageJson),
        (status = 400, description = "A malformed query, or a limit out of range (`invalid_query`).", body = ErrorBody),
    ))]
async fn leases(
    control: web::Data<Control>,
    reader: HistoryReader,
    QueryArgs(query): QueryArgs<LeasesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LEASE_PAGE);
    if limit == 0 || limit > LEASE_PAGE_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: must be 1 to {LEASE_PAGE_MAX}, got {limit}"),
        ));
    }
    let page = control.lease_page(&reader.scope, query.offset, limit).await?;
    let now = page.now;
    Ok(HttpResponse::Ok().json(LeasePageJson {
        now: time(now),
        total: page.total,
        offset: query.offset,
        leases: page
            .leases
            .into_iter()
            .map(|l| LeaseRowJson {
                remaining_ms: remaining_ms(now, l.deadline),
                account: l.account,
                id: l.lease,
                ttl: l.ttl_s,
                keys: l.keys,
            })
            .collect(),
    }))
}

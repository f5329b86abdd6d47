//! `/v1/services` and `/v1/instances`: Unikraft Cloud-style services of the
//! calling account and the instances attached to them.

use actix_web::{web, HttpResponse};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use tenure_events::service::{Handler, PortRule};
use tenure_events::LeaseId;
use tenure_projections::{InstanceView, ServiceView};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{Caller, JsonBody, QueryArgs};
use super::schema;
use crate::control::Control;
use crate::domain::service::{check_limits, check_name, check_ports, parse_port_rule};

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::routing::resource;
    cfg.service(
        resource("/services")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(
        resource("/services/{name}")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .service(
        resource("/instances")
            .route(web::post().to(register))
            .route(web::get().to(list_instances)),
    )
    .service(resource("/instances/{name}").route(web::delete().to(remove_instance)));
}

/// A public port of a service and the port of its instances it maps to.
#[derive(Serialize, ToSchema)]
#[schema(as = Port)]
struct PortJson {
    port: u16,
    destination_port: u16,
    #[schema(value_type = Vec<schema::PortHandler>)]
    handlers: Vec<Handler>,
}

/// An instance: an address that serves a service while its lease lives.
#[derive(Serialize, ToSchema)]
#[schema(as = Instance)]
struct InstanceJson {
    uuid: Uuid,
    name: String,
    service: String,
    address: String,
    #[schema(value_type = schema::LeaseId)]
    lease: LeaseId,
    /// Its lease is live: it gets traffic.
    live: bool,
    #[schema(value_type = schema::Timestamp)]
    registered_at: String,
}

/// A service and its instances.
#[derive(Serialize, ToSchema)]
#[schema(as = Service)]
struct ServiceJson {
    uuid: Uuid,
    name: String,
    fqdn: String,
    ports: Vec<PortJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    soft_limit: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hard_limit: Option<u16>,
    /// Created by a deploy: deleted with its last instance.
    auto: bool,
    #[schema(value_type = schema::Timestamp)]
    created_at: String,
    instances: Vec<InstanceJson>,
}

fn instance_json(control: &Control, caller: &Caller, i: InstanceView) -> InstanceJson {
    InstanceJson {
        live: control.instance_live(&caller.account, &i),
        uuid: i.uuid,
        name: i.name,
        service: i.service,
        address: i.address,
        lease: i.lease,
        registered_at: i.registered_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

fn service_json(control: &Control, caller: &Caller, s: ServiceView, instances: Vec<InstanceView>) -> ServiceJson {
    ServiceJson {
        uuid: s.uuid,
        name: s.name,
        fqdn: s.fqdn,
        ports: s
            .ports
            .into_iter()
            .map(|p| PortJson {
                port: p.port,
                destination_port: p.destination_port,
                handlers: p.handlers,
            })
            .collect(),
        soft_limit: s.soft_limit,
        hard_limit: s.hard_limit,
        auto: s.auto,
        created_at: s.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        instances: instances
            .into_iter()
            .map(|i| instance_json(control, caller, i))
            .collect(),
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_field", message)
}

/// Port rules as `kraft cloud` writes them: `"443:8080/tls+http"`.
fn port_rules(specs: &[String]) -> Result<Vec<PortRule>, ApiError> {
    let rules = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| parse_port_rule(spec).map_err(|e| invalid(format!("ports[{i}]: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    check_ports(&rules).map_err(invalid)?;
    Ok(rules)
}

#[derive(Deserialize, ToSchema)]
#[schema(as = NewService, examples(json!({"name": "web", "ports": ["443:8080/tls+http", "80:8080/http+redirect"]})))]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,53}$")]
    name: String,
    /// Port rules, `PORT:DEST_PORT[/HANDLER+...]` (`443:8080/tls+http`);
    /// ports are 1 to 65535, each public port once; 443 needs `tls+http`,
    /// 80 `http` without `tls`, `redirect` is for 80 only.
    #[schema(min_items = 1, value_type = Vec<PortRuleSpec>)]
    ports: Vec<String>,
    /// Connections per instance before the next one is preferred (1 to 65535).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    soft_limit: Option<u16>,
    /// Connections per instance at most (1 to 65535, at least `soft_limit`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    hard_limit: Option<u16>,
}

/// A port rule, `PORT:DEST_PORT[/HANDLER+...]`.
#[derive(ToSchema)]
#[schema(as = PortRule, pattern = "^\\+?0*(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}):\\+?0*(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})(/(tls|http|redirect)(\\+(tls|http|redirect))*)?$", examples("443:8080/tls+http"))]
#[allow(dead_code)] // a schema only
struct PortRuleSpec(String);

const SERVICE_404: &str = "No such service of the caller's (`service_not_found`).";

/// Creates a service.
#[utoipa::path(post, path = "/v1/services", tag = "services", operation_id = "create_service",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The service, created.", body = ServiceJson),
        (status = 400, description = "A malformed body, name, port rule or limit (`bad_json`, `invalid_body`, `invalid_field`).", body = ErrorBody),
        (status = 409, description = "The name is taken (`service_exists`).", body = ErrorBody),
        (status = 429, description = "The account's `max_services` (`limit_reached`).", body = ErrorBody),
    ))]
async fn create(
    control: web::Data<Control>,
    caller: Caller,
    body: JsonBody<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    check_name("name", &body.name).map_err(invalid)?;
    let ports = port_rules(&body.ports)?;
    check_limits(body.soft_limit, body.hard_limit).map_err(invalid)?;
    let service = control
        .create_service(caller.meta(), body.name, ports, body.soft_limit, body.hard_limit, false)
        .await?;
    Ok(HttpResponse::Created().json(service_json(&control, &caller, service, Vec::new())))
}

#[derive(Serialize, ToSchema)]
struct ServiceList {
    services: Vec<ServiceJson>,
}

/// The caller's services.
#[utoipa::path(get, path = "/v1/services", tag = "services", operation_id = "list_services",
    responses((status = 200, description = "The services, with their instances.", body = ServiceList)))]
async fn list(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let services = control.services(&caller.account).await;
    let services = services
        .into_iter()
        .map(|(s, instances)| service_json(&control, &caller, s, instances))
        .collect();
    Ok(HttpResponse::Ok().json(ServiceList { services }))
}

/// One of the caller's services.
#[utoipa::path(get, path = "/v1/services/{name}", tag = "services", operation_id = "get_service",
    params(("name" = String, Path, description = "The service's name.")),
    responses(
        (status = 200, description = "The service, with its instances.", body = ServiceJson),
        (status = 404, description = SERVICE_404, body = ErrorBody),
    ))]
async fn get(control: web::Data<Control>, caller: Caller, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let found = control
        .services(&caller.account)
        .await
        .into_iter()
        .find(|(s, _)| s.name == *name);
    match found {
        Some((s, instances)) => Ok(HttpResponse::Ok().json(service_json(&control, &caller, s, instances))),
        None => Err(ApiError::not_found(
            "service_not_found",
            format!("service '{name}' not found"),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Delete it even with instances attached (they are removed).
    #[serde(default)]
    force: bool,
}

#[derive(Serialize, ToSchema)]
struct ServiceDeleted {
    /// The service's name.
    deleted: String,
}

/// Deletes a service.
#[utoipa::path(delete, path = "/v1/services/{name}", tag = "services", operation_id = "delete_service",
    params(("name" = String, Path, description = "The service's name."), DeleteQuery),
    responses(
        (status = 200, description = "The service, deleted.", body = ServiceDeleted),
        (status = 400, description = "A malformed query (`invalid_query`).", body = ErrorBody),
        (status = 404, description = SERVICE_404, body = ErrorBody),
        (status = 409, description = "It has instances (`service_has_instances`: give `force=true`).", body = ErrorBody),
    ))]
async fn delete(
    control: web::Data<Control>,
    caller: Caller,
    name: web::Path<String>,
    query: QueryArgs<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    control.delete_service(caller.meta(), &name, query.0.force).await?;
    Ok(HttpResponse::Ok().json(ServiceDeleted {
        deleted: name.into_inner(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = NewInstance, examples(json!({"name": "web-1", "service": "web", "address": "127.0.0.1:8080", "lease": "1a203af6dc400000"})))]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,53}$")]
    name: String,
    /// An existing service, or `ports` for an automatic one (give one of them).
    #[serde(default)]
    service: Option<String>,
    /// The port rules of an automatic service named after the instance.
    #[serde(default)]
    #[schema(value_type = Vec<PortRuleSpec>)]
    ports: Vec<String>,
    /// Where the instance serves, `HOST:PORT`.
    address: String,
    /// The caller's live lease that keeps the instance attached.
    #[schema(value_type = schema::LeaseId)]
    lease: LeaseId,
}

/// An instance, registered, and where the proxy serves it.
#[derive(Serialize, ToSchema)]
struct Registered {
    instance: InstanceJson,
    service: String,
    fqdn: String,
    /// Where the proxy serves it (plain HTTP on the frontend port).
    url: String,
    auto: bool,
}

/// Registers an instance, attached to a service while its lease lives.
#[utoipa::path(post, path = "/v1/instances", tag = "services", operation_id = "register_instance",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The instance, registered.", body = Registered),
        (status = 400, description = "A malformed body, name, address or port rule, or neither or both of `service` and `ports` (`bad_json`, `invalid_body`, `invalid_field`).", body = ErrorBody),
        (status = 404, description = "No such service or lease (`service_not_found`, `lease_not_found`).", body = ErrorBody),
        (status = 409, description = "The name is taken (`instance_exists`, `service_exists`).", body = ErrorBody),
        (status = 429, description = "The account's `max_services`, for an automatic service (`limit_reached`).", body = ErrorBody),
    ))]
async fn register(
    control: web::Data<Control>,
    caller: Caller,
    body: JsonBody<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let ports = match (&body.service, body.ports.is_empty()) {
        (Some(_), true) => Vec::new(),
        (None, false) => port_rules(&body.ports)?,
        (Some(_), false) => return Err(invalid("give either service or ports, not both".into())),
        (None, true) => return Err(invalid("service: give a service, or ports for an automatic one".into())),
    };
    let (instance, service) = control
        .register_instance(caller.meta(), body.name, body.service, ports, body.address, body.lease)
        .await?;
    let url = format!("http://{}:{}/", service.fqdn, control.hub().config.frontend_port);
    Ok(HttpResponse::Created().json(Registered {
        instance: instance_json(&control, &caller, instance),
        service: service.name,
        fqdn: service.fqdn,
        url,
        auto: service.auto,
    }))
}

#[derive(Serialize, ToSchema)]
struct InstanceList {
    instances: Vec<InstanceJson>,
}

/// The caller's instances.
#[utoipa::path(get, path = "/v1/instances", tag = "services", operation_id = "list_instances",
    responses((status = 200, description = "The instances.", body = InstanceList)))]
async fn list_instances(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let instances = control.instances(&caller.account).await;
    Ok(HttpResponse::Ok().json(InstanceList {
        instances: instances
            .into_iter()
            .map(|i| instance_json(&control, &caller, i))
            .collect(),
    }))
}

#[derive(Serialize, ToSchema)]
struct InstanceRemoved {
    /// The instance's name.
    removed: String,
    /// Its automatic service, if it was deleted with it.
    service_deleted: Option<String>,
}

/// Removes an instance (and its automatic service with the last one).
#[utoipa::path(delete, path = "/v1/instances/{name}", tag = "services", operation_id = "remove_instance",
    params(("name" = String, Path, description = "The instance's name.")),
    responses(
        (status = 200, description = "The instance, removed.", body = InstanceRemoved),
        (status = 404, description = "No such instance of the caller's (`instance_not_found`).", body = ErrorBody),
    ))]
async fn remove_instance(
    control: web::Data<Control>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let removed_service = control.remove_instance(caller.meta(), &name).await?;
    Ok(HttpResponse::Ok().json(InstanceRemoved {
        removed: name.into_inner(),
        service_deleted: removed_service,
    }))
}

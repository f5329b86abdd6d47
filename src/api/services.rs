//! `/v1/services` and `/v1/instances`: Unikraft Cloud-style services of the
//! calling account and the instances attached to them.

use actix_web::{web, HttpResponse};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use tenure_events::service::{Handler, PortRule};
use tenure_events::LeaseId;
use tenure_projections::{InstanceView, ServiceView};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{Caller, JsonBody, QueryArgs};
use crate::control::Control;
use crate::domain::service::{check_limits, check_name, check_ports, parse_port_rule};

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
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

#[derive(Serialize)]
struct PortJson {
    port: u16,
    destination_port: u16,
    handlers: Vec<Handler>,
}

#[derive(Serialize)]
struct InstanceJson {
    uuid: Uuid,
    name: String,
    service: String,
    address: String,
    lease: LeaseId,
    /// Its lease is live: it gets traffic.
    live: bool,
    registered_at: String,
}

#[derive(Serialize)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    ports: Vec<String>,
    #[serde(default)]
    soft_limit: Option<u16>,
    #[serde(default)]
    hard_limit: Option<u16>,
}

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

#[derive(Serialize)]
struct ServiceList {
    services: Vec<ServiceJson>,
}

async fn list(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let services = control.services(&caller.account).await;
    let services = services
        .into_iter()
        .map(|(s, instances)| service_json(&control, &caller, s, instances))
        .collect();
    Ok(HttpResponse::Ok().json(ServiceList { services }))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete(
    control: web::Data<Control>,
    caller: Caller,
    name: web::Path<String>,
    query: QueryArgs<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    control.delete_service(caller.meta(), &name, query.0.force).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": *name })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    name: String,
    /// An existing service, or `ports` for an automatic one.
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    ports: Vec<String>,
    address: String,
    /// The caller's live lease that keeps the instance attached.
    lease: LeaseId,
}

#[derive(Serialize)]
struct Registered {
    instance: InstanceJson,
    service: String,
    fqdn: String,
    /// Where the proxy serves it (plain HTTP on the frontend port).
    url: String,
    auto: bool,
}

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

#[derive(Serialize)]
struct InstanceList {
    instances: Vec<InstanceJson>,
}

async fn list_instances(control: web::Data<Control>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let instances = control.instances(&caller.account).await;
    Ok(HttpResponse::Ok().json(InstanceList {
        instances: instances
            .into_iter()
            .map(|i| instance_json(&control, &caller, i))
            .collect(),
    }))
}

async fn remove_instance(
    control: web::Data<Control>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let removed_service = control.remove_instance(caller.meta(), &name).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "removed": *name, "service_deleted": removed_service })))
}

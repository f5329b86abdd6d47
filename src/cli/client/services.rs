//! Services and their instances: `service ...`, `instance ...`, `deploy`.

use std::process::ExitCode;

use serde::Deserialize;

use super::keys::HeldLease;
use super::{path_segment, print, CliError, Client};
use crate::cli::{InstanceCommand, ServiceCommand};

/// `instance list`, `instance rm NAME`.
pub(super) async fn instance(client: &Client, command: InstanceCommand) -> Result<ExitCode, CliError> {
    let http = &client.http;
    match command {
        InstanceCommand::List => {
            let list: InstanceList = client.send(http.get(client.url("/v1/instances"))).await?;
            for i in list.instances {
                let state = if i.live { "live" } else { "dead" };
                print(format!("{} {} {} {state}", i.name, i.service, i.address));
            }
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Rm { name } => {
            let url = client.url(&format!("/v1/instances/{}", path_segment(&name)));
            let removed: InstanceRemoved = client.send(http.delete(url)).await?;
            print(format!("instance '{name}' removed"));
            if let Some(service) = removed.service_deleted {
                print(format!("service '{service}' removed with its last instance"));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Deserialize)]
struct PortInfo {
    port: u16,
    destination_port: u16,
    handlers: Vec<String>,
}

#[derive(Deserialize)]
struct InstanceInfo {
    name: String,
    service: String,
    address: String,
    live: bool,
}

#[derive(Deserialize)]
struct ServiceInfo {
    uuid: String,
    name: String,
    fqdn: String,
    ports: Vec<PortInfo>,
    #[serde(default)]
    instances: Vec<InstanceInfo>,
}

#[derive(Deserialize)]
struct ServiceList {
    services: Vec<ServiceInfo>,
}

#[derive(Deserialize)]
struct InstanceList {
    instances: Vec<InstanceInfo>,
}

#[derive(Deserialize)]
struct InstanceRemoved {
    service_deleted: Option<String>,
}

#[derive(Deserialize)]
struct Deployed {
    service: String,
    url: String,
}

fn ports_line(ports: &[PortInfo]) -> String {
    ports
        .iter()
        .map(|p| format!("{}:{}/{}", p.port, p.destination_port, p.handlers.join("+")))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) async fn service(client: &Client, command: ServiceCommand) -> Result<ExitCode, CliError> {
    let http = &client.http;
    match command {
        ServiceCommand::Create {
            name,
            ports,
            soft_limit,
            hard_limit,
        } => {
            let body = serde_json::json!({
                "name": name, "ports": ports, "soft_limit": soft_limit, "hard_limit": hard_limit,
            });
            let s: ServiceInfo = client.send(http.post(client.url("/v1/services")).json(&body)).await?;
            print(format!("uuid: {}", s.uuid));
            print(format!("name: {}", s.name));
            print(format!("fqdn: {}", s.fqdn));
        }
        ServiceCommand::List => {
            let list: ServiceList = client.send(http.get(client.url("/v1/services"))).await?;
            for s in list.services {
                let live = s.instances.iter().filter(|i| i.live).count();
                print(format!(
                    "{} {} {} instances={live}/{}",
                    s.name,
                    s.fqdn,
                    ports_line(&s.ports),
                    s.instances.len()
                ));
            }
        }
        ServiceCommand::Get { name } => {
            let url = client.url(&format!("/v1/services/{}", path_segment(&name)));
            let s: ServiceInfo = client.send(http.get(url)).await?;
            print(format!("uuid: {}", s.uuid));
            print(format!("name: {}", s.name));
            print(format!("fqdn: {}", s.fqdn));
            print(format!("ports: {}", ports_line(&s.ports)));
            for i in s.instances {
                let state = if i.live { "live" } else { "dead" };
                print(format!("instance: {} {} {state}", i.name, i.address));
            }
        }
        ServiceCommand::Rm { name, force } => {
            let url = client.url(&format!("/v1/services/{}", path_segment(&name)));
            let _: serde_json::Value = client.send(http.delete(url).query(&[("force", force)])).await?;
            print(format!("service '{name}' removed"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `deploy`: grant a lease, attach the instance, keep the lease alive until
/// Ctrl-C, then remove the instance (and an automatic service with it).
pub(super) async fn deploy(
    client: &Client,
    name: String,
    service: Option<String>,
    ports: Vec<String>,
    address: String,
    ttl: i64,
    detach: bool,
) -> Result<ExitCode, CliError> {
    let mut shutdown = crate::cli::Shutdown::install();
    let http = &client.http;
    let held = HeldLease::grant(client, ttl).await?;
    let lease = held.id;
    let body = serde_json::json!({
        "name": name, "service": service, "ports": ports, "address": address, "lease": lease,
    });
    let deployed: Deployed = match client.send(http.post(client.url("/v1/instances")).json(&body)).await {
        Ok(deployed) => deployed,
        Err(e) => {
            held.revoke(client).await;
            return Err(e);
        }
    };
    print(format!("instance '{name}' attached to service '{}'", deployed.service));
    print(format!("url: {}", deployed.url));
    if detach {
        print(format!(
            "lease {lease} keeps it attached; keep it alive with `tenure lease keep-alive {lease}`"
        ));
        return Ok(ExitCode::SUCCESS);
    }
    if !held
        .keep_alive_until_stopped(client, &mut shutdown, || async { true })
        .await
    {
        eprintln!("the lease of instance '{name}' ended; it no longer gets traffic");
        return Ok(ExitCode::FAILURE);
    }
    let url = client.url(&format!("/v1/instances/{}", path_segment(&name)));
    let removed: Result<InstanceRemoved, CliError> = client.send(http.delete(url)).await;
    held.revoke(client).await;
    print(format!("instance '{name}' removed"));
    if let Ok(InstanceRemoved {
        service_deleted: Some(service),
    }) = removed
    {
        print(format!("service '{service}' removed with its last instance"));
    }
    Ok(ExitCode::SUCCESS)
}

//! Services and instances, with Unikraft Cloud's rules. A service maps
//! public ports to a port of its instances and is reached at its FQDN;
//! names are unique per account. An instance is an address attached to a
//! service that serves while its lease lives.

use chrono::{DateTime, Utc};
use tenure_events::service::{
    Handler, InstanceRegistered, InstanceRemoved, PortRule, ServiceCreated, ServiceDeleteReason, ServiceDeleted,
};
use tenure_events::{InstanceEvent, LeaseId, ServiceEvent};
use uuid::Uuid;

use super::Aggregate;

/// The random part of an FQDN: `NAME-xxxxxxxx.DOMAIN`.
pub const FQDN_SUFFIX_LEN: usize = 8;
/// Names are DNS labels once the suffix is added (63 at most).
pub const MAX_NAME_LEN: usize = 63 - 1 - FQDN_SUFFIX_LEN;

/// Checks a service or instance name: `^[a-z0-9][a-z0-9-]*$`, 1 to 54 characters.
pub fn check_name(field: &str, name: &str) -> Result<(), String> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9 or '-', starting with a letter or digit, got {name:?}"
        ))
    }
}

/// Parses `PORT:DEST[/HANDLER+HANDLER...]`, as `kraft cloud` writes it
/// (`443:8080/tls+http`). Without handlers: `tls+http` on 443, `http` on
/// 80, `tls` elsewhere.
pub fn parse_port_rule(spec: &str) -> Result<PortRule, String> {
    let bad = |why: &str| format!("port rule {spec:?}: {why}");
    let (ports, handlers) = match spec.split_once('/') {
        Some((ports, handlers)) => (ports, Some(handlers)),
        None => (spec, None),
    };
    let (port, dest) = ports.split_once(':').ok_or_else(|| bad("expected PORT:DEST_PORT"))?;
    let port: u16 = port.parse().map_err(|_| bad("the port must be 1 to 65535"))?;
    let destination_port: u16 = dest
        .parse()
        .map_err(|_| bad("the destination port must be 1 to 65535"))?;
    let handlers = match handlers {
        Some(list) => list
            .split('+')
            .map(|h| match h {
                "tls" => Ok(Handler::Tls),
                "http" => Ok(Handler::Http),
                "redirect" => Ok(Handler::Redirect),
                other => Err(bad(&format!("unknown handler {other:?} (tls, http, redirect)"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => match port {
            443 => vec![Handler::Tls, Handler::Http],
            80 => vec![Handler::Http],
            _ => vec![Handler::Tls],
        },
    };
    Ok(PortRule {
        port,
        destination_port,
        handlers,
    })
}

/// Unikraft's port rules: 443 needs `tls` and `http`; 80 needs `http` and
/// no `tls`; `redirect` only on 80; any other port needs `tls` and no
/// `http`. Ports are 1 to 65535 and not repeated.
pub fn check_ports(ports: &[PortRule]) -> Result<(), String> {
    if ports.is_empty() {
        return Err("ports: a service needs at least one port".into());
    }
    for (i, rule) in ports.iter().enumerate() {
        let at = format!("ports[{i}] ({})", rule.port);
        let has = |h| rule.handlers.contains(&h);
        if rule.port == 0 || rule.destination_port == 0 {
            return Err(format!("{at}: ports are 1 to 65535"));
        }
        if ports[..i].iter().any(|other| other.port == rule.port) {
            return Err(format!("{at}: port {} appears twice", rule.port));
        }
        let mut sorted = rule.handlers.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != rule.handlers.len() {
            return Err(format!("{at}: a handler appears twice"));
        }
        let problem = match rule.port {
            443 if !(has(Handler::Tls) && has(Handler::Http)) => Some("port 443 needs the tls and http handlers"),
            443 if has(Handler::Redirect) => Some("redirect is only allowed on port 80"),
            80 if !has(Handler::Http) => Some("port 80 needs the http handler"),
            80 if has(Handler::Tls) => Some("port 80 cannot have the tls handler"),
            80 | 443 => None,
            _ if has(Handler::Redirect) => Some("redirect is only allowed on port 80"),
            _ if !has(Handler::Tls) => Some("ports other than 80 and 443 need the tls handler"),
            _ if has(Handler::Http) => Some("ports other than 80 and 443 cannot have the http handler"),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(format!("{at}: {problem}"));
        }
    }
    Ok(())
}

/// Unikraft's connection limits: each 1 to 65535, soft at most hard.
pub fn check_limits(soft: Option<u16>, hard: Option<u16>) -> Result<(), String> {
    if soft == Some(0) || hard == Some(0) {
        return Err("soft_limit and hard_limit are 1 to 65535".into());
    }
    if let (Some(soft), Some(hard)) = (soft, hard) {
        if soft > hard {
            return Err(format!("soft_limit ({soft}) must not exceed hard_limit ({hard})"));
        }
    }
    Ok(())
}

/// Checks an instance address: `HOST:PORT`.
pub fn check_address(address: &str) -> Result<(), String> {
    let bad = || format!("address: expected HOST:PORT, got {address:?}");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Service {
    #[default]
    Absent,
    Active {
        uuid: Uuid,
        auto: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceCommand {
    Create(ServiceCreated),
    /// `attached`: live instances attached (the caller counts them).
    Delete {
        reason: ServiceDeleteReason,
        attached: usize,
        force: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceRejection {
    #[error("service not found")]
    NotFound,
    #[error("a service with this name already exists")]
    AlreadyExists,
    #[error("the service has {0} instance(s) attached; remove them first or use --force")]
    HasInstances(usize),
    #[error("{0}")]
    Invalid(String),
}

impl Aggregate for Service {
    type Command = ServiceCommand;
    type Event = ServiceEvent;
    type Rejection = ServiceRejection;

    fn decide(&self, command: ServiceCommand, _now: DateTime<Utc>) -> Result<Vec<ServiceEvent>, ServiceRejection> {
        match (self, command) {
            (Service::Absent, ServiceCommand::Create(created)) => {
                check_name("name", &created.name).map_err(ServiceRejection::Invalid)?;
                check_ports(&created.ports).map_err(ServiceRejection::Invalid)?;
                check_limits(created.soft_limit, created.hard_limit).map_err(ServiceRejection::Invalid)?;
                Ok(vec![created.into()])
            }
            (Service::Active { .. }, ServiceCommand::Create(_)) => Err(ServiceRejection::AlreadyExists),
            (Service::Absent, ServiceCommand::Delete { .. }) => Err(ServiceRejection::NotFound),
            (
                Service::Active { uuid, .. },
                ServiceCommand::Delete {
                    reason,
                    attached,
                    force,
                },
            ) => {
                if attached > 0 && !force {
                    return Err(ServiceRejection::HasInstances(attached));
                }
                Ok(vec![ServiceDeleted { uuid: *uuid, reason }.into()])
            }
        }
    }

    fn evolve(&mut self, event: &ServiceEvent, _at: DateTime<Utc>) {
        *self = match event {
            ServiceEvent::Created(e) => Service::Active {
                uuid: e.uuid,
                auto: e.auto,
            },
            ServiceEvent::Deleted(_) => Service::Absent,
        };
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Instance {
    #[default]
    Absent,
    Registered {
        uuid: Uuid,
        service: String,
        lease: LeaseId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceCommand {
    Register(InstanceRegistered),
    Remove,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InstanceRejection {
    #[error("instance not found")]
    NotFound,
    #[error("an instance with this name already exists")]
    AlreadyExists,
    #[error("{0}")]
    Invalid(String),
}

impl Aggregate for Instance {
    type Command = InstanceCommand;
    type Event = InstanceEvent;
    type Rejection = InstanceRejection;

    fn decide(&self, command: InstanceCommand, _now: DateTime<Utc>) -> Result<Vec<InstanceEvent>, InstanceRejection> {
        match (self, command) {
            (Instance::Absent, InstanceCommand::Register(registered)) => {
                check_name("name", &registered.name).map_err(InstanceRejection::Invalid)?;
                check_address(&registered.address).map_err(InstanceRejection::Invalid)?;
                Ok(vec![registered.into()])
            }
            (Instance::Registered { .. }, InstanceCommand::Register(_)) => Err(InstanceRejection::AlreadyExists),
            (Instance::Absent, InstanceCommand::Remove) => Err(InstanceRejection::NotFound),
            (Instance::Registered { uuid, .. }, InstanceCommand::Remove) => {
                Ok(vec![InstanceRemoved { uuid: *uuid }.into()])
            }
        }
    }

    fn evolve(&mut self, event: &InstanceEvent, _at: DateTime<Utc>) {
        *self = match event {
            InstanceEvent::Registered(e) => Instance::Registered {
                uuid: e.uuid,
                service: e.service.clone(),
                lease: e.lease,
            },
            InstanceEvent::Removed(_) => Instance::Absent,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;

    fn rule(spec: &str) -> PortRule {
        parse_port_rule(spec).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn port_rules_follow_unikraft() {
        let ok = |specs: &[&str]| {
            let rules: Vec<PortRule> = specs.iter().map(|s| rule(s)).collect();
            assert_eq!(check_ports(&rules), Ok(()), "{specs:?}");
        };
        let refused = |specs: &[&str], why: &str| {
            let rules: Vec<PortRule> = specs.iter().map(|s| rule(s)).collect();
            let err = check_ports(&rules).expect_err("refused");
            assert!(err.contains(why), "{specs:?}: {err}");
        };
        ok(&["443:8080/tls+http"]);
        ok(&["443:8080/http+tls", "80:8080/http+redirect"]);
        ok(&["80:8080/http"]);
        ok(&["8443:8080/tls"]);
        ok(&["443:8080", "80:8080", "5432:5432"]); // defaults per port
        refused(&["443:8080/http"], "port 443 needs the tls and http handlers");
        refused(&["443:8080/tls"], "port 443 needs the tls and http handlers");
        refused(&["443:8080/tls+http+redirect"], "redirect is only allowed on port 80");
        refused(&["80:8080/tls+http"], "port 80 cannot have the tls handler");
        refused(&["80:8080/redirect"], "port 80 needs the http handler");
        refused(&["8443:8080/http"], "need the tls handler");
        refused(&["8443:8080/tls+http"], "cannot have the http handler");
        refused(&["8443:8080/tls+redirect"], "redirect is only allowed on port 80");
        refused(&["443:8080", "443:9090"], "appears twice");
        refused(&["443:8080/tls+tls+http"], "a handler appears twice");
        refused(&[], "at least one port");
        assert!(parse_port_rule("443").is_err());
        assert!(parse_port_rule("443:99999/tls").is_err());
        assert!(parse_port_rule("443:8080/gzip").is_err());
        assert!(check_limits(Some(10), Some(5)).is_err());
        assert!(check_limits(Some(0), None).is_err());
        assert_eq!(check_limits(Some(5), Some(10)), Ok(()));
        assert_eq!(check_address("127.0.0.1:8080"), Ok(()));
        assert_eq!(check_address("app.internal:80"), Ok(()));
        assert!(check_address("127.0.0.1").is_err());
        assert!(check_address("http://x:80").is_err());
        assert!(check_address("x:0").is_err());
    }

    fn created(name: &str, auto: bool) -> ServiceCreated {
        ServiceCreated {
            uuid: Uuid::from_u128(1),
            name: name.into(),
            fqdn: format!("{name}-abcdefgh.tenure.localhost"),
            ports: vec![rule("443:8080/tls+http")],
            soft_limit: None,
            hard_limit: None,
            auto,
        }
    }

    #[test]
    fn a_service_with_instances_is_only_removed_with_force() {
        given::<Service>([])
            .when(ServiceCommand::Create(created("web", false)))
            .then([created("web", false).into()]);
        given::<Service>([created("web", false).into()])
            .when(ServiceCommand::Create(created("web", false)))
            .then_rejects(ServiceRejection::AlreadyExists);
        given::<Service>([])
            .when(ServiceCommand::Create(created("Web!", false)))
            .then_rejects(ServiceRejection::Invalid(
                check_name("name", "Web!").expect_err("invalid"),
            ));
        let delete = |attached, force| ServiceCommand::Delete {
            reason: ServiceDeleteReason::Request,
            attached,
            force,
        };
        given::<Service>([created("web", false).into()])
            .when(delete(2, false))
            .then_rejects(ServiceRejection::HasInstances(2));
        let deleted: ServiceEvent = ServiceDeleted {
            uuid: Uuid::from_u128(1),
            reason: ServiceDeleteReason::Request,
        }
        .into();
        given::<Service>([created("web", false).into()])
            .when(delete(2, true))
            .then([deleted.clone()]);
        given::<Service>([created("web", false).into(), deleted])
            .when(delete(0, false))
            .then_rejects(ServiceRejection::NotFound);
    }

    #[test]
    fn instances_register_once_and_are_removed() {
        let registered = InstanceRegistered {
            uuid: Uuid::from_u128(2),
            name: "web-1".into(),
            service: "web".into(),
            address: "127.0.0.1:9001".into(),
            lease: LeaseId::new(7).expect("positive"),
        };
        given::<Instance>([])
            .when(InstanceCommand::Register(registered.clone()))
            .then([registered.clone().into()]);
        given::<Instance>([registered.clone().into()])
            .when(InstanceCommand::Register(registered.clone()))
            .then_rejects(InstanceRejection::AlreadyExists);
        given::<Instance>([registered.clone().into()])
            .when(InstanceCommand::Remove)
            .then([InstanceRemoved {
                uuid: Uuid::from_u128(2),
            }
            .into()]);
        given::<Instance>([])
            .when(InstanceCommand::Remove)
            .then_rejects(InstanceRejection::NotFound);
        given::<Instance>([])
            .when(InstanceCommand::Register(InstanceRegistered {
                address: "nowhere".into(),
                ..registered
            }))
            .then_rejects(InstanceRejection::Invalid(
                check_address("nowhere").expect_err("invalid"),
            ));
    }
}

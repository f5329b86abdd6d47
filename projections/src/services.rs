use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tenure_events::service::PortRule;
use tenure_events::{AccountId, InstanceEvent, LeaseId, RecordedEvent, ServiceEvent};
use uuid::Uuid;

use crate::snapshot::{lease_id, ordered_map, InstanceSnapshot, RestoreError, ServiceSnapshot, ServicesSnapshot};
use crate::Projection;

/// Services and instances as `service list|get` and `instance list` show
/// them, and what the `max_services` limit counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Services {
    checkpoint: u64,
    services: BTreeMap<(AccountId, String), ServiceView>,
    instances: BTreeMap<(AccountId, String), InstanceView>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceView {
    pub uuid: Uuid,
    pub name: String,
    pub fqdn: String,
    pub ports: Vec<PortRule>,
    pub soft_limit: Option<u16>,
    pub hard_limit: Option<u16>,
    pub auto: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceView {
    pub uuid: Uuid,
    pub name: String,
    pub service: String,
    pub address: String,
    pub lease: LeaseId,
    pub registered_at: DateTime<Utc>,
}

impl Services {
    pub fn service(&self, account: &AccountId, name: &str) -> Option<&ServiceView> {
        self.services.get(&(account.clone(), name.to_owned()))
    }

    pub fn services<'a>(&'a self, account: &'a AccountId) -> impl Iterator<Item = &'a ServiceView> + 'a {
        self.services
            .range((account.clone(), String::new())..)
            .take_while(move |((a, _), _)| a == account)
            .map(|(_, s)| s)
    }

    /// Every service with its account, by account and name.
    pub fn all_services(&self) -> impl Iterator<Item = (&AccountId, &ServiceView)> {
        self.services.iter().map(|((a, _), s)| (a, s))
    }

    /// Every instance with its account, by account and name.
    pub fn all_instances(&self) -> impl Iterator<Item = (&AccountId, &InstanceView)> {
        self.instances.iter().map(|((a, _), i)| (a, i))
    }

    pub fn count(&self, account: &AccountId) -> usize {
        self.services(account).count()
    }

    pub fn instance(&self, account: &AccountId, name: &str) -> Option<&InstanceView> {
        self.instances.get(&(account.clone(), name.to_owned()))
    }

    pub fn instances<'a>(&'a self, account: &'a AccountId) -> impl Iterator<Item = &'a InstanceView> + 'a {
        self.instances
            .range((account.clone(), String::new())..)
            .take_while(move |((a, _), _)| a == account)
            .map(|(_, i)| i)
    }

    /// The instances attached to one of the account's services.
    pub fn attached<'a>(
        &'a self,
        account: &'a AccountId,
        service: &'a str,
    ) -> impl Iterator<Item = &'a InstanceView> + 'a {
        self.instances(account).filter(move |i| i.service == service)
    }

    pub fn snapshot(&self) -> ServicesSnapshot {
        ServicesSnapshot {
            services: self
                .services
                .iter()
                .map(|((account, key), s)| {
                    let service = ServiceSnapshot {
                        uuid: s.uuid,
                        name: s.name.clone(),
                        fqdn: s.fqdn.clone(),
                        ports: s.ports.clone(),
                        soft_limit: s.soft_limit,
                        hard_limit: s.hard_limit,
                        auto: s.auto,
                        created_at: s.created_at.into(),
                    };
                    (account.clone(), key.clone(), service)
                })
                .collect(),
            instances: self
                .instances
                .iter()
                .map(|((account, key), i)| {
                    let instance = InstanceSnapshot {
                        uuid: i.uuid,
                        name: i.name.clone(),
                        service: i.service.clone(),
                        address: i.address.clone(),
                        lease: i.lease.get(),
                        registered_at: i.registered_at.into(),
                    };
                    (account.clone(), key.clone(), instance)
                })
                .collect(),
        }
    }

    pub fn restore(snapshot: ServicesSnapshot, checkpoint: u64) -> Result<Services, RestoreError> {
        let mut services = Vec::with_capacity(snapshot.services.len());
        for (account, key, s) in snapshot.services {
            let view = ServiceView {
                uuid: s.uuid,
                name: s.name,
                fqdn: s.fqdn,
                ports: s.ports,
                soft_limit: s.soft_limit,
                hard_limit: s.hard_limit,
                auto: s.auto,
                created_at: s.created_at.to_datetime()?,
            };
            services.push(((account, key), view));
        }
        let mut instances = Vec::with_capacity(snapshot.instances.len());
        for (account, key, i) in snapshot.instances {
            let view = InstanceView {
                uuid: i.uuid,
                name: i.name,
                service: i.service,
                address: i.address,
                lease: lease_id(i.lease)?,
                registered_at: i.registered_at.to_datetime()?,
            };
            instances.push(((account, key), view));
        }
        Ok(Services {
            checkpoint,
            services: ordered_map(services, "services")?,
            instances: ordered_map(instances, "instances")?,
        })
    }
}

impl Projection for Services {
    const NAME: &'static str = "services";

    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn apply(&mut self, event: &RecordedEvent) {
        if !crate::advance(&mut self.checkpoint, event) {
            return;
        }
        let key = || {
            let name = event.stream.as_str().rsplit('/').next().unwrap_or_default().to_owned();
            (event.account.clone(), name)
        };
        match event.stream.category() {
            "service" => match event.decode_as::<ServiceEvent>() {
                Ok(Some(ServiceEvent::Created(e))) => {
                    let view = ServiceView {
                        uuid: e.uuid,
                        name: e.name,
                        fqdn: e.fqdn,
                        ports: e.ports,
                        soft_limit: e.soft_limit,
                        hard_limit: e.hard_limit,
                        auto: e.auto,
                        created_at: event.time,
                    };
                    self.services.insert(key(), view);
                }
                Ok(Some(ServiceEvent::Deleted(_))) => {
                    self.services.remove(&key());
                }
                Ok(None) => {}
                Err(err) => tracing::error!(position = event.position, %err, "services projection skips an event"),
            },
            "instance" => match event.decode_as::<InstanceEvent>() {
                Ok(Some(InstanceEvent::Registered(e))) => {
                    let view = InstanceView {
                        uuid: e.uuid,
                        name: e.name,
                        service: e.service,
                        address: e.address,
                        lease: e.lease,
                        registered_at: event.time,
                    };
                    self.instances.insert(key(), view);
                }
                Ok(Some(InstanceEvent::Removed(_))) => {
                    self.instances.remove(&key());
                }
                Ok(None) => {}
                Err(err) => tracing::error!(position = event.position, %err, "services projection skips an event"),
            },
            _ => {}
        }
    }
}

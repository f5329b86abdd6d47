//! Services and instances (Unikraft Cloud): create, list, attach, remove.

use tenure_events::service::{InstanceRegistered, PortRule, ServiceCreated, ServiceDeleteReason};
use tenure_events::{AccountId, LeaseId, Metadata};
use tenure_projections::{InstanceView, ServiceView};
use uuid::Uuid;

use crate::actors::{Activation, Cmd, CommandError};
use crate::domain::lease::LeaseRejection;
use crate::domain::service::{InstanceCommand, InstanceRejection, ServiceCommand, ServiceRejection};

use super::{Control, Limit};

impl Control {
    async fn service_command(
        &self,
        meta: Metadata,
        name: &str,
        command: ServiceCommand,
    ) -> Result<usize, CommandError> {
        let key = (meta.account.clone(), name.to_owned());
        let cmd = Cmd::new(meta);
        self.entity_command(&self.hub.services, &key, Activation::Load, |reply| {
            crate::actors::service::ExecuteService {
                command: command.clone(),
                cmd: cmd.clone(),
                reply,
            }
        })
        .await
    }

    async fn instance_command(
        &self,
        meta: Metadata,
        name: &str,
        command: InstanceCommand,
    ) -> Result<usize, CommandError> {
        let key = (meta.account.clone(), name.to_owned());
        let cmd = Cmd::new(meta);
        self.entity_command(&self.hub.instances, &key, Activation::Load, |reply| {
            crate::actors::service::ExecuteInstance {
                command: command.clone(),
                cmd: cmd.clone(),
                reply,
            }
        })
        .await
    }

    /// Creates a service: FQDN `NAME-xxxxxxxx.DOMAIN`. Refused at the
    /// account's `max_services`.
    pub async fn create_service(
        &self,
        meta: Metadata,
        name: String,
        ports: Vec<PortRule>,
        soft_limit: Option<u16>,
        hard_limit: Option<u16>,
        auto: bool,
    ) -> Result<ServiceView, CommandError> {
        let account = meta.account.clone();
        let count = |p: &crate::actors::Projections| p.services.lock().count(&account);
        self.within_limit(&account, Limit::SERVICES, count, || async {
            let suffix = crate::auth::random_chars(crate::domain::service::FQDN_SUFFIX_LEN)
                .map_err(|e| CommandError::Unavailable(e.to_string()))?;
            let created = ServiceCreated {
                uuid: Uuid::new_v4(),
                fqdn: format!("{name}-{suffix}.{}", self.hub.config.domain),
                name: name.clone(),
                ports,
                soft_limit,
                hard_limit,
                auto,
            };
            self.service_command(meta, &name, ServiceCommand::Create(created))
                .await?;
            self.service(&account, &name).await
        })
        .await
    }

    pub async fn service(&self, account: &AccountId, name: &str) -> Result<ServiceView, CommandError> {
        let found = self.read(|p| p.services.lock().service(account, name).cloned()).await;
        found.ok_or(CommandError::Service(ServiceRejection::NotFound))
    }

    /// The account's services with their instances, by name.
    pub async fn services(&self, account: &AccountId) -> Vec<(ServiceView, Vec<InstanceView>)> {
        self.read(|p| {
            let services = p.services.lock();
            services
                .services(account)
                .map(|s| (s.clone(), services.attached(account, &s.name).cloned().collect()))
                .collect()
        })
        .await
    }

    /// The account's instances, by name.
    pub async fn instances(&self, account: &AccountId) -> Vec<InstanceView> {
        self.read(|p| p.services.lock().instances(account).cloned().collect())
            .await
    }

    /// Whether an instance's lease is live (it serves).
    pub fn instance_live(&self, account: &AccountId, instance: &InstanceView) -> bool {
        self.hub
            .projections
            .expiry
            .lock()
            .is_live(&Self::lease_key(account, instance.lease))
    }

    /// Removes a service; with instances attached only with `force`, which
    /// removes them first.
    pub async fn delete_service(&self, meta: Metadata, name: &str, force: bool) -> Result<(), CommandError> {
        let attached: Vec<String> = {
            self.service(&meta.account, name).await?;
            let services = self.hub.projections.services.lock();
            services.attached(&meta.account, name).map(|i| i.name.clone()).collect()
        };
        let command = ServiceCommand::Delete {
            reason: ServiceDeleteReason::Request,
            attached: attached.len(),
            force,
        };
        if !attached.is_empty() && !force {
            return self.service_command(meta, name, command).await.map(drop);
        }
        for instance in &attached {
            match self
                .instance_command(meta.clone(), instance, InstanceCommand::Remove)
                .await
            {
                Ok(_) | Err(CommandError::Instance(InstanceRejection::NotFound)) => {}
                Err(e) => return Err(e),
            }
        }
        self.service_command(meta, name, command).await.map(drop)
    }

    /// Attaches an instance at `address` to a service, serving while the
    /// caller's live `lease` lives. With `ports` instead of a service, creates
    /// an automatic service (named after the instance) that is deleted with
    /// its last instance.
    pub async fn register_instance(
        &self,
        meta: Metadata,
        name: String,
        service: Option<String>,
        ports: Vec<PortRule>,
        address: String,
        lease: LeaseId,
    ) -> Result<(InstanceView, ServiceView), CommandError> {
        let account = meta.account.clone();
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        if !projections.expiry.lock().is_live(&Self::lease_key(&account, lease)) {
            return Err(LeaseRejection::NotFound(lease).into());
        }
        crate::domain::service::check_name("name", &name)
            .map_err(|e| CommandError::Instance(InstanceRejection::Invalid(e)))?;
        let service = match service {
            Some(service) => self.service(&account, &service).await?,
            None => {
                self.create_service(meta.clone(), name.clone(), ports, None, None, true)
                    .await?
            }
        };
        let registered = InstanceRegistered {
            uuid: Uuid::new_v4(),
            name: name.clone(),
            service: service.name.clone(),
            address,
            lease,
        };
        let outcome = self
            .instance_command(meta.clone(), &name, InstanceCommand::Register(registered))
            .await;
        if let Err(e) = outcome {
            let unused = projections
                .services
                .lock()
                .attached(&account, &service.name)
                .next()
                .is_none();
            if service.auto && unused {
                let _ = self.delete_auto_service(meta, &service.name).await;
            }
            return Err(e);
        }
        let instance = projections.services.lock().instance(&account, &name).cloned();
        let instance = instance.ok_or_else(|| CommandError::Unavailable("the instance is not visible yet".into()))?;
        Ok((instance, service))
    }

    /// Removes an instance; an automatic service goes with its last one.
    pub async fn remove_instance(&self, meta: Metadata, name: &str) -> Result<Option<String>, CommandError> {
        let account = meta.account.clone();
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        let service = projections
            .services
            .lock()
            .instance(&account, name)
            .map(|i| i.service.clone());
        self.instance_command(meta.clone(), name, InstanceCommand::Remove)
            .await?;
        let removed_service = service.filter(|service| {
            let services = projections.services.lock();
            services.service(&account, service).is_some_and(|s| s.auto)
                && services.attached(&account, service).next().is_none()
        });
        if let Some(service) = &removed_service {
            self.delete_auto_service(meta, service).await?;
        }
        Ok(removed_service)
    }

    async fn delete_auto_service(&self, meta: Metadata, name: &str) -> Result<(), CommandError> {
        let command = ServiceCommand::Delete {
            reason: ServiceDeleteReason::LastInstanceRemoved,
            attached: 0,
            force: false,
        };
        match self.service_command(meta, name, command).await {
            Ok(_) | Err(CommandError::Service(ServiceRejection::NotFound)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

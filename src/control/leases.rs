//! Leases: grant, keep-alive, revoke, time-to-live, list, and the start-up
//! recovery of keys left on ended leases.

use tenure_events::{AccountId, Bytes, LeaseId, Metadata};

use crate::actors::keyspace::{self, Deleted};
use crate::actors::lease::{self, Granted};
use crate::actors::{Activation, Cmd, CommandError};
use crate::domain::lease::LeaseRejection;

use super::{Control, Limit, FRESH_ID_ATTEMPTS};

/// A lease as `timetolive` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub lease: LeaseId,
    pub granted_ttl_s: i64,
    pub remaining_s: i64,
    /// Attached keys, when asked for.
    pub keys: Vec<Bytes>,
}

impl Control {
    /// Grants a lease; with `lease: None` the server picks a random ID.
    /// Refused if the account is at its `max_leases` limit.
    pub async fn grant(&self, meta: Metadata, lease: Option<LeaseId>, ttl_s: i64) -> Result<Granted, CommandError> {
        let account = meta.account.clone();
        let count = |p: &crate::actors::Projections| p.expiry.lock().count(&account);
        self.within_limit(&account, Limit::LEASES, count, || {
            self.grant_unchecked(meta, lease, ttl_s)
        })
        .await
    }

    async fn grant_unchecked(
        &self,
        meta: Metadata,
        lease: Option<LeaseId>,
        ttl_s: i64,
    ) -> Result<Granted, CommandError> {
        let hub = &self.hub;
        if let Some(id) = lease {
            let key = Self::lease_key(&meta.account, id);
            let cmd = Cmd::new(meta);
            return self
                .call(|reply| {
                    hub.leases
                        .route(hub, &key, Activation::Load, lease::Grant { ttl_s, cmd, reply })
                })
                .await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let id = if attempt == 1 {
                self.lease_ids.next()
            } else {
                LeaseId::random()
            };
            let key = Self::lease_key(&meta.account, id);
            let cmd = Cmd::new(meta.clone());
            let granted = self
                .call(|reply| {
                    hub.leases
                        .route(hub, &key, Activation::Fresh, lease::Grant { ttl_s, cmd, reply })
                })
                .await;
            match granted {
                Err(CommandError::Lease(LeaseRejection::AlreadyExists(_))) if attempt < FRESH_ID_ATTEMPTS => continue,
                other => return other,
            }
        }
    }

    /// Resets the lease's TTL; answers the granted TTL.
    pub async fn keep_alive(&self, meta: Metadata, lease: LeaseId) -> Result<i64, CommandError> {
        let (hub, key, cmd) = (&self.hub, Self::lease_key(&meta.account, lease), Cmd::new(meta));
        self.call(|reply| {
            hub.leases
                .route(hub, &key, Activation::Load, lease::KeepAlive { cmd, reply })
        })
        .await
    }

    /// Revokes the lease; answers once its keys are deleted.
    pub async fn revoke(&self, meta: Metadata, lease: LeaseId) -> Result<Deleted, CommandError> {
        let (hub, key, cmd) = (&self.hub, Self::lease_key(&meta.account, lease), Cmd::new(meta));
        self.call(|reply| {
            hub.leases
                .route(hub, &key, Activation::Load, lease::Revoke { cmd, reply })
        })
        .await
    }

    pub async fn time_to_live(
        &self,
        account: &AccountId,
        lease: LeaseId,
        keys: bool,
    ) -> Result<LeaseInfo, CommandError> {
        let (hub, key) = (&self.hub, Self::lease_key(account, lease));
        let ttl = self
            .call(|reply| {
                hub.leases
                    .route(hub, &key, Activation::Load, lease::GetTimeToLive { reply })
            })
            .await?;
        let keys = if keys {
            self.call(|reply| {
                hub.keyspaces
                    .route(hub, account, Activation::Load, keyspace::LeaseKeys { lease, reply })
            })
            .await?
        } else {
            Vec::new()
        };
        Ok(LeaseInfo {
            lease,
            granted_ttl_s: ttl.granted_ttl_s,
            remaining_s: ttl.remaining_s,
            keys,
        })
    }

    /// The account's live leases, in ID order, including every lease whose
    /// grant was acknowledged before this call.
    pub async fn leases(&self, account: &AccountId) -> Result<Vec<LeaseId>, CommandError> {
        Ok(self.read(|p| p.expiry.lock().leases(account)).await)
    }

    /// Start-up recovery: deletes the keys still attached to leases that
    /// have ended (the server stopped between a lease's end and the deletion
    /// of its keys). Runs after the projections have caught up with the log
    /// and before the server takes requests. Answers how many leases it
    /// cleaned up.
    pub async fn recover_lease_keys(&self) -> Result<usize, CommandError> {
        let hub = &self.hub;
        let accounts: Vec<AccountId> = hub.projections.catalog.lock().keyspaces().cloned().collect();
        let mut cleaned = 0;
        for account in accounts {
            let leases = self
                .call(|reply| {
                    hub.keyspaces
                        .route(hub, &account, Activation::Load, keyspace::LeasesWithKeys { reply })
                })
                .await?;
            for lease in leases {
                if hub.projections.expiry.lock().is_live(&Self::lease_key(&account, lease)) {
                    continue;
                }
                let span = tracing::info_span!("recover", lease = %lease, account = %account);
                let cmd = Cmd {
                    meta: Metadata::new(account.clone()),
                    span,
                };
                let cause = tenure_events::DeleteCause::LeaseEnded { lease };
                let deleted = self
                    .call(|reply| {
                        let msg = keyspace::DeleteLeaseKeys {
                            lease,
                            cause,
                            cmd,
                            reply,
                        };
                        hub.keyspaces.route(hub, &account, Activation::Load, msg)
                    })
                    .await?;
                tracing::warn!(lease = %lease, account = %account, keys = deleted.count,
                    "deleted keys left on an ended lease by an interrupted revoke or expiry");
                cleaned += 1;
            }
        }
        Ok(cleaned)
    }
}

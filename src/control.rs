//! The control plane's front door: one async method per command or query,
//! used by the HTTP API (and by tests). It routes to the actors and waits for
//! their answer; it holds no state of its own.

use std::sync::Arc;

use tenure_events::{AccountId, Bytes, LeaseId, Metadata};
use tenure_projections::LeaseKey;
use tokio::sync::Semaphore;

use crate::actors::keyspace::{self, Deleted, PutDone, RangeDone};
use crate::actors::lease::{self, Granted};
use crate::actors::{Activation, Cmd, CommandError, Hub, Reply};
use crate::domain::keyspace::{KeyRange, LeaseUpdate, RangeOptions};
use crate::domain::lease::LeaseRejection;
use crate::store::StoreError;

/// Commands and queries in flight at once. Past this, callers wait: this is
/// the bound behind every actor mailbox and the store's write queue.
pub const COMMANDS_IN_FLIGHT_MAX: usize = 16_384;

/// How often a server-chosen lease ID is drawn again if it is taken.
const FRESH_ID_ATTEMPTS: usize = 3;

/// A lease as `timetolive` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub lease: LeaseId,
    pub granted_ttl_s: i64,
    pub remaining_s: i64,
    /// Attached keys, when asked for.
    pub keys: Vec<Bytes>,
}

#[derive(Clone)]
pub struct Control {
    hub: Arc<Hub>,
    in_flight: Arc<Semaphore>,
    lease_ids: Arc<LeaseIds>,
}

/// Server-chosen lease IDs, increasing like etcd's: the wall-clock
/// millisecond at start-up in the high bits, a counter in the low 20. New
/// lease streams then sort after the existing ones, so creating one appends
/// to the end of the store's stream index instead of touching a random page.
/// Uniqueness does not rest on this: a grant on a taken ID conflicts and is
/// retried with a random one.
struct LeaseIds {
    next: std::sync::atomic::AtomicI64,
}

impl LeaseIds {
    fn new() -> LeaseIds {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        LeaseIds {
            next: std::sync::atomic::AtomicI64::new(((ms & ((1 << 43) - 1)) << 20).max(1)),
        }
    }

    fn next(&self) -> LeaseId {
        let raw = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LeaseId::new(raw).unwrap_or_else(LeaseId::random)
    }
}

impl Control {
    pub fn new(hub: Arc<Hub>) -> Control {
        Control {
            hub,
            in_flight: Arc::new(Semaphore::new(COMMANDS_IN_FLIGHT_MAX)),
            lease_ids: Arc::new(LeaseIds::new()),
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    async fn call<T: Send + 'static>(&self, send: impl FnOnce(Reply<T>)) -> Result<T, CommandError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| CommandError::Unavailable("the server is shutting down".into()))?;
        let (reply, answer) = Reply::oneshot();
        send(reply);
        answer
            .await
            .map_err(|_| CommandError::Unavailable("the entity stopped before answering; retry".into()))?
    }

    fn lease_key(account: &AccountId, lease: LeaseId) -> LeaseKey {
        LeaseKey {
            account: account.clone(),
            lease,
        }
    }

    /// Grants a lease; with `lease: None` the server picks a random ID.
    pub async fn grant(&self, meta: Metadata, lease: Option<LeaseId>, ttl_s: i64) -> Result<Granted, CommandError> {
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
        let projections = &self.hub.projections;
        projections.caught_up(self.hub.store.head()).await;
        Ok(projections.expiry.lock().leases(account))
    }

    /// Puts a key. `value: None` keeps its value; `lease` attaches it to a
    /// lease (which must be live), detaches it, or keeps its lease.
    pub async fn put(
        &self,
        meta: Metadata,
        key: Bytes,
        value: Option<Bytes>,
        lease: LeaseUpdate,
        prev_kv: bool,
    ) -> Result<PutDone, CommandError> {
        let hub = &self.hub;
        let account = meta.account.clone();
        let cmd = Cmd::new(meta);
        if let LeaseUpdate::Set(Some(id)) = lease {
            // Through the lease actor, which checks the lease is live.
            let lease_key = Self::lease_key(&account, id);
            let route = |reply| {
                let msg = lease::PutWithLease {
                    key,
                    value,
                    prev_kv,
                    cmd,
                    reply,
                };
                hub.leases.route(hub, &lease_key, Activation::Load, msg)
            };
            return self.call(route).await;
        }
        let route = |reply| {
            let msg = keyspace::Put {
                key,
                value,
                lease,
                prev_kv,
                cmd,
                reply,
            };
            hub.keyspaces.route(hub, &account, Activation::Load, msg)
        };
        self.call(route).await
    }

    /// Reads a range of keys with etcd's options.
    pub async fn range(
        &self,
        account: &AccountId,
        range: KeyRange,
        options: RangeOptions,
    ) -> Result<RangeDone, CommandError> {
        let hub = &self.hub;
        let route = |reply| {
            hub.keyspaces.route(
                hub,
                account,
                Activation::Load,
                keyspace::Range { range, options, reply },
            )
        };
        self.call(route).await
    }

    pub async fn delete_range(&self, meta: Metadata, range: KeyRange, prev_kv: bool) -> Result<Deleted, CommandError> {
        let hub = &self.hub;
        let account = meta.account.clone();
        let cmd = Cmd::new(meta);
        self.call(|reply| {
            hub.keyspaces.route(
                hub,
                &account,
                Activation::Load,
                keyspace::DeleteRange {
                    range,
                    prev_kv,
                    cmd,
                    reply,
                },
            )
        })
        .await
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

    /// The account's key space revision (etcd's header revision): at least
    /// the revision of every change acknowledged before this call.
    pub fn revision(&self, account: &AccountId) -> i64 {
        self.hub.revisions.get(account)
    }

    /// Whether the store still takes writes.
    pub fn health(&self) -> Result<(), StoreError> {
        self.hub.store.health()
    }
}

//! Leases: grant, keep-alive, revoke, time-to-live, list, and the start-up
//! recovery of keys left on ended leases.

use tenure_events::{AccountId, Bytes, LeaseId, Metadata};

use crate::actors::keyspace::{self, Deleted};
use crate::actors::lease::{self, Granted};
use crate::actors::{Activation, Cmd, CommandError};
use crate::domain::lease::LeaseRejection;
use tenure_projections::NotLive;

use super::{Activations, Control, Limit, Via, FRESH_ID_ATTEMPTS};

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
                    let cmd = cmd.clone();
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
            // A retry loads the lease (and the grant then answers if it exists).
            // The first attempt without an actor (the ID should be new);
            // one sent again, after an actor stopped, loads the lease.
            let activations = Activations::first(Activation::Fresh);
            let granted = self
                .call(|reply| {
                    let msg = lease::Grant {
                        ttl_s,
                        cmd: cmd.clone(),
                        reply,
                    };
                    match activations.next() {
                        Activation::Fresh => lease::grant_fresh(hub, key.clone(), msg),
                        activation => hub.leases.route(hub, &key, activation, msg),
                    }
                })
                .await;
            match granted {
                Err(CommandError::Lease(LeaseRejection::AlreadyExists(_))) if attempt < FRESH_ID_ATTEMPTS => continue,
                other => return other,
            }
        }
    }

    /// Resets the lease's TTL; answers the granted TTL.
    ///
    /// Not durable, by design: the renewal moves the lease's deadline in the
    /// expiry queue and nowhere else (no event, no fsync, no lease actor),
    /// once the queue has applied everything durable when the keep-alive
    /// arrived (so a grant acknowledged before is found, a revoke or expiry
    /// acknowledged before is seen). A restart gives every live lease its
    /// full TTL anyway. A keep-alive racing a revoke either renews the lease
    /// before the revoke is applied (the revoke still ends it) or finds it
    /// gone; one racing an expiry either renews it before the expiry driver
    /// takes it (which then does not) or finds it *ending* and answers
    /// "not found".
    pub async fn keep_alive(&self, meta: Metadata, lease: LeaseId) -> Result<i64, CommandError> {
        let key = Self::lease_key(&meta.account, lease);
        let renewed = self.read(|p| p.expiry.lock().renew(&key, self.hub.clock.now())).await;
        match renewed {
            Ok(ttl_s) => {
                self.hub.metrics.leases.renewed.inc();
                Ok(ttl_s)
            }
            Err(NotLive) => {
                tracing::info!(lease = %lease, account = %meta.account, outcome = "rejected", "keep-alive of a lease that is not live");
                Err(LeaseRejection::NotFound(lease).into())
            }
        }
    }

    /// [`Control::keep_alive`] where the timers run: on the node that
    /// runs them (this one, when it does; see `crate::cluster`). If that
    /// node cannot be reached, this one answers.
    pub async fn keep_alive_via(&self, meta: Metadata, lease: LeaseId, via: &Via) -> Result<i64, CommandError> {
        if let Some((url, cluster)) = self.leader_elsewhere(via) {
            let body = serde_json::json!({ "ID": lease.get().to_string() });
            match forward(cluster, &url, "/v3/lease/keepalive", via, &body, self.hub.store.head()).await {
                Ok(answer) => {
                    return match number(&answer, "TTL") {
                        0 => Err(LeaseRejection::NotFound(lease).into()),
                        ttl => Ok(ttl),
                    }
                }
                Err(e) => {
                    tracing::warn!(leader = %url, error = %e, "the timers' leader did not answer a keep-alive; answering here")
                }
            }
        }
        self.keep_alive(meta, lease).await
    }

    /// [`Control::time_to_live`] where the deadlines are kept: on the node
    /// that runs the timers (see [`Control::keep_alive_via`]).
    pub async fn time_to_live_via(
        &self,
        account: &AccountId,
        lease: LeaseId,
        keys: bool,
        via: &Via,
    ) -> Result<LeaseInfo, CommandError> {
        if let Some((url, cluster)) = self.leader_elsewhere(via) {
            let body = serde_json::json!({ "ID": lease.get().to_string(), "keys": keys });
            match forward(cluster, &url, "/v3/lease/timetolive", via, &body, self.hub.store.head()).await {
                Ok(answer) => {
                    let remaining_s = number(&answer, "TTL");
                    if remaining_s < 0 {
                        return Err(LeaseRejection::NotFound(lease).into());
                    }
                    let keys = match answer.get("keys").and_then(|k| k.as_array()) {
                        Some(keys) => keys
                            .iter()
                            .filter_map(|k| k.as_str())
                            .filter_map(|k| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, k).ok())
                            .map(Bytes::from)
                            .collect(),
                        None => Vec::new(),
                    };
                    return Ok(LeaseInfo {
                        lease,
                        granted_ttl_s: number(&answer, "grantedTTL"),
                        remaining_s,
                        keys,
                    });
                }
                Err(e) => {
                    tracing::warn!(leader = %url, error = %e, "the timers' leader did not answer a time-to-live; answering here")
                }
            }
        }
        self.time_to_live(account, lease, keys).await
    }

    /// Revokes the lease; answers once its keys are deleted.
    pub async fn revoke(&self, meta: Metadata, lease: LeaseId) -> Result<Deleted, CommandError> {
        let (hub, key, cmd) = (&self.hub, Self::lease_key(&meta.account, lease), Cmd::new(meta));
        self.call(|reply| {
            let cmd = cmd.clone();
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
        // The expiry queue knows the deadline (keep-alives move it there).
        let live = self
            .read(|p| {
                let now = hub.clock.now();
                p.expiry.lock().alive_at(&key, now).map(|l| (l, now))
            })
            .await;
        let Some((live, now)) = live else {
            return Err(LeaseRejection::NotFound(lease).into());
        };
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
            granted_ttl_s: live.ttl_s,
            // Whole seconds left, rounded down (as etcd does).
            remaining_s: (live.deadline - now).num_seconds(),
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
            // The account's live leases in ID order, read once: a search
            // in them costs far less than a hash lookup per lease (a
            // million of them after a restart).
            let live = hub.projections.expiry.lock().leases(&account);
            for lease in leases {
                if live.binary_search(&lease).is_ok() {
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
                            cause: cause.clone(),
                            cmd: cmd.clone(),
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

/// Sends a `/v3` lease request to the node running the timers, with the
/// caller's credentials, and answers its `result` object. That node first
/// applies the log up to `seen`, what this node has seen (a grant
/// acknowledged here is then known there).
async fn forward(
    cluster: &crate::cluster::Cluster,
    url: &str,
    path: &str,
    via: &Via,
    body: &serde_json::Value,
    seen: u64,
) -> Result<serde_json::Value, String> {
    let mut request = cluster
        .client()
        .post(format!("{}{path}", url.trim_end_matches('/')))
        .header(crate::cluster::FORWARDED_HEADER, "1")
        .header(crate::cluster::MIN_POSITION_HEADER, seen)
        .json(body);
    if let Some(authorization) = &via.authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    // A keep-alive answers one JSON line per request: {"result": {...}}.
    let line = text.lines().next().unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok(value.get("result").cloned().unwrap_or(value))
}

/// An etcd gateway integer (a string, absent when 0).
fn number(answer: &serde_json::Value, field: &str) -> i64 {
    match answer.get(field) {
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

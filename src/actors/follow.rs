//! What a node of a shared log does with each batch its projector applies,
//! besides the projections (nothing, on an embedded log: every event there
//! was written by this node's own actors).
//!
//! - **Key spaces follow.** A key space actor serves reads from its state,
//!   so one that another node has written to must catch up: each batch
//!   tells every active key space it touches the stream version it reached,
//!   with the batch itself, whose events of that stream the key space folds
//!   without reading its stream ([`keyspace::Follow`]), before the
//!   projections' checkpoint moves past it. A read that waited for the
//!   checkpoint (`min_position`) is queued behind that notice, so it sees
//!   the write. An active lease actor that
//!   missed an event of its stream stops ([`lease::Stale`]): it checks
//!   liveness for puts, and must not vouch for a lease another node ended.
//!   Other entity actors are not told: their reads come from the
//!   projections, and a command decided on a stale state conflicts on
//!   append and is carried out again on the entity reloaded
//!   (`Control::call`).
//! - **Keys put on an ended lease go.** The lease actor's check that a
//!   lease is live and the key space's put are two steps, and on a shared
//!   log the lease may end on another node in between (its key deletion
//!   may then run before the put is appended). The log orders them: the
//!   node running the timers, seeing a `KeyPut` with a lease the expiry
//!   queue no longer holds (it applied the lease's end before), deletes
//!   that lease's keys.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tenure_events::{AccountId, DeleteCause, KeyspaceEvent, LeaseId, Metadata, RecordedEvent};
use tenure_projections::LeaseKey;

use super::keyspace::{self, Deleted, Follow};
use super::lease;
use super::{Cmd, CommandError, Hub, Reply};
use crate::store::Batch;

/// Has the projector tell this node's actors of each batch, on a shared log.
pub fn install(hub: &Arc<Hub>) {
    if !hub.store.is_shared() {
        return;
    }
    let weak = Arc::downgrade(hub);
    hub.projections.set_follower(Box::new(move |events| {
        if let Some(hub) = weak.upgrade() {
            follow(&hub, events);
        }
    }));
}

fn follow(hub: &Arc<Hub>, batch: &Batch) {
    let events: &[RecordedEvent] = batch;
    let leading = hub.leading.load(Ordering::Acquire);
    let mut heads: HashMap<&AccountId, u64> = HashMap::new();
    let mut leased: Vec<(AccountId, LeaseId)> = Vec::new();
    for e in events.iter().filter(|e| e.stream.category() == "keyspace") {
        let head = heads.entry(&e.account).or_default();
        *head = (*head).max(e.version);
        if leading && e.event_type == "KeyPut" {
            if let Ok(Some(KeyspaceEvent::Put(put))) = e.decode_as::<KeyspaceEvent>() {
                if let Some(lease) = put.lease {
                    leased.push((e.account.clone(), lease));
                }
            }
        }
    }
    for (account, version) in heads {
        let events = batch.clone();
        hub.keyspaces.tell_if_active(account, Follow { version, events });
    }
    for e in events.iter().filter(|e| e.stream.category() == "lease") {
        let id = e
            .stream
            .as_str()
            .rsplit('/')
            .next()
            .and_then(|id| id.parse::<LeaseId>().ok());
        if let Some(lease) = id {
            let key = LeaseKey {
                account: e.account.clone(),
                lease,
            };
            hub.leases.tell_if_active(&key, lease::Stale { version: e.version });
        }
    }
    if leased.is_empty() {
        return;
    }
    let ended: Vec<(AccountId, LeaseId)> = {
        let expiry = hub.projections.expiry.lock();
        leased
            .into_iter()
            .filter(|(account, lease)| {
                !expiry.is_live(&LeaseKey {
                    account: account.clone(),
                    lease: *lease,
                })
            })
            .collect()
    };
    for (account, lease) in ended {
        let span = tracing::info_span!("orphan", lease = %lease, account = %account);
        let cmd = Cmd {
            meta: Metadata::new(account.clone()),
            span,
        };
        let reply = Reply::new(move |result: Result<Deleted, CommandError>| match result {
            Ok(deleted) => tracing::warn!(lease = %lease, keys = deleted.count,
                "deleted keys put on a lease that had ended on another node"),
            Err(e) => tracing::error!(lease = %lease, error = %e, "cannot delete keys put on an ended lease"),
        });
        keyspace::delete_lease_keys(hub, &account, lease, DeleteCause::LeaseEnded { lease }, cmd, reply);
    }
}

//! Snapshots: what each projection holds that the log decides, in a form
//! with no index, heap or cache, which the server encodes and stores with
//! its position (see `src/snapshot/` in the server) and restores instead of
//! folding the log up to that position.
//!
//! A snapshot is a plain value: it owns its data, derives `serde`'s traits
//! with a field order that is the encoding (no `skip`, no `flatten`, no
//! untagged enum: a binary encoding reads fields by position), and keeps
//! identifiers in their raw form (lease IDs as `i64`, times as seconds and
//! nanoseconds). Restoring checks what it reads ([`RestoreError`]): a
//! snapshot comes from disk and is never trusted to be well formed.
//!
//! What is left out is what the log does not decide: lease deadlines (they
//! count from the restoring process's floor, recomputed as a fold would:
//! `max(event time, floor) + ttl`), the routing table's domain (the
//! server's setting), "changed" flags and checkpoints (the snapshot has
//! one position for all).
//!
//! Changing any type here changes the encoding: bump the server's
//! snapshot format version (`snapshot::FORMAT_VERSION`) with it, so that an
//! older snapshot is discarded and rebuilt from the log, not misread.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenure_events::service::PortRule;
use tenure_events::workload::{DeleteReason, ResultState};
use tenure_events::{AccountId, BackendMode, LeaseId, Limits, ShareMode};
use uuid::Uuid;

use crate::{Catalog, Directory, ExpiryQueue, ProjectionSet, RoutingTable, Services, Shares, Workloads};

/// A snapshot that cannot be restored: what in it is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError(pub String);

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the snapshot is not well formed: {}", self.0)
    }
}

impl std::error::Error for RestoreError {}

pub(crate) fn invalid<T>(what: impl Into<String>) -> Result<T, RestoreError> {
    Err(RestoreError(what.into()))
}

/// A moment, exactly (a `DateTime<Utc>` as seconds and nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time(pub i64, pub u32);

impl From<DateTime<Utc>> for Time {
    fn from(t: DateTime<Utc>) -> Time {
        Time(t.timestamp(), t.timestamp_subsec_nanos())
    }
}

impl Time {
    pub fn to_datetime(self) -> Result<DateTime<Utc>, RestoreError> {
        match DateTime::from_timestamp(self.0, self.1) {
            Some(t) => Ok(t),
            None => invalid(format!("time {}.{:09} is out of range", self.0, self.1)),
        }
    }
}

pub(crate) fn lease_id(raw: i64) -> Result<LeaseId, RestoreError> {
    match LeaseId::new(raw) {
        Some(id) => Ok(id),
        None => invalid(format!("lease ID {raw} is not positive")),
    }
}

/// Every projection of a [`ProjectionSet`] at one position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSnapshot {
    pub expiry: ExpirySnapshot,
    pub catalog: Vec<AccountId>,
    pub directory: Vec<AccountSnapshot>,
    pub shares: Vec<ShareSnapshot>,
    pub services: ServicesSnapshot,
    pub workloads: Vec<WorkloadSnapshot>,
    pub routing: RoutingSnapshot,
}

/// The live leases, by account: each `(lease, ttl_s, time, granted)` where
/// time is that of the lease's last `LeaseGranted` or (old logs)
/// `LeaseKeptAlive` event and `granted` the stream version of its grant.
/// Never an in-memory renewal or reschedule: only what the log says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpirySnapshot {
    pub accounts: Vec<(AccountId, Vec<SnapshotLease>)>,
}

/// A live lease in an [`ExpirySnapshot`]: `(lease, ttl_s, time, granted)`.
pub type SnapshotLease = (i64, i64, Time, u64);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSnapshot {
    pub name: AccountId,
    pub created_at: Time,
    pub limits: Limits,
    pub public_key: Option<(String, Time)>,
    /// (id, label, created_at, sha256), by id.
    pub tokens: Vec<(String, Option<String>, Time, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSnapshot {
    pub token: String,
    pub owner: AccountId,
    pub mode: ShareMode,
    pub backend_mode: BackendMode,
    pub target: String,
    pub unique_name: bool,
    pub reserved_at: Time,
    /// (session, lease, started_at, address).
    pub session: Option<(Uuid, i64, Time, Option<String>)>,
    /// (grant ID, grantee, sha256, granted_at), by grant ID.
    pub grants: Vec<(String, AccountId, String, Time)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesSnapshot {
    /// By (account, name as the stream names it).
    pub services: Vec<(AccountId, String, ServiceSnapshot)>,
    pub instances: Vec<(AccountId, String, InstanceSnapshot)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    pub uuid: Uuid,
    pub name: String,
    pub fqdn: String,
    pub ports: Vec<PortRule>,
    pub soft_limit: Option<u16>,
    pub hard_limit: Option<u16>,
    pub auto: bool,
    pub created_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSnapshot {
    pub uuid: Uuid,
    pub name: String,
    pub service: String,
    pub address: String,
    pub lease: i64,
    pub registered_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSnapshot {
    pub id: u64,
    pub uuid: Uuid,
    pub node: String,
    pub owner: AccountId,
    pub kind: String,
    /// JSON text (a binary encoding cannot carry a self-describing value).
    pub data: String,
    pub created: Time,
    pub duration_s: i64,
    pub expires_at: Time,
    pub signature: String,
    pub to_delete: Option<DeleteReason>,
    /// (state, error, data as JSON text, at).
    pub result: Option<(ResultState, String, String, Time)>,
    pub seq: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingSnapshot {
    /// Leases live in the log, by account.
    pub live_leases: Vec<(AccountId, Vec<i64>)>,
    /// (account, name, fqdn, redirect_http).
    pub services: Vec<(AccountId, String, String, bool)>,
    /// (account, name, service, address, lease).
    pub instances: Vec<(AccountId, String, String, String, i64)>,
    pub shares: Vec<RoutedShareSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedShareSnapshot {
    pub token: String,
    pub owner: AccountId,
    pub mode: ShareMode,
    pub backend_mode: BackendMode,
    pub target: String,
    pub session_lease: Option<i64>,
    pub session_address: Option<String>,
    pub grants: Vec<String>,
}

impl ProjectionSet {
    /// What every projection holds, for a snapshot at their position.
    pub fn snapshot(&self) -> SetSnapshot {
        SetSnapshot {
            expiry: self.expiry.snapshot(),
            catalog: self.catalog.snapshot(),
            directory: self.directory.snapshot(),
            shares: self.shares.snapshot(),
            services: self.services.snapshot(),
            workloads: self.workloads.snapshot(),
            routing: self.routing.snapshot(),
        }
    }

    /// The projections a snapshot taken at `position` holds: as if the log
    /// up to `position` had been folded, lease deadlines counting from no
    /// earlier than `floor`, shares served at `TOKEN.{domain}`.
    pub fn restore(
        snapshot: SetSnapshot,
        position: u64,
        floor: DateTime<Utc>,
        domain: &str,
    ) -> Result<ProjectionSet, RestoreError> {
        Ok(ProjectionSet {
            expiry: ExpiryQueue::restore(snapshot.expiry, position, floor)?,
            catalog: Catalog::restore(snapshot.catalog, position),
            directory: Directory::restore(snapshot.directory, position)?,
            shares: Shares::restore(snapshot.shares, position)?,
            services: Services::restore(snapshot.services, position)?,
            workloads: Workloads::restore(snapshot.workloads, position)?,
            routing: RoutingTable::restore(snapshot.routing, position, domain)?,
        })
    }
}

/// Checks that `items` are in strictly increasing order of `key` (what a
/// snapshot writes from an ordered map), so that a restored map holds
/// exactly what was written, no entry silently replacing another.
pub(crate) fn strictly_ordered<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K, what: &str) -> Result<(), RestoreError> {
    for pair in items.windows(2) {
        if key(&pair[0]) >= key(&pair[1]) {
            return invalid(format!("{what} are not in strictly increasing order"));
        }
    }
    Ok(())
}

/// Builds a map from entries in strictly increasing key order.
pub(crate) fn ordered_map<K: Ord, V>(entries: Vec<(K, V)>, what: &str) -> Result<BTreeMap<K, V>, RestoreError> {
    let mut map = BTreeMap::new();
    for (k, v) in entries {
        if map.last_key_value().is_some_and(|(prev, _)| *prev >= k) {
            return invalid(format!("{what} are not in strictly increasing order"));
        }
        map.insert(k, v);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_events::{
        AccountCreated, EventSet, KeyPut, KeyspaceEvent, LeaseEvent, LeaseGranted, LeaseKeptAlive, LeaseRevoked,
        Metadata, NewEvent, RecordedEvent, StreamId,
    };

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()
    }

    fn account(name: &str) -> AccountId {
        name.parse().unwrap_or_else(|_| AccountId::default_account())
    }

    fn recorded<E: EventSet>(
        position: u64,
        stream: StreamId,
        account: &AccountId,
        e: &E,
        at: DateTime<Utc>,
    ) -> RecordedEvent {
        RecordedEvent::from_new(
            NewEvent::new(e, &Metadata::new(account.clone()), at),
            stream,
            1,
            position,
        )
    }

    /// A little of each: grants and keep-alives in two accounts, a revoke,
    /// a key, an account.
    fn log() -> Vec<RecordedEvent> {
        let mut events = Vec::new();
        let mut n = 0;
        let mut push = |e: RecordedEvent| events.push(e);
        for (i, name) in ["alice", "bob", "alice", "bob", "alice"].iter().enumerate() {
            let a = account(name);
            let lease = LeaseId::new(i as i64 + 1).unwrap_or_else(|| unreachable!());
            n += 1;
            let granted = LeaseEvent::from(LeaseGranted {
                lease,
                ttl_s: 10 + i as i64,
                requested_ttl_s: 10,
            });
            push(recorded(n, StreamId::lease(&a, lease), &a, &granted, t(i as i64)));
            if i % 2 == 0 {
                n += 1;
                let kept = LeaseEvent::from(LeaseKeptAlive { lease });
                push(recorded(n, StreamId::lease(&a, lease), &a, &kept, t(100 + i as i64)));
            }
        }
        let a = account("alice");
        n += 1;
        let revoked = LeaseEvent::from(LeaseRevoked {
            lease: LeaseId::new(3).unwrap_or_else(|| unreachable!()),
        });
        push(recorded(
            n,
            StreamId::lease(&a, LeaseId::new(3).unwrap_or_else(|| unreachable!())),
            &a,
            &revoked,
            t(200),
        ));
        n += 1;
        let put = KeyspaceEvent::from(KeyPut {
            key: "k".into(),
            value: "v".into(),
            lease: None,
            revision: 2,
        });
        push(recorded(n, StreamId::keyspace(&a), &a, &put, t(201)));
        n += 1;
        let created = tenure_events::AccountEvent::from(AccountCreated {
            name: account("carol"),
            limits: Limits::UNLIMITED,
        });
        push(recorded(
            n,
            StreamId::account(&account("carol")),
            &account("carol"),
            &created,
            t(202),
        ));
        events
    }

    /// At every position of the log: the projections restored from a
    /// snapshot there, then fed the rest, end exactly where the fold of the
    /// whole log ends, deadlines included.
    #[test]
    fn restoring_a_snapshot_then_folding_the_tail_equals_folding_the_whole_log() {
        let log = log();
        let floor = t(50);
        let mut whole = ProjectionSet::new(floor, "example.test");
        for e in &log {
            whole.apply(e);
        }
        for cut in 0..=log.len() {
            let mut head = ProjectionSet::new(floor, "example.test");
            for e in &log[..cut] {
                head.apply(e);
            }
            let position = log[..cut].last().map_or(0, |e| e.position);
            let mut restored = ProjectionSet::restore(head.snapshot(), position, floor, "example.test")
                .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(restored.snapshot(), head.snapshot(), "cut {cut}");
            for e in &log[cut..] {
                restored.apply(e);
            }
            assert_eq!(restored.snapshot(), whole.snapshot(), "cut {cut}");
            assert_eq!(restored.digests(), whole.digests(), "cut {cut}");
            let deadlines =
                |s: &ProjectionSet| -> Vec<_> { s.expiry.iter_live().map(|(k, l)| (k.clone(), l)).collect() };
            assert_eq!(deadlines(&restored), deadlines(&whole), "cut {cut}");
        }
        // Deadlines count from the restoring process's floor.
        let later =
            ProjectionSet::restore(whole.snapshot(), 9, t(1000), "example.test").unwrap_or_else(|e| panic!("{e}"));
        let first = later.expiry.iter_live().next().map(|(_, l)| l.deadline);
        assert_eq!(first.map(|d| d.timestamp()), Some(t(1000).timestamp() + 10));
    }

    #[test]
    fn a_snapshot_out_of_order_or_with_a_bad_id_is_refused() {
        let mut whole = ProjectionSet::new(t(0), "example.test");
        for e in &log() {
            whole.apply(e);
        }
        let good = whole.snapshot();
        let mut swapped = good.clone();
        swapped.expiry.accounts.swap(0, 1);
        assert!(ProjectionSet::restore(swapped, 9, t(0), "x").is_err());
        let mut zero = good.clone();
        zero.expiry.accounts[0].1[0].0 = 0;
        assert!(ProjectionSet::restore(zero, 9, t(0), "x").is_err());
        let mut time = good;
        time.expiry.accounts[0].1[0].2 = Time(i64::MAX, 0);
        assert!(ProjectionSet::restore(time, 9, t(0), "x").is_err());
    }
}

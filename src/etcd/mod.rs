//! etcd 3.4's API semantics, shared by the two ways in: the JSON gateway
//! (`api::v3`, POSTs under `/v3`) and the gRPC server (`grpc`, what
//! `etcdctl` and clientv3 speak). Each turns its wire format into these
//! calls and their answers back; the checks etcd makes (in etcd's order),
//! the mapping of our refusals to etcd's errors and the identity in every
//! reply header live here once.

mod error;

use tenure_events::{AccountId, Bytes, LeaseId, Metadata};

pub use error::{Code, EtcdError};

use crate::actors::keyspace::{Deleted, PutDone, RangeDone};
use crate::actors::lease::Granted;
use crate::actors::CommandError;
use crate::control::{Control, LeaseInfo, Via};
use crate::domain::keyspace::{KeyRange, LeaseUpdate, RangeOptions};
use crate::domain::lease::LeaseRejection;

/// The version `Maintenance.Status` reports: the etcd API tenure serves.
pub const VERSION: &str = "3.4.0";

/// What every reply header says besides the revision. Each account is a
/// cluster of its own to its clients (its key space and leases are all
/// they see), with one member, this node, in term 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Identity {
    pub fn of(account: &AccountId) -> Identity {
        Identity {
            cluster_id: fnv1a(&format!("tenure/cluster/{account}")),
            member_id: fnv1a("tenure/member"),
            raft_term: 1,
        }
    }
}

/// A lease ID from the wire: tenure's IDs are positive.
pub fn lease_id(raw: i64) -> Option<LeaseId> {
    LeaseId::new(raw)
}

/// A count for an int64 field.
pub fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `key` and `range_end` as etcd reads them (one key, a range, a prefix,
/// or every key from `key` with `range_end` `\0`).
pub fn key_range(key: Vec<u8>, range_end: Vec<u8>) -> Result<KeyRange, EtcdError> {
    if key.is_empty() && range_end.is_empty() {
        return Err(EtcdError::invalid("etcdserver: key is not provided"));
    }
    Ok(KeyRange {
        key: Bytes(key),
        range_end: Bytes(range_end),
    })
}

/// A put as etcd's `PutRequest` asks it.
#[derive(Clone, Debug, Default)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

/// A put, checked: what the key space is asked to do.
pub struct PutOp {
    pub key: Bytes,
    pub value: Option<Bytes>,
    pub lease: LeaseUpdate,
    pub prev_kv: bool,
}

/// etcd's checks of a put, in etcd's order (also a put inside a txn).
pub fn put_op(req: Put) -> Result<PutOp, EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::invalid("etcdserver: key is not provided"));
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(EtcdError::invalid("etcdserver: value is provided"));
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(EtcdError::invalid("etcdserver: lease is provided"));
    }
    let lease = match (req.ignore_lease, req.lease) {
        (true, _) => LeaseUpdate::Keep,
        (false, 0) => LeaseUpdate::Set(None),
        (false, raw) => LeaseUpdate::Set(Some(lease_id(raw).ok_or_else(EtcdError::lease_not_found)?)),
    };
    Ok(PutOp {
        key: Bytes(req.key),
        value: (!req.ignore_value).then_some(Bytes(req.value)),
        lease,
        prev_kv: req.prev_kv,
    })
}

/// etcd's `checkTxnRequest` for one level of a txn, in its order: at most
/// `max_ops` compares and operations on each branch, then every compare
/// names a key. Answers how many operations a nested txn may have (what
/// this level leaves).
pub fn check_txn_level<'a>(
    compares: usize,
    success: usize,
    failure: usize,
    mut compare_keys: impl Iterator<Item = &'a [u8]>,
    max_ops: usize,
) -> Result<usize, EtcdError> {
    let ops = compares.max(success).max(failure);
    if ops > max_ops {
        return Err(EtcdError::invalid("etcdserver: too many operations in txn request"));
    }
    if compare_keys.any(<[u8]>::is_empty) {
        return Err(EtcdError::invalid("etcdserver: key is not provided"));
    }
    Ok(max_ops - ops)
}

/// A txn operation that holds no request: etcd answers this.
pub fn empty_txn_op() -> EtcdError {
    EtcdError::invalid("etcdserver: key not found")
}

/// Puts a key; answers the key and the put's outcome.
pub async fn put(control: &Control, meta: Metadata, req: Put) -> Result<(Bytes, PutDone), EtcdError> {
    let op = put_op(req)?;
    let done = control
        .put(meta, op.key.clone(), op.value, op.lease, op.prev_kv)
        .await?;
    Ok((op.key, done))
}

/// Reads a range, at a past `revision` if asked (tenure compacts nothing);
/// the answer's revision is the current one, as in etcd's header.
pub async fn range(
    control: &Control,
    account: &AccountId,
    range: KeyRange,
    options: RangeOptions,
    revision: i64,
) -> Result<RangeDone, EtcdError> {
    let done = control.range_at(account, range, options, revision).await?;
    if revision > done.revision {
        return Err(EtcdError::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ));
    }
    Ok(done)
}

/// Deletes a range of keys.
pub async fn delete_range(
    control: &Control,
    meta: Metadata,
    range: KeyRange,
    prev_kv: bool,
) -> Result<Deleted, EtcdError> {
    Ok(control.delete_range(meta, range, prev_kv).await?)
}

/// Grants a lease, with the ID asked for (`0`: one chosen here).
pub async fn grant(control: &Control, meta: Metadata, id: i64, ttl_s: i64) -> Result<Granted, EtcdError> {
    let id = match id {
        0 => None,
        raw => Some(lease_id(raw).ok_or_else(|| EtcdError::invalid("tenure: a lease ID must be positive"))?),
    };
    Ok(control.grant(meta, id, ttl_s).await?)
}

/// Revokes a lease; answers once its keys are deleted.
pub async fn revoke(control: &Control, meta: Metadata, id: i64) -> Result<Deleted, EtcdError> {
    let lease = lease_id(id).ok_or_else(EtcdError::lease_not_found)?;
    Ok(control.revoke(meta, lease).await?)
}

/// Renews a lease: its TTL, or 0 if it is not live (etcd answers a
/// keep-alive of an unknown lease with TTL 0, not an error).
pub async fn keep_alive(control: &Control, meta: Metadata, id: i64, via: &Via) -> Result<i64, EtcdError> {
    let Some(lease) = lease_id(id) else {
        return Ok(0);
    };
    match control.keep_alive_via(meta, lease, via).await {
        Ok(ttl) => Ok(ttl),
        Err(CommandError::Lease(LeaseRejection::NotFound(_))) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// A lease's TTLs (and keys, if asked); `None` if it is not live (etcd
/// answers TTL -1, not an error).
pub async fn time_to_live(
    control: &Control,
    account: &AccountId,
    id: i64,
    keys: bool,
    via: &Via,
) -> Result<Option<LeaseInfo>, EtcdError> {
    let Some(lease) = lease_id(id) else {
        return Ok(None);
    };
    match control.time_to_live_via(account, lease, keys, via).await {
        Ok(info) => Ok(Some(info)),
        Err(CommandError::Lease(LeaseRejection::NotFound(_))) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

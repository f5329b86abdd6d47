//! An account's key space: etcd's flat, ordered map of byte keys with a
//! revision counter, each key optionally attached to one lease.
//!
//! Revisions follow etcd: an empty key space is at revision 1; every put, and
//! every delete that removes at least one key, moves it up by one; all the
//! keys one command deletes (a range, a lease's keys) share one revision,
//! and so do all the changes of one txn (`txn`).
//!
//! **The events of one command share its revision.** A command's first
//! event carries the next revision; every other event it records carries
//! the same one. So an event's revision is either the state's (it belongs to
//! the same command as the event before it) or the next; no key is put
//! twice at one revision (etcd refuses such a txn; it does let one delete
//! a key and put it, or put it and delete it: see `txn`), and nothing
//! shares revision 1, the empty key space's. Logs written before txns (each put one revision up, deletions
//! of one command sharing one) follow this rule as they are.
//!
//! Whether a lease is live is not known here: the lease actor checks that
//! before it forwards a put with a lease, or a txn with one (see
//! `actors::lease`).

mod key;
mod snapshot;
pub mod txn;

pub use snapshot::{Blob, KeyBlob, KeyspaceSnapshot, SnapshotKey, SnapshotOf};

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, ControlFlow};

use chrono::{DateTime, Utc};
use tenure_events::{Bytes, DeleteCause, KeyDeleted, KeyPut, KeyspaceEvent, LeaseId};
use tenure_projections::compact::Inserts;

use super::Aggregate;
use key::Key;

/// Keys one lease may hold: revoking or expiring a lease deletes all of them
/// in one append, and this keeps that append (and its transaction) bounded.
pub const MAX_KEYS_PER_LEASE: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Changes since creation (1 when created), as etcd counts.
    pub version: i64,
    pub lease: Option<LeaseId>,
}

/// A set of keys, in etcd's terms: `key` alone when `range_end` is empty;
/// every key >= `key` when `range_end` is `"\0"`; otherwise `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub key: Bytes,
    pub range_end: Bytes,
}

impl KeyRange {
    pub fn single(key: impl Into<Bytes>) -> KeyRange {
        KeyRange {
            key: key.into(),
            range_end: Bytes::default(),
        }
    }

    /// Every key starting with `prefix` (all keys for an empty prefix).
    pub fn prefix(prefix: impl Into<Bytes>) -> KeyRange {
        let key: Bytes = prefix.into();
        let range_end = Bytes(prefix_end(key.as_slice()));
        KeyRange { key, range_end }
    }

    fn is_single(&self) -> bool {
        self.range_end.is_empty()
    }

    fn bounds(&self) -> Option<KeyBounds<'_>> {
        let start = Bound::Included(self.key.as_slice());
        match self.range_end.as_slice() {
            [] => Some((start, Bound::Included(self.key.as_slice()))),
            [0] => Some((start, Bound::Unbounded)),
            end if end <= self.key.as_slice() => None,
            end => Some((start, Bound::Excluded(end))),
        }
    }
}

/// The lower and upper bound of a range of keys.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The smallest key greater than every key with this prefix (etcd's
/// `GetPrefixRangeEnd`); `"\0"`, meaning no upper bound, when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The revision of a key space event: the put's, or that of the command
/// that deleted the key (shared by all the keys it deleted).
pub fn revision_of(event: &KeyspaceEvent) -> i64 {
    match event {
        KeyspaceEvent::Put(e) => e.revision,
        KeyspaceEvent::Deleted(e) => e.revision,
    }
}

/// What a put does to the key's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseUpdate {
    /// Attach the key to this lease (the caller has checked that it is live),
    /// or detach it from any lease with `None`.
    Set(Option<LeaseId>),
    /// Keep the key's lease (etcd's `ignore_lease`): the key must exist.
    Keep,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyspaceCommand {
    /// Create or replace a key. `value: None` keeps its value (etcd's
    /// `ignore_value`): the key must exist.
    Put {
        key: Bytes,
        value: Option<Bytes>,
        lease: LeaseUpdate,
        /// The account's `max_keys` limit (-1: none): a put creating a key
        /// beyond it is refused.
        max_keys: i64,
    },
    DeleteRange {
        range: KeyRange,
    },
    /// Delete every key attached to `lease` (it was revoked or expired).
    DeleteLeaseKeys {
        lease: LeaseId,
        cause: DeleteCause,
    },
    /// etcd's Txn (`Keyspace::txn` also gives its answer).
    Txn {
        txn: txn::Txn,
        context: txn::TxnContext,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyspaceRejection {
    #[error("key is not provided")]
    EmptyKey,
    /// A put that keeps the value or the lease of a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    #[error("lease {lease} already holds the maximum of {max} keys")]
    TooManyKeysForLease { lease: LeaseId, max: usize },
    /// The account holds as many keys as its `max_keys` limit allows.
    #[error("the account has reached its limit of {max} keys (max_keys)")]
    KeyLimitReached { max: i64 },
    /// A txn puts a key twice, or puts and deletes it.
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A txn has more compares, or operations in a branch, than allowed.
    #[error("too many operations in txn request")]
    TooManyOps,
    /// A put of a txn names a lease that is not live.
    #[error("requested lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A range of a txn asks for a revision after the key space's.
    #[error("required revision is a future revision")]
    FutureRevision,
}

/// How a range read orders its keys (etcd's `sort_order`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

/// What a range read orders its keys by (etcd's `sort_target`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// etcd's range options. Revision bounds of 0 are no bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many keys (0: no limit).
    pub limit: usize,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Count the keys, return none.
    pub count_only: bool,
    /// Leave the values out.
    pub keys_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

impl RangeOptions {
    pub fn limit(limit: usize) -> RangeOptions {
        RangeOptions {
            limit,
            ..RangeOptions::default()
        }
    }

    fn keeps(&self, kv: &KeyValue) -> bool {
        let above = |v: i64, min: i64| min == 0 || v >= min;
        let below = |v: i64, max: i64| max == 0 || v <= max;
        above(kv.mod_revision, self.min_mod_revision)
            && below(kv.mod_revision, self.max_mod_revision)
            && above(kv.create_revision, self.min_create_revision)
            && below(kv.create_revision, self.max_create_revision)
    }

    fn sorts(&self) -> Option<(SortTarget, SortOrder)> {
        // As etcd: a target other than the key sorts ascending by default,
        // and keys already come in ascending key order.
        let order = match (self.sort_order, self.sort_target) {
            (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => return None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        };
        Some((self.sort_target, order))
    }
}

/// The answer to a range read.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RangeResult {
    pub kvs: Vec<(Bytes, KeyValue)>,
    /// How many keys are in the range, whatever the limit.
    pub count: usize,
    /// Whether the limit left keys out.
    pub more: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyspace {
    revision: i64,
    kvs: BTreeMap<Key, KeyValue>,
    /// The keys attached to each lease that has some. Most leases hold one
    /// key (a service instance, a lock): a B-tree set for it would take a
    /// whole node (~290 bytes) where [`LeaseKeys::One`] takes 24.
    by_lease: BTreeMap<LeaseId, LeaseKeys>,
    /// Keys and leases with keys added since `kvs` and `by_lease` were
    /// last rebuilt with full nodes ([`Keyspace::compact`]).
    inserts: Inserts,
}

/// What one event changed in a key space: the revision before it and the
/// key's entry before it (see [`Keyspace::evolve_undoable`]).
#[derive(Debug)]
pub struct Undo {
    revision: i64,
    key: Key,
    previous: Option<KeyValue>,
}

/// The keys of one lease; one key is always `One` (never a set of one),
/// so that equal key spaces are equal values.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LeaseKeys {
    One(Key),
    Many(BTreeSet<Key>),
}

impl LeaseKeys {
    fn len(&self) -> usize {
        match self {
            LeaseKeys::One(_) => 1,
            LeaseKeys::Many(keys) => keys.len(),
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        match self {
            LeaseKeys::One(one) => one.as_slice() == key,
            LeaseKeys::Many(keys) => keys.contains(key),
        }
    }

    /// In key order.
    fn to_vec(&self) -> Vec<Bytes> {
        match self {
            LeaseKeys::One(one) => vec![one.to_bytes()],
            LeaseKeys::Many(keys) => keys.iter().map(Key::to_bytes).collect(),
        }
    }

    fn insert(&mut self, key: Key) {
        match self {
            LeaseKeys::One(one) if *one == key => {}
            LeaseKeys::One(one) => {
                let one = std::mem::replace(one, Key::new(&[]));
                *self = LeaseKeys::Many(BTreeSet::from([one, key]));
            }
            LeaseKeys::Many(keys) => {
                keys.insert(key);
            }
        }
    }

    /// Removes `key`; answers whether no key is left.
    fn remove(&mut self, key: &[u8]) -> bool {
        let LeaseKeys::Many(keys) = self else {
            return matches!(self, LeaseKeys::One(one) if one.as_slice() == key);
        };
        keys.remove(key);
        if keys.len() == 1 {
            if let Some(last) = keys.pop_first() {
                *self = LeaseKeys::One(last);
            }
        }
        self.len() == 0
    }
}

impl Default for Keyspace {
    fn default() -> Keyspace {
        Keyspace {
            revision: 1,
            kvs: BTreeMap::new(),
            by_lease: BTreeMap::new(),
            inserts: Inserts::default(),
        }
    }
}

impl Keyspace {
    /// The revision of the last change (1 for an empty, never changed space).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.kvs.get(key)
    }

    fn keys_in<'a>(&'a self, range: &KeyRange) -> Box<dyn Iterator<Item = (&'a Key, &'a KeyValue)> + 'a> {
        if range.is_single() {
            return Box::new(self.kvs.get_key_value(range.key.as_slice()).into_iter());
        }
        match range.bounds() {
            Some(bounds) => Box::new(self.kvs.range::<[u8], _>(bounds)),
            None => Box::new(std::iter::empty()),
        }
    }

    /// The keys in `range`, at most `limit` of them (0: no limit).
    pub fn range(&self, range: &KeyRange, limit: usize) -> RangeResult {
        self.range_with(range, &RangeOptions::limit(limit))
    }

    /// The keys in `range` as etcd's Range answers them: `count` is every key
    /// in the range; the revision filters, then the sort, then the limit
    /// decide which of them are returned, and `more` says the limit left
    /// some out.
    pub fn range_with(&self, range: &KeyRange, options: &RangeOptions) -> RangeResult {
        range_from(self.keys_in(range).map(|(k, v)| (k.as_slice(), v)), options)
    }

    /// One step of reading the key space as it was at `revision` (etcd's
    /// Range at a past revision): applies `event`, the next one of the
    /// stream, if it happened at or before `revision`. An event past
    /// `revision` is not applied and breaks the fold: every later event of
    /// the stream is past it too, so the state is then the key space at
    /// `revision`.
    pub fn evolve_up_to(&mut self, revision: i64, event: &KeyspaceEvent, at: DateTime<Utc>) -> ControlFlow<()> {
        if revision_of(event) > revision {
            return ControlFlow::Break(());
        }
        self.evolve(event, at);
        ControlFlow::Continue(())
    }

    /// The keys attached to `lease`, in key order.
    pub fn lease_keys(&self, lease: LeaseId) -> Vec<Bytes> {
        self.by_lease.get(&lease).map(LeaseKeys::to_vec).unwrap_or_default()
    }

    /// Every lease that has at least one key attached.
    pub fn leases_with_keys(&self) -> Vec<LeaseId> {
        self.by_lease.keys().copied().collect()
    }

    fn deletions(&self, keys: Vec<Bytes>, cause: DeleteCause) -> Vec<KeyspaceEvent> {
        let revision = self.revision + 1;
        keys.into_iter()
            .map(|key| {
                KeyDeleted {
                    key,
                    revision,
                    cause: cause.clone(),
                }
                .into()
            })
            .collect()
    }

    /// Rebuilds the keys and the index by lease with full nodes if enough
    /// were added since the last rebuild (see
    /// [`tenure_projections::compact`]). Called when a snapshot is taken.
    pub fn compact(&mut self) {
        if self.inserts.due(self.kvs.len()) {
            tenure_projections::compact::rebuild(&mut self.kvs);
            tenure_projections::compact::rebuild(&mut self.by_lease);
        }
    }

    /// Whether `event` can follow this state: it takes the next revision,
    /// or shares this one (see the module's doc), a put only if it did
    /// not put the same key at this revision already. [`Aggregate::evolve`] asserts it; a key space
    /// restored from a snapshot checks it first.
    pub fn can_follow(&self, event: &KeyspaceEvent) -> bool {
        let revision = revision_of(event);
        let shares = revision == self.revision && self.revision > 1;
        let changed_already = |key: &Bytes| {
            self.kvs
                .get(key.as_slice())
                .is_some_and(|kv| kv.mod_revision == revision)
        };
        match event {
            KeyspaceEvent::Put(e) => revision == self.revision + 1 || (shares && !changed_already(&e.key)),
            KeyspaceEvent::Deleted(_) => revision == self.revision + 1 || shares,
        }
    }

    /// Applies `event` as [`Aggregate::evolve`] does and answers what puts
    /// it back ([`Keyspace::undo`]). For an actor on a shared log, whose
    /// append may conflict with another node's: it rolls back the events it
    /// applied ahead of the store's answer instead of reloading its stream.
    pub fn evolve_undoable(&mut self, event: &KeyspaceEvent, at: DateTime<Utc>) -> Undo {
        let key = match event {
            KeyspaceEvent::Put(e) => e.key.as_slice(),
            KeyspaceEvent::Deleted(e) => e.key.as_slice(),
        };
        let undo = Undo {
            revision: self.revision,
            previous: self.kvs.get(key).cloned(),
            key: Key::new(key),
        };
        self.evolve(event, at);
        undo
    }

    /// Puts back one event applied with [`Keyspace::evolve_undoable`]; the
    /// events applied after it must have been put back first (newest first).
    pub fn undo(&mut self, undo: Undo) {
        if let Some(lease) = self.kvs.remove(undo.key.as_slice()).and_then(|kv| kv.lease) {
            self.detach(undo.key.as_slice(), lease);
        }
        if let Some(previous) = undo.previous {
            if let Some(lease) = previous.lease {
                self.attach(undo.key.clone(), lease);
            }
            self.kvs.insert(undo.key, previous);
        }
        self.revision = undo.revision;
    }

    fn attach(&mut self, key: Key, lease: LeaseId) {
        match self.by_lease.entry(lease) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(LeaseKeys::One(key));
                self.inserts.add();
            }
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().insert(key),
        }
    }

    fn detach(&mut self, key: &[u8], lease: LeaseId) {
        if let Some(keys) = self.by_lease.get_mut(&lease) {
            if keys.remove(key) {
                self.by_lease.remove(&lease);
            }
        }
    }
}

/// etcd's Range over `keys` (in key order): `count` is every key; the
/// revision filters, then the sort, then the limit decide which are
/// returned, and `more` says the limit left some out.
fn range_from<'a>(keys: impl Iterator<Item = (&'a [u8], &'a KeyValue)>, options: &RangeOptions) -> RangeResult {
    let limit = if options.limit == 0 { usize::MAX } else { options.limit };
    let mut result = RangeResult::default();
    let sorts = options.sorts();
    let mut kept = 0;
    for (k, v) in keys {
        result.count += 1;
        if options.count_only || !options.keeps(v) {
            continue;
        }
        kept += 1;
        if sorts.is_some() || result.kvs.len() < limit {
            result.kvs.push((Bytes(k.to_vec()), v.clone()));
        }
    }
    if let Some((target, order)) = sorts {
        result.kvs.sort_by(|(ka, a), (kb, b)| {
            let ordering = match target {
                SortTarget::Key => ka.cmp(kb),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                ordering.reverse()
            } else {
                ordering
            }
        });
        result.kvs.truncate(limit);
    }
    result.more = kept > result.kvs.len() && !options.count_only;
    if options.keys_only {
        for (_, kv) in &mut result.kvs {
            kv.value = Bytes::default();
        }
    }
    result
}

impl Aggregate for Keyspace {
    type Command = KeyspaceCommand;
    type Event = KeyspaceEvent;
    type Rejection = KeyspaceRejection;

    fn decide(&self, command: KeyspaceCommand, _now: DateTime<Utc>) -> Result<Vec<KeyspaceEvent>, KeyspaceRejection> {
        match command {
            KeyspaceCommand::Put {
                key,
                value,
                lease,
                max_keys,
            } => {
                if key.is_empty() {
                    return Err(KeyspaceRejection::EmptyKey);
                }
                let current = self.kvs.get(key.as_slice());
                if current.is_none() && !tenure_events::allows_one_more(max_keys, self.kvs.len()) {
                    return Err(KeyspaceRejection::KeyLimitReached { max: max_keys });
                }
                let value = match (value, current) {
                    (Some(value), _) => value,
                    (None, Some(kv)) => kv.value.clone(),
                    (None, None) => return Err(KeyspaceRejection::KeyNotFound),
                };
                let lease = match (lease, current) {
                    (LeaseUpdate::Set(lease), _) => lease,
                    (LeaseUpdate::Keep, Some(kv)) => kv.lease,
                    (LeaseUpdate::Keep, None) => return Err(KeyspaceRejection::KeyNotFound),
                };
                if let Some(lease) = lease {
                    let held = self.by_lease.get(&lease);
                    let already = held.is_some_and(|keys| keys.contains(key.as_slice()));
                    if !already && held.map_or(0, LeaseKeys::len) >= MAX_KEYS_PER_LEASE {
                        return Err(KeyspaceRejection::TooManyKeysForLease {
                            lease,
                            max: MAX_KEYS_PER_LEASE,
                        });
                    }
                }
                Ok(vec![KeyPut {
                    key,
                    value,
                    lease,
                    revision: self.revision + 1,
                }
                .into()])
            }
            KeyspaceCommand::DeleteRange { range } => {
                if range.key.is_empty() && range.range_end.is_empty() {
                    return Err(KeyspaceRejection::EmptyKey);
                }
                let keys = self.keys_in(&range).map(|(k, _)| k.to_bytes()).collect();
                Ok(self.deletions(keys, DeleteCause::Request))
            }
            KeyspaceCommand::DeleteLeaseKeys { lease, cause } => Ok(self.deletions(self.lease_keys(lease), cause)),
            KeyspaceCommand::Txn { txn, context } => {
                txn.check_keys()?;
                self.txn(&txn, &context).map(|(events, _)| events)
            }
        }
    }

    fn evolve(&mut self, event: &KeyspaceEvent, _at: DateTime<Utc>) {
        match event {
            KeyspaceEvent::Put(e) => {
                assert!(
                    self.can_follow(event),
                    "a put moves the revision up by one or shares its command's"
                );
                match self.kvs.get(e.key.as_slice()).map(|kv| kv.lease) {
                    Some(Some(old)) => self.detach(e.key.as_slice(), old),
                    Some(None) => {}
                    None => self.inserts.add(),
                }
                let kv = self.kvs.entry(Key::new(e.key.as_slice())).or_insert(KeyValue {
                    value: Bytes::default(),
                    create_revision: e.revision,
                    mod_revision: e.revision,
                    version: 0,
                    lease: None,
                });
                kv.value = e.value.clone();
                kv.mod_revision = e.revision;
                kv.version += 1;
                kv.lease = e.lease;
                if let Some(lease) = e.lease {
                    self.attach(Key::new(e.key.as_slice()), lease);
                }
                self.revision = e.revision;
            }
            KeyspaceEvent::Deleted(e) => {
                assert!(self.can_follow(event), "deletions share their command's revision");
                if let Some(kv) = self.kvs.remove(e.key.as_slice()) {
                    if let Some(lease) = kv.lease {
                        self.detach(e.key.as_slice(), lease);
                    }
                }
                self.revision = e.revision;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{given, t};

    fn lease(n: i64) -> LeaseId {
        LeaseId::new(n).expect("positive")
    }

    fn put(key: &str, value: &str, lease: Option<LeaseId>, revision: i64) -> KeyspaceEvent {
        KeyPut {
            key: key.into(),
            value: value.into(),
            lease,
            revision,
        }
        .into()
    }

    fn deleted(key: &str, revision: i64, cause: DeleteCause) -> KeyspaceEvent {
        KeyDeleted {
            key: key.into(),
            revision,
            cause,
        }
        .into()
    }

    fn cmd_put(key: &str, value: &str, lease: Option<LeaseId>) -> KeyspaceCommand {
        KeyspaceCommand::Put {
            key: key.into(),
            value: Some(value.into()),
            lease: LeaseUpdate::Set(lease),
            max_keys: tenure_events::UNLIMITED,
        }
    }

    #[test]
    fn a_put_creating_a_key_beyond_the_account_limit_is_refused_but_changes_are_not() {
        let limited = |key: &str| KeyspaceCommand::Put {
            key: key.into(),
            value: Some("x".into()),
            lease: LeaseUpdate::Set(None),
            max_keys: 1,
        };
        given::<Keyspace>([]).when(limited("a")).then([put("a", "x", None, 2)]);
        given::<Keyspace>([put("a", "v", None, 2)])
            .when(limited("b"))
            .then_rejects(KeyspaceRejection::KeyLimitReached { max: 1 });
        given::<Keyspace>([put("a", "v", None, 2)])
            .when(limited("a"))
            .then([put("a", "x", None, 3)]);
        given::<Keyspace>([put("a", "v", None, 2)])
            .when(KeyspaceCommand::Put {
                key: "a".into(),
                value: Some("x".into()),
                lease: LeaseUpdate::Set(None),
                max_keys: 0,
            })
            .then([put("a", "x", None, 3)]);
    }

    #[test]
    fn a_put_can_keep_the_value_or_the_lease_of_an_existing_key() {
        let keep_value = KeyspaceCommand::Put {
            key: "k".into(),
            value: None,
            lease: LeaseUpdate::Set(None),
            max_keys: tenure_events::UNLIMITED,
        };
        given::<Keyspace>([put("k", "v", Some(lease(1)), 2)])
            .when(keep_value.clone())
            .then([put("k", "v", None, 3)]);
        let keep_lease = KeyspaceCommand::Put {
            key: "k".into(),
            value: Some("w".into()),
            lease: LeaseUpdate::Keep,
            max_keys: tenure_events::UNLIMITED,
        };
        given::<Keyspace>([put("k", "v", Some(lease(1)), 2)])
            .when(keep_lease.clone())
            .then([put("k", "w", Some(lease(1)), 3)]);
        given::<Keyspace>([])
            .when(keep_value)
            .then_rejects(KeyspaceRejection::KeyNotFound);
        given::<Keyspace>([])
            .when(keep_lease)
            .then_rejects(KeyspaceRejection::KeyNotFound);
    }

    #[test]
    fn range_options_follow_etcd() {
        // a: created 2, modified 5 (version 2); b: 3; c: 4.
        let ks = fold(&[
            put("a", "3", None, 2),
            put("b", "1", None, 3),
            put("c", "2", None, 4),
            put("a", "9", None, 5),
        ]);
        let check = |options: RangeOptions, keys: &[&str], count: usize, more: bool| {
            let res = ks.range_with(&KeyRange::prefix(""), &options);
            let got: Vec<String> = res.kvs.iter().map(|(k, _)| k.to_string_lossy()).collect();
            assert_eq!(
                (got, res.count, res.more),
                (keys.iter().map(|k| k.to_string()).collect(), count, more),
                "{options:?}"
            );
        };
        let o = RangeOptions::default;
        check(o(), &["a", "b", "c"], 3, false);
        check(RangeOptions { limit: 2, ..o() }, &["a", "b"], 3, true);
        check(
            RangeOptions {
                sort_order: SortOrder::Descend,
                ..o()
            },
            &["c", "b", "a"],
            3,
            false,
        );
        check(
            RangeOptions {
                sort_order: SortOrder::Descend,
                limit: 1,
                ..o()
            },
            &["c"],
            3,
            true,
        );
        check(
            RangeOptions {
                sort_target: SortTarget::Mod,
                ..o()
            },
            &["b", "c", "a"],
            3,
            false,
        );
        check(
            RangeOptions {
                sort_target: SortTarget::Value,
                sort_order: SortOrder::Descend,
                ..o()
            },
            &["a", "c", "b"],
            3,
            false,
        );
        check(
            RangeOptions {
                sort_target: SortTarget::Version,
                sort_order: SortOrder::Descend,
                limit: 1,
                ..o()
            },
            &["a"],
            3,
            true,
        );
        check(
            RangeOptions {
                min_mod_revision: 4,
                ..o()
            },
            &["a", "c"],
            3,
            false,
        );
        check(
            RangeOptions {
                max_create_revision: 3,
                ..o()
            },
            &["a", "b"],
            3,
            false,
        );
        check(
            RangeOptions {
                min_create_revision: 3,
                max_mod_revision: 3,
                ..o()
            },
            &["b"],
            3,
            false,
        );
        check(
            RangeOptions {
                count_only: true,
                limit: 1,
                ..o()
            },
            &[],
            3,
            false,
        );
        let keys_only = ks.range_with(&KeyRange::single("a"), &RangeOptions { keys_only: true, ..o() });
        assert_eq!(keys_only.kvs[0].1.value, Bytes::default());
        assert_eq!(keys_only.kvs[0].1.version, 2);
    }

    /// A key space rebuilt with full nodes holds the same keys and index by
    /// lease, and is rebuilt only after an eighth of its keys were added.
    #[test]
    fn compacting_changes_no_key_and_waits_for_enough_new_keys() {
        let n = tenure_projections::compact::MIN_LEN as i64 * 2;
        let events: Vec<KeyspaceEvent> = (0..n)
            .map(|i| put(&format!("k/{i:06}"), "v", (i % 3 != 0).then(|| lease(i + 1)), i + 2))
            .collect();
        let mut ks = fold(&events);
        let before = ks.clone();
        ks.compact();
        assert_eq!(ks, before);
        assert_eq!(ks.lease_keys(lease(2)), vec![Bytes(b"k/000001".to_vec())]);
        assert_eq!(ks.leases_with_keys().len(), before.leases_with_keys().len());
        let mut count = ks.inserts;
        assert!(!count.due(ks.kvs.len()), "the count starts again");
        // A quarter more keys make it due again (an eighth of the new size).
        for i in n..n + n / 4 {
            ks.evolve(&put(&format!("k/{i:06}"), "v", None, i + 2), t(0));
        }
        let mut count = ks.inserts;
        assert!(count.due(ks.kvs.len()));
    }

    fn fold(events: &[KeyspaceEvent]) -> Keyspace {
        let mut ks = Keyspace::default();
        for e in events {
            ks.evolve(e, t(0));
        }
        ks
    }

    /// The key space at `revision`, folded from `events` the way a
    /// historical read folds the stream, and how many events it applied.
    fn up_to(revision: i64, events: &[KeyspaceEvent]) -> (Keyspace, usize) {
        let mut ks = Keyspace::default();
        let mut applied = 0;
        for e in events {
            if ks.evolve_up_to(revision, e, t(0)).is_break() {
                break;
            }
            applied += 1;
        }
        (ks, applied)
    }

    /// a, b (on lease 7), a again, c (on lease 7), the lease revoked (b and
    /// c deleted at one revision), then b created again.
    fn history() -> Vec<KeyspaceEvent> {
        let revoked = DeleteCause::LeaseRevoked { lease: lease(7) };
        vec![
            put("a", "1", None, 2),
            put("b", "1", Some(lease(7)), 3),
            put("a", "2", None, 4),
            put("c", "1", Some(lease(7)), 5),
            deleted("b", 6, revoked.clone()),
            deleted("c", 6, revoked),
            put("b", "2", None, 7),
        ]
    }

    #[test]
    fn a_fold_up_to_a_revision_applies_exactly_the_events_at_or_before_it() {
        let events = history();
        for revision in 1..=9 {
            // Given the stream, when it is folded up to `revision`,
            let (ks, applied) = up_to(revision, &events);
            // then the state is the fold of the events at or before it.
            let expected: Vec<KeyspaceEvent> = events.iter().filter(|e| revision_of(e) <= revision).cloned().collect();
            assert_eq!(applied, expected.len(), "at {revision}");
            assert_eq!(ks, fold(&expected), "at {revision}");
            assert_eq!(ks.revision(), revision.min(7), "at {revision}");
        }
    }

    #[test]
    fn the_key_space_at_a_past_revision_has_the_keys_as_they_were() {
        let events = history();
        // Revision 1: nothing had happened yet.
        let (ks, applied) = up_to(1, &events);
        assert_eq!((applied, ks.is_empty(), ks.revision()), (0, true, 1));
        // Revision 3: a at its first version, b on the lease.
        let (ks, _) = up_to(3, &events);
        assert_eq!(
            ks.get(b"a"),
            Some(&KeyValue {
                value: "1".into(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                lease: None
            })
        );
        assert_eq!(ks.get(b"b").and_then(|kv| kv.lease), Some(lease(7)));
        // Revision 5: the lease holds b and c; a is at its second version.
        let (ks, _) = up_to(5, &events);
        assert_eq!(ks.lease_keys(lease(7)), vec![Bytes::from("b"), Bytes::from("c")]);
        assert_eq!(ks.get(b"a").map(|kv| (kv.version, kv.mod_revision)), Some((2, 4)));
        let newest = ks.range_with(
            &KeyRange::prefix(""),
            &RangeOptions {
                sort_target: SortTarget::Mod,
                sort_order: SortOrder::Descend,
                limit: 1,
                ..RangeOptions::default()
            },
        );
        let keys: Vec<String> = newest.kvs.iter().map(|(k, _)| k.to_string_lossy()).collect();
        assert_eq!((keys, newest.count, newest.more), (vec!["c".to_owned()], 3, true));
        // Revision 6: both deletions of the revoke are applied, not one.
        let (ks, applied) = up_to(6, &events);
        assert_eq!(applied, 6);
        assert_eq!(ks.range(&KeyRange::prefix(""), 0).count, 1);
        assert!(ks.leases_with_keys().is_empty());
        // Revision 7: b is a new key again (created at 7, version 1).
        let (ks, _) = up_to(7, &events);
        assert_eq!(
            ks.get(b"b").map(|kv| (kv.create_revision, kv.version, kv.lease)),
            Some((7, 1, None))
        );
    }

    #[test]
    fn an_event_past_the_revision_breaks_the_fold_and_is_not_applied() {
        // Given the key space at revision 3,
        let (mut ks, _) = up_to(3, &history());
        let before = ks.clone();
        // when the next event (revision 4) is offered for revision 3,
        let step = ks.evolve_up_to(3, &put("a", "2", None, 4), t(0));
        // then the fold stops and the state is unchanged.
        assert!(step.is_break());
        assert_eq!(ks, before);
        // A deletion past the revision stops it too.
        let step = ks.evolve_up_to(3, &deleted("a", 4, DeleteCause::Request), t(0));
        assert!(step.is_break());
        assert_eq!(ks, before);
    }

    #[test]
    fn the_first_put_is_revision_2_as_in_etcd() {
        given::<Keyspace>([])
            .when(cmd_put("key1", "hello", None))
            .then([put("key1", "hello", None, 2)]);
    }

    #[test]
    fn an_empty_key_is_refused() {
        given::<Keyspace>([])
            .when(cmd_put("", "v", None))
            .then_rejects(KeyspaceRejection::EmptyKey);
        given::<Keyspace>([])
            .when(KeyspaceCommand::DeleteRange {
                range: KeyRange::single(""),
            })
            .then_rejects(KeyspaceRejection::EmptyKey);
    }

    #[test]
    fn put_tracks_versions_and_revisions_like_etcd() {
        let ks = fold(&[put("a", "1", None, 2), put("b", "1", None, 3), put("a", "2", None, 4)]);
        assert_eq!(
            ks.get(b"a"),
            Some(&KeyValue {
                value: "2".into(),
                create_revision: 2,
                mod_revision: 4,
                version: 2,
                lease: None
            })
        );
        assert_eq!(ks.revision(), 4);
    }

    #[test]
    fn deleting_a_range_removes_each_key_at_one_revision() {
        given::<Keyspace>([
            put("a/1", "x", None, 2),
            put("a/2", "x", None, 3),
            put("b", "x", None, 4),
        ])
        .when(KeyspaceCommand::DeleteRange {
            range: KeyRange::prefix("a/"),
        })
        .then([
            deleted("a/1", 5, DeleteCause::Request),
            deleted("a/2", 5, DeleteCause::Request),
        ]);
    }

    #[test]
    fn deleting_nothing_records_nothing() {
        given::<Keyspace>([put("a", "x", None, 2)])
            .when(KeyspaceCommand::DeleteRange {
                range: KeyRange::single("zzz"),
            })
            .then([]);
    }

    #[test]
    fn a_lease_s_keys_are_deleted_together_and_only_them() {
        let cause = DeleteCause::LeaseRevoked { lease: lease(7) };
        given::<Keyspace>([
            put("key5", "hehe", Some(lease(7)), 2),
            put("key6", "hihi", Some(lease(7)), 3),
            put("other", "x", Some(lease(8)), 4),
        ])
        .when(KeyspaceCommand::DeleteLeaseKeys {
            lease: lease(7),
            cause: cause.clone(),
        })
        .then([deleted("key5", 5, cause.clone()), deleted("key6", 5, cause)]);
    }

    #[test]
    fn a_key_moved_to_another_lease_leaves_the_first() {
        let ks = fold(&[put("k", "v", Some(lease(1)), 2), put("k", "v", Some(lease(2)), 3)]);
        assert_eq!(ks.lease_keys(lease(1)), Vec::<Bytes>::new());
        assert_eq!(ks.lease_keys(lease(2)), vec![Bytes::from("k")]);
        assert_eq!(ks.leases_with_keys(), vec![lease(2)]);
        given::<Keyspace>([put("k", "v", Some(lease(1)), 2), put("k", "v", Some(lease(2)), 3)])
            .when(KeyspaceCommand::DeleteLeaseKeys {
                lease: lease(1),
                cause: DeleteCause::Request,
            })
            .then([]);
    }

    #[test]
    fn a_lease_s_keys_read_the_same_folded_or_restored_as_they_grow_and_shrink() {
        let restored = |ks: &Keyspace| {
            let bytes = crate::snapshot::encode(&ks.snapshot()).unwrap_or_else(|e| panic!("{e}"));
            crate::snapshot::keyspace_from(&bytes).unwrap_or_else(|e| panic!("{e}"))
        };
        let mut events = vec![put("b", "v", Some(lease(1)), 2)];
        let mut expect: Vec<Vec<&str>> = vec![vec!["b"]];
        events.extend([put("a", "v", Some(lease(1)), 3), put("c", "v", Some(lease(1)), 4)]);
        expect.extend([vec!["a", "b"], vec!["a", "b", "c"]]);
        events.extend([
            deleted("a", 5, DeleteCause::Request),
            put("c", "v", Some(lease(2)), 6),
            put("b", "v", Some(lease(1)), 7),
            put("b", "v", None, 8),
        ]);
        expect.extend([vec!["b", "c"], vec!["b"], vec!["b"], vec![]]);
        for (n, keys) in expect.iter().enumerate() {
            let ks = fold(&events[..n + 1]);
            let keys: Vec<Bytes> = keys.iter().map(|k| Bytes::from(*k)).collect();
            assert_eq!(ks.lease_keys(lease(1)), keys, "after {} events", n + 1);
            assert_eq!(ks.leases_with_keys().contains(&lease(1)), !keys.is_empty());
            assert_eq!(restored(&ks), ks, "after {} events", n + 1);
        }
    }

    #[test]
    fn short_and_long_keys_are_kept_and_ordered_as_their_bytes() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        let inline = "a".repeat(Key::INLINE_MAX);
        let long = "a".repeat(Key::INLINE_MAX + 1);
        let after = format!("{}b", "a".repeat(Key::INLINE_MAX - 1));
        let ks = fold(&[
            put(&long, "1", Some(lease(1)), 2),
            put(&after, "2", Some(lease(1)), 3),
            put(&inline, "3", Some(lease(1)), 4),
            put("a", "4", None, 5),
            put("", "5", None, 6),
        ]);
        let order = vec!["", "a", inline.as_str(), long.as_str(), after.as_str()];
        let listed: Vec<String> = ks
            .range(&KeyRange::prefix(""), 0)
            .kvs
            .iter()
            .map(|(k, _)| k.to_string_lossy())
            .collect();
        assert_eq!(listed, order);
        let held: Vec<Bytes> = order[2..].iter().map(|k| Bytes::from(*k)).collect();
        assert_eq!(ks.lease_keys(lease(1)), held);
        assert_eq!(
            ks.get(long.as_bytes()).map(|kv| kv.value.clone()),
            Some(Bytes::from("1"))
        );
        assert_eq!(
            ks.get(&long.as_bytes()[..Key::INLINE_MAX]).map(|kv| kv.value.clone()),
            Some(Bytes::from("3"))
        );
        let range = KeyRange {
            key: inline.as_str().into(),
            range_end: after.as_str().into(),
        };
        assert_eq!(ks.range(&range, 0).count, 2);
    }

    #[test]
    fn a_put_without_lease_detaches_the_key() {
        let ks = fold(&[put("k", "v", Some(lease(1)), 2), put("k", "w", None, 3)]);
        assert!(ks.leases_with_keys().is_empty());
        assert_eq!(ks.get(b"k").and_then(|kv| kv.lease), None);
    }

    #[test]
    fn a_lease_holds_at_most_its_maximum_of_keys() {
        let full: Vec<KeyspaceEvent> = (0..MAX_KEYS_PER_LEASE)
            .map(|i| put(&format!("k{i:05}"), "v", Some(lease(1)), i as i64 + 2))
            .collect();
        let next_revision = MAX_KEYS_PER_LEASE as i64 + 2;
        given::<Keyspace>(full.clone())
            .when(cmd_put("one-more", "v", Some(lease(1))))
            .then_rejects(KeyspaceRejection::TooManyKeysForLease {
                lease: lease(1),
                max: MAX_KEYS_PER_LEASE,
            });
        // Rewriting a key it already holds is fine.
        given::<Keyspace>(full)
            .when(cmd_put("k00000", "w", Some(lease(1))))
            .then([put("k00000", "w", Some(lease(1)), next_revision)]);
    }

    #[test]
    fn ranges_follow_etcd_s_range_end_rules() {
        let ks = fold(&[
            put("a", "1", None, 2),
            put("ab", "1", None, 3),
            put("b", "1", None, 4),
            put("c", "1", None, 5),
        ]);
        let keys = |r: KeyRange, limit: usize| {
            let res = ks.range(&r, limit);
            (
                res.kvs
                    .into_iter()
                    .map(|(k, _)| k.to_string_lossy())
                    .collect::<Vec<_>>(),
                res.count,
                res.more,
            )
        };
        let v = |ks: &[&str]| ks.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(KeyRange::single("ab"), 0), (v(&["ab"]), 1, false));
        assert_eq!(keys(KeyRange::single("zz"), 0), (v(&[]), 0, false));
        assert_eq!(keys(KeyRange::prefix("a"), 0), (v(&["a", "ab"]), 2, false));
        assert_eq!(keys(KeyRange::prefix(""), 0), (v(&["a", "ab", "b", "c"]), 4, false));
        assert_eq!(
            keys(
                KeyRange {
                    key: "ab".into(),
                    range_end: "c".into()
                },
                0
            ),
            (v(&["ab", "b"]), 2, false)
        );
        assert_eq!(
            keys(
                KeyRange {
                    key: "b".into(),
                    range_end: Bytes(vec![0])
                },
                0
            ),
            (v(&["b", "c"]), 2, false)
        );
        assert_eq!(
            keys(
                KeyRange {
                    key: "c".into(),
                    range_end: "a".into()
                },
                0
            ),
            (v(&[]), 0, false)
        );
        assert_eq!(keys(KeyRange::prefix(""), 3), (v(&["a", "ab", "b"]), 4, true));
    }

    /// A command of the undo property below: a put of one of a few keys on
    /// one of a few leases (or none), a range deletion, or a lease's keys'.
    fn arbitrary_command() -> impl proptest::strategy::Strategy<Value = KeyspaceCommand> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "a",
            "b",
            "c",
            "service/web/1",
            "a-key-longer-than-twenty-two-bytes",
        ]);
        let lease_of = |n: i64| (n > 0).then(|| lease(n));
        prop_oneof![
            4 => (key.clone(), "[a-z]{0,3}", 0i64..4).prop_map(move |(k, v, l)| cmd_put(k, &v, lease_of(l))),
            1 => (key.clone(), key).prop_map(|(a, b)| KeyspaceCommand::DeleteRange {
                range: KeyRange {
                    key: a.into(),
                    range_end: b.into(),
                },
            }),
            1 => (1i64..4).prop_map(|l| KeyspaceCommand::DeleteLeaseKeys {
                lease: lease(l),
                cause: DeleteCause::LeaseRevoked { lease: lease(l) },
            }),
        ]
    }

    proptest::proptest! {
        /// What a key space on a shared log does when its append conflicts:
        /// the events it applied ahead of the store's answer, put back
        /// newest first, leave exactly the state before them.
        #[test]
        fn events_applied_then_undone_leave_the_state_as_it_was(
            before in proptest::collection::vec(arbitrary_command(), 0..12),
            ahead in proptest::collection::vec(arbitrary_command(), 1..12),
        ) {
            let mut space = Keyspace::default();
            for command in before {
                for event in space.decide(command, t(0)).unwrap_or_default() {
                    space.evolve(&event, t(0));
                }
            }
            let durable = space.clone();
            let mut undo = Vec::new();
            for command in ahead {
                for event in space.decide(command, t(1)).unwrap_or_default() {
                    undo.push(space.evolve_undoable(&event, t(1)));
                }
            }
            while let Some(u) = undo.pop() {
                space.undo(u);
            }
            proptest::prop_assert_eq!(&space, &durable);
        }
    }

    #[test]
    fn prefix_end_matches_etcd() {
        assert_eq!(prefix_end(b"a"), b"b".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}

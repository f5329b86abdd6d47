//! etcd's Txn on a key space: compares, then the operations of the branch
//! they choose, all at one revision.
//!
//! As etcd 3.4 (`etcdserver/apply.go`, `api/v3rpc/key.go`):
//! - every compare, nested txns' included, is evaluated against the key
//!   space as it was before the txn, and so are the checks of the puts on
//!   the chosen path (a kept value or lease needs the key; a lease must be
//!   live); ranges in the txn see its earlier writes;
//! - a compare holds when it holds for every key of its range; over no key
//!   it compares a key at its zero value, except a VALUE compare, which
//!   then fails;
//! - a txn that writes moves the revision up by one, and every event it
//!   records carries that revision; one that writes nothing records nothing;
//! - no key is put twice in one txn, nor put and deleted
//!   ([`Txn::check_keys`]), except by a delete whose `range_end` is `"\0"`,
//!   which etcd's check does not see: such a txn may delete a key and put
//!   it, or put it and delete it, at one revision (and etcd does so).
//!
//! The results are computed on an overlay of the txn's changes over the
//! key space, which is never copied.

use std::collections::{BTreeMap, BTreeSet};

use tenure_events::{allows_one_more, Bytes, DeleteCause, KeyDeleted, KeyPut, KeyspaceEvent, LeaseId};

use super::{
    range_from, KeyRange, KeyValue, Keyspace, KeyspaceRejection, LeaseUpdate, RangeOptions, RangeResult,
    MAX_KEYS_PER_LEASE,
};

/// etcd's default `--max-txn-ops`: the most compares, or operations of one
/// branch, a txn may have (a nested txn gets what its parent leaves).
pub const MAX_TXN_OPS: usize = 128;

/// A transaction: if every compare holds, the `success` operations, else
/// the `failure` ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// One condition on every key of a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub range: KeyRange,
    pub target: CompareTarget,
    pub result: CompareResult,
}

/// What a compare reads of a key, and the operand it compares it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Bytes),
    /// The key's lease ID, 0 for none.
    Lease(i64),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompareResult {
    #[default]
    Equal,
    Greater,
    Less,
    NotEqual,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// `revision`: etcd's range revision (0: now). Inside a txn the key
    /// space before the txn is at hand, not older ones: see
    /// [`OpOutcome::RangeAt`].
    Range {
        range: KeyRange,
        options: RangeOptions,
        revision: i64,
    },
    Put {
        key: Bytes,
        /// `None`: keep the key's value.
        value: Option<Bytes>,
        lease: LeaseUpdate,
        prev_kv: bool,
    },
    DeleteRange {
        range: KeyRange,
        prev_kv: bool,
    },
    Txn(Txn),
}

/// What a txn did: which branch, and each operation's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    pub responses: Vec<OpOutcome>,
}

/// One operation's answer, with the revision etcd puts in its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    Range {
        revision: i64,
        result: RangeResult,
    },
    /// A range at a revision before the txn's: the caller reads it from
    /// the log (history does not change, so when does not matter).
    RangeAt {
        revision: i64,
        range: KeyRange,
        options: RangeOptions,
        at: i64,
    },
    Put {
        revision: i64,
        key: Bytes,
        /// The key before the put, when asked for and when it existed.
        prev: Option<KeyValue>,
    },
    DeleteRange {
        revision: i64,
        deleted: usize,
        prev_kvs: Vec<(Bytes, KeyValue)>,
    },
    Txn(TxnOutcome),
}

/// What the key space needs to know besides the txn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnContext {
    /// The leases found live for this txn (by the lease actor it went
    /// through): a put on the chosen path with any other lease is refused
    /// as etcd refuses a lease it does not hold.
    pub live_leases: Vec<LeaseId>,
    /// The account's `max_keys` limit (-1: none).
    pub max_keys: i64,
}

impl Txn {
    /// Every lease a put of this txn attaches a key to, in either branch.
    pub fn leases(&self) -> BTreeSet<LeaseId> {
        let mut leases = BTreeSet::new();
        self.collect_leases(&mut leases);
        leases
    }

    fn collect_leases(&self, leases: &mut BTreeSet<LeaseId>) {
        for op in self.success.iter().chain(&self.failure) {
            match op {
                TxnOp::Put {
                    lease: LeaseUpdate::Set(Some(lease)),
                    ..
                } => {
                    leases.insert(*lease);
                }
                TxnOp::Txn(inner) => inner.collect_leases(leases),
                _ => {}
            }
        }
    }

    /// Whether any operation, in either branch, writes (etcd's
    /// `!isTxnReadonly`).
    pub fn writes(&self) -> bool {
        self.success.iter().chain(&self.failure).any(|op| match op {
            TxnOp::Put { .. } | TxnOp::DeleteRange { .. } => true,
            TxnOp::Txn(inner) => inner.writes(),
            TxnOp::Range { .. } => false,
        })
    }

    /// etcd's `checkIntervals` on each branch: no key is put twice, nor
    /// put and deleted, by operations that may both run. The two branches
    /// of a nested txn exclude each other, so both may put one key.
    pub fn check_keys(&self) -> Result<(), KeyspaceRejection> {
        check_intervals(&self.success)?;
        check_intervals(&self.failure)?;
        Ok(())
    }
}

/// The puts and deletes of one list of operations, nested ones included.
fn check_intervals(ops: &[TxnOp]) -> Result<(BTreeSet<Bytes>, Vec<KeyRange>), KeyspaceRejection> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::DeleteRange { range, .. } => Some(range.clone()),
            _ => None,
        })
        .collect();
    // etcd's interval tree takes a `range_end` of "\0" (every key from
    // `key` on) literally, as the end "\0": such a delete covers no key
    // here, and etcd lets the txn put keys it deletes.
    let hits = |dels: &[KeyRange], key: &Bytes| {
        dels.iter()
            .any(|r| r.range_end.as_slice() != [0] && r.contains(key.as_slice()))
    };
    let mut puts: BTreeSet<Bytes> = BTreeSet::new();
    for op in ops {
        let TxnOp::Txn(inner) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&inner.success)?;
        let (puts_else, dels_else) = check_intervals(&inner.failure)?;
        for key in &puts_then {
            if puts.contains(key) || hits(&dels, key) {
                return Err(KeyspaceRejection::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in puts_else {
            if (puts.contains(&key) && !puts_then.contains(&key)) || hits(&dels, &key) {
                return Err(KeyspaceRejection::DuplicateKey);
            }
            puts.insert(key);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let TxnOp::Put { key, .. } = op else { continue };
        if puts.contains(key) || hits(&dels, key) {
            return Err(KeyspaceRejection::DuplicateKey);
        }
        puts.insert(key.clone());
    }
    Ok((puts, dels))
}

impl KeyRange {
    /// Whether `key` is in the range, by etcd's rules.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self.range_end.as_slice() {
            [] => key == self.key.as_slice(),
            [0] => key >= self.key.as_slice(),
            end => key >= self.key.as_slice() && key < end,
        }
    }
}

impl Compare {
    fn holds_for(&self, kv: &KeyValue) -> bool {
        let ordering = match &self.target {
            CompareTarget::Version(v) => kv.version.cmp(v),
            CompareTarget::Create(v) => kv.create_revision.cmp(v),
            CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
            CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
            CompareTarget::Lease(v) => kv.lease.map_or(0, LeaseId::get).cmp(v),
        };
        match self.result {
            CompareResult::Equal => ordering.is_eq(),
            CompareResult::NotEqual => ordering.is_ne(),
            CompareResult::Greater => ordering.is_gt(),
            CompareResult::Less => ordering.is_lt(),
        }
    }
}

impl Keyspace {
    /// Carries out `txn`: the events to record (all at the next revision,
    /// none if it writes nothing) and the answer. The caller has checked
    /// it ([`Txn::check_keys`] and the limits on its size). Never changes
    /// the state: apply the events with `evolve`.
    pub fn txn(&self, txn: &Txn, context: &TxnContext) -> Result<(Vec<KeyspaceEvent>, TxnOutcome), KeyspaceRejection> {
        self.check_path(txn, context)?;
        let mut overlay = Overlay {
            base: self,
            changes: BTreeMap::new(),
            events: Vec::new(),
            keys: self.kvs.len(),
            lease_keys: BTreeMap::new(),
            context,
        };
        let outcome = overlay.run(txn)?;
        Ok((overlay.events, outcome))
    }

    fn compares_hold(&self, compares: &[Compare]) -> bool {
        compares.iter().all(|c| {
            let mut any = false;
            for (_, kv) in self.keys_in(&c.range) {
                any = true;
                if !c.holds_for(kv) {
                    return false;
                }
            }
            any || (!matches!(c.target, CompareTarget::Value(_)) && c.holds_for(&KeyValue::absent()))
        })
    }

    fn branch<'t>(&self, txn: &'t Txn) -> (bool, &'t [TxnOp]) {
        if self.compares_hold(&txn.compare) {
            (true, &txn.success)
        } else {
            (false, &txn.failure)
        }
    }

    /// etcd's `checkRequests`: the puts of the chosen path (if the txn
    /// writes), then its ranges, against the key space before the txn.
    fn check_path(&self, txn: &Txn, context: &TxnContext) -> Result<(), KeyspaceRejection> {
        if txn.writes() {
            self.each_on_path(txn, &mut |op| match op {
                TxnOp::Put { key, value, lease, .. } => {
                    let keeps = value.is_none() || *lease == LeaseUpdate::Keep;
                    if keeps && self.get(key.as_slice()).is_none() {
                        return Err(KeyspaceRejection::KeyNotFound);
                    }
                    match lease {
                        LeaseUpdate::Set(Some(lease)) if !context.live_leases.contains(lease) => {
                            Err(KeyspaceRejection::LeaseNotFound(*lease))
                        }
                        _ => Ok(()),
                    }
                }
                _ => Ok(()),
            })?;
        }
        self.each_on_path(txn, &mut |op| match op {
            TxnOp::Range { revision, .. } if *revision > self.revision => Err(KeyspaceRejection::FutureRevision),
            _ => Ok(()),
        })
    }

    fn each_on_path(
        &self,
        txn: &Txn,
        check: &mut impl FnMut(&TxnOp) -> Result<(), KeyspaceRejection>,
    ) -> Result<(), KeyspaceRejection> {
        for op in self.branch(txn).1 {
            match op {
                TxnOp::Txn(inner) => self.each_on_path(inner, check)?,
                other => check(other)?,
            }
        }
        Ok(())
    }
}

impl KeyValue {
    /// A key that does not exist, as a compare sees it.
    fn absent() -> KeyValue {
        KeyValue {
            value: Bytes::default(),
            create_revision: 0,
            mod_revision: 0,
            version: 0,
            lease: None,
        }
    }
}

/// The key space as the txn has changed it so far.
struct Overlay<'a> {
    base: &'a Keyspace,
    /// Keys the txn put (`Some`) or deleted (`None`).
    changes: BTreeMap<Bytes, Option<KeyValue>>,
    events: Vec<KeyspaceEvent>,
    /// How many keys there are now.
    keys: usize,
    /// Keys each lease the txn changed holds now.
    lease_keys: BTreeMap<LeaseId, usize>,
    context: &'a TxnContext,
}

impl Overlay<'_> {
    /// The revision of the txn's changes.
    fn next(&self) -> i64 {
        self.base.revision + 1
    }

    /// The revision reads see now (etcd's `txn.Rev()` plus one once it
    /// has changes).
    fn now(&self) -> i64 {
        if self.events.is_empty() {
            self.base.revision
        } else {
            self.next()
        }
    }

    fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        match self.changes.get(key) {
            Some(changed) => changed.as_ref(),
            None => self.base.get(key),
        }
    }

    fn held_by(&mut self, lease: LeaseId) -> &mut usize {
        let base = self.base.by_lease.get(&lease).map_or(0, super::LeaseKeys::len);
        self.lease_keys.entry(lease).or_insert(base)
    }

    fn run(&mut self, txn: &Txn) -> Result<TxnOutcome, KeyspaceRejection> {
        // Compares read the key space before the txn, nested ones too.
        let (succeeded, ops) = self.base.branch(txn);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                TxnOp::Range {
                    range,
                    options,
                    revision,
                } => self.range(range, options, *revision),
                TxnOp::Put {
                    key,
                    value,
                    lease,
                    prev_kv,
                } => self.put(key, value.as_ref(), *lease, *prev_kv)?,
                TxnOp::DeleteRange { range, prev_kv } => self.delete(range, *prev_kv),
                TxnOp::Txn(inner) => OpOutcome::Txn(self.run(inner)?),
            });
        }
        Ok(TxnOutcome { succeeded, responses })
    }

    fn range(&self, range: &KeyRange, options: &RangeOptions, revision: i64) -> OpOutcome {
        let now = self.now();
        if revision > 0 && revision < self.base.revision {
            return OpOutcome::RangeAt {
                revision: now,
                range: range.clone(),
                options: options.clone(),
                at: revision,
            };
        }
        if revision == self.base.revision || self.changes.is_empty() {
            // At the revision before the txn: its changes are not seen.
            return OpOutcome::Range {
                revision: now,
                result: self.base.range_with(range, options),
            };
        }
        OpOutcome::Range {
            revision: now,
            result: range_from(self.merged(range).into_iter(), options),
        }
    }

    /// The keys of `range` with the txn's changes, in key order.
    fn merged(&self, range: &KeyRange) -> Vec<(&[u8], &KeyValue)> {
        let mut keys: BTreeMap<&[u8], &KeyValue> = self.base.keys_in(range).map(|(k, v)| (k.as_slice(), v)).collect();
        for (key, change) in &self.changes {
            if !range.contains(key.as_slice()) {
                continue;
            }
            match change {
                Some(kv) => keys.insert(key.as_slice(), kv),
                None => keys.remove(key.as_slice()),
            };
        }
        keys.into_iter().collect()
    }

    fn put(
        &mut self,
        key: &Bytes,
        value: Option<&Bytes>,
        lease: LeaseUpdate,
        prev_kv: bool,
    ) -> Result<OpOutcome, KeyspaceRejection> {
        let current = self.get(key.as_slice()).cloned();
        if current.is_none() && !allows_one_more(self.context.max_keys, self.keys) {
            return Err(KeyspaceRejection::KeyLimitReached {
                max: self.context.max_keys,
            });
        }
        // Checked on the path already: a kept value or lease has its key.
        let value = match (value, &current) {
            (Some(value), _) => value.clone(),
            (None, Some(kv)) => kv.value.clone(),
            (None, None) => return Err(KeyspaceRejection::KeyNotFound),
        };
        let lease = match (lease, &current) {
            (LeaseUpdate::Set(lease), _) => lease,
            (LeaseUpdate::Keep, Some(kv)) => kv.lease,
            (LeaseUpdate::Keep, None) => return Err(KeyspaceRejection::KeyNotFound),
        };
        let old_lease = current.as_ref().and_then(|kv| kv.lease);
        if old_lease != lease {
            if let Some(old) = old_lease {
                *self.held_by(old) -= 1;
            }
            if let Some(new) = lease {
                let held = self.held_by(new);
                if *held >= MAX_KEYS_PER_LEASE {
                    return Err(KeyspaceRejection::TooManyKeysForLease {
                        lease: new,
                        max: MAX_KEYS_PER_LEASE,
                    });
                }
                *held += 1;
            }
        }
        let revision = self.next();
        let kv = KeyValue {
            value: value.clone(),
            create_revision: current.as_ref().map_or(revision, |kv| kv.create_revision),
            mod_revision: revision,
            version: current.as_ref().map_or(0, |kv| kv.version) + 1,
            lease,
        };
        if current.is_none() {
            self.keys += 1;
        }
        self.changes.insert(key.clone(), Some(kv));
        self.events.push(
            KeyPut {
                key: key.clone(),
                value,
                lease,
                revision,
            }
            .into(),
        );
        Ok(OpOutcome::Put {
            revision,
            key: key.clone(),
            prev: if prev_kv { current } else { None },
        })
    }

    fn delete(&mut self, range: &KeyRange, prev_kv: bool) -> OpOutcome {
        let gone: Vec<(Bytes, KeyValue)> = self
            .merged(range)
            .into_iter()
            .map(|(k, v)| (Bytes(k.to_vec()), v.clone()))
            .collect();
        let revision = self.next();
        for (key, kv) in &gone {
            if let Some(lease) = kv.lease {
                *self.held_by(lease) -= 1;
            }
            self.keys -= 1;
            self.changes.insert(key.clone(), None);
            self.events.push(
                KeyDeleted {
                    key: key.clone(),
                    revision,
                    cause: DeleteCause::Request,
                }
                .into(),
            );
        }
        OpOutcome::DeleteRange {
            revision: self.now(),
            deleted: gone.len(),
            prev_kvs: if prev_kv { gone } else { Vec::new() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keyspace::KeyspaceCommand;
    use crate::domain::testing::{given, t};
    use crate::domain::Aggregate;

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

    fn deleted(key: &str, revision: i64) -> KeyspaceEvent {
        KeyDeleted {
            key: key.into(),
            revision,
            cause: DeleteCause::Request,
        }
        .into()
    }

    fn op_put(key: &str, value: &str) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: Some(value.into()),
            lease: LeaseUpdate::Set(None),
            prev_kv: false,
        }
    }

    fn op_put_lease(key: &str, lease: LeaseId) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: Some("v".into()),
            lease: LeaseUpdate::Set(Some(lease)),
            prev_kv: false,
        }
    }

    fn op_get(key: &str) -> TxnOp {
        TxnOp::Range {
            range: KeyRange::single(key),
            options: RangeOptions::default(),
            revision: 0,
        }
    }

    fn op_delete(range: KeyRange) -> TxnOp {
        TxnOp::DeleteRange { range, prev_kv: true }
    }

    fn value_is(key: &str, value: &str) -> Compare {
        Compare {
            range: KeyRange::single(key),
            target: CompareTarget::Value(value.into()),
            result: CompareResult::Equal,
        }
    }

    fn command(txn: Txn, live_leases: Vec<LeaseId>) -> KeyspaceCommand {
        KeyspaceCommand::Txn {
            txn,
            context: TxnContext {
                live_leases,
                max_keys: tenure_events::UNLIMITED,
            },
        }
    }

    fn when_then(compare: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Txn {
        Txn {
            compare,
            success,
            failure,
        }
    }

    fn fold(events: &[KeyspaceEvent]) -> Keyspace {
        let mut ks = Keyspace::default();
        for e in events {
            ks.evolve(e, t(0));
        }
        ks
    }

    fn run(events: &[KeyspaceEvent], txn: &Txn) -> (Vec<KeyspaceEvent>, TxnOutcome) {
        let context = TxnContext {
            live_leases: Vec::new(),
            max_keys: tenure_events::UNLIMITED,
        };
        fold(events).txn(txn, &context).expect("runs")
    }

    #[test]
    fn compare_and_swap_writes_only_when_the_value_matches() {
        let cas = when_then(vec![value_is("a", "1")], vec![op_put("a", "2")], vec![op_get("a")]);
        given::<Keyspace>([put("a", "1", None, 2)])
            .when(command(cas.clone(), vec![]))
            .then([put("a", "2", None, 3)]);
        given::<Keyspace>([put("a", "9", None, 2)])
            .when(command(cas.clone(), vec![]))
            .then([]);
        // A value compare over no key fails, even against the empty value.
        given::<Keyspace>([])
            .when(command(
                when_then(vec![value_is("a", "")], vec![op_put("a", "2")], vec![]),
                vec![],
            ))
            .then([]);
    }

    #[test]
    fn create_if_absent_compares_a_missing_key_at_zero() {
        let create = |key: &str| Compare {
            range: KeyRange::single(key),
            target: CompareTarget::Create(0),
            result: CompareResult::Equal,
        };
        let txn = when_then(vec![create("k")], vec![op_put("k", "x")], vec![]);
        given::<Keyspace>([])
            .when(command(txn.clone(), vec![]))
            .then([put("k", "x", None, 2)]);
        given::<Keyspace>([put("k", "y", None, 2)])
            .when(command(txn, vec![]))
            .then([]);
    }

    #[test]
    fn a_compare_over_a_range_holds_for_every_key_of_it() {
        let events = [
            put("p/a", "1", None, 2),
            put("p/b", "1", None, 3),
            put("p/b", "2", None, 4),
        ];
        let version = |result, v| Compare {
            range: KeyRange::prefix("p/"),
            target: CompareTarget::Version(v),
            result,
        };
        let holds = |c: Compare| run(&events, &when_then(vec![c], vec![], vec![])).1.succeeded;
        assert!(holds(version(CompareResult::Greater, 0)));
        assert!(!holds(version(CompareResult::Greater, 1)));
        assert!(holds(version(CompareResult::Less, 3)));
        assert!(holds(version(CompareResult::NotEqual, 3)));
        let modified = Compare {
            range: KeyRange::single("p/b"),
            target: CompareTarget::Mod(4),
            result: CompareResult::Equal,
        };
        assert!(holds(modified));
    }

    #[test]
    fn every_write_of_a_txn_shares_the_next_revision_and_folds() {
        let events = [put("a", "1", None, 2), put("gone", "1", None, 3)];
        let txn = when_then(
            vec![],
            vec![
                op_put("a", "2"),
                op_put("b", "1"),
                op_delete(KeyRange::single("gone")),
                op_get("b"),
            ],
            vec![],
        );
        let (recorded, outcome) = run(&events, &txn);
        assert_eq!(
            recorded,
            vec![put("a", "2", None, 4), put("b", "1", None, 4), deleted("gone", 4)]
        );
        // The range sees the txn's own writes, at its revision.
        let OpOutcome::Range { revision, result } = &outcome.responses[3] else {
            panic!("a range: {outcome:?}")
        };
        assert_eq!((*revision, result.kvs[0].1.mod_revision), (4, 4));
        // The events fold, at one revision, into what the txn answered.
        let mut ks = fold(&events);
        for e in &recorded {
            ks.evolve(e, t(0));
        }
        assert_eq!(ks.revision(), 4);
        assert_eq!(ks.get(b"b"), Some(&result.kvs[0].1));
        assert_eq!(ks.get(b"a").map(|kv| (kv.version, kv.create_revision)), Some((2, 2)));
        assert!(ks.get(b"gone").is_none());
    }

    #[test]
    fn a_txn_that_writes_nothing_records_nothing() {
        let txn = when_then(vec![], vec![op_get("a"), op_delete(KeyRange::single("zzz"))], vec![]);
        let (recorded, outcome) = run(&[put("a", "1", None, 2)], &txn);
        assert!(recorded.is_empty());
        assert!(matches!(
            outcome.responses[1],
            OpOutcome::DeleteRange {
                revision: 2,
                deleted: 0,
                ..
            }
        ));
    }

    #[test]
    fn nested_compares_see_the_key_space_before_the_txn() {
        let absent = Compare {
            range: KeyRange::single("f"),
            target: CompareTarget::Create(0),
            result: CompareResult::Equal,
        };
        let nested = when_then(vec![absent], vec![op_put("g", "1")], vec![op_put("h", "1")]);
        let txn = when_then(vec![], vec![op_put("f", "1"), TxnOp::Txn(nested)], vec![]);
        let (recorded, outcome) = run(&[], &txn);
        assert_eq!(recorded, vec![put("f", "1", None, 2), put("g", "1", None, 2)]);
        assert!(matches!(&outcome.responses[1], OpOutcome::Txn(inner) if inner.succeeded));
    }

    #[test]
    fn a_key_is_not_put_twice_nor_put_and_deleted_in_one_txn() {
        let check = |success: Vec<TxnOp>| when_then(vec![], success, vec![]).check_keys();
        assert_eq!(
            check(vec![op_put("x", "1"), op_put("x", "2")]),
            Err(KeyspaceRejection::DuplicateKey)
        );
        assert_eq!(
            check(vec![op_delete(KeyRange::prefix("x")), op_put("x", "1")]),
            Err(KeyspaceRejection::DuplicateKey)
        );
        let nested = |t: Vec<TxnOp>, f: Vec<TxnOp>| TxnOp::Txn(when_then(vec![], t, f));
        assert_eq!(
            check(vec![op_put("x", "1"), nested(vec![op_put("x", "2")], vec![])]),
            Err(KeyspaceRejection::DuplicateKey)
        );
        assert_eq!(
            check(vec![
                op_put("x", "1"),
                nested(vec![op_delete(KeyRange::single("x"))], vec![])
            ]),
            Err(KeyspaceRejection::DuplicateKey)
        );
        // The branches of a nested txn exclude each other; so do a txn's.
        assert_eq!(
            check(vec![nested(vec![op_put("x", "1")], vec![op_put("x", "2")])]),
            Ok(())
        );
        assert_eq!(
            when_then(vec![], vec![op_put("x", "1")], vec![op_put("x", "2")]).check_keys(),
            Ok(())
        );
        // etcd's check misses a delete to the end of the key space.
        let to_the_end = KeyRange {
            key: "a".into(),
            range_end: Bytes(vec![0]),
        };
        assert_eq!(check(vec![op_delete(to_the_end.clone()), op_put("x", "1")]), Ok(()));
        let (recorded, _) = run(
            &[put("x", "0", None, 2)],
            &when_then(
                vec![],
                vec![op_delete(to_the_end.clone()), op_put("x", "1"), op_delete(to_the_end)],
                vec![],
            ),
        );
        assert_eq!(recorded, vec![deleted("x", 3), put("x", "1", None, 3), deleted("x", 3)]);
        assert!(fold(
            &[put("x", "0", None, 2)]
                .iter()
                .chain(&recorded)
                .cloned()
                .collect::<Vec<_>>()
        )
        .is_empty());
        // Deletes may overlap.
        assert_eq!(
            check(vec![op_delete(KeyRange::prefix("")), op_delete(KeyRange::single("x"))]),
            Ok(())
        );
        given::<Keyspace>([])
            .when(command(
                when_then(vec![], vec![op_put("x", "1"), op_put("x", "1")], vec![]),
                vec![],
            ))
            .then_rejects(KeyspaceRejection::DuplicateKey);
    }

    #[test]
    fn a_lease_must_be_live_only_on_the_path_that_runs() {
        let txn = when_then(
            vec![value_is("a", "1")],
            vec![op_put_lease("k", lease(7))],
            vec![op_get("a")],
        );
        let events = [put("a", "1", None, 2)];
        given::<Keyspace>(events.clone())
            .when(command(txn.clone(), vec![]))
            .then_rejects(KeyspaceRejection::LeaseNotFound(lease(7)));
        given::<Keyspace>(events.clone())
            .when(command(txn.clone(), vec![lease(7)]))
            .then([put("k", "v", Some(lease(7)), 3)]);
        // Not on the path: no matter.
        given::<Keyspace>([put("a", "2", None, 2)])
            .when(command(txn.clone(), vec![]))
            .then([]);
        assert_eq!(txn.leases(), BTreeSet::from([lease(7)]));
    }

    #[test]
    fn a_range_at_the_revision_before_the_txn_does_not_see_its_writes() {
        let txn = when_then(
            vec![],
            vec![
                op_put("a", "2"),
                TxnOp::Range {
                    range: KeyRange::single("a"),
                    options: RangeOptions::default(),
                    revision: 2,
                },
                TxnOp::Range {
                    range: KeyRange::single("a"),
                    options: RangeOptions::default(),
                    revision: 1,
                },
            ],
            vec![],
        );
        let (_, outcome) = run(&[put("a", "1", None, 2)], &txn);
        let OpOutcome::Range { revision: 3, result } = &outcome.responses[1] else {
            panic!("{outcome:?}")
        };
        assert_eq!(result.kvs[0].1.value, Bytes::from("1"));
        assert!(matches!(
            outcome.responses[2],
            OpOutcome::RangeAt { at: 1, revision: 3, .. }
        ));
        let future = when_then(
            vec![],
            vec![TxnOp::Range {
                range: KeyRange::single("a"),
                options: RangeOptions::default(),
                revision: 3,
            }],
            vec![],
        );
        given::<Keyspace>([put("a", "1", None, 2)])
            .when(command(future, vec![]))
            .then_rejects(KeyspaceRejection::FutureRevision);
    }

    #[test]
    fn events_share_a_revision_only_after_a_change_and_never_for_one_key() {
        let ks = fold(&[put("a", "1", None, 2)]);
        assert!(ks.can_follow(&put("b", "1", None, 2)));
        assert!(ks.can_follow(&put("a", "1", None, 3)));
        assert!(
            !ks.can_follow(&put("a", "1", None, 2)),
            "a key put twice at one revision"
        );
        assert!(!ks.can_follow(&put("b", "1", None, 4)));
        assert!(
            !Keyspace::default().can_follow(&put("a", "1", None, 1)),
            "revision 1 is the empty space's"
        );
    }

    #[test]
    fn a_fold_up_to_a_revision_takes_a_txn_whole_or_not_at_all() {
        let events = [put("a", "1", None, 2), put("b", "1", None, 3), put("c", "1", None, 3)];
        let mut ks = Keyspace::default();
        let applied = events
            .iter()
            .take_while(|e| ks.evolve_up_to(2, e, t(0)).is_continue())
            .count();
        assert_eq!((applied, ks.len()), (1, 1));
        let mut ks = Keyspace::default();
        let applied = events
            .iter()
            .take_while(|e| ks.evolve_up_to(3, e, t(0)).is_continue())
            .count();
        assert_eq!((applied, ks.len(), ks.revision()), (3, 3, 3));
    }

    #[test]
    fn limits_count_the_keys_the_txn_creates() {
        let context = TxnContext {
            live_leases: vec![],
            max_keys: 2,
        };
        let ks = fold(&[put("a", "1", None, 2)]);
        let two = when_then(vec![], vec![op_put("b", "1"), op_put("c", "1")], vec![]);
        assert_eq!(
            ks.txn(&two, &context).err(),
            Some(KeyspaceRejection::KeyLimitReached { max: 2 })
        );
        let swap = when_then(vec![], vec![op_delete(KeyRange::single("a")), op_put("b", "1")], vec![]);
        assert!(ks.txn(&swap, &context).is_ok());
    }
}

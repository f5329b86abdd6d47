use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use tenure_events::{AccountId, LeaseEvent, LeaseId, RecordedEvent};

use crate::Projection;

/// A lease of an account: lease IDs are per account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey {
    pub account: AccountId,
    pub lease: LeaseId,
}

/// What the queue knows of a live lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveLease {
    pub ttl_s: i64,
    pub deadline: DateTime<Utc>,
}

/// The expiry timers: every live lease with its deadline, in a min-heap keyed
/// by deadline plus an index by lease (etcd's lease queue, mini-redis's
/// expirations), one index entry per lease.
///
/// The index is a pure fold of the log: granted and kept-alive leases are in
/// it, revoked and expired ones are not. The heap is the driver's work list:
/// [`ExpiryQueue::due`] pops the entries whose deadline has passed, and
/// stale heap entries (a lease kept alive since, or ended) are dropped lazily
/// when they surface. There is no rate limit: `due` hands out every lease
/// that is due.
///
/// **Restarts.** A lease never expires because the control plane was down:
/// deadlines are computed from `max(event time, floor) + ttl`, where the floor
/// is the moment this process started, so after a restart every live lease
/// gets its full TTL again (etcd does the same when a leader is elected).
#[derive(Debug, Clone)]
pub struct ExpiryQueue {
    floor: DateTime<Utc>,
    checkpoint: u64,
    live: HashMap<LeaseKey, LiveLease>,
    by_account: HashMap<AccountId, BTreeSet<LeaseId>>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, LeaseKey)>>,
}

impl ExpiryQueue {
    /// An empty queue whose deadlines are never earlier than `floor + ttl`.
    pub fn new(floor: DateTime<Utc>) -> ExpiryQueue {
        ExpiryQueue {
            floor,
            checkpoint: 0,
            live: HashMap::new(),
            by_account: HashMap::new(),
            heap: BinaryHeap::new(),
        }
    }

    /// The number of live leases.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn get(&self, key: &LeaseKey) -> Option<LiveLease> {
        self.live.get(key).copied()
    }

    /// Every live lease with its TTL, by account and ID (what the log says
    /// is live; deadlines left out).
    pub fn live_leases(&self) -> Vec<(&AccountId, LeaseId, i64)> {
        let mut leases: Vec<_> = self.live.iter().map(|(k, l)| (&k.account, k.lease, l.ttl_s)).collect();
        leases.sort_unstable();
        leases
    }

    /// Every live lease with what the queue knows of it, by account and ID.
    pub fn iter_live(&self) -> impl Iterator<Item = (&LeaseKey, &LiveLease)> {
        let mut leases: Vec<_> = self.live.iter().collect();
        leases.sort_unstable_by(|a, b| a.0.cmp(b.0));
        leases.into_iter()
    }

    /// The live leases of an account, in ID order.
    pub fn leases(&self, account: &AccountId) -> Vec<LeaseId> {
        self.by_account
            .get(account)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A page of live leases in (account, ID) order, those of `account` or
    /// of every account, with the total count: `offset` leases are skipped
    /// and at most `limit` returned. For the dashboard's lease list, which
    /// shows a window of a list that may be long.
    pub fn page(
        &self,
        account: Option<&AccountId>,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<(LeaseKey, LiveLease)>) {
        let mut accounts: Vec<(&AccountId, &BTreeSet<LeaseId>)> = match account {
            Some(a) => self.by_account.get_key_value(a).into_iter().collect(),
            None => self.by_account.iter().collect(),
        };
        accounts.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let total = accounts.iter().map(|(_, leases)| leases.len()).sum();
        let page = accounts
            .into_iter()
            .flat_map(|(account, leases)| leases.iter().map(move |lease| (account, *lease)))
            .skip(offset)
            .take(limit)
            .filter_map(|(account, lease)| {
                let key = LeaseKey {
                    account: account.clone(),
                    lease,
                };
                self.live.get(&key).map(|live| (key, *live))
            })
            .collect();
        (total, page)
    }

    /// How many leases of the account are live.
    pub fn count(&self, account: &AccountId) -> usize {
        self.by_account.get(account).map_or(0, BTreeSet::len)
    }

    /// Is the lease live (granted and neither revoked nor expired in the log)?
    pub fn is_live(&self, key: &LeaseKey) -> bool {
        self.live.contains_key(key)
    }

    /// Pops up to `max` leases whose deadline is at or before `now`, earliest
    /// first. Each popped lease stays live in the index until its expiry (or
    /// revocation) is applied from the log; if the actor answers that it is
    /// not due after all, call [`ExpiryQueue::reschedule`].
    pub fn due(&mut self, now: DateTime<Utc>, max: usize) -> Vec<(LeaseKey, DateTime<Utc>)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(Reverse((deadline, _))) = self.heap.peek() else {
                break;
            };
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, key))) = self.heap.pop() else {
                break;
            };
            if self.live.get(&key).is_some_and(|l| l.deadline == deadline) {
                out.push((key, deadline));
            }
        }
        out
    }

    /// The earliest deadline still in the heap, dropping stale entries.
    pub fn next_deadline(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((deadline, key))) = self.heap.peek() {
            if self.live.get(key).is_some_and(|l| l.deadline == *deadline) {
                return Some(*deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Puts a live lease back in the heap at `at`: the actor said its deadline
    /// is later than the queue thought, or expiring it failed and it must be
    /// tried again. A lease that has ended in the meantime is left alone.
    pub fn reschedule(&mut self, key: &LeaseKey, at: DateTime<Utc>) {
        if let Some(live) = self.live.get_mut(key) {
            live.deadline = at;
            self.heap.push(Reverse((at, key.clone())));
        }
    }

    fn deadline(&self, time: DateTime<Utc>, ttl_s: i64) -> DateTime<Utc> {
        let start = time.max(self.floor);
        start
            .checked_add_signed(TimeDelta::try_seconds(ttl_s).unwrap_or(TimeDelta::MAX))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn refresh(&mut self, key: LeaseKey, ttl_s: i64, time: DateTime<Utc>) {
        let deadline = self.deadline(time, ttl_s);
        self.by_account
            .entry(key.account.clone())
            .or_default()
            .insert(key.lease);
        self.heap.push(Reverse((deadline, key.clone())));
        self.live.insert(key, LiveLease { ttl_s, deadline });
    }

    fn end(&mut self, key: &LeaseKey) {
        if self.live.remove(key).is_some() {
            if let Some(set) = self.by_account.get_mut(&key.account) {
                set.remove(&key.lease);
                if set.is_empty() {
                    self.by_account.remove(&key.account);
                }
            }
        }
    }
}

impl Projection for ExpiryQueue {
    const NAME: &'static str = "expiry-queue";

    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn apply(&mut self, event: &RecordedEvent) {
        if !crate::advance(&mut self.checkpoint, event) {
            return;
        }
        if event.stream.category() != "lease" {
            return;
        }
        let lease_event = match event.decode_as::<LeaseEvent>() {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(position = event.position, %err, "expiry queue skips an event it cannot decode");
                return;
            }
        };
        let account = event.account.clone();
        match lease_event {
            LeaseEvent::Granted(g) => self.refresh(
                LeaseKey {
                    account,
                    lease: g.lease,
                },
                g.ttl_s,
                event.time,
            ),
            LeaseEvent::KeptAlive(k) => {
                let key = LeaseKey {
                    account,
                    lease: k.lease,
                };
                if let Some(ttl_s) = self.live.get(&key).map(|l| l.ttl_s) {
                    self.refresh(key, ttl_s, event.time);
                }
            }
            LeaseEvent::Revoked(r) => self.end(&LeaseKey {
                account,
                lease: r.lease,
            }),
            LeaseEvent::Expired(x) => self.end(&LeaseKey {
                account,
                lease: x.lease,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_events::{
        EventSet, LeaseExpired, LeaseGranted, LeaseKeptAlive, LeaseRevoked, Metadata, NewEvent, StreamId,
    };

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("valid time")
    }

    struct Log {
        position: u64,
    }

    impl Log {
        fn event(&mut self, lease: i64, e: impl Into<LeaseEvent>, at: DateTime<Utc>) -> RecordedEvent {
            let account = AccountId::default_account();
            let id = LeaseId::new(lease).expect("positive");
            let e: LeaseEvent = e.into();
            self.position += 1;
            let new = NewEvent::new(&e, &Metadata::new(account.clone()), at);
            RecordedEvent::from_new(new, StreamId::lease(&account, id), 1, self.position)
        }
    }

    fn key(lease: i64) -> LeaseKey {
        LeaseKey {
            account: AccountId::default_account(),
            lease: LeaseId::new(lease).expect("positive"),
        }
    }

    fn granted(lease: i64, ttl_s: i64) -> LeaseGranted {
        LeaseGranted {
            lease: LeaseId::new(lease).expect("positive"),
            ttl_s,
            requested_ttl_s: ttl_s,
        }
    }

    #[test]
    fn due_leases_come_out_in_deadline_order_and_only_once() {
        let mut log = Log { position: 0 };
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 30), t(0)));
        q.apply(&log.event(2, granted(2, 10), t(0)));
        q.apply(&log.event(3, granted(3, 20), t(0)));
        assert_eq!(q.due(t(9), usize::MAX), vec![]);
        assert_eq!(q.next_deadline(), Some(t(10)));
        let due: Vec<_> = q.due(t(25), usize::MAX).into_iter().map(|(k, _)| k).collect();
        assert_eq!(due, vec![key(2), key(3)]);
        assert_eq!(q.due(t(25), usize::MAX), vec![]);
        // Popped leases stay live until the log says they ended.
        assert!(q.is_live(&key(2)));
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn keep_alive_moves_the_deadline_and_the_old_entry_goes_stale() {
        let mut log = Log { position: 0 };
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        q.apply(&log.event(
            1,
            LeaseKeptAlive {
                lease: LeaseId::new(1).expect("positive"),
            },
            t(8),
        ));
        assert_eq!(q.due(t(12), usize::MAX), vec![]);
        assert_eq!(q.due(t(18), usize::MAX), vec![(key(1), t(18))]);
    }

    #[test]
    fn revoked_and_expired_leases_leave_the_index() {
        let mut log = Log { position: 0 };
        let mut q = ExpiryQueue::new(t(0));
        let one = LeaseId::new(1).expect("positive");
        let two = LeaseId::new(2).expect("positive");
        q.apply(&log.event(1, granted(1, 10), t(0)));
        q.apply(&log.event(2, granted(2, 10), t(0)));
        q.apply(&log.event(1, LeaseRevoked { lease: one }, t(1)));
        q.apply(&log.event(
            2,
            LeaseExpired {
                lease: two,
                deadline: t(10),
            },
            t(10),
        ));
        assert!(q.is_empty());
        assert_eq!(q.leases(&AccountId::default_account()), vec![]);
        assert_eq!(q.due(t(100), usize::MAX), vec![]);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn after_a_restart_every_live_lease_gets_its_full_ttl_from_the_floor() {
        let mut log = Log { position: 0 };
        let mut q = ExpiryQueue::new(t(1000)); // the process started at t=1000
        q.apply(&log.event(1, granted(1, 10), t(0)));
        q.apply(&log.event(2, granted(2, 100), t(950)));
        assert_eq!(q.get(&key(1)).map(|l| l.deadline), Some(t(1010)));
        assert_eq!(q.get(&key(2)).map(|l| l.deadline), Some(t(1100)));
    }

    #[test]
    fn applying_an_event_twice_changes_nothing() {
        let mut log = Log { position: 0 };
        let mut q = ExpiryQueue::new(t(0));
        let grant = log.event(1, granted(1, 10), t(0));
        let revoke = log.event(
            1,
            LeaseRevoked {
                lease: LeaseId::new(1).expect("positive"),
            },
            t(1),
        );
        q.apply(&grant);
        q.apply(&revoke);
        q.apply(&grant);
        assert!(q.is_empty());
        assert_eq!(q.checkpoint(), 2);
    }

    #[test]
    fn reschedule_only_touches_live_leases() {
        let mut log = Log { position: 0 };
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        assert_eq!(q.due(t(10), usize::MAX).len(), 1);
        q.reschedule(&key(1), t(15));
        q.reschedule(&key(9), t(15));
        assert_eq!(q.due(t(14), usize::MAX), vec![]);
        assert_eq!(q.due(t(15), usize::MAX), vec![(key(1), t(15))]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn due_respects_its_bound() {
        let mut log = Log { position: 0 };
        let mut q = ExpiryQueue::new(t(0));
        for i in 1..=10 {
            q.apply(&log.event(i, granted(i, 5), t(0)));
        }
        assert_eq!(q.due(t(5), 4).len(), 4);
        assert_eq!(q.due(t(5), usize::MAX).len(), 6);
    }

    #[test]
    fn non_lease_events_only_move_the_checkpoint() {
        let mut q = ExpiryQueue::new(t(0));
        let account = AccountId::default_account();
        let e = tenure_events::KeyspaceEvent::from(tenure_events::KeyPut {
            key: "k".into(),
            value: "v".into(),
            lease: None,
            revision: 2,
        });
        let new = NewEvent::new(&e, &Metadata::new(account.clone()), t(0));
        assert_eq!(new.event_type, e.event_type());
        q.apply(&RecordedEvent::from_new(new, StreamId::keyspace(&account), 1, 7));
        assert_eq!(q.checkpoint(), 7);
        assert!(q.is_empty());
    }
}

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use tenure_events::{AccountId, LeaseEvent, LeaseId, RecordedEvent};

use crate::compact::Inserts;
use crate::snapshot::{invalid, lease_id, strictly_ordered, ExpirySnapshot, RestoreError, Time};
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
    /// When the lease dies unless kept alive (keep-alives included).
    pub deadline: DateTime<Utc>,
}

/// A lease the expiry driver must end now: [`ExpiryQueue::due`] marked it
/// *ending*, so it can no longer be renewed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    pub key: LeaseKey,
    /// Which grant of this ID (the stream version of its `LeaseGranted`).
    pub granted: u64,
    pub deadline: DateTime<Utc>,
    /// The granted TTL.
    pub ttl_s: i64,
    /// The time of the lease's grant (or of its last keep-alive event, in
    /// an old log): with `granted` and `ttl_s`, what folding its stream up
    /// to the grant gives, so a passivated lease actor can start from it
    /// instead of reading its stream.
    pub refreshed: DateTime<Utc>,
}

/// What the queue folded of a live lease's grant: what folding its stream
/// up to that grant gives (see [`Due::refreshed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    /// The stream version of its `LeaseGranted`.
    pub version: u64,
    pub ttl_s: i64,
    pub refreshed: DateTime<Utc>,
}

/// A keep-alive found no lease to renew: it is not live in the log, its
/// deadline has passed, or its expiry is under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLive;

/// What the queue says of one grant of a lease (see [`ExpiryQueue::grant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantState {
    /// The queue has not applied this grant (yet), or holds another grant
    /// of the same ID: only the lease's own stream knows, and no keep-alive
    /// can have moved its deadline.
    Unseen,
    /// Live until `deadline`, keep-alives included.
    Live { deadline: DateTime<Utc> },
    /// Its deadline passed and the expiry driver is ending it.
    Ending,
}

/// What the queue keeps of a live lease: 40 bytes, beside its 8-byte ID in
/// its account's map (and a 24-byte heap entry).
#[derive(Clone, Copy, Debug)]
struct Entry {
    ttl_s: i64,
    deadline: DateTime<Utc>,
    /// The time of the lease's last grant or (old logs) keep-alive event:
    /// what the log says, while the deadline may have moved in memory
    /// since. What a snapshot keeps.
    refreshed: DateTime<Utc>,
    grant: Grant,
}

/// The stream version of a lease's grant (tells two grants of one ID
/// apart), with the *ending* mark in its top bit, which a version never
/// uses (the store keeps versions as SQLite's signed 64-bit integers): the
/// mark is taken by [`ExpiryQueue::due`], and renewals fail until the log
/// says the lease ended (or the lease actor says it is not due after all).
/// Packed so that an [`Entry`] takes 40 bytes, not 48.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grant(u64);

impl Grant {
    const ENDING: u64 = 1 << 63;

    /// A live (not ending) grant at stream version `version`, if it fits.
    fn new(version: u64) -> Option<Grant> {
        (version < Self::ENDING).then_some(Grant(version))
    }

    fn version(self) -> u64 {
        self.0 & !Self::ENDING
    }

    fn ending(self) -> bool {
        self.0 & Self::ENDING != 0
    }

    fn set_ending(&mut self, ending: bool) {
        self.0 = if ending { self.0 | Self::ENDING } else { self.version() };
    }
}

/// An account's live leases, in ID order.
#[derive(Clone, Debug)]
struct AccountLeases {
    account: AccountId,
    leases: BTreeMap<LeaseId, Entry>,
}

/// A heap entry: a deadline, the number of the lease's account (its index
/// in `ExpiryQueue::accounts`) and the lease. 24 bytes, where one holding
/// the account's name would take 40.
type Timer = Reverse<(DateTime<Utc>, u32, LeaseId)>;

/// The expiry timers: every live lease with its deadline, in a min-heap keyed
/// by deadline plus an index by lease (etcd's lease queue, mini-redis's
/// expirations), one index entry per lease.
///
/// **What the log decides, what memory decides.** Which leases are live and
/// their TTLs are a pure fold of the log: granted leases are in the index,
/// revoked and expired ones are not. Deadlines are not: a keep-alive is no
/// event, it moves a deadline here ([`ExpiryQueue::renew`]) and nowhere
/// else, so deadlines (and the *ending* marks) live in memory only, and
/// are rebuilt on a restart from the floor (below). The digest covers the
/// live set and TTLs only.
///
/// **The heap** is the driver's work list: [`ExpiryQueue::due`] pops the
/// entries whose time has come. A renewal does not touch it: when an entry
/// surfaces for a lease whose deadline has moved since, it is pushed again
/// at the new deadline; entries of ended leases are dropped. So a renewal
/// costs one index lookup, and the heap holds about one entry per lease.
/// There is no rate limit: `due` hands out every lease that is due.
///
/// **Memory.** A live lease costs its entry in its account's B-tree (ID and
/// [`Entry`], 48 bytes, in nodes between half and wholly full) and its heap
/// entry (24 bytes); the index is by account, then by ID, so no entry holds
/// an account name, and the B-tree is also the account's lease list in ID
/// order (no separate set). Accounts are numbered in the order they are
/// first seen (numbers are never reused; accounts are few).
///
/// **Races.** `due` marks what it hands out *ending*, under the same lock as
/// [`ExpiryQueue::renew`], after checking the deadline has passed; a renewal
/// of an ending lease fails. So a lease is never expired once a keep-alive
/// has been answered for it, and a keep-alive answers "not found" for a
/// lease whose expiry has begun.
///
/// **Restarts.** A lease never expires because the control plane was down:
/// deadlines are computed from `max(event time, floor) + ttl`, where the floor
/// is the moment this process started, so after a restart every live lease
/// gets its full TTL again (etcd does the same when a leader is elected).
///
/// **Several nodes.** On a shared log one node runs the timers and gets
/// every keep-alive; the others fold the same live set but their deadlines
/// are not moved by those keep-alives, so they do not judge by them
/// ([`ExpiryQueue::follow_timers`]): a lease live in the log is live for
/// them. A node that takes the timers over gives every live lease its full
/// TTL from that moment ([`ExpiryQueue::take_over`]), as after a restart.
#[derive(Debug, Clone)]
pub struct ExpiryQueue {
    floor: DateTime<Utc>,
    /// Whether deadlines decide what is live (this node runs the timers).
    judging: bool,
    checkpoint: u64,
    /// By account number.
    accounts: Vec<AccountLeases>,
    numbers: HashMap<AccountId, u32>,
    /// Live leases, over all accounts.
    len: usize,
    heap: BinaryHeap<Timer>,
    inserts: Inserts,
}

impl ExpiryQueue {
    /// An empty queue whose deadlines are never earlier than `floor + ttl`.
    pub fn new(floor: DateTime<Utc>) -> ExpiryQueue {
        ExpiryQueue {
            floor,
            judging: true,
            checkpoint: 0,
            accounts: Vec::new(),
            numbers: HashMap::new(),
            len: 0,
            heap: BinaryHeap::new(),
            inserts: Inserts::default(),
        }
    }

    /// Rebuilds the index with full nodes if enough leases were granted
    /// since the last rebuild (see [`crate::compact`]), and gives back the
    /// heap's room if it holds less than a quarter of it (after a mass
    /// expiry). Called when a snapshot is taken.
    pub fn compact(&mut self) {
        if self.inserts.due(self.len) {
            for account in &mut self.accounts {
                crate::compact::rebuild(&mut account.leases);
            }
        }
        if self.heap.capacity() > crate::compact::MIN_LEN && self.heap.len() < self.heap.capacity() / 4 {
            self.heap.shrink_to_fit();
        }
    }

    /// The number of live leases.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A lease the log says is live (its deadline may have passed).
    pub fn get(&self, key: &LeaseKey) -> Option<LiveLease> {
        self.entry(key).map(Entry::view)
    }

    /// A lease that is live for clients at `now`: live in the log, its
    /// deadline not passed and its expiry not begun. What keep-alive,
    /// time-to-live and puts go by.
    pub fn alive_at(&self, key: &LeaseKey, now: DateTime<Utc>) -> Option<LiveLease> {
        self.entry(key)
            .filter(|e| !e.grant.ending() && (!self.judging || now < e.deadline))
            .map(Entry::view)
    }

    /// Another node runs the timers: deadlines here no longer decide what
    /// is live (keep-alives move that node's, not these).
    pub fn follow_timers(&mut self) {
        self.judging = false;
    }

    /// This node takes the timers over at `now`: every live lease gets
    /// its full TTL from now (never less than it had), no lease is
    /// *ending*, and later grants count from no earlier than now.
    pub fn take_over(&mut self, now: DateTime<Utc>) {
        self.judging = true;
        self.floor = self.floor.max(now);
        let mut heap = Vec::with_capacity(self.len);
        for (number, a) in self.accounts.iter_mut().enumerate() {
            let number = u32::try_from(number).expect("fewer than 2^32 accounts");
            for (lease, e) in a.leases.iter_mut() {
                e.deadline = e.deadline.max(add_seconds(now, e.ttl_s));
                e.grant.set_ending(false);
                heap.push(Reverse((e.deadline, number, *lease)));
            }
        }
        self.heap = BinaryHeap::from(heap);
    }

    /// Whether this queue's deadlines decide (it runs the timers).
    pub fn is_judging(&self) -> bool {
        self.judging
    }

    /// The grant of `key`, if the queue holds it live (its expiry may be
    /// under way: see [`ExpiryQueue::grant`]).
    pub fn grant_record(&self, key: &LeaseKey) -> Option<GrantRecord> {
        self.entry(key).map(|e| GrantRecord {
            version: e.grant.version(),
            ttl_s: e.ttl_s,
            refreshed: e.refreshed,
        })
    }

    /// What the queue says of the grant of `key` recorded at stream version
    /// `granted`.
    pub fn grant(&self, key: &LeaseKey, granted: u64) -> GrantState {
        match self.entry(key) {
            Some(e) if e.grant.version() == granted && e.grant.ending() => GrantState::Ending,
            Some(e) if e.grant.version() == granted => GrantState::Live {
                deadline: if self.judging {
                    e.deadline
                } else {
                    DateTime::<Utc>::MAX_UTC
                },
            },
            _ => GrantState::Unseen,
        }
    }

    /// A keep-alive: the lease's deadline becomes `now + ttl` (never
    /// earlier than it was). Answers the granted TTL, or [`NotLive`] if the
    /// lease is not live for clients at `now` (see [`ExpiryQueue::alive_at`]).
    pub fn renew(&mut self, key: &LeaseKey, now: DateTime<Utc>) -> Result<i64, NotLive> {
        let judging = self.judging;
        let entry = self.entry_mut(key).ok_or(NotLive)?;
        if entry.grant.ending() || (judging && now >= entry.deadline) {
            return Err(NotLive);
        }
        entry.deadline = entry.deadline.max(add_seconds(now, entry.ttl_s));
        Ok(entry.ttl_s)
    }

    /// Every live lease with its TTL, by account and ID (what the log says
    /// is live; deadlines left out).
    pub fn live_leases(&self) -> Vec<(&AccountId, LeaseId, i64)> {
        let mut leases = Vec::with_capacity(self.len);
        for a in self.by_name() {
            leases.extend(a.leases.iter().map(|(lease, e)| (&a.account, *lease, e.ttl_s)));
        }
        leases
    }

    /// Every live lease with what the queue knows of it, by account and ID.
    pub fn iter_live(&self) -> impl Iterator<Item = (LeaseKey, LiveLease)> + '_ {
        self.by_name().into_iter().flat_map(AccountLeases::iter)
    }

    /// The live leases of an account, in ID order.
    pub fn leases(&self, account: &AccountId) -> Vec<LeaseId> {
        self.account(account)
            .map(|a| a.leases.keys().copied().collect())
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
        let accounts: Vec<&AccountLeases> = match account {
            Some(a) => self.account(a).into_iter().collect(),
            None => self.by_name(),
        };
        let total = accounts.iter().map(|a| a.leases.len()).sum();
        let page = accounts
            .into_iter()
            .flat_map(AccountLeases::iter)
            .skip(offset)
            .take(limit)
            .collect();
        (total, page)
    }

    /// How many leases of the account are live.
    pub fn count(&self, account: &AccountId) -> usize {
        self.account(account).map_or(0, |a| a.leases.len())
    }

    /// Is the lease live (granted and neither revoked nor expired in the log)?
    pub fn is_live(&self, key: &LeaseKey) -> bool {
        self.entry(key).is_some()
    }

    /// Pops up to `max` leases whose deadline is at or before `now`, earliest
    /// first, and marks each *ending*: from here on it cannot be renewed.
    /// Each stays live in the index until its expiry (or revocation) is
    /// applied from the log; if the actor answers that it is not due after
    /// all, call [`ExpiryQueue::reschedule`].
    pub fn due(&mut self, now: DateTime<Utc>, max: usize) -> Vec<Due> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.heap.peek() {
                Some(Reverse((at, ..))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((_, number, lease))) = self.heap.pop() else {
                break;
            };
            let Some(a) = self.accounts.get_mut(number as usize) else {
                continue;
            };
            let Some(entry) = a.leases.get_mut(&lease) else {
                continue; // ended
            };
            if entry.grant.ending() {
                continue; // handed out already
            }
            if entry.deadline > now {
                // Kept alive since this entry was pushed.
                self.heap.push(Reverse((entry.deadline, number, lease)));
                continue;
            }
            entry.grant.set_ending(true);
            out.push(Due {
                granted: entry.grant.version(),
                deadline: entry.deadline,
                ttl_s: entry.ttl_s,
                refreshed: entry.refreshed,
                key: LeaseKey {
                    account: a.account.clone(),
                    lease,
                },
            });
        }
        out
    }

    /// The earliest deadline of a lease not yet handed out by
    /// [`ExpiryQueue::due`]; heap entries of ended leases are dropped and
    /// those of renewed leases moved to their deadline on the way.
    pub fn next_deadline(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((at, number, lease))) = self.heap.peek() {
            let entry = self.accounts.get(*number as usize).and_then(|a| a.leases.get(lease));
            match entry {
                Some(e) if !e.grant.ending() && e.deadline == *at => return Some(*at),
                Some(e) if !e.grant.ending() => {
                    let deadline = e.deadline;
                    if let Some(Reverse((_, number, lease))) = self.heap.pop() {
                        self.heap.push(Reverse((deadline, number, lease)));
                    }
                }
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// The lease actor answered that the lease handed out by `due` is not
    /// due until `deadline` (the clock went back between the two): it is
    /// live again and back in the heap. Does nothing if that grant of the
    /// lease has ended (or was never handed out).
    pub fn reschedule(&mut self, key: &LeaseKey, granted: u64, deadline: DateTime<Utc>) {
        let Some(&number) = self.numbers.get(&key.account) else {
            return;
        };
        if let Some(entry) = self.entry_mut(key) {
            if entry.grant.version() == granted && entry.grant.ending() {
                entry.grant.set_ending(false);
                entry.deadline = entry.deadline.max(deadline);
                let at = entry.deadline;
                self.heap.push(Reverse((at, number, key.lease)));
            }
        }
    }

    /// Is the lease's expiry under way (handed out by `due`, not yet
    /// recorded)? For retrying an expiry that failed.
    pub fn is_ending(&self, key: &LeaseKey, granted: u64) -> bool {
        self.grant(key, granted) == GrantState::Ending
    }

    fn account(&self, account: &AccountId) -> Option<&AccountLeases> {
        let number = *self.numbers.get(account)?;
        self.accounts.get(number as usize)
    }

    fn entry(&self, key: &LeaseKey) -> Option<&Entry> {
        self.account(&key.account)?.leases.get(&key.lease)
    }

    fn entry_mut(&mut self, key: &LeaseKey) -> Option<&mut Entry> {
        let number = *self.numbers.get(&key.account)?;
        self.accounts.get_mut(number as usize)?.leases.get_mut(&key.lease)
    }

    /// The accounts holding live leases, by name.
    fn by_name(&self) -> Vec<&AccountLeases> {
        let mut accounts: Vec<&AccountLeases> = self.accounts.iter().filter(|a| !a.leases.is_empty()).collect();
        accounts.sort_unstable_by(|a, b| a.account.cmp(&b.account));
        accounts
    }

    /// The account's number, given one if it has none yet.
    fn number(&mut self, account: &AccountId) -> u32 {
        if let Some(&number) = self.numbers.get(account) {
            return number;
        }
        let number = u32::try_from(self.accounts.len()).expect("fewer than 2^32 accounts");
        self.accounts.push(AccountLeases {
            account: account.clone(),
            leases: BTreeMap::new(),
        });
        self.numbers.insert(account.clone(), number);
        number
    }

    fn deadline(&self, time: DateTime<Utc>, ttl_s: i64) -> DateTime<Utc> {
        add_seconds(time.max(self.floor), ttl_s)
    }

    fn granted(&mut self, key: LeaseKey, ttl_s: i64, time: DateTime<Utc>, granted: u64) {
        let Some(grant) = Grant::new(granted) else {
            tracing::error!(
                version = granted,
                "expiry queue skips a grant whose stream version is out of range"
            );
            return;
        };
        let deadline = self.deadline(time, ttl_s);
        let number = self.number(&key.account);
        self.heap.push(Reverse((deadline, number, key.lease)));
        let entry = Entry {
            ttl_s,
            deadline,
            refreshed: time,
            grant,
        };
        if self.accounts[number as usize].leases.insert(key.lease, entry).is_none() {
            self.len += 1;
            self.inserts.add();
        }
    }

    /// A `LeaseKeptAlive` of an old log (servers no longer write them).
    fn kept_alive(&mut self, key: &LeaseKey, time: DateTime<Utc>) {
        let floor = self.floor;
        if let Some(entry) = self.entry_mut(key) {
            entry.refreshed = entry.refreshed.max(time);
            entry.deadline = entry.deadline.max(add_seconds(time.max(floor), entry.ttl_s));
        }
    }

    fn end(&mut self, key: &LeaseKey) {
        let Some(&number) = self.numbers.get(&key.account) else {
            return;
        };
        if let Some(a) = self.accounts.get_mut(number as usize) {
            if a.leases.remove(&key.lease).is_some() {
                self.len -= 1;
            }
        }
    }

    /// What the log says of the live leases (see [`ExpirySnapshot`]):
    /// deadlines are left out, they depend on when and how long this
    /// process has run.
    pub fn snapshot(&self) -> ExpirySnapshot {
        let accounts = self
            .by_name()
            .into_iter()
            .map(|a| {
                let leases = a
                    .leases
                    .iter()
                    .map(|(lease, e)| (lease.get(), e.ttl_s, Time::from(e.refreshed), e.grant.version()))
                    .collect();
                (a.account.clone(), leases)
            })
            .collect();
        ExpirySnapshot { accounts }
    }

    /// The queue a snapshot taken at `checkpoint` holds, each deadline
    /// computed from `floor` as [`Projection::apply`] would have.
    pub fn restore(
        snapshot: ExpirySnapshot,
        checkpoint: u64,
        floor: DateTime<Utc>,
    ) -> Result<ExpiryQueue, RestoreError> {
        let mut queue = ExpiryQueue::new(floor);
        queue.checkpoint = checkpoint;
        strictly_ordered(&snapshot.accounts, |(a, _)| a.clone(), "accounts of the expiry queue")?;
        let total = snapshot.accounts.iter().map(|(_, leases)| leases.len()).sum();
        let mut heap = Vec::with_capacity(total);
        for (account, leases) in snapshot.accounts {
            strictly_ordered(&leases, |(lease, ..)| *lease, "leases of an account")?;
            if leases.is_empty() {
                return invalid(format!("account {account} has an empty lease set"));
            }
            let number = queue.number(&account);
            let mut entries = Vec::with_capacity(leases.len());
            for (lease, ttl_s, refreshed, granted) in leases {
                let lease = lease_id(lease)?;
                let refreshed = refreshed.to_datetime()?;
                let Some(grant) = Grant::new(granted) else {
                    return invalid(format!("lease {lease} has a grant version {granted} out of range"));
                };
                let deadline = add_seconds(refreshed.max(floor), ttl_s);
                heap.push(Reverse((deadline, number, lease)));
                entries.push((
                    lease,
                    Entry {
                        ttl_s,
                        deadline,
                        refreshed,
                        grant,
                    },
                ));
            }
            queue.len += entries.len();
            // In ID order (checked above): built in one pass, its nodes full.
            queue.accounts[number as usize].leases = entries.into_iter().collect();
        }
        queue.heap = BinaryHeap::from(heap);
        Ok(queue)
    }
}

impl AccountLeases {
    fn iter(&self) -> impl Iterator<Item = (LeaseKey, LiveLease)> + '_ {
        self.leases.iter().map(|(lease, e)| {
            let key = LeaseKey {
                account: self.account.clone(),
                lease: *lease,
            };
            (key, e.view())
        })
    }
}

impl Entry {
    fn view(&self) -> LiveLease {
        LiveLease {
            ttl_s: self.ttl_s,
            deadline: self.deadline,
        }
    }
}

fn add_seconds(t: DateTime<Utc>, s: i64) -> DateTime<Utc> {
    t.checked_add_signed(TimeDelta::try_seconds(s).unwrap_or(TimeDelta::MAX))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
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
            LeaseEvent::Granted(g) => self.granted(
                LeaseKey {
                    account,
                    lease: g.lease,
                },
                g.ttl_s,
                event.time,
                event.version,
            ),
            LeaseEvent::KeptAlive(k) => self.kept_alive(
                &LeaseKey {
                    account,
                    lease: k.lease,
                },
                event.time,
            ),
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
    use crate::Digest;
    use tenure_events::{
        EventSet, LeaseExpired, LeaseGranted, LeaseKeptAlive, LeaseRevoked, Metadata, NewEvent, StreamId,
    };

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("valid time")
    }

    /// Events as the store records them: global positions, and versions
    /// per lease stream.
    #[derive(Default)]
    struct Log {
        position: u64,
        versions: HashMap<(AccountId, i64), u64>,
    }

    impl Log {
        fn event(&mut self, lease: i64, e: impl Into<LeaseEvent>, at: DateTime<Utc>) -> RecordedEvent {
            self.event_of(AccountId::default_account(), lease, e, at)
        }

        fn event_of(
            &mut self,
            account: AccountId,
            lease: i64,
            e: impl Into<LeaseEvent>,
            at: DateTime<Utc>,
        ) -> RecordedEvent {
            let id = LeaseId::new(lease).expect("positive");
            let e: LeaseEvent = e.into();
            self.position += 1;
            let version = self.versions.entry((account.clone(), lease)).or_default();
            *version += 1;
            let new = NewEvent::new(&e, &Metadata::new(account.clone()), at);
            RecordedEvent::from_new(new, StreamId::lease(&account, id), *version, self.position)
        }
    }

    fn key(lease: i64) -> LeaseKey {
        LeaseKey {
            account: AccountId::default_account(),
            lease: LeaseId::new(lease).expect("positive"),
        }
    }

    fn id(lease: i64) -> LeaseId {
        LeaseId::new(lease).expect("positive")
    }

    fn granted(lease: i64, ttl_s: i64) -> LeaseGranted {
        LeaseGranted {
            lease: id(lease),
            ttl_s,
            requested_ttl_s: ttl_s,
        }
    }

    fn keys(due: Vec<Due>) -> Vec<LeaseKey> {
        due.into_iter().map(|d| d.key).collect()
    }

    /// Rebuilding the index keeps every lease and its TTL, and each comes
    /// due; after a mass expiry the heap gives its room back.
    #[test]
    fn compacting_keeps_every_lease_and_deadline() {
        let n = crate::compact::MIN_LEN as i64 * 2;
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        for lease in 1..=n {
            q.apply(&log.event(lease, granted(lease, 10 + lease % 50), t(0)));
        }
        let live = |q: &ExpiryQueue| -> Vec<(String, LeaseId, i64)> {
            q.live_leases()
                .into_iter()
                .map(|(a, l, ttl)| (a.to_string(), l, ttl))
                .collect()
        };
        let before = live(&q);
        let digest = q.digest();
        q.compact();
        assert_eq!(live(&q), before);
        assert_eq!(q.digest(), digest);
        assert!(q.renew(&key(7), t(5)).is_ok(), "a lease is still found by its ID");
        let mut due: Vec<LeaseId> = q.due(t(100), usize::MAX).into_iter().map(|d| d.key.lease).collect();
        due.sort();
        assert_eq!(due, (1..=n).map(id).collect::<Vec<_>>(), "every lease comes due once");
        assert!(q.heap.capacity() as i64 >= n);
        q.compact();
        assert!(
            q.heap.capacity() < crate::compact::MIN_LEN,
            "the heap's room is given back: {}",
            q.heap.capacity()
        );
    }

    #[test]
    fn due_leases_come_out_in_deadline_order_and_only_once() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 30), t(0)));
        q.apply(&log.event(2, granted(2, 10), t(0)));
        q.apply(&log.event(3, granted(3, 20), t(0)));
        assert_eq!(q.due(t(9), usize::MAX), vec![]);
        assert_eq!(q.next_deadline(), Some(t(10)));
        let due = q.due(t(25), usize::MAX);
        assert_eq!(
            due[0],
            Due {
                key: key(2),
                granted: 1,
                deadline: t(10),
                ttl_s: 10,
                refreshed: t(0),
            }
        );
        assert_eq!(keys(due), vec![key(2), key(3)]);
        assert_eq!(q.due(t(25), usize::MAX), vec![]);
        // Popped leases stay live until the log says they ended.
        assert!(q.is_live(&key(2)));
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_deadline(), Some(t(30)));
    }

    #[test]
    fn a_renewal_moves_the_deadline_in_memory_only() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        let digest = q.digest();
        assert_eq!(q.renew(&key(1), t(8)), Ok(10));
        assert_eq!(q.get(&key(1)).map(|l| l.deadline), Some(t(18)));
        assert_eq!(q.alive_at(&key(1), t(17)).map(|l| l.ttl_s), Some(10));
        // Not an event: the checkpoint and the digest stay where the log put them.
        assert_eq!(q.checkpoint(), 1);
        assert_eq!(q.digest(), digest);
        // Its old heap entry surfaces, finds the lease renewed and moves.
        assert_eq!(q.due(t(12), usize::MAX), vec![]);
        assert_eq!(q.next_deadline(), Some(t(18)));
        assert_eq!(keys(q.due(t(18), usize::MAX)), vec![key(1)]);
    }

    #[test]
    fn renewals_do_not_grow_the_heap() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        for s in 1..1000 {
            assert_eq!(q.renew(&key(1), t(s)), Ok(10));
            let _ = q.due(t(s), usize::MAX);
        }
        assert_eq!(q.heap.len(), 1);
        assert_eq!(q.next_deadline(), Some(t(1009)));
    }

    #[test]
    fn a_lease_past_its_deadline_or_unknown_cannot_be_renewed() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        assert_eq!(q.renew(&key(1), t(10)), Err(NotLive));
        assert_eq!(q.renew(&key(2), t(1)), Err(NotLive));
        assert_eq!(q.alive_at(&key(1), t(10)), None);
        assert_eq!(q.get(&key(1)).map(|l| l.deadline), Some(t(10)));
    }

    #[test]
    fn a_lease_handed_out_for_expiry_cannot_be_renewed_until_rescheduled() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        assert_eq!(keys(q.due(t(10), usize::MAX)), vec![key(1)]);
        assert_eq!(q.grant(&key(1), 1), GrantState::Ending);
        assert!(q.is_ending(&key(1), 1));
        // Even if the clock went back, an ending lease stays dead to renewals.
        assert_eq!(q.renew(&key(1), t(5)), Err(NotLive));
        assert_eq!(q.alive_at(&key(1), t(5)), None);
        assert_eq!(q.next_deadline(), None);
        // The actor said "not due until 15": live again, back in the heap.
        q.reschedule(&key(1), 1, t(15));
        assert_eq!(q.grant(&key(1), 1), GrantState::Live { deadline: t(15) });
        assert_eq!(q.renew(&key(1), t(12)), Ok(10));
        assert_eq!(q.due(t(21), usize::MAX), vec![]);
        assert_eq!(keys(q.due(t(22), usize::MAX)), vec![key(1)]);
    }

    #[test]
    fn grants_of_one_id_are_told_apart_by_version() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        assert_eq!(q.grant(&key(1), 1), GrantState::Live { deadline: t(10) });
        assert_eq!(q.grant(&key(1), 3), GrantState::Unseen);
        assert_eq!(keys(q.due(t(10), usize::MAX)), vec![key(1)]);
        q.apply(&log.event(1, LeaseRevoked { lease: id(1) }, t(10)));
        q.apply(&log.event(1, granted(1, 20), t(11)));
        assert_eq!(q.grant(&key(1), 1), GrantState::Unseen);
        assert_eq!(q.grant(&key(1), 3), GrantState::Live { deadline: t(31) });
        // A reschedule meant for the first grant leaves the second alone.
        q.reschedule(&key(1), 1, t(100));
        assert_eq!(q.get(&key(1)).map(|l| l.deadline), Some(t(31)));
        assert_eq!(keys(q.due(t(31), usize::MAX)), vec![key(1)]);
    }

    #[test]
    fn keep_alive_events_of_old_logs_still_move_the_deadline() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        q.apply(&log.event(1, LeaseKeptAlive { lease: id(1) }, t(8)));
        assert_eq!(q.due(t(12), usize::MAX), vec![]);
        assert_eq!(
            q.due(t(18), usize::MAX),
            vec![Due {
                key: key(1),
                granted: 1,
                deadline: t(18),
                ttl_s: 10,
                refreshed: t(8),
            }]
        );
    }

    #[test]
    fn revoked_and_expired_leases_leave_the_index() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        q.apply(&log.event(2, granted(2, 10), t(0)));
        q.apply(&log.event(1, LeaseRevoked { lease: id(1) }, t(1)));
        q.apply(&log.event(
            2,
            LeaseExpired {
                lease: id(2),
                deadline: t(10),
            },
            t(10),
        ));
        assert!(q.is_empty());
        assert_eq!(q.leases(&AccountId::default_account()), vec![]);
        assert_eq!(q.renew(&key(1), t(2)), Err(NotLive));
        assert_eq!(q.due(t(100), usize::MAX), vec![]);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn after_a_restart_every_live_lease_gets_its_full_ttl_from_the_floor() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(1000)); // the process started at t=1000
        q.apply(&log.event(1, granted(1, 10), t(0)));
        q.apply(&log.event(2, granted(2, 100), t(950)));
        q.apply(&log.event(2, LeaseKeptAlive { lease: id(2) }, t(990)));
        assert_eq!(q.get(&key(1)).map(|l| l.deadline), Some(t(1010)));
        assert_eq!(q.get(&key(2)).map(|l| l.deadline), Some(t(1100)));
    }

    #[test]
    fn applying_an_event_twice_changes_nothing() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        let grant = log.event(1, granted(1, 10), t(0));
        let revoke = log.event(1, LeaseRevoked { lease: id(1) }, t(1));
        q.apply(&grant);
        q.apply(&revoke);
        q.apply(&grant);
        assert!(q.is_empty());
        assert_eq!(q.checkpoint(), 2);
    }

    #[test]
    fn reschedule_only_touches_leases_handed_out() {
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        q.apply(&log.event(1, granted(1, 10), t(0)));
        q.apply(&log.event(2, granted(2, 10), t(0)));
        assert_eq!(keys(q.due(t(10), 1)), vec![key(1)]);
        q.reschedule(&key(1), 1, t(15));
        q.reschedule(&key(2), 1, t(15)); // not handed out
        q.reschedule(&key(9), 1, t(15)); // unknown
        assert_eq!(keys(q.due(t(14), usize::MAX)), vec![key(2)]);
        assert_eq!(keys(q.due(t(15), usize::MAX)), vec![key(1)]);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn accounts_are_listed_by_name_whatever_order_they_came_in() {
        let account = |name: &str| name.parse::<AccountId>().expect("account name");
        let of = |name: &str, lease: i64| LeaseKey {
            account: account(name),
            lease: id(lease),
        };
        let mut log = Log::default();
        let mut q = ExpiryQueue::new(t(0));
        for (name, lease, ttl_s) in [("bob", 2, 10), ("alice", 7, 20), ("bob", 1, 30), ("carol", 1, 5)] {
            q.apply(&log.event_of(account(name), lease, granted(lease, ttl_s), t(0)));
        }
        let order = vec![of("alice", 7), of("bob", 1), of("bob", 2), of("carol", 1)];
        let listed: Vec<LeaseKey> = q.iter_live().map(|(k, _)| k).collect();
        assert_eq!(listed, order);
        let ttls: Vec<i64> = q.live_leases().into_iter().map(|(.., ttl_s)| ttl_s).collect();
        assert_eq!(ttls, vec![20, 30, 10, 5]);
        assert_eq!(q.leases(&account("bob")), vec![id(1), id(2)]);
        assert_eq!(
            (q.count(&account("bob")), q.count(&account("dave")), q.len()),
            (2, 0, 4)
        );
        let (total, page) = q.page(None, 1, 2);
        assert_eq!(
            (total, page.into_iter().map(|(k, _)| k).collect::<Vec<_>>()),
            (4, order[1..3].to_vec())
        );
        let (total, page) = q.page(Some(&account("bob")), 1, 5);
        assert_eq!(
            (total, page.into_iter().map(|(k, _)| k).collect::<Vec<_>>()),
            (2, vec![of("bob", 2)])
        );
        // Same deadline in two accounts: both come out, each once.
        assert_eq!(keys(q.due(t(5), usize::MAX)), vec![of("carol", 1)]);
        assert_eq!(q.grant(&of("carol", 1), 1), GrantState::Ending);
        assert_eq!(q.grant(&of("bob", 1), 1), GrantState::Live { deadline: t(30) });
        // An account whose leases all ended is in no list and no snapshot.
        q.apply(&log.event_of(account("carol"), 1, LeaseRevoked { lease: id(1) }, t(6)));
        let names: Vec<String> = q.snapshot().accounts.iter().map(|(a, _)| a.to_string()).collect();
        assert_eq!(names, vec!["alice", "bob"]);
        assert_eq!(q.page(Some(&account("carol")), 0, 5), (0, vec![]));
        let restored = ExpiryQueue::restore(q.snapshot(), q.checkpoint(), t(0)).expect("restores");
        assert_eq!(
            restored.iter_live().collect::<Vec<_>>(),
            q.iter_live().collect::<Vec<_>>()
        );
        assert_eq!(restored.digest(), q.digest());
        // Back in a known account, after the others.
        q.apply(&log.event_of(account("carol"), 3, granted(3, 5), t(6)));
        assert_eq!(q.iter_live().last().map(|(k, _)| k), Some(of("carol", 3)));
    }

    #[test]
    fn the_ending_mark_leaves_the_grant_version_alone() {
        let mut grant = Grant::new(41).expect("fits");
        assert!(!grant.ending());
        grant.set_ending(true);
        assert!(grant.ending());
        assert_eq!(grant.version(), 41);
        grant.set_ending(false);
        assert_eq!((grant.ending(), grant.version()), (false, 41));
        assert_eq!(Grant::new(u64::MAX), None);
        assert_eq!(Grant::new(i64::MAX as u64).map(Grant::version), Some(i64::MAX as u64));
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }

    #[test]
    fn due_respects_its_bound() {
        let mut log = Log::default();
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

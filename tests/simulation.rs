//! A seeded simulation: random commands (txns among them), clock jumps and restarts against a
//! real server (SQLite on disk, manual clock), checked after every step
//! against a small model of etcd's lease and key rules. It finds what the
//! example tests miss: ordering between leases and keys, expiry, restarts.
//!
//! In the model, as in the server, a keep-alive moves a deadline and
//! records nothing: every keep-alive step checks that the log's head did
//! not move, and every expiry in the log must carry the deadline the model
//! computed (keep-alives and restarts included). Odd seeds run with lease
//! actors passivated as soon as they are idle, so keep-alives meet
//! leases whose actor is not in memory, and puts activate them again.
//!
//! Snapshots are written every few events and not at a clean stop, so each
//! restart starts from snapshots a few events behind the log and folds the
//! tail; after each restart, a second server started on a copy of the data
//! directory from the log alone must hold exactly the same state.
//!
//! `TENURE_SIM_SEED=N` replays one seed; the default runs a fixed set.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{count_type, TestServer};
use tenure::actors::CommandError;
use tenure::clock::Clock;
use tenure::domain::keyspace::txn::{Compare, CompareResult, CompareTarget, Txn, TxnOp};
use tenure::domain::keyspace::{KeyRange, KeyspaceRejection, LeaseUpdate, RangeOptions};
use tenure::domain::lease::LeaseRejection;
use tenure::server::ServerConfig;
use tenure::snapshot::SnapshotEvent;
use tenure::store::EventStore;
use tenure_events::{
    AccountId, Bytes, DeleteCause, Event, KeyDeleted, KeyspaceEvent, LeaseEvent, LeaseExpired, LeaseId, Metadata,
};

/// A small deterministic generator (xorshift64*), so a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What etcd would hold, in seconds since the simulation started.
#[derive(Default)]
struct Model {
    now_s: i64,
    /// lease -> (ttl, deadline)
    leases: BTreeMap<LeaseId, (i64, i64)>,
    /// key -> (value, lease)
    keys: BTreeMap<String, (String, Option<LeaseId>)>,
    /// Every expiry so far, with its deadline.
    expired: Vec<(LeaseId, i64)>,
    /// Keys deleted because their lease expired.
    expired_keys: usize,
}

impl Model {
    fn live(&self, lease: LeaseId) -> bool {
        self.leases
            .get(&lease)
            .is_some_and(|(_, deadline)| self.now_s < *deadline)
    }

    fn end(&mut self, lease: LeaseId) {
        self.leases.remove(&lease);
        self.keys.retain(|_, (_, l)| *l != Some(lease));
    }

    fn advance(&mut self, by_s: i64) {
        self.now_s += by_s;
        let due: Vec<(LeaseId, i64)> = self
            .leases
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= self.now_s)
            .map(|(id, (_, deadline))| (*id, *deadline))
            .collect();
        self.expired.extend(&due);
        self.expired.sort_unstable();
        for (lease, _) in due {
            self.expired_keys += self.keys.values().filter(|(_, l)| *l == Some(lease)).count();
            self.end(lease);
        }
    }

    fn restart(&mut self) {
        // Every live lease gets its full TTL again.
        for (ttl, deadline) in self.leases.values_mut() {
            *deadline = self.now_s + *ttl;
        }
    }
}

const MIN_TTL_S: i64 = 2;

fn deleted_by_expiry(events: &[tenure_events::RecordedEvent]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e.decode(),
                Ok(Event::Keyspace(KeyspaceEvent::Deleted(KeyDeleted {
                    cause: DeleteCause::LeaseExpired { .. },
                    ..
                })))
            )
        })
        .count()
}

/// Every expiry in the log with its deadline, in seconds since `start`.
fn expiries(events: &[tenure_events::RecordedEvent], start: chrono::DateTime<chrono::Utc>) -> Vec<(LeaseId, i64)> {
    let mut expired: Vec<(LeaseId, i64)> = events
        .iter()
        .filter_map(|e| match e.decode() {
            Ok(Event::Lease(LeaseEvent::Expired(LeaseExpired { lease, deadline }))) => {
                Some((lease, (deadline - start).num_seconds()))
            }
            _ => None,
        })
        .collect();
    expired.sort_unstable();
    expired
}

/// As [`snapshot_often`], with lease actors passivated as soon as idle.
fn snapshot_often_and_passivate(config: &mut ServerConfig) {
    snapshot_often(config);
    config.passivate_after = Duration::ZERO;
}

/// Snapshots every few events, none at a stop: restarts fold a tail.
fn snapshot_often(config: &mut ServerConfig) {
    config.snapshots.every_events = 3;
    config.snapshots.on_stop = false;
}

/// The log alone: no snapshot read or written.
fn log_alone(config: &mut ServerConfig) {
    config.snapshots.restore = false;
    config.snapshots.write = false;
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read the data directory") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

/// Restarts `server` from its snapshots and checks it holds exactly what a
/// server started on a copy of its data directory from the log alone holds:
/// every projection (what a snapshot keeps, lease deadlines and routes too)
/// and every key of every key space.
async fn restart_and_compare_with_the_log_alone(server: &mut TestServer, label: &str) -> (usize, usize) {
    server.stop().await;
    let copy = tempfile::tempdir().expect("temp dir");
    copy_dir(&server.dir, copy.path());
    server.restart().await;
    let mut alone = TestServer::start_in_with(copy.path().to_path_buf(), server.clock.clone(), log_alone).await;
    let restored = server
        .running()
        .snapshots
        .events()
        .iter()
        .filter(|e| matches!(e, SnapshotEvent::Restored { .. }))
        .count();
    let rejected: Vec<SnapshotEvent> = server
        .running()
        .snapshots
        .events()
        .into_iter()
        .filter(|e| matches!(e, SnapshotEvent::Rejected { .. }))
        .collect();
    assert_eq!(rejected, vec![], "{label}: no snapshot written by a server is refused");

    let ours = server.running().control.hub().clone();
    let theirs = alone.running().control.hub().clone();
    let (position, state) = ours.projections.snapshot_state();
    let (their_position, their_state) = theirs.projections.snapshot_state();
    assert_eq!(position, their_position, "{label}: position");
    assert_eq!(state, their_state, "{label}: projections");
    let deadlines = |hub: &tenure::actors::Hub| -> Vec<_> {
        hub.projections
            .expiry
            .lock()
            .iter_live()
            .map(|(k, l)| (k.clone(), l.ttl_s, l.deadline))
            .collect()
    };
    assert_eq!(deadlines(&ours), deadlines(&theirs), "{label}: lease deadlines");
    assert_eq!(
        *ours.projections.routes.load_full(),
        *theirs.projections.routes.load_full(),
        "{label}: routes"
    );
    let accounts: Vec<AccountId> = ours.projections.catalog.lock().keyspaces().cloned().collect();
    for account in &accounts {
        let all = |s: &TestServer| {
            let control = s.running().control.clone();
            let account = account.clone();
            async move {
                control
                    .range(&account, KeyRange::prefix(""), RangeOptions::default())
                    .await
                    .expect("range")
            }
        };
        assert_eq!(all(server).await, all(&alone).await, "{label}: key space {account}");
    }
    alone.stop().await;
    (restored, accounts.len())
}

async fn simulate(seed: u64, steps: usize, passivate: bool) {
    let mut rng = Rng(seed.max(1));
    let mut server = if passivate {
        TestServer::start_with(snapshot_often_and_passivate).await
    } else {
        TestServer::start_with(snapshot_often).await
    };
    let start = server.clock.now();
    let mut from_snapshots = 0;
    let mut model = Model::default();
    let account = AccountId::default_account();
    let meta = || Metadata::new(AccountId::default_account());
    let keys = ["a", "b", "c", "d", "e", "f"];
    let mut ever_granted: Vec<LeaseId> = Vec::new();

    for step in 0..steps {
        let control = server.running().control.clone();
        let pick_lease = |rng: &mut Rng, ever: &[LeaseId]| -> Option<LeaseId> {
            (!ever.is_empty()).then(|| ever[rng.below(ever.len() as u64) as usize])
        };
        let op = rng.below(100);
        let what = match op {
            0..=19 => {
                let ttl = 1 + rng.below(20) as i64;
                // Now and then an ID granted before: refused while it is
                // live, granted afresh once it has ended.
                let again = if rng.below(4) == 0 {
                    pick_lease(&mut rng, &ever_granted)
                } else {
                    None
                };
                let result = control.grant(meta(), again, ttl).await;
                match again.filter(|id| model.leases.contains_key(id)) {
                    Some(id) => {
                        assert_eq!(
                            result,
                            Err(CommandError::Lease(LeaseRejection::AlreadyExists(id))),
                            "seed {seed} step {step}: grant of live {id}"
                        );
                        format!("grant {id} again: refused")
                    }
                    None => {
                        let granted = result.expect("grant");
                        let ttl = ttl.max(MIN_TTL_S);
                        assert_eq!(granted.ttl_s, ttl);
                        model.leases.insert(granted.lease, (ttl, model.now_s + ttl));
                        if again.is_none() {
                            ever_granted.push(granted.lease);
                        }
                        format!("grant {} ttl {ttl}", granted.lease)
                    }
                }
            }
            20..=34 => {
                let Some(lease) = pick_lease(&mut rng, &ever_granted) else {
                    continue;
                };
                let head = server.store().head();
                let result = control.keep_alive(meta(), lease).await;
                assert_eq!(
                    server.store().head(),
                    head,
                    "seed {seed} step {step}: a keep-alive was written"
                );
                if model.live(lease) {
                    let (ttl, _) = model.leases[&lease];
                    assert_eq!(result, Ok(ttl), "seed {seed} step {step}: keep-alive {lease}");
                    model.leases.insert(lease, (ttl, model.now_s + ttl));
                } else {
                    assert_eq!(result, Err(CommandError::Lease(LeaseRejection::NotFound(lease))));
                }
                format!("keep-alive {lease}")
            }
            35..=42 => {
                let Some(lease) = pick_lease(&mut rng, &ever_granted) else {
                    continue;
                };
                let result = control.revoke(meta(), lease).await;
                if model.leases.contains_key(&lease) {
                    let attached = model.keys.values().filter(|(_, l)| *l == Some(lease)).count();
                    assert_eq!(
                        result.map(|d| d.count),
                        Ok(attached),
                        "seed {seed} step {step}: revoke {lease}"
                    );
                    model.end(lease);
                } else {
                    assert!(result.is_err(), "seed {seed} step {step}: revoke of an ended lease");
                }
                format!("revoke {lease}")
            }
            43..=69 => {
                let key = keys[rng.below(keys.len() as u64) as usize];
                let value = format!("v{step}");
                let lease = if rng.below(3) == 0 {
                    None
                } else {
                    pick_lease(&mut rng, &ever_granted)
                };
                let result = control
                    .put(
                        meta(),
                        key.into(),
                        Some(value.clone().into()),
                        LeaseUpdate::Set(lease),
                        false,
                    )
                    .await;
                match lease {
                    Some(l) if !model.live(l) => {
                        assert_eq!(
                            result.map(|_| ()),
                            Err(CommandError::Lease(LeaseRejection::NotFound(l)))
                        );
                    }
                    _ => {
                        result.expect("put");
                        model.keys.insert(key.to_owned(), (value, lease));
                    }
                }
                format!("put {key} lease {lease:?}")
            }
            75..=77 => {
                // A txn: if k1 holds the value the model expects (or, now
                // and then, one it cannot hold), put k1 (maybe with a
                // lease) and k2 and delete k3 at one revision; else put k2.
                let pick = |rng: &mut Rng| keys[rng.below(keys.len() as u64) as usize];
                let k1 = pick(&mut rng);
                let others: Vec<&str> = keys.iter().copied().filter(|k| *k != k1).collect();
                let k2 = others[rng.below(others.len() as u64) as usize];
                let rest: Vec<&str> = others.iter().copied().filter(|k| *k != k2).collect();
                let k3 = rest[rng.below(rest.len() as u64) as usize];
                let expected = match model.keys.get(k1) {
                    Some((value, _)) if rng.below(4) != 0 => value.clone(),
                    _ => "nope".to_owned(),
                };
                let lease = if rng.below(2) == 0 {
                    None
                } else {
                    pick_lease(&mut rng, &ever_granted)
                };
                // Now and then k2 with a lease too, maybe another.
                let lease2 = if rng.below(3) == 0 {
                    pick_lease(&mut rng, &ever_granted)
                } else {
                    None
                };
                let (value, other) = (format!("t{step}"), format!("f{step}"));
                let put = |key: &str, value: &str, lease: Option<LeaseId>| TxnOp::Put {
                    key: key.into(),
                    value: Some(value.into()),
                    lease: LeaseUpdate::Set(lease),
                    prev_kv: false,
                };
                let txn = Txn {
                    compare: vec![Compare {
                        range: KeyRange::single(k1),
                        target: CompareTarget::Value(expected.as_str().into()),
                        result: CompareResult::Equal,
                    }],
                    success: vec![
                        put(k1, &value, lease),
                        put(k2, &value, lease2),
                        TxnOp::DeleteRange {
                            range: KeyRange::single(k3),
                            prev_kv: false,
                        },
                    ],
                    failure: vec![put(k2, &other, None)],
                };
                let revision = control.revision(&account);
                let result = control.txn(meta(), txn).await;
                let holds = model.keys.get(k1).is_some_and(|(v, _)| *v == expected);
                let dead = [lease, lease2].into_iter().flatten().find(|l| !model.live(*l));
                match dead {
                    Some(l) if holds => {
                        assert_eq!(
                            result.map(|_| ()),
                            Err(CommandError::Keyspace(KeyspaceRejection::LeaseNotFound(l))),
                            "seed {seed} step {step}: txn with ended {l}"
                        );
                    }
                    _ => {
                        let done = result.expect("txn");
                        assert_eq!(done.outcome.succeeded, holds, "seed {seed} step {step}: txn compare");
                        assert_eq!(done.revision, revision + 1, "seed {seed} step {step}: one revision");
                        if holds {
                            model.keys.insert(k1.to_owned(), (value.clone(), lease));
                            model.keys.insert(k2.to_owned(), (value, lease2));
                            model.keys.remove(k3);
                        } else {
                            model.keys.insert(k2.to_owned(), (other, None));
                        }
                    }
                }
                format!("txn {k1} = {expected:?}: put {k1} (lease {lease:?}), {k2} (lease {lease2:?}), delete {k3}")
            }
            70..=74 => {
                let key = keys[rng.below(keys.len() as u64) as usize];
                let deleted = control
                    .delete_range(meta(), KeyRange::single(key), false)
                    .await
                    .expect("delete");
                let expect = usize::from(model.keys.remove(key).is_some());
                assert_eq!(deleted.count, expect, "seed {seed} step {step}: delete {key}");
                format!("delete {key}")
            }
            78..=95 => {
                let by_s = 1 + rng.below(12) as i64;
                server.clock.advance(Duration::from_secs(by_s as u64));
                model.advance(by_s);
                let (expired, expired_keys) = (model.expired.len(), model.expired_keys);
                let events = server
                    .wait_for_log("the model's expiries and their keys' deletions", |events| {
                        count_type(events, "LeaseExpired") == expired && deleted_by_expiry(events) == expired_keys
                    })
                    .await;
                assert_eq!(
                    expiries(&events, start),
                    model.expired,
                    "seed {seed} step {step}: expiries and their deadlines"
                );
                assert_eq!(count_type(&events, "LeaseKeptAlive"), 0);
                // Read from the log directly, the events can be ahead of the
                // store's head for a moment (it moves just after the commit),
                // so a read of the projections must wait for them itself.
                if let Some(last) = events.last() {
                    server
                        .running()
                        .control
                        .hub()
                        .projections
                        .caught_up(last.position)
                        .await;
                }
                format!("advance {by_s}s")
            }
            _ => {
                let label = format!("seed {seed} step {step}");
                let (restored, _) = restart_and_compare_with_the_log_alone(&mut server, &label).await;
                from_snapshots += restored;
                model.restart();
                "restart".to_owned()
            }
        };

        // After every step the server holds exactly what the model holds.
        let control = server.running().control.clone();
        let all = control
            .range(&account, KeyRange::prefix(""), RangeOptions::default())
            .await
            .expect("range");
        let held: BTreeMap<String, (String, Option<LeaseId>)> = all
            .result
            .kvs
            .into_iter()
            .map(|(k, kv)| (k.to_string_lossy(), (kv.value.to_string_lossy(), kv.lease)))
            .collect();
        assert_eq!(held, model.keys, "seed {seed} step {step} after {what}: keys");
        let leases = control.leases(&account).await.expect("list");
        let live: Vec<LeaseId> = model.leases.keys().copied().collect();
        assert_eq!(leases, live, "seed {seed} step {step} after {what}: leases");
        for (lease, (ttl, deadline)) in &model.leases {
            let info = control.time_to_live(&account, *lease, true).await.expect("timetolive");
            assert_eq!(info.granted_ttl_s, *ttl);
            assert_eq!(
                info.remaining_s,
                deadline - model.now_s,
                "seed {seed} step {step}: remaining of {lease}"
            );
            let attached: Vec<Bytes> = model
                .keys
                .iter()
                .filter(|(_, (_, l))| *l == Some(*lease))
                .map(|(k, _)| Bytes::from(k.as_str()))
                .collect();
            assert_eq!(info.keys, attached, "seed {seed} step {step}: keys of {lease}");
        }
    }
    let (restored, keyspaces) = restart_and_compare_with_the_log_alone(&mut server, &format!("seed {seed} end")).await;
    from_snapshots += restored;
    // The comparison means something only if snapshots were used: the
    // projections' and the key space's at the last restart at least.
    assert!(
        restored > keyspaces,
        "seed {seed}: the last restart started from snapshots ({restored})"
    );
    assert!(from_snapshots > 0);
    server.stop().await;
}

#[actix_rt::test]
async fn random_commands_clock_jumps_and_restarts_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("TENURE_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("TENURE_SIM_SEED is a number")],
        Err(_) => vec![1, 7, 42, 1234, 98_765],
    };
    for seed in seeds {
        simulate(seed, 200, seed % 2 == 1).await;
    }
}

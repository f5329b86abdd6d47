//! Replay: the state of everything as of a moment, folded from the log
//! alone through the same projections the server runs (and, for keys, the
//! same fold as the key space actors).
//!
//! **What a replay cannot know.** Keep-alives are not in the log (they move
//! a deadline in the server's memory only), and neither is when the server
//! was down or restarted, which gives every live lease its full TTL again.
//! Replay counts a lease's deadline from its grant (or from the last
//! `LeaseKeptAlive` of a log written before keep-alives left it), so a
//! lease that the log says is live at the moment but whose deadline (so
//! counted) has passed is shown as `due`: it was being kept alive, or its
//! expiry was about to be recorded, or the server had been restarted since
//! and had given it more time.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tenure_events::{AccountId, Bytes, KeyspaceEvent, LeaseId, RecordedEvent};
use tenure_projections::{
    AccountView, InstanceView, LeaseKey, ProjectionSet, Routes, ServiceView, ShareView, WorkloadView,
};

use crate::domain::keyspace::Keyspace;
use crate::domain::Aggregate;

/// Where a replay stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// After the event at this position.
    Position(u64),
    /// After the last event of the longest prefix of the log whose events
    /// all happened at or before this time. (Log order is the truth: an
    /// event stamped earlier than one before it, as concurrent commands
    /// can be by a few microseconds, is not pulled ahead of it.)
    Time(DateTime<Utc>),
    /// The whole log.
    End,
}

impl Until {
    /// Whether `event` is part of the replay (events come in log order).
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        match self {
            Until::Position(p) => event.position <= *p,
            Until::Time(t) => event.time <= *t,
            Until::End => true,
        }
    }

    /// Parses `--until`: a position (digits) or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Until, String> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Until::Position)
                .map_err(|_| format!("--until: position {text} is too large"));
        }
        DateTime::parse_from_rfc3339(text)
            .map(|t| Until::Time(t.with_timezone(&Utc)))
            .map_err(|e| format!("--until: {text:?} is neither a position nor an RFC 3339 time ({e})"))
    }
}

/// What a replay shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Leases,
    Keys,
    Accounts,
    Shares,
    Workloads,
    Services,
    Routes,
}

impl Part {
    pub const ALL: [Part; 7] = [
        Part::Leases,
        Part::Keys,
        Part::Accounts,
        Part::Shares,
        Part::Workloads,
        Part::Services,
        Part::Routes,
    ];
}

/// The log folded up to some point.
pub struct Replay {
    pub projections: ProjectionSet,
    pub keyspaces: BTreeMap<AccountId, Keyspace>,
    /// The position of the last event applied (0: none).
    pub position: u64,
    /// When the last event applied happened.
    pub time: Option<DateTime<Utc>>,
    /// Events a projection could not decode (`tenure verify` names them).
    pub undecodable: u64,
}

impl Replay {
    /// Nothing applied yet; share hosts are `TOKEN.{domain}`.
    pub fn new(domain: &str) -> Replay {
        Replay {
            projections: ProjectionSet::new(DateTime::<Utc>::MIN_UTC, domain),
            keyspaces: BTreeMap::new(),
            position: 0,
            time: None,
            undecodable: 0,
        }
    }

    /// Applies the next event of the log.
    pub fn apply(&mut self, event: &RecordedEvent) {
        self.projections.apply(event);
        if event.stream.category() == "keyspace" {
            match event.decode_as::<KeyspaceEvent>() {
                Ok(Some(e)) => self
                    .keyspaces
                    .entry(event.account.clone())
                    .or_default()
                    .evolve(&e, event.time),
                Ok(None) => {}
                Err(_) => self.undecodable += 1,
            }
        }
        self.position = event.position;
        self.time = Some(event.time);
    }

    /// What the log says at `at` (the moment the replay stopped at), for
    /// the parts asked for.
    pub fn state(&self, at: DateTime<Utc>, parts: &[Part]) -> ReplayState {
        let wants = |part: Part| parts.contains(&part);
        let p = &self.projections;
        let live = |account: &AccountId, lease: LeaseId| {
            p.expiry
                .get(&LeaseKey {
                    account: account.clone(),
                    lease,
                })
                .is_some_and(|l| l.deadline > at)
        };
        ReplayState {
            position: self.position,
            at,
            leases: wants(Part::Leases).then(|| self.leases(at)),
            keys: wants(Part::Keys).then(|| self.keys()),
            accounts: wants(Part::Accounts).then(|| p.directory.accounts().cloned().collect()),
            shares: wants(Part::Shares).then(|| {
                p.shares
                    .all()
                    .map(|share| ShareState {
                        serving: share.session.as_ref().is_some_and(|s| live(&share.owner, s.lease)),
                        share: share.clone(),
                    })
                    .collect()
            }),
            workloads: wants(Part::Workloads).then(|| p.workloads.all().cloned().collect()),
            services: wants(Part::Services).then(|| {
                p.services
                    .all_services()
                    .map(|(account, service)| ServiceState {
                        account: account.clone(),
                        service: service.clone(),
                        instances: p
                            .services
                            .attached(account, &service.name)
                            .map(|i| InstanceState {
                                live: live(account, i.lease),
                                instance: i.clone(),
                            })
                            .collect(),
                    })
                    .collect()
            }),
            routes: wants(Part::Routes).then(|| p.routing.routes()),
        }
    }

    fn leases(&self, at: DateTime<Utc>) -> Vec<LeaseState> {
        self.projections
            .expiry
            .iter_live()
            .map(|(key, lease)| {
                let refreshed_at = lease
                    .deadline
                    .checked_sub_signed(TimeDelta::try_seconds(lease.ttl_s).unwrap_or(TimeDelta::MAX))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                let left = lease.deadline.signed_duration_since(at);
                let keys = self
                    .keyspaces
                    .get(&key.account)
                    .map(|k| k.lease_keys(key.lease))
                    .unwrap_or_default();
                LeaseState {
                    account: key.account.clone(),
                    id: key.lease,
                    ttl: lease.ttl_s,
                    refreshed_at,
                    deadline: lease.deadline,
                    // Whole seconds left, rounded down, as `timetolive`.
                    remaining: left.num_seconds().max(0),
                    state: if left > TimeDelta::zero() { "live" } else { "due" },
                    keys,
                }
            })
            .collect()
    }

    fn keys(&self) -> Vec<KeyspaceState> {
        self.keyspaces
            .iter()
            .map(|(account, keyspace)| KeyspaceState {
                account: account.clone(),
                revision: keyspace.revision(),
                keys: keyspace
                    .range(&crate::domain::keyspace::KeyRange::prefix(""), 0)
                    .kvs
                    .into_iter()
                    .map(|(key, kv)| KeyState {
                        key,
                        value: kv.value,
                        create_revision: kv.create_revision,
                        mod_revision: kv.mod_revision,
                        version: kv.version,
                        lease: kv.lease,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The state a replay shows (`tenure replay -o json`). Parts not asked
/// for are left out.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayState {
    /// The last event applied.
    pub position: u64,
    /// The moment shown: remaining TTLs count down to it.
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases: Option<Vec<LeaseState>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyspaceState>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<AccountView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares: Option<Vec<ShareState>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workloads: Option<Vec<WorkloadView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceState>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Routes>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaseState {
    pub account: AccountId,
    pub id: LeaseId,
    /// The granted TTL, seconds.
    pub ttl: i64,
    /// The grant (or the last keep-alive recorded by an older server):
    /// keep-alives are not in the log.
    pub refreshed_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// Whole seconds left at the moment shown.
    pub remaining: i64,
    /// `live`, or `due` (see the module's note on restarts).
    pub state: &'static str,
    pub keys: Vec<Bytes>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyspaceState {
    pub account: AccountId,
    pub revision: i64,
    pub keys: Vec<KeyState>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyState {
    pub key: Bytes,
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShareState {
    #[serde(flatten)]
    pub share: ShareView,
    /// A session is running and its lease is live at the moment shown.
    pub serving: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceState {
    pub account: AccountId,
    #[serde(flatten)]
    pub service: ServiceView,
    pub instances: Vec<InstanceState>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceState {
    #[serde(flatten)]
    pub instance: InstanceView,
    /// Its lease is live at the moment shown.
    pub live: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_reads_positions_and_times() {
        assert_eq!(Until::parse("42"), Ok(Until::Position(42)));
        let t = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").map(|t| t.with_timezone(&Utc));
        assert_eq!(Until::parse("2026-12-01T10:00:00Z"), Ok(Until::Time(t.expect("valid"))));
        assert!(Until::parse("2026-12-01T10:00:00+01:00").is_ok());
        for bad in ["", "yesterday", "-3", "2026-12-01", "99999999999999999999999"] {
            assert!(Until::parse(bad).is_err(), "{bad:?}");
        }
    }
}

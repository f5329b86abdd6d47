//! What the operator dashboard shows: everything a caller may see, read
//! from the projections at once (services with their instances, routes,
//! shares, workload reservations, accounts), and the live leases a page at
//! a time with their deadlines and keys.
//!
//! A caller sees what [`HistoryScope`] admits: an account its own entities,
//! the admin (and local mode) every account's.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tenure_events::{AccountId, Bytes, LeaseId};
use tenure_projections::{AccountView, InstanceView, LeaseKey, LiveLease, Route, ServiceView, ShareView, WorkloadView};

use crate::actors::keyspace;
use crate::actors::{Activation, CommandError};
use crate::history::filter::HistoryScope;

use super::Control;

/// Most leases one page of [`Control::lease_page`] holds: a page is one
/// message per account to the key spaces and one answer body.
pub const LEASE_PAGE_MAX: usize = 1_000;

/// Everything but the leases, as of one moment.
#[derive(Debug)]
pub struct Overview {
    /// The server's clock when the overview was read: remaining times are
    /// deadlines minus this.
    pub now: DateTime<Utc>,
    /// The projections' position.
    pub position: u64,
    pub live_leases: usize,
    pub services: Vec<ServiceEntry>,
    /// Routes of the hosts the caller owns, by host.
    pub routes: Vec<(String, Route)>,
    pub shares: Vec<ShareEntry>,
    pub workloads: Vec<WorkloadView>,
    /// Every account: for the admin (and local mode) only.
    pub accounts: Option<Vec<AccountEntry>>,
}

#[derive(Debug)]
pub struct ServiceEntry {
    pub account: AccountId,
    pub service: ServiceView,
    /// Each attached instance with its lease, if live.
    pub instances: Vec<(InstanceView, Option<LiveLease>)>,
}

#[derive(Debug)]
pub struct ShareEntry {
    pub share: ShareView,
    /// The current session's lease, if live.
    pub session_lease: Option<LiveLease>,
}

#[derive(Debug)]
pub struct AccountEntry {
    pub account: AccountView,
    pub live_leases: usize,
    pub services: usize,
    pub shares: usize,
    pub workloads: usize,
}

/// A live lease as the dashboard lists it.
#[derive(Debug)]
pub struct LeaseRow {
    pub account: AccountId,
    pub lease: LeaseId,
    pub ttl_s: i64,
    pub deadline: DateTime<Utc>,
    pub keys: Vec<Bytes>,
}

/// A window of the live leases, in (account, ID) order.
#[derive(Debug)]
pub struct LeasePage {
    pub now: DateTime<Utc>,
    pub total: usize,
    pub leases: Vec<LeaseRow>,
}

impl Control {
    /// What `scope` may see of services, routes, shares, workloads and
    /// accounts, once the projections have caught up with the log.
    pub async fn overview(&self, scope: &HistoryScope) -> Overview {
        let domain = self.hub.config.domain.to_ascii_lowercase();
        self.read(|p| {
            let now = self.hub.clock.now();
            let position = p.checkpoint();
            let expiry = p.expiry.lock();
            let live = |account: &AccountId, lease: LeaseId| {
                expiry.get(&LeaseKey {
                    account: account.clone(),
                    lease,
                })
            };
            let visible = |account: &AccountId| match scope {
                HistoryScope::All => true,
                HistoryScope::Account(a) => a == account,
            };
            let services: Vec<ServiceEntry> = {
                let services = p.services.lock();
                services
                    .all_services()
                    .filter(|(account, _)| visible(account))
                    .map(|(account, service)| ServiceEntry {
                        account: account.clone(),
                        instances: services
                            .attached(account, &service.name)
                            .map(|i| (i.clone(), live(account, i.lease)))
                            .collect(),
                        service: service.clone(),
                    })
                    .collect()
            };
            let shares: Vec<ShareEntry> = p
                .shares
                .lock()
                .all()
                .filter(|s| visible(&s.owner))
                .map(|s| ShareEntry {
                    session_lease: s.session.as_ref().and_then(|session| live(&s.owner, session.lease)),
                    share: s.clone(),
                })
                .collect();
            let hosts: BTreeSet<String> = services
                .iter()
                .map(|s| s.service.fqdn.to_ascii_lowercase())
                .chain(shares.iter().map(|s| format!("{}.{domain}", s.share.token)))
                .collect();
            let routes = p
                .routes
                .load()
                .hosts
                .iter()
                .filter(|(host, _)| hosts.contains(*host))
                .map(|(host, route)| (host.clone(), route.clone()))
                .collect();
            let workloads: Vec<WorkloadView> = p
                .workloads
                .lock()
                .all()
                .filter(|w| visible(&w.owner))
                .cloned()
                .collect();
            let live_leases = match scope {
                HistoryScope::All => expiry.len(),
                HistoryScope::Account(a) => expiry.count(a),
            };
            let accounts = matches!(scope, HistoryScope::All).then(|| {
                let mut per_account: BTreeMap<&AccountId, [usize; 3]> = BTreeMap::new();
                for s in &services {
                    per_account.entry(&s.account).or_default()[0] += 1;
                }
                for s in &shares {
                    per_account.entry(&s.share.owner).or_default()[1] += 1;
                }
                for w in &workloads {
                    per_account.entry(&w.owner).or_default()[2] += 1;
                }
                p.directory
                    .read()
                    .accounts()
                    .map(|a| {
                        let [services, shares, workloads] = per_account.get(&a.name).copied().unwrap_or_default();
                        AccountEntry {
                            live_leases: expiry.count(&a.name),
                            account: a.clone(),
                            services,
                            shares,
                            workloads,
                        }
                    })
                    .collect()
            });
            Overview {
                now,
                position,
                live_leases,
                services,
                routes,
                shares,
                workloads,
                accounts,
            }
        })
        .await
    }

    /// The live leases `scope` may see, `offset` of them skipped and at
    /// most `limit` (capped at [`LEASE_PAGE_MAX`]) returned, each with its
    /// attached keys.
    pub async fn lease_page(
        &self,
        scope: &HistoryScope,
        offset: usize,
        limit: usize,
    ) -> Result<LeasePage, CommandError> {
        let account = match scope {
            HistoryScope::All => None,
            HistoryScope::Account(a) => Some(a),
        };
        let (now, total, page, keyspaces) = self
            .read(|p| {
                let (total, page) = p.expiry.lock().page(account, offset, limit.min(LEASE_PAGE_MAX));
                let keyspaces: BTreeSet<AccountId> = p.catalog.lock().keyspaces().cloned().collect();
                (self.hub.clock.now(), total, page, keyspaces)
            })
            .await;
        let mut by_account: BTreeMap<AccountId, Vec<LeaseId>> = BTreeMap::new();
        for (key, _) in &page {
            if keyspaces.contains(&key.account) {
                by_account.entry(key.account.clone()).or_default().push(key.lease);
            }
        }
        let mut keys: BTreeMap<(AccountId, LeaseId), Vec<Bytes>> = BTreeMap::new();
        let hub = &self.hub;
        for (account, leases) in by_account {
            let found = self
                .call(|reply| {
                    let msg = keyspace::KeysOfLeases {
                        leases: leases.clone(),
                        reply,
                    };
                    hub.keyspaces.route(hub, &account, Activation::Load, msg)
                })
                .await?;
            for (lease, lease_keys) in leases.into_iter().zip(found) {
                keys.insert((account.clone(), lease), lease_keys);
            }
        }
        let leases = page
            .into_iter()
            .map(|(key, live)| LeaseRow {
                keys: keys.remove(&(key.account.clone(), key.lease)).unwrap_or_default(),
                account: key.account,
                lease: key.lease,
                ttl_s: live.ttl_s,
                deadline: live.deadline,
            })
            .collect();
        Ok(LeasePage { now, total, leases })
    }
}

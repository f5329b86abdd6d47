use std::collections::{BTreeMap, BTreeSet};

use tenure_events::{
    AccountId, BackendMode, InstanceEvent, LeaseId, RecordedEvent, ServiceEvent, ShareEvent, ShareMode,
};

use crate::snapshot::{
    invalid, lease_id, ordered_map, strictly_ordered, RestoreError, RoutedShareSnapshot, RoutingSnapshot,
};
use crate::Projection;

/// Where the frontend sends a host's requests. Built only from events:
/// services and their instances, reserved shares and their sessions and
/// grants, and the leases that keep instances and sessions alive.
///
/// - a service's FQDN routes to the addresses of its instances whose lease
///   is live;
/// - a share's `TOKEN.DOMAIN` routes to its target while its current
///   session's lease is live; a private share only for requests carrying
///   one of its access grants.
///
/// A host with no live backend still has a route (the frontend answers 503,
/// not 404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    checkpoint: u64,
    domain: String,
    /// Leases live in the log, by account (8 bytes a lease in the sets,
    /// where a set of (account, lease) pairs takes 24).
    live_leases: BTreeMap<AccountId, BTreeSet<LeaseId>>,
    /// (account, name) → (FQDN, whether plain HTTP redirects to https).
    services: BTreeMap<(AccountId, String), (String, bool)>,
    instances: BTreeMap<(AccountId, String), InstanceEntry>,
    shares: BTreeMap<String, ShareEntry>,
    /// Set when an applied event changed some route.
    changed: bool,
    inserts: crate::compact::Inserts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InstanceEntry {
    service: String,
    address: String,
    lease: LeaseId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ShareEntry {
    owner: AccountId,
    mode: ShareMode,
    backend_mode: BackendMode,
    target: String,
    session_lease: Option<LeaseId>,
    /// A web share's session: where its files are served.
    session_address: Option<String>,
    grants: BTreeSet<String>,
}

/// The routes, by host (lowercase, without port).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Routes {
    pub hosts: BTreeMap<String, Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Route {
    /// A service: the `HOST:PORT` of each live instance.
    Service {
        backends: Vec<String>,
        /// Port 80 has the `redirect` handler: plain HTTP answers 301 to https.
        redirect_http: bool,
    },
    /// A share: while a session lives, the URL to send requests to (a
    /// proxy share's target, or where a web share's session serves its
    /// files).
    Share {
        target: Option<String>,
        backend_mode: BackendMode,
        /// Private shares: the SHA-256 of each access grant's secret.
        grants: Option<BTreeSet<String>>,
    },
}

impl RoutingTable {
    /// An empty table; shares are served at `TOKEN.{domain}`.
    pub fn new(domain: &str) -> RoutingTable {
        RoutingTable {
            checkpoint: 0,
            domain: domain.to_ascii_lowercase(),
            live_leases: BTreeMap::new(),
            services: BTreeMap::new(),
            instances: BTreeMap::new(),
            shares: BTreeMap::new(),
            changed: false,
            inserts: crate::compact::Inserts::default(),
        }
    }

    /// Rebuilds the sets of live leases with full nodes if enough leases
    /// were granted since the last rebuild (see [`crate::compact`]).
    /// Called when a snapshot is taken.
    pub fn compact(&mut self) {
        let len = self.live_leases.values().map(BTreeSet::len).sum();
        if self.inserts.due(len) {
            self.live_leases.values_mut().for_each(crate::compact::rebuild_set);
        }
    }

    /// Whether routes changed since the last call (and resets it).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn live(&self, account: &AccountId, lease: LeaseId) -> bool {
        self.live_leases
            .get(account)
            .is_some_and(|leases| leases.contains(&lease))
    }

    /// The routes as they stand.
    pub fn routes(&self) -> Routes {
        let mut hosts = BTreeMap::new();
        for ((account, name), (fqdn, redirect_http)) in &self.services {
            let backends = self
                .instances
                .range((account.clone(), String::new())..)
                .take_while(|((a, _), _)| a == account)
                .filter(|(_, i)| i.service == *name && self.live(account, i.lease))
                .map(|(_, i)| i.address.clone())
                .collect();
            let route = Route::Service {
                backends,
                redirect_http: *redirect_http,
            };
            hosts.insert(fqdn.to_ascii_lowercase(), route);
        }
        for (token, share) in &self.shares {
            let serving = share.session_lease.is_some_and(|lease| self.live(&share.owner, lease));
            let target = match share.backend_mode {
                BackendMode::Proxy => Some(share.target.clone()),
                BackendMode::Web => share.session_address.as_ref().map(|a| format!("http://{a}")),
            };
            hosts.insert(
                format!("{token}.{}", self.domain),
                Route::Share {
                    target: target.filter(|_| serving),
                    backend_mode: share.backend_mode,
                    grants: (share.mode == ShareMode::Private).then(|| share.grants.clone()),
                },
            );
        }
        Routes { hosts }
    }

    pub fn snapshot(&self) -> RoutingSnapshot {
        RoutingSnapshot {
            live_leases: self
                .live_leases
                .iter()
                .map(|(account, leases)| (account.clone(), leases.iter().map(|l| l.get()).collect()))
                .collect(),
            services: self
                .services
                .iter()
                .map(|((account, name), (fqdn, redirect))| (account.clone(), name.clone(), fqdn.clone(), *redirect))
                .collect(),
            instances: self
                .instances
                .iter()
                .map(|((account, name), i)| {
                    let (service, address) = (i.service.clone(), i.address.clone());
                    (account.clone(), name.clone(), service, address, i.lease.get())
                })
                .collect(),
            shares: self
                .shares
                .iter()
                .map(|(token, s)| RoutedShareSnapshot {
                    token: token.clone(),
                    owner: s.owner.clone(),
                    mode: s.mode,
                    backend_mode: s.backend_mode,
                    target: s.target.clone(),
                    session_lease: s.session_lease.map(LeaseId::get),
                    session_address: s.session_address.clone(),
                    grants: s.grants.iter().cloned().collect(),
                })
                .collect(),
        }
    }

    /// The table a snapshot taken at `checkpoint` holds; shares are served
    /// at `TOKEN.{domain}`.
    pub fn restore(snapshot: RoutingSnapshot, checkpoint: u64, domain: &str) -> Result<RoutingTable, RestoreError> {
        let mut table = RoutingTable::new(domain);
        table.checkpoint = checkpoint;
        strictly_ordered(
            &snapshot.live_leases,
            |(a, _)| a.clone(),
            "accounts of the routing table",
        )?;
        for (account, leases) in snapshot.live_leases {
            strictly_ordered(&leases, |l| *l, "leases of the routing table")?;
            if leases.is_empty() {
                return invalid(format!("account {account} has no live lease in the routing table"));
            }
            // In order (checked above): built in one pass.
            let leases = leases.into_iter().map(lease_id).collect::<Result<_, _>>()?;
            table.live_leases.insert(account, leases);
        }
        let services = snapshot
            .services
            .into_iter()
            .map(|(account, name, fqdn, redirect)| ((account, name), (fqdn, redirect)))
            .collect();
        table.services = ordered_map(services, "routed services")?;
        let mut instances = Vec::with_capacity(snapshot.instances.len());
        for (account, name, service, address, lease) in snapshot.instances {
            let entry = InstanceEntry {
                service,
                address,
                lease: lease_id(lease)?,
            };
            instances.push(((account, name), entry));
        }
        table.instances = ordered_map(instances, "routed instances")?;
        let mut shares = Vec::with_capacity(snapshot.shares.len());
        for s in snapshot.shares {
            strictly_ordered(&s.grants, |g| g.clone(), "a share's grants")?;
            let entry = ShareEntry {
                owner: s.owner,
                mode: s.mode,
                backend_mode: s.backend_mode,
                target: s.target,
                session_lease: s.session_lease.map(lease_id).transpose()?,
                session_address: s.session_address,
                grants: s.grants.into_iter().collect(),
            };
            shares.push((s.token, entry));
        }
        table.shares = ordered_map(shares, "routed shares")?;
        Ok(table)
    }

    /// Whether a lease holds up an instance or a share session. Linear in
    /// instances and shares, which are few next to leases; an index by
    /// lease is the next step if they are not.
    fn lease_in_use(&self, account: &AccountId, lease: LeaseId) -> bool {
        self.instances
            .iter()
            .any(|((a, _), i)| a == account && i.lease == lease)
            || self
                .shares
                .values()
                .any(|s| s.owner == *account && s.session_lease == Some(lease))
    }
}

impl Projection for RoutingTable {
    const NAME: &'static str = "routing";

    fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    fn apply(&mut self, event: &RecordedEvent) {
        if !crate::advance(&mut self.checkpoint, event) {
            return;
        }
        let account = &event.account;
        let entity = |stream: &str| stream.rsplit('/').next().unwrap_or_default().to_owned();
        match event.stream.category() {
            // Lease events arrive by the hundred thousand (keep-alives
            // above all): read the type and the stream name, never the
            // payload.
            "lease" => {
                let lease = || entity(event.stream.as_str()).parse::<LeaseId>().ok();
                match event.event_type.as_str() {
                    "LeaseGranted" => {
                        if let Some(lease) = lease() {
                            if self.live_leases.entry(account.clone()).or_default().insert(lease) {
                                self.inserts.add();
                            }
                        }
                    }
                    "LeaseRevoked" | "LeaseExpired" => {
                        if let Some(lease) = lease() {
                            if let Some(leases) = self.live_leases.get_mut(account) {
                                leases.remove(&lease);
                                if leases.is_empty() {
                                    self.live_leases.remove(account);
                                }
                            }
                            if self.lease_in_use(account, lease) {
                                self.changed = true;
                            }
                        }
                    }
                    _ => {}
                }
            }
            "service" => match event.decode_as::<ServiceEvent>() {
                Ok(Some(ServiceEvent::Created(e))) => {
                    let redirect = e
                        .ports
                        .iter()
                        .any(|p| p.port == 80 && p.handlers.contains(&tenure_events::service::Handler::Redirect));
                    self.services.insert((account.clone(), e.name), (e.fqdn, redirect));
                    self.changed = true;
                }
                Ok(Some(ServiceEvent::Deleted(_))) => {
                    self.services.remove(&(account.clone(), entity(event.stream.as_str())));
                    self.changed = true;
                }
                Ok(None) => {}
                Err(err) => tracing::error!(position = event.position, %err, "routing table skips an event"),
            },
            "instance" => match event.decode_as::<InstanceEvent>() {
                Ok(Some(InstanceEvent::Registered(e))) => {
                    let entry = InstanceEntry {
                        service: e.service,
                        address: e.address,
                        lease: e.lease,
                    };
                    self.instances.insert((account.clone(), e.name), entry);
                    self.changed = true;
                }
                Ok(Some(InstanceEvent::Removed(_))) => {
                    self.instances.remove(&(account.clone(), entity(event.stream.as_str())));
                    self.changed = true;
                }
                Ok(None) => {}
                Err(err) => tracing::error!(position = event.position, %err, "routing table skips an event"),
            },
            "share" => {
                let token = entity(event.stream.as_str());
                match event.decode_as::<ShareEvent>() {
                    Ok(Some(ShareEvent::Reserved(e))) => {
                        self.shares.insert(
                            token,
                            ShareEntry {
                                owner: e.owner,
                                mode: e.mode,
                                backend_mode: e.backend_mode,
                                target: e.target,
                                session_lease: None,
                                session_address: None,
                                grants: BTreeSet::new(),
                            },
                        );
                    }
                    Ok(Some(ShareEvent::Released(_))) => {
                        self.shares.remove(&token);
                    }
                    Ok(Some(ShareEvent::SessionStarted(e))) => {
                        if let Some(share) = self.shares.get_mut(&token) {
                            share.session_lease = Some(e.lease);
                            share.session_address = e.address;
                        }
                    }
                    Ok(Some(ShareEvent::SessionEnded(_))) => {
                        if let Some(share) = self.shares.get_mut(&token) {
                            share.session_lease = None;
                            share.session_address = None;
                        }
                    }
                    Ok(Some(ShareEvent::AccessGranted(e))) => {
                        if let Some(share) = self.shares.get_mut(&token) {
                            share.grants.insert(e.sha256);
                        }
                    }
                    Ok(None) => return,
                    Err(err) => {
                        tracing::error!(position = event.position, %err, "routing table skips an event");
                        return;
                    }
                }
                self.changed = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tenure_events::LeaseEvent;

    #[test]
    fn the_lease_event_types_read_by_name_exist() {
        for name in ["LeaseGranted", "LeaseRevoked", "LeaseExpired"] {
            assert!(LeaseEvent::TYPES.iter().any(|(t, _)| *t == name), "{name}");
        }
    }
}

use std::collections::{BTreeMap, BTreeSet};

use tenure_events::{
    AccountId, BackendMode, InstanceEvent, LeaseId, RecordedEvent, ServiceEvent, ShareEvent, ShareMode,
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
    live_leases: BTreeSet<(AccountId, LeaseId)>,
    /// (account, name) → (FQDN, whether plain HTTP redirects to https).
    services: BTreeMap<(AccountId, String), (String, bool)>,
    instances: BTreeMap<(AccountId, String), InstanceEntry>,
    shares: BTreeMap<String, ShareEntry>,
    /// Set when an applied event changed some route.
    changed: bool,
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
            live_leases: BTreeSet::new(),
            services: BTreeMap::new(),
            instances: BTreeMap::new(),
            shares: BTreeMap::new(),
            changed: false,
        }
    }

    /// Whether routes changed since the last call (and resets it).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn live(&self, account: &AccountId, lease: LeaseId) -> bool {
        self.live_leases.contains(&(account.clone(), lease))
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
                            self.live_leases.insert((account.clone(), lease));
                        }
                    }
                    "LeaseRevoked" | "LeaseExpired" => {
                        if let Some(lease) = lease() {
                            self.live_leases.remove(&(account.clone(), lease));
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

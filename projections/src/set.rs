use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tenure_events::RecordedEvent;

use crate::{Catalog, Digest, Directory, ExpiryQueue, Projection, RoutingTable, Services, Shares, Workloads};

/// Every projection the server runs, folded side by side: what the offline
/// tools (`tenure replay`, `tenure verify`) rebuild from the log alone, and
/// a consistent copy of a running server's.
#[derive(Debug, Clone)]
pub struct ProjectionSet {
    pub expiry: ExpiryQueue,
    pub catalog: Catalog,
    pub directory: Directory,
    pub shares: Shares,
    pub services: Services,
    pub workloads: Workloads,
    pub routing: RoutingTable,
}

impl ProjectionSet {
    /// Empty projections: lease deadlines count from no earlier than
    /// `floor`; shares are served at `TOKEN.{domain}`.
    pub fn new(floor: DateTime<Utc>, domain: &str) -> ProjectionSet {
        ProjectionSet {
            expiry: ExpiryQueue::new(floor),
            catalog: Catalog::default(),
            directory: Directory::default(),
            shares: Shares::default(),
            services: Services::default(),
            workloads: Workloads::default(),
            routing: RoutingTable::new(domain),
        }
    }

    /// Applies one event to every projection.
    pub fn apply(&mut self, event: &RecordedEvent) {
        self.expiry.apply(event);
        self.catalog.apply(event);
        self.directory.apply(event);
        self.shares.apply(event);
        self.services.apply(event);
        self.workloads.apply(event);
        self.routing.apply(event);
    }

    /// Each projection's digest, by its stable name.
    pub fn digests(&self) -> BTreeMap<&'static str, String> {
        fn entry<P: Digest>(p: &P) -> (&'static str, String) {
            (P::NAME, p.digest())
        }
        BTreeMap::from([
            entry(&self.expiry),
            entry(&self.catalog),
            entry(&self.directory),
            entry(&self.shares),
            entry(&self.services),
            entry(&self.workloads),
            entry(&self.routing),
        ])
    }
}

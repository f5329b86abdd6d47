//! What `GET /metrics` reads: the counters and histograms the server moves
//! as it works, and the states (live leases, actors in memory, how far the
//! projections are behind the log) read from it now.

use std::time::Duration;

use tenure_projections::{Catalog, Directory, ExpiryQueue, Projection, RoutingTable, Services, Shares, Workloads};

use super::Control;
use crate::actors::CommandError;
use crate::metrics::Observed;

/// How long a scrape waits for the projections to apply what was durable
/// when it came, so that it counts the writes acknowledged before it (as
/// other reads of projections do). A stuck projector must not stop the
/// scrape that shows it: after this, it answers with the lag it sees.
const SCRAPE_CATCH_UP: Duration = Duration::from_millis(500);

/// The projections, by their stable names: one projector applies each batch
/// of the log to all of them before it moves, so they share its position.
const PROJECTIONS: [&str; 7] = [
    ExpiryQueue::NAME,
    Catalog::NAME,
    Directory::NAME,
    Shares::NAME,
    Services::NAME,
    Workloads::NAME,
    RoutingTable::NAME,
];

impl Control {
    /// Every metric, in Prometheus's text format.
    pub async fn metrics_text(&self) -> Result<String, CommandError> {
        let hub = &self.hub;
        let head = hub.store.head();
        let _ = tokio::time::timeout(SCRAPE_CATCH_UP, hub.projections.caught_up(head)).await;
        let applied = hub.projections.checkpoint();
        let observed = Observed {
            leases_live: hub.projections.expiry.lock().len(),
            actors_active: vec![
                hub.leases.active(),
                hub.keyspaces.active(),
                hub.accounts.active(),
                hub.shares.active(),
                hub.workloads.active(),
                hub.services.active(),
                hub.instances.active(),
            ],
            projections: PROJECTIONS.iter().map(|name| (*name, applied)).collect(),
            // Read after the projections' position: the lag is never negative.
            head: hub.store.head(),
        };
        hub.metrics
            .render(&observed)
            .map_err(|e| CommandError::Unavailable(format!("rendering the metrics: {e}")))
    }
}

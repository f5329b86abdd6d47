//! Several tenure nodes on one shared log (PostgreSQL): which node runs the
//! timers, and how the others send it keep-alives.
//!
//! Every node takes every command (appends carry expected versions; see
//! `Control::call` for conflicts) and follows `$all` into its projections
//! and key spaces (`actors::follow`). Timers are different: a lease must
//! expire once, and only after the deadline the keep-alives set, so one
//! node at a time runs the expiry and decommission drivers: the one that
//! holds the election's lock (`store::Election`). The others send each
//! keep-alive (and each time-to-live, which reads the deadline) to it, as
//! etcd's followers send renewals to their leader, and answer what it
//! answered.
//!
//! When the leader dies, another node takes the lock within about a
//! second ([`crate::store::Election::EVERY`]); it gives every live lease
//! its full TTL from that moment (`ExpiryQueue::take_over`, as after a
//! restart: renewals the old leader held are lost, never shortened),
//! deletes keys left on ended leases, and starts the drivers. While no
//! leader is known (or the one recorded does not answer), a node answers a
//! keep-alive itself: the lease is live in the log, and the next leader
//! counts its full TTL from later than now.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;

use crate::actors::{decommission, expiry, Hub};
use crate::control::Control;
use crate::store::Role;

/// Header marking a request one node sent to another: it is answered
/// where it arrives, never sent on again.
pub const FORWARDED_HEADER: &str = "tenure-forwarded";

/// Read-your-writes across nodes: serve this request once the log up to
/// this position has been applied here (`api::wait_for_min_position`).
pub const MIN_POSITION_HEADER: &str = "tenure-min-position";
/// The log position a node had reached when it answered.
pub const POSITION_HEADER: &str = "tenure-position";

/// How long a node waits for the leader to answer a forwarded request
/// before answering itself.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a node knows of the other nodes.
pub struct Cluster {
    role: watch::Receiver<Role>,
    client: reqwest::Client,
}

impl Cluster {
    pub fn new(role: watch::Receiver<Role>) -> Cluster {
        let client = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Cluster { role, client }
    }

    /// The leader's URL if another node leads.
    pub fn leader_elsewhere(&self) -> Option<String> {
        let role = self.role.borrow();
        if role.leading {
            None
        } else {
            role.leader_url.clone()
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// Runs the timers (expiry and decommission drivers) while this node leads,
/// until `stop` fires. Without an election (an embedded log) it always
/// leads.
pub async fn run_timers(control: Control, role: Option<watch::Receiver<Role>>, mut stop: watch::Receiver<bool>) {
    let hub = Arc::clone(control.hub());
    let Some(mut role) = role else {
        let decommission = decommission::run(Arc::clone(&hub), stop.clone());
        let expiry = expiry::run(Arc::clone(&hub), stop);
        futures::future::join(decommission, expiry).await;
        return;
    };
    loop {
        tokio::select! {
            led = role.wait_for(|r| r.leading) => if led.is_err() { return },
            _ = stop.changed() => return,
        }
        take_over(&control, &hub).await;
        let (lost, lost_rx) = watch::channel(false);
        let decommission = decommission::run(Arc::clone(&hub), lost_rx.clone());
        let expiry = expiry::run(Arc::clone(&hub), lost_rx);
        let drivers = futures::future::join(decommission, expiry);
        tokio::pin!(drivers);
        let stopping = tokio::select! {
            // Closed: the election has ended (the server stops). Its last
            // value still says this node leads, so waiting for a lead again
            // would return at once: the loop would take the timers over
            // and give them up in a spin until the process exits.
            lost = role.wait_for(|r| !r.leading) => lost.is_err(),
            _ = stop.changed() => true,
            _ = &mut drivers => true,
        };
        let _ = lost.send(true);
        drivers.await;
        hub.leading.store(false, Ordering::Release);
        hub.projections.expiry.lock().follow_timers();
        tracing::warn!("this node no longer runs the timers");
        if stopping {
            return;
        }
    }
}

/// This node became the leader: full TTLs from now, keys of ended leases
/// deleted (a leader may have died between a lease's end and its keys').
async fn take_over(control: &Control, hub: &Arc<Hub>) {
    hub.projections.caught_up(hub.store.head()).await;
    hub.projections.expiry.lock().take_over(hub.clock.now());
    hub.leading.store(true, Ordering::Release);
    match control.recover_lease_keys().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            leases = n,
            "deleted keys left on ended leases when taking the timers over"
        ),
        Err(e) => tracing::error!(error = %e, "cannot delete keys left on ended leases"),
    }
    tracing::info!(
        live_leases = hub.projections.expiry.lock().len(),
        "this node runs the timers"
    );
}

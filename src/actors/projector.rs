//! The projector: follows `$all` and folds every event into the projections
//! the server runs on (the expiry queue, the catalog of key spaces, the directory of
//! accounts).
//!
//! Queries that read a projection first wait until it has applied
//! everything durable when they started ([`Projections::caught_up`]), so a
//! client reads its own acknowledged writes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tenure_projections::snapshot::SetSnapshot;
use tenure_projections::{
    Catalog, Directory, ExpiryQueue, Projection, ProjectionSet, Routes, RoutingTable, Services, Shares, Workloads,
};
use tokio::sync::{watch, Notify};

use crate::store::EventStore;

pub struct Projections {
    pub expiry: Mutex<ExpiryQueue>,
    pub catalog: Mutex<Catalog>,
    /// The reserved shares.
    pub shares: Mutex<Shares>,
    /// Services and instances.
    pub services: Mutex<Services>,
    /// Where the frontend proxy sends each host.
    pub routing: Mutex<RoutingTable>,
    /// The routes the proxy reads, swapped whole after each batch that
    /// changed them: a request reads them without taking a lock.
    pub routes: arc_swap::ArcSwap<Routes>,
    /// Workload reservations and the nodes' feeds.
    pub workloads: Mutex<Workloads>,
    /// Woken (all waiters) after each applied batch with workload events:
    /// long polls of the nodes' feeds wait on it.
    pub workload_events: Notify,
    /// Woken after each batch with workload events: the decommission driver
    /// may have an earlier deadline.
    pub workload_deadlines: Notify,
    /// Accounts, tokens and limits (read by authentication on every request,
    /// so it has its own lock, taken only for batches with account events).
    pub directory: parking_lot::RwLock<Directory>,
    checkpoint: watch::Sender<u64>,
    /// Held while a batch is applied, so that [`Projections::snapshot`]
    /// sees every projection at the same position.
    applying: Mutex<()>,
    /// Woken after each applied batch with lease events: the expiry driver
    /// may have an earlier deadline to wait for.
    pub lease_events: Notify,
    /// Called with each batch before the checkpoint moves past it, on a
    /// shared log (see `actors::follow`).
    follower: std::sync::OnceLock<Follower>,
}

/// What the projector tells of each batch it applies, besides the
/// projections.
pub type Follower = Box<dyn Fn(&crate::store::Batch) + Send + Sync>;

impl Projections {
    /// Empty projections; lease deadlines count from no earlier than
    /// `floor`; shares are served at `TOKEN.{domain}`.
    pub fn new(floor: DateTime<Utc>, domain: &str) -> Projections {
        Projections {
            expiry: Mutex::new(ExpiryQueue::new(floor)),
            catalog: Mutex::new(Catalog::default()),
            shares: Mutex::new(Shares::default()),
            services: Mutex::new(Services::default()),
            routing: Mutex::new(RoutingTable::new(domain)),
            routes: arc_swap::ArcSwap::from_pointee(Routes::default()),
            workloads: Mutex::new(Workloads::default()),
            workload_events: Notify::new(),
            workload_deadlines: Notify::new(),
            directory: parking_lot::RwLock::new(Directory::default()),
            checkpoint: watch::Sender::new(0),
            applying: Mutex::new(()),
            lease_events: Notify::new(),
            follower: std::sync::OnceLock::new(),
        }
    }

    /// Projections restored from a snapshot taken at `position`: the
    /// projector goes on from the event after it.
    pub fn restored(position: u64, set: ProjectionSet) -> Projections {
        let routes = set.routing.routes();
        Projections {
            expiry: Mutex::new(set.expiry),
            catalog: Mutex::new(set.catalog),
            shares: Mutex::new(set.shares),
            services: Mutex::new(set.services),
            routing: Mutex::new(set.routing),
            routes: arc_swap::ArcSwap::from_pointee(routes),
            workloads: Mutex::new(set.workloads),
            workload_events: Notify::new(),
            workload_deadlines: Notify::new(),
            directory: parking_lot::RwLock::new(set.directory),
            checkpoint: watch::Sender::new(position),
            applying: Mutex::new(()),
            lease_events: Notify::new(),
            follower: std::sync::OnceLock::new(),
        }
    }

    /// Has `follower` told of every batch from now on, before the
    /// checkpoint moves past it (once; later calls are ignored).
    pub fn set_follower(&self, follower: Follower) {
        let _ = self.follower.set(follower);
    }

    /// The global position of the last event applied.
    pub fn checkpoint(&self) -> u64 {
        *self.checkpoint.borrow()
    }

    /// Follows the checkpoint as it moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.checkpoint.subscribe()
    }

    /// What every projection holds, all at the same position (answered
    /// with it), for a snapshot. Holds the projector's lock while it copies
    /// (no index, heap or key is copied: a snapshot keeps plain values, and
    /// is encoded after), taking each projection's own lock in turn, so
    /// readers of the others go on meanwhile.
    pub fn snapshot_state(&self) -> (u64, SetSnapshot) {
        let _applying = self.applying.lock();
        // One block per lock, so each is released before the next.
        // The projections walk every entry for it anyway: their big maps
        // are rebuilt with full nodes here when due (`compact`).
        let expiry = {
            let mut queue = self.expiry.lock();
            queue.compact();
            queue.snapshot()
        };
        let catalog = self.catalog.lock().snapshot();
        let directory = self.directory.read().snapshot();
        let shares = self.shares.lock().snapshot();
        let services = self.services.lock().snapshot();
        let workloads = self.workloads.lock().snapshot();
        let routing = {
            let mut table = self.routing.lock();
            table.compact();
            table.snapshot()
        };
        let set = SetSnapshot {
            expiry,
            catalog,
            directory,
            shares,
            services,
            workloads,
            routing,
        };
        (self.checkpoint(), set)
    }

    /// Resolves once every event up to `position` has been applied.
    pub async fn caught_up(&self, position: u64) {
        let mut rx = self.checkpoint.subscribe();
        // The sender lives in `self`, which outlives this call.
        let _ = rx.wait_for(|applied| *applied >= position).await;
    }

    /// A copy of every projection, all at the same position (answered with
    /// it): what `tenure verify` compares with projections rebuilt from the
    /// log. Copies under the projector's lock; the caller digests it after.
    pub fn snapshot(&self) -> (u64, ProjectionSet) {
        let _applying = self.applying.lock();
        let set = ProjectionSet {
            expiry: self.expiry.lock().clone(),
            catalog: self.catalog.lock().clone(),
            directory: self.directory.read().clone(),
            shares: self.shares.lock().clone(),
            services: self.services.lock().clone(),
            workloads: self.workloads.lock().clone(),
            routing: self.routing.lock().clone(),
        };
        (self.checkpoint(), set)
    }

    fn apply(&self, batch: &crate::store::Batch) {
        let events: &[tenure_events::RecordedEvent] = batch;
        let Some(last) = events.last() else { return };
        let _applying = self.applying.lock();
        let mut lease_events = false;
        let mut account_events = false;
        let mut workload_events = false;
        {
            let mut expiry = self.expiry.lock();
            let mut catalog = self.catalog.lock();
            let mut shares = self.shares.lock();
            let mut services = self.services.lock();
            let mut routing = self.routing.lock();
            for e in events {
                lease_events |= e.stream.category() == "lease";
                account_events |= e.stream.category() == "account";
                workload_events |= e.stream.category() == "workload";
                expiry.apply(e);
                catalog.apply(e);
                shares.apply(e);
                services.apply(e);
                routing.apply(e);
            }
            if routing.take_changed() {
                self.routes.store(std::sync::Arc::new(routing.routes()));
            }
        }
        if account_events {
            let mut directory = self.directory.write();
            for e in events {
                directory.apply(e);
            }
        }
        if workload_events {
            let mut workloads = self.workloads.lock();
            for e in events {
                workloads.apply(e);
            }
        }
        if let Some(follower) = self.follower.get() {
            follower(batch);
        }
        let position = last.position;
        self.checkpoint.send_modify(|c| {
            assert!(position > *c, "projections never go back");
            *c = position;
        });
        if lease_events {
            self.lease_events.notify_one();
        }
        if workload_events {
            self.workload_events.notify_waiters();
            self.workload_deadlines.notify_one();
        }
    }
}

/// Follows the log until `stop` fires or the store closes.
pub async fn run(store: Arc<dyn EventStore>, projections: Arc<Projections>, mut stop: watch::Receiver<bool>) {
    let mut subscription = store.subscribe_all(projections.checkpoint() + 1);
    loop {
        tokio::select! {
            batch = subscription.next_batch() => match batch {
                Ok(Some(events)) => projections.apply(&events),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "projector cannot read the log; retrying");
                    // A back-off between retries of a failing read, not a wait for an event.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    subscription = store.subscribe_all(projections.checkpoint() + 1);
                }
            },
            _ = stop.changed() => return,
        }
    }
}

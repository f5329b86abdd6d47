//! The control plane's front door: one async method per command or query,
//! used by the HTTP API (and by tests). It routes to the actors and waits for
//! their answer; it holds no state of its own.
//!
//! This module holds what every command shares (the bound on commands in
//! flight, authentication, reading the projections once caught up, limits,
//! routing to an entity actor); each kind of entity has its own file with
//! its commands and queries: `leases`, `keys`, `accounts`, `shares`,
//! `workloads`, `services`; `overview` gathers what the dashboard shows;
//! `history` reads the log itself (events, audit trails, the projections'
//! digests); `metrics` what `/metrics` shows.

mod accounts;
mod history;
mod keys;
mod leases;
mod metrics;
mod overview;
mod services;
mod shares;
mod workloads;

pub use accounts::{IssuedToken, Usage};
pub use history::{Audit, AuditEntry, EntityRef, EventsPage, Following, EVENTS_PAGE_MAX};
pub use leases::LeaseInfo;

pub use overview::{AccountEntry, LeasePage, LeaseRow, Overview, ServiceEntry, ShareEntry, LEASE_PAGE_MAX};

use std::sync::Arc;

use tenure_events::{AccountId, LeaseId};
use tenure_projections::LeaseKey;
use tokio::sync::Semaphore;

use crate::actors::{Activation, CommandError, Hub, LimitReached, Reply};
use crate::auth::{AuthError, Authenticator, Principal};
use crate::store::StoreError;

/// Commands and queries in flight at once. Past this, callers wait: this is
/// the bound behind every actor mailbox and the store's write queue.
pub const COMMANDS_IN_FLIGHT_MAX: usize = 16_384;

/// How many times a command is carried out at most when it conflicts with
/// another writer (see [`Control::call`]).
pub const COMMAND_ATTEMPTS: u64 = 16;

/// How often a server-chosen lease ID is drawn again if it is taken.
const FRESH_ID_ATTEMPTS: usize = 3;

/// A limit a creation is counted against.
#[derive(Clone, Copy)]
struct Limit {
    name: &'static str,
    what: &'static str,
    pick: fn(&tenure_events::Limits) -> i64,
}

impl Limit {
    const LEASES: Limit = Limit {
        name: "max_leases",
        what: "live leases",
        pick: |l| l.max_leases,
    };
    const SHARES: Limit = Limit {
        name: "max_reserved_shares",
        what: "reserved shares",
        pick: |l| l.max_reserved_shares,
    };
    const SERVICES: Limit = Limit {
        name: "max_services",
        what: "services",
        pick: |l| l.max_services,
    };
}

#[derive(Clone)]
pub struct Control {
    hub: Arc<Hub>,
    auth: Arc<Authenticator>,
    in_flight: Arc<Semaphore>,
    lease_ids: Arc<LeaseIds>,
    /// Creations counted by a limit (grants, reservations) of an account
    /// with such a limit pass one at a time per account (check the count,
    /// create, wait for the count to include it), so the limit holds under
    /// concurrency. Unlimited accounts skip this.
    gates: Arc<parking_lot::Mutex<std::collections::HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>>,
    /// Set when the server stops: live event streams end.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// Live event streams open at once (see `history::FOLLOWERS_MAX`).
    followers: Arc<Semaphore>,
    /// The other nodes, on a shared log (`None`: this node is alone).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// How a request reached this node, for sending it on to the node that
/// runs the timers (see `crate::cluster`).
#[derive(Clone, Debug, Default)]
pub struct Via {
    /// The request's `Authorization` header, passed on as it came.
    pub authorization: Option<String>,
    /// Another node sent it here: answer it here.
    pub forwarded: bool,
}

/// How each attempt of a command (see [`Control::call`]) activates its
/// actor: the first as asked, every later one from the log (after a
/// conflict the stream exists, whatever the first assumed).
struct Activations {
    first: Activation,
    sent: std::sync::atomic::AtomicBool,
}

impl Activations {
    fn first(first: Activation) -> Activations {
        Activations {
            first,
            sent: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn next(&self) -> Activation {
        if self.sent.swap(true, std::sync::atomic::Ordering::Relaxed) {
            Activation::Load
        } else {
            self.first
        }
    }
}

/// Server-chosen lease IDs, increasing like etcd's: the wall-clock
/// millisecond at start-up in the high bits, a counter in the low 20. New
/// lease streams then sort after the existing ones, so creating one appends
/// to the end of the store's stream index instead of touching a random page.
/// Uniqueness does not rest on this: a grant on a taken ID conflicts and is
/// retried with a random one.
struct LeaseIds {
    next: std::sync::atomic::AtomicI64,
}

impl LeaseIds {
    fn new() -> LeaseIds {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        LeaseIds {
            next: std::sync::atomic::AtomicI64::new(((ms & ((1 << 43) - 1)) << 20).max(1)),
        }
    }

    fn next(&self) -> LeaseId {
        let raw = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LeaseId::new(raw).unwrap_or_else(LeaseId::random)
    }
}

impl Control {
    pub fn new(hub: Arc<Hub>, auth: Authenticator) -> Control {
        Control {
            hub,
            auth: Arc::new(auth),
            in_flight: Arc::new(Semaphore::new(COMMANDS_IN_FLIGHT_MAX)),
            lease_ids: Arc::new(LeaseIds::new()),
            gates: Arc::default(),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
            followers: Arc::new(Semaphore::new(history::FOLLOWERS_MAX)),
            cluster: None,
        }
    }

    /// This node shares its log with others (see `crate::cluster`).
    pub fn with_cluster(mut self, cluster: crate::cluster::Cluster) -> Control {
        self.cluster = Some(Arc::new(cluster));
        self
    }

    /// The URL of the node running the timers, when that is another node
    /// and the request was not sent here by one.
    fn leader_elsewhere(&self, via: &Via) -> Option<(String, &crate::cluster::Cluster)> {
        let cluster = self.cluster.as_deref()?;
        if via.forwarded {
            return None;
        }
        cluster.leader_elsewhere().map(|url| (url, cluster))
    }

    /// Tells long-lived answers (live event streams) to end: the server
    /// is stopping and waits for open requests.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes `true` when the server stops.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Who sent a request with this `Authorization` header value. A token
    /// not in the directory is looked up again once the directory has
    /// applied everything durable, so a token works as soon as its creation
    /// is acknowledged.
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        let projections = &self.hub.projections;
        let store = &self.hub.store;
        self.auth
            .authenticate(header, |hash| async move {
                let find = || {
                    projections
                        .directory
                        .read()
                        .token(&hash)
                        .map(|(account, id)| (account.clone(), id.to_owned()))
                };
                match find() {
                    Some(found) => Some(found),
                    None => {
                        projections.caught_up(store.head()).await;
                        find()
                    }
                }
            })
            .await
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// A place among the commands and queries in flight, once one is free.
    async fn enter(&self) -> Result<tokio::sync::SemaphorePermit<'_>, CommandError> {
        self.in_flight
            .acquire()
            .await
            .map_err(|_| CommandError::Unavailable("the server is shutting down".into()))
    }

    /// Sends a message built by `send` and waits for its answer. A command
    /// that conflicted with another writer (another node on a shared log),
    /// or whose actor stopped before answering, was not carried out: it is
    /// sent again, to an actor reloaded from the log, up to
    /// [`COMMAND_ATTEMPTS`] times in all. Not after a store failure (an
    /// embedded store refuses writes from then on, and a lost `COMMIT`
    /// answer may hide a commit).
    async fn call<T: Send + 'static>(&self, send: impl Fn(Reply<T>)) -> Result<T, CommandError> {
        let _permit = self.enter().await?;
        let mut attempt = 1;
        let mut conflicted = false;
        loop {
            let (reply, answer) = Reply::oneshot();
            send(reply);
            let answer = answer.await.unwrap_or(Err(CommandError::Stopped));
            conflicted |= matches!(answer, Err(CommandError::Conflict(_)));
            match answer {
                Err(e) if e.is_retryable() && attempt < COMMAND_ATTEMPTS && self.hub.store.health().is_ok() => {
                    tracing::debug!(attempt, error = %e, "command sent again");
                    // A random back-off between attempts, growing, not a
                    // wait for an event: nodes that conflicted should not
                    // collide again.
                    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % (attempt * 4 + 1);
                    tokio::time::sleep(std::time::Duration::from_millis(1 + jitter)).await;
                    attempt += 1;
                }
                // The last attempt may have found the actor stopped by
                // another command's conflict: still a conflict.
                Err(CommandError::Conflict(_) | CommandError::Stopped) if conflicted => {
                    tracing::info!(
                        attempts = attempt,
                        "other nodes' appends won every attempt; answered as a conflict"
                    );
                    return Err(CommandError::Conflict(format!(
                        "other writers changed this entity at the same time {COMMAND_ATTEMPTS} times in a row; retry"
                    )));
                }
                other => return other,
            }
        }
    }

    /// Reads the projections once they have applied everything durable
    /// when this is called, so a caller reads its own acknowledged writes.
    async fn read<T>(&self, read: impl FnOnce(&crate::actors::Projections) -> T) -> T {
        self.hub.projections.caught_up(self.hub.store.head()).await;
        read(&self.hub.projections)
    }

    fn lease_key(account: &AccountId, lease: LeaseId) -> LeaseKey {
        LeaseKey {
            account: account.clone(),
            lease,
        }
    }

    /// Runs `create` unless the account is at `limit`: for an account with
    /// that limit, creations pass its gate one at a time (count, create,
    /// let the projections count it too); unlimited accounts go straight
    /// through.
    async fn within_limit<T, Fut>(
        &self,
        account: &AccountId,
        limit: Limit,
        count: impl Fn(&crate::actors::Projections) -> usize,
        create: impl FnOnce() -> Fut,
    ) -> Result<T, CommandError>
    where
        Fut: std::future::Future<Output = Result<T, CommandError>>,
    {
        let projections = &self.hub.projections;
        if (limit.pick)(&projections.directory.read().limits(account)) < 0 {
            return create().await;
        }
        let gate = Arc::clone(self.gates.lock().entry(account.clone()).or_default());
        let _turn = gate.lock().await;
        projections.caught_up(self.hub.store.head()).await;
        let max = (limit.pick)(&projections.directory.read().limits(account));
        if !tenure_events::allows_one_more(max, count(projections)) {
            return Err(LimitReached {
                account: account.clone(),
                limit: limit.name,
                what: limit.what,
                max,
            }
            .into());
        }
        let created = create().await;
        // The next creation through the gate must count this one.
        projections.caught_up(self.hub.store.head()).await;
        created
    }

    /// Routes a command to an entity actor, waits for its answer (the
    /// events it recorded are durable by then), then for the projections
    /// to apply them, so what the caller reads next includes them.
    async fn entity_command<A, M>(
        &self,
        registry: &crate::actors::Registry<A>,
        key: &A::Key,
        activation: Activation,
        message: impl Fn(Reply<usize>) -> M,
    ) -> Result<usize, CommandError>
    where
        A: crate::actors::registry::Entity + actix::Handler<M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        let hub = &self.hub;
        let activations = Activations::first(activation);
        let recorded = self
            .call(|reply| registry.route(hub, key, activations.next(), message(reply)))
            .await?;
        hub.projections.caught_up(hub.store.head()).await;
        Ok(recorded)
    }

    /// Whether the store still takes writes.
    pub fn health(&self) -> Result<(), StoreError> {
        self.hub.store.health()
    }
}

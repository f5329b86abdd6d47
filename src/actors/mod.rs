//! The actors: one per entity, activated on demand from its stream, plus the
//! projector that folds the log into read models and the expiry driver that
//! turns the expiry queue into `Expire` commands.
//!
//! Everything an actor needs is in the [`Hub`]: the store, the clock, the
//! settings, the registries that route to other actors, the projections.

pub mod account;
pub mod decommission;
pub mod entity;
pub mod expiry;
pub mod follow;
pub mod journal;
pub mod keyspace;
pub mod lease;
pub mod projector;
pub mod registry;
pub mod service;
pub mod share;
pub mod workload;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tenure_events::Metadata;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::domain::account::AccountRejection;
use crate::domain::keyspace::KeyspaceRejection;
use crate::domain::lease::LeaseRejection;
use crate::domain::service::{InstanceRejection, ServiceRejection};
use crate::domain::share::ShareRejection;
use crate::domain::workload::WorkloadRejection;
use crate::store::{AppendError, EventStore, StoreError};

pub use account::AccountActor;
pub use keyspace::KeyspaceActor;
pub use lease::LeaseActor;
pub use projector::Projections;
pub use registry::{Activation, Registry};
pub use service::{InstanceActor, ServiceActor};
pub use share::ShareActor;
pub use workload::WorkloadActor;

/// Settings the actors run with.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// TTLs below this are raised to it.
    pub min_ttl_s: i64,
    /// An actor idle this long frees its memory; the next command reloads it.
    pub passivate_after: Duration,
    /// When this process started: TTLs count from no earlier than this.
    pub epoch: DateTime<Utc>,
    /// The data-plane frontend's domain and public port: a public share is
    /// reached at `http://TOKEN.DOMAIN:PORT/`.
    pub domain: String,
    pub frontend_port: u16,
}

/// The latest durable revision of each account's key space. Each key space
/// actor publishes its revision after loading and after every durable change,
/// before it releases any reply; etcd-style reply headers read it here
/// without a message to the key space.
#[derive(Default)]
pub struct Revisions {
    slots: parking_lot::RwLock<std::collections::HashMap<tenure_events::AccountId, Arc<AtomicI64>>>,
}

impl Revisions {
    /// The account's key space revision (1 for an empty, never changed one).
    pub fn get(&self, account: &tenure_events::AccountId) -> i64 {
        self.slots
            .read()
            .get(account)
            .map_or(1, |slot| slot.load(Ordering::Acquire))
    }

    pub(crate) fn slot(&self, account: &tenure_events::AccountId) -> Arc<AtomicI64> {
        Arc::clone(
            self.slots
                .write()
                .entry(account.clone())
                .or_insert_with(|| Arc::new(AtomicI64::new(1))),
        )
    }
}

/// What every actor shares.
pub struct Hub {
    pub store: Arc<dyn EventStore>,
    pub clock: Arc<dyn Clock>,
    pub config: RuntimeConfig,
    pub leases: Registry<LeaseActor>,
    pub keyspaces: Registry<KeyspaceActor>,
    pub accounts: Registry<AccountActor>,
    pub shares: Registry<ShareActor>,
    pub workloads: Registry<WorkloadActor>,
    pub services: Registry<ServiceActor>,
    pub instances: Registry<InstanceActor>,
    pub projections: Arc<Projections>,
    pub revisions: Revisions,
    /// The server's metrics (see `crate::metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Where key spaces find their snapshots (`None`: they fold their
    /// whole stream).
    pub snapshots: Option<Arc<crate::snapshot::Snapshots>>,
    /// Whether this node runs the timers (always, on an embedded log; on a
    /// shared one, while it holds the election's lock).
    pub leading: std::sync::atomic::AtomicBool,
}

/// A command refused because the account is at one of its limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("account '{account}' has reached its limit of {max} {what} ({limit})")]
pub struct LimitReached {
    pub account: tenure_events::AccountId,
    /// The limit's name (`max_leases`).
    pub limit: &'static str,
    /// What is counted (`live leases`).
    pub what: &'static str,
    pub max: i64,
}

/// Who sent a command and the tracing span of the request it came from.
#[derive(Clone, Debug)]
pub struct Cmd {
    pub meta: Metadata,
    pub span: tracing::Span,
}

impl Cmd {
    pub fn new(meta: Metadata) -> Cmd {
        Cmd {
            meta,
            span: tracing::Span::current(),
        }
    }
}

/// Where an actor sends its answer: a callback, called exactly once. If it
/// is dropped unanswered (the actor failed, the server is stopping), it
/// answers [`CommandError::Unavailable`] itself, so every caller hears back.
pub struct Reply<T> {
    send: Option<Answer<T>>,
}

type Answer<T> = Box<dyn FnOnce(Result<T, CommandError>) + Send>;

impl<T: Send + 'static> Reply<T> {
    pub fn new(send: impl FnOnce(Result<T, CommandError>) + Send + 'static) -> Reply<T> {
        Reply {
            send: Some(Box::new(send)),
        }
    }

    /// A reply whose answer arrives on a oneshot channel.
    pub fn oneshot() -> (Reply<T>, oneshot::Receiver<Result<T, CommandError>>) {
        let (tx, rx) = oneshot::channel();
        let reply = Reply::new(move |result| {
            let _ = tx.send(result);
        });
        (reply, rx)
    }

    pub fn send(mut self, result: Result<T, CommandError>) {
        if let Some(send) = self.send.take() {
            send(result);
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(send) = self.send.take() {
            send(Err(CommandError::Stopped));
        }
    }
}

/// Why a command did not happen. Rejections are the caller's business (4xx);
/// the rest are ours (5xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Lease(#[from] LeaseRejection),
    #[error(transparent)]
    Keyspace(#[from] KeyspaceRejection),
    #[error(transparent)]
    Account(#[from] AccountRejection),
    #[error(transparent)]
    Share(#[from] ShareRejection),
    #[error(transparent)]
    Workload(#[from] WorkloadRejection),
    #[error(transparent)]
    Service(#[from] ServiceRejection),
    #[error(transparent)]
    Instance(#[from] InstanceRejection),
    /// A query of the log refused (an unknown entity, a bad filter).
    #[error(transparent)]
    History(#[from] crate::history::HistoryRejection),
    /// The account is at one of its limits.
    #[error(transparent)]
    Limit(#[from] LimitReached),
    /// Worth retrying: the entity restarted, the server is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The entity's actor stopped before answering (an append of its
    /// failed, the server is stopping): the command was not carried out,
    /// except after a store failure (see `Control::call`).
    #[error("the entity stopped before answering; retry")]
    Stopped,
    /// Another writer (another node on a shared log) appended to the
    /// entity's stream first: nothing was recorded. `Control` retries the
    /// command on the reloaded entity a few times before answering this.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandError {
    /// A refusal of the caller's command (their business, 4xx), as opposed
    /// to a failure of ours (5xx).
    pub fn is_rejection(&self) -> bool {
        !matches!(
            self,
            CommandError::Unavailable(_) | CommandError::Stopped | CommandError::Conflict(_) | CommandError::Store(_)
        )
    }

    /// Worth carrying out again on the entity reloaded from the log.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CommandError::Stopped | CommandError::Conflict(_))
    }
}

impl From<AppendError> for CommandError {
    fn from(e: AppendError) -> CommandError {
        match e {
            AppendError::Store(e) => CommandError::Store(e),
            AppendError::Conflict { .. } => {
                CommandError::Conflict("another writer changed this entity at the same time; retry".into())
            }
        }
    }
}

/// The span of one command on one entity, inside the span of the request
/// (or of the command) it came from.
pub(crate) fn command_span(cmd: &Cmd, command: &'static str, entity: &tenure_events::StreamId) -> tracing::Span {
    let request_id = cmd.meta.request_id.map(tracing::field::display);
    tracing::info_span!(parent: &cmd.span, "command", command, %entity, request_id)
}

/// Logs how a command ended, inside its span: rejections at info, failures
/// at warn, successes at debug.
pub(crate) fn log_outcome<T>(span: &tracing::Span, result: &Result<T, CommandError>) {
    match result {
        Ok(_) => tracing::debug!(parent: span, outcome = "ok"),
        Err(e) if e.is_rejection() => tracing::info!(parent: span, outcome = "rejected", reason = %e),
        // Another node appended first; `Control::call` sends the command
        // again, and says so if it gives up.
        Err(e @ CommandError::Conflict(_)) => tracing::debug!(parent: span, outcome = "conflicted", error = %e),
        Err(e) => tracing::warn!(parent: span, outcome = "failed", error = %e),
    }
}

//! The decommission driver: the expiry timers of workload reservations.
//! When a reservation's duration runs out it sends `Expire` to its actor,
//! which records `WorkloadDeleteRequested { reason: expired }`; the node
//! sees that in its next poll.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use tenure_events::Metadata;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::workload::Execute;
use super::{Activation, Cmd, CommandError, Hub, Reply};
use crate::domain::workload::WorkloadCommand;

/// How long to wait before trying again after a failed expiry.
const RETRY_AFTER: TimeDelta = TimeDelta::seconds(1);

/// Runs until `stop` fires.
pub async fn run(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<(Uuid, Result<usize, CommandError>)>();
    // Sent and not yet answered, or failed and waiting to retry.
    let mut in_flight: HashMap<Uuid, Option<DateTime<Utc>>> = HashMap::new();
    loop {
        let now = hub.clock.now();
        let (due, next) = {
            let workloads = hub.projections.workloads.lock();
            (workloads.due(now), workloads.next_deadline_after(now))
        };
        for id in due {
            match in_flight.get(&id) {
                Some(None) => continue,
                Some(Some(retry_at)) if *retry_at > now => continue,
                _ => {}
            }
            in_flight.insert(id, None);
            let owner = hub.projections.workloads.lock().by_uuid(id).map(|w| w.owner.clone());
            let Some(owner) = owner else { continue };
            let tx = answers_tx.clone();
            let reply = Reply::new(move |result| {
                let _ = tx.send((id, result));
            });
            let cmd = Cmd {
                meta: Metadata::new(owner),
                span: tracing::info_span!("decommission", workload = %id),
            };
            let command = WorkloadCommand::Expire;
            hub.workloads
                .route(&hub, &id, Activation::Load, Execute { command, cmd, reply });
        }
        // Wake for the next deadline, or the next retry, whichever is first;
        // what was sent waits for its answer.
        let retry = in_flight.values().flatten().filter(|at| **at > now).min().copied();
        let wait = match [next, retry].into_iter().flatten().min() {
            Some(at) => hub.clock.sleep_until(at),
            None => futures::future::pending().boxed(),
        };
        tokio::select! {
            _ = wait => {}
            _ = hub.projections.workload_deadlines.notified() => {}
            Some((id, result)) = answers.recv() => {
                settle(&hub, &mut in_flight, id, result);
                while let Ok((id, result)) = answers.try_recv() {
                    settle(&hub, &mut in_flight, id, result);
                }
                // Let the projection apply what was just recorded, so the
                // same reservations are not due again.
                hub.projections.caught_up(hub.store.head()).await;
            }
            _ = stop.changed() => return,
        }
    }
}

fn settle(
    hub: &Hub,
    in_flight: &mut HashMap<Uuid, Option<DateTime<Utc>>>,
    id: Uuid,
    result: Result<usize, CommandError>,
) {
    match result {
        Ok(_) => {
            in_flight.remove(&id);
        }
        Err(e) => {
            tracing::warn!(workload = %id, error = %e, "decommission failed; retrying");
            in_flight.insert(id, Some(hub.clock.now() + RETRY_AFTER));
        }
    }
}

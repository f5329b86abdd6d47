//! The expiry driver: sends `Expire` to every lease whose deadline has passed,
//! as soon as it passes. There is no rate limit (etcd revokes at most 1,000
//! leases a second): everything due is dispatched at once, bounded only by
//! [`EXPIRIES_IN_FLIGHT_MAX`] outstanding answers.
//!
//! The queue is a hint, the lease actor decides: if the lease was kept alive
//! meanwhile it answers "not due" with its real deadline and the lease goes
//! back in the queue. All answers come back on one channel.

use std::sync::Arc;

use chrono::TimeDelta;
use futures::FutureExt;
use tenure_projections::LeaseKey;
use tokio::sync::{mpsc, watch};

use super::keyspace::Deleted;
use super::lease::Expire;
use super::{Activation, CommandError, Hub, Reply};
use crate::domain::lease::LeaseRejection;

/// Expiries awaiting an answer at once. Large enough that a mass expiry is
/// never throttled by it in practice; it exists so memory stays bounded.
pub const EXPIRIES_IN_FLIGHT_MAX: usize = 262_144;

/// How long to wait before trying again to expire a lease whose expiry failed.
const RETRY_AFTER: TimeDelta = TimeDelta::seconds(1);

type Answer = (LeaseKey, Result<Deleted, CommandError>);

/// Runs until `stop` fires.
pub async fn run(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<Answer>();
    let mut in_flight = 0usize;
    loop {
        let now = hub.clock.now();
        let (due, next) = {
            let mut queue = hub.projections.expiry.lock();
            let due = queue.due(now, EXPIRIES_IN_FLIGHT_MAX - in_flight);
            (due, queue.next_deadline())
        };
        for (key, _) in due {
            in_flight += 1;
            let tx = answers_tx.clone();
            let answered = key.clone();
            let reply = Reply::new(move |result| {
                let _ = tx.send((answered, result));
            });
            hub.leases.route(&hub, &key, Activation::Load, Expire { reply });
        }
        let wait_for_deadline = match next {
            Some(deadline) if in_flight < EXPIRIES_IN_FLIGHT_MAX => hub.clock.sleep_until(deadline),
            _ => futures::future::pending().boxed(),
        };
        tokio::select! {
            _ = wait_for_deadline => {}
            _ = hub.projections.lease_events.notified() => {}
            Some(answer) = answers.recv() => {
                in_flight -= 1;
                settle(&hub, answer);
                while let Ok(answer) = answers.try_recv() {
                    in_flight -= 1;
                    settle(&hub, answer);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

fn settle(hub: &Hub, (key, result): Answer) {
    match result {
        Ok(_) => {}
        Err(CommandError::Lease(LeaseRejection::NotDue { deadline })) => {
            hub.projections.expiry.lock().reschedule(&key, deadline);
        }
        // Ended some other way; the log will say so and the queue drops it.
        Err(CommandError::Lease(LeaseRejection::NotFound(_))) => {}
        Err(e) => {
            tracing::warn!(lease = %key.lease, account = %key.account, error = %e, "expiry failed; retrying");
            hub.projections
                .expiry
                .lock()
                .reschedule(&key, hub.clock.now() + RETRY_AFTER);
        }
    }
}

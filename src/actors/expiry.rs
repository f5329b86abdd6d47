//! The expiry driver: sends `Expire` to every lease whose deadline has passed,
//! as soon as it passes. There is no rate limit (etcd revokes at most 1,000
//! leases a second): everything due is dispatched at once, bounded only by
//! [`EXPIRIES_IN_FLIGHT_MAX`] outstanding answers.
//!
//! The queue is a hint, the lease actor decides: if the lease was kept alive
//! meanwhile it answers "not due" with its real deadline and the lease goes
//! back in the queue.

use std::sync::Arc;

use chrono::TimeDelta;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{oneshot, watch};

use super::lease::Expire;
use super::{Activation, CommandError, Hub};
use crate::domain::lease::LeaseRejection;

/// Expiries awaiting an answer at once. Large enough that a mass expiry is
/// never throttled by it in practice; it exists so memory stays bounded.
pub const EXPIRIES_IN_FLIGHT_MAX: usize = 262_144;

/// How long to wait before trying again to expire a lease whose expiry failed.
const RETRY_AFTER: TimeDelta = TimeDelta::seconds(1);

/// Runs until `stop` fires.
pub async fn run(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        let now = hub.clock.now();
        let room = EXPIRIES_IN_FLIGHT_MAX - in_flight.len();
        let (due, next) = {
            let mut queue = hub.projections.expiry.lock();
            let due = queue.due(now, room);
            (due, queue.next_deadline())
        };
        for (key, _) in due {
            let (reply, answer) = oneshot::channel();
            hub.leases.route(&hub, &key, Activation::Load, Expire { reply });
            in_flight.push(answer.map(move |a| (key, a)));
        }
        let wait_for_deadline = match next {
            Some(deadline) if in_flight.len() < EXPIRIES_IN_FLIGHT_MAX => hub.clock.sleep_until(deadline),
            _ => futures::future::pending().boxed(),
        };
        tokio::select! {
            _ = wait_for_deadline => {}
            _ = hub.projections.lease_events.notified() => {}
            Some((key, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                settle(&hub, key, answer);
                while let Some(Some((key, answer))) = in_flight.next().now_or_never() {
                    settle(&hub, key, answer);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

fn settle(
    hub: &Hub,
    key: tenure_projections::LeaseKey,
    answer: Result<Result<super::keyspace::Deleted, CommandError>, oneshot::error::RecvError>,
) {
    match answer {
        Ok(Ok(_)) => {}
        Ok(Err(CommandError::Lease(LeaseRejection::NotDue { deadline }))) => {
            hub.projections.expiry.lock().reschedule(&key, deadline);
        }
        // Ended some other way; the log will say so and the queue drops it.
        Ok(Err(CommandError::Lease(LeaseRejection::NotFound(_)))) => {}
        Ok(Err(e)) => {
            tracing::warn!(lease = %key.lease, account = %key.account, error = %e, "expiry failed; retrying");
            hub.projections
                .expiry
                .lock()
                .reschedule(&key, hub.clock.now() + RETRY_AFTER);
        }
        Err(_) => {
            tracing::warn!(lease = %key.lease, account = %key.account, "lease actor stopped before expiring; retrying");
            hub.projections
                .expiry
                .lock()
                .reschedule(&key, hub.clock.now() + RETRY_AFTER);
        }
    }
}

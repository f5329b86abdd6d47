//! The expiry driver: sends `Expire` to every lease whose deadline has passed,
//! as soon as it passes. There is no rate limit (etcd revokes at most 1,000
//! leases a second): everything due is dispatched at once, bounded only by
//! [`EXPIRIES_IN_FLIGHT_MAX`] outstanding answers.
//!
//! Keep-alives move deadlines in the expiry queue itself, under its lock, so
//! the queue knows every deadline. [`ExpiryQueue::due`] hands out a lease
//! only once its deadline has passed and marks it *ending* in the same step:
//! a keep-alive can then no longer renew it (it answers "not found", as
//! etcd does for an expired lease), and a keep-alive answered before cannot
//! be undone by the expiry. The lease actor still decides: it ends the
//! lease only if the grant the driver names is its current one and the
//! deadline has passed by its own clock; if not it answers "not found" (the
//! log will drop the entry) or "not due" (the lease goes back in the
//! queue). A failed expiry is tried again after [`RETRY_AFTER`], the lease
//! staying *ending* meanwhile. All answers come back on one channel.
//!
//! A lease whose actor is active gets `Expire` in its mailbox. One whose
//! actor is not (most of a mass expiry: actors passivate after a minute
//! idle) is ended without activating one, from what the queue knows of
//! the grant (`lease::expire_idle`): a mass expiry reads no lease stream
//! and starts no actor. If the stream holds more than the grant, the
//! append conflicts and the expiry is tried again at once by an actor that
//! reads its stream (see `lease::Expire`).
//!
//! [`ExpiryQueue::due`]: tenure_projections::ExpiryQueue::due

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use tenure_projections::Due;
use tokio::sync::{mpsc, watch};

use super::keyspace::Deleted;
use super::lease::{self, Expire, Expired};
use super::{Activation, CommandError, Hub, Reply};
use crate::domain::lease::LeaseRejection;

/// Expiries awaiting an answer at once: it bounds memory, and keeps a mass
/// expiry flowing. Each in flight is held until its keys are deleted; with
/// 262,144 of them (when each was a lease actor) a million expiries went in
/// waves (every actor started, then every append, then every deletion)
/// through a heap of a quarter million actors, and took longer (measured: 200,000 leases
/// 6.4 s -> 5.9 s after the last deadline with 16,384; see
/// `ops/bench/RESULTS.md`). Still enough to fill the store's largest
/// batches.
pub const EXPIRIES_IN_FLIGHT_MAX: usize = 16_384;

/// How long to wait before trying again to expire a lease whose expiry failed.
const RETRY_AFTER: TimeDelta = TimeDelta::seconds(1);

/// How an expiry is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    /// First: by the lease's actor if it is active, else from what the
    /// queue knows of the grant, without an actor.
    FromQueue,
    /// Again: by the lease's actor, activated from its stream if need be.
    FromStream,
}

/// An expiry's answer, with how it was tried.
type Answer = (Due, Attempt, Result<Deleted, CommandError>);

/// Expiries that failed, by when to try them again.
type Retries = BinaryHeap<Reverse<(DateTime<Utc>, Due)>>;

/// Takes up to `max` of the retries whose time has come.
fn take_retries(retries: &mut Retries, now: DateTime<Utc>, max: usize) -> Vec<Due> {
    let mut out = Vec::new();
    while out.len() < max && retries.peek().is_some_and(|Reverse((at, _))| *at <= now) {
        if let Some(Reverse((_, due))) = retries.pop() {
            out.push(due);
        }
    }
    out
}

/// Hands `due` to its lease actor. A first attempt ([`Attempt::FromQueue`])
/// ends a lease whose actor is not active without one, from what the queue
/// knows of the lease, so a mass expiry reads no lease stream and starts no
/// actor; its keys are deleted once `expired` hands it back. A retry has an
/// actor read its stream.
fn send(
    hub: &Arc<Hub>,
    answers: &mpsc::UnboundedSender<Answer>,
    expired: &mpsc::UnboundedSender<Expired>,
    due: Due,
    attempt: Attempt,
) {
    let tx = answers.clone();
    let key = due.key.clone();
    let expire = Expire {
        granted: due.granted,
        deadline: due.deadline,
        ttl_s: due.ttl_s,
        refreshed: due.refreshed,
        reply: Reply::new(move |result| {
            let _ = tx.send((due, attempt, result));
        }),
    };
    if attempt == Attempt::FromStream {
        return hub.leases.route(hub, &key, Activation::Load, expire);
    }
    if let Err(expire) = hub.leases.route_if_active(&key, expire) {
        let expired = expired.clone();
        lease::expire_idle(hub, key, expire, move |lease| {
            let _ = expired.send(lease);
        });
    }
}

/// Runs until `stop` fires.
pub async fn run(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<Answer>();
    let (expired_tx, mut expired) = mpsc::unbounded_channel::<Expired>();
    let mut in_flight = 0usize;
    let mut retries = Retries::new();
    loop {
        let now = hub.clock.now();
        let (retried, due, next) = {
            let mut queue = hub.projections.expiry.lock();
            // Retried only while the expiry is still under way: the lease may
            // have ended some other way since.
            let retried: Vec<Due> = take_retries(&mut retries, now, EXPIRIES_IN_FLIGHT_MAX - in_flight)
                .into_iter()
                .filter(|d| queue.is_ending(&d.key, d.granted))
                .collect();
            let due = queue.due(now, EXPIRIES_IN_FLIGHT_MAX - in_flight - retried.len());
            (retried, due, queue.next_deadline())
        };
        in_flight += retried.len() + due.len();
        for due in retried {
            send(&hub, &answers_tx, &expired_tx, due, Attempt::FromStream);
        }
        for due in due {
            send(&hub, &answers_tx, &expired_tx, due, Attempt::FromQueue);
        }
        let next = match (next, retries.peek().map(|Reverse((at, _))| *at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait_for_deadline = match next {
            Some(deadline) if in_flight < EXPIRIES_IN_FLIGHT_MAX => hub.clock.sleep_until(deadline),
            _ => futures::future::pending().boxed(),
        };
        tokio::select! {
            _ = wait_for_deadline => {}
            _ = hub.projections.lease_events.notified() => {}
            Some(lease) = expired.recv() => {
                lease.delete_keys(&hub);
                while let Ok(lease) = expired.try_recv() {
                    lease.delete_keys(&hub);
                }
            }
            Some(answer) = answers.recv() => {
                in_flight -= 1;
                settle(&hub, &mut retries, answer);
                while let Ok(answer) = answers.try_recv() {
                    in_flight -= 1;
                    settle(&hub, &mut retries, answer);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

fn settle(hub: &Hub, retries: &mut Retries, (due, attempt, result): Answer) {
    match result {
        Ok(_) => {}
        // The clock went back between the driver and the actor.
        Err(CommandError::Lease(LeaseRejection::NotDue { deadline })) => {
            hub.projections
                .expiry
                .lock()
                .reschedule(&due.key, due.granted, deadline);
        }
        // Ended some other way; the log will say so and the queue drops it.
        Err(CommandError::Lease(LeaseRejection::NotFound(_))) => {}
        // The append conflicted: the stream held more than the queue knew
        // (an end not yet applied, an old log's keep-alive). At once, this
        // time reading the stream.
        Err(CommandError::Conflict(_)) if attempt == Attempt::FromQueue => {
            retries.push(Reverse((hub.clock.now(), due)));
        }
        Err(e) => {
            tracing::warn!(lease = %due.key.lease, account = %due.key.account, error = %e, "expiry failed; retrying");
            retries.push(Reverse((hub.clock.now() + RETRY_AFTER, due)));
        }
    }
}

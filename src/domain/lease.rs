//! A lease, with etcd 3.4's semantics: a TTL raised to a minimum, reset by
//! keep-alives, ended by revoke or by expiry. A lease past its deadline is
//! dead to every command but `Expire` and `Revoke` even before the expiry is
//! recorded, so nobody can keep alive or attach keys to a lease whose time ran out.
//!
//! **Keep-alives are not commands of this aggregate.** They record no event:
//! they move the lease's deadline in the expiry queue (`ExpiryQueue::renew`),
//! which the server reads for every decision that depends on the deadline.
//! What this state knows is the deadline the log implies (the grant, or a
//! `LeaseKeptAlive` of an old log, counted from no earlier than the process
//! start), a lower bound of the real one; [`LeaseCommand::Expire`] carries
//! the queue's deadline.

use chrono::{DateTime, TimeDelta, Utc};
use tenure_events::{LeaseEvent, LeaseExpired, LeaseGranted, LeaseId, LeaseRevoked};

use super::Aggregate;

/// The largest TTL a lease may have (etcd's `MaxLeaseTTL`, about 285 years).
pub const MAX_TTL_S: i64 = 9_000_000_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Lease {
    #[default]
    Absent,
    Live {
        id: LeaseId,
        ttl_s: i64,
        /// When the TTL last started counting down as far as the log tells
        /// (grant, a keep-alive event of an old log, or the start of this
        /// server process; see [`Lease::resume`]).
        refreshed_at: DateTime<Utc>,
    },
    Ended {
        id: LeaseId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseCommand {
    /// Grant `lease` with `ttl_s`, raised to `min_ttl_s` if below it.
    Grant {
        lease: LeaseId,
        ttl_s: i64,
        min_ttl_s: i64,
    },
    Revoke {
        lease: LeaseId,
    },
    /// End the lease if its deadline has passed: the later of the one the
    /// log implies and `deadline`, the expiry queue's (keep-alives included).
    Expire {
        lease: LeaseId,
        deadline: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseRejection {
    #[error("lease {0} not found")]
    NotFound(LeaseId),
    #[error("lease {0} already exists")]
    AlreadyExists(LeaseId),
    #[error("TTL {ttl_s}s is too large; the maximum is {max_s}s")]
    TtlTooLarge { ttl_s: i64, max_s: i64 },
    /// The expiry timers were early: the lease was kept alive since.
    #[error("lease is not due until {deadline}")]
    NotDue { deadline: DateTime<Utc> },
}

fn add_seconds(t: DateTime<Utc>, s: i64) -> DateTime<Utc> {
    t.checked_add_signed(TimeDelta::try_seconds(s).unwrap_or(TimeDelta::MAX))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Lease {
    /// When the lease dies unless kept alive, as far as the log tells.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        match self {
            Lease::Live {
                ttl_s, refreshed_at, ..
            } => Some(add_seconds(*refreshed_at, *ttl_s)),
            _ => None,
        }
    }

    /// Granted, not ended, and its deadline not yet passed.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.deadline().is_some_and(|d| now < d)
    }

    /// Called when the lease is loaded by a server process that started at
    /// `floor`: its TTL counts from no earlier than that, so a lease never
    /// expires because the control plane was down (etcd refreshes every lease
    /// when a new leader takes over).
    pub fn resume(&mut self, floor: DateTime<Utc>) {
        if let Lease::Live { refreshed_at, .. } = self {
            *refreshed_at = (*refreshed_at).max(floor);
        }
    }
}

impl Aggregate for Lease {
    type Command = LeaseCommand;
    type Event = LeaseEvent;
    type Rejection = LeaseRejection;

    fn decide(&self, command: LeaseCommand, now: DateTime<Utc>) -> Result<Vec<LeaseEvent>, LeaseRejection> {
        match command {
            LeaseCommand::Grant {
                lease,
                ttl_s,
                min_ttl_s,
            } => {
                if matches!(self, Lease::Live { .. }) {
                    return Err(LeaseRejection::AlreadyExists(lease));
                }
                if ttl_s > MAX_TTL_S {
                    return Err(LeaseRejection::TtlTooLarge {
                        ttl_s,
                        max_s: MAX_TTL_S,
                    });
                }
                Ok(vec![LeaseGranted {
                    lease,
                    ttl_s: ttl_s.max(min_ttl_s),
                    requested_ttl_s: ttl_s,
                }
                .into()])
            }
            LeaseCommand::Revoke { lease } => match self {
                Lease::Live { .. } => Ok(vec![LeaseRevoked { lease }.into()]),
                _ => Err(LeaseRejection::NotFound(lease)),
            },
            LeaseCommand::Expire {
                lease,
                deadline: renewed,
            } => match self.deadline() {
                Some(logged) => {
                    let deadline = logged.max(renewed);
                    if now >= deadline {
                        Ok(vec![LeaseExpired { lease, deadline }.into()])
                    } else {
                        Err(LeaseRejection::NotDue { deadline })
                    }
                }
                None => Err(LeaseRejection::NotFound(lease)),
            },
        }
    }

    fn evolve(&mut self, event: &LeaseEvent, at: DateTime<Utc>) {
        match event {
            LeaseEvent::Granted(g) => {
                *self = Lease::Live {
                    id: g.lease,
                    ttl_s: g.ttl_s,
                    refreshed_at: at,
                };
            }
            // Written by servers before keep-alives left the log.
            LeaseEvent::KeptAlive(_) => {
                if let Lease::Live { refreshed_at, .. } = self {
                    *refreshed_at = (*refreshed_at).max(at);
                }
            }
            LeaseEvent::Revoked(e) => *self = Lease::Ended { id: e.lease },
            LeaseEvent::Expired(e) => *self = Lease::Ended { id: e.lease },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{given, t};
    use tenure_events::LeaseKeptAlive;

    fn id() -> LeaseId {
        LeaseId::new(0x525b80fbbf3b906e).expect("positive")
    }

    fn granted(ttl_s: i64) -> LeaseEvent {
        LeaseGranted {
            lease: id(),
            ttl_s,
            requested_ttl_s: ttl_s,
        }
        .into()
    }

    fn grant(ttl_s: i64) -> LeaseCommand {
        LeaseCommand::Grant {
            lease: id(),
            ttl_s,
            min_ttl_s: 2,
        }
    }

    #[test]
    fn grant_a_new_lease() {
        given::<Lease>([]).when(grant(100)).then([granted(100)]);
    }

    #[test]
    fn a_ttl_below_the_minimum_is_raised_to_it() {
        given::<Lease>([]).when(grant(1)).then([LeaseGranted {
            lease: id(),
            ttl_s: 2,
            requested_ttl_s: 1,
        }
        .into()]);
        given::<Lease>([]).when(grant(-5)).then([LeaseGranted {
            lease: id(),
            ttl_s: 2,
            requested_ttl_s: -5,
        }
        .into()]);
    }

    #[test]
    fn a_ttl_above_the_maximum_is_refused() {
        given::<Lease>([])
            .when(grant(MAX_TTL_S + 1))
            .then_rejects(LeaseRejection::TtlTooLarge {
                ttl_s: MAX_TTL_S + 1,
                max_s: MAX_TTL_S,
            });
    }

    #[test]
    fn granting_a_live_id_again_is_a_conflict_even_past_its_deadline() {
        given::<Lease>([granted(10)])
            .when(grant(10))
            .then_rejects(LeaseRejection::AlreadyExists(id()));
        given::<Lease>([granted(10)])
            .at(t(30))
            .when(grant(10))
            .then_rejects(LeaseRejection::AlreadyExists(id()));
    }

    #[test]
    fn an_ended_lease_id_can_be_granted_again() {
        given::<Lease>([granted(10), LeaseRevoked { lease: id() }.into()])
            .when(grant(20))
            .then([granted(20)]);
    }

    #[test]
    fn a_keep_alive_event_of_an_old_log_still_moves_the_deadline() {
        given::<Lease>([granted(10)])
            .event_at(t(8), LeaseKeptAlive { lease: id() }.into())
            .at(t(17))
            .when(expire_by(t(0)))
            .then_rejects(LeaseRejection::NotDue { deadline: t(18) });
    }

    #[test]
    fn revoke_a_live_lease_and_then_it_is_gone() {
        given::<Lease>([granted(10)])
            .when(LeaseCommand::Revoke { lease: id() })
            .then([LeaseRevoked { lease: id() }.into()]);
        given::<Lease>([granted(10), LeaseRevoked { lease: id() }.into()])
            .when(LeaseCommand::Revoke { lease: id() })
            .then_rejects(LeaseRejection::NotFound(id()));
    }

    fn expire_by(deadline: DateTime<Utc>) -> LeaseCommand {
        LeaseCommand::Expire { lease: id(), deadline }
    }

    #[test]
    fn expire_only_when_due() {
        given::<Lease>([granted(10)])
            .at(t(9))
            .when(expire_by(t(10)))
            .then_rejects(LeaseRejection::NotDue { deadline: t(10) });
        given::<Lease>([granted(10)])
            .at(t(10))
            .when(expire_by(t(10)))
            .then([LeaseExpired {
                lease: id(),
                deadline: t(10),
            }
            .into()]);
        given::<Lease>([
            granted(10),
            LeaseExpired {
                lease: id(),
                deadline: t(10),
            }
            .into(),
        ])
        .at(t(11))
        .when(expire_by(t(10)))
        .then_rejects(LeaseRejection::NotFound(id()));
    }

    #[test]
    fn expire_goes_by_the_later_of_the_logged_and_the_renewed_deadline() {
        // Kept alive (in the expiry queue) until t=25.
        given::<Lease>([granted(10)])
            .at(t(20))
            .when(expire_by(t(25)))
            .then_rejects(LeaseRejection::NotDue { deadline: t(25) });
        given::<Lease>([granted(10)])
            .at(t(25))
            .when(expire_by(t(25)))
            .then([LeaseExpired {
                lease: id(),
                deadline: t(25),
            }
            .into()]);
        // An earlier deadline than the log's never expires a lease early.
        given::<Lease>([granted(10)])
            .at(t(5))
            .when(expire_by(t(2)))
            .then_rejects(LeaseRejection::NotDue { deadline: t(10) });
    }

    #[test]
    fn live_until_the_logged_deadline() {
        let mut lease = Lease::default();
        lease.evolve(&granted(300), t(0));
        assert!(lease.is_live(t(299)));
        assert!(!lease.is_live(t(300)));
        lease.evolve(&LeaseRevoked { lease: id() }.into(), t(1));
        assert!(!lease.is_live(t(2)));
    }

    #[test]
    fn resuming_after_a_restart_gives_the_full_ttl_again() {
        let mut lease = Lease::default();
        lease.evolve(&granted(100), t(0));
        lease.resume(t(60));
        assert_eq!(lease.deadline(), Some(t(160)));
        // A floor before the last refresh changes nothing.
        lease.resume(t(10));
        assert_eq!(lease.deadline(), Some(t(160)));
    }
}

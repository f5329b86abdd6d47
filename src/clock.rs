//! Time, injected. Domain code never reads the OS clock: actors and the expiry
//! driver ask a [`Clock`], and tests pass a [`ManualClock`] they advance by
//! hand, so expiry runs deterministically without sleeping.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use futures::future::BoxFuture;
use tokio::sync::watch;

/// A source of the current time that can also wait for a moment to come.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once `now() >= deadline`.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Arc::new(watch::Sender::new(start.trunc_subsecs(6))),
        }
    }

    /// A clock starting at a fixed, round moment (2026-01-01T00:00:00Z).
    pub fn at_epoch() -> ManualClock {
        ManualClock::new(DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default())
    }

    pub fn advance(&self, by: std::time::Duration) {
        let by = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        self.now
            .send_modify(|t| *t = t.checked_add_signed(by).unwrap_or(DateTime::<Utc>::MAX_UTC));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; if every
            // clone is gone, time can never reach the deadline.
            if rx.wait_for(|now| *now >= deadline).await.is_err() {
                futures::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn manual_sleep_resolves_only_when_time_is_advanced_past_the_deadline() {
        let clock = ManualClock::at_epoch();
        let deadline = clock.now() + TimeDelta::seconds(10);
        let mut sleep = clock.sleep_until(deadline);
        clock.advance(Duration::from_secs(9));
        assert!(futures::poll!(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(1));
        sleep.await;
        assert_eq!(clock.now(), deadline);
    }
}

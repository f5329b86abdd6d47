//! Which node of a shared log runs the timers (the expiry and decommission
//! drivers): the one holding a session advisory lock of the schema.
//!
//! A thread of its own keeps one connection. Not leading, it tries the lock
//! (`pg_try_advisory_lock`, which never waits) every [`Election::EVERY`];
//! on success it records its URL in `timers_leader`, where the other nodes
//! read where to send keep-alives. Leading, it checks the connection as
//! often. PostgreSQL releases a session lock when the session ends: a node
//! that dies (its socket closed by the kernel) or loses its connection
//! frees the lock at once, and another node takes it at its next try. A
//! node that loses its connection stops leading as soon as it notices (at
//! its next check); the two may overlap by that long, which the lease
//! actors' expected versions make harmless (see ARCHITECTURE.md, "Several
//! nodes").

use std::time::Duration;

use postgres::Client;
use tokio::sync::watch;

use super::{PostgresTarget, StoreError};

/// What this node knows of the timers' leader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// This node holds the lock: it runs the timers.
    pub leading: bool,
    /// Where the leader (this node or another) takes requests, as it
    /// recorded it; `None` when not known.
    pub leader_url: Option<String>,
}

/// A running candidacy; dropping it (or [`Election::stop`]) ends the
/// session, which releases the lock.
pub struct Election {
    role: watch::Receiver<Role>,
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Election {
    /// How often a node tries the lock, or checks that it still holds it.
    pub const EVERY: Duration = Duration::from_millis(500);

    /// Stands for the timers of `target`'s schema, advertising `url`;
    /// tells `tx` what it learns.
    pub fn start(target: PostgresTarget, url: String, tx: watch::Sender<Role>) -> Result<Election, StoreError> {
        let role = tx.subscribe();
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("tenure-pg-elect".into())
            .spawn(move || Candidate::new(target, url).run(&tx, &stopped))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Election {
            role,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Follows this node's role as it changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Ends the candidacy: the session closes and the lock, if held, is
    /// released.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Candidate {
    target: PostgresTarget,
    url: String,
    key: i64,
    conn: Option<Client>,
    leading: bool,
}

impl Candidate {
    fn new(target: PostgresTarget, url: String) -> Candidate {
        Candidate {
            key: target.timers_key(),
            target,
            url,
            conn: None,
            leading: false,
        }
    }

    fn run(mut self, role: &watch::Sender<Role>, stopped: &crossbeam_channel::Receiver<()>) {
        loop {
            let now = match self.step() {
                Ok(now) => now,
                Err(e) => {
                    if self.leading {
                        tracing::warn!(error = %e, "lost the timers' lock: this node stops running the timers");
                    } else {
                        tracing::debug!(error = %e, "cannot reach PostgreSQL for the timers' election");
                    }
                    self.conn = None;
                    self.leading = false;
                    Role::default()
                }
            };
            role.send_if_modified(|current| {
                let changed = *current != now;
                *current = now;
                changed
            });
            match stopped.recv_timeout(Election::EVERY) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return, // the connection closes with `self`
            }
        }
    }

    fn step(&mut self) -> Result<Role, StoreError> {
        if self.conn.as_ref().is_none_or(Client::is_closed) {
            self.conn = Some(self.target.connect_watchful(Election::EVERY * 4)?);
            self.leading = false;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Io("no connection".into()));
        };
        let io = |e: postgres::Error| StoreError::Io(e.to_string());
        if self.leading {
            conn.simple_query("SELECT 1").map_err(io)?;
            return Ok(Role {
                leading: true,
                leader_url: Some(self.url.clone()),
            });
        }
        let won: bool = conn
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
            .and_then(|row| row.try_get(0))
            .map_err(io)?;
        if won {
            conn.execute(
                "INSERT INTO timers_leader (id, url, since) VALUES (1, $1, now())
                 ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, since = EXCLUDED.since",
                &[&self.url],
            )
            .map_err(io)?;
            self.leading = true;
            tracing::info!(url = %self.url, "this node runs the timers");
            return Ok(Role {
                leading: true,
                leader_url: Some(self.url.clone()),
            });
        }
        let url: Option<String> = conn
            .query_opt("SELECT url FROM timers_leader WHERE id = 1", &[])
            .map_err(io)?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(io)?;
        Ok(Role {
            leading: false,
            leader_url: url,
        })
    }
}

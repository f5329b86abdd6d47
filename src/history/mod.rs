//! The log as a tool for people: what `/v1/events`, `/v1/audit`, `tenure
//! events`, `tenure audit`, `tenure replay` and `tenure verify` are made of.
//!
//! - [`filter`]: which events a query asks for, and the JSON form of an event.
//! - [`summary`]: one line saying what an event did.
//! - [`replay`]: the state as of a moment, folded from the log alone.
//! - [`verify`]: the integrity checks of a log.
//!
//! This module reads logs ([`read_log`]) but never writes one, and needs no
//! server: the offline commands open a data directory read-only.

pub mod filter;
pub mod replay;
mod snapshot_check;
pub mod summary;
pub mod verify;

use std::collections::BTreeMap;

use tenure_events::{ChainHead, RecordedEvent};
use tenure_projections::ProjectionSet;

use crate::store::{LogFile, StoreError};

/// A query of the log refused: the caller's business (4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryRejection {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// Events read at once by the offline tools.
pub const PAGE_EVENTS: usize = 8192;

/// Pages read ahead of the fold: bounds the reader's memory.
const PAGES_AHEAD: usize = 4;

/// Reads a log from position 1 on, a page at a time, on a thread of its own
/// (so reading and folding use a core each), handing the pages to `each`
/// in order. Stops at the end of the log, at the first error, or when
/// `each` answers `false`.
pub fn read_log(log: impl Into<LogFile>, mut each: impl FnMut(&[RecordedEvent]) -> bool) -> Result<(), StoreError> {
    let log: LogFile = log.into();
    let (pages, received) = std::sync::mpsc::sync_channel::<Result<Vec<RecordedEvent>, StoreError>>(PAGES_AHEAD);
    // Pages go back to the reader to be freed there: memory is then freed
    // by the thread that allocated it, which glibc's allocator does far
    // faster than a free from another thread (measured: a third of the
    // reader's time went to malloc before).
    let (done, used) = std::sync::mpsc::channel::<Vec<RecordedEvent>>();
    let reader = std::thread::Builder::new()
        .name("tenure-log-reader".into())
        .spawn(move || {
            let mut log: LogFile = log;
            let mut next = 1;
            loop {
                while let Ok(page) = used.try_recv() {
                    drop(page);
                }
                let page = log.read_page(next, PAGE_EVENTS);
                let last = page.as_ref().ok().and_then(|p| p.last().map(|e| e.position));
                let end = !matches!(page, Ok(ref p) if !p.is_empty());
                if pages.send(page).is_err() || end {
                    return;
                }
                next = last.map_or(next, |p| p + 1);
            }
        })
        .map_err(|e| StoreError::Io(format!("cannot start the log reader: {e}")))?;
    let mut outcome = Ok(());
    for page in received.iter() {
        match page {
            Ok(events) if events.is_empty() => break,
            Ok(events) => {
                let go_on = each(&events);
                let _ = done.send(events);
                if !go_on {
                    break;
                }
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    // Dropping the receiver ends the reader at its next page.
    drop(received);
    let _ = reader.join();
    outcome
}

/// Folds a log into a [`replay::Replay`] up to `until`; `progress` hears the
/// position reached after each page.
pub fn replay_log(
    log: impl Into<LogFile>,
    until: replay::Until,
    domain: &str,
    mut progress: impl FnMut(u64),
) -> Result<replay::Replay, StoreError> {
    let mut state = replay::Replay::new(domain);
    read_log(log, |events| {
        for event in events {
            if !until.includes(event) {
                return false;
            }
            state.apply(event);
        }
        progress(state.position);
        true
    })?;
    Ok(state)
}

/// The digests of a running server's projections, and the position they
/// were taken at (`GET /v1/projections`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ProjectionDigests)]
pub struct ServerDigests {
    pub position: u64,
    /// The frontend domain the server routes shares under.
    pub domain: String,
    /// Each projection's SHA-256 (hexadecimal), by name.
    pub digests: BTreeMap<String, String>,
}

/// What `tenure verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub verified: verify::Verified,
    /// The projections compared with a server's, by name, if asked.
    pub projections: Vec<String>,
    /// The stored snapshots found equal to the log's fold at their
    /// position: (name, position).
    pub snapshots: Vec<(String, u64)>,
    /// Stored snapshots of another format version, not compared: (name,
    /// position, version). A server ignores them.
    pub other_formats: Vec<(String, u64, u32)>,
}

/// A snapshot stored in the data directory, as `tenure verify` reads it:
/// its header and its bytes (or why they do not read back whole).
pub struct StoredSnapshot {
    pub header: crate::snapshot::store::Header,
    pub bytes: Result<Vec<u8>, String>,
}

/// Why `tenure verify` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The log holds something wrong.
    #[error("{0}")]
    Log(#[from] verify::Problem),
    /// A projection the server holds differs from the one the log folds into.
    #[error("projection {name} differs from the server's at position {position}: the server holds {server}, the log folds into {log}")]
    Projection {
        name: String,
        position: u64,
        server: String,
        log: String,
    },
    /// The server's projections are ahead of the log read.
    #[error("the server's projections are at position {server} but the log read ends at {log}")]
    Behind { server: u64, log: u64 },
    /// A stored snapshot is not what the log folds into at its position
    /// (or does not read back whole): a server would refuse it, but it
    /// says something wrote wrong data.
    #[error("snapshot {name} at position {position}: {what}")]
    Snapshot { name: String, position: u64, what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a log end to end (see [`verify`]); with a server's digests, also
/// that the projections folded from the log up to their position equal them.
pub fn verify_log(
    log: impl Into<LogFile>,
    expect_head: Option<ChainHead>,
    server: Option<&ServerDigests>,
    progress: impl FnMut(u64),
) -> Result<Report, VerifyError> {
    verify_log_and_snapshots(log, expect_head, server, Vec::new(), progress)
}

/// [`verify_log`], and each stored snapshot compared with the log's own
/// fold at its position (the log alone is folded: snapshots are what is
/// checked, never a starting point).
pub fn verify_log_and_snapshots(
    log: impl Into<LogFile>,
    expect_head: Option<ChainHead>,
    server: Option<&ServerDigests>,
    snapshots: Vec<StoredSnapshot>,
    mut progress: impl FnMut(u64),
) -> Result<Report, VerifyError> {
    let log: LogFile = log.into();
    let mut verifier = verify::Verifier::new(log.is_chained(), expect_head);
    let mut folded = server.map(|s| ProjectionSet::new(chrono::DateTime::<chrono::Utc>::MIN_UTC, &s.domain));
    let fold_until = server.map_or(0, |s| s.position);
    let mut checks = snapshot_check::Checks::new(snapshots)?;
    let mut problem = None;
    let mut wrong = None;
    read_log(log, |events| {
        for event in events {
            if let Err(p) = verifier.check(event) {
                problem = Some(p);
                return false;
            }
            if let Some(set) = folded.as_mut().filter(|_| event.position <= fold_until) {
                set.apply(event);
            }
            if let Err(e) = checks.apply(event) {
                wrong = Some(e);
                return false;
            }
        }
        progress(verifier.position());
        true
    })?;
    if let Some(p) = problem {
        return Err(p.into());
    }
    if let Some(e) = wrong {
        return Err(e);
    }
    let verified = verifier.finish()?;
    let (snapshots, other_formats) = checks.finish()?;
    let mut compared = Vec::new();
    if let (Some(server), Some(set)) = (server, folded) {
        if verified.head.position < server.position {
            return Err(VerifyError::Behind {
                server: server.position,
                log: verified.head.position,
            });
        }
        let ours = set.digests();
        for (name, theirs) in &server.digests {
            let log = ours.get(name.as_str()).cloned().unwrap_or_else(|| "nothing".into());
            if &log != theirs {
                return Err(VerifyError::Projection {
                    name: name.clone(),
                    position: server.position,
                    server: theirs.clone(),
                    log,
                });
            }
            compared.push(name.clone());
        }
    }
    Ok(Report {
        verified,
        projections: compared,
        snapshots,
        other_formats,
    })
}

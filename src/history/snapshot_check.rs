//! `tenure verify`'s check of the stored snapshots: the log is folded from
//! its first event (projections and key spaces, as `replay` does), and at
//! each stored snapshot's position the fold is encoded as a snapshot would
//! be and compared with the stored bytes, byte for byte; a difference is
//! named by the first projection (or the key space) that differs.

use std::collections::{BTreeMap, HashMap};

use tenure_events::{AccountId, RecordedEvent};
use tenure_projections::snapshot::SetSnapshot;

use super::replay::Replay;
use super::{StoredSnapshot, VerifyError};
use crate::domain::keyspace::KeyspaceSnapshot;
use crate::snapshot::{self, store::Header, FORMAT_VERSION, PROJECTIONS};
use crate::store::StoreError;

/// Stored snapshots (header and bytes) waiting for the fold to reach them.
type Waiting = Vec<(Header, Vec<u8>)>;

/// What the check found: the snapshots equal to the fold (name, position)
/// and those of another format version (name, position, version).
pub(super) type Found = (Vec<(String, u64)>, Vec<(String, u64, u32)>);

pub(super) struct Checks {
    /// Folded only when there is something to compare.
    fold: Option<Replay>,
    /// Projections' snapshots by position.
    projections: BTreeMap<u64, Waiting>,
    /// Key space snapshots by (account, stream version).
    keyspaces: HashMap<(AccountId, u64), Waiting>,
    /// Each key space stream's version so far.
    versions: HashMap<AccountId, u64>,
    checked: Vec<(String, u64)>,
    other_formats: Vec<(String, u64, u32)>,
}

fn wrong(header: &Header, what: impl Into<String>) -> VerifyError {
    VerifyError::Snapshot {
        name: header.name.clone(),
        position: header.position,
        what: what.into(),
    }
}

impl Checks {
    pub(super) fn new(snapshots: Vec<StoredSnapshot>) -> Result<Checks, VerifyError> {
        let mut checks = Checks {
            fold: None,
            projections: BTreeMap::new(),
            keyspaces: HashMap::new(),
            versions: HashMap::new(),
            checked: Vec::new(),
            other_formats: Vec::new(),
        };
        for s in snapshots {
            let header = s.header;
            if header.format_version != FORMAT_VERSION {
                checks
                    .other_formats
                    .push((header.name.clone(), header.position, header.format_version));
                continue;
            }
            let bytes = s.bytes.map_err(|what| wrong(&header, what))?;
            if header.name == PROJECTIONS {
                checks
                    .projections
                    .entry(header.position)
                    .or_default()
                    .push((header, bytes));
            } else if let Some(account) = header.name.strip_prefix("keyspace/") {
                let account: AccountId = account
                    .parse()
                    .map_err(|e| wrong(&header, format!("names no account: {e}")))?;
                let key = (account, header.version);
                checks.keyspaces.entry(key).or_default().push((header, bytes));
            } else {
                return Err(wrong(&header, "is of nothing this build snapshots"));
            }
        }
        if !checks.projections.is_empty() || !checks.keyspaces.is_empty() {
            checks.fold = Some(Replay::new(""));
        }
        Ok(checks)
    }

    pub(super) fn apply(&mut self, event: &RecordedEvent) -> Result<(), VerifyError> {
        let Some(fold) = self.fold.as_mut() else {
            return Ok(());
        };
        fold.apply(event);
        if let Some(stored) = self.projections.remove(&event.position) {
            let ours = fold.projections.snapshot();
            let bytes = snapshot::encode(&ours).map_err(|e| VerifyError::Store(StoreError::Io(e)))?;
            for (header, theirs) in stored {
                check_link(&header, event)?;
                if theirs != bytes {
                    return Err(wrong(&header, differs(&ours, &theirs)));
                }
                self.checked.push((header.name, header.position));
            }
        }
        if event.stream.category() == "keyspace" {
            let version = self.versions.entry(event.account.clone()).or_default();
            *version += 1;
            if let Some(stored) = self.keyspaces.remove(&(event.account.clone(), *version)) {
                let state = fold.keyspaces.get(&event.account).cloned().unwrap_or_default();
                let bytes = snapshot::encode(&state.snapshot()).map_err(|e| VerifyError::Store(StoreError::Io(e)))?;
                for (header, theirs) in stored {
                    check_link(&header, event)?;
                    if theirs != bytes {
                        let what = match snapshot::decode::<KeyspaceSnapshot>(&theirs) {
                            Ok(_) => "differs from the key space the log folds into".to_owned(),
                            Err(e) => e,
                        };
                        return Err(wrong(&header, what));
                    }
                    self.checked.push((header.name, header.position));
                }
            }
        }
        Ok(())
    }

    /// Every snapshot must have been met by the fold.
    pub(super) fn finish(self) -> Result<Found, VerifyError> {
        let left = self
            .projections
            .into_values()
            .chain(self.keyspaces.into_values())
            .flatten()
            .next();
        if let Some((header, _)) = left {
            return Err(wrong(
                &header,
                "the log holds no such event (it ends before, or the stream is shorter)",
            ));
        }
        let mut checked = self.checked;
        checked.sort();
        Ok((checked, self.other_formats))
    }
}

fn check_link(header: &Header, event: &RecordedEvent) -> Result<(), VerifyError> {
    if header.position != event.position || header.link != event.hash {
        return Err(wrong(
            header,
            format!(
                "was taken after another event than the log's at position {} (link {})",
                event.position, event.hash
            ),
        ));
    }
    Ok(())
}

/// Which projection of a stored snapshot differs from ours.
fn differs(ours: &SetSnapshot, theirs: &[u8]) -> String {
    let theirs = match snapshot::decode::<SetSnapshot>(theirs) {
        Ok(theirs) => theirs,
        Err(e) => return e,
    };
    let names = [
        ("expiry-queue", ours.expiry != theirs.expiry),
        ("catalog", ours.catalog != theirs.catalog),
        ("directory", ours.directory != theirs.directory),
        ("shares", ours.shares != theirs.shares),
        ("services", ours.services != theirs.services),
        ("workloads", ours.workloads != theirs.workloads),
        ("routing", ours.routing != theirs.routing),
    ];
    let differing: Vec<&str> = names.iter().filter(|(_, d)| *d).map(|(n, _)| *n).collect();
    format!("differs from what the log folds into: {}", differing.join(", "))
}

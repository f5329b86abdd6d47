//! Snapshots of the projections and of the key spaces, so that a start
//! folds only the tail of the log.
//!
//! - **What**: every projection at one position (`tenure_projections::
//!   snapshot::SetSnapshot`, taken under the projector's lock) under the
//!   name `projections`; each key space at a stream version
//!   (`domain::keyspace::KeyspaceSnapshot`) under `keyspace/{account}`.
//!   Only what the log decides: the expiry queue keeps each live lease's
//!   TTL and the time of its last grant or keep-alive *event*, never a
//!   deadline (deadlines are recomputed from the new process's floor, as a
//!   fold would).
//! - **Encoding**: [postcard] 1.x (a stable, documented wire format:
//!   varints, no field names, no self-description), with
//!   [`FORMAT_VERSION`] in the header row and a SHA-256 over the header and
//!   the bytes ([`store::Header::checksum_of`]).
//! - **Where**: tables of the log's SQLite file, written in chunks through a
//!   connection of their own ([`store`]).
//! - **When**: by [`run`], off the hot path, every `every_events` events or
//!   `every` (if anything changed), and once at a clean stop. A large state
//!   waits for more events ([`due_after`]): its snapshot's cost grows with
//!   its size, the events between two of them grow with it, so snapshots
//!   cost the same per event appended whatever the size.
//! - **Restore**: the newest snapshot of a name that passes every check
//!   (format version, checksum, decoding, the checks of `restore`, position
//!   not past the head, and the log's link at its position equal to the one
//!   it recorded). A snapshot that fails one is logged at warn and skipped;
//!   with none left, the fold starts from the log's first event.
//!
//! **Architecture Invariant:** a snapshot is never trusted over the log:
//! anything wrong with it means the log is folded instead, and `tenure
//! verify` compares every stored snapshot with the log's own fold.

pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tenure_events::{AccountId, ChainHash, StreamId};
use tenure_projections::snapshot::SetSnapshot;
use tenure_projections::ProjectionSet;
use tokio::sync::watch;

use self::store::{Header, SnapshotFile};
use crate::actors::{keyspace, Activation, Hub};
use crate::domain::keyspace::{Keyspace, KeyspaceSnapshot};
use crate::store::{EventStore, StoreError};

/// The version of the encoding of every snapshot this build writes and
/// reads. Bump it with any change to a snapshot type (or to a fold that
/// changes what a snapshot means): older snapshots are then ignored and
/// rebuilt from the log.
pub const FORMAT_VERSION: u32 = 1;

/// The name of the projections' snapshot.
pub const PROJECTIONS: &str = "projections";

/// The name of an account's key space snapshot.
pub fn keyspace_name(account: &AccountId) -> String {
    format!("keyspace/{account}")
}

/// When snapshots are written and whether they are read.
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    /// Start from snapshots (false: fold the whole log, as before them).
    pub restore: bool,
    /// Write snapshots (periodically and at a clean stop).
    pub write: bool,
    /// A snapshot after this many events (of `$all` for the projections,
    /// of its stream for a key space).
    pub every_events: u64,
    /// And after this long, if anything changed (a large state: if
    /// enough changed, [`due_after`] with `every_events` 1).
    pub every: Duration,
    /// And once at a clean stop.
    pub on_stop: bool,
    /// A test knob: after the first chunk of a snapshot (written in chunks
    /// of 64 bytes then), create this file and stop there until the
    /// process is killed.
    pub stall_marker: Option<PathBuf>,
}

/// At most this many bytes of snapshot encoded and written per event
/// appended, amortized (an event's row is ~300 bytes): a snapshot whose
/// last encoding took `b` bytes is next due by count after
/// `b / BYTES_PER_EVENT` events, if that is more than `every_events`
/// ([`due_after`]). (Key spaces are asked when the projections are due, so
/// large projections also space out a small key space's snapshots; its
/// tail is then no longer than theirs.) A key space of 1,000,000
/// keys (~58 MB) then takes one every ~900,000 of its events, not every
/// 100,000: encoding it (and rebuilding its maps when due) stalls the key
/// space's actor for 0.25-0.47 s, every 3-4 s under load at 100,000
/// (ops/bench/growth.sh). The price is the tail a start after a crash
/// folds: up to that many events.
pub const BYTES_PER_EVENT: u64 = 64;

/// The events after which a snapshot is due by count, the last one's
/// encoding having taken `last_bytes` (0: none taken by this process).
pub fn due_after(every_events: u64, last_bytes: u64) -> u64 {
    every_events.max(1).max(last_bytes / BYTES_PER_EVENT)
}

impl SnapshotConfig {
    pub const DEFAULT_EVERY_EVENTS: u64 = 100_000;
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(300);
}

impl Default for SnapshotConfig {
    fn default() -> SnapshotConfig {
        SnapshotConfig {
            restore: true,
            write: true,
            every_events: Self::DEFAULT_EVERY_EVENTS,
            every: Self::DEFAULT_EVERY,
            on_stop: true,
            stall_marker: None,
        }
    }
}

/// What happened to snapshots in this process: what tests and the start-up
/// log look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotEvent {
    /// Started from this snapshot.
    Restored {
        name: String,
        position: u64,
    },
    /// Ignored (and the log folded instead): why.
    Rejected {
        name: String,
        position: u64,
        reason: String,
    },
    Written {
        name: String,
        position: u64,
        bytes: u64,
    },
}

/// The snapshots of a data directory, as the server uses them.
pub struct Snapshots {
    reader: Mutex<SnapshotFile>,
    writer: Mutex<SnapshotFile>,
    pub config: SnapshotConfig,
    events: Mutex<Vec<SnapshotEvent>>,
}

/// Encodes a snapshot value.
pub fn encode(value: &impl serde::Serialize) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(value).map_err(|e| format!("cannot encode a snapshot: {e}"))
}

/// Decodes a snapshot's bytes, all of them.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} bytes follow the snapshot", rest.len())),
        Err(e) => Err(format!("it does not decode: {e}")),
    }
}

/// Decodes and restores a key space snapshot's bytes.
pub fn keyspace_from(bytes: &[u8]) -> Result<Keyspace, String> {
    Keyspace::restore(decode::<KeyspaceSnapshot>(bytes)?)
}

impl Snapshots {
    /// Opens the snapshots of `data_dir` (after the store, which creates
    /// the tables) and deletes what a killed process left half written.
    pub fn open(data_dir: &Path, config: SnapshotConfig) -> Result<Snapshots, StoreError> {
        Snapshots::open_with(|| SnapshotFile::open(data_dir), config)
    }

    /// Opens a node's own snapshot file in `data_dir`, for a log kept
    /// elsewhere (see [`SnapshotFile::open_own`]).
    pub fn open_own(data_dir: &Path, config: SnapshotConfig) -> Result<Snapshots, StoreError> {
        Snapshots::open_with(|| SnapshotFile::open_own(data_dir), config)
    }

    fn open_with(
        open: impl Fn() -> Result<SnapshotFile, StoreError>,
        config: SnapshotConfig,
    ) -> Result<Snapshots, StoreError> {
        let mut writer = open()?;
        if config.write {
            let deleted = writer.delete_incomplete()?;
            if deleted > 0 {
                tracing::info!(deleted, "deleted snapshots left incomplete by an earlier process");
            }
        }
        Ok(Snapshots {
            reader: Mutex::new(open()?),
            writer: Mutex::new(writer),
            config,
            events: Mutex::new(Vec::new()),
        })
    }

    /// Everything that happened to snapshots so far.
    pub fn events(&self) -> Vec<SnapshotEvent> {
        self.events.lock().clone()
    }

    /// Notes that a snapshot that read back whole was refused after all
    /// (by what follows it in the log).
    pub fn rejected(&self, name: &str, version: u64, reason: String) {
        self.note(SnapshotEvent::Rejected {
            name: name.to_owned(),
            position: version,
            reason,
        });
    }

    fn note(&self, event: SnapshotEvent) {
        match &event {
            SnapshotEvent::Rejected { name, position, reason } => {
                tracing::warn!(snapshot = %name, position, %reason, "snapshot ignored; folding the log instead")
            }
            SnapshotEvent::Restored { name, position } => {
                tracing::info!(snapshot = %name, position, "started from a snapshot")
            }
            SnapshotEvent::Written { name, position, bytes } => {
                tracing::debug!(snapshot = %name, position, bytes, "snapshot written")
            }
        }
        self.events.lock().push(event);
    }

    /// The newest snapshot named `name` that reads back whole and that
    /// `accept` turns into a state (checking it against the log); each one
    /// refused on the way is noted.
    async fn newest<T, F, Fut>(self: &Arc<Self>, name: &str, head: u64, accept: F) -> Option<(Header, T)>
    where
        T: Send + 'static,
        F: Fn(Header, Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<(Header, T), String>>,
    {
        if !self.config.restore {
            return None;
        }
        let headers = {
            let this = Arc::clone(self);
            let name = name.to_owned();
            blocking(move || this.reader.lock().headers(Some(&name))).await
        };
        let headers = match headers {
            Ok(headers) => headers,
            Err(e) => {
                tracing::warn!(snapshot = %name, error = %e, "cannot list snapshots; folding the log instead");
                return None;
            }
        };
        for header in headers {
            let (name, position) = (header.name.clone(), header.position);
            let reject = |reason: String| SnapshotEvent::Rejected {
                name: name.clone(),
                position,
                reason,
            };
            if header.format_version != FORMAT_VERSION {
                self.note(reject(format!(
                    "format version {}; this build reads {FORMAT_VERSION}",
                    header.format_version
                )));
                continue;
            }
            if header.position > head {
                self.note(reject(format!("its position is past the log's head {head}")));
                continue;
            }
            let bytes = {
                let this = Arc::clone(self);
                let header = header.clone();
                blocking(move || Ok(this.reader.lock().read(&header))).await
            };
            let bytes = match bytes {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(reason)) => {
                    self.note(reject(reason));
                    continue;
                }
                Err(e) => {
                    self.note(reject(e.to_string()));
                    continue;
                }
            };
            let started = std::time::Instant::now();
            match accept(header, bytes).await {
                Ok(found) => {
                    tracing::debug!(snapshot = %name, millis = started.elapsed().as_millis() as u64, "snapshot decoded");
                    self.note(SnapshotEvent::Restored { name, position });
                    return Some(found);
                }
                Err(reason) => self.note(reject(reason)),
            }
        }
        None
    }

    /// The projections from the newest valid snapshot, with its position
    /// and size: deadlines count from `floor`, shares are served under
    /// `domain`.
    pub async fn restore_projections(
        self: &Arc<Self>,
        store: &Arc<dyn EventStore>,
        floor: DateTime<Utc>,
        domain: &str,
    ) -> Option<(Mark, ProjectionSet)> {
        let head = store.head();
        let found = self
            .newest(PROJECTIONS, head, |header, bytes| {
                let store = Arc::clone(store);
                let domain = domain.to_owned();
                async move {
                    check_link(&store, &header, None).await?;
                    let position = header.position;
                    let set = blocking(move || {
                        Ok(decode::<SetSnapshot>(&bytes).and_then(|snapshot| {
                            ProjectionSet::restore(snapshot, position, floor, &domain).map_err(|e| e.to_string())
                        }))
                    })
                    .await
                    .map_err(|e| e.to_string())??;
                    Ok((header, set))
                }
            })
            .await;
        found.map(|(header, set)| {
            let mark = Mark {
                at: header.position,
                bytes: header.bytes,
            };
            (mark, set)
        })
    }

    /// The account's key space from its newest valid snapshot, with the
    /// stream version it is at and its size.
    pub async fn restore_keyspace(
        self: &Arc<Self>,
        store: &Arc<dyn EventStore>,
        account: &AccountId,
    ) -> Option<(Mark, Keyspace)> {
        let stream = StreamId::keyspace(account);
        let found = self
            .newest(&keyspace_name(account), store.head(), |header, bytes| {
                let store = Arc::clone(store);
                let stream = stream.clone();
                async move {
                    check_link(&store, &header, Some(&stream)).await?;
                    let state = blocking(move || Ok(keyspace_from(&bytes)))
                        .await
                        .map_err(|e| e.to_string())??;
                    Ok((header, state))
                }
            })
            .await;
        found.map(|(header, state)| {
            let mark = Mark {
                at: header.version,
                bytes: header.bytes,
            };
            (mark, state)
        })
    }

    /// Writes a snapshot (on the calling thread: call it from a blocking
    /// one). `version` is the stream version of an entity's snapshot.
    fn write(&self, name: &str, position: u64, version: u64, link: &ChainHash, bytes: &[u8]) -> Result<(), StoreError> {
        let stall = || {
            if let Some(marker) = &self.config.stall_marker {
                let _ = std::fs::write(marker, name);
                tracing::warn!(snapshot = %name, "test knob: stalling in the middle of writing a snapshot");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        };
        // Stalling, small chunks: the kill lands with only some written.
        let chunk_bytes = if self.config.stall_marker.is_some() {
            64
        } else {
            store::CHUNK_BYTES
        };
        let header = self.writer.lock().write(
            chunk_bytes,
            name,
            FORMAT_VERSION,
            position,
            version,
            link,
            bytes,
            &stall,
        )?;
        self.note(SnapshotEvent::Written {
            name: name.to_owned(),
            position: header.position,
            bytes: header.bytes,
        });
        Ok(())
    }
}

/// Runs `f` on a thread where blocking is fine.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(format!("a snapshot task failed: {e}"))))
}

/// Checks that the log holds, at the snapshot's position, the event it was
/// taken after (same link in the chain; for an entity, of its stream at
/// its version).
async fn check_link(store: &Arc<dyn EventStore>, header: &Header, stream: Option<&StreamId>) -> Result<(), String> {
    let event = match stream {
        None if header.position == 0 => return Ok(()),
        None => store.read_all(header.position, 1).await,
        Some(stream) => {
            if header.version == 0 {
                return Err("a key space snapshot at version 0".into());
            }
            store.read_stream(stream, header.version, 1).await
        }
    }
    .map_err(|e| format!("cannot read the log at its position: {e}"))?;
    match event.first() {
        Some(e)
            if e.position == header.position
                && e.hash == header.link
                && stream.is_none_or(|_| e.version == header.version) =>
        {
            Ok(())
        }
        Some(e) => Err(format!(
            "the log holds another event at its position (position {}, link {})",
            e.position, e.hash
        )),
        None => Err("the log holds no event at its position".into()),
    }
}

/// Writes snapshots until `stop` fires, then once more (a clean stop, if
/// `on_stop`) and answers on `done`.
/// `restored`: the projections' snapshot this process started from (none:
/// the default), so a start that folded a long log writes one soon, and
/// one from a large snapshot waits as long as after one it wrote.
pub async fn run(
    hub: Arc<Hub>,
    snapshots: Arc<Snapshots>,
    mut stop: watch::Receiver<bool>,
    restored: Mark,
    done: tokio::sync::oneshot::Sender<()>,
) {
    let config = snapshots.config.clone();
    let mut last = restored;
    let mut checkpoint = hub.projections.subscribe();
    loop {
        let due = last.at.saturating_add(due_after(config.every_events, last.bytes));
        let by_count = tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(config.every) => false,
            _ = checkpoint.wait_for(|p| *p >= due) => true,
        };
        // By time, whatever changed, but a large state still waits for
        // events in proportion to its size: a timer at a million keys
        // would otherwise stall the key space every `every` for a few
        // events' gain.
        let every = if by_count { config.every_events } else { 1 };
        last = take(&hub, &snapshots, Some(every), last).await;
    }
    if config.on_stop {
        take(&hub, &snapshots, None, last).await;
    }
    let _ = done.send(());
}

/// A snapshot a state started from or last wrote: where it was taken (the
/// projections' position, a key space's stream version) and the bytes of
/// its encoding, which decide when the next is due ([`due_after`]).
/// `Mark::default()`: none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    pub at: u64,
    pub bytes: u64,
}

impl Mark {
    /// Whether a state now at `now` (a position, a stream version) is due
    /// for its next snapshot after this one: by `every_events` or, when
    /// large, by more ([`due_after`]); with `None`, once it changed at all.
    pub fn due_at(&self, now: u64, every_events: Option<u64>) -> bool {
        let after = every_events.map_or(1, |every| due_after(every, self.bytes));
        now.saturating_sub(self.at) >= after
    }
}

/// Takes the snapshots that are due: the projections and each key space
/// that grew by `every_events` events or, when large, by more
/// ([`due_after`]); with `None` (a clean stop), each that changed at all.
/// Answers the projections' snapshot now stored.
async fn take(hub: &Arc<Hub>, snapshots: &Arc<Snapshots>, every_events: Option<u64>, last: Mark) -> Mark {
    let mut stored = last;
    if last.due_at(hub.projections.checkpoint(), every_events) {
        match write_projections(hub, snapshots).await {
            Ok(written) => stored = written,
            Err(e) => tracing::warn!(error = %e, "cannot write the projections' snapshot"),
        }
    }
    let accounts: Vec<AccountId> = hub.projections.catalog.lock().keyspaces().cloned().collect();
    for account in accounts {
        let (reply, answer) = tokio::sync::oneshot::channel();
        hub.keyspaces.route(
            hub,
            &account,
            Activation::Load,
            keyspace::TakeSnapshot { every_events, reply },
        );
        let Ok(Some(taken)) = answer.await else { continue };
        if let Err(e) = write_keyspace(hub, snapshots, &account, taken).await {
            tracing::warn!(error = %e, account = %account, "cannot write a key space snapshot");
        }
    }
    stored
}

/// Copies and encodes the projections off the actors' threads, then
/// writes them; answers their position and size.
async fn write_projections(hub: &Arc<Hub>, snapshots: &Arc<Snapshots>) -> Result<Mark, String> {
    let projections = Arc::clone(&hub.projections);
    let (position, bytes) = blocking(move || {
        let (position, set) = projections.snapshot_state();
        Ok((position, encode(&set).map_err(StoreError::Io)?))
    })
    .await
    .map_err(|e| e.to_string())?;
    let event = hub.store.read_all(position, 1).await.map_err(|e| e.to_string())?;
    let link = match event.first() {
        Some(e) if e.position == position => e.hash,
        _ => return Err(format!("the log holds no event at position {position}")),
    };
    let snapshots = Arc::clone(snapshots);
    let size = bytes.len() as u64;
    blocking(move || snapshots.write(PROJECTIONS, position, 0, &link, &bytes))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Mark {
        at: position,
        bytes: size,
    })
}

async fn write_keyspace(
    hub: &Arc<Hub>,
    snapshots: &Arc<Snapshots>,
    account: &AccountId,
    taken: keyspace::Taken,
) -> Result<(), String> {
    let stream = StreamId::keyspace(account);
    let event = hub
        .store
        .read_stream(&stream, taken.version, 1)
        .await
        .map_err(|e| e.to_string())?;
    let (position, link) = match event.first() {
        Some(e) if e.version == taken.version => (e.position, e.hash),
        _ => {
            return Err(format!(
                "the log holds no event at version {} of {stream}",
                taken.version
            ))
        }
    };
    let snapshots = Arc::clone(snapshots);
    let name = keyspace_name(account);
    blocking(move || snapshots.write(&name, position, taken.version, &link, &taken.bytes))
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keyspace::{KeyBlob, KeyspaceCommand, LeaseUpdate};
    use crate::domain::Aggregate;
    use tenure_events::LeaseId;

    fn t() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()
    }

    fn keyspace() -> Keyspace {
        let mut ks = Keyspace::default();
        let lease = LeaseId::new(7);
        for (key, lease) in [
            ("b", lease),
            ("a", None),
            ("b", None),
            ("c", lease),
            ("\u{0}bin", lease),
        ] {
            let put = KeyspaceCommand::Put {
                key: key.into(),
                value: Some(format!("v-{key}").into()),
                lease: LeaseUpdate::Set(lease),
                max_keys: tenure_events::UNLIMITED,
            };
            for e in ks.decide(put, t()).unwrap_or_default() {
                ks.evolve(&e, t());
            }
        }
        ks
    }

    #[test]
    fn a_key_space_comes_back_from_its_encoding_exactly() {
        let ks = keyspace();
        let bytes = encode(&ks.snapshot()).unwrap_or_default();
        assert_eq!(keyspace_from(&bytes), Ok(ks.clone()));
        // The borrowed form encodes exactly as the owned one decodes.
        let owned: KeyspaceSnapshot = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(encode(&owned).unwrap_or_default(), bytes);
        assert_eq!(owned.keys.len(), ks.len());
    }

    /// A snapshot comes from disk: whatever it holds, restoring it answers
    /// an error rather than a state that breaks an invariant later.
    #[test]
    fn a_key_space_snapshot_that_breaks_an_invariant_is_refused() {
        let good = decode::<KeyspaceSnapshot>(&encode(&keyspace().snapshot()).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let check = |change: fn(&mut KeyspaceSnapshot), why: &str| {
            let mut bad = good.clone();
            change(&mut bad);
            let refused = Keyspace::restore(bad).err().unwrap_or_default();
            assert!(refused.contains(why), "{why}: {refused}");
        };
        check(|s| s.revision = 0, "below 1");
        check(|s| s.keys.swap(0, 1), "strictly increasing");
        check(|s| s.keys[1] = s.keys[0].clone(), "strictly increasing");
        check(|s| s.keys[0].0 = KeyBlob::from(Vec::new()), "empty key");
        check(|s| s.keys[0].3 = s.revision + 1, "revisions");
        check(|s| s.keys[0].2 = s.keys[0].3 + 1, "revisions");
        check(|s| s.keys[0].4 = 0, "version");
        check(|s| s.keys[0].5 = Some(0), "not positive");
        assert!(decode::<KeyspaceSnapshot>(&[1, 2, 3]).is_err());
        let mut trailing = encode(&good).unwrap_or_default();
        trailing.push(0);
        assert_eq!(
            decode::<KeyspaceSnapshot>(&trailing).err().as_deref(),
            Some("1 bytes follow the snapshot")
        );
    }
}

//! What each in-memory structure costs per live lease, in RSS: folds N
//! lease grants (one account, increasing IDs, as the server hands them out)
//! into the expiry queue or the routing table, or N puts of one key each on
//! those leases into a key space; or restores one from its own snapshot (as
//! a restart builds it). Each in a process of its own (this binary runs
//! itself), reading VmRSS before and after, so that one structure's garbage
//! does not count for another.
//!
//! A companion of `memory.sh`, to see where the server's bytes go. Also
//! times each structure's `compact` on what was folded. Events
//! are built one at a time and dropped, so what stays is the structure.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use chrono::{DateTime, TimeDelta, Utc};
use clap::{Parser, ValueEnum};
use tenure::domain::keyspace::Keyspace;
use tenure::domain::Aggregate;
use tenure::snapshot::{decode, encode};
use tenure_events::{
    AccountId, KeyPut, KeyspaceEvent, LeaseEvent, LeaseGranted, LeaseId, Metadata, NewEvent, RecordedEvent, StreamId,
};
use tenure_projections::{ExpiryQueue, Projection, RoutingTable};

#[derive(Parser)]
struct Args {
    /// Leases (and keys).
    #[arg(long, default_value_t = 1_000_000)]
    leases: i64,
    /// Measure only this structure (the child processes).
    #[arg(long, value_enum)]
    only: Option<Structure>,
    /// With --only: restore it from this snapshot file instead of folding.
    #[arg(long)]
    restore: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Structure {
    Expiry,
    Routing,
    Keyspace,
}

const STRUCTURES: [Structure; 3] = [Structure::Expiry, Structure::Routing, Structure::Keyspace];

/// This process's VmRSS, bytes.
fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()
}

fn lease(i: i64) -> anyhow::Result<LeaseId> {
    LeaseId::new(i).with_context(|| format!("lease {i}"))
}

fn grant(account: &AccountId, i: i64) -> anyhow::Result<RecordedEvent> {
    let lease = lease(i)?;
    let event = LeaseEvent::from(LeaseGranted {
        lease,
        ttl_s: 86_400,
        requested_ttl_s: 86_400,
    });
    let new = NewEvent::new(
        &event,
        &Metadata::new(account.clone()),
        start() + TimeDelta::milliseconds(i),
    );
    Ok(RecordedEvent::from_new(
        new,
        StreamId::lease(account, lease),
        1,
        i as u64,
    ))
}

fn put(i: i64) -> anyhow::Result<KeyspaceEvent> {
    Ok(KeyPut {
        key: format!("mem/{i:07}").into(),
        value: format!("10.{}.{}.{}:80", i / 65_536 % 256, i / 256 % 256, i % 256).into(),
        lease: Some(lease(i)?),
        revision: i + 1,
    }
    .into())
}

/// Folds `n` leases into the structure; answers its snapshot's bytes.
fn fold(what: Structure, n: i64) -> anyhow::Result<Vec<u8>> {
    let account = AccountId::default_account();
    let bytes = match what {
        Structure::Expiry => {
            let mut q = ExpiryQueue::new(start());
            for i in 1..=n {
                q.apply(&grant(&account, i)?);
            }
            report(what, "folded", n);
            timed_compact(what, || q.compact());
            encode(&q.snapshot())
        }
        Structure::Routing => {
            let mut r = RoutingTable::new("example.com");
            for i in 1..=n {
                r.apply(&grant(&account, i)?);
            }
            report(what, "folded", n);
            timed_compact(what, || r.compact());
            encode(&r.snapshot())
        }
        Structure::Keyspace => {
            let mut k = Keyspace::default();
            for i in 1..=n {
                k.evolve(&put(i)?, start());
            }
            report(what, "folded", n);
            timed_compact(what, || k.compact());
            encode(&k.snapshot())
        }
    };
    bytes.map_err(anyhow::Error::msg)
}

fn restore(what: Structure, n: i64, file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file)?;
    let checkpoint = n as u64;
    // Each kept until it is measured.
    let (live, _queue, _routing, _keyspace) = match what {
        Structure::Expiry => {
            let q = ExpiryQueue::restore(decode(&bytes).map_err(anyhow::Error::msg)?, checkpoint, start())?;
            (q.len(), Some(q), None, None)
        }
        Structure::Routing => {
            let r = RoutingTable::restore(decode(&bytes).map_err(anyhow::Error::msg)?, checkpoint, "example.com")?;
            let live = r.snapshot().live_leases.iter().map(|(_, l)| l.len()).sum();
            (live, None, Some(r), None)
        }
        Structure::Keyspace => {
            let k = tenure::snapshot::keyspace_from(&bytes).map_err(anyhow::Error::msg)?;
            (k.len(), None, None, Some(k))
        }
    };
    drop(bytes);
    if live as i64 != n {
        bail!("{what:?} restored {live} of {n}");
    }
    report(what, "restored", n);
    Ok(())
}

/// Runs the structure's `compact` (its maps rebuilt with full nodes, as
/// when a snapshot is taken) and prints how long it took: how long it
/// holds its lock or its actor's turn. Its RSS after is not read: the
/// system's allocator keeps what the old nodes freed.
fn timed_compact(what: Structure, compact: impl FnOnce()) {
    let started = std::time::Instant::now();
    compact();
    let took = started.elapsed();
    println!(
        "{:<32} {:>7.1} ms",
        format!("{what:?} compacted in"),
        took.as_secs_f64() * 1e3
    );
}

static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

fn report(what: Structure, how: &str, n: i64) {
    let added = rss() - BASE.get().copied().unwrap_or_default();
    println!(
        "{:<32} {:>7.1} B/lease ({} MiB)",
        format!("{what:?} {how}"),
        added as f64 / n as f64,
        added >> 20
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.leases;
    BASE.get_or_init(rss);
    if let Some(what) = args.only {
        return match &args.restore {
            Some(file) => restore(what, n, file),
            None => {
                let bytes = fold(what, n)?;
                std::fs::write(snapshot_file(what), bytes)?;
                Ok(())
            }
        };
    }
    println!("{n} leases of one account (one key each in the key space); RSS added per lease:");
    let me = std::env::current_exe()?;
    for what in STRUCTURES {
        let name = format!("{what:?}").to_lowercase();
        let status = Command::new(&me)
            .args(["--leases", &n.to_string(), "--only", &name])
            .status()?;
        anyhow::ensure!(status.success(), "folding {name} failed");
        let status = Command::new(&me)
            .args(["--leases", &n.to_string(), "--only", &name, "--restore"])
            .arg(snapshot_file(what))
            .status()?;
        anyhow::ensure!(status.success(), "restoring {name} failed");
        std::fs::remove_file(snapshot_file(what))?;
    }
    Ok(())
}

fn snapshot_file(what: Structure) -> PathBuf {
    std::env::temp_dir().join(format!("lease-structures-{what:?}.snapshot"))
}

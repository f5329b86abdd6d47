//! Writes a synthetic event log of N events into a data directory, through
//! tenure's own store (so every event is chained and durable as a server
//! would write it), for the replay and verify benchmarks.
//!
//! The mix is what a lease-heavy control plane writes: each lease is
//! granted, gets one key, and most leases later expire (the expiry and its
//! key's deletion, caused by it); the rest stay live. Keys go to a few
//! accounts' key spaces. About four events per expired lease.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, TimeDelta};
use clap::Parser;
use tenure::store::{EventStore, ExpectedVersion, SqliteStore};
use tenure_events::{
    AccountId, DeleteCause, KeyDeleted, KeyPut, KeyspaceEvent, LeaseEvent, LeaseExpired, LeaseGranted, LeaseId,
    Metadata, NewEvent, StreamId,
};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Where to write the log (created; must not hold one already).
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// Events to write (rounded to whole leases).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Accounts the leases and keys are spread over.
    #[arg(long, default_value_t = 4)]
    accounts: u64,
    /// One lease in this many stays live (its expiry is not written).
    #[arg(long, default_value_t = 5)]
    live_every: u64,
    /// The leases' TTL (a server started on the log gives the live ones
    /// this long from its start).
    #[arg(long, default_value_t = 60)]
    ttl: i64,
}

/// Appends queued before waiting for their answers: fills the group
/// commit's batches.
const IN_FLIGHT: usize = 4096;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = SqliteStore::open(&args.data_dir).context("opening the store")?;
    anyhow::ensure!(store.head() == 0, "{} already holds a log", args.data_dir.display());
    let store: Arc<dyn EventStore> = Arc::new(store);
    let accounts: Vec<AccountId> = (0..args.accounts.max(1))
        .map(|i| format!("bench-{i}").parse())
        .collect::<Result<_, _>>()?;
    let start = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    let started = std::time::Instant::now();
    let mut written = 0u64;
    let mut lease_number = 0u64;
    let mut revisions = vec![1i64; accounts.len()];
    let mut pending = Vec::with_capacity(IN_FLIGHT);
    while written < args.events {
        lease_number += 1;
        let slot = (lease_number % accounts.len() as u64) as usize;
        let account = &accounts[slot];
        let lease = LeaseId::new(lease_number as i64).context("lease number")?;
        let at = start + TimeDelta::milliseconds(lease_number as i64);
        let meta = Metadata {
            account: account.clone(),
            request_id: Some(Uuid::new_v4()),
            causation_id: None,
        };
        let granted = LeaseEvent::from(LeaseGranted {
            lease,
            ttl_s: args.ttl,
            requested_ttl_s: args.ttl,
        });
        revisions[slot] += 1;
        let put = KeyspaceEvent::from(KeyPut {
            key: format!("service/{lease_number}").into(),
            value: format!("10.0.{}.{}:8080", lease_number / 250 % 250, lease_number % 250).into(),
            lease: Some(lease),
            revision: revisions[slot],
        });
        let mut lease_events = vec![NewEvent::new(&granted, &meta, at)];
        let mut key_events = vec![NewEvent::new(&put, &meta, at)];
        if lease_number % args.live_every.max(1) != 0 {
            let deadline = at + TimeDelta::seconds(args.ttl);
            let expired = NewEvent::new(
                &LeaseEvent::from(LeaseExpired { lease, deadline }),
                &Metadata::new(account.clone()),
                deadline,
            );
            revisions[slot] += 1;
            let deleted = KeyspaceEvent::from(KeyDeleted {
                key: format!("service/{lease_number}").into(),
                revision: revisions[slot],
                cause: DeleteCause::LeaseExpired { lease },
            });
            let caused = Metadata {
                account: account.clone(),
                request_id: None,
                causation_id: Some(expired.event_id),
            };
            key_events.push(NewEvent::new(&deleted, &caused, deadline));
            lease_events.push(expired);
        }
        written += (lease_events.len() + key_events.len()) as u64;
        // The lease's stream is new; the key space's order is the append
        // order of this one writer.
        pending.push(store.append(StreamId::lease(account, lease), ExpectedVersion::Exact(0), lease_events));
        pending.push(store.append(StreamId::keyspace(account), ExpectedVersion::Any, key_events));
        if pending.len() >= IN_FLIGHT {
            for appended in futures::future::join_all(pending.drain(..)).await {
                appended.context("append")?;
            }
        }
    }
    for appended in futures::future::join_all(pending.drain(..)).await {
        appended.context("append")?;
    }
    let head = store.chain_head();
    eprintln!(
        "wrote {} events ({} leases) in {:.1} s; head {head}",
        head.position,
        lease_number,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

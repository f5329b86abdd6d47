//! The group commit's throughput: C concurrent writers, each appending one
//! event at a time to its own stream and waiting for it to be durable (as
//! C clients each waiting for their command), for N events in all, through
//! tenure's SQLite store with `synchronous=FULL`. Prints events/s and
//! events per commit. With `--metrics`, the writer counts into the
//! server's metrics as it does in a server (to measure what they cost), and
//! the mean commit (fsync) and append times are printed too.
//!
//! Uses only the store's public API as it was before the hash chain too,
//! so `ops/bench/history.sh` can build it against an older commit and
//! compare the two side by side.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use tenure::store::{EventStore, ExpectedVersion, SqliteStore};
use tenure_events::{AccountId, NewEvent, StreamId};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// A fresh directory for the log.
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// Events in all.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Writers appending at once.
    #[arg(long, default_value_t = 64)]
    writers: u64,
    /// Count into the server's metrics (store writer's part).
    #[arg(long)]
    metrics: bool,
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "LeaseGranted".into(),
        schema_version: 1,
        time: chrono::Utc::now(),
        account: AccountId::default_account(),
        request_id: Some(Uuid::new_v4()),
        causation_id: None,
        payload: format!(r#"{{"lease":"{n:016x}","ttl_s":60,"requested_ttl_s":60}}"#),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let metrics = args.metrics.then(tenure::metrics::Metrics::new);
    let store = SqliteStore::open_with_metrics(&args.data_dir, metrics.as_ref().map(|m| m.store.clone()))
        .context("opening the store")?;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let per_writer = args.events / args.writers.max(1);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let store = Arc::clone(&shared);
        writers.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("lease/default/{w:016x}")).context("stream")?;
            for i in 0..per_writer {
                store
                    .append(
                        stream.clone(),
                        ExpectedVersion::Exact(i),
                        vec![event(w * per_writer + i)],
                    )
                    .await
                    .context("append")?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await.context("writer")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.stats();
    println!(
        "{:.0} events/s, {:.1} events per commit ({} events, {} writers, {:.2} s)",
        stats.events as f64 / elapsed,
        stats.events as f64 / stats.commits.max(1) as f64,
        stats.events,
        args.writers,
        elapsed
    );
    if let Some(metrics) = &metrics {
        let mean_ms = |h: &prometheus::Histogram| 1000.0 * h.get_sample_sum() / h.get_sample_count().max(1) as f64;
        println!(
            "metrics: mean commit (fsync) {:.3} ms, mean append {:.3} ms",
            mean_ms(&metrics.store.fsync),
            mean_ms(&metrics.store.append_latency)
        );
    }
    store.close();
    Ok(())
}

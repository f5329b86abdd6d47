//! Mass expiry: grants N leases, each with one key, all due in the same
//! second, and measures how long after that second the last key is gone.
//!
//! Each lease's TTL is chosen when it is granted so that its deadline falls
//! in `[due, due + 1 s)`. After `due` it polls the key count until it is 0.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// The tenure server.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    endpoint: String,
    /// Leases to grant (each with one key).
    #[arg(long, default_value_t = 100_000)]
    leases: usize,
    /// Requests in flight while setting up.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds from now until the shared due second; must cover the set-up.
    #[arg(long, default_value_t = 60)]
    lead: u64,
    /// Key prefix used for the keys.
    #[arg(long, default_value = "mass/")]
    prefix: String,
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

async fn count(http: &reqwest::Client, endpoint: &str, prefix: &str) -> anyhow::Result<u64> {
    let body: Value = http
        .get(format!("{endpoint}/v1/keys"))
        .query(&[("prefix", prefix), ("limit", "1")])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["count"].as_u64().context("count in the answer")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let due = Duration::from_secs(unix_now().as_secs() + args.lead);
    let setup = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.leases)
        .map(|i| {
            let (http, endpoint, prefix) = (&http, &args.endpoint, &args.prefix);
            async move {
                let ttl = (due.saturating_sub(unix_now()).as_millis() as u64).div_ceil(1000);
                if ttl < 2 {
                    bail!("set-up took longer than --lead; raise it");
                }
                let lease: Value = http
                    .post(format!("{endpoint}/v1/leases"))
                    .json(&json!({"ttl": ttl}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let lease = lease["id"].as_str().context("lease id")?.to_owned();
                http.put(format!("{endpoint}/v1/keys"))
                    .query(&[("key", format!("{prefix}{i:07}"))])
                    .json(&json!({"value": "x", "lease": lease}))
                    .send()
                    .await?
                    .error_for_status()?;
                Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let setup_s = setup.elapsed().as_secs_f64();
    let keys = count(&http, &args.endpoint, &args.prefix).await?;
    println!(
        "set-up: {} leases and keys in {setup_s:.1} s ({:.0} grant+put pairs/s)",
        args.leases,
        args.leases as f64 / setup_s
    );
    if keys != args.leases as u64 {
        bail!("expected {} keys, found {keys}", args.leases);
    }
    println!("due {}", due.as_secs());
    tokio::time::sleep(due.saturating_sub(unix_now())).await;
    let mut first_gone = None;
    loop {
        let left = count(&http, &args.endpoint, &args.prefix).await?;
        let since_due = unix_now().saturating_sub(due);
        if left < keys && first_gone.is_none() {
            first_gone = Some(since_due);
        }
        if left == 0 {
            println!(
                "mass expiry: {} leases due in [{}s, +1s): first key gone {:.3} s after the due second began, last key gone {:.3} s after it began ({:.3} s after the last deadline)",
                args.leases,
                due.as_secs(),
                first_gone.unwrap_or(since_due).as_secs_f64(),
                since_due.as_secs_f64(),
                since_due.saturating_sub(Duration::from_secs(1)).as_secs_f64(),
            );
            println!("RESULT last_key_gone_s={:.3}", since_due.as_secs_f64());
            return Ok(());
        }
        if since_due > Duration::from_secs(600) {
            bail!("{left} keys still there 600 s after they were due");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

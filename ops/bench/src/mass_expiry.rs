//! Mass expiry, against any server that speaks etcd's `/v3` JSON gateway
//! (etcd itself, or tenure): grants N leases, each with one key, all due in
//! the same second, and measures how long after the last deadline the last
//! key is gone.
//!
//! Each lease's TTL is chosen when it is granted so that its deadline falls
//! in `[due, due + 1 s)`. From `due` on it counts the keys every 20 ms until
//! none is left.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Parser;
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// The server (etcd or tenure).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    /// Leases to grant (each with one key).
    #[arg(long, default_value_t = 100_000)]
    leases: usize,
    /// Requests in flight while setting up.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds from now until the shared due second; must cover the set-up.
    #[arg(long, default_value_t = 60)]
    lead: u64,
    /// Key prefix used for the keys.
    #[arg(long, default_value = "mass/")]
    prefix: String,
    /// Only grant the leases and put their keys, then exit (for restart
    /// benchmarks: with a long --lead the leases stay live).
    #[arg(long)]
    setup_only: bool,
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn call(http: &reqwest::Client, endpoint: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let res = http.post(format!("{endpoint}{path}")).json(&body).send().await?;
    let status = res.status();
    let text = res.text().await?;
    let body: Value = serde_json::from_str(&text).with_context(|| format!("{path}: {status} {text:?}"))?;
    if !status.is_success() {
        bail!("{path}: {status} {body}");
    }
    Ok(body)
}

/// Keys under the prefix (etcd omits a count of 0).
async fn count(http: &reqwest::Client, args: &Args) -> anyhow::Result<u64> {
    let prefix = args.prefix.as_bytes();
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let body = json!({"key": b64(prefix), "range_end": b64(&end), "count_only": true});
    let reply = call(http, &args.endpoint, "/v3/kv/range", body).await?;
    Ok(reply["count"].as_str().map_or(Ok(0), str::parse)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let due = Duration::from_secs(unix_now().as_secs() + args.lead);
    let setup = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.leases)
        .map(|i| {
            let (http, args) = (&http, &args);
            async move {
                let ttl = (due.saturating_sub(unix_now()).as_millis() as u64).div_ceil(1000);
                if ttl < 2 {
                    bail!("set-up took longer than --lead; raise it");
                }
                let lease = call(http, &args.endpoint, "/v3/lease/grant", json!({"TTL": ttl})).await?;
                let id = lease["ID"].as_str().context("lease ID")?.to_owned();
                let key = format!("{}{i:07}", args.prefix);
                let put = json!({"key": b64(key.as_bytes()), "value": b64(b"x"), "lease": id});
                call(http, &args.endpoint, "/v3/kv/put", put).await?;
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
    let keys = count(&http, &args).await?;
    println!(
        "set-up: {} leases and keys in {setup_s:.1} s ({:.0} grant+put pairs/s)",
        args.leases,
        args.leases as f64 / setup_s
    );
    if keys != args.leases as u64 {
        bail!("expected {} keys, found {keys}", args.leases);
    }
    if args.setup_only {
        return Ok(());
    }
    println!("due {}", due.as_secs());
    tokio::time::sleep(due.saturating_sub(unix_now())).await;
    let last_deadline = due + Duration::from_secs(1);
    loop {
        let left = count(&http, &args).await?;
        let now = unix_now();
        if left == 0 {
            let after = now.saturating_sub(last_deadline).as_secs_f64();
            println!(
                "mass expiry: {} leases due in [{}s, +1s): last key gone {:.3} s after the due second began, {after:.3} s after the last deadline",
                args.leases,
                due.as_secs(),
                now.saturating_sub(due).as_secs_f64(),
            );
            println!("RESULT last_key_gone_after_deadline_s={after:.3}");
            return Ok(());
        }
        if now.saturating_sub(due) > Duration::from_secs(900) {
            bail!("{left} keys still there 900 s after they were due");
        }
        tokio::time::sleep(poll_after(left)).await;
    }
}

/// How long to wait before counting again with `left` keys to go. A count
/// walks every key left (etcd's too), so polling a million keys every
/// 20 ms took a third of a core from the server it measures (28% of the
/// server's actor threads in a profile). The wait shrinks with the keys
/// left, to 20 ms from 80,000 keys down, so the last key's time is known
/// as precisely as before.
fn poll_after(left: u64) -> Duration {
    const MIN_MS: u64 = 20;
    const MAX_MS: u64 = 250;
    Duration::from_millis((left * MAX_MS / 1_000_000).clamp(MIN_MS, MAX_MS))
}

//! Lease load for the memory benchmark, against any server that speaks
//! etcd's `/v3` JSON gateway (etcd itself, or tenure): grants N leases of a
//! long TTL (so that none expires while it is measured) and, with `--keys 1`,
//! puts one key on each (`{prefix}{i:07}`, 11 bytes by default, whose
//! value is an instance's address, `10.x.y.z:80`), then exits. The leases are left alive.

use std::time::Instant;

use anyhow::{bail, Context};
use base64::Engine;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// The server (etcd or tenure).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    /// Leases to grant.
    #[arg(long, default_value_t = 1_000_000)]
    leases: usize,
    /// Their TTL, seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl: u64,
    /// Keys to put on each lease (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    keys: u8,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Key prefix used for the keys.
    #[arg(long, default_value = "mem/")]
    prefix: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn call(http: &reqwest::Client, endpoint: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let res = http.post(format!("{endpoint}{path}")).json(&body).send().await?;
    let status = res.status();
    let body: Value = res.json().await?;
    if !status.is_success() {
        bail!("{path}: {status} {body}");
    }
    Ok(body)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let started = Instant::now();
    futures::stream::iter(0..args.leases)
        .map(|i| {
            let (http, args) = (&http, &args);
            async move {
                let lease = call(http, &args.endpoint, "/v3/lease/grant", json!({"TTL": args.ttl})).await?;
                let id = lease["ID"].as_str().context("lease ID")?.to_owned();
                if args.keys == 1 {
                    let key = format!("{}{i:07}", args.prefix);
                    let value = format!("10.{}.{}.{}:80", i / 65_536 % 256, i / 256 % 256, i % 256);
                    let put = json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes()), "lease": id});
                    call(http, &args.endpoint, "/v3/kv/put", put).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_for_each(|()| async { anyhow::Ok(()) })
        .await?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "granted {} leases of {} s with {} key(s) each in {took:.1} s ({:.0} leases/s)",
        args.leases,
        args.ttl,
        args.keys,
        args.leases as f64 / took
    );
    Ok(())
}

//! Keep-alive load, against any server that speaks etcd's `/v3` JSON gateway
//! (etcd itself, or tenure): grants N leases of `--ttl` seconds, then keeps
//! every one of them alive the way a client does (a round over all of them
//! every TTL/3, or back to back if a round takes longer) for
//! `--seconds`, and reports how many keep-alives it sent, how many found their
//! lease gone, and (from tenure's `/healthz`) how many events the log grew by.
//!
//! `--ids-out FILE` writes the granted lease IDs (decimal, one a line) for
//! `v3_keepalive.lua`; with `--seconds 0` it stops there.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// The server (etcd or tenure).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    /// Leases to grant and keep alive.
    #[arg(long, default_value_t = 100_000)]
    leases: usize,
    /// Their TTL, seconds; each is kept alive every TTL/3.
    #[arg(long, default_value_t = 30)]
    ttl: u64,
    /// How long to keep them alive, seconds (0: grant only).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Where to write the lease IDs, one a line.
    #[arg(long)]
    ids_out: Option<std::path::PathBuf>,
}

async fn call(http: &reqwest::Client, endpoint: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let res = http.post(format!("{endpoint}{path}")).json(&body).send().await?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        bail!("{path}: {status} {text}");
    }
    // Keep-alive answers a stream of `{"result": ...}` lines; one here.
    let first = text.lines().next().unwrap_or_default();
    serde_json::from_str(first).with_context(|| format!("{path}: {text:?}"))
}

/// tenure's log head (its `/healthz` position); None for etcd.
async fn head(http: &reqwest::Client, endpoint: &str) -> Option<u64> {
    let res = http.get(format!("{endpoint}/healthz")).send().await.ok()?;
    let body: Value = res.json().await.ok()?;
    body["position"].as_u64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let setup = Instant::now();
    let granted: Vec<anyhow::Result<String>> = futures::stream::iter(0..args.leases)
        .map(|_| {
            let (http, args) = (&http, &args);
            async move {
                let lease = call(http, &args.endpoint, "/v3/lease/grant", json!({"TTL": args.ttl})).await?;
                Ok(lease["ID"].as_str().context("lease ID")?.to_owned())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let ids: Vec<String> = granted.into_iter().collect::<anyhow::Result<_>>()?;
    println!(
        "set-up: {} leases of {} s granted in {:.1} s",
        ids.len(),
        args.ttl,
        setup.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.ids_out {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for id in &ids {
            writeln!(out, "{id}")?;
        }
        out.flush()?;
    }
    if args.seconds == 0 {
        return Ok(());
    }

    let before = head(&http, &args.endpoint).await;
    let period = Duration::from_millis(args.ttl * 1000 / 3);
    let started = Instant::now();
    let (mut sent, mut lost, mut rounds) = (0usize, 0usize, 0u32);
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let round = Instant::now();
        let answers: Vec<anyhow::Result<bool>> = futures::stream::iter(&ids)
            .map(|id| {
                let (http, args) = (&http, &args);
                async move {
                    let reply = call(http, &args.endpoint, "/v3/lease/keepalive", json!({"ID": id})).await?;
                    Ok(reply["result"]["TTL"].is_string())
                }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        for answer in answers {
            sent += 1;
            if !answer? {
                lost += 1;
            }
        }
        rounds += 1;
        let took = round.elapsed();
        println!(
            "round {rounds}: {} keep-alives in {:.2} s",
            ids.len(),
            took.as_secs_f64()
        );
        // A round longer than TTL/3 (this client is slow on a loaded
        // machine) still renews every lease in time unless it takes a TTL.
        if took >= Duration::from_secs(args.ttl) {
            bail!("a round took {took:?}, a whole TTL: the leases are not kept alive on time");
        }
        tokio::time::sleep(period.saturating_sub(took)).await;
    }
    let after = head(&http, &args.endpoint).await;
    let kept = started.elapsed().as_secs_f64();
    let listed = call(&http, &args.endpoint, "/v3/lease/leases", json!({})).await?;
    let live = listed["leases"].as_array().map_or(0, Vec::len);
    println!(
        "kept {} leases alive for {kept:.1} s: {sent} keep-alives in {rounds} rounds, {lost} found their lease gone; {live} leases live after",
        ids.len()
    );
    match (before, after) {
        (Some(before), Some(after)) => {
            println!("log: head {before} before, {after} after");
            println!(
                "RESULT log_growth_events={} keepalives={sent} lost={lost} live={live}",
                after - before
            );
        }
        _ => println!("RESULT log_growth_events=- keepalives={sent} lost={lost} live={live}"),
    }
    Ok(())
}

//! CPU per durable request, against any server that speaks etcd's `/v3` JSON
//! gateway (etcd itself, or tenure): sends a fixed number of durable requests
//! (`put`: `POST /v3/kv/put` over 10,000 rotating keys, as `v3_put.lua`;
//! `grant`: `POST /v3/lease/grant` with a TTL of 600 s, as `v3_grant.lua`;
//! `range`: `POST /v3/kv/range` of a key that does not exist, serializable
//! (etcd answers from its local store instead of a consensus round), a
//! request that writes nothing: the floor the HTTP stack and the server's
//! request handling put under every request),
//! `--concurrency` in flight on as many connections, and reads the server
//! process's user + system CPU time from `/proc/PID/stat` just before and
//! just after them (after a warm-up). Prints the server's CPU microseconds per
//! request, which does not depend on how the load generator and the server
//! share the cores the way requests/s does.
//!
//! Its last line is `RESULT cpu_us_per_request=.. requests_per_s=.. errors=..`.

use std::time::Instant;

use anyhow::bail;
use base64::Engine;
use clap::{Parser, ValueEnum};
use tenure_bench::cpu_us;

#[derive(Clone, Copy, ValueEnum)]
enum Load {
    Put,
    Grant,
    Range,
}

#[derive(Parser)]
struct Args {
    /// The server (etcd or tenure).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    /// The server's process ID, whose CPU time is measured.
    #[arg(long)]
    pid: u32,
    #[arg(long, value_enum)]
    load: Load,
    /// Requests measured.
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
    /// Requests sent before the measurement (connections opened, caches
    /// warm), not counted.
    #[arg(long, default_value_t = 5_000)]
    warmup: usize,
    /// Requests in flight, each on its own connection.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// The request bodies, one per key for puts.
fn bodies(load: Load) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match load {
        Load::Put => {
            let value = b64.encode("some value of about forty bytes, like etcd");
            (0..10_000)
                .map(|i| {
                    format!(
                        r#"{{"key": "{}", "value": "{value}"}}"#,
                        b64.encode(format!("bench/{i}"))
                    )
                })
                .collect()
        }
        Load::Grant => vec![r#"{"TTL": 600}"#.to_owned()],
        Load::Range => (0..10_000)
            .map(|i| {
                format!(
                    r#"{{"key": "{}", "serializable": true}}"#,
                    b64.encode(format!("missing/{i}"))
                )
            })
            .collect(),
    }
}

/// Sends `count` requests from `concurrency` clients; answers the number
/// that failed (non-2xx or unreadable).
async fn send(http: &reqwest::Client, url: &str, bodies: &[String], count: usize, concurrency: usize) -> usize {
    let clients = (0..concurrency).map(|client| {
        let share = count / concurrency + usize::from(client < count % concurrency);
        async move {
            let mut errors = 0;
            for n in 0..share {
                let body = &bodies[(client * share + n) % bodies.len()];
                let ok = match http.post(url).body(body.clone()).send().await {
                    Ok(res) => res.status().is_success() && res.bytes().await.is_ok(),
                    Err(_) => false,
                };
                errors += usize::from(!ok);
            }
            errors
        }
    });
    futures::future::join_all(clients).await.into_iter().sum()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.requests == 0 {
        bail!("--concurrency and --requests must be positive");
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let path = match args.load {
        Load::Put => "/v3/kv/put",
        Load::Grant => "/v3/lease/grant",
        Load::Range => "/v3/kv/range",
    };
    let url = format!("{}{path}", args.endpoint);
    let bodies = bodies(args.load);

    let warm_errors = send(&http, &url, &bodies, args.warmup, args.concurrency).await;
    if warm_errors > 0 {
        bail!("{warm_errors} of {} warm-up requests failed", args.warmup);
    }
    let cpu_before = cpu_us(Some(args.pid))?;
    let started = Instant::now();
    let errors = send(&http, &url, &bodies, args.requests, args.concurrency).await;
    let took = started.elapsed().as_secs_f64();
    let cpu_after = cpu_us(Some(args.pid))?;

    let cpu_s = (cpu_after - cpu_before) as f64 / 1e6;
    let per_request = (cpu_after - cpu_before) as f64 / args.requests as f64;
    let rate = args.requests as f64 / took;
    println!(
        "{} requests in {took:.2} s ({rate:.0}/s, {errors} failed); the server used {cpu_s:.2} CPU-s",
        args.requests
    );
    println!("RESULT cpu_us_per_request={per_request:.1} requests_per_s={rate:.0} errors={errors}");
    Ok(())
}

//! gRPC load (issue 15), against any server that speaks etcd's gRPC API
//! (etcd itself, or tenure's `--grpc-listen`), with the clients tenure
//! exports (`tenure::grpc::client`), so both servers see the same bytes.
//!
//! Modes (`--mode`):
//! - `put`: `--workers` concurrent callers of KV.Put, each on distinct keys
//!   with a small value, for `--seconds`; requests/s and latency.
//! - `grant`: the same with Lease.LeaseGrant (TTL `--ttl`, 600 s).
//! - `keepalive`: grants `--leases` leases first, then each worker keeps a
//!   LeaseKeepAlive stream and sends keep-alives for its share of them as
//!   fast as answers come back (`--window` outstanding per stream).
//! - `watch`: `--watchers` Watch streams on one fresh prefix (from now),
//!   then a writer puts `--rate` keys/s under it for `--seconds`; each put's
//!   value is the time it was sent (ns since a shared `Instant`), so each
//!   watcher measures each event's delivery delay. Reports delivery
//!   latency and events received against expected (watchers × puts).
//! - `ready`: polls a Range until the server answers (a readiness poll for
//!   scripts), for at most `--seconds`.
//!
//! Calls are spread over `--channels` HTTP/2 connections (a tonic Channel
//! multiplexes its calls). Latencies go to preallocated `Vec<u32>` of
//! microseconds, sorted once at the end, so the generator stays cheap.
//! Prints one `RESULT {json}` line per run, then a human line. In the put,
//! grant and keepalive modes the line holds this generator's own CPU
//! microseconds per answered request and, given `--server-pid`, the
//! server's: on one machine the two share the cores, so requests/s can be
//! at most cores / (server + generator CPU per request).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tenure::domain::keyspace::prefix_end;
use tenure::grpc::client::{KVClient, LeaseClient, WatchClient};
use tenure::grpc::pb;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Put,
    Grant,
    Keepalive,
    Watch,
    Ready,
}

#[derive(Parser)]
struct Args {
    /// The server's gRPC endpoint (etcd or tenure).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// A name for the server in the summary line.
    #[arg(long, default_value = "server")]
    label: String,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Concurrent callers (put, grant) or keep-alive streams.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// How long the load lasts, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes of value per put (put mode).
    #[arg(long, default_value_t = 16)]
    value_bytes: usize,
    /// TTL of granted leases, seconds.
    #[arg(long, default_value_t = 600)]
    ttl: i64,
    /// Leases kept alive (keepalive mode).
    #[arg(long, default_value_t = 10_000)]
    leases: usize,
    /// Keep-alives outstanding per stream (keepalive mode).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Watch streams (watch mode).
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// Watch streams per HTTP/2 connection at most (watch mode): more
    /// watchers than `channels` × this open more connections.
    #[arg(long, default_value_t = 100)]
    watchers_per_channel: usize,
    /// Puts per second under the watched prefix (watch mode).
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// After the last put, how long to wait for the watchers to get
    /// every event, seconds (watch mode).
    #[arg(long, default_value_t = 15)]
    drain_seconds: u64,
    /// The server's process ID: its CPU time per request is reported
    /// (put, grant, keepalive).
    #[arg(long)]
    server_pid: Option<u32>,
}

/// CPU time of this generator and of the server around a load.
struct CpuMeter {
    server_pid: Option<u32>,
    generator_us: u64,
    server_us: Option<u64>,
}

impl CpuMeter {
    fn start(server_pid: Option<u32>) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            server_pid,
            generator_us: tenure_bench::cpu_us(None)?,
            server_us: server_pid.map(|pid| tenure_bench::cpu_us(Some(pid))).transpose()?,
        })
    }

    /// CPU microseconds per request of the generator and of the server.
    fn per_request(&self, requests: usize) -> anyhow::Result<(f64, Option<f64>)> {
        let n = requests.max(1) as f64;
        let generator = tenure_bench::cpu_us(None)?.saturating_sub(self.generator_us) as f64 / n;
        let server = match (self.server_pid, self.server_us) {
            (Some(pid), Some(before)) => Some(tenure_bench::cpu_us(Some(pid))?.saturating_sub(before) as f64 / n),
            _ => None,
        };
        Ok((generator, server))
    }
}

/// Puts the watch writer keeps in flight at most: a server slower than
/// `--rate` then sees a lower rate rather than an unbounded backlog.
const WRITER_IN_FLIGHT_MAX: usize = 1024;

/// What one worker saw.
#[derive(Default)]
struct Tally {
    latency_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn with_capacity(n: usize) -> Tally {
        Tally {
            latency_us: Vec::with_capacity(n),
            ..Tally::default()
        }
    }

    fn record(&mut self, since: Instant) {
        self.latency_us.push(micros(since.elapsed()));
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn merge(tallies: Vec<Tally>) -> Tally {
        let n = tallies.iter().map(|t| t.latency_us.len()).sum();
        let mut all = Tally::with_capacity(n);
        for t in tallies {
            all.latency_us.extend_from_slice(&t.latency_us);
            all.errors += t.errors;
            if all.first_error.is_none() {
                all.first_error = t.first_error;
            }
        }
        all.latency_us.sort_unstable();
        all
    }

    /// The `p`-quantile in ms, of sorted latencies.
    fn quantile_ms(&self, p: f64) -> f64 {
        let v = &self.latency_us;
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        f64::from(v[rank - 1]) / 1000.0
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn channels(endpoint: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(endpoint.to_owned())
        .context("the endpoint")?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(endpoint.connect().await.context("connecting")?);
    }
    Ok(out)
}

/// A key prefix no earlier run used, so runs against the same server do
/// not see each other's keys.
fn run_prefix(mode: Mode) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("bench/{mode:?}/{}-{nanos}/", std::process::id()).to_lowercase()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode {
        Mode::Ready => ready(&args).await,
        Mode::Put | Mode::Grant => unary(&args).await,
        Mode::Keepalive => keepalive(&args).await,
        Mode::Watch => watch(&args).await,
    }
}

async fn ready(args: &Args) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    loop {
        let answered = async {
            let ch = channels(&args.endpoint, 1).await?;
            let mut kv = KVClient::new(ch[0].clone());
            kv.range(pb::RangeRequest {
                key: b"bench/ready".to_vec(),
                ..Default::default()
            })
            .await?;
            anyhow::Ok(())
        }
        .await;
        match answered {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e.context("the server is not ready")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn summary(args: &Args, fields: serde_json::Value) {
    let mut line = json!({"server": args.label, "mode": format!("{:?}", args.mode).to_lowercase()});
    if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
        line.extend(fields.clone());
    }
    println!("RESULT {line}");
}

/// `put` and `grant`: each worker calls back to back until the deadline.
async fn unary(args: &Args) -> anyhow::Result<()> {
    let chans = channels(&args.endpoint, args.channels).await?;
    let prefix = run_prefix(args.mode);
    let value = vec![b'v'; args.value_bytes];
    let cpu = CpuMeter::start(args.server_pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut workers = Vec::with_capacity(args.workers);
    for w in 0..args.workers {
        let ch = chans[w % chans.len()].clone();
        let (mode, ttl, prefix, value) = (args.mode, args.ttl, prefix.clone(), value.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::with_capacity(1 << 16);
            let mut kv = KVClient::new(ch.clone());
            let mut lease = LeaseClient::new(ch);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let answered = if mode == Mode::Put {
                    let key = format!("{prefix}{w}/{n}").into_bytes();
                    kv.put(pb::PutRequest {
                        key,
                        value: value.clone(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                } else {
                    lease.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }).await.map(drop)
                };
                match answered {
                    Ok(()) => tally.record(sent),
                    Err(e) => tally.error(e),
                }
                n += 1;
            }
            tally
        }));
    }
    let mut tallies = Vec::with_capacity(workers.len());
    for w in workers {
        tallies.push(w.await?);
    }
    let took = started.elapsed().as_secs_f64();
    let all = Tally::merge(tallies);
    let ok = all.latency_us.len();
    let rps = ok as f64 / took;
    let (generator_cpu, server_cpu) = cpu.per_request(ok)?;
    summary(
        args,
        json!({
            "ok": ok, "errors": all.errors, "first_error": all.first_error,
            "seconds": took, "rps": rps, "generator_cpu_us": generator_cpu, "server_cpu_us": server_cpu,
            "p50_ms": all.quantile_ms(0.50), "p99_ms": all.quantile_ms(0.99), "max_ms": all.quantile_ms(1.0),
            "workers": args.workers, "channels": chans.len(),
        }),
    );
    println!(
        "{} {:?}: {ok} ok, {} errors in {took:.1} s: {rps:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({} workers on {} channels)",
        args.label,
        args.mode,
        all.errors,
        all.quantile_ms(0.50),
        all.quantile_ms(0.99),
        args.workers,
        chans.len()
    );
    Ok(())
}

async fn grant_leases(chans: &[Channel], n: usize, ttl: i64, concurrency: usize) -> anyhow::Result<Vec<i64>> {
    let granted: Vec<anyhow::Result<i64>> = futures::stream::iter(0..n)
        .map(|i| {
            let mut lease = LeaseClient::new(chans[i % chans.len()].clone());
            async move {
                let reply = lease.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }).await?;
                Ok(reply.into_inner().id)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    granted.into_iter().collect()
}

/// `keepalive`: one LeaseKeepAlive stream per worker, `window` keep-alives
/// outstanding on each; answers on a stream come in the order asked.
async fn keepalive(args: &Args) -> anyhow::Result<()> {
    let chans = channels(&args.endpoint, args.channels).await?;
    let setup = Instant::now();
    let ids = grant_leases(&chans, args.leases, args.ttl, args.workers).await?;
    println!(
        "set-up: {} leases granted in {:.1} s",
        ids.len(),
        setup.elapsed().as_secs_f64()
    );
    let workers_n = args.workers.clamp(1, ids.len().max(1));
    let cpu = CpuMeter::start(args.server_pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let window = args.window.max(1);
    let mut workers = Vec::with_capacity(workers_n);
    for w in 0..workers_n {
        let mine: Vec<i64> = ids.iter().copied().skip(w).step_by(workers_n).collect();
        let mut lease = LeaseClient::new(chans[w % chans.len()].clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::with_capacity(1 << 16);
            let mut lost = 0u64;
            let (mut tx, rx) = futures::channel::mpsc::channel::<pb::LeaseKeepAliveRequest>(window);
            let mut next = mine.iter().cycle();
            let mut sent_at = std::collections::VecDeque::with_capacity(window);
            // Ask before awaiting the call: a Go server sends the response
            // headers with its first answer.
            for _ in 0..window {
                let id = *next.next().unwrap_or(&0);
                if tx.try_send(pb::LeaseKeepAliveRequest { id }).is_err() {
                    break;
                }
                sent_at.push_back(Instant::now());
            }
            let mut answers = match lease.lease_keep_alive(rx).await {
                Ok(answers) => answers.into_inner(),
                Err(e) => {
                    tally.error(e);
                    return (tally, lost);
                }
            };
            while let Some(sent) = sent_at.pop_front() {
                match answers.message().await {
                    Ok(Some(answer)) => {
                        tally.record(sent);
                        if answer.ttl <= 0 {
                            lost += 1;
                        }
                    }
                    Ok(None) => {
                        tally.error("the keep-alive stream ended");
                        break;
                    }
                    Err(e) => {
                        tally.error(e);
                        break;
                    }
                }
                if Instant::now() < deadline {
                    let id = *next.next().unwrap_or(&0);
                    if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                        tally.error("the keep-alive stream closed");
                        break;
                    }
                    sent_at.push_back(Instant::now());
                }
            }
            (tally, lost)
        }));
    }
    let (mut tallies, mut lost) = (Vec::with_capacity(workers_n), 0);
    for w in workers {
        let (t, l) = w.await?;
        tallies.push(t);
        lost += l;
    }
    let took = started.elapsed().as_secs_f64();
    let all = Tally::merge(tallies);
    let ok = all.latency_us.len();
    let rps = ok as f64 / took;
    let (generator_cpu, server_cpu) = cpu.per_request(ok)?;
    summary(
        args,
        json!({
            "ok": ok, "errors": all.errors, "first_error": all.first_error, "lost": lost,
            "seconds": took, "rps": rps, "generator_cpu_us": generator_cpu, "server_cpu_us": server_cpu,
            "p50_ms": all.quantile_ms(0.50), "p99_ms": all.quantile_ms(0.99), "max_ms": all.quantile_ms(1.0),
            "leases": ids.len(), "streams": workers_n, "window": window, "channels": chans.len(),
        }),
    );
    println!(
        "{} keepalive: {ok} answers ({lost} without TTL), {} errors in {took:.1} s: {rps:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({} leases, {workers_n} streams × window {window} on {} channels)",
        args.label,
        all.errors,
        all.quantile_ms(0.50),
        all.quantile_ms(0.99),
        ids.len(),
        chans.len()
    );
    Ok(())
}

/// What one watcher saw.
#[derive(Default)]
struct Watched {
    tally: Tally,
    /// Events at or below a revision this watcher had already seen.
    repeated: u64,
    canceled: u64,
}

/// The send time a watch-mode put carries in its value.
fn stamp(since: Duration) -> Vec<u8> {
    u64::try_from(since.as_nanos())
        .unwrap_or(u64::MAX)
        .to_le_bytes()
        .to_vec()
}

fn unstamp(value: &[u8]) -> Option<Duration> {
    Some(Duration::from_nanos(u64::from_le_bytes(value.try_into().ok()?)))
}

async fn watch(args: &Args) -> anyhow::Result<()> {
    let n_chans = args
        .channels
        .max(args.watchers.div_ceil(args.watchers_per_channel.max(1)));
    let chans = channels(&args.endpoint, n_chans).await?;
    let prefix = run_prefix(Mode::Watch).into_bytes();
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Open the watchers, a few at a time, each on its own stream.
    let setup = Instant::now();
    let opened: Vec<anyhow::Result<_>> = futures::stream::iter(0..args.watchers)
        .map(|i| {
            let mut client = WatchClient::new(chans[i % chans.len()].clone());
            let create = pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                    key: prefix.clone(),
                    range_end: prefix_end(&prefix),
                    ..Default::default()
                })),
            };
            async move {
                let (mut tx, rx) = futures::channel::mpsc::channel::<pb::WatchRequest>(1);
                tx.try_send(create).context("queueing the create request")?;
                let mut stream = client.watch(rx).await?.into_inner();
                let created = stream.message().await?.context("the watch stream ended")?;
                anyhow::ensure!(created.created, "the first answer is not `created`: {created:?}");
                Ok((tx, stream))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut watchers = Vec::with_capacity(args.watchers);
    for w in opened {
        let (tx, mut stream) = w?;
        let (received, mut stop) = (received.clone(), stop_rx.clone());
        let capacity = usize::try_from(args.rate * args.seconds).unwrap_or(0) + 64;
        watchers.push(tokio::spawn(async move {
            let _keep_open = tx;
            let mut seen = Watched {
                tally: Tally::with_capacity(capacity),
                ..Watched::default()
            };
            let mut last_revision = 0i64;
            loop {
                let answer = tokio::select! {
                    answer = stream.message() => answer,
                    _ = stop.wait_for(|stop| *stop) => break,
                };
                match answer {
                    Ok(Some(answer)) => {
                        if answer.canceled {
                            seen.canceled += 1;
                            seen.tally.error(format!("canceled: {}", answer.cancel_reason));
                            break;
                        }
                        let now = epoch.elapsed();
                        for event in &answer.events {
                            let Some(kv) = &event.kv else { continue };
                            if kv.mod_revision <= last_revision {
                                seen.repeated += 1;
                                continue;
                            }
                            last_revision = kv.mod_revision;
                            if let Some(sent) = unstamp(&kv.value) {
                                seen.tally.latency_us.push(micros(now.saturating_sub(sent)));
                            }
                        }
                        received.fetch_add(answer.events.len() as u64, Ordering::Relaxed);
                    }
                    Ok(None) => {
                        seen.tally.error("the watch stream ended");
                        break;
                    }
                    Err(e) => {
                        seen.tally.error(e);
                        break;
                    }
                }
            }
            seen
        }));
    }
    println!(
        "set-up: {} watchers on {} channels in {:.1} s",
        watchers.len(),
        chans.len(),
        setup.elapsed().as_secs_f64()
    );

    // The writer: a put every 1/rate s, each in its own task, at most
    // WRITER_IN_FLIGHT_MAX in flight.
    let puts_ok = Arc::new(AtomicU64::new(0));
    let puts_failed = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(WRITER_IN_FLIGHT_MAX));
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let writing = Instant::now();
    let write_deadline = writing + Duration::from_secs(args.seconds);
    let mut n = 0u64;
    let mut first_put_error = None::<String>;
    let (err_tx, mut err_rx) = tokio::sync::mpsc::channel::<String>(1);
    while Instant::now() < write_deadline {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let mut kv = KVClient::new(chans[(n as usize) % chans.len()].clone());
        let key = [prefix.as_slice(), n.to_string().as_bytes()].concat();
        let (ok, failed, err_tx) = (puts_ok.clone(), puts_failed.clone(), err_tx.clone());
        let value = stamp(epoch.elapsed());
        tokio::spawn(async move {
            match kv
                .put(pb::PutRequest {
                    key,
                    value,
                    ..Default::default()
                })
                .await
            {
                Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    let _ = err_tx.try_send(e.to_string());
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            drop(permit);
        });
        n += 1;
    }
    let _all_answered = in_flight.acquire_many(WRITER_IN_FLIGHT_MAX as u32).await?;
    let write_took = writing.elapsed().as_secs_f64();
    drop(err_tx);
    if let Some(e) = err_rx.recv().await {
        first_put_error = Some(e);
    }
    let ok_puts = puts_ok.load(Ordering::Relaxed);
    let expected = ok_puts * watchers.len() as u64;

    // Wait for the events still on their way.
    let draining = Instant::now();
    let drain_deadline = draining + Duration::from_secs(args.drain_seconds);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained_after = draining.elapsed();
    stop_tx.send_replace(true);
    let (mut tallies, mut repeated, mut canceled) = (Vec::with_capacity(watchers.len()), 0, 0);
    for w in watchers {
        let seen = w.await?;
        repeated += seen.repeated;
        canceled += seen.canceled;
        tallies.push(seen.tally);
    }
    let all = Tally::merge(tallies);
    let got = received.load(Ordering::Relaxed);
    summary(
        args,
        json!({
            "watchers": args.watchers, "channels": chans.len(),
            "puts": ok_puts, "put_errors": puts_failed.load(Ordering::Relaxed), "first_put_error": first_put_error,
            "put_rate": ok_puts as f64 / write_took,
            "expected": expected, "received": got, "repeated": repeated, "canceled": canceled,
            "errors": all.errors, "first_error": all.first_error,
            "p50_ms": all.quantile_ms(0.50), "p99_ms": all.quantile_ms(0.99), "max_ms": all.quantile_ms(1.0),
            "drain_s": drained_after.as_secs_f64(),
        }),
    );
    println!(
        "{} watch: {} watchers, {ok_puts} puts ({:.0}/s), events {got}/{expected} received ({repeated} repeated, {canceled} canceled, {} errors), delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.label,
        args.watchers,
        ok_puts as f64 / write_took,
        all.errors,
        all.quantile_ms(0.50),
        all.quantile_ms(0.99),
        all.quantile_ms(1.0)
    );
    Ok(())
}

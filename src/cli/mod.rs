//! The `tenure` command line. `tenure serve` runs the server; every other
//! command is a thin HTTP client of `/v1` that prints what etcdctl prints, so
//! an etcd user's habits carry over. Errors go to stderr with exit code 1.

mod client;
pub mod output;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;
use crate::server::ServerConfig;

#[derive(Debug, Parser)]
#[command(
    name = "tenure",
    version,
    about = "An event-sourced control plane for leases, keys, reservations and services"
)]
pub struct Cli {
    /// The server the client commands talk to.
    #[arg(
        long,
        env = "TENURE_ENDPOINT",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub endpoint: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTP API on --listen, event log in --data-dir).
    Serve(ServeArgs),
    /// Grant, keep alive, revoke, inspect and list leases.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Put a key, optionally attached to a lease.
    Put {
        key: String,
        value: String,
        /// The lease (16 hex digits) the key lives and dies with.
        #[arg(long)]
        lease: Option<String>,
    },
    /// Print a key and its value (nothing if absent).
    Get {
        key: String,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// At most this many keys (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Delete a key; prints how many keys were deleted.
    Del {
        key: String,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease with a TTL in seconds.
    Grant {
        ttl: i64,
        /// Choose the lease ID (16 hex digits) instead of letting the server pick.
        #[arg(long)]
        id: Option<String>,
    },
    /// Revoke a lease, deleting every key attached to it.
    Revoke { id: String },
    /// Keep a lease alive (every TTL/3) until interrupted.
    #[command(name = "keep-alive")]
    KeepAlive {
        id: String,
        /// Keep it alive once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Show a lease's granted and remaining TTL.
    Timetolive {
        id: String,
        /// Also list the keys attached to it.
        #[arg(long)]
        keys: bool,
    },
    /// List the live leases.
    List,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value = ServerConfig::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where the event log lives (created if missing).
    #[arg(long, env = "TENURE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Lease TTLs below this many seconds are raised to it.
    #[arg(long, default_value_t = ServerConfig::DEFAULT_MIN_TTL_S, value_parser = clap::value_parser!(i64).range(1..))]
    pub min_ttl: i64,
    /// Seconds an idle entity actor stays in memory.
    #[arg(long, default_value_t = ServerConfig::DEFAULT_PASSIVATE_AFTER_S, value_parser = clap::value_parser!(u64).range(1..))]
    pub passivate_after: u64,
    /// Threads for entity actors (default: cores, at most 4).
    #[arg(long)]
    pub actor_threads: Option<usize>,
    /// HTTP worker threads (default: cores).
    #[arg(long)]
    pub http_workers: Option<usize>,
    /// Log lines for people or JSON for machines.
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(args),
        command => client::run(&cli.endpoint, command),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    crate::logging::init(args.log_format);
    let mut config = ServerConfig::new(args.data_dir);
    config.listen = args.listen;
    config.min_ttl_s = args.min_ttl;
    config.passivate_after = Duration::from_secs(args.passivate_after);
    if let Some(n) = args.actor_threads {
        config.actor_threads = n.max(1);
    }
    if let Some(n) = args.http_workers {
        config.http_workers = n.max(1);
    }
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
        let running = crate::server::start(config).await?;
        // Tests and scripts read this line to learn the port.
        println!("tenure listening on http://{}", running.addr);
        tracing::info!(addr = %running.addr, "serving");
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

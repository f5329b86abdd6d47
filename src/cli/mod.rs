//! The `tenure` command line. `tenure serve` runs the server; every other
//! command is a thin HTTP client of `/v1` that prints what etcdctl prints, so
//! an etcd user's habits carry over. Errors go to stderr with exit code 1.

mod client;
mod etcd;
mod history;
mod offline;
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

    /// The API token sent as `Authorization: Bearer` (an account's token,
    /// or the admin token for `account` commands). Prefer the environment
    /// variable: arguments are visible to other users in `ps`.
    #[arg(long, env = "TENURE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTP API on --listen, event log in --data-dir).
    Serve(Box<ServeArgs>),
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
    /// Print a key's changes as they happen (etcdctl's `watch`), until Ctrl-C.
    Watch {
        key: String,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// From this revision on (history first); 0: from now.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        rev: i64,
        /// Also print each key's value before the change.
        #[arg(long)]
        prev_kv: bool,
    },
    /// A transaction in etcdctl's format, read from stdin: compares, a blank
    /// line, the requests on success, a blank line, those on failure.
    Txn,
    /// Hold a distributed lock (etcd's mutex recipe): print its key and hold
    /// it until Ctrl-C, or run COMMAND while holding it.
    Lock {
        name: String,
        /// The command to run while holding the lock.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        /// The TTL of the lock's lease, in seconds: how long a dead holder
        /// keeps the lock.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..))]
        ttl: i64,
    },
    /// Campaign in an election with PROPOSAL and hold the office until
    /// Ctrl-C; with --listen, print each leader's proposal.
    Elect {
        name: String,
        proposal: Option<String>,
        /// Observe the election instead of campaigning.
        #[arg(short = 'l', long)]
        listen: bool,
        /// The TTL of the campaign's lease, in seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..))]
        ttl: i64,
    },
    /// Manage accounts (admin token) or inspect your own (account token).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Reserve a share: a token that lasts until released (zrok's `reserve`).
    Reserve {
        /// Who can reach it: anyone (public) or holders of an access grant (private).
        #[arg(value_enum)]
        mode: ShareModeArg,
        /// What it serves: a URL (proxy) or a directory (web).
        target: String,
        /// Use this name as the token instead of a random one (3 to 32 of a-z, 0-9, '-').
        #[arg(long)]
        unique_name: Option<String>,
        #[arg(long, value_enum, default_value = "proxy")]
        backend_mode: BackendModeArg,
    },
    /// Run a backend session for a reserved share until Ctrl-C.
    #[command(subcommand)]
    Share(ShareCommand),
    /// Get access to a private share (an access grant for your account).
    #[command(subcommand)]
    Access(AccessCommand),
    /// Release a reserved share: ends its session and grants, frees the token.
    Release { token: String },
    /// Reserved shares and workload reservations.
    #[command(subcommand)]
    Reservation(ReservationCommand),
    /// What nodes do: poll their reservations.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Services: FQDNs with port rules, served by the proxy (Unikraft Cloud style).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Instances attached to services.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Attach an instance at HOST:PORT to a service and keep it alive until
    /// Ctrl-C (then remove it). With -p instead of --service, a service is
    /// created for it and deleted with it.
    Deploy {
        #[arg(long)]
        name: String,
        #[arg(long, conflicts_with = "port")]
        service: Option<String>,
        /// Port rules of an automatic service: PORT:DEST[/HANDLERS].
        #[arg(short = 'p', long = "port", required_unless_present = "service")]
        port: Vec<String>,
        /// Where the instance listens.
        #[arg(long)]
        address: String,
        /// The TTL of the instance's lease, in seconds.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
        ttl: i64,
        /// Register and exit; keeping the lease alive is up to you.
        #[arg(long)]
        detach: bool,
    },
    /// Move a whole log between stores (positions and hashes kept).
    #[command(subcommand)]
    Store(StoreCommand),
    /// The server's health and the head of its log (POSITION:HASH, for
    /// `verify --expect-head`).
    Status {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// The log: one line per event (position, time, account, stream, type,
    /// request, what happened), filtered; --follow tails it live.
    Events(EventsArgs),
    /// An entity's whole story, in order: its events and those they caused.
    /// ENTITY is a lease ID, a workload reservation ID, a share token, a
    /// service, instance or account name, or KIND/NAME to say which.
    Audit {
        entity: String,
        /// Whose lease, service or instance (the admin; accounts audit their own).
        #[arg(long)]
        account: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Rebuild the state as of a moment from a data directory's log
    /// (offline, read-only; works while a server runs).
    Replay(ReplayArgs),
    /// Check a data directory's log (offline, read-only): the hash chain,
    /// positions and stream versions without gaps, every event decodes; with
    /// --endpoint (or TENURE_ENDPOINT), that the server's projections equal
    /// those rebuilt from the log. Exit 1 naming the first bad position.
    Verify(VerifyArgs),
}

/// How a command prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines for people.
    Table,
    /// JSON for programs (one object per line where there are many).
    Json,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Start at this position.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Print at most this many events, then stop.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Events of this stream (lease/default/1a20...).
    #[arg(long)]
    pub stream: Option<String>,
    /// Events of this entity: a lease ID, share token, service, instance or
    /// account name (the last part of the stream name).
    #[arg(long)]
    pub entity: Option<String>,
    /// Events of this kind of stream: lease, keyspace, account, share,
    /// workload, service, instance.
    #[arg(long)]
    pub kind: Option<String>,
    /// Events of this type (LeaseGranted); repeat for several.
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Events of this account (the admin; an account sees only its own).
    #[arg(long)]
    pub account: Option<String>,
    /// Events at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Events at or before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Keep printing new events as they happen, until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// What `replay` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayPart {
    Leases,
    Keys,
    Accounts,
    Shares,
    Workloads,
    Services,
    Routes,
    All,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The data directory whose log to read.
    #[arg(long, env = "TENURE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Read the log in PostgreSQL instead (as `serve --store`).
    #[arg(long, env = "TENURE_STORE", value_parser = parse_store)]
    pub store: Option<crate::store::PostgresTarget>,
    /// Stop after this position, or at this time (RFC 3339); the whole log
    /// if absent.
    #[arg(long)]
    pub until: Option<String>,
    /// What to show (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub what: Vec<ReplayPart>,
    /// The frontend's domain the server ran with (share hosts are TOKEN.DOMAIN).
    #[arg(long, default_value = ServerConfig::DEFAULT_DOMAIN)]
    pub domain: String,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every event of one log into another, empty one: a data
    /// directory or a PostgreSQL URL (postgres://…[?schema=NAME]) on
    /// either side. Stop the servers on the source first; the copy checks
    /// that both logs end on the same link of the hash chain.
    Copy {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The data directory whose log (and snapshots) to check.
    #[arg(long, env = "TENURE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Check the log in PostgreSQL instead (as `serve --store`); a node's
    /// snapshots are then not compared.
    #[arg(long, env = "TENURE_STORE", value_parser = parse_store)]
    pub store: Option<crate::store::PostgresTarget>,
    /// A head recorded earlier (`tenure status`): the log must reach it with
    /// the same link, which also detects a cut-off tail.
    #[arg(long)]
    pub expect_head: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service: NAME and port rules such as 443:8080/tls+http.
    Create {
        name: String,
        #[arg(required = true)]
        ports: Vec<String>,
        #[arg(long)]
        soft_limit: Option<u16>,
        #[arg(long)]
        hard_limit: Option<u16>,
    },
    List,
    Get {
        name: String,
    },
    /// Remove a service; with instances attached only with --force.
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    List,
    Rm { name: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ShareModeArg {
    Public,
    Private,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendModeArg {
    Proxy,
    Web,
}

#[derive(Debug, Subcommand)]
pub enum ShareCommand {
    /// Serve a reserved share: hold a lease and keep it alive while running.
    /// Ctrl-C ends the session (the reservation stays); a killed process's
    /// lease expires.
    Reserved {
        token: String,
        /// End another live session of this share and take over.
        #[arg(long)]
        replace: bool,
        /// The TTL of the session's lease, in seconds.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
        ttl: i64,
        /// A web share: where this process serves the share's directory
        /// (an address the server's proxy can reach; port 0 picks one).
        #[arg(long, default_value = "127.0.0.1:0")]
        web_listen: std::net::SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Create an access grant to a private share and print how to reach it.
    Private { token: String },
}

#[derive(Debug, Subcommand)]
pub enum ReservationCommand {
    /// Your reserved shares and workload reservations.
    List,
    /// One of your reserved shares (by token) or workload reservations (by ID).
    Get { token_or_id: String },
    /// Reserve a workload on a node, signed with your ed25519 secret key.
    Create {
        /// The node that runs it.
        #[arg(long)]
        node: String,
        /// container, volume, network, zdb, debug or kubernetes.
        #[arg(long = "type")]
        kind: String,
        /// The workload's fields as JSON, or @FILE to read them from a file.
        #[arg(long)]
        data: String,
        /// Seconds until it is decommissioned.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        duration: i64,
        /// Your secret key (from `tenure account key generate`).
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Delete a workload reservation before it expires (its node removes it).
    Delete { id: u64 },
    /// Report a node's result for a workload reservation (admin token).
    Result {
        id: u64,
        #[arg(value_enum)]
        state: ResultStateArg,
        /// What went wrong (with `error`).
        #[arg(long)]
        error: Option<String>,
        /// What the node made, as JSON.
        #[arg(long)]
        data: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ResultStateArg {
    Ok,
    Error,
    Deleted,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// The node's reservations from a cursor, one JSON object per line
    /// (admin token). The next cursor goes to stderr.
    Poll {
        node: String,
        /// Start at this cursor (the last seq seen + 1).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep polling (long polls) until Ctrl-C.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account (admin).
    Create {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List the accounts (admin).
    List,
    /// Show an account with its limits, usage and tokens (admin).
    Get { name: String },
    /// Show the account of the token in use, with its limits and usage.
    Whoami,
    /// Create, list and revoke an account's API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Change an account's limits (admin).
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// Register or rotate your account's ed25519 public key.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; prints it once on stdout (only its hash is kept).
    Create {
        account: String,
        /// A note to tell tokens apart (shown by `token list`).
        #[arg(long)]
        label: Option<String>,
    },
    /// List an account's live tokens (IDs and labels, never the tokens).
    List { account: String },
    /// Revoke a token by its ID: it authenticates nothing from now on.
    Revoke { account: String, id: String },
}

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Set some limits; the others stay as they are. -1 means unlimited.
    Set {
        account: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Register (or rotate to) an ed25519 public key: 32 bytes, standard base64.
    Set { public_key: String },
    /// Make an ed25519 key pair: the secret key goes to FILE (mode 0600),
    /// the public key is printed (register it with `account key set`).
    Generate { file: PathBuf },
}

/// Per-account limits; -1 means unlimited (the default of a new account).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct LimitArgs {
    /// Live leases at once.
    #[arg(long, value_parser = clap::value_parser!(i64).range(-1..))]
    pub max_leases: Option<i64>,
    /// Keys at once.
    #[arg(long, value_parser = clap::value_parser!(i64).range(-1..))]
    pub max_keys: Option<i64>,
    /// Reserved shares at once.
    #[arg(long, value_parser = clap::value_parser!(i64).range(-1..))]
    pub max_reserved_shares: Option<i64>,
    /// Services at once.
    #[arg(long, value_parser = clap::value_parser!(i64).range(-1..))]
    pub max_services: Option<i64>,
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
    /// The event log in PostgreSQL, shared by several nodes:
    /// `postgres://USER@HOST:PORT/DB[?schema=NAME]` (schema `tenure` by
    /// default). Without it the log is the embedded one in --data-dir, which
    /// then holds only this node's snapshots and admin token hash.
    #[arg(long, env = "TENURE_STORE", value_parser = parse_store)]
    pub store: Option<crate::store::PostgresTarget>,
    /// With --store: where the other nodes reach this one's HTTP API (they
    /// send it keep-alives while it runs the timers). Default: http:// and
    /// the --listen address.
    #[arg(long, env = "TENURE_ADVERTISE_URL", value_parser = parse_advertise_url)]
    pub advertise_url: Option<String>,
    /// Lease TTLs below this many seconds are raised to it.
    #[arg(long, default_value_t = ServerConfig::DEFAULT_MIN_TTL_S, value_parser = clap::value_parser!(i64).range(1..))]
    pub min_ttl: i64,
    /// Seconds an idle entity actor stays in memory.
    #[arg(long, default_value_t = ServerConfig::DEFAULT_PASSIVATE_AFTER_S, value_parser = clap::value_parser!(u64).range(1..))]
    pub passivate_after: u64,
    /// Threads for entity actors (default: half the cores, 1 to 4).
    #[arg(long)]
    pub actor_threads: Option<usize>,
    /// HTTP worker threads (default: half the cores, at least 1).
    #[arg(long)]
    pub http_workers: Option<usize>,
    /// Log lines for people or JSON for machines.
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// Require a bearer token on every /v1 and /v3 request (accounts and
    /// tokens). Without it the server has one `default` account and binds
    /// loopback addresses only.
    #[arg(long)]
    pub auth: bool,
    /// With --auth: the file holding the admin token. Without it, the first
    /// start generates one and prints it once.
    #[arg(long, requires = "auth")]
    pub admin_token_file: Option<PathBuf>,
    /// The frontend's domain: public shares are http://TOKEN.DOMAIN:PORT/.
    #[arg(long, default_value = ServerConfig::DEFAULT_DOMAIN)]
    pub domain: String,
    /// The frontend's public port, as it appears in share URLs.
    #[arg(long, default_value_t = ServerConfig::DEFAULT_FRONTEND_PORT)]
    pub frontend_port: u16,
    /// Where the data-plane proxy listens (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub proxy_listen: SocketAddr,
    /// Threads of the proxy (default: cores).
    #[arg(long)]
    pub proxy_threads: Option<usize>,
    /// Where etcd's gRPC API listens (etcdctl, clientv3); `off`: not served.
    #[arg(long, default_value = "127.0.0.1:2379", value_parser = parse_grpc_listen)]
    pub grpc_listen: GrpcListen,
    /// Where the proxy terminates TLS (needs --tls-cert and --tls-key).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub proxy_tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for --proxy-tls-listen.
    #[arg(long, requires = "proxy_tls_listen")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --proxy-tls-listen.
    #[arg(long, requires = "proxy_tls_listen")]
    pub tls_key: Option<PathBuf>,
    /// Snapshot the projections and key spaces after this many events
    /// (of the log, of a key space's stream), or after one event per 64
    /// bytes of the last snapshot if that is more.
    #[arg(long, default_value_t = crate::snapshot::SnapshotConfig::DEFAULT_EVERY_EVENTS, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every_events: u64,
    /// And after this many seconds, if anything changed (a large state:
    /// if one event per 64 bytes of its last snapshot came since).
    #[arg(long, default_value_t = crate::snapshot::SnapshotConfig::DEFAULT_EVERY.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every_s: u64,
    /// Start by folding the whole log, ignoring snapshots (they are still
    /// written).
    #[arg(long)]
    pub no_snapshot_restore: bool,
}

/// `--grpc-listen`: an address, or `off`.
#[derive(Clone, Debug)]
pub struct GrpcListen(pub Option<SocketAddr>);

fn parse_grpc_listen(s: &str) -> Result<GrpcListen, String> {
    if s == "off" {
        return Ok(GrpcListen(None));
    }
    s.parse()
        .map(|a| GrpcListen(Some(a)))
        .map_err(|e| format!("{e}: expected an address such as 127.0.0.1:2379, or off"))
}

/// `--store`: a PostgreSQL URL (the only shared store so far).
fn parse_store(url: &str) -> Result<crate::store::PostgresTarget, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("expected a PostgreSQL URL, postgres://USER@HOST:PORT/DB[?schema=NAME]".into());
    }
    crate::store::PostgresTarget::parse(url)
}

/// A test knob, not a setting: after the first chunk of a snapshot the
/// server creates this file and stops writing (so that a test can kill it
/// in the middle of a snapshot).
const SNAPSHOT_STALL_ENV: &str = "TENURE_TEST_SNAPSHOT_STALL";

/// Parses the process's arguments and runs them.
pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `verify` compares with a server only when one is named.
    let endpoint_named = !matches!(
        matches.value_source("endpoint"),
        None | Some(clap::parser::ValueSource::DefaultValue)
    );
    run(cli, endpoint_named)
}

/// Runs a parsed command line; `endpoint_named`: the endpoint was given
/// (flag or environment), not defaulted.
pub fn run(cli: Cli, endpoint_named: bool) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Store(StoreCommand::Copy { from, to }) => offline::store_copy(&from, &to),
        Command::Replay(args) => offline::replay(args),
        Command::Verify(args) => {
            let server = endpoint_named.then_some(cli.endpoint.as_str());
            offline::verify(args, server, cli.token.as_deref())
        }
        command => client::run(&cli.endpoint, cli.token.as_deref(), command),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    crate::logging::init(args.log_format);
    let mut config = ServerConfig::new(args.data_dir);
    config.store = args.store;
    config.advertise_url = args.advertise_url;
    config.listen = args.listen;
    config.min_ttl_s = args.min_ttl;
    config.passivate_after = Duration::from_secs(args.passivate_after);
    config.domain = args.domain;
    config.frontend_port = args.frontend_port;
    config.proxy_listen = Some(args.proxy_listen);
    config.grpc_listen = args.grpc_listen.0;
    if let Some(n) = args.proxy_threads {
        config.proxy_threads = n.max(1);
    }
    if let (Some(listen), Some(cert), Some(key)) = (args.proxy_tls_listen, args.tls_cert, args.tls_key) {
        config.proxy_tls = Some(crate::server::ProxyTls { listen, cert, key });
    }
    if let Some(n) = args.actor_threads {
        config.actor_threads = n.max(1);
    }
    if let Some(n) = args.http_workers {
        config.http_workers = n.max(1);
    }
    config.snapshots.every_events = args.snapshot_every_events;
    config.snapshots.every = Duration::from_secs(args.snapshot_every_s);
    config.snapshots.restore = !args.no_snapshot_restore;
    config.snapshots.stall_marker = std::env::var_os(SNAPSHOT_STALL_ENV).map(PathBuf::from);
    if args.auth {
        let admin_token = match args
            .admin_token_file
            .as_deref()
            .map(std::fs::read_to_string)
            .transpose()
        {
            Ok(token) => token,
            Err(e) => {
                eprintln!("Error: cannot read the admin token file: {e}");
                return ExitCode::FAILURE;
            }
        };
        config.auth = Some(crate::server::AuthConfig { admin_token });
    }
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
        let mut shutdown = Shutdown::install();
        let running = crate::server::start(config).await?;
        if let Some(token) = &running.generated_admin_token {
            // The one time the admin token is shown: on stdout, never in the log.
            println!("admin token (shown only this once; its hash is in the data directory): {token}");
        }
        if let Some(proxy) = running.proxy_addr {
            println!("tenure proxy listening on http://{proxy}");
        }
        if let Some(proxy) = running.proxy_tls_addr {
            println!("tenure proxy listening on https://{proxy}");
        }
        if let Some(grpc) = running.grpc_addr {
            println!("tenure gRPC listening on {grpc}");
        }
        // Tests and scripts read this line to learn the port.
        println!("tenure listening on http://{}", running.addr);
        tracing::info!(addr = %running.addr, "serving");
        shutdown.wait().await;
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

/// Ctrl-C or SIGTERM. The handlers are installed when this is created, so a
/// signal that arrives before [`Shutdown::wait`] is not lost (nor does it kill
/// the process with the default action).
pub(crate) struct Shutdown {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    /// Must run inside a tokio runtime.
    pub(crate) fn install() -> Shutdown {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signals = signal(SignalKind::interrupt())
                .and_then(|int| signal(SignalKind::terminate()).map(|term| (int, term)))
                .ok();
            Shutdown { signals }
        }
        #[cfg(not(unix))]
        Shutdown {}
    }

    pub(crate) async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// An `http://` or `https://` URL with a host.
fn parse_advertise_url(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("use http://HOST:PORT or https://HOST:PORT".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

//! `tenure replay` and `tenure verify`: they read a data directory's log
//! themselves (read-only, while a server runs or not), not through a
//! server; `verify --endpoint` also asks a server for its projections'
//! digests. Long runs draw a progress bar on stderr, hidden when stderr
//! is not a terminal.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tenure_events::ChainHead;

use super::{OutputFormat, ReplayArgs, ReplayPart, VerifyArgs};
use crate::history::replay::{Part, ReplayState, Until};
use crate::history::{self, ServerDigests, VerifyError};
use crate::store::{LogFile, PostgresLogReader, SqliteLogFile, StoreError};

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("Error: {message}");
    ExitCode::FAILURE
}

/// A progress bar over the log's positions, on stderr (drawn only on a
/// terminal).
fn progress(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {human_pos}/{human_len} events ({per_sec}, {eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

pub(super) fn replay(args: ReplayArgs) -> ExitCode {
    let until = match args.until.as_deref().map(Until::parse).transpose() {
        Ok(until) => until.unwrap_or(Until::End),
        Err(e) => return fail(e),
    };
    let parts: Vec<Part> = if args.what.contains(&ReplayPart::All) {
        Part::ALL.to_vec()
    } else {
        args.what
            .iter()
            .filter_map(|p| match p {
                ReplayPart::Leases => Some(Part::Leases),
                ReplayPart::Keys => Some(Part::Keys),
                ReplayPart::Accounts => Some(Part::Accounts),
                ReplayPart::Shares => Some(Part::Shares),
                ReplayPart::Workloads => Some(Part::Workloads),
                ReplayPart::Services => Some(Part::Services),
                ReplayPart::Routes => Some(Part::Routes),
                ReplayPart::All => None,
            })
            .collect()
    };
    let mut log = match open_log(&args.data_dir, args.store.as_ref()) {
        Ok(log) => log,
        Err(e) => return fail(e),
    };
    let head = match log.head() {
        Ok(head) => head.position,
        Err(e) => return fail(e),
    };
    if let Until::Position(p) = until {
        if p > head {
            return fail(format!("--until: the log ends at position {head}"));
        }
    }
    let bar = progress(
        match until {
            Until::Position(p) => p,
            _ => head,
        },
        "replaying",
    );
    let replayed = history::replay_log(log, until, &args.domain, |p| bar.set_position(p));
    bar.finish_and_clear();
    let replayed = match replayed {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    // The moment shown: the time asked for, else just after the last event.
    let at = match until {
        Until::Time(t) => t,
        _ => replayed.time.unwrap_or_else(Utc::now),
    };
    if replayed.undecodable > 0 {
        eprintln!(
            "warning: {} events did not decode and were left out (tenure verify names them)",
            replayed.undecodable
        );
    }
    let state = replayed.state(at, &parts);
    match args.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&state) {
            Ok(json) => println!("{json}"),
            Err(e) => return fail(format!("cannot write the state as JSON: {e}")),
        },
        OutputFormat::Table => print_state(&state),
    }
    ExitCode::SUCCESS
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The state as tables, one section per part.
fn print_state(state: &ReplayState) {
    println!("as of position {} ({})", state.position, time(&state.at));
    if let Some(leases) = &state.leases {
        println!("\nleases: {}", leases.len());
        for l in leases {
            let keys: Vec<String> = l.keys.iter().map(|k| k.to_string_lossy()).collect();
            println!(
                "  {:<10}  {}  TTL({}s)  remaining({}s)  {:<4}  keys([{}])",
                l.account,
                l.id,
                l.ttl,
                l.remaining,
                l.state,
                keys.join(" ")
            );
        }
    }
    if let Some(keyspaces) = &state.keys {
        println!("\nkeys: {}", keyspaces.iter().map(|k| k.keys.len()).sum::<usize>());
        for space in keyspaces {
            println!("  {} (revision {})", space.account, space.revision);
            for k in &space.keys {
                let lease = k.lease.map(|l| format!("  lease {l}")).unwrap_or_default();
                println!(
                    "    {} = {}  (created {}, modified {}, version {}){lease}",
                    k.key.to_string_lossy(),
                    k.value.to_string_lossy(),
                    k.create_revision,
                    k.mod_revision,
                    k.version
                );
            }
        }
    }
    if let Some(accounts) = &state.accounts {
        println!("\naccounts: {}", accounts.len());
        for a in accounts {
            let limits: Vec<String> = a.limits.named().iter().map(|(n, v)| format!("{n}={v}")).collect();
            println!("  {}  tokens={}  {}", a.name, a.tokens.len(), limits.join(" "));
        }
    }
    if let Some(shares) = &state.shares {
        println!("\nshares: {}", shares.len());
        for s in shares {
            let serving = if s.serving { "serving" } else { "idle" };
            println!(
                "  {}  {}  {}  {}  {serving}  grants={}",
                s.share.token,
                s.share.owner,
                crate::history::summary::word(&s.share.mode),
                s.share.target,
                s.share.grants.len()
            );
        }
    }
    if let Some(workloads) = &state.workloads {
        println!("\nworkload reservations: {}", workloads.len());
        for w in workloads {
            let to_delete = if w.to_delete.is_some() { "  to delete" } else { "" };
            let result = w
                .result
                .as_ref()
                .map(|r| format!("  result {}", crate::history::summary::word(&r.state)))
                .unwrap_or_default();
            println!(
                "  {}  {}  {}  node {}  expires {}{to_delete}{result}",
                w.id,
                w.owner,
                w.kind,
                w.node,
                time(&w.expires_at)
            );
        }
    }
    if let Some(services) = &state.services {
        println!("\nservices: {}", services.len());
        for s in services {
            println!("  {}  {}  {}", s.account, s.service.name, s.service.fqdn);
            for i in &s.instances {
                let live = if i.live { "live" } else { "dead" };
                println!(
                    "    {}  {}  lease {}  {live}",
                    i.instance.name, i.instance.address, i.instance.lease
                );
            }
        }
    }
    if let Some(routes) = &state.routes {
        println!("\nroutes: {}", routes.hosts.len());
        for (host, route) in &routes.hosts {
            let to = match route {
                tenure_projections::Route::Service { backends, .. } if backends.is_empty() => {
                    "(no live instance)".into()
                }
                tenure_projections::Route::Service { backends, .. } => backends.join(" "),
                tenure_projections::Route::Share { target: Some(t), .. } => t.clone(),
                tenure_projections::Route::Share { target: None, .. } => "(no live session)".into(),
            };
            println!("  {host} -> {to}");
        }
    }
}

pub(super) fn verify(args: VerifyArgs, server: Option<&str>, token: Option<&str>) -> ExitCode {
    let expect_head = match args.expect_head.as_deref().map(str::parse::<ChainHead>).transpose() {
        Ok(head) => head,
        Err(e) => return fail(format!("--expect-head: {e}")),
    };
    let digests = match server.map(|endpoint| fetch_digests(endpoint, token)).transpose() {
        Ok(digests) => digests,
        Err(e) => return fail(e),
    };
    let mut log = match open_log(&args.data_dir, args.store.as_ref()) {
        Ok(log) => log,
        Err(e) => return fail(e),
    };
    if !log.is_chained() {
        println!(
            "FAILED: {} predates the hash chain; start `tenure serve` on it once to chain it",
            log.describe()
        );
        return ExitCode::FAILURE;
    }
    let head = match log.head() {
        Ok(head) => head.position,
        Err(e) => return fail(e),
    };
    // A node's snapshots belong with an embedded log; against a shared
    // one, only the log itself (and a server's digests) are checked.
    let stored = match args.store {
        None => stored_snapshots(&args.data_dir),
        Some(_) => Ok(Vec::new()),
    };
    let snapshots = match stored {
        Ok(snapshots) => snapshots,
        Err(e) => return fail(e),
    };
    let bar = progress(head, "verifying");
    let report =
        history::verify_log_and_snapshots(log, expect_head, digests.as_ref(), snapshots, |p| bar.set_position(p));
    bar.finish_and_clear();
    match report {
        Ok(report) => {
            let head = report.verified.head;
            println!(
                "ok: {} events in {} streams, the chain is intact",
                head.position, report.verified.streams
            );
            println!("head: {head}");
            if let Some(expected) = expect_head {
                println!("the log reaches the expected head {expected}");
            }
            if !report.snapshots.is_empty() {
                let each: Vec<String> = report.snapshots.iter().map(|(n, p)| format!("{n} at {p}")).collect();
                println!("snapshots equal the log's fold at their position: {}", each.join(", "));
            }
            for (name, position, version) in &report.other_formats {
                println!(
                    "snapshot {name} at {position} is of format version {version}, not {}: not compared (servers ignore it)",
                    crate::snapshot::FORMAT_VERSION
                );
            }
            if let Some(digests) = &digests {
                println!(
                    "projections equal the server's at position {}: {}",
                    digests.position,
                    report.projections.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(VerifyError::Store(e)) => fail(e),
        Err(e) => {
            println!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tenure store copy --from LOG --to LOG`.
pub(super) fn store_copy(from: &str, to: &str) -> ExitCode {
    let target = |log: &str| -> Result<Option<crate::store::PostgresTarget>, String> {
        if log.starts_with("postgres://") || log.starts_with("postgresql://") {
            super::parse_store(log).map(Some)
        } else {
            Ok(None)
        }
    };
    let (from_store, to_store) = match (target(from), target(to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) => return fail(format!("--from: {e}")),
        (_, Err(e)) => return fail(format!("--to: {e}")),
    };
    let source = match open_log(std::path::Path::new(from), from_store.as_ref()) {
        Ok(log) => log,
        Err(e) => return fail(format!("--from: {e}")),
    };
    let destination = match to_store {
        Some(target) => crate::store::PostgresStore::open_target(target, None).map(crate::store::LogStore::Postgres),
        None => crate::store::SqliteStore::open(std::path::Path::new(to)).map(crate::store::LogStore::Embedded),
    };
    let destination = match destination {
        Ok(store) => store,
        Err(e) => return fail(format!("--to: {e}")),
    };
    let mut source = source;
    let total = match source.head() {
        Ok(head) => head.position,
        Err(e) => return fail(format!("--from: {e}")),
    };
    let bar = progress(total, "copying");
    let copied = crate::store::copy_log(source, &*destination.shared(), |p| bar.set_position(p));
    bar.finish_and_clear();
    destination.close();
    match copied {
        Ok(head) => {
            println!("copied {} events", head.position);
            println!("head: {head} (the same on both)");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// The log the offline tools read: the schema in PostgreSQL if `--store`
/// names one, else the data directory's file.
fn open_log(data_dir: &std::path::Path, store: Option<&crate::store::PostgresTarget>) -> Result<LogFile, StoreError> {
    match store {
        None => SqliteLogFile::open(data_dir).map(LogFile::from),
        Some(target) => PostgresLogReader::open(target).map(LogFile::from),
    }
}

/// The server's projection digests (`GET /v1/projections`, admin).
fn fetch_digests(endpoint: &str, token: Option<&str>) -> Result<ServerDigests, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    runtime.block_on(async {
        let client = super::client::Client::new(endpoint, token).map_err(|e| e.to_string())?;
        client
            .send::<ServerDigests>(client.http.get(client.url("/v1/projections")))
            .await
            .map_err(|e| format!("asking {endpoint} for its projections: {e}"))
    })
}

/// The snapshots stored in the data directory, each with its bytes (or why
/// they do not read back whole).
fn stored_snapshots(data_dir: &std::path::Path) -> Result<Vec<history::StoredSnapshot>, crate::store::StoreError> {
    let Some(file) = crate::snapshot::store::SnapshotFile::open_read_only(data_dir)? else {
        return Ok(Vec::new());
    };
    Ok(file
        .headers(None)?
        .into_iter()
        .map(|header| {
            let bytes = file.read(&header);
            history::StoredSnapshot { header, bytes }
        })
        .collect())
}

//! `tenure status`, `tenure events` and `tenure audit`: the log read through
//! the server (`/healthz`, `/v1/events`, `/v1/events/stream`, `/v1/audit`).

use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;

use super::client::{self, print, CliError, Client};
use super::{EventsArgs, OutputFormat};

/// How long `events --follow` waits before reconnecting to a server that
/// went away.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The events page size the CLI asks for.
const PAGE: u64 = 1000;

#[derive(Deserialize)]
struct Health {
    status: String,
    head: String,
}

pub(super) async fn status(client: &Client, output: OutputFormat) -> Result<ExitCode, CliError> {
    let health: serde_json::Value = client.send(client.http.get(client.url("/healthz"))).await?;
    if output == OutputFormat::Json {
        print(health.to_string());
        return Ok(ExitCode::SUCCESS);
    }
    let health: Health =
        serde_json::from_value(health).map_err(|e| CliError::Usage(format!("unexpected status: {e}")))?;
    print(format!("status: {}", health.status));
    print(format!("head: {}", health.head));
    Ok(ExitCode::SUCCESS)
}

/// An event as the server shows it; the rest of its fields pass through to
/// `-o json` untouched.
#[derive(Deserialize)]
struct EventLine {
    position: u64,
    time: chrono::DateTime<chrono::Utc>,
    account: String,
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    request_id: Option<String>,
    summary: String,
}

/// One line for people: position, time, account, stream, type, request
/// (its first 8 characters, enough to grep the server's log), summary.
fn line(event: &EventLine) -> String {
    let request = event.request_id.as_deref().map_or("-", |r| r.get(..8).unwrap_or(r));
    format!(
        "{:>8}  {}  {:<10}  {:<32}  {:<22}  {:<8}  {}",
        event.position,
        event.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        event.account,
        event.stream,
        event.event_type,
        request,
        event.summary
    )
}

fn show(raw: &serde_json::Value, output: OutputFormat) -> Result<(), CliError> {
    match output {
        OutputFormat::Json => print(raw.to_string()),
        OutputFormat::Table => {
            let event: EventLine = serde_json::from_value(raw.clone())
                .map_err(|e| CliError::Usage(format!("unexpected event from the server: {e}")))?;
            print(line(&event));
        }
    }
    Ok(())
}

impl EventsArgs {
    /// The filters as query parameters.
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let mut add = |name: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                query.push((name, v.clone()));
            }
        };
        add("stream", &self.stream);
        add("entity", &self.entity);
        add("kind", &self.kind);
        add("account", &self.account);
        add("since", &self.since);
        add("until", &self.until);
        if !self.types.is_empty() {
            query.push(("type", self.types.join(",")));
        }
        query
    }
}

#[derive(Deserialize)]
struct Page {
    events: Vec<serde_json::Value>,
    next: u64,
    head: u64,
}

pub(super) async fn events(client: &Client, args: EventsArgs) -> Result<ExitCode, CliError> {
    let mut shutdown = super::Shutdown::install();
    let mut left = args.limit;
    if left == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    // The history, a page at a time.
    let mut next = args.from.max(1);
    loop {
        let mut query = args.query();
        query.push(("from", next.to_string()));
        query.push(("limit", left.map_or(PAGE, |l| l.min(PAGE)).to_string()));
        let request = client.send::<Page>(client.http.get(client.url("/v1/events")).query(&query));
        let page = tokio::select! {
            page = request => page?,
            _ = shutdown.wait() => return Ok(ExitCode::SUCCESS),
        };
        for event in &page.events {
            show(event, args.output)?;
        }
        if let Some(l) = left.as_mut() {
            *l = l.saturating_sub(page.events.len() as u64);
            if *l == 0 {
                return Ok(ExitCode::SUCCESS);
            }
        }
        next = page.next;
        if next > page.head {
            break;
        }
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Then live, resuming after the last position looked at whenever the
    // connection drops.
    let mut last_seen = next - 1;
    loop {
        let request = client
            .http
            .get(client.url("/v1/events/stream"))
            .query(&args.query())
            .header("last-event-id", last_seen.to_string());
        let outcome = tokio::select! {
            outcome = follow(client, request, &mut last_seen, &mut left, args.output) => outcome,
            _ = shutdown.wait() => return Ok(ExitCode::SUCCESS),
        };
        match outcome {
            Ok(Followed::Done) => return Ok(ExitCode::SUCCESS),
            Ok(Followed::Dropped) | Err(CliError::Unreachable { .. }) => {
                eprintln!("the event stream ended; reconnecting from position {}", last_seen + 1);
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_AFTER) => {}
            _ = shutdown.wait() => return Ok(ExitCode::SUCCESS),
        }
    }
}

enum Followed {
    /// The limit was reached.
    Done,
    /// The server closed the stream (it stopped, or went away).
    Dropped,
}

/// Reads one live stream (Server-Sent Events: `id:` and `data:` lines, a
/// blank line ends a frame) until it ends.
async fn follow(
    client: &Client,
    request: reqwest::RequestBuilder,
    last_seen: &mut u64,
    left: &mut Option<u64>,
    output: OutputFormat,
) -> Result<Followed, CliError> {
    let unreachable = |e: reqwest::Error| CliError::Unreachable {
        endpoint: client.endpoint.clone(),
        reason: e.to_string(),
    };
    let mut response = request.send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        // The error body, read the way every other command reads it.
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        return Err(client::server_error(status, &body));
    }
    let mut pending: Vec<u8> = Vec::new();
    let (mut id, mut data): (Option<u64>, String) = (None, String::new());
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&raw);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                // The end of a frame.
                if let Some(position) = id.take() {
                    *last_seen = position;
                }
                if !data.is_empty() {
                    let event: serde_json::Value = serde_json::from_str(&data)
                        .map_err(|e| CliError::Usage(format!("unexpected event from the server: {e}")))?;
                    data.clear();
                    show(&event, output)?;
                    if let Some(l) = left.as_mut() {
                        *l = l.saturating_sub(1);
                        if *l == 0 {
                            return Ok(Followed::Done);
                        }
                    }
                }
            } else if let Some(value) = text.strip_prefix("id:") {
                id = value.trim().parse().ok();
            } else if let Some(value) = text.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
            // Comments (`:`) and other fields are ignored, as EventSource does.
        }
    }
    Ok(Followed::Dropped)
}

#[derive(Deserialize)]
struct AuditAnswer {
    entity: String,
    streams: Vec<String>,
    truncated: bool,
    events: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct AuditLine {
    #[serde(flatten)]
    event: EventLine,
    caused_by: Option<u64>,
}

pub(super) async fn audit(
    client: &Client,
    entity: &str,
    account: Option<&str>,
    output: OutputFormat,
) -> Result<ExitCode, CliError> {
    let mut query = vec![("entity", entity.to_owned())];
    if let Some(account) = account {
        query.push(("account", account.to_owned()));
    }
    let raw: serde_json::Value = client
        .send(client.http.get(client.url("/v1/audit")).query(&query))
        .await?;
    if output == OutputFormat::Json {
        print(raw.to_string());
        return Ok(ExitCode::SUCCESS);
    }
    let audit: AuditAnswer =
        serde_json::from_value(raw).map_err(|e| CliError::Usage(format!("unexpected audit from the server: {e}")))?;
    print(format!("{} ({})", audit.entity, audit.streams.join(", ")));
    for raw in audit.events {
        let entry: AuditLine = serde_json::from_value(raw)
            .map_err(|e| CliError::Usage(format!("unexpected event from the server: {e}")))?;
        match entry.caused_by {
            Some(cause) => print(format!("{}  (caused by {cause})", line(&entry.event))),
            None => print(line(&entry.event)),
        }
    }
    if audit.truncated {
        eprintln!("the story is longer than the server shows at once; see `tenure events` for the rest");
    }
    Ok(ExitCode::SUCCESS)
}

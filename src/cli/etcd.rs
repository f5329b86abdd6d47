//! The client commands that speak etcd's `/v3` gateway because `/v1` has no
//! counterpart: `watch` (a stream of a key's changes), printed as `etcdctl`
//! prints them.

use std::io::Write;
use std::process::ExitCode;

use base64::Engine;
use serde::Deserialize;

use super::client::{server_error, CliError, Client};
use crate::domain::keyspace::prefix_end;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Bytes from the gateway's base64 (absent: empty).
fn unb64(text: Option<&str>) -> Vec<u8> {
    text.and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .unwrap_or_default()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Kv {
    key: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Event {
    #[serde(rename = "type")]
    kind: Option<String>,
    kv: Kv,
    prev_kv: Option<Kv>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WatchResult {
    canceled: bool,
    cancel_reason: String,
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Line {
    result: Option<WatchResult>,
    error: Option<serde_json::Value>,
}

/// Prints one event as etcdctl does: its type, the key before (with
/// `--prev-kv`), the key after; each key on a line, its value on the next.
fn print_event(out: &mut impl Write, event: &Event) -> std::io::Result<()> {
    writeln!(out, "{}", event.kind.as_deref().unwrap_or("PUT"))?;
    for kv in event.prev_kv.iter().chain(std::iter::once(&event.kv)) {
        out.write_all(&unb64(kv.key.as_deref()))?;
        out.write_all(b"\n")?;
        out.write_all(&unb64(kv.value.as_deref()))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// `tenure watch KEY`: prints the key's (or prefix's) changes until the
/// server ends the watch or the command is stopped.
pub(super) async fn watch(
    client: &Client,
    key: &str,
    prefix: bool,
    rev: i64,
    prev_kv: bool,
) -> Result<ExitCode, CliError> {
    let range_end = if prefix {
        b64(&prefix_end(key.as_bytes()))
    } else {
        String::new()
    };
    let body = serde_json::json!({"create_request": {
        "key": b64(key.as_bytes()), "range_end": range_end, "start_revision": rev.to_string(), "prev_kv": prev_kv,
    }});
    let unreachable = |e: reqwest::Error| CliError::Unreachable {
        endpoint: client.endpoint.clone(),
        reason: e.to_string(),
    };
    let mut response = client
        .http
        .post(client.url("/v3/watch"))
        .json(&body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.map_err(unreachable)?;
        return Err(server_error(status, &body));
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut out = std::io::stdout();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line: Line = serde_json::from_slice(&line).map_err(|e| CliError::Server {
                status: 200,
                code: "bad_response".into(),
                message: format!("unexpected watch response: {e}"),
            })?;
            if let Some(error) = line.error {
                return Err(CliError::Usage(format!("watch failed: {error}")));
            }
            let Some(result) = line.result else { continue };
            for event in &result.events {
                let _ = print_event(&mut out, event);
            }
            if result.canceled {
                return Err(CliError::Usage(format!(
                    "watch is canceled by the server: {}",
                    result.cancel_reason
                )));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! zos reservations (`reservation ...`, `node poll`), and the shares
//! `reservation list` and `get` show beside them.

use std::process::ExitCode;

use serde::Deserialize;

use super::accounts::AccountView;
use super::shares::{session_state, ShareInfo, ShareList};
use super::{path_segment, print, CliError, Client};
use crate::cli::{ReservationCommand, ResultStateArg};

/// `reservation list`, `get`, `create`, `delete`, `result`.
pub(super) async fn reservation(client: &Client, command: ReservationCommand) -> Result<ExitCode, CliError> {
    let http = &client.http;
    match command {
        ReservationCommand::List => {
            let list: ShareList = client.send(http.get(client.url("/v1/shares"))).await?;
            for share in list.shares {
                print(format!(
                    "{} {} {} {} {}",
                    share.token,
                    share.mode,
                    share.backend_mode,
                    share.target,
                    session_state(&share)
                ));
            }
            let list: WorkloadList = client.send(http.get(client.url("/v1/reservations"))).await?;
            for w in list.reservations {
                print(workload_line(&w));
            }
            Ok(ExitCode::SUCCESS)
        }
        ReservationCommand::Get { token_or_id } if token_or_id.parse::<u64>().is_ok() => {
            let url = client.url(&format!("/v1/reservations/{token_or_id}"));
            let workload: serde_json::Value = client.send(http.get(url)).await?;
            print(serde_json::to_string_pretty(&workload).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        ReservationCommand::Get { token_or_id: token } => {
            let url = client.url(&format!("/v1/shares/{}", path_segment(&token)));
            let share: ShareInfo = client.send(http.get(url)).await?;
            print(format!("token: {}", share.token));
            print(format!("mode: {}", share.mode));
            print(format!("backend mode: {}", share.backend_mode));
            print(format!("target: {}", share.target));
            if let Some(frontend) = &share.frontend {
                print(format!("frontend: {frontend}"));
            }
            print(format!("session: {}", session_state(&share)));
            Ok(ExitCode::SUCCESS)
        }
        ReservationCommand::Create {
            node,
            kind,
            data,
            duration,
            key_file,
        } => {
            let data = read_json_arg("--data", &data)?;
            let key = read_secret_key(&key_file)?;
            let me: AccountView = client.send(http.get(client.url("/v1/account"))).await?;
            let created = chrono::Utc::now().timestamp();
            let signed = crate::domain::workload::Signed {
                node: node.clone(),
                owner: me
                    .name
                    .parse()
                    .map_err(|e: tenure_events::IdError| CliError::Usage(e.to_string()))?,
                kind: kind.clone(),
                data: data.clone(),
                created,
                duration_s: duration,
            };
            let signature = crate::domain::workload::sign(&signed, &key);
            let body = serde_json::json!({
                "node_id": node, "type": kind, "data": data, "created": created,
                "duration": duration, "signature": signature,
            });
            let w: WorkloadInfo = client
                .send(http.post(client.url("/v1/reservations")).json(&body))
                .await?;
            print(format!("reservation {} created for node '{}'", w.id, w.node_id));
            Ok(ExitCode::SUCCESS)
        }
        ReservationCommand::Delete { id } => {
            let w: WorkloadInfo = client
                .send(http.delete(client.url(&format!("/v1/reservations/{id}"))))
                .await?;
            print(format!("reservation {} is to be deleted by node '{}'", w.id, w.node_id));
            Ok(ExitCode::SUCCESS)
        }
        ReservationCommand::Result { id, state, error, data } => {
            let state = match state {
                ResultStateArg::Ok => "ok",
                ResultStateArg::Error => "error",
                ResultStateArg::Deleted => "deleted",
            };
            let data = data.as_deref().map(|d| read_json_arg("--data", d)).transpose()?;
            let body = serde_json::json!({
                "state": state, "error": error.unwrap_or_default(), "data": data.unwrap_or_default(),
            });
            let url = client.url(&format!("/v1/reservations/{id}/result"));
            let _: WorkloadInfo = client.send(http.put(url).json(&body)).await?;
            print(format!("result '{state}' recorded for reservation {id}"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Deserialize)]
struct WorkloadInfo {
    id: u64,
    node_id: String,
    #[serde(rename = "type")]
    kind: String,
    expires_at: String,
    to_delete: bool,
    #[serde(default)]
    result: Option<WorkloadResult>,
}

#[derive(Deserialize)]
struct WorkloadResult {
    state: String,
}

#[derive(Deserialize)]
struct WorkloadList {
    reservations: Vec<WorkloadInfo>,
}

fn workload_line(w: &WorkloadInfo) -> String {
    let state = if w.to_delete { "to-delete" } else { "active" };
    let result = w.result.as_ref().map_or("no result", |r| r.state.as_str());
    format!(
        "{} {} {} {state} expires {} {result}",
        w.id, w.kind, w.node_id, w.expires_at
    )
}

/// A JSON argument, or @FILE for a file holding it.
fn read_json_arg(flag: &str, arg: &str) -> Result<serde_json::Value, CliError> {
    let text = match arg.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("{flag}: cannot read {path}: {e}")))?
        }
        None => arg.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| CliError::Usage(format!("{flag}: not JSON: {e}")))
}

/// An ed25519 secret key file: the 32-byte seed in standard base64.
fn read_secret_key(path: &std::path::Path) -> Result<ed25519_dalek::SigningKey, CliError> {
    use base64::Engine;
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("--key-file: cannot read {}: {e}", path.display())))?;
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| CliError::Usage("--key-file: not a base64 ed25519 secret key (32 bytes)".into()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// `node poll`: one poll (answering at once), or with `follow` long polls
/// until Ctrl-C. Each reservation is one JSON line on stdout.
pub(super) async fn node_poll(client: &Client, node: &str, from: u64, follow: bool) -> Result<ExitCode, CliError> {
    #[derive(Deserialize)]
    struct Polled {
        reservations: Vec<serde_json::Value>,
        next: u64,
    }
    let mut shutdown = crate::cli::Shutdown::install();
    let mut cursor = from;
    loop {
        let timeout = if follow { 30 } else { 0 };
        let url = client.url(&format!("/v1/nodes/{}/reservations", path_segment(node)));
        let query = [("from", cursor.to_string()), ("timeout", timeout.to_string())];
        let request = client.send::<Polled>(client.http.get(url).query(&query));
        let polled = tokio::select! {
            polled = request => polled?,
            _ = shutdown.wait() => return Ok(ExitCode::SUCCESS),
        };
        for r in &polled.reservations {
            print(r.to_string());
        }
        cursor = polled.next;
        if !follow {
            eprintln!("next: {cursor}");
            return Ok(ExitCode::SUCCESS);
        }
    }
}

//! zrok's shares: `reserve`, `share reserved`, `access private`, `release`.

use std::process::ExitCode;

use serde::Deserialize;

use super::keys::HeldLease;
use super::{path_segment, print, CliError, Client};
use crate::cli::{output, BackendModeArg, ShareModeArg};

/// `reserve MODE TARGET`: the share's token and frontend.
pub(super) async fn reserve(
    client: &Client,
    mode: ShareModeArg,
    target: String,
    unique_name: Option<String>,
    backend_mode: BackendModeArg,
) -> Result<ExitCode, CliError> {
    let http = &client.http;
    let mode = match mode {
        ShareModeArg::Public => "public",
        ShareModeArg::Private => "private",
    };
    let backend_mode = match backend_mode {
        BackendModeArg::Proxy => "proxy",
        BackendModeArg::Web => "web",
    };
    let body = serde_json::json!({
        "mode": mode, "target": target, "unique_name": unique_name, "backend_mode": backend_mode,
    });
    let share: ShareInfo = client.send(http.post(client.url("/v1/shares")).json(&body)).await?;
    print(output::reserved_token(&share.token));
    if let Some(frontend) = &share.frontend {
        print(output::reserved_frontend(frontend));
    }
    Ok(ExitCode::SUCCESS)
}

/// `access private TOKEN`: a grant and the header to send with it.
pub(super) async fn access(client: &Client, token: &str) -> Result<ExitCode, CliError> {
    let http = &client.http;
    let url = client.url(&format!("/v1/shares/{}/access", path_segment(token)));
    let access: AccessInfo = client.send(http.post(url).json(&serde_json::json!({}))).await?;
    print(format!(
        "access granted to private share '{}' (grant '{}')",
        access.token, access.grant
    ));
    print(format!(
        "send '{}: {}' with each request to '{}'",
        access.header, access.secret, access.frontend
    ));
    Ok(ExitCode::SUCCESS)
}

/// `release TOKEN`.
pub(super) async fn release(client: &Client, token: &str) -> Result<ExitCode, CliError> {
    let http = &client.http;
    let url = client.url(&format!("/v1/shares/{}", path_segment(token)));
    let _: serde_json::Value = client.send(http.delete(url)).await?;
    print(output::released(token));
    Ok(ExitCode::SUCCESS)
}

#[derive(Deserialize)]
pub(super) struct ShareInfo {
    pub(super) token: String,
    pub(super) mode: String,
    pub(super) backend_mode: String,
    pub(super) target: String,
    pub(super) frontend: Option<String>,
    session: Option<SessionInfo>,
}

#[derive(Deserialize)]
struct SessionInfo {
    id: String,
    live: bool,
}

#[derive(Deserialize)]
pub(super) struct ShareList {
    pub(super) shares: Vec<ShareInfo>,
}

#[derive(Deserialize)]
struct AccessInfo {
    token: String,
    grant: String,
    secret: String,
    frontend: String,
    header: String,
}

#[derive(Deserialize)]
struct SessionStarted {
    session: String,
    target: String,
}

pub(super) fn session_state(share: &ShareInfo) -> String {
    match &share.session {
        Some(s) if s.live => format!("live session {}", s.id),
        Some(s) => format!("session {} (its lease ended)", s.id),
        None => "no session".into(),
    }
}

/// `share reserved`: grant a lease, start a session held by it, keep the
/// lease alive every TTL/3 until Ctrl-C (or SIGTERM), then end the session
/// and revoke the lease. If the session is ended elsewhere (released,
/// replaced), says so and exits 1.
pub(super) async fn share_reserved(
    client: &Client,
    token: &str,
    replace: bool,
    ttl: i64,
    web_listen: std::net::SocketAddr,
) -> Result<ExitCode, CliError> {
    let mut shutdown = crate::cli::Shutdown::install();
    let http = &client.http;
    let share_url = client.url(&format!("/v1/shares/{}", path_segment(token)));
    let share: ShareInfo = client.send(http.get(&share_url)).await?;
    // A web share is served by this process: its files, from here.
    let address = if share.backend_mode == "web" {
        let served = serve_files(std::path::Path::new(&share.target), web_listen)?;
        print(format!("serving the files of '{}' on http://{served}", share.target));
        Some(served.to_string())
    } else {
        None
    };
    let held = HeldLease::grant(client, ttl).await?;
    let lease = held.id;
    let sessions = client.url(&format!("/v1/shares/{}/sessions", path_segment(token)));
    let body = serde_json::json!({ "lease": lease, "replace": replace, "address": address });
    let started: SessionStarted = match client.send(http.post(&sessions).json(&body)).await {
        Ok(started) => started,
        Err(e) => {
            held.revoke(client).await;
            return Err(e);
        }
    };
    print(output::sharing_target(&started.target));
    match &share.frontend {
        Some(frontend) => print(format!("your share is served at '{frontend}'")),
        None => print(format!(
            "use this command to access your share: 'tenure access private {token}'"
        )),
    }
    let still_ours = || async {
        let current = client.send::<ShareInfo>(http.get(&share_url)).await;
        matches!(&current, Ok(share) if share.session.as_ref().is_some_and(|s| s.id == started.session))
    };
    if !held.keep_alive_until_stopped(client, &mut shutdown, still_ours).await {
        eprintln!("the session of share '{token}' ended (released, replaced, or its lease expired)");
        held.revoke(client).await;
        return Ok(ExitCode::FAILURE);
    }
    let stop_url = format!("{sessions}/{}", started.session);
    let _ = client.send::<serde_json::Value>(http.delete(stop_url)).await;
    held.revoke(client).await;
    print(format!("share '{token}' session ended; the reservation stays"));
    Ok(ExitCode::SUCCESS)
}

/// Serves the files under `dir` over HTTP on `listen`, from a thread of its
/// own, for as long as the process runs (a web share's backend: index.html
/// for directories that have one, a listing for the others). Answers the
/// bound address.
fn serve_files(dir: &std::path::Path, listen: std::net::SocketAddr) -> Result<std::net::SocketAddr, CliError> {
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "the share's directory {} is not a directory here",
            dir.display()
        )));
    }
    let dir = dir.to_path_buf();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<std::net::SocketAddr, String>>();
    std::thread::Builder::new()
        .name("tenure-web-share".into())
        .spawn(move || {
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new().service(
                    actix_files::Files::new("/", &dir)
                        .index_file("index.html")
                        .show_files_listing(),
                )
            })
            .workers(1)
            .disable_signals()
            .bind(listen);
            let server = match server {
                Ok(server) => server,
                Err(e) => {
                    let _ = bound_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = bound_tx.send(server.addrs().first().copied().ok_or_else(|| "no address".to_owned()));
            if let Err(e) = actix_rt::System::new().block_on(async move { server.run().await }) {
                eprintln!("serving the share's files stopped: {e}");
            }
        })
        .map_err(|e| CliError::Usage(format!("serving the share's files: {e}")))?;
    let bound = bound_rx
        .recv()
        .map_err(|_| CliError::Usage("serving the share's files: the server thread stopped".into()))?
        .map_err(|e| CliError::Usage(format!("serving the share's files on {listen}: {e}")))?;
    Ok(bound)
}

//! The client commands: HTTP calls to `/v1` and their etcdctl-style output.
//! This file holds the client and the dispatch; each group of commands has
//! a file of its own (`keys`, `accounts`, `shares`, `workloads`, `services`),
//! `etcd.rs` and `history.rs` beside it the etcdctl-like and history ones.

use std::io::Write;
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tenure_events::LeaseId;

use super::{AccessCommand, Command, NodeCommand, ShareCommand};

/// A failed client command, printed as `Error: ...` on stderr.
#[derive(Debug, thiserror::Error)]
pub(super) enum CliError {
    #[error("cannot reach tenure at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{message}{}", if *status == 401 { " (give a token with --token or TENURE_TOKEN)" } else { "" })]
    Server { status: u16, code: String, message: String },
    #[error("{0}")]
    Usage(String),
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) endpoint: String,
}

impl Client {
    /// A client of the server at `endpoint`, sending `token` if any.
    pub(super) fn new(endpoint: &str, token: Option<&str>) -> Result<Client, CliError> {
        Ok(Client {
            http: http_client(token)?,
            endpoint: endpoint.to_owned(),
        })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.trim_end_matches('/'))
    }

    pub(super) async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, CliError> {
        let unreachable = |e: reqwest::Error| CliError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| CliError::Server {
                status: status.as_u16(),
                code: "bad_response".into(),
                message: format!("unexpected response from the server: {e}"),
            });
        }
        Err(server_error(status, &body))
    }
}

/// The error a server answered with (its JSON body, or its status).
pub(super) fn server_error(status: reqwest::StatusCode, body: &[u8]) -> CliError {
    let error: Option<ErrorBody> = serde_json::from_slice(body).ok();
    match error {
        Some(e) => CliError::Server {
            status: status.as_u16(),
            code: e.code,
            message: e.message,
        },
        None => CliError::Server {
            status: status.as_u16(),
            code: "http".into(),
            message: format!("the server answered {status}"),
        },
    }
}

fn lease_id(raw: &str) -> Result<LeaseId, CliError> {
    raw.parse()
        .map_err(|e: tenure_events::IdError| CliError::Usage(e.to_string()))
}

fn not_found(e: &CliError, code: &str) -> bool {
    matches!(e, CliError::Server { status: 404, code: c, .. } if c == code)
}

/// An HTTP client that sends `token` as a bearer token on every request.
fn http_client(token: Option<&str>) -> Result<reqwest::Client, CliError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| CliError::Usage("the token must be visible ASCII without spaces".into()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .map_err(|e| CliError::Usage(format!("cannot build the HTTP client: {e}")))
}

/// Runs a client command.
pub fn run(endpoint: &str, token: Option<&str>, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the client runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match Client::new(endpoint, token) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(&client, command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(super) fn print(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

mod accounts;
mod keys;
mod services;
mod shares;
mod workloads;

pub(super) use keys::HeldLease;

async fn execute(client: &Client, command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Serve(_) | Command::Replay(_) | Command::Verify(_) | Command::Store(_) => {
            Err(CliError::Usage("this is not a client command".into()))
        }
        Command::Status { output } => super::history::status(client, output).await,
        Command::Events(args) => super::history::events(client, args).await,
        Command::Audit {
            entity,
            account,
            output,
        } => super::history::audit(client, &entity, account.as_deref(), output).await,
        Command::Lease(command) => keys::lease(client, command).await,
        Command::Put { key, value, lease } => keys::put(client, key, value, lease).await,
        Command::Get { key, prefix, limit } => keys::get(client, key, prefix, limit).await,
        Command::Del { key, prefix } => keys::del(client, key, prefix).await,
        Command::Account(command) => accounts::account(client, command).await,
        Command::Watch {
            key,
            prefix,
            rev,
            prev_kv,
        } => super::etcd::watch(client, &key, prefix, rev, prev_kv).await,
        Command::Txn => super::etcd::txn(client).await,
        Command::Lock { name, command, ttl } => super::etcd::lock(client, &name, &command, ttl).await,
        Command::Elect {
            name,
            proposal,
            listen,
            ttl,
        } => super::etcd::elect(client, &name, proposal.as_deref(), listen, ttl).await,
        Command::Reserve {
            mode,
            target,
            unique_name,
            backend_mode,
        } => shares::reserve(client, mode, target, unique_name, backend_mode).await,
        Command::Share(ShareCommand::Reserved {
            token,
            replace,
            ttl,
            web_listen,
        }) => shares::share_reserved(client, &token, replace, ttl, web_listen).await,
        Command::Access(AccessCommand::Private { token }) => shares::access(client, &token).await,
        Command::Release { token } => shares::release(client, &token).await,
        Command::Reservation(command) => workloads::reservation(client, command).await,
        Command::Node(NodeCommand::Poll { node, from, follow }) => {
            workloads::node_poll(client, &node, from, follow).await
        }
        Command::Service(command) => services::service(client, command).await,
        Command::Instance(command) => services::instance(client, command).await,
        Command::Deploy {
            name,
            service,
            port,
            address,
            ttl,
            detach,
        } => services::deploy(client, name, service, port, address, ttl, detach).await,
    }
}

fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

//! The client commands: HTTP calls to `/v1` and their etcdctl-style output.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tenure_events::{Bytes, LeaseId};

use super::output;
use super::{
    AccessCommand, AccountCommand, BackendModeArg, Command, InstanceCommand, KeyCommand, LeaseCommand, LimitArgs,
    LimitsCommand, NodeCommand, ReservationCommand, ResultStateArg, ServiceCommand, ShareCommand, ShareModeArg,
    TokenCommand,
};

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

#[derive(Deserialize)]
struct LeaseTtl {
    id: LeaseId,
    ttl: i64,
}

#[derive(Deserialize)]
struct LeaseView {
    id: LeaseId,
    granted_ttl: i64,
    ttl: i64,
    #[serde(default)]
    keys: Option<Vec<Bytes>>,
}

#[derive(Deserialize)]
struct LeaseList {
    leases: Vec<LeaseRef>,
}

#[derive(Deserialize)]
struct LeaseRef {
    id: LeaseId,
}

#[derive(Deserialize)]
struct KeyView {
    key: Bytes,
    value: Bytes,
}

#[derive(Deserialize)]
struct KeyList {
    kvs: Vec<KeyView>,
}

#[derive(Deserialize)]
struct Deleted {
    deleted: usize,
}

#[derive(Deserialize)]
struct Revision {
    #[allow(dead_code)]
    revision: i64,
}

async fn execute(client: &Client, command: Command) -> Result<ExitCode, CliError> {
    let http = &client.http;
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
        Command::Lease(LeaseCommand::Grant { ttl, id }) => {
            let id = id.as_deref().map(lease_id).transpose()?;
            let body = serde_json::json!({ "ttl": ttl, "id": id });
            let granted: LeaseTtl = client.send(http.post(client.url("/v1/leases")).json(&body)).await?;
            print(output::granted(granted.id, granted.ttl));
            Ok(ExitCode::SUCCESS)
        }
        Command::Lease(LeaseCommand::Revoke { id }) => {
            let id = lease_id(&id)?;
            let _: serde_json::Value = client
                .send(http.delete(client.url(&format!("/v1/leases/{id}"))))
                .await?;
            print(output::revoked(id));
            Ok(ExitCode::SUCCESS)
        }
        Command::Lease(LeaseCommand::KeepAlive { id, once }) => keep_alive(client, lease_id(&id)?, once).await,
        Command::Lease(LeaseCommand::Timetolive { id, keys }) => {
            let id = lease_id(&id)?;
            let url = client.url(&format!("/v1/leases/{id}?keys={keys}"));
            match client.send::<LeaseView>(http.get(url)).await {
                Ok(view) => {
                    let names: Option<Vec<String>> =
                        view.keys.map(|ks| ks.iter().map(Bytes::to_string_lossy).collect());
                    print(output::time_to_live(
                        view.id,
                        view.granted_ttl,
                        view.ttl,
                        names.as_deref(),
                    ));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if not_found(&e, "lease_not_found") => {
                    print(output::already_expired(id));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e),
            }
        }
        Command::Lease(LeaseCommand::List) => {
            let list: LeaseList = client.send(http.get(client.url("/v1/leases"))).await?;
            let ids: Vec<LeaseId> = list.leases.into_iter().map(|l| l.id).collect();
            print(output::lease_list(&ids));
            Ok(ExitCode::SUCCESS)
        }
        Command::Put { key, value, lease } => {
            let lease = lease.as_deref().map(lease_id).transpose()?;
            let body = serde_json::json!({ "value": value, "lease": lease });
            let _: Revision = client
                .send(http.put(client.url("/v1/keys")).query(&[("key", &key)]).json(&body))
                .await?;
            print("OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::Get { key, prefix, limit } => {
            let kvs = if prefix {
                let query = [("prefix", key), ("limit", limit.to_string())];
                client
                    .send::<KeyList>(http.get(client.url("/v1/keys")).query(&query))
                    .await?
                    .kvs
            } else {
                match client
                    .send::<KeyView>(http.get(client.url("/v1/keys")).query(&[("key", &key)]))
                    .await
                {
                    Ok(kv) => vec![kv],
                    Err(e) if not_found(&e, "key_not_found") => Vec::new(),
                    Err(e) => return Err(e),
                }
            };
            let mut out = std::io::stdout().lock();
            for kv in kvs {
                let _ = out.write_all(kv.key.as_slice());
                let _ = out.write_all(b"\n");
                let _ = out.write_all(kv.value.as_slice());
                let _ = out.write_all(b"\n");
            }
            let _ = out.flush();
            Ok(ExitCode::SUCCESS)
        }
        Command::Del { key, prefix } => {
            let param = if prefix { "prefix" } else { "key" };
            let deleted: Deleted = client
                .send(http.delete(client.url("/v1/keys")).query(&[(param, &key)]))
                .await?;
            print(deleted.deleted.to_string());
            Ok(ExitCode::SUCCESS)
        }
        Command::Account(command) => account(client, command).await,
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
        } => {
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
        Command::Share(ShareCommand::Reserved {
            token,
            replace,
            ttl,
            web_listen,
        }) => share_reserved(client, &token, replace, ttl, web_listen).await,
        Command::Access(AccessCommand::Private { token }) => {
            let url = client.url(&format!("/v1/shares/{}/access", path_segment(&token)));
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
        Command::Release { token } => {
            let url = client.url(&format!("/v1/shares/{}", path_segment(&token)));
            let _: serde_json::Value = client.send(http.delete(url)).await?;
            print(output::released(&token));
            Ok(ExitCode::SUCCESS)
        }
        Command::Reservation(ReservationCommand::List) => {
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
        Command::Reservation(ReservationCommand::Get { token_or_id }) if token_or_id.parse::<u64>().is_ok() => {
            let url = client.url(&format!("/v1/reservations/{token_or_id}"));
            let workload: serde_json::Value = client.send(http.get(url)).await?;
            print(serde_json::to_string_pretty(&workload).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Command::Reservation(ReservationCommand::Get { token_or_id: token }) => {
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
        Command::Reservation(ReservationCommand::Create {
            node,
            kind,
            data,
            duration,
            key_file,
        }) => {
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
        Command::Reservation(ReservationCommand::Delete { id }) => {
            let w: WorkloadInfo = client
                .send(http.delete(client.url(&format!("/v1/reservations/{id}"))))
                .await?;
            print(format!("reservation {} is to be deleted by node '{}'", w.id, w.node_id));
            Ok(ExitCode::SUCCESS)
        }
        Command::Reservation(ReservationCommand::Result { id, state, error, data }) => {
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
        Command::Node(NodeCommand::Poll { node, from, follow }) => node_poll(client, &node, from, follow).await,
        Command::Service(command) => service(client, command).await,
        Command::Instance(InstanceCommand::List) => {
            let list: InstanceList = client.send(http.get(client.url("/v1/instances"))).await?;
            for i in list.instances {
                let state = if i.live { "live" } else { "dead" };
                print(format!("{} {} {} {state}", i.name, i.service, i.address));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Instance(InstanceCommand::Rm { name }) => {
            let url = client.url(&format!("/v1/instances/{}", path_segment(&name)));
            let removed: InstanceRemoved = client.send(http.delete(url)).await?;
            print(format!("instance '{name}' removed"));
            if let Some(service) = removed.service_deleted {
                print(format!("service '{service}' removed with its last instance"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy {
            name,
            service,
            port,
            address,
            ttl,
            detach,
        } => deploy(client, name, service, port, address, ttl, detach).await,
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

/// Writes a new secret key to `path` (owner-only) and answers the public key.
fn generate_key(path: &std::path::Path) -> Result<String, CliError> {
    use base64::Engine;
    use std::io::Write;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| CliError::Usage(format!("the OS random source failed: {e}")))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", path.display())))?;
    writeln!(file, "{}", b64.encode(seed))
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    Ok(b64.encode(key.verifying_key().to_bytes()))
}

/// `node poll`: one poll (answering at once), or with `follow` long polls
/// until Ctrl-C. Each reservation is one JSON line on stdout.
async fn node_poll(client: &Client, node: &str, from: u64, follow: bool) -> Result<ExitCode, CliError> {
    #[derive(Deserialize)]
    struct Polled {
        reservations: Vec<serde_json::Value>,
        next: u64,
    }
    let mut shutdown = super::Shutdown::install();
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

#[derive(Deserialize)]
struct PortInfo {
    port: u16,
    destination_port: u16,
    handlers: Vec<String>,
}

#[derive(Deserialize)]
struct InstanceInfo {
    name: String,
    service: String,
    address: String,
    live: bool,
}

#[derive(Deserialize)]
struct ServiceInfo {
    uuid: String,
    name: String,
    fqdn: String,
    ports: Vec<PortInfo>,
    #[serde(default)]
    instances: Vec<InstanceInfo>,
}

#[derive(Deserialize)]
struct ServiceList {
    services: Vec<ServiceInfo>,
}

#[derive(Deserialize)]
struct InstanceList {
    instances: Vec<InstanceInfo>,
}

#[derive(Deserialize)]
struct InstanceRemoved {
    service_deleted: Option<String>,
}

#[derive(Deserialize)]
struct Deployed {
    service: String,
    url: String,
}

fn ports_line(ports: &[PortInfo]) -> String {
    ports
        .iter()
        .map(|p| format!("{}:{}/{}", p.port, p.destination_port, p.handlers.join("+")))
        .collect::<Vec<_>>()
        .join(",")
}

async fn service(client: &Client, command: ServiceCommand) -> Result<ExitCode, CliError> {
    let http = &client.http;
    match command {
        ServiceCommand::Create {
            name,
            ports,
            soft_limit,
            hard_limit,
        } => {
            let body = serde_json::json!({
                "name": name, "ports": ports, "soft_limit": soft_limit, "hard_limit": hard_limit,
            });
            let s: ServiceInfo = client.send(http.post(client.url("/v1/services")).json(&body)).await?;
            print(format!("uuid: {}", s.uuid));
            print(format!("name: {}", s.name));
            print(format!("fqdn: {}", s.fqdn));
        }
        ServiceCommand::List => {
            let list: ServiceList = client.send(http.get(client.url("/v1/services"))).await?;
            for s in list.services {
                let live = s.instances.iter().filter(|i| i.live).count();
                print(format!(
                    "{} {} {} instances={live}/{}",
                    s.name,
                    s.fqdn,
                    ports_line(&s.ports),
                    s.instances.len()
                ));
            }
        }
        ServiceCommand::Get { name } => {
            let url = client.url(&format!("/v1/services/{}", path_segment(&name)));
            let s: ServiceInfo = client.send(http.get(url)).await?;
            print(format!("uuid: {}", s.uuid));
            print(format!("name: {}", s.name));
            print(format!("fqdn: {}", s.fqdn));
            print(format!("ports: {}", ports_line(&s.ports)));
            for i in s.instances {
                let state = if i.live { "live" } else { "dead" };
                print(format!("instance: {} {} {state}", i.name, i.address));
            }
        }
        ServiceCommand::Rm { name, force } => {
            let url = client.url(&format!("/v1/services/{}", path_segment(&name)));
            let _: serde_json::Value = client.send(http.delete(url).query(&[("force", force)])).await?;
            print(format!("service '{name}' removed"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `deploy`: grant a lease, attach the instance, keep the lease alive until
/// Ctrl-C, then remove the instance (and an automatic service with it).
async fn deploy(
    client: &Client,
    name: String,
    service: Option<String>,
    ports: Vec<String>,
    address: String,
    ttl: i64,
    detach: bool,
) -> Result<ExitCode, CliError> {
    let mut shutdown = super::Shutdown::install();
    let http = &client.http;
    let held = HeldLease::grant(client, ttl).await?;
    let lease = held.id;
    let body = serde_json::json!({
        "name": name, "service": service, "ports": ports, "address": address, "lease": lease,
    });
    let deployed: Deployed = match client.send(http.post(client.url("/v1/instances")).json(&body)).await {
        Ok(deployed) => deployed,
        Err(e) => {
            held.revoke(client).await;
            return Err(e);
        }
    };
    print(format!("instance '{name}' attached to service '{}'", deployed.service));
    print(format!("url: {}", deployed.url));
    if detach {
        print(format!(
            "lease {lease} keeps it attached; keep it alive with `tenure lease keep-alive {lease}`"
        ));
        return Ok(ExitCode::SUCCESS);
    }
    if !held
        .keep_alive_until_stopped(client, &mut shutdown, || async { true })
        .await
    {
        eprintln!("the lease of instance '{name}' ended; it no longer gets traffic");
        return Ok(ExitCode::FAILURE);
    }
    let url = client.url(&format!("/v1/instances/{}", path_segment(&name)));
    let removed: Result<InstanceRemoved, CliError> = client.send(http.delete(url)).await;
    held.revoke(client).await;
    print(format!("instance '{name}' removed"));
    if let Ok(InstanceRemoved {
        service_deleted: Some(service),
    }) = removed
    {
        print(format!("service '{service}' removed with its last instance"));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Deserialize)]
struct ShareInfo {
    token: String,
    mode: String,
    backend_mode: String,
    target: String,
    frontend: Option<String>,
    session: Option<SessionInfo>,
}

#[derive(Deserialize)]
struct SessionInfo {
    id: String,
    live: bool,
}

#[derive(Deserialize)]
struct ShareList {
    shares: Vec<ShareInfo>,
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

fn session_state(share: &ShareInfo) -> String {
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
async fn share_reserved(
    client: &Client,
    token: &str,
    replace: bool,
    ttl: i64,
    web_listen: std::net::SocketAddr,
) -> Result<ExitCode, CliError> {
    let mut shutdown = super::Shutdown::install();
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

/// A lease a long-running command (`share reserved`, `deploy`) holds.
pub(super) struct HeldLease {
    pub(super) id: LeaseId,
    ttl: i64,
}

impl HeldLease {
    pub(super) async fn grant(client: &Client, ttl: i64) -> Result<HeldLease, CliError> {
        let body = serde_json::json!({ "ttl": ttl });
        let granted: LeaseTtl = client
            .send(client.http.post(client.url("/v1/leases")).json(&body))
            .await?;
        Ok(HeldLease {
            id: granted.id,
            ttl: granted.ttl,
        })
    }

    /// How often to renew it: a third of its TTL.
    pub(super) fn renew_every(&self) -> Duration {
        Duration::from_millis((self.ttl.max(1) as u64) * 1000 / 3)
    }

    /// Revokes it; a lease already gone is fine.
    pub(super) async fn revoke(&self, client: &Client) {
        let url = client.url(&format!("/v1/leases/{}", self.id));
        let _ = client.send::<serde_json::Value>(client.http.delete(url)).await;
    }

    /// Keeps it alive every TTL/3 until Ctrl-C or SIGTERM (answers true), or
    /// until it, or what it holds (`still_held`), is lost (answers false).
    pub(super) async fn keep_alive_until_stopped<F, Fut>(
        &self,
        client: &Client,
        shutdown: &mut super::Shutdown,
        mut still_held: F,
    ) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let url = client.url(&format!("/v1/leases/{}/keepalive", self.id));
        let every = self.renew_every();
        loop {
            tokio::select! {
                _ = shutdown.wait() => return true,
                _ = tokio::time::sleep(every) => {}
            }
            let renewed = client.send::<LeaseTtl>(client.http.post(&url)).await.is_ok();
            if !renewed || !still_held().await {
                return false;
            }
        }
    }
}

#[derive(Deserialize)]
struct AccountView {
    name: String,
    limits: tenure_events::Limits,
    public_key: Option<String>,
    #[serde(default)]
    tokens: Vec<TokenView>,
    #[serde(default)]
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct UsageView {
    leases: usize,
    keys: usize,
}

#[derive(Deserialize)]
struct TokenView {
    id: String,
    label: Option<String>,
    created_at: String,
}

#[derive(Deserialize)]
struct AccountList {
    accounts: Vec<AccountView>,
}

#[derive(Deserialize)]
struct TokenList {
    tokens: Vec<TokenView>,
}

#[derive(Deserialize)]
struct Issued {
    id: String,
    token: String,
}

fn limits_body(limits: LimitArgs) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    for (name, value) in [
        ("max_leases", limits.max_leases),
        ("max_keys", limits.max_keys),
        ("max_reserved_shares", limits.max_reserved_shares),
        ("max_services", limits.max_services),
    ] {
        if let Some(value) = value {
            body.insert(name.into(), value.into());
        }
    }
    serde_json::Value::Object(body)
}

/// `max_leases=2 max_keys=-1 ...`.
fn limits_line(limits: &tenure_events::Limits) -> String {
    limits
        .named()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_account(view: &AccountView) {
    print(format!("name: {}", view.name));
    print(format!("limits: {}", limits_line(&view.limits)));
    if let Some(usage) = &view.usage {
        print(format!("usage: leases={} keys={}", usage.leases, usage.keys));
    }
    print(format!("public key: {}", view.public_key.as_deref().unwrap_or("none")));
    print(format!("tokens: {}", view.tokens.len()));
}

fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn account(client: &Client, command: AccountCommand) -> Result<ExitCode, CliError> {
    let http = &client.http;
    let account_url = |name: &str, rest: &str| client.url(&format!("/v1/accounts/{}{rest}", path_segment(name)));
    match command {
        AccountCommand::Create { name, limits } => {
            let body = serde_json::json!({ "name": name, "limits": limits_body(limits) });
            let view: AccountView = client.send(http.post(client.url("/v1/accounts")).json(&body)).await?;
            print(format!("account '{}' created", view.name));
        }
        AccountCommand::List => {
            let list: AccountList = client.send(http.get(client.url("/v1/accounts"))).await?;
            for a in list.accounts {
                print(format!(
                    "{} {} tokens={}",
                    a.name,
                    limits_line(&a.limits),
                    a.tokens.len()
                ));
            }
        }
        AccountCommand::Get { name } => {
            let view: AccountView = client.send(http.get(account_url(&name, ""))).await?;
            print_account(&view);
        }
        AccountCommand::Whoami => {
            let view: AccountView = client.send(http.get(client.url("/v1/account"))).await?;
            print_account(&view);
        }
        AccountCommand::Token(TokenCommand::Create { account, label }) => {
            let body = serde_json::json!({ "label": label });
            let issued: Issued = client
                .send(http.post(account_url(&account, "/tokens")).json(&body))
                .await?;
            // The token alone on stdout, for `export TENURE_TOKEN=$(...)`.
            print(&issued.token);
            eprintln!(
                "token '{}' created for account '{account}'; it is shown only this once",
                issued.id
            );
        }
        AccountCommand::Token(TokenCommand::List { account }) => {
            let list: TokenList = client.send(http.get(account_url(&account, "/tokens"))).await?;
            for t in list.tokens {
                print(format!("{} {} {}", t.id, t.created_at, t.label.unwrap_or_default()).trim_end());
            }
        }
        AccountCommand::Token(TokenCommand::Revoke { account, id }) => {
            let url = account_url(&account, &format!("/tokens/{}", path_segment(&id)));
            let _: serde_json::Value = client.send(http.delete(url)).await?;
            print(format!("token '{id}' of account '{account}' revoked"));
        }
        AccountCommand::Limits(LimitsCommand::Set { account, limits }) => {
            let body = limits_body(limits);
            let view: AccountView = client
                .send(http.put(account_url(&account, "/limits")).json(&body))
                .await?;
            print(format!("account '{}' limits: {}", view.name, limits_line(&view.limits)));
        }
        AccountCommand::Key(KeyCommand::Generate { file }) => {
            let public_key = generate_key(&file)?;
            print(format!("secret key written to {}", file.display()));
            print(format!("public key: {public_key}"));
            print(format!("register it with: tenure account key set {public_key}"));
        }
        AccountCommand::Key(KeyCommand::Set { public_key }) => {
            let body = serde_json::json!({ "public_key": public_key });
            let view: AccountView = client.send(http.put(client.url("/v1/account/key")).json(&body)).await?;
            print(format!("public key registered for account '{}'", view.name));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps a lease alive every TTL/3 until Ctrl-C (or once), printing each
/// renewal as etcdctl does. Ends with an error when the lease is gone.
async fn keep_alive(client: &Client, id: LeaseId, once: bool) -> Result<ExitCode, CliError> {
    let url = client.url(&format!("/v1/leases/{id}/keepalive"));
    let mut shutdown = super::Shutdown::install();
    loop {
        let renewed = client.send::<LeaseTtl>(client.http.post(&url)).await;
        let ttl = match renewed {
            Ok(r) => r.ttl,
            Err(e) if not_found(&e, "lease_not_found") => {
                eprintln!("{}", output::keep_alive_ended(id));
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => return Err(e),
        };
        print(output::kept_alive(id, ttl));
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        let every = Duration::from_millis((ttl.max(1) as u64) * 1000 / 3);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return Ok(ExitCode::SUCCESS),
        }
    }
}

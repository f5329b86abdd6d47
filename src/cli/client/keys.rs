//! Leases and keys: `lease ...`, `put`, `get`, `del`, and the lease a
//! long-running command holds.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;
use tenure_events::{Bytes, LeaseId};

use super::{lease_id, not_found, print, CliError, Client};
use crate::cli::{output, LeaseCommand};

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

/// `lease grant`, `revoke`, `keep-alive`, `timetolive`, `list`.
pub(super) async fn lease(client: &Client, command: LeaseCommand) -> Result<ExitCode, CliError> {
    let http = &client.http;
    match command {
        LeaseCommand::Grant { ttl, id } => {
            let id = id.as_deref().map(lease_id).transpose()?;
            let body = serde_json::json!({ "ttl": ttl, "id": id });
            let granted: LeaseTtl = client.send(http.post(client.url("/v1/leases")).json(&body)).await?;
            print(output::granted(granted.id, granted.ttl));
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Revoke { id } => {
            let id = lease_id(&id)?;
            let _: serde_json::Value = client
                .send(http.delete(client.url(&format!("/v1/leases/{id}"))))
                .await?;
            print(output::revoked(id));
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::KeepAlive { id, once } => keep_alive(client, lease_id(&id)?, once).await,
        LeaseCommand::Timetolive { id, keys } => {
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
        LeaseCommand::List => {
            let list: LeaseList = client.send(http.get(client.url("/v1/leases"))).await?;
            let ids: Vec<LeaseId> = list.leases.into_iter().map(|l| l.id).collect();
            print(output::lease_list(&ids));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `put KEY VALUE [--lease ID]`.
pub(super) async fn put(
    client: &Client,
    key: String,
    value: String,
    lease: Option<String>,
) -> Result<ExitCode, CliError> {
    let http = &client.http;
    let lease = lease.as_deref().map(lease_id).transpose()?;
    let body = serde_json::json!({ "value": value, "lease": lease });
    let _: Revision = client
        .send(http.put(client.url("/v1/keys")).query(&[("key", &key)]).json(&body))
        .await?;
    print("OK");
    Ok(ExitCode::SUCCESS)
}

/// `get KEY [--prefix] [--limit N]`: key and value lines, as etcdctl.
pub(super) async fn get(client: &Client, key: String, prefix: bool, limit: usize) -> Result<ExitCode, CliError> {
    let http = &client.http;
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

/// `del KEY [--prefix]`: the number of keys deleted.
pub(super) async fn del(client: &Client, key: String, prefix: bool) -> Result<ExitCode, CliError> {
    let http = &client.http;
    let param = if prefix { "prefix" } else { "key" };
    let deleted: Deleted = client
        .send(http.delete(client.url("/v1/keys")).query(&[(param, &key)]))
        .await?;
    print(deleted.deleted.to_string());
    Ok(ExitCode::SUCCESS)
}

/// A lease a long-running command (`share reserved`, `deploy`) holds.
pub(in crate::cli) struct HeldLease {
    pub(in crate::cli) id: LeaseId,
    ttl: i64,
}

impl HeldLease {
    pub(in crate::cli) async fn grant(client: &Client, ttl: i64) -> Result<HeldLease, CliError> {
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
    pub(in crate::cli) fn renew_every(&self) -> Duration {
        Duration::from_millis((self.ttl.max(1) as u64) * 1000 / 3)
    }

    /// Revokes it; a lease already gone is fine.
    pub(in crate::cli) async fn revoke(&self, client: &Client) {
        let url = client.url(&format!("/v1/leases/{}", self.id));
        let _ = client.send::<serde_json::Value>(client.http.delete(url)).await;
    }

    /// Keeps it alive every TTL/3 until Ctrl-C or SIGTERM (answers true), or
    /// until it, or what it holds (`still_held`), is lost (answers false).
    pub(in crate::cli) async fn keep_alive_until_stopped<F, Fut>(
        &self,
        client: &Client,
        shutdown: &mut crate::cli::Shutdown,
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

/// Keeps a lease alive every TTL/3 until Ctrl-C (or once), printing each
/// renewal as etcdctl does. Ends with an error when the lease is gone.
async fn keep_alive(client: &Client, id: LeaseId, once: bool) -> Result<ExitCode, CliError> {
    let url = client.url(&format!("/v1/leases/{id}/keepalive"));
    let mut shutdown = crate::cli::Shutdown::install();
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

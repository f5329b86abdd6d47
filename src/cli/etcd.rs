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

/// A `/v3/watch` being read, one answer at a time.
struct WatchStream {
    response: reqwest::Response,
    pending: Vec<u8>,
    endpoint: String,
}

impl WatchStream {
    async fn open(client: &Client, body: &serde_json::Value) -> Result<WatchStream, CliError> {
        let response = client
            .http
            .post(client.url("/v3/watch"))
            .json(body)
            .send()
            .await
            .map_err(|e| unreachable(client, e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.map_err(|e| unreachable(client, e))?;
            return Err(server_error(status, &body));
        }
        Ok(WatchStream {
            response,
            pending: Vec::new(),
            endpoint: client.endpoint.clone(),
        })
    }

    /// The next answer; `None` once the server ended the watch.
    async fn next(&mut self) -> Result<Option<WatchResult>, CliError> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
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
                match line.result {
                    Some(result) => return Ok(Some(result)),
                    None => continue,
                }
            }
            let chunk = self.response.chunk().await.map_err(|e| CliError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })?;
            match chunk {
                Some(chunk) => self.pending.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }

    /// Waits for the first answer with events; `false` if the watch ended.
    async fn changed(&mut self) -> Result<bool, CliError> {
        while let Some(result) = self.next().await? {
            if !result.events.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn unreachable(client: &Client, e: reqwest::Error) -> CliError {
    CliError::Unreachable {
        endpoint: client.endpoint.clone(),
        reason: e.to_string(),
    }
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
    let mut stream = WatchStream::open(client, &body).await?;
    let mut out = std::io::stdout();
    while let Some(result) = stream.next().await? {
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
    Ok(ExitCode::SUCCESS)
}

/// A `/v3` call; etcd's error body becomes the error.
async fn v3(client: &Client, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, CliError> {
    let response = client
        .http
        .post(client.url(path))
        .json(body)
        .send()
        .await
        .map_err(|e| unreachable(client, e))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| unreachable(client, e))?;
    let reply: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status.is_success() {
        return Ok(reply);
    }
    match reply.get("message").and_then(|m| m.as_str()) {
        Some(message) => Err(CliError::Server {
            status: status.as_u16(),
            code: "etcd".into(),
            message: message.to_owned(),
        }),
        None => Err(server_error(status, &bytes)),
    }
}

fn int(v: &serde_json::Value) -> i64 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_i64().unwrap_or(0),
    }
}

/// Splits a line into words as a shell would: spaces separate, quotes
/// (single or double) group.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => out.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word);
    out
}

/// One compare of etcdctl's txn format: `TARGET("KEY") OP "VALUE"`.
fn compare(line: &str) -> Result<serde_json::Value, CliError> {
    let malformed = || CliError::Usage(format!("malformed comparison: {line}"));
    let (target, rest) = line.split_once('(').ok_or_else(malformed)?;
    let rest = rest.trim_start();
    let key_end = rest.get(1..).and_then(|r| r.find('"')).ok_or_else(malformed)? + 1;
    let key = rest.get(1..key_end).ok_or_else(malformed)?;
    let rest = rest.get(key_end + 1..).ok_or_else(malformed)?.trim_start();
    let rest = rest.strip_prefix(')').ok_or_else(malformed)?.trim_start();
    let (op, value) = rest.split_once(' ').ok_or_else(malformed)?;
    let value = value
        .trim()
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(malformed)?;
    let result = match op {
        "=" | "==" => "EQUAL",
        "!=" => "NOT_EQUAL",
        "<" => "LESS",
        ">" => "GREATER",
        _ => return Err(malformed()),
    };
    let number = |radix: u32| i64::from_str_radix(value, radix).map_err(|_| malformed());
    let (target, field, operand) = match target.trim() {
        "ver" | "version" => ("VERSION", "version", serde_json::json!(number(10)?.to_string())),
        "c" | "create" => ("CREATE", "create_revision", serde_json::json!(number(10)?.to_string())),
        "m" | "mod" => ("MOD", "mod_revision", serde_json::json!(number(10)?.to_string())),
        "val" | "value" => ("VALUE", "value", serde_json::json!(b64(value.as_bytes()))),
        "lease" => ("LEASE", "lease", serde_json::json!(number(16)?.to_string())),
        other => {
            return Err(CliError::Usage(format!(
                "malformed comparison: {line} (unknown target {other})"
            )))
        }
    };
    let mut compare = serde_json::json!({"key": b64(key.as_bytes()), "target": target, "result": result});
    compare[field] = operand;
    Ok(compare)
}

/// One operation of etcdctl's txn format: `put KEY VALUE [--lease=ID]
/// [--prev-kv]`, `get KEY [--prefix] [--limit=N] [--keys-only]
/// [--from-key]`, `del KEY [--prefix] [--prev-kv] [--from-key]`.
fn operation(line: &str) -> Result<serde_json::Value, CliError> {
    let invalid = || CliError::Usage(format!("invalid txn request: {line}"));
    let words = words(line);
    let (verb, rest) = words.split_first().ok_or_else(invalid)?;
    let (flags, args): (Vec<&String>, Vec<&String>) = rest.iter().partition(|w| w.starts_with("--"));
    let flag = |name: &str| flags.iter().any(|f| f.as_str() == format!("--{name}"));
    let value_of = |name: &str| flags.iter().find_map(|f| f.strip_prefix(&format!("--{name}=")));
    let key = args.first().ok_or_else(invalid)?.as_bytes();
    let range_end = if flag("prefix") {
        b64(&prefix_end(key))
    } else if flag("from-key") {
        b64(b"\0")
    } else {
        String::new()
    };
    match verb.as_str() {
        "put" => {
            let value = args.get(1).ok_or_else(invalid)?;
            let lease = match value_of("lease") {
                Some(hex) => i64::from_str_radix(hex, 16).map_err(|_| invalid())?.to_string(),
                None => "0".into(),
            };
            Ok(serde_json::json!({"request_put": {
                "key": b64(key), "value": b64(value.as_bytes()), "lease": lease, "prev_kv": flag("prev-kv"),
            }}))
        }
        "get" => Ok(serde_json::json!({"request_range": {
            "key": b64(key), "range_end": range_end, "limit": value_of("limit").unwrap_or("0"),
            "keys_only": flag("keys-only"), "count_only": flag("count-only"),
        }})),
        "del" => Ok(serde_json::json!({"request_delete_range": {
            "key": b64(key), "range_end": range_end, "prev_kv": flag("prev-kv"),
        }})),
        _ => Err(invalid()),
    }
}

/// Prints `kv`'s key and value lines (the value empty if absent).
fn print_kv(out: &mut impl Write, kv: &serde_json::Value) -> std::io::Result<()> {
    out.write_all(&unb64(kv["key"].as_str()))?;
    out.write_all(b"\n")?;
    out.write_all(&unb64(kv["value"].as_str()))?;
    out.write_all(b"\n")
}

/// Prints a txn's answer as etcdctl does.
fn print_txn(out: &mut impl Write, reply: &serde_json::Value) -> std::io::Result<()> {
    let succeeded = reply["succeeded"].as_bool().unwrap_or(false);
    writeln!(out, "{}", if succeeded { "SUCCESS" } else { "FAILURE" })?;
    for response in reply["responses"].as_array().into_iter().flatten() {
        writeln!(out)?;
        if let Some(put) = response.get("response_put") {
            writeln!(out, "OK")?;
            if let Some(prev) = put.get("prev_kv") {
                print_kv(out, prev)?;
            }
        } else if let Some(range) = response.get("response_range") {
            for kv in range["kvs"].as_array().into_iter().flatten() {
                print_kv(out, kv)?;
            }
        } else if let Some(deleted) = response.get("response_delete_range") {
            writeln!(out, "{}", int(&deleted["deleted"]))?;
            for kv in deleted["prev_kvs"].as_array().into_iter().flatten() {
                print_kv(out, kv)?;
            }
        }
    }
    out.flush()
}

/// `tenure txn`: reads etcdctl's txn format on stdin (compares, a blank
/// line, the operations on success, a blank line, those on failure) and
/// prints the answer as etcdctl does.
pub(super) async fn txn(client: &Client) -> Result<ExitCode, CliError> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| CliError::Usage(format!("reading the txn from stdin: {e}")))?;
    let mut sections: [Vec<&str>; 3] = Default::default();
    let mut section = 0;
    for line in input.lines().map(str::trim) {
        if line.is_empty() {
            section += 1;
            if section == sections.len() {
                break;
            }
            continue;
        }
        sections[section].push(line);
    }
    let [compares, success, failure] = sections;
    let body = serde_json::json!({
        "compare": compares.into_iter().map(compare).collect::<Result<Vec<_>, _>>()?,
        "success": success.into_iter().map(operation).collect::<Result<Vec<_>, _>>()?,
        "failure": failure.into_iter().map(operation).collect::<Result<Vec<_>, _>>()?,
    });
    let reply = v3(client, "/v3/kv/txn", &body).await?;
    let _ = print_txn(&mut std::io::stdout(), &reply);
    Ok(ExitCode::SUCCESS)
}

/// The key under `prefix` created first (`first`) or last before
/// `max_create_revision` (0: any), with the header's revision.
async fn edge_key(
    client: &Client,
    prefix: &str,
    first: bool,
    max_create_revision: i64,
) -> Result<(Option<serde_json::Value>, i64), CliError> {
    let body = serde_json::json!({
        "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes())), "limit": "1",
        "sort_target": "CREATE", "sort_order": if first { "ASCEND" } else { "DESCEND" },
        "max_create_revision": max_create_revision.to_string(),
    });
    let reply = v3(client, "/v3/kv/range", &body).await?;
    let kv = reply["kvs"].as_array().and_then(|kvs| kvs.first()).cloned();
    Ok((kv, int(&reply["header"]["revision"])))
}

/// Waits until `key` is deleted, watching from `after + 1`.
async fn wait_delete(client: &Client, key: &[u8], after: i64) -> Result<(), CliError> {
    let body = serde_json::json!({"create_request": {
        "key": b64(key), "start_revision": (after + 1).to_string(), "filters": ["NOPUT"],
    }});
    if WatchStream::open(client, &body).await?.changed().await? {
        Ok(())
    } else {
        Err(CliError::Usage("the watch ended before the key was deleted".into()))
    }
}

/// etcd's `waitDeletes`: waits until every key under `prefix` created
/// before `max_create_revision` (inclusive) is gone; answers the revision
/// then.
async fn wait_deletes(client: &Client, prefix: &str, max_create_revision: i64) -> Result<i64, CliError> {
    loop {
        let (kv, revision) = edge_key(client, prefix, false, max_create_revision).await?;
        let Some(kv) = kv else { return Ok(revision) };
        wait_delete(client, &unb64(kv["key"].as_str()), revision).await?;
    }
}

/// The session etcd's recipes hold: a lease kept alive, and the key under
/// `prefix` named after it.
struct Session {
    lease: super::client::HeldLease,
    key: String,
}

impl Session {
    async fn open(client: &Client, prefix: &str, ttl: i64) -> Result<Session, CliError> {
        let lease = super::client::HeldLease::grant(client, ttl).await?;
        let key = format!("{prefix}{:x}", lease.id.get());
        Ok(Session { lease, key })
    }

    /// Puts the session's key with `value` unless it exists; answers its
    /// create revision and the header's revision.
    async fn put_once(&self, client: &Client, value: &str) -> Result<(i64, i64), CliError> {
        let key = b64(self.key.as_bytes());
        let body = serde_json::json!({
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": b64(value.as_bytes()), "lease": self.lease.id.get().to_string()}}],
            "failure": [{"request_range": {"key": key}}],
        });
        let reply = v3(client, "/v3/kv/txn", &body).await?;
        let revision = int(&reply["header"]["revision"]);
        if reply["succeeded"].as_bool().unwrap_or(false) {
            return Ok((revision, revision));
        }
        let created = reply["responses"][0]["response_range"]["kvs"][0]["create_revision"].clone();
        Ok((int(&created), revision))
    }

    async fn delete_key(&self, client: &Client) -> Result<(), CliError> {
        let body = serde_json::json!({"key": b64(self.key.as_bytes())});
        v3(client, "/v3/kv/deleterange", &body).await.map(|_| ())
    }

    /// Whether the session's key still exists.
    async fn holds(&self, client: &Client) -> bool {
        let body = serde_json::json!({"key": b64(self.key.as_bytes()), "count_only": true});
        v3(client, "/v3/kv/range", &body)
            .await
            .is_ok_and(|r| int(&r["count"]) == 1)
    }

    /// Keeps the lease alive, every TTL/3, for as long as it is polled.
    async fn renew_forever(&self, client: &Client) -> std::convert::Infallible {
        let url = client.url(&format!("/v1/leases/{}/keepalive", self.lease.id));
        loop {
            tokio::time::sleep(self.lease.renew_every()).await;
            let _ = client.http.post(&url).send().await;
        }
    }

    /// Keeps the lease alive until Ctrl-C or SIGTERM (`Ok`), or until the
    /// lease or the key is lost (an error, as etcdctl's).
    async fn hold(&self, client: &Client, what: &str) -> Result<(), CliError> {
        let mut shutdown = super::Shutdown::install();
        let stopped = self
            .lease
            .keep_alive_until_stopped(client, &mut shutdown, || self.holds(client))
            .await;
        if stopped {
            Ok(())
        } else {
            Err(CliError::Usage(format!("{what}: session expired")))
        }
    }
}

/// `tenure lock NAME [COMMAND...]`: etcd's mutex. Prints the lock's key
/// once held and holds it until Ctrl-C, or runs COMMAND while holding it
/// (with `ETCD_LOCK_KEY` and `ETCD_LOCK_REV` in its environment) and exits
/// with its status. The lock is a key on a lease: if this process dies,
/// the lock is released when the lease runs out (`--ttl`).
pub(super) async fn lock(client: &Client, name: &str, command: &[String], ttl: i64) -> Result<ExitCode, CliError> {
    let prefix = format!("{name}/");
    let session = Session::open(client, &prefix, ttl).await?;
    let locked = async {
        let (my_revision, mut revision) = session.put_once(client, "").await?;
        let (owner, _) = edge_key(client, &prefix, true, 0).await?;
        if owner.is_some_and(|kv| int(&kv["create_revision"]) != my_revision) {
            revision = wait_deletes(client, &prefix, my_revision - 1).await?;
        }
        Ok::<_, CliError>(revision)
    };
    let revision = match locked.await {
        Ok(revision) => revision,
        Err(e) => {
            session.lease.revoke(client).await;
            return Err(e);
        }
    };
    let result = if let Some((program, args)) = command.split_first() {
        let mut child = std::process::Command::new(program);
        child
            .args(args)
            .env("ETCD_LOCK_KEY", &session.key)
            .env("ETCD_LOCK_REV", revision.to_string());
        let program = program.clone();
        let run = tokio::task::spawn_blocking(move || child.status());
        // The lease lives while the command runs, however long.
        let status = tokio::select! {
            status = run => status,
            never = session.renew_forever(client) => match never {},
        };
        match status {
            Ok(Ok(status)) => Ok(ExitCode::from(
                status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1),
            )),
            Ok(Err(e)) => Err(CliError::Usage(format!("cannot run {program}: {e}"))),
            Err(e) => Err(CliError::Usage(format!("running {program}: {e}"))),
        }
    } else {
        let mut out = std::io::stdout();
        let _ = print_kv(&mut out, &serde_json::json!({"key": b64(session.key.as_bytes())}));
        let _ = out.flush();
        session.hold(client, "lock").await.map(|()| ExitCode::SUCCESS)
    };
    let _ = session.delete_key(client).await;
    session.lease.revoke(client).await;
    result
}

/// `tenure elect NAME PROPOSAL`: campaigns with PROPOSAL, prints the
/// leader key and proposal once elected, and holds the office until
/// Ctrl-C (then resigns). `tenure elect --listen NAME`: prints each new
/// leader's proposal.
pub(super) async fn elect(
    client: &Client,
    name: &str,
    proposal: Option<&str>,
    listen: bool,
    ttl: i64,
) -> Result<ExitCode, CliError> {
    let prefix = format!("{name}/");
    if listen {
        return observe(client, &prefix).await;
    }
    let proposal = proposal.ok_or_else(|| CliError::Usage("elect takes a proposal (or --listen)".into()))?;
    let session = Session::open(client, &prefix, ttl).await?;
    let elected = async {
        let (my_revision, _) = session.put_once(client, proposal).await?;
        wait_deletes(client, &prefix, my_revision - 1).await
    };
    if let Err(e) = elected.await {
        session.lease.revoke(client).await;
        return Err(e);
    }
    let mut out = std::io::stdout();
    let _ = print_kv(
        &mut out,
        &serde_json::json!({"key": b64(session.key.as_bytes()), "value": b64(proposal.as_bytes())}),
    );
    let _ = out.flush();
    let result = session.hold(client, "elect").await.map(|()| ExitCode::SUCCESS);
    let _ = session.delete_key(client).await;
    session.lease.revoke(client).await;
    result
}

/// Prints the leader (the key under `prefix` created first) whenever it
/// changes, until Ctrl-C.
async fn observe(client: &Client, prefix: &str) -> Result<ExitCode, CliError> {
    let mut shutdown = super::Shutdown::install();
    let mut shown: Option<serde_json::Value> = None;
    loop {
        let (leader, revision) = edge_key(client, prefix, true, 0).await?;
        if let Some(leader) = leader.filter(|l| Some(l) != shown.as_ref()) {
            let mut out = std::io::stdout();
            let _ = print_kv(&mut out, &leader);
            let _ = out.flush();
            shown = Some(leader);
        }
        // Wait for any change under the prefix, then look again.
        let body = serde_json::json!({"create_request": {
            "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": (revision + 1).to_string(),
        }});
        let changed = async { WatchStream::open(client, &body).await?.changed().await };
        tokio::select! {
            _ = shutdown.wait() => return Ok(ExitCode::SUCCESS),
            changed = changed => if !changed? {
                return Err(CliError::Usage("the watch of the election ended".into()));
            },
        }
    }
}

//! A watcher that does not read costs the server bounded memory, and loses
//! nothing: once it reads again it catches up from the log, every event in
//! order, each once (see `tenure::watch`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use base64::Engine;
use common::binary::ServerProcess;
use serde_json::{json, Value};

/// Puts of 4 KiB: 40 MiB of events, which a server buffering them for the
/// watcher would hold.
const PUTS: usize = 10_000;
const VALUE_BYTES: usize = 4096;
const CLIENTS: usize = 8;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Puts `value` at key `k`; answers the put's revision.
async fn put(http: reqwest::Client, url: String, value: Vec<u8>) -> i64 {
    let body = json!({"key": b64(b"k"), "value": b64(&value)});
    let response = http.post(url).body(body.to_string()).send().await.expect("put");
    assert!(response.status().is_success(), "{}", response.status());
    let reply: Value = response.json().await.expect("JSON");
    reply["header"]["revision"]
        .as_str()
        .expect("revision")
        .parse::<i64>()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_costs_bounded_memory_and_catches_up_from_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    // jemalloc hands freed pages back at once, so that RSS counts what the
    // server holds, not the pages of the 40 MiB of requests and events it
    // has freed since (kept for up to 10 s by default, longer on a busy
    // machine: what made this bound flaky).
    let server = ServerProcess::start_env(
        dir.path(),
        &[],
        "warn",
        std::process::Stdio::inherit(),
        &[("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")],
    );
    let address = server.endpoint.trim_start_matches("http://").to_owned();
    let http = reqwest::Client::new();
    let url = format!("{}/v3/kv/put", server.endpoint);
    let first = put(http.clone(), url.clone(), b"before".to_vec()).await;

    // The watcher: a raw connection that sends its request and then does
    // not read what comes back.
    let mut slow = TcpStream::connect(&address).expect("connect");
    let body = json!({"create_request": {"key": b64(b"k")}}).to_string();
    write!(
        slow,
        "POST /v3/watch HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the watch request");
    // The watch exists once a put made after it shows in a fresh watch's
    // history; simpler: wait for the created line, then stop reading.
    let mut reader = BufReader::new(slow.try_clone().expect("clone"));
    let mut line = String::new();
    while !line.contains("\"created\":true") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "the server closed the watch"
        );
    }

    let before = rss_bytes(server.child.id());
    let per_client = PUTS / CLIENTS;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, url) = (http.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..per_client {
                let mut value = vec![b'a' + (c as u8); VALUE_BYTES];
                value[..8].copy_from_slice(&((c * per_client + i) as u64).to_be_bytes());
                put(http.clone(), url.clone(), value).await;
            }
        }));
    }
    for client in clients {
        client.await.expect("a client");
    }
    let after = rss_bytes(server.child.id());
    let grown = after.saturating_sub(before);
    let events_bytes = (PUTS * VALUE_BYTES) as u64;
    assert!(
        grown < events_bytes / 2,
        "the server grew by {grown} bytes while {events_bytes} bytes of events waited for a watcher that does not read"
    );

    // Now it reads: every put after the watch began, in revision order, each once.
    let mut revisions = Vec::new();
    let last = first + PUTS as i64;
    while revisions.last().copied().unwrap_or(first) < last {
        line.clear();
        assert!(reader.read_line(&mut line).expect("read") > 0, "the watch ended early");
        let Some(start) = line.find('{') else { continue };
        let Ok(response) = serde_json::from_str::<Value>(line[start..].trim_end()) else {
            continue;
        };
        for event in response["result"]["events"].as_array().into_iter().flatten() {
            let revision: i64 = event["kv"]["mod_revision"]
                .as_str()
                .expect("mod_revision")
                .parse()
                .expect("a number");
            revisions.push(revision);
        }
    }
    let expected: Vec<i64> = (first + 1..=last).collect();
    assert_eq!(revisions.len(), expected.len());
    assert!(revisions == expected, "the watcher missed or repeated revisions");
    drop(server);
}

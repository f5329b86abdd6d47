//! The etcd seed transcript (shared/seeds/004) through the real `tenure`
//! binary: the same commands, the same output as etcdctl.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::{signal, stderr, stdout, ServerProcess, BIN};

/// Runs `args` and returns stdout, asserting success and an empty stderr.
fn ok(server: &ServerProcess, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    assert_eq!(stderr(&out), "", "{args:?}");
    stdout(&out)
}

/// `lease grant TTL` and the ID it printed.
fn grant(server: &ServerProcess, ttl: &str) -> String {
    let line = ok(server, &["lease", "grant", ttl]);
    let id = line.split(' ').nth(1).expect("an ID").to_owned();
    assert_eq!(id.len(), 16, "{line}");
    assert!(
        id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{line}"
    );
    assert_eq!(line, format!("lease {id} granted with TTL({ttl}s)\n"));
    id
}

#[test]
fn the_etcd_lease_transcript() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);

    // Grant, bind a key, read it.
    let id = grant(&server, "100");
    assert_eq!(ok(&server, &["put", "key1", "hello", &format!("--lease={id}")]), "OK\n");
    assert_eq!(ok(&server, &["get", "key1"]), "key1\nhello\n");

    // Revoke deletes the attached keys at once.
    let id = grant(&server, "1000");
    assert_eq!(ok(&server, &["put", "key2", "hello", &format!("--lease={id}")]), "OK\n");
    assert_eq!(ok(&server, &["get", "key2"]), "key2\nhello\n");
    assert_eq!(ok(&server, &["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    assert_eq!(ok(&server, &["get", "key2"]), "");

    // Keep-alive.
    let id = grant(&server, "20");
    assert_eq!(ok(&server, &["put", "key3", "nihao", &format!("--lease={id}")]), "OK\n");
    assert_eq!(
        ok(&server, &["lease", "keep-alive", &id, "--once"]),
        format!("lease {id} keepalived with TTL(20)\n")
    );

    // Time to live, with and without keys.
    let id = grant(&server, "300");
    assert_eq!(ok(&server, &["put", "key5", "hehe", &format!("--lease={id}")]), "OK\n");
    assert_eq!(ok(&server, &["put", "key6", "hihi", &format!("--lease={id}")]), "OK\n");
    let line = ok(&server, &["lease", "timetolive", &id]);
    let prefix = format!("lease {id} granted with TTL(300s), remaining(");
    let remaining: i64 = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix("s)\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected {line:?}"));
    assert!((290..=300).contains(&remaining), "{line}");
    let line = ok(&server, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        line.starts_with(&prefix) && line.ends_with("s), attached keys([key5 key6])\n"),
        "{line:?}"
    );

    // Listing.
    let list = ok(&server, &["lease", "list"]);
    let mut lines = list.lines();
    assert_eq!(lines.next(), Some("found 3 leases")); // four granted, one revoked
    assert_eq!(lines.count(), 3);

    // Prefixes and deletes.
    assert_eq!(
        ok(&server, &["get", "key", "--prefix"]),
        "key1\nhello\nkey3\nnihao\nkey5\nhehe\nkey6\nhihi\n"
    );
    assert_eq!(ok(&server, &["put", "plain", "x"]), "OK\n");
    assert_eq!(ok(&server, &["del", "plain"]), "1\n");
    assert_eq!(ok(&server, &["del", "plain"]), "0\n");
    assert_eq!(ok(&server, &["get", "plain"]), "");

    server.terminate();
}

/// After the TTL runs out the key is gone (wall time: the shortest TTL is 2 s).
#[test]
fn an_expired_lease_takes_its_key_and_says_already_expired() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    let id = grant(&server, "2");
    assert_eq!(ok(&server, &["put", "key4", "v", &format!("--lease={id}")]), "OK\n");
    assert_eq!(ok(&server, &["get", "key4"]), "key4\nv\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(&server, &["get", "key4"]).is_empty() {
        assert!(Instant::now() < deadline, "the key outlived its lease");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        ok(&server, &["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );
    let out = server.cli(&["lease", "keep-alive", &id]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out), format!("lease {id} expired or revoked.\n"));
}

/// `lease keep-alive` streams a line every TTL/3 until interrupted.
#[test]
fn keep_alive_streams_until_interrupted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    let id = grant(&server, "3");
    let mut child = Command::new(BIN)
        .args(["lease", "keep-alive", &id])
        .env("TENURE_ENDPOINT", &server.endpoint)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn keep-alive");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..3 {
        let line = lines.next().expect("a line").expect("readable");
        assert_eq!(line, format!("lease {id} keepalived with TTL(3)"));
    }
    signal(child.id(), "INT");
    let status = child.wait().expect("wait");
    assert!(status.success(), "keep-alive exits cleanly on Ctrl-C: {status}");
    // Kept alive for 2 s or more past its 3 s TTL... still there.
    let line = ok(&server, &["lease", "timetolive", &id]);
    assert!(line.starts_with(&format!("lease {id} granted with TTL(3s)")), "{line}");
}

#[test]
fn errors_go_to_stderr_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    let check = |args: &[&str], message: &str| {
        let out = server.cli(args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert_eq!(stdout(&out), "", "{args:?}");
        assert!(
            stderr(&out).contains(message),
            "{args:?}: {:?} should contain {message:?}",
            stderr(&out)
        );
    };
    check(
        &["lease", "revoke", "0000000000000abc"],
        "Error: lease 0000000000000abc not found",
    );
    check(
        &["lease", "keep-alive", "0000000000000abc", "--once"],
        "lease 0000000000000abc expired or revoked.",
    );
    check(&["put", "k", "v", "--lease=zz"], "Error: lease ID must be");
    check(
        &["put", "k", "v", "--lease=0000000000000abc"],
        "Error: lease 0000000000000abc not found",
    );
    check(
        &["lease", "grant", "0"],
        "Error: ttl: must be a positive number of seconds",
    );
    check(&["lease", "grant", "ten"], "invalid value 'ten'");
    let id = grant(&server, "10");
    check(
        &["lease", "grant", "10", "--id", &id],
        &format!("Error: lease {id} already exists"),
    );

    let unreachable = Command::new(BIN)
        .args(["lease", "list"])
        .env("TENURE_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .expect("run tenure");
    assert!(!unreachable.status.success());
    assert!(
        stderr(&unreachable).starts_with("Error: cannot reach tenure at http://127.0.0.1:9"),
        "{}",
        stderr(&unreachable)
    );
}

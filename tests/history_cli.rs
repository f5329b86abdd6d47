//! The history commands through the real binary: `status`, `events` (and
//! `--follow`, which sees a command's events within a second), `audit`,
//! and `replay` while the server runs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::binary::{signal, stderr, stdout, ServerProcess, BIN};
use common::PATIENCE;

fn ok(server: &ServerProcess, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(out.status.success(), "tenure {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn grant(server: &ServerProcess, ttl: &str) -> String {
    let printed = ok(server, &["lease", "grant", ttl]);
    printed.split_whitespace().nth(1).expect("lease ID").to_owned()
}

#[test]
fn status_events_and_audit_print_the_log_for_people_and_programs() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(temp.path(), &[]);
    let lease = grant(&server, "100");
    ok(&server, &["put", "key1", "hello", &format!("--lease={lease}")]);
    // A keep-alive records nothing: it is not in the history below.
    ok(&server, &["lease", "keep-alive", &lease, "--once"]);
    ok(&server, &["lease", "revoke", &lease]);

    let status = ok(&server, &["status"]);
    let head = status
        .lines()
        .find_map(|l| l.strip_prefix("head: "))
        .expect("a head line")
        .to_owned();
    assert!(status.starts_with("status: ok\n"), "{status}");
    assert!(head.starts_with("4:") && head.len() == 2 + 64, "{head}");

    let table = ok(&server, &["events"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let expect = [
        ("LeaseGranted", format!("lease {lease} granted with TTL 100s")),
        ("KeyPut", format!("put \"key1\" = \"hello\" with lease {lease}")),
        ("LeaseRevoked", format!("lease {lease} revoked")),
        ("KeyDeleted", format!("deleted \"key1\" (lease {lease} revoked)")),
    ];
    for (i, (line, (event_type, summary))) in lines.iter().zip(&expect).enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], (i + 1).to_string(), "{line}");
        assert!(fields[1].ends_with('Z'), "a UTC time: {line}");
        assert_eq!(fields[2], "default", "{line}");
        assert_eq!(fields[4], *event_type, "{line}");
        assert_eq!(fields[5].len(), 8, "a short request id: {line}");
        assert!(line.ends_with(summary.as_str()), "{line}");
    }
    // Filters, JSON lines, a limit.
    let json = ok(&server, &["events", "--kind", "keyspace", "-o", "json"]);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["type"], "KeyDeleted");
    assert!(events[1]["causation_id"].is_string(), "{}", events[1]);
    let two = ok(
        &server,
        &[
            "events",
            "--type",
            "LeaseGranted",
            "--type",
            "LeaseRevoked",
            "--limit",
            "1",
        ],
    );
    assert_eq!(two.lines().count(), 1, "{two}");

    let audit = ok(&server, &["audit", &lease]);
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines[0], format!("lease/{lease} (lease/default/{lease})"));
    assert_eq!(lines.len(), 1 + 3, "grant, revoke, the key deletion: {audit}");
    assert!(
        lines[3].contains("KeyDeleted") && lines[3].ends_with("(caused by 3)"),
        "{audit}"
    );

    // Bad input: a clear error, a non-zero exit.
    let out = server.cli(&["events", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("since"), "{}", stderr(&out));
    let out = server.cli(&["audit", "nothing-here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no entity"), "{}", stderr(&out));

    // Replay reads the same log while the server runs.
    let out = Command::new(BIN)
        .args(["replay", "--data-dir"])
        .arg(temp.path())
        .args(["--until", "2", "--what", "leases,keys"])
        .output()
        .expect("run tenure replay");
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains(&format!("{lease}  TTL(100s)")), "{printed}");
    assert!(printed.contains("keys([key1])"), "{printed}");
    assert!(printed.contains("key1 = hello"), "{printed}");
    let out = Command::new(BIN)
        .args(["replay", "--data-dir"])
        .arg(temp.path())
        .args(["--until", "99"])
        .output()
        .expect("run tenure replay");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the log ends at position 4"), "{}", stderr(&out));
    server.terminate();
}

#[test]
fn events_follow_sees_a_commands_events_within_a_second_and_stops_on_ctrl_c() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(temp.path(), &[]);
    let first = grant(&server, "100");
    let mut follower = Command::new(BIN)
        .args(["events", "--follow", "-o", "json"])
        .env("TENURE_ENDPOINT", &server.endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tenure events --follow");
    let out = follower.stdout.take().expect("stdout");
    let (lines, received) = mpsc::channel::<serde_json::Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let Ok(event) = serde_json::from_str(&line) else { break };
            if lines.send(event).is_err() {
                break;
            }
        }
    });
    let history = received.recv_timeout(PATIENCE).expect("the history first");
    assert_eq!(history["stream"], format!("lease/default/{first}"));

    for ttl in ["30", "40", "50"] {
        let lease = grant(&server, ttl);
        let acknowledged = Instant::now();
        let event = received.recv_timeout(PATIENCE).expect("the grant arrives");
        let waited = acknowledged.elapsed();
        assert_eq!(event["stream"], format!("lease/default/{lease}"));
        assert!(
            waited < Duration::from_secs(1),
            "the grant's event came {waited:?} after it was acknowledged"
        );
    }
    signal(follower.id(), "INT");
    let status = follower.wait().expect("wait");
    assert!(status.success(), "Ctrl-C ends --follow cleanly: {status}");
    reader.join().expect("reader");
    server.terminate();
}

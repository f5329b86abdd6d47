//! Accounts and tokens through the real binary: the CLI's account commands,
//! and a search of everything the server wrote (its stdout, its debug log,
//! its data directory) for the tokens it handled.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::binary::{stderr, stdout, ServerProcess, BIN};

const ADMIN: &str = "admin-secret-4f9b2c7d1e8a6053";

/// Every byte of every file under `dir`.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).expect("readable file")));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Runs a command that must succeed; answers its stdout.
fn ok(out: std::process::Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn tokens_never_reach_the_server_output_its_log_or_the_event_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).expect("write admin token");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let admin_arg = admin_file.display().to_string();
    let server = ServerProcess::start_logging(
        &data,
        &["--auth", "--admin-token-file", &admin_arg, "--log-format", "json"],
        "debug",
        Stdio::from(log),
    );

    // The admin creates an account and a token for it.
    let created = ok(
        server.cli_as(ADMIN, &["account", "create", "alice", "--max-keys", "5"]),
        "account create",
    );
    assert_eq!(created, "account 'alice' created\n");
    let out = server.cli_as(ADMIN, &["account", "token", "create", "alice", "--label", "laptop"]);
    let token = ok(out.clone(), "token create").trim().to_owned();
    assert!(token.starts_with("tnr_"), "{token}");
    let id = token.split('_').nth(1).expect("id part").to_owned();
    assert_eq!(
        stderr(&out),
        format!("token '{id}' created for account 'alice'; it is shown only this once\n")
    );
    let listed = ok(
        server.cli_as(ADMIN, &["account", "token", "list", "alice"]),
        "token list",
    );
    assert!(
        listed.starts_with(&id) && listed.trim_end().ends_with("laptop"),
        "{listed}"
    );
    assert!(!listed.contains(&token));

    // Alice works with her token.
    let granted = ok(server.cli_as(&token, &["lease", "grant", "100"]), "grant");
    assert!(granted.ends_with("granted with TTL(100s)\n"), "{granted}");
    assert_eq!(ok(server.cli_as(&token, &["put", "k", "v"]), "put"), "OK\n");
    assert_eq!(ok(server.cli_as(&token, &["get", "k"]), "get"), "k\nv\n");
    let me = ok(server.cli_as(&token, &["account", "whoami"]), "whoami");
    assert!(me.starts_with("name: alice\nlimits: max_leases=-1 max_keys=5 "), "{me}");
    assert!(me.contains("usage: leases=1 keys=1\n"), "{me}");
    // The admin's view of her.
    let shown = ok(server.cli_as(ADMIN, &["account", "get", "alice"]), "account get");
    assert!(shown.contains("tokens: 1\n"), "{shown}");
    let limits = ok(
        server.cli_as(ADMIN, &["account", "limits", "set", "alice", "--max-leases", "3"]),
        "limits set",
    );
    assert_eq!(
        limits,
        "account 'alice' limits: max_leases=3 max_keys=5 max_reserved_shares=-1 max_services=-1\n"
    );

    // Wrong tokens: a clear error and exit 1, never an echo of the token.
    let wrong = "tnr_wrongwro_ngwrongwrongwrongwrongwrongwrongwron";
    let out = server.cli_as(wrong, &["lease", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error: invalid or revoked token (give a token with --token or TENURE_TOKEN)\n"
    );
    let out = server.cli(&["lease", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing bearer token"), "{}", stderr(&out));
    let out = server.cli_as(&token, &["account", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "Error: this endpoint needs the admin token\n");

    // Revoked: refused from the next command on.
    let revoked = ok(
        server.cli_as(ADMIN, &["account", "token", "revoke", "alice", &id]),
        "token revoke",
    );
    assert_eq!(revoked, format!("token '{id}' of account 'alice' revoked\n"));
    let out = server.cli_as(&token, &["get", "k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid or revoked token"), "{}", stderr(&out));

    let printed = server.terminate_and_collect();
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    assert!(
        log.contains("account/alice"),
        "the debug log records account commands, so the search below means something"
    );
    for (what, secret) in [
        ("admin token", ADMIN),
        ("account token", token.as_str()),
        ("wrong token", wrong),
    ] {
        assert!(!printed.contains(secret), "the {what} is on the server's stdout");
        assert!(!log.contains(secret), "the {what} is in the server's log");
        for (file, bytes) in files_under(&data) {
            assert!(!contains(&bytes, secret), "the {what} is in {file}");
        }
    }
    // What the event log does keep is the token's hash.
    let hash = tenure::auth::sha256_hex(&token);
    assert!(
        files_under(&data).iter().any(|(_, bytes)| contains(bytes, &hash)),
        "the token's SHA-256 is in the event log"
    );
}

#[test]
fn a_generated_admin_token_is_printed_once_and_only_its_hash_is_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &["--auth"]);
    let first = server.stdout.lock().expect("not poisoned").clone();
    let banner = first.lines().next().expect("a first line");
    let admin = banner
        .strip_prefix("admin token (shown only this once; its hash is in the data directory): ")
        .unwrap_or_else(|| panic!("unexpected first line {banner:?}"))
        .to_owned();
    assert_eq!(ok(server.cli_as(&admin, &["account", "list"]), "account list"), "");
    ok(server.cli_as(&admin, &["account", "create", "bob"]), "account create");
    let printed = server.terminate_and_collect();
    assert_eq!(printed.matches(&admin).count(), 1, "{printed}");

    // The next start prints no token, and the same token still works.
    let server = ServerProcess::start(dir.path(), &["--auth"]);
    let listed = ok(server.cli_as(&admin, &["account", "list"]), "account list");
    assert!(listed.starts_with("bob "), "{listed}");
    let printed = server.terminate_and_collect();
    assert!(!printed.contains("admin token"), "{printed}");
    for (file, bytes) in files_under(dir.path()) {
        assert!(!contains(&bytes, &admin), "the admin token is in {file}");
    }
    let stored = std::fs::read_to_string(dir.path().join(tenure::auth::ADMIN_HASH_FILE)).expect("hash file");
    assert_eq!(stored.trim(), tenure::auth::sha256_hex(&admin));
}

#[test]
fn without_auth_the_server_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run tenure serve");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refusing to listen on 0.0.0.0:0 without --auth"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(BIN)
        .args(["serve", "--admin-token-file", "x", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run tenure serve");
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses --admin-token-file without --auth"
    );
    assert!(stderr(&out).contains("--auth"), "{}", stderr(&out));
}

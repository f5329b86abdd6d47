//! The real `etcdctl` (Debian's `etcd-client`, 3.4) against tenure's gRPC
//! API and against a real etcd 3.4, the same commands to both: the etcd
//! seed transcript (grant, put with a lease, get, revoke, keep-alive,
//! time-to-live with keys, expiry) and more of etcdctl's kv and lease
//! commands. Their outputs (stdout, the `Error:` line, the exit status)
//! must agree line by line once the lease IDs each server picks and the
//! remaining TTLs are normalized.
//!
//! Both binaries come from Debian packages that `.ci/run` installs; without
//! them the tests say so and skip, unless `TENURE_REQUIRE_ETCD=1` (as in
//! CI), where a missing one fails them.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Instant;

use common::binary::ServerProcess;
use common::etcd::start_etcd;
use common::PATIENCE;

/// Whether etcdctl is here; panics if CI requires it and it is not.
fn etcdctl_found() -> bool {
    let found = Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("TENURE_REQUIRE_ETCD").as_deref() != Ok("1"),
            "TENURE_REQUIRE_ETCD=1 but there is no etcdctl binary (apt-get install etcd-client)"
        );
        eprintln!("SKIPPED: no etcdctl on PATH; install Debian's etcd-client to run the etcdctl tests");
    }
    found
}

/// One server, with the lease IDs etcdctl printed for it, in grant order.
struct Side {
    name: &'static str,
    address: String,
    leases: Vec<String>,
}

/// What one etcdctl command printed, normalized.
#[derive(Debug, PartialEq, Eq)]
struct Printed {
    ok: bool,
    stdout: Vec<String>,
    /// What etcdctl printed on stderr (its `Error: ...` line, a health
    /// check's verdict) but the client library's JSON log lines (retries),
    /// which are not part of the interface.
    stderr: Vec<String>,
}

fn etcdctl(address: &str, user: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={address}"))
        .arg("--command-timeout=10s");
    if let Some(user) = user {
        command.arg(format!("--user={user}"));
    }
    command.args(args).output().expect("run etcdctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Side {
    /// Runs `template` (words; `$L1` is the first lease granted) and
    /// answers what it printed, normalized.
    fn run(&mut self, template: &str) -> Printed {
        let mut args: Vec<String> = template.split_whitespace().map(str::to_owned).collect();
        for arg in &mut args {
            for (i, lease) in self.leases.iter().enumerate().rev() {
                *arg = arg.replace(&format!("$L{}", i + 1), lease);
            }
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = etcdctl(&self.address, None, &argv);
        let stdout = text(&out.stdout);
        if template.starts_with("lease grant") {
            if let Some(id) = stdout.split_whitespace().nth(1).filter(|_| out.status.success()) {
                self.leases.push(id.to_owned());
            }
        }
        Printed {
            ok: out.status.success(),
            stdout: stdout.lines().map(|l| self.normalize(l)).collect(),
            stderr: text(&out.stderr)
                .lines()
                .filter(|l| !l.starts_with('{'))
                .map(|l| self.normalize(l))
                .collect(),
        }
    }

    fn normalize(&self, line: &str) -> String {
        let mut line = line.to_owned();
        for (i, lease) in self.leases.iter().enumerate() {
            line = line.replace(lease, &format!("$L{}", i + 1));
            // `-w fields` and `-w json` print lease IDs in decimal.
            if let Ok(decimal) = i64::from_str_radix(lease, 16) {
                line = line.replace(&format!(": {decimal}"), &format!(": $L{}", i + 1));
            }
        }
        // Who the cluster and member are, and the raft term, differ.
        let identity = regex_lite::Regex::new(r#""(ClusterID|MemberID|RaftTerm)" : \d+"#).expect("regex");
        line = identity.replace_all(&line, "\"$1\" : ID").into_owned();
        // Asked a moment apart, the two may differ by a second or two.
        let remaining = regex_lite::Regex::new(r"remaining\((\d+)s\)").expect("regex");
        line = remaining.replace_all(&line, "remaining(N)").into_owned();
        let took = regex_lite::Regex::new(r"took = [0-9.]+[a-zµ]+").expect("regex");
        line = took.replace_all(&line, "took = T").into_owned();
        // etcd lists a lease's keys in map order.
        let keys = regex_lite::Regex::new(r"attached keys\(\[([^\]]*)\]\)").expect("regex");
        line = keys
            .replace_all(&line, |c: &regex_lite::Captures<'_>| {
                let mut keys: Vec<&str> = c[1].split(' ').collect();
                keys.sort_unstable();
                format!("attached keys([{}])", keys.join(" "))
            })
            .into_owned();
        line.replace(&self.address, "ENDPOINT")
    }

    /// Runs `get KEY` until it prints nothing (the lease behind it
    /// expired), at most [`PATIENCE`].
    fn wait_until_gone(&mut self, key: &str) {
        let started = Instant::now();
        while !self.run(&format!("get {key}")).stdout.is_empty() {
            assert!(started.elapsed() < PATIENCE, "{}: {key} never expired", self.name);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// The commands, in order; `sorted` marks those whose lines a server
/// prints in map order (compared as sets).
const TRANSCRIPT: &[&str] = &[
    // The seed transcript.
    "lease grant 100",
    "put key1 hello --lease=$L1",
    "get key1",
    "lease grant 1000",
    "put key2 hello --lease=$L2",
    "get key2",
    "lease revoke $L2",
    "get key2",
    "lease grant 20",
    "put key3 nihao --lease=$L3",
    "lease keep-alive --once $L3",
    "lease grant 300",
    "put key5 hehe --lease=$L4",
    "put key6 hihi --lease=$L4",
    "lease timetolive $L4",
    "lease timetolive $L4 --keys",
    // Reads and writes around it.
    "get key --prefix",
    "get key --prefix --keys-only",
    "get key --prefix --limit=2 --order=DESCEND",
    "get key --prefix --sort-by=MODIFY --order=ASCEND",
    "get key1 --print-value-only",
    "get key3 --from-key --keys-only",
    "put key5 again --prev-kv",
    "put key5 again --ignore-lease",
    "get key5 --rev=7",
    "get key5 --rev=900",
    "put key5 --ignore-value",
    "get key5 -w fields",
    "del key6 --prev-kv",
    "del key --prefix",
    "del nothing",
    "get key --prefix",
    // Refusals.
    "put key9 v --lease=$L2",
    "lease revoke $L2",
    "lease timetolive $L2",
    "lease keep-alive --once $L2",
    "lease timetolive 123abc",
    "put",
    // Expiry: the lease's keys go with it.
    "lease grant 3",
    "put key8 short --lease=$L5",
    "put key10 short --lease=$L5",
    "WAIT key8",
    "get key --prefix",
    "lease timetolive $L5",
    "lease list",
    "endpoint health",
    "compaction 2",
];

const SORTED: &[&str] = &["lease list"];

/// `etcdctl watch` running beside the transcript, its output collected.
struct Watching {
    child: std::process::Child,
    printed: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Watching {
    fn start(address: &str, args: &[&str]) -> Watching {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={address}"))
            .arg("watch")
            .args(args);
        Watching::spawn(command)
    }

    fn spawn(mut command: Command) -> Watching {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run a watch");
        let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&printed);
        let mut stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buffer) {
                sink.lock()
                    .expect("not poisoned")
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Watching { child, printed }
    }

    /// Waits until the watch printed `line`, then stops it; answers what
    /// it printed.
    fn until(mut self, line: &str) -> String {
        let started = Instant::now();
        loop {
            let printed = self.printed.lock().expect("not poisoned").clone();
            if printed.lines().any(|l| l == line) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return printed;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the watch never printed {line:?}; it printed {printed:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_prints_the_same_against_tenure_and_etcd() {
    if !etcdctl_found() {
        return;
    }
    let Some(etcd) = start_etcd().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    let mut tenure = Side {
        name: "tenure",
        address: server.grpc.clone().expect("tenure serves gRPC"),
        leases: Vec::new(),
    };
    let mut reference = Side {
        name: "etcd",
        address: etcd.address().to_owned(),
        leases: Vec::new(),
    };
    // Two watches beside it, from the first revision (so they miss nothing
    // whenever they start): with the values before each change, and of
    // one key.
    let watch_args: [&[&str]; 2] = [&["--prefix", "key", "--rev=1", "--prev-kv"], &["key5", "--rev=1"]];
    let watches: Vec<(Watching, Watching)> = watch_args
        .iter()
        .map(|args| {
            (
                Watching::start(&reference.address, args),
                Watching::start(&tenure.address, args),
            )
        })
        .collect();
    let mut seen = Vec::new();
    for step in TRANSCRIPT {
        if let Some(key) = step.strip_prefix("WAIT ") {
            reference.wait_until_gone(key);
            tenure.wait_until_gone(key);
            continue;
        }
        let (mut theirs, mut ours) = (reference.run(step), tenure.run(step));
        if SORTED.iter().any(|s| step.starts_with(s)) {
            theirs.stdout.sort();
            ours.stdout.sort();
        }
        assert_eq!(ours, theirs, "etcdctl {step}: tenure (left) and etcd (right) differ");
        eprintln!("etcdctl {step}\n  {ours:?}");
        seen.push((step, ours));
    }
    // The watches saw the same changes, deletes by revoke and expiry too.
    for side in [&mut reference, &mut tenure] {
        side.run("put key5 the-end");
    }
    let mut printed_by_watches = Vec::new();
    for (theirs, ours) in watches {
        let (theirs, ours) = (theirs.until("the-end"), ours.until("the-end"));
        let normalize = |side: &Side, printed: &str| printed.lines().map(|l| side.normalize(l)).collect::<Vec<_>>();
        assert_eq!(
            normalize(&tenure, &ours),
            normalize(&reference, &theirs),
            "etcdctl watch"
        );
        printed_by_watches.push(ours);
    }
    let prefix_watch = &printed_by_watches[0];
    assert!(
        prefix_watch.contains("DELETE\nkey8\nshort\n"),
        "the expiry is a DELETE with the value before: {prefix_watch}"
    );

    // The comparison means something only if the commands did things.
    let printed = |step: &str| {
        seen.iter()
            .rev()
            .find(|(s, _)| **s == step)
            .map(|(_, p)| p.stdout.join("\n"))
            .unwrap_or_default()
    };
    assert_eq!(printed("get key1"), "key1\nhello");
    assert_eq!(
        printed("lease timetolive $L4 --keys"),
        "lease $L4 granted with TTL(300s), remaining(N), attached keys([key5 key6])"
    );
    assert_eq!(printed("lease timetolive $L5"), "lease $L5 already expired");
    assert_eq!(printed("get key --prefix"), "", "every key deleted or expired");

    // What a client calls on connect or to look around: this node is the
    // one member and leader of the caller's cluster.
    let members = etcdctl(&tenure.address, None, &["member", "list"]);
    let listed = text(&members.stdout);
    assert!(
        members.status.success()
            && listed
                .trim_end()
                .ends_with(&format!("started, tenure, , http://{}, false", tenure.address)),
        "{listed}"
    );
    let status = etcdctl(&tenure.address, None, &["endpoint", "status", "-w", "fields"]);
    let shown = text(&status.stdout);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(shown.contains("\"Version\" : \"3.4.0\""), "{shown}");
    assert!(shown.contains("\"IsLearner\" : false"), "{shown}");
}

#[test]
fn with_auth_etcdctl_logs_in_with_the_account_and_its_token() {
    if !etcdctl_found() {
        return;
    }
    const ADMIN: &str = "test-admin-token-for-etcdctl-0123";
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, ADMIN).expect("write admin token");
    let admin_arg = admin_file.display().to_string();
    let server = ServerProcess::start(&dir.path().join("data"), &["--auth", "--admin-token-file", &admin_arg]);
    let address = server.grpc.clone().expect("tenure serves gRPC");
    let token_of = |account: &str| {
        let created = server.cli_as(ADMIN, &["account", "create", account]);
        assert!(created.status.success(), "{}", text(&created.stderr));
        let out = server.cli_as(ADMIN, &["account", "token", "create", account]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let (alice, bob) = (token_of("alice"), token_of("bob"));
    let as_alice = format!("alice:{alice}");
    let as_bob = format!("bob:{bob}");

    let put = etcdctl(&address, Some(&as_alice), &["put", "k", "alice's"]);
    assert_eq!(
        (put.status.success(), text(&put.stdout)),
        (true, "OK\n".into()),
        "{}",
        text(&put.stderr)
    );
    let granted = etcdctl(&address, Some(&as_alice), &["lease", "grant", "60"]);
    let lease = text(&granted.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(
        granted.status.success() && !lease.is_empty(),
        "{}",
        text(&granted.stderr)
    );

    // Bob's key space and leases are his own.
    let get = etcdctl(&address, Some(&as_bob), &["get", "k"]);
    assert_eq!((get.status.success(), text(&get.stdout)), (true, String::new()));
    let revoke = etcdctl(&address, Some(&as_bob), &["lease", "revoke", &lease]);
    assert!(!revoke.status.success());
    assert!(
        text(&revoke.stderr).contains("etcdserver: requested lease not found"),
        "{}",
        text(&revoke.stderr)
    );
    let get = etcdctl(&address, Some(&as_alice), &["get", "k", "--print-value-only"]);
    assert_eq!(text(&get.stdout), "alice's\n");

    // A wrong password, another account's token, or none at all: refused.
    for user in [
        Some("alice:tnr_wrong_token".to_owned()),
        Some(format!("alice:{bob}")),
        None,
    ] {
        let out = etcdctl(&address, user.as_deref(), &["get", "k"]);
        assert!(!out.status.success(), "{user:?}: {}", text(&out.stdout));
        let said = text(&out.stderr);
        assert!(
            said.contains("authentication failed, invalid user ID or password") || said.contains("user name is empty"),
            "{user:?}: {said}"
        );
    }
}

#[test]
fn tenure_watch_prints_what_etcdctl_watch_prints() {
    if !etcdctl_found() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    let address = server.grpc.clone().expect("tenure serves gRPC");
    let run = |args: &[&str]| {
        let out = etcdctl(&address, None, args);
        assert!(out.status.success(), "etcdctl {args:?}: {}", text(&out.stderr));
    };
    run(&["put", "app/a", "1"]);
    run(&["put", "app/b", "2"]);
    run(&["put", "other", "x"]);
    run(&["del", "app/a"]);
    let lease = text(&etcdctl(&address, None, &["lease", "grant", "60"]).stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    run(&["put", "app/c", "3", &format!("--lease={lease}")]);
    run(&["lease", "revoke", &lease]);
    run(&["put", "app/b", "the-end"]);

    for args in [
        &["app/", "--prefix", "--rev=1", "--prev-kv"][..],
        &["app/b", "--rev=1"][..],
    ] {
        let theirs = Watching::start(&address, args).until("the-end");
        let mut command = Command::new(common::binary::BIN);
        command.arg("watch").args(args).env("TENURE_ENDPOINT", &server.endpoint);
        let ours = Watching::spawn(command).until("the-end");
        assert_eq!(ours, theirs, "tenure watch {args:?}");
    }
}

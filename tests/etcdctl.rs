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
    common::etcd::found("etcdctl", "version", "etcd-client")
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
    etcdctl_with_input(address, user, args, "")
}

/// etcdctl with `input` on its stdin (`txn` reads its requests there).
fn etcdctl_with_input(address: &str, user: Option<&str>, args: &[&str], input: &str) -> Output {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={address}"))
        .arg("--command-timeout=10s");
    if let Some(user) = user {
        command.arg(format!("--user={user}"));
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, input.as_bytes()).expect("write etcdctl's stdin");
    }
    child.wait_with_output().expect("run etcdctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Side {
    /// Runs `template` (words; `$L1` is the first lease granted) and
    /// answers what it printed, normalized.
    /// `template`'s words are the arguments; after a `|`, what etcdctl
    /// reads on stdin, `;` standing for a line break.
    fn run(&mut self, template: &str) -> Printed {
        let (template, input) = template.split_once('|').unwrap_or((template, ""));
        let mut input = input.trim().replace(';', "\n");
        input.push('\n');
        let mut args: Vec<String> = template.split_whitespace().map(str::to_owned).collect();
        for arg in &mut args {
            for (i, lease) in self.leases.iter().enumerate().rev() {
                *arg = arg.replace(&format!("$L{}", i + 1), lease);
            }
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        for (i, lease) in self.leases.iter().enumerate().rev() {
            input = input.replace(&format!("$L{}", i + 1), lease);
        }
        let out = etcdctl_with_input(&self.address, None, &argv, &input);
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
        let identity = regex_lite::Regex::new(r#""(cluster_id|member_id|raft_term)":\d+"#).expect("regex");
        line = identity.replace_all(&line, "\"$1\":ID").into_owned();
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
    // Txns, in etcdctl's interactive format: compares, a blank line, the
    // operations on success, a blank line, those on failure.
    "txn | value(\"key5\") = \"hehe\";;put key5 swapped;get key1;;put key5 never;;",
    "txn | value(\"key5\") = \"hehe\";;put key5 never;;del key6 --prev-kv;get key5;;",
    "txn | create(\"fresh\") = \"0\";version(\"key1\") > \"0\";;put fresh new --lease=$L4;;;",
    "txn | mod(\"key1\") < \"1000\";;get key --prefix --keys-only;;;",
    "txn -w json | create(\"fresh\") = \"0\";;;put other x;;",
    "txn | value(\"key5\") = \"swapped\";;put dup 1;put dup 2;;;",
    "get fresh -w fields",
    "put key6 hihi --lease=$L4",
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

/// A test that fails half-way leaves no process behind.
impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
        let printed = self.wait_for(|l| l == line);
        let _ = self.child.kill();
        let _ = self.child.wait();
        printed
    }

    /// Waits until the process printed a line for which `wanted` holds;
    /// answers what it printed so far.
    fn wait_for(&self, wanted: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let printed = self.printed();
            if printed.lines().any(&wanted) {
                return printed;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the process never printed the line awaited; it printed {printed:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn printed(&self) -> String {
        self.printed.lock().expect("not poisoned").clone()
    }

    /// Stops the process with SIGTERM (etcdctl then unlocks, resigns) and
    /// answers everything it printed.
    fn terminate(mut self) -> String {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        // The reader thread reaches the end of the pipe once the process is gone.
        let started = Instant::now();
        let mut printed = self.printed();
        while started.elapsed() < std::time::Duration::from_millis(200) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            printed = self.printed();
        }
        printed
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

/// Lock and election keys end in the session's lease ID, which each
/// server picks, in hex without leading zeros (etcdctl's `%x`): up to 16
/// digits, fewer when the ID's top digits are zero (etcd's IDs sometimes
/// have 15).
fn without_ids(printed: &str) -> String {
    let id = regex_lite::Regex::new(r"/[0-9a-f]{1,16}\b").expect("regex");
    id.replace_all(printed, "/ID").into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_elect_print_the_same_against_tenure_and_etcd() {
    if !etcdctl_found() {
        return;
    }
    let Some(etcd) = start_etcd().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    let tenure = server.grpc.clone().expect("tenure serves gRPC");
    let mut printed = Vec::new();
    for address in [etcd.address().to_owned(), tenure] {
        let start = |args: &[&str]| {
            let mut command = Command::new("etcdctl");
            command
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={address}"))
                .args(args);
            Watching::spawn(command)
        };
        // A lock with a command: run while held, with the lock's key and
        // revision in its environment, then released.
        let out = etcdctl(
            &address,
            None,
            &[
                "lock",
                "job",
                "--",
                "sh",
                "-c",
                "echo \"running with $ETCD_LOCK_KEY at $ETCD_LOCK_REV\"",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let with_command = text(&out.stdout);
        // A lock held until SIGTERM: its key printed, then released.
        let held = start(&["lock", "job"]);
        held.wait_for(|l| l.starts_with("job/"));
        let held = held.terminate();
        let after = text(&etcdctl(&address, None, &["get", "job", "--prefix", "--keys-only"]).stdout);
        // An election: the campaigner prints its key and proposal once
        // leader; an observer prints the leader's proposal.
        let campaign = start(&["elect", "office", "p1"]);
        campaign.wait_for(|l| l == "p1");
        let observer = start(&["elect", "-l", "office"]);
        observer.wait_for(|l| l == "p1");
        let (observed, campaigned) = (observer.terminate(), campaign.terminate());
        printed.push([with_command, held, after, campaigned, observed].map(|p| without_ids(&p)));
    }
    let (theirs, ours) = (&printed[0], &printed[1]);
    assert_eq!(ours, theirs, "tenure (left) and etcd (right) differ");
    assert!(ours[0].starts_with("running with job/ID at "), "{}", ours[0]);
    assert_eq!(ours[2], "", "the lock was released");
}

/// The lock of a holder killed with SIGKILL passes to the next one once
/// the holder's lease runs out, and not before; `tenure lock` and
/// `etcdctl lock` contend for the same lock.
#[test]
fn a_lock_passes_on_when_its_holder_is_killed() {
    if !etcdctl_found() {
        return;
    }
    const TTL_S: u64 = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    let address = server.grpc.clone().expect("tenure serves gRPC");
    let lock = |tenure_cli: bool| {
        let mut command = if tenure_cli {
            let mut command = Command::new(common::binary::BIN);
            command.env("TENURE_ENDPOINT", &server.endpoint);
            command
        } else {
            let mut command = Command::new("etcdctl");
            command.env("ETCDCTL_API", "3").arg(format!("--endpoints={address}"));
            command
        };
        command.args(["lock", "--ttl", &TTL_S.to_string(), "the-lock"]);
        Watching::spawn(command)
    };
    let keys = || {
        text(&etcdctl(&address, None, &["get", "the-lock", "--prefix", "--keys-only"]).stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // The first holder is tenure's CLI, the second etcdctl: the two
    // follow the same recipe.
    let mut first = lock(true);
    let held = first.wait_for(|l| l.starts_with("the-lock/"));
    let first_key = held.lines().next().unwrap_or_default().to_owned();
    let second = lock(false);
    // The second has put its key and read who owns the lock: it waits.
    let started = Instant::now();
    while keys().len() < 2 {
        assert!(started.elapsed() < PATIENCE, "the second holder never queued");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(second.printed(), "", "two holders at once");

    let _ = first.child.kill(); // SIGKILL: no unlock, the lease must run out
    let _ = first.child.wait();
    let killed = Instant::now();
    let got = second.wait_for(|l| l.starts_with("the-lock/"));
    let waited = killed.elapsed();
    let second_key = got.lines().next().unwrap_or_default().to_owned();
    assert_ne!(second_key, first_key);
    assert_eq!(keys(), vec![second_key], "the killed holder's key went with its lease");
    assert!(
        waited <= std::time::Duration::from_secs(TTL_S + 2),
        "the lock passed on {waited:?} after the kill, with a {TTL_S} s lease"
    );
    second.terminate();
}

/// `tenure txn`, `tenure lock` and `tenure elect` against one server print
/// what etcdctl's do against another, the same commands sent to both.
#[test]
fn tenure_txn_lock_and_elect_print_what_etcdctl_prints() {
    if !etcdctl_found() {
        return;
    }
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let for_etcdctl = ServerProcess::start(dir_a.path(), &[]);
    let for_tenure = ServerProcess::start(dir_b.path(), &[]);
    let address = for_etcdctl.grpc.clone().expect("tenure serves gRPC");
    let ours = |args: &[&str], input: &str| {
        let mut child = Command::new(common::binary::BIN)
            .args(args)
            .env("TENURE_ENDPOINT", &for_tenure.endpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tenure");
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, input.as_bytes()).expect("stdin");
        }
        child.wait_with_output().expect("run tenure")
    };
    let theirs = |args: &[&str], input: &str| etcdctl_with_input(&address, None, args, input);
    let both = |args: &[&str], input: &str| {
        let (o, t) = (ours(args, input), theirs(args, input));
        assert_eq!(o.status.success(), t.status.success(), "{args:?}: {}", text(&o.stderr));
        (without_ids(&text(&o.stdout)), without_ids(&text(&t.stdout)))
    };
    for (args, input) in [
        (&["put", "k1", "v1"][..], ""),
        (&["put", "k2", "v2"][..], ""),
        (
            &["txn"][..],
            "value(\"k1\") = \"v1\"\n\nput k1 swapped --prev-kv\nget k2\n\nput k1 never\n\n",
        ),
        (
            &["txn"][..],
            "value(\"k1\") = \"v1\"\nmod(\"k2\") > \"0\"\n\nput k1 never\n\ndel k2 --prev-kv\nget k --prefix\n\n",
        ),
        (
            &["txn"][..],
            "create(\"k3\") = \"0\"\nversion(\"k1\") != \"7\"\n\nput k3 'with space'\nget k --prefix --keys-only\n\n\n",
        ),
        (&["txn"][..], "\n\nget k1\ndel nothing\n\n\n"),
        (
            &[
                "lock",
                "job",
                "--",
                "sh",
                "-c",
                "echo running with $ETCD_LOCK_KEY at $ETCD_LOCK_REV",
            ][..],
            "",
        ),
        (&["get", "job", "--prefix"][..], ""),
    ] {
        let (o, t) = both(args, input);
        assert_eq!(o, t, "{args:?} {input:?}: tenure (left) and etcdctl (right)");
    }

    // A lock held until SIGTERM, an election campaigned and observed.
    let spawn = |tenure_cli: bool, args: &[&str]| {
        let mut command = if tenure_cli {
            let mut command = Command::new(common::binary::BIN);
            command.env("TENURE_ENDPOINT", &for_tenure.endpoint);
            command
        } else {
            let mut command = Command::new("etcdctl");
            command.env("ETCDCTL_API", "3").arg(format!("--endpoints={address}"));
            command
        };
        command.args(args);
        Watching::spawn(command)
    };
    let mut printed = Vec::new();
    for tenure_cli in [true, false] {
        let held = spawn(tenure_cli, &["lock", "job"]);
        held.wait_for(|l| l.starts_with("job/"));
        let held = held.terminate();
        let campaign = spawn(tenure_cli, &["elect", "office", "p1"]);
        campaign.wait_for(|l| l == "p1");
        let observer = spawn(tenure_cli, &["elect", "-l", "office"]);
        observer.wait_for(|l| l == "p1");
        let (observed, campaigned) = (observer.terminate(), campaign.terminate());
        printed.push([held, campaigned, observed].map(|p| without_ids(&p)));
    }
    assert_eq!(printed[0], printed[1], "tenure (left) and etcdctl (right)");
    assert_eq!(printed[0][1], "office/ID\np1\n");
    for server in [&for_etcdctl, &for_tenure] {
        let left = etcdctl(
            server.grpc.as_deref().expect("gRPC"),
            None,
            &["get", "", "--prefix", "--keys-only"],
        );
        let keys = text(&left.stdout);
        assert!(
            !keys.contains("job/") && !keys.contains("office/"),
            "released and resigned: {keys}"
        );
    }
}

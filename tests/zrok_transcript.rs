//! The zrok reserved-share transcript (shared/seeds/000) through the real
//! `tenure` binary: reserve, a server restart, `share reserved` twice in a
//! row, a killed backend whose lease expires, and release.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::{signal, stderr, stdout, ServerProcess, BIN};

fn ok(server: &ServerProcess, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    stdout(&out)
}

/// A running `tenure share reserved`, and its stdout.
struct Backend {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Backend {
    fn start(server: &ServerProcess, args: &[&str]) -> Backend {
        let mut child = Command::new(BIN)
            .args(["share", "reserved"])
            .args(args)
            .env("TENURE_ENDPOINT", &server.endpoint)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn share reserved");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Backend { child, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read the backend's output");
        line
    }

    /// Ctrl-C: the backend ends its session and exits 0.
    fn interrupt(mut self) -> String {
        signal(self.child.id(), "INT");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "share reserved exited with {status}");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).expect("read the rest");
        rest
    }

    fn kill(mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `reservation get TOKEN` until its session line says `expect`.
fn wait_for_session(server: &ServerProcess, token: &str, expect: &str) {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let shown = ok(server, &["reservation", "get", token]);
        if shown.lines().any(|l| l.starts_with("session: ") && l.contains(expect)) {
            return;
        }
        assert!(Instant::now() < deadline, "session never became {expect:?}: {shown}");
        // A poll of the server's state, not a wait for a duration.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_zrok_reserved_share_transcript() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &["--domain", "zrok.example.com", "--frontend-port", "8080"]);

    // $ zrok reserve public http://localhost:9090
    let reserved = ok(&server, &["reserve", "public", "http://localhost:9090"]);
    let mut lines = reserved.lines();
    let token = lines
        .next()
        .and_then(|l| l.strip_prefix("your reserved share token is '"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("unexpected output {reserved:?}"))
        .to_owned();
    assert_eq!(token.len(), 12);
    assert!(
        token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{token}"
    );
    assert_eq!(
        lines.next(),
        Some(format!("your reserved share frontend is 'http://{token}.zrok.example.com:8080/'").as_str())
    );
    assert_eq!(lines.next(), None);
    let private = ok(
        &server,
        &[
            "reserve",
            "private",
            "http://localhost:9091",
            "--unique-name",
            "my-private",
        ],
    );
    assert_eq!(private, "your reserved share token is 'my-private'\n");
    let out = server.cli(&[
        "reserve",
        "private",
        "http://localhost:9091",
        "--unique-name",
        "my-private",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error: share 'my-private': the token is already reserved\n"
    );

    // The token survives a restart of the server.
    server.terminate();
    let server = ServerProcess::start(dir.path(), &["--domain", "zrok.example.com", "--frontend-port", "8080"]);

    // $ zrok share reserved TOKEN ... ^C
    let mut backend = Backend::start(&server, &[&token]);
    assert_eq!(backend.line(), "sharing target endpoint: 'http://localhost:9090'\n");
    assert_eq!(
        backend.line(),
        format!("your share is served at 'http://{token}.zrok.example.com:8080/'\n")
    );
    wait_for_session(&server, &token, "live session");
    // Only one live backend session.
    let out = server.cli(&["share", "reserved", &token]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "Error: share '{token}': the share already has a live backend session; stop it first or use --replace\n"
        )
    );
    assert_eq!(
        backend.interrupt(),
        format!("share '{token}' session ended; the reservation stays\n")
    );
    wait_for_session(&server, &token, "no session");
    assert_eq!(
        ok(&server, &["lease", "list"]),
        "found 0 leases\n",
        "Ctrl-C revoked the session's lease"
    );

    // $ zrok share reserved TOKEN (again), then the backend is killed: its
    // lease expires and the next backend needs no --replace.
    let mut backend = Backend::start(&server, &[&token, "--ttl", "2"]);
    assert_eq!(backend.line(), "sharing target endpoint: 'http://localhost:9090'\n");
    wait_for_session(&server, &token, "live session");
    backend.kill();
    wait_for_session(&server, &token, "(its lease ended)");
    let mut backend = Backend::start(&server, &[&token]);
    assert_eq!(backend.line(), "sharing target endpoint: 'http://localhost:9090'\n");
    backend.interrupt();

    // A private share says how to get access.
    let mut backend = Backend::start(&server, &["my-private"]);
    assert_eq!(backend.line(), "sharing target endpoint: 'http://localhost:9091'\n");
    assert_eq!(
        backend.line(),
        "use this command to access your share: 'tenure access private my-private'\n"
    );
    backend.interrupt();
    let access = ok(&server, &["access", "private", "my-private"]);
    let mut lines = access.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("access granted to private share 'my-private' (grant '")),
        "{access}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("send 'X-Tenure-Access: tnra_")
                && l.ends_with("' with each request to 'http://my-private.zrok.example.com:8080/'")),
        "{access}"
    );

    let listed = ok(&server, &["reservation", "list"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");

    // $ zrok release TOKEN
    assert_eq!(
        ok(&server, &["release", &token]),
        format!("reserved share '{token}' released\n")
    );
    let listed = ok(&server, &["reservation", "list"]);
    assert!(!listed.contains(&token), "{listed}");
    let out = server.cli(&["share", "reserved", &token]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), format!("Error: share '{token}': share not found\n"));
    server.terminate();
}

/// A GET through the proxy for `host` (one connection, closed after):
/// the status and the body.
fn get_through(proxy: &str, host: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let address = proxy.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the proxy");
    stream.set_read_timeout(Some(common::PATIENCE)).expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("the whole answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (status, body.to_owned())
}

/// zrok's `--backend-mode web`: `share reserved` serves the share's
/// directory itself, and the proxy routes the share's host to it while the
/// session lives.
#[test]
fn a_web_share_serves_its_directory_through_the_proxy_while_its_session_lives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("docs")).expect("site");
    std::fs::write(site.join("index.html"), "<h1>hello from a web share</h1>\n").expect("index");
    std::fs::write(site.join("docs/notes.txt"), "some notes\n").expect("notes");
    std::fs::write(dir.path().join("secret.txt"), "not for the web\n").expect("secret");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let proxy = server.proxy.clone().expect("the proxy runs");
    let site = site.to_str().expect("UTF-8 path").to_owned();

    let reserved = ok(&server, &["reserve", "public", &site, "--backend-mode", "web"]);
    let token = reserved
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("your reserved share token is '"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("unexpected output {reserved:?}"))
        .to_owned();
    let host = format!("{token}.tenure.localhost");
    assert_eq!(get_through(&proxy, &host, "/").0, 503, "no session yet");

    let mut backend = Backend::start(&server, &[&token]);
    let serving = backend.line();
    assert!(
        serving.starts_with(&format!("serving the files of '{site}' on http://127.0.0.1:")),
        "{serving:?}"
    );
    assert_eq!(backend.line(), format!("sharing target endpoint: '{site}'\n"));
    assert!(backend.line().starts_with("your share is served at"));
    wait_for_session(&server, &token, "live session");

    assert_eq!(
        get_through(&proxy, &host, "/"),
        (200, "<h1>hello from a web share</h1>\n".to_owned())
    );
    assert_eq!(
        get_through(&proxy, &host, "/docs/notes.txt"),
        (200, "some notes\n".to_owned())
    );
    let (status, listing) = get_through(&proxy, &host, "/docs/");
    assert_eq!(status, 200);
    assert!(
        listing.contains("notes.txt"),
        "a directory without index.html is listed: {listing}"
    );
    for escape in ["/../secret.txt", "/%2e%2e/secret.txt", "/docs/../../secret.txt"] {
        let (status, body) = get_through(&proxy, &host, escape);
        assert!(
            !body.contains("not for the web"),
            "{escape} left the directory: {status}"
        );
    }

    assert_eq!(
        backend.interrupt(),
        format!("share '{token}' session ended; the reservation stays\n")
    );
    wait_for_session(&server, &token, "no session");
    assert_eq!(get_through(&proxy, &host, "/").0, 503);
}

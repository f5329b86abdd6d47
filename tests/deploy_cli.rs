//! The Unikraft-style flow through the real binary: `service create`,
//! `deploy` kept alive until Ctrl-C, traffic through the proxy, and
//! `deploy -p` with its automatic service.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use common::binary::{signal, stderr, stdout, ServerProcess, BIN};

/// A real HTTP backend on a thread: answers every request with `name`.
fn backend(name: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                name.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

/// A GET through the proxy; answers the status line and body.
fn get(proxy: &str, host: &str) -> (String, String) {
    let addr = proxy.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect to the proxy");
    write!(stream, "GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

fn ok(server: &ServerProcess, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    stdout(&out)
}

/// `tenure deploy ...` running, with its first two lines read.
fn deploy(
    server: &ServerProcess,
    args: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>, String) {
    let mut child = Command::new(BIN)
        .arg("deploy")
        .args(args)
        .env("TENURE_ENDPOINT", &server.endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn deploy");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = String::new();
    for _ in 0..2 {
        out.read_line(&mut lines).expect("read deploy's output");
    }
    (child, out, lines)
}

fn interrupt(mut child: std::process::Child, mut out: BufReader<std::process::ChildStdout>) -> String {
    signal(child.id(), "INT");
    assert!(child.wait().expect("wait").success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read the rest");
    rest
}

#[test]
fn service_create_deploy_and_deploy_with_ports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[]);
    let proxy = server.proxy.clone().expect("the proxy listens");
    let (a, b) = (backend("a"), backend("b"));

    let created = ok(&server, &["service", "create", "my-service", "443:8080/tls+http"]);
    let mut lines = created.lines();
    assert!(lines.next().is_some_and(|l| l.starts_with("uuid: ")), "{created}");
    assert_eq!(lines.next(), Some("name: my-service"));
    let fqdn = lines
        .next()
        .and_then(|l| l.strip_prefix("fqdn: "))
        .expect("an fqdn")
        .to_owned();
    let out = server.cli(&["service", "create", "bad", "443:8080/http"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error: ports[0] (443): port 443 needs the tls and http handlers\n"
    );

    let (first, first_out, printed) = deploy(
        &server,
        &["--name", "web-1", "--service", "my-service", "--address", &a],
    );
    assert_eq!(
        printed,
        format!("instance 'web-1' attached to service 'my-service'\nurl: http://{fqdn}:8080/\n")
    );
    let (second, second_out, _) = deploy(
        &server,
        &["--name", "web-2", "--service", "my-service", "--address", &b],
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (status, body) = get(&proxy, &fqdn);
        assert_eq!(status, "HTTP/1.1 200 OK");
        seen.insert(body);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    let listed = ok(&server, &["service", "list"]);
    assert_eq!(listed, format!("my-service {fqdn} 443:8080/tls+http instances=2/2\n"));

    assert_eq!(interrupt(first, first_out), "instance 'web-1' removed\n");
    for _ in 0..5 {
        assert_eq!(get(&proxy, &fqdn).1, "b");
    }
    interrupt(second, second_out);
    let (status, body) = get(&proxy, &fqdn);
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body, format!("no live instance for host '{fqdn}'\n"));
    assert_eq!(
        ok(&server, &["service", "rm", "my-service"]),
        "service 'my-service' removed\n"
    );

    // deploy -p: a service made for the instance, gone with it.
    let (auto, auto_out, printed) = deploy(&server, &["--name", "auto-1", "-p", "443:8080", "--address", &a]);
    let url = printed
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("url: http://"))
        .expect("url")
        .to_owned();
    let auto_fqdn = url.split(':').next().expect("host").to_owned();
    assert_eq!(get(&proxy, &auto_fqdn).1, "a");
    assert_eq!(
        interrupt(auto, auto_out),
        "instance 'auto-1' removed\nservice 'auto-1' removed with its last instance\n"
    );
    assert_eq!(ok(&server, &["service", "list"]), "");
    assert_eq!(get(&proxy, &auto_fqdn).0, "HTTP/1.1 404 Not Found");
    server.terminate();
}

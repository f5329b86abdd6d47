//! A real etcd 3.4 (Debian's `etcd-server`, which `.ci/run` installs) on
//! loopback, for the differential tests. Without an `etcd` binary a test
//! says so and skips, unless `TENURE_REQUIRE_ETCD=1` (as in CI), where a
//! missing etcd fails it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PATIENCE;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Etcd {
    child: Child,
    /// `http://127.0.0.1:PORT`, the client URL (gateway and gRPC).
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// The client address as etcdctl's `--endpoints` takes it.
    pub fn address(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `binary` (from Debian's `package`) runs; if not, says the test
/// skips, or fails it when CI requires etcd (`TENURE_REQUIRE_ETCD=1`).
pub fn found(binary: &str, version_arg: &str, package: &str) -> bool {
    let found = Command::new(binary)
        .arg(version_arg)
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("TENURE_REQUIRE_ETCD").as_deref() != Ok("1"),
            "TENURE_REQUIRE_ETCD=1 but there is no {binary} binary (apt-get install {package})"
        );
        eprintln!("SKIPPED: no {binary} on PATH; install Debian's {package} to run this test");
    }
    found
}

/// Starts a single-member etcd on loopback, or None (with the reason
/// printed) when there is no etcd binary and CI does not require one.
pub async fn start_etcd() -> Option<Etcd> {
    if !found("etcd", "--version", "etcd-server") {
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--name",
            "default",
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args([
            "--initial-cluster",
            &format!("default={peer_url}"),
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let etcd = Etcd {
        child,
        endpoint,
        _dir: dir,
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = http
            .post(format!("{}/v3/kv/range", etcd.endpoint))
            .body(r#"{"key":"AA=="}"#)
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Some(etcd);
        }
        assert!(started.elapsed() < PATIENCE, "etcd did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! The real `tenure` binary: a server process on 127.0.0.1:0 and CLI runs.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

pub const BIN: &str = env!("CARGO_BIN_EXE_tenure");

pub struct ServerProcess {
    pub child: Child,
    pub endpoint: String,
    /// The data-plane proxy's address (`http://127.0.0.1:PORT`).
    pub proxy: Option<String>,
    /// etcd's gRPC API (`127.0.0.1:PORT`, as etcdctl's `--endpoints` takes it).
    pub grpc: Option<String>,
    /// Everything the server printed on stdout so far (read by a thread).
    pub stdout: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `tenure serve` on a free port and waits for its "listening" line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        ServerProcess::start_logging(data_dir, extra, "warn", Stdio::inherit())
    }

    /// Like [`ServerProcess::start`] with a log level (`RUST_LOG`) and a
    /// destination for the server's stderr (its log).
    pub fn start_logging(data_dir: &Path, extra: &[&str], level: &str, log: Stdio) -> ServerProcess {
        ServerProcess::start_env(data_dir, extra, level, log, &[])
    }

    /// Like [`ServerProcess::start_logging`] with environment variables.
    pub fn start_env(data_dir: &Path, extra: &[&str], level: &str, log: Stdio, env: &[(&str, &str)]) -> ServerProcess {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--proxy-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", level)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn tenure serve");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let printed = Arc::new(Mutex::new(String::new()));
        let mut proxy = None;
        let mut grpc = None;
        let endpoint = loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read the server's stdout");
            assert!(n > 0, "the server exited before listening; it printed {printed:?}");
            printed.lock().expect("not poisoned").push_str(&line);
            if let Some(address) = line.trim().strip_prefix("tenure proxy listening on http://") {
                proxy = Some(format!("http://{address}"));
            }
            if let Some(address) = line.trim().strip_prefix("tenure gRPC listening on ") {
                grpc = Some(address.to_owned());
            }
            if let Some(endpoint) = line.trim().strip_prefix("tenure listening on ") {
                break endpoint.to_owned();
            }
        };
        // Keep reading, so the server never blocks on a full pipe and the
        // test can see everything it printed.
        let sink = Arc::clone(&printed);
        let reader = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            sink.lock().expect("not poisoned").push_str(&rest);
        });
        ServerProcess {
            child,
            endpoint,
            proxy,
            grpc,
            stdout: printed,
            reader: Some(reader),
        }
    }

    /// A CLI command against this server, with a token in `TENURE_TOKEN`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("TENURE_ENDPOINT", &self.endpoint)
            .env("TENURE_TOKEN", token)
            .output()
            .expect("run tenure")
    }

    /// A CLI command against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("TENURE_ENDPOINT", &self.endpoint)
            .output()
            .expect("run tenure")
    }

    /// Stops with SIGTERM and waits; the server shuts down cleanly.
    pub fn terminate(mut self) {
        signal(self.child.id(), "TERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "server exited with {status}");
    }

    /// Stops with SIGTERM, waits for a clean exit, and answers everything
    /// it printed on stdout.
    pub fn terminate_and_collect(mut self) -> String {
        signal(self.child.id(), "TERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "server exited with {status}");
        // The reader thread ends at EOF, which the exit just caused.
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stdout reader");
        }
        let printed = self.stdout.lock().expect("not poisoned").clone();
        printed
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with the system's `kill` command (no unsafe code here).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

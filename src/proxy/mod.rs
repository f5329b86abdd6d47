//! The data-plane frontend: an HTTP/1.1 reverse proxy that routes by the
//! Host header using the routing table projection.
//!
//! - **Routes without a lock per request**: the projector publishes the
//!   routes as an `Arc` swapped whole (`arc_swap`); the proxy keeps its own
//!   table (the same routes plus a connection counter and idle connections
//!   per backend), rebuilt only when the published routes change, also
//!   behind an `ArcSwap`.
//! - **Least connections**: each request goes to the live backend with the
//!   fewest requests in flight (ties rotate). A request counts until its
//!   answer has been passed on whole.
//! - **Pass-through** (`http1`): heads are parsed with `httparse` and
//!   rewritten; bodies go through as they come, with their framing
//!   (`framing`), neither buffered whole nor re-encoded.
//! - **Errors** are short plain-text bodies naming the host: unknown host
//!   404, no live backend 503, backend refused 502, backend too slow 504,
//!   private share without a valid grant 403.
//! - **Metrics**: every answer whose head the proxy sends is counted by
//!   status (its own refusals and backends' answers), and the time from a
//!   request sent to a backend to its answer's head is observed; both are
//!   atomics, the status's counter resolved once.

mod framing;
mod head;
mod http1;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::BytesMut;
use tenure_projections::{Route, Routes};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a backend may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a backend may take to answer, by default.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle backend connection is kept.
const BACKEND_IDLE: Duration = Duration::from_secs(60);
/// How many idle connections are kept per backend (per worker thread).
const MAX_IDLE: usize = 256;

/// The header carrying a private share's access grant.
pub const ACCESS_HEADER: &str = "x-tenure-access";

type HostMap<V> = std::collections::HashMap<String, V, foldhash::fast::RandomState>;

/// Requests in flight per backend address, over every worker thread: the
/// least-connections choice and the dashboard read it. A worker looks its
/// counter up once, when a backend enters its table, not per request.
#[derive(Default)]
pub struct InFlight {
    counters: parking_lot::Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl InFlight {
    fn counter(&self, address: &str) -> Arc<AtomicUsize> {
        Arc::clone(self.counters.lock().entry(address.to_owned()).or_default())
    }

    /// Requests in flight by backend address (`HOST:PORT`); backends no
    /// worker uses any more are forgotten.
    pub fn snapshot(&self) -> HashMap<String, usize> {
        let mut counters = self.counters.lock();
        counters.retain(|_, c| Arc::strong_count(c) > 1 || c.load(Ordering::Relaxed) > 0);
        counters
            .iter()
            .map(|(address, c)| (address.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A backend: its requests in flight (shared by the workers) and this
/// worker's idle connections to it.
struct Backend {
    address: String,
    active: Arc<AtomicUsize>,
    idle: parking_lot::Mutex<Vec<BackendConn>>,
}

/// A connection to a backend, with what was read from it and not used.
struct BackendConn {
    stream: TcpStream,
    buf: BytesMut,
    since: Instant,
}

impl BackendConn {
    fn new(stream: TcpStream) -> BackendConn {
        BackendConn {
            stream,
            buf: BytesMut::new(),
            since: Instant::now(),
        }
    }

    /// Whether the backend has closed (or written to) the connection while
    /// it sat idle: its socket is readable. Asks the runtime's readiness,
    /// not the kernel.
    fn is_stale(&self) -> bool {
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        self.since.elapsed() > BACKEND_IDLE || self.stream.poll_read_ready(&mut cx).is_ready()
    }
}

impl Backend {
    fn new(address: &str, in_flight: &InFlight) -> Backend {
        Backend {
            address: address.to_owned(),
            active: in_flight.counter(address),
            idle: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// An idle connection that still looks open, if any.
    fn checkout(&self) -> Option<BackendConn> {
        let mut idle = self.idle.lock();
        while let Some(conn) = idle.pop() {
            if !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose last exchange ended cleanly.
    fn checkin(&self, mut conn: BackendConn) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            conn.since = Instant::now();
            idle.push(conn);
        }
    }
}

/// Counts a request in flight against its backend until dropped.
struct Active(Arc<Backend>);

impl Active {
    fn new(backend: &Arc<Backend>) -> Active {
        backend.active.fetch_add(1, Ordering::Relaxed);
        Active(Arc::clone(backend))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Target {
    Service {
        backends: Vec<Arc<Backend>>,
        redirect_http: bool,
    },
    Share {
        backend: Option<Arc<Backend>>,
        /// The target's path, prefixed to request paths.
        prefix: String,
        grants: Option<BTreeSet<String>>,
    },
}

impl Target {
    /// The backend for a request to `host` and the prefix of its path, or
    /// why there is none.
    fn route<'t>(
        &'t self,
        proxy: &Proxy,
        host: &str,
        scheme: &str,
        path: &str,
        headers: &[httparse::Header<'_>],
    ) -> Result<(Arc<Backend>, &'t str), Refusal> {
        match self {
            Target::Service {
                backends,
                redirect_http,
            } => {
                if *redirect_http && scheme == "http" {
                    return Err(Refusal::redirect(host, path));
                }
                match proxy.least_connections(backends) {
                    Some(backend) => Ok((backend, "")),
                    None => Err(Refusal::new(503, format!("no live instance for host '{host}'\n"))),
                }
            }
            Target::Share {
                backend,
                prefix,
                grants,
            } => {
                if let Some(grants) = grants {
                    let granted = headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case(ACCESS_HEADER))
                        .filter_map(|h| std::str::from_utf8(h.value).ok())
                        .any(|secret| grants.contains(&crate::auth::sha256_hex(secret.trim())));
                    if !granted {
                        return Err(Refusal::new(
                            403,
                            format!("host '{host}' is a private share: send an access grant in X-Tenure-Access\n"),
                        ));
                    }
                }
                match backend {
                    None => Err(Refusal::new(
                        503,
                        format!("no live backend session for host '{host}'\n"),
                    )),
                    Some(backend) => Ok((Arc::clone(backend), prefix.as_str())),
                }
            }
        }
    }
}

/// An answer the proxy makes itself: a status and a short text naming the
/// host.
struct Refusal {
    status: u16,
    message: String,
    location: Option<String>,
    /// Whether the client connection may carry another request after.
    keep_alive: bool,
    /// The request was HEAD: the answer has no body.
    head_only: bool,
}

impl Refusal {
    fn new(status: u16, message: String) -> Refusal {
        Refusal {
            status,
            message,
            location: None,
            keep_alive: true,
            head_only: false,
        }
    }

    fn bad_request(why: &str) -> Refusal {
        Refusal {
            keep_alive: false,
            ..Refusal::new(400, format!("bad request: {why}\n"))
        }
    }

    fn too_large() -> Refusal {
        Refusal {
            keep_alive: false,
            ..Refusal::new(431, "the request head is too large\n".to_owned())
        }
    }

    fn method_not_allowed() -> Refusal {
        Refusal::new(405, "this proxy does not tunnel CONNECT\n".to_owned())
    }

    fn no_route(host: &str) -> Refusal {
        Refusal::new(404, format!("no route for host '{host}'\n"))
    }

    fn redirect(host: &str, path: &str) -> Refusal {
        let location = format!("https://{host}{path}");
        Refusal {
            message: format!("moved to {location}\n"),
            location: Some(location),
            ..Refusal::new(301, String::new())
        }
    }

    fn dropped(host: &str) -> Refusal {
        Refusal::new(
            502,
            format!("the backend of host '{host}' refused or dropped the connection\n"),
        )
    }

    fn invalid_answer(host: &str) -> Refusal {
        Refusal::new(502, format!("the backend of host '{host}' sent an invalid answer\n"))
    }

    fn connect_timeout(host: &str) -> Refusal {
        Refusal::new(
            504,
            format!("the backend of host '{host}' did not accept the connection in time\n"),
        )
    }

    fn answer_timeout(host: &str) -> Refusal {
        Refusal::new(504, format!("the backend of host '{host}' did not answer in time\n"))
    }

    fn reason(&self) -> &'static str {
        match self.status {
            301 => "Moved Permanently",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "",
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
            self.status,
            self.reason(),
            self.message.len()
        );
        if let Some(location) = &self.location {
            let _ = write!(out, "location: {location}\r\n");
        }
        if !self.keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(self.message.as_bytes());
        }
    }
}

/// The proxy's table: built from `source`, with backends (counters and
/// idle connections) that survive rebuilds.
struct Table {
    source: Arc<Routes>,
    hosts: HostMap<Entry>,
}

/// A host's target, and the host's name for error messages.
struct Entry {
    host: Arc<str>,
    target: Target,
}

/// One worker thread's proxy: its table and its backends.
pub struct Proxy {
    projections: Arc<crate::actors::Projections>,
    table: ArcSwap<Table>,
    rebuild: parking_lot::Mutex<()>,
    next: AtomicUsize,
    /// How long a backend may take to answer (504 after).
    backend_timeout: Duration,
    in_flight: Arc<InFlight>,
    /// Answers by status, backends' latency.
    metrics: crate::metrics::ProxyMetrics,
}

impl Proxy {
    pub fn new(
        projections: Arc<crate::actors::Projections>,
        backend_timeout: Duration,
        in_flight: Arc<InFlight>,
        metrics: crate::metrics::ProxyMetrics,
    ) -> Proxy {
        let source = projections.routes.load_full();
        let table = build(&source, None, &in_flight);
        Proxy {
            projections,
            table: ArcSwap::from_pointee(table),
            rebuild: parking_lot::Mutex::new(()),
            next: AtomicUsize::new(0),
            backend_timeout,
            in_flight,
            metrics,
        }
    }

    /// The current table, rebuilt first if the routes changed.
    fn table(&self) -> Arc<Table> {
        let table = self.table.load_full();
        let routes = self.projections.routes.load();
        if Arc::ptr_eq(&table.source, &routes) {
            return table;
        }
        // Routes changed: one request rebuilds, the others use the old table.
        let Some(_rebuilding) = self.rebuild.try_lock() else {
            return table;
        };
        let fresh = Arc::new(build(&routes.clone(), Some(&table), &self.in_flight));
        self.table.store(Arc::clone(&fresh));
        fresh
    }

    fn least_connections(&self, backends: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = backends.len();
        (0..n)
            .map(|i| &backends[(start + i) % n])
            .min_by_key(|b| b.active.load(Ordering::Relaxed))
            .cloned()
    }
}

/// Builds the proxy's table from the routes, keeping the backends that
/// `previous` already had.
fn build(routes: &Arc<Routes>, previous: Option<&Table>, in_flight: &InFlight) -> Table {
    let mut known: HostMap<Arc<Backend>> = HostMap::default();
    if let Some(previous) = previous {
        for entry in previous.hosts.values() {
            let backends: Vec<&Arc<Backend>> = match &entry.target {
                Target::Service { backends, .. } => backends.iter().collect(),
                Target::Share { backend, .. } => backend.iter().collect(),
            };
            for b in backends {
                known.insert(b.address.clone(), Arc::clone(b));
            }
        }
    }
    let backend = |address: &str| {
        known
            .get(address)
            .cloned()
            .unwrap_or_else(|| Arc::new(Backend::new(address, in_flight)))
    };
    let mut hosts = HostMap::default();
    for (host, route) in &routes.hosts {
        let target = match route {
            Route::Service {
                backends,
                redirect_http,
            } => Target::Service {
                backends: backends.iter().map(|a| backend(a)).collect(),
                redirect_http: *redirect_http,
            },
            Route::Share { target, grants, .. } => {
                let (address, prefix) = match target.as_deref().map(split_target) {
                    Some((address, prefix)) => (Some(address), prefix),
                    None => (None, String::new()),
                };
                Target::Share {
                    backend: address.map(|a| backend(&a)),
                    prefix,
                    grants: grants.clone(),
                }
            }
        };
        let entry = Entry {
            host: Arc::from(host.as_str()),
            target,
        };
        hosts.insert(host.clone(), entry);
    }
    Table {
        source: Arc::clone(routes),
        hosts,
    }
}

/// A share target URL as `HOST:PORT` and a path prefix (without a trailing `/`).
fn split_target(target: &str) -> (String, String) {
    match url::Url::parse(target) {
        Ok(url) => {
            let host = url.host_str().unwrap_or("localhost");
            let port = url.port_or_known_default().unwrap_or(80);
            let path = url.path().trim_end_matches('/').to_owned();
            (format!("{host}:{port}"), path)
        }
        Err(_) => (target.to_owned(), String::new()),
    }
}

/// Reads a certificate chain and its private key (PEM files) into a TLS
/// acceptor (rustls with the ring provider; HTTP/1.1).
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not make a TLS configuration")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `stop` fires: plain HTTP, or
/// HTTPS when given a TLS acceptor (TLS is terminated here).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "proxy accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let (rd, wr) = stream.split();
                    http1::serve(&proxy, rd, wr, peer, "http").await;
                }
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let (rd, wr) = tokio::io::split(stream);
                        http1::serve(&proxy, rd, wr, peer, "https").await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
}

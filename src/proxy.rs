//! The data-plane frontend: an HTTP reverse proxy that routes by the Host
//! header using the routing table projection.
//!
//! - **Routes without a lock per request**: the projector publishes the
//!   routes as an `Arc` swapped whole (`arc_swap`); the proxy keeps its own
//!   table (the same routes plus a connection counter per backend), rebuilt
//!   only when the published routes change, also behind an `ArcSwap`.
//! - **Least connections**: each request goes to the live backend with the
//!   fewest requests in flight (ties rotate). A request counts until its
//!   response body has been sent.
//! - **Streaming**: request and response bodies pass through as they come;
//!   neither is buffered whole.
//! - **Errors** are short plain-text bodies naming the host: unknown host
//!   404, no live backend 503, backend refused 502, backend too slow 504,
//!   private share without a valid grant 403.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tenure_events::BackendMode;
use tenure_projections::{Route, Routes};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a backend may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a backend may take to answer, by default.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The header carrying a private share's access grant.
pub const ACCESS_HEADER: &str = "x-tenure-access";

type Body = BoxBody<Bytes, hyper::Error>;

/// A backend and its requests in flight.
struct Backend {
    address: String,
    /// `address` parsed once, for request URIs and the Host header.
    authority: Option<hyper::http::uri::Authority>,
    host_header: Option<HeaderValue>,
    active: AtomicUsize,
}

impl Backend {
    fn new(address: &str) -> Backend {
        Backend {
            address: address.to_owned(),
            authority: address.parse().ok(),
            host_header: HeaderValue::from_str(address).ok(),
            active: AtomicUsize::new(0),
        }
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
        web: bool,
        grants: Option<std::collections::BTreeSet<String>>,
    },
}

/// The proxy's table: built from `source`, with counters that survive
/// rebuilds.
struct Table {
    source: Arc<Routes>,
    hosts: HashMap<String, Target>,
}

pub struct Proxy {
    projections: Arc<crate::actors::Projections>,
    table: ArcSwap<Table>,
    rebuild: parking_lot::Mutex<()>,
    client: Client<HttpConnector, Incoming>,
    next: AtomicUsize,
    /// How long a backend may take to answer (504 after).
    backend_timeout: Duration,
}

impl Proxy {
    pub fn new(projections: Arc<crate::actors::Projections>, backend_timeout: Duration) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let source = projections.routes.load_full();
        let table = build(&source, None);
        Proxy {
            projections,
            table: ArcSwap::from_pointee(table),
            rebuild: parking_lot::Mutex::new(()),
            client,
            next: AtomicUsize::new(0),
            backend_timeout,
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
        let fresh = Arc::new(build(&routes.clone(), Some(&table)));
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

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>, client: SocketAddr, scheme: &'static str) -> Response<Body> {
        let Some(host) = host_of(&req) else {
            return text(StatusCode::BAD_REQUEST, "no Host header\n".into());
        };
        let table = self.table();
        let Some((host, target)) = table.hosts.get_key_value(host.as_ref()) else {
            return text(StatusCode::NOT_FOUND, format!("no route for host '{host}'\n"));
        };
        // From here `host` is the table's copy: `req` is free to move.
        let host = host.as_str();
        let (backend, prefix) = match target {
            Target::Service {
                backends,
                redirect_http,
            } => {
                if *redirect_http && scheme == "http" {
                    return redirect(host, &req);
                }
                match self.least_connections(backends) {
                    Some(backend) => (backend, String::new()),
                    None => {
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("no live instance for host '{host}'\n"),
                        )
                    }
                }
            }
            Target::Share {
                backend,
                prefix,
                web,
                grants,
            } => {
                if let Some(grants) = grants {
                    let granted = req
                        .headers()
                        .get(ACCESS_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|secret| grants.contains(&crate::auth::sha256_hex(secret.trim())));
                    if !granted {
                        return text(
                            StatusCode::FORBIDDEN,
                            format!("host '{host}' is a private share: send an access grant in X-Tenure-Access\n"),
                        );
                    }
                }
                match backend {
                    None => {
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("no live backend session for host '{host}'\n"),
                        )
                    }
                    Some(_) if *web => {
                        return text(
                            StatusCode::NOT_IMPLEMENTED,
                            format!("host '{host}' is a web (files) share, which this proxy does not serve yet\n"),
                        )
                    }
                    Some(backend) => (Arc::clone(backend), prefix.clone()),
                }
            }
        };
        self.forward(req, host, backend, &prefix, client, scheme).await
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        host: &str,
        backend: Arc<Backend>,
        prefix: &str,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Response<Body> {
        let path_and_query = if prefix.is_empty() {
            req.uri().path_and_query().cloned()
        } else {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            format!("{prefix}{path}").parse().ok()
        };
        let mut parts = hyper::http::uri::Parts::default();
        parts.scheme = Some(hyper::http::uri::Scheme::HTTP);
        parts.authority = backend.authority.clone();
        parts.path_and_query = path_and_query.or_else(|| Some(hyper::http::uri::PathAndQuery::from_static("/")));
        let Ok(uri) = hyper::Uri::from_parts(parts) else {
            return text(StatusCode::BAD_REQUEST, format!("bad request path for host '{host}'\n"));
        };
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        let original_host = headers.get(HOST).cloned();
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {}", client.ip()),
            None => client.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
        if let Some(original) = original_host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), original);
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(scheme),
        );
        if let Some(value) = backend.host_header.clone() {
            headers.insert(HOST, value);
        }

        backend.active.fetch_add(1, Ordering::Relaxed);
        let guard = Active(Arc::clone(&backend));
        match tokio::time::timeout(self.backend_timeout, self.client.request(req)).await {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = Tracked {
                    inner: body,
                    _active: guard,
                }
                .boxed();
                Response::from_parts(parts, body)
            }
            Ok(Err(e)) if is_timeout(&e) => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the backend of host '{host}' did not accept the connection in time\n"),
            ),
            Ok(Err(e)) => {
                tracing::debug!(%host, backend = %backend.address, error = %e, "backend failed");
                text(
                    StatusCode::BAD_GATEWAY,
                    format!("the backend of host '{host}' refused or dropped the connection\n"),
                )
            }
            Err(_) => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the backend of host '{host}' did not answer in time\n"),
            ),
        }
    }
}

/// Builds the proxy's table from the routes, keeping the counters of
/// backends that `previous` already had.
fn build(routes: &Arc<Routes>, previous: Option<&Table>) -> Table {
    let mut known: HashMap<&str, Arc<Backend>> = HashMap::new();
    if let Some(previous) = previous {
        for target in previous.hosts.values() {
            let backends: Vec<&Arc<Backend>> = match target {
                Target::Service { backends, .. } => backends.iter().collect(),
                Target::Share { backend, .. } => backend.iter().collect(),
            };
            for b in backends {
                known.insert(b.address.as_str(), Arc::clone(b));
            }
        }
    }
    let backend = |address: &str| {
        known
            .get(address)
            .cloned()
            .unwrap_or_else(|| Arc::new(Backend::new(address)))
    };
    let mut hosts = HashMap::new();
    for (host, route) in &routes.hosts {
        let target = match route {
            Route::Service {
                backends,
                redirect_http,
            } => Target::Service {
                backends: backends.iter().map(|a| backend(a)).collect(),
                redirect_http: *redirect_http,
            },
            Route::Share {
                target,
                backend_mode,
                grants,
            } => {
                let (address, prefix) = match target.as_deref().map(split_target) {
                    Some((address, prefix)) => (Some(address), prefix),
                    None => (None, String::new()),
                };
                Target::Share {
                    backend: address.map(|a| backend(&a)),
                    prefix,
                    web: *backend_mode == BackendMode::Web,
                    grants: grants.clone(),
                }
            }
        };
        hosts.insert(host.clone(), target);
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

/// The request's host, lowercase, without a port.
fn host_of(req: &Request<Incoming>) -> Option<std::borrow::Cow<'_, str>> {
    let raw = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())?;
    let host = match raw.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => raw,
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(host))
    }
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if err.to_string().contains("timed out") {
            return true;
        }
        source = err.source();
    }
    false
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn redirect(host: &str, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut response = text(
        StatusCode::MOVED_PERMANENTLY,
        format!("moved to https://{host}{path}\n"),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{path}")) {
        response.headers_mut().insert(hyper::header::LOCATION, location);
    }
    response
}

/// Counts a request in flight against its backend until dropped.
struct Active(Arc<Backend>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted until it is done.
struct Tracked {
    inner: Incoming,
    _active: Active,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
        let (stream, peer) = tokio::select! {
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
                None => serve_connection(stream, proxy, peer, "http").await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, proxy, peer, "https").await,
                    Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
}

async fn serve_connection<S>(stream: S, proxy: Arc<Proxy>, peer: SocketAddr, scheme: &'static str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer, scheme).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "proxy connection ended with an error");
    }
}

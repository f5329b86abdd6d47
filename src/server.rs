//! Starting and stopping a whole server: store, actors, projector, expiry
//! driver, HTTP. [`start`] returns a handle whose [`Running::stop`] shuts it
//! down, so tests run servers in-process on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_rt::Arbiter;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tokio::sync::watch;

use crate::actors::{projector, Hub, Projections, Registry, RuntimeConfig};
use crate::auth::Authenticator;
use crate::clock::{Clock, SystemClock};
use crate::control::Control;
use crate::metrics::{Metrics, ProxyMetrics};
use crate::snapshot::Snapshots;
use crate::store::{EventStore, LogStore, PostgresStore, PostgresTarget, SqliteStore};

/// Everything a server is started with.
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The node's own files: the embedded log (unless `store` names
    /// another), snapshots, the admin token's hash.
    pub data_dir: PathBuf,
    /// The shared log in PostgreSQL; `None`: the embedded one in `data_dir`.
    pub store: Option<PostgresTarget>,
    pub min_ttl_s: i64,
    pub passivate_after: Duration,
    /// Threads the entity actors run on.
    pub actor_threads: usize,
    /// HTTP worker threads.
    pub http_workers: usize,
    pub clock: Arc<dyn Clock>,
    /// `None`: local mode (one `default` account, loopback only). `Some`:
    /// bearer tokens on every request; see [`AuthConfig`].
    pub auth: Option<AuthConfig>,
    /// The frontend's domain: shares are `TOKEN.DOMAIN`.
    pub domain: String,
    /// The frontend's public port, as it appears in share URLs.
    pub frontend_port: u16,
    /// Where the data-plane proxy listens (plain HTTP); `None`: no proxy.
    pub proxy_listen: Option<SocketAddr>,
    /// Where etcd's gRPC API listens (`crate::grpc`); `None`: not served.
    /// `tenure serve` serves it on 127.0.0.1:2379, etcd's client port.
    pub grpc_listen: Option<SocketAddr>,
    /// Threads of the proxy's runtime.
    pub proxy_threads: usize,
    /// Where the proxy terminates TLS, with which certificate and key.
    pub proxy_tls: Option<ProxyTls>,
    /// How long a backend may take to answer the proxy (504 after).
    pub proxy_backend_timeout: Duration,
    /// When snapshots are written, and whether a start reads them.
    pub snapshots: crate::snapshot::SnapshotConfig,
    /// Where other nodes of a shared log reach this one's HTTP API
    /// (`None`: `http://` and the address it listens on).
    pub advertise_url: Option<String>,
}

/// The proxy's HTTPS listener.
#[derive(Clone, Debug)]
pub struct ProxyTls {
    pub listen: SocketAddr,
    /// PEM: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Token authentication (`tenure serve --auth`).
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// The admin token (read from `--admin-token-file`). Without it, the
    /// first start generates one, keeps its hash in the data directory and
    /// reports it once in [`Running::generated_admin_token`].
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ServerConfig {
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:7070";
    pub const DEFAULT_MIN_TTL_S: i64 = 2;
    pub const DEFAULT_PASSIVATE_AFTER_S: u64 = 60;
    /// `*.localhost` resolves to the loopback address without DNS.
    pub const DEFAULT_DOMAIN: &'static str = "tenure.localhost";
    pub const DEFAULT_FRONTEND_PORT: u16 = 8080;

    /// The defaults, storing in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: data_dir.into(),
            store: None,
            min_ttl_s: Self::DEFAULT_MIN_TTL_S,
            passivate_after: Duration::from_secs(Self::DEFAULT_PASSIVATE_AFTER_S),
            // Half the cores: the HTTP workers and the store's writer need
            // the rest, and fewer actor threads batch more per wake-up (on
            // 2 cores, one actor thread cut the CPU per grant by ~14% and
            // per put by ~10%: ops/bench/RESULTS.md, "CPU per durable request").
            actor_threads: (cores / 2).clamp(1, 4),
            // Half the cores too: a worker that has the next request waiting
            // handles it without sleeping, and on 2 cores one worker cut
            // the CPU per put by ~19% and per grant by ~13%, requests/s
            // the same or more (ops/bench/RESULTS.md, "One HTTP worker").
            http_workers: (cores / 2).max(1),
            clock: Arc::new(SystemClock),
            auth: None,
            domain: Self::DEFAULT_DOMAIN.into(),
            frontend_port: Self::DEFAULT_FRONTEND_PORT,
            proxy_listen: Some(SocketAddr::from(([127, 0, 0, 1], Self::DEFAULT_FRONTEND_PORT))),
            grpc_listen: None,
            proxy_threads: cores,
            proxy_tls: None,
            proxy_backend_timeout: crate::proxy::DEFAULT_BACKEND_TIMEOUT,
            snapshots: crate::snapshot::SnapshotConfig::default(),
            advertise_url: None,
        }
    }
}

/// A started server.
pub struct Running {
    /// Where the HTTP API listens (the real port when asked for port 0).
    pub addr: SocketAddr,
    pub control: Control,
    /// The admin token generated at this first start with auth, to be shown
    /// once; `None` on every other start.
    pub generated_admin_token: Option<String>,
    /// Where the proxy listens, if it runs.
    pub proxy_addr: Option<SocketAddr>,
    /// Where the proxy terminates TLS, if it does.
    pub proxy_tls_addr: Option<SocketAddr>,
    /// Where etcd's gRPC API listens, if it is served.
    pub grpc_addr: Option<SocketAddr>,
    proxy_runtime: Option<ProxyRuntime>,
    pub store: LogStore,
    /// What happened to snapshots (restored, refused, written).
    pub snapshots: Arc<Snapshots>,
    /// This node's candidacy for the timers, on a shared log.
    election: Option<crate::store::Election>,
    /// Answered once the snapshot writer has written its last snapshots
    /// after the stop signal.
    snapshots_done: Option<tokio::sync::oneshot::Receiver<()>>,
    http: actix_web::dev::ServerHandle,
    stop: watch::Sender<bool>,
    arbiters: Vec<Arbiter>,
}

/// Starts a server: opens the store, catches the projections up with the
/// log, recovers keys left on ended leases, starts the expiry driver and
/// then the HTTP API. Must run inside an actix system.
pub async fn start(config: ServerConfig) -> anyhow::Result<Running> {
    let addresses = std::iter::once(config.listen)
        .chain(config.proxy_listen)
        .chain(config.grpc_listen)
        .chain(config.proxy_tls.as_ref().map(|t| t.listen));
    for address in addresses {
        if config.auth.is_none() && !address.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {address} without --auth: local mode has no authentication and binds loopback only"
            );
        }
    }
    let (authenticator, generated_admin_token) = match &config.auth {
        None => (Authenticator::Local, None),
        Some(auth) => {
            let (admin_sha256, generated) = crate::auth::admin_token(auth.admin_token.as_deref(), &config.data_dir)?;
            (Authenticator::Tokens { admin_sha256 }, generated)
        }
    };
    let metrics = Metrics::new();
    let store = match &config.store {
        None => LogStore::Embedded(
            SqliteStore::open_with_metrics(&config.data_dir, Some(metrics.store.clone()))
                .with_context(|| format!("opening the event log in {}", config.data_dir.display()))?,
        ),
        Some(target) => LogStore::Postgres(
            PostgresStore::open_target(target.clone(), Some(metrics.store.clone()))
                .with_context(|| format!("opening the event log in PostgreSQL ({target:?})"))?,
        ),
    };
    let epoch = config.clock.now();
    let arbiters: Vec<Arbiter> = (0..config.actor_threads.max(1)).map(|_| Arbiter::new()).collect();
    let handles: Vec<_> = arbiters.iter().map(Arbiter::handle).collect();
    let shared_store: Arc<dyn EventStore> = store.shared();
    let snapshots = match store {
        LogStore::Embedded(_) => Snapshots::open(&config.data_dir, config.snapshots.clone()),
        LogStore::Postgres(_) => Snapshots::open_own(&config.data_dir, config.snapshots.clone()),
    };
    let snapshots =
        Arc::new(snapshots.with_context(|| format!("opening the snapshots in {}", config.data_dir.display()))?);
    // The newest valid snapshot of the projections, then the tail of the log.
    let (restored, projections) = match snapshots
        .restore_projections(&shared_store, epoch, &config.domain)
        .await
    {
        Some((mark, set)) => (mark, Projections::restored(mark.at, set)),
        None => (Default::default(), Projections::new(epoch, &config.domain)),
    };
    let projections = Arc::new(projections);
    let hub = Arc::new(Hub {
        store: Arc::clone(&shared_store),
        clock: Arc::clone(&config.clock),
        config: RuntimeConfig {
            min_ttl_s: config.min_ttl_s,
            passivate_after: config.passivate_after,
            epoch,
            domain: config.domain.clone(),
            frontend_port: config.frontend_port,
        },
        leases: Registry::new(handles.clone(), metrics.actors("lease")),
        keyspaces: Registry::new(handles.clone(), metrics.actors("keyspace")),
        accounts: Registry::new(handles.clone(), metrics.actors("account")),
        shares: Registry::new(handles.clone(), metrics.actors("share")),
        workloads: Registry::new(handles.clone(), metrics.actors("workload")),
        services: Registry::new(handles.clone(), metrics.actors("service")),
        instances: Registry::new(handles.clone(), metrics.actors("instance")),
        projections: Arc::clone(&projections),
        revisions: Default::default(),
        metrics: metrics.clone(),
        snapshots: Some(Arc::clone(&snapshots)),
        leading: std::sync::atomic::AtomicBool::new(!shared_store.is_shared()),
    });
    let (stop, stopped) = watch::channel(false);

    let head = shared_store.head();
    handles[0].spawn(projector::run(
        Arc::clone(&shared_store),
        Arc::clone(&projections),
        stopped.clone(),
    ));
    projections.caught_up(head).await;
    // Every key space at once: each loads its snapshot and its stream's
    // tail on the blocking pool, side by side (recovery then asks them one
    // by one). A snapshot request that is never due is just an activation.
    let accounts: Vec<tenure_events::AccountId> = projections.catalog.lock().keyspaces().cloned().collect();
    let activated: Vec<_> = accounts
        .iter()
        .map(|account| {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let activate = crate::actors::keyspace::TakeSnapshot {
                every_events: Some(u64::MAX),
                reply,
            };
            hub.keyspaces
                .route(&hub, account, crate::actors::Activation::Load, activate);
            answer
        })
        .collect();
    futures::future::join_all(activated).await;
    let shared = shared_store.is_shared();
    let (role_tx, role) = watch::channel(crate::store::Role::default());
    let mut control = Control::new(Arc::clone(&hub), authenticator);
    if shared {
        // Another node may run the timers: until this one does, deadlines
        // here do not decide (see `crate::cluster`).
        projections.expiry.lock().follow_timers();
        control = control.with_cluster(crate::cluster::Cluster::new(role.clone()));
    }
    crate::actors::follow::install(&hub);
    let cleaned = control
        .recover_lease_keys()
        .await
        .context("recovering keys of ended leases")?;
    tracing::info!(
        position = head,
        from_snapshot = restored.at,
        live_leases = projections.expiry.lock().len(),
        recovered_leases = cleaned,
        "event log replayed"
    );
    let snapshots_done = if config.snapshots.write {
        let (done, snapshots_done) = tokio::sync::oneshot::channel();
        handles[handles.len() - 1].spawn(crate::snapshot::run(
            Arc::clone(&hub),
            Arc::clone(&snapshots),
            stopped.clone(),
            restored,
            done,
        ));
        Some(snapshots_done)
    } else {
        None
    };
    let stopped_proxy = stopped.clone();
    handles[handles.len() - 1].spawn(crate::cluster::run_timers(
        control.clone(),
        shared.then_some(role),
        stopped,
    ));

    let in_flight = Arc::new(crate::proxy::InFlight::default());
    let tls = match &config.proxy_tls {
        Some(tls) => Some((tls.listen, crate::proxy::tls_acceptor(&tls.cert, &tls.key)?)),
        None => None,
    };
    let (proxy_addr, proxy_tls_addr, proxy_runtime) = if config.proxy_listen.is_some() || tls.is_some() {
        let (plain, tls, runtime) = start_proxy(
            config.proxy_listen,
            tls,
            &config,
            &projections,
            &in_flight,
            &metrics.proxy,
            stopped_proxy,
        )?;
        (plain, tls, Some(runtime))
    } else {
        (None, None, None)
    };

    let watches = crate::watch::Watches::start(store.shared(), control.closing());
    let app_watches = web::Data::new(watches.clone());
    let app_control = control.clone();
    let app_in_flight = web::Data::from(in_flight);
    let http_metrics = metrics.http.clone();
    let server = HttpServer::new(move || {
        // Once per worker, on its thread.
        crate::actors::registry::serve_requests_here();
        let http_metrics = http_metrics.clone();
        App::new()
            .app_data(web::Data::new(app_control.clone()))
            .app_data(app_watches.clone())
            .app_data(app_in_flight.clone())
            .wrap(actix_web::middleware::from_fn(
                move |req: actix_web::dev::ServiceRequest,
                      next: actix_web::middleware::Next<actix_web::body::BoxBody>| {
                    let http_metrics = http_metrics.clone();
                    async move {
                        let started = std::time::Instant::now();
                        let method = req.method().clone();
                        let res = match crate::api::wait_for_min_position(&req).await {
                            Ok(()) => next.call(req).await,
                            Err(refused) => {
                                let answer = actix_web::ResponseError::error_response(&refused);
                                Ok(req.into_response(answer))
                            }
                        };
                        let mut res = crate::api::count_request(&http_metrics, &method, started, res)?;
                        crate::api::request_id_header(&mut res);
                        crate::api::position_header(&mut res);
                        crate::api::log_server_error(&res);
                        Ok::<_, actix_web::Error>(res)
                    }
                },
            ))
            .wrap(tracing_actix_web::TracingLogger::<crate::api::RootSpan>::new())
            .configure(crate::api::configure)
    })
    .workers(config.http_workers.max(1))
    .disable_signals()
    .shutdown_timeout(5)
    .bind(config.listen)
    .with_context(|| format!("listening on {}", config.listen))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .context("the HTTP server bound no address")?;
    let election = match &config.store {
        Some(target) if shared => {
            let url = config.advertise_url.clone().unwrap_or_else(|| format!("http://{addr}"));
            Some(crate::store::Election::start(target.clone(), url, role_tx).context("standing for the timers")?)
        }
        _ => None,
    };
    let grpc_addr = match config.grpc_listen {
        Some(listen) => {
            let listener =
                std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen} (gRPC)"))?;
            Some(crate::grpc::start(
                control.clone(),
                watches.clone(),
                listener,
                &handles[0],
            )?)
        }
        None => None,
    };
    let server = server.run();
    let http = server.handle();
    actix_rt::spawn(server);
    Ok(Running {
        addr,
        control,
        generated_admin_token,
        proxy_addr,
        proxy_tls_addr,
        grpc_addr,
        proxy_runtime,
        store,
        snapshots,
        election,
        snapshots_done,
        http,
        stop,
        arbiters,
    })
}

/// The proxy's worker threads. They stop when the stop signal fires (or
/// its sender is dropped).
struct ProxyRuntime {
    _workers: Vec<std::thread::JoinHandle<()>>,
}

/// Starts the proxy: `threads` worker threads, each with its own
/// single-threaded runtime, its own listeners on the same addresses
/// (`SO_REUSEPORT`, the kernel spreads connections) and its own backend
/// connection pool, so a request never crosses threads (as nginx's worker
/// processes). Answers the bound addresses.
fn start_proxy(
    plain: Option<SocketAddr>,
    tls: Option<(SocketAddr, tokio_rustls::TlsAcceptor)>,
    config: &ServerConfig,
    projections: &Arc<Projections>,
    in_flight: &Arc<crate::proxy::InFlight>,
    metrics: &ProxyMetrics,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Option<SocketAddr>, Option<SocketAddr>, ProxyRuntime)> {
    let mut plain_addr = plain;
    let mut tls_addr = tls.as_ref().map(|(address, _)| *address);
    let acceptor = tls.map(|(_, acceptor)| acceptor);
    let mut workers = Vec::new();
    let backend_timeout = config.proxy_backend_timeout;
    for worker in 0..config.proxy_threads.max(1) {
        let (bound_tx, bound_rx) =
            std::sync::mpsc::channel::<anyhow::Result<(Option<SocketAddr>, Option<SocketAddr>)>>();
        let (plain, tls) = (plain_addr, tls_addr);
        let acceptor = acceptor.clone();
        let projections = Arc::clone(projections);
        let in_flight = Arc::clone(in_flight);
        let metrics = metrics.clone();
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tenure-proxy-{worker}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = bound_tx.send(Err(anyhow::Error::new(e).context("starting a proxy worker")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let bound = (|| -> anyhow::Result<_> {
                        let plain = plain.map(reuse_port_listener).transpose()?;
                        let tls = tls.map(reuse_port_listener).transpose()?;
                        Ok((plain, tls))
                    })();
                    let (plain, tls) = match bound {
                        Ok(listeners) => listeners,
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                            return;
                        }
                    };
                    let addr = |l: &Option<tokio::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
                    let _ = bound_tx.send(Ok((addr(&plain), addr(&tls))));
                    let proxy = Arc::new(crate::proxy::Proxy::new(
                        projections,
                        backend_timeout,
                        in_flight,
                        metrics,
                    ));
                    let plain = async {
                        if let Some(listener) = plain {
                            crate::proxy::serve(listener, Arc::clone(&proxy), None, stop.clone()).await;
                        }
                    };
                    let tls = async {
                        if let (Some(listener), Some(acceptor)) = (tls, acceptor) {
                            crate::proxy::serve(listener, Arc::clone(&proxy), Some(acceptor), stop.clone()).await;
                        }
                    };
                    futures::join!(plain, tls);
                });
            })
            .context("starting a proxy worker")?;
        workers.push(handle);
        // The first worker's bind fixes the ports (when asked for port 0)
        // for the others.
        let (plain, tls) = bound_rx.recv().context("a proxy worker stopped before listening")??;
        plain_addr = plain;
        tls_addr = tls;
    }
    Ok((plain_addr, tls_addr, ProxyRuntime { _workers: workers }))
}

/// A listener on `address` that other workers can share (`SO_REUSEPORT`).
fn reuse_port_listener(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .context("proxy socket")?;
    socket.set_reuseaddr(true).context("proxy socket")?;
    #[cfg(unix)]
    socket.set_reuseport(true).context("proxy socket")?;
    socket
        .bind(address)
        .with_context(|| format!("proxy listening on {address}"))?;
    socket
        .listen(1024)
        .with_context(|| format!("proxy listening on {address}"))
}

impl Running {
    /// Stops taking requests (finishing those in flight), stops the actors
    /// and closes the store.
    pub async fn stop(self) {
        // Live event streams end first, so the graceful stop need not wait for them.
        self.control.close();
        self.http.stop(true).await;
        // Another node may take the timers over at once.
        // (Joins its thread, which ends at once: a short block.)
        if let Some(mut election) = self.election {
            election.stop();
        }
        let _ = self.stop.send(true);
        // The snapshot writer takes its last snapshots while the actors
        // still run.
        if let Some(done) = self.snapshots_done {
            let _ = done.await;
        }
        // The proxy's workers end with the stop signal sent above.
        drop(self.proxy_runtime);
        for arbiter in self.arbiters {
            arbiter.stop();
            let _ = arbiter.join();
        }
        self.store.close();
    }
}

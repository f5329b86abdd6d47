//! The server's metrics, served in Prometheus's text format at `GET /metrics`.
//!
//! Every collector is defined here, in one [`Metrics`] per server: its own
//! `prometheus::Registry`, no process globals, so servers started in one
//! process (the tests') count apart. The server builds it and hands each
//! part to whoever moves it: [`StoreMetrics`] to the store's writer,
//! [`LeaseMetrics`] and [`ActorMetrics`] to the actors, [`ProxyMetrics`] to
//! the proxy's workers, [`HttpMetrics`] to the HTTP middleware. What is a
//! state rather than a count (live leases, active actors, projection lag) is
//! read when scraped ([`Observed`]), so nothing moves it per event.
//!
//! Cost on the hot paths: a counter or a histogram is a few relaxed atomic
//! adds. Handles with labels are resolved once and kept (the store writer's
//! per event type, the proxy's per status), except the HTTP API's, resolved
//! per request (a hash of three short strings, against a request that costs
//! tens of microseconds anyway).
//!
//! **Label cardinality is bounded**: HTTP by route *pattern* (never the
//! path), method (known methods, else `other`) and status; events by type
//! name; actors and projections by kind; the proxy by status code (three
//! digits). No lease ID, key, host or account name is ever a label.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `Content-Type` of the text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every collector of one server. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics(Arc<Collectors>);

impl std::ops::Deref for Metrics {
    type Target = Collectors;

    fn deref(&self) -> &Collectors {
        &self.0
    }
}

pub struct Collectors {
    registry: Registry,
    pub leases: LeaseMetrics,
    pub store: StoreMetrics,
    pub http: HttpMetrics,
    pub proxy: ProxyMetrics,
    /// Keys held by the key spaces (each adds its own share, see [`GaugeShare`]).
    pub keys: IntGauge,
    /// Key space appends that conflicted with another node's (a shared
    /// log) and were rolled back in memory instead of reloading the stream.
    pub keyspace_rollbacks: IntCounter,
    actors_activated: IntCounterVec,
    actors_passivated: IntCounterVec,
    // Read when scraped.
    leases_live: IntGauge,
    actors_active: IntGaugeVec,
    projection_lag: IntGaugeVec,
    log_head: IntGauge,
}

/// The lease counters (etcd's `etcd_debugging_lease_*`) and the expiry lag.
#[derive(Clone)]
pub struct LeaseMetrics {
    pub granted: IntCounter,
    pub renewed: IntCounter,
    pub revoked: IntCounter,
    pub expired: IntCounter,
    /// Seconds from a lease's deadline to its expiry (by the server's clock).
    pub expiry_lag: Histogram,
}

/// The store writer's: what it appends and how long commits take.
#[derive(Clone)]
pub struct StoreMetrics {
    /// By `event_type`; the writer keeps the handle of each type it has seen.
    pub events: IntCounterVec,
    /// Events per group commit (one transaction, one fsync).
    pub batch_events: Histogram,
    /// Seconds of each COMMIT: the WAL written and fsynced (on PostgreSQL,
    /// a batch written in one statement counts that whole statement).
    pub fsync: Histogram,
    /// Seconds from an append being queued to its answer (durable or not).
    pub append_latency: Histogram,
    /// Group commits on PostgreSQL by `path`: `planned` by the writer while
    /// no other node appended, `placed` by PostgreSQL otherwise
    /// (`store::pg`).
    pub shared_batches: IntCounterVec,
    /// Events of other nodes a PostgreSQL node follows, by `from`:
    /// `notice` (carried by the notification) or `log` (read).
    pub followed: IntCounterVec,
}

/// The HTTP API's requests.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

/// The data-plane proxy's requests.
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: IntCounterVec,
    /// The counter of each status, resolved on first use (statuses have three digits).
    by_status: Arc<[OnceLock<IntCounter>]>,
    /// Seconds from the request sent to a backend to its answer's head.
    pub upstream: Histogram,
}

/// One kind of entity actor's activation and passivation counters.
#[derive(Clone)]
pub struct ActorMetrics {
    /// The kind (`lease`, `keyspace`, ...): the label value.
    pub kind: &'static str,
    pub activated: IntCounter,
    pub passivated: IntCounter,
}

/// What is read from the server's state when scraped.
pub struct Observed {
    /// Leases in the expiry queue (granted, not yet revoked or expired).
    pub leases_live: usize,
    /// Entity actors in memory, by kind.
    pub actors_active: Vec<(&'static str, usize)>,
    /// Each projection's applied position.
    pub projections: Vec<(&'static str, u64)>,
    /// The log's last durable position.
    pub head: u64,
}

/// Statuses are three digits; anything else is counted as 0.
const STATUSES: usize = 1000;

/// The methods counted under their own name; any other is `other`, so a
/// client cannot mint label values.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| register(&registry, IntCounter::with_opts(Opts::new(name, help)));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let gauge = |name: &str, help: &str| register(&registry, IntGauge::with_opts(Opts::new(name, help)));
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(
                &registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
            )
        };
        // 100 µs to 3.3 s.
        let latency = || buckets(0.0001, 16);

        let leases = LeaseMetrics {
            granted: counter("tenure_leases_granted_total", "Leases granted."),
            renewed: counter("tenure_leases_renewed_total", "Lease keep-alives (renewals)."),
            revoked: counter("tenure_leases_revoked_total", "Leases revoked."),
            expired: counter("tenure_leases_expired_total", "Leases expired."),
            // 1 ms to 65 s.
            expiry_lag: histogram(
                "tenure_lease_expiry_lag_seconds",
                "Seconds from a lease's deadline to its expiry event, by the server's clock.",
                buckets(0.001, 17),
            ),
        };
        let store = StoreMetrics {
            events: counter_vec(
                "tenure_events_appended_total",
                "Events appended to the log (durable), by type.",
                &["event_type"],
            ),
            batch_events: histogram(
                "tenure_store_batch_events",
                "Events per group commit (one transaction, one fsync).",
                buckets(1.0, 16),
            ),
            fsync: histogram(
                "tenure_store_fsync_seconds",
                "Seconds of each group commit's COMMIT (WAL write and fsync; on PostgreSQL a one-statement batch counts the statement).",
                latency(),
            ),
            append_latency: histogram(
                "tenure_store_append_seconds",
                "Seconds from an append being queued to the store's answer.",
                latency(),
            ),
            shared_batches: counter_vec(
                "tenure_store_batches_total",
                "Group commits on a PostgreSQL log, by path: planned by the writer while no other node appended, placed by PostgreSQL otherwise.",
                &["path"],
            ),
            followed: counter_vec(
                "tenure_store_followed_events_total",
                "Events a PostgreSQL node follows (other nodes' appends, or its own it could not broadcast), by where it got them: from the notification (notice) or by reading the log (log).",
                &["from"],
            ),
        };
        let http = HttpMetrics {
            requests: counter_vec(
                "tenure_http_requests_total",
                "HTTP API requests answered, by method, route pattern and status.",
                &["method", "route", "status"],
            ),
            duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tenure_http_request_duration_seconds",
                        "Seconds to answer an HTTP API request (to the response head), by method and route pattern.",
                    )
                    .buckets(latency()),
                    &["method", "route"],
                ),
            ),
        };
        let proxy = ProxyMetrics {
            requests: counter_vec(
                "tenure_proxy_requests_total",
                "Requests the data-plane proxy answered (its own refusals and backends' answers), by status.",
                &["status"],
            ),
            by_status: (0..STATUSES).map(|_| OnceLock::new()).collect(),
            upstream: histogram(
                "tenure_proxy_upstream_seconds",
                "Seconds from a request sent to a backend to the head of its answer.",
                latency(),
            ),
        };
        Metrics(Arc::new(Collectors {
            leases,
            store,
            http,
            proxy,
            keys: gauge("tenure_keys", "Keys in every key space."),
            keyspace_rollbacks: counter(
                "tenure_keyspace_rollbacks_total",
                "Key space appends that conflicted with another node's on a shared log; the key space put back its unacknowledged changes and folded the other node's.",
            ),
            actors_activated: counter_vec(
                "tenure_actors_activated_total",
                "Entity actors activated (loaded into memory), by kind.",
                &["kind"],
            ),
            actors_passivated: counter_vec(
                "tenure_actors_passivated_total",
                "Entity actors passivated (freed when idle), by kind.",
                &["kind"],
            ),
            leases_live: gauge(
                "tenure_leases_live",
                "Live leases (granted, not yet revoked or expired).",
            ),
            actors_active: gauge_vec("tenure_actors_active", "Entity actors in memory, by kind.", &["kind"]),
            projection_lag: gauge_vec(
                "tenure_projection_lag_positions",
                "Log positions a projection has yet to apply (the head minus its position).",
                &["projection"],
            ),
            log_head: gauge("tenure_log_head_position", "Position of the last durable event."),
            registry,
        }))
    }

    /// The counters of one kind of entity actor.
    pub fn actors(&self, kind: &'static str) -> ActorMetrics {
        ActorMetrics {
            kind,
            activated: self.actors_activated.with_label_values(&[kind]),
            passivated: self.actors_passivated.with_label_values(&[kind]),
        }
    }

    /// Every metric in the text format, with the states in `observed`.
    pub fn render(&self, observed: &Observed) -> Result<String, prometheus::Error> {
        self.leases_live.set(to_i64(observed.leases_live as u64));
        for (kind, active) in &observed.actors_active {
            self.actors_active
                .with_label_values(&[kind])
                .set(to_i64(*active as u64));
        }
        for (name, position) in &observed.projections {
            let lag = observed.head.saturating_sub(*position);
            self.projection_lag.with_label_values(&[name]).set(to_i64(lag));
        }
        self.log_head.set(to_i64(observed.head));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

impl HttpMetrics {
    /// Counts one answered request: `route` is the matched route's
    /// pattern (`None`: no route matched).
    pub fn record(&self, method: &str, route: Option<&str>, status: u16, took: Duration) {
        let method = METHODS.iter().find(|m| **m == method).copied().unwrap_or("other");
        let route = route.unwrap_or("unmatched");
        let mut code = [0u8; 3];
        let status = status_text(status, &mut code);
        self.requests.with_label_values(&[method, route, status]).inc();
        self.duration
            .with_label_values(&[method, route])
            .observe(took.as_secs_f64());
    }
}

impl ProxyMetrics {
    /// Counts one answer with this status.
    pub fn answered(&self, status: u16) {
        let index = usize::from(status);
        let index = if index < STATUSES { index } else { 0 };
        self.by_status[index]
            .get_or_init(|| {
                let mut code = [0u8; 3];
                self.requests.with_label_values(&[status_text(index as u16, &mut code)])
            })
            .inc();
    }
}

/// A key space's share of a gauge summed over every key space: it sets its
/// own value, and takes it back when it stops (so a key space reloaded after
/// a failure is not counted twice).
pub struct GaugeShare {
    gauge: IntGauge,
    value: i64,
}

impl GaugeShare {
    pub fn new(gauge: IntGauge) -> GaugeShare {
        GaugeShare { gauge, value: 0 }
    }

    pub fn set(&mut self, value: usize) {
        let value = to_i64(value as u64);
        self.gauge.add(value - self.value);
        self.value = value;
    }
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        self.gauge.sub(self.value);
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, made: prometheus::Result<C>) -> C {
    // The names and labels are the constants above: an error is a bug.
    let collector = made.expect("a valid metric definition");
    registry
        .register(Box::new(collector.clone()))
        .expect("each metric is registered once");
    collector
}

/// `count` buckets doubling from `start`.
fn buckets(start: f64, count: usize) -> Vec<f64> {
    exponential_buckets(start, 2.0, count).expect("valid bucket bounds")
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `status` as three ASCII digits (`000` for anything that has not three).
fn status_text(status: u16, buf: &mut [u8; 3]) -> &str {
    let status = if (100..STATUSES as u16).contains(&status) {
        status
    } else {
        0
    };
    buf[0] = b'0' + (status / 100) as u8;
    buf[1] = b'0' + (status / 10 % 10) as u8;
    buf[2] = b'0' + (status % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("000")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed() -> Observed {
        Observed {
            leases_live: 2,
            actors_active: vec![("lease", 3)],
            projections: vec![("expiry", 7)],
            head: 10,
        }
    }

    #[test]
    fn each_server_counts_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.leases.granted.inc();
        assert_eq!(a.leases.granted.get(), 1);
        assert_eq!(b.leases.granted.get(), 0);
    }

    #[test]
    fn labels_are_bounded_and_states_read_when_scraped() {
        let metrics = Metrics::new();
        metrics
            .http
            .record("BREW", Some("/v1/leases/{id}"), 404, Duration::from_millis(1));
        metrics.http.record("GET", None, 404, Duration::from_millis(1));
        metrics.proxy.answered(502);
        metrics.proxy.answered(502);
        metrics.proxy.answered(7);
        let text = metrics.render(&observed()).expect("renders");
        for line in [
            r#"tenure_http_requests_total{method="other",route="/v1/leases/{id}",status="404"} 1"#,
            r#"tenure_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
            r#"tenure_proxy_requests_total{status="502"} 2"#,
            r#"tenure_proxy_requests_total{status="000"} 1"#,
            "tenure_leases_live 2",
            r#"tenure_actors_active{kind="lease"} 3"#,
            r#"tenure_projection_lag_positions{projection="expiry"} 3"#,
            "tenure_log_head_position 10",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn a_gauge_share_is_taken_back_when_dropped() {
        let metrics = Metrics::new();
        let mut a = GaugeShare::new(metrics.keys.clone());
        let mut b = GaugeShare::new(metrics.keys.clone());
        a.set(3);
        b.set(4);
        a.set(1);
        assert_eq!(metrics.keys.get(), 5);
        drop(b);
        assert_eq!(metrics.keys.get(), 1);
    }
}

//! A small, allocation-light Prometheus registry with Linkerd's metric names.
//!
//! Why hand-rolled: the hot path only touches atomics on series that were resolved once per
//! backend (at table compile time), and the few response series per backend (one per status
//! code) live in a short vector behind an uncontended mutex. No label strings are built per
//! request. Rendering walks the registry on scrape only.
//!
//! Label values are bounded by construction: directions, configured authorities, backend
//! names and labels from the route table, rule names from the route table, status codes, a
//! fixed set of error kinds and errno names. The request path or a client-supplied authority
//! never becomes a label.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Linkerd's `response_latency_ms` bucket bounds.
pub const LATENCY_BUCKETS_MS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
    10000, 20000, 30000, 40000, 50000,
];

/// `tcp_connection_duration_ms` bucket bounds: decades from 1 ms to about 2.8 hours, as
/// Linkerd's proxy buckets connection lifetimes.
pub const CONNECTION_DURATION_BUCKETS_MS: [u64; 8] =
    [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// Linkerd's `tls` labels while the connection carries no mTLS identity, per direction: the
/// outbound side has none because service discovery gave no identity to expect, the inbound
/// side because the client presented none.
fn tls_labels(direction: &str) -> &'static str {
    match direction {
        "outbound" => "tls=\"no_identity\",no_tls_reason=\"not_provided_by_service_discovery\"",
        _ => "tls=\"no_identity\",no_tls_reason=\"no_tls_from_remote\"",
    }
}

/// The `errno` label value of an OS error code: its Linux symbolic name for the errors a
/// proxy's sockets meet, `other` for the rest (so the label stays bounded).
pub fn errno_name(code: Option<i32>) -> &'static str {
    match code {
        Some(1) => "EPERM",
        Some(4) => "EINTR",
        Some(5) => "EIO",
        Some(9) => "EBADF",
        Some(11) => "EAGAIN",
        Some(12) => "ENOMEM",
        Some(13) => "EACCES",
        Some(22) => "EINVAL",
        Some(23) => "ENFILE",
        Some(24) => "EMFILE",
        Some(32) => "EPIPE",
        Some(71) => "EPROTO",
        Some(97) => "EAFNOSUPPORT",
        Some(98) => "EADDRINUSE",
        Some(99) => "EADDRNOTAVAIL",
        Some(100) => "ENETDOWN",
        Some(101) => "ENETUNREACH",
        Some(103) => "ECONNABORTED",
        Some(104) => "ECONNRESET",
        Some(105) => "ENOBUFS",
        Some(107) => "ENOTCONN",
        Some(110) => "ETIMEDOUT",
        Some(111) => "ECONNREFUSED",
        Some(112) => "EHOSTDOWN",
        Some(113) => "EHOSTUNREACH",
        _ => "other",
    }
}

/// Why a response counts as a failure when the proxy (not the upstream) decided it. Each is a
/// stable, low-cardinality `error` label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// No route for the authority (404).
    NoRoute,
    /// The chosen backend has no endpoints (503).
    NoEndpoints,
    /// The chosen backend comes from an invalid reference, e.g. to a Service that does not
    /// exist (500, as Gateway API requires).
    InvalidBackend,
    /// Connecting to the endpoint failed (502).
    Connect,
    /// The upstream failed after connecting, before a response (502).
    Upstream,
    /// The route timeout elapsed before response headers (504).
    Timeout,
    /// The response body stream broke after the headers were sent.
    Stream,
    /// The proxy is shutting down.
    Shutdown,
    /// Nothing moved for the body idle timeout: the upstream stopped mid-body, stopped reading
    /// the request body, or sent no response head on a route without its own `timeout`.
    IdleTimeout,
}

impl ErrorKind {
    /// The `error` label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::NoEndpoints => "no_endpoints",
            ErrorKind::InvalidBackend => "invalid_backend",
            ErrorKind::Connect => "connect",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Stream => "stream",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::IdleTimeout => "idle_timeout",
        }
    }
}

/// `grpc_status` of a response whose `grpc-status` is not one of the 17 codes gRPC defines
/// (0-16) or not a number: one `grpc_status="unknown"` series, so an upstream cannot create
/// series at will.
pub const GRPC_STATUS_UNKNOWN: u32 = u32::MAX;

/// Reads a `grpc-status` value as a bounded label: 0-16, else [`GRPC_STATUS_UNKNOWN`].
pub fn grpc_status_code(v: &[u8]) -> u32 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|c| *c <= 16)
        .unwrap_or(GRPC_STATUS_UNKNOWN)
}

/// What a finished response looked like, for `response_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Outcome {
    /// HTTP status code sent to the client.
    pub status: u16,
    /// gRPC status when the response was gRPC and carried one: 0-16 or
    /// [`GRPC_STATUS_UNKNOWN`].
    pub grpc_status: Option<u32>,
    /// Set when the proxy itself failed the request or the stream broke.
    pub error: Option<ErrorKind>,
}

impl Outcome {
    /// Linkerd's classification: 5xx, a non-zero `grpc-status` or a proxy error is a failure.
    pub fn is_failure(&self) -> bool {
        self.status >= 500 || self.grpc_status.is_some_and(|g| g != 0) || self.error.is_some()
    }
}

/// Observations per bucket, each counted once, plus those above the last bound. `+Inf` and
/// `_count` are rendered from the same loads as the buckets (never from a separate total),
/// so a scrape that races requests still shows a cumulative histogram whose `+Inf` is its
/// `_count`.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    overflow: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // Buckets are cumulative on render; store each observation once, in the first bucket
        // whose bound (`le`, inclusive) holds it.
        match LATENCY_BUCKETS_MS.iter().position(|&b| us <= b * 1000) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.overflow.fetch_add(1, Relaxed),
        };
        self.sum_us.fetch_add(us, Relaxed);
    }
}

/// `tcp_connection_duration_ms`: connection lifetimes.
/// Like [`Histogram`]: `+Inf` and `_count` come from the buckets and the overflow.
#[derive(Default)]
struct ConnectionHistogram {
    buckets: [AtomicU64; CONNECTION_DURATION_BUCKETS_MS.len()],
    overflow: AtomicU64,
    sum_ms: AtomicU64,
}

impl ConnectionHistogram {
    fn observe(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match CONNECTION_DURATION_BUCKETS_MS.iter().position(|&b| ms <= b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.overflow.fetch_add(1, Relaxed),
        };
        self.sum_ms.fetch_add(ms, Relaxed);
    }
}

/// The series of one status code of one [`RouteMetrics`]: its latency histogram and its
/// `response_total` counters.
#[derive(Default)]
pub struct StatusSeries {
    latency: Histogram,
    /// Responses with no gRPC status and no error (nearly all of them), counted without a lock.
    plain: AtomicU64,
    /// The other outcomes (bounded: 18 gRPC statuses × the error kinds), found in O(log n).
    responses: Mutex<BTreeMap<Outcome, u64>>,
}

impl StatusSeries {
    /// Counts a finished response (`response_total`); `outcome.status` must be this series'.
    pub fn response(&self, outcome: Outcome) {
        if outcome.grpc_status.is_none() && outcome.error.is_none() {
            self.plain.fetch_add(1, Relaxed);
            return;
        }
        let mut v = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        *v.entry(outcome).or_insert(0) += 1;
    }

    /// All outcomes counted so far, plain ones first.
    fn outcomes(&self, status: u16) -> Vec<(Outcome, u64)> {
        let mut out = Vec::new();
        let plain = self.plain.load(Relaxed);
        if plain > 0 {
            let o = Outcome {
                status,
                grpc_status: None,
                error: None,
            };
            out.push((o, plain));
        }
        out.extend(
            self.responses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(o, n)| (*o, *n)),
        );
        out
    }
}

/// Request/response series for one label set (direction, authority, backend, identity).
/// Resolved once per backend and held by the compiled route table.
pub struct RouteMetrics {
    labels: String,
    requests: AtomicU64,
    /// Per status code, found in O(log n) (at most the 900 three-digit codes).
    by_status: Mutex<BTreeMap<u16, Arc<StatusSeries>>>,
}

impl RouteMetrics {
    fn new(labels: String) -> Arc<Self> {
        Arc::new(RouteMetrics {
            labels,
            requests: AtomicU64::new(0),
            by_status: Mutex::new(BTreeMap::new()),
        })
    }

    /// Counts a request (`request_total`).
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// The series of one status code (created on first use).
    pub fn status(&self, status: u16) -> Arc<StatusSeries> {
        let mut v = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        v.entry(status).or_default().clone()
    }

    /// Records a response's latency (`response_latency_ms`) and returns the status code's
    /// series, where the response is counted once it has finished.
    pub fn latency(&self, status: u16, d: Duration) -> Arc<StatusSeries> {
        let s = self.status(status);
        s.latency.observe(d);
        s
    }

    /// Counts a finished response (`response_total`).
    pub fn response(&self, outcome: Outcome) {
        self.status(outcome.status).response(outcome);
    }
}

/// Where one request is counted: the series of its backend (or the inbound or no-route one)
/// and, when the rule that matched has a name, that rule's `route_*` series.
#[derive(Clone, Copy)]
pub struct Counted<'a> {
    /// `request_total`, `response_total`, `response_latency_ms`.
    pub main: &'a RouteMetrics,
    /// `route_request_total`, `route_response_total`, `route_response_latency_ms`.
    pub route: Option<&'a RouteMetrics>,
}

impl<'a> Counted<'a> {
    /// Counted in `main` only.
    pub fn only(main: &'a RouteMetrics) -> Self {
        Counted { main, route: None }
    }

    /// Counts a request.
    pub fn request(self) {
        self.main.request();
        if let Some(r) = self.route {
            r.request();
        }
    }

    /// Records a response's latency (a response the proxy made up: at once); the response
    /// is counted on the returned series once it has finished.
    pub fn latency(self, status: u16, d: Duration) -> StatusSeriesPair {
        StatusSeriesPair {
            main: self.main.latency(status, d),
            route: self.route.map(|r| r.latency(status, d)),
        }
    }

    /// The series of a status code, where the response's latency is recorded
    /// ([`StatusSeriesPair::observe`]) and the response counted later.
    pub fn series(self, status: u16) -> StatusSeriesPair {
        StatusSeriesPair {
            main: self.main.status(status),
            route: self.route.map(|r| r.status(status)),
        }
    }
}

/// The status-code series of one response in [`Counted`]'s series.
pub struct StatusSeriesPair {
    main: Arc<StatusSeries>,
    route: Option<Arc<StatusSeries>>,
}

impl StatusSeriesPair {
    /// Records the response's latency (`response_latency_ms`).
    pub fn observe(&self, d: Duration) {
        self.main.latency.observe(d);
        if let Some(r) = &self.route {
            r.latency.observe(d);
        }
    }

    /// Counts the finished response.
    pub fn response(&self, outcome: Outcome) {
        self.main.response(outcome);
        if let Some(r) = &self.route {
            r.response(outcome);
        }
    }
}

/// Counters for one side of TCP connections (`peer="src"` accepted, `peer="dst"` opened).
pub struct TcpMetrics {
    labels: String,
    /// `tcp_open_total`.
    pub open_total: AtomicU64,
    /// `tcp_open_connections`.
    pub open: AtomicI64,
    /// `tcp_read_bytes_total`.
    pub read_bytes: AtomicU64,
    /// `tcp_write_bytes_total`.
    pub write_bytes: AtomicU64,
    /// `tcp_close_total{errno=""}`: connections that ended without an OS error.
    pub close_total: AtomicU64,
    /// `tcp_close_total{errno="E..."}`: connections that ended on an OS error, by name.
    close_errors: Mutex<Vec<(&'static str, u64)>>,
    /// `tcp_connection_duration_ms`.
    duration: ConnectionHistogram,
}

impl TcpMetrics {
    /// Counts a closed connection that was open for `open_for`; `errno` is the OS error that
    /// ended it, if any.
    pub fn closed(&self, open_for: Duration, errno: Option<i32>) {
        self.open.fetch_sub(1, Relaxed);
        self.duration.observe(open_for);
        let Some(errno) = errno else {
            self.close_total.fetch_add(1, Relaxed);
            return;
        };
        let name = errno_name(Some(errno));
        let mut v = self.close_errors.lock().unwrap_or_else(|p| p.into_inner());
        match v.iter_mut().find(|(c, _)| *c == name) {
            Some((_, n)) => *n += 1,
            None => v.push((name, 1)),
        }
    }
}

/// Proxy-specific series (not Linkerd's): config reloads, mirrors.
#[derive(Default)]
struct ProxySeries {
    reload_success: AtomicU64,
    reload_failure: AtomicU64,
    last_reload_ok: AtomicI64,
    table_version: AtomicU64,
    mirror: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Failed `accept` calls by listener and errno name.
    accept_errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Times a listener stopped accepting because it had `maxConnections` open.
    accept_paused: Mutex<BTreeMap<&'static str, u64>>,
    /// Control-plane mode only (the client marks it): the series below are exported.
    control_plane: AtomicBool,
    /// 1 while the control-plane stream is up.
    control_plane_up: AtomicI64,
    /// Control-plane streams that broke or could not be opened.
    control_plane_disconnects: AtomicU64,
}

/// The registry: every series the proxy exports.
pub struct Registry {
    identity: String,
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    /// `route_*` series: one per named rule of a route (`dst`, `rt_route`).
    rt_routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    tcp: Mutex<BTreeMap<String, Arc<TcpMetrics>>>,
    proxy: ProxySeries,
    /// Endpoint series nothing holds any more, and since when (see `prune_endpoint_series`).
    idle_since: Mutex<HashMap<String, Instant>>,
    retain_idle: Duration,
}

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{labels}`, or nothing for an empty label set.
fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn push_label(out: &mut String, k: &str, v: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    let _ = write!(out, "{k}=\"{}\"", escape(v));
}

impl Registry {
    /// A registry whose every series carries `identity` labels (e.g. namespace, deployment, pod).
    /// Keys that are not Prometheus label names are skipped (the config loader rejects them).
    pub fn new(identity: &BTreeMap<String, String>) -> Self {
        let mut id = String::new();
        for (k, v) in identity {
            if serin_mesh_api::table::is_label_name(k) {
                push_label(&mut id, k, v);
            }
        }
        Registry {
            identity: id,
            routes: Mutex::new(BTreeMap::new()),
            rt_routes: Mutex::new(BTreeMap::new()),
            tcp: Mutex::new(BTreeMap::new()),
            proxy: ProxySeries::default(),
            idle_since: Mutex::new(HashMap::new()),
            retain_idle: crate::config::DEFAULT_METRICS_RETAIN_IDLE,
        }
    }

    /// How long an endpoint series nothing holds stays exported (`metricsRetainIdle`).
    pub fn with_retain_idle(mut self, retain_idle: Duration) -> Self {
        self.retain_idle = retain_idle;
        self
    }

    /// The outbound series for one backend of one authority; the same labels give the same
    /// series, so counters continue across route-table swaps.
    pub fn outbound(
        &self,
        authority: &str,
        dst_service: &str,
        dst_labels: &BTreeMap<String, String>,
    ) -> Arc<RouteMetrics> {
        let mut l = String::from("direction=\"outbound\"");
        push_label(&mut l, "authority", authority);
        push_label(&mut l, "dst_service", dst_service);
        for (k, v) in dst_labels {
            if k != "service" {
                push_label(&mut l, &format!("dst_{k}"), v);
            }
        }
        l.push(',');
        l.push_str(tls_labels("outbound"));
        self.route_series(l)
    }

    /// The inbound series (traffic to the local app).
    pub fn inbound(&self) -> Arc<RouteMetrics> {
        let mut l = String::from("direction=\"inbound\"");
        l.push(',');
        l.push_str(tls_labels("inbound"));
        self.route_series(l)
    }

    /// The `route_*` series of one named rule: `dst` is the route's configured authority,
    /// `rt_route` the rule's name (both from the route table, so bounded by its size). Rules
    /// without a name have none, as in Linkerd, where only named routes are measured.
    pub fn rt_route(&self, dst: &str, rt_route: &str) -> Arc<RouteMetrics> {
        let mut l = String::from("direction=\"outbound\"");
        push_label(&mut l, "dst", dst);
        push_label(&mut l, "rt_route", rt_route);
        if !self.identity.is_empty() {
            l.push(',');
            l.push_str(&self.identity);
        }
        let mut m = self.rt_routes.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(l.clone())
            .or_insert_with(|| RouteMetrics::new(l))
            .clone()
    }

    /// Series for requests that matched no route: the client's authority is deliberately not a
    /// label (it is unbounded), so they all share one series with an empty authority.
    pub fn no_route(&self) -> Arc<RouteMetrics> {
        let mut l = String::from("direction=\"outbound\"");
        push_label(&mut l, "authority", "");
        push_label(&mut l, "dst_service", "");
        l.push(',');
        l.push_str(tls_labels("outbound"));
        self.route_series(l)
    }

    /// Forgets per-endpoint series (those with `dst_pod`) that no route table or request has
    /// held for `retain_idle`: pods come and go, and their series would otherwise pile up for
    /// the life of the proxy, but a rolled-back canary's series must outlive its endpoints
    /// long enough for a dashboard to show why it failed. Called after each table swap, so a
    /// removed pod's series goes at the first swap at least `retain_idle` after the one that
    /// removed it (and after requests still in flight on the old table are done).
    pub fn prune_endpoint_series(&self) {
        let now = Instant::now();
        let mut m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut idle = self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|labels, series| {
            if Arc::strong_count(series) > 1 || !labels.contains("dst_pod=\"") {
                idle.remove(labels);
                return true;
            }
            let since = *idle.entry(labels.clone()).or_insert(now);
            let keep = now.duration_since(since) < self.retain_idle;
            if !keep {
                idle.remove(labels);
            }
            keep
        });
    }

    fn route_series(&self, mut labels: String) -> Arc<RouteMetrics> {
        if !self.identity.is_empty() {
            labels.push(',');
            labels.push_str(&self.identity);
        }
        let mut m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(labels.clone())
            .or_insert_with(|| RouteMetrics::new(labels))
            .clone()
    }

    /// TCP counters for a direction and peer (`src` = accepted, `dst` = opened to upstreams).
    pub fn tcp(&self, direction: &str, peer: &str) -> Arc<TcpMetrics> {
        let mut l = String::new();
        push_label(&mut l, "direction", direction);
        push_label(&mut l, "peer", peer);
        l.push(',');
        l.push_str(tls_labels(direction));
        if !self.identity.is_empty() {
            l.push(',');
            l.push_str(&self.identity);
        }
        let mut m = self.tcp.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(l.clone())
            .or_insert_with(|| {
                Arc::new(TcpMetrics {
                    labels: l,
                    open_total: AtomicU64::new(0),
                    open: AtomicI64::new(0),
                    read_bytes: AtomicU64::new(0),
                    write_bytes: AtomicU64::new(0),
                    close_total: AtomicU64::new(0),
                    close_errors: Mutex::new(Vec::new()),
                    duration: ConnectionHistogram::default(),
                })
            })
            .clone()
    }

    /// Records a route-table reload attempt and the version now in force.
    pub fn reload(&self, ok: bool, version_in_force: u64) {
        if ok {
            self.proxy.reload_success.fetch_add(1, Relaxed);
        } else {
            self.proxy.reload_failure.fetch_add(1, Relaxed);
        }
        self.proxy.last_reload_ok.store(i64::from(ok), Relaxed);
        self.proxy.table_version.store(version_in_force, Relaxed);
    }

    /// Counts a mirrored request by mirror backend and result (`ok`: answered below 500,
    /// `failure`: answered 5xx, `error`: no whole answer, `dropped`: not sent).
    pub fn mirror(&self, dst_service: &str, result: &'static str) {
        let mut m = self.proxy.mirror.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((dst_service.to_string(), result)).or_insert(0) += 1;
    }

    /// Marks this proxy as fed by the control plane: its stream's series are exported from now.
    pub fn control_plane_client(&self) {
        self.proxy.control_plane.store(true, Relaxed);
    }

    /// Records the control-plane stream going up or down (down: a stream that broke or could
    /// not be opened; the client reconnects with backoff and the table in force stays).
    pub fn control_plane_stream(&self, up: bool) {
        self.control_plane_client();
        self.proxy.control_plane_up.store(i64::from(up), Relaxed);
        if !up {
            self.proxy.control_plane_disconnects.fetch_add(1, Relaxed);
        }
    }

    /// Counts a failed `accept` on a listener (`errno`: `EMFILE`, `ENFILE`, ... or `other`).
    pub fn accept_error(&self, listener: &'static str, errno: &'static str) {
        let mut m = self
            .proxy
            .accept_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry((listener, errno)).or_insert(0) += 1;
    }

    /// Counts a listener pausing its accepts at its connection limit.
    pub fn accept_paused(&self, listener: &'static str) {
        let mut m = self
            .proxy
            .accept_paused
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(listener).or_insert(0) += 1;
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let routes: Vec<Arc<RouteMetrics>> = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        render_http(&mut out, "", &routes);
        let rt_routes: Vec<Arc<RouteMetrics>> = self
            .rt_routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        render_http(&mut out, "route_", &rt_routes);

        let tcp: Vec<Arc<TcpMetrics>> = self
            .tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        type Getter = fn(&TcpMetrics) -> i64;
        let tcp_series: [(&str, &str, &str, Getter); 4] = [
            (
                "tcp_open_total",
                "counter",
                "Total count of opened connections.",
                |t| t.open_total.load(Relaxed) as i64,
            ),
            (
                "tcp_open_connections",
                "gauge",
                "Number of currently-open connections.",
                |t| t.open.load(Relaxed),
            ),
            (
                "tcp_read_bytes_total",
                "counter",
                "Total count of bytes read from peers.",
                |t| t.read_bytes.load(Relaxed) as i64,
            ),
            (
                "tcp_write_bytes_total",
                "counter",
                "Total count of bytes written to peers.",
                |t| t.write_bytes.load(Relaxed) as i64,
            ),
        ];
        for (name, kind, help, get) in tcp_series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for t in &tcp {
                let _ = writeln!(out, "{name}{{{}}} {}", t.labels, get(t));
            }
        }
        out.push_str("# HELP tcp_close_total Total count of closed connections.\n# TYPE tcp_close_total counter\n");
        for t in &tcp {
            let _ = writeln!(
                out,
                "tcp_close_total{{{},errno=\"\",classification=\"success\"}} {}",
                t.labels,
                t.close_total.load(Relaxed)
            );
            let errors = t
                .close_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for (errno, n) in errors {
                let _ = writeln!(
                    out,
                    "tcp_close_total{{{},errno=\"{errno}\",classification=\"failure\"}} {n}",
                    t.labels
                );
            }
        }
        out.push_str("# HELP tcp_connection_duration_ms Connection lifetimes, from open to close.\n# TYPE tcp_connection_duration_ms histogram\n");
        for t in &tcp {
            let h = &t.duration;
            let mut cum = 0;
            for (i, b) in CONNECTION_DURATION_BUCKETS_MS.iter().enumerate() {
                cum += h.buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "tcp_connection_duration_ms_bucket{{{},le=\"{b}\"}} {cum}",
                    t.labels
                );
            }
            let count = cum + h.overflow.load(Relaxed);
            let _ = writeln!(
                out,
                "tcp_connection_duration_ms_bucket{{{},le=\"+Inf\"}} {count}\n\
                 tcp_connection_duration_ms_sum{{{}}} {}\n\
                 tcp_connection_duration_ms_count{{{}}} {count}",
                t.labels,
                t.labels,
                h.sum_ms.load(Relaxed),
                t.labels
            );
        }

        let id = if self.identity.is_empty() {
            String::new()
        } else {
            format!(",{}", self.identity)
        };
        let p = &self.proxy;
        let _ = writeln!(
            out,
            "# HELP serin_proxy_config_reloads_total Route-table reload attempts by result.\n# TYPE serin_proxy_config_reloads_total counter\n\
             serin_proxy_config_reloads_total{{result=\"success\"{id}}} {}\n\
             serin_proxy_config_reloads_total{{result=\"failure\"{id}}} {}",
            p.reload_success.load(Relaxed),
            p.reload_failure.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP serin_proxy_config_last_reload_success 1 if the last reload was applied, 0 if it was rejected and the previous table is kept.\n# TYPE serin_proxy_config_last_reload_success gauge\n\
             serin_proxy_config_last_reload_success{} {}",
            braces(&self.identity),
            p.last_reload_ok.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP serin_proxy_route_table_version Version of the route table in force.\n# TYPE serin_proxy_route_table_version gauge\n\
             serin_proxy_route_table_version{} {}",
            braces(&self.identity),
            p.table_version.load(Relaxed)
        );
        out.push_str("# HELP serin_proxy_mirror_total Mirrored requests by mirror backend and result (ok: answered below 500, failure: answered 5xx, error: no whole answer, dropped: not sent).\n# TYPE serin_proxy_mirror_total counter\n");
        for ((svc, result), n) in p.mirror.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let mut l = String::new();
            push_label(&mut l, "dst_service", svc);
            push_label(&mut l, "result", result);
            let _ = writeln!(out, "serin_proxy_mirror_total{{{l}{id}}} {n}");
        }
        out.push_str("# HELP serin_proxy_accept_errors_total Failed accepts by listener and errno (EMFILE/ENFILE: out of file descriptors; the listener backs off).\n# TYPE serin_proxy_accept_errors_total counter\n");
        for ((listener, errno), n) in p
            .accept_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "serin_proxy_accept_errors_total{{listener=\"{listener}\",errno=\"{errno}\"{id}}} {n}"
            );
        }
        out.push_str("# HELP serin_proxy_accept_paused_total Times a listener stopped accepting because maxConnections connections were open.\n# TYPE serin_proxy_accept_paused_total counter\n");
        for (listener, n) in p
            .accept_paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "serin_proxy_accept_paused_total{{listener=\"{listener}\"{id}}} {n}"
            );
        }
        if p.control_plane.load(Relaxed) {
            let _ = writeln!(
                out,
                "# HELP serin_proxy_control_plane_connected 1 while the stream of route tables from the control plane is up; 0 while it is down (the last table stays in force).\n# TYPE serin_proxy_control_plane_connected gauge\n\
                 serin_proxy_control_plane_connected{} {}",
                braces(&self.identity),
                p.control_plane_up.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "# HELP serin_proxy_control_plane_disconnects_total Control-plane streams that broke or could not be opened; each is followed by a reconnect with backoff.\n# TYPE serin_proxy_control_plane_disconnects_total counter\n\
                 serin_proxy_control_plane_disconnects_total{} {}",
                braces(&self.identity),
                p.control_plane_disconnects.load(Relaxed)
            );
        }
        out.push_str(&serin_mesh_api::process::render(&self.identity));
        out
    }
}

/// Renders `{prefix}request_total`, `{prefix}response_total` and `{prefix}response_latency_ms`
/// of `routes` (prefix `""` for the per-backend series, `"route_"` for the per-rule ones).
fn render_http(out: &mut String, prefix: &str, routes: &[Arc<RouteMetrics>]) {
    type Snapshot<'a> = Vec<(&'a RouteMetrics, Vec<(u16, Arc<StatusSeries>)>)>;
    let snapshot: Snapshot = routes
        .iter()
        .map(|r| {
            let s = r
                .by_status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(c, s)| (*c, s.clone()))
                .collect();
            (&**r, s)
        })
        .collect();

    let _ = writeln!(
        out,
        "# HELP {prefix}request_total Total count of HTTP requests.\n# TYPE {prefix}request_total counter"
    );
    for (r, _) in &snapshot {
        let _ = writeln!(
            out,
            "{prefix}request_total{{{}}} {}",
            r.labels,
            r.requests.load(Relaxed)
        );
    }

    let _ = writeln!(
        out,
        "# HELP {prefix}response_total Total count of HTTP responses.\n# TYPE {prefix}response_total counter"
    );
    for (r, statuses) in &snapshot {
        for (code, s) in statuses {
            for (o, n) in s.outcomes(*code) {
                let mut l = r.labels.clone();
                push_label(&mut l, "status_code", &o.status.to_string());
                push_label(
                    &mut l,
                    "classification",
                    if o.is_failure() { "failure" } else { "success" },
                );
                if let Some(g) = o.grpc_status {
                    if g == GRPC_STATUS_UNKNOWN {
                        push_label(&mut l, "grpc_status", "unknown");
                    } else {
                        push_label(&mut l, "grpc_status", &g.to_string());
                    }
                }
                if let Some(e) = o.error {
                    push_label(&mut l, "error", e.label());
                }
                let _ = writeln!(out, "{prefix}response_total{{{l}}} {n}");
            }
        }
    }

    let _ = writeln!(
        out,
        "# HELP {prefix}response_latency_ms Elapsed times between a request's headers being received and the first data frame of its response (its end, for a response without data).\n# TYPE {prefix}response_latency_ms histogram"
    );
    for (r, statuses) in &snapshot {
        for (code, s) in statuses {
            let h = &s.latency;
            // One load per bucket, and the total from those loads (see `Histogram`).
            let counts: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
            let count = counts.iter().sum::<u64>() + h.overflow.load(Relaxed);
            if count == 0 {
                continue;
            }
            let mut base = r.labels.clone();
            push_label(&mut base, "status_code", &code.to_string());
            let mut cum = 0;
            for (n, b) in counts.iter().zip(LATENCY_BUCKETS_MS) {
                cum += n;
                let _ = writeln!(
                    out,
                    "{prefix}response_latency_ms_bucket{{{base},le=\"{b}\"}} {cum}"
                );
            }
            let _ = writeln!(
                out,
                "{prefix}response_latency_ms_bucket{{{base},le=\"+Inf\"}} {count}"
            );
            let sum_ms = h.sum_us.load(Relaxed) as f64 / 1000.0;
            let _ = writeln!(out, "{prefix}response_latency_ms_sum{{{base}}} {sum_ms}");
            let _ = writeln!(out, "{prefix}response_latency_ms_count{{{base}}} {count}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks every histogram of a scrape: buckets never decrease, and `+Inf` equals `_count`
    /// (Prometheus' `histogram_quantile` and `promtool check metrics` read both as a broken
    /// histogram otherwise).
    fn assert_histograms_consistent(text: &str) {
        let mut last: Option<(String, u64)> = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().expect("a number");
            if let Some((name, rest)) = series.split_once("_bucket{") {
                let base = format!("{name}{{{}", &rest[..rest.find(",le=").expect("le")]);
                if let Some((prev, n)) = &last
                    && *prev == base
                {
                    assert!(value as u64 >= *n, "buckets decrease at {line}\n{text}");
                }
                last = Some((base, value as u64));
            } else if let Some((name, rest)) = series.split_once("_count{") {
                let (prev, inf) = last.take().expect("buckets before _count");
                assert_eq!(
                    prev,
                    format!("{name}{{{}", &rest[..rest.len() - 1]),
                    "{text}"
                );
                assert_eq!(value as u64, inf, "+Inf != _count at {line}\n{text}");
            }
        }
    }

    #[test]
    fn histograms_stay_consistent_while_requests_land_during_a_scrape() {
        let reg = Arc::new(Registry::new(&BTreeMap::new()));
        let m = reg.outbound("podinfo", "podinfo-primary", &BTreeMap::new());
        let tcp = reg.tcp("outbound", "dst");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (m, tcp, stop) = (m.clone(), tcp.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    m.latency(200, Duration::from_micros(1500));
                    tcp.open.fetch_add(1, Relaxed);
                    tcp.closed(Duration::from_millis(5), None);
                }
            })
        };
        for _ in 0..3000 {
            assert_histograms_consistent(&reg.render());
        }
        stop.store(true, Relaxed);
        writer.join().expect("the writer thread");
    }

    #[test]
    fn latency_lands_in_linkerd_buckets_and_renders_cumulatively() {
        let reg = Registry::new(&BTreeMap::from([("namespace".into(), "test".into())]));
        let m = reg.outbound("podinfo", "podinfo-primary", &BTreeMap::new());
        m.request();
        m.latency(200, Duration::from_micros(1500));
        m.latency(200, Duration::from_millis(60_000));
        m.response(Outcome {
            status: 200,
            grpc_status: None,
            error: None,
        });
        m.response(Outcome {
            status: 502,
            grpc_status: None,
            error: Some(ErrorKind::Connect),
        });
        let text = reg.render();
        let l = "direction=\"outbound\",authority=\"podinfo\",dst_service=\"podinfo-primary\",tls=\"no_identity\",no_tls_reason=\"not_provided_by_service_discovery\",namespace=\"test\"";
        assert!(text.contains(&format!("request_total{{{l}}} 1")), "{text}");
        assert!(text.contains(&format!(
            "response_latency_ms_bucket{{{l},status_code=\"200\",le=\"1\"}} 0"
        )));
        assert!(text.contains(&format!(
            "response_latency_ms_bucket{{{l},status_code=\"200\",le=\"2\"}} 1"
        )));
        assert!(text.contains(&format!(
            "response_latency_ms_bucket{{{l},status_code=\"200\",le=\"50000\"}} 1"
        )));
        assert!(text.contains(&format!(
            "response_latency_ms_bucket{{{l},status_code=\"200\",le=\"+Inf\"}} 2"
        )));
        assert!(text.contains(&format!(
            "response_total{{{l},status_code=\"502\",classification=\"failure\",error=\"connect\"}} 1"
        )));
        assert!(text.contains(&format!(
            "response_total{{{l},status_code=\"200\",classification=\"success\"}} 1"
        )));
    }

    #[test]
    fn grpc_errors_are_failures_even_with_http_200() {
        let o = Outcome {
            status: 200,
            grpc_status: Some(14),
            error: None,
        };
        assert!(o.is_failure());
        assert!(
            !Outcome {
                status: 200,
                grpc_status: Some(0),
                error: None
            }
            .is_failure()
        );
        assert!(
            !Outcome {
                status: 404,
                grpc_status: None,
                error: None
            }
            .is_failure()
        );
    }

    #[test]
    fn named_rules_get_route_series_beside_the_backend_series() {
        let reg = Registry::new(&BTreeMap::from([("pod".into(), "web-1".into())]));
        let backend = reg.outbound("podinfo:9898", "podinfo-canary", &BTreeMap::new());
        let rule = reg.rt_route("podinfo:9898", "api");
        let counted = Counted {
            main: &backend,
            route: Some(&rule),
        };
        counted.request();
        counted
            .latency(503, Duration::from_millis(7))
            .response(Outcome {
                status: 503,
                grpc_status: None,
                error: None,
            });
        let text = reg.render();
        let rt = "direction=\"outbound\",dst=\"podinfo:9898\",rt_route=\"api\",pod=\"web-1\"";
        assert!(
            text.contains(&format!("route_request_total{{{rt}}} 1\n")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "route_response_total{{{rt},status_code=\"503\",classification=\"failure\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "route_response_latency_ms_bucket{{{rt},status_code=\"503\",le=\"10\"}} 1\n"
        )));
        // Route series carry no backend labels; the backend series no rule name.
        assert!(!text.contains("rt_route=\"api\",dst_service"));
        assert!(text.contains("\nrequest_total{direction=\"outbound\",authority=\"podinfo:9898\",dst_service=\"podinfo-canary\""));
    }

    #[test]
    fn closes_are_counted_by_errno_with_their_duration() {
        let reg = Registry::new(&BTreeMap::new());
        let tcp = reg.tcp("inbound", "src");
        tcp.open.fetch_add(3, Relaxed);
        tcp.closed(Duration::from_micros(300), None);
        tcp.closed(Duration::from_millis(50), Some(104));
        tcp.closed(Duration::from_millis(50), Some(104));
        let text = reg.render();
        let l = "direction=\"inbound\",peer=\"src\",tls=\"no_identity\",no_tls_reason=\"no_tls_from_remote\"";
        assert!(
            text.contains(&format!(
                "tcp_close_total{{{l},errno=\"\",classification=\"success\"}} 1\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "tcp_close_total{{{l},errno=\"ECONNRESET\",classification=\"failure\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "tcp_connection_duration_ms_bucket{{{l},le=\"1\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "tcp_connection_duration_ms_bucket{{{l},le=\"100\"}} 3\n"
        )));
        assert!(text.contains(&format!("tcp_connection_duration_ms_count{{{l}}} 3\n")));
        assert!(text.contains(&format!("tcp_open_connections{{{l}}} 0\n")));
        assert_eq!(errno_name(Some(9999)), "other");
        assert_eq!(errno_name(None), "other");
    }

    #[test]
    fn process_series_carry_the_identity_labels() {
        let reg = Registry::new(&BTreeMap::from([("namespace".into(), "test".into())]));
        let text = reg.render();
        assert!(
            text.contains("\nprocess_start_time_seconds{namespace=\"test\"} "),
            "{text}"
        );
        assert!(text.contains("\nprocess_resident_memory_bytes{namespace=\"test\"} "));
        assert!(text.contains("\nprocess_cpu_seconds_total{namespace=\"test\"} "));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

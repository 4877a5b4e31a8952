//! The control plane's own metrics, served on `/metrics` (OpenMetrics text), with the
//! `process_*` gauges.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of `serin_control_errors_total`: low-cardinality only (never an object name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What failed: `HTTPRoute`, `TrafficSplit`, `file`, `watch`, `status`, `ack`.
    pub kind: String,
    /// Why: a Gateway API reason (`UnsupportedValue`, ...) or `Parse`, `Api`, `Rejected`.
    pub reason: String,
}

/// Every metric, registered once.
pub struct Metrics {
    /// Registry behind `/metrics`.
    pub registry: Registry,
    /// `serin_control_connected_proxies`.
    pub connected_proxies: Gauge,
    /// `serin_control_snapshots_total`: versions published.
    pub snapshots: Counter,
    /// `serin_control_pushes_total`: snapshot messages written to proxy streams.
    pub pushes: Counter,
    /// `serin_control_push_latency_seconds`: from publishing a version to a proxy's ack of it.
    pub push_latency: Histogram,
    /// `serin_control_watch_lag_seconds`: from receiving a source change to publishing it.
    pub watch_lag: Histogram,
    /// `serin_control_errors_total{kind,reason}`.
    pub errors: Family<ErrorLabels, Counter>,
    /// `serin_control_route_objects`: route objects known.
    pub route_objects: Gauge,
    /// `serin_control_invalid_route_objects`: route objects currently invalid.
    pub invalid_route_objects: Gauge,
    /// `serin_control_snapshot_version`.
    pub version: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            connected_proxies: Gauge::default(),
            snapshots: Counter::default(),
            pushes: Counter::default(),
            push_latency: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            watch_lag: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            errors: Family::default(),
            route_objects: Gauge::default(),
            invalid_route_objects: Gauge::default(),
            version: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "serin_control_connected_proxies",
            "Proxies with an open route stream",
            m.connected_proxies.clone(),
        );
        registry.register(
            "serin_control_snapshots",
            "Route-table versions published",
            m.snapshots.clone(),
        );
        registry.register(
            "serin_control_pushes",
            "Snapshot messages written to proxy streams",
            m.pushes.clone(),
        );
        registry.register(
            "serin_control_push_latency_seconds",
            "Time from publishing a version to a proxy acknowledging it",
            m.push_latency.clone(),
        );
        registry.register(
            "serin_control_watch_lag_seconds",
            "Time from receiving a source change to publishing the resulting version",
            m.watch_lag.clone(),
        );
        registry.register(
            "serin_control_errors",
            "Errors by kind and reason (invalid objects, watch, status and file failures)",
            m.errors.clone(),
        );
        registry.register(
            "serin_control_route_objects",
            "HTTPRoutes and TrafficSplits known",
            m.route_objects.clone(),
        );
        registry.register(
            "serin_control_invalid_route_objects",
            "HTTPRoutes and TrafficSplits currently invalid or conflicting",
            m.invalid_route_objects.clone(),
        );
        registry.register(
            "serin_control_snapshot_version",
            "Latest route-table version",
            m.version.clone(),
        );
        registry.register_collector(Box::new(serin_mesh_api::process::ProcessCollector));
        Metrics { registry, ..m }
    }

    /// Counts one error.
    pub fn error(&self, kind: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

//! Controller metrics (Flagger's set under the `serin_` prefix) and the admin HTTP server that
//! serves them with `/healthz` and `/readyz`.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `serin_canary_status` | gauge | name, namespace | 0 progressing, 1 idle/succeeded, 2 failed (Flagger's encoding) |
//! | `serin_canary_weight` | gauge | workload, namespace | traffic percent to `<target>-primary` and `<target>` |
//! | `serin_canary_total` | gauge | namespace | Canaries known to the controller |
//! | `serin_canary_metric_analysis` | gauge | name, namespace, metric | last measured value of each check |
//! | `serin_canary_duration_seconds` | histogram | name, namespace | whole rollout, first Progressing to Succeeded/Failed |
//! | `serin_canary_successes_total` | counter | name, namespace, deployment_strategy | promoted rollouts |
//! | `serin_canary_failures_total` | counter | name, namespace, deployment_strategy | rolled-back rollouts |
//! | `serin_controller_errors_total` | counter | kind | API or adapter errors by stable kind |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CanaryLabels {
    name: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WeightLabels {
    workload: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabels {
    name: String,
    namespace: String,
    metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    name: String,
    namespace: String,
    deployment_strategy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
}

/// The controller's metric families. Share it behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    status: Family<CanaryLabels, Gauge>,
    weight: Family<WeightLabels, Gauge>,
    total: Family<NamespaceLabels, Gauge>,
    analysis: Family<MetricLabels, Gauge<f64, AtomicU64>>,
    duration: Family<CanaryLabels, Histogram>,
    successes: Family<OutcomeLabels, Counter>,
    failures: Family<OutcomeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    /// Per-namespace Canary names, so `serin_canary_total` stays exact as Canaries come and go.
    known: Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Flagger's `status` gauge encoding of a phase name.
pub fn status_code(phase: &str) -> i64 {
    match phase {
        "Progressing" => 0,
        "Failed" => 2,
        _ => 1,
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let status = Family::<CanaryLabels, Gauge>::default();
        let weight = Family::<WeightLabels, Gauge>::default();
        let total = Family::<NamespaceLabels, Gauge>::default();
        let analysis = Family::<MetricLabels, Gauge<f64, AtomicU64>>::default();
        // Rollouts last from seconds (tests, demo) to hours: 5s .. ~5.7h.
        let duration = Family::<CanaryLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(5.0, 2.0, 13))
        });
        let successes = Family::<OutcomeLabels, Counter>::default();
        let failures = Family::<OutcomeLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "serin_canary_status",
            "Last canary analysis result: 0 progressing, 1 succeeded or idle, 2 failed",
            status.clone(),
        );
        registry.register(
            "serin_canary_weight",
            "Traffic weight (percent) of the primary and canary workloads",
            weight.clone(),
        );
        registry.register(
            "serin_canary_total",
            "Number of Canaries per namespace",
            total.clone(),
        );
        registry.register(
            "serin_canary_metric_analysis",
            "Last measured value of each canary analysis metric",
            analysis.clone(),
        );
        registry.register(
            "serin_canary_duration_seconds",
            "Duration of whole rollouts, from the start of analysis to promotion or rollback",
            duration.clone(),
        );
        registry.register(
            "serin_canary_successes",
            "Rollouts that ended promoted",
            successes.clone(),
        );
        registry.register(
            "serin_canary_failures",
            "Rollouts that ended rolled back",
            failures.clone(),
        );
        registry.register(
            "serin_controller_errors",
            "Errors talking to the API server or adapters, by kind",
            errors.clone(),
        );
        Self {
            registry,
            status,
            weight,
            total,
            analysis,
            duration,
            successes,
            failures,
            errors,
            known: Mutex::new(BTreeMap::new()),
        }
    }

    fn canary(name: &str, namespace: &str) -> CanaryLabels {
        CanaryLabels {
            name: name.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// Records a Canary's phase.
    pub fn set_phase(&self, name: &str, namespace: &str, phase: &str) {
        self.status
            .get_or_create(&Self::canary(name, namespace))
            .set(status_code(phase));
    }

    /// Records the weights; `target` is the target workload's name (primary is `<target>-primary`).
    pub fn set_weights(&self, target: &str, namespace: &str, primary: u32, canary: u32) {
        self.weight
            .get_or_create(&WeightLabels {
                workload: format!("{target}-primary"),
                namespace: namespace.to_string(),
            })
            .set(i64::from(primary));
        self.weight
            .get_or_create(&WeightLabels {
                workload: target.to_string(),
                namespace: namespace.to_string(),
            })
            .set(i64::from(canary));
    }

    /// Notes that a Canary exists (idempotent).
    pub fn canary_seen(&self, name: &str, namespace: &str) {
        let n = {
            let Ok(mut known) = self.known.lock() else {
                return;
            };
            let set = known.entry(namespace.to_string()).or_default();
            set.insert(name.to_string());
            set.len()
        };
        self.set_total(namespace, n);
    }

    /// Forgets a deleted Canary and its series.
    pub fn canary_gone(&self, name: &str, namespace: &str, target: &str) {
        let n = {
            let Ok(mut known) = self.known.lock() else {
                return;
            };
            let set = known.entry(namespace.to_string()).or_default();
            set.remove(name);
            set.len()
        };
        self.set_total(namespace, n);
        self.status.remove(&Self::canary(name, namespace));
        for w in [format!("{target}-primary"), target.to_string()] {
            self.weight.remove(&WeightLabels {
                workload: w,
                namespace: namespace.to_string(),
            });
        }
    }

    fn set_total(&self, namespace: &str, n: usize) {
        self.total
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_string(),
            })
            .set(n as i64);
    }

    /// Records a check's measured value.
    pub fn set_metric(&self, name: &str, namespace: &str, metric: &str, value: f64) {
        self.analysis
            .get_or_create(&MetricLabels {
                name: name.to_string(),
                namespace: namespace.to_string(),
                metric: metric.to_string(),
            })
            .set(value);
    }

    /// Records the end of a rollout.
    pub fn rollout_finished(
        &self,
        name: &str,
        namespace: &str,
        strategy: &str,
        promoted: bool,
        seconds: Option<f64>,
    ) {
        let labels = OutcomeLabels {
            name: name.to_string(),
            namespace: namespace.to_string(),
            deployment_strategy: strategy.to_string(),
        };
        if promoted {
            self.successes.get_or_create(&labels).inc();
        } else {
            self.failures.get_or_create(&labels).inc();
        }
        if let Some(s) = seconds.filter(|s| s.is_finite() && *s >= 0.0) {
            self.duration
                .get_or_create(&Self::canary(name, namespace))
                .observe(s);
        }
    }

    /// Counts an error by a stable kind (`conflict`, `forbidden`, `timeout`, …).
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Health as seen by the admin server: alive once started, ready once the controller's caches
/// have synced (and, with leader election, whether this replica leads is reported but does not
/// affect readiness — a standby replica is healthy).
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    leader: AtomicBool,
}

impl Health {
    /// Marks readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    /// Whether ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    /// Marks leadership.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }
    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The admin routes: `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(AdminState { metrics, health })
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn ready_handler(State(s): State<AdminState>) -> impl IntoResponse {
    let leader = if s.health.is_leader() {
        "leader"
    } else {
        "standby"
    };
    if s.health.is_ready() {
        (StatusCode::OK, format!("ready ({leader})\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string())
    }
}

/// Serves the admin routes on `listener` until the future is dropped.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<()> {
    axum::serve(listener, admin_router(metrics, health)).await
}

/// Binds `addr` (use port 0 in tests) and returns the listener with its real address.
pub async fn bind_admin(
    addr: SocketAddr,
) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

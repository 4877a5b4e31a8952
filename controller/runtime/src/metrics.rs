//! Controller metrics (Flagger's set under the `serin_` prefix) and the admin HTTP server that
//! serves them with `/healthz` and `/readyz`.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `serin_canary_status` | gauge | name, namespace | 0 progressing, 1 idle/succeeded, 2 failed (Flagger's encoding) |
//! | `serin_canary_info` | gauge | name, namespace, target, primary_service, canary_service | 1: the names a Canary's traffic carries (`workload` of its weights, the proxies' `dst_service`), which need not be the Canary's own |
//! | `serin_canary_weight` | gauge | workload, namespace | traffic percent to `<target>-primary` and `<target>` |
//! | `serin_canary_total` | gauge | namespace | Canaries known to the controller |
//! | `serin_canary_metric_analysis` | gauge | name, namespace, metric | last measured value of each check |
//! | `serin_canary_duration_seconds` | histogram | name, namespace | whole rollout, first Progressing to Succeeded/Failed |
//! | `serin_canary_successes_total` | counter | name, namespace, deployment_strategy | promoted rollouts |
//! | `serin_canary_failures_total` | counter | name, namespace, deployment_strategy | rolled-back rollouts |
//! | `serin_controller_errors_total` | counter | kind | API or adapter errors by stable kind |
//! | `serin_canary_phase` | gauge | name, namespace, phase | 1 for the Canary's current phase (one series per Canary) |
//! | `serin_canary_last_transition_timestamp_seconds` | gauge | name, namespace | the last progress, as Flagger stamps `lastTransitionTime`: a phase change, a weight step or iteration, a change of the failed-check count |
//! | `serin_canary_progress_deadline_seconds` | gauge | name, namespace | `spec.progressDeadlineSeconds` |
//! | `serin_canary_check_verdicts_total` | counter | name, namespace, metric, verdict | each check's verdict per analysis (`pass`, `fail`, `inconclusive`) |
//! | `serin_canary_judge_verdicts_total` | counter | name, namespace, verdict | the statistical judge's verdict per look |
//! | `serin_controller_reconcile_errors_total` | counter | kind | ticks that failed, by the stable kind of the cause |
//! | `serin_controller_tick_lateness_seconds` | histogram | | how long after its due time a Canary's tick started |
//! | `serin_controller_leader` | gauge | | 1 while this replica leads (always 1 for the local controller) |
//! | `serin_notification_deliveries_total` | counter | kind, result | background notifications (`kind` `webhook` or `alert`) by `result`: `delivered`, `failed`, `dropped` (a full queue's oldest), `lost` (still waiting when the controller stopped) |
//! | `serin_notification_queue_depth` | gauge | | notifications waiting in the per-Canary queues |
//! | `serin_notification_delivery_duration_seconds` | histogram | kind | how long one delivery took, retries included |
//! | `process_*` | | | CPU, memory, descriptors, start time of the controller process |
//!
//! Labels are bounded: Canary names and namespaces (as Flagger's), check names from the spec,
//! fixed phase, verdict and error-kind sets.

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
struct InfoLabels {
    name: String,
    namespace: String,
    target: String,
    primary_service: String,
    canary_service: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    name: String,
    namespace: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckVerdictLabels {
    name: String,
    namespace: String,
    metric: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JudgeVerdictLabels {
    name: String,
    namespace: String,
    verdict: String,
}

/// The controller's metric families. Share it behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    status: Family<CanaryLabels, Gauge>,
    info: Family<InfoLabels, Gauge>,
    weight: Family<WeightLabels, Gauge>,
    total: Family<NamespaceLabels, Gauge>,
    analysis: Family<MetricLabels, Gauge<f64, AtomicU64>>,
    duration: Family<CanaryLabels, Histogram>,
    successes: Family<OutcomeLabels, Counter>,
    failures: Family<OutcomeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    phase: Family<PhaseLabels, Gauge>,
    last_transition: Family<CanaryLabels, Gauge<f64, AtomicU64>>,
    progress_deadline: Family<CanaryLabels, Gauge<f64, AtomicU64>>,
    check_verdicts: Family<CheckVerdictLabels, Counter>,
    judge_verdicts: Family<JudgeVerdictLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    tick_lateness: Histogram,
    leader: Gauge,
    deliveries: Family<DeliveryLabels, Counter>,
    queue_depth: Gauge,
    delivery_duration: Family<ErrorLabels, Histogram>,
    /// The phase each Canary's `serin_canary_phase` series shows, so a change removes the old
    /// series (one series per Canary, not one per phase ever seen).
    phases: Mutex<BTreeMap<(String, String), String>>,
    /// The `serin_canary_info` series of each Canary, so a rename replaces it.
    infos: Mutex<BTreeMap<(String, String), InfoLabels>>,
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
        let info = Family::<InfoLabels, Gauge>::default();
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
        let phase = Family::<PhaseLabels, Gauge>::default();
        let last_transition = Family::<CanaryLabels, Gauge<f64, AtomicU64>>::default();
        let progress_deadline = Family::<CanaryLabels, Gauge<f64, AtomicU64>>::default();
        let check_verdicts = Family::<CheckVerdictLabels, Counter>::default();
        let judge_verdicts = Family::<JudgeVerdictLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        // Ticks are due every interval (seconds to minutes): 1 ms .. ~33 s.
        let tick_lateness = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let leader = Gauge::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let queue_depth = Gauge::default();
        // One delivery: milliseconds (a local receiver) to minutes (timeouts times retries).
        let delivery_duration = Family::<ErrorLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 16))
        });
        registry.register(
            "serin_canary_status",
            "Last canary analysis result: 0 progressing, 1 succeeded or idle, 2 failed",
            status.clone(),
        );
        registry.register(
            "serin_canary_info",
            "The names of a Canary's workloads and services: target, primary and canary service (always 1)",
            info.clone(),
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
        registry.register(
            "serin_canary_phase",
            "1 for the Canary's current phase",
            phase.clone(),
        );
        registry.register(
            "serin_canary_last_transition_timestamp_seconds",
            "When the Canary last made progress (status.lastTransitionTime), seconds since the epoch",
            last_transition.clone(),
        );
        registry.register(
            "serin_canary_progress_deadline_seconds",
            "How long a Canary may go without progress before it is rolled back",
            progress_deadline.clone(),
        );
        registry.register(
            "serin_canary_check_verdicts",
            "Verdicts of each analysis check",
            check_verdicts.clone(),
        );
        registry.register(
            "serin_canary_judge_verdicts",
            "Verdicts of the statistical judge, one per look",
            judge_verdicts.clone(),
        );
        registry.register(
            "serin_controller_reconcile_errors",
            "Ticks that failed, by the kind of the cause",
            reconcile_errors.clone(),
        );
        registry.register(
            "serin_controller_tick_lateness_seconds",
            "How long after its due time a Canary's tick started",
            tick_lateness.clone(),
        );
        registry.register(
            "serin_controller_leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        registry.register(
            "serin_notification_deliveries",
            "Notifications delivered in the background, by kind and result",
            deliveries.clone(),
        );
        registry.register(
            "serin_notification_queue_depth",
            "Notifications waiting in the per-Canary delivery queues",
            queue_depth.clone(),
        );
        registry.register(
            "serin_notification_delivery_duration_seconds",
            "How long one notification's delivery took, retries included",
            delivery_duration.clone(),
        );
        registry.register_collector(Box::new(serin_mesh_api::process::ProcessCollector));
        // Every error kind exists from the start at 0 (the label set is fixed): a dashboard's
        // rate by kind then shows real series, and the first error is an increase Prometheus
        // can see (a series born at 1 has none).
        for kind in crate::adapters::ErrorKind::ALL {
            let labels = ErrorLabels {
                kind: kind.as_str().to_string(),
            };
            let _ = errors.get_or_create(&labels);
            let _ = reconcile_errors.get_or_create(&labels);
        }
        Self {
            registry,
            status,
            info,
            weight,
            total,
            analysis,
            duration,
            successes,
            failures,
            errors,
            phase,
            last_transition,
            progress_deadline,
            check_verdicts,
            judge_verdicts,
            reconcile_errors,
            tick_lateness,
            leader,
            deliveries,
            queue_depth,
            delivery_duration,
            phases: Mutex::new(BTreeMap::new()),
            infos: Mutex::new(BTreeMap::new()),
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
        let previous = {
            let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
            phases.insert((namespace.to_string(), name.to_string()), phase.to_string())
        };
        if let Some(old) = previous.filter(|old| old != phase) {
            self.phase.remove(&PhaseLabels {
                name: name.to_string(),
                namespace: namespace.to_string(),
                phase: old,
            });
        }
        self.phase
            .get_or_create(&PhaseLabels {
                name: name.to_string(),
                namespace: namespace.to_string(),
                phase: phase.to_string(),
            })
            .set(1);
    }

    /// Records the names a Canary's traffic is measured under: its target workload and its
    /// primary and canary services (the proxies' `dst_service`), which dashboards select by.
    pub fn set_info(
        &self,
        name: &str,
        namespace: &str,
        target: &str,
        primary_service: &str,
        canary_service: &str,
    ) {
        let labels = InfoLabels {
            name: name.to_string(),
            namespace: namespace.to_string(),
            target: target.to_string(),
            primary_service: primary_service.to_string(),
            canary_service: canary_service.to_string(),
        };
        let previous = self
            .infos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((namespace.to_string(), name.to_string()), labels.clone());
        if let Some(old) = previous.filter(|old| *old != labels) {
            self.info.remove(&old);
        }
        self.info.get_or_create(&labels).set(1);
    }

    /// Records when the Canary last made progress (the later of this and what was recorded
    /// before) and how long it may go without.
    pub fn set_progress(
        &self,
        name: &str,
        namespace: &str,
        last_transition_epoch_seconds: Option<f64>,
        deadline_seconds: f64,
    ) {
        let key = Self::canary(name, namespace);
        if let Some(t) = last_transition_epoch_seconds {
            // Progress only moves forward: a tick that saw a step stamps its own time, and the
            // ticks after it (whose status holds an older transition time) must not undo that.
            let g = self.last_transition.get_or_create(&key);
            if t > g.get() {
                g.set(t);
            }
        }
        self.progress_deadline
            .get_or_create(&key)
            .set(deadline_seconds);
    }

    /// Counts one check's verdict (`pass`, `fail`, `inconclusive`).
    pub fn check_verdict(&self, name: &str, namespace: &str, metric: &str, verdict: &str) {
        self.check_verdicts
            .get_or_create(&CheckVerdictLabels {
                name: name.to_string(),
                namespace: namespace.to_string(),
                metric: metric.to_string(),
                verdict: verdict.to_string(),
            })
            .inc();
    }

    /// Counts one look of the statistical judge.
    pub fn judge_verdict(&self, name: &str, namespace: &str, verdict: &str) {
        self.judge_verdicts
            .get_or_create(&JudgeVerdictLabels {
                name: name.to_string(),
                namespace: namespace.to_string(),
                verdict: verdict.to_string(),
            })
            .inc();
    }

    /// Counts a failed tick by the stable kind of its cause.
    pub fn reconcile_error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Records how late a tick started after it was due.
    pub fn tick_late(&self, late: std::time::Duration) {
        self.tick_lateness.observe(late.as_secs_f64());
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Counts a background notification of `kind` (`webhook`, `alert`) by `result`
    /// (`delivered`, `failed`, `dropped`, `lost`).
    pub fn notification(&self, kind: &str, result: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                kind: kind.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Adds `delta` to the notifications waiting in the queues.
    pub fn notifications_waiting(&self, delta: i64) {
        self.queue_depth.inc_by(delta);
    }

    /// Records how long one delivery of `kind` took.
    pub fn notification_took(&self, kind: &str, seconds: f64) {
        self.delivery_duration
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
            })
            .observe(seconds);
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
        let info = self
            .infos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
        if let Some(info) = info {
            self.info.remove(&info);
        }
        self.last_transition.remove(&Self::canary(name, namespace));
        self.progress_deadline
            .remove(&Self::canary(name, namespace));
        let phase = self
            .phases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
        if let Some(phase) = phase {
            self.phase.remove(&PhaseLabels {
                name: name.to_string(),
                namespace: namespace.to_string(),
                phase,
            });
        }
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

    /// Creates a Canary's rollout counters, its rollout-duration histogram, the verdict counters
    /// of each of its `checks` and the judge's verdict counters at 0, so the first success,
    /// failure, duration or verdict is an increase Prometheus can see (a series born at 1 has no
    /// increase: a check's first failure would be missing from "failed checks"). A Canary
    /// without the judge exports its verdicts as 0: it got none.
    pub fn rollout_counters(&self, name: &str, namespace: &str, strategy: &str, checks: &[String]) {
        let labels = OutcomeLabels {
            name: name.to_string(),
            namespace: namespace.to_string(),
            deployment_strategy: strategy.to_string(),
        };
        let _ = self.successes.get_or_create(&labels);
        let _ = self.failures.get_or_create(&labels);
        let _ = self.duration.get_or_create(&Self::canary(name, namespace));
        for metric in checks {
            for verdict in ["pass", "fail", "inconclusive"] {
                let _ = self.check_verdicts.get_or_create(&CheckVerdictLabels {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                    metric: metric.clone(),
                    verdict: verdict.to_string(),
                });
            }
        }
        for verdict in ["pass", "fail", "inconclusive"] {
            let _ = self.judge_verdicts.get_or_create(&JudgeVerdictLabels {
                name: name.to_string(),
                namespace: namespace.to_string(),
                verdict: verdict.to_string(),
            });
        }
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
    s.metrics.set_leader(s.health.is_leader());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_change_replaces_the_canarys_phase_series() {
        let m = Metrics::new();
        m.set_phase("podinfo", "test", "Progressing");
        m.set_phase("podinfo", "test", "Succeeded");
        let text = m.encode();
        assert!(
            text.contains(
                "serin_canary_phase{name=\"podinfo\",namespace=\"test\",phase=\"Succeeded\"} 1\n"
            ),
            "{text}"
        );
        assert!(!text.contains("phase=\"Progressing\""), "{text}");
        m.canary_gone("podinfo", "test", "podinfo");
        assert!(!m.encode().contains("serin_canary_phase{"));
    }

    #[test]
    fn a_canarys_info_series_follows_its_names_and_goes_with_it() {
        let m = Metrics::new();
        m.set_info(
            "web",
            "test",
            "podinfo",
            "podinfo-primary",
            "podinfo-canary",
        );
        m.set_info("web", "test", "podinfo", "front-primary", "front-canary");
        let text = m.encode();
        assert!(
            text.contains("serin_canary_info{name=\"web\",namespace=\"test\",target=\"podinfo\",primary_service=\"front-primary\",canary_service=\"front-canary\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("podinfo-primary"), "{text}");
        m.canary_gone("web", "test", "podinfo");
        assert!(!m.encode().contains("serin_canary_info{"));
    }

    #[test]
    fn counters_a_dashboard_rates_exist_at_zero_before_the_first_increment() {
        let m = Metrics::new();
        m.rollout_counters(
            "podinfo",
            "test",
            "canary",
            &["request-success-rate".into()],
        );
        let text = m.encode();
        for line in [
            "serin_controller_reconcile_errors_total{kind=\"conflict\"} 0\n",
            "serin_controller_reconcile_errors_total{kind=\"other\"} 0\n",
            "serin_controller_errors_total{kind=\"forbidden\"} 0\n",
            "serin_canary_successes_total{name=\"podinfo\",namespace=\"test\",deployment_strategy=\"canary\"} 0\n",
            "serin_canary_judge_verdicts_total{name=\"podinfo\",namespace=\"test\",verdict=\"pass\"} 0\n",
            "serin_canary_judge_verdicts_total{name=\"podinfo\",namespace=\"test\",verdict=\"inconclusive\"} 0\n",
            "serin_canary_check_verdicts_total{name=\"podinfo\",namespace=\"test\",metric=\"request-success-rate\",verdict=\"fail\"} 0\n",
            "serin_canary_duration_seconds_bucket{le=\"+Inf\",name=\"podinfo\",namespace=\"test\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn verdicts_errors_lateness_and_leadership_are_exported() {
        let m = Metrics::new();
        m.check_verdict("podinfo", "test", "request-success-rate", "fail");
        m.judge_verdict("podinfo", "test", "inconclusive");
        m.reconcile_error("timeout");
        m.tick_late(std::time::Duration::from_millis(3));
        m.set_leader(true);
        m.set_progress("podinfo", "test", Some(1_700_000_000.5), 600.0);
        let text = m.encode();
        for line in [
            "serin_canary_check_verdicts_total{name=\"podinfo\",namespace=\"test\",metric=\"request-success-rate\",verdict=\"fail\"} 1\n",
            "serin_canary_judge_verdicts_total{name=\"podinfo\",namespace=\"test\",verdict=\"inconclusive\"} 1\n",
            "serin_controller_reconcile_errors_total{kind=\"timeout\"} 1\n",
            "serin_controller_tick_lateness_seconds_count 1\n",
            "serin_controller_leader 1\n",
            "serin_canary_progress_deadline_seconds{name=\"podinfo\",namespace=\"test\"} 600.0\n",
            "serin_canary_last_transition_timestamp_seconds{name=\"podinfo\",namespace=\"test\"} 1700000000.5\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("\nprocess_start_time_seconds "), "{text}");
    }
}

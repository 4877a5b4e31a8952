//! Flagger's defaults, applied in exactly one place: [`Normalized::from_canary`] turns a valid
//! Canary into a fully specified view (every duration parsed, every default filled in), so no
//! other code re-derives a default.
//!
//! Defaults (Flagger's): interval 60s, threshold 1 when unset or <= 0, maxWeight 100, metric
//! interval 1m, webhook timeout 10s, progressDeadlineSeconds 600, ready thresholds 100%,
//! session cookie max age 86400s, mirror weight 100%, service name = target name, port name
//! `http`, target port = port. Serin's judge: [`serin_core::judge_defaults`] (alpha 0.01,
//! minRequests 100, margins 90 % / 0.5 pp / 25 %, onInconclusive rollback, ...), the same values
//! serin-analysis's `JudgeConfig::default` is made of; noData minRequests 1.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serin_core::judge_defaults;

use crate::canary::{
    AlertSeverity, Canary, CrossNamespaceObjectReference, HookType, HttpMatchRequest, NoDataPolicy,
    OnInconclusive, TargetKind,
};
use crate::duration::parse_duration;
use crate::validate::{BUILTIN_METRICS, MAX_WEBHOOK_RETRIES, ValidationError, validate};

/// Default analysis interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default failed-check threshold.
pub const DEFAULT_THRESHOLD: u32 = 1;
/// Default maximum canary weight.
pub const DEFAULT_MAX_WEIGHT: u32 = 100;
/// Default metric window.
pub const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(60);
/// Default webhook timeout.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default progress deadline.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
/// Default ready-pod percentage for primary and canary.
pub const DEFAULT_READY_THRESHOLD: u32 = 100;
/// Default session-affinity cookie lifetime.
pub const DEFAULT_COOKIE_MAX_AGE: Duration = Duration::from_secs(86_400);
/// Default requests per tick for a threshold check to have data.
pub const DEFAULT_NO_DATA_MIN_REQUESTS: u64 = 1;

/// How traffic moves during a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Progressive canary: the canary weight rises through `weights`, then the canary is
    /// promoted. `weights` is `stepWeights` as written, or `stepWeight, 2*stepWeight, ...` up to
    /// `maxWeight`, the last step being `maxWeight` itself (`serin_core::Strategy::linear`).
    Canary {
        /// Successive canary weights, strictly increasing; the last is `max_weight`.
        weights: Vec<u32>,
        /// `stepWeight` when the run steps evenly (kept for display).
        step_weight: Option<u32>,
        /// Largest canary weight before promotion.
        max_weight: u32,
    },
    /// A/B testing: requests matching `matches` go to the canary for `iterations` ticks.
    AbTesting {
        /// Successful ticks needed.
        iterations: u32,
        /// Requests routed to the canary.
        matches: Vec<HttpMatchRequest>,
    },
    /// Blue/Green: the canary gets test traffic only (or mirrored traffic) for `iterations`
    /// ticks, then all traffic switches.
    BlueGreen {
        /// Successful ticks needed.
        iterations: u32,
    },
}

/// Where a metric's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSource {
    /// `request-success-rate` or `request-duration`, computed by the provider.
    Builtin,
    /// A MetricTemplate (namespace `None` = the Canary's namespace).
    Template(CrossNamespaceObjectReference),
    /// A raw (deprecated) Prometheus query.
    Query(String),
}

/// A metric check with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCheck {
    /// Name of the check.
    pub name: String,
    /// Window the value is computed over.
    pub interval: Duration,
    /// Smallest accepted value.
    pub min: Option<f64>,
    /// Largest accepted value (the deprecated `threshold` when no range is given).
    pub max: Option<f64>,
    /// Where the value comes from.
    pub source: MetricSource,
    /// Template variables.
    pub template_variables: BTreeMap<String, String>,
}

/// A webhook with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Name of the webhook.
    pub name: String,
    /// When it is called.
    pub hook_type: HookType,
    /// Address.
    pub url: String,
    /// Request timeout.
    pub timeout: Duration,
    /// Suppress alerts for its failures.
    pub mute_alert: bool,
    /// Payload metadata.
    pub metadata: BTreeMap<String, String>,
    /// Extra attempts after a failure (Serin; default 0).
    pub retries: u32,
    /// Where the HMAC signing key lives (Serin; the platform reads it).
    pub signing_secret: Option<crate::SecretKeyReference>,
}

/// An alert with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Name of the alert.
    pub name: String,
    /// Lowest severity sent.
    pub severity: AlertSeverity,
    /// The AlertProvider.
    pub provider: CrossNamespaceObjectReference,
}

/// Judge settings with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeSettings {
    /// False-rollback budget for the whole run.
    pub alpha: f64,
    /// Requests per arm before judging.
    pub min_requests: u64,
    /// Harmless extra error rate, percentage points.
    pub error_rate_tolerance: f64,
    /// Harmless extra latency, percent.
    pub latency_tolerance: f64,
    /// Relative error-rate margin, percent.
    pub error_rate_margin: f64,
    /// Absolute error-rate margin, percentage points.
    pub error_rate_margin_absolute: f64,
    /// Latency margin, percent.
    pub latency_margin: f64,
    /// Chance of raising the weight of a canary worse than the margins (not of promoting it).
    pub step_alpha: f64,
    /// How a run ends when the judge stays inconclusive past a budget.
    pub on_inconclusive: OnInconclusive,
    /// Longest inconclusive stretch at one weight.
    pub step_budget: Duration,
    /// Longest run without the judge's last word.
    pub run_budget: Duration,
}

/// No-data settings with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct NoDataSettings {
    /// Requests per tick for a check to have data.
    pub min_requests: u64,
    /// The policy, or `None` to let the analysis library apply its documented default.
    pub policy: Option<NoDataPolicy>,
}

/// A valid Canary with every default applied and every duration parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// Kind of the target.
    pub target_kind: TargetKind,
    /// Name of the target.
    pub target_name: String,
    /// Traffic provider, if set on the Canary.
    pub provider: Option<String>,
    /// Apex service name (`<target>` unless `service.name` is set).
    pub service_name: String,
    /// Primary service and workload name.
    pub primary_name: String,
    /// Canary service name.
    pub canary_name: String,
    /// Service port.
    pub port: u16,
    /// Service port name.
    pub port_name: String,
    /// Container port the services target.
    pub target_port: IntOrString,
    /// Time between ticks.
    pub interval: Duration,
    /// Failed checks before rollback.
    pub threshold: u32,
    /// Traffic strategy.
    pub strategy: Strategy,
    /// Weight added to the primary per promotion tick (`None`: promote in one step).
    pub step_weight_promotion: Option<u32>,
    /// Mirrored percentage when mirroring is on.
    pub mirror_weight: Option<u32>,
    /// Ready-pod percentage required of the primary.
    pub primary_ready_threshold: u32,
    /// Ready-pod percentage required of the canary.
    pub canary_ready_threshold: u32,
    /// Session-affinity cookie name and lifetime.
    pub session_affinity: Option<(String, Duration)>,
    /// The session-affinity cookie's other `Set-Cookie` attributes.
    pub session_cookie: serin_core::CookieAttributes,
    /// `sessionAffinity.primaryCookieName`: the cookie that keeps primary users on the primary.
    pub session_primary_cookie: Option<String>,
    /// Time a workload may take to become ready.
    pub progress_deadline: Duration,
    /// Promote without analysis.
    pub skip_analysis: bool,
    /// No new runs; a run in progress pauses.
    pub suspend: bool,
    /// Revert the target and routing when the Canary is deleted.
    pub revert_on_deletion: bool,
    /// Metric checks.
    pub metrics: Vec<MetricCheck>,
    /// Webhooks.
    pub webhooks: Vec<Webhook>,
    /// Alerts.
    pub alerts: Vec<Alert>,
    /// The statistical judge, when present and enabled.
    pub judge: Option<JudgeSettings>,
    /// The no-data policy.
    pub no_data: NoDataSettings,
    /// `spec.ingressRef.name`: what `{{ ingress }}` renders in MetricTemplate queries (Flagger
    /// renders it whatever the provider).
    pub ingress: Option<String>,
    /// `spec.routeRef.name`: what `{{ route }}` renders (Flagger renders it whatever the
    /// provider).
    pub route: Option<String>,
}

fn weight(v: i32) -> u32 {
    // Validation has bounded every weight to 0..=100 before this runs.
    v.clamp(0, 100) as u32
}

fn duration_or(value: Option<&String>, default: Duration) -> Duration {
    // Validation has parsed every duration before this runs.
    value
        .and_then(|v| parse_duration(v).ok())
        .unwrap_or(default)
}

impl Normalized {
    /// Validates `canary` and returns its normalized view, or every validation error.
    pub fn from_canary(canary: &Canary) -> Result<Self, Vec<ValidationError>> {
        validate(canary)?;
        let spec = &canary.spec;
        let a = &spec.analysis;

        let max_weight = a.max_weight.map(weight).unwrap_or(DEFAULT_MAX_WEIGHT);
        let strategy = if let Some(iterations) = a.iterations {
            let iterations = iterations.max(1) as u32;
            if a.r#match.is_empty() {
                Strategy::BlueGreen { iterations }
            } else {
                Strategy::AbTesting {
                    iterations,
                    matches: a.r#match.clone(),
                }
            }
        } else if let Some(weights) = &a.step_weights {
            let weights: Vec<u32> = weights.iter().copied().map(weight).collect();
            let max_weight = weights.last().copied().unwrap_or(max_weight);
            Strategy::Canary {
                weights,
                step_weight: None,
                max_weight,
            }
        } else {
            // One rule for the whole system: the engine's (weights capped at maxWeight, so the
            // canary never receives more than maxWeight even when it is not a multiple).
            let step = a.step_weight.map(weight).unwrap_or(max_weight).max(1);
            let weights = serin_core::Strategy::linear(step, max_weight);
            Strategy::Canary {
                weights,
                step_weight: Some(step),
                max_weight,
            }
        };

        let service_name = spec
            .service
            .name
            .clone()
            .unwrap_or_else(|| spec.target_ref.name.clone());
        let port = spec.service.port.clamp(1, 65535) as u16;
        let metrics = a
            .metrics
            .iter()
            .map(|m| {
                let range = m.threshold_range.as_ref();
                // Flagger's deprecated scalar threshold is a minimum for the success rate and
                // a maximum for everything else.
                let (min, max) = match range {
                    Some(r) if r.min.is_some() || r.max.is_some() => (r.min, r.max),
                    _ if m.name == "request-success-rate" && m.template_ref.is_none() => {
                        (m.threshold, None)
                    }
                    _ => (None, m.threshold),
                };
                let source = match (&m.template_ref, &m.query) {
                    (Some(t), _) => MetricSource::Template(t.clone()),
                    (None, Some(q)) => MetricSource::Query(q.clone()),
                    (None, None) => {
                        debug_assert!(BUILTIN_METRICS.contains(&m.name.as_str()));
                        MetricSource::Builtin
                    }
                };
                MetricCheck {
                    name: m.name.clone(),
                    interval: duration_or(m.interval.as_ref(), DEFAULT_METRIC_INTERVAL),
                    min,
                    max,
                    source,
                    template_variables: m.template_variables.clone(),
                }
            })
            .collect();
        let webhooks = a
            .webhooks
            .iter()
            .map(|w| Webhook {
                name: w.name.clone(),
                hook_type: w.type_.unwrap_or_default(),
                url: w.url.clone(),
                timeout: duration_or(w.timeout.as_ref(), DEFAULT_WEBHOOK_TIMEOUT),
                mute_alert: w.mute_alert,
                metadata: w.metadata.clone().unwrap_or_default(),
                // Validation keeps it in 0..=MAX_WEBHOOK_RETRIES.
                retries: w
                    .retries
                    .map_or(0, |r| r.clamp(0, MAX_WEBHOOK_RETRIES) as u32),
                signing_secret: w.signing_secret_ref.clone(),
            })
            .collect();
        let alerts = a
            .alerts
            .iter()
            .map(|al| Alert {
                name: al.name.clone(),
                severity: al.severity.unwrap_or_default(),
                provider: al.provider_ref.clone(),
            })
            .collect();
        let judge = a
            .judge
            .as_ref()
            .filter(|j| j.enabled.unwrap_or(true))
            .map(|j| JudgeSettings {
                alpha: j.alpha.unwrap_or(judge_defaults::ALPHA),
                min_requests: j
                    .min_requests
                    .map(|n| n.max(1) as u64)
                    .unwrap_or(judge_defaults::MIN_REQUESTS),
                error_rate_tolerance: j
                    .error_rate_tolerance
                    .unwrap_or(judge_defaults::ERROR_RATE_TOLERANCE),
                latency_tolerance: j
                    .latency_tolerance
                    .unwrap_or(judge_defaults::LATENCY_TOLERANCE),
                error_rate_margin: j
                    .error_rate_margin
                    .unwrap_or(judge_defaults::ERROR_RATE_MARGIN),
                error_rate_margin_absolute: j
                    .error_rate_margin_absolute
                    .unwrap_or(judge_defaults::ERROR_RATE_MARGIN_ABSOLUTE),
                latency_margin: j.latency_margin.unwrap_or(judge_defaults::LATENCY_MARGIN),
                step_alpha: j.step_alpha.unwrap_or(judge_defaults::STEP_ALPHA),
                // Never promote without evidence unless asked to.
                on_inconclusive: j.on_inconclusive.unwrap_or(judge_defaults::ON_INCONCLUSIVE),
                step_budget: duration_or(j.step_budget.as_ref(), judge_defaults::STEP_BUDGET),
                run_budget: duration_or(j.run_budget.as_ref(), judge_defaults::RUN_BUDGET),
            });
        let no_data = NoDataSettings {
            min_requests: a
                .no_data
                .as_ref()
                .and_then(|n| n.min_requests)
                .map(|n| n.max(0) as u64)
                .unwrap_or(DEFAULT_NO_DATA_MIN_REQUESTS),
            policy: a.no_data.as_ref().and_then(|n| n.policy),
        };

        Ok(Normalized {
            ingress: spec.ingress_ref.as_ref().map(|r| r.name.clone()),
            route: spec.route_ref.as_ref().map(|r| r.name.clone()),
            target_kind: spec.target_ref.kind,
            target_name: spec.target_ref.name.clone(),
            provider: spec.provider.clone(),
            primary_name: format!("{service_name}-primary"),
            canary_name: format!("{service_name}-canary"),
            service_name,
            port,
            port_name: spec
                .service
                .port_name
                .clone()
                .unwrap_or_else(|| "http".to_string()),
            target_port: spec
                .service
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(i32::from(port))),
            // Flagger rounds a shorter interval up to its minimum (validation warns about it).
            interval: duration_or(a.interval.as_ref(), DEFAULT_INTERVAL)
                .max(Duration::from_secs(crate::MIN_INTERVAL_SECS)),
            threshold: a
                .threshold
                .filter(|t| *t > 0)
                .map(|t| t as u32)
                .unwrap_or(DEFAULT_THRESHOLD),
            strategy,
            step_weight_promotion: a.step_weight_promotion.map(weight),
            mirror_weight: a.mirror.then(|| a.mirror_weight.map(weight).unwrap_or(100)),
            primary_ready_threshold: a
                .primary_ready_threshold
                .map(weight)
                .unwrap_or(DEFAULT_READY_THRESHOLD),
            canary_ready_threshold: a
                .canary_ready_threshold
                .map(weight)
                .unwrap_or(DEFAULT_READY_THRESHOLD),
            session_affinity: a.session_affinity.as_ref().map(|s| {
                (
                    s.cookie_name.clone(),
                    s.max_age
                        .filter(|age| *age > 0)
                        .map(|age| Duration::from_secs(age as u64))
                        .unwrap_or(DEFAULT_COOKIE_MAX_AGE),
                )
            }),
            session_primary_cookie: a
                .session_affinity
                .as_ref()
                .and_then(|s| s.primary_cookie_name.clone())
                .filter(|n| !n.is_empty()),
            session_cookie: a
                .session_affinity
                .as_ref()
                .map(|s| s.attributes.clone())
                .unwrap_or_default(),
            progress_deadline: spec
                .progress_deadline_seconds
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64))
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE),
            skip_analysis: spec.skip_analysis,
            suspend: spec.suspend,
            revert_on_deletion: spec.revert_on_deletion,
            metrics,
            webhooks,
            alerts,
            judge,
            no_data,
        })
    }
}

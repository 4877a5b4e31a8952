//! Semantic validation: the rules a schema cannot express (durations, weight sequences,
//! mutually exclusive strategy fields, unique names, URLs). Shared by `serin validate` and the
//! controller, so a manifest the CLI accepts is one the controller runs.
//!
//! Strategy rule (Flagger's, from its CRD's `oneOf`): exactly one of
//! - `stepWeight` (with optional `maxWeight`): progressive canary in equal steps,
//! - `stepWeights`: progressive canary through explicit weights,
//! - `iterations`: A/B testing when `match` is set, Blue/Green (optionally mirrored) otherwise.
//!
//! Setting none or two of them is an error, as is setting one to a value that cannot make
//! progress (`stepWeight: 0`, `iterations: 0`, empty `stepWeights`).

use std::collections::HashMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::alert_provider::{ALERT_PROVIDER_TYPES, AlertProvider, SERIN_ALERT_PROVIDER_TYPES};
use crate::canary::{
    Canary, CanaryAnalysis, CanaryMetric, CanaryService, CanaryWebhook, HttpMatchRequest,
    StringMatch, TargetKind,
};
use crate::duration::{DURATION_FORM, parse_duration};
use crate::metric_template::{METRIC_PROVIDER_TYPES, MetricTemplate};

/// One rule a manifest breaks: where, and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Field path such as `spec.analysis.stepWeights[2]`.
    pub path: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl ValidationError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Several errors, for `?` in code that wants a `std::error::Error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<ValidationError>);

/// Most extra attempts a webhook may ask for (`webhooks[].retries`).
pub const MAX_WEBHOOK_RETRIES: i32 = 10;

/// Smallest analysis interval Flagger allows.
pub const MIN_INTERVAL_SECS: u64 = 10;

/// Metrics every provider computes without a template.
pub const BUILTIN_METRICS: [&str; 2] = ["request-success-rate", "request-duration"];

#[derive(Default)]
struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError::new(path, message));
    }

    fn finish(self) -> Result<(), Vec<ValidationError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Checks a Canary against every rule. Returns all errors, each naming its field.
pub fn validate(canary: &Canary) -> Result<(), Vec<ValidationError>> {
    let mut e = Errors::default();
    check_name(&mut e, canary.metadata.name.as_deref());
    let spec = &canary.spec;

    if let Some(provider) = &spec.provider {
        check_provider(&mut e, "spec.provider", provider);
    }
    if let Some(server) = &spec.metrics_server {
        check_http_url(&mut e, "spec.metricsServer", server);
    }

    let target = &spec.target_ref;
    if target.name.trim().is_empty() {
        e.push("spec.targetRef.name", "required: the name of the target");
    } else {
        check_dns_subdomain(&mut e, "spec.targetRef.name", &target.name);
    }
    // Flagger's CRD requires apiVersion on every reference; a value that does not match the
    // kind is only a warning (see `canary_warnings`), as Flagger picks the controller by kind.
    if target
        .api_version
        .as_deref()
        .is_none_or(|a| a.trim().is_empty())
    {
        e.push(
            "spec.targetRef.apiVersion",
            format!(
                "required; accepted for kind {}: {}",
                target.kind.as_str(),
                target.kind.api_versions().join(" or ")
            ),
        );
    }
    if let Some(autoscaler) = &spec.autoscaler_ref {
        if autoscaler.name.trim().is_empty() {
            e.push(
                "spec.autoscalerRef.name",
                "required: the name of the autoscaler",
            );
        }
        if autoscaler
            .api_version
            .as_deref()
            .is_none_or(|a| a.trim().is_empty())
        {
            e.push(
                "spec.autoscalerRef.apiVersion",
                "required; accepted: autoscaling/v2 (HorizontalPodAutoscaler) or keda.sh/v1alpha1 (ScaledObject)",
            );
        }
        if target.kind == TargetKind::DaemonSet {
            e.push(
                "spec.autoscalerRef",
                "a DaemonSet cannot be autoscaled; remove autoscalerRef or target a Deployment",
            );
        }
        if let Some(r) = &autoscaler.primary_scaler_replicas {
            if let Some(min) = r.min_replicas
                && min < 1
            {
                e.push(
                    "spec.autoscalerRef.primaryScalerReplicas.minReplicas",
                    format!("{min} is too small; accepted: 1 or more (the primary keeps serving)"),
                );
            }
            if let Some(max) = r.max_replicas
                && max < 1
            {
                e.push(
                    "spec.autoscalerRef.primaryScalerReplicas.maxReplicas",
                    format!("{max} is too small; accepted: 1 or more"),
                );
            }
            if let (Some(min), Some(max)) = (r.min_replicas, r.max_replicas)
                && min > max
            {
                e.push(
                    "spec.autoscalerRef.primaryScalerReplicas",
                    format!("minReplicas {min} is greater than maxReplicas {max}"),
                );
            }
        }
    }
    // Flagger's CRD: these references need apiVersion, kind (one value each) and name.
    let local_refs = [
        (
            "spec.ingressRef",
            spec.ingress_ref.as_ref(),
            "Ingress",
            "networking.k8s.io/v1",
        ),
        (
            "spec.routeRef",
            spec.route_ref.as_ref(),
            "ApisixRoute",
            "apisix.apache.org/v2",
        ),
    ];
    for (path, r, kind, api) in local_refs {
        if let Some(r) = r {
            check_reference(
                &mut e,
                path,
                r.api_version.as_deref(),
                r.kind.as_deref(),
                &r.name,
                kind,
                api,
            );
        }
    }
    if let Some(r) = &spec.upstream_ref {
        check_reference(
            &mut e,
            "spec.upstreamRef",
            r.api_version.as_deref(),
            r.kind.as_deref(),
            &r.name,
            "Upstream",
            "gloo.solo.io/v1",
        );
    }

    if spec.service.is_unset() {
        if target.kind != TargetKind::Service {
            e.push(
                "spec.service.port",
                format!(
                    "required for a {} target (only kind: Service brings its own service); accepted: 1..=65535",
                    target.kind.as_str()
                ),
            );
        }
    } else {
        check_service(&mut e, &spec.service);
    }
    check_analysis(&mut e, &spec.analysis);

    if let Some(deadline) = spec.progress_deadline_seconds
        && deadline <= 0
    {
        e.push(
            "spec.progressDeadlineSeconds",
            format!("{deadline} is not positive; accepted: seconds, at least 1 (default 600)"),
        );
    }
    e.finish()
}

fn check_name(e: &mut Errors, name: Option<&str>) {
    match name {
        None | Some("") => e.push("metadata.name", "required"),
        Some(name) => check_dns_subdomain(e, "metadata.name", name),
    }
}

fn check_provider(e: &mut Errors, path: &str, provider: &str) {
    let (base, version) = match provider.split_once(':') {
        Some((b, v)) => (b, Some(v)),
        None => (provider, None),
    };
    let Some(known) = crate::support::traffic_provider(base) else {
        e.push(
            path,
            format!(
                "unknown provider {provider:?}; accepted: {}",
                crate::support::traffic_provider_names().join(", ")
            ),
        );
        return;
    };
    if let Some(version) = version
        && !known.versions.contains(&version)
    {
        let accepted = if known.versions.is_empty() {
            format!("{base} takes no version")
        } else {
            format!(
                "accepted: {}",
                known
                    .versions
                    .iter()
                    .map(|v| format!("{base}:{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        e.push(
            path,
            format!("unknown version {version:?} of provider {base}; {accepted}"),
        );
    }
}

/// A reference Flagger's CRD types strictly: apiVersion, kind (one accepted value) and name.
fn check_reference(
    e: &mut Errors,
    path: &str,
    api_version: Option<&str>,
    kind: Option<&str>,
    name: &str,
    expected_kind: &str,
    example_api: &str,
) {
    if api_version.is_none_or(|a| a.trim().is_empty()) {
        e.push(
            format!("{path}.apiVersion"),
            format!("required; e.g. {example_api}"),
        );
    }
    match kind {
        Some(k) if k == expected_kind => {}
        Some(k) => e.push(
            format!("{path}.kind"),
            format!("unknown kind {k:?}; accepted: {expected_kind}"),
        ),
        None => e.push(
            format!("{path}.kind"),
            format!("required; accepted: {expected_kind}"),
        ),
    }
    if name.trim().is_empty() {
        e.push(
            format!("{path}.name"),
            "required: the name of the referenced object",
        );
    }
}

fn check_service(e: &mut Errors, service: &CanaryService) {
    if let Some(name) = &service.name {
        if name.is_empty() {
            e.push(
                "spec.service.name",
                "empty; omit it to use the target's name",
            );
        } else if !is_dns_label(name) {
            e.push(
                "spec.service.name",
                format!(
                    "{name:?} is not a valid service name; accepted: at most 63 lower-case letters, digits and '-', starting with a letter"
                ),
            );
        }
    }
    if !(1..=65535).contains(&service.port) {
        e.push(
            "spec.service.port",
            format!("{} is not a port; accepted: 1..=65535", service.port),
        );
    }
    match &service.target_port {
        Some(IntOrString::Int(p)) if !(1..=65535).contains(p) => e.push(
            "spec.service.targetPort",
            format!("{p} is not a port; accepted: a number 1..=65535 or a container port name"),
        ),
        Some(IntOrString::String(name)) if !is_port_name(name) => e.push(
            "spec.service.targetPort",
            format!(
                "{name:?} is neither a port number nor a port name; accepted: 1..=65535 or at most 15 lower-case letters, digits and '-' with at least one letter"
            ),
        ),
        _ => {}
    }
    if let Some(name) = &service.port_name
        && !is_port_name(name)
    {
        e.push(
            "spec.service.portName",
            format!(
                "{name:?} is not a port name; accepted: at most 15 lower-case letters, digits and '-' with at least one letter (default http)"
            ),
        );
    }
    if let Some(timeout) = &service.timeout {
        check_duration(e, "spec.service.timeout", timeout, false);
    }
    if let Some(retries) = &service.retries {
        if let Some(attempts) = retries.attempts
            && attempts < 0
        {
            e.push(
                "spec.service.retries.attempts",
                format!("{attempts} is negative; accepted: 0 or more"),
            );
        }
        if let Some(t) = &retries.per_try_timeout {
            check_duration(e, "spec.service.retries.perTryTimeout", t, false);
        }
    }
    if let Some(cors) = &service.cors_policy {
        if let Some(age) = &cors.max_age {
            check_duration(e, "spec.service.corsPolicy.maxAge", age, true);
        }
        for (i, m) in cors.allow_origins.iter().enumerate() {
            check_string_match(e, &format!("spec.service.corsPolicy.allowOrigins[{i}]"), m);
        }
    }
    for (i, host) in service.hosts.iter().enumerate() {
        if host.trim().is_empty() {
            e.push(format!("spec.service.hosts[{i}]"), "empty host name");
        }
    }
    for (i, g) in service.gateway_refs.iter().enumerate() {
        if g.name.trim().is_empty() {
            e.push(
                format!("spec.service.gatewayRefs[{i}].name"),
                "required: the name of the gateway",
            );
        }
        if let Some(port) = g.port
            && !(1..=65535).contains(&port)
        {
            e.push(
                format!("spec.service.gatewayRefs[{i}].port"),
                format!("{port} is not a port; accepted: 1..=65535"),
            );
        }
    }
    for (i, m) in service.r#match.iter().enumerate() {
        check_http_match(e, &format!("spec.service.match[{i}]"), m);
    }
    if let Some(t) = &service.backend_timeout {
        check_duration(e, "spec.service.backendTimeout", t, true);
    }
    for (i, m) in service.mirror.iter().enumerate() {
        let path = format!("spec.service.mirror[{i}]");
        if m.backend_ref.name.trim().is_empty() {
            e.push(
                format!("{path}.backendRef.name"),
                "required: the name of the backend that receives the copies",
            );
        }
        if let Some(port) = m.backend_ref.port
            && !(1..=65535).contains(&port)
        {
            e.push(
                format!("{path}.backendRef.port"),
                format!("{port} is not a port; accepted: 1..=65535"),
            );
        }
        if let Some(p) = m.percent
            && !(0..=100).contains(&p)
        {
            e.push(
                format!("{path}.percent"),
                format!("{p} is out of range; accepted: 0..=100 (default 100)"),
            );
        }
    }
    if let Some(t) = &service.traffic_distribution
        && t.trim().is_empty()
    {
        e.push(
            "spec.service.trafficDistribution",
            "empty; accepted: a Service trafficDistribution such as PreferClose, or omit it",
        );
    }
}

fn check_analysis(e: &mut Errors, a: &CanaryAnalysis) {
    const P: &str = "spec.analysis";
    if let Some(interval) = &a.interval {
        // Shorter than MIN_INTERVAL_SECS is rounded up, as Flagger does (a warning).
        check_duration(e, &format!("{P}.interval"), interval, true);
    }
    if let Some(t) = a.threshold
        && t < 0
    {
        e.push(
            format!("{P}.threshold"),
            format!("{t} is negative; accepted: the number of failed checks before rollback, 1 or more (0 means 1)"),
        );
    }

    // Strategy: exactly one of stepWeight, stepWeights, iterations.
    let set: Vec<&str> = [
        ("stepWeight", a.step_weight.is_some()),
        ("stepWeights", a.step_weights.is_some()),
        ("iterations", a.iterations.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    match set.len() {
        0 => e.push(
            P,
            "no strategy: set stepWeight or stepWeights (progressive canary) or iterations (A/B testing with match, Blue/Green without)",
        ),
        1 => {}
        _ => e.push(
            P,
            format!(
                "{} are mutually exclusive; set exactly one of stepWeight, stepWeights (progressive canary) or iterations (A/B testing, Blue/Green)",
                set.join(" and ")
            ),
        ),
    }

    if let Some(max) = a.max_weight
        && !(1..=100).contains(&max)
    {
        e.push(
            format!("{P}.maxWeight"),
            format!("{max} is out of range; accepted: 1..=100"),
        );
    }
    let max_weight = a.max_weight.filter(|m| (1..=100).contains(m));
    if let Some(step) = a.step_weight {
        if !(1..=100).contains(&step) {
            e.push(
                format!("{P}.stepWeight"),
                format!("{step} is out of range; accepted: 1..=100"),
            );
        } else if let Some(max) = max_weight
            && step > max
        {
            e.push(
                format!("{P}.stepWeight"),
                format!("{step} is greater than maxWeight {max}; accepted: 1..=maxWeight"),
            );
        }
    }
    if let Some(weights) = &a.step_weights {
        if weights.is_empty() {
            e.push(
                format!("{P}.stepWeights"),
                "empty; accepted: strictly increasing weights, each 1..=100",
            );
        }
        let mut previous: Option<i32> = None;
        for (i, &w) in weights.iter().enumerate() {
            let path = format!("{P}.stepWeights[{i}]");
            if !(1..=100).contains(&w) {
                e.push(path, format!("{w} is out of range; accepted: 1..=100"));
            } else if let Some(prev) = previous
                && w <= prev
            {
                e.push(
                    path,
                    format!("{w} does not increase on the previous step {prev}; accepted: strictly increasing weights"),
                );
            }
            // Flagger ignores maxWeight when stepWeights is set (a warning says so).
            previous = Some(w);
        }
    }
    if let Some(p) = a.step_weight_promotion
        && !(1..=100).contains(&p)
    {
        e.push(
            format!("{P}.stepWeightPromotion"),
            format!("{p} is out of range; accepted: 1..=100"),
        );
    }
    if let Some(n) = a.iterations
        && n < 1
    {
        e.push(
            format!("{P}.iterations"),
            format!("{n} cannot make progress; accepted: 1 or more"),
        );
    }
    if let Some(w) = a.mirror_weight
        && !(0..=100).contains(&w)
    {
        e.push(
            format!("{P}.mirrorWeight"),
            format!("{w} is out of range; accepted: 0..=100"),
        );
    }
    for (field, value) in [
        ("primaryReadyThreshold", a.primary_ready_threshold),
        ("canaryReadyThreshold", a.canary_ready_threshold),
    ] {
        if let Some(v) = value
            && !(0..=100).contains(&v)
        {
            e.push(
                format!("{P}.{field}"),
                format!("{v} is out of range; accepted: a percentage of ready pods, 0..=100 (default 100)"),
            );
        }
    }
    if let Some(sa) = &a.session_affinity {
        if sa.cookie_name.trim().is_empty() {
            e.push(
                format!("{P}.sessionAffinity.cookieName"),
                "required: the name of the affinity cookie",
            );
        } else if !sa.cookie_name.chars().all(is_cookie_name_char) {
            e.push(
                format!("{P}.sessionAffinity.cookieName"),
                format!(
                    "{:?} is not a cookie name; accepted: letters, digits and !#$%&'*+-.^_`|~",
                    sa.cookie_name
                ),
            );
        }
        if let Some(age) = sa.max_age
            && age < 0
        {
            e.push(
                format!("{P}.sessionAffinity.maxAge"),
                format!("{age} is negative; accepted: seconds, 0 or more (default 86400)"),
            );
        }
        if let Some(primary) = &sa.primary_cookie_name {
            let path = format!("{P}.sessionAffinity.primaryCookieName");
            if primary.is_empty() || !primary.chars().all(is_cookie_name_char) {
                e.push(
                    path,
                    format!("{primary:?} is not a cookie name; accepted: letters, digits and !#$%&'*+-.^_`|~"),
                );
            } else if *primary == sa.cookie_name {
                e.push(
                    path,
                    format!("{primary:?} is also cookieName; accepted: a different name, so the canary's and the primary's cookies can be told apart"),
                );
            }
        }
        let attrs = &sa.attributes;
        for (field, value) in [("domain", &attrs.domain), ("path", &attrs.path)] {
            if let Some(v) = value
                && (v.is_empty() || !v.chars().all(|c| c.is_ascii_graphic() && c != ';'))
            {
                e.push(
                    format!("{P}.sessionAffinity.{field}"),
                    format!("{v:?} cannot be a cookie attribute; accepted: visible ASCII without ';' or spaces"),
                );
            }
        }
        if let Some(p) = &attrs.path
            && !p.starts_with('/')
        {
            e.push(
                format!("{P}.sessionAffinity.path"),
                format!("{p:?} does not start with '/'; accepted: an absolute path such as /"),
            );
        }
    }
    for (i, m) in a.r#match.iter().enumerate() {
        check_http_match(e, &format!("{P}.match[{i}]"), m);
    }
    // Matches route requests only in A/B testing, which counts iterations; a weighted canary
    // would run without them (Flagger's admission policy refuses this too).
    let steps = match (a.step_weight, &a.step_weights) {
        (_, Some(_)) => Some("stepWeights"),
        (Some(_), None) => Some("stepWeight"),
        (None, None) => None,
    };
    if let Some(steps) = steps
        && !a.r#match.is_empty()
        && a.iterations.is_none()
    {
        e.push(
            format!("{P}.match"),
            format!(
                "A/B testing needs iterations (the number of checks while the matching requests go to the canary); with {steps} the matches are not used: set iterations instead of {steps}, or remove match"
            ),
        );
    }

    let mut metric_names: HashMap<&str, usize> = HashMap::new();
    for (i, m) in a.metrics.iter().enumerate() {
        check_metric(e, &format!("{P}.metrics[{i}]"), m);
        if !m.name.is_empty()
            && let Some(first) = metric_names.insert(m.name.as_str(), i)
        {
            e.push(
                format!("{P}.metrics[{i}].name"),
                format!(
                    "duplicate metric name {:?} (also metrics[{first}]); accepted: unique names",
                    m.name
                ),
            );
        }
    }
    let mut hook_names: HashMap<&str, usize> = HashMap::new();
    for (i, w) in a.webhooks.iter().enumerate() {
        check_webhook(e, &format!("{P}.webhooks[{i}]"), w);
        if !w.name.is_empty()
            && let Some(first) = hook_names.insert(w.name.as_str(), i)
        {
            e.push(
                format!("{P}.webhooks[{i}].name"),
                format!(
                    "duplicate webhook name {:?} (also webhooks[{first}]); accepted: unique names",
                    w.name
                ),
            );
        }
    }
    let mut alert_names: HashMap<&str, usize> = HashMap::new();
    for (i, alert) in a.alerts.iter().enumerate() {
        let path = format!("{P}.alerts[{i}]");
        if alert.name.trim().is_empty() {
            e.push(format!("{path}.name"), "required");
        } else if let Some(first) = alert_names.insert(alert.name.as_str(), i) {
            e.push(
                format!("{path}.name"),
                format!(
                    "duplicate alert name {:?} (also alerts[{first}]); accepted: unique names",
                    alert.name
                ),
            );
        }
        if alert.provider_ref.name.trim().is_empty() {
            e.push(
                format!("{path}.providerRef.name"),
                "required: the name of an AlertProvider",
            );
        }
    }

    if let Some(judge) = &a.judge {
        let jp = format!("{P}.judge");
        if let Some(alpha) = judge.alpha
            && !(alpha > 0.0 && alpha <= 0.5)
        {
            e.push(
                format!("{jp}.alpha"),
                format!("{alpha} is out of range; accepted: a probability in (0, 0.5], e.g. 0.01"),
            );
        }
        if let Some(n) = judge.min_requests
            && n < 1
        {
            e.push(
                format!("{jp}.minRequests"),
                format!("{n} is too small; accepted: requests per arm, 1 or more (default 100)"),
            );
        }
        if let Some(t) = judge.error_rate_tolerance
            && !(0.0..=100.0).contains(&t)
        {
            e.push(
                format!("{jp}.errorRateTolerance"),
                format!("{t} is out of range; accepted: percentage points, 0..=100"),
            );
        }
        if let Some(t) = judge.latency_tolerance
            && !(t >= 0.0 && t.is_finite())
        {
            e.push(
                format!("{jp}.latencyTolerance"),
                format!("{t} is out of range; accepted: a percentage, 0 or more"),
            );
        }
        check_judge_margins(e, &jp, judge);
    }
    if let Some(no_data) = &a.no_data
        && let Some(n) = no_data.min_requests
        && n < 0
    {
        e.push(
            format!("{P}.noData.minRequests"),
            format!("{n} is negative; accepted: requests per tick, 0 or more (default 1)"),
        );
    }
}

/// The judge's margins and inconclusive budgets (`spec.analysis.judge`).
fn check_judge_margins(e: &mut Errors, jp: &str, judge: &crate::canary::Judge) {
    if let Some(m) = judge.error_rate_margin
        && !(m > 0.0 && m <= 1000.0)
    {
        e.push(
            format!("{jp}.errorRateMargin"),
            format!("{m} is out of range; accepted: percent of the primary's error rate, in (0, 1000] (default 90)"),
        );
    }
    if let Some(m) = judge.error_rate_margin_absolute
        && !(m > 0.0 && m <= 100.0)
    {
        e.push(
            format!("{jp}.errorRateMarginAbsolute"),
            format!("{m} is out of range; accepted: percentage points, in (0, 100] (default 0.5)"),
        );
    }
    let alpha = judge.alpha.unwrap_or(serin_core::judge_defaults::ALPHA);
    if let Some(s) = judge.step_alpha
        && !(s > 0.0 && s <= 0.5 && s >= alpha)
    {
        e.push(
            format!("{jp}.stepAlpha"),
            format!("{s} is out of range; accepted: a probability in [alpha ({alpha}), 0.5] (default 0.2)"),
        );
    }
    let tolerance = judge
        .latency_tolerance
        .unwrap_or(serin_core::judge_defaults::LATENCY_TOLERANCE);
    if let Some(m) = judge.latency_margin
        && !(m > 0.0 && m <= 1000.0)
    {
        e.push(
            format!("{jp}.latencyMargin"),
            format!("{m} is out of range; accepted: percent, in (0, 1000] (default 25)"),
        );
    } else if let Some(m) = judge.latency_margin
        && tolerance.is_finite()
        && m <= tolerance
    {
        e.push(
            format!("{jp}.latencyMargin"),
            format!("{m} is not above latencyTolerance {tolerance}; accepted: a margin larger than the tolerance"),
        );
    }
    for (name, value) in [
        ("stepBudget", &judge.step_budget),
        ("runBudget", &judge.run_budget),
    ] {
        if let Some(v) = value {
            check_duration(e, &format!("{jp}.{name}"), v, true);
        }
    }
}

fn check_metric(e: &mut Errors, path: &str, m: &CanaryMetric) {
    if m.name.trim().is_empty() {
        e.push(format!("{path}.name"), "required");
    }
    if let Some(interval) = &m.interval
        && let Some(d) = check_duration(e, &format!("{path}.interval"), interval, true)
        && d.as_millis() < 1000
    {
        e.push(
            format!("{path}.interval"),
            format!("{interval:?} is shorter than 1s; accepted: {DURATION_FORM} (default 1m)"),
        );
    }
    let builtin = BUILTIN_METRICS.contains(&m.name.as_str());
    match (&m.template_ref, &m.query) {
        (Some(_), Some(_)) => e.push(
            path,
            "templateRef and query are mutually exclusive; keep templateRef (query is deprecated)",
        ),
        (None, None) if !builtin && !m.name.trim().is_empty() => e.push(
            path,
            format!(
                "custom metric {:?} needs templateRef (a MetricTemplate) or query; only {} are built in",
                m.name,
                BUILTIN_METRICS.join(" and ")
            ),
        ),
        (Some(t), None) if t.name.trim().is_empty() => e.push(
            format!("{path}.templateRef.name"),
            "required: the name of a MetricTemplate",
        ),
        (None, Some(q)) if q.trim().is_empty() => e.push(
            format!("{path}.query"),
            "empty query; accepted: a PromQL query, or use templateRef",
        ),
        _ => {}
    }
    // templateVariables without a templateRef: accepted, as Flagger accepts them (a warning says
    // when they are ignored, see `canary_warnings`).
    let range = m.threshold_range.as_ref();
    let (min, max) = (range.and_then(|r| r.min), range.and_then(|r| r.max));
    for (field, v) in [("min", min), ("max", max)] {
        if let Some(v) = v
            && !v.is_finite()
        {
            e.push(
                format!("{path}.thresholdRange.{field}"),
                "not a finite number",
            );
        }
    }
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        e.push(
            format!("{path}.thresholdRange"),
            format!("min {lo} is greater than max {hi}; accepted: min <= max"),
        );
    }
    if min.is_none() && max.is_none() && m.threshold.is_none() {
        e.push(
            path,
            "no bound: set thresholdRange.min and/or thresholdRange.max (or the deprecated threshold)",
        );
    }
}

fn check_webhook(e: &mut Errors, path: &str, w: &CanaryWebhook) {
    if w.name.trim().is_empty() {
        e.push(format!("{path}.name"), "required");
    }
    check_http_url(e, &format!("{path}.url"), &w.url);
    if let Some(t) = &w.timeout
        && let Some(d) = check_duration(e, &format!("{path}.timeout"), t, true)
        && d.is_zero()
    {
        e.push(
            format!("{path}.timeout"),
            format!("zero timeout; accepted: {DURATION_FORM} (default 10s)"),
        );
    }
    if let Some(r) = w.retries
        && !(0..=MAX_WEBHOOK_RETRIES).contains(&r)
    {
        e.push(
            format!("{path}.retries"),
            format!("{r} is out of range; accepted: 0..={MAX_WEBHOOK_RETRIES} extra attempts (default 0)"),
        );
    }
    if let Some(s) = &w.signing_secret_ref {
        if s.name.trim().is_empty() {
            e.push(
                format!("{path}.signingSecretRef.name"),
                "required: the name of a Secret in the Canary's namespace",
            );
        } else {
            check_dns_subdomain(e, &format!("{path}.signingSecretRef.name"), &s.name);
        }
        if s.key.trim().is_empty() {
            e.push(
                format!("{path}.signingSecretRef.key"),
                "required: the key of the Secret's data holding the HMAC key",
            );
        } else if !s
            .key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            e.push(
                format!("{path}.signingSecretRef.key"),
                format!(
                    "{:?} is not a Secret key; accepted: letters, digits, '-', '_' and '.'",
                    s.key
                ),
            );
        }
    }
}

fn check_http_match(e: &mut Errors, path: &str, m: &HttpMatchRequest) {
    for (field, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            check_string_match(e, &format!("{path}.{field}"), sm);
        }
    }
    for (field, map) in [
        ("headers", &m.headers),
        ("queryParams", &m.query_params),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (key, sm) in map {
            if key.trim().is_empty() {
                e.push(format!("{path}.{field}"), "empty name");
            }
            check_string_match(e, &format!("{path}.{field}.{key}"), sm);
        }
    }
    if let Some(port) = m.port
        && !(1..=65535).contains(&port)
    {
        e.push(
            format!("{path}.port"),
            format!("{port} is not a port; accepted: 1..=65535"),
        );
    }
}

fn check_string_match(e: &mut Errors, path: &str, m: &StringMatch) {
    let set = [&m.exact, &m.prefix, &m.suffix, &m.regex]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if set != 1 {
        e.push(
            path,
            format!("{set} of exact, prefix, suffix, regex are set; accepted: exactly one"),
        );
    }
}

/// Parses a duration field, recording an error naming the field on failure.
fn check_duration(
    e: &mut Errors,
    path: &str,
    value: &str,
    positive: bool,
) -> Option<std::time::Duration> {
    match parse_duration(value) {
        Ok(d) if positive && d.is_zero() => {
            e.push(
                path,
                format!("{value:?} is zero; accepted: {DURATION_FORM}"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(err) => {
            e.push(path, format!("{err}; accepted: {DURATION_FORM}"));
            None
        }
    }
}

fn check_http_url(e: &mut Errors, path: &str, url: &str) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        None => e.push(
            path,
            format!(
                "{url:?} is not an http(s) URL; accepted: http://host[:port]/path or https://..."
            ),
        ),
        Some(rest) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = authority.rsplit('@').next().unwrap_or_default();
            let (host, port) = match host.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || host.starts_with('[') => (h, Some(p)),
                _ => (host, None),
            };
            let bad_port = port.is_some_and(|p| p.parse::<u16>().map(|p| p == 0).unwrap_or(true));
            if host.is_empty() || host.contains(char::is_whitespace) || bad_port {
                e.push(
                    path,
                    format!("{url:?} has no valid host or port; accepted: http://host[:port]/path or https://..."),
                );
            }
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_dns_subdomain(e: &mut Errors, path: &str, name: &str) {
    let ok = name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !ok {
        e.push(
            path,
            format!("{name:?} is not a valid object name; accepted: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"),
        );
    }
}

/// IANA service name rules, as Kubernetes applies them to port names.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn is_cookie_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Splunk's address may be written as Flagger's docs show the realm's stream endpoint,
/// `wss://stream.<realm>.signalfx.com`: checked as the https URL it stands for.
fn splunk_stream_as_http(type_: &str, address: &str) -> String {
    match (type_, address.split_once("://")) {
        ("splunk", Some(("wss", rest))) => format!("https://{rest}"),
        ("splunk", Some(("ws", rest))) => format!("http://{rest}"),
        _ => address.to_string(),
    }
}

/// The `spec.provider` fields a queried provider cannot run without (Flagger's controller
/// refuses the same templates when it builds the provider: "region not specified", "splunk
/// endpoint is not set", "splunk credentials does not contain sf_token_key").
fn check_provider_fields(e: &mut Errors, p: &crate::MetricTemplateProvider) {
    match p.type_.as_str() {
        "cloudwatch" => match p.region.as_deref().map(str::trim) {
            None | Some("") => e.push(
                "spec.provider.region",
                "required for provider cloudwatch; accepted: an AWS region, e.g. us-east-1",
            ),
            Some(r)
                if !r
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') =>
            {
                e.push(
                    "spec.provider.region",
                    format!("{r:?} is not an AWS region name; accepted: e.g. us-east-1"),
                )
            }
            Some(_) => {}
        },
        "splunk" => {
            if p.address.is_none() {
                e.push(
                    "spec.provider.address",
                    "required for provider splunk; accepted: the realm's endpoint, e.g. https://api.us1.signalfx.com or wss://stream.us1.signalfx.com",
                );
            }
            if p.secret_ref.is_none() {
                e.push(
                    "spec.provider.secretRef",
                    "required for provider splunk; accepted: a Secret with the key sf_token_key",
                );
            }
        }
        _ => {}
    }
}

/// Checks a MetricTemplate.
pub fn validate_metric_template(t: &MetricTemplate) -> Result<(), Vec<ValidationError>> {
    let mut e = Errors::default();
    check_name(&mut e, t.metadata.name.as_deref());
    let p = &t.spec.provider;
    if !METRIC_PROVIDER_TYPES.contains(&p.type_.as_str()) {
        e.push(
            "spec.provider.type",
            format!(
                "unknown metric provider {:?}; accepted: {}",
                p.type_,
                METRIC_PROVIDER_TYPES.join(", ")
            ),
        );
    }
    if let Some(address) = &p.address {
        check_http_url(
            &mut e,
            "spec.provider.address",
            &splunk_stream_as_http(&p.type_, address),
        );
    }
    check_provider_fields(&mut e, p);
    if let Some(secret) = &p.secret_ref
        && secret.name.trim().is_empty()
    {
        e.push(
            "spec.provider.secretRef.name",
            "required: the name of a Secret",
        );
    }
    // (path of the name, path of the value, name, value) in either accepted shape.
    let headers: Vec<(String, String, &str, &str)> = match &p.headers {
        crate::ProviderHeaders::List(list) => list
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let path = format!("spec.provider.headers[{i}]");
                (
                    format!("{path}.name"),
                    format!("{path}.value"),
                    h.name.as_str(),
                    h.value.as_str(),
                )
            })
            .collect(),
        crate::ProviderHeaders::Map(map) => map
            .iter()
            .flat_map(|(name, values)| {
                values.iter().enumerate().map(move |(i, v)| {
                    let path = format!("spec.provider.headers.{name}");
                    (
                        path.clone(),
                        format!("{path}[{i}]"),
                        name.as_str(),
                        v.as_str(),
                    )
                })
            })
            .collect(),
    };
    for (name_path, value_path, name, value) in &headers {
        if !is_http_token(name) {
            e.push(
                name_path.clone(),
                format!(
                    "{name:?} is not a header name; accepted: letters, digits and !#$%&'*+-.^_`|~ (e.g. X-Scope-OrgID)"
                ),
            );
        } else if name.eq_ignore_ascii_case("authorization") {
            e.push(
                name_path.clone(),
                "credentials do not belong in a manifest; accepted: spec.provider.secretRef with token, or username and password",
            );
        }
        if !value
            .chars()
            .all(|c| c == ' ' || c == '\t' || c.is_ascii_graphic())
        {
            e.push(
                value_path.clone(),
                "contains characters not allowed in a header; accepted: visible ASCII text",
            );
        }
    }
    if t.spec.query.trim().is_empty() {
        e.push(
            "spec.query",
            "empty; accepted: the provider's query, e.g. PromQL",
        );
    }
    e.finish()
}

/// An HTTP header name (RFC 9110 token).
fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// Checks an AlertProvider.
pub fn validate_alert_provider(p: &AlertProvider) -> Result<(), Vec<ValidationError>> {
    let mut e = Errors::default();
    check_name(&mut e, p.metadata.name.as_deref());
    let s = &p.spec;
    let known = ALERT_PROVIDER_TYPES
        .iter()
        .chain(SERIN_ALERT_PROVIDER_TYPES.iter());
    if !known.clone().any(|t| *t == s.type_) {
        e.push(
            "spec.type",
            format!(
                "unknown alert provider {:?}; accepted: {}",
                s.type_,
                known.copied().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    if s.address.is_none() && s.secret_ref.is_none() {
        e.push(
            "spec",
            "no destination: set address (the webhook URL) or secretRef (a Secret with an address key)",
        );
    }
    if let Some(address) = &s.address {
        check_http_url(&mut e, "spec.address", address);
    }
    if let Some(secret) = &s.secret_ref
        && secret.name.trim().is_empty()
    {
        e.push("spec.secretRef.name", "required: the name of a Secret");
    }
    if let Some(proxy) = &s.proxy {
        check_http_url(&mut e, "spec.proxy", proxy);
    }
    e.finish()
}

/// What Serin accepts but reads differently from what was written: each names the field, what
/// Serin does instead and why. Call on a Canary that passed [`validate`].
pub fn canary_warnings(canary: &Canary) -> Vec<ValidationError> {
    let mut w = Errors::default();
    let spec = &canary.spec;
    let target = &spec.target_ref;
    if let Some(api) = target.api_version.as_deref()
        && !api.trim().is_empty()
        && !target.kind.api_versions().contains(&api)
    {
        w.push(
            "spec.targetRef.apiVersion",
            format!(
                "{api:?} does not serve kind {}; the target is read as {} {} (the controller is chosen by kind, as in Flagger)",
                target.kind.as_str(),
                target.kind.api_version(),
                target.kind.as_str()
            ),
        );
    }
    let a = &spec.analysis;
    if let Some(interval) = &a.interval
        && let Ok(d) = parse_duration(interval)
        && !d.is_zero()
        && d.as_secs_f64() < MIN_INTERVAL_SECS as f64
    {
        w.push(
            "spec.analysis.interval",
            format!("{interval:?} is shorter than {MIN_INTERVAL_SECS}s and is rounded up to {MIN_INTERVAL_SECS}s, as Flagger does"),
        );
    }
    if let (Some(max), Some(weights)) = (a.max_weight, &a.step_weights)
        && weights.iter().any(|w| *w > max)
    {
        w.push(
            "spec.analysis.maxWeight",
            format!("{max} is ignored because stepWeights is set (the last step is the largest weight), as Flagger does"),
        );
    }
    for (i, m) in a.metrics.iter().enumerate() {
        if !m.template_variables.is_empty() && m.template_ref.is_none() && m.query.is_none() {
            w.push(
                format!("spec.analysis.metrics[{i}].templateVariables"),
                format!(
                    "ignored: {:?} has no templateRef whose query they would fill in (Flagger ignores them too)",
                    m.name
                ),
            );
        }
    }
    if let Some(sa) = &a.session_affinity {
        let attrs = &sa.attributes;
        if attrs.partitioned && !attrs.secure {
            w.push(
                "spec.analysis.sessionAffinity.partitioned",
                "browsers drop a Partitioned cookie that is not Secure; set secure: true",
            );
        }
        if attrs.same_site == Some(crate::SameSite::None) && !attrs.secure {
            w.push(
                "spec.analysis.sessionAffinity.sameSite",
                "browsers drop a SameSite=None cookie that is not Secure; set secure: true",
            );
        }
    }
    w.0
}

/// Warnings for an AlertProvider that passed [`validate_alert_provider`].
pub fn alert_provider_warnings(p: &AlertProvider) -> Vec<ValidationError> {
    let mut w = Errors::default();
    if p.spec.address.is_some() && p.spec.secret_ref.is_some() {
        w.push(
            "spec.address",
            "ignored: secretRef is set too, and the Secret's address key is used (Flagger's CRD allows only one of them)",
        );
    }
    w.0
}

//! What this Serin runs of what it accepts: the one table behind `serin validate`'s verdicts,
//! the controller's `ProviderSupported` condition and the compatibility table in README.md, so
//! the three cannot disagree.
//!
//! A manifest can be valid (Flagger's CRD and rules accept it; so does Serin) and still not be
//! runnable by this Serin: a traffic provider it does not drive (Istio, NGINX, ...), a target
//! kind it does not manage (Knative `Service`) or a metric provider it does not query. Those
//! are said before the rollout, naming what is supported instead.

use std::fmt::Write as _;

use crate::alert_provider::{ALERT_PROVIDER_TYPES, AlertProvider};
use crate::canary::{AutoscalerKind, Canary, TargetKind};
use crate::metric_template::MetricTemplate;

/// A traffic-management provider Flagger knows (`spec.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficProvider {
    /// Name before the optional `:<version>`.
    pub name: &'static str,
    /// Versions accepted after the `:`; empty when the provider takes none.
    pub versions: &'static [&'static str],
    /// Forms this Serin drives: `""` for the bare name, or a version.
    pub driven: &'static [&'static str],
    /// How Serin routes for it, or why it does not.
    pub note: &'static str,
}

/// Every provider Flagger accepts, plus Serin's own mesh. The routing code in the controller
/// implements exactly the `driven` forms (a test there keeps them in step).
pub const TRAFFIC_PROVIDERS: &[TrafficProvider] = &[
    TrafficProvider {
        name: "serin",
        versions: &[],
        driven: &[""],
        note: "Gateway API HTTPRoute served by Serin's own control plane and proxy",
    },
    TrafficProvider {
        name: "kubernetes",
        versions: &[],
        driven: &[""],
        note: "Blue/Green (analysis.iterations) by switching the apex Service's selector; weights, A/B matches, mirroring and the affinity cookie are not routed (valid, exit 3)",
    },
    TrafficProvider {
        name: "linkerd",
        versions: &[],
        driven: &[""],
        note: "Gateway API HTTPRoute (GAMMA) on the apex Service",
    },
    TrafficProvider {
        name: "gatewayapi",
        versions: &["v1alpha2", "v1beta1", "v1"],
        driven: &["", "v1", "v1beta1"],
        note: "HTTPRoute at gateway.networking.k8s.io/v1 or v1beta1; v1alpha2 is not written",
    },
    TrafficProvider {
        name: "smi",
        versions: &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"],
        driven: &["", "v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"],
        note: "SMI TrafficSplit: weights only; A/B matches, mirroring and the affinity cookie are not routed (valid, exit 3)",
    },
    TrafficProvider {
        name: "osm",
        versions: &[],
        driven: &[""],
        note: "SMI TrafficSplit v1alpha2: weights only, as smi",
    },
    TrafficProvider {
        name: "istio",
        versions: &[],
        driven: &[],
        note: "VirtualService/DestinationRule are not written",
    },
    TrafficProvider {
        name: "appmesh",
        versions: &["v1beta2"],
        driven: &[],
        note: "App Mesh virtual nodes and routers are not written",
    },
    TrafficProvider {
        name: "contour",
        versions: &[],
        driven: &[],
        note: "HTTPProxy is not written",
    },
    TrafficProvider {
        name: "gloo",
        versions: &[],
        driven: &[],
        note: "Gloo RouteTable/Upstreams are not written",
    },
    TrafficProvider {
        name: "nginx",
        versions: &[],
        driven: &[],
        note: "canary Ingress annotations are not written",
    },
    TrafficProvider {
        name: "skipper",
        versions: &[],
        driven: &[],
        note: "Skipper Ingress weights are not written",
    },
    TrafficProvider {
        name: "traefik",
        versions: &[],
        driven: &[],
        note: "TraefikService is not written",
    },
    TrafficProvider {
        name: "kuma",
        versions: &[],
        driven: &[],
        note: "Kuma TrafficRoute is not written",
    },
    TrafficProvider {
        name: "apisix",
        versions: &[],
        driven: &[],
        note: "ApisixRoute is not written",
    },
    TrafficProvider {
        name: "knative",
        versions: &[],
        driven: &[],
        note: "Knative Service traffic blocks are not written",
    },
];

/// The provider a Canary without `spec.provider` gets from a controller started without
/// `--provider`.
pub const DEFAULT_PROVIDER: &str = "serin";

/// The provider entry for a base name (no version), if Flagger knows it.
pub fn traffic_provider(name: &str) -> Option<&'static TrafficProvider> {
    TRAFFIC_PROVIDERS.iter().find(|p| p.name == name)
}

/// Every accepted base name.
pub fn traffic_provider_names() -> Vec<&'static str> {
    TRAFFIC_PROVIDERS.iter().map(|p| p.name).collect()
}

/// Every provider form this Serin drives, as written in `spec.provider`.
pub fn driven_providers() -> Vec<String> {
    TRAFFIC_PROVIDERS
        .iter()
        .flat_map(|p| {
            p.driven.iter().map(move |v| {
                if v.is_empty() {
                    p.name.to_string()
                } else {
                    format!("{}:{v}", p.name)
                }
            })
        })
        .collect()
}

/// Why this Serin cannot route for `provider` (as written, case-insensitive), or `None` when it
/// can. A provider name Flagger does not know is a validation error, reported elsewhere.
pub fn provider_not_driven(provider: &str) -> Option<String> {
    let lower = provider.trim().to_ascii_lowercase();
    let (base, version) = lower.split_once(':').unwrap_or((lower.as_str(), ""));
    let driven = traffic_provider(base).is_some_and(|p| p.driven.contains(&version));
    (!driven).then(|| {
        let why = traffic_provider(base).map_or("unknown provider", |p| p.note);
        format!(
            "provider {provider:?} is not driven by this Serin ({why}); supported: {}",
            driven_providers().join(", ")
        )
    })
}

/// How a driven provider moves traffic, which bounds the strategies it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// A Gateway API HTTPRoute: weights, request matches, mirroring and per-backend response
    /// headers (the affinity cookie).
    HttpRoute,
    /// An SMI TrafficSplit: weights only.
    TrafficSplit,
    /// The apex Service's selector: all traffic on one side (Blue/Green).
    Selector,
}

/// The routing of a provider this Serin drives (`None` for one it does not drive, which
/// [`provider_not_driven`] reports).
fn routing(provider: &str) -> Option<Routing> {
    if provider_not_driven(provider).is_some() {
        return None;
    }
    let lower = provider.trim().to_ascii_lowercase();
    let base = lower.split(':').next().unwrap_or_default();
    Some(match base {
        "smi" | "osm" => Routing::TrafficSplit,
        "kubernetes" => Routing::Selector,
        _ => Routing::HttpRoute,
    })
}

/// The providers that route A/B matches, mirror and set the affinity cookie.
const HTTP_ROUTE_PROVIDERS: &str = "serin, linkerd, gatewayapi (HTTPRoute)";

/// What `canary` asks of its traffic that `provider` (driven by this Serin) cannot do, each reason
/// naming the field and where it does run. Empty when the provider routes everything asked, or
/// when it is not driven at all ([`provider_not_driven`] says so).
pub fn strategy_not_routed(canary: &Canary, provider: &str) -> Vec<String> {
    let Some(routing) = routing(provider) else {
        return Vec::new();
    };
    let how = match routing {
        Routing::HttpRoute => return Vec::new(),
        Routing::TrafficSplit => "an SMI TrafficSplit splits by weight only",
        Routing::Selector => {
            "the apex Service's selector sends all traffic to the primary or to the canary"
        }
    };
    let a = &canary.spec.analysis;
    let mut out = Vec::new();
    let mut not_routed = |set: bool, field: &str, what: &str| {
        if set {
            out.push(format!(
                "{field}: {what} with provider {provider:?} ({how}); providers that do: {HTTP_ROUTE_PROVIDERS}"
            ));
        }
    };
    not_routed(
        !a.r#match.is_empty(),
        "spec.analysis.match",
        if routing == Routing::Selector {
            "requests are not routed by match (Flagger drops the match and runs Blue/Green)"
        } else {
            "requests are not routed by match"
        },
    );
    not_routed(a.mirror, "spec.analysis.mirror", "traffic is not mirrored");
    not_routed(
        a.session_affinity.is_some(),
        "spec.analysis.sessionAffinity",
        "the session-affinity cookie is not set",
    );
    if routing == Routing::Selector {
        for (set, field) in [
            (a.step_weight.is_some(), "spec.analysis.stepWeight"),
            (a.step_weights.is_some(), "spec.analysis.stepWeights"),
        ] {
            if set {
                out.push(format!(
                    "{field}: provider {provider:?} cannot send part of the traffic to the canary ({how}): it runs Blue/Green only, so set analysis.iterations instead (Flagger runs such a Canary as Blue/Green with iterations: 10), or use a provider that splits by weight: {HTTP_ROUTE_PROVIDERS}, smi, osm"
                ));
            }
        }
    }
    out
}

/// Target kinds the controller manages.
pub const DRIVEN_TARGET_KINDS: [TargetKind; 3] = [
    TargetKind::Deployment,
    TargetKind::DaemonSet,
    TargetKind::Process,
];

/// Why this Serin cannot manage a target of `kind`, or `None`.
pub fn target_not_driven(kind: TargetKind) -> Option<String> {
    (!DRIVEN_TARGET_KINDS.contains(&kind)).then(|| {
        format!(
            "targetRef kind {} (Flagger's Knative and Service targets) is not driven by this Serin; supported: Deployment, DaemonSet (Kubernetes), Process (local platform)",
            kind.as_str()
        )
    })
}

/// Why this Serin cannot clone an autoscaler of `kind` for the primary, or `None`.
pub fn autoscaler_not_driven(kind: AutoscalerKind) -> Option<String> {
    (kind == AutoscalerKind::ScaledObject).then(|| {
        "autoscaler ScaledObject (KEDA, in spec.autoscalerRef) is not driven by this Serin (no ScaledObject is cloned for the primary); supported: HorizontalPodAutoscaler (autoscaling/v2)".to_string()
    })
}

/// A metric provider Flagger defines (`MetricTemplate` `spec.provider.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricProvider {
    /// The type name.
    pub name: &'static str,
    /// Whether this Serin runs its queries.
    pub queried: bool,
}

/// Every metric provider type, in [`crate::METRIC_PROVIDER_TYPES`] order.
pub const METRIC_PROVIDERS: &[MetricProvider] = &[
    MetricProvider {
        name: "prometheus",
        queried: true,
    },
    MetricProvider {
        name: "influxdb",
        queried: true,
    },
    MetricProvider {
        name: "datadog",
        queried: true,
    },
    MetricProvider {
        name: "cloudwatch",
        queried: true,
    },
    MetricProvider {
        name: "newrelic",
        queried: true,
    },
    MetricProvider {
        name: "graphite",
        queried: true,
    },
    MetricProvider {
        name: "dynatrace",
        queried: true,
    },
    MetricProvider {
        name: "keptn",
        queried: false,
    },
    MetricProvider {
        name: "splunk",
        queried: true,
    },
    MetricProvider {
        name: "stackdriver",
        queried: false,
    },
    MetricProvider {
        name: "externalmetrics",
        queried: false,
    },
];

/// How each queried metric provider is tested, said in the compatibility table and in
/// `serin validate`'s output for a MetricTemplate of that type, so a user knows what a "supported"
/// stands on.
pub const METRIC_PROVIDER_TESTS: &[(&str, &str)] = &[
    (
        "prometheus",
        "tested against Debian's real Prometheus started by the tests",
    ),
    (
        "datadog",
        "tested against a local HTTP server answering with Datadog's documented responses and error shapes",
    ),
    (
        "newrelic",
        "tested against a local HTTP server answering with New Relic's documented responses and error shapes",
    ),
    (
        "dynatrace",
        "tested against a local HTTP server answering with Dynatrace's documented responses and error shapes",
    ),
    (
        "cloudwatch",
        "tested against a local HTTP server that checks each request's SigV4 signature and answers with CloudWatch's and STS's documented responses and errors",
    ),
    (
        "splunk",
        "SignalFlow; tested against a local HTTP server streaming SignalFlow's documented server-sent events, errors and cut streams",
    ),
    (
        "graphite",
        "the render API; tested against Debian's real graphite-web and carbon-cache started by the tests, with datapoints written through carbon",
    ),
    (
        "influxdb",
        "Flux over InfluxDB 2's /api/v2/query, as Flagger; tested against a local HTTP server answering with InfluxDB 2's annotated CSV and error shapes, not against a real InfluxDB 2 (Debian ships InfluxDB 1.6, which has no Flux; the tests check that its answer is reported as such)",
    ),
];

/// How the metric provider `type_` is tested (see [`METRIC_PROVIDER_TESTS`]), if it is queried.
pub fn metric_provider_tested(type_: &str) -> Option<&'static str> {
    METRIC_PROVIDER_TESTS
        .iter()
        .find(|(name, _)| *name == type_)
        .map(|(_, how)| *how)
}

/// The metric provider types this Serin queries.
pub fn queried_metric_providers() -> Vec<&'static str> {
    METRIC_PROVIDERS
        .iter()
        .filter(|p| p.queried)
        .map(|p| p.name)
        .collect()
}

/// Why this Serin does not run queries of `type_`, or `None` when it does.
pub fn metric_provider_not_queried(type_: &str) -> Option<String> {
    let queried = METRIC_PROVIDERS
        .iter()
        .any(|p| p.name == type_ && p.queried);
    (!queried).then(|| {
        format!(
            "metric provider {type_:?} is not queried by this Serin; supported: {}",
            queried_metric_providers().join(", ")
        )
    })
}

/// Whether a valid resource can be run by this Serin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Valid, and this Serin runs it.
    #[default]
    Runnable,
    /// Valid for Flagger, but this Serin does not run it: each reason names what is not run and
    /// what is supported instead.
    NotRunnable(Vec<String>),
}

impl Verdict {
    fn from_reasons(reasons: Vec<String>) -> Self {
        if reasons.is_empty() {
            Verdict::Runnable
        } else {
            Verdict::NotRunnable(reasons)
        }
    }
}

/// The verdict on a valid Canary; `default_provider` stands for a missing `spec.provider`.
pub fn canary_verdict(canary: &Canary, default_provider: &str) -> Verdict {
    let provider = canary.spec.provider.as_deref().unwrap_or(default_provider);
    Verdict::from_reasons(
        [
            target_not_driven(canary.spec.target_ref.kind),
            provider_not_driven(provider),
        ]
        .into_iter()
        .flatten()
        .chain(strategy_not_routed(canary, provider))
        .chain(
            canary
                .spec
                .autoscaler_ref
                .as_ref()
                .and_then(|a| autoscaler_not_driven(a.kind)),
        )
        .collect(),
    )
}

/// The verdict on a valid MetricTemplate.
pub fn metric_template_verdict(t: &MetricTemplate) -> Verdict {
    Verdict::from_reasons(
        metric_provider_not_queried(&t.spec.provider.type_)
            .into_iter()
            .collect(),
    )
}

/// The verdict on a valid AlertProvider: every type Flagger defines is sent.
pub fn alert_provider_verdict(provider: &AlertProvider) -> Verdict {
    Verdict::from_reasons(
        provider
            .spec
            .proxy
            .as_ref()
            .map(|_| ALERT_PROXY_NOT_SUPPORTED.to_string())
            .into_iter()
            .collect(),
    )
}

/// Why an AlertProvider with `spec.proxy` is not run (the controller sends alerts directly).
pub const ALERT_PROXY_NOT_SUPPORTED: &str = "alerts through an HTTP proxy (spec.proxy) are not sent by this Serin (alerts are posted straight to the address); remove spec.proxy or let the address be reachable directly";

/// How Serin treats one Canary field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldSupport {
    /// Read and acted on.
    Supported,
    /// Accepted and kept, not acted on; the reason says why.
    Ignored(&'static str),
}

/// A Canary field Serin accepts and what it does with it.
pub struct FieldRule {
    /// Field path, e.g. `spec.service.gateways`.
    pub path: &'static str,
    /// Supported, or ignored and why.
    pub support: FieldSupport,
    /// Whether a Canary sets the field (for the per-document report).
    pub set: fn(&Canary) -> bool,
}

const ISTIO: &str = "Istio VirtualService/DestinationRule setting; Serin writes HTTPRoutes";
const APPMESH: &str = "App Mesh setting";

/// Canary fields whose support is worth a line: everything else of Flagger's Canary is read and
/// acted on.
pub const FIELD_RULES: &[FieldRule] = &[
    FieldRule {
        path: "spec.analysis.sessionAffinity",
        support: FieldSupport::Supported,
        set: |c| c.spec.analysis.session_affinity.is_some(),
    },
    FieldRule {
        path: "spec.analysis.sessionAffinity.primaryCookieName, .domain, .path, .sameSite, .secure, .httpOnly, .partitioned",
        support: FieldSupport::Supported,
        set: |c| {
            c.spec
                .analysis
                .session_affinity
                .as_ref()
                .is_some_and(|s| s.primary_cookie_name.is_some() || !s.attributes.is_empty())
        },
    },
    FieldRule {
        path: "spec.analysis.mirror",
        support: FieldSupport::Supported,
        set: |c| c.spec.analysis.mirror,
    },
    FieldRule {
        path: "spec.service.headers",
        support: FieldSupport::Supported,
        set: |c| c.spec.service.headers.is_some(),
    },
    FieldRule {
        path: "spec.service.timeout",
        support: FieldSupport::Supported,
        set: |c| c.spec.service.timeout.is_some(),
    },
    FieldRule {
        path: "spec.service.gatewayRefs",
        support: FieldSupport::Supported,
        set: |c| !c.spec.service.gateway_refs.is_empty(),
    },
    FieldRule {
        path: "spec.service.gateways",
        support: FieldSupport::Ignored(ISTIO),
        set: |c| !c.spec.service.gateways.is_empty(),
    },
    FieldRule {
        path: "spec.service.trafficPolicy",
        support: FieldSupport::Ignored(ISTIO),
        set: |c| c.spec.service.traffic_policy.is_some(),
    },
    FieldRule {
        path: "spec.service.delegation",
        support: FieldSupport::Ignored(ISTIO),
        set: |c| c.spec.service.delegation,
    },
    FieldRule {
        path: "spec.service.corsPolicy",
        support: FieldSupport::Ignored(ISTIO),
        set: |c| c.spec.service.cors_policy.is_some(),
    },
    FieldRule {
        path: "spec.service.retries",
        support: FieldSupport::Ignored("retries are not part of the routes Serin writes"),
        set: |c| c.spec.service.retries.is_some(),
    },
    FieldRule {
        path: "spec.service.rewrite",
        support: FieldSupport::Ignored("URL rewrites are not part of the routes Serin writes"),
        set: |c| c.spec.service.rewrite.is_some(),
    },
    FieldRule {
        path: "spec.service.match",
        support: FieldSupport::Ignored("the generated route matches every request to the service"),
        set: |c| !c.spec.service.r#match.is_empty(),
    },
    FieldRule {
        path: "spec.service.backendTimeout",
        support: FieldSupport::Ignored("the route's backend request timeout is not written"),
        set: |c| c.spec.service.backend_timeout.is_some(),
    },
    FieldRule {
        path: "spec.service.mirror",
        support: FieldSupport::Ignored(
            "extra mirror backends are not written (analysis.mirror mirrors to the canary)",
        ),
        set: |c| !c.spec.service.mirror.is_empty(),
    },
    FieldRule {
        path: "spec.service.headless",
        support: FieldSupport::Ignored("the generated services keep a cluster IP"),
        set: |c| c.spec.service.headless,
    },
    FieldRule {
        path: "spec.service.trafficDistribution",
        support: FieldSupport::Ignored("not copied to the generated services"),
        set: |c| c.spec.service.traffic_distribution.is_some(),
    },
    FieldRule {
        path: "spec.service.unmanagedMetadata",
        support: FieldSupport::Ignored("the list of keys other controllers own is not read"),
        set: |c| c.spec.service.unmanaged_metadata.is_some(),
    },
    FieldRule {
        path: "spec.service.meshName",
        support: FieldSupport::Ignored(APPMESH),
        set: |c| c.spec.service.mesh_name.is_some(),
    },
    FieldRule {
        path: "spec.service.backends",
        support: FieldSupport::Ignored(APPMESH),
        set: |c| !c.spec.service.backends.is_empty(),
    },
    FieldRule {
        path: "spec.service.serviceDiscovery",
        support: FieldSupport::Ignored(APPMESH),
        set: |c| c.spec.service.service_discovery.is_some(),
    },
    FieldRule {
        path: "spec.ingressRef",
        support: FieldSupport::Ignored(
            "NGINX provider only; its name still renders `{{ ingress }}` in MetricTemplate queries",
        ),
        set: |c| c.spec.ingress_ref.is_some(),
    },
    FieldRule {
        path: "spec.routeRef",
        support: FieldSupport::Ignored(
            "APISIX provider only; its name still renders `{{ route }}` in MetricTemplate queries",
        ),
        set: |c| c.spec.route_ref.is_some(),
    },
    FieldRule {
        path: "spec.upstreamRef",
        support: FieldSupport::Ignored("Gloo provider only"),
        set: |c| c.spec.upstream_ref.is_some(),
    },
    FieldRule {
        path: "spec.analysis.webhooks[].disableTLS",
        support: FieldSupport::Ignored(
            "webhook certificates are always verified; use http:// inside the cluster",
        ),
        set: |c| c.spec.analysis.webhooks.iter().any(|w| w.disable_tls),
    },
];

/// Why a route field is not written by a provider that does not write an HTTPRoute.
const HTTP_ROUTE_ONLY: &str = "only an HTTPRoute carries it (providers serin, linkerd, gatewayapi), not this provider's routing";

/// The Canary fields this document sets that Serin accepts but does not act on under
/// `provider` (the Canary's, or the controller's default), with why: what `serin validate`
/// prints and the controller's `IgnoredFields` condition names, so neither drops one silently.
pub fn ignored_fields(canary: &Canary, provider: &str) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<_> = FIELD_RULES
        .iter()
        .filter_map(|r| match r.support {
            FieldSupport::Ignored(why) if (r.set)(canary) => Some((r.path, why)),
            _ => None,
        })
        .collect();
    let s = &canary.spec.service;
    if routing(provider).is_some_and(|r| r != Routing::HttpRoute) {
        for (set, path) in [
            (s.headers.is_some(), "spec.service.headers"),
            (s.timeout.is_some(), "spec.service.timeout"),
            (!s.gateway_refs.is_empty(), "spec.service.gatewayRefs"),
        ] {
            if set {
                out.push((path, HTTP_ROUTE_ONLY));
            }
        }
    }
    if s.gateway_refs.is_empty() && !s.hosts.is_empty() {
        out.push((
            "spec.service.hosts",
            "host names are written only on a route attached to gateways (spec.service.gatewayRefs)",
        ));
    }
    out
}

/// The compatibility section of README.md, generated from the tables above (a test fails when
/// the README's copy drifts).
pub fn compatibility_markdown() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- generated by serin_api::support::compatibility_markdown; do not edit by hand -->"
    );
    let _ = writeln!(out, "### Traffic providers (`spec.provider`)\n");
    let _ = writeln!(out, "| provider | accepted versions | Serin | how |");
    let _ = writeln!(out, "|---|---|---|---|");
    for p in TRAFFIC_PROVIDERS {
        let versions = if p.versions.is_empty() {
            "—".to_string()
        } else {
            p.versions.join(", ")
        };
        let status = if p.driven.is_empty() {
            "not supported (valid, exit 3)".to_string()
        } else if p.driven.len() == p.versions.len() + 1 {
            "supported".to_string()
        } else {
            let forms: Vec<String> = p
                .driven
                .iter()
                .map(|v| {
                    if v.is_empty() {
                        p.name.to_string()
                    } else {
                        format!("{}:{v}", p.name)
                    }
                })
                .collect();
            format!("supported as {}", forms.join(", "))
        };
        let _ = writeln!(out, "| `{}` | {versions} | {status} | {} |", p.name, p.note);
    }
    let _ = writeln!(out, "\n### Targets (`spec.targetRef.kind`)\n");
    let _ = writeln!(out, "| kind | Serin |");
    let _ = writeln!(out, "|---|---|");
    for kind in TargetKind::NAMES {
        let driven = DRIVEN_TARGET_KINDS.iter().any(|k| k.as_str() == kind);
        let status = if driven {
            "supported"
        } else {
            "not supported (valid, exit 3)"
        };
        let _ = writeln!(out, "| `{kind}` | {status} |");
    }
    let _ = writeln!(out, "\n### Autoscalers (`spec.autoscalerRef.kind`)\n");
    let _ = writeln!(out, "| kind | Serin |");
    let _ = writeln!(out, "|---|---|");
    for (kind, name) in [
        (
            AutoscalerKind::HorizontalPodAutoscaler,
            "HorizontalPodAutoscaler",
        ),
        (AutoscalerKind::ScaledObject, "ScaledObject"),
    ] {
        let status = match autoscaler_not_driven(kind) {
            None => "supported: cloned for the primary",
            Some(_) => "not supported (valid, exit 3)",
        };
        let _ = writeln!(out, "| `{name}` | {status} |");
    }
    let _ = writeln!(
        out,
        "\n### Metric providers (MetricTemplate `spec.provider.type`)\n"
    );
    let _ = writeln!(out, "| type | Serin |");
    let _ = writeln!(out, "|---|---|");
    for p in METRIC_PROVIDERS {
        let status = match (p.queried, metric_provider_tested(p.name)) {
            (true, Some(how)) => format!("supported: {how}"),
            (true, None) => "supported".to_string(),
            (false, _) => "not supported (valid, exit 3)".to_string(),
        };
        let _ = writeln!(out, "| `{}` | {status} |", p.name);
    }
    let _ = writeln!(out, "\n### Alert providers (AlertProvider `spec.type`)\n");
    let _ = writeln!(
        out,
        "{}: all supported, and Serin's `generic` (a plain JSON document); `spec.proxy` is not (valid, exit 3).",
        ALERT_PROVIDER_TYPES.map(|t| format!("`{t}`")).join(", ")
    );
    let _ = writeln!(out, "\n### Canary fields\n");
    let _ = writeln!(out, "Every other field of Flagger's Canary is supported.\n");
    let _ = writeln!(out, "| field | Serin |");
    let _ = writeln!(out, "|---|---|");
    for r in FIELD_RULES {
        let status = match r.support {
            FieldSupport::Supported => "supported".to_string(),
            FieldSupport::Ignored(why) => format!("accepted and ignored: {why}"),
        };
        let _ = writeln!(out, "| `{}` | {status} |", r.path);
    }
    out
}

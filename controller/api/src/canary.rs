//! The `Canary` custom resource: field-compatible with Flagger's `flagger.app/v1beta1` Canary,
//! plus Serin's optional additions (`spec.analysis.judge`, `spec.analysis.noData`,
//! `targetRef.kind: Process`).
//!
//! Field names and shapes follow Flagger so that a Flagger manifest is accepted after changing
//! only `apiVersion`. Fields Serin does not act on itself (Istio gateways, traffic policy, App
//! Mesh backends, ...) are still modelled so they are accepted and round-trip unchanged.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::free_form_object;
use crate::status::SerinStatus;

/// Reference to a mirror backend (`spec.service.mirror.backendRef`): serin-mesh-api's
/// `BackendObjectReference`, the type of an HTTPRoute mirror filter's `backendRef`.
pub use serin_mesh_api::objects::BackendObjectReference as MirrorBackendRef;
/// A Gateway API parent reference (`spec.service.gatewayRefs`): serin-mesh-api's, the type of an
/// HTTPRoute's `parentRefs`, so what the Canary names is what the route carries.
pub use serin_mesh_api::objects::ParentReference;

/// Desired behaviour of a canary release: what to deploy, how traffic reaches it and how each
/// new revision is analysed before promotion.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "Canary",
    plural = "canaries",
    singular = "canary",
    shortname = "cd",
    category = "all",
    category = "serin",
    namespaced,
    status = "CanaryStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Canary automates the release of a new revision of a workload: bootstrap, traffic shifting, analysis, promotion or rollback. Field-compatible with Flagger's flagger.app/v1beta1 Canary.",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"string","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"FailedChecks","type":"string","jsonPath":".status.failedChecks"}"#,
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.analysis.interval","priority":1}"#,
    printcolumn = r#"{"name":"Mirror","type":"boolean","jsonPath":".spec.analysis.mirror","priority":1}"#,
    printcolumn = r#"{"name":"StepWeight","type":"string","jsonPath":".spec.analysis.stepWeight","priority":1}"#,
    printcolumn = r#"{"name":"StepWeights","type":"string","jsonPath":".spec.analysis.stepWeights","priority":1}"#,
    printcolumn = r#"{"name":"MaxWeight","type":"string","jsonPath":".spec.analysis.maxWeight","priority":1}"#,
    printcolumn = r#"{"name":"LastTransitionTime","type":"string","jsonPath":".status.lastTransitionTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Traffic management provider for this canary (overrides the controller's default), e.g.
    /// `serin`, `linkerd`, `istio`, `nginx`, `gatewayapi:v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,

    /// Address of the metrics server (Prometheus) for this canary's built-in metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,

    /// The workload whose new revisions are analysed: a Deployment, a DaemonSet, or (on the
    /// local platform) a Serin `Process`.
    pub target_ref: TargetRef,

    /// Horizontal scaler of the target, copied for the primary (HorizontalPodAutoscaler or a
    /// KEDA ScaledObject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerRef>,

    /// Ingress whose canary copy routes traffic (NGINX provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<LocalObjectReference>,

    /// APISIX route whose canary copy routes traffic (APISIX provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<LocalObjectReference>,

    /// Gloo upstream whose configuration is copied to the generated upstreams (Gloo provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<CrossNamespaceObjectReference>,

    /// How the apex, primary and canary services and the routing objects are generated.
    /// Required for every target but `kind: Service` (Knative), which brings its own.
    #[serde(default, skip_serializing_if = "CanaryService::is_unset")]
    pub service: CanaryService,

    /// How each new revision is analysed.
    pub analysis: CanaryAnalysis,

    /// Seconds a canary or primary may take to become ready before the run fails (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,

    /// Promote new revisions without analysing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_analysis: bool,

    /// Restore the target and the routing to their original state when the Canary is deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revert_on_deletion: bool,

    /// Suspend the canary: no new runs start, and a run in progress pauses until resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// Kinds of workload a canary can target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum TargetKind {
    /// `apps/v1` Deployment.
    #[default]
    Deployment,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// Serin's local-platform process (`serin.dev/v1beta1`).
    Process,
    /// A Knative `serving.knative.dev/v1` Service or a plain `v1` Service (Flagger's Knative
    /// and Service targets). Accepted for Flagger parity; this Serin does not drive it.
    Service,
}

impl TargetKind {
    /// The names accepted in `targetRef.kind`.
    pub const NAMES: [&'static str; 4] = ["Deployment", "DaemonSet", "Process", "Service"];

    /// The `apiVersion`s a reference of this kind is expected to carry. Flagger picks the
    /// controller by kind only, so another value is accepted with a warning.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            TargetKind::Deployment | TargetKind::DaemonSet => &["apps/v1"],
            TargetKind::Process => &["serin.dev/v1beta1"],
            TargetKind::Service => &["serving.knative.dev/v1", "v1"],
        }
    }

    /// The first of [`TargetKind::api_versions`], the one Serin writes.
    pub fn api_version(self) -> &'static str {
        self.api_versions()[0]
    }

    /// The kind's name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Deployment => "Deployment",
            TargetKind::DaemonSet => "DaemonSet",
            TargetKind::Process => "Process",
            TargetKind::Service => "Service",
        }
    }
}

/// Reference to the canary's target workload (same namespace as the Canary).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// `apps/v1` for Deployment and DaemonSet, `serin.dev/v1beta1` for Process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the target.
    pub kind: TargetKind,
    /// Name of the target.
    pub name: String,
}

/// Kinds of autoscaler a canary can reference.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AutoscalerKind {
    /// `autoscaling/v2` HorizontalPodAutoscaler.
    #[default]
    HorizontalPodAutoscaler,
    /// KEDA `keda.sh/v1alpha1` ScaledObject.
    ScaledObject,
}

/// Reference to the target's autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRef {
    /// API version of the autoscaler, e.g. `autoscaling/v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the autoscaler.
    pub kind: AutoscalerKind,
    /// Name of the autoscaler.
    pub name: String,
    /// Queries for the primary's scaler, keyed by trigger name (KEDA).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub primary_scaler_queries: BTreeMap<String, String>,
    /// Replica bounds that override the primary scaler's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

/// Replica bounds for the primary's autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    /// Lower replica bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// Upper replica bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
}

/// Reference to an object in the Canary's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// API version of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referent.
    pub name: String,
}

/// Reference to an object, optionally in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceObjectReference {
    /// API version of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent (default: the Canary's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// How the services and routing objects for a canary are generated.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryService {
    /// Name of the apex service (default: the target's name); primary and canary services are
    /// `<name>-primary` and `<name>-canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port of the generated services.
    pub port: i32,
    /// Name of the service port (default `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Container port number or name the services target (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// Application protocol of the service port (e.g. `http`, `kubernetes.io/h2c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Also expose every other container port of the target on the generated services.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub port_discovery: bool,
    /// Timeout of each HTTP or gRPC request, as a duration (e.g. `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
    /// Istio gateways the generated virtual service is attached to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Gateway API gateways the generated HTTPRoute attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_refs: Vec<ParentReference>,
    /// Host names routed to this service (default: the service name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Generate an Istio delegate virtual service (no hosts, no gateways).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delegation: bool,
    /// Istio destination-rule traffic policy, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub traffic_policy: Option<serde_json::Value>,
    /// Request match conditions of the generated route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<HttpMatchRequest>,
    /// URI rewrite of the generated route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Retry policy of the generated route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Header operations of the generated route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Cross-origin resource sharing policy of the generated route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// App Mesh mesh name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    /// App Mesh backends of the generated virtual nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// App Mesh service discovery settings, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub service_discovery: Option<serde_json::Value>,
    /// Labels and annotations added to the apex service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apex: Option<CustomMetadata>,
    /// Labels and annotations added to the primary service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<CustomMetadata>,
    /// Labels and annotations added to the canary service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CustomMetadata>,
    /// Timeout of each request from the gateway to a backend, as a duration (Gateway API
    /// `timeouts.backendRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub backend_timeout: Option<String>,
    /// Generate headless (`clusterIP: None`) primary and canary services.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headless: bool,
    /// Extra backends that receive a copy of the traffic (Gateway API request mirrors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror: Vec<ServiceMirror>,
    /// `spec.trafficDistribution` of the generated services (e.g. `PreferClose`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    /// Label and annotation keys on the generated services that other controllers own: kept as
    /// they are when the services are updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged_metadata: Option<UnmanagedMetadata>,
}

impl CanaryService {
    /// Whether the block was left out (a `kind: Service` target needs none).
    pub fn is_unset(&self) -> bool {
        *self == CanaryService::default()
    }
}

/// A backend that receives a copy of the traffic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMirror {
    /// The backend the copies go to.
    pub backend_ref: MirrorBackendRef,
    /// Percentage of requests mirrored, 0..=100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// Label and annotation keys of the generated services that Serin leaves alone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedMetadata {
    /// Label keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Annotation keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
}

/// Labels and annotations to set on a generated object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetadata {
    /// Labels to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How a string is matched: exactly one of the fields is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// The whole value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value ends with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// The value matches this RE2 regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Conditions a request must meet (all set fields must match). Used for A/B testing
/// (`analysis.match`) and for the generated route (`service.match`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    /// Name of this match, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Request URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// URI scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// HTTP authority (host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Request headers, keyed by lower-case header name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Query parameters, keyed by parameter name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Headers that must NOT match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Match the URI case-insensitively.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Labels of the calling workload (Istio mesh gateway only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Namespace of the calling workload (Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Gateways this match applies to (Istio).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

/// URI rewrite of the generated route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    /// Replacement for the matched URI (prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replacement for the authority (host) header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// How `uri` replaces the path (Gateway API): `ReplacePrefixMatch` (default) or
    /// `ReplaceFullPath`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<RewriteType>,
}

/// How a rewrite replaces the request path.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RewriteType {
    /// Replace the matched prefix.
    ReplacePrefixMatch,
    /// Replace the whole path.
    ReplaceFullPath,
}

/// Retry policy of the generated route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Number of retries per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Timeout of each attempt, as a duration (e.g. `2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub per_try_timeout: Option<String>,
    /// Conditions that trigger a retry, comma-separated (e.g. `gateway-error,connect-failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
}

/// Header operations on requests and responses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    /// Operations on the request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Operations on the response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Set, add and remove headers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOperations {
    /// Overwrite these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Append these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Cross-origin resource sharing policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Allowed origins (deprecated in Istio; use `allowOrigins`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    /// Allowed origins as string matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    /// Allowed methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers browsers may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long preflight results may be cached, as a duration (e.g. `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub max_age: Option<String>,
    /// Allow credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
}

/// How each new revision is analysed.
///
/// Exactly one of `stepWeight`, `stepWeights` (progressive canary) or `iterations` (A/B testing
/// when `match` is set, Blue/Green otherwise) chooses the strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Time between two analysis ticks, as a duration of at least 10s (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub interval: Option<String>,
    /// Failed checks tolerated before rolling back (default 1 when unset or 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i32>,
    /// Largest canary weight of a progressive canary, 1..=100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<i32>,
    /// Weight added to the canary at each successful tick (progressive canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<i32>,
    /// Explicit canary weights, strictly increasing, each 1..=100 (progressive canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weights: Option<Vec<i32>>,
    /// Weight added to the primary at each promotion tick (default: promote in one step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight_promotion: Option<i32>,
    /// Number of successful ticks for A/B testing and Blue/Green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<i32>,
    /// Mirror traffic to the canary (Blue/Green and canary).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirror: bool,
    /// Percentage of traffic mirrored, 0..=100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_weight: Option<i32>,
    /// A/B testing: requests matching any of these go to the canary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<HttpMatchRequest>,
    /// Percentage of primary pods that must be ready, 0..=100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ready_threshold: Option<i32>,
    /// Percentage of canary pods that must be ready, 0..=100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready_threshold: Option<i32>,
    /// Keep users on the version they first hit, with a cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Metric checks run at every tick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<CanaryMetric>,
    /// Webhooks: gates, load generators, notifications.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<CanaryWebhook>,
    /// Alerts sent through alert providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<CanaryAlert>,
    /// Serin: the statistical canary-vs-primary judge (absent = off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Judge>,
    /// Serin: what too little data means for threshold checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoData>,
}

/// Session affinity for a progressive canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// Name of the cookie that pins a user to the canary.
    pub cookie_name: String,
    /// Name of the cookie that pins a user to the primary once it answered them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    /// Cookie lifetime in seconds (default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i32>,
    /// The cookie's other attributes (`domain`, `path`, `sameSite`, `secure`, `httpOnly`,
    /// `partitioned`), at this level in the Canary: the engine's own type, so the fields the
    /// Canary accepts are the attributes the routes set.
    #[serde(flatten)]
    pub attributes: CookieAttributes,
}

/// The affinity cookie's attributes besides its name and lifetime: the engine's
/// [`serin_core::CookieAttributes`].
pub use serin_core::CookieAttributes;

/// The `SameSite` attribute of a cookie: the engine's [`serin_core::SameSite`], one enum for
/// the Canary's field and the plan (same spelling, same CRD schema).
pub use serin_core::SameSite;

/// A metric check.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    /// Name of the check; `request-success-rate` and `request-duration` are built in.
    pub name: String,
    /// Window the metric is computed over, as a duration (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub interval: Option<String>,
    /// Deprecated: the smallest accepted value for `request-success-rate`, the largest for every
    /// other metric (use `thresholdRange`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Accepted range of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    /// Deprecated: a Prometheus query (use `templateRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The MetricTemplate that computes the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<CrossNamespaceObjectReference>,
    /// Variables available to the template's query as `{{ variables.<key> }}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_variables: BTreeMap<String, String>,
}

/// Accepted range of a metric value (either bound may be absent).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdRange {
    /// Smallest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// When a webhook is called and what its answer means.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HookType {
    /// Gate before a run starts; the run waits (phase Waiting) until it answers 2xx.
    ConfirmRollout,
    /// Called once before traffic shifts to the canary; failure counts as a failed check.
    PreRollout,
    /// Called at every analysis tick (load tests, acceptance tests); failure counts as a failed
    /// check. The default when `type` is omitted.
    #[default]
    Rollout,
    /// Gate before each traffic increase.
    ConfirmTrafficIncrease,
    /// Gate before promotion (phase WaitingPromotion).
    ConfirmPromotion,
    /// Notification after promotion or rollback.
    PostRollout,
    /// A 2xx answer rolls the canary back.
    Rollback,
    /// Receives every event of the canary.
    Event,
}

impl HookType {
    /// The names accepted in `webhooks[].type`.
    pub const NAMES: [&'static str; 8] = [
        "confirm-rollout",
        "pre-rollout",
        "rollout",
        "confirm-traffic-increase",
        "confirm-promotion",
        "post-rollout",
        "rollback",
        "event",
    ];

    /// The type's name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            HookType::ConfirmRollout => "confirm-rollout",
            HookType::PreRollout => "pre-rollout",
            HookType::Rollout => "rollout",
            HookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
            HookType::ConfirmPromotion => "confirm-promotion",
            HookType::PostRollout => "post-rollout",
            HookType::Rollback => "rollback",
            HookType::Event => "event",
        }
    }
}

/// A webhook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    /// Name of the webhook (unique within the canary).
    pub name: String,
    /// When it is called (default `rollout`; an empty string means the default, as in Flagger).
    #[serde(
        default,
        rename = "type",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::schema::empty_as_none"
    )]
    #[schemars(schema_with = "crate::schema::hook_type")]
    pub type_: Option<HookType>,
    /// `http://` or `https://` address called with a JSON POST.
    pub url: String,
    /// Request timeout, as a duration (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
    /// Do not send alerts for failures of this webhook.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mute_alert: bool,
    /// Skip verifying the certificate of an `https://` URL.
    #[serde(
        default,
        rename = "disableTLS",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_tls: bool,
    /// Key-value pairs sent in the payload (e.g. the load tester's `cmd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Serin: extra attempts after a failed call that may pass on a second try (no answer in
    /// time, a transport error, 408, 429 or a 5xx but 501; other statuses above 202 are final),
    /// 0..=10 (default 0: one attempt, as Flagger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    /// Serin: a key of a Secret in the Canary's namespace holding an HMAC-SHA256 key; every call
    /// then carries `X-Serin-Signature: sha256=<hex HMAC of the body>` so the receiver can trust
    /// the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyReference>,
}

/// One key of a Secret in the Canary's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret's `data`.
    pub key: String,
}

/// Severity filter of an alert.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Every event.
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}

/// An alert sent through an AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    /// Name of the alert (unique within the canary).
    pub name: String,
    /// Lowest severity sent (default `info`; an empty string means the default, as in Flagger).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::schema::empty_as_none"
    )]
    #[schemars(schema_with = "crate::schema::alert_severity")]
    pub severity: Option<AlertSeverity>,
    /// The AlertProvider to send through.
    pub provider_ref: CrossNamespaceObjectReference,
}

/// How a run ends when the judge stays inconclusive past its budget: the engine's
/// [`serin_core::InconclusivePolicy`], one enum for the Canary's field and the plan (same
/// spelling, same CRD schema). Unset in a Canary, it means `rollback`.
pub use serin_core::InconclusivePolicy as OnInconclusive;

/// Serin's statistical canary-vs-primary judge.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Judge {
    /// Turn the judge on (default true when the block is present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// False-rollback budget for the whole run, in (0, 0.5] (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Requests needed per arm before the judge may pass (default 100); a failure needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<i64>,
    /// Extra error rate considered harmless, in absolute percentage points, 0..=100 (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_tolerance: Option<f64>,
    /// Extra latency considered harmless, in percent, >= 0 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_tolerance: Option<f64>,
    /// A pass must show the canary's error rate at most this percent above the primary's
    /// (relative margin, > 0, default 90: a doubled error rate is beyond it), or within
    /// `errorRateMarginAbsolute`, whichever is larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_margin: Option<f64>,
    /// Absolute error-rate margin in percentage points, in (0, 100] (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_margin_absolute: Option<f64>,
    /// A pass must show the canary's p50 and p99 latency at most this percent above the
    /// primary's (> latencyTolerance, default 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_margin: Option<f64>,
    /// Chance of raising the weight of a canary worse than the margins at a step that is not
    /// the last, in [alpha, 0.5] (default 0.2): the margins shown with `1 - stepAlpha`
    /// confidence raise the weight; promotion always needs `1 - alpha`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_alpha: Option<f64>,
    /// How the run ends when the judge stays inconclusive past a budget (default `rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_inconclusive: Option<OnInconclusive>,
    /// Longest the judge may stay inconclusive at one weight, e.g. `15m` (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_budget: Option<String>,
    /// Longest a run may go on without the judge's last word, e.g. `1h` (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_budget: Option<String>,
}

/// What a threshold check concludes from too little data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NoDataPolicy {
    /// Neither pass nor fail: the tick is inconclusive and the run waits.
    Wait,
    /// Count a failed check (Flagger's behaviour).
    Fail,
    /// Count a passed check.
    Pass,
}

/// Serin's no-data policy for threshold checks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoData {
    /// Requests needed per tick for a check to count as having data (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<i64>,
    /// What too little data means (the analysis library documents the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<NoDataPolicy>,
}

/// Phase of a canary, as Flagger names them: the engine's [`serin_core::Phase`], one enum for
/// the engine and `status.phase` (same spelling, same CRD schema).
pub use serin_core::Phase as CanaryPhase;

/// Observed state of a canary, as Flagger keeps it, plus Serin's bookkeeping.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CanaryPhase>,
    /// Failed checks in the current run.
    #[serde(default)]
    pub failed_checks: i32,
    /// Current canary weight (percent).
    #[serde(default)]
    pub canary_weight: i32,
    /// Successful iterations in the current run (A/B testing, Blue/Green).
    #[serde(default)]
    pub iterations: i32,
    /// Session-affinity cookie of the previous run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    /// Session-affinity cookie of the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    /// Checksums of the ConfigMaps and Secrets the target uses, keyed by `kind/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,
    /// Revision (pod-template hash) of the target last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Revision last promoted to the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Conditions; `Promoted` tells whether the last run was promoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CanaryCondition>,
    /// Serin: id of the last manual command applied from the `serin.dev/command` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command_id: Option<String>,
    /// Serin: the engine's full state, so the controller resumes exactly where it stopped.
    /// Its shape belongs to the engine (serin-core) and may grow between releases, which is why
    /// it is stored free-form.
    // Typed for Serin's readers and writer ([`SerinStatus`]), free-form in the CRD schema so
    // that what any version wrote stays accepted; a part that does not read is kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub serin: Option<SerinStatus>,
    /// Fields of `status` this version does not know (a newer version's, under a newer CRD),
    /// kept as stored so that writing the status passes them back instead of dropping them.
    // Not in the schema: the CRD of this version lists what it knows, and the API server
    // prunes the rest, so a field is here only when a newer CRD allows it.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// Condition type Flagger and Serin set on a Canary.
pub const PROMOTED_CONDITION: &str = "Promoted";

/// A status condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryCondition {
    /// Condition type (`Promoted`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition was last updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason (e.g. `Succeeded`, `Failed`, `Progressing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Fields of the condition this version does not know (a newer version's, under a newer
    /// CRD), kept as stored and written back.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

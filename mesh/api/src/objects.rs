//! The Kubernetes-shaped objects Serin reads and writes for traffic splitting: the one typed
//! home of these wire contracts. The canary controller writes them (serin-kube applies
//! `HTTPRoute`s and `TrafficSplit`s; serin-local writes `StaticEndpoints` and `HTTPRoute`s into
//! the local control plane's routes directory) and the control plane reads them; both use these
//! types, so what one writes the other parses.
//!
//! The root objects are derived with kube's `CustomResource` (feature `k8s`; the workspace is on
//! kube 5 / k8s-openapi 0.29, so the `gateway-api` crate, built on kube 4, would bring a second
//! copy of every Kubernetes type). The proxy never enables the feature.
//!
//! Only the subset Serin uses is modelled: Gateway API `HTTPRoute` (gateway.networking.k8s.io/v1,
//! GAMMA mesh mode where a `parentRef` names a Service), `ReferenceGrant`, SMI `TrafficSplit`
//! (split.smi-spec.io v1alpha4, and v1alpha2 whose shape only differs in that it has no
//! `matches`) and Serin's own `StaticEndpoints` (serin.dev/v1beta1, the local site's endpoints).
//! Fields Serin does not model are dropped on read; write these objects with server-side apply so
//! fields owned by others are left alone.
//!
//! Every enum-like field (`type`, `kind`, ...) is a plain `String`: a value Serin does not know
//! must reach the translator, which reports it on the object, instead of failing the
//! deserialisation of a whole watch list.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The metadata of every object here (Kubernetes `ObjectMeta`), re-exported so that a writer of
/// local routes files needs no Kubernetes crate of its own.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The SMI traffic-split group.
pub const SMI_SPLIT_GROUP: &str = "split.smi-spec.io";
/// The `controllerName` Serin writes into `HTTPRoute.status.parents[]`.
pub const CONTROLLER_NAME: &str = "serin.dev/mesh-control";

/// `HTTPRoute.spec`: routes HTTP requests addressed to its parents (in mesh mode: Services).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    root = "HttpRoute",
    plural = "httproutes",
    namespaced,
    status = "HttpRouteStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// What the route attaches to. Serin acts on parents with `kind: Service` (GAMMA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host names the route applies to, in addition to the parent Service's own names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Rules, evaluated by the proxy in order (first match wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

// The `///` texts of the two references below are also the descriptions of the Canary CRD's
// `spec.service.gatewayRefs` and `spec.service.mirror.backendRef` (serin-api embeds these types,
// feature `schema`): notes for the mesh only are `//` comments.

/// A Gateway API parent reference (the gateway an HTTPRoute attaches to).
// In GAMMA mesh mode the parent is a Service: group `""`, kind `Service`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// API group of the parent (default `gateway.networking.k8s.io`).
    // `""` (core) for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the parent (default `Gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace of the parent (default: the route's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// Listener section of the parent.
    // Unused by the mesh, kept for status round-trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Listener port of the parent.
    // For a Service parent: the Service port the route applies to; absent means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

impl ParentReference {
    /// True when this parent is a core `Service` (GAMMA mesh mode).
    pub fn is_service(&self) -> bool {
        self.kind.as_deref() == Some("Service") && self.group.as_deref().unwrap_or("").is_empty()
    }
}

/// One rule of an HTTPRoute.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Optional rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any of which selects this rule; none means "every request".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    /// Filters applied to requests matching this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Request timeouts (Gateway API duration strings such as `10s`, `500ms`, `1m30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
}

/// A match: every condition given must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Path condition; absent means prefix `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeaderMatch>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HttpQueryParamMatch>,
    /// HTTP method (`GET`, `POST`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// Path condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The path or pattern; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Header condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Header name (case-insensitive).
    pub name: String,
    /// Value or pattern.
    pub value: String,
}

impl HttpRouteFilter {
    /// A `ResponseHeaderModifier` that adds one `Set-Cookie` per value (session affinity).
    /// Added, as Flagger does, not set: the application's own cookies must reach the user too.
    pub fn add_set_cookies(values: Vec<String>) -> Self {
        HttpRouteFilter {
            type_: "ResponseHeaderModifier".into(),
            response_header_modifier: Some(HttpHeaderFilter {
                add: values
                    .into_iter()
                    .map(|value| HttpHeader {
                        name: "Set-Cookie".into(),
                        value,
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl HttpHeaderMatch {
    /// A condition met when the `Cookie` header carries `cookie` (`name=value`): how session
    /// affinity keeps a user on the version that set it.
    pub fn cookie(cookie: &str) -> Self {
        HttpHeaderMatch {
            type_: Some("RegularExpression".into()),
            name: "Cookie".into(),
            value: format!(".*{}.*", regex::escape(cookie)),
        }
    }
}

/// Query parameter condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpQueryParamMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Parameter name (case-sensitive).
    pub name: String,
    /// Value or pattern.
    pub value: String,
}

/// A filter on a rule or backend. Serin applies `RequestMirror`, `RequestHeaderModifier`,
/// `ResponseHeaderModifier` and `RequestRedirect`;
/// any other `type` makes the rule invalid (reported, never silently ignored).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// `RequestMirror`, `ResponseHeaderModifier`, or another Gateway API filter type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Settings for `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<HttpRequestMirrorFilter>,
    /// Settings for `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HttpHeaderFilter>,
    /// Settings for `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HttpHeaderFilter>,
    /// Settings for `RequestRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<HttpRequestRedirectFilter>,
}

/// Answer with a redirect instead of forwarding: the request's URL with these parts replaced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestRedirectFilter {
    /// `http` or `https`; absent keeps the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host name; absent keeps the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Path change; absent keeps the request's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
    /// Port; absent: the scheme's well-known port when `scheme` is set, else the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// `301` (default) or `302`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
}

/// A path change of a redirect or rewrite.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The new path, for `ReplaceFullPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// What replaces the matched prefix, for `ReplacePrefixMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// Mirror a share of requests to another backend; its responses are discarded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestMirrorFilter {
    /// The backend receiving copies.
    pub backend_ref: BackendObjectReference,
    /// Share of requests mirrored, 0-100; absent (and no `fraction`) means 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    /// Share of requests mirrored as a fraction (`denominator` defaults to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// `numerator / denominator`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fraction {
    /// Numerator, ≥ 0 and ≤ denominator.
    pub numerator: i32,
    /// Denominator, > 0; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<i32>,
}

/// Header modifications.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderFilter {
    /// Headers set (overwriting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    /// Headers added (appending).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    /// Header names removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Reference to a mirror backend (a Service unless `kind` says otherwise).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    /// API group of the referent (empty for the core group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the referent (default `Service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent (default: the Canary's namespace).
    // In an HTTPRoute: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port of the referent.
    // Required by Gateway API for Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// A weighted backend of a rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    /// API group; `""` (core, the default) for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; `Service` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Service name.
    pub name: String,
    /// Namespace; absent means the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Relative weight, 0-1000000; default 1. 0 means "never".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Per-backend filters (Serin reports them as unsupported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

/// Rule timeouts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// Whole-request timeout (the proxy answers 504 past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Per-backend-attempt timeout; Serin has no retries, so the shorter of the two applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// `HTTPRoute.status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteStatus {
    /// One entry per (parent, controller).
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// The status one controller reports for one parent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    /// The parent this entry is about.
    pub parent_ref: ParentReference,
    /// Who wrote it; Serin writes [`CONTROLLER_NAME`].
    pub controller_name: String,
    /// `Accepted` and `ResolvedRefs` conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Gateway API `ReferenceGrant.spec` (gateway.networking.k8s.io/v1beta1): objects of the `from`
/// kinds and namespaces may refer to objects of the `to` kinds in the grant's own namespace.
/// Serin reads grants for HTTPRoute `backendRefs` (and mirror targets) naming a Service in
/// another namespace than the route: without a grant such a reference is not permitted.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1beta1",
    kind = "ReferenceGrant",
    plural = "referencegrants",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    /// Who may refer.
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    /// What they may refer to (in the grant's namespace).
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

/// One trusted source of references.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantFrom {
    /// API group of the referring kind (`gateway.networking.k8s.io` for HTTPRoute).
    #[serde(default)]
    pub group: String,
    /// The referring kind (`HTTPRoute`).
    #[serde(default)]
    pub kind: String,
    /// The referring objects' namespace.
    #[serde(default)]
    pub namespace: String,
}

/// One kind of object that may be referred to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantTo {
    /// API group (`""` for core, as Service).
    #[serde(default)]
    pub group: String,
    /// The kind (`Service`).
    #[serde(default)]
    pub kind: String,
    /// One object by name; absent means every object of the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ReferenceGrantSpec {
    /// Whether this grant lets HTTPRoutes in `from_ns` send traffic to Service `service` (of the
    /// grant's namespace).
    pub fn lets_routes_reach(&self, from_ns: &str, service: &str) -> bool {
        self.from
            .iter()
            .any(|f| f.group == GATEWAY_GROUP && f.kind == "HTTPRoute" && f.namespace == from_ns)
            && self.to.iter().any(|t| {
                (t.group.is_empty() || t.group == "core")
                    && t.kind == "Service"
                    && t.name.as_deref().is_none_or(|n| n == service)
            })
    }
}

/// SMI `TrafficSplit.spec` (split.smi-spec.io/v1alpha4).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha4",
    kind = "TrafficSplit",
    plural = "trafficsplits",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitSpec {
    /// The root (apex) Service clients address.
    pub service: String,
    /// The Services the traffic is split between.
    #[serde(default)]
    pub backends: Vec<TrafficSplitBackend>,
    /// References to `HTTPRouteGroup`s; Serin does not read them and reports a split that sets
    /// them (the split is then applied to every request, as Linkerd's SMI adaptor does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<serde_json::Value>,
}

/// SMI `TrafficSplit.spec` at split.smi-spec.io/v1alpha2 (integer weights, no matches).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha2",
    kind = "TrafficSplit",
    root = "TrafficSplitV1Alpha2",
    plural = "trafficsplits",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitV1Alpha2Spec {
    /// The root (apex) Service clients address.
    pub service: String,
    /// The Services the traffic is split between.
    #[serde(default)]
    pub backends: Vec<TrafficSplitBackend>,
}

impl From<TrafficSplitV1Alpha2> for TrafficSplit {
    fn from(old: TrafficSplitV1Alpha2) -> Self {
        TrafficSplit {
            metadata: old.metadata,
            spec: TrafficSplitSpec {
                service: old.spec.service,
                backends: old.spec.backends,
                matches: Vec::new(),
            },
        }
    }
}

/// One backend of a TrafficSplit.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitBackend {
    /// Backend Service name (same namespace as the split).
    pub service: String,
    /// Relative weight.
    pub weight: SplitWeight,
}

/// A TrafficSplit weight: an integer (v1alpha2+), or a Kubernetes quantity string as v1alpha1
/// wrote them (`"500m"`, `"1"`), kept as given so the translator can report a bad one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum SplitWeight {
    /// Integer weight.
    Int(i64),
    /// Quantity string.
    Quantity(String),
}

impl Default for SplitWeight {
    fn default() -> Self {
        SplitWeight::Int(0)
    }
}

impl From<i64> for SplitWeight {
    fn from(v: i64) -> Self {
        SplitWeight::Int(v)
    }
}

impl SplitWeight {
    /// The weight as an integer in thousandths for quantities (`"500m"` = 500, `"1"` = 1000) and
    /// as given for integers; `None` when it is negative or not a number.
    pub fn value(&self) -> Option<u64> {
        match self {
            SplitWeight::Int(v) => u64::try_from(*v).ok(),
            SplitWeight::Quantity(s) => quantity_milli(s.trim()),
        }
    }

    /// True when written as a quantity (so every backend should be compared in thousandths).
    pub fn is_quantity(&self) -> bool {
        matches!(self, SplitWeight::Quantity(_))
    }
}

/// A Kubernetes quantity (`500m`, `0.5`, `1`, `2k`, `1Ki`) in thousandths, rounded up as
/// Kubernetes rounds a quantity below its smallest unit; `None` when negative or not a
/// decimal quantity (the exponent form `1e3` is not read).
fn quantity_milli(s: &str) -> Option<u64> {
    let s = s.strip_prefix('+').unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    // Thousandths per unit of each suffix.
    let per_unit: u128 = match suffix {
        "m" => 1,
        "" => 1_000,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "T" => 1_000_000_000_000_000,
        "Ki" => 1_024_000,
        "Mi" => 1_024 * 1_024_000,
        "Gi" => 1_024 * 1_024 * 1_024_000,
        _ => return None,
    };
    let parse = |d: &str| {
        if d.is_empty() {
            Some(0)
        } else {
            d.parse::<u128>().ok()
        }
    };
    // Checked throughout: a number too long for a weight is no weight, never a panic.
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let scaled = parse(whole)?
        .checked_mul(scale)?
        .checked_add(parse(frac)?)?
        .checked_mul(per_unit)?;
    u64::try_from(scaled.div_ceil(scale)).ok()
}

/// Serin's `StaticEndpoints.spec` (serin.dev/v1beta1): the endpoints of the Service of the same
/// name on a local site, where no EndpointSlices exist. A `StaticEndpoints` without a `Service`
/// of the same name declares one (no cluster IP).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "StaticEndpoints",
    plural = "staticendpoints",
    namespaced,
    schema = "disabled"
)]
#[serde(deny_unknown_fields)]
pub struct StaticEndpointsSpec {
    /// The endpoints as `IP:PORT` (`127.0.0.1:19001`); the control plane rejects any other form,
    /// naming the entry.
    pub endpoints: Vec<String>,
    /// Metric labels of the workload behind these endpoints (`deployment: podinfo-primary`),
    /// exported by proxies as `dst_<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Metric labels of single endpoints, keyed by an entry of `endpoints` as written there:
    /// what a Kubernetes endpoint gets from its pod (`pod: podinfo-primary-5b8c7d9f6d-0`,
    /// `pod_template_hash: 5b8c7d9f6d`), exported by proxies as `dst_<name>` on the series of
    /// requests sent to that endpoint, over `labels`.
    #[serde(
        default,
        rename = "endpointLabels",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub endpoint_labels: BTreeMap<String, BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_httproute_with_a_service_parent_round_trips_through_yaml() {
        let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: podinfo, namespace: test}
spec:
  parentRefs: [{group: "", kind: Service, name: podinfo, port: 9898}]
  rules:
    - matches: [{headers: [{name: x-canary, value: insider}], path: {type: PathPrefix, value: /api}, method: GET}]
      filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: podinfo-canary, port: 9898}, percent: 10}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {set: [{name: x-version, value: canary}]}
      backendRefs:
        - {name: podinfo-primary, port: 9898, weight: 90}
        - {name: podinfo-canary, port: 9898, weight: 10}
      timeouts: {request: 10s}
"#;
        let route: HttpRoute = serde_norway::from_str(yaml).unwrap();
        assert!(route.spec.parent_refs[0].is_service());
        assert_eq!(route.spec.rules[0].backend_refs[1].weight, Some(10));
        assert_eq!(
            route.spec.rules[0].filters[0]
                .request_mirror
                .as_ref()
                .unwrap()
                .percent,
            Some(10)
        );
        let back: HttpRoute =
            serde_json::from_value(serde_json::to_value(&route).unwrap()).unwrap();
        assert_eq!(back.spec, route.spec);
    }

    #[test]
    fn an_unknown_filter_type_still_deserialises_so_it_can_be_reported() {
        let rule: HttpRouteRule =
            serde_json::from_str(r#"{"filters":[{"type":"URLRewrite","urlRewrite":{}}]}"#).unwrap();
        assert_eq!(rule.filters[0].type_, "URLRewrite");
    }

    #[test]
    fn traffic_split_weights_read_as_integers_or_quantities() {
        let split: TrafficSplit = serde_norway::from_str(
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s}\nspec:\n  service: web\n  backends: [{service: web-v1, weight: 90}, {service: web-v2, weight: \"500m\"}]\n",
        )
        .unwrap();
        assert_eq!(split.spec.backends[0].weight.value(), Some(90));
        assert_eq!(split.spec.backends[1].weight.value(), Some(500));
        assert_eq!(SplitWeight::Quantity("x".into()).value(), None);
        assert_eq!(SplitWeight::Int(-1).value(), None);
    }

    #[test]
    fn quantity_weights_read_as_kubernetes_writes_quantities() {
        // SMI v1alpha1 weights are resource.Quantity: decimals and suffixes are as valid as
        // `500m`, and a value below a thousandth rounds up as Kubernetes rounds it.
        for (q, milli) in [
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("1.25", Some(1250)),
            (".5", Some(500)),
            ("750m", Some(750)),
            ("1k", Some(1_000_000)),
            ("2M", Some(2_000_000_000)),
            ("1Ki", Some(1_024_000)),
            ("0.0001", Some(1)),
            ("+3", Some(3000)),
            ("0", Some(0)),
            ("-1", None),
            ("1.2.3", None),
            ("5x", None),
            ("m", None),
            ("", None),
            ("1e3", None),
            ("99999999999999999999999999999999999999999", None),
            ("0.99999999999999999999999999999999999999999", None),
            ("18446744073709551.616", None),
        ] {
            assert_eq!(SplitWeight::Quantity(q.into()).value(), milli, "{q:?}");
        }
    }
}

//! Routing providers: which object splits traffic, and how.
//!
//! | provider (Canary `spec.provider` or the controller default) | object |
//! |---|---|
//! | `serin`, `gatewayapi`, `gatewayapi:v1`, `linkerd` | Gateway API `HTTPRoute` v1 attached to the apex Service (GAMMA), plus `service.gatewayRefs` |
//! | `gatewayapi:v1beta1` | the same as `gateway.networking.k8s.io/v1beta1` |
//! | `smi`, `smi:v1alpha1`…`smi:v1alpha4`, `osm` | SMI `TrafficSplit` |
//! | `kubernetes` | no routing object: Blue/Green by switching the apex Service selector |
//!
//! Any other provider Flagger knows (istio, appmesh, contour, gloo, nginx, …) is reported on the
//! Canary as unsupported, naming the supported ones.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use serin_api::{Canary, Normalized};
use serin_core::{Routes, StringMatch};
use serin_mesh_api::objects::{
    BackendObjectReference, GATEWAY_GROUP, HttpBackendRef, HttpHeader, HttpHeaderFilter,
    HttpHeaderMatch, HttpQueryParamMatch, HttpRequestMirrorFilter, HttpRoute, HttpRouteFilter,
    HttpRouteMatch, HttpRouteRule, HttpRouteSpec, HttpRouteTimeouts, ParentReference,
    SMI_SPLIT_GROUP, SplitWeight, TrafficSplit, TrafficSplitBackend, TrafficSplitSpec,
};

use super::route_watch::{RouteKind, RouteWatch};
use super::services::ServiceNames;
use super::workloads::{KubeWorkloads, primary_labels};
use super::{FIELD_MANAGER, kube_error};
use serin_controller::adapters::{AdapterError, CanaryContext, ErrorKind, Router};

/// What a provider name means to Serin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Gateway API HTTPRoute at this API version (`v1` or `v1beta1`).
    HttpRoute {
        /// API version.
        version: &'static str,
        /// Whether Serin's own control plane serves it (so "in force" can be asked).
        serin_mesh: bool,
    },
    /// SMI TrafficSplit at this API version.
    TrafficSplit {
        /// API version (`v1alpha1`..`v1alpha4`).
        version: &'static str,
    },
    /// Apex Service selector switch.
    Kubernetes,
}

impl Provider {
    /// The route object this provider writes (`None`: the apex Service selector).
    pub fn route_kind(&self) -> Option<RouteKind> {
        match self {
            Provider::HttpRoute { .. } => Some(RouteKind::HttpRoute),
            Provider::TrafficSplit { .. } => Some(RouteKind::TrafficSplit),
            Provider::Kubernetes => None,
        }
    }
}

/// Why a provider cannot be used; the message is serin-api's, the one `serin validate` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", serin_api::support::provider_not_driven(&self.provider).unwrap_or_else(|| format!("provider {:?} is not driven by this Serin", self.provider)))]
pub struct UnsupportedProvider {
    /// The provider as written.
    pub provider: String,
}

/// Parses a provider name (case-insensitive, optional `:version`). Accepts exactly the forms
/// `serin_api::support::TRAFFIC_PROVIDERS` lists as driven (a test keeps them in step).
pub fn parse_provider(p: &str) -> Result<Provider, UnsupportedProvider> {
    let lower = p.trim().to_ascii_lowercase();
    let unsupported = || UnsupportedProvider {
        provider: p.to_string(),
    };
    Ok(match lower.as_str() {
        "serin" | "" => Provider::HttpRoute {
            version: "v1",
            serin_mesh: true,
        },
        "gatewayapi" | "gatewayapi:v1" | "linkerd" => Provider::HttpRoute {
            version: "v1",
            serin_mesh: false,
        },
        "gatewayapi:v1beta1" => Provider::HttpRoute {
            version: "v1beta1",
            serin_mesh: false,
        },
        "smi" | "smi:v1alpha2" | "osm" => Provider::TrafficSplit {
            version: "v1alpha2",
        },
        "smi:v1alpha1" => Provider::TrafficSplit {
            version: "v1alpha1",
        },
        "smi:v1alpha3" => Provider::TrafficSplit {
            version: "v1alpha3",
        },
        "smi:v1alpha4" => Provider::TrafficSplit {
            version: "v1alpha4",
        },
        "kubernetes" => Provider::Kubernetes,
        _ => return Err(unsupported()),
    })
}

/// The header or query condition for `m`. Gateway API knows `Exact` and `RegularExpression`
/// only, so prefixes and suffixes become anchored, escaped expressions.
fn string_match(m: &StringMatch) -> (&'static str, String) {
    match m {
        StringMatch::Exact(v) => ("Exact", v.clone()),
        StringMatch::Regex(v) => ("RegularExpression", v.clone()),
        StringMatch::Prefix(v) => ("RegularExpression", format!("^{}.*", regex_escape(v))),
        StringMatch::Suffix(v) => ("RegularExpression", format!(".*{}$", regex_escape(v))),
    }
}

fn header_match(name: &str, m: &StringMatch) -> HttpHeaderMatch {
    let (kind, value) = string_match(m);
    HttpHeaderMatch {
        type_: Some(kind.into()),
        name: name.into(),
        value,
    }
}

fn query_match(name: &str, m: &StringMatch) -> HttpQueryParamMatch {
    let (kind, value) = string_match(m);
    HttpQueryParamMatch {
        type_: Some(kind.into()),
        name: name.into(),
        value,
    }
}

fn regex_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

fn header_filter(ops: &serin_api::HeaderOperations) -> HttpHeaderFilter {
    let pairs = |m: &std::collections::BTreeMap<String, String>| -> Vec<HttpHeader> {
        m.iter()
            .map(|(name, value)| HttpHeader {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    HttpHeaderFilter {
        set: pairs(&ops.set),
        add: pairs(&ops.add),
        remove: ops.remove.clone(),
    }
}

/// A request match on a `name=value` cookie in the `Cookie` header.
fn cookie_match(cookie: &str) -> HttpRouteMatch {
    HttpRouteMatch {
        headers: vec![HttpHeaderMatch::cookie(cookie)],
        ..Default::default()
    }
}

/// Metadata of the routing objects Serin owns: labelled as Serin's, owned by the Canary.
fn owned_metadata(name: &str, namespace: &str, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some([("app.kubernetes.io/managed-by".into(), "serin".into())].into()),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// `obj` as sent to the API server, at `api_version`. The typed roots carry one API version
/// (HTTPRoute v1, TrafficSplit v1alpha4); the older versions Serin writes have the same shape
/// for every field Serin sets, so only `apiVersion` differs.
fn at_version(obj: &impl serde::Serialize, api_version: String) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    v["apiVersion"] = Value::String(api_version);
    v
}

/// The HTTPRoute for `routes`, as applied (at `gateway.networking.k8s.io/{version}`).
pub fn http_route(
    version: &str,
    canary: &Canary,
    n: &Normalized,
    names: &ServiceNames,
    routes: &Routes,
    owner: &OwnerReference,
) -> Value {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let port = Some(i32::from(n.port));
    let svc = &canary.spec.service;
    let mut parent_refs = vec![ParentReference {
        group: Some(String::new()),
        kind: Some("Service".into()),
        name: names.apex.clone(),
        port,
        ..Default::default()
    }];
    parent_refs.extend(svc.gateway_refs.iter().cloned());
    let backend = |name: &str, weight: u32| HttpBackendRef {
        name: name.into(),
        port,
        weight: Some(i32::try_from(weight).unwrap_or(i32::MAX)),
        ..Default::default()
    };

    let mut common_filters = Vec::new();
    if let Some(h) = &svc.headers {
        if let Some(req) = &h.request {
            common_filters.push(HttpRouteFilter {
                type_: "RequestHeaderModifier".into(),
                request_header_modifier: Some(header_filter(req)),
                ..Default::default()
            });
        }
        if let Some(resp) = &h.response {
            common_filters.push(HttpRouteFilter {
                type_: "ResponseHeaderModifier".into(),
                response_header_modifier: Some(header_filter(resp)),
                ..Default::default()
            });
        }
    }
    let timeouts = svc.timeout.as_ref().map(|t| HttpRouteTimeouts {
        request: Some(t.clone()),
        backend_request: None,
    });
    let rule = |matches: Vec<HttpRouteMatch>,
                backend_refs: Vec<HttpBackendRef>,
                extra_filters: Vec<HttpRouteFilter>| {
        let mut filters = common_filters.clone();
        filters.extend(extra_filters);
        HttpRouteRule {
            name: None,
            matches,
            filters,
            backend_refs,
            timeouts: timeouts.clone(),
        }
    };

    let mut rules = Vec::new();
    // A/B: each match entry is its own rule (entries are ORed, conditions within one ANDed).
    for m in &routes.matches {
        let condition = HttpRouteMatch {
            headers: m.headers.iter().map(|(k, v)| header_match(k, v)).collect(),
            query_params: m
                .query_params
                .iter()
                .map(|(k, v)| query_match(k, v))
                .collect(),
            ..Default::default()
        };
        rules.push(rule(
            vec![condition],
            vec![
                backend(&names.primary, routes.primary_weight),
                backend(&names.canary, routes.canary_weight),
            ],
            vec![],
        ));
    }
    let mut primary_backend = backend(
        &names.primary,
        if routes.matches.is_empty() {
            routes.primary_weight
        } else {
            100
        },
    );
    let mut canary_backend = backend(
        &names.canary,
        if routes.matches.is_empty() {
            routes.canary_weight
        } else {
            0
        },
    );
    if let Some(a) = &routes.affinity {
        if let Some(cookie) = &a.cookie {
            // Users who already reached the canary stay there for the rest of the run.
            rules.push(rule(
                vec![cookie_match(cookie)],
                vec![backend(&names.canary, 100)],
                vec![],
            ));
            if let Some(value) = a.set_cookie() {
                canary_backend.filters = vec![HttpRouteFilter::add_set_cookies(vec![value])];
            }
        }
        if let Some(cookie) = a.primary_cookie() {
            // primaryCookieName: users the primary answered stay there for the rest of the run.
            rules.push(rule(
                vec![cookie_match(&cookie)],
                vec![backend(&names.primary, 100)],
                vec![],
            ));
        }
        let primary_cookies = a.primary_set_cookies();
        if !primary_cookies.is_empty() {
            primary_backend.filters = vec![HttpRouteFilter::add_set_cookies(primary_cookies)];
        }
    }
    let mut mirror = Vec::new();
    if let Some(w) = routes.mirror_weight {
        mirror.push(HttpRouteFilter {
            type_: "RequestMirror".into(),
            request_mirror: Some(HttpRequestMirrorFilter {
                backend_ref: BackendObjectReference {
                    name: names.canary.clone(),
                    port,
                    ..Default::default()
                },
                percent: Some(i32::try_from(w).unwrap_or(100)),
                fraction: None,
            }),
            ..Default::default()
        });
    }
    rules.push(rule(vec![], vec![primary_backend, canary_backend], mirror));

    // Host names only mean something to the gateways the route also attaches to.
    let hostnames = if svc.gateway_refs.is_empty() {
        Vec::new()
    } else {
        svc.hosts.clone()
    };
    let route = HttpRoute {
        metadata: owned_metadata(&names.apex, &ns, owner),
        spec: HttpRouteSpec {
            parent_refs,
            hostnames,
            rules,
        },
        status: None,
    };
    at_version(&route, format!("{GATEWAY_GROUP}/{version}"))
}

/// The SMI TrafficSplit for `routes`, as applied (at `split.smi-spec.io/{version}`).
pub fn traffic_split(
    version: &str,
    namespace: &str,
    names: &ServiceNames,
    routes: &Routes,
    owner: &OwnerReference,
) -> Value {
    // v1alpha1 weights are Kubernetes quantities (strings); later versions take integers.
    let weight = |x: u32| {
        if version == "v1alpha1" {
            SplitWeight::Quantity(x.to_string())
        } else {
            SplitWeight::Int(i64::from(x))
        }
    };
    let split = TrafficSplit {
        metadata: owned_metadata(&names.apex, namespace, owner),
        spec: TrafficSplitSpec {
            service: names.apex.clone(),
            backends: vec![
                TrafficSplitBackend {
                    service: names.primary.clone(),
                    weight: weight(routes.primary_weight),
                },
                TrafficSplitBackend {
                    service: names.canary.clone(),
                    weight: weight(routes.canary_weight),
                },
            ],
            matches: Vec::new(),
        },
    };
    at_version(&split, format!("{SMI_SPLIT_GROUP}/{version}"))
}

/// Asks Serin's control plane whether a route's latest version runs on every subscribed proxy.
#[async_trait]
pub trait ConvergenceProbe: Send + Sync {
    /// `Ok(true)` when the route `namespace/name` is in force on every proxy.
    async fn in_force(&self, namespace: &str, route: &str) -> Result<bool, AdapterError>;
}

/// The routing of one Canary on Kubernetes.
pub struct KubeRouter {
    client: Client,
    canary: Arc<Canary>,
    spec: Arc<Normalized>,
    provider: Provider,
    owner: OwnerReference,
    probe: Option<Arc<dyn ConvergenceProbe>>,
    workloads: Arc<KubeWorkloads>,
    routes: Option<RouteWatch>,
}

impl KubeRouter {
    /// Routing for `canary` through `provider`; `probe` answers "in force" for Serin's mesh.
    pub fn new(
        client: Client,
        canary: Arc<Canary>,
        spec: Arc<Normalized>,
        provider: Provider,
        probe: Option<Arc<dyn ConvergenceProbe>>,
        workloads: Arc<KubeWorkloads>,
    ) -> Self {
        let owner = super::owner_reference(&canary);
        Self {
            client,
            canary,
            spec,
            provider,
            owner,
            probe,
            workloads,
            routes: None,
        }
    }

    /// Skips applying a route the watches hold as applied, and remembers what it applied
    /// (`None`: apply every time, for callers without watches).
    pub fn with_routes(mut self, routes: Option<RouteWatch>) -> Self {
        self.routes = routes;
        self
    }

    fn names(&self) -> ServiceNames {
        ServiceNames::new(&self.spec)
    }

    fn ns(&self) -> String {
        self.canary.namespace().unwrap_or_default()
    }

    fn dynamic_api(&self, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let ar = ApiResource::from_gvk(&gvk);
        Api::namespaced_with(self.client.clone(), &self.ns(), &ar)
    }

    async fn apply(
        &self,
        api: Api<DynamicObject>,
        kind: RouteKind,
        name: &str,
        obj: Value,
    ) -> Result<(), AdapterError> {
        if let Some(routes) = &self.routes {
            return routes
                .apply(&self.client, kind, &self.ns(), name, obj)
                .await;
        }
        let what = match kind {
            RouteKind::HttpRoute => "httproute",
            RouteKind::TrafficSplit => "trafficsplit",
        };
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .map(|_| ())
        .map_err(|e| kube_error(e, format!("applying {what} {}/{name}", self.ns())))
    }

    async fn switch_apex_selector(&self, to_canary: bool) -> Result<(), AdapterError> {
        let Some(target) = self.workloads.target().await? else {
            return Err(AdapterError::new(
                ErrorKind::NotFound,
                format!(
                    "reading {} {}/{}",
                    self.spec.target_kind.as_str(),
                    self.ns(),
                    self.spec.target_name
                ),
                "the target does not exist",
            ));
        };
        let sel = target.selector_labels();
        let selector = if to_canary {
            sel
        } else {
            primary_labels(&sel, &sel)
        };
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.ns());
        let apex = self.names().apex;
        api.patch(
            &apex,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": selector}})),
        )
        .await
        .map(|_| ())
        .map_err(|e| kube_error(e, format!("patching service {}/{apex}", self.ns())))
    }
}

#[async_trait]
impl Router for KubeRouter {
    async fn set_routes(&self, _ctx: &CanaryContext, routes: &Routes) -> Result<(), AdapterError> {
        let names = self.names();
        match &self.provider {
            Provider::HttpRoute { version, .. } => {
                let obj = http_route(
                    version,
                    &self.canary,
                    &self.spec,
                    &names,
                    routes,
                    &self.owner,
                );
                let api = self.dynamic_api(GATEWAY_GROUP, version, "HTTPRoute");
                self.apply(api, RouteKind::HttpRoute, &names.apex, obj)
                    .await
            }
            Provider::TrafficSplit { version } => {
                if !routes.matches.is_empty() {
                    return Err(AdapterError::new(
                        ErrorKind::Invalid,
                        "spec.analysis.match",
                        "A/B matches need an HTTPRoute provider (serin, gatewayapi, linkerd); SMI TrafficSplit only splits by weight",
                    ));
                }
                let obj = traffic_split(version, &self.ns(), &names, routes, &self.owner);
                let api = self.dynamic_api(SMI_SPLIT_GROUP, version, "TrafficSplit");
                self.apply(api, RouteKind::TrafficSplit, &names.apex, obj)
                    .await
            }
            Provider::Kubernetes => self.switch_apex_selector(routes.canary_weight >= 100).await,
        }
    }

    async fn in_force(&self, _ctx: &CanaryContext, _routes: &Routes) -> Result<bool, AdapterError> {
        match (&self.provider, &self.probe) {
            (
                Provider::HttpRoute {
                    serin_mesh: true, ..
                },
                Some(probe),
            ) => probe.in_force(&self.ns(), &self.names().apex).await,
            // Other meshes do not report when a route is in force everywhere.
            _ => Ok(true),
        }
    }

    async fn revert(&self, _ctx: &CanaryContext) -> Result<(), AdapterError> {
        let names = self.names();
        let dp = DeleteParams::default();
        let api = match &self.provider {
            Provider::HttpRoute { version, .. } => Some((
                self.dynamic_api(GATEWAY_GROUP, version, "HTTPRoute"),
                RouteKind::HttpRoute,
            )),
            Provider::TrafficSplit { version } => Some((
                self.dynamic_api(SMI_SPLIT_GROUP, version, "TrafficSplit"),
                RouteKind::TrafficSplit,
            )),
            Provider::Kubernetes => None,
        };
        if let Some((api, kind)) = api {
            if let Some(routes) = &self.routes {
                routes.forget(kind, &self.ns(), &names.apex);
            }
            match api.delete(&names.apex, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(kube_error(
                        e,
                        format!("deleting route {}/{}", self.ns(), names.apex),
                    ));
                }
            }
        }
        // The apex Service goes back to selecting the target's pods and stops being owned by the
        // Canary, so it survives the Canary's deletion.
        let Some(target) = self.workloads.target().await? else {
            return Ok(());
        };
        let svc_api: Api<Service> = Api::namespaced(self.client.clone(), &self.ns());
        let patch = json!({"metadata": {"ownerReferences": null}, "spec": {"selector": target.selector_labels()}});
        match svc_api
            .patch(&names.apex, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(kube_error(
                e,
                format!("patching service {}/{}", self.ns(), names.apex),
            )),
        }
    }
}

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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use serin_api::{Canary, Normalized};
use serin_core::{Routes, StringMatch};

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

/// Service fields a Canary may set that Serin's providers do not use: accepted, reported as
/// ignored (never an error), so Flagger manifests for other meshes still apply.
pub fn ignored_fields(canary: &Canary, provider: &Provider) -> Vec<&'static str> {
    let s = &canary.spec.service;
    let mut out = Vec::new();
    let mut note = |set: bool, field: &'static str| {
        if set {
            out.push(field);
        }
    };
    note(!s.gateways.is_empty(), "spec.service.gateways");
    note(s.traffic_policy.is_some(), "spec.service.trafficPolicy");
    note(s.delegation, "spec.service.delegation");
    note(s.rewrite.is_some(), "spec.service.rewrite");
    note(s.retries.is_some(), "spec.service.retries");
    note(s.cors_policy.is_some(), "spec.service.corsPolicy");
    note(s.mesh_name.is_some(), "spec.service.meshName");
    note(!s.backends.is_empty(), "spec.service.backends");
    note(
        s.service_discovery.is_some(),
        "spec.service.serviceDiscovery",
    );
    note(!s.r#match.is_empty(), "spec.service.match");
    note(canary.spec.ingress_ref.is_some(), "spec.ingressRef");
    note(canary.spec.route_ref.is_some(), "spec.routeRef");
    note(canary.spec.upstream_ref.is_some(), "spec.upstreamRef");
    let http_route = matches!(provider, Provider::HttpRoute { .. });
    note(!http_route && s.headers.is_some(), "spec.service.headers");
    note(!http_route && s.timeout.is_some(), "spec.service.timeout");
    note(
        !http_route && !s.gateway_refs.is_empty(),
        "spec.service.gatewayRefs",
    );
    note(
        s.gateway_refs.is_empty() && !s.hosts.is_empty(),
        "spec.service.hosts",
    );
    out
}

fn string_match_json(name: &str, m: &StringMatch) -> Value {
    let (kind, value) = match m {
        StringMatch::Exact(v) => ("Exact", regex_escape_if(false, v)),
        StringMatch::Regex(v) => ("RegularExpression", v.clone()),
        StringMatch::Prefix(v) => ("RegularExpression", format!("^{}.*", regex_escape(v))),
        StringMatch::Suffix(v) => ("RegularExpression", format!(".*{}$", regex_escape(v))),
    };
    json!({"name": name, "type": kind, "value": value})
}

fn regex_escape_if(escape: bool, v: &str) -> String {
    if escape {
        regex_escape(v)
    } else {
        v.to_string()
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

fn header_modifier(ops: &serin_api::HeaderOperations) -> Value {
    let pairs = |m: &std::collections::BTreeMap<String, String>| -> Vec<Value> {
        m.iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect()
    };
    let mut v = serde_json::Map::new();
    if !ops.set.is_empty() {
        v.insert("set".into(), Value::Array(pairs(&ops.set)));
    }
    if !ops.add.is_empty() {
        v.insert("add".into(), Value::Array(pairs(&ops.add)));
    }
    if !ops.remove.is_empty() {
        v.insert("remove".into(), json!(ops.remove));
    }
    Value::Object(v)
}

/// The HTTPRoute for `routes`.
pub fn http_route(
    version: &str,
    canary: &Canary,
    n: &Normalized,
    names: &ServiceNames,
    routes: &Routes,
    owner: &OwnerReference,
) -> Value {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let port = n.port;
    let svc = &canary.spec.service;
    let mut parents =
        vec![json!({"group": "", "kind": "Service", "name": names.apex, "port": port})];
    for g in &svc.gateway_refs {
        let mut p = serde_json::to_value(g).unwrap_or_default();
        if let Value::Object(m) = &mut p {
            m.retain(|_, v| !v.is_null());
        }
        parents.push(p);
    }
    let backend = |name: &str, weight: u32| json!({"name": name, "port": port, "weight": weight});

    let mut common_filters = Vec::new();
    if let Some(h) = &svc.headers {
        if let Some(req) = &h.request {
            common_filters.push(json!({"type": "RequestHeaderModifier", "requestHeaderModifier": header_modifier(req)}));
        }
        if let Some(resp) = &h.response {
            common_filters.push(json!({"type": "ResponseHeaderModifier", "responseHeaderModifier": header_modifier(resp)}));
        }
    }
    let timeouts = svc.timeout.as_ref().map(|t| json!({"request": t}));
    let rule = |matches: Option<Value>, backends: Vec<Value>, extra_filters: Vec<Value>| {
        let mut r = serde_json::Map::new();
        if let Some(m) = matches {
            r.insert("matches".into(), m);
        }
        let mut filters = common_filters.clone();
        filters.extend(extra_filters);
        if !filters.is_empty() {
            r.insert("filters".into(), Value::Array(filters));
        }
        r.insert("backendRefs".into(), Value::Array(backends));
        if let Some(t) = &timeouts {
            r.insert("timeouts".into(), t.clone());
        }
        Value::Object(r)
    };

    let mut rules = Vec::new();
    // A/B: each match entry is its own rule (entries are ORed, conditions within one ANDed).
    for m in &routes.matches {
        let headers: Vec<Value> = m
            .headers
            .iter()
            .map(|(k, v)| string_match_json(k, v))
            .collect();
        let query: Vec<Value> = m
            .query_params
            .iter()
            .map(|(k, v)| string_match_json(k, v))
            .collect();
        let mut mm = serde_json::Map::new();
        if !headers.is_empty() {
            mm.insert("headers".into(), Value::Array(headers));
        }
        if !query.is_empty() {
            mm.insert("queryParams".into(), Value::Array(query));
        }
        rules.push(rule(
            Some(json!([Value::Object(mm)])),
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
                Some(json!([{"headers": [{"name": "Cookie", "type": "RegularExpression", "value": format!(".*{}.*", regex_escape(cookie))}]}])),
                vec![backend(&names.canary, 100)],
                vec![],
            ));
            if let Some(value) = a.set_cookie() {
                canary_backend["filters"] = json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{"name": "Set-Cookie", "value": value}]}}]);
            }
        }
        if let Some(value) = a.expire_cookie() {
            primary_backend["filters"] = json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{"name": "Set-Cookie", "value": value}]}}]);
        }
    }
    let mut mirror = Vec::new();
    if let Some(w) = routes.mirror_weight {
        mirror.push(json!({"type": "RequestMirror", "requestMirror": {"backendRef": {"name": names.canary, "port": port}, "percent": w}}));
    }
    rules.push(rule(None, vec![primary_backend, canary_backend], mirror));

    let mut spec = json!({"parentRefs": parents, "rules": rules});
    if !svc.gateway_refs.is_empty() && !svc.hosts.is_empty() {
        spec["hostnames"] = json!(svc.hosts);
    }
    json!({
        "apiVersion": format!("gateway.networking.k8s.io/{version}"),
        "kind": "HTTPRoute",
        "metadata": {
            "name": names.apex,
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "serin"},
            "ownerReferences": [owner],
        },
        "spec": spec,
    })
}

/// The SMI TrafficSplit for `routes`.
pub fn traffic_split(
    version: &str,
    namespace: &str,
    names: &ServiceNames,
    routes: &Routes,
    owner: &OwnerReference,
) -> Value {
    let w = |x: u32| {
        if version == "v1alpha1" {
            json!(x.to_string())
        } else {
            json!(x)
        }
    };
    json!({
        "apiVersion": format!("split.smi-spec.io/{version}"),
        "kind": "TrafficSplit",
        "metadata": {
            "name": names.apex,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "serin"},
            "ownerReferences": [owner],
        },
        "spec": {
            "service": names.apex,
            "backends": [
                {"service": names.primary, "weight": w(routes.primary_weight)},
                {"service": names.canary, "weight": w(routes.canary_weight)},
            ],
        },
    })
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
        }
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
        name: &str,
        obj: &Value,
        what: &str,
    ) -> Result<(), AdapterError> {
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
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
                let api = self.dynamic_api("gateway.networking.k8s.io", version, "HTTPRoute");
                self.apply(api, &names.apex, &obj, "httproute").await
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
                let api = self.dynamic_api("split.smi-spec.io", version, "TrafficSplit");
                self.apply(api, &names.apex, &obj, "trafficsplit").await
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
            Provider::HttpRoute { version, .. } => {
                Some(self.dynamic_api("gateway.networking.k8s.io", version, "HTTPRoute"))
            }
            Provider::TrafficSplit { version } => {
                Some(self.dynamic_api("split.smi-spec.io", version, "TrafficSplit"))
            }
            Provider::Kubernetes => None,
        };
        if let Some(api) = api {
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

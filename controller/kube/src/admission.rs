//! The injector's AdmissionReview handling: request bytes in, response review out, never a
//! panic. The Kubernetes-free decision is [`super::inject::inject`]; this module reads the
//! review, asks for the namespace's annotations, and writes the JSON patch.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::inject::{self, Decision, InjectConfig, Skip, Workload};

/// Where the injector learns a namespace's annotations (the API server, a cache, a test map).
#[async_trait::async_trait]
pub trait NamespaceAnnotations: Send + Sync {
    /// The annotations of `namespace`; Err with a reason when they cannot be read.
    async fn annotations(&self, namespace: &str) -> Result<BTreeMap<String, String>, String>;
}

#[async_trait::async_trait]
impl NamespaceAnnotations for BTreeMap<String, BTreeMap<String, String>> {
    async fn annotations(&self, namespace: &str) -> Result<BTreeMap<String, String>, String> {
        Ok(self.get(namespace).cloned().unwrap_or_default())
    }
}

/// Labels of `serin_injector_admissions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `injected`, `skipped` (admitted without injection), `denied` (a bad annotation) or
    /// `invalid` (a malformed review).
    pub outcome: &'static str,
    /// Why (a [`Skip`] label, `namespace_unreadable`, `not_a_pod_create`), empty otherwise.
    pub reason: &'static str,
}

/// Labels of `serin_injector_uninjected_pods`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// The namespace (only namespaces that opted in, or hold a pod that did).
    pub namespace: String,
}

/// The injector's metrics.
#[derive(Clone, Default)]
pub struct InjectorMetrics {
    /// Every review answered, by outcome and reason. Pods admitted without injection are the
    /// `outcome="skipped"` series.
    pub admissions: Family<AdmissionLabels, Counter>,
    /// Running pods that opted in (themselves or through their namespace) but have no proxy:
    /// admitted while the injector was down (its failure policy is `Ignore`), or created before
    /// the namespace opted in. Restarting their workload injects them.
    pub uninjected: Family<NamespaceLabels, Gauge>,
}

impl InjectorMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "serin_injector_admissions",
            "Pod admission reviews answered by the injector, by outcome and reason",
            self.admissions.clone(),
        );
        registry.register(
            "serin_injector_uninjected_pods",
            "Running pods that opted in to injection but have no serin-proxy, by namespace",
            self.uninjected.clone(),
        );
    }

    fn count(&self, outcome: &'static str, reason: &'static str) {
        self.admissions
            .get_or_create(&AdmissionLabels { outcome, reason })
            .inc();
    }
}

/// The webhook's state.
pub struct Injector {
    /// What goes into pods.
    pub config: InjectConfig,
    /// Namespace annotations.
    pub namespaces: Arc<dyn NamespaceAnnotations>,
    /// Metrics.
    pub metrics: InjectorMetrics,
}

/// An answer: the HTTP status to send and the review.
#[derive(Debug)]
pub struct Answer {
    /// 200 for any review that could be read; 400 when the body is not an AdmissionReview.
    pub status: u16,
    /// The response review.
    pub review: AdmissionReview<DynamicObject>,
}

fn invalid(metrics: &InjectorMetrics, message: String) -> Answer {
    metrics.count("invalid", "");
    let mut r = AdmissionResponse::invalid(message);
    r.result.code = 400;
    Answer {
        status: 400,
        review: r.into_review(),
    }
}

impl Injector {
    /// Answers one AdmissionReview body.
    pub async fn review(&self, body: &[u8]) -> Answer {
        let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return invalid(
                    &self.metrics,
                    format!("the request body is not an admission.k8s.io/v1 AdmissionReview: {e}"),
                );
            }
        };
        let req: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(r) => r,
            Err(_) => {
                return invalid(
                    &self.metrics,
                    "the AdmissionReview has no `request`".to_string(),
                );
            }
        };
        let resp = self.respond(&req).await;
        Answer {
            status: 200,
            review: resp.into_review(),
        }
    }

    async fn respond(&self, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let ok = AdmissionResponse::from(req);
        let bad = |message: String| {
            let mut r = AdmissionResponse::from(req).deny(message);
            r.result.code = 400;
            r.result.reason = "BadRequest".into();
            r
        };
        if req.kind.kind != "Pod" || req.operation != Operation::Create {
            self.metrics.count("skipped", "not_a_pod_create");
            return ok;
        }
        let Some(object) = &req.object else {
            self.metrics.count("invalid", "");
            return bad("the request has no `object`".into());
        };
        let raw = match serde_json::to_value(object) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.count("invalid", "");
                return bad(format!("the object cannot be read: {e}"));
            }
        };
        let pod: Pod = match serde_json::from_value(raw) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.count("invalid", "");
                return bad(format!("the object is not a valid v1 Pod: {e}"));
            }
        };
        let namespace = req
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let ns_annotations = match self.namespaces.annotations(&namespace).await {
            Ok(a) => a,
            Err(e) => {
                // Failing open keeps pod creation going, as the webhook's failurePolicy does.
                tracing::warn!(ns = %namespace, error = %e, "namespace unreadable; pod admitted without injection");
                self.metrics.count("skipped", "namespace_unreadable");
                return ok;
            }
        };
        let workload = Workload::of_pod(&pod.metadata);
        match inject::inject(
            &pod,
            &namespace,
            &ns_annotations,
            &workload,
            &self.config,
            false,
        ) {
            Ok(Decision::Skipped(Skip::OtherMesh)) => {
                // The pod asked for Serin and got nothing: say so where `kubectl` shows it.
                tracing::warn!(ns = %namespace, reason = Skip::OtherMesh.label(), "pod admitted without injection");
                self.metrics.count("skipped", Skip::OtherMesh.label());
                let mut r = ok;
                r.warnings = Some(vec![OTHER_MESH_WARNING.into()]);
                r
            }
            Ok(Decision::Skipped(skip)) => {
                tracing::debug!(ns = %namespace, reason = skip.label(), "pod admitted without injection");
                self.metrics.count("skipped", skip.label());
                ok
            }
            Ok(Decision::Injected(injected)) => match patch(&pod, &injected) {
                Ok(p) => match ok.clone().with_patch(p) {
                    Ok(r) => {
                        tracing::info!(ns = %namespace, workload = ?workload.owner, "pod injected");
                        self.metrics.count("injected", "");
                        r
                    }
                    Err(e) => {
                        self.metrics.count("skipped", "patch_error");
                        tracing::error!(error = %e, "patch not serialisable; pod admitted without injection");
                        ok
                    }
                },
                Err(e) => {
                    self.metrics.count("skipped", "patch_error");
                    tracing::error!(error = %e, "patch not built; pod admitted without injection");
                    ok
                }
            },
            Err(e) => {
                self.metrics.count("denied", "");
                bad(format!("serin injector: {e}"))
            }
        }
    }
}

/// The warning a pod that opted in but carries another mesh's proxy is admitted with.
pub const OTHER_MESH_WARNING: &str = "serin injector: serin-proxy not injected: the pod has another mesh's proxy (Linkerd's or Istio's) or asks for it; two meshes would capture its traffic twice";

/// Metric label values a skip can have (for dashboards to list).
pub fn skip_labels() -> [&'static str; 6] {
    [
        Skip::NotEnabled.label(),
        Skip::Disabled.label(),
        Skip::HostNetwork.label(),
        Skip::SystemNamespace.label(),
        Skip::AlreadyInjected.label(),
        Skip::OtherMesh.label(),
    ]
}

/// The JSON patch from `before` to `after` (an [`inject`](inject::inject) result): the two
/// containers added in front of the pod's init containers, their volume and the marker annotation, written
/// as `add` operations only, so nothing else of the pod as the API server holds it is touched.
pub fn patch(before: &Pod, after: &Pod) -> Result<json_patch::Patch, serde_json::Error> {
    let added: Vec<&Container> = after
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.name == inject::INIT_CONTAINER || c.name == inject::PROXY_CONTAINER)
        .collect();
    let mut ops: Vec<Value> = Vec::new();
    let had_init = before
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some();
    if had_init {
        // Inserted at index 0 in reverse, so they end up first and in order.
        for c in added.iter().rev() {
            ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": c}));
        }
    } else {
        ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": added}));
    }
    // The volume the init container's iptables lock lives on, appended to the pod's own.
    let volumes: Vec<&k8s_openapi::api::core::v1::Volume> = after
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| v.name == inject::XTABLES_LOCK_VOLUME)
        .collect();
    let had_volumes = before
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some();
    if had_volumes {
        for v in volumes {
            ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
        }
    } else if !volumes.is_empty() {
        ops.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes}));
    }
    let marker = after
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(inject::INJECTED))
        .cloned()
        .unwrap_or_default();
    if before.metadata.annotations.is_some() {
        let key = inject::INJECTED.replace('~', "~0").replace('/', "~1");
        ops.push(
            json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": marker}),
        );
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {inject::INJECTED: marker}}));
    }
    serde_json::from_value(Value::Array(ops))
}

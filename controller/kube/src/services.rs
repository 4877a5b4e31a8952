//! The apex, primary and canary Services, as Flagger generates them: `<svc>` (what clients call),
//! `<svc>-primary` (selects the primary's pods) and `<svc>-canary` (selects the target's pods),
//! with the user's apex/primary/canary labels and annotations, owned by the Canary.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serin_api::{Canary, CustomMetadata, Normalized};

use super::watch::Stores;
use super::workloads::{PRIMARY_SUFFIX, Target, primary_labels, stamp_applied};
use super::{FIELD_MANAGER, kube_error};
use serin_controller::adapters::AdapterError;

/// The three Service names of a Canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    /// `<svc>`.
    pub apex: String,
    /// `<svc>-primary`.
    pub primary: String,
    /// `<svc>-canary`.
    pub canary: String,
}

impl ServiceNames {
    /// Names from the normalized spec.
    pub fn new(n: &Normalized) -> Self {
        Self {
            apex: n.service_name.clone(),
            primary: format!("{}{PRIMARY_SUFFIX}", n.service_name),
            canary: format!("{}-canary", n.service_name),
        }
    }
}

/// The Service ports: the canary's port first, then (with `portDiscovery`) every other named
/// container port of the target.
pub fn ports(n: &Normalized, canary: &Canary, target: &Target) -> Vec<ServicePort> {
    let mut ports = vec![ServicePort {
        name: Some(n.port_name.clone()),
        port: i32::from(n.port),
        target_port: Some(n.target_port.clone()),
        protocol: Some("TCP".into()),
        app_protocol: canary.spec.service.app_protocol.clone(),
        node_port: None,
    }];
    if canary.spec.service.port_discovery {
        let template = match target {
            Target::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Target::DaemonSet(d) => d.spec.as_ref().map(|s| &s.template),
        };
        let containers = template
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        for c in containers {
            for p in c.ports.unwrap_or_default() {
                let main = match &n.target_port {
                    IntOrString::Int(i) => *i == p.container_port,
                    IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
                };
                if main || p.protocol.as_deref().is_some_and(|x| x != "TCP") {
                    continue;
                }
                let Some(name) = p.name.clone() else { continue };
                if ports
                    .iter()
                    .any(|q| q.name.as_deref() == Some(&name) || q.port == p.container_port)
                {
                    continue;
                }
                ports.push(ServicePort {
                    name: Some(name.clone()),
                    port: p.container_port,
                    target_port: Some(IntOrString::String(name)),
                    protocol: Some("TCP".into()),
                    app_protocol: None,
                    node_port: None,
                });
            }
        }
    }
    ports
}

fn meta(
    name: &str,
    namespace: &str,
    custom: Option<&CustomMetadata>,
    owner: Option<&OwnerReference>,
) -> ObjectMeta {
    let custom = custom.cloned().unwrap_or_default();
    let mut labels = custom.labels;
    labels.insert("app.kubernetes.io/managed-by".into(), "serin".into());
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        annotations: (!custom.annotations.is_empty()).then_some(custom.annotations),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..Default::default()
    }
}

/// A ClusterIP Service selecting `selector`.
pub fn service(
    name: &str,
    namespace: &str,
    custom: Option<&CustomMetadata>,
    owner: Option<&OwnerReference>,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        metadata: meta(name, namespace, custom, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

/// Applies the three Services. The apex selects the primary's pods (so clients outside the mesh
/// reach the stable version); routing objects then split traffic behind it. With `stores`, a
/// Service whose watched copy is already as applied is left alone.
pub async fn apply_services(
    client: &Client,
    stores: Option<&Stores>,
    canary: &Canary,
    n: &Normalized,
    names: &ServiceNames,
    target: &Target,
    owner: &OwnerReference,
) -> Result<(), AdapterError> {
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let selector = target.selector_labels();
    let primary_selector = primary_labels(&selector, &selector);
    let ports = ports(n, canary, target);
    let svc = &canary.spec.service;
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    for (name, custom, sel) in [
        (
            &names.primary,
            svc.primary.as_ref(),
            primary_selector.clone(),
        ),
        (&names.canary, svc.canary.as_ref(), selector.clone()),
        (&names.apex, svc.apex.as_ref(), primary_selector.clone()),
    ] {
        let mut s = service(name, &ns, custom, Some(owner), sel, ports.clone());
        let current = stores.and_then(|st| st.service(&ns, name));
        // The stamp says Serin's fields are as applied; the selector is checked as well, as
        // it decides where traffic goes.
        let same_selector = current
            .as_ref()
            .and_then(|c| c.spec.as_ref()?.selector.as_ref())
            == s.spec.as_ref().and_then(|sp| sp.selector.as_ref());
        if stamp_applied(&mut s, current.as_deref()) && same_selector {
            continue;
        }
        api.patch(name, &pp, &Patch::Apply(&s))
            .await
            .map_err(|e| kube_error(e, format!("applying service {ns}/{name}")))?;
    }
    Ok(())
}

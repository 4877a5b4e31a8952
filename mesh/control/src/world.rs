//! The control plane's view of the cluster, independent of where it came from (Kubernetes
//! watches or the local directory): Services, their ready endpoints, and the route objects.
//!
//! Sources turn their objects into these plain records; the translator
//! ([`crate::translate`]) reads only this.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Deserialize, Serialize};

use serin_mesh_api::objects::{HttpRoute, ReferenceGrantSpec, TrafficSplit};

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Key of a Kubernetes object (`default` namespace when it has none, as kubectl does).
    pub fn of<K: kube::Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        ObjKey::new(
            meta.namespace.clone().unwrap_or_else(|| "default".into()),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    /// Cluster IPs (none for headless Services and local static Services).
    pub cluster_ips: Vec<IpAddr>,
    /// Declared ports. Empty for a local static Service, whose endpoints serve every port.
    pub ports: Vec<ServicePort>,
    /// Metric labels of the workload behind the Service (local `StaticEndpoints`
    /// `spec.labels`, e.g. `deployment`): proxies export each as `dst_<name>` on the series of
    /// the backend, as Linkerd labels traffic by destination workload.
    pub labels: BTreeMap<String, String>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name, used to find the matching EndpointSlice port.
    pub name: Option<String>,
    /// The Service port number (what clients and `backendRefs[].port` use).
    pub port: u16,
}

impl ServiceInfo {
    /// Reads a Kubernetes Service. Ports outside 1..=65535 are skipped (the API server never
    /// stores them).
    pub fn from_k8s(svc: &Service) -> Self {
        let spec = svc.spec.clone().unwrap_or_default();
        let mut ips: Vec<String> = spec.cluster_ips.unwrap_or_default();
        if ips.is_empty()
            && let Some(ip) = spec.cluster_ip
        {
            ips.push(ip);
        }
        ServiceInfo {
            labels: BTreeMap::new(),
            // "None" (headless) and "" do not parse and are dropped on purpose.
            cluster_ips: ips.iter().filter_map(|s| s.parse().ok()).collect(),
            ports: spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .filter_map(|p| {
                    Some(ServicePort {
                        name: p.name.filter(|n| !n.is_empty()),
                        port: u16::try_from(p.port).ok().filter(|p| *p > 0)?,
                    })
                })
                .collect(),
        }
    }
}

/// The ready endpoints one source (an EndpointSlice, or a local static list) gives a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSet {
    /// From an EndpointSlice: ready addresses, and the ports they serve by port name.
    Slice {
        /// `(port name, port number)` pairs of the slice.
        ports: Vec<(Option<String>, u16)>,
        /// Ready addresses.
        ready: Vec<IpAddr>,
    },
    /// Local static endpoints: full addresses serving every Service port.
    Static(Vec<SocketAddr>),
}

impl EndpointSet {
    /// Reads an EndpointSlice: endpoints whose `ready` condition is true or unset (Kubernetes
    /// says consumers should read unset as ready) are kept.
    pub fn from_slice(slice: &EndpointSlice) -> Self {
        let ports = slice
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                Some((
                    p.name.filter(|n| !n.is_empty()),
                    u16::try_from(p.port?).ok().filter(|p| *p > 0)?,
                ))
            })
            .collect();
        let ready = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| e.addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        EndpointSet::Slice { ports, ready }
    }

    /// The addresses serving Service port `port` (`None` for a static Service without ports).
    pub fn addresses_for(&self, port: Option<&ServicePort>, single_port: bool) -> Vec<SocketAddr> {
        match self {
            EndpointSet::Static(addrs) => addrs.clone(),
            EndpointSet::Slice { ports, ready } => {
                let target = match port {
                    Some(sp) => ports
                        .iter()
                        .find(|(name, _)| *name == sp.name)
                        .or_else(|| {
                            // An unnamed single-port Service pairs with a single-port slice.
                            (single_port && ports.len() == 1).then(|| &ports[0])
                        })
                        .map(|(_, p)| *p),
                    None => (ports.len() == 1).then(|| ports[0].1),
                };
                match target {
                    Some(p) => ready.iter().map(|ip| SocketAddr::new(*ip, p)).collect(),
                    None => Vec::new(),
                }
            }
        }
    }
}

/// Everything the translator reads.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Services by key.
    pub services: BTreeMap<ObjKey, ServiceInfo>,
    /// Endpoint sets per Service, keyed by the set's own name (EndpointSlice name, or the
    /// static object's name).
    pub endpoints: BTreeMap<ObjKey, BTreeMap<String, EndpointSet>>,
    /// HTTPRoutes by key (the last valid version of each; see [`crate::state`]).
    pub routes: BTreeMap<ObjKey, HttpRoute>,
    /// TrafficSplits by key.
    pub splits: BTreeMap<ObjKey, TrafficSplit>,
    /// Gateway API ReferenceGrants by key.
    pub grants: BTreeMap<ObjKey, ReferenceGrantSpec>,
}

impl World {
    /// Whether an HTTPRoute in namespace `from_ns` may send traffic to Service `to`: always
    /// within one namespace; across namespaces only when a ReferenceGrant in `to`'s namespace
    /// allows it (Gateway API: a cross-namespace reference without a grant is not permitted).
    pub fn route_may_reach(&self, from_ns: &str, to: &ObjKey) -> bool {
        from_ns == to.namespace
            || self
                .grants
                .iter()
                .filter(|(k, _)| k.namespace == to.namespace)
                .any(|(_, g)| g.lets_routes_reach(from_ns, &to.name))
    }
}

/// The Service an EndpointSlice belongs to (label `kubernetes.io/service-name`).
pub fn slice_service(slice: &EndpointSlice) -> Option<ObjKey> {
    let name = slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?;
    Some(ObjKey::new(
        slice
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name.clone(),
    ))
}

//! The control plane's status documents: what `GET /v1/status`, `GET /v1/routes` and
//! `GET /v1/routes/{httproutes|trafficsplits}/{namespace}/{name}` answer. The control plane
//! serialises these types and the canary controller (serin-kube's convergence probe,
//! serin-local's router) reads them, so "is this route in force on every proxy" (`converged`)
//! has one spelling.

use serde::{Deserialize, Serialize};

/// The two kinds of route objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RouteKind {
    /// Gateway API HTTPRoute.
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    /// SMI TrafficSplit.
    TrafficSplit,
}

impl RouteKind {
    /// The plural used in URL paths (`httproutes`, `trafficsplits`).
    pub fn plural(self) -> &'static str {
        match self {
            RouteKind::HttpRoute => "httproutes",
            RouteKind::TrafficSplit => "trafficsplits",
        }
    }

    /// Parses the URL plural (`httproutes`, `trafficsplits`).
    pub fn from_plural(s: &str) -> Option<Self> {
        match s {
            "httproutes" => Some(RouteKind::HttpRoute),
            "trafficsplits" => Some(RouteKind::TrafficSplit),
            _ => None,
        }
    }

    /// The Kubernetes kind name.
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::HttpRoute => "HTTPRoute",
            RouteKind::TrafficSplit => "TrafficSplit",
        }
    }
}

/// Something wrong with a route object, as the status API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteProblem {
    /// Path of the offending field, e.g. `spec.rules[0].filters[1].type`.
    pub field: String,
    /// Gateway API condition reason (`UnsupportedValue`, `BackendNotFound`, ...).
    pub reason: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// One route object as received, and the version carrying its effective spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteInfo {
    /// `HTTPRoute` or `TrafficSplit`.
    pub kind: RouteKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Snapshot version that carries the object's current effective spec; a proxy that applied
    /// this version or later runs it.
    pub version: u64,
    /// False when the object as last received is invalid (its last valid version, if any, is
    /// what runs) or loses a conflict.
    pub valid: bool,
    /// What is wrong with it.
    pub problems: Vec<RouteProblem>,
}

/// Convergence of one route object across the proxies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The object and the version carrying its current spec.
    #[serde(flatten)]
    pub info: RouteInfo,
    /// Latest published version.
    pub latest_version: u64,
    /// Subscribed proxies.
    pub proxies: usize,
    /// Subscribed proxies that applied `version` or later.
    pub proxies_up_to_date: usize,
    /// True when every subscribed proxy runs `version` or later (vacuously true with none).
    pub converged: bool,
}

/// A subscribed proxy as the status API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyInfo {
    /// Proxy id.
    pub id: String,
    /// `namespace/name` of its workload.
    pub workload: String,
    /// Last version written to its stream.
    pub sent_version: u64,
    /// Last version it acknowledged as applied (0 = none yet).
    pub applied_version: u64,
    /// Last refusal: version and reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<(u64, String)>,
    /// Seconds since the Unix epoch when it subscribed.
    pub connected_at: u64,
}

/// The whole status document (`GET /v1/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneStatus {
    /// Latest published version.
    pub version: u64,
    /// True once the source delivered its first complete state.
    pub ready: bool,
    /// Subscribed proxies.
    pub proxies: Vec<ProxyInfo>,
    /// Route objects.
    pub routes: Vec<RouteStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_status_reads_back_flat_as_the_control_plane_writes_it() {
        let text = r#"{"kind":"HTTPRoute","namespace":"test","name":"podinfo","version":3,"valid":true,"problems":[],"latestVersion":4,"proxies":2,"proxiesUpToDate":2,"converged":true}"#;
        let status: RouteStatus = serde_json::from_str(text).unwrap();
        assert!(status.converged);
        assert_eq!(status.info.kind, RouteKind::HttpRoute);
        assert_eq!(serde_json::to_string(&status).unwrap(), text);
    }
}

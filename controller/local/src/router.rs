//! The local routing: each Canary's apex, primary and canary Services and its weighted
//! `HTTPRoute`, written as files into the directory the local control plane
//! (`serin control-plane --routes DIR`) reads, and checked against the control plane's API until
//! every subscribed proxy runs them.
//!
//! Why files and not only the weights API: endpoints change too (a new primary on promotion,
//! a restarted process), and only the directory carries endpoints; one file per Canary holding
//! Services, endpoints and weights changes all of them in one atomic rename, so a proxy never
//! sees new weights with old endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use serin_mesh_api::objects::{
    HttpBackendRef, HttpRoute, HttpRouteRule, HttpRouteSpec, ObjectMeta, ParentReference,
    StaticEndpoints, StaticEndpointsSpec,
};
use serin_mesh_api::status::ControlPlaneStatus;
use serin_mesh_api::table::{Backend, Route, RouteTable};

use super::store::write_atomic;
use serin_controller::http::HttpClient;

/// Everything that decides where one Canary's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Namespace of the Canary.
    pub namespace: String,
    /// The apex Service name (`spec.service.name`, else the target name).
    pub service: String,
    /// The target Process's name: the canary workload; the primary is `<target>-primary`.
    pub target: String,
    /// The Service port.
    pub port: u16,
    /// Percent to the primary.
    pub primary_weight: u32,
    /// Percent to the canary.
    pub canary_weight: u32,
    /// Ready primary endpoints.
    pub primary: Vec<SocketAddr>,
    /// Ready canary endpoints.
    pub canary: Vec<SocketAddr>,
    /// The process behind each endpoint, named as a Deployment's pod (see [`PodName`]).
    pub pods: BTreeMap<SocketAddr, PodName>,
}

/// The name a process gets in the metrics (`dst_pod`, `dst_pod_template_hash` on the series of
/// requests sent to it), built as Kubernetes names a Deployment's pods:
/// `<workload>-<pod-template-hash>-<index>`. The hash covers the workload's name and what the
/// process runs, so a primary and a canary running the same revision still differ (on
/// Kubernetes their templates differ by their labels), and a new revision gets a new hash. The
/// index (where Kubernetes has a random suffix) counts the instances of one workload and hash,
/// so the names of one revision's processes repeat across restarts and the number of series
/// stays bounded by the processes that run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    /// `<workload>-<pod_template_hash>-<index>`.
    pub pod: String,
    /// Ten characters of Kubernetes' pod-template-hash alphabet.
    pub pod_template_hash: String,
}

impl PodName {
    /// The name of the `index`th process of `workload` running the spec of `spec_hash`.
    pub fn new(workload: &str, spec_hash: u64, index: usize) -> Self {
        // FNV-1a (32 bit) over the workload and the spec's own hash, then spelled as
        // Kubernetes spells a pod-template-hash: the decimal digits mapped into an alphabet
        // without vowels (no words) and without look-alike characters.
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut h: u32 = 0x811c_9dc5;
        for b in workload
            .bytes()
            .chain([0xff])
            .chain(spec_hash.to_le_bytes())
        {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        let hash: String = h
            .to_string()
            .bytes()
            .map(|d| char::from(ALPHABET[usize::from(d) % ALPHABET.len()]))
            .collect();
        PodName {
            pod: format!("{workload}-{hash}-{index}"),
            pod_template_hash: hash,
        }
    }
}

impl RouteSpec {
    /// `<service>-primary`.
    pub fn primary_name(&self) -> String {
        format!("{}-primary", self.service)
    }

    /// `<service>-canary`.
    pub fn canary_name(&self) -> String {
        format!("{}-canary", self.service)
    }

    /// The documents of the routes file: apex/primary/canary static endpoints and the route.
    pub fn documents(&self) -> Vec<Value> {
        let meta = |name: String| ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        };
        // `labels`: the workload behind each Service, as proxies label traffic by destination
        // (`dst_deployment`), named as Flagger names them: `<target>-primary` and `<target>`.
        // `endpointLabels`: which process each endpoint is, as a Kubernetes endpoint names its
        // pod (`dst_pod`, `dst_pod_template_hash`).
        let endpoints = |name: String, eps: &[SocketAddr], deployment: String| StaticEndpoints {
            metadata: meta(name),
            spec: StaticEndpointsSpec {
                endpoints: eps.iter().map(ToString::to_string).collect(),
                labels: [("deployment".to_string(), deployment)].into(),
                endpoint_labels: eps
                    .iter()
                    .filter_map(|ep| {
                        let p = self.pods.get(ep)?;
                        Some((
                            ep.to_string(),
                            [
                                ("pod".to_string(), p.pod.clone()),
                                ("pod_template_hash".to_string(), p.pod_template_hash.clone()),
                            ]
                            .into(),
                        ))
                    })
                    .collect(),
            },
        };
        let port = Some(i32::from(self.port));
        let backend = |name: String, weight: u32| HttpBackendRef {
            name,
            port,
            weight: Some(i32::try_from(weight).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        let route = HttpRoute {
            metadata: meta(self.service.clone()),
            spec: HttpRouteSpec {
                parent_refs: vec![ParentReference {
                    group: Some(String::new()),
                    kind: Some("Service".into()),
                    name: self.service.clone(),
                    ..Default::default()
                }],
                hostnames: Vec::new(),
                rules: vec![HttpRouteRule {
                    backend_refs: vec![
                        backend(self.primary_name(), self.primary_weight),
                        backend(self.canary_name(), self.canary_weight),
                    ],
                    ..Default::default()
                }],
            },
            status: None,
        };
        let primary = format!("{}-primary", self.target);
        let docs = [
            // The apex Service follows the primary, as Flagger's apex Service selects primary pods.
            to_value(&endpoints(
                self.service.clone(),
                &self.primary,
                primary.clone(),
            )),
            to_value(&endpoints(self.primary_name(), &self.primary, primary)),
            to_value(&endpoints(
                self.canary_name(),
                &self.canary,
                self.target.clone(),
            )),
            to_value(&route),
        ];
        docs.into()
    }
}

/// A routes-file document as a JSON value: written through a value, so every file's keys come
/// out in one (sorted) order whatever the struct order.
fn to_value(doc: &impl serde::Serialize) -> Value {
    // These types serialise infallibly (string keys, no non-finite floats).
    serde_json::to_value(doc).unwrap_or_default()
}

/// Writes routes files and asks the control plane whether they are in force.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    url: String,
    routes_dir: PathBuf,
    http: HttpClient,
}

impl ControlPlane {
    /// The control plane at `url` (e.g. `http://127.0.0.1:8086`) reading `routes_dir`.
    pub fn new(url: impl Into<String>, routes_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_string(),
            routes_dir: routes_dir.into(),
            http: HttpClient::new(),
        }
    }

    fn file(&self, namespace: &str, service: &str) -> PathBuf {
        self.routes_dir
            .join(format!("serin-local-{namespace}-{service}.yaml"))
    }

    /// Writes the routes file for `spec` (atomically).
    pub fn write(&self, spec: &RouteSpec) -> std::io::Result<()> {
        let mut text = String::from(
            "# Written by `serin controller --local`; edits are overwritten on the next change.\n",
        );
        for doc in spec.documents() {
            text.push_str("---\n");
            text.push_str(
                &serde_norway::to_string(&doc).map_err(|e| std::io::Error::other(e.to_string()))?,
            );
        }
        write_atomic(&self.file(&spec.namespace, &spec.service), text.as_bytes())
    }

    /// Removes the routes file of a Canary that is gone.
    pub fn remove(&self, namespace: &str, service: &str) {
        let _ = std::fs::remove_file(self.file(namespace, service));
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let url = format!("{}{path}", self.url);
        let resp = self
            .http
            .get(&url, Duration::from_secs(5))
            .await
            .map_err(|e| format!("control plane {url}: {e}"))?;
        if !resp.status.is_success() {
            return Err(format!("control plane {url}: HTTP {}", resp.status));
        }
        serde_json::from_slice(&resp.body).map_err(|e| format!("control plane {url}: {e}"))
    }

    /// Whether the control plane's table carries `spec` (weights and endpoints) and every
    /// subscribed proxy has applied that table. Both answers are read as the control plane's
    /// own types ([`RouteTable`], [`ControlPlaneStatus`]).
    pub async fn in_force(&self, spec: &RouteSpec) -> Result<bool, String> {
        let table: RouteTable = self
            .get_json(&format!("/v1/table?namespace={}", spec.namespace))
            .await?;
        let Some(route) = table
            .routes
            .iter()
            .find(|r| authority_host(r) == spec.service)
        else {
            return Ok(false);
        };
        if !table_matches(route, spec) {
            return Ok(false);
        }
        let status: ControlPlaneStatus = self.get_json("/v1/status").await?;
        Ok(status
            .proxies
            .iter()
            .all(|p| p.applied_version >= table.version))
    }
}

fn authority_host(route: &Route) -> &str {
    &route.authority.host
}

/// Weights and endpoints of the route's default rule against the spec. Weights are compared as
/// shares, since the control plane may keep them as given or normalise them.
fn table_matches(route: &Route, spec: &RouteSpec) -> bool {
    let Some(rule) = route.rules.iter().find(|r| r.matches.is_empty()) else {
        return false;
    };
    let find = |name: &str| rule.backends.iter().find(|b| b.name == name);
    let (pn, cn) = (spec.primary_name(), spec.canary_name());
    let (Some(p), Some(c)) = (find(&pn), find(&cn)) else {
        return false;
    };
    // A rule backend without endpoints names a route-level definition.
    let endpoints_of = |b: &Backend| -> BTreeSet<SocketAddr> {
        match &b.endpoints {
            Some(own) => own.iter().copied().collect(),
            None => route
                .resolve_backend(&b.name)
                .map(|d| d.endpoints.iter().copied().collect())
                .unwrap_or_default(),
        }
    };
    let (pw, cw) = (u64::from(p.weight), u64::from(c.weight));
    // Same shares: pw / (pw + cw) == primary_weight / 100.
    let same_share = pw * u64::from(spec.canary_weight) == cw * u64::from(spec.primary_weight)
        && (pw + cw > 0) == (spec.primary_weight + spec.canary_weight > 0);
    let want = |eps: &[SocketAddr]| eps.iter().copied().collect::<BTreeSet<_>>();
    same_share && endpoints_of(p) == want(&spec.primary) && endpoints_of(c) == want(&spec.canary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> RouteSpec {
        let (p, c) = (
            "127.0.0.1:1001".parse().unwrap(),
            "127.0.0.1:1002".parse().unwrap(),
        );
        RouteSpec {
            namespace: "default".into(),
            service: "podinfo".into(),
            target: "podinfo".into(),
            port: 9898,
            primary_weight: 80,
            canary_weight: 20,
            primary: vec![p],
            canary: vec![c],
            pods: [
                (p, PodName::new("podinfo-primary", 7, 0)),
                (c, PodName::new("podinfo", 7, 0)),
            ]
            .into(),
        }
    }

    #[test]
    fn pods_are_named_as_a_deployments_with_a_hash_per_workload_and_spec() {
        let a = PodName::new("podinfo-primary", 7, 0);
        assert!(
            a.pod
                .starts_with(&format!("podinfo-primary-{}-", a.pod_template_hash)),
            "{a:?}"
        );
        assert!(a.pod.ends_with("-0"));
        assert!((8..=10).contains(&a.pod_template_hash.len()), "{a:?}");
        assert!(
            a.pod_template_hash
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        // Stable across runs (a restarted controller names the same process the same way).
        assert_eq!(a, PodName::new("podinfo-primary", 7, 0));
        // Another revision, or the same revision as another workload, is another hash.
        assert_ne!(
            a.pod_template_hash,
            PodName::new("podinfo-primary", 8, 0).pod_template_hash
        );
        assert_ne!(
            a.pod_template_hash,
            PodName::new("podinfo", 7, 0).pod_template_hash
        );
        assert_eq!(
            PodName::new("podinfo-primary", 7, 1).pod_template_hash,
            a.pod_template_hash
        );
        assert_ne!(PodName::new("podinfo-primary", 7, 1).pod, a.pod);
    }

    #[test]
    fn the_file_holds_apex_primary_canary_endpoints_and_the_weighted_route() {
        let docs = spec().documents();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "StaticEndpoints",
                "StaticEndpoints",
                "StaticEndpoints",
                "HTTPRoute"
            ]
        );
        assert_eq!(docs[0]["metadata"]["name"], "podinfo");
        assert_eq!(docs[0]["spec"]["endpoints"][0], "127.0.0.1:1001");
        assert_eq!(docs[1]["spec"]["labels"]["deployment"], "podinfo-primary");
        assert_eq!(docs[2]["spec"]["labels"]["deployment"], "podinfo");
        // Each endpoint names its process; the apex follows the primary's.
        let primary = PodName::new("podinfo-primary", 7, 0);
        for d in [&docs[0], &docs[1]] {
            let l = &d["spec"]["endpointLabels"]["127.0.0.1:1001"];
            assert_eq!(l["pod"], primary.pod.as_str());
            assert_eq!(l["pod_template_hash"], primary.pod_template_hash.as_str());
        }
        assert_eq!(
            docs[2]["spec"]["endpointLabels"]["127.0.0.1:1002"]["pod"],
            PodName::new("podinfo", 7, 0).pod.as_str()
        );
        let refs = &docs[3]["spec"]["rules"][0]["backendRefs"];
        assert_eq!(refs[0]["name"], "podinfo-primary");
        assert_eq!(refs[0]["weight"], 80);
        assert_eq!(refs[1]["name"], "podinfo-canary");
        assert_eq!(refs[1]["weight"], 20);
    }

    #[test]
    fn a_table_matches_on_shares_and_endpoints() {
        let route: Route = serde_json::from_value(json!({
            "authority": "podinfo",
            "backends": [{"name": "podinfo-primary", "endpoints": ["127.0.0.1:1001"]}],
            "rules": [{"backends": [
                {"name": "podinfo-primary", "weight": 4},
                {"name": "podinfo-canary", "weight": 1, "endpoints": ["127.0.0.1:1002"]},
            ]}],
        }))
        .unwrap();
        assert_eq!(authority_host(&route), "podinfo");
        assert!(table_matches(&route, &spec()));
        let mut other = spec();
        other.canary_weight = 30;
        other.primary_weight = 70;
        assert!(!table_matches(&route, &other));
        let mut moved = spec();
        moved.primary = vec!["127.0.0.1:1003".parse().unwrap()];
        assert!(!table_matches(&route, &moved));
    }
}

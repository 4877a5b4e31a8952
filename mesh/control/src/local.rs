//! The local source (`--routes DIR`): the same route objects as YAML files, plus static
//! endpoints, reloaded when a file changes; and the write API the local controller uses.
//!
//! # Files
//!
//! Every `*.yaml`, `*.yml` and `*.json` file directly in the directory is read; a file may hold
//! several documents separated by `---`. Accepted documents:
//!
//! | apiVersion | kind | |
//! |---|---|---|
//! | `gateway.networking.k8s.io/v1` (or `v1beta1`) | `HTTPRoute` | parentRefs naming a Service |
//! | `split.smi-spec.io/v1alpha4` (`v1alpha3`, `v1alpha2`, `v1alpha1`) | `TrafficSplit` | |
//! | `v1` | `Service` | ports and cluster IPs, as in Kubernetes |
//! | `discovery.k8s.io/v1` | `EndpointSlice` | labelled `kubernetes.io/service-name` |
//! | `serin.dev/v1beta1` | `StaticEndpoints` | `spec.endpoints: ["127.0.0.1:19001", ...]` for the Service of the same name; optional `spec.labels: {deployment: podinfo-primary}`, the workload behind it, which proxies export as `dst_deployment`; optional `spec.endpointLabels: {"127.0.0.1:19001": {pod: podinfo-primary-5b8c7d9f6d-0, pod_template_hash: 5b8c7d9f6d}}`, each endpoint's own (`dst_pod`, `dst_pod_template_hash`) |
//! | `gateway.networking.k8s.io/v1beta1` (or `v1`) | `ReferenceGrant` | lets HTTPRoutes of other namespaces use Services of its namespace as backends |
//!
//! A `StaticEndpoints` without a `Service` of the same name declares one (no cluster IP, its
//! endpoints serve any port). Objects without `metadata.namespace` are in `default`. Two
//! `StaticEndpoints` listing one address (an apex Service and its primary) may both label it,
//! alike; an address labelled differently by two of them gets no endpoint labels, since either
//! set would be wrong for the other's traffic (as for a pod IP claimed by two pods).
//!
//! A file that does not parse is reported (log and `serin_control_errors_total{kind="file"}`)
//! and its previous content stays in force; a removed file removes its objects.
//!
//! # Write API (local only)
//!
//! - `PUT /v1/routes/{httproutes|trafficsplits}/{ns}/{name}/weights` with
//!   `{"backends":[{"name":"podinfo-primary","weight":50},{"name":"podinfo-canary","weight":50}]}`
//!   sets the weights of the named backends in every rule of an HTTPRoute that lists all of
//!   them (so a rule pinning a subset, e.g. insiders to the canary, is left alone).
//!   The override lasts until the object's own spec changes (file edit or PUT of the object).
//! - `PUT /v1/routes/{kind}/{ns}/{name}` with a whole HTTPRoute or TrafficSplit (JSON or YAML)
//!   creates or replaces an API-managed object (it shadows a file object with the same key).
//! - `DELETE /v1/routes/{kind}/{ns}/{name}` removes an API-managed object.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

use crate::Error;
use crate::hub::Hub;
use crate::state::RouteKind;
use crate::translate::{check_route, check_split, is_fatal};
use crate::world::{EndpointMeta, EndpointSet, ObjKey, ServiceInfo, slice_service};
use serin_mesh_api::objects::{
    HttpRoute, ReferenceGrant, ReferenceGrantSpec, StaticEndpoints, TrafficSplit,
    TrafficSplitV1Alpha2,
};

/// Body of the weights API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRequest {
    /// Backends and their new weights.
    pub backends: Vec<WeightEntry>,
}

/// One backend weight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightEntry {
    /// Backend Service name as written in the route.
    pub name: String,
    /// New relative weight, 0 to 1000000.
    pub weight: u32,
}

/// An API error: status and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

#[derive(Debug, Default, Clone)]
struct Objects {
    routes: Vec<HttpRoute>,
    grants: Vec<(ObjKey, ReferenceGrantSpec)>,
    splits: Vec<TrafficSplit>,
    services: Vec<(ObjKey, ServiceInfo)>,
    statics: Vec<Static>,
    slices: Vec<(ObjKey, String, EndpointSet)>,
}

/// One `StaticEndpoints`, checked.
#[derive(Debug, Clone)]
struct Static {
    key: ObjKey,
    endpoints: Vec<SocketAddr>,
    /// The workload's labels (`spec.labels`).
    labels: BTreeMap<String, String>,
    /// Each endpoint's own labels (`spec.endpointLabels`).
    endpoint_labels: BTreeMap<SocketAddr, BTreeMap<String, String>>,
}

#[derive(Debug)]
struct FileEntry {
    stamp: (Option<SystemTime>, u64),
    objects: Objects,
}

#[derive(Debug)]
struct Override {
    base: String,
    weights: BTreeMap<String, u32>,
}

#[derive(Debug, Default)]
struct Inner {
    files: BTreeMap<PathBuf, FileEntry>,
    api_routes: BTreeMap<ObjKey, HttpRoute>,
    api_splits: BTreeMap<ObjKey, TrafficSplit>,
    overrides: BTreeMap<(RouteKind, ObjKey), Override>,
}

/// See the module docs.
pub struct LocalSource {
    dir: PathBuf,
    hub: Arc<Hub>,
    inner: Mutex<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalSource {
    /// Reads the directory once (errors if it cannot be listed) and publishes the result.
    pub fn start(dir: &Path, hub: Arc<Hub>) -> Result<Arc<Self>, Error> {
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "--routes {}: not a directory (expected a directory of HTTPRoute/TrafficSplit/Service/StaticEndpoints YAML files)",
                dir.display()
            )));
        }
        let src = Arc::new(LocalSource {
            dir: dir.to_path_buf(),
            hub,
            inner: Mutex::new(Inner::default()),
        });
        src.reload(Instant::now())?;
        src.hub.set_ready();
        Ok(src)
    }

    /// Polls the directory for changes every `interval`, forever.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(e) = self.reload(Instant::now()) {
                tracing::error!(error = %e, "cannot read the routes directory; keeping the last state");
                self.hub.metrics.error("file", "Read");
            }
        }
    }

    /// Re-reads changed files and publishes if anything changed.
    pub fn reload(&self, received: Instant) -> Result<(), Error> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::Io {
            what: format!("listing {}", self.dir.display()),
            source: e,
        })?;
        let mut present = BTreeSet::new();
        let mut changed = false;
        let mut inner = lock(&self.inner);
        for entry in entries.flatten() {
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "yaml" | "yml" | "json") || !path.is_file() {
                continue;
            }
            present.insert(path.clone());
            let meta = entry.metadata().ok();
            let stamp = (
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.as_ref().map(|m| m.len()).unwrap_or(0),
            );
            if inner.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| parse_documents(&text));
            match parsed {
                Ok(objects) => {
                    tracing::info!(file = %path.display(), "loaded route file");
                    inner.files.insert(path, FileEntry { stamp, objects });
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "route file rejected; its previous content stays in force");
                    self.hub.metrics.error("file", "Parse");
                    // Remember the stamp so one bad save is reported once, not every poll.
                    let objects = inner
                        .files
                        .get(&path)
                        .map(|f| f.objects.clone())
                        .unwrap_or_default();
                    inner.files.insert(path, FileEntry { stamp, objects });
                }
            }
        }
        let before = inner.files.len();
        inner.files.retain(|p, _| present.contains(p));
        changed |= inner.files.len() != before;
        if changed {
            self.publish(&mut inner, received);
        }
        Ok(())
    }

    fn merged(inner: &Inner) -> (BTreeMap<ObjKey, HttpRoute>, BTreeMap<ObjKey, TrafficSplit>) {
        let mut routes = BTreeMap::new();
        let mut splits = BTreeMap::new();
        for f in inner.files.values() {
            for r in &f.objects.routes {
                routes.insert(ObjKey::of(r), r.clone());
            }
            for s in &f.objects.splits {
                splits.insert(ObjKey::of(s), s.clone());
            }
        }
        routes.extend(inner.api_routes.clone());
        splits.extend(inner.api_splits.clone());
        (routes, splits)
    }

    fn publish(&self, inner: &mut Inner, received: Instant) {
        let (mut routes, mut splits) = Self::merged(inner);
        // Drop overrides whose object changed underneath (a deliberate edit wins).
        inner.overrides.retain(|(kind, key), o| match kind {
            RouteKind::HttpRoute => routes
                .get(key)
                .is_some_and(|r| fingerprint(&r.spec) == o.base),
            RouteKind::TrafficSplit => splits
                .get(key)
                .is_some_and(|s| fingerprint(&s.spec) == o.base),
        });
        for ((kind, key), o) in &inner.overrides {
            match kind {
                RouteKind::HttpRoute => {
                    if let Some(r) = routes.get_mut(key) {
                        apply_route_weights(r, &o.weights);
                    }
                }
                RouteKind::TrafficSplit => {
                    if let Some(s) = splits.get_mut(key) {
                        apply_split_weights(s, &o.weights);
                    }
                }
            }
        }
        let mut services = BTreeMap::new();
        let mut grants = BTreeMap::new();
        let mut endpoints: BTreeMap<ObjKey, BTreeMap<String, EndpointSet>> = BTreeMap::new();
        for f in inner.files.values() {
            for (key, svc) in &f.objects.services {
                services.insert(key.clone(), svc.clone());
            }
            for (key, grant) in &f.objects.grants {
                grants.insert(key.clone(), grant.clone());
            }
        }
        let mut labelled: BTreeMap<SocketAddr, Option<BTreeMap<String, String>>> = BTreeMap::new();
        for f in inner.files.values() {
            for st in &f.objects.statics {
                services.entry(st.key.clone()).or_default().labels = st.labels.clone();
                endpoints.entry(st.key.clone()).or_default().insert(
                    format!("static/{}", st.key.name),
                    EndpointSet::Static(st.endpoints.clone()),
                );
                for (addr, l) in &st.endpoint_labels {
                    match labelled.get(addr) {
                        Some(Some(seen)) if seen != l => {
                            tracing::warn!(endpoint = %addr, object = %st.key, "endpoint labelled differently by two StaticEndpoints; its series get no endpoint labels");
                            labelled.insert(*addr, None);
                        }
                        Some(_) => {}
                        None => {
                            labelled.insert(*addr, Some(l.clone()));
                        }
                    }
                }
            }
            for (svc, slice, set) in &f.objects.slices {
                endpoints
                    .entry(svc.clone())
                    .or_default()
                    .insert(slice.clone(), set.clone());
            }
        }
        let meta = EndpointMeta {
            by_addr: labelled
                .into_iter()
                .filter_map(|(a, l)| Some((a, l?)))
                .collect(),
            by_ip: BTreeMap::new(),
        };
        self.hub.update(received, |state| {
            state.set_services(services);
            state.set_endpoints(endpoints);
            state.set_endpoint_meta(meta);
            state.set_grants(grants);
            state.set_routes(routes.into_values());
            state.set_splits(splits.into_values());
        });
    }

    /// Sets backend weights on a route object (see the module docs).
    pub fn set_weights(
        &self,
        kind: RouteKind,
        key: &ObjKey,
        req: &WeightsRequest,
        received: Instant,
    ) -> Result<(), ApiError> {
        let mut inner = lock(&self.inner);
        let (routes, splits) = Self::merged(&inner);
        let mut weights = BTreeMap::new();
        for (i, b) in req.backends.iter().enumerate() {
            if b.weight > 1_000_000 {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "backends[{i}].weight: {} is out of range; accepted: 0 to 1000000",
                        b.weight
                    ),
                ));
            }
            if weights.insert(b.name.clone(), b.weight).is_some() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("backends[{i}].name: {:?} is listed twice", b.name),
                ));
            }
        }
        if weights.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "backends: list at least one backend",
            ));
        }
        let not_found =
            || ApiError::new(StatusCode::NOT_FOUND, format!("no {} {key}", kind.kind()));
        let base = match kind {
            RouteKind::HttpRoute => {
                let r = routes.get(key).ok_or_else(not_found)?;
                let known: BTreeSet<&str> = r
                    .spec
                    .rules
                    .iter()
                    .flat_map(|rule| rule.backend_refs.iter().map(|b| b.name.as_str()))
                    .collect();
                unknown_check(&weights, &known)?;
                let all = previous(&inner, kind, key, &weights);
                if !r.spec.rules.iter().any(|rule| {
                    all.keys()
                        .all(|n| rule.backend_refs.iter().any(|b| &b.name == n))
                }) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "backends: no rule lists all of {:?}; weights apply to the rules that list every named backend",
                            all.keys().collect::<Vec<_>>()
                        ),
                    ));
                }
                let mut r2 = r.clone();
                apply_route_weights(&mut r2, &previous(&inner, kind, key, &weights));
                problems_check(&check_route(&r2))?;
                // A spec may zero every weight of a rule (Gateway API: its requests get 500s);
                // through this API, which steers a rollout, that is a mistake, not a wish.
                if let Some(ri) = r2.spec.rules.iter().position(|rule| {
                    !rule.backend_refs.is_empty()
                        && rule.backend_refs.iter().all(|b| b.weight == Some(0))
                }) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "backends: every weight is 0 in spec.rules[{ri}], so its requests would be answered 500; give at least one backend a weight above 0"
                        ),
                    ));
                }
                fingerprint(&r.spec)
            }
            RouteKind::TrafficSplit => {
                let s = splits.get(key).ok_or_else(not_found)?;
                let known: BTreeSet<&str> =
                    s.spec.backends.iter().map(|b| b.service.as_str()).collect();
                unknown_check(&weights, &known)?;
                let mut s2 = s.clone();
                apply_split_weights(&mut s2, &previous(&inner, kind, key, &weights));
                problems_check(&check_split(&s2))?;
                fingerprint(&s.spec)
            }
        };
        let merged = previous(&inner, kind, key, &weights);
        inner.overrides.insert(
            (kind, key.clone()),
            Override {
                base,
                weights: merged,
            },
        );
        tracing::info!(kind = kind.kind(), object = %key, weights = ?weights, "weights set through the API");
        self.publish(&mut inner, received);
        Ok(())
    }

    /// Creates or replaces an API-managed object from a JSON or YAML body.
    pub fn put_object(
        &self,
        kind: RouteKind,
        key: &ObjKey,
        body: &[u8],
        received: Instant,
    ) -> Result<(), ApiError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "body: not UTF-8"))?;
        let objects = parse_documents(text)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body: {e}")))?;
        let bad_key = |got: ObjKey| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("metadata: the object is {got} but the path names {key}"),
            )
        };
        let mut inner = lock(&self.inner);
        match kind {
            RouteKind::HttpRoute => {
                let [mut r] = <[HttpRoute; 1]>::try_from(objects.routes).map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "body: expected exactly one HTTPRoute",
                    )
                })?;
                fill_key(&mut r.metadata, key);
                if ObjKey::of(&r) != *key {
                    return Err(bad_key(ObjKey::of(&r)));
                }
                problems_check(&check_route(&r))?;
                inner.api_routes.insert(key.clone(), r);
            }
            RouteKind::TrafficSplit => {
                let [mut s] = <[TrafficSplit; 1]>::try_from(objects.splits).map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "body: expected exactly one TrafficSplit",
                    )
                })?;
                fill_key(&mut s.metadata, key);
                if ObjKey::of(&s) != *key {
                    return Err(bad_key(ObjKey::of(&s)));
                }
                problems_check(&check_split(&s))?;
                inner.api_splits.insert(key.clone(), s);
            }
        }
        inner.overrides.remove(&(kind, key.clone()));
        self.publish(&mut inner, received);
        Ok(())
    }

    /// Deletes an API-managed object.
    pub fn delete_object(
        &self,
        kind: RouteKind,
        key: &ObjKey,
        received: Instant,
    ) -> Result<(), ApiError> {
        let mut inner = lock(&self.inner);
        let removed = match kind {
            RouteKind::HttpRoute => inner.api_routes.remove(key).is_some(),
            RouteKind::TrafficSplit => inner.api_splits.remove(key).is_some(),
        };
        if !removed {
            let (routes, splits) = Self::merged(&inner);
            let in_files = match kind {
                RouteKind::HttpRoute => routes.contains_key(key),
                RouteKind::TrafficSplit => splits.contains_key(key),
            };
            return Err(if in_files {
                ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "{} {key} comes from a file in {}; remove it there",
                        kind.kind(),
                        self.dir.display()
                    ),
                )
            } else {
                ApiError::new(StatusCode::NOT_FOUND, format!("no {} {key}", kind.kind()))
            });
        }
        inner.overrides.remove(&(kind, key.clone()));
        self.publish(&mut inner, received);
        Ok(())
    }
}

fn fill_key(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &ObjKey) {
    meta.name.get_or_insert_with(|| key.name.clone());
    meta.namespace.get_or_insert_with(|| key.namespace.clone());
}

/// Earlier overrides of the same object, updated with `new`.
fn previous(
    inner: &Inner,
    kind: RouteKind,
    key: &ObjKey,
    new: &BTreeMap<String, u32>,
) -> BTreeMap<String, u32> {
    let mut merged = inner
        .overrides
        .get(&(kind, key.clone()))
        .map(|o| o.weights.clone())
        .unwrap_or_default();
    merged.extend(new.iter().map(|(k, v)| (k.clone(), *v)));
    merged
}

fn unknown_check(weights: &BTreeMap<String, u32>, known: &BTreeSet<&str>) -> Result<(), ApiError> {
    for name in weights.keys() {
        if !known.contains(name.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "backends: {name:?} is not a backend of this route; its backends are {:?}",
                    known
                ),
            ));
        }
    }
    Ok(())
}

fn problems_check(problems: &[crate::translate::Problem]) -> Result<(), ApiError> {
    if is_fatal(problems) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    Ok(())
}

fn fingerprint<T: serde::Serialize>(spec: &T) -> String {
    serde_json::to_string(spec).unwrap_or_default()
}

/// Applies to the rules that list every named backend (the weighted split rules); a rule that
/// pins a subset, like a header match sending insiders to the canary only, is left alone.
fn apply_route_weights(r: &mut HttpRoute, weights: &BTreeMap<String, u32>) {
    for rule in &mut r.spec.rules {
        let lists_all = weights
            .keys()
            .all(|name| rule.backend_refs.iter().any(|b| &b.name == name));
        if !lists_all {
            continue;
        }
        for b in &mut rule.backend_refs {
            if let Some(w) = weights.get(&b.name) {
                b.weight = Some(i32::try_from(*w).unwrap_or(i32::MAX));
            }
        }
    }
}

fn apply_split_weights(s: &mut TrafficSplit, weights: &BTreeMap<String, u32>) {
    let quantities = s.spec.backends.iter().any(|b| b.weight.is_quantity());
    for b in &mut s.spec.backends {
        if let Some(w) = weights.get(&b.service) {
            b.weight = if quantities {
                // Keep one unit system: a split written in quantities gets whole units.
                serin_mesh_api::objects::SplitWeight::Quantity(w.to_string())
            } else {
                serin_mesh_api::objects::SplitWeight::Int(i64::from(*w))
            };
        }
    }
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Parses a multi-document YAML (or JSON) text into objects. The error names the document
/// (1-based) and what is wrong.
fn parse_documents(text: &str) -> Result<Objects, String> {
    let mut out = Objects::default();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value =
            serde_norway::Value::deserialize(doc).map_err(|e| format!("document {n}: {e}"))?;
        if value.is_null() {
            continue;
        }
        let tm: TypeMeta =
            serde_norway::from_value(value.clone()).map_err(|e| format!("document {n}: {e}"))?;
        let err =
            |e: serde_norway::Error| format!("document {n} ({} {}): {e}", tm.api_version, tm.kind);
        match (tm.api_version.as_str(), tm.kind.as_str()) {
            ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => {
                out.routes
                    .push(serde_norway::from_value(value).map_err(err)?);
            }
            ("split.smi-spec.io/v1alpha4" | "split.smi-spec.io/v1alpha3", "TrafficSplit") => {
                out.splits
                    .push(serde_norway::from_value(value).map_err(err)?);
            }
            ("split.smi-spec.io/v1alpha2" | "split.smi-spec.io/v1alpha1", "TrafficSplit") => {
                let old: TrafficSplitV1Alpha2 = serde_norway::from_value(value).map_err(err)?;
                out.splits.push(old.into());
            }
            ("v1", "Service") => {
                let svc: Service = serde_norway::from_value(value).map_err(err)?;
                out.services
                    .push((ObjKey::of(&svc), ServiceInfo::from_k8s(&svc)));
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                let slice: EndpointSlice = serde_norway::from_value(value).map_err(err)?;
                let svc = slice_service(&slice).ok_or_else(|| {
                    format!("document {n} (EndpointSlice): metadata.labels must name its Service with kubernetes.io/service-name")
                })?;
                let name = slice.metadata.name.clone().unwrap_or_default();
                out.slices
                    .push((svc, name, EndpointSet::from_slice(&slice)));
            }
            (
                "gateway.networking.k8s.io/v1beta1" | "gateway.networking.k8s.io/v1",
                "ReferenceGrant",
            ) => {
                let g: ReferenceGrant = serde_norway::from_value(value).map_err(err)?;
                out.grants.push((ObjKey::of(&g), g.spec));
            }
            ("serin.dev/v1beta1", "StaticEndpoints") => {
                let se: StaticEndpoints = serde_norway::from_value(value).map_err(err)?;
                let key = ObjKey::new(
                    se.metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    se.metadata.name.clone().unwrap_or_default(),
                );
                if key.name.is_empty() {
                    return Err(format!(
                        "document {n} (StaticEndpoints): metadata.name is required"
                    ));
                }
                let mut addrs = Vec::new();
                for (j, e) in se.spec.endpoints.iter().enumerate() {
                    addrs.push(e.parse::<SocketAddr>().map_err(|_| {
                        format!("document {n} (StaticEndpoints {key}): spec.endpoints[{j}]: {e:?} is not IP:PORT (e.g. 127.0.0.1:19001)")
                    })?);
                }
                let label_names = |field: &str, l: &BTreeMap<String, String>| match l.keys().find(
                    |name| !serin_mesh_api::table::is_label_name(name) || *name == "namespace",
                ) {
                    Some(name) => Err(format!(
                        "document {n} (StaticEndpoints {key}): {field}: {name:?} is not a label name proxies can export as dst_{name}; accepted: [a-zA-Z_][a-zA-Z0-9_]* other than `namespace` (the Service's own)"
                    )),
                    None => Ok(()),
                };
                label_names("spec.labels", &se.spec.labels)?;
                let mut endpoint_labels = BTreeMap::new();
                for (e, l) in &se.spec.endpoint_labels {
                    let field = format!("spec.endpointLabels[{e:?}]");
                    let addr = e
                        .parse::<SocketAddr>()
                        .ok()
                        .filter(|a| addrs.contains(a))
                        .ok_or_else(|| {
                            format!("document {n} (StaticEndpoints {key}): {field}: not one of spec.endpoints; label only listed endpoints, keyed as IP:PORT")
                        })?;
                    label_names(&field, l)?;
                    endpoint_labels.insert(addr, l.clone());
                }
                out.statics.push(Static {
                    key,
                    endpoints: addrs,
                    labels: se.spec.labels,
                    endpoint_labels,
                });
            }
            (api, kind) => {
                return Err(format!(
                    "document {n}: unsupported apiVersion/kind {api:?}/{kind:?}; accepted: gateway.networking.k8s.io/v1 HTTPRoute, gateway.networking.k8s.io/v1beta1 ReferenceGrant, split.smi-spec.io/v1alpha2..v1alpha4 TrafficSplit, v1 Service, discovery.k8s.io/v1 EndpointSlice, serin.dev/v1beta1 StaticEndpoints"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_kind_parses_from_one_file() {
        let objs = parse_documents(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.1.0.1]}]
---
apiVersion: serin.dev/v1beta1
kind: StaticEndpoints
metadata: {name: podinfo-primary}
spec: {endpoints: ["127.0.0.1:19001"]}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: s}
spec: {service: podinfo, backends: [{service: podinfo-primary, weight: 100}]}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-edge, namespace: demo}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: edge}]
  to: [{group: "", kind: Service, name: web}]
"#,
        )
        .unwrap();
        assert_eq!(objs.grants.len(), 1);
        assert_eq!(objs.grants[0].0, ObjKey::new("demo", "from-edge"));
        assert!(objs.grants[0].1.lets_routes_reach("edge", "web"));
        assert!(!objs.grants[0].1.lets_routes_reach("edge", "api"));
        assert_eq!(objs.services.len(), 1);
        assert_eq!(objs.slices.len(), 1);
        assert_eq!(
            objs.statics[0].key,
            ObjKey::new("default", "podinfo-primary")
        );
        assert_eq!(objs.splits.len(), 1);
    }

    #[test]
    fn static_endpoint_labels_name_the_workload_and_must_be_label_names() {
        let objs = parse_documents(
            "apiVersion: serin.dev/v1beta1\nkind: StaticEndpoints\nmetadata: {name: a}\nspec: {endpoints: [127.0.0.1:1], labels: {deployment: a-primary}}\n",
        )
        .unwrap();
        assert_eq!(objs.statics[0].labels["deployment"], "a-primary");
        for bad in ["pod-name", "namespace"] {
            let e = parse_documents(&format!(
                "apiVersion: serin.dev/v1beta1\nkind: StaticEndpoints\nmetadata: {{name: a}}\nspec: {{endpoints: [127.0.0.1:1], labels: {{{bad}: x}}}}\n"
            ))
            .unwrap_err();
            assert!(e.contains("spec.labels") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn endpoint_labels_must_key_a_listed_endpoint_with_label_names() {
        let doc = |labels: &str| {
            format!(
                "apiVersion: serin.dev/v1beta1\nkind: StaticEndpoints\nmetadata: {{name: a}}\nspec: {{endpoints: [127.0.0.1:1], endpointLabels: {labels}}}\n"
            )
        };
        let objs =
            parse_documents(&doc("{127.0.0.1:1: {pod: a-0, pod_template_hash: h}}")).unwrap();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(objs.statics[0].endpoint_labels[&addr]["pod"], "a-0");
        for (labels, needle) in [
            ("{127.0.0.1:2: {pod: a-0}}", "not one of spec.endpoints"),
            ("{a-0: {pod: a-0}}", "not one of spec.endpoints"),
            (
                "{127.0.0.1:1: {pod-name: a-0}}",
                "\"pod-name\" is not a label name",
            ),
            (
                "{127.0.0.1:1: {namespace: x}}",
                "\"namespace\" is not a label name",
            ),
        ] {
            let e = parse_documents(&doc(labels)).unwrap_err();
            assert!(
                e.contains("spec.endpointLabels[") && e.contains(needle),
                "{e}"
            );
        }
    }

    #[test]
    fn a_bad_document_is_named_in_the_error() {
        let e = parse_documents(
            "apiVersion: serin.dev/v1beta1\nkind: StaticEndpoints\nmetadata: {name: a}\nspec: {endpoints: [nope]}\n",
        )
        .unwrap_err();
        assert!(e.contains("spec.endpoints[0]"), "{e}");
        let e = parse_documents("apiVersion: v9\nkind: Pod\n").unwrap_err();
        assert!(e.contains("unsupported apiVersion/kind"), "{e}");
        let e = parse_documents("---\n- [unclosed").unwrap_err();
        assert!(e.contains("document 1"), "{e}");
    }
}

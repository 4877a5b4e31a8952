//! Serin's route objects (HTTPRoutes, SMI TrafficSplits) as the controller's metadata-only
//! watches see them, and what Serin last applied to each.
//!
//! - An unchanged route is not applied again: when the object Serin would apply hashes as the
//!   last one it applied and the watched copy's `metadata.generation` is not past the one that
//!   apply returned (nobody changed its spec since), the apply is skipped. After a restart the
//!   watched copy's `serin.dev/applied` stamp stands in for the memory.
//! - A route changed (or deleted) by someone else wakes the Canary that owns it
//!   ([`RouteWatch::drifted`], the watch's mapper), and its reconcile puts back what Serin last
//!   applied ([`RouteWatch::restore`]) instead of leaving the wrong weights until the next step.
//!
//! The watches are metadata-only (generation, labels, annotations, owners: all this needs) and
//! selected by `app.kubernetes.io/managed-by=serin`, so they hold Serin's routes and nothing
//! else. A cluster without the Gateway API or SMI CRDs answers their lists with 404; those
//! watches then retry slowly (up to every 5 minutes) and every route is applied as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta, Patch, PatchParams,
};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::Value;
use serin_api::Canary;
use serin_mesh_api::objects::{GATEWAY_GROUP, SMI_SPLIT_GROUP};

use super::workloads::{APPLIED_ANNOTATION, short_hash};
use super::{FIELD_MANAGER, kube_error};
use serin_controller::adapters::AdapterError;

/// The route kinds Serin writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Gateway API HTTPRoute.
    HttpRoute,
    /// SMI TrafficSplit.
    TrafficSplit,
}

impl RouteKind {
    /// The API resource the watch lists (HTTPRoute v1; TrafficSplit v1alpha2, the version
    /// Flagger, OSM and Serin's `smi` default write).
    pub fn watched(self) -> ApiResource {
        let gvk = match self {
            RouteKind::HttpRoute => GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "HTTPRoute"),
            RouteKind::TrafficSplit => {
                GroupVersionKind::gvk(SMI_SPLIT_GROUP, "v1alpha2", "TrafficSplit")
            }
        };
        ApiResource::from_gvk(&gvk)
    }
}

/// A watched route's metadata.
pub type RouteMeta = PartialObjectMeta<DynamicObject>;

type Key = (RouteKind, String, String);

/// What Serin last applied to one route.
#[derive(Debug, Clone)]
struct Applied {
    hash: String,
    generation: i64,
    object: Value,
    /// The watch saw it deleted (a store without it may only lag a create).
    deleted: bool,
}

/// The route watches' stores and what Serin last applied (shared by the adapters, the watch
/// mappers and the reconcile).
#[derive(Clone)]
pub struct RouteWatch {
    httproutes: Store<RouteMeta>,
    trafficsplits: Store<RouteMeta>,
    applied: Arc<Mutex<HashMap<Key, Applied>>>,
}

/// The writers of a [`RouteWatch`]'s stores, fed by the controller's watch streams.
pub struct RouteWriters {
    /// HTTPRoutes.
    pub httproutes: reflector::store::Writer<RouteMeta>,
    /// TrafficSplits.
    pub trafficsplits: reflector::store::Writer<RouteMeta>,
}

impl RouteWatch {
    /// Empty stores and their writers.
    pub fn new() -> (Self, RouteWriters) {
        let h = reflector::store::Writer::new(RouteKind::HttpRoute.watched());
        let t = reflector::store::Writer::new(RouteKind::TrafficSplit.watched());
        (
            Self {
                httproutes: h.as_reader(),
                trafficsplits: t.as_reader(),
                applied: Arc::default(),
            },
            RouteWriters {
                httproutes: h,
                trafficsplits: t,
            },
        )
    }

    fn store(&self, kind: RouteKind) -> &Store<RouteMeta> {
        match kind {
            RouteKind::HttpRoute => &self.httproutes,
            RouteKind::TrafficSplit => &self.trafficsplits,
        }
    }

    /// The watched copy, once the watch has listed (`None` before, or when it is absent).
    fn watched(&self, kind: RouteKind, ns: &str, name: &str) -> Option<Option<Arc<RouteMeta>>> {
        let store = self.store(kind);
        // A watch that has not listed (CRD missing, no permission yet) knows nothing.
        store.wait_until_ready().now_or_never()?.ok()?;
        let r = ObjectRef::new_with(name, kind.watched()).within(ns);
        Some(store.get(&r))
    }

    /// Applies `object` (the route `kind` `ns/name` as Serin wants it) with server-side apply,
    /// unless the watched copy is already exactly what Serin applied last.
    pub async fn apply(
        &self,
        client: &Client,
        kind: RouteKind,
        ns: &str,
        name: &str,
        mut object: Value,
    ) -> Result<(), AdapterError> {
        let hash = short_hash(object.to_string().as_bytes());
        object["metadata"]["annotations"][APPLIED_ANNOTATION] = Value::String(hash.clone());
        let key = (kind, ns.to_string(), name.to_string());
        if self.unchanged(&key, &hash, &object) {
            return Ok(());
        }
        apply(client, kind, ns, name, &object).await.map(|stored| {
            self.remember(key, hash, stored.metadata.generation, object);
        })
    }

    fn unchanged(&self, key: &Key, hash: &str, object: &Value) -> bool {
        let Some(Some(watched)) = self.watched(key.0, &key.1, &key.2) else {
            return false;
        };
        let generation = watched.metadata.generation.unwrap_or_default();
        let Ok(mut applied) = self.applied.lock() else {
            return false;
        };
        match applied.get(key) {
            // Ours, and nobody wrote its spec after us (a lagging watch shows an older one).
            Some(a) => a.hash == hash && generation <= a.generation,
            // Not applied by this replica yet: the stamp says what the last Serin applied.
            None => {
                let stamped = watched.annotations().get(APPLIED_ANNOTATION);
                let same = stamped.is_some_and(|s| s == hash);
                if same {
                    applied.insert(
                        key.clone(),
                        Applied {
                            hash: hash.to_string(),
                            generation,
                            object: object.clone(),
                            deleted: false,
                        },
                    );
                }
                same
            }
        }
    }

    fn remember(&self, key: Key, hash: String, generation: Option<i64>, object: Value) {
        if let Ok(mut m) = self.applied.lock() {
            m.insert(
                key,
                Applied {
                    hash,
                    generation: generation.unwrap_or_default(),
                    object,
                    deleted: false,
                },
            );
        }
    }

    /// Forgets a route Serin deleted.
    pub fn forget(&self, kind: RouteKind, ns: &str, name: &str) {
        if let Ok(mut m) = self.applied.lock() {
            m.remove(&(kind, ns.to_string(), name.to_string()));
        }
    }

    /// Whether someone else changed (a newer generation) or deleted the route Serin applied.
    pub fn drifted(&self, kind: RouteKind, ns: &str, name: &str) -> bool {
        let Some(watched) = self.watched(kind, ns, name) else {
            return false;
        };
        let Some((generation, deleted)) = self.applied.lock().ok().and_then(|m| {
            m.get(&(kind, ns.to_string(), name.to_string()))
                .map(|a| (a.generation, a.deleted))
        }) else {
            return false;
        };
        deleted || watched.is_some_and(|w| w.metadata.generation.unwrap_or_default() > generation)
    }

    /// The watch's event about `route` (after its store took it in): a route Serin applied that
    /// the store no longer holds was deleted. Says whether the route drifted from what Serin
    /// applied, so its Canary must be woken.
    pub fn observed(&self, kind: RouteKind, route: &RouteMeta) -> bool {
        let (ns, name) = (route.namespace().unwrap_or_default(), route.name_any());
        if let Some(None) = self.watched(kind, &ns, &name)
            && let Ok(mut m) = self.applied.lock()
            && let Some(a) = m.get_mut(&(kind, ns.clone(), name.clone()))
        {
            a.deleted = true;
        }
        self.drifted(kind, &ns, &name)
    }

    /// The Canary a route event wakes: the route's owner, only when someone else changed or
    /// deleted the route (Serin's own applies wake nobody).
    pub fn canary_to_wake(&self, kind: RouteKind, route: &RouteMeta) -> Option<ObjectRef<Canary>> {
        if !self.observed(kind, route) {
            return None;
        }
        let ns = route.namespace().unwrap_or_default();
        route
            .owner_references()
            .iter()
            .find(|o| {
                o.controller == Some(true)
                    && o.kind == "Canary"
                    && o.api_version == serin_api::API_VERSION
            })
            .map(|o| ObjectRef::new(&o.name).within(&ns))
    }

    /// Puts back what Serin last applied to a route someone else changed or deleted; says
    /// whether it did.
    pub async fn restore(
        &self,
        client: &Client,
        kind: RouteKind,
        ns: &str,
        name: &str,
    ) -> Result<bool, AdapterError> {
        if !self.drifted(kind, ns, name) {
            return Ok(false);
        }
        let key = (kind, ns.to_string(), name.to_string());
        let Some(last) = self.applied.lock().ok().and_then(|m| m.get(&key).cloned()) else {
            return Ok(false);
        };
        tracing::info!(route = name, ns, kind = ?kind, "the route was changed by someone else; restoring it");
        let stored = apply(client, kind, ns, name, &last.object).await?;
        self.remember(key, last.hash, stored.metadata.generation, last.object);
        Ok(true)
    }
}

/// Server-side apply of a route object at its own `apiVersion`.
async fn apply(
    client: &Client,
    kind: RouteKind,
    ns: &str,
    name: &str,
    object: &Value,
) -> Result<DynamicObject, AdapterError> {
    let (kind_name, what) = match kind {
        RouteKind::HttpRoute => ("HTTPRoute", "httproute"),
        RouteKind::TrafficSplit => ("TrafficSplit", "trafficsplit"),
    };
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind_name));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|e| kube_error(e, format!("applying {what} {ns}/{name}")))
}

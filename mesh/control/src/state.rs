//! The control plane's state machine: objects as received, their problems, the effective
//! [`World`] (the last valid version of each route object), and snapshot versions.
//!
//! Invariant: an object that turns invalid never removes or blanks what it routed before; its
//! last valid version stays in force (and the problem is reported) until it is fixed or deleted.

use std::collections::{BTreeMap, BTreeSet};

use crate::translate::{Problem, check_route, check_split, is_fatal};
use crate::world::{EndpointSet, ObjKey, ServiceInfo, World};
use serin_mesh_api::objects::{
    HttpRoute, HttpRouteSpec, ReferenceGrantSpec, TrafficSplit, TrafficSplitSpec,
};

pub use serin_mesh_api::status::{RouteInfo, RouteKind};

/// Problems that appeared on an object since the last report (for logs and metrics).
#[derive(Debug, Clone)]
pub struct Report {
    /// Object kind.
    pub kind: RouteKind,
    /// Object key.
    pub key: ObjKey,
    /// Its problems (non-empty).
    pub problems: Vec<Problem>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct State {
    raw_routes: BTreeMap<ObjKey, HttpRoute>,
    raw_splits: BTreeMap<ObjKey, TrafficSplit>,
    problems: BTreeMap<(RouteKind, ObjKey), Vec<Problem>>,
    world: World,
    /// Version at which each route object's effective spec last changed.
    versions: BTreeMap<(RouteKind, ObjKey), u64>,
    pending: BTreeSet<(RouteKind, ObjKey)>,
    reports: Vec<Report>,
    version: u64,
    dirty: bool,
}

impl State {
    /// The latest committed version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The effective world.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Routes as last received (possibly invalid).
    pub fn raw_routes(&self) -> &BTreeMap<ObjKey, HttpRoute> {
        &self.raw_routes
    }

    /// Problems of an object, as last checked.
    pub fn problems(&self, kind: RouteKind, key: &ObjKey) -> &[Problem] {
        self.problems
            .get(&(kind, key.clone()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Replaces every Service.
    pub fn set_services(&mut self, services: BTreeMap<ObjKey, ServiceInfo>) {
        if self.world.services != services {
            self.world.services = services;
            self.dirty = true;
        }
    }

    /// Replaces every endpoint set.
    pub fn set_endpoints(&mut self, endpoints: BTreeMap<ObjKey, BTreeMap<String, EndpointSet>>) {
        if self.world.endpoints != endpoints {
            self.world.endpoints = endpoints;
            self.dirty = true;
        }
    }

    /// Replaces the per-endpoint metric labels.
    pub fn set_endpoint_meta(&mut self, meta: crate::world::EndpointMeta) {
        if self.world.endpoint_meta != meta {
            self.world.endpoint_meta = meta;
            self.dirty = true;
        }
    }

    /// Replaces every ReferenceGrant.
    pub fn set_grants(&mut self, grants: BTreeMap<ObjKey, ReferenceGrantSpec>) {
        if self.world.grants != grants {
            self.world.grants = grants;
            self.dirty = true;
        }
    }

    /// Replaces every HTTPRoute.
    pub fn set_routes(&mut self, routes: impl IntoIterator<Item = HttpRoute>) {
        let incoming: BTreeMap<ObjKey, HttpRoute> =
            routes.into_iter().map(|r| (ObjKey::of(&r), r)).collect();
        let mut effective = BTreeMap::new();
        for (key, route) in &incoming {
            let problems = check_route(route);
            let usable = !is_fatal(&problems);
            self.note_problems(RouteKind::HttpRoute, key, problems);
            if usable {
                effective.insert(key.clone(), route.clone());
            } else if let Some(prev) = self.world.routes.get(key) {
                effective.insert(key.clone(), prev.clone());
            }
        }
        self.clear_gone(RouteKind::HttpRoute, &incoming);
        self.raw_routes = incoming;
        let old = std::mem::take(&mut self.world.routes);
        for key in old.keys().chain(effective.keys()) {
            let a = old.get(key).map(route_identity);
            let b = effective.get(key).map(route_identity);
            if a != b {
                self.pending.insert((RouteKind::HttpRoute, key.clone()));
                self.dirty = true;
            }
        }
        self.world.routes = effective;
    }

    /// Replaces every TrafficSplit.
    pub fn set_splits(&mut self, splits: impl IntoIterator<Item = TrafficSplit>) {
        let incoming: BTreeMap<ObjKey, TrafficSplit> =
            splits.into_iter().map(|s| (ObjKey::of(&s), s)).collect();
        let mut effective = BTreeMap::new();
        for (key, split) in &incoming {
            let problems = check_split(split);
            let usable = !is_fatal(&problems);
            self.note_problems(RouteKind::TrafficSplit, key, problems);
            if usable {
                effective.insert(key.clone(), split.clone());
            } else if let Some(prev) = self.world.splits.get(key) {
                effective.insert(key.clone(), prev.clone());
            }
        }
        self.clear_gone(RouteKind::TrafficSplit, &incoming);
        self.raw_splits = incoming;
        let old = std::mem::take(&mut self.world.splits);
        for key in old.keys().chain(effective.keys()) {
            let a = old.get(key).map(split_identity);
            let b = effective.get(key).map(split_identity);
            if a != b {
                self.pending.insert((RouteKind::TrafficSplit, key.clone()));
                self.dirty = true;
            }
        }
        self.world.splits = effective;
    }

    fn clear_gone<T>(&mut self, kind: RouteKind, incoming: &BTreeMap<ObjKey, T>) {
        self.problems
            .retain(|(k, key), _| *k != kind || incoming.contains_key(key));
    }

    fn note_problems(&mut self, kind: RouteKind, key: &ObjKey, problems: Vec<Problem>) {
        let slot = (kind, key.clone());
        if self.problems.get(&slot) == Some(&problems) {
            return;
        }
        if problems.is_empty() {
            self.problems.remove(&slot);
        } else {
            self.reports.push(Report {
                kind,
                key: key.clone(),
                problems: problems.clone(),
            });
            self.problems.insert(slot, problems);
        }
    }

    /// Problems that appeared since the last call.
    pub fn take_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    /// If anything changed since the last commit, takes a new version and stamps it on the
    /// route objects that changed. Returns the new version.
    pub fn commit(&mut self) -> Option<u64> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        self.version += 1;
        for slot in std::mem::take(&mut self.pending) {
            let exists = match slot.0 {
                RouteKind::HttpRoute => self.world.routes.contains_key(&slot.1),
                RouteKind::TrafficSplit => self.world.splits.contains_key(&slot.1),
            };
            if exists {
                self.versions.insert(slot, self.version);
            } else {
                self.versions.remove(&slot);
            }
        }
        Some(self.version)
    }

    /// Every route object received (valid or not), with its status.
    pub fn route_infos(&self) -> Vec<RouteInfo> {
        let conflicts = crate::translate::split_conflicts(&self.world);
        let routes = self.raw_routes.keys().map(|k| (RouteKind::HttpRoute, k));
        let splits = self.raw_splits.keys().map(|k| (RouteKind::TrafficSplit, k));
        routes
            .chain(splits)
            .map(|(kind, key)| {
                let mut problems = self.problems(kind, key).to_vec();
                if kind == RouteKind::TrafficSplit
                    && let Some(c) = conflicts.get(key)
                {
                    problems.push(c.clone());
                }
                let valid = !is_fatal(&problems);
                // References that do not resolve now (a missing Service, a cross-namespace
                // backend without a grant) are reported too, after the verdict: the object is
                // valid and runs, but part of it sends requests nowhere.
                let references = match kind {
                    RouteKind::HttpRoute => self
                        .raw_routes
                        .get(key)
                        .map(|r| crate::translate::route_reference_problems(&self.world, r)),
                    RouteKind::TrafficSplit => self
                        .raw_splits
                        .get(key)
                        .map(|s| crate::translate::split_reference_problems(&self.world, key, s)),
                };
                problems.extend(references.unwrap_or_default());
                RouteInfo {
                    kind,
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    version: self
                        .versions
                        .get(&(kind, key.clone()))
                        .copied()
                        .unwrap_or(0),
                    valid,
                    problems: problems.into_iter().map(Problem::into_status).collect(),
                }
            })
            .collect()
    }
}

/// What makes two versions of a route the same for routing (status and resourceVersion churn
/// must not produce new snapshots).
fn route_identity(r: &HttpRoute) -> (&HttpRouteSpec, Option<&k8s_openapi::jiff::Timestamp>) {
    (
        &r.spec,
        r.metadata.creation_timestamp.as_ref().map(|t| &t.0),
    )
}

fn split_identity(s: &TrafficSplit) -> (&TrafficSplitSpec, Option<&k8s_openapi::jiff::Timestamp>) {
    (
        &s.spec,
        s.metadata.creation_timestamp.as_ref().map(|t| &t.0),
    )
}

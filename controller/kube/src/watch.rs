//! Which Canaries a change of a Deployment or DaemonSet concerns. The controller watches both
//! kinds once and maps each change to:
//! - the Canary that owns the object (a `-primary` copy), as `Controller::owns` would, and
//! - every Canary targeting the object whose status does not know its pod-template revision
//!   yet, so a new revision starts (or restarts) the analysis at once instead of at the next
//!   interval, and
//! - every Canary targeting the object that waits for its workloads to become ready (its pods'
//!   readiness reaches the controller as the workload's status), so the move it waited for
//!   happens as soon as the pods are ready, not at the next interval.
//!
//! The revisions seen are kept in [`TargetRevisions`], which the reconcile reads to tell the
//! driver that the target changed (see [`serin_controller::adapters::CanaryContext::target_changed`]).
//!
//! The watches feed reflector [`Stores`]: the adapters read targets, primaries and Services there
//! instead of GETting them, so a tick that changes nothing makes no API request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serin_api::{Canary, TargetKind};
use serin_core::Timestamp;

use super::config_watch::{ConfigWatch, ConfigWriters};
use super::route_watch::{RouteWatch, RouteWriters};
use super::status::engine_status;
use super::workloads::template_revision;

/// The pod-template revision last seen by the watch, per target (namespace, kind, name), and
/// the Canaries whose tracked configs changed since their last tick.
#[derive(Debug, Default)]
pub struct TargetRevisions(
    Mutex<HashMap<(String, TargetKind, String), String>>,
    Mutex<std::collections::HashSet<(String, String)>>,
);

impl TargetRevisions {
    /// Notes that a config `canary` tracks changed: its next tick observes at once.
    pub fn config_changed(&self, canary: &ObjectRef<Canary>) {
        if let Ok(mut m) = self.1.lock() {
            m.insert((
                canary.namespace.clone().unwrap_or_default(),
                canary.name.clone(),
            ));
        }
    }

    /// Remembers the revision of a target.
    pub fn seen(&self, namespace: &str, kind: TargetKind, name: &str, revision: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(
                (namespace.to_string(), kind, name.to_string()),
                revision.to_string(),
            );
        }
    }

    /// Whether the watch saw `canary`'s target at a revision its status does not know.
    pub fn changed_for(&self, canary: &Canary) -> bool {
        let ns = canary.namespace().unwrap_or_default();
        let t = &canary.spec.target_ref;
        let seen = self
            .0
            .lock()
            .ok()
            .and_then(|m| m.get(&(ns, t.kind, t.name.clone())).cloned());
        let config_changed = self
            .1
            .lock()
            .is_ok_and(|mut m| m.remove(&(ns_of(canary), canary.name_any())));
        seen.is_some_and(|rev| is_new_revision(canary, &rev)) || config_changed
    }
}

fn ns_of(canary: &Canary) -> String {
    canary.namespace().unwrap_or_default()
}

/// The Canaries whose target (as the watches hold it) references the ConfigMap (`secret`:
/// Secret) `namespace/name`.
pub fn canaries_tracking(
    canaries: &[Arc<Canary>],
    stores: &Stores,
    namespace: &str,
    name: &str,
    secret: bool,
) -> Vec<ObjectRef<Canary>> {
    canaries
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace))
        .filter(|c| {
            let t = &c.spec.target_ref;
            let template = match t.kind {
                TargetKind::Deployment => stores
                    .deployment(namespace, &t.name)
                    .and_then(|d| d.spec.as_ref().map(|s| s.template.clone())),
                TargetKind::DaemonSet => stores
                    .daemonset(namespace, &t.name)
                    .and_then(|d| d.spec.as_ref().map(|s| s.template.clone())),
                _ => None,
            };
            template.and_then(|t| t.spec).is_some_and(|spec| {
                let (cms, secrets, _) = super::workloads::referenced_configs(&spec);
                if secret {
                    secrets.contains(name)
                } else {
                    cms.contains(name)
                }
            })
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Whether `revision` is one the Canary's status has not taken in yet.
fn is_new_revision(canary: &Canary, revision: &str) -> bool {
    let status = engine_status(canary);
    // A Canary never initialized has its first tick due anyway.
    status.last_applied_spec.is_some()
        && status.last_applied_spec.as_deref() != Some(revision)
        && status.run.as_ref().is_none_or(|r| r.revision != revision)
}

/// Whether the Canary's stored status waits for its workloads to become ready (the engine's
/// [`serin_core::may_await_workload`], read from the status alone: a Canary woken for nothing
/// finds nothing to do, reading only the stores).
fn awaits(canary: &Canary) -> bool {
    serin_core::may_await_workload(&engine_status(canary))
}

/// The Canaries to reconcile after a change of the workload `(kind, namespace, name)` with
/// pod template `template` and owner references `owners`.
pub fn canaries_to_wake(
    canaries: &[Arc<Canary>],
    kind: TargetKind,
    namespace: &str,
    name: &str,
    owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    template: Option<&PodTemplateSpec>,
) -> Vec<ObjectRef<Canary>> {
    let mut wake: Vec<ObjectRef<Canary>> = owners
        .iter()
        .filter(|o| {
            o.controller == Some(true)
                && o.kind == "Canary"
                && o.api_version == serin_api::API_VERSION
        })
        .map(|o| ObjectRef::new(&o.name).within(namespace))
        .collect();
    let revision = template.map(template_revision);
    for c in canaries {
        let t = &c.spec.target_ref;
        let targets_it = t.kind == kind
            && t.name == name
            && c.namespace().as_deref() == Some(namespace)
            && c.meta().deletion_timestamp.is_none();
        let wanted = revision.as_deref().is_some_and(|r| is_new_revision(c, r)) || awaits(c);
        if targets_it && wanted && !wake.iter().any(|w| w.name == c.name_any()) {
            wake.push(ObjectRef::from_obj(c.as_ref()));
        }
    }
    wake
}

/// The Canary to wake when the endpoints of one of its Services change (an EndpointSlice of
/// Serin's `-canary`, `-primary` or apex Service: a pod became ready or stopped being ready):
/// the Service's owner, when it waits for its workloads. The slice names its Service in the
/// `kubernetes.io/service-name` label; the Service (from the watch) names its Canary owner.
pub fn canary_of_endpoints(
    canaries: &[Arc<Canary>],
    stores: &Stores,
    slice: &k8s_openapi::api::discovery::v1::EndpointSlice,
) -> Option<ObjectRef<Canary>> {
    let ns = slice.namespace()?;
    let service = slice.labels().get("kubernetes.io/service-name")?;
    let svc = stores.service(&ns, service)?;
    let owner = svc.owner_references().iter().find(|o| {
        o.controller == Some(true) && o.kind == "Canary" && o.api_version == serin_api::API_VERSION
    })?;
    canaries
        .iter()
        .find(|c| c.namespace().as_deref() == Some(ns.as_str()) && c.name_any() == owner.name)
        .filter(|c| awaits(c))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
}

/// What the controller's watches hold: every Deployment and DaemonSet (targets and primaries)
/// and the Services Serin manages. Reads never reach the API server.
#[derive(Clone)]
pub struct Stores {
    /// Deployments.
    pub deployments: Store<Deployment>,
    /// DaemonSets.
    pub daemonsets: Store<DaemonSet>,
    /// Services labelled `app.kubernetes.io/managed-by=serin`.
    pub services: Store<Service>,
    /// Serin's HTTPRoutes and TrafficSplits (metadata), and what Serin applied to them.
    pub routes: RouteWatch,
    /// ConfigMaps and Secrets (metadata), and the content of those a Canary read.
    pub configs: ConfigWatch,
}

/// The writers of [`Stores`], fed by the controller's watch streams.
pub struct StoreWriters {
    /// Deployments.
    pub deployments: reflector::store::Writer<Deployment>,
    /// DaemonSets.
    pub daemonsets: reflector::store::Writer<DaemonSet>,
    /// Services.
    pub services: reflector::store::Writer<Service>,
    /// HTTPRoutes and TrafficSplits.
    pub routes: RouteWriters,
    /// ConfigMaps and Secrets.
    pub configs: ConfigWriters,
}

impl Stores {
    /// Empty stores and their writers.
    pub fn new() -> (Self, StoreWriters) {
        let (deployments, dw) = reflector::store();
        let (daemonsets, sw) = reflector::store();
        let (services, vw) = reflector::store();
        let (routes, rw) = RouteWatch::new();
        let (configs, cw) = ConfigWatch::new();
        (
            Self {
                deployments,
                daemonsets,
                services,
                routes,
                configs,
            },
            StoreWriters {
                deployments: dw,
                daemonsets: sw,
                services: vw,
                routes: rw,
                configs: cw,
            },
        )
    }

    /// Stores holding exactly these objects, as after a watch's initial list (tests, tools).
    pub fn of(
        deployments: Vec<Deployment>,
        daemonsets: Vec<DaemonSet>,
        services: Vec<Service>,
    ) -> Self {
        let (stores, mut w) = Self::new();
        fill(&mut w.deployments, deployments);
        fill(&mut w.daemonsets, daemonsets);
        fill(&mut w.services, services);
        fill(&mut w.routes.httproutes, vec![]);
        fill(&mut w.routes.trafficsplits, vec![]);
        // The config watches are left unlisted: configs are read by GET, as before a watch
        // lists.
        // The readers keep what was written; the writers may go.
        stores
    }

    /// Waits until every watch has listed once (before, an absent object is not known to be
    /// absent).
    pub async fn ready(&self) -> bool {
        self.deployments.wait_until_ready().await.is_ok()
            && self.daemonsets.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
    }

    /// A Deployment by namespace and name.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// A DaemonSet by namespace and name.
    pub fn daemonset(&self, namespace: &str, name: &str) -> Option<Arc<DaemonSet>> {
        self.daemonsets.get(&ObjectRef::new(name).within(namespace))
    }

    /// A managed Service by namespace and name.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }
}

/// Feeds `objects` to `w` as a watch's initial list (tests, tools).
pub fn fill<K>(w: &mut reflector::store::Writer<K>, objects: Vec<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    w.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        w.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    w.apply_watcher_event(&watcher::Event::InitDone);
}

/// When each Canary's next tick is due, to measure how late it started (the controller
/// dashboard's tick lateness, as the local controller measures it): the reconcile notes the
/// requeue it asked for, and the next reconcile of that Canary at or after the due time reports
/// how much later it came (a queue backed up behind slow reconciles, a busy API server). A
/// reconcile before the due time (a watch event woke the Canary) is not a late tick.
#[derive(Debug, Default)]
pub struct TickSchedule(Mutex<HashMap<(String, String), Timestamp>>);

impl TickSchedule {
    /// Notes that the tick of `namespace/name` is due at `at`.
    pub fn due(&self, namespace: &str, name: &str, at: Timestamp) {
        if let Ok(mut m) = self.0.lock() {
            m.insert((namespace.to_string(), name.to_string()), at);
        }
    }

    /// A reconcile of `namespace/name` starts at `now`: how late it is after its due tick
    /// (`None` when none was due yet). The due time is forgotten either way; the reconcile
    /// notes the next one.
    pub fn started(&self, namespace: &str, name: &str, now: Timestamp) -> Option<Duration> {
        let due = self
            .0
            .lock()
            .ok()?
            .remove(&(namespace.to_string(), name.to_string()))?;
        (now >= due).then(|| now.since(due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_after_its_due_time_is_late_by_the_difference_and_an_early_wake_is_not_late() {
        let t = |s: i64| Timestamp::from_millis(1_700_000_000_000 + s * 1000);
        let ticks = TickSchedule::default();
        assert_eq!(
            ticks.started("test", "podinfo", t(0)),
            None,
            "nothing due yet"
        );
        ticks.due("test", "podinfo", t(60));
        assert_eq!(
            ticks.started("test", "podinfo", t(63)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            ticks.started("test", "podinfo", t(64)),
            None,
            "reported once"
        );
        ticks.due("test", "podinfo", t(120));
        assert_eq!(
            ticks.started("test", "podinfo", t(90)),
            None,
            "a watch event woke it early"
        );
        assert_eq!(ticks.started("test", "podinfo", t(121)), None);
        ticks.due("test", "other", t(10));
        assert_eq!(ticks.started("test", "other", t(10)), Some(Duration::ZERO));
    }
}

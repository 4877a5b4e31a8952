//! Which Canaries a change of a Deployment or DaemonSet concerns. The controller watches both
//! kinds once and maps each change to:
//! - the Canary that owns the object (a `-primary` copy), as `Controller::owns` would, and
//! - every Canary targeting the object whose status does not know its pod-template revision
//!   yet, so a new revision starts (or restarts) the analysis at once instead of at the next
//!   interval. Status-only changes of the target (pods becoming ready) wake nobody.
//!
//! The revisions seen are kept in [`TargetRevisions`], which the reconcile reads to tell the
//! driver that the target changed (see [`serin_controller::adapters::CanaryContext::target_changed`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serin_api::{Canary, TargetKind};

use super::status::engine_status;
use super::workloads::template_revision;

/// The pod-template revision last seen by the watch, per target (namespace, kind, name).
#[derive(Debug, Default)]
pub struct TargetRevisions(Mutex<HashMap<(String, TargetKind, String), String>>);

impl TargetRevisions {
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
        seen.is_some_and(|rev| is_new_revision(canary, &rev))
    }
}

/// Whether `revision` is one the Canary's status has not taken in yet.
fn is_new_revision(canary: &Canary, revision: &str) -> bool {
    let status = engine_status(canary);
    // A Canary never initialized has its first tick due anyway.
    status.last_applied_spec.is_some()
        && status.last_applied_spec.as_deref() != Some(revision)
        && status.run.as_ref().is_none_or(|r| r.revision != revision)
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
        if targets_it
            && revision.as_deref().is_some_and(|r| is_new_revision(c, r))
            && !wake.iter().any(|w| w.name == c.name_any())
        {
            wake.push(ObjectRef::from_obj(c.as_ref()));
        }
    }
    wake
}

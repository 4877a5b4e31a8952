//! [`KubeWorkloads`]: Deployment and DaemonSet targets handled as Flagger does.
//!
//! - The primary `<target>-primary` is a copy of the target whose selector label values carry a
//!   `-primary` suffix, whose ConfigMap/Secret references point at `-primary` copies, and which
//!   the Canary owns (so it is garbage-collected with it).
//! - The revision is a hash of the target's pod template (minus Serin's own scale-to-zero node
//!   selector on DaemonSets); tracked configs are checksums of the ConfigMaps and Secrets the
//!   template references, unless annotated `serin.dev/config-tracking: disabled` (or Flagger's
//!   `flagger.app/config-tracking: disabled`).
//! - Objects Serin owns are written with server-side apply (field manager `serin`); the user's
//!   target is only ever touched with small merge patches (replicas, the DaemonSet node selector).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, PodTemplateSpec, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use serin_api::{Canary, Normalized, TargetKind};
use serin_core::{Readiness, TargetState};

use super::services::{self, ServiceNames};
use super::watch::Stores;
use super::{FIELD_MANAGER, kube_error};
use serin_controller::adapters::{
    AdapterError, CanaryContext, ErrorKind, WorkloadState, Workloads,
};

/// Node selector that keeps a DaemonSet's pods off every node ("scaled to zero").
pub const SCALE_TO_ZERO_LABEL: &str = "serin.dev/scale-to-zero";
/// Annotation that turns config tracking off for one ConfigMap or Secret.
pub const CONFIG_TRACKING_ANNOTATION: &str = "serin.dev/config-tracking";
/// Flagger's spelling of the same annotation, honoured so manifests carry over.
pub const FLAGGER_CONFIG_TRACKING_ANNOTATION: &str = "flagger.app/config-tracking";

/// The suffix of everything primary.
pub const PRIMARY_SUFFIX: &str = "-primary";

/// The target, whichever kind it is.
#[derive(Debug, Clone)]
pub enum Target {
    /// An apps/v1 Deployment.
    Deployment(Box<Deployment>),
    /// An apps/v1 DaemonSet.
    DaemonSet(Box<DaemonSet>),
}

impl Target {
    fn template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Target::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Target::DaemonSet(d) => d.spec.as_ref().map(|s| &s.template),
        }
    }

    fn selector(&self) -> BTreeMap<String, String> {
        let sel = match self {
            Target::Deployment(d) => d.spec.as_ref().map(|s| &s.selector),
            Target::DaemonSet(d) => d.spec.as_ref().map(|s| &s.selector),
        };
        sel.and_then(|s| s.match_labels.clone()).unwrap_or_default()
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Target::Deployment(d) => &d.metadata,
            Target::DaemonSet(d) => &d.metadata,
        }
    }

    fn replicas(&self) -> Option<i32> {
        match self {
            Target::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
            Target::DaemonSet(_) => None,
        }
    }

    /// The target's pod-template selector labels (what the canary Service selects).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        self.selector()
    }
}

/// Readiness of a Deployment as the engine wants it.
pub fn deployment_readiness(d: &Deployment) -> Readiness {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
    let st = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let deadline_exceeded = st.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    Readiness {
        desired,
        updated: st.updated_replicas.unwrap_or(0).max(0) as u32,
        available: st.available_replicas.unwrap_or(0).max(0) as u32,
        total: st.replicas.unwrap_or(0).max(0) as u32,
        settled: st.observed_generation.unwrap_or(0) >= generation,
        deadline_exceeded,
        unavailable_since: None,
    }
}

/// Readiness of a DaemonSet as the engine wants it.
pub fn daemonset_readiness(d: &DaemonSet) -> Readiness {
    let st = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    Readiness {
        desired: st.desired_number_scheduled.max(0) as u32,
        updated: st.updated_number_scheduled.unwrap_or(0).max(0) as u32,
        available: st.number_available.unwrap_or(0).max(0) as u32,
        total: st.current_number_scheduled.max(0) as u32,
        settled: st.observed_generation.unwrap_or(0) >= generation,
        deadline_exceeded: false,
        unavailable_since: None,
    }
}

/// Annotation on the objects Serin applies (primary, Services): a hash of the object as Serin
/// last applied it, so an apply the watched copy already carries is skipped (a waiting tick then
/// re-applies nothing).
pub const APPLIED_ANNOTATION: &str = "serin.dev/applied";

/// Stamps `object` with [`APPLIED_ANNOTATION`] (the hash of `object` as built) and says whether
/// `current`, the watched copy, already carries that stamp: applying it again would change
/// nothing Serin owns.
pub fn stamp_applied<K: kube::Resource + serde::Serialize>(
    object: &mut K,
    current: Option<&K>,
) -> bool {
    let hash = short_hash(&serde_json::to_vec(&*object).unwrap_or_default());
    let unchanged = current
        .and_then(|c| c.annotations().get(APPLIED_ANNOTATION))
        .is_some_and(|h| *h == hash);
    object
        .annotations_mut()
        .insert(APPLIED_ANNOTATION.to_string(), hash);
    unchanged
}

/// `sha256(data)` as 16 hex digits: short, stable, enough to tell revisions apart.
pub fn short_hash(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The revision of a pod template: a hash of its JSON with Serin's scale-to-zero node
/// selector removed (serde_json maps are ordered, so the encoding is canonical).
pub fn template_revision(template: &PodTemplateSpec) -> String {
    let mut t = template.clone();
    if let Some(spec) = t.spec.as_mut()
        && let Some(ns) = spec.node_selector.as_mut()
    {
        ns.remove(SCALE_TO_ZERO_LABEL);
        if ns.is_empty() {
            spec.node_selector = None;
        }
    }
    let v = serde_json::to_value(&t).unwrap_or_default();
    short_hash(v.to_string().as_bytes())
}

/// ConfigMaps and Secrets a pod spec references: (configmaps, secrets, optional names).
pub fn referenced_configs(
    spec: &PodSpec,
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let mut optional = BTreeSet::new();
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
            if cm.optional == Some(true) {
                optional.insert(format!("configmap/{}", cm.name));
            }
        }
        if let Some(s) = &v.secret
            && let Some(name) = &s.secret_name
        {
            secrets.insert(name.clone());
            if s.optional == Some(true) {
                optional.insert(format!("secret/{name}"));
            }
        }
        if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(cm) = &src.config_map {
                    cms.insert(cm.name.clone());
                }
                if let Some(s) = &src.secret {
                    secrets.insert(s.name.clone());
                }
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for e in c.env_from.iter().flatten() {
            if let Some(cm) = &e.config_map_ref {
                cms.insert(cm.name.clone());
                if cm.optional == Some(true) {
                    optional.insert(format!("configmap/{}", cm.name));
                }
            }
            if let Some(s) = &e.secret_ref {
                secrets.insert(s.name.clone());
                if s.optional == Some(true) {
                    optional.insert(format!("secret/{}", s.name));
                }
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(k) = &from.config_map_key_ref {
                    cms.insert(k.name.clone());
                }
                if let Some(k) = &from.secret_key_ref {
                    secrets.insert(k.name.clone());
                }
            }
        }
    }
    (cms, secrets, optional)
}

fn tracking_disabled(meta: &ObjectMeta) -> bool {
    meta.annotations.as_ref().is_some_and(|a| {
        [
            CONFIG_TRACKING_ANNOTATION,
            FLAGGER_CONFIG_TRACKING_ANNOTATION,
        ]
        .iter()
        .any(|k| a.get(*k).is_some_and(|v| v == "disabled"))
    })
}

/// Rewrites config references in `spec` to their `-primary` copies (only those in `tracked`,
/// keyed `configmap/NAME` / `secret/NAME`).
pub fn rename_configs(spec: &mut PodSpec, tracked: &BTreeSet<String>) {
    let cm = |n: &mut String| {
        if tracked.contains(&format!("configmap/{n}")) {
            n.push_str(PRIMARY_SUFFIX);
        }
    };
    let sec = |n: &mut String| {
        if tracked.contains(&format!("secret/{n}")) {
            n.push_str(PRIMARY_SUFFIX);
        }
    };
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(c) = v.config_map.as_mut() {
            cm(&mut c.name);
        }
        if let Some(s) = v.secret.as_mut()
            && let Some(n) = s.secret_name.as_mut()
        {
            sec(n);
        }
        if let Some(p) = v.projected.as_mut() {
            for src in p.sources.iter_mut().flatten() {
                if let Some(c) = src.config_map.as_mut() {
                    cm(&mut c.name);
                }
                if let Some(s) = src.secret.as_mut() {
                    sec(&mut s.name);
                }
            }
        }
    }
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for c in containers {
        for e in c.env_from.iter_mut().flatten() {
            if let Some(r) = e.config_map_ref.as_mut() {
                cm(&mut r.name);
            }
            if let Some(r) = e.secret_ref.as_mut() {
                sec(&mut r.name);
            }
        }
        for e in c.env.iter_mut().flatten() {
            if let Some(from) = e.value_from.as_mut() {
                if let Some(k) = from.config_map_key_ref.as_mut() {
                    cm(&mut k.name);
                }
                if let Some(k) = from.secret_key_ref.as_mut() {
                    sec(&mut k.name);
                }
            }
        }
    }
}

/// `labels` with the values of the selector keys suffixed `-primary`.
pub fn primary_labels(
    labels: &BTreeMap<String, String>,
    selector: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| {
            if selector.contains_key(k) {
                (k.clone(), format!("{v}{PRIMARY_SUFFIX}"))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// Annotations worth copying to a generated object (not kubectl's or Flux's bookkeeping).
fn copyable_annotations(a: Option<&BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
    let out: BTreeMap<String, String> = a
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            !k.starts_with("kubectl.kubernetes.io/")
                && !k.starts_with("deployment.kubernetes.io/")
                && !k.starts_with("kustomize.toolkit.fluxcd.io/")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// The primary's pod template from the target's: primary selector labels, `-primary` configs,
/// no scale-to-zero selector.
pub fn primary_template(
    template: &PodTemplateSpec,
    selector: &BTreeMap<String, String>,
    tracked: &BTreeSet<String>,
) -> PodTemplateSpec {
    let mut t = template.clone();
    let meta = t.metadata.get_or_insert_with(Default::default);
    meta.labels = Some(primary_labels(
        &meta.labels.clone().unwrap_or_default(),
        selector,
    ));
    if let Some(spec) = t.spec.as_mut() {
        rename_configs(spec, tracked);
        if let Some(ns) = spec.node_selector.as_mut() {
            ns.remove(SCALE_TO_ZERO_LABEL);
            if ns.is_empty() {
                spec.node_selector = None;
            }
        }
    }
    t
}

/// Builds the primary Deployment from the target.
pub fn primary_deployment(
    target: &Deployment,
    name: &str,
    namespace: &str,
    replicas: i32,
    tracked: &BTreeSet<String>,
    owner: &OwnerReference,
) -> Deployment {
    let spec = target.spec.clone().unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(primary_labels(
                &target.metadata.labels.clone().unwrap_or_default(),
                &selector,
            )),
            annotations: copyable_annotations(target.metadata.annotations.as_ref()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(primary_labels(&selector, &selector)),
                match_expressions: None,
            },
            template: primary_template(&spec.template, &selector, tracked),
            strategy: spec.strategy.clone(),
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            paused: None,
        }),
        status: None,
    }
}

/// Builds the primary DaemonSet from the target.
pub fn primary_daemonset(
    target: &DaemonSet,
    name: &str,
    namespace: &str,
    tracked: &BTreeSet<String>,
    owner: &OwnerReference,
) -> DaemonSet {
    let spec = target.spec.clone().unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(primary_labels(
                &target.metadata.labels.clone().unwrap_or_default(),
                &selector,
            )),
            annotations: copyable_annotations(target.metadata.annotations.as_ref()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(primary_labels(&selector, &selector)),
                match_expressions: None,
            },
            template: primary_template(&spec.template, &selector, tracked),
            update_strategy: spec.update_strategy.clone(),
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
        }),
        status: None,
    }
}

/// Deployments and DaemonSets of one Canary.
pub struct KubeWorkloads {
    client: Client,
    canary: Arc<Canary>,
    spec: Arc<Normalized>,
    namespace: String,
    owner: OwnerReference,
    stores: Option<Stores>,
}

impl KubeWorkloads {
    /// Workloads of `canary` (already normalized as `spec`).
    pub fn new(client: Client, canary: Arc<Canary>, spec: Arc<Normalized>) -> Self {
        let namespace = canary.namespace().unwrap_or_default();
        let owner = super::owner_reference(&canary);
        Self {
            client,
            canary,
            spec,
            namespace,
            owner,
            stores: None,
        }
    }

    /// Reads targets, primaries and Services from the controller's watches instead of GETting
    /// them (`None`: GET, for callers without watches).
    pub fn with_stores(mut self, stores: Option<Stores>) -> Self {
        self.stores = stores;
        self
    }

    /// The watches' stores, when this reads from them.
    pub fn stores(&self) -> Option<&Stores> {
        self.stores.as_ref()
    }

    fn primary_name(&self) -> String {
        format!("{}{PRIMARY_SUFFIX}", self.spec.target_name)
    }

    fn what(&self, verb: &str, kind: &str, name: &str) -> String {
        format!("{verb} {kind} {}/{name}", self.namespace)
    }

    async fn get_target(&self) -> Result<Option<Target>, AdapterError> {
        let name = &self.spec.target_name;
        let ns = &self.namespace;
        match (&self.stores, self.spec.target_kind) {
            (Some(st), TargetKind::Deployment) => {
                return Ok(st
                    .deployment(ns, name)
                    .map(|d| Target::Deployment(Box::new((*d).clone()))));
            }
            (Some(st), TargetKind::DaemonSet) => {
                return Ok(st
                    .daemonset(ns, name)
                    .map(|d| Target::DaemonSet(Box::new((*d).clone()))));
            }
            _ => {}
        }
        match self.spec.target_kind {
            TargetKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
                api.get_opt(name)
                    .await
                    .map(|o| o.map(|d| Target::Deployment(Box::new(d))))
                    .map_err(|e| kube_error(e, self.what("reading", "deployment", name)))
            }
            TargetKind::DaemonSet => {
                let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &self.namespace);
                api.get_opt(name)
                    .await
                    .map(|o| o.map(|d| Target::DaemonSet(Box::new(d))))
                    .map_err(|e| kube_error(e, self.what("reading", "daemonset", name)))
            }
            TargetKind::Process => Err(AdapterError::new(
                ErrorKind::Invalid,
                "spec.targetRef.kind",
                "Process targets run on the local platform (`serin controller --local`); on Kubernetes use Deployment or DaemonSet",
            )),
            TargetKind::Service => Err(AdapterError::new(
                ErrorKind::Invalid,
                "spec.targetRef.kind",
                serin_api::support::target_not_driven(TargetKind::Service).unwrap_or_default(),
            )),
        }
    }

    /// Whether Serin can copy the target to a primary, refused up front naming the field. The
    /// primary's selector and the Services' are made from the target's
    /// `spec.selector.matchLabels` (values suffixed `-primary`): a target selecting with
    /// `matchExpressions` alone would give a primary with an empty selector, which the API server
    /// rejects about an object the user never wrote, and Services selecting nothing (Flagger
    /// needs matchLabels too).
    fn check_copyable(&self, target: &Target) -> Result<(), AdapterError> {
        // The primary copies the updateStrategy: with OnDelete a promotion would change the
        // primary's template but none of its pods, and the Canary would wait in Promoting until
        // its progress deadline with the primary's spec already changed.
        if let Target::DaemonSet(d) = target
            && d.spec
                .as_ref()
                .and_then(|s| s.update_strategy.as_ref())
                .and_then(|u| u.type_.as_deref())
                == Some("OnDelete")
        {
            return Err(AdapterError::new(
                ErrorKind::Invalid,
                self.what("reading", "daemonset", &self.spec.target_name),
                "spec.updateStrategy.type is OnDelete: the primary copies it, so a promoted revision would never replace the primary's pods; accepted: RollingUpdate (the default)",
            ));
        }
        if !target.selector().is_empty() {
            return Ok(());
        }
        let kind = self.spec.target_kind.as_str();
        Err(AdapterError::new(
            ErrorKind::Invalid,
            self.what("reading", &kind.to_lowercase(), &self.spec.target_name),
            format!(
                "spec.selector.matchLabels is empty: Serin selects the primary's pods by the target's matchLabels with `-primary` appended to each value, so the {kind} needs at least one (e.g. app: {name}); matchExpressions alone are not supported",
                name = self.spec.target_name
            ),
        ))
    }

    /// The target, to make or promote a primary from: it must exist and be copyable (checked
    /// here, not when observing, so that a Canary with such a target can still be deleted and
    /// hand it back).
    async fn require_target(&self) -> Result<Target, AdapterError> {
        let target = self.get_target().await?.ok_or_else(|| {
            AdapterError::new(
                ErrorKind::NotFound,
                self.what(
                    "reading",
                    self.spec.target_kind.as_str(),
                    &self.spec.target_name,
                ),
                "the target does not exist",
            )
        })?;
        self.check_copyable(&target)?;
        Ok(target)
    }

    /// Tracked configs of the target: `kind/name` → (checksum, object).
    async fn tracked_configs(
        &self,
        target: &Target,
    ) -> Result<(BTreeMap<String, String>, Vec<ConfigObject>), AdapterError> {
        let Some(spec) = target.template().and_then(|t| t.spec.as_ref()) else {
            return Ok((BTreeMap::new(), Vec::new()));
        };
        let (cms, secrets, _optional) = referenced_configs(spec);
        let mut sums = BTreeMap::new();
        let mut objects = Vec::new();
        for name in cms {
            let Some(cm) = self.config_map(&name).await? else {
                // A missing ConfigMap keeps pods from starting; readiness reports that.
                continue;
            };
            if tracking_disabled(&cm.metadata) {
                continue;
            }
            let body = json!({"data": cm.data, "binaryData": cm.binary_data});
            sums.insert(
                format!("configmap/{name}"),
                short_hash(body.to_string().as_bytes()),
            );
            objects.push(ConfigObject::ConfigMap(Box::new(cm)));
        }
        for name in secrets {
            let Some(s) = self.secret(&name).await? else {
                continue;
            };
            if tracking_disabled(&s.metadata) {
                continue;
            }
            let body = json!({"data": s.data, "stringData": s.string_data, "type": s.type_});
            sums.insert(
                format!("secret/{name}"),
                short_hash(body.to_string().as_bytes()),
            );
            objects.push(ConfigObject::Secret(Box::new(s)));
        }
        Ok((sums, objects))
    }

    /// A ConfigMap of the Canary's namespace: from the config watch's cache while it is current,
    /// else by GET.
    async fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, AdapterError> {
        let read = match &self.stores {
            Some(st) => st
                .configs
                .config_map(&self.client, &self.namespace, name)
                .await
                .map(|o| o.map(|c| (*c).clone())),
            None => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
                api.get_opt(name).await
            }
        };
        read.map_err(|e| kube_error(e, self.what("reading", "configmap", name)))
    }

    /// A Secret of the Canary's namespace, as [`Self::config_map`] reads a ConfigMap.
    async fn secret(&self, name: &str) -> Result<Option<Secret>, AdapterError> {
        let read = match &self.stores {
            Some(st) => st
                .configs
                .secret(&self.client, &self.namespace, name)
                .await
                .map(|o| o.map(|c| (*c).clone())),
            None => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
                api.get_opt(name).await
            }
        };
        read.map_err(|e| kube_error(e, self.what("reading", "secret", name)))
    }

    /// Copies tracked configs to `-primary` objects the Canary owns.
    async fn copy_configs(&self, objects: &[ConfigObject]) -> Result<(), AdapterError> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        for o in objects {
            match o {
                ConfigObject::ConfigMap(cm) => {
                    let name = format!("{}{PRIMARY_SUFFIX}", cm.name_any());
                    let copy = ConfigMap {
                        metadata: self.owned_meta(&name, &cm.metadata),
                        data: cm.data.clone(),
                        binary_data: cm.binary_data.clone(),
                        immutable: None,
                    };
                    let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
                    api.patch(&name, &pp, &Patch::Apply(&copy))
                        .await
                        .map_err(|e| kube_error(e, self.what("applying", "configmap", &name)))?;
                }
                ConfigObject::Secret(s) => {
                    let name = format!("{}{PRIMARY_SUFFIX}", s.name_any());
                    let copy = Secret {
                        metadata: self.owned_meta(&name, &s.metadata),
                        data: s.data.clone(),
                        string_data: s.string_data.clone(),
                        type_: s.type_.clone(),
                        immutable: None,
                    };
                    let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
                    api.patch(&name, &pp, &Patch::Apply(&copy))
                        .await
                        .map_err(|e| kube_error(e, self.what("applying", "secret", &name)))?;
                }
            }
        }
        Ok(())
    }

    fn owned_meta(&self, name: &str, from: &ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: from.labels.clone(),
            annotations: copyable_annotations(from.annotations.as_ref()),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    async fn primary_replicas(&self) -> Result<Option<i32>, AdapterError> {
        let name = self.primary_name();
        if let Some(st) = &self.stores {
            let d = st.deployment(&self.namespace, &name);
            return Ok(d.and_then(|d| d.spec.as_ref().and_then(|s| s.replicas)));
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let d = api
            .get_opt(&name)
            .await
            .map_err(|e| kube_error(e, self.what("reading", "deployment", &name)))?;
        Ok(d.and_then(|d| d.spec.and_then(|s| s.replicas)))
    }

    /// Writes the primary from `target` with `replicas` (Deployments only), and its configs.
    async fn apply_primary(&self, target: &Target, replicas: i32) -> Result<(), AdapterError> {
        let (sums, objects) = self.tracked_configs(target).await?;
        self.copy_configs(&objects).await?;
        let tracked: BTreeSet<String> = sums.keys().cloned().collect();
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let name = self.primary_name();
        let ns = &self.namespace;
        match target {
            Target::Deployment(d) => {
                let mut p = primary_deployment(d, &name, ns, replicas, &tracked, &self.owner);
                let current = self.stores.as_ref().and_then(|st| st.deployment(ns, &name));
                if stamp_applied(&mut p, current.as_deref()) {
                    return Ok(());
                }
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
                api.patch(&name, &pp, &Patch::Apply(&p))
                    .await
                    .map_err(|e| {
                        primary_apply_error(e, self.what("applying", "deployment", &name))
                    })?;
            }
            Target::DaemonSet(d) => {
                let mut p = primary_daemonset(d, &name, ns, &tracked, &self.owner);
                let current = self.stores.as_ref().and_then(|st| st.daemonset(ns, &name));
                if stamp_applied(&mut p, current.as_deref()) {
                    return Ok(());
                }
                let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &self.namespace);
                api.patch(&name, &pp, &Patch::Apply(&p))
                    .await
                    .map_err(|e| {
                        primary_apply_error(e, self.what("applying", "daemonset", &name))
                    })?;
            }
        }
        Ok(())
    }

    /// Clones the target's HorizontalPodAutoscaler (autoscaling/v2) for the primary.
    async fn apply_primary_hpa(&self) -> Result<(), AdapterError> {
        let Some(aref) = &self.canary.spec.autoscaler_ref else {
            return Ok(());
        };
        if aref.kind != serin_api::AutoscalerKind::HorizontalPodAutoscaler {
            return Err(AdapterError::new(
                ErrorKind::Invalid,
                "spec.autoscalerRef.kind",
                "ScaledObject (KEDA) is not supported by Serin yet; accepted: HorizontalPodAutoscaler",
            ));
        }
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let hpa = api
            .get_opt(&aref.name)
            .await
            .map_err(|e| {
                kube_error(
                    e,
                    self.what("reading", "horizontalpodautoscaler", &aref.name),
                )
            })?
            .ok_or_else(|| {
                AdapterError::new(
                    ErrorKind::NotFound,
                    "spec.autoscalerRef.name",
                    format!("HorizontalPodAutoscaler {:?} does not exist", aref.name),
                )
            })?;
        let name = format!("{}{PRIMARY_SUFFIX}", aref.name);
        let mut spec = hpa.spec.clone().unwrap_or_default();
        spec.scale_target_ref.name = self.primary_name();
        if let Some(r) = &aref.primary_scaler_replicas {
            if let Some(min) = r.min_replicas {
                spec.min_replicas = Some(min);
            }
            if let Some(max) = r.max_replicas {
                spec.max_replicas = max;
            }
        }
        let copy = HorizontalPodAutoscaler {
            metadata: self.owned_meta(&name, &hpa.metadata),
            spec: Some(spec),
            status: None,
        };
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&copy),
        )
        .await
        .map_err(|e| kube_error(e, self.what("applying", "horizontalpodautoscaler", &name)))?;
        Ok(())
    }

    async fn patch_target(&self, patch: serde_json::Value) -> Result<(), AdapterError> {
        let name = &self.spec.target_name;
        let pp = PatchParams::default();
        match self.spec.target_kind {
            TargetKind::DaemonSet => {
                let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &self.namespace);
                api.patch(name, &pp, &Patch::Merge(&patch))
                    .await
                    .map_err(|e| kube_error(e, self.what("patching", "daemonset", name)))?;
            }
            _ => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
                api.patch(name, &pp, &Patch::Merge(&patch))
                    .await
                    .map_err(|e| kube_error(e, self.what("patching", "deployment", name)))?;
            }
        }
        Ok(())
    }

    async fn scale_target_up(&self) -> Result<(), AdapterError> {
        match self.spec.target_kind {
            TargetKind::DaemonSet => {
                self.patch_target(json!({"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO_LABEL: null}}}}}))
                    .await
            }
            _ => {
                let replicas = self.primary_replicas().await?.filter(|r| *r > 0).unwrap_or(1);
                self.patch_target(json!({"spec": {"replicas": replicas}})).await
            }
        }
    }

    fn service_names(&self) -> ServiceNames {
        ServiceNames::new(&self.spec)
    }
}

/// A tracked config object read from the API.
#[derive(Debug, Clone)]
pub enum ConfigObject {
    /// A ConfigMap.
    ConfigMap(Box<ConfigMap>),
    /// A Secret.
    Secret(Box<Secret>),
}

#[async_trait]
impl Workloads for KubeWorkloads {
    async fn observe(&self, _ctx: &CanaryContext) -> Result<WorkloadState, AdapterError> {
        let Some(target) = self.get_target().await? else {
            return Ok(WorkloadState::default());
        };
        let revision = target.template().map(template_revision).unwrap_or_default();
        let (configs, _) = self.tracked_configs(&target).await?;
        let canary = match &target {
            Target::Deployment(d) => deployment_readiness(d),
            Target::DaemonSet(d) => daemonset_readiness(d),
        };
        let name = self.primary_name();
        let primary = match (&self.stores, &target) {
            (Some(st), Target::Deployment(_)) => st
                .deployment(&self.namespace, &name)
                .map(|d| deployment_readiness(&d)),
            (Some(st), Target::DaemonSet(_)) => st
                .daemonset(&self.namespace, &name)
                .map(|d| daemonset_readiness(&d)),
            (None, Target::Deployment(_)) => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
                api.get_opt(&name)
                    .await
                    .map_err(|e| kube_error(e, self.what("reading", "deployment", &name)))?
                    .map(|d| deployment_readiness(&d))
            }
            (None, Target::DaemonSet(_)) => {
                let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &self.namespace);
                api.get_opt(&name)
                    .await
                    .map_err(|e| kube_error(e, self.what("reading", "daemonset", &name)))?
                    .map(|d| daemonset_readiness(&d))
            }
        };
        Ok(WorkloadState {
            target: Some(TargetState { revision, configs }),
            primary,
            canary: Some(canary),
        })
    }

    async fn initialize_primary(&self, _ctx: &CanaryContext) -> Result<(), AdapterError> {
        let target = self.require_target().await?;
        // After a restart mid-initialization the target may already be at zero; never copy
        // that to the primary.
        let replicas = match (&target, target.replicas()) {
            // DaemonSets have no replica count.
            (Target::DaemonSet(_), _) => 0,
            (_, Some(r)) if r > 0 => r,
            _ => self
                .primary_replicas()
                .await?
                .filter(|r| *r > 0)
                .unwrap_or(1),
        };
        self.apply_primary(&target, replicas).await?;
        self.apply_primary_hpa().await?;
        services::apply_services(
            &self.client,
            self.stores.as_ref(),
            &self.canary,
            &self.spec,
            &self.service_names(),
            &target,
            &self.owner,
        )
        .await
    }

    async fn scale_canary_to_zero(&self, _ctx: &CanaryContext) -> Result<(), AdapterError> {
        match self.spec.target_kind {
            TargetKind::DaemonSet => {
                self.patch_target(json!({"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO_LABEL: "true"}}}}}))
                    .await
            }
            _ => self.patch_target(json!({"spec": {"replicas": 0}})).await,
        }
    }

    async fn scale_canary_up(&self, _ctx: &CanaryContext) -> Result<(), AdapterError> {
        self.scale_target_up().await
    }

    async fn promote(&self, _ctx: &CanaryContext, revision: &str) -> Result<(), AdapterError> {
        let target = self.require_target().await?;
        let current = target.template().map(template_revision).unwrap_or_default();
        if current != revision {
            // Never promote code that was not analysed: the next tick sees the new revision and
            // restarts the analysis.
            return Err(AdapterError::new(
                ErrorKind::Conflict,
                self.what(
                    "promoting",
                    self.spec.target_kind.as_str(),
                    &self.spec.target_name,
                ),
                format!("the target changed during promotion (analysed {revision}, now {current})"),
            ));
        }
        let replicas = match &target {
            Target::DaemonSet(_) => 0,
            Target::Deployment(_) => self
                .primary_replicas()
                .await?
                .filter(|r| *r > 0)
                .unwrap_or(1),
        };
        self.apply_primary(&target, replicas).await?;
        // The target's autoscaler may have changed during the run (limits, metrics): the
        // primary's copy follows at each promotion, as Flagger reconciles it then.
        self.apply_primary_hpa().await
    }

    async fn revert(&self, _ctx: &CanaryContext) -> Result<(), AdapterError> {
        if self.get_target().await?.is_none() {
            return Ok(());
        }
        self.scale_target_up().await
    }
}

impl KubeWorkloads {
    /// The target's metadata labels (for the apex Service on revert).
    pub fn canary_ref(&self) -> &Canary {
        &self.canary
    }

    /// Whether `svc` belongs to this Canary.
    pub fn owns(&self, svc: &Service) -> bool {
        svc.owner_references()
            .iter()
            .any(|o| Some(o.uid.as_str()) == self.canary.meta().uid.as_deref())
    }

    /// The target, for routing decisions.
    pub async fn target(&self) -> Result<Option<Target>, AdapterError> {
        self.get_target().await
    }

    /// The target's metadata.
    pub fn target_meta(t: &Target) -> &ObjectMeta {
        t.meta()
    }
}

/// The API server's answer to applying the primary, and what to do when it is the one answer
/// a user cannot fix by editing the primary: the target's selector changed, and a Deployment's
/// or DaemonSet's `spec.selector` cannot change once made, so the primary (made with the old
/// selector) refuses the new one at every promotion. Flagger has the same limit.
fn primary_apply_error(e: kube::Error, what: String) -> AdapterError {
    let immutable_selector = matches!(&e, kube::Error::Api(s)
        if s.code == 422 && s.message.contains("spec.selector") && s.message.contains("field is immutable"));
    let mut err = kube_error(e, what);
    if immutable_selector {
        err.message.push_str(
            " (the target's selector changed, and the primary's cannot: put the target's selector back, or start over with the new one: set revertOnDeletion: true and delete the Canary (the target gets its traffic back and the primary, which the Canary owns, is garbage-collected), then apply the Canary again)",
        );
    }
    err
}

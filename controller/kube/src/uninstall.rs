//! `serin uninstall`: what `kubectl delete -f -` must remove to take Serin out of a cluster (as
//! `linkerd uninstall`), and whether doing so now would hurt.
//!
//! The objects are those `serin install` creates, and the two its components create at run time
//! in Serin's namespace (the controller's Lease, the injector's certificate Secret with its CA
//! key), found in the cluster by name: only what
//! exists is printed (so `kubectl delete` does not stop on a NotFound), and a namespaced or
//! cluster-wide object of the same name that does not carry Serin's
//! `app.kubernetes.io/part-of: serin` label is left alone (a `--namespace` that names a
//! namespace someone else created is never deleted). The order is the webhook first (no pod is
//! sent to an injector on its way out), then the install's order reversed, CRDs last.
//!
//! Two things make an uninstall hurt, and each refuses it unless forced:
//! - **Canaries.** Deleting the CRDs deletes every Canary, and Kubernetes' garbage collector
//!   then deletes what each Canary owns: its `-primary` Deployment and Services, the ones
//!   serving the traffic. A Canary with `revertOnDeletion` holds Serin's finalizer, which only
//!   the controller (being deleted too) removes, so the CRD's deletion would hang instead.
//! - **Meshed pods.** Their proxies lose the control plane: they keep serving the last route
//!   table, which never changes again, and new pods of their workloads start without a proxy
//!   (the webhook is gone). Linkerd's uninstall refuses for the same reason.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::check::first_names;
use crate::install::{self, InstallOptions, Object};
use crate::source::canary_resource;

/// The label every object of `serin install` carries.
const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "serin");
/// Page size of the cluster-wide lists.
const PAGE: u32 = 500;

/// What `serin uninstall` was asked for.
#[derive(Debug, Clone)]
pub struct UninstallOptions {
    /// Serin's namespace (`--namespace`, as given to `serin install`).
    pub namespace: String,
}

/// One object to delete: what `kubectl delete -f -` needs to find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// `apps/v1`, `v1`, ...
    pub api_version: String,
    /// `Deployment`, ...
    pub kind: String,
    /// Name and namespace.
    pub metadata: FoundMeta,
}

/// Name and namespace of a [`Found`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundMeta {
    /// Object name.
    pub name: String,
    /// Namespace; absent for cluster-wide objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.metadata.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.metadata.name),
            None => write!(f, "{} {}", self.kind, self.metadata.name),
        }
    }
}

/// A reason not to uninstall now, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// What was found.
    pub message: String,
    /// What to do.
    pub hint: String,
}

/// What an uninstall would do, and what stands in its way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uninstall {
    /// The objects to delete, in order.
    pub objects: Vec<Found>,
    /// Objects with an install's name that are not Serin's: left alone.
    pub foreign: Vec<Found>,
    /// Reasons to refuse (empty: safe).
    pub blockers: Vec<Blocker>,
}

/// An API call the uninstall needs failed: which one, and the server's answer.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct UninstallError {
    what: String,
    #[source]
    source: kube::Error,
}

/// `--namespace` is not a namespace name.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(String);

/// The objects of an install into `namespace`, in deletion order. Every optional object (the
/// PodDisruptionBudgets of `--ha`) is a candidate: only those that exist are printed.
pub fn candidates(namespace: &str) -> Result<Vec<Object>, OptionsError> {
    let opts = InstallOptions {
        namespace: namespace.to_string(),
        ha: true,
        ..InstallOptions::default()
    };
    let mut objects = install::objects(&opts).map_err(|e| OptionsError(e.to_string()))?;
    objects.reverse();
    // Stable: the webhook first, CRDs last, the rest in reverse install order.
    objects.sort_by_key(|o| match o {
        Object::Webhook(_) => 0,
        Object::Crd(_) => 2,
        _ => 1,
    });
    Ok(objects)
}

fn resource(o: &Object) -> (ApiResource, Option<String>, String) {
    fn r<K: Resource<DynamicType = ()>>(k: &K) -> (ApiResource, Option<String>, String) {
        (
            ApiResource::erase::<K>(&()),
            k.meta().namespace.clone(),
            k.meta().name.clone().unwrap_or_default(),
        )
    }
    match o {
        Object::Namespace(k) => r(k),
        Object::Crd(k) => r(k),
        Object::ServiceAccount(k) => r(k),
        Object::ClusterRole(k) => r(k),
        Object::ClusterRoleBinding(k) => r(k),
        Object::Role(k) => r(k),
        Object::RoleBinding(k) => r(k),
        Object::Service(k) => r(k),
        Object::Deployment(k) => r(k),
        Object::PodDisruptionBudget(k) => r(k),
        Object::Webhook(k) => r(k),
    }
}

fn api_of(client: &Client, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// Finds what of an install exists, and what would make removing it hurt.
pub async fn plan(client: &Client, opts: &UninstallOptions) -> Result<Uninstall, PlanError> {
    let mut out = Uninstall::default();
    for (ar, namespace, name, by_name) in targets(&opts.namespace)? {
        let found = api_of(client, &ar, namespace.as_deref())
            .get_opt(&name)
            .await
            .map_err(|source| UninstallError {
                what: format!(
                    "reading {} {}",
                    ar.kind,
                    qualified(namespace.as_deref(), &name)
                ),
                source,
            })?;
        let Some(found) = found else { continue };
        let entry = Found {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            metadata: FoundMeta { name, namespace },
        };
        let ours = by_name || found.labels().get(PART_OF.0).map(String::as_str) == Some(PART_OF.1);
        if ours {
            out.objects.push(entry);
        } else {
            out.foreign.push(entry);
        }
    }
    canaries(client, &mut out).await?;
    meshed_pods(client, &mut out).await?;
    Ok(out)
}

/// One object to look for: its resource, namespace, name, and whether the name alone makes it
/// Serin's.
type Target = (ApiResource, Option<String>, String, bool);

/// What to look for, in deletion order: the install's objects, and what the components create
/// at run time in Serin's namespace (the controller's Lease, the injector's serving
/// certificate and CA key), which the namespace's deletion would take along only if the
/// namespace is Serin's. Each with whether its name alone makes it Serin's: CRDs are named for
/// Serin's API group and the Lease for the controller; everything else must carry the label.
fn targets(namespace: &str) -> Result<Vec<Target>, OptionsError> {
    let mut out: Vec<_> = candidates(namespace)?
        .iter()
        .map(|o| {
            let (ar, ns, name) = resource(o);
            (ar, ns, name, matches!(o, Object::Crd(_)))
        })
        .collect();
    let runtime = [
        (
            ApiResource::erase::<Lease>(&()),
            Some(namespace.to_string()),
            install::CONTROLLER.to_string(),
            true,
        ),
        (
            ApiResource::erase::<Secret>(&()),
            Some(namespace.to_string()),
            install::INJECTOR_TLS_SECRET.to_string(),
            false,
        ),
    ];
    // Before the Namespace (deleting it first would leave kubectl deleting objects already
    // going), after the webhook.
    let at = out
        .iter()
        .position(|(ar, ..)| ar.kind == "Namespace")
        .unwrap_or(out.len());
    out.splice(at..at, runtime);
    Ok(out)
}

/// Why [`plan`] could not finish.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A bad `--namespace`.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] UninstallError),
}

fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Every Canary of the cluster (a missing CRD means none).
async fn canaries(client: &Client, out: &mut Uninstall) -> Result<(), UninstallError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &canary_resource());
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let page = match api.list_metadata(&lp).await {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(source) => {
                return Err(UninstallError {
                    what: "listing Canaries (canaries.serin.dev) in every namespace".into(),
                    source,
                });
            }
        };
        names.extend(page.items.iter().map(|c| {
            let held = c.finalizers().iter().any(|f| f == crate::FINALIZER);
            let name = qualified(c.namespace().as_deref(), &c.name_any());
            if held {
                format!("{name} (revertOnDeletion)")
            } else {
                name
            }
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    if !names.is_empty() {
        out.blockers.push(Blocker {
            message: format!(
                "{} Canar{} still exist{}: {}",
                names.len(),
                if names.len() == 1 { "y" } else { "ies" },
                if names.len() == 1 { "s" } else { "" },
                first_names(&names)
            ),
            hint: "deleting the CRDs deletes every Canary, and the garbage collector then deletes the -primary Deployments and Services each owns, the ones serving traffic (a Canary with revertOnDeletion would hang the deletion instead: its finalizer needs the controller). Let each rollout finish, set revertOnDeletion: true and delete the Canaries while the controller runs (each target gets its traffic back), then uninstall; or pass --force".into(),
        });
    }
    Ok(())
}

/// Pods running serin-proxy, in every namespace.
async fn meshed_pods(client: &Client, out: &mut Uninstall) -> Result<(), UninstallError> {
    let pods = crate::check::meshed_pods(client)
        .await
        .map_err(|source| UninstallError {
            what: "listing pods in every namespace (to find meshed ones)".into(),
            source,
        })?;
    let mut by_namespace: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &pods {
        *by_namespace
            .entry(pod.namespace().unwrap_or_default())
            .or_default() += 1;
    }
    let total: usize = by_namespace.values().sum();
    if total > 0 {
        let names: Vec<String> = by_namespace
            .iter()
            .map(|(ns, n)| format!("{ns} ({n})"))
            .collect();
        out.blockers.push(Blocker {
            message: format!(
                "{total} pod{} still run{} serin-proxy, in namespace{} {}",
                if total == 1 { "" } else { "s" },
                if total == 1 { "s" } else { "" },
                if names.len() == 1 { "" } else { "s" },
                first_names(&names)
            ),
            hint: "without the control plane their proxies keep the last route table forever, and new pods of their workloads start unmeshed. Remove the serin.dev/inject annotation from those namespaces and workloads and restart them (kubectl rollout restart), then uninstall; or pass --force".into(),
        });
    }
    Ok(())
}

/// Why `serin uninstall` prints nothing (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Something would be hurt, and `--force` was not given.
    #[error("refusing to uninstall: {0} reason{s} above (--force prints the objects anyway)", s = if *.0 == 1 { "" } else { "s" })]
    Blocked(usize),
    /// Nothing of an install exists.
    #[error("nothing of Serin's found in this cluster (--namespace {0}): nothing to uninstall")]
    NothingFound(String),
    /// YAML rendering failed.
    #[error("rendering the objects as YAML: {0}")]
    Render(#[from] serde_norway::Error),
}

impl Uninstall {
    /// What `serin uninstall` shows: lines for stderr (objects left alone, then each reason
    /// not to uninstall, as errors or, with `force`, warnings) and the YAML for stdout, or why
    /// there is none.
    pub fn outcome(&self, namespace: &str, force: bool) -> (Vec<String>, Result<String, Refusal>) {
        let mut lines: Vec<String> = self
            .foreign
            .iter()
            .map(|f| {
                format!(
                    "note: {f} is not Serin's (no {}: {} label): left alone",
                    PART_OF.0, PART_OF.1
                )
            })
            .collect();
        let label = if force { "warning" } else { "error" };
        lines.extend(
            self.blockers
                .iter()
                .map(|b| format!("{label}: {} (hint: {})", b.message, b.hint)),
        );
        let result = if !self.blockers.is_empty() && !force {
            Err(Refusal::Blocked(self.blockers.len()))
        } else if self.objects.is_empty() {
            Err(Refusal::NothingFound(namespace.to_string()))
        } else {
            render(&self.objects).map_err(Refusal::from)
        };
        (lines, result)
    }
}

/// First lines of the rendered output.
pub const HEADER: &str = "# Serin: the objects of `serin install` found in this cluster; generated by `serin uninstall`.\n# Remove with: serin uninstall | kubectl delete -f -\n";

/// The objects as one multi-document YAML stream for `kubectl delete -f -`.
pub fn render(objects: &[Found]) -> Result<String, serde_norway::Error> {
    let mut out = String::from(HEADER);
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(o)?);
    }
    Ok(out)
}

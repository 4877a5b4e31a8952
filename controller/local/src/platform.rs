//! [`LocalPlatform`]: the local [`Workloads`] and [`Router`]. It keeps, per Canary, which spec
//! the primary runs and whether the canary is scaled up (persisted next to the status, so a
//! restarted controller knows), tells the [`Supervisor`] what to run, and publishes the ready
//! endpoints and weights to the control plane.
//!
//! Like a Deployment controller it also finishes what it started in the background: when a
//! promoted primary becomes ready, traffic moves to it (the routes file changes), and only once
//! every proxy runs the new routes is the old primary drained, so no request fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serin_core::{Readiness, Routes, TargetState};

use super::manifest::ProcessSpec;
use super::router::{ControlPlane, PodName, RouteSpec};
use super::store::write_atomic;
use super::supervisor::{InstanceView, Role, Supervisor};
use serin_controller::adapters::{
    AdapterError, CanaryContext, CanaryId, ErrorKind, Router, WorkloadState, Workloads,
};

/// How long `set_routes` waits for the proxies to run new weights before returning.
const ROUTE_PATIENCE: Duration = Duration::from_secs(5);

/// What is persisted per Canary about its workloads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    /// The spec the primary runs, and its directory; `None` before initialization.
    primary: Option<(ProcessSpec, PathBuf)>,
    /// Whether the canary (the target) is scaled up.
    canary_up: bool,
    /// Last weights set.
    primary_weight: u32,
    canary_weight: u32,
    /// Last session-affinity cookies set.
    #[serde(default)]
    affinity: Option<serin_core::AffinityRoutes>,
    /// The Canary is gone and handed its target back (revertOnDeletion): the target keeps
    /// running with all the traffic, as a Deployment outlives its Canary, until its `Process`
    /// manifest goes too. What it runs as is kept here, since no manifest says it any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    released: Option<Released>,
    /// What the Canary's target runs as, so that a controller that starts after the Canary's
    /// manifest went can stop the right processes and remove the right routes: the Canary's
    /// name need not be its target's nor its Service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runs_as: Option<Released>,
}

/// What a Canary's target runs as: its supervisor key and the Service it is routed as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Released {
    key: String,
    service: String,
    port: u16,
}

struct Entry {
    state: Persisted,
    /// `namespace/target`: the supervisor's key.
    key: String,
    service: String,
    port: u16,
    published: Option<RouteSpec>,
}

/// Target `Process` manifests by `namespace/name`, with their directories.
pub type Processes = BTreeMap<String, (ProcessSpec, PathBuf)>;

/// The local Workloads and Router.
pub struct LocalPlatform {
    supervisor: Arc<Supervisor>,
    control_plane: ControlPlane,
    state_dir: PathBuf,
    processes: Mutex<Processes>,
    /// Whether `processes` came from a directory whose every file was read.
    processes_complete: std::sync::atomic::AtomicBool,
    entries: Mutex<BTreeMap<CanaryId, Entry>>,
}

fn err(kind: ErrorKind, what: &str, message: impl Into<String>) -> AdapterError {
    AdapterError::new(kind, what, message)
}

impl LocalPlatform {
    /// A platform running processes through `supervisor` and routing through `control_plane`,
    /// keeping its own state in `state_dir`.
    pub fn new(
        supervisor: Arc<Supervisor>,
        control_plane: ControlPlane,
        state_dir: impl Into<PathBuf>,
    ) -> Arc<Self> {
        Arc::new(Self {
            supervisor,
            control_plane,
            state_dir: state_dir.into(),
            processes: Mutex::new(BTreeMap::new()),
            processes_complete: std::sync::atomic::AtomicBool::new(true),
            entries: Mutex::new(BTreeMap::new()),
        })
    }

    /// Replaces the known `Process` manifests (after a reload of the directory). `complete`:
    /// every manifest file was read; when some could not be, a `Process` missing from them may
    /// only be in a broken file, so a released target is not stopped for its absence.
    pub fn set_processes(&self, processes: Processes, complete: bool) {
        *self.processes.lock().unwrap_or_else(|p| p.into_inner()) = processes;
        self.processes_complete
            .store(complete, std::sync::atomic::Ordering::Relaxed);
    }

    fn target(&self, ns: &str, name: &str) -> Option<(ProcessSpec, PathBuf)> {
        self.processes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("{ns}/{name}"))
            .cloned()
    }

    fn state_file(&self, id: &CanaryId) -> PathBuf {
        self.state_dir
            .join(format!("{}_{}.workloads.json", id.namespace, id.name))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<CanaryId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a Canary (idempotent): loads its persisted state and adopts the processes an
    /// earlier controller left running.
    pub fn register(&self, ctx: &CanaryContext) {
        let (service, port) = match &ctx.spec {
            Some(n) => (n.service_name.clone(), n.port),
            None => (ctx.target.clone(), 80),
        };
        let key = format!("{}/{}", ctx.id.namespace, ctx.target);
        let mut entries = self.entries();
        if let Some(e) = entries.get_mut(&ctx.id) {
            e.service = service;
            e.port = port;
            if e.state.released.take().is_some() {
                tracing::info!(canary = %ctx.id, "its manifest is back: the released target is the Canary's again");
            }
            return;
        }
        let state: Persisted = std::fs::read(self.state_file(&ctx.id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Persisted {
                primary_weight: 100,
                ..Persisted::default()
            });
        self.supervisor.adopt(&key);
        entries.insert(
            ctx.id.clone(),
            Entry {
                state,
                key,
                service,
                port,
                published: None,
            },
        );
    }

    fn persist(&self, id: &CanaryId, state: &Persisted) -> Result<(), AdapterError> {
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| err(ErrorKind::Other, "encoding workload state", e.to_string()))?;
        write_atomic(&self.state_file(id), &bytes)
            .map_err(|e| err(ErrorKind::Other, "writing workload state", e.to_string()))
    }

    fn update(
        &self,
        id: &CanaryId,
        f: impl FnOnce(&mut Persisted),
    ) -> Result<(Persisted, String), AdapterError> {
        let (state, key) = {
            let mut entries = self.entries();
            let e = entries.get_mut(id).ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    "canary",
                    format!("{id} is not registered"),
                )
            })?;
            f(&mut e.state);
            e.state.runs_as = Some(Released {
                key: e.key.clone(),
                service: e.service.clone(),
                port: e.port,
            });
            (e.state.clone(), e.key.clone())
        };
        self.persist(id, &state)?;
        Ok((state, key))
    }

    /// The routing the current state and the ready instances call for.
    fn desired_routes(&self, id: &CanaryId) -> Option<RouteSpec> {
        let entries = self.entries();
        let e = entries.get(id)?;
        let instances = self.supervisor.instances(&e.key);
        let primary_hash = e.state.primary.as_ref().map(|(s, _)| s.content_hash());
        let target = e
            .key
            .split_once('/')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        let primary = primary_endpoints(&instances, primary_hash);
        let canary: Vec<std::net::SocketAddr> = instances
            .iter()
            .filter(|i| i.role == Role::Canary && i.ready)
            .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], i.port)))
            .collect();
        // Only the published endpoints' names: an instance still starting changes nothing.
        let mut pods = pod_names(&instances, &target);
        pods.retain(|a, _| primary.contains(a) || canary.contains(a));
        Some(RouteSpec {
            namespace: id.namespace.clone(),
            service: e.service.clone(),
            target,
            port: e.port,
            primary_weight: e.state.primary_weight,
            canary_weight: e.state.canary_weight,
            primary,
            canary,
            pods,
            affinity: e.state.affinity.clone(),
        })
    }

    /// Writes the routes file when what it should say changed; returns what is published.
    fn publish(&self, id: &CanaryId) -> Result<Option<RouteSpec>, AdapterError> {
        let Some(spec) = self.desired_routes(id) else {
            return Ok(None);
        };
        let mut entries = self.entries();
        let Some(e) = entries.get_mut(id) else {
            return Ok(None);
        };
        if e.published.as_ref() != Some(&spec) {
            self.control_plane
                .write(&spec)
                .map_err(|e| err(ErrorKind::Other, "writing the routes file", e.to_string()))?;
            tracing::info!(canary = %id, primary = spec.primary_weight, canary_weight = spec.canary_weight, primary_endpoints = ?spec.primary, canary_endpoints = ?spec.canary, "routes published");
            e.published = Some(spec.clone());
        }
        Ok(Some(spec))
    }

    /// One pass of background reconciliation for every registered Canary: keep the wanted
    /// instances running, publish endpoint changes, drain superseded primaries once traffic left
    /// them.
    pub async fn reconcile(&self) {
        let ids: Vec<CanaryId> = self.entries().keys().cloned().collect();
        for id in ids {
            let Some((state, key)) = self
                .entries()
                .get(&id)
                .map(|e| (e.state.clone(), e.key.clone()))
            else {
                continue;
            };
            if state.released.is_some() {
                let (ns, name) = key.split_once('/').unwrap_or(("default", &key));
                let complete = self
                    .processes_complete
                    .load(std::sync::atomic::Ordering::Relaxed);
                if complete && self.target(ns, name).is_none() {
                    tracing::info!(canary = %id, "the released target's Process manifest is gone: it stops");
                    self.forget(&id);
                    continue;
                }
            }
            if let Some((spec, dir)) = &state.primary
                && let Err(error) = self.supervisor.ensure(&key, Role::Primary, spec, dir)
            {
                tracing::warn!(canary = %id, %error, "cannot start the primary");
            }
            if state.canary_up {
                let (ns, name) = key.split_once('/').unwrap_or(("default", &key));
                if let Some((spec, dir)) = self.target(ns, name)
                    && let Err(error) = self.supervisor.ensure(&key, Role::Canary, &spec, &dir)
                {
                    tracing::warn!(canary = %id, %error, "cannot start the canary");
                }
            }
            let published = match self.publish(&id) {
                Ok(p) => p,
                Err(error) => {
                    tracing::warn!(canary = %id, %error, "cannot publish routes");
                    continue;
                }
            };
            let Some((primary_spec, _)) = &state.primary else {
                continue;
            };
            let hash = primary_spec.content_hash();
            let instances = self.supervisor.instances(&key);
            let stale = instances
                .iter()
                .any(|i| i.role == Role::Primary && i.spec_hash != hash && !i.retiring);
            let fresh_ready = instances
                .iter()
                .any(|i| i.role == Role::Primary && i.spec_hash == hash && i.ready);
            if stale
                && fresh_ready
                && let Some(spec) = published
                && spec.primary.iter().all(|ep| {
                    instances.iter().any(|i| {
                        i.spec_hash == hash && i.role == Role::Primary && i.port == ep.port()
                    })
                })
            {
                match self.control_plane.in_force(&spec).await {
                    Ok(true) => {
                        self.supervisor.retire_superseded_primaries(&key, hash);
                    }
                    Ok(false) => {}
                    Err(error) => tracing::debug!(canary = %id, %error, "routes not confirmed yet"),
                }
            }
        }
    }

    /// Waits (bounded) until the readiness of every adopted instance is known. Call after
    /// [`Self::register`] at start-up, before the first [`Self::reconcile`]: until then an
    /// adopted instance counts as not ready, and publishing that would take every endpoint out
    /// of the routes for a probe period.
    pub async fn await_adopted(&self, timeout: std::time::Duration) {
        let keys: Vec<(CanaryId, String)> = self
            .entries()
            .iter()
            .map(|(id, e)| (id.clone(), e.key.clone()))
            .collect();
        for (id, key) in keys {
            if !self.supervisor.await_probed(&key, timeout).await {
                tracing::warn!(canary = %id, "adopted instances not probed within {timeout:?}; publishing what is known");
            }
        }
    }

    /// Lets go of a Canary whose manifest was removed, after its last tick. As on Kubernetes,
    /// where the garbage collector deletes the `-primary` workload and the Services a Canary
    /// owns: its primary stops. With `reverted` (revertOnDeletion handed the target back) the
    /// target keeps running with all the traffic for as long as its `Process` manifest exists;
    /// otherwise it stops too and the Service's routes go.
    pub fn release(&self, id: &CanaryId, reverted: bool) {
        let Some((key, service, port)) = self
            .entries()
            .get(id)
            .map(|e| (e.key.clone(), e.service.clone(), e.port))
        else {
            return;
        };
        self.supervisor.stop_role(&key, Role::Primary);
        if !reverted {
            self.forget(id);
            tracing::info!(canary = %id, "removed: its processes stop and its routes go (set revertOnDeletion to keep the target serving)");
            return;
        }
        let kept = self.update(id, |s| {
            s.primary = None;
            s.canary_up = true;
            s.primary_weight = 0;
            s.canary_weight = 100;
            s.released = Some(Released { key, service, port });
        });
        if let Err(error) = kept {
            tracing::warn!(canary = %id, %error, "cannot record the released target");
        }
        tracing::info!(canary = %id, "removed: its primary stops; the target keeps running with all the traffic (revertOnDeletion)");
    }

    /// Stops everything `id` runs, removes its routes and its state, and unregisters it.
    fn forget(&self, id: &CanaryId) {
        let Some(e) = self.entries().remove(id) else {
            return;
        };
        self.supervisor.stop_role(&e.key, Role::Primary);
        self.supervisor.stop_role(&e.key, Role::Canary);
        self.control_plane.remove(&id.namespace, &e.service);
        let _ = std::fs::remove_file(self.state_file(id));
    }

    /// At start-up, after every Canary with a manifest is registered: takes back the targets
    /// that removed Canaries handed back (they keep running), and stops what Canaries removed
    /// while no controller ran left behind (their processes, routes and state), as the garbage
    /// collector would have. Without `clean_up` (a manifest file could not be read, so a
    /// Canary missing from the manifests may only be broken, not removed) nothing is stopped:
    /// what a Canary left behind stays as it is until its manifest reads again or a later start.
    pub fn adopt_leftovers(&self, clean_up: bool) {
        let Ok(dir) = std::fs::read_dir(&self.state_dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in &files {
            let Some((ns, name)) = state_file_id(path, ".workloads.json") else {
                continue;
            };
            let id = CanaryId::new(ns, name);
            if self.entries().contains_key(&id) {
                continue;
            }
            let state: Option<Persisted> = std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let released = state.as_ref().and_then(|s| s.released.clone());
            if released.is_none() && !clean_up {
                tracing::warn!(canary = %id, "no readable manifest for it, but a manifest file has errors: what it runs is left as it is until the file is fixed");
                continue;
            }
            // State written before `runsAs` existed: the Canary's name, as most Canaries are
            // named after their target.
            let runs_as = released
                .clone()
                .or_else(|| state.as_ref().and_then(|s| s.runs_as.clone()));
            let key = runs_as
                .as_ref()
                .map_or_else(|| format!("{ns}/{name}"), |r| r.key.clone());
            self.supervisor.adopt(&key);
            let (service, port) = runs_as
                .as_ref()
                .map_or_else(|| (name.to_string(), 80), |r| (r.service.clone(), r.port));
            self.entries().insert(
                id.clone(),
                Entry {
                    state: state.unwrap_or_default(),
                    key,
                    service,
                    port,
                    published: None,
                },
            );
            if released.is_some() {
                tracing::info!(canary = %id, "adopting the target its removed Canary handed back");
            } else {
                tracing::info!(canary = %id, "its manifest was removed while no controller ran: its processes stop and its routes go");
                self.forget(&id);
            }
        }
        // Process records of no known workload (state written by an older controller).
        if !clean_up {
            return;
        }
        let keys: std::collections::BTreeSet<String> =
            self.entries().values().map(|e| e.key.clone()).collect();
        for path in &files {
            let Some((ns, name)) = state_file_id(path, ".processes.json") else {
                continue;
            };
            let key = format!("{ns}/{name}");
            if keys.contains(&key) {
                continue;
            }
            self.supervisor.adopt(&key);
            self.supervisor.stop_role(&key, Role::Primary);
            self.supervisor.stop_role(&key, Role::Canary);
        }
    }

    /// Stops every process (for `--stop-workloads-on-exit` and the demo).
    pub async fn shutdown(&self) {
        self.supervisor.shutdown().await;
    }
}

/// The namespace and name in a state file named `<namespace>_<name><suffix>`. Namespaces and
/// names hold no '_' (they are DNS labels), so the first one separates them.
fn state_file_id<'a>(path: &'a Path, suffix: &str) -> Option<(&'a str, &'a str)> {
    path.file_name()?
        .to_str()?
        .strip_suffix(suffix)?
        .split_once('_')
}

/// The metric names of the instances' processes: the primary's as the `<target>-primary`
/// workload's pods, the canary's as the `<target>` workload's (see [`PodName`]).
fn pod_names(instances: &[InstanceView], target: &str) -> BTreeMap<std::net::SocketAddr, PodName> {
    let mut seen: BTreeMap<(Role, u64), usize> = BTreeMap::new();
    instances
        .iter()
        .map(|i| {
            let workload = match i.role {
                Role::Primary => format!("{target}-primary"),
                Role::Canary => target.to_string(),
            };
            let index = seen.entry((i.role, i.spec_hash)).or_default();
            let name = PodName::new(&workload, i.spec_hash, *index);
            *index += 1;
            (std::net::SocketAddr::from(([127, 0, 0, 1], i.port)), name)
        })
        .collect()
}

/// Primary endpoints: the ready instances of the current primary spec when there are any,
/// otherwise the ready older ones (still serving during a promotion).
fn primary_endpoints(instances: &[InstanceView], hash: Option<u64>) -> Vec<std::net::SocketAddr> {
    let ready: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.role == Role::Primary && i.ready)
        .collect();
    let current: Vec<&InstanceView> = ready
        .iter()
        .copied()
        .filter(|i| Some(i.spec_hash) == hash)
        .collect();
    let chosen = if current.is_empty() { ready } else { current };
    chosen
        .into_iter()
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], i.port)))
        .collect()
}

fn readiness(instances: &[InstanceView], role: Role, hash: u64, desired: u32) -> Readiness {
    let mine = |i: &&InstanceView| i.role == role && !i.retiring;
    Readiness {
        desired,
        updated: instances
            .iter()
            .filter(mine)
            .filter(|i| i.spec_hash == hash)
            .count() as u32,
        available: instances
            .iter()
            .filter(mine)
            .filter(|i| i.spec_hash == hash && i.ready)
            .count() as u32,
        total: instances.iter().filter(mine).count() as u32,
        settled: true,
        deadline_exceeded: false,
        unavailable_since: None,
    }
}

#[async_trait]
impl Workloads for LocalPlatform {
    async fn observe(&self, ctx: &CanaryContext) -> Result<WorkloadState, AdapterError> {
        self.register(ctx);
        let target = self.target(&ctx.id.namespace, &ctx.target);
        let (state, key) = self
            .entries()
            .get(&ctx.id)
            .map(|e| (e.state.clone(), e.key.clone()))
            .ok_or_else(|| err(ErrorKind::NotFound, "canary", "not registered"))?;
        let instances = self.supervisor.instances(&key);
        let primary = state
            .primary
            .as_ref()
            .map(|(spec, _)| readiness(&instances, Role::Primary, spec.content_hash(), 1));
        let canary = match (&target, state.canary_up) {
            (Some((spec, _)), true) => {
                Some(readiness(&instances, Role::Canary, spec.content_hash(), 1))
            }
            _ => Some(Readiness {
                desired: 0,
                updated: 0,
                available: 0,
                total: 0,
                settled: true,
                deadline_exceeded: false,
                unavailable_since: None,
            }),
        };
        Ok(WorkloadState {
            // The spec's content hash is tracked like a config: a changed command, args or env
            // under the same revision name (`serin rollout NAME --revision v2 --env X=1` after
            // a failed v2) is a new run, as a changed ConfigMap is for Flagger, instead of a
            // change nobody acts on.
            target: target.map(|(spec, _)| TargetState {
                revision: spec.revision(),
                configs: BTreeMap::from([(
                    "process-spec".to_string(),
                    format!("{:016x}", spec.content_hash()),
                )]),
            }),
            primary,
            canary,
        })
    }

    async fn initialize_primary(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        self.register(ctx);
        let target = self.target(&ctx.id.namespace, &ctx.target);
        let (state, key) = self.update(&ctx.id, |s| {
            // The primary changes only by promotion: once set, a new target is the canary's.
            if s.primary.is_none() {
                s.primary = target.clone();
            }
        })?;
        let Some((spec, dir)) = &state.primary else {
            return Err(err(
                ErrorKind::NotFound,
                "initializing the primary",
                format!(
                    "Process {}/{} does not exist in the manifest directory",
                    ctx.id.namespace, ctx.target
                ),
            ));
        };
        self.supervisor
            .ensure(&key, Role::Primary, spec, dir)
            .map_err(|e| err(ErrorKind::Other, "starting the primary", e.to_string()))?;
        self.publish(&ctx.id)?;
        Ok(())
    }

    async fn scale_canary_to_zero(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        self.register(ctx);
        let (_, key) = self.update(&ctx.id, |s| s.canary_up = false)?;
        self.supervisor.stop_role(&key, Role::Canary);
        self.publish(&ctx.id)?;
        Ok(())
    }

    async fn scale_canary_up(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        self.register(ctx);
        let (spec, dir) = self.target(&ctx.id.namespace, &ctx.target).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                "scaling the canary up",
                format!(
                    "Process {}/{} does not exist in the manifest directory",
                    ctx.id.namespace, ctx.target
                ),
            )
        })?;
        let (_, key) = self.update(&ctx.id, |s| s.canary_up = true)?;
        self.supervisor
            .ensure(&key, Role::Canary, &spec, &dir)
            .map_err(|e| err(ErrorKind::Other, "starting the canary", e.to_string()))?;
        Ok(())
    }

    async fn promote(&self, ctx: &CanaryContext, revision: &str) -> Result<(), AdapterError> {
        self.register(ctx);
        let (spec, dir) = self.target(&ctx.id.namespace, &ctx.target).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                "promoting",
                format!("Process {}/{} does not exist", ctx.id.namespace, ctx.target),
            )
        })?;
        if spec.revision() != revision {
            return Err(err(
                ErrorKind::Conflict,
                "promoting",
                format!(
                    "the target now runs revision {} instead of {revision}",
                    spec.revision()
                ),
            ));
        }
        let (_, key) = self.update(&ctx.id, |s| s.primary = Some((spec.clone(), dir.clone())))?;
        tracing::info!(canary = %ctx.id, revision, "promoting: starting a primary on the new revision");
        self.supervisor
            .ensure(&key, Role::Primary, &spec, &dir)
            .map_err(|e| err(ErrorKind::Other, "starting the new primary", e.to_string()))?;
        Ok(())
    }

    async fn revert(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        // Hand the target back: it runs as itself (the canary instances) with all traffic.
        self.scale_canary_up(ctx).await
    }
}

#[async_trait]
impl Router for LocalPlatform {
    async fn set_routes(&self, ctx: &CanaryContext, routes: &Routes) -> Result<(), AdapterError> {
        self.register(ctx);
        self.update(&ctx.id, |s| {
            s.primary_weight = routes.primary_weight;
            s.canary_weight = routes.canary_weight;
            s.affinity = routes.affinity.clone();
        })?;
        let Some(spec) = self.publish(&ctx.id)? else {
            return Ok(());
        };
        // Wait briefly for the proxies, so an action that follows (stopping the canary after its
        // weight went to 0) never races the new routes; the driver still checks `in_force`.
        let deadline = tokio::time::Instant::now() + ROUTE_PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if let Ok(true) = self.control_plane.in_force(&spec).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!(canary = %ctx.id, "routes not confirmed by every proxy within {:?}", ROUTE_PATIENCE);
        Ok(())
    }

    async fn in_force(&self, ctx: &CanaryContext, _routes: &Routes) -> Result<bool, AdapterError> {
        let Some(spec) = self.desired_routes(&ctx.id) else {
            return Ok(true);
        };
        self.control_plane
            .in_force(&spec)
            .await
            .map_err(|e| err(ErrorKind::Other, "checking routes", e))
    }

    async fn revert(&self, ctx: &CanaryContext) -> Result<(), AdapterError> {
        let routes = Routes {
            primary_weight: 0,
            canary_weight: 100,
            ..Routes::all_primary()
        };
        self.set_routes(ctx, &routes).await
    }
}

/// The state directory's files for one Canary (for tools and tests).
pub fn workload_state_file(state_dir: &Path, id: &CanaryId) -> PathBuf {
    state_dir.join(format!("{}_{}.workloads.json", id.namespace, id.name))
}

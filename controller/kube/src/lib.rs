//! `serin-kube`: everything Serin knows about Kubernetes. The controller is a kube-rs
//! [`Controller`] on Canaries that also watches what it owns (primary Deployments and DaemonSets,
//! Services) and the targets themselves (a new revision is acted on at once, see [`watch`]), ticks
//! each Canary at its analysis interval through the platform-neutral [`Driver`] of
//! `serin-controller`, and writes status with server-side apply. The CLI's cluster client
//! ([`source`]) and the dashboard's store over a cluster ([`dashboard`]) live here too.
//!
//! State lives only in the Canary's status, so a restarted controller resumes mid-rollout.
//!
//! Not here: rollout decisions (`serin-core`), the adapter traits and the driver
//! (`serin-controller`), anything one-machine (`serin-local`).

pub mod admission;
pub mod analysis;
pub mod check;
pub mod dashboard;
pub mod inject;
pub mod injector;
pub mod install;
mod lease;
pub mod notify;
pub mod routing;
mod run;
pub mod services;
pub mod source;
pub mod status;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod uninjected;
pub mod watch;
pub mod workloads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use serin_api::{Canary, TargetKind};
use serin_core::Timestamp;

pub use lease::{LeaderElection, LeaseConfig};
use routing::{ConvergenceProbe, KubeRouter, parse_provider};
pub use run::{ControlPlaneProbe, KubernetesOptions, NoBackendAnalyzer, RunError, run, run_with};
use status::{
    CONDITION_IGNORED, CONDITION_PROVIDER, CONDITION_SYNCED, CONDITION_VALID, KubeStore,
    RuntimeCondition,
};
use workloads::{KubeWorkloads, template_revision};

use serin_controller::adapters::{AdapterError, Analyzer, ErrorKind};
use serin_controller::alerts::AlertClient;
use serin_controller::driver::{Driver, DriverError, Schedule, TickOutcome};
use serin_controller::hooks::HttpHooks;
use serin_controller::http::HttpClient;
use serin_controller::metrics::{Health, Metrics};
use serin_controller::webhook::WebhookClient;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "serin";
/// Finalizer that makes deletion wait for `revertOnDeletion`.
pub const FINALIZER: &str = "serin.dev/finalizer";

/// Maps a kube error to an [`AdapterError`] with a stable kind.
pub fn kube_error(e: kube::Error, what: impl Into<String>) -> AdapterError {
    let kind = match &e {
        kube::Error::Api(s) => match s.code {
            409 => ErrorKind::Conflict,
            404 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::Forbidden,
            408 | 504 => ErrorKind::Timeout,
            400 | 422 => ErrorKind::Invalid,
            _ => ErrorKind::Other,
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    };
    let message = match &e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    };
    AdapterError::new(kind, what, message).with_source(e)
}

/// The controller owner reference to `canary` (garbage collection of what Serin creates).
pub fn owner_reference(canary: &Canary) -> OwnerReference {
    let mut o = canary.controller_owner_ref(&()).unwrap_or(OwnerReference {
        api_version: serin_api::API_VERSION.into(),
        kind: "Canary".into(),
        name: canary.name_any(),
        uid: canary.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    });
    o.block_owner_deletion = Some(true);
    o
}

/// A clock, so tests can pin time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| Timestamp::from_system_time(std::time::SystemTime::now()))
}

/// What the Kubernetes controller needs besides a client.
#[derive(Clone)]
pub struct KubeConfig {
    /// Provider for Canaries that set none (`serin`).
    pub default_provider: String,
    /// Metric checks and judge.
    pub analyzer: Arc<dyn Analyzer>,
    /// Asks Serin's control plane whether a weight is in force; `None` assumes it is.
    pub probe: Option<Arc<dyn ConvergenceProbe>>,
    /// Watch only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Name reported on Events.
    pub reporter: String,
    /// Pod name reported on Events and used as the Lease holder identity.
    pub instance: Option<String>,
    /// Time source.
    pub clock: Clock,
    /// Webhook retry backoff base.
    pub webhook_backoff: Duration,
}

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    config: KubeConfig,
    metrics: Arc<Metrics>,
    http: HttpClient,
    recorder: Recorder,
    failures: Mutex<HashMap<(String, String), u32>>,
    targets: Arc<watch::TargetRevisions>,
    ticks: watch::TickSchedule,
    schedule: Arc<Schedule>,
    stores: Option<watch::Stores>,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, config: KubeConfig, metrics: Arc<Metrics>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: config.reporter.clone(),
                instance: config.instance.clone(),
            },
        );
        Self {
            client,
            config,
            metrics,
            http: HttpClient::new(),
            recorder,
            failures: Mutex::new(HashMap::new()),
            targets: Arc::default(),
            ticks: watch::TickSchedule::default(),
            schedule: Arc::default(),
            stores: None,
        }
    }

    /// Reads workloads and Services from `stores` (what the controller's watches hold) instead
    /// of GETting them.
    pub fn with_stores(mut self, stores: watch::Stores) -> Self {
        self.stores = Some(stores);
        self
    }

    /// Target revisions seen by the watch (shared with the watch's mapper).
    pub fn targets(&self) -> Arc<watch::TargetRevisions> {
        self.targets.clone()
    }

    /// The controller's metrics (tick lateness, errors, the Canaries' series).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The tick failed.
    #[error(transparent)]
    Tick(#[from] DriverError),
    /// A direct API call (finalizer, status) failed.
    #[error(transparent)]
    Api(#[from] AdapterError),
}

impl ReconcileError {
    fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::Tick(e) => e.kind(),
            ReconcileError::Api(e) => e.kind,
        }
    }
}

fn has_finalizer(c: &Canary) -> bool {
    c.finalizers().iter().any(|f| f == FINALIZER)
}

async fn set_finalizer(client: &Client, c: &Canary, present: bool) -> Result<(), AdapterError> {
    let ns = c.namespace().unwrap_or_default();
    let name = c.name_any();
    let mut list: Vec<String> = c
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        list.push(FINALIZER.to_string());
    }
    // The resourceVersion makes this a compare-and-swap: a concurrent edit gets a 409, not a
    // lost finalizer.
    let patch = json!({"metadata": {"finalizers": list, "resourceVersion": c.resource_version()}});
    let api: Api<Canary> = Api::namespaced(client.clone(), &ns);
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| kube_error(e, format!("updating finalizers of canary {ns}/{name}")))
}

/// Writes only runtime conditions (the engine state is kept as it is).
async fn write_conditions(
    ctx: &Context,
    canary: &Canary,
    conds: Vec<RuntimeCondition>,
) -> Result<(), AdapterError> {
    let now = (ctx.config.clock)();
    let body = status::status_body(
        canary,
        &status::engine_status(canary),
        &[],
        &conds,
        None,
        now,
    );
    status::apply_status(&ctx.client, canary, &body).await
}

fn cond(
    type_: &'static str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
) -> RuntimeCondition {
    RuntimeCondition {
        type_,
        ok,
        reason: reason.to_string(),
        message: message.into(),
    }
}

/// Reconciles one Canary: one tick of the driver, then a requeue when the next tick is due.
#[tracing::instrument(skip_all, fields(canary = %canary.name_any(), ns = %canary.namespace().unwrap_or_default()))]
pub async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue, ReconcileError> {
    let ns = canary.namespace().unwrap_or_default();
    let name = canary.name_any();
    let deleting = canary.meta().deletion_timestamp.is_some();
    if let Some(late) = ctx.ticks.started(&ns, &name, (ctx.config.clock)()) {
        ctx.metrics.tick_late(late);
    }
    if deleting && !has_finalizer(&canary) {
        ctx.schedule
            .forget(&serin_controller::adapters::CanaryId::new(&ns, &name));
        ctx.metrics
            .canary_gone(&name, &ns, &canary.spec.target_ref.name);
        return Ok(Requeue::await_change());
    }

    // A Canary that fails validation gets a condition naming the field, and waits for an edit.
    let (normalized, mut cctx) = match serin_controller::plan::context(&ns, &canary) {
        Ok(x) => x,
        Err(errors) => {
            let message = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(%message, "invalid canary");
            write_conditions(
                &ctx,
                &canary,
                vec![cond(CONDITION_VALID, false, "InvalidSpec", message)],
            )
            .await?;
            if deleting {
                set_finalizer(&ctx.client, &canary, false).await?;
            }
            return Ok(Requeue::await_change());
        }
    };
    let provider_name = normalized
        .provider
        .clone()
        .unwrap_or_else(|| ctx.config.default_provider.clone());
    // The same verdict and words as `serin validate` (exit 3): a valid Canary this Serin does
    // not run says so on ProviderSupported.
    let runnable = match serin_api::support::canary_verdict(&canary, &provider_name) {
        serin_api::support::Verdict::Runnable => {
            parse_provider(&provider_name).map_err(|e| e.to_string())
        }
        serin_api::support::Verdict::NotRunnable(reasons) => Err(reasons.join("; ")),
    };
    let provider = match runnable {
        Ok(p) => p,
        Err(e) => {
            write_conditions(
                &ctx,
                &canary,
                vec![
                    cond(CONDITION_VALID, true, "Valid", "the spec is valid"),
                    cond(CONDITION_PROVIDER, false, "UnsupportedProvider", e),
                ],
            )
            .await?;
            if deleting {
                set_finalizer(&ctx.client, &canary, false).await?;
            }
            return Ok(Requeue::await_change());
        }
    };

    // revertOnDeletion needs a finalizer so the target is handed back before the Canary goes.
    if !deleting && normalized.revert_on_deletion != has_finalizer(&canary) {
        set_finalizer(&ctx.client, &canary, normalized.revert_on_deletion).await?;
        // The edit triggers a new reconcile with the updated object.
        return Ok(Requeue::await_change());
    }

    let mut runtime = vec![
        cond(CONDITION_VALID, true, "Valid", "the spec is valid"),
        cond(
            CONDITION_PROVIDER,
            true,
            "Supported",
            format!("routing with provider {provider_name}"),
        ),
    ];
    let ignored = routing::ignored_fields(&canary, &provider);
    if !ignored.is_empty() {
        runtime.push(cond(
            CONDITION_IGNORED,
            true,
            "NotUsedByProvider",
            format!(
                "accepted but not used with provider {provider_name}: {}",
                ignored.join(", ")
            ),
        ));
    }
    runtime.push(cond(
        CONDITION_SYNCED,
        true,
        "Synced",
        "the last tick completed",
    ));

    // Signed webhooks: their keys come from Secrets. Without its key a gate cannot be called
    // as configured, so the tick waits (Synced=False names the field) instead of calling
    // unsigned; on deletion the Canary must still go, so a missing key is only logged.
    if let Err(e) = signing_keys(&ctx.client, &ns, &normalized, &mut cctx).await {
        if deleting {
            tracing::warn!(error = %e, "webhook signing key unavailable during deletion");
        } else {
            runtime.retain(|c| c.type_ != CONDITION_SYNCED);
            runtime.push(cond(
                CONDITION_SYNCED,
                false,
                error_reason(e.kind),
                e.to_string(),
            ));
            if let Err(we) = write_conditions(&ctx, &canary, runtime).await {
                tracing::debug!(error = %we, "could not record the error on the canary");
            }
            return Err(e.into());
        }
    }

    let now = (ctx.config.clock)();
    let normalized = Arc::new(normalized);
    cctx.spec = Some(normalized.clone());
    cctx.target_changed = ctx.targets.changed_for(&canary);
    if let Some(stores) = &ctx.stores {
        // Until every watch has listed, an object missing from a store may still exist.
        if tokio::time::timeout(STORES_READY_WAIT, stores.ready())
            .await
            .map_or(true, |ready| !ready)
        {
            return Err(AdapterError::new(
                ErrorKind::Timeout,
                "watching Deployments, DaemonSets and Services",
                "the watches have not listed yet (check the controller's list/watch permissions)",
            )
            .into());
        }
    }
    let workloads = Arc::new(
        KubeWorkloads::new(ctx.client.clone(), canary.clone(), normalized.clone())
            .with_stores(ctx.stores.clone()),
    );
    let router = KubeRouter::new(
        ctx.client.clone(),
        canary.clone(),
        normalized.clone(),
        provider,
        ctx.config.probe.clone(),
        workloads.clone(),
    );
    let store = KubeStore::new(ctx.client.clone(), canary.clone(), runtime.clone(), now);
    let driver = Driver {
        workloads,
        router: Arc::new(router),
        analyzer: ctx.config.analyzer.clone(),
        hooks: Arc::new(HttpHooks::new(
            WebhookClient::new(ctx.http.clone()).with_backoff(ctx.config.webhook_backoff),
        )),
        store: Arc::new(store),
        notifier: Arc::new(notify::KubeNotifier::new(
            ctx.client.clone(),
            AlertClient::new(ctx.http.clone()),
            ctx.metrics.clone(),
        )),
        events: Arc::new(notify::KubeEvents::new(
            ctx.recorder.clone(),
            canary.clone(),
        )),
        metrics: ctx.metrics.clone(),
        schedule: ctx.schedule.clone(),
    };

    let outcome = match driver.tick(&cctx, deleting, now).await {
        Ok(o) => o,
        Err(e) => {
            // Say on the Canary why it is stuck; the error itself drives the backoff.
            runtime.retain(|c| c.type_ != CONDITION_SYNCED);
            runtime.push(cond(
                CONDITION_SYNCED,
                false,
                error_reason(e.kind()),
                e.to_string(),
            ));
            if let Err(we) = write_conditions(&ctx, &canary, runtime).await {
                tracing::debug!(error = %we, "could not record the error on the canary");
            }
            return Err(e.into());
        }
    };
    if let Ok(mut f) = ctx.failures.lock() {
        f.remove(&(ns.clone(), name.clone()));
    }
    if deleting {
        // The driver has reverted the target (revertOnDeletion); let the deletion proceed.
        if let TickOutcome::Stepped { .. } = outcome {
            set_finalizer(&ctx.client, &canary, false).await?;
            ctx.schedule
                .forget(&serin_controller::adapters::CanaryId::new(&ns, &name));
            ctx.metrics
                .canary_gone(&name, &ns, &canary.spec.target_ref.name);
        }
        return Ok(Requeue::await_change());
    }
    let next = match outcome.requeue_after(now) {
        Some(d) => d.max(Duration::from_millis(500)),
        None => normalized.interval,
    };
    // Due from when the requeue starts counting (the end of this reconcile), so the lateness is
    // the queue's, not this tick's own duration.
    ctx.ticks.due(&ns, &name, (ctx.config.clock)() + next);
    Ok(Requeue::requeue(next))
}

/// Reads the HMAC key of every signed webhook from its Secret in the Canary's namespace into
/// the webhook's [`serin_controller::adapters::HookConfig`].
pub async fn signing_keys(
    client: &Client,
    ns: &str,
    n: &serin_api::Normalized,
    cctx: &mut serin_controller::adapters::CanaryContext,
) -> Result<(), AdapterError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for (hook, field, sref) in serin_controller::plan::signing_secrets(n) {
        let secret = secrets
            .get_opt(&sref.name)
            .await
            .map_err(|e| kube_error(e, format!("{field}: reading Secret {ns}/{}", sref.name)))?
            .ok_or_else(|| {
                AdapterError::new(
                    ErrorKind::NotFound,
                    field.clone(),
                    format!(
                        "Secret {ns}/{} does not exist; create it with the HMAC key under {:?}",
                        sref.name, sref.key
                    ),
                )
            })?;
        let key = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&sref.key))
            .map(|b| b.0.clone())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                AdapterError::new(
                    ErrorKind::Invalid,
                    format!("{field}.key"),
                    format!(
                        "Secret {ns}/{} has no non-empty key {:?}",
                        sref.name, sref.key
                    ),
                )
            })?;
        if let Some(h) = cctx.hooks.get_mut(&hook) {
            h.signing_key = Some(key);
        }
    }
    Ok(())
}

fn error_reason(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Conflict => "Conflict",
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Forbidden => "Forbidden",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::Invalid => "Invalid",
        ErrorKind::Other => "Error",
    }
}

/// Backoff after a failed reconcile: exponential per Canary from 1s (conflicts retry at once,
/// permission errors slowly, since a human has to fix RBAC), capped at 5 minutes.
pub fn backoff(kind: ErrorKind, failures: u32) -> Duration {
    let base = match kind {
        ErrorKind::Conflict => Duration::from_millis(200),
        ErrorKind::Forbidden => Duration::from_secs(30),
        _ => Duration::from_secs(1),
    };
    base.saturating_mul(1u32 << failures.min(10))
        .min(Duration::from_secs(300))
}

/// The error policy: count, log, requeue with backoff.
pub fn error_policy(canary: Arc<Canary>, error: &ReconcileError, ctx: Arc<Context>) -> Requeue {
    let kind = error.kind();
    ctx.metrics.error(kind.as_str());
    let key = (canary.namespace().unwrap_or_default(), canary.name_any());
    let n = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(key).or_insert(0);
            *n += 1;
            *n - 1
        }
        Err(_) => 0,
    };
    let delay = backoff(kind, n);
    tracing::warn!(canary = %canary.name_any(), error = %error, kind = kind.as_str(), retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Requeue::requeue(delay)
}

/// How long a reconcile waits for the watches' first lists before it fails (and backs off).
pub const STORES_READY_WAIT: Duration = Duration::from_secs(30);

/// At most this many Canaries reconcile at once. A cold start with thousands of Canaries then
/// queues them instead of sending every apply to the API server together (unbounded, 1,000
/// Canaries drew 504 Gateway Timeouts on ~3,000 simultaneous Service applies); failed reconciles
/// back off per error kind (see [`error_policy`]).
pub const MAX_CONCURRENT_RECONCILES: u16 = 16;

/// Runs the controller until `shutdown` resolves.
pub async fn run_controller(
    client: Client,
    config: KubeConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (canaries, deployments, daemonsets, services): (
        Api<Canary>,
        Api<Deployment>,
        Api<DaemonSet>,
        Api<Service>,
    ) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=serin");
    // Each watch feeds a store the adapters read (no GET of what a watch holds) and triggers
    // the Canaries it concerns. Managed fields are dropped: nothing reads them, and they are a
    // good part of each object's size.
    let (stores, writers) = watch::Stores::new();
    let deployments = watcher(deployments, watcher::Config::default())
        .default_backoff()
        .modify(|d: &mut Deployment| d.managed_fields_mut().clear())
        .reflect(writers.deployments)
        .touched_objects();
    let daemonsets = watcher(daemonsets, watcher::Config::default())
        .default_backoff()
        .modify(|d: &mut DaemonSet| d.managed_fields_mut().clear())
        .reflect(writers.daemonsets)
        .touched_objects();
    let services = watcher(services, owned)
        .default_backoff()
        .modify(|s: &mut Service| s.managed_fields_mut().clear())
        .reflect(writers.services)
        .touched_objects();
    let ctx = Arc::new(Context::new(client, config, metrics).with_stores(stores));
    let controller = Controller::new(canaries, watcher::Config::default());
    // Deployments and DaemonSets are watched once each, for two reasons: the primaries the
    // Canaries own, and the targets, whose new revisions must not wait for the next interval.
    let (store, targets) = (controller.store(), ctx.targets());
    let on_deployment = move |d: Deployment| {
        let (ns, name) = (d.namespace().unwrap_or_default(), d.name_any());
        let template = d.spec.as_ref().map(|s| &s.template);
        if let Some(t) = template {
            targets.seen(&ns, TargetKind::Deployment, &name, &template_revision(t));
        }
        let owners = d.owner_references();
        watch::canaries_to_wake(
            &store.state(),
            TargetKind::Deployment,
            &ns,
            &name,
            owners,
            template,
        )
    };
    let (store, targets) = (controller.store(), ctx.targets());
    let on_daemonset = move |d: DaemonSet| {
        let (ns, name) = (d.namespace().unwrap_or_default(), d.name_any());
        let template = d.spec.as_ref().map(|s| &s.template);
        if let Some(t) = template {
            targets.seen(&ns, TargetKind::DaemonSet, &name, &template_revision(t));
        }
        let owners = d.owner_references();
        watch::canaries_to_wake(
            &store.state(),
            TargetKind::DaemonSet,
            &ns,
            &name,
            owners,
            template,
        )
    };
    let controller = controller
        .watches_stream(deployments, on_deployment)
        .watches_stream(daemonsets, on_daemonset)
        .owns_stream(services)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES),
        )
        .graceful_shutdown_on(shutdown);
    health.set_ready(true);
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

//! The controller itself: a kube-runtime [`Controller`] on Canaries with the watches that wake
//! them (targets, primaries, Services), bounded concurrency, and the error policy's backoff.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serin_api::{Canary, TargetKind};

use super::context::Context;
use super::reconcile::{ReconcileError, reconcile};
use super::route_watch::{RouteKind, RouteMeta};
use super::workloads::template_revision;
use super::{KubeConfig, watch};
use serin_controller::adapters::ErrorKind;
use serin_controller::metrics::{Health, Metrics};

/// The label on everything Serin manages (Services, routes), which its watches select.
const MANAGED_BY_SERIN: &str = "app.kubernetes.io/managed-by=serin";

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
            let n = f.entry(key.clone()).or_insert(0);
            *n += 1;
            *n - 1
        }
        Err(_) => 0,
    };
    // The API server's Retry-After (429, 503) is a floor: retrying sooner only adds load where
    // it asked for less.
    let asked = super::throttle::retry_after(error);
    let delay = backoff(kind, n).max(asked.unwrap_or_default());
    tracing::warn!(canary = %canary.name_any(), ns = %key.0, error = %error, kind = kind.as_str(), retry_in_ms = delay.as_millis() as u64, retry_after_s = asked.map(|d| d.as_secs()), "reconcile failed");
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
    let owned = watcher::Config::default().labels(MANAGED_BY_SERIN);
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
    let routes = stores.routes.clone();
    let routes_h = routes.clone();
    let (slices_client, config_namespace) = (client.clone(), config.namespace.clone());
    let watched = stores.clone();
    let (configmaps, secrets): (
        Api<PartialObjectMeta<ConfigMap>>,
        Api<PartialObjectMeta<Secret>>,
    ) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let configmaps = watcher(configmaps, watcher::Config::default())
        .default_backoff()
        .modify(|c: &mut PartialObjectMeta<ConfigMap>| c.managed_fields_mut().clear())
        .reflect(writers.configs.configmaps)
        .touched_objects();
    let secrets = watcher(secrets, watcher::Config::default())
        .default_backoff()
        .modify(|c: &mut PartialObjectMeta<Secret>| c.managed_fields_mut().clear())
        .reflect(writers.configs.secrets)
        .touched_objects();
    let (httproutes, trafficsplits) = (
        route_stream(
            &client,
            &config,
            RouteKind::HttpRoute,
            writers.routes.httproutes,
        ),
        route_stream(
            &client,
            &config,
            RouteKind::TrafficSplit,
            writers.routes.trafficsplits,
        ),
    );
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
    // A tracked config at a version a Canary has not read wakes the Canaries tracking it, and
    // their next tick observes (a config change starts a run, as Flagger's tracking does).
    let (store, targets, st) = (controller.store(), ctx.targets(), watched.clone());
    let on_configmap = move |c: PartialObjectMeta<ConfigMap>| {
        if !st.configs.config_map_changed(&c) {
            return Vec::new();
        }
        let ns = c.namespace().unwrap_or_default();
        let wake = watch::canaries_tracking(&store.state(), &st, &ns, &c.name_any(), false);
        wake.iter().for_each(|r| targets.config_changed(r));
        wake
    };
    let (store, targets, st) = (controller.store(), ctx.targets(), watched);
    let on_secret = move |c: PartialObjectMeta<Secret>| {
        if !st.configs.secret_changed(&c) {
            return Vec::new();
        }
        let ns = c.namespace().unwrap_or_default();
        let wake = watch::canaries_tracking(&store.state(), &st, &ns, &c.name_any(), true);
        wake.iter().for_each(|r| targets.config_changed(r));
        wake
    };
    // Endpoints of Serin's Services (the EndpointSlice controller copies a Service's labels to
    // its slices, so the selector holds Serin's and nothing else): a canary or primary pod
    // becoming ready wakes the Canary waiting for it. The workload's status follows the same
    // readiness once the ReplicaSet and Deployment controllers caught up; whichever change
    // comes first wakes the Canary, which reads readiness from the workload's status.
    let slices: Api<EndpointSlice> = match &config_namespace {
        Some(ns) => Api::namespaced(slices_client.clone(), ns),
        None => Api::all(slices_client.clone()),
    };
    let slices = watcher(slices, watcher::Config::default().labels(MANAGED_BY_SERIN))
        .default_backoff()
        .touched_objects();
    let (store, st) = (controller.store(), ctx.stores.clone());
    let on_slice = move |s: EndpointSlice| {
        st.as_ref()
            .and_then(|st| watch::canary_of_endpoints(&store.state(), st, &s))
    };
    let controller = controller
        .watches_stream(deployments, on_deployment)
        .watches_stream(slices, on_slice)
        .watches_stream(configmaps, on_configmap)
        .watches_stream(secrets, on_secret)
        .watches_stream(daemonsets, on_daemonset)
        .owns_stream(services)
        .watches_stream_with(
            httproutes,
            move |r| routes_h.canary_to_wake(RouteKind::HttpRoute, &r),
            RouteKind::HttpRoute.watched(),
        )
        .watches_stream_with(
            trafficsplits,
            move |r| routes.canary_to_wake(RouteKind::TrafficSplit, &r),
            RouteKind::TrafficSplit.watched(),
        )
        .with_config(
            kube::runtime::controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES),
        )
        .graceful_shutdown_on(shutdown);
    health.set_ready(true);
    let deliveries = ctx.deliveries().clone();
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    // The reconciles are done; what they queued gets a short while to go out before the
    // process hands over (and a lost lease's replica exits well before a standby may lead).
    deliveries.shutdown().await;
}

/// The watch of one route kind (metadata only, Serin's own objects), feeding `writer`. Its CRD
/// may not be installed: the list then fails and is retried slowly, not every 30 s.
fn route_stream(
    client: &Client,
    config: &KubeConfig,
    kind: RouteKind,
    writer: kube::runtime::reflector::store::Writer<RouteMeta>,
) -> impl futures::Stream<Item = Result<RouteMeta, watcher::Error>> + Send + 'static {
    let ar = kind.watched();
    let api: Api<RouteMeta> = match &config.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let owned = watcher::Config::default().labels(MANAGED_BY_SERIN);
    watcher(api, owned)
        .backoff(SlowBackoff::default())
        .modify(|r: &mut RouteMeta| r.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects()
}

/// Retries of a watch whose resource may not exist: doubling from 1 s up to 5 minutes, from 1 s
/// again once it lists.
#[derive(Debug, Default)]
struct SlowBackoff(u32);

impl Iterator for SlowBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let delay = Duration::from_secs(1u64 << self.0.min(9)).min(Duration::from_secs(300));
        self.0 = self.0.saturating_add(1);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for SlowBackoff {
    fn reset(&mut self) {
        self.0 = 0;
    }
}

//! The controller itself: a kube-runtime [`Controller`] on Canaries with the watches that wake
//! them (targets, primaries, Services), bounded concurrency, and the error policy's backoff.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serin_api::{Canary, TargetKind};

use super::context::Context;
use super::reconcile::{ReconcileError, reconcile};
use super::workloads::template_revision;
use super::{KubeConfig, watch};
use serin_controller::adapters::ErrorKind;
use serin_controller::metrics::{Health, Metrics};

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

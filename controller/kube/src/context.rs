//! [`Context`]: what every reconcile shares — the client, the watches' stores, the driver with
//! its adapters (built once, see [`crate::adapters`]), metrics, and what the controller
//! remembers between reconciles (tick schedule, failure counts, target revisions, our last
//! writes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use serin_api::Canary;

use super::KubeConfig;
use super::adapters::{KubeAdapters, LastWrites, Reconciling};
use super::notify::KubeNotifier;
use super::watch;
use serin_controller::adapters::{CanaryId, Hooks};
use serin_controller::alerts::AlertClient;
use serin_controller::deliveries::{Deliveries, DeliveryConfig};
use serin_controller::driver::{Driver, Schedule};
use serin_controller::hooks::HttpHooks;
use serin_controller::http::HttpClient;
use serin_controller::metrics::Metrics;
use serin_controller::webhook::WebhookClient;

/// Shared by every reconcile.
pub struct Context {
    pub(crate) client: Client,
    pub(crate) config: KubeConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) adapters: Arc<KubeAdapters>,
    pub(crate) failures: Mutex<HashMap<(String, String), u32>>,
    targets: Arc<watch::TargetRevisions>,
    pub(crate) ticks: watch::TickSchedule,
    schedule: Arc<Schedule>,
    pub(crate) stores: Option<watch::Stores>,
    /// The Canaries being ticked, for the adapters.
    pub(crate) reconciling: Arc<Reconciling>,
    /// What our own writes returned, newer than the watch's copy for a moment.
    pub(crate) written: Arc<LastWrites>,
    /// The driver and its adapters, built once.
    pub(crate) driver: Driver,
    /// Events the reconcile itself publishes (the driver's go through the adapters).
    pub(crate) recorder: Recorder,
    /// The per-Canary background queues of notifications (the driver's notifier).
    deliveries: Arc<Deliveries>,
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
        let reconciling = Arc::<Reconciling>::default();
        let written = Arc::<LastWrites>::default();
        let schedule = Arc::<Schedule>::default();
        let adapters = Arc::new(KubeAdapters::new(
            client.clone(),
            config.probe.clone(),
            recorder.clone(),
            reconciling.clone(),
            written.clone(),
        ));
        // One HTTP client (one connection pool) for gates, notifications and alerts.
        let http = HttpClient::new();
        let hooks: Arc<dyn Hooks> = Arc::new(HttpHooks::new(
            WebhookClient::new(http.clone()).with_backoff(config.webhook_backoff),
        ));
        let deliveries = deliveries(&client, &http, &hooks, &metrics);
        let driver = driver(&config, &metrics, &adapters, &schedule, &hooks, &deliveries);
        Self {
            client,
            config,
            metrics,
            adapters,
            failures: Mutex::new(HashMap::new()),
            targets: Arc::default(),
            ticks: watch::TickSchedule::default(),
            schedule,
            stores: None,
            reconciling,
            written,
            driver,
            recorder,
            deliveries,
        }
    }

    /// The background notification queues (tests await them; the controller drains them when
    /// it stops).
    pub fn deliveries(&self) -> &Arc<Deliveries> {
        &self.deliveries
    }

    /// Reads workloads and Services from `stores` (what the controller's watches hold) instead
    /// of GETting them.
    pub fn with_stores(mut self, stores: watch::Stores) -> Self {
        self.adapters.use_stores(stores.clone());
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

    /// Forgets everything kept about a Canary that is gone.
    pub(crate) fn forget(&self, canary: &Canary) {
        let (ns, name) = (canary.namespace().unwrap_or_default(), canary.name_any());
        let id = CanaryId::new(&ns, &name);
        self.schedule.forget(&id);
        self.deliveries.forget(&id);
        self.written.forget(&ns, &name);
        super::status::forget_logged(&ns, &name);
        self.metrics
            .canary_gone(&name, &ns, &canary.spec.target_ref.name);
    }
}

/// Event and post-rollout webhooks and alerts, delivered in the background per Canary so a
/// receiver that does not answer never holds a reconcile slot.
fn deliveries(
    client: &Client,
    http: &HttpClient,
    hooks: &Arc<dyn Hooks>,
    metrics: &Arc<Metrics>,
) -> Arc<Deliveries> {
    Arc::new(Deliveries::new(
        hooks.clone(),
        Arc::new(KubeNotifier::new(
            client.clone(),
            AlertClient::new(http.clone()),
            metrics.clone(),
        )),
        metrics.clone(),
        DeliveryConfig::default(),
    ))
}

/// The driver over the Kubernetes adapters, the analyzer, webhooks (gates; notifications go
/// through `deliveries`) and alerts.
fn driver(
    config: &KubeConfig,
    metrics: &Arc<Metrics>,
    adapters: &Arc<KubeAdapters>,
    schedule: &Arc<Schedule>,
    hooks: &Arc<dyn Hooks>,
    deliveries: &Arc<Deliveries>,
) -> Driver {
    Driver {
        workloads: adapters.clone(),
        router: adapters.clone(),
        analyzer: config.analyzer.clone(),
        hooks: hooks.clone(),
        store: adapters.clone(),
        notifier: deliveries.clone(),
        events: adapters.clone(),
        metrics: metrics.clone(),
        schedule: schedule.clone(),
    }
}

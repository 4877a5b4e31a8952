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
use serin_controller::adapters::CanaryId;
use serin_controller::alerts::AlertClient;
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
        let driver = driver(&client, &config, &metrics, &adapters, &schedule);
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
        }
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
        self.schedule.forget(&CanaryId::new(&ns, &name));
        self.written.forget(&ns, &name);
        self.metrics
            .canary_gone(&name, &ns, &canary.spec.target_ref.name);
    }
}

/// The driver over the Kubernetes adapters, the analyzer, webhooks and alerts.
fn driver(
    client: &Client,
    config: &KubeConfig,
    metrics: &Arc<Metrics>,
    adapters: &Arc<KubeAdapters>,
    schedule: &Arc<Schedule>,
) -> Driver {
    let http = HttpClient::new();
    Driver {
        workloads: adapters.clone(),
        router: adapters.clone(),
        analyzer: config.analyzer.clone(),
        hooks: Arc::new(HttpHooks::new(
            WebhookClient::new(http.clone()).with_backoff(config.webhook_backoff),
        )),
        store: adapters.clone(),
        notifier: Arc::new(KubeNotifier::new(
            client.clone(),
            AlertClient::new(http),
            metrics.clone(),
        )),
        events: adapters.clone(),
        metrics: metrics.clone(),
        schedule: schedule.clone(),
    }
}

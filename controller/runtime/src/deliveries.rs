//! [`Deliveries`]: notifications (event and post-rollout webhooks, alerts) delivered in the
//! background, one ordered queue per Canary, so a receiver that is slow, down or black-holed
//! never holds a tick.
//!
//! Why: a tick holds one of the controller's few reconcile slots. Awaiting a receiver that never
//! answers costs its timeout times (1 + retries) per notification, and hundreds of Canaries
//! sharing that receiver then fall behind their intervals. A notification's failure never changes
//! a rollout's outcome (Flagger's post-rollout hooks and alerts are best-effort too), so nothing
//! the tick decides has to wait for it.
//!
//! The contract:
//! - The driver hands over a tick's notifications only once the tick's status is saved: a tick
//!   that fails is decided again by the next one, which would send them again.
//! - Per Canary, notifications are delivered one at a time in the order the engine listed them;
//!   Canaries do not wait for each other.
//! - Each queue holds at most [`DeliveryConfig::capacity`] notifications; a full queue drops its
//!   oldest, counts it (`serin_notification_deliveries_total{result="dropped"}`) and records it as
//!   not delivered.
//! - Delivery itself is unchanged: the same payloads, timeouts and retries as a call from the
//!   tick. An event or post-rollout webhook that gave no answer is not called again for the rest
//!   of the same tick's notifications (each further call would wait its whole timeout again).
//! - What could not be delivered reaches the Canary's history at its next tick
//!   ([`Deliveries::take_failed`]), as it did when notifications were sent from the tick.
//! - Queues live in memory: a restart loses what is waiting (the log says how many at a
//!   graceful stop, [`Deliveries::shutdown`]). A deleted Canary's queue goes away
//!   ([`Deliveries::forget`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serin_core::{GateResult, HistoryEntry, Phase, Webhook};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::adapters::{AlertFailure, CanaryContext, CanaryId, Hooks, Notifier};
use crate::alerts::Alert;
use crate::metrics::Metrics;
use crate::webhook::WebhookOutcome;

/// How the queues behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Most notifications waiting per Canary; a full queue drops its oldest.
    pub capacity: usize,
    /// How long [`Deliveries::shutdown`] lets the queues drain before it drops what is left.
    pub drain: Duration,
}

impl Default for DeliveryConfig {
    /// 64 per Canary (a rollout step sends a handful: an event per engine event and an alert),
    /// and a 5 s drain: well inside Kubernetes' default 30 s termination grace period, leaving
    /// time to release the leader Lease.
    fn default() -> Self {
        Self {
            capacity: 64,
            drain: Duration::from_secs(5),
        }
    }
}

/// One notification a tick decided to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// An `event` or `post-rollout` webhook.
    Webhook {
        /// The hook.
        webhook: Webhook,
        /// The phase in its payload.
        phase: Phase,
        /// The payload's checksum.
        checksum: String,
        /// Extra metadata (an event hook's `eventMessage`, `eventType`, `timestamp`).
        extra: BTreeMap<String, String>,
    },
    /// An alert through the Canary's alert routes.
    Alert(Alert),
}

impl Notification {
    /// The metric label of its kind.
    fn kind(&self) -> &'static str {
        match self {
            Notification::Webhook { .. } => "webhook",
            Notification::Alert(_) => "alert",
        }
    }

    fn describe(&self) -> String {
        match self {
            Notification::Webhook { webhook, .. } => {
                format!("{} webhook {:?}", webhook.kind.as_str(), webhook.name)
            }
            Notification::Alert(a) => format!("{} alert {:?}", a.severity.as_str(), a.message),
        }
    }
}

/// A notification with what its failure is recorded as: `failed` is a history entry at the
/// status it was sent for, whose message the delivery fills in.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// What to send.
    pub notification: Notification,
    /// The history entry recorded if it is not delivered (message left empty).
    pub failed: HistoryEntry,
}

/// The history entry of a webhook notification that was not delivered (the same on both paths:
/// sent from the tick, or from the queue).
pub fn webhook_failed(
    mut entry: HistoryEntry,
    webhook: &Webhook,
    outcome: &WebhookOutcome,
) -> HistoryEntry {
    entry.message = format!(
        "{} webhook {:?} was not delivered: {}",
        webhook.kind.as_str(),
        webhook.name,
        outcome.summary()
    );
    entry.gates.push(GateResult {
        name: webhook.name.clone(),
        kind: webhook.kind,
        passed: false,
        detail: outcome.summary(),
    });
    entry
}

/// The history entry of an alert one route could not deliver.
pub fn alert_failed(mut entry: HistoryEntry, alert: &Alert, failed: &AlertFailure) -> HistoryEntry {
    entry.message = format!(
        "{} alert {:?} through {} was not delivered: {}",
        alert.severity.as_str(),
        failed.alert,
        failed.provider,
        failed.reason
    );
    entry
}

/// Adds `entry` unless an entry of the same kind and message is there (an event webhook gets
/// several events a tick; a receiver that stays down fails the same way each time).
pub fn push_once(history: &mut Vec<HistoryEntry>, entry: HistoryEntry) {
    if !history
        .iter()
        .any(|h| h.kind == entry.kind && h.message == entry.message)
    {
        history.push(entry);
    }
}

struct Queued {
    ctx: Arc<CanaryContext>,
    /// The tick it came from: a hook that gave no answer is skipped for the rest of its tick.
    batch: u64,
    outgoing: Outgoing,
}

#[derive(Default)]
struct LaneState {
    queue: VecDeque<Queued>,
    /// Whether a worker task is delivering this queue (at most one, for the order).
    running: bool,
    task: Option<AbortHandle>,
    /// Not delivered, waiting for the Canary's next tick.
    failed: Vec<HistoryEntry>,
}

struct Lane {
    state: Mutex<LaneState>,
    /// `true` while a worker delivers (for [`Deliveries::idle`]).
    busy: watch::Sender<bool>,
}

impl Lane {
    fn new() -> Self {
        Self {
            state: Mutex::new(LaneState::default()),
            busy: watch::Sender::new(false),
        }
    }
}

struct Inner {
    hooks: Arc<dyn Hooks>,
    notifier: Arc<dyn Notifier>,
    metrics: Arc<Metrics>,
    config: DeliveryConfig,
    lanes: Mutex<HashMap<CanaryId, Arc<Lane>>>,
    /// Workers running, for the drain at shutdown.
    workers: watch::Sender<usize>,
    closed: std::sync::atomic::AtomicBool,
    batches: AtomicU64,
}

/// The per-Canary background queues. Share it behind an `Arc`; it is also the driver's
/// [`Notifier`] (its [`Notifier::queue`] is itself), so a platform opts in by passing it as
/// the driver's notifier.
pub struct Deliveries {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What a shutdown left undelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Notifications delivered or failed in time: every queue emptied.
    pub complete: bool,
    /// Notifications still waiting (or in flight) at the deadline, dropped.
    pub lost: usize,
}

impl Deliveries {
    /// Queues delivering through `hooks` (webhooks) and `notifier` (alerts).
    pub fn new(
        hooks: Arc<dyn Hooks>,
        notifier: Arc<dyn Notifier>,
        metrics: Arc<Metrics>,
        config: DeliveryConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                hooks,
                notifier,
                metrics,
                config: DeliveryConfig {
                    capacity: config.capacity.max(1),
                    ..config
                },
                lanes: Mutex::new(HashMap::new()),
                workers: watch::Sender::new(0),
                closed: Default::default(),
                batches: AtomicU64::new(1),
            }),
        }
    }

    fn lane(&self, id: &CanaryId) -> Arc<Lane> {
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Lane::new()))
            .clone()
    }

    fn existing(&self, id: &CanaryId) -> Option<Arc<Lane>> {
        let lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.get(id).cloned()
    }

    /// Queues one tick's notifications, in order, for the Canary of `ctx`. Never waits: a full
    /// queue drops its oldest. Must be called from within a tokio runtime.
    pub fn enqueue(&self, ctx: &CanaryContext, outgoing: Vec<Outgoing>) {
        if outgoing.is_empty() {
            return;
        }
        if self.inner.closed.load(Ordering::Acquire) {
            tracing::warn!(canary = %ctx.id.name, ns = %ctx.id.namespace, count = outgoing.len(), "the controller is stopping; notifications not sent");
            for o in &outgoing {
                self.inner
                    .metrics
                    .notification(o.notification.kind(), "lost");
            }
            return;
        }
        let batch = self.inner.batches.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(ctx.clone());
        let lane = self.lane(&ctx.id);
        let mut state = lane.state.lock().unwrap_or_else(|p| p.into_inner());
        for o in outgoing {
            if state.queue.len() >= self.inner.config.capacity
                && let Some(oldest) = state.queue.pop_front()
            {
                self.inner.metrics.notifications_waiting(-1);
                self.inner
                    .metrics
                    .notification(oldest.outgoing.notification.kind(), "dropped");
                let what = oldest.outgoing.notification.describe();
                tracing::warn!(canary = %ctx.id.name, ns = %ctx.id.namespace, notification = %what, capacity = self.inner.config.capacity, "notification queue full; dropped the oldest");
                let mut entry = oldest.outgoing.failed;
                entry.message = format!(
                    "{what} was not delivered: dropped, {} notifications of this Canary were already waiting for slow receivers",
                    self.inner.config.capacity
                );
                push_once(&mut state.failed, entry);
            }
            state.queue.push_back(Queued {
                ctx: shared.clone(),
                batch,
                outgoing: o,
            });
            self.inner.metrics.notifications_waiting(1);
        }
        if !state.running {
            state.running = true;
            lane.busy.send_replace(true);
            self.inner.workers.send_modify(|n| *n += 1);
            let task = tokio::spawn(work(self.inner.clone(), lane.clone()));
            state.task = Some(task.abort_handle());
        }
    }

    /// What could not be delivered since the Canary's last look, oldest first, to be recorded in
    /// its history. Hand them back with [`Deliveries::give_back`] if that record is not saved.
    pub fn take_failed(&self, id: &CanaryId) -> Vec<HistoryEntry> {
        match self.existing(id) {
            Some(lane) => {
                std::mem::take(&mut lane.state.lock().unwrap_or_else(|p| p.into_inner()).failed)
            }
            None => Vec::new(),
        }
    }

    /// Whether anything waits to be recorded for `id`.
    pub fn has_failed(&self, id: &CanaryId) -> bool {
        self.existing(id).is_some_and(|lane| {
            !lane
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failed
                .is_empty()
        })
    }

    /// Puts back what [`Deliveries::take_failed`] returned when it could not be saved.
    pub fn give_back(&self, id: &CanaryId, mut failed: Vec<HistoryEntry>) {
        if failed.is_empty() {
            return;
        }
        let lane = self.lane(id);
        let mut state = lane.state.lock().unwrap_or_else(|p| p.into_inner());
        for newer in std::mem::take(&mut state.failed) {
            push_once(&mut failed, newer);
        }
        state.failed = failed;
    }

    /// How many notifications wait for `id` (delivering one included).
    pub fn waiting(&self, id: &CanaryId) -> usize {
        self.existing(id).map_or(0, |lane| {
            let s = lane.state.lock().unwrap_or_else(|p| p.into_inner());
            s.queue.len() + usize::from(s.running)
        })
    }

    /// Resolves once nothing waits for `id` (tests and the shutdown use it; a tick never does).
    pub async fn idle(&self, id: &CanaryId) {
        let Some(lane) = self.existing(id) else {
            return;
        };
        let mut rx = lane.busy.subscribe();
        let _ = rx.wait_for(|busy| !*busy).await;
    }

    /// Forgets a Canary that is gone: what waits is still delivered (a deleted Canary's last
    /// events), what fails is only logged, and the queue goes away once empty.
    pub fn forget(&self, id: &CanaryId) {
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.remove(id);
    }

    /// Stops taking notifications, lets the queues drain for [`DeliveryConfig::drain`], then
    /// drops what is left (logged with its count).
    pub async fn shutdown(&self) -> Drained {
        self.inner.closed.store(true, Ordering::Release);
        let mut workers = self.inner.workers.subscribe();
        let drained =
            tokio::time::timeout(self.inner.config.drain, workers.wait_for(|n| *n == 0)).await;
        if drained.is_ok() {
            return Drained {
                complete: true,
                lost: 0,
            };
        }
        let lanes: Vec<Arc<Lane>> = {
            let lanes = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner());
            lanes.values().cloned().collect()
        };
        let mut lost = 0;
        for lane in lanes {
            let mut s = lane.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(task) = s.task.take() {
                task.abort();
            }
            for q in s.queue.drain(..) {
                self.inner
                    .metrics
                    .notification(q.outgoing.notification.kind(), "lost");
                self.inner.metrics.notifications_waiting(-1);
                lost += 1;
            }
            if s.running {
                // The one in flight.
                lost += 1;
                s.running = false;
                lane.busy.send_replace(false);
            }
        }
        tracing::warn!(
            lost,
            drain = ?self.inner.config.drain,
            "notifications not delivered before the controller stopped"
        );
        Drained {
            complete: false,
            lost,
        }
    }
}

/// Runs while the lane has something to deliver, then ends (no idle task per Canary).
async fn work(inner: Arc<Inner>, lane: Arc<Lane>) {
    // Ends the count even when the task is aborted at shutdown.
    struct Running(Arc<Inner>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.workers.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
    let _running = Running(inner.clone());
    let mut unanswered: (u64, BTreeSet<String>) = (0, BTreeSet::new());
    loop {
        let next = {
            let mut s = lane.state.lock().unwrap_or_else(|p| p.into_inner());
            match s.queue.pop_front() {
                Some(q) => q,
                None => {
                    s.running = false;
                    s.task = None;
                    lane.busy.send_replace(false);
                    return;
                }
            }
        };
        inner.metrics.notifications_waiting(-1);
        if unanswered.0 != next.batch {
            unanswered = (next.batch, BTreeSet::new());
        }
        let failed = deliver(&inner, &next, &mut unanswered.1).await;
        if !failed.is_empty() {
            let mut s = lane.state.lock().unwrap_or_else(|p| p.into_inner());
            for entry in failed {
                push_once(&mut s.failed, entry);
            }
        }
    }
}

/// Delivers one notification; returns the history entries of what failed.
async fn deliver(
    inner: &Inner,
    q: &Queued,
    unanswered: &mut BTreeSet<String>,
) -> Vec<HistoryEntry> {
    let ctx = &q.ctx;
    let kind = q.outgoing.notification.kind();
    let started = tokio::time::Instant::now();
    let failed = match &q.outgoing.notification {
        Notification::Webhook {
            webhook,
            phase,
            checksum,
            extra,
        } => {
            if unanswered.contains(&webhook.name) {
                tracing::debug!(canary = %ctx.id.name, ns = %ctx.id.namespace, hook = %webhook.name, "not called again for this tick: it did not answer");
                return Vec::new();
            }
            let outcome = inner
                .hooks
                .call(ctx, webhook, *phase, checksum, extra.clone())
                .await;
            if !outcome.ok && outcome.status.is_none() && outcome.attempts > 0 {
                unanswered.insert(webhook.name.clone());
            }
            if outcome.ok {
                Vec::new()
            } else {
                tracing::warn!(canary = %ctx.id.name, ns = %ctx.id.namespace, hook = %webhook.name, result = %outcome.summary(), "notification webhook failed");
                inner.metrics.error("webhook");
                vec![webhook_failed(q.outgoing.failed.clone(), webhook, &outcome)]
            }
        }
        Notification::Alert(alert) => inner
            .notifier
            .deliver(ctx, alert)
            .await
            .iter()
            .map(|f| alert_failed(q.outgoing.failed.clone(), alert, f))
            .collect(),
    };
    inner
        .metrics
        .notification_took(kind, started.elapsed().as_secs_f64());
    let result = if failed.is_empty() {
        "delivered"
    } else {
        "failed"
    };
    inner.metrics.notification(kind, result);
    failed
}

#[async_trait]
impl Notifier for Deliveries {
    /// Sends at once through the wrapped notifier (the driver queues through
    /// [`Notifier::queue`] instead).
    async fn alert(&self, canary: &CanaryContext, alert: &Alert) {
        self.inner.notifier.alert(canary, alert).await
    }

    async fn deliver(&self, canary: &CanaryContext, alert: &Alert) -> Vec<AlertFailure> {
        self.inner.notifier.deliver(canary, alert).await
    }

    fn queue(&self) -> Option<&Deliveries> {
        Some(self)
    }
}

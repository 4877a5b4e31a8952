//! The adapter traits through which the [`crate::driver::Driver`] observes and changes the world.
//! Kubernetes implementations live in `serin-kube`; the one-machine implementations live in
//! `serin-local`. The driver never knows which one it talks to.
//!
//! Contract for every implementation:
//! - Methods that change the world state a *desired* state and are idempotent: the driver may
//!   call the same one twice after a crash or a failed tick, and the second call must be a no-op.
//! - Errors are returned, never swallowed: the driver then saves nothing, so the next tick
//!   repeats the same decision from the same persisted status.
//! - No method blocks waiting for a rollout; readiness is *observed* on the next tick.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serin_core::{
    CheckResult, Command, EventType, HistoryEntry, Phase, Plan, Readiness, Routes, Status,
    TargetState, Webhook,
};

use crate::alerts::Alert;
use crate::webhook::WebhookOutcome;

/// Names one Canary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CanaryId {
    /// Namespace (locally: the directory's namespace, `default` unless set).
    pub namespace: String,
    /// Canary name.
    pub name: String,
}

impl CanaryId {
    /// `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for CanaryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How to call one webhook (what the engine's [`Webhook`] leaves to the runtime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookConfig {
    /// `http://` or `https://` address.
    pub url: String,
    /// Per attempt (Flagger's default 10s).
    pub timeout: Duration,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Sent in the payload's `metadata`.
    pub metadata: BTreeMap<String, String>,
    /// HMAC-SHA256 key for the `X-Serin-Signature` header, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<Vec<u8>>,
    /// Field path of the hook's `signingSecretRef` when the spec asks for signed calls; a hook
    /// that asks for a signature but got no key is never called unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_field: Option<String>,
    /// Do not alert when this hook fails.
    pub mute_alert: bool,
}

/// One alert route of the canary: a provider (resolved by the [`Notifier`]) and the lowest
/// severity it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRoute {
    /// The alert's name.
    pub name: String,
    /// Lowest severity sent (unset in the spec means info).
    pub severity: crate::alerts::Severity,
    /// Provider name.
    pub provider: String,
    /// Provider namespace (defaults to the Canary's).
    pub provider_namespace: String,
}

/// Everything the driver needs about one Canary for one tick: its identity, the engine's plan,
/// and the runtime-only settings (webhook addresses, alert routes, target name).
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryContext {
    /// Which Canary.
    pub id: CanaryId,
    /// The validated plan.
    pub plan: Plan,
    /// The target workload's name (the primary is `<target>-primary`).
    pub target: String,
    /// Deployment strategy name for metrics (`canary`, `ab-testing`, `blue-green`).
    pub strategy_name: &'static str,
    /// How to call each webhook, by webhook name.
    pub hooks: BTreeMap<String, HookConfig>,
    /// Where alerts go.
    pub alerts: Vec<AlertRoute>,
    /// The normalized Canary (metric checks, judge and no-data settings, service names), for
    /// adapters that need more than the plan, like the analyzer.
    pub spec: Option<Arc<serin_api::Normalized>>,
    /// The Canary's `metricsServer` (a Prometheus address), when set.
    pub metrics_server: Option<String>,
    /// Set by platforms that watch the target when it runs a revision the status does not know
    /// yet: the tick then observes at once (and the engine starts or restarts the run) instead
    /// of idling until the next interval.
    pub target_changed: bool,
    /// When the Canary's deletion began (Kubernetes: its `deletionTimestamp`; locally: when its
    /// manifest was found removed). A revertOnDeletion hand-back waits for the target from then
    /// on, across ticks, for a bounded time; `None`: it does not wait.
    pub deleting_since: Option<serin_core::Timestamp>,
}

impl CanaryContext {
    /// A context with no hooks and no alerts, for a plan and a target.
    pub fn new(id: CanaryId, plan: Plan, target: impl Into<String>) -> Self {
        let strategy_name = match plan.strategy {
            serin_core::Strategy::Canary { .. } => "canary",
            serin_core::Strategy::AbTesting { .. } => "ab-testing",
            serin_core::Strategy::BlueGreen { .. } => "blue-green",
        };
        Self {
            id,
            plan,
            target: target.into(),
            strategy_name,
            hooks: BTreeMap::new(),
            alerts: Vec::new(),
            spec: None,
            metrics_server: None,
            target_changed: false,
            deleting_since: None,
        }
    }
}

/// Coarse, stable classes of adapter failures: they pick the retry backoff and label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Someone else changed the object first (HTTP 409); retry soon.
    Conflict,
    /// A referenced object does not exist (yet).
    NotFound,
    /// The controller lacks permission (RBAC); retrying will not help until someone fixes it.
    Forbidden,
    /// The peer did not answer in time.
    Timeout,
    /// The user's configuration cannot work (names the field in the message).
    Invalid,
    /// Anything else (transport, server errors).
    Other,
}

impl ErrorKind {
    /// Every kind (the fixed label set of the error metrics).
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Conflict,
        ErrorKind::NotFound,
        ErrorKind::Forbidden,
        ErrorKind::Timeout,
        ErrorKind::Invalid,
        ErrorKind::Other,
    ];

    /// The label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Conflict => "conflict",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Other => "other",
        }
    }
}

/// A failure of an adapter call.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct AdapterError {
    /// Class of failure.
    pub kind: ErrorKind,
    /// What was being done (`creating deployment podinfo-primary`).
    pub what: String,
    /// What went wrong.
    pub message: String,
    /// The underlying error, when there is one.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl AdapterError {
    /// An error without an underlying cause.
    pub fn new(kind: ErrorKind, what: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            what: what.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// What the workloads look like now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadState {
    /// The target's revision and tracked configs; `None` when the target does not exist.
    pub target: Option<TargetState>,
    /// The primary's readiness; `None` when it does not exist yet.
    pub primary: Option<Readiness>,
    /// The canary's (the target's) readiness.
    pub canary: Option<Readiness>,
}

/// The target workload and its primary copy.
#[async_trait]
pub trait Workloads: Send + Sync {
    /// Reads the target's revision, tracked configs, and the readiness of primary and canary.
    async fn observe(&self, canary: &CanaryContext) -> Result<WorkloadState, AdapterError>;
    /// Creates or updates the primary from the target (and the primary/canary services, config
    /// copies, autoscaler); leaves the target as it is.
    async fn initialize_primary(&self, canary: &CanaryContext) -> Result<(), AdapterError>;
    /// Scales the target (the canary) to zero.
    async fn scale_canary_to_zero(&self, canary: &CanaryContext) -> Result<(), AdapterError>;
    /// Scales the target back up for analysis.
    async fn scale_canary_up(&self, canary: &CanaryContext) -> Result<(), AdapterError>;
    /// Copies the target's template (and tracked configs) to the primary.
    async fn promote(&self, canary: &CanaryContext, revision: &str) -> Result<(), AdapterError>;
    /// Hands the target back to its owner on deletion (`revertOnDeletion`): scale it up and
    /// remove what the controller added. Routing is reverted by [`Router::revert`] first.
    async fn revert(&self, canary: &CanaryContext) -> Result<(), AdapterError>;
}

/// Traffic routing between primary and canary.
#[async_trait]
pub trait Router: Send + Sync {
    /// Makes `routes` the routing of this canary.
    async fn set_routes(&self, canary: &CanaryContext, routes: &Routes)
    -> Result<(), AdapterError>;
    /// Whether `routes` (the last routing set) is in force everywhere traffic is split, so an
    /// analysis window never mixes two weights. Routers that cannot tell return `Ok(true)`.
    async fn in_force(&self, canary: &CanaryContext, routes: &Routes)
    -> Result<bool, AdapterError>;
    /// Sends all traffic to the target again and removes the canary routing (deletion).
    async fn revert(&self, canary: &CanaryContext) -> Result<(), AdapterError>;
}

/// What an analyzer remembers between the looks of one run (the judge's sequential test),
/// persisted with the status: defined with the Canary's status in serin-api, where the
/// Kubernetes status (`status.serin.analysis`) and this trait both reach it.
pub use serin_api::AnalysisState;

/// The checks of one tick and what the analyzer must remember for the next look.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// One result per check of the plan.
    pub checks: Vec<CheckResult>,
    /// State to persist with this tick's status; `None` keeps what is stored.
    pub state: Option<AnalysisState>,
}

/// Metric checks and the statistical judge.
#[async_trait]
pub trait Analyzer: Send + Sync {
    /// Evaluates every check of `canary.plan.checks` for the current window. A check that could
    /// not be evaluated is returned as inconclusive (or failed, per its no-data policy) with the
    /// reason in `detail`, not as an error; `Err` means the analyzer itself is unusable.
    async fn run_checks(
        &self,
        canary: &CanaryContext,
        status: &Status,
    ) -> Result<Vec<CheckResult>, AdapterError>;

    /// [`Analyzer::run_checks`] continuing from `saved`, the state the store persisted with the
    /// status after the last look, and returning the state to persist with this tick's status.
    /// `saved: None` means the platform persists no analysis state, so the analyzer keeps its
    /// own in memory. Analyzers that remember nothing between looks keep this default.
    async fn run_checks_from(
        &self,
        canary: &CanaryContext,
        status: &Status,
        saved: Option<&AnalysisState>,
    ) -> Result<Checked, AdapterError> {
        let _ = saved;
        Ok(Checked {
            checks: self.run_checks(canary, status).await?,
            state: None,
        })
    }

    /// Both arms side by side over this tick's window, for the history's charts, with the
    /// judge's evidence when it looked in this tick's checks (called right after them).
    /// `Ok(None)`: nothing to record (the default, for analyzers that cannot measure arms).
    async fn sample(
        &self,
        canary: &CanaryContext,
        status: &Status,
    ) -> Result<Option<serin_core::Sample>, AdapterError> {
        let _ = (canary, status);
        Ok(None)
    }
}

/// Webhook calls (gates and notifications).
#[async_trait]
pub trait Hooks: Send + Sync {
    /// Calls `webhook` with Flagger's payload for `phase`; `extra` is merged into the metadata
    /// (event hooks get `eventMessage`, `eventType`, `timestamp`).
    async fn call(
        &self,
        canary: &CanaryContext,
        webhook: &Webhook,
        phase: Phase,
        checksum: &str,
        extra: BTreeMap<String, String>,
    ) -> WebhookOutcome;
}

/// Where status, history and pending commands live.
#[async_trait]
pub trait Store: Send + Sync {
    /// The persisted status; `None` for a Canary never seen.
    async fn load(&self, id: &CanaryId) -> Result<Option<Status>, AdapterError>;
    /// Persists `status` (and `history`, the entries recorded this tick, oldest first) as one
    /// write where the backend allows, so a crash never keeps one without the other.
    async fn save(
        &self,
        canary: &CanaryContext,
        status: &Status,
        history: &[HistoryEntry],
    ) -> Result<(), AdapterError>;
    /// Manual commands not yet applied, oldest first (ids in `status.applied_command_ids` may
    /// be returned again; the engine ignores them).
    async fn pending_commands(&self, id: &CanaryId) -> Result<Vec<Command>, AdapterError>;

    /// The analysis state persisted with the status (a default state when none was saved yet);
    /// `None` when this store does not persist analysis state.
    async fn load_analysis(&self, id: &CanaryId) -> Result<Option<AnalysisState>, AdapterError> {
        let _ = id;
        Ok(None)
    }

    /// [`Store::save`], also persisting `analysis` in the same write (`None`: keep what is
    /// stored). Stores that do not persist analysis state keep this default.
    async fn save_with_analysis(
        &self,
        canary: &CanaryContext,
        status: &Status,
        history: &[HistoryEntry],
        analysis: Option<&AnalysisState>,
    ) -> Result<(), AdapterError> {
        let _ = analysis;
        self.save(canary, status, history).await
    }

    /// Called instead of a save when a tick changed nothing in the engine's status but its
    /// scheduling time (`status.last_tick_at`, which the driver then keeps in memory): a store
    /// that persists more than the engine's status (Kubernetes' runtime conditions) writes it
    /// with `status` when that changed, and says whether it wrote. A store with nothing else to
    /// persist keeps this default and writes nothing.
    async fn save_if_changed(
        &self,
        canary: &CanaryContext,
        status: &Status,
    ) -> Result<bool, AdapterError> {
        let _ = (canary, status);
        Ok(false)
    }
}

/// An alert that one of the canary's alert routes could not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFailure {
    /// The alert route's name (`analysis.alerts[].name`).
    pub alert: String,
    /// Its provider, `namespace/name`.
    pub provider: String,
    /// Why (names the field at fault when the configuration is).
    pub reason: String,
}

/// Alerts to people.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends `alert` through each of the canary's alert routes that admits its severity.
    /// Failures are logged and counted, never fail the tick.
    async fn alert(&self, canary: &CanaryContext, alert: &Alert);

    /// [`Notifier::alert`], returning the routes that could not deliver so the driver records
    /// them in the history. Notifiers that cannot fail keep this default.
    async fn deliver(&self, canary: &CanaryContext, alert: &Alert) -> Vec<AlertFailure> {
        self.alert(canary, alert).await;
        Vec::new()
    }

    /// The background queue notifications go through ([`crate::deliveries::Deliveries`] is a
    /// notifier that returns itself): the driver then hands a tick's event and post-rollout
    /// webhooks and alerts to it once the tick is saved, instead of awaiting each in the tick,
    /// and records what it could not deliver at the Canary's next tick. `None` (the default):
    /// the driver sends them from the tick.
    fn queue(&self) -> Option<&crate::deliveries::Deliveries> {
        None
    }
}

/// Kubernetes-style events (locally: history lines and logs).
#[async_trait]
pub trait EventRecorder: Send + Sync {
    /// Records an event about the canary.
    async fn event(&self, canary: &CanaryContext, kind: EventType, reason: &str, message: &str);
}

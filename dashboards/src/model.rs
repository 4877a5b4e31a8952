//! The JSON data model served under `/api/v1`.
//!
//! These types are the dashboard's own, stable JSON contract (camelCase field names, tagged
//! enums with a `type` field). The controller runtimes convert their engine state into them;
//! nothing here depends on the engine, so the engine can change without breaking API clients.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Identifies one Canary: its namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CanaryKey {
    /// Namespace (locally: the directory-level namespace, `default` unless the manifest says).
    pub namespace: String,
    /// Canary name.
    pub name: String,
}

impl CanaryKey {
    /// Builds a key from a namespace and a name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for CanaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Canary's phase, with Flagger's names (ordered as a rollout goes through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// The primary is being created.
    Initializing,
    /// The primary serves all traffic; no run in flight.
    Initialized,
    /// A new revision waits for the confirm-rollout gate.
    Waiting,
    /// Traffic is shifted step by step while checks run.
    Progressing,
    /// Analysis is complete; waiting for the confirm-promotion gate.
    WaitingPromotion,
    /// The canary's spec is copied to the primary.
    Promoting,
    /// Traffic is routed back to the (new) primary and the canary scaled down.
    Finalising,
    /// The last run promoted its revision.
    Succeeded,
    /// The last run was rolled back.
    Failed,
    /// The Canary is being deleted.
    Terminating,
    /// The Canary was deleted and the target restored.
    Terminated,
    /// A phase this client does not know (a newer server); never sent by this crate.
    #[serde(other)]
    Unknown,
}

impl Phase {
    /// Every phase this crate sends, in lifecycle order.
    pub const ALL: [Phase; 11] = [
        Phase::Initializing,
        Phase::Initialized,
        Phase::Waiting,
        Phase::Progressing,
        Phase::WaitingPromotion,
        Phase::Promoting,
        Phase::Finalising,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Terminating,
        Phase::Terminated,
    ];

    /// The phase named `name` (Flagger's spelling, exact case), if any.
    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The phase's name as it appears in JSON and in Flagger's status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Promoting => "Promoting",
            Phase::Finalising => "Finalising",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
            Phase::Terminated => "Terminated",
            Phase::Unknown => "Unknown",
        }
    }

    /// Whether a run is in flight in this phase.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            Phase::Waiting
                | Phase::Progressing
                | Phase::WaitingPromotion
                | Phase::Promoting
                | Phase::Finalising
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The workload a Canary rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    /// `Deployment`, `DaemonSet` or `Process`.
    pub kind: String,
    /// The target's name.
    pub name: String,
}

/// One row of the overview: what a Canary is doing right now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanarySummary {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The rolled-out workload.
    pub target: TargetRef,
    /// Current phase.
    pub phase: Phase,
    /// Percentage of traffic routed to the canary (0..=100).
    pub canary_weight: u32,
    /// Failed checks in the current run (cumulative within a run, as Flagger).
    pub failed_checks: u32,
    /// Iterations done in the current run (A/B and Blue/Green).
    #[serde(default)]
    pub iterations: u32,
    /// When the phase last changed.
    pub last_transition_time: Option<Timestamp>,
    /// The revision the target declares now (what a deploy asked for).
    pub target_revision: Option<String>,
    /// The revision the primary serves.
    pub promoted_revision: Option<String>,
    /// The current run, or the most recent one when none is in flight.
    pub run: Option<RunSummary>,
    /// Whether a person paused the Canary.
    #[serde(default)]
    pub paused: bool,
    /// Set while the Canary waits for a person (pause or a closed confirm gate).
    pub waiting: Option<Waiting>,
    /// State of the manual gates.
    #[serde(default)]
    pub gates: Gates,
    /// Last status message (a condition message or the reason of the last transition).
    pub message: Option<String>,
    /// Why the Canary is not advancing right now, as the engine says it (target not found, not
    /// ready, waiting for evidence, ...); absent while it advances or is idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<String>,
}

impl CanarySummary {
    /// The key of this Canary.
    pub fn key(&self) -> CanaryKey {
        CanaryKey::new(&self.namespace, &self.name)
    }

    /// The revision of the run in flight, if a run is in flight.
    pub fn revision_in_flight(&self) -> Option<&str> {
        self.run
            .as_ref()
            .filter(|r| r.outcome.is_none())
            .map(|r| r.revision.as_str())
    }
}

/// One run: the rollout of one revision, from its detection to its promotion or rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Run number, increasing per Canary.
    pub id: u64,
    /// The revision this run rolls out.
    pub revision: String,
    /// When the new revision was detected.
    pub started_at: Timestamp,
    /// When the run ended.
    pub ended_at: Option<Timestamp>,
    /// How and why it ended; `None` while in flight.
    pub outcome: Option<Outcome>,
}

/// How a run ended, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The result.
    pub result: RunResult,
    /// Why, in words a person reads (e.g. `request-success-rate 91.2% below minimum 99% (5 of 5 checks failed)`).
    pub reason: String,
}

/// The result of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunResult {
    /// The revision was promoted to primary.
    Promoted,
    /// The revision was rolled back (failed checks, judge, rollback webhook, deadline).
    RolledBack,
    /// A person aborted the run (rolled back on command).
    Aborted,
    /// A newer revision replaced this one before it ended.
    Superseded,
}

impl RunResult {
    /// Whether the run delivered its revision.
    pub fn is_success(self) -> bool {
        self == RunResult::Promoted
    }
}

/// Why a Canary is waiting for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    /// The reason.
    pub reason: WaitReason,
    /// Since when.
    pub since: Option<Timestamp>,
    /// Details (e.g. the webhook name that refused).
    pub message: Option<String>,
}

/// What a Canary waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitReason {
    /// Paused by a person (or by the judge with `onInconclusive: pause`).
    Paused,
    /// A confirm-rollout webhook refuses to start the run.
    ConfirmRollout,
    /// A confirm-traffic-increase webhook refuses the next step.
    ConfirmTrafficIncrease,
    /// A confirm-promotion webhook refuses the promotion.
    ConfirmPromotion,
}

/// The manual gates of one Canary, as the Flagger load-tester gate endpoints expose them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gates {
    /// The confirm gate (`/gate/check` answers 200 while open, 403 while closed).
    pub confirm: bool,
    /// The rollback gate (`/rollback/check` answers 200 while open, which makes a rollback
    /// webhook roll the canary back).
    pub rollback: bool,
}

/// The well-known gate names.
pub mod gate {
    /// The confirm gate, checked by `/gate/check`; the default when a command names no gate.
    pub const CONFIRM: &str = "confirm";
    /// The rollback gate, checked by `/rollback/check`.
    pub const ROLLBACK: &str = "rollback";
}

/// The analysis settings of a Canary, summarised for display.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisInfo {
    /// `canary`, `ab` or `blueGreen`.
    pub strategy: String,
    /// Tick interval, as written in the spec (e.g. `1m`).
    pub interval: Option<String>,
    /// Failed checks before rollback.
    pub threshold: Option<u32>,
    /// Maximum canary weight.
    pub max_weight: Option<u32>,
    /// The weight steps of the run.
    #[serde(default)]
    pub step_weights: Vec<u32>,
    /// Iterations (A/B, Blue/Green).
    pub iterations: Option<u32>,
    /// Metric checks.
    #[serde(default)]
    pub metrics: Vec<MetricInfo>,
    /// Webhooks.
    #[serde(default)]
    pub webhooks: Vec<WebhookInfo>,
    /// Whether the statistical judge is on.
    #[serde(default)]
    pub judge: bool,
    /// What the judge can prove on this schedule at a few traffic levels (`serin plan`'s
    /// figures), when the judge is on and the rollout is a weighted canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanInfo>,
}

/// `serin plan`'s figures for a Canary's schedule, at several total request rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanInfo {
    /// The primary's error rate assumed, percent.
    pub error_rate_pct: f64,
    /// Simulated rollouts per scenario and rate.
    pub trials: usize,
    /// One line per request rate, lowest first.
    #[serde(default)]
    pub lines: Vec<PlanLine>,
}

/// The plan at one request rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanLine {
    /// Total requests per second (both arms).
    pub rps: f64,
    /// Percent of healthy canaries promoted.
    pub healthy_promoted_pct: f64,
    /// Their median time to promotion (`12m`), when any was.
    pub healthy_to_promote: Option<String>,
    /// Percent of canaries with twice the error rate rolled back by the judge.
    pub regression_failed_pct: f64,
    /// Their median time to the rollback, when any was.
    pub regression_to_fail: Option<String>,
    /// Percent of healthy canaries ended by `onInconclusive`.
    pub inconclusive_pct: f64,
    /// The plan in one sentence (`at 1 rps this rollout can never prove anything; ...`).
    pub summary: String,
}

/// One metric check's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricInfo {
    /// Metric name (`request-success-rate`, `request-duration`, or a template's).
    pub name: String,
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
    /// Query window.
    pub interval: Option<String>,
}

/// One webhook's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookInfo {
    /// Webhook name.
    pub name: String,
    /// Flagger webhook type (`confirm-rollout`, `pre-rollout`, `rollout`, ...).
    pub webhook_type: String,
    /// URL.
    pub url: Option<String>,
}

/// Everything the backend knows about one Canary except its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryState {
    /// The overview row.
    pub summary: CanarySummary,
    /// Analysis settings.
    pub analysis: Option<AnalysisInfo>,
    /// All runs the backend keeps, oldest first.
    #[serde(default)]
    pub runs: Vec<RunSummary>,
}

/// One line of a Canary's history. Append-only; the timeline, the charts and the CLI read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When it happened.
    pub at: Timestamp,
    /// The run it belongs to (`None` for entries outside runs, e.g. a gate opened while idle).
    pub run: Option<u64>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// What a history entry records. Serialized with a `type` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum EntryKind {
    /// A new revision was detected and a run started.
    #[serde(rename_all = "camelCase")]
    RunStarted {
        /// The revision rolled out.
        revision: String,
        /// The revision the primary served when the run started.
        previous_revision: Option<String>,
    },
    /// The phase changed.
    #[serde(rename_all = "camelCase")]
    Phase {
        /// The phase before (absent for the first entry).
        from: Option<Phase>,
        /// The phase after.
        to: Phase,
        /// Why.
        message: Option<String>,
    },
    /// The canary weight changed (a step).
    #[serde(rename_all = "camelCase")]
    Weight {
        /// The weight before.
        from: u32,
        /// The weight after.
        to: u32,
        /// Iteration number for A/B and Blue/Green.
        iteration: Option<u32>,
    },
    /// A threshold check ran: its measured value against its bounds.
    #[serde(rename_all = "camelCase")]
    Check {
        /// Metric name.
        name: String,
        /// The verdict.
        verdict: Verdict,
        /// The measured value (absent when there was no data).
        value: Option<f64>,
        /// Lower bound.
        min: Option<f64>,
        /// Upper bound.
        max: Option<f64>,
        /// Requests behind the value, when known.
        sample_size: Option<u64>,
        /// Failed checks of the run after this check.
        failed_checks: Option<u32>,
        /// Details (e.g. `no data: 0 requests < minRequests 1`).
        message: Option<String>,
    },
    /// The statistical judge compared canary and primary.
    #[serde(rename_all = "camelCase")]
    Judge {
        /// The verdict.
        verdict: Verdict,
        /// Per-metric evidence.
        evidence: Vec<Evidence>,
        /// Requests seen by the canary.
        canary_requests: u64,
        /// Requests seen by the primary.
        primary_requests: u64,
        /// A one-line explanation.
        message: Option<String>,
    },
    /// A webhook was called.
    #[serde(rename_all = "camelCase")]
    Webhook {
        /// Webhook name.
        name: String,
        /// Flagger webhook type.
        webhook_type: String,
        /// Whether it counted as a success (status ≤ 202; for gates: open).
        ok: bool,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
        /// Start of the response body or the error.
        message: Option<String>,
        /// How long the call took.
        duration_ms: Option<u64>,
    },
    /// A notable event (alert, Kubernetes event, controller message).
    #[serde(rename_all = "camelCase")]
    Event {
        /// Severity.
        severity: Severity,
        /// Message.
        message: String,
    },
    /// A manual command was received (or applied).
    #[serde(rename_all = "camelCase")]
    Command {
        /// The command's id.
        id: String,
        /// What was asked.
        action: Action,
        /// The gate, for gate commands.
        gate: Option<String>,
        /// Who asked.
        by: String,
        /// `received` when accepted by the API, `applied` once the controller acted on it.
        state: CommandState,
        /// Details.
        message: Option<String>,
    },
    /// Measurements of one tick, for the charts.
    #[serde(rename_all = "camelCase")]
    Sample {
        /// Canary weight during the window.
        weight: u32,
        /// Canary measurements.
        canary: ArmSample,
        /// Primary measurements.
        primary: ArmSample,
    },
    /// The run ended.
    #[serde(rename_all = "camelCase")]
    RunEnded {
        /// How and why.
        outcome: Outcome,
    },
}

impl EntryKind {
    /// The `type` tag of this entry.
    pub fn type_name(&self) -> &'static str {
        match self {
            EntryKind::RunStarted { .. } => "runStarted",
            EntryKind::Phase { .. } => "phase",
            EntryKind::Weight { .. } => "weight",
            EntryKind::Check { .. } => "check",
            EntryKind::Judge { .. } => "judge",
            EntryKind::Webhook { .. } => "webhook",
            EntryKind::Event { .. } => "event",
            EntryKind::Command { .. } => "command",
            EntryKind::Sample { .. } => "sample",
            EntryKind::RunEnded { .. } => "runEnded",
        }
    }
}

/// A check's or the judge's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Within bounds / no harmful difference.
    Pass,
    /// Out of bounds / a harmful difference.
    Fail,
    /// Not enough data to decide.
    Inconclusive,
}

impl Verdict {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The judge's evidence for one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// `errorRate` or `latency` (or a custom metric).
    pub metric: String,
    /// The canary's value.
    pub canary: f64,
    /// The primary's value.
    pub primary: f64,
    /// The p-value of the test, when one ran.
    pub p_value: Option<f64>,
    /// The significance level used for this decision.
    pub alpha: Option<f64>,
    /// The tolerated difference.
    pub tolerance: Option<f64>,
    /// The verdict for this metric.
    pub verdict: Verdict,
    /// The margin a pass must show (percentage points for the error rate, percent for latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// What a pass claims, shown or not (`canary error <= 1.75% with 99% confidence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

/// Measurements of one arm (canary or primary) over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmSample {
    /// Requests in the window.
    pub requests: u64,
    /// Percentage of non-5xx responses (absent without requests).
    pub success_rate: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub latency_p99_ms: Option<f64>,
}

/// A manual command: what the API, the CLI and the `serin.dev/command` annotation carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// Unique id; a controller applies each id once.
    pub id: String,
    /// What to do.
    pub action: Action,
    /// Gate name for gate commands (`confirm` when absent, or `rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// Who asked.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

impl Command {
    /// The gate a gate command addresses, defaulting to the confirm gate.
    pub fn gate_name(&self) -> &str {
        self.gate.as_deref().unwrap_or(gate::CONFIRM)
    }
}

/// A manual action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Promote now, skipping the remaining analysis.
    Promote,
    /// Roll back now.
    Abort,
    /// Stop advancing (traffic stays where it is).
    Pause,
    /// Continue after a pause.
    Resume,
    /// Open a gate.
    GateOpen,
    /// Close a gate.
    GateClose,
}

impl Action {
    /// All actions, in the order the page shows them.
    pub const ALL: [Action; 6] = [
        Action::Promote,
        Action::Abort,
        Action::Pause,
        Action::Resume,
        Action::GateOpen,
        Action::GateClose,
    ];

    /// The kebab-case name used in JSON and in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Abort => "abort",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::GateOpen => "gate-open",
            Action::GateClose => "gate-close",
        }
    }

    /// Parses the kebab-case name.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a command was only received or already applied by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CommandState {
    /// Accepted and persisted; the controller applies it on its next tick.
    Received,
    /// The controller acted on it.
    Applied,
    /// The controller could not act on it (e.g. promote while idle).
    Rejected,
}

/// The answer to an accepted command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandReceipt {
    /// The command as persisted.
    pub command: Command,
    /// The Canary's summary right after the command was recorded.
    pub canary: CanarySummary,
}

/// A change pushed to subscribers (and to the page over server-sent events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Update {
    /// A Canary's summary changed (or the Canary appeared).
    Canary {
        /// The new summary.
        canary: CanarySummary,
    },
    /// A history entry was appended.
    Entry {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The entry.
        entry: HistoryEntry,
    },
    /// A Canary was removed.
    Removed {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl Update {
    /// The Canary this update is about.
    pub fn key(&self) -> CanaryKey {
        match self {
            Update::Canary { canary } => canary.key(),
            Update::Entry {
                namespace, name, ..
            }
            | Update::Removed { namespace, name } => CanaryKey::new(namespace, name),
        }
    }

    /// The SSE event name for this update.
    pub fn event_name(&self) -> &'static str {
        match self {
            Update::Canary { .. } => "canary",
            Update::Entry { .. } => "entry",
            Update::Removed { .. } => "removed",
        }
    }
}

/// One point of the charts: weight and both arms' measurements at one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    /// When.
    pub at: Timestamp,
    /// Canary weight.
    pub weight: u32,
    /// Canary measurements.
    pub canary: ArmSample,
    /// Primary measurements.
    pub primary: ArmSample,
}

/// Response of `GET /api/v1/canaries`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryList {
    /// The Canaries, sorted by namespace and name (one page of them with `limit`/`offset`).
    pub items: Vec<CanarySummary>,
    /// How many Canaries match the filters, over all pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
    /// Canaries per phase name among those matching the namespace and search filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<std::collections::BTreeMap<String, usize>>,
}

/// One run with its timeline, as the detail endpoint returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Its history entries, oldest first (samples excluded; see `/series`).
    pub timeline: Vec<HistoryEntry>,
}

/// Response of `GET /api/v1/canaries/{namespace}/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryDetail {
    /// The overview row.
    pub canary: CanarySummary,
    /// Analysis settings.
    pub analysis: Option<AnalysisInfo>,
    /// Runs, newest first, each with its timeline.
    pub runs: Vec<RunDetail>,
    /// Entries outside any run (e.g. commands while idle), oldest first.
    pub other: Vec<HistoryEntry>,
}

/// Response of `GET /api/v1/canaries/{namespace}/{name}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryList {
    /// Entries, oldest first.
    pub items: Vec<HistoryEntry>,
}

/// Response of `GET /api/v1/canaries/{namespace}/{name}/series`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The run the points belong to.
    pub run: Option<u64>,
    /// Points, oldest first.
    pub points: Vec<SeriesPoint>,
}

/// Error body of every non-2xx API answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable code: `unauthorized`, `notFound`, `invalid`, `conflict`, `unavailable`, `readOnly`.
    pub error: String,
    /// What went wrong, naming the field or parameter.
    pub message: String,
}

//! [`Status`]: everything the engine remembers between ticks. The runtime persists it as is (the
//! Kubernetes status subresource, or SQLite locally); nothing else survives a restart, so the
//! engine keeps in here whatever it needs to never repeat a promotion or a passed gate.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::plan::WebhookKind;

/// Phase of a canary, as Flagger names them.
// One definition for the engine and the Canary's `status.phase` (serin-api re-exports it as
// `CanaryPhase`): the doc line above is the CRD schema's description, so it stays Flagger's
// wording; the spelling of each variant is the wire format.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Phase {
    /// The primary is being created and has not become ready yet.
    #[default]
    Initializing,
    /// The primary serves all traffic; the target is scaled to zero; no run yet.
    Initialized,
    /// A new revision waits for a confirm-rollout gate.
    Waiting,
    /// The analysis is running.
    Progressing,
    /// The analysis is done; a confirm-promotion gate holds the promotion.
    WaitingPromotion,
    /// The canary's template is being copied to the primary (and traffic shifted back).
    Promoting,
    /// All traffic is on the updated primary; the canary is being scaled to zero.
    Finalising,
    /// The last run promoted its revision.
    Succeeded,
    /// The last run was rolled back.
    Failed,
    /// The Canary is being deleted.
    Terminating,
    /// The Canary was finalised for deletion (Flagger writes it; the engine never enters it and
    /// does nothing in it).
    Terminated,
}

impl Phase {
    /// The phase name as Flagger writes it.
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
        }
    }

    /// Whether a run is under way (a new revision is being analysed or promoted).
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

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The persisted state of one canary.
///
/// The first block of fields is Flagger's `status` (same names, same meaning), so tools that read
/// Flagger canaries read Serin's. The rest is Serin's bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Lifecycle phase.
    pub phase: Phase,
    /// Percentage of traffic routed to the canary (0..=100); the primary gets the rest.
    pub canary_weight: u32,
    /// Failed checks in the current run (cumulative; reset when a run starts).
    pub failed_checks: u32,
    /// Passed iterations in the current run (A/B and Blue/Green; reset when a run starts).
    pub iterations: u32,
    /// Revision (pod-template hash) of the target last taken into account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Revision of the target last promoted to the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    /// Checksums of the tracked ConfigMaps/Secrets (`kind/name` to checksum) last taken into
    /// account.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracked_configs: BTreeMap<String, String>,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Timestamp>,
    /// Conditions; Serin maintains Flagger's `Promoted` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Why the canary is not advancing right now (not ready, waiting for a gate, inconclusive
    /// checks, ...); `None` while it advances. Holds are reported once, when they start or change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// Whether mirroring to the canary is on right now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirrored: bool,
    /// The run in flight (or the last run, after it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    /// Number of runs started so far; the next run gets `runs + 1` as its id.
    #[serde(default)]
    pub runs: u64,
    /// When the engine last took a scheduled analysis tick; the next one is due an interval later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick_at: Option<Timestamp>,
    /// Set while a human (or an inconclusive verdict with `onInconclusive: pause`) paused the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// Manual gates by name, opened and closed with commands; the runtime's gate endpoints answer
    /// from here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gates: BTreeMap<String, GateState>,
    /// Id of the last manual command applied (`status.lastCommandId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command_id: Option<String>,
    /// Ids of recently applied commands (newest last, at most 32), so a command delivered twice
    /// is applied once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_command_ids: Vec<String>,
    /// Since when the primary has been seen not ready (for the progress deadline) when the
    /// runtime cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_unready_since: Option<Timestamp>,
    /// The session-affinity cookie of the previous run, expired on the primary route so users
    /// pinned to an old canary come back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_affinity_cookie: Option<String>,
}

impl Status {
    /// The primary's share of traffic: `100 - canary_weight`.
    pub fn primary_weight(&self) -> u32 {
        100u32.saturating_sub(self.canary_weight)
    }

    /// The `Promoted` condition, when set.
    pub fn promoted_condition(&self) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.condition_type == CONDITION_PROMOTED)
    }
}

/// The condition type Flagger sets, so `kubectl wait --for=condition=Promoted` works.
pub const CONDITION_PROMOTED: &str = "Promoted";

/// A Kubernetes-style status condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type (`Promoted`).
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// When the condition was last written.
    pub last_update_time: Timestamp,
    /// When `status` last changed.
    pub last_transition_time: Timestamp,
    /// Machine-readable reason (the phase name, as Flagger).
    pub reason: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Kubernetes condition status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

/// One run: the analysis (and promotion or rollback) of one target revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// Run id, increasing per canary.
    pub id: u64,
    /// The target revision under analysis.
    pub revision: String,
    /// The tracked config checksums under analysis.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
    /// When the run started.
    pub started_at: Timestamp,
    /// Analysis step within the run: increases with every weight advance or passed iteration;
    /// gate passes are remembered per step.
    pub step: u32,
    /// Gate webhooks (`kind/name`) that already passed in this step, so a tick repeated after a
    /// crash or a hold does not call them again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub passed_gates: BTreeSet<String>,
    /// Whether the pre-rollout webhooks have passed in this run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_rollout_done: bool,
    /// When the analysis began (pre-rollout passed): the run's inconclusive budget counts from
    /// here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_started_at: Option<Timestamp>,
    /// When the current step began: the step's inconclusive budget counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Timestamp>,
    /// Why promotion started (analysis complete, skipAnalysis, manual promote by whom), once the
    /// canary's template has been handed to the primary in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// Since when the canary has been seen not ready (for the progress deadline) when the
    /// runtime cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_unready_since: Option<Timestamp>,
    /// The session-affinity cookie (`name=value`) handed to users routed to the canary in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_cookie: Option<String>,
    /// Why the run ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
}

impl Run {
    /// The key under which a passed gate is remembered.
    pub fn gate_key(kind: WebhookKind, name: &str) -> String {
        format!("{}/{name}", kind.as_str())
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum RunOutcome {
    /// The revision was promoted.
    #[serde(rename_all = "camelCase")]
    Promoted {
        /// Why: analysis complete, skipAnalysis, or a manual promote (with who).
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// The revision was rolled back.
    #[serde(rename_all = "camelCase")]
    RolledBack {
        /// Why: failed checks reached the threshold, progress deadline, rollback webhook, or a
        /// manual abort (with who).
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// A newer revision replaced this one mid-run.
    #[serde(rename_all = "camelCase")]
    Superseded {
        /// The revision that replaced it.
        by_revision: String,
        /// When.
        at: Timestamp,
    },
}

/// A pause and who asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// Who paused (a user, or `serin` for an inconclusive verdict).
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Why.
    pub reason: String,
}

/// A manual gate's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateState {
    /// Whether the gate lets the canary through.
    pub open: bool,
    /// Who last changed it.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

//! [`Observation`]: what the runtime saw this tick, as the engine needs it. The runtime fills only
//! what [`crate::Needs`] asked for; everything else may stay empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::plan::WebhookKind;

/// Everything observed in one tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The target workload (the user's Deployment or Process): its revision and tracked configs.
    /// `None` when the target does not exist (yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetState>,
    /// Readiness of the primary workload; `None` when it does not exist yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<Readiness>,
    /// Readiness of the canary (the target scaled up); `None` when not observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Readiness>,
    /// Results of the metric checks and the judge (present when `Needs::run_checks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Results of the gate webhooks called this tick (those listed in `Needs::gates`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
    /// Manual commands not yet applied, oldest first. Commands already applied (by id) are
    /// ignored, so the runtime may deliver one more than once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<Command>,
    /// The Canary is being deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// The target's identity: what makes a new revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetState {
    /// Hash of the pod template (or of the Process spec): a change starts a run.
    pub revision: String,
    /// Checksums of tracked ConfigMaps/Secrets (`kind/name` to checksum): a change starts a run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
}

/// A workload's rollout state, in the shape of a Deployment's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas running the newest template.
    pub updated: u32,
    /// Updated replicas that are available.
    pub available: u32,
    /// All replicas, old ones pending termination included.
    pub total: u32,
    /// Whether the workload controller has seen the latest spec (observedGeneration caught up).
    pub settled: bool,
    /// The workload controller itself reports its progress deadline exceeded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deadline_exceeded: bool,
    /// Since when the workload has lacked available replicas, when the runtime knows; otherwise
    /// the engine counts from the first tick it saw it not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_since: Option<Timestamp>,
}

impl Readiness {
    /// A workload with `replicas` replicas, all updated and available.
    pub fn ready(replicas: u32) -> Self {
        Readiness {
            desired: replicas,
            updated: replicas,
            available: replicas,
            total: replicas,
            settled: true,
            deadline_exceeded: false,
            unavailable_since: None,
        }
    }

    /// A workload with `replicas` replicas of which `available` are available.
    pub fn starting(replicas: u32, available: u32) -> Self {
        Readiness {
            available,
            ..Readiness::ready(replicas)
        }
    }

    /// Whether the rollout is complete with at least `threshold_percent` of the updated replicas
    /// available (Flagger's ready-threshold rule); `Err` says what is still missing.
    pub fn check(&self, threshold_percent: u32) -> Result<(), String> {
        if !self.settled {
            return Err("waiting for rollout to finish: observed generation behind desired".into());
        }
        if self.updated < self.desired {
            return Err(format!(
                "waiting for rollout to finish: {} out of {} new replicas have been updated",
                self.updated, self.desired
            ));
        }
        if self.total > self.updated {
            return Err(format!(
                "waiting for rollout to finish: {} old replicas are pending termination",
                self.total - self.updated
            ));
        }
        let needed = u64::from(self.updated) * u64::from(threshold_percent.min(100)) / 100;
        if u64::from(self.available) < needed {
            return Err(format!(
                "waiting for rollout to finish: {} of {} (readyThreshold {}%) updated replicas are available",
                self.available, self.updated, threshold_percent
            ));
        }
        Ok(())
    }
}

/// The result of one metric check (or of the statistical judge).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// The check's name (a `Plan::checks` entry).
    pub name: String,
    /// What the check concluded.
    pub verdict: Verdict,
    /// The measured value (e.g. success rate in percent, p99 latency in ms), when one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The accepted range the value was compared with.
    #[serde(default, skip_serializing_if = "Bound::is_unbounded")]
    pub bound: Bound,
    /// Requests (or samples) the value is based on, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// Free text: why this verdict (e.g. "no data", the judge's p-value).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// The value is within bounds.
    Pass,
    /// The value is out of bounds (counts as a failed check).
    Fail,
    /// Not enough evidence either way: the step holds, nothing counts as failed.
    Inconclusive,
}

/// An accepted range (`thresholdRange`): `min <= value <= max`, each side optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bound {
    /// Lowest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Bound {
    /// Whether neither side is set.
    pub fn is_unbounded(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => write!(f, "{lo}..={hi}"),
            (Some(lo), None) => write!(f, ">= {lo}"),
            (None, Some(hi)) => write!(f, "<= {hi}"),
            (None, None) => f.write_str("any"),
        }
    }
}

/// The result of calling one gate webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    /// The webhook's name.
    pub name: String,
    /// The webhook's kind.
    #[serde(rename = "type")]
    pub kind: WebhookKind,
    /// Whether it answered with success (2xx). For `rollback` hooks success means "roll back".
    pub passed: bool,
    /// Status code or error, for the history.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A manual command from a person or a CI pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// Unique id; a command is applied once.
    pub id: String,
    /// What to do.
    #[serde(flatten)]
    pub action: CommandAction,
    /// Who asked.
    pub by: String,
    /// When they asked.
    pub at: Timestamp,
}

/// What a manual command asks for. Serialized as `{"action":"promote"}` or
/// `{"action":"gate-open","gate":"NAME"}`, as in the `serin.dev/command` annotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum CommandAction {
    /// Promote the canary now, skipping the rest of the analysis (gates included).
    Promote,
    /// Roll back now.
    Abort,
    /// Stop advancing (and counting) until resumed.
    Pause,
    /// Undo a pause.
    Resume,
    /// Open a manual gate.
    GateOpen {
        /// Gate name.
        gate: String,
    },
    /// Close a manual gate.
    GateClose {
        /// Gate name.
        gate: String,
    },
}

impl CommandAction {
    /// The action's wire name (`promote`, `gate-open`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandAction::Promote => "promote",
            CommandAction::Abort => "abort",
            CommandAction::Pause => "pause",
            CommandAction::Resume => "resume",
            CommandAction::GateOpen { .. } => "gate-open",
            CommandAction::GateClose { .. } => "gate-close",
        }
    }
}

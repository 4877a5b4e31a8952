//! [`needs`] and [`step`]: the lifecycle itself.
//!
//! The order of checks inside one tick follows Flagger's scheduler (primary readiness, revision
//! change, canary readiness, skipAnalysis, rollback webhooks, failed-check threshold, pre-rollout
//! or analysis, then the strategy's move), so a Flagger user sees the same phases in the same
//! order. Where Serin deliberately differs it says so next to the code.

mod analyse;
mod commands;
mod gates;
mod initialise;
mod promote;
mod record;
mod rollback;

use serde::{Deserialize, Serialize};

use crate::action::{
    Action, AffinityRoutes, EventType, HistoryEntry, HistoryKind, Routes, Severity,
};
use crate::observation::{CheckResult, Command, CommandAction, GateResult, Observation, Verdict};
use crate::plan::{InconclusivePolicy, Plan, Strategy, Webhook, WebhookKind};
use crate::status::{
    CONDITION_PROMOTED, Condition, ConditionStatus, GateState, Pause, Phase, Run, RunOutcome,
    Status,
};
use crate::time::Timestamp;

/// How the reason of a run ended by an inconclusive budget begins (`onInconclusive rollback: ...`),
/// so clients such as `serin wait` can tell it from a failed run.
pub const ON_INCONCLUSIVE: &str = "onInconclusive";

/// What the runtime must observe before the next [`step`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Needs {
    /// Whether an analysis tick is due now. When it is not, [`step`] only applies commands and
    /// deletion, and acts on a target revision the status does not know yet while idle or
    /// analysing (new run or restart); so the runtime calls it early only for those.
    pub due: bool,
    /// When the next tick is due (equal to or before `now` when `due`).
    pub wake_at: Timestamp,
    /// Gate webhooks to call this tick, in spec order, each with the phase to report in its
    /// payload. Their results go into [`Observation::gates`].
    pub gates: Vec<GateCall>,
    /// Whether to evaluate the metric checks (and the judge) for this tick.
    pub run_checks: bool,
}

/// One gate webhook to call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateCall {
    /// The webhook.
    pub webhook: Webhook,
    /// The phase to send in the webhook payload (Flagger sends `Progressing` for every gate but
    /// `rollback`, which gets the current phase).
    pub phase: Phase,
}

/// The result of one [`step`]: the status to persist and the actions to carry out, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// The next status. Persist it after the actions are carried out.
    pub status: Status,
    /// What to do, in order.
    pub actions: Vec<Action>,
}

/// What the runtime has to observe before calling [`step`] at `now`.
pub fn needs(plan: &Plan, status: &Status, now: Timestamp) -> Needs {
    let wake_at = match status.last_tick_at {
        None => now,
        Some(t) => t + plan.interval,
    };
    let due = now >= wake_at;
    let mut needs = Needs {
        due,
        wake_at,
        gates: Vec::new(),
        run_checks: false,
    };
    if !due || plan.suspend || status.paused.is_some() {
        return needs;
    }
    let run = status.run.as_ref();
    let passed =
        |w: &Webhook| run.is_some_and(|r| r.passed_gates.contains(&Run::gate_key(w.kind, &w.name)));
    let mut want = |kind: WebhookKind, phase: Phase, remembered: bool| {
        for w in plan.webhooks.iter().filter(|w| w.kind == kind) {
            if !(remembered && passed(w)) {
                needs.gates.push(GateCall {
                    webhook: w.clone(),
                    phase,
                });
            }
        }
    };
    match status.phase {
        Phase::Waiting => {
            want(WebhookKind::Rollback, Phase::Waiting, false);
            want(WebhookKind::ConfirmRollout, Phase::Progressing, true);
        }
        Phase::Progressing | Phase::WaitingPromotion if !plan.skip_analysis => {
            want(WebhookKind::Rollback, status.phase, false);
            let pre_rollout_done = run.is_some_and(|r| r.pre_rollout_done);
            if pre_rollout_done {
                want(WebhookKind::Rollout, Phase::Progressing, false);
            } else {
                want(WebhookKind::PreRollout, Phase::Progressing, true);
            }
            if let Some(kind) = strategy_gate(plan, status) {
                want(kind, Phase::Progressing, true);
            }
            needs.run_checks = pre_rollout_done;
        }
        _ => {}
    }
    needs
}

/// Which gate the strategy's next move asks (confirm-traffic-increase or confirm-promotion).
fn strategy_gate(plan: &Plan, status: &Status) -> Option<WebhookKind> {
    match &plan.strategy {
        Strategy::Canary { step_weights, .. } => {
            let max = step_weights.last().copied().unwrap_or(100);
            if status.canary_weight >= max {
                Some(WebhookKind::ConfirmPromotion)
            } else if status.mirrored || status.phase == Phase::WaitingPromotion {
                // Flagger skips the traffic gate while mirroring (the next move only stops
                // mirroring and takes the first step it already approved).
                None
            } else {
                Some(WebhookKind::ConfirmTrafficIncrease)
            }
        }
        Strategy::AbTesting { iterations, .. } | Strategy::BlueGreen { iterations, .. } => {
            (status.iterations >= *iterations).then_some(WebhookKind::ConfirmPromotion)
        }
    }
}

/// Advances the canary by one tick: applies manual commands and deletion at any time, and, when a
/// tick is due (see [`needs`]), the lifecycle step for the current phase.
pub fn step(plan: &Plan, status: &Status, observation: &Observation, now: Timestamp) -> Transition {
    let mut tick = Tick {
        plan,
        obs: observation,
        now,
        s: status.clone(),
        actions: Vec::new(),
        checks_seen: Vec::new(),
        gates_seen: Vec::new(),
        commands_seen: Vec::new(),
        held: false,
    };
    tick.tick();
    // Flagger stamps lastTransitionTime whenever it writes the weight, the failed checks or the
    // iterations, not only at phase changes, so `kubectl get canaries` shows when the canary
    // last moved.
    let moved = |s: &Status| (s.canary_weight, s.failed_checks, s.iterations);
    if moved(&tick.s) != moved(status) {
        tick.s.last_transition_time = Some(now);
    }
    Transition {
        status: tick.s,
        actions: tick.actions,
    }
}

/// Why a group of gate webhooks did not let the canary through.
enum Gate {
    Passed,
    Failed { name: String, detail: String },
    Missing { name: String },
}

/// A workload's readiness as the engine judges it.
enum Ready {
    Yes,
    No(String),
    Stuck(String),
}

#[derive(Clone, Copy)]
enum Workload {
    Primary,
    Canary,
}

/// The verdict of one analysis tick.
enum Analysis {
    Pass,
    Fail(String),
    Hold(String),
}

struct Tick<'a> {
    plan: &'a Plan,
    obs: &'a Observation,
    now: Timestamp,
    s: Status,
    actions: Vec<Action>,
    // Evidence gathered this tick, attached to the next history entry.
    checks_seen: Vec<CheckResult>,
    gates_seen: Vec<GateResult>,
    commands_seen: Vec<Command>,
    // Whether a hold was (re)asserted this tick; a due tick without one clears the hold.
    held: bool,
}

impl Tick<'_> {
    fn tick(&mut self) {
        if matches!(self.s.phase, Phase::Terminating | Phase::Terminated) {
            return;
        }
        if self.obs.deleting {
            self.terminate();
            return;
        }
        let phase_before = self.s.phase;
        self.apply_commands();
        if self.s.phase != phase_before {
            // A manual promote or abort just moved the run; its next move waits for a fresh
            // observation (e.g. of the primary rolling out the promoted template).
            return;
        }
        let due = match self.s.last_tick_at {
            None => true,
            Some(t) => self.now >= t + self.plan.interval,
        } || (self.obs.commands.is_empty()
            && (self.new_target_revision() || self.awaited_workload_ready()));
        if !due {
            return;
        }
        self.s.last_tick_at = Some(self.now);
        // Flagger does nothing at all for a suspended canary; neither do we (commands above
        // still apply, so a human can pause or abort a suspended canary's state).
        if self.plan.suspend || self.s.paused.is_some() {
            return;
        }
        match self.s.phase {
            Phase::Initializing => self.initialize(),
            Phase::Initialized | Phase::Succeeded | Phase::Failed => self.idle(),
            Phase::Waiting => self.waiting(),
            Phase::Progressing | Phase::WaitingPromotion => self.analyse(),
            Phase::Promoting => self.promoting(),
            Phase::Finalising => self.finalising(),
            Phase::Terminating | Phase::Terminated => {}
        }
        if !self.held {
            self.s.hold = None;
        }
    }

    /// Whether the observed target runs a revision this status does not know yet, in a phase
    /// that acts on it without needing gates or checks first: idle (a new run starts) or
    /// analysing an older revision (the run restarts). A runtime that watches the target then
    /// gets the new revision handled at once instead of at the next interval. Not on a tick
    /// that applies commands: those act at once and the run continues at its scheduled tick.
    fn new_target_revision(&self) -> bool {
        let Some(target) = &self.obs.target else {
            return false;
        };
        // Stepping twice at the same instant changes nothing more (restart safety): a tick
        // that just ended in an idle phase leaves the new revision to the next instant.
        if self.s.last_tick_at == Some(self.now) {
            return false;
        }
        match self.s.phase {
            Phase::Initialized | Phase::Succeeded | Phase::Failed => {
                self.s.last_applied_spec.as_deref() != Some(target.revision.as_str())
            }
            Phase::Progressing | Phase::WaitingPromotion => self
                .s
                .run
                .as_ref()
                .is_some_and(|r| r.revision != target.revision),
            _ => false,
        }
    }
}

/// Whether the canary, in `status`, waits only for a workload to become ready before its next
/// move, so a runtime that watches the workloads should observe (and [`step`]) as soon as one
/// changes instead of at the next interval: the primary while Initializing, Promoting or
/// Finalising, and the canary before the analysis began (no check is judged then; only for runs
/// without gate webhooks, which are asked at scheduled ticks).
pub fn awaits_workload(plan: &Plan, status: &Status) -> bool {
    !plan.suspend
        && may_await_workload(status)
        // Gates are asked only on scheduled ticks (see [`needs`]): a run with any waits for one.
        && (status.phase != Phase::Progressing || !plan.webhooks.iter().any(|w| w.kind.is_gate()))
}

/// [`awaits_workload`] as far as `status` alone tells (the plan may still rule it out: a
/// suspended Canary, or gate webhooks before the analysis), for a runtime that decides from the
/// stored status which Canaries a workload change should wake.
pub fn may_await_workload(status: &Status) -> bool {
    status.paused.is_none()
        && match status.phase {
            Phase::Initializing | Phase::Promoting | Phase::Finalising => true,
            Phase::Progressing => status.run.as_ref().is_some_and(|r| !r.pre_rollout_done),
            _ => false,
        }
}

impl Tick<'_> {
    /// Whether the workload the canary waits for (see [`awaits_workload`]) is ready now, so the
    /// move it waited for happens at once rather than at the next interval. Waiting on the
    /// primary or on a canary that has not started its analysis judges nothing early: the
    /// analysis windows keep the interval.
    fn awaited_workload_ready(&self) -> bool {
        if self.s.last_tick_at == Some(self.now) || !awaits_workload(self.plan, &self.s) {
            return false;
        }
        let ready = |r: &Option<crate::observation::Readiness>, threshold: u32| {
            r.as_ref()
                .is_some_and(|r| !r.deadline_exceeded && r.check(threshold).is_ok())
        };
        let primary = ready(&self.obs.primary, self.plan.primary_ready_threshold);
        match self.s.phase {
            Phase::Progressing => {
                primary && ready(&self.obs.canary, self.plan.canary_ready_threshold)
            }
            _ => primary,
        }
    }
}

fn condition_for(phase: Phase) -> (ConditionStatus, &'static str) {
    use ConditionStatus::{False, True, Unknown};
    match phase {
        Phase::Initializing => (Unknown, "New target detected; initializing the primary."),
        Phase::Initialized => (True, "Primary initialized; all traffic on the primary."),
        Phase::Waiting => (Unknown, "Waiting for confirm-rollout approval."),
        Phase::Progressing => (
            Unknown,
            "New revision detected; canary analysis in progress.",
        ),
        Phase::WaitingPromotion => (
            Unknown,
            "Analysis complete; waiting for promotion approval.",
        ),
        Phase::Promoting => (Unknown, "Analysis complete; updating the primary."),
        Phase::Finalising => (
            Unknown,
            "Primary updated; routing all traffic to the primary.",
        ),
        Phase::Succeeded => (True, "Canary analysis succeeded; revision promoted."),
        Phase::Failed => (False, "Canary analysis failed; canary scaled to zero."),
        Phase::Terminating => (Unknown, "Canary is being deleted."),
        Phase::Terminated => (Unknown, "Canary was finalised for deletion."),
    }
}

/// A session-affinity cookie value unique to the run: deterministic (the engine has no
/// randomness) and cookie-safe.
fn cookie_value(run: u64, revision: &str) -> String {
    let rev: String = revision
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    format!("{run}-{rev}")
}

fn describe_check(c: &CheckResult) -> String {
    let verdict = match c.verdict {
        Verdict::Pass => "passed",
        Verdict::Fail => "failed",
        Verdict::Inconclusive => "inconclusive",
    };
    let mut s = format!("check {} {verdict}", c.name);
    if let Some(v) = c.value {
        s.push_str(&format!(": {v}"));
        if !c.bound.is_unbounded() {
            s.push_str(&format!(" (accepted {})", c.bound));
        }
    }
    if let Some(n) = c.samples {
        s.push_str(&format!(", {n} samples"));
    }
    if !c.detail.is_empty() {
        s.push_str(&format!(", {}", c.detail));
    }
    s
}

fn paren(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

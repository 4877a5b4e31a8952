//! [`needs`] and [`step`]: the lifecycle itself.
//!
//! The order of checks inside one tick follows Flagger's scheduler (primary readiness, revision
//! change, canary readiness, skipAnalysis, rollback webhooks, failed-check threshold, pre-rollout
//! or analysis, then the strategy's move), so a Flagger user sees the same phases in the same
//! order. Where Serin deliberately differs it says so next to the code.

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
        if self.s.phase == Phase::Terminating {
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
        } || (self.obs.commands.is_empty() && self.new_target_revision());
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
            Phase::Terminating => {}
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

    // ----- commands and deletion -----

    fn apply_commands(&mut self) {
        for cmd in &self.obs.commands {
            let seen = self.s.last_command_id.as_deref() == Some(cmd.id.as_str())
                || self.s.applied_command_ids.contains(&cmd.id);
            if seen {
                continue;
            }
            self.s.last_command_id = Some(cmd.id.clone());
            self.s.applied_command_ids.push(cmd.id.clone());
            let excess = self.s.applied_command_ids.len().saturating_sub(32);
            self.s.applied_command_ids.drain(..excess);
            self.commands_seen.push(cmd.clone());
            self.apply_command(cmd);
        }
    }

    fn apply_command(&mut self, cmd: &Command) {
        let by = cmd.by.as_str();
        let in_analysis = matches!(
            self.s.phase,
            Phase::Waiting | Phase::Progressing | Phase::WaitingPromotion
        );
        match &cmd.action {
            CommandAction::Pause => {
                if let Some(p) = &self.s.paused {
                    let msg = format!("pause by {by} ignored: already paused by {}", p.by);
                    self.record(HistoryKind::Command, msg);
                } else {
                    self.s.paused = Some(Pause {
                        by: by.to_string(),
                        at: cmd.at,
                        reason: format!("paused by {by}"),
                    });
                    self.event(EventType::Normal, "Paused", format!("Paused by {by}"));
                    self.record(HistoryKind::Command, format!("paused by {by}"));
                }
            }
            CommandAction::Resume => {
                if let Some(p) = self.s.paused.take() {
                    self.s.hold = None;
                    self.event(EventType::Normal, "Resumed", format!("Resumed by {by}"));
                    let msg = format!("resumed by {by} (was: {})", p.reason);
                    self.record(HistoryKind::Command, msg);
                } else {
                    self.record(
                        HistoryKind::Command,
                        format!("resume by {by} ignored: not paused"),
                    );
                }
            }
            CommandAction::Promote => {
                if in_analysis {
                    self.s.paused = None;
                    self.ensure_run();
                    self.start_promotion(format!("manual promote by {by}"));
                } else {
                    let msg = format!(
                        "promote by {by} ignored: no analysis in progress (phase {})",
                        self.s.phase
                    );
                    self.record(HistoryKind::Command, msg);
                }
            }
            CommandAction::Abort => {
                if in_analysis {
                    self.s.paused = None;
                    self.ensure_run();
                    self.rollback(format!("aborted by {by}"), Severity::Warn);
                } else {
                    let why = if matches!(self.s.phase, Phase::Promoting | Phase::Finalising) {
                        "promotion already under way"
                    } else {
                        "no analysis in progress"
                    };
                    let msg = format!("abort by {by} ignored: {why} (phase {})", self.s.phase);
                    self.record(HistoryKind::Command, msg);
                }
            }
            CommandAction::GateOpen { gate } | CommandAction::GateClose { gate } => {
                let open = matches!(cmd.action, CommandAction::GateOpen { .. });
                self.s.gates.insert(
                    gate.clone(),
                    GateState {
                        open,
                        by: by.to_string(),
                        at: cmd.at,
                    },
                );
                let verb = if open { "opened" } else { "closed" };
                self.record(HistoryKind::Command, format!("gate {gate} {verb} by {by}"));
            }
        }
    }

    fn terminate(&mut self) {
        self.set_phase(Phase::Terminating);
        if self.plan.revert_on_deletion {
            self.actions.push(Action::RevertTarget);
        }
        let msg = if self.plan.revert_on_deletion {
            "Canary deleted: handing the target back (revertOnDeletion)"
        } else {
            "Canary deleted"
        };
        self.event(EventType::Normal, "Terminating", msg.to_string());
        self.record(HistoryKind::Terminating, msg.to_string());
    }

    // ----- phases -----

    fn initialize(&mut self) {
        if self.s.conditions.is_empty() {
            // First sight of this canary: stamp the Initializing condition, as Flagger does.
            self.set_phase(Phase::Initializing);
        }
        let Some(target) = &self.obs.target else {
            self.hold(HistoryKind::Held, "target not found".into(), None);
            return;
        };
        // Creating the primary is idempotent, so it is asked for on every tick until it is ready.
        self.actions.push(Action::InitializePrimary);
        if !self.plan.skip_analysis {
            match self.readiness(Workload::Primary) {
                Ready::Yes => {}
                Ready::No(m) => {
                    self.hold(
                        HistoryKind::Held,
                        format!("waiting for the primary: {m}"),
                        None,
                    );
                    return;
                }
                Ready::Stuck(m) => {
                    // Unlike Flagger's rollback here, the target is left alone: the primary never
                    // became ready, so the target may still be what serves users.
                    self.s.last_applied_spec = Some(target.revision.clone());
                    self.s.tracked_configs = target.configs.clone();
                    self.set_phase(Phase::Failed);
                    let msg = format!("primary initialization failed: {m}");
                    self.event(EventType::Warning, "Failed", msg.clone());
                    self.alert(Severity::Error, format!("Progress deadline exceeded: {m}"));
                    self.record(HistoryKind::RolledBack, msg);
                    return;
                }
            }
        }
        self.set_routes(0, false, false);
        self.actions.push(Action::ScaleCanaryToZero);
        self.s.last_applied_spec = Some(target.revision.clone());
        self.s.last_promoted_spec = Some(target.revision.clone());
        self.s.tracked_configs = target.configs.clone();
        self.s.primary_unready_since = None;
        self.set_phase(Phase::Initialized);
        self.event(
            EventType::Normal,
            "Initialized",
            "Initialization done".into(),
        );
        self.alert(
            Severity::Info,
            "New target detected, initialization completed.".into(),
        );
        let msg = format!(
            "primary initialized at revision {}; all traffic on the primary, target scaled to zero",
            target.revision
        );
        self.record(HistoryKind::Initialized, msg);
    }

    fn idle(&mut self) {
        let Some(target) = &self.obs.target else {
            self.hold(HistoryKind::Held, "target not found".into(), None);
            return;
        };
        if self.s.last_promoted_spec.is_none() {
            // Initialization failed earlier; a changed target gets a fresh attempt.
            let changed = self.s.last_applied_spec.as_deref() != Some(target.revision.as_str())
                || self.s.tracked_configs != target.configs;
            if changed {
                self.s.primary_unready_since = None;
                self.set_phase(Phase::Initializing);
                self.initialize();
            }
            return;
        }
        let applied = self.s.last_applied_spec.as_deref();
        let promoted = self.s.last_promoted_spec.as_deref();
        let rev = target.revision.as_str();
        // Flagger's rule: a revision equal to the last promoted one is a manual rollback of the
        // target, not a new revision.
        let target_changed = applied.is_none() || (promoted != Some(rev) && applied != Some(rev));
        let configs_changed = self.s.tracked_configs != target.configs;
        if !target_changed && !configs_changed {
            if applied != Some(rev) {
                self.s.last_applied_spec = Some(rev.to_string());
                let msg =
                    format!("target reverted to the promoted revision {rev}; nothing to analyse");
                self.record(HistoryKind::Held, msg);
            }
            return;
        }
        if !self.plan.skip_analysis {
            match self.readiness(Workload::Primary) {
                Ready::Yes => {}
                Ready::No(m) | Ready::Stuck(m) => {
                    let msg = format!("new revision {rev} waits for the primary: {m}");
                    self.hold(HistoryKind::Held, msg, None);
                    return;
                }
            }
        }
        let (rev, configs) = (target.revision.clone(), target.configs.clone());
        self.start_run(rev, configs, configs_changed && !target_changed);
    }

    fn start_run(
        &mut self,
        revision: String,
        configs: std::collections::BTreeMap<String, String>,
        configs_only: bool,
    ) {
        let id = self.s.runs + 1;
        self.s.runs = id;
        let affinity_cookie = self.plan.session_affinity.as_ref().and_then(|a| {
            matches!(self.plan.strategy, Strategy::Canary { .. })
                .then(|| format!("{}={}", a.cookie_name, cookie_value(id, &revision)))
        });
        self.s.run = Some(Run {
            id,
            revision: revision.clone(),
            configs: configs.clone(),
            started_at: self.now,
            affinity_cookie,
            ..Run::default()
        });
        self.s.last_applied_spec = Some(revision.clone());
        self.s.tracked_configs = configs;
        self.s.canary_weight = 0;
        self.s.failed_checks = 0;
        self.s.iterations = 0;
        self.s.mirrored = false;
        let what = if configs_only {
            format!("tracked configs changed (revision {revision})")
        } else {
            format!("new revision {revision} detected")
        };
        if self.has_webhooks(WebhookKind::ConfirmRollout) {
            self.set_phase(Phase::Waiting);
            // Ask the confirm-rollout gates right away rather than an interval later.
            self.s.last_tick_at = None;
            let msg = format!("{what}; asking confirm-rollout webhooks");
            self.event(EventType::Normal, "NewRevision", msg.clone());
            self.record(HistoryKind::RunStarted, msg);
        } else {
            // The entry carries the phase the run starts in, not the previous run's end
            // (a timeline would otherwise open a new run with "Failed" or "Succeeded").
            self.record_in(Phase::Progressing, HistoryKind::RunStarted, what);
            self.begin_progressing();
        }
    }

    fn begin_progressing(&mut self) {
        self.actions.push(Action::ScaleCanaryUp);
        self.set_phase(Phase::Progressing);
        self.event(
            EventType::Normal,
            "Progressing",
            "New revision detected! Scaling up the canary".into(),
        );
        self.alert(
            Severity::Info,
            "New revision detected, progressing canary analysis.".into(),
        );
    }

    fn waiting(&mut self) {
        self.ensure_run();
        if let Some(target) = &self.obs.target {
            let run = self.run();
            if run.revision != target.revision || run.configs != target.configs {
                if self.is_revert(&target.revision) {
                    let msg = format!(
                        "target reverted to the promoted revision {} while waiting",
                        target.revision
                    );
                    self.rollback(msg, Severity::Warn);
                    return;
                }
                // Flagger keeps waiting and simply takes the newer revision into account.
                let (rev, configs) = (target.revision.clone(), target.configs.clone());
                self.s.last_applied_spec = Some(rev.clone());
                self.s.tracked_configs = configs.clone();
                let run = self.run_mut();
                run.revision = rev.clone();
                run.configs = configs;
                run.passed_gates.clear();
                self.record(
                    HistoryKind::RunRestarted,
                    format!("revision changed to {rev} while waiting for approval"),
                );
            }
        }
        if let Some(name) = self.rollback_requested() {
            self.rollback(
                format!("rollback webhook {name} signalled a rollback"),
                Severity::Warn,
            );
            return;
        }
        match self.gates(WebhookKind::ConfirmRollout) {
            Gate::Passed => {
                self.event(
                    EventType::Normal,
                    "Confirmed",
                    "Confirm-rollout checks passed".into(),
                );
                self.record(
                    HistoryKind::Advanced,
                    "confirm-rollout webhooks passed".into(),
                );
                self.begin_progressing();
            }
            Gate::Failed { name, .. } => {
                let msg =
                    format!("waiting for approval: confirm-rollout webhook {name} did not pass");
                let alert = (Severity::Warn, "Canary is waiting for approval.");
                self.hold(HistoryKind::Waiting, msg, Some(alert));
            }
            Gate::Missing { name } => self.missing_gate(WebhookKind::ConfirmRollout, &name),
        }
    }

    fn analyse(&mut self) {
        self.ensure_run();
        let Some(target) = &self.obs.target else {
            self.hold(HistoryKind::Held, "target not found".into(), None);
            return;
        };
        if !self.plan.skip_analysis {
            match self.readiness(Workload::Primary) {
                Ready::Yes => {}
                Ready::No(m) => {
                    self.hold(HistoryKind::Held, format!("primary not ready: {m}"), None);
                    return;
                }
                Ready::Stuck(m) => {
                    self.deadline_rollback(format!("primary: {m}"));
                    return;
                }
            }
        }
        let run = self.run();
        if run.revision != target.revision || run.configs != target.configs {
            if self.is_revert(&target.revision) && run.configs == target.configs {
                // Serin ends the run (Flagger would carry on analysing the old revision).
                let msg = format!(
                    "target reverted to the promoted revision {}",
                    target.revision
                );
                self.rollback(msg, Severity::Warn);
            } else {
                let (rev, configs) = (target.revision.clone(), target.configs.clone());
                self.restart(rev, configs);
            }
            return;
        }
        match self.readiness(Workload::Canary) {
            Ready::Yes => {}
            Ready::No(m) => {
                self.hold(HistoryKind::Held, format!("canary not ready: {m}"), None);
                return;
            }
            Ready::Stuck(m) => {
                self.deadline_rollback(format!("canary: {m}"));
                return;
            }
        }
        if self.plan.skip_analysis {
            self.skip_promote();
            return;
        }
        if let Some(name) = self.rollback_requested() {
            self.rollback(
                format!("rollback webhook {name} signalled a rollback"),
                Severity::Warn,
            );
            return;
        }
        if self.s.failed_checks >= self.plan.threshold.max(1) {
            self.threshold_rollback();
            return;
        }
        if !self.run().pre_rollout_done {
            match self.gates(WebhookKind::PreRollout) {
                Gate::Passed => {
                    let now = self.now;
                    let run = self.run_mut();
                    run.pre_rollout_done = true;
                    run.analysis_started_at = Some(now);
                    run.step_started_at = Some(now);
                    if self.has_webhooks(WebhookKind::PreRollout) {
                        self.event(
                            EventType::Normal,
                            "PreRollout",
                            "Pre-rollout checks passed".into(),
                        );
                    }
                    self.event(
                        EventType::Normal,
                        "Started",
                        "Starting canary analysis".into(),
                    );
                }
                Gate::Failed { name, detail } => {
                    self.fail_check(format!(
                        "pre-rollout webhook {name} failed{}",
                        paren(&detail)
                    ));
                    return;
                }
                Gate::Missing { name } => {
                    self.missing_gate(WebhookKind::PreRollout, &name);
                    return;
                }
            }
        } else {
            match self.evaluate() {
                Analysis::Pass => {}
                Analysis::Fail(msg) => {
                    self.fail_check(msg);
                    return;
                }
                Analysis::Hold(msg) => {
                    self.inconclusive(msg);
                    return;
                }
            }
        }
        match self.plan.strategy.clone() {
            Strategy::Canary {
                step_weights,
                mirror,
                ..
            } => self.canary_move(&step_weights, mirror.is_some()),
            Strategy::AbTesting { iterations, .. } => {
                if self.s.iterations < iterations {
                    self.set_routes(0, false, true);
                    self.next_iteration(iterations);
                } else {
                    self.confirm_promotion("iterations complete");
                }
            }
            Strategy::BlueGreen { iterations, mirror } => {
                if self.s.iterations < iterations {
                    if mirror.is_some() && !self.s.mirrored {
                        self.set_routes(0, true, true);
                        self.event(
                            EventType::Normal,
                            "Mirroring",
                            "Start traffic mirroring".into(),
                        );
                    }
                    self.next_iteration(iterations);
                } else if self.s.iterations == iterations {
                    // Blue/Green: once approved, all traffic moves to the canary for one more
                    // analysed tick before the primary is updated (as Flagger does).
                    if let Some(()) = self.confirm_gate() {
                        self.set_routes(100, false, true);
                        self.s.iterations += 1;
                        self.advance_step();
                        let msg = if mirror.is_some() {
                            "Stop traffic mirroring and route all traffic to canary"
                        } else {
                            "Routing all traffic to canary"
                        };
                        self.event(EventType::Normal, "Advanced", msg.into());
                        self.record(HistoryKind::Advanced, format!("{msg} (checks passed)"));
                    }
                } else {
                    self.confirm_promotion("iterations complete");
                }
            }
        }
    }

    fn canary_move(&mut self, step_weights: &[u32], mirror: bool) {
        let max = step_weights.last().copied().unwrap_or(100);
        let cw = self.s.canary_weight;
        if cw >= max {
            self.confirm_promotion("maxWeight reached");
            return;
        }
        let first = step_weights.first().copied().unwrap_or(max);
        if mirror && cw == 0 && self.s.mirrored {
            self.set_routes(first, false, true);
            self.advance_step();
            let msg = format!("mirroring done; canary weight {first}");
            self.event(
                EventType::Normal,
                "Advanced",
                format!("Advance canary weight {first}"),
            );
            self.record(HistoryKind::Advanced, msg);
            return;
        }
        match self.gates(WebhookKind::ConfirmTrafficIncrease) {
            Gate::Passed => {}
            Gate::Failed { name, .. } => {
                let msg = format!(
                    "waiting for traffic increase approval: confirm-traffic-increase webhook {name} did not pass"
                );
                let alert = (
                    Severity::Warn,
                    "Canary traffic increase is waiting for approval.",
                );
                self.hold(HistoryKind::Waiting, msg, Some(alert));
                return;
            }
            Gate::Missing { name } => {
                self.missing_gate(WebhookKind::ConfirmTrafficIncrease, &name);
                return;
            }
        }
        if mirror && cw == 0 {
            self.set_routes(0, true, true);
            self.advance_step();
            self.event(
                EventType::Normal,
                "Mirroring",
                "Start traffic mirroring".into(),
            );
            self.record(
                HistoryKind::Advanced,
                "mirroring traffic to the canary".into(),
            );
            return;
        }
        let next = step_weights
            .iter()
            .copied()
            .find(|w| *w > cw)
            .unwrap_or(max)
            .min(100);
        self.set_routes(next, false, true);
        self.advance_step();
        self.event(
            EventType::Normal,
            "Advanced",
            format!("Advance canary weight {next}"),
        );
        self.record(
            HistoryKind::Advanced,
            format!("canary weight {cw} -> {next}"),
        );
    }

    fn next_iteration(&mut self, total: u32) {
        self.s.iterations += 1;
        self.advance_step();
        let msg = format!("Advance canary iteration {}/{total}", self.s.iterations);
        self.event(EventType::Normal, "Advanced", msg.clone());
        self.record(HistoryKind::Advanced, msg);
    }

    /// Asks the confirm-promotion gates; `Some(())` when they all passed. On a refusal the phase
    /// becomes WaitingPromotion (alerting once).
    fn confirm_gate(&mut self) -> Option<()> {
        match self.gates(WebhookKind::ConfirmPromotion) {
            Gate::Passed => {
                if self.has_webhooks(WebhookKind::ConfirmPromotion) {
                    self.event(
                        EventType::Normal,
                        "Confirmed",
                        "Confirm-promotion checks passed".into(),
                    );
                }
                Some(())
            }
            Gate::Failed { name, .. } => {
                self.set_phase(Phase::WaitingPromotion);
                let msg = format!(
                    "waiting for promotion approval: confirm-promotion webhook {name} did not pass"
                );
                let alert = (Severity::Warn, "Canary promotion is waiting for approval.");
                self.hold(HistoryKind::Waiting, msg, Some(alert));
                None
            }
            Gate::Missing { name } => {
                self.missing_gate(WebhookKind::ConfirmPromotion, &name);
                None
            }
        }
    }

    fn confirm_promotion(&mut self, why: &str) {
        if self.confirm_gate().is_some() {
            self.start_promotion(format!("analysis complete: {why}"));
        }
    }

    fn start_promotion(&mut self, reason: String) {
        let revision = self.run().revision.clone();
        self.actions.push(Action::PromoteCanaryToPrimary {
            revision: revision.clone(),
        });
        self.run_mut().promotion = Some(reason.clone());
        self.set_phase(Phase::Promoting);
        self.event(
            EventType::Normal,
            "Promoting",
            format!("Copying the canary template (revision {revision}) to the primary"),
        );
        self.record(
            HistoryKind::Promoting,
            format!("promoting {revision}: {reason}"),
        );
    }

    fn promoting(&mut self) {
        self.ensure_run();
        match self.readiness(Workload::Primary) {
            Ready::Yes => {}
            Ready::No(m) => {
                self.hold(
                    HistoryKind::Held,
                    format!("waiting for the primary rollout: {m}"),
                    None,
                );
                return;
            }
            Ready::Stuck(m) => {
                self.deadline_rollback(format!("primary: {m}"));
                return;
            }
        }
        let cw = self.s.canary_weight;
        let promotion_step = match &self.plan.strategy {
            Strategy::Canary {
                step_weight_promotion,
                ..
            } => step_weight_promotion.filter(|s| *s > 0),
            _ => None,
        };
        match promotion_step {
            // Flagger would stay in Promoting forever with a zero canary weight here; Serin
            // finalises.
            Some(step) if cw > 0 => {
                let next = cw.saturating_sub(step);
                self.set_routes(next, false, next > 0);
                self.event(
                    EventType::Normal,
                    "Advanced",
                    format!("Advance primary weight {}", 100 - next),
                );
                if next == 0 {
                    self.set_phase(Phase::Finalising);
                }
                self.record(
                    HistoryKind::Advanced,
                    format!("primary weight {} -> {}", 100 - cw, 100 - next),
                );
            }
            _ => {
                self.set_routes(0, false, false);
                self.set_phase(Phase::Finalising);
                self.event(
                    EventType::Normal,
                    "Advanced",
                    "Routing all traffic to primary".into(),
                );
                self.record(
                    HistoryKind::Advanced,
                    "all traffic routed to the updated primary".into(),
                );
            }
        }
    }

    fn finalising(&mut self) {
        self.ensure_run();
        match self.readiness(Workload::Primary) {
            Ready::Yes => {}
            Ready::No(m) => {
                self.hold(HistoryKind::Held, format!("primary not ready: {m}"), None);
                return;
            }
            Ready::Stuck(m) => {
                self.deadline_rollback(format!("primary: {m}"));
                return;
            }
        }
        self.actions.push(Action::ScaleCanaryToZero);
        let reason = self
            .run()
            .promotion
            .clone()
            .unwrap_or_else(|| "analysis complete".into());
        self.succeed(reason, "Promotion completed! Canary scaled down");
    }

    fn skip_promote(&mut self) {
        self.set_routes(0, false, false);
        let revision = self.run().revision.clone();
        self.actions
            .push(Action::PromoteCanaryToPrimary { revision });
        self.actions.push(Action::ScaleCanaryToZero);
        self.run_mut().promotion = Some("skipAnalysis".into());
        self.succeed(
            "skipAnalysis".into(),
            "Promotion completed! Canary analysis was skipped",
        );
    }

    fn succeed(&mut self, reason: String, event: &str) {
        let revision = self.run().revision.clone();
        self.s.last_promoted_spec = Some(revision.clone());
        self.s.previous_affinity_cookie = self.run().affinity_cookie.clone();
        self.run_mut().outcome = Some(RunOutcome::Promoted {
            reason: reason.clone(),
            at: self.now,
        });
        self.set_phase(Phase::Succeeded);
        self.notify_post_rollout(format!("promoted {revision}: {reason}"));
        self.event(EventType::Normal, "Succeeded", event.into());
        let alert = if reason == "skipAnalysis" {
            "Canary analysis was skipped, promotion finished."
        } else {
            "Canary analysis completed successfully, promotion finished."
        };
        self.alert(Severity::Info, alert.into());
        self.record(
            HistoryKind::Succeeded,
            format!("{revision} promoted: {reason}"),
        );
    }

    fn restart(&mut self, revision: String, configs: std::collections::BTreeMap<String, String>) {
        let old = self.run().clone();
        if let Some(run) = self.s.run.as_mut() {
            run.outcome = Some(RunOutcome::Superseded {
                by_revision: revision.clone(),
                at: self.now,
            });
        }
        self.s.previous_affinity_cookie = old.affinity_cookie.clone();
        self.set_routes(0, false, false);
        let id = self.s.runs + 1;
        self.s.runs = id;
        let affinity_cookie = old.affinity_cookie.as_ref().and_then(|_| {
            self.plan
                .session_affinity
                .as_ref()
                .map(|a| format!("{}={}", a.cookie_name, cookie_value(id, &revision)))
        });
        self.s.run = Some(Run {
            id,
            revision: revision.clone(),
            configs: configs.clone(),
            started_at: self.now,
            affinity_cookie,
            ..Run::default()
        });
        self.s.last_applied_spec = Some(revision.clone());
        self.s.tracked_configs = configs;
        self.s.failed_checks = 0;
        self.s.iterations = 0;
        self.set_phase(Phase::Progressing);
        // A restart keeps the phase Progressing; Flagger still stamps the transition time.
        self.s.last_transition_time = Some(self.now);
        let msg = format!(
            "New revision {revision} detected! Restarting analysis (run {} superseded)",
            old.id
        );
        self.event(EventType::Normal, "Restarted", msg.clone());
        self.record(HistoryKind::RunRestarted, msg);
    }

    // ----- rollback -----

    fn threshold_rollback(&mut self) {
        let n = self.s.failed_checks;
        let msg = format!(
            "failed checks threshold reached ({n} of {})",
            self.plan.threshold.max(1)
        );
        self.rollback(msg, Severity::Error);
    }

    fn deadline_rollback(&mut self, detail: String) {
        let msg = format!(
            "progress deadline exceeded ({}s): {detail}",
            self.plan.progress_deadline.as_secs()
        );
        self.rollback(msg, Severity::Error);
    }

    fn rollback(&mut self, reason: String, severity: Severity) {
        self.ensure_run();
        self.s.previous_affinity_cookie = self.run().affinity_cookie.clone();
        self.set_routes(0, false, false);
        self.actions.push(Action::ScaleCanaryToZero);
        self.run_mut().outcome = Some(RunOutcome::RolledBack {
            reason: reason.clone(),
            at: self.now,
        });
        self.set_phase(Phase::Failed);
        self.event(
            EventType::Warning,
            "RolledBack",
            format!("Canary failed! Scaling down the canary: {reason}"),
        );
        self.alert(severity, format!("Canary rolled back: {reason}"));
        let revision = self.run().revision.clone();
        self.notify_post_rollout(format!("rolled back {revision}: {reason}"));
        self.record(
            HistoryKind::RolledBack,
            format!("{revision} rolled back: {reason}"),
        );
    }

    fn fail_check(&mut self, msg: String) {
        self.s.failed_checks += 1;
        let threshold = self.plan.threshold.max(1);
        let n = self.s.failed_checks;
        self.event(
            EventType::Warning,
            "Halted",
            format!("Halt advancement: {msg} ({n} of {threshold} failed checks)"),
        );
        self.record(
            HistoryKind::CheckFailed,
            format!("{msg}; failed checks {n} of {threshold}"),
        );
        // Flagger rolls back on the tick after the threshold is reached; Serin does not wait an
        // interval more with a canary it already knows is bad.
        if n >= threshold {
            self.threshold_rollback();
        }
    }

    fn inconclusive(&mut self, msg: String) {
        let policy = self.plan.on_inconclusive;
        let spent = self.inconclusive_budget_spent();
        if policy == InconclusivePolicy::Pause
            && (spent.is_some() || !self.plan.inconclusive_budget.is_set())
        {
            let why = match &spent {
                Some(b) => format!("{b}: {msg}"),
                None => msg,
            };
            self.s.paused = Some(Pause {
                by: "serin".into(),
                at: self.now,
                reason: why.clone(),
            });
            let text = format!("paused for a human: {why}");
            self.alert(Severity::Warn, format!("Canary paused: {why}"));
            self.hold(HistoryKind::Held, text, None);
            return;
        }
        let Some(budget) = spent else {
            self.hold(HistoryKind::Held, format!("holding: {msg}"), None);
            return;
        };
        // The wording starts with ON_INCONCLUSIVE so `serin wait` can tell a run that ended
        // without evidence from one that failed.
        let reason = format!("{ON_INCONCLUSIVE} {}: {budget}: {msg}", policy.as_str());
        match policy {
            InconclusivePolicy::Rollback => {
                self.event(EventType::Warning, "Inconclusive", reason.clone());
                self.rollback(reason, Severity::Warn);
            }
            InconclusivePolicy::Promote => {
                self.event(EventType::Warning, "Inconclusive", reason.clone());
                self.record(HistoryKind::Held, reason.clone());
                if self.confirm_gate().is_some() {
                    self.start_promotion(reason);
                }
            }
            // Pause is handled above; wait keeps holding, saying once that the budget is spent.
            InconclusivePolicy::Wait | InconclusivePolicy::Pause => {
                self.hold(HistoryKind::Held, format!("holding: {reason}"), None);
            }
        }
    }

    /// Which inconclusive budget is spent, in words, if any.
    fn inconclusive_budget_spent(&self) -> Option<String> {
        let budget = self.plan.inconclusive_budget;
        let run = self.s.run.as_ref()?;
        let over = |limit: Option<std::time::Duration>, since: Option<Timestamp>| {
            let (limit, since) = (limit?, since?);
            (self.now.since(since) >= limit).then_some(limit)
        };
        if let Some(l) = over(budget.run, run.analysis_started_at) {
            return Some(format!(
                "no decision within the run budget ({})",
                crate::duration::format_duration(l)
            ));
        }
        over(budget.step, run.step_started_at.or(run.analysis_started_at)).map(|l| {
            format!(
                "no decision within the step budget ({}) at weight {}%",
                crate::duration::format_duration(l),
                self.s.canary_weight
            )
        })
    }

    // ----- evidence -----

    /// Rollout webhooks and checks for one analysis tick: any failure fails the tick (counted
    /// once); otherwise any inconclusive or missing result holds it.
    fn evaluate(&mut self) -> Analysis {
        let mut fails = Vec::new();
        let mut unsure = Vec::new();
        for w in self
            .plan
            .webhooks
            .iter()
            .filter(|w| w.kind == WebhookKind::Rollout)
        {
            match self
                .obs
                .gates
                .iter()
                .find(|g| g.kind == w.kind && g.name == w.name)
            {
                None => unsure.push(format!("no result for rollout webhook {}", w.name)),
                Some(g) => {
                    self.gates_seen.push(g.clone());
                    if !g.passed {
                        fails.push(format!(
                            "rollout webhook {} failed{}",
                            w.name,
                            paren(&g.detail)
                        ));
                    }
                }
            }
        }
        for c in &self.obs.checks {
            self.checks_seen.push(c.clone());
            match c.verdict {
                Verdict::Pass => {}
                Verdict::Fail => fails.push(describe_check(c)),
                Verdict::Inconclusive => unsure.push(describe_check(c)),
            }
        }
        for name in &self.plan.checks {
            if !self.obs.checks.iter().any(|c| &c.name == name) {
                unsure.push(format!("no result for check {name}"));
            }
        }
        if !fails.is_empty() {
            Analysis::Fail(fails.join("; "))
        } else if !unsure.is_empty() {
            Analysis::Hold(unsure.join("; "))
        } else {
            Analysis::Pass
        }
    }

    /// Walks the webhooks of one gate kind in spec order, skipping those already passed in this
    /// step, and remembers each pass so a repeated tick does not call it again.
    fn gates(&mut self, kind: WebhookKind) -> Gate {
        let hooks: Vec<&Webhook> = self
            .plan
            .webhooks
            .iter()
            .filter(|w| w.kind == kind)
            .collect();
        for w in hooks {
            let key = Run::gate_key(kind, &w.name);
            if self
                .s
                .run
                .as_ref()
                .is_some_and(|r| r.passed_gates.contains(&key))
            {
                continue;
            }
            let Some(g) = self
                .obs
                .gates
                .iter()
                .find(|g| g.kind == kind && g.name == w.name)
            else {
                return Gate::Missing {
                    name: w.name.clone(),
                };
            };
            self.gates_seen.push(g.clone());
            if !g.passed {
                return Gate::Failed {
                    name: w.name.clone(),
                    detail: g.detail.clone(),
                };
            }
            if let Some(run) = self.s.run.as_mut() {
                run.passed_gates.insert(key);
            }
        }
        Gate::Passed
    }

    fn missing_gate(&mut self, kind: WebhookKind, name: &str) {
        let msg = format!("no result for {} webhook {name}", kind.as_str());
        self.hold(HistoryKind::Held, msg, None);
    }

    fn rollback_requested(&mut self) -> Option<String> {
        for w in self
            .plan
            .webhooks
            .iter()
            .filter(|w| w.kind == WebhookKind::Rollback)
        {
            if let Some(g) = self
                .obs
                .gates
                .iter()
                .find(|g| g.kind == w.kind && g.name == w.name)
            {
                self.gates_seen.push(g.clone());
                if g.passed {
                    return Some(w.name.clone());
                }
            }
        }
        None
    }

    fn readiness(&mut self, which: Workload) -> Ready {
        let (observed, threshold, name) = match which {
            Workload::Primary => (
                &self.obs.primary,
                self.plan.primary_ready_threshold,
                "primary",
            ),
            Workload::Canary => (&self.obs.canary, self.plan.canary_ready_threshold, "canary"),
        };
        let verdict = match observed {
            None => Err((format!("{name} not found"), None, false)),
            Some(r) if r.deadline_exceeded => Err((
                format!("{name} exceeded its progress deadline"),
                r.unavailable_since,
                true,
            )),
            Some(r) => r
                .check(threshold)
                .map_err(|m| (m, r.unavailable_since, false)),
        };
        let slot = match which {
            Workload::Primary => &mut self.s.primary_unready_since,
            Workload::Canary => match self.s.run.as_mut() {
                Some(run) => &mut run.canary_unready_since,
                None => &mut self.s.primary_unready_since,
            },
        };
        match verdict {
            Ok(()) => {
                *slot = None;
                Ready::Yes
            }
            Err((msg, _, true)) => Ready::Stuck(msg),
            Err((msg, observed_since, false)) => {
                let since = match (observed_since, *slot) {
                    (Some(t), _) => t,
                    (None, Some(t)) => t,
                    (None, None) => self.now,
                };
                if slot.is_none() {
                    *slot = Some(since);
                }
                let stuck_for = self.now.since(since);
                if stuck_for > self.plan.progress_deadline {
                    Ready::Stuck(format!("{msg} (not ready for {}s)", stuck_for.as_secs()))
                } else {
                    Ready::No(msg)
                }
            }
        }
    }

    // ----- state helpers -----

    fn has_webhooks(&self, kind: WebhookKind) -> bool {
        self.plan.webhooks.iter().any(|w| w.kind == kind)
    }

    fn is_revert(&self, revision: &str) -> bool {
        self.s.last_promoted_spec.as_deref() == Some(revision)
    }

    /// Makes sure a run exists while a run phase is current (a status written by an older
    /// version, or by hand, may lack one): it adopts the revision last applied.
    fn ensure_run(&mut self) {
        if self.s.run.as_ref().is_some_and(|r| r.outcome.is_none()) {
            return;
        }
        let revision = self
            .s
            .last_applied_spec
            .clone()
            .or_else(|| self.obs.target.as_ref().map(|t| t.revision.clone()))
            .unwrap_or_default();
        let id = self.s.runs + 1;
        self.s.runs = id;
        self.s.run = Some(Run {
            id,
            revision,
            configs: self.s.tracked_configs.clone(),
            started_at: self.now,
            pre_rollout_done: self.s.canary_weight > 0 || self.s.iterations > 0,
            ..Run::default()
        });
    }

    fn run(&self) -> &Run {
        // ensure_run() runs first on every path that reaches here.
        static EMPTY: Run = Run {
            id: 0,
            revision: String::new(),
            configs: std::collections::BTreeMap::new(),
            started_at: Timestamp::from_millis(0),
            step: 0,
            passed_gates: std::collections::BTreeSet::new(),
            pre_rollout_done: false,
            analysis_started_at: None,
            step_started_at: None,
            promotion: None,
            canary_unready_since: None,
            affinity_cookie: None,
            outcome: None,
        };
        self.s.run.as_ref().unwrap_or(&EMPTY)
    }

    fn run_mut(&mut self) -> &mut Run {
        self.s.run.get_or_insert_with(Run::default)
    }

    fn advance_step(&mut self) {
        let now = self.now;
        let run = self.run_mut();
        run.step += 1;
        run.passed_gates.clear();
        run.step_started_at = Some(now);
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.s.phase == phase && !self.s.conditions.is_empty() {
            return;
        }
        self.s.phase = phase;
        self.s.last_transition_time = Some(self.now);
        self.s.hold = None;
        let (status, message) = condition_for(phase);
        let now = self.now;
        match self
            .s
            .conditions
            .iter_mut()
            .find(|c| c.condition_type == CONDITION_PROMOTED)
        {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.last_update_time = now;
                c.reason = phase.as_str().into();
                c.message = message.into();
            }
            None => self.s.conditions.push(Condition {
                condition_type: CONDITION_PROMOTED.into(),
                status,
                last_update_time: now,
                last_transition_time: now,
                reason: phase.as_str().into(),
                message: message.into(),
            }),
        }
    }

    /// Routes `canary_weight` percent to the canary. `active` says whether the run's A/B matches
    /// and sticky-session cookie apply (they stop applying once traffic is back on the primary).
    fn set_routes(&mut self, canary_weight: u32, mirrored: bool, active: bool) {
        let canary_weight = canary_weight.min(100);
        let mirror_weight = if mirrored {
            Some(
                self.plan
                    .strategy
                    .mirror()
                    .map_or(100, |m| m.weight.min(100)),
            )
        } else {
            None
        };
        let matches = match &self.plan.strategy {
            Strategy::AbTesting { matches, .. } if active => matches.clone(),
            _ => Vec::new(),
        };
        let affinity = self.plan.session_affinity.as_ref().and_then(|a| {
            let run_cookie = self.s.run.as_ref().and_then(|r| r.affinity_cookie.clone());
            // While the run is live its cookie pins users to the canary and the previous run's
            // cookie is expired; once traffic is back on the primary, this run's cookie is.
            let (cookie, expire) = if active {
                (run_cookie, self.s.previous_affinity_cookie.clone())
            } else {
                (
                    None,
                    run_cookie.or_else(|| self.s.previous_affinity_cookie.clone()),
                )
            };
            (cookie.is_some() || expire.is_some()).then(|| AffinityRoutes {
                cookie_name: a.cookie_name.clone(),
                cookie,
                max_age: a.max_age,
                expire,
            })
        });
        self.s.canary_weight = canary_weight;
        self.s.mirrored = mirrored;
        self.actions.push(Action::SetRoutes(Routes {
            primary_weight: 100 - canary_weight,
            canary_weight,
            mirror_weight,
            matches,
            affinity,
        }));
    }

    /// Reports a hold once per distinct reason (events, history, optional alert) so a canary
    /// waiting for hours does not flood anyone.
    fn hold(&mut self, kind: HistoryKind, reason: String, alert: Option<(Severity, &str)>) {
        self.held = true;
        if self.s.hold.as_deref() == Some(reason.as_str()) {
            return;
        }
        self.s.hold = Some(reason.clone());
        self.event(
            EventType::Warning,
            "Halted",
            format!("Halt advancement: {reason}"),
        );
        if let Some((severity, text)) = alert {
            self.alert(severity, text.into());
        }
        self.record(kind, reason);
    }

    fn event(&mut self, kind: EventType, reason: &str, message: String) {
        for w in self
            .plan
            .webhooks
            .iter()
            .filter(|w| w.kind == WebhookKind::Event)
        {
            self.actions.push(Action::Notify {
                webhook: w.clone(),
                phase: self.s.phase,
                message: message.clone(),
            });
        }
        self.actions.push(Action::Event {
            kind,
            reason: reason.into(),
            message,
        });
    }

    fn alert(&mut self, severity: Severity, message: String) {
        self.actions.push(Action::Alert { severity, message });
    }

    fn notify_post_rollout(&mut self, message: String) {
        for w in self
            .plan
            .webhooks
            .iter()
            .filter(|w| w.kind == WebhookKind::PostRollout)
        {
            self.actions.push(Action::Notify {
                webhook: w.clone(),
                phase: self.s.phase,
                message: message.clone(),
            });
        }
    }

    fn record(&mut self, kind: HistoryKind, message: String) {
        self.record_in(self.s.phase, kind, message);
    }

    fn record_in(&mut self, phase: Phase, kind: HistoryKind, message: String) {
        let run = self.s.run.as_ref();
        let entry = HistoryEntry {
            at: self.now,
            run: run.map_or(0, |r| r.id),
            revision: run
                .map(|r| r.revision.clone())
                .or_else(|| self.s.last_applied_spec.clone()),
            kind,
            phase,
            step: run.map_or(0, |r| r.step),
            canary_weight: self.s.canary_weight,
            iterations: self.s.iterations,
            failed_checks: self.s.failed_checks,
            threshold: self.plan.threshold.max(1),
            checks: std::mem::take(&mut self.checks_seen),
            gates: std::mem::take(&mut self.gates_seen),
            commands: std::mem::take(&mut self.commands_seen),
            message,
            sample: None,
        };
        self.actions.push(Action::Record(entry));
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

//! Manual commands (promote, abort, pause, resume, gates) and deletion: applied before the
//! phase's own logic, each command id once.

use super::*;

impl Tick<'_> {
    pub(super) fn apply_commands(&mut self) {
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

    pub(super) fn apply_command(&mut self, cmd: &Command) {
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

    pub(super) fn terminate(&mut self) {
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
}

//! One analysis tick: the strategy's move (canary weight steps, A/B and Blue/Green iterations)
//! and the confirm-traffic-increase and confirm-promotion gates.

use super::*;

impl Tick<'_> {
    pub(super) fn analyse(&mut self) {
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

    pub(super) fn canary_move(&mut self, step_weights: &[u32], mirror: bool) {
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

    pub(super) fn next_iteration(&mut self, total: u32) {
        self.s.iterations += 1;
        self.advance_step();
        let msg = format!("Advance canary iteration {}/{total}", self.s.iterations);
        self.event(EventType::Normal, "Advanced", msg.clone());
        self.record(HistoryKind::Advanced, msg);
    }

    /// Asks the confirm-promotion gates; `Some(())` when they all passed. On a refusal the phase
    /// becomes WaitingPromotion (alerting once).
    pub(super) fn confirm_gate(&mut self) -> Option<()> {
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

    pub(super) fn confirm_promotion(&mut self, why: &str) {
        if self.confirm_gate().is_some() {
            self.start_promotion(format!("analysis complete: {why}"));
        }
    }
}

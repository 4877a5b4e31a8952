//! Promotion: copying the canary's template to the primary, finalising, skip-analysis promotions,
//! success, and restarting a run on a new revision.

use super::*;

impl Tick<'_> {
    pub(super) fn start_promotion(&mut self, reason: String) {
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

    pub(super) fn promoting(&mut self) {
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

    pub(super) fn finalising(&mut self) {
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

    pub(super) fn skip_promote(&mut self) {
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

    pub(super) fn succeed(&mut self, reason: String, event: &str) {
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

    pub(super) fn restart(
        &mut self,
        revision: String,
        configs: std::collections::BTreeMap<String, String>,
    ) {
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
}

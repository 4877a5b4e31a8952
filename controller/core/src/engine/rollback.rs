//! Rolling back: on the failed-check threshold, the progress deadline or a rollback webhook;
//! counting failed and inconclusive checks; ending a run whose checks stay inconclusive past
//! the judge's budget (`onInconclusive`).

use super::*;

impl Tick<'_> {
    pub(super) fn threshold_rollback(&mut self) {
        let n = self.s.failed_checks;
        let msg = format!(
            "failed checks threshold reached ({n} of {})",
            self.plan.threshold.max(1)
        );
        self.rollback(msg, Severity::Error);
    }

    pub(super) fn deadline_rollback(&mut self, detail: String) {
        let msg = format!(
            "progress deadline exceeded ({}s): {detail}",
            self.plan.progress_deadline.as_secs()
        );
        self.rollback(msg, Severity::Error);
    }

    pub(super) fn rollback(&mut self, reason: String, severity: Severity) {
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

    pub(super) fn fail_check(&mut self, msg: String) {
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

    pub(super) fn inconclusive(&mut self, msg: String) {
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
}

//! Rolling back: on the failed-check threshold, the progress deadline or a rollback webhook;
//! counting failed and inconclusive checks.

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
        if self.plan.on_inconclusive == crate::plan::InconclusivePolicy::Pause {
            self.s.paused = Some(Pause {
                by: "serin".into(),
                at: self.now,
                reason: msg.clone(),
            });
            let text = format!("paused for a human: {msg}");
            self.alert(Severity::Warn, format!("Canary paused: {msg}"));
            self.hold(HistoryKind::Held, text, None);
        } else {
            self.hold(HistoryKind::Held, format!("holding: {msg}"), None);
        }
    }
}

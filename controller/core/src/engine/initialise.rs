//! Initialisation and the idle phases: primary bootstrap, waiting for a new revision, starting a
//! run, and the Waiting phase before analysis.

use super::*;

impl Tick<'_> {
    pub(super) fn initialize(&mut self) {
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

    pub(super) fn idle(&mut self) {
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

    pub(super) fn start_run(
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

    pub(super) fn begin_progressing(&mut self) {
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

    pub(super) fn waiting(&mut self) {
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
}

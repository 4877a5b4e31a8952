//! State helpers: the current run, phase changes with their conditions, routes, and what a tick
//! records (history, events, alerts, notifications).

use super::*;

impl Tick<'_> {
    pub(super) fn has_webhooks(&self, kind: WebhookKind) -> bool {
        self.plan.webhooks.iter().any(|w| w.kind == kind)
    }

    pub(super) fn is_revert(&self, revision: &str) -> bool {
        self.s.last_promoted_spec.as_deref() == Some(revision)
    }

    /// Makes sure a run exists while a run phase is current (a status written by an older
    /// version, or by hand, may lack one): it adopts the revision last applied.
    pub(super) fn ensure_run(&mut self) {
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

    pub(super) fn run(&self) -> &Run {
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

    pub(super) fn run_mut(&mut self) -> &mut Run {
        self.s.run.get_or_insert_with(Run::default)
    }

    pub(super) fn advance_step(&mut self) {
        let now = self.now;
        let run = self.run_mut();
        run.step += 1;
        run.passed_gates.clear();
        run.step_started_at = Some(now);
    }

    pub(super) fn set_phase(&mut self, phase: Phase) {
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
    pub(super) fn set_routes(&mut self, canary_weight: u32, mirrored: bool, active: bool) {
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
                attributes: a.attributes.clone(),
                primary_cookie_name: a.primary_cookie_name.clone(),
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
    pub(super) fn hold(
        &mut self,
        kind: HistoryKind,
        reason: String,
        alert: Option<(Severity, &str)>,
    ) {
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

    pub(super) fn event(&mut self, kind: EventType, reason: &str, message: String) {
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
                event_type: Some(kind),
            });
        }
        self.actions.push(Action::Event {
            kind,
            reason: reason.into(),
            message,
        });
    }

    pub(super) fn alert(&mut self, severity: Severity, message: String) {
        self.actions.push(Action::Alert { severity, message });
    }

    pub(super) fn notify_post_rollout(&mut self, message: String) {
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
                event_type: None,
            });
        }
    }

    pub(super) fn record(&mut self, kind: HistoryKind, message: String) {
        self.record_in(self.s.phase, kind, message);
    }

    pub(super) fn record_in(&mut self, phase: Phase, kind: HistoryKind, message: String) {
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

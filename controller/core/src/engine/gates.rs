//! The evidence a tick decides on: checks and rollout webhooks, gate webhooks of each kind,
//! rollback requests, workload readiness.

use super::*;

impl Tick<'_> {
    /// Rollout webhooks and checks for one analysis tick: any failure fails the tick (counted
    /// once); otherwise any inconclusive or missing result holds it.
    pub(super) fn evaluate(&mut self) -> Analysis {
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
    pub(super) fn gates(&mut self, kind: WebhookKind) -> Gate {
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

    pub(super) fn missing_gate(&mut self, kind: WebhookKind, name: &str) {
        let msg = format!("no result for {} webhook {name}", kind.as_str());
        self.hold(HistoryKind::Held, msg, None);
    }

    pub(super) fn rollback_requested(&mut self) -> Option<String> {
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

    pub(super) fn readiness(&mut self, which: Workload) -> Ready {
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
}

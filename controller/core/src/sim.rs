//! [`Sim`]: a deterministic, in-memory stand-in for the runtime, for scenario tests and the
//! `serin walkthrough` command (serin-demo); behind the `test-support` feature, so no production
//! build of the engine carries it. It plays the runtime's loop ([`needs`] → observe → [`step`] →
//! carry out actions) against a scripted world: workloads become ready when scaled up, gate
//! webhooks answer as scripted, and check results are whatever the script says they are. Nothing
//! here talks to a real workload, proxy or metric provider; observations are simulated.

use std::collections::BTreeMap;

use crate::action::{Action, Routes};
use crate::engine::{Needs, Transition, needs, step};
use crate::observation::{
    Bound, CheckResult, Command, CommandAction, GateResult, Observation, Readiness, TargetState,
    Verdict,
};
use crate::plan::Plan;
use crate::status::{Phase, Status};
use crate::time::Timestamp;

/// The simulated world the engine acts on.
#[derive(Clone, Debug, PartialEq)]
pub struct World {
    /// The user's workload; `None` = it does not exist.
    pub target: Option<TargetState>,
    /// Revision the primary runs; `None` = not created yet.
    pub primary_revision: Option<String>,
    /// Whether the primary reports ready.
    pub primary_ready: bool,
    /// Whether the target (canary) is scaled up.
    pub canary_up: bool,
    /// Whether the canary reports ready once scaled up.
    pub canary_ready: bool,
    /// The routes last set.
    pub routes: Routes,
    /// Gate webhook answers by webhook name; unlisted webhooks pass. A manual gate of the same
    /// name in the status (opened or closed by a command) takes precedence.
    pub gates: BTreeMap<String, bool>,
    /// Check results returned whenever the engine asks for checks.
    pub checks: Vec<CheckResult>,
    /// Commands delivered with the next observation.
    pub pending_commands: Vec<Command>,
    /// Whether the Canary is being deleted.
    pub deleting: bool,
    /// Set by `RevertTarget`.
    pub reverted: bool,
    /// Revisions promoted, in order.
    pub promotions: Vec<String>,
    /// Notifications sent (webhook name, phase, message).
    pub notifications: Vec<(String, Phase, String)>,
}

impl World {
    /// A world with a target at `revision`, nothing else created yet.
    pub fn new(revision: &str) -> Self {
        World {
            target: Some(TargetState {
                revision: revision.into(),
                configs: BTreeMap::new(),
            }),
            primary_revision: None,
            primary_ready: true,
            canary_up: true,
            canary_ready: true,
            routes: Routes::all_primary(),
            gates: BTreeMap::new(),
            checks: Vec::new(),
            pending_commands: Vec::new(),
            deleting: false,
            reverted: false,
            promotions: Vec::new(),
            notifications: Vec::new(),
        }
    }
}

/// One simulated tick: what the engine was asked, what it saw and what it decided.
#[derive(Clone, Debug, PartialEq)]
pub struct TickLog {
    /// The simulated instant.
    pub at: Timestamp,
    /// What the engine asked to observe.
    pub needs: Needs,
    /// What it was shown.
    pub observation: Observation,
    /// What it decided.
    pub transition: Transition,
}

/// A runtime simulation: plan, persisted status, simulated clock and world.
#[derive(Clone, Debug)]
pub struct Sim {
    /// The plan under test.
    pub plan: Plan,
    /// The persisted status.
    pub status: Status,
    /// The simulated clock.
    pub now: Timestamp,
    /// The simulated world.
    pub world: World,
    /// Every tick so far.
    pub log: Vec<TickLog>,
    command_seq: u64,
}

impl Sim {
    /// A fresh canary (empty status) for `plan` whose target runs `revision`, at `start`.
    pub fn new(plan: Plan, revision: &str, start: Timestamp) -> Self {
        Sim {
            plan,
            status: Status::default(),
            now: start,
            world: World::new(revision),
            log: Vec::new(),
            command_seq: 0,
        }
    }

    /// Changes the target's revision (a new deployment).
    pub fn deploy(&mut self, revision: &str) -> &mut Self {
        let configs = self
            .world
            .target
            .as_ref()
            .map(|t| t.configs.clone())
            .unwrap_or_default();
        self.world.target = Some(TargetState {
            revision: revision.into(),
            configs,
        });
        self
    }

    /// Changes a tracked config's checksum.
    pub fn change_config(&mut self, name: &str, checksum: &str) -> &mut Self {
        if let Some(t) = self.world.target.as_mut() {
            t.configs.insert(name.into(), checksum.into());
        }
        self
    }

    /// Queues a manual command for the next tick and returns its id.
    pub fn command(&mut self, action: CommandAction, by: &str) -> String {
        self.command_seq += 1;
        let id = format!("cmd-{}", self.command_seq);
        self.world.pending_commands.push(Command {
            id: id.clone(),
            action,
            by: by.into(),
            at: self.now,
        });
        id
    }

    /// Runs one tick: waits (in simulated time) until a tick is due unless commands or deletion
    /// are pending, observes what the engine needs, steps, and carries out the actions.
    pub fn tick(&mut self) -> &TickLog {
        let mut n = needs(&self.plan, &self.status, self.now);
        let urgent = !self.world.pending_commands.is_empty() || self.world.deleting;
        if !n.due && !urgent {
            self.now = n.wake_at;
            n = needs(&self.plan, &self.status, self.now);
        }
        let observation = self.observe(&n);
        let transition = step(&self.plan, &self.status, &observation, self.now);
        self.apply(&transition.actions);
        self.status = transition.status.clone();
        self.log.push(TickLog {
            at: self.now,
            needs: n,
            observation,
            transition,
        });
        self.log.last().expect("a tick was just logged")
    }

    /// Runs ticks until `done` holds for the status or `max` ticks ran; returns whether it held.
    pub fn tick_until(&mut self, max: usize, done: impl Fn(&Status) -> bool) -> bool {
        for _ in 0..max {
            if done(&self.status) {
                return true;
            }
            self.tick();
        }
        done(&self.status)
    }

    fn observe(&mut self, n: &Needs) -> Observation {
        let gates = n
            .gates
            .iter()
            .map(|call| {
                // A webhook named after a manual gate answers from the gate's state, as the
                // runtime's built-in gate endpoints do; otherwise the script decides.
                let passed = match self.status.gates.get(&call.webhook.name) {
                    Some(gate) => gate.open,
                    None => self
                        .world
                        .gates
                        .get(&call.webhook.name)
                        .copied()
                        .unwrap_or(true),
                };
                GateResult {
                    name: call.webhook.name.clone(),
                    kind: call.webhook.kind,
                    passed,
                    detail: if passed { "200 OK" } else { "403 Forbidden" }.into(),
                }
            })
            .collect();
        let readiness = |ready: bool| {
            if ready {
                Readiness::ready(2)
            } else {
                Readiness::starting(2, 0)
            }
        };
        Observation {
            target: self.world.target.clone(),
            primary: self
                .world
                .primary_revision
                .as_ref()
                .map(|_| readiness(self.world.primary_ready)),
            canary: self
                .world
                .canary_up
                .then(|| readiness(self.world.canary_ready)),
            checks: if n.run_checks {
                self.world.checks.clone()
            } else {
                Vec::new()
            },
            gates,
            commands: std::mem::take(&mut self.world.pending_commands),
            deleting: self.world.deleting,
        }
    }

    fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::InitializePrimary => {
                    if self.world.primary_revision.is_none() {
                        self.world.primary_revision =
                            self.world.target.as_ref().map(|t| t.revision.clone());
                    }
                }
                Action::ScaleCanaryToZero => self.world.canary_up = false,
                Action::ScaleCanaryUp => self.world.canary_up = true,
                Action::SetRoutes(r) => self.world.routes = r.clone(),
                Action::PromoteCanaryToPrimary { revision } => {
                    self.world.primary_revision = Some(revision.clone());
                    self.world.promotions.push(revision.clone());
                }
                Action::RevertTarget => self.world.reverted = true,
                Action::Notify {
                    webhook,
                    phase,
                    message,
                    ..
                } => self
                    .world
                    .notifications
                    .push((webhook.name.clone(), *phase, message.clone())),
                Action::Alert { .. } | Action::Event { .. } | Action::Record(_) => {}
            }
        }
    }
}

/// A scripted `request-success-rate` result: `value` percent over `requests` requests, judged
/// against Flagger's usual bound (at least 99 %).
pub fn success_rate(value: f64, requests: u64) -> CheckResult {
    scripted("request-success-rate", value, requests, Some(99.0), None)
}

/// A scripted `request-duration` result: `value` ms over `requests` requests, judged against
/// Flagger's usual bound (at most 500 ms).
pub fn request_duration(value: f64, requests: u64) -> CheckResult {
    scripted("request-duration", value, requests, None, Some(500.0))
}

fn scripted(
    name: &str,
    value: f64,
    requests: u64,
    min: Option<f64>,
    max: Option<f64>,
) -> CheckResult {
    let bound = Bound { min, max };
    let within = min.is_none_or(|m| value >= m) && max.is_none_or(|m| value <= m);
    CheckResult {
        name: name.into(),
        verdict: if within { Verdict::Pass } else { Verdict::Fail },
        value: Some(value),
        bound,
        samples: Some(requests),
        detail: String::new(),
    }
}

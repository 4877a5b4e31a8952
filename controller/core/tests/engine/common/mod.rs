//! Fixtures that read as sentences: `Plan::test().step_weight(10).max_weight(50)`,
//! `Sim::initialized(plan)`, `success_rate(98.0)`.
#![allow(dead_code)]

use std::time::Duration;

use serin_core::sim::Sim;
use serin_core::{
    Action, Bound, CheckResult, InconclusivePolicy, Mirror, Phase, Plan, RouteMatch,
    SessionAffinity, Strategy, StringMatch, Timestamp, Verdict, Webhook, WebhookKind,
};

pub const T0: Timestamp = Timestamp::from_secs(1_800_000_000);
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Builder methods on [`Plan`] for tests.
pub trait PlanTest: Sized {
    /// Canary strategy 10% steps up to 50%, interval 60s, threshold 5, one success-rate check,
    /// progress deadline 600s, no webhooks.
    fn test() -> Self;
    fn step_weight(self, step: u32) -> Self;
    fn max_weight(self, max: u32) -> Self;
    fn step_weights(self, weights: &[u32]) -> Self;
    fn step_weight_promotion(self, step: u32) -> Self;
    fn ab_testing(self, iterations: u32) -> Self;
    fn blue_green(self, iterations: u32) -> Self;
    fn mirror(self, weight: u32) -> Self;
    fn threshold(self, n: u32) -> Self;
    fn webhook(self, name: &str, kind: WebhookKind) -> Self;
    fn skip_analysis(self) -> Self;
    fn suspended(self) -> Self;
    fn progress_deadline_secs(self, secs: u64) -> Self;
    fn pause_on_inconclusive(self) -> Self;
    fn session_affinity(self, cookie: &str, max_age: u32) -> Self;
    fn revert_on_deletion(self) -> Self;
}

impl PlanTest for Plan {
    fn test() -> Self {
        Plan {
            strategy: Strategy::Canary {
                step_weights: Strategy::linear(10, 50),
                step_weight_promotion: None,
                mirror: None,
            },
            interval: INTERVAL,
            threshold: 5,
            progress_deadline: Duration::from_secs(600),
            skip_analysis: false,
            suspend: false,
            webhooks: Vec::new(),
            checks: vec!["request-success-rate".into()],
            on_inconclusive: InconclusivePolicy::Wait,
            inconclusive_budget: Default::default(),
            primary_ready_threshold: 100,
            canary_ready_threshold: 100,
            session_affinity: None,
            revert_on_deletion: false,
        }
    }

    fn step_weight(mut self, step: u32) -> Self {
        if let Strategy::Canary { step_weights, .. } = &mut self.strategy {
            let max = step_weights.last().copied().unwrap_or(100);
            *step_weights = Strategy::linear(step, max);
        }
        self
    }

    fn max_weight(mut self, max: u32) -> Self {
        if let Strategy::Canary { step_weights, .. } = &mut self.strategy {
            let step = step_weights.first().copied().unwrap_or(10);
            *step_weights = Strategy::linear(step, max);
        }
        self
    }

    fn step_weights(mut self, weights: &[u32]) -> Self {
        if let Strategy::Canary { step_weights, .. } = &mut self.strategy {
            *step_weights = weights.to_vec();
        }
        self
    }

    fn step_weight_promotion(mut self, step: u32) -> Self {
        if let Strategy::Canary {
            step_weight_promotion,
            ..
        } = &mut self.strategy
        {
            *step_weight_promotion = Some(step);
        }
        self
    }

    fn ab_testing(mut self, iterations: u32) -> Self {
        self.strategy = Strategy::AbTesting {
            iterations,
            matches: vec![RouteMatch {
                headers: vec![("x-canary".into(), StringMatch::Exact("insider".into()))],
                query_params: Vec::new(),
            }],
        };
        self
    }

    fn blue_green(mut self, iterations: u32) -> Self {
        self.strategy = Strategy::BlueGreen {
            iterations,
            mirror: None,
        };
        self
    }

    fn mirror(mut self, weight: u32) -> Self {
        match &mut self.strategy {
            Strategy::Canary { mirror, .. } | Strategy::BlueGreen { mirror, .. } => {
                *mirror = Some(Mirror { weight });
            }
            Strategy::AbTesting { .. } => {}
        }
        self
    }

    fn threshold(mut self, n: u32) -> Self {
        self.threshold = n;
        self
    }

    fn webhook(mut self, name: &str, kind: WebhookKind) -> Self {
        self.webhooks.push(Webhook {
            name: name.into(),
            kind,
        });
        self
    }

    fn skip_analysis(mut self) -> Self {
        self.skip_analysis = true;
        self
    }

    fn suspended(mut self) -> Self {
        self.suspend = true;
        self
    }

    fn progress_deadline_secs(mut self, secs: u64) -> Self {
        self.progress_deadline = Duration::from_secs(secs);
        self
    }

    fn pause_on_inconclusive(mut self) -> Self {
        self.on_inconclusive = InconclusivePolicy::Pause;
        self
    }

    fn session_affinity(mut self, cookie: &str, max_age: u32) -> Self {
        self.session_affinity = Some(SessionAffinity {
            cookie_name: cookie.into(),
            max_age,
            primary_cookie_name: None,
            attributes: Default::default(),
        });
        self
    }

    fn revert_on_deletion(mut self) -> Self {
        self.revert_on_deletion = true;
        self
    }
}

/// Scenario helpers on [`Sim`].
pub trait SimTest: Sized {
    /// A canary for `plan` whose target runs `rev-a`, already initialized, with passing checks.
    fn initialized(plan: Plan) -> Self;
    /// Runs `n` ticks and returns (phase, canary weight) after each.
    fn run(&mut self, n: usize) -> Vec<(Phase, u32)>;
    /// Sets the check results every later tick sees.
    fn checks(&mut self, checks: Vec<CheckResult>) -> &mut Self;
    /// Scripts a gate webhook's answer.
    fn gate(&mut self, name: &str, passes: bool) -> &mut Self;
    /// Every action of every tick since tick `from`.
    fn actions_since(&self, from: usize) -> Vec<Action>;
}

impl SimTest for Sim {
    fn initialized(plan: Plan) -> Self {
        let mut sim = Sim::new(plan, "rev-a", T0);
        sim.world.checks = vec![success_rate(99.9)];
        assert!(
            sim.tick_until(5, |s| s.phase == Phase::Initialized),
            "canary did not initialize: {:?}",
            sim.status
        );
        sim
    }

    fn run(&mut self, n: usize) -> Vec<(Phase, u32)> {
        (0..n)
            .map(|_| {
                let t = self.tick();
                (t.transition.status.phase, t.transition.status.canary_weight)
            })
            .collect()
    }

    fn checks(&mut self, checks: Vec<CheckResult>) -> &mut Self {
        self.world.checks = checks;
        self
    }

    fn gate(&mut self, name: &str, passes: bool) -> &mut Self {
        self.world.gates.insert(name.into(), passes);
        self
    }

    fn actions_since(&self, from: usize) -> Vec<Action> {
        self.log[from..]
            .iter()
            .flat_map(|t| t.transition.actions.clone())
            .collect()
    }
}

/// A request-success-rate result (accepted >= 99%).
pub fn success_rate(value: f64) -> CheckResult {
    serin_core::sim::success_rate(value, 1200)
}

/// A request-success-rate result without enough data to judge.
pub fn too_few_requests() -> CheckResult {
    CheckResult {
        name: "request-success-rate".into(),
        verdict: Verdict::Inconclusive,
        value: None,
        bound: Bound {
            min: Some(99.0),
            max: None,
        },
        samples: Some(3),
        detail: "3 requests, fewer than minRequests 100".into(),
    }
}

use Phase::*;

/// `n` times the same (phase, weight).
pub fn times(n: usize, phase: Phase, weight: u32) -> Vec<(Phase, u32)> {
    vec![(phase, weight); n]
}

/// The ticks of a passing 10..=50 canary run after `deploy`, through Succeeded.
pub fn passing_canary_10_to_50() -> Vec<(Phase, u32)> {
    vec![
        (Progressing, 0),
        (Progressing, 10),
        (Progressing, 20),
        (Progressing, 30),
        (Progressing, 40),
        (Progressing, 50),
        (Promoting, 50),
        (Finalising, 0),
        (Succeeded, 0),
    ]
}

/// Whether the actions contain a promotion.
pub fn promoted(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::PromoteCanaryToPrimary { .. }))
}

//! Invariants over random plans and random worlds: whatever the checks, gates, commands,
//! readiness and deployments do, the engine keeps its promises.

use crate::common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use serin_core::sim::Sim;
use serin_core::{
    Action, CommandAction, Observation, Phase, Plan, Status, Strategy as Rollout, Verdict,
    WebhookKind,
};

/// What can happen to the world before one tick.
#[derive(Clone, Debug)]
enum Event {
    Nothing,
    Checks(Verdict),
    Gate(&'static str, bool),
    CanaryReady(bool),
    PrimaryReady(bool),
    Deploy(u8),
    Command(CommandAction),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::Nothing),
        6 => prop_oneof![
            Just(Verdict::Pass),
            Just(Verdict::Fail),
            Just(Verdict::Inconclusive)
        ]
        .prop_map(Event::Checks),
        3 => (
            prop_oneof![
                Just("approve-rollout"),
                Just("smoke"),
                Just("load"),
                Just("more-traffic"),
                Just("approve"),
                Just("abort-button")
            ],
            any::<bool>()
        )
            .prop_map(|(g, b)| Event::Gate(g, b)),
        1 => any::<bool>().prop_map(Event::CanaryReady),
        1 => any::<bool>().prop_map(Event::PrimaryReady),
        2 => (0u8..4).prop_map(Event::Deploy),
        1 => prop_oneof![
            Just(CommandAction::Promote),
            Just(CommandAction::Abort),
            Just(CommandAction::Pause),
            Just(CommandAction::Resume),
        ]
        .prop_map(Event::Command),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    let strategy = prop_oneof![
        (
            1u32..60,
            1u32..=100,
            proptest::option::of(1u32..60),
            any::<bool>()
        )
            .prop_map(|(step, max, promo, mirror)| {
                let mut p = Plan::test().step_weight(step).max_weight(max);
                if let Some(s) = promo {
                    p = p.step_weight_promotion(s);
                }
                if mirror { p.mirror(100) } else { p }
            }),
        proptest::collection::btree_set(1u32..=100, 1..6).prop_map(|set| {
            let weights: Vec<u32> = set.into_iter().collect();
            Plan::test().step_weights(&weights)
        }),
        (1u32..6).prop_map(|n| Plan::test().ab_testing(n)),
        (1u32..6, any::<bool>()).prop_map(|(n, mirror)| {
            let p = Plan::test().blue_green(n);
            if mirror { p.mirror(50) } else { p }
        }),
    ];
    (
        strategy,
        1u32..5,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(any::<bool>(), 6),
    )
        .prop_map(|(mut p, threshold, skip, pause, hooks)| {
            p.threshold = threshold;
            p.skip_analysis = skip;
            p.progress_deadline = Duration::from_secs(300);
            if pause {
                p = p.pause_on_inconclusive();
            }
            let all = [
                ("approve-rollout", WebhookKind::ConfirmRollout),
                ("smoke", WebhookKind::PreRollout),
                ("load", WebhookKind::Rollout),
                ("more-traffic", WebhookKind::ConfirmTrafficIncrease),
                ("approve", WebhookKind::ConfirmPromotion),
                ("abort-button", WebhookKind::Rollback),
            ];
            for ((name, kind), on) in all.into_iter().zip(hooks) {
                if on {
                    p = p.webhook(name, kind);
                }
            }
            p
        })
}

fn apply(sim: &mut Sim, e: &Event) {
    match e {
        Event::Nothing => {}
        Event::Checks(v) => {
            sim.world.checks = vec![match v {
                Verdict::Pass => success_rate(99.9),
                Verdict::Fail => success_rate(42.0),
                Verdict::Inconclusive => too_few_requests(),
            }];
        }
        Event::Gate(name, passes) => {
            sim.world.gates.insert((*name).into(), *passes);
        }
        Event::CanaryReady(r) => sim.world.canary_ready = *r,
        Event::PrimaryReady(r) => sim.world.primary_ready = *r,
        Event::Deploy(n) => {
            sim.deploy(&format!("rev-{n}"));
        }
        Event::Command(c) => {
            sim.command(c.clone(), "proptest");
        }
    }
}

/// Whether the engine was allowed to promote, judged from the status before the step.
fn promotion_allowed(plan: &Plan, before: &Status, obs: &Observation) -> bool {
    if plan.skip_analysis {
        return true;
    }
    if obs
        .commands
        .iter()
        .any(|c| c.action == CommandAction::Promote)
    {
        return true;
    }
    match &plan.strategy {
        Rollout::Canary { step_weights, .. } => {
            before.canary_weight >= step_weights.last().copied().unwrap_or(100)
        }
        Rollout::AbTesting { iterations, .. } => before.iterations >= *iterations,
        Rollout::BlueGreen { iterations, .. } => before.iterations > *iterations,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_keeps_its_invariants(plan in plan(), events in proptest::collection::vec(event(), 1..80)) {
        let mut sim = Sim::new(plan.clone(), "rev-0", T0);
        sim.world.checks = vec![success_rate(99.9)];
        let mut previous: Option<(u64, u32)> = None;
        for e in &events {
            apply(&mut sim, e);
            let before = sim.status.clone();
            let tick = sim.tick().clone();
            let after = &tick.transition.status;

            // Weights always in 0..=100 and summing to 100.
            prop_assert!(after.canary_weight <= 100);
            prop_assert_eq!(after.primary_weight() + after.canary_weight, 100);
            for a in &tick.transition.actions {
                if let Action::SetRoutes(r) = a {
                    prop_assert!(r.canary_weight <= 100 && r.primary_weight <= 100);
                    prop_assert_eq!(r.primary_weight + r.canary_weight, 100);
                    if let Some(m) = r.mirror_weight {
                        prop_assert!(m <= 100);
                    }
                }
                // No promotion without maxWeight/iterations reached, skipAnalysis or a manual
                // promote.
                if let Action::PromoteCanaryToPrimary { .. } = a {
                    prop_assert!(
                        promotion_allowed(&plan, &before, &tick.observation),
                        "promotion from {:?} with {:?}", before, tick.observation
                    );
                }
            }

            // failedChecks never decreases within a run.
            if let Some(run) = &after.run {
                if let Some((id, failed)) = previous.filter(|(id, _)| *id == run.id) {
                    prop_assert!(after.failed_checks >= failed,
                        "failed checks went {} -> {} in run {}", failed, after.failed_checks, id);
                }
                previous = Some((run.id, after.failed_checks));
            }

            // A terminal phase has the canary scaled down and all traffic on the primary.
            if matches!(after.phase, Phase::Succeeded | Phase::Failed) && after.run.is_some() {
                prop_assert_eq!(after.canary_weight, 0);
                prop_assert!(!after.mirrored);
            }
            // Status always survives the runtime's persistence.
            let json = serde_json::to_string(after).expect("status serializes");
            let back: Status = serde_json::from_str(&json).expect("status parses");
            prop_assert_eq!(&back, after);
        }
    }

    #[test]
    fn stepping_twice_at_the_same_instant_changes_nothing_more(plan in plan(), events in proptest::collection::vec(event(), 1..40)) {
        // Restart safety: after a transition is persisted, replaying the same observation at the
        // same instant (a crash right after persisting) repeats no action.
        let mut sim = Sim::new(plan.clone(), "rev-0", T0);
        sim.world.checks = vec![success_rate(99.9)];
        for e in &events {
            apply(&mut sim, e);
            let tick = sim.tick().clone();
            let again = serin_core::step(&plan, &sim.status, &tick.observation, tick.at);
            let repeated: Vec<_> = again
                .actions
                .iter()
                .filter(|a| !matches!(a, Action::Record(_) | Action::Event { .. } | Action::Notify { .. } | Action::Alert { .. }))
                .collect();
            prop_assert!(
                repeated.is_empty() || tick.needs.due && sim.status.last_tick_at.is_none(),
                "replaying repeated {:?}", repeated
            );
            let promotes = again
                .actions
                .iter()
                .any(|a| matches!(a, Action::PromoteCanaryToPrimary { .. }));
            prop_assert!(!promotes, "replaying promoted again");
        }
    }
}

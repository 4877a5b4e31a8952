//! Gate webhooks (confirm-rollout, pre-rollout, rollout, confirm-traffic-increase,
//! confirm-promotion) and what the engine asks the runtime to call on each tick.

use crate::common;

use common::*;
use serin_core::sim::Sim;
use serin_core::{
    GateResult, Observation, Phase::*, Plan, Readiness, TargetState, WebhookKind, needs, step,
};

fn kinds(sim: &Sim, tick: usize) -> Vec<(String, WebhookKind)> {
    sim.log[tick]
        .needs
        .gates
        .iter()
        .map(|g| (g.webhook.name.clone(), g.webhook.kind))
        .collect()
}

#[test]
fn confirm_rollout_keeps_the_canary_waiting_and_never_counts_as_a_failure() {
    let plan = Plan::test()
        .threshold(1)
        .webhook("approve-rollout", WebhookKind::ConfirmRollout);
    let mut sim = Sim::initialized(plan);
    sim.gate("approve-rollout", false);
    sim.deploy("rev-b");
    // Detection moves to Waiting and asks the gate right away (same instant); it says no.
    assert_eq!(sim.run(4), times(4, Waiting, 0));
    let n = sim.log.len();
    assert_eq!(
        sim.log[n - 4].at,
        sim.log[n - 3].at,
        "the gate is asked at once"
    );
    assert_eq!(sim.status.failed_checks, 0);
    assert!(
        !sim.world.canary_up,
        "canary stays scaled to zero while waiting"
    );
    sim.gate("approve-rollout", true);
    let mut expected = vec![(Progressing, 0)];
    expected.extend(passing_canary_10_to_50().into_iter().skip(1));
    assert_eq!(sim.run(9), expected);
}

#[test]
fn confirm_rollout_is_only_asked_while_waiting() {
    let plan = Plan::test().webhook("approve-rollout", WebhookKind::ConfirmRollout);
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    sim.tick_until(20, |s| s.phase == Succeeded);
    let asked = sim
        .log
        .iter()
        .filter(|t| {
            t.needs
                .gates
                .iter()
                .any(|g| g.webhook.kind == WebhookKind::ConfirmRollout)
        })
        .count();
    assert_eq!(asked, 1);
}

#[test]
fn pre_rollout_runs_on_the_first_tick_and_its_failure_counts() {
    let plan = Plan::test()
        .threshold(2)
        .webhook("smoke", WebhookKind::PreRollout)
        .webhook("load", WebhookKind::Rollout);
    let mut sim = Sim::initialized(plan);
    sim.gate("smoke", false);
    sim.deploy("rev-b");
    let from = sim.log.len();
    assert_eq!(
        sim.run(3),
        vec![(Progressing, 0), (Progressing, 0), (Failed, 0)]
    );
    assert_eq!(
        kinds(&sim, from + 1),
        vec![("smoke".to_string(), WebhookKind::PreRollout)]
    );
    assert!(
        !sim.log[from + 1].needs.run_checks,
        "no metric checks on the pre-rollout tick"
    );
}

#[test]
fn pre_rollout_passes_once_then_rollout_hooks_and_checks_run_every_tick() {
    let plan = Plan::test()
        .webhook("smoke", WebhookKind::PreRollout)
        .webhook("load", WebhookKind::Rollout);
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    let from = sim.log.len();
    sim.run(4);
    assert_eq!(
        kinds(&sim, from + 1),
        vec![("smoke".to_string(), WebhookKind::PreRollout)]
    );
    for tick in from + 2..from + 4 {
        assert_eq!(
            kinds(&sim, tick),
            vec![("load".to_string(), WebhookKind::Rollout)]
        );
        assert!(sim.log[tick].needs.run_checks);
    }
}

#[test]
fn a_failing_rollout_webhook_counts_as_a_failed_check() {
    let plan = Plan::test()
        .threshold(2)
        .webhook("load", WebhookKind::Rollout);
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    sim.run(2);
    sim.gate("load", false);
    assert_eq!(sim.run(2), vec![(Progressing, 10), (Failed, 0)]);
    assert_eq!(sim.status.failed_checks, 2);
}

#[test]
fn confirm_traffic_increase_holds_the_weight_without_failures() {
    let plan = Plan::test()
        .threshold(1)
        .webhook("more-traffic", WebhookKind::ConfirmTrafficIncrease);
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    assert_eq!(
        sim.run(3),
        vec![(Progressing, 0), (Progressing, 10), (Progressing, 20)]
    );
    sim.gate("more-traffic", false);
    assert_eq!(sim.run(3), times(3, Progressing, 20));
    assert_eq!(sim.status.failed_checks, 0);
    sim.gate("more-traffic", true);
    assert_eq!(sim.run(1), vec![(Progressing, 30)]);
}

#[test]
fn confirm_traffic_increase_is_not_asked_at_max_weight() {
    let plan = Plan::test().webhook("more-traffic", WebhookKind::ConfirmTrafficIncrease);
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    sim.run(6); // weight 50
    let n = sim.log.len();
    sim.run(1);
    assert!(kinds(&sim, n).is_empty(), "{:?}", kinds(&sim, n));
    assert_eq!(sim.status.phase, Promoting);
}

#[test]
fn confirm_promotion_waits_in_waiting_promotion_until_approved() {
    let plan = Plan::test().webhook("approve", WebhookKind::ConfirmPromotion);
    let mut sim = Sim::initialized(plan);
    sim.gate("approve", false);
    sim.deploy("rev-b");
    assert_eq!(
        sim.run(9),
        vec![
            (Progressing, 0),
            (Progressing, 10),
            (Progressing, 20),
            (Progressing, 30),
            (Progressing, 40),
            (Progressing, 50),
            (WaitingPromotion, 50),
            (WaitingPromotion, 50),
            (WaitingPromotion, 50),
        ]
    );
    assert!(sim.world.promotions.is_empty());
    sim.gate("approve", true);
    assert_eq!(
        sim.run(3),
        vec![(Promoting, 50), (Finalising, 0), (Succeeded, 0)]
    );
}

#[test]
fn ab_testing_asks_for_promotion_approval_after_the_iterations() {
    let plan = Plan::test()
        .ab_testing(2)
        .webhook("approve", WebhookKind::ConfirmPromotion);
    let mut sim = Sim::initialized(plan);
    sim.gate("approve", false);
    sim.deploy("rev-b");
    let trace = sim.run(5);
    assert_eq!(trace[3..], [(WaitingPromotion, 0), (WaitingPromotion, 0)]);
    sim.gate("approve", true);
    assert_eq!(sim.run(1), vec![(Promoting, 0)]);
}

#[test]
fn a_gate_passed_in_this_step_is_not_asked_again() {
    // Two promotion gates: the first passes, the second refuses. Later ticks ask only the
    // second; the first's pass is remembered in the status, which survives a restart.
    let plan = Plan::test()
        .webhook("qa", WebhookKind::ConfirmPromotion)
        .webhook("release-manager", WebhookKind::ConfirmPromotion);
    let mut sim = Sim::initialized(plan);
    sim.gate("release-manager", false);
    sim.deploy("rev-b");
    sim.run(7);
    assert_eq!(sim.status.phase, WaitingPromotion);
    let key = "confirm-promotion/qa".to_string();
    assert!(
        sim.status
            .run
            .as_ref()
            .is_some_and(|r| r.passed_gates.contains(&key))
    );
    let n = sim.log.len();
    sim.run(1);
    assert_eq!(
        kinds(&sim, n),
        vec![("release-manager".to_string(), WebhookKind::ConfirmPromotion)]
    );
}

#[test]
fn gate_memory_is_per_step() {
    let plan = Plan::test().webhook("more-traffic", WebhookKind::ConfirmTrafficIncrease);
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    sim.run(3);
    // Every weight step asks the traffic gate afresh.
    let asked = sim.log[sim.log.len() - 2..].iter().all(|t| {
        t.needs
            .gates
            .iter()
            .any(|g| g.webhook.name == "more-traffic")
    });
    assert!(asked);
}

#[test]
fn a_gate_result_the_runtime_did_not_deliver_holds_instead_of_failing() {
    let plan = Plan::test()
        .threshold(1)
        .webhook("smoke", WebhookKind::PreRollout);
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    sim.run(1);
    // Step by hand with an observation lacking the pre-rollout result.
    let now = sim.now + INTERVAL;
    let n = needs(&sim.plan, &sim.status, now);
    assert_eq!(n.gates.len(), 1);
    let obs = Observation {
        target: Some(TargetState {
            revision: "rev-b".into(),
            ..TargetState::default()
        }),
        primary: Some(Readiness::ready(1)),
        canary: Some(Readiness::ready(1)),
        ..Observation::default()
    };
    let t = step(&sim.plan, &sim.status, &obs, now);
    assert_eq!((t.status.phase, t.status.failed_checks), (Progressing, 0));
    assert!(
        t.status
            .hold
            .as_deref()
            .is_some_and(|h| h.contains("no result for pre-rollout webhook smoke"))
    );
    // Delivered, it proceeds.
    let obs = Observation {
        gates: vec![GateResult {
            name: "smoke".into(),
            kind: WebhookKind::PreRollout,
            passed: true,
            detail: String::new(),
        }],
        ..obs
    };
    let t = step(&sim.plan, &sim.status, &obs, now);
    assert_eq!((t.status.phase, t.status.canary_weight), (Progressing, 10));
}

#[test]
fn rollback_webhooks_are_polled_while_waiting_and_progressing() {
    let plan = Plan::test()
        .webhook("approve-rollout", WebhookKind::ConfirmRollout)
        .webhook("abort-button", WebhookKind::Rollback);
    let mut sim = Sim::initialized(plan);
    sim.gate("approve-rollout", false);
    sim.gate("abort-button", false);
    sim.deploy("rev-b");
    sim.run(2);
    let n = sim.log.len();
    assert_eq!(sim.status.phase, Waiting);
    assert!(
        kinds(&sim, n - 1)
            .iter()
            .any(|(_, k)| *k == WebhookKind::Rollback)
    );
    sim.gate("abort-button", true);
    assert_eq!(sim.run(1), vec![(Failed, 0)]);
}

#[test]
fn a_newer_revision_while_waiting_replaces_the_one_waiting() {
    let plan = Plan::test().webhook("approve-rollout", WebhookKind::ConfirmRollout);
    let mut sim = Sim::initialized(plan);
    sim.gate("approve-rollout", false);
    sim.deploy("rev-b");
    sim.run(2);
    sim.deploy("rev-c");
    assert_eq!(sim.run(1), vec![(Waiting, 0)]);
    assert_eq!(
        sim.status.run.as_ref().map(|r| r.revision.as_str()),
        Some("rev-c")
    );
    assert_eq!(sim.status.last_applied_spec.as_deref(), Some("rev-c"));
    sim.gate("approve-rollout", true);
    sim.tick_until(20, |s| s.phase == Succeeded);
    assert_eq!(sim.world.promotions, vec!["rev-c".to_string()]);
}

#[test]
fn waiting_can_be_aborted_or_promoted_by_hand() {
    let plan = Plan::test().webhook("approve-rollout", WebhookKind::ConfirmRollout);
    let mut sim = Sim::initialized(plan.clone());
    sim.gate("approve-rollout", false);
    sim.deploy("rev-b");
    sim.run(2);
    sim.command(serin_core::CommandAction::Abort, "kim");
    assert_eq!(sim.run(1), vec![(Failed, 0)]);

    let mut sim = Sim::initialized(plan);
    sim.gate("approve-rollout", false);
    sim.deploy("rev-b");
    sim.run(2);
    sim.command(serin_core::CommandAction::Promote, "kim");
    assert_eq!(
        sim.run(4),
        vec![
            (Promoting, 0),
            (Finalising, 0),
            (Succeeded, 0),
            (Succeeded, 0)
        ]
    );
    assert_eq!(sim.world.promotions, vec!["rev-b".to_string()]);
}

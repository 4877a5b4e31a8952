//! A runtime that watches the target may step before the interval; the engine then acts on a
//! revision it does not know yet (idle: a run starts; analysing: the run restarts), and on a
//! workload it waits for becoming ready (the primary while initializing, promoting or finalising;
//! the canary before its analysis began), and on nothing else.

use crate::common;

use std::time::Duration;

use common::*;
use serin_core::sim::Sim;
use serin_core::{
    HistoryKind, Observation, Phase, Plan, Readiness, TargetState, Transition, awaits_workload,
    needs, step,
};

fn early_observation(sim: &Sim) -> Observation {
    Observation {
        target: sim.world.target.clone(),
        primary: Some(Readiness::ready(2)),
        canary: sim.world.canary_up.then(|| Readiness::ready(2)),
        ..Observation::default()
    }
}

fn recorded(t: &Transition) -> Vec<HistoryKind> {
    t.actions
        .iter()
        .filter_map(|a| match a {
            serin_core::Action::Record(e) => Some(e.kind),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_revision_seen_between_ticks_starts_the_run_at_once() {
    let mut sim = Sim::initialized(Plan::test());
    let last = sim.status.last_tick_at.expect("ticked");
    sim.deploy("rev-b");
    let now = last + Duration::from_secs(5);
    assert!(!needs(&sim.plan, &sim.status, now).due, "not due by time");
    let t = step(&sim.plan, &sim.status, &early_observation(&sim), now);
    assert_eq!(t.status.phase, Phase::Progressing);
    assert_eq!(t.status.run.as_ref().unwrap().revision, "rev-b");
    assert_eq!(
        t.status.last_tick_at,
        Some(now),
        "the cadence restarts here"
    );
    assert!(recorded(&t).contains(&HistoryKind::RunStarted));
    // Looking again at the same instant changes nothing more.
    let again = step(&sim.plan, &t.status, &early_observation(&sim), now);
    assert_eq!(again.status, t.status);
}

#[test]
fn an_unchanged_target_between_ticks_changes_nothing() {
    let sim = Sim::initialized(Plan::test());
    let now = sim.status.last_tick_at.unwrap() + Duration::from_secs(5);
    let t = step(&sim.plan, &sim.status, &early_observation(&sim), now);
    assert_eq!(t.status, sim.status);
    assert!(t.actions.is_empty(), "{:?}", t.actions);
}

#[test]
fn a_newer_revision_mid_analysis_restarts_the_run_without_judging() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    assert!(sim.tick_until(10, |s| s.phase == Phase::Progressing
        && s.canary_weight == 20));
    let run = sim.status.run.clone().unwrap();
    sim.deploy("rev-c");
    let now = sim.status.last_tick_at.unwrap() + Duration::from_secs(5);
    let t = step(&sim.plan, &sim.status, &early_observation(&sim), now);
    assert_eq!(t.status.run.as_ref().unwrap().revision, "rev-c");
    assert_eq!(t.status.failed_checks, 0, "no check was judged early");
    assert!(recorded(&t).contains(&HistoryKind::RunRestarted));
    assert_ne!(t.status.run.as_ref().unwrap().started_at, run.started_at);
}

#[test]
fn only_the_revision_acts_early_not_a_config_change_or_a_gate_wait() {
    // Config checksums change through the referenced objects, which are not watched: they keep
    // the interval.
    let mut sim = Sim::initialized(Plan::test());
    sim.change_config("configmap/settings", "abc");
    let now = sim.status.last_tick_at.unwrap() + Duration::from_secs(5);
    let t = step(&sim.plan, &sim.status, &early_observation(&sim), now);
    assert_eq!(t.status, sim.status);
    // A run waiting at a confirm-rollout gate takes a new revision at its next (gated) tick.
    let mut sim =
        Sim::initialized(Plan::test().webhook("approve", serin_core::WebhookKind::ConfirmRollout));
    sim.gate("approve", false);
    sim.deploy("rev-b");
    assert!(sim.tick_until(5, |s| s.phase == Phase::Waiting));
    sim.tick(); // the gate says no: held at Waiting
    assert_eq!(sim.status.phase, Phase::Waiting);
    sim.world.target = Some(TargetState {
        revision: "rev-c".into(),
        configs: Default::default(),
    });
    let now = sim.status.last_tick_at.unwrap() + Duration::from_secs(5);
    let t = step(&sim.plan, &sim.status, &early_observation(&sim), now);
    assert_eq!(t.status, sim.status);
}

/// What a watch shows between ticks: the sim's world, the primary and canary as `ready` says.
fn watched(sim: &Sim, primary_ready: bool, canary_ready: bool) -> Observation {
    let r = |ready: bool| {
        if ready {
            Readiness::ready(2)
        } else {
            Readiness::starting(2, 0)
        }
    };
    Observation {
        target: sim.world.target.clone(),
        primary: Some(r(primary_ready)),
        canary: sim.world.canary_up.then(|| r(canary_ready)),
        ..Observation::default()
    }
}

#[test]
fn a_primary_that_becomes_ready_between_ticks_finishes_the_bootstrap_at_once() {
    let mut sim = Sim::new(
        Plan::test(),
        "rev-a",
        serin_core::Timestamp::from_millis(1_700_000_000_000),
    );
    sim.world.primary_ready = false;
    sim.tick();
    assert_eq!(sim.status.phase, Phase::Initializing);
    assert!(awaits_workload(&sim.plan, &sim.status));
    let now = sim.status.last_tick_at.unwrap() + Duration::from_secs(5);
    // Still rolling out: nothing moves early.
    let t = step(&sim.plan, &sim.status, &watched(&sim, false, false), now);
    assert_eq!(t.status, sim.status);
    assert!(t.actions.is_empty(), "{:?}", t.actions);
    // Ready: initialized now, not an interval later.
    let t = step(&sim.plan, &sim.status, &watched(&sim, true, false), now);
    assert_eq!(t.status.phase, Phase::Initialized);
    assert_eq!(
        t.status.last_tick_at,
        Some(now),
        "the cadence restarts here"
    );
    // Looking again at the same instant changes nothing more.
    let again = step(&sim.plan, &t.status, &watched(&sim, true, false), now);
    assert_eq!(again.status, t.status);
}

#[test]
fn a_one_step_rollout_moves_on_each_readiness_and_judges_only_at_intervals() {
    let mut plan = Plan::test();
    if let serin_core::Strategy::Canary { step_weights, .. } = &mut plan.strategy {
        *step_weights = vec![50];
    }
    let mut sim = Sim::initialized(plan);
    let interval = sim.plan.interval;
    let start = sim.status.last_tick_at.unwrap() + Duration::from_secs(3);
    // The watch sees the new revision: the run starts at once and scales the canary up.
    sim.deploy("rev-b");
    let t = step(&sim.plan, &sim.status, &watched(&sim, true, false), start);
    assert_eq!(t.status.phase, Phase::Progressing);
    sim.status = t.status;
    sim.world.canary_up = true;
    assert!(awaits_workload(&sim.plan, &sim.status));
    // The canary's pods become ready 4 s later: its first step, no check judged.
    let ready_at = start + Duration::from_secs(4);
    let t = step(&sim.plan, &sim.status, &watched(&sim, true, true), ready_at);
    assert_eq!(t.status.canary_weight, 50);
    assert_eq!(t.status.failed_checks, 0);
    assert!(t.status.run.as_ref().unwrap().pre_rollout_done);
    sim.status = t.status;
    // From here the analysis keeps the interval: an early look moves nothing.
    assert!(!awaits_workload(&sim.plan, &sim.status));
    let early = step(
        &sim.plan,
        &sim.status,
        &watched(&sim, true, true),
        ready_at + Duration::from_secs(10),
    );
    assert_eq!(early.status, sim.status);
    // One interval later the checks pass at the last step: promotion.
    sim.now = ready_at + interval;
    sim.world.checks = vec![success_rate(99.9)];
    sim.tick();
    assert_eq!(sim.status.phase, Phase::Promoting);
    // The primary rolls the promoted template out; once ready it finalises and succeeds, each
    // as soon as the watch shows it.
    let promoted_at = sim.now;
    let t = step(
        &sim.plan,
        &sim.status,
        &watched(&sim, true, true),
        promoted_at + Duration::from_secs(6),
    );
    assert_eq!(t.status.phase, Phase::Finalising);
    let t = step(
        &sim.plan,
        &t.status,
        &watched(&sim, true, true),
        promoted_at + Duration::from_secs(7),
    );
    assert_eq!(t.status.phase, Phase::Succeeded);
    assert!(
        (promoted_at + Duration::from_secs(7)).since(start) < interval * 2,
        "new revision to Succeeded within two intervals"
    );
}

#[test]
fn a_run_with_gates_waits_for_the_interval_even_when_the_canary_is_ready() {
    let mut sim =
        Sim::initialized(Plan::test().webhook("load-test", serin_core::WebhookKind::PreRollout));
    let start = sim.status.last_tick_at.unwrap() + Duration::from_secs(3);
    sim.deploy("rev-b");
    let t = step(&sim.plan, &sim.status, &watched(&sim, true, false), start);
    assert_eq!(t.status.phase, Phase::Progressing);
    sim.status = t.status;
    sim.world.canary_up = true;
    assert!(!awaits_workload(&sim.plan, &sim.status));
    let t = step(
        &sim.plan,
        &sim.status,
        &watched(&sim, true, true),
        start + Duration::from_secs(4),
    );
    assert_eq!(t.status, sim.status);
}

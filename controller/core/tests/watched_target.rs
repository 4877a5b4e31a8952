//! A runtime that watches the target may step before the interval; the engine then acts on a
//! revision it does not know yet (idle: a run starts; analysing: the run restarts), and on
//! nothing else.

mod common;

use std::time::Duration;

use common::*;
use serin_core::sim::Sim;
use serin_core::{
    HistoryKind, Observation, Phase, Plan, Readiness, TargetState, Transition, needs, step,
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

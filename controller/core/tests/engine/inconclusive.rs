//! The judge's `onInconclusive` budget: within it an inconclusive tick holds the weight; once a
//! step or the run has gone on too long without a decision, the run ends as the policy says,
//! with the reason in the status, the history and the events.

use crate::common;

use std::time::Duration;

use common::*;
use serin_core::sim::Sim;
use serin_core::{
    Action, HistoryKind, InconclusiveBudget, InconclusivePolicy, ON_INCONCLUSIVE, Phase::*, Plan,
    RunOutcome,
};

fn budgeted(policy: InconclusivePolicy, step_min: u64, run_min: u64) -> Plan {
    let mut p = Plan::test();
    p.on_inconclusive = policy;
    p.inconclusive_budget = InconclusiveBudget {
        step: Some(Duration::from_secs(step_min * 60)),
        run: Some(Duration::from_secs(run_min * 60)),
    };
    p
}

fn outcome_reason(sim: &Sim) -> String {
    match sim.status.run.as_ref().and_then(|r| r.outcome.clone()) {
        Some(RunOutcome::RolledBack { reason, .. }) => reason,
        Some(RunOutcome::Promoted { reason, .. }) => reason,
        other => panic!("run not ended: {other:?}"),
    }
}

#[test]
fn a_starved_step_ends_by_rollback_after_the_step_budget() {
    let mut sim = Sim::initialized(budgeted(InconclusivePolicy::Rollback, 3, 60));
    sim.deploy("rev-b");
    sim.run(2); // weight 10, step started
    sim.checks(vec![too_few_requests()]);
    // Two ticks within the budget hold; the third reaches 3 minutes at this step.
    assert_eq!(sim.run(2), times(2, Progressing, 10));
    let from = sim.log.len();
    let ticks = sim.run(2);
    assert_eq!(ticks.last().map(|t| t.0), Some(Failed), "{ticks:?}");
    let reason = outcome_reason(&sim);
    assert!(
        reason.starts_with(&format!(
            "{ON_INCONCLUSIVE} rollback: no decision within the step budget (3m) at weight 10%"
        )),
        "{reason}"
    );
    let actions = sim.actions_since(from);
    assert!(actions.iter().any(|a| matches!(a,
        Action::Event { reason, message, .. } if reason == "Inconclusive" && message.contains("step budget"))));
    assert!(actions.iter().any(|a| matches!(a,
        Action::Record(h) if h.kind == HistoryKind::RolledBack && h.message.contains(ON_INCONCLUSIVE))));
    assert_eq!(sim.status.canary_weight, 0);
}

#[test]
fn the_step_budget_restarts_at_every_advance_and_the_run_budget_does_not() {
    let mut sim = Sim::initialized(budgeted(InconclusivePolicy::Rollback, 3, 6));
    sim.deploy("rev-b");
    sim.run(2); // weight 10
    // Two inconclusive ticks, then a pass: the step budget starts again at 20.
    sim.checks(vec![too_few_requests()]);
    assert_eq!(sim.run(2), times(2, Progressing, 10));
    sim.checks(vec![success_rate(99.9)]);
    assert_eq!(sim.run(1), vec![(Progressing, 20)]);
    sim.checks(vec![too_few_requests()]);
    assert_eq!(sim.run(2), times(2, Progressing, 20));
    // Six minutes since the analysis began: the run budget ends it first.
    let ticks = sim.run(2);
    assert_eq!(ticks.last().map(|t| t.0), Some(Failed), "{ticks:?}");
    let reason = outcome_reason(&sim);
    assert!(reason.contains("run budget (6m)"), "{reason}");
}

#[test]
fn promote_policy_promotes_without_evidence_and_says_so() {
    let mut sim = Sim::initialized(budgeted(InconclusivePolicy::Promote, 2, 60));
    sim.deploy("rev-b");
    sim.run(2);
    sim.checks(vec![too_few_requests()]);
    let done = sim.tick_until(10, |s| s.phase == Succeeded);
    assert!(done, "{:?}", sim.status.phase);
    let reason = outcome_reason(&sim);
    assert!(
        reason.contains(&format!("{ON_INCONCLUSIVE} promote")),
        "{reason}"
    );
}

#[test]
fn wait_policy_keeps_holding_and_reports_the_spent_budget_once() {
    let mut sim = Sim::initialized(budgeted(InconclusivePolicy::Wait, 2, 60));
    sim.deploy("rev-b");
    sim.run(2);
    sim.checks(vec![too_few_requests()]);
    assert_eq!(sim.run(6), times(6, Progressing, 10));
    assert!(
        sim.status
            .hold
            .as_deref()
            .is_some_and(|h| h.contains("onInconclusive wait: no decision within the step budget")),
        "{:?}",
        sim.status.hold
    );
    sim.checks(vec![success_rate(99.9)]);
    assert_eq!(sim.run(1), vec![(Progressing, 20)]);
}

#[test]
fn a_decided_tick_is_never_ended_by_the_budget() {
    // Passing checks advance even when the step is older than the budget.
    let mut sim = Sim::initialized(budgeted(InconclusivePolicy::Rollback, 1, 2));
    sim.deploy("rev-b");
    sim.checks(vec![success_rate(99.9)]);
    assert_eq!(sim.run(9), passing_canary_10_to_50());
}

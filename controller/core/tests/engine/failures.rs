//! Every way a run can fail or be held: failed checks, deadlines, rollback webhooks, reverts,
//! revisions changing mid-run, inconclusive verdicts.

use crate::common;

use common::*;
use serin_core::sim::Sim;
use serin_core::{Action, ConditionStatus, HistoryKind, Phase::*, Plan, RunOutcome, Severity};

#[test]
fn failed_checks_reaching_the_threshold_roll_back() {
    let mut sim = Sim::initialized(Plan::test().threshold(2));
    sim.deploy("rev-b");
    assert_eq!(
        sim.run(3),
        vec![(Progressing, 0), (Progressing, 10), (Progressing, 20)]
    );
    sim.checks(vec![success_rate(91.5)]);
    let from = sim.log.len();
    assert_eq!(sim.run(2), vec![(Progressing, 20), (Failed, 0)]);
    let failed: Vec<u32> = sim.log[from..]
        .iter()
        .map(|t| t.transition.status.failed_checks)
        .collect();
    assert_eq!(failed, vec![1, 2]);
    assert_eq!(sim.world.routes.primary_weight, 100);
    assert!(!sim.world.canary_up, "canary scaled to zero");
    assert!(sim.world.promotions.is_empty());
    assert_eq!(sim.status.last_promoted_spec.as_deref(), Some("rev-a"));
    let promoted = sim.status.promoted_condition().expect("Promoted condition");
    assert_eq!(promoted.status, ConditionStatus::False);
    let outcome = sim.status.run.as_ref().and_then(|r| r.outcome.clone());
    assert!(
        matches!(&outcome, Some(RunOutcome::RolledBack { reason, .. }) if reason.contains("threshold")),
        "{outcome:?}"
    );
    // The history says why, with the measured value and the bound.
    let history: Vec<_> = sim
        .actions_since(from)
        .into_iter()
        .filter_map(|a| match a {
            Action::Record(h) => Some(h),
            _ => None,
        })
        .collect();
    let first_failure = history
        .iter()
        .find(|h| h.kind == HistoryKind::CheckFailed)
        .expect("a CheckFailed entry");
    assert!(
        first_failure.message.contains("91.5") && first_failure.message.contains(">= 99"),
        "{}",
        first_failure.message
    );
    assert_eq!(first_failure.checks[0].value, Some(91.5));
    assert_eq!(
        (first_failure.failed_checks, first_failure.threshold),
        (1, 2)
    );
    assert!(history.iter().any(|h| h.kind == HistoryKind::RolledBack));
    // An error alert names the cause.
    assert!(sim.actions_since(from).iter().any(|a| matches!(a,
        Action::Alert { severity: Severity::Error, message } if message.contains("threshold"))));
}

#[test]
fn failed_checks_are_cumulative_within_a_run_not_consecutive() {
    let mut sim = Sim::initialized(Plan::test().threshold(2));
    sim.deploy("rev-b");
    sim.run(2); // weight 10
    sim.checks(vec![success_rate(50.0)]);
    assert_eq!(sim.run(1), vec![(Progressing, 10)]);
    sim.checks(vec![success_rate(99.9)]);
    assert_eq!(sim.run(2), vec![(Progressing, 20), (Progressing, 30)]);
    assert_eq!(sim.status.failed_checks, 1);
    sim.checks(vec![success_rate(50.0)]);
    assert_eq!(sim.run(1), vec![(Failed, 0)]);
}

#[test]
fn a_new_run_starts_with_zero_failed_checks() {
    let mut sim = Sim::initialized(Plan::test().threshold(1));
    sim.deploy("rev-b");
    sim.run(2);
    sim.checks(vec![success_rate(10.0)]);
    assert_eq!(sim.run(1), vec![(Failed, 0)]);
    assert_eq!(sim.status.failed_checks, 1);
    sim.checks(vec![success_rate(99.9)]);
    sim.deploy("rev-c");
    assert_eq!(sim.run(1), vec![(Progressing, 0)]);
    assert_eq!(sim.status.failed_checks, 0);
    assert_eq!(sim.status.run.as_ref().map(|r| r.id), Some(2));
    // The timeline opens rev-c's run as Progressing, not with the previous run's Failed.
    let started: Vec<_> = sim
        .log
        .last()
        .expect("ticked")
        .transition
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Record(e) if e.kind == HistoryKind::RunStarted => Some(e.phase),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![Progressing]);
}

#[test]
fn failures_while_waiting_for_promotion_still_roll_back() {
    let plan = Plan::test()
        .threshold(2)
        .webhook("approve", serin_core::WebhookKind::ConfirmPromotion);
    let mut sim = Sim::initialized(plan);
    sim.gate("approve", false);
    sim.deploy("rev-b");
    let trace = sim.run(8);
    assert_eq!(
        &trace[5..],
        &[
            (Progressing, 50),
            (WaitingPromotion, 50),
            (WaitingPromotion, 50)
        ]
    );
    sim.checks(vec![success_rate(80.0)]);
    assert_eq!(sim.run(2), vec![(WaitingPromotion, 50), (Failed, 0)]);
}

#[test]
fn a_canary_stuck_past_the_progress_deadline_rolls_back() {
    let mut sim = Sim::initialized(Plan::test().progress_deadline_secs(150));
    sim.world.canary_ready = false;
    sim.deploy("rev-b");
    // Scaled up at t, not ready at t+60, t+120; at t+180 (over 150s since first seen) it fails.
    assert_eq!(
        sim.run(5),
        vec![
            (Progressing, 0),
            (Progressing, 0),
            (Progressing, 0),
            (Progressing, 0),
            (Failed, 0),
        ]
    );
    assert_eq!(
        sim.status.failed_checks, 0,
        "a deadline is not a failed check"
    );
    let outcome = sim.status.run.as_ref().and_then(|r| r.outcome.clone());
    assert!(
        matches!(&outcome, Some(RunOutcome::RolledBack { reason, .. }) if reason.contains("progress deadline")),
        "{outcome:?}"
    );
}

#[test]
fn a_canary_that_recovers_before_the_deadline_continues() {
    let mut sim = Sim::initialized(Plan::test().progress_deadline_secs(150));
    sim.world.canary_ready = false;
    sim.deploy("rev-b");
    assert_eq!(sim.run(3), times(3, Progressing, 0));
    sim.world.canary_ready = true;
    assert_eq!(sim.run(2), vec![(Progressing, 10), (Progressing, 20)]);
}

#[test]
fn a_primary_stuck_during_initialization_fails_without_touching_the_target() {
    let mut sim = Sim::new(Plan::test().progress_deadline_secs(600), "rev-a", T0);
    sim.world.primary_ready = false;
    let mut trace = times(11, Initializing, 0);
    trace.push((Failed, 0));
    assert_eq!(sim.run(12), trace);
    assert!(sim.world.canary_up, "the target keeps serving");
    // A new target revision gets a fresh initialization attempt.
    sim.world.primary_ready = true;
    sim.deploy("rev-b");
    assert_eq!(sim.run(2), vec![(Initialized, 0), (Initialized, 0)]);
}

#[test]
fn a_primary_stuck_mid_run_rolls_back() {
    let mut sim = Sim::initialized(Plan::test().progress_deadline_secs(100));
    sim.deploy("rev-b");
    sim.run(2);
    sim.world.primary_ready = false;
    assert_eq!(
        sim.run(3),
        vec![(Progressing, 10), (Progressing, 10), (Failed, 0)]
    );
}

#[test]
fn a_rollback_webhook_success_rolls_back() {
    let plan = Plan::test().webhook("big-red-button", serin_core::WebhookKind::Rollback);
    let mut sim = Sim::initialized(plan);
    sim.gate("big-red-button", false);
    sim.deploy("rev-b");
    assert_eq!(
        sim.run(3),
        vec![(Progressing, 0), (Progressing, 10), (Progressing, 20)]
    );
    sim.gate("big-red-button", true);
    assert_eq!(sim.run(1), vec![(Failed, 0)]);
    assert_eq!(sim.status.failed_checks, 0);
}

#[test]
fn a_new_revision_mid_run_restarts_the_analysis() {
    let mut sim = Sim::initialized(Plan::test().threshold(3));
    sim.deploy("rev-b");
    sim.run(3); // weight 20
    sim.checks(vec![success_rate(90.0)]);
    sim.run(1);
    assert_eq!(sim.status.failed_checks, 1);
    sim.checks(vec![success_rate(99.9)]);
    sim.deploy("rev-c");
    let mut expected = vec![(Progressing, 0)];
    expected.extend(passing_canary_10_to_50().into_iter().skip(1));
    assert_eq!(sim.run(9), expected);
    assert_eq!(sim.world.promotions, vec!["rev-c".to_string()]);
    let run = sim.status.run.clone().expect("run");
    assert_eq!((run.id, run.revision.as_str()), (2, "rev-c"));
}

#[test]
fn a_new_revision_while_waiting_for_promotion_restarts_the_analysis() {
    let plan = Plan::test().webhook("approve", serin_core::WebhookKind::ConfirmPromotion);
    let mut sim = Sim::initialized(plan);
    sim.gate("approve", false);
    sim.deploy("rev-b");
    sim.run(7);
    assert_eq!(sim.status.phase, WaitingPromotion);
    sim.deploy("rev-c");
    assert_eq!(sim.run(2), vec![(Progressing, 0), (Progressing, 10)]);
}

#[test]
fn reverting_to_the_promoted_revision_after_a_failure_does_not_start_a_run() {
    let mut sim = Sim::initialized(Plan::test().threshold(1));
    sim.deploy("rev-b");
    sim.run(2);
    sim.checks(vec![success_rate(10.0)]);
    assert_eq!(sim.run(1), vec![(Failed, 0)]);
    sim.checks(vec![success_rate(99.9)]);
    sim.deploy("rev-a");
    assert_eq!(sim.run(3), times(3, Failed, 0));
    assert_eq!(sim.status.last_applied_spec.as_deref(), Some("rev-a"));
    // Re-applying the failed revision is a new rollout again.
    sim.deploy("rev-b");
    assert_eq!(sim.run(1), vec![(Progressing, 0)]);
}

#[test]
fn reapplying_the_failed_revision_unchanged_does_not_start_a_run() {
    let mut sim = Sim::initialized(Plan::test().threshold(1));
    sim.deploy("rev-b");
    sim.run(2);
    sim.checks(vec![success_rate(10.0)]);
    sim.run(1);
    sim.checks(vec![success_rate(99.9)]);
    sim.deploy("rev-b");
    assert_eq!(sim.run(2), times(2, Failed, 0));
}

#[test]
fn reverting_to_the_promoted_revision_mid_run_ends_the_run() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(3);
    sim.deploy("rev-a");
    assert_eq!(sim.run(2), vec![(Failed, 0), (Failed, 0)]);
    assert!(sim.world.promotions.is_empty());
    assert!(!sim.world.canary_up);
}

#[test]
fn inconclusive_verdicts_hold_without_counting_a_failure() {
    let mut sim = Sim::initialized(Plan::test().threshold(1));
    sim.deploy("rev-b");
    sim.run(2); // weight 10
    sim.checks(vec![too_few_requests()]);
    let from = sim.log.len();
    assert_eq!(sim.run(4), times(4, Progressing, 10));
    assert_eq!(sim.status.failed_checks, 0);
    // The hold is reported once, not every tick.
    let held = sim
        .actions_since(from)
        .iter()
        .filter(|a| matches!(a, Action::Record(h) if h.kind == HistoryKind::Held))
        .count();
    assert_eq!(held, 1);
    assert!(
        sim.status
            .hold
            .as_deref()
            .is_some_and(|h| h.contains("inconclusive"))
    );
    sim.checks(vec![success_rate(99.9)]);
    assert_eq!(sim.run(1), vec![(Progressing, 20)]);
    assert_eq!(sim.status.hold, None);
}

#[test]
fn a_missing_check_result_holds_like_an_inconclusive_one() {
    let mut sim = Sim::initialized(Plan::test().threshold(1));
    sim.deploy("rev-b");
    sim.run(2);
    sim.checks(Vec::new());
    assert_eq!(sim.run(2), times(2, Progressing, 10));
    assert!(
        sim.status
            .hold
            .as_deref()
            .is_some_and(|h| h.contains("no result for check request-success-rate"))
    );
}

#[test]
fn inconclusive_with_pause_policy_pauses_for_a_human() {
    let mut sim = Sim::initialized(Plan::test().pause_on_inconclusive());
    sim.deploy("rev-b");
    sim.run(2);
    sim.checks(vec![too_few_requests()]);
    assert_eq!(sim.run(1), vec![(Progressing, 10)]);
    let pause = sim.status.paused.clone().expect("paused");
    assert_eq!(pause.by, "serin");
    // Paused: nothing moves even once data is good.
    sim.checks(vec![success_rate(99.9)]);
    assert_eq!(sim.run(3), times(3, Progressing, 10));
    sim.command(serin_core::CommandAction::Resume, "alice");
    assert_eq!(sim.run(2), vec![(Progressing, 10), (Progressing, 20)]);
}

#[test]
fn promotion_waits_for_the_primary_rollout_and_fails_past_the_deadline() {
    let mut sim = Sim::initialized(Plan::test().progress_deadline_secs(100));
    sim.deploy("rev-b");
    assert_eq!(sim.run(7).last(), Some(&(Promoting, 50)));
    // The primary is rolling out the promoted template and never becomes ready.
    sim.world.primary_ready = false;
    assert_eq!(
        sim.run(3),
        vec![(Promoting, 50), (Promoting, 50), (Failed, 0)]
    );
    assert!(!sim.world.canary_up);
}

#[test]
fn finalising_waits_for_a_ready_primary() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    assert_eq!(sim.run(8).last(), Some(&(Finalising, 0)));
    sim.world.primary_ready = false;
    assert_eq!(sim.run(2), times(2, Finalising, 0));
    assert!(
        sim.world.canary_up,
        "the canary is only scaled down once the primary is ready"
    );
    sim.world.primary_ready = true;
    assert_eq!(sim.run(1), vec![(Succeeded, 0)]);
}

#[test]
fn a_missing_target_holds_without_failing() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(2);
    sim.world.target = None;
    assert_eq!(sim.run(3), times(3, Progressing, 10));
    assert!(sim.status.hold.as_deref() == Some("target not found"));
}

#[test]
fn a_new_revision_during_promotion_is_analysed_after_the_promotion_finishes() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    assert_eq!(sim.run(7).last(), Some(&(Promoting, 50)));
    sim.deploy("rev-c");
    assert_eq!(
        sim.run(4),
        vec![
            (Finalising, 0),
            (Succeeded, 0),
            (Progressing, 0),
            (Progressing, 10)
        ]
    );
    assert_eq!(sim.world.promotions, vec!["rev-b".to_string()]);
    assert_eq!(
        sim.status.run.as_ref().map(|r| r.revision.as_str()),
        Some("rev-c")
    );
}

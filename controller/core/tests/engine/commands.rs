//! Manual commands (promote, abort, pause, resume, gates), deletion, pacing and restart safety.

use crate::common;

use common::*;
use serin_core::sim::Sim;
use serin_core::{
    Action, CommandAction, HistoryKind, Observation, Phase::*, Plan, RunOutcome, WebhookKind,
    needs, step,
};

#[test]
fn manual_promote_mid_run_skips_the_rest_of_the_analysis() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(3); // weight 20
    sim.command(CommandAction::Promote, "alice");
    assert_eq!(
        sim.run(3),
        vec![(Promoting, 20), (Finalising, 0), (Succeeded, 0)]
    );
    assert_eq!(sim.world.promotions, vec!["rev-b".to_string()]);
    let outcome = sim.status.run.as_ref().and_then(|r| r.outcome.clone());
    assert!(
        matches!(&outcome, Some(RunOutcome::Promoted { reason, .. }) if reason == "manual promote by alice"),
        "{outcome:?}"
    );
}

#[test]
fn manual_promote_passes_a_closed_promotion_gate() {
    let plan = Plan::test().webhook("approve", WebhookKind::ConfirmPromotion);
    let mut sim = Sim::initialized(plan);
    sim.gate("approve", false);
    sim.deploy("rev-b");
    sim.run(8);
    assert_eq!(sim.status.phase, WaitingPromotion);
    sim.command(CommandAction::Promote, "release-bot");
    assert_eq!(sim.run(1), vec![(Promoting, 50)]);
}

#[test]
fn manual_abort_rolls_back() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(3);
    let from = sim.log.len();
    sim.command(CommandAction::Abort, "bob");
    assert_eq!(sim.run(1), vec![(Failed, 0)]);
    assert!(!sim.world.canary_up);
    let history: Vec<_> = sim
        .actions_since(from)
        .into_iter()
        .filter_map(|a| match a {
            Action::Record(h) => Some(h),
            _ => None,
        })
        .collect();
    let rolled_back = history
        .iter()
        .find(|h| h.kind == HistoryKind::RolledBack)
        .expect("RolledBack entry");
    assert!(
        rolled_back.message.contains("aborted by bob"),
        "{}",
        rolled_back.message
    );
    assert_eq!(rolled_back.commands.len(), 1);
    assert_eq!(rolled_back.commands[0].by, "bob");
}

#[test]
fn abort_during_promotion_is_refused_and_recorded() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(7);
    assert_eq!(sim.status.phase, Promoting);
    let from = sim.log.len();
    sim.command(CommandAction::Abort, "bob");
    assert_eq!(sim.run(2), vec![(Promoting, 50), (Finalising, 0)]);
    assert!(sim.actions_since(from).iter().any(|a| matches!(a,
        Action::Record(h) if h.message.contains("promotion already under way"))));
}

#[test]
fn commands_apply_immediately_even_between_ticks() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(3);
    let before = sim.now;
    sim.command(CommandAction::Abort, "carol");
    sim.tick();
    assert_eq!(sim.now, before, "no waiting for the interval");
    assert_eq!(sim.status.phase, Failed);
}

#[test]
fn pause_freezes_the_run_and_resume_continues_it() {
    let mut sim = Sim::initialized(Plan::test().threshold(1));
    sim.deploy("rev-b");
    sim.run(2); // weight 10
    sim.command(CommandAction::Pause, "dave");
    sim.run(1);
    // Bad checks while paused do not count: nothing is evaluated.
    sim.checks(vec![success_rate(1.0)]);
    assert_eq!(sim.run(3), times(3, Progressing, 10));
    assert_eq!(sim.status.failed_checks, 0);
    assert!(
        sim.log
            .last()
            .is_some_and(|t| t.needs.gates.is_empty() && !t.needs.run_checks)
    );
    sim.checks(vec![success_rate(99.9)]);
    sim.command(CommandAction::Resume, "dave");
    // The resume applies at once; the run continues on its next scheduled tick.
    assert_eq!(
        sim.run(3),
        vec![(Progressing, 10), (Progressing, 20), (Progressing, 30)]
    );
}

#[test]
fn pause_while_idle_holds_the_next_run_until_resumed() {
    let mut sim = Sim::initialized(Plan::test());
    sim.command(CommandAction::Pause, "erin");
    sim.deploy("rev-b");
    assert_eq!(sim.run(3), times(3, Initialized, 0));
    sim.command(CommandAction::Resume, "erin");
    assert_eq!(sim.run(2), vec![(Initialized, 0), (Progressing, 0)]);
}

#[test]
fn gate_commands_open_and_close_named_gates_in_the_status() {
    let mut sim = Sim::initialized(Plan::test());
    sim.command(
        CommandAction::GateOpen {
            gate: "release".into(),
        },
        "frank",
    );
    sim.run(1);
    let gate = sim
        .status
        .gates
        .get("release")
        .cloned()
        .expect("gate state");
    assert!(gate.open);
    assert_eq!(gate.by, "frank");
    sim.command(
        CommandAction::GateClose {
            gate: "release".into(),
        },
        "grace",
    );
    sim.run(1);
    assert!(!sim.status.gates["release"].open);
    assert_eq!(sim.status.last_command_id.as_deref(), Some("cmd-2"));
}

#[test]
fn a_command_delivered_twice_is_applied_once() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(2);
    sim.command(CommandAction::Pause, "heidi");
    let cmd = sim.world.pending_commands[0].clone();
    sim.run(1);
    sim.command(CommandAction::Resume, "heidi");
    sim.run(1);
    assert!(sim.status.paused.is_none());
    // The old pause arrives again (e.g. the annotation was re-read): ignored.
    sim.world.pending_commands.push(cmd);
    sim.run(1);
    assert!(sim.status.paused.is_none());
}

#[test]
fn promote_or_abort_without_a_run_is_ignored_and_recorded() {
    let mut sim = Sim::initialized(Plan::test());
    let from = sim.log.len();
    sim.command(CommandAction::Promote, "ivan");
    sim.command(CommandAction::Abort, "ivan");
    assert_eq!(sim.run(1), vec![(Initialized, 0)]);
    let ignored = sim
        .actions_since(from)
        .iter()
        .filter(|a| matches!(a, Action::Record(h) if h.message.contains("ignored")))
        .count();
    assert_eq!(ignored, 2);
    assert!(sim.world.promotions.is_empty());
}

#[test]
fn deleting_the_canary_terminates_and_reverts_the_target_when_asked() {
    let mut sim = Sim::initialized(Plan::test().revert_on_deletion());
    sim.deploy("rev-b");
    sim.run(3);
    sim.world.deleting = true;
    assert_eq!(sim.run(2), times(2, Terminating, 20));
    assert!(sim.world.reverted);
    let reverts = sim
        .actions_since(0)
        .iter()
        .filter(|a| matches!(a, Action::RevertTarget))
        .count();
    assert_eq!(reverts, 1, "reverted once, not every tick");
}

#[test]
fn deleting_without_revert_on_deletion_leaves_the_target_alone() {
    let mut sim = Sim::initialized(Plan::test());
    sim.world.deleting = true;
    assert_eq!(sim.run(1), vec![(Terminating, 0)]);
    assert!(!sim.world.reverted);
}

#[test]
fn nothing_but_commands_happens_before_the_interval_elapses() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(2);
    let early = sim.now + std::time::Duration::from_secs(10);
    let n = needs(&sim.plan, &sim.status, early);
    assert!(!n.due);
    assert_eq!(n.wake_at, sim.now + INTERVAL);
    let obs = Observation {
        target: sim.world.target.clone(),
        ..Observation::default()
    };
    let t = step(&sim.plan, &sim.status, &obs, early);
    assert_eq!(t.status, sim.status);
    assert!(t.actions.is_empty());
}

#[test]
fn repeating_a_step_after_a_crash_does_not_promote_twice() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(7);
    assert_eq!(sim.status.phase, Promoting);
    // The runtime carried out the promotion and persisted the status, then crashed. On restart
    // the same observation is stepped again at the same instant, then a tick later.
    let last = sim.log.last().cloned().expect("a tick");
    let again = step(&sim.plan, &sim.status, &last.observation, last.at);
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    let later = step(
        &sim.plan,
        &sim.status,
        &last.observation,
        last.at + INTERVAL,
    );
    assert!(!promoted(&later.actions));
    assert_eq!(later.status.phase, Finalising);
}

#[test]
fn a_persisted_gate_pass_survives_a_restart() {
    let plan = Plan::test()
        .webhook("qa", WebhookKind::ConfirmPromotion)
        .webhook("release-manager", WebhookKind::ConfirmPromotion);
    let mut sim = Sim::initialized(plan);
    sim.gate("release-manager", false);
    sim.deploy("rev-b");
    sim.run(7);
    // Round-trip the status through JSON, as the runtime persists it.
    let json = serde_json::to_string(&sim.status).expect("status serializes");
    let restored: serin_core::Status = serde_json::from_str(&json).expect("status parses");
    assert_eq!(restored, sim.status);
    let n = needs(&sim.plan, &restored, sim.now + INTERVAL);
    let names: Vec<_> = n.gates.iter().map(|g| g.webhook.name.as_str()).collect();
    assert_eq!(names, vec!["release-manager"]);
}

#[test]
fn status_serializes_with_flagger_field_names() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(3);
    let v = serde_json::to_value(&sim.status).expect("status serializes");
    assert_eq!(v["phase"], "Progressing");
    assert_eq!(v["canaryWeight"], 20);
    assert_eq!(v["failedChecks"], 0);
    assert_eq!(v["iterations"], 0);
    assert_eq!(v["lastAppliedSpec"], "rev-b");
    assert_eq!(v["lastPromotedSpec"], "rev-a");
    assert_eq!(v["conditions"][0]["type"], "Promoted");
    assert_eq!(v["conditions"][0]["status"], "Unknown");
    assert!(
        v["lastTransitionTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

#[test]
fn commands_parse_from_the_annotation_json() {
    let cmd: serin_core::Command = serde_json::from_str(
        r#"{"id":"42","action":"gate-open","gate":"release","by":"ci","at":"2026-11-21T21:00:00Z"}"#,
    )
    .expect("command parses");
    assert_eq!(
        cmd.action,
        CommandAction::GateOpen {
            gate: "release".into()
        }
    );
    let promote: serin_core::Command = serde_json::from_str(
        r#"{"id":"43","action":"promote","by":"ci","at":"2026-11-21T21:00:00Z"}"#,
    )
    .expect("command parses");
    assert_eq!(promote.action, CommandAction::Promote);
    let bad = serde_json::from_str::<serin_core::Command>(
        r#"{"id":"44","action":"launch","by":"ci","at":"2026-11-21T21:00:00Z"}"#,
    )
    .expect_err("unknown action");
    assert!(bad.to_string().contains("launch"), "{bad}");
}

#[test]
fn a_promote_arriving_on_a_due_tick_waits_a_tick_before_shifting_traffic() {
    let mut sim = Sim::initialized(Plan::test());
    sim.deploy("rev-b");
    sim.run(3); // weight 20
    let due = sim.now + INTERVAL;
    let mut obs = sim.log.last().expect("a tick").observation.clone();
    obs.gates.clear();
    obs.commands = vec![serin_core::Command {
        id: "promote-1".into(),
        action: CommandAction::Promote,
        by: "judy".into(),
        at: due,
    }];
    let t = step(&sim.plan, &sim.status, &obs, due);
    assert_eq!((t.status.phase, t.status.canary_weight), (Promoting, 20));
    assert!(promoted(&t.actions));
    assert!(
        !t.actions.iter().any(|a| matches!(a, Action::SetRoutes(_))),
        "traffic moves only after the primary has been observed with the promoted template"
    );
}

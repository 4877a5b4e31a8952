//! Bootstrap and the three strategies, tick by tick: exact phases and weights.

use crate::common;

use common::*;
use serin_core::sim::Sim;
use serin_core::{Action, ConditionStatus, Phase::*, Plan, WebhookKind};

#[test]
fn bootstrap_creates_the_primary_waits_for_it_then_routes_everything_to_it() {
    let mut sim = Sim::new(Plan::test(), "rev-a", T0);
    // Tick 1: the primary does not exist yet; the engine asks for it and waits.
    // Tick 2: the primary is ready: all traffic to it, target scaled to zero.
    assert_eq!(sim.run(2), vec![(Initializing, 0), (Initialized, 0)]);
    assert!(matches!(
        sim.log[0].transition.actions[..],
        [Action::InitializePrimary, ..]
    ));
    assert_eq!(sim.world.routes.primary_weight, 100);
    assert!(!sim.world.canary_up, "target scaled to zero");
    assert_eq!(sim.status.last_applied_spec.as_deref(), Some("rev-a"));
    assert_eq!(sim.status.last_promoted_spec.as_deref(), Some("rev-a"));
    let promoted = sim.status.promoted_condition().expect("Promoted condition");
    assert_eq!(promoted.status, ConditionStatus::True);
    assert_eq!(promoted.reason, "Initialized");
    // Nothing changes while the target stays the same.
    assert_eq!(sim.run(3), times(3, Initialized, 0));
}

#[test]
fn bootstrap_waits_for_a_slow_primary_within_the_deadline() {
    let mut sim = Sim::new(Plan::test(), "rev-a", T0);
    sim.world.primary_ready = false;
    assert_eq!(sim.run(4), times(4, Initializing, 0));
    assert!(
        sim.world.canary_up,
        "the target keeps serving until the primary is ready"
    );
    sim.world.primary_ready = true;
    assert_eq!(sim.run(1), vec![(Initialized, 0)]);
}

#[test]
fn canary_step_weight_10_to_max_50_promotes_after_the_last_step() {
    let mut sim = Sim::initialized(Plan::test().step_weight(10).max_weight(50));
    sim.deploy("rev-b");
    assert_eq!(sim.run(9), passing_canary_10_to_50());
    assert_eq!(sim.world.promotions, vec!["rev-b".to_string()]);
    assert!(
        !sim.world.canary_up,
        "canary scaled to zero after promotion"
    );
    assert_eq!(sim.world.routes.primary_weight, 100);
    assert_eq!(sim.status.last_promoted_spec.as_deref(), Some("rev-b"));
    assert_eq!(sim.status.failed_checks, 0);
    let promoted = sim.status.promoted_condition().expect("Promoted condition");
    assert_eq!(
        (promoted.status, promoted.reason.as_str()),
        (ConditionStatus::True, "Succeeded")
    );
    // And then it rests.
    assert_eq!(sim.run(2), times(2, Succeeded, 0));
}

#[test]
fn step_weight_not_dividing_max_weight_never_exceeds_max_weight() {
    let mut sim = Sim::initialized(Plan::test().step_weight(20).max_weight(50));
    sim.deploy("rev-b");
    assert_eq!(
        sim.run(7),
        vec![
            (Progressing, 0),
            (Progressing, 20),
            (Progressing, 40),
            (Progressing, 50),
            (Promoting, 50),
            (Finalising, 0),
            (Succeeded, 0),
        ]
    );
}

#[test]
fn explicit_step_weights_with_stepwise_promotion() {
    let plan = Plan::test()
        .step_weights(&[1, 5, 25, 50])
        .step_weight_promotion(20);
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    assert_eq!(
        sim.run(11),
        vec![
            (Progressing, 0),
            (Progressing, 1),
            (Progressing, 5),
            (Progressing, 25),
            (Progressing, 50),
            (Promoting, 50),
            // The primary (now running rev-b) takes traffic back 20 points at a time.
            (Promoting, 30),
            (Promoting, 10),
            (Finalising, 0),
            (Succeeded, 0),
            (Succeeded, 0),
        ]
    );
}

#[test]
fn canary_with_mirroring_mirrors_for_one_tick_before_the_first_step() {
    let mut sim = Sim::initialized(Plan::test().step_weight(25).max_weight(50).mirror(100));
    sim.deploy("rev-b");
    let trace = sim.run(7);
    assert_eq!(
        trace,
        vec![
            (Progressing, 0),
            (Progressing, 0), // mirroring
            (Progressing, 25),
            (Progressing, 50),
            (Promoting, 50),
            (Finalising, 0),
            (Succeeded, 0),
        ]
    );
    let mirrored = sim
        .log
        .iter()
        .rev()
        .nth(5)
        .expect("tick")
        .transition
        .clone();
    assert!(mirrored.status.mirrored);
    let routes = mirrored
        .actions
        .iter()
        .find_map(|a| match a {
            Action::SetRoutes(r) => Some(r.clone()),
            _ => None,
        })
        .expect("mirror routes");
    assert_eq!(
        (
            routes.primary_weight,
            routes.canary_weight,
            routes.mirror_weight
        ),
        (100, 0, Some(100))
    );
    // The metric checks run on the mirrored tick (traffic reaches the canary), not before.
    let n = sim.log.len();
    assert!(
        !sim.log[n - 6].needs.run_checks,
        "pre-rollout tick runs no checks"
    );
    assert!(sim.log[n - 5].needs.run_checks, "mirrored tick runs checks");
}

#[test]
fn ab_testing_routes_matching_requests_for_the_iterations_then_promotes() {
    let mut sim = Sim::initialized(Plan::test().ab_testing(3));
    sim.deploy("rev-b");
    let start = sim.log.len();
    assert_eq!(
        sim.run(7),
        vec![
            (Progressing, 0),
            (Progressing, 0),
            (Progressing, 0),
            (Progressing, 0),
            (Promoting, 0),
            (Finalising, 0),
            (Succeeded, 0),
        ]
    );
    let iterations: Vec<u32> = sim.log[start..]
        .iter()
        .map(|t| t.transition.status.iterations)
        .collect();
    assert_eq!(iterations, vec![0, 1, 2, 3, 3, 3, 3]);
    // During the run, matching requests go to the canary; afterwards the match is gone.
    let during = sim.log[start + 1]
        .transition
        .actions
        .iter()
        .find_map(|a| match a {
            Action::SetRoutes(r) => Some(r.clone()),
            _ => None,
        })
        .expect("A/B routes");
    assert_eq!(during.matches.len(), 1);
    assert_eq!((during.primary_weight, during.canary_weight), (100, 0));
    assert!(sim.world.routes.matches.is_empty());
}

#[test]
fn blue_green_runs_the_iterations_switches_all_traffic_then_promotes() {
    let mut sim = Sim::initialized(Plan::test().blue_green(2));
    sim.deploy("rev-b");
    let start = sim.log.len();
    assert_eq!(
        sim.run(7),
        vec![
            (Progressing, 0),
            (Progressing, 0),   // iteration 1 (pre-rollout tick)
            (Progressing, 0),   // iteration 2
            (Progressing, 100), // approved: all traffic to the canary, analysed once more
            (Promoting, 100),
            (Finalising, 0),
            (Succeeded, 0),
        ]
    );
    let iterations: Vec<u32> = sim.log[start..]
        .iter()
        .map(|t| t.transition.status.iterations)
        .collect();
    assert_eq!(iterations, vec![0, 1, 2, 3, 3, 3, 3]);
}

#[test]
fn blue_green_with_mirroring_mirrors_during_the_iterations() {
    let mut sim = Sim::initialized(Plan::test().blue_green(2).mirror(50));
    sim.deploy("rev-b");
    sim.run(2);
    assert!(sim.status.mirrored);
    assert_eq!(sim.world.routes.mirror_weight, Some(50));
    sim.run(2);
    assert!(!sim.status.mirrored);
    assert_eq!(sim.world.routes.canary_weight, 100);
    assert_eq!(sim.world.routes.mirror_weight, None);
}

#[test]
fn skip_analysis_promotes_as_soon_as_the_canary_is_ready() {
    let mut sim = Sim::initialized(Plan::test().skip_analysis());
    sim.deploy("rev-b");
    assert_eq!(sim.run(2), vec![(Progressing, 0), (Succeeded, 0)]);
    assert_eq!(sim.world.promotions, vec!["rev-b".to_string()]);
    assert!(!sim.world.canary_up);
}

#[test]
fn suspend_does_nothing_at_all() {
    let mut sim = Sim::initialized(Plan::test());
    sim.plan.suspend = true;
    sim.deploy("rev-b");
    let from = sim.log.len();
    assert_eq!(sim.run(3), times(3, Initialized, 0));
    assert!(sim.actions_since(from).is_empty());
    sim.plan.suspend = false;
    assert_eq!(sim.run(1), vec![(Progressing, 0)]);
}

#[test]
fn a_tracked_config_change_starts_a_run() {
    let mut sim = Sim::initialized(Plan::test());
    sim.change_config("configmap/app-settings", "v2");
    assert_eq!(sim.run(9), passing_canary_10_to_50());
    assert_eq!(
        sim.status
            .tracked_configs
            .get("configmap/app-settings")
            .map(String::as_str),
        Some("v2")
    );
}

#[test]
fn session_affinity_pins_canary_users_then_expires_the_cookie() {
    let mut sim = Sim::initialized(Plan::test().session_affinity("serin-session", 3600));
    sim.deploy("rev-b");
    sim.run(2);
    let affinity = sim
        .world
        .routes
        .affinity
        .clone()
        .expect("affinity during the run");
    let cookie = affinity.cookie.clone().expect("canary cookie");
    assert!(cookie.starts_with("serin-session="), "{cookie}");
    assert_eq!(affinity.max_age, 3600);
    assert_eq!(affinity.expire, None);
    sim.tick_until(20, |s| s.phase == Succeeded);
    let after = sim
        .world
        .routes
        .affinity
        .clone()
        .expect("affinity after the run");
    assert_eq!(after.cookie, None);
    assert_eq!(after.expire, Some(cookie.clone()));
    // The next run hands out a different cookie and still expires the old one.
    sim.deploy("rev-c");
    sim.run(2);
    let next = sim
        .world
        .routes
        .affinity
        .clone()
        .expect("affinity in run 2");
    assert_ne!(next.cookie, Some(cookie.clone()));
    assert_eq!(next.expire, Some(cookie));
}

#[test]
fn session_cookie_attributes_go_with_the_cookie_and_with_its_expiry() {
    let mut plan = Plan::test().session_affinity("serin-session", 60);
    let attributes = serin_core::CookieAttributes {
        domain: Some("example.com".into()),
        path: Some("/app".into()),
        same_site: Some(serin_core::SameSite::Strict),
        secure: true,
        http_only: false,
        partitioned: false,
    };
    if let Some(a) = plan.session_affinity.as_mut() {
        a.attributes = attributes.clone();
    }
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    sim.run(2);
    let during = sim
        .world
        .routes
        .affinity
        .clone()
        .expect("affinity during the run");
    assert_eq!(during.attributes, attributes);
    let set = during.set_cookie().expect("a cookie while the run is live");
    assert!(
        set.ends_with("; Max-Age=60; Domain=example.com; Path=/app; Secure; SameSite=Strict"),
        "{set}"
    );
    sim.tick_until(20, |s| s.phase == Succeeded);
    let after = sim
        .world
        .routes
        .affinity
        .clone()
        .expect("affinity after the run");
    assert_eq!(after.set_cookie(), None);
    let expire = after
        .expire_cookie()
        .expect("the primary expires the cookie");
    assert!(
        expire.ends_with("; Max-Age=-1; Domain=example.com; Path=/app; Secure; SameSite=Strict"),
        "{expire}"
    );
}

#[test]
fn post_rollout_and_event_webhooks_are_notifications() {
    let plan = Plan::test()
        .webhook("notify", WebhookKind::PostRollout)
        .webhook("events", WebhookKind::Event);
    let mut sim = Sim::initialized(plan);
    sim.deploy("rev-b");
    sim.tick_until(20, |s| s.phase == Succeeded);
    let posts: Vec<_> = sim
        .world
        .notifications
        .iter()
        .filter(|(name, _, _)| name == "notify")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].1, Succeeded);
    let events = sim
        .world
        .notifications
        .iter()
        .filter(|(name, _, _)| name == "events")
        .count();
    assert!(
        events >= 8,
        "one event webhook call per event, got {events}"
    );
    // Notifications are never gates: the engine does not ask the runtime to call them.
    assert!(
        sim.log
            .iter()
            .all(|t| t.needs.gates.iter().all(|g| g.webhook.kind.is_gate()))
    );
}

#[test]
fn last_transition_time_moves_with_every_weight_failed_check_and_iteration_as_in_flagger() {
    // Flagger stamps status.lastTransitionTime whenever it writes the weight, the failed checks
    // or the iterations, so `kubectl get canaries` shows when the canary last moved. Serin used
    // to stamp it only at phase changes: a canary advancing 10, 20, 30% kept its start time.
    let stamps = |sim: &Sim, from: usize| -> Vec<Option<serin_core::Timestamp>> {
        sim.log[from..]
            .iter()
            .map(|t| t.transition.status.last_transition_time)
            .collect()
    };
    let mut sim = Sim::initialized(Plan::test().threshold(5));
    sim.deploy("rev-b");
    let from = sim.log.len();
    assert_eq!(
        sim.run(3),
        vec![(Progressing, 0), (Progressing, 10), (Progressing, 20)]
    );
    let times: Vec<_> = sim.log[from..].iter().map(|t| Some(t.at)).collect();
    assert_eq!(stamps(&sim, from), times, "each step stamps its tick");
    // A failed check moves it too, at an unchanged weight.
    sim.checks(vec![success_rate(91.5)]);
    let from = sim.log.len();
    assert_eq!(sim.run(1), vec![(Progressing, 20)]);
    assert_eq!(sim.status.failed_checks, 1);
    assert_eq!(stamps(&sim, from), vec![Some(sim.log[from].at)]);

    // Blue/Green: every passed iteration.
    let mut sim = Sim::initialized(Plan::test().blue_green(3));
    sim.deploy("rev-b");
    sim.run(2);
    let from = sim.log.len();
    sim.run(1);
    assert_eq!(sim.status.iterations, 2);
    assert_eq!(stamps(&sim, from), vec![Some(sim.log[from].at)]);

    // Nothing moving, nothing stamped.
    let mut sim = Sim::initialized(Plan::test());
    let before = sim.status.last_transition_time;
    sim.run(3);
    assert_eq!(sim.status.last_transition_time, before);
}

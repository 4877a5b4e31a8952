//! The generic driver with in-memory adapters: a window is judged only once the new weight is in
//! force, the status is saved only after every action succeeded, and a failing action leaves the
//! persisted status untouched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serin_controller::adapters::*;
use serin_controller::alerts::Alert;
use serin_controller::driver::{Driver, DriverError, TickOutcome};
use serin_controller::metrics::Metrics;
use serin_core::sim::Sim;
use serin_core::{
    Bound, CheckResult, Command, EventType, HistoryEntry, Phase, Readiness, Routes, Status,
    TargetState, Timestamp, Verdict,
};

#[derive(Default)]
struct World {
    in_force: bool,
    fail_routes: bool,
    routes: Vec<Routes>,
    checks_run: u32,
    saved: Vec<Status>,
    history: Vec<HistoryEntry>,
    events: Vec<String>,
    /// Every event as recorded: type and message.
    event_log: Vec<(EventType, String)>,
    fail_checks: bool,
    /// The target reads as scaled up but with no replica available (after a revert).
    target_never_ready: bool,
    /// The target is gone (deleted with its Canary: `kubectl delete -f app.yaml`).
    target_gone: bool,
    /// The reverts, in the order they came.
    reverts: Vec<&'static str>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

#[async_trait]
impl Workloads for Fake {
    async fn observe(&self, _c: &CanaryContext) -> Result<WorkloadState, AdapterError> {
        Ok(WorkloadState {
            target: Some(TargetState {
                revision: "r2".into(),
                configs: BTreeMap::new(),
            }),
            primary: Some(Readiness::ready(2)),
            canary: if self.0.lock().unwrap().target_gone {
                None
            } else {
                Some(if self.0.lock().unwrap().target_never_ready {
                    Readiness::starting(2, 0)
                } else {
                    Readiness::ready(2)
                })
            },
        })
    }
    async fn initialize_primary(&self, _c: &CanaryContext) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn scale_canary_to_zero(&self, _c: &CanaryContext) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn scale_canary_up(&self, _c: &CanaryContext) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn promote(&self, _c: &CanaryContext, _r: &str) -> Result<(), AdapterError> {
        Ok(())
    }
    async fn revert(&self, _c: &CanaryContext) -> Result<(), AdapterError> {
        self.0.lock().unwrap().reverts.push("workloads");
        Ok(())
    }
}

#[async_trait]
impl Router for Fake {
    async fn set_routes(&self, _c: &CanaryContext, routes: &Routes) -> Result<(), AdapterError> {
        let mut w = self.0.lock().unwrap();
        if w.fail_routes {
            return Err(AdapterError::new(
                ErrorKind::Conflict,
                "setting routes",
                "409",
            ));
        }
        w.routes.push(routes.clone());
        w.in_force = false;
        Ok(())
    }
    async fn in_force(&self, _c: &CanaryContext, _r: &Routes) -> Result<bool, AdapterError> {
        Ok(self.0.lock().unwrap().in_force)
    }
    async fn revert(&self, _c: &CanaryContext) -> Result<(), AdapterError> {
        self.0.lock().unwrap().reverts.push("routes");
        Ok(())
    }
}

#[async_trait]
impl Analyzer for Fake {
    async fn run_checks(
        &self,
        _c: &CanaryContext,
        _s: &Status,
    ) -> Result<Vec<CheckResult>, AdapterError> {
        let mut w = self.0.lock().unwrap();
        w.checks_run += 1;
        let (verdict, value) = if w.fail_checks {
            (Verdict::Fail, 90.0)
        } else {
            (Verdict::Pass, 100.0)
        };
        Ok(vec![CheckResult {
            name: "request-success-rate".into(),
            verdict,
            value: Some(value),
            bound: Bound {
                min: Some(99.0),
                max: None,
            },
            samples: Some(500),
            detail: String::new(),
        }])
    }
}

#[async_trait]
impl Store for Fake {
    async fn load(&self, _id: &CanaryId) -> Result<Option<Status>, AdapterError> {
        Ok(self.0.lock().unwrap().saved.last().cloned())
    }
    async fn save(
        &self,
        _c: &CanaryContext,
        s: &Status,
        h: &[HistoryEntry],
    ) -> Result<(), AdapterError> {
        let mut w = self.0.lock().unwrap();
        w.saved.push(s.clone());
        w.history.extend_from_slice(h);
        Ok(())
    }
    async fn pending_commands(&self, _id: &CanaryId) -> Result<Vec<Command>, AdapterError> {
        Ok(vec![])
    }
}

#[async_trait]
impl Notifier for Fake {
    async fn alert(&self, _c: &CanaryContext, _a: &Alert) {}
}

#[async_trait]
impl EventRecorder for Fake {
    async fn event(&self, _c: &CanaryContext, k: EventType, reason: &str, m: &str) {
        let mut w = self.0.lock().unwrap();
        w.events.push(reason.to_string());
        w.event_log.push((k, m.to_string()));
    }
}

fn setup() -> (Driver, Fake, CanaryContext, Status, Timestamp) {
    let plan = crate::common::canary_plan(vec![10, 20, 30], 2, vec!["request-success-rate".into()]);
    // The status a controller would hold at weight 10.
    let mut sim = Sim::new(
        plan.clone(),
        "r1",
        Timestamp::from_millis(1_700_000_000_000),
    );
    sim.world.checks = vec![CheckResult {
        name: "request-success-rate".into(),
        verdict: Verdict::Pass,
        value: Some(100.0),
        bound: Bound::default(),
        samples: None,
        detail: String::new(),
    }];
    assert!(sim.tick_until(20, |s| s.phase == Phase::Initialized));
    sim.deploy("r2");
    assert!(sim.tick_until(20, |s| s.phase == Phase::Progressing
        && s.canary_weight == 10));
    let fake = Fake::default();
    fake.0.lock().unwrap().saved.push(sim.status.clone());
    let driver = Driver {
        workloads: Arc::new(fake.clone()),
        router: Arc::new(fake.clone()),
        analyzer: Arc::new(fake.clone()),
        hooks: Arc::new(serin_controller::testing::AcceptingHooks),
        store: Arc::new(fake.clone()),
        notifier: Arc::new(fake.clone()),
        events: Arc::new(fake.clone()),
        metrics: Arc::new(Metrics::new()),
        schedule: Arc::default(),
    };
    let ctx = CanaryContext::new(CanaryId::new("test", "podinfo"), plan, "podinfo");
    (driver, fake, ctx, sim.status.clone(), sim.now)
}

#[tokio::test]
async fn a_window_is_judged_only_once_the_new_weight_is_in_force() {
    let (driver, fake, ctx, _, at) = setup();
    let now = at + Duration::from_secs(60);
    // The weight-10 route is not in force on every proxy yet.
    fake.0.lock().unwrap().in_force = false;
    let out = driver.tick(&ctx, false, now).await.unwrap();
    assert!(
        matches!(out, TickOutcome::WaitingForRoutes { .. }),
        "{out:?}"
    );
    assert_eq!(out.requeue_after(now), Some(Duration::from_secs(2)));
    {
        let w = fake.0.lock().unwrap();
        assert_eq!(w.checks_run, 0, "no judging while two weights mix");
        assert_eq!(w.saved.len(), 1, "nothing saved");
    }
    fake.0.lock().unwrap().in_force = true;
    let out = driver
        .tick(&ctx, false, now + Duration::from_secs(2))
        .await
        .unwrap();
    let TickOutcome::Stepped { status, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(status.canary_weight, 20);
    let w = fake.0.lock().unwrap();
    assert_eq!(w.checks_run, 1);
    assert_eq!(w.routes.last().unwrap().canary_weight, 20);
    assert!(w.events.contains(&"Advanced".to_string()), "{:?}", w.events);
    assert!(!w.history.is_empty(), "history saved with the status");
}

#[tokio::test]
async fn a_proxy_that_never_catches_up_does_not_stall_the_rollout_forever() {
    let (driver, fake, ctx, _, at) = setup();
    fake.0.lock().unwrap().in_force = false;
    // Two intervals after the last tick, the driver judges anyway.
    let out = driver
        .tick(&ctx, false, at + Duration::from_secs(121))
        .await
        .unwrap();
    assert!(matches!(out, TickOutcome::Stepped { .. }), "{out:?}");
}

#[tokio::test]
async fn a_failing_action_saves_nothing_so_the_next_tick_decides_again() {
    let (driver, fake, ctx, before, at) = setup();
    {
        let mut w = fake.0.lock().unwrap();
        w.in_force = true;
        w.fail_routes = true;
    }
    let err = driver
        .tick(&ctx, false, at + Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DriverError::Act {
                action: "set-routes",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let w = fake.0.lock().unwrap();
    assert_eq!(w.saved.len(), 1);
    assert_eq!(w.saved[0], before);
}

#[tokio::test]
async fn nothing_happens_before_the_interval() {
    let (driver, fake, ctx, _, at) = setup();
    let out = driver
        .tick(&ctx, false, at + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        out.requeue_after(at + Duration::from_secs(10)),
        Some(Duration::from_secs(50))
    );
    assert_eq!(fake.0.lock().unwrap().checks_run, 0);
}

/// The driver and the status of a Canary that promoted `r2` and has nothing left to do.
fn settled() -> (Driver, Fake, CanaryContext, Status, Timestamp) {
    let (driver, fake, ctx, _, _) = setup();
    let mut sim = Sim::new(
        ctx.plan.clone(),
        "r2",
        Timestamp::from_millis(1_700_000_000_000),
    );
    assert!(sim.tick_until(20, |s| s.phase == Phase::Initialized));
    let mut w = fake.0.lock().unwrap();
    w.saved = vec![sim.status.clone()];
    w.in_force = true;
    drop(w);
    (driver, fake, ctx, sim.status.clone(), sim.now)
}

#[tokio::test]
async fn an_idle_canarys_due_tick_writes_nothing_and_the_next_is_still_an_interval_later() {
    let (driver, fake, ctx, persisted, at) = settled();
    let first = at + Duration::from_secs(60);
    let out = driver.tick(&ctx, false, first).await.unwrap();
    assert!(matches!(out, TickOutcome::Unchanged { .. }), "{out:?}");
    assert_eq!(out.requeue_after(first), Some(Duration::from_secs(60)));
    {
        let w = fake.0.lock().unwrap();
        assert_eq!(w.saved, vec![persisted.clone()], "no write");
        assert!(w.history.is_empty() && w.events.is_empty() && w.routes.is_empty());
    }
    assert_eq!(
        driver.schedule.len(),
        1,
        "the tick's time is kept in memory"
    );
    // Ten seconds later nothing is due: the tick above counts although it was not written.
    let out = driver
        .tick(&ctx, false, first + Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(out, TickOutcome::Idle { .. }), "{out:?}");
    assert_eq!(
        out.requeue_after(first + Duration::from_secs(10)),
        Some(Duration::from_secs(50))
    );
    // An hour of intervals: still not one write.
    for i in 1..=60 {
        let out = driver
            .tick(&ctx, false, first + Duration::from_secs(60 * i))
            .await
            .unwrap();
        assert!(matches!(out, TickOutcome::Unchanged { .. }), "{out:?}");
    }
    assert_eq!(fake.0.lock().unwrap().saved.len(), 1);
}

#[tokio::test]
async fn a_restarted_controller_reads_the_persisted_tick_time_and_still_writes_nothing_idle() {
    let (driver, fake, ctx, persisted, at) = settled();
    let now = at + Duration::from_secs(90);
    driver.tick(&ctx, false, now).await.unwrap();
    // A new process: same adapters, no memory of the unwritten tick.
    let restarted = Driver {
        schedule: Arc::default(),
        ..driver.clone()
    };
    let later = now + Duration::from_secs(10);
    let out = restarted.tick(&ctx, false, later).await.unwrap();
    // The persisted time is older, so its first tick is due at once; it changes nothing.
    assert!(matches!(out, TickOutcome::Unchanged { .. }), "{out:?}");
    assert_eq!(out.requeue_after(later), Some(Duration::from_secs(60)));
    assert_eq!(fake.0.lock().unwrap().saved, vec![persisted]);
}

#[tokio::test]
async fn a_write_by_anyone_else_replaces_the_remembered_tick_time() {
    let (driver, fake, ctx, persisted, at) = settled();
    let first = at + Duration::from_secs(60);
    driver.tick(&ctx, false, first).await.unwrap();
    // Another replica ticked and wrote (a later time) meanwhile.
    let theirs = first + Duration::from_secs(30);
    fake.0.lock().unwrap().saved.push(Status {
        last_tick_at: Some(theirs),
        ..persisted
    });
    let out = driver
        .tick(&ctx, false, first + Duration::from_secs(70))
        .await
        .unwrap();
    // Due 60s after their tick, not after ours.
    assert!(matches!(out, TickOutcome::Idle { .. }), "{out:?}");
    assert_eq!(
        out.requeue_after(first + Duration::from_secs(70)),
        Some(Duration::from_secs(20))
    );
}

#[tokio::test]
async fn a_tick_that_changes_the_status_writes_it_with_its_time() {
    let (driver, fake, ctx, _, at) = settled();
    let first = at + Duration::from_secs(60);
    driver.tick(&ctx, false, first).await.unwrap();
    assert_eq!(driver.schedule.len(), 1);
    // A new revision: the run starts, and the written status carries the tick's time.
    let mut ctx = ctx;
    ctx.target_changed = true;
    let later = first + Duration::from_secs(5);
    // The fake target runs r2, the promoted revision; the status must know another one.
    {
        let mut w = fake.0.lock().unwrap();
        let s = w.saved.last_mut().unwrap();
        s.last_applied_spec = Some("r1".into());
        s.last_promoted_spec = Some("r1".into());
    }
    let out = driver.tick(&ctx, false, later).await.unwrap();
    let TickOutcome::Stepped { status, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(status.phase, Phase::Progressing);
    let w = fake.0.lock().unwrap();
    assert_eq!(w.saved.len(), 2);
    assert_eq!(w.saved[1].last_tick_at, Some(later));
    assert!(driver.schedule.is_empty(), "the written time counts now");
}

/// Hooks that answer as [`serin_controller::testing::AcceptingHooks`] does (200, first
/// attempt) and keep what each call was given besides the payload's fixed fields.
/// The setup with an event webhook answered by `hooks`, routes in force.
fn with_event_webhook<H: Hooks + Clone + 'static>(
    hooks: &H,
) -> (Driver, Fake, CanaryContext, Timestamp) {
    let (mut driver, fake, mut ctx, _, at) = setup();
    ctx.plan.webhooks.push(serin_core::Webhook {
        name: "events".into(),
        kind: serin_core::WebhookKind::Event,
    });
    driver.hooks = Arc::new(hooks.clone());
    fake.0.lock().unwrap().in_force = true;
    (driver, fake, ctx, at)
}

#[derive(Clone, Default)]
struct RecordingHooks(Arc<Mutex<Vec<HookCall>>>);

/// A hook's name and the metadata the driver added to its payload.
type HookCall = (String, BTreeMap<String, String>);

#[async_trait]
impl Hooks for RecordingHooks {
    async fn call(
        &self,
        canary: &CanaryContext,
        webhook: &serin_core::Webhook,
        phase: Phase,
        checksum: &str,
        extra: BTreeMap<String, String>,
    ) -> serin_controller::webhook::WebhookOutcome {
        self.0
            .lock()
            .unwrap()
            .push((webhook.name.clone(), extra.clone()));
        serin_controller::testing::AcceptingHooks
            .call(canary, webhook, phase, checksum, extra)
            .await
    }
}

#[tokio::test]
async fn an_event_webhook_gets_the_type_of_the_event_it_mirrors() {
    let hooks = RecordingHooks::default();
    let (driver, fake, ctx, at) = with_event_webhook(&hooks);
    // A passing window (Normal events), then failing ones (Warning events) until rollback.
    let mut now = at + Duration::from_secs(60);
    driver.tick(&ctx, false, now).await.unwrap();
    fake.0.lock().unwrap().fail_checks = true;
    for _ in 0..3 {
        now = now + Duration::from_secs(60);
        driver.tick(&ctx, false, now).await.unwrap();
    }
    let w = fake.0.lock().unwrap();
    let calls = hooks.0.lock().unwrap();
    assert!(
        w.event_log.iter().any(|(k, _)| *k == EventType::Warning),
        "the scenario has Warning events: {:?}",
        w.event_log
    );
    assert_eq!(calls.len(), w.event_log.len(), "one call per event");
    for ((kind, message), (hook, extra)) in w.event_log.iter().zip(calls.iter()) {
        assert_eq!(hook, "events");
        assert_eq!(extra["eventMessage"], *message);
        let want = match kind {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        assert_eq!(extra["eventType"], want, "event {message:?}");
    }
}

/// The value of one series of the driver's `/metrics`, by its name and labels as rendered.
fn metric(driver: &Driver, series: &str) -> Option<f64> {
    driver
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_checks_first_failure_is_an_increase_prometheus_can_see() {
    let (driver, fake, ctx, _, at) = setup();
    fake.0.lock().unwrap().in_force = true;
    driver
        .tick(&ctx, false, at + Duration::from_secs(60))
        .await
        .unwrap();
    // The check passed; its `fail` and `inconclusive` series exist at 0 already, so the first
    // failure reads as an increase of 1 ("failed checks"), not as a series born at 1.
    let check = r#"serin_canary_check_verdicts_total{name="podinfo",namespace="test",metric="request-success-rate""#;
    for (verdict, n) in [("pass", 1.0), ("fail", 0.0), ("inconclusive", 0.0)] {
        assert_eq!(
            metric(&driver, &format!("{check},verdict=\"{verdict}\"}}")),
            Some(n),
            "{verdict}\n{}",
            driver.metrics.encode()
        );
    }
    // Likewise the rollout-duration histogram, before any rollout ended.
    assert_eq!(
        metric(
            &driver,
            r#"serin_canary_duration_seconds_count{name="podinfo",namespace="test"}"#
        ),
        Some(0.0),
        "{}",
        driver.metrics.encode()
    );
}

#[tokio::test]
async fn each_weight_step_is_progress_so_a_long_healthy_analysis_is_not_stuck() {
    let (driver, fake, ctx, _, at) = setup();
    fake.0.lock().unwrap().in_force = true;
    let now = at + Duration::from_secs(60);
    let out = driver.tick(&ctx, false, now).await.unwrap();
    let TickOutcome::Stepped { status, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(status.canary_weight, 20);
    assert_eq!(status.phase, Phase::Progressing);
    // Still Progressing since the rollout began, but it stepped now: `SerinCanaryStuck` measures
    // from here, as Flagger's lastTransitionTime does.
    assert_eq!(
        metric(
            &driver,
            r#"serin_canary_last_transition_timestamp_seconds{name="podinfo",namespace="test"}"#
        ),
        Some(now.as_millis() as f64 / 1000.0),
        "{}",
        driver.metrics.encode()
    );
}

#[tokio::test]
async fn a_canary_says_which_workload_and_services_carry_its_traffic() {
    let (driver, fake, mut ctx, _, at) = setup();
    // A Canary named apart from its target, as Flagger allows: dashboards select the weights
    // by the target's name and the proxies' series by the services', never by the Canary's.
    ctx.target = "podinfo-app".into();
    fake.0.lock().unwrap().in_force = true;
    driver
        .tick(&ctx, false, at + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        metric(
            &driver,
            r#"serin_canary_info{name="podinfo",namespace="test",target="podinfo-app",primary_service="podinfo-app-primary",canary_service="podinfo-app-canary"}"#
        ),
        Some(1.0),
        "{}",
        driver.metrics.encode()
    );
    assert_eq!(
        metric(
            &driver,
            r#"serin_canary_weight{workload="podinfo-app",namespace="test"}"#
        ),
        Some(20.0)
    );
}

/// Hooks whose receiver never answers: each call costs its whole timeout.
#[derive(Clone, Default)]
struct SilentHooks(Arc<Mutex<u32>>);

#[async_trait]
impl Hooks for SilentHooks {
    async fn call(
        &self,
        _canary: &CanaryContext,
        _webhook: &serin_core::Webhook,
        _phase: Phase,
        _checksum: &str,
        _extra: BTreeMap<String, String>,
    ) -> serin_controller::webhook::WebhookOutcome {
        *self.0.lock().unwrap() += 1;
        serin_controller::webhook::WebhookOutcome {
            ok: false,
            status: None,
            body: String::new(),
            error: Some("no response within 10s".into()),
            attempts: 1,
            elapsed_ms: 10_000,
        }
    }
}

#[tokio::test]
async fn an_event_receiver_that_does_not_answer_costs_one_timeout_per_tick_not_one_per_event() {
    let hooks = SilentHooks::default();
    let (driver, fake, ctx, at) = with_event_webhook(&hooks);
    let mut now = at;
    let mut busiest = 0;
    // A passing window, then failing ones until the rollback, which emits several events.
    for i in 0..6 {
        fake.0.lock().unwrap().fail_checks = i > 0;
        now = now + Duration::from_secs(60);
        let events_before = fake.0.lock().unwrap().event_log.len();
        let calls_before = *hooks.0.lock().unwrap();
        driver.tick(&ctx, false, now).await.unwrap();
        let events = fake.0.lock().unwrap().event_log.len() - events_before;
        let calls = (*hooks.0.lock().unwrap() - calls_before) as usize;
        busiest = busiest.max(events);
        assert_eq!(
            calls,
            events.min(1),
            "{events} events in this tick; a receiver that did not answer is not called again in the same tick"
        );
    }
    assert!(busiest >= 2, "the scenario has a tick with several events");
    let w = fake.0.lock().unwrap();
    assert!(
        w.history.iter().any(|h| h
            .message
            .contains("event webhook \"events\" was not delivered")),
        "the failure is in the history"
    );
}

/// revertOnDeletion hands the target back before the traffic. A target that is not ready is
/// looked at again in later ticks (nothing is saved meanwhile, nothing sleeps in a tick), for
/// Flagger's bounded wait (45 s with a one-minute interval) counted from the deletion; then
/// the traffic goes back to it anyway, and the history says so.
#[tokio::test]
async fn a_reverted_target_that_never_gets_ready_gets_the_traffic_after_the_bounded_wait() {
    let (driver, fake, mut ctx, _, at) = setup();
    ctx.plan.revert_on_deletion = true;
    ctx.deleting_since = Some(at);
    fake.0.lock().unwrap().target_never_ready = true;
    let saved = fake.0.lock().unwrap().saved.len();
    for after in [0, 2, 44] {
        let out = driver
            .tick(&ctx, true, at + Duration::from_secs(after))
            .await
            .unwrap();
        let TickOutcome::WaitingForTarget { retry, missing } = out else {
            panic!("{out:?}");
        };
        assert_eq!(retry, Duration::from_secs(2));
        assert!(missing.contains("0 of 2"), "{missing}");
        let w = fake.0.lock().unwrap();
        assert_eq!(w.saved.len(), saved, "nothing saved while waiting");
        assert!(
            w.reverts.iter().all(|r| *r == "workloads"),
            "{:?}",
            w.reverts
        );
    }
    let out = driver
        .tick(&ctx, true, at + Duration::from_secs(45))
        .await
        .unwrap();
    assert!(matches!(out, TickOutcome::Stepped { .. }), "{out:?}");
    let w = fake.0.lock().unwrap();
    assert_eq!(
        w.reverts.last(),
        Some(&"routes"),
        "the traffic goes back last"
    );
    let note = w
        .history
        .iter()
        .find(|h| h.message.contains("was not ready after the revert wait"))
        .unwrap_or_else(|| panic!("no history entry says so: {:#?}", w.history));
    assert!(note.message.contains("0 of 2"), "{}", note.message);
    assert_eq!(w.saved.last().unwrap().phase, Phase::Terminating);
}

#[tokio::test]
async fn a_reverted_target_that_is_ready_gets_the_traffic_at_once() {
    let (driver, fake, mut ctx, _, at) = setup();
    ctx.plan.revert_on_deletion = true;
    ctx.deleting_since = Some(at);
    let out = driver
        .tick(&ctx, true, at + Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(out, TickOutcome::Stepped { .. }), "{out:?}");
    let w = fake.0.lock().unwrap();
    assert_eq!(w.reverts, ["workloads", "routes"]);
    assert!(
        !w.history.iter().any(|h| h.message.contains("revert wait")),
        "{:#?}",
        w.history
    );
}

/// A target deleted with its Canary (one `kubectl delete -f`, a namespace deletion) will never
/// become ready: the deletion does not wait for it.
#[tokio::test(start_paused = true)]
async fn a_reverted_target_that_is_gone_is_not_waited_for() {
    let (driver, fake, mut ctx, _, at) = setup();
    ctx.plan.revert_on_deletion = true;
    ctx.deleting_since = Some(at);
    fake.0.lock().unwrap().target_gone = true;
    let out = driver
        .tick(&ctx, true, at + Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        matches!(out, TickOutcome::Stepped { .. }),
        "no wait for a target that is gone: {out:?}"
    );
    assert_eq!(fake.0.lock().unwrap().reverts, ["workloads", "routes"]);
}

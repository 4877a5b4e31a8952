//! At scale: a reconcile reads targets, primaries and Services from what the watches hold (no
//! GET), applies nothing whose watched copy is already as applied, writes the status only when
//! something changed, and a workload becoming ready moves the Canary at once.

use std::sync::atomic::{AtomicI64, Ordering};

use super::fixtures::*;
use serin_kube::watch::{Stores, canaries_to_wake};

/// The watches' stores holding `deployments` and `services` (as JSON objects).
fn stores(deployments: Vec<Value>, services: Vec<Value>) -> Stores {
    Stores::of(
        deployments
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect(),
        vec![],
        services
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect(),
    )
}

/// One controller (one Context, watching through `stores`) whose clock the test sets, and the
/// fake API server it talks to.
struct Controller {
    ctx: Arc<Context>,
    clock: Arc<AtomicI64>,
    handle: Option<Handle>,
}

impl Controller {
    fn new(stores: Stores) -> Self {
        let (client, handle) = mock_client(NS);
        let clock = Arc::new(AtomicI64::new(T0));
        let mut cfg = config(Timestamp::from_millis(T0), analyzer(vec![pass()]), None);
        let c = clock.clone();
        cfg.clock = Arc::new(move || Timestamp::from_millis(c.load(Ordering::SeqCst)));
        let ctx = Context::new(client, cfg, Arc::new(Metrics::new())).with_stores(stores);
        Self {
            ctx: Arc::new(ctx),
            clock,
            handle: Some(handle),
        }
    }

    /// One reconcile of `canary` at `now` that must make exactly `calls`.
    async fn reconcile(&mut self, canary: &Value, now: Timestamp, calls: Vec<Expect>) -> Requeue {
        self.clock.store(now.as_millis(), Ordering::SeqCst);
        let server = tokio::spawn(play(self.handle.take().unwrap(), calls));
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            reconcile(parse(canary.clone()), self.ctx.clone()),
        )
        .await
        .expect("reconcile did not finish within 10s");
        let mut handle = server.await.expect("scenario failed");
        assert_no_more_calls(&mut handle).await;
        self.handle = Some(handle);
        result.unwrap()
    }

    /// One reconcile at `now` that must make no call, without the window for late calls after
    /// it: a call it makes itself would never be answered (the reconcile times out), and one
    /// left to a spawned task stays queued at the fake API server for the caller's one
    /// `assert_no_more_calls` after a series of such ticks (one window instead of one per tick).
    async fn reconcile_making_no_call(&mut self, canary: &Value, now: Timestamp) {
        self.clock.store(now.as_millis(), Ordering::SeqCst);
        tokio::time::timeout(
            Duration::from_secs(10),
            reconcile(parse(canary.clone()), self.ctx.clone()),
        )
        .await
        .expect("reconcile did not finish within 10s (it made a call nobody answers)")
        .unwrap();
    }
}

/// An expected call whose body is kept in `into` (what the API server then stores).
fn keep(e: Expect, into: &Arc<Mutex<Vec<Value>>>) -> Expect {
    let into = into.clone();
    e.also(move |b| into.lock().unwrap().push(b.clone()))
}

/// `canary` carrying the status in a status write's body.
fn stored(canary: &Value, write: &Value) -> Value {
    let mut c = canary.clone();
    c["status"] = write["status"].clone();
    c
}

/// `canary` after its first tick: the primary applied and rolling out.
fn initializing(canary: &Value) -> Value {
    let mut sim = sim(canary);
    sim.world.primary_ready = false;
    sim.tick();
    with_status(canary.clone(), &sim.status)
}

#[tokio::test]
async fn an_idle_canarys_tick_makes_no_api_call_and_its_time_is_kept_in_memory() {
    let canary = canary("podinfo").build();
    let initializing = initializing(&canary);
    let mut c = Controller::new(stores(
        vec![
            deployment("podinfo:1").build(),
            primary("podinfo:1").build(),
        ],
        vec![],
    ));
    // The primary became ready: bootstrap finishes, reading target and primary from the
    // watches (no GET), applying the primary and Services the watches do not hold yet.
    let written = Arc::new(Mutex::new(Vec::new()));
    let t1 = Timestamp::from_millis(T0 + 60_000);
    c.reconcile(
        &initializing,
        t1,
        vec![
            apply_primary(|_| {}),
            apply_service("podinfo-primary", "podinfo-primary"),
            apply_service("podinfo-canary", "podinfo"),
            apply_service("podinfo", "podinfo-primary"),
            apply_route(100, 0),
            scale_target(0),
            event("Initialized"),
            keep(
                status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Initialized")),
                &written,
            ),
        ],
    )
    .await;
    let initialized = stored(&canary, &written.lock().unwrap()[0]);

    // Due an interval later, nothing changed: not one call.
    let t2 = t1 + Duration::from_secs(60);
    let requeue = c.reconcile(&initialized, t2, vec![]).await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(60)));
    // The unwritten tick still counts: ten seconds later the next is 50 s away, and a whole
    // hour of intervals makes no call.
    let requeue = c
        .reconcile(&initialized, t2 + Duration::from_secs(10), vec![])
        .await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(50)));
    for i in 1..=60 {
        c.reconcile_making_no_call(&initialized, t2 + Duration::from_secs(60 * i))
            .await;
    }
    assert_no_more_calls(c.handle.as_mut().unwrap()).await;
}

#[tokio::test]
async fn a_waiting_tick_applies_nothing_the_watches_hold_as_applied_and_writes_nothing() {
    let canary = canary("podinfo").build();
    let initializing = initializing(&canary);
    // The primary exists and rolls out, but the watches hold no copy stamped as Serin applies
    // it (an older controller made it, say): applied once.
    let mut c = Controller::new(stores(
        vec![
            deployment("podinfo:1").build(),
            primary("podinfo:1").not_ready().build(),
        ],
        vec![],
    ));
    let applied = Arc::new(Mutex::new(Vec::new()));
    let written = Arc::new(Mutex::new(Vec::new()));
    let t1 = Timestamp::from_millis(T0 + 60_000);
    c.reconcile(
        &initializing,
        t1,
        vec![
            keep(apply_primary(|_| {}), &applied),
            keep(
                apply_service("podinfo-primary", "podinfo-primary"),
                &applied,
            ),
            keep(apply_service("podinfo-canary", "podinfo"), &applied),
            keep(apply_service("podinfo", "podinfo-primary"), &applied),
            event("Halted"),
            keep(
                status_write(&canary, |b| {
                    assert_eq!(b["status"]["phase"], "Initializing");
                    assert_eq!(cond(b, "Synced")["status"], "True");
                }),
                &written,
            ),
        ],
    )
    .await;
    // The watches now hold what was applied (the primary still rolling out).
    let applied = applied.lock().unwrap().clone();
    let mut rolling = applied[0].clone();
    rolling["metadata"]["generation"] = json!(3);
    rolling["status"] = primary("podinfo:1").not_ready().build()["status"].clone();
    assert!(
        rolling["metadata"]["annotations"]["serin.dev/applied"].is_string(),
        "{rolling}"
    );
    let mut services = applied[1..].to_vec();
    for s in &mut services {
        s["apiVersion"] = json!("v1");
    }
    let stores_now = stores(vec![deployment("podinfo:1").build(), rolling], services);
    let mut c2 = Controller::new(stores_now);
    let waiting = stored(&canary, &written.lock().unwrap()[0]);
    // The next interval: still waiting for the primary; nothing to apply, nothing to write.
    let requeue = c2
        .reconcile(&waiting, t1 + Duration::from_secs(60), vec![])
        .await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(60)));
}

#[tokio::test]
async fn pods_becoming_ready_wake_the_canary_and_it_moves_at_once() {
    let canary = canary("podinfo").build();
    // A new revision started a run: the canary is scaling up, its analysis not begun.
    let (status, at) = status_where(
        &canary,
        |sim| sim.world.canary_ready = false,
        |s| s.phase == Phase::Progressing,
    );
    assert_eq!(status.canary_weight, 0);
    let waiting = with_status(canary.clone(), &status);
    // The target's status changes (its pods are ready; same template): the watch wakes the
    // Canary waiting for it, and no settled Canary.
    let template = |image: &str| {
        let d: Deployment = serde_json::from_value(deployment(image).build()).unwrap();
        d.spec.unwrap().template
    };
    let woken = canaries_to_wake(
        &[parse(waiting.clone())],
        serin_api::TargetKind::Deployment,
        NS,
        "podinfo",
        &[],
        Some(&template("podinfo:2")),
    );
    assert_eq!(
        woken.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["podinfo"]
    );
    let mut settled = status.clone();
    settled.phase = Phase::Succeeded;
    settled.last_applied_spec = Some(revision("podinfo:2"));
    let settled = with_status(canary.clone(), &settled);
    assert!(
        canaries_to_wake(
            &[parse(settled)],
            serin_api::TargetKind::Deployment,
            NS,
            "podinfo",
            &[],
            Some(&template("podinfo:2")),
        )
        .is_empty()
    );
    // The woken reconcile, 5 s after the last tick (the next is 55 s away): the first step
    // now, with no check judged.
    let mut c = Controller::new(stores(
        vec![
            deployment("podinfo:2").build(),
            primary("podinfo:1").build(),
        ],
        vec![],
    ));
    c.reconcile(
        &waiting,
        at + Duration::from_secs(5),
        vec![
            event("Started"),
            apply_route(90, 10),
            event("Advanced"),
            status_write(&canary, |b| {
                assert_eq!(b["status"]["phase"], "Progressing");
                assert_eq!(b["status"]["canaryWeight"], 10);
                assert_eq!(b["status"]["failedChecks"], 0);
            }),
        ],
    )
    .await;
}

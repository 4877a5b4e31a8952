//! A run of a new revision: weights rise tick by tick, the primary is promoted at the top, failed
//! checks roll back.

use super::fixtures::*;

#[tokio::test]
async fn a_passing_tick_raises_the_weight() {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let a = analyzer(vec![pass()]);
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Progressing");
            assert_eq!(b["status"]["canaryWeight"], 20);
            assert_eq!(b["status"]["failedChecks"], 0);
            let hist = b["status"]["serin"]["history"].as_array().unwrap();
            let last = hist.last().unwrap();
            assert_eq!(
                last["checks"][0]["value"], 99.9,
                "the history shows the measured value: {last}"
            );
        }),
    ];
    let (result, _) = run(parse(canary), now, a.clone(), calls).await;
    result.unwrap();
    assert_eq!(*a.calls.lock().unwrap(), 1, "checks run once per tick");
}

#[tokio::test]
async fn a_tick_before_the_interval_does_nothing() {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(20);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), vec![]).await;
    // Not due: no API call at all, requeued for the rest of the interval.
    assert_eq!(result.unwrap(), Requeue::requeue(Duration::from_secs(40)));
}

#[tokio::test]
async fn a_tick_that_starts_after_its_due_time_is_counted_as_late() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let clock = Arc::new(AtomicI64::new((at + Duration::from_secs(20)).as_millis()));
    let mut config = config(at, analyzer(vec![pass()]), Some("serin-controller-0"));
    let c = clock.clone();
    config.clock = Arc::new(move || Timestamp::from_millis(c.load(Ordering::SeqCst)));
    let metrics = Arc::new(Metrics::new());
    let (client, handle) = mock_client(NS);
    let ctx = Arc::new(Context::new(client, config, metrics.clone()));
    let lateness = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("serin_controller_tick_lateness_seconds_"))
            .filter(|l| l.contains("_count") || l.contains("_sum"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // Not due: requeued for the rest of the interval; nothing was due before, nothing is late.
    let server = tokio::spawn(play(handle, vec![]));
    let requeue = reconcile(parse(canary.clone()), ctx.clone()).await.unwrap();
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(40)));
    let handle = server.await.unwrap();
    assert_eq!(
        lateness(&metrics.encode()),
        [
            "serin_controller_tick_lateness_seconds_sum 0.0",
            "serin_controller_tick_lateness_seconds_count 0"
        ]
    );

    // The queue comes back to it 3 s after the tick was due (a backed-up queue, a slow API
    // server): the tick runs, and its lateness is observed once.
    clock.store((at + Duration::from_secs(63)).as_millis(), Ordering::SeqCst);
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, |_| {}),
    ];
    let server = tokio::spawn(play(handle, calls));
    reconcile(parse(canary), ctx.clone()).await.unwrap();
    let mut handle = server.await.unwrap();
    assert_no_more_calls(&mut handle).await;
    assert_eq!(
        lateness(&metrics.encode()),
        [
            "serin_controller_tick_lateness_seconds_sum 3.0",
            "serin_controller_tick_lateness_seconds_count 1"
        ]
    );
}

#[tokio::test]
async fn reaching_max_weight_promotes_the_canary_template_to_the_primary() {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 30);
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let mut calls = promoting(|b| {
        assert_eq!(
            b["spec"]["replicas"], 3,
            "the primary keeps its replica count"
        );
    });
    calls.extend([
        event("Promoting"),
        status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Promoting")),
    ]);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
}

#[tokio::test]
async fn failed_checks_at_the_threshold_roll_back() {
    let canary = canary("podinfo").build();
    let (status, at) = status_where(
        &canary,
        |sim| sim.world.checks = vec![fail()],
        |s| s.phase == Phase::Progressing && s.failed_checks == 1,
    );
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let calls = rolling_back(&canary, |b| {
        assert_eq!(b["status"]["phase"], "Failed");
        assert_eq!(b["status"]["canaryWeight"], 0);
        assert_eq!(b["status"]["failedChecks"], 2);
        assert_eq!(cond(b, "Promoted")["status"], "False");
    });
    let (result, _) = run(parse(canary), now, analyzer(vec![fail()]), calls).await;
    result.unwrap();
}

#[tokio::test]
async fn a_restart_in_promoting_does_not_promote_twice() {
    let canary = canary("podinfo").build();
    let (status, at) = status_where(&canary, |_| {}, |s| s.phase == Phase::Promoting);
    assert!(
        status.run.as_ref().unwrap().promotion.is_some(),
        "the engine marks the promotion done"
    );
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    // The primary already runs the new template but is still rolling out: no second copy of
    // the template, just waiting.
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:2").not_ready()),
        event("Halted"),
        status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Promoting")),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
}

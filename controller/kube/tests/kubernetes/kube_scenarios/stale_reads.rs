//! The watch's copy of a Canary lags the controller's own writes: a reconcile that gets a copy
//! older than its last status write works from what it wrote, and does not redo the step.

use std::sync::atomic::{AtomicI64, Ordering};

use super::fixtures::*;

/// One Context (one controller) over a fake API server, reconciling at the times the test sets.
async fn reconcile_at(
    ctx: &Arc<Context>,
    clock: &AtomicI64,
    handle: Handle,
    canary: &Value,
    now: Timestamp,
    calls: Vec<Expect>,
) -> (Requeue, Handle) {
    clock.store(now.as_millis(), Ordering::SeqCst);
    let server = tokio::spawn(play(handle, calls));
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        reconcile(parse(canary.clone()), ctx.clone()),
    )
    .await
    .expect("reconcile did not finish within 10s");
    let mut handle = server.await.expect("scenario failed");
    assert_no_more_calls(&mut handle).await;
    (result.unwrap(), handle)
}

#[tokio::test]
async fn a_requeue_reading_a_status_older_than_our_write_does_not_redo_the_step() {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let mut watched = with_status(canary.clone(), &status);
    watched["metadata"]["resourceVersion"] = json!("11");
    let a = analyzer(vec![pass()]);
    let (client, handle) = mock_client(NS);
    let clock = Arc::new(AtomicI64::new(at.as_millis()));
    let mut cfg = config(at, a.clone(), None);
    let c = clock.clone();
    cfg.clock = Arc::new(move || Timestamp::from_millis(c.load(Ordering::SeqCst)));
    let ctx = Arc::new(Context::new(client, cfg, Arc::new(Metrics::new())));

    // The step to 20 %: our status write is stored as resourceVersion 12.
    let written = Arc::new(Mutex::new(Value::Null));
    let event_name = Arc::new(Mutex::new(String::new()));
    let n = event_name.clone();
    let keep = written.clone();
    let (_, handle) = reconcile_at(
        &ctx,
        &clock,
        handle,
        &watched,
        at + Duration::from_secs(60),
        vec![
            get_target(deployment("podinfo:2")),
            get_primary(primary("podinfo:1")),
            apply_route(80, 20),
            event("Advanced").also(move |b| {
                *n.lock().unwrap() = b["metadata"]["name"].as_str().unwrap().to_string();
            }),
            status_write(&watched, |b| assert_eq!(b["status"]["canaryWeight"], 20)).answer(
                move |body| {
                    let mut c = watched_copy(&body);
                    c["metadata"]["resourceVersion"] = json!("12");
                    *keep.lock().unwrap() = c.clone();
                    (200, c)
                },
            ),
        ],
    )
    .await;

    // A second later the watch still holds resourceVersion 11 (weight 10, last tick an interval
    // ago, so due): the reconcile works from its own write (weight 20, next tick 59 s away) and
    // makes no call: no second route write, no second look at the metrics, no second event.
    let (requeue, handle) = reconcile_at(
        &ctx,
        &clock,
        handle,
        &watched,
        at + Duration::from_secs(61),
        vec![],
    )
    .await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(59)));
    assert_eq!(*a.calls.lock().unwrap(), 1, "the checks ran once");

    // The watch catches up (resourceVersion 12): the same, from the watched copy.
    let caught_up = written.lock().unwrap().clone();
    let (requeue, handle) = reconcile_at(
        &ctx,
        &clock,
        handle,
        &caught_up,
        at + Duration::from_secs(62),
        vec![],
    )
    .await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(58)));

    // A later write by someone else (resourceVersion 13, a user set the weight back to 10, say)
    // is newer than ours: the reconcile acts on it (the same Event again, counted in its series).
    let event_name = event_name.lock().unwrap().clone();
    let mut theirs = watched.clone();
    theirs["metadata"]["resourceVersion"] = json!("13");
    let (requeue, _) = reconcile_at(
        &ctx,
        &clock,
        handle,
        &theirs,
        at + Duration::from_secs(63),
        vec![
            get_target(deployment("podinfo:2")),
            get_primary(primary("podinfo:1")),
            apply_route(80, 20),
            expect(
                "PATCH",
                format!("/apis/events.k8s.io/v1/namespaces/{NS}/events/{event_name}"),
            )
            .check(|b| assert_eq!(b["series"]["count"], 2, "{b}")),
            status_write(&theirs, |b| assert_eq!(b["status"]["canaryWeight"], 20)),
        ],
    )
    .await;
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(60)));
}

/// The Canary as the API server stores it after a status write with `body`.
fn watched_copy(body: &Value) -> Value {
    let mut c = canary("podinfo").build();
    c["status"] = body["status"].clone();
    c
}

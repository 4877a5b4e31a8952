//! Failed API calls: said on the Canary (Synced=False naming the call), retried with a backoff per
//! error kind.

use super::fixtures::*;

#[tokio::test]
async fn a_conflict_is_retried_soon_and_said_on_the_canary() {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(80, 20).reply(
            409,
            status_err(409, "Conflict", "the object has been modified"),
        ),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "Conflict");
            assert!(c["message"].as_str().unwrap().contains("httproute"), "{c}");
            // The engine state is untouched: the next tick decides again from weight 10.
            assert_eq!(b["status"]["canaryWeight"], 10);
        }),
        event("SyncFailed"),
    ];
    let c = parse(canary);
    let (result, ctx) = run(c.clone(), now, analyzer(vec![pass()]), calls).await;
    let err = result.unwrap_err();
    assert_eq!(
        error_policy(c.clone(), &err, ctx.clone()),
        Requeue::requeue(Duration::from_millis(200))
    );
    assert_eq!(
        error_policy(c, &err, ctx),
        Requeue::requeue(Duration::from_millis(400)),
        "backoff grows"
    );
}

#[tokio::test]
async fn a_forbidden_error_backs_off_and_names_the_call() {
    let canary = canary("podinfo").build();
    let calls = vec![
        get_target(deployment("podinfo:1"))
            .reply(403, status_err(403, "Forbidden", "deployments.apps \"podinfo\" is forbidden: User \"system:serviceaccount:serin:serin\" cannot get resource")),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "Forbidden");
            assert!(c["message"].as_str().unwrap().contains("reading deployment test/podinfo"), "{c}");
        }),
        // Where `kubectl get events` and `kubectl describe canary` look, as Flagger's
        // warnings are.
        event("SyncFailed").check(|b| {
            assert_eq!(b["type"], "Warning");
            assert!(b["note"].as_str().unwrap().contains("forbidden"), "{b}");
        }),
    ];
    let c = parse(canary);
    let (result, ctx) = run(
        c.clone(),
        Timestamp::from_millis(T0),
        analyzer(vec![]),
        calls,
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(
        error_policy(c, &err, ctx),
        Requeue::requeue(Duration::from_secs(30))
    );
}

#[tokio::test]
async fn the_same_failure_again_writes_nothing_and_sends_no_second_event() {
    let canary = canary("podinfo").build();
    let forbidden = || {
        get_target(deployment("podinfo:1")).reply(
            403,
            status_err(
                403,
                "Forbidden",
                "deployments.apps \"podinfo\" is forbidden",
            ),
        )
    };
    let written = Arc::new(Mutex::new(Value::Null));
    let keep = written.clone();
    let calls = vec![
        forbidden(),
        status_write(&canary, move |b| *keep.lock().unwrap() = b.clone()),
        event("SyncFailed"),
    ];
    let now = Timestamp::from_millis(T0);
    let (result, _) = run(parse(canary.clone()), now, analyzer(vec![]), calls).await;
    assert!(result.is_err());
    // The retry finds the Canary saying so already (a later second, so a write would differ).
    let mut again = canary;
    again["status"] = written.lock().unwrap()["status"].clone();
    let later = Timestamp::from_millis(T0 + 5_000);
    let (result, _) = run(parse(again), later, analyzer(vec![]), vec![forbidden()]).await;
    assert!(result.is_err(), "still failing, and backing off");
}

#[test]
fn error_kinds_map_to_backoffs() {
    use serin_kube::backoff;
    assert_eq!(backoff(ErrorKind::Conflict, 0), Duration::from_millis(200));
    assert_eq!(backoff(ErrorKind::Other, 3), Duration::from_secs(8));
    assert_eq!(backoff(ErrorKind::Forbidden, 10), Duration::from_secs(300));
}

//! Failed API calls: said on the Canary (Synced=False naming the call), retried with a backoff per
//! error kind.

use super::fixtures::*;

/// The calls of a tick at weight 10 whose route apply meets a 409 (someone wrote first).
fn conflicting_tick() -> Vec<Expect> {
    vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(80, 20).reply(
            409,
            status_err(409, "Conflict", "the object has been modified"),
        ),
    ]
}

#[tokio::test]
async fn a_lone_conflict_is_retried_soon_and_only_logged() {
    // Optimistic concurrency under contention: the next tick re-reads and goes through, so
    // neither a Synced=False write nor a Warning event (Flagger logs it and emits nothing).
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let c = parse(with_status(canary, &status));
    let now = at + Duration::from_secs(60);
    let (result, ctx) = run(c.clone(), now, analyzer(vec![pass()]), conflicting_tick()).await;
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("the object has been modified"),
        "{err}"
    );
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

/// One reconcile of `c` against exactly `calls`, which must fail within 10 s.
async fn failing_reconcile(
    c: &Arc<Canary>,
    ctx: &Arc<Context>,
    handle: Handle,
    calls: Vec<Expect>,
) -> (ReconcileError, Handle) {
    let server = tokio::spawn(play(handle, calls));
    let err = tokio::time::timeout(Duration::from_secs(10), reconcile(c.clone(), ctx.clone()))
        .await
        .expect("the reconcile finished within 10s")
        .unwrap_err();
    let mut handle = server.await.unwrap();
    assert_no_more_calls(&mut handle).await;
    (err, handle)
}

#[tokio::test]
async fn a_conflict_that_happens_again_is_said_on_the_canary_and_as_a_warning() {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let c = parse(canary.clone());
    let now = at + Duration::from_secs(60);
    let (client, handle) = mock_client(NS);
    let config = config(now, analyzer(vec![pass()]), Some("serin-controller-0"));
    let ctx = Arc::new(Context::new(client, config, Arc::new(Metrics::new())));

    // The first: logged only.
    let (err, handle) = failing_reconcile(&c, &ctx, handle, conflicting_tick()).await;
    // As the controller does after a failed reconcile.
    let _ = error_policy(c.clone(), &err, ctx.clone());

    // The same again: now the Canary says so, and so does a Warning event.
    let mut calls = conflicting_tick();
    calls.push(status_write(&canary, |b| {
        let c = cond(b, "Synced");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "Conflict");
        assert!(c["message"].as_str().unwrap().contains("httproute"), "{c}");
        // The engine state is untouched: the next tick decides again from weight 10.
        assert_eq!(b["status"]["canaryWeight"], 10);
    }));
    calls.push(event("SyncFailed").check(|b| {
        assert_eq!(b["type"], "Warning");
        assert!(
            b["note"]
                .as_str()
                .unwrap()
                .contains("the object has been modified"),
            "{b}"
        );
    }));
    let (err, _) = failing_reconcile(&c, &ctx, handle, calls).await;
    assert_eq!(
        error_policy(c, &err, ctx),
        Requeue::requeue(Duration::from_millis(400))
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

/// The answer API Priority and Fairness sheds load with: 429, `Retry-After`, and Go's
/// `http.Error` text (not a Status).
fn shed(call: Expect, retry_after: &str) -> Expect {
    call.header("Retry-After", retry_after)
        .reply_text(429, "Too many requests, please try again later.\n")
}

/// A tick of a Canary progressing at 10 whose first call (the target's read) is answered by
/// `answered`: the failure is said on the Canary (`Synced` names `says`) and returned.
async fn failed_tick(
    answered: Expect,
    says: &'static str,
) -> (Arc<Canary>, ReconcileError, Arc<Context>) {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let calls = vec![
        answered,
        status_write(&canary, move |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["status"], "False");
            let m = c["message"].as_str().unwrap();
            assert!(m.contains(says), "{m}");
        }),
        event("SyncFailed"),
    ];
    let c = parse(canary);
    let now = at + Duration::from_secs(60);
    let (result, ctx) = run(c.clone(), now, analyzer(vec![pass()]), calls).await;
    (c, result.unwrap_err(), ctx)
}

#[tokio::test]
async fn an_api_server_shedding_load_is_retried_no_sooner_than_its_retry_after() {
    let (c, err, ctx) = failed_tick(
        shed(get_target(deployment("podinfo:2")), "7"),
        "Too many requests, please try again later.",
    )
    .await;
    assert_eq!(
        serin_kube::throttle::retry_after(&err),
        Some(Duration::from_secs(7)),
        "{err:?}"
    );
    // The backoff of its kind says 1 s, 2 s, 4 s, 8 s: the server's 7 s is the floor.
    for (n, expected) in [7, 7, 7, 8].into_iter().enumerate() {
        assert_eq!(
            error_policy(c.clone(), &err, ctx.clone()),
            Requeue::requeue(Duration::from_secs(expected)),
            "failure {n}"
        );
    }
}

#[tokio::test]
async fn an_unavailable_api_server_s_retry_after_is_read_from_a_status_too_and_capped() {
    let unavailable = status_err(
        503,
        "ServiceUnavailable",
        "the server is currently unable to handle the request",
    );
    let (c, err, ctx) = failed_tick(
        get_target(deployment("podinfo:2"))
            .header("Retry-After", "3600")
            .reply(503, unavailable),
        "unable to handle the request",
    )
    .await;
    assert_eq!(
        error_policy(c, &err, ctx),
        Requeue::requeue(serin_kube::throttle::MAX_RETRY_AFTER),
        "an hour is capped at a minute"
    );
}

#[test]
fn a_retry_after_that_is_not_delta_seconds_is_ignored() {
    use serin_kube::throttle::parse_retry_after;
    let headers = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, v.parse().unwrap());
        h
    };
    assert_eq!(
        parse_retry_after(&headers("7")),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        parse_retry_after(&headers(" 2 ")),
        Some(Duration::from_secs(2))
    );
    // An HTTP-date (allowed by RFC 9110, never sent by the API server) and garbage: the
    // backoff of the error kind applies instead.
    assert_eq!(
        parse_retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
        None
    );
    assert_eq!(parse_retry_after(&headers("-1")), None);
    assert_eq!(parse_retry_after(&http::HeaderMap::new()), None);
}

//! Fields of the status this version does not know — a newer controller's (under a newer CRD),
//! or another tool's condition — go back as stored with every status write: server-side apply
//! removes a field its manager wrote before and leaves out, and replaces the conditions list
//! whole, so a field left out of the body is a field lost. A controller rolled back one version
//! must not drop what the newer one keeps.

use super::fixtures::*;

/// Another tool's condition on the Canary.
fn ready_condition() -> Value {
    json!({"type": "Ready", "status": "True", "reason": "Ready", "message": "set by another tool",
           "lastUpdateTime": "2023-11-14T21:00:00Z", "lastTransitionTime": "2023-11-14T21:00:00Z"})
}

/// A history entry as the run wrote it.
fn checked(run: u64) -> Value {
    json!({"at": "2023-11-14T22:01:00Z", "run": run, "revision": "abc", "kind": "advanced",
           "phase": "Progressing", "step": 1, "canaryWeight": 10, "iterations": 0,
           "failedChecks": 0, "threshold": 2, "message": "advanced canary weight 10",
           "checks": [{"name": "request-success-rate", "verdict": "pass", "value": 99.9,
                       "bound": {"min": 99.0}, "samples": 400}]})
}

/// A Canary progressing at 10 % with one history entry and the run's analysis state, as this
/// version writes it (`plain`), and the same as a newer controller wrote it: with fields this
/// version does not know at every level of the status (`newer`).
fn progressing() -> (Value, Value, Timestamp) {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let run = status.run.as_ref().expect("a run is progressing").id;
    let mut plain = with_status(canary, &status);
    plain["status"]["serin"]["history"] = json!([checked(run)]);
    plain["status"]["serin"]["analysis"] = json!({"run": run, "judge": {"looks": 3}});
    let mut newer = plain.clone();
    let s = &mut newer["status"];
    s["observedGeneration"] = json!(4);
    s["conditions"] = json!([ready_condition()]);
    s["serin"]["state"]["mirrorWeight"] = json!(5);
    s["serin"]["history"][0]["traceId"] = json!("4bf92f3577b34da6");
    s["serin"]["history"][0]["checks"][0]["baseline"] = json!(99.5);
    s["serin"]["analysis"]["judgeVersion"] = json!(3);
    s["serin"]["rollout"] = json!({"pausedBy": "ops", "since": "2023-11-14T22:05:00Z"});
    // Every part reads here: what is kept is what this version does not know inside them.
    let stored = parse(newer.clone());
    let serin = stored
        .status
        .as_ref()
        .and_then(|s| s.serin.as_ref())
        .unwrap();
    assert!(serin.unreadable().is_empty(), "{:?}", serin.unreadable());
    (plain, newer, at)
}

/// The status body one passing tick of `canary` writes, at `now`.
async fn tick_writes(canary: Value, now: Timestamp) -> Value {
    let written = Arc::new(Mutex::new(None));
    let keep = written.clone();
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, |_| {}).also(move |b| *keep.lock().unwrap() = Some(b.clone())),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
    let body = written.lock().unwrap().take();
    body.expect("the status was written")
}

#[tokio::test]
async fn fields_a_newer_controller_added_go_back_as_stored_with_a_ticks_write() {
    let (plain, newer, at) = progressing();
    let now = at + Duration::from_secs(60);
    let mine = tick_writes(plain, now).await;
    let body = tick_writes(newer, now).await;
    // The write is the one this version makes anyway, with each unknown field where it was
    // stored and another tool's condition after this controller's.
    let mut expected = mine.clone();
    let s = &mut expected["status"];
    assert_eq!(s["canaryWeight"], 20, "the tick advanced: {s}");
    s["observedGeneration"] = json!(4);
    s["conditions"]
        .as_array_mut()
        .unwrap()
        .push(ready_condition());
    s["serin"]["state"]["mirrorWeight"] = json!(5);
    assert_eq!(
        s["serin"]["history"][0]["kind"], "advanced",
        "the stored entry is first: {s}"
    );
    s["serin"]["history"][0]["traceId"] = json!("4bf92f3577b34da6");
    s["serin"]["history"][0]["checks"][0]["baseline"] = json!(99.5);
    s["serin"]["analysis"]["judgeVersion"] = json!(3);
    s["serin"]["rollout"] = json!({"pausedBy": "ops", "since": "2023-11-14T22:05:00Z"});
    assert_eq!(body, expected);
}

#[tokio::test]
async fn another_tools_condition_does_not_make_an_idle_canary_write_at_every_tick() {
    // A Succeeded Canary whose status is current, but for another tool's condition.
    let canary = canary("podinfo").build();
    let (status, at) = status_where(&canary, |_| {}, |s| s.phase == Phase::Succeeded);
    let idle = with_status(canary, &status);
    let written = Arc::new(Mutex::new(None));
    let keep = written.clone();
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:2")),
        status_write(&idle, |_| {}).also(move |b| *keep.lock().unwrap() = Some(b.clone())),
    ];
    let now = at + Duration::from_secs(60);
    let (result, _) = run(parse(idle.clone()), now, analyzer(vec![]), calls).await;
    result.unwrap();
    let mut current = idle;
    current["status"] = written.lock().unwrap().take().unwrap()["status"].clone();
    current["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(ready_condition());

    // An interval later nothing changed: no status write (the condition is not this
    // controller's to compare, and it is kept as it is).
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:2")),
    ];
    let later = now + Duration::from_secs(60);
    let (result, _) = run(parse(current), later, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::requeue(Duration::from_secs(60)));
}

#[tokio::test]
async fn a_held_canary_keeps_the_fields_a_newer_controller_added_beside_its_state() {
    // The state does not read here (a phase this version does not know): the Canary is held
    // and its stored status written back with the runtime conditions.
    let (_, mut newer, _) = progressing();
    newer["status"]["serin"]["state"] = json!({"phase": "Verifying", "canaryWeight": 20});
    newer["status"]["conditions"] = json!([
        {"type": "Promoted", "status": "Unknown", "reason": "Progressing",
         "message": "New revision detected, progressing canary analysis.",
         "lastUpdateTime": "2023-11-14T22:00:00Z", "lastTransitionTime": "2023-11-14T22:00:00Z",
         "observedGeneration": 4},
        ready_condition(),
    ]);
    // Flagger's counters as this version writes them (it writes them even when zero).
    newer["status"]["failedChecks"] = json!(0);
    newer["status"]["iterations"] = json!(0);
    let stored = newer["status"].clone();
    let calls = vec![
        status_write(&newer, move |b| {
            let mut written = b["status"].clone();
            let conditions = written["conditions"].take();
            let mut expected = stored.clone();
            let stored_conditions = expected["conditions"].take();
            assert_eq!(written, expected, "all but the conditions as stored");
            let conditions = conditions.as_array().unwrap();
            assert_eq!(
                conditions[..2],
                stored_conditions.as_array().unwrap()[..],
                "the engine's and the other tool's as stored"
            );
            let runtime: Vec<(&str, &str, &str)> = conditions[2..]
                .iter()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap();
                    (s("type"), s("status"), s("reason"))
                })
                .collect();
            assert_eq!(
                runtime,
                [
                    ("Valid", "True", "Valid"),
                    ("ProviderSupported", "True", "Supported"),
                    ("Synced", "False", "StateUnreadable"),
                ]
            );
        }),
        event("StateUnreadable"),
    ];
    let now = Timestamp::from_millis(T0);
    let (result, _) = run(parse(newer), now, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

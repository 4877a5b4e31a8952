//! A Canary whose `status.serin.state` this version cannot read (a newer controller wrote it,
//! or a person edited it): the engine does not run, every stored field is written back as
//! stored (server-side apply would remove the ones left out), and `Synced=False` with a
//! Warning event says why. A controller rolled back one version mid-run must not start the
//! Canary over.

use super::fixtures::*;

/// The status a newer controller wrote mid-run: Flagger's fields, the engine's `Promoted`,
/// its own runtime conditions, and a `status.serin` whose state (a phase this version does not
/// know) and last history entry do not read here.
fn written_by_a_newer_controller() -> Value {
    json!({
        "phase": "Progressing", "canaryWeight": 20, "failedChecks": 1, "iterations": 0,
        "lastAppliedSpec": "abc", "lastPromotedSpec": "9f8",
        "trackedConfigs": {"configmap/podinfo-config": "c1"},
        "lastTransitionTime": "2023-11-14T22:00:00Z", "lastCommandId": "cmd-1",
        "conditions": [
            {"type": "Promoted", "status": "Unknown", "reason": "Progressing",
             "message": "New revision detected, progressing canary analysis.",
             "lastUpdateTime": "2023-11-14T22:00:00Z", "lastTransitionTime": "2023-11-14T22:00:00Z"},
            {"type": "Valid", "status": "True", "reason": "Valid", "message": "the spec is valid",
             "lastUpdateTime": "2023-11-14T22:10:00Z", "lastTransitionTime": "2023-11-14T21:00:00Z"},
            {"type": "Synced", "status": "True", "reason": "Synced", "message": "the last tick completed",
             "lastUpdateTime": "2023-11-14T22:10:00Z", "lastTransitionTime": "2023-11-14T21:00:00Z"}
        ],
        "serin": {
            "state": {"phase": "Verifying", "canaryWeight": 20, "runs": 2},
            "history": [
                {"at": "2023-11-14T22:00:00Z", "run": 2, "revision": "abc", "kind": "runStarted",
                 "phase": "Progressing", "step": 0, "canaryWeight": 0, "iterations": 0,
                 "failedChecks": 0, "threshold": 2, "message": "new revision abc"},
                {"at": "2023-11-14T22:10:00Z", "kind": "verified", "message": "?"}
            ],
            "analysis": {"run": 2, "judge": {"looks": 3}}
        }
    })
}

fn newer(mut canary: Value) -> Value {
    canary["status"] = written_by_a_newer_controller();
    canary
}

/// What the controller writes: the stored status, the engine's `Promoted` as stored, and the
/// runtime conditions `runtime` (type, status, reason) in place of the stored ones, at T0.
fn kept_with(runtime: &[(&str, &str, &str)], check_message: fn(&str, &str)) -> impl FnOnce(&Value) {
    let runtime: Vec<(String, String, String)> = runtime
        .iter()
        .map(|(t, s, r)| (t.to_string(), s.to_string(), r.to_string()))
        .collect();
    move |b: &Value| {
        let mut written = b["status"].clone();
        let mut stored = written_by_a_newer_controller();
        let conditions = written["conditions"].take();
        let stored_conditions = stored["conditions"].take();
        assert_eq!(written, stored, "all but the conditions as stored");
        let conditions = conditions.as_array().unwrap();
        assert_eq!(conditions[0], stored_conditions[0], "Promoted as stored");
        let got: Vec<(String, String, String)> = conditions[1..]
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap().to_string();
                check_message(&s("type"), &s("message"));
                (s("type"), s("status"), s("reason"))
            })
            .collect();
        assert_eq!(got, runtime);
    }
}

/// The runtime conditions of a held Canary whose spec is valid.
const HELD: [(&str, &str, &str); 3] = [
    ("Valid", "True", "Valid"),
    ("ProviderSupported", "True", "Supported"),
    ("Synced", "False", "StateUnreadable"),
];

/// One reconcile of `canary` at T0 against `calls`; what it asks for next.
async fn reconcile_once(canary: Value, calls: Vec<Expect>) -> Requeue {
    let now = Timestamp::from_millis(T0);
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    result.unwrap()
}

fn unreadable_message(t: &str, m: &str) {
    if t == "Synced" {
        assert!(
            m.contains("status.serin.state") && m.contains("Verifying"),
            "names the field and what does not read: {m}"
        );
    }
}

fn warning(reason: &'static str) -> Expect {
    expect(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
    )
    .check(move |b| {
        assert_eq!(b["type"], "Warning", "{b}");
        assert_eq!(b["reason"], reason, "{b}");
        assert_eq!(b["regarding"]["name"], "podinfo");
        let note = b["note"].as_str().unwrap();
        assert!(note.contains("status.serin.state"), "{note}");
    })
}

#[tokio::test]
async fn a_state_a_newer_controller_wrote_is_kept_and_the_canary_held() {
    let canary = newer(canary("podinfo").build());
    let written = Arc::new(Mutex::new(None));
    let keep = written.clone();
    let calls = vec![
        status_write(&canary, kept_with(&HELD, unreadable_message))
            .also(move |b| *keep.lock().unwrap() = Some(b["status"].clone())),
        warning("StateUnreadable"),
    ];
    let analyzer = analyzer(vec![pass()]);
    let now = Timestamp::from_millis(T0);
    let (result, _) = run(parse(canary.clone()), now, analyzer.clone(), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
    assert_eq!(*analyzer.calls.lock().unwrap(), 0, "the engine did not run");

    // Woken by its own write: the conditions are current, nothing is written again.
    let mut after = canary;
    after["status"] = written
        .lock()
        .unwrap()
        .take()
        .expect("the status was written");
    let later = now + Duration::from_secs(60);
    let (result, _) = run(parse(after), later, analyzer.clone(), vec![]).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

#[tokio::test]
async fn an_invalid_spec_is_reported_without_touching_a_state_that_does_not_read() {
    // The conditions-only write (write_conditions) of a rejected Canary.
    let canary = newer(canary("podinfo").interval("5").build());
    let calls = vec![status_write(
        &canary,
        kept_with(&[("Valid", "False", "InvalidSpec")], |_, m| {
            assert!(m.contains("spec.analysis.interval"), "{m}")
        }),
    )];
    assert_eq!(reconcile_once(canary, calls).await, Requeue::await_change());
}

#[tokio::test]
async fn a_deletion_waits_for_a_controller_that_reads_the_state() {
    // Handing the target back is the engine's move: without the state the finalizer stays, and
    // the condition names it for whoever wants the Canary gone regardless.
    let canary = deleting(newer(canary("podinfo").revert_on_deletion().build()));
    let calls = vec![
        status_write(
            &canary,
            kept_with(&HELD, |t, m| {
                unreadable_message(t, m);
                if t == "Synced" {
                    assert!(m.contains("finalizer serin.dev/finalizer"), "{m}");
                }
            }),
        ),
        warning("StateUnreadable"),
    ];
    assert_eq!(reconcile_once(canary, calls).await, Requeue::await_change());
}

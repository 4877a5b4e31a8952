//! Targets and answers a real cluster has that the happy path does not: each is said on the
//! Canary, naming the object and field, and never produces an object the API server rejects.

use super::fixtures::*;

/// The status write of a target refused before the first write: Synced is False for reason
/// Invalid, and the message says each of `needles` (the object, the field, what is accepted).
fn refused_as_invalid(canary: &Value, needles: &'static [&'static str]) -> Expect {
    status_write(canary, move |b| {
        let c = cond(b, "Synced");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "Invalid");
        let m = c["message"].as_str().unwrap();
        for needle in needles {
            assert!(m.contains(needle), "{needle:?} in {m:?}");
        }
    })
}

#[tokio::test]
async fn a_target_selecting_with_match_expressions_only_is_refused_naming_the_field() {
    let canary = canary("podinfo").build();
    let now = Timestamp::from_millis(T0);
    let mut d = deployment("podinfo:1").build();
    d["spec"]["selector"] = json!({"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["podinfo"]}
    ]});
    // No primary with an empty selector (422 "empty selector is invalid for deployment", about
    // an object the user never wrote), no Services selecting nothing: the Canary says why
    // before the first write.
    let calls = vec![
        get_target(d.clone()),
        no_primary(),
        get_target(d),
        refused_as_invalid(
            &canary,
            &[
                "deployment test/podinfo",
                "spec.selector.matchLabels",
                "-primary",
            ],
        ),
        event("SyncFailed"),
    ];
    let c = parse(canary);
    let (result, ctx) = run(c.clone(), now, analyzer(vec![]), calls).await;
    let err = result.unwrap_err();
    assert_eq!(
        error_policy(c, &err, ctx),
        Requeue::requeue(Duration::from_secs(1)),
        "retried with a backoff, not in a hot loop"
    );
}

#[tokio::test]
async fn a_daemonset_updated_on_delete_is_refused_before_its_primary_is_made() {
    // The primary copies the target's updateStrategy: with OnDelete a promotion changes the
    // primary's template but no pod, so the primary never runs the promoted revision and the
    // Canary waits in Promoting until its progress deadline, with the primary's spec already
    // changed. Said up front instead, naming the field and what is accepted.
    let canary = canary("podinfo").daemonset_target().build();
    let now = Timestamp::from_millis(T0);
    let mut ds = daemonset("podinfo:1", None);
    ds["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    let calls = vec![
        expect(
            "GET",
            format!("/apis/apps/v1/namespaces/{NS}/daemonsets/podinfo"),
        )
        .reply(200, ds.clone()),
        expect(
            "GET",
            format!("/apis/apps/v1/namespaces/{NS}/daemonsets/podinfo-primary"),
        )
        .not_found(),
        expect(
            "GET",
            format!("/apis/apps/v1/namespaces/{NS}/daemonsets/podinfo"),
        )
        .reply(200, ds),
        refused_as_invalid(
            &canary,
            &[
                "daemonset test/podinfo",
                "spec.updateStrategy.type",
                "OnDelete",
                "RollingUpdate",
            ],
        ),
        event("SyncFailed"),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert!(result.is_err());
}

#[tokio::test]
async fn a_canary_whose_target_cannot_be_copied_can_still_be_deleted() {
    // The refusal is about making or promoting a primary: deleting the Canary (revertOnDeletion
    // hands the target back) must not be held by it, or the finalizer would never go.
    let canary = canary("podinfo").revert_on_deletion().build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = deleting(with_status(canary, &status));
    let mut d = deployment("podinfo:2").build();
    d["spec"]["selector"] = json!({"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["podinfo"]}
    ]});
    let mut released = canary.clone();
    released["metadata"]["finalizers"] = json!([]);
    let mut parked = d.clone();
    parked["spec"]["replicas"] = json!(0);
    let mut scaled = d.clone();
    scaled["spec"]["replicas"] = json!(3);
    for field in [
        "replicas",
        "updatedReplicas",
        "availableReplicas",
        "readyReplicas",
    ] {
        scaled["status"][field] = json!(3);
    }
    let calls = vec![
        get_target(d.clone()),
        get_primary(primary("podinfo:1")),
        get_target(parked),
        get_primary(primary("podinfo:1").replicas(3)),
        scale_target(3),
        get_target(scaled),
        get_primary(primary("podinfo:1").replicas(3)),
        delete_route(),
        get_target(d),
        expect("PATCH", format!("/api/v1/namespaces/{NS}/services/podinfo")),
        event("Terminating"),
        status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Terminating")),
        expect(
            "PATCH",
            format!("/apis/serin.dev/v1beta1/namespaces/{NS}/canaries/podinfo"),
        )
        .check(|b| assert_eq!(b["metadata"]["finalizers"], json!([])))
        .reply(200, released),
    ];
    let now = at + Duration::from_secs(5);
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

#[tokio::test]
async fn a_target_whose_selector_changed_is_told_how_to_start_over() {
    // The primary was made with the target's old selector; a Deployment's selector cannot
    // change, so every promotion's apply gets the API server's 422. The Canary says so and what
    // to do, instead of only relaying "field is immutable".
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 30);
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let mut calls = promoting(|_| {});
    let refused = calls.pop().expect("the primary's apply").reply(
        422,
        status_err(
            422,
            "Invalid",
            "Deployment.apps \"podinfo-primary\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web-primary\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
        ),
    );
    calls.extend([
        refused,
        refused_as_invalid(
            &canary,
            &[
                "deployment test/podinfo-primary",
                "field is immutable",
                "put the target's selector back",
                "revertOnDeletion: true",
            ],
        ),
        event("SyncFailed"),
    ]);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    assert!(result.is_err());
}

//! Targets and answers a real cluster has that the happy path does not: each is said on the
//! Canary, naming the object and field, and never produces an object the API server rejects.

use super::fixtures::*;

#[tokio::test]
async fn a_target_selecting_with_match_expressions_only_is_refused_naming_the_field() {
    let canary = canary("podinfo").build();
    let now = Timestamp::from_millis(T0);
    let mut d = deployment("podinfo:1").build();
    d["spec"]["selector"] = json!({"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["podinfo"]}
    ]});
    // No primary with an empty selector (422 "empty selector is invalid for deployment", about
    // an object the user never wrote), no Services selecting every pod: the Canary says why.
    let calls = vec![
        get_target(d),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "Invalid");
            let m = c["message"].as_str().unwrap();
            for needle in [
                "deployment test/podinfo",
                "spec.selector.matchLabels",
                "-primary",
            ] {
                assert!(m.contains(needle), "{needle:?} in {m:?}");
            }
        }),
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
        .reply(200, ds),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "Invalid");
            let m = c["message"].as_str().unwrap();
            for needle in [
                "daemonset test/podinfo",
                "spec.updateStrategy.type",
                "OnDelete",
                "RollingUpdate",
            ] {
                assert!(m.contains(needle), "{needle:?} in {m:?}");
            }
        }),
        event("SyncFailed"),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert!(result.is_err());
}

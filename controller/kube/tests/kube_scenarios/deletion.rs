//! Deleting a Canary: with revertOnDeletion the target is handed back before the finalizer goes.

use super::fixtures::*;

#[tokio::test]
async fn deletion_with_revert_on_deletion_hands_the_target_back() {
    let canary = canary("podinfo").revert_on_deletion().build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = deleting(with_status(canary, &status));
    let now = at + Duration::from_secs(5);
    let mut released = canary.clone();
    released["metadata"]["finalizers"] = json!([]);
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        expect(
            "DELETE",
            format!("/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/podinfo"),
        )
        .reply(200, status_err(200, "", "deleted")),
        get_target(deployment("podinfo:2")),
        expect("PATCH", format!("/api/v1/namespaces/{NS}/services/podinfo")).check(|b| {
            assert_eq!(
                b["spec"]["selector"]["app"], "podinfo",
                "apex selects the target again"
            );
            assert!(
                b["metadata"]["ownerReferences"].is_null(),
                "apex is released from the Canary"
            );
        }),
        get_target(deployment("podinfo:2").replicas(0)),
        get_primary(primary("podinfo:1").replicas(3)),
        scale_target(3),
        event("Terminating"),
        status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Terminating")),
        expect(
            "PATCH",
            format!("/apis/serin.dev/v1beta1/namespaces/{NS}/canaries/podinfo"),
        )
        .check(|b| {
            assert_eq!(b["metadata"]["finalizers"], json!([]));
            assert_eq!(b["metadata"]["resourceVersion"], "41");
        })
        .reply(200, released),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

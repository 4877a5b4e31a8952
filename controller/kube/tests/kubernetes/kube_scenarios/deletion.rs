//! Deleting a Canary: with revertOnDeletion the target is handed back before the finalizer goes.

use super::fixtures::*;

#[tokio::test]
async fn deletion_with_revert_on_deletion_hands_the_target_back() {
    let canary = canary("podinfo").revert_on_deletion().build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = deleting(with_status(canary, &status));
    let now = at + Duration::from_secs(5);
    let calls = handing_back(
        &canary,
        expect(
            "DELETE",
            format!("/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/podinfo"),
        )
        .reply(200, status_err(200, "", "deleted")),
    );
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

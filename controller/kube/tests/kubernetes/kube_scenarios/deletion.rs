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

/// The target comes back with no pod ready: the apex Service and the route wait for it (as
/// Flagger's finalizer waits), instead of sending every request to a target still starting.
#[tokio::test(start_paused = true)]
async fn deletion_hands_the_traffic_back_only_once_the_target_is_ready() {
    let canary = canary("podinfo").revert_on_deletion().build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = deleting(with_status(canary, &status));
    let now = at + Duration::from_secs(5);
    let calls = handing_back_after(
        &canary,
        expect(
            "DELETE",
            format!("/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/podinfo"),
        )
        .reply(200, status_err(200, "", "deleted")),
        vec![
            deployment("podinfo:2").replicas(3).not_ready().build(),
            deployment("podinfo:2").replicas(3).build(),
        ],
    );
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

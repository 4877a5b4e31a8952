//! Deleting a Canary: with revertOnDeletion the target is handed back before the finalizer goes.

use super::fixtures::*;

#[tokio::test]
async fn deletion_with_revert_on_deletion_hands_the_target_back() {
    let canary = canary("podinfo").revert_on_deletion().build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = deleting(with_status(canary, &status));
    let now = at + Duration::from_secs(5);
    let calls = handing_back(&canary, delete_route());
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

/// The target comes back with no pod ready: the apex Service and the route wait for it (as
/// Flagger's finalizer waits), instead of sending every request to a target still starting.
/// The wait is a requeue, never a sleep inside the reconcile, and the finalizer holds meanwhile.
#[tokio::test]
async fn deletion_hands_the_traffic_back_only_once_the_target_is_ready() {
    let canary = canary("podinfo").revert_on_deletion().build();
    let (status, at) = progressing_at(&canary, 10);
    let mut canary = deleting(with_status(canary, &status));
    // Deleted five seconds ago: well inside the wait (45 s with a one-minute interval).
    let now = at + Duration::from_secs(5);
    let deleted = jiff::Timestamp::from_millisecond(at.as_millis()).unwrap();
    canary["metadata"]["deletionTimestamp"] = json!(deleted.to_string());
    let waiting = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        get_target(deployment("podinfo:2").replicas(0)),
        get_primary(primary("podinfo:1").replicas(3)),
        scale_target(3),
        get_target(deployment("podinfo:2").replicas(3).not_ready()),
        get_primary(primary("podinfo:1").replicas(3)),
    ];
    let (result, _) = run(parse(canary.clone()), now, analyzer(vec![]), waiting).await;
    assert_eq!(result.unwrap(), Requeue::requeue(Duration::from_secs(2)));
    // Looked at again: ready, so the traffic goes back and the finalizer goes.
    let calls = handing_back(&canary, delete_route());
    let later = now + Duration::from_secs(2);
    let (result, _) = run(parse(canary), later, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

//! Providers `smi` and `osm`: the weights live in an SMI TrafficSplit (split.smi-spec.io), applied
//! each step and deleted when the target is handed back.

use super::fixtures::*;

const SPLIT: &str = "/apis/split.smi-spec.io/v1alpha2/namespaces/test/trafficsplits/podinfo";

#[tokio::test]
async fn a_passing_tick_writes_the_new_weights_into_the_traffic_split() {
    let canary = canary("podinfo").provider("smi").build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        expect("PATCH", SPLIT).check(|b| {
            assert_eq!(b["kind"], "TrafficSplit");
            assert_eq!(b["spec"]["service"], "podinfo");
            assert_eq!(
                b["spec"]["backends"],
                json!([{"service": "podinfo-primary", "weight": 80},
                       {"service": "podinfo-canary", "weight": 20}])
            );
            assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "c-uid-1");
        }),
        event("Advanced"),
        status_write(&canary, |b| assert_eq!(b["status"]["canaryWeight"], 20)),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
}

#[tokio::test]
async fn deletion_with_revert_on_deletion_deletes_the_traffic_split() {
    let canary = canary("podinfo")
        .provider("osm")
        .revert_on_deletion()
        .build();
    let (status, at) = progressing_at(&canary, 10);
    let canary = deleting(with_status(canary, &status));
    let now = at + Duration::from_secs(5);
    let calls = handing_back(
        &canary,
        expect("DELETE", SPLIT).reply(200, status_err(200, "", "deleted")),
    );
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

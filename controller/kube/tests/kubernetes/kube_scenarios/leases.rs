//! Leader election, one call at a time (expiry, take-over and races over time:
//! ../kube_leader_election.rs).

use super::fixtures::*;

fn lease(holder: &str, renew: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "serin-controller", "namespace": "serin-system", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew, "acquireTime": renew, "leaseTransitions": 3}
    })
}

async fn elect(now_ms: i64, calls: Vec<Expect>) -> Result<bool, AdapterError> {
    use serin_kube::{LeaderElection, LeaseConfig};
    scenario(NS, Duration::from_secs(5), calls, async |client| {
        let lease = LeaseConfig {
            name: "serin-controller".into(),
            namespace: "serin-system".into(),
            identity: "pod-a".into(),
            duration: Duration::from_secs(15),
        };
        LeaderElection::new(client, lease)
            .try_acquire_or_renew(Timestamp::from_millis(now_ms))
            .await
    })
    .await
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/serin-system/leases";

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let r = elect(
        T0,
        vec![
            expect("GET", format!("{LEASE}/serin-controller")).not_found(),
            expect("POST", LEASE).check(|b| {
                assert_eq!(b["spec"]["holderIdentity"], "pod-a");
                assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
            }),
        ],
    )
    .await;
    assert!(r.unwrap());
}

#[tokio::test]
async fn a_fresh_lease_held_by_another_replica_keeps_this_one_standing_by() {
    // Renewed 5s before "now" (2023-11-14T22:13:20Z): still valid for 10s.
    let r = elect(
        T0,
        vec![
            expect("GET", format!("{LEASE}/serin-controller"))
                .reply(200, lease("pod-b", "2023-11-14T22:13:15.000000Z", "7")),
        ],
    )
    .await;
    assert!(!r.unwrap(), "no write at all while another replica leads");
}

// Expiry, take-over and races are judged over time: see ../kube_leader_election.rs.

#[tokio::test]
async fn the_leader_renews_its_own_lease() {
    let r = elect(
        T0,
        vec![
            expect("GET", format!("{LEASE}/serin-controller"))
                .reply(200, lease("pod-a", "2023-11-14T22:13:15.000000Z", "9")),
            expect("PUT", format!("{LEASE}/serin-controller")).check(|b| {
                assert_eq!(b["spec"]["holderIdentity"], "pod-a");
                assert_eq!(
                    b["spec"]["leaseTransitions"], 3,
                    "a renewal is not a transition"
                );
                assert_ne!(b["spec"]["renewTime"], "2023-11-14T22:13:15.000000Z");
            }),
        ],
    )
    .await;
    assert!(r.unwrap());
}

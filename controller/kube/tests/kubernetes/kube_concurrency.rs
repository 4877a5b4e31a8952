//! A cold start with many Canaries: reconciles run at most MAX_CONCURRENT_RECONCILES at a time,
//! so the API server never sees every Canary's calls at once. The fake API server lists 60
//! Canaries and holds every reconcile call open; the number held is the number of reconciles
//! in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use serin_controller::metrics::{Health, Metrics};
use serin_core::Timestamp;
use serin_kube::testing::{Call, mock_client, respond};
use serin_kube::{KubeConfig, MAX_CONCURRENT_RECONCILES, NoBackendAnalyzer, run_controller};

const CANARIES: usize = 60;

fn canary(i: usize) -> Value {
    json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": format!("app-{i}"), "namespace": "test", "uid": format!("uid-{i}"), "resourceVersion": "41", "generation": 1},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("app-{i}")},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 2, "maxWeight": 30, "stepWeight": 10}
        }
    })
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_reconciles_a_bounded_number_of_canaries_at_once() {
    let (client, mut handle) = mock_client("default");
    let held = Arc::new(AtomicUsize::new(0));
    let in_flight = held.clone();
    tokio::spawn(async move {
        let mut open = vec![];
        while let Some((req, send)) = handle.next_request().await {
            let call = Call::read(req).await;
            let answer = match (call.method.as_str(), call.path.as_str()) {
                _ if call.is_watch() => None,
                ("GET", "/apis/serin.dev/v1beta1/canaries") => Some(list(
                    "Canary",
                    "serin.dev/v1beta1",
                    (0..CANARIES).map(canary).collect(),
                )),
                ("GET", "/apis/apps/v1/deployments") => Some(list("Deployment", "apps/v1", vec![])),
                ("GET", "/apis/apps/v1/daemonsets") => Some(list("DaemonSet", "apps/v1", vec![])),
                ("GET", "/api/v1/services") => Some(list("Service", "v1", vec![])),
                // The metadata-only watches (configs, routes) and the endpoints.
                (
                    "GET",
                    "/api/v1/configmaps"
                    | "/api/v1/secrets"
                    | "/apis/gateway.networking.k8s.io/v1/httproutes"
                    | "/apis/split.smi-spec.io/v1alpha2/trafficsplits",
                ) => Some(list("PartialObjectMetadata", "meta.k8s.io/v1", vec![])),
                ("GET", "/apis/discovery.k8s.io/v1/endpointslices") => {
                    Some(list("EndpointSlice", "discovery.k8s.io/v1", vec![]))
                }
                // A reconcile's call: held open, so that reconcile stays in flight.
                _ => {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    None
                }
            };
            match answer {
                Some(v) => respond(send, 200, &v),
                None => open.push(send),
            }
        }
    });
    let config = KubeConfig {
        default_provider: "serin".into(),
        analyzer: Arc::new(NoBackendAnalyzer),
        probe: None,
        namespace: None,
        reporter: "serin-controller".into(),
        instance: None,
        clock: Arc::new(|| Timestamp::from_millis(1_700_000_000_000)),
        webhook_backoff: Duration::from_millis(10),
    };
    let controller = tokio::spawn(run_controller(
        client,
        config,
        Arc::new(Metrics::new()),
        Arc::new(Health::default()),
        std::future::pending(),
    ));
    // Time is paused: this returns once every task is idle, i.e. every reconcile that could
    // start has made its call and waits for the answer.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let n = held.load(Ordering::SeqCst);
    assert!(n > 0, "reconciles started");
    assert_eq!(
        n,
        usize::from(MAX_CONCURRENT_RECONCILES),
        "{n} of {CANARIES} Canaries reconciling at once"
    );
    controller.abort();
}

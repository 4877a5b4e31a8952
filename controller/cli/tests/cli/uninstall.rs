//! `serin uninstall` as a user runs it (`serin uninstall | kubectl delete -f -`), against a
//! small HTTP API server on loopback named by a kubeconfig: refused with exit 1 and nothing on
//! stdout while a Canary exists, printed with `--force`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Json, State};
use axum::http::{StatusCode, Uri};
use serde_json::{Value, json};

use crate::check::{serin_against, serve_api};

/// An API server holding the controller's Deployment, its namespace and `canaries`: every
/// other GET is the API server's 404 Status.
fn api_server(canaries: Vec<Value>) -> std::net::SocketAddr {
    let labels = json!({"app.kubernetes.io/part-of": "serin"});
    let objects: BTreeMap<String, Value> = BTreeMap::from([
        (
            "/api/v1/namespaces/serin-system".to_string(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "serin-system", "labels": labels}}),
        ),
        (
            "/apis/apps/v1/namespaces/serin-system/deployments/serin-controller".to_string(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "serin-controller", "namespace": "serin-system", "labels": labels}}),
        ),
        (
            "/apis/serin.dev/v1beta1/canaries".to_string(),
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "7"}, "items": canaries}),
        ),
        (
            "/api/v1/pods".to_string(),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": []}),
        ),
    ]);
    serve_api(
        Router::new()
            .fallback(
                |State(objects): State<Arc<BTreeMap<String, Value>>>, uri: Uri| async move {
                    match objects.get(uri.path()) {
                        Some(v) => (StatusCode::OK, Json(v.clone())),
                        None => (
                            StatusCode::NOT_FOUND,
                            Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404})),
                        ),
                    }
                },
            )
            .with_state(Arc::new(objects)),
    )
}

fn uninstall(addr: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    serin_against(addr, "uninstall", args)
}

#[test]
fn a_remaining_canary_refuses_the_uninstall_and_force_prints_it_anyway() {
    let canary = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "web", "namespace": "shop"}});
    let addr = api_server(vec![canary]);

    let out = uninstall(addr, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "nothing for kubectl to delete");
    assert!(
        err.contains("error: 1 Canary still exists: shop/web (hint: "),
        "{err}"
    );
    assert!(
        err.contains(
            "error: refusing to uninstall: 1 reason above (--force prints the objects anyway)"
        ),
        "{err}"
    );

    let out = uninstall(addr, &["--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("warning: 1 Canary still exists"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    // Only what exists, the namespace after what lives in it.
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(kinds, ["Deployment", "Namespace"], "{text}");
}

#[test]
fn an_empty_cluster_has_nothing_to_uninstall() {
    let out = uninstall(api_server(vec![]), &["--namespace", "elsewhere"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: nothing of Serin's found in this cluster (--namespace elsewhere): nothing to uninstall"
    );
}

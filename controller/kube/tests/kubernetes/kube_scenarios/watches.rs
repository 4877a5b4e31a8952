//! The running controller's watches: a new target revision is acted on at once, and each watched
//! object wakes the right Canaries.

use super::fixtures::*;

/// A fake cluster for the running controller: answers by route, not in a fixed order (the
/// watches of Canaries, Deployments, DaemonSets and Services run concurrently). Lists return
/// the objects; watches are held open, except that the first Deployment watch delivers `change`
/// once `deploy` fires. Status writes are reported on `writes`.
struct FakeCluster {
    canary: Value,
    target: Mutex<Value>,
    primary: Value,
}

/// The controller's watches besides Canaries and Deployments: nothing there.
const OTHER_WATCHES: &[&str] = &[
    "/apis/apps/v1/daemonsets",
    "/api/v1/services",
    "/api/v1/configmaps",
    "/api/v1/secrets",
    "/apis/discovery.k8s.io/v1/endpointslices",
    "/apis/gateway.networking.k8s.io/v1/httproutes",
    "/apis/split.smi-spec.io/v1alpha2/trafficsplits",
];

async fn serve_cluster(
    mut handle: Handle,
    cluster: Arc<FakeCluster>,
    mut deploy: tokio::sync::oneshot::Receiver<Value>,
    writes: tokio::sync::mpsc::UnboundedSender<Value>,
    calls: Arc<Mutex<Vec<String>>>,
) {
    let mut held = Vec::new();
    let mut deployment_watch = None;
    let mut changed_sent = false;
    let list = |kind: &str, items: Vec<Value>| json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "10"}, "items": items});
    loop {
        let next = tokio::select! {
            r = handle.next_request() => r,
            Ok(changed) = &mut deploy, if deployment_watch.is_some() && !changed_sent => {
                // The user rolls out a new revision of the target.
                changed_sent = true;
                *cluster.target.lock().unwrap() = changed.clone();
                let send = deployment_watch.take().unwrap();
                let mut object = changed;
                object["metadata"]["resourceVersion"] = json!("11");
                respond(send, 200, &json!({"type": "MODIFIED", "object": object}));
                continue;
            }
        };
        let Some((req, send)) = next else { return };
        let Call {
            method,
            path,
            query,
            body,
            ..
        } = Call::read(req).await;
        let watch = query.contains("watch=true");
        calls.lock().unwrap().push(format!(
            "{method} {path}{}",
            if watch { " (watch)" } else { "" }
        ));
        let target = cluster.target.lock().unwrap().clone();
        let answer = match (method.as_str(), path.as_str()) {
            ("GET", "/apis/serin.dev/v1beta1/canaries") if watch => None,
            ("GET", "/apis/serin.dev/v1beta1/canaries") => {
                Some((200, list("CanaryList", vec![cluster.canary.clone()])))
            }
            ("GET", "/apis/apps/v1/deployments") if watch => {
                if deployment_watch.is_none() && !changed_sent {
                    deployment_watch = Some(send);
                    continue;
                }
                None
            }
            ("GET", "/apis/apps/v1/deployments") => Some((
                200,
                list("DeploymentList", vec![target, cluster.primary.clone()]),
            )),
            ("GET", p) if watch && OTHER_WATCHES.contains(&p) => None,
            ("GET", p) if OTHER_WATCHES.contains(&p) => Some((200, list("List", vec![]))),
            // No GET of a target or a primary: the watches hold them (an unexpected call).
            ("PATCH", p) if p == format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo") => {
                Some((200, target))
            }
            ("PATCH", p) if p.ends_with("/canaries/podinfo/status") => {
                let _ = writes.send(body.clone());
                let mut c = cluster.canary.clone();
                c["status"] = body["status"].clone();
                Some((200, c))
            }
            ("POST", p) if p.ends_with("/events") => Some((201, body)),
            (m, p) => {
                // Answered as an unknown path would be; the test fails on it after the run.
                calls
                    .lock()
                    .unwrap()
                    .push(format!("UNEXPECTED {m} {p}?{query}"));
                Some((404, status_err(404, "NotFound", "unexpected call")))
            }
        };
        match answer {
            Some((code, v)) => respond(send, code, &v),
            None => held.push(send),
        }
    }
}

#[tokio::test]
async fn a_new_target_revision_starts_the_run_at_once_not_at_the_next_interval() {
    use serin_controller::metrics::Health;
    use serin_kube::run_controller;
    // The canary was initialized at rev podinfo:1 five seconds ago; its next tick is 55s away.
    let canary = canary("podinfo").build();
    let mut sim = sim(&canary);
    assert!(sim.tick_until(5, |s| s.phase == Phase::Initialized));
    let now = sim.status.last_tick_at.unwrap() + Duration::from_secs(5);
    let mut canary = with_status(canary, &sim.status);
    canary["metadata"]["resourceVersion"] = json!("9");
    let mut owned_primary = primary("podinfo:1").build();
    owned_primary["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo",
        "uid": "c-uid-1", "controller": true
    }]);
    let cluster = Arc::new(FakeCluster {
        canary,
        target: Mutex::new(deployment("podinfo:1").replicas(0).build()),
        primary: owned_primary,
    });

    let (client, handle) = mock_client(NS);
    let (deploy_tx, deploy_rx) = tokio::sync::oneshot::channel();
    let (writes_tx, mut writes) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve_cluster(
        handle,
        cluster,
        deploy_rx,
        writes_tx,
        calls.clone(),
    ));
    let config = config(now, analyzer(vec![pass()]), None);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run_controller(
        client,
        config,
        Arc::new(Metrics::new()),
        Arc::new(Health::default()),
        async move {
            let _ = stop_rx.await;
        },
    ));

    // The controller lists and settles: nothing is due, so nothing is written.
    let settled = tokio::time::timeout(Duration::from_millis(1500), writes.recv()).await;
    assert!(
        settled.is_err(),
        "no status write before the target changes: {settled:?}"
    );
    let before: Vec<String> = calls.lock().unwrap().clone();
    assert!(
        before
            .iter()
            .all(|c| c.starts_with("GET") && !c.contains("/namespaces/")),
        "only lists and watches while nothing is due: {before:?}"
    );

    deploy_tx
        .send(deployment("podinfo:2").replicas(0).build())
        .unwrap();
    let write = tokio::time::timeout(Duration::from_secs(10), writes.recv())
        .await
        .expect("the new revision was not acted on within 10s (the interval is 60s)")
        .unwrap();
    assert_eq!(write["status"]["phase"], "Progressing", "{write}");
    assert_eq!(
        write["status"]["serin"]["state"]["run"]["revision"],
        revision("podinfo:2")
    );
    let hist = write["status"]["serin"]["history"].as_array().unwrap();
    assert!(hist.iter().any(|h| h["kind"] == "runStarted"), "{hist:?}");

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), controller).await;
    server.abort();
    let calls = calls.lock().unwrap().clone();
    let unexpected: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("UNEXPECTED"))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    // The tick read the target and the primary from the watches: its first call scales the
    // canary up, and nothing was read by GET.
    let after: Vec<&String> = calls
        .iter()
        .filter(|c| c.contains("/namespaces/"))
        .collect();
    assert_eq!(
        after.first().map(|c| c.as_str()),
        Some(format!("PATCH /apis/apps/v1/namespaces/{NS}/deployments/podinfo").as_str()),
        "{after:?}"
    );
    assert!(after.iter().all(|c| !c.starts_with("GET")), "{after:?}");
}

#[test]
fn a_target_change_wakes_the_canaries_targeting_it_and_an_owned_primary_wakes_its_owner() {
    use k8s_openapi::api::apps::v1::Deployment;
    use serin_api::TargetKind;
    use serin_kube::watch::canaries_to_wake;
    let canary = canary("podinfo").build();
    let mut sim = sim(&canary);
    assert!(sim.tick_until(5, |s| s.phase == Phase::Initialized));
    let canaries = vec![parse(with_status(canary, &sim.status))];
    let template = |image: &str| {
        let d: Deployment = serde_json::from_value(deployment(image).build()).unwrap();
        d.spec.unwrap().template
    };
    let wake = |name: &str, kind, owners: &[_], image: &str| {
        canaries_to_wake(&canaries, kind, NS, name, owners, Some(&template(image)))
            .into_iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
    };
    // Same revision (a status update of the target): nobody.
    assert!(wake("podinfo", TargetKind::Deployment, &[], "podinfo:1").is_empty());
    // A new revision: the canary targeting it.
    assert_eq!(
        wake("podinfo", TargetKind::Deployment, &[], "podinfo:2"),
        ["podinfo"]
    );
    // Another deployment, another kind or namespace: nobody.
    assert!(wake("other", TargetKind::Deployment, &[], "podinfo:2").is_empty());
    assert!(wake("podinfo", TargetKind::DaemonSet, &[], "podinfo:2").is_empty());
    assert!(
        canaries_to_wake(
            &canaries,
            TargetKind::Deployment,
            "prod",
            "podinfo",
            &[],
            Some(&template("podinfo:2"))
        )
        .is_empty()
    );
    // The primary, owned by the canary: its owner, whatever the revision.
    let owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference =
        serde_json::from_value(json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo", "uid": "c-uid-1", "controller": true})).unwrap();
    assert_eq!(
        wake(
            "podinfo-primary",
            TargetKind::Deployment,
            &[owner],
            "podinfo:1"
        ),
        ["podinfo"]
    );
}

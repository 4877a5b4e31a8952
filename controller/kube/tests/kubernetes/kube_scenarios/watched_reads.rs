//! What the controller's newer watches serve and wake: Serin's routes (an unchanged one is not
//! applied again, one changed by someone else wakes its Canary and is put back), tracked
//! ConfigMaps and signing Secrets (read once per version, a change wakes the Canaries tracking
//! it), and the endpoints of Serin's Services (a pod becoming ready wakes the Canary waiting).

use std::sync::atomic::{AtomicI64, Ordering};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher;
use serin_kube::route_watch::{RouteKind, RouteMeta};
use serin_kube::watch::{Stores, canaries_tracking, canary_of_endpoints, fill};

use super::fixtures::*;

/// `f`, bounded: a call nobody answers would hang it.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 5 s (an unexpected API call?)"))
}

fn owned_by_podinfo() -> Value {
    json!([{"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo",
            "uid": "c-uid-1", "controller": true}])
}

/// The route's metadata as the watch sees it after a write of `body` at `generation`.
fn route_meta(body: &Value, generation: i64) -> RouteMeta {
    let mut meta = body["metadata"].clone();
    meta["generation"] = json!(generation);
    meta["ownerReferences"] = owned_by_podinfo();
    serde_json::from_value(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": meta})).unwrap()
}

/// Metadata of a ConfigMap or Secret at `resource_version`, as the metadata-only watch sees it.
fn config_meta<K>(name: &str, resource_version: &str) -> PartialObjectMeta<K>
where
    K: kube::Resource,
{
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": NS, "resourceVersion": resource_version}}),
    )
    .unwrap()
}

fn config_map(name: &str, resource_version: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": NS, "resourceVersion": resource_version},
           "data": {"greeting": value}})
}

#[tokio::test]
async fn a_route_changed_by_someone_else_wakes_its_canary_and_is_put_back_and_an_unchanged_one_is_not_applied()
 {
    let canary = canary("podinfo").build();
    let (status, at) = progressing_at(&canary, 10);
    let progressing = with_status(canary.clone(), &status);
    let (stores, mut w) = Stores::new();
    fill(
        &mut w.deployments,
        vec![
            serde_json::from_value(deployment("podinfo:2").build()).unwrap(),
            serde_json::from_value(primary("podinfo:1").build()).unwrap(),
        ],
    );
    fill(&mut w.daemonsets, vec![]);
    fill(&mut w.services, vec![]);
    fill(&mut w.routes.httproutes, vec![]);
    fill(&mut w.routes.trafficsplits, vec![]);
    let routes = stores.routes.clone();
    let (client, handle) = mock_client(NS);
    let clock = Arc::new(AtomicI64::new(at.as_millis()));
    let mut cfg = config(at, analyzer(vec![pass()]), None);
    let c = clock.clone();
    cfg.clock = Arc::new(move || Timestamp::from_millis(c.load(Ordering::SeqCst)));
    let ctx =
        Arc::new(Context::new(client.clone(), cfg, Arc::new(Metrics::new())).with_stores(stores));

    // The step to 20 %: target and primary from the watches, the route applied (generation 2).
    let applied = Arc::new(Mutex::new(Value::Null));
    let keep = applied.clone();
    let stepped = Arc::new(Mutex::new(Value::Null));
    let keep_status = stepped.clone();
    clock.store((at + Duration::from_secs(60)).as_millis(), Ordering::SeqCst);
    let server = tokio::spawn(play(
        handle,
        vec![
            apply_route(80, 20).answer(move |mut body| {
                assert!(
                    body["metadata"]["annotations"]["serin.dev/applied"].is_string(),
                    "{body}"
                );
                *keep.lock().unwrap() = body.clone();
                body["metadata"]["generation"] = json!(2);
                (200, body)
            }),
            event("Advanced"),
            status_write(&progressing, |b| {
                assert_eq!(b["status"]["canaryWeight"], 20)
            })
            .also(move |b| *keep_status.lock().unwrap() = b["status"].clone()),
        ],
    ));
    reconcile(parse(progressing.clone()), ctx.clone())
        .await
        .unwrap();
    let mut handle = server.await.expect("scenario failed");
    assert_no_more_calls(&mut handle).await;
    let applied = applied.lock().unwrap().clone();
    let mut stepped_canary = progressing.clone();
    stepped_canary["status"] = stepped.lock().unwrap().clone();

    // The watch sees Serin's own write: nobody is woken.
    let ours = route_meta(&applied, 2);
    w.routes
        .httproutes
        .apply_watcher_event(&watcher::Event::Apply(ours.clone()));
    assert_eq!(routes.canary_to_wake(RouteKind::HttpRoute, &ours), None);
    // Applying the same route again is skipped: the watched copy is as Serin applied it.
    let mut again = applied.clone();
    // (as the router builds it: the stamp is added on the way out)
    again["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    bounded(
        "the second apply",
        routes.apply(&client, RouteKind::HttpRoute, NS, "podinfo", again.clone()),
    )
    .await
    .unwrap();
    assert_no_more_calls(&mut handle).await;

    // Someone edits the route (generation 3): its Canary is woken, and its reconcile (the next
    // tick 55 s away) puts back exactly what Serin applied, and does nothing else.
    let theirs = route_meta(&applied, 3);
    w.routes
        .httproutes
        .apply_watcher_event(&watcher::Event::Apply(theirs.clone()));
    let woken = routes
        .canary_to_wake(RouteKind::HttpRoute, &theirs)
        .expect("the owner is woken");
    assert_eq!(
        (woken.name.as_str(), woken.namespace.as_deref()),
        ("podinfo", Some(NS))
    );
    clock.store((at + Duration::from_secs(65)).as_millis(), Ordering::SeqCst);
    let restored = applied.clone();
    let server = tokio::spawn(play(
        handle,
        vec![apply_route(80, 20).answer(move |mut body| {
            assert_eq!(body, restored, "what Serin applied last");
            body["metadata"]["generation"] = json!(4);
            (200, body)
        })],
    ));
    let requeue = bounded(
        "the woken reconcile",
        reconcile(parse(stepped_canary), ctx.clone()),
    )
    .await
    .unwrap();
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(55)));
    let mut handle = server.await.expect("scenario failed");
    assert_no_more_calls(&mut handle).await;

    // Deleted by someone else: woken again, and recreated.
    w.routes
        .httproutes
        .apply_watcher_event(&watcher::Event::Delete(route_meta(&applied, 4)));
    assert!(
        routes
            .canary_to_wake(RouteKind::HttpRoute, &route_meta(&applied, 4))
            .is_some()
    );

    // A restarted controller (nothing in memory) trusts the stamp of the watched copy.
    let (fresh, mut fw) = Stores::new();
    fill(&mut fw.routes.httproutes, vec![route_meta(&applied, 4)]);
    bounded(
        "the apply after a restart",
        fresh
            .routes
            .apply(&client, RouteKind::HttpRoute, NS, "podinfo", again),
    )
    .await
    .unwrap();
    assert_no_more_calls(&mut handle).await;
}

/// Reads ConfigMap podinfo-config through `configs`, which must GET it (answered at
/// `resource_version` with `greeting`).
async fn read_by_get(
    configs: &serin_kube::config_watch::ConfigWatch,
    client: &kube::Client,
    handle: Handle,
    resource_version: &str,
    greeting: &str,
) -> Handle {
    let path = format!("/api/v1/namespaces/{NS}/configmaps/podinfo-config");
    let answer = config_map("podinfo-config", resource_version, greeting);
    let server = tokio::spawn(play(handle, vec![expect("GET", path).reply(200, answer)]));
    let cm = configs
        .config_map(client, NS, "podinfo-config")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cm.data.as_ref().unwrap()["greeting"], greeting);
    server.await.unwrap()
}

#[tokio::test]
async fn a_tracked_config_is_read_once_per_version_and_its_change_wakes_the_canary_tracking_it() {
    // podinfo's pods read ConfigMap podinfo-config.
    let mut target = deployment("podinfo:1").build();
    target["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "config", "configMap": {"name": "podinfo-config"}}]);
    let (stores, mut w) = Stores::new();
    fill(
        &mut w.deployments,
        vec![serde_json::from_value(target).unwrap()],
    );
    fill(
        &mut w.configs.configmaps,
        vec![config_meta("podinfo-config", "5")],
    );
    fill(&mut w.configs.secrets, vec![]);
    let configs = stores.configs.clone();
    let canaries = vec![
        parse(canary("podinfo").build()),
        parse(canary("other").build()),
    ];

    let (client, mut handle) = mock_client(NS);
    // Read once: a GET.
    handle = read_by_get(&configs, &client, handle, "5", "hello").await;
    // Again at the same version (every later observation): from the cache, no call.
    for _ in 0..3 {
        configs
            .config_map(&client, NS, "podinfo-config")
            .await
            .unwrap()
            .unwrap();
    }
    assert_no_more_calls(&mut handle).await;
    // A ConfigMap the watch does not hold does not exist: no GET either.
    assert!(
        configs
            .config_map(&client, NS, "missing")
            .await
            .unwrap()
            .is_none()
    );
    assert_no_more_calls(&mut handle).await;
    // The same version seen again wakes nobody.
    assert!(!configs.config_map_changed(&config_meta("podinfo-config", "5")));

    // The user edits it (resourceVersion 6): the Canary whose target reads it is woken, not
    // the other one, and the next read GETs the new content.
    let edited = config_meta::<ConfigMap>("podinfo-config", "6");
    assert!(configs.config_map_changed(&edited));
    let woken = canaries_tracking(&canaries, &stores, NS, "podinfo-config", false);
    assert_eq!(
        woken.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["podinfo"]
    );
    assert!(
        canaries_tracking(&canaries, &stores, NS, "podinfo-config", true).is_empty(),
        "a Secret of that name is another object"
    );
    w.configs
        .configmaps
        .apply_watcher_event(&watcher::Event::Apply(edited));
    handle = read_by_get(&configs, &client, handle, "6", "bonjour").await;
    assert_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn a_signing_key_is_read_once_per_version_of_its_secret() {
    let canary = canary("podinfo")
        .webhooks(
            json!([{"name": "gate", "type": "confirm-rollout", "url": "http://hooks.test/gate",
                          "signingSecretRef": {"name": "hook-key", "key": "key"}}]),
        )
        .build();
    let c: Canary = serde_json::from_value(canary).unwrap();
    let (spec, mut cctx) = serin_controller::plan::context(NS, &c).unwrap();
    let (stores, mut w) = Stores::new();
    fill(
        &mut w.configs.secrets,
        vec![config_meta::<Secret>("hook-key", "7")],
    );
    let (client, handle) = mock_client(NS);
    let server = tokio::spawn(play(
        handle,
        vec![get_secret("hook-key").reply(200, {
            let mut s = secret("hook-key", &[("key", b"s3cret")]);
            s["metadata"]["resourceVersion"] = json!("7");
            s
        })],
    ));
    for _ in 0..3 {
        serin_kube::signing_keys(&client, Some(&stores.configs), NS, &spec, &mut cctx)
            .await
            .unwrap();
    }
    assert_eq!(
        cctx.hooks["gate"].signing_key.as_deref(),
        Some(&b"s3cret"[..])
    );
    let mut handle = server.await.unwrap();
    assert_no_more_calls(&mut handle).await;
}

#[test]
fn a_pod_of_serins_service_becoming_ready_wakes_the_canary_waiting_for_it() {
    let canary = canary("podinfo").build();
    // A run started; the canary's pods are starting, the analysis has not begun.
    let (status, _) = status_where(
        &canary,
        |sim| sim.world.canary_ready = false,
        |s| s.phase == Phase::Progressing,
    );
    let waiting = parse(with_status(canary.clone(), &status));
    let mut settled = status.clone();
    settled.phase = Phase::Succeeded;
    let settled = parse(with_status(canary, &settled));
    let service = |name: &str| {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "ownerReferences": owned_by_podinfo()}}))
        .unwrap()
    };
    let stores = Stores::of(vec![], vec![], vec![service("podinfo-canary")]);
    let slice = |svc: &str| -> EndpointSlice {
        serde_json::from_value(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{svc}-abcde"), "namespace": NS,
                         "labels": {"kubernetes.io/service-name": svc, "app.kubernetes.io/managed-by": "serin"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": true}}]}))
        .unwrap()
    };
    let woken = canary_of_endpoints(
        std::slice::from_ref(&waiting),
        &stores,
        &slice("podinfo-canary"),
    );
    assert_eq!(woken.map(|r| r.name), Some("podinfo".to_string()));
    // A settled Canary is not woken; nor is anyone by a Service Serin does not own.
    assert_eq!(
        canary_of_endpoints(&[settled], &stores, &slice("podinfo-canary")),
        None
    );
    assert_eq!(
        canary_of_endpoints(&[waiting], &stores, &slice("unrelated")),
        None
    );
}

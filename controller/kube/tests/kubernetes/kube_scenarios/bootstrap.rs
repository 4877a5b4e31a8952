//! Bootstrap: the primary, the Services and the route are made from the target, which is then
//! parked (Deployment scaled to zero, DaemonSet moved off every node).

use super::fixtures::*;

#[tokio::test]
async fn bootstrap_creates_the_primary_services_and_waits_for_it() {
    let canary = canary("podinfo").build();
    let now = Timestamp::from_millis(T0);
    let calls = vec![
        get_target(deployment("podinfo:1")),
        no_primary(),
        get_target(deployment("podinfo:1")),
        apply_primary(|b| {
            assert_eq!(b["spec"]["replicas"], 2);
            assert_eq!(
                b["spec"]["selector"]["matchLabels"]["app"],
                "podinfo-primary"
            );
            assert_eq!(
                b["spec"]["template"]["metadata"]["labels"]["app"],
                "podinfo-primary"
            );
            assert_eq!(
                b["spec"]["template"]["spec"]["containers"][0]["image"],
                "podinfo:1"
            );
            assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "Canary");
            assert_eq!(b["metadata"]["ownerReferences"][0]["controller"], true);
        }),
        apply_service("podinfo-primary", "podinfo-primary"),
        apply_service("podinfo-canary", "podinfo"),
        apply_service("podinfo", "podinfo-primary"),
        event("Halted"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Initializing");
            assert_eq!(b["status"]["serin"]["state"]["phase"], "Initializing");
            assert_eq!(cond(b, "Valid")["status"], "True");
            assert_eq!(cond(b, "Synced")["status"], "True");
        }),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    let requeue = result.unwrap();
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(60)));
}

#[tokio::test]
async fn bootstrap_finishes_once_the_primary_is_ready() {
    let mut canary = canary("podinfo").build();
    let mut sim = sim(&canary);
    sim.world.primary_ready = false;
    sim.tick();
    assert_eq!(sim.status.phase, Phase::Initializing);
    canary = with_status(canary, &sim.status);
    let now = Timestamp::from_millis(T0 + 60_000);
    let calls = vec![
        get_target(deployment("podinfo:1")),
        get_primary(primary("podinfo:1")),
        get_target(deployment("podinfo:1")),
        apply_primary(|b| assert_eq!(b["spec"]["replicas"], 2)),
        apply_service("podinfo-primary", "podinfo-primary"),
        apply_service("podinfo-canary", "podinfo"),
        apply_service("podinfo", "podinfo-primary"),
        apply_route(100, 0),
        scale_target(0),
        event("Initialized"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Initialized");
            assert_eq!(b["status"]["canaryWeight"], 0);
            assert_eq!(b["status"]["lastAppliedSpec"], revision("podinfo:1"));
            assert_eq!(b["status"]["lastPromotedSpec"], revision("podinfo:1"));
            let hist = b["status"]["serin"]["history"].as_array().unwrap();
            assert_eq!(hist.last().unwrap()["kind"], "initialized");
        }),
    ];
    let (result, ctx) = run(parse(canary), now, analyzer(vec![]), calls).await;
    result.unwrap();
    drop(ctx);
}

#[tokio::test]
async fn a_daemonset_target_is_scaled_to_zero_with_a_node_selector_that_does_not_change_its_revision()
 {
    let canary = canary("podinfo").daemonset_target().build();
    let mut primary_ds = daemonset("podinfo:1", None);
    primary_ds["metadata"]["name"] = json!("podinfo-primary");
    let c: Canary = serde_json::from_value(canary.clone()).unwrap();
    let plan = serin_controller::plan::context(NS, &c).unwrap().1.plan;
    let ds: k8s_openapi::api::apps::v1::DaemonSet =
        serde_json::from_value(daemonset("podinfo:1", None)).unwrap();
    let rev = template_revision(&ds.spec.unwrap().template);
    let parked: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(daemonset(
        "podinfo:1",
        Some(json!({"serin.dev/scale-to-zero": "true"})),
    ))
    .unwrap();
    assert_eq!(
        template_revision(&parked.spec.unwrap().template),
        rev,
        "parking the target is not a new revision"
    );
    let mut sim = Sim::new(plan, &rev, Timestamp::from_millis(T0));
    sim.world.primary_ready = false;
    sim.tick();
    let canary = with_status(canary, &sim.status);
    let calls = vec![
        expect("GET", format!("/apis/apps/v1/namespaces/{NS}/daemonsets/podinfo")).reply(200, daemonset("podinfo:1", None)),
        expect("GET", format!("/apis/apps/v1/namespaces/{NS}/daemonsets/podinfo-primary")).reply(200, primary_ds),
        expect("GET", format!("/apis/apps/v1/namespaces/{NS}/daemonsets/podinfo")).reply(200, daemonset("podinfo:1", None)),
        expect("PATCH", format!("/apis/apps/v1/namespaces/{NS}/daemonsets/podinfo-primary")).check(|b| {
            assert_eq!(b["kind"], "DaemonSet");
            assert_eq!(b["spec"]["selector"]["matchLabels"]["app"], "podinfo-primary");
            assert!(b["spec"].get("replicas").is_none());
        }),
        apply_service("podinfo-primary", "podinfo-primary"),
        apply_service("podinfo-canary", "podinfo"),
        apply_service("podinfo", "podinfo-primary"),
        apply_route(100, 0),
        expect("PATCH", format!("/apis/apps/v1/namespaces/{NS}/daemonsets/podinfo")).check(|b| {
            assert_eq!(b, &json!({"spec": {"template": {"spec": {"nodeSelector": {"serin.dev/scale-to-zero": "true"}}}}}));
        }),
        event("Initialized"),
        status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Initialized")),
    ];
    let (result, _) = run(
        parse(canary),
        Timestamp::from_millis(T0 + 60_000),
        analyzer(vec![]),
        calls,
    )
    .await;
    result.unwrap();
}

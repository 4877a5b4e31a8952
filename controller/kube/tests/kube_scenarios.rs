//! Kubernetes scenarios in the controller-rs style: a `kube::Client` over a `tower_test` mock.
//! Each scenario lists every API call the controller must make — method, path, and what the body
//! must say — and answers it as the API server would. A missing call, an extra call or a call in
//! the wrong order fails the test; every scenario is bounded by a timeout.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::kube::{Expect, Scenario, expect, status_err};
use http::{Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action as Requeue;
use serde_json::{Value, json};
use serin_api::Canary;
use serin_controller::adapters::{
    AdapterError, AnalysisState, Analyzer, CanaryContext, Checked, ErrorKind,
};
use serin_controller::metrics::Metrics;
use serin_core::sim::Sim;
use serin_core::{CheckResult, Phase, Status, Timestamp, Verdict};
use serin_kube::workloads::template_revision;
use serin_kube::{Context, KubeConfig, ReconcileError, error_policy, reconcile};

// ---------------------------------------------------------------- fixtures

const NS: &str = "test";
const T0: i64 = 1_700_000_000_000;

fn deployment(image: &str, replicas: i32, ready: bool) -> Value {
    let available = if ready { replicas } else { 0 };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": NS, "generation": 3, "labels": {"app": "podinfo"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfo", "image": image, "ports": [{"name": "http", "containerPort": 9898}]}]}
            }
        },
        "status": {"observedGeneration": 3, "replicas": replicas, "updatedReplicas": replicas, "availableReplicas": available, "readyReplicas": available}
    })
}

fn primary(image: &str, replicas: i32, ready: bool) -> Value {
    let mut d = deployment(image, replicas, ready);
    d["metadata"]["name"] = json!("podinfo-primary");
    d["spec"]["selector"]["matchLabels"]["app"] = json!("podinfo-primary");
    d["spec"]["template"]["metadata"]["labels"]["app"] = json!("podinfo-primary");
    d
}

fn revision(image: &str) -> String {
    let d: Deployment = serde_json::from_value(deployment(image, 2, true)).unwrap();
    template_revision(&d.spec.unwrap().template)
}

fn canary_json(extra_analysis: Value) -> Value {
    let mut analysis = json!({
        "interval": "1m", "threshold": 2, "maxWeight": 30, "stepWeight": 10,
        "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]
    });
    if let (Some(a), Some(e)) = (analysis.as_object_mut(), extra_analysis.as_object()) {
        for (k, v) in e {
            a.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS, "uid": "c-uid-1", "resourceVersion": "41", "generation": 1},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": analysis
        }
    })
}

fn with_status(mut canary: Value, status: &Status) -> Value {
    canary["status"] = json!({"phase": status.phase.as_str(), "canaryWeight": status.canary_weight, "serin": {"state": status, "history": []}});
    canary
}

fn parse(canary: Value) -> Arc<Canary> {
    Arc::new(serde_json::from_value(canary).unwrap())
}

/// The engine status a real controller would have persisted after playing `sim` until `done`.
fn status_where(
    canary: &Value,
    sim_setup: impl FnOnce(&mut Sim),
    done: impl Fn(&Status) -> bool,
) -> (Status, Timestamp) {
    let c: Canary = serde_json::from_value(canary.clone()).unwrap();
    let (_, ctx) = serin_controller::plan::context(NS, &c).unwrap();
    let mut sim = Sim::new(
        ctx.plan.clone(),
        &revision("podinfo:1"),
        Timestamp::from_millis(T0),
    );
    sim.world.checks = vec![pass()];
    assert!(
        sim.tick_until(20, |s| s.phase == Phase::Initialized),
        "sim bootstrap"
    );
    sim.deploy(&revision("podinfo:2"));
    sim_setup(&mut sim);
    assert!(
        sim.tick_until(40, &done),
        "sim never reached the wanted status: {:?}",
        sim.status
    );
    (sim.status.clone(), sim.now)
}

fn pass() -> CheckResult {
    CheckResult {
        name: "request-success-rate".into(),
        verdict: Verdict::Pass,
        value: Some(99.9),
        bound: serin_core::Bound {
            min: Some(99.0),
            max: None,
        },
        samples: Some(1200),
        detail: String::new(),
    }
}

fn fail() -> CheckResult {
    CheckResult {
        verdict: Verdict::Fail,
        value: Some(91.5),
        ..pass()
    }
}

/// The analyzer plays its part of the scenario: fixed results, counting calls.
struct FixedAnalyzer {
    results: Vec<CheckResult>,
    calls: Mutex<u32>,
}

#[async_trait]
impl Analyzer for FixedAnalyzer {
    async fn run_checks(
        &self,
        _c: &CanaryContext,
        _s: &Status,
    ) -> Result<Vec<CheckResult>, AdapterError> {
        *self.calls.lock().unwrap() += 1;
        Ok(self.results.clone())
    }
}

fn context(client: Client, now: Timestamp, analyzer: Arc<dyn Analyzer>) -> Arc<Context> {
    let config = KubeConfig {
        default_provider: "serin".into(),
        analyzer,
        probe: None,
        namespace: None,
        reporter: "serin-controller".into(),
        instance: Some("serin-controller-0".into()),
        clock: Arc::new(move || now),
        webhook_backoff: Duration::from_millis(10),
    };
    Arc::new(Context::new(client, config, Arc::new(Metrics::new())))
}

// ---------------------------------------------------------------- scenario pieces

/// A status write is answered with the Canary carrying the new status.
fn status_write(canary: &Value, check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    let c = canary.clone();
    Expect {
        method: "PATCH",
        path: format!("/apis/serin.dev/v1beta1/namespaces/{NS}/canaries/podinfo/status"),
        check: Box::new(check),
        answer: Box::new(move |body| {
            let mut c = c;
            c["status"] = body["status"].clone();
            (200, c)
        }),
    }
}

fn event(reason: &'static str) -> Expect {
    expect(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
    )
    .check(move |b| {
        assert_eq!(b["reason"], reason, "event reason; body {b}");
        assert_eq!(b["regarding"]["name"], "podinfo");
    })
}

fn get_target(d: Value) -> Expect {
    expect(
        "GET",
        format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo"),
    )
    .reply(200, d)
}

fn get_primary(d: Option<Value>) -> Expect {
    let e = expect(
        "GET",
        format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo-primary"),
    );
    match d {
        Some(d) => e.reply(200, d),
        None => e.not_found(),
    }
}

fn apply_primary(check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo-primary"),
    )
    .check(check)
}

fn apply_service(name: &'static str, selector: &'static str) -> Expect {
    expect("PATCH", format!("/api/v1/namespaces/{NS}/services/{name}")).check(move |b| {
        assert_eq!(b["spec"]["selector"]["app"], selector, "{name} selector");
        assert_eq!(b["spec"]["ports"][0]["port"], 9898);
        assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "c-uid-1");
    })
}

fn apply_route(primary: u32, canary: u32) -> Expect {
    expect(
        "PATCH",
        format!("/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/podinfo"),
    )
    .check(move |b| {
        assert_eq!(b["kind"], "HTTPRoute");
        assert_eq!(
            b["spec"]["parentRefs"][0],
            json!({"group": "", "kind": "Service", "name": "podinfo", "port": 9898})
        );
        let rules = b["spec"]["rules"].as_array().unwrap();
        let last = rules.last().unwrap();
        assert_eq!(
            last["backendRefs"][0],
            json!({"name": "podinfo-primary", "port": 9898, "weight": primary}),
            "{b}"
        );
        assert_eq!(
            last["backendRefs"][1],
            json!({"name": "podinfo-canary", "port": 9898, "weight": canary}),
            "{b}"
        );
    })
}

fn scale_target(replicas: i32) -> Expect {
    expect(
        "PATCH",
        format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo"),
    )
    .check(move |b| {
        assert_eq!(b, &json!({"spec": {"replicas": replicas}}));
    })
}

/// Runs one reconcile against `calls`; returns its result after checking no call was left over.
async fn run(
    canary: Arc<Canary>,
    now: Timestamp,
    analyzer: Arc<dyn Analyzer>,
    calls: Vec<Expect>,
) -> (Result<Requeue, ReconcileError>, Arc<Context>) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, NS);
    let ctx = context(client, now, analyzer);
    let server = tokio::spawn(Scenario { handle }.play(calls));
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(canary, ctx.clone()))
        .await
        .expect("reconcile did not finish within 10s");
    let mut handle = server.await.expect("scenario failed");
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await
    {
        panic!("unexpected extra call {} {}", req.method(), req.uri());
    }
    (result, ctx)
}

fn analyzer(results: Vec<CheckResult>) -> Arc<FixedAnalyzer> {
    Arc::new(FixedAnalyzer {
        results,
        calls: Mutex::new(0),
    })
}

fn cond<'a>(b: &'a Value, t: &str) -> &'a Value {
    b["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap_or_else(|| panic!("no {t} condition in {b}"))
}

// ---------------------------------------------------------------- scenarios

#[tokio::test]
async fn bootstrap_creates_the_primary_services_and_waits_for_it() {
    let canary = canary_json(json!({}));
    let now = Timestamp::from_millis(T0);
    let calls = vec![
        get_target(deployment("podinfo:1", 2, true)),
        get_primary(None),
        get_target(deployment("podinfo:1", 2, true)),
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
    let mut canary = canary_json(json!({}));
    let first = Timestamp::from_millis(T0);
    let mut sim = Sim::new(
        serin_controller::plan::context(
            NS,
            &serde_json::from_value::<Canary>(canary.clone()).unwrap(),
        )
        .unwrap()
        .1
        .plan,
        &revision("podinfo:1"),
        first,
    );
    sim.world.primary_ready = false;
    sim.tick();
    assert_eq!(sim.status.phase, Phase::Initializing);
    canary = with_status(canary, &sim.status);
    let now = Timestamp::from_millis(T0 + 60_000);
    let calls = vec![
        get_target(deployment("podinfo:1", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        get_target(deployment("podinfo:1", 2, true)),
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
async fn a_passing_tick_raises_the_weight() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let a = analyzer(vec![pass()]);
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Progressing");
            assert_eq!(b["status"]["canaryWeight"], 20);
            assert_eq!(b["status"]["failedChecks"], 0);
            let hist = b["status"]["serin"]["history"].as_array().unwrap();
            let last = hist.last().unwrap();
            assert_eq!(
                last["checks"][0]["value"], 99.9,
                "the history shows the measured value: {last}"
            );
        }),
    ];
    let (result, _) = run(parse(canary), now, a.clone(), calls).await;
    result.unwrap();
    assert_eq!(*a.calls.lock().unwrap(), 1, "checks run once per tick");
}

#[tokio::test]
async fn a_tick_before_the_interval_does_nothing() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(20);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), vec![]).await;
    // Not due: no API call at all, requeued for the rest of the interval.
    assert_eq!(result.unwrap(), Requeue::requeue(Duration::from_secs(40)));
}

#[tokio::test]
async fn reaching_max_weight_promotes_the_canary_template_to_the_primary() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 30,
    );
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 3, true))),
        apply_primary(|b| {
            assert_eq!(
                b["spec"]["template"]["spec"]["containers"][0]["image"],
                "podinfo:2"
            );
            assert_eq!(
                b["spec"]["replicas"], 3,
                "the primary keeps its replica count"
            );
        }),
        event("Promoting"),
        status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Promoting")),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
}

#[tokio::test]
async fn failed_checks_at_the_threshold_roll_back() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(
        &canary,
        |sim| sim.world.checks = vec![fail()],
        |s| s.phase == Phase::Progressing && s.failed_checks == 1,
    );
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        event("Halted"),
        apply_route(100, 0),
        scale_target(0),
        event("RolledBack"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Failed");
            assert_eq!(b["status"]["canaryWeight"], 0);
            assert_eq!(b["status"]["failedChecks"], 2);
            assert_eq!(cond(b, "Promoted")["status"], "False");
        }),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![fail()]), calls).await;
    result.unwrap();
}

#[tokio::test]
async fn a_restart_in_promoting_does_not_promote_twice() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(&canary, |_| {}, |s| s.phase == Phase::Promoting);
    assert!(
        status.run.as_ref().unwrap().promotion.is_some(),
        "the engine marks the promotion done"
    );
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    // The primary already runs the new template but is still rolling out: no second copy of
    // the template, just waiting.
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:2", 2, false))),
        event("Halted"),
        status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Promoting")),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
}

#[tokio::test]
async fn deletion_with_revert_on_deletion_hands_the_target_back() {
    let mut canary = canary_json(json!({}));
    canary["spec"]["revertOnDeletion"] = json!(true);
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let mut canary = with_status(canary, &status);
    canary["metadata"]["finalizers"] = json!(["serin.dev/finalizer"]);
    canary["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    let now = at + Duration::from_secs(5);
    let mut released = canary.clone();
    released["metadata"]["finalizers"] = json!([]);
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        expect(
            "DELETE",
            format!("/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/podinfo"),
        )
        .reply(200, status_err(200, "", "deleted")),
        get_target(deployment("podinfo:2", 2, true)),
        expect("PATCH", format!("/api/v1/namespaces/{NS}/services/podinfo")).check(|b| {
            assert_eq!(
                b["spec"]["selector"]["app"], "podinfo",
                "apex selects the target again"
            );
            assert!(
                b["metadata"]["ownerReferences"].is_null(),
                "apex is released from the Canary"
            );
        }),
        get_target(deployment("podinfo:2", 0, true)),
        get_primary(Some(primary("podinfo:1", 3, true))),
        scale_target(3),
        event("Terminating"),
        status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Terminating")),
        expect(
            "PATCH",
            format!("/apis/serin.dev/v1beta1/namespaces/{NS}/canaries/podinfo"),
        )
        .check(|b| {
            assert_eq!(b["metadata"]["finalizers"], json!([]));
            assert_eq!(b["metadata"]["resourceVersion"], "41");
        })
        .reply(200, released),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

#[tokio::test]
async fn a_conflict_is_retried_soon_and_said_on_the_canary() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        apply_route(80, 20).reply(
            409,
            status_err(409, "Conflict", "the object has been modified"),
        ),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "Conflict");
            assert!(c["message"].as_str().unwrap().contains("httproute"), "{c}");
            // The engine state is untouched: the next tick decides again from weight 10.
            assert_eq!(b["status"]["canaryWeight"], 10);
        }),
    ];
    let c = parse(canary);
    let (result, ctx) = run(c.clone(), now, analyzer(vec![pass()]), calls).await;
    let err = result.unwrap_err();
    assert_eq!(
        error_policy(c.clone(), &err, ctx.clone()),
        Requeue::requeue(Duration::from_millis(200))
    );
    assert_eq!(
        error_policy(c, &err, ctx),
        Requeue::requeue(Duration::from_millis(400)),
        "backoff grows"
    );
}

#[tokio::test]
async fn a_forbidden_error_backs_off_and_names_the_call() {
    let canary = canary_json(json!({}));
    let calls = vec![
        get_target(deployment("podinfo:1", 2, true))
            .reply(403, status_err(403, "Forbidden", "deployments.apps \"podinfo\" is forbidden: User \"system:serviceaccount:serin:serin\" cannot get resource")),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "Forbidden");
            assert!(c["message"].as_str().unwrap().contains("reading deployment test/podinfo"), "{c}");
        }),
    ];
    let c = parse(canary);
    let (result, ctx) = run(
        c.clone(),
        Timestamp::from_millis(T0),
        analyzer(vec![]),
        calls,
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(
        error_policy(c, &err, ctx),
        Requeue::requeue(Duration::from_secs(30))
    );
}

#[tokio::test]
async fn an_invalid_canary_gets_a_condition_naming_the_field() {
    let mut canary = canary_json(json!({}));
    canary["spec"]["analysis"]["interval"] = json!("5");
    let calls = vec![status_write(&canary, |b| {
        let c = cond(b, "Valid");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "InvalidSpec");
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("spec.analysis.interval"),
            "{c}"
        );
    })];
    let (result, _) = run(
        parse(canary),
        Timestamp::from_millis(T0),
        analyzer(vec![]),
        calls,
    )
    .await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

#[tokio::test]
async fn an_unsupported_provider_is_named_with_the_supported_ones() {
    let mut canary = canary_json(json!({}));
    canary["spec"]["provider"] = json!("istio");
    canary["spec"]["service"]["gateways"] = json!(["public-gateway"]);
    let calls = vec![status_write(&canary, |b| {
        let c = cond(b, "ProviderSupported");
        assert_eq!(c["status"], "False");
        let m = c["message"].as_str().unwrap();
        assert!(
            m.contains("\"istio\"") && m.contains("gatewayapi") && m.contains("smi"),
            "{m}"
        );
        // Word for word what `serin validate` prints for this Canary (exit 3).
        assert_eq!(
            Some(m.to_string()),
            serin_api::support::provider_not_driven("istio")
        );
    })];
    let (result, _) = run(
        parse(canary),
        Timestamp::from_millis(T0),
        analyzer(vec![]),
        calls,
    )
    .await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

#[tokio::test]
async fn istio_only_service_fields_are_reported_as_ignored() {
    let mut canary = canary_json(json!({}));
    canary["spec"]["service"]["gateways"] = json!(["public-gateway"]);
    canary["spec"]["service"]["trafficPolicy"] = json!({"tls": {"mode": "ISTIO_MUTUAL"}});
    let calls = vec![
        get_target(deployment("podinfo:1", 2, true)),
        get_primary(None),
        get_target(deployment("podinfo:1", 2, true)),
        apply_primary(|_| {}),
        apply_service("podinfo-primary", "podinfo-primary"),
        apply_service("podinfo-canary", "podinfo"),
        apply_service("podinfo", "podinfo-primary"),
        event("Halted"),
        status_write(&canary, |b| {
            let c = cond(b, "IgnoredFields");
            let m = c["message"].as_str().unwrap();
            assert!(
                m.contains("spec.service.gateways") && m.contains("spec.service.trafficPolicy"),
                "{m}"
            );
            assert_eq!(cond(b, "Valid")["status"], "True");
        }),
    ];
    let (result, _) = run(
        parse(canary),
        Timestamp::from_millis(T0),
        analyzer(vec![]),
        calls,
    )
    .await;
    result.unwrap();
}

#[tokio::test]
async fn a_manual_abort_from_the_annotation_rolls_back_once() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let mut canary = with_status(canary, &status);
    canary["metadata"]["annotations"] = json!({"serin.dev/command": r#"{"id":"c-1","action":"abort","by":"alice","at":"2023-11-14T22:13:20Z"}"#});
    let now = at + Duration::from_secs(5);
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        apply_route(100, 0),
        scale_target(0),
        event("RolledBack"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Failed");
            assert_eq!(b["status"]["lastCommandId"], "c-1");
        }),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
}

#[tokio::test]
async fn a_malformed_command_annotation_is_reported_not_applied() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let mut canary = with_status(canary, &status);
    canary["metadata"]["annotations"] =
        json!({"serin.dev/command": r#"{"id":"c-1","action":"explode"}"#});
    let calls = vec![status_write(&canary, |b| {
        let c = cond(b, "Synced");
        assert_eq!(c["reason"], "Invalid");
        assert!(
            c["message"].as_str().unwrap().contains("serin.dev/command"),
            "{c}"
        );
    })];
    let (result, _) = run(
        parse(canary),
        at + Duration::from_secs(5),
        analyzer(vec![]),
        calls,
    )
    .await;
    assert!(matches!(result.unwrap_err().to_string(), m if m.contains("serin.dev/command")));
}

#[test]
fn error_kinds_map_to_backoffs() {
    use serin_kube::backoff;
    assert_eq!(backoff(ErrorKind::Conflict, 0), Duration::from_millis(200));
    assert_eq!(backoff(ErrorKind::Other, 3), Duration::from_secs(8));
    assert_eq!(backoff(ErrorKind::Forbidden, 10), Duration::from_secs(300));
}

#[tokio::test]
async fn the_prometheus_analyzer_never_passes_what_it_could_not_measure() {
    use serin_kube::analysis::PrometheusAnalyzer;
    let mut canary = canary_json(json!({}));
    canary["spec"]["analysis"]["metrics"] = json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
        {"name": "error-budget", "templateRef": {"name": "budget"}, "thresholdRange": {"max": 5}}
    ]);
    let c: Canary = serde_json::from_value(canary).unwrap();
    let (_, ctx) = serin_controller::plan::context(NS, &c).unwrap();
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, NS);
    let template = json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "budget", "namespace": NS},
        "spec": {"provider": {"type": "keptn"}, "query": "slo/errors"}
    });
    let server = tokio::spawn(Scenario { handle }.play(vec![
            expect(
                "GET",
                format!("/apis/serin.dev/v1beta1/namespaces/{NS}/metrictemplates/budget"),
            )
            .reply(200, template),
        ]));
    let analyzer = PrometheusAnalyzer::new(client, None, "serin".into());
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        analyzer.run_checks(&ctx, &Status::default()),
    )
    .await
    .unwrap()
    .unwrap();
    server.await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].verdict, Verdict::Inconclusive);
    assert!(
        results[0].detail.contains("metricsServer"),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1].verdict, Verdict::Inconclusive);
    assert!(
        results[1].detail.contains("templateRef") && results[1].detail.contains("keptn"),
        "{:?}",
        results[1]
    );
}

// ---------------------------------------------------------------- signed webhooks

fn secret(name: &str, data: &[(&str, &[u8])]) -> Value {
    let s = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    let mut v = serde_json::to_value(s).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

fn get_secret(name: &str) -> Expect {
    expect("GET", format!("/api/v1/namespaces/{NS}/secrets/{name}"))
}

fn signed_hook(url: &str) -> Value {
    json!({"webhooks": [{
        "name": "load-test", "url": url, "retries": 1,
        "signingSecretRef": {"name": "hook-keys", "key": "hmac"}
    }]})
}

#[tokio::test]
async fn a_signed_webhook_gets_its_key_from_the_secret_and_is_retried() {
    use serin_controller::webhook::{SIGNATURE_HEADER, verify_signature};
    // The load tester fails once, then accepts: one retry is allowed.
    let mut hook =
        common::receiver::receiver(vec![(500, Duration::ZERO), (200, Duration::ZERO)]).await;
    let canary = canary_json(signed_hook(&format!("http://{}/", hook.addr)));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let canary = with_status(canary, &status);
    let calls = vec![
        get_secret("hook-keys").reply(200, secret("hook-keys", &[("hmac", b"s3cret")])),
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["canaryWeight"], 20);
            let last = b["status"]["serin"]["history"]
                .as_array()
                .unwrap()
                .last()
                .cloned()
                .unwrap();
            assert_eq!(last["gates"][0]["name"], "load-test", "{last}");
            assert_eq!(last["gates"][0]["passed"], true, "{last}");
        }),
    ];
    let now = at + Duration::from_secs(60);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
    for attempt in 1..=2 {
        let seen = common::receiver::next(&mut hook).await;
        let header = seen.headers[SIGNATURE_HEADER].to_str().unwrap().to_string();
        assert!(
            verify_signature(b"s3cret", &seen.body, &header),
            "attempt {attempt} carries a valid signature: {header}"
        );
        assert!(!verify_signature(b"other", &seen.body, &header));
    }
    assert!(
        hook.seen.try_recv().is_err(),
        "no third attempt after a success"
    );
}

#[tokio::test]
async fn a_missing_signing_secret_holds_the_canary_and_names_the_field() {
    let canary = canary_json(signed_hook("http://127.0.0.1:9/"));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let canary = with_status(canary, &status);
    let calls = vec![
        get_secret("hook-keys").not_found(),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "NotFound");
            let m = c["message"].as_str().unwrap();
            assert!(
                m.contains("spec.analysis.webhooks[0].signingSecretRef")
                    && m.contains("test/hook-keys"),
                "{m}"
            );
            assert_eq!(
                b["status"]["canaryWeight"], 10,
                "nothing moved without the key"
            );
        }),
    ];
    let now = at + Duration::from_secs(60);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("signingSecretRef"), "{err}");
}

#[tokio::test]
async fn a_signing_secret_without_the_key_names_the_key() {
    let canary = canary_json(signed_hook("http://127.0.0.1:9/"));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let canary = with_status(canary, &status);
    let calls = vec![
        get_secret("hook-keys").reply(200, secret("hook-keys", &[("token", b"x")])),
        status_write(&canary, |b| {
            let c = cond(b, "Synced");
            assert_eq!(c["reason"], "Invalid");
            let m = c["message"].as_str().unwrap();
            assert!(
                m.contains("spec.analysis.webhooks[0].signingSecretRef.key")
                    && m.contains("\"hmac\""),
                "{m}"
            );
        }),
    ];
    let now = at + Duration::from_secs(60);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    assert!(result.is_err());
}

// ---------------------------------------------------------------- analysis state across restarts

/// Counts its looks in the analysis state, and remembers the state each look started from.
struct CountingAnalyzer {
    started_from: Mutex<Vec<Option<AnalysisState>>>,
}

#[async_trait]
impl Analyzer for CountingAnalyzer {
    async fn run_checks(
        &self,
        _c: &CanaryContext,
        _s: &Status,
    ) -> Result<Vec<CheckResult>, AdapterError> {
        unreachable!("the driver continues from the saved state")
    }

    async fn run_checks_from(
        &self,
        _c: &CanaryContext,
        status: &Status,
        saved: Option<&AnalysisState>,
    ) -> Result<Checked, AdapterError> {
        self.started_from.lock().unwrap().push(saved.cloned());
        let run = status.run.as_ref().unwrap().id;
        let looks = saved
            .filter(|s| s.run == run)
            .and_then(|s| s.judge.as_ref())
            .and_then(|j| j["looks"].as_u64())
            .unwrap_or(0);
        Ok(Checked {
            checks: vec![pass()],
            state: Some(AnalysisState {
                run,
                judge: Some(json!({"looks": looks + 1})),
            }),
        })
    }
}

#[tokio::test]
async fn the_judges_state_is_saved_with_the_status_and_a_restarted_controller_continues_it() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let run_id = status.run.as_ref().unwrap().id;
    let canary = with_status(canary, &status);
    let written = Arc::new(Mutex::new(Value::Null));

    // First controller: its first look of the run starts from nothing and is saved.
    let first = Arc::new(CountingAnalyzer {
        started_from: Mutex::new(Vec::new()),
    });
    let w = written.clone();
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, move |b| {
            assert_eq!(
                b["status"]["serin"]["analysis"],
                json!({"run": run_id, "judge": {"looks": 1}}),
                "{b}"
            );
            *w.lock().unwrap() = b["status"].clone();
        }),
    ];
    let now = at + Duration::from_secs(60);
    let (result, _) = run(parse(canary.clone()), now, first.clone(), calls).await;
    result.unwrap();
    assert_eq!(
        first.started_from.lock().unwrap().as_slice(),
        &[Some(AnalysisState::default())],
        "a store that persists analysis state says so even when none is saved yet"
    );

    // The controller restarts: a new process (new analyzer, no memory) reads the Canary as the
    // API server now has it and continues the same sequential test at look 2.
    let mut restarted = canary.clone();
    restarted["status"] = written.lock().unwrap().clone();
    let second = Arc::new(CountingAnalyzer {
        started_from: Mutex::new(Vec::new()),
    });
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        apply_route(70, 30),
        event("Advanced"),
        status_write(&restarted, move |b| {
            assert_eq!(
                b["status"]["serin"]["analysis"],
                json!({"run": run_id, "judge": {"looks": 2}}),
                "{b}"
            );
        }),
    ];
    let (result, _) = run(
        parse(restarted),
        now + Duration::from_secs(60),
        second.clone(),
        calls,
    )
    .await;
    result.unwrap();
    assert_eq!(
        second.started_from.lock().unwrap().as_slice(),
        &[Some(AnalysisState {
            run: run_id,
            judge: Some(json!({"looks": 1}))
        })]
    );
}

#[tokio::test]
async fn a_tick_without_a_look_keeps_the_saved_state_and_a_finished_run_drops_it() {
    let canary = canary_json(json!({}));
    let (status, at) = status_where(&canary, |_| {}, |s| s.phase == Phase::Promoting);
    let run_id = status.run.as_ref().unwrap().id;
    let mut canary = with_status(canary, &status);
    canary["status"]["serin"]["analysis"] = json!({"run": run_id, "judge": {"looks": 3}});
    // Promoting runs no checks: the state stays.
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:2", 2, false))),
        event("Halted"),
        status_write(&canary, move |b| {
            assert_eq!(b["status"]["serin"]["analysis"]["judge"]["looks"], 3, "{b}");
        }),
    ];
    let (result, _) = run(
        parse(canary.clone()),
        at + Duration::from_secs(60),
        analyzer(vec![]),
        calls,
    )
    .await;
    result.unwrap();
    // A state of an earlier run is not carried into the status of a later one.
    let mut idle = canary_json(json!({}));
    let (status, at) = status_where(&idle, |_| {}, |s| s.phase == Phase::Succeeded);
    idle = with_status(idle, &status);
    idle["status"]["serin"]["analysis"] = json!({"run": run_id + 7, "judge": {"looks": 3}});
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:2", 2, true))),
        status_write(&idle, |b| {
            assert!(b["status"]["serin"].get("analysis").is_none(), "{b}");
        }),
    ];
    let (result, _) = run(
        parse(idle),
        at + Duration::from_secs(60),
        analyzer(vec![]),
        calls,
    )
    .await;
    result.unwrap();
}

// ---------------------------------------------------------------- failed notifications

#[tokio::test]
async fn a_failed_event_webhook_is_in_the_history_not_only_the_log() {
    // The receiver stays down (its script is empty: every answer is 500).
    let hook = common::receiver::receiver(vec![]).await;
    let canary = canary_json(json!({"webhooks": [
        {"name": "chat", "type": "event", "url": format!("http://{}/events", hook.addr)}
    ]}));
    let (status, at) = status_where(
        &canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == 10,
    );
    let canary = with_status(canary, &status);
    let written = Arc::new(Mutex::new(Value::Null));
    let w = written.clone();
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        apply_route(80, 20),
        event("Advanced"),
        status_write(&canary, move |b| {
            assert_eq!(b["status"]["canaryWeight"], 20, "the rollout went on");
            let hist = b["status"]["serin"]["history"].as_array().unwrap();
            let failed: Vec<&Value> = hist
                .iter()
                .filter(|h| h["kind"] == "notificationFailed")
                .collect();
            assert_eq!(failed.len(), 1, "once per tick: {hist:?}");
            let m = failed[0]["message"].as_str().unwrap();
            assert!(
                m.contains("event webhook \"chat\" was not delivered") && m.contains("500"),
                "{m}"
            );
            assert_eq!(failed[0]["gates"][0]["name"], "chat");
            assert_eq!(failed[0]["gates"][0]["passed"], false);
            assert_eq!(failed[0]["canaryWeight"], 20);
            *w.lock().unwrap() = b["status"].clone();
        }),
    ];
    let (result, _) = run(
        parse(canary.clone()),
        at + Duration::from_secs(60),
        analyzer(vec![pass()]),
        calls,
    )
    .await;
    result.unwrap();

    // The next tick fails the same way: the history keeps the latest failure only, so a
    // receiver that stays down cannot push the checks out of the bounded history.
    let mut next = canary;
    next["status"] = written.lock().unwrap().clone();
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        apply_route(70, 30),
        event("Advanced"),
        status_write(&next, |b| {
            let hist = b["status"]["serin"]["history"].as_array().unwrap();
            let failed: Vec<&Value> = hist
                .iter()
                .filter(|h| h["kind"] == "notificationFailed")
                .collect();
            assert_eq!(failed.len(), 1, "{hist:?}");
            assert_eq!(failed[0]["canaryWeight"], 30, "the latest one");
            let checks = hist.iter().filter(|h| !h["checks"].is_null()).count();
            assert!(checks >= 2, "both ticks' checks are kept: {hist:?}");
        }),
    ];
    let (result, _) = run(
        parse(next),
        at + Duration::from_secs(120),
        analyzer(vec![pass()]),
        calls,
    )
    .await;
    result.unwrap();
}

#[tokio::test]
async fn an_undeliverable_alert_is_in_the_history_naming_its_provider() {
    let canary = canary_json(json!({"alerts": [
        {"name": "on-call", "severity": "error", "providerRef": {"name": "slack"}}
    ]}));
    let (status, at) = status_where(
        &canary,
        |sim| sim.world.checks = vec![fail()],
        |s| s.phase == Phase::Progressing && s.failed_checks == 1,
    );
    let canary = with_status(canary, &status);
    let calls = vec![
        get_target(deployment("podinfo:2", 2, true)),
        get_primary(Some(primary("podinfo:1", 2, true))),
        event("Halted"),
        apply_route(100, 0),
        scale_target(0),
        event("RolledBack"),
        expect(
            "GET",
            format!("/apis/serin.dev/v1beta1/namespaces/{NS}/alertproviders/slack"),
        )
        .not_found(),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Failed");
            let hist = b["status"]["serin"]["history"].as_array().unwrap();
            let failed = hist
                .iter()
                .find(|h| h["kind"] == "notificationFailed")
                .unwrap_or_else(|| panic!("no notificationFailed entry in {hist:?}"));
            let m = failed["message"].as_str().unwrap();
            assert!(
                m.contains("alert \"on-call\" through test/slack was not delivered")
                    && m.contains("does not exist"),
                "{m}"
            );
        }),
    ];
    let (result, _) = run(
        parse(canary),
        at + Duration::from_secs(60),
        analyzer(vec![fail()]),
        calls,
    )
    .await;
    result.unwrap();
}

// ---------------------------------------------------------------- the controller's watches

/// A fake cluster for the running controller: answers by route, not in a fixed order (the
/// watches of Canaries, Deployments, DaemonSets and Services run concurrently). Lists return
/// the objects; watches are held open, except that the first Deployment watch delivers `change`
/// once `deploy` fires. Status writes are reported on `writes`.
struct FakeCluster {
    canary: Value,
    target: Mutex<Value>,
    primary: Value,
}

async fn serve_cluster(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
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
                let send: tower_test::mock::SendResponse<Response<Body>> = deployment_watch.take().unwrap();
                let mut object = changed;
                object["metadata"]["resourceVersion"] = json!("11");
                let line = serde_json::to_vec(&json!({"type": "MODIFIED", "object": object})).unwrap();
                send.send_response(Response::builder().status(200).body(Body::from(line)).unwrap());
                continue;
            }
        };
        let Some((req, send)) = next else { return };
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let watch = query.contains("watch=true");
        calls.lock().unwrap().push(format!(
            "{method} {path}{}",
            if watch { " (watch)" } else { "" }
        ));
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
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
            ("GET", "/apis/apps/v1/daemonsets" | "/api/v1/services") if watch => None,
            ("GET", "/apis/apps/v1/daemonsets" | "/api/v1/services") => {
                Some((200, list("List", vec![])))
            }
            ("GET", p) if p == format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo") => {
                Some((200, target))
            }
            ("GET", p)
                if p == format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo-primary") =>
            {
                Some((200, cluster.primary.clone()))
            }
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
            Some((code, v)) => send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&v).unwrap()))
                    .unwrap(),
            ),
            None => held.push(send),
        }
    }
}

#[tokio::test]
async fn a_new_target_revision_starts_the_run_at_once_not_at_the_next_interval() {
    use serin_controller::metrics::Health;
    use serin_kube::run_controller;
    // The canary was initialized at rev podinfo:1 five seconds ago; its next tick is 55s away.
    let canary = canary_json(json!({}));
    let c: Canary = serde_json::from_value(canary.clone()).unwrap();
    let (_, ctx) = serin_controller::plan::context(NS, &c).unwrap();
    let mut sim = Sim::new(
        ctx.plan.clone(),
        &revision("podinfo:1"),
        Timestamp::from_millis(T0),
    );
    assert!(sim.tick_until(5, |s| s.phase == Phase::Initialized));
    let now = sim.status.last_tick_at.unwrap() + Duration::from_secs(5);
    let mut canary = with_status(canary, &sim.status);
    canary["metadata"]["resourceVersion"] = json!("9");
    let mut owned_primary = primary("podinfo:1", 2, true);
    owned_primary["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo",
        "uid": "c-uid-1", "controller": true
    }]);
    let cluster = Arc::new(FakeCluster {
        canary,
        target: Mutex::new(deployment("podinfo:1", 0, true)),
        primary: owned_primary,
    });

    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, NS);
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
    let config = KubeConfig {
        default_provider: "serin".into(),
        analyzer: analyzer(vec![pass()]),
        probe: None,
        namespace: None,
        reporter: "serin-controller".into(),
        instance: None,
        clock: Arc::new(move || now),
        webhook_backoff: Duration::from_millis(10),
    };
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

    deploy_tx.send(deployment("podinfo:2", 0, true)).unwrap();
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
    // The first call after the change was the tick reading the target.
    let after: Vec<&String> = calls
        .iter()
        .filter(|c| c.contains("/namespaces/"))
        .collect();
    assert_eq!(
        after.first().map(|c| c.as_str()),
        Some(format!("GET /apis/apps/v1/namespaces/{NS}/deployments/podinfo").as_str()),
        "{after:?}"
    );
}

#[test]
fn a_target_change_wakes_the_canaries_targeting_it_and_an_owned_primary_wakes_its_owner() {
    use k8s_openapi::api::apps::v1::Deployment;
    use serin_api::TargetKind;
    use serin_kube::watch::canaries_to_wake;
    let canary = canary_json(json!({}));
    let c: Canary = serde_json::from_value(canary.clone()).unwrap();
    let (_, ctx) = serin_controller::plan::context(NS, &c).unwrap();
    let mut sim = Sim::new(
        ctx.plan.clone(),
        &revision("podinfo:1"),
        Timestamp::from_millis(T0),
    );
    assert!(sim.tick_until(5, |s| s.phase == Phase::Initialized));
    let canaries = vec![parse(with_status(canary, &sim.status))];
    let template = |image: &str| {
        let d: Deployment = serde_json::from_value(deployment(image, 2, true)).unwrap();
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

// ---------------------------------------------------------------- leader election

fn lease(holder: &str, renew: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "serin-controller", "namespace": "serin-system", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew, "acquireTime": renew, "leaseTransitions": 3}
    })
}

async fn elect(now_ms: i64, calls: Vec<Expect>) -> Result<bool, AdapterError> {
    use serin_kube::{LeaderElection, LeaseConfig};
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, NS);
    let election = LeaderElection::new(
        client,
        LeaseConfig {
            name: "serin-controller".into(),
            namespace: "serin-system".into(),
            identity: "pod-a".into(),
            duration: Duration::from_secs(15),
        },
    );
    let server = tokio::spawn(Scenario { handle }.play(calls));
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        election.try_acquire_or_renew(Timestamp::from_millis(now_ms)),
    )
    .await
    .unwrap();
    let mut handle = server.await.unwrap();
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await
    {
        panic!("unexpected extra call {} {}", req.method(), req.uri());
    }
    r
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

// Expiry, take-over and races are judged over time: see kube_leader_election.rs.

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

// ---------------------------------------------------------------- DaemonSet targets

fn daemonset(image: &str, node_selector: Option<Value>) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "podinfo", "namespace": NS, "generation": 2, "labels": {"app": "podinfo"}},
        "spec": {
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfo", "image": image}]}
            }
        },
        "status": {"observedGeneration": 2, "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3, "numberReady": 3, "numberMisscheduled": 0}
    });
    if let Some(ns) = node_selector {
        d["spec"]["template"]["spec"]["nodeSelector"] = ns;
    }
    d
}

#[tokio::test]
async fn a_daemonset_target_is_scaled_to_zero_with_a_node_selector_that_does_not_change_its_revision()
 {
    let mut canary = canary_json(json!({}));
    canary["spec"]["targetRef"]["kind"] = json!("DaemonSet");
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

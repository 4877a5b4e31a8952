//! Kubernetes scenarios in the controller-rs style: a `kube::Client` over a `tower_test` mock.
//! Each scenario lists every API call the controller must make — method, path, and what the body
//! must say — and answers it as the API server would. A missing call, an extra call or a call in
//! the wrong order fails the test; every scenario is bounded by a timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::{Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action as Requeue;
use serde_json::{Value, json};
use serin_api::Canary;
use serin_controller::adapters::{AdapterError, Analyzer, CanaryContext, ErrorKind};
use serin_controller::kubernetes::workloads::template_revision;
use serin_controller::kubernetes::{Context, KubeConfig, ReconcileError, error_policy, reconcile};
use serin_controller::metrics::Metrics;
use serin_core::sim::Sim;
use serin_core::{CheckResult, Phase, Status, Timestamp, Verdict};
use tower_test::mock::{Handle, SendResponse};

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

fn context(client: Client, now: Timestamp, analyzer: Arc<FixedAnalyzer>) -> Arc<Context> {
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

// ---------------------------------------------------------------- the fake API server

type Check = Box<dyn FnOnce(&Value) + Send>;
type Answer = Box<dyn FnOnce(Value) -> (u16, Value) + Send>;

struct Expect {
    method: &'static str,
    path: String,
    check: Check,
    answer: Answer,
}

fn expect(method: &'static str, path: impl Into<String>) -> Expect {
    Expect {
        method,
        path: path.into(),
        check: Box::new(|_| {}),
        answer: Box::new(|body| (200, body)),
    }
}

impl Expect {
    fn check(mut self, f: impl FnOnce(&Value) + Send + 'static) -> Self {
        self.check = Box::new(f);
        self
    }
    fn reply(mut self, code: u16, body: Value) -> Self {
        self.answer = Box::new(move |_| (code, body));
        self
    }
    fn not_found(self) -> Self {
        self.reply(404, status_err(404, "NotFound", "not found"))
    }
}

fn status_err(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

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

struct Scenario {
    handle: Handle<Request<Body>, Response<Body>>,
}

impl Scenario {
    async fn play(mut self, calls: Vec<Expect>) -> Handle<Request<Body>, Response<Body>> {
        for (i, e) in calls.into_iter().enumerate() {
            let next =
                tokio::time::timeout(Duration::from_secs(5), self.handle.next_request()).await;
            let (req, send): (Request<Body>, SendResponse<Response<Body>>) = next
                .unwrap_or_else(|_| {
                    panic!(
                        "call #{i}: expected {} {} but the controller made no call",
                        e.method, e.path
                    )
                })
                .expect("the client went away");
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let ssa = req
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/apply-patch+yaml");
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            assert_eq!(
                (method.as_str(), path.as_str()),
                (e.method, e.path.as_str()),
                "call #{i} (query {query}, body {body})"
            );
            if method == "PATCH" && ssa {
                assert!(
                    query.contains("fieldManager=serin") && query.contains("force=true"),
                    "server-side apply as serin: {query}"
                );
            }
            (e.check)(&body);
            let (code, answer) = (e.answer)(body);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
        self.handle
    }
}

/// Runs one reconcile against `calls`; returns its result after checking no call was left over.
async fn run(
    canary: Arc<Canary>,
    now: Timestamp,
    analyzer: Arc<FixedAnalyzer>,
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
    use serin_controller::kubernetes::backoff;
    assert_eq!(backoff(ErrorKind::Conflict, 0), Duration::from_millis(200));
    assert_eq!(backoff(ErrorKind::Other, 3), Duration::from_secs(8));
    assert_eq!(backoff(ErrorKind::Forbidden, 10), Duration::from_secs(300));
}

#[tokio::test]
async fn the_prometheus_analyzer_never_passes_what_it_could_not_measure() {
    use serin_controller::kubernetes::analysis::PrometheusAnalyzer;
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
        "spec": {"provider": {"type": "datadog", "address": "https://api.datadoghq.com"}, "query": "avg:errors{*}"}
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
        results[1].detail.contains("templateRef") && results[1].detail.contains("datadog"),
        "{:?}",
        results[1]
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
    use serin_controller::kubernetes::{LeaderElection, LeaseConfig};
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

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_the_read_resource_version() {
    let r = elect(
        T0,
        vec![
            expect("GET", format!("{LEASE}/serin-controller"))
                .reply(200, lease("pod-b", "2023-11-14T22:12:00.000000Z", "7")),
            expect("PUT", format!("{LEASE}/serin-controller")).check(|b| {
                assert_eq!(
                    b["metadata"]["resourceVersion"], "7",
                    "compare-and-swap on what was read"
                );
                assert_eq!(b["spec"]["holderIdentity"], "pod-a");
                assert_eq!(b["spec"]["leaseTransitions"], 4);
            }),
        ],
    )
    .await;
    assert!(r.unwrap());
}

#[tokio::test]
async fn losing_the_race_for_an_expired_lease_is_not_an_error() {
    let r = elect(
        T0,
        vec![
            expect("GET", format!("{LEASE}/serin-controller"))
                .reply(200, lease("pod-b", "2023-11-14T22:12:00.000000Z", "7")),
            expect("PUT", format!("{LEASE}/serin-controller")).reply(
                409,
                status_err(409, "Conflict", "the object has been modified"),
            ),
        ],
    )
    .await;
    assert!(!r.unwrap());
}

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

//! The cluster the scenarios play against: builders for its objects (a Canary, its target and
//! primary, Secrets), the status a real controller would have persisted, the analyzer's part,
//! and the expected calls the scenarios are made of.

// What every scenario speaks in, so that a topic module needs one `use`.
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;

pub use async_trait::async_trait;
pub use k8s_openapi::api::apps::v1::Deployment;
pub use kube::runtime::controller::Action as Requeue;
pub use serde_json::{Value, json};
pub use serin_api::Canary;
pub use serin_controller::adapters::{
    AdapterError, AnalysisState, Analyzer, CanaryContext, Checked, ErrorKind,
};
pub use serin_controller::metrics::Metrics;
pub use serin_controller::testing::receiver;
pub use serin_core::sim::Sim;
pub use serin_core::{CheckResult, Phase, Status, Timestamp, Verdict};
pub use serin_kube::testing::{
    Call, Expect, Handle, assert_no_more_calls, expect, mock_client, play, respond, scenario,
    status_err,
};
pub use serin_kube::workloads::template_revision;
pub use serin_kube::{Context, KubeConfig, ReconcileError, error_policy, reconcile};

pub const NS: &str = "test";
pub const T0: i64 = 1_700_000_000_000;

// ---------------------------------------------------------------- objects

/// A Canary `podinfo` on Deployment `podinfo`, port 9898, analysed every minute (threshold 2,
/// steps of 10 up to 30, request-success-rate ≥ 99), as the API server stores it.
#[derive(Clone)]
pub struct CanaryBuilder(Value);

pub fn canary(name: &str) -> CanaryBuilder {
    CanaryBuilder(json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": NS, "uid": "c-uid-1", "resourceVersion": "41", "generation": 1},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898},
            "analysis": {
                "interval": "1m", "threshold": 2, "maxWeight": 30, "stepWeight": 10,
                "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]
            }
        }
    }))
}

impl CanaryBuilder {
    fn set(mut self, path: &[&str], value: Value) -> Self {
        let (last, parents) = path.split_last().expect("a non-empty path");
        let mut at = &mut self.0;
        for p in parents {
            at = &mut at[*p];
        }
        at[*last] = value;
        self
    }

    pub fn interval(self, interval: &str) -> Self {
        self.set(&["spec", "analysis", "interval"], json!(interval))
    }
    pub fn metrics(self, metrics: Value) -> Self {
        self.set(&["spec", "analysis", "metrics"], metrics)
    }
    pub fn webhooks(self, hooks: Value) -> Self {
        self.set(&["spec", "analysis", "webhooks"], hooks)
    }
    pub fn alerts(self, alerts: Value) -> Self {
        self.set(&["spec", "analysis", "alerts"], alerts)
    }
    pub fn provider(self, provider: &str) -> Self {
        self.set(&["spec", "provider"], json!(provider))
    }
    pub fn gateways(self, gateways: &[&str]) -> Self {
        self.set(&["spec", "service", "gateways"], json!(gateways))
    }
    pub fn traffic_policy(self, policy: Value) -> Self {
        self.set(&["spec", "service", "trafficPolicy"], policy)
    }
    pub fn revert_on_deletion(self) -> Self {
        self.set(&["spec", "revertOnDeletion"], json!(true))
    }
    pub fn daemonset_target(self) -> Self {
        self.set(&["spec", "targetRef", "kind"], json!("DaemonSet"))
    }
    pub fn build(self) -> Value {
        self.0
    }
}

/// Deployment `podinfo` running `image`: 2 replicas, all available.
pub struct DeploymentBuilder {
    name: &'static str,
    image: String,
    replicas: i32,
    ready: bool,
}

pub fn deployment(image: &str) -> DeploymentBuilder {
    DeploymentBuilder {
        name: "podinfo",
        image: image.into(),
        replicas: 2,
        ready: true,
    }
}

/// The primary Serin made of `podinfo` (selecting `app: podinfo-primary`), running `image`.
pub fn primary(image: &str) -> DeploymentBuilder {
    DeploymentBuilder {
        name: "podinfo-primary",
        ..deployment(image)
    }
}

impl DeploymentBuilder {
    pub fn replicas(self, replicas: i32) -> Self {
        Self { replicas, ..self }
    }
    /// Rolling out: none of its replicas available yet.
    pub fn not_ready(self) -> Self {
        Self {
            ready: false,
            ..self
        }
    }
    pub fn build(self) -> Value {
        let (name, replicas) = (self.name, self.replicas);
        let available = if self.ready { replicas } else { 0 };
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "generation": 3, "labels": {"app": "podinfo"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "podinfo", "image": self.image, "ports": [{"name": "http", "containerPort": 9898}]}]}
                }
            },
            "status": {"observedGeneration": 3, "replicas": replicas, "updatedReplicas": replicas, "availableReplicas": available, "readyReplicas": available}
        })
    }
}

impl From<DeploymentBuilder> for Value {
    fn from(d: DeploymentBuilder) -> Value {
        d.build()
    }
}

/// DaemonSet `podinfo` running `image` on 3 nodes, all ready; its pods on the nodes
/// `node_selector` picks.
pub fn daemonset(image: &str, node_selector: Option<Value>) -> Value {
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

/// A Secret in the scenarios' namespace, built from the typed object.
pub fn secret(name: &str, data: &[(&str, &[u8])]) -> Value {
    serin_kube::testing::secret(NS, name, data)
}

/// The pod-template revision of `podinfo` running `image`.
pub fn revision(image: &str) -> String {
    let d: Deployment = serde_json::from_value(deployment(image).build()).unwrap();
    template_revision(&d.spec.unwrap().template)
}

// ---------------------------------------------------------------- status

pub fn with_status(mut canary: Value, status: &Status) -> Value {
    canary["status"] = json!({"phase": status.phase.as_str(), "canaryWeight": status.canary_weight, "serin": {"state": status, "history": []}});
    canary
}

/// The Canary being deleted while Serin's finalizer holds it.
pub fn deleting(mut canary: Value) -> Value {
    canary["metadata"]["finalizers"] = json!(["serin.dev/finalizer"]);
    canary["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    canary
}

/// The Canary annotated with a command (`serin.dev/command`), as `serin` writes it.
pub fn with_command(mut canary: Value, command: &str) -> Value {
    canary["metadata"]["annotations"] = json!({"serin.dev/command": command});
    canary
}

pub fn parse(canary: Value) -> Arc<Canary> {
    Arc::new(serde_json::from_value(canary).unwrap())
}

/// A simulation of `canary`'s engine at revision `podinfo:1`, at T0.
pub fn sim(canary: &Value) -> Sim {
    let c: Canary = serde_json::from_value(canary.clone()).unwrap();
    let (_, ctx) = serin_controller::plan::context(NS, &c).unwrap();
    Sim::new(ctx.plan, &revision("podinfo:1"), Timestamp::from_millis(T0))
}

/// The engine status a real controller would have persisted after playing `sim` until `done`.
pub fn status_where(
    canary: &Value,
    sim_setup: impl FnOnce(&mut Sim),
    done: impl Fn(&Status) -> bool,
) -> (Status, Timestamp) {
    let mut sim = sim(canary);
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

/// The status of a run of `podinfo:2` progressing at `weight`, every check passing so far.
pub fn progressing_at(canary: &Value, weight: u32) -> (Status, Timestamp) {
    status_where(
        canary,
        |_| {},
        |s| s.phase == Phase::Progressing && s.canary_weight == weight,
    )
}

// ---------------------------------------------------------------- the analyzer's part

pub fn pass() -> CheckResult {
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

pub fn fail() -> CheckResult {
    CheckResult {
        verdict: Verdict::Fail,
        value: Some(91.5),
        ..pass()
    }
}

/// The analyzer plays its part of the scenario: fixed results, counting calls.
pub struct FixedAnalyzer {
    results: Vec<CheckResult>,
    pub calls: Mutex<u32>,
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

pub fn analyzer(results: Vec<CheckResult>) -> Arc<FixedAnalyzer> {
    Arc::new(FixedAnalyzer {
        results,
        calls: Mutex::new(0),
    })
}

pub fn config(now: Timestamp, analyzer: Arc<dyn Analyzer>, instance: Option<&str>) -> KubeConfig {
    KubeConfig {
        default_provider: "serin".into(),
        analyzer,
        probe: None,
        namespace: None,
        reporter: "serin-controller".into(),
        instance: instance.map(str::to_string),
        clock: Arc::new(move || now),
        webhook_backoff: Duration::from_millis(10),
    }
}

// ---------------------------------------------------------------- expected calls

/// A status write is answered with the Canary carrying the new status.
pub fn status_write(canary: &Value, check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    let c = canary.clone();
    expect(
        "PATCH",
        format!("/apis/serin.dev/v1beta1/namespaces/{NS}/canaries/podinfo/status"),
    )
    .check(check)
    .answer(move |body| {
        let mut c = c;
        c["status"] = body["status"].clone();
        (200, c)
    })
}

pub fn event(reason: &'static str) -> Expect {
    expect(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
    )
    .check(move |b| {
        assert_eq!(b["reason"], reason, "event reason; body {b}");
        assert_eq!(b["regarding"]["name"], "podinfo");
    })
}

pub fn get_target(d: impl Into<Value>) -> Expect {
    expect(
        "GET",
        format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo"),
    )
    .reply(200, d.into())
}

pub fn get_primary(d: impl Into<Value>) -> Expect {
    no_primary().reply(200, d.into())
}

/// The primary is read and does not exist (yet).
pub fn no_primary() -> Expect {
    expect(
        "GET",
        format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo-primary"),
    )
    .not_found()
}

pub fn apply_primary(check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo-primary"),
    )
    .check(check)
}

pub fn apply_service(name: &'static str, selector: &'static str) -> Expect {
    expect("PATCH", format!("/api/v1/namespaces/{NS}/services/{name}")).check(move |b| {
        assert_eq!(b["spec"]["selector"]["app"], selector, "{name} selector");
        assert_eq!(b["spec"]["ports"][0]["port"], 9898);
        assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "c-uid-1");
    })
}

pub fn apply_route(primary: u32, canary: u32) -> Expect {
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

/// The HTTPRoute `podinfo` deleted, answered as the API server answers a DELETE.
pub fn delete_route() -> Expect {
    expect(
        "DELETE",
        format!("/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/podinfo"),
    )
    .reply(200, status_err(200, "", "deleted"))
}

pub fn scale_target(replicas: i32) -> Expect {
    expect(
        "PATCH",
        format!("/apis/apps/v1/namespaces/{NS}/deployments/podinfo"),
    )
    .check(move |b| {
        assert_eq!(b, &json!({"spec": {"replicas": replicas}}));
    })
}

pub fn get_secret(name: &str) -> Expect {
    expect("GET", format!("/api/v1/namespaces/{NS}/secrets/{name}"))
}

/// Runs one reconcile against `calls`; returns its result after checking no call was left over.
pub async fn run(
    canary: Arc<Canary>,
    now: Timestamp,
    analyzer: Arc<dyn Analyzer>,
    calls: Vec<Expect>,
) -> (Result<Requeue, ReconcileError>, Arc<Context>) {
    let (client, handle) = mock_client(NS);
    let config = config(now, analyzer, Some("serin-controller-0"));
    let ctx = Arc::new(Context::new(client, config, Arc::new(Metrics::new())));
    let server = tokio::spawn(play(handle, calls));
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(canary, ctx.clone()))
        .await
        .expect("reconcile did not finish within 10s");
    let mut handle = server.await.expect("scenario failed");
    assert_no_more_calls(&mut handle).await;
    (result, ctx)
}

pub fn cond<'a>(b: &'a Value, t: &str) -> &'a Value {
    b["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap_or_else(|| panic!("no {t} condition in {b}"))
}

/// The calls of the first reconcile of a new Canary (target `podinfo:1`, no primary yet) whose
/// run halts: the primary and the three Services are made, then the `halted` Event goes out and
/// the status is written, `check` reading it.
pub fn bootstrapping_halted(
    canary: &Value,
    halted: Expect,
    check: impl FnOnce(&Value) + Send + 'static,
) -> Vec<Expect> {
    vec![
        get_target(deployment("podinfo:1")),
        no_primary(),
        get_target(deployment("podinfo:1")),
        apply_primary(|_| {}),
        apply_service("podinfo-primary", "podinfo-primary"),
        apply_service("podinfo-canary", "podinfo"),
        apply_service("podinfo", "podinfo-primary"),
        halted,
        status_write(canary, check),
    ]
}

/// The calls of a tick that rolls `podinfo:2` back (the primary at `podinfo:1`): "Halted", all
/// traffic to the primary, the target scaled to zero, "RolledBack", then the status write that
/// `check` reads.
pub fn rolling_back(canary: &Value, check: impl FnOnce(&Value) + Send + 'static) -> Vec<Expect> {
    vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        event("Halted"),
        apply_route(100, 0),
        scale_target(0),
        event("RolledBack"),
        status_write(canary, check),
    ]
}

/// The calls of a tick that promotes `podinfo:2` (the Canary at its last step): the target and
/// the primary are read, read again for the promotion (the primary with 3 replicas), and the
/// primary is applied with the target's image and whatever else `check` asserts.
pub fn promoting(check: impl FnOnce(&Value) + Send + 'static) -> Vec<Expect> {
    vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1").replicas(3)),
        apply_primary(move |b| {
            assert_eq!(
                b["spec"]["template"]["spec"]["containers"][0]["image"],
                "podinfo:2"
            );
            check(b);
        }),
    ]
}

/// The calls of a deleted Canary with revertOnDeletion, mid-run: as Flagger's finalizer, the
/// target is scaled back to the primary's replicas and read ready; only then is the route
/// deleted (`delete_route`) and the apex Service made to select the target again, released;
/// then the finalizer goes.
pub fn handing_back(canary: &Value, delete_route: Expect) -> Vec<Expect> {
    let mut released = canary.clone();
    released["metadata"]["finalizers"] = json!([]);
    let mut calls = vec![
        get_target(deployment("podinfo:2")),
        get_primary(primary("podinfo:1")),
        // As Flagger's finalizer: the target is scaled up first...
        get_target(deployment("podinfo:2").replicas(0)),
        get_primary(primary("podinfo:1").replicas(3)),
        scale_target(3),
    ];
    // ...and looked at: ready...
    calls.push(get_target(deployment("podinfo:2").replicas(3)));
    calls.push(get_primary(primary("podinfo:1").replicas(3)));
    // ...and only then gets the traffic back.
    calls.extend([
        delete_route,
        get_target(deployment("podinfo:2").replicas(3)),
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
        event("Terminating"),
        status_write(canary, |b| assert_eq!(b["status"]["phase"], "Terminating")),
        expect(
            "PATCH",
            format!("/apis/serin.dev/v1beta1/namespaces/{NS}/canaries/podinfo"),
        )
        .check(|b| {
            assert_eq!(b["metadata"]["finalizers"], json!([]));
            assert_eq!(b["metadata"]["resourceVersion"], "41");
        })
        .reply(200, released),
    ]);
    calls
}

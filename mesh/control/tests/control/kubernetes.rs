//! The Kubernetes source against a mocked API server (tower-test): every expected call is
//! asserted by method and URI (and the status patches by body), answered as the API server
//! would; a missing or extra call fails the test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use serin_mesh_api::table::{Authority, RouteTable};
use serin_mesh_control::hub::Hub;
use serin_mesh_control::translate::Options;
use tower_test::mock::{Handle, SendResponse};

// Calls are logged for the install's RBAC check (controller/kube/tests/kubernetes/rbac.rs).
#[path = "../../../../controller/kube/src/testing/api_log.rs"]
mod api_log;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Routes,
    Splits,
    Services,
    Slices,
    Grants,
    Pods,
    /// TrafficSplits at an older SMI version (`v1alpha3`, ...), listed when newer ones are not
    /// served.
    OldSplits(&'static str),
}

/// The older TrafficSplit versions the source falls back to, newest first.
const OLD_SPLITS: [(Kind, &str); 3] = [
    (
        Kind::OldSplits("v1alpha3"),
        "/apis/split.smi-spec.io/v1alpha3/trafficsplits",
    ),
    (
        Kind::OldSplits("v1alpha2"),
        "/apis/split.smi-spec.io/v1alpha2/trafficsplits",
    ),
    (
        Kind::OldSplits("v1alpha1"),
        "/apis/split.smi-spec.io/v1alpha1/trafficsplits",
    ),
];

const KINDS: [(Kind, &str); 6] = [
    (
        Kind::Routes,
        "/apis/gateway.networking.k8s.io/v1/httproutes",
    ),
    (
        Kind::Splits,
        "/apis/split.smi-spec.io/v1alpha4/trafficsplits",
    ),
    (Kind::Services, "/api/v1/services"),
    (Kind::Slices, "/apis/discovery.k8s.io/v1/endpointslices"),
    (
        Kind::Grants,
        "/apis/gateway.networking.k8s.io/v1beta1/referencegrants",
    ),
    (Kind::Pods, "/api/v1/pods"),
];

/// What one API call was.
#[derive(Debug)]
enum Call {
    List(Kind),
    Watch(Kind),
    PatchStatus {
        namespace: String,
        name: String,
        body: Value,
    },
}

async fn next_call(handle: &mut ApiHandle) -> anyhow::Result<(Call, SendResponse<Response<Body>>)> {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .context("an expected API call never came")?
        .context("client gone")?;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    api_log::record(method.as_str(), &path, &query);
    if let Some((kind, _)) = KINDS.iter().chain(&OLD_SPLITS).find(|(_, p)| *p == path) {
        if method != Method::GET {
            bail!("unexpected {method} {path}");
        }
        return Ok((
            if query.contains("watch=true") {
                Call::Watch(*kind)
            } else {
                Call::List(*kind)
            },
            send,
        ));
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let [
        "apis",
        "gateway.networking.k8s.io",
        "v1",
        "namespaces",
        ns,
        "httproutes",
        name,
        "status",
    ] = parts[..]
    {
        if method != Method::PATCH {
            bail!("unexpected {method} {path}");
        }
        let ct = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if ct != "application/merge-patch+json" {
            bail!("status patch with content-type {ct:?}");
        }
        let (ns, name) = (ns.to_string(), name.to_string());
        let bytes = req.into_body().collect_bytes().await?;
        return Ok((
            Call::PatchStatus {
                namespace: ns,
                name,
                body: serde_json::from_slice(&bytes)?,
            },
            send,
        ));
    }
    bail!("unexpected call {method} {path}?{query}")
}

fn respond(send: SendResponse<Response<Body>>, body: Vec<u8>) {
    send.send_response(
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("response"),
    );
}

/// Answers with the API server's `Status` error body: `code`, `reason` (`NotFound`,
/// `Conflict`, ...) and `message`.
fn respond_failure(send: SendResponse<Response<Body>>, code: u16, reason: &str, message: &str) {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code});
    send.send_response(
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(status.to_string().into_bytes()))
            .expect("response"),
    );
}

/// Answers as the API server answers a list of a kind (or version) it does not serve: 404.
fn respond_not_served(send: SendResponse<Response<Body>>) {
    respond_failure(
        send,
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
}

fn list(kind: Kind, items: Vec<Value>) -> Vec<u8> {
    let list_kind = match kind {
        Kind::Routes => "HTTPRouteList",
        Kind::Splits | Kind::OldSplits(_) => "TrafficSplitList",
        Kind::Services => "ServiceList",
        Kind::Slices => "EndpointSliceList",
        Kind::Grants => "ReferenceGrantList",
        Kind::Pods => "PartialObjectMetadataList",
    };
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": list_kind,
        "metadata": {"resourceVersion": "100"},
        "items": items,
    }))
    .expect("json")
}

fn events(events: Vec<(&str, Value)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, obj) in events {
        out.extend(serde_json::to_vec(&json!({"type": t, "object": obj})).expect("json"));
        out.push(b'\n');
    }
    out
}

fn service(name: &str, ip: &str, rv: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "test", "resourceVersion": rv},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 9898, "protocol": "TCP"}]}})
}

/// The apex, primary and canary Services of `podinfo` (cluster IPs 10.96.0.1 to .3).
fn podinfo_services() -> Vec<Value> {
    ["podinfo", "podinfo-primary", "podinfo-canary"]
        .iter()
        .enumerate()
        .map(|(i, n)| service(n, &format!("10.96.0.{}", i + 1), "3"))
        .collect()
}

fn slice(service: &str, ready: &[(&str, bool)], rv: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abcde"), "namespace": "test", "resourceVersion": rv,
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ready.iter().map(|(ip, r)| json!({"addresses": [ip], "conditions": {"ready": r},
            "targetRef": {"kind": "Pod", "namespace": "test", "name": pod_name(ip)}})).collect::<Vec<_>>()})
}

/// The pod behind endpoint `ip` in these scenarios.
fn pod_name(ip: &str) -> String {
    format!("pod-{}", ip.replace('.', "-"))
}

/// A pod's metadata as the metadata-only watch returns it: created by Deployment `deployment`'s
/// ReplicaSet with template hash `hash`.
fn pod_meta(ip: &str, deployment: &str, hash: &str) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": pod_name(ip), "namespace": "test", "resourceVersion": "6",
            "labels": {"app": deployment, "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{deployment}-{hash}"), "uid": "rs", "controller": true}]}})
}

fn route(primary: i32, canary: i32, generation: i64, rv: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": "test", "generation": generation, "resourceVersion": rv},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "podinfo", "port": 9898}],
            "rules": [{"backendRefs": [
                {"name": "podinfo-primary", "port": 9898, "weight": primary},
                {"name": "podinfo-canary", "port": 9898, "weight": canary}]}]}})
}

fn bad_route() -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "bad", "namespace": "test", "generation": 1, "resourceVersion": "7"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
            "rules": [{"filters": [{"type": "URLRewrite"}], "backendRefs": [{"name": "web-v1", "port": 9898}]}]}})
}

fn split(rv: &str) -> Value {
    json!({"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
        "metadata": {"name": "web", "namespace": "test", "resourceVersion": rv},
        "spec": {"service": "web", "backends": [{"service": "web-v1", "weight": 70}, {"service": "web-v2", "weight": 30}]}})
}

/// `(backend, weight)` pairs of the last rule of `authority`, and the endpoints of `backend`.
fn weights(t: &RouteTable, authority: &str) -> Vec<(String, u32)> {
    let a: Authority = authority.parse().expect("authority");
    let Some(r) = t.routes.iter().find(|r| r.authority == a) else {
        return vec![];
    };
    r.rules
        .last()
        .map(|rule| {
            rule.backends
                .iter()
                .map(|b| (b.name.clone(), b.weight))
                .collect()
        })
        .unwrap_or_default()
}

fn endpoints(t: &RouteTable, authority: &str, backend: &str) -> usize {
    let a: Authority = authority.parse().expect("authority");
    t.routes
        .iter()
        .find(|r| r.authority == a)
        .and_then(|r| r.resolve_backend(backend))
        .map(|b| b.endpoints.len())
        .unwrap_or(usize::MAX)
}

/// Our `[(type, status, reason)]` conditions from a status patch body.
fn conditions(body: &Value) -> Vec<(String, String, String, i64)> {
    body["status"]["parents"][0]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
                c["observedGeneration"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The Kubernetes source running against a mocked API server: its handle, the hub it feeds,
/// and its task.
fn start_source() -> (ApiHandle, Arc<Hub>, tokio::task::JoinHandle<()>) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let hub = Hub::new(Options::default());
    let source = tokio::spawn(serin_mesh_control::k8s::source::run(
        client,
        Arc::clone(&hub),
    ));
    (handle, hub, source)
}

async fn until(hub: &Hub, what: &str, f: impl Fn(&RouteTable) -> bool) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if f(&hub.current().table("test")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .with_context(|| format!("table never showed: {what}"))
}

#[tokio::test]
async fn watch_events_for_routes_splits_services_and_slices_produce_the_expected_tables()
-> anyhow::Result<()> {
    let (mut handle, hub, source) = start_source();

    // Scene 1: the initial lists (every kind exactly once), a watch per kind (held open), and
    // one status patch per HTTPRoute once every kind has synced.
    let mut held: BTreeMap<Kind, SendResponse<Response<Body>>> = BTreeMap::new();
    let mut listed = Vec::new();
    let mut patches: BTreeMap<String, Value> = BTreeMap::new();
    for _ in 0..14 {
        let (call, send) = next_call(&mut handle).await?;
        match call {
            Call::List(kind) => {
                assert!(!listed.contains(&kind), "{kind:?} listed twice");
                listed.push(kind);
                let items = match kind {
                    Kind::Routes => vec![route(90, 10, 1, "5"), bad_route()],
                    Kind::Splits | Kind::OldSplits(_) => vec![split("8")],
                    Kind::Services => [
                        "podinfo",
                        "podinfo-primary",
                        "podinfo-canary",
                        "web",
                        "web-v1",
                        "web-v2",
                    ]
                    .iter()
                    .enumerate()
                    .map(|(i, n)| service(n, &format!("10.96.0.{}", i + 1), "3"))
                    .collect(),
                    Kind::Slices => vec![
                        slice(
                            "podinfo-primary",
                            &[("10.1.0.1", true), ("10.1.0.2", true)],
                            "4",
                        ),
                        slice(
                            "podinfo-canary",
                            &[("10.1.1.1", true), ("10.1.1.2", false)],
                            "4",
                        ),
                        slice("web-v1", &[("10.1.2.1", true)], "4"),
                    ],
                    Kind::Grants => vec![],
                    Kind::Pods => vec![
                        pod_meta("10.1.0.1", "podinfo-primary", "5f7b9c"),
                        pod_meta("10.1.0.2", "podinfo-primary", "5f7b9c"),
                        pod_meta("10.1.1.1", "podinfo-canary", "8c6d4e"),
                    ],
                };
                respond(send, list(kind, items));
            }
            Call::Watch(kind) => {
                assert!(listed.contains(&kind), "{kind:?} watched before listing");
                assert!(held.insert(kind, send).is_none(), "{kind:?} watched twice");
            }
            Call::PatchStatus {
                namespace,
                name,
                body,
            } => {
                assert_eq!(namespace, "test");
                respond(
                    send,
                    serde_json::to_vec(&json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": name, "namespace": "test"}, "spec": {}, "status": body["status"]}))?,
                );
                assert!(
                    patches.insert(name.clone(), body).is_none(),
                    "{name} patched twice"
                );
            }
        }
    }
    assert_eq!(
        conditions(&patches["podinfo"]),
        [
            ("Accepted".into(), "True".into(), "Accepted".into(), 1),
            (
                "ResolvedRefs".into(),
                "True".into(),
                "ResolvedRefs".into(),
                1
            )
        ]
    );
    assert_eq!(
        patches["podinfo"]["status"]["parents"][0]["controllerName"],
        "serin.dev/mesh-control"
    );
    let bad = conditions(&patches["bad"]);
    assert_eq!(
        (bad[0].1.as_str(), bad[0].2.as_str()),
        ("False", "UnsupportedValue"),
        "{bad:?}"
    );
    assert!(
        patches["bad"]["status"]["parents"][0]["conditions"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("spec.rules[0].filters[0].type"),
        "the message names the field"
    );

    let t = hub.current().table("test");
    assert_eq!(
        weights(&t, "podinfo.test.svc.cluster.local:9898"),
        [
            ("podinfo-primary".into(), 90),
            ("podinfo-canary".into(), 10)
        ]
    );
    assert_eq!(
        endpoints(&t, "podinfo:9898", "podinfo-canary"),
        1,
        "the not-ready pod is left out"
    );
    // Each endpoint carries its pod, the pod's template hash and its Deployment (from the
    // ReplicaSet owner), for the proxies' dst_pod / dst_pod_template_hash / dst_deployment.
    let authority: Authority = "podinfo:9898".parse()?;
    let podinfo = t
        .routes
        .iter()
        .find(|r| r.authority == authority)
        .context("podinfo route")?;
    let canary = podinfo
        .resolve_backend("podinfo-canary")
        .context("canary backend")?;
    let addr: std::net::SocketAddr = "10.1.1.1:8080".parse()?;
    assert_eq!(
        canary.endpoint_labels.get(&addr),
        Some(&BTreeMap::from([
            ("deployment".to_string(), "podinfo-canary".to_string()),
            ("pod".to_string(), "pod-10-1-1-1".to_string()),
            ("pod_template_hash".to_string(), "8c6d4e".to_string()),
        ])),
        "{:?}",
        canary.endpoint_labels
    );
    // The invalid route never took effect: the TrafficSplit still splits `web`.
    assert_eq!(
        weights(&t, "web"),
        [("web-v1".into(), 70), ("web-v2".into(), 30)]
    );
    assert_eq!(
        endpoints(&t, "web", "web-v2"),
        0,
        "a backend without endpoints gets none"
    );
    assert!(hub.is_ready());

    // Scene 2: each held watch delivers updates and ends; the watcher then watches again from
    // the last resourceVersion (held open), and the changed route gets a new status.
    let mut scripted = vec![
        (
            Kind::Routes,
            events(vec![("MODIFIED", route(50, 50, 2, "20"))]),
        ),
        (
            Kind::Slices,
            events(vec![(
                "MODIFIED",
                slice(
                    "podinfo-canary",
                    &[("10.1.1.1", true), ("10.1.1.2", true)],
                    "21",
                ),
            )]),
        ),
        (Kind::Splits, events(vec![("DELETED", split("22"))])),
        (
            Kind::Services,
            events(vec![
                ("DELETED", service("podinfo-primary", "10.96.0.2", "23")),
                ("ADDED", service("extra", "10.96.0.9", "24")),
            ]),
        ),
    ];
    for (kind, body) in scripted.drain(..) {
        let send = held.remove(&kind).context("held watch")?;
        respond(send, body);
    }
    for _ in 0..5 {
        let (call, send) = next_call(&mut handle).await?;
        match call {
            Call::Watch(kind) => {
                assert!(
                    held.insert(kind, send).is_none(),
                    "{kind:?} re-watched twice"
                );
            }
            Call::PatchStatus { name, body, .. } => {
                assert_eq!(name, "podinfo", "only the changed route gets a new status");
                let c = conditions(&body);
                assert_eq!(c[0].3, 2, "observedGeneration follows the route");
                // podinfo-primary is gone: references no longer resolve.
                assert_eq!(
                    (c[1].1.as_str(), c[1].2.as_str()),
                    ("False", "BackendNotFound"),
                    "{c:?}"
                );
                respond(
                    send,
                    serde_json::to_vec(&json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": "podinfo", "namespace": "test"}, "spec": {}}))?,
                );
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        held.len(),
        6,
        "every kind watches again (the grants' and pods' watches are still open)"
    );

    until(
        &hub,
        "50/50, both canary pods, split gone, primary gone, extra added",
        |t| {
            weights(t, "podinfo:9898")
                == [
                    ("podinfo-primary".to_string(), 50),
                    ("podinfo-canary".to_string(), 50),
                ]
                && endpoints(t, "podinfo:9898", "podinfo-canary") == 2
                && endpoints(t, "podinfo:9898", "podinfo-primary") == 0
                && weights(t, "web") == [("web".to_string(), 1)]
                && weights(t, "extra.test") == [("extra".to_string(), 1)]
        },
    )
    .await?;

    // No further call: nothing is polled or re-patched behind our back.
    let extra = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await;
    assert!(extra.is_err(), "unexpected extra API call");
    let status = hub.status();
    let bad = status
        .routes
        .iter()
        .find(|r| r.info.name == "bad")
        .context("bad route listed")?;
    assert!(!bad.info.valid);
    source.abort();
    Ok(())
}

#[tokio::test]
async fn a_cluster_without_the_smi_crd_still_gets_route_tables() -> anyhow::Result<()> {
    let (mut handle, hub, source) = start_source();
    let mut held = Vec::new();
    let mut patched = false;
    // Five lists, five watches, one status patch; TrafficSplit lists answer 404 at every
    // version (retried with backoff, so they may repeat) and never block the others.
    let mut calls = 0;
    while !(patched && held.len() == 5) {
        calls += 1;
        assert!(calls < 40, "runaway API calls");
        let (call, send) = next_call(&mut handle).await?;
        match call {
            Call::List(Kind::Splits | Kind::OldSplits(_)) => respond_not_served(send),
            Call::List(kind) => {
                let items = match kind {
                    Kind::Routes => vec![route(80, 20, 1, "5")],
                    Kind::Services => podinfo_services(),
                    Kind::Grants | Kind::Pods => vec![],
                    _ => vec![slice("podinfo-primary", &[("10.1.0.1", true)], "4")],
                };
                respond(send, list(kind, items));
            }
            Call::Watch(kind) => {
                assert!(
                    !matches!(kind, Kind::Splits | Kind::OldSplits(_)),
                    "no watch without a list"
                );
                held.push(send);
            }
            Call::PatchStatus { name, .. } => {
                assert_eq!(name, "podinfo");
                patched = true;
                respond(
                    send,
                    serde_json::to_vec(&json!({
                        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                        "metadata": {"name": "podinfo", "namespace": "test"}, "spec": {}}))?,
                );
            }
        }
    }
    assert!(hub.is_ready());
    assert_eq!(
        weights(&hub.current().table("test"), "podinfo:9898"),
        [
            ("podinfo-primary".into(), 80),
            ("podinfo-canary".into(), 20)
        ]
    );
    assert!(
        hub.metrics
            .encode()
            .contains(r#"serin_control_errors_total{kind="watch",reason="NotFound"}"#)
    );
    source.abort();
    Ok(())
}

#[tokio::test]
async fn a_cluster_serving_only_older_smi_versions_still_has_its_traffic_splits()
-> anyhow::Result<()> {
    // linkerd-smi serves TrafficSplit at v1alpha1 and v1alpha2 only: the v1alpha4 and
    // v1alpha3 lists answer 404, and the split is read at v1alpha2.
    let (mut handle, hub, source) = start_source();
    let mut held = Vec::new();
    let mut calls = 0;
    let old = json!({"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
        "metadata": {"name": "web", "namespace": "test", "resourceVersion": "8"},
        "spec": {"service": "web", "backends": [{"service": "web-v1", "weight": 70}, {"service": "web-v2", "weight": 30}]}});
    while held.len() < 6 {
        calls += 1;
        assert!(calls < 40, "runaway API calls");
        let (call, send) = next_call(&mut handle).await?;
        match call {
            Call::List(kind @ (Kind::Splits | Kind::OldSplits("v1alpha3"))) => {
                assert!(
                    !held.iter().any(|(k, _)| *k == Kind::OldSplits("v1alpha2")),
                    "{kind:?} listed after v1alpha2 was found"
                );
                respond_not_served(send);
            }
            Call::List(kind) => {
                let items = match kind {
                    Kind::OldSplits("v1alpha2") => vec![old.clone()],
                    Kind::Services => ["web", "web-v1", "web-v2"]
                        .iter()
                        .enumerate()
                        .map(|(i, n)| service(n, &format!("10.96.0.{}", i + 1), "3"))
                        .collect(),
                    Kind::Slices => vec![slice("web-v1", &[("10.1.2.1", true)], "4")],
                    Kind::OldSplits(v) => anyhow::bail!("listed {v} after v1alpha2 answered"),
                    _ => vec![],
                };
                respond(send, list(kind, items));
            }
            Call::Watch(kind) => held.push((kind, send)),
            Call::PatchStatus { name, .. } => anyhow::bail!("status patch for {name}"),
        }
    }
    until(&hub, "the v1alpha2 split", |t| {
        weights(t, "web") == [("web-v1".to_string(), 70), ("web-v2".to_string(), 30)]
    })
    .await?;
    source.abort();
    Ok(())
}

fn grant(name: &str, to_service: Option<&str>, rv: &str) -> Value {
    let mut to = json!({"group": "", "kind": "Service"});
    if let Some(n) = to_service {
        to["name"] = json!(n);
    }
    json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": "test", "resourceVersion": rv},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "shop"}],
            "to": [to]}})
}

/// A consumer route in namespace `shop` for Service test/podinfo, half of it to test/podinfo-canary.
fn shop_route() -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": "shop", "generation": 1, "resourceVersion": "6"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "podinfo", "namespace": "test", "port": 9898}],
            "rules": [{"backendRefs": [
                {"name": "podinfo-primary", "namespace": "test", "port": 9898, "weight": 50},
                {"name": "podinfo-canary", "namespace": "test", "port": 9898, "weight": 50}]}]}})
}

/// Ends the held ReferenceGrant watch with `body`, then answers what follows: the watch again
/// (held) and one status patch of shop/podinfo, whose ResolvedRefs `(status, reason)` it
/// returns.
async fn grants_change(
    handle: &mut ApiHandle,
    held: &mut BTreeMap<Kind, SendResponse<Response<Body>>>,
    body: Vec<u8>,
) -> anyhow::Result<(String, String)> {
    respond(held.remove(&Kind::Grants).context("grants watch")?, body);
    // The new watch and the status patch race each other; take them in either order.
    let mut resolved = None;
    while resolved.is_none() || !held.contains_key(&Kind::Grants) {
        let (call, send) = next_call(handle).await?;
        match call {
            Call::Watch(Kind::Grants) => {
                held.insert(Kind::Grants, send);
            }
            Call::PatchStatus {
                namespace,
                name,
                body,
            } => {
                assert_eq!((namespace.as_str(), name.as_str()), ("shop", "podinfo"));
                respond(send, patched_shop_route()?);
                let c = conditions(&body);
                resolved = Some((c[1].1.clone(), c[1].2.clone()));
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    resolved.context("no status patch")
}

/// What the API server answers to a status patch of shop/podinfo.
fn patched_shop_route() -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": "shop"}, "spec": {}}))?)
}

#[tokio::test]
async fn a_reference_grant_opens_a_cross_namespace_backend_and_its_removal_closes_it()
-> anyhow::Result<()> {
    let (mut handle, hub, source) = start_source();
    // Every kind listed once and watched (held), and the one route's status once all synced
    // (a watch call may come before or after it).
    let mut held: BTreeMap<Kind, SendResponse<Response<Body>>> = BTreeMap::new();
    let mut first = None;
    while first.is_none() || held.len() < 6 {
        let (call, send) = next_call(&mut handle).await?;
        match call {
            Call::List(kind) => {
                let items = match kind {
                    Kind::Routes => vec![shop_route()],
                    Kind::Services => podinfo_services(),
                    Kind::Slices => vec![
                        slice("podinfo-primary", &[("10.1.0.1", true)], "4"),
                        slice("podinfo-canary", &[("10.1.1.1", true)], "4"),
                    ],
                    // A grant for another Service only: not enough for the canary.
                    Kind::Grants => vec![grant("only-primary", Some("podinfo-primary"), "5")],
                    Kind::Splits | Kind::OldSplits(_) | Kind::Pods => vec![],
                };
                respond(send, list(kind, items));
            }
            Call::Watch(kind) => {
                assert!(held.insert(kind, send).is_none(), "{kind:?} watched twice");
            }
            Call::PatchStatus {
                namespace,
                name,
                body,
            } => {
                assert_eq!((namespace.as_str(), name.as_str()), ("shop", "podinfo"));
                respond(send, patched_shop_route()?);
                let c = conditions(&body);
                first = Some((c[1].1.clone(), c[1].2.clone()));
            }
        }
    }
    assert_eq!(
        first,
        Some(("False".to_string(), "RefNotPermitted".to_string()))
    );
    // Proxies in `shop` reach the granted primary but never the canary.
    let shop = |hub: &Hub| hub.current().table("shop");
    assert_eq!(
        endpoints(&shop(&hub), "podinfo.test:9898", "podinfo-primary"),
        1
    );
    assert_eq!(
        endpoints(&shop(&hub), "podinfo.test:9898", "podinfo-canary"),
        0
    );

    // A grant for every Service of `test` arrives: the canary opens up, the status follows.
    let resolved = grants_change(
        &mut handle,
        &mut held,
        events(vec![("ADDED", grant("all", None, "30"))]),
    )
    .await?;
    assert_eq!(resolved, ("True".to_string(), "ResolvedRefs".to_string()));
    until(&hub, "the canary reachable from shop", |_| {
        endpoints(&shop(&hub), "podinfo.test:9898", "podinfo-canary") == 1
    })
    .await?;

    // Both grants go: access is revoked again.
    let revoked = grants_change(
        &mut handle,
        &mut held,
        events(vec![
            ("DELETED", grant("all", None, "31")),
            (
                "DELETED",
                grant("only-primary", Some("podinfo-primary"), "32"),
            ),
        ]),
    )
    .await?;
    assert_eq!(
        revoked,
        ("False".to_string(), "RefNotPermitted".to_string())
    );
    until(&hub, "nothing of test reachable from shop", |_| {
        endpoints(&shop(&hub), "podinfo.test:9898", "podinfo-primary") == 0
            && endpoints(&shop(&hub), "podinfo.test:9898", "podinfo-canary") == 0
    })
    .await?;
    source.abort();
    Ok(())
}

/// `podinfo` as [`route`] makes it, with Linkerd's policy controller's entry in its status.
fn route_with_linkerd_status(rv: &str, linkerd_message: &str) -> Value {
    let mut r = route(90, 10, 1, rv);
    r["status"] = json!({"parents": [{
        "parentRef": {"group": "", "kind": "Service", "name": "podinfo", "port": 9898},
        "controllerName": "linkerd.io/policy-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
            "message": linkerd_message, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]});
    r
}

#[tokio::test]
async fn status_writes_are_conditional_and_keep_another_controllers_newer_entry()
-> anyhow::Result<()> {
    let (mut handle, hub, source) = start_source();
    // Scene 1: lists, watches (held), and our first status write, made against version 5 and
    // refused with 409: Linkerd wrote its entry meanwhile.
    let mut held: BTreeMap<Kind, SendResponse<Response<Body>>> = BTreeMap::new();
    let mut patched = false;
    let mut calls = 0;
    while !(patched && held.len() == KINDS.len()) {
        calls += 1;
        assert!(calls < 30, "runaway API calls");
        let (call, send) = next_call(&mut handle).await?;
        match call {
            Call::List(kind) => {
                let items = match kind {
                    Kind::Routes => vec![route_with_linkerd_status("5", "old")],
                    Kind::Services => podinfo_services(),
                    _ => vec![],
                };
                respond(send, list(kind, items));
            }
            Call::Watch(kind) => {
                assert!(held.insert(kind, send).is_none(), "{kind:?} watched twice");
            }
            Call::PatchStatus { body, .. } => {
                assert_eq!(body["metadata"]["resourceVersion"], "5", "{body}");
                assert_eq!(
                    body["status"]["parents"][0]["controllerName"],
                    "linkerd.io/policy-controller"
                );
                patched = true;
                respond_failure(
                    send,
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled on httproutes.gateway.networking.k8s.io \"podinfo\": the object has been modified; please apply your changes to the latest version and try again",
                );
            }
        }
    }
    // Scene 2: the newer version (Linkerd's entry changed) arrives; ours is written against it
    // with Linkerd's new entry kept.
    let watch = held.remove(&Kind::Routes).context("routes watch")?;
    respond(
        watch,
        events(vec![("MODIFIED", route_with_linkerd_status("6", "new"))]),
    );
    let mut patched = false;
    let mut rewatched = false;
    while !(patched && rewatched) {
        let (call, send) = next_call(&mut handle).await?;
        match call {
            Call::Watch(Kind::Routes) => {
                rewatched = true;
                held.insert(Kind::Routes, send);
            }
            Call::PatchStatus { body, .. } => {
                assert_eq!(body["metadata"]["resourceVersion"], "6", "{body}");
                let parents = body["status"]["parents"].as_array().context("parents")?;
                assert_eq!(parents.len(), 2, "{body}");
                assert_eq!(parents[0]["conditions"][0]["message"], "new", "{body}");
                assert_eq!(
                    parents[1]["controllerName"], "serin.dev/mesh-control",
                    "{body}"
                );
                patched = true;
                respond(
                    send,
                    serde_json::to_vec(&json!({
                        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                        "metadata": {"name": "podinfo", "namespace": "test", "resourceVersion": "7"},
                        "spec": {}, "status": body["status"]}))?,
                );
            }
            other => bail!("unexpected call {other:?}"),
        }
    }
    assert!(
        hub.metrics
            .encode()
            .contains(r#"serin_control_errors_total{kind="status",reason="Conflict"} 1"#)
    );
    source.abort();
    Ok(())
}

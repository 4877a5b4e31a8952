//! `serin check` against a fake API server holding a healthy installation; each test breaks one
//! thing and expects exactly that check to fail, with a hint, and the others to pass.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use serin_core::Timestamp;
use serin_kube::check::{self, CheckOptions, Outcome};
use serin_kube::install::{self, InstallOptions, Object};
use serin_kube::testing::{Call, mock_client, respond, status_err};

const NS: &str = "serin-system";
/// 2023-11-14T22:13:20Z
const NOW: i64 = 1_700_000_000_000;
const CA: &[u8] = b"-----BEGIN CERTIFICATE-----\nfake CA\n-----END CERTIFICATE-----\n";

/// The injector's serving certificate, issued `age_days` before [`NOW`] for a year (the fake CA
/// above stands for its CA: only the serving certificate's dates are read).
fn serving_cert(age_days: i64) -> String {
    let now = jiff::Timestamp::from_millisecond(NOW).unwrap();
    let issued = now - jiff::SignedDuration::from_hours(24 * age_days);
    serin_kube::injector::generate_certificate("serin-injector", NS, issued, 365)
        .unwrap()
        .cert_pem
}

/// The cluster as the fake API server serves it.
struct Cluster {
    /// `(METHOD, path)` -> answer; anything else is a 404.
    objects: BTreeMap<(String, String), (u16, Value)>,
    /// SubjectAccessReviews answered "denied" (`verb resource`, or `verb resource name` for
    /// one name).
    denied: Vec<String>,
}

fn b64(bytes: &[u8]) -> String {
    use k8s_openapi::ByteString;
    serde_json::to_value(ByteString(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

impl Cluster {
    /// Everything installed and healthy.
    fn healthy() -> Self {
        let mut objects = BTreeMap::new();
        let mut put = |path: String, v: Value| {
            objects.insert(("GET".to_string(), path), (200, v));
        };
        put(
            "/version".into(),
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1", "gitCommit": "x", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        );
        for crd in serin_api::crds() {
            let name = crd.metadata.name.clone().unwrap();
            put(
                format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
                serde_json::to_value(&crd).unwrap(),
            );
        }
        for o in install::objects(&InstallOptions::default()).unwrap() {
            if let Object::Deployment(d) = o {
                let mut v = serde_json::to_value(&d).unwrap();
                let replicas = v["spec"]["replicas"].clone();
                v["status"] = json!({"replicas": replicas, "availableReplicas": replicas, "readyReplicas": replicas});
                let name = d.metadata.name.unwrap();
                put(
                    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}"),
                    v,
                );
            }
        }
        put(
            format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/serin-controller"),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "serin-controller", "namespace": NS},
                   "spec": {"holderIdentity": "serin-controller-7d9f-abcde", "leaseDurationSeconds": 15, "renewTime": "2023-11-14T22:13:15.000000Z"}}),
        );
        let mut webhook = install::objects(&InstallOptions::default())
            .unwrap()
            .into_iter()
            .find_map(|o| match o {
                Object::Webhook(w) => Some(serde_json::to_value(w).unwrap()),
                _ => None,
            })
            .unwrap();
        webhook["webhooks"][0]["clientConfig"]["caBundle"] = json!(b64(CA));
        put(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/serin-injector"
                .into(),
            webhook,
        );
        put(
            format!("/api/v1/namespaces/{NS}/secrets/serin-injector-tls"),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "serin-injector-tls", "namespace": NS},
                   "data": {"ca.crt": b64(CA), "tls.crt": b64(serving_cert(10).as_bytes()), "tls.key": b64(b"key")}}),
        );
        let status = json!({"version": 7, "ready": true, "routes": [], "proxies": [
            {"id": "web-1-1-0", "workload": "shop/web", "sentVersion": 7, "appliedVersion": 7, "connectedAt": 1_700_000_000},
            {"id": "api-1-1-0", "workload": "pay/api", "sentVersion": 7, "appliedVersion": 7, "connectedAt": 1_700_000_000}]});
        put(
            format!("/api/v1/namespaces/{NS}/services/serin-control-plane:http/proxy/v1/status"),
            status.clone(),
        );
        // The control plane's one replica, asked through its pod by `--proxy`.
        put(
            format!("/api/v1/namespaces/{NS}/pods"),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"},
                   "items": [control_plane_pod("serin-control-plane-7d9f-a")]}),
        );
        put(replica_status("serin-control-plane-7d9f-a"), status);
        put(
            "/api/v1/pods".into(),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": [
                meshed_pod("shop", "web-1", true), meshed_pod("pay", "api-1", true),
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dns", "namespace": "kube-system"},
                 "spec": {"containers": [{"name": "dns", "image": "dns"}]}, "status": {"phase": "Running"}}]}),
        );
        Self {
            objects,
            denied: vec![],
        }
    }

    fn get(&mut self, path: &str) -> &mut Value {
        &mut self
            .objects
            .get_mut(&("GET".to_string(), path.to_string()))
            .unwrap_or_else(|| panic!("no {path}"))
            .1
    }

    fn answer(&mut self, path: &str, code: u16, body: Value) {
        self.objects
            .insert(("GET".to_string(), path.to_string()), (code, body));
    }

    fn remove(&mut self, path: &str) {
        self.objects.remove(&("GET".to_string(), path.to_string()));
    }
}

/// A Running control-plane replica.
fn control_plane_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/name": "serin-control-plane"}},
        "spec": {"containers": [{"name": "control-plane", "image": "i"}]},
        "status": {"phase": "Running"}})
}

/// The control plane runs as these replicas.
fn with_replicas(c: &mut Cluster, names: &[&str]) {
    c.get(&format!("/api/v1/namespaces/{NS}/pods"))["items"] =
        names.iter().map(|p| control_plane_pod(p)).collect();
}

/// Where `serin check --proxy` reads one control-plane replica's status.
fn replica_status(pod: &str) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{pod}:8086/proxy/v1/status")
}

/// A pod with serin-proxy as a native sidecar, Running, its proxy `ready` or not.
fn meshed_pod(ns: &str, name: &str, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": {"serin.dev/proxy-image": "ghcr.io/serin/serin:0.1.0"}},
        "spec": {"initContainers": [{"name": "serin-init", "image": "i"}, {"name": "serin-proxy", "image": "i", "restartPolicy": "Always"}],
                 "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Running",
            "initContainerStatuses": [
                {"name": "serin-init", "ready": false, "restartCount": 0, "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 0}}},
                {"name": "serin-proxy", "ready": ready, "started": true, "restartCount": 0, "image": "i", "imageID": ""}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "app", "imageID": ""}]}})
}

fn not_found() -> Value {
    status_err(404, "NotFound", "not found")
}

async fn serve(cluster: Cluster) -> Vec<Outcome> {
    serve_with(cluster, false, false).await
}

async fn serve_with(cluster: Cluster, pre: bool, proxy: bool) -> Vec<Outcome> {
    let (client, mut handle) = mock_client("default");
    let cluster = Arc::new(Mutex::new(cluster));
    let c = cluster.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let Call {
                method, path, body, ..
            } = Call::read(req).await;
            let (code, v) = if method == "POST" && path.ends_with("accessreviews") {
                let a = &body["spec"]["resourceAttributes"];
                let what = format!(
                    "{} {}",
                    a["verb"].as_str().unwrap(),
                    a["resource"].as_str().unwrap()
                );
                // Denied by `verb resource`, or for one name only by `verb resource name`.
                let named = a["name"]
                    .as_str()
                    .map(|n| format!("{what} {n}"))
                    .unwrap_or_default();
                let denied = &c.lock().unwrap().denied;
                let allowed = !denied.contains(&what) && !denied.contains(&named);
                let mut r = body.clone();
                r["status"] = json!({"allowed": allowed});
                (201, r)
            } else {
                c.lock()
                    .unwrap()
                    .objects
                    .get(&(method, path))
                    .cloned()
                    .unwrap_or((404, not_found()))
            };
            respond(send, code, &v);
        }
    });
    let opts = CheckOptions {
        namespace: NS.into(),
        pre,
        proxy,
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        check::run(&client, &opts, Timestamp::from_millis(NOW)),
    )
    .await
    .expect("the checks finish")
}

/// The names of the failed checks.
fn failed(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.check.clone())
        .collect()
}

fn only_failure(outcomes: &[Outcome], check: &str) -> Outcome {
    assert_eq!(failed(outcomes), [check], "{outcomes:#?}");
    let o = outcomes.iter().find(|o| o.check == check).unwrap().clone();
    assert!(
        o.hint.as_deref().is_some_and(|h| !h.is_empty()),
        "a failure has a hint"
    );
    assert!(
        o.line().starts_with("✘ ") && o.line().contains("hint:"),
        "{}",
        o.line()
    );
    o
}

#[tokio::test]
async fn a_healthy_installation_passes_every_check() {
    let outcomes = serve(Cluster::healthy()).await;
    assert!(failed(&outcomes).is_empty(), "{outcomes:#?}");
    let names: Vec<&str> = outcomes.iter().map(|o| o.check.as_str()).collect();
    for want in [
        "Kubernetes API reachable",
        "Kubernetes version",
        "CRD canaries.serin.dev",
        "serin-controller RBAC",
        "serin-injector RBAC",
        "serin-control-plane Deployment available",
        "one controller leading",
        "injector webhook and its CA bundle",
        "proxies connected to the control plane",
        "metrics server reachable",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    for o in &outcomes {
        assert!(o.line().starts_with("✔ "), "{}", o.line());
        assert!(!o.line().contains('\n'), "one line per check");
    }
    let proxies = outcomes
        .iter()
        .find(|o| o.check.starts_with("proxies"))
        .unwrap();
    assert_eq!(proxies.message, "2 proxies connected");
    let json = serde_json::to_value(&outcomes).unwrap();
    assert_eq!(json[0]["check"], "Kubernetes API reachable");
    assert_eq!(json[0]["ok"], true);
    assert!(json[0].get("hint").is_none());
}

#[tokio::test]
async fn an_unreachable_api_server_stops_at_the_first_check() {
    let mut c = Cluster::healthy();
    c.answer(
        "/version",
        503,
        status_err(503, "ServiceUnavailable", "etcd is down"),
    );
    let outcomes = serve(c).await;
    assert_eq!(outcomes.len(), 1);
    only_failure(&outcomes, "Kubernetes API reachable");
}

#[tokio::test]
async fn an_old_kubernetes_fails_the_version_check() {
    let mut c = Cluster::healthy();
    c.get("/version")["minor"] = json!("28");
    let o = only_failure(&serve(c).await, "Kubernetes version");
    assert!(o.message.contains("1.28"), "{}", o.message);
}

#[tokio::test]
async fn a_missing_or_outdated_crd_fails_its_check() {
    let mut c = Cluster::healthy();
    c.remove("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/canaries.serin.dev");
    let o = only_failure(&serve(c).await, "CRD canaries.serin.dev");
    assert!(o.hint.unwrap().contains("--crds-only"));
    let mut c = Cluster::healthy();
    let crd =
        c.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/metrictemplates.serin.dev");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] =
        json!("an older schema");
    only_failure(&serve(c).await, "CRD metrictemplates.serin.dev");
}

#[tokio::test]
async fn a_denied_rule_fails_that_components_rbac_check() {
    let mut c = Cluster::healthy();
    c.denied = vec!["patch mutatingwebhookconfigurations".into()];
    let o = only_failure(&serve(c).await, "serin-injector RBAC");
    assert!(
        o.message
            .contains("patch admissionregistration.k8s.io/mutatingwebhookconfigurations"),
        "{}",
        o.message
    );
}

#[tokio::test]
async fn an_unavailable_deployment_fails_its_check() {
    let mut c = Cluster::healthy();
    c.get(&format!(
        "/apis/apps/v1/namespaces/{NS}/deployments/serin-control-plane"
    ))["status"]["availableReplicas"] = json!(0);
    let o = only_failure(&serve(c).await, "serin-control-plane Deployment available");
    assert_eq!(o.message, "0/1 replicas available");
}

#[tokio::test]
async fn a_stale_or_free_lease_fails_the_leader_check() {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/serin-controller");
    let mut c = Cluster::healthy();
    c.get(&path)["spec"]["renewTime"] = json!("2023-11-14T22:10:00.000000Z");
    only_failure(&serve(c).await, "one controller leading");
    let mut c = Cluster::healthy();
    c.get(&path)["spec"]["holderIdentity"] = Value::Null;
    only_failure(&serve(c).await, "one controller leading");
    let mut c = Cluster::healthy();
    c.remove(&path);
    only_failure(&serve(c).await, "one controller leading");
}

#[tokio::test]
async fn a_webhook_whose_ca_bundle_differs_from_the_serving_certificate_fails() {
    let hook = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/serin-injector";
    let mut c = Cluster::healthy();
    c.get(hook)["webhooks"][0]["clientConfig"]["caBundle"] = json!(b64(b"another CA"));
    let o = only_failure(&serve(c).await, "injector webhook and its CA bundle");
    assert!(o.message.contains("does not match"));
    let mut c = Cluster::healthy();
    c.remove(hook);
    only_failure(&serve(c).await, "injector webhook and its CA bundle");
    let mut c = Cluster::healthy();
    c.remove(&format!(
        "/api/v1/namespaces/{NS}/secrets/serin-injector-tls"
    ));
    only_failure(&serve(c).await, "injector webhook and its CA bundle");
}

#[tokio::test]
async fn an_expired_or_unrenewed_injector_certificate_fails_before_pods_go_unmeshed() {
    // Once tls.crt expires the API server cannot call the webhook, and its failure policy
    // (Ignore) admits every pod without the proxy: nothing else would say so.
    let secret = format!("/api/v1/namespaces/{NS}/secrets/serin-injector-tls");
    let with_cert = |pem: &str| {
        let mut c = Cluster::healthy();
        c.get(&secret)["data"]["tls.crt"] = json!(b64(pem.as_bytes()));
        c
    };
    let o = only_failure(
        &serve(with_cert(&serving_cert(400))).await,
        "injector webhook and its CA bundle",
    );
    assert!(
        o.message.contains("expired at") && o.message.contains("without the proxy"),
        "{}",
        o.message
    );
    // Past the renewal point (a third of the year left) by days: no replica renews it.
    let o = only_failure(
        &serve(with_cert(&serving_cert(250))).await,
        "injector webhook and its CA bundle",
    );
    assert!(
        o.message.contains("was not renewed") && o.hint.unwrap().contains("rollout restart"),
        "{}",
        o.message
    );
    let o = only_failure(
        &serve(with_cert("not a certificate")).await,
        "injector webhook and its CA bundle",
    );
    assert!(o.message.contains("tls.crt"), "{}", o.message);
    // Fresh, or before its renewal is due: passes, saying until when.
    for age in [0, 200] {
        let outcomes = serve(with_cert(&serving_cert(age))).await;
        assert!(failed(&outcomes).is_empty(), "{outcomes:#?}");
        let o = outcomes
            .iter()
            .find(|o| o.check == "injector webhook and its CA bundle")
            .unwrap();
        assert!(o.message.contains("valid until 20"), "{}", o.message);
    }
}

#[tokio::test]
async fn an_unreachable_or_unready_control_plane_fails_the_proxies_check() {
    let status =
        format!("/api/v1/namespaces/{NS}/services/serin-control-plane:http/proxy/v1/status");
    let mut c = Cluster::healthy();
    c.answer(
        &status,
        503,
        status_err(
            503,
            "ServiceUnavailable",
            "no endpoints available for service \"serin-control-plane:http\"",
        ),
    );
    let o = only_failure(&serve(c).await, "proxies connected to the control plane");
    assert!(o.message.contains("no endpoints"), "{}", o.message);
    let mut c = Cluster::healthy();
    c.get(&status)["ready"] = json!(false);
    only_failure(&serve(c).await, "proxies connected to the control plane");
}

fn with_metrics_server(c: &mut Cluster, url: &str) {
    let d = c.get(&format!(
        "/apis/apps/v1/namespaces/{NS}/deployments/serin-controller"
    ));
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "SERIN_METRICS_SERVER", "value": url}));
}

#[tokio::test]
async fn a_configured_metrics_server_is_asked_whether_it_is_ready() {
    let mut c = Cluster::healthy();
    with_metrics_server(&mut c, "http://prometheus.monitoring:9090");
    c.answer(
        "/api/v1/namespaces/monitoring/services/prometheus:9090/proxy/-/ready",
        200,
        json!("Prometheus Server is Ready."),
    );
    let outcomes = serve(c).await;
    assert!(failed(&outcomes).is_empty(), "{outcomes:#?}");
    let mut c = Cluster::healthy();
    with_metrics_server(&mut c, "http://prometheus.monitoring:9090");
    let o = only_failure(&serve(c).await, "metrics server reachable");
    assert!(o.message.contains("http://prometheus.monitoring:9090"));
}

#[tokio::test]
async fn pre_checks_the_api_server_and_the_permission_to_install() {
    let outcomes = serve_with(Cluster::healthy(), true, false).await;
    assert!(failed(&outcomes).is_empty(), "{outcomes:#?}");
    assert!(
        outcomes
            .iter()
            .any(|o| o.check == "can create CustomResourceDefinitions")
    );
    assert!(
        !outcomes.iter().any(|o| o.check.contains("Deployment")),
        "nothing installed is expected"
    );
    let mut c = Cluster::healthy();
    c.denied = vec!["create clusterroles".into()];
    only_failure(&serve_with(c, true, false).await, "can create ClusterRoles");
}

#[tokio::test]
async fn the_data_plane_checks_pass_when_every_meshed_pod_is_ready_connected_and_current() {
    let mut c = Cluster::healthy();
    // A meshed Job's pods that ran to the end (or failed) run no proxy any more: nothing to
    // check, as `linkerd check --proxy` skips completed pods.
    for (name, phase) in [("migrate-x7k2p", "Succeeded"), ("migrate-q9z4d", "Failed")] {
        let mut done = meshed_pod("shop", name, false);
        done["status"]["phase"] = json!(phase);
        c.get("/api/v1/pods")["items"]
            .as_array_mut()
            .unwrap()
            .push(done);
    }
    let outcomes = serve_with(c, false, true).await;
    assert!(failed(&outcomes).is_empty(), "{outcomes:#?}");
    let message = |check: &str| {
        outcomes
            .iter()
            .find(|o| o.check == check)
            .unwrap_or_else(|| panic!("{check} in {outcomes:#?}"))
            .message
            .clone()
    };
    assert_eq!(
        message("meshed pods' proxies ready"),
        "2 meshed pods, every proxy ready"
    );
    assert_eq!(
        message("meshed pods connected to the control plane"),
        "2 ready proxies, each connected"
    );
    assert_eq!(
        message("route tables accepted by every proxy"),
        "no proxy refused a route table"
    );
    // Without --proxy no pod is read.
    let plain = serve(Cluster::healthy()).await;
    assert!(!plain.iter().any(|o| o.check.starts_with("meshed")));
}

#[tokio::test]
async fn an_unready_an_unconnected_or_a_refusing_proxy_fails_its_data_plane_check_by_name() {
    let pods = "/api/v1/pods";
    let status = replica_status("serin-control-plane-7d9f-a");

    let mut c = Cluster::healthy();
    c.get(pods)["items"][0] = meshed_pod("shop", "web-1", false);
    let o = only_failure(
        &serve_with(c, false, true).await,
        "meshed pods' proxies ready",
    );
    assert_eq!(
        o.message,
        "1 of 2 meshed pods have no ready proxy: shop/web-1"
    );

    // A pod of the same name in another namespace does not stand in for it.
    let mut c = Cluster::healthy();
    c.get(&status)["proxies"][1]["workload"] = json!("shop/api");
    let o = only_failure(
        &serve_with(c, false, true).await,
        "meshed pods connected to the control plane",
    );
    assert_eq!(
        o.message,
        "1 of 2 ready proxies are not connected: pay/api-1"
    );
    assert!(o.hint.unwrap().contains("logs POD -c serin-proxy"));

    // Nor does a pod whose name starts with its name (web-1-backup's proxy is not web-1's).
    let mut c = Cluster::healthy();
    c.get(&status)["proxies"][0]["id"] = json!("web-1-backup-1-0");
    let o = only_failure(
        &serve_with(c, false, true).await,
        "meshed pods connected to the control plane",
    );
    assert_eq!(
        o.message,
        "1 of 2 ready proxies are not connected: shop/web-1"
    );

    let mut c = Cluster::healthy();
    c.get(&status)["proxies"][0]["rejected"] = json!([
        7,
        "routes[0].rules[0].backends: must list at least one backend"
    ]);
    let o = only_failure(
        &serve_with(c, false, true).await,
        "route tables accepted by every proxy",
    );
    assert_eq!(
        o.message,
        "1 proxy refused a route table: web-1-1-0 (shop/web) refused version 7: routes[0].rules[0].backends: must list at least one backend"
    );
    // A refusal the proxy has since moved past is history, not a failure.
    let mut c = Cluster::healthy();
    c.get(&status)["proxies"][0]["rejected"] = json!([6, "old"]);
    assert!(failed(&serve_with(c, false, true).await).is_empty());

    let mut c = Cluster::healthy();
    c.answer(pods, 403, status_err(403, "Forbidden", "pods is forbidden: User \"dev\" cannot list resource \"pods\" in API group \"\" at the cluster scope"));
    let o = only_failure(
        &serve_with(c, false, true).await,
        "meshed pods' proxies ready",
    );
    assert!(o.message.contains("cannot list resource"), "{}", o.message);
}

#[tokio::test]
async fn with_several_control_plane_replicas_each_is_asked_for_its_proxies() {
    // --ha: three replicas behind one Service. Each proxy streams from the one replica its
    // connection was balanced to, and each replica's status lists only its own proxies: the
    // Service answers from any one of them.
    let mut c = Cluster::healthy();
    let replicas = [
        "serin-control-plane-7d9f-a",
        "serin-control-plane-7d9f-b",
        "serin-control-plane-7d9f-c",
    ];
    with_replicas(&mut c, &replicas);
    let both = c.get(&replica_status(replicas[0])).clone();
    for (i, pod) in replicas.iter().enumerate() {
        let mut own = both.clone();
        own["proxies"] = match i {
            0 => json!([both["proxies"][0]]),
            1 => json!([both["proxies"][1]]),
            _ => json!([]),
        };
        if i == 0 {
            c.answer(
                &format!(
                    "/api/v1/namespaces/{NS}/services/serin-control-plane:http/proxy/v1/status"
                ),
                200,
                own.clone(),
            );
        }
        c.answer(&replica_status(pod), 200, own);
    }
    let outcomes = serve_with(c, false, true).await;
    assert!(failed(&outcomes).is_empty(), "{outcomes:#?}");
    // The plain count joins the replicas too, not the Service's one answer.
    let count = outcomes
        .iter()
        .find(|o| o.check == "proxies connected to the control plane")
        .unwrap();
    assert_eq!(count.message, "2 proxies connected to 3 replicas");

    // A refusal on any replica is found.
    let mut c = Cluster::healthy();
    with_replicas(&mut c, &replicas[..2]);
    let mut second = c.get(&replica_status(replicas[0])).clone();
    second["proxies"] = json!([{"id": "web-2-1-0", "workload": "shop/web", "sentVersion": 8, "appliedVersion": 7, "connectedAt": 1_700_000_000, "rejected": [8, "bad table"]}]);
    c.answer(&replica_status(replicas[1]), 200, second);
    let o = only_failure(
        &serve_with(c, false, true).await,
        "route tables accepted by every proxy",
    );
    assert_eq!(
        o.message,
        "1 proxy refused a route table: web-2-1-0 (shop/web) refused version 8: bad table"
    );

    // A replica that does not answer is named where its proxies would have been.
    let mut c = Cluster::healthy();
    with_replicas(&mut c, &replicas[..2]);
    c.get(&replica_status(replicas[0]))["proxies"] = json!([both["proxies"][0]]);
    c.answer(
        &replica_status(replicas[1]),
        503,
        status_err(503, "ServiceUnavailable", "no endpoints available"),
    );
    let outcomes = serve_with(c, false, true).await;
    // The control plane's own check says a replica is not answering; the data plane's names
    // the pod whose proxy could be on it.
    assert_eq!(
        failed(&outcomes),
        [
            "proxies connected to the control plane",
            "meshed pods connected to the control plane"
        ],
        "{outcomes:#?}"
    );
    let message = |check: &str| {
        outcomes
            .iter()
            .find(|o| o.check == check)
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(
        message("proxies connected to the control plane"),
        "1 of 2 control-plane replicas did not answer: serin-control-plane-7d9f-b: no endpoints available (503)"
    );
    assert_eq!(
        message("meshed pods connected to the control plane"),
        "1 of 2 ready proxies are not connected: pay/api-1 (control-plane replica not read: serin-control-plane-7d9f-b: no endpoints available (503))"
    );
}

/// A rule limited to two Secrets, as a component's Role could hold.
fn two_secrets() -> install::ComponentRules {
    let rule = k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: Some(vec!["".into()]),
        resources: Some(vec!["secrets".into()]),
        verbs: vec!["get".into()],
        resource_names: Some(vec!["tls-a".into(), "tls-b".into()]),
        non_resource_urls: None,
    };
    install::ComponentRules {
        cluster: vec![],
        namespaced: vec![rule],
    }
}

#[test]
fn a_rule_limited_to_names_is_asked_about_each_name() {
    let asks = check::rbac_asks(NS, "serin-injector", &two_secrets());
    let names: Vec<Option<String>> = asks
        .iter()
        .map(|a| {
            a.review
                .spec
                .resource_attributes
                .as_ref()
                .unwrap()
                .name
                .clone()
        })
        .collect();
    assert_eq!(names, [Some("tls-a".into()), Some("tls-b".into())]);
    assert_eq!(asks[1].what, "get core/secrets tls-b");
}

#[tokio::test]
async fn a_denied_second_name_fails_the_rbac_check_naming_it() {
    let mut c = Cluster::healthy();
    c.denied = vec!["get secrets tls-b".into()];
    let (client, mut handle) = mock_client("default");
    let cluster = Arc::new(Mutex::new(c));
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let call = Call::read(req).await;
            assert!(call.path.ends_with("subjectaccessreviews"), "{}", call.path);
            let a = &call.body["spec"]["resourceAttributes"];
            let what = format!(
                "{} {} {}",
                a["verb"].as_str().unwrap(),
                a["resource"].as_str().unwrap(),
                a["name"].as_str().unwrap_or("")
            );
            let allowed = !cluster.lock().unwrap().denied.contains(&what);
            let mut r = call.body.clone();
            r["status"] = json!({"allowed": allowed});
            respond(send, 201, &r);
        }
    });
    let o = tokio::time::timeout(
        Duration::from_secs(10),
        check::rbac(&client, NS, "serin-injector", &two_secrets()),
    )
    .await
    .expect("answered");
    assert!(!o.ok, "{o:?}");
    assert!(
        o.message.contains("get core/secrets tls-b"),
        "{}",
        o.message
    );
    assert!(!o.message.contains("tls-a"), "{}", o.message);
}

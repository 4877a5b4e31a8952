//! The injector's AdmissionReview handling: each test sends the review the API server would and
//! applies the returned JSON patch to the pod as the API server does.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use serin_kube::admission::{Injector, InjectorMetrics};
use serin_kube::inject::InjectConfig;

fn injector(namespaces: &[(&str, &str)]) -> Injector {
    let map: BTreeMap<String, BTreeMap<String, String>> = namespaces
        .iter()
        .map(|(ns, inject)| {
            (
                ns.to_string(),
                BTreeMap::from([("serin.dev/inject".to_string(), inject.to_string())]),
            )
        })
        .collect();
    Injector {
        config: InjectConfig {
            proxy_image: "serin/proxy:test".into(),
            ..InjectConfig::default()
        },
        namespaces: Arc::new(map),
        metrics: InjectorMetrics::default(),
    }
}

/// A pod as a Deployment's ReplicaSet creates it (no name yet, generateName, template hash).
fn deployment_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c-",
            "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c",
                                  "uid": "rs-uid", "controller": true}]
        },
        "spec": {
            "containers": [{"name": "app", "image": "web:1", "ports": [{"containerPort": 8080}]}]
        }
    })
}

fn review(pod: &Value, namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "req-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false
        }
    }))
    .unwrap()
}

struct Reply {
    status: u16,
    response: Value,
}

async fn send(inj: &Injector, body: &[u8]) -> Reply {
    let answer = inj.review(body).await;
    let v = serde_json::to_value(&answer.review).unwrap();
    Reply {
        status: answer.status,
        response: v["response"].clone(),
    }
}

/// Applies the reply's patch (if any) to `pod` as the API server would.
fn admitted(pod: &Value, reply: &Reply) -> Pod {
    assert_eq!(reply.response["allowed"], true, "{}", reply.response);
    let mut doc = pod.clone();
    let patch = &reply.response["patch"];
    if !patch.is_null() {
        assert_eq!(reply.response["patchType"], "JSONPatch");
        // Go's []byte: a base64 string, or (as kube-rs writes it) an array of byte values,
        // which the API server's decoder accepts too.
        let bytes: Vec<u8> = match patch {
            Value::String(s) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .expect("the patch is base64")
            }
            Value::Array(a) => a.iter().map(|b| b.as_u64().expect("byte") as u8).collect(),
            other => panic!("patch is neither base64 nor bytes: {other}"),
        };
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is JSON Patch");
        json_patch::patch(&mut doc, &patch).expect("patch applies to the input");
    }
    serde_json::from_value(doc).expect("the admitted pod deserialises into k8s-openapi's Pod")
}

fn names(cs: &[Container]) -> Vec<&str> {
    cs.iter().map(|c| c.name.as_str()).collect()
}

fn init_names(p: &Pod) -> Vec<&str> {
    names(
        p.spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_deref()
            .unwrap_or_default(),
    )
}

fn env(c: &Container, name: &str) -> String {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("env {name} missing"))
}

#[tokio::test]
async fn a_deployment_pod_in_an_enabled_namespace_gets_the_init_container_and_a_native_sidecar() {
    let inj = injector(&[("shop", "enabled")]);
    let pod = deployment_pod();
    let reply = send(&inj, &review(&pod, "shop")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.response["uid"], "req-1");
    let p = admitted(&pod, &reply);
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(names(&spec.containers), ["app"], "the app is untouched");
    assert_eq!(
        spec.containers[0],
        serde_json::from_value(pod["spec"]["containers"][0].clone()).unwrap()
    );
    assert_eq!(init_names(&p), ["serin-init", "serin-proxy"]);
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let proxy = &spec.init_containers.as_ref().unwrap()[1];

    // Only the init container has NET_ADMIN/NET_RAW, and it runs `serin-proxy init`.
    let caps = init
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(caps.add.as_deref().unwrap(), ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(init.args.as_ref().unwrap()[0], "init");
    assert_eq!(init.image.as_deref(), Some("serin/proxy:test"));
    let pcaps = proxy
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert!(pcaps.add.is_none());
    assert_eq!(
        proxy.security_context.as_ref().unwrap().run_as_user,
        Some(2102)
    );

    // A native sidecar with its identity from the Downward API.
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        env(proxy, "SERIN_PROXY_LABELS"),
        "namespace=$(SERIN_POD_NAMESPACE),pod=$(SERIN_POD_NAME),deployment=web,pod_template_hash=$(SERIN_POD_TEMPLATE_HASH)"
    );
    assert_eq!(
        env(proxy, "SERIN_PROXY_WORKLOAD"),
        "$(SERIN_POD_NAMESPACE)/web"
    );
    let field = |n: &str| {
        proxy
            .env
            .iter()
            .flatten()
            .find(|e| e.name == n)
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path
            .clone()
    };
    assert_eq!(field("SERIN_POD_NAMESPACE"), "metadata.namespace");
    assert_eq!(field("SERIN_POD_NAME"), "metadata.name");
    assert_eq!(
        field("SERIN_POD_TEMPLATE_HASH"),
        "metadata.labels['pod-template-hash']"
    );
    assert_eq!(env(proxy, "SERIN_PROXY_TRANSPARENT"), "true");
    assert_eq!(
        p.metadata.annotations.as_ref().unwrap()["serin.dev/proxy-image"],
        "serin/proxy:test"
    );
}

#[tokio::test]
async fn existing_init_containers_and_security_contexts_are_kept_after_the_proxy() {
    let inj = injector(&[("shop", "enabled")]);
    let mut pod = deployment_pod();
    pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "web-migrate:1"}]);
    pod["spec"]["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 1000});
    pod["metadata"]["annotations"] = json!({"team": "shop"});
    let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
    assert_eq!(init_names(&p), ["serin-init", "serin-proxy", "migrate"]);
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(
        spec.security_context.as_ref().unwrap().run_as_user,
        Some(1000)
    );
    // The pod says runAsNonRoot; the init container must say otherwise for itself.
    let sc = spec.init_containers.as_ref().unwrap()[0]
        .security_context
        .as_ref()
        .unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_non_root), (Some(0), Some(false)));
    let ann = p.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["team"], "shop");
    assert!(ann.contains_key("serin.dev/proxy-image"));
}

#[tokio::test]
async fn host_network_pods_the_serin_namespace_and_injected_pods_are_admitted_unchanged() {
    let inj = injector(&[("shop", "enabled"), ("serin-system", "enabled")]);
    let mut host = deployment_pod();
    host["spec"]["hostNetwork"] = json!(true);
    let r = send(&inj, &review(&host, "shop")).await;
    assert!(r.response.get("patch").is_none(), "{}", r.response);
    assert_eq!(r.response["allowed"], true);

    let r = send(&inj, &review(&deployment_pod(), "serin-system")).await;
    assert!(r.response.get("patch").is_none());

    // Injecting the injected pod again changes nothing (idempotent).
    let pod = deployment_pod();
    let once = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
    let once = serde_json::to_value(&once).unwrap();
    let r = send(&inj, &review(&once, "shop")).await;
    assert!(r.response.get("patch").is_none(), "{}", r.response);
    let text = inj_metrics(&inj);
    assert!(
        text.contains(
            "serin_injector_admissions_total{outcome=\"skipped\",reason=\"host_network\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("reason=\"system_namespace\"} 1"), "{text}");
    assert!(text.contains("reason=\"already_injected\"} 1"), "{text}");
    assert!(
        text.contains("serin_injector_admissions_total{outcome=\"injected\",reason=\"\"} 1"),
        "{text}"
    );
}

fn inj_metrics(inj: &Injector) -> String {
    let mut reg = prometheus_client::registry::Registry::default();
    inj.metrics.register(&mut reg);
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
    s
}

#[tokio::test]
async fn the_pod_annotation_wins_over_the_namespace_annotation() {
    let cases = [
        // (namespace annotation, pod annotation, injected?)
        (Some("enabled"), None, true),
        (Some("enabled"), Some("disabled"), false),
        (Some("disabled"), Some("enabled"), true),
        (Some("disabled"), None, false),
        (None, Some("enabled"), true),
        (None, None, false),
    ];
    for (ns, pod_ann, expected) in cases {
        let inj = injector(&ns.map(|v| vec![("shop", v)]).unwrap_or_default());
        let mut pod = deployment_pod();
        if let Some(v) = pod_ann {
            pod["metadata"]["annotations"] = json!({"serin.dev/inject": v});
        }
        let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
        let injected = init_names(&p).contains(&"serin-proxy");
        assert_eq!(injected, expected, "namespace {ns:?}, pod {pod_ann:?}");
    }
}

#[tokio::test]
async fn per_pod_annotations_override_resources_log_level_and_skip_ports() {
    let inj = injector(&[("shop", "enabled")]);
    let mut pod = deployment_pod();
    pod["metadata"]["annotations"] = json!({
        "serin.dev/proxy-cpu-request": "250m",
        "serin.dev/proxy-memory-limit": "1Gi",
        "serin.dev/proxy-log-level": "debug",
        "serin.dev/skip-inbound-ports": "22, 9100",
        "serin.dev/skip-outbound-ports": "3306"
    });
    let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
    let inits = p.spec.as_ref().unwrap().init_containers.as_ref().unwrap();
    let args = inits[0].args.as_ref().unwrap().join(" ");
    assert!(args.contains("--skip-inbound-ports 22,4191,9100"), "{args}");
    assert!(args.contains("--skip-outbound-ports 3306"), "{args}");
    let res = inits[1].resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "250m");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "1Gi");
    assert_eq!(env(&inits[1], "RUST_LOG"), "debug");
    // No IPv6 annotation: neither container is told anything (both default to auto).
    assert!(!args.contains("--ipv6"), "{args}");
    let names: Vec<&str> = inits[1]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        !names.contains(&"SERIN_PROXY_TRANSPARENT_IPV6"),
        "{names:?}"
    );
}

#[tokio::test]
async fn the_ipv6_capture_annotation_reaches_both_the_init_container_and_the_proxy() {
    let inj = injector(&[("shop", "enabled")]);
    for mode in ["auto", "on", "off"] {
        let mut pod = deployment_pod();
        pod["metadata"]["annotations"] = json!({"serin.dev/capture-ipv6": mode});
        let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
        let inits = p.spec.as_ref().unwrap().init_containers.as_ref().unwrap();
        let args = inits[0].args.as_ref().unwrap().join(" ");
        assert!(args.ends_with(&format!("--ipv6 {mode}")), "{args}");
        assert_eq!(env(&inits[1], "SERIN_PROXY_TRANSPARENT_IPV6"), mode);
    }
    let mut pod = deployment_pod();
    pod["metadata"]["annotations"] = json!({"serin.dev/capture-ipv6": "enabled"});
    let r = send(&inj, &review(&pod, "shop")).await;
    assert_eq!(r.response["allowed"], false);
    let msg = r.response["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("serin.dev/capture-ipv6") && msg.contains("auto, on, off"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_proxy_timing_annotations_reach_the_proxy_and_bad_values_are_named() {
    let inj = injector(&[("shop", "enabled")]);
    // Without them the proxy keeps its own defaults: no variable is set.
    let plain = deployment_pod();
    let p = admitted(&plain, &send(&inj, &review(&plain, "shop")).await);
    let proxy = &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[1];
    for (_, var, _) in serin_kube::inject::PROXY_TIMINGS {
        assert!(
            !proxy.env.as_ref().unwrap().iter().any(|e| e.name == var),
            "{var} set without its annotation"
        );
    }
    // A long-poll app raises the body idle timeout; retention may be 0.
    let mut pod = deployment_pod();
    pod["metadata"]["annotations"] = json!({
        "serin.dev/proxy-body-idle-timeout": "120s",
        "serin.dev/proxy-shutdown-timeout": "20s",
        "serin.dev/proxy-connect-timeout": "1500ms",
        "serin.dev/proxy-h2-idle-timeout": "5m",
        "serin.dev/proxy-metrics-retain-idle": "0",
    });
    let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
    let proxy = &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[1];
    assert_eq!(env(proxy, "SERIN_PROXY_BODY_IDLE_TIMEOUT"), "120s");
    assert_eq!(env(proxy, "SERIN_PROXY_SHUTDOWN_TIMEOUT"), "20s");
    assert_eq!(env(proxy, "SERIN_PROXY_CONNECT_TIMEOUT"), "1500ms");
    assert_eq!(env(proxy, "SERIN_PROXY_H2_IDLE_TIMEOUT"), "5m");
    assert_eq!(env(proxy, "SERIN_PROXY_METRICS_RETAIN_IDLE"), "0");
    // Not durations, or a zero timeout (the proxy would refuse to start: the pod would never
    // be ready): the pod is denied, naming the annotation and what it accepts.
    for (key, value, expected) in [
        (
            "serin.dev/proxy-body-idle-timeout",
            "120",
            "a duration above 0",
        ),
        (
            "serin.dev/proxy-connect-timeout",
            "0s",
            "a duration above 0",
        ),
        (
            "serin.dev/proxy-shutdown-timeout",
            "-5s",
            "a duration above 0",
        ),
        (
            "serin.dev/proxy-metrics-retain-idle",
            "forever",
            "a duration such as",
        ),
    ] {
        let mut pod = deployment_pod();
        pod["metadata"]["annotations"] = json!({ key: value });
        let r = send(&inj, &review(&pod, "shop")).await;
        assert_eq!(r.response["allowed"], false, "{key}: {value}");
        let msg = r.response["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains(key) && msg.contains(value) && msg.contains(expected),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn malformed_requests_get_a_400_class_answer_never_a_panic() {
    let inj = injector(&[("shop", "enabled")]);
    for body in [
        &b"not json"[..],
        b"{}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        b"",
    ] {
        let r = send(&inj, body).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(r.response["allowed"], false);
        assert_eq!(r.response["status"]["code"], 400);
        assert!(!r.response["status"]["message"].as_str().unwrap().is_empty());
    }
    // A readable review whose object is not a Pod: denied with the request's uid.
    let mut broken = deployment_pod();
    broken["spec"]["containers"] = json!("app");
    let r = send(&inj, &review(&broken, "shop")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.response["uid"], "req-1");
    assert_eq!(r.response["allowed"], false);
    assert_eq!(r.response["status"]["code"], 400);
    assert!(
        r.response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid v1 Pod"),
        "{}",
        r.response
    );

    // A bad annotation value is refused, naming the annotation and what is accepted.
    let mut pod = deployment_pod();
    pod["metadata"]["annotations"] = json!({"serin.dev/proxy-log-level": "loud"});
    let r = send(&inj, &review(&pod, "shop")).await;
    assert_eq!(r.response["allowed"], false);
    let msg = r.response["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("serin.dev/proxy-log-level")
            && msg.contains("error, warn, info, debug, trace"),
        "{msg}"
    );
    let mut pod = deployment_pod();
    pod["metadata"]["annotations"] = json!({"serin.dev/inject": "yes"});
    let r = send(&inj, &review(&pod, "shop")).await;
    assert!(
        r.response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("`enabled` or `disabled`")
    );
}

#[tokio::test]
async fn updates_dry_runs_and_v1beta1_reviews_are_answered_as_the_api_server_expects() {
    let inj = injector(&[("shop", "enabled")]);
    let pod = deployment_pod();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&review(&pod, "shop")).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    // An UPDATE (with its oldObject) is admitted untouched: only creation injects.
    let update = with(&|v| {
        v["request"]["operation"] = json!("UPDATE");
        v["request"]["oldObject"] = v["request"]["object"].clone();
    });
    let r = send(&inj, &update).await;
    assert_eq!((r.status, &r.response["allowed"]), (200, &json!(true)));
    assert!(r.response.get("patch").is_none(), "{}", r.response);
    assert_eq!(r.response["uid"], "req-1");
    // A dry run gets the same patch a real creation gets (the webhook has no side effects).
    let dry = with(&|v| v["request"]["dryRun"] = json!(true));
    let p = admitted(&pod, &send(&inj, &dry).await);
    assert_eq!(init_names(&p), ["serin-init", "serin-proxy"]);
    // A review of another kind is admitted untouched.
    let other = with(&|v| v["request"]["kind"]["kind"] = json!("Deployment"));
    let r = send(&inj, &other).await;
    assert!(r.response.get("patch").is_none(), "{}", r.response);
    // v1beta1 (an old API server, or a hand-edited configuration): the answer comes back in
    // the request's version, which the API server requires.
    let beta = with(&|v| v["apiVersion"] = json!("admission.k8s.io/v1beta1"));
    let answer = inj.review(&beta).await;
    let v = serde_json::to_value(&answer.review).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1", "{v}");
    assert_eq!(v["response"]["uid"], "req-1");
}

fn denial(r: &Reply) -> String {
    assert_eq!(r.response["allowed"], false, "{}", r.response);
    assert_eq!(r.response["status"]["code"], 400, "{}", r.response);
    r.response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_capture_init_container_gets_a_writable_run_for_the_iptables_legacy_lock() {
    // iptables-legacy exits with "can't open lock file /run/xtables.lock: Read-only file
    // system" under readOnlyRootFilesystem: on a legacy node no injected pod would start.
    let inj = injector(&[("shop", "enabled")]);
    for own_volumes in [None, Some(json!([{"name": "data", "emptyDir": {}}]))] {
        let mut pod = deployment_pod();
        if let Some(v) = &own_volumes {
            pod["spec"]["volumes"] = v.clone();
        }
        let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
        let spec = p.spec.as_ref().unwrap();
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.name, "serin-init");
        let sc = init.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let mounts = init.volume_mounts.as_deref().unwrap_or_default();
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        assert_eq!(mounts[0].mount_path, "/run");
        assert_eq!(mounts[0].read_only, None);
        let volumes: Vec<(&str, bool)> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| (v.name.as_str(), v.empty_dir.is_some()))
            .collect();
        let expected: Vec<(&str, bool)> = own_volumes
            .iter()
            .map(|_| ("data", true))
            .chain([(mounts[0].name.as_str(), true)])
            .collect();
        assert_eq!(volumes, expected, "the pod's own volumes stay first");
        // Only the init container sees it.
        assert!(
            spec.init_containers.as_ref().unwrap()[1]
                .volume_mounts
                .is_none()
        );
    }
}

#[tokio::test]
async fn an_app_running_as_the_proxy_uid_is_refused_naming_the_container_and_the_field() {
    // The capture rules exempt the proxy's UID (2102): such an app's traffic would silently
    // bypass the proxy.
    let inj = injector(&[("shop", "enabled")]);
    let mut own = deployment_pod();
    own["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 2102});
    let msg = denial(&send(&inj, &review(&own, "shop")).await);
    assert!(
        msg.contains("\"app\"")
            && msg.contains("UID 2102")
            && msg.contains("securityContext.runAsUser")
            && msg.contains("--proxy-uid"),
        "{msg}"
    );

    let mut pod_level = deployment_pod();
    pod_level["spec"]["securityContext"] = json!({"runAsUser": 2102});
    pod_level["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m:1"}]);
    let msg = denial(&send(&inj, &review(&pod_level, "shop")).await);
    assert!(
        msg.contains("\"migrate\"") && msg.contains("the pod's securityContext.runAsUser"),
        "{msg}"
    );

    // A container that sets its own UID over the pod's is fine, and so is any other UID.
    let mut overridden = deployment_pod();
    overridden["spec"]["securityContext"] = json!({"runAsUser": 2102});
    overridden["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1000});
    let p = admitted(&overridden, &send(&inj, &review(&overridden, "shop")).await);
    assert!(init_names(&p).contains(&"serin-proxy"));
    assert!(inj_metrics(&inj).contains("outcome=\"denied\",reason=\"\"} 2"));
}

#[tokio::test]
async fn a_proxy_request_above_its_limit_is_refused_naming_the_annotations() {
    // Kubernetes refuses such a pod naming only spec.initContainers[1]; the injector names
    // what the user wrote.
    let inj = injector(&[("shop", "enabled")]);
    let with = |annotations: Value| {
        let mut pod = deployment_pod();
        pod["metadata"]["annotations"] = annotations;
        pod
    };
    // The request alone, above the default limit (250Mi).
    let pod = with(json!({"serin.dev/proxy-memory-request": "512Mi"}));
    let msg = denial(&send(&inj, &review(&pod, "shop")).await);
    assert!(
        msg.contains("memory request 512Mi (annotation serin.dev/proxy-memory-request)")
            && msg.contains("limit 250Mi (the injector's default, --proxy-memory-limit)")
            && msg.contains("set serin.dev/proxy-memory-limit"),
        "{msg}"
    );
    let pod =
        with(json!({"serin.dev/proxy-cpu-request": "2", "serin.dev/proxy-cpu-limit": "500m"}));
    let msg = denial(&send(&inj, &review(&pod, "shop")).await);
    assert!(
        msg.contains("cpu request 2 (annotation serin.dev/proxy-cpu-request)")
            && msg.contains("cpu limit 500m (annotation serin.dev/proxy-cpu-limit)"),
        "{msg}"
    );
    // Raising both, or dropping the limit, is accepted; so is every quantity form Kubernetes
    // takes (exponent, sign, micro).
    for ok in [
        json!({"serin.dev/proxy-memory-request": "512Mi", "serin.dev/proxy-memory-limit": "1Gi"}),
        json!({"serin.dev/proxy-memory-request": "512Mi", "serin.dev/proxy-memory-limit": ""}),
        json!({"serin.dev/proxy-cpu-request": "1e-1", "serin.dev/proxy-memory-request": "+64Mi"}),
        json!({"serin.dev/proxy-cpu-request": "500u", "serin.dev/proxy-memory-limit": "0.5Gi"}),
    ] {
        let pod = with(ok.clone());
        let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
        assert!(init_names(&p).contains(&"serin-proxy"), "{ok}");
    }
    for bad in ["-1", "lots", "1e", "1.2.3", "5Gb"] {
        let pod = with(json!({"serin.dev/proxy-cpu-request": bad}));
        let msg = denial(&send(&inj, &review(&pod, "shop")).await);
        assert!(
            msg.contains("serin.dev/proxy-cpu-request") && msg.contains("non-negative"),
            "{bad}: {msg}"
        );
    }
}

#[tokio::test]
async fn a_proxy_request_equal_to_its_limit_in_other_units_is_admitted() {
    // 700m and 0.7 are the same quantity to Kubernetes; so are 3n and 3e-9.
    let inj = injector(&[("shop", "enabled")]);
    for equal in [
        json!({"serin.dev/proxy-cpu-request": "700m", "serin.dev/proxy-cpu-limit": "0.7"}),
        json!({"serin.dev/proxy-cpu-request": "350m", "serin.dev/proxy-cpu-limit": "0.35"}),
        json!({"serin.dev/proxy-cpu-request": "3n", "serin.dev/proxy-cpu-limit": "3e-9"}),
        json!({"serin.dev/proxy-memory-request": "0.1Gi", "serin.dev/proxy-memory-limit": "107374182.4"}),
    ] {
        let mut pod = deployment_pod();
        pod["metadata"]["annotations"] = equal.clone();
        let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
        assert!(init_names(&p).contains(&"serin-proxy"), "{equal}");
    }
}

#[tokio::test]
async fn skip_port_ranges_and_junk_are_refused_naming_the_annotation_and_the_accepted_form() {
    let inj = injector(&[("shop", "enabled")]);
    for (annotation, value) in [
        ("serin.dev/skip-inbound-ports", "8000-9000"),
        ("serin.dev/skip-outbound-ports", "3306,junk"),
        ("serin.dev/skip-outbound-ports", "0"),
        ("serin.dev/skip-inbound-ports", "70000"),
    ] {
        let mut pod = deployment_pod();
        pod["metadata"]["annotations"] = json!({ annotation: value });
        let msg = denial(&send(&inj, &review(&pod, "shop")).await);
        assert!(
            msg.contains(annotation) && msg.contains(value) && msg.contains("ranges such as"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn pods_with_another_meshs_proxy_are_admitted_unchanged_with_a_warning() {
    let namespaces: BTreeMap<String, BTreeMap<String, String>> = [
        ("shop", vec![("serin.dev/inject", "enabled")]),
        (
            "both",
            vec![
                ("serin.dev/inject", "enabled"),
                ("linkerd.io/inject", "enabled"),
            ],
        ),
    ]
    .into_iter()
    .map(|(ns, a)| {
        let a = a.into_iter().map(|(k, v)| (k.to_string(), v.to_string()));
        (ns.to_string(), a.collect())
    })
    .collect();
    let inj = Injector {
        namespaces: Arc::new(namespaces),
        ..injector(&[])
    };
    let mut linkerd = deployment_pod();
    linkerd["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "linkerd-proxy", "image": "cr.l5d.io/linkerd/proxy"}));
    let mut istio = deployment_pod();
    istio["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "true"});
    let mut istio_injected = deployment_pod();
    istio_injected["metadata"]["annotations"] = json!({"sidecar.istio.io/status": "{}"});
    for (pod, ns) in [
        (&linkerd, "shop"),
        (&istio, "shop"),
        (&istio_injected, "shop"),
        (&deployment_pod(), "both"),
    ] {
        let r = send(&inj, &review(pod, ns)).await;
        assert_eq!(r.response["allowed"], true, "{}", r.response);
        assert!(r.response.get("patch").is_none(), "{}", r.response);
        let warning = r.response["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains("another mesh's proxy"), "{}", r.response);
    }
    assert!(inj_metrics(&inj).contains("reason=\"other_mesh\"} 4"));
    // A pod that opts out of Linkerd in a Linkerd namespace is Serin's.
    let mut opted_out = deployment_pod();
    opted_out["metadata"]["annotations"] = json!({"linkerd.io/inject": "disabled"});
    let p = admitted(&opted_out, &send(&inj, &review(&opted_out, "both")).await);
    assert!(init_names(&p).contains(&"serin-proxy"));
}

// ---- The injector's certificate and caBundle, against a scripted API server ----

use k8s_openapi::ByteString;
use kube::Client;
use serin_kube::injector::{
    CertBundle, InjectorOptions, ensure_ca_bundle, ensure_certificate, generate_certificate,
};
use serin_kube::testing::{Expect, expect, status_err};

const SECRET: &str = "/api/v1/namespaces/serin-system/secrets/serin-injector-tls";

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}
const SECRETS: &str = "/api/v1/namespaces/serin-system/secrets";
const WEBHOOK: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/serin-injector";

fn b64(s: &str) -> Value {
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap()
}

fn secret_json(b: &CertBundle) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "serin-injector-tls", "namespace": "serin-system", "resourceVersion": "7"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&b.cert_pem), "tls.key": b64(&b.key_pem), "ca.crt": b64(&b.ca_pem)}
    })
}

fn webhook_json(ca_bundle: Option<&str>) -> Value {
    let mut client_config = json!({"service": {"name": "serin-injector", "namespace": "serin-system", "path": "/inject", "port": 443}});
    if let Some(ca) = ca_bundle {
        client_config["caBundle"] = b64(ca);
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "serin-injector", "resourceVersion": "3"},
        "webhooks": [
            {"name": "other.example.dev", "clientConfig": {"url": "https://other.example/"},
             "sideEffects": "None", "admissionReviewVersions": ["v1"]},
            {"name": "inject.serin.dev", "clientConfig": client_config, "failurePolicy": "Ignore",
             "sideEffects": "None", "admissionReviewVersions": ["v1"]}
        ]
    })
}

/// Plays `calls`, then checks the client made no other call.
async fn scenario<T>(calls: Vec<Expect>, run: impl AsyncFnOnce(Client) -> T) -> T {
    serin_kube::testing::scenario(
        "serin-system",
        std::time::Duration::from_secs(10),
        calls,
        run,
    )
    .await
}

#[tokio::test]
async fn a_fresh_cluster_gets_a_tls_secret_and_the_webhook_trusts_its_ca() {
    let opts = InjectorOptions::default();
    let created: Arc<std::sync::Mutex<Option<Value>>> = Arc::default();
    let seen = created.clone();
    let patched: Arc<std::sync::Mutex<Option<Value>>> = Arc::default();
    let seen_patch = patched.clone();
    let calls = vec![
        expect("GET", SECRET).not_found(),
        expect("POST", SECRETS)
            .check(move |body| {
                assert_eq!(body["type"], "kubernetes.io/tls");
                assert_eq!(body["metadata"]["name"], "serin-injector-tls");
                for k in ["tls.crt", "tls.key", "ca.crt"] {
                    assert!(body["data"][k].is_string(), "{k} in {body}");
                }
                *seen.lock().unwrap() = Some(body.clone());
            })
            // The answer is the object as created: an echo.
            .answer(|body| (201, body)),
        expect("GET", WEBHOOK).reply(200, webhook_json(None)),
        expect("PATCH", WEBHOOK)
            .check(move |body| *seen_patch.lock().unwrap() = Some(body.clone()))
            .reply(200, webhook_json(Some("x"))),
    ];
    let bundle = scenario(calls, async |client| {
        let b = ensure_certificate(&client, &opts, now())
            .await
            .expect("certificate");
        assert!(
            ensure_ca_bundle(&client, &opts, &b.ca_pem)
                .await
                .expect("caBundle")
        );
        b
    })
    .await;
    let secret = created.lock().unwrap().clone().unwrap();
    assert_eq!(secret["data"]["ca.crt"], b64(&bundle.ca_pem));
    assert!(bundle.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let patch = patched.lock().unwrap().clone().unwrap();
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/webhooks/1/name", "value": "inject.serin.dev"},
            {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64(&bundle.ca_pem)}
        ])
    );
    serin_kube::injector::ServingCert::new(&bundle, &opts).expect("the certificate serves TLS");
}

#[tokio::test]
async fn an_existing_secret_is_reused_and_a_current_ca_bundle_is_not_patched() {
    let opts = InjectorOptions::default();
    let existing = generate_certificate("serin-injector", "serin-system", now(), 365).unwrap();
    let calls = vec![
        expect("GET", SECRET).reply(200, secret_json(&existing)),
        expect("GET", WEBHOOK).reply(200, webhook_json(Some(&existing.ca_pem))),
    ];
    let got = scenario(calls, async |client| {
        let b = ensure_certificate(&client, &opts, now())
            .await
            .expect("certificate");
        assert!(
            !ensure_ca_bundle(&client, &opts, &b.ca_pem)
                .await
                .expect("caBundle")
        );
        b
    })
    .await;
    assert_eq!(got, existing);
}

#[tokio::test]
async fn a_replica_losing_the_create_race_serves_the_winners_certificate() {
    let opts = InjectorOptions::default();
    let winner = generate_certificate("serin-injector", "serin-system", now(), 365).unwrap();
    let calls = vec![
        expect("GET", SECRET).not_found(),
        expect("POST", SECRETS).reply(
            409,
            status_err(
                409,
                "AlreadyExists",
                "secrets \"serin-injector-tls\" already exists",
            ),
        ),
        expect("GET", SECRET).reply(200, secret_json(&winner)),
    ];
    let got = scenario(calls, async |client| {
        ensure_certificate(&client, &opts, now()).await
    })
    .await;
    assert_eq!(got.expect("the winner's certificate"), winner);
}

#[tokio::test]
async fn a_missing_webhook_configuration_or_a_broken_secret_is_reported_not_panicked() {
    let opts = InjectorOptions::default();
    let calls = vec![expect("GET", WEBHOOK).not_found()];
    let patched = scenario(calls, async |client| {
        ensure_ca_bundle(&client, &opts, "ca").await
    })
    .await;
    assert!(!patched.expect("not installed yet is not an error"));

    let mut broken =
        secret_json(&generate_certificate("serin-injector", "serin-system", now(), 365).unwrap());
    broken["data"].as_object_mut().unwrap().remove("tls.key");
    let calls = vec![expect("GET", SECRET).reply(200, broken)];
    let err = scenario(calls, async |client| {
        ensure_certificate(&client, &opts, now()).await
    })
    .await
    .expect_err("a Secret without tls.key");
    let msg = err.to_string();
    assert!(
        msg.contains("serin-system/serin-injector-tls") && msg.contains("tls.key"),
        "{msg}"
    );

    let calls = vec![
        expect("GET", SECRET).reply(403, status_err(403, "Forbidden", "secrets is forbidden")),
    ];
    let err = scenario(calls, async |client| {
        ensure_certificate(&client, &opts, now()).await
    })
    .await
    .expect_err("forbidden");
    assert!(
        err.to_string()
            .contains("reading Secret serin-system/serin-injector-tls"),
        "{err}"
    );
}

#[tokio::test]
async fn namespace_annotations_come_from_the_api_server() {
    use serin_kube::admission::NamespaceAnnotations as _;
    let calls = vec![
        expect("GET", "/api/v1/namespaces/shop").reply(
            200,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "shop", "annotations": {"serin.dev/inject": "enabled"}}}),
        ),
        expect("GET", "/api/v1/namespaces/gone").not_found(),
    ];
    let (shop, gone) = scenario(calls, async |client| {
        let ns = serin_kube::injector::ApiNamespaces(client);
        (ns.annotations("shop").await, ns.annotations("gone").await)
    })
    .await;
    assert_eq!(shop.unwrap()["serin.dev/inject"], "enabled");
    assert!(gone.is_err());
}

// ---------------------------------------------------------------------------------------------
// Workload identity for owners other than Deployments

/// A pod created by `kind`/`name` (no pod-template-hash: only Deployments' ReplicaSets set it).
fn pod_owned_by(kind: &str, name: &str) -> Value {
    let mut pod = deployment_pod();
    pod["metadata"]["labels"] = json!({"app": name});
    pod["metadata"]["generateName"] = json!(format!("{name}-"));
    pod["metadata"]["ownerReferences"] = json!([
        {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "owner-uid", "controller": true}
    ]);
    pod
}

#[tokio::test]
async fn pods_of_statefulsets_daemonsets_jobs_and_bare_replicasets_are_labelled_as_linkerd_labels_them()
 {
    let inj = injector(&[("shop", "enabled")]);
    for (kind, name, label) in [
        ("StatefulSet", "db", "statefulset=db"),
        ("DaemonSet", "agent", "daemonset=agent"),
        ("Job", "migrate-29001", "job=migrate-29001"),
        ("ReplicaSet", "legacy", "replicaset=legacy"),
        ("ReplicationController", "old", "replicationcontroller=old"),
    ] {
        let pod = pod_owned_by(kind, name);
        let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
        let init = p.spec.as_ref().unwrap().init_containers.as_ref().unwrap();
        let proxy = init.iter().find(|c| c.name == "serin-proxy").unwrap();
        assert_eq!(
            env(proxy, "SERIN_PROXY_LABELS"),
            format!(
                "namespace=$(SERIN_POD_NAMESPACE),pod=$(SERIN_POD_NAME),{label},pod_template_hash=$(SERIN_POD_TEMPLATE_HASH)"
            ),
            "{kind}"
        );
        assert_eq!(
            env(proxy, "SERIN_PROXY_WORKLOAD"),
            format!("$(SERIN_POD_NAMESPACE)/{name}"),
            "{kind}"
        );
    }
    // A ReplicaSet whose name ends in the pod's template hash belongs to a Deployment.
    let pod = deployment_pod();
    let p = admitted(&pod, &send(&inj, &review(&pod, "shop")).await);
    let proxy = p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[1].clone();
    assert!(env(&proxy, "SERIN_PROXY_LABELS").contains(",deployment=web,"));
}

// ---------------------------------------------------------------------------------------------
// Certificate renewal

#[tokio::test]
async fn a_certificate_near_its_expiry_is_renewed_and_both_cas_are_trusted_meanwhile() {
    use serin_kube::injector::{not_after, refresh_certificate, renewal_due};
    let opts = InjectorOptions::default();
    // Issued 300 days ago for a year: 65 days left, under a third of the lifetime.
    let issued = now() - jiff::SignedDuration::from_hours(24 * 300);
    let old = generate_certificate("serin-injector", "serin-system", issued, 365).unwrap();
    assert!(renewal_due(&old, now(), 365));
    let fresh_year = generate_certificate("serin-injector", "serin-system", now(), 365).unwrap();
    assert!(!renewal_due(&fresh_year, now(), 365));
    let left = now().duration_until(not_after(&fresh_year).unwrap());
    assert!(left.as_hours() >= 364 * 24, "{left:?}");

    let patched: Arc<std::sync::Mutex<Value>> = Arc::default();
    let (seen_patch, old_ca) = (patched.clone(), old.ca_pem.clone());
    let replaced: Arc<std::sync::Mutex<Value>> = Arc::default();
    let seen_put = replaced.clone();
    let calls = vec![
        expect("GET", SECRET).reply(200, secret_json(&old)),
        expect("GET", WEBHOOK).reply(200, webhook_json(Some(&old.ca_pem))),
        expect("PATCH", WEBHOOK)
            .check(move |body| *seen_patch.lock().unwrap() = body.clone())
            .reply(200, webhook_json(Some("x"))),
        expect("PUT", SECRET)
            .check(move |body| {
                assert_eq!(
                    body["metadata"]["resourceVersion"], "7",
                    "a replace, not a blind write"
                );
                *seen_put.lock().unwrap() = body.clone();
            })
            .answer(|body| (200, body)),
    ];
    let served = old.clone();
    let renewed = scenario(calls, async |client| {
        refresh_certificate(&client, &opts, now(), &served).await
    })
    .await
    .expect("renewed")
    .expect("a new certificate to serve");
    assert_ne!(renewed.cert_pem, old.cert_pem);
    assert!(!renewal_due(&renewed, now(), 365));
    // The bundle trusts the new CA first and the old one still.
    assert!(renewed.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(renewed.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(renewed.ca_pem.contains(old_ca.trim()));
    let patch = patched.lock().unwrap().clone();
    assert_eq!(
        patch[1]["value"],
        b64(&renewed.ca_pem),
        "caBundle patched before the Secret"
    );
    let put = replaced.lock().unwrap().clone();
    assert_eq!(put["data"]["tls.crt"], b64(&renewed.cert_pem));
    assert_eq!(put["data"]["ca.crt"], b64(&renewed.ca_pem));

    // A replica whose certificate is current makes one call and changes nothing.
    let calls = vec![expect("GET", SECRET).reply(200, secret_json(&renewed))];
    let none = scenario(calls, async |client| {
        refresh_certificate(&client, &opts, now(), &renewed).await
    })
    .await
    .expect("checked");
    assert_eq!(none, None);
}

#[tokio::test]
async fn a_replica_losing_the_renewal_race_serves_the_winners_certificate() {
    use serin_kube::injector::refresh_certificate;
    let opts = InjectorOptions::default();
    let issued = now() - jiff::SignedDuration::from_hours(24 * 300);
    let old = generate_certificate("serin-injector", "serin-system", issued, 365).unwrap();
    let winner = generate_certificate("serin-injector", "serin-system", now(), 365).unwrap();
    let calls = vec![
        expect("GET", SECRET).reply(200, secret_json(&old)),
        expect("GET", WEBHOOK).reply(200, webhook_json(Some(&old.ca_pem))),
        expect("PATCH", WEBHOOK).reply(200, webhook_json(Some("x"))),
        expect("PUT", SECRET).reply(
            409,
            status_err(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again"),
        ),
        expect("GET", SECRET).reply(200, secret_json(&winner)),
        // The winner's bundle is what the webhook must trust.
        expect("GET", WEBHOOK).reply(200, webhook_json(Some("x"))),
        expect("PATCH", WEBHOOK).reply(200, webhook_json(Some(&winner.ca_pem))),
    ];
    let got = scenario(calls, async |client| {
        refresh_certificate(&client, &opts, now(), &old).await
    })
    .await
    .expect("refreshed");
    assert_eq!(got, Some(winner));
}

// ---------------------------------------------------------------------------------------------
// The injector end to end over HTTPS, with its watches

/// A fake API server answering by path (watches are held open).
fn fake_api(
    mut handle: serin_kube::testing::Handle,
    answer: impl Fn(&str, &str, bool, &Value) -> Option<(u16, Value)> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use serin_kube::testing::{Call, respond};
    tokio::spawn(async move {
        let mut held = vec![];
        while let Some((req, send)) = handle.next_request().await {
            let call = Call::read(req).await;
            match answer(&call.method, &call.path, call.is_watch(), &call.body) {
                Some((code, v)) => respond(send, code, &v),
                None => held.push(send),
            }
        }
    })
}

fn namespace_json(name: &str, inject: Option<&str>) -> Value {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "resourceVersion": "5"}});
    if let Some(v) = inject {
        ns["metadata"]["annotations"] = json!({"serin.dev/inject": v});
    }
    ns
}

fn pod_meta_json(ns: &str, name: &str, injected: bool) -> Value {
    let mut m = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                       "metadata": {"name": name, "namespace": ns, "resourceVersion": "6"}});
    if injected {
        m["metadata"]["annotations"] = json!({"serin.dev/proxy-image": "serin/proxy:test"});
    }
    m
}

/// The API server of a cluster where `shop` opted in and holds one pod admitted during an
/// outage and one injected pod; records the caBundle the injector patches in.
fn cluster(
    ca_bundle: Arc<std::sync::Mutex<Option<String>>>,
) -> impl Fn(&str, &str, bool, &Value) -> Option<(u16, Value)> {
    let list = |kind: &str, api: &str, items: Vec<Value>| json!({"apiVersion": api, "kind": kind, "metadata": {"resourceVersion": "9"}, "items": items});
    move |method, path, watch, body| match (method, path) {
        (_, "/api/v1/namespaces" | "/api/v1/pods") if watch => None,
        ("GET", "/api/v1/namespaces") => Some((
            200,
            list(
                "NamespaceList",
                "v1",
                vec![
                    namespace_json("shop", Some("enabled")),
                    namespace_json("plain", None),
                ],
            ),
        )),
        ("GET", "/api/v1/pods") => Some((
            200,
            list(
                "PartialObjectMetadataList",
                "meta.k8s.io/v1",
                vec![
                    pod_meta_json("shop", "web-1", true),
                    pod_meta_json("shop", "web-2", false),
                    pod_meta_json("plain", "other", false),
                ],
            ),
        )),
        ("GET", SECRET) => Some((
            404,
            status_err(404, "NotFound", "secrets \"serin-injector-tls\" not found"),
        )),
        ("POST", SECRETS) => Some((201, body.clone())),
        ("GET", WEBHOOK) => Some((200, webhook_json(None))),
        ("PATCH", WEBHOOK) => {
            let b64 = body[1]["value"].clone();
            let bytes: ByteString = serde_json::from_value(b64).expect("caBundle is base64");
            *ca_bundle.lock().unwrap() = Some(String::from_utf8(bytes.0).unwrap());
            Some((200, webhook_json(Some("x"))))
        }
        (m, p) => panic!("unexpected call {m} {p}"),
    }
}

/// One HTTPS request to the injector at `addr`, trusting only `ca_pem`.
async fn https(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    use http_body_util::BodyExt as _;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    // The name the API server uses for the webhook's Service.
    let name = rustls::pki_types::ServerName::try_from("serin-injector.serin-system.svc").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "serin-injector.serin-system.svc")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}

/// The injector on a free loopback port: its address, the switch that stops it, its task.
async fn start_injector(
    client: Client,
    opts: InjectorOptions,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), serin_kube::injector::InjectorError>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serin_kube::injector::run_on(
        client,
        opts,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, task)
}

/// Stops the injector, expecting a clean stop, and then its fake API server.
async fn stop_injector(
    stop: tokio::sync::oneshot::Sender<()>,
    injector: tokio::task::JoinHandle<Result<(), serin_kube::injector::InjectorError>>,
    api: tokio::task::JoinHandle<()>,
) {
    stop.send(()).unwrap();
    injector
        .await
        .unwrap()
        .expect("the injector stopped cleanly");
    api.abort();
}

/// The caBundle the injector patched into the webhook configuration, once it has.
async fn patched_ca_bundle(ca_bundle: &std::sync::Mutex<Option<String>>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Some(ca) = ca_bundle.lock().unwrap().clone() {
                return ca;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the injector patched the caBundle")
}

#[tokio::test]
async fn the_injector_serves_admission_reviews_over_https_and_counts_pods_missed_during_an_outage()
{
    let (client, handle) = serin_kube::testing::mock_client("serin-system");
    let ca_bundle: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let api = fake_api(handle, cluster(ca_bundle.clone()));
    let opts = InjectorOptions {
        inject: InjectConfig {
            proxy_image: "serin/proxy:test".into(),
            ..InjectConfig::default()
        },
        ..InjectorOptions::default()
    };
    let (addr, stop, injector) = start_injector(client, opts).await;

    // The caBundle the webhook configuration was given is what the API server trusts.
    let ca = patched_ca_bundle(&ca_bundle).await;

    // The uninjected-pods gauge, once both watches have loaded.
    let metrics = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let (code, body) = https(addr, &ca, "GET", "/metrics", vec![])
                .await
                .expect("https");
            assert_eq!(code, 200);
            let text = String::from_utf8(body).unwrap();
            if text.contains("serin_injector_uninjected_pods{") {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gauge appeared");
    assert!(
        metrics.contains("serin_injector_uninjected_pods{namespace=\"shop\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("namespace=\"plain\""), "{metrics}");

    // An AdmissionReview over HTTPS, its namespace's annotation read from the cache (the fake
    // API server panics on a GET of a Namespace).
    let pod = deployment_pod();
    let (code, body) = https(addr, &ca, "POST", "/inject", review(&pod, "shop"))
        .await
        .expect("https");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "AdmissionReview");
    let p = admitted(
        &pod,
        &Reply {
            status: code,
            response: v["response"].clone(),
        },
    );
    assert_eq!(init_names(&p), ["serin-init", "serin-proxy"]);
    assert_eq!(names(&p.spec.as_ref().unwrap().containers), ["app"]);

    // A client trusting another CA is refused.
    let other = generate_certificate("serin-injector", "serin-system", now(), 365).unwrap();
    let err = https(addr, &other.ca_pem, "GET", "/ready", vec![])
        .await
        .expect_err("an untrusted certificate");
    assert!(err.contains("TLS"), "{err}");

    stop_injector(stop, injector, api).await;
}

#[tokio::test]
async fn an_expired_certificate_left_by_a_long_outage_is_renewed_before_it_is_served() {
    // The injector was scaled to 0 for longer than the certificate's life: at start it must
    // not serve the expired certificate (the API server refuses it, and with failurePolicy
    // Ignore every pod is admitted without the proxy) until its first hourly check.
    let day = jiff::SignedDuration::from_hours(24);
    let expired =
        generate_certificate("serin-injector", "serin-system", now() - day * 400, 365).unwrap();
    assert!(serin_kube::injector::not_after(&expired).unwrap() < now());
    let (client, handle) = serin_kube::testing::mock_client("serin-system");
    let ca_bundle: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let secret = Arc::new(std::sync::Mutex::new(secret_json(&expired)));
    let base = cluster(ca_bundle.clone());
    let stored = secret.clone();
    let api = fake_api(handle, move |method, path, watch, body| {
        match (method, path) {
            ("GET", SECRET) => Some((200, stored.lock().unwrap().clone())),
            ("PUT", SECRET) => {
                *stored.lock().unwrap() = body.clone();
                Some((200, body.clone()))
            }
            _ => base(method, path, watch, body),
        }
    });
    let (addr, stop, injector) = start_injector(client, InjectorOptions::default()).await;
    let ca = patched_ca_bundle(&ca_bundle).await;
    let (code, _) = https(addr, &ca, "GET", "/ready", vec![])
        .await
        .expect("a current certificate is served");
    assert_eq!(code, 200);
    let renewed = secret.lock().unwrap()["data"]["tls.crt"].clone();
    assert_ne!(
        renewed,
        secret_json(&expired)["data"]["tls.crt"],
        "the Secret was renewed"
    );
    stop_injector(stop, injector, api).await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_from_the_next_handshake_without_a_restart() {
    use serin_kube::admission::Injector;
    use serin_kube::injector::{ServingCert, serve, tls_config};
    let opts = InjectorOptions::default();
    let first = generate_certificate("serin-injector", "serin-system", now(), 365).unwrap();
    let cert = Arc::new(ServingCert::new(&first, &opts).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inj = Arc::new(Injector {
        config: InjectConfig::default(),
        namespaces: Arc::new(BTreeMap::<String, BTreeMap<String, String>>::new()),
        metrics: InjectorMetrics::default(),
    });
    let server = tokio::spawn(serve(
        listener,
        tls_config(cert.clone()).unwrap(),
        inj,
        std::future::pending(),
    ));
    let (code, _) = https(addr, &first.ca_pem, "GET", "/ready", vec![])
        .await
        .unwrap();
    assert_eq!(code, 200);

    let second = generate_certificate("serin-injector", "serin-system", now(), 365).unwrap();
    cert.set(&second, &opts).unwrap();
    let (code, _) = https(addr, &second.ca_pem, "GET", "/ready", vec![])
        .await
        .unwrap();
    assert_eq!(code, 200);
    let err = https(addr, &first.ca_pem, "GET", "/ready", vec![])
        .await
        .expect_err("the old certificate is no longer served");
    assert!(err.contains("TLS"), "{err}");
    // A bad bundle is refused and the served certificate kept.
    let mut broken = second.clone();
    broken.key_pem = first.key_pem.clone();
    assert!(cert.set(&broken, &opts).is_err());
    let (code, _) = https(addr, &second.ca_pem, "GET", "/ready", vec![])
        .await
        .unwrap();
    assert_eq!(code, 200);
    server.abort();
}

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
            Value::String(s) => base64_decode(s),
            Value::Array(a) => a.iter().map(|b| b.as_u64().expect("byte") as u8).collect(),
            other => panic!("patch is neither base64 nor bytes: {other}"),
        };
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is JSON Patch");
        json_patch::patch(&mut doc, &patch).expect("patch applies to the input");
    }
    serde_json::from_value(doc).expect("the admitted pod deserialises into k8s-openapi's Pod")
}

/// Minimal standard base64 decoding (the patch travels base64-encoded).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
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

// ---- The injector's certificate and caBundle, against a scripted API server ----

use k8s_openapi::ByteString;
use kube::Client;
use serin_kube::injector::{
    CertBundle, InjectorOptions, ensure_ca_bundle, ensure_certificate, generate_certificate,
};
use serin_kube::testing::{Expect, expect, status_err};

const SECRET: &str = "/api/v1/namespaces/serin-system/secrets/serin-injector-tls";
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
        let b = ensure_certificate(&client, &opts, 2026)
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
    serin_kube::injector::tls_config(&bundle, &opts).expect("the certificate serves TLS");
}

#[tokio::test]
async fn an_existing_secret_is_reused_and_a_current_ca_bundle_is_not_patched() {
    let opts = InjectorOptions::default();
    let existing = generate_certificate("serin-injector", "serin-system", 2026).unwrap();
    let calls = vec![
        expect("GET", SECRET).reply(200, secret_json(&existing)),
        expect("GET", WEBHOOK).reply(200, webhook_json(Some(&existing.ca_pem))),
    ];
    let got = scenario(calls, async |client| {
        let b = ensure_certificate(&client, &opts, 2026)
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
    let winner = generate_certificate("serin-injector", "serin-system", 2026).unwrap();
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
        ensure_certificate(&client, &opts, 2026).await
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
        secret_json(&generate_certificate("serin-injector", "serin-system", 2026).unwrap());
    broken["data"].as_object_mut().unwrap().remove("tls.key");
    let calls = vec![expect("GET", SECRET).reply(200, broken)];
    let err = scenario(calls, async |client| {
        ensure_certificate(&client, &opts, 2026).await
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
        ensure_certificate(&client, &opts, 2026).await
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

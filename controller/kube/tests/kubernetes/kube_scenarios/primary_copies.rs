//! What the primary gets besides its Deployment: `-primary` copies of the ConfigMaps and Secrets
//! the target's pods use (tracked configs), and of the target's HorizontalPodAutoscaler
//! (`autoscalerRef`), each owned by the Canary.

use super::fixtures::*;

/// `podinfo` with its environment from a ConfigMap and a Secret.
fn configured_deployment() -> Value {
    let mut d = deployment("podinfo:1").build();
    d["spec"]["template"]["spec"]["containers"][0]["envFrom"] = json!([
        {"configMapRef": {"name": "podinfo-config"}},
        {"secretRef": {"name": "podinfo-secret"}}
    ]);
    d
}

fn config_map() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "podinfo-config", "namespace": NS, "labels": {"app": "podinfo"}},
           "data": {"LOG_LEVEL": "debug"}})
}

fn get_config_map() -> Expect {
    expect(
        "GET",
        format!("/api/v1/namespaces/{NS}/configmaps/podinfo-config"),
    )
    .reply(200, config_map())
}

fn get_config_secret() -> Expect {
    expect(
        "GET",
        format!("/api/v1/namespaces/{NS}/secrets/podinfo-secret"),
    )
    .reply(200, secret("podinfo-secret", &[("TOKEN", b"s3cret")]))
}

fn hpa() -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "podinfo", "namespace": NS},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "minReplicas": 2, "maxReplicas": 4}})
}

/// The target's HorizontalPodAutoscaler `podinfo` is read.
fn get_autoscaler(hpa: Value) -> Expect {
    expect(
        "GET",
        format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/podinfo"),
    )
    .reply(200, hpa)
}

/// The primary's copy of the autoscaler is applied: it scales the primary, is owned by the
/// Canary, and passes `check`.
fn apply_primary_autoscaler(check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/podinfo-primary"),
    )
    .check(move |b| {
        assert_eq!(b["spec"]["scaleTargetRef"]["name"], "podinfo-primary");
        check(b);
        owned_by_the_canary(b);
    })
}

fn owned_by_the_canary(b: &Value) {
    assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "Canary", "{b}");
    assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "c-uid-1", "{b}");
}

#[tokio::test]
async fn bootstrap_copies_tracked_configs_and_the_autoscaler_for_the_primary() {
    let mut canary = canary("podinfo").build();
    canary["spec"]["autoscalerRef"] = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo",
        "primaryScalerReplicas": {"minReplicas": 3, "maxReplicas": 6}
    });
    let now = Timestamp::from_millis(T0);
    let calls = vec![
        get_target(configured_deployment()),
        get_config_map(),
        get_config_secret(),
        no_primary(),
        get_target(configured_deployment()),
        get_config_map(),
        get_config_secret(),
        expect(
            "PATCH",
            format!("/api/v1/namespaces/{NS}/configmaps/podinfo-config-primary"),
        )
        .check(|b| {
            assert_eq!(b["data"]["LOG_LEVEL"], "debug");
            owned_by_the_canary(b);
        }),
        expect(
            "PATCH",
            format!("/api/v1/namespaces/{NS}/secrets/podinfo-secret-primary"),
        )
        .check(|b| {
            assert_eq!(b["data"]["TOKEN"], "czNjcmV0", "the data, base64 as stored");
            owned_by_the_canary(b);
        }),
        apply_primary(|b| {
            let env = &b["spec"]["template"]["spec"]["containers"][0]["envFrom"];
            assert_eq!(
                env[0]["configMapRef"]["name"], "podinfo-config-primary",
                "{b}"
            );
            assert_eq!(env[1]["secretRef"]["name"], "podinfo-secret-primary", "{b}");
        }),
        get_autoscaler(hpa()),
        apply_primary_autoscaler(|b| {
            assert_eq!(b["spec"]["minReplicas"], 3);
            assert_eq!(b["spec"]["maxReplicas"], 6);
        }),
        apply_service("podinfo-primary", "podinfo-primary"),
        apply_service("podinfo-canary", "podinfo"),
        apply_service("podinfo", "podinfo-primary"),
        event("Halted"),
        status_write(&canary, |b| {
            assert_eq!(b["status"]["phase"], "Initializing")
        }),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    result.unwrap();
}

#[tokio::test]
async fn a_missing_autoscaler_names_the_field() {
    let mut canary = canary("podinfo").build();
    canary["spec"]["autoscalerRef"] =
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "gone"});
    let now = Timestamp::from_millis(T0);
    let calls = vec![
        get_target(deployment("podinfo:1")),
        no_primary(),
        get_target(deployment("podinfo:1")),
        apply_primary(|_| {}),
        expect(
            "GET",
            format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/gone"),
        )
        .not_found(),
        status_write(&canary, |b| {
            let synced = cond(b, "Synced");
            assert_eq!(synced["status"], "False");
            assert!(
                synced["message"]
                    .as_str()
                    .unwrap()
                    .contains("spec.autoscalerRef.name"),
                "{synced}"
            );
        }),
        event("SyncFailed"),
    ];
    let (result, _) = run(parse(canary), now, analyzer(vec![]), calls).await;
    assert!(result.is_err());
}

#[tokio::test]
async fn a_promotion_carries_the_autoscalers_changes_to_the_primarys_copy() {
    // The user raised maxReplicas on the target's HPA during the run: promoting the new
    // revision brings that to the primary's HPA, as Flagger reconciles it on promotion, instead
    // of leaving production scaled by the limits it had at bootstrap.
    let mut canary = canary("podinfo").build();
    canary["spec"]["autoscalerRef"] = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"
    });
    let (status, at) = progressing_at(&canary, 30);
    let canary = with_status(canary, &status);
    let now = at + Duration::from_secs(60);
    let mut raised = hpa();
    raised["spec"]["maxReplicas"] = json!(10);
    let mut calls = promoting(|_| {});
    calls.extend([
        get_autoscaler(raised),
        apply_primary_autoscaler(|b| assert_eq!(b["spec"]["maxReplicas"], 10)),
        event("Promoting"),
        status_write(&canary, |b| assert_eq!(b["status"]["phase"], "Promoting")),
    ]);
    let (result, _) = run(parse(canary), now, analyzer(vec![pass()]), calls).await;
    result.unwrap();
}

//! What the controller will not run as written: invalid specs and unsupported providers get a
//! condition naming the field, and ignored fields are listed.

use super::fixtures::*;

/// The first reconcile of a new Canary whose analysis has no results yet: the primary and the
/// services are made, the run halts, and `check` reads the status written.
fn bootstrap_halted_at_no_results(
    canary: &Value,
    check: impl FnOnce(&Value) + Send + 'static,
) -> Vec<Expect> {
    bootstrapping_halted(canary, event("Halted"), check)
}

/// One reconcile of `canary` at T0 with no analysis results, answered by `calls`.
async fn reconcile_once(canary: Value, calls: Vec<Expect>) -> Result<Requeue, ReconcileError> {
    run(
        parse(canary),
        Timestamp::from_millis(T0),
        analyzer(vec![]),
        calls,
    )
    .await
    .0
}

#[tokio::test]
async fn an_invalid_canary_gets_a_condition_naming_the_field() {
    let canary = canary("podinfo").interval("5").build();
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
    let result = reconcile_once(canary, calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

#[tokio::test]
async fn an_unsupported_provider_is_named_with_the_supported_ones() {
    let canary = canary("podinfo")
        .provider("istio")
        .gateways(&["public-gateway"])
        .build();
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
    let result = reconcile_once(canary, calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

#[tokio::test]
async fn istio_only_service_fields_are_reported_as_ignored() {
    let canary = canary("podinfo")
        .gateways(&["public-gateway"])
        .traffic_policy(json!({"tls": {"mode": "ISTIO_MUTUAL"}}))
        .build();
    let calls = bootstrap_halted_at_no_results(&canary, |b| {
        let c = cond(b, "IgnoredFields");
        let m = c["message"].as_str().unwrap();
        assert!(
            m.contains("spec.service.gateways") && m.contains("spec.service.trafficPolicy"),
            "{m}"
        );
        assert_eq!(cond(b, "Valid")["status"], "True");
    });
    let result = reconcile_once(canary, calls).await;
    result.unwrap();
}

#[tokio::test]
async fn ab_testing_on_an_smi_traffic_split_is_refused_before_the_rollout() {
    // A TrafficSplit splits by weight only. Such a Canary used to pass as supported, make its
    // primary and services, and then stop at its first route write in the middle of a run.
    let mut canary = canary("podinfo").provider("smi").build();
    canary["spec"]["analysis"] = json!({
        "interval": "1m", "threshold": 2, "iterations": 10,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}}]
    });
    let parsed = parse(canary.clone());
    let calls = vec![status_write(&canary, move |b| {
        let c = cond(b, "ProviderSupported");
        assert_eq!(c["status"], "False");
        let m = c["message"].as_str().unwrap();
        assert!(m.contains("spec.analysis.match"), "{m}");
        // Word for word what `serin validate` prints for this Canary (exit 3).
        let serin_api::support::Verdict::NotRunnable(reasons) =
            serin_api::support::canary_verdict(&parsed, "smi")
        else {
            panic!("validate calls it runnable");
        };
        assert_eq!(m, reasons.join("; "));
    })];
    let result = reconcile_once(canary, calls).await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

#[tokio::test]
async fn every_field_validate_calls_ignored_is_reported_by_the_controller_too() {
    // `serin validate` said these were ignored, while the controller's IgnoredFields condition
    // named only the routing fields it knew: the rest went silently on the cluster.
    let mut canary = canary("podinfo")
        .webhooks(json!([{"name": "smoke", "url": "https://smoke.test/", "disableTLS": true}]))
        .build();
    canary["spec"]["service"]["headless"] = json!(true);
    canary["spec"]["service"]["trafficDistribution"] = json!("PreferClose");
    let calls = bootstrap_halted_at_no_results(&canary, |b| {
        let m = cond(b, "IgnoredFields")["message"].as_str().unwrap();
        for field in [
            "spec.service.headless",
            "spec.service.trafficDistribution",
            "spec.analysis.webhooks[].disableTLS",
        ] {
            assert!(m.contains(field), "{field} in {m}");
        }
    });
    reconcile_once(canary, calls).await.unwrap();
}

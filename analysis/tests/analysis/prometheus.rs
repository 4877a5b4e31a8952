//! Integration test against a real Prometheus (Debian's `prometheus`, installed by `.ci/run`),
//! started on a free loopback port and scraping a small exporter of Linkerd/Istio-named
//! metrics. The built-in checks of every mesh flavour, a MetricTemplate query, per-arm traffic
//! for the judge and the no-data paths all go through `prometheus-http-query`.

use crate::common;

use std::time::Duration;

use serin_analysis::testing::{eventually, start_prometheus};
use serin_analysis::*;

fn check(name: &str, min: Option<f64>, max: Option<f64>, query: Option<&str>) -> MetricCheck {
    MetricCheck::from_spec(
        "spec.analysis.metrics[0]",
        &MetricSpec {
            name: name.into(),
            interval: Some("1m".into()),
            threshold_range: Some(ThresholdRange { min, max }),
            template_query: query.map(str::to_string),
            ..MetricSpec::default()
        },
    )
    .expect("valid check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_checks_template_queries_and_arm_traffic_through_real_prometheus() {
    let exporter = common::start_exporter().await;
    // Counters advance 100 requests per arm every 200 ms while the test runs.
    let ticker = {
        let exporter = std::sync::Arc::new(exporter);
        let e = exporter.clone();
        let handle = tokio::spawn(async move {
            loop {
                e.tick(1);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        (exporter, handle)
    };
    let prometheus = start_prometheus(ticker.0.port).await;
    let mut providers = Vec::new();
    for mesh in [Mesh::Serin, Mesh::Linkerd, Mesh::Istio] {
        let mut config = PrometheusConfig::new(prometheus.address.clone(), mesh);
        config.headers = vec![("X-Scope-OrgID".into(), "serin-test".into())];
        config.auth = Some(PrometheusAuth::Basic {
            username: "u".into(),
            password: "p".into(),
        });
        let provider = eventually(
            "Prometheus to answer the availability probe",
            Duration::from_secs(60),
            || {
                let config = config.clone();
                async move { PrometheusProvider::connect(config).await.ok() }
            },
        )
        .await;
        providers.push((mesh, provider));
    }
    let target = Target::flagger("podinfo", "test", "podinfo", None);
    let no_data = NoDataConfig::default();

    // Wait until a 1m rate has at least two samples for every flavour.
    for (_, provider) in &providers {
        eventually(
            "samples for the built-in success rate",
            Duration::from_secs(60),
            || async {
                let o = provider
                    .builtin(
                        BuiltinMetric::RequestSuccessRate,
                        &target,
                        Duration::from_secs(60),
                    )
                    .await
                    .ok()?;
                o.value.filter(|_| o.sample_size.unwrap_or(0) > 0)
            },
        )
        .await;
    }

    for (mesh, provider) in &providers {
        // Canary: 98% success (2 of every 100 fail), p99 exactly 20 ms.
        let sr = run_check(
            provider,
            &check("request-success-rate", Some(99.0), None, None),
            &target,
            &no_data,
        )
        .await
        .unwrap();
        assert_eq!(sr.verdict, Verdict::Fail, "{mesh:?}: {}", sr.reason);
        let v = sr.value.unwrap();
        assert!((v - 98.0).abs() < 1e-6, "{mesh:?}: success rate {v}");
        assert!(sr.sample_size.unwrap() > 0, "{mesh:?}");
        assert!(sr.query.as_deref().unwrap().contains("[1m]"), "{mesh:?}");
        let ok = run_check(
            provider,
            &check("request-success-rate", Some(97.0), None, None),
            &target,
            &no_data,
        )
        .await
        .unwrap();
        assert_eq!(ok.verdict, Verdict::Pass, "{mesh:?}: {}", ok.reason);
        let d = run_check(
            provider,
            &check("request-duration", None, Some(500.0), None),
            &target,
            &no_data,
        )
        .await
        .unwrap();
        assert_eq!(d.verdict, Verdict::Pass, "{mesh:?}: {}", d.reason);
        let p99 = d.value.unwrap();
        assert!((p99 - 20.0).abs() < 1e-6, "{mesh:?}: p99 {p99}");
        let slow = run_check(
            provider,
            &check("request-duration", None, Some(15.0), None),
            &target,
            &no_data,
        )
        .await
        .unwrap();
        assert_eq!(slow.verdict, Verdict::Fail, "{mesh:?}: {}", slow.reason);
    }

    let (_, serin) = &providers[0];

    // A MetricTemplate query with Flagger's variables, rendered and run.
    let rps = check(
        "canary-rps",
        Some(1.0),
        None,
        Some(
            r#"sum(rate(response_total{dst_service="{{ service }}-canary", direction="outbound"}[{{ interval }}]))"#,
        ),
    );
    let r = run_check(serin, &rps, &target, &no_data).await.unwrap();
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
    assert!(
        r.query
            .as_deref()
            .unwrap()
            .contains(r#"dst_service="podinfo-canary""#)
    );
    assert!(r.value.unwrap() > 1.0, "{:?}", r.value);

    // An unknown template variable never reaches Prometheus.
    let bad = check(
        "bad",
        Some(1.0),
        None,
        Some("up{x=\"{{ variables.zone }}\"}"),
    );
    let err = run_check(serin, &bad, &target, &no_data).await.unwrap_err();
    assert!(err.to_string().contains("variables.zone"), "{err}");

    // A query that matches nothing: never healthy, whatever the policy.
    let empty = check(
        "empty",
        Some(1.0),
        None,
        Some(r#"sum(rate(response_total{dst_service="nope"}[1m]))"#),
    );
    for policy in [NoDataPolicy::Wait, NoDataPolicy::Pass] {
        let nd = NoDataConfig {
            min_requests: 1,
            policy,
        };
        let r = run_check(serin, &empty, &target, &nd).await.unwrap();
        assert_eq!(r.verdict, Verdict::Inconclusive, "{policy:?}: {}", r.reason);
        assert_eq!(r.value, None);
    }
    let nd = NoDataConfig {
        min_requests: 1,
        policy: NoDataPolicy::Fail,
    };
    assert_eq!(
        run_check(serin, &empty, &target, &nd)
            .await
            .unwrap()
            .verdict,
        Verdict::Fail
    );

    // A canary without traffic: the request count says why there is no value.
    let ghost = Target::flagger("ghost", "test", "ghost", None);
    let sr = check("request-success-rate", Some(99.0), None, None);
    for (policy, verdict) in [
        (NoDataPolicy::Wait, Verdict::Inconclusive),
        (NoDataPolicy::Fail, Verdict::Fail),
        (NoDataPolicy::Pass, Verdict::Pass),
    ] {
        let nd = NoDataConfig {
            min_requests: 10,
            policy,
        };
        let r = run_check(serin, &sr, &ghost, &nd).await.unwrap();
        assert_eq!(r.verdict, verdict, "{policy:?}: {}", r.reason);
        assert_eq!(r.sample_size, Some(0));
        // No series at all: said, with the query, so a wrong mesh does not read as a quiet
        // service.
        assert!(
            r.reason.contains("matched no series") && r.reason.contains("ghost"),
            "{}",
            r.reason
        );
    }
    // A canary whose series exist but saw no request in the window is a quiet one.
    let quiet = NoDataConfig {
        min_requests: 1_000_000_000,
        policy: NoDataPolicy::Wait,
    };
    let r = run_check(serin, &sr, &target, &quiet).await.unwrap();
    assert!(!r.reason.contains("matched no series"), "{}", r.reason);
    // Too few requests for a high minRequests.
    let nd = NoDataConfig {
        min_requests: 1_000_000,
        policy: NoDataPolicy::Wait,
    };
    let r = run_check(serin, &sr, &target, &nd).await.unwrap();
    assert_eq!(r.verdict, Verdict::Inconclusive, "{}", r.reason);

    // Per-arm traffic for the judge, from every flavour.
    for (mesh, provider) in &providers {
        let window = Duration::from_secs(60);
        let canary = provider
            .arm_traffic(&target, ArmRole::Canary, window)
            .await
            .unwrap();
        let primary = provider
            .arm_traffic(&target, ArmRole::Primary, window)
            .await
            .unwrap();
        assert!(canary.requests > 0.0 && primary.requests > 0.0, "{mesh:?}");
        let cr = canary.failures / canary.requests;
        let pr = primary.failures / primary.requests;
        // increase() extrapolates each series on its own, so shares are close, not exact.
        assert!(
            (cr - 0.02).abs() < 1e-3,
            "{mesh:?}: canary error share {cr}"
        );
        assert!(
            (pr - 0.01).abs() < 1e-3,
            "{mesh:?}: primary error share {pr}"
        );
        let p99 = canary.p99_ms().expect("latency buckets");
        assert!((p99 - 20.0).abs() < 0.5, "{mesh:?}: p99 {p99}");
    }

    // One judge look through Prometheus (window from `since` to now).
    let mut state = JudgeState::default();
    let since = std::time::SystemTime::now() - Duration::from_secs(30);
    let r = run_judge(serin, &target, since, &JudgeConfig::default(), &mut state)
        .await
        .unwrap();
    assert!(
        r.error.canary_requests > 0 && r.error.primary_requests > 0,
        "{r:?}"
    );
    assert!(r.error.canary_rate_pct > r.error.primary_rate_pct, "{r:?}");

    // A PromQL error comes back as a bad response naming the query.
    let err = serin.query("sum(").await.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");

    ticker.1.abort();
    drop(prometheus);
}

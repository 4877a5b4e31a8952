//! The proxy-scrape provider against a real HTTP exporter serving Linkerd-named metrics.

use crate::common;

use std::time::Duration;

use serin_analysis::*;

fn no_reuse(url: String) -> ProxyScrapeConfig {
    let mut c = ProxyScrapeConfig::new(vec![url]);
    c.direction = Some("outbound".into());
    c.reuse_within = Duration::ZERO;
    c
}

#[tokio::test]
async fn scrape_deltas_feed_checks_and_the_judge() {
    let exporter = common::start_exporter().await;
    exporter.tick(1000); // history before the analysis starts must not count
    let provider = ProxyScrapeProvider::connect(no_reuse(exporter.url()))
        .await
        .unwrap();
    let analysis_start = std::time::SystemTime::now();
    let target = Target::flagger("podinfo", "test", "podinfo", None);
    let window = Duration::from_secs(3600);

    // Nothing happened since the baseline: the no-data policy decides (default: wait).
    let check = MetricCheck::from_spec(
        "spec.analysis.metrics[0]",
        &MetricSpec {
            name: "request-success-rate".into(),
            threshold_range: Some(ThresholdRange {
                min: Some(99.0),
                max: None,
            }),
            ..MetricSpec::default()
        },
    )
    .unwrap();
    let r = run_check(&provider, &check, &target, &NoDataConfig::default())
        .await
        .unwrap();
    assert_eq!(r.verdict, Verdict::Inconclusive, "{}", r.reason);
    assert_eq!(r.sample_size, Some(0));

    exporter.tick(10);
    let mut check_1h = check.clone();
    check_1h.interval = window;
    let r = run_check(&provider, &check_1h, &target, &NoDataConfig::default())
        .await
        .unwrap();
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    assert_eq!(r.value, Some(98.0));
    assert_eq!(r.sample_size, Some(1000));

    let duration = MetricCheck::from_spec(
        "spec.analysis.metrics[1]",
        &MetricSpec {
            name: "request-duration".into(),
            interval: Some("1h".into()),
            threshold_range: Some(ThresholdRange {
                min: None,
                max: Some(500.0),
            }),
            ..MetricSpec::default()
        },
    )
    .unwrap();
    let r = run_check(&provider, &duration, &target, &NoDataConfig::default())
        .await
        .unwrap();
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
    assert_eq!(r.value, Some(20.0));

    // The judge on cumulative readings: 2% vs 1% errors, identical latency.
    let mut state = JudgeState::default();
    let config = JudgeConfig::default();
    let canary = provider
        .arm_traffic_since(&target, ArmRole::Canary, analysis_start)
        .await
        .unwrap();
    let primary = provider
        .arm_traffic_since(&target, ArmRole::Primary, analysis_start)
        .await
        .unwrap();
    assert_eq!((canary.requests, canary.failures), (1000.0, 20.0));
    assert_eq!((primary.requests, primary.failures), (1000.0, 10.0));
    let first = state.observe_cumulative(&config, &canary, &primary);
    assert_eq!(first.error.canary_requests, 1000);
    let mut verdict = first.verdict;
    for _ in 0..40 {
        if verdict == Verdict::Fail {
            break;
        }
        exporter.tick(10);
        verdict = run_judge(&provider, &target, analysis_start, &config, &mut state)
            .await
            .unwrap()
            .verdict;
    }
    assert_eq!(verdict, Verdict::Fail, "a steady 2x error rate is caught");

    // Template queries need a query language.
    let err = provider.query("up").await.unwrap_err();
    assert_eq!(err.kind(), "unsupported");
}

#[tokio::test]
async fn unreachable_or_broken_endpoints_are_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = ProxyScrapeProvider::connect(no_reuse(format!("http://127.0.0.1:{port}/metrics")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "unavailable", "{err}");
    let exporter = common::start_exporter().await;
    let err =
        ProxyScrapeProvider::connect(no_reuse(format!("http://127.0.0.1:{}/nope", exporter.port)))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

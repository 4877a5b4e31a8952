//! Flagger's defaults, applied once by `Normalized::from_canary`.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serin_api::testing::canary;
use serin_api::*;

fn step(step_weight: i32) -> CanaryAnalysis {
    CanaryAnalysis {
        step_weight: Some(step_weight),
        ..Default::default()
    }
}

#[test]
fn flagger_defaults_fill_every_unset_field() {
    let mut a = step(10);
    a.metrics.push(CanaryMetric {
        name: "request-success-rate".into(),
        threshold_range: Some(ThresholdRange {
            min: Some(99.0),
            max: None,
        }),
        ..Default::default()
    });
    a.webhooks.push(CanaryWebhook {
        name: "load".into(),
        url: "http://loadtester/".into(),
        ..Default::default()
    });
    let n = Normalized::from_canary(&canary(a)).unwrap();
    assert_eq!(n.interval, Duration::from_secs(60));
    assert_eq!(n.threshold, 1);
    assert_eq!(n.progress_deadline, Duration::from_secs(600));
    assert_eq!(n.primary_ready_threshold, 100);
    assert_eq!(n.canary_ready_threshold, 100);
    assert_eq!(n.metrics[0].interval, Duration::from_secs(60));
    assert_eq!(n.metrics[0].source, MetricSource::Builtin);
    assert_eq!(n.webhooks[0].timeout, Duration::from_secs(10));
    assert_eq!(n.webhooks[0].hook_type, HookType::Rollout);
    // Serin's additions default to Flagger's behaviour: one attempt, unsigned.
    assert_eq!(n.webhooks[0].retries, 0);
    assert_eq!(n.webhooks[0].signing_secret, None);
    assert_eq!(n.service_name, "podinfo");
    assert_eq!(n.primary_name, "podinfo-primary");
    assert_eq!(n.canary_name, "podinfo-canary");
    assert_eq!(n.port_name, "http");
    assert_eq!(n.target_port, IntOrString::Int(9898));
    assert_eq!(n.judge, None);
    assert_eq!(
        n.no_data,
        NoDataSettings {
            min_requests: 1,
            policy: None
        }
    );
    assert_eq!(
        n.strategy,
        Strategy::Canary {
            weights: (1..=10).map(|i| i * 10).collect(),
            step_weight: Some(10),
            max_weight: 100
        }
    );
}

#[test]
fn threshold_zero_means_one() {
    let mut a = step(10);
    a.threshold = Some(0);
    assert_eq!(Normalized::from_canary(&canary(a)).unwrap().threshold, 1);
    let mut a = step(10);
    a.threshold = Some(7);
    assert_eq!(Normalized::from_canary(&canary(a)).unwrap().threshold, 7);
}

#[test]
fn step_weights_stop_at_max_weight_even_when_not_a_multiple() {
    let mut a = step(20);
    a.max_weight = Some(50);
    let n = Normalized::from_canary(&canary(a)).unwrap();
    assert_eq!(
        n.strategy,
        Strategy::Canary {
            weights: vec![20, 40, 50],
            step_weight: Some(20),
            max_weight: 50
        }
    );
}

#[test]
fn explicit_step_weights_set_the_max_weight() {
    let a = CanaryAnalysis {
        step_weights: Some(vec![1, 2, 10, 80]),
        ..Default::default()
    };
    let n = Normalized::from_canary(&canary(a)).unwrap();
    assert_eq!(
        n.strategy,
        Strategy::Canary {
            weights: vec![1, 2, 10, 80],
            step_weight: None,
            max_weight: 80
        }
    );
}

#[test]
fn iterations_with_match_is_ab_testing_and_without_is_blue_green() {
    let mut a = CanaryAnalysis {
        iterations: Some(10),
        ..Default::default()
    };
    assert_eq!(
        Normalized::from_canary(&canary(a.clone()))
            .unwrap()
            .strategy,
        Strategy::BlueGreen { iterations: 10 }
    );
    a.r#match.push(HttpMatchRequest {
        headers: [(
            "x-canary".to_string(),
            StringMatch {
                exact: Some("insider".into()),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    });
    let n = Normalized::from_canary(&canary(a.clone())).unwrap();
    assert!(
        matches!(n.strategy, Strategy::AbTesting { iterations: 10, ref matches } if matches == &a.r#match)
    );
}

#[test]
fn mirroring_defaults_to_all_traffic() {
    let a = CanaryAnalysis {
        iterations: Some(5),
        mirror: true,
        ..Default::default()
    };
    assert_eq!(
        Normalized::from_canary(&canary(a)).unwrap().mirror_weight,
        Some(100)
    );
    let a = CanaryAnalysis {
        iterations: Some(5),
        mirror: true,
        mirror_weight: Some(30),
        ..Default::default()
    };
    assert_eq!(
        Normalized::from_canary(&canary(a)).unwrap().mirror_weight,
        Some(30)
    );
    assert_eq!(
        Normalized::from_canary(&canary(step(10)))
            .unwrap()
            .mirror_weight,
        None
    );
}

#[test]
fn deprecated_threshold_is_the_max_when_no_range_is_given() {
    let mut a = step(10);
    a.metrics.push(CanaryMetric {
        name: "errors".into(),
        query: Some("sum(rate(errors[1m]))".into()),
        threshold: Some(5.0),
        interval: Some("30s".into()),
        ..Default::default()
    });
    let n = Normalized::from_canary(&canary(a)).unwrap();
    let m = &n.metrics[0];
    assert_eq!((m.min, m.max), (None, Some(5.0)));
    assert_eq!(m.interval, Duration::from_secs(30));
    assert_eq!(
        m.source,
        MetricSource::Query("sum(rate(errors[1m]))".into())
    );
}

#[test]
fn deprecated_threshold_is_the_min_of_the_success_rate() {
    let mut a = step(10);
    a.metrics.push(CanaryMetric {
        name: "request-success-rate".into(),
        threshold: Some(99.0),
        ..Default::default()
    });
    a.metrics.push(CanaryMetric {
        name: "request-duration".into(),
        threshold: Some(500.0),
        ..Default::default()
    });
    let n = Normalized::from_canary(&canary(a)).unwrap();
    assert_eq!((n.metrics[0].min, n.metrics[0].max), (Some(99.0), None));
    assert_eq!((n.metrics[1].min, n.metrics[1].max), (None, Some(500.0)));
}

#[test]
fn judge_defaults_and_disabling() {
    let mut a = step(10);
    a.judge = Some(Judge::default());
    let n = Normalized::from_canary(&canary(a.clone())).unwrap();
    assert_eq!(
        n.judge,
        Some(JudgeSettings {
            alpha: 0.01,
            min_requests: 100,
            error_rate_tolerance: 0.0,
            latency_tolerance: 10.0,
            error_rate_margin: 90.0,
            error_rate_margin_absolute: 0.5,
            latency_margin: 25.0,
            step_alpha: 0.2,
            on_inconclusive: OnInconclusive::Rollback,
            step_budget: Duration::from_secs(15 * 60),
            run_budget: Duration::from_secs(60 * 60),
        })
    );
    a.judge = Some(Judge {
        error_rate_margin: Some(50.0),
        latency_margin: Some(40.0),
        step_alpha: Some(0.1),
        on_inconclusive: Some(OnInconclusive::Wait),
        step_budget: Some("5m".into()),
        run_budget: Some("2h".into()),
        ..Default::default()
    });
    let j = Normalized::from_canary(&canary(a.clone()))
        .unwrap()
        .judge
        .unwrap();
    assert_eq!(
        (
            j.error_rate_margin,
            j.latency_margin,
            j.step_alpha,
            j.on_inconclusive
        ),
        (50.0, 40.0, 0.1, OnInconclusive::Wait)
    );
    assert_eq!(
        (j.step_budget, j.run_budget),
        (Duration::from_secs(300), Duration::from_secs(7200))
    );
    a.judge = Some(Judge {
        enabled: Some(false),
        alpha: Some(0.05),
        ..Default::default()
    });
    assert_eq!(Normalized::from_canary(&canary(a)).unwrap().judge, None);
}

#[test]
fn explicit_values_win_over_defaults() {
    let mut c = canary(CanaryAnalysis {
        interval: Some("1m30s".into()),
        step_weight: Some(5),
        max_weight: Some(30),
        step_weight_promotion: Some(25),
        primary_ready_threshold: Some(80),
        session_affinity: Some(SessionAffinity {
            cookie_name: "c".into(),
            ..Default::default()
        }),
        no_data: Some(NoData {
            min_requests: Some(20),
            policy: Some(NoDataPolicy::Fail),
        }),
        ..Default::default()
    });
    c.spec.progress_deadline_seconds = Some(120);
    c.spec.service.name = Some("web".into());
    c.spec.service.target_port = Some(IntOrString::String("http".into()));
    let n = Normalized::from_canary(&c).unwrap();
    assert_eq!(n.interval, Duration::from_secs(90));
    assert_eq!(n.progress_deadline, Duration::from_secs(120));
    assert_eq!(n.step_weight_promotion, Some(25));
    assert_eq!(n.primary_ready_threshold, 80);
    assert_eq!(
        n.session_affinity,
        Some(("c".into(), Duration::from_secs(86_400)))
    );
    assert_eq!(
        n.no_data,
        NoDataSettings {
            min_requests: 20,
            policy: Some(NoDataPolicy::Fail)
        }
    );
    assert_eq!(
        (n.service_name.as_str(), n.primary_name.as_str()),
        ("web", "web-primary")
    );
    assert_eq!(n.target_port, IntOrString::String("http".into()));
}

#[test]
fn invalid_canaries_are_not_normalized() {
    let errors = Normalized::from_canary(&canary(CanaryAnalysis::default())).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "spec.analysis");
}

#[test]
fn typed_canaries_are_validated_without_a_manifest() {
    let mut c = canary(step(10));
    c.spec.analysis.interval = Some("5x".into());
    c.spec.analysis.webhooks.push(CanaryWebhook {
        name: "gate".into(),
        type_: Some(HookType::ConfirmPromotion),
        url: "gate.example".into(),
        ..Default::default()
    });
    let errors: Vec<String> = validate(&c)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("spec.analysis.interval: "));
    assert!(errors[1].starts_with("spec.analysis.webhooks[0].url: "));
}

#[test]
fn an_interval_under_ten_seconds_is_rounded_up_as_flagger_does() {
    let mut c = canary(step(10));
    c.spec.analysis.interval = Some("5s".into());
    let n = Normalized::from_canary(&c).unwrap();
    assert_eq!(n.interval, std::time::Duration::from_secs(10));
    assert_eq!(serin_api::canary_warnings(&c).len(), 1);
}

#[test]
fn webhook_retries_and_signing_secret_carry_over() {
    let mut a = step(10);
    a.webhooks.push(CanaryWebhook {
        name: "gate".into(),
        url: "http://gate/".into(),
        retries: Some(3),
        signing_secret_ref: Some(SecretKeyReference {
            name: "hook-keys".into(),
            key: "hmac".into(),
        }),
        ..Default::default()
    });
    let n = Normalized::from_canary(&canary(a)).unwrap();
    assert_eq!(n.webhooks[0].retries, 3);
    assert_eq!(
        n.webhooks[0].signing_secret,
        Some(SecretKeyReference {
            name: "hook-keys".into(),
            key: "hmac".into()
        })
    );
}

#[test]
fn session_affinity_attributes_are_read_at_their_flat_places_and_reach_the_plan_as_written() {
    let block = serde_json::json!({"cookieName": "canary", "maxAge": 600, "domain": "shop.example.com",
        "path": "/", "sameSite": "Lax", "secure": true, "httpOnly": true});
    let sa: SessionAffinity = serde_json::from_value(block.clone()).unwrap();
    assert_eq!(sa.attributes.same_site, Some(SameSite::Lax));
    assert_eq!(
        serde_json::to_value(&sa).unwrap(),
        block,
        "written back flat"
    );
    let mut a = step(10);
    a.session_affinity = Some(sa);
    let n = Normalized::from_canary(&canary(a)).unwrap();
    assert_eq!(
        n.session_cookie.render(),
        "; Domain=shop.example.com; Path=/; Secure; HttpOnly; SameSite=Lax"
    );
}

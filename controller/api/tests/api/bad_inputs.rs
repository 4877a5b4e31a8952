//! Every rule, one bad input at a time: the error names the field and what is accepted.

use serde_json::{Value, json};
use serin_api::{Outcome, check_manifests};

fn base() -> Value {
    json!({
        "apiVersion": "serin.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "provider": "serin",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "1m",
                "threshold": 5,
                "maxWeight": 50,
                "stepWeight": 10,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                    {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"}
                ],
                "webhooks": [
                    {"name": "load-test", "url": "http://loadtester.test/", "timeout": "5s",
                     "metadata": {"cmd": "hey -z 1m http://podinfo-canary.test:9898/"}}
                ]
            }
        }
    })
}

/// Sets (or with `Value::Null`, removes) the field at a JSON pointer, creating parents.
fn with(mut doc: Value, changes: &[(&str, Value)]) -> Value {
    for (pointer, value) in changes {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let mut target = &mut doc;
        for part in parent.split('/').skip(1) {
            target = match target {
                Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
                Value::Object(map) => map.entry(part).or_insert_with(|| json!({})),
                _ => panic!("cannot descend into {pointer}"),
            };
        }
        match (target, value) {
            (Value::Object(map), Value::Null) => {
                map.remove(key);
            }
            (Value::Object(map), v) => {
                map.insert(key.to_string(), v.clone());
            }
            (Value::Array(items), v) => {
                let i = key.parse::<usize>().unwrap();
                if i == items.len() {
                    items.push(v.clone());
                } else {
                    items[i] = v.clone();
                }
            }
            _ => panic!("cannot set {pointer}"),
        }
    }
    doc
}

fn errors_of(doc: &Value) -> Vec<String> {
    let yaml = serde_norway::to_string(doc).unwrap();
    let docs = check_manifests(&yaml);
    assert_eq!(docs.len(), 1);
    match &docs[0].outcome {
        Outcome::Invalid(errors) => errors.iter().map(ToString::to_string).collect(),
        other => vec![format!("<not invalid: {other:?}>")],
    }
}

/// The warnings of a document that must be valid.
#[track_caller]
fn warnings_of(changes: &[(&str, Value)]) -> Vec<String> {
    let yaml = serde_norway::to_string(&with(base(), changes)).unwrap();
    let docs = check_manifests(&yaml);
    assert!(matches!(docs[0].outcome, Outcome::Valid(_)), "{docs:?}");
    docs[0].warnings.iter().map(ToString::to_string).collect()
}

#[track_caller]
fn rejects(changes: &[(&str, Value)], path: &str, fragment: &str) {
    let errors = errors_of(&with(base(), changes));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(fragment)),
        "expected an error at {path} containing {fragment:?}, got:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_base_manifest_is_valid() {
    let yaml = serde_norway::to_string(&base()).unwrap();
    let docs = check_manifests(&yaml);
    assert!(matches!(docs[0].outcome, Outcome::Valid(_)), "{docs:?}");
}

#[test]
fn interval_without_a_unit() {
    rejects(
        &[("/spec/analysis/interval", json!(60))],
        "spec.analysis.interval",
        "60 has no unit; accepted: a duration like 10s, 1m",
    );
    rejects(
        &[("/spec/analysis/interval", json!("60"))],
        "spec.analysis.interval",
        "\"60\" has no unit",
    );
    rejects(
        &[("/spec/analysis/interval", json!("1m30"))],
        "spec.analysis.interval",
        "has no unit",
    );
    rejects(
        &[("/spec/analysis/interval", json!("5d"))],
        "spec.analysis.interval",
        "\"d\" in \"5d\" is not a unit",
    );
    rejects(
        &[("/spec/analysis/interval", json!("fast"))],
        "spec.analysis.interval",
        "not a duration",
    );
}

#[test]
fn interval_under_ten_seconds_is_rounded_up_with_a_warning() {
    assert_eq!(
        warnings_of(&[("/spec/analysis/interval", json!("5s"))]),
        [
            "spec.analysis.interval: \"5s\" is shorter than 10s and is rounded up to 10s, as Flagger does"
        ]
    );
    assert_eq!(
        warnings_of(&[("/spec/analysis/interval", json!("9500ms"))]).len(),
        1
    );
    assert!(warnings_of(&[("/spec/analysis/interval", json!("1h"))]).is_empty());
    rejects(
        &[("/spec/analysis/interval", json!("0s"))],
        "spec.analysis.interval",
        "is zero",
    );
}

#[test]
fn no_strategy() {
    rejects(
        &[("/spec/analysis/stepWeight", Value::Null)],
        "spec.analysis",
        "no strategy: set stepWeight or stepWeights (progressive canary) or iterations",
    );
}

#[test]
fn more_than_one_strategy() {
    rejects(
        &[("/spec/analysis/iterations", json!(10))],
        "spec.analysis",
        "stepWeight and iterations are mutually exclusive",
    );
    rejects(
        &[("/spec/analysis/stepWeights", json!([10, 20]))],
        "spec.analysis",
        "stepWeight and stepWeights are mutually exclusive",
    );
    rejects(
        &[
            ("/spec/analysis/stepWeights", json!([10, 20])),
            ("/spec/analysis/iterations", json!(3)),
        ],
        "spec.analysis",
        "stepWeight and stepWeights and iterations are mutually exclusive",
    );
}

#[test]
fn step_weights_not_increasing_or_over_100() {
    let steps = |w: Value| {
        vec![
            ("/spec/analysis/stepWeight", Value::Null),
            ("/spec/analysis/maxWeight", Value::Null),
            ("/spec/analysis/stepWeights", w),
        ]
    };
    rejects(
        &steps(json!([10, 20, 20])),
        "spec.analysis.stepWeights[2]",
        "20 does not increase on the previous step 20",
    );
    rejects(
        &steps(json!([30, 10])),
        "spec.analysis.stepWeights[1]",
        "strictly increasing",
    );
    rejects(
        &steps(json!([10, 50, 120])),
        "spec.analysis.stepWeights[2]",
        "120 is out of range; accepted: 1..=100",
    );
    rejects(
        &steps(json!([0, 50])),
        "spec.analysis.stepWeights[0]",
        "accepted: 1..=100",
    );
    rejects(&steps(json!([])), "spec.analysis.stepWeights", "empty");
    rejects(
        &steps(json!(["10"])),
        "spec.analysis.stepWeights[0]",
        "expected a whole number, found the string \"10\"",
    );
    // Flagger ignores maxWeight when stepWeights is set (test/linkerd/test-steps.sh).
    let mut over_max = steps(json!([10, 60]));
    over_max.push(("/spec/analysis/maxWeight", json!(50)));
    over_max.push(("/spec/analysis/stepWeight", Value::Null));
    assert_eq!(
        warnings_of(&over_max),
        [
            "spec.analysis.maxWeight: 50 is ignored because stepWeights is set (the last step is the largest weight), as Flagger does"
        ]
    );
}

#[test]
fn max_weight_out_of_range() {
    rejects(
        &[("/spec/analysis/maxWeight", json!(0))],
        "spec.analysis.maxWeight",
        "0 is out of range; accepted: 1..=100",
    );
    rejects(
        &[("/spec/analysis/maxWeight", json!(101))],
        "spec.analysis.maxWeight",
        "accepted: 1..=100",
    );
    rejects(
        &[("/spec/analysis/maxWeight", json!(-5))],
        "spec.analysis.maxWeight",
        "accepted: 1..=100",
    );
}

#[test]
fn step_weight_out_of_range_or_over_max_weight() {
    rejects(
        &[("/spec/analysis/stepWeight", json!(0))],
        "spec.analysis.stepWeight",
        "accepted: 1..=100",
    );
    rejects(
        &[("/spec/analysis/stepWeight", json!(60))],
        "spec.analysis.stepWeight",
        "greater than maxWeight 50",
    );
    rejects(
        &[("/spec/analysis/stepWeightPromotion", json!(150))],
        "spec.analysis.stepWeightPromotion",
        "accepted: 1..=100",
    );
}

#[test]
fn iterations_that_cannot_progress() {
    rejects(
        &[
            ("/spec/analysis/stepWeight", Value::Null),
            ("/spec/analysis/iterations", json!(0)),
        ],
        "spec.analysis.iterations",
        "accepted: 1 or more",
    );
}

#[test]
fn threshold_range_min_above_max() {
    rejects(
        &[(
            "/spec/analysis/metrics/0/thresholdRange",
            json!({"min": 99, "max": 1}),
        )],
        "spec.analysis.metrics[0].thresholdRange",
        "min 99 is greater than max 1",
    );
}

#[test]
fn metric_without_any_bound() {
    rejects(
        &[("/spec/analysis/metrics/0/thresholdRange", Value::Null)],
        "spec.analysis.metrics[0]",
        "no bound",
    );
}

#[test]
fn custom_metric_without_template_or_query() {
    rejects(
        &[("/spec/analysis/metrics/1/name", json!("error-rate"))],
        "spec.analysis.metrics[1]",
        "custom metric \"error-rate\" needs templateRef (a MetricTemplate) or query",
    );
    rejects(
        &[
            (
                "/spec/analysis/metrics/1/templateRef",
                json!({"name": "latency"}),
            ),
            ("/spec/analysis/metrics/1/query", json!("up")),
        ],
        "spec.analysis.metrics[1]",
        "mutually exclusive",
    );
    rejects(
        &[("/spec/analysis/metrics/1/templateRef", json!({"name": ""}))],
        "spec.analysis.metrics[1].templateRef.name",
        "required",
    );
    rejects(
        &[("/spec/analysis/metrics/1/templateRef", json!({}))],
        "spec.analysis.metrics[1].templateRef.name",
        "required field is missing",
    );
    // templateVariables without a templateRef: Flagger accepts (and ignores) them, so does
    // Serin, with a warning naming the field.
    let warnings = warnings_of(&[(
        "/spec/analysis/metrics/1/templateVariables",
        json!({"a": "b"}),
    )]);
    assert!(
        warnings.iter().any(
            |w| w.starts_with("spec.analysis.metrics[1].templateVariables: ")
                && w.contains("ignored")
        ),
        "{warnings:?}"
    );
}

#[test]
fn metric_interval_is_a_duration() {
    rejects(
        &[("/spec/analysis/metrics/0/interval", json!("1 minute"))],
        "spec.analysis.metrics[0].interval",
        "accepted: a duration like",
    );
    rejects(
        &[("/spec/analysis/metrics/0/interval", json!("500ms"))],
        "spec.analysis.metrics[0].interval",
        "shorter than 1s",
    );
}

#[test]
fn unknown_webhook_type() {
    rejects(
        &[("/spec/analysis/webhooks/0/type", json!("pre-promotion"))],
        "spec.analysis.webhooks[0].type",
        "unknown value \"pre-promotion\"; accepted: \"\" (the default), confirm-rollout, pre-rollout, rollout, confirm-traffic-increase, confirm-promotion, post-rollout, rollback, event",
    );
}

#[test]
fn webhook_url_not_http() {
    rejects(
        &[("/spec/analysis/webhooks/0/url", json!("ftp://loadtester/"))],
        "spec.analysis.webhooks[0].url",
        "is not an http(s) URL",
    );
    rejects(
        &[("/spec/analysis/webhooks/0/url", json!("loadtester.test"))],
        "spec.analysis.webhooks[0].url",
        "accepted: http://host[:port]/path",
    );
    rejects(
        &[("/spec/analysis/webhooks/0/url", json!("http:///path"))],
        "spec.analysis.webhooks[0].url",
        "no valid host",
    );
    rejects(
        &[("/spec/analysis/webhooks/0/url", json!("http://host:99999/"))],
        "spec.analysis.webhooks[0].url",
        "no valid host or port",
    );
    rejects(
        &[("/spec/analysis/webhooks/0/url", Value::Null)],
        "spec.analysis.webhooks[0].url",
        "required field is missing",
    );
}

#[test]
fn webhook_timeout_is_a_positive_duration() {
    rejects(
        &[("/spec/analysis/webhooks/0/timeout", json!("10"))],
        "spec.analysis.webhooks[0].timeout",
        "has no unit",
    );
    rejects(
        &[("/spec/analysis/webhooks/0/timeout", json!("0s"))],
        "spec.analysis.webhooks[0].timeout",
        "is zero",
    );
}

#[test]
fn webhook_retries_and_signing_secret() {
    for retries in [-1, 11] {
        rejects(
            &[("/spec/analysis/webhooks/0/retries", json!(retries))],
            "spec.analysis.webhooks[0].retries",
            "out of range; accepted: 0..=10 extra attempts (default 0)",
        );
    }
    rejects(
        &[("/spec/analysis/webhooks/0/retries", json!("twice"))],
        "spec.analysis.webhooks[0].retries",
        "expected",
    );
    rejects(
        &[(
            "/spec/analysis/webhooks/0/signingSecretRef",
            json!({"name": "", "key": "hmac"}),
        )],
        "spec.analysis.webhooks[0].signingSecretRef.name",
        "required: the name of a Secret",
    );
    rejects(
        &[(
            "/spec/analysis/webhooks/0/signingSecretRef",
            json!({"name": "Hook_Keys", "key": "hmac"}),
        )],
        "spec.analysis.webhooks[0].signingSecretRef.name",
        "accepted:",
    );
    rejects(
        &[(
            "/spec/analysis/webhooks/0/signingSecretRef",
            json!({"name": "hook-keys", "key": "hmac key"}),
        )],
        "spec.analysis.webhooks[0].signingSecretRef.key",
        "is not a Secret key; accepted: letters, digits, '-', '_' and '.'",
    );
    rejects(
        &[(
            "/spec/analysis/webhooks/0/signingSecretRef",
            json!({"name": "hook-keys"}),
        )],
        "spec.analysis.webhooks[0].signingSecretRef.key",
        "required field is missing",
    );
    rejects(
        &[(
            "/spec/analysis/webhooks/0/signingSecretRef",
            json!({"name": "hook-keys", "key": "hmac", "optional": true}),
        )],
        "spec.analysis.webhooks[0].signingSecretRef.optional",
        "unknown field",
    );
}

#[test]
fn duplicate_metric_webhook_and_alert_names() {
    rejects(
        &[(
            "/spec/analysis/metrics/1/name",
            json!("request-success-rate"),
        )],
        "spec.analysis.metrics[1].name",
        "duplicate metric name \"request-success-rate\" (also metrics[0])",
    );
    rejects(
        &[(
            "/spec/analysis/webhooks/1",
            json!({"name": "load-test", "url": "http://other/"}),
        )],
        "spec.analysis.webhooks[1].name",
        "duplicate webhook name \"load-test\" (also webhooks[0])",
    );
    let alert = json!({"name": "slack", "providerRef": {"name": "on-call"}});
    rejects(
        &[("/spec/analysis/alerts", json!([alert.clone(), alert]))],
        "spec.analysis.alerts[1].name",
        "duplicate alert name",
    );
}

#[test]
fn negative_threshold() {
    rejects(
        &[("/spec/analysis/threshold", json!(-1))],
        "spec.analysis.threshold",
        "-1 is negative",
    );
}

#[test]
fn unknown_target_kind_and_mismatched_api_version() {
    rejects(
        &[("/spec/targetRef/kind", json!("StatefulSet"))],
        "spec.targetRef.kind",
        "unknown value \"StatefulSet\"; accepted: Deployment, DaemonSet, Process, Service",
    );
    // Flagger picks the controller by kind only: a mismatched apiVersion is a warning.
    assert_eq!(
        warnings_of(&[("/spec/targetRef/kind", json!("Process"))]),
        [
            "spec.targetRef.apiVersion: \"apps/v1\" does not serve kind Process; the target is read as serin.dev/v1beta1 Process (the controller is chosen by kind, as in Flagger)"
        ]
    );
    rejects(
        &[("/spec/targetRef/apiVersion", Value::Null)],
        "spec.targetRef.apiVersion",
        "required; accepted for kind Deployment: apps/v1",
    );
    rejects(
        &[("/spec/targetRef/name", json!(""))],
        "spec.targetRef.name",
        "required",
    );
    rejects(
        &[("/spec/targetRef/name", json!("Pod_Info"))],
        "spec.targetRef.name",
        "not a valid object name",
    );
    rejects(
        &[("/spec/targetRef", Value::Null)],
        "spec.targetRef",
        "required field is missing",
    );
}

#[test]
fn judge_alpha_out_of_range() {
    for alpha in [0.0, -0.1, 0.6, 1.0] {
        rejects(
            &[("/spec/analysis/judge", json!({"alpha": alpha}))],
            "spec.analysis.judge.alpha",
            "accepted: a probability in (0, 0.5]",
        );
    }
    rejects(
        &[("/spec/analysis/judge", json!({"minRequests": 0}))],
        "spec.analysis.judge.minRequests",
        "1 or more",
    );
    rejects(
        &[("/spec/analysis/judge", json!({"errorRateTolerance": 150}))],
        "spec.analysis.judge.errorRateTolerance",
        "0..=100",
    );
    rejects(
        &[("/spec/analysis/judge", json!({"latencyTolerance": -1}))],
        "spec.analysis.judge.latencyTolerance",
        "0 or more",
    );
    rejects(
        &[("/spec/analysis/judge", json!({"onInconclusive": "halt"}))],
        "spec.analysis.judge.onInconclusive",
        "accepted: rollback, promote, wait, pause",
    );
    rejects(
        &[("/spec/analysis/judge", json!({"errorRateMargin": 0}))],
        "spec.analysis.judge.errorRateMargin",
        "(0, 1000]",
    );
    rejects(
        &[(
            "/spec/analysis/judge",
            json!({"errorRateMarginAbsolute": 101}),
        )],
        "spec.analysis.judge.errorRateMarginAbsolute",
        "(0, 100]",
    );
    rejects(
        &[("/spec/analysis/judge", json!({"stepAlpha": 0.7}))],
        "spec.analysis.judge.stepAlpha",
        "[alpha (0.01), 0.5]",
    );
    rejects(
        &[(
            "/spec/analysis/judge",
            json!({"alpha": 0.05, "stepAlpha": 0.02}),
        )],
        "spec.analysis.judge.stepAlpha",
        "[alpha (0.05), 0.5]",
    );
    rejects(
        &[("/spec/analysis/judge", json!({"latencyMargin": -3}))],
        "spec.analysis.judge.latencyMargin",
        "(0, 1000]",
    );
    rejects(
        &[(
            "/spec/analysis/judge",
            json!({"latencyMargin": 8, "latencyTolerance": 10}),
        )],
        "spec.analysis.judge.latencyMargin",
        "not above latencyTolerance 10",
    );
    rejects(
        &[("/spec/analysis/judge", json!({"stepBudget": "soon"}))],
        "spec.analysis.judge.stepBudget",
        "accepted:",
    );
    rejects(
        &[("/spec/analysis/judge", json!({"runBudget": "0s"}))],
        "spec.analysis.judge.runBudget",
        "is zero",
    );
    rejects(
        &[("/spec/analysis/judge", json!({"enabled": "yes"}))],
        "spec.analysis.judge.enabled",
        "expected true or false",
    );
}

#[test]
fn bad_no_data_policy() {
    rejects(
        &[("/spec/analysis/noData", json!({"policy": "ignore"}))],
        "spec.analysis.noData.policy",
        "unknown value \"ignore\"; accepted: wait, fail, pass",
    );
    rejects(
        &[("/spec/analysis/noData", json!({"minRequests": -1}))],
        "spec.analysis.noData.minRequests",
        "negative",
    );
}

#[test]
fn serin_additions_are_accepted() {
    let doc = with(
        base(),
        &[
            (
                "/spec/analysis/judge",
                json!({"enabled": true, "alpha": 0.01, "minRequests": 100, "errorRateTolerance": 0, "latencyTolerance": 10, "onInconclusive": "wait"}),
            ),
            (
                "/spec/analysis/noData",
                json!({"minRequests": 1, "policy": "wait"}),
            ),
            (
                "/spec/targetRef",
                json!({"apiVersion": "serin.dev/v1beta1", "kind": "Process", "name": "podinfo"}),
            ),
            ("/spec/analysis/webhooks/0/retries", json!(3)),
            (
                "/spec/analysis/webhooks/0/signingSecretRef",
                json!({"name": "hook-keys", "key": "hmac"}),
            ),
        ],
    );
    let docs = check_manifests(&serde_norway::to_string(&doc).unwrap());
    assert!(
        matches!(docs[0].outcome, Outcome::Valid(_)),
        "{:?}",
        docs[0].report_lines("x")
    );
}

#[test]
fn unknown_fields_are_typos() {
    rejects(
        &[("/spec/analysis/stepWieght", json!(5))],
        "spec.analysis.stepWieght",
        "unknown field \"stepWieght\"; accepted here:",
    );
    rejects(
        &[("/spec/servce", json!({}))],
        "spec.servce",
        "unknown field",
    );
    rejects(&[("/specs", json!({}))], "specs", "unknown field \"specs\"");
    rejects(
        &[("/spec/analysis/metrics/0/tresholdRange", json!({"min": 1}))],
        "spec.analysis.metrics[0].tresholdRange",
        "unknown field",
    );
}

#[test]
fn wrong_types() {
    rejects(
        &[("/spec/analysis/threshold", json!("five"))],
        "spec.analysis.threshold",
        "expected a whole number, found the string \"five\"",
    );
    rejects(
        &[("/spec/analysis/threshold", json!(2.5))],
        "spec.analysis.threshold",
        "expected a whole number",
    );
    rejects(
        &[("/spec/skipAnalysis", json!("true"))],
        "spec.skipAnalysis",
        "expected true or false",
    );
    rejects(
        &[("/spec/analysis/metrics", json!({"name": "x"}))],
        "spec.analysis.metrics",
        "expected a list, found a mapping",
    );
    rejects(
        &[("/spec/analysis/webhooks/0/metadata/cmd", json!(5))],
        "spec.analysis.webhooks[0].metadata.cmd",
        "expected a string",
    );
    rejects(
        &[("/spec/service/targetPort", json!(true))],
        "spec.service.targetPort",
        "expected a port number or name",
    );
    rejects(
        &[("/spec/analysis/maxWeight", json!(4_294_967_296_i64))],
        "spec.analysis.maxWeight",
        "out of range",
    );
}

#[test]
fn service_ports_and_names() {
    rejects(
        &[("/spec/service/port", json!(0))],
        "spec.service.port",
        "accepted: 1..=65535",
    );
    rejects(
        &[("/spec/service/port", json!(70000))],
        "spec.service.port",
        "accepted: 1..=65535",
    );
    rejects(
        &[("/spec/service/port", Value::Null)],
        "spec.service.port",
        "required field is missing",
    );
    rejects(
        &[("/spec/service/targetPort", json!(0))],
        "spec.service.targetPort",
        "a number 1..=65535 or a container port name",
    );
    rejects(
        &[("/spec/service/targetPort", json!("HTTP_port"))],
        "spec.service.targetPort",
        "neither a port number nor a port name",
    );
    rejects(
        &[("/spec/service/portName", json!("a-very-long-port-name"))],
        "spec.service.portName",
        "at most 15",
    );
    rejects(
        &[("/spec/service/name", json!("Podinfo"))],
        "spec.service.name",
        "not a valid service name",
    );
    rejects(
        &[("/spec/service/timeout", json!("30"))],
        "spec.service.timeout",
        "has no unit",
    );
    rejects(
        &[("/spec/service/retries", json!({"attempts": -1}))],
        "spec.service.retries.attempts",
        "negative",
    );
    rejects(
        &[("/spec/service/retries", json!({"perTryTimeout": "x"}))],
        "spec.service.retries.perTryTimeout",
        "accepted: a duration",
    );
    rejects(
        &[("/spec/service/gatewayRefs", json!([{"name": ""}]))],
        "spec.service.gatewayRefs[0].name",
        "required",
    );
    rejects(
        &[("/spec/service/hosts", json!([""]))],
        "spec.service.hosts[0]",
        "empty host name",
    );
}

#[test]
fn match_conditions_set_exactly_one_kind_of_match() {
    let ab = |m: Value| {
        vec![
            ("/spec/analysis/stepWeight", Value::Null),
            ("/spec/analysis/iterations", json!(5)),
            ("/spec/analysis/match", m),
        ]
    };
    rejects(
        &ab(json!([{"headers": {"x-canary": {}}}])),
        "spec.analysis.match[0].headers.x-canary",
        "0 of exact, prefix, suffix, regex are set; accepted: exactly one",
    );
    rejects(
        &ab(json!([{"headers": {"x-canary": {"exact": "a", "regex": "b"}}}])),
        "spec.analysis.match[0].headers.x-canary",
        "2 of exact",
    );
    rejects(
        &ab(json!([{"queryParams": {"beta": {"contains": "x"}}}])),
        "spec.analysis.match[0].queryParams.beta.contains",
        "unknown field",
    );
    rejects(
        &[(
            "/spec/service/match",
            json!([{"uri": {"prefix": "/", "exact": "/"}}]),
        )],
        "spec.service.match[0].uri",
        "accepted: exactly one",
    );
}

#[test]
fn ready_thresholds_mirror_weight_and_session_affinity() {
    rejects(
        &[("/spec/analysis/primaryReadyThreshold", json!(101))],
        "spec.analysis.primaryReadyThreshold",
        "0..=100",
    );
    rejects(
        &[("/spec/analysis/canaryReadyThreshold", json!(-1))],
        "spec.analysis.canaryReadyThreshold",
        "0..=100",
    );
    rejects(
        &[("/spec/analysis/mirrorWeight", json!(200))],
        "spec.analysis.mirrorWeight",
        "0..=100",
    );
    rejects(
        &[("/spec/analysis/sessionAffinity", json!({"cookieName": ""}))],
        "spec.analysis.sessionAffinity.cookieName",
        "required",
    );
    rejects(
        &[(
            "/spec/analysis/sessionAffinity",
            json!({"cookieName": "a b"}),
        )],
        "spec.analysis.sessionAffinity.cookieName",
        "not a cookie name",
    );
    rejects(
        &[(
            "/spec/analysis/sessionAffinity",
            json!({"cookieName": "c", "maxAge": -5}),
        )],
        "spec.analysis.sessionAffinity.maxAge",
        "negative",
    );
}

#[test]
fn top_level_settings() {
    rejects(
        &[("/spec/progressDeadlineSeconds", json!(0))],
        "spec.progressDeadlineSeconds",
        "at least 1",
    );
    rejects(
        &[("/spec/provider", json!("isito"))],
        "spec.provider",
        "unknown provider \"isito\"; accepted: serin, kubernetes, linkerd, gatewayapi, smi, osm, istio,",
    );
    rejects(
        &[("/spec/metricsServer", json!("prometheus:9090"))],
        "spec.metricsServer",
        "not an http(s) URL",
    );
    rejects(
        &[(
            "/spec/autoscalerRef",
            json!({"kind": "VerticalPodAutoscaler", "name": "x"}),
        )],
        "spec.autoscalerRef.kind",
        "accepted: HorizontalPodAutoscaler, ScaledObject",
    );
    rejects(
        &[
            ("/spec/targetRef/kind", json!("DaemonSet")),
            (
                "/spec/autoscalerRef",
                json!({"kind": "HorizontalPodAutoscaler", "name": "x"}),
            ),
        ],
        "spec.autoscalerRef",
        "a DaemonSet cannot be autoscaled",
    );
    rejects(
        &[(
            "/spec/analysis/alerts",
            json!([{"name": "a", "severity": "critical", "providerRef": {"name": "p"}}]),
        )],
        "spec.analysis.alerts[0].severity",
        "accepted: \"\" (the default), info, warn, error",
    );
    rejects(
        &[(
            "/spec/analysis/alerts",
            json!([{"name": "a", "providerRef": {"name": ""}}]),
        )],
        "spec.analysis.alerts[0].providerRef.name",
        "AlertProvider",
    );
}

#[test]
fn identity_of_the_document() {
    rejects(
        &[("/apiVersion", json!("flagger.app/v1beta1"))],
        "apiVersion",
        "change apiVersion to serin.dev/v1beta1",
    );
    rejects(
        &[("/apiVersion", json!("serin.dev/v1"))],
        "apiVersion",
        "unknown version \"serin.dev/v1\"; accepted: serin.dev/v1beta1",
    );
    rejects(
        &[("/apiVersion", Value::Null)],
        "apiVersion",
        "required field is missing",
    );
    rejects(
        &[("/kind", json!("Canry"))],
        "kind",
        "unknown kind \"Canry\"; accepted: Canary, MetricTemplate, AlertProvider",
    );
    rejects(&[("/kind", Value::Null)], "kind", "required");
    rejects(
        &[("/metadata/name", Value::Null)],
        "metadata.name",
        "required",
    );
    rejects(
        &[("/metadata/labels", json!({"version": 2}))],
        "metadata.labels.version",
        "expected a string",
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let errors = errors_of(&with(
        base(),
        &[
            ("/spec/analysis/interval", json!("0s")),
            ("/spec/analysis/maxWeight", json!(0)),
            ("/spec/analysis/webhooks/0/url", json!("nope")),
            ("/spec/analysis/threshold", json!(-2)),
        ],
    ));
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn a_type_error_does_not_hide_the_other_rules() {
    let errors = errors_of(&with(
        base(),
        &[
            ("/spec/analysis/interval", json!(60)),
            ("/spec/analysis/webhooks/0/type", json!("pre-promotion")),
            ("/spec/analysis/stepWeight", Value::Null),
            ("/spec/analysis/maxWeight", Value::Null),
            ("/spec/analysis/stepWeights", json!([10, 5])),
            (
                "/spec/analysis/metrics/1/thresholdRange",
                json!({"min": 5, "max": 1}),
            ),
        ],
    ));
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors[0].starts_with("spec.analysis.interval: 60 has no unit"));
    assert!(errors[1].starts_with("spec.analysis.webhooks[0].type: unknown value"));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("spec.analysis.stepWeights[1]: 5 does not increase"))
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("spec.analysis.metrics[1].thresholdRange: min 5"))
    );
}

#[test]
fn a_bad_strategy_value_is_reported_once() {
    let errors = errors_of(&with(
        base(),
        &[
            ("/spec/analysis/stepWeight", Value::Null),
            ("/spec/analysis/maxWeight", Value::Null),
            ("/spec/analysis/stepWeights", json!([10, "x"])),
        ],
    ));
    assert_eq!(
        errors,
        ["spec.analysis.stepWeights[1]: expected a whole number, found the string \"x\""]
    );
}

#[test]
fn other_resources_in_the_same_file_are_skipped() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n---\n";
    let docs = check_manifests(text);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].outcome, Outcome::Skipped);
}

#[test]
fn local_process_documents_are_left_to_the_local_platform() {
    let text = "apiVersion: serin.dev/v1beta1\nkind: Process\nmetadata:\n  name: podinfo\nspec:\n  command: serin\n";
    let docs = check_manifests(text);
    assert_eq!(docs[0].outcome, Outcome::Skipped);
    assert_eq!(
        docs[0].report_lines("demo.yaml"),
        [
            "demo.yaml: document 1 (Process podinfo): skipped (checked by the local platform when it loads it)"
        ]
    );
}

#[test]
fn extra_kinds_are_checked_by_their_own_reader() {
    use serin_api::{Resource, ValidationError, check_manifests_with};
    let text = "apiVersion: serin.dev/v1beta1\nkind: Process\nmetadata:\n  name: ok\n---\napiVersion: serin.dev/v1beta1\nkind: Process\nmetadata:\n  name: bad\n";
    let checker = |kind: &str, v: &serde_norway::Value| {
        (kind == "Process").then(|| {
            if v["metadata"]["name"].as_str() == Some("ok") {
                Ok(())
            } else {
                Err(vec![ValidationError::new("spec.command", "required")])
            }
        })
    };
    let docs = check_manifests_with(text, &checker);
    assert_eq!(
        docs[0].outcome,
        Outcome::Valid(Resource::Other("Process".into()))
    );
    assert_eq!(
        docs[1].report_lines("p.yaml"),
        ["p.yaml: document 2 (Process bad): spec.command: required"]
    );
    // A checker does not take over the three kinds this crate defines.
    let canary = "apiVersion: serin.dev/v1beta1\nkind: Canary\nmetadata:\n  name: x\n";
    let docs = check_manifests_with(canary, &|_, _| Some(Ok(())));
    assert!(matches!(docs[0].outcome, Outcome::Invalid(_)));
}

#[test]
fn yaml_syntax_errors_give_line_and_column() {
    let text = "apiVersion: serin.dev/v1beta1\nkind: Canary\n---\napiVersion: serin.dev/v1beta1\nkind: Canary\nmetadata:\n  name: [unclosed\n";
    let docs = check_manifests(text);
    let last = docs.last().unwrap();
    let line = last.report_lines("f.yaml").join("\n");
    assert!(
        matches!(
            last.outcome,
            Outcome::Syntax {
                line: Some(_),
                column: Some(_),
                ..
            }
        ),
        "{line}"
    );
    assert!(line.starts_with("f.yaml: document 2: line "), "{line}");
    assert!(line.contains("YAML syntax error"), "{line}");
}

#[test]
fn metric_templates_are_checked() {
    let template = |spec: Value| json!({"apiVersion": "serin.dev/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "t"}, "spec": spec});
    let ok = template(
        json!({"provider": {"type": "prometheus", "address": "http://prom:9090"}, "query": "up"}),
    );
    assert!(matches!(
        check_manifests(&serde_norway::to_string(&ok).unwrap())[0].outcome,
        Outcome::Valid(_)
    ));
    let with_serin_headers = template(json!({
        "provider": {"type": "prometheus", "address": "https://mimir:8080", "insecureSkipVerify": true,
                     "secretRef": {"name": "prom-auth"},
                     "headers": [{"name": "X-Scope-OrgID", "value": "team a"}]},
        "query": "up"
    }));
    assert!(matches!(
        check_manifests(&serde_norway::to_string(&with_serin_headers).unwrap())[0].outcome,
        Outcome::Valid(_)
    ));
    let cases = [
        (
            json!({"provider": {"type": "graphitee"}, "query": "x"}),
            "spec.provider.type",
            "unknown metric provider \"graphitee\"; accepted: prometheus",
        ),
        (
            json!({"provider": {"type": "prometheus", "address": "prom:9090"}, "query": "x"}),
            "spec.provider.address",
            "not an http(s) URL",
        ),
        (
            json!({"provider": {"type": "prometheus"}, "query": " "}),
            "spec.query",
            "empty",
        ),
        (
            json!({"provider": {"type": "prometheus"}}),
            "spec.query",
            "required field is missing",
        ),
        (
            json!({"query": "up"}),
            "spec.provider",
            "required field is missing",
        ),
        (
            json!({"provider": {"type": "prometheus", "secretRef": {"name": ""}}, "query": "x"}),
            "spec.provider.secretRef.name",
            "Secret",
        ),
        (
            json!({"provider": {"type": "prometheus", "headers": [{"name": "X Scope", "value": "a"}]}, "query": "x"}),
            "spec.provider.headers[0].name",
            "is not a header name; accepted:",
        ),
        (
            json!({"provider": {"type": "prometheus", "headers": [{"name": "Authorization", "value": "Bearer x"}]}, "query": "x"}),
            "spec.provider.headers[0].name",
            "accepted: spec.provider.secretRef",
        ),
        (
            json!({"provider": {"type": "prometheus", "headers": [{"name": "X-Tenant", "value": "a\nb"}]}, "query": "x"}),
            "spec.provider.headers[0].value",
            "visible ASCII",
        ),
        (
            json!({"provider": {"type": "prometheus", "headers": [{"name": "X-Tenant"}]}, "query": "x"}),
            "spec.provider.headers[0].value",
            "required field is missing",
        ),
    ];
    for (spec, path, fragment) in cases {
        let errors = errors_of(&template(spec));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(fragment)),
            "{path}: {errors:?}"
        );
    }
}

#[test]
fn alert_providers_are_checked() {
    let provider = |spec: Value| json!({"apiVersion": "serin.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "p"}, "spec": spec});
    let cases = [
        (
            json!({"type": "pagerduty", "address": "https://x/"}),
            "spec.type",
            "unknown alert provider \"pagerduty\"; accepted: slack, msteams, discord, rocket, gchat",
        ),
        (
            json!({"type": "slack"}),
            "spec",
            "no destination: set address",
        ),
        (
            json!({"type": "slack", "address": "hooks.slack.com"}),
            "spec.address",
            "not an http(s) URL",
        ),
        (
            json!({"type": "slack", "address": "https://x/", "proxy": "squid:3128"}),
            "spec.proxy",
            "not an http(s) URL",
        ),
        (
            json!({"type": "slack", "secretRef": {"name": ""}}),
            "spec.secretRef.name",
            "Secret",
        ),
    ];
    for (spec, path, fragment) in cases {
        let errors = errors_of(&provider(spec));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(fragment)),
            "{path}: {errors:?}"
        );
    }
}

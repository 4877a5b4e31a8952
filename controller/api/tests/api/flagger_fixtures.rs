//! Real-looking Flagger manifests are accepted after changing only `apiVersion`, rejected with
//! a pointer to that change before, and survive a round trip through Serin's types unchanged.

use std::path::PathBuf;

use serde_json::Value;
use serin_api::{
    Outcome, Resource, apply_template_verdicts, check_flagger_manifests, check_manifests,
};

fn fixtures() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flagger");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the Flagger fixture set in {dir:?}"
    );
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect()
}

fn to_serin(text: &str) -> String {
    text.replace(
        "apiVersion: flagger.app/v1beta1",
        "apiVersion: serin.dev/v1beta1",
    )
}

#[test]
fn every_flagger_fixture_is_valid_after_changing_only_api_version() {
    for (name, text) in fixtures() {
        let docs = check_manifests(&to_serin(&text));
        let serin_docs: Vec<_> = docs
            .iter()
            .filter(|d| !matches!(d.outcome, Outcome::Skipped))
            .collect();
        assert!(!serin_docs.is_empty(), "{name}: no Serin documents found");
        for doc in serin_docs {
            assert!(
                matches!(doc.outcome, Outcome::Valid(_)),
                "{name}: {}",
                doc.report_lines(&name).join("\n")
            );
        }
    }
}

#[test]
fn unchanged_flagger_manifests_are_told_to_change_api_version() {
    for (name, text) in fixtures() {
        for doc in check_manifests(&text) {
            if matches!(doc.outcome, Outcome::Skipped) {
                continue;
            }
            let Outcome::Invalid(errors) = &doc.outcome else {
                panic!("{name}: document {} should be rejected", doc.index);
            };
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            assert_eq!(errors[0].path, "apiVersion");
            assert!(
                errors[0]
                    .message
                    .contains("change apiVersion to serin.dev/v1beta1"),
                "{name}: {}",
                errors[0].message
            );
        }
    }
}

/// Drops what a Go client would omit anyway (false, empty lists and maps) and turns every
/// number into a float, so "what the user wrote" and "what Serin writes back" compare.
fn canonical(v: &Value) -> Option<Value> {
    match v {
        // Go's omitempty: an empty string is "unset" (Flagger's default webhook type, severity).
        Value::Null | Value::Bool(false) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Number(n) => Some(serde_json::json!(n.as_f64().unwrap())),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => Some(Value::Array(items.iter().filter_map(canonical).collect())),
        Value::Object(map) => {
            let out: serde_json::Map<_, _> = map
                .iter()
                .filter_map(|(k, v)| canonical(v).map(|v| (k.clone(), v)))
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
        other => Some(other.clone()),
    }
}

#[test]
fn every_flagger_field_survives_a_round_trip_through_the_types() {
    for (name, text) in fixtures() {
        let text = to_serin(&text);
        let originals: Vec<Value> = serde_norway::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect::<Vec<serde_norway::Value>>()
            .into_iter()
            .map(|y| serde_json::to_value(y).unwrap())
            .collect();
        for doc in check_manifests(&text) {
            let written = match &doc.outcome {
                Outcome::Valid(Resource::Canary(c)) => serde_json::to_value(c).unwrap(),
                Outcome::Valid(Resource::MetricTemplate(t)) => serde_json::to_value(t).unwrap(),
                Outcome::Valid(Resource::AlertProvider(p)) => serde_json::to_value(p).unwrap(),
                _ => continue,
            };
            let original = &originals[doc.index - 1];
            assert_eq!(
                canonical(&written),
                canonical(original),
                "{name}: document {} lost or changed fields",
                doc.index
            );
        }
    }
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flagger")
}

/// Every document's verdict, as `serin validate --flagger` prints it, against the reviewed
/// list in verdicts.txt (regenerate with SERIN_UPDATE_VERDICTS=1 and review the diff).
#[test]
fn every_fixture_has_its_exact_verdict() {
    let mut lines = Vec::new();
    for (name, text) in fixtures() {
        let mut docs = check_flagger_manifests(&text);
        apply_template_verdicts(&mut docs);
        for doc in docs {
            lines.extend(doc.report_lines(&name));
        }
    }
    let actual = lines.join("\n") + "\n";
    let path = fixture_dir().join("verdicts.txt");
    if std::env::var_os("SERIN_UPDATE_VERDICTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual, expected,
        "verdicts changed; review and regenerate with SERIN_UPDATE_VERDICTS=1 cargo test -p serin-api --test api flagger_fixtures::"
    );
    // The corpus covers both verdicts and warnings.
    assert!(actual.contains(": valid and runnable"));
    assert!(actual.contains(": valid for Flagger, not runnable by this Serin: "));
    assert!(actual.contains(": warning: "));
}

/// The same verdicts whether the apiVersion is changed by hand or read as Flagger's.
#[test]
fn flagger_mode_and_a_changed_api_version_agree() {
    for (name, text) in fixtures() {
        let a: Vec<String> = check_flagger_manifests(&text)
            .iter()
            .flat_map(|d| d.report_lines(&name))
            .collect();
        let b: Vec<String> = check_manifests(&to_serin(&text))
            .iter()
            .flat_map(|d| d.report_lines(&name))
            .collect();
        assert_eq!(a, b, "{name}");
    }
}

/// Each rule Flagger enforces has a bad fixture whose first line names the exact error.
#[test]
fn every_flagger_rejection_has_a_bad_fixture_naming_the_field() {
    let dir = fixture_dir().join("bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 15, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{path:?}: first line must be `# expect: path: message`"));
        let docs = check_flagger_manifests(&text);
        assert_eq!(docs.len(), 1, "{path:?}");
        let Outcome::Invalid(errors) = &docs[0].outcome else {
            panic!("{path:?}: accepted, expected {expected}");
        };
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors, [expected], "{path:?}");
    }
}

#[test]
fn a_keda_scaled_object_autoscaler_is_said_not_runnable_before_the_rollout() {
    // The Kubernetes controller clones only HorizontalPodAutoscalers: a KEDA ScaledObject used to
    // pass `serin validate` and then stop every tick after the primary was made.
    let yaml = r#"
apiVersion: serin.dev/v1beta1
kind: Canary
metadata: {name: worker, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: worker}
  autoscalerRef: {apiVersion: keda.sh/v1alpha1, kind: ScaledObject, name: worker}
  service: {port: 80}
  analysis: {interval: 1m, threshold: 5, stepWeight: 10, maxWeight: 50}
"#;
    let canary: serin_api::Canary = serde_norway::from_str(yaml).unwrap();
    match serin_api::support::canary_verdict(&canary, "serin") {
        serin_api::support::Verdict::NotRunnable(reasons) => {
            let r = reasons.join("; ");
            for needle in [
                "spec.autoscalerRef",
                "ScaledObject",
                "HorizontalPodAutoscaler",
            ] {
                assert!(r.contains(needle), "{needle:?} in {r:?}");
            }
        }
        v => panic!("runnable? {v:?}"),
    }
}

/// The reasons `canary_verdict` gives for `analysis` (a YAML mapping) under `provider`, or an
/// empty list when it calls the Canary runnable.
fn not_runnable_under(provider: &str, analysis: &str) -> String {
    let yaml = format!(
        "apiVersion: serin.dev/v1beta1\nkind: Canary\nmetadata: {{name: podinfo, namespace: test}}\nspec:\n  provider: {provider}\n  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}\n  service: {{port: 9898}}\n  analysis: {analysis}\n"
    );
    let canary: serin_api::Canary = serde_norway::from_str(&yaml).unwrap();
    match serin_api::support::canary_verdict(&canary, "serin") {
        serin_api::support::Verdict::NotRunnable(reasons) => reasons.join("; "),
        serin_api::support::Verdict::Runnable => String::new(),
    }
}

#[test]
fn a_strategy_the_provider_cannot_route_is_said_not_runnable_before_the_rollout() {
    // An SMI TrafficSplit splits by weight only, and `kubernetes` switches the apex Service's
    // selector all at once. `serin validate` used to call these runnable: the SMI A/B canary then
    // stopped at its first route write, and the others ran with the match, the weights, the
    // mirror or the cookie silently left out.
    let ab = "{interval: 1m, threshold: 5, iterations: 10, match: [{headers: {x-canary: {exact: insider}}}]}";
    let steps = "{interval: 1m, threshold: 5, stepWeight: 10, maxWeight: 50}";
    let step_list = "{interval: 1m, threshold: 5, stepWeights: [10, 50]}";
    let mirror = "{interval: 1m, threshold: 5, iterations: 10, mirror: true}";
    let sticky = "{interval: 1m, threshold: 5, stepWeight: 10, sessionAffinity: {cookieName: flagger-cookie}}";
    for (provider, analysis, field) in [
        ("smi", ab, "spec.analysis.match"),
        ("smi:v1alpha3", ab, "spec.analysis.match"),
        ("osm", ab, "spec.analysis.match"),
        ("kubernetes", ab, "spec.analysis.match"),
        ("smi", mirror, "spec.analysis.mirror"),
        ("kubernetes", mirror, "spec.analysis.mirror"),
        ("osm", sticky, "spec.analysis.sessionAffinity"),
        ("kubernetes", steps, "spec.analysis.stepWeight"),
        ("kubernetes", step_list, "spec.analysis.stepWeights"),
    ] {
        let r = not_runnable_under(provider, analysis);
        assert!(
            r.contains(field) && r.contains(&format!("{provider:?}")),
            "{provider} with {analysis}: {r:?} should name {field} and the provider"
        );
        // Each reason says where the strategy does run.
        assert!(r.contains("gatewayapi"), "{provider}: {r}");
    }
    // What each provider does route stays runnable.
    for (provider, analysis) in [
        ("smi", steps),
        ("osm", step_list),
        ("kubernetes", "{interval: 1m, threshold: 5, iterations: 10}"),
        ("linkerd", ab),
        ("gatewayapi:v1", mirror),
        ("serin", sticky),
    ] {
        assert_eq!(not_runnable_under(provider, analysis), "", "{provider}");
    }
}

#[test]
fn an_alert_provider_with_a_proxy_is_said_not_runnable_before_any_alert() {
    // The controller sends alerts directly and refused every alert of such a provider, while
    // `serin validate` called it runnable.
    let yaml = r#"
apiVersion: serin.dev/v1beta1
kind: AlertProvider
metadata: {name: dev-team, namespace: flagger}
spec:
  type: msteams
  address: https://outlook.office.com/webhook/abc
  proxy: http://squid.proxy:3128
"#;
    let provider: serin_api::AlertProvider = serde_norway::from_str(yaml).unwrap();
    match serin_api::support::alert_provider_verdict(&provider) {
        serin_api::support::Verdict::NotRunnable(reasons) => {
            let r = reasons.join("; ");
            assert!(r.contains("spec.proxy"), "{r}");
        }
        v => panic!("runnable? {v:?}"),
    }
}

#[test]
fn the_generic_alert_provider_the_controller_sends_to_is_valid() {
    // The controller speaks `generic` (a plain JSON document, README of serin-controller);
    // `serin validate` refused it as an unknown type.
    let yaml = r#"
apiVersion: serin.dev/v1beta1
kind: AlertProvider
metadata: {name: audit, namespace: flagger}
spec:
  type: generic
  address: https://audit.example/hooks/serin
"#;
    let provider: serin_api::AlertProvider = serde_norway::from_str(yaml).unwrap();
    serin_api::validate_alert_provider(&provider).unwrap();
    let bad: serin_api::AlertProvider =
        serde_norway::from_str(&yaml.replace("generic", "pagerduty")).unwrap();
    let errors = serin_api::validate_alert_provider(&bad).unwrap_err();
    let text = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(
        text.contains("generic"),
        "the accepted list names it: {text}"
    );
}

#[test]
fn fields_only_an_http_route_carries_are_said_ignored_under_other_providers() {
    // `serin validate` called service.headers, timeout and gatewayRefs supported whatever the
    // provider; an SMI TrafficSplit or the apex selector carries none of them.
    let yaml = r#"
apiVersion: serin.dev/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
    timeout: 15s
    headers: {request: {set: {x-env: prod}}}
    gatewayRefs: [{name: public, namespace: gateways}]
  analysis: {interval: 1m, threshold: 5, stepWeight: 10}
"#;
    let canary: serin_api::Canary = serde_norway::from_str(yaml).unwrap();
    let paths = |provider| -> Vec<&str> {
        serin_api::support::ignored_fields(&canary, provider)
            .into_iter()
            .map(|(path, _)| path)
            .collect()
    };
    for provider in ["smi", "osm", "kubernetes"] {
        assert_eq!(
            paths(provider),
            [
                "spec.service.headers",
                "spec.service.timeout",
                "spec.service.gatewayRefs"
            ],
            "{provider}"
        );
    }
    for provider in ["serin", "linkerd", "gatewayapi:v1beta1"] {
        assert!(paths(provider).is_empty(), "{provider}");
    }
}

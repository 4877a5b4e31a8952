//! MetricTemplates of the providers the registry queries, run by the Kubernetes analyzer: the
//! API server is a `tower_test` mock asserting each read (the template, then its `secretRef`
//! Secret), and the provider's API is a fake on 127.0.0.1:0 answering with its documented shapes.
//! Each scenario is bounded: the analyzer by a timeout, every fake request by a 5 s wait.

use std::time::Duration;

use serde_json::{Value, json};
use serin_analysis::testing::{Answer, FakeApi, StreamEnd, fake_cloudwatch};
use serin_api::Canary;
use serin_controller::adapters::CanaryContext;
use serin_core::{CheckResult, Status, Verdict};
use serin_kube::analysis::PrometheusAnalyzer;
use serin_kube::testing::{Expect, assert_no_more_calls, expect, mock_client, play};

const NS: &str = "test";

fn context(metrics: Value) -> CanaryContext {
    let c: Canary = serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 2, "maxWeight": 50, "stepWeight": 10, "metrics": metrics}
        }
    }))
    .unwrap();
    serin_controller::plan::context(NS, &c).unwrap().1
}

fn get_template(name: &str, provider: Value, query: &str) -> Expect {
    expect(
        "GET",
        format!("/apis/serin.dev/v1beta1/namespaces/{NS}/metrictemplates/{name}"),
    )
    .reply(
        200,
        json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"provider": provider, "query": query}
        }),
    )
}

fn get_secret(name: &str, data: &[(&str, &str)]) -> Expect {
    serin_kube::testing::get_secret_answered(NS, name, data)
}

/// One round of checks by a fresh analyzer whose API server answers exactly `calls`.
async fn checks(ctx: &CanaryContext, calls: Vec<Expect>) -> Vec<CheckResult> {
    let (client, handle) = mock_client(NS);
    let server = tokio::spawn(play(handle, calls));
    let analyzer = PrometheusAnalyzer::new(client, None, "serin".into());
    let results = tokio::time::timeout(
        Duration::from_secs(20),
        serin_controller::adapters::Analyzer::run_checks(&analyzer, ctx, &Status::default()),
    )
    .await
    .expect("checks within 20s")
    .expect("the analyzer is usable");
    let mut handle = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the scenario ends")
        .expect("scenario");
    assert_no_more_calls(&mut handle).await;
    results
}

fn by_name<'a>(results: &'a [CheckResult], name: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no {name} in {results:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datadog_template_is_queried_with_the_keys_of_its_secret() {
    let mut dd = FakeApi::start(vec![
        Answer::json(
            200,
            r#"{"status":"ok","series":[{"metric":"errors","pointlist":[[1700000000000.0, 9.0],[1700000060000.0, 2.5]]}]}"#,
        ),
        Answer::json(200, r#"{"status":"ok","series":[]}"#),
    ])
    .await;
    let ctx = context(json!([
        {"name": "errors", "templateRef": {"name": "dd-errors"}, "thresholdRange": {"max": 5}, "interval": "1m",
         "templateVariables": {"env": "prod"}},
        {"name": "silent", "templateRef": {"name": "dd-silent"}, "thresholdRange": {"max": 5}, "interval": "1m"}
    ]));
    let provider =
        json!({"type": "datadog", "address": dd.address, "secretRef": {"name": "dd-keys"}});
    let keys = [
        ("datadog_api_key", "api-123"),
        ("datadog_application_key", "app-456\n"),
    ];
    let query = "sum:errors{app:{{ target }},env:{{ variables.env }}}.as_count()";
    let results = checks(
        &ctx,
        vec![
            get_template("dd-errors", provider.clone(), query),
            get_secret("dd-keys", &keys),
            get_template("dd-silent", provider, "sum:silent{app:{{ target }}}"),
            get_secret("dd-keys", &keys),
        ],
    )
    .await;
    let errors = by_name(&results, "errors");
    assert_eq!(errors.verdict, Verdict::Pass, "{errors:?}");
    assert_eq!(errors.value, Some(2.5));
    let seen = dd.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/api/v1/query")
    );
    assert_eq!(seen.header("dd-api-key"), Some("api-123"));
    assert_eq!(seen.header("dd-application-key"), Some("app-456"));
    assert_eq!(
        seen.param("query").as_deref(),
        Some("sum:errors{app:podinfo,env:prod}.as_count()"),
        "the rendered query is sent"
    );
    let window: u64 = seen.param("to").unwrap().parse::<u64>().unwrap()
        - seen.param("from").unwrap().parse::<u64>().unwrap();
    assert_eq!(window, 600, "ten 1m intervals, as Flagger asks");
    // No series is no data: never a pass.
    let seen = dd.next().await;
    assert_eq!(
        seen.param("query").as_deref(),
        Some("sum:silent{app:podinfo}")
    );
    let silent = by_name(&results, "silent");
    assert_eq!(silent.verdict, Verdict::Inconclusive, "{silent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datadog_template_without_its_secret_or_a_key_is_inconclusive_naming_it() {
    let ctx = context(json!([
        {"name": "errors", "templateRef": {"name": "dd"}, "thresholdRange": {"max": 5}, "interval": "1m"}
    ]));
    // A key missing from the Secret: named, and no request reaches Datadog.
    let provider = json!({"type": "datadog", "address": "http://127.0.0.1:9", "secretRef": {"name": "dd-keys"}});
    let results = checks(
        &ctx,
        vec![
            get_template("dd", provider.clone(), "avg:x{*}"),
            get_secret("dd-keys", &[("datadog_api_key", "k")]),
        ],
    )
    .await;
    let r = by_name(&results, "errors");
    assert_eq!(r.verdict, Verdict::Inconclusive);
    assert!(
        r.detail.contains("MetricTemplate test/dd")
            && r.detail
                .contains("Secret test/dd-keys key datadog_application_key")
            && r.detail.contains("missing"),
        "{r:?}"
    );
    // The Secret itself missing: the field and the Secret are named.
    let results = checks(
        &ctx,
        vec![
            get_template("dd", provider, "avg:x{*}"),
            expect("GET", format!("/api/v1/namespaces/{NS}/secrets/dd-keys")).not_found(),
        ],
    )
    .await;
    let r = by_name(&results, "errors");
    assert_eq!(r.verdict, Verdict::Inconclusive);
    assert!(
        r.detail.contains("spec.provider.secretRef") && r.detail.contains("does not exist"),
        "{r:?}"
    );
    // No secretRef at all: Datadog needs one.
    let results = checks(
        &ctx,
        vec![get_template("dd", json!({"type": "datadog"}), "avg:x{*}")],
    )
    .await;
    let r = by_name(&results, "errors");
    assert_eq!(r.verdict, Verdict::Inconclusive);
    assert!(
        r.detail.contains("spec.provider.secretRef")
            && r.detail
                .contains("datadog_api_key, datadog_application_key"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudwatch_template_is_signed_with_the_keys_of_its_secret() {
    // The fake checks the SigV4 signature as AWS does: only the Secret's keys pass.
    let mut cw = fake_cloudwatch(
        vec![(
            "AKIASECRET".into(),
            "from-the-secret".into(),
            Some("tok".into()),
        )],
        "eu-west-1",
        vec![Answer::json(
            200,
            r#"{"MetricDataResults":[{"Id":"e1","StatusCode":"Complete","Timestamps":[1700000060,1700000000],"Values":[1.5,7.0]}],"Messages":[]}"#,
        )],
    )
    .await;
    let ctx = context(json!([
        {"name": "error-rate", "templateRef": {"name": "cw-errors"}, "thresholdRange": {"max": 5}, "interval": "1m"},
        {"name": "latency", "templateRef": {"name": "cw-latency"}, "thresholdRange": {"max": 500}, "interval": "1m"}
    ]));
    let provider = |secret: &str| json!({"type": "cloudwatch", "region": "eu-west-1", "address": cw.address, "secretRef": {"name": secret}});
    let query = r#"[{"Id": "e1", "Expression": "m1 / m2"},
      {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Errors", "Dimensions": [{"Name": "app", "Value": "{{ target }}"}]}, "Period": 60, "Stat": "Sum"}, "ReturnData": false},
      {"Id": "m2", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Requests", "Dimensions": [{"Name": "app", "Value": "{{ target }}"}]}, "Period": 60, "Stat": "Sum"}, "ReturnData": false}]"#;
    let results = checks(
        &ctx,
        vec![
            get_template("cw-errors", provider("aws-keys"), query),
            get_secret(
                "aws-keys",
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIASECRET"),
                    ("AWS_SECRET_ACCESS_KEY", "from-the-secret\n"),
                    ("AWS_SESSION_TOKEN", "tok"),
                ],
            ),
            // A Secret without the secret key: named, and nothing is sent to CloudWatch.
            get_template("cw-latency", provider("half-keys"), query),
            get_secret("half-keys", &[("AWS_ACCESS_KEY_ID", "AKIASECRET")]),
        ],
    )
    .await;
    let r = by_name(&results, "error-rate");
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(r.value, Some(1.5), "the newest datapoint");
    let seen = cw.next().await;
    assert_eq!(
        seen.header("x-amz-target"),
        Some("GraniteServiceVersion20100801.GetMetricData")
    );
    let body: Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(
        body["MetricDataQueries"][1]["MetricStat"]["Metric"]["Dimensions"][0]["Value"], "podinfo",
        "the rendered query is sent"
    );
    let r = by_name(&results, "latency");
    assert_eq!(r.verdict, Verdict::Inconclusive);
    assert!(
        r.detail.contains("MetricTemplate test/cw-latency")
            && r.detail
                .contains("Secret test/half-keys key AWS_SECRET_ACCESS_KEY"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splunk_template_runs_its_signalflow_program_with_the_token_of_its_secret() {
    let mut sf = FakeApi::start(vec![Answer::event_stream(
        &[
            (
                "control-message",
                r#"{"event":"STREAM_START","timestampMs":1700000000000}"#,
            ),
            (
                "control-message",
                r#"{"event":"JOB_START","handle":"E1x2oN3AwAA","timestampMs":1700000000010}"#,
            ),
            (
                "metadata",
                r#"{"tsId":"AAAAAKQ1vbI","properties":{"sf_metric":"requests.count","sf_resolutionMs":60000}}"#,
            ),
            (
                "data",
                r#"{"logicalTimestampMs":1700000000000,"data":[{"tsId":"AAAAAKQ1vbI","value":0.75}]}"#,
            ),
            (
                "control-message",
                r#"{"event":"END_OF_CHANNEL","timestampMs":1700000000500}"#,
            ),
        ],
        StreamEnd::Close,
    )])
    .await;
    let ctx = context(json!([
        {"name": "errors", "templateRef": {"name": "splunk-errors"}, "thresholdRange": {"max": 1}, "interval": "1m"}
    ]));
    let results = checks(
        &ctx,
        vec![
            get_template(
                "splunk-errors",
                json!({"type": "splunk", "address": sf.address, "secretRef": {"name": "splunk"}}),
                "data('requests.count', filter=filter('service', '{{ target }}')).sum().publish()",
            ),
            get_secret("splunk", &[("sf_token_key", "org-token")]),
        ],
    )
    .await;
    let r = by_name(&results, "errors");
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(r.value, Some(0.75));
    let seen = sf.next().await;
    assert_eq!(seen.path, "/v2/signalflow/execute");
    assert_eq!(seen.header("x-sf-token"), Some("org-token"));
    assert_eq!(
        seen.body,
        "data('requests.count', filter=filter('service', 'podinfo')).sum().publish()"
    );
}

#[test]
fn validate_calls_queried_exactly_the_providers_the_registry_builds() {
    assert_eq!(
        serin_api::support::queried_metric_providers(),
        serin_analysis::QUERIED_PROVIDERS,
        "serin_api::support::METRIC_PROVIDERS and the analysis registry disagree"
    );
}

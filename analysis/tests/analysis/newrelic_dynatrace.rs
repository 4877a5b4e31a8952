//! The New Relic and Dynatrace providers against a fake API on 127.0.0.1:0 (real HTTP/1.1)
//! answering with the documented response and error shapes: what is sent (path, auth header,
//! the query and its window), the value read, no data as `None`, and errors that name the
//! status, the backend's message, or the missing Secret key.

use std::collections::BTreeMap;
use std::time::Duration;

use serin_analysis::testing::{Answer, FakeApi};
use serin_analysis::{Credentials, ProviderSettings, TemplateProvider};

fn provider(
    type_: &str,
    address: Option<&str>,
    keys: &[(&str, &str)],
) -> Box<dyn Fn() -> Result<std::sync::Arc<dyn TemplateProvider>, serin_analysis::AnalysisError>> {
    let settings = ProviderSettings {
        type_: type_.into(),
        address: address.map(str::to_string),
        credentials: Some(Credentials {
            secret: "test/keys".into(),
            data: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }),
        ..Default::default()
    };
    Box::new(move || serin_analysis::ProviderRegistry::new().provider("test/t", &settings))
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the exchange finished in time")
}

const NR_KEYS: &[(&str, &str)] = &[
    ("newrelic_account_id", "1234"),
    ("newrelic_query_key", "nrq-9\n"),
];

#[tokio::test]
async fn new_relic_runs_nrql_since_the_interval_with_the_query_key() {
    let mut api = FakeApi::start(vec![
        Answer::json(
            200,
            r#"{"results":[{"result":1.25}],"metadata":{"eventTypes":["Transaction"]}}"#,
        ),
        Answer::json(200, r#"{"results":[{"result":null}]}"#),
        Answer::json(200, r#"{"results":[]}"#),
        Answer::json(200, r#"{"results":[{"result":1},{"result":2}]}"#),
        Answer::json(
            400,
            r#"{"error":"NRQL Syntax Error: Error at line 1 position 8"}"#,
        ),
    ])
    .await;
    let nr = provider("newrelic", Some(&api.address), NR_KEYS)().unwrap();
    let q = "SELECT filter(count(*), WHERE error IS true) / count(*) * 100 AS result FROM Transaction WHERE appName = 'podinfo'";
    let observed = within(nr.query(q, Duration::from_secs(60))).await.unwrap();
    assert_eq!(observed.value, Some(1.25));
    let seen = api.next().await;
    assert_eq!(seen.path, "/v1/accounts/1234/query");
    assert_eq!(seen.header("x-query-key"), Some("nrq-9"));
    assert_eq!(
        seen.param("nrql").unwrap(),
        format!("{q} SINCE 60 seconds ago")
    );
    // A null result and no row are no data, never a value.
    for _ in 0..2 {
        let observed = within(nr.query(q, Duration::from_secs(60))).await.unwrap();
        assert_eq!(observed.value, None);
        api.next().await;
    }
    // Several rows (a FACET) cannot be judged as one number.
    let err = within(nr.query(q, Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("2 result rows"), "{err}");
    api.next().await;
    // New Relic's error shape: the status and its message.
    let err = within(nr.query("SELECT", Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("HTTP 400 Bad Request: NRQL Syntax Error"),
        "{err}"
    );
}

#[tokio::test]
async fn a_new_relic_row_without_result_names_its_fields_and_the_alias() {
    // `SELECT average(duration) FROM Transaction` answers with the function's name as key.
    let api = FakeApi::start(vec![Answer::json(
        200,
        r#"{"results":[{"average":0.125}],"metadata":{"eventTypes":["Transaction"]}}"#,
    )])
    .await;
    let nr = provider("newrelic", Some(&api.address), NR_KEYS)().unwrap();
    let err = within(nr.query(
        "SELECT average(duration) FROM Transaction",
        Duration::from_secs(60),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`average`") && text.contains("AS result"),
        "{text}"
    );
}

#[test]
fn new_relic_names_the_missing_key() {
    let err = provider("newrelic", None, &[("newrelic_account_id", "1")])()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Secret test/keys key newrelic_query_key") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test]
async fn dynatrace_queries_metrics_v2_over_ten_intervals_with_an_api_token() {
    let mut api = FakeApi::start(vec![
        Answer::json(
            200,
            r#"{"totalCount":1,"nextPageKey":null,"resolution":"Inf","result":[{"metricId":"builtin:service.errors.total.rate","dataPointCountRatio":0.0001,"dimensionCountRatio":0.0001,"data":[{"dimensions":[],"dimensionMap":{},"timestamps":[1700000600000],"values":[0.75]}]}]}"#,
        ),
        Answer::json(200, r#"{"totalCount":0,"result":[{"metricId":"x","data":[]}]}"#),
        Answer::json(200, r#"{"totalCount":1,"result":[{"metricId":"x","data":[{"timestamps":[1],"values":[null]}]}]}"#),
        Answer::json(401, r#"{"error":{"code":401,"message":"Missing authorization parameter."}}"#),
    ])
    .await;
    let dt = provider(
        "dynatrace",
        Some(&api.address),
        &[("dynatrace_token", "dt0c01.abc")],
    )()
    .unwrap();
    let q = "builtin:service.errors.total.rate:filter(eq(\"dt.entity.service\",\"SERVICE-1\")):avg";
    let observed = within(dt.query(q, Duration::from_secs(30))).await.unwrap();
    assert_eq!(observed.value, Some(0.75));
    let seen = api.next().await;
    assert_eq!(seen.path, "/api/v2/metrics/query");
    assert_eq!(seen.header("authorization"), Some("Api-Token dt0c01.abc"));
    assert_eq!(seen.param("metricSelector").as_deref(), Some(q));
    assert_eq!(seen.param("resolution").as_deref(), Some("Inf"));
    let ms = |n: &str| seen.param(n).unwrap().parse::<u64>().unwrap();
    assert_eq!(ms("to") - ms("from"), 300_000, "ten 30s intervals, in ms");
    for _ in 0..2 {
        let observed = within(dt.query(q, Duration::from_secs(30))).await.unwrap();
        assert_eq!(observed.value, None);
        api.next().await;
    }
    let err = within(dt.query(q, Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("HTTP 401 Unauthorized: Missing authorization parameter."),
        "{err}"
    );
}

#[test]
fn dynatrace_needs_its_address_and_token() {
    let err = provider("dynatrace", None, &[("dynatrace_token", "t")])()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.provider.address") && err.contains("required"),
        "{err}"
    );
    let err = provider("dynatrace", Some("http://127.0.0.1:9"), &[])()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Secret test/keys key dynatrace_token"),
        "{err}"
    );
}

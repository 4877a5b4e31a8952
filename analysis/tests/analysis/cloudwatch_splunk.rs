//! The CloudWatch and Splunk (SignalFlow) providers against local fakes on 127.0.0.1:0 (real
//! HTTP/1.1) that behave as the services document:
//!
//! - the CloudWatch fake checks every request's SigV4 signature itself (an implementation over
//!   `ring`, independent of the provider's `aws-sigv4`) and answers a bad one with AWS's error;
//!   STS answers web-identity exchanges in its XML;
//! - the SignalFlow fake streams server-sent events chunk by chunk (`control-message`,
//!   `metadata`, `message`, `data`, `error`), can end a stream normally, cut it, or hang.

use std::collections::BTreeMap;
use std::time::Duration;

use serin_analysis::cloudwatch::CloudWatchProvider;
use serin_analysis::splunk::SplunkProvider;
use serin_analysis::testing::{Answer, FakeApi, StreamEnd, fake_cloudwatch};
use serin_analysis::{AnalysisError, Credentials, Observed, TemplateProvider};

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .expect("the exchange finished in time")
}

/// One query for a 60s metric, bounded in time.
async fn ask(p: &dyn TemplateProvider, query: &str) -> Result<Observed, AnalysisError> {
    within(p.query(query, Duration::from_secs(60))).await
}

fn secret(pairs: &[(&str, &str)]) -> Credentials {
    Credentials {
        secret: "test/keys".into(),
        data: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

const REGION: &str = "eu-west-1";

/// Flagger's documented CloudWatch query shape: an expression over two metrics.
const QUERY: &str = r#"[
  {"Id": "e1", "Expression": "m1 / m2", "Label": "ErrorRate"},
  {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "MyKubernetesCluster", "MetricName": "ErrorCount",
    "Dimensions": [{"Name": "appName", "Value": "podinfo"}]}, "Period": 60, "Stat": "Sum", "Unit": "Count"}, "ReturnData": false},
  {"id": "m2", "metricStat": {"metric": {"namespace": "MyKubernetesCluster", "metricName": "RequestCount",
    "dimensions": [{"name": "appName", "value": "podinfo"}]}, "period": 60, "stat": "Sum", "unit": "Count"}, "returnData": false}
]"#;

fn aws_keys() -> Vec<(String, String, Option<String>)> {
    vec![(
        "ASIAEXAMPLE".into(),
        "s3cr3t/key+value".into(),
        Some("session-token".into()),
    )]
}

fn aws_secret() -> Credentials {
    secret(&[
        ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr3t/key+value\n"),
        ("AWS_SESSION_TOKEN", "session-token"),
    ])
}

#[tokio::test]
async fn cloudwatch_signs_get_metric_data_and_reads_the_newest_datapoint_of_the_first_result() {
    let mut api = fake_cloudwatch(
        aws_keys(),
        REGION,
        vec![
            // Newest first, as CloudWatch answers; the timestamps decide.
            Answer::json(
                200,
                r#"{"MetricDataResults":[{"Id":"e1","Label":"ErrorRate","StatusCode":"Complete","Timestamps":[1700000060,1700000000],"Values":[0.25,0.5]},{"Id":"x","Values":[99]}],"Messages":[]}"#,
            ),
            Answer::json(
                200,
                r#"{"MetricDataResults":[{"Id":"e1","Label":"ErrorRate","StatusCode":"Complete","Timestamps":[],"Values":[]}],"Messages":[]}"#,
            ),
            Answer::json(200, r#"{"MetricDataResults":[],"Messages":[]}"#),
            Answer::json(
                200,
                r#"{"MetricDataResults":[{"Id":"e1","StatusCode":"Forbidden","Timestamps":[],"Values":[],"Messages":[{"Code":"Forbidden","Value":"not authorized for account 123"}]}]}"#,
            ),
        ],
    )
    .await;
    let cw = CloudWatchProvider::new(
        Some(REGION),
        Some(&api.address),
        Some(&aws_secret()),
        false,
        &no_env,
    )
    .unwrap();
    let observed = ask(&cw, QUERY).await.unwrap();
    assert_eq!(observed.value, Some(0.25));
    let seen = api.next().await;
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/"));
    assert!(
        seen.header("authorization")
            .is_some_and(|a| a.contains(&format!("/{REGION}/monitoring/aws4_request"))),
        "{:?}",
        seen.headers
    );
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(
        body["EndTime"].as_u64().unwrap() - body["StartTime"].as_u64().unwrap(),
        600,
        "ten 60s intervals, as Flagger asks"
    );
    assert_eq!(body["MaxDatapoints"], 20);
    // Keys are sent in CloudWatch's spelling whatever the template's case.
    assert_eq!(body["MetricDataQueries"][2]["Id"], "m2");
    assert_eq!(
        body["MetricDataQueries"][2]["MetricStat"]["Metric"]["Dimensions"][0]["Value"],
        "podinfo"
    );
    assert_eq!(body["MetricDataQueries"][2]["ReturnData"], false);

    // No datapoint, or no result: no data, never a value.
    for _ in 0..2 {
        let observed = ask(&cw, QUERY).await.unwrap();
        assert_eq!(observed.value, None);
        api.next().await;
    }
    // A result CloudWatch could not compute is an error carrying its message.
    let err = ask(&cw, QUERY).await.unwrap_err().to_string();
    assert!(
        err.contains("StatusCode Forbidden") && err.contains("not authorized for account 123"),
        "{err}"
    );
}

#[tokio::test]
async fn cloudwatch_errors_carry_awss_exception_and_a_bad_query_sends_nothing() {
    let mut api = fake_cloudwatch(
        aws_keys(),
        REGION,
        vec![Answer::json(
            400,
            r#"{"__type":"com.amazonaws.cloudwatch#InvalidParameterValueException","message":"The value M1 for parameter MetricDataQueries.member.1.Id is not valid."}"#,
        )],
    )
    .await;
    // A wrong secret: the fake's signature check refuses it as AWS does.
    let wrong = secret(&[
        ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        ("AWS_SESSION_TOKEN", "session-token"),
    ]);
    let cw = CloudWatchProvider::new(
        Some(REGION),
        Some(&api.address),
        Some(&wrong),
        false,
        &no_env,
    )
    .unwrap();
    let err = ask(&cw, QUERY).await.unwrap_err();
    assert!(matches!(err, AnalysisError::BadResponse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 403 Forbidden: InvalidSignatureException: The request signature we calculated does not match"),
        "{text}"
    );
    api.next().await;
    // Signed for another region: refused too.
    let cw = CloudWatchProvider::new(
        Some("us-east-1"),
        Some(&api.address),
        Some(&aws_secret()),
        false,
        &no_env,
    )
    .unwrap();
    let err = ask(&cw, QUERY).await.unwrap_err().to_string();
    assert!(err.contains("InvalidSignatureException"), "{err}");
    api.next().await;
    // Correctly signed, refused by CloudWatch: its exception and message.
    let cw = CloudWatchProvider::new(
        Some(REGION),
        Some(&api.address),
        Some(&aws_secret()),
        false,
        &no_env,
    )
    .unwrap();
    let err = ask(&cw, QUERY).await.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 400 Bad Request: InvalidParameterValueException: The value M1"),
        "{err}"
    );
    api.next().await;
    // A query that is not a MetricDataQuery array is named before anything is sent.
    let err = within(cw.query(
        r#"[{"Id": "m1", "MetricStat": {"Metrics": {}}}]"#,
        Duration::from_secs(60),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec.query") && err.contains("unknown key \"Metrics\""),
        "{err}"
    );
}

#[tokio::test]
async fn cloudwatch_reads_keys_from_the_environment_and_names_a_missing_secret_key() {
    let mut api = fake_cloudwatch(
        vec![("AKIAENV".into(), "env-secret".into(), None)],
        REGION,
        vec![Answer::json(
            200,
            r#"{"MetricDataResults":[{"Id":"e1","Timestamps":[1700000000],"Values":[3.5]}]}"#,
        )],
    )
    .await;
    let env = |k: &str| match k {
        "AWS_ACCESS_KEY_ID" => Some("AKIAENV".to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some("env-secret".to_string()),
        _ => None,
    };
    let cw = CloudWatchProvider::new(Some(REGION), Some(&api.address), None, false, &env).unwrap();
    let observed = within(cw.query(QUERY, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(observed.value, Some(3.5));
    let seen = api.next().await;
    assert_eq!(seen.header("x-amz-security-token"), None);

    let err = CloudWatchProvider::new(
        Some(REGION),
        None,
        Some(&secret(&[("AWS_ACCESS_KEY_ID", "A")])),
        false,
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("Secret test/keys key AWS_SECRET_ACCESS_KEY") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test]
async fn cloudwatch_exchanges_a_web_identity_token_at_sts_once_and_signs_with_its_keys() {
    let dir = std::env::temp_dir().join(format!("serin-irsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.projected.token\n").unwrap();
    let mut sts = FakeApi::start(vec![
        Answer::with_type(
            200,
            "text/xml",
            r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:serin:serin</SubjectFromWebIdentityToken>
    <Credentials>
      <SessionToken>irsa-session-token</SessionToken>
      <SecretAccessKey>irsa-secret</SecretAccessKey>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
      <AccessKeyId>ASIAIRSA</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#,
        ),
        Answer::with_type(
            400,
            "text/xml",
            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve verification key from your identity provider</Message></Error></ErrorResponse>"#,
        ),
    ])
    .await;
    let answer = r#"{"MetricDataResults":[{"Id":"e1","Timestamps":[1700000000],"Values":[1.0]}]}"#;
    let mut api = fake_cloudwatch(
        vec![(
            "ASIAIRSA".into(),
            "irsa-secret".into(),
            Some("irsa-session-token".into()),
        )],
        REGION,
        vec![Answer::json(200, answer), Answer::json(200, answer)],
    )
    .await;
    let vars = BTreeMap::from([
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.to_str().unwrap().to_string(),
        ),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/serin".to_string(),
        ),
        ("AWS_ENDPOINT_URL_STS", sts.address.clone()),
    ]);
    let env = move |k: &str| vars.get(k).cloned();
    let cw = CloudWatchProvider::new(Some(REGION), Some(&api.address), None, false, &env).unwrap();
    for _ in 0..2 {
        let observed = ask(&cw, QUERY).await.unwrap();
        assert_eq!(observed.value, Some(1.0));
        api.next().await;
    }
    // One exchange: the keys are kept until shortly before they expire (a second exchange
    // would have got STS's scripted error below and failed the second query).
    let seen = sts.next().await;
    let form: BTreeMap<String, String> = seen
        .body
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        form.get("Action").map(String::as_str),
        Some("AssumeRoleWithWebIdentity")
    );
    assert_eq!(
        form.get("WebIdentityToken").map(String::as_str),
        Some("eyJhbGciOiJSUzI1NiJ9.projected.token")
    );
    // A token STS refuses: its code and message, for a fresh provider.
    let cw = CloudWatchProvider::new(Some(REGION), Some(&api.address), None, false, &env).unwrap();
    let err = ask(&cw, QUERY).await.unwrap_err().to_string();
    assert!(
        err.contains("InvalidIdentityToken") && err.contains("Couldn't retrieve verification key"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const ROLE_ANSWER: &str = r#"{"Code":"Success","LastUpdated":"2026-12-07T03:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIANODE","SecretAccessKey":"node-secret","Token":"node-token","Expiration":"2099-01-01T00:00:00Z"}"#;

fn node_keys() -> Vec<(String, String, Option<String>)> {
    vec![(
        "ASIANODE".into(),
        "node-secret".into(),
        Some("node-token".into()),
    )]
}

#[tokio::test]
async fn cloudwatch_fetches_container_credentials_with_the_agents_token_once() {
    let dir = std::env::temp_dir().join(format!("serin-pod-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("eks-pod-identity-token");
    std::fs::write(&token_file, "pod-identity-token\n").unwrap();
    // A second fetch would get the 500 and fail the second query.
    let mut agent = FakeApi::start(vec![
        Answer::json(200, ROLE_ANSWER),
        Answer::with_type(500, "text/plain", "fetched twice"),
    ])
    .await;
    let answer = r#"{"MetricDataResults":[{"Id":"e1","Timestamps":[1700000000],"Values":[2.0]}]}"#;
    let mut api = fake_cloudwatch(
        node_keys(),
        REGION,
        vec![Answer::json(200, answer), Answer::json(200, answer)],
    )
    .await;
    let vars = BTreeMap::from([
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v1/credentials", agent.address),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().unwrap().to_string(),
        ),
    ]);
    let env = move |k: &str| vars.get(k).cloned();
    let cw = CloudWatchProvider::new(Some(REGION), Some(&api.address), None, false, &env).unwrap();
    for _ in 0..2 {
        assert_eq!(ask(&cw, QUERY).await.unwrap().value, Some(2.0));
        api.next().await;
    }
    let seen = agent.next().await;
    assert_eq!(seen.path, "/v1/credentials");
    assert_eq!(seen.header("authorization"), Some("pod-identity-token"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn cloudwatch_falls_back_to_the_instance_role_from_imdsv2() {
    // IMDSv2 as EC2 serves it: a session token from PUT, then the role's name and its keys,
    // each only with that token.
    let mut imds = FakeApi::serve(|req| {
        let token = req.header("x-aws-ec2-metadata-token") == Some("imds-session");
        match (req.method.as_str(), req.path.as_str(), token) {
            ("PUT", "/latest/api/token", _)
                if req.header("x-aws-ec2-metadata-token-ttl-seconds").is_some() =>
            {
                Answer::with_type(200, "text/plain", "imds-session")
            }
            ("GET", "/latest/meta-data/iam/security-credentials/", true) => {
                Answer::with_type(200, "text/plain", "serin-node-role")
            }
            ("GET", "/latest/meta-data/iam/security-credentials/serin-node-role", true) => {
                Answer::with_type(200, "text/plain", ROLE_ANSWER)
            }
            (_, _, false) => Answer::with_type(401, "text/plain", ""),
            _ => Answer::with_type(404, "text/plain", "Not Found"),
        }
    })
    .await;
    let mut api = fake_cloudwatch(
        node_keys(),
        REGION,
        vec![Answer::json(
            200,
            r#"{"MetricDataResults":[{"Id":"e1","Timestamps":[1700000000],"Values":[4.0]}]}"#,
        )],
    )
    .await;
    let endpoint = imds.address.clone();
    let env = move |k: &str| (k == "AWS_EC2_METADATA_SERVICE_ENDPOINT").then(|| endpoint.clone());
    let cw = CloudWatchProvider::new(Some(REGION), Some(&api.address), None, false, &env).unwrap();
    assert_eq!(ask(&cw, QUERY).await.unwrap().value, Some(4.0));
    api.next().await;
    for expected in [
        "/latest/api/token",
        "/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/iam/security-credentials/serin-node-role",
    ] {
        assert_eq!(imds.next().await.path, expected);
    }

    // Off EC2 (here: a metadata service without a role), the error names every source.
    let nothing = FakeApi::start(vec![Answer::with_type(404, "text/plain", "Not Found")]).await;
    let endpoint = nothing.address.clone();
    let env = move |k: &str| (k == "AWS_EC2_METADATA_SERVICE_ENDPOINT").then(|| endpoint.clone());
    let cw = CloudWatchProvider::new(Some(REGION), Some(&api.address), None, false, &env).unwrap();
    let err = ask(&cw, QUERY).await.unwrap_err().to_string();
    assert!(
        err.contains("no AWS credentials found")
            && err.contains("404")
            && err.contains("AWS_WEB_IDENTITY_TOKEN_FILE")
            && err.contains("spec.provider.secretRef"),
        "{err}"
    );
}

// ---- Splunk (SignalFlow) ----

const PROGRAM: &str = "data('request.errors', filter=filter('app', 'podinfo')).sum().publish()";

fn splunk(address: &str, token: &str) -> SplunkProvider {
    SplunkProvider::new(
        Some(address),
        Some(&secret(&[("sf_token_key", token)])),
        false,
    )
    .unwrap()
}

const START: (&str, &str) = (
    "control-message",
    r#"{"event":"STREAM_START","timestampMs":1700000000000}"#,
);
const JOB: (&str, &str) = (
    "control-message",
    r#"{"event":"JOB_START","handle":"E1x2oN3AwAA","timestampMs":1700000000010}"#,
);
const RESOLUTION: (&str, &str) = (
    "message",
    r#"{"logicalTimestampMs":1699999400000,"message":{"messageCode":"JOB_RUNNING_RESOLUTION","messageLevel":"INFO","numInputTimeSeries":0,"timestampMs":1700000000020,"contents":{"resolutionMs":60000}}}"#,
);
const METADATA: (&str, &str) = (
    "metadata",
    r#"{"tsId":"AAAAAKQ1vbI","properties":{"sf_metric":"request.errors","sf_resolutionMs":60000,"sf_isPreQuantized":true,"sf_type":"MetricTimeSeries","sf_key":["sf_metric"],"sf_singletonFixedDimensions":["sf_metric"]}}"#,
);
const END: (&str, &str) = (
    "control-message",
    r#"{"event":"END_OF_CHANNEL","timestampMs":1700000000500}"#,
);

fn data(ts: u64, points: &str) -> String {
    format!(r#"{{"logicalTimestampMs":{ts},"maxDelayMs":2000,"data":[{points}]}}"#)
}

#[tokio::test]
async fn splunk_runs_the_program_over_ten_intervals_and_takes_the_last_value() {
    let d1 = data(1699999940000, r#"{"tsId":"AAAAAKQ1vbI","value":4}"#);
    let d2 = data(1700000000000, r#"{"tsId":"AAAAAKQ1vbI","value":2.5}"#);
    let d3 = data(1700000060000, r#"{"tsId":"AAAAAKQ1vbI","value":null}"#);
    let mut api = FakeApi::start(vec![Answer::event_stream(
        &[
            START,
            JOB,
            RESOLUTION,
            METADATA,
            ("data", &d1),
            ("data", &d2),
            ("data", &d3),
            END,
        ],
        StreamEnd::Close,
    )])
    .await;
    let sf = splunk(&api.address, "org-token\n");
    let observed = ask(&sf, PROGRAM).await.unwrap();
    assert_eq!(observed.value, Some(2.5), "the last non-null value");
    let seen = api.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/v2/signalflow/execute")
    );
    assert_eq!(seen.header("x-sf-token"), Some("org-token"));
    assert_eq!(seen.body, PROGRAM);
    assert_eq!(seen.param("immediate").as_deref(), Some("true"));
    let ms = |k: &str| seen.param(k).unwrap().parse::<u64>().unwrap();
    assert_eq!(ms("stop") - ms("start"), 600_000, "ten 60s intervals");
}

#[tokio::test]
async fn splunk_without_datapoints_is_no_data_and_two_series_are_an_error() {
    let no_match = (
        "message",
        r#"{"logicalTimestampMs":1699999400000,"message":{"messageCode":"FIND_MATCHED_NO_TIMESERIES","messageLevel":"WARNING","timestampMs":1700000000020,"contents":{"query":"( sf_metric:request.errors ) AND ( app:podinfo )"}}}"#,
    );
    let nulls = data(1700000000000, r#"{"tsId":"AAAAAKQ1vbI","value":null}"#);
    let two = data(
        1700000000000,
        r#"{"tsId":"AAAAAKQ1vbI","value":1},{"tsId":"AAAAAJ3xk0E","value":2}"#,
    );
    let mut api = FakeApi::start(vec![
        Answer::event_stream(&[START, JOB, no_match, END], StreamEnd::Close),
        Answer::event_stream(
            &[START, JOB, METADATA, ("data", &nulls), END],
            StreamEnd::Close,
        ),
        Answer::event_stream(&[START, JOB, ("data", &two), END], StreamEnd::Close),
    ])
    .await;
    let sf = splunk(&api.address, "t");
    for _ in 0..2 {
        let observed = ask(&sf, PROGRAM).await.unwrap();
        assert_eq!(observed.value, None);
        api.next().await;
    }
    let err = ask(&sf, PROGRAM).await.unwrap_err().to_string();
    assert!(err.contains("2 time series"), "{err}");
}

#[tokio::test]
async fn splunk_errors_a_rejected_token_a_failed_program_an_abort_and_a_cut_stream() {
    let d = data(1700000000000, r#"{"tsId":"AAAAAKQ1vbI","value":1}"#);
    let mut api = FakeApi::start(vec![
        Answer::json(401, r#"{"code":401,"message":"Unauthorized: invalid or expired token"}"#),
        Answer::event_stream(
            &[
                START,
                (
                    "error",
                    r#"{"errors":[{"code":"ANALYTICS_PROGRAM_NAME_ERROR","context":{"line":1,"column":1,"programText":"dat('x')"}}]}"#,
                ),
            ],
            StreamEnd::Close,
        ),
        Answer::event_stream(
            &[
                START,
                JOB,
                (
                    "control-message",
                    r#"{"event":"CHANNEL_ABORT","timestampMs":1700000000100,"abortInfo":{"sf_job_abortReason":"Job stopped: exceeded the maximum number of input time series","sf_job_abortState":"ABORTED"}}"#,
                ),
            ],
            StreamEnd::Close,
        ),
        // Cut mid-way: a datapoint arrived, then the connection broke.
        Answer::event_stream(&[START, JOB, ("data", &d)], StreamEnd::Cut),
        // Ended without END_OF_CHANNEL.
        Answer::event_stream(&[START, JOB, ("data", &d)], StreamEnd::Close),
    ])
    .await;
    let sf = splunk(&api.address, "bad");
    let mut next_error = async || {
        let e = ask(&sf, PROGRAM).await.unwrap_err();
        api.next().await;
        e
    };
    let err = next_error().await.to_string();
    assert!(
        err.contains("HTTP 401 Unauthorized: Unauthorized: invalid or expired token"),
        "{err}"
    );
    let err = next_error().await.to_string();
    assert!(
        err.contains("the program failed") && err.contains("ANALYTICS_PROGRAM_NAME_ERROR"),
        "{err}"
    );
    let err = next_error().await.to_string();
    assert!(
        err.contains("aborted") && err.contains("exceeded the maximum number"),
        "{err}"
    );
    let err = next_error().await;
    assert!(
        matches!(err, AnalysisError::Unavailable { .. }),
        "a broken body is a transport error, never a value: {err:?}"
    );
    let err = next_error().await.to_string();
    assert!(
        err.contains("before the computation's END_OF_CHANNEL"),
        "{err}"
    );
}

#[tokio::test]
async fn splunk_a_stream_that_stops_talking_times_out_after_flaggers_5s() {
    let mut api = FakeApi::start(vec![Answer::event_stream(&[START, JOB], StreamEnd::Hang)]).await;
    let sf = splunk(&api.address, "t");
    let err = ask(&sf, PROGRAM).await.unwrap_err();
    assert!(matches!(err, AnalysisError::Timeout { .. }), "{err:?}");
    api.next().await;
}

#[test]
fn splunk_needs_an_address_and_the_sf_token_key() {
    let err = SplunkProvider::new(None, Some(&secret(&[("sf_token_key", "t")])), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.provider.address"), "{err}");
    let err = SplunkProvider::new(
        Some("https://api.us1.signalfx.com"),
        Some(&secret(&[("token", "t")])),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("Secret test/keys key sf_token_key") && err.contains("missing"),
        "{err}"
    );
    let err = SplunkProvider::new(Some("https://api.us1.signalfx.com"), None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.provider.secretRef") && err.contains("sf_token_key"),
        "{err}"
    );
}

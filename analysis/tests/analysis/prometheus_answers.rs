//! The awkward answers users of a real Prometheus meet, from Debian's `prometheus` (started on a
//! loopback port it binds itself) or, for what a healthy Prometheus never does (hang, 503 while
//! restarting, redirect), from a loopback stand-in: no traffic yet (an empty vector), 0/0 (NaN),
//! +Inf, several series, a range vector or a string, a PromQL syntax error, Prometheus behind a
//! proxy's path prefix, and credentials missing from the Secret or written into the address.
//! Each is no data, a value, or an error that names what to fix, never a pass by accident, a
//! hang or a leaked secret.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serin_analysis::testing::{
    Answer, FakeApi, PrometheusOptions, StreamEnd, eventually, start_prometheus_with,
};
use serin_analysis::*;

/// A provider for `address` once the availability probe passes.
async fn connected(address: &str) -> PrometheusProvider {
    let config = PrometheusConfig::new(address, Mesh::Serin);
    eventually(
        "Prometheus to answer the availability probe",
        Duration::from_secs(60),
        || {
            let config = config.clone();
            async move { PrometheusProvider::connect(config).await.ok() }
        },
    )
    .await
}

fn template_check(query: &str, min: Option<f64>, max: Option<f64>) -> MetricCheck {
    MetricCheck::from_spec(
        "spec.analysis.metrics[0]",
        &MetricSpec {
            name: "errors".into(),
            interval: Some("1m".into()),
            threshold_range: Some(ThresholdRange { min, max }),
            template_query: Some(query.into()),
            ..MetricSpec::default()
        },
    )
    .expect("a valid check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_answers_are_no_data_values_or_errors_naming_the_query() {
    let prometheus = start_prometheus_with(PrometheusOptions::default()).await;
    let p = connected(&prometheus.address).await;

    // No traffic yet: an empty vector is no data.
    assert_eq!(p.scalar("serin_no_such_metric").await.unwrap(), None);
    // 0/0 (a rate over a window without requests) is NaN: no data, as a vector and as a scalar.
    assert_eq!(p.scalar("vector(0) / vector(0)").await.unwrap(), None);
    assert_eq!(
        p.scalar("scalar(vector(0) / vector(0))").await.unwrap(),
        None
    );
    // +Inf (histogram_quantile above the last finite bucket) is a value, never within a range.
    let inf = p.scalar("vector(1) / vector(0)").await.unwrap();
    assert_eq!(inf, Some(f64::INFINITY));
    let target = Target::flagger("podinfo", "test", "podinfo", None);
    for (min, max) in [(None, Some(500.0)), (Some(99.0), None)] {
        let r = run_check(
            &p,
            &template_check("vector(1) / vector(0)", min, max),
            &target,
            &NoDataConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }
    // Several series where one was expected (a query without its `sum`): the last one
    // Prometheus returns is used, as Flagger does (it reads every series and keeps the last),
    // so a migrated query keeps its verdict. `or` returns its left side first.
    let several = p
        .scalar(r#"label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")"#)
        .await
        .unwrap();
    assert_eq!(several, Some(2.0));

    // A range vector cannot be compared with a threshold: an error saying so.
    let err = p.scalar("vector(1)[5m:1m]").await.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
    assert!(err.to_string().contains("range vector"), "{err}");
    // So is a string: named as an answer of the wrong type for that query, not as Prometheus
    // being unavailable (it answered).
    let err = p.scalar(r#""serin""#).await.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
    let text = err.to_string();
    assert!(
        text.contains(r#"`"serin"`"#) && text.contains("string"),
        "{text}"
    );
    // A syntax error: Prometheus' own message (400, errorType bad_data) and the query.
    let err = p.scalar("sum(rate(requests_total[1m])").await.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("parse error") && text.contains("sum(rate(requests_total[1m])"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_behind_a_path_prefix_is_reached_with_or_without_a_trailing_slash() {
    let prometheus = start_prometheus_with(PrometheusOptions {
        args: vec!["--web.route-prefix=/prometheus".into()],
        ..PrometheusOptions::default()
    })
    .await;
    for address in [
        format!("{}/prometheus", prometheus.address),
        format!("{}/prometheus/", prometheus.address),
    ] {
        let p = connected(&address).await;
        assert_eq!(p.scalar("vector(3)").await.unwrap(), Some(3.0), "{address}");
    }
    // Without the prefix: no Prometheus API there, said so.
    let err = PrometheusProvider::connect(PrometheusConfig::new(
        prometheus.address.clone(),
        Mesh::Serin,
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("404") && err.contains("provider.address"),
        "{err}"
    );
}

/// Prometheus' success answer to `vector(1)`.
fn one() -> Answer {
    Answer::json(
        200,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"1"]}]}}"#,
    )
}

#[tokio::test]
async fn a_hanging_prometheus_times_out_and_a_restarting_one_says_503() {
    // Headers sent, body never finished: the timeout ends the query.
    let hang = Answer {
        status: 200,
        content_type: "application/json",
        body: String::new(),
        stream: Some((vec![r#"{"status":"success","#.into()], StreamEnd::Hang)),
        headers: Vec::new(),
    };
    let fake = FakeApi::start(vec![hang]).await;
    let mut config = PrometheusConfig::new(fake.address.clone(), Mesh::Serin);
    config.timeout = Duration::from_secs(1);
    let p = PrometheusProvider::new(config).unwrap();
    let started = Instant::now();
    let err = p.scalar("vector(1)").await.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");

    // A Prometheus restarting behind its Service answers 503 in plain text (twice: the query,
    // then the provider's second look for the status).
    let unavailable = || Answer::with_type(503, "text/plain", "Service Unavailable");
    let fake = FakeApi::start(vec![unavailable(), unavailable(), one()]).await;
    let p =
        PrometheusProvider::new(PrometheusConfig::new(fake.address.clone(), Mesh::Serin)).unwrap();
    let err = p.scalar("vector(1)").await.unwrap_err();
    assert_eq!(err.kind(), "unavailable", "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    // ... and is used again as soon as it is back.
    assert_eq!(p.scalar("vector(1)").await.unwrap(), Some(1.0));

    // An authenticating proxy in front of Prometheus answers its login page (after a
    // redirect): named as not the Prometheus API, with where the answer came from.
    let login = || Answer::with_type(200, "text/html; charset=utf-8", "<html>Sign in</html>");
    let fake = FakeApi::start(vec![login(), login()]).await;
    let p =
        PrometheusProvider::new(PrometheusConfig::new(fake.address.clone(), Mesh::Serin)).unwrap();
    let err = p.scalar("vector(1)").await.unwrap_err().to_string();
    assert!(
        err.contains("text/html") && err.contains("not the Prometheus API"),
        "{err}"
    );
}

fn secret(pairs: &[(&str, &str)]) -> Credentials {
    Credentials {
        secret: "test/prom-auth".into(),
        data: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// The template client the registry builds for `settings`.
fn build(
    settings: &ProviderSettings,
) -> Result<std::sync::Arc<dyn TemplateProvider>, AnalysisError> {
    ProviderRegistry::new().provider("test/prometheus", settings)
}

fn prometheus_settings(address: &str, credentials: Option<Credentials>) -> ProviderSettings {
    ProviderSettings {
        type_: "prometheus".into(),
        address: Some(address.into()),
        credentials,
        ..ProviderSettings::default()
    }
}

#[tokio::test]
async fn a_secret_missing_a_key_names_it_and_no_error_shows_a_password() {
    // Basic auth with the password key missing (or the username): the missing key is named.
    for (pairs, missing) in [
        (vec![("username", "serin")], "password"),
        (vec![("password", "hunter2")], "username"),
    ] {
        let err = build(&prometheus_settings(
            "http://127.0.0.1:9",
            Some(secret(&pairs)),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("test/prom-auth") && err.contains(&format!("key {missing}")),
            "{missing}: {err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    // A token pasted with a line break inside: the Secret and the key are named, not the value.
    let err = build(&prometheus_settings(
        "http://127.0.0.1:9",
        Some(secret(&[("token", "hunter2\nsecond-line\n")])),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("Secret test/prom-auth key token") && err.contains("line break"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    // Credentials written into the address (Go's clients, and so Flagger, accept them) are
    // used, and never shown: not in errors, not in Debug.
    let fake = FakeApi::start(vec![one()]).await;
    let with_password = fake.address.replace("http://", "http://serin:hunter2@");
    let mut fake = fake;
    let p = build(&prometheus_settings(&with_password, None)).unwrap();
    assert!(!format!("{p:?}").contains("hunter2"), "{p:?}");
    p.query("vector(1)", Duration::from_secs(60)).await.unwrap();
    let seen = fake.next().await;
    assert_eq!(
        seen.header("authorization"),
        Some("Basic c2VyaW46aHVudGVyMg=="),
        "{seen:?}"
    );
    // The fake's script is exhausted: every further query fails; the error keeps the address
    // but not its password.
    let err = p
        .query("vector(1)", Duration::from_secs(60))
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
    // An unreachable address with a password: the transport error does not show it either.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let p = build(&prometheus_settings(
        &format!("http://serin:hunter2@127.0.0.1:{port}"),
        None,
    ))
    .unwrap();
    let err = p
        .query("vector(1)", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test]
async fn every_value_of_a_repeated_header_reaches_prometheus_and_debug_shows_no_value() {
    // Flagger's map form `headers: {X-Scope-OrgID: [team-a, team-b]}` gives two pairs.
    let mut fake = FakeApi::start(vec![one()]).await;
    let mut config = PrometheusConfig::new(fake.address.clone(), Mesh::Serin);
    config.headers = vec![
        ("X-Scope-OrgID".into(), "team-a".into()),
        ("X-Scope-OrgID".into(), "team-b".into()),
        ("Authorization".into(), "Bearer hunter2".into()),
    ];
    let p = PrometheusProvider::new(config).unwrap();
    assert_eq!(p.scalar("vector(1)").await.unwrap(), Some(1.0));
    let seen = fake.next().await;
    let values: Vec<_> = seen
        .headers
        .get_all("x-scope-orgid")
        .iter()
        .map(|v| v.to_str().unwrap_or_default())
        .collect();
    assert_eq!(values, ["team-a", "team-b"], "{seen:?}");
    // A header is where many put a token: Debug names the headers, never their values.
    let debug = format!("{p:?}");
    assert!(
        debug.contains("X-Scope-OrgID") && !debug.contains("hunter2") && !debug.contains("team-a"),
        "{debug}"
    );
}

#[tokio::test]
async fn a_redirect_behind_a_proxy_is_followed_with_the_credentials() {
    // A proxy that moved Prometheus to another path on the same host answers 307.
    let mut fake = FakeApi::start(vec![
        Answer {
            headers: vec![(
                "location",
                "/moved/api/v1/query?query=vector%281%29".to_string(),
            )],
            ..Answer::with_type(307, "text/plain", "moved")
        },
        one(),
    ])
    .await;
    let mut config = PrometheusConfig::new(fake.address.clone(), Mesh::Serin);
    config.auth = Some(PrometheusAuth::Bearer {
        token: "tenant-token".into(),
    });
    let p = PrometheusProvider::new(config).unwrap();
    assert_eq!(p.scalar("vector(1)").await.unwrap(), Some(1.0));
    let first = fake.next().await;
    let second = fake.next().await;
    assert_eq!(first.path, "/api/v1/query");
    assert_eq!(second.path, "/moved/api/v1/query");
    // Same host: the credentials go along (a redirect to another host would drop them).
    assert_eq!(second.header("authorization"), Some("Bearer tenant-token"));
}

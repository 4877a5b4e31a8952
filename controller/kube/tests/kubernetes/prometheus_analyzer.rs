//! The Kubernetes analyzer against a real Prometheus (Debian's `prometheus`, installed by
//! `.ci/run`), started on a free loopback port by `serin_analysis::testing` and scraping an
//! exporter of serin-proxy and Linkerd metric names. Only the Kubernetes API server is mocked
//! (MetricTemplate and Secret reads, asserted in order).
//!
//! Covered end to end: the built-in `request-success-rate` and `request-duration` for providers
//! `serin` and `linkerd`, a MetricTemplate query, the judge continuing its sequential test from
//! a saved state after a restart, and a template's `secretRef` (basic auth), `insecureSkipVerify`
//! (Prometheus serving HTTPS with a self-signed certificate), headers and bearer token.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use serin_analysis::testing::{
    PrometheusOptions, eventually, start_exporter, start_prometheus, start_prometheus_with,
};
use serin_analysis::{
    BuiltinMetric, Mesh, MetricsProvider, PrometheusAuth, PrometheusConfig, PrometheusProvider,
    Target,
};
use serin_api::Canary;
use serin_controller::adapters::{AnalysisState, Analyzer, CanaryContext};
use serin_core::sim::Sim;
use serin_core::{CheckResult, Phase, Status, Timestamp, Verdict};
use serin_kube::analysis::PrometheusAnalyzer;
use serin_kube::testing::{Expect, expect, mock_client, play, scenario};

const NS: &str = "test";
const PASSWORD: &str = "serin-test-password";
/// bcrypt (cost 4) of [`PASSWORD`], for Prometheus' `basic_auth_users`.
const PASSWORD_HASH: &str = "$2b$04$jRCNF/O4BLri.5/TVuotIO6T1mAmnRqqoXeV6LA0MIM9Q9s3lwgw2";

fn canary(provider: &str, metrics_server: &str, metrics: Value, judge: bool) -> Canary {
    let mut analysis = json!({
        "interval": "1m", "threshold": 2, "maxWeight": 50, "stepWeight": 10, "metrics": metrics
    });
    if judge {
        analysis["judge"] = json!({"enabled": true, "alpha": 0.01, "minRequests": 100});
    }
    serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "provider": provider,
            "metricsServer": metrics_server,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": analysis
        }
    }))
    .unwrap()
}

fn context(c: &Canary) -> CanaryContext {
    serin_controller::plan::context(NS, c).unwrap().1
}

/// A status in the middle of a run that started a minute ago (the judge reads since then).
fn progressing(ctx: &CanaryContext) -> Status {
    let mut sim = Sim::new(
        ctx.plan.clone(),
        "rev-1",
        Timestamp::from_millis(1_700_000_000_000),
    );
    sim.world.checks = ctx
        .plan
        .checks
        .iter()
        .map(|name| CheckResult {
            name: name.clone(),
            verdict: Verdict::Pass,
            value: None,
            bound: Default::default(),
            samples: None,
            detail: String::new(),
        })
        .collect();
    assert!(sim.tick_until(10, |s| s.phase == Phase::Initialized));
    sim.deploy("rev-2");
    assert!(sim.tick_until(10, |s| s.phase == Phase::Progressing));
    let mut status = sim.status.clone();
    status.run.as_mut().unwrap().started_at =
        Timestamp::from_system_time(SystemTime::now() - Duration::from_secs(60));
    status
}

fn template(name: &str, provider: Value, query: &str) -> Value {
    json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"provider": provider, "query": query}
    })
}

fn get_template(body: Value) -> Expect {
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    expect(
        "GET",
        format!("/apis/serin.dev/v1beta1/namespaces/{NS}/metrictemplates/{name}"),
    )
    .reply(200, body)
}

fn get_secret(name: &str, data: &[(&str, &str)]) -> Expect {
    serin_kube::testing::get_secret_answered(NS, name, data)
}

/// Runs one round of checks with a fresh analyzer (a fresh controller process) whose API
/// server answers exactly `calls`.
async fn checks(
    ctx: &CanaryContext,
    status: &Status,
    saved: Option<&AnalysisState>,
    calls: Vec<Expect>,
) -> (Vec<CheckResult>, Option<AnalysisState>) {
    let checked = scenario(NS, Duration::from_secs(30), calls, async |client| {
        PrometheusAnalyzer::new(client, None, "serin".into())
            .run_checks_from(ctx, status, saved)
            .await
    })
    .await
    .expect("the analyzer is usable");
    (checked.checks, checked.state)
}

fn by_name<'a>(results: &'a [CheckResult], name: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no {name} in {results:?}"))
}

/// Waits until Prometheus has enough samples for a 1m rate of both arms.
async fn wait_for_samples(config: PrometheusConfig) {
    let provider = eventually(
        "Prometheus to answer the availability probe",
        Duration::from_secs(60),
        || {
            let config = config.clone();
            async move { PrometheusProvider::connect(config).await.ok() }
        },
    )
    .await;
    let target = Target::flagger("podinfo", NS, "podinfo", Some("podinfo"));
    eventually("samples for a 1m rate", Duration::from_secs(60), || async {
        let o = provider
            .builtin(
                BuiltinMetric::RequestSuccessRate,
                &target,
                Duration::from_secs(60),
            )
            .await
            .ok()?;
        o.value.filter(|_| o.sample_size.unwrap_or(0) > 0)
    })
    .await;
}

const ERROR_RATE_QUERY: &str = "100 * sum(rate(response_total{namespace=\"{{ namespace }}\",deployment=\"{{ target }}\",direction=\"inbound\",classification=\"failure\"}[{{ interval }}])) / sum(rate(response_total{namespace=\"{{ namespace }}\",deployment=\"{{ target }}\",direction=\"inbound\"}[{{ interval }}]))";

fn ticking(exporter: serin_analysis::testing::Exporter) -> Arc<serin_analysis::testing::Exporter> {
    // Counters advance 100 requests per arm every 200 ms while the test runs.
    let exporter = Arc::new(exporter);
    let e = exporter.clone();
    tokio::spawn(async move {
        loop {
            e.tick(1);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    exporter
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_checks_a_template_and_the_judge_through_a_real_prometheus() {
    let exporter = ticking(start_exporter().await);
    let prometheus = start_prometheus(exporter.port).await;
    wait_for_samples(PrometheusConfig::new(
        prometheus.address.clone(),
        Mesh::Serin,
    ))
    .await;

    let metrics = json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
        {"name": "error-rate", "templateRef": {"name": "error-rate"}, "thresholdRange": {"max": 5}, "interval": "1m"}
    ]);
    let error_rate = template(
        "error-rate",
        json!({"type": "prometheus", "address": prometheus.address}),
        ERROR_RATE_QUERY,
    );
    for provider in ["serin", "linkerd"] {
        let ctx = context(&canary(
            provider,
            &prometheus.address,
            metrics.clone(),
            false,
        ));
        let (results, state) = checks(
            &ctx,
            &progressing(&ctx),
            Some(&AnalysisState::default()),
            vec![get_template(error_rate.clone())],
        )
        .await;
        assert_eq!(results.len(), 3, "{provider}: {results:?}");
        // The exporter's canary fails 2 of every 100 requests: below the 99% minimum.
        let sr = by_name(&results, "request-success-rate");
        assert_eq!(sr.verdict, Verdict::Fail, "{provider}: {sr:?}");
        assert!(
            (sr.value.unwrap() - 98.0).abs() < 1e-6,
            "{provider}: {sr:?}"
        );
        assert!(sr.samples.unwrap() > 0, "{provider}: {sr:?}");
        assert_eq!(sr.bound.min, Some(99.0));
        // p99 is exactly 20 ms by the exporter's buckets.
        let d = by_name(&results, "request-duration");
        assert_eq!(d.verdict, Verdict::Pass, "{provider}: {d:?}");
        assert!((d.value.unwrap() - 20.0).abs() < 0.5, "{provider}: {d:?}");
        // The template computes the same 2% error rate from Linkerd's inbound names.
        let t = by_name(&results, "error-rate");
        assert_eq!(t.verdict, Verdict::Pass, "{provider}: {t:?}");
        assert!((t.value.unwrap() - 2.0).abs() < 1e-6, "{provider}: {t:?}");
        assert_eq!(state, None, "no judge, no state");
    }

    // The judge: a first look from nothing, then a restarted controller (a new analyzer with
    // no memory) continues from the saved state instead of starting a new sequential test.
    let ctx = context(&canary("serin", &prometheus.address, json!([]), true));
    let status = progressing(&ctx);
    let run = status.run.as_ref().unwrap().id;
    let (results, first) = checks(&ctx, &status, Some(&AnalysisState::default()), vec![]).await;
    let judge = by_name(&results, "judge");
    assert!(judge.samples.unwrap() > 0, "{judge:?}");
    let first = first.expect("the judge's state to save");
    assert_eq!(first.run, run);
    let looks = |s: &AnalysisState| s.judge.as_ref().unwrap()["looks"].as_u64().unwrap();
    let canary_requests =
        |s: &AnalysisState| s.judge.as_ref().unwrap()["error"]["canaryRequests"].as_u64();
    assert_eq!(looks(&first), 1);
    // The same look feeds the history: both arms side by side for the charts, and the judge's
    // evidence (recorded by the driver as a Measured entry).
    {
        let (client, handle) = mock_client(NS);
        let server = tokio::spawn(play(handle, vec![]));
        let analyzer = PrometheusAnalyzer::new(client, None, "serin".into());
        analyzer
            .run_checks_from(&ctx, &status, Some(&AnalysisState::default()))
            .await
            .unwrap();
        let sample = analyzer
            .sample(&ctx, &status)
            .await
            .unwrap()
            .expect("a sample");
        assert!(
            sample.canary.requests > 0 && sample.primary.requests > 0,
            "{sample:?}"
        );
        assert!(sample.canary.success_rate.is_some(), "{sample:?}");
        let judge = sample.judge.expect("the judge's evidence");
        assert_eq!(judge.evidence[0].metric, "errorRate");
        assert!(judge.canary_requests > 0, "{judge:?}");
        // Taken once: the next tick without a judge look carries no stale evidence.
        let again = analyzer
            .sample(&ctx, &status)
            .await
            .unwrap()
            .expect("a sample");
        assert!(again.judge.is_none());
        server.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, second) = checks(&ctx, &status, Some(&first), vec![]).await;
    let second = second.unwrap();
    assert_eq!(
        looks(&second),
        2,
        "the restarted controller continued the test"
    );
    assert!(
        canary_requests(&second) >= canary_requests(&first),
        "{second:?} after {first:?}"
    );
    // Without the saved state (Flagger-style memory only), a new process starts over.
    let (_, fresh) = checks(&ctx, &status, Some(&AnalysisState::default()), vec![]).await;
    assert_eq!(looks(&fresh.unwrap()), 1);
    // A state saved for another run is not continued.
    let other = AnalysisState {
        run: run + 1,
        ..second.clone()
    };
    let (_, next) = checks(&ctx, &status, Some(&other), vec![]).await;
    assert_eq!(looks(&next.unwrap()), 1);
}

fn secured_web_config() -> PrometheusOptions {
    PrometheusOptions {
        scrape_targets: Vec::new(),
        web_config: Some(format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  serin: '{PASSWORD_HASH}'\n"
        )),
        files: vec![
            (
                "cert.pem".into(),
                include_bytes!("../fixtures/prometheus-cert.pem").to_vec(),
            ),
            (
                "key.pem".into(),
                include_bytes!("../fixtures/prometheus-key.pem").to_vec(),
            ),
        ],
        args: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templates_secret_and_insecure_skip_verify_reach_a_secured_prometheus() {
    let exporter = ticking(start_exporter().await);
    let mut options = secured_web_config();
    options.scrape_targets = vec![format!("127.0.0.1:{}", exporter.port)];
    let prometheus = start_prometheus_with(options).await;
    assert!(prometheus.address.starts_with("https://"));
    let mut direct = PrometheusConfig::new(prometheus.address.clone(), Mesh::Serin);
    direct.insecure_skip_verify = true;
    direct.auth = Some(PrometheusAuth::Basic {
        username: "serin".into(),
        password: PASSWORD.into(),
    });
    wait_for_samples(direct).await;

    let metrics = json!([
        {"name": "error-rate", "templateRef": {"name": "secured"}, "thresholdRange": {"max": 5}, "interval": "1m"}
    ]);
    // The Canary's own metricsServer is not the secured one: the template's address wins.
    let ctx = context(&canary("serin", "http://127.0.0.1:9", metrics, false));
    let status = progressing(&ctx);
    let secured = |insecure: bool| {
        template(
            "secured",
            json!({
                "type": "prometheus", "address": prometheus.address,
                "secretRef": {"name": "prom-auth"}, "insecureSkipVerify": insecure,
                "headers": [{"name": "X-Scope-OrgID", "value": "team-a"}]
            }),
            ERROR_RATE_QUERY,
        )
    };

    // Basic auth from the Secret, certificate not verified: measured.
    let (results, _) = checks(
        &ctx,
        &status,
        None,
        vec![
            get_template(secured(true)),
            get_secret(
                "prom-auth",
                &[("username", "serin"), ("password", PASSWORD)],
            ),
        ],
    )
    .await;
    let t = by_name(&results, "error-rate");
    assert_eq!(t.verdict, Verdict::Pass, "{t:?}");
    assert!((t.value.unwrap() - 2.0).abs() < 1e-6, "{t:?}");

    // A wrong password: Prometheus answers 401; never a pass.
    let (results, _) = checks(
        &ctx,
        &status,
        None,
        vec![
            get_template(secured(true)),
            get_secret("prom-auth", &[("username", "serin"), ("password", "wrong")]),
        ],
    )
    .await;
    let t = by_name(&results, "error-rate");
    assert_eq!(t.verdict, Verdict::Inconclusive, "{t:?}");
    assert!(
        t.detail.contains("401") && t.detail.contains("provider.secretRef"),
        "{t:?}"
    );

    // The certificate verified (insecureSkipVerify false): the self-signed certificate fails.
    let (results, _) = checks(
        &ctx,
        &status,
        None,
        vec![
            get_template(secured(false)),
            get_secret(
                "prom-auth",
                &[("username", "serin"), ("password", PASSWORD)],
            ),
        ],
    )
    .await;
    let t = by_name(&results, "error-rate");
    assert_eq!(t.verdict, Verdict::Inconclusive, "{t:?}");
    assert!(t.detail.to_lowercase().contains("certificate"), "{t:?}");

    // A Secret that is missing, or holds neither token nor username/password: named.
    let (results, _) = checks(
        &ctx,
        &status,
        None,
        vec![
            get_template(secured(true)),
            expect("GET", format!("/api/v1/namespaces/{NS}/secrets/prom-auth")).not_found(),
        ],
    )
    .await;
    let t = by_name(&results, "error-rate");
    assert_eq!(t.verdict, Verdict::Inconclusive);
    assert!(
        t.detail
            .contains("MetricTemplate test/secured spec.provider.secretRef")
            && t.detail.contains("does not exist"),
        "{t:?}"
    );
    let (results, _) = checks(
        &ctx,
        &status,
        None,
        vec![
            get_template(secured(true)),
            get_secret("prom-auth", &[("user", "serin")]),
        ],
    )
    .await;
    let t = by_name(&results, "error-rate");
    assert_eq!(t.verdict, Verdict::Inconclusive);
    assert!(
        t.detail
            .contains("neither a non-empty `token` nor `username` and `password`"),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templates_headers_and_bearer_token_are_sent_with_every_query() {
    // Prometheus itself checks neither headers nor bearer tokens: a recording receiver stands in
    // for a multi-tenant gateway in front of it.
    let mut gateway = common::receiver::receiver(vec![(200, Duration::ZERO)]).await;
    let metrics = json!([
        {"name": "error-rate", "templateRef": {"name": "tenant"}, "thresholdRange": {"max": 5}, "interval": "1m"}
    ]);
    let ctx = context(&canary("serin", "http://127.0.0.1:9", metrics, false));
    let status = progressing(&ctx);
    let tenant = template(
        "tenant",
        json!({
            "type": "prometheus", "address": format!("http://{}", gateway.addr),
            "secretRef": {"name": "mimir-token"},
            "headers": [{"name": "X-Scope-OrgID", "value": "team-a"}]
        }),
        ERROR_RATE_QUERY,
    );
    let (results, _) = checks(
        &ctx,
        &status,
        None,
        vec![
            get_template(tenant),
            get_secret("mimir-token", &[("token", "t0ken\n")]),
        ],
    )
    .await;
    let seen = common::receiver::next(&mut gateway).await;
    assert_eq!(seen.headers["x-scope-orgid"], "team-a");
    assert_eq!(seen.headers["authorization"], "Bearer t0ken");
    assert!(seen.path.starts_with("/api/v1/query"), "{}", seen.path);
    // The receiver's answer is no Prometheus response: unmeasured, never a pass.
    assert_eq!(
        by_name(&results, "error-rate").verdict,
        Verdict::Inconclusive
    );
}

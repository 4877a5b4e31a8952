//! [`LocalAnalyzer`]: the local [`Analyzer`]. It measures with `serin-analysis` from the proxies'
//! own `/metrics` (the embedded default: no Prometheus needed) or from a Prometheus given with
//! `--metrics-server`: Flagger's built-in checks, inline queries (Prometheus only),
//! `MetricTemplate`s read from the manifest directory (run by the template's provider from
//! `serin_analysis`'s shared registry, with `secretRef` naming a `kind: Secret` document of the
//! same directory; a Prometheus template without an address runs on the controller's
//! `--metrics-server`, and with the proxies alone it is inconclusive with an error naming the
//! field and both ways to fix it), and the statistical judge when the Canary turns it on.
//!
//! The judge's sequential state lives in memory per run; after a controller restart it starts a
//! fresh sequence for the same run, which is still valid at `alpha` (it only forgets earlier
//! looks).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serin_analysis::{
    AnalysisError, ArmRole, ArmTraffic, BoxFuture, BuiltinMetric, Credentials, MetricCheck,
    MetricsProvider, Observed, ProviderRegistry, ProviderSettings, Target, TemplateProvider,
    run_check, run_template_check,
};
use serin_api::MetricSource;
use serin_core::{Bound, CheckResult, Status};

use serin_controller::adapters::{AdapterError, Analyzer, CanaryContext, ErrorKind};
use serin_controller::measure::{
    Judges, at_weight, check_result, inconclusive, judge_config, metric_spec, no_data, verdict,
};
use serin_controller::plan::JUDGE_CHECK;
use serin_controller::sample::{LastJudge, measure};

/// Measures every check of a Canary through one metrics provider.
pub struct LocalAnalyzer {
    provider: Arc<dyn MetricsProvider>,
    /// `MetricTemplate`s of the manifest directory by `namespace/name` (replaced on reload).
    templates: std::sync::RwLock<BTreeMap<String, serin_api::MetricTemplate>>,
    /// `Secret`s of the manifest directory by `namespace/name` (what `secretRef`s name).
    secrets: std::sync::RwLock<BTreeMap<String, BTreeMap<String, String>>>,
    /// Clients for templates with their own provider (the registry every platform shares).
    registry: ProviderRegistry,
    judges: Judges,
    last_judge: LastJudge,
}

impl LocalAnalyzer {
    /// Measures through `provider` (a proxy scrape or a Prometheus).
    pub fn new(provider: Arc<dyn MetricsProvider>) -> Self {
        Self {
            provider,
            templates: Default::default(),
            secrets: Default::default(),
            registry: ProviderRegistry::new(),
            judges: Judges::default(),
            last_judge: LastJudge::default(),
        }
    }
}

impl LocalAnalyzer {
    /// Replaces the known `MetricTemplate`s (`namespace/name` keys), after a manifest reload.
    pub fn set_templates(&self, templates: BTreeMap<String, serin_api::MetricTemplate>) {
        *self.templates.write().unwrap_or_else(|p| p.into_inner()) = templates;
    }

    /// Replaces the known `Secret`s (`namespace/name` keys, decoded data), after a reload.
    pub fn set_secrets(&self, secrets: BTreeMap<String, BTreeMap<String, String>>) {
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = secrets;
    }

    /// Resolves `field`'s `templateRef`: the template's query, and the template's own provider
    /// (from the shared registry) unless it is a Prometheus template without an address, which
    /// runs on the controller's provider. Errors name the field and what is accepted.
    fn template(
        &self,
        field: &str,
        namespace: &str,
        r: &serin_api::CrossNamespaceObjectReference,
    ) -> Result<(String, Option<Arc<dyn TemplateProvider>>), String> {
        let tns = r.namespace.as_deref().unwrap_or(namespace);
        let key = format!("{tns}/{}", r.name);
        let template = self
            .templates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{field}.templateRef: MetricTemplate {key} is not in the manifest directory (the local controller reads MetricTemplates from the same directory as the Canary)"
                )
            })?;
        let p = &template.spec.provider;
        if let Some(why) = serin_api::support::metric_provider_not_queried(&p.type_) {
            return Err(format!("MetricTemplate {key} spec.provider.type: {why}"));
        }
        let query = template.spec.query.clone();
        let mut address = p.address.clone();
        if p.type_ == "prometheus" && address.is_none() {
            if self.provider.kind() == PROXY_SCRAPE {
                return Err(format!(
                    "{field}.templateRef {key}: a MetricTemplate query needs a Prometheus: start the controller with --metrics-server URL or set the template's spec.provider.address (the proxies' own /metrics answer only the built-in request-success-rate and request-duration)"
                ));
            }
            // The controller's Prometheus as it is, unless the template says how to reach it:
            // then a client of its own on that address, as on Kubernetes (its Secret, headers
            // and TLS setting were silently dropped before).
            if p.secret_ref.is_none() && p.headers.pairs().is_empty() && !p.insecure_skip_verify {
                return Ok((query, None));
            }
            address = self.provider.prometheus_address().map(str::to_string);
        }
        // Locally a `secretRef` names a `kind: Secret` document of the manifest directory.
        let credentials = match &p.secret_ref {
            None => None,
            Some(sref) => {
                let skey = format!("{tns}/{}", sref.name);
                let data = self
                    .secrets
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&skey)
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "MetricTemplate {key} spec.provider.secretRef: Secret {skey} is not in the manifest directory (locally, put the `apiVersion: v1, kind: Secret` document beside the MetricTemplate)"
                        )
                    })?;
                Some(Credentials { secret: skey, data })
            }
        };
        let settings = ProviderSettings {
            type_: p.type_.clone(),
            address,
            credentials,
            headers: p.headers.pairs(),
            insecure_skip_verify: p.insecure_skip_verify,
            region: p.region.clone(),
        };
        let provider = self
            .registry
            .provider(&key, &settings)
            .map_err(|e| format!("MetricTemplate {key} {e}"))?;
        Ok((query, Some(provider)))
    }
}

/// The `kind()` of the proxy-scrape provider.
const PROXY_SCRAPE: &str = "proxy-scrape";

/// Built-in checks read from the proxies' counters since a wall-clock instant (the later of the
/// run's start and one metric interval ago) rather than over a window ending now.
///
/// Why: scrape snapshots exist only when someone scraped, and a window's base is the newest
/// snapshot before the window starts, which after a quiet spell (a rolled-back run, no checks)
/// lies before this run started. The canary backend keeps its name across runs, so a rolled-back
/// revision's last failures then counted against the next revision (seen as a healthy v3 rolled
/// back right after a bad v2). Reading since the run's start, from the snapshot nearest to it
/// (the local controller scrapes every 500ms, so one is close), counts only this run.
struct SinceRun<'a> {
    inner: &'a dyn MetricsProvider,
    since: std::time::SystemTime,
}

impl MetricsProvider for SinceRun<'_> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), AnalysisError>> {
        self.inner.probe()
    }

    fn builtin<'a>(
        &'a self,
        metric: BuiltinMetric,
        target: &'a Target,
        _window: Duration,
    ) -> BoxFuture<'a, Result<Observed, AnalysisError>> {
        Box::pin(async move {
            let t: ArmTraffic = self
                .inner
                .arm_traffic_since(target, ArmRole::Canary, self.since)
                .await?;
            let ago = std::time::SystemTime::now()
                .duration_since(self.since)
                .unwrap_or_default();
            Ok(Observed {
                value: t.builtin(metric),
                sample_size: Some(t.requests.max(0.0).round() as u64),
                query: Some(format!(
                    "{} of dst_service=\"{}\" over the last {}",
                    metric.name(),
                    target.canary.backend,
                    serin_analysis::format_duration(Duration::from_secs(ago.as_secs().max(1)))
                )),
                count_unmatched: None,
            })
        })
    }

    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<Observed, AnalysisError>> {
        self.inner.query(query)
    }

    fn arm_traffic<'a>(
        &'a self,
        target: &'a Target,
        arm: ArmRole,
        window: Duration,
    ) -> BoxFuture<'a, Result<ArmTraffic, AnalysisError>> {
        self.inner.arm_traffic(target, arm, window)
    }

    fn arm_traffic_since<'a>(
        &'a self,
        target: &'a Target,
        arm: ArmRole,
        since: std::time::SystemTime,
    ) -> BoxFuture<'a, Result<ArmTraffic, AnalysisError>> {
        self.inner.arm_traffic_since(target, arm, since)
    }
}

/// When the run started, as wall-clock time.
fn run_start(run: &serin_core::Run) -> std::time::SystemTime {
    std::time::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(run.started_at.as_millis()).unwrap_or(0))
}

fn window_since_run(interval: Duration, status: &Status) -> Duration {
    let Some(run) = &status.run else {
        return interval;
    };
    let now = serin_core::Timestamp::from_system_time(std::time::SystemTime::now());
    let since = Duration::from_secs(now.since(run.started_at).as_secs().max(1));
    interval.min(since)
}

#[async_trait]
impl Analyzer for LocalAnalyzer {
    async fn run_checks(
        &self,
        ctx: &CanaryContext,
        status: &Status,
    ) -> Result<Vec<CheckResult>, AdapterError> {
        let Some(n) = ctx.spec.clone() else {
            return Err(AdapterError::new(
                ErrorKind::Invalid,
                "analysis",
                "the canary context carries no normalized spec",
            ));
        };
        let mut target = Target::flagger(
            &ctx.id.name,
            &ctx.id.namespace,
            &n.target_name,
            Some(&n.service_name),
        );
        target.ingress = n.ingress.clone();
        target.route = n.route.clone();
        let no_data = no_data(&n);
        let mut results = Vec::new();
        for (i, m) in n.metrics.iter().enumerate() {
            let field = format!("spec.analysis.metrics[{i}]");
            // A template with its own `spec.provider.address` is asked there.
            let mut own_provider: Option<Arc<dyn TemplateProvider>> = None;
            // Errors of a template check name the template (a Canary may use several).
            let template_key = match &m.source {
                MetricSource::Template(r) => Some(format!(
                    "{}/{}",
                    r.namespace.as_deref().unwrap_or(&ctx.id.namespace),
                    r.name
                )),
                _ => None,
            };
            let template_query = match &m.source {
                MetricSource::Builtin => None,
                MetricSource::Query(q) => Some(q.clone()),
                MetricSource::Template(r) => match self.template(&field, &ctx.id.namespace, r) {
                    Ok((query, provider)) => {
                        own_provider = provider;
                        Some(query)
                    }
                    Err(e) => {
                        results.push(inconclusive(&m.name, e));
                        continue;
                    }
                },
            };
            // Never look back past the start of this run: the canary backend keeps its name
            // across runs, and a previous revision's failures must not count against this one.
            let spec = metric_spec(m, window_since_run(m.interval, status), template_query);
            let check = match MetricCheck::from_spec(&field, &spec) {
                Ok(c) => c,
                Err(e) => {
                    results.push(inconclusive(&m.name, e.to_string()));
                    continue;
                }
            };
            let measured = match (&check.source, &status.run) {
                (serin_analysis::MetricSource::Builtin(_), Some(run))
                    if self.provider.kind() == PROXY_SCRAPE =>
                {
                    let start = run_start(run);
                    let window_start = std::time::SystemTime::now()
                        .checked_sub(m.interval)
                        .unwrap_or(start);
                    let bounded = SinceRun {
                        inner: self.provider.as_ref(),
                        since: start.max(window_start),
                    };
                    run_check(&bounded, &check, &target, &no_data).await
                }
                _ => match &own_provider {
                    Some(own) => run_template_check(own.as_ref(), &check, &target, &no_data).await,
                    None => run_check(self.provider.as_ref(), &check, &target, &no_data).await,
                },
            };
            results.push(match measured {
                Ok(r) => check_result(r),
                // A measurement that failed is never a pass: the step holds, the history
                // says why.
                Err(e) => match &template_key {
                    Some(key) => inconclusive(&m.name, format!("MetricTemplate {key}: {e}")),
                    None => inconclusive(&m.name, e.to_string()),
                },
            });
        }
        if let Some(j) = &n.judge {
            results.push(self.judge(ctx, status, j, &target).await);
        }
        Ok(results)
    }

    async fn sample(
        &self,
        ctx: &CanaryContext,
        status: &Status,
    ) -> Result<Option<serin_core::Sample>, AdapterError> {
        let judge = self.last_judge.take(ctx);
        let Some(n) = ctx.spec.clone() else {
            return Ok(None);
        };
        let target = Target::flagger(
            &ctx.id.name,
            &ctx.id.namespace,
            &n.target_name,
            Some(&n.service_name),
        );
        // The tick's window, never reaching back before the run started.
        let interval_ago = std::time::SystemTime::now()
            .checked_sub(ctx.plan.interval)
            .unwrap_or(std::time::UNIX_EPOCH);
        let since = match &status.run {
            Some(run) => run_start(run).max(interval_ago),
            None => interval_ago,
        };
        let mut sample = match measure(self.provider.as_ref(), &target, since).await {
            Ok(s) => s,
            // The judge's evidence is worth keeping without the arms (a gap in the charts).
            Err(e) if judge.is_some() => {
                tracing::debug!(canary = %ctx.id, error = %e, "no chart sample this tick");
                serin_core::Sample::default()
            }
            Err(e) => {
                return Err(AdapterError::new(
                    ErrorKind::Other,
                    "chart sample",
                    e.to_string(),
                ));
            }
        };
        sample.judge = judge;
        Ok(Some(sample))
    }
}

impl LocalAnalyzer {
    async fn judge(
        &self,
        ctx: &CanaryContext,
        status: &Status,
        j: &serin_api::JudgeSettings,
        target: &Target,
    ) -> CheckResult {
        let Some(run) = &status.run else {
            return inconclusive(JUDGE_CHECK, "no run in progress".into());
        };
        // Cumulative readings since the run started, so every look sees the whole run. "Since"
        // and not "over a window ending now": a proxy-scrape window takes its base from the
        // newest snapshot before the window, which can predate the run, and the previous run's
        // canary failures then leaked into this run's judge (see `SinceRun`).
        let since = run_start(run);
        let (canary, primary) =
            match serin_analysis::arms_since(self.provider.as_ref(), target, since).await {
                Ok(arms) => arms,
                Err(e) => return inconclusive(JUDGE_CHECK, e.to_string()),
            };
        let config = judge_config(j);
        let r = match self.judges.observe(ctx, run.id, &config, &canary, &primary) {
            Ok(r) => r,
            Err(unavailable) => return unavailable,
        };
        let r = at_weight(r, &ctx.plan, status.canary_weight);
        self.last_judge
            .remember(ctx, serin_controller::sample::judge(&r, &config));
        let canary_rate = canary.success_rate_pct();
        CheckResult {
            name: JUDGE_CHECK.to_string(),
            verdict: verdict(r.verdict),
            value: canary_rate,
            bound: Bound::default(),
            samples: Some(canary.requests.max(0.0) as u64),
            detail: r.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_analysis::{
        PrometheusConfig, PrometheusProvider, ProxyScrapeConfig, ProxyScrapeProvider,
    };

    fn template(yaml: &str) -> (String, serin_api::MetricTemplate) {
        let t: serin_api::MetricTemplate = serde_norway::from_str(yaml).unwrap();
        let key = format!(
            "{}/{}",
            t.metadata.namespace.as_deref().unwrap_or("default"),
            t.metadata.name.as_deref().unwrap()
        );
        (key, t)
    }

    fn reference(name: &str) -> serin_api::CrossNamespaceObjectReference {
        serde_json::from_value(serde_json::json!({ "name": name })).unwrap()
    }

    fn analyzer(provider: Arc<dyn MetricsProvider>) -> LocalAnalyzer {
        let a = LocalAnalyzer::new(provider);
        a.set_templates(BTreeMap::from([
            template(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: errors}\nspec:\n  provider: {type: prometheus}\n  query: sum(rate(response_total[1m]))\n",
            ),
            template(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: own}\nspec:\n  provider: {type: prometheus, address: 'http://127.0.0.1:9'}\n  query: up\n",
            ),
            template(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: dd}\nspec:\n  provider: {type: datadog}\n  query: x\n",
            ),
            template(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: secret}\nspec:\n  provider: {type: prometheus, address: 'http://127.0.0.1:9', secretRef: {name: creds}}\n  query: up\n",
            ),
            template(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: dd-keys}\nspec:\n  provider: {type: datadog, secretRef: {name: dd}}\n  query: x\n",
            ),
            template(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: keptn}\nspec:\n  provider: {type: keptn}\n  query: x\n",
            ),
            template(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: cw}\nspec:\n  provider: {type: cloudwatch, region: eu-west-1, secretRef: {name: aws}}\n  query: '[]'\n",
            ),
            template(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: cw-half}\nspec:\n  provider: {type: cloudwatch, region: eu-west-1, secretRef: {name: dd}}\n  query: '[]'\n",
            ),
            template(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: sf}\nspec:\n  provider: {type: splunk, address: 'wss://stream.us1.signalfx.com', secretRef: {name: sf}}\n  query: x\n",
            ),
        ]));
        let secret = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        a.set_secrets(BTreeMap::from([
            (
                "default/dd".to_string(),
                secret(&[("datadog_api_key", "a"), ("datadog_application_key", "b")]),
            ),
            (
                "default/aws".to_string(),
                secret(&[
                    ("AWS_ACCESS_KEY_ID", "AKIA"),
                    ("AWS_SECRET_ACCESS_KEY", "s"),
                ]),
            ),
            ("default/sf".to_string(), secret(&[("sf_token_key", "t")])),
        ]));
        a
    }

    fn scrape() -> Arc<dyn MetricsProvider> {
        Arc::new(
            ProxyScrapeProvider::new(ProxyScrapeConfig::new(vec![
                "http://127.0.0.1:9/metrics".into(),
            ]))
            .unwrap(),
        )
    }

    fn prometheus() -> Arc<dyn MetricsProvider> {
        Arc::new(
            PrometheusProvider::new(PrometheusConfig::new(
                "http://127.0.0.1:9",
                serin_analysis::Mesh::Serin,
            ))
            .unwrap(),
        )
    }

    const FIELD: &str = "spec.analysis.metrics[0]";

    #[test]
    fn templates_resolve_from_the_directory_and_errors_name_the_field() {
        let a = analyzer(scrape());
        let err = |name: &str| match a.template(FIELD, "default", &reference(name)) {
            Ok(_) => panic!("{name} resolved"),
            Err(e) => e,
        };
        let e = err("missing");
        assert!(
            e.contains("spec.analysis.metrics[0].templateRef") && e.contains("default/missing"),
            "{e}"
        );
        let e = err("errors");
        assert!(
            e.contains("--metrics-server") && e.contains("spec.provider.address"),
            "proxies cannot run a query: {e}"
        );
        let e = err("keptn");
        assert!(
            e.contains("spec.provider.type")
                && e.contains("supported: prometheus,")
                && e.contains("cloudwatch")
                && e.contains("splunk"),
            "{e}"
        );
        // Datadog needs its Secret; a secretRef names a Secret document of the directory.
        let e = err("dd");
        assert!(
            e.contains("spec.provider.secretRef") && e.contains("datadog_api_key"),
            "{e}"
        );
        let e = err("secret");
        assert!(
            e.contains("spec.provider.secretRef") && e.contains("Secret default/creds"),
            "{e}"
        );
        let (query, own) = a.template(FIELD, "default", &reference("dd-keys")).unwrap();
        assert_eq!(query, "x");
        assert_eq!(own.unwrap().kind(), "datadog");
        // CloudWatch and Splunk read their keys from the directory's Secret documents too.
        let (_, own) = a.template(FIELD, "default", &reference("cw")).unwrap();
        assert_eq!(own.unwrap().kind(), "cloudwatch");
        let (_, own) = a.template(FIELD, "default", &reference("sf")).unwrap();
        assert_eq!(own.unwrap().kind(), "splunk");
        let e = err("cw-half");
        assert!(
            e.contains("Secret default/dd key AWS_ACCESS_KEY_ID") && e.contains("missing"),
            "{e}"
        );
        // A template naming its own Prometheus is asked there, whatever the controller uses.
        let (query, own) = a.template(FIELD, "default", &reference("own")).unwrap();
        assert_eq!(query, "up");
        assert_eq!(own.unwrap().kind(), "prometheus");

        // With --metrics-server, a template without an address runs on that Prometheus.
        let a = analyzer(prometheus());
        let (query, own) = a.template(FIELD, "default", &reference("errors")).unwrap();
        assert_eq!(query, "sum(rate(response_total[1m]))");
        assert!(own.is_none());
    }

    /// The context of Canary test/podinfo (Deployment podinfo, port 9898) with `metrics` and
    /// the extra `spec` fields in `extra`.
    fn canary_ctx(metrics: serde_json::Value, extra: serde_json::Value) -> CanaryContext {
        let mut spec = serde_json::json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 2, "maxWeight": 50, "stepWeight": 10, "metrics": metrics}
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let canary: serin_api::Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": spec
        }))
        .unwrap();
        serin_controller::plan::context("test", &canary).unwrap().1
    }

    /// The analyzer's checks for `ctx` at the start of a run, within 20 s.
    async fn checks(a: &LocalAnalyzer, ctx: &CanaryContext) -> Vec<CheckResult> {
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            a.run_checks(ctx, &serin_core::Status::default()),
        )
        .await
        .expect("checks within 20s")
        .unwrap()
    }

    /// Prometheus' answer with the one value 0.5.
    fn half() -> serin_analysis::testing::Answer {
        serin_analysis::testing::Answer::json(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.5"]}]}}"#,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cloudwatch_and_splunk_templates_run_with_the_directorys_secrets() {
        use serin_analysis::testing::{Answer, FakeApi, StreamEnd, fake_cloudwatch};
        let mut cw = fake_cloudwatch(
            vec![("AKIALOCAL".into(), "local-secret".into(), None)],
            "eu-west-1",
            vec![Answer::json(
                200,
                r#"{"MetricDataResults":[{"Id":"e1","Timestamps":[1700000000],"Values":[0.5]}]}"#,
            )],
        )
        .await;
        let mut sf = FakeApi::start(vec![Answer::event_stream(
            &[
                (
                    "control-message",
                    r#"{"event":"STREAM_START","timestampMs":1}"#,
                ),
                (
                    "data",
                    r#"{"logicalTimestampMs":2,"data":[{"tsId":"AAAAAKQ1vbI","value":12}]}"#,
                ),
                (
                    "control-message",
                    r#"{"event":"END_OF_CHANNEL","timestampMs":3}"#,
                ),
            ],
            StreamEnd::Close,
        )])
        .await;
        let a = LocalAnalyzer::new(scrape());
        a.set_templates(BTreeMap::from([
            template(&format!(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {{name: cw, namespace: test}}\nspec:\n  provider: {{type: cloudwatch, region: eu-west-1, address: '{}', secretRef: {{name: aws}}}}\n  query: '[{{\"Id\": \"e1\", \"Expression\": \"SUM(METRICS())\"}}]'\n",
                cw.address
            )),
            template(&format!(
                "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {{name: sf, namespace: test}}\nspec:\n  provider: {{type: splunk, address: '{}', secretRef: {{name: sf}}}}\n  query: \"data('latency', filter=filter('app', '{{{{ target }}}}')).mean().publish()\"\n",
                sf.address
            )),
        ]));
        a.set_secrets(BTreeMap::from([
            (
                "test/aws".to_string(),
                BTreeMap::from([
                    ("AWS_ACCESS_KEY_ID".to_string(), "AKIALOCAL".to_string()),
                    (
                        "AWS_SECRET_ACCESS_KEY".to_string(),
                        "local-secret".to_string(),
                    ),
                ]),
            ),
            (
                "test/sf".to_string(),
                BTreeMap::from([("sf_token_key".to_string(), "local-token".to_string())]),
            ),
        ]));
        let ctx = canary_ctx(
            serde_json::json!([
                    {"name": "error-rate", "templateRef": {"name": "cw"}, "thresholdRange": {"max": 1}, "interval": "1m"},
                    {"name": "latency", "templateRef": {"name": "sf"}, "thresholdRange": {"max": 10}, "interval": "1m"}
            ]),
            serde_json::json!({}),
        );
        let results = checks(&a, &ctx).await;
        let by = |n: &str| results.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(by("error-rate").value, Some(0.5), "{results:?}");
        assert_eq!(by("error-rate").verdict, serin_core::Verdict::Pass);
        assert_eq!(by("latency").value, Some(12.0), "{results:?}");
        assert_eq!(by("latency").verdict, serin_core::Verdict::Fail);
        // The fake CloudWatch verified the signature made with the directory Secret's keys.
        assert_eq!(cw.next().await.path, "/");
        let seen = sf.next().await;
        assert_eq!(seen.header("x-sf-token"), Some("local-token"));
        assert_eq!(
            seen.body,
            "data('latency', filter=filter('app', 'podinfo')).mean().publish()"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_template_without_address_keeps_its_secret_and_headers_on_the_controllers_prometheus()
    {
        let mut prom = serin_analysis::testing::FakeApi::start(vec![half()]).await;
        let controllers: Arc<dyn MetricsProvider> = Arc::new(
            PrometheusProvider::new(PrometheusConfig::new(
                prom.address.clone(),
                serin_analysis::Mesh::Serin,
            ))
            .unwrap(),
        );
        let a = LocalAnalyzer::new(controllers);
        a.set_templates(BTreeMap::from([template(
            "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: tenant, namespace: test}\nspec:\n  provider: {type: prometheus, secretRef: {name: prom}, headers: {X-Scope-OrgID: [team-a]}}\n  query: vector(0.5)\n",
        )]));
        a.set_secrets(BTreeMap::from([(
            "test/prom".to_string(),
            BTreeMap::from([("token".to_string(), "tenant-token".to_string())]),
        )]));
        let ctx = canary_ctx(
            serde_json::json!([
                    {"name": "errors", "templateRef": {"name": "tenant"}, "thresholdRange": {"max": 1}, "interval": "1m"}
            ]),
            serde_json::json!({}),
        );
        let results = checks(&a, &ctx).await;
        assert_eq!(results[0].value, Some(0.5), "{results:?}");
        // The controller's Prometheus, asked with the template's own token and header.
        let seen = prom.next().await;
        assert_eq!(seen.header("authorization"), Some("Bearer tenant-token"));
        assert_eq!(seen.header("x-scope-orgid"), Some("team-a"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_templates_ingress_variable_renders_the_canarys_ingress_ref() {
        let mut prom = serin_analysis::testing::FakeApi::start(vec![half()]).await;
        let a = LocalAnalyzer::new(prometheus());
        a.set_templates(BTreeMap::from([template(&format!(
            "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {{name: by-ingress, namespace: test}}\nspec:\n  provider: {{type: prometheus, address: '{}'}}\n  query: 'sum(rate(requests_total{{ingress=\"{{{{ ingress }}}}\"}}[1m]))'\n",
            prom.address
        ))]));
        let ctx = canary_ctx(
            serde_json::json!([
                    {"name": "requests", "templateRef": {"name": "by-ingress"}, "thresholdRange": {"max": 1}, "interval": "1m"}
            ]),
            serde_json::json!({"ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo-public"}}),
        );
        let results = checks(&a, &ctx).await;
        assert_eq!(results[0].value, Some(0.5), "{results:?}");
        let seen = prom.next().await;
        assert_eq!(
            seen.param("query").as_deref(),
            Some(r#"sum(rate(requests_total{ingress="podinfo-public"}[1m]))"#)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_template_checks_error_names_the_template() {
        let a = LocalAnalyzer::new(prometheus());
        a.set_templates(BTreeMap::from([template(
            "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: regional, namespace: shared}\nspec:\n  provider: {type: prometheus, address: 'http://127.0.0.1:9'}\n  query: 'up{region=\"{{ variables.region }}\"}'\n",
        )]));
        let ctx = canary_ctx(
            serde_json::json!([
                    {"name": "up", "templateRef": {"name": "regional", "namespace": "shared"}, "thresholdRange": {"min": 1}, "interval": "1m"}
            ]),
            serde_json::json!({}),
        );
        let results = checks(&a, &ctx).await;
        let detail = &results[0].detail;
        assert!(
            detail.contains("MetricTemplate shared/regional")
                && detail.contains("variables.region"),
            "{detail}"
        );
    }
}

//! [`PrometheusAnalyzer`]: the Kubernetes [`Analyzer`], measuring with `serin-analysis`: the
//! built-in checks against Prometheus (with the provider's queries: Serin's proxy metrics,
//! Linkerd's or Istio's), `MetricTemplate` queries read from the API server and run by the
//! template's provider from `serin_analysis`'s [`ProviderRegistry`] (Prometheus, Datadog, ...,
//! with the template's address, `secretRef` Secret, headers and `insecureSkipVerify`), the
//! deprecated inline `query`, and the statistical judge when the Canary turns it on.
//!
//! The judge's sequential state is persisted with the Canary's status (`status.serin.analysis`)
//! through [`Analyzer::run_checks_from`], so a restarted controller continues the same
//! sequential test: no look is repeated and none forgotten.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use serin_analysis::{
    ArmRole, Credentials, Mesh, MetricCheck, MetricsProvider, NoDataConfig, PrometheusConfig,
    PrometheusProvider, ProviderRegistry, ProviderSettings, Target, run_check, run_template_check,
};
use serin_api::{MetricSource, MetricTemplate, Normalized};
use serin_core::{Bound, CheckResult, Status};

use serin_controller::adapters::{
    AdapterError, AnalysisState, Analyzer, CanaryContext, Checked, ErrorKind,
};
use serin_controller::measure::{
    Judges, at_weight, check_result, inconclusive, judge_config, metric_spec, no_data, verdict,
};
use serin_controller::plan::JUDGE_CHECK;
use serin_controller::sample::{LastJudge, measure};

/// Measures checks against Prometheus.
pub struct PrometheusAnalyzer {
    client: Client,
    default_address: Option<String>,
    default_provider: String,
    /// Prometheus clients by address and mesh (built-in checks, inline queries, the judge).
    providers: Mutex<HashMap<String, (PrometheusConfig, Arc<PrometheusProvider>)>>,
    /// MetricTemplate clients of every provider type, rebuilt when a template's settings or
    /// Secret change.
    registry: ProviderRegistry,
    judges: Judges,
    last_judge: LastJudge,
}

impl PrometheusAnalyzer {
    /// `default_address` is the controller's `--metrics-server`, used when a Canary sets no
    /// `metricsServer`; `default_provider` picks the built-in queries when a Canary names none.
    pub fn new(client: Client, default_address: Option<String>, default_provider: String) -> Self {
        Self {
            client,
            default_address,
            default_provider,
            providers: Mutex::new(HashMap::new()),
            registry: ProviderRegistry::new(),
            judges: Judges::default(),
            last_judge: LastJudge::default(),
        }
    }

    /// The Prometheus client for built-in checks, inline queries and the judge.
    fn provider(&self, address: &str, mesh: Mesh) -> Result<Arc<PrometheusProvider>, String> {
        let config = PrometheusConfig::new(address, mesh);
        let key = format!("{address} {mesh:?}");
        if let Some(p) = self.providers.lock().ok().and_then(|m| {
            m.get(&key)
                .filter(|(c, _)| *c == config)
                .map(|(_, p)| p.clone())
        }) {
            return Ok(p);
        }
        let p = Arc::new(PrometheusProvider::new(config.clone()).map_err(|e| e.to_string())?);
        if let Ok(mut m) = self.providers.lock() {
            m.insert(key, (config, p.clone()));
        }
        Ok(p)
    }

    /// A template's `secretRef` Secret, its values as text. Errors name the field, the Secret
    /// and the key.
    async fn credentials(
        &self,
        namespace: &str,
        template: &str,
        secret: &str,
    ) -> Result<Credentials, String> {
        let field = format!("MetricTemplate {namespace}/{template} spec.provider.secretRef");
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let s = api
            .get_opt(secret)
            .await
            .map_err(|e| format!("{field}: reading Secret {namespace}/{secret}: {e}"))?
            .ok_or_else(|| format!("{field}: Secret {namespace}/{secret} does not exist"))?;
        let mut data = BTreeMap::new();
        // `stringData` is folded into `data` by the API server; both are read as Flagger does.
        for (key, value) in s.data.unwrap_or_default() {
            let text = String::from_utf8(value.0).map_err(|_| {
                format!("{field}: key {key:?} of Secret {namespace}/{secret} is not UTF-8")
            })?;
            data.insert(key, text);
        }
        Ok(Credentials {
            secret: format!("{namespace}/{secret}"),
            data,
        })
    }

    /// Measures a `templateRef` check with the template's own provider, from the registry.
    async fn template_check(
        &self,
        field: &str,
        m: &serin_api::MetricCheck,
        r: &serin_api::CrossNamespaceObjectReference,
        env: &CheckEnv,
    ) -> CheckResult {
        let tns = r.namespace.clone().unwrap_or_else(|| env.ns.clone());
        let t = match self.template(&tns, &r.name).await {
            Ok(t) => t,
            Err(e) => return inconclusive(&m.name, e),
        };
        let p = &t.spec.provider;
        if let Some(why) = serin_api::support::metric_provider_not_queried(&p.type_) {
            return inconclusive(&m.name, format!("{field}.templateRef: {why}"));
        }
        let credentials = match &p.secret_ref {
            None => None,
            Some(sref) => match self.credentials(&tns, &r.name, &sref.name).await {
                Ok(c) => Some(c),
                Err(e) => return inconclusive(&m.name, e),
            },
        };
        // A Prometheus template without an address asks the Canary's (or the controller's).
        let address = p.address.clone().or_else(|| {
            (p.type_ == "prometheus")
                .then(|| {
                    env.metrics_server
                        .clone()
                        .or_else(|| self.default_address.clone())
                })
                .flatten()
        });
        let settings = ProviderSettings {
            type_: p.type_.clone(),
            address,
            credentials,
            headers: p.headers.pairs(),
            insecure_skip_verify: p.insecure_skip_verify,
            region: p.region.clone(),
        };
        let key = format!("{tns}/{}", r.name);
        let provider = match self.registry.provider(&key, &settings) {
            Ok(p) => p,
            Err(e) => return inconclusive(&m.name, format!("MetricTemplate {key} {e}")),
        };
        let check = match metric_check(field, m, Some(t.spec.query.clone())) {
            Ok(c) => c,
            Err(e) => return inconclusive(&m.name, e),
        };
        match run_template_check(provider.as_ref(), &check, &env.target, &env.no_data).await {
            Ok(r) => check_result(r),
            // A measurement that failed is never a pass; the step holds and the history says why.
            Err(e) => inconclusive(&m.name, format!("MetricTemplate {key}: {e}")),
        }
    }

    async fn template(&self, namespace: &str, name: &str) -> Result<MetricTemplate, String> {
        let api: Api<MetricTemplate> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map_err(|e| format!("reading MetricTemplate {namespace}/{name}: {e}"))?
            .ok_or_else(|| format!("MetricTemplate {namespace}/{name} does not exist"))
    }
}

/// What every check of one Canary shares.
struct CheckEnv {
    mesh: Mesh,
    ns: String,
    target: Target,
    no_data: NoDataConfig,
    metrics_server: Option<String>,
}

fn mesh_of(provider: &str) -> Mesh {
    match provider.split(':').next().unwrap_or("") {
        "linkerd" => Mesh::Linkerd,
        "istio" => Mesh::Istio,
        _ => Mesh::Serin,
    }
}

impl PrometheusAnalyzer {
    async fn one_check(
        &self,
        index: usize,
        m: &serin_api::MetricCheck,
        env: &CheckEnv,
    ) -> CheckResult {
        let field = format!("spec.analysis.metrics[{index}]");
        let query = match &m.source {
            MetricSource::Template(r) => return self.template_check(&field, m, r, env).await,
            MetricSource::Builtin => None,
            MetricSource::Query(q) => Some(q.clone()),
        };
        let Some(address) = env
            .metrics_server
            .clone()
            .or_else(|| self.default_address.clone())
        else {
            return inconclusive(
                &m.name,
                "no metrics server: set spec.metricsServer, the template's provider.address, or the controller's --metrics-server".into(),
            );
        };
        let check = match metric_check(&field, m, query) {
            Ok(c) => c,
            Err(e) => return inconclusive(&m.name, e),
        };
        let provider = match self.provider(&address, env.mesh) {
            Ok(p) => p,
            Err(e) => return inconclusive(&m.name, e),
        };
        match run_check(provider.as_ref(), &check, &env.target, &env.no_data).await {
            Ok(r) => check_result(r),
            // A measurement that failed is never a pass; the step holds and the history says why.
            Err(e) => inconclusive(&m.name, e.to_string()),
        }
    }
}

/// The analysis check of the Canary's metric `m` at `field`.
fn metric_check(
    field: &str,
    m: &serin_api::MetricCheck,
    template_query: Option<String>,
) -> Result<MetricCheck, String> {
    let spec = metric_spec(m, m.interval, template_query);
    MetricCheck::from_spec(field, &spec).map_err(|e| e.to_string())
}

#[async_trait]
impl Analyzer for PrometheusAnalyzer {
    async fn run_checks(
        &self,
        ctx: &CanaryContext,
        status: &Status,
    ) -> Result<Vec<CheckResult>, AdapterError> {
        Ok(self.run_checks_from(ctx, status, None).await?.checks)
    }

    async fn run_checks_from(
        &self,
        ctx: &CanaryContext,
        status: &Status,
        saved: Option<&AnalysisState>,
    ) -> Result<Checked, AdapterError> {
        let Some(n) = ctx.spec.clone() else {
            return Err(AdapterError::new(
                ErrorKind::Invalid,
                "analysis",
                "the canary context carries no normalized spec",
            ));
        };
        let ns = ctx.id.namespace.clone();
        let mut target = Target::flagger(&ctx.id.name, &ns, &n.target_name, Some(&n.service_name));
        target.ingress = n.ingress.clone();
        target.route = n.route.clone();
        let no_data = no_data(&n);
        let mesh = mesh_of(n.provider.as_deref().unwrap_or(&self.default_provider));
        let env = CheckEnv {
            mesh,
            ns: ns.clone(),
            target: target.clone(),
            no_data,
            metrics_server: ctx.metrics_server.clone(),
        };
        let mut results = Vec::new();
        for (i, m) in n.metrics.iter().enumerate() {
            results.push(self.one_check(i, m, &env).await);
        }
        let mut state = None;
        if let Some(j) = &n.judge {
            let (result, judged) = self.judge(ctx, status, &n, j, &target, saved).await;
            results.push(result);
            state = judged;
        }
        Ok(Checked {
            checks: results,
            state,
        })
    }

    async fn sample(
        &self,
        ctx: &CanaryContext,
        status: &Status,
    ) -> Result<Option<serin_core::Sample>, AdapterError> {
        let judge = self.last_judge.take(ctx);
        let (Some(n), Some(address)) = (
            ctx.spec.clone(),
            ctx.metrics_server
                .clone()
                .or_else(|| self.default_address.clone()),
        ) else {
            return Ok(None);
        };
        let mesh = mesh_of(n.provider.as_deref().unwrap_or(&self.default_provider));
        let target = Target::flagger(
            &ctx.id.name,
            &ctx.id.namespace,
            &n.target_name,
            Some(&n.service_name),
        );
        // One interval back, never before the run started (Prometheus ranges are whole
        // seconds; at least a minute so rate windows hold two scrapes).
        let now = std::time::SystemTime::now();
        let mut since = now
            .checked_sub(ctx.plan.interval.max(Duration::from_secs(60)))
            .unwrap_or(std::time::UNIX_EPOCH);
        if let Some(run) = &status.run {
            let start = std::time::UNIX_EPOCH
                + Duration::from_millis(u64::try_from(run.started_at.as_millis()).unwrap_or(0));
            since = since.max(start.min(now.checked_sub(Duration::from_secs(60)).unwrap_or(start)));
        }
        let measured = match self.provider(&address, mesh) {
            Ok(p) => measure(p.as_ref(), &target, since)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let mut sample = match measured {
            Ok(s) => s,
            // The judge's evidence is worth keeping without the arms (a gap in the charts).
            Err(e) if judge.is_some() => {
                tracing::debug!(canary = %ctx.id, error = %e, "no chart sample this tick");
                serin_core::Sample::default()
            }
            Err(e) => return Err(AdapterError::new(ErrorKind::Other, "chart sample", e)),
        };
        sample.judge = judge;
        Ok(Some(sample))
    }
}

impl PrometheusAnalyzer {
    async fn judge(
        &self,
        ctx: &CanaryContext,
        status: &Status,
        n: &Normalized,
        j: &serin_api::JudgeSettings,
        target: &Target,
        saved: Option<&AnalysisState>,
    ) -> (CheckResult, Option<AnalysisState>) {
        match self.judge_look(ctx, status, n, j, target, saved).await {
            Ok((result, state)) => (result, Some(state)),
            // Nothing was observed: the saved state stays as it is.
            Err(unmeasured) => (unmeasured, None),
        }
    }

    async fn judge_look(
        &self,
        ctx: &CanaryContext,
        status: &Status,
        n: &Normalized,
        j: &serin_api::JudgeSettings,
        target: &Target,
        saved: Option<&AnalysisState>,
    ) -> Result<(CheckResult, AnalysisState), CheckResult> {
        let Some(run) = &status.run else {
            return Err(inconclusive(JUDGE_CHECK, "no run in progress".into()));
        };
        let Some(address) = ctx
            .metrics_server
            .clone()
            .or_else(|| self.default_address.clone())
        else {
            return Err(inconclusive(
                JUDGE_CHECK,
                "no metrics server: set spec.metricsServer or the controller's --metrics-server"
                    .into(),
            ));
        };
        let provider = self
            .provider(
                &address,
                mesh_of(n.provider.as_deref().unwrap_or(&self.default_provider)),
            )
            .map_err(|e| inconclusive(JUDGE_CHECK, e))?;
        // Cumulative readings since the run started, so every look sees the whole run.
        let now = serin_core::Timestamp::from_system_time(std::time::SystemTime::now());
        let window = now.since(run.started_at).max(Duration::from_secs(60));
        let canary = provider.arm_traffic(target, ArmRole::Canary, window).await;
        let primary = provider.arm_traffic(target, ArmRole::Primary, window).await;
        let (canary, primary) = match (canary, primary) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(e), _) | (_, Err(e)) => return Err(inconclusive(JUDGE_CHECK, e.to_string())),
        };
        let config = judge_config(j);
        let (r, state) = self
            .judges
            .observe_from(ctx, run.id, &config, &canary, &primary, saved)?;
        let r = at_weight(r, &ctx.plan, status.canary_weight);
        self.last_judge
            .remember(ctx, serin_controller::sample::judge(&r, &config));
        Ok((
            CheckResult {
                name: JUDGE_CHECK.to_string(),
                verdict: verdict(r.verdict),
                value: None,
                bound: Bound::default(),
                samples: Some(canary.requests.max(0.0) as u64),
                detail: r.reason,
            },
            state,
        ))
    }
}

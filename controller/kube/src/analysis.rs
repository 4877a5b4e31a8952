//! [`PrometheusAnalyzer`]: the Kubernetes [`Analyzer`], measuring with `serin-analysis` against
//! Prometheus: the built-in checks (with the provider's queries: Serin's proxy metrics, Linkerd's
//! or Istio's), `MetricTemplate` queries read from the API server (with the template's own
//! address, `secretRef` credentials, headers and `insecureSkipVerify`), the deprecated inline
//! `query`, and the statistical judge when the Canary turns it on.
//!
//! The judge's sequential state is persisted with the Canary's status (`status.serin.analysis`)
//! through [`Analyzer::run_checks_from`], so a restarted controller continues the same
//! sequential test: no look is repeated and none forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use serin_analysis::{
    ArmRole, Mesh, MetricCheck, MetricSpec, MetricsProvider, NoDataConfig, PrometheusAuth,
    PrometheusConfig, PrometheusProvider, Target, ThresholdRange, run_check,
};
use serin_api::{MetricSource, MetricTemplate, Normalized};
use serin_core::{Bound, CheckResult, Status};

use serin_controller::adapters::{
    AdapterError, AnalysisState, Analyzer, CanaryContext, Checked, ErrorKind,
};
use serin_controller::measure::{
    Judges, check_result, inconclusive, judge_config, no_data, verdict,
};
use serin_controller::plan::JUDGE_CHECK;
use serin_controller::sample::{LastJudge, measure};

/// Measures checks against Prometheus.
pub struct PrometheusAnalyzer {
    client: Client,
    default_address: Option<String>,
    default_provider: String,
    /// Clients by connection (address and mesh, or the template for templates with their own
    /// settings), rebuilt when the settings change (a rotated Secret, an edited template).
    providers: Mutex<HashMap<String, (PrometheusConfig, Arc<PrometheusProvider>)>>,
    judges: Judges,
    last_judge: LastJudge,
}

/// How a MetricTemplate connects to its Prometheus, beyond the address.
struct Connection {
    /// `namespace/name` of the template (the cache key).
    template: String,
    headers: Vec<(String, String)>,
    auth: Option<PrometheusAuth>,
    insecure_skip_verify: bool,
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
            judges: Judges::default(),
            last_judge: LastJudge::default(),
        }
    }

    fn provider(&self, address: &str, mesh: Mesh) -> Result<Arc<PrometheusProvider>, String> {
        self.provider_for(None, address, mesh)
    }

    fn provider_for(
        &self,
        conn: Option<&Connection>,
        address: &str,
        mesh: Mesh,
    ) -> Result<Arc<PrometheusProvider>, String> {
        let mut config = PrometheusConfig::new(address, mesh);
        let key = match conn {
            None => format!("{address} {mesh:?}"),
            Some(c) => {
                config.headers = c.headers.clone();
                config.auth = c.auth.clone();
                config.insecure_skip_verify = c.insecure_skip_verify;
                format!("template {} {mesh:?}", c.template)
            }
        };
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

    /// The credentials in a template's `secretRef`: `token` (bearer) or `username` and
    /// `password` (basic auth), as Flagger reads them.
    async fn credentials(
        &self,
        namespace: &str,
        template: &str,
        secret: &str,
    ) -> Result<PrometheusAuth, String> {
        let field = format!("MetricTemplate {namespace}/{template} spec.provider.secretRef");
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let s = api
            .get_opt(secret)
            .await
            .map_err(|e| format!("{field}: reading Secret {namespace}/{secret}: {e}"))?
            .ok_or_else(|| format!("{field}: Secret {namespace}/{secret} does not exist"))?;
        let data = s.data.unwrap_or_default();
        let text = |key: &str| -> Result<Option<String>, String> {
            data.get(key)
                .map(|b| {
                    String::from_utf8(b.0.clone()).map_err(|_| {
                        format!("{field}: key {key:?} of Secret {namespace}/{secret} is not UTF-8")
                    })
                })
                .transpose()
        };
        match (text("token")?, text("username")?, text("password")?) {
            (Some(token), _, _) if !token.trim().is_empty() => Ok(PrometheusAuth::Bearer { token }),
            (_, Some(username), Some(password)) => Ok(PrometheusAuth::Basic {
                username: username.trim().to_string(),
                password: password.trim_end_matches(['\r', '\n']).to_string(),
            }),
            _ => Err(format!(
                "{field}: Secret {namespace}/{secret} has neither a non-empty `token` nor `username` and `password`"
            )),
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
        let CheckEnv {
            mesh,
            ns,
            target,
            no_data,
            metrics_server,
        } = env;
        let (mesh, ns) = (*mesh, ns.as_str());
        let field = format!("spec.analysis.metrics[{index}]");
        let mut address = metrics_server
            .clone()
            .or_else(|| self.default_address.clone());
        let mut conn = None;
        let template_query = match &m.source {
            MetricSource::Builtin => None,
            MetricSource::Query(q) => Some(q.clone()),
            MetricSource::Template(r) => {
                let tns = r.namespace.clone().unwrap_or_else(|| ns.to_string());
                match self.template(&tns, &r.name).await {
                    Ok(t) => {
                        let p = &t.spec.provider;
                        if let Some(why) = serin_api::support::metric_provider_not_queried(&p.type_)
                        {
                            return inconclusive(&m.name, format!("{field}.templateRef: {why}"));
                        }
                        if let Some(a) = &p.address {
                            address = Some(a.clone());
                        }
                        let auth = match &p.secret_ref {
                            None => None,
                            Some(sref) => match self.credentials(&tns, &r.name, &sref.name).await {
                                Ok(a) => Some(a),
                                Err(e) => return inconclusive(&m.name, e),
                            },
                        };
                        conn = Some(Connection {
                            template: format!("{tns}/{}", r.name),
                            headers: p.headers.pairs(),
                            auth,
                            insecure_skip_verify: p.insecure_skip_verify,
                        });
                        Some(t.spec.query.clone())
                    }
                    Err(e) => return inconclusive(&m.name, e),
                }
            }
        };
        let Some(address) = address else {
            return inconclusive(
                &m.name,
                "no metrics server: set spec.metricsServer, the template's provider.address, or the controller's --metrics-server".into(),
            );
        };
        let spec = MetricSpec {
            name: m.name.clone(),
            interval: Some(serin_analysis::format_duration(m.interval)),
            threshold_range: Some(ThresholdRange {
                min: m.min,
                max: m.max,
            }),
            threshold: None,
            template_query,
            template_variables: m.template_variables.clone(),
        };
        let check = match MetricCheck::from_spec(&field, &spec) {
            Ok(c) => c,
            Err(e) => return inconclusive(&m.name, e.to_string()),
        };
        let provider = match self.provider_for(conn.as_ref(), &address, mesh) {
            Ok(p) => p,
            Err(e) => return inconclusive(&m.name, e),
        };
        match run_check(provider.as_ref(), &check, target, no_data).await {
            Ok(r) => check_result(r),
            // A measurement that failed is never a pass; the step holds and the history says why.
            Err(e) => inconclusive(&m.name, e.to_string()),
        }
    }
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
        let target = Target::flagger(&ctx.id.name, &ns, &n.target_name, Some(&n.service_name));
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

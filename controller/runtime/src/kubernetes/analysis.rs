//! [`PrometheusAnalyzer`]: the Kubernetes [`Analyzer`], measuring with `serin-analysis` against
//! Prometheus: the built-in checks (with the provider's queries: Serin's proxy metrics, Linkerd's
//! or Istio's), `MetricTemplate` queries read from the API server, the deprecated inline `query`,
//! and the statistical judge when the Canary turns it on.
//!
//! The judge's sequential state lives in memory per run; after a controller restart it starts a
//! fresh sequence for the same run (still valid at `alpha`, it only forgets earlier looks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kube::Client;
use kube::api::Api;
use serin_analysis::{
    ArmRole, Mesh, MetricCheck, MetricSpec, MetricsProvider, NoDataConfig, PrometheusConfig,
    PrometheusProvider, Target, ThresholdRange, run_check,
};
use serin_api::{MetricSource, MetricTemplate, Normalized};
use serin_core::{Bound, CheckResult, Status};

use crate::adapters::{AdapterError, Analyzer, CanaryContext, ErrorKind};
use crate::measure::{Judges, check_result, inconclusive, judge_config, no_data, verdict};
use crate::plan::JUDGE_CHECK;

/// Measures checks against Prometheus.
pub struct PrometheusAnalyzer {
    client: Client,
    default_address: Option<String>,
    default_provider: String,
    providers: Mutex<HashMap<(String, String), Arc<PrometheusProvider>>>,
    judges: Judges,
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
        }
    }

    fn provider(&self, address: &str, mesh: Mesh) -> Result<Arc<PrometheusProvider>, String> {
        let key = (address.to_string(), format!("{mesh:?}"));
        if let Some(p) = self
            .providers
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(p);
        }
        let p = Arc::new(
            PrometheusProvider::new(PrometheusConfig::new(address, mesh))
                .map_err(|e| e.to_string())?,
        );
        if let Ok(mut m) = self.providers.lock() {
            m.insert(key, p.clone());
        }
        Ok(p)
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
        let template_query = match &m.source {
            MetricSource::Builtin => None,
            MetricSource::Query(q) => Some(q.clone()),
            MetricSource::Template(r) => {
                let tns = r.namespace.clone().unwrap_or_else(|| ns.to_string());
                match self.template(&tns, &r.name).await {
                    Ok(t) => {
                        if t.spec.provider.type_ != "prometheus" {
                            return inconclusive(
                                &m.name,
                                format!(
                                    "{field}.templateRef: provider type {:?} is not supported; accepted: prometheus",
                                    t.spec.provider.type_
                                ),
                            );
                        }
                        if let Some(a) = &t.spec.provider.address {
                            address = Some(a.clone());
                        }
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
        let provider = match self.provider(&address, mesh) {
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
        if let Some(j) = &n.judge {
            results.push(self.judge(ctx, status, &n, j, &target).await);
        }
        Ok(results)
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
    ) -> CheckResult {
        let Some(run) = &status.run else {
            return inconclusive(JUDGE_CHECK, "no run in progress".into());
        };
        let Some(address) = ctx
            .metrics_server
            .clone()
            .or_else(|| self.default_address.clone())
        else {
            return inconclusive(
                JUDGE_CHECK,
                "no metrics server: set spec.metricsServer or the controller's --metrics-server"
                    .into(),
            );
        };
        let provider = match self.provider(
            &address,
            mesh_of(n.provider.as_deref().unwrap_or(&self.default_provider)),
        ) {
            Ok(p) => p,
            Err(e) => return inconclusive(JUDGE_CHECK, e),
        };
        // Cumulative readings since the run started, so every look sees the whole run.
        let now = serin_core::Timestamp::from_system_time(std::time::SystemTime::now());
        let window = now.since(run.started_at).max(Duration::from_secs(60));
        let canary = provider.arm_traffic(target, ArmRole::Canary, window).await;
        let primary = provider.arm_traffic(target, ArmRole::Primary, window).await;
        let (canary, primary) = match (canary, primary) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(e), _) | (_, Err(e)) => return inconclusive(JUDGE_CHECK, e.to_string()),
        };
        let config = judge_config(j);
        let r = match self.judges.observe(ctx, run.id, &config, &canary, &primary) {
            Ok(r) => r,
            Err(unavailable) => return unavailable,
        };
        CheckResult {
            name: JUDGE_CHECK.to_string(),
            verdict: verdict(r.verdict),
            value: None,
            bound: Bound::default(),
            samples: Some(canary.requests.max(0.0) as u64),
            detail: r.reason,
        }
    }
}

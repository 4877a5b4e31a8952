//! [`LocalAnalyzer`]: the local [`Analyzer`]. It measures with `serin-analysis` from the proxies'
//! own `/metrics` (the embedded default: no Prometheus needed) or from a Prometheus given with
//! `--metrics-server`: Flagger's built-in checks, inline queries (Prometheus only), and the
//! statistical judge when the Canary turns it on.
//!
//! The judge's sequential state lives in memory per run; after a controller restart it starts a
//! fresh sequence for the same run, which is still valid at `alpha` (it only forgets earlier
//! looks).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serin_analysis::{
    ArmRole, MetricCheck, MetricSpec, MetricsProvider, Target, ThresholdRange, run_check,
};
use serin_api::MetricSource;
use serin_core::{Bound, CheckResult, Status};

use crate::adapters::{AdapterError, Analyzer, CanaryContext, ErrorKind};
use crate::measure::{Judges, check_result, inconclusive, judge_config, no_data, verdict};
use crate::plan::JUDGE_CHECK;

/// Measures every check of a Canary through one metrics provider.
pub struct LocalAnalyzer {
    provider: Arc<dyn MetricsProvider>,
    judges: Judges,
}

impl LocalAnalyzer {
    /// Measures through `provider` (a proxy scrape or a Prometheus).
    pub fn new(provider: Arc<dyn MetricsProvider>) -> Self {
        Self {
            provider,
            judges: Judges::default(),
        }
    }
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
        let target = Target::flagger(
            &ctx.id.name,
            &ctx.id.namespace,
            &n.target_name,
            Some(&n.service_name),
        );
        let no_data = no_data(&n);
        let mut results = Vec::new();
        for (i, m) in n.metrics.iter().enumerate() {
            let field = format!("spec.analysis.metrics[{i}]");
            let template_query = match &m.source {
                MetricSource::Builtin => None,
                MetricSource::Query(q) => Some(q.clone()),
                MetricSource::Template(r) => {
                    results.push(inconclusive(
                        &m.name,
                        format!(
                            "{field}.templateRef {}: MetricTemplates are not read by the local controller; use a built-in metric or an inline query with --metrics-server",
                            r.name
                        ),
                    ));
                    continue;
                }
            };
            let spec = MetricSpec {
                name: m.name.clone(),
                // Never look back past the start of this run: the canary backend keeps its name
                // across runs, and a previous revision's failures must not count against this one.
                interval: Some(serin_analysis::format_duration(window_since_run(
                    m.interval, status,
                ))),
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
                Err(e) => {
                    results.push(inconclusive(&m.name, e.to_string()));
                    continue;
                }
            };
            results.push(
                match run_check(self.provider.as_ref(), &check, &target, &no_data).await {
                    Ok(r) => check_result(r),
                    // A measurement that failed is never a pass: the step holds, the history
                    // says why.
                    Err(e) => inconclusive(&m.name, e.to_string()),
                },
            );
        }
        if let Some(j) = &n.judge {
            results.push(self.judge(ctx, status, j, &target).await);
        }
        Ok(results)
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
        // Cumulative readings since the run started, so every look sees the whole run.
        let now = serin_core::Timestamp::from_system_time(std::time::SystemTime::now());
        let window = now.since(run.started_at).max(Duration::from_secs(1));
        let canary = self
            .provider
            .arm_traffic(target, ArmRole::Canary, window)
            .await;
        let primary = self
            .provider
            .arm_traffic(target, ArmRole::Primary, window)
            .await;
        let (canary, primary) = match (canary, primary) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(e), _) | (_, Err(e)) => return inconclusive(JUDGE_CHECK, e.to_string()),
        };
        let config = judge_config(j);
        let r = match self.judges.observe(ctx, run.id, &config, &canary, &primary) {
            Ok(r) => r,
            Err(unavailable) => return unavailable,
        };
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

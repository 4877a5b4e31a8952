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
    AnalysisError, ArmRole, ArmTraffic, BoxFuture, BuiltinMetric, MetricCheck, MetricSpec,
    MetricsProvider, Observed, Target, ThresholdRange, run_check,
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
                _ => run_check(self.provider.as_ref(), &check, &target, &no_data).await,
            };
            results.push(match measured {
                Ok(r) => check_result(r),
                // A measurement that failed is never a pass: the step holds, the history
                // says why.
                Err(e) => inconclusive(&m.name, e.to_string()),
            });
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
        // Cumulative readings since the run started, so every look sees the whole run. "Since"
        // and not "over a window ending now": a proxy-scrape window takes its base from the
        // newest snapshot before the window, which can predate the run, and the previous run's
        // canary failures then leaked into this run's judge (see `SinceRun`).
        let since = run_start(run);
        let canary = self
            .provider
            .arm_traffic_since(target, ArmRole::Canary, since)
            .await;
        let primary = self
            .provider
            .arm_traffic_since(target, ArmRole::Primary, since)
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

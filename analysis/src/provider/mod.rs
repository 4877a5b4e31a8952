//! Metric providers: where numbers come from.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::AnalysisError;
use crate::check::{
    BuiltinMetric, CheckResult, MetricCheck, MetricSource, NoDataConfig, Observed, evaluate,
};
use crate::histogram::Histogram;
use crate::judge::{JudgeConfig, JudgeResult, JudgeState};
use crate::target::{ArmRole, Target};
use crate::template::render;

pub mod aws;
pub mod cloudwatch;
pub mod datadog;
pub mod dynatrace;
pub mod graphite;
mod http;
pub mod influxdb;
pub mod newrelic;
pub mod prometheus;
pub mod registry;
pub mod scrape;
pub mod splunk;

/// A `reqwest` client builder on rustls with the `ring` provider (the TLS stack `kube` uses
/// here): reqwest is built without a default crypto provider, so install ring as the process
/// default unless one was already chosen. Losing the race to another installer is fine.
pub(crate) fn http_client_builder() -> reqwest::ClientBuilder {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
}

/// A boxed, sendable future (keeps [`MetricsProvider`] usable as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One arm's traffic over a window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ArmTraffic {
    /// Requests (responses) counted.
    pub requests: f64,
    /// Of which classified as failures.
    pub failures: f64,
    /// Response latency histogram (ms), when the backend has one.
    pub latency: Option<Histogram>,
}

impl ArmTraffic {
    /// Percentage of non-failed responses; `None` without requests.
    pub fn success_rate_pct(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| 100.0 * (1.0 - self.failures / self.requests))
    }

    /// 99th percentile latency in ms, `histogram_quantile` style; `None` without data.
    pub fn p99_ms(&self) -> Option<f64> {
        self.latency.as_ref().and_then(|h| h.quantile(0.99))
    }

    /// The value of a built-in metric computed from this traffic.
    pub fn builtin(&self, metric: BuiltinMetric) -> Option<f64> {
        match metric {
            BuiltinMetric::RequestSuccessRate => self.success_rate_pct(),
            BuiltinMetric::RequestDuration => self.p99_ms(),
        }
    }
}

/// A source of metrics for checks and for the judge.
///
/// Implementations: [`prometheus::PrometheusProvider`] (PromQL over the Prometheus HTTP API)
/// and [`scrape::ProxyScrapeProvider`] (reads `serin-proxy` `/metrics` directly).
pub trait MetricsProvider: Send + Sync {
    /// `prometheus` or `proxy-scrape` (a stable label).
    fn kind(&self) -> &'static str;

    /// Checks that the backend answers (run once at initialization).
    fn probe(&self) -> BoxFuture<'_, Result<(), AnalysisError>>;

    /// The Prometheus base URL this provider queries, when it is a Prometheus: a platform
    /// builds a MetricTemplate's own client (its `secretRef`, `headers`, `insecureSkipVerify`)
    /// on this address when the template names none. `None` for other backends.
    fn prometheus_address(&self) -> Option<&str> {
        None
    }

    /// Measures a built-in check for the canary of `target` over `window`, with the request
    /// count as sample size.
    fn builtin<'a>(
        &'a self,
        metric: BuiltinMetric,
        target: &'a Target,
        window: Duration,
    ) -> BoxFuture<'a, Result<Observed, AnalysisError>>;

    /// Runs a rendered `MetricTemplate` query and returns its single value.
    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<Observed, AnalysisError>>;

    /// One arm's traffic over the `window` ending now.
    fn arm_traffic<'a>(
        &'a self,
        target: &'a Target,
        arm: ArmRole,
        window: Duration,
    ) -> BoxFuture<'a, Result<ArmTraffic, AnalysisError>>;

    /// One arm's traffic since `since` (wall clock): the cumulative readings the judge's
    /// [`crate::JudgeState::observe_cumulative`] takes, with `since` the start of the analysis.
    /// The default asks [`MetricsProvider::arm_traffic`] for the window from `since` to now
    /// (whole seconds, at least one).
    fn arm_traffic_since<'a>(
        &'a self,
        target: &'a Target,
        arm: ArmRole,
        since: SystemTime,
    ) -> BoxFuture<'a, Result<ArmTraffic, AnalysisError>> {
        let elapsed = SystemTime::now().duration_since(since).unwrap_or_default();
        let window = Duration::from_secs(elapsed.as_secs_f64().ceil().max(1.0) as u64);
        self.arm_traffic(target, arm, window)
    }
}

/// One judge look: reads both arms since `since` (the start of the analysis) and feeds them to
/// `state`. Persist `state` between ticks (it is serde-serializable).
pub async fn run_judge(
    provider: &dyn MetricsProvider,
    target: &Target,
    since: SystemTime,
    config: &JudgeConfig,
    state: &mut JudgeState,
) -> Result<JudgeResult, AnalysisError> {
    let (canary, primary) = arms_since(provider, target, since).await?;
    Ok(state.observe_cumulative(config, &canary, &primary))
}

/// Both arms' traffic since `since`, canary first: what the judge and the charts compare.
pub async fn arms_since(
    provider: &dyn MetricsProvider,
    target: &Target,
    since: SystemTime,
) -> Result<(ArmTraffic, ArmTraffic), AnalysisError> {
    let canary = provider
        .arm_traffic_since(target, ArmRole::Canary, since)
        .await?;
    let primary = provider
        .arm_traffic_since(target, ArmRole::Primary, since)
        .await?;
    Ok((canary, primary))
}

/// Measures one check with `provider` and judges it. Errors from the backend are returned as
/// errors (Flagger counts them as a failed check; the engine decides).
pub async fn run_check(
    provider: &dyn MetricsProvider,
    check: &MetricCheck,
    target: &Target,
    no_data: &NoDataConfig,
) -> Result<CheckResult, AnalysisError> {
    let observed = match &check.source {
        MetricSource::Builtin(metric) => provider.builtin(*metric, target, check.interval).await?,
        MetricSource::Template { query, variables } => {
            let rendered = render(query, &target.template_context(check.interval, variables))?;
            let mut observed = provider.query(&rendered).await?;
            observed.query = Some(rendered);
            observed
        }
    };
    Ok(evaluate(check, observed, no_data))
}

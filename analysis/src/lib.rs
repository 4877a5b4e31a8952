//! `serin-analysis`: metric providers, Flagger-compatible checks and the statistical
//! canary-versus-primary judge.
//!
//! What it is: the library the controller asks once per tick "is the canary healthy enough to
//! go on?". It measures (Prometheus via `prometheus-http-query`, or `serin-proxy` `/metrics`
//! scraped directly), renders `MetricTemplate` queries with Flagger's variables, judges
//! threshold checks with an explicit no-data policy, and runs a sequential canary-versus-primary
//! judge whose false-rollback rate stays below `alpha` however often it looks.
//!
//! What it is not: it does not read Kubernetes objects or Secrets (the runtime maps Canary and
//! MetricTemplate fields into [`MetricSpec`], [`NoDataConfig`], [`JudgeConfig`] and provider
//! configs), it does not decide what a verdict does to the rollout (the engine does), and it
//! depends on no other Serin crate.
//!
//! A tick, in short:
//!
//! ```no_run
//! # async fn tick() -> Result<(), serin_analysis::AnalysisError> {
//! use serin_analysis::*;
//! let provider = ProxyScrapeProvider::connect(ProxyScrapeConfig::new(vec![
//!     "http://127.0.0.1:4191/metrics".into(),
//! ]))
//! .await?;
//! let target = Target::flagger("podinfo", "test", "podinfo", None);
//! let check = MetricCheck::from_spec(
//!     "spec.analysis.metrics[0]",
//!     &MetricSpec {
//!         name: "request-success-rate".into(),
//!         interval: Some("1m".into()),
//!         threshold_range: Some(ThresholdRange { min: Some(99.0), max: None }),
//!         ..MetricSpec::default()
//!     },
//! )?;
//! let result = run_check(&provider, &check, &target, &NoDataConfig::default()).await?;
//! println!("{} {:?} {}", result.verdict, result.value, result.reason);
//! # Ok(()) }
//! ```

mod check;
mod duration;
mod error;
mod histogram;
mod judge;
pub mod planner;
pub mod promtext;
mod provider;
mod queries;
pub mod stats;
mod target;
mod template;
#[cfg(feature = "test-support")]
pub mod testing;

pub use check::{
    BuiltinMetric, CheckResult, DEFAULT_INTERVAL, MetricCheck, MetricSource, MetricSpec,
    NoDataConfig, NoDataPolicy, Observed, ThresholdRange, Verdict, evaluate,
};
pub use duration::{format_duration, parse_duration};
pub use error::AnalysisError;
pub use histogram::{Histogram, LINKERD_LATENCY_BUCKETS_MS};
pub use judge::{
    ERROR_ALPHA_SHARE, JudgeConfig, JudgeResult, JudgeState, LATENCY_QUANTILES, LatencyEvidence,
    MIXTURE, OnInconclusive, PASS_MIXTURE, PHI_PRIOR, PHI_PRIOR_LOOKS, QuantileEvidence,
    TestEvidence,
};
pub use provider::aws;
pub use provider::cloudwatch;
pub use provider::datadog;
pub use provider::dynatrace;
pub use provider::newrelic;
pub use provider::prometheus::{
    DEFAULT_TIMEOUT, PrometheusAuth, PrometheusConfig, PrometheusProvider,
};
pub use provider::registry::{
    Credentials, ProviderRegistry, ProviderSettings, QUERIED_PROVIDERS, TemplateProvider,
    run_template_check,
};
pub use provider::scrape::{ProxyScrapeConfig, ProxyScrapeProvider};
pub use provider::splunk;
pub use provider::{ArmTraffic, BoxFuture, MetricsProvider, arms_since, run_check, run_judge};
pub use queries::{Mesh, arm_traffic_queries, builtin_query, canary_request_count_query};
pub use target::{Arm, ArmRole, Target};
pub use template::{TemplateContext, check as check_template, render};

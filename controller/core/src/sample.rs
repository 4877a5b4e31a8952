//! [`Sample`]: what one analysis tick measured, canary and primary side by side, and the
//! statistical judge's evidence. The runtime measures it and records it in the history (kind
//! `Measured`), so the dashboard can chart both arms over a run and show why the judge decided.
//! The engine never reads it: decisions come from [`crate::CheckResult`]s.

use serde::{Deserialize, Serialize};

use crate::Verdict;

/// Both arms over one tick's window, and the judge's evidence when it looked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Length of the measured window, in seconds.
    pub window_secs: u64,
    /// The canary weight in force during the window (set by the runtime).
    pub canary_weight: u32,
    /// The canary's traffic.
    pub canary: ArmSample,
    /// The primary's traffic.
    pub primary: ArmSample,
    /// The judge's look in this tick, when the Canary turns the judge on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeSample>,
}

/// One arm's traffic over a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmSample {
    /// Responses counted.
    pub requests: u64,
    /// Percentage of responses that were not failures; `None` without requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// 99th percentile latency in milliseconds; `None` without data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<f64>,
}

/// The judge's verdict at one look, with its evidence per metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeSample {
    /// Pass, fail or inconclusive.
    pub verdict: Verdict,
    /// One sentence saying why.
    pub reason: String,
    /// Canary requests the judge has used so far in the run.
    pub canary_requests: u64,
    /// Primary requests the judge has used so far in the run.
    pub primary_requests: u64,
    /// One entry per tested metric (error rate, then latency once it is tested).
    pub evidence: Vec<JudgeEvidence>,
}

/// The judge's test of one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeEvidence {
    /// `errorRate` or `latency`.
    pub metric: String,
    /// The canary's value (error rate in percent; latency: p99 in ms, or the slow-request rate
    /// in percent when no p99 is known).
    pub canary: f64,
    /// The primary's value, in the same unit.
    pub primary: f64,
    /// The always-valid p-value of the sequential test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The false-rollback budget the p-value is compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// The difference considered harmless (percentage points for the error rate, percent for
    /// latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// This metric's own verdict: fail once its test crossed, pass once its non-inferiority
    /// is shown, inconclusive in between.
    pub verdict: Verdict,
    /// The margin a pass must show (percent of the primary's value; for the error rate the
    /// larger of the relative and the absolute margin, in percentage points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// What a pass claims, e.g. `canary error <= 1.75%` (shown or not, see `verdict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

//! Chart samples and judge evidence for the history: both arms measured side by side over one
//! tick's window ([`measure`]), and the judge's last look per Canary ([`LastJudge`]) turned into
//! the engine's [`JudgeSample`]. The analyzers hand them to the driver through
//! [`crate::adapters::Analyzer::sample`]; the driver records them as `Measured` history entries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serin_analysis::{
    AnalysisError, ArmTraffic, JudgeConfig, JudgeResult, MetricsProvider, Target, TestEvidence,
};
use serin_core::{ArmSample, JudgeEvidence, JudgeSample, Sample, Verdict};

use crate::adapters::CanaryContext;
use crate::measure::verdict;

/// One arm's traffic as the history records it.
pub fn arm(t: &ArmTraffic) -> ArmSample {
    ArmSample {
        requests: t.requests.max(0.0).round() as u64,
        success_rate: t.success_rate_pct(),
        latency_p99_ms: t.p99_ms(),
    }
}

/// Canary and primary since `since` (the later of the run's start and one interval ago: a
/// window reaching before the run would mix in the previous run's canary).
pub async fn measure(
    provider: &dyn MetricsProvider,
    target: &Target,
    since: SystemTime,
) -> Result<Sample, AnalysisError> {
    let (canary, primary) = serin_analysis::arms_since(provider, target, since).await?;
    let window = SystemTime::now().duration_since(since).unwrap_or_default();
    Ok(Sample {
        window_secs: window.as_secs().max(1),
        canary_weight: 0,
        canary: arm(&canary),
        primary: arm(&primary),
        judge: None,
    })
}

/// One comparison as the history records it: `canary`/`primary` are the values compared
/// (error rates in percent, latency quantiles in ms).
#[allow(clippy::too_many_arguments)]
fn evidence(
    metric: &str,
    test: &TestEvidence,
    canary: f64,
    primary: f64,
    tolerance: f64,
    margin: f64,
    alpha: f64,
) -> JudgeEvidence {
    let verdict = if test.max_e_value >= test.fail_at {
        Verdict::Fail
    } else if test.shown {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    };
    JudgeEvidence {
        metric: metric.to_string(),
        canary,
        primary,
        p_value: Some(test.p_value),
        // The share of alpha this test spends: the p-value fails it at or below this.
        alpha: (test.fail_at > 0.0).then(|| 1.0 / test.fail_at),
        tolerance: Some(tolerance),
        verdict,
        margin: Some(margin),
        claim: Some(if test.shown {
            format!(
                "{} with {}% confidence",
                test.claim,
                trim_pct(100.0 * (1.0 - alpha))
            )
        } else {
            format!("{} not shown yet", test.claim)
        }),
    }
}

fn trim_pct(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The judge's look as the history records it.
pub fn judge(r: &JudgeResult, config: &JudgeConfig) -> JudgeSample {
    let overall = verdict(r.verdict);
    let error_margin = (r.error.primary_rate_pct * config.error_rate_margin / 100.0)
        .max(config.error_rate_margin_absolute);
    let mut list = vec![evidence(
        "errorRate",
        &r.error,
        r.error.canary_rate_pct,
        r.error.primary_rate_pct,
        config.error_rate_tolerance,
        error_margin,
        config.alpha,
    )];
    if let Some(l) = &r.latency {
        for q in &l.quantiles {
            let name = if q.quantile < 0.9 {
                "latencyP50"
            } else {
                "latencyP99"
            };
            list.push(evidence(
                name,
                &q.test,
                q.canary_ms.unwrap_or(0.0),
                q.primary_ms.unwrap_or(0.0),
                config.latency_tolerance,
                config.latency_margin,
                config.alpha,
            ));
        }
    }
    JudgeSample {
        verdict: overall,
        reason: r.reason.clone(),
        canary_requests: r.error.canary_requests,
        primary_requests: r.error.primary_requests,
        evidence: list,
    }
}

/// The judge's last look per Canary, kept until the tick's sample collects it.
#[derive(Default)]
pub struct LastJudge(Mutex<HashMap<(String, String), JudgeSample>>);

impl LastJudge {
    /// Remembers the look just taken for `ctx`.
    pub fn remember(&self, ctx: &CanaryContext, look: JudgeSample) {
        if let Ok(mut m) = self.0.lock() {
            m.insert((ctx.id.namespace.clone(), ctx.id.name.clone()), look);
        }
    }

    /// The look taken since the last call, if any.
    pub fn take(&self, ctx: &CanaryContext) -> Option<JudgeSample> {
        self.0
            .lock()
            .ok()?
            .remove(&(ctx.id.namespace.clone(), ctx.id.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_evidence(canary_rate: f64, max_e: f64) -> TestEvidence {
        TestEvidence {
            canary_requests: 400,
            canary_events: (canary_rate * 4.0) as u64,
            primary_requests: 400,
            primary_events: 0,
            canary_rate_pct: canary_rate,
            primary_rate_pct: 0.0,
            e_value: max_e,
            max_e_value: max_e,
            p_value: (1.0 / max_e).min(1.0),
            fail_at: 400.0,
            pass_e_value: 1.0,
            pass_at: 200.0,
            shown: false,
            dispersion: 1.0,
            claim: "canary error <= 0.25%".into(),
        }
    }

    #[test]
    fn a_failed_judge_look_keeps_the_failing_metric_and_its_numbers() {
        let r = JudgeResult {
            verdict: serin_analysis::Verdict::Fail,
            reason: "canary error rate 9.00% vs primary 0.00%".into(),
            looks: 3,
            error: test_evidence(9.0, 1.0e6),
            latency: None,
            step_up: false,
        };
        let config = JudgeConfig::default();
        let j = judge(&r, &config);
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!((j.canary_requests, j.primary_requests), (400, 400));
        assert_eq!(j.evidence.len(), 1);
        let e = &j.evidence[0];
        assert_eq!(e.metric, "errorRate");
        assert_eq!((e.canary, e.primary), (9.0, 0.0));
        assert_eq!(e.verdict, Verdict::Fail);
        assert_eq!(e.alpha, Some(1.0 / 400.0));
        assert!(e.p_value.unwrap() <= e.alpha.unwrap());
    }

    #[test]
    fn before_min_requests_a_quiet_metric_is_inconclusive_not_passed() {
        let r = JudgeResult {
            verdict: serin_analysis::Verdict::Inconclusive,
            reason: "waiting for minRequests".into(),
            looks: 1,
            error: test_evidence(0.0, 1.0),
            latency: None,
            step_up: false,
        };
        let j = judge(&r, &JudgeConfig::default());
        assert_eq!(j.evidence[0].verdict, Verdict::Inconclusive);
        assert_eq!(j.evidence[0].margin, Some(0.5));
        assert_eq!(
            j.evidence[0].claim.as_deref(),
            Some("canary error <= 0.25% not shown yet")
        );
    }

    #[test]
    fn a_shown_margin_reads_as_a_confidence_statement() {
        let mut error = test_evidence(1.0, 1.0);
        error.shown = true;
        error.claim = "canary error <= 1.90%".into();
        let r = JudgeResult {
            verdict: serin_analysis::Verdict::Pass,
            reason: "non-inferior".into(),
            looks: 9,
            error,
            latency: None,
            step_up: false,
        };
        let j = judge(&r, &JudgeConfig::default());
        assert_eq!(j.evidence[0].verdict, Verdict::Pass);
        assert_eq!(
            j.evidence[0].claim.as_deref(),
            Some("canary error <= 1.90% with 99% confidence")
        );
    }

    #[test]
    fn an_arm_without_requests_has_no_rates() {
        let a = arm(&ArmTraffic::default());
        assert_eq!(a.requests, 0);
        assert_eq!(a.success_rate, None);
        assert_eq!(a.latency_p99_ms, None);
    }
}

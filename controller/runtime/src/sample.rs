//! Chart samples and judge evidence for the history: both arms measured side by side over one
//! tick's window ([`measure`]), and the judge's last look per Canary ([`LastJudge`]) turned into
//! the engine's [`JudgeSample`]. The analyzers hand them to the driver through
//! [`crate::adapters::Analyzer::sample`]; the driver records them as `Measured` history entries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serin_analysis::{
    AnalysisError, ArmRole, ArmTraffic, JudgeConfig, JudgeResult, MetricsProvider, Target,
    TestEvidence,
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
    let canary = provider
        .arm_traffic_since(target, ArmRole::Canary, since)
        .await?;
    let primary = provider
        .arm_traffic_since(target, ArmRole::Primary, since)
        .await?;
    let window = SystemTime::now().duration_since(since).unwrap_or_default();
    Ok(Sample {
        window_secs: window.as_secs().max(1),
        canary_weight: 0,
        canary: arm(&canary),
        primary: arm(&primary),
        judge: None,
    })
}

fn evidence(metric: &str, test: &TestEvidence, overall: Verdict, tolerance: f64) -> JudgeEvidence {
    // A test whose largest e-value reached its bar has failed for good; otherwise it stands
    // where the judge as a whole stands (inconclusive before minRequests, else passing).
    let verdict = if test.max_e_value >= test.fail_at {
        Verdict::Fail
    } else if overall == Verdict::Inconclusive {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    JudgeEvidence {
        metric: metric.to_string(),
        canary: test.canary_rate_pct,
        primary: test.primary_rate_pct,
        p_value: Some(test.p_value),
        // The share of alpha this test spends: the p-value fails it at or below this.
        alpha: (test.fail_at > 0.0).then(|| 1.0 / test.fail_at),
        tolerance: Some(tolerance),
        verdict,
    }
}

/// The judge's look as the history records it.
pub fn judge(r: &JudgeResult, config: &JudgeConfig) -> JudgeSample {
    let overall = verdict(r.verdict);
    let mut list = vec![evidence(
        "errorRate",
        &r.error,
        overall,
        config.error_rate_tolerance,
    )];
    if let Some(l) = &r.latency {
        // What the latency test counts: requests slower than the primary's p99 (plus the
        // tolerance), in percent of each arm's requests.
        list.push(evidence(
            "slowRequests",
            &l.test,
            overall,
            config.latency_tolerance,
        ));
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
        };
        let j = judge(&r, &JudgeConfig::default());
        assert_eq!(j.evidence[0].verdict, Verdict::Inconclusive);
    }

    #[test]
    fn an_arm_without_requests_has_no_rates() {
        let a = arm(&ArmTraffic::default());
        assert_eq!(a.requests, 0);
        assert_eq!(a.success_rate, None);
        assert_eq!(a.latency_p99_ms, None);
    }
}

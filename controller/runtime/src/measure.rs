//! What the Kubernetes and local analyzers share: turning `serin-analysis` results into engine
//! check results, the Canary's no-data and judge settings into `serin-analysis` config, and the
//! judge's per-run sequential state. Measuring itself (which provider, which window) stays in
//! each analyzer.

use std::collections::HashMap;
use std::sync::Mutex;

use serin_analysis::{
    ArmTraffic, JudgeConfig, JudgeResult, JudgeState, MetricSpec, NoDataConfig, NoDataPolicy,
    ThresholdRange,
};
use serin_core::{Bound, CheckResult, Verdict};

use crate::adapters::{AnalysisState, CanaryContext};
use crate::plan::JUDGE_CHECK;

/// A check that could not be measured. Never a pass: the step holds and the history says why.
pub fn inconclusive(name: &str, detail: String) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        verdict: Verdict::Inconclusive,
        value: None,
        bound: Bound::default(),
        samples: None,
        detail,
    }
}

pub fn verdict(v: serin_analysis::Verdict) -> Verdict {
    match v {
        serin_analysis::Verdict::Pass => Verdict::Pass,
        serin_analysis::Verdict::Fail => Verdict::Fail,
        serin_analysis::Verdict::Inconclusive => Verdict::Inconclusive,
    }
}

/// The judge's look as the engine and the history see it at the canary's current weight
/// `canary_weight`: at a weight step that is not the last, non-inferiority shown at
/// `stepAlpha` is a Pass that raises the weight ([`JudgeResult::verdict_at`]; the reason says
/// which confidence was shown); at the last step, where a Pass promotes, and in every A/B or
/// Blue/Green iteration only the promotion confidence `1 - alpha` passes.
pub fn at_weight(mut r: JudgeResult, plan: &serin_core::Plan, canary_weight: u32) -> JudgeResult {
    let last_step = match &plan.strategy {
        serin_core::Strategy::Canary { step_weights, .. } => {
            step_weights.iter().all(|w| *w <= canary_weight)
        }
        _ => true,
    };
    r.verdict = r.verdict_at(last_step);
    r
}

/// A measured threshold check, as the engine sees it.
pub fn check_result(r: serin_analysis::CheckResult) -> CheckResult {
    CheckResult {
        name: r.name,
        verdict: verdict(r.verdict),
        value: r.value,
        bound: Bound {
            min: r.threshold.min,
            max: r.threshold.max,
        },
        samples: r.sample_size,
        detail: r.reason,
    }
}

/// The Canary's `spec.analysis.noData` (already defaulted by serin-api).
pub fn no_data(n: &serin_api::Normalized) -> NoDataConfig {
    NoDataConfig {
        min_requests: n.no_data.min_requests,
        policy: match n.no_data.policy {
            Some(serin_api::NoDataPolicy::Fail) => NoDataPolicy::Fail,
            Some(serin_api::NoDataPolicy::Pass) => NoDataPolicy::Pass,
            _ => NoDataPolicy::Wait,
        },
    }
}

/// The analysis spec of the Canary's metric check `m` (already defaulted by serin-api) looking
/// back over `interval` (the metric's own, or less where the platform must not look past the
/// run's start), with the MetricTemplate's query when it names one.
pub fn metric_spec(
    m: &serin_api::MetricCheck,
    interval: std::time::Duration,
    template_query: Option<String>,
) -> MetricSpec {
    MetricSpec {
        name: m.name.clone(),
        interval: Some(serin_analysis::format_duration(interval)),
        threshold_range: Some(ThresholdRange {
            min: m.min,
            max: m.max,
        }),
        threshold: None,
        template_query,
        template_variables: m.template_variables.clone(),
    }
}

/// The Canary's `spec.analysis.judge` (already defaulted by serin-api).
pub fn judge_config(j: &serin_api::JudgeSettings) -> JudgeConfig {
    JudgeConfig {
        enabled: true,
        alpha: j.alpha,
        min_requests: j.min_requests,
        error_rate_tolerance: j.error_rate_tolerance,
        latency_tolerance: j.latency_tolerance,
        error_rate_margin: j.error_rate_margin,
        error_rate_margin_absolute: j.error_rate_margin_absolute,
        latency_margin: j.latency_margin,
        step_alpha: j.step_alpha,
        // One enum in both crates: serin_core::InconclusivePolicy.
        on_inconclusive: j.on_inconclusive,
    }
}

/// The judge's sequential state per (namespace, canary, run), in memory. Where the platform
/// persists it with the status ([`Judges::observe_from`] given a saved state) the saved state
/// is authoritative, so a restarted controller continues the same sequential test; otherwise a
/// restart starts a fresh sequence, which stays valid at alpha (it only forgets earlier looks).
#[derive(Default)]
pub struct Judges(Mutex<HashMap<(String, String, u64), JudgeState>>);

impl Judges {
    /// One look of run `run` with cumulative readings since the run started.
    pub fn observe(
        &self,
        ctx: &CanaryContext,
        run: u64,
        config: &JudgeConfig,
        canary: &ArmTraffic,
        primary: &ArmTraffic,
    ) -> Result<JudgeResult, CheckResult> {
        let key = (ctx.id.namespace.clone(), ctx.id.name.clone(), run);
        let Ok(mut judges) = self.0.lock() else {
            return Err(inconclusive(JUDGE_CHECK, "judge state unavailable".into()));
        };
        // Forget finished runs of this canary.
        judges.retain(|k, _| !(k.0 == key.0 && k.1 == key.1 && k.2 != key.2));
        Ok(judges
            .entry(key)
            .or_default()
            .observe_cumulative(config, canary, primary))
    }

    /// One look of run `run`, continuing from `saved` (the state persisted with the status after
    /// the previous look) when the platform persists it, else from memory. Returns the verdict
    /// and the state to persist with this tick's status.
    pub fn observe_from(
        &self,
        ctx: &CanaryContext,
        run: u64,
        config: &JudgeConfig,
        canary: &ArmTraffic,
        primary: &ArmTraffic,
        saved: Option<&AnalysisState>,
    ) -> Result<(JudgeResult, AnalysisState), CheckResult> {
        let key = (ctx.id.namespace.clone(), ctx.id.name.clone(), run);
        let Ok(mut judges) = self.0.lock() else {
            return Err(inconclusive(JUDGE_CHECK, "judge state unavailable".into()));
        };
        judges.retain(|k, _| !(k.0 == key.0 && k.1 == key.1 && k.2 != key.2));
        let mut state = match saved {
            None => judges.get(&key).cloned().unwrap_or_default(),
            Some(s) => restore(s, run, ctx),
        };
        let result = state.observe_cumulative(config, canary, primary);
        let persisted = AnalysisState {
            run,
            judge: serde_json::to_value(&state).ok(),
        };
        judges.insert(key, state);
        Ok((result, persisted))
    }
}

/// The judge state saved for `run`; a fresh one when the saved state belongs to another run (or
/// none was saved yet). A saved state that no longer reads (written by an incompatible version)
/// also starts a fresh sequence, which stays valid at alpha; that is logged.
fn restore(saved: &AnalysisState, run: u64, ctx: &CanaryContext) -> JudgeState {
    match (&saved.judge, saved.run == run) {
        (Some(v), true) => serde_json::from_value(v.clone()).unwrap_or_else(|e| {
            tracing::warn!(canary = %ctx.id.name, ns = %ctx.id.namespace, run, error = %e,
                "saved judge state is unreadable; starting a fresh sequential test");
            JudgeState::default()
        }),
        _ => JudgeState::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_api::{Canary, CanaryAnalysis, Normalized};

    /// A Canary stepping 10, 20 ... 50.
    fn canary_10_to_50() -> Canary {
        serin_api::testing::canary(CanaryAnalysis {
            step_weight: Some(10),
            max_weight: Some(50),
            ..Default::default()
        })
    }

    /// The plan of a Canary stepping 10, 20 ... 50.
    fn steps_10_to_50() -> serin_core::Plan {
        crate::plan::plan(&Normalized::from_canary(&canary_10_to_50()).expect("a valid Canary"))
    }

    #[test]
    fn an_empty_judge_block_gets_the_judges_own_defaults() {
        // serin-api defaults the Canary's judge block and serin-analysis builds
        // `JudgeConfig::default` (judge-sim, the analysis tests), both from
        // serin_core::judge_defaults: this holds the wiring, that every field serin-api
        // defaults reaches the same JudgeConfig field through `judge_config` and that neither
        // crate defaults a field the other leaves to someone else.
        let mut c = canary_10_to_50();
        c.spec.analysis.judge = Some(serin_api::Judge::default());
        let n = Normalized::from_canary(&c).expect("a valid Canary");
        let j = n
            .judge
            .as_ref()
            .expect("an empty judge block turns the judge on");
        assert_eq!(judge_config(j), JudgeConfig::default());
    }

    fn look(verdict: serin_analysis::Verdict, step_up: bool) -> JudgeResult {
        let mut state = serin_analysis::JudgeState::default();
        let empty = ArmTraffic::default();
        let mut r = state.observe_window(&JudgeConfig::default(), &empty, &empty);
        r.verdict = verdict;
        r.step_up = step_up;
        r
    }

    #[test]
    fn a_step_up_raises_the_weight_below_the_last_step_and_never_promotes() {
        use serin_analysis::Verdict as J;
        let plan = steps_10_to_50();
        for weight in [10, 20, 40] {
            assert_eq!(
                at_weight(look(J::Inconclusive, true), &plan, weight).verdict,
                J::Pass,
                "weight {weight}"
            );
        }
        // At the last step a Pass promotes: only the promotion confidence counts.
        assert_eq!(
            at_weight(look(J::Inconclusive, true), &plan, 50).verdict,
            J::Inconclusive
        );
        assert_eq!(at_weight(look(J::Pass, true), &plan, 50).verdict, J::Pass);
        // Nothing shown stays inconclusive; a Fail stays a Fail.
        assert_eq!(
            at_weight(look(J::Inconclusive, false), &plan, 10).verdict,
            J::Inconclusive
        );
        assert_eq!(at_weight(look(J::Fail, false), &plan, 10).verdict, J::Fail);
    }
}

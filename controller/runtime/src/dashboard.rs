//! What every platform's dashboard source shares: a Canary's analysis settings as the dashboard
//! shows them. The stores themselves live with their platform (`serin-kube`, `serin-local`).

use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serin_analysis::planner::{Schedule, TrafficModel, estimate, plan_duration};
use serin_dashboard::model::{AnalysisInfo, MetricInfo, PlanInfo, PlanLine, WebhookInfo};

/// Total request rates the dashboard's plan shows (requests per second).
pub const PLAN_RATES: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];
/// The primary's error rate the dashboard's plan assumes (as `serin plan`'s default).
pub const PLAN_ERROR_RATE: f64 = 0.01;
/// Simulated rollouts per scenario and rate: enough for a median, cheap enough to compute
/// once per Canary spec.
pub const PLAN_TRIALS: usize = 100;

/// A duration as a manifest writes it (`30s`, `1m`, `1m30s`).
fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// A Canary's analysis settings (defaults applied) for display.
pub fn analysis_info(n: &serin_api::Normalized) -> AnalysisInfo {
    let (strategy, max_weight, step_weights, iterations) = match &n.strategy {
        serin_api::Strategy::Canary {
            weights,
            max_weight,
            ..
        } => ("canary", Some(*max_weight), weights.clone(), None),
        serin_api::Strategy::AbTesting { iterations, .. } => {
            ("ab", None, Vec::new(), Some(*iterations))
        }
        serin_api::Strategy::BlueGreen { iterations } => {
            ("blueGreen", None, Vec::new(), Some(*iterations))
        }
    };
    AnalysisInfo {
        strategy: strategy.to_string(),
        interval: Some(duration_text(n.interval)),
        threshold: Some(n.threshold),
        max_weight,
        step_weights,
        iterations,
        metrics: n
            .metrics
            .iter()
            .map(|m| MetricInfo {
                name: m.name.clone(),
                min: m.min,
                max: m.max,
                interval: Some(duration_text(m.interval)),
            })
            .collect(),
        webhooks: n
            .webhooks
            .iter()
            .map(|w| WebhookInfo {
                name: w.name.clone(),
                webhook_type: w.hook_type.as_str().to_string(),
                url: Some(w.url.clone()),
            })
            .collect(),
        judge: n.judge.is_some(),
        plan: plan_info(n),
    }
}

/// `serin plan`'s figures at [`PLAN_RATES`] for a weighted canary with the judge on. The
/// simulation is seeded, so the figures depend only on the judge settings and the schedule:
/// they are computed once per distinct pair and remembered (specs change rarely; the
/// dashboard's sources call this on every change of a Canary).
pub fn plan_info(n: &serin_api::Normalized) -> Option<PlanInfo> {
    static CACHE: OnceLock<Mutex<HashMap<String, PlanInfo>>> = OnceLock::new();
    let j = n.judge.as_ref()?;
    let serin_api::Strategy::Canary { weights, .. } = &n.strategy else {
        return None;
    };
    let config = crate::measure::judge_config(j);
    let schedule = Schedule {
        step_weights: weights.clone(),
        interval: n.interval,
        step_budget: Some(j.step_budget),
        run_budget: Some(j.run_budget),
    };
    let key = format!("{config:?}{schedule:?}");
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Some(hit.clone());
    }
    let policy = config.on_inconclusive.as_str();
    let mut lines = Vec::new();
    for rps in PLAN_RATES {
        let traffic = TrafficModel {
            rps,
            error_rate: PLAN_ERROR_RATE,
        };
        // The schedule was validated with the Canary; an estimate error would be a bug in
        // that validation, and the dashboard then shows no plan rather than a wrong one.
        let e = estimate(&config, &schedule, &traffic, PLAN_TRIALS).ok()?;
        let text = |d: Option<Duration>| d.map(|d| plan_duration(Some(d)));
        lines.push(PlanLine {
            rps,
            healthy_promoted_pct: 100.0 * e.healthy.promoted,
            healthy_to_promote: text(e.healthy.median_to_promote),
            regression_failed_pct: 100.0 * e.regression.failed,
            regression_to_fail: text(e.regression.median_to_fail),
            inconclusive_pct: 100.0 * e.healthy.inconclusive,
            summary: e.summary(rps, policy),
        });
    }
    let plan = PlanInfo {
        error_rate_pct: 100.0 * PLAN_ERROR_RATE,
        trials: PLAN_TRIALS,
        lines,
    };
    // Bounded: a controller sees few distinct schedules; start over rather than grow.
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= 256 {
        map.clear();
    }
    map.insert(key, plan.clone());
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(judge: &str) -> serin_api::Normalized {
        let text = format!(
            "apiVersion: serin.dev/v1beta1
kind: Canary
metadata: {{name: podinfo, namespace: test}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service: {{port: 9898}}
  analysis:
    interval: 1m
    stepWeights: [10, 20, 30, 40, 50]
{judge}"
        );
        let doc = serin_api::check_manifests(&text)
            .into_iter()
            .next()
            .expect("one document");
        let serin_api::Outcome::Valid(serin_api::Resource::Canary(c)) = doc.outcome else {
            panic!("a valid Canary: {:?}", doc.outcome);
        };
        serin_api::Normalized::from_canary(&c).expect("normalizes")
    }

    #[test]
    fn the_plan_shows_each_traffic_level_and_is_remembered() {
        let n = normalized("    judge: {onInconclusive: rollback, stepBudget: 30m}\n");
        let plan = analysis_info(&n).plan.expect("a plan with the judge on");
        assert_eq!(plan.trials, PLAN_TRIALS);
        let rates: Vec<f64> = plan.lines.iter().map(|l| l.rps).collect();
        assert_eq!(rates, PLAN_RATES);
        // At 1 rps nothing can be proven: the run ends by onInconclusive after the step budget.
        let quiet = &plan.lines[0];
        assert_eq!(quiet.healthy_promoted_pct, 0.0);
        assert_eq!(quiet.inconclusive_pct, 100.0);
        assert_eq!(
            quiet.summary,
            "at 1 rps this rollout can never prove anything; it will end by onInconclusive (rollback) after 30m"
        );
        // At 1,000 rps a healthy canary is promoted and a doubled error rate rolled back.
        let busy = &plan.lines[3];
        assert!(busy.healthy_promoted_pct > 50.0, "{busy:?}");
        assert!(busy.regression_failed_pct > 50.0, "{busy:?}");
        assert!(busy.healthy_to_promote.is_some() && busy.regression_to_fail.is_some());
        assert!(busy.summary.contains("typically promoted in"), "{busy:?}");
        // Seeded, so the same spec gives the same figures (and the cache answers).
        assert_eq!(plan_info(&n), Some(plan));
    }

    #[test]
    fn no_plan_without_the_judge() {
        assert_eq!(analysis_info(&normalized("")).plan, None);
    }
}

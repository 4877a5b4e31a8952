//! What every platform's dashboard source shares: a Canary's analysis settings as the dashboard
//! shows them. The stores themselves live with their platform (`serin-kube`, `serin-local`).

use std::time::Duration;

use serin_dashboard::model::{AnalysisInfo, MetricInfo, WebhookInfo};

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
    }
}

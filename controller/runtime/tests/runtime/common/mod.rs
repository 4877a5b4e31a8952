//! Shared fixtures of the runtime's integration tests.

#![allow(dead_code)]

pub use serin_controller::testing::receiver;

/// A canary plan with `step_weights`, `threshold` failed checks to roll back and `checks`; every
/// other field as a Canary that sets nothing else (1m interval, 10m deadline, 100% ready).
pub fn canary_plan(
    step_weights: Vec<u32>,
    threshold: u32,
    checks: Vec<String>,
) -> serin_core::Plan {
    serin_core::Plan {
        strategy: serin_core::Strategy::Canary {
            step_weights,
            step_weight_promotion: None,
            mirror: None,
        },
        interval: std::time::Duration::from_secs(60),
        threshold,
        progress_deadline: std::time::Duration::from_secs(600),
        skip_analysis: false,
        suspend: false,
        webhooks: vec![],
        checks,
        on_inconclusive: Default::default(),
        inconclusive_budget: Default::default(),
        primary_ready_threshold: 100,
        canary_ready_threshold: 100,
        session_affinity: None,
        revert_on_deletion: false,
    }
}

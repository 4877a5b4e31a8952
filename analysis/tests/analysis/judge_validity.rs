//! The judge's guarantees checked by simulation (seeded, so deterministic): on identical arms it
//! stays under its false-rollback budget across 30 looks, and it catches a doubled error rate.

use serin_analysis::{ArmTraffic, JudgeConfig, JudgeState, Verdict};

const LOOKS: usize = 30;
const REQUESTS: u64 = 500;

fn failures(rng: &mut fastrand::Rng, p: f64) -> f64 {
    (0..REQUESTS).filter(|_| rng.f64() < p).count() as f64
}

/// Runs `trials` canaries and returns how many the judge rolled back within 30 looks.
fn rollbacks(trials: u64, canary_error: f64, config: &JudgeConfig) -> usize {
    (0..trials)
        .filter(|t| {
            let mut rng = fastrand::Rng::with_seed(0xA11C_E000 + t);
            let mut state = JudgeState::default();
            (0..LOOKS).any(|_| {
                let canary = ArmTraffic {
                    requests: REQUESTS as f64,
                    failures: failures(&mut rng, canary_error),
                    latency: None,
                };
                let primary = ArmTraffic {
                    requests: REQUESTS as f64,
                    failures: failures(&mut rng, 0.01),
                    latency: None,
                };
                state.observe_window(config, &canary, &primary).verdict == Verdict::Fail
            })
        })
        .count()
}

#[test]
fn identical_arms_stay_under_alpha_over_thirty_looks() {
    // alpha 0.05 so that a broken guarantee shows up within a few hundred trials: a test that
    // ignored repeated looks would roll back far more than 5% here.
    let config = JudgeConfig {
        alpha: 0.05,
        ..JudgeConfig::default()
    };
    let trials = 400;
    let hits = rollbacks(trials, 0.01, &config);
    assert!(
        (hits as f64) <= 0.05 * trials as f64,
        "{hits} false rollbacks in {trials} A/A runs at alpha 0.05"
    );
}

#[test]
fn a_doubled_error_rate_is_caught() {
    let trials = 200;
    let hits = rollbacks(trials, 0.02, &JudgeConfig::default());
    assert!(
        hits as f64 >= 0.97 * trials as f64,
        "caught {hits} of {trials}"
    );
}

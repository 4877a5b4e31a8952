//! Replays synthetic canary traffic through three decision procedures and prints, per
//! procedure, how often it rolls back a healthy canary and how fast it catches bad ones.
//!
//! Setup (all procedures see the same seeded traffic): 30 looks, 500 requests per arm per
//! look, 1% base error rate, latencies log-normal (median 20 ms, sigma 0.6, so p99 ~ 81 ms)
//! recorded into Linkerd's buckets. Scenarios: A/A (identical arms), canary error rate x2 and
//! x1.5, canary latency +50% (every request 1.5x slower). 2,000 trials per scenario.
//!
//! Procedures:
//! * `serin-judge`: `JudgeState` with the default `JudgeConfig` (alpha 0.01, minRequests 100,
//!   errorRateTolerance 0, latencyTolerance 10%).
//! * `flagger-threshold`: Flagger's checks on the canary's look — request-success-rate >= 99
//!   and request-duration (p99, histogram_quantile) <= 100 ms (a tight, well-tuned bound:
//!   1.25x the true p99) — failed checks accumulate and the run rolls back when they reach
//!   `threshold: 5`.
//! * `fixed-test`: a one-sided 5% two-proportion z-test on cumulative error counts plus a
//!   one-sided 5% Mann-Whitney U test on cumulative latency buckets, repeated at every look;
//!   the first rejection rolls back.
//!
//! Run: `cargo run --release -p serin-analysis --example judge-sim [trials]`

use serin_analysis::stats::{mann_whitney_greater, two_proportion_z_p};
use serin_analysis::{ArmTraffic, BuiltinMetric, Histogram, JudgeConfig, JudgeState, Verdict};

const LOOKS: usize = 30;
const REQUESTS: usize = 500;
const BASE_ERROR: f64 = 0.01;
const LATENCY_MEDIAN_MS: f64 = 20.0;
const LATENCY_SIGMA: f64 = 0.6;
const FLAGGER_MIN_SUCCESS: f64 = 99.0;
const FLAGGER_MAX_P99_MS: f64 = 100.0;
const FLAGGER_THRESHOLD: u32 = 5;
const FIXED_ALPHA: f64 = 0.05;

#[derive(Clone, Copy)]
struct Scenario {
    canary_error: f64,
    canary_latency_scale: f64,
}

struct Look {
    canary: ArmTraffic,
    primary: ArmTraffic,
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    // Box-Muller; 1 - f64() keeps the log argument in (0, 1].
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn arm(rng: &mut fastrand::Rng, error: f64, scale: f64) -> ArmTraffic {
    let mut latency = Histogram::linkerd();
    let mut failures = 0.0;
    for _ in 0..REQUESTS {
        if rng.f64() < error {
            failures += 1.0;
        }
        let ms = scale * LATENCY_MEDIAN_MS * (LATENCY_SIGMA * normal(rng)).exp();
        latency.record(ms);
    }
    ArmTraffic {
        requests: REQUESTS as f64,
        failures,
        latency: Some(latency),
    }
}

fn trial(seed: u64, s: Scenario) -> Vec<Look> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..LOOKS)
        .map(|_| Look {
            canary: arm(&mut rng, s.canary_error, s.canary_latency_scale),
            primary: arm(&mut rng, BASE_ERROR, 1.0),
        })
        .collect()
}

/// Each procedure returns the 1-based look at which it rolls back, if it does.
fn serin_judge(looks: &[Look]) -> Option<usize> {
    let config = JudgeConfig::default();
    let mut state = JudgeState::default();
    looks.iter().enumerate().find_map(|(i, l)| {
        (state.observe_window(&config, &l.canary, &l.primary).verdict == Verdict::Fail)
            .then_some(i + 1)
    })
}

fn flagger_threshold(looks: &[Look]) -> Option<usize> {
    let mut failed_checks = 0;
    for (i, l) in looks.iter().enumerate() {
        let success = l.canary.builtin(BuiltinMetric::RequestSuccessRate);
        let p99 = l.canary.builtin(BuiltinMetric::RequestDuration);
        // Flagger stops at the first failing metric of a tick: one failed check per look.
        let ok = success.is_some_and(|v| v >= FLAGGER_MIN_SUCCESS)
            && p99.is_some_and(|v| v <= FLAGGER_MAX_P99_MS);
        if !ok {
            failed_checks += 1;
            if failed_checks >= FLAGGER_THRESHOLD {
                return Some(i + 1);
            }
        }
    }
    None
}

fn fixed_test(looks: &[Look]) -> Option<usize> {
    let (mut xc, mut nc, mut xp, mut np) = (0u64, 0u64, 0u64, 0u64);
    let mut hc = Histogram::linkerd();
    let mut hp = Histogram::linkerd();
    for (i, l) in looks.iter().enumerate() {
        xc += l.canary.failures as u64;
        nc += l.canary.requests as u64;
        xp += l.primary.failures as u64;
        np += l.primary.requests as u64;
        if let (Some(c), Some(p)) = (&l.canary.latency, &l.primary.latency) {
            hc.add(c);
            hp.add(p);
        }
        let p_err = two_proportion_z_p(xc, nc, xp, np);
        let p_lat = mann_whitney_greater(&hc, &hp).map_or(1.0, |(_, p)| p);
        if p_err <= FIXED_ALPHA || p_lat <= FIXED_ALPHA {
            return Some(i + 1);
        }
    }
    None
}

type Procedure = fn(&[Look]) -> Option<usize>;

fn pct(hits: usize, trials: usize) -> String {
    format!("{:.2}", 100.0 * hits as f64 / trials as f64)
}

fn median(mut v: Vec<usize>) -> String {
    if v.is_empty() {
        return "na".into();
    }
    v.sort_unstable();
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m].to_string()
    } else {
        let x = (v[m - 1] + v[m]) as f64 / 2.0;
        if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    }
}

fn main() {
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let procedures: [(&str, Procedure); 3] = [
        ("serin-judge", serin_judge),
        ("flagger-threshold", flagger_threshold),
        ("fixed-test", fixed_test),
    ];
    let scenarios = [
        Scenario {
            canary_error: BASE_ERROR,
            canary_latency_scale: 1.0,
        },
        Scenario {
            canary_error: 2.0 * BASE_ERROR,
            canary_latency_scale: 1.0,
        },
        Scenario {
            canary_error: 1.5 * BASE_ERROR,
            canary_latency_scale: 1.0,
        },
        Scenario {
            canary_error: BASE_ERROR,
            canary_latency_scale: 1.5,
        },
    ];
    // rollbacks[procedure][scenario] = looks at which trials rolled back. One thread per
    // scenario; each trial's traffic depends only on its seed, so results do not depend on
    // scheduling.
    let per_scenario: Vec<Vec<Vec<usize>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = scenarios
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let procedures = &procedures;
                scope.spawn(move || {
                    let mut hits = vec![Vec::new(); procedures.len()];
                    for t in 0..trials {
                        let looks = trial(0x5e21_0000 + (si as u64) * 1_000_003 + t as u64, *s);
                        for (pi, (_, run)) in procedures.iter().enumerate() {
                            if let Some(at) = run(&looks) {
                                hits[pi].push(at);
                            }
                        }
                    }
                    hits
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("simulation thread panicked"))
            .collect()
    });
    let rollbacks: Vec<Vec<Vec<usize>>> = (0..procedures.len())
        .map(|pi| per_scenario.iter().map(|s| s[pi].clone()).collect())
        .collect();
    eprintln!(
        "judge-sim: {trials} trials x {LOOKS} looks x {REQUESTS} requests/arm, base error {:.0}%, \
         latency lognormal(median {LATENCY_MEDIAN_MS} ms, sigma {LATENCY_SIGMA}); flagger: success >= \
         {FLAGGER_MIN_SUCCESS}, p99 <= {FLAGGER_MAX_P99_MS} ms, threshold {FLAGGER_THRESHOLD}; fixed: \
         alpha {FIXED_ALPHA} per look; median_looks_2x over trials that rolled back",
        BASE_ERROR * 100.0
    );
    for (pi, (name, _)) in procedures.iter().enumerate() {
        let r = &rollbacks[pi];
        println!(
            "procedure={name} false_rollback={} power_2x={} median_looks_2x={} power_1_5x={} power_latency_50pct={}",
            pct(r[0].len(), trials),
            pct(r[1].len(), trials),
            median(r[1].clone()),
            pct(r[2].len(), trials),
            pct(r[3].len(), trials),
        );
    }
}

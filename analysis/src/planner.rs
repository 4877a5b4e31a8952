//! `serin plan`'s figures: what a Canary's schedule can prove at a given traffic, before the
//! rollout. Seeded synthetic traffic is replayed through the real judge inside the engine's
//! schedule (every Pass steps up, a Pass at the last step promotes, a Fail rolls back, an
//! inconclusive step or run past its budget ends by `onInconclusive`), once for a healthy
//! canary and once for a canary with twice the primary's error rate.
//!
//! The traffic model: Poisson request arrivals at `rps`, split between the arms by the weight,
//! independent failures at the assumed error rate, log-normal latency (median 20 ms, sigma 0.6)
//! in Linkerd's buckets, fed to the judge as cumulative readings once per interval. Real
//! traffic is burstier; the figures are a best case.

use std::time::Duration;

use crate::AnalysisError;
use crate::check::Verdict;
use crate::histogram::{Histogram, LINKERD_LATENCY_BUCKETS_MS};
use crate::judge::{JudgeConfig, JudgeState};
use crate::provider::ArmTraffic;

/// Number of latency buckets including `+Inf`.
pub const BUCKETS: usize = LINKERD_LATENCY_BUCKETS_MS.len() + 1;

/// A rollout schedule, from the Canary.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Canary weights of the analysis steps (percent, increasing).
    pub step_weights: Vec<u32>,
    /// Time between looks (`analysis.interval`).
    pub interval: Duration,
    /// `judge.stepBudget`.
    pub step_budget: Option<Duration>,
    /// `judge.runBudget`.
    pub run_budget: Option<Duration>,
}

/// The traffic the plan assumes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficModel {
    /// Total requests per second to the service (both arms).
    pub rps: f64,
    /// The primary's error rate, a fraction (0.01 = 1 %).
    pub error_rate: f64,
}

/// How the simulated runs of one kind of canary ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcomes {
    /// Runs simulated.
    pub trials: usize,
    /// Share promoted by Pass verdicts (0..=1).
    pub promoted: f64,
    /// Share rolled back by a Fail.
    pub failed: f64,
    /// Share ended by `onInconclusive` (budget spent), or still undecided at the end of the
    /// simulated horizon when no budget applies.
    pub inconclusive: f64,
    /// Median time to promotion over promoted runs.
    pub median_to_promote: Option<Duration>,
    /// Median time to the Fail over failed runs.
    pub median_to_fail: Option<Duration>,
    /// Median time to the end by `onInconclusive` over such runs.
    pub median_to_inconclusive: Option<Duration>,
}

/// The plan's two scenarios.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// A canary identical to the primary.
    pub healthy: Outcomes,
    /// A canary failing twice as often as the primary.
    pub regression: Outcomes,
    /// Looks simulated at most per run (the run budget, or 24 hours without one).
    pub horizon_looks: u32,
}

/// Random draws for traffic simulation, allocation-free (also used by `judge-sim`).
pub mod sample {
    use super::BUCKETS;

    /// A standard normal draw (Box-Muller).
    pub fn normal(rng: &mut fastrand::Rng) -> f64 {
        // 1 - f64() keeps the log argument in (0, 1].
        let u1 = 1.0 - rng.f64();
        let u2 = rng.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Binomial(n, p): inversion when the rarer outcome's mean is small, else a rounded normal.
    pub fn binomial(rng: &mut fastrand::Rng, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - binomial(rng, n, 1.0 - p);
        }
        let nf = n as f64;
        if nf * p < 25.0 {
            let q = 1.0 - p;
            let ratio = p / q;
            let mut pmf = q.powf(nf);
            let mut cdf = pmf;
            let u = rng.f64();
            let mut k = 0u64;
            while u > cdf && k < n {
                pmf *= ratio * (nf - k as f64) / (k as f64 + 1.0);
                cdf += pmf;
                k += 1;
                if pmf < 1e-300 {
                    // The remaining tail is negligible.
                    break;
                }
            }
            k
        } else {
            let x = nf * p + (nf * p * (1.0 - p)).sqrt() * normal(rng);
            x.round().clamp(0.0, nf) as u64
        }
    }

    /// Poisson(mean): multiplication method for small means, else a rounded normal.
    pub fn poisson(rng: &mut fastrand::Rng, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean < 30.0 {
            let l = (-mean).exp();
            let mut k = 0u64;
            let mut p = rng.f64();
            while p > l {
                k += 1;
                p *= rng.f64();
            }
            k
        } else {
            (mean + mean.sqrt() * normal(rng)).round().max(0.0) as u64
        }
    }

    /// Spreads `n` requests over the buckets with probabilities `probs` (summing to 1), adding
    /// them to `out`.
    pub fn multinomial(
        rng: &mut fastrand::Rng,
        n: u64,
        probs: &[f64; BUCKETS],
        out: &mut [f64; BUCKETS],
    ) {
        let mut left = n;
        let mut mass = 1.0;
        for (i, p) in probs.iter().enumerate() {
            if left == 0 {
                break;
            }
            let k = if i == BUCKETS - 1 || mass <= *p {
                left
            } else {
                binomial(rng, left, (p / mass).clamp(0.0, 1.0))
            };
            out[i] += k as f64;
            left -= k;
            mass -= p;
        }
    }

    /// Adds one interval's requests, failures and bucketed latencies to a cumulative arm.
    pub fn add_to_arm(
        arm: &mut crate::ArmTraffic,
        rng: &mut fastrand::Rng,
        requests: u64,
        failures: u64,
        probs: &[f64; BUCKETS],
    ) {
        arm.requests += requests as f64;
        arm.failures += failures as f64;
        let mut counts = [0.0; BUCKETS];
        multinomial(rng, requests, probs, &mut counts);
        if let Some(h) = arm.latency.as_mut() {
            for (i, k) in counts.iter().enumerate() {
                if *k > 0.0 {
                    let value = crate::LINKERD_LATENCY_BUCKETS_MS
                        .get(i)
                        .copied()
                        .unwrap_or(f64::INFINITY);
                    h.record_n(value, *k);
                }
            }
        }
    }
}

/// Log-normal (median 20 ms, sigma 0.6) bucket probabilities.
fn lognormal_buckets() -> [f64; BUCKETS] {
    let mut probs = [0.0; BUCKETS];
    let mut previous = 0.0;
    for (i, b) in LINKERD_LATENCY_BUCKETS_MS.iter().enumerate() {
        let z = (b / 20.0).ln() / 0.6;
        let c = 0.5 * statrs::function::erf::erfc(-z / std::f64::consts::SQRT_2);
        probs[i] = (c - previous).max(0.0);
        previous = c;
    }
    probs[BUCKETS - 1] = (1.0 - previous).max(0.0);
    probs
}

enum End {
    Promoted(u32),
    Failed(u32),
    Inconclusive(u32),
}

fn run_once(
    config: &JudgeConfig,
    schedule: &Schedule,
    traffic: &TrafficModel,
    canary_error: f64,
    horizon: u32,
    rng: &mut fastrand::Rng,
) -> End {
    let probs = lognormal_buckets();
    let empty = || ArmTraffic {
        requests: 0.0,
        failures: 0.0,
        latency: Some(Histogram::linkerd()),
    };
    let (mut canary, mut primary) = (empty(), empty());
    let mut state = JudgeState::default();
    let per_look = traffic.rps * schedule.interval.as_secs_f64();
    let looks_in = |d: Option<Duration>| {
        d.map(|d| {
            (d.as_secs_f64() / schedule.interval.as_secs_f64())
                .ceil()
                .max(1.0) as u32
        })
    };
    let (step_budget, run_budget) = (
        looks_in(schedule.step_budget),
        looks_in(schedule.run_budget),
    );
    let mut step = 0usize;
    let mut step_start = 0u32;
    for look in 1..=horizon {
        let weight = f64::from(schedule.step_weights[step]) / 100.0;
        let total = sample::poisson(rng, per_look);
        let n_c = sample::binomial(rng, total, weight);
        let n_p = total - n_c;
        let x_c = sample::binomial(rng, n_c, canary_error.min(1.0));
        let x_p = sample::binomial(rng, n_p, traffic.error_rate.min(1.0));
        sample::add_to_arm(&mut canary, rng, n_c, x_c, &probs);
        sample::add_to_arm(&mut primary, rng, n_p, x_p, &probs);
        let last_step = step + 1 == schedule.step_weights.len();
        match state
            .observe_cumulative(config, &canary, &primary)
            .verdict_at(last_step)
        {
            Verdict::Fail => return End::Failed(look),
            Verdict::Pass => {
                step += 1;
                step_start = look;
                if step == schedule.step_weights.len() {
                    return End::Promoted(look);
                }
            }
            Verdict::Inconclusive => {
                if step_budget.is_some_and(|b| look - step_start >= b)
                    || run_budget.is_some_and(|b| look >= b)
                {
                    return End::Inconclusive(look);
                }
            }
        }
    }
    End::Inconclusive(horizon)
}

fn median_looks(mut v: Vec<u32>, interval: Duration) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let m = v.len() / 2;
    let looks = if v.len() % 2 == 1 {
        f64::from(v[m])
    } else {
        f64::from(v[m - 1] + v[m]) / 2.0
    };
    Some(interval.mul_f64(looks))
}

fn outcomes(
    config: &JudgeConfig,
    schedule: &Schedule,
    traffic: &TrafficModel,
    canary_error: f64,
    trials: usize,
    horizon: u32,
    seed: u64,
) -> Outcomes {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut promoted, mut failed, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..trials {
        match run_once(config, schedule, traffic, canary_error, horizon, &mut rng) {
            End::Promoted(l) => promoted.push(l),
            End::Failed(l) => failed.push(l),
            End::Inconclusive(l) => ended.push(l),
        }
    }
    let share = |v: &Vec<u32>| v.len() as f64 / trials.max(1) as f64;
    Outcomes {
        trials,
        promoted: share(&promoted),
        failed: share(&failed),
        inconclusive: share(&ended),
        median_to_promote: median_looks(promoted, schedule.interval),
        median_to_fail: median_looks(failed, schedule.interval),
        median_to_inconclusive: median_looks(ended, schedule.interval),
    }
}

/// Simulates `trials` runs of a healthy canary and of one with twice the error rate.
pub fn estimate(
    config: &JudgeConfig,
    schedule: &Schedule,
    traffic: &TrafficModel,
    trials: usize,
) -> Result<Estimate, AnalysisError> {
    if schedule.step_weights.is_empty() || schedule.step_weights.iter().any(|w| *w > 100) {
        return Err(AnalysisError::invalid(
            "stepWeights",
            "empty or above 100",
            "canary weights in 1..=100",
        ));
    }
    if schedule.interval.is_zero() {
        return Err(AnalysisError::invalid(
            "interval",
            "0s",
            "a positive interval, e.g. 1m",
        ));
    }
    if !(traffic.rps.is_finite() && traffic.rps >= 0.0) {
        return Err(AnalysisError::invalid(
            "--rps",
            format!("{} is not a rate", traffic.rps),
            "requests per second, 0 or more (e.g. 8.5)",
        ));
    }
    if !(0.0..0.5).contains(&traffic.error_rate) {
        return Err(AnalysisError::invalid(
            "--error-rate",
            format!("{}% is out of range", traffic.error_rate * 100.0),
            "the primary's error rate, 0% to under 50%",
        ));
    }
    // A day of looks at most when no run budget ends the run (onInconclusive: wait).
    let horizon = schedule
        .run_budget
        .map(|d| (d.as_secs_f64() / schedule.interval.as_secs_f64()).ceil() as u32)
        .unwrap_or_else(|| (86_400.0 / schedule.interval.as_secs_f64()).ceil() as u32)
        .clamp(1, 2_000);
    // A regression of a canary whose primary never fails: twice nothing is nothing, so the
    // regression scenario uses the absolute margin's double instead.
    let bad = if traffic.error_rate > 0.0 {
        2.0 * traffic.error_rate
    } else {
        2.0 * config.error_rate_margin_absolute / 100.0
    };
    Ok(Estimate {
        healthy: outcomes(
            config,
            schedule,
            traffic,
            traffic.error_rate,
            trials,
            horizon,
            0x91a2,
        ),
        regression: outcomes(config, schedule, traffic, bad, trials, horizon, 0x91a3),
        horizon_looks: horizon,
    })
}

/// A duration for the plan's sentences (`15m`, `1m30s`; at least a second), `-` for none.
pub fn plan_duration(d: Option<Duration>) -> String {
    match d {
        Some(d) => crate::format_duration(Duration::from_secs(d.as_secs().max(1))),
        None => "-".into(),
    }
}

impl Estimate {
    /// The plan in one sentence, as `serin plan`, `serin validate --rps` and the dashboard say
    /// it: the rollout can never prove anything (and when `onInconclusive` ends it), usually
    /// cannot within its budgets, or the typical times to a promotion and to a rollback.
    pub fn summary(&self, rps: f64, policy: &str) -> String {
        if self.healthy.promoted == 0.0 && self.regression.failed < 0.5 {
            format!(
                "at {rps} rps this rollout can never prove anything; it will end by onInconclusive ({policy}) after {}",
                plan_duration(self.healthy.median_to_inconclusive)
            )
        } else if self.healthy.promoted < 0.5 {
            format!(
                "at {rps} rps a healthy release is usually not proven safe within the budgets; most runs end by onInconclusive ({policy}). Raise the traffic, the first stepWeight, the margins or the budgets"
            )
        } else {
            format!(
                "at {rps} rps a healthy release is typically promoted in {} and a doubled error rate rolled back in {}",
                plan_duration(self.healthy.median_to_promote),
                plan_duration(self.regression.median_to_fail)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            step_weights: vec![10, 20, 30, 40, 50],
            interval: Duration::from_secs(60),
            step_budget: Some(Duration::from_secs(15 * 60)),
            run_budget: Some(Duration::from_secs(3600)),
        }
    }

    #[test]
    fn busy_services_promote_healthy_canaries_and_catch_regressions() {
        let e = estimate(
            &JudgeConfig::default(),
            &schedule(),
            &TrafficModel {
                rps: 200.0,
                error_rate: 0.05,
            },
            40,
        )
        .unwrap();
        assert!(e.healthy.promoted >= 0.9, "{e:?}");
        assert!(e.healthy.failed <= 0.05, "{e:?}");
        assert!(e.regression.failed >= 0.9, "{e:?}");
        assert!(e.regression.promoted == 0.0, "{e:?}");
        let fail = e.regression.median_to_fail.unwrap();
        let promote = e.healthy.median_to_promote.unwrap();
        assert!(fail < promote, "{fail:?} vs {promote:?}");
        // At least one look per step.
        assert!(promote >= Duration::from_secs(5 * 60), "{promote:?}");
    }

    #[test]
    fn one_request_a_second_proves_nothing_and_ends_by_on_inconclusive() {
        let e = estimate(
            &JudgeConfig::default(),
            &schedule(),
            &TrafficModel {
                rps: 1.0,
                error_rate: 0.01,
            },
            20,
        )
        .unwrap();
        assert_eq!(e.healthy.promoted, 0.0, "{e:?}");
        assert!(e.healthy.inconclusive >= 0.95, "{e:?}");
        assert_eq!(
            e.healthy.median_to_inconclusive,
            Some(Duration::from_secs(15 * 60)),
            "the step budget ends it"
        );
    }

    #[test]
    fn bad_inputs_name_the_flag() {
        let t = TrafficModel {
            rps: f64::NAN,
            error_rate: 0.01,
        };
        let err = estimate(&JudgeConfig::default(), &schedule(), &t, 1).unwrap_err();
        assert!(err.to_string().contains("--rps"), "{err}");
        let t = TrafficModel {
            rps: 1.0,
            error_rate: 0.7,
        };
        let err = estimate(&JudgeConfig::default(), &schedule(), &t, 1).unwrap_err();
        assert!(err.to_string().contains("--error-rate"), "{err}");
    }
}

//! The statistical canary-versus-primary judge.
//!
//! Both arms run side by side behind the same proxies, so each look compares them over the
//! same window: time-of-day and load changes hit both. Two one-sided sequential tests run on
//! the per-look increments:
//!
//! * **Error rate.** Conditional on a look's total failures, the canary's share of them follows
//!   Fisher's noncentral hypergeometric law with the arms' odds ratio as the only parameter.
//!   The judge multiplies the look-by-look likelihood ratios for a small set of regression
//!   sizes (odds ratio 1.5, 2, 3, 5 times the null) and mixes them with fixed weights: a
//!   mixture sequential probability ratio test. Under "canary no worse" the mixture is a test
//!   supermartingale, so by Ville's inequality the chance it *ever* reaches `2/alpha` — over
//!   any number of looks — is at most `alpha/2`. Its reciprocal is an always-valid p-value.
//! * **Latency.** The first look with enough primary traffic fixes a boundary: the bucket bound
//!   holding the primary's 99th percentile. From the next look on, requests slower than the
//!   boundary are "slow" (the canary's boundary is stretched by `latencyTolerance`), and the
//!   same mixture test runs on the slow counts, with the other `alpha/2`.
//!
//! A failed test is final (the judge keeps answering `Fail`). Fewer than `minRequests` per arm
//! is `Inconclusive`; otherwise the answer is `Pass`, with the evidence attached.

use serde::{Deserialize, Serialize};

use crate::AnalysisError;
use crate::check::Verdict;
use crate::histogram::Histogram;
use crate::provider::ArmTraffic;
use crate::stats::conditional_log_lrs;

/// Default false-rollback budget for a whole run.
pub const DEFAULT_ALPHA: f64 = 0.01;
/// Default minimum requests per arm before the judge gives a verdict.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;
/// Default latency tolerance, percent.
pub const DEFAULT_LATENCY_TOLERANCE: f64 = 10.0;

/// Alternatives of the mixture (odds ratio relative to the null) and their prior weights.
///
/// The weights favour 1.5x–3x regressions: smaller ones are rarely worth a rollback and larger
/// ones are caught within a look or two by any component. Any fixed weights keep the
/// guarantee; these only decide where the test spends its power.
pub const MIXTURE: [(f64, f64); 4] = [(1.5, 0.2), (2.0, 0.5), (3.0, 0.2), (5.0, 0.1)];

/// Share of `alpha` spent on the error-rate test; the latency test gets the rest.
pub const ERROR_ALPHA_SHARE: f64 = 0.8;

/// The share of the primary's requests below the latency boundary.
pub const LATENCY_QUANTILE: f64 = 0.99;

/// Primary requests gathered before the latency boundary is fixed (at least `minRequests`).
/// With fewer, a p99 bucket is too often picked one bucket too high (with 500 requests about
/// 1 run in 80 on a log-normal service), which blinds the test to the shift it is looking for.
pub const LATENCY_CALIBRATION_REQUESTS: u64 = 1000;

/// What the engine should do with `Inconclusive` (`onInconclusive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInconclusive {
    /// Keep waiting for more traffic (the default).
    #[default]
    Wait,
    /// Pause the rollout for a human.
    Pause,
}

/// `spec.analysis.judge`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeConfig {
    /// Whether the judge runs (absent block = off).
    pub enabled: bool,
    /// False-rollback budget for the whole run, split evenly between the error-rate and the
    /// latency test (default 0.01).
    pub alpha: f64,
    /// Requests per arm before the judge gives a verdict (default 100).
    pub min_requests: u64,
    /// Absolute percentage points of extra error rate considered harmless (default 0).
    pub error_rate_tolerance: f64,
    /// Percent of extra latency considered harmless (default 10).
    pub latency_tolerance: f64,
    /// What `Inconclusive` means for the engine.
    pub on_inconclusive: OnInconclusive,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            enabled: true,
            alpha: DEFAULT_ALPHA,
            min_requests: DEFAULT_MIN_REQUESTS,
            error_rate_tolerance: 0.0,
            latency_tolerance: DEFAULT_LATENCY_TOLERANCE,
            on_inconclusive: OnInconclusive::Wait,
        }
    }
}

impl JudgeConfig {
    /// Checks every field; `field` is the block's path (e.g. `spec.analysis.judge`).
    pub fn validate(&self, field: &str) -> Result<(), AnalysisError> {
        // The same ranges serin-api validates, so a Canary it accepts is never refused here.
        if !(self.alpha > 0.0 && self.alpha <= 0.5) {
            return Err(AnalysisError::invalid(
                format!("{field}.alpha"),
                format!("{} is out of range", self.alpha),
                "a probability in (0, 0.5], e.g. 0.01",
            ));
        }
        if self.min_requests < 1 {
            return Err(AnalysisError::invalid(
                format!("{field}.minRequests"),
                "0 is too small",
                "requests per arm, 1 or more (default 100)",
            ));
        }
        if !(0.0..=100.0).contains(&self.error_rate_tolerance) {
            return Err(AnalysisError::invalid(
                format!("{field}.errorRateTolerance"),
                format!("{} is out of range", self.error_rate_tolerance),
                "percentage points, 0..=100",
            ));
        }
        if !(self.latency_tolerance >= 0.0 && self.latency_tolerance.is_finite()) {
            return Err(AnalysisError::invalid(
                format!("{field}.latencyTolerance"),
                format!("{} is out of range", self.latency_tolerance),
                "a percentage, 0 or more",
            ));
        }
        Ok(())
    }

    /// Parses `onInconclusive`.
    pub fn parse_on_inconclusive(field: &str, text: &str) -> Result<OnInconclusive, AnalysisError> {
        match text {
            "wait" => Ok(OnInconclusive::Wait),
            "pause" => Ok(OnInconclusive::Pause),
            other => Err(AnalysisError::invalid(
                field,
                format!("unknown value `{other}`"),
                "wait or pause",
            )),
        }
    }
}

/// Evidence of one sequential test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestEvidence {
    /// Canary requests used so far.
    pub canary_requests: u64,
    /// Canary events (failures, or slow requests) so far.
    pub canary_events: u64,
    /// Primary requests used so far.
    pub primary_requests: u64,
    /// Primary events so far.
    pub primary_events: u64,
    /// Canary event rate, percent.
    pub canary_rate_pct: f64,
    /// Primary event rate, percent.
    pub primary_rate_pct: f64,
    /// The mixture likelihood ratio (e-value) now.
    pub e_value: f64,
    /// The largest e-value so far; the test fails once it reaches `fail_at` (Ville's
    /// inequality bounds the chance that the running maximum ever gets there).
    pub max_e_value: f64,
    /// Always-valid p-value: `min(1, 1 / largest e-value so far)`.
    pub p_value: f64,
    /// The e-value at which the test fails (`2 / alpha`).
    pub fail_at: f64,
}

/// Latency-specific evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyEvidence {
    /// The primary's p99 bucket bound, ms (requests above it are "slow").
    pub boundary_ms: f64,
    /// The canary's boundary after the tolerance, ms.
    pub canary_boundary_ms: f64,
    /// Canary p99 over the data tested so far (Prometheus interpolation), ms.
    pub canary_p99_ms: Option<f64>,
    /// Primary p99 over the data tested so far, ms.
    pub primary_p99_ms: Option<f64>,
    /// The slow-request test.
    pub test: TestEvidence,
}

/// What the judge says at one look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeResult {
    /// Pass, fail or inconclusive.
    pub verdict: Verdict,
    /// One short sentence saying why.
    pub reason: String,
    /// Number of looks so far, this one included.
    pub looks: u32,
    /// The error-rate test.
    pub error: TestEvidence,
    /// The latency test, once its boundary is fixed.
    pub latency: Option<LatencyEvidence>,
}

/// One arm's cumulative counters as last seen (to turn cumulative readings into increments).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct Seen {
    requests: f64,
    failures: f64,
    latency: Option<Histogram>,
}

/// Running state of one sequential test.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sequential {
    log_lr: Vec<f64>,
    max_e: f64,
    canary_requests: u64,
    canary_events: u64,
    primary_requests: u64,
    primary_events: u64,
}

impl Sequential {
    fn e_value(&self) -> f64 {
        if self.log_lr.is_empty() {
            return 1.0;
        }
        MIXTURE
            .iter()
            .zip(&self.log_lr)
            .map(|((_, w), l)| w * l.exp())
            .sum()
    }

    /// Adds one look. `psi0` is the null odds ratio (1 without tolerance).
    fn update(&mut self, x_c: u64, n_c: u64, x_p: u64, n_p: u64, psi0: f64) {
        if self.log_lr.is_empty() {
            self.log_lr = vec![0.0; MIXTURE.len()];
        }
        let alternatives: Vec<f64> = MIXTURE.iter().map(|(ratio, _)| psi0 * ratio).collect();
        let lrs = conditional_log_lrs(x_c, n_c, x_p, n_p, &alternatives, psi0);
        for (l, step) in self.log_lr.iter_mut().zip(lrs) {
            *l += step;
        }
        self.canary_requests += n_c;
        self.canary_events += x_c;
        self.primary_requests += n_p;
        self.primary_events += x_p;
        // Overwhelming evidence overflows the e-value to infinity; keep it finite (far above
        // any bound) so the state survives JSON, which has no infinity, when it is persisted.
        self.max_e = self.max_e.max(self.e_value()).min(f64::MAX);
    }

    fn evidence(&self, fail_at: f64) -> TestEvidence {
        let pct = |x: u64, n: u64| {
            if n == 0 {
                0.0
            } else {
                100.0 * x as f64 / n as f64
            }
        };
        TestEvidence {
            canary_requests: self.canary_requests,
            canary_events: self.canary_events,
            primary_requests: self.primary_requests,
            primary_events: self.primary_events,
            canary_rate_pct: pct(self.canary_events, self.canary_requests),
            primary_rate_pct: pct(self.primary_events, self.primary_requests),
            e_value: self.e_value(),
            max_e_value: self.max_e.max(1.0),
            p_value: (1.0 / self.max_e.max(1.0)).min(1.0),
            fail_at,
        }
    }
}

/// The judge's memory between looks. Serializable so the runtime can persist it with the
/// Canary's status; start each analysis run with `JudgeState::default()`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeState {
    looks: u32,
    canary_seen: Option<Seen>,
    primary_seen: Option<Seen>,
    error: Sequential,
    latency: Sequential,
    /// Primary latency gathered before the boundary is fixed.
    calibration: Option<Histogram>,
    boundary_ms: Option<f64>,
    canary_tested: Option<Histogram>,
    primary_tested: Option<Histogram>,
    failed: Option<String>,
}

fn increment(now: &ArmTraffic, seen: Option<&Seen>) -> ArmTraffic {
    let Some(seen) = seen else {
        return now.clone();
    };
    let latency = match (&now.latency, &seen.latency) {
        (Some(n), Some(s)) => n.delta_since(s).or_else(|| Some(n.clone())),
        (Some(n), None) => Some(n.clone()),
        (None, _) => None,
    };
    ArmTraffic {
        requests: (now.requests - seen.requests).max(0.0),
        failures: (now.failures - seen.failures).max(0.0),
        latency,
    }
}

fn whole(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.round() as u64
    } else {
        0
    }
}

impl JudgeState {
    /// Feeds cumulative traffic since the analysis started (what a provider returns for a
    /// window reaching back to the start) and returns the verdict at this look. Increments are
    /// computed against the previous look, so ticks may come at any pace.
    pub fn observe_cumulative(
        &mut self,
        config: &JudgeConfig,
        canary: &ArmTraffic,
        primary: &ArmTraffic,
    ) -> JudgeResult {
        let dc = increment(canary, self.canary_seen.as_ref());
        let dp = increment(primary, self.primary_seen.as_ref());
        self.canary_seen = Some(Seen {
            requests: canary.requests,
            failures: canary.failures,
            latency: canary.latency.clone(),
        });
        self.primary_seen = Some(Seen {
            requests: primary.requests,
            failures: primary.failures,
            latency: primary.latency.clone(),
        });
        self.observe_window(config, &dc, &dp)
    }

    /// Feeds one look's traffic (disjoint from every earlier look) and returns the verdict.
    pub fn observe_window(
        &mut self,
        config: &JudgeConfig,
        canary: &ArmTraffic,
        primary: &ArmTraffic,
    ) -> JudgeResult {
        self.looks += 1;
        let error_fail_at = 1.0 / (config.alpha * ERROR_ALPHA_SHARE);
        let latency_fail_at = 1.0 / (config.alpha * (1.0 - ERROR_ALPHA_SHARE));
        let (n_c, x_c) = (
            whole(canary.requests),
            whole(canary.failures).min(whole(canary.requests)),
        );
        let (n_p, x_p) = (
            whole(primary.requests),
            whole(primary.failures).min(whole(primary.requests)),
        );

        // Null odds ratio for the error tolerance, from the primary's rate before this look
        // (predictable, so the look's own data does not move its null).
        let psi0 = if config.error_rate_tolerance > 0.0 {
            let p = (self.error.primary_events as f64 + 0.5)
                / (self.error.primary_requests as f64 + 1.0);
            let q = (p + config.error_rate_tolerance / 100.0).min(0.999_999);
            (q / (1.0 - q)) / (p / (1.0 - p))
        } else {
            1.0
        };
        if self.failed.is_none() {
            self.error.update(x_c, n_c, x_p, n_p, psi0);
        }

        // Latency: fix the boundary from the first looks' primary data, test later looks.
        if self.failed.is_none()
            && let (Some(lc), Some(lp)) = (&canary.latency, &primary.latency)
        {
            match self.boundary_ms {
                None => {
                    let cal = self
                        .calibration
                        .get_or_insert_with(|| Histogram::new(lp.bounds()));
                    if !cal.add(lp) {
                        *cal = lp.clone();
                    }
                    if cal.total() >= config.min_requests.max(LATENCY_CALIBRATION_REQUESTS) as f64 {
                        self.boundary_ms = cal.quantile_bound(LATENCY_QUANTILE);
                    }
                }
                Some(bound) => {
                    let canary_bound = bound * (1.0 + config.latency_tolerance / 100.0);
                    let slow_c = lc.count_above(canary_bound).round() as u64;
                    let slow_p = lp.count_above(bound).round() as u64;
                    let (tn_c, tn_p) = (whole(lc.total()), whole(lp.total()));
                    self.latency
                        .update(slow_c.min(tn_c), tn_c, slow_p.min(tn_p), tn_p, 1.0);
                    for (acc, h) in [
                        (&mut self.canary_tested, lc),
                        (&mut self.primary_tested, lp),
                    ] {
                        let merged = acc.as_mut().is_some_and(|a| a.add(h));
                        if !merged {
                            *acc = Some(h.clone());
                        }
                    }
                }
            }
        }

        let error = self.error.evidence(error_fail_at);
        let latency = self.boundary_ms.map(|bound| LatencyEvidence {
            boundary_ms: bound,
            canary_boundary_ms: bound * (1.0 + config.latency_tolerance / 100.0),
            canary_p99_ms: self.canary_tested.as_ref().and_then(|h| h.quantile(0.99)),
            primary_p99_ms: self.primary_tested.as_ref().and_then(|h| h.quantile(0.99)),
            test: self.latency.evidence(latency_fail_at),
        });
        let result = |verdict, reason: String| JudgeResult {
            verdict,
            reason,
            looks: self.looks,
            error: error.clone(),
            latency: latency.clone(),
        };

        if let Some(reason) = &self.failed {
            return result(Verdict::Fail, reason.clone());
        }
        // No verdict before minRequests per arm, a failure included: the evidence keeps
        // accumulating (the e-values above are already updated), so stopping later costs
        // nothing in validity.
        if error.canary_requests < config.min_requests
            || error.primary_requests < config.min_requests
        {
            return result(
                Verdict::Inconclusive,
                format!(
                    "waiting for minRequests {} per arm (canary {}, primary {})",
                    config.min_requests, error.canary_requests, error.primary_requests
                ),
            );
        }
        if error.max_e_value >= error.fail_at {
            let reason = format!(
                "canary error rate {:.2}% vs primary {:.2}%: always-valid p = {:.2e} <= {:.4}",
                error.canary_rate_pct,
                error.primary_rate_pct,
                error.p_value,
                1.0 / error.fail_at
            );
            self.failed = Some(reason.clone());
            return result(Verdict::Fail, reason);
        }
        if let Some(lat) = &latency
            && lat.test.max_e_value >= lat.test.fail_at
        {
            let reason = format!(
                "canary requests slower than {:.0} ms: {:.2}% vs primary {:.2}% over {:.0} ms: always-valid p = {:.2e} <= {:.4}",
                lat.canary_boundary_ms,
                lat.test.canary_rate_pct,
                lat.test.primary_rate_pct,
                lat.boundary_ms,
                lat.test.p_value,
                1.0 / lat.test.fail_at
            );
            self.failed = Some(reason.clone());
            return result(Verdict::Fail, reason);
        }
        let lat_note = match &latency {
            Some(l) => format!("latency p = {:.3}", l.test.p_value),
            None => "latency boundary not fixed yet".to_string(),
        };
        result(
            Verdict::Pass,
            format!(
                "no regression: error {:.2}% vs {:.2}% (p = {:.3}), {lat_note}",
                error.canary_rate_pct, error.primary_rate_pct, error.p_value
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(requests: f64, failures: f64) -> ArmTraffic {
        ArmTraffic {
            requests,
            failures,
            latency: None,
        }
    }

    #[test]
    fn waits_for_min_requests() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        let r = s.observe_window(&cfg, &traffic(50.0, 0.0), &traffic(500.0, 5.0));
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.reason.contains("minRequests 100"), "{}", r.reason);
        let r = s.observe_window(&cfg, &traffic(60.0, 0.0), &traffic(500.0, 5.0));
        assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
        assert_eq!(r.error.canary_requests, 110);
        assert_eq!(r.looks, 2);
    }

    #[test]
    fn fails_on_a_clear_error_regression_and_stays_failed() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        // 10% vs 1% errors over 1000 requests each.
        let r = s.observe_window(&cfg, &traffic(1000.0, 100.0), &traffic(1000.0, 10.0));
        assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
        assert!(r.error.p_value <= cfg.alpha * ERROR_ALPHA_SHARE);
        assert!(r.reason.contains("error rate"), "{}", r.reason);
        let r = s.observe_window(&cfg, &traffic(1000.0, 10.0), &traffic(1000.0, 10.0));
        assert_eq!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn no_failure_before_min_requests() {
        let cfg = JudgeConfig {
            min_requests: 5000,
            ..JudgeConfig::default()
        };
        let mut s = JudgeState::default();
        let r = s.observe_window(&cfg, &traffic(1000.0, 100.0), &traffic(1000.0, 10.0));
        assert_eq!(r.verdict, Verdict::Inconclusive, "{}", r.reason);
        assert!(
            r.error.max_e_value >= r.error.fail_at,
            "the evidence is kept"
        );
        let r = s.observe_window(&cfg, &traffic(4000.0, 40.0), &traffic(4000.0, 40.0));
        assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    }

    #[test]
    fn equal_arms_pass_with_large_p() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        let mut last = None;
        for _ in 0..10 {
            last = Some(s.observe_window(&cfg, &traffic(500.0, 5.0), &traffic(500.0, 5.0)));
        }
        let r = last.unwrap();
        assert_eq!(r.verdict, Verdict::Pass);
        assert!(r.error.p_value > 0.5, "{}", r.error.p_value);
        assert_eq!(r.error.canary_rate_pct, 1.0);
    }

    #[test]
    fn tolerance_absorbs_a_small_absolute_increase() {
        let strict = JudgeConfig::default();
        let lenient = JudgeConfig {
            error_rate_tolerance: 2.0,
            ..JudgeConfig::default()
        };
        let mut a = JudgeState::default();
        let mut b = JudgeState::default();
        let (mut ra, mut rb) = (None, None);
        // 2% vs 1% for 20 looks of 2000 requests.
        for _ in 0..20 {
            ra = Some(a.observe_window(&strict, &traffic(2000.0, 40.0), &traffic(2000.0, 20.0)));
            rb = Some(b.observe_window(&lenient, &traffic(2000.0, 40.0), &traffic(2000.0, 20.0)));
        }
        assert_eq!(ra.unwrap().verdict, Verdict::Fail);
        assert_eq!(rb.unwrap().verdict, Verdict::Pass);
    }

    fn latency(hist_scale: f64, n: usize) -> Histogram {
        // Deterministic spread: quantiles of a log-uniform 5..100 ms, scaled.
        let mut h = Histogram::linkerd();
        for i in 0..n {
            let u = (i as f64 + 0.5) / n as f64;
            h.record(hist_scale * 5.0 * (20f64).powf(u));
        }
        h
    }

    #[test]
    fn latency_boundary_is_fixed_then_slow_canary_fails() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        let arm = |scale: f64| ArmTraffic {
            requests: 1000.0,
            failures: 0.0,
            latency: Some(latency(scale, 1000)),
        };
        let r = s.observe_window(&cfg, &arm(1.0), &arm(1.0));
        let lat = r.latency.expect("boundary fixed after the first look");
        assert_eq!(lat.boundary_ms, 100.0);
        assert_eq!(r.verdict, Verdict::Pass);
        let mut verdict = Verdict::Pass;
        for _ in 0..5 {
            let r = s.observe_window(&cfg, &arm(2.0), &arm(1.0));
            verdict = r.verdict;
            if verdict == Verdict::Fail {
                assert!(r.reason.contains("slower than 110 ms"), "{}", r.reason);
                break;
            }
        }
        assert_eq!(verdict, Verdict::Fail);
    }

    #[test]
    fn the_state_survives_json_even_after_overwhelming_evidence() {
        // A badly broken canary under heavy traffic: the e-value overflows f64.
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        for _ in 0..3 {
            let r = s.observe_window(
                &cfg,
                &traffic(1_000_000.0, 500_000.0),
                &traffic(1_000_000.0, 1_000.0),
            );
            assert_eq!(r.verdict, Verdict::Fail);
        }
        let json = serde_json::to_string(&s).unwrap();
        let back: JudgeState = serde_json::from_str(&json).expect("the persisted state reads back");
        assert_eq!(back, s);
        let mut resumed = back;
        let r = resumed.observe_window(&cfg, &traffic(100.0, 1.0), &traffic(100.0, 1.0));
        assert_eq!(
            r.verdict,
            Verdict::Fail,
            "a failed test stays failed after a restart"
        );
    }

    #[test]
    fn cumulative_readings_become_increments() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        s.observe_cumulative(&cfg, &traffic(100.0, 1.0), &traffic(100.0, 1.0));
        let r = s.observe_cumulative(&cfg, &traffic(300.0, 3.0), &traffic(250.0, 2.0));
        assert_eq!(r.error.canary_requests, 300);
        assert_eq!(r.error.primary_requests, 250);
        // A counter that goes backwards (extrapolation wobble) adds nothing.
        let r = s.observe_cumulative(&cfg, &traffic(290.0, 3.0), &traffic(260.0, 2.0));
        assert_eq!(r.error.canary_requests, 300);
        assert_eq!(r.error.primary_requests, 260);
        // The state round-trips through JSON (the runtime persists it).
        let json = serde_json::to_string(&s).unwrap();
        let back: JudgeState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn bad_config_names_the_field() {
        for (cfg, field) in [
            (
                JudgeConfig {
                    alpha: 0.0,
                    ..JudgeConfig::default()
                },
                "judge.alpha",
            ),
            (
                JudgeConfig {
                    alpha: 0.7,
                    ..JudgeConfig::default()
                },
                "judge.alpha",
            ),
            (
                JudgeConfig {
                    min_requests: 0,
                    ..JudgeConfig::default()
                },
                "judge.minRequests",
            ),
            (
                JudgeConfig {
                    latency_tolerance: f64::INFINITY,
                    ..JudgeConfig::default()
                },
                "judge.latencyTolerance",
            ),
            (
                JudgeConfig {
                    alpha: f64::NAN,
                    ..JudgeConfig::default()
                },
                "judge.alpha",
            ),
            (
                JudgeConfig {
                    error_rate_tolerance: -1.0,
                    ..JudgeConfig::default()
                },
                "judge.errorRateTolerance",
            ),
            (
                JudgeConfig {
                    latency_tolerance: -5.0,
                    ..JudgeConfig::default()
                },
                "judge.latencyTolerance",
            ),
        ] {
            let err = cfg.validate("spec.analysis.judge").unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
        assert!(JudgeConfig::default().validate("j").is_ok());
        assert!(
            JudgeConfig::parse_on_inconclusive("x.onInconclusive", "halt")
                .unwrap_err()
                .to_string()
                .contains("wait or pause")
        );
    }
}

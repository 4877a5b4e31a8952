//! The statistical canary-versus-primary judge.
//!
//! Both arms run side by side behind the same proxies, so each look compares them over the
//! same window: time-of-day and load changes hit both. Every comparison is one-sided and
//! sequential, on the canary's share of a look's "events" given the look's total (failures, or
//! requests slower than a boundary taken from the look's pooled latency histogram):
//!
//! * **Fail** when an always-valid test shows the canary worse than the primary beyond the
//!   tolerance: a mixture of likelihood ratios over regression sizes is a test
//!   supermartingale under "no worse", so by Ville's inequality the chance that it *ever*
//!   reaches `1 / (alpha * share)` is at most `alpha * share`. There is no minimum sample:
//!   the test may stop at any look. For the error rate it is averaged with an
//!   *overwhelming* test that needs no dispersion estimate to start (valid for clumps of up
//!   to `max(`[`OVERWHELMING_CLUMP`]`, the primary's dispersion in earlier looks)` failures and
//!   bursts up to [`OVERWHELMING_BURST`] times the primary's rate), so a canary failing
//!   everything fails at the first look that proves it.
//! * **Pass** only when an always-valid test shows the canary *better than the margin*
//!   (non-inferiority): error rate within `max(errorRateMarginAbsolute, errorRateMargin% of
//!   the primary's)` of the primary's, and p50 and p99 latency within `latencyMargin` percent.
//!   Once shown it stays shown (Ville again), but a look without new traffic in both arms
//!   never passes.
//! * Otherwise **Inconclusive**: the engine holds the weight, and its `onInconclusive` budget
//!   ends runs that never gather the evidence.
//!
//! Real traffic is overdispersed (failures in clumps, one canary pod against many primary
//! pods, minute-to-minute jitter of one arm). Every likelihood ratio is *tempered*: raised to
//! `1 / phi`, where `phi` is a dispersion estimated online from the looks before this one
//! (Pearson residuals of the canary's share, with a prior). analysis/README.md gives the
//! maths and the assumptions.

use serde::{Deserialize, Serialize};
use serin_core::judge_defaults;

use crate::AnalysisError;
use crate::check::Verdict;
use crate::histogram::Histogram;
use crate::provider::ArmTraffic;
use crate::stats::{binomial_log_lr, canary_share, share_log_lr};

/// Regression sizes of the fail test (event-rate ratio relative to the null) and their prior
/// weights. Most of the weight sits on 2x, the regression the default margins are set to
/// catch: the mixture's price for it is `log(1 / 0.85)` = 0.16 nats instead of `log 2`, a
/// sixth of a minute at a 5 % weight and a 1 % base, bought from the 1.5x and 3x bets (a 1.5x
/// regression is inside the default margin). The large ones keep a canary that fails
/// everything caught at low traffic, where every look is capped. Any fixed weights keep the
/// guarantee.
pub const MIXTURE: [(f64, f64); 7] = [
    (1.25, 0.01),
    (1.5, 0.05),
    (2.0, 0.85),
    (3.0, 0.06),
    (5.0, 0.015),
    (10.0, 0.01),
    (50.0, 0.005),
];

/// Improvements (ratio relative to the margin's null) the pass test bets on, and weights.
pub const PASS_MIXTURE: [(f64, f64); 4] = [(0.8, 0.2), (0.67, 0.35), (0.5, 0.3), (0.25, 0.15)];

/// Share of `alpha` the error-rate fail test spends (its main test and the overwhelming test
/// together, see `OVERWHELMING_WEIGHT`); p50 and p99 split the rest. Errors get most: a
/// doubled error rate gives about a nat of evidence a minute at a 5 % weight, while +50 %
/// latency moves half the requests past the median and crosses even these bounds within the
/// first looks the caps allow.
pub const ERROR_ALPHA_SHARE: f64 = 0.85;

/// The latency quantiles compared (boundaries from each look's pooled histogram).
pub const LATENCY_QUANTILES: [f64; 2] = [0.5, 0.99];

/// Dispersion prior: `PHI_PRIOR` worth `PHI_PRIOR_LOOKS` looks. A first look cannot tell a
/// clump of failures from a regression, so it is tempered as if failures came in pairs.
pub const PHI_PRIOR: f64 = 1.0;
/// Weight of the dispersion prior, in looks.
pub const PHI_PRIOR_LOOKS: f64 = 2.0;
/// Most evidence one look may add to a pass test, and to a fail test until the traffic's
/// variability is known (its likelihood ratio is capped here; see [`FAIL_LOOK_CAP`]).
/// Capping keeps every e-process a supermartingale (`E[min(LR, K)] <= E[LR] <= 1`) and means
/// one odd look (a clump of failures, a burst on the canary's single pod) cannot pass a canary
/// alone, nor fail it through the main test: there at least three looks must agree, by which
/// time the dispersion estimate has seen the traffic's real variability. The uncapped
/// overwhelming error test can fail a canary at one look, under its stated assumption: the
/// look's failures come in clumps of at most `max(OVERWHELMING_CLUMP, phi_p)` (`phi_p` the
/// primary's dispersion from earlier looks) and the canary's rate is at most
/// [`OVERWHELMING_BURST`] times the primary's. At the first looks `phi_p` is the prior, so
/// there the assumption is clumps of at most five.
pub const LOOK_CAP: f64 = 10.0;
/// Expected variance a Pearson residual must reach before it counts (small looks are pooled
/// until then, so a single rare event does not read as overdispersion).
const RESIDUAL_MIN_VARIANCE: f64 = 2.0;
/// Residuals (of either kind) seen before a look may add the full [`LOOK_CAP`]; until then
/// at most its square root. From then on the fail test's cap also shrinks with the dispersion
/// (bursty pods show in the primary's look-to-look variation from the second look), which
/// protects against a burst on the canary's only pod better than a longer fixed floor.
const FULL_CAP_AFTER: f64 = 2.0;
/// Most evidence one look may add to a fail test once [`FULL_CAP_AFTER`] *informed* residuals
/// (see [`INFORMED_VARIANCE`]) have shown how variable the traffic is; the cap is further
/// divided by the look's dispersion. Until then [`LOOK_CAP`] (and its square root before any
/// two residuals). A doubled error rate at a 10 % weight and 5,000 requests a minute brings
/// 1.6 nats a look with a standard deviation near 2: a cap of `log 10` clips 40 % of its
/// looks, `log 100` hardly any.
pub const FAIL_LOOK_CAP: f64 = 100.0;
/// Expected variance (about the expected events) a residual needs before it counts towards
/// the full [`FAIL_LOOK_CAP`]: a look-to-look difference of the primary's rate over a few
/// events cannot tell bursty pods from Poisson noise (one primary pod bursting 5x among five
/// moves 47 expected failures by 4 standard deviations, 5 by barely one), so at moderate
/// traffic the fail test keeps the smaller cap.
pub const INFORMED_VARIANCE: f64 = 30.0;
/// The overwhelming-regression test's alternatives (rate ratios over its null) and weights.
pub const OVERWHELMING: [(f64, f64); 3] =
    [(10.0, 1.0 / 3.0), (100.0, 1.0 / 3.0), (1000.0, 1.0 / 3.0)];
/// The overwhelming test's null: a healthy canary's error rate may reach this many times the
/// primary's in any look through no fault of its own (a burst on its only pod).
pub const OVERWHELMING_BURST: f64 = 10.0;
/// The largest clump of failures the overwhelming test allows for before the traffic has shown
/// its own: its log-LR is divided by `max(OVERWHELMING_CLUMP, phi_p)`, `phi_p` the dispersion
/// the primary's looks before this one showed, which keeps it an e-value for any clump sizes
/// up to that divisor. Where they have shown nothing (the first two looks, or a primary whose
/// failures were rare and independent so far) the bound is assumed: a clump larger than five
/// on the canary alone (a canary pod restart dropping its in-flight requests) can fail it.
pub const OVERWHELMING_CLUMP: f64 = 5.0;
/// Weight of the overwhelming test in the error rate's fail e-process (the main test has the
/// rest): the average of two e-processes for one null is an e-process.
pub const OVERWHELMING_WEIGHT: f64 = 0.1;
/// Prior weight against volume-scaled dispersion, in squared binomial variance (about two
/// blocks of variance 2 showing none).
const KAPPA_PRIOR_DEN: f64 = 8.0;

/// What the engine does when the judge stays inconclusive past its budget (`onInconclusive`):
/// the engine's own [`serin_core::InconclusivePolicy`], one enum for this config, the Canary's
/// field (serin-api re-exports it under the same name) and the plan. The judge's default is
/// [`judge_defaults::ON_INCONCLUSIVE`] (`rollback`, see [`JudgeConfig::default`]); the enum's
/// own `Default` is the plan's without a judge (`wait`).
pub use serin_core::InconclusivePolicy as OnInconclusive;

/// `spec.analysis.judge`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeConfig {
    /// Whether the judge runs (absent block = off).
    pub enabled: bool,
    /// False-rollback budget for the whole run, and the chance of passing a canary worse than
    /// the margin (default 0.01).
    pub alpha: f64,
    /// Requests per arm before the judge may pass (default 100). A failure needs none.
    pub min_requests: u64,
    /// Absolute percentage points of extra error rate that never fail the canary (default 0).
    pub error_rate_tolerance: f64,
    /// Percent of extra latency that never fails the canary (default 10).
    pub latency_tolerance: f64,
    /// A pass must show the canary's error rate at most this percent above the primary's
    /// (default 90: 1.9x, so a doubled rate is beyond it), or within `error_rate_margin_absolute`, whichever is larger.
    pub error_rate_margin: f64,
    /// Absolute margin, percentage points (default 0.5).
    pub error_rate_margin_absolute: f64,
    /// A pass must show the canary's p50 and p99 at most this percent above the primary's
    /// (default 25).
    pub latency_margin: f64,
    /// What the engine does when the judge stays inconclusive past its budget.
    pub on_inconclusive: OnInconclusive,
    /// The chance of raising the weight (not promoting) of a canary worse than the margin
    /// (default 0.2): non-inferiority shown at this level allows a step up, see
    /// [`JudgeResult::step_up`]. At least `alpha`.
    #[serde(default = "default_step_alpha")]
    pub step_alpha: f64,
}

fn default_step_alpha() -> f64 {
    judge_defaults::STEP_ALPHA
}

/// The Canary's defaults ([`serin_core::judge_defaults`], which serin-api applies too).
impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            enabled: true,
            alpha: judge_defaults::ALPHA,
            min_requests: judge_defaults::MIN_REQUESTS,
            error_rate_tolerance: judge_defaults::ERROR_RATE_TOLERANCE,
            latency_tolerance: judge_defaults::LATENCY_TOLERANCE,
            error_rate_margin: judge_defaults::ERROR_RATE_MARGIN,
            error_rate_margin_absolute: judge_defaults::ERROR_RATE_MARGIN_ABSOLUTE,
            latency_margin: judge_defaults::LATENCY_MARGIN,
            on_inconclusive: judge_defaults::ON_INCONCLUSIVE,
            step_alpha: judge_defaults::STEP_ALPHA,
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
        if !(self.error_rate_margin > 0.0 && self.error_rate_margin <= 1000.0) {
            return Err(AnalysisError::invalid(
                format!("{field}.errorRateMargin"),
                format!("{} is out of range", self.error_rate_margin),
                "percent of the primary's error rate, in (0, 1000] (default 90)",
            ));
        }
        if !(self.error_rate_margin_absolute > 0.0 && self.error_rate_margin_absolute <= 100.0) {
            return Err(AnalysisError::invalid(
                format!("{field}.errorRateMarginAbsolute"),
                format!("{} is out of range", self.error_rate_margin_absolute),
                "percentage points, in (0, 100] (default 0.5)",
            ));
        }
        if !(self.latency_margin > 0.0 && self.latency_margin <= 1000.0) {
            return Err(AnalysisError::invalid(
                format!("{field}.latencyMargin"),
                format!("{} is out of range", self.latency_margin),
                "percent, in (0, 1000] (default 25)",
            ));
        }
        if !(self.step_alpha >= self.alpha && self.step_alpha <= 0.5) {
            return Err(AnalysisError::invalid(
                format!("{field}.stepAlpha"),
                format!("{} is out of range", self.step_alpha),
                "a probability in [alpha, 0.5], e.g. 0.2",
            ));
        }
        if self.latency_margin <= self.latency_tolerance {
            return Err(AnalysisError::invalid(
                format!("{field}.latencyMargin"),
                format!(
                    "{} is not above latencyTolerance {}",
                    self.latency_margin, self.latency_tolerance
                ),
                "a margin larger than the tolerance (a pass proves less than a fail needs)",
            ));
        }
        Ok(())
    }

    /// Parses `onInconclusive`.
    pub fn parse_on_inconclusive(field: &str, text: &str) -> Result<OnInconclusive, AnalysisError> {
        match text {
            "rollback" => Ok(OnInconclusive::Rollback),
            "promote" => Ok(OnInconclusive::Promote),
            "wait" => Ok(OnInconclusive::Wait),
            "pause" => Ok(OnInconclusive::Pause),
            other => Err(AnalysisError::invalid(
                field,
                format!("unknown value `{other}`"),
                "rollback, promote, wait or pause",
            )),
        }
    }

    /// The margins in words, for the history and the dashboard.
    pub fn margins_text(&self) -> String {
        format!(
            "error margin max({}% of primary, {} pp), latency margin {}% (p50, p99), alpha {}, stepAlpha {}",
            trim(self.error_rate_margin),
            trim(self.error_rate_margin_absolute),
            trim(self.latency_margin),
            trim(self.alpha),
            trim(self.step_alpha)
        )
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Evidence of one comparison (error rate, or one latency quantile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestEvidence {
    /// Canary requests used so far.
    pub canary_requests: u64,
    /// Canary events (failures, or requests above the look's boundary) so far.
    pub canary_events: u64,
    /// Primary requests used so far.
    pub primary_requests: u64,
    /// Primary events so far.
    pub primary_events: u64,
    /// Canary event rate, percent.
    pub canary_rate_pct: f64,
    /// Primary event rate, percent.
    pub primary_rate_pct: f64,
    /// The fail test's mixture e-value now.
    pub e_value: f64,
    /// The fail test's largest e-value so far; the test fails once it reaches `fail_at`.
    pub max_e_value: f64,
    /// Always-valid p-value of "canary no worse": `min(1, 1 / largest e-value so far)`.
    pub p_value: f64,
    /// The e-value at which the fail test fails (`1 / (alpha * share)`).
    pub fail_at: f64,
    /// The pass (non-inferiority) test's largest e-value so far.
    #[serde(default)]
    pub pass_e_value: f64,
    /// The e-value at which non-inferiority is shown.
    #[serde(default)]
    pub pass_at: f64,
    /// Whether non-inferiority is shown (sticky).
    #[serde(default)]
    pub shown: bool,
    /// The dispersion the next look will be tempered by (1 = independent requests).
    #[serde(default)]
    pub dispersion: f64,
    /// The claim a pass makes, in words (e.g. `canary error <= 1.50%`).
    #[serde(default)]
    pub claim: String,
}

/// One latency quantile's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuantileEvidence {
    /// The quantile (0.5, 0.99).
    pub quantile: f64,
    /// Canary quantile over all looks so far (Prometheus interpolation), ms.
    pub canary_ms: Option<f64>,
    /// Primary quantile over all looks so far, ms.
    pub primary_ms: Option<f64>,
    /// The exceedance comparison.
    pub test: TestEvidence,
}

/// Latency evidence: one comparison per quantile in [`LATENCY_QUANTILES`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyEvidence {
    /// p50 then p99.
    pub quantiles: Vec<QuantileEvidence>,
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
    /// The error-rate comparison.
    pub error: TestEvidence,
    /// The latency comparisons, once both arms reported a histogram.
    pub latency: Option<LatencyEvidence>,
    /// Non-inferiority is shown at the step confidence (`1 - stepAlpha`) though perhaps not
    /// yet at the promotion confidence (`1 - alpha`): enough to raise the weight at a step
    /// that is not the last, never to promote. True whenever `verdict` is Pass. See
    /// [`JudgeResult::verdict_at`].
    #[serde(default)]
    pub step_up: bool,
}

impl JudgeResult {
    /// The verdict for the engine at the current step: a Pass at the promotion confidence
    /// always; at a step that is not the last (`last_step == false`), also non-inferiority
    /// shown at the step confidence. A wrongly raised weight is no promotion: the fail test
    /// keeps running at the new weight, where a regression shows faster, and promotion still
    /// needs the full `1 - alpha`.
    pub fn verdict_at(&self, last_step: bool) -> Verdict {
        match self.verdict {
            Verdict::Inconclusive if self.step_up && !last_step => Verdict::Pass,
            v => v,
        }
    }
}

/// One arm's cumulative counters as last seen (to turn cumulative readings into increments).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct Seen {
    requests: f64,
    failures: f64,
    latency: Option<Histogram>,
}

/// One look's input to a [`Comparison`].
struct LookCounts {
    /// Requests per arm this look.
    n_c: f64,
    n_p: f64,
    /// Canary events against the plain boundary (dispersion), the fail boundary and the pass
    /// boundary; for error rates all three are the failures.
    c_raw: f64,
    c_fail: f64,
    c_pass: f64,
    /// Primary events.
    p: f64,
    /// Null rate ratios of the fail test (canary no worse than this) and the pass test
    /// (canary at least this much worse).
    ratio_fail: f64,
    ratio_pass: f64,
    /// Whether the dispersion-free test of an overwhelming regression runs beside the fail
    /// test (error rates).
    overwhelming: bool,
}

/// A one-sided sequential comparison: the fail and pass e-processes and the dispersion.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Comparison {
    fail_log: [f64; MIXTURE.len()],
    fail_max: f64,
    pass_log: [f64; PASS_MIXTURE.len()],
    pass_max: f64,
    shown: bool,
    /// Sum of squared Pearson residuals, of products of consecutive ones (lag-1
    /// autocovariance: bursts that outlast a look), the last one, and how many were counted.
    resid_sum: f64,
    resid_lag_sum: f64,
    resid_last: f64,
    resid_count: f64,
    /// The primary's own look-to-look variation (first differences of its event rate, so a
    /// slow drift such as time of day does not count): squared standardized differences, how
    /// many, and the previous look's events and requests.
    primary_sum: f64,
    primary_count: f64,
    primary_last: (f64, f64),
    /// Residual pooled over small looks until its variance is large enough.
    pend_obs: f64,
    pend_exp: f64,
    pend_var: f64,
    /// Volume-scaled dispersion (`Var = v (1 + kappa v)`, v the binomial variance): sums of
    /// `d^2 - v`, of `d d_prev` (bursts outlasting a block) and of `v^2` over the residual
    /// blocks, and the last block's `d`.
    kappa_num: f64,
    kappa_lag: f64,
    kappa_den: f64,
    kappa_last: f64,
    /// The primary's own volume-scaled dispersion from its first differences: sum of
    /// `(d^2 - var) / (2 rate^2)` and how many.
    primary_kappa_sum: f64,
    /// The overwhelming-regression test (errors only): log-LRs per alternative, tempered by
    /// the clump bound, never capped, and whether it runs.
    over_log: [f64; OVERWHELMING.len()],
    over: bool,
    /// Residuals (of either kind) with at least [`INFORMED_VARIANCE`] expected variance.
    informed: f64,
    canary_requests: f64,
    canary_events: f64,
    primary_requests: f64,
    primary_events: f64,
}

fn mixture(logs: &[f64], weights: impl Iterator<Item = f64>) -> f64 {
    logs.iter()
        .zip(weights)
        .map(|(l, w)| w * l.exp())
        .sum::<f64>()
        .min(f64::MAX)
}

impl Comparison {
    /// The dispersion the next look is tempered by: the prior and the Pearson residuals so far.
    fn dispersion(&self) -> f64 {
        // Long-run variance of the look-level residuals (Bartlett weights, one lag): positive
        // correlation between neighbouring looks adds to what a sum of looks varies by.
        let lag = (2.0 * self.resid_lag_sum).max(0.0);
        let share = (PHI_PRIOR * PHI_PRIOR_LOOKS + self.resid_sum + lag)
            / (PHI_PRIOR_LOOKS + self.resid_count);
        // The primary's variation between looks reveals bursty pods from the second look on,
        // before the canary's share has shown anything: its pods run the same code paths, so
        // the canary is assumed no less bursty than they are.
        share.max(self.primary_dispersion())
    }

    /// The dispersion the primary's own look-to-look variation shows (at least 1). Unlike the
    /// canary share's residuals it cannot be raised by a canary regression: a sudden one reads
    /// as a huge residual against the ratio fitted before it.
    fn primary_dispersion(&self) -> f64 {
        ((PHI_PRIOR * PHI_PRIOR_LOOKS + self.primary_sum) / (PHI_PRIOR_LOOKS + self.primary_count))
            .max(1.0)
    }

    /// The volume-scaled excess dispersion `kappa`: a per-pod burst or a jitter of one arm's
    /// rate multiplies that arm's count, so its variance grows with the square of the volume
    /// (`v (1 + kappa v)`), and a dispersion measured at a low weight understates it at a high
    /// one. Shrunk towards 0 by a prior worth [`KAPPA_PRIOR_DEN`].
    fn kappa(&self) -> f64 {
        let share =
            (self.kappa_num + (2.0 * self.kappa_lag).max(0.0)) / (self.kappa_den + KAPPA_PRIOR_DEN);
        // The primary shows bursty pods from its second look on; the canary is assumed no
        // less bursty than the primary as a whole, and the share's variance adds both arms'.
        let primary = 2.0 * self.primary_kappa_sum / (PHI_PRIOR_LOOKS + self.primary_count);
        share.max(primary).max(0.0)
    }

    /// The dispersion for a look whose binomial variance is `v` (known before its split is
    /// seen: the look's total and the arms' requests): the larger of the constant estimate
    /// and the volume-scaled one.
    fn dispersion_at(&self, v: f64) -> f64 {
        self.dispersion().max(1.0 + self.kappa() * v.max(0.0))
    }

    /// The log of the most one look may add: [`LOOK_CAP`], or its square root until
    /// [`FULL_CAP_AFTER`] residuals (of either kind) have been seen.
    fn look_cap(&self) -> f64 {
        if self.resid_count.max(self.primary_count) >= FULL_CAP_AFTER {
            LOOK_CAP.ln()
        } else {
            0.5 * LOOK_CAP.ln()
        }
    }

    /// The log of the most one look may add to the fail test before tempering: the pass
    /// tests' [`Self::look_cap`] until [`FULL_CAP_AFTER`] informed residuals, then
    /// [`FAIL_LOOK_CAP`].
    fn fail_look_cap(&self) -> f64 {
        if self.informed >= FULL_CAP_AFTER {
            FAIL_LOOK_CAP.ln()
        } else {
            self.look_cap()
        }
    }

    /// The canary's event rate over the primary's from the looks so far (1 before any).
    fn fitted_ratio(&self) -> f64 {
        if self.canary_requests > 0.0 && self.primary_requests > 0.0 {
            ((self.canary_events + 0.5) / (self.canary_requests + 1.0))
                / ((self.primary_events + 0.5) / (self.primary_requests + 1.0))
        } else {
            1.0
        }
    }

    /// The main fail test's mixture e-value.
    fn main_e(&self) -> f64 {
        mixture(&self.fail_log, MIXTURE.iter().map(|m| m.1))
    }

    /// The overwhelming test's mixture e-value (1 where it does not run).
    fn overwhelming_e(&self) -> f64 {
        mixture(&self.over_log, OVERWHELMING.iter().map(|m| m.1))
    }

    fn fail_e(&self) -> f64 {
        if self.over {
            // Two e-processes for one null, averaged: still an e-process (Ville applies to
            // the average), and each may carry it past the bound alone.
            ((1.0 - OVERWHELMING_WEIGHT) * self.main_e()
                + OVERWHELMING_WEIGHT * self.overwhelming_e())
            .min(f64::MAX)
        } else {
            self.main_e()
        }
    }

    fn pass_e(&self) -> f64 {
        mixture(&self.pass_log, PASS_MIXTURE.iter().map(|m| m.1))
    }

    fn update(&mut self, l: &LookCounts) {
        if l.n_c <= 0.0 || l.n_p <= 0.0 {
            return;
        }
        // Predictable: this look is tempered by what earlier looks showed, and capped harder
        // while fewer than two looks have shown how variable the traffic is.
        let cap = self.look_cap();
        // The clumping the primary's earlier looks showed (before this look counts), for the
        // overwhelming test's clump bound.
        let primary_phi = self.primary_dispersion();
        // The look's binomial variance under the fit so far: it depends on the look's total
        // and requests, not on the split being tested, so tempering by it stays predictable
        // given the total (the conditional test is valid for any such exponent <= 1).
        let fitted = self.fitted_ratio();
        let pi = canary_share(l.n_c, l.n_p, fitted);
        let temper = 1.0 / self.dispersion_at((l.c_raw + l.p) * pi * (1.0 - pi));
        // The fail test's cap shrinks with the dispersion too: on a bursty service (pods whose
        // rate jumps for minutes) a look is worth fewer independent requests, and a burst on
        // the canary's only pod must not fail it in as few looks as on steady traffic. The
        // pass tests keep the plain cap: a bursty canary is never promoted faster for it.
        let fail_cap = self.fail_look_cap() * temper;
        let total = l.c_fail + l.p;
        if total > 0.0 {
            let pi0 = canary_share(l.n_c, l.n_p, l.ratio_fail);
            for (acc, (r, _)) in self.fail_log.iter_mut().zip(MIXTURE) {
                let pi1 = canary_share(l.n_c, l.n_p, l.ratio_fail * r);
                *acc += (temper * share_log_lr(l.c_fail, total, pi1, pi0)).min(fail_cap);
            }
            if l.overwhelming {
                // No cap, and the dispersion only where the primary's looks before this one
                // showed more than the assumed clumping: an e-value under any clumping up to
                // the divisor and any burst up to OVERWHELMING_BURST (README), so it may
                // decide at the first look whose evidence survives them. The divisor is known
                // before the look (predictable), so each factor stays an e-value. Not the
                // canary share's residuals: a regression's first look reads there as a huge
                // clump, and would blunt this test for the rest of the run.
                let clump = OVERWHELMING_CLUMP.max(primary_phi);
                self.over = true;
                let null = l.ratio_fail * OVERWHELMING_BURST;
                let pi0 = canary_share(l.n_c, l.n_p, null);
                for (acc, (r, _)) in self.over_log.iter_mut().zip(OVERWHELMING) {
                    let pi1 = canary_share(l.n_c, l.n_p, null * r);
                    *acc += share_log_lr(l.c_fail, total, pi1, pi0) / clump;
                }
            }
        }
        let total = l.c_pass + l.p;
        if total > 0.0 {
            let pi0 = canary_share(l.n_c, l.n_p, l.ratio_pass);
            for (acc, (r, _)) in self.pass_log.iter_mut().zip(PASS_MIXTURE) {
                let pi1 = canary_share(l.n_c, l.n_p, l.ratio_pass * r);
                *acc += (temper * share_log_lr(l.c_pass, total, pi1, pi0)).min(cap);
            }
        }
        // Overwhelming evidence overflows the e-value to infinity; keep it finite (far above
        // any bound) so the state survives JSON, which has no infinity.
        self.fail_max = self.fail_max.max(self.fail_e());
        self.pass_max = self.pass_max.max(self.pass_e());

        // Dispersion: the canary's share of this look's events against the ratio fitted on
        // earlier looks (so a real regression is not read as noise once it has been seen).
        // The first look has no fit and adds nothing.
        if self.canary_requests > 0.0 && self.primary_requests > 0.0 {
            let events = l.c_raw + l.p;
            let pi = canary_share(l.n_c, l.n_p, fitted);
            self.pend_obs += l.c_raw;
            self.pend_exp += events * pi;
            self.pend_var += events * pi * (1.0 - pi);
            if self.pend_var >= RESIDUAL_MIN_VARIANCE {
                let d = self.pend_obs - self.pend_exp;
                // `d` is measured against a ratio fitted on earlier looks, so its variance is
                // the binomial one plus the fit's own: through the log ratio about
                // `v^2 (1 / C + 1 / P)`, `C` and `P` the events the fit rests on. Without it
                // the first residuals (a fit on one or two looks) read about twice the
                // binomial variance on independent traffic and taxed every test for nothing.
                let v = self.pend_var;
                let fit =
                    v * v * (1.0 / (self.canary_events + 0.5) + 1.0 / (self.primary_events + 0.5));
                let var = v + fit;
                self.kappa_num += d * d - var;
                self.kappa_lag += d * self.kappa_last;
                self.kappa_den += v * v;
                self.kappa_last = d;
                let r = d / var.sqrt();
                self.resid_sum += r * r;
                self.resid_lag_sum += r * self.resid_last;
                self.resid_last = r;
                self.resid_count += 1.0;
                if v >= INFORMED_VARIANCE {
                    self.informed += 1.0;
                }
                self.pend_obs = 0.0;
                self.pend_exp = 0.0;
                self.pend_var = 0.0;
            }
        }
        let (last_p, last_n) = self.primary_last;
        if last_n > 0.0 {
            let pooled = (l.p + last_p) / (l.n_p + last_n);
            let var = pooled * (1.0 - pooled) * (1.0 / l.n_p + 1.0 / last_n);
            // Rare events read as noise; only looks with a few expected events count.
            if pooled * l.n_p.min(last_n) >= RESIDUAL_MIN_VARIANCE && var > 0.0 {
                let d = l.p / l.n_p - last_p / last_n;
                self.primary_sum += d * d / var;
                self.primary_kappa_sum += (d * d - var) / (2.0 * pooled * pooled);
                self.primary_count += 1.0;
                if pooled * l.n_p.min(last_n) >= INFORMED_VARIANCE {
                    self.informed += 1.0;
                }
            }
        }
        self.primary_last = (l.p, l.n_p);
        self.canary_requests += l.n_c;
        self.canary_events += l.c_raw;
        self.primary_requests += l.n_p;
        self.primary_events += l.p;
    }

    fn evidence(&self, fail_at: f64, pass_at: f64, claim: String) -> TestEvidence {
        let pct = |x: f64, n: f64| if n > 0.0 { 100.0 * x / n } else { 0.0 };
        TestEvidence {
            canary_requests: whole(self.canary_requests),
            canary_events: whole(self.canary_events),
            primary_requests: whole(self.primary_requests),
            primary_events: whole(self.primary_events),
            canary_rate_pct: pct(self.canary_events, self.canary_requests),
            primary_rate_pct: pct(self.primary_events, self.primary_requests),
            e_value: self.fail_e(),
            max_e_value: self.fail_max.max(1.0),
            p_value: (1.0 / self.fail_max.max(1.0)).min(1.0),
            fail_at,
            pass_e_value: self.pass_max.max(1.0),
            pass_at,
            shown: self.shown,
            dispersion: self.dispersion(),
            claim,
        }
    }
}

/// The canary's own error rate against the absolute margin: shows "canary error <= margin"
/// when the primary hardly fails and the ratio test has no events to work with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct AbsoluteTest {
    log: [f64; 3],
    max: f64,
}

/// Alternatives of [`AbsoluteTest`] as fractions of the margin, equal weights.
const ABSOLUTE_ALTERNATIVES: [f64; 3] = [0.05, 0.25, 0.5];

impl AbsoluteTest {
    fn update(&mut self, x: f64, n: f64, margin: f64, temper: f64, cap: f64) {
        for (acc, f) in self.log.iter_mut().zip(ABSOLUTE_ALTERNATIVES) {
            *acc += (temper * binomial_log_lr(x, n, margin * f, margin)).min(cap);
        }
        let e = mixture(&self.log, std::iter::repeat(1.0 / 3.0));
        self.max = self.max.max(e);
    }
}

/// The version of the judge's sequential tests, saved with [`JudgeState`]. Bump it whenever a
/// change makes a saved state mean something else: a constant above (mixture weights, alpha
/// shares, caps, priors, the overwhelming test's bounds) or how a look updates the tests. A
/// state saved by another version is not continued: its e-processes were built and bounded
/// for other parameters, and carried over under the new ones they are not supermartingales
/// at the switch (a lowered bound could be crossed at the next look whatever it shows). The
/// tests start afresh at the first look this version takes; see [`JudgeState`].
pub const JUDGE_VERSION: u32 = 1;

/// The version a [`JudgeState`] was saved by: [`JUDGE_VERSION`] for a new state, 0 for a state
/// saved before states carried one (read as "unversioned").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct Version(u32);

impl Default for Version {
    fn default() -> Self {
        Version(JUDGE_VERSION)
    }
}

impl Version {
    fn unversioned() -> Self {
        Version(0)
    }

    fn describe(self) -> String {
        match self.0 {
            0 => "an unversioned judge".into(),
            v => format!("judge version {v}"),
        }
    }
}

/// The judge's memory between looks. Serializable so the runtime can persist it with the
/// Canary's status; start each analysis run with `JudgeState::default()`.
///
/// A state saved by another [`JUDGE_VERSION`] (a run that spans a controller upgrade) is not
/// continued: at its next look the sequential tests (error rate, p50, p99; fail and pass)
/// start afresh, from no evidence, and the verdict's reason says so. What it keeps: the
/// cumulative counters the next increment is measured from, the number of looks, the latency
/// seen for the quantiles shown, and a Fail or Pass already reached (each was reached at the
/// old version's own `alpha`, and the engine has acted on it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JudgeState {
    /// The version the tests below were built by; absent in states saved before it existed.
    #[serde(default = "Version::unversioned")]
    version: Version,
    looks: u32,
    canary_seen: Option<Seen>,
    primary_seen: Option<Seen>,
    error: Comparison,
    absolute: AbsoluteTest,
    latency: [Comparison; LATENCY_QUANTILES.len()],
    /// Both arms' latency over all looks (for the quantiles shown).
    canary_latency: Option<Histogram>,
    primary_latency: Option<Histogram>,
    /// Whether any look carried latency histograms from both arms.
    latency_seen: bool,
    failed: Option<String>,
    passed: bool,
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

fn clean(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

fn accumulate(acc: &mut Option<Histogram>, h: &Histogram) {
    let merged = acc.as_mut().is_some_and(|a| a.add(h));
    if !merged {
        *acc = Some(h.clone());
    }
}

fn quantile_name(q: f64) -> String {
    format!("p{}", trim(q * 100.0))
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

    /// The relative error margin as a ratio of rates, from the primary's rate before this look
    /// (predictable, so this look's data does not move the null it is tested against).
    fn margin_ratio(&self, config: &JudgeConfig) -> f64 {
        let rel = 1.0 + config.error_rate_margin / 100.0;
        if self.error.primary_requests <= 0.0 {
            return rel;
        }
        let p = (self.error.primary_events + 0.5) / (self.error.primary_requests + 1.0);
        rel.max((p + config.error_rate_margin_absolute / 100.0) / p)
    }

    /// Feeds one look's traffic (disjoint from every earlier look) and returns the verdict.
    pub fn observe_window(
        &mut self,
        config: &JudgeConfig,
        canary: &ArmTraffic,
        primary: &ArmTraffic,
    ) -> JudgeResult {
        self.looks += 1;
        let restarted = self.restart_if_other_version();
        let n_c = clean(canary.requests);
        let n_p = clean(primary.requests);
        let x_c = clean(canary.failures).min(n_c);
        let x_p = clean(primary.failures).min(n_p);
        let fresh = n_c > 0.0 && n_p > 0.0;

        if self.failed.is_none() && fresh {
            // Error rate. The tolerance moves the fail test's null from "no worse" to "at most
            // `tolerance` points worse", from the primary's rate before this look.
            let ratio_fail = if config.error_rate_tolerance > 0.0 {
                let p = (self.error.primary_events + 0.5) / (self.error.primary_requests + 1.0);
                (p + config.error_rate_tolerance / 100.0) / p
            } else {
                1.0
            };
            let ratio_pass = self.margin_ratio(config);
            let temper = 1.0 / self.error.dispersion();
            self.absolute.update(
                x_c,
                n_c,
                config.error_rate_margin_absolute / 100.0,
                temper,
                self.error.look_cap(),
            );
            self.error.update(&LookCounts {
                n_c,
                n_p,
                c_raw: x_c,
                c_fail: x_c,
                c_pass: x_c,
                p: x_p,
                ratio_fail,
                ratio_pass,
                overwhelming: true,
            });

            // Latency: each quantile's boundary comes from this look's pooled histogram, a
            // function of both arms together, so with equal arms neither is favoured.
            if let (Some(lc), Some(lp)) = (&canary.latency, &primary.latency) {
                let mut pooled = lc.clone();
                if pooled.add(lp) && lc.total() > 0.0 && lp.total() > 0.0 {
                    self.latency_seen = true;
                    for (test, q) in self.latency.iter_mut().zip(LATENCY_QUANTILES) {
                        let Some(b) = pooled.quantile(q).filter(|b| *b > 0.0) else {
                            continue;
                        };
                        test.update(&LookCounts {
                            n_c: lc.total(),
                            n_p: lp.total(),
                            c_raw: lc.count_above(b),
                            c_fail: lc.count_above(b * (1.0 + config.latency_tolerance / 100.0)),
                            c_pass: lc.count_above(b * (1.0 + config.latency_margin / 100.0)),
                            p: lp.count_above(b),
                            ratio_fail: 1.0,
                            ratio_pass: 1.0,
                            overwhelming: false,
                        });
                    }
                    accumulate(&mut self.canary_latency, lc);
                    accumulate(&mut self.primary_latency, lp);
                }
            }
        }
        let mut result = self.conclude(config, fresh);
        if let Some(from) = restarted {
            result.reason = format!(
                "sequential tests restarted at look {} (state saved by {}, this is judge version {JUDGE_VERSION}; evidence from earlier looks is not carried over): {}",
                self.looks,
                from.describe(),
                result.reason
            );
        }
        result
    }

    /// Starts the sequential tests afresh when the state was saved by another judge version
    /// (see [`JudgeState`]); returns the version it was saved by if so.
    fn restart_if_other_version(&mut self) -> Option<Version> {
        let from = self.version;
        if from == Version::default() {
            return None;
        }
        tracing::warn!(
            saved_by = from.0,
            version = JUDGE_VERSION,
            looks = self.looks,
            "judge state saved by another version: restarting the sequential tests"
        );
        *self = JudgeState {
            version: Version::default(),
            looks: self.looks,
            canary_seen: self.canary_seen.take(),
            primary_seen: self.primary_seen.take(),
            canary_latency: self.canary_latency.take(),
            primary_latency: self.primary_latency.take(),
            latency_seen: self.latency_seen,
            failed: self.failed.take(),
            passed: self.passed,
            error: Comparison::default(),
            absolute: AbsoluteTest::default(),
            latency: Default::default(),
        };
        Some(from)
    }

    fn conclude(&mut self, config: &JudgeConfig, fresh: bool) -> JudgeResult {
        let alpha = config.alpha;
        let error_fail_at = 1.0 / (alpha * ERROR_ALPHA_SHARE);
        let latency_fail_at =
            1.0 / (alpha * (1.0 - ERROR_ALPHA_SHARE) / LATENCY_QUANTILES.len() as f64);
        // The error pass is shown by the ratio test or by the absolute test, each at alpha/2;
        // each latency quantile's pass at alpha (all must be shown: intersection-union).
        let error_pass_at = 2.0 / alpha;
        let latency_pass_at = 1.0 / alpha;

        let error_shown =
            self.error.pass_max >= error_pass_at || self.absolute.max >= error_pass_at;
        self.error.shown |= error_shown;
        let primary_rate =
            (self.error.primary_events / self.error.primary_requests.max(1.0)) * 100.0;
        let bound_pct = (primary_rate * (1.0 + config.error_rate_margin / 100.0))
            .max(primary_rate + config.error_rate_margin_absolute);
        let error = self.error.evidence(
            error_fail_at,
            error_pass_at,
            format!("canary error <= {bound_pct:.2}%"),
        );
        for test in &mut self.latency {
            if test.pass_max >= latency_pass_at {
                test.shown = true;
            }
        }
        let latency = self.latency_seen.then(|| LatencyEvidence {
            quantiles: self
                .latency
                .iter()
                .zip(LATENCY_QUANTILES)
                .map(|(test, q)| {
                    let primary_ms = self.primary_latency.as_ref().and_then(|h| h.quantile(q));
                    QuantileEvidence {
                        quantile: q,
                        canary_ms: self.canary_latency.as_ref().and_then(|h| h.quantile(q)),
                        primary_ms,
                        test: test.evidence(
                            latency_fail_at,
                            latency_pass_at,
                            format!(
                                "canary {} <= {}",
                                quantile_name(q),
                                primary_ms.map_or_else(
                                    || format!("primary x {}", 1.0 + config.latency_margin / 100.0),
                                    |ms| format!(
                                        "{:.1} ms",
                                        ms * (1.0 + config.latency_margin / 100.0)
                                    )
                                )
                            ),
                        ),
                    }
                })
                .collect(),
        });
        let looks = self.looks;
        let result = |verdict, reason: String, step_up| JudgeResult {
            verdict,
            reason,
            looks,
            error: error.clone(),
            latency: latency.clone(),
            step_up,
        };

        if let Some(reason) = &self.failed {
            return result(Verdict::Fail, reason.clone(), false);
        }
        if error.max_e_value >= error.fail_at {
            let reason = format!(
                "canary error rate {:.2}% vs primary {:.2}%: worse with always-valid p = {:.2e} <= {}",
                error.canary_rate_pct,
                error.primary_rate_pct,
                error.p_value,
                trim(1.0 / error.fail_at)
            );
            self.failed = Some(reason.clone());
            return result(Verdict::Fail, reason, false);
        }
        if let Some(lat) = &latency {
            for qe in &lat.quantiles {
                if qe.test.max_e_value >= qe.test.fail_at {
                    let reason = format!(
                        "canary {} {} ms vs primary {} ms: slower beyond {}% with always-valid p = {:.2e} <= {}",
                        quantile_name(qe.quantile),
                        qe.canary_ms.map_or("?".into(), |v| format!("{v:.1}")),
                        qe.primary_ms.map_or("?".into(), |v| format!("{v:.1}")),
                        trim(config.latency_tolerance),
                        qe.test.p_value,
                        trim(1.0 / qe.test.fail_at)
                    );
                    self.failed = Some(reason.clone());
                    return result(Verdict::Fail, reason, false);
                }
            }
        }
        if !fresh {
            return result(
                Verdict::Inconclusive,
                "no new traffic in both arms since the last look".into(),
                false,
            );
        }
        let confidence = format!("{}%", trim(100.0 * (1.0 - alpha)));
        let missing = self.missing(config, alpha, &error, latency.as_ref());
        if missing.is_empty() || self.passed {
            let reason = {
                let mut parts = vec![format!(
                    "{} (observed {:.2}%)",
                    error.claim, error.canary_rate_pct
                )];
                match &latency {
                    Some(lat) => parts.extend(lat.quantiles.iter().map(|q| q.test.claim.clone())),
                    None => parts.push("latency not measured (no histograms)".into()),
                }
                format!(
                    "non-inferior with {confidence} confidence: {}; {}",
                    parts.join(", "),
                    config.margins_text()
                )
            };
            self.passed = true;
            return result(Verdict::Pass, reason, true);
        }
        // The same claims at the step confidence: the running maxima only grow, so once shown
        // this stays shown too.
        let step_alpha = config.step_alpha.max(alpha);
        let step_up = step_alpha > alpha
            && self
                .missing(config, step_alpha, &error, latency.as_ref())
                .is_empty();
        let reason = if step_up {
            format!(
                "non-inferior with {}% confidence, enough to raise the weight (stepAlpha {}); promotion needs {confidence}: {}",
                trim(100.0 * (1.0 - step_alpha)),
                trim(step_alpha),
                missing.join("; ")
            )
        } else {
            format!(
                "not yet shown with {confidence} confidence: {}",
                missing.join("; ")
            )
        };
        result(Verdict::Inconclusive, reason, step_up)
    }

    /// The claims not yet shown at level `level` (the error rate by the ratio or the absolute
    /// test at `level / 2` each, every latency quantile at `level`: all must hold), and
    /// `minRequests` once they all are.
    fn missing(
        &self,
        config: &JudgeConfig,
        level: f64,
        error: &TestEvidence,
        latency: Option<&LatencyEvidence>,
    ) -> Vec<String> {
        let mut missing = Vec::new();
        let error_at = 2.0 / level;
        let error_shown = if level <= config.alpha {
            error.shown
        } else {
            self.error.pass_max >= error_at || self.absolute.max >= error_at
        };
        if !error_shown {
            missing.push(format!(
                "{} (observed {:.2}% vs {:.2}%)",
                error.claim, error.canary_rate_pct, error.primary_rate_pct
            ));
        }
        // A provider without histograms (the judge never saw one from both arms) proves errors
        // only; the pass reason says so.
        if let Some(lat) = latency {
            for (qe, test) in lat.quantiles.iter().zip(&self.latency) {
                let shown = if level <= config.alpha {
                    qe.test.shown
                } else {
                    test.pass_max >= 1.0 / level
                };
                if !shown {
                    missing.push(qe.test.claim.clone());
                }
            }
        }
        if missing.is_empty()
            && (error.canary_requests < config.min_requests
                || error.primary_requests < config.min_requests)
        {
            missing.push(format!(
                "minRequests {} per arm (canary {}, primary {})",
                config.min_requests, error.canary_requests, error.primary_requests
            ));
        }
        missing
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

    /// Deterministic spread: quantiles of a log-uniform 5..100 ms, scaled.
    fn latency(scale: f64, n: usize) -> Histogram {
        let mut h = Histogram::linkerd();
        for i in 0..n {
            let u = (i as f64 + 0.5) / n as f64;
            h.record(scale * 5.0 * (20f64).powf(u));
        }
        h
    }

    fn with_latency(requests: f64, failures: f64, scale: f64) -> ArmTraffic {
        ArmTraffic {
            requests,
            failures,
            latency: Some(latency(scale, requests as usize)),
        }
    }

    fn binomial(rng: &mut fastrand::Rng, n: u64, p: f64) -> f64 {
        (0..n).filter(|_| rng.f64() < p).count() as f64
    }

    #[test]
    fn a_canary_failing_everything_fails_at_the_crossing_look_without_min_requests() {
        // 50 requests a minute, 10 % to the canary, which fails all of them.
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        let mut failed_at = None;
        for look in 1..=10 {
            let r = s.observe_window(&cfg, &traffic(5.0, 5.0), &traffic(45.0, 0.0));
            let crossed = r.error.max_e_value >= r.error.fail_at;
            assert_eq!(
                r.verdict == Verdict::Fail,
                crossed,
                "look {look}: the verdict is Fail exactly when the e-value has crossed: {}",
                r.reason
            );
            if crossed {
                failed_at = Some(look);
                break;
            }
        }
        let at = failed_at.expect("a canary failing every request is rolled back");
        // Five looks: with no failure in the primary no residual ever shows the traffic's
        // variability, so a look adds at most sqrt(10) to the main test (LOOK_CAP), and
        // 10^(5/2) > 1 / (alpha * ERROR_ALPHA_SHARE * (1 - OVERWHELMING_WEIGHT)) = 131 >
        // 10^(4/2). The overwhelming test cannot be quicker here: five failures a look may be
        // one clump of five.
        assert!(at <= 5, "failed at look {at}: no minimum-sample wait");
        assert!(cfg.min_requests > 15, "the failure came before minRequests");
    }

    #[test]
    fn an_overwhelming_regression_fails_at_the_first_look_whose_evidence_survives_any_clumping() {
        // 5,000 requests a minute at a 5 % weight; the canary fails every request, against a
        // primary failing 1 % or never.
        let cfg = JudgeConfig::default();
        for primary_failures in [47.0, 0.0] {
            let mut s = JudgeState::default();
            let r = s.observe_window(
                &cfg,
                &traffic(250.0, 250.0),
                &traffic(4750.0, primary_failures),
            );
            assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
            assert!(r.error.max_e_value >= r.error.fail_at, "{:?}", r.error);
            assert!(r.reason.contains("error rate"), "{}", r.reason);
            // The main test alone is capped at its first look; the overwhelming test, which
            // needs no estimated dispersion, decided.
            assert!(
                (1.0 - OVERWHELMING_WEIGHT) * s.error.main_e() < r.error.fail_at,
                "{}",
                s.error.main_e()
            );
        }
        // 500 requests a minute: 25 failures of 25 against none of 475 do not survive clumps
        // of five and a 10x burst at the first look (five clumps, each in the canary with
        // probability 0.34 under that null); the second look crosses, and the Fail is that
        // look, not later.
        let mut s = JudgeState::default();
        let mut failed_at = None;
        for look in 1..=5 {
            let r = s.observe_window(&cfg, &traffic(25.0, 25.0), &traffic(475.0, 0.0));
            let crossed = r.error.max_e_value >= r.error.fail_at;
            assert_eq!(r.verdict == Verdict::Fail, crossed, "look {look}");
            if crossed {
                failed_at = Some(look);
                break;
            }
        }
        assert_eq!(failed_at, Some(2));
    }

    #[test]
    fn the_overwhelming_test_holds_under_clumps_and_bursts_within_its_bounds() {
        // Its null at the bounds: the canary fails 10x the primary's rate (a burst on its only
        // pod), and every failure comes in a clump of five, in both arms. Ville: the chance
        // that its e-process ever reaches 20 is at most 1/20, whatever the number of looks.
        let cfg = JudgeConfig::default();
        let mut rng = fastrand::Rng::with_seed(0x0e1f);
        let trials = 400;
        let mut reached = 0;
        let mut largest: f64 = 0.0;
        for _ in 0..trials {
            let mut s = JudgeState::default();
            let mut max: f64 = 0.0;
            for _ in 0..20 {
                let c = 5.0 * binomial(&mut rng, 250, 0.1 / 5.0);
                let p = 5.0 * binomial(&mut rng, 4750, 0.01 / 5.0);
                s.observe_window(&cfg, &traffic(250.0, c), &traffic(4750.0, p));
                max = max.max(s.error.overwhelming_e());
            }
            largest = largest.max(max);
            reached += usize::from(max >= 20.0);
        }
        // 20 of 400 allowed by the bound; allow the sampling noise (sd ~4.4).
        assert!(reached <= 29, "reached 20 in {reached} of {trials}");
        // The test can fail: without the clump and burst allowances the same traffic is
        // overwhelming evidence (a 10x rate against a null of 1x).
        let mut s = JudgeState::default();
        s.observe_window(&cfg, &traffic(250.0, 25.0), &traffic(4750.0, 47.0));
        let plain = share_log_lr(
            25.0,
            72.0,
            canary_share(250.0, 4750.0, 10.0),
            canary_share(250.0, 4750.0, 1.0),
        );
        assert!(plain > 20f64.ln(), "{plain}");
        assert!(largest < 1e6, "{largest}");
    }

    #[test]
    fn the_overwhelming_clump_bound_is_assumed_at_first_then_follows_the_primarys_dispersion() {
        // One canary pod restarting drops its ~35 in-flight requests in one look (5,000
        // requests a minute at a 5 % weight; the primary fails none that look).
        let cfg = JudgeConfig::default();
        let restart = (traffic(250.0, 35.0), traffic(4750.0, 0.0));
        // At the first look nothing has shown the traffic's clumping: the overwhelming test
        // assumes clumps of at most five, and 35 failures in clumps of five are an
        // overwhelming regression. This is the stated assumption, not a guarantee.
        let mut first = JudgeState::default();
        let r = first.observe_window(&cfg, &restart.0, &restart.1);
        assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
        // The same look after four looks whose failures came in clumps (the primary's 1 %
        // swinging between 30 and 65 failures a look, far beyond binomial noise): the
        // dispersion the primary's earlier looks showed raises the clump bound, and the
        // restart does not fail (the earlier looks' evidence against the overwhelming
        // alternatives counts too).
        let clumpy_looks = [(2.0, 30.0), (3.0, 65.0), (2.0, 30.0), (3.0, 65.0)];
        let mut clumpy = JudgeState::default();
        for (c, p) in clumpy_looks {
            let r = clumpy.observe_window(&cfg, &traffic(250.0, c), &traffic(4750.0, p));
            assert_ne!(r.verdict, Verdict::Fail, "{}", r.reason);
        }
        let phi = clumpy.error.primary_dispersion();
        assert!(phi > OVERWHELMING_CLUMP, "{phi}");
        let before = clumpy.error.over_log;
        let r = clumpy.observe_window(&cfg, &restart.0, &restart.1);
        assert_ne!(r.verdict, Verdict::Fail, "phi {phi}: {}", r.reason);
        // The look's overwhelming evidence is divided by that dispersion, not by five.
        let mut fresh = JudgeState::default();
        fresh.observe_window(&cfg, &restart.0, &restart.1);
        for ((b, a), f) in before
            .iter()
            .zip(clumpy.error.over_log)
            .zip(fresh.error.over_log)
        {
            let ratio = (a - b) / f;
            assert!(
                (ratio - OVERWHELMING_CLUMP / phi).abs() < 1e-9,
                "{ratio} vs 5 / {phi}"
            );
        }
        // A canary that breaks completely there still fails within a few looks (its earlier
        // healthy looks count against the overwhelming test, and the main test is tempered by
        // the dispersion its first broken look shows against the earlier fit).
        let mut broken = JudgeState::default();
        for (c, p) in clumpy_looks {
            broken.observe_window(&cfg, &traffic(250.0, c), &traffic(4750.0, p));
        }
        let failed_at = (1..=5).find(|_| {
            broken
                .observe_window(&cfg, &traffic(250.0, 250.0), &traffic(4750.0, 0.0))
                .verdict
                == Verdict::Fail
        });
        assert!(failed_at.is_some_and(|l| l <= 4), "{failed_at:?}");
    }

    #[test]
    fn equal_arms_pass_only_once_non_inferiority_is_shown() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        let mut verdicts = Vec::new();
        let mut step_up_at = None;
        for look in 1..=15 {
            let r = s.observe_window(
                &cfg,
                &with_latency(2000.0, 100.0, 1.0),
                &with_latency(2000.0, 100.0, 1.0),
            );
            verdicts.push(r.verdict);
            if r.verdict == Verdict::Pass {
                assert!(r.step_up, "a promotion-grade pass also raises the weight");
                assert!(r.error.shown, "{r:?}");
                assert!(r.error.pass_e_value >= r.error.pass_at);
                let lat = r.latency.as_ref().expect("latency evidence");
                assert!(lat.quantiles.iter().all(|q| q.test.shown));
                assert!(
                    r.reason.contains("non-inferior with 99% confidence"),
                    "{}",
                    r.reason
                );
                assert!(r.reason.contains("canary error <= 9.50%"), "{}", r.reason);
                break;
            }
            assert_eq!(r.verdict, Verdict::Inconclusive, "{}", r.reason);
            if r.step_up {
                // Shown at the step confidence (80 %), not yet at 99 %: the weight may rise
                // at a step that is not the last, but this is no promotion.
                step_up_at.get_or_insert(look);
                assert!(
                    r.reason.contains("non-inferior with 80% confidence")
                        && r.reason.contains("promotion needs 99%"),
                    "{}",
                    r.reason
                );
                assert_eq!(r.verdict_at(false), Verdict::Pass);
                assert_eq!(r.verdict_at(true), Verdict::Inconclusive);
            } else {
                assert!(step_up_at.is_none(), "the step evidence stays shown");
                assert!(r.reason.contains("not yet shown"), "{}", r.reason);
                assert_eq!(r.verdict_at(false), Verdict::Inconclusive);
            }
        }
        assert_eq!(verdicts.last(), Some(&Verdict::Pass), "{verdicts:?}");
        let step_up_at = step_up_at.expect("the step confidence comes before the full one");
        assert!(
            step_up_at >= 3 && step_up_at < verdicts.len(),
            "one look is never enough: step up at {step_up_at}, pass at {}",
            verdicts.len()
        );
    }

    #[test]
    fn a_look_without_new_traffic_never_passes() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        let mut passed = false;
        for _ in 0..15 {
            let r = s.observe_window(&cfg, &traffic(4000.0, 0.0), &traffic(4000.0, 0.0));
            passed |= r.verdict == Verdict::Pass;
        }
        assert!(passed, "a healthy, busy canary passes (absolute margin)");
        let r = s.observe_window(&cfg, &traffic(0.0, 0.0), &traffic(4000.0, 0.0));
        assert_eq!(r.verdict, Verdict::Inconclusive, "{}", r.reason);
        assert!(r.reason.contains("no new traffic"), "{}", r.reason);
        // Cumulative readings that did not move are an empty look too.
        let mut c = JudgeState::default();
        c.observe_cumulative(&cfg, &traffic(100.0, 0.0), &traffic(900.0, 0.0));
        let r = c.observe_cumulative(&cfg, &traffic(100.0, 0.0), &traffic(1800.0, 0.0));
        assert_eq!(r.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn false_fail_and_false_pass_stay_under_alpha_by_simulation() {
        // Seeded simulation of the always-valid guarantees over 30 looks:
        // * A/A (1 % errors both arms): the fail test rejects "canary no worse" in <= alpha;
        // * canary exactly at the margin (1.9x): the pass test shows "within the margin"
        //   in <= alpha, and at the step confidence in <= stepAlpha.
        let cfg = JudgeConfig::default();
        let trials = 400;
        let mut rng = fastrand::Rng::with_seed(0x5e71);
        let (mut false_fail, mut false_pass, mut false_step) = (0, 0, 0);
        for _ in 0..trials {
            let mut aa = JudgeState::default();
            let mut edge = JudgeState::default();
            let (mut aa_failed, mut edge_passed, mut edge_stepped) = (false, false, false);
            for _ in 0..30 {
                let p = binomial(&mut rng, 1800, 0.01);
                let c = binomial(&mut rng, 200, 0.01);
                aa_failed |= aa
                    .observe_window(&cfg, &traffic(200.0, c), &traffic(1800.0, p))
                    .verdict
                    == Verdict::Fail;
                let p = binomial(&mut rng, 1800, 0.01);
                let c = binomial(&mut rng, 200, 0.019);
                let r = edge.observe_window(&cfg, &traffic(200.0, c), &traffic(1800.0, p));
                edge_passed |= r.error.shown;
                edge_stepped |= r.step_up;
            }
            false_fail += usize::from(aa_failed);
            false_pass += usize::from(edge_passed);
            false_step += usize::from(edge_stepped);
        }
        // alpha = 1 %: 4 of 400 expected at most; allow sampling noise (binomial sd ~2).
        assert!(false_fail <= 8, "A/A failed in {false_fail} of {trials}");
        assert!(
            false_pass <= 8,
            "1.9x shown non-inferior in {false_pass} of {trials}"
        );
        // The step confidence: stepAlpha = 20 %, 80 of 400 at most (sd ~8).
        assert!(
            false_step <= 96,
            "1.9x shown at the step confidence in {false_step} of {trials}"
        );
    }

    #[test]
    fn a_clear_error_regression_fails_and_stays_failed() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        let mut verdict = Verdict::Inconclusive;
        // Until two residuals have shown the traffic's variability a look adds at most
        // sqrt(LOOK_CAP), then LOOK_CAP over the dispersion: sqrt(10)^2 * 10^2 >
        // 1 / (alpha * ERROR_ALPHA_SHARE) = 125, so four looks; never fewer than three.
        let mut failed_at = None;
        for look in 1..=5 {
            verdict = s
                .observe_window(&cfg, &traffic(1000.0, 100.0), &traffic(1000.0, 10.0))
                .verdict;
            if verdict == Verdict::Fail {
                failed_at.get_or_insert(look);
            }
        }
        assert_eq!(verdict, Verdict::Fail);
        assert!(
            failed_at.is_some_and(|l| (3..=4).contains(&l)),
            "{failed_at:?}"
        );
        let r = s.observe_window(&cfg, &traffic(1000.0, 10.0), &traffic(1000.0, 10.0));
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.reason.contains("error rate"), "{}", r.reason);
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
        assert_ne!(rb.unwrap().verdict, Verdict::Fail);
    }

    #[test]
    fn a_slow_canary_fails_from_the_first_looks_without_calibration() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        let mut failed_at = None;
        for look in 1..=8 {
            let r = s.observe_window(
                &cfg,
                &with_latency(300.0, 0.0, 2.0),
                &with_latency(300.0, 0.0, 1.0),
            );
            let lat = r
                .latency
                .as_ref()
                .expect("latency is compared from the first look");
            assert_eq!(lat.quantiles.len(), 2);
            if r.verdict == Verdict::Fail {
                assert!(r.reason.contains("slower"), "{}", r.reason);
                failed_at = Some(look);
                break;
            }
        }
        // Six looks: a latency quantile's bound is 1 / (alpha / 4) = 400 > sqrt(10)^5, and
        // the sixth look may add the full LOOK_CAP.
        assert!(failed_at.is_some_and(|l| l <= 6), "{failed_at:?}");
    }

    #[test]
    fn clumped_failures_raise_the_dispersion() {
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        let mut r = None;
        // The canary's share of failures swings far beyond binomial noise, around the same mean.
        for i in 0..12 {
            let c = if i % 2 == 0 { 2.0 } else { 38.0 };
            r = Some(s.observe_window(&cfg, &traffic(1000.0, c), &traffic(1000.0, 20.0)));
        }
        let d = r.expect("twelve looks").error.dispersion;
        assert!(d > 5.0, "{d}");
        // Independent traffic keeps it near 1.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut s = JudgeState::default();
        let mut r = None;
        for _ in 0..12 {
            let c = binomial(&mut rng, 1000, 0.02);
            let p = binomial(&mut rng, 1000, 0.02);
            r = Some(s.observe_window(&cfg, &traffic(1000.0, c), &traffic(1000.0, p)));
        }
        let d = r.expect("twelve looks").error.dispersion;
        assert!(d < 2.5, "{d}");
    }

    #[test]
    fn a_bursty_arm_scales_the_dispersion_with_the_volume() {
        // The canary's rate is multiplied by 0.2 or 1.8 on alternate looks (a bursty single
        // pod): its count's variance grows with the square of the volume. Learnt at a low
        // weight, the dispersion applied to a look ten times larger must be far higher.
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        for i in 0..10 {
            let c = if i % 2 == 0 { 2.0 } else { 18.0 };
            s.observe_window(&cfg, &traffic(1000.0, c), &traffic(9000.0, 90.0));
        }
        let kappa = s.error.kappa();
        assert!(kappa > 0.1, "{kappa}");
        let small = s.error.dispersion_at(10.0 * 0.9);
        let large = s.error.dispersion_at(100.0 * 0.5);
        assert!(large > 2.0 * small && large > 5.0, "{small} {large}");
        // Independent traffic: kappa is only its estimate's noise, about sqrt(2 / looks) / v
        // (v ~ 8 here), ten times less than the bursty arm's.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut s = JudgeState::default();
        for _ in 0..30 {
            let c = binomial(&mut rng, 1000, 0.01);
            let p = binomial(&mut rng, 9000, 0.01);
            s.observe_window(&cfg, &traffic(1000.0, c), &traffic(9000.0, p));
        }
        let independent = s.error.kappa();
        assert!(
            independent < 0.05 && independent * 10.0 < kappa,
            "{independent} vs {kappa}"
        );
    }

    #[test]
    fn a_burst_on_the_only_canary_pod_of_a_bursty_service_cannot_fail_it_in_four_looks() {
        // From the first look the canary fails 5x the primary's mean rate for four looks (a
        // burst before any canary residual exists), while the primary's pods burst too: its
        // rate swings between 0.4 % and 1.6 % from look to look. The fail test's cap shrinks
        // with the dispersion that the primary's swings show from the second look on.
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        for (look, p) in [(1, 18.0), (2, 72.0), (3, 18.0), (4, 72.0)] {
            let r = s.observe_window(&cfg, &traffic(500.0, 25.0), &traffic(4500.0, p));
            assert_ne!(r.verdict, Verdict::Fail, "look {look}: {}", r.reason);
        }
        // The same canary against a steady primary is a regression: nothing says the
        // service bursts, and four looks are enough.
        let mut steady = JudgeState::default();
        let failed = (0..4).any(|_| {
            steady
                .observe_window(&cfg, &traffic(500.0, 25.0), &traffic(4500.0, 45.0))
                .verdict
                == Verdict::Fail
        });
        assert!(
            failed,
            "a 5x canary against a steady primary fails within four looks"
        );
    }

    #[test]
    fn the_state_survives_json_even_after_overwhelming_evidence() {
        // A badly broken canary under heavy traffic: the e-value overflows f64.
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        for _ in 0..5 {
            s.observe_window(
                &cfg,
                &traffic(1_000_000.0, 500_000.0),
                &traffic(1_000_000.0, 1_000.0),
            );
        }
        let json = serde_json::to_string(&s).unwrap();
        let back: JudgeState = serde_json::from_str(&json).expect("the persisted state reads back");
        let mut resumed = back;
        let r = resumed.observe_window(&cfg, &traffic(100.0, 1.0), &traffic(100.0, 1.0));
        assert_eq!(
            r.verdict,
            Verdict::Fail,
            "a failed test stays failed after a restart"
        );
    }

    #[test]
    fn a_state_saved_by_another_version_never_fails_on_a_look_without_new_evidence() {
        // A run that spans a controller upgrade: the state was saved by a version whose error
        // bound was 1 / (0.8 alpha) = 125, with a running maximum of 120 (not failed there),
        // and this version's bound is lower.
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        for _ in 0..3 {
            s.observe_window(&cfg, &traffic(1000.0, 10.0), &traffic(1000.0, 10.0));
        }
        let mut saved = serde_json::to_value(&s).unwrap();
        assert_eq!(saved["version"], JUDGE_VERSION, "{saved}");
        assert!(1.0 / (cfg.alpha * ERROR_ALPHA_SHARE) < 120.0);
        saved["error"]["failMax"] = 120.0.into();
        saved["error"]["passMax"] = 1000.0.into();
        // Saved with this version, the state continues: 120 is past this version's bound.
        let mut same: JudgeState = serde_json::from_value(saved.clone()).unwrap();
        let r = same.observe_window(&cfg, &traffic(0.0, 0.0), &traffic(0.0, 0.0));
        assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
        // Saved by another version, or before states carried one: no Fail from the carried
        // maximum, neither on an empty look nor on one where the arms are equal, and the
        // reason says the tests restarted.
        let mut older = saved.clone();
        older["version"] = 7.into();
        let mut unversioned = saved;
        unversioned.as_object_mut().unwrap().remove("version");
        for (saved, by) in [
            (older, "judge version 7"),
            (unversioned, "an unversioned judge"),
        ] {
            for look in [traffic(0.0, 0.0), traffic(1000.0, 10.0)] {
                let mut s: JudgeState = serde_json::from_value(saved.clone()).unwrap();
                let r = s.observe_window(&cfg, &look, &look);
                assert_ne!(r.verdict, Verdict::Fail, "{}", r.reason);
                assert!(
                    r.reason.contains("sequential tests restarted") && r.reason.contains(by),
                    "{}",
                    r.reason
                );
                assert!(r.error.max_e_value < 10.0, "{:?}", r.error);
                assert!(
                    !r.error.shown,
                    "the old pass evidence is not carried over either"
                );
                // The counters' baseline and the look count are kept, and the next look is an
                // ordinary one of this version.
                assert_eq!(r.looks, 4);
                let next = s.observe_window(&cfg, &look, &look);
                assert!(!next.reason.contains("restarted"), "{}", next.reason);
            }
        }
    }

    #[test]
    fn a_restart_across_versions_keeps_the_counters_baseline() {
        // Cumulative readings: the state saved by an older version knows what it saw, so the
        // first look after the upgrade takes only the increment, not the whole run again.
        let cfg = JudgeConfig::default();
        let mut s = JudgeState::default();
        s.observe_cumulative(&cfg, &traffic(1000.0, 10.0), &traffic(9000.0, 90.0));
        let mut saved = serde_json::to_value(&s).unwrap();
        saved.as_object_mut().unwrap().remove("version");
        let mut s: JudgeState = serde_json::from_value(saved).unwrap();
        let r = s.observe_cumulative(&cfg, &traffic(1100.0, 11.0), &traffic(9900.0, 99.0));
        assert_eq!(r.error.canary_requests, 100);
        assert_eq!(r.error.primary_requests, 900);
        // A Fail already reached stands: the engine has acted on it.
        let mut failed = JudgeState::default();
        for _ in 0..6 {
            failed.observe_window(&cfg, &traffic(1000.0, 500.0), &traffic(1000.0, 10.0));
        }
        let mut saved = serde_json::to_value(&failed).unwrap();
        saved["version"] = 0.into();
        let mut failed: JudgeState = serde_json::from_value(saved).unwrap();
        let r = failed.observe_window(&cfg, &traffic(0.0, 0.0), &traffic(0.0, 0.0));
        assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
    }

    #[test]
    fn the_judge_version_moves_with_its_parameters() {
        // A fingerprint of every constant a saved state depends on. If this fails, a
        // parameter changed: bump JUDGE_VERSION (so saved states restart instead of being
        // continued under other parameters) and pin the new fingerprint with it. Changes to
        // how a look updates the tests need a bump too; no fingerprint sees those.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |x: f64| {
            for b in x.to_bits().to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (r, w) in MIXTURE.iter().chain(&PASS_MIXTURE).chain(&OVERWHELMING) {
            eat(*r);
            eat(*w);
        }
        for x in LATENCY_QUANTILES.iter().chain(&ABSOLUTE_ALTERNATIVES) {
            eat(*x);
        }
        for x in [
            ERROR_ALPHA_SHARE,
            PHI_PRIOR,
            PHI_PRIOR_LOOKS,
            LOOK_CAP,
            RESIDUAL_MIN_VARIANCE,
            FULL_CAP_AFTER,
            FAIL_LOOK_CAP,
            INFORMED_VARIANCE,
            OVERWHELMING_BURST,
            OVERWHELMING_CLUMP,
            OVERWHELMING_WEIGHT,
            KAPPA_PRIOR_DEN,
        ] {
            eat(x);
        }
        let pinned: [(u32, u64); 1] = [(1, 0xd8c9_bdfd_c58d_bd39)];
        assert_eq!(
            pinned.last().copied(),
            Some((JUDGE_VERSION, h)),
            "the judge's parameters changed: bump JUDGE_VERSION and pin {h:#x} for it"
        );
    }

    #[test]
    fn a_restart_continues_the_evidence() {
        let cfg = JudgeConfig::default();
        let mut straight = JudgeState::default();
        let mut restarted = JudgeState::default();
        for i in 0..8 {
            let c = with_latency(500.0, 5.0, 1.0);
            let p = with_latency(1500.0, 15.0, 1.0);
            let a = straight.observe_window(&cfg, &c, &p);
            let json = serde_json::to_value(&restarted).unwrap();
            restarted = serde_json::from_value(json).unwrap();
            let b = restarted.observe_window(&cfg, &c, &p);
            assert_eq!(a, b, "look {i}");
        }
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
        assert_eq!(r.error.primary_requests, 250);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        // The state round-trips through JSON (the runtime persists it).
        let json = serde_json::to_string(&s).unwrap();
        let mut back: JudgeState = serde_json::from_str(&json).unwrap();
        let next = (traffic(400.0, 4.0), traffic(400.0, 3.0));
        assert_eq!(
            back.observe_cumulative(&cfg, &next.0, &next.1)
                .error
                .canary_requests,
            s.observe_cumulative(&cfg, &next.0, &next.1)
                .error
                .canary_requests
        );
    }

    #[test]
    fn bad_config_names_the_field() {
        let d = JudgeConfig::default;
        for (cfg, field) in [
            (JudgeConfig { alpha: 0.0, ..d() }, "judge.alpha"),
            (JudgeConfig { alpha: 0.7, ..d() }, "judge.alpha"),
            (
                JudgeConfig {
                    alpha: f64::NAN,
                    ..d()
                },
                "judge.alpha",
            ),
            (
                JudgeConfig {
                    min_requests: 0,
                    ..d()
                },
                "judge.minRequests",
            ),
            (
                JudgeConfig {
                    latency_tolerance: f64::INFINITY,
                    ..d()
                },
                "judge.latencyTolerance",
            ),
            (
                JudgeConfig {
                    error_rate_tolerance: -1.0,
                    ..d()
                },
                "judge.errorRateTolerance",
            ),
            (
                JudgeConfig {
                    latency_tolerance: -5.0,
                    ..d()
                },
                "judge.latencyTolerance",
            ),
            (
                JudgeConfig {
                    error_rate_margin: 0.0,
                    ..d()
                },
                "judge.errorRateMargin",
            ),
            (
                JudgeConfig {
                    error_rate_margin_absolute: f64::NAN,
                    ..d()
                },
                "judge.errorRateMarginAbsolute",
            ),
            (
                JudgeConfig {
                    latency_margin: 5.0,
                    ..d()
                },
                "judge.latencyMargin",
            ),
            (
                JudgeConfig {
                    step_alpha: 0.005,
                    ..d()
                },
                "judge.stepAlpha",
            ),
            (
                JudgeConfig {
                    step_alpha: 0.6,
                    ..d()
                },
                "judge.stepAlpha",
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
                .contains("rollback, promote, wait or pause")
        );
        assert_eq!(
            JudgeConfig::parse_on_inconclusive("x", "promote").unwrap(),
            OnInconclusive::Promote
        );
        assert_eq!(
            JudgeConfig::default().on_inconclusive,
            OnInconclusive::Rollback
        );
    }
}

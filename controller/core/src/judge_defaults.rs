//! The statistical judge's defaults (`spec.analysis.judge`), defined once. serin-api fills every
//! unset field of a Canary's judge block with them, and serin-analysis builds
//! `JudgeConfig::default()` (judge-sim, `serin plan`, its own tests) from them: the two crates
//! cannot see each other, both see this one. The CRD's field descriptions and the validation
//! messages spell the same numbers in prose.

use std::time::Duration;

use crate::plan::InconclusivePolicy;

/// False-rollback budget for a whole run (`alpha`), also the chance of passing a canary that is
/// worse than the margins.
pub const ALPHA: f64 = 0.01;
/// Chance of raising the weight of a canary worse than the margins at a step that is not the
/// last (`stepAlpha`); promotion still needs [`ALPHA`].
pub const STEP_ALPHA: f64 = 0.2;
/// Requests per arm before the judge may pass (`minRequests`); a failure needs no minimum.
pub const MIN_REQUESTS: u64 = 100;
/// Extra error rate that never fails the canary, percentage points (`errorRateTolerance`).
pub const ERROR_RATE_TOLERANCE: f64 = 0.0;
/// Extra latency that never fails the canary, percent (`latencyTolerance`).
pub const LATENCY_TOLERANCE: f64 = 10.0;
/// Relative error-rate margin a pass must prove, percent of the primary's rate
/// (`errorRateMargin`): 1.9x, so a doubled rate is beyond it.
pub const ERROR_RATE_MARGIN: f64 = 90.0;
/// Absolute error-rate margin a pass must prove, percentage points (`errorRateMarginAbsolute`);
/// it matters when the primary hardly fails (then 90 % of nearly nothing is nothing).
pub const ERROR_RATE_MARGIN_ABSOLUTE: f64 = 0.5;
/// Latency margin a pass must prove for p50 and p99, percent (`latencyMargin`).
pub const LATENCY_MARGIN: f64 = 25.0;
/// How a run ends when the judge stays inconclusive past a budget (`onInconclusive`): never
/// promote without evidence. (Without a judge the plan holds instead, Flagger's behaviour:
/// [`InconclusivePolicy`]'s own default is `wait`.)
pub const ON_INCONCLUSIVE: InconclusivePolicy = InconclusivePolicy::Rollback;
/// Longest inconclusive stretch at one weight (`stepBudget`).
pub const STEP_BUDGET: Duration = Duration::from_secs(15 * 60);
/// Longest run without the judge's last word (`runBudget`).
pub const RUN_BUDGET: Duration = Duration::from_secs(60 * 60);

//! Statistical building blocks: the conditional (Fisher noncentral hypergeometric) likelihood
//! ratio the judge's e-processes multiply look by look, and the fixed-sample tests used as
//! references (two-proportion z-test, Mann-Whitney U on bucketed data).

use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::factorial::ln_binomial;

use crate::histogram::Histogram;

fn log_sum_exp(terms: impl Iterator<Item = f64>) -> f64 {
    let terms: Vec<f64> = terms.collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

/// Log-likelihood ratio, odds ratio `psi1` against `psi0`, of seeing `x_c` of the look's
/// `x_c + x_p` events in the canary arm, given `n_c` and `n_p` requests per arm.
///
/// Conditioning on the look's total number of events removes the unknown base rate (a nuisance
/// that also moves with time of day); what is left is Fisher's noncentral hypergeometric law of
/// the canary's share, whose only parameter is the odds ratio between arms. Under the null
/// (`odds ratio <= psi0`) the product of these ratios over looks is a test supermartingale, so
/// Ville's inequality bounds the chance it ever exceeds `1/alpha` by `alpha`.
pub fn conditional_log_lr(x_c: u64, n_c: u64, x_p: u64, n_p: u64, psi1: f64, psi0: f64) -> f64 {
    conditional_log_lrs(x_c, n_c, x_p, n_p, &[psi1], psi0)[0]
}

/// [`conditional_log_lr`] for several alternatives at once (the support is computed once).
pub fn conditional_log_lrs(
    x_c: u64,
    n_c: u64,
    x_p: u64,
    n_p: u64,
    psi1: &[f64],
    psi0: f64,
) -> Vec<f64> {
    let events = x_c + x_p;
    if events == 0 || n_c == 0 || n_p == 0 {
        return vec![0.0; psi1.len()];
    }
    let lo = events.saturating_sub(n_p);
    let hi = events.min(n_c);
    if lo >= hi {
        // Only one split is possible: the look carries no information about the odds ratio.
        return vec![0.0; psi1.len()];
    }
    let base: Vec<(u64, f64)> = (lo..=hi)
        .map(|k| (k, ln_binomial(n_c, k) + ln_binomial(n_p, events - k)))
        .collect();
    let log_z = |ln_psi: f64| log_sum_exp(base.iter().map(|&(k, b)| b + k as f64 * ln_psi));
    let l0 = psi0.ln();
    let null = x_c as f64 * l0 - log_z(l0);
    psi1.iter()
        .map(|p| {
            let l1 = p.ln();
            (x_c as f64 * l1 - log_z(l1)) - null
        })
        .collect()
}

/// The canary's expected share of a look's events when its per-request event rate is `ratio`
/// times the primary's: `n_c * ratio / (n_c * ratio + n_p)` (the Poisson limit of the
/// conditional law; see [`share_log_lr`]).
pub fn canary_share(n_c: f64, n_p: f64, ratio: f64) -> f64 {
    let a = n_c * ratio;
    let d = a + n_p;
    if d > 0.0 { a / d } else { 0.0 }
}

/// Log-likelihood ratio of the canary taking `x` of a look's `total` events when its share is
/// `pi1` against `pi0` (conditional binomial, `0 < pi < 1`).
///
/// Conditioning on the look's total events removes the unknown base rate, which moves with time
/// of day and load and hits both arms alike. For rare events the canary's count given the total
/// is exactly binomial with share [`canary_share`] (two Poisson counts); for common events
/// (latency exceedances near the median) the exact law under equal arms is hypergeometric,
/// which Hoeffding (1963) showed is smaller in convex order than this binomial: the ratio,
/// convex in `x`, then has expectation at most 1 under the null, so the test stays valid and
/// is merely a little conservative. Counts may be fractional (histogram interpolation).
pub fn share_log_lr(x: f64, total: f64, pi1: f64, pi0: f64) -> f64 {
    if total <= 0.0 || !(pi0 > 0.0 && pi0 < 1.0) || !(pi1 > 0.0 && pi1 < 1.0) {
        return 0.0;
    }
    let x = x.clamp(0.0, total);
    x * (pi1 / pi0).ln() + (total - x) * ((1.0 - pi1) / (1.0 - pi0)).ln()
}

/// Log-likelihood ratio of `x` events in `n` requests for event rate `p1` against `p0`
/// (binomial). Used for the canary's own error rate against an absolute margin.
pub fn binomial_log_lr(x: f64, n: f64, p1: f64, p0: f64) -> f64 {
    if n <= 0.0 || !(p0 > 0.0 && p0 < 1.0) || !(p1 > 0.0 && p1 < 1.0) {
        return 0.0;
    }
    let x = x.clamp(0.0, n);
    x * (p1 / p0).ln() + (n - x) * ((1.0 - p1) / (1.0 - p0)).ln()
}

/// One-sided p-value of the two-proportion z-test that the canary's failure rate exceeds the
/// primary's (pooled variance). 1 when there is nothing to compare.
pub fn two_proportion_z_p(x_c: u64, n_c: u64, x_p: u64, n_p: u64) -> f64 {
    if n_c == 0 || n_p == 0 {
        return 1.0;
    }
    let (nc, np) = (n_c as f64, n_p as f64);
    let pooled = (x_c + x_p) as f64 / (nc + np);
    let var = pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / np);
    if var <= 0.0 {
        return 1.0;
    }
    let z = (x_c as f64 / nc - x_p as f64 / np) / var.sqrt();
    standard_normal_sf(z)
}

/// Upper tail of the standard normal.
pub fn standard_normal_sf(z: f64) -> f64 {
    // Normal::new(0, 1) cannot fail: the parameters are constants.
    match Normal::new(0.0, 1.0) {
        Ok(n) => n.sf(z),
        Err(_) => f64::NAN,
    }
}

/// Mann-Whitney U on two bucketed samples, asymptotic normal approximation with tie correction
/// (every bucket is one tie group) and continuity correction, one-sided alternative "canary is
/// stochastically larger". Returns `(U_canary, p)`.
///
/// Computed from bucket counts in O(buckets), so it works for histograms of any size; see the
/// tests for agreement with statrs' asymptotic `mannwhitneyu` on raw samples.
pub fn mann_whitney_greater(canary: &Histogram, primary: &Histogram) -> Option<(f64, f64)> {
    if canary.bounds() != primary.bounds() {
        return None;
    }
    let (n1, n2) = (canary.total(), primary.total());
    if n1 <= 0.0 || n2 <= 0.0 {
        return None;
    }
    let n = n1 + n2;
    let mut below = 0.0;
    let mut rank_sum = 0.0;
    let mut tie_term = 0.0;
    for (c, p) in canary.counts().iter().zip(primary.counts()) {
        let t = c + p;
        if t > 0.0 {
            let mid_rank = below + (t + 1.0) / 2.0;
            rank_sum += c * mid_rank;
            tie_term += t * t * t - t;
            below += t;
        }
    }
    let u1 = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 {
        return Some((u1, 1.0));
    }
    let z = (u1 - mean - 0.5) / var.sqrt();
    Some((u1, standard_normal_sf(z)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::stats_tests::Alternative;
    use statrs::stats_tests::mannwhitneyu::{MannWhitneyUMethod, mannwhitneyu};

    #[test]
    fn conditional_lr_matches_hand_computed_values() {
        // Two requests per arm, two failures: splits k = 0, 1, 2 have weights 1, 4, 1 (C(2,k)C(2,2-k)).
        // With psi = 2: Z = 1 + 4*2 + 1*4 = 13; P(k=2) = 4/13. Under psi = 1: P(k=2) = 1/6.
        let lr = conditional_log_lr(2, 2, 0, 2, 2.0, 1.0).exp();
        assert!((lr - (4.0 / 13.0) / (1.0 / 6.0)).abs() < 1e-12, "{lr}");
        // k = 1: (8/13) / (4/6).
        let lr = conditional_log_lr(1, 2, 1, 2, 2.0, 1.0).exp();
        assert!((lr - (8.0 / 13.0) / (4.0 / 6.0)).abs() < 1e-12, "{lr}");
        // No events or a forced split carry no information.
        assert_eq!(conditional_log_lr(0, 10, 0, 10, 2.0, 1.0), 0.0);
        assert_eq!(conditional_log_lr(3, 10, 0, 0, 2.0, 1.0), 0.0);
    }

    #[test]
    fn conditional_lr_is_a_martingale_under_the_null() {
        // E_null[LR] = 1 exactly: sum over all splits of P0(k) * LR(k).
        let (n_c, n_p, events) = (50u64, 70u64, 9u64);
        let p0: Vec<f64> = (0..=events)
            .map(|k| (ln_binomial(n_c, k) + ln_binomial(n_p, events - k)).exp())
            .collect();
        let z: f64 = p0.iter().sum();
        let expectation: f64 = (0..=events)
            .map(|k| {
                p0[k as usize] / z * conditional_log_lr(k, n_c, events - k, n_p, 3.0, 1.0).exp()
            })
            .sum();
        assert!((expectation - 1.0).abs() < 1e-9, "{expectation}");
    }

    #[test]
    fn share_lr_matches_hand_computed_values() {
        // 3 of 10 events on an arm with share 0.2 against 0.1:
        // 3 ln 2 + 7 ln(0.8 / 0.9) = 2.0794 - 0.8245 = 1.2549.
        let l = share_log_lr(3.0, 10.0, 0.2, 0.1);
        assert!((l - 1.254_9).abs() < 1e-4, "{l}");
        assert_eq!(share_log_lr(0.0, 0.0, 0.2, 0.1), 0.0);
        // Equal shares carry no evidence; a ratio of rates maps to a share.
        assert_eq!(share_log_lr(4.0, 9.0, 0.3, 0.3), 0.0);
        assert!((canary_share(100.0, 900.0, 1.0) - 0.1).abs() < 1e-12);
        assert!((canary_share(100.0, 900.0, 2.0) - 200.0 / 1100.0).abs() < 1e-12);
        // 0 of 1000 at 0.1% against 0.25%: 1000 ln(0.999 / 0.9975) = 1.5027.
        let b = binomial_log_lr(0.0, 1000.0, 0.001, 0.0025);
        assert!((b - 1.502_7).abs() < 1e-4, "{b}");
    }

    #[test]
    fn binomial_share_ratio_is_conservative_under_the_hypergeometric_null() {
        // Equal arms, common events (a latency median): the canary's exact count given the
        // look's events is hypergeometric; the binomial ratio's expectation must stay <= 1.
        for (n_c, n_p, events) in [(50u64, 450u64, 250u64), (20, 30, 25), (200, 200, 10)] {
            let pi0 = canary_share(n_c as f64, n_p as f64, 1.0);
            let weights: Vec<f64> = (0..=events)
                .map(|k| {
                    if k > n_c || events - k > n_p {
                        0.0
                    } else {
                        (ln_binomial(n_c, k) + ln_binomial(n_p, events - k)).exp()
                    }
                })
                .collect();
            let z: f64 = weights.iter().sum();
            for ratio in [1.5, 2.0, 5.0, 0.5] {
                let pi1 = canary_share(n_c as f64, n_p as f64, ratio);
                let e: f64 = (0..=events)
                    .map(|k| {
                        weights[k as usize] / z
                            * share_log_lr(k as f64, events as f64, pi1, pi0).exp()
                    })
                    .sum();
                assert!(
                    e <= 1.0 + 1e-9,
                    "E = {e} for {n_c}/{n_p}/{events} ratio {ratio}"
                );
            }
        }
    }

    #[test]
    fn z_test_matches_known_value() {
        // 60/1000 vs 40/1000: pooled 0.05, se = sqrt(0.05*0.95*0.002) = 0.0097468, z = 2.0520,
        // one-sided p = 0.020085.
        let p = two_proportion_z_p(60, 1000, 40, 1000);
        assert!((p - 0.020085).abs() < 1e-5, "{p}");
        assert_eq!(two_proportion_z_p(0, 0, 1, 10), 1.0);
    }

    #[test]
    fn mann_whitney_from_buckets_matches_statrs_asymptotic() {
        // Values sit exactly on bucket bounds so the bucketed and raw samples have the same ties.
        let bounds = [1.0, 2.0, 3.0, 4.0, 5.0];
        let canary_raw = [2.0, 3.0, 3.0, 4.0, 5.0, 5.0, 4.0, 3.0, 5.0];
        let primary_raw = [1.0, 2.0, 2.0, 3.0, 1.0, 4.0, 2.0, 3.0, 1.0, 2.0, 3.0];
        let mut c = Histogram::new(&bounds);
        let mut p = Histogram::new(&bounds);
        canary_raw.iter().for_each(|v| c.record(*v));
        primary_raw.iter().for_each(|v| p.record(*v));
        let (u, ours) = mann_whitney_greater(&c, &p).unwrap();
        // STYLE.md #12: force the asymptotic path; statrs' exact path is wrong when the first
        // sample is the smaller one.
        let (u_ref, p_ref) = mannwhitneyu(
            &canary_raw,
            &primary_raw,
            MannWhitneyUMethod::AsymptoticInclContinuityCorrection,
            Alternative::Greater,
        )
        .unwrap();
        assert!((u - u_ref).abs() < 1e-9, "U {u} vs {u_ref}");
        assert!((ours - p_ref).abs() < 1e-9, "p {ours} vs {p_ref}");
        // Known value, by hand: U counts canary-over-primary pairs (ties half) = 84.5; tie groups
        // of sizes 3, 5, 6, 3, 3 give var = 99 * (21 - 402/380) / 12 = 164.52, so
        // z = (84.5 - 49.5 - 0.5) / 12.827 = 2.6897 and p = 1 - Phi(z) = 0.0035756.
        assert_eq!(u, 84.5);
        assert!((ours - 0.003_575_6).abs() < 1e-6, "{ours}");
    }
}

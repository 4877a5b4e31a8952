//! Bucketed latency histograms (Prometheus `le` buckets) and the quantile arithmetic Prometheus
//! itself uses, so numbers computed here match `histogram_quantile` on the same buckets.

use serde::{Deserialize, Serialize};

/// Linkerd's `response_latency_ms` bucket upper bounds (milliseconds); `serin-proxy` uses the
/// same so dashboards and queries written for Linkerd keep working.
pub const LINKERD_LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// A histogram with finite upper bounds plus an implicit `+Inf` bucket.
///
/// Counts are per bucket (not cumulative) and fractional, because Prometheus `increase()`
/// extrapolates; scrape deltas give whole numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<f64>,
}

impl Histogram {
    /// An empty histogram with the given finite upper bounds (sorted, deduplicated).
    pub fn new(bounds: &[f64]) -> Self {
        let mut b: Vec<f64> = bounds.iter().copied().filter(|v| v.is_finite()).collect();
        b.sort_by(f64::total_cmp);
        b.dedup();
        let counts = vec![0.0; b.len() + 1];
        Histogram { bounds: b, counts }
    }

    /// An empty histogram with Linkerd's buckets.
    pub fn linkerd() -> Self {
        Histogram::new(&LINKERD_LATENCY_BUCKETS_MS)
    }

    /// Builds a histogram from cumulative `(le, count)` pairs as Prometheus exposes them
    /// (`le = +Inf` included). Pairs may come in any order. Returns `None` when there is no
    /// `+Inf` bucket or counts are not finite.
    pub fn from_cumulative(pairs: &[(f64, f64)]) -> Option<Self> {
        let mut sorted: Vec<(f64, f64)> = pairs.to_vec();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        if sorted.last().map(|p| p.0) != Some(f64::INFINITY) {
            return None;
        }
        if sorted.iter().any(|p| !p.1.is_finite() || p.0.is_nan()) {
            return None;
        }
        let bounds: Vec<f64> = sorted[..sorted.len() - 1].iter().map(|p| p.0).collect();
        let mut counts = Vec::with_capacity(sorted.len());
        let mut previous = 0.0;
        for &(_, cumulative) in &sorted {
            // Cumulative counts must not decrease; extrapolated increase() may wobble a little.
            counts.push((cumulative - previous).max(0.0));
            previous = previous.max(cumulative);
        }
        Some(Histogram { bounds, counts })
    }

    /// The finite upper bounds.
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// Per-bucket counts; the last entry is the `+Inf` bucket.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// Records one observation.
    pub fn record(&mut self, value: f64) {
        self.record_n(value, 1.0);
    }

    /// Records `n` observations of `value`.
    pub fn record_n(&mut self, value: f64, n: f64) {
        let index = self.bounds.partition_point(|&b| b < value);
        self.counts[index] += n;
    }

    /// Total number of observations.
    pub fn total(&self) -> f64 {
        self.counts.iter().sum()
    }

    /// Adds another histogram with the same bounds. Returns `false` (and changes nothing) when
    /// the bounds differ.
    pub fn add(&mut self, other: &Histogram) -> bool {
        if self.bounds != other.bounds {
            return false;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        true
    }

    /// `self - earlier`, bucket by bucket, clamped at zero. `None` when bounds differ.
    pub fn delta_since(&self, earlier: &Histogram) -> Option<Histogram> {
        if self.bounds != earlier.bounds {
            return None;
        }
        let counts = self
            .counts
            .iter()
            .zip(&earlier.counts)
            .map(|(now, then)| (now - then).max(0.0))
            .collect();
        Some(Histogram {
            bounds: self.bounds.clone(),
            counts,
        })
    }

    /// The `q`-quantile as Prometheus `histogram_quantile` computes it: linear interpolation
    /// inside the bucket holding rank `q * total`, the first bucket starting at 0, and the upper
    /// bound of the last finite bucket when the rank falls in `+Inf`. `None` without data.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        if self.bounds.is_empty() {
            return None;
        }
        let rank = q * total;
        let mut cumulative = 0.0;
        for (i, &count) in self.counts.iter().enumerate() {
            let next = cumulative + count;
            if next >= rank && count > 0.0 {
                if i == self.bounds.len() {
                    return self.bounds.last().copied();
                }
                let upper = self.bounds[i];
                let lower = if i == 0 {
                    0.0_f64.min(upper)
                } else {
                    self.bounds[i - 1]
                };
                return Some(lower + (upper - lower) * ((rank - cumulative) / count));
            }
            cumulative = next;
        }
        self.bounds.last().copied()
    }

    /// The smallest finite bucket bound at or below which at least a `q` share of observations
    /// fall; the last finite bound when even that holds less. `None` without data.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 || self.bounds.is_empty() {
            return None;
        }
        let mut cumulative = 0.0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i];
            if cumulative >= q * total {
                return Some(*bound);
            }
        }
        self.bounds.last().copied()
    }

    /// Number of observations above `x`, interpolating linearly inside the bucket that holds
    /// `x` (the same assumption `histogram_quantile` makes). Exact when `x` is a bucket bound.
    pub fn count_above(&self, x: f64) -> f64 {
        let index = self.bounds.partition_point(|&b| b < x);
        let above_bucket: f64 = self.counts[index + 1..].iter().sum::<f64>();
        if index == self.bounds.len() {
            // `x` lies beyond the last finite bound: nothing is known inside +Inf.
            return self.counts[index] + above_bucket;
        }
        let upper = self.bounds[index];
        let lower = if index == 0 {
            0.0
        } else {
            self.bounds[index - 1]
        };
        let share = if upper > lower {
            ((upper - x) / (upper - lower)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        above_bucket + self.counts[index] * share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram {
        // 100 observations: 50 in (0,10], 40 in (10,20], 9 in (20,50], 1 in (50,+Inf).
        Histogram::from_cumulative(&[
            (10.0, 50.0),
            (20.0, 90.0),
            (50.0, 99.0),
            (f64::INFINITY, 100.0),
        ])
        .unwrap()
    }

    #[test]
    fn quantiles_match_prometheus_histogram_quantile() {
        let h = sample();
        // rank 50 is the top of the first bucket.
        assert_eq!(h.quantile(0.5), Some(10.0));
        // rank 70 is half way through (10,20].
        assert_eq!(h.quantile(0.7), Some(15.0));
        // rank 99 is the top of (20,50].
        assert_eq!(h.quantile(0.99), Some(50.0));
        // rank 99.5 falls into +Inf: Prometheus answers the last finite bound.
        assert_eq!(h.quantile(0.995), Some(50.0));
        assert_eq!(Histogram::linkerd().quantile(0.99), None);
    }

    #[test]
    fn counts_above_with_interpolation() {
        let h = sample();
        assert_eq!(h.count_above(20.0), 10.0);
        assert_eq!(h.count_above(15.0), 30.0);
        assert_eq!(h.count_above(100.0), 1.0);
        assert_eq!(h.quantile_bound(0.9), Some(20.0));
        assert_eq!(h.quantile_bound(0.99), Some(50.0));
    }

    #[test]
    fn records_deltas_and_rejects_mismatched_bounds() {
        let mut a = Histogram::linkerd();
        a.record(0.5);
        a.record(7.0);
        a.record(7.0);
        a.record(60_000.0);
        assert_eq!(a.total(), 4.0);
        assert_eq!(a.counts()[0], 1.0);
        assert_eq!(a.counts()[5], 2.0);
        assert_eq!(*a.counts().last().unwrap(), 1.0);
        let mut b = a.clone();
        b.record(7.0);
        let d = b.delta_since(&a).unwrap();
        assert_eq!(d.total(), 1.0);
        assert_eq!(d.counts()[5], 1.0);
        assert!(a.delta_since(&Histogram::new(&[1.0])).is_none());
        assert!(!a.add(&Histogram::new(&[1.0])));
        assert!(Histogram::from_cumulative(&[(1.0, 2.0)]).is_none());
    }
}

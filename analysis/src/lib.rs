//! Metric providers, Flagger-compatible checks and the statistical judge.

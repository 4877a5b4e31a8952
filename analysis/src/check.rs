//! Threshold checks (Flagger's `analysis.metrics`), the no-data policy, and the result every
//! check returns so the rollout history can show why.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AnalysisError;
use crate::duration::parse_duration;

/// The outcome of one check or of the judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Healthy enough to go on.
    Pass,
    /// Unhealthy: counts as a failed check.
    Fail,
    /// Not enough evidence either way yet; the engine decides (wait or pause).
    Inconclusive,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// Flagger's `thresholdRange`: the accepted interval, either end optional (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ThresholdRange {
    /// Lowest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl ThresholdRange {
    /// Whether `value` lies inside the range (NaN never does).
    pub fn contains(&self, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        self.min.is_none_or(|m| value >= m) && self.max.is_none_or(|m| value <= m)
    }
}

impl fmt::Display for ThresholdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => write!(f, "[{lo}, {hi}]"),
            (Some(lo), None) => write!(f, ">= {lo}"),
            (None, Some(hi)) => write!(f, "<= {hi}"),
            (None, None) => f.write_str("any"),
        }
    }
}

/// The two checks every Flagger user has without writing a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BuiltinMetric {
    /// `request-success-rate`: percentage (0-100) of responses not classified as failures.
    #[serde(rename = "request-success-rate")]
    RequestSuccessRate,
    /// `request-duration`: 99th percentile response latency in milliseconds.
    #[serde(rename = "request-duration")]
    RequestDuration,
}

impl BuiltinMetric {
    /// Recognises Flagger's built-in metric names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "request-success-rate" => Some(BuiltinMetric::RequestSuccessRate),
            "request-duration" => Some(BuiltinMetric::RequestDuration),
            _ => None,
        }
    }

    /// The Flagger name.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinMetric::RequestSuccessRate => "request-success-rate",
            BuiltinMetric::RequestDuration => "request-duration",
        }
    }
}

/// Where a check's number comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSource {
    /// One of the built-in checks.
    Builtin(BuiltinMetric),
    /// A `MetricTemplate` query (not yet rendered).
    Template {
        /// The template text with `{{ ... }}` variables.
        query: String,
        /// The metric's `templateVariables`.
        variables: std::collections::BTreeMap<String, String>,
    },
}

/// One entry of `spec.analysis.metrics`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCheck {
    /// The metric's `name`.
    pub name: String,
    /// Built-in or template query.
    pub source: MetricSource,
    /// The query window (`interval`, default `1m` as in Flagger).
    pub interval: Duration,
    /// The accepted range after mapping the deprecated scalar `threshold`.
    pub range: ThresholdRange,
}

/// The raw fields of one `spec.analysis.metrics[i]` entry, as the runtime reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricSpec {
    /// `name`.
    pub name: String,
    /// `interval`, e.g. `1m`; `None` means Flagger's default `1m`.
    pub interval: Option<String>,
    /// `thresholdRange`.
    pub threshold_range: Option<ThresholdRange>,
    /// Deprecated scalar `threshold`.
    pub threshold: Option<f64>,
    /// The referenced `MetricTemplate`'s `spec.query`, when `templateRef` is set.
    pub template_query: Option<String>,
    /// `templateVariables`.
    pub template_variables: std::collections::BTreeMap<String, String>,
}

/// Flagger's default metric window.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

impl MetricCheck {
    /// Validates one metric entry. `field` is its path (e.g. `spec.analysis.metrics[0]`) and
    /// prefixes every error.
    ///
    /// The deprecated scalar `threshold` keeps Flagger's meaning when no `thresholdRange` is
    /// given: a minimum for `request-success-rate`, a maximum (ms) for `request-duration` and a
    /// maximum for template queries. `thresholdRange` wins when both are set.
    pub fn from_spec(field: &str, spec: &MetricSpec) -> Result<Self, AnalysisError> {
        if spec.name.trim().is_empty() {
            return Err(AnalysisError::invalid(
                format!("{field}.name"),
                "is empty",
                "request-success-rate, request-duration, or any name with a templateRef",
            ));
        }
        let source = match (&spec.template_query, BuiltinMetric::from_name(&spec.name)) {
            (Some(query), _) => {
                if query.trim().is_empty() {
                    return Err(AnalysisError::invalid(
                        format!("{field}.templateRef"),
                        "the referenced MetricTemplate has an empty query",
                        "a MetricTemplate with a non-empty spec.query",
                    ));
                }
                MetricSource::Template {
                    query: query.clone(),
                    variables: spec.template_variables.clone(),
                }
            }
            (None, Some(builtin)) => MetricSource::Builtin(builtin),
            (None, None) => {
                return Err(AnalysisError::invalid(
                    format!("{field}.name"),
                    format!(
                        "`{}` is not a built-in metric and has no templateRef",
                        spec.name
                    ),
                    "request-success-rate, request-duration, or a templateRef to a MetricTemplate",
                ));
            }
        };
        let interval = match &spec.interval {
            Some(text) => parse_duration(&format!("{field}.interval"), text)?,
            None => DEFAULT_INTERVAL,
        };
        let range = match (spec.threshold_range, spec.threshold) {
            (Some(range), _) => {
                for (end, value) in [("min", range.min), ("max", range.max)] {
                    if let Some(v) = value
                        && !v.is_finite()
                    {
                        return Err(AnalysisError::invalid(
                            format!("{field}.thresholdRange.{end}"),
                            format!("{v} is not a finite number"),
                            "a finite number",
                        ));
                    }
                }
                if range.min.is_none() && range.max.is_none() {
                    return Err(AnalysisError::invalid(
                        format!("{field}.thresholdRange"),
                        "has neither min nor max",
                        "thresholdRange with min, max or both",
                    ));
                }
                if let (Some(lo), Some(hi)) = (range.min, range.max)
                    && lo > hi
                {
                    return Err(AnalysisError::invalid(
                        format!("{field}.thresholdRange"),
                        format!("min {lo} is greater than max {hi}"),
                        "min <= max",
                    ));
                }
                range
            }
            (None, Some(threshold)) => {
                if !threshold.is_finite() {
                    return Err(AnalysisError::invalid(
                        format!("{field}.threshold"),
                        format!("{threshold} is not a finite number"),
                        "a finite number (deprecated: prefer thresholdRange)",
                    ));
                }
                match source {
                    MetricSource::Builtin(BuiltinMetric::RequestSuccessRate) => ThresholdRange {
                        min: Some(threshold),
                        max: None,
                    },
                    _ => ThresholdRange {
                        min: None,
                        max: Some(threshold),
                    },
                }
            }
            (None, None) => {
                return Err(AnalysisError::invalid(
                    format!("{field}.thresholdRange"),
                    "is missing (and so is the deprecated threshold)",
                    "thresholdRange with min and/or max",
                ));
            }
        };
        Ok(MetricCheck {
            name: spec.name.clone(),
            source,
            interval,
            range,
        })
    }
}

/// What too little data means for threshold checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoDataPolicy {
    /// Inconclusive: neither a failed check nor a step forward (the default; low-traffic
    /// services wait for traffic instead of rolling back on "no values found").
    #[default]
    Wait,
    /// Count as a failed check (Flagger's behaviour).
    Fail,
    /// Count as passed, only when the window is known to hold fewer than `minRequests`
    /// requests; an empty or NaN answer without a known request count is never a pass.
    Pass,
}

impl NoDataPolicy {
    /// Parses `wait`, `fail` or `pass`; `field` names the setting in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, AnalysisError> {
        match text {
            "wait" => Ok(NoDataPolicy::Wait),
            "fail" => Ok(NoDataPolicy::Fail),
            "pass" => Ok(NoDataPolicy::Pass),
            other => Err(AnalysisError::invalid(
                field,
                format!("unknown policy `{other}`"),
                "wait, fail or pass",
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            NoDataPolicy::Wait => "wait",
            NoDataPolicy::Fail => "fail",
            NoDataPolicy::Pass => "pass",
        }
    }
}

/// `spec.analysis.noData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoDataConfig {
    /// Minimum number of requests in a check's window for its value to count (default 1).
    pub min_requests: u64,
    /// What fewer requests (or no value at all) means (default `wait`).
    pub policy: NoDataPolicy,
}

impl Default for NoDataConfig {
    fn default() -> Self {
        NoDataConfig {
            min_requests: 1,
            policy: NoDataPolicy::Wait,
        }
    }
}

/// A raw measurement from a provider, before it is judged against a range.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observed {
    /// The number, or `None` when the backend returned nothing.
    pub value: Option<f64>,
    /// Requests in the window, when the provider knows.
    pub sample_size: Option<u64>,
    /// The query that was run (rendered), for the history.
    pub query: Option<String>,
    /// The request-count query, when it matched no series at all (so `sample_size` is 0 by
    /// inference: nothing has reached the canary since its metrics began, or the metrics carry
    /// other labels than the mesh's queries expect). Said in the reason, so a wrong
    /// `spec.provider` does not read like a quiet service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_unmatched: Option<String>,
}

impl Observed {
    /// What a template query returned: `value` (`None` = no data), without a sample size.
    pub fn of_query(query: &str, value: Option<f64>) -> Self {
        Observed {
            value,
            sample_size: None,
            query: Some(query.to_string()),
            count_unmatched: None,
        }
    }
}

/// The result of one check at one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// The metric's name.
    pub name: String,
    /// Pass, fail or inconclusive.
    pub verdict: Verdict,
    /// The measured value (`None` when there was none; NaN is reported as `None`).
    pub value: Option<f64>,
    /// The accepted range.
    pub threshold: ThresholdRange,
    /// Requests in the window, when known.
    pub sample_size: Option<u64>,
    /// One short sentence saying why.
    pub reason: String,
    /// The rendered query, when there was one.
    pub query: Option<String>,
}

/// Judges one measurement against a check's range and the no-data policy. Pure.
pub fn evaluate(check: &MetricCheck, observed: Observed, no_data: &NoDataConfig) -> CheckResult {
    let value = observed.value.filter(|v| !v.is_nan());
    let result = |verdict, reason: String| CheckResult {
        name: check.name.clone(),
        verdict,
        value,
        threshold: check.range,
        sample_size: observed.sample_size,
        reason,
        query: observed.query.clone(),
    };
    let policy = no_data.policy;
    if let Some(n) = observed.sample_size
        && n < no_data.min_requests
    {
        let mut why = format!(
            "{n} requests in {} < noData.minRequests {}",
            crate::duration::format_duration(check.interval),
            no_data.min_requests
        );
        if let Some(count_query) = &observed.count_unmatched {
            why.push_str(&format!(
                " (the request count matched no series: no request has reached the canary yet, or its metrics carry other labels than spec.provider's mesh gives them; query: {count_query})"
            ));
        }
        return match policy {
            NoDataPolicy::Wait => result(Verdict::Inconclusive, format!("waiting: {why}")),
            NoDataPolicy::Fail => result(
                Verdict::Fail,
                format!("failed by noData.policy=fail: {why}"),
            ),
            NoDataPolicy::Pass => result(
                Verdict::Pass,
                format!("passed by noData.policy=pass: {why}"),
            ),
        };
    }
    let Some(v) = value else {
        let what = if observed.value.is_some() {
            "query returned NaN"
        } else {
            "query returned no values"
        };
        // Without a known low request count an empty answer may hide a broken query or a dead
        // service: never healthy, whatever the policy.
        return match policy {
            NoDataPolicy::Fail => result(
                Verdict::Fail,
                format!("failed by noData.policy=fail: {what}"),
            ),
            other => result(
                Verdict::Inconclusive,
                format!(
                    "{what}; no data is never a pass (noData.policy={})",
                    other.as_str()
                ),
            ),
        };
    };
    if v.is_infinite() {
        return result(Verdict::Fail, format!("value {v} is not finite"));
    }
    // Flagger turns request-duration into whole milliseconds before comparing
    // (time.Duration(int64(value))): 500.7 ms passes `max: 500`. Kept so thresholds keep their
    // meaning; the reported value is the measured one.
    let compared = match check.source {
        MetricSource::Builtin(BuiltinMetric::RequestDuration) => v.trunc(),
        _ => v,
    };
    if check.range.contains(compared) {
        result(Verdict::Pass, format!("{v:.4} within {}", check.range))
    } else {
        result(Verdict::Fail, format!("{v:.4} outside {}", check.range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> MetricSpec {
        MetricSpec {
            name: name.into(),
            interval: Some("1m".into()),
            threshold_range: Some(ThresholdRange {
                min: Some(99.0),
                max: None,
            }),
            ..MetricSpec::default()
        }
    }

    fn success_rate_check() -> MetricCheck {
        MetricCheck::from_spec("m", &spec("request-success-rate")).unwrap()
    }

    fn observed(value: Option<f64>, n: Option<u64>) -> Observed {
        Observed {
            value,
            sample_size: n,
            query: None,
            count_unmatched: None,
        }
    }

    #[test]
    fn passes_and_fails_on_the_range() {
        let c = success_rate_check();
        let nd = NoDataConfig::default();
        let r = evaluate(&c, observed(Some(99.5), Some(1000)), &nd);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.sample_size, Some(1000));
        assert_eq!(r.threshold.min, Some(99.0));
        let r = evaluate(&c, observed(Some(98.0), Some(1000)), &nd);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.reason.contains("outside >= 99"), "{}", r.reason);
        let r = evaluate(&c, observed(Some(99.0), Some(1000)), &nd);
        assert_eq!(r.verdict, Verdict::Pass, "bounds are inclusive");
    }

    #[test]
    fn too_few_requests_follows_each_policy() {
        let c = success_rate_check();
        for (policy, verdict) in [
            (NoDataPolicy::Wait, Verdict::Inconclusive),
            (NoDataPolicy::Fail, Verdict::Fail),
            (NoDataPolicy::Pass, Verdict::Pass),
        ] {
            let nd = NoDataConfig {
                min_requests: 10,
                policy,
            };
            let r = evaluate(&c, observed(Some(100.0), Some(3)), &nd);
            assert_eq!(r.verdict, verdict, "{policy:?}");
            assert!(r.reason.contains("3 requests"), "{}", r.reason);
            assert!(r.reason.contains("minRequests 10"), "{}", r.reason);
        }
    }

    #[test]
    fn zero_requests_with_nan_is_low_traffic_not_health() {
        let c = success_rate_check();
        let nd = NoDataConfig::default();
        let r = evaluate(&c, observed(Some(f64::NAN), Some(0)), &nd);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(r.value, None);
    }

    #[test]
    fn empty_or_nan_results_are_never_healthy() {
        let c = success_rate_check();
        for value in [None, Some(f64::NAN)] {
            for (policy, verdict) in [
                (NoDataPolicy::Wait, Verdict::Inconclusive),
                (NoDataPolicy::Fail, Verdict::Fail),
                (NoDataPolicy::Pass, Verdict::Inconclusive),
            ] {
                let nd = NoDataConfig {
                    min_requests: 1,
                    policy,
                };
                let r = evaluate(&c, observed(value, None), &nd);
                assert_eq!(r.verdict, verdict, "{value:?} {policy:?}");
                // Even when enough requests were seen, NaN is not a pass.
                let r = evaluate(&c, observed(value, Some(500)), &nd);
                assert_eq!(r.verdict, verdict, "{value:?} {policy:?} with traffic");
            }
        }
        let r = evaluate(
            &c,
            observed(Some(f64::INFINITY), Some(5)),
            &NoDataConfig::default(),
        );
        assert_eq!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn request_duration_compares_whole_milliseconds_like_flagger() {
        let mut s = spec("request-duration");
        s.threshold_range = Some(ThresholdRange {
            min: None,
            max: Some(500.0),
        });
        let c = MetricCheck::from_spec("m", &s).unwrap();
        let nd = NoDataConfig::default();
        let r = evaluate(&c, observed(Some(500.7), Some(100)), &nd);
        assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
        assert_eq!(r.value, Some(500.7));
        let r = evaluate(&c, observed(Some(501.0), Some(100)), &nd);
        assert_eq!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn deprecated_threshold_keeps_flagger_meaning() {
        let mut s = spec("request-success-rate");
        s.threshold_range = None;
        s.threshold = Some(99.0);
        let c = MetricCheck::from_spec("m", &s).unwrap();
        assert_eq!(
            c.range,
            ThresholdRange {
                min: Some(99.0),
                max: None
            }
        );
        let mut s = spec("request-duration");
        s.threshold_range = None;
        s.threshold = Some(500.0);
        let c = MetricCheck::from_spec("m", &s).unwrap();
        assert_eq!(
            c.range,
            ThresholdRange {
                min: None,
                max: Some(500.0)
            }
        );
        let mut s = spec("custom");
        s.template_query = Some("up".into());
        s.threshold_range = None;
        s.threshold = Some(5.0);
        let c = MetricCheck::from_spec("m", &s).unwrap();
        assert_eq!(c.range.max, Some(5.0));
        // thresholdRange wins over threshold.
        let mut s = spec("request-success-rate");
        s.threshold = Some(50.0);
        let c = MetricCheck::from_spec("m", &s).unwrap();
        assert_eq!(c.range.min, Some(99.0));
        assert_eq!(c.interval, Duration::from_secs(60));
    }

    #[test]
    fn bad_metric_specs_name_the_field() {
        let cases: Vec<(MetricSpec, &str)> = vec![
            (spec(""), "metrics[0].name"),
            (spec("error-budget"), "metrics[0].name"),
            (
                MetricSpec {
                    interval: Some("1 minute".into()),
                    ..spec("request-success-rate")
                },
                "metrics[0].interval",
            ),
            (
                MetricSpec {
                    threshold_range: Some(ThresholdRange {
                        min: Some(5.0),
                        max: Some(1.0),
                    }),
                    ..spec("request-success-rate")
                },
                "metrics[0].thresholdRange",
            ),
            (
                MetricSpec {
                    threshold_range: Some(ThresholdRange::default()),
                    ..spec("request-success-rate")
                },
                "metrics[0].thresholdRange",
            ),
            (
                MetricSpec {
                    threshold_range: None,
                    ..spec("request-success-rate")
                },
                "metrics[0].thresholdRange",
            ),
            (
                MetricSpec {
                    threshold_range: Some(ThresholdRange {
                        min: Some(f64::NAN),
                        max: None,
                    }),
                    ..spec("request-success-rate")
                },
                "metrics[0].thresholdRange.min",
            ),
            (
                MetricSpec {
                    template_query: Some("  ".into()),
                    ..spec("custom")
                },
                "metrics[0].templateRef",
            ),
        ];
        for (s, field) in cases {
            let err = MetricCheck::from_spec("spec.analysis.metrics[0]", &s).unwrap_err();
            assert!(err.to_string().contains(field), "{s:?}: {err}");
        }
        let err = NoDataPolicy::parse("spec.analysis.noData.policy", "skip").unwrap_err();
        assert!(err.to_string().contains("spec.analysis.noData.policy"));
        assert!(err.to_string().contains("wait, fail or pass"));
    }
}

//! PromQL for the built-in checks and for per-arm traffic.
//!
//! For `linkerd` and `istio` the built-in checks use Flagger's own queries, character for
//! character in meaning (same metrics, label matchers, `rate` window and `* 100`), so a Flagger
//! user's `thresholdRange` keeps its meaning. `serin` uses the same shape over the proxy's
//! Linkerd-named metrics, selecting the canary arm by `dst_service`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AnalysisError;
use crate::check::BuiltinMetric;
use crate::duration::format_duration;
use crate::target::{Arm, Target};
use crate::template::{TemplateContext, render};

/// Which mesh produced the metrics (the Canary's `spec.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mesh {
    /// `serin-proxy` metrics (Linkerd names, `dst_service` per backend).
    #[default]
    Serin,
    /// Linkerd proxy metrics (`deployment` label, inbound direction).
    Linkerd,
    /// Istio standard metrics (`destination_workload`, reporter=destination).
    Istio,
}

impl Mesh {
    /// Parses `serin`, `linkerd` or `istio`; `field` names the setting in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, AnalysisError> {
        match text {
            "serin" => Ok(Mesh::Serin),
            "linkerd" => Ok(Mesh::Linkerd),
            "istio" => Ok(Mesh::Istio),
            other => Err(AnalysisError::invalid(
                field,
                format!("no built-in metrics for provider `{other}`"),
                "serin, linkerd or istio (other providers: use MetricTemplates)",
            )),
        }
    }
}

// Flagger's built-in queries (pkg/metrics/observers/linkerd.go and istio.go), as templates.
const LINKERD_SUCCESS_RATE: &str = r#"sum(
  rate(
    response_total{
      namespace="{{ namespace }}",
      deployment=~"{{ target }}",
      classification!="failure",
      direction="inbound"
    }[{{ interval }}]
  )
)
/
sum(
  rate(
    response_total{
      namespace="{{ namespace }}",
      deployment=~"{{ target }}",
      direction="inbound"
    }[{{ interval }}]
  )
)
* 100"#;

const LINKERD_DURATION: &str = r#"histogram_quantile(
  0.99,
  sum(
    rate(
      response_latency_ms_bucket{
        namespace="{{ namespace }}",
        deployment=~"{{ target }}",
        direction="inbound"
      }[{{ interval }}]
    )
  ) by (le)
)"#;

const ISTIO_SUCCESS_RATE: &str = r#"sum(
  rate(
    istio_requests_total{
      reporter="destination",
      destination_workload_namespace="{{ namespace }}",
      destination_workload=~"{{ target }}",
      response_code!~"5.*"
    }[{{ interval }}]
  )
)
/
sum(
  rate(
    istio_requests_total{
      reporter="destination",
      destination_workload_namespace="{{ namespace }}",
      destination_workload=~"{{ target }}"
    }[{{ interval }}]
  )
)
* 100"#;

const ISTIO_DURATION: &str = r#"histogram_quantile(
  0.99,
  sum(
    rate(
      istio_request_duration_milliseconds_bucket{
        reporter="destination",
        destination_workload_namespace="{{ namespace }}",
        destination_workload=~"{{ target }}"
      }[{{ interval }}]
    )
  ) by (le)
)"#;

/// Escapes a value for use inside a PromQL double-quoted label matcher.
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Label matchers and metric names selecting one arm's requests for `mesh`.
struct ArmQuery {
    requests_metric: &'static str,
    bucket_metric: &'static str,
    selector: String,
    failure_matcher: &'static str,
}

fn arm_query(mesh: Mesh, namespace: &str, arm: &Arm, regex: bool) -> ArmQuery {
    let op = if regex { "=~" } else { "=" };
    match mesh {
        Mesh::Serin => ArmQuery {
            requests_metric: "response_total",
            bucket_metric: "response_latency_ms_bucket",
            selector: format!("dst_service{op}\"{}\"", quote(&arm.backend)),
            failure_matcher: "classification=\"failure\"",
        },
        Mesh::Linkerd => ArmQuery {
            requests_metric: "response_total",
            bucket_metric: "response_latency_ms_bucket",
            selector: format!(
                "namespace=\"{}\",deployment{op}\"{}\",direction=\"inbound\"",
                quote(namespace),
                quote(&arm.workload)
            ),
            failure_matcher: "classification=\"failure\"",
        },
        Mesh::Istio => ArmQuery {
            requests_metric: "istio_requests_total",
            bucket_metric: "istio_request_duration_milliseconds_bucket",
            selector: format!(
                "reporter=\"destination\",destination_workload_namespace=\"{}\",destination_workload{op}\"{}\"",
                quote(namespace),
                quote(&arm.workload)
            ),
            failure_matcher: "response_code=~\"5.*\"",
        },
    }
}

/// The PromQL a built-in check runs for the canary of `target` over `interval`.
pub fn builtin_query(
    mesh: Mesh,
    metric: BuiltinMetric,
    target: &Target,
    interval: Duration,
) -> Result<String, AnalysisError> {
    let template = match (mesh, metric) {
        (Mesh::Linkerd, BuiltinMetric::RequestSuccessRate) => LINKERD_SUCCESS_RATE,
        (Mesh::Linkerd, BuiltinMetric::RequestDuration) => LINKERD_DURATION,
        (Mesh::Istio, BuiltinMetric::RequestSuccessRate) => ISTIO_SUCCESS_RATE,
        (Mesh::Istio, BuiltinMetric::RequestDuration) => ISTIO_DURATION,
        (Mesh::Serin, metric) => {
            let q = arm_query(mesh, &target.namespace, &target.canary, false);
            let w = format_duration(interval);
            return Ok(match metric {
                BuiltinMetric::RequestSuccessRate => format!(
                    "sum(rate({m}{{{s},classification!=\"failure\"}}[{w}])) / sum(rate({m}{{{s}}}[{w}])) * 100",
                    m = q.requests_metric,
                    s = q.selector
                ),
                BuiltinMetric::RequestDuration => format!(
                    "histogram_quantile(0.99, sum(rate({b}{{{s}}}[{w}])) by (le))",
                    b = q.bucket_metric,
                    s = q.selector
                ),
            });
        }
    };
    let ctx: TemplateContext = target.template_context(interval, &Default::default());
    render(template, &ctx)
}

/// PromQL counting the canary's requests in the window, with the same matchers the built-in
/// query uses (Flagger's regex match on the target for linkerd/istio): the sample size the
/// no-data policy looks at.
pub fn canary_request_count_query(mesh: Mesh, target: &Target, interval: Duration) -> String {
    let regex = mesh != Mesh::Serin;
    let q = arm_query(mesh, &target.namespace, &target.canary, regex);
    format!(
        "sum(increase({}{{{}}}[{}]))",
        q.requests_metric,
        q.selector,
        format_duration(interval)
    )
}

/// The three PromQL queries giving one arm's traffic over `window`: total requests, failed
/// requests, and latency buckets summed by `le`.
pub fn arm_traffic_queries(
    mesh: Mesh,
    target: &Target,
    arm: &Arm,
    window: Duration,
) -> [String; 3] {
    let q = arm_query(mesh, &target.namespace, arm, false);
    let w = format_duration(window);
    [
        format!(
            "sum(increase({}{{{}}}[{w}]))",
            q.requests_metric, q.selector
        ),
        format!(
            "sum(increase({}{{{},{}}}[{w}]))",
            q.requests_metric, q.selector, q.failure_matcher
        ),
        format!(
            "sum by (le) (increase({}{{{}}}[{w}]))",
            q.bucket_metric, q.selector
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squash(s: &str) -> String {
        s.split_whitespace().collect()
    }

    #[test]
    fn linkerd_queries_are_flaggers() {
        let t = Target::flagger("podinfo", "test", "podinfo", None);
        let q = builtin_query(
            Mesh::Linkerd,
            BuiltinMetric::RequestSuccessRate,
            &t,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            squash(&q),
            squash(
                r#"sum(rate(response_total{namespace="test",deployment=~"podinfo",classification!="failure",direction="inbound"}[1m]))
                /sum(rate(response_total{namespace="test",deployment=~"podinfo",direction="inbound"}[1m]))*100"#
            )
        );
        let q = builtin_query(
            Mesh::Linkerd,
            BuiltinMetric::RequestDuration,
            &t,
            Duration::from_secs(120),
        )
        .unwrap();
        assert_eq!(
            squash(&q),
            squash(
                r#"histogram_quantile(0.99,sum(rate(response_latency_ms_bucket{namespace="test",deployment=~"podinfo",direction="inbound"}[2m]))by(le))"#
            )
        );
    }

    #[test]
    fn istio_queries_are_flaggers() {
        let t = Target::flagger("podinfo", "prod", "podinfo", None);
        let q = builtin_query(
            Mesh::Istio,
            BuiltinMetric::RequestSuccessRate,
            &t,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            squash(&q),
            squash(
                r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="prod",destination_workload=~"podinfo",response_code!~"5.*"}[1m]))
                /sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="prod",destination_workload=~"podinfo"}[1m]))*100"#
            )
        );
        let q = builtin_query(
            Mesh::Istio,
            BuiltinMetric::RequestDuration,
            &t,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            squash(&q),
            squash(
                r#"histogram_quantile(0.99,sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="prod",destination_workload=~"podinfo"}[1m]))by(le))"#
            )
        );
    }

    #[test]
    fn serin_queries_select_the_canary_backend() {
        let t = Target::flagger("podinfo", "test", "podinfo", Some("web"));
        let q = builtin_query(
            Mesh::Serin,
            BuiltinMetric::RequestSuccessRate,
            &t,
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(
            q,
            r#"sum(rate(response_total{dst_service="web-canary",classification!="failure"}[30s])) / sum(rate(response_total{dst_service="web-canary"}[30s])) * 100"#
        );
        let [req, fail, buckets] =
            arm_traffic_queries(Mesh::Serin, &t, &t.primary, Duration::from_secs(300));
        assert_eq!(
            req,
            r#"sum(increase(response_total{dst_service="web-primary"}[5m]))"#
        );
        assert_eq!(
            fail,
            r#"sum(increase(response_total{dst_service="web-primary",classification="failure"}[5m]))"#
        );
        assert_eq!(
            buckets,
            r#"sum by (le) (increase(response_latency_ms_bucket{dst_service="web-primary"}[5m]))"#
        );
        assert_eq!(
            canary_request_count_query(Mesh::Linkerd, &t, Duration::from_secs(60)),
            r#"sum(increase(response_total{namespace="test",deployment=~"podinfo",direction="inbound"}[1m]))"#
        );
        let err = Mesh::parse("spec.provider", "appmesh").unwrap_err();
        assert!(err.to_string().contains("spec.provider"));
    }
}

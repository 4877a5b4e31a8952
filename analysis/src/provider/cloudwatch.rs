//! The Amazon CloudWatch provider with Flagger's query semantics: a MetricTemplate query is a
//! JSON array of `MetricDataQuery` objects (`Id`, `MetricStat` or `Expression`, `Label`,
//! `ReturnData`, `Period`, `AccountId`), sent to `GetMetricData` over
//! `[now - 10 × metric interval, now]` with at most 20 datapoints. The value is the newest
//! datapoint of the first result; no result or no datapoint is "no data" (never a pass).
//!
//! `spec.provider.region` is required (as in Flagger); the endpoint is
//! `https://monitoring.<region>.amazonaws.com` unless `spec.provider.address` (or the SDK's
//! `AWS_ENDPOINT_URL_CLOUDWATCH` / `AWS_ENDPOINT_URL`) names another, e.g. a VPC endpoint.
//! Requests use CloudWatch's JSON protocol (`application/x-amz-json-1.0`,
//! `X-Amz-Target: GraniteServiceVersion20100801.GetMetricData`), signed with SigV4 for the
//! service `monitoring`; credentials come from the chain in [`super::aws`].
//!
//! The query's keys are matched case-insensitively, as Flagger's JSON decoding does, and sent
//! in CloudWatch's spelling; a key CloudWatch does not define is an error naming it (Flagger
//! would silently drop it, and with it part of the query).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::aws::{Environment, KeySource, Unsigned, dns_suffix, sign_headers};
use super::http::Http;
use super::registry::{Credentials, TemplateProvider, template_provider};
use crate::AnalysisError;
use crate::check::Observed;

const KIND: &str = "cloudwatch";

/// The SigV4 service name of CloudWatch.
pub const SIGNING_NAME: &str = "monitoring";
/// `X-Amz-Target` of the call.
pub const TARGET: &str = "GraniteServiceVersion20100801.GetMetricData";
/// Flagger asks for ten metric intervals back.
pub const START_DELTA_INTERVALS: u32 = 10;
/// Flagger's `MaxDatapoints`.
pub const MAX_DATAPOINTS: u32 = 20;

/// A CloudWatch `GetMetricData` client.
pub struct CloudWatchProvider {
    http: Http,
    region: String,
    keys: KeySource,
    /// For STS, the container endpoint and IMDS: always verifies TLS, whatever
    /// `insecureSkipVerify` says about the CloudWatch endpoint.
    credentials_client: reqwest::Client,
}

impl std::fmt::Debug for CloudWatchProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // KeySource's Debug redacts secrets.
        write!(
            f,
            "CloudWatchProvider({}, {}, {:?})",
            self.http.shown, self.region, self.keys
        )
    }
}

/// The shapes of a `MetricDataQuery` and its parts: each field's CloudWatch spelling and, for
/// objects, the shape of its value.
#[derive(Clone, Copy)]
enum Shape {
    Query,
    MetricStat,
    Metric,
    Dimension,
}

impl Shape {
    /// `(name, shape of the value if it is an object or a list of objects)`.
    fn fields(self) -> &'static [(&'static str, Option<Shape>)] {
        match self {
            Shape::Query => &[
                ("Id", None),
                ("MetricStat", Some(Shape::MetricStat)),
                ("Expression", None),
                ("Label", None),
                ("ReturnData", None),
                ("Period", None),
                ("AccountId", None),
            ],
            Shape::MetricStat => &[
                ("Metric", Some(Shape::Metric)),
                ("Period", None),
                ("Stat", None),
                ("Unit", None),
            ],
            Shape::Metric => &[
                ("Namespace", None),
                ("MetricName", None),
                ("Dimensions", Some(Shape::Dimension)),
            ],
            Shape::Dimension => &[("Name", None), ("Value", None)],
        }
    }
}

/// `value` (an object of `shape`, or a list of them) with its keys in CloudWatch's spelling.
fn canonical(value: Value, shape: Shape, path: &str) -> Result<Value, String> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| canonical(v, shape, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, v) in map {
                let Some((name, inner)) = shape
                    .fields()
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&key))
                else {
                    return Err(format!(
                        "{path}: unknown key {key:?}; accepted: {}",
                        shape
                            .fields()
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                };
                let v = match inner {
                    Some(s) => canonical(v, *s, &format!("{path}.{name}"))?,
                    None => v,
                };
                out.insert((*name).to_string(), v);
            }
            Ok(Value::Object(out))
        }
        other => Err(format!("{path}: expected an object, found {other}")),
    }
}

/// Parses a rendered query: a non-empty JSON array of `MetricDataQuery` objects, each with an
/// `Id`, keys in CloudWatch's spelling.
pub fn parse_query(query: &str) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(query).map_err(|e| {
        format!("not JSON ({e}); accepted: a JSON array of MetricDataQuery objects, e.g. [{{\"Id\": \"e1\", \"Expression\": \"m1 / m2\"}}, ...]")
    })?;
    let Value::Array(items) = value else {
        return Err(
            "not a JSON array; accepted: a JSON array of MetricDataQuery objects (Id, MetricStat or Expression, Label, ReturnData, Period)"
                .into(),
        );
    };
    if items.is_empty() {
        return Err("an empty array; accepted: at least one MetricDataQuery".into());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("query[{i}]");
            let q = canonical(item, Shape::Query, &path)?;
            if q.get("Id").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(format!(
                    "{path}: no \"Id\"; accepted: a short name starting with a lower-case letter, e.g. m1"
                ));
            }
            if q.get("MetricStat").is_none() && q.get("Expression").is_none() {
                return Err(format!(
                    "{path}: neither \"MetricStat\" nor \"Expression\"; accepted: exactly one of them"
                ));
            }
            Ok(q)
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetMetricDataOutput {
    #[serde(default)]
    metric_data_results: Vec<MetricDataResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDataResult {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    timestamps: Vec<f64>,
    #[serde(default)]
    values: Vec<f64>,
    #[serde(default)]
    status_code: Option<String>,
    #[serde(default)]
    messages: Vec<MessageData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MessageData {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

/// CloudWatch's JSON error shape: `{"__type": "com.amazonaws...#InvalidParameterValueException",
/// "message": "..."}` (some front-end errors spell it `Message`).
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type", default)]
    type_: Option<String>,
    #[serde(alias = "Message", default)]
    message: Option<String>,
}

fn error_detail(body: &str) -> Option<String> {
    let b = serde_json::from_str::<ErrorBody>(body).ok()?;
    let code = b
        .type_
        .map(|t| t.rsplit('#').next().unwrap_or(&t).to_string());
    match (code, b.message) {
        (Some(c), Some(m)) => Some(format!("{c}: {m}")),
        (c, m) => c.or(m),
    }
}

impl CloudWatchProvider {
    /// A client for `region` (required) at `address` (default: the region's endpoint), with keys
    /// from the chain in [`super::aws`] (`credentials` is the template's `secretRef` Secret,
    /// `env` the controller's environment).
    pub fn new(
        region: Option<&str>,
        address: Option<&str>,
        credentials: Option<&Credentials>,
        insecure_skip_verify: bool,
        env: &Environment,
    ) -> Result<Self, AnalysisError> {
        let Some(region) = region.map(str::trim).filter(|r| !r.is_empty()) else {
            return Err(AnalysisError::invalid(
                "spec.provider.region",
                "required for provider cloudwatch",
                "an AWS region, e.g. us-east-1",
            ));
        };
        if !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(AnalysisError::invalid(
                "spec.provider.region",
                format!("{region:?} is not an AWS region name"),
                "an AWS region, e.g. us-east-1",
            ));
        }
        let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let (field, endpoint) = match address {
            Some(a) => ("spec.provider.address".to_string(), a.to_string()),
            None => match var("AWS_ENDPOINT_URL_CLOUDWATCH")
                .map(|v| ("AWS_ENDPOINT_URL_CLOUDWATCH", v))
                .or_else(|| var("AWS_ENDPOINT_URL").map(|v| ("AWS_ENDPOINT_URL", v)))
            {
                Some((name, v)) => (format!("the controller's environment variable {name}"), v),
                None => (
                    "spec.provider.region".to_string(),
                    format!("https://{SIGNING_NAME}.{region}.{}", dns_suffix(region)),
                ),
            },
        };
        Ok(CloudWatchProvider {
            keys: KeySource::resolve(credentials, env, region)?,
            credentials_client: super::http_client_builder()
                .timeout(crate::DEFAULT_TIMEOUT)
                .build()
                .map_err(|e| AnalysisError::Unavailable {
                    provider: KIND,
                    address: endpoint.clone(),
                    message: "cannot build the HTTP client for AWS credentials".into(),
                    source: Some(Box::new(e)),
                })?,
            http: Http::new(KIND, &field, &endpoint, insecure_skip_verify)?,
            region: region.to_string(),
        })
    }

    /// Runs a rendered query for a metric of `interval` and returns its value.
    pub async fn query(&self, query: &str, interval: Duration) -> Result<Observed, AnalysisError> {
        let queries = parse_query(query).map_err(|m| {
            AnalysisError::invalid(
                "spec.query",
                m,
                "a JSON array of CloudWatch MetricDataQuery objects",
            )
        })?;
        let now = SystemTime::now();
        let end = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let start = end.saturating_sub((interval * START_DELTA_INTERVALS).as_secs());
        let body = serde_json::json!({
            "MetricDataQueries": queries,
            "StartTime": start,
            "EndTime": end,
            "MaxDatapoints": MAX_DATAPOINTS,
            "ScanBy": "TimestampDescending",
        })
        .to_string();
        let url = self.http.url("/");
        let keys = self.keys.keys(&self.credentials_client).await?;
        let content_type = "application/x-amz-json-1.0";
        let signed = sign_headers(
            &keys,
            &self.region,
            SIGNING_NAME,
            now,
            &Unsigned {
                method: "POST",
                url: &url,
                headers: &[("content-type", content_type), ("x-amz-target", TARGET)],
                body: body.as_bytes(),
            },
        )?;
        let mut request = self
            .http
            .client
            .post(&url)
            .header("content-type", content_type)
            .header("x-amz-target", TARGET)
            .body(body);
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let text = self.http.send(request, query, error_detail).await?;
        let parsed: GetMetricDataOutput = serde_json::from_str(&text).map_err(|e| {
            self.http
                .bad(query, format!("not a GetMetricData answer: {e}"))
        })?;
        let Some(first) = parsed.metric_data_results.first() else {
            return Ok(no_data(query));
        };
        if let Some(status @ ("Forbidden" | "InternalError")) = first.status_code.as_deref() {
            let messages: Vec<String> = first
                .messages
                .iter()
                .map(|m| {
                    format!(
                        "{}: {}",
                        m.code.as_deref().unwrap_or(""),
                        m.value.as_deref().unwrap_or("")
                    )
                })
                .collect();
            return Err(self.http.bad(
                query,
                format!(
                    "result {} has StatusCode {status}: {}",
                    first.id.as_deref().unwrap_or("?"),
                    messages.join("; ")
                ),
            ));
        }
        // The newest datapoint: the results come newest first (ScanBy TimestampDescending, also
        // CloudWatch's default); the timestamps decide when they are present.
        let newest = if first.timestamps.len() == first.values.len() {
            first
                .timestamps
                .iter()
                .zip(&first.values)
                .max_by(|a, b| a.0.total_cmp(b.0))
                .map(|(_, v)| *v)
        } else {
            first.values.first().copied()
        };
        Ok(Observed {
            value: newest.filter(|v| v.is_finite()),
            sample_size: None,
            query: Some(query.to_string()),
            count_unmatched: None,
        })
    }
}

fn no_data(query: &str) -> Observed {
    Observed {
        value: None,
        sample_size: None,
        query: Some(query.to_string()),
        count_unmatched: None,
    }
}

template_provider!(CloudWatchProvider, KIND);

/// [`CloudWatchProvider::new`] reading the process environment (what the registry builds).
pub(crate) fn from_process(
    region: Option<&str>,
    address: Option<&str>,
    credentials: Option<&Credentials>,
    insecure_skip_verify: bool,
) -> Result<Arc<dyn TemplateProvider>, AnalysisError> {
    let env = |k: &str| std::env::var(k).ok();
    Ok(Arc::new(CloudWatchProvider::new(
        region,
        address,
        credentials,
        insecure_skip_verify,
        &env,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flaggers_documented_query_is_read_with_any_key_case() {
        let q = r#"[
            {"Id": "e1", "Expression": "m1 / m2", "Label": "ErrorRate"},
            {"id": "m1", "metricStat": {"metric": {"namespace": "MyKubernetesCluster",
              "metricName": "ErrorCount", "dimensions": [{"name": "appName", "value": "podinfo"}]},
              "period": 60, "stat": "Sum", "unit": "Count"}, "returnData": false}
        ]"#;
        let parsed = parse_query(q).unwrap();
        assert_eq!(parsed[1]["Id"], "m1");
        assert_eq!(
            parsed[1]["MetricStat"]["Metric"]["Dimensions"][0]["Value"],
            "podinfo"
        );
        assert_eq!(parsed[1]["ReturnData"], false);
    }

    #[test]
    fn a_bad_query_is_named_where_it_is_wrong() {
        for (q, expected) in [
            ("up", "not JSON"),
            (r#"{"Id": "m1"}"#, "not a JSON array"),
            ("[]", "empty array"),
            (r#"[{"Expression": "1"}]"#, "query[0]: no \"Id\""),
            (
                r#"[{"Id": "m1"}]"#,
                "neither \"MetricStat\" nor \"Expression\"",
            ),
            (
                r#"[{"Id": "m1", "MetricStat": {"Metric": {"Dimension": []}}}]"#,
                "query[0].MetricStat.Metric: unknown key \"Dimension\"; accepted: Namespace, MetricName, Dimensions",
            ),
        ] {
            let err = parse_query(q).unwrap_err();
            assert!(err.contains(expected), "{q}: {err}");
        }
    }

    #[test]
    fn error_bodies_give_the_exception_and_message() {
        assert_eq!(
            error_detail(
                r#"{"__type":"com.amazonaws.cloudwatch#InvalidParameterValueException","message":"The value m-1 for parameter MetricDataQueries.member.1.Id is not valid."}"#
            )
            .as_deref(),
            Some(
                "InvalidParameterValueException: The value m-1 for parameter MetricDataQueries.member.1.Id is not valid."
            )
        );
        assert_eq!(
            error_detail(r#"{"__type":"UnrecognizedClientException","Message":"The security token included in the request is invalid."}"#).as_deref(),
            Some("UnrecognizedClientException: The security token included in the request is invalid.")
        );
    }

    #[test]
    fn the_region_is_required_and_picks_the_endpoint() {
        let env = |k: &str| {
            (k == "AWS_ACCESS_KEY_ID" || k == "AWS_SECRET_ACCESS_KEY").then(|| "x".to_string())
        };
        let err = CloudWatchProvider::new(None, None, None, false, &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.provider.region") && err.contains("required"),
            "{err}"
        );
        let p = CloudWatchProvider::new(Some("eu-west-1"), None, None, false, &env).unwrap();
        assert_eq!(p.http.address, "https://monitoring.eu-west-1.amazonaws.com");
        let p = CloudWatchProvider::new(Some("cn-north-1"), None, None, false, &env).unwrap();
        assert_eq!(
            p.http.address,
            "https://monitoring.cn-north-1.amazonaws.com.cn"
        );
        let err = CloudWatchProvider::new(Some("EU West"), None, None, false, &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an AWS region"), "{err}");
    }
}

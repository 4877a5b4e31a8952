//! The Dynatrace provider with Flagger's query semantics: the metrics v2 API,
//! `GET {address}/api/v2/metrics/query?metricSelector=<query>&resolution=Inf&from=<ms>&to=<ms>`
//! over `[now - 10 × metric interval, now]`, authenticated with the Secret key `dynatrace_token`
//! as `Authorization: Api-Token <token>`. The value is the first value of the last data series
//! of the first result. No result, no series or no (or a null) value is "no data" (never a
//! pass). `spec.provider.address` is required (the environment's URL), as in Flagger.

use std::time::Duration;

use serde::Deserialize;

use super::http::{Http, unix_now};
use super::registry::{Credentials, required, template_provider};
use crate::AnalysisError;
use crate::check::Observed;

const KIND: &str = "dynatrace";

/// Secret key holding the API token.
pub const TOKEN: &str = "dynatrace_token";
/// Flagger asks for ten metric intervals back.
pub const FROM_DELTA_INTERVALS: u32 = 10;

const KEYS: &[&str] = &[TOKEN];

/// A Dynatrace metrics v2 client.
pub struct DynatraceProvider {
    http: Http,
    token: String,
}

impl std::fmt::Debug for DynatraceProvider {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DynatraceProvider({}, <token redacted>)",
            self.http.shown
        )
    }
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    result: Vec<MetricResult>,
}

#[derive(Deserialize)]
struct MetricResult {
    #[serde(default)]
    data: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    values: Vec<Option<f64>>,
}

/// Dynatrace's error shape: `{"error": {"code": 400, "message": "..."}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

fn error_detail(body: &str) -> Option<String> {
    serde_json::from_str::<ErrorBody>(body)
        .ok()
        .map(|b| b.error.message)
}

impl DynatraceProvider {
    /// A client for the environment at `address` (required) with the token of the template's
    /// `secretRef` Secret; a missing address, Secret or key is an error naming it.
    pub fn new(
        address: Option<&str>,
        credentials: Option<&Credentials>,
        insecure_skip_verify: bool,
    ) -> Result<Self, AnalysisError> {
        let Some(address) = address else {
            return Err(AnalysisError::invalid(
                "spec.provider.address",
                "required for provider dynatrace",
                "the environment's URL, e.g. https://{your-environment-id}.live.dynatrace.com",
            ));
        };
        let c = required(KIND, credentials, KEYS)?;
        Ok(DynatraceProvider {
            token: c.key(KIND, TOKEN, KEYS)?,
            http: Http::new(KIND, "spec.provider.address", address, insecure_skip_verify)?,
        })
    }

    /// Runs a rendered metric selector for a metric of `interval` and returns its value.
    pub async fn query(&self, query: &str, interval: Duration) -> Result<Observed, AnalysisError> {
        let to = unix_now().as_millis();
        let from = to.saturating_sub((interval * FROM_DELTA_INTERVALS).as_millis());
        let request = self
            .http
            .client
            .get(self.http.url("/api/v2/metrics/query"))
            .query(&[
                ("metricSelector", query.to_string()),
                ("resolution", "Inf".to_string()),
                ("from", from.to_string()),
                ("to", to.to_string()),
            ])
            .header("Authorization", format!("Api-Token {}", self.token))
            .header("Accept", "application/json");
        let body = self.http.send(request, query, error_detail).await?;
        let parsed: QueryResponse = serde_json::from_str(&body).map_err(|e| {
            self.http
                .bad(query, format!("not a Dynatrace metrics query answer: {e}"))
        })?;
        let value = parsed
            .result
            .first()
            .and_then(|r| r.data.last())
            .and_then(|s| s.values.first().copied().flatten())
            .filter(|v| v.is_finite());
        Ok(Observed {
            value,
            sample_size: None,
            query: Some(query.to_string()),
            count_unmatched: None,
        })
    }
}

template_provider!(DynatraceProvider, KIND);

//! The Datadog provider with Flagger's query semantics: a MetricTemplate query runs against
//! `GET /api/v1/query` over the window `[now - 10 × metric interval, now]`, authenticated by the
//! Secret keys `datadog_api_key` and `datadog_application_key`; the value is the last point of
//! the first series. No series, no point or a null point is "no data" (the check's no-data
//! policy decides; never a pass).
//!
//! Not yet wired into the controller: `serin validate` still reports `datadog` templates as not
//! queried until the analyzer dispatches MetricTemplates by provider type.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde::Deserialize;

use crate::AnalysisError;
use crate::check::Observed;

const KIND: &str = "datadog";

/// Datadog's API when the template sets no `address`.
pub const DEFAULT_ADDRESS: &str = "https://api.datadoghq.com";
/// Secret key holding the API key.
pub const API_KEY: &str = "datadog_api_key";
/// Secret key holding the application key.
pub const APPLICATION_KEY: &str = "datadog_application_key";
/// Flagger asks for ten metric intervals back, so sparse series still have a last point.
pub const FROM_DELTA_INTERVALS: u32 = 10;

/// A Datadog metrics API client.
pub struct DatadogProvider {
    client: reqwest::Client,
    address: String,
    api_key: String,
    application_key: String,
}

impl std::fmt::Debug for DatadogProvider {
    // Never print the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatadogProvider({}, <keys redacted>)", self.address)
    }
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    series: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    pointlist: Vec<(Option<f64>, Option<f64>)>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

impl DatadogProvider {
    /// A client for `address` (default [`DEFAULT_ADDRESS`]) with the keys read from the
    /// template's Secret `secret` (its `data`, decoded); a missing key is an error naming it.
    pub fn from_secret(
        address: Option<&str>,
        secret_name: &str,
        secret: &BTreeMap<String, String>,
    ) -> Result<Self, AnalysisError> {
        let key = |k: &str| {
            secret
                .get(k)
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().to_string())
                .ok_or_else(|| AnalysisError::InvalidConfig {
                    field: format!("Secret {secret_name} key {k}"),
                    message: "missing or empty".into(),
                    accepted: format!(
                        "a Secret with the keys {API_KEY} and {APPLICATION_KEY}, named by the MetricTemplate's spec.provider.secretRef"
                    ),
                })
        };
        let api_key = key(API_KEY)?;
        let application_key = key(APPLICATION_KEY)?;
        let client = super::http_client_builder()
            .timeout(super::prometheus::DEFAULT_TIMEOUT)
            .build()
            .map_err(|e| unavailable(address.unwrap_or(DEFAULT_ADDRESS), e.to_string()))?;
        Ok(DatadogProvider {
            client,
            address: address
                .unwrap_or(DEFAULT_ADDRESS)
                .trim_end_matches('/')
                .to_string(),
            api_key,
            application_key,
        })
    }

    /// Runs a rendered query for a metric of `interval` and returns its value.
    pub async fn query(&self, query: &str, interval: Duration) -> Result<Observed, AnalysisError> {
        let to = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let from = to.saturating_sub((interval * FROM_DELTA_INTERVALS).as_secs());
        let url = Url::parse_with_params(
            &format!("{}/api/v1/query", self.address),
            [
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("query", query.to_string()),
            ],
        )
        .map_err(|e| AnalysisError::InvalidConfig {
            field: "spec.provider.address".into(),
            message: format!("{:?}: {e}", self.address),
            accepted: "an http(s) URL such as https://api.datadoghq.eu".into(),
        })?;
        let response = self
            .client
            .get(url)
            .header("DD-API-KEY", &self.api_key)
            .header("DD-APPLICATION-KEY", &self.application_key)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| unavailable(&self.address, e.to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| unavailable(&self.address, e.to_string()))?;
        let bad = |message: String| AnalysisError::BadResponse {
            provider: KIND,
            query: query.to_string(),
            message,
        };
        if !status.is_success() {
            let detail = serde_json::from_str::<ErrorBody>(&body)
                .ok()
                .filter(|b| !b.errors.is_empty())
                .map_or_else(|| body.trim().to_string(), |b| b.errors.join("; "));
            return Err(bad(format!("HTTP {status}: {detail}")));
        }
        let parsed: QueryResponse = serde_json::from_str(&body)
            .map_err(|e| bad(format!("not a Datadog query answer: {e}")))?;
        let value = parsed
            .series
            .first()
            .and_then(|s| s.pointlist.last())
            .and_then(|(_, v)| *v)
            .filter(|v| v.is_finite());
        Ok(Observed {
            value,
            sample_size: None,
            query: Some(query.to_string()),
        })
    }
}

fn unavailable(address: &str, message: String) -> AnalysisError {
    AnalysisError::Unavailable {
        provider: KIND,
        address: address.to_string(),
        message,
        source: None,
    }
}

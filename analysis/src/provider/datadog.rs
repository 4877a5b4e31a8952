//! The Datadog provider with Flagger's query semantics: a MetricTemplate query runs against
//! `GET /api/v1/query` over the window `[now - 10 × metric interval, now]`, authenticated by the
//! Secret keys `datadog_api_key` and `datadog_application_key` (sent as `DD-API-KEY` and
//! `DD-APPLICATION-KEY`); the value is the last point of the first series. No series, no point
//! or a null point is "no data" (the check's no-data policy decides; never a pass); a 200 answer
//! with `status: error` is an error carrying Datadog's `error` message.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::http::{Http, unix_now};
use super::registry::{Credentials, required, template_provider};
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

const KEYS: &[&str] = &[API_KEY, APPLICATION_KEY];

/// A Datadog metrics API client.
pub struct DatadogProvider {
    http: Http,
    api_key: String,
    application_key: String,
}

impl std::fmt::Debug for DatadogProvider {
    // Never print the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatadogProvider({}, <keys redacted>)", self.http.shown)
    }
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    series: Vec<Series>,
    /// `ok`, or `error` with the reason in `error` (documented on the 200 answer).
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    pointlist: Vec<(Option<f64>, Option<f64>)>,
}

/// Datadog's error shape: `{"errors": ["..."]}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

fn error_detail(body: &str) -> Option<String> {
    serde_json::from_str::<ErrorBody>(body)
        .ok()
        .filter(|b| !b.errors.is_empty())
        .map(|b| b.errors.join("; "))
}

impl DatadogProvider {
    /// A client for `address` (default [`DEFAULT_ADDRESS`]) with the keys of the template's
    /// `secretRef` Secret; a missing Secret or key is an error naming it.
    pub fn new(
        address: Option<&str>,
        credentials: Option<&Credentials>,
        insecure_skip_verify: bool,
    ) -> Result<Self, AnalysisError> {
        let c = required(KIND, credentials, KEYS)?;
        Ok(DatadogProvider {
            api_key: c.key(KIND, API_KEY, KEYS)?,
            application_key: c.key(KIND, APPLICATION_KEY, KEYS)?,
            http: Http::new(
                KIND,
                "spec.provider.address",
                address.unwrap_or(DEFAULT_ADDRESS),
                insecure_skip_verify,
            )?,
        })
    }

    /// [`DatadogProvider::new`] from a Secret's decoded data.
    pub fn from_secret(
        address: Option<&str>,
        secret_name: &str,
        secret: &BTreeMap<String, String>,
    ) -> Result<Self, AnalysisError> {
        let c = Credentials {
            secret: secret_name.to_string(),
            data: secret.clone(),
        };
        Self::new(address, Some(&c), false)
    }

    /// Runs a rendered query for a metric of `interval` and returns its value.
    pub async fn query(&self, query: &str, interval: Duration) -> Result<Observed, AnalysisError> {
        let to = unix_now().as_secs();
        let from = to.saturating_sub((interval * FROM_DELTA_INTERVALS).as_secs());
        let request = self
            .http
            .client
            .get(self.http.url("/api/v1/query"))
            .query(&[
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("query", query.to_string()),
            ])
            .header("DD-API-KEY", &self.api_key)
            .header("DD-APPLICATION-KEY", &self.application_key)
            .header("Accept", "application/json");
        let body = self.http.send(request, query, error_detail).await?;
        let parsed: QueryResponse = serde_json::from_str(&body).map_err(|e| {
            self.http
                .bad(query, format!("not a Datadog query answer: {e}"))
        })?;
        // A 200 that says the query failed is that failure, not "no data" (Flagger counts it as
        // "no values found", the reason buried in the body it quotes).
        if parsed.status.as_deref() == Some("error") {
            let why = parsed
                .error
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| "status error, without a message".into());
            return Err(self.http.bad(query, why));
        }
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
            count_unmatched: None,
        })
    }
}

template_provider!(DatadogProvider, KIND);

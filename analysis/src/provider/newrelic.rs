//! The New Relic provider with Flagger's query semantics: NRQL through the Insights query API,
//! `GET {address}/v1/accounts/{newrelic_account_id}/query?nrql=<query> SINCE <interval seconds>
//! seconds ago`, authenticated with the Secret key `newrelic_query_key` as `X-Query-Key`. The
//! value is the `result` field of the one result row (write the query `... AS result`, as
//! Flagger's docs do). No row, or a null `result`, is "no data" (never a pass); a row without
//! `result` (a query not written `AS result`) is an error naming the fields it has.

use std::time::Duration;

use serde::Deserialize;

use super::http::Http;
use super::registry::{Credentials, required, template_provider};
use crate::AnalysisError;
use crate::check::Observed;

const KIND: &str = "newrelic";

/// New Relic's Insights API when the template sets no `address`.
pub const DEFAULT_ADDRESS: &str = "https://insights-api.newrelic.com";
/// Secret key holding the account id.
pub const ACCOUNT_ID: &str = "newrelic_account_id";
/// Secret key holding the Insights query key.
pub const QUERY_KEY: &str = "newrelic_query_key";

const KEYS: &[&str] = &[ACCOUNT_ID, QUERY_KEY];

/// A New Relic Insights query client.
pub struct NewRelicProvider {
    http: Http,
    account_id: String,
    query_key: String,
}

impl std::fmt::Debug for NewRelicProvider {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NewRelicProvider({}, account {}, <key redacted>)",
            self.http.shown, self.account_id
        )
    }
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    results: Vec<ResultRow>,
}

/// One row: `result` is the value; any other key means the query was not written `AS result`
/// (`SELECT average(duration)` answers `{"average": ...}`).
#[derive(Deserialize)]
struct ResultRow {
    result: Option<f64>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// New Relic's error shape: `{"error": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

fn error_detail(body: &str) -> Option<String> {
    serde_json::from_str::<ErrorBody>(body)
        .ok()
        .map(|b| b.error)
}

impl NewRelicProvider {
    /// A client for `address` (default [`DEFAULT_ADDRESS`]) with the account id and query key of
    /// the template's `secretRef` Secret; a missing Secret or key is an error naming it.
    pub fn new(
        address: Option<&str>,
        credentials: Option<&Credentials>,
        insecure_skip_verify: bool,
    ) -> Result<Self, AnalysisError> {
        let c = required(KIND, credentials, KEYS)?;
        Ok(NewRelicProvider {
            account_id: c.key(KIND, ACCOUNT_ID, KEYS)?,
            query_key: c.key(KIND, QUERY_KEY, KEYS)?,
            http: Http::new(
                KIND,
                "spec.provider.address",
                address.unwrap_or(DEFAULT_ADDRESS),
                insecure_skip_verify,
            )?,
        })
    }

    /// Runs a rendered NRQL query over the last `interval` and returns its `result`.
    pub async fn query(&self, query: &str, interval: Duration) -> Result<Observed, AnalysisError> {
        let nrql = format!("{query} SINCE {} seconds ago", interval.as_secs());
        let request = self
            .http
            .client
            .get(
                self.http
                    .url(&format!("/v1/accounts/{}/query", self.account_id)),
            )
            .query(&[("nrql", &nrql)])
            .header("X-Query-Key", &self.query_key)
            .header("Accept", "application/json");
        let body = self.http.send(request, &nrql, error_detail).await?;
        let parsed: QueryResponse = serde_json::from_str(&body).map_err(|e| {
            self.http.bad(
                &nrql,
                format!("not a New Relic query answer with results[].result: {e}"),
            )
        })?;
        if parsed.results.len() > 1 {
            return Err(self.http.bad(
                &nrql,
                format!(
                    "{} result rows; the query must return one (no FACET)",
                    parsed.results.len()
                ),
            ));
        }
        if let Some(row) = parsed.results.first()
            && row.result.is_none()
            && !row.other.is_empty()
        {
            // Flagger reads this as "no values found", and the Canary waits with no hint why.
            let fields: Vec<String> = row.other.keys().map(|k| format!("`{k}`")).collect();
            return Err(self.http.bad(
                &nrql,
                format!(
                    "the result row has no `result` field (it has {}): end the SELECT expression \
                     with `AS result`",
                    fields.join(", ")
                ),
            ));
        }
        Ok(Observed {
            value: parsed
                .results
                .first()
                .and_then(|r| r.result)
                .filter(|v| v.is_finite()),
            sample_size: None,
            query: Some(nrql),
            count_unmatched: None,
        })
    }
}

template_provider!(NewRelicProvider, KIND);

//! The InfluxDB provider with Flagger's query semantics: a Flux query through the InfluxDB 2 query
//! API, `POST {address}/api/v2/query?org=<org>` with `{"query": ..., "type": "flux", "dialect":
//! ...}`, authenticated with the Secret key `token` as `Authorization: Token <token>` and the
//! organisation from the Secret key `org` (both required with a `secretRef`, as in Flagger).
//! The answer is annotated CSV; the value is the `_value` of the first record, as Flagger reads
//! it.
//!
//! Where Serin differs, and why: a query that returns no record is "no data" (inconclusive,
//! never a pass; Flagger's provider returns 0 there), and a `_value` of type `long` or
//! `unsignedLong` (what Flux's `count()` returns) is read as a number (Flagger accepts only
//! `double`). A null `_value` is no data; a string or boolean one is an error naming its type.
//!
//! InfluxDB 1.x before 1.8 has no Flux and no `/api/v2/query`: its 404 is reported as such.

use std::time::Duration;

use serde::Deserialize;

use super::BoxFuture;
use super::http::{Http, required_address};
use super::registry::{Credentials, TemplateProvider};
use crate::AnalysisError;
use crate::check::Observed;

const KIND: &str = "influxdb";

/// Secret key holding the API token.
pub const TOKEN: &str = "token";
/// Secret key holding the organisation.
pub const ORG: &str = "org";

const KEYS: &[&str] = &[TOKEN, ORG];

/// An InfluxDB 2 Flux query client.
pub struct InfluxDbProvider {
    http: Http,
    /// `(token, org)` from the Secret.
    auth: Option<(String, String)>,
}

impl std::fmt::Debug for InfluxDbProvider {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.auth {
            Some((_, org)) => write!(
                f,
                "InfluxDbProvider({}, org {org}, <token redacted>)",
                self.http.shown
            ),
            None => write!(f, "InfluxDbProvider({}, no token)", self.http.shown),
        }
    }
}

/// InfluxDB 2's error shape: `{"code": "invalid", "message": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: String,
}

fn error_detail(body: &str) -> Option<String> {
    let b = serde_json::from_str::<ErrorBody>(body).ok()?;
    Some(match b.code {
        Some(code) => format!("{code}: {}", b.message),
        None => b.message,
    })
}

/// What the first record of a Flux answer holds.
#[derive(Debug, PartialEq)]
pub enum FirstValue {
    /// No record at all.
    NoRecord,
    /// `_value` is null (empty, and no column default).
    Null,
    /// `_value` as a number.
    Number(f64),
}

/// Reads the first record's `_value` from an annotated-CSV Flux answer. An in-band error table
/// (`,error,reference`) is an error with its message; a `_value` that is not a number is an
/// error naming its type.
pub fn first_value(csv_text: &str) -> Result<FirstValue, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_text.as_bytes());
    // Per table: its annotations, then a header row, then records. A new `#datatype` row
    // starts a new table.
    let mut datatypes: Vec<String> = Vec::new();
    let mut defaults: Vec<String> = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for row in reader.records() {
        let row = row.map_err(|e| format!("not annotated CSV: {e}"))?;
        let first = row.get(0).unwrap_or("");
        if first.starts_with('#') {
            let rest = || row.iter().skip(1).map(str::to_string).collect();
            match first {
                "#datatype" => {
                    datatypes = rest();
                    defaults.clear();
                    header = None;
                }
                "#default" => defaults = rest(),
                _ => {}
            }
            continue;
        }
        if row.iter().all(str::is_empty) {
            continue;
        }
        let cells: Vec<String> = row.iter().skip(1).map(str::to_string).collect();
        let Some(names) = &header else {
            header = Some(cells);
            continue;
        };
        let column = |name: &str| names.iter().position(|n| n == name);
        if let Some(e) = column("error") {
            let message = cells.get(e).map_or("", String::as_str);
            return Err(format!("the query failed: {message}"));
        }
        let Some(v) = column("_value") else {
            return Err(format!(
                "the first record has no _value column (columns: {})",
                names.join(", ")
            ));
        };
        let mut text = cells.get(v).cloned().unwrap_or_default();
        if text.is_empty() {
            text = defaults.get(v).cloned().unwrap_or_default();
        }
        if text.is_empty() {
            return Ok(FirstValue::Null);
        }
        let datatype = datatypes.get(v).map_or("double", String::as_str);
        return match datatype {
            "double" | "long" | "unsignedLong" => text
                .trim()
                .parse::<f64>()
                .map(FirstValue::Number)
                .map_err(|_| format!("_value {text:?} ({datatype}) is not a number")),
            other => Err(format!(
                "the first record's _value is {text:?} of type {other}; accepted: a double, long or unsignedLong"
            )),
        };
    }
    Ok(FirstValue::NoRecord)
}

impl InfluxDbProvider {
    /// A client for InfluxDB 2 at `address` (required); with `credentials`, its `token` and
    /// `org` keys (both required). A missing address or key is an error naming it.
    pub fn new(
        address: Option<&str>,
        credentials: Option<&Credentials>,
        insecure_skip_verify: bool,
    ) -> Result<Self, AnalysisError> {
        let address = required_address(
            KIND,
            address,
            "InfluxDB 2's URL, e.g. http://influxdb.monitoring:8086",
        )?;
        let auth = match credentials {
            Some(c) => Some((c.key(KIND, TOKEN, KEYS)?, c.key(KIND, ORG, KEYS)?)),
            None => None,
        };
        Ok(InfluxDbProvider {
            http: Http::new(KIND, "spec.provider.address", address, insecure_skip_verify)?,
            auth,
        })
    }

    /// Runs a rendered Flux query and returns the first record's `_value`.
    pub async fn query(&self, query: &str) -> Result<Observed, AnalysisError> {
        let body = serde_json::json!({
            "query": query,
            "type": "flux",
            "dialect": {
                "header": true,
                "delimiter": ",",
                "annotations": ["datatype", "group", "default"],
            },
        });
        let mut request = self
            .http
            .client
            .post(self.http.url("/api/v2/query"))
            .header("Accept", "application/csv")
            .json(&body);
        if let Some((token, org)) = &self.auth {
            request = request
                .query(&[("org", org.as_str())])
                .header("Authorization", format!("Token {token}"));
        }
        let answer = self
            .http
            .send(request, query, |b| {
                error_detail(b).or_else(|| {
                    // InfluxDB 1.x before 1.8 has no Flux endpoint.
                    b.trim().starts_with("404 page not found").then(|| {
                        "no /api/v2/query here: the influxdb provider speaks Flux to InfluxDB 2 (or 1.8+ with flux-enabled)".to_string()
                    })
                })
            })
            .await?;
        let value = match first_value(&answer).map_err(|m| self.http.bad(query, m))? {
            FirstValue::Number(v) if v.is_finite() => Some(v),
            FirstValue::Number(_) | FirstValue::Null | FirstValue::NoRecord => None,
        };
        Ok(Observed::of_query(query, value))
    }
}

impl TemplateProvider for InfluxDbProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn query<'a>(
        &'a self,
        query: &'a str,
        _interval: Duration,
    ) -> BoxFuture<'a, Result<Observed, AnalysisError>> {
        // The Flux query carries its own range (`|> range(start: -{{ interval }})`).
        Box::pin(InfluxDbProvider::query(self, query))
    }
}

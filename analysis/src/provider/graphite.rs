//! The Graphite provider with Flagger's query semantics: the render API,
//! `GET {address}/render?<query>&format=json`, where the template's query is the render URL's
//! query string (`target=...`, optionally `&from=-5min`) with every run of whitespace folded to
//! one space, so a long `target=` can be written over several lines. `format` is always `json`.
//! The value is the last non-null datapoint of the answer (across every returned series, in
//! order), as Flagger reads it. No series, or only null datapoints, is "no data" (never a pass).
//!
//! `spec.provider.address` is required (graphite-web's base URL; a path prefix is kept). With a
//! `secretRef`, the Secret's `username` and `password` are sent as HTTP basic auth, and both
//! keys are required, as in Flagger.

use std::time::Duration;

use serde::Deserialize;

use super::BoxFuture;
use super::http::{Http, required_address};
use super::registry::{Credentials, TemplateProvider};
use crate::AnalysisError;
use crate::check::Observed;

const KIND: &str = "graphite";

/// Secret key holding the basic-auth user.
pub const USERNAME: &str = "username";
/// Secret key holding the basic-auth password.
pub const PASSWORD: &str = "password";

const KEYS: &[&str] = &[USERNAME, PASSWORD];

const EXAMPLE: &str = "graphite-web's base URL, e.g. http://graphite.monitoring:8080";

/// A graphite-web render API client.
pub struct GraphiteProvider {
    http: Http,
    basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for GraphiteProvider {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GraphiteProvider({}, {})",
            self.http.shown,
            if self.basic_auth.is_some() {
                "basic auth <redacted>"
            } else {
                "no auth"
            }
        )
    }
}

/// One series of a render answer: `{"target": "...", "datapoints": [[value, timestamp], ...]}`.
#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    datapoints: Vec<(Datapoint, serde_json::Value)>,
}

/// A datapoint value: graphite-web writes a number or `null`; some Graphite-compatible servers
/// write numbers as strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Datapoint {
    Number(Option<f64>),
    Text(String),
}

impl GraphiteProvider {
    /// A client for graphite-web at `address` (required); with `credentials`, basic auth from
    /// its `username` and `password` keys. A missing address or key is an error naming it.
    pub fn new(
        address: Option<&str>,
        credentials: Option<&Credentials>,
        insecure_skip_verify: bool,
    ) -> Result<Self, AnalysisError> {
        let address = required_address(KIND, address, EXAMPLE)?;
        let basic_auth = match credentials {
            Some(c) => Some((c.key(KIND, USERNAME, KEYS)?, c.key(KIND, PASSWORD, KEYS)?)),
            None => None,
        };
        Ok(GraphiteProvider {
            http: Http::new(KIND, "spec.provider.address", address, insecure_skip_verify)?,
            basic_auth,
        })
    }

    /// The render URL for a rendered template query: whitespace runs folded, `format=json`.
    pub fn render_url(&self, query: &str) -> Result<reqwest::Url, AnalysisError> {
        let folded = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut url = reqwest::Url::parse(&self.http.url("/render")).map_err(|e| {
            AnalysisError::invalid(
                "spec.provider.address",
                format!("cannot build the render URL: {e}"),
                EXAMPLE,
            )
        })?;
        // Read the query as a URL query string (decoding what it encodes), then write it back
        // encoded, as Flagger does; `format` is ours.
        let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://q/?{folded}"))
            .map_err(|e| {
                AnalysisError::invalid(
                    "spec.query",
                    format!("not a render API query string: {e}"),
                    "a render query string, e.g. target=sumSeries(app.requests.*)&from=-5min",
                )
            })?
            .query_pairs()
            .filter(|(k, _)| k.trim() != "format")
            // A line break before `&from=` leaves a space at the end of the target.
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        if !pairs.iter().any(|(k, _)| k == "target") {
            return Err(AnalysisError::invalid(
                "spec.query",
                format!("{folded:?} has no target="),
                "a render query string, e.g. target=sumSeries(app.requests.*)&from=-5min",
            ));
        }
        url.query_pairs_mut()
            .extend_pairs(pairs)
            .append_pair("format", "json");
        Ok(url)
    }

    /// Runs a rendered query and returns the last non-null datapoint.
    pub async fn query(&self, query: &str) -> Result<Observed, AnalysisError> {
        let url = self.render_url(query)?;
        let mut request = self
            .http
            .client
            .get(url)
            .header("Accept", "application/json");
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        // graphite-web answers errors as text or an HTML debug page: keep its first line.
        let body = self
            .http
            .send(request, query, |b| {
                b.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(|l| l.chars().take(300).collect())
            })
            .await?;
        let series: Vec<Series> = serde_json::from_str(&body).map_err(|e| {
            self.http
                .bad(query, format!("not a Graphite render JSON answer: {e}"))
        })?;
        let mut value = None;
        for s in &series {
            for (point, _) in &s.datapoints {
                let v = match point {
                    Datapoint::Number(v) => *v,
                    Datapoint::Text(t) => Some(t.trim().parse::<f64>().map_err(|_| {
                        self.http
                            .bad(query, format!("datapoint {t:?} is not a number"))
                    })?),
                };
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    value = Some(v);
                }
            }
        }
        Ok(Observed::of_query(query, value))
    }
}

impl TemplateProvider for GraphiteProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn query<'a>(
        &'a self,
        query: &'a str,
        _interval: Duration,
    ) -> BoxFuture<'a, Result<Observed, AnalysisError>> {
        // The query carries its own range (`from=`, or summarize's `{{ interval }}`).
        Box::pin(GraphiteProvider::query(self, query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(address: &str) -> GraphiteProvider {
        GraphiteProvider::new(Some(address), None, false).unwrap()
    }

    #[test]
    fn the_query_is_the_render_query_string_with_whitespace_folded_and_format_json() {
        let url = provider("http://127.0.0.1:8080/graphite/")
            .render_url("target=summarize(\n    sumSeries(app.{a,b}.count),\n  '1min',\n 'sum')\n&from=-5min&format=raw")
            .unwrap();
        assert_eq!(url.path(), "/graphite/render");
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "target".to_string(),
                    "summarize( sumSeries(app.{a,b}.count), '1min', 'sum')".to_string()
                ),
                ("from".to_string(), "-5min".to_string()),
                ("format".to_string(), "json".to_string()),
            ]
        );
    }

    #[test]
    fn a_query_without_a_target_and_a_missing_key_name_what_is_wrong() {
        let err = provider("http://127.0.0.1:8080")
            .render_url("from=-5min")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.query") && err.contains("target="),
            "{err}"
        );
        let creds = Credentials {
            secret: "graphite-auth".into(),
            data: [("username".to_string(), "u".to_string())].into(),
        };
        let err = GraphiteProvider::new(Some("http://g:8080"), Some(&creds), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Secret graphite-auth key password"), "{err}");
        let err = GraphiteProvider::new(None, None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.provider.address"), "{err}");
    }
}

//! The Prometheus provider: PromQL over the Prometheus HTTP API via `prometheus-http-query`.
//!
//! TLS uses rustls with the `ring` provider (the stack `kube` uses in this workspace) through a
//! `reqwest` client built here and handed to `prometheus-http-query`, so the binary carries one
//! TLS implementation.

use std::time::Duration;

use prometheus_http_query::Client;
use prometheus_http_query::response::Data;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use tracing::{debug, warn};

use super::http::redacted;
use super::{ArmTraffic, BoxFuture, MetricsProvider};
use crate::AnalysisError;
use crate::check::{BuiltinMetric, Observed};
use crate::histogram::Histogram;
use crate::promtext::parse_float;
use crate::queries::{Mesh, arm_traffic_queries, builtin_query, canary_request_count_query};
use crate::target::{ArmRole, Target};

/// Default query timeout, as in Flagger.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

const KIND: &str = "prometheus";

/// Credentials, read by the runtime from the provider's Secret.
#[derive(Clone, PartialEq, Eq)]
pub enum PrometheusAuth {
    /// `Authorization: Bearer <token>` (Secret key `token`).
    Bearer {
        /// The token.
        token: String,
    },
    /// HTTP basic auth (Secret keys `username`, `password`).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for PrometheusAuth {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrometheusAuth::Bearer { .. } => f.write_str("Bearer(<redacted>)"),
            PrometheusAuth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// How to reach Prometheus.
#[derive(Clone, PartialEq)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
    /// Extra headers sent with every query (e.g. `X-Scope-OrgID` for Mimir/Cortex).
    pub headers: Vec<(String, String)>,
    /// Optional credentials.
    pub auth: Option<PrometheusAuth>,
    /// Per-query timeout (default 5s).
    pub timeout: Duration,
    /// Skip TLS certificate verification (`insecureSkipVerify`).
    pub insecure_skip_verify: bool,
    /// Which mesh's metric names the built-in checks query.
    pub mesh: Mesh,
}

impl std::fmt::Debug for PrometheusConfig {
    // A password written into the address is never printed (the auth redacts itself).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusConfig")
            .field("address", &redacted(&self.address))
            // Header values may be tokens (`Authorization`, API keys): names only.
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("mesh", &self.mesh)
            .finish()
    }
}

impl PrometheusConfig {
    /// A configuration with defaults for everything but the address.
    pub fn new(address: impl Into<String>, mesh: Mesh) -> Self {
        PrometheusConfig {
            address: address.into(),
            headers: Vec::new(),
            auth: None,
            timeout: DEFAULT_TIMEOUT,
            insecure_skip_verify: false,
            mesh,
        }
    }
}

/// A Prometheus-backed [`MetricsProvider`].
#[derive(Clone)]
pub struct PrometheusProvider {
    client: Client,
    /// The same HTTP client, for telling why a query got no API answer (see `explain`).
    http: reqwest::Client,
    /// `config.headers` and the credentials, sent with each request (not as the client's
    /// default headers, which keep one value per name).
    headers: HeaderMap,
    config: PrometheusConfig,
}

impl std::fmt::Debug for PrometheusProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An error with its causes, `outer: cause: root cause`, repeated texts once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

impl PrometheusProvider {
    /// Validates the configuration and builds the client, without contacting Prometheus.
    pub fn new(config: PrometheusConfig) -> Result<Self, AnalysisError> {
        let address = config.address.trim();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(AnalysisError::invalid(
                "provider.address",
                format!("`{}` is not an http(s) URL", redacted(address)),
                "an absolute URL such as http://prometheus.monitoring:9090",
            ));
        }
        if config.timeout.is_zero() {
            return Err(AnalysisError::invalid(
                "provider.timeout",
                "is zero",
                "a positive duration such as 5s",
            ));
        }
        let mut headers = HeaderMap::new();
        for (i, (name, value)) in config.headers.iter().enumerate() {
            let field = format!("provider.headers[{i}]");
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                AnalysisError::invalid(
                    format!("{field}.name"),
                    format!("`{name}` is not a valid header name"),
                    "an HTTP token such as X-Scope-OrgID",
                )
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                AnalysisError::invalid(
                    format!("{field}.value"),
                    "contains characters not allowed in a header",
                    "visible ASCII text",
                )
            })?;
            // Append: Flagger's map form gives one pair per value, and each is sent.
            if name == AUTHORIZATION {
                value.set_sensitive(true);
            }
            headers.append(name, value);
        }
        if let Some(auth) = &config.auth {
            let text = match auth {
                PrometheusAuth::Bearer { token } => format!("Bearer {}", token.trim()),
                PrometheusAuth::Basic { username, password } => {
                    format!(
                        "Basic {}",
                        base64(format!("{username}:{password}").as_bytes())
                    )
                }
            };
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                AnalysisError::invalid(
                    "provider.secretRef",
                    "the credentials contain characters not allowed in a header",
                    "a token or username/password of visible ASCII characters",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = super::http_client_builder()
            .timeout(config.timeout)
            .tls_danger_accept_invalid_certs(config.insecure_skip_verify)
            .build()
            .map_err(|e| AnalysisError::Unavailable {
                provider: KIND,
                address: redacted(address),
                message: "cannot build the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        let client = Client::from(http.clone(), address).map_err(|e| {
            AnalysisError::invalid(
                "provider.address",
                format!("`{}`: {e}", redacted(address)),
                "an absolute URL such as http://prometheus.monitoring:9090",
            )
        })?;
        Ok(PrometheusProvider {
            client,
            http,
            headers,
            config,
        })
    }

    /// Builds the provider and runs the availability probe.
    pub async fn connect(config: PrometheusConfig) -> Result<Self, AnalysisError> {
        let provider = Self::new(config)?;
        provider.probe().await?;
        Ok(provider)
    }

    /// The configuration in use.
    pub fn config(&self) -> &PrometheusConfig {
        &self.config
    }

    async fn run(&self, query: &str) -> Result<Data, AnalysisError> {
        debug!(query, "prometheus query");
        let mut call = self.client.query(query);
        for (name, value) in &self.headers {
            call = call.header(name.clone(), value.clone());
        }
        let call = call.get();
        let answer = tokio::time::timeout(self.config.timeout, call)
            .await
            .map_err(|_| AnalysisError::Timeout {
                provider: KIND,
                address: redacted(&self.config.address),
                timeout: self.config.timeout,
            })?;
        match answer {
            Ok(result) => Ok(result.into_inner().0),
            Err(prometheus_http_query::Error::Prometheus(e)) => Err(AnalysisError::BadResponse {
                provider: KIND,
                query: query.to_string(),
                message: e.to_string(),
            }),
            Err(e) => {
                let timed_out = matches!(&e, prometheus_http_query::Error::Client(c)
                    if c.inner().is_some_and(|r| r.is_timeout()));
                if timed_out {
                    return Err(AnalysisError::Timeout {
                        provider: KIND,
                        address: redacted(&self.config.address),
                        timeout: self.config.timeout,
                    });
                }
                // It answered in JSON, but not with a vector, matrix or scalar: a string result
                // (`"text"`), or JSON that is not the query API's. The query is what to fix (or
                // the address, for JSON from something else), not Prometheus' availability.
                let text = chain(&e);
                if text.starts_with("failed to parse JSON response") {
                    let message = if text.contains("unknown variant `string`") {
                        "a string; the query must return one instant value (a vector or a scalar)"
                            .to_string()
                    } else {
                        format!("not a Prometheus query answer (check provider.address): {text}")
                    };
                    return Err(AnalysisError::BadResponse {
                        provider: KIND,
                        query: query.to_string(),
                        message,
                    });
                }
                let message = self.explain(&e).await;
                Err(AnalysisError::Unavailable {
                    provider: KIND,
                    address: redacted(&self.config.address),
                    message,
                    source: Some(Box::new(e)),
                })
            }
        }
    }

    /// Why a query got no Prometheus API answer. A server that answered with an HTTP error
    /// (wrong credentials, wrong path) makes the client report only "invalid media type", so
    /// ask once more for the status code and name what to check.
    async fn explain(&self, e: &prometheus_http_query::Error) -> String {
        let url = format!(
            "{}/api/v1/query?query=1",
            self.config.address.trim().trim_end_matches('/')
        );
        let probe = tokio::time::timeout(
            self.config.timeout,
            self.http.get(&url).headers(self.headers.clone()).send(),
        )
        .await;
        match probe {
            Ok(Ok(resp)) if !resp.status().is_success() => {
                let status = resp.status();
                let hint = match status.as_u16() {
                    401 | 403 => "; check the credentials (provider.secretRef)",
                    404 => "; no Prometheus API at this address (provider.address)",
                    _ => "",
                };
                format!("answered {status}{hint}")
            }
            // A 2xx that is not JSON: a login page of an auth proxy in front of Prometheus (often
            // reached by a redirect), or another service at this address.
            Ok(Ok(resp))
                if !resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.contains("json")) =>
            {
                let content_type = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("no content type")
                    .to_string();
                format!(
                    "answered {} with {content_type} from {}, not the Prometheus API: is an \
                     authenticating proxy or another service at this address? \
                     (provider.address, provider.secretRef)",
                    resp.status(),
                    redacted(resp.url().as_str()),
                )
            }
            // Transport failures (refused, TLS) say why only in their sources.
            _ => chain(e),
        }
    }

    /// Runs `query` and returns its single value (`None` when empty or NaN). Flagger's rule
    /// for several series is kept, with a warning: it reads them all and keeps the last, so the
    /// last series in Prometheus' answer wins.
    pub async fn scalar(&self, query: &str) -> Result<Option<f64>, AnalysisError> {
        let value = match self.run(query).await? {
            Data::Scalar(s) => s.value(),
            Data::Vector(v) => {
                if v.len() > 1 {
                    warn!(
                        query,
                        series = v.len(),
                        "query returned several series; using the last, as Flagger does"
                    );
                }
                match v.last() {
                    Some(s) => s.sample().value(),
                    None => return Ok(None),
                }
            }
            Data::Matrix(_) => {
                return Err(AnalysisError::BadResponse {
                    provider: KIND,
                    query: query.to_string(),
                    message: "a range vector; the query must return one instant value".into(),
                });
            }
        };
        Ok((!value.is_nan()).then_some(value))
    }

    async fn histogram(&self, query: &str) -> Result<Option<Histogram>, AnalysisError> {
        let Data::Vector(series) = self.run(query).await? else {
            return Err(AnalysisError::BadResponse {
                provider: KIND,
                query: query.to_string(),
                message: "expected an instant vector of buckets by le".into(),
            });
        };
        if series.is_empty() {
            return Ok(None);
        }
        let mut pairs = Vec::with_capacity(series.len());
        for s in &series {
            let le = s
                .metric()
                .get("le")
                .and_then(|v| parse_float(v))
                .ok_or_else(|| AnalysisError::BadResponse {
                    provider: KIND,
                    query: query.to_string(),
                    message: "a bucket series without a numeric `le` label".into(),
                })?;
            let v = s.sample().value();
            pairs.push((le, if v.is_nan() { 0.0 } else { v }));
        }
        Ok(Histogram::from_cumulative(&pairs))
    }
}

fn sample_size(count: Option<f64>) -> Option<u64> {
    // No series at all means no requests were recorded in the window.
    Some(
        count
            .filter(|c| c.is_finite() && *c > 0.0)
            .map_or(0, |c| c.round() as u64),
    )
}

impl MetricsProvider for PrometheusProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn prometheus_address(&self) -> Option<&str> {
        Some(&self.config.address)
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), AnalysisError>> {
        Box::pin(async move {
            // The same check Flagger makes: a constant query must come back as 1.
            match self.scalar("vector(1)").await? {
                Some(1.0) => Ok(()),
                other => Err(AnalysisError::BadResponse {
                    provider: KIND,
                    query: "vector(1)".into(),
                    message: format!("expected 1, got {other:?}"),
                }),
            }
        })
    }

    fn builtin<'a>(
        &'a self,
        metric: BuiltinMetric,
        target: &'a Target,
        window: Duration,
    ) -> BoxFuture<'a, Result<Observed, AnalysisError>> {
        Box::pin(async move {
            let query = builtin_query(self.config.mesh, metric, target, window)?;
            let value = self.scalar(&query).await?;
            let count_query = canary_request_count_query(self.config.mesh, target, window);
            let count = self.scalar(&count_query).await?;
            Ok(Observed {
                value,
                sample_size: sample_size(count),
                query: Some(query),
                // A sum over no series is an empty vector (a sum over series that saw no
                // request is 0): nothing carries the labels the mesh's queries ask for.
                count_unmatched: count.is_none().then_some(count_query),
            })
        })
    }

    fn query<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<Observed, AnalysisError>> {
        Box::pin(async move {
            Ok(Observed {
                value: self.scalar(query).await?,
                sample_size: None,
                query: Some(query.to_string()),
                count_unmatched: None,
            })
        })
    }

    fn arm_traffic<'a>(
        &'a self,
        target: &'a Target,
        arm: ArmRole,
        window: Duration,
    ) -> BoxFuture<'a, Result<ArmTraffic, AnalysisError>> {
        Box::pin(async move {
            let [requests, failures, buckets] =
                arm_traffic_queries(self.config.mesh, target, target.arm(arm), window);
            Ok(ArmTraffic {
                requests: self.scalar(&requests).await?.unwrap_or(0.0).max(0.0),
                failures: self.scalar(&failures).await?.unwrap_or(0.0).max(0.0),
                latency: self.histogram(&buckets).await?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn bad_settings_name_the_field() {
        let mut c = PrometheusConfig::new("prometheus:9090", Mesh::Serin);
        assert!(
            PrometheusProvider::new(c.clone())
                .unwrap_err()
                .to_string()
                .contains("provider.address")
        );
        c.address = "http://127.0.0.1:9090".into();
        c.headers = vec![("bad header".into(), "x".into())];
        assert!(
            PrometheusProvider::new(c.clone())
                .unwrap_err()
                .to_string()
                .contains("provider.headers[0].name")
        );
        c.headers = vec![("X-Scope-OrgID".into(), "a\nb".into())];
        assert!(
            PrometheusProvider::new(c.clone())
                .unwrap_err()
                .to_string()
                .contains("provider.headers[0].value")
        );
        c.headers.clear();
        c.timeout = Duration::ZERO;
        assert!(
            PrometheusProvider::new(c.clone())
                .unwrap_err()
                .to_string()
                .contains("provider.timeout")
        );
        c.timeout = DEFAULT_TIMEOUT;
        c.auth = Some(PrometheusAuth::Bearer {
            token: "abc".into(),
        });
        c.insecure_skip_verify = true;
        assert!(PrometheusProvider::new(c.clone()).is_ok());
        assert_eq!(format!("{:?}", c.auth), "Some(Bearer(<redacted>))");
    }

    #[tokio::test]
    async fn unreachable_prometheus_fails_the_probe() {
        // Bind then drop a listener: nothing listens on that port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = PrometheusConfig::new(format!("http://127.0.0.1:{port}"), Mesh::Serin);
        c.timeout = Duration::from_secs(2);
        let err = PrometheusProvider::connect(c).await.unwrap_err();
        assert_eq!(err.kind(), "unavailable", "{err}");
    }
}

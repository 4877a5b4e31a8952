//! The HTTP plumbing the JSON-over-HTTP providers share (Datadog, New Relic, Dynatrace, Splunk,
//! CloudWatch, Graphite, InfluxDB): one client per provider with Flagger's 5 s timeout, the
//! status check, and errors that name the provider, the address and the backend's own message.

use reqwest::RequestBuilder;

use crate::AnalysisError;

/// A provider's HTTP client and base address.
#[derive(Clone)]
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    pub(crate) kind: &'static str,
    /// Base URL without a trailing `/`.
    pub(crate) address: String,
    /// The base URL as errors show it ([`redacted`]).
    pub(crate) shown: String,
}

/// `address` as errors, logs and `Debug` may show it: a password written into the URL
/// (`https://user:pass@host`, which the HTTP client sends as basic auth, as Go's clients and so
/// Flagger do) is replaced by `xxxxx`, as Go's `URL.Redacted` does. Errors reach the Canary's
/// status and events, which many more people read than the Secret.
pub(crate) fn redacted(address: &str) -> String {
    match reqwest::Url::parse(address.trim()) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("xxxxx"));
            url.as_str().trim_end_matches('/').to_string()
        }
        _ => address.trim().to_string(),
    }
}

impl Http {
    /// A client for `address` (an absolute http(s) URL; `field` names where it came from).
    pub(crate) fn new(
        kind: &'static str,
        field: &str,
        address: &str,
        insecure_skip_verify: bool,
    ) -> Result<Self, AnalysisError> {
        let address = address.trim().trim_end_matches('/');
        if reqwest::Url::parse(address).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
            return Err(AnalysisError::invalid(
                field,
                format!("`{}` is not an http(s) URL", redacted(address)),
                format!("an absolute URL for the {kind} API, e.g. https://host:port"),
            ));
        }
        let client = super::http_client_builder()
            .timeout(super::prometheus::DEFAULT_TIMEOUT)
            .tls_danger_accept_invalid_certs(insecure_skip_verify)
            .build()
            .map_err(|e| AnalysisError::Unavailable {
                provider: kind,
                address: redacted(address),
                message: "cannot build the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(Http {
            client,
            kind,
            address: address.to_string(),
            shown: redacted(address),
        })
    }

    /// `address` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Sends `request` and returns the body of a 2xx answer. Any other status is a
    /// [`AnalysisError::BadResponse`] carrying the status and `detail(body)` (the backend's own
    /// error message when its error shape is recognised, else the body).
    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        query: &str,
        detail: impl Fn(&str) -> Option<String>,
    ) -> Result<String, AnalysisError> {
        let response = self.open(request, query, detail).await?;
        response.text().await.map_err(|e| self.failed(e))
    }

    /// Sends `request` and returns a 2xx response with its body unread (for streamed answers);
    /// any other status is handled as in [`Http::send`].
    pub(crate) async fn open(
        &self,
        request: RequestBuilder,
        query: &str,
        detail: impl Fn(&str) -> Option<String>,
    ) -> Result<reqwest::Response, AnalysisError> {
        let response = request.send().await.map_err(|e| self.failed(e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.map_err(|e| self.failed(e))?;
            let why = detail(&body).unwrap_or_else(|| body.trim().chars().take(500).collect());
            return Err(self.bad(query, format!("HTTP {status}: {why}")));
        }
        Ok(response)
    }

    /// An answer that is not what the query should produce.
    pub(crate) fn bad(&self, query: &str, message: String) -> AnalysisError {
        AnalysisError::BadResponse {
            provider: self.kind,
            query: query.to_string(),
            message,
        }
    }

    /// A transport failure (or the 5 s timeout) as the provider's error.
    pub(crate) fn failed(&self, e: reqwest::Error) -> AnalysisError {
        if e.is_timeout() {
            return AnalysisError::Timeout {
                provider: self.kind,
                address: self.shown.clone(),
                timeout: super::prometheus::DEFAULT_TIMEOUT,
            };
        }
        AnalysisError::Unavailable {
            provider: self.kind,
            address: self.shown.clone(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// `spec.provider.address`, which `kind` requires (no default endpoint): an error naming the
/// field and giving `example` when it is missing.
pub(crate) fn required_address<'a>(
    kind: &str,
    address: Option<&'a str>,
    example: &str,
) -> Result<&'a str, AnalysisError> {
    address.ok_or_else(|| {
        AnalysisError::invalid(
            "spec.provider.address",
            format!("required for provider {kind}"),
            example.to_string(),
        )
    })
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

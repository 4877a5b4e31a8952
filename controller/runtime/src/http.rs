//! A small outbound HTTP client shared by webhooks and alerts: POST a JSON body with a
//! per-request timeout, http and https (webpki roots), no redirects, no proxy.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// Most of a response body we keep: enough for an error message in the history, small enough
/// that a misbehaving receiver cannot grow the controller's memory.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why one HTTP exchange failed before a status line arrived.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL could not be parsed or is not http(s).
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer within the configured timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, TLS failure and the like.
    #[error("request failed: {0}")]
    Transport(String),
}

/// A response: status and the first bytes of its body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code the receiver answered.
    pub status: StatusCode,
    /// Up to [`MAX_RESPONSE_BYTES`] of the body.
    pub body: Bytes,
}

/// Cheap to clone; one connection pool shared by every clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client that speaks http and https (Mozilla's root certificates).
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            inner: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    /// POST `body` as `application/json` with the extra `headers`, giving up after `timeout`
    /// (connect, send and reading the body all count).
    pub async fn post_json(
        &self,
        url: &str,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<HttpResponse, HttpError> {
        let uri: http::Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| HttpError::InvalidUrl {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(HttpError::InvalidUrl {
                    url: url.to_string(),
                    reason: "accepted schemes are http and https".into(),
                });
            }
        }
        let mut req = Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("serin/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| HttpError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let map: &mut HeaderMap = req.headers_mut();
        for (k, v) in headers {
            map.insert(k.clone(), v.clone());
        }
        let exchange = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| HttpError::Transport(error_chain(&e)))?;
            let status = resp.status();
            let body = match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                // A body larger than the limit or cut short still has a meaningful status.
                Err(_) => Bytes::new(),
            };
            Ok(HttpResponse { status, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }
}

impl HttpClient {
    /// GET `url`, giving up after `timeout`.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<HttpResponse, HttpError> {
        let uri: http::Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| HttpError::InvalidUrl {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        let req = Request::get(uri)
            .header(
                http::header::USER_AGENT,
                concat!("serin/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| HttpError::Transport(error_chain(&e)))?;
            let status = resp.status();
            let body = match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => Bytes::new(),
            };
            Ok(HttpResponse { status, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }
}

/// `e: cause: cause` — hyper's top-level errors say little without their sources.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The first `max` characters of a body as text, for logs and history.
pub fn short_text(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.chars().count() <= max {
        trimmed.to_string()
    } else {
        let mut s: String = trimmed.chars().take(max).collect();
        s.push('…');
        s
    }
}

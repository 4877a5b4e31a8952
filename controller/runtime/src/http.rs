//! A small outbound HTTP client shared by webhooks and alerts: POST a JSON body with a
//! per-request timeout, http and https (webpki roots), 307/308 redirects only, no proxy.

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
    /// Where a redirect that was not followed points (resolved), if it said.
    pub location: Option<String>,
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
    /// (connect, send, redirects and reading the body all count).
    ///
    /// 307 and 308 redirects are followed (at most [`MAX_REDIRECTS`]) with the same method,
    /// body and headers, as RFC 9110 says and as Flagger's Go client does. 301, 302 and 303
    /// are not: they would turn the POST into a GET, so they come back as the response, with
    /// [`HttpResponse::location`] saying where they point.
    pub async fn post_json(
        &self,
        url: &str,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<HttpResponse, HttpError> {
        let mut uri = parse_http_url(url)?;
        let exchange = async {
            for _ in 0..=MAX_REDIRECTS {
                let mut req = Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::USER_AGENT, USER_AGENT)
                    .body(Full::new(body.clone()))
                    .map_err(|e| HttpError::InvalidUrl {
                        url: uri.to_string(),
                        reason: e.to_string(),
                    })?;
                let map: &mut HeaderMap = req.headers_mut();
                for (k, v) in headers {
                    map.insert(k.clone(), v.clone());
                }
                let resp = self.send(req).await?;
                let status = resp.status();
                let location = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(|l| resolve_location(&uri, l));
                if matches!(status.as_u16(), 307 | 308)
                    && let Some(Ok(next)) = &location
                {
                    uri = next.clone();
                    continue;
                }
                let body = capped_body(resp).await;
                let location = location.map(|l| match l {
                    Ok(u) => u.to_string(),
                    Err(e) => e.to_string(),
                });
                return Ok(HttpResponse {
                    status,
                    body,
                    location,
                });
            }
            Err(HttpError::Transport(format!(
                "more than {MAX_REDIRECTS} redirects (the last to {uri})"
            )))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }
}

/// Most 307/308 redirects a POST follows.
pub const MAX_REDIRECTS: usize = 5;

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("serin/", env!("CARGO_PKG_VERSION"));

/// The first [`MAX_RESPONSE_BYTES`] of the body. A body larger than the limit or cut short
/// still has a meaningful status, so it reads as empty instead of failing the exchange.
async fn capped_body(resp: http::Response<hyper::body::Incoming>) -> Bytes {
    match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    }
}

/// `url` parsed, when it is an absolute http or https URL.
fn parse_http_url(url: &str) -> Result<http::Uri, HttpError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| HttpError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.authority().is_some() => Ok(uri),
        _ => Err(HttpError::InvalidUrl {
            url: url.to_string(),
            reason: "accepted schemes are http and https".into(),
        }),
    }
}

/// A `Location` header resolved against the URL that answered it (absolute, or a path on the
/// same host, or a path relative to the answering one).
fn resolve_location(base: &http::Uri, location: &str) -> Result<http::Uri, HttpError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return parse_http_url(location);
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = if let Some(rest) = location.strip_prefix("//") {
        return parse_http_url(&format!("{scheme}://{rest}"));
    } else if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    parse_http_url(&format!("{scheme}://{authority}{path}"))
}

/// What to say about a redirect that was not followed: where it points and why not.
pub fn redirect_note(resp: &HttpResponse) -> Option<String> {
    if !resp.status.is_redirection() {
        return None;
    }
    let to = resp.location.as_deref().unwrap_or("no Location header");
    Some(format!(
        "redirect to {to} not followed: only 307 and 308 redirects are (they keep the POST and its body); set the URL to the address it moved to"
    ))
}

impl HttpClient {
    /// One request on the shared pool; a failure before the status line is a transport error
    /// with its causes.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, HttpError> {
        self.inner
            .request(req)
            .await
            .map_err(|e| HttpError::Transport(error_chain(&e)))
    }

    /// GET `url`, giving up after `timeout`.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<HttpResponse, HttpError> {
        let uri: http::Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| HttpError::InvalidUrl {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        let req = Request::get(uri)
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let resp = self.send(req).await?;
            let status = resp.status();
            let body = capped_body(resp).await;
            Ok(HttpResponse {
                status,
                body,
                location: None,
            })
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

//! A typed client for the `/api/v1` JSON API, used by the `serin` CLI (status, wait, actions).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::model::{
    Action, ApiError, CanaryDetail, CanaryKey, CanaryList, CanarySummary, CommandReceipt,
    HistoryList,
};

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not usable.
    #[error(
        "server URL {url:?} is invalid: {reason}; accepted: http://HOST:PORT (e.g. http://127.0.0.1:7979)"
    )]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer (connection refused, reset, timed out).
    #[error("controller at {url} is unreachable: {reason}")]
    Unreachable {
        /// The request URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{status}: {}", .error.message)]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The error body.
        error: ApiError,
    },
    /// The answer was not the expected JSON.
    #[error("unexpected answer from {url}: {reason}")]
    Decode {
        /// The request URL.
        url: String,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// Whether the Canary does not exist: the API's own `notFound` answer, not any 404 (a
    /// server that is not Serin's API answers 404 to every path).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status, error }
            if *status == StatusCode::NOT_FOUND && error.error == "notFound")
    }

    /// Whether the server answered with something other than the API's JSON error body: it is
    /// likely not a Serin controller's dashboard address (or a proxy in front of it failed).
    pub fn is_foreign(&self) -> bool {
        matches!(self, ClientError::Api { error, .. } if error.error == FOREIGN)
    }

    /// Whether the controller could not be reached (worth retrying).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }
}

/// The error code given to an error answer that is not the API's JSON error body.
const FOREIGN: &str = "http";

/// Optional fields of an action request.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ActionRequest {
    /// Who asks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Gate name for gate actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// Command id (idempotent retries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Client of one controller's API.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    timeout: Duration,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the controller at `url` (`http://HOST:PORT`, optionally with a path prefix).
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported by the CLI; reach the controller over http on a trusted network or a port-forward",
                ));
            }
            _ => return Err(invalid("missing http:// scheme")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("missing host"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query string is not allowed"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            timeout: Duration::from_secs(15),
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The server URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::InvalidUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let unreachable = |reason: String| ClientError::Unreachable {
            url: url.clone(),
            reason,
        };
        let resp = tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| {
                let mut reason = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    reason = format!("{reason}: {s}");
                    src = s.source();
                }
                unreachable(reason)
            })?;
        let status = resp.status();
        let bytes = tokio::time::timeout(self.timeout, resp.into_body().collect())
            .await
            .map_err(|_| unreachable("answer body timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let error = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| {
                let body = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
                let body = body.trim();
                ApiError {
                    error: FOREIGN.into(),
                    message: format!(
                        "{url} answered {}",
                        if body.is_empty() {
                            "with an empty body"
                        } else {
                            body
                        }
                    ),
                }
            });
            return Err(ClientError::Api { status, error });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    /// `GET /api/v1/canaries`.
    pub async fn list(&self) -> Result<Vec<CanarySummary>, ClientError> {
        let list: CanaryList = self.call(Method::GET, "/api/v1/canaries", None).await?;
        Ok(list.items)
    }

    /// `GET /api/v1/canaries/{ns}/{name}`.
    pub async fn detail(&self, key: &CanaryKey) -> Result<CanaryDetail, ClientError> {
        self.call(
            Method::GET,
            &format!(
                "/api/v1/canaries/{}/{}",
                seg(&key.namespace),
                seg(&key.name)
            ),
            None,
        )
        .await
    }

    /// `GET /api/v1/canaries/{ns}/{name}/history`.
    pub async fn history(&self, key: &CanaryKey) -> Result<HistoryList, ClientError> {
        self.call(
            Method::GET,
            &format!(
                "/api/v1/canaries/{}/{}/history",
                seg(&key.namespace),
                seg(&key.name)
            ),
            None,
        )
        .await
    }

    /// `POST /api/v1/canaries/{ns}/{name}/actions/{action}`.
    pub async fn act(
        &self,
        key: &CanaryKey,
        action: Action,
        request: &ActionRequest,
    ) -> Result<CommandReceipt, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        self.call(
            Method::POST,
            &format!(
                "/api/v1/canaries/{}/{}/actions/{}",
                seg(&key.namespace),
                seg(&key.name),
                action.as_str()
            ),
            Some(body),
        )
        .await
    }
}

//! The API server's `Retry-After`, kept for the reconcile's backoff.
//!
//! When the API server sheds load it answers 429 (API Priority and Fairness, max-in-flight:
//! `Too many requests, please try again later.` as plain text) or 503, with a `Retry-After`
//! header saying how many seconds to wait. kube-rs turns the answer into `kube::Error::Api` and
//! drops the headers, so [`RetryAfterLayer`], on the client's service stack, writes the wait into
//! the answer's Status as `details.retryAfterSeconds` (the field Kubernetes defines for it; a
//! plain-text answer becomes a Status with the same message), capped at [`MAX_RETRY_AFTER`].
//! [`retry_after`] finds it again in a failed reconcile's error chain, and the error policy
//! waits at least that long before the Canary's next try.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kube::client::DynBody;
use serde_json::{Value, json};
use tower::{BoxError, Layer, Service};

/// The longest wait taken from a `Retry-After`: a misbehaving proxy or API server must not park
/// a Canary for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Adds the answer's `Retry-After` to its Status (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryAfterLayer;

impl<S> Layer<S> for RetryAfterLayer {
    type Service = RetryAfter<S>;
    fn layer(&self, inner: S) -> RetryAfter<S> {
        RetryAfter { inner }
    }
}

/// The service of [`RetryAfterLayer`].
#[derive(Debug, Clone)]
pub struct RetryAfter<S> {
    inner: S,
}

/// How long `headers` ask to wait: delta-seconds (what the API server sends), capped at
/// [`MAX_RETRY_AFTER`]. An HTTP-date or a value that does not read gives `None`: the backoff of
/// the error kind applies.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// The answer's body as a Status carrying `details.retryAfterSeconds = wait` (a smaller one the
/// server already put there is kept; a body that is not a Status becomes one with its text).
fn with_retry_after(status: StatusCode, body: &[u8], wait: Duration) -> Vec<u8> {
    let secs = wait.as_secs();
    let mut doc = match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("kind").and_then(Value::as_str) == Some("Status") => v,
        _ => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            let reason = match status {
                StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
                _ => "ServiceUnavailable",
            };
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": text, "reason": reason,
                "code": status.as_u16(),
            })
        }
    };
    let details = &mut doc["details"];
    if !details.is_object() {
        *details = json!({});
    }
    let stated = details["retryAfterSeconds"]
        .as_u64()
        .filter(|s| *s > 0)
        .unwrap_or(secs);
    details["retryAfterSeconds"] = json!(stated.min(MAX_RETRY_AFTER.as_secs()));
    serde_json::to_vec(&doc).unwrap_or_else(|_| body.to_vec())
}

fn boxed<B>(body: B) -> Box<DynBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Box::new(body.map_err(Into::into))
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for RetryAfter<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Box<DynBody>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = answer.await.map_err(Into::into)?;
            let status = res.status();
            let throttled = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            let wait = throttled
                .then(|| parse_retry_after(res.headers()))
                .flatten();
            let Some(wait) = wait else {
                return Ok(res.map(boxed));
            };
            let (parts, body) = res.into_parts();
            // An error answer is short (a Status or one line of text).
            let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
            tracing::debug!(
                code = status.as_u16(),
                retry_after_s = wait.as_secs(),
                "the API server asked to retry later"
            );
            let body = Full::new(Bytes::from(with_retry_after(status, &bytes, wait)));
            Ok(Response::from_parts(parts, boxed(body)))
        })
    }
}

/// The wait the API server asked for in a failed call somewhere in `error`'s chain (its Status's
/// `details.retryAfterSeconds` on a 429 or 503), at most [`MAX_RETRY_AFTER`].
pub fn retry_after(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(kube::Error::Api(s)) = e.downcast_ref::<kube::Error>()
            && matches!(s.code, 429 | 503)
        {
            let secs = s.details.as_ref().map_or(0, |d| d.retry_after_seconds);
            if secs > 0 {
                return Some(Duration::from_secs(u64::from(secs)).min(MAX_RETRY_AFTER));
            }
        }
        next = e.source();
    }
    None
}

//! Calling Flagger-style webhooks: HTTP POST of `{name, namespace, phase, checksum, metadata}`,
//! success when the receiver answers with a status ≤ 202, a timeout per attempt, retries, and an
//! optional HMAC-SHA256 signature so receivers can trust the caller.
//!
//! Signature: when a secret is configured the request carries
//! `X-Serin-Signature: sha256=<lowercase hex of HMAC-SHA256(secret, raw body)>`, computed over the
//! exact bytes sent (GitHub's webhook convention), so a receiver verifies it before parsing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::http::{HttpClient, HttpError, redirect_note, short_text};

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-serin-signature";

/// Most characters of a response body kept in the rollout history.
pub const HISTORY_BODY_CHARS: usize = 256;

/// Flagger's webhook body, field for field, so existing receivers (the Flagger load tester,
/// custom gates) keep working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// Canary name.
    pub name: String,
    /// Canary namespace.
    pub namespace: String,
    /// Canary phase at the time of the call (`Progressing`, `Waiting`, …).
    pub phase: String,
    /// Identifies the revision under analysis (target and tracked configs).
    pub checksum: String,
    /// The hook's `metadata`, plus `eventMessage`/`eventType`/`timestamp` for event hooks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// One webhook invocation.
#[derive(Debug, Clone)]
pub struct WebhookCall {
    /// The hook's name (for logs and history).
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Extra attempts after a failed one (Flagger's `retries`).
    pub retries: u32,
    /// HMAC key; `None` sends no signature header.
    pub signing_key: Option<Vec<u8>>,
    /// The body.
    pub payload: WebhookPayload,
}

/// What came of a call, for the engine (ok) and the history (status, body, error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookOutcome {
    /// Status ≤ 202 on some attempt.
    pub ok: bool,
    /// Status of the last attempt that got an answer.
    pub status: Option<u16>,
    /// Start of the last response body.
    pub body: String,
    /// Transport error of the last attempt, if it got no answer.
    pub error: Option<String>,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// Wall time over all attempts.
    pub elapsed_ms: u64,
}

impl WebhookOutcome {
    /// A one-line summary for events and history: `200 OK "body"` or the error.
    pub fn summary(&self) -> String {
        match (&self.status, &self.error) {
            (Some(s), _) if self.body.is_empty() => format!("status {s}"),
            (Some(s), _) => format!("status {s}: {}", self.body),
            (None, Some(e)) => e.clone(),
            (None, None) => "not called".into(),
        }
    }
}

/// Whether an answer may change on a second try: 408, 429 and 5xx but 501, as Flagger's
/// client (go-retryablehttp) retries; any other refusal is final.
fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..600).contains(&status) && status != 501
}

/// `sha256=<hex>` of HMAC-SHA256(`key`, `body`).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&k, body);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256=");
    for b in tag.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Checks a `sha256=<hex>` header value in constant time; for receivers and tests.
pub fn verify_signature(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() % 2 != 0 {
        return false;
    }
    let mut tag = Vec::with_capacity(hex.len() / 2);
    for i in (0..hex.len()).step_by(2) {
        match u8::from_str_radix(&hex[i..i + 2], 16) {
            Ok(b) => tag.push(b),
            Err(_) => return false,
        }
    }
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&k, body, &tag).is_ok()
}

/// Calls webhooks. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct WebhookClient {
    http: HttpClient,
    /// Pause before retry n is `backoff * 2^(n-1)`, capped at 5s.
    backoff: Duration,
}

impl WebhookClient {
    /// A client with a 200 ms base retry backoff.
    pub fn new(http: HttpClient) -> Self {
        Self {
            http,
            backoff: Duration::from_millis(200),
        }
    }

    /// Sets the base pause between retries.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Calls the hook, retrying failed attempts (transport errors, 408, 429 and 5xx but 501)
    /// up to `call.retries` times; other statuses > 202 are final. Never returns an error: failure is an outcome the engine judges.
    #[tracing::instrument(skip_all, fields(hook = %call.name, canary = %call.payload.name, ns = %call.payload.namespace))]
    pub async fn call(&self, call: &WebhookCall) -> WebhookOutcome {
        let started = Instant::now();
        let body = match serde_json::to_vec(&call.payload) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return WebhookOutcome {
                    ok: false,
                    status: None,
                    body: String::new(),
                    error: Some(format!("encoding payload: {e}")),
                    attempts: 0,
                    elapsed_ms: 0,
                };
            }
        };
        let mut headers = Vec::new();
        if let Some(key) = &call.signing_key {
            // The signature is ASCII hex, always a valid header value.
            if let Ok(v) = HeaderValue::from_str(&signature(key, &body)) {
                headers.push((HeaderName::from_static(SIGNATURE_HEADER), v));
            }
        }
        let mut outcome = WebhookOutcome {
            ok: false,
            status: None,
            body: String::new(),
            error: None,
            attempts: 0,
            elapsed_ms: 0,
        };
        let attempts = call.retries.saturating_add(1);
        for attempt in 1..=attempts {
            outcome.attempts = attempt;
            match self
                .http
                .post_json(&call.url, body.clone(), &headers, call.timeout)
                .await
            {
                Ok(resp) => {
                    outcome.status = Some(resp.status.as_u16());
                    outcome.body = short_text(&resp.body, HISTORY_BODY_CHARS);
                    outcome.error = None;
                    if resp.status.as_u16() <= 202 {
                        outcome.ok = true;
                        break;
                    }
                    if let Some(note) = redirect_note(&resp) {
                        // Asking again gets the same redirect.
                        outcome.body = note;
                        break;
                    }
                    tracing::debug!(status = resp.status.as_u16(), attempt, "webhook refused");
                    if !retryable(resp.status.as_u16()) {
                        // A final answer (a closed gate's 403, a 400): asking again at once
                        // gets the same one.
                        break;
                    }
                }
                Err(e @ HttpError::InvalidUrl { .. }) => {
                    // Retrying a malformed URL cannot succeed.
                    outcome.status = None;
                    outcome.error = Some(e.to_string());
                    break;
                }
                Err(e) => {
                    outcome.status = None;
                    outcome.body.clear();
                    outcome.error = Some(e.to_string());
                    tracing::debug!(error = %e, attempt, "webhook call failed");
                }
            }
            if attempt < attempts {
                let pause = self
                    .backoff
                    .saturating_mul(1 << (attempt - 1).min(5))
                    .min(Duration::from_secs(5));
                tokio::time::sleep(pause).await;
            }
        }
        outcome.elapsed_ms = started.elapsed().as_millis() as u64;
        outcome
    }
}

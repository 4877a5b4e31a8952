//! The Splunk Observability Cloud (SignalFx) provider with Flagger's query semantics: a
//! MetricTemplate query is a SignalFlow program, executed over `[now - 10 × metric interval,
//! now]` with `immediate=true` (the computation runs over the past window and ends), with the
//! Secret key `sf_token_key` sent as `X-SF-Token`. The value is the last non-null datapoint the
//! computation emits. No datapoint (or only nulls) is "no data" (never a pass); datapoints of
//! more than one time series are an error, as in Flagger, because a check judges one number.
//!
//! Transport: Flagger's client speaks SignalFlow over WebSocket. Serin uses SignalFlow's other
//! documented transport, `POST {stream endpoint}/v2/signalflow/execute` answered as a stream of
//! server-sent events, because it needs nothing beyond the HTTP client every provider already
//! uses: the WebSocket transport would add a WebSocket stack (and its own TLS wiring) and a
//! decoder for SignalFlow's binary, optionally compressed, data frames. The SSE stream carries the
//! same computation's messages as JSON (`control-message`, `metadata`, `message`, `data`,
//! `error`), one computation per request, which is exactly what a check needs.
//!
//! `spec.provider.address` is required, as in Flagger, and may be written either way Flagger's
//! docs show it: the realm's API endpoint `https://api.<realm>.signalfx.com` or its stream
//! endpoint `wss://stream.<realm>.signalfx.com`; both mean `https://stream.<realm>.signalfx.com`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::http::{Http, unix_now};
use super::registry::{Credentials, required, template_provider};
use crate::AnalysisError;
use crate::check::Observed;

const KIND: &str = "splunk";

/// Secret key holding the access token (an org token with the API scope).
pub const TOKEN: &str = "sf_token_key";
/// Flagger runs the program over ten metric intervals back.
pub const FROM_DELTA_INTERVALS: u32 = 10;

const KEYS: &[&str] = &[TOKEN];

/// A SignalFlow (Splunk Observability Cloud) client.
pub struct SplunkProvider {
    http: Http,
    token: String,
}

impl std::fmt::Debug for SplunkProvider {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SplunkProvider({}, <token redacted>)", self.http.shown)
    }
}

/// The stream endpoint for `address`: `ws`/`wss` become `http`/`https`, and an `api.` host
/// becomes the realm's `stream.` host (Flagger accepts both spellings of the endpoint).
pub fn stream_endpoint(address: &str) -> Result<String, AnalysisError> {
    let invalid = || {
        AnalysisError::invalid(
            "spec.provider.address",
            format!("`{address}` is not a URL"),
            "the realm's endpoint, e.g. https://api.us1.signalfx.com or wss://stream.us1.signalfx.com",
        )
    };
    let trimmed = address.trim();
    let (scheme, rest) = trimmed.split_once("://").ok_or_else(invalid)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        _ => return Err(invalid()),
    };
    let rest = match rest.strip_prefix("api.") {
        Some(realm) => format!("stream.{realm}"),
        None => rest.to_string(),
    };
    Ok(format!("{scheme}://{rest}"))
}

/// One server-sent event: its `event:` type and its (joined) `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) data: String,
}

/// An incremental parser of a `text/event-stream` body (the WHATWG event-stream format: fields
/// per line, `data` lines joined by `\n`, an empty line ends an event, `:` starts a comment).
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns every event completed by them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let event = std::mem::take(&mut self.event);
                    events.push(SseEvent {
                        event: if event.is_empty() {
                            "message".into()
                        } else {
                            event
                        },
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = value.to_string(),
                "data" => self.data.push(value.to_string()),
                _ => {} // `id`, `retry`: nothing a one-shot computation uses.
            }
        }
        events
    }
}

/// The JSON of a `control-message` event.
#[derive(Deserialize)]
struct Control {
    event: String,
    #[serde(default, rename = "abortInfo")]
    abort_info: Option<serde_json::Value>,
}

/// The JSON of a `data` event: one batch of datapoints for a logical timestamp.
#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    data: Vec<Datapoint>,
}

#[derive(Deserialize)]
struct Datapoint {
    #[serde(rename = "tsId")]
    ts_id: String,
    value: Option<f64>,
}

/// The JSON of an `error` event, in either shape SignalFlow uses: `{"errors": [{code, context}]}`
/// or `{"error": 400, "errorType": ..., "message": ...}`.
#[derive(Deserialize)]
struct StreamError {
    #[serde(default)]
    errors: Vec<serde_json::Value>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl StreamError {
    fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(t) = &self.error_type {
            parts.push(t.clone());
        }
        if let Some(m) = &self.message {
            parts.push(m.clone());
        }
        parts.extend(self.errors.iter().map(|e| e.to_string()));
        parts.join(": ")
    }
}

/// An HTTP error body: `{"code": 401, "message": "...", "errorType": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

fn error_detail(body: &str) -> Option<String> {
    let b = serde_json::from_str::<ErrorBody>(body).ok()?;
    match (b.error_type, b.message) {
        (Some(t), Some(m)) => Some(format!("{t}: {m}")),
        (t, m) => t.or(m),
    }
}

/// What a computation's stream has said so far.
#[derive(Debug, Default)]
struct Computation {
    /// Non-null datapoints in arrival order.
    points: Vec<(String, f64)>,
    ended: bool,
}

impl Computation {
    /// Takes one event; an `error` event or an aborted channel is an error message.
    fn take(&mut self, event: &SseEvent) -> Result<(), String> {
        let parse_error = |e: serde_json::Error| {
            format!(
                "not a SignalFlow {} message ({e}): {}",
                event.event,
                event.data.chars().take(200).collect::<String>()
            )
        };
        match event.event.as_str() {
            "control-message" => {
                let c: Control = serde_json::from_str(&event.data).map_err(parse_error)?;
                match c.event.as_str() {
                    "END_OF_CHANNEL" => self.ended = true,
                    "CHANNEL_ABORT" => {
                        return Err(format!(
                            "the computation was aborted: {}",
                            c.abort_info.unwrap_or_default()
                        ));
                    }
                    // STREAM_START, JOB_START, JOB_PROGRESS: the computation is under way.
                    _ => {}
                }
            }
            "data" => {
                let d: Data = serde_json::from_str(&event.data).map_err(parse_error)?;
                self.points.extend(
                    d.data
                        .into_iter()
                        .filter_map(|p| p.value.filter(|v| v.is_finite()).map(|v| (p.ts_id, v))),
                );
            }
            "error" => {
                let e: StreamError = serde_json::from_str(&event.data).map_err(parse_error)?;
                return Err(format!("the program failed: {}", e.describe()));
            }
            // `metadata`, `message` (information such as JOB_RUNNING_RESOLUTION or
            // FIND_MATCHED_NO_TIMESERIES), `event`, `expired-tsid`: nothing a value depends on.
            _ => {}
        }
        Ok(())
    }

    /// The check's value: the last datapoint, `None` without one; several series are an error.
    fn value(&self) -> Result<Option<f64>, String> {
        let series: BTreeSet<&str> = self.points.iter().map(|(id, _)| id.as_str()).collect();
        if series.len() > 1 {
            return Err(format!(
                "the program emitted {} time series; a check needs exactly one (aggregate it, e.g. .sum() or .mean())",
                series.len()
            ));
        }
        Ok(self.points.last().map(|(_, v)| *v))
    }
}

impl SplunkProvider {
    /// A client for the realm at `address` (required) with the token of the template's
    /// `secretRef` Secret; a missing address, Secret or key is an error naming it.
    pub fn new(
        address: Option<&str>,
        credentials: Option<&Credentials>,
        insecure_skip_verify: bool,
    ) -> Result<Self, AnalysisError> {
        let Some(address) = address else {
            return Err(AnalysisError::invalid(
                "spec.provider.address",
                "required for provider splunk",
                "the realm's endpoint, e.g. https://api.us1.signalfx.com or wss://stream.us1.signalfx.com",
            ));
        };
        let c = required(KIND, credentials, KEYS)?;
        Ok(SplunkProvider {
            token: c.key(KIND, TOKEN, KEYS)?,
            http: Http::new(
                KIND,
                "spec.provider.address",
                &stream_endpoint(address)?,
                insecure_skip_verify,
            )?,
        })
    }

    /// Runs a rendered SignalFlow program over ten metric `interval`s and returns its value.
    pub async fn query(&self, query: &str, interval: Duration) -> Result<Observed, AnalysisError> {
        let stop = unix_now().as_millis();
        let start = stop.saturating_sub((interval * FROM_DELTA_INTERVALS).as_millis());
        let request = self
            .http
            .client
            .post(self.http.url("/v2/signalflow/execute"))
            .query(&[
                ("start", start.to_string()),
                ("stop", stop.to_string()),
                ("immediate", "true".to_string()),
            ])
            .header("X-SF-Token", &self.token)
            .header("Content-Type", "text/plain")
            .header("Accept", "text/event-stream")
            .body(query.to_string());
        let mut response = self.http.open(request, query, error_detail).await?;
        let mut parser = SseParser::default();
        let mut computation = Computation::default();
        while !computation.ended {
            let Some(chunk) = response.chunk().await.map_err(|e| self.http.failed(e))? else {
                return Err(self.http.bad(
                    query,
                    "the stream ended before the computation's END_OF_CHANNEL (cut mid-way); its datapoints are not judged".into(),
                ));
            };
            for event in parser.push(&chunk) {
                computation
                    .take(&event)
                    .map_err(|m| self.http.bad(query, m))?;
                if computation.ended {
                    break;
                }
            }
        }
        let value = computation.value().map_err(|m| self.http.bad(query, m))?;
        Ok(Observed {
            value,
            sample_size: None,
            query: Some(query.to_string()),
            count_unmatched: None,
        })
    }
}

template_provider!(SplunkProvider, KIND);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_the_realm_mean_its_stream_endpoint() {
        for (given, expected) in [
            (
                "https://api.us1.signalfx.com",
                "https://stream.us1.signalfx.com",
            ),
            (
                "wss://stream.eu0.signalfx.com",
                "https://stream.eu0.signalfx.com",
            ),
            ("ws://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(stream_endpoint(given).unwrap(), expected, "{given}");
        }
        let err = stream_endpoint("stream.us1.signalfx.com").unwrap_err();
        assert!(err.to_string().contains("spec.provider.address"), "{err}");
    }

    #[test]
    fn events_split_across_chunks_and_lines_are_reassembled() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: da").is_empty());
        assert!(p.push(b"ta\r\ndata: {\"a\":\r\ndata: 1}\r\n").is_empty());
        let events = p.push(b"\r\n: keep-alive\n\ndata: x\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "data".into(),
                    data: "{\"a\":\n1}".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "x".into()
                },
            ]
        );
    }
}

//! The stream between the control plane and each `serin-proxy`.
//!
//! # Transport
//!
//! Plain HTTP/2 over cleartext TCP (prior knowledge, no TLS, no protobuf build): one long-lived
//! request per proxy, and a short one per acknowledgement, multiplexed on the same connection.
//! HTTP/1.1 with chunked encoding works too (useful with `curl`), but proxies use HTTP/2.
//!
//! # Subscribing
//!
//! ```text
//! GET /v1/watch?workload=<namespace>/<name>&proxy=<proxy id>
//! ```
//!
//! - `workload` says where the proxy runs; its namespace decides which names resolve (a bare
//!   Service name means a Service of that namespace) and which consumer routes apply.
//! - `proxy` identifies this proxy instance (unique per running proxy, e.g. `pod-name-<pid>-<n>`);
//!   a second subscription with the same id replaces the first.
//!
//! The response (`200`, `content-type: application/x-ndjson`) never ends on its own. Its body is a
//! sequence of [`ServerMessage`]s, each one JSON object on one line ending with `\n` (JSON
//! encoders escape newlines inside strings, so a raw `\n` only ever ends a message):
//!
//! ```text
//! {"type":"snapshot","version":41,"table":{"version":41,"routes":[...]}}
//! {"type":"heartbeat","version":41}
//! {"type":"snapshot","version":42,"table":{"version":42,"routes":[...]}}
//! ```
//!
//! - The first message is always a full snapshot of the current state. Every later change is
//!   another full snapshot (never a diff), so a proxy can apply each one on its own and a lost
//!   connection loses nothing a reconnect does not restore.
//! - Versions increase strictly within one control-plane run. A snapshot may skip versions (the
//!   control plane coalesces bursts and sends only the latest). After a control-plane restart the
//!   numbering may start lower; proxies apply whatever the current stream sends.
//! - A heartbeat is sent when nothing else was for [`HEARTBEAT_INTERVAL_SECS`]; a proxy that hears
//!   nothing for three intervals treats the stream as broken.
//! - Errors before the stream starts are answered with a 4xx status and a plain-text body naming
//!   the parameter that is wrong (`400` for a missing or malformed `workload`/`proxy`).
//!
//! # Acknowledging
//!
//! After applying (or refusing) a snapshot the proxy posts an [`Ack`]:
//!
//! ```text
//! POST /v1/ack
//! {"proxy":"<proxy id>","version":42}                       applied
//! {"proxy":"<proxy id>","version":42,"error":"<why>"}       refused (the proxy keeps its last table)
//! ```
//!
//! Answered `204` when recorded, `404` when no stream with that proxy id is open. The control
//! plane uses acks to say, per route, whether every subscribed proxy runs the latest version.
//!
//! # On a broken stream
//!
//! The proxy keeps serving its last applied table and reconnects with exponential backoff
//! ([`BACKOFF_MIN_MS`] doubling up to [`BACKOFF_MAX_MS`], with jitter); the first message on
//! the new stream brings it up to date.

use serde::{Deserialize, Serialize};

use crate::table::RouteTable;

/// Path of the subscription request.
pub const WATCH_PATH: &str = "/v1/watch";
/// Path of the acknowledgement request.
pub const ACK_PATH: &str = "/v1/ack";
/// Content type of the subscription response.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// Seconds of silence after which the control plane sends a heartbeat.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 10;
/// First reconnect delay.
pub const BACKOFF_MIN_MS: u64 = 100;
/// Largest reconnect delay.
pub const BACKOFF_MAX_MS: u64 = 5_000;
/// Longest message line a client accepts (a guard against a runaway peer, far above any real
/// table).
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// One message from the control plane to a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ServerMessage {
    /// The complete route table at `version` (its `table.version` is the same number).
    Snapshot {
        /// Snapshot version.
        version: u64,
        /// The table to enforce.
        table: RouteTable,
    },
    /// Nothing changed; the control plane is alive and its latest version is `version`.
    Heartbeat {
        /// Latest version sent on this stream.
        version: u64,
    },
}

/// A proxy's report on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ack {
    /// The proxy id given in the subscription.
    pub proxy: String,
    /// The snapshot version this is about.
    pub version: u64,
    /// Why the proxy refused the snapshot; absent when it applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A workload reference `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Workload name (deployment or process name).
    pub name: String,
}

/// Why a `namespace/name` workload string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid workload {input:?}: expected NAMESPACE/NAME, e.g. `test/podinfo` (lower-case letters, digits, `-`, `.`)"
)]
pub struct WorkloadError {
    input: String,
}

impl std::str::FromStr for Workload {
    type Err = WorkloadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || WorkloadError {
            input: s.to_string(),
        };
        let (ns, name) = s.split_once('/').ok_or_else(err)?;
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 253
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !ok(ns) || !ok(name) {
            return Err(err());
        }
        Ok(Workload {
            namespace: ns.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Encodes one message as a line (JSON + `\n`).
pub fn encode_line<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: every map key is a string.
    let mut out = serde_json::to_vec(msg).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Why a stream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A message was not valid JSON for [`ServerMessage`].
    #[error("bad message from control plane: {0}")]
    Json(#[from] serde_json::Error),
    /// A line grew past [`MAX_LINE_BYTES`].
    #[error("message longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
}

/// Splits a byte stream into [`ServerMessage`]s, whatever the chunk boundaries.
#[derive(Debug, Default)]
pub struct LineDecoder {
    buf: Vec<u8>,
}

impl LineDecoder {
    /// Appends received bytes and returns every complete message they finish, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<ServerMessage>, DecodeError> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let line = if self.buf.is_empty() {
                &rest[..pos]
            } else {
                self.buf.extend_from_slice(&rest[..pos]);
                &self.buf[..]
            };
            let trimmed = line.trim_ascii();
            if !trimmed.is_empty() {
                out.push(serde_json::from_slice(trimmed)?);
            }
            self.buf.clear();
            rest = &rest[pos + 1..];
        }
        if self.buf.len() + rest.len() > MAX_LINE_BYTES {
            return Err(DecodeError::TooLong);
        }
        self.buf.extend_from_slice(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_any_chunking() {
        let a = encode_line(&ServerMessage::Snapshot {
            version: 3,
            table: RouteTable {
                version: 3,
                routes: vec![],
            },
        });
        let b = encode_line(&ServerMessage::Heartbeat { version: 3 });
        let all: Vec<u8> = [a, b].concat();
        for split in 0..all.len() {
            let mut d = LineDecoder::default();
            let mut got = d.push(&all[..split]).unwrap();
            got.extend(d.push(&all[split..]).unwrap());
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[1], ServerMessage::Heartbeat { version: 3 });
        }
    }

    #[test]
    fn a_bad_line_is_an_error_not_a_panic() {
        let mut d = LineDecoder::default();
        assert!(d.push(b"{\"type\":\"nope\"}\n").is_err());
        assert!(d.push(b"not json\n").is_err());
    }

    #[test]
    fn acks_read_with_and_without_error() {
        let ok: Ack = serde_json::from_str(r#"{"proxy":"p","version":4}"#).unwrap();
        assert_eq!(ok.error, None);
        let bad: Ack = serde_json::from_str(r#"{"proxy":"p","version":4,"error":"x"}"#).unwrap();
        assert_eq!(bad.error.as_deref(), Some("x"));
    }

    #[test]
    fn workloads_parse_as_namespace_slash_name() {
        let w: Workload = "test/podinfo".parse().unwrap();
        assert_eq!(w.to_string(), "test/podinfo");
        for bad in ["podinfo", "/x", "x/", "Test/x", "a/b/c"] {
            assert!(bad.parse::<Workload>().is_err(), "{bad}");
        }
    }
}

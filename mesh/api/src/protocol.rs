//! The stream between the control plane and each `serin-proxy`.
//!
//! # Transport
//!
//! Plain HTTP/2 over cleartext TCP (prior knowledge, no TLS, no protobuf build): one long-lived
//! request per proxy. Its response body carries snapshots to the proxy and, in the duplex form
//! below, its request body carries the proxy's acknowledgements back, so one push and its ack
//! cost one DATA frame each way. HTTP/1.1 with chunked encoding works for the one-way form (useful
//! with `curl`), but proxies use HTTP/2.
//!
//! # Subscribing
//!
//! ```text
//! POST /v1/watch?workload=<namespace>/<name>&proxy=<proxy id>     duplex: acks in the request body
//! GET  /v1/watch?workload=<namespace>/<name>&proxy=<proxy id>     one-way: acks as POST /v1/ack
//! ```
//!
//! - `workload` says where the proxy runs; its namespace decides which names resolve (a bare
//!   Service name means a Service of that namespace) and which consumer routes apply.
//! - `proxy` identifies this proxy instance (unique per running proxy, e.g. `pod-name-<pid>-<n>`);
//!   a second subscription with the same id replaces the first.
//! - `aliases=1` (optional) says the proxy reads the compact table form below; without it the
//!   control plane sends one route per authority.
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
//!   nothing for three intervals treats the stream as broken. The same limit bounds connecting
//!   and the wait for the subscription's response head: a control plane that accepts and never
//!   answers is given up and dialled again.
//! - Compact tables (`aliases=1`): a Service is reachable under several authorities (`name`,
//!   `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`, its cluster IP) that all carry the
//!   same rules. Instead of repeating the route for each, the control plane sends it once with
//!   the other authorities in `"aliases":["podinfo.test","10.96.0.10"]`; the route applies
//!   unchanged to each of them. [`ServerMessage`]'s decoder expands such a route into one route
//!   per authority, so a proxy's table is the same either way (only the bytes on the wire and
//!   the work to decode them shrink, about fivefold for a Service with five authorities).
//! - Errors before the stream starts are answered with a 4xx status and a plain-text body naming
//!   the parameter that is wrong (`400` for a missing or malformed `workload`/`proxy`).
//!
//! # Acknowledging
//!
//! After applying (or refusing) a snapshot the proxy reports it. On a duplex (`POST`) stream it
//! writes a [`StreamAck`] line to its request body, which stays open as long as the stream:
//!
//! ```text
//! {"version":42}                       applied
//! {"version":42,"error":"<why>"}       refused (the proxy keeps its last table)
//! ```
//!
//! The proxy is the one the stream was opened for, so the line names none. A line that is not a
//! [`StreamAck`] is logged and counted as an error and the stream goes on (the next snapshot is
//! acked again). Closing the request body early is allowed: snapshots keep coming, and acks then go
//! the one-way route.
//!
//! On a one-way (`GET`) stream the proxy posts an [`Ack`] instead:
//!
//! ```text
//! POST /v1/ack
//! {"proxy":"<proxy id>","version":42}                       applied
//! {"proxy":"<proxy id>","version":42,"error":"<why>"}       refused
//! ```
//!
//! Answered `204` when recorded, `404` when no stream with that proxy id is open.
//!
//! The control plane uses acks to say, per route, whether every subscribed proxy runs the latest
//! version.
//!
//! # Compatibility
//!
//! The duplex form was added later. A control plane that predates it answers `POST /v1/watch`
//! with `405 Method Not Allowed`; the client in this crate then falls back to the one-way form
//! for that control plane. Proxies that only know the one-way form keep working unchanged.
//!
//! # On a broken stream
//!
//! The proxy keeps serving its last applied table and reconnects with exponential backoff
//! ([`BACKOFF_MIN_MS`] doubling up to [`BACKOFF_MAX_MS`], with jitter); the first message on
//! the new stream brings it up to date.

use serde::{Deserialize, Serialize};

use crate::table::{Authority, BackendDef, Route, RouteTable, Rule};

/// Path of the subscription request.
pub const WATCH_PATH: &str = "/v1/watch";
/// Path of the acknowledgement request.
pub const ACK_PATH: &str = "/v1/ack";
/// Query parameter by which a proxy asks for compact tables (routes with `aliases`).
pub const ALIASES_PARAM: &str = "aliases";
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
///
/// Deserialised by hand (see the `Deserialize` impl): serde's derive for an internally tagged
/// enum buffers the whole message into an intermediate tree before building the table, which
/// made decoding a snapshot cost about twice a direct parse, on every proxy for every push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
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

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // The same wire shape as the derived `Serialize` (`{"type":..,"version":..,"table":..}`),
        // read as one flat struct in whatever order the fields come.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        enum Kind {
            Snapshot,
            Heartbeat,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            #[serde(rename = "type")]
            kind: Kind,
            version: u64,
            #[serde(default)]
            table: Option<WireTable>,
        }
        let w = Wire::deserialize(d)?;
        match (w.kind, w.table) {
            (Kind::Snapshot, Some(table)) => Ok(ServerMessage::Snapshot {
                version: w.version,
                table: table.expand(),
            }),
            (Kind::Snapshot, None) => Err(D::Error::missing_field("table")),
            (Kind::Heartbeat, None) => Ok(ServerMessage::Heartbeat { version: w.version }),
            (Kind::Heartbeat, Some(_)) => {
                Err(D::Error::unknown_field("table", &["type", "version"]))
            }
        }
    }
}

/// A route table as it travels in a snapshot: [`RouteTable`]'s shape, where a route may also
/// carry `aliases` (see the module docs). Decoding only; [`encode_snapshot`] writes it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireTable {
    #[serde(default)]
    version: u64,
    #[serde(default)]
    routes: Vec<WireRoute>,
}

/// [`Route`]'s fields plus `aliases`. Spelled out rather than `#[serde(flatten)]`ed, since
/// flattening buffers every route into an intermediate tree first (and loses
/// `deny_unknown_fields`); the round-trip tests catch a field added to [`Route`] but not here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireRoute {
    authority: Authority,
    #[serde(default)]
    aliases: Vec<Authority>,
    #[serde(default)]
    backends: Vec<BackendDef>,
    rules: Vec<Rule>,
}

impl WireTable {
    /// One route per authority, in the order they were written.
    fn expand(self) -> RouteTable {
        let n = self.routes.iter().map(|r| 1 + r.aliases.len()).sum();
        let mut routes = Vec::with_capacity(n);
        for r in self.routes {
            let WireRoute {
                authority,
                aliases,
                backends,
                rules,
            } = r;
            // The authority first, then its aliases, as the control plane listed them; the
            // last copy takes the decoded values instead of cloning them.
            let mut current = authority;
            for next in aliases {
                routes.push(Route {
                    authority: std::mem::replace(&mut current, next),
                    backends: backends.clone(),
                    rules: rules.clone(),
                });
            }
            routes.push(Route {
                authority: current,
                backends,
                rules,
            });
        }
        RouteTable {
            version: self.version,
            routes,
        }
    }
}

/// The borrowed twin of [`WireRoute`] for encoding.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRouteRef<'a> {
    authority: &'a Authority,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    aliases: Vec<&'a Authority>,
    #[serde(skip_serializing_if = "<[BackendDef]>::is_empty")]
    backends: &'a [BackendDef],
    rules: &'a [Rule],
}

#[derive(Serialize)]
struct WireTableRef<'a> {
    version: u64,
    routes: Vec<WireRouteRef<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "snapshot")]
struct WireSnapshotRef<'a> {
    version: u64,
    table: WireTableRef<'a>,
}

/// Encodes a snapshot message as a line. With `aliases` (the proxy asked for compact tables),
/// each run of consecutive routes that differ only in their authority is written once, the
/// later authorities as its `aliases`; without, exactly as [`ServerMessage::Snapshot`]
/// serialises. Either decodes to `table` again.
pub fn encode_snapshot(version: u64, table: &RouteTable, aliases: bool) -> Vec<u8> {
    let mut routes: Vec<WireRouteRef<'_>> = Vec::with_capacity(table.routes.len());
    for r in &table.routes {
        // Only neighbours are compared: the control plane writes a Service's authorities one
        // after another, and comparing every pair would cost quadratic time on big tables.
        if aliases
            && let Some(last) = routes.last_mut()
            && last.rules == r.rules.as_slice()
            && last.backends == r.backends.as_slice()
        {
            last.aliases.push(&r.authority);
            continue;
        }
        routes.push(WireRouteRef {
            authority: &r.authority,
            aliases: Vec::new(),
            backends: &r.backends,
            rules: &r.rules,
        });
    }
    encode_line(&WireSnapshotRef {
        version,
        table: WireTableRef {
            version: table.version,
            routes,
        },
    })
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

/// A proxy's report on one snapshot, written to the request body of a duplex stream (the proxy
/// is the stream's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamAck {
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
    /// A line was not valid JSON for the expected message type.
    #[error("bad message: {0}")]
    Json(#[from] serde_json::Error),
    /// A line grew past [`MAX_LINE_BYTES`].
    #[error("message longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
}

/// Splits a byte stream into messages of type `T` (one JSON object per line), whatever the chunk
/// boundaries: [`ServerMessage`]s on the proxy side, [`StreamAck`]s on the control-plane side.
#[derive(Debug)]
pub struct LineDecoder<T = ServerMessage> {
    buf: Vec<u8>,
    _msg: std::marker::PhantomData<fn() -> T>,
}

impl<T> Default for LineDecoder<T> {
    fn default() -> Self {
        LineDecoder {
            buf: Vec::new(),
            _msg: std::marker::PhantomData,
        }
    }
}

/// One JSON line. Checking the whole line's UTF-8 at once and parsing it as `str` is cheaper
/// than `from_slice`, which checks each string on its own (measured: a tenth of a snapshot's
/// decoding time); a line that is not UTF-8 goes to `from_slice` for its precise error.
fn parse<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(line) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(line),
    }
}

impl<T: serde::de::DeserializeOwned> LineDecoder<T> {
    /// Appends received bytes and returns every complete message they finish, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<T>, DecodeError> {
        let mut out = Vec::new();
        self.push_each(chunk, |line| {
            out.push(parse(line)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Same as [`LineDecoder::push`], but hands each complete line's outcome to `f` instead of
    /// stopping at the first bad line: one bad line costs only itself (for peers that want to go
    /// on after logging it). The line is consumed either way.
    pub fn push_lossy(
        &mut self,
        chunk: &[u8],
        mut f: impl FnMut(Result<T, serde_json::Error>),
    ) -> Result<(), DecodeError> {
        self.push_each(chunk, |line| {
            f(parse(line));
            Ok(())
        })
    }

    fn push_each(
        &mut self,
        chunk: &[u8],
        mut f: impl FnMut(&[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let line = if self.buf.is_empty() {
                &rest[..pos]
            } else {
                self.buf.extend_from_slice(&rest[..pos]);
                &self.buf[..]
            };
            let trimmed = line.trim_ascii();
            let result = if trimmed.is_empty() {
                Ok(())
            } else {
                f(trimmed)
            };
            self.buf.clear();
            result?;
            rest = &rest[pos + 1..];
        }
        if self.buf.len() + rest.len() > MAX_LINE_BYTES {
            return Err(DecodeError::TooLong);
        }
        self.buf.extend_from_slice(rest);
        Ok(())
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
            let mut d: LineDecoder = LineDecoder::default();
            let mut got = d.push(&all[..split]).unwrap();
            got.extend(d.push(&all[split..]).unwrap());
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[1], ServerMessage::Heartbeat { version: 3 });
        }
    }

    #[test]
    fn messages_read_back_as_written_whatever_the_field_order() {
        let snap = ServerMessage::Snapshot {
            version: 9,
            table: RouteTable {
                version: 9,
                routes: vec![],
            },
        };
        let line = encode_line(&snap);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"type\":\"snapshot\",\"version\":9,\"table\":{\"version\":9,\"routes\":[]}}\n"
        );
        let back: ServerMessage = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, snap);
        let reordered: ServerMessage = serde_json::from_str(
            r#"{"table":{"version":9,"routes":[]},"version":9,"type":"snapshot"}"#,
        )
        .unwrap();
        assert_eq!(reordered, snap);
        let hb: ServerMessage =
            serde_json::from_str(r#"{"version":3,"type":"heartbeat"}"#).unwrap();
        assert_eq!(hb, ServerMessage::Heartbeat { version: 3 });
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        let err = |s: &str| {
            serde_json::from_str::<ServerMessage>(s)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"type":"snapshot","version":1}"#).contains("missing field `table`"));
        assert!(
            err(r#"{"type":"heartbeat","version":1,"table":{"version":1,"routes":[]}}"#)
                .contains("unknown field `table`")
        );
        assert!(err(r#"{"type":"diff","version":1}"#).contains("unknown variant `diff`"));
        assert!(err(r#"{"type":"heartbeat","version":1,"x":2}"#).contains("unknown field `x`"));
        assert!(err(r#"{"type":"heartbeat"}"#).contains("missing field `version`"));
    }

    /// Every field a route can carry, on three authorities of one Service (consecutive, same
    /// rules), one other Service, and a fourth authority of the first that is not adjacent.
    fn service_table() -> RouteTable {
        let one = r#"
  backends:
    - name: shadow
      labels: { version: v0 }
      endpoints: ["127.0.0.1:19003"]
  rules:
    - name: insiders
      matches:
        - path: { type: PathPrefix, value: /api }
          method: GET
          headers: [{ name: x-canary, value: insider }]
          queryParams: [{ type: RegularExpression, name: q, value: "^a.*" }]
          cookies: [{ name: canary, value: always }]
      backends:
        - { name: canary, weight: 1, labels: { version: v2 }, endpoints: ["127.0.0.1:19002"] }
      responseHeaders: { set: [{ name: set-cookie, value: "canary=always" }] }
    - backends:
        - { name: primary, weight: 90, endpoints: ["127.0.0.1:19001"] }
        - { name: canary, weight: 10 }
      mirror: { backend: shadow, percent: 5 }
      timeout: 1m30s
"#;
        let two = r#"
  rules:
    - backends: [{ name: other, weight: 1, endpoints: ["127.0.0.1:19005"] }]
"#;
        // The snippets are written at the left margin; list items nest them two deeper.
        let (one, two) = (one.replace('\n', "\n  "), two.replace('\n', "\n  "));
        let yaml = format!(
            "version: 4\nroutes:\n  - authority: web\n{one}\n  - authority: web.test\n{one}\n  - authority: web.test.svc:8080\n{one}\n  - authority: other\n{two}\n  - authority: 10.96.0.7\n{one}"
        );
        serde_norway::from_str(&yaml).unwrap()
    }

    #[test]
    fn compact_snapshots_decode_to_the_same_table() {
        let table = service_table();
        assert!(table.validate().is_ok());
        let full = encode_snapshot(4, &table, false);
        let compact = encode_snapshot(4, &table, true);
        // The full form is exactly what the derived encoding writes.
        assert_eq!(
            full,
            encode_line(&ServerMessage::Snapshot {
                version: 4,
                table: table.clone(),
            })
        );
        let text = std::str::from_utf8(&compact).unwrap();
        assert!(
            text.contains(r#""authority":"web","aliases":["web.test","web.test.svc:8080"]"#),
            "{text}"
        );
        // Only neighbours merge: the cluster IP after `other` is written again.
        assert_eq!(text.matches(r#""aliases""#).count(), 1, "{text}");
        // Two of the four copies of the big route are gone.
        assert!(
            compact.len() * 5 < full.len() * 3,
            "{} vs {}",
            compact.len(),
            full.len()
        );
        for line in [full, compact] {
            let mut d: LineDecoder = LineDecoder::default();
            let got = d.push(&line).unwrap();
            assert_eq!(
                got,
                vec![ServerMessage::Snapshot {
                    version: 4,
                    table: table.clone(),
                }]
            );
        }
    }

    #[test]
    fn compact_routes_are_checked_like_routes() {
        let decode = |s: &str| {
            serde_json::from_str::<ServerMessage>(s)
                .map_err(|e| e.to_string())
                .map(|_| ())
        };
        let ok = r#"{"type":"snapshot","version":1,"table":{"version":1,"routes":[{"authority":"a","aliases":["b:80"],"rules":[]}]}}"#;
        assert_eq!(decode(ok), Ok(()));
        let bad_alias = r#"{"type":"snapshot","version":1,"table":{"routes":[{"authority":"a","aliases":["b:x:y"],"rules":[]}]}}"#;
        assert!(decode(bad_alias).unwrap_err().contains("invalid authority"));
        let unknown = r#"{"type":"snapshot","version":1,"table":{"routes":[{"authority":"a","rules":[],"weight":3}]}}"#;
        assert!(
            decode(unknown)
                .unwrap_err()
                .contains("unknown field `weight`")
        );
        let no_rules = r#"{"type":"snapshot","version":1,"table":{"routes":[{"authority":"a"}]}}"#;
        assert!(
            decode(no_rules)
                .unwrap_err()
                .contains("missing field `rules`")
        );
    }

    #[test]
    fn a_bad_line_is_an_error_not_a_panic() {
        let mut d: LineDecoder = LineDecoder::default();
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
    fn stream_acks_name_no_proxy_and_read_with_and_without_error() {
        let ok = StreamAck {
            version: 7,
            error: None,
        };
        assert_eq!(encode_line(&ok), b"{\"version\":7}\n");
        let bad: StreamAck = serde_json::from_str(r#"{"version":8,"error":"x"}"#).unwrap();
        assert_eq!(bad.error.as_deref(), Some("x"));
        // An ack naming a proxy belongs to `POST /v1/ack`, not to a stream.
        assert!(serde_json::from_str::<StreamAck>(r#"{"proxy":"p","version":8}"#).is_err());
    }

    #[test]
    fn a_bad_ack_line_costs_only_itself() {
        let mut d: LineDecoder<StreamAck> = LineDecoder::default();
        let mut got = Vec::new();
        d.push_lossy(b"{\"version\":1}\nnot json\n{\"vers", |r| got.push(r.ok()))
            .unwrap();
        d.push_lossy(b"ion\":2}\n", |r| got.push(r.ok())).unwrap();
        let versions: Vec<Option<u64>> =
            got.iter().map(|a| a.as_ref().map(|a| a.version)).collect();
        assert_eq!(versions, vec![Some(1), None, Some(2)]);
    }

    #[test]
    fn a_runaway_line_is_refused() {
        let mut d: LineDecoder<StreamAck> = LineDecoder::default();
        let chunk = vec![b'x'; MAX_LINE_BYTES / 2 + 1];
        d.push(&chunk).unwrap();
        assert!(matches!(d.push(&chunk), Err(DecodeError::TooLong)));
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

//! The proxy side of the [`protocol`](crate::protocol): subscribe over HTTP/2, hand each snapshot
//! to a [`Sink`], acknowledge it, and reconnect with backoff when the stream breaks.
//!
//! Acks go on the stream itself (a duplex `POST /v1/watch`: one DATA frame per ack on the
//! request body). A control plane that answers that with `405` predates the duplex form; for it
//! the client falls back to `GET /v1/watch` plus one `POST /v1/ack` per snapshot.
//!
//! The client never clears the proxy's table: on any failure it only reconnects, so the proxy
//! keeps routing with the last table it applied.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

use crate::protocol::{
    ACK_PATH, ALIASES_PARAM, Ack, BACKOFF_MAX_MS, BACKOFF_MIN_MS, CONTENT_TYPE,
    HEARTBEAT_INTERVAL_SECS, LineDecoder, ServerMessage, StreamAck, WATCH_PATH, Workload,
    encode_line,
};
use crate::table::RouteTable;

/// Where to connect and who we are.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Control-plane base URL, `http://host:port` (cleartext HTTP/2).
    pub url: Uri,
    /// The workload this proxy serves.
    pub workload: Workload,
    /// This proxy's id (see [`default_proxy_id`]).
    pub proxy_id: String,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Silence after which the stream is considered broken.
    pub idle_timeout: Duration,
    /// Send acks on the stream (duplex `POST /v1/watch`, the default) or as one `POST /v1/ack`
    /// each. The client falls back to the latter by itself when the control plane predates the
    /// duplex form.
    pub acks_on_stream: bool,
}

impl ClientConfig {
    /// Defaults from the protocol constants.
    pub fn new(url: Uri, workload: Workload, proxy_id: String) -> Self {
        ClientConfig {
            url,
            workload,
            proxy_id,
            backoff_min: Duration::from_millis(BACKOFF_MIN_MS),
            backoff_max: Duration::from_millis(BACKOFF_MAX_MS),
            idle_timeout: Duration::from_secs(3 * HEARTBEAT_INTERVAL_SECS),
            acks_on_stream: true,
        }
    }
}

/// Why a control-plane URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid control-plane URL {input:?}: {reason} (expected http://HOST:PORT)")]
pub struct UrlError {
    input: String,
    reason: &'static str,
}

/// Parses and checks a control-plane URL (`http://host:port`; `https` is not supported).
pub fn parse_url(input: &str) -> Result<Uri, UrlError> {
    let err = |reason| UrlError {
        input: input.to_string(),
        reason,
    };
    let uri: Uri = input.parse().map_err(|_| err("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(err("scheme must be http (cleartext HTTP/2)"));
    }
    if uri.host().is_none() {
        return Err(err("no host"));
    }
    Ok(uri)
}

/// A proxy id unique per process and call: `<pod>-<pid>-<n>`, `<pod>` as [`proxy_id_prefix`]
/// finds it in the environment.
pub fn default_proxy_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let host = proxy_id_prefix(|name| std::env::var(name).ok());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a proxy id starts with: the pod's name when known (`SERIN_POD_NAME`, which the
/// injector sets from `metadata.name`, then `POD_NAME`), else `HOSTNAME`, else `proxy`. The
/// pod's name comes first because `serin check --proxy` finds each meshed pod's proxy by it,
/// and a pod's `HOSTNAME` is not always its name (`spec.hostname`, or a name longer than 63
/// characters cut short).
pub fn proxy_id_prefix(var: impl Fn(&str) -> Option<String>) -> String {
    ["SERIN_POD_NAME", "POD_NAME", "HOSTNAME"]
        .into_iter()
        .find_map(|name| var(name).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "proxy".into())
}

/// What the client reports to its owner.
pub trait Sink: Send {
    /// Apply a snapshot. `Err` refuses it (the reason is sent to the control plane) and the
    /// previous table must stay in force.
    fn apply(&mut self, table: RouteTable) -> Result<(), String>;

    /// The stream went up (`true`) or down (`false`, with the reason). Default: log it.
    fn connection(&mut self, up: bool, detail: &str) {
        if up {
            tracing::info!(detail, "control-plane stream up");
        } else {
            tracing::warn!(detail, "control-plane stream down; keeping the last table");
        }
    }
}

/// Why one stream ended (the client then reconnects).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// HTTP/2 failed.
    #[error("http/2: {0}")]
    Http(#[from] hyper::Error),
    /// The control plane answered the subscription with an error status.
    #[error("control plane answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: http::StatusCode,
        /// Its body.
        body: String,
    },
    /// The stream ended.
    #[error("stream ended")]
    Ended,
    /// Nothing arrived for the idle timeout.
    #[error("no message for {0:?}")]
    Idle(Duration),
    /// Connecting, the answer to the subscription or to a one-way ack took longer than the idle timeout (a
    /// hung control plane, or one gone while the kernel still held the socket).
    #[error("{stage}: no answer within {after:?}")]
    Setup {
        /// What was waited for: `connect`, `subscribe` or (one-way form) `ack`.
        stage: &'static str,
        /// The limit (the idle timeout).
        after: Duration,
    },
    /// A message could not be decoded.
    #[error(transparent)]
    Decode(#[from] crate::protocol::DecodeError),
    /// The request could not be built (bad URL pieces).
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// The control plane does not take acks on the stream (it answered the duplex subscription
    /// with `405`); the client subscribes again the one-way way.
    #[error("control plane predates acks on the stream; falling back to POST {ACK_PATH}")]
    NoDuplex,
}

/// Runs forever: subscribe, apply, ack, reconnect. Cancel by dropping the future (abort its task).
pub async fn run<S: Sink>(mut cfg: ClientConfig, mut sink: S) {
    let mut delay = cfg.backoff_min;
    let duplex = cfg.acks_on_stream;
    loop {
        let mut got_any = false;
        let err = stream_once(&cfg, &mut sink, &mut got_any).await;
        if matches!(err, StreamError::NoDuplex) {
            // Not a broken stream: the same control plane, asked the way it understands.
            tracing::info!(url = %cfg.url, "{err}");
            cfg.acks_on_stream = false;
            continue;
        }
        // The next stream may reach a restarted (perhaps upgraded) control plane: ask for
        // duplex again; an old one costs a single extra `405`.
        cfg.acks_on_stream = duplex;
        sink.connection(false, &err.to_string());
        if got_any {
            // The stream worked; start the backoff over.
            delay = cfg.backoff_min;
        }
        tokio::time::sleep(jitter(delay)).await;
        delay = (delay * 2).min(cfg.backoff_max);
    }
}

/// `d` plus up to 20 % (clock-derived; spreading reconnects needs no cryptographic randomness).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 5000.0)
}

fn authority(url: &Uri) -> String {
    url.authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "localhost".into())
}

/// One subscription, until it breaks. Returns why it ended.
async fn stream_once<S: Sink>(cfg: &ClientConfig, sink: &mut S, got_any: &mut bool) -> StreamError {
    match stream_inner(cfg, sink, got_any).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn stream_inner<S: Sink>(
    cfg: &ClientConfig,
    sink: &mut S,
    got_any: &mut bool,
) -> Result<std::convert::Infallible, StreamError> {
    let host = cfg.url.host().unwrap_or("localhost");
    let port = cfg.url.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // Until the subscription is answered nothing else bounds the waits below (the idle timeout
    // covers the stream once it runs): without a limit a control plane that accepts and never
    // answers, or a connect the network swallows, would hold the client (and its reconnects)
    // for ever.
    let limit = cfg.idle_timeout;
    let setup = |stage| StreamError::Setup {
        stage,
        after: limit,
    };
    let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| setup("connect"))?
        .map_err(StreamError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) = tokio::time::timeout(
        limit,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)),
    )
    .await
    .map_err(|_| setup("subscribe"))??;
    let conn_task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "control-plane connection closed");
        }
    });
    // Ends the connection task when this function returns, however it returns.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _guard = AbortOnDrop(conn_task);

    let base = cfg.url.path().trim_end_matches('/');
    let uri = format!(
        "http://{}{base}{WATCH_PATH}?workload={}&proxy={}&{ALIASES_PARAM}=1",
        authority(&cfg.url),
        query_escape(&cfg.workload.to_string()),
        query_escape(&cfg.proxy_id)
    );
    // Duplex: the request body stays open and carries one ack line per snapshot.
    let (acks, req) = if cfg.acks_on_stream {
        let (tx, rx) = mpsc::unbounded_channel();
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Either::Right(AckBody { rx }))?;
        (Some(tx), req)
    } else {
        let req = Request::get(uri).body(Either::Left(Full::new(Bytes::new())))?;
        (None, req)
    };
    let resp = tokio::time::timeout(limit, async {
        send.ready().await?;
        send.send_request(req).await
    })
    .await
    .map_err(|_| setup("subscribe"))??;
    if !resp.status().is_success() {
        let status = resp.status();
        if status == StatusCode::METHOD_NOT_ALLOWED && acks.is_some() {
            return Err(StreamError::NoDuplex);
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(StreamError::Status { status, body });
    }
    let mut body = resp.into_body();
    let mut decoder: LineDecoder = LineDecoder::default();
    loop {
        let frame = match tokio::time::timeout(cfg.idle_timeout, body.frame()).await {
            Err(_) => return Err(StreamError::Idle(cfg.idle_timeout)),
            Ok(None) => return Err(StreamError::Ended),
            Ok(Some(frame)) => frame?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for msg in decoder.push(&data)? {
            match msg {
                ServerMessage::Snapshot { version, table } => {
                    if !*got_any {
                        *got_any = true;
                        sink.connection(true, &format!("subscribed as {}", cfg.proxy_id));
                    }
                    let error = sink.apply(table).err();
                    let line = Bytes::from(encode_line(&StreamAck {
                        version,
                        error: error.clone(),
                    }));
                    // If the control plane stopped reading our acks (the request side of the
                    // stream is closed), the snapshots still come: ack the one-way way.
                    if acks.as_ref().is_none_or(|tx| tx.send(line).is_err()) {
                        let ack = Ack {
                            proxy: cfg.proxy_id.clone(),
                            version,
                            error,
                        };
                        send_ack(&mut send, cfg, base, &ack).await?;
                    }
                }
                ServerMessage::Heartbeat { .. } => {}
            }
        }
    }
}

/// The request body of a duplex stream: ack lines as the client produces them. It never ends
/// while the client holds the sender, so the request side stays open as long as the stream.
struct AckBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl hyper::body::Body for AckBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

type RequestBody = Either<Full<Bytes>, AckBody>;

async fn send_ack(
    send: &mut hyper::client::conn::http2::SendRequest<RequestBody>,
    cfg: &ClientConfig,
    base: &str,
    ack: &Ack,
) -> Result<(), StreamError> {
    let req = Request::post(format!("http://{}{base}{ACK_PATH}", authority(&cfg.url)))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Either::Left(Full::new(Bytes::from(encode_line(ack)))))?;
    // Bounded like the subscription: the stream is not read while an ack waits.
    let resp = tokio::time::timeout(cfg.idle_timeout, async {
        send.ready().await?;
        send.send_request(req).await
    })
    .await
    .map_err(|_| StreamError::Setup {
        stage: "ack",
        after: cfg.idle_timeout,
    })??;
    if !resp.status().is_success() {
        // A rejected ack is not worth dropping the stream for: the next snapshot acks again.
        tracing::warn!(status = %resp.status(), version = ack.version, "control plane refused the ack");
    }
    Ok(())
}

/// Percent-encodes a query value (ids and workloads are plain, but be safe).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_http_with_a_host() {
        assert!(parse_url("http://127.0.0.1:8086").is_ok());
        assert!(parse_url("https://cp:8086").is_err());
        assert!(parse_url("cp:8086").is_err());
        assert!(parse_url("").is_err());
    }

    #[test]
    fn proxy_ids_are_unique_within_a_process() {
        assert_ne!(default_proxy_id(), default_proxy_id());
    }

    #[test]
    fn a_proxy_id_starts_with_the_pods_name_even_when_its_hostname_differs() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_string())
            }
        };
        // An injected pod with `spec.hostname: db` (its HOSTNAME) named web-7d9f-abcde.
        assert_eq!(
            proxy_id_prefix(env(&[
                ("HOSTNAME", "db"),
                ("SERIN_POD_NAME", "web-7d9f-abcde")
            ])),
            "web-7d9f-abcde"
        );
        assert_eq!(
            proxy_id_prefix(env(&[("HOSTNAME", "db"), ("POD_NAME", "web-1")])),
            "web-1"
        );
        assert_eq!(
            proxy_id_prefix(env(&[("HOSTNAME", "laptop"), ("SERIN_POD_NAME", "")])),
            "laptop"
        );
        assert_eq!(proxy_id_prefix(env(&[])), "proxy");
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }
}

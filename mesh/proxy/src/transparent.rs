//! Transparent mode: serving connections that `serin-proxy init`'s iptables rules redirected.
//!
//! The kernel keeps each redirected connection's original destination; `SO_ORIGINAL_DST`
//! (through `socket2`) reads it back. The first bytes the client sends are looked at without
//! consuming them (`peek`):
//!
//! - HTTP/1 (a method token and a request head) or the HTTP/2 preface, for a destination the
//!   route table knows (the `Host`, or the original `ip:port` such as a Service's cluster IP):
//!   served by the same HTTP code as the explicit listener, with weights, matches and mirrors.
//! - Anything else, an unknown destination, or nothing at all within the detection timeout
//!   (protocols where the server speaks first: MySQL, SMTP, ...): forwarded byte for byte to
//!   the original destination and counted in the `tcp_*` metrics.
//!
//! IPv6 connections (redirected by `init`'s ip6tables rules to the listeners' IPv6 twins) are
//! served the same way: a Service's IPv6 cluster IP is routed when the table lists it.
//!
//! Inbound, the app is reached at `127.0.0.1:<original port>` (`[::1]` for IPv6, see
//! [`app_address`]); HTTP is counted with
//! `direction="inbound"` like the explicit inbound listener. A connection that was not
//! redirected (someone dialled the listener itself) is served as the explicit listener would.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::balance::Endpoint;
use crate::forward::{self, Shared};
use crate::io::{CountingIo, TcpObserver};
use crate::metrics::TcpMetrics;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes looked at to find the request head's `Host`; a longer head is served as HTTP only
/// when the original destination is known.
const PEEK: usize = 4096;
/// Longest method token taken for HTTP/1 (`OPTIONS`, `CONNECT`, `PROPFIND` fit).
const MAX_METHOD: usize = 16;

/// What a connection's first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1 request head, with its `Host` when the head was complete and carried one.
    Http1 {
        /// The `Host` header.
        host: Option<String>,
    },
    /// The HTTP/2 connection preface.
    H2,
    /// Not HTTP (or nothing sent in time): bytes are relayed as they are.
    Opaque,
}

/// Classifies the first bytes of a connection; None when more bytes are needed to tell.
/// `more_may_come` is false when the client closed or the look-ahead buffer is full.
pub fn detect(prefix: &[u8], more_may_come: bool) -> Option<Detected> {
    if prefix.is_empty() {
        return (!more_may_come).then_some(Detected::Opaque);
    }
    let undecided = |d: Detected| if more_may_come { None } else { Some(d) };
    if prefix.len() >= H2_PREFACE.len() && prefix.starts_with(H2_PREFACE) {
        return Some(Detected::H2);
    }
    if H2_PREFACE.starts_with(prefix) {
        return undecided(Detected::Opaque);
    }
    let method_len = prefix
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-')
        .count();
    if method_len == 0 || method_len > MAX_METHOD {
        return Some(Detected::Opaque);
    }
    match prefix.get(method_len) {
        None => return undecided(Detected::Opaque),
        Some(b' ') => {}
        Some(_) => return Some(Detected::Opaque),
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(prefix) {
        Ok(httparse::Status::Complete(_)) => {
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|h| h.trim().to_string());
            Some(Detected::Http1 { host })
        }
        // The head goes on past the look-ahead: HTTP still, but no Host to go by.
        Ok(httparse::Status::Partial) => undecided(Detected::Http1 { host: None }),
        // More headers than the look-ahead parses: HTTP, Host unknown.
        Err(httparse::Error::TooManyHeaders) => Some(Detected::Http1 { host: None }),
        Err(_) => Some(Detected::Opaque),
    }
}

/// Looks at the client's first bytes, waiting at most `timeout` for enough of them.
async fn sniff(stream: &TcpStream, timeout: Duration) -> Detected {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; PEEK];
    let mut last = usize::MAX;
    // Only to count what a non-blocking peek sees (the bytes are read with `buf`).
    let mut probe = vec![std::mem::MaybeUninit::<u8>::uninit(); PEEK];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return Detected::Opaque,
        };
        let more = n > 0 && n < buf.len();
        if let Some(d) = detect(&buf[..n], more) {
            return d;
        }
        if n == last {
            // `peek` returns at once while unread bytes wait, so it cannot wait for more (a
            // loop looking again every millisecond cost 200 clients holding half a head a
            // fifth of a core). Mark the socket not readable, so `readable` waits for the
            // next bytes to arrive; bytes that came in between are seen by one more look.
            let _ = stream.try_io(tokio::io::Interest::READABLE, || {
                Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
            });
            let now = socket2::SockRef::from(stream).peek(&mut probe);
            if matches!(now, Ok(k) if k == n) {
                let waited = tokio::time::timeout_at(deadline, stream.readable()).await;
                if waited.is_err() {
                    return detect(&buf[..n], false).unwrap_or(Detected::Opaque);
                }
            }
        }
        last = n;
    }
}

/// The original destination of a redirected connection; None when it was not redirected.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = socket2::SockRef::from(stream);
    let orig = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    let orig = orig.ok()?.as_socket()?;
    (orig != local).then_some(orig)
}

/// Where a captured inbound connection to `original` is handed to the app: loopback of the
/// same family, on the original port (`127.0.0.1` for IPv4, `[::1]` for IPv6). Keeping the
/// family keeps the app's view what it is without the mesh: an app reachable over IPv6 has a
/// socket that takes IPv6 (`[::]`, which takes `[::1]`), while an app listening on
/// `0.0.0.0` only never got IPv6 connections and must not start getting them through the
/// proxy; an app with separate IPv4 and IPv6 sockets gets each family on its own socket.
pub fn app_address(original: SocketAddr) -> SocketAddr {
    let ip: IpAddr = match original {
        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, original.port())
}

/// Which side of the pod a transparent listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The app's own connections to the world.
    Outbound,
    /// Connections to the app.
    Inbound,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Everything one transparent listener's connections share.
pub(crate) struct Listener {
    pub shared: Arc<Shared>,
    pub direction: Direction,
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
    pub src: Arc<TcpMetrics>,
    pub dst: Arc<TcpMetrics>,
    /// Inbound: the app per loopback address and original port (kept so its upstream
    /// connections are pooled).
    pub apps: Mutex<HashMap<SocketAddr, Arc<Endpoint>>>,
}

impl Listener {
    pub(crate) fn new(
        shared: Arc<Shared>,
        direction: Direction,
        detect: Duration,
        connect: Duration,
    ) -> Self {
        let registry = shared.registry.clone();
        Listener {
            src: registry.tcp(direction.label(), "src"),
            dst: registry.tcp(direction.label(), "dst"),
            shared,
            direction,
            detect_timeout: detect,
            connect_timeout: connect,
            apps: Mutex::new(HashMap::new()),
        }
    }

    fn app(&self, original: SocketAddr) -> Arc<Endpoint> {
        let at = app_address(original);
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.entry(at)
            .or_insert_with(|| Arc::new(Endpoint::new(at)))
            .clone()
    }

    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        stop: watch::Receiver<bool>,
        h2: Arc<serin_http1::H2Server>,
    ) {
        let shared = self.shared.clone();
        let Some(dst) = original_dst(&stream) else {
            // Not redirected: the listener was dialled directly, as in explicit mode.
            match self.direction {
                Direction::Outbound => {
                    let handler = move |req| forward::outbound(shared.clone(), req);
                    serin_http1::serve_connection(
                        stream,
                        self.src.clone() as Arc<dyn TcpObserver>,
                        stop,
                        h2,
                        handler,
                    )
                    .await
                }
                Direction::Inbound => {
                    let handler = move |req| forward::inbound(shared.clone(), req);
                    serin_http1::serve_connection(
                        stream,
                        self.src.clone() as Arc<dyn TcpObserver>,
                        stop,
                        h2,
                        handler,
                    )
                    .await
                }
            }
            return;
        };
        let detected = sniff(&stream, self.detect_timeout).await;
        match self.direction {
            Direction::Outbound => {
                let dst_authority: Arc<str> = dst.to_string().into();
                let table = shared.table.compiled();
                let known = |a: &str| table.route(a).is_some();
                let http = match &detected {
                    Detected::H2 => known(&dst_authority),
                    Detected::Http1 { host } => {
                        host.as_deref().is_some_and(known) || known(&dst_authority)
                    }
                    Detected::Opaque => false,
                };
                drop(table);
                tracing::debug!(%dst, ?detected, http, "captured outbound connection");
                if http {
                    let handler = move |req| {
                        forward::outbound_via(shared.clone(), Some(dst_authority.clone()), req)
                    };
                    serin_http1::serve_connection(
                        stream,
                        self.src.clone() as Arc<dyn TcpObserver>,
                        stop,
                        h2,
                        handler,
                    )
                    .await
                } else {
                    self.opaque(stream, dst).await
                }
            }
            Direction::Inbound => {
                let app = self.app(dst);
                tracing::debug!(%dst, ?detected, "captured inbound connection");
                if detected == Detected::Opaque || shared.inbound.is_none() {
                    self.opaque(stream, app.addr).await
                } else {
                    let handler =
                        move |req| forward::inbound_to(shared.clone(), Some(app.clone()), req);
                    serin_http1::serve_connection(
                        stream,
                        self.src.clone() as Arc<dyn TcpObserver>,
                        stop,
                        h2,
                        handler,
                    )
                    .await
                }
            }
        }
    }

    /// Relays bytes both ways until either side closes.
    async fn opaque(&self, client: TcpStream, to: SocketAddr) {
        let mut client = CountingIo::new(client, self.src.clone() as Arc<dyn TcpObserver>);
        let upstream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(to)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%to, error = %e, "opaque connect failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%to, "opaque connect timed out");
                    return;
                }
            };
        let _ = upstream.set_nodelay(true);
        let mut upstream = CountingIo::new(upstream, self.dst.clone() as Arc<dyn TcpObserver>);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            // One side reset the connection (or it failed): the other gets a reset too, as it
            // would without the proxy. Closed with a FIN instead, it would take what it got so
            // far for the whole stream.
            for side in [client.get_ref(), upstream.get_ref()] {
                let _ = side.set_zero_linger();
            }
            tracing::debug!(%to, error = %e, "opaque connection ended with an error");
        }
    }
}

/// A transparent listener: accepts (while `limit` has permits, shared by the IPv4 socket and its
/// IPv6 twin) until told to stop, then
/// waits up to `drain` for its connections. Returns whether every connection finished in time.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<Listener>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    h2_opts: serin_http1::H2Options,
) -> bool {
    let h2 = serin_http1::H2Server::new(h2_opts);
    let connections = crate::server::Connections::new();
    let conn_stop = stop.clone();
    let registry = ctx.shared.registry.clone();
    let acceptor = crate::server::Acceptor {
        name: ctx.direction.label(),
        registry: &registry,
        limit: Some(limit),
    };
    crate::server::accept_until_stopped(&listener, &mut stop, acceptor, |stream, permit| {
        let conn = ctx.clone().serve(stream, conn_stop.clone(), h2.clone());
        connections.spawn(conn, permit);
    })
    .await;
    drop(listener);
    connections.drain(ctx.direction.label(), drain).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_connections_reach_the_app_on_loopback_of_their_own_family() {
        let v4: SocketAddr = "10.1.0.5:8080".parse().unwrap();
        let v6: SocketAddr = "[fd00::5]:8080".parse().unwrap();
        assert_eq!(app_address(v4), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(app_address(v6), "[::1]:8080".parse().unwrap());
    }

    #[test]
    fn an_http1_head_is_detected_with_its_host() {
        let d = detect(b"GET /x HTTP/1.1\r\nhost: web.test:80\r\n\r\n", true);
        assert_eq!(
            d,
            Some(Detected::Http1 {
                host: Some("web.test:80".into())
            })
        );
    }

    #[test]
    fn a_partial_head_waits_for_more_and_then_counts_as_http_without_host() {
        assert_eq!(detect(b"GE", true), None);
        assert_eq!(detect(b"GET / HTTP/1.1\r\nhost: w", true), None);
        assert_eq!(
            detect(b"GET / HTTP/1.1\r\nhost: w", false),
            Some(Detected::Http1 { host: None })
        );
    }

    #[test]
    fn the_h2_preface_is_detected_and_its_prefix_waits() {
        assert_eq!(detect(H2_PREFACE, true), Some(Detected::H2));
        assert_eq!(detect(&H2_PREFACE[..10], true), None);
        assert_eq!(detect(&H2_PREFACE[..10], false), Some(Detected::Opaque));
    }

    #[test]
    fn other_bytes_and_silence_are_opaque() {
        assert_eq!(
            detect(b"\x16\x03\x01\x02\x00", true),
            Some(Detected::Opaque)
        );
        assert_eq!(detect(b"hello world\n", true), Some(Detected::Opaque));
        assert_eq!(detect(b"GET\t/", true), Some(Detected::Opaque));
        assert_eq!(detect(b"", false), Some(Detected::Opaque));
        assert_eq!(detect(b"", true), None);
    }
}

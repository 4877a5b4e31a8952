//! The proxy's own HTTP/1.1 server, from a raw client socket: pipelining, request body
//! framings, `Expect: 100-continue`, HTTP/1.0 and `Connection: close`, HEAD, malformed and
//! oversized heads, trailers, closing idle connections on shutdown, and recognising the HTTP/2
//! preface when it arrives in pieces.

use crate::support;

use std::time::Duration;

use serin_proxy::Proxy;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as read off the wire.
#[derive(Debug)]
pub(crate) struct Raw {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    trailers: Vec<(String, String)>,
    chunked: bool,
}

impl Raw {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn body(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection with its read buffer.
pub(crate) struct Client {
    pub(crate) stream: TcpStream,
    pub(crate) buf: Vec<u8>,
}

impl Client {
    pub(crate) async fn open(p: &Proxy) -> Client {
        Client {
            stream: TcpStream::connect(p.outbound_addr())
                .await
                .expect("connect"),
            buf: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub(crate) async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return l;
            }
            assert!(self.fill().await > 0, "connection closed mid-line");
        }
    }

    pub(crate) async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await > 0, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    async fn fields(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                return out;
            }
            let (n, v) = l.split_once(':').expect("header line");
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }

    /// Reads one response to a request with `method`.
    pub(crate) async fn response(&mut self, method: &str) -> Raw {
        let status_line = self.line().await;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers = self.fields().await;
        let mut r = Raw {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
            chunked: false,
        };
        if method == "HEAD" || status == 204 || status == 304 || status < 200 {
            return r;
        }
        if r.header("transfer-encoding") == Some("chunked") {
            r.chunked = true;
            loop {
                let size = usize::from_str_radix(&self.line().await, 16).expect("chunk size");
                if size == 0 {
                    r.trailers = self.fields().await;
                    return r;
                }
                r.body.extend(self.exact(size).await);
                assert_eq!(self.exact(2).await, b"\r\n");
            }
        }
        if let Some(n) = r.header("content-length") {
            let n = n.parse().expect("length");
            r.body = self.exact(n).await;
            return r;
        }
        while self.fill().await > 0 {}
        r.body = std::mem::take(&mut self.buf);
        r
    }

    /// True when the proxy closed the connection (after everything sent was read).
    pub(crate) async fn closed(&mut self) -> bool {
        within(10, async {
            let mut chunk = [0u8; 64];
            matches!(self.stream.read(&mut chunk).await, Ok(0) | Err(_))
        })
        .await
    }
}

/// A proxy routing `app` to one stub upstream named `up`.
pub(crate) async fn setup() -> (Proxy, Upstream) {
    let up = upstream("up").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: app\n    rules:\n      - backends: [{{ name: app, endpoints: [\"{}\"] }}]\n",
            up.addr
        )))
        .expect("valid table");
    (p, up)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (p, mut up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(
        b"GET /status/201 HTTP/1.1\r\nhost: app\r\n\r\n\
          GET /status/202 HTTP/1.1\r\nhost: app\r\n\r\n\
          POST /status/203 HTTP/1.1\r\nhost: app\r\ncontent-length: 4\r\n\r\nbody\
          GET /status/204 HTTP/1.1\r\nhost: app\r\n\r\n",
    )
    .await;
    for status in [201, 202, 203, 204] {
        let r = within(10, c.response("GET")).await;
        assert_eq!(r.status, status);
    }
    let mut paths = Vec::new();
    for _ in 0..4 {
        let seen = within(10, up.seen.recv()).await.expect("seen");
        if seen.path == "/status/203" {
            assert_eq!(&seen.body[..], b"body");
        }
        paths.push(seen.path);
    }
    assert_eq!(
        paths,
        ["/status/201", "/status/202", "/status/203", "/status/204"]
    );
}

#[tokio::test]
async fn a_chunked_request_body_reaches_the_upstream_and_the_connection_is_reused() {
    let (p, mut up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(b"POST /echo HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await;
    // The rest of the body comes later, in its own packet.
    tokio::task::yield_now().await;
    c.send(b"6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n")
        .await;
    let r = within(10, c.response("POST")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body(), "up");
    let seen = within(10, up.seen.recv()).await.expect("seen");
    assert_eq!(&seen.body[..], b"hello world");
    // Forwarded chunked: the proxy does not buffer a body to learn its length.
    assert_eq!(
        seen.headers.get("transfer-encoding").map(|v| v.as_bytes()),
        Some(&b"chunked"[..])
    );

    c.send(b"GET /again HTTP/1.1\r\nhost: app\r\n\r\n").await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        within(10, up.seen.recv()).await.expect("seen").path,
        "/again"
    );
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (p, mut up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(
        b"PUT /upload HTTP/1.1\r\nhost: app\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
    )
    .await;
    let interim = within(10, c.response("PUT")).await;
    assert_eq!(interim.status, 100);
    c.send(b"hello").await;
    let r = within(10, c.response("PUT")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        &within(10, up.seen.recv()).await.expect("seen").body[..],
        b"hello"
    );
}

#[tokio::test]
async fn a_request_refused_before_its_body_was_read_gets_its_answer_and_a_close() {
    let (p, _up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(
        b"POST / HTTP/1.1\r\nhost: nowhere\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
    )
    .await;
    let r = within(10, c.response("POST")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.body().contains("nowhere"), "{}", r.body());
    assert!(c.closed().await);
}

#[tokio::test]
async fn http_1_0_and_connection_close_end_the_connection_after_the_response() {
    let (p, _up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(b"GET / HTTP/1.0\r\nhost: app\r\n\r\n").await;
    let r = within(10, c.response("GET")).await;
    assert_eq!((r.status, r.body().as_str()), (200, "up"));
    assert!(c.closed().await);

    // HTTP/1.0 with keep-alive stays open for a response of known length (the proxy's own
    // 404 here); a body of unknown length is sent up to the close.
    let mut c = Client::open(&p).await;
    c.send(b"GET / HTTP/1.0\r\nhost: elsewhere\r\nconnection: keep-alive\r\n\r\n")
        .await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /grpc/0 HTTP/1.0\r\nhost: app\r\nconnection: keep-alive\r\n\r\n")
        .await;
    let r = within(10, c.response("GET")).await;
    assert!(!r.chunked);
    assert_eq!(r.body, b"\0\0\0\0\x02hi");

    let mut c = Client::open(&p).await;
    c.send(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn head_responses_have_no_body_and_keep_the_connection() {
    let (p, _up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(b"HEAD / HTTP/1.1\r\nhost: app\r\n\r\nGET / HTTP/1.1\r\nhost: app\r\n\r\n")
        .await;
    let r = within(10, c.response("HEAD")).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("close"));
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.body(), "up");
}

/// An HTTP/1.1 upstream that answers every request with a chunked body and trailers.
async fn trailers_upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n\
                            transfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\ngrpc-status: 7\r\n\r\n";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn chunked_responses_carry_trailers_only_to_clients_that_ask() {
    let up = trailers_upstream().await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: app\n    rules:\n      - backends: [{{ name: app, endpoints: [\"{up}\"] }}]\n"
        )))
        .expect("valid table");
    let mut c = Client::open(&p).await;
    c.send(b"GET / HTTP/1.1\r\nhost: app\r\nte: trailers\r\n\r\n")
        .await;
    let r = within(10, c.response("GET")).await;
    assert!(r.chunked);
    assert_eq!(r.body(), "abcd");
    assert_eq!(r.trailers, [("grpc-status".to_string(), "7".to_string())]);
    c.send(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n").await;
    let r = within(10, c.response("GET")).await;
    assert!(r.chunked && r.trailers.is_empty(), "{r:?}");
    assert_eq!(r.body(), "abcd");
    // Counted as a gRPC failure from the trailers either way.
    let m = metrics(&p).await;
    assert_eq!(
        sample(&m, &["response_total{", "classification=\"failure\""]),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn malformed_requests_get_a_readable_400_and_a_close() {
    let (p, _up) = setup().await;
    for bad in [
        &b"GET / HTTP/1.1\r\nhost: app\r\nno colon here\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nhost: app\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx",
        b"POST / HTTP/1.1\r\nhost: app\r\ntransfer-encoding: gzip\r\n\r\n",
        b"G@T / HTTP/1.1\r\n\r\n",
    ] {
        let mut c = Client::open(&p).await;
        c.send(bad).await;
        let r = within(10, c.response("GET")).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
        assert!(r.body().starts_with("bad request: "), "{}", r.body());
        assert!(c.closed().await);
    }
}

#[tokio::test]
async fn a_malformed_request_body_is_the_clients_400_not_an_upstream_502() {
    let (p, _up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(
        b"POST /echo HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n",
    )
    .await;
    let r = within(10, c.response("POST")).await;
    assert_eq!(r.status, 400);
    assert!(r.body().starts_with("bad request: "), "{}", r.body());
    let m = metrics(&p).await;
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "status_code=\"400\"",
                "classification=\"success\""
            ]
        ),
        1.0,
        "{m}"
    );
    assert!(!m.contains("error=\"upstream\""), "{m}");
}

#[tokio::test]
async fn a_client_hanging_up_cancels_its_request_upstream() {
    let (p, mut up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(b"GET /hang HTTP/1.1\r\nhost: app\r\n\r\n").await;
    // The upstream has the request (and will never answer it); the client gives up.
    assert_eq!(
        within(10, up.seen.recv()).await.expect("seen").path,
        "/hang"
    );
    drop(c);
    // Both sides of the exchange close: the client's connection and the upstream one, whose
    // answer nobody waits for any more.
    within(10, async {
        loop {
            let m = metrics(&p).await;
            let open = |peer: &str| {
                sample(
                    &m,
                    &[
                        "tcp_open_connections{",
                        "direction=\"outbound\"",
                        &format!("peer=\"{peer}\""),
                    ],
                )
            };
            if open("src") == 0.0 && open("dst") == 0.0 {
                return;
            }
            // The gauges are only observable by scraping; poll them.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_mirror_copy_of_a_broken_body_is_never_completed() {
    // The shadow: reads whatever comes on its first connection until the proxy closes it.
    let shadow = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shadow_addr = shadow.local_addr().expect("addr");
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = shadow.accept().await.expect("accept");
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all).await;
        let _ = got_tx.send(all);
    });
    let up = upstream("up").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: app\n    backends:\n      - {{ name: shadow, endpoints: [\"{shadow_addr}\"] }}\n    rules:\n      - backends: [{{ name: app, endpoints: [\"{}\"] }}]\n        mirror: {{ backend: shadow, percent: 100 }}\n",
            up.addr
        )))
        .expect("valid table");
    let mut c = Client::open(&p).await;
    c.send(b"POST /echo HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await;
    tokio::task::yield_now().await;
    c.send(b"zz\r\n").await;
    let r = within(10, c.response("POST")).await;
    assert_eq!(r.status, 400);
    // The shadow got the head and the first chunk, then a closed connection: never the last
    // chunk that would have made "hello" a complete request.
    let seen = within(10, got.recv()).await.expect("shadow connection");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("5\r\nhello\r\n"), "{text:?}");
    assert!(!text.contains("0\r\n\r\n"), "{text:?}");
}

#[tokio::test]
async fn connect_is_refused_with_405_and_a_close() {
    let (p, _up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(b"CONNECT app:443 HTTP/1.1\r\nhost: app:443\r\n\r\n")
        .await;
    let r = within(10, c.response("CONNECT")).await;
    assert_eq!(r.status, 405);
    assert!(
        r.body().starts_with("CONNECT is not supported"),
        "{}",
        r.body()
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn oversized_heads_and_too_many_headers_get_431() {
    let (p, _up) = setup().await;
    let mut c = Client::open(&p).await;
    let mut big = b"GET / HTTP/1.1\r\nhost: app\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', serin_http1::MAX_HEAD + 1));
    big.extend_from_slice(b"\r\n\r\n");
    // The proxy may answer and close before it has read everything.
    let _ = c.stream.write_all(&big).await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.status, 431);

    let mut c = Client::open(&p).await;
    let mut many = b"GET / HTTP/1.1\r\nhost: app\r\n".to_vec();
    for i in 0..serin_http1::MAX_HEADERS {
        many.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    c.send(&many).await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.status, 431);
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_request_head_split_across_packets_is_put_together() {
    let (p, _up) = setup().await;
    let mut c = Client::open(&p).await;
    for piece in [
        &b"GE"[..],
        b"T / HT",
        b"TP/1.1\r\nho",
        b"st: app\r\n",
        b"\r\n",
    ] {
        c.send(piece).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = within(10, c.response("GET")).await;
    assert_eq!((r.status, r.body().as_str()), (200, "up"));
    assert!(r.header("date").is_some());
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let (p, _up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert_eq!(within(10, c.response("GET")).await.status, 200);
    let drained = tokio::spawn(p.shutdown());
    assert!(c.closed().await);
    assert!(within(10, drained).await.expect("task"), "drained in time");
}

/// A client socket whose first `skip` written bytes were already sent by hand: they are
/// reported written without being sent again.
struct AlreadySent {
    inner: TcpStream,
    skip: usize,
}

impl tokio::io::AsyncRead for AlreadySent {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for AlreadySent {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            return std::task::Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn an_http2_preface_arriving_in_pieces_is_still_recognised() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let (p, mut up) = setup().await;
    let mut s = TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    s.write_all(&PREFACE[..5]).await.expect("write");
    // Wait until the proxy has read those bytes (and so must wait for the rest).
    within(10, async {
        loop {
            let m = metrics(&p).await;
            let read = sample(
                &m,
                &[
                    "tcp_read_bytes_total{",
                    "direction=\"outbound\"",
                    "peer=\"src\"",
                ],
            );
            if read >= 5.0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let io = hyper_util::rt::TokioIo::new(AlreadySent { inner: s, skip: 5 });
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake through the proxy");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://app/h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = within(10, tx.send_request(req)).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let seen = within(10, up.seen.recv()).await.expect("seen");
    assert_eq!(
        (seen.path.as_str(), seen.version),
        ("/h2", http::Version::HTTP_2)
    );
}

#[tokio::test]
async fn host_headers_are_checked_and_an_absolute_target_names_the_forwarded_host() {
    let (p, mut up) = setup().await;
    // RFC 9112 §3.2: two Host lines, or none in HTTP/1.1, are refused rather than routed.
    for bad in [
        &b"GET / HTTP/1.1\r\nhost: app\r\nhost: other\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut c = Client::open(&p).await;
        c.send(bad).await;
        let r = within(10, c.response("GET")).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
        assert!(r.body().contains("host header"), "{}", r.body());
        assert!(c.closed().await);
    }
    // An absolute-form target is routed by its authority, and the upstream sees that
    // authority as Host, not the different one the client also sent (RFC 9112 §3.2.2).
    let mut c = Client::open(&p).await;
    c.send(b"GET http://app/x HTTP/1.1\r\nhost: elsewhere\r\n\r\n")
        .await;
    assert_eq!(within(10, c.response("GET")).await.status, 200);
    let seen = within(10, up.seen.recv()).await.expect("seen");
    let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
    assert_eq!(hosts, ["app"]);
    // The same Content-Length twice is forwarded once.
    c.send(b"POST / HTTP/1.1\r\nhost: app\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nhi")
        .await;
    assert_eq!(within(10, c.response("POST")).await.status, 200);
    let seen = within(10, up.seen.recv()).await.expect("seen");
    let lengths: Vec<_> = seen.headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, ["2"]);
    assert_eq!(&seen.body[..], b"hi");
}

#[tokio::test]
async fn lenient_forms_other_proxies_refuse_are_refused_too() {
    let (p, _up) = setup().await;
    // Transfer codings the proxy cannot undo: 501, as nginx (HAProxy: 422).
    let mut c = Client::open(&p).await;
    c.send(b"POST / HTTP/1.1\r\nhost: app\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await;
    let r = within(10, c.response("POST")).await;
    assert_eq!(r.status, 501, "{}", r.body());
    assert!(c.closed().await);
    for bad in [
        // Authority form is CONNECT's alone.
        &b"GET podinfo:80 HTTP/1.1\r\nhost: app\r\n\r\n"[..],
        // A chunk size past 2^63 - 1, and a bare LF in a chunk extension.
        b"POST /echo HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nhello\r\n",
        b"POST /echo HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\nc\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut c = Client::open(&p).await;
        c.send(bad).await;
        let r = within(10, c.response("GET")).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[tokio::test]
async fn connection_cannot_make_the_proxy_drop_the_host_header() {
    let (p, mut up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: host, x-hop\r\nx-hop: 1\r\n\r\n")
        .await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.status, 200);
    let seen = within(10, up.seen.recv()).await.expect("seen");
    assert_eq!(
        seen.headers.get("host").map(|v| v.as_bytes()),
        Some(&b"app"[..])
    );
    assert!(
        seen.headers.get("x-hop").is_none(),
        "named hop-by-hop header forwarded"
    );
}

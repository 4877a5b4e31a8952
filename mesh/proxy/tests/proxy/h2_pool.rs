//! HTTP/2 upstream connections: no head-of-line blocking between clients sharing an endpoint.
//! Streams past the peer's MAX_CONCURRENT_STREAMS open another connection, a client that never
//! reads cannot take the connection's flow-control window, a cold burst opens one connection.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// `total` bytes in 64 KiB pieces, as fast as the reader takes them.
struct Big {
    left: usize,
    /// Bytes handed to the server so far, across every body of the upstream.
    sent: Arc<AtomicUsize>,
}

impl Body for Big {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        self.sent.fetch_add(n, SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }
}

/// An h2c upstream that allows `max_streams` concurrent streams per connection. `/big/N`
/// answers N bytes; `/wait` answers when `release` is notified; every request is reported on
/// `seen`, every accepted connection counted.
struct H2Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<String>,
    release: Arc<Notify>,
}

async fn h2_upstream(max_streams: u32) -> H2Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (tx, seen) = mpsc::unbounded_channel();
    let (conns, rel, total) = (connections.clone(), release.clone(), sent.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            conns.fetch_add(1, SeqCst);
            let (tx, rel, total) = (tx.clone(), rel.clone(), total.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (tx, rel, sent) = (tx.clone(), rel.clone(), total.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let _ = tx.send(path.clone());
                        if path == "/wait" {
                            rel.notified().await;
                        }
                        let n = path
                            .strip_prefix("/big/")
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(2);
                        Ok::<_, Infallible>(Response::new(Big { left: n, sent }))
                    }
                });
                let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                b.timer(TokioTimer::new())
                    .max_concurrent_streams(max_streams);
                let _ = b.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    H2Upstream {
        addr,
        connections,
        sent,
        seen,
        release,
    }
}

async fn proxy_to(up: &H2Upstream) -> serin_proxy::Proxy {
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: svc\n    rules:\n      - backends: [{{ name: svc, endpoints: [\"{}\"] }}]\n",
            up.addr
        )))
        .expect("table");
    p
}

#[tokio::test]
async fn streams_past_the_peers_limit_go_out_on_another_connection() {
    let mut up = h2_upstream(10).await;
    let p = proxy_to(&up).await;
    let c = h2_client(p.outbound_addr());
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..15 {
        let (c, addr) = (c.clone(), p.outbound_addr());
        waiting.spawn(async move { get(&c, addr, "svc", "/wait", &[]).await.status });
    }
    // All fifteen reach the upstream while the first ten are still open.
    for i in 0..15 {
        let path = within(10, up.seen.recv()).await.expect("seen");
        assert_eq!(path, "/wait", "request {i}");
    }
    assert_eq!(
        up.connections.load(SeqCst),
        2,
        "10 + 5 streams: two connections"
    );
    up.release.notify_waiters();
    // Notified before some handlers waited: keep releasing until all are answered.
    let all = async {
        let mut n = 0;
        loop {
            tokio::select! {
                r = waiting.join_next() => match r {
                    Some(s) => { assert_eq!(s.expect("task"), StatusCode::OK); n += 1; }
                    None => return n,
                },
                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => up.release.notify_waiters(),
            }
        }
    };
    assert_eq!(within(10, all).await, 15);
}

#[tokio::test]
async fn a_burst_to_a_cold_endpoint_opens_one_connection() {
    let mut up = h2_upstream(100).await;
    let p = proxy_to(&up).await;
    let c = h2_client(p.outbound_addr());
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (c, addr) = (c.clone(), p.outbound_addr());
        burst.spawn(async move { get(&c, addr, "svc", "/", &[]).await.status });
    }
    while let Some(s) = within(10, burst.join_next()).await {
        assert_eq!(s.expect("task"), StatusCode::OK);
    }
    assert_eq!(up.connections.load(SeqCst), 1);
    while up.seen.try_recv().is_ok() {}
}

#[tokio::test]
async fn a_client_that_never_reads_gets_a_window_per_stream_buffered_and_stalls_no_one() {
    const STALLED: usize = 12;
    let up = h2_upstream(100).await;
    let p = proxy_to(&up).await;
    // The stalled client: asks for 3 × 10 MB and never reads (never opens its window).
    let tcp = tokio::net::TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    let (mut stalled, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut heads = Vec::new();
    for _ in 0..STALLED {
        let req = Request::get("http://svc/big/10000000")
            .body(())
            .expect("request");
        let (resp, _) = stalled.send_request(req, true).expect("send");
        heads.push(resp);
    }
    let mut held = Vec::new();
    for h in heads {
        held.push(within(10, h).await.expect("response head"));
    }
    // Until the stalled downloads stop moving: every window they can fill is full.
    within(30, async {
        loop {
            let before = up.sent.load(SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if up.sent.load(SeqCst) == before {
                return;
            }
        }
    })
    .await;
    // What the proxy holds for the stalled client is bounded per stream (its upstream
    // receive window, plus what its downstream window and one piece in passing take).
    let buffered = up.sent.load(SeqCst);
    assert!(
        buffered <= STALLED * 512 * 1024,
        "{buffered} bytes pulled from the upstream for {STALLED} streams nobody reads"
    );
    // Everyone else still gets whole answers from the same endpoint.
    let c = h2_client(p.outbound_addr());
    for _ in 0..3 {
        let got = within(10, get(&c, p.outbound_addr(), "svc", "/big/300000", &[])).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body.len(), 300_000);
    }
    drop(held);
}

#[tokio::test]
async fn an_h2_upstream_that_stops_reading_the_request_body_gets_a_504_after_the_body_idle_timeout()
{
    let mut up = h2_upstream(100).await;
    let p = serin_proxy::Proxy::start(serin_proxy::ProxyConfig {
        outbound: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        body_idle_timeout: std::time::Duration::from_millis(500),
        ..serin_proxy::ProxyConfig::default()
    })
    .await
    .expect("proxy starts");
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: svc\n    rules:\n      - backends: [{{ name: svc, endpoints: [\"{}\"] }}]\n",
            up.addr
        )))
        .expect("table");
    // `/wait` neither reads the body nor answers: once the upstream's receive windows are full
    // the proxy cannot send more.
    let body = Bytes::from(vec![b'x'; 16 * 1024 * 1024]);
    let c = h2_client(p.outbound_addr());
    let got = within(
        20,
        send(&c, p.outbound_addr(), "svc", "POST", "/wait", &[], body),
    )
    .await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.body);
    assert_eq!(within(10, up.seen.recv()).await.as_deref(), Some("/wait"));
    let m = metrics(&p).await;
    assert_eq!(
        sample(&m, &["response_total{", "error=\"idle_timeout\""]),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn streams_an_upstream_never_answers_get_504s_and_give_their_slots_back() {
    // Two streams per connection: the two that hang fill the first connection.
    let mut up = h2_upstream(2).await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: svc\n    rules:\n      - timeout: 300ms\n        backends: [{{ name: svc, endpoints: [\"{}\"] }}]\n",
            up.addr
        )))
        .expect("table");
    let c = h2_client(p.outbound_addr());
    for _ in 0..3 {
        let mut hung = tokio::task::JoinSet::new();
        for _ in 0..2 {
            let (c, addr) = (c.clone(), p.outbound_addr());
            hung.spawn(async move { get(&c, addr, "svc", "/wait", &[]).await.status });
        }
        while let Some(s) = within(10, hung.join_next()).await {
            assert_eq!(s.expect("task"), StatusCode::GATEWAY_TIMEOUT);
        }
    }
    // Six streams timed out on a connection that carries two: each gave its slot back.
    let got = within(10, get(&c, p.outbound_addr(), "svc", "/", &[])).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        up.connections.load(SeqCst),
        1,
        "a timed-out stream kept its slot"
    );
    let m = metrics(&p).await;
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "status_code=\"504\"",
                "error=\"timeout\""
            ]
        ),
        6.0,
        "{m}"
    );
    while up.seen.try_recv().is_ok() {}
}

#[tokio::test]
async fn one_client_connection_that_never_reads_holds_a_bounded_amount_of_the_proxys_memory() {
    let up = h2_upstream(100).await;
    let p = proxy_to(&up).await;
    let tcp = tokio::net::TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    // A window of 0: everything pulled from the upstream stays in the proxy.
    let (mut stalled, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    // As many 10 MB downloads as the proxy lets one connection open, none of them read.
    let mut heads = Vec::new();
    for _ in 0..200 {
        let req = Request::get("http://svc/big/10000000")
            .body(())
            .expect("request");
        stalled = within(10, stalled.ready()).await.expect("ready");
        let (resp, _) = stalled.send_request(req, true).expect("send");
        heads.push(resp);
    }
    let mut held = Vec::new();
    for h in heads {
        if let Ok(r) = within(10, h).await {
            held.push(r);
        }
    }
    within(30, async {
        loop {
            let before = up.sent.load(SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            if up.sent.load(SeqCst) == before {
                return;
            }
        }
    })
    .await;
    // What the upstream handed over for a client that reads nothing: the proxy's stream
    // windows (100 × 128 KiB), plus at most one 64 KiB piece per stream that the upstream's
    // own h2 server holds beyond the window. 62 MiB when a connection could have 200 streams
    // of 256 KiB.
    let pulled = up.sent.load(SeqCst);
    assert!(
        pulled <= 20 << 20,
        "{} MiB pulled for {} streams nobody reads",
        pulled >> 20,
        held.len()
    );
}

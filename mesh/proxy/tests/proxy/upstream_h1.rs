//! The proxy's own HTTP/1.1 upstream client, against a scripted raw-TCP upstream: connection
//! reuse, message framing both ways, upstreams that close idle connections, early answers.

use crate::support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use support::*;

/// One request as the raw upstream read it (body de-chunked).
#[derive(Debug)]
struct RawRequest {
    head: String,
    body: Vec<u8>,
}

/// What the raw upstream does after reading a request.
#[derive(Clone, Copy)]
enum Script {
    /// 200 with `content-length`, keep the connection.
    Length,
    /// 200 chunked in two pieces, keep the connection.
    Chunked,
    /// 200 with `content-length`, then close the connection without saying so (as an idle
    /// timeout would, right after).
    LengthThenClose,
    /// Answer 413 after the head, without reading the body, then close.
    EarlyReject,
    /// 200 chunked that also claims `content-length: 3` (a response-splitting smell).
    ChunkedAndLength,
    /// These bytes as the response, keep the connection.
    Raw(&'static [u8]),
    /// These bytes, then close the connection.
    RawThenClose(&'static [u8]),
    /// These bytes, then reset the connection (RST, not FIN).
    RawThenReset(&'static [u8]),
    /// `100 Continue` after `100 Continue`, for ever.
    InterimFlood,
    /// 200 chunked: the head at once, the body [`SLOW_BODY`] later.
    SlowBody,
}

/// How long [`Script::SlowBody`] keeps its body back after its head.
const SLOW_BODY: std::time::Duration = std::time::Duration::from_millis(300);

struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<RawRequest>,
}

async fn raw_upstream(script: Script) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, seen) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = serve_raw(stream, script, tx).await;
            });
        }
    });
    RawUpstream {
        addr,
        accepted,
        seen,
    }
}

async fn serve_raw(
    stream: TcpStream,
    script: Script,
    seen: mpsc::UnboundedSender<RawRequest>,
) -> std::io::Result<()> {
    let mut rd = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if rd.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let lower = head.to_ascii_lowercase();
        if let Script::EarlyReject = script {
            rd.get_mut()
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big\n")
                .await?;
            let _ = seen.send(RawRequest { head, body: vec![] });
            // Keep the connection open, unread, for longer than the proxy needs to relay the
            // answer (closing with unread data would reset it).
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            return Ok(());
        }
        let mut body = Vec::new();
        if lower.contains("transfer-encoding: chunked") {
            loop {
                let mut size = String::new();
                rd.read_line(&mut size).await?;
                let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
                let mut chunk = vec![0; n + 2];
                rd.read_exact(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(l) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            let mut b = vec![0; l.trim().parse().expect("length")];
            rd.read_exact(&mut b).await?;
            body = b;
        }
        let is_head = head.starts_with("HEAD ");
        let _ = seen.send(RawRequest { head, body });
        let out = rd.get_mut();
        match script {
            Script::Length | Script::LengthThenClose => {
                out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
                    .await?;
                if !is_head {
                    out.write_all(b"hello").await?;
                }
            }
            Script::Chunked => {
                out.write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                )
                .await?;
            }
            Script::ChunkedAndLength => {
                out.write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                )
                .await?;
            }
            Script::Raw(bytes) => out.write_all(bytes).await?,
            Script::RawThenClose(bytes) => {
                out.write_all(bytes).await?;
                return Ok(());
            }
            Script::RawThenReset(bytes) => {
                out.write_all(bytes).await?;
                // Let the bytes leave before the reset overtakes them.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                out.set_zero_linger()?;
                return Ok(());
            }
            Script::InterimFlood => {
                let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(2048);
                loop {
                    out.write_all(&many).await?;
                }
            }
            Script::SlowBody => {
                out.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await?;
                out.flush().await?;
                // The slowness under test is the server's own: its body comes this much later.
                tokio::time::sleep(SLOW_BODY).await;
                out.write_all(b"5\r\nhello\r\n0\r\n\r\n").await?;
            }
            Script::EarlyReject => unreachable!("answered above"),
        }
        if let Script::LengthThenClose = script {
            return Ok(());
        }
    }
}

fn route_to(up: &RawUpstream) -> serin_mesh_api::RouteTable {
    table(&format!(
        r#"
routes:
  - authority: raw
    rules:
      - backends:
          - {{ name: raw, endpoints: ["{}"] }}
"#,
        up.addr
    ))
}

#[tokio::test]
async fn one_upstream_connection_carries_sequential_requests_of_every_framing() {
    within(30, async {
        let up = raw_upstream(Script::Length).await;
        let p = proxy().await;
        p.table().apply(route_to(&up)).expect("valid table");
        let client = h1_client();
        let addr = p.outbound_addr();
        for _ in 0..20 {
            let got = get(&client, addr, "raw", "/", &[]).await;
            assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "hello"));
        }
        // HEAD: no body on the wire, the connection stays usable.
        let got = send(&client, addr, "raw", "HEAD", "/", &[], Bytes::new()).await;
        assert_eq!(got.status, StatusCode::OK);
        // A body with a length goes out with that length.
        let got = send(&client, addr, "raw", "POST", "/p", &[], Bytes::from("abc")).await;
        assert_eq!(got.body, "hello");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        let m = metrics(&p).await;
        assert_eq!(
            sample(
                &m,
                &["tcp_open_total{", "direction=\"outbound\"", "peer=\"dst\""]
            ),
            1.0
        );
        let mut seen = up.seen;
        let mut last = None;
        while let Ok(r) = seen.try_recv() {
            last = Some(r);
        }
        let last = last.expect("requests seen");
        assert!(
            last.head.starts_with("POST /p HTTP/1.1\r\n"),
            "{}",
            last.head
        );
        assert!(last.head.to_ascii_lowercase().contains("content-length: 3"));
        assert!(last.head.to_ascii_lowercase().contains("host: raw"));
        assert_eq!(last.body, b"abc");
    })
    .await;
}

#[tokio::test]
async fn chunked_bodies_pass_both_ways_and_the_connection_is_reused_after_them() {
    within(30, async {
        let up = raw_upstream(Script::Chunked).await;
        let p = proxy().await;
        p.table().apply(route_to(&up)).expect("valid table");
        // A streamed request body (no length): hyper's client sends it chunked.
        let stream = TcpStream::connect(p.outbound_addr())
            .await
            .expect("connect");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        for _ in 0..3 {
            let body = Frames(VecDeque::from([
                Frame::data(Bytes::from_static(b"part one, ")),
                Frame::data(Bytes::from_static(b"part two")),
            ]));
            let req = Request::post("/upload")
                .header("host", "raw")
                .body(body)
                .expect("request");
            let resp = tx.send_request(req).await.expect("response");
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(&body[..], b"hello world");
        }
        let mut seen = up.seen;
        for _ in 0..3 {
            let r = seen.recv().await.expect("request seen");
            assert_eq!(r.body, b"part one, part two");
            assert!(
                r.head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked")
            );
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_never_shows_as_an_error() {
    within(30, async {
        let up = raw_upstream(Script::LengthThenClose).await;
        let p = proxy().await;
        p.table().apply(route_to(&up)).expect("valid table");
        let client = h1_client();
        for _ in 0..20 {
            let got = get(&client, p.outbound_addr(), "raw", "/", &[]).await;
            assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "hello"));
        }
        // Every request needed a fresh connection, and none of them failed.
        assert!(up.accepted.load(Ordering::SeqCst) >= 20);
        let m = metrics(&p).await;
        assert_eq!(sample(&m, &["response_total{", "error="]), 0.0);
    })
    .await;
}

#[tokio::test]
async fn an_upstream_answering_before_reading_the_body_is_relayed() {
    within(30, async {
        let up = raw_upstream(Script::EarlyReject).await;
        let p = proxy().await;
        p.table().apply(route_to(&up)).expect("valid table");
        // Larger than the socket buffers, so the upstream's refusal to read would block a
        // proxy that only reads the response after sending the whole body.
        let big = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
        let got = send(
            &h1_client(),
            p.outbound_addr(),
            "raw",
            "POST",
            "/",
            &[],
            big,
        )
        .await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "too big\n")
        );
    })
    .await;
}

#[tokio::test]
async fn a_response_with_both_chunked_and_a_length_is_read_chunked_and_loses_the_length() {
    within(30, async {
        let up = raw_upstream(Script::ChunkedAndLength).await;
        let p = proxy().await;
        p.table().apply(route_to(&up)).expect("valid table");
        let client = h1_client();
        for _ in 0..2 {
            let got = get(&client, p.outbound_addr(), "raw", "/", &[]).await;
            // Transfer-Encoding wins (RFC 9112 §6.3) and the Content-Length is not forwarded.
            assert_eq!(got.body, "hello world");
            assert_eq!(got.headers.get("content-length"), None, "{:?}", got.headers);
        }
        // Such an upstream connection is not trusted again.
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test]
async fn upstream_framing_headers_are_forwarded_only_when_valid_and_needed() {
    within(30, async {
        let p = proxy().await;
        let client = h1_client();
        // A length that is not plain digits (`+5` parses as a number, but the client would get
        // it as written), and a 101 nobody asked for (Upgrade is never forwarded): 502.
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello"[..],
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        ] {
            let up = raw_upstream(Script::Raw(bad)).await;
            p.table().apply(route_to(&up)).expect("valid table");
            let got = get(&client, p.outbound_addr(), "raw", "/", &[]).await;
            assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{:?}", String::from_utf8_lossy(bad));
        }
        // The same length twice reaches the client once.
        let up = raw_upstream(Script::Raw(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
        ))
        .await;
        p.table().apply(route_to(&up)).expect("valid table");
        let got = get(&client, p.outbound_addr(), "raw", "/", &[]).await;
        assert_eq!(got.body, "hello");
        let lengths: Vec<_> = got.headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, ["5"]);
        // A 204 never carries a length (RFC 9110 §8.6): read as no body, forwarded without
        // it, and the connection serves the next request.
        let up = raw_upstream(Script::Raw(b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n")).await;
        p.table().apply(route_to(&up)).expect("valid table");
        for _ in 0..2 {
            let got = get(&client, p.outbound_addr(), "raw", "/", &[]).await;
            assert_eq!(got.status, StatusCode::NO_CONTENT);
            assert_eq!(got.headers.get("content-length"), None, "{:?}", got.headers);
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    })
    .await;
}

/// Sends one raw request to the proxy and reads until the proxy closes the connection.
async fn raw_exchange(p: &serin_proxy::Proxy, request: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    c.write_all(request).await.expect("request");
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got).await;
    got
}

#[tokio::test]
async fn a_response_cut_short_of_its_length_reaches_the_client_cut_and_closed() {
    within(30, async {
        for script in [
            Script::RawThenClose(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"),
            Script::RawThenReset(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"),
            Script::RawThenClose(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
            ),
        ] {
            let p = proxy().await;
            let up = raw_upstream(script).await;
            p.table().apply(route_to(&up)).expect("valid table");
            // Two pipelined requests: after a cut response, nothing more may come on the
            // connection (a client would read the next response as the rest of the body).
            let got = raw_exchange(
                &p,
                b"GET /a HTTP/1.1\r\nhost: raw\r\n\r\nGET /b HTTP/1.1\r\nhost: raw\r\n\r\n",
            )
            .await;
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
            let body = &text[text.find("\r\n\r\n").expect("head") + 4..];
            // Cut: neither the whole length nor a chunked body's last chunk.
            assert!(
                body == "hello" || body == "5\r\nhello\r\n",
                "the client got a whole body: {body:?}"
            );
            let m = metrics(&p).await;
            assert_eq!(
                sample(&m, &["response_total", "error=\"stream\""]),
                1.0,
                "{m}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn bytes_past_a_responses_length_are_dropped_with_its_connection() {
    within(30, async {
        let p = proxy().await;
        // A second response smuggled behind the first: it must never answer a request.
        let up = raw_upstream(Script::Raw(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
        ))
        .await;
        p.table().apply(route_to(&up)).expect("valid table");
        let client = h1_client();
        for _ in 0..3 {
            let got = get(&client, p.outbound_addr(), "raw", "/", &[]).await;
            assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "ok"));
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 3, "a connection with leftovers was reused");
    })
    .await;
}

#[tokio::test]
async fn a_status_line_that_does_not_parse_is_a_502() {
    within(30, async {
        let p = proxy().await;
        let client = h1_client();
        for bad in [
            &b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 1000 Big\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 099 Small\r\ncontent-length: 0\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"\x00\x01\x02garbage\r\n\r\n",
        ] {
            let up = raw_upstream(Script::Raw(bad)).await;
            p.table().apply(route_to(&up)).expect("valid table");
            let got = get(&client, p.outbound_addr(), "raw", "/", &[]).await;
            assert_eq!(
                got.status,
                StatusCode::BAD_GATEWAY,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(got.headers["l5d-proxy-error"], "upstream");
        }
    })
    .await;
}

#[tokio::test]
async fn an_endless_run_of_interim_responses_ends_in_the_route_timeout() {
    within(30, async {
        let p = proxy().await;
        let up = raw_upstream(Script::InterimFlood).await;
        p.table()
            .apply(table(&format!(
                "routes:\n  - authority: raw\n    rules:\n      - timeout: 1s\n        backends: [{{ name: raw, endpoints: [\"{}\"] }}]\n",
                up.addr
            )))
            .expect("valid table");
        let got = get(&h1_client(), p.outbound_addr(), "raw", "/", &[]).await;
        assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.body);
    })
    .await;
}

/// `response_latency_ms` is Linkerd's time to first byte: up to the response's first data
/// frame, so a server that sends its headers at once and its body late reads as slow (it read
/// about 1 ms when the proxy measured to the response headers).
#[tokio::test]
async fn a_response_whose_body_comes_late_is_as_slow_as_its_first_byte() {
    within(30, async {
        let up = raw_upstream(Script::SlowBody).await;
        let p = proxy().await;
        p.table().apply(route_to(&up)).expect("valid table");
        let got = get(&h1_client(), p.outbound_addr(), "raw", "/", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, "hello");
        let m = metrics(&p).await;
        let series = ["dst_service=\"raw\"", "status_code=\"200\""];
        let count = [&["response_latency_ms_count{"][..], &series[..]].concat();
        assert_eq!(sample(&m, &count), 1.0, "{m}");
        // 300 ms later: above the 300 ms bucket, so nothing at or under 200.
        let fast = [
            &["response_latency_ms_bucket{"][..],
            &series[..],
            &["le=\"200\""][..],
        ]
        .concat();
        assert_eq!(sample(&m, &fast), 0.0, "{m}");
        let sum = [&["response_latency_ms_sum{"][..], &series[..]].concat();
        assert!(sample(&m, &sum) >= SLOW_BODY.as_millis() as f64, "{m}");
    })
    .await;
}

/// CPU time of the calling thread, in clock ticks (the proxy, client and test of a
/// `#[tokio::test]` all run on it; other tests run on theirs).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

#[tokio::test]
async fn a_response_head_sent_in_small_pieces_is_parsed_once_not_per_piece() {
    // A 60 KB head (60 fields of 1 KB), from a thread writing it 10 bytes at a time.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let Ok((mut s, _)) = l.accept() else { return };
        let _ = s.set_nodelay(true);
        let mut b = [0u8; 4096];
        let _ = s.read(&mut b);
        let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
        for i in 0..60 {
            head.extend_from_slice(format!("x-f{i:02}: {}\r\n", "a".repeat(1000)).as_bytes());
        }
        head.extend_from_slice(b"\r\nok");
        for piece in head.chunks(10) {
            if s.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        let _ = s.read(&mut b);
    });
    let p = proxy().await;
    let up = RawUpstream {
        addr,
        accepted: Arc::new(AtomicUsize::new(0)),
        seen: mpsc::unbounded_channel().1,
    };
    p.table().apply(route_to(&up)).expect("valid table");
    let before = thread_cpu_ticks();
    let got = within(60, get(&h1_client(), p.outbound_addr(), "raw", "/", &[])).await;
    let used = thread_cpu_ticks() - before;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "ok"));
    // 41 ticks (0.41 s) when the head was parsed again after every piece; 8 when parsed once
    // (what is left is 6,000 reads, in a debug build).
    assert!(used < 20, "{used} ticks of CPU for one response head");
}

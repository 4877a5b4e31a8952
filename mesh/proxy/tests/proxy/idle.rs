//! Connections and bodies that go quiet: closed after their idle timeouts, busy ones kept.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use serin_proxy::{Proxy, ProxyConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn proxy_idle(h2_idle: Duration, app: &Upstream) -> Proxy {
    proxy_to(h2_idle, Duration::from_secs(60), app.addr).await
}

async fn proxy_to(h2_idle: Duration, body_idle: Duration, app: SocketAddr) -> Proxy {
    let p = Proxy::start(ProxyConfig {
        outbound: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        h2_idle_timeout: h2_idle,
        body_idle_timeout: body_idle,
        ..ProxyConfig::default()
    })
    .await
    .expect("proxy starts");
    route_svc_to(&p, app);
    p
}

/// A raw HTTP/1.1 upstream: reads a request head, then writes `answer` (if any) and
/// `then_zeros` bytes of zeros, and keeps the connection open without another byte.
async fn raw_upstream(answer: Option<&'static [u8]>, then_zeros: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if let Some(a) = answer {
                    let _ = s.write_all(a).await;
                }
                let zeros = vec![0u8; 64 * 1024];
                let mut left = then_zeros;
                while left > 0 {
                    let n = left.min(zeros.len());
                    if s.write_all(&zeros[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                // Silent from here on, until the proxy hangs up.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

/// Reads until the proxy closes the connection; returns what came.
async fn read_to_close(c: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match c.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n";

#[tokio::test]
async fn an_upstream_that_stops_mid_body_is_cut_after_the_body_idle_timeout() {
    let up = raw_upstream(
        Some(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello"),
        0,
    )
    .await;
    let p = proxy_to(Duration::from_secs(60), Duration::from_millis(300), up).await;
    let mut c = TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    c.write_all(GET).await.expect("write");
    let got = within(10, read_to_close(&mut c)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("hello"),
        "{got}"
    );
    let m = metrics(&p).await;
    assert_eq!(
        sample(&m, &["response_total{", "error=\"idle_timeout\""]),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_on_a_route_without_timeout_gets_a_504() {
    let up = raw_upstream(None, 0).await;
    let p = proxy_to(Duration::from_secs(60), Duration::from_millis(300), up).await;
    let mut c = TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    c.write_all(GET).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = within(10, c.read(&mut buf)).await.expect("read");
    let got = String::from_utf8_lossy(&buf[..n]);
    assert!(got.starts_with("HTTP/1.1 504"), "{got}");
    let m = metrics(&p).await;
    assert_eq!(
        sample(&m, &["response_total{", "error=\"idle_timeout\""]),
        1.0,
        "{m}"
    );
}

/// An HTTP/1.1 upstream that reads a request head and then nothing more: it neither reads
/// the body nor answers, and keeps the connection open.
async fn deaf_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut byte = [0u8; 1];
                // Byte by byte, so not one byte of the body is taken with the head.
                while !got.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => got.push(byte[0]),
                    }
                }
                std::future::pending::<()>().await;
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_stops_reading_the_request_body_gets_a_504_after_the_body_idle_timeout() {
    const TOTAL: usize = 64 * 1024 * 1024;
    let up = deaf_upstream().await;
    let p = proxy_to(Duration::from_secs(60), Duration::from_millis(500), up).await;
    let c = TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    let (mut rd, mut wr) = c.into_split();
    // The client keeps sending (far more than the socket buffers between it and the upstream
    // hold) for as long as the proxy reads.
    let writer = tokio::spawn(async move {
        let head = format!("POST / HTTP/1.1\r\nhost: svc\r\ncontent-length: {TOTAL}\r\n\r\n");
        wr.write_all(head.as_bytes()).await?;
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..TOTAL / piece.len() {
            wr.write_all(&piece).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let got = within(20, async {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    })
    .await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 504"), "{got}");
    writer.abort();
    let m = metrics(&p).await;
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "status_code=\"504\"",
                "error=\"idle_timeout\""
            ]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_a_400_and_no_backend_failure() {
    let app = upstream("app").await;
    let p = proxy_to(
        Duration::from_secs(60),
        Duration::from_millis(300),
        app.addr,
    )
    .await;
    let mut c = TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    c.write_all(b"POST / HTTP/1.1\r\nhost: svc\r\ncontent-length: 100\r\n\r\nhello")
        .await
        .expect("write");
    let got = within(10, read_to_close(&mut c)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    let m = metrics(&p).await;
    assert_eq!(
        sample(&m, &["response_total{", "classification=\"failure\""]),
        0.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_after_the_body_idle_timeout() {
    const TOTAL: usize = 64 * 1024 * 1024;
    static HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 67108864\r\n\r\n";
    let up = raw_upstream(Some(HEAD), TOTAL).await;
    let p = proxy_to(Duration::from_secs(60), Duration::from_millis(300), up).await;
    let mut c = TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    c.write_all(GET).await.expect("write");
    // Not reading: the socket buffers fill, the proxy's writes stall, and after the idle
    // timeout it gives up on this client.
    let before = sample(
        &metrics(&p).await,
        &["tcp_close_total{", "direction=\"outbound\"", "peer=\"src\""],
    );
    within(30, async {
        loop {
            let m = metrics(&p).await;
            if sample(
                &m,
                &["tcp_close_total{", "direction=\"outbound\"", "peer=\"src\""],
            ) > before
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let got = within(30, read_to_close(&mut c)).await;
    assert!(got.len() < TOTAL, "the whole body was still sent");
}

async fn h2_request(send: &mut h2::client::SendRequest<bytes::Bytes>, path: &str) -> Vec<u8> {
    let req = Request::get(format!("http://svc{path}"))
        .body(())
        .expect("request");
    let (resp, _) = send
        .clone()
        .ready()
        .await
        .expect("ready")
        .send_request(req, true)
        .expect("send");
    let mut body = resp.await.expect("response").into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    out
}

#[tokio::test]
async fn an_idle_h2c_client_connection_is_closed_and_a_busy_one_is_not() {
    let app = upstream("app").await;
    let p = proxy_idle(Duration::from_millis(300), &app).await;
    let tcp = tokio::net::TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("handshake");
    let mut conn = tokio::spawn(conn);

    // A stream open for longer than the idle timeout keeps the connection.
    let slow = {
        let mut send = send.clone();
        tokio::spawn(async move { h2_request(&mut send, "/wait").await })
    };
    let mut app = app;
    assert_eq!(
        within(10, app.seen.recv()).await.expect("seen").path,
        "/wait"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut conn)
            .await
            .is_err(),
        "closed while a stream was open"
    );
    app.release.notify_one();
    assert_eq!(within(10, slow).await.expect("task"), b"app");
    assert_eq!(h2_request(&mut send, "/").await, b"app");

    // Then nothing: the proxy says GOAWAY and the connection ends.
    within(10, &mut conn)
        .await
        .expect("connection task")
        .expect("closed cleanly");
}

#[tokio::test]
async fn a_slow_upload_is_not_timed_out_by_the_route_timeout_nor_blamed_on_the_backend() {
    let app = upstream("app").await;
    let p = proxy_to(Duration::from_secs(60), Duration::from_secs(60), app.addr).await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: svc\n    rules:\n      - backends: [{{ name: app, endpoints: [\"{}\"] }}]\n        timeout: 500ms\n",
            app.addr
        )))
        .expect("table");
    let mut c = TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    c.write_all(b"POST / HTTP/1.1\r\nhost: svc\r\ncontent-length: 10\r\n\r\n")
        .await
        .expect("write head");
    // Ten bytes over a second: twice the route timeout, all of it the client's own pace.
    for b in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.write_all(&[*b]).await.expect("write body byte");
    }
    let mut buf = vec![0u8; 4096];
    let n = within(10, c.read(&mut buf)).await.expect("read");
    let got = String::from_utf8_lossy(&buf[..n]);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let m = metrics(&p).await;
    assert_eq!(
        sample(&m, &["response_total{", "classification=\"failure\""]),
        0.0,
        "{m}"
    );
}

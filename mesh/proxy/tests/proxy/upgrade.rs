//! HTTP/1.1 upgrades through the proxy, as a Linkerd user expects them to pass: a WebSocket
//! handshake reaches the upstream with its `Upgrade`/`Connection` fields, its `101` reaches the
//! client, and the connection then carries bytes both ways (half closes included) until both
//! sides are done; an upgrade the upstream declines is an ordinary exchange on a connection that
//! stays usable; `Upgrade: h2c` is served as plain HTTP/1.1.

use crate::client_h1::{Client, setup};
use crate::support;

use std::net::SocketAddr;

use serin_proxy::Proxy;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const HANDSHAKE: &[u8] =
    b"GET /chat HTTP/1.1\r\nhost: ws\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
    sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";

/// A WebSocket-ish upstream: reads one request head and reports it; answers `101` (with its
/// first message in the same write) when it asks for `upgrade: websocket`, else `426`. After
/// the switch it answers every read with `echo:<bytes>`, and closes once the client has; it
/// resets the connection when it reads `reset-me`, and reports a reset it meets.
async fn ws_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut b).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&b[..n]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let _ = tx.send(head.clone());
                if !head.contains("\r\nupgrade: websocket\r\n") {
                    let _ = s
                        .write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 2\r\n\r\nno")
                        .await;
                    return;
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
                          sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello-from-upstream",
                    )
                    .await;
                loop {
                    match s.read(&mut b).await {
                        Err(e) => {
                            let _ = tx.send(format!("tunnel ended: {:?}", e.kind()));
                            return;
                        }
                        Ok(0) => break,
                        // Asked to reset the connection: RST, not FIN.
                        Ok(n) if &b[..n] == b"reset-me" => {
                            let _ = s.set_zero_linger();
                            return;
                        }
                        Ok(n) => {
                            let mut out = b"echo:".to_vec();
                            out.extend_from_slice(&b[..n]);
                            if s.write_all(&out).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, rx)
}

async fn ws_proxy() -> (Proxy, mpsc::UnboundedReceiver<String>) {
    let (addr, seen) = ws_upstream().await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: ws\n    rules:\n      - backends: [{{ name: ws, endpoints: [\"{addr}\"] }}]\n"
        )))
        .expect("valid table");
    (p, seen)
}

/// Reads until `want` bytes arrived (the tunnel may split or merge writes).
async fn read_exactly(c: &mut Client, want: &[u8]) {
    while c.buf.len() < want.len() {
        assert!(
            c.fill().await > 0,
            "tunnel closed early; got {:?}",
            String::from_utf8_lossy(&c.buf)
        );
    }
    let got: Vec<u8> = c.buf.drain(..want.len()).collect();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

#[tokio::test]
async fn a_websocket_handshake_is_forwarded_and_the_connection_becomes_a_tunnel() {
    let (p, mut seen) = ws_proxy().await;
    let mut c = Client::open(&p).await;
    c.send(HANDSHAKE).await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert_eq!(r.header("connection"), Some("upgrade"));
    assert!(r.header("sec-websocket-accept").is_some());
    let head = within(10, seen.recv())
        .await
        .expect("upstream saw the handshake");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nsec-websocket-key: "), "{head}");

    // What the upstream sent with its 101, then both ways, twice.
    within(10, read_exactly(&mut c, b"hello-from-upstream")).await;
    for msg in [&b"ping-1"[..], b"ping-2"] {
        c.send(msg).await;
        let mut want = b"echo:".to_vec();
        want.extend_from_slice(msg);
        within(10, read_exactly(&mut c, &want)).await;
    }
    // The client's half close reaches the upstream, whose close reaches the client.
    c.stream.shutdown().await.expect("half close");
    assert!(
        c.closed().await,
        "tunnel still open after both sides closed"
    );

    let m = metrics(&p).await;
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "dst_service=\"ws\"",
                "status_code=\"101\""
            ]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn an_upgrade_the_upstream_declines_keeps_the_connection_for_the_next_request() {
    let (p, mut up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(
        b"GET /first HTTP/1.1\r\nhost: app\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("upgrade"), None);
    let seen = within(10, up.seen.recv()).await.expect("seen");
    assert_eq!(
        seen.headers.get("upgrade").map(|v| v.as_bytes()),
        Some(&b"websocket"[..])
    );
    c.send(b"GET /second HTTP/1.1\r\nhost: app\r\n\r\n").await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body(), "up");
}

#[tokio::test]
async fn an_h2c_upgrade_is_served_as_plain_http_1_1() {
    let (p, mut up) = setup().await;
    let mut c = Client::open(&p).await;
    c.send(
        b"GET /h2c HTTP/1.1\r\nhost: app\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n\
          http2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    let r = within(10, c.response("GET")).await;
    assert_eq!(r.status, 200);
    let seen = within(10, up.seen.recv()).await.expect("seen");
    assert!(seen.headers.get("upgrade").is_none(), "{:?}", seen.headers);
    assert!(
        seen.headers.get("http2-settings").is_none(),
        "{:?}",
        seen.headers
    );
    c.send(b"GET /again HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert_eq!(within(10, c.response("GET")).await.status, 200);
}

#[tokio::test]
async fn an_upgrade_with_a_body_is_not_tunnelled() {
    let (p, mut seen) = ws_proxy().await;
    let mut c = Client::open(&p).await;
    c.send(b"POST /chat HTTP/1.1\r\nhost: ws\r\nconnection: upgrade\r\nupgrade: websocket\r\ncontent-length: 2\r\n\r\nhi")
        .await;
    let r = within(10, c.response("POST")).await;
    assert_eq!(r.status, 426, "the upstream was asked to switch: {r:?}");
    let head = within(10, seen.recv()).await.expect("seen");
    assert!(!head.contains("upgrade: websocket"), "{head}");
}

#[tokio::test]
async fn stopping_the_proxy_closes_its_tunnels() {
    let (p, _seen) = ws_proxy().await;
    let mut c = Client::open(&p).await;
    c.send(HANDSHAKE).await;
    assert_eq!(within(10, c.response("GET")).await.status, 101);
    within(10, read_exactly(&mut c, b"hello-from-upstream")).await;
    within(10, p.shutdown()).await;
    assert!(c.closed().await, "tunnel outlived the proxy");
}

/// Opens a tunnel through `p` with a raw socket and reads what the upstream sent with its 101.
async fn raw_tunnel(p: &Proxy) -> tokio::net::TcpStream {
    let mut c = tokio::net::TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    c.write_all(HANDSHAKE).await.expect("handshake");
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.ends_with(b"hello-from-upstream") {
        let n = within(10, c.read(&mut b)).await.expect("read");
        assert!(
            n > 0,
            "closed before the switch: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&b[..n]);
    }
    c
}

#[tokio::test]
async fn a_reset_in_a_tunnel_reaches_the_other_side_as_a_reset() {
    let (p, mut seen) = ws_proxy().await;
    // The upstream resets: the client sees a reset, not an end of stream.
    let mut c = raw_tunnel(&p).await;
    within(10, seen.recv()).await.expect("handshake seen");
    c.write_all(b"reset-me").await.expect("write");
    let mut rest = Vec::new();
    let r = within(10, c.read_to_end(&mut rest)).await;
    assert_eq!(
        r.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionReset),
        "the upstream's reset reached the client as an end ({rest:?})"
    );

    // The client resets: the upstream sees a reset.
    let c = raw_tunnel(&p).await;
    within(10, seen.recv()).await.expect("handshake seen");
    c.set_zero_linger().expect("linger");
    drop(c);
    assert_eq!(
        within(10, seen.recv())
            .await
            .expect("the upstream reported"),
        "tunnel ended: ConnectionReset"
    );
}

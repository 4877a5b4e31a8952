//! Hostile HTTP/2 clients, hostile upstreams: what each costs the proxy.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use http::Request;
use serin_proxy::Proxy;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that counts the streams it was sent.
struct CountingUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

async fn proxy_to(app: SocketAddr) -> Proxy {
    let p = proxy().await;
    route_svc_to(&p, app);
    p
}

/// An h2c upstream that counts streams; it answers `/slow` after 5 s, anything
/// else at once.
async fn counting_h2_upstream() -> CountingUpstream {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let r = requests.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    r.fetch_add(1, Relaxed);
                    let slow = req.uri().path() == "/slow";
                    async move {
                        if slow {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                b.timer(TokioTimer::new()).max_concurrent_streams(1000);
                let _ = b.serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    CountingUpstream { addr, requests }
}

/// Opens streams on one h2c connection, each reset once the upstream has it; returns how many
/// went out before the proxy stopped taking them, and whether it did.
async fn reset_streams(
    p: &Proxy,
    up: &CountingUpstream,
    n: usize,
    answer_every: usize,
) -> (usize, bool) {
    let tcp = TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(conn);
    let mut sent = 0;
    for i in 0..n {
        let answered = answer_every > 0 && i % answer_every == 0;
        let path = if answered {
            "http://svc/"
        } else {
            "http://svc/slow"
        };
        let req = Request::get(path).body(()).expect("request");
        let Ok(mut tx) = send.clone().ready().await else {
            return (sent, true);
        };
        let Ok((resp, mut stream)) = tx.send_request(req, true) else {
            return (sent, true);
        };
        sent += 1;
        if answered {
            // A stream the client waits for.
            if within(10, resp).await.is_err() {
                return (sent, true);
            }
            continue;
        }
        // Reset once the proxy has sent it upstream (a reset before it is even accepted is
        // hyper's to count).
        let before = sent;
        let gone = within(10, async {
            loop {
                if up.requests.load(Relaxed) >= before {
                    return false;
                }
                if tx.clone().ready().await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        if gone {
            return (sent, true);
        }
        stream.send_reset(h2::Reason::CANCEL);
    }
    (sent, false)
}

#[tokio::test]
async fn an_h2_client_resetting_stream_after_stream_is_cut_off_before_it_floods_the_upstream() {
    let up = counting_h2_upstream().await;
    let p = proxy_to(up.addr).await;
    let (sent, cut) = reset_streams(&p, &up, 1000, 0).await;
    assert!(
        cut,
        "1000 streams reset right after they went upstream, and the connection stays"
    );
    let limit = serin_http1::h2::MAX_PREMATURE_RESETS;
    assert!(
        up.requests.load(Relaxed) <= limit + 10,
        "{} streams reached the upstream before the proxy closed the connection ({sent} sent)",
        up.requests.load(Relaxed)
    );
}

#[tokio::test]
async fn an_h2_client_cancelling_some_streams_keeps_its_connection() {
    let up = counting_h2_upstream().await;
    let p = proxy_to(up.addr).await;
    // Every other stream is waited for: 150 cancelled, 150 answered.
    let (sent, cut) = reset_streams(&p, &up, 300, 2).await;
    assert!(
        !cut,
        "the connection was closed after {sent} streams, half of them answered"
    );
}

// ---- raw frames ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const ACK: u8 = 1;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET http://svc/` as an HPACK block (static-table indexes and one literal).
fn get_block() -> Vec<u8> {
    vec![0x82, 0x86, 0x84, 0x41, 0x03, b's', b'v', b'c']
}

/// Frames read from the proxy, until the connection ends.
#[derive(Debug, Default)]
struct Seen {
    goaway: Option<u32>,
    resets: Vec<(u32, u32)>,
    closed: bool,
}

/// Opens an h2c connection to the proxy, settles SETTINGS both ways, and returns its halves
/// with a task collecting what the proxy sends.
async fn raw_h2(
    addr: SocketAddr,
) -> (
    tokio::net::tcp::OwnedWriteHalf,
    tokio::sync::watch::Receiver<Arc<std::sync::Mutex<Seen>>>,
    Arc<std::sync::Mutex<Seen>>,
) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(PREFACE).await.expect("preface");
    wr.write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    // The server's SETTINGS come first.
    let mut head = [0u8; 9];
    rd.read_exact(&mut head).await.expect("server settings");
    assert_eq!(head[3], SETTINGS, "first frame from the proxy is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await.expect("settings payload");
    wr.write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .expect("ack");
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let (tx, rx) = tokio::sync::watch::channel(seen.clone());
    let s2 = seen.clone();
    tokio::spawn(async move {
        let mut head = [0u8; 9];
        loop {
            if rd.read_exact(&mut head).await.is_err() {
                s2.lock().unwrap().closed = true;
                tx.send_modify(|_| {});
                return;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if rd.read_exact(&mut payload).await.is_err() {
                s2.lock().unwrap().closed = true;
                tx.send_modify(|_| {});
                return;
            }
            match head[3] {
                GOAWAY if len >= 8 => {
                    s2.lock().unwrap().goaway = Some(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]));
                    tx.send_modify(|_| {});
                }
                RST_STREAM if len == 4 => {
                    s2.lock().unwrap().resets.push((
                        id,
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
                    ));
                    tx.send_modify(|_| {});
                }
                _ => {}
            }
        }
    });
    (wr, rx, seen)
}

/// Writes `f` over and over (up to `limit` bytes) until the proxy stops taking them; returns
/// how many bytes it took within `secs`.
async fn flood(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    f: &[u8],
    limit: usize,
    secs: u64,
) -> usize {
    let batch: Vec<u8> = f
        .iter()
        .copied()
        .cycle()
        .take(f.len() * (64 * 1024 / f.len()).max(1))
        .collect();
    let mut written = 0;
    let _ = tokio::time::timeout(Duration::from_secs(secs), async {
        while written < limit {
            if wr.write_all(&batch).await.is_err() {
                return;
            }
            written += batch.len();
        }
    })
    .await;
    written
}

/// Waits until the proxy has sent GOAWAY or closed the connection.
async fn ended(
    rx: &mut tokio::sync::watch::Receiver<Arc<std::sync::Mutex<Seen>>>,
    secs: u64,
) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            {
                let s = rx.borrow_and_update().clone();
                let s = s.lock().unwrap();
                if s.goaway.is_some() || s.closed {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn an_endless_continuation_is_answered_with_goaway_not_buffered() {
    let app = upstream("app").await;
    let p = proxy_to(app.addr).await;
    let (mut wr, mut rx, seen) = raw_h2(p.outbound_addr()).await;
    wr.write_all(&frame(HEADERS, END_STREAM, 1, &get_block()))
        .await
        .expect("headers");
    // Each CONTINUATION a whole 1 KB field, and never END_HEADERS.
    let mut field = vec![0x00, 0x06];
    field.extend_from_slice(b"x-fill");
    field.extend_from_slice(&[0x7f, 0xe9, 0x06]); // 1000, as an HPACK integer
    field.extend(std::iter::repeat_n(b'a', 1000));
    let limit = 256 << 20;
    let written = flood(&mut wr, &frame(CONTINUATION, 0, 1, &field), limit, 30).await;
    assert!(ended(&mut rx, 10).await, "the connection is still open");
    assert!(
        written < limit,
        "the proxy read {written} bytes of one header block"
    );
    assert_eq!(
        seen.lock().unwrap().goaway,
        Some(11),
        "GOAWAY ENHANCE_YOUR_CALM"
    );
}

/// A client that floods `f` and never reads what the proxy answers: the proxy must stop
/// reading (its answers are not queued without bound) or close the connection.
async fn unread_answers_stop_the_flood(f: Vec<u8>) {
    let app = upstream("app").await;
    let p = proxy_to(app.addr).await;
    let (mut wr, _rx, _seen) = raw_h2(p.outbound_addr()).await;
    let batch: Vec<u8> = f
        .iter()
        .copied()
        .cycle()
        .take(f.len() * (16 * 1024 / f.len()))
        .collect();
    let mut written = 0usize;
    let stalled = within(60, async {
        loop {
            match tokio::time::timeout(Duration::from_secs(1), wr.write_all(&batch)).await {
                Ok(Ok(())) => written += batch.len(),
                // A second without room: the proxy stopped reading.
                Err(_) => return true,
                // Closed by the proxy.
                Ok(Err(_)) => return false,
            }
        }
    })
    .await;
    let _ = stalled;
    assert!(
        written < 256 << 20,
        "{written} bytes read before the proxy pushed back"
    );
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_is_pushed_back() {
    unread_answers_stop_the_flood(frame(PING, 0, 0, &[0; 8])).await;
}

#[tokio::test]
async fn a_settings_flood_from_a_client_that_never_reads_is_pushed_back() {
    unread_answers_stop_the_flood(frame(SETTINGS, 0, 0, &[])).await;
}

#[tokio::test]
async fn a_window_update_past_2_31_is_a_flow_control_error() {
    let app = upstream("app").await;
    let p = proxy_to(app.addr).await;
    let (mut wr, mut rx, seen) = raw_h2(p.outbound_addr()).await;
    wr.write_all(&frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()))
        .await
        .expect("window update");
    assert!(ended(&mut rx, 10).await, "the connection is still open");
    assert_eq!(
        seen.lock().unwrap().goaway,
        Some(3),
        "GOAWAY FLOW_CONTROL_ERROR"
    );
}

#[tokio::test]
async fn streams_past_the_advertised_limit_are_refused_and_never_sent_upstream() {
    let mut app = upstream("app").await;
    let p = proxy_to(app.addr).await;
    let (mut wr, mut rx, seen) = raw_h2(p.outbound_addr()).await;
    // GET http://svc/hang: never answered.
    let mut block = vec![0x82, 0x86, 0x44, 0x05];
    block.extend_from_slice(b"/hang");
    block.extend_from_slice(&[0x41, 0x03, b's', b'v', b'c']);
    let limit = serin_http1::h2::MAX_CONCURRENT_STREAMS;
    for i in 0..limit + 100 {
        wr.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block))
            .await
            .expect("headers");
    }
    // Until the proxy has refused the 100 streams past its limit.
    within(20, async {
        loop {
            if seen.lock().unwrap().resets.len() >= 100 {
                return;
            }
            rx.changed().await.expect("connection open");
        }
    })
    .await;
    let mut upstream_saw = 0;
    while within(10, app.seen.recv()).await.is_some() {
        upstream_saw += 1;
        if upstream_saw == limit {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.seen.try_recv().is_err(),
        "more than {limit} streams went upstream"
    );
    let s = seen.lock().unwrap();
    assert!(
        s.resets
            .iter()
            .all(|&(id, code)| code == 7 && id > 2 * limit),
        "only the streams past the limit are refused (REFUSED_STREAM): {:?}",
        &s.resets[..5]
    );
    assert_eq!(s.goaway, None);
}

// ---- hostile h2 upstreams ----

const PUSH_PROMISE: u8 = 5;

/// What a raw h2 upstream does when a request (HEADERS on `stream`) arrives.
#[derive(Clone, Copy)]
enum UpstreamAbuse {
    /// Promise pushed streams, one after another, without answering.
    Push,
    /// Answer with a header block of this many bytes.
    HugeHead(usize),
}

/// A raw h2 upstream: settles SETTINGS and answers PINGs, plays `abuse` on the first
/// request, and reports the GOAWAY code the proxy sent (or `None` at the end of the
/// connection without one) and how many of its frames it wrote.
async fn hostile_h2_upstream(
    abuse: UpstreamAbuse,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(Option<u32>, usize)>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut rd, wr) = s.into_split();
                let wr = Arc::new(tokio::sync::Mutex::new(wr));
                let mut preface = [0u8; 24];
                if rd.read_exact(&mut preface).await.is_err() {
                    return;
                }
                let _ = wr.lock().await.write_all(&frame(SETTINGS, 0, 0, &[])).await;
                let written = Arc::new(AtomicUsize::new(0));
                let mut goaway = None;
                let mut head = [0u8; 9];
                while rd.read_exact(&mut head).await.is_ok() {
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let mut payload = vec![0u8; len];
                    if rd.read_exact(&mut payload).await.is_err() {
                        break;
                    }
                    let reply = match head[3] {
                        SETTINGS if head[4] & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
                        PING if head[4] & ACK == 0 => frame(PING, ACK, 0, &payload),
                        GOAWAY if len >= 8 => {
                            goaway = Some(u32::from_be_bytes([
                                payload[4], payload[5], payload[6], payload[7],
                            ]));
                            continue;
                        }
                        HEADERS => {
                            let (wr, written) = (wr.clone(), written.clone());
                            tokio::spawn(play(abuse, id, wr, written));
                            continue;
                        }
                        _ => continue,
                    };
                    if wr.lock().await.write_all(&reply).await.is_err() {
                        break;
                    }
                }
                let _ = tx.send((goaway, written.load(Relaxed)));
            });
        }
    });
    (addr, rx)
}

async fn play(
    abuse: UpstreamAbuse,
    stream: u32,
    wr: Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>,
    written: Arc<AtomicUsize>,
) {
    // A 1 KB header field, as HPACK (literal, new name, not indexed).
    let mut field = vec![0x00, 0x06];
    field.extend_from_slice(b"x-fill");
    field.extend_from_slice(&[0x7f, 0xe9, 0x06]);
    field.extend(std::iter::repeat_n(b'a', 1000));
    match abuse {
        UpstreamAbuse::Push => {
            for i in 0..10_000u32 {
                let mut p = (2 * i + 2).to_be_bytes().to_vec();
                p.extend_from_slice(&get_block());
                p.extend_from_slice(&field);
                if wr
                    .lock()
                    .await
                    .write_all(&frame(PUSH_PROMISE, END_HEADERS, stream, &p))
                    .await
                    .is_err()
                {
                    return;
                }
                written.fetch_add(1, Relaxed);
            }
        }
        UpstreamAbuse::HugeHead(bytes) => {
            // :status 200, then fields up to `bytes`, in CONTINUATIONs of 16 fields each.
            let mut w = wr.lock().await;
            if w.write_all(&frame(HEADERS, 0, stream, &[0x88]))
                .await
                .is_err()
            {
                return;
            }
            let piece: Vec<u8> = field
                .iter()
                .copied()
                .cycle()
                .take(field.len() * 16)
                .collect();
            let pieces = bytes.div_ceil(piece.len());
            for i in 0..pieces {
                let flags = if i + 1 == pieces { END_HEADERS } else { 0 };
                if w.write_all(&frame(CONTINUATION, flags, stream, &piece))
                    .await
                    .is_err()
                {
                    return;
                }
                written.fetch_add(1, Relaxed);
            }
            let _ = w.write_all(&frame(0, END_STREAM, stream, b"")).await;
        }
    }
}

/// `GET http://svc/` through `p` from an h2c client.
async fn h2_get(p: &Proxy) -> anyhow::Result<Got> {
    let addr = p.outbound_addr();
    try_send(
        &h2_client(addr),
        addr,
        "svc",
        "GET",
        "/",
        &[],
        bytes::Bytes::new(),
    )
    .await
}

#[tokio::test]
async fn an_h2_upstream_that_pushes_streams_is_cut_off() {
    let (up, mut seen) = hostile_h2_upstream(UpstreamAbuse::Push).await;
    let p = proxy_to(up).await;
    let got = within(30, h2_get(&p)).await;
    let (goaway, pushed) = within(30, seen.recv())
        .await
        .expect("upstream connection ended");
    assert_eq!(
        goaway,
        Some(1),
        "GOAWAY PROTOCOL_ERROR after a PUSH_PROMISE ({pushed} taken)"
    );
    assert!(pushed < 10_000, "every promise was taken");
    assert_eq!(
        got.expect("an answer").status,
        http::StatusCode::BAD_GATEWAY
    );
}

#[tokio::test]
async fn an_h2_upstream_response_head_is_held_to_the_http_1_limit() {
    let (up, mut seen) = hostile_h2_upstream(UpstreamAbuse::HugeHead(1 << 20)).await;
    let p = proxy_to(up).await;
    let got = within(30, h2_get(&p)).await;
    assert_eq!(
        got.expect("an answer").status,
        http::StatusCode::BAD_GATEWAY,
        "a 1 MiB response head was taken (an HTTP/1.1 upstream's is refused above 64 KiB)"
    );
    drop(p);
    let _ = within(30, seen.recv()).await;
}

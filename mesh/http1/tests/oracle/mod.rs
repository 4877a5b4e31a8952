//! The differential oracle, shared by `tests/differential.rs` (stable, generated inputs) and the
//! coverage-guided targets in `fuzz/` (nightly, `cargo fuzz`): the same bytes read by
//! `serin_http1` (its head parser and body framing, or a whole served connection) and by hyper's
//! HTTP/1.1 server. Where both accept a request they must agree on its method, target and body,
//! that is, on where it ends: a disagreement there is how requests get smuggled past a proxy.

// Each user takes the parts it needs.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use serin_http1::codec::Progress;
use serin_http1::h2::H2_PREFACE;
use serin_http1::head::parse_head;
use serin_http1::{ClientBody, H2Options, H2Server, TcpObserver};

/// One request as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

/// What serin_http1's codec reads from `input`: complete requests, in order, until one is
/// refused, incomplete, or ends the connection.
pub fn serin(input: &[u8]) -> Vec<Seen> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Ok(Some(head)) = parse_head(&mut buf) else {
            break;
        };
        let mut framing = head.body;
        let mut body = Vec::new();
        loop {
            match framing.step(&mut buf) {
                Ok(Progress::Frame { frame, .. }) => {
                    if let Ok(d) = frame.into_data() {
                        body.extend_from_slice(&d);
                    }
                }
                Ok(Progress::End) => break,
                Ok(Progress::More) | Err(_) => return out,
            }
        }
        out.push(Seen {
            method: head.req.method().to_string(),
            target: head.req.uri().to_string(),
            body,
        });
        if !head.keep_alive {
            break;
        }
    }
    out
}

/// A whole served connection: the requests its handler saw with their complete bodies (what
/// the proxy would send upstream), and the responses the client got.
#[derive(Debug)]
pub struct Served {
    pub requests: Vec<Seen>,
    /// Status codes of the responses, in order.
    pub statuses: Vec<u16>,
}

/// The readers, with the runtime and loopback listener they run on.
pub struct Oracle {
    rt: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    h2: Arc<H2Server>,
}

/// Counts nothing: the connection's metrics are not under test.
struct NoMetrics;

impl TcpObserver for NoMetrics {
    fn opened(&self) {}
    fn read(&self, _: u64) {}
    fn written(&self, _: u64) {}
    fn closed(&self, _: Duration, _: Option<i32>) {}
}

impl Default for Oracle {
    fn default() -> Self {
        Self::new()
    }
}

impl Oracle {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a loopback port");
        let h2 = rt.block_on(async { H2Server::new(H2Options::default()) });
        Oracle { rt, listener, h2 }
    }

    /// What hyper's HTTP/1.1 server reads from `input` (requests whose body it read completely).
    pub fn hyper(&self, input: &[u8]) -> Vec<Seen> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let input = Bytes::copy_from_slice(input);
        let record = seen.clone();
        self.rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let method = req.method().to_string();
                        let target = req.uri().to_string();
                        if let Ok(body) = req.into_body().collect().await {
                            record.lock().expect("lock").push(Seen {
                                method,
                                target,
                                body: body.to_bytes().to_vec(),
                            });
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Empty::<Bytes>::new(),
                        ))
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
            let feed = async move {
                let _ = client.write_all(&input).await;
                let _ = client.shutdown().await;
                let mut sink = Vec::new();
                let _ = client.read_to_end(&mut sink).await;
            };
            let _ =
                tokio::time::timeout(Duration::from_secs(2), async { tokio::join!(conn, feed) })
                    .await;
        });
        seen.lock().expect("lock").clone()
    }

    /// Serves `input` on a real loopback connection through `serin_http1::serve_connection`,
    /// the way the proxy's listeners do: the client writes it, half-closes, and reads until
    /// the server closes. The handler reads each body to its end and answers `200` (`400` when
    /// the body breaks). Panics when the connection does not end after the client's end of
    /// input (a hang is a finding too).
    pub fn connection(&self, input: &[u8]) -> Served {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        // A connection that opens with HTTP/2's preface is handed to the h2 server: its answer
        // is HTTP/2 frames, which the HTTP/1 reading below does not apply to.
        let h2 = input.starts_with(H2_PREFACE);
        let input = Bytes::copy_from_slice(input);
        let handler = move |req: http::Request<ClientBody>| {
            let record = record.clone();
            async move {
                let method = req.method().to_string();
                let target = req.uri().to_string();
                let status = match req.into_body().collect().await {
                    Ok(body) => {
                        record.lock().expect("lock").push(Seen {
                            method,
                            target,
                            body: body.to_bytes().to_vec(),
                        });
                        http::StatusCode::OK
                    }
                    Err(_) => http::StatusCode::BAD_REQUEST,
                };
                let mut r = http::Response::new(
                    http_body_util::Full::new(Bytes::from_static(b"ok"))
                        .map_err(|never| -> serin_http1::BoxError { match never {} }),
                );
                *r.status_mut() = status;
                r
            }
        };
        let got = self.rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = self.listener.local_addr().expect("addr");
            let (client, accepted) =
                tokio::join!(tokio::net::TcpStream::connect(addr), self.listener.accept());
            let (client, (server, _)) = (client.expect("connect"), accepted.expect("accept"));
            let (_stop_tx, stop) = tokio::sync::watch::channel(false);
            let served = tokio::spawn(serin_http1::serve_connection(
                server,
                Arc::new(NoMetrics),
                stop,
                self.h2.clone(),
                handler,
            ));
            let (mut rd, mut wr) = client.into_split();
            let feed = async move {
                // The server may refuse and close before taking everything.
                let _ = wr.write_all(&input).await;
                let _ = wr.shutdown().await;
            };
            let read = async move {
                let mut out = Vec::new();
                let _ = rd.read_to_end(&mut out).await;
                out
            };
            let ((), out) =
                tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(feed, read) })
                    .await
                    .expect("the connection hung after the client's end of input");
            tokio::time::timeout(Duration::from_secs(10), served)
                .await
                .expect("the connection task did not end after the client's end of input")
                .expect("the connection task panicked");
            out
        });
        let statuses = if h2 {
            // The server speaks first on HTTP/2: its SETTINGS frame (type 0x4), unless it
            // closed at once.
            assert!(
                got.is_empty() || (got.len() >= 9 && got[3] == 0x4),
                "an HTTP/2 connection that does not open with SETTINGS: {got:?}"
            );
            Vec::new()
        } else {
            responses(&got)
        };
        Served {
            requests: seen.lock().expect("lock").clone(),
            statuses,
        }
    }

    /// Where serin's codec and hyper both accepted a request, they read the same one. Returns
    /// how many requests were compared.
    pub fn check(&self, input: &[u8]) -> usize {
        let ours = serin(input);
        let theirs = self.hyper(input);
        agree(input, &ours, &theirs)
    }

    /// The whole connection against hyper: the same agreement, and well-formed responses, one
    /// `200` per request handled, any other status only last. Returns how many requests were
    /// compared.
    pub fn check_connection(&self, input: &[u8]) -> usize {
        let served = self.connection(input);
        if input.starts_with(H2_PREFACE) {
            // HTTP/2 after the preface: hyper's HTTP/1 reading is no oracle for it.
            return 0;
        }
        let theirs = self.hyper(input);
        let n = agree(input, &served.requests, &theirs);
        let ok = served.statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(
            ok,
            served.requests.len(),
            "a 200 per request handled; input: {:?}, statuses {:?}",
            String::from_utf8_lossy(input),
            served.statuses
        );
        if let Some(i) = served.statuses.iter().position(|s| *s != 200) {
            assert_eq!(
                i + 1,
                served.statuses.len(),
                "nothing after a refusal; input: {:?}, statuses {:?}",
                String::from_utf8_lossy(input),
                served.statuses
            );
        }
        n
    }
}

fn agree(input: &[u8], ours: &[Seen], theirs: &[Seen]) -> usize {
    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        assert_eq!(
            a,
            b,
            "request {i} read differently; input: {:?}\nserin: {ours:?}\nhyper: {theirs:?}",
            String::from_utf8_lossy(input)
        );
    }
    ours.len().min(theirs.len())
}

/// The status codes of the responses in `bytes`; panics on anything that is not a sequence
/// of complete, length- or chunk-framed HTTP/1.1 responses (a body framed by the close ends
/// the sequence).
fn responses(mut bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "malformed response ({other:?}): {:?}",
                String::from_utf8_lossy(bytes)
            ),
        };
        let status = resp.code.expect("a complete head has a status");
        let mut length = None;
        let mut chunked = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h.value.eq_ignore_ascii_case(b"chunked");
            }
        }
        out.push(status);
        bytes = &bytes[head..];
        if (100..200).contains(&status) {
            continue;
        }
        if chunked {
            let mut buf = BytesMut::from(bytes);
            let mut framing =
                serin_http1::codec::Framing::Chunked(serin_http1::codec::ChunkState::Size);
            loop {
                match framing.step(&mut buf) {
                    Ok(Progress::Frame { .. }) => {}
                    Ok(Progress::End) => break,
                    Ok(Progress::More) => panic!("chunked response body cut short"),
                    Err(e) => panic!("malformed chunked response body: {e}"),
                }
            }
            let used = bytes.len() - buf.len();
            bytes = &bytes[used..];
        } else if let Some(n) = length {
            assert!(bytes.len() >= n, "response body cut short");
            bytes = &bytes[n..];
        } else {
            break;
        }
    }
    out
}

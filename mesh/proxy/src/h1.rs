//! A lean HTTP/1.1 client connection to an upstream, driven by the request's own task.
//!
//! Why not hyper's client connection: it runs each connection as its own task and hands the
//! request, the response and every body chunk across channels, so one proxied request woke
//! three tasks and passed five messages. Here the task serving the client writes the request,
//! reads the response head, and its response body reads straight from the upstream socket;
//! when that body ends the connection goes back to its endpoint's idle list. Nothing is
//! spawned per connection or per request.
//!
//! Scope: what a proxy needs from RFC 9112 — requests framed by `content-length` or chunked
//! (the proxy never forwards `transfer-encoding` itself), responses framed by length, chunked
//! (with trailers) or connection close, interim 1xx responses skipped, a `101` to an upgrade
//! the client asked for handed over as the connection itself ([`Upgraded`]). The
//! client-facing side, and the body framing both share, are in `serin_http1`.

use std::future::Future as _;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::balance::Endpoint;
use crate::body::{BoxError, ReqBody};
use crate::io::{CountingIo, Opened, TcpObserver};
use crate::metrics::TcpMetrics;
use serin_http1::codec::{ChunkState, Framing, Progress, connection_names_others};
use serin_http1::{UpgradeRequested, Upgraded};

/// Largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Read size.
const READ_CHUNK: usize = 8 * 1024;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before any response byte.
    #[error("connection closed before a response")]
    Closed,
    /// The response head does not parse.
    #[error("invalid response head: {0}")]
    Parse(#[from] httparse::Error),
    /// The response head is larger than the limit.
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The response is framed in a way that cannot be trusted (e.g. conflicting lengths).
    #[error("invalid response framing: {0}")]
    Framing(&'static str),
    /// The request body failed while it was being sent.
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
    /// No response head before the deadline.
    #[error("no response before the deadline")]
    TimedOut,
}

impl H1Error {
    /// True when the upstream went away before answering at all, so a request that has no
    /// body can be sent again on another connection.
    fn nothing_received(&self) -> bool {
        match self {
            H1Error::Closed => true,
            H1Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// One upstream TCP connection speaking HTTP/1.1, counted in the `tcp_*` metrics.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// Request heads are encoded here (kept, so a connection encodes without allocating).
    out: Vec<u8>,
    /// Counts the connection while it lives, and its bytes.
    tcp: Opened,
    /// Response deadlines ([`within`]): one timer per connection, moved forward only when it
    /// fires early, since arming and removing a timer for every request costs more.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    /// Wraps a freshly opened stream (counts it as opened).
    pub fn new(stream: TcpStream, tcp: Arc<TcpMetrics>) -> Self {
        Conn {
            stream,
            buf: BytesMut::new(),
            out: Vec::new(),
            tcp: Opened::new(tcp as Arc<dyn TcpObserver>),
            timer: None,
        }
    }

    /// An idle connection is usable when nothing arrived on it since its last response: no
    /// leftover bytes, and the socket not readable (a readable idle socket means the upstream
    /// closed it or sent garbage). Our last read of a response left the socket not readable
    /// (a short read clears tokio's readiness), so this costs no system call.
    pub fn is_idle_usable(&self) -> bool {
        self.buf.is_empty()
            && self
                .stream
                .poll_read_ready(&mut Context::from_waker(std::task::Waker::noop()))
                .is_pending()
    }

    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            // Reclaims the old allocation when every chunk handed out from it is gone.
            self.buf.reserve(READ_CHUNK);
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.make_room();
        let Conn {
            stream, buf, tcp, ..
        } = self;
        let n = ready!(pin!(stream.read_buf(buf)).poll(cx)).inspect_err(|e| tcp.note_error(e))?;
        tcp.read(n as u64);
        Poll::Ready(Ok(n))
    }
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqFraming {
    None,
    Length,
    Chunked,
}

/// A request ready to be written (again, when a reused connection turns out to be closed).
pub struct Prepared {
    parts: http::request::Parts,
    framing: ReqFraming,
    length: Option<u64>,
    body: ReqBody,
    head_method: bool,
    /// The client asked to switch protocols ([`UpgradeRequested`]): a `101` is its answer.
    upgrade: bool,
    /// A request that can safely be sent twice (no body, idempotent method).
    pub replayable: bool,
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Decides how `body` is framed for `parts` (already pointed at the endpoint, hop-by-hop
/// headers removed).
pub fn prepare(parts: http::request::Parts, body: ReqBody) -> Prepared {
    let length = body.size_hint().exact();
    let framing = if body.is_end_stream() {
        ReqFraming::None
    } else if length.is_some() {
        ReqFraming::Length
    } else {
        ReqFraming::Chunked
    };
    let head_method = parts.method == Method::HEAD;
    let upgrade = parts.extensions.get::<UpgradeRequested>().is_some();
    let replayable = framing == ReqFraming::None && idempotent(&parts.method);
    Prepared {
        parts,
        framing,
        length,
        body,
        head_method,
        upgrade,
        replayable,
    }
}

/// Encodes the request head in origin form with the framing its body needs.
fn encode_head(req: &Prepared, head: &mut Vec<u8>) {
    let parts = &req.parts;
    let framing = req.framing;
    head.clear();
    head.reserve(128 + 64 * parts.headers.len());
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        // A chunked body has no length; a stale content-length would contradict it.
        if framing == ReqFraming::Chunked && name == header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match framing {
        ReqFraming::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ReqFraming::Length if !parts.headers.contains_key(header::CONTENT_LENGTH) => {
            let n = req.length.unwrap_or(0);
            head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        _ => {}
    }
    head.extend_from_slice(b"\r\n");
}

async fn write_all(stream: &mut TcpStream, tcp: &Opened, data: &[u8]) -> io::Result<()> {
    stream
        .write_all(data)
        .await
        .inspect_err(|e| tcp.note_error(e))?;
    tcp.written(data.len() as u64);
    Ok(())
}

/// The response head, parsed.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Sends a prepared request on `conn` and reads the response head, failing with
/// [`H1Error::TimedOut`] once `deadline` passes. On an error that left nothing received,
/// `Prepared` is still intact for a retry when it is replayable.
pub async fn exchange(
    mut conn: Conn,
    req: &mut Prepared,
    ep: Arc<Endpoint>,
    deadline: Option<tokio::time::Instant>,
) -> Result<Response<H1Body>, H1Error> {
    encode_head(req, &mut conn.out);
    let mut timer = conn.timer.take();
    let work = async {
        if req.framing == ReqFraming::None {
            let Conn {
                stream, tcp, out, ..
            } = &mut conn;
            write_all(stream, tcp, out).await?;
            read_head(&mut conn, req.head_method, req.upgrade).await
        } else {
            // Boxed: the plain path above stays small to move around.
            Box::pin(exchange_with_body(&mut conn, req)).await
        }
    };
    let head = match deadline {
        Some(at) => within(&mut timer, at, work).await?,
        None => work.await?,
    };
    conn.timer = timer;
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        // The connection leaves the pool for good: it is the upstream side of a tunnel now,
        // with whatever the upstream sent after its head.
        let Conn {
            stream,
            mut buf,
            tcp,
            ..
        } = conn;
        let read_first = buf.split().freeze();
        let mut resp = Response::new(H1Body {
            conn: None,
            ep,
            framing: Framing::Done,
            keep_alive: false,
        });
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        resp.extensions_mut()
            .insert(Upgraded::new(CountingIo::counted(stream, tcp), read_first));
        return Ok(resp);
    }
    let mut resp = Response::new(H1Body {
        conn: Some(conn),
        ep,
        framing: head.framing,
        keep_alive: head.keep_alive,
    });
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    Ok(resp)
}

/// Runs `work` until `deadline`, on the connection's `timer` (made at its first deadline).
async fn within<T>(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    deadline: tokio::time::Instant,
    work: impl std::future::Future<Output = Result<T, H1Error>>,
) -> Result<T, H1Error> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if timer.deadline() > deadline {
        // Set for a later deadline (a longer route timeout): it would fire too late.
        timer.as_mut().reset(deadline);
    }
    let mut work = pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = work.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return Poll::Ready(Err(H1Error::TimedOut));
            }
            // Set for an earlier request: wait for this one's deadline.
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// Full duplex: an upstream may answer (and stop reading) before the whole body is sent; the
/// response wins and the connection is not reused.
async fn exchange_with_body(conn: &mut Conn, req: &mut Prepared) -> Result<Head, H1Error> {
    let body = std::mem::replace(&mut req.body, ReqBody::Empty);
    let Conn {
        stream,
        buf,
        out,
        tcp,
        ..
    } = conn;
    let (mut rd, mut wr) = stream.split();
    let send = send_body(&mut wr, tcp, out, body, req.framing);
    let recv = read_head_from(&mut rd, buf, tcp, req.head_method, req.upgrade);
    let mut send = pin!(send);
    let mut recv = pin!(recv);
    let mut sent = false;
    loop {
        tokio::select! {
            biased;
            h = &mut recv => {
                let mut h = h?;
                if !sent {
                    h.keep_alive = false;
                }
                return Ok(h);
            }
            r = &mut send, if !sent => {
                r?;
                sent = true;
            }
        }
    }
}

async fn send_body(
    wr: &mut tokio::net::tcp::WriteHalf<'_>,
    tcp: &Opened,
    head: &[u8],
    mut body: ReqBody,
    framing: ReqFraming,
) -> Result<(), H1Error> {
    use http_body_util::BodyExt as _;
    let chunked = framing == ReqFraming::Chunked;
    // The head goes out with the first piece of body when it is already there.
    let mut out: Vec<u8> = head.to_vec();
    loop {
        let frame = match body.frame().await {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => return Err(H1Error::RequestBody(e)),
        };
        match frame {
            Some(f) => match f.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.extend_from_slice(&data);
                    }
                }
                Err(f) => {
                    if chunked && let Ok(trailers) = f.into_trailers() {
                        out.extend_from_slice(b"0\r\n");
                        for (n, v) in &trailers {
                            out.extend_from_slice(n.as_str().as_bytes());
                            out.extend_from_slice(b": ");
                            out.extend_from_slice(v.as_bytes());
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"\r\n");
                        wr.write_all(&out)
                            .await
                            .inspect_err(|e| tcp.note_error(e))?;
                        tcp.written(out.len() as u64);
                        return Ok(());
                    }
                    // Trailers cannot travel with a content-length body; they are dropped.
                    continue;
                }
            },
            None => {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                wr.write_all(&out)
                    .await
                    .inspect_err(|e| tcp.note_error(e))?;
                tcp.written(out.len() as u64);
                return Ok(());
            }
        }
        wr.write_all(&out)
            .await
            .inspect_err(|e| tcp.note_error(e))?;
        tcp.written(out.len() as u64);
        out.clear();
    }
}

async fn read_head(conn: &mut Conn, head_method: bool, upgrade: bool) -> Result<Head, H1Error> {
    let Conn {
        stream, buf, tcp, ..
    } = conn;
    read_head_from(stream, buf, tcp, head_method, upgrade).await
}

async fn read_head_from<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    tcp: &Opened,
    head_method: bool,
    upgrade: bool,
) -> Result<Head, H1Error> {
    // A head is parsed when its first bytes come (so garbage is refused at once) and then
    // once its end has arrived, not again on every read: an upstream sending a 60 KB head
    // 10 bytes at a time cost 0.4 s of CPU that way. `searched`: how far `buf` is known to
    // hold no end of a head.
    let mut searched = 0;
    let mut looked = false;
    loop {
        if !buf.is_empty() && (!looked || head_end_after(buf, searched)) {
            match parse_head(buf, head_method, upgrade)? {
                Some(Parsed::Final(h)) => return Ok(h),
                // An interim response (100 Continue, 103 Early Hints): skip it.
                Some(Parsed::Interim) => {
                    (searched, looked) = (0, false);
                    continue;
                }
                None => looked = true,
            }
        }
        if buf.len() > MAX_HEAD {
            return Err(H1Error::HeadTooLarge);
        }
        searched = buf.len();
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let n = rd.read_buf(buf).await.inspect_err(|e| tcp.note_error(e))?;
        tcp.read(n as u64);
        if n == 0 {
            return Err(if buf.is_empty() {
                H1Error::Closed
            } else {
                H1Error::Io(io::ErrorKind::UnexpectedEof.into())
            });
        }
    }
}

enum Parsed {
    Final(Head),
    Interim,
}

/// Whether `buf` holds the empty line that ends a head (CRLF or bare LF, as httparse reads
/// them) anywhere from `from` on, backing up so that one split across reads is found.
fn head_end_after(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(3).min(buf.len())..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Parses a response head at the start of `buf`, consuming it; `None` when incomplete.
fn parse_head(
    buf: &mut BytesMut,
    head_method: bool,
    upgrade: bool,
) -> Result<Option<Parsed>, H1Error> {
    // Most responses carry a handful of headers: a small table is cheaper to set up, and the
    // full one is only built for the rare response that needs it.
    match parse_head_with::<FEW_HEADERS>(buf, head_method, upgrade) {
        Err(H1Error::Parse(httparse::Error::TooManyHeaders)) => {
            parse_head_with::<MAX_HEADERS>(buf, head_method, upgrade)
        }
        r => r,
    }
}

/// Header slots tried first.
const FEW_HEADERS: usize = 24;

fn parse_head_with<const N: usize>(
    buf: &mut BytesMut,
    head_method: bool,
    upgrade: bool,
) -> Result<Option<Parsed>, H1Error> {
    let mut slots = [httparse::EMPTY_HEADER; N];
    let mut res = httparse::Response::new(&mut slots);
    let len = match res.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let code = res.code.unwrap_or(0);
    if code == 101 && !upgrade {
        // A switch nobody asked for is a broken upstream; relayed, it would make the client
        // believe the connection now speaks another protocol.
        return Err(H1Error::Framing(
            "101 Switching Protocols without an upgrade request",
        ));
    }
    if (100..200).contains(&code) && code != 101 {
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Framing("bad status code"))?;
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Header positions inside the head, so values can share its bytes instead of copying.
    let base = buf.as_ptr() as usize;
    let count = res.headers.len();
    let mut spans = [(0usize, 0usize, 0usize, 0usize); N];
    for (span, h) in spans.iter_mut().zip(res.headers.iter()) {
        let n = h.name.as_ptr() as usize - base;
        let v = h.value.as_ptr() as usize - base;
        *span = (n, n + h.name.len(), v, v + h.value.len());
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te = false;
    let mut close = version == Version::HTTP_10;
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns..ne])
            .map_err(|_| H1Error::Framing("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| H1Error::Framing("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            // Digits only: `+5` parses as a number but is forwarded as written, and the
            // client may read it differently (or not at all).
            let v = value.as_bytes().trim_ascii();
            let n: u64 = Some(v)
                .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .ok_or(H1Error::Framing("invalid content-length"))?;
            match length {
                Some(l) if l != n => return Err(H1Error::Framing("conflicting content-length")),
                // The same length again: forwarded once.
                Some(_) => continue,
                None => length = Some(n),
            }
            if status == StatusCode::NO_CONTENT {
                // RFC 9110 §8.6: never in a 204; the client could wait for a body that
                // does not come. Read as no body, forwarded without it.
                continue;
            }
        } else if name == header::TRANSFER_ENCODING {
            te = true;
            // Only the last coding decides; chunked must be last when present.
            chunked = value
                .to_str()
                .ok()
                .and_then(|s| s.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name == header::CONNECTION {
            let v = value.as_bytes();
            for token in v.split(|b| *b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    close = false;
                }
            }
            if !connection_names_others(v) {
                // Hop-by-hop and fully read: storing it only to strip it later costs more.
                continue;
            }
        }
        headers.append(name, value);
    }
    if te && length.is_some() {
        // Both: Transfer-Encoding wins, and a proxy must drop the Content-Length before
        // forwarding (RFC 9112 §6.3). A peer that sends both is not trusted with another request.
        headers.remove(header::CONTENT_LENGTH);
        close = true;
    }
    let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
        // What follows the head is the new protocol, not a body.
        close = true;
        Framing::Done
    } else if head_method || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if te {
        if chunked {
            Framing::Chunked(ChunkState::Size)
        } else {
            // Not chunked last: the body runs to the close (RFC 9112 §6.3).
            Framing::Close
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    let keep_alive = !close && !matches!(framing, Framing::Close);
    Ok(Some(Parsed::Final(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    })))
}

/// A response body read straight from the upstream connection. When it ends the connection
/// returns to its endpoint's idle list (if the upstream keeps it alive); dropped before the
/// end, the connection is closed, since the rest of the body is still on the wire.
pub struct H1Body {
    conn: Option<Conn>,
    ep: Arc<Endpoint>,
    framing: Framing,
    keep_alive: bool,
}

impl H1Body {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.ep.pool.put_h1(conn);
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.buf) {
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(Progress::Frame { frame, last }) => {
                    if last {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Progress::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Progress::More) => {}
            }
            // More bytes needed.
            let closing = matches!(this.framing, Framing::Close);
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if closing => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection in the middle of the body",
                    )))));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        self.framing.size_hint()
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body with nothing left (the server stops polling at `is_end_stream`, and never
        // polls HEAD, 204 or 304 bodies) still returns its connection.
        if matches!(self.framing, Framing::Length(0)) {
            self.finish();
        }
    }
}

/// Sends `req` on connections from `ep`'s idle list or fresh ones from `connect`, retrying a
/// replayable request when a reused connection turns out to be closed.
pub async fn send<F, Fut>(
    ep: &Arc<Endpoint>,
    mut req: Prepared,
    deadline: Option<tokio::time::Instant>,
    connect: F,
) -> Result<Response<H1Body>, SendFailure>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Conn, io::Error>>,
{
    loop {
        let (conn, reused) = match ep.pool.take_h1() {
            Some(c) => (c, true),
            None => {
                let connect = Box::pin(connect());
                let conn = match deadline {
                    Some(at) => tokio::time::timeout_at(at, connect)
                        .await
                        .map_err(|_| SendFailure::Upstream(H1Error::TimedOut))?,
                    None => connect.await,
                };
                (conn.map_err(SendFailure::Connect)?, false)
            }
        };
        match exchange(conn, &mut req, ep.clone(), deadline).await {
            Ok(r) => return Ok(r),
            Err(e) if reused && req.replayable && e.nothing_received() => {
                tracing::debug!(endpoint = %ep.addr, error = %e, "idle connection was closed; sending again");
            }
            Err(e) => return Err(SendFailure::Upstream(e)),
        }
    }
}

/// Why [`send`] failed.
#[derive(Debug)]
pub enum SendFailure {
    /// No connection could be opened.
    Connect(io::Error),
    /// The exchange failed.
    Upstream(H1Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], head_method: bool) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(raw);
        match parse_head(&mut buf, head_method, false).expect("parses") {
            Some(Parsed::Final(h)) => (h, buf),
            _ => panic!("incomplete or interim"),
        }
    }

    #[test]
    fn a_length_framed_response_keeps_the_connection_and_leaves_the_body_buffered() {
        let (h, rest) = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello",
            false,
        );
        assert_eq!(h.status, StatusCode::OK);
        assert!(matches!(h.framing, Framing::Length(5)));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(&rest[..], b"hello");
    }

    #[test]
    fn conflicting_lengths_are_refused() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
        );
        assert!(matches!(
            parse_head(&mut buf, false, false),
            Err(H1Error::Framing(_))
        ));
    }

    #[test]
    fn close_http10_and_unframed_responses_are_not_reused() {
        let (h, _) = parse(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(!h.keep_alive);
        let (h, _) = parse(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false);
        assert!(!h.keep_alive);
        let (h, _) = parse(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\n\r\nuntil close", false);
        assert!(matches!(h.framing, Framing::Close));
        assert!(!h.keep_alive);
    }

    #[test]
    fn head_204_and_304_responses_have_no_body_whatever_their_length_says() {
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n", true);
        assert!(matches!(h.framing, Framing::Length(0)));
        let (h, _) = parse(
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 50\r\n\r\n",
            false,
        );
        assert!(matches!(h.framing, Framing::Length(0)));
    }

    #[test]
    fn many_headers_are_read_up_to_the_limit() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..60 {
            raw.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"content-length: 0\r\n\r\n");
        let (h, _) = parse(&raw, false);
        assert_eq!(h.headers.len(), 61);
        assert_eq!(h.headers["x-h59"], "59");
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..MAX_HEADERS + 1 {
            raw.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&raw[..]);
        assert!(parse_head(&mut buf, false, false).is_err());
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let head = b"HTTP/1.1 200 OK\r\nx: y\r\n\r\n";
        assert!(head_end_after(head, 0));
        // Searched up to each split point already: the end is still found.
        for split in 0..head.len() {
            assert!(head_end_after(head, split), "split at {split}");
        }
        assert!(!head_end_after(b"HTTP/1.1 200 OK\r\nx: y\r\n", 0));
        assert!(head_end_after(b"HTTP/1.1 200 OK\nx: y\n\n", 0));
        assert!(!head_end_after(b"", 0));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"[..],
        );
        assert!(matches!(
            parse_head(&mut buf, false, false),
            Ok(Some(Parsed::Interim))
        ));
        match parse_head(&mut buf, false, false) {
            Ok(Some(Parsed::Final(h))) => assert_eq!(h.status, StatusCode::CREATED),
            _ => panic!("expected the final response"),
        }
    }

    #[test]
    fn a_transfer_coding_not_ending_in_chunked_runs_to_the_close() {
        let (h, _) = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            false,
        );
        assert!(matches!(h.framing, Framing::Close));
        let (h, _) = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
            false,
        );
        assert!(matches!(h.framing, Framing::Chunked(_)));
    }
}

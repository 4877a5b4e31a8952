//! The client-facing side of the outbound and inbound listeners: the proxy's own HTTP/1.1
//! server, and the hand-off of h2c (prior knowledge) connections to hyper's HTTP/2 server.
//!
//! Why not hyper's HTTP/1.1 server: its dispatcher, buffered I/O, per-request header-read
//! timer and graceful-shutdown wrapper cost about a quarter of the proxy's user CPU per
//! request, more than routing and forwarding together. Here one task per connection reads into
//! one buffer, parses the head with `httparse`, hands the request to the forwarding code and
//! writes the response head together with the first piece of body in one `writev`, then loops
//! for the next request (pipelined requests are answered in order).
//!
//! Scope (RFC 9112, server side): request bodies framed by `content-length` or chunked (with
//! trailers), streamed both ways; `Expect: 100-continue` answered when the body is first read;
//! HTTP/1.0 and `Connection: close`; responses framed by length, chunked (trailers sent when
//! the client asked with `TE: trailers`) or, for HTTP/1.0 clients, by closing; no body for
//! HEAD, 1xx, 204 and 304; 400 for a malformed head, 431 for a head over [`MAX_HEAD`] bytes or
//! [`MAX_HEADERS`] headers. No upgrades (the proxy strips `Upgrade`). A connection whose first
//! bytes are the HTTP/2 preface goes to hyper's HTTP/2 server, gRPC trailers and all.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::body::{BoxError, ClientBody, ResBody};
use crate::h1::{ChunkState, Framing, H1Error, Progress, connection_names_others};
use crate::io::{CountingIo, Opened};
use crate::metrics::TcpMetrics;

/// Largest request head (request line and headers) accepted; larger ones get a 431. The same
/// order as hyper's default buffer limit, which served these listeners before.
pub const MAX_HEAD: usize = 400 * 1024;
/// Most request headers accepted (hyper's default too); more get a 431.
pub const MAX_HEADERS: usize = 100;
/// Time allowed for a complete request head, counted from the moment the connection starts
/// waiting for it (so an idle keep-alive connection is closed after it, as hyper did).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Header slots tried first; the full table is only built for heads that need it.
const FEW_HEADERS: usize = 24;
/// Read size.
const READ_CHUNK: usize = 8 * 1024;
/// How long, and how much input at most, a closing connection still reads and drops.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What a listener answers requests with.
pub trait Handler: Clone + Send + Sync + 'static {
    /// The response future.
    type Future: Future<Output = Response<ResBody>> + Send + 'static;
    /// Handles one request.
    fn call(&self, req: Request<ClientBody>) -> Self::Future;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request<ClientBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ResBody>> + Send + 'static,
{
    type Future = Fut;
    fn call(&self, req: Request<ClientBody>) -> Fut {
        self(req)
    }
}

/// One accepted connection: state shared by the connection task and the request body it
/// lends its socket to.
struct Shared {
    stream: TcpStream,
    /// Counts the connection (open until the last holder lets go) and its bytes.
    tcp: Opened,
    /// `Expect: 100-continue` bookkeeping; only touched for requests that ask for it.
    cont: Mutex<ContinueState>,
}

#[derive(Default)]
struct ContinueState {
    /// The final response has started: no more `100 Continue`.
    responded: bool,
    /// Bytes of `100 Continue` written so far.
    sent: usize,
}

impl Shared {
    /// Reads what is there into `buf`; `Pending` until the socket is readable.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            // Reclaims the old allocation when every piece handed out from it is gone.
            buf.reserve(READ_CHUNK);
        }
        loop {
            let spare = buf.capacity() - buf.len();
            let mut got = 0;
            // A read that does not fill the buffer has drained the socket. Reported to
            // `try_io` as "would block", it makes tokio forget the socket's readiness now (as
            // its own `AsyncRead` does) instead of after one more read that finds nothing:
            // one system call less per request.
            let read = self.stream.try_io(Interest::READABLE, || {
                let n = self.stream.try_read_buf(buf)?;
                got = n;
                if n > 0 && n < spare {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(n)
                }
            });
            match read {
                Ok(n) => {
                    self.tcp.read_bytes.fetch_add(n as u64, Relaxed);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got > 0 {
                        self.tcp.read_bytes.fetch_add(got as u64, Relaxed);
                        return Poll::Ready(Ok(got));
                    }
                    ready!(self.stream.poll_read_ready(cx))?;
                }
                Err(e) => {
                    self.tcp.note_error(&e);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// Writes all of `bufs`.
    async fn write_all(&self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut bufs = bufs;
        // Zero-length slices would make an empty write look like progress.
        while !bufs.is_empty() && bufs[0].is_empty() {
            bufs = &mut bufs[1..];
        }
        while !bufs.is_empty() {
            match self.stream.try_write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tcp.write_bytes.fetch_add(n as u64, Relaxed);
                    IoSlice::advance_slices(&mut bufs, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.stream.writable().await?,
                Err(e) => {
                    self.tcp.note_error(&e);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Sends `100 Continue` unless the final response has started. `Pending` only while the
    /// socket cannot take the bytes.
    fn poll_continue(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            {
                let mut st = self.cont.lock().unwrap_or_else(|p| p.into_inner());
                if st.responded || st.sent == CONTINUE.len() {
                    return Poll::Ready(Ok(()));
                }
                match self.stream.try_write(&CONTINUE[st.sent..]) {
                    Ok(n) => {
                        self.tcp.write_bytes.fetch_add(n as u64, Relaxed);
                        st.sent += n;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            ready!(self.stream.poll_write_ready(cx))?;
        }
    }

    /// Marks the final response as started and finishes a `100 Continue` cut short, so the
    /// two never interleave on the wire.
    async fn start_response(&self) -> io::Result<()> {
        let rest = {
            let mut st = self.cont.lock().unwrap_or_else(|p| p.into_inner());
            st.responded = true;
            if st.sent > 0 && st.sent < CONTINUE.len() {
                let rest = st.sent;
                st.sent = CONTINUE.len();
                Some(rest)
            } else {
                None
            }
        };
        if let Some(from) = rest {
            self.write_all(&mut [IoSlice::new(&CONTINUE[from..])])
                .await?;
        }
        Ok(())
    }
}

/// Serves one accepted connection until the client closes it, an error, or `stop` (idle
/// connections close at once; a request in progress is answered first, with
/// `connection: close`).
pub async fn serve_connection<H: Handler>(
    stream: TcpStream,
    tcp: Arc<TcpMetrics>,
    stop: watch::Receiver<bool>,
    h2: Arc<http2::Builder<TokioExecutor>>,
    handler: H,
) {
    let shared = Arc::new(Shared {
        stream,
        tcp: Opened::new(tcp),
        cont: Mutex::new(ContinueState::default()),
    });
    let mut conn = Conn {
        shared,
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::new(),
        stop,
        draining: false,
        timer: None,
        head_started: None,
    };
    // Prior-knowledge HTTP/2 starts with a fixed preface; HTTP/1.x never does.
    loop {
        if conn.buf.len() >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&conn.buf) {
            break;
        }
        match conn.wait_readable().await {
            Wait::Read(n) if n > 0 => {}
            _ => return,
        }
    }
    if conn.buf.starts_with(H2_PREFACE) {
        serve_h2(conn, h2, handler).await;
        return;
    }
    if let Err(e) = conn.serve_h1(handler).await {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

async fn serve_h2<H: Handler>(conn: Conn, h2: Arc<http2::Builder<TokioExecutor>>, handler: H) {
    let Conn {
        shared,
        buf,
        mut stop,
        ..
    } = conn;
    let Ok(shared) = Arc::try_unwrap(shared) else {
        // Nothing else holds it before the first request.
        return;
    };
    // The connection is already counted as open; the wrapper takes that over.
    let io = CountingIo::counted(shared.stream, shared.tcp);
    let io = TokioIo::new(Rewind {
        pre: buf.freeze(),
        inner: io,
    });
    let svc = service_fn(move |req: Request<Incoming>| {
        let fut = handler.call(req.map(ClientBody::H2));
        async move { Ok::<_, std::convert::Infallible>(fut.await) }
    });
    let mut served = pin!(h2.serve_connection(io, svc));
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = stopped(&mut stop) => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "h2c client connection ended with an error");
    }
}

/// Resolves once the proxy is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Replays bytes already read (the HTTP/2 preface) before reading from the socket.
struct Rewind {
    pre: Bytes,
    inner: CountingIo,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What waiting for request bytes ended with.
enum Wait {
    /// Bytes read (0: the client closed).
    Read(usize),
    Failed(io::Error),
    /// The proxy is stopping (only reported while nothing of a request is buffered).
    Stop,
    TimedOut,
}

/// The HTTP/1.1 side of one connection.
struct Conn {
    shared: Arc<Shared>,
    /// Bytes read and not yet consumed (lent to a request body while it is read).
    buf: BytesMut,
    /// Response heads are encoded here (kept, so a connection encodes without allocating).
    out: Vec<u8>,
    stop: watch::Receiver<bool>,
    draining: bool,
    /// The head timeout: one timer per connection, moved forward only when it fires early
    /// (arming a timer per request costs more than the check).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the connection started waiting for the head being read.
    head_started: Option<Instant>,
}

/// A parsed request head and what the connection needs to know about it.
struct Head {
    req: Request<()>,
    body: Framing,
    keep_alive: bool,
    expect_continue: bool,
    /// The client accepts trailers in a chunked response.
    te_trailers: bool,
}

/// Why a request head was refused.
enum Refused {
    Bad(&'static str),
    TooLarge(&'static str),
    /// `CONNECT`: a tunnel, which this proxy does not make.
    Connect,
}

impl Conn {
    /// Waits for more bytes, the head timeout, or (when nothing is buffered) the stop signal.
    async fn wait_readable(&mut self) -> Wait {
        // From the first wait for this head, not this read: a client trickling a head byte by
        // byte gets no more time than one sending nothing.
        let started = *self.head_started.get_or_insert_with(Instant::now);
        let deadline = started + HEAD_TIMEOUT;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(HEAD_TIMEOUT)));
        let idle = self.buf.is_empty() && !self.draining;
        let Conn {
            shared,
            buf,
            stop,
            draining,
            ..
        } = self;
        if idle && *stop.borrow_and_update() {
            *draining = true;
            return Wait::Stop;
        }
        let mut changed = pin!(stop.changed());
        poll_fn(|cx| {
            match shared.poll_read(cx, buf) {
                Poll::Ready(Ok(n)) => return Poll::Ready(Wait::Read(n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Wait::Failed(e)),
                Poll::Pending => {}
            }
            if idle && changed.as_mut().poll(cx).is_ready() {
                *draining = true;
                return Poll::Ready(Wait::Stop);
            }
            while timer.as_mut().poll(cx).is_ready() {
                if Instant::now() >= deadline {
                    return Poll::Ready(Wait::TimedOut);
                }
                // Set while waiting for an earlier request: start over from this wait.
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
            }
            Poll::Pending
        })
        .await
    }

    async fn serve_h1<H: Handler>(&mut self, handler: H) -> io::Result<()> {
        loop {
            // Read until a complete head is buffered.
            let head = loop {
                if !self.buf.is_empty() {
                    match parse_head(&mut self.buf) {
                        Ok(Some(h)) => {
                            self.head_started = None;
                            break h;
                        }
                        Ok(None) if self.buf.len() > MAX_HEAD => {
                            return self.refuse(Refused::TooLarge("request head")).await;
                        }
                        Ok(None) => {}
                        Err(r) => return self.refuse(r).await,
                    }
                }
                match self.wait_readable().await {
                    Wait::Read(0) | Wait::Stop | Wait::TimedOut => return Ok(()),
                    Wait::Read(_) => {}
                    Wait::Failed(e) => return Err(e),
                }
            };
            if !self.serve_one(head, &handler).await? {
                return Ok(());
            }
        }
    }

    /// Answers one request; returns whether the connection stays open for another.
    async fn serve_one<H: Handler>(&mut self, head: Head, handler: &H) -> io::Result<bool> {
        let Head {
            req,
            body,
            mut keep_alive,
            expect_continue,
            te_trailers,
        } = head;
        let head_method = req.method() == Method::HEAD;
        let version = req.version();
        // A body borrows the buffer (and the socket) while it is read; it comes back when the
        // body ends. A body not read to the end leaves the connection unusable.
        if expect_continue {
            *self.shared.cont.lock().unwrap_or_else(|p| p.into_inner()) = ContinueState::default();
        }
        let (body, back) = match body {
            Framing::Done | Framing::Length(0) => (ClientBody::Empty, None),
            state => {
                let (tx, rx) = oneshot::channel();
                let b = H1RequestBody {
                    shared: self.shared.clone(),
                    buf: std::mem::take(&mut self.buf),
                    state,
                    cont: expect_continue && version == Version::HTTP_11,
                    back: Some(tx),
                };
                (ClientBody::H1(b), Some(rx))
            }
        };
        let call = handler.call(req.map(|()| body));
        let resp = if back.is_none() {
            // No body to read, so the socket is idle until the answer: watch it. A client that
            // hangs up (end of stream or an error) cancels the request, dropping the upstream
            // exchange, as hyper's server did (it does not wait for half-closed clients either);
            // bytes that arrive instead (a pipelined request) stay in the buffer for later and
            // the watch ends.
            let mut call = std::pin::pin!(call);
            let shared = self.shared.clone();
            let buf = &mut self.buf;
            let watch = std::future::poll_fn(|cx| shared.poll_read(cx, buf));
            tokio::select! {
                biased;
                resp = &mut call => resp,
                read = watch => match read {
                    Ok(n) if n > 0 => call.await,
                    _ => {
                        tracing::debug!("the client went away before the response; request cancelled");
                        return Ok(false);
                    }
                },
            }
        } else {
            call.await
        };
        if expect_continue {
            self.shared.start_response().await?;
        }
        if let Some(mut rx) = back {
            // The body is finished or gone by now (the forwarding code drops it once the
            // upstream answered). Only a body read to its end gives the buffer back, with
            // any pipelined bytes after it; otherwise the connection cannot be reused.
            match rx.try_recv() {
                Ok(buf) => self.buf = buf,
                Err(_) => keep_alive = false,
            }
        }
        if !self.draining && *self.stop.borrow() {
            self.draining = true;
        }
        if self.draining {
            keep_alive = false;
        }
        let complete = self
            .write_response(resp, head_method, version, te_trailers, &mut keep_alive)
            .await?;
        if !(complete && keep_alive) {
            self.linger().await;
            return Ok(false);
        }
        Ok(true)
    }

    /// Answers a head that cannot be served and closes.
    async fn refuse(&mut self, r: Refused) -> io::Result<()> {
        let (status, msg) = match r {
            Refused::Bad(why) => (StatusCode::BAD_REQUEST, format!("bad request: {why}\n")),
            Refused::Connect => (
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: serin-proxy forwards HTTP requests, it does not open tunnels\n"
                    .to_string(),
            ),
            Refused::TooLarge(what) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "{what} too large: at most {MAX_HEAD} bytes and {MAX_HEADERS} headers are accepted\n"
                ),
            ),
        };
        tracing::debug!(status = status.as_u16(), reason = %msg.trim_end(), "refused a request");
        let mut r = Response::new(ResBody::full(msg));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let mut keep_alive = false;
        self.write_response(r, false, Version::HTTP_11, false, &mut keep_alive)
            .await?;
        self.linger().await;
        Ok(())
    }

    /// Closes the connection so the client can read the last response: the write side is
    /// shut (FIN after the response), then what the client still sends is read and dropped
    /// for a moment, because closing a socket with unread input resets it, and a reset can
    /// destroy the response before the client has read it.
    async fn linger(&mut self) {
        let _ = socket2::SockRef::from(&self.shared.stream).shutdown(std::net::Shutdown::Write);
        let mut left = LINGER_BYTES;
        let drain = async {
            loop {
                self.buf.clear();
                match poll_fn(|cx| self.shared.poll_read(cx, &mut self.buf)).await {
                    Ok(n) if n > 0 && n < left => left -= n,
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Writes a response; returns whether it went out complete (a body error cuts it short).
    async fn write_response(
        &mut self,
        resp: Response<ResBody>,
        head_method: bool,
        req_version: Version,
        te_trailers: bool,
        keep_alive: &mut bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let no_body = head_method
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        // Framing: a length the headers state, else the body's exact size, else chunked for
        // HTTP/1.1 clients and the connection's end for HTTP/1.0 ones.
        let declared = content_length(&parts.headers);
        let mut framing = if no_body {
            Out::Length(0)
        } else if let Some(n) = declared {
            Out::Length(n)
        } else if let Some(n) = body.size_hint().exact() {
            Out::Length(n)
        } else if req_version == Version::HTTP_11 {
            Out::Chunked
        } else {
            *keep_alive = false;
            Out::Close
        };

        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut has_date = false;
        for (name, value) in &parts.headers {
            // The proxy decides the framing and the connection's fate itself.
            if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
                continue;
            }
            has_date |= name == header::DATE;
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !no_body && declared.is_none() {
            match framing {
                Out::Length(n) => {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa(n, &mut [0; 20]));
                    out.extend_from_slice(b"\r\n");
                }
                Out::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
                Out::Close => {}
            }
        }
        if !has_date {
            out.extend_from_slice(b"date: ");
            out.extend_from_slice(&date::now());
            out.extend_from_slice(b"\r\n");
        }
        if !*keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if req_version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");

        if no_body || matches!(framing, Out::Length(0)) || body.is_end_stream() {
            if matches!(framing, Out::Chunked) {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            self.shared.write_all(&mut [IoSlice::new(out)]).await?;
            // The body, if any, counts its response when dropped. A stated length never
            // sent leaves the message incomplete.
            return Ok(!matches!(framing, Out::Length(n) if n > 0));
        }
        // The head goes out together with the first piece of body when that is already
        // there (the common case: a small upstream response read in one go).
        let mut head_sent = false;
        let mut size_line = [0u8; 20];
        loop {
            let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            let frame = match polled {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    if !head_sent {
                        self.shared
                            .write_all(&mut [IoSlice::new(&self.out)])
                            .await?;
                        head_sent = true;
                    }
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let head: &[u8] = if head_sent { &[] } else { &self.out };
            head_sent = true;
            match frame {
                Some(Ok(f)) => match f.into_data() {
                    Ok(mut data) => {
                        match &mut framing {
                            Out::Length(left) => {
                                // Never more than stated: the excess would be read as the
                                // next response.
                                if data.len() as u64 > *left {
                                    data.truncate(*left as usize);
                                }
                                *left -= data.len() as u64;
                                self.shared
                                    .write_all(&mut [IoSlice::new(head), IoSlice::new(&data)])
                                    .await?;
                                if *left == 0 {
                                    return Ok(true);
                                }
                            }
                            Out::Chunked => {
                                if data.is_empty() {
                                    self.shared.write_all(&mut [IoSlice::new(head)]).await?;
                                    continue;
                                }
                                let n = hex(data.len(), &mut size_line);
                                self.shared
                                    .write_all(&mut [
                                        IoSlice::new(head),
                                        IoSlice::new(n),
                                        IoSlice::new(&data),
                                        IoSlice::new(b"\r\n"),
                                    ])
                                    .await?;
                            }
                            Out::Close => {
                                self.shared
                                    .write_all(&mut [IoSlice::new(head), IoSlice::new(&data)])
                                    .await?;
                            }
                        }
                    }
                    Err(f) => {
                        // Trailers: only a chunked message to a client that asked can carry
                        // them; otherwise they end the body.
                        let mut end = head.to_vec();
                        if let (Out::Chunked, Ok(trailers)) = (&framing, f.into_trailers()) {
                            end.extend_from_slice(b"0\r\n");
                            if te_trailers {
                                for (n, v) in &trailers {
                                    end.extend_from_slice(n.as_str().as_bytes());
                                    end.extend_from_slice(b": ");
                                    end.extend_from_slice(v.as_bytes());
                                    end.extend_from_slice(b"\r\n");
                                }
                            }
                            end.extend_from_slice(b"\r\n");
                        }
                        self.shared.write_all(&mut [IoSlice::new(&end)]).await?;
                        return Ok(!matches!(framing, Out::Length(_)));
                    }
                },
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body failed; closing the connection");
                    self.shared.write_all(&mut [IoSlice::new(head)]).await?;
                    *keep_alive = false;
                    return Ok(false);
                }
                None => {
                    let tail: &[u8] = if matches!(framing, Out::Chunked) {
                        b"0\r\n\r\n"
                    } else {
                        b""
                    };
                    self.shared
                        .write_all(&mut [IoSlice::new(head), IoSlice::new(tail)])
                        .await?;
                    // A body shorter than its stated length leaves the message incomplete.
                    return Ok(!matches!(framing, Out::Length(n) if n > 0));
                }
            }
            if body.is_end_stream() {
                let tail: &[u8] = if matches!(framing, Out::Chunked) {
                    b"0\r\n\r\n"
                } else {
                    b""
                };
                self.shared.write_all(&mut [IoSlice::new(tail)]).await?;
                return Ok(!matches!(framing, Out::Length(n) if n > 0));
            }
        }
    }
}

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy)]
enum Out {
    Length(u64),
    Chunked,
    Close,
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// `{len:x}\r\n` without formatting machinery.
fn hex(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len() - 2;
    buf[i] = b'\r';
    buf[i + 1] = b'\n';
    loop {
        i -= 1;
        buf[i] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Parses a request head at the start of `buf`, consuming it; `None` when incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Refused> {
    match parse_head_with::<FEW_HEADERS>(buf) {
        Err(Refused::TooLarge(_)) => parse_head_with::<MAX_HEADERS>(buf),
        r => r,
    }
}

fn parse_head_with<const N: usize>(buf: &mut BytesMut) -> Result<Option<Head>, Refused> {
    let mut slots = [httparse::EMPTY_HEADER; N];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(Refused::TooLarge("request head"));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused::TooLarge("request head")),
        Err(e) => {
            return Err(Refused::Bad(match e {
                httparse::Error::HeaderName => "invalid header name",
                httparse::Error::HeaderValue => "invalid header value",
                httparse::Error::NewLine | httparse::Error::Status => "invalid line ending",
                httparse::Error::Token => "invalid method",
                httparse::Error::Version => "invalid HTTP version",
                _ => "invalid request head",
            }));
        }
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| Refused::Bad("invalid method"))?;
    // Forwarded, a CONNECT would reach the upstream as an ordinary request and an upstream
    // `200` would make the client believe a tunnel is open.
    if method == Method::CONNECT {
        return Err(Refused::Connect);
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Positions inside the head, so the URI and header values share its bytes.
    let base = buf.as_ptr() as usize;
    let path = req.path.unwrap_or("");
    let path_span = (path.as_ptr() as usize - base, path.len());
    let count = req.headers.len();
    let mut spans = [(0usize, 0usize, 0usize, 0usize); N];
    for (span, h) in spans.iter_mut().zip(req.headers.iter()) {
        let n = h.name.as_ptr() as usize - base;
        let v = h.value.as_ptr() as usize - base;
        *span = (n, n + h.name.len(), v, v + h.value.len());
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path_span.0..path_span.0 + path_span.1))
        .map_err(|_| Refused::Bad("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut te = false;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut te_trailers = false;
    let mut hosts = 0u32;
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns..ne])
            .map_err(|_| Refused::Bad("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| Refused::Bad("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            let v = value.as_bytes().trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(Refused::Bad("invalid content-length"));
            }
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(Refused::Bad("invalid content-length"))?;
            match length {
                Some(l) if l != n => return Err(Refused::Bad("conflicting content-length")),
                // The same length again: forwarded once (two would reach the upstream as
                // a list it may refuse or read differently).
                Some(_) => continue,
                None => length = Some(n),
            }
        } else if name == header::HOST {
            // RFC 9112 §3.2: more than one Host is refused, not routed by the first.
            if hosts > 0 {
                return Err(Refused::Bad("more than one host header"));
            }
            hosts += 1;
        } else if name == header::TRANSFER_ENCODING {
            te = true;
            // Only the last coding decides; chunked must be last when present.
            chunked = value
                .as_bytes()
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
            if !connection_names_others(value.as_bytes()) {
                // Hop-by-hop and fully read: storing it only to strip it later costs more.
                continue;
            }
        } else if name == header::EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::TE {
            te_trailers |= value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        headers.append(name, value);
    }
    // RFC 9112 §3.2: an HTTP/1.1 request names its host; one in absolute form (a client that
    // takes this proxy for a forward proxy) names it in the request target instead.
    if hosts == 0 && version == Version::HTTP_11 && uri.authority().is_none() {
        return Err(Refused::Bad("missing host header"));
    }
    let mut keep_alive = if version == Version::HTTP_10 {
        keep_alive_token && !close
    } else {
        !close
    };
    let body = if te {
        // RFC 9112 §6.3: a request whose transfer coding is not chunked last cannot be
        // framed; HTTP/1.0 has no transfer codings.
        if !chunked || version == Version::HTTP_10 {
            return Err(Refused::Bad("unsupported transfer-encoding"));
        }
        if length.is_some() {
            // Both: chunked wins, the length goes, and the connection closes afterwards.
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        Framing::Chunked(ChunkState::Size)
    } else {
        match length {
            Some(n) if n > 0 => Framing::Length(n),
            _ => Framing::Done,
        }
    };
    let mut r = Request::new(());
    *r.method_mut() = method;
    *r.uri_mut() = uri;
    *r.version_mut() = version;
    *r.headers_mut() = headers;
    Ok(Some(Head {
        req: r,
        body,
        keep_alive,
        expect_continue,
        te_trailers,
    }))
}

/// A request body read from a client connection. It holds the connection's buffer while it
/// is read and hands it back when it ends; dropped before the end, the connection is closed
/// after the response (the rest of the body is still on the wire).
pub struct H1RequestBody {
    shared: Arc<Shared>,
    buf: BytesMut,
    state: Framing,
    /// `100 Continue` is owed before the first read.
    cont: bool,
    back: Option<oneshot::Sender<BytesMut>>,
}

impl H1RequestBody {
    fn finish(&mut self) {
        self.state = Framing::Done;
        if let Some(tx) = self.back.take() {
            let _ = tx.send(std::mem::take(&mut self.buf));
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = Framing::Done;
        self.back = None;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl Body for H1RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.cont {
            if let Err(e) = ready!(this.shared.poll_continue(cx)) {
                return this.fail(e);
            }
            this.cont = false;
        }
        loop {
            match this.state.step(&mut this.buf) {
                Err(e) => return this.fail(e),
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
            match ready!(this.shared.poll_read(cx, &mut this.buf)) {
                Ok(0) => {
                    return this.fail(H1Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed the connection in the middle of the request body",
                    )));
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        self.state.size_hint()
    }
}

/// The `Date` header value (IMF-fixdate), formatted once per second per thread.
mod date {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }

    pub fn now() -> [u8; 29] {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        CACHE.with(|c| {
            let (at, v) = c.get();
            if at == secs {
                return v;
            }
            let v = format(secs);
            c.set((secs, v));
            v
        })
    }

    /// `Sun, 06 Nov 1994 08:49:37 GMT` for seconds since the epoch.
    pub fn format(secs: u64) -> [u8; 29] {
        const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let mut out = [0u8; 29];
        out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
        out[3..5].copy_from_slice(b", ");
        two(&mut out[5..7], d as u64);
        out[7] = b' ';
        out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
        out[11] = b' ';
        let y = year.clamp(0, 9999) as u64;
        two(&mut out[12..14], y / 100);
        two(&mut out[14..16], y % 100);
        out[16] = b' ';
        two(&mut out[17..19], h);
        out[19] = b':';
        two(&mut out[20..22], m);
        out[22] = b':';
        two(&mut out[23..25], s);
        out[25..29].copy_from_slice(b" GMT");
        out
    }

    fn two(dst: &mut [u8], v: u64) {
        dst[0] = b'0' + (v / 10 % 10) as u8;
        dst[1] = b'0' + (v % 10) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Head>, Refused> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf)
    }

    fn head(raw: &[u8]) -> Head {
        match parse(raw) {
            Ok(Some(h)) => h,
            Ok(None) => panic!("incomplete"),
            Err(Refused::Bad(w) | Refused::TooLarge(w)) => panic!("refused: {w}"),
            Err(Refused::Connect) => panic!("refused: CONNECT"),
        }
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(&date::format(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&date::format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &date::format(1_709_208_000),
            b"Thu, 29 Feb 2024 12:00:00 GMT"
        );
    }

    #[test]
    fn numbers_are_encoded_without_formatting() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(1234567, &mut [0; 20]), b"1234567");
        assert_eq!(hex(255, &mut [0; 20]), b"ff\r\n");
        assert_eq!(hex(1, &mut [0; 20]), b"1\r\n");
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(head(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        // Read and dropped at once, unless it names headers to strip before forwarding.
        let h = head(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: keep-alive\r\n\r\n");
        assert!(h.req.headers().get(header::CONNECTION).is_none());
        let h = head(
            b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close, x-secret\r\nx-secret: 1\r\n\r\n",
        );
        assert!(!h.keep_alive);
        assert!(h.req.headers().get(header::CONNECTION).is_some());
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunked_and_bad_framing_is_refused() {
        assert!(matches!(
            head(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello").body,
            Framing::Length(5)
        ));
        assert!(matches!(
            head(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n").body,
            Framing::Done
        ));
        let h = head(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert!(matches!(h.body, Framing::Chunked(_)));
        assert!(!h.keep_alive);
        assert!(h.req.headers().get(header::CONTENT_LENGTH).is_none());
        // HTTP/1.0 may leave Host out, and so may an absolute-form target (it names the host).
        head(b"GET / HTTP/1.0\r\n\r\n");
        head(b"GET http://a/ HTTP/1.1\r\n\r\n");
        for bad in [
            &b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nbad header\r\n\r\n",
            b"GET\x01 / HTTP/1.1\r\nhost: a\r\n\r\n",
            // RFC 9112 §3.2: two hosts, or none in HTTP/1.1.
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(Refused::Bad(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_partial_head_waits_and_a_head_with_too_many_headers_is_too_large() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nhost: a\r\n"), Ok(None)));
        let mut raw = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
        for i in 0..60 {
            raw.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(head(&raw).req.headers().len(), 61);
        let mut raw = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&raw), Err(Refused::TooLarge(_))));
    }

    #[test]
    fn expect_continue_and_te_trailers_are_noticed_and_pipelined_bytes_stay() {
        let mut buf = BytesMut::from(
            &b"POST /a HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\nte: trailers\r\ncontent-length: 1\r\n\r\nxGET /b HTTP/1.1\r\nhost: a\r\n\r\n"[..],
        );
        let Ok(Some(h)) = parse_head(&mut buf) else {
            panic!("parses")
        };
        assert!(h.expect_continue && h.te_trailers);
        assert_eq!(h.req.uri().path(), "/a");
        assert_eq!(&buf[..], b"xGET /b HTTP/1.1\r\nhost: a\r\n\r\n");
    }
}

//! One client connection on the outbound or inbound listener: the proxy's own HTTP/1.1 server,
//! and the switch to HTTP/2 for connections that open with its preface ([`crate::h2`]).
//!
//! Why not hyper's HTTP/1.1 server: its dispatcher, buffered I/O, per-request header-read
//! timer and graceful-shutdown wrapper cost about a quarter of the proxy's user CPU per
//! request, more than routing and forwarding together. Here one task per connection reads into
//! one buffer, parses the head with `httparse` ([`crate::head`]), hands the request to the
//! [`Handler`] and writes the response head together with the first piece of body in one
//! `writev` ([`crate::encode`]), then loops for the next request (pipelined requests are
//! answered in order).
//!
//! Scope (RFC 9112, server side): request bodies framed by `content-length` or chunked (with
//! trailers), streamed both ways; `Expect: 100-continue` answered when the body is first read;
//! HTTP/1.0 and `Connection: close`; responses framed by length, chunked (trailers sent when
//! the client asked with `TE: trailers`) or, for HTTP/1.0 clients, by closing; no body for
//! HEAD, 1xx, 204 and 304; 400 for a malformed head, 431 for a head over [`MAX_HEAD`] bytes or
//! [`MAX_HEADERS`] headers. Upgrades the client asks for (WebSocket, not `h2c`) become a
//! tunnel to the upstream once it answers `101` ([`crate::upgrade`]).

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Body;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::BoxError;
use crate::body::{ClientBody, H1RequestBody};
use crate::codec::Framing;
use crate::encode::{self, Framed, Out};
use crate::h2::{H2_PREFACE, H2Server, serve_h2};
use crate::head::{Head, MAX_HEAD, MAX_HEADERS, Refused, parse_head};
use crate::idle::IdleWatch;
use crate::io::{Opened, TcpObserver};
use crate::stop::StopSignal;
use crate::upgrade::{Tunnel, Upgraded};

/// Time allowed for a complete request head, counted from the moment the connection starts
/// waiting for it (so an idle keep-alive connection is closed after it, as hyper did).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Read size.
const READ_CHUNK: usize = 8 * 1024;
/// How long a connection waiting for its next request head keeps the buffers of the last one.
/// A busy keep-alive connection reuses them (allocating and growing them afresh for every
/// request cost more than parsing it); an idle one gives them back after this, so it costs
/// its task and socket, not 8 KiB of read buffer and its last response head.
const RELEASE_AFTER: Duration = Duration::from_millis(250);
/// How long, and how much input at most, a closing connection still reads and drops.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What a listener answers requests with.
pub trait Handler: Clone + Send + Sync + 'static {
    /// The response body.
    type Body: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static;
    /// The response future.
    type Future: Future<Output = Response<Self::Body>> + Send + 'static;
    /// Handles one request.
    fn call(&self, req: Request<ClientBody>) -> Self::Future;
}

impl<F, Fut, B> Handler for F
where
    F: Fn(Request<ClientBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
{
    type Body = B;
    type Future = Fut;
    fn call(&self, req: Request<ClientBody>) -> Fut {
        self(req)
    }
}

/// One accepted connection: state shared by the connection task and the request body it
/// lends its socket to.
pub(crate) struct Shared {
    pub(crate) stream: TcpStream,
    /// Counts the connection (open until the last holder lets go) and its bytes.
    pub(crate) tcp: Opened,
    /// `Expect: 100-continue` bookkeeping; only touched for requests that ask for it.
    cont: Mutex<ContinueState>,
    /// Longest wait for the client to take response bytes or send request body bytes.
    pub(crate) body_idle: Duration,
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
    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            if buf.is_empty() {
                // An idle connection holds no read buffer: it is allocated once bytes are
                // there to read.
                ready!(self.stream.poll_read_ready(cx))?;
            }
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
                    self.tcp.read(n as u64);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got > 0 {
                        self.tcp.read(got as u64);
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
                    self.tcp.written(n as u64);
                    IoSlice::advance_slices(&mut bufs, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A client that stops reading would hold the connection (and the
                    // upstream response behind it) for ever.
                    tokio::time::timeout(self.body_idle, self.stream.writable())
                        .await
                        .map_err(|_| {
                            io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the client read nothing for the body idle timeout",
                            )
                        })??;
                }
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
    pub(crate) fn poll_continue(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            {
                let mut st = self.cont.lock().unwrap_or_else(|p| p.into_inner());
                if st.responded || st.sent == CONTINUE.len() {
                    return Poll::Ready(Ok(()));
                }
                match self.stream.try_write(&CONTINUE[st.sent..]) {
                    Ok(n) => {
                        self.tcp.written(n as u64);
                        st.sent += n;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        self.tcp.note_error(&e);
                        return Poll::Ready(Err(e));
                    }
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
    tcp: Arc<dyn TcpObserver>,
    stop: watch::Receiver<bool>,
    h2: Arc<H2Server>,
    handler: H,
) {
    let shared = Arc::new(Shared {
        stream,
        tcp: Opened::new(tcp),
        cont: Mutex::new(ContinueState::default()),
        body_idle: h2.body_idle_timeout,
    });
    let mut conn = Conn {
        shared,
        buf: BytesMut::new(),
        out: Vec::new(),
        stopping: StopSignal::new(stop.clone()),
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
            Wait::Released => {}
            _ => return,
        }
    }
    if conn.buf.starts_with(H2_PREFACE) {
        let Conn {
            shared, buf, stop, ..
        } = conn;
        // Boxed: hyper's HTTP/2 connection state would otherwise size every connection task,
        // HTTP/1.1 ones included.
        Box::pin(serve_h2(shared, buf, stop, h2, handler)).await;
        return;
    }
    if let Err(e) = serve_h1(conn, handler).await {
        tracing::debug!(error = %e, "client connection ended with an error");
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
    /// The connection has waited [`RELEASE_AFTER`] and gave its buffers back: the caller lets
    /// go of what it keeps for a busy connection too, and waits again.
    Released,
}

/// The HTTP/1.1 side of one connection.
struct Conn {
    shared: Arc<Shared>,
    /// Bytes read and not yet consumed (lent to a request body while it is read).
    buf: BytesMut,
    /// Response heads are encoded here (kept, so a connection encodes without allocating).
    out: Vec<u8>,
    stop: watch::Receiver<bool>,
    /// `stop`, checked by an idle connection on every wait.
    stopping: StopSignal,
    draining: bool,
    /// The head timeout and the buffers' release ([`RELEASE_AFTER`]): one timer per
    /// connection, moved forward only when it fires early (arming a timer per request costs
    /// more than the check), and moved back only when buffers were taken again after a
    /// release.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the connection started waiting for the head being read.
    head_started: Option<Instant>,
}

impl Conn {
    /// Waits for more bytes, the head timeout, or (when nothing is buffered) the stop signal.
    /// Buffers kept from the last request are released once the wait has lasted
    /// [`RELEASE_AFTER`] with nothing of a new request read.
    async fn wait_readable(&mut self) -> Wait {
        // From the first wait for this head, not this read: a client trickling a head byte by
        // byte gets no more time than one sending nothing.
        let started = *self.head_started.get_or_insert_with(Instant::now);
        let deadline = tokio::time::Instant::from_std(started + HEAD_TIMEOUT);
        let release_at = tokio::time::Instant::from_std(started + RELEASE_AFTER);
        let holds = |buf: &BytesMut, out: &Vec<u8>| buf.capacity() > 0 || out.capacity() > 0;
        let wake = if holds(&self.buf, &self.out) {
            release_at
        } else {
            deadline
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake)));
        if timer.deadline() > wake {
            // Buffers taken again after a release: the timer still points at a later head
            // deadline. Once per idle period, not per request.
            timer.as_mut().reset(wake);
        }
        let idle = self.buf.is_empty() && !self.draining;
        let Conn {
            shared,
            buf,
            out,
            stopping,
            draining,
            ..
        } = self;
        poll_fn(|cx| {
            // Before reading: a stopping proxy closes an idle connection even when the client
            // has already sent its next request.
            if idle && stopping.poll_stopped(cx) {
                *draining = true;
                return Poll::Ready(Wait::Stop);
            }
            match shared.poll_read(cx, buf) {
                Poll::Ready(Ok(n)) => return Poll::Ready(Wait::Read(n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Wait::Failed(e)),
                Poll::Pending => {}
            }
            while timer.as_mut().poll(cx).is_ready() {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Poll::Ready(Wait::TimedOut);
                }
                // Nothing of the next request yet (a head trickling in keeps its bytes).
                let release = now >= release_at && buf.is_empty() && holds(buf, out);
                if release {
                    *buf = BytesMut::new();
                    *out = Vec::new();
                }
                let next = if holds(buf, out) && release_at > now {
                    release_at
                } else {
                    deadline
                };
                // Set while waiting for an earlier request: start over from this wait.
                timer.as_mut().reset(next);
                if release {
                    return Poll::Ready(Wait::Released);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Answers one request; returns whether the connection stays open for another.
    async fn serve_one<H: Handler>(&mut self, head: Head, handler: &H) -> io::Result<bool> {
        let Head {
            req,
            body,
            mut keep_alive,
            expect_continue,
            te_trailers,
            upgrade,
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
                    idle: IdleWatch::new(self.shared.body_idle),
                    shared: self.shared.clone(),
                    buf: std::mem::take(&mut self.buf),
                    state,
                    cont: expect_continue && version == Version::HTTP_11,
                    back: Some(tx),
                };
                (ClientBody::H1(b), Some(rx))
            }
        };
        // Part of this future, which `serve_h1` boxes for the length of the request: the
        // handler's state (routing and forwarding) is allocated and moved once per request,
        // and is not part of an idle connection's task.
        let mut call = pin!(handler.call(req.map(|()| body)));
        let resp = if back.is_none() {
            // No body to read, so the socket is idle until the answer: watch it. A client that
            // hangs up (end of stream or an error) cancels the request, dropping the upstream
            // exchange, as hyper's server did (it does not wait for half-closed clients either);
            // bytes that arrive instead (a pipelined request) stay in the buffer for later and
            // the watch ends.
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
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return self.switch(resp, upgrade && back.is_none(), version).await;
        }
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
        if !self.draining && self.stopping.is_stopped() {
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

    /// Answers a `101`: with the upstream connection the handler put in it (an upgrade the
    /// client asked for), the connection becomes a tunnel to it until both sides are done or
    /// the proxy stops; otherwise the client gets a `502` and a close, since relaying a switch
    /// nobody asked for would make it read the connection as another protocol.
    async fn switch<B>(
        &mut self,
        resp: Response<B>,
        asked: bool,
        version: Version,
    ) -> io::Result<bool>
    where
        B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
    {
        let tunnel = if asked {
            resp.extensions().get::<Upgraded>().and_then(Upgraded::take)
        } else {
            None
        };
        let Some(tunnel) = tunnel else {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"bad gateway: the upstream switched protocols without an upgrade to switch to\n",
            )));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            let mut keep_alive = false;
            self.write_response(r, false, version, false, &mut keep_alive)
                .await?;
            self.linger().await;
            return Ok(false);
        };
        let mut keep_alive = true;
        self.write_response(resp, false, version, false, &mut keep_alive)
            .await?;
        self.tunnel(tunnel).await;
        Ok(false)
    }

    /// Copies bytes both ways between the client and the upstream of a switched connection:
    /// each side's end of stream is passed on as a half close, and the tunnel ends when both
    /// directions have, when either fails, or when the proxy stops. No idle timeout: a quiet
    /// WebSocket is a normal one (a client that stops reading what is sent to it is still cut
    /// after the body idle timeout).
    async fn tunnel(&mut self, tunnel: Tunnel) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Tunnel { io, read_first } = tunnel;
        let (mut up_rd, mut up_wr) = tokio::io::split(io);
        let shared = &self.shared;
        // Whatever the client sent after its handshake is already read: it goes first.
        let mut buf = std::mem::take(&mut self.buf);
        let to_upstream = async {
            loop {
                if !buf.is_empty() {
                    up_wr.write_all(&buf).await?;
                    buf.clear();
                }
                if poll_fn(|cx| shared.poll_read(cx, &mut buf)).await? == 0 {
                    return up_wr.shutdown().await;
                }
            }
        };
        let to_client = async {
            shared.write_all(&mut [IoSlice::new(&read_first)]).await?;
            let mut chunk = vec![0u8; READ_CHUNK];
            loop {
                let n = up_rd.read(&mut chunk).await?;
                if n == 0 {
                    return socket2::SockRef::from(&shared.stream)
                        .shutdown(std::net::Shutdown::Write);
                }
                shared.write_all(&mut [IoSlice::new(&chunk[..n])]).await?;
            }
        };
        let stopping = &mut self.stopping;
        let stopped = poll_fn(|cx| {
            if stopping.poll_stopped(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let failed = tokio::select! {
            r = async { tokio::try_join!(to_upstream, to_client) } => match r {
                Err(e) => {
                    tracing::debug!(error = %e, "tunnel ended with an error");
                    true
                }
                Ok(_) => false,
            },
            () = stopped => {
                tracing::debug!("proxy stopping; tunnel closed");
                false
            }
        };
        if failed {
            // One side reset the connection (or it failed): the other gets a reset too, as it
            // would without the proxy. Closed with a FIN instead, it would take what it got so
            // far for the whole stream.
            let _ = self.shared.stream.set_zero_linger();
            let _ = up_rd.unsplit(up_wr).get_ref().set_zero_linger();
        }
    }

    /// Answers a head that cannot be served and closes.
    async fn refuse(&mut self, r: Refused) -> io::Result<()> {
        let (status, msg) = match r {
            Refused::Bad(why) => (StatusCode::BAD_REQUEST, format!("bad request: {why}\n")),
            Refused::NotImplemented(why) => (
                StatusCode::NOT_IMPLEMENTED,
                format!("not implemented: {why}\n"),
            ),
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
        let mut r = Response::new(Full::new(Bytes::from(msg)));
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
    async fn write_response<B>(
        &mut self,
        resp: Response<B>,
        head_method: bool,
        req_version: Version,
        te_trailers: bool,
        keep_alive: &mut bool,
    ) -> io::Result<bool>
    where
        B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
    {
        let (parts, mut body) = resp.into_parts();
        let no_body = encode::has_no_body(head_method, parts.status);
        let framed = Framed {
            no_body,
            exact: body.size_hint().exact(),
            req_version,
        };
        let mut framing = encode::response_head(
            &mut self.out,
            parts.status,
            &parts.headers,
            framed,
            keep_alive,
        );
        let out = &mut self.out;

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
                                let n = encode::chunk_size_line(data.len(), &mut size_line);
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
                            encode::last_chunk(&mut end, &trailers, te_trailers);
                        }
                        self.shared.write_all(&mut [IoSlice::new(&end)]).await?;
                        return Ok(!matches!(framing, Out::Length(_)));
                    }
                },
                Some(Err(e)) => {
                    let e: BoxError = e.into();
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

/// Serves HTTP/1.1 requests on `conn` until it closes.
async fn serve_h1<H: Handler>(mut conn: Conn, handler: H) -> io::Result<()> {
    // The future answering a request, boxed: inline, the state of answering one (the
    // handler's routing and forwarding, the response body, pending writes) would size the
    // connection task and stay allocated while the connection waits idle for its next
    // request. A busy connection answers one request after the other in the same allocation
    // (a new one per request cost more than parsing the request); it is freed with the
    // buffers once the connection has waited [`RELEASE_AFTER`] for its next request.
    let mut answering = None;
    loop {
        // Read until a complete head is buffered. What the first read brought is parsed at
        // once (nearly always the whole head); after that the head is parsed only once its
        // end (an empty line) has arrived: a head trickling in small pieces is scanned once
        // for that end, not parsed again from its start on every read.
        let mut scanned: Option<usize> = None;
        let head = loop {
            let complete = match scanned {
                Some(from) => head_end_after(&conn.buf, from),
                None => !conn.buf.is_empty(),
            };
            if !conn.buf.is_empty() {
                scanned = Some(conn.buf.len());
            }
            if complete {
                match parse_head(&mut conn.buf) {
                    Ok(Some(h)) => {
                        conn.head_started = None;
                        break h;
                    }
                    Ok(None) => {}
                    Err(r) => return Box::pin(conn.refuse(r)).await,
                }
            }
            if conn.buf.len() > MAX_HEAD {
                return Box::pin(conn.refuse(Refused::TooLarge("request head"))).await;
            }
            match conn.wait_readable().await {
                Wait::Read(0) | Wait::Stop | Wait::TimedOut => return Ok(()),
                Wait::Read(_) => {}
                Wait::Released => answering = None,
                Wait::Failed(e) => return Err(e),
            }
        };
        let next = serve_owned(conn, head, handler.clone());
        let slot = match &mut answering {
            Some(slot) => {
                Pin::set(slot, Some(next));
                slot
            }
            None => answering.insert(Box::pin(Some(next))),
        };
        let (back, keep) = poll_fn(|cx| match slot.as_mut().as_pin_mut() {
            Some(f) => f.poll(cx),
            None => unreachable!("the slot was filled just above"),
        })
        .await;
        conn = back;
        if !keep? {
            return Ok(());
        }
    }
}

/// [`Conn::serve_one`] on a connection it owns and gives back: a future that borrows
/// nothing, so one allocation can carry a connection's requests one after the other.
async fn serve_owned<H: Handler>(
    mut conn: Conn,
    head: Head,
    handler: H,
) -> (Conn, io::Result<bool>) {
    let keep = conn.serve_one(head, &handler).await;
    (conn, keep)
}

/// Whether `buf` holds the end of a head (an empty line, CRLF or bare LF, as httparse reads
/// them) that ends past `from`, the length scanned before.
fn head_end_after(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    buf.get(start..).is_some_and(|tail| {
        tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
    })
}

#[cfg(test)]
mod tests {
    use super::head_end_after;

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        // Fed one byte at a time, the end is seen exactly when its last byte arrives.
        let mut scanned = 0;
        for n in 1..=head.len() {
            let found = head_end_after(&head[..n], scanned);
            scanned = n;
            assert_eq!(found, n == head.len(), "after {n} bytes");
        }
        assert!(head_end_after(b"GET / HTTP/1.1\nhost: a\n\n", 0));
    }
}

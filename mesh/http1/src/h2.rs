//! The hand-off of prior-knowledge HTTP/2 (h2c) connections to hyper's HTTP/2 server, with the
//! bytes already read replayed first.

use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::body::ClientBody;
use crate::conn::{Handler, Shared};
use crate::io::CountingIo;

/// Prior-knowledge HTTP/2 starts with this; HTTP/1.x never does.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How h2c client connections are kept and closed.
#[derive(Debug, Clone, Copy)]
pub struct H2Options {
    /// A connection without open streams for this long gets a GOAWAY and closes.
    pub idle_timeout: Duration,
    /// How often a PING checks that the client is still there.
    pub keep_alive_interval: Duration,
    /// A PING unanswered for this long closes the connection.
    pub keep_alive_timeout: Duration,
    /// On HTTP/1.1 connections: the longest a request body may pause, and the longest the
    /// client may leave a response unread, before the connection is closed.
    pub body_idle_timeout: Duration,
}

impl Default for H2Options {
    fn default() -> Self {
        H2Options {
            idle_timeout: Duration::from_secs(60),
            keep_alive_interval: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(20),
            body_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// hyper's HTTP/2 server as the listeners use it, with an idle timeout hyper does not have,
/// and the body idle timeout of the HTTP/1.1 side.
pub struct H2Server {
    builder: http2::Builder<TokioExecutor>,
    idle_timeout: Duration,
    pub(crate) body_idle_timeout: Duration,
}

impl H2Server {
    /// A server with these options.
    pub fn new(opts: H2Options) -> Arc<Self> {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(opts.keep_alive_interval))
            .keep_alive_timeout(opts.keep_alive_timeout)
            // The HTTP/1.1 side's head limit, so a request (a large token or gRPC metadata)
            // does not pass one protocol and get a 431 on the other (hyper's default: 16 KiB).
            .max_header_list_size(crate::head::MAX_HEAD as u32)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        Arc::new(H2Server {
            builder,
            idle_timeout: opts.idle_timeout,
            body_idle_timeout: opts.body_idle_timeout,
        })
    }
}

/// Streams one h2c client connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`;
/// hyper's default is 200). Each open stream may hold a window of response data its client has
/// not read yet, so this bounds what one client that stops reading costs; it matches what the
/// proxy opens on one upstream connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Streams cancelled by the client before their answer, past which a connection is closed when
/// they are also more than half of its streams (HTTP/2 "rapid reset", CVE-2023-44487).
///
/// Why: every stream the proxy accepts goes upstream at once, and a client that resets it a
/// moment later pays two small frames for it. The stream limit does not bound that, since a
/// reset stream no longer counts against it, and hyper only limits resets that arrive before a
/// stream is accepted. Clients do cancel streams (gRPC deadlines, hedged requests), but not most
/// of them, hundreds of times over, on one connection; Envoy closes such connections too.
pub const MAX_PREMATURE_RESETS: usize = 100;

/// Streams open on one connection, and since when none has been.
struct Activity {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// Streams handed to the handler so far.
    started: AtomicUsize,
    /// Streams whose handler was dropped before it answered (the client reset them).
    cancelled: AtomicUsize,
    /// Woken once the client has cancelled too many streams.
    abusive: tokio::sync::Notify,
}

impl Activity {
    fn start(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Relaxed);
        self.started.fetch_add(1, Relaxed);
        StreamGuard(self.clone())
    }

    fn cancelled(&self) {
        let cancelled = self.cancelled.fetch_add(1, Relaxed) + 1;
        if cancelled > MAX_PREMATURE_RESETS && cancelled * 2 > self.started.load(Relaxed) {
            self.abusive.notify_one();
        }
    }

    /// When the connection will have been idle long enough, if it is idle now.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.open.load(Relaxed) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner()) + idle)
    }
}

/// Held by a stream's handler until it answers: dropped before that, the stream was cancelled.
struct Unanswered(Option<Arc<Activity>>);

impl Unanswered {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.cancelled();
        }
    }
}

/// Held by a stream from its request until its response body is done.
struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Relaxed) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

/// A response body that keeps its stream counted as open until it is done.
struct Tracked<B> {
    inner: B,
    _guard: StreamGuard,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves a connection whose first bytes (already read into `buf`) are the HTTP/2 preface
/// with hyper's HTTP/2 server; on `stop`, or when no stream has been open for the idle
/// timeout, it sends GOAWAY and lets open streams finish.
pub(crate) async fn serve_h2<H: Handler>(
    shared: Arc<Shared>,
    buf: BytesMut,
    mut stop: watch::Receiver<bool>,
    h2: Arc<H2Server>,
    handler: H,
) {
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
    let activity = Arc::new(Activity {
        open: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
        started: AtomicUsize::new(0),
        cancelled: AtomicUsize::new(0),
        abusive: tokio::sync::Notify::new(),
    });
    let act = activity.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let guard = act.start();
        let unanswered = Unanswered(Some(act.clone()));
        let fut = handler.call(req.map(ClientBody::H2));
        async move {
            let resp = fut.await.map(|inner| Tracked {
                inner,
                _guard: guard,
            });
            unanswered.answered();
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let idle = h2.idle_timeout;
    let mut served = pin!(h2.builder.serve_connection(io, svc));
    let result = loop {
        // Checked again when the timer fires: a stream may have come and gone meanwhile.
        let deadline = activity
            .idle_deadline(idle)
            .unwrap_or_else(|| Instant::now() + idle);
        tokio::select! {
            r = served.as_mut() => break r,
            _ = activity.abusive.notified() => {
                // Dropping the connection drops every handler on it, and with them their
                // upstream exchanges: GOAWAY would let the client go on until it answers a PING.
                tracing::warn!(
                    streams = activity.started.load(Relaxed),
                    cancelled = activity.cancelled.load(Relaxed),
                    "h2c client cancels most of its streams (rapid reset); closing its connection"
                );
                return;
            }
            _ = stopped(&mut stop) => {
                served.as_mut().graceful_shutdown();
                break served.await;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if activity.idle_deadline(idle).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(idle = ?idle, "h2c client connection idle; closing");
                    served.as_mut().graceful_shutdown();
                    break served.await;
                }
            }
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

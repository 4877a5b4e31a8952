//! The hand-off of prior-knowledge HTTP/2 (h2c) connections to hyper's HTTP/2 server, with the
//! bytes already read replayed first.

use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::body::ClientBody;
use crate::conn::{Handler, Shared};
use crate::io::CountingIo;

/// Prior-knowledge HTTP/2 starts with this; HTTP/1.x never does.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves a connection whose first bytes (already read into `buf`) are the HTTP/2 preface
/// with hyper's HTTP/2 server; on `stop` it sends GOAWAY and lets open streams finish.
pub(crate) async fn serve_h2<H: Handler>(
    shared: Arc<Shared>,
    buf: BytesMut,
    mut stop: watch::Receiver<bool>,
    h2: Arc<http2::Builder<TokioExecutor>>,
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

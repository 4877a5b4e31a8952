//! TCP streams that count bytes and connections.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::TcpMetrics;

/// A TCP stream whose traffic feeds the `tcp_*` metrics.
pub struct CountingIo {
    inner: TcpStream,
    metrics: Arc<TcpMetrics>,
}

impl CountingIo {
    /// Wraps a freshly opened or accepted stream (counts it as opened).
    pub fn new(inner: TcpStream, metrics: Arc<TcpMetrics>) -> Self {
        metrics.open_total.fetch_add(1, Relaxed);
        metrics.open.fetch_add(1, Relaxed);
        CountingIo { inner, metrics }
    }
}

impl CountingIo {
    /// Wraps a stream already counted as opened (by the listener that accepted it).
    pub fn adopt(inner: TcpStream, metrics: Arc<TcpMetrics>) -> Self {
        CountingIo { inner, metrics }
    }
}

impl Drop for CountingIo {
    fn drop(&mut self) {
        self.metrics.open.fetch_sub(1, Relaxed);
        self.metrics.close_total.fetch_add(1, Relaxed);
    }
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.metrics.read_bytes.fetch_add(n as u64, Relaxed);
        }
        r
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.metrics.write_bytes.fetch_add(n as u64, Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.metrics.write_bytes.fetch_add(n as u64, Relaxed);
        }
        r
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

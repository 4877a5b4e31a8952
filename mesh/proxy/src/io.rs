//! TCP streams that count bytes and connections.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::{ConnectionClock, TcpMetrics};

/// One TCP connection in the `tcp_*` metrics: counted as opened when made, as closed when
/// dropped. Every kind of connection (client h1, client h2c, upstream h1, upstream h2c) holds
/// one, and reaches the byte counters through it. Whoever reads or writes the socket reports
/// a failed read or write with [`Opened::note_error`], so the close is counted with its errno.
pub struct Opened(Arc<TcpMetrics>, ConnectionClock);

impl Opened {
    /// Counts a freshly opened or accepted connection.
    pub fn new(metrics: Arc<TcpMetrics>) -> Self {
        metrics.open_total.fetch_add(1, Relaxed);
        metrics.open.fetch_add(1, Relaxed);
        Opened(metrics, ConnectionClock::start())
    }

    /// Remembers the OS error of a failed read or write for `tcp_close_total{errno}`.
    pub fn note_error(&self, e: &io::Error) {
        self.1.note_error(e);
    }
}

impl std::ops::Deref for Opened {
    type Target = TcpMetrics;
    fn deref(&self) -> &TcpMetrics {
        &self.0
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.1.close(&self.0);
    }
}

/// A TCP stream whose traffic feeds the `tcp_*` metrics.
pub struct CountingIo {
    inner: TcpStream,
    metrics: Opened,
}

impl CountingIo {
    /// Wraps a freshly opened or accepted stream (counts it as opened).
    pub fn new(inner: TcpStream, metrics: Arc<TcpMetrics>) -> Self {
        Self::counted(inner, Opened::new(metrics))
    }

    /// Wraps a stream whose connection is already counted (its guard moves in).
    pub fn counted(inner: TcpStream, metrics: Opened) -> Self {
        CountingIo { inner, metrics }
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
        if let Poll::Ready(Err(e)) = &r {
            self.metrics.note_error(e);
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
        match &r {
            Poll::Ready(Ok(n)) => {
                self.metrics.write_bytes.fetch_add(*n as u64, Relaxed);
            }
            Poll::Ready(Err(e)) => self.metrics.note_error(e),
            Poll::Pending => {}
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        match &r {
            Poll::Ready(Ok(n)) => {
                self.metrics.write_bytes.fetch_add(*n as u64, Relaxed);
            }
            Poll::Ready(Err(e)) => self.metrics.note_error(e),
            Poll::Pending => {}
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

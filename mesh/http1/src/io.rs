//! TCP streams that report their connection and bytes to an observer (the proxy's `tcp_*`
//! metrics).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Told about one side's TCP connections: opened, bytes each way, closed.
pub trait TcpObserver: Send + Sync + 'static {
    /// A connection was opened or accepted.
    fn opened(&self);
    /// `bytes` were read from a connection.
    fn read(&self, bytes: u64);
    /// `bytes` were written to a connection.
    fn written(&self, bytes: u64);
    /// A connection closed after being open for `open_for`; `errno` is the OS error that
    /// ended it, if a read or write failed on one.
    fn closed(&self, open_for: Duration, errno: Option<i32>);
}

/// One TCP connection, counted as opened when made and as closed when dropped. Every kind of
/// connection (client h1, client h2c, upstream h1, upstream h2c) holds one, and reports its
/// bytes through it.
pub struct Opened {
    observer: Arc<dyn TcpObserver>,
    since: Instant,
    /// The first OS error a read or write met (0: none yet).
    errno: AtomicI32,
}

impl Opened {
    /// Counts a freshly opened or accepted connection.
    pub fn new(observer: Arc<dyn TcpObserver>) -> Self {
        observer.opened();
        Opened {
            observer,
            since: Instant::now(),
            errno: AtomicI32::new(0),
        }
    }

    /// Remembers the OS error of a failed read or write, reported when the connection
    /// closes. The first one wins: later errors are usually its consequences (EPIPE after
    /// ECONNRESET).
    pub fn note_error(&self, e: &io::Error) {
        if let Some(code) = e.raw_os_error().filter(|c| *c != 0) {
            let _ = self.errno.compare_exchange(0, code, Relaxed, Relaxed);
        }
    }

    /// Reports bytes read.
    pub fn read(&self, bytes: u64) {
        self.observer.read(bytes);
    }

    /// Reports bytes written.
    pub fn written(&self, bytes: u64) {
        self.observer.written(bytes);
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        let errno = Some(self.errno.load(Relaxed)).filter(|c| *c != 0);
        self.observer.closed(self.since.elapsed(), errno);
    }
}

/// A TCP stream whose traffic is reported to a [`TcpObserver`].
pub struct CountingIo {
    inner: TcpStream,
    metrics: Opened,
}

impl CountingIo {
    /// Wraps a freshly opened or accepted stream (counts it as opened).
    pub fn new(inner: TcpStream, metrics: Arc<dyn TcpObserver>) -> Self {
        Self::counted(inner, Opened::new(metrics))
    }

    /// Wraps a stream whose connection is already counted (its guard moves in).
    pub fn counted(inner: TcpStream, metrics: Opened) -> Self {
        CountingIo { inner, metrics }
    }

    /// The stream, for socket options.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
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
            self.metrics.read(n as u64);
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
            Poll::Ready(Ok(n)) => self.metrics.written(*n as u64),
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
            Poll::Ready(Ok(n)) => self.metrics.written(*n as u64),
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

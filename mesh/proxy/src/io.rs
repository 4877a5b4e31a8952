//! TCP streams that count bytes and connections, and the upstream connector that makes them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
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

impl Connection for CountingIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Opens upstream connections for the pooled clients. Every URI it sees was built by the proxy
/// from an endpoint address, so its authority is always `ip:port`.
#[derive(Clone)]
pub struct Connector {
    metrics: Arc<TcpMetrics>,
    timeout: Duration,
}

impl Connector {
    /// A connector counting into `metrics`, giving up after `timeout`.
    pub fn new(metrics: Arc<TcpMetrics>, timeout: Duration) -> Self {
        Connector { metrics, timeout }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<TokioIo<CountingIo>>> + Send>>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<CountingIo>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let metrics = self.metrics.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let addr: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "endpoint is not ip:port")
                })?;
            let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            // Small request/response exchanges: don't wait for Nagle.
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(CountingIo::new(stream, metrics)))
        })
    }
}

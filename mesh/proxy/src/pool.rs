//! Upstream connections: idle HTTP/1.1 connections and one shared h2c connection per
//! endpoint.
//!
//! Why not hyper-util's pooled client: per request it hashed a pool key, built and moved large
//! futures, and spawned a task to return each HTTP/1.1 connection to the pool; on this path
//! that was more work than the proxying itself. Here the idle list hangs off the endpoint the
//! balancer already picked (no lookup), an HTTP/1.1 connection goes back to it when its
//! response body ends ([`crate::h1`]), and a background sweep closes connections idle for too
//! long or closed by the upstream.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::balance::Endpoint;
use crate::body::{ReqBody, UpstreamBody};
use crate::h1::{self, Conn, H1Error, SendFailure};
use crate::io::{CountingIo, TcpObserver};
use crate::metrics::{Registry, TcpMetrics};

/// How often idle connections are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// Sweeps an unused connection survives: 6 × 15 s = 90 s idle at most.
const IDLE_SWEEPS: u32 = 6;
/// Idle HTTP/1.1 connections kept per endpoint; more are closed when they come back.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Why an upstream request failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection could not be opened (refused, unreachable, timed out).
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    /// The HTTP/2 handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// An HTTP/1.1 exchange failed before response headers.
    #[error("{0}")]
    H1(#[source] H1Error),
    /// An HTTP/2 stream failed before response headers.
    #[error("{0}")]
    H2(#[source] hyper::Error),
}

impl SendError {
    /// True when no connection could be made (a 502 with `error="connect"`).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_) | SendError::Handshake(_))
    }

    /// True when the client's own request body failed (a malformed chunk, a hang-up mid-body):
    /// not the endpoint's fault.
    pub fn is_request_body(&self) -> bool {
        matches!(self, SendError::H1(H1Error::RequestBody(_)))
    }
}

struct Idle {
    conn: Conn,
    /// The pool's sweep count when the connection came back.
    since: u32,
}

/// The connections of one endpoint; lives in its [`Endpoint`], so it is shared across route
/// table swaps and closed when the endpoint leaves every table.
#[derive(Default)]
pub struct EndpointPool {
    h1: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<ReqBody>>>,
    /// Sweeps so far (a coarse clock for idle ages that costs no clock read per request).
    sweeps: AtomicU32,
    /// Set once the endpoint is on its pool's sweep list.
    listed: AtomicBool,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field("idle_h1", &self.idle_h1())
            .finish()
    }
}

impl EndpointPool {
    /// Idle HTTP/1.1 connections right now.
    pub fn idle_h1(&self) -> usize {
        self.h1.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The most recently used idle connection still usable (warm, and the older ones are the
    /// first to time out); unusable ones met on the way are closed.
    pub(crate) fn take_h1(&self) -> Option<Conn> {
        let mut idle = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if c.conn.is_idle_usable() {
                return Some(c.conn);
            }
        }
        None
    }

    pub(crate) fn put_h1(&self, conn: Conn) {
        let mut idle = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle {
                conn,
                since: self.sweeps.load(Relaxed),
            });
        }
    }

    fn sweep(&self) {
        let now = self.sweeps.fetch_add(1, Relaxed).wrapping_add(1);
        let mut idle = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|c| c.conn.is_idle_usable() && now.wrapping_sub(c.since) < IDLE_SWEEPS);
        drop(idle);
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        if h2.as_ref().is_some_and(|tx| tx.is_closed()) {
            *h2 = None;
        }
    }
}

struct Inner {
    tcp: Arc<TcpMetrics>,
    connect_timeout: Duration,
    h2: http2::Builder<TokioExecutor>,
    /// Endpoints with connections, for the idle sweep.
    endpoints: Mutex<Vec<Weak<Endpoint>>>,
}

/// Opens, pools and reuses upstream connections for one direction (outbound or inbound). A
/// request goes upstream in the protocol it came in with, so gRPC (HTTP/2 only) stays HTTP/2.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

impl Upstreams {
    /// Pools that count their connections into `registry` under `direction`. Inside a tokio
    /// runtime this also starts the idle sweep, which ends when the pools are dropped.
    pub fn new(registry: &Registry, direction: &str, connect_timeout: Duration) -> Self {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new());
        let inner = Arc::new(Inner {
            tcp: registry.tcp(direction, "dst"),
            connect_timeout,
            h2,
            endpoints: Mutex::new(Vec::new()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&inner)));
        }
        Upstreams { inner }
    }

    /// Sends `req` (already pointed at `ep`, hop-by-hop headers removed) and returns the
    /// response head with its streaming body.
    pub async fn send(
        &self,
        ep: &Arc<Endpoint>,
        req: Request<ReqBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if req.version() == Version::HTTP_2 {
            let resp = self.send_h2(ep, req).await?;
            return Ok(resp.map(UpstreamBody::H2));
        }
        let (parts, body) = req.into_parts();
        let prepared = h1::prepare(parts, body);
        match h1::send(ep, prepared, || self.connect_h1(ep)).await {
            Ok(resp) => Ok(resp.map(UpstreamBody::H1)),
            Err(SendFailure::Connect(e)) => Err(SendError::Connect(e)),
            Err(SendFailure::Upstream(e)) => Err(SendError::H1(e)),
        }
    }

    async fn send_h2(
        &self,
        ep: &Arc<Endpoint>,
        req: Request<ReqBody>,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        let mut req = req;
        loop {
            let shared = ep
                .pool
                .h2
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|tx| !tx.is_closed())
                .cloned();
            let (mut tx, reused) = match shared {
                Some(tx) => (tx, true),
                None => (Box::pin(self.connect_h2(ep)).await?, false),
            };
            if let Err(e) = tx.ready().await {
                if reused {
                    continue;
                }
                return Err(SendError::H2(e));
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    // The connection closed before the request went out: send it again.
                    Some(r) if reused => req = r,
                    _ => return Err(SendError::H2(e.into_error())),
                },
            }
        }
    }

    async fn tcp(&self, ep: &Arc<Endpoint>) -> io::Result<TcpStream> {
        let stream = connect(ep.addr, self.inner.connect_timeout).await?;
        if !ep.pool.listed.swap(true, Relaxed) {
            let mut eps = self
                .inner
                .endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            eps.retain(|w| w.strong_count() > 0);
            eps.push(Arc::downgrade(ep));
        }
        Ok(stream)
    }

    async fn connect_h1(&self, ep: &Arc<Endpoint>) -> io::Result<Conn> {
        let stream = self.tcp(ep).await?;
        Ok(Conn::new(stream, self.inner.tcp.clone()))
    }

    async fn connect_h2(
        &self,
        ep: &Arc<Endpoint>,
    ) -> Result<http2::SendRequest<ReqBody>, SendError> {
        let stream = self.tcp(ep).await.map_err(SendError::Connect)?;
        let io = TokioIo::new(CountingIo::new(
            stream,
            self.inner.tcp.clone() as Arc<dyn TcpObserver>,
        ));
        let (tx, conn) = self
            .inner
            .h2
            .handshake(io)
            .await
            .map_err(SendError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended with an error");
            }
        });
        // Concurrent first requests may each open one; the last one stays shared, the others
        // close when their requests finish.
        *ep.pool.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
        Ok(tx)
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    // Small request/response exchanges: don't wait for Nagle.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Closes connections idle too long or closed by the upstream, until the pools are dropped.
async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let eps: Vec<Arc<Endpoint>> = {
            let mut eps = inner.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            eps.retain(|w| w.strong_count() > 0);
            eps.iter().filter_map(Weak::upgrade).collect()
        };
        for ep in eps {
            ep.pool.sweep();
        }
    }
}

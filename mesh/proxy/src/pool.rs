//! Upstream connections: idle HTTP/1.1 connections, and h2c connections shared by streams up
//! to each connection's stream limit ([`crate::h2`]), per endpoint.
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
use tokio::net::TcpStream;

use crate::balance::Endpoint;
use crate::body::{ReqBody, UpstreamBody};
use crate::h1::{self, Conn, H1Error, SendFailure};
use crate::h2::{self as h2c, H2Body, H2Conn, H2Failure, Slot};
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
    Handshake(#[source] h2c::HandshakeError),
    /// An HTTP/1.1 exchange failed before response headers.
    #[error("{0}")]
    H1(#[source] H1Error),
    /// An HTTP/2 stream failed before response headers.
    #[error("{0}")]
    H2(#[source] h2::Error),
    /// No response head before the deadline.
    #[error("no response before the deadline")]
    TimedOut,
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
    /// Open h2c connections, oldest first (new streams fill the oldest with room).
    h2: Mutex<Vec<Arc<H2Conn>>>,
    /// Held while an h2c connection is being opened, so a burst of streams to a cold endpoint
    /// opens one connection (and more only as they fill), not one per stream.
    h2_connecting: tokio::sync::Mutex<()>,
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
        // Closed connections go; so do connections without streams for as long as an idle
        // HTTP/1.1 connection is kept (dropping the last handle closes the session).
        h2.retain(|c| {
            if c.in_flight() > 0 {
                c.idle_sweeps.store(0, Relaxed);
                return !c.is_closed();
            }
            !c.is_closed() && c.idle_sweeps.fetch_add(1, Relaxed) + 1 < IDLE_SWEEPS
        });
    }

    /// A stream slot on an open h2c connection with room, if there is one.
    fn h2_slot(&self) -> Option<Slot> {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|c| !c.is_closed());
        h2.iter().find_map(H2Conn::try_slot)
    }

    /// h2c connections open now, and streams in flight on them.
    pub fn h2_connections(&self) -> (usize, usize) {
        let h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        (h2.len(), h2.iter().map(|c| c.in_flight()).sum())
    }
}

struct Inner {
    tcp: Arc<TcpMetrics>,
    connect_timeout: Duration,
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
        let inner = Arc::new(Inner {
            tcp: registry.tcp(direction, "dst"),
            connect_timeout,
            endpoints: Mutex::new(Vec::new()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&inner)));
        }
        Upstreams { inner }
    }

    /// Sends `req` (already pointed at `ep`, hop-by-hop headers removed) and returns the
    /// response head with its streaming body; [`SendError::TimedOut`] when `deadline` passes
    /// first.
    pub async fn send(
        &self,
        ep: &Arc<Endpoint>,
        req: Request<ReqBody>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if req.version() == Version::HTTP_2 {
            // Boxed: inline, the h2 stream's state (a few KiB) would size, and be copied with,
            // the future of every HTTP/1.1 request too.
            let send = Box::pin(self.send_h2(ep, req));
            let resp = match deadline {
                Some(at) => tokio::time::timeout_at(at, send)
                    .await
                    .map_err(|_| SendError::TimedOut)??,
                None => send.await?,
            };
            return Ok(resp.map(UpstreamBody::H2));
        }
        let (parts, body) = req.into_parts();
        let prepared = h1::prepare(parts, body);
        match h1::send(ep, prepared, deadline, || self.connect_h1(ep)).await {
            Ok(resp) => Ok(resp.map(UpstreamBody::H1)),
            Err(SendFailure::Connect(e)) => Err(SendError::Connect(e)),
            Err(SendFailure::Upstream(H1Error::TimedOut)) => Err(SendError::TimedOut),
            Err(SendFailure::Upstream(e)) => Err(SendError::H1(e)),
        }
    }

    async fn send_h2(
        &self,
        ep: &Arc<Endpoint>,
        req: Request<ReqBody>,
    ) -> Result<Response<H2Body>, SendError> {
        let mut req = req;
        loop {
            let (slot, fresh) = match ep.pool.h2_slot() {
                Some(s) => (s, false),
                None => (self.h2_slot_connecting(ep).await?, true),
            };
            match h2c::send(slot, req).await {
                Ok(resp) => return Ok(resp),
                // The connection went away before the request left: another one takes it.
                Err(H2Failure::NotSent(r, _)) if !fresh => req = *r,
                Err(H2Failure::NotSent(_, e) | H2Failure::Failed(e)) => {
                    return Err(SendError::H2(e));
                }
            }
        }
    }

    /// A slot on a connection opened for it, unless one with room appeared while waiting for
    /// the right to open one.
    async fn h2_slot_connecting(&self, ep: &Arc<Endpoint>) -> Result<Slot, SendError> {
        let _connecting = ep.pool.h2_connecting.lock().await;
        if let Some(slot) = ep.pool.h2_slot() {
            return Ok(slot);
        }
        let conn = self.connect_h2(ep).await?;
        let slot = conn.try_slot().ok_or_else(|| {
            SendError::Connect(io::Error::other("new h2 connection closed at once"))
        })?;
        ep.pool
            .h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        Ok(slot)
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

    async fn connect_h2(&self, ep: &Arc<Endpoint>) -> Result<Arc<H2Conn>, SendError> {
        let stream = self.tcp(ep).await.map_err(SendError::Connect)?;
        let io = CountingIo::new(stream, self.inner.tcp.clone() as Arc<dyn TcpObserver>);
        H2Conn::handshake(io, self.inner.connect_timeout)
            .await
            .map_err(SendError::Handshake)
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

//! Listeners: accept loops, HTTP/1.1 + h2c serving, admin endpoints, graceful drain.
//!
//! The outbound and inbound listeners serve through `serin_http1`; the admin listener,
//! off the request path, through hyper's auto (HTTP/1.1 + h2c) server.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::balance::Endpoint;
use crate::body::ResBody;
use crate::config::ProxyConfig;
use crate::forward::{self, InboundTarget, Shared, Upstreams};
use crate::io::{CountingIo, TcpObserver};
use crate::metrics::{Registry, TcpMetrics};
use crate::table::TableHandle;
use crate::transparent::{self, Direction};
use serin_http1::{H2Options, H2Server, Handler, StopSignal};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// IPv6 listeners were required (`--transparent-ipv6 on`) for a listener address that has
    /// no IPv6 counterpart.
    #[error(
        "--transparent-ipv6 on: the {what} listener {addr} has no IPv6 counterpart (only 127.0.0.1 and 0.0.0.0 addresses have one: [::1] and [::])"
    )]
    NoIpv6Twin {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
    },
    /// IPv6 listeners were required (`--transparent-ipv6 on`) in a network namespace without
    /// IPv6 loopback.
    #[error(
        "--transparent-ipv6 on: the {what} listener's IPv6 twin {addr} cannot be bound, this network namespace has no IPv6 loopback ({source}); use --transparent-ipv6 auto (IPv6 where the namespace has it) or off"
    )]
    NoIpv6 {
        /// Which listener.
        what: &'static str,
        /// The twin's address.
        addr: SocketAddr,
        /// Why `[::1]` could not be bound.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running proxy.
pub struct Proxy {
    table: TableHandle,
    registry: Arc<Registry>,
    outbound: SocketAddr,
    inbound: Option<SocketAddr>,
    captured_inbound: Option<SocketAddr>,
    ipv6_listeners: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<bool>,
    /// The admin listener stops only after the proxying listeners have drained, so `/ready`
    /// answers 503 (not a refused connection) for the whole drain.
    admin_stop: watch::Sender<bool>,
    admin_tasks: Vec<tokio::task::JoinHandle<bool>>,
    shutdown_timeout: Duration,
}

impl Proxy {
    /// Binds every listener and starts serving with an empty table (404 for everything) until
    /// a table is applied through [`Proxy::table`].
    pub async fn start(cfg: ProxyConfig) -> Result<Proxy, StartError> {
        let registry =
            Arc::new(Registry::new(&cfg.labels).with_retain_idle(cfg.metrics_retain_idle));
        let table = TableHandle::new(registry.clone());
        let transparent_inbound = cfg.transparent.as_ref().and_then(|t| t.inbound);
        let inbound_target =
            (cfg.inbound.is_some() || transparent_inbound.is_some()).then(|| InboundTarget {
                endpoint: cfg
                    .inbound
                    .as_ref()
                    .map(|i| Arc::new(Endpoint::new(i.forward))),
                upstreams: Upstreams::new(&registry, "inbound", cfg.connect_timeout),
                metrics: registry.inbound(),
                timeout: cfg.inbound.as_ref().and_then(|i| i.timeout),
            });
        let shared = Arc::new(Shared {
            table: table.clone(),
            no_route: registry.no_route(),
            body_idle: cfg.body_idle_timeout,
            outbound: Upstreams::new(&registry, "outbound", cfg.connect_timeout),
            inbound: inbound_target,
            registry: registry.clone(),
        });
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let h2_opts = H2Options {
            idle_timeout: cfg.h2_idle_timeout,
            body_idle_timeout: cfg.body_idle_timeout,
            ..H2Options::default()
        };
        let out_l = bind("outbound", cfg.outbound).await?;
        let outbound = local(&out_l, cfg.outbound);
        let mut ipv6_listeners = Vec::new();
        let has_ipv6 = namespace_has_ipv6();
        if let Some(t) = &cfg.transparent {
            let ctx = Arc::new(transparent::Listener::new(
                shared.clone(),
                Direction::Outbound,
                t.detect_timeout,
                cfg.connect_timeout,
            ));
            let twin = Transparent {
                what: "outbound",
                ctx,
                max_connections: cfg.outbound_max_connections,
                ipv6: t.ipv6,
                has_ipv6: &has_ipv6,
            }
            .spawn(
                &mut tasks,
                out_l,
                outbound,
                &stop,
                cfg.shutdown_timeout,
                h2_opts,
            )
            .await?;
            ipv6_listeners.extend(twin);
        } else {
            let shared = shared.clone();
            let tcp = registry.tcp("outbound", "src");
            tasks.spawn(serve_proxy(
                out_l,
                "outbound",
                registry.clone(),
                cfg.outbound_max_connections,
                tcp,
                stop.subscribe(),
                cfg.shutdown_timeout,
                h2_opts,
                move |req| forward::outbound(shared.clone(), req),
            ));
        }

        let mut inbound = None;
        if let Some(i) = &cfg.inbound {
            let l = bind("inbound", i.listen).await?;
            inbound = Some(local(&l, i.listen));
            let shared = shared.clone();
            let tcp = registry.tcp("inbound", "src");
            tasks.spawn(serve_proxy(
                l,
                "inbound",
                registry.clone(),
                i.max_connections,
                tcp,
                stop.subscribe(),
                cfg.shutdown_timeout,
                h2_opts,
                move |req| forward::inbound(shared.clone(), req),
            ));
        }

        let mut captured_inbound = None;
        if let (Some(t), Some(addr)) = (&cfg.transparent, transparent_inbound) {
            let l = bind("transparent inbound", addr).await?;
            let bound = local(&l, addr);
            captured_inbound = Some(bound);
            let ctx = Arc::new(transparent::Listener::new(
                shared.clone(),
                Direction::Inbound,
                t.detect_timeout,
                cfg.connect_timeout,
            ));
            let twin = Transparent {
                what: "transparent inbound",
                ctx,
                max_connections: t.inbound_max_connections,
                ipv6: t.ipv6,
                has_ipv6: &has_ipv6,
            }
            .spawn(&mut tasks, l, bound, &stop, cfg.shutdown_timeout, h2_opts)
            .await?;
            ipv6_listeners.extend(twin);
        }

        let mut admin = None;
        let (admin_stop, _) = watch::channel(false);
        let mut admin_tasks = Vec::new();
        if let Some(a) = cfg.admin {
            let l = bind("admin", a).await?;
            let bound = local(&l, a);
            admin = Some(bound);
            let mut listeners = vec![l];
            // In a pod, the kubelet's probes and Prometheus reach the admin port at the pod's
            // address, which in an IPv6 (or dual-stack) pod may be its IPv6 one.
            if let Some(t) = &cfg.transparent
                && let Some(l6) = bind_ipv6_twin("admin", bound, t.ipv6, &has_ipv6).await?
            {
                ipv6_listeners.push(local(&l6, bound));
                listeners.push(l6);
            }
            let tcp = registry.tcp("admin", "src");
            // One limit for the admin port whatever the family it is reached over.
            let limit = Arc::new(Semaphore::new(cfg.admin_max_connections.max(1)));
            for l in listeners {
                let table = table.clone();
                let registry2 = registry.clone();
                let stopping = stop.subscribe();
                admin_tasks.push(tokio::spawn(serve(
                    l,
                    registry.clone(),
                    tcp.clone(),
                    AdminLimits {
                        connections: limit.clone(),
                        idle: cfg.admin_idle_timeout,
                    },
                    admin_stop.subscribe(),
                    Duration::from_secs(1),
                    move |req| {
                        let r = admin_route(&req, &table, &registry2, &stopping);
                        async move { Ok::<_, Infallible>(r) }
                    },
                )));
            }
        }
        tracing::info!(
            %outbound,
            inbound = ?inbound,
            captured_inbound = ?captured_inbound,
            ipv6 = ?ipv6_listeners,
            transparent = cfg.transparent.is_some(),
            admin = ?admin,
            "serin-proxy listening"
        );
        Ok(Proxy {
            table,
            registry,
            outbound,
            inbound,
            captured_inbound,
            ipv6_listeners,
            admin,
            stop,
            tasks,
            admin_stop,
            admin_tasks,
            shutdown_timeout: cfg.shutdown_timeout,
        })
    }

    /// The handle to swap route tables in.
    pub fn table(&self) -> TableHandle {
        self.table.clone()
    }

    /// The metrics registry.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Bound outbound address (useful with port 0).
    pub fn outbound_addr(&self) -> SocketAddr {
        self.outbound
    }

    /// Bound inbound address, if on.
    pub fn inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound
    }

    /// Bound transparent inbound (capture) address, if on.
    pub fn captured_inbound_addr(&self) -> Option<SocketAddr> {
        self.captured_inbound
    }

    /// Bound IPv6 twins of the transparent listeners and the admin listener (outbound, then
    /// transparent inbound, then admin), if any.
    pub fn ipv6_listener_addrs(&self) -> &[SocketAddr] {
        &self.ipv6_listeners
    }

    /// Bound admin address, if on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Stops accepting, lets in-flight requests finish within the shutdown timeout, then
    /// closes what is left. Returns true when everything drained in time.
    pub async fn shutdown(mut self) -> bool {
        tracing::info!(timeout = ?self.shutdown_timeout, "draining");
        let _ = self.stop.send(true);
        let mut clean = true;
        while let Some(r) = self.tasks.join_next().await {
            clean &= r.unwrap_or(false);
        }
        let _ = self.admin_stop.send(true);
        for admin in std::mem::take(&mut self.admin_tasks) {
            clean &= admin.await.unwrap_or(false);
        }
        clean
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// The IPv6 address a transparent listener on `v4` also needs: `serin-proxy init`'s ip6tables
/// REDIRECT sends the app's outbound IPv6 connections to `[::1]` (as iptables sends IPv4 ones
/// to 127.0.0.1) and inbound ones to the receiving interface's address (any, so `[::]`).
/// None for an address with no IPv6 counterpart (a specific IPv4 address, or one already IPv6).
pub fn ipv6_twin(v4: SocketAddr) -> Option<SocketAddr> {
    let ip = match v4 {
        SocketAddr::V4(a) if a.ip().is_loopback() => std::net::Ipv6Addr::LOCALHOST,
        SocketAddr::V4(a) if a.ip().is_unspecified() => std::net::Ipv6Addr::UNSPECIFIED,
        _ => return None,
    };
    Some(SocketAddr::from((ip, v4.port())))
}

/// One transparent listener: its IPv4 socket and, where `init` redirects IPv6, its IPv6 twin,
/// served with one context and one connection limit (they are one listener to the user).
struct Transparent<'a> {
    what: &'static str,
    ctx: Arc<transparent::Listener>,
    max_connections: usize,
    ipv6: crate::capture::Ipv6Mode,
    has_ipv6: &'a Result<(), std::io::Error>,
}

impl Transparent<'_> {
    /// Binds the twin of `l` (bound at `bound`) when wanted and starts serving both; returns
    /// the twin's address.
    async fn spawn(
        self,
        tasks: &mut JoinSet<bool>,
        l: TcpListener,
        bound: SocketAddr,
        stop: &watch::Sender<bool>,
        drain: Duration,
        h2_opts: H2Options,
    ) -> Result<Option<SocketAddr>, StartError> {
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let mut listeners = vec![l];
        let mut twin = None;
        if let Some(l6) = bind_ipv6_twin(self.what, bound, self.ipv6, self.has_ipv6).await? {
            twin = Some(local(&l6, bound));
            listeners.push(l6);
        }
        for l in listeners {
            tasks.spawn(transparent::serve(
                l,
                self.ctx.clone(),
                limit.clone(),
                stop.subscribe(),
                drain,
                h2_opts,
            ));
        }
        Ok(twin)
    }
}

/// Whether this network namespace has IPv6 loopback (`[::1]`), probed by binding it: what
/// `serin-proxy init --ipv6 on` needs (`disable_ipv6` off on `lo`). Its `auto` asks more (an
/// IPv6 address of the pod's own), so in an IPv4-only pod the twins exist while nothing is
/// redirected to them, which costs nothing; wherever init captures IPv6, they exist. Errors
/// other than "no IPv6 here" count as having it, so that binding the twins reports them.
fn namespace_has_ipv6() -> Result<(), std::io::Error> {
    match std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)) {
        Err(e)
            if matches!(
                crate::metrics::errno_name(e.raw_os_error()),
                "EAFNOSUPPORT" | "EADDRNOTAVAIL"
            ) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// Binds the IPv6 twin of a transparent listener bound at `bound` (see [`ipv6_twin`]), as
/// IPv6-only so that it sits beside the IPv4 socket on the same port. With `Auto`, a namespace
/// without IPv6 loopback (`has_ipv6`) gets no twin; with `On` that, or an address without a
/// twin, stops the start; any other bind failure always does.
async fn bind_ipv6_twin(
    what: &'static str,
    bound: SocketAddr,
    mode: crate::capture::Ipv6Mode,
    has_ipv6: &Result<(), std::io::Error>,
) -> Result<Option<TcpListener>, StartError> {
    use crate::capture::Ipv6Mode;
    if mode == Ipv6Mode::Off {
        return Ok(None);
    }
    let Some(addr) = ipv6_twin(bound) else {
        if mode == Ipv6Mode::On {
            return Err(StartError::NoIpv6Twin { what, addr: bound });
        }
        tracing::info!(listener = what, %bound, "no IPv6 listener: the address has no IPv6 counterpart");
        return Ok(None);
    };
    match (mode, has_ipv6) {
        (Ipv6Mode::Auto, Err(e)) => {
            tracing::info!(listener = what, %addr, error = %e, "no IPv6 in this network namespace: IPv4 only");
            return Ok(None);
        }
        (_, Err(e)) => {
            // The probe's error, again (an io::Error is not Clone).
            let source = e
                .raw_os_error()
                .map(std::io::Error::from_raw_os_error)
                .unwrap_or_else(|| std::io::Error::new(e.kind(), e.to_string()));
            return Err(StartError::NoIpv6 { what, addr, source });
        }
        _ => {}
    }
    let bind = || -> std::io::Result<TcpListener> {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
        s.set_only_v6(true)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    };
    bind()
        .map(Some)
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}

/// How one listener accepts: its name in metrics and logs, and its connection limit.
pub(crate) struct Acceptor<'a> {
    /// `outbound`, `inbound` or `admin`.
    pub name: &'static str,
    pub registry: &'a Registry,
    /// One permit per open connection; None = no limit.
    pub limit: Option<Arc<Semaphore>>,
}

/// First pause after an accept failed for lack of resources; doubled per failure up to
/// [`ACCEPT_BACKOFF_MAX`], reset by the next successful accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per listener per this interval while accepts keep failing.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Linux errno names for the accept failures worth telling apart.
fn errno_name(e: &std::io::Error) -> &'static str {
    crate::metrics::errno_name(e.raw_os_error())
}

/// Out of file descriptors or memory: retrying at once fails again (and spins a core),
/// so the listener pauses. Other failures concern one connection only.
fn out_of_resources(errno: &str) -> bool {
    matches!(errno, "EMFILE" | "ENFILE" | "ENOBUFS" | "ENOMEM")
}

/// Waits out `d` unless `stop` changes first; returns false when stopping.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        biased;
        _ = stop.changed() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Hands every accepted connection (with `TCP_NODELAY` set, and its connection permit) to
/// `serve` until `stop` changes. At the connection limit it stops accepting until a
/// connection closes; out of file descriptors it backs off, logging once per interval.
pub(crate) async fn accept_until_stopped(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
    acceptor: Acceptor<'_>,
    mut serve: impl FnMut(TcpStream, Option<OwnedSemaphorePermit>),
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failures = 0u64;
    let mut logged: Option<Instant> = None;
    loop {
        let permit = match &acceptor.limit {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    acceptor.registry.accept_paused(acceptor.name);
                    tracing::debug!(
                        listener = acceptor.name,
                        "at maxConnections; not accepting until a connection closes"
                    );
                    tokio::select! {
                        biased;
                        _ = stop.changed() => return,
                        p = sem.clone().acquire_owned() => match p {
                            Ok(p) => Some(p),
                            Err(_) => return,
                        },
                    }
                }
            },
        };
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    let _ = stream.set_nodelay(true);
                    serve(stream, permit);
                }
                Err(e) => {
                    let errno = errno_name(&e);
                    acceptor.registry.accept_error(acceptor.name, errno);
                    if !out_of_resources(errno) {
                        tracing::debug!(listener = acceptor.name, error = %e, "accept failed");
                        continue;
                    }
                    // Keep serving what is open; connections still queue in the backlog.
                    failures += 1;
                    if logged.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_INTERVAL) {
                        tracing::warn!(
                            listener = acceptor.name,
                            errno,
                            error = %e,
                            failures,
                            backoff_ms = backoff.as_millis() as u64,
                            "accept failing for lack of resources; backing off"
                        );
                        logged = Some(Instant::now());
                        failures = 0;
                    }
                    if !pause(backoff, stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            },
        }
    }
}

/// A proxying listener: accepts until told to stop, then waits up to `drain` for the
/// connections (idle ones close at once, busy ones after their response). Returns whether
/// every connection finished in time.
#[allow(clippy::too_many_arguments)]
async fn serve_proxy<H: Handler>(
    listener: TcpListener,
    name: &'static str,
    registry: Arc<Registry>,
    max_connections: usize,
    tcp: Arc<TcpMetrics>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    h2_opts: H2Options,
    handler: H,
) -> bool {
    let h2 = H2Server::new(h2_opts);
    let connections = Connections::new();
    let conn_stop = stop.clone();
    let acceptor = Acceptor {
        name,
        registry: &registry,
        limit: Some(Arc::new(Semaphore::new(max_connections))),
    };
    accept_until_stopped(&listener, &mut stop, acceptor, |stream, permit| {
        let conn = serin_http1::serve_connection(
            stream,
            tcp.clone() as Arc<dyn TcpObserver>,
            conn_stop.clone(),
            h2.clone(),
            handler.clone(),
        );
        connections.spawn(conn, permit);
    })
    .await;
    drop(listener);
    connections.drain(name, drain).await
}

/// The connections of one proxying listener: counted, so that the drain can wait for them,
/// and cut together when the drain deadline passes. A connection still busy then (a response
/// being written, or a request head only half sent, which would otherwise wait for the 30 s
/// head timeout) is closed at the deadline, so shutdown never runs past it.
pub(crate) struct Connections {
    /// Every connection task holds a clone; `all_closed` ends when the last one is gone.
    alive: mpsc::Sender<()>,
    all_closed: mpsc::Receiver<()>,
    cut: watch::Sender<bool>,
}

/// After the cut, how long the drain waits for the cut tasks to drop their sockets.
const CUT_WAIT: Duration = Duration::from_secs(1);

impl Connections {
    pub(crate) fn new() -> Self {
        let (alive, all_closed) = mpsc::channel(1);
        let (cut, _) = watch::channel(false);
        Connections {
            alive,
            all_closed,
            cut,
        }
    }

    /// Runs one connection (holding its permit) until it ends or is cut.
    pub(crate) fn spawn(
        &self,
        conn: impl Future<Output = ()> + Send + 'static,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let alive = self.alive.clone();
        // Checked on every poll of the connection: a `StopSignal`, whose check costs an atomic
        // load, not a poll of a channel future under its lock.
        let mut cut = StopSignal::new(self.cut.subscribe());
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            std::future::poll_fn(|cx| {
                if conn.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                // Dropping the connection's future closes its socket and drops the request
                // in progress with it.
                if cut.poll_stopped(cx) {
                    return Poll::Ready(());
                }
                Poll::Pending
            })
            .await;
            drop(permit);
            drop(alive);
        });
    }

    /// Waits up to `deadline` for every connection to finish, then cuts the rest. Returns
    /// whether every connection finished in time.
    pub(crate) async fn drain(self, listener: &'static str, deadline: Duration) -> bool {
        let Connections {
            alive,
            mut all_closed,
            cut,
        } = self;
        drop(alive);
        if tokio::time::timeout(deadline, all_closed.recv())
            .await
            .is_ok()
        {
            return true;
        }
        tracing::info!(
            listener,
            ?deadline,
            "drain deadline passed; closing the connections still open"
        );
        let _ = cut.send(true);
        let _ = tokio::time::timeout(CUT_WAIT, all_closed.recv()).await;
        false
    }
}

/// Accepts until told to stop, then drains connections for up to `drain`. Returns whether
/// every connection finished in time.
/// What bounds the admin listener's connections.
struct AdminLimits {
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    /// A connection that moves no byte for this long is closed.
    idle: Duration,
}

async fn serve<F, Fut>(
    listener: TcpListener,
    registry: Arc<Registry>,
    tcp: Arc<TcpMetrics>,
    limits: AdminLimits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    handler: F,
) -> bool
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ResBody>, Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let acceptor = Acceptor {
        name: "admin",
        registry: &registry,
        limit: Some(limits.connections),
    };
    let idle = limits.idle;
    accept_until_stopped(&listener, &mut stop, acceptor, |stream, permit| {
        let peer = Peer(stream.peer_addr().ok());
        let last = Arc::new(std::sync::Mutex::new(Instant::now()));
        let io = TokioIo::new(Noted {
            inner: CountingIo::new(stream, tcp.clone() as Arc<dyn TcpObserver>),
            last: last.clone(),
        });
        let handler = handler.clone();
        let svc = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(peer);
            handler(req)
        });
        let conn = builder.serve_connection(io, svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            // hyper has no idle timeout for a connection that has not yet said whether it
            // speaks HTTP/1 or 2, nor for an HTTP/2 one: without this, such connections
            // would hold their permit (and memory, and a descriptor) for ever.
            loop {
                let quiet_until = *last.lock().unwrap_or_else(|p| p.into_inner()) + idle;
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    _ = tokio::time::sleep_until(quiet_until.into()) => {
                        let last = *last.lock().unwrap_or_else(|p| p.into_inner());
                        if last.elapsed() >= idle {
                            tracing::debug!(?idle, "admin connection idle; closing");
                            return;
                        }
                    }
                }
            }
        });
    })
    .await;
    drop(listener);
    tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_ok()
}

/// An admin connection's socket, noting when it last moved a byte.
struct Noted {
    inner: CountingIo,
    last: Arc<std::sync::Mutex<Instant>>,
}

impl Noted {
    fn note<T>(&self, r: &Poll<std::io::Result<T>>) {
        if matches!(r, Poll::Ready(Ok(_))) {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

impl tokio::io::AsyncRead for Noted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(&r);
        r
    }
}

impl tokio::io::AsyncWrite for Noted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&r);
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The admin client's address, put on each admin request.
#[derive(Debug, Clone, Copy)]
struct Peer(Option<SocketAddr>);

/// The route table in force as JSON. Match values (header, query parameter and cookie values:
/// `x-canary: insider` and the like) are shown only to clients on the loopback interface; from
/// anywhere else (an admin port bound beyond the pod so Prometheus can scrape it) they read
/// `<redacted>`.
fn routes_json(table: &TableHandle, peer: Option<&Peer>) -> serde_json::Result<Vec<u8>> {
    let mut v = serde_json::to_value(&*table.current())?;
    let local = peer.and_then(|p| p.0).is_some_and(|a| a.ip().is_loopback());
    if !local {
        redact_match_values(&mut v);
    }
    serde_json::to_vec_pretty(&v)
}

fn redact_match_values(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if matches!(k.as_str(), "headers" | "queryParams" | "cookies")
                    && let serde_json::Value::Array(items) = child
                {
                    for item in items {
                        if let Some(value) = item.get_mut("value") {
                            *value = serde_json::Value::String("<redacted>".into());
                        }
                    }
                } else {
                    redact_match_values(child);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_match_values),
        _ => {}
    }
}

fn admin_route(
    req: &Request<Incoming>,
    table: &TableHandle,
    registry: &Registry,
    stopping: &watch::Receiver<bool>,
) -> Response<ResBody> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return forward::admin_response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => forward::admin_response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            registry.render(),
        ),
        "/live" => forward::admin_response(StatusCode::OK, TEXT, "live\n"),
        "/ready" => {
            if *stopping.borrow() {
                forward::admin_response(StatusCode::SERVICE_UNAVAILABLE, TEXT, "shutting down\n")
            } else if table.has_table() {
                forward::admin_response(StatusCode::OK, TEXT, "ready\n")
            } else {
                forward::admin_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    "no route table yet\n",
                )
            }
        }
        "/routes" => match routes_json(table, req.extensions().get::<Peer>()) {
            Ok(body) => forward::admin_response(StatusCode::OK, "application/json", body),
            Err(e) => forward::admin_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("cannot encode the route table: {e}\n"),
            ),
        },
        _ => forward::admin_response(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics, /ready, /live or /routes\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_listeners_get_ipv6_twins_where_init_redirects_ipv6() {
        let twin = |a: &str| ipv6_twin(a.parse().expect("addr")).map(|t| t.to_string());
        assert_eq!(twin("127.0.0.1:4140").as_deref(), Some("[::1]:4140"));
        assert_eq!(twin("0.0.0.0:4143").as_deref(), Some("[::]:4143"));
        assert_eq!(twin("10.0.0.7:4143"), None);
        assert_eq!(twin("[::1]:4140"), None);
    }

    #[tokio::test]
    async fn a_transparent_proxy_listens_on_ipv6_loopback_on_its_outbound_port() {
        if namespace_has_ipv6().is_err() {
            eprintln!("SKIPPED: no IPv6 loopback here");
            return;
        }
        let cfg = ProxyConfig {
            outbound: "127.0.0.1:0".parse().expect("addr"),
            admin: None,
            transparent: Some(crate::TransparentConfig {
                inbound: None,
                ipv6: crate::capture::Ipv6Mode::On,
                ..crate::TransparentConfig::default()
            }),
            ..ProxyConfig::default()
        };
        let proxy = Proxy::start(cfg).await.expect("start");
        let port = proxy.outbound_addr().port();
        assert_eq!(
            proxy.ipv6_listener_addrs(),
            [SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))]
        );
        proxy.shutdown().await;
    }

    #[test]
    fn match_values_are_redacted_for_clients_beyond_the_loopback() {
        let registry = Arc::new(Registry::new(&Default::default()));
        let table = TableHandle::new(registry);
        let t: serin_mesh_api::RouteTable = serde_norway::from_str(
            "routes:\n  - authority: a\n    rules:\n      - matches:\n          - headers: [{ name: x-canary, value: insider }]\n            queryParams: [{ name: beta, value: \"1\" }]\n            cookies: [{ name: track, value: canary }]\n        backends: [{ name: b, endpoints: [\"127.0.0.1:1\"] }]\n",
        )
        .expect("table");
        table.apply(t).expect("valid");
        let local = Peer(Some("127.0.0.1:5000".parse().expect("addr")));
        let remote = Peer(Some("10.0.0.7:5000".parse().expect("addr")));
        let shown =
            String::from_utf8(routes_json(&table, Some(&local)).expect("json")).expect("utf8");
        assert!(
            shown.contains("insider") && shown.contains("canary"),
            "{shown}"
        );
        let hidden =
            String::from_utf8(routes_json(&table, Some(&remote)).expect("json")).expect("utf8");
        for secret in ["insider", "\"1\"", "\"canary\""] {
            assert!(!hidden.contains(secret), "{secret} shown: {hidden}");
        }
        assert!(
            hidden.contains("x-canary") && hidden.contains("<redacted>"),
            "{hidden}"
        );
    }
}

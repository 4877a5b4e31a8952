//! Listeners: accept loops, HTTP/1.1 + h2c serving, admin endpoints, graceful drain.
//!
//! The outbound and inbound listeners serve through `serin_http1`; the admin listener,
//! off the request path, through hyper's auto (HTTP/1.1 + h2c) server.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::balance::Endpoint;
use crate::body::ResBody;
use crate::config::ProxyConfig;
use crate::forward::{self, InboundTarget, Shared, Upstreams};
use crate::io::{CountingIo, TcpObserver};
use crate::metrics::{Registry, TcpMetrics};
use crate::table::TableHandle;
use crate::transparent::{self, Direction};
use serin_http1::Handler;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
    admin: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<bool>,
    shutdown_timeout: Duration,
}

impl Proxy {
    /// Binds every listener and starts serving with an empty table (404 for everything) until
    /// a table is applied through [`Proxy::table`].
    pub async fn start(cfg: ProxyConfig) -> Result<Proxy, StartError> {
        let registry = Arc::new(Registry::new(&cfg.labels));
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
            outbound: Upstreams::new(&registry, "outbound", cfg.connect_timeout),
            inbound: inbound_target,
            registry: registry.clone(),
        });
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let out_l = bind("outbound", cfg.outbound).await?;
        let outbound = local(&out_l, cfg.outbound);
        if let Some(t) = &cfg.transparent {
            let ctx = Arc::new(transparent::Listener::new(
                shared.clone(),
                Direction::Outbound,
                t.detect_timeout,
                cfg.connect_timeout,
            ));
            tasks.spawn(transparent::serve(
                out_l,
                ctx,
                stop.subscribe(),
                cfg.shutdown_timeout,
            ));
        } else {
            let shared = shared.clone();
            let tcp = registry.tcp("outbound", "src");
            tasks.spawn(serve_proxy(
                out_l,
                tcp,
                stop.subscribe(),
                cfg.shutdown_timeout,
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
                tcp,
                stop.subscribe(),
                cfg.shutdown_timeout,
                move |req| forward::inbound(shared.clone(), req),
            ));
        }

        let mut captured_inbound = None;
        if let (Some(t), Some(addr)) = (&cfg.transparent, transparent_inbound) {
            let l = bind("transparent inbound", addr).await?;
            captured_inbound = Some(local(&l, addr));
            let ctx = Arc::new(transparent::Listener::new(
                shared.clone(),
                Direction::Inbound,
                t.detect_timeout,
                cfg.connect_timeout,
            ));
            tasks.spawn(transparent::serve(
                l,
                ctx,
                stop.subscribe(),
                cfg.shutdown_timeout,
            ));
        }

        let mut admin = None;
        if let Some(a) = cfg.admin {
            let l = bind("admin", a).await?;
            admin = Some(local(&l, a));
            let table = table.clone();
            let registry2 = registry.clone();
            let tcp = registry.tcp("admin", "src");
            let stopping = stop.subscribe();
            tasks.spawn(serve(
                l,
                tcp,
                stop.subscribe(),
                Duration::from_secs(1),
                move |req| {
                    let r = admin_route(&req, &table, &registry2, &stopping);
                    async move { Ok::<_, Infallible>(r) }
                },
            ));
        }
        tracing::info!(
            %outbound,
            inbound = ?inbound,
            captured_inbound = ?captured_inbound,
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
            admin,
            stop,
            tasks,
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
        clean
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}

/// Hands every accepted connection (with `TCP_NODELAY` set) to `serve` until `stop` changes.
pub(crate) async fn accept_until_stopped(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
    mut serve: impl FnMut(TcpStream),
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    serve(stream);
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving what we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::task::yield_now().await;
                }
            },
        }
    }
}

/// A proxying listener: accepts until told to stop, then waits up to `drain` for the
/// connections (idle ones close at once, busy ones after their response). Returns whether
/// every connection finished in time.
async fn serve_proxy<H: Handler>(
    listener: TcpListener,
    tcp: Arc<TcpMetrics>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    handler: H,
) -> bool {
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new());
    let h2 = Arc::new(h2);
    // Every connection task holds a sender; `recv` ends when the last one is gone.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let conn_stop = stop.clone();
    accept_until_stopped(&listener, &mut stop, |stream| {
        let conn = serin_http1::serve_connection(
            stream,
            tcp.clone() as Arc<dyn TcpObserver>,
            conn_stop.clone(),
            h2.clone(),
            handler.clone(),
        );
        let alive = alive.clone();
        tokio::spawn(async move {
            conn.await;
            drop(alive);
        });
    })
    .await;
    drop(listener);
    drop(alive);
    tokio::time::timeout(drain, all_closed.recv()).await.is_ok()
}

/// Accepts until told to stop, then drains connections for up to `drain`. Returns whether
/// every connection finished in time.
async fn serve<F, Fut>(
    listener: TcpListener,
    tcp: Arc<TcpMetrics>,
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
    accept_until_stopped(&listener, &mut stop, |stream| {
        let io = TokioIo::new(CountingIo::new(stream, tcp.clone() as Arc<dyn TcpObserver>));
        let conn = builder
            .serve_connection(io, service_fn(handler.clone()))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    })
    .await;
    drop(listener);
    tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_ok()
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
        "/routes" => match serde_json::to_vec_pretty(&*table.current()) {
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

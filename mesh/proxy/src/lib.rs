//! `serin-proxy`: Serin's sidecar data plane, as a library behind the thin `serin-proxy` binary.
//!
//! It routes each request by authority, then by the first matching rule, then by weighted
//! backend choice and a power-of-two-choices pick of an endpoint; mirrors traffic; applies
//! route timeouts; and exports Linkerd-named metrics (`request_total`, `response_total`,
//! `response_latency_ms`, `tcp_*`) on an admin listener, so Flagger's Linkerd queries work.
//!
//! It is not a general-purpose proxy: no TLS, no upgrades over HTTP/2 (HTTP/1.1 upgrades such as
//! WebSocket are tunnelled), no retries, no Kubernetes
//! access. Route tables come from outside through [`TableHandle::apply`]: the static file
//! watcher ([`reload`]) or the control-plane client.
//!
//! ```no_run
//! # async fn demo(table: serin_mesh_api::RouteTable) -> anyhow::Result<()> {
//! let proxy = serin_proxy::Proxy::start(serin_proxy::ProxyConfig::default()).await?;
//! proxy.table().apply(table)?;          // from any source, at any time
//! proxy.shutdown().await;               // drain
//! # Ok(()) }
//! ```

pub mod balance;
pub mod body;
pub mod capture;
pub mod config;
pub mod control_client;
pub mod forward;
pub mod h1;
pub mod h2;
pub mod io;
pub mod metrics;
pub mod pool;
pub mod reload;
pub mod router;
pub mod server;
pub mod table;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod transparent;

pub use config::{ConfigError, FileConfig, InboundConfig, ProxyConfig, TransparentConfig};
pub use server::{Proxy, StartError};
pub use table::{TableEvents, TableHandle};

/// Resolves when the process is asked to stop (SIGTERM or SIGINT).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

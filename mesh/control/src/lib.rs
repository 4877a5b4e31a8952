//! `serin-mesh-control`: the traffic-split control plane. It turns Gateway API `HTTPRoute`s
//! (GAMMA mesh mode), SMI `TrafficSplit`s, Services and their ready endpoints into the route
//! tables every `serin-proxy` enforces, and streams a full, versioned snapshot to each proxy on
//! every change (protocol: `serin_mesh_api::protocol`).
//!
//! It is: the translation ([`translate`], pure), the state with last-valid-object semantics
//! ([`state`]), the snapshot hub tracking what each proxy applied ([`hub`]), the HTTP server
//! ([`server`]), and two sources of truth: Kubernetes watches ([`k8s`]) and a local directory
//! of YAML files with a write API ([`local`]).
//!
//! It is not: a proxy (see `serin-proxy`), nor the canary controller (which writes HTTPRoutes or
//! calls the local weights API and polls route convergence here). The route objects it reads and
//! the status documents it serves are typed once, in `serin_mesh_api::{objects, status}`.

pub mod hub;
pub mod k8s;
pub mod local;
pub mod metrics;
pub mod server;
pub mod state;
pub mod translate;
pub mod world;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong (the message names the flag or field).
    #[error("{0}")]
    Config(String),
    /// File or socket I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes client could not be built.
    #[error("kubernetes client: {0}")]
    Kube(#[source] kube::Error),
}

/// Where route objects come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory of YAML files, polled for changes every `poll`.
    Local {
        /// The directory.
        dir: PathBuf,
        /// Poll interval.
        poll: Duration,
    },
    /// The Kubernetes API (in-cluster or kubeconfig), all namespaces.
    Kubernetes,
}

/// Control-plane configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address for the proxy stream, the APIs and `/metrics`.
    pub listen: SocketAddr,
    /// Source of truth.
    pub source: SourceConfig,
    /// Translation options.
    pub options: translate::Options,
}

/// A running control plane (returned by [`start`]).
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The hub.
    pub hub: Arc<hub::Hub>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops serving: closes the listener and every proxy stream.
    pub fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stops serving and waits until the listener is closed (so the address can be bound again).
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Waits until the server task ends (it only ends on error or abort).
    pub async fn wait(mut self) {
        if let Some(t) = self.tasks.pop() {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Checks the cluster DNS domain every Service authority ends with (`name.ns.svc.<domain>`):
/// one the proxies' route tables cannot hold would make every proxy refuse every snapshot.
/// A trailing dot (`cluster.local.`) is dropped.
fn cluster_domain(d: &str) -> Result<String, Error> {
    let trimmed = d.strip_suffix('.').unwrap_or(d);
    let dns = !trimmed.is_empty()
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if dns {
        Ok(trimmed.to_ascii_lowercase())
    } else {
        Err(Error::Config(format!(
            "--cluster-domain (options.cluster_domain) {d:?} is not a DNS domain; accepted: dot-separated labels of letters, digits and `-`, e.g. cluster.local"
        )))
    }
}

/// Binds, starts the source and serves. Returns once listening.
pub async fn start(mut config: Config) -> Result<Running, Error> {
    config.options.cluster_domain = cluster_domain(&config.options.cluster_domain)?;
    let hub = hub::Hub::new(config.options.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Io {
            what: format!("--listen {}", config.listen),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| Error::Io {
        what: "listener address".into(),
        source: e,
    })?;
    let mut tasks = Vec::new();
    let local = match &config.source {
        SourceConfig::Local { dir, poll } => {
            let src = local::LocalSource::start(dir, hub.clone())?;
            tasks.push(tokio::spawn(src.clone().watch(*poll)));
            Some(src)
        }
        SourceConfig::Kubernetes => {
            let client = kube::Client::try_default().await.map_err(Error::Kube)?;
            tasks.push(tokio::spawn(k8s::source::run(client, hub.clone())));
            None
        }
    };
    let app = server::router(server::AppState {
        hub: hub.clone(),
        local,
    });
    tracing::info!(%addr, "control plane listening");
    tasks.push(tokio::spawn(serve(listener, app)));
    Ok(Running { addr, hub, tasks })
}

/// Runs until the process is stopped.
pub async fn run(config: Config) -> Result<(), Error> {
    let running = start(config).await?;
    running.wait().await;
    Ok(())
}

/// Accepts connections (HTTP/1.1 and cleartext HTTP/2) until aborted. Connections live in a
/// `JoinSet` owned by this task, so stopping the server also closes every proxy stream (what a
/// restart or crash looks like to the proxies).
async fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if let Err(e) = builder.serve_connection(TokioIo::new(tcp), svc).await {
                        tracing::debug!(error = %e, "connection ended");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

//! `serin controller --kubernetes`: the process around the controller — admin server, leader
//! election, the controller itself, and shutdown on a signal or a lost lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use kube::Client;
use serin_core::{CheckResult, Status, Verdict};
use serin_mesh_api::status::RouteStatus;

use super::lease::{LeaderElection, LeaseConfig};
use super::routing::ConvergenceProbe;
use super::{KubeConfig, run_controller, system_clock};
use serin_controller::adapters::{AdapterError, Analyzer, CanaryContext, ErrorKind};
use serin_controller::http::{HttpClient, HttpError};
use serin_controller::metrics::{Health, Metrics, bind_admin, serve_admin};

/// Options of the Kubernetes controller process.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub admin_addr: SocketAddr,
    /// Provider for Canaries that name none.
    pub default_provider: String,
    /// Watch one namespace only.
    pub namespace: Option<String>,
    /// Base URL of Serin's control plane, asked whether a new weight is in force.
    pub control_plane: Option<String>,
    /// Leader election (off only for a single replica run by hand).
    pub leader_election: Option<LeaseConfig>,
    /// Reporter name on Events.
    pub reporter: String,
    /// Prometheus address for Canaries that set no `metricsServer`.
    pub metrics_server: Option<String>,
}

/// Why the controller process stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster configuration.
    #[error("connecting to Kubernetes: {0}")]
    Connect(#[source] kube::Error),
    /// The admin address could not be bound.
    #[error("--admin-addr {addr}: {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another replica took the lease; exiting lets the pod restart as a standby.
    #[error("lost the leader lease {0}")]
    LostLease(String),
    /// The Lease cannot be created because its namespace does not exist.
    #[error(
        "leader election: namespace {namespace:?} of the Lease does not exist ({detail}); set --lease-namespace (env POD_NAMESPACE) to an existing namespace, or run a single replica with --leader-elect=false"
    )]
    LeaseNamespace {
        /// The namespace.
        namespace: String,
        /// What the API server said.
        detail: String,
    },
}

/// Asks Serin's control plane (`GET /v1/routes/httproutes/{ns}/{name}`) whether every subscribed
/// proxy runs the route's latest version (`converged`). A route it does not know yet is not in
/// force.
pub struct ControlPlaneProbe {
    base: String,
    http: HttpClient,
}

impl ControlPlaneProbe {
    /// A probe of the control plane at `base` (e.g. `http://serin-control-plane.serin:8090`).
    pub fn new(base: impl Into<String>, http: HttpClient) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            http,
        }
    }
}

#[async_trait]
impl ConvergenceProbe for ControlPlaneProbe {
    async fn in_force(&self, namespace: &str, route: &str) -> Result<bool, AdapterError> {
        let url = format!("{}/v1/routes/httproutes/{namespace}/{route}", self.base);
        let what = format!("asking the control plane about route {namespace}/{route}");
        let resp = self
            .http
            .get(&url, Duration::from_secs(5))
            .await
            .map_err(|e| {
                let kind = match e {
                    HttpError::Timeout(_) => ErrorKind::Timeout,
                    HttpError::InvalidUrl { .. } => ErrorKind::Invalid,
                    HttpError::Transport(_) => ErrorKind::Other,
                };
                AdapterError::new(kind, what.clone(), e.to_string())
            })?;
        match resp.status.as_u16() {
            200 => {
                let status: RouteStatus = serde_json::from_slice(&resp.body).map_err(|e| {
                    AdapterError::new(
                        ErrorKind::Other,
                        what.clone(),
                        format!("unreadable answer: {e}"),
                    )
                })?;
                Ok(status.converged)
            }
            404 => Ok(false),
            s => Err(AdapterError::new(
                ErrorKind::Other,
                what,
                format!("answered {s}"),
            )),
        }
    }
}

/// The analyzer used when no metric backend is connected: every configured check is
/// inconclusive (the engine then holds the step), never a silent pass.
#[derive(Debug, Default)]
pub struct NoBackendAnalyzer;

#[async_trait]
impl Analyzer for NoBackendAnalyzer {
    async fn run_checks(
        &self,
        ctx: &CanaryContext,
        _status: &Status,
    ) -> Result<Vec<CheckResult>, AdapterError> {
        Ok(ctx
            .plan
            .checks
            .iter()
            .map(|name| CheckResult {
                name: name.clone(),
                verdict: Verdict::Inconclusive,
                value: None,
                bound: Default::default(),
                samples: None,
                detail: "no metrics backend is connected to this controller".into(),
            })
            .collect())
    }
}

/// Runs the controller until Ctrl-C / SIGTERM, or until the lease is lost.
///
/// An empty Lease namespace means the client's default namespace: the pod's own namespace in a
/// cluster (from its service account), the kubeconfig context's namespace outside one.
pub async fn run(opts: KubernetesOptions) -> Result<(), RunError> {
    let client = super::client().await.map_err(RunError::Connect)?;
    run_with(client, opts, shutdown_signal()).await
}

/// [`run`] with a given client and shutdown signal (tests drive both).
pub async fn run_with(
    client: Client,
    mut opts: KubernetesOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // Awaited in several places (standby, leading); every clone completes once it fires.
    let shutdown = shutdown.boxed().shared();
    if let Some(lease) = opts.leader_election.as_mut()
        && lease.namespace.is_empty()
    {
        lease.namespace = client.default_namespace().to_string();
    }
    let analyzer: Arc<dyn Analyzer> = Arc::new(super::analysis::PrometheusAnalyzer::new(
        client.clone(),
        opts.metrics_server.clone(),
        opts.default_provider.clone(),
    ));
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (listener, addr) = bind_admin(opts.admin_addr)
        .await
        .map_err(|source| RunError::Admin {
            addr: opts.admin_addr,
            source,
        })?;
    tracing::info!(%addr, "admin server listening (/metrics, /healthz, /readyz)");
    tokio::spawn(serve_admin(listener, metrics.clone(), health.clone()));

    let http = HttpClient::new();
    let config = KubeConfig {
        default_provider: opts.default_provider.clone(),
        analyzer,
        probe: opts.control_plane.as_ref().map(|u| {
            Arc::new(ControlPlaneProbe::new(u.clone(), http.clone())) as Arc<dyn ConvergenceProbe>
        }),
        namespace: opts.namespace.clone(),
        reporter: opts.reporter.clone(),
        instance: opts.leader_election.as_ref().map(|l| l.identity.clone()),
        clock: system_clock(),
        webhook_backoff: Duration::from_millis(500),
    };
    let clock = system_clock();

    // Completes with the lease's name when leadership is lost; never without an election.
    let mut lost: futures::future::BoxFuture<'static, String> = futures::future::pending().boxed();
    let mut leading: Option<(Arc<LeaderElection>, tokio::task::JoinHandle<()>)> = None;
    if let Some(lease) = opts.leader_election.clone() {
        let election = Arc::new(LeaderElection::new(client.clone(), lease.clone()));
        // Standby until the lease is ours; /readyz stays green for a healthy standby.
        health.set_ready(true);
        loop {
            // Raced with the signal: an API call that never answers must not keep a standby
            // from stopping (nor hold it past a renew deadline: the next attempt asks afresh).
            let attempt = tokio::select! {
                r = tokio::time::timeout(
                    lease.renew_deadline(),
                    election.try_acquire_or_renew(clock()),
                ) => r,
                _ = shutdown.clone() => return Ok(()),
            };
            let Ok(attempt) = attempt else {
                tracing::warn!(timeout = ?lease.renew_deadline(), "leader election: the API server did not answer");
                continue;
            };
            match attempt {
                Ok(true) => break,
                Ok(false) => {}
                // Only a missing namespace makes creating a Lease answer 404: waiting cannot
                // help, so say which setting to change and stop.
                Err(e) if e.kind == ErrorKind::NotFound => {
                    return Err(RunError::LeaseNamespace {
                        namespace: lease.namespace.clone(),
                        detail: e.to_string(),
                    });
                }
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::select! {
                _ = tokio::time::sleep(lease.renew_every()) => {}
                _ = shutdown.clone() => return Ok(()),
            }
        }
        health.set_leader(true);
        tracing::info!(identity = %lease.identity, lease = %lease.name, "became leader");
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
        let renewing = election.clone();
        let renew = tokio::spawn(async move {
            let name = format!("{}/{}", lease.namespace, lease.name);
            // As client-go: the leader gives up at `renew_deadline`, strictly before a standby
            // may judge the lease expired (a whole duration after it last saw the record
            // change), and no attempt may outlast that deadline: an API call that never answers
            // must not keep this replica leading while another one takes over.
            let deadline = lease.renew_deadline();
            // When the last successful renewal was sent: the record it wrote is at least that
            // fresh.
            let mut last_ok = tokio::time::Instant::now();
            let mut pause = lease.renew_every();
            loop {
                tokio::time::sleep(pause).await;
                let sent = tokio::time::Instant::now();
                let left = (last_ok + deadline).saturating_duration_since(sent);
                let attempt =
                    tokio::time::timeout(left, renewing.try_acquire_or_renew(clock())).await;
                match attempt {
                    Ok(Ok(true)) => {
                        last_ok = sent;
                        pause = lease.renew_every();
                        continue;
                    }
                    Ok(Ok(false)) => {
                        let _ = lost_tx.send(name);
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease failed"),
                    Err(_) => {
                        tracing::warn!(timeout = ?left, "renewing the lease got no answer")
                    }
                }
                if last_ok.elapsed() >= deadline {
                    tracing::error!(
                        renew_deadline = ?deadline,
                        "the lease was not renewed within its renew deadline; stopping so that no two replicas lead"
                    );
                    let _ = lost_tx.send(name);
                    return;
                }
                // Retry sooner than a renewal period, but never past the deadline.
                pause = (lease.renew_every() / 2).min(
                    (last_ok + deadline).saturating_duration_since(tokio::time::Instant::now()),
                );
            }
        });
        // A dropped sender (the renew task aborted) is not a lost lease.
        lost = async move {
            match lost_rx.await {
                Ok(lease) => lease,
                Err(_) => futures::future::pending().await,
            }
        }
        .boxed();
        leading = Some((election, renew));
    } else {
        health.set_leader(true);
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopper = tokio::spawn(async move {
        let lost = tokio::select! {
            l = lost => Some(l),
            _ = shutdown => None,
        };
        let _ = stop_tx.send(());
        lost
    });
    run_controller(client, config, metrics, health.clone(), async move {
        let _ = stop_rx.await;
    })
    .await;
    let lost = stopper.await.ok().flatten();
    health.set_leader(false);
    if let Some((election, renew)) = leading {
        renew.abort();
        if lost.is_none() {
            // Graceful shutdown: hand the lease over now rather than after its duration.
            // Bounded: an API server that does not answer must not keep the process from
            // exiting (the standby then takes over after the lease duration instead).
            let wait = election.config().renew_every();
            match tokio::time::timeout(wait, election.release(system_clock()())).await {
                Ok(Ok(true)) => tracing::info!("released the leader lease"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "releasing the leader lease"),
                Err(_) => {
                    tracing::warn!(timeout = ?wait, "releasing the leader lease got no answer")
                }
            }
        }
    }
    match lost {
        Some(lease) => Err(RunError::LostLease(lease)),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

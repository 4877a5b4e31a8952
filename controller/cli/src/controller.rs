//! `serin controller`: run the canary controller. `--kubernetes` reconciles Canaries in a cluster
//! (in-cluster configuration or the kubeconfig); `--local DIR` runs them on one machine. Both
//! serve the dashboard, its API, live updates and the Flagger gate endpoints on
//! `--dashboard-addr` (actions only with `--dashboard-token`).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use clap::ArgAction;
use serin_kube::{KubernetesOptions, LeaseConfig};

/// Flags of `serin controller`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Reconcile Canaries in a Kubernetes cluster (in-cluster config or kubeconfig).
    #[arg(long, conflicts_with = "local")]
    pub kubernetes: bool,
    /// One machine, no cluster: Canary and Process manifests from this directory (reloaded on
    /// change); status and history under DIR/.serin/state. Needs --control-plane and --routes-dir.
    #[arg(long, value_name = "DIR", env = "SERIN_LOCAL")]
    pub local: Option<std::path::PathBuf>,
    /// Local: the directory `serin control-plane --routes` reads (routes files are written there).
    #[arg(long, env = "SERIN_ROUTES_DIR", requires = "local")]
    pub routes_dir: Option<std::path::PathBuf>,
    /// Local: a serin-proxy /metrics URL to measure from (repeat for several proxies); used
    /// unless --metrics-server is given.
    #[arg(
        long = "proxy-metrics",
        env = "SERIN_PROXY_METRICS",
        value_delimiter = ',',
        requires = "local"
    )]
    pub proxy_metrics: Vec<String>,
    /// Local: override every Canary's analysis interval (e.g. 2s for demos and tests).
    #[arg(long, env = "SERIN_INTERVAL", requires = "local", value_parser = serin_core::duration::parse_flag)]
    pub interval: Option<std::time::Duration>,
    /// Local: where status, history and process records live (default DIR/.serin/state).
    #[arg(long, env = "SERIN_STATE_DIR", requires = "local")]
    pub state_dir: Option<std::path::PathBuf>,
    /// Local: stop every workload process on exit (by default they keep serving and the next
    /// controller adopts them).
    #[arg(long, requires = "local")]
    pub stop_workloads_on_exit: bool,
    /// Address of the admin server (/metrics, /healthz, /readyz); default 0.0.0.0:8080 with
    /// --kubernetes, none with --local unless given (several local controllers share a machine).
    #[arg(long, env = "SERIN_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Routing provider for Canaries that set none (serin, gatewayapi, linkerd, smi, osm, kubernetes).
    #[arg(long, env = "SERIN_PROVIDER", default_value = "serin")]
    pub provider: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SERIN_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Base URL of Serin's control plane, asked whether a new weight is in force on every proxy
    /// before a window is judged (e.g. http://serin-control-plane.serin-system:8090).
    #[arg(long, env = "SERIN_CONTROL_PLANE")]
    pub control_plane: Option<String>,
    /// Prometheus address for Canaries that set no `metricsServer` (e.g. http://prometheus:9090).
    #[arg(long, env = "SERIN_METRICS_SERVER")]
    pub metrics_server: Option<String>,
    /// Leader election with a coordination.k8s.io Lease (turn off only for a single replica).
    #[arg(long, env = "SERIN_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "SERIN_LEASE_NAME", default_value = "serin-controller")]
    pub lease_name: String,
    /// Namespace of the leader-election Lease (default: the pod's own namespace in a cluster,
    /// the kubeconfig context's namespace outside one). It must exist: the controller exits
    /// with an error naming this flag when it does not.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name from HOSTNAME).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease is valid without renewal, as a duration (e.g. 15s).
    #[arg(long, env = "SERIN_LEASE_DURATION", default_value = "15s", value_parser = serin_core::duration::parse_flag)]
    pub lease_duration: std::time::Duration,
    /// Address of the web dashboard, its JSON API (/api/v1), live updates and the Flagger
    /// load-tester-compatible gate endpoints (/gate/check, ...). Port 0 picks a free port (the
    /// bound address is printed); `off` serves no dashboard.
    #[arg(long, env = "SERIN_DASHBOARD_ADDR", default_value = serin_dashboard::DEFAULT_ADDR)]
    pub dashboard_addr: String,
    /// Token that enables the dashboard's actions (promote, abort, pause, resume, gates), sent
    /// as `Authorization: Bearer TOKEN`. Without it the dashboard is read-only and the action
    /// endpoints answer 401.
    #[arg(long, env = "SERIN_DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,
}

/// The dashboard's bound listener and token, ready to be served by either controller.
#[derive(Debug)]
pub struct Dashboard {
    /// Bound before the controller starts, so a busy port fails fast and port 0 is resolved.
    pub listener: std::net::TcpListener,
    /// The action token (`None`: read-only).
    pub token: Option<String>,
}

impl Dashboard {
    /// The listener for the async runtime (call inside it).
    pub fn into_tokio(self) -> anyhow::Result<(tokio::net::TcpListener, Option<String>)> {
        self.listener
            .set_nonblocking(true)
            .context("--dashboard-addr: setting the listener non-blocking")?;
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .context("--dashboard-addr: registering the listener")?;
        Ok((listener, self.token))
    }
}

/// Binds `--dashboard-addr` (unless `off`) and prints the address it serves on.
pub fn bind_dashboard(args: &Args) -> anyhow::Result<Option<Dashboard>> {
    let text = args.dashboard_addr.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr: SocketAddr = text.parse().map_err(|_| {
        anyhow::anyhow!(
            "--dashboard-addr {text:?}: not an address; accepted: IP:PORT (e.g. {}, or 127.0.0.1:0 for a free port) or `off`",
            serin_dashboard::DEFAULT_ADDR
        )
    })?;
    let token = match &args.dashboard_token {
        Some(t) if t.trim().is_empty() => bail!(
            "--dashboard-token / SERIN_DASHBOARD_TOKEN: empty; give a secret, or leave it unset for a read-only dashboard"
        ),
        Some(t) => Some(t.trim().to_string()),
        None => None,
    };
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("--dashboard-addr {addr}: cannot listen there (in use? pass another address, port 0, or `off`)")
    })?;
    let bound = listener
        .local_addr()
        .context("--dashboard-addr: reading the bound address")?;
    let mode = if token.is_some() {
        "actions need the token"
    } else {
        "read-only: no --dashboard-token"
    };
    tracing::info!(addr = %bound, read_only = token.is_none(), "dashboard listening");
    // On stdout as well: scripts (and tests) that ask for port 0 read the address here.
    println!("serin controller: dashboard on http://{bound} ({mode})");
    Ok(Some(Dashboard { listener, token }))
}

/// Runs the controller until Ctrl-C / SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.local.is_none() && !args.kubernetes {
        bail!("serin controller: choose where to run: --kubernetes or --local DIR");
    }
    if let Some(dir) = args.local.clone() {
        return crate::rollout::run_local_controller(dir, args);
    }
    let lease_duration = args.lease_duration;
    if lease_duration.as_secs() < 3 {
        bail!(
            "--lease-duration: {:?} is too short; accepted: 3s or more",
            serin_core::duration::format_duration(lease_duration)
        );
    }
    // Bound once the flags are known good: a refused start prints no dashboard address.
    let dashboard = bind_dashboard(&args)?;
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("serin-controller-{}", std::process::id()));
    let opts = KubernetesOptions {
        admin_addr: args
            .admin_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
        default_provider: args.provider,
        namespace: args.namespace,
        control_plane: args.control_plane,
        leader_election: args.leader_elect.then_some(LeaseConfig {
            name: args.lease_name,
            // Empty: the client's default namespace (resolved once connected).
            namespace: args.lease_namespace.unwrap_or_default(),
            identity,
            duration: lease_duration,
        }),
        reporter: "serin-controller".into(),
        metrics_server: args.metrics_server,
    };
    let watch_namespace = opts.namespace.clone();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async move {
            // The dashboard reads Canary status and writes the command annotation; every
            // replica serves it (a standby's reads are as good as the leader's, and the
            // leader applies the commands).
            let server = match dashboard {
                Some(d) => {
                    let (listener, token) = d.into_tokio()?;
                    let client = kube::Client::try_default().await.context(
                        "--kubernetes: no usable Kubernetes configuration for the dashboard",
                    )?;
                    Some(tokio::spawn(async move {
                        if let Err(error) =
                            serin_kube::dashboard::serve(client, watch_namespace, listener, token)
                                .await
                        {
                            tracing::error!(%error, "the dashboard stopped serving");
                        }
                    }))
                }
                None => None,
            };
            let result = serin_kube::run(opts)
                .await
                .context("serin controller --kubernetes");
            if let Some(server) = server {
                server.abort();
            }
            result
        })
}

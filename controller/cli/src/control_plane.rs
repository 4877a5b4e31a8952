//! `serin control-plane`: the traffic-split control plane (library: `serin-mesh-control`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

/// Flags of `serin control-plane`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["kubernetes", "routes"])))]
pub struct Args {
    /// Read HTTPRoutes, TrafficSplits, Services and EndpointSlices from the Kubernetes API
    /// (in-cluster config or kubeconfig) and write HTTPRoute status.
    #[arg(long, env = "SERIN_CP_KUBERNETES")]
    pub kubernetes: bool,
    /// Local mode: a directory of route YAML files (HTTPRoute, TrafficSplit, Service,
    /// EndpointSlice, serin.dev StaticEndpoints), reloaded on change; enables the weights API.
    #[arg(long, env = "SERIN_CP_ROUTES", conflicts_with = "kubernetes")]
    pub routes: Option<PathBuf>,
    /// Listen address for proxies, the route-status/weights API, /metrics, /ready and /live.
    #[arg(long, env = "SERIN_CP_LISTEN", default_value = "127.0.0.1:8086")]
    pub listen: SocketAddr,
    /// How often --routes is checked for changes (e.g. 500ms, 2s).
    #[arg(long, env = "SERIN_CP_POLL", default_value = "500ms", value_parser = parse_poll)]
    pub poll: Duration,
    /// Cluster DNS domain used for `name.namespace.svc.<domain>` authorities.
    #[arg(long, env = "SERIN_CP_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
}

fn parse_poll(s: &str) -> Result<Duration, String> {
    match serin_core::duration::parse_flag(s)? {
        d if d >= Duration::from_millis(10) => Ok(d),
        _ => Err(format!("--poll {s:?}: must be at least 10ms")),
    }
}

/// Runs the control plane until interrupted.
pub fn run(args: Args) -> anyhow::Result<()> {
    let source = match args.routes {
        Some(dir) => serin_mesh_control::SourceConfig::Local {
            dir,
            poll: args.poll,
        },
        None => serin_mesh_control::SourceConfig::Kubernetes,
    };
    let config = serin_mesh_control::Config {
        listen: args.listen,
        source,
        options: serin_mesh_control::translate::Options {
            cluster_domain: args.cluster_domain,
        },
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let running = serin_mesh_control::start(config).await?;
        tokio::select! {
            _ = running_wait(running) => {}
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        }
        Ok::<_, serin_mesh_control::Error>(())
    })?;
    Ok(())
}

async fn running_wait(running: serin_mesh_control::Running) {
    running.wait().await;
}

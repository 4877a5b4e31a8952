//! `serin-proxy`: flags, logging, runtime; everything else is in the library.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serin_proxy::{InboundConfig, Proxy, ProxyConfig};

/// Serin's sidecar proxy: weighted splits, header/cookie routing, mirroring, Linkerd-named metrics.
#[derive(Parser, Debug)]
#[command(name = "serin-proxy", version)]
struct Args {
    /// Static mode: YAML file with listeners, labels and `routes:` (reloaded on change and SIGHUP).
    #[arg(long, env = "SERIN_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Outbound listener, when no --config file gives one.
    #[arg(long, env = "SERIN_PROXY_OUTBOUND", default_value = "127.0.0.1:4140")]
    outbound: SocketAddr,
    /// Admin listener (/metrics, /ready, /live, /routes), when no --config file gives one.
    #[arg(long, env = "SERIN_PROXY_ADMIN", default_value = "127.0.0.1:4191")]
    admin: SocketAddr,
    /// Inbound listener in front of the local app (needs --inbound-forward).
    #[arg(long, env = "SERIN_PROXY_INBOUND", requires = "inbound_forward")]
    inbound: Option<SocketAddr>,
    /// The local app the inbound listener forwards to.
    #[arg(long, env = "SERIN_PROXY_INBOUND_FORWARD", requires = "inbound")]
    inbound_forward: Option<SocketAddr>,
    /// Identity label on every metric, KEY=VALUE (repeatable; e.g. namespace=prod, deployment=web, pod=web-1).
    /// Added to (and overriding) the file's `labels:`.
    #[arg(long = "label", env = "SERIN_PROXY_LABELS", value_delimiter = ',', value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// How often the --config file is checked for changes (e.g. 1s, 500ms).
    #[arg(long, env = "SERIN_PROXY_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    reload_interval: Duration,
    /// Control-plane mode: stream route tables from this URL (http://HOST:PORT) instead of a file's
    /// `routes:`; the last table stays in force while the control plane is unreachable.
    #[arg(long, env = "SERIN_PROXY_CONTROL_PLANE", requires = "workload", value_parser = parse_control_plane)]
    control_plane: Option<http::Uri>,
    /// The workload this proxy serves, NAMESPACE/NAME (with --control-plane; picks the namespace
    /// whose short Service names resolve and whose consumer routes apply).
    #[arg(long, env = "SERIN_PROXY_WORKLOAD", requires = "control_plane", value_parser = parse_workload)]
    workload: Option<serin_mesh_api::protocol::Workload>,
    /// Most client connections each proxying listener keeps open when no file is given (the
    /// file's `outbound.maxConnections` / `inbound.maxConnections`); above it, it stops accepting.
    #[arg(long, env = "SERIN_PROXY_MAX_CONNECTIONS", default_value_t = serin_proxy::config::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// Worker threads (1 keeps the sidecar small; the runtime is then single-threaded).
    #[arg(long, env = "SERIN_PROXY_THREADS", default_value_t = 1)]
    threads: usize,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--label {s:?}: expected KEY=VALUE"))?;
    if !serin_mesh_api::table::is_label_name(k) {
        return Err(format!(
            "--label {s:?}: {k:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_control_plane(s: &str) -> Result<http::Uri, String> {
    serin_mesh_api::client::parse_url(s).map_err(|e| format!("--control-plane: {e}"))
}

fn parse_workload(s: &str) -> Result<serin_mesh_api::protocol::Workload, String> {
    s.parse().map_err(|e| format!("--workload: {e}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    serin_mesh_api::table::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match start(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with causes), not a backtrace.
            eprintln!("serin-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (mut cfg, table) = match &args.config {
        Some(path) => {
            let file = serin_proxy::config::load(path)?;
            (file.proxy, Some(file.table))
        }
        None => {
            let inbound = match (args.inbound, args.inbound_forward) {
                (Some(listen), Some(forward)) => Some(InboundConfig {
                    listen,
                    forward,
                    timeout: None,
                    max_connections: args.max_connections,
                }),
                _ => None,
            };
            let cfg = ProxyConfig {
                outbound: args.outbound,
                admin: Some(args.admin),
                inbound,
                outbound_max_connections: args.max_connections,
                ..ProxyConfig::default()
            };
            (cfg, None)
        }
    };
    let extra: BTreeMap<String, String> = args.labels.into_iter().collect();
    cfg.labels.extend(extra);

    let proxy = Proxy::start(cfg).await?;
    let control = match (args.control_plane, args.workload) {
        (Some(url), Some(workload)) => {
            if table.as_ref().is_some_and(|t| !t.routes.is_empty()) {
                tracing::warn!("--control-plane is set: the `routes:` of --config are ignored");
            }
            Some(serin_proxy::control_client::spawn(
                url,
                workload,
                proxy.table(),
            ))
        }
        _ => None,
    };
    let table = if control.is_some() { None } else { table };
    if let (Some(path), Some(mut table)) = (args.config, table) {
        if table.version == 0 {
            table.version = 1;
        }
        proxy
            .table()
            .apply(table)
            .with_context(|| format!("{}: route table rejected", path.display()))?;
        tokio::spawn(serin_proxy::reload::watch(
            path,
            proxy.table(),
            args.reload_interval,
        ));
    }

    serin_proxy::shutdown_signal().await;
    if !proxy.shutdown().await {
        tracing::warn!("shutdown deadline passed with requests still in flight; they were cut");
    }
    Ok(())
}

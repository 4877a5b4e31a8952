//! `serin-e2e`: the parts of the `serin` command line that the end-to-end tests run as real,
//! separate processes, built inside this package so the tests can find it with
//! `env!("CARGO_BIN_EXE_serin-e2e")` under any `cargo test` invocation (a test cannot name
//! another package's binary, and building it from inside a running test would wait on cargo's
//! own lock).
//!
//! - `serin-e2e sample-app --addr A --app-version V` (error rate from `SERIN_SAMPLE_APP_ERROR_RATE`):
//!   the same library code as `serin sample-app`.
//! - `serin-e2e controller --local DIR ...`: the same library code as `serin controller --local`
//!   (with its dashboard on `--dashboard-addr`, printed as `serin controller` prints it). The
//!   tests SIGKILL it mid-rollout and start it again.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The sample app.
    SampleApp {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long = "app-version")]
        version: String,
        #[arg(long, env = "SERIN_SAMPLE_APP_ERROR_RATE", default_value = "0")]
        error_rate: String,
        #[arg(long, default_value = "5s")]
        drain: String,
        #[arg(long, env = "SERIN_SAMPLE_APP_LATENCY", default_value = "0s")]
        latency: String,
    },
    /// The local controller.
    Controller {
        #[arg(long)]
        local: PathBuf,
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        control_plane: String,
        #[arg(long)]
        routes_dir: PathBuf,
        #[arg(long = "proxy-metrics")]
        proxy_metrics: Vec<String>,
        #[arg(long)]
        metrics_server: Option<String>,
        #[arg(long)]
        interval: String,
        #[arg(long = "admin-addr")]
        admin_addr: Option<std::net::SocketAddr>,
        /// The dashboard's address (`off`: none), as `serin controller --dashboard-addr`.
        #[arg(long = "dashboard-addr", default_value = "off")]
        dashboard_addr: String,
        #[arg(long = "dashboard-token")]
        dashboard_token: Option<String>,
        #[arg(long)]
        stop_workloads_on_exit: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SERIN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match Cli::parse().command {
        Command::SampleApp {
            addr,
            version,
            error_rate,
            drain,
            latency,
        } => {
            let config = serin_demo::sample_app::SampleAppConfig {
                addr,
                version,
                error_rate: serin_demo::sample_app::parse_error_rate("--error-rate", &error_rate)?,
                drain: serin_demo::duration::parse("--drain", &drain)?,
                latency: serin_demo::duration::parse("--latency", &latency)?,
                ..Default::default()
            };
            runtime.block_on(async move {
                let app = serin_demo::sample_app::SampleApp::bind(config).await?;
                app.run_until(serin_demo::server::terminate_signal()).await;
                Ok(())
            })
        }
        Command::Controller {
            local,
            state_dir,
            control_plane,
            routes_dir,
            proxy_metrics,
            metrics_server,
            interval,
            admin_addr,
            dashboard_addr,
            dashboard_token,
            stop_workloads_on_exit,
        } => {
            use serin_local::controller::{LocalOptions, MetricsSource};
            let interval = serin_api::duration::parse_duration(&interval)
                .map_err(|e| anyhow::anyhow!("--interval: {e}"))?;
            let opts = LocalOptions {
                dir: local,
                state_dir,
                control_plane,
                routes_dir,
                metrics: match metrics_server {
                    Some(url) => MetricsSource::Prometheus(url),
                    None => MetricsSource::Proxies(proxy_metrics),
                },
                interval: Some(interval),
                reload_every: Duration::from_millis(100),
                stop_workloads_on_exit,
                admin: admin_addr,
            };
            runtime.block_on(async move {
                let dashboard = match dashboard_addr.as_str() {
                    "off" => None,
                    addr => {
                        let listener =
                            tokio::net::TcpListener::bind(addr).await.with_context(|| {
                                format!("--dashboard-addr {addr}: cannot listen there")
                            })?;
                        // The line `serin controller` prints, which the site reads (port 0).
                        println!(
                            "serin-e2e controller: dashboard on http://{}",
                            listener.local_addr()?
                        );
                        Some((listener, dashboard_token))
                    }
                };
                serin_local::dashboard::run_controller(
                    opts,
                    dashboard,
                    serin_demo::server::terminate_signal(),
                )
                .await?;
                anyhow::Ok(())
            })
        }
    }
}

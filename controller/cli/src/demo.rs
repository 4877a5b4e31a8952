//! `serin demo`: the local platform on loopback, a bad release rolled back by the judge and a
//! good one promoted (logic in `serin_demo::orchestrate`). Exit 0 when both ended as expected,
//! 1 when not, 130 when interrupted.

use std::path::PathBuf;

use anyhow::Context as _;
use serin_demo::orchestrate::DemoOptions;
use serin_local::site::DashboardOptions;

/// Flags of `serin demo` (none needed).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for manifests, routes, state and logs (default: a fresh temporary directory,
    /// removed afterwards unless the demo failed).
    #[arg(long, env = "SERIN_DEMO_DIR")]
    pub dir: Option<PathBuf>,
    /// Analysis interval of the demo's Canary, e.g. 2s (shorter runs faster; 200ms to 60s).
    #[arg(long, default_value = "2s", value_parser = serin_core::duration::parse_flag)]
    pub interval: std::time::Duration,
    /// Requests per second sent through the proxy (10 to 2000).
    #[arg(long, default_value_t = 100.0, allow_negative_numbers = true)]
    pub rate: f64,
    /// Share of the bad release's requests that fail: a fraction (0.1) or a percentage (10%).
    #[arg(long, default_value = "10%", allow_hyphen_values = true)]
    pub bad_error_rate: String,
    /// How long one release may take before the demo gives up on it, e.g. 90s, at the
    /// configured --rate and --interval: a busy machine that sends fewer requests or analyses
    /// less often gets as many of both (up to 5 times as long) before the demo gives up.
    #[arg(long, default_value = "90s", value_parser = serin_core::duration::parse_flag)]
    pub release_timeout: std::time::Duration,
    /// Keep everything running after the demo (dashboard included) until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Bearer token the dashboard asks for before actions (promote, abort, ...); without it the
    /// dashboard is read-only.
    #[arg(long, env = "SERIN_DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,
}

/// Ctrl-C, SIGTERM, or the terminal closing (SIGHUP): the sample-app processes run in their
/// own process group, so a closed terminal would otherwise leave them running.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let hangup = async {
        match signal(SignalKind::hangup()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = serin_demo::server::terminate_signal() => {}
        () = hangup => {}
    }
}

/// Runs the demo; exits 1 when a release did not end as expected, 130 when interrupted.
pub fn run(args: Args) -> anyhow::Result<()> {
    let serin = std::env::current_exe()
        .context("locating the serin binary (the sample app runs as `serin sample-app`)")?;
    let mut opts = DemoOptions::new(serin);
    opts.interval = args.interval;
    opts.rate = args.rate;
    opts.bad_error_rate_pct =
        100.0 * serin_demo::sample_app::parse_error_rate("--bad-error-rate", &args.bad_error_rate)?;
    opts.release_timeout = args.release_timeout;
    opts.keep_running = args.keep_running;
    opts.validate()?;
    let dir = serin_demo::orchestrate::prepare_dir(args.dir)?;

    // The platform's logs go to a file: the terminal is the demo's.
    let log = std::fs::File::create(dir.log_file())
        .with_context(|| format!("creating {}", dir.log_file().display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SERIN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .init();

    // The dashboard reads the manifests too: the target's revision and analysis settings.
    let dashboard = DashboardOptions {
        token: args.dashboard_token,
    };
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let mut out = std::io::stdout();
            serin_demo::orchestrate::run(opts, &dir, Some(dashboard), &mut out, stop_signal()).await
        })?;
    if report.interrupted {
        std::process::exit(130);
    }
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}

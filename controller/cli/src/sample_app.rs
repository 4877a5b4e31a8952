//! `serin sample-app`: the podinfo-like demo service (logic in `serin_demo::sample_app`).

use std::io::Write;
use std::net::SocketAddr;

use serin_demo::sample_app::{self, SampleApp, SampleAppConfig};

/// Run a small podinfo-like HTTP service with knobs for a bad release.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port. The bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0", env = "SERIN_SAMPLE_APP_ADDR")]
    pub addr: SocketAddr,
    /// Version reported by `/` and `/version` and in the `x-serin-version` header.
    #[arg(
        long = "app-version",
        default_value = "v1",
        env = "SERIN_SAMPLE_APP_VERSION"
    )]
    pub version: String,
    /// Share of application requests answered with HTTP 500: a fraction (0.2) or a percentage (20%).
    #[arg(
        long,
        default_value = "0",
        env = "SERIN_SAMPLE_APP_ERROR_RATE",
        allow_hyphen_values = true
    )]
    pub error_rate: String,
    /// Latency added to every application request, e.g. 50ms.
    #[arg(long, default_value = "0s", env = "SERIN_SAMPLE_APP_LATENCY", value_parser = serin_core::duration::parse_flag)]
    pub latency: std::time::Duration,
    /// Greeting returned by `/`.
    #[arg(long, env = "SERIN_SAMPLE_APP_MESSAGE")]
    pub message: Option<String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = serin_core::duration::parse_flag)]
    pub drain: std::time::Duration,
    /// Stop (draining as on SIGTERM) when the process that started it is gone, even if it was
    /// killed without a chance to stop its children (`serin demo` passes it: its apps are
    /// never adopted by a next controller).
    #[arg(long, env = "SERIN_SAMPLE_APP_EXIT_WITH_PARENT")]
    pub exit_with_parent: bool,
}

/// Resolves once this process's parent has exited: it is then re-parented (to init or a
/// subreaper), so its parent pid changes. Polled: no signal reaches a child when its parent is
/// SIGKILLed, and a parent-death signal would need `unsafe` between fork and exec.
async fn parent_gone() {
    let parent = rustix::process::getppid();
    let mut every = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        every.tick().await;
        if rustix::process::getppid() != parent {
            return;
        }
    }
}

/// Runs the sample app until SIGINT or SIGTERM, then drains.
pub fn run(args: Args) -> anyhow::Result<()> {
    let parent = args.exit_with_parent;
    let mut config = SampleAppConfig {
        addr: args.addr,
        version: args.version,
        error_rate: sample_app::parse_error_rate("--error-rate", &args.error_rate)?,
        latency: args.latency,
        drain: args.drain,
        ..SampleAppConfig::default()
    };
    if let Some(message) = args.message {
        config.message = message;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = SampleApp::bind(config).await?;
        // The address goes to stdout (and is flushed) so scripts and supervisors can read it.
        let mut out = std::io::stdout();
        writeln!(out, "listening on http://{}", app.local_addr())?;
        out.flush()?;
        app.run_until(async move {
            tokio::select! {
                () = serin_demo::server::terminate_signal() => {}
                () = parent_gone(), if parent => {
                    eprintln!("the process that started this sample app is gone; stopping");
                }
            }
        })
        .await;
        Ok(())
    })
}

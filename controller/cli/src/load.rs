//! `serin load`: open-loop load, or a Flagger load-tester compatible webhook runner (logic in
//! `serin_demo::load` and `serin_demo::loadtester`).

use std::io::Write;
use std::net::SocketAddr;

use serin_demo::load::{self, LoadConfig};
use serin_demo::loadtester::LoadTester;

/// Send requests at a fixed rate and print requests, errors, p50/p99; or serve load-test webhooks.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// URL to send GET requests to (http://).
    #[arg(required_unless_present = "serve")]
    pub url: Option<String>,
    /// Requests per second, kept fixed whatever the server does (open loop).
    #[arg(long, required_unless_present = "serve", allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// How long to send for, e.g. 30s or 1m.
    #[arg(long, required_unless_present = "serve", value_parser = serin_core::duration::parse_flag)]
    pub duration: Option<std::time::Duration>,
    /// Host header to send (the authority a proxy routes on).
    #[arg(long)]
    pub host: Option<String>,
    /// Per-request deadline; slower requests count as errors.
    #[arg(long, default_value = "10s", value_parser = serin_core::duration::parse_flag)]
    pub timeout: std::time::Duration,
    /// Instead of one run: serve Flagger load-tester webhooks on this address
    /// (POST `{"metadata":{"cmd":"serin load URL --rate R --duration D"}}` or a `hey` line).
    #[arg(long, conflicts_with_all = ["url", "rate", "duration"])]
    pub serve: Option<SocketAddr>,
}

/// Runs the load (or the webhook server until SIGINT/SIGTERM).
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(addr) = args.serve {
        return runtime.block_on(async move {
            let tester = LoadTester::bind(addr).await?;
            let mut out = std::io::stdout();
            writeln!(
                out,
                "load tester listening on http://{}",
                tester.local_addr()
            )?;
            out.flush()?;
            tester
                .run_until(serin_demo::server::terminate_signal())
                .await;
            Ok(())
        });
    }
    let (Some(url), Some(rate), Some(duration)) = (args.url, args.rate, args.duration) else {
        anyhow::bail!("URL, --rate and --duration are required unless --serve is given");
    };
    let uri: http::Uri = url.parse().map_err(|_| {
        anyhow::anyhow!("invalid URL: `{url}` is not a URL; write e.g. http://127.0.0.1:9898/")
    })?;
    let mut config = LoadConfig::new(uri, rate, duration);
    config.host = args.host;
    config.timeout = args.timeout;
    let report = runtime.block_on(load::run(
        config,
        serin_demo::server::terminate_signal(),
        |_| {},
    ))?;
    println!("{}", report.summary());
    println!("responses: {}", report.breakdown());
    Ok(())
}

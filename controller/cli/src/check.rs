//! `serin check`: is Serin installed and working here? One line per check (✔ or ✘ with a
//! hint), or JSON with `-o json`; exit 0 when every check passes, 1 otherwise. The checks live
//! in `serin_kube::check`.

use anyhow::Context;
use serin_kube::check::{self, CheckOptions};

/// Flags of `serin check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Serin's namespace.
    #[arg(long, default_value = serin_kube::install::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Only the checks that make sense before `serin install` (API server, version, permission
    /// to create what the install creates).
    #[arg(long)]
    pub pre: bool,
    /// The data plane's checks too (as `linkerd check --proxy`): every meshed pod's proxy
    /// ready and connected to the control plane, no proxy refusing a route table.
    #[arg(long, conflicts_with = "pre")]
    pub proxy: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// How `serin check` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One line per check.
    Text,
    /// A JSON array of {check, ok, message, hint}.
    Json,
}

/// Runs the checks; `Ok(false)` when one failed (exit 1).
pub fn run(args: Args) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let outcomes = rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("no usable Kubernetes configuration (kubeconfig or in-cluster)")?;
        let opts = CheckOptions {
            namespace: args.namespace.clone(),
            pre: args.pre,
            proxy: args.proxy,
        };
        let now = serin_core::Timestamp::from_system_time(std::time::SystemTime::now());
        anyhow::Ok(check::run(&client, &opts, now).await)
    })?;
    match args.output {
        Format::Text => {
            for o in &outcomes {
                println!("{}", o.line());
            }
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&outcomes)?),
    }
    Ok(outcomes.iter().all(|o| o.ok))
}

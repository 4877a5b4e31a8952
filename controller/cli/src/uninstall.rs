//! `serin uninstall`: print what `kubectl delete -f -` must remove to take Serin out of the
//! cluster, as `linkerd uninstall` does, after checking that doing so now hurts nothing (no
//! Canary whose primary the garbage collector would delete, no meshed pod left without its
//! control plane). What it finds and checks lives in `serin_kube::uninstall`.

use std::io::Write;

use anyhow::Context;
use serin_kube::uninstall::{self, UninstallOptions};

/// Flags of `serin uninstall`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Serin's namespace (as given to `serin install`).
    #[arg(long, default_value = serin_kube::install::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Print the objects even when Canaries or meshed pods remain (each is still named on
    /// stderr).
    #[arg(long)]
    pub force: bool,
}

/// Prints the objects; exit 1 (nothing printed) when something would be hurt and `--force` is
/// not given, or when nothing of Serin's is found.
pub fn run(args: Args) -> anyhow::Result<()> {
    // A bad --namespace is named before any cluster is looked for.
    uninstall::candidates(&args.namespace)?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let found = rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("no usable Kubernetes configuration (kubeconfig or in-cluster)")?;
        let opts = UninstallOptions {
            namespace: args.namespace.clone(),
        };
        uninstall::plan(&client, &opts)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    let (lines, result) = found.outcome(&args.namespace, args.force);
    let mut err = std::io::stderr().lock();
    for line in lines {
        writeln!(err, "{line}")?;
    }
    let yaml = result?;
    let mut out = std::io::stdout().lock();
    out.write_all(yaml.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the objects to stdout")
}

//! `serin crds`: print Serin's CustomResourceDefinitions as one multi-document YAML stream,
//! the same text committed in `crds/serin.yaml`.

use std::io::Write;

use anyhow::Context;

/// Print the CRDs (Canary, MetricTemplate, AlertProvider) as YAML, ready for `kubectl apply -f -`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Writes the CRDs to stdout.
pub fn run(_args: Args) -> anyhow::Result<()> {
    let yaml = serin_api::crds_yaml().context("rendering the CRDs")?;
    let mut out = std::io::stdout().lock();
    out.write_all(yaml.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the CRDs to stdout")
}

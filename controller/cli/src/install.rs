//! `serin install`: print (or write) every manifest a cluster needs, as `linkerd install` does.
//! The objects are built in `serin_kube::install`; this only maps flags and writes text.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serin_kube::install::{self, CrdSelection, InstallOptions};

/// Flags of `serin install`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Namespace of Serin's components (created by the output).
    #[arg(long, default_value = install::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Image registry and repository prefix; the image is REGISTRY/serin:VERSION.
    #[arg(long, default_value = install::DEFAULT_REGISTRY)]
    pub registry: String,
    /// Image tag (default: this binary's version).
    #[arg(long = "version", value_name = "TAG", default_value = env!("CARGO_PKG_VERSION"))]
    pub image_version: String,
    /// High availability: three replicas of every component, PodDisruptionBudgets, replicas
    /// required on different nodes.
    #[arg(long)]
    pub ha: bool,
    /// Prometheus for Canaries that set no `metricsServer` (e.g. http://prometheus.monitoring:9090).
    #[arg(long, value_name = "URL")]
    pub metrics_server: Option<String>,
    /// Secret in the install namespace whose key `token` enables the dashboard's actions
    /// (without it the dashboard is read-only).
    #[arg(long, value_name = "SECRET")]
    pub dashboard_token_secret: Option<String>,
    /// Replicas of the control plane (default 1, 3 with --ha).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub control_plane_replicas: Option<i32>,
    /// Print only the CustomResourceDefinitions.
    #[arg(long, conflicts_with = "skip_crds")]
    pub crds_only: bool,
    /// Leave the CustomResourceDefinitions out (installed separately).
    #[arg(long)]
    pub skip_crds: bool,
    /// Write one file per component into this directory (created if missing) instead of
    /// printing; `kubectl apply -f DIR` applies them in order.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

impl Args {
    fn options(&self) -> InstallOptions {
        InstallOptions {
            namespace: self.namespace.clone(),
            registry: self.registry.clone(),
            version: self.image_version.clone(),
            ha: self.ha,
            metrics_server: self.metrics_server.clone(),
            dashboard_token_secret: self.dashboard_token_secret.clone(),
            control_plane_replicas: self.control_plane_replicas,
            crds: match (self.crds_only, self.skip_crds) {
                (true, _) => CrdSelection::Only,
                (_, true) => CrdSelection::Skip,
                _ => CrdSelection::Include,
            },
        }
    }
}

/// Prints the manifests, or writes them under `--output-dir`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let groups = install::groups(&args.options()).map_err(|e| anyhow::anyhow!("{e}"))?;
    match &args.output_dir {
        None => {
            let objects: Vec<_> = groups.into_iter().flat_map(|g| g.objects).collect();
            let yaml = install::render(&objects)?;
            let mut out = std::io::stdout().lock();
            out.write_all(yaml.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the manifests to stdout")
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("--output-dir {}: cannot create it", dir.display()))?;
            for g in groups {
                let path = dir.join(g.file);
                std::fs::write(&path, install::render(&g.objects)?)
                    .with_context(|| format!("--output-dir: writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

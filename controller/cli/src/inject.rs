//! `serin inject`: adds serin-proxy to the pods and pod templates of Kubernetes manifests
//! (files, directories or `-`), with the same function the `serin injector` webhook uses.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serin_kube::inject::{InjectConfig, inject_yaml};

/// What goes into every injected pod (shared by `serin inject` and `serin injector`).
#[derive(clap::Args, Debug, Clone)]
pub struct ProxyFlags {
    /// The serin-proxy image (it runs both the capture init container and the sidecar).
    #[arg(
        long,
        env = "SERIN_PROXY_IMAGE",
        default_value = "ghcr.io/serin-dev/serin-proxy:latest"
    )]
    pub proxy_image: String,
    /// UID the proxy runs as; its own traffic is never captured.
    #[arg(
        long,
        env = "SERIN_PROXY_UID",
        default_value_t = 2102,
        allow_negative_numbers = true
    )]
    pub proxy_uid: i64,
    /// The control plane the proxies stream route tables from.
    #[arg(
        long,
        env = "SERIN_CONTROL_PLANE_URL",
        default_value = "http://serin-control-plane.serin-system.svc.cluster.local:8086"
    )]
    pub control_plane_url: String,
    /// Default proxy log level (per pod: annotation serin.dev/proxy-log-level).
    #[arg(long, env = "SERIN_PROXY_LOG_LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub proxy_log_level: String,
    /// Default proxy CPU request (per pod: serin.dev/proxy-cpu-request).
    #[arg(long, default_value = "100m")]
    pub proxy_cpu_request: String,
    /// Default proxy CPU limit, empty for none (per pod: serin.dev/proxy-cpu-limit).
    #[arg(long, default_value = "")]
    pub proxy_cpu_limit: String,
    /// Default proxy memory request (per pod: serin.dev/proxy-memory-request).
    #[arg(long, default_value = "20Mi")]
    pub proxy_memory_request: String,
    /// Default proxy memory limit, empty for none (per pod: serin.dev/proxy-memory-limit).
    #[arg(long, default_value = "250Mi")]
    pub proxy_memory_limit: String,
}

impl ProxyFlags {
    /// The injection settings these flags describe, each resource flag checked up front: a bad
    /// default would otherwise show only when a pod is injected, and then under the name of
    /// the per-pod annotation the user never wrote (`serin injector` would refuse every pod).
    pub fn config(&self) -> anyhow::Result<InjectConfig> {
        // 0 is root: the capture rules exempt the proxy's UID, so every root process's
        // traffic would bypass the proxy; Kubernetes refuses negative UIDs.
        if !(1..=i64::from(i32::MAX)).contains(&self.proxy_uid) {
            anyhow::bail!(
                "--proxy-uid {}: not accepted; accepted: a UID from 1 to 2147483647 that the application does not run as (default 2102; 0 is root, whose traffic would escape capture)",
                self.proxy_uid
            );
        }
        for (flag, value) in [
            ("--proxy-cpu-request", &self.proxy_cpu_request),
            ("--proxy-cpu-limit", &self.proxy_cpu_limit),
            ("--proxy-memory-request", &self.proxy_memory_request),
            ("--proxy-memory-limit", &self.proxy_memory_limit),
        ] {
            if !(value.is_empty() || serin_kube::inject::is_quantity(value)) {
                anyhow::bail!(
                    "{flag} {value:?}: not a Kubernetes quantity; accepted: e.g. 100m, 0.5, 64Mi or 1Gi, or \"\" for none"
                );
            }
        }
        let cfg = InjectConfig {
            proxy_image: self.proxy_image.clone(),
            proxy_uid: self.proxy_uid,
            control_plane: self.control_plane_url.clone(),
            log_level: self.proxy_log_level.clone(),
            cpu_request: self.proxy_cpu_request.clone(),
            cpu_limit: self.proxy_cpu_limit.clone(),
            memory_request: self.proxy_memory_request.clone(),
            memory_limit: self.proxy_memory_limit.clone(),
            ..InjectConfig::default()
        };
        serin_kube::inject::check_defaults(&cfg)?;
        Ok(cfg)
    }
}

/// `serin inject` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifests to inject: files, directories (their .yaml, .yml and .json files, recursively)
    /// or `-` for standard input. The result goes to standard output.
    #[arg(required = true)]
    pub paths: Vec<String>,
    #[command(flatten)]
    pub proxy: ProxyFlags,
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("{}: cannot list the directory", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            let manifest = e
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"));
            if e.is_dir() || manifest {
                collect(&e, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Runs `serin inject`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.proxy.config()?;
    let mut output = String::new();
    for p in &args.paths {
        let sources: Vec<(String, String)> = if p == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read standard input")?;
            vec![("-".to_string(), s)]
        } else {
            let path = Path::new(p);
            if !path.exists() {
                anyhow::bail!(
                    "{p}: no such file or directory (give files, directories or - for stdin)"
                );
            }
            let mut files = Vec::new();
            collect(path, &mut files)?;
            files
                .into_iter()
                .map(|f| {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("{}: cannot read", f.display()))?;
                    Ok((f.display().to_string(), text))
                })
                .collect::<anyhow::Result<_>>()?
        };
        for (name, text) in sources {
            let (yaml, reports) =
                inject_yaml(&text, &cfg).with_context(|| format!("{name}: cannot inject"))?;
            for r in reports {
                eprintln!("{name}: {r}");
            }
            output.push_str(&yaml);
        }
    }
    print!("{output}");
    Ok(())
}

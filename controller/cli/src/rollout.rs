//! `serin rollout NAME --revision REV`: start a local rollout without editing files by hand (for
//! scripts and CI), and the `serin controller --local DIR` entry point.
//!
//! `rollout` finds the Canary NAME in the manifest directory (or a Process NAME), sets its
//! target Process's `spec.revision` (and any `--env` given), and writes the file back atomically;
//! the running controller sees the change and starts the run. With `--wait` it then follows the
//! run in the controller's state and exits 0 when promoted, 1 when rolled back, 3 on timeout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_yaml::Value;
use serin_controller::local::controller::{LocalOptions, MetricsSource, default_state_dir};

/// Flags of `serin rollout`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Canary (or Process) to roll out.
    pub name: String,
    /// The new revision of its target Process.
    #[arg(long)]
    pub revision: String,
    /// The manifest directory the local controller reads.
    #[arg(long, env = "SERIN_LOCAL", default_value = ".")]
    pub dir: PathBuf,
    /// Namespace of the Canary.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Set an environment variable of the Process for this revision (NAME=VALUE; repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Wait for the run to end: exit 0 promoted, 1 rolled back, 3 timed out.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (e.g. 10m).
    #[arg(long, default_value = "15m")]
    pub timeout: String,
    /// Where the controller keeps state (default DIR/.serin/state).
    #[arg(long, env = "SERIN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

fn docs_of(text: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for d in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(d)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

fn in_namespace(v: &Value, ns: &str) -> bool {
    str_at(v, &["metadata", "namespace"]).unwrap_or("default") == ns
}

fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "--dir {}: cannot read the manifest directory",
                dir.display()
            )
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

/// Runs `serin rollout`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.revision.trim().is_empty() {
        bail!("--revision: must not be empty");
    }
    let mut envs = Vec::new();
    for e in &args.env {
        let Some((k, v)) = e.split_once('=') else {
            bail!("--env {e:?}: expected NAME=VALUE");
        };
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("--env {e:?}: {k:?} is not an environment variable name");
        }
        envs.push((k.to_string(), v.to_string()));
    }
    let files = yaml_files(&args.dir)?;
    // The Canary NAME's target, or NAME itself when it is a Process.
    let mut target = None;
    for f in &files {
        for d in docs_of(&std::fs::read_to_string(f)?)? {
            if str_at(&d, &["kind"]) == Some("Canary")
                && str_at(&d, &["metadata", "name"]) == Some(args.name.as_str())
                && in_namespace(&d, &args.namespace)
            {
                target = str_at(&d, &["spec", "targetRef", "name"]).map(str::to_string);
            }
        }
    }
    let canary_found = target.is_some();
    let process_name = target.unwrap_or_else(|| args.name.clone());
    let mut done = false;
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let mut docs =
            docs_of(&text).with_context(|| format!("{}: not valid YAML", f.display()))?;
        let mut changed = false;
        for d in docs.iter_mut() {
            if str_at(d, &["kind"]) == Some("Process")
                && str_at(d, &["metadata", "name"]) == Some(process_name.as_str())
                && in_namespace(d, &args.namespace)
            {
                let Some(spec) = d.get_mut("spec").and_then(Value::as_mapping_mut) else {
                    bail!("{}: Process {process_name} has no spec", f.display());
                };
                spec.insert("revision".into(), Value::String(args.revision.clone()));
                if !envs.is_empty() {
                    let list = spec
                        .entry("env".into())
                        .or_insert_with(|| Value::Sequence(Vec::new()));
                    let Some(seq) = list.as_sequence_mut() else {
                        bail!(
                            "{}: Process {process_name}: spec.env is not a list",
                            f.display()
                        );
                    };
                    for (k, v) in &envs {
                        seq.retain(|e| str_at(e, &["name"]) != Some(k.as_str()));
                        let mut m = serde_yaml::Mapping::new();
                        m.insert("name".into(), Value::String(k.clone()));
                        m.insert("value".into(), Value::String(v.clone()));
                        seq.push(Value::Mapping(m));
                    }
                }
                changed = true;
            }
        }
        if changed {
            let mut out = String::new();
            for d in &docs {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(d)?);
            }
            serin_controller::local::store::write_atomic(f, out.as_bytes())
                .with_context(|| format!("writing {}", f.display()))?;
            println!(
                "{}: Process {process_name} set to revision {}",
                f.display(),
                args.revision
            );
            done = true;
        }
    }
    if !done {
        bail!(
            "no Process {process_name:?} in namespace {} under {} (NAME is a Canary or a Process name)",
            args.namespace,
            args.dir.display()
        );
    }
    if !args.wait {
        return Ok(());
    }
    if !canary_found {
        bail!(
            "--wait needs the Canary's name (no Canary {:?} found)",
            args.name
        );
    }
    let timeout = serin_api::duration::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| default_state_dir(&args.dir));
    let file = state_dir.join(format!("{}_{}.state.json", args.namespace, args.name));
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        if let Ok(bytes) = std::fs::read(&file)
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            let status = &v["status"];
            let phase = status["phase"].as_str().unwrap_or("").to_string();
            let weight = status["canaryWeight"].as_u64().unwrap_or(0);
            let run_rev = status["run"]["revision"].as_str().unwrap_or("");
            let line = format!("phase={phase} weight={weight} revision={run_rev}");
            if line != last {
                println!("{line}");
                last = line;
            }
            if run_rev == args.revision {
                match phase.as_str() {
                    "Succeeded" => return Ok(()),
                    "Failed" => std::process::exit(1),
                    _ => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("timed out after {}", args.timeout);
    std::process::exit(3);
}

/// `serin controller --local DIR`.
pub fn run_local_controller(dir: PathBuf, args: crate::controller::Args) -> anyhow::Result<()> {
    let Some(control_plane) = args.control_plane else {
        bail!(
            "--local needs --control-plane URL (the local `serin control-plane --routes DIR`, e.g. http://127.0.0.1:8086)"
        );
    };
    let Some(routes_dir) = args.routes_dir else {
        bail!(
            "--local needs --routes-dir DIR: the directory the control plane reads (`serin control-plane --routes DIR`)"
        );
    };
    let metrics = match (args.metrics_server, args.proxy_metrics.is_empty()) {
        (Some(url), _) => MetricsSource::Prometheus(url),
        (None, false) => MetricsSource::Proxies(args.proxy_metrics),
        (None, true) => bail!(
            "--local needs where metrics come from: --proxy-metrics http://127.0.0.1:PORT/metrics (a serin-proxy admin address) or --metrics-server URL"
        ),
    };
    let interval = match &args.interval {
        Some(i) => Some(
            serin_api::duration::parse_duration(i)
                .map_err(|e| anyhow::anyhow!("--interval: {e}"))?,
        ),
        None => None,
    };
    let opts = LocalOptions {
        state_dir: args.state_dir.unwrap_or_else(|| default_state_dir(&dir)),
        dir,
        control_plane,
        routes_dir,
        metrics,
        interval,
        reload_every: Duration::from_millis(250),
        stop_workloads_on_exit: args.stop_workloads_on_exit,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            serin_controller::local::controller::run(opts, serin_demo::server::terminate_signal())
                .await
        })?;
    Ok(())
}

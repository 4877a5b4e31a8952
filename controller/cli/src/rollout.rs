//! `serin rollout NAME --revision REV`: start a local rollout without editing files by hand (for
//! scripts and CI), and the `serin controller --local DIR` entry point.
//!
//! `rollout` finds the Canary NAME in the manifest directory (or a Process NAME), sets its
//! target Process's `spec.revision` (and any `--env` given), and writes the file back atomically;
//! the running controller sees the change and starts the run. With `--wait` it then follows the
//! run in the controller's state and exits 0 when promoted, 1 when rolled back, 3 on timeout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serin_core::Phase;
use serin_local::controller::{LocalOptions, MetricsSource, default_state_dir};
use serin_local::manifest::set_revision;
use serin_local::store::CanaryRecord;

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
    #[arg(long, default_value = "15m", value_parser = serin_core::duration::parse_flag)]
    pub timeout: Duration,
    /// Where the controller keeps state (default DIR/.serin/state).
    #[arg(long, env = "SERIN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Runs `serin rollout`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut envs = Vec::new();
    for e in &args.env {
        let Some((k, v)) = e.split_once('=') else {
            bail!("--env {e:?}: expected NAME=VALUE");
        };
        envs.push((k.to_string(), v.to_string()));
    }
    let timeout = args.timeout;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&args.dir));
    let file = state_dir.join(format!("{}_{}.state.json", args.namespace, args.name));
    // The controller's record, read as the store writes it.
    let read_status = || {
        std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<CanaryRecord>(&b).ok())
            .map(|r| r.status)
    };
    // Runs started before this edit are not the one to wait for (the same revision may have
    // run and failed before).
    let runs_before = read_status().map_or(0, |s| s.runs);
    let edit = set_revision(
        &args.dir,
        &args.namespace,
        &args.name,
        &args.revision,
        &envs,
    )?;
    println!(
        "{}: Process {} set to revision {}",
        edit.file.display(),
        edit.process,
        args.revision
    );
    if !args.wait {
        return Ok(());
    }
    if edit.canary.is_none() {
        bail!(
            "--wait needs the Canary's name (no Canary {:?} found)",
            args.name
        );
    }
    if !edit.changed {
        println!(
            "the Process already ran revision {} with this environment; no new run starts",
            args.revision
        );
    }
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        if let Some(status) = read_status() {
            let phase = status.phase;
            let weight = status.canary_weight;
            let run_rev = status.run.as_ref().map_or("", |r| r.revision.as_str());
            let mut line = format!("phase={phase} weight={weight} revision={run_rev}");
            // Why a run holds (e.g. no traffic reaches the canary: noData.policy `wait`), or a
            // wait that never moves looks like a hang. Numbers are left out of the comparison
            // so a hold that only counts seconds prints once.
            if let Some(hold) = &status.hold {
                line.push_str(&format!(" holding: {hold}"));
            }
            let shape = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "");
            if shape(&line) != shape(&last) {
                println!("{line}");
                last = line;
            }
            let this_run = run_rev == args.revision && (!edit.changed || status.runs > runs_before);
            if this_run {
                match phase {
                    Phase::Succeeded => return Ok(()),
                    Phase::Failed => std::process::exit(1),
                    _ => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "timed out after {}",
        serin_core::duration::format_duration(args.timeout)
    );
    std::process::exit(3);
}

/// `serin controller --local DIR`.
pub fn run_local_controller(dir: PathBuf, args: crate::controller::Args) -> anyhow::Result<()> {
    // A missing directory would otherwise only be logged at every reload while the controller
    // ran on with nothing to do.
    if !dir.is_dir() {
        bail!(
            "--local {}: not a directory; accepted: the directory holding the Canary and Process manifests",
            dir.display()
        );
    }
    let Some(control_plane) = args.control_plane.clone() else {
        bail!(
            "--local needs --control-plane URL (the local `serin control-plane --routes DIR`, e.g. http://127.0.0.1:8086)"
        );
    };
    let Some(routes_dir) = args.routes_dir.clone() else {
        bail!(
            "--local needs --routes-dir DIR: the directory the control plane reads (`serin control-plane --routes DIR`)"
        );
    };
    let metrics = match (args.metrics_server.clone(), args.proxy_metrics.is_empty()) {
        (Some(url), _) => MetricsSource::Prometheus(url),
        (None, false) => MetricsSource::Proxies(args.proxy_metrics.clone()),
        (None, true) => bail!(
            "--local needs where metrics come from: --proxy-metrics http://127.0.0.1:PORT/metrics (a serin-proxy admin address) or --metrics-server URL"
        ),
    };
    // Bound once the flags are known good: a refused start prints no dashboard address.
    let dashboard = crate::controller::bind_dashboard(&args)?;
    let interval = args.interval;
    let opts = LocalOptions {
        state_dir: args.state_dir.unwrap_or_else(|| default_state_dir(&dir)),
        dir,
        control_plane,
        routes_dir,
        metrics,
        interval,
        reload_every: Duration::from_millis(250),
        stop_workloads_on_exit: args.stop_workloads_on_exit,
        admin: args.admin_addr,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            let dashboard = dashboard.map(|d| d.into_tokio()).transpose()?;
            serin_local::dashboard::run_controller(
                opts,
                dashboard,
                serin_demo::server::terminate_signal(),
            )
            .await
            .map_err(anyhow::Error::from)
            .context("serin controller --local")
        })
}

//! `serin controller --local DIR`: the controller loop on one machine. Canary and Process
//! manifests are read from a directory (re-read when a file changes), each Canary is ticked by
//! the generic [`Driver`] through the local adapters, status and history go to the
//! [`FileStore`], and processes run under the [`Supervisor`].
//!
//! Alerts (`spec.analysis.alerts`) name `AlertProvider` objects, which are Kubernetes objects:
//! locally every alert is logged at WARN with its severity and message, and the history keeps
//! the event that caused it. Nothing is sent anywhere.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serin_analysis::{
    MetricsProvider, PrometheusConfig, PrometheusProvider, ProxyScrapeConfig, ProxyScrapeProvider,
};
use serin_core::{EventType, Timestamp};

use super::analysis::LocalAnalyzer;
use super::manifest::{self, Document};
use super::platform::{LocalPlatform, Processes};
use super::router::ControlPlane;
use super::store::FileStore;
use super::supervisor::Supervisor;
use serin_controller::adapters::{CanaryContext, CanaryId, EventRecorder, Notifier, Store};
use serin_controller::alerts::Alert;
use serin_controller::driver::{Driver, TickOutcome};
use serin_controller::hooks::HttpHooks;
use serin_controller::metrics::Metrics;

/// Where metrics come from.
#[derive(Debug, Clone)]
pub enum MetricsSource {
    /// Scrape these `serin-proxy` `/metrics` URLs directly (the embedded default).
    Proxies(Vec<String>),
    /// Query this Prometheus (`--metrics-server`).
    Prometheus(String),
}

/// The message of the line the controller logs once its admin server (`--admin-addr`) listens,
/// with the bound address as field `addr` (a port-0 address is read back from it, see
/// `site::Site::controller_admin`).
pub const ADMIN_LISTENING: &str = "admin server (/metrics) listening";

/// How often the proxies' counters are snapshotted: every 500 ms, and a quarter of `--interval`
/// when that is shorter than 2 s (down to 100 ms).
///
/// Why: a look reads the traffic between the kept snapshot nearest to one interval ago and the
/// newest one, and kept snapshots stay 500 ms apart (`min_spacing`). With a snapshot only every
/// 500 ms, a look 500 ms after the last could find the same snapshot at both ends and read no
/// traffic at all; a newest snapshot at most a quarter interval old is never the one nearest to
/// an interval ago. Memory is unchanged (the spacing of kept snapshots is).
fn scrape_beat(interval: Option<Duration>) -> Duration {
    const BEAT: Duration = Duration::from_millis(500);
    interval.map_or(BEAT, |i| (i / 4).clamp(Duration::from_millis(100), BEAT))
}

/// How the local controller runs.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The manifest directory (Canary and Process YAML).
    pub dir: PathBuf,
    /// Where status, history and process records live (default `DIR/.serin/state`).
    pub state_dir: PathBuf,
    /// The local control plane's base URL.
    pub control_plane: String,
    /// The directory the control plane reads routes from.
    pub routes_dir: PathBuf,
    /// Metrics source.
    pub metrics: MetricsSource,
    /// Overrides every Canary's `analysis.interval` (demos and tests run faster than the 10s
    /// minimum a manifest may ask for).
    pub interval: Option<Duration>,
    /// How often the manifest directory is checked for changes.
    pub reload_every: Duration,
    /// Stop every workload process on exit (otherwise they keep serving and the next controller
    /// adopts them).
    pub stop_workloads_on_exit: bool,
    /// Where to serve the controller's `/metrics`, `/healthz` and `/readyz` (`None`: nowhere).
    pub admin: Option<std::net::SocketAddr>,
}

/// A failure that stops the local controller from starting.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A flag or directory is unusable.
    #[error("{0}")]
    Invalid(String),
    /// I/O on the state directory.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

struct LogEvents;

#[async_trait]
impl EventRecorder for LogEvents {
    async fn event(&self, canary: &CanaryContext, kind: EventType, reason: &str, message: &str) {
        match kind {
            EventType::Normal => tracing::info!(canary = %canary.id, reason, "{message}"),
            EventType::Warning => tracing::warn!(canary = %canary.id, reason, "{message}"),
        }
    }
}

struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn alert(&self, canary: &CanaryContext, alert: &Alert) {
        // Alert providers are Kubernetes objects; locally alerts go to the log (and the history
        // keeps every event), so nothing is lost silently.
        tracing::warn!(canary = %canary.id, severity = ?alert.severity, "alert: {}", alert.message);
    }
}

fn signature(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut sig: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((e.path(), m.modified().ok()?, m.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    sig.sort();
    sig
}

/// What one read of the manifest directory found.
#[derive(Default)]
struct Loaded {
    /// The directory itself could not be read: nothing is known, so nothing counts as removed.
    unreadable: bool,
    canaries: BTreeMap<CanaryId, CanaryContext>,
    processes: Processes,
    /// The file each Canary and Process came from.
    canary_files: BTreeMap<CanaryId, String>,
    process_files: BTreeMap<String, String>,
    /// Files with an error (unreadable, not YAML, a document that does not validate).
    broken: std::collections::BTreeSet<String>,
}

/// The file a [`manifest::ManifestError`] or document names, without its `(document N)`.
fn base_file(name: &str) -> String {
    name.split(" (document ").next().unwrap_or(name).to_string()
}

impl Loaded {
    /// Keeps what `previous` read from files that are broken now: a typo saved mid-rollout
    /// must not read as "the Canary was deleted" (that terminates it) or "the Process is gone"
    /// (that holds it on a missing target). Kubernetes refuses such an apply and the object
    /// keeps its last valid spec; here the last valid read stands until the file is fixed.
    /// Returns what was kept.
    fn keep_from_broken_files(&mut self, previous: &Loaded) -> Vec<String> {
        let mut kept = Vec::new();
        for (id, ctx) in &previous.canaries {
            if let Some(file) = previous.canary_files.get(id)
                && self.broken.contains(file)
                && !self.canaries.contains_key(id)
            {
                self.canaries.insert(id.clone(), ctx.clone());
                self.canary_files.insert(id.clone(), file.clone());
                kept.push(format!("Canary {id} ({file})"));
            }
        }
        for (key, process) in &previous.processes {
            if let Some(file) = previous.process_files.get(key)
                && self.broken.contains(file)
                && !self.processes.contains_key(key)
            {
                self.processes.insert(key.clone(), process.clone());
                self.process_files.insert(key.clone(), file.clone());
                kept.push(format!("Process {key} ({file})"));
            }
        }
        kept
    }
}

/// Reads the directory: Processes and Canaries (as contexts). Problems are logged with the file
/// and field, never fatal; the files they are in are listed in [`Loaded::broken`].
fn load(dir: &Path, analyzer: &LocalAnalyzer, interval: Option<Duration>) -> Loaded {
    match manifest::read_templates(dir) {
        Ok((templates, errors)) => {
            for e in &errors {
                tracing::error!("{e}");
            }
            analyzer.set_templates(templates);
        }
        Err(error) => {
            tracing::error!(dir = %dir.display(), %error, "cannot read the manifest directory");
        }
    }
    if let Ok((secrets, errors)) = manifest::read_secrets(dir) {
        for e in &errors {
            tracing::error!("{e}");
        }
        analyzer.set_secrets(secrets);
    }
    let mut loaded = Loaded::default();
    let (docs, errors) = match manifest::read_dir(dir) {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(dir = %dir.display(), %error, "cannot read the manifest directory");
            loaded.unreadable = true;
            return loaded;
        }
    };
    for e in &errors {
        tracing::error!("{e}");
        loaded.broken.insert(base_file(&e.file));
    }
    for doc in docs {
        match doc {
            Document::Process { process, dir, file } => {
                let key = format!("{}/{}", process.metadata.namespace(), process.metadata.name);
                loaded.process_files.insert(key.clone(), base_file(&file));
                loaded.processes.insert(key, (process.spec, dir));
            }
            Document::Canary { value, file } => {
                let canary = match manifest::read_canary(value) {
                    Ok(c) => c,
                    Err(errors) => {
                        for e in errors {
                            tracing::error!("{file}: {e}");
                        }
                        loaded.broken.insert(base_file(&file));
                        continue;
                    }
                };
                let ns = canary
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_string());
                match serin_controller::plan::context(&ns, &canary) {
                    Ok((_, mut ctx)) => {
                        if let Some(i) = interval {
                            ctx.plan.interval = i;
                        }
                        loaded.canary_files.insert(ctx.id.clone(), base_file(&file));
                        loaded.canaries.insert(ctx.id.clone(), ctx);
                    }
                    Err(errors) => {
                        for e in errors {
                            tracing::error!("{file}: {e}");
                        }
                        loaded.broken.insert(base_file(&file));
                    }
                }
            }
        }
    }
    loaded
}

/// A Canary whose manifest is back after it was removed (its stored status says Terminating or
/// Terminated) is a new Canary, as `kubectl apply` after `kubectl delete` makes one: it starts
/// anew (Initializing) instead of staying terminated forever. Its run count and applied command
/// ids carry over, so the history's runs keep distinct ids and an old command is never applied
/// again.
async fn start_anew_if_deleted(store: &FileStore, ctx: &CanaryContext) {
    let Ok(Some(record)) = store.read(&ctx.id) else {
        return;
    };
    let old = record.status;
    if !matches!(
        old.phase,
        serin_core::Phase::Terminating | serin_core::Phase::Terminated
    ) {
        return;
    }
    tracing::info!(canary = %ctx.id, "its manifest is back after it was removed: it starts anew, as a re-created Canary does");
    let fresh = serin_core::Status {
        runs: old.runs,
        last_command_id: old.last_command_id,
        applied_command_ids: old.applied_command_ids,
        ..serin_core::Status::default()
    };
    if let Err(error) = store.save(ctx, &fresh, &[]).await {
        tracing::warn!(canary = %ctx.id, %error, "cannot reset the re-created Canary's status");
    }
}

/// Runs the local controller until `shutdown` resolves.
pub async fn run(opts: LocalOptions, shutdown: impl Future<Output = ()>) -> Result<(), LocalError> {
    let store = Arc::new(
        FileStore::open(&opts.state_dir).map_err(|source| LocalError::Io {
            what: format!("opening {}", opts.state_dir.display()),
            source,
        })?,
    );
    run_with_store(opts, store, shutdown).await
}

/// Runs the local controller over an already opened `store` (opened on `opts.state_dir`), so
/// the dashboard served next to it shares the store's lock and change notifications.
pub async fn run_with_store(
    opts: LocalOptions,
    store: Arc<FileStore>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LocalError> {
    if !opts.dir.is_dir() {
        return Err(LocalError::Invalid(format!(
            "--local {}: not a directory (expected a directory of Canary and Process YAML files)",
            opts.dir.display()
        )));
    }
    let supervisor = Supervisor::new(opts.state_dir.clone(), opts.state_dir.join("logs"));
    let control_plane = ControlPlane::new(opts.control_plane.clone(), opts.routes_dir.clone());
    let platform = LocalPlatform::new(supervisor.clone(), control_plane, opts.state_dir.clone());
    let provider: Arc<dyn MetricsProvider> = match &opts.metrics {
        MetricsSource::Proxies(urls) => {
            let mut cfg = ProxyScrapeConfig::new(urls.clone());
            // Short demo intervals need snapshots closer together than the 5s default.
            cfg.min_spacing = Duration::from_millis(500);
            Arc::new(
                ProxyScrapeProvider::new(cfg)
                    .map_err(|e| LocalError::Invalid(format!("--proxy-metrics: {e}")))?,
            )
        }
        MetricsSource::Prometheus(url) => Arc::new(
            PrometheusProvider::new(PrometheusConfig::new(url, serin_analysis::Mesh::Serin))
                .map_err(|e| LocalError::Invalid(format!("--metrics-server: {e}")))?,
        ),
    };
    // Proxy counters are only known where a snapshot was taken: scrape on a steady beat so a
    // run's start always has one close by (the analyzer reads "since the run started" from the
    // nearest snapshot). Prometheus keeps its own history.
    let scraper = matches!(opts.metrics, MetricsSource::Proxies(_)).then(|| {
        let provider = provider.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(scrape_beat(opts.interval));
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                beat.tick().await;
                if let Err(error) = provider.probe().await {
                    tracing::debug!(%error, "scraping the proxies failed");
                }
            }
        })
    });
    let analyzer = Arc::new(LocalAnalyzer::new(provider));
    let driver = Driver {
        workloads: platform.clone(),
        router: platform.clone(),
        analyzer: analyzer.clone(),
        hooks: Arc::new(HttpHooks::default()),
        store: store.clone(),
        notifier: Arc::new(LogNotifier),
        events: Arc::new(LogEvents),
        metrics: Arc::new(Metrics::new()),
        schedule: Arc::default(),
    };
    let admin = match opts.admin {
        Some(addr) => {
            let (listener, bound) =
                serin_controller::metrics::bind_admin(addr)
                    .await
                    .map_err(|source| LocalError::Io {
                        what: format!("--admin-addr {addr}: cannot listen there"),
                        source,
                    })?;
            // One local controller runs alone: it is always the leader, and ready once it runs.
            let health = Arc::new(serin_controller::metrics::Health::default());
            health.set_leader(true);
            health.set_ready(true);
            tracing::info!(addr = %bound, "{ADMIN_LISTENING}");
            let metrics = driver.metrics.clone();
            Some(tokio::spawn(async move {
                if let Err(error) =
                    serin_controller::metrics::serve_admin(listener, metrics, health).await
                {
                    tracing::error!(%error, "admin server stopped");
                }
            }))
        }
        None => None,
    };

    let mut sig = signature(&opts.dir);
    let mut loaded = load(&opts.dir, &analyzer, opts.interval);
    platform.set_processes(
        loaded.processes.clone(),
        loaded.broken.is_empty() && !loaded.unreadable,
    );
    for ctx in loaded.canaries.values() {
        start_anew_if_deleted(&store, ctx).await;
        platform.register(ctx);
    }
    // A Canary whose manifest file is broken is missing from `loaded` without being removed:
    // its processes must not be taken for a removed Canary's leftovers.
    platform.adopt_leftovers(loaded.broken.is_empty() && !loaded.unreadable);
    // Processes an earlier controller left running are adopted above; know whether they are
    // ready before publishing any routes (a restart must not empty the endpoint lists).
    platform.await_adopted(Duration::from_secs(5)).await;
    tracing::info!(dir = %opts.dir.display(), canaries = loaded.canaries.len(), "local controller started");
    let mut due: BTreeMap<CanaryId, tokio::time::Instant> = BTreeMap::new();
    // Canaries whose manifest was removed, until their deletion tick went through.
    let mut removing: BTreeMap<CanaryId, CanaryContext> = BTreeMap::new();
    let mut last_reload = tokio::time::Instant::now();
    let mut changes = supervisor.changes();
    tokio::pin!(shutdown);
    loop {
        // Reload manifests when the directory changed.
        if last_reload.elapsed() >= opts.reload_every {
            last_reload = tokio::time::Instant::now();
            let now_sig = signature(&opts.dir);
            if now_sig != sig {
                sig = now_sig;
                let mut fresh = load(&opts.dir, &analyzer, opts.interval);
                if fresh.unreadable {
                    // Nothing can be told removed from a directory that cannot be read (logged
                    // above): everything keeps running as last read, and it is read again once
                    // it can be.
                    sig = Vec::new();
                } else {
                    for what in fresh.keep_from_broken_files(&loaded) {
                        tracing::warn!(
                            kept = %what,
                            "its manifest file has errors (logged above); it keeps running with its last valid manifest until the file is fixed"
                        );
                    }
                    platform.set_processes(fresh.processes.clone(), fresh.broken.is_empty());
                    for (id, ctx) in &loaded.canaries {
                        if !fresh.canaries.contains_key(id) {
                            tracing::info!(canary = %id, "manifest removed");
                            let mut ctx = ctx.clone();
                            ctx.deleting_since =
                                Some(Timestamp::from_system_time(SystemTime::now()));
                            removing.insert(id.clone(), ctx);
                            due.remove(id);
                        }
                    }
                    for (id, ctx) in &fresh.canaries {
                        // Put back before its deletion finished: a new Canary, whose registered
                        // workloads are still there.
                        removing.remove(id);
                        if !loaded.canaries.contains_key(id) {
                            start_anew_if_deleted(&store, ctx).await;
                        }
                    }
                    loaded = fresh;
                    for ctx in loaded.canaries.values() {
                        platform.register(ctx);
                    }
                    platform.await_adopted(Duration::from_secs(5)).await;
                    // A changed manifest is looked at now, not at the next interval.
                    due.clear();
                    tracing::info!(canaries = loaded.canaries.len(), "manifests reloaded");
                }
            }
        }
        platform.reconcile().await;
        // Removed Canaries: their deletion ticks, until the target is handed back (a tick that
        // waits for the reverted target comes back here; see `TickOutcome::WaitingForTarget`).
        let mut finished = Vec::new();
        for (id, ctx) in &removing {
            let last = driver
                .tick(ctx, true, Timestamp::from_system_time(SystemTime::now()))
                .await;
            match &last {
                Ok(TickOutcome::WaitingForTarget { .. }) => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(canary = %id, %error, "its last tick failed"),
            }
            // The target was handed back only when the revert ran (it is the last tick's
            // action; a failed tick reverted nothing for certain).
            platform.release(id, ctx.plan.revert_on_deletion && last.is_ok());
            finished.push(id.clone());
        }
        for id in finished {
            removing.remove(&id);
        }
        let now = tokio::time::Instant::now();
        for (id, ctx) in &loaded.canaries {
            match due.get(id) {
                Some(d) if *d > now => continue,
                // How late the loop came to a tick that was due (a slow tick of another Canary,
                // a busy machine): what the controller dashboard shows as tick lateness.
                Some(d) => driver.metrics.tick_late(now.duration_since(*d)),
                None => {}
            }
            let wall = Timestamp::from_system_time(SystemTime::now());
            let next = match driver.tick(ctx, false, wall).await {
                Ok(outcome) => outcome
                    .requeue_after(wall)
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1)),
                Err(error) => {
                    tracing::warn!(canary = %id, %error, "tick failed; retrying");
                    Duration::from_secs(1)
                }
            };
            due.insert(id.clone(), now + next.max(Duration::from_millis(100)));
        }
        let next_due = due
            .values()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + opts.reload_every);
        let next_due = if removing.is_empty() {
            next_due
        } else {
            next_due.min(now + Duration::from_millis(500))
        };
        tokio::select! {
            () = &mut shutdown => break,
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(next_due) => {}
        }
    }
    if let Some(task) = scraper {
        task.abort();
    }
    if let Some(task) = admin {
        task.abort();
    }
    tracing::info!("local controller stopping");
    if opts.stop_workloads_on_exit {
        platform.shutdown().await;
    }
    Ok(())
}

/// The default state directory for a manifest directory.
pub fn default_state_dir(dir: &Path) -> PathBuf {
    dir.join(".serin").join("state")
}

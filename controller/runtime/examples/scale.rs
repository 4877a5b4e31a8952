//! N Canaries in one controller: every Canary is driven through the real [`Driver`] and engine,
//! scheduled the way the Kubernetes controller schedules them (each reconcile requeues itself for
//! its next due tick; at most 16 reconcile at once), against in-memory adapters that count the
//! calls a Kubernetes API server would get.
//!
//! The adapters play a watch-fed controller: workloads and the Canary's status are read from the
//! controller's own store (what kube-runtime's reflectors hold, so no request), and every write
//! (status, primary, Services, routes, scaling, events) is one request. The reference plays the
//! controller as it was before watches and change-only writes: each observation GETs the target
//! and the primary, and each due tick PATCHes the status (its `lastTickAt` changed).
//!
//! `cargo run --release -p serin-controller --example scale` prints one line per N:
//! `canaries=N rss_mib=… tick_lateness_p99_ms=… cpu_ms_per_tick=… api_calls_per_idle_tick=…`,
//! then the reference at 1,000 Canaries measured in the same run, prefixed `reference:`.
//! Each N runs in a child process of its own, so its RSS is its own.
//!
//! - `rss_mib`: the child's resident memory once every Canary is initialized and ticking.
//! - `tick_lateness_p99_ms`: how long after its due time a tick started (timer, queue for one of
//!   the 16 slots, the runtime), 99th percentile over the idle window.
//! - `cpu_ms_per_tick`: the process' CPU time (user + system) over the idle window divided by
//!   the ticks in it.
//! - `api_calls_per_idle_tick`: API requests over the idle window per tick (every Canary is
//!   Initialized and nothing changes: the goal is 0).
//!
//! The analysis interval is 2 s (real controllers use 30 s to minutes) so an idle window of a few
//! intervals takes seconds; Canaries start spread over one interval, as Canaries created at
//! different times are. `SCALE_N=1000` runs one N (no reference).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use serin_controller::adapters::*;
use serin_controller::alerts::Alert;
use serin_controller::driver::{Driver, Schedule};
use serin_controller::metrics::Metrics;
use serin_core::{
    CheckResult, Command, EventType, HistoryEntry, Phase, Plan, Readiness, Routes, Status,
    Strategy, TargetState, Timestamp,
};
use serin_mesh_api::process::ProcessStats;
use tokio::sync::Semaphore;

/// The analysis interval of every Canary.
const INTERVAL: Duration = Duration::from_secs(2);
/// Intervals measured once every Canary is initialized.
const IDLE_INTERVALS: u32 = 4;
/// Reconciles at once (serin-kube's `MAX_CONCURRENT_RECONCILES`).
const CONCURRENCY: usize = 16;
/// History entries kept per Canary in the store (serin-kube keeps 30 moments).
const HISTORY_KEPT: usize = 30;
const SIZES: [usize; 3] = [100, 1_000, 5_000];
const REFERENCE_N: usize = 1_000;

/// How the adapters talk to the API.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Reads from the watch-fed store, writes only what changed.
    Watched,
    /// GETs target and primary on each observation, PATCHes the status on each due tick.
    Reference,
}

/// One Canary's objects as the API server (and a watch-fed store) holds them.
#[derive(Default)]
struct Objects {
    status: Option<Status>,
    history: Vec<HistoryEntry>,
    primary: bool,
    target_replicas: u32,
}

/// The in-memory cluster: objects per Canary, and the requests it was sent.
struct Cluster {
    mode: Mode,
    objects: Mutex<HashMap<CanaryId, Objects>>,
    requests: AtomicU64,
}

impl Cluster {
    fn request(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    fn with<T>(&self, id: &CanaryId, f: impl FnOnce(&mut Objects) -> T) -> T {
        let mut m = self
            .objects
            .lock()
            .expect("the cluster lock is never poisoned");
        f(m.entry(id.clone()).or_default())
    }
}

#[derive(Clone)]
struct Adapters(Arc<Cluster>);

#[async_trait]
impl Workloads for Adapters {
    async fn observe(&self, c: &CanaryContext) -> Result<WorkloadState, AdapterError> {
        if self.0.mode == Mode::Reference {
            self.0.request(2);
        }
        Ok(self.0.with(&c.id, |o| WorkloadState {
            target: Some(TargetState {
                revision: "rev-1".into(),
                configs: BTreeMap::new(),
            }),
            primary: o.primary.then(|| Readiness::ready(2)),
            canary: Some(Readiness::ready(o.target_replicas)),
        }))
    }
    async fn initialize_primary(&self, c: &CanaryContext) -> Result<(), AdapterError> {
        // The primary and its three Services.
        self.0.request(4);
        self.0.with(&c.id, |o| o.primary = true);
        Ok(())
    }
    async fn scale_canary_to_zero(&self, c: &CanaryContext) -> Result<(), AdapterError> {
        self.0.request(1);
        self.0.with(&c.id, |o| o.target_replicas = 0);
        Ok(())
    }
    async fn scale_canary_up(&self, c: &CanaryContext) -> Result<(), AdapterError> {
        self.0.request(1);
        self.0.with(&c.id, |o| o.target_replicas = 2);
        Ok(())
    }
    async fn promote(&self, _c: &CanaryContext, _r: &str) -> Result<(), AdapterError> {
        self.0.request(1);
        Ok(())
    }
    async fn revert(&self, _c: &CanaryContext) -> Result<(), AdapterError> {
        self.0.request(1);
        Ok(())
    }
}

#[async_trait]
impl Router for Adapters {
    async fn set_routes(&self, _c: &CanaryContext, _r: &Routes) -> Result<(), AdapterError> {
        self.0.request(1);
        Ok(())
    }
    async fn in_force(&self, _c: &CanaryContext, _r: &Routes) -> Result<bool, AdapterError> {
        Ok(true)
    }
    async fn revert(&self, _c: &CanaryContext) -> Result<(), AdapterError> {
        self.0.request(1);
        Ok(())
    }
}

#[async_trait]
impl Analyzer for Adapters {
    async fn run_checks(
        &self,
        _c: &CanaryContext,
        _s: &Status,
    ) -> Result<Vec<CheckResult>, AdapterError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl Store for Adapters {
    async fn load(&self, id: &CanaryId) -> Result<Option<Status>, AdapterError> {
        Ok(self.0.with(id, |o| o.status.clone()))
    }
    async fn save(
        &self,
        c: &CanaryContext,
        status: &Status,
        history: &[HistoryEntry],
    ) -> Result<(), AdapterError> {
        self.0.request(1);
        self.0.with(&c.id, |o| {
            o.status = Some(status.clone());
            o.history.extend_from_slice(history);
            let extra = o.history.len().saturating_sub(HISTORY_KEPT);
            o.history.drain(..extra);
        });
        Ok(())
    }
    async fn pending_commands(&self, _id: &CanaryId) -> Result<Vec<Command>, AdapterError> {
        Ok(Vec::new())
    }
    async fn save_if_changed(
        &self,
        c: &CanaryContext,
        status: &Status,
    ) -> Result<bool, AdapterError> {
        if self.0.mode == Mode::Reference {
            // Before: every due tick wrote the status, its `lastTickAt` having changed.
            self.save(c, status, &[]).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[async_trait]
impl Notifier for Adapters {
    async fn alert(&self, _c: &CanaryContext, _a: &Alert) {}
}

#[async_trait]
impl EventRecorder for Adapters {
    async fn event(&self, _c: &CanaryContext, _k: EventType, _r: &str, _m: &str) {
        self.0.request(1);
    }
}

fn plan() -> Plan {
    Plan {
        strategy: Strategy::Canary {
            step_weights: vec![10, 20, 30],
            step_weight_promotion: None,
            mirror: None,
        },
        interval: INTERVAL,
        threshold: 2,
        progress_deadline: Duration::from_secs(600),
        skip_analysis: false,
        suspend: false,
        webhooks: vec![],
        checks: vec!["request-success-rate".into()],
        on_inconclusive: Default::default(),
        inconclusive_budget: Default::default(),
        primary_ready_threshold: 100,
        canary_ready_threshold: 100,
        session_affinity: None,
        revert_on_deletion: false,
    }
}

/// What the reconcile loops report.
#[derive(Default)]
struct Tally {
    /// Lateness of each tick in the idle window, microseconds.
    lateness_us: Vec<u64>,
    ticks: u64,
}

/// Figures of one run.
struct Figures {
    rss_mib: f64,
    lateness_p99_ms: f64,
    cpu_ms_per_tick: f64,
    calls_per_tick: f64,
}

fn run_one(n: usize, mode: Mode) -> anyhow::Result<Figures> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(drive(n, mode))
}

async fn drive(n: usize, mode: Mode) -> anyhow::Result<Figures> {
    let cluster = Arc::new(Cluster {
        mode,
        objects: Mutex::new(HashMap::new()),
        requests: AtomicU64::new(0),
    });
    let a = Adapters(cluster.clone());
    let driver = Driver {
        workloads: Arc::new(a.clone()),
        router: Arc::new(a.clone()),
        analyzer: Arc::new(a.clone()),
        hooks: Arc::new(serin_controller::testing::AcceptingHooks),
        store: Arc::new(a.clone()),
        notifier: Arc::new(a.clone()),
        events: Arc::new(a),
        metrics: Arc::new(Metrics::new()),
        schedule: Arc::new(Schedule::default()),
    };
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let base = Instant::now();
    let epoch = Timestamp::from_millis(1_700_000_000_000);
    let now = move |at: Instant| epoch + at.duration_since(base);
    let plan = plan();
    let mut loops = Vec::with_capacity(n);
    for i in 0..n {
        let ctx = CanaryContext::new(
            CanaryId::new(format!("ns-{}", i % 50), format!("app-{i}")),
            plan.clone(),
            format!("app-{i}"),
        );
        let (driver, slots, measuring, stop, tally) = (
            driver.clone(),
            slots.clone(),
            measuring.clone(),
            stop.clone(),
            tally.clone(),
        );
        // Spread over one interval, as Canaries created at different times are.
        let mut due = base + INTERVAL.mul_f64(i as f64 / n as f64);
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(due.into()).await;
                let Ok(_slot) = slots.acquire().await else {
                    break;
                };
                let started = Instant::now();
                let at = now(started);
                let next = match driver.tick(&ctx, false, at).await {
                    Ok(outcome) => outcome.requeue_after(at).unwrap_or(INTERVAL),
                    Err(e) => {
                        eprintln!("{}: {e}", ctx.id);
                        Duration::from_secs(1)
                    }
                };
                if measuring.load(Ordering::Relaxed) {
                    let late = started.duration_since(due).as_micros() as u64;
                    let mut t = tally.lock().expect("the tally lock is never poisoned");
                    t.lateness_us.push(late);
                    t.ticks += 1;
                }
                // As kube-runtime's requeue: never sooner than half a second.
                due = started + next.max(Duration::from_millis(500));
            }
        }));
    }

    // Bootstrap: wait until every Canary is Initialized.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let initialized = cluster
            .objects
            .lock()
            .expect("the cluster lock is never poisoned")
            .values()
            .filter(|o| {
                o.status
                    .as_ref()
                    .is_some_and(|s| s.phase == Phase::Initialized)
            })
            .count();
        if initialized == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("{initialized} of {n} Canaries initialized after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One more interval so every Canary has ticked once as Initialized.
    tokio::time::sleep(INTERVAL).await;

    let cpu_before = ProcessStats::read()
        .context("reading /proc/self")?
        .cpu_seconds;
    let calls_before = cluster.requests.load(Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(INTERVAL * IDLE_INTERVALS).await;
    measuring.store(false, Ordering::Relaxed);
    let calls = cluster.requests.load(Ordering::Relaxed) - calls_before;
    let stats = ProcessStats::read().context("reading /proc/self")?;
    let cpu = stats.cpu_seconds - cpu_before;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.abort();
    }

    let mut t = std::mem::take(&mut *tally.lock().expect("the tally lock is never poisoned"));
    if t.ticks == 0 {
        bail!("no tick in the idle window");
    }
    t.lateness_us.sort_unstable();
    let p99 = t.lateness_us[(t.lateness_us.len() * 99 / 100).min(t.lateness_us.len() - 1)];
    Ok(Figures {
        rss_mib: stats.resident_bytes as f64 / (1024.0 * 1024.0),
        lateness_p99_ms: p99 as f64 / 1000.0,
        cpu_ms_per_tick: cpu * 1000.0 / t.ticks as f64,
        calls_per_tick: calls as f64 / t.ticks as f64,
    })
}

fn line(n: usize, f: &Figures) -> String {
    format!(
        "canaries={n} rss_mib={:.1} tick_lateness_p99_ms={:.2} cpu_ms_per_tick={:.3} api_calls_per_idle_tick={:.2}",
        f.rss_mib, f.lateness_p99_ms, f.cpu_ms_per_tick, f.calls_per_tick
    )
}

/// Runs one N in a child process (a fresh heap, so its RSS is its own) and returns its line.
fn child(n: usize, mode: Mode) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding this example's binary")?;
    let out = std::process::Command::new(exe)
        .env("SCALE_CHILD", format!("{n}:{mode:?}"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running a child")?;
    if !out.status.success() {
        bail!(
            "the run with {n} Canaries ({mode:?}) failed: {}",
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var("SCALE_CHILD") {
        let (n, mode) = spec.split_once(':').context("SCALE_CHILD is N:MODE")?;
        let n: usize = n.parse().context("SCALE_CHILD's N")?;
        let mode = if mode == "Reference" {
            Mode::Reference
        } else {
            Mode::Watched
        };
        println!("{}", line(n, &run_one(n, mode)?));
        return Ok(());
    }
    if let Ok(n) = std::env::var("SCALE_N") {
        let n: usize = n
            .parse()
            .context("SCALE_N: a number of Canaries, like 1000")?;
        println!("{}", child(n, Mode::Watched)?);
        return Ok(());
    }
    for n in SIZES {
        println!("{}", child(n, Mode::Watched)?);
    }
    println!(
        "reference: {} (GET target and primary per observation, status PATCH per due tick)",
        child(REFERENCE_N, Mode::Reference)?
    );
    Ok(())
}

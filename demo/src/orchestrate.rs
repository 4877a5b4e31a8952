//! `serin demo`: the whole local platform on loopback, driven through a bad and a good release.
//!
//! The control plane, one `serin-proxy`, the local controller, the dashboard and the load
//! generator run in this process as their libraries, each on its own loopback listener bound to
//! port 0; they talk to each other over HTTP exactly as the separate binaries do (the proxy
//! streams route tables from the control plane, the controller writes routes files and scrapes
//! the proxy's `/metrics`, the load goes through the proxy). The sample app's primary and canary
//! are real child processes (`serin sample-app`), started, probed and stopped by the controller's
//! supervisor. Running the platform's parts in-process means nothing has to be installed or
//! found on `PATH`, and one Ctrl-C stops everything: the controller stops every child process
//! before this function returns.
//!
//! What is printed and what counts as success is in [`crate::scenario`].

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serin_local::site::{ControllerOptions, DashboardOptions, ProxyOptions, Site, SiteDir};
use serin_local::store::{FileStore, Saved, write_atomic};
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

use crate::DemoError;
use crate::load::{self, LoadConfig};
use crate::scenario::{self, Expect, Release, Tracker, Traffic};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `serin` binary the sample app runs as (`serin sample-app`).
    pub serin: PathBuf,
    /// The Canary's analysis interval (the controller ticks this often).
    pub interval: Duration,
    /// Requests per second sent through the proxy.
    pub rate: f64,
    /// The bad release's error rate, percent.
    pub bad_error_rate_pct: f64,
    /// How long one release may take at the configured rate and interval before the demo
    /// gives up on it: measured in requests sent and analyses run, so a busy machine gets the
    /// same evidence (see `ReleaseBudget`).
    pub release_timeout: Duration,
    /// Keep everything running after the last release until `shutdown` resolves.
    pub keep_running: bool,
}

impl DemoOptions {
    /// The defaults `serin demo` uses, running the sample app as `serin`.
    pub fn new(serin: PathBuf) -> Self {
        Self {
            serin,
            interval: Duration::from_secs(2),
            rate: 100.0,
            bad_error_rate_pct: 10.0,
            release_timeout: Duration::from_secs(90),
            keep_running: false,
        }
    }

    /// Checks the values a user can get wrong.
    pub fn validate(&self) -> Result<(), DemoError> {
        if self.interval < Duration::from_millis(200) || self.interval > Duration::from_secs(60) {
            return Err(DemoError::invalid(
                "--interval",
                format!(
                    "{} is out of range; accepted: 200ms to 60s",
                    crate::duration::format(self.interval)
                ),
            ));
        }
        if !(self.rate.is_finite() && (10.0..=2000.0).contains(&self.rate)) {
            return Err(DemoError::invalid(
                "--rate",
                format!(
                    "{} is out of range; accepted: 10 to 2000 requests per second (the judge needs \
                     100 requests per arm)",
                    self.rate
                ),
            ));
        }
        if !(self.bad_error_rate_pct > 0.0 && self.bad_error_rate_pct <= 100.0) {
            return Err(DemoError::invalid(
                "--bad-error-rate",
                format!(
                    "{} is out of range; accepted: above 0 and at most 100 (percent)",
                    self.bad_error_rate_pct
                ),
            ));
        }
        if self.release_timeout < Duration::from_secs(5) {
            return Err(DemoError::invalid(
                "--release-timeout",
                "must be at least 5s",
            ));
        }
        Ok(())
    }
}

/// The demo's working directory (manifests, routes, state and logs): `dir` (created when
/// missing; it must not hold an earlier demo's state), or a fresh directory under the system's
/// temporary directory.
pub fn prepare_dir(dir: Option<PathBuf>) -> Result<SiteDir, DemoError> {
    match dir {
        Some(d) => {
            // The state directory's name is the site's (`SiteDir::state`).
            if d.join("state").exists() {
                return Err(DemoError::invalid(
                    "--dir",
                    format!(
                        "{} holds an earlier demo's state; choose an empty or new directory",
                        d.display()
                    ),
                ));
            }
            SiteDir::at(d).map_err(|e| platform_error("preparing --dir", e))
        }
        None => {
            SiteDir::temporary("serin-demo").map_err(|e| platform_error("preparing a directory", e))
        }
    }
}

/// How the demo ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// Both releases ended as expected.
    pub ok: bool,
    /// Stopped by the shutdown signal before the end.
    pub interrupted: bool,
    /// Wall time from start to the summary.
    pub wall: Duration,
}

/// The terminal: lines prefixed with the time since the start.
struct Console<'a> {
    out: &'a mut (dyn Write + Send),
    start: Instant,
}

impl Console<'_> {
    fn line(&mut self, text: &str) {
        let _ = writeln!(
            self.out,
            "{}  {text}",
            scenario::elapsed(self.start.elapsed())
        );
        let _ = self.out.flush();
    }

    fn plain(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }
}

/// The platform's running parts: the local site with its proxy and the controller in this
/// process.
struct Platform {
    site: Site,
    store: Arc<FileStore>,
    proxy: SocketAddr,
}

fn platform_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> DemoError {
    DemoError::Platform {
        what: what.to_string(),
        source: Box::new(e),
    }
}

impl Platform {
    async fn start(
        dir: &SiteDir,
        opts: &DemoOptions,
        dashboard: Option<DashboardOptions>,
    ) -> Result<Self, DemoError> {
        let mut proxy = ProxyOptions::new(scenario::NAMESPACE, "loadgen");
        proxy.labels = [
            ("namespace".to_string(), scenario::NAMESPACE.to_string()),
            ("deployment".to_string(), "loadgen".to_string()),
        ]
        .into_iter()
        .collect();
        proxy.shutdown_timeout = Duration::from_secs(5);
        let mut site = Site::start(dir.clone(), Some(proxy))
            .await
            .map_err(|e| platform_error("starting the platform", e))?;
        let addr = site
            .proxy_addr()
            .ok_or_else(|| DemoError::Demo("the site started without its proxy".into()))?;
        let store = site
            .start_controller_in_process(&ControllerOptions {
                interval: opts.interval,
                metrics_server: None,
                admin: None,
                dashboard,
                // The demo owns its processes: nothing may outlive it.
                stop_workloads_on_exit: true,
            })
            .await
            .map_err(|e| platform_error("starting the controller", e))?;
        Ok(Self {
            site,
            store,
            proxy: addr,
        })
    }

    fn events(&self) -> broadcast::Receiver<Saved> {
        self.store.subscribe()
    }

    fn dashboard_url(&self) -> Option<String> {
        self.site.dashboard().map(|d| format!("{d}/"))
    }

    /// Stops everything; the controller stops every child process before this returns.
    async fn stop(self) -> Result<(), DemoError> {
        self.site
            .stop()
            .await
            .map_err(|e| platform_error("stopping the platform", e))
    }
}

/// What the demo shares between the load generator and the printer.
#[derive(Default)]
struct Seen {
    /// Since the start of the load.
    total: Traffic,
    /// Since the last printed line.
    window: Traffic,
    /// Latencies of the first answered requests to the first release (the reference for the
    /// request-duration guard), up to `reference_wanted`.
    reference: Vec<Duration>,
    reference_wanted: usize,
}

/// Runs the demo, printing to `out`, until it ends or `shutdown` resolves. The platform is
/// always stopped (and every child process with it) before this returns.
pub async fn run(
    opts: DemoOptions,
    dir: &SiteDir,
    dashboard: Option<DashboardOptions>,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<DemoReport, DemoError> {
    opts.validate()?;
    let start = Instant::now();
    tokio::pin!(shutdown);
    // Poll the shutdown future once so its signal handlers are in place before any child
    // process exists: a Ctrl-C from now on goes through the orderly stop below.
    tokio::select! {
        biased;
        () = &mut shutdown => return Ok(DemoReport { ok: false, interrupted: true, wall: start.elapsed() }),
        () = std::future::ready(()) => {}
    }
    let mut console = Console { out, start };
    console
        .plain("Serin demo: a real proxy, control plane and controller on loopback; no cluster.");
    console.plain(&format!(
        "  directory {}   (manifests, routes, state; logs in {})",
        dir.root().display(),
        dir.log_file().display()
    ));
    let releases = scenario::releases(opts.bad_error_rate_pct);
    write_manifests(dir, &opts, &releases[0])?;

    // Starting only binds listeners and spawns tasks (no child process exists before the
    // controller's first tick), so it is not raced against the shutdown signal: a Ctrl-C now
    // is seen right after and goes through the orderly stop.
    let platform = Platform::start(dir, &opts, dashboard).await?;
    console.plain(&format!(
        "  control plane http://{}   serin-proxy outbound http://{} admin http://{}",
        platform
            .site
            .control_plane_url
            .trim_start_matches("http://"),
        platform.proxy,
        platform
            .site
            .proxy_admin_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    ));
    if let Some(url) = &platform.dashboard_url() {
        console.plain(&format!(
            "  dashboard {url}   (or, in another terminal: serin status --server {})",
            url.trim_end_matches('/')
        ));
    }
    console.plain(&format!(
        "  analysis every {}, {} requests/s through the proxy\n",
        crate::duration::format(opts.interval),
        opts.rate
    ));

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop_load, load_stopped) = oneshot::channel::<()>();
    let mut load_task = None;
    let mut events = platform.events();
    let outcome = tokio::select! {
        r = script(&opts, dir, &platform, &releases, &mut events, &seen, &mut console, &mut load_task, load_stopped) => Some(r),
        () = &mut shutdown => None,
    };

    let mut report = DemoReport {
        ok: false,
        interrupted: outcome.is_none(),
        wall: start.elapsed(),
    };
    match outcome {
        None => console.line("interrupted: stopping every process"),
        Some(Err(e)) => console.line(&format!("demo failed: {e}")),
        Some(Ok(tracker)) => {
            report.ok = summary(&mut console, &releases, &tracker, &seen);
            report.wall = start.elapsed();
            console.plain(&format!("\nwall time {:.1}s", report.wall.as_secs_f64()));
            if opts.keep_running {
                console.plain(&format!(
                    "\n--keep-running: everything keeps running{}; Ctrl-C stops it.",
                    platform
                        .dashboard_url()
                        .as_ref()
                        .map(|u| format!(" (dashboard {u})"))
                        .unwrap_or_default()
                ));
                // Keep the printer going so later changes (e.g. a `serin rollout`) show too.
                loop {
                    tokio::select! {
                        () = &mut shutdown => break,
                        ev = events.recv() => match ev {
                            Ok(saved) => print_saved(&mut console, &saved, &seen),
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                    }
                }
                console.line("stopping every process");
            }
        }
    }
    let _ = stop_load.send(());
    if let Some(task) = load_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let stopped = platform.stop().await;
    if let Err(e) = &stopped {
        console.line(&format!("{e}"));
        report.ok = false;
    } else {
        console.line("stopped: no process left running");
    }
    // A failed demo keeps its directory: the logs say why.
    if report.ok || report.interrupted {
        dir.remove_if_temporary();
    } else {
        console.plain(&format!("logs kept in {}", dir.root().display()));
    }
    Ok(report)
}

fn write_manifests(dir: &SiteDir, opts: &DemoOptions, release: &Release) -> Result<(), DemoError> {
    let canary = dir.manifests().join("canary.yaml");
    write_atomic(
        &canary,
        scenario::canary_manifest(scenario::DURATION_MAX_MS).as_bytes(),
    )
    .map_err(|e| DemoError::io(format!("writing {}", canary.display()), e))?;
    write_process(dir, opts, release)
}

fn write_process(dir: &SiteDir, opts: &DemoOptions, release: &Release) -> Result<(), DemoError> {
    let file = dir.manifests().join("process.yaml");
    write_atomic(
        &file,
        scenario::process_manifest(&opts.serin, release).as_bytes(),
    )
    .map_err(|e| DemoError::io(format!("writing {}", file.display()), e))
}

fn print_saved(console: &mut Console<'_>, saved: &Saved, seen: &Mutex<Seen>) {
    for entry in &saved.entries {
        let mut lines = scenario::describe(entry).into_iter();
        if let Some(head) = lines.next() {
            let window = {
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut s.window)
            };
            if window.requests() > 0 {
                console.line(&format!("{head}   [client saw {}]", window.split()));
            } else {
                console.line(&head);
            }
        }
        for l in lines {
            console.plain(&format!("       {l}"));
        }
    }
}

/// The releases, one after the other; returns what the history showed.
#[allow(clippy::too_many_arguments)]
async fn script(
    opts: &DemoOptions,
    dir: &SiteDir,
    platform: &Platform,
    releases: &[Release],
    events: &mut broadcast::Receiver<Saved>,
    seen: &Arc<Mutex<Seen>>,
    console: &mut Console<'_>,
    load_task: &mut Option<tokio::task::JoinHandle<Result<load::LoadReport, DemoError>>>,
    load_stopped: oneshot::Receiver<()>,
) -> Result<Tracker, DemoError> {
    let mut tracker = Tracker::default();
    let mut load_stopped = Some(load_stopped);
    for release in releases {
        console.line(&format!("==> {}", release.headline()));
        if release.expect != Expect::Primary {
            write_process(dir, opts, release)?;
        }
        let before = seen.lock().unwrap_or_else(|p| p.into_inner()).total.clone();
        follow(opts, platform, release, events, seen, console, &mut tracker).await?;
        if release.expect == Expect::Primary {
            // Traffic starts once the proxy routes to the primary.
            let url = wait_for_route(platform, console).await?;
            let mut cfg = LoadConfig::new(url, opts.rate, Duration::from_secs(24 * 3600));
            cfg.host = Some(authority());
            cfg.timeout = Duration::from_secs(5);
            let counted = seen.clone();
            let stop = load_stopped.take();
            *load_task = Some(tokio::spawn(async move {
                load::run(
                    cfg,
                    async move {
                        if let Some(rx) = stop {
                            let _ = rx.await;
                        }
                    },
                    move |sample| {
                        let failed = sample.outcome.is_failure();
                        let mut s = counted.lock().unwrap_or_else(|p| p.into_inner());
                        s.total.add(sample.version.as_deref(), failed);
                        s.window.add(sample.version.as_deref(), failed);
                        if !failed && s.reference.len() < s.reference_wanted {
                            s.reference.push(sample.latency);
                        }
                    },
                )
                .await
            }));
            console.line(&format!(
                "load started: {} requests/s to {} through serin-proxy",
                opts.rate,
                authority()
            ));
            latency_guard(opts, dir, seen, console).await?;
        } else {
            let after = seen.lock().unwrap_or_else(|p| p.into_inner()).total.clone();
            let (n, failed) = (
                after.requests() - before.requests(),
                after.failures() - before.failures(),
            );
            console.line(&format!(
                "    {} done: {n} requests during its rollout, {failed} failed",
                release.revision
            ));
        }
        match scenario::judge_release(release, tracker.seen(release.revision)) {
            Ok(line) => console.line(&format!("    as expected: {line}\n")),
            Err(line) => console.line(&format!("    NOT as expected: {line}\n")),
        }
    }
    Ok(tracker)
}

/// Measures the first release's p99 through the proxy (one second of load, at least
/// [`scenario::DURATION_REFERENCE_REQUESTS`] answers) and widens the Canary's request-duration
/// guard to [`scenario::duration_guard_ms`] of it before anything is released: on a machine
/// where v1 itself answers slowly, a fixed 500 ms would roll a healthy release back for the
/// host's load.
async fn latency_guard(
    opts: &DemoOptions,
    dir: &SiteDir,
    seen: &Mutex<Seen>,
    console: &mut Console<'_>,
) -> Result<(), DemoError> {
    let wanted = scenario::DURATION_REFERENCE_REQUESTS.max(opts.rate.ceil() as usize);
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .reference_wanted = wanted;
    // Bounded: a machine too busy to answer them in this long gets the reference it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let have = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reference
            .len();
        if have >= wanted || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reference = {
        let s = seen.lock().unwrap_or_else(|p| p.into_inner());
        scenario::p99_ms(&s.reference).map(|p99| (p99, s.reference.len()))
    };
    let Some((p99, n)) = reference else {
        console.line(&format!(
            "latency guard: p99 <= {} ms (no answer from v1 to measure this machine by)",
            scenario::DURATION_MAX_MS
        ));
        return Ok(());
    };
    let guard = scenario::duration_guard_ms(p99);
    if guard > scenario::DURATION_MAX_MS {
        let canary = dir.manifests().join("canary.yaml");
        write_atomic(&canary, scenario::canary_manifest(guard).as_bytes())
            .map_err(|e| DemoError::io(format!("writing {}", canary.display()), e))?;
        console.line(&format!(
            "latency guard: p99 <= {guard} ms: v1 answers in {p99:.0} ms p99 through the proxy on this busy machine ({n} requests), {}x that",
            scenario::DURATION_REFERENCE_FACTOR
        ));
    } else {
        console.line(&format!(
            "latency guard: p99 <= {guard} ms (v1 answers in {p99:.0} ms p99 through the proxy, {n} requests)"
        ));
    }
    Ok(())
}

/// How much longer than `--release-timeout` a release may take on a machine too busy to send
/// the load or run the analysis at the configured pace, before the demo gives up on it anyway.
const STALLED_FACTOR: u32 = 5;

/// The budget of one release: `--release-timeout` measures what the release may *consume* at
/// the configured pace, not wall time, so a loaded machine (fewer requests sent, late
/// controller ticks) gets the same evidence instead of a verdict cut short. The release has
/// used its budget once the load sent `rate x timeout` requests since it began **and** the
/// controller analysed it `timeout / interval` times; a wall-clock guard of
/// [`STALLED_FACTOR`] times the timeout ends a demo whose load or controller has stalled.
struct ReleaseBudget {
    requests: u64,
    ticks: u32,
    stalled_at: Instant,
}

impl ReleaseBudget {
    fn new(opts: &DemoOptions) -> Self {
        let secs = opts.release_timeout.as_secs_f64();
        Self {
            requests: (opts.rate * secs).ceil() as u64,
            ticks: (secs / opts.interval.as_secs_f64().max(1e-3)).ceil() as u32,
            stalled_at: Instant::now() + opts.release_timeout * STALLED_FACTOR,
        }
    }

    /// Why the release is out of budget, if it is. `sent` counts the load's requests since the
    /// release began (`None` before the load starts: the first revision), `ticks` its analyses.
    fn spent(&self, opts: &DemoOptions, sent: Option<u64>, ticks: u32) -> Option<String> {
        let timeout = crate::duration::format(opts.release_timeout);
        if Instant::now() >= self.stalled_at {
            return Some(format!(
                "did not finish within {} ({STALLED_FACTOR}x --release-timeout {timeout}): the load sent {} of {} requests and the controller analysed it {ticks} of {} times; is the machine overloaded?",
                crate::duration::format(opts.release_timeout * STALLED_FACTOR),
                sent.map_or("none".into(), |n| n.to_string()),
                self.requests,
                self.ticks,
            ));
        }
        match sent {
            Some(n) if n >= self.requests && ticks >= self.ticks => Some(format!(
                "did not finish within --release-timeout {timeout} of traffic ({n} requests, {ticks} analyses)"
            )),
            _ => None,
        }
    }
}

/// Prints the controller's history until `release` ends, the controller stops, or its budget
/// ([`ReleaseBudget`]) is spent.
async fn follow(
    opts: &DemoOptions,
    platform: &Platform,
    release: &Release,
    events: &mut broadcast::Receiver<Saved>,
    seen: &Mutex<Seen>,
    console: &mut Console<'_>,
    tracker: &mut Tracker,
) -> Result<(), DemoError> {
    let budget = ReleaseBudget::new(opts);
    let requests = || {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .total
            .requests()
    };
    let start = requests();
    // The first revision has no load yet: only the stall guard, at the plain timeout, applies.
    let first = release.expect == Expect::Primary;
    let deadline = Instant::now() + opts.release_timeout;
    while !tracker.ended(release.revision) {
        if !platform.site.controller_running() {
            return Err(DemoError::Demo(
                "the controller stopped unexpectedly (see the log)".into(),
            ));
        }
        if first && Instant::now() >= deadline {
            return Err(DemoError::Demo(format!(
                "{} did not finish within {} (see the log)",
                release.revision,
                crate::duration::format(opts.release_timeout)
            )));
        }
        let ticks = tracker.seen(release.revision).map_or(0, |s| s.ticks);
        if !first && let Some(why) = budget.spent(opts, Some(requests() - start), ticks) {
            return Err(DemoError::Demo(format!(
                "{} {why} (see the log)",
                release.revision
            )));
        }
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Err(_) => {}
            Ok(Ok(saved)) => {
                for e in &saved.entries {
                    tracker.record(e);
                }
                print_saved(console, &saved, seen);
            }
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                console.line(&format!("({n} updates skipped)"));
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err(DemoError::Demo("the controller's store closed".into()));
            }
        }
    }
    Ok(())
}

/// The authority the load addresses (the apex Service, as a mesh client would).
fn authority() -> String {
    format!(
        "{}.{}.svc.cluster.local:{}",
        scenario::NAME,
        scenario::NAMESPACE,
        scenario::SERVICE_PORT
    )
}

/// Waits until a request through the proxy reaches the primary; returns the load's URL.
async fn wait_for_route(
    platform: &Platform,
    console: &mut Console<'_>,
) -> Result<http::Uri, DemoError> {
    let url: http::Uri = format!("http://{}/", platform.proxy)
        .parse()
        .map_err(|e| platform_error("proxy URL", e))?;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = http::Request::get(url.clone())
            .header(http::header::HOST, authority())
            .body(Empty::new())
            .map_err(|e| platform_error("probe request", e))?;
        let status = match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
            Ok(Ok(resp)) => {
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                Some(status)
            }
            _ => None,
        };
        if status.is_some_and(|s| s.is_success()) {
            console.line("the proxy routes to the primary");
            return Ok(url);
        }
        if Instant::now() >= deadline {
            return Err(DemoError::Demo(format!(
                "the proxy did not route {} to the primary within 30s (last answer: {})",
                authority(),
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into())
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the summary; returns whether every release ended as expected.
fn summary(
    console: &mut Console<'_>,
    releases: &[Release],
    tracker: &Tracker,
    seen: &Mutex<Seen>,
) -> bool {
    console.plain("Summary");
    let mut ok = true;
    for r in releases {
        match scenario::judge_release(r, tracker.seen(r.revision)) {
            Ok(line) => console.plain(&format!("  ok    {line}")),
            Err(line) => {
                ok = false;
                console.plain(&format!("  FAIL  {line}"));
            }
        }
    }
    let total = seen.lock().unwrap_or_else(|p| p.into_inner()).total.clone();
    console.plain(&format!(
        "  load  {} requests, {} failed: {}",
        total.requests(),
        total.failures(),
        total.split()
    ));
    console.plain(if ok {
        "  result: as expected (the judge rolled back the bad release, the good one was promoted)"
    } else {
        "  result: NOT as expected"
    });
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_manifests_are_what_the_local_controller_accepts() {
        let dir = prepare_dir(None).unwrap();
        let opts = DemoOptions::new(PathBuf::from("/usr/bin/serin"));
        write_manifests(&dir, &opts, &scenario::releases(10.0)[0]).unwrap();
        let (docs, errors) = serin_local::manifest::read_dir(&dir.manifests()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 2);
        for doc in docs {
            if let serin_local::manifest::Document::Canary { value, .. } = doc {
                let canary: serin_api::Canary = serde_norway::from_value(value).unwrap();
                let (n, _) = serin_controller::plan::context("default", &canary).unwrap();
                assert!(n.judge.is_some(), "the judge is on");
            }
        }
        dir.remove_if_temporary();
        assert!(!dir.root().exists());
    }

    #[test]
    fn bad_options_name_the_flag() {
        let mut o = DemoOptions::new(PathBuf::from("serin"));
        o.interval = Duration::from_millis(10);
        assert!(o.validate().unwrap_err().to_string().contains("--interval"));
        let mut o = DemoOptions::new(PathBuf::from("serin"));
        o.rate = 1.0;
        assert!(o.validate().unwrap_err().to_string().contains("--rate"));
        let mut o = DemoOptions::new(PathBuf::from("serin"));
        o.bad_error_rate_pct = 0.0;
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("--bad-error-rate")
        );
    }

    #[test]
    fn a_dir_with_an_earlier_demo_is_refused() {
        let dir = prepare_dir(None).unwrap();
        let again = prepare_dir(Some(dir.root().to_path_buf()));
        assert!(again.unwrap_err().to_string().contains("--dir"));
        dir.remove_if_temporary();
    }
}

//! One machine's Serin site on loopback: the one assembly `serin demo`, the CLI's tests and the
//! end-to-end tests start (feature `site`).
//!
//! A [`Site`] is the local control plane (in this process, reading the site's routes
//! directory), optionally one `serin-proxy` following it (in this process), and the local
//! controller with its dashboard: either in this process ([`Site::start_controller_in_process`],
//! as `serin demo` runs it) or as a child process running `BIN controller --local ...`
//! ([`Site::start_controller_process`], as a user or a test that SIGKILLs it runs it), both over
//! the same directories. Every listener binds port 0 and the bound address is read back (the
//! child controller's dashboard from the line it prints, its admin server from the line it
//! logs), so sites run side by side and no port is handed to a child that another process could
//! take first.
//!
//! Workload processes started for a site carry `SERIN_SITE=<root>` in their environment (the
//! controller passes its environment on, and [`SampleApp`] manifests set it), so that a site
//! torn down after a failure, or after its controller was SIGKILLed, leaves nothing running.
//!
//! Why a feature: the controller itself reaches the proxy and the control plane over loopback
//! HTTP and links neither; only the site, which runs them, does.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serin_mesh_api::protocol::Workload;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::controller::{LocalError, LocalOptions, MetricsSource, run_with_store};
use crate::store::{FileStore, write_atomic};

/// The environment variable every workload of a site carries (value: the site's root).
pub const MARKER: &str = "SERIN_SITE";

/// Where a controller without a proxy "measures" from: nothing listens on the discard port, so
/// a Canary with metric checks gets no data (the CLI's gate-driven tests need none).
const NO_PROXY_METRICS: &str = "http://127.0.0.1:9/metrics";

/// What went wrong assembling or stopping a site.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// File-system or socket work failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The control plane did not start.
    #[error("starting the control plane")]
    ControlPlane(#[source] serin_mesh_control::Error),
    /// The proxy did not start.
    #[error("starting serin-proxy")]
    Proxy(#[source] serin_proxy::StartError),
    /// The controller failed or is not in the state asked for.
    #[error("{0}")]
    Controller(String),
    /// The in-process controller ended with an error.
    #[error("the controller")]
    Local(#[source] LocalError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SiteError {
    let what = what.into();
    move |source| SiteError::Io { what, source }
}

/// The site's directories: manifests (the controller's `--local`), routes (the control
/// plane's), state (status, history, process records and their logs).
#[derive(Debug, Clone)]
pub struct SiteDir {
    root: PathBuf,
    temporary: bool,
}

impl SiteDir {
    /// A fresh directory `PREFIX-PID-NANOS` under the system's temporary directory.
    pub fn temporary(prefix: &str) -> Result<Self, SiteError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let root = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        Self::create(root, true)
    }

    /// `root` (created when missing), kept when the site ends.
    pub fn at(root: PathBuf) -> Result<Self, SiteError> {
        Self::create(root, false)
    }

    fn create(root: PathBuf, temporary: bool) -> Result<Self, SiteError> {
        let me = Self { root, temporary };
        for d in [me.manifests(), me.routes(), me.state()] {
            std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
        }
        Ok(me)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Canary, Process, MetricTemplate and Secret manifests (the controller's `--local DIR`).
    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// The control plane's routes directory (the controller writes it).
    pub fn routes(&self) -> PathBuf {
        self.root.join("routes")
    }

    /// The controller's state directory.
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// A log file for the parts running in this process (the caller sets tracing up).
    pub fn log_file(&self) -> PathBuf {
        self.root.join("serin.log")
    }

    /// Removes the directory when it is a temporary one.
    pub fn remove_if_temporary(&self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The proxy a site runs in this process.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The workload whose route table it streams (its own identity towards the control plane).
    pub workload: Workload,
    /// Identity labels on every series (`namespace`, `deployment`, `pod`, as the injector sets).
    pub labels: BTreeMap<String, String>,
    /// How long its shutdown drains connections.
    pub shutdown_timeout: Duration,
}

impl ProxyOptions {
    /// A proxy for workload `namespace/name`, without labels, draining for 2s.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            workload: Workload {
                namespace: namespace.into(),
                name: name.into(),
            },
            labels: BTreeMap::new(),
            shutdown_timeout: Duration::from_secs(2),
        }
    }
}

/// The dashboard next to the controller, on a port-0 loopback listener.
#[derive(Debug, Clone, Default)]
pub struct DashboardOptions {
    /// The action token (`None`: read-only).
    pub token: Option<String>,
}

/// How the site's controller runs (either way).
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Overrides every Canary's analysis interval (`--interval`).
    pub interval: Duration,
    /// A Prometheus to measure from (`--metrics-server`); otherwise the site's proxy.
    pub metrics_server: Option<String>,
    /// Where to serve the controller's `/metrics` (`--admin-addr`).
    pub admin: Option<SocketAddr>,
    /// The dashboard, on a port-0 listener; `None`: no dashboard.
    pub dashboard: Option<DashboardOptions>,
    /// Stop every workload when the controller stops (`--stop-workloads-on-exit`).
    pub stop_workloads_on_exit: bool,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            metrics_server: None,
            admin: None,
            dashboard: Some(DashboardOptions::default()),
            stop_workloads_on_exit: false,
        }
    }
}

enum Controller {
    Process(Child),
    InProcess {
        task: JoinHandle<Result<(), LocalError>>,
        stop: Option<oneshot::Sender<()>>,
        dashboard: Option<JoinHandle<()>>,
    },
}

/// One machine's local platform on loopback (see the module docs).
pub struct Site {
    /// The directories.
    pub dir: SiteDir,
    /// `http://127.0.0.1:PORT` of the control plane.
    pub control_plane_url: String,
    control_plane: Option<serin_mesh_control::Running>,
    proxy: Option<serin_proxy::Proxy>,
    proxy_client: Option<JoinHandle<()>>,
    controller: Option<Controller>,
    starts: u32,
    dashboard: Option<String>,
    admin: Option<SocketAddr>,
}

impl Site {
    /// Starts the control plane on `dir`'s routes and, with `proxy`, a proxy following it.
    pub async fn start(dir: SiteDir, proxy: Option<ProxyOptions>) -> Result<Self, SiteError> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let control_plane = serin_mesh_control::start(serin_mesh_control::Config {
            listen: loopback,
            source: serin_mesh_control::SourceConfig::Local {
                dir: dir.routes(),
                poll: Duration::from_millis(100),
            },
            options: Default::default(),
        })
        .await
        .map_err(SiteError::ControlPlane)?;
        let control_plane_url = format!("http://{}", control_plane.addr);
        let mut site = Self {
            dir,
            control_plane_url,
            control_plane: Some(control_plane),
            proxy: None,
            proxy_client: None,
            controller: None,
            starts: 0,
            dashboard: None,
            admin: None,
        };
        if let Some(opts) = proxy {
            let proxy = serin_proxy::Proxy::start(serin_proxy::ProxyConfig {
                outbound: loopback,
                admin: Some(loopback),
                labels: opts.labels,
                shutdown_timeout: opts.shutdown_timeout,
                ..serin_proxy::ProxyConfig::default()
            })
            .await
            .map_err(SiteError::Proxy)?;
            let uri: http::Uri = site
                .control_plane_url
                .parse()
                .map_err(|e| SiteError::Controller(format!("control plane URL: {e}")))?;
            site.proxy_client = Some(serin_proxy::control_client::spawn(
                uri,
                opts.workload,
                proxy.table(),
            ));
            site.proxy = Some(proxy);
        }
        Ok(site)
    }

    /// The proxy's outbound listener (where load goes), when the site runs a proxy.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy.as_ref().map(|p| p.outbound_addr())
    }

    /// The proxy's admin listener (`/metrics`, `/ready`), when the site runs a proxy.
    pub fn proxy_admin_addr(&self) -> Option<SocketAddr> {
        self.proxy.as_ref().and_then(|p| p.admin_addr())
    }

    /// The `/metrics` URL the controller measures from without a `metrics_server`.
    pub fn proxy_metrics(&self) -> String {
        self.proxy_admin_addr()
            .map(|a| format!("http://{a}/metrics"))
            .unwrap_or_else(|| NO_PROXY_METRICS.to_string())
    }

    /// `http://ADDR` of the running controller's dashboard, once it serves one.
    pub fn dashboard(&self) -> Option<&str> {
        self.dashboard.as_deref()
    }

    /// The address the controller process serves its `/metrics` on (`--admin-addr`; a port-0
    /// address is bound by the controller and read back from the line it logs), while it runs.
    pub fn controller_admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// `(MARKER, root)`: the environment entry that marks this site's workloads.
    pub fn marker(&self) -> (&'static str, String) {
        (MARKER, self.dir.root().display().to_string())
    }

    /// Writes `text` to `file` in the manifest directory (atomically: the controller never
    /// reads half a file).
    pub fn write_manifest(&self, file: &str, text: &str) -> Result<(), SiteError> {
        let path = self.dir.manifests().join(file);
        write_atomic(&path, text.as_bytes()).map_err(io(format!("writing {}", path.display())))
    }

    /// The Process manifest of a sample app run as `app.command sample-app ...`, marked as
    /// this site's workload.
    pub fn sample_app_manifest(&self, app: &SampleApp) -> String {
        let (key, value) = self.marker();
        format!(
            r#"apiVersion: serin.dev/v1beta1
kind: Process
metadata:
  name: {name}
spec:
  command: {command}
  args: ["sample-app", "--addr", "127.0.0.1:$(PORT)", "--app-version", "{version}", "--drain", "{drain}"]
  env:
    - name: {key}
      value: {value}
  revision: {revision}
  readinessProbe:
    httpGet: {{ path: /readyz }}
    periodSeconds: 1
  terminationGracePeriodSeconds: {grace}
"#,
            name = app.name,
            command = app.command.display(),
            version = app.app_version,
            drain = app.drain,
            revision = app.revision,
            grace = app.grace_seconds,
        )
    }

    /// `bin controller --local ...` for this site, without dashboard flags: every flag the
    /// site's directories and parts decide, then `extra`. Output is left to the caller.
    pub fn controller_command(
        &self,
        bin: &Path,
        opts: &ControllerOptions,
        extra: &[&str],
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("controller")
            .arg("--local")
            .arg(self.dir.manifests())
            .arg("--state-dir")
            .arg(self.dir.state())
            .arg("--control-plane")
            .arg(&self.control_plane_url)
            .arg("--routes-dir")
            .arg(self.dir.routes())
            .arg("--proxy-metrics")
            .arg(self.proxy_metrics())
            .arg("--interval")
            .arg(serin_core::duration::format_duration(opts.interval));
        if let Some(url) = &opts.metrics_server {
            cmd.arg("--metrics-server").arg(url);
        }
        if let Some(addr) = opts.admin {
            cmd.arg("--admin-addr").arg(addr.to_string());
        }
        if opts.stop_workloads_on_exit {
            cmd.arg("--stop-workloads-on-exit");
        }
        let (key, value) = self.marker();
        cmd.args(extra)
            .env("SERIN_LOG", "info")
            .env(key, value)
            // The site decides the dashboard; a developer's shell must not.
            .env_remove("SERIN_DASHBOARD_TOKEN")
            .env_remove("SERIN_DASHBOARD_ADDR")
            .stdin(Stdio::null());
        cmd
    }

    fn controller_log(&self, n: u32) -> PathBuf {
        self.dir.root().join(format!("controller-{n}.log"))
    }

    /// Starts `bin controller --local ...` as a child process (its output goes to
    /// `controller-N.log` under the root). With a dashboard it serves on `127.0.0.1:0`, and this
    /// returns once the controller printed the bound address (see [`Site::dashboard`]); with an
    /// admin server (`opts.admin`, port 0 or not), once it logged the address it bound (see
    /// [`Site::controller_admin`]), so a caller never hands a port it merely saw free to the
    /// child.
    pub async fn start_controller_process(
        &mut self,
        bin: &Path,
        opts: &ControllerOptions,
    ) -> Result<(), SiteError> {
        if self.controller.is_some() {
            return Err(SiteError::Controller(
                "the controller is already running".into(),
            ));
        }
        self.starts += 1;
        self.dashboard = None;
        self.admin = None;
        let path = self.controller_log(self.starts);
        let log =
            std::fs::File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        let mut extra = vec!["--dashboard-addr".to_string()];
        match &opts.dashboard {
            None => extra.push("off".into()),
            Some(d) => {
                extra.push("127.0.0.1:0".into());
                if let Some(token) = &d.token {
                    extra.extend(["--dashboard-token".to_string(), token.clone()]);
                }
            }
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut cmd = self.controller_command(bin, opts, &extra);
        let clone = || log.try_clone().map_err(io("opening the controller log"));
        // What the site reads back is piped through a thread that copies every line to the log:
        // the dashboard's address (stdout) and, with an admin server, the address it bound
        // (logged on stderr).
        cmd.stdout(if opts.dashboard.is_some() {
            Stdio::piped()
        } else {
            clone()?.into()
        });
        cmd.stderr(if opts.admin.is_some() {
            Stdio::piped()
        } else {
            clone()?.into()
        });
        let mut child = cmd
            .spawn()
            .map_err(io(format!("starting {}", bin.display())))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        self.controller = Some(Controller::Process(child));
        if let Some(stdout) = stdout {
            let found = read_line_after(stdout, clone()?, DASHBOARD_LINE);
            let rest = self.await_line(found, "dashboard address").await?;
            let url = rest.split_whitespace().next().unwrap_or_default();
            self.dashboard = Some(url.to_string());
        }
        if let Some(stderr) = stderr {
            let found = read_line_after(stderr, clone()?, crate::controller::ADMIN_LISTENING);
            let line = self.await_line(found, "admin address").await?;
            let addr = line
                .split("addr=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| {
                    SiteError::Controller(format!(
                        "the controller's admin line names no address: {line}"
                    ))
                })?;
            self.admin = Some(addr);
        }
        Ok(())
    }

    /// What the controller printed after a marker (see [`read_line_after`]), within 30 s.
    async fn await_line(
        &self,
        found: oneshot::Receiver<String>,
        what: &str,
    ) -> Result<String, SiteError> {
        match tokio::time::timeout(Duration::from_secs(30), found).await {
            Ok(Ok(rest)) => Ok(rest),
            Ok(Err(_)) => Err(SiteError::Controller(format!(
                "the controller exited without printing its {what}\n{}",
                self.controller_logs()
            ))),
            Err(_) => Err(SiteError::Controller(format!(
                "the controller printed no {what} within 30s\n{}",
                self.controller_logs()
            ))),
        }
    }

    /// Runs the controller in this process over the site's store (with its dashboard when
    /// asked); returns the store, whose saves the caller may follow.
    pub async fn start_controller_in_process(
        &mut self,
        opts: &ControllerOptions,
    ) -> Result<Arc<FileStore>, SiteError> {
        if self.controller.is_some() {
            return Err(SiteError::Controller(
                "the controller is already running".into(),
            ));
        }
        let state = self.dir.state();
        let store =
            Arc::new(FileStore::open(&state).map_err(io(format!("opening {}", state.display())))?);
        // Everything that can fail is done before the controller starts: once it runs, only
        // `stop` may end it (it may own the workload processes).
        let dashboard = match &opts.dashboard {
            Some(d) => {
                let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .map_err(io("binding the dashboard listener"))?;
                let addr = listener
                    .local_addr()
                    .map_err(io("reading the dashboard's bound address"))?;
                self.dashboard = Some(format!("http://{addr}"));
                let (store, dir, token) = (store.clone(), self.dir.manifests(), d.token.clone());
                Some(tokio::spawn(async move {
                    if let Err(error) =
                        crate::dashboard::serve_with_manifests(store, Some(dir), listener, token)
                            .await
                    {
                        tracing::error!(%error, "the dashboard stopped serving");
                    }
                }))
            }
            None => None,
        };
        let local = LocalOptions {
            dir: self.dir.manifests(),
            state_dir: state,
            control_plane: self.control_plane_url.clone(),
            routes_dir: self.dir.routes(),
            metrics: match &opts.metrics_server {
                Some(url) => MetricsSource::Prometheus(url.clone()),
                None => MetricsSource::Proxies(vec![self.proxy_metrics()]),
            },
            interval: Some(opts.interval),
            reload_every: Duration::from_millis(100),
            stop_workloads_on_exit: opts.stop_workloads_on_exit,
            admin: opts.admin,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_with_store(local, store.clone(), async move {
            let _ = stop_rx.await;
        }));
        self.starts += 1;
        self.controller = Some(Controller::InProcess {
            task,
            stop: Some(stop_tx),
            dashboard,
        });
        Ok(store)
    }

    /// Whether a controller was started and has not exited (a zombie child counts as exited).
    pub fn controller_running(&self) -> bool {
        match &self.controller {
            Some(Controller::Process(child)) => pid_alive(child.id()),
            Some(Controller::InProcess { task, .. }) => !task.is_finished(),
            None => false,
        }
    }

    /// Whether a controller was started and has exited since (not stopped by the site).
    pub fn controller_exited(&self) -> bool {
        self.controller.is_some() && !self.controller_running()
    }

    /// SIGKILLs the child controller (no cleanup of any kind runs; the workloads keep serving)
    /// and reaps it.
    pub fn kill_controller(&mut self) -> Result<(), SiteError> {
        match self.controller.take() {
            Some(Controller::Process(mut child)) => {
                child.kill().map_err(io("killing the controller"))?;
                child.wait().map_err(io("reaping the controller"))?;
                self.dashboard = None;
                self.admin = None;
                Ok(())
            }
            other => {
                self.controller = other;
                Err(SiteError::Controller(
                    "no controller process is running".into(),
                ))
            }
        }
    }

    /// Stops the controller in order: the in-process one by its shutdown (30s at most), the
    /// child by SIGTERM (15s at most, then SIGKILL). A controller with
    /// `stop_workloads_on_exit` stops every workload before it ends.
    pub async fn stop_controller(&mut self) -> Result<(), SiteError> {
        self.dashboard = None;
        match self.controller.take() {
            None => Ok(()),
            Some(Controller::Process(mut child)) => {
                crate::supervisor::signal(child.id(), rustix::process::Signal::TERM);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
                while tokio::time::Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = child.kill();
                let _ = child.wait();
                Err(SiteError::Controller(
                    "the controller did not stop within 15s of SIGTERM; killed".into(),
                ))
            }
            Some(Controller::InProcess {
                mut task,
                stop,
                dashboard,
            }) => {
                if let Some(tx) = stop {
                    let _ = tx.send(());
                }
                // The supervisor gives each process its grace period before this ends.
                let result = match tokio::time::timeout(Duration::from_secs(30), &mut task).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(SiteError::Local(e)),
                    Ok(Err(e)) => Err(SiteError::Controller(format!("the controller task: {e}"))),
                    Err(_) => {
                        task.abort();
                        Err(SiteError::Controller(
                            "the controller did not stop within 30s; some workload processes may still run"
                                .into(),
                        ))
                    }
                };
                if let Some(d) = dashboard {
                    d.abort();
                }
                result
            }
        }
    }

    /// Every child controller's log so far (for failure messages).
    pub fn controller_logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let path = self.controller_log(n);
            if let Ok(text) = std::fs::read_to_string(&path) {
                out.push_str(&format!("----- {} -----\n{text}", path.display()));
            }
        }
        out
    }

    /// Stops the controller (see [`Site::stop_controller`]), every workload left, the proxy and
    /// the control plane. The directory stays (see [`SiteDir::remove_if_temporary`]).
    pub async fn stop(mut self) -> Result<(), SiteError> {
        let controller = self.stop_controller().await;
        self.teardown();
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
        if let Some(cp) = self.control_plane.take() {
            cp.stop().await;
        }
        controller
    }

    /// What must not outlive the site, done without awaiting (also on drop).
    fn teardown(&mut self) {
        match self.controller.take() {
            Some(Controller::Process(mut c)) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Some(Controller::InProcess {
                task, dashboard, ..
            }) => {
                task.abort();
                if let Some(d) = dashboard {
                    d.abort();
                }
            }
            None => {}
        }
        if let Some(t) = self.proxy_client.take() {
            t.abort();
        }
        // Also the workloads started after the records were last written.
        let (key, value) = self.marker();
        for pid in pids_with_env(&format!("{key}={value}")) {
            crate::supervisor::signal(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A sample-app `Process` (see [`Site::sample_app_manifest`]).
#[derive(Debug, Clone)]
pub struct SampleApp {
    /// The Process's name.
    pub name: String,
    /// The binary with a `sample-app` subcommand (`serin`, or a test's own).
    pub command: PathBuf,
    /// What the app reports as its version (`$(SERIN_REVISION)`: the revision it runs).
    pub app_version: String,
    /// Its `--drain` on SIGTERM.
    pub drain: String,
    /// `terminationGracePeriodSeconds`.
    pub grace_seconds: u32,
    /// `spec.revision`.
    pub revision: String,
}

impl SampleApp {
    /// Process `name` at revision v1, reporting its revision, draining 5s with a 10s grace.
    pub fn new(name: &str, command: &Path) -> Self {
        Self {
            name: name.into(),
            command: command.to_path_buf(),
            app_version: "$(SERIN_REVISION)".into(),
            drain: "5s".into(),
            grace_seconds: 10,
            revision: "v1".into(),
        }
    }
}

/// The analysis of a site's Canary (see [`canary_manifest`]).
#[derive(Debug, Clone)]
pub struct CanaryShape {
    /// The Canary's name, and the Process it targets.
    pub name: String,
    /// Its Service port.
    pub port: u16,
    /// `analysis.stepWeight`.
    pub step_weight: u32,
    /// `analysis.maxWeight`.
    pub max_weight: u32,
    /// `analysis.threshold`.
    pub threshold: u32,
    /// The `metrics:` block (indented four spaces), [`BUILTIN_CHECKS`] by default; empty: none.
    pub metrics: String,
    /// Extra lines under `analysis:` (indented four spaces): a `judge:` block, webhooks.
    pub analysis_extra: String,
}

/// Flagger's two built-in checks on the proxies' counters.
pub const BUILTIN_CHECKS: &str = r#"    metrics:
      - name: request-success-rate
        thresholdRange: { min: 99 }
        interval: 10s
      - name: request-duration
        thresholdRange: { max: 500 }
        interval: 10s
"#;

impl CanaryShape {
    /// Canary `name` on Service port `port`: steps of 25 up to 50, threshold 2, built-in checks.
    pub fn new(name: &str, port: u16) -> Self {
        Self {
            name: name.into(),
            port,
            step_weight: 25,
            max_weight: 50,
            threshold: 2,
            metrics: BUILTIN_CHECKS.into(),
            analysis_extra: String::new(),
        }
    }
}

/// A Canary of a sample-app Process (`analysis.interval` 10s, which the site's controller
/// overrides with its `interval`).
pub fn canary_manifest(shape: &CanaryShape) -> String {
    format!(
        r#"apiVersion: serin.dev/v1beta1
kind: Canary
metadata:
  name: {name}
spec:
  targetRef:
    apiVersion: serin.dev/v1beta1
    kind: Process
    name: {name}
  service:
    port: {port}
  analysis:
    interval: 10s
    threshold: {threshold}
    maxWeight: {max}
    stepWeight: {step}
{extra}{metrics}"#,
        name = shape.name,
        port = shape.port,
        threshold = shape.threshold,
        max = shape.max_weight,
        step = shape.step_weight,
        extra = shape.analysis_extra,
        metrics = shape.metrics,
    )
}

/// What the controller prints before its dashboard's URL (`serin controller` prints the same).
const DASHBOARD_LINE: &str = "dashboard on ";

/// Copies `out`'s lines to `log` on a thread of its own until `out` closes; the text after the
/// first `marker` (trimmed) is sent on the returned channel as soon as that line comes (the
/// channel closes without it if the stream ends first).
fn read_line_after(
    out: impl std::io::Read + Send + 'static,
    log: std::fs::File,
    marker: &'static str,
) -> oneshot::Receiver<String> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(out);
        let mut tx = Some(tx);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = (&log).write_all(line.as_bytes());
            if let Some(rest) = line.split(marker).nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.trim().to_string());
            }
            line.clear();
        }
    });
    rx
}

/// Whether `pid` runs (zombies count as dead).
pub fn pid_alive(pid: u32) -> bool {
    crate::supervisor::alive(pid)
}

/// Processes whose environment holds `marker` (`NAME=VALUE`).
fn pids_with_env(marker: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .collect()
}

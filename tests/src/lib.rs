//! Shared fixtures for Serin's end-to-end tests (the tests live in `tests/tests/`).
//!
//! [`Site`] is one machine's worth of the local platform, all on loopback port 0: the local
//! control plane and one `serin-proxy` run in the test process (real listeners, real HTTP, the
//! real route-table stream between them); the controller and every workload run as real,
//! separate processes (the `serin-e2e` binary of this package, which wraps the same library code
//! as `serin controller --local` and `serin sample-app`), so a test can SIGKILL the controller
//! mid-rollout and start it again.
//!
//! It is not a general harness: it knows one Canary (`podinfo`, a sample-app `Process`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use serin_demo::load::{LoadConfig, LoadReport, Sample};

/// The Canary (and its Process) every site runs.
pub const NAME: &str = "podinfo";
/// Its Service port (the authority the proxy routes on is `podinfo:9898`).
pub const PORT: u16 = 9898;

/// How the Canary analyses a run.
#[derive(Debug, Clone)]
pub struct CanaryShape {
    /// `analysis.stepWeight`.
    pub step_weight: u32,
    /// `analysis.maxWeight`.
    pub max_weight: u32,
    /// `analysis.threshold`.
    pub threshold: u32,
    /// The controller's `--interval`.
    pub interval: &'static str,
    /// Measure with a `MetricTemplate` (canary error percentage, at most 5) on a Prometheus
    /// (see [`Site::metrics_server`]) instead of the built-in checks on the proxies.
    pub template: bool,
    /// Extra lines under `analysis:` (indented four spaces), e.g. a `judge:` block.
    pub analysis_extra: &'static str,
    /// Replaces the built-in checks' `metrics:` block (indented four spaces), when set.
    pub metrics: Option<&'static str>,
}

impl Default for CanaryShape {
    fn default() -> Self {
        Self {
            step_weight: 25,
            max_weight: 50,
            threshold: 2,
            interval: "1s",
            template: false,
            analysis_extra: "",
            metrics: None,
        }
    }
}

const BUILTIN_CHECKS: &str = r#"    metrics:
      - name: request-success-rate
        thresholdRange: { min: 99 }
        interval: 10s
      - name: request-duration
        thresholdRange: { max: 500 }
        interval: 10s
"#;

/// A Flagger-style MetricTemplate on the proxies' Linkerd-named counters (`or vector(0)`: no
/// failure series at all is 0%, not "no data").
const TEMPLATE_CHECK: &str = r#"    metrics:
      - name: canary-error-percentage
        templateRef: { name: error-percentage }
        thresholdRange: { max: 5 }
        interval: 10s
---
apiVersion: serin.dev/v1beta1
kind: MetricTemplate
metadata:
  name: error-percentage
spec:
  provider:
    type: prometheus
  query: |
    100 * (sum(rate(response_total{dst_service="{{ target }}-canary",classification="failure"}[{{ interval }}])) or vector(0))
    / sum(rate(response_total{dst_service="{{ target }}-canary"}[{{ interval }}]))
"#;

/// One local platform on loopback.
pub struct Site {
    /// Everything of this site lives under here (removed on drop).
    pub root: PathBuf,
    /// The manifest directory (`--local`).
    pub manifests: PathBuf,
    /// The controller's state directory.
    pub state: PathBuf,
    /// The control plane's routes directory.
    pub routes: PathBuf,
    /// `http://127.0.0.1:PORT` of the control plane.
    pub control_plane_url: String,
    /// The proxy's outbound listener.
    pub proxy_addr: std::net::SocketAddr,
    /// The proxy's `/metrics`.
    pub proxy_metrics: String,
    /// The controller's `--metrics-server` (a Prometheus), when set before it starts.
    pub metrics_server: Option<String>,
    /// The controller's `--admin-addr` (its `/metrics`), when set before it starts.
    pub controller_admin: Option<String>,
    bin: PathBuf,
    shape: CanaryShape,
    controller: Option<Child>,
    controller_starts: u32,
    control_plane: Option<serin_mesh_control::Running>,
    proxy: Option<serin_proxy::Proxy>,
    proxy_client: Option<tokio::task::JoinHandle<()>>,
}

impl Site {
    /// Starts the control plane and the proxy, and writes the manifests for revision `v1`.
    /// `bin` is the `serin-e2e` binary (`env!("CARGO_BIN_EXE_serin-e2e")` in a test).
    pub async fn start(bin: &Path, test: &str, shape: CanaryShape) -> anyhow::Result<Self> {
        Self::start_labelled(bin, test, shape, &[]).await
    }

    /// [`Site::start`] with identity labels on every series of the proxy (`namespace`,
    /// `deployment`, `pod`, as the injector sets them), as dashboards select workloads by.
    pub async fn start_labelled(
        bin: &Path,
        test: &str,
        shape: CanaryShape,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let root = std::env::temp_dir().join(format!(
            "serin-e2e-{test}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let (manifests, state, routes) = (root.join("m"), root.join("state"), root.join("routes"));
        for d in [&manifests, &state, &routes] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let control_plane = serin_mesh_control::start(serin_mesh_control::Config {
            listen: "127.0.0.1:0".parse()?,
            source: serin_mesh_control::SourceConfig::Local {
                dir: routes.clone(),
                poll: Duration::from_millis(100),
            },
            options: serin_mesh_control::translate::Options {
                cluster_domain: "cluster.local".into(),
            },
        })
        .await?;
        let control_plane_url = format!("http://{}", control_plane.addr);
        let proxy = serin_proxy::Proxy::start(serin_proxy::ProxyConfig {
            outbound: "127.0.0.1:0".parse()?,
            admin: Some("127.0.0.1:0".parse()?),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            shutdown_timeout: Duration::from_secs(2),
            ..serin_proxy::ProxyConfig::default()
        })
        .await?;
        let proxy_client = serin_proxy::control_client::spawn(
            control_plane_url.parse()?,
            "default/loadgen".parse()?,
            proxy.table(),
        );
        let proxy_addr = proxy.outbound_addr();
        let proxy_metrics = format!(
            "http://{}/metrics",
            proxy
                .admin_addr()
                .context("the proxy has an admin listener")?
        );
        let site = Self {
            root,
            manifests,
            state,
            routes,
            control_plane_url,
            proxy_addr,
            proxy_metrics,
            metrics_server: None,
            controller_admin: None,
            bin: bin.to_path_buf(),
            shape,
            controller: None,
            controller_starts: 0,
            control_plane: Some(control_plane),
            proxy: Some(proxy),
            proxy_client: Some(proxy_client),
        };
        site.write_manifests()?;
        Ok(site)
    }

    fn write_manifests(&self) -> anyhow::Result<()> {
        let s = &self.shape;
        let text = format!(
            r#"apiVersion: serin.dev/v1beta1
kind: Process
metadata:
  name: {NAME}
spec:
  command: {bin}
  args: ["sample-app", "--addr", "127.0.0.1:$(PORT)", "--app-version", "$(SERIN_REVISION)", "--drain", "5s"]
  env:
    - name: SERIN_E2E_SITE
      value: {root}
  revision: v1
  readinessProbe:
    httpGet: {{ path: /readyz }}
    periodSeconds: 1
  terminationGracePeriodSeconds: 10
---
apiVersion: serin.dev/v1beta1
kind: Canary
metadata:
  name: {NAME}
spec:
  targetRef:
    apiVersion: serin.dev/v1beta1
    kind: Process
    name: {NAME}
  service:
    port: {PORT}
  analysis:
    interval: 10s
    threshold: {threshold}
    maxWeight: {max}
    stepWeight: {step}
{extra}{metrics}"#,
            extra = s.analysis_extra,
            metrics = if s.template {
                TEMPLATE_CHECK
            } else {
                s.metrics.unwrap_or(BUILTIN_CHECKS)
            },
            bin = self.bin.display(),
            root = self.root.display(),
            threshold = s.threshold,
            max = s.max_weight,
            step = s.step_weight,
        );
        serin_local::store::write_atomic(&self.manifests.join("podinfo.yaml"), text.as_bytes())?;
        Ok(())
    }

    /// Starts the controller process (its log goes to `controller-N.log` under the root).
    pub fn start_controller(&mut self) -> anyhow::Result<()> {
        if self.controller.is_some() {
            bail!("the controller is already running");
        }
        self.controller_starts += 1;
        let log = self
            .root
            .join(format!("controller-{}.log", self.controller_starts));
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new(&self.bin)
            .arg("controller")
            .arg("--local")
            .arg(&self.manifests)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--control-plane")
            .arg(&self.control_plane_url)
            .arg("--routes-dir")
            .arg(&self.routes)
            .arg("--proxy-metrics")
            .arg(&self.proxy_metrics)
            .arg("--interval")
            .arg(self.shape.interval)
            .args(
                self.metrics_server
                    .iter()
                    .flat_map(|url| ["--metrics-server".to_string(), url.clone()]),
            )
            .args(
                self.controller_admin
                    .iter()
                    .flat_map(|a| ["--admin-addr".to_string(), a.clone()]),
            )
            .env("SERIN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.controller = Some(child);
        Ok(())
    }

    /// SIGKILLs the controller (no cleanup of any kind runs) and reaps it.
    pub fn kill_controller(&mut self) -> anyhow::Result<()> {
        let mut child = self.controller.take().context("no controller is running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Every controller log so far, for failure messages.
    pub fn controller_logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.controller_starts {
            let path = self.root.join(format!("controller-{n}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.push_str(&format!("----- {} -----\n{text}", path.display()));
        }
        out
    }

    /// Sets the target Process's revision and environment, as `serin rollout` does.
    pub fn rollout(&self, revision: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serin_local::manifest::set_revision(&self.manifests, "default", NAME, revision, &env)?;
        Ok(())
    }

    /// The Canary's persisted record (status and history), when saved at least once.
    pub fn record(&self) -> Option<Value> {
        let bytes = std::fs::read(self.state.join(format!("default_{NAME}.state.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The supervisor's persisted process records.
    pub fn processes(&self) -> Vec<Value> {
        std::fs::read(self.state.join(format!("default_{NAME}.processes.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Every instance ever started, from the supervisor's per-instance log files
    /// (`default_podinfo-ROLE-REVISION-PORT.log`): `(role, revision, port)`.
    pub fn instances_started(&self) -> BTreeSet<(String, String, u16)> {
        let mut out = BTreeSet::new();
        let Ok(rd) = std::fs::read_dir(self.state.join("logs")) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(&format!("default_{NAME}-"))
                .and_then(|r| r.strip_suffix(".log"))
            else {
                continue;
            };
            let mut parts = rest.splitn(2, '-');
            let role = parts.next().unwrap_or_default().to_string();
            let tail = parts.next().unwrap_or_default();
            if let Some((rev, port)) = tail.rsplit_once('-')
                && let Ok(port) = port.parse()
            {
                out.insert((role, rev.to_string(), port));
            }
        }
        out
    }

    /// Polls the persisted record until `cond` holds, recording every distinct
    /// (phase, canary weight, run revision) seen on the way into `seen`.
    pub async fn await_status(
        &self,
        what: &str,
        timeout: Duration,
        seen: &mut Vec<Observed>,
        cond: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(record) = self.record() {
                let o = Observed::of(&record["status"]);
                if seen.last() != Some(&o) {
                    seen.push(o);
                }
                if cond(&record) {
                    return Ok(record);
                }
            }
            self.check_controller_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; seen {seen:?}\nrecord: {}\n{}",
                    self.record()
                        .map(|r| serde_json::to_string_pretty(&r["status"]).unwrap_or_default())
                        .unwrap_or_default(),
                    self.controller_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `cond` (anything about the site) until it holds.
    pub async fn await_that(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            self.check_controller_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; processes {:?}\n{}",
                    self.processes(),
                    self.controller_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    fn check_controller_alive(&self) -> anyhow::Result<()> {
        // `try_wait` needs `&mut`; a dead controller shows in /proc as gone or a zombie.
        if let Some(c) = &self.controller
            && !pid_alive(c.id())
        {
            bail!("the controller exited\n{}", self.controller_logs());
        }
        Ok(())
    }

    /// Starts constant open-loop load through the proxy at `rate` requests per second.
    pub fn start_load(&self, rate: f64) -> Load {
        self.start_load_via(self.proxy_addr, rate)
    }

    /// Starts constant open-loop load for the Canary's authority sent to `addr` (another
    /// proxy's listener in front of this site's proxy, say).
    pub fn start_load_via(&self, addr: std::net::SocketAddr, rate: f64) -> Load {
        let url: http::Uri = format!("http://{addr}/")
            .parse()
            .expect("a socket address makes a valid URI");
        let mut config = LoadConfig::new(url, rate, Duration::from_secs(600));
        config.host = Some(format!("{NAME}:{PORT}"));
        config.timeout = Duration::from_secs(5);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            serin_demo::load::run(
                config,
                async move {
                    let _ = stop_rx.await;
                },
                move |s: &Sample| {
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(s.clone())
                },
            )
            .await
            .map_err(anyhow::Error::from)
        });
        Load {
            samples,
            stop: Some(stop_tx),
            task,
        }
    }

    /// Stops the controller and every workload process, the proxy and the control plane, and
    /// removes the site's directory (a site dropped without `stop`, as on a failed test, keeps
    /// it for the logs).
    pub async fn stop(mut self) {
        self.teardown();
        let _ = std::fs::remove_dir_all(&self.root);
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
        if let Some(cp) = self.control_plane.take() {
            cp.stop().await;
        }
    }

    fn teardown(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.proxy_client.take() {
            t.abort();
        }
        // Every workload carries SERIN_E2E_SITE=<root> in its environment: find them all, also
        // the ones started after the records were last written.
        let marker = format!("SERIN_E2E_SITE={}", self.root.display());
        for pid in pids_with_env(&marker) {
            kill(pid);
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// What the test saw of the status at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `status.phase`.
    pub phase: String,
    /// `status.canaryWeight`.
    pub canary_weight: u64,
    /// `status.run.revision` (empty without a run).
    pub revision: String,
}

impl Observed {
    fn of(status: &Value) -> Self {
        Self {
            phase: status["phase"].as_str().unwrap_or_default().to_string(),
            canary_weight: status["canaryWeight"].as_u64().unwrap_or(0),
            revision: status["run"]["revision"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// Load running in the background.
pub struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<LoadReport>>,
}

impl Load {
    /// Requests finished so far.
    pub fn count(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until at least `n` more requests than now have finished.
    pub async fn await_more(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let target = self.count() + n;
        let deadline = Instant::now() + timeout;
        while self.count() < target {
            if Instant::now() > deadline {
                bail!("load stalled: {} of {target} requests", self.count());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the load; returns the summary and every sample.
    pub async fn finish(mut self) -> anyhow::Result<(LoadReport, Vec<Sample>)> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let report = (&mut self.task).await??;
        let samples = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        Ok((report, samples))
    }
}

/// History entries of the record, optionally only of run `run`.
pub fn history(record: &Value) -> Vec<Value> {
    record["history"].as_array().cloned().unwrap_or_default()
}

/// Whether `pid` runs (zombies count as dead).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn kill(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

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

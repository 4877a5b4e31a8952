//! Shared fixtures for Serin's end-to-end tests (the tests live in `tests/tests/`).
//!
//! [`Site`] is one machine's worth of the local platform as `serin_local::site` assembles it,
//! all on loopback port 0: the local control plane and one `serin-proxy` run in the test
//! process; the controller (with its dashboard) and every workload run as real, separate
//! processes (the `serin-e2e` binary of this package, which wraps the same library code as
//! `serin controller --local` and `serin sample-app`), so a test can SIGKILL the controller
//! mid-rollout and start it again. What this file adds is what the tests observe: the persisted
//! record, the process records, and load through the proxy.
//!
//! It is not a general harness: it knows one Canary (`podinfo`, a sample-app `Process`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use serin_demo::load::{LoadConfig, LoadReport, Sample};
use serin_local::site::{self, ControllerOptions, ProxyOptions, SampleApp, SiteDir};

pub use serin_local::site::pid_alive;

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
    /// The manifest directory (`--local`).
    pub manifests: PathBuf,
    /// `http://127.0.0.1:PORT` of the control plane.
    pub control_plane_url: String,
    /// The proxy's outbound listener.
    pub proxy_addr: std::net::SocketAddr,
    /// The proxy's `/metrics`.
    pub proxy_metrics: String,
    /// The controller's `--metrics-server` (a Prometheus), when set before it starts.
    pub metrics_server: Option<String>,
    /// The controller's `--admin-addr` (its `/metrics`), when set before it starts: `127.0.0.1:0`
    /// (the address it binds is [`Site::controller_admin_addr`] once it runs), so no test hands
    /// the child a port that was merely free a moment before.
    pub controller_admin: Option<String>,
    /// `http://ADDR` of the running controller's dashboard (bound on port 0).
    pub dashboard: Option<String>,
    site: site::Site,
    bin: PathBuf,
    shape: CanaryShape,
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
        let dir = SiteDir::temporary(&format!("serin-e2e-{test}"))?;
        let mut proxy = ProxyOptions::new("default", "loadgen");
        proxy.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let inner = site::Site::start(dir.clone(), Some(proxy)).await?;
        let site = Self {
            manifests: dir.manifests(),
            control_plane_url: inner.control_plane_url.clone(),
            proxy_addr: inner.proxy_addr().context("the site runs a proxy")?,
            proxy_metrics: inner.proxy_metrics(),
            metrics_server: None,
            controller_admin: None,
            dashboard: None,
            site: inner,
            bin: bin.to_path_buf(),
            shape,
        };
        site.write_manifests()?;
        Ok(site)
    }

    fn write_manifests(&self) -> anyhow::Result<()> {
        let s = &self.shape;
        let canary = site::CanaryShape {
            step_weight: s.step_weight,
            max_weight: s.max_weight,
            threshold: s.threshold,
            metrics: if s.template {
                TEMPLATE_CHECK
            } else {
                s.metrics.unwrap_or(site::BUILTIN_CHECKS)
            }
            .into(),
            analysis_extra: s.analysis_extra.into(),
            ..site::CanaryShape::new(NAME, PORT)
        };
        let text = format!(
            "{}---\n{}",
            self.site
                .sample_app_manifest(&SampleApp::new(NAME, &self.bin)),
            site::canary_manifest(&canary)
        );
        self.site.write_manifest("podinfo.yaml", &text)?;
        Ok(())
    }

    /// Starts the controller process (its log goes to `controller-N.log` under the root) with
    /// its dashboard on a port-0 address; returns once the dashboard's address is known.
    pub async fn start_controller(&mut self) -> anyhow::Result<()> {
        let opts = ControllerOptions {
            interval: serin_api::duration::parse_duration(self.shape.interval)
                .map_err(|e| anyhow::anyhow!("interval: {e}"))?,
            metrics_server: self.metrics_server.clone(),
            admin: self
                .controller_admin
                .as_deref()
                .map(str::parse)
                .transpose()
                .context("controller_admin")?,
            ..ControllerOptions::default()
        };
        self.site.start_controller_process(&self.bin, &opts).await?;
        self.dashboard = self.site.dashboard().map(str::to_string);
        Ok(())
    }

    /// The address the running controller serves its `/metrics` on (see
    /// [`Site::controller_admin`](Self::controller_admin)).
    pub fn controller_admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.site.controller_admin()
    }

    /// SIGKILLs the controller (no cleanup of any kind runs) and reaps it.
    pub fn kill_controller(&mut self) -> anyhow::Result<()> {
        self.dashboard = None;
        self.site.kill_controller()?;
        Ok(())
    }

    /// Every controller log so far, for failure messages.
    pub fn controller_logs(&self) -> String {
        self.site.controller_logs()
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
        let bytes = std::fs::read(
            self.site
                .dir
                .state()
                .join(format!("default_{NAME}.state.json")),
        )
        .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The supervisor's persisted process records.
    pub fn processes(&self) -> Vec<Value> {
        std::fs::read(
            self.site
                .dir
                .state()
                .join(format!("default_{NAME}.processes.json")),
        )
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
    }

    /// Every instance ever started, from the supervisor's per-instance log files
    /// (`default_podinfo-ROLE-REVISION-PORT.log`): `(role, revision, port)`.
    pub fn instances_started(&self) -> BTreeSet<(String, String, u16)> {
        let mut out = BTreeSet::new();
        let Ok(rd) = std::fs::read_dir(self.site.dir.state().join("logs")) else {
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
        if self.site.controller_exited() {
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
    pub async fn stop(self) {
        let dir = self.site.dir.clone();
        if let Err(error) = self.site.stop().await {
            eprintln!("stopping the site: {error:#}");
        }
        let _ = std::fs::remove_dir_all(dir.root());
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

/// `status.phase` of a persisted record.
pub fn phase(record: &Value) -> &str {
    record["status"]["phase"].as_str().unwrap_or_default()
}

/// `status.run.revision` of a persisted record (empty without a run).
pub fn run_revision(record: &Value) -> &str {
    record["status"]["run"]["revision"]
        .as_str()
        .unwrap_or_default()
}

/// History entries of the run that analysed `revision`.
pub fn run_history(record: &Value, revision: &str) -> Vec<Value> {
    history(record)
        .into_iter()
        .filter(|e| e["revision"].as_str() == Some(revision))
        .collect()
}

/// The canary weights the run advanced to, in order.
pub fn advanced_weights(entries: &[Value]) -> Vec<u64> {
    entries
        .iter()
        .filter(|e| e["kind"] == "advanced" && e["phase"] == "Progressing")
        .map(|e| e["canaryWeight"].as_u64().unwrap_or(0))
        .collect()
}

impl Site {
    /// Starts the controller and waits (at most `timeout`) for the Canary's initialization.
    pub async fn start_initialized(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.start_controller().await?;
        let mut seen = Vec::new();
        self.await_status("initialization", timeout, &mut seen, |r| {
            phase(r) == "Initialized"
        })
        .await?;
        Ok(())
    }
}

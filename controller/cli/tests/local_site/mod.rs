//! One machine's local platform for the CLI's tests: the real `serin` binary as the controller
//! (`serin controller --local`, dashboard on a port-0 address read from its stdout), the local
//! control plane in the test process on a port-0 listener, `serin sample-app` processes as the
//! workload, and optionally a `serin-proxy` (in the test process) carrying real traffic.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serin_dashboard::client::Client;
use serin_dashboard::model::{CanaryDetail, CanaryKey, CanarySummary, HistoryEntry};

pub const SERIN: &str = env!("CARGO_BIN_EXE_serin");
pub const TOKEN: &str = "local-ci-token";
pub const NAME: &str = "podinfo";
/// The Canary's service port (the authority the proxy routes on is `podinfo:9898`).
pub const PORT: u16 = 9898;

pub struct Site {
    pub root: PathBuf,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub routes: PathBuf,
    pub control_plane_url: String,
    /// `http://ADDR` of the running controller's dashboard.
    pub dashboard: String,
    pub proxy_metrics: String,
    pub proxy_addr: Option<std::net::SocketAddr>,
    controller: Option<Child>,
    starts: u32,
    control_plane: Option<serin_mesh_control::Running>,
    proxy: Option<serin_proxy::Proxy>,
    proxy_client: Option<tokio::task::JoinHandle<()>>,
}

impl Site {
    /// Directories, the control plane, and the `podinfo` Process at revision v1.
    pub async fn start(test: &str) -> Site {
        let root = std::env::temp_dir().join(format!(
            "serin-cli-{test}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let (manifests, state, routes) = (root.join("m"), root.join("state"), root.join("routes"));
        for d in [&manifests, &state, &routes] {
            std::fs::create_dir_all(d).unwrap();
        }
        let control_plane = serin_mesh_control::start(serin_mesh_control::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            source: serin_mesh_control::SourceConfig::Local {
                dir: routes.clone(),
                poll: Duration::from_millis(100),
            },
            options: serin_mesh_control::translate::Options {
                cluster_domain: "cluster.local".into(),
            },
        })
        .await
        .expect("the control plane starts");
        let site = Site {
            control_plane_url: format!("http://{}", control_plane.addr),
            root,
            manifests,
            state,
            routes,
            dashboard: String::new(),
            // Nothing listens there: without a proxy the runs measure nothing (no metric checks).
            proxy_metrics: "http://127.0.0.1:9/metrics".into(),
            proxy_addr: None,
            controller: None,
            starts: 0,
            control_plane: Some(control_plane),
            proxy: None,
            proxy_client: None,
        };
        site.write(
            "process.yaml",
            &format!(
                r#"apiVersion: serin.dev/v1beta1
kind: Process
metadata:
  name: {NAME}
spec:
  command: {SERIN}
  args: ["sample-app", "--addr", "127.0.0.1:$(PORT)", "--app-version", "v1", "--drain", "1s"]
  env:
    - name: SERIN_CLI_TEST_SITE
      value: {root}
  revision: v1
  readinessProbe:
    httpGet: {{ path: /readyz }}
    periodSeconds: 1
  terminationGracePeriodSeconds: 5
"#,
                root = site.root.display()
            ),
        );
        site
    }

    /// Starts a `serin-proxy` in the test process, following the control plane, whose
    /// `/metrics` the controller measures from.
    pub async fn with_proxy(mut self) -> Site {
        let proxy = serin_proxy::Proxy::start(serin_proxy::ProxyConfig {
            outbound: "127.0.0.1:0".parse().unwrap(),
            admin: Some("127.0.0.1:0".parse().unwrap()),
            shutdown_timeout: Duration::from_secs(2),
            ..serin_proxy::ProxyConfig::default()
        })
        .await
        .expect("the proxy starts");
        self.proxy_client = Some(serin_proxy::control_client::spawn(
            self.control_plane_url.parse().unwrap(),
            "default/loadgen".parse().unwrap(),
            proxy.table(),
        ));
        self.proxy_addr = Some(proxy.outbound_addr());
        self.proxy_metrics = format!("http://{}/metrics", proxy.admin_addr().unwrap());
        self.proxy = Some(proxy);
        self
    }

    pub fn write(&self, file: &str, text: &str) {
        serin_local::store::write_atomic(&self.manifests.join(file), text.as_bytes()).unwrap();
    }

    /// A Canary without metric checks whose promotion waits for the controller's own confirm
    /// gate (`/gate/check`) and which rolls back when its rollback gate is open
    /// (`/rollback/check`): Flagger load-tester webhooks, served by the controller itself.
    pub fn write_gated_canary(&self) {
        let d = &self.dashboard;
        self.write(
            "canary.yaml",
            &format!(
                r#"apiVersion: serin.dev/v1beta1
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
    threshold: 1
    maxWeight: 50
    stepWeight: 25
    webhooks:
      - name: release-approval
        type: confirm-promotion
        url: {d}/gate/check
      - name: kill-switch
        type: rollback
        url: {d}/rollback/check
"#
            ),
        );
    }

    /// A Canary measured from the proxy: Flagger's two built-in checks and the judge.
    pub fn write_measured_canary(&self) {
        self.write(
            "canary.yaml",
            &format!(
                r#"apiVersion: serin.dev/v1beta1
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
    threshold: 3
    maxWeight: 50
    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange: {{ min: 99 }}
        interval: 10s
      - name: request-duration
        thresholdRange: {{ max: 500 }}
        interval: 10s
    judge:
      enabled: true
      minRequests: 20
"#
            ),
        );
    }

    fn controller_command(&self, extra: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(SERIN);
        cmd.arg("controller")
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
            .arg("1s")
            .arg("--admin-addr")
            .arg("127.0.0.1:0")
            .arg("--stop-workloads-on-exit")
            .args(extra)
            .env("SERIN_LOG", "info")
            .env_remove("SERIN_DASHBOARD_TOKEN")
            .env_remove("SERIN_DASHBOARD_ADDR")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts the controller with its dashboard on a free port and the token; returns once it
    /// printed the dashboard's address.
    pub async fn start_controller(&mut self) {
        assert!(
            self.controller.is_none(),
            "the controller is already running"
        );
        self.starts += 1;
        let log_path = self.root.join(format!("controller-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = self
            .controller_command(&[
                "--dashboard-addr",
                "127.0.0.1:0",
                "--dashboard-token",
                TOKEN,
            ])
            .stdout(Stdio::piped())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .expect("serin controller starts");
        let stdout = child.stdout.take().unwrap();
        self.controller = Some(child);
        let found = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return None;
                }
                let _ = (&log).write_all(line.as_bytes());
                if let Some(rest) = line.split("dashboard on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    // Keep copying stdout to the log so the controller never blocks on it.
                    std::thread::spawn(move || {
                        let mut rest = String::new();
                        while reader.read_line(&mut rest).unwrap_or(0) > 0 {
                            let _ = (&log).write_all(rest.as_bytes());
                            rest.clear();
                        }
                    });
                    return Some(url);
                }
            }
        });
        let url = tokio::time::timeout(Duration::from_secs(30), found)
            .await
            .expect("the controller printed its dashboard address within 30s")
            .unwrap();
        self.dashboard = url.unwrap_or_else(|| {
            panic!(
                "the controller exited without serving its dashboard:\n{}",
                self.logs()
            )
        });
        assert!(
            self.dashboard.starts_with("http://127.0.0.1:"),
            "{}",
            self.dashboard
        );
    }

    /// Runs the controller with `extra` flags expecting it to refuse to start: (code, stderr).
    pub async fn controller_once(&self, extra: &[&str]) -> (i32, String) {
        let mut cmd = tokio::process::Command::from(self.controller_command(extra));
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("the controller exited within 30s")
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// SIGKILLs the controller: no cleanup runs, the workloads keep serving.
    pub fn kill_controller(&mut self) {
        let mut c = self.controller.take().expect("a running controller");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let p = self.root.join(format!("controller-{i}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            out.push_str(&format!("--- {} (last lines)\n", p.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    fn client(&self) -> Client {
        Client::new(&self.dashboard, Some(TOKEN.into())).unwrap()
    }

    pub fn key() -> CanaryKey {
        CanaryKey::new("default", NAME)
    }

    pub async fn summary(&self) -> CanarySummary {
        self.client().detail(&Self::key()).await.unwrap().canary
    }

    pub async fn detail(&self) -> CanaryDetail {
        self.client().detail(&Self::key()).await.unwrap()
    }

    pub async fn history(&self) -> Vec<HistoryEntry> {
        self.client().history(&Self::key()).await.unwrap().items
    }

    /// Polls the API until `pred` holds (the controller runs on its own clock).
    pub async fn await_summary(
        &self,
        what: &str,
        pred: impl Fn(&CanarySummary) -> bool,
    ) -> CanarySummary {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = None;
        loop {
            if let Ok(d) = self.client().detail(&Self::key()).await {
                if pred(&d.canary) {
                    return d.canary;
                }
                last = Some(d.canary);
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for: {what}\nlast summary: {last:#?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn cli(&self, server: &str, token: bool, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(SERIN);
        cmd.args(args)
            .env("SERIN_SERVER", server)
            .env("SERIN_LOG", "warn")
            .env_remove("SERIN_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if token {
            cmd.env("SERIN_DASHBOARD_TOKEN", TOKEN);
        } else {
            cmd.env_remove("SERIN_DASHBOARD_TOKEN");
        }
        cmd
    }

    async fn output(mut cmd: tokio::process::Command) -> (i32, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(150), cmd.output())
            .await
            .expect("serin finished within 150s")
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `serin ARGS` against this controller, with the token: (code, stdout, stderr).
    pub async fn serin(&self, args: &[&str]) -> (i32, String, String) {
        Self::output(self.cli(&self.dashboard, true, args)).await
    }

    pub async fn serin_without_token(&self, args: &[&str]) -> (i32, String, String) {
        Self::output(self.cli(&self.dashboard, false, args)).await
    }

    pub async fn serin_at(&self, server: &str, args: &[&str]) -> (i32, String, String) {
        Self::output(self.cli(server, true, args)).await
    }

    pub fn spawn_serin(&self, args: &[&str]) -> tokio::task::JoinHandle<(i32, String, String)> {
        let cmd = self.cli(&self.dashboard, true, args);
        tokio::spawn(Self::output(cmd))
    }

    /// `serin rollout podinfo --revision REV`: what a deploy step does locally.
    pub async fn rollout(&self, revision: &str) {
        let dir = self.manifests.display().to_string();
        let (code, out, err) = self
            .serin(&["rollout", NAME, "--revision", revision, "--dir", &dir])
            .await;
        assert_eq!(code, 0, "serin rollout: {out}{err}");
    }

    /// Stops everything this site started and removes its directory.
    pub async fn stop(mut self) {
        self.teardown();
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
        if let Some(cp) = self.control_plane.take() {
            cp.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }

    fn teardown(&mut self) {
        if let Some(mut c) = self.controller.take() {
            // SIGTERM: the controller stops its workloads (--stop-workloads-on-exit).
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.proxy_client.take() {
            t.abort();
        }
        // Any workload left behind (a failed test, a SIGKILLed controller) carries the marker.
        let marker = format!("SERIN_CLI_TEST_SITE={}", self.root.display());
        for pid in pids_with_env(&marker) {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Processes whose environment contains `marker` (`NAME=VALUE`).
fn pids_with_env(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|b| *b == 0).any(|v| v == marker.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

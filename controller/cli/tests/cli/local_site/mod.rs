//! One machine's local platform for the CLI's tests, as `serin_local::site` assembles it: the
//! real `serin` binary as the controller (`serin controller --local`, dashboard on a port-0
//! address read from its stdout), the local control plane in the test process on a port-0
//! listener, `serin sample-app` processes as the workload, and optionally a `serin-proxy` (in
//! the test process) carrying real traffic. What this file adds is the CLI run against it.

#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serin_dashboard::client::Client;
use serin_dashboard::model::{CanaryDetail, CanaryKey, CanarySummary, HistoryEntry};
use serin_local::site::{
    self, BUILTIN_CHECKS, CanaryShape, ControllerOptions, DashboardOptions, ProxyOptions,
    SampleApp, SiteDir, canary_manifest,
};

pub const SERIN: &str = env!("CARGO_BIN_EXE_serin");
pub const TOKEN: &str = "local-ci-token";
pub const NAME: &str = "podinfo";
/// The Canary's service port (the authority the proxy routes on is `podinfo:9898`).
pub const PORT: u16 = 9898;

pub struct Site {
    /// `http://ADDR` of the running controller's dashboard.
    pub dashboard: String,
    /// The proxy's outbound listener, when the site runs one.
    pub proxy_addr: Option<std::net::SocketAddr>,
    site: site::Site,
}

impl Site {
    /// Directories, the control plane, and the `podinfo` Process at revision v1.
    pub async fn start(test: &str) -> Site {
        Self::assemble(test, None).await
    }

    /// [`Site::start`] with a `serin-proxy` in the test process, following the control plane,
    /// whose `/metrics` the controller measures from.
    pub async fn start_with_proxy(test: &str) -> Site {
        Self::assemble(test, Some(ProxyOptions::new("default", "loadgen"))).await
    }

    async fn assemble(test: &str, proxy: Option<ProxyOptions>) -> Site {
        let dir = SiteDir::temporary(&format!("serin-cli-{test}")).unwrap();
        let inner = site::Site::start(dir.clone(), proxy)
            .await
            .expect("the site starts");
        // Without a proxy the controller measures from a closed port: the runs measure nothing
        // (the gated Canary has no metric checks).
        let site = Site {
            dashboard: String::new(),
            proxy_addr: inner.proxy_addr(),
            site: inner,
        };
        let app = SampleApp {
            app_version: "v1".into(),
            drain: "1s".into(),
            grace_seconds: 5,
            ..SampleApp::new(NAME, Path::new(SERIN))
        };
        site.write("process.yaml", &site.site.sample_app_manifest(&app));
        site
    }

    pub fn write(&self, file: &str, text: &str) {
        self.site.write_manifest(file, text).unwrap();
    }

    /// The manifest directory.
    pub fn manifests(&self) -> std::path::PathBuf {
        self.site.dir.manifests()
    }

    /// Deletes a manifest file.
    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.site.dir.manifests().join(file)).unwrap();
    }

    /// A manifest file as it is now.
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.site.dir.manifests().join(file)).unwrap()
    }

    /// A Canary without metric checks whose promotion waits for the controller's own confirm
    /// gate (`/gate/check`) and which rolls back when its rollback gate is open
    /// (`/rollback/check`): Flagger load-tester webhooks, served by the controller itself.
    pub fn write_gated_canary(&self) {
        self.write("canary.yaml", &self.gated_canary());
    }

    /// The manifest [`Site::write_gated_canary`] writes.
    pub fn gated_canary(&self) -> String {
        let d = &self.dashboard;
        let shape = CanaryShape {
            threshold: 1,
            metrics: String::new(),
            analysis_extra: format!(
                r#"    webhooks:
      - name: release-approval
        type: confirm-promotion
        url: {d}/gate/check
      - name: kill-switch
        type: rollback
        url: {d}/rollback/check
"#
            ),
            ..CanaryShape::new(NAME, PORT)
        };
        canary_manifest(&shape)
    }

    /// A Canary measured from the proxy: Flagger's two built-in checks and the judge.
    pub fn write_measured_canary(&self) {
        let shape = CanaryShape {
            threshold: 3,
            step_weight: 10,
            metrics: BUILTIN_CHECKS.into(),
            analysis_extra: "    judge:
      enabled: true
      minRequests: 20
"
            .into(),
            ..CanaryShape::new(NAME, PORT)
        };
        self.write("canary.yaml", &canary_manifest(&shape));
    }

    fn controller_options() -> ControllerOptions {
        ControllerOptions {
            interval: Duration::from_secs(1),
            metrics_server: None,
            admin: Some("127.0.0.1:0".parse().unwrap()),
            dashboard: Some(DashboardOptions {
                token: Some(TOKEN.into()),
            }),
            stop_workloads_on_exit: true,
        }
    }

    /// Starts the controller with its dashboard on a free port and the token; returns once it
    /// printed the dashboard's address.
    pub async fn start_controller(&mut self) {
        if let Err(e) = self
            .site
            .start_controller_process(Path::new(SERIN), &Self::controller_options())
            .await
        {
            panic!("serin controller starts: {e}");
        }
        self.dashboard = self.site.dashboard().unwrap_or_default().to_string();
        assert!(
            self.dashboard.starts_with("http://127.0.0.1:"),
            "{}",
            self.dashboard
        );
    }

    /// Runs the controller with `extra` flags expecting it to refuse to start: (code, stderr).
    pub async fn controller_once(&self, extra: &[&str]) -> (i32, String) {
        let mut cmd = tokio::process::Command::from(self.site.controller_command(
            Path::new(SERIN),
            &Self::controller_options(),
            extra,
        ));
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
        self.site.kill_controller().expect("a running controller");
    }

    pub fn logs(&self) -> String {
        self.site.controller_logs()
    }

    /// The live processes the supervisor recorded for `podinfo`: (role, pid, port).
    pub fn live_instances(&self) -> Vec<(String, u32, u16)> {
        let file = self
            .site
            .dir
            .state()
            .join(format!("default_{NAME}.processes.json"));
        let Ok(bytes) = std::fs::read(&file) else {
            return Vec::new();
        };
        let records: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        records
            .iter()
            .map(|r| {
                (
                    r["role"].as_str().unwrap().to_string(),
                    r["pid"].as_u64().unwrap() as u32,
                    r["port"].as_u64().unwrap() as u16,
                )
            })
            .filter(|(_, pid, _)| site::pid_alive(*pid))
            .collect()
    }

    /// The routes file the controller writes for `podinfo`, if there is one.
    pub fn routes_file(&self) -> Option<String> {
        std::fs::read_to_string(
            self.site
                .dir
                .routes()
                .join(format!("serin-local-default-{NAME}.yaml")),
        )
        .ok()
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
        let dir = self.site.dir.manifests().display().to_string();
        let (code, out, err) = self
            .serin(&["rollout", NAME, "--revision", revision, "--dir", &dir])
            .await;
        assert_eq!(code, 0, "serin rollout: {out}{err}");
    }

    /// Stops everything this site started and removes its directory.
    pub async fn stop(self) {
        let dir = self.site.dir.clone();
        // SIGTERM: the controller stops its workloads (--stop-workloads-on-exit).
        if let Err(e) = self.site.stop().await {
            eprintln!("stopping the site: {e}");
        }
        let _ = std::fs::remove_dir_all(dir.root());
    }
}

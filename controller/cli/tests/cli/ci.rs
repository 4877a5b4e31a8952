//! `serin status | wait | promote | abort | pause | resume | gate` run as the real binary against
//! a real dashboard API server (over the in-memory reference backend, snapshotted to a file so
//! a restart is real), with every `wait` exit code reached for real.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serin_dashboard::memory::MemoryBackend;
use serin_dashboard::model::{Action, CanaryKey, EntryKind, Phase, RunResult, TargetRef};
use serin_dashboard::{Backend, DashboardConfig, router};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TOKEN: &str = "ci-token";
const SERIN: &str = env!("CARGO_BIN_EXE_serin");

struct Server {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(backend: Arc<MemoryBackend>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(
        backend,
        DashboardConfig {
            token: Some(TOKEN.into()),
        },
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { url, task }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + s).unwrap()
}

fn podinfo() -> CanaryKey {
    CanaryKey::new("test", "podinfo")
}

/// `podinfo` promoted v1 in run 1 (phase Succeeded) and the target now declares v2.
fn after_a_promotion() -> Arc<MemoryBackend> {
    let b = Arc::new(MemoryBackend::new());
    seed(&b);
    b
}

fn seed(b: &MemoryBackend) {
    let k = podinfo();
    b.add_canary(
        &k,
        TargetRef {
            kind: "Deployment".into(),
            name: "podinfo".into(),
        },
        "v0",
        t(0),
    )
    .unwrap();
    b.start_run(&k, "v1", t(10)).unwrap();
    b.set_weight(&k, 50, t(20)).unwrap();
    b.end_run(&k, RunResult::Promoted, "analysis complete", t(30))
        .unwrap();
    b.set_target_revision(&k, "v2").unwrap();
}

fn serin(server: &Server, args: &[&str]) -> Command {
    let mut cmd = Command::new(SERIN);
    cmd.args(args)
        .env("SERIN_SERVER", &server.url)
        .env("SERIN_NAMESPACE", "test")
        .env_remove("SERIN_DASHBOARD_TOKEN")
        .env("SERIN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs to completion: (exit code, stdout, stderr).
async fn run(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), serin(server, args).output())
        .await
        .expect("serin finished within 30s")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `serin wait` whose plain-line output (stdout is not a terminal) is read as it comes.
struct Waiter {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl Waiter {
    fn start(server: &Server, extra: &[&str]) -> Waiter {
        let mut args = vec!["wait", "podinfo", "--interval", "50ms"];
        args.extend_from_slice(extra);
        let mut child = serin(server, &args).spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Waiter {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an output line containing `needle`.
    async fn line(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no line containing {needle:?}; saw {:#?}", self.seen),
        }
    }

    async fn exit_code(mut self) -> (i32, Vec<String>) {
        while let Ok(Some(line)) = self.lines.next_line().await {
            self.seen.push(line);
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("serin wait exited within 20s")
            .unwrap();
        (status.code().unwrap_or(-1), self.seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ignores_the_previous_runs_success_and_exits_0_when_the_current_revision_is_promoted()
{
    let b = after_a_promotion();
    let server = serve(b.clone()).await;
    let mut w = Waiter::start(&server, &["--timeout", "60s"]);
    // The canary still says Succeeded (run 1, v1): wait must not return on it.
    w.line("waiting for the controller to start the run of revision v2 (phase Succeeded)")
        .await;
    let k = podinfo();
    b.start_run(&k, "v2", t(100)).unwrap();
    w.line("phase=Progressing weight=0").await;
    b.set_weight(&k, 25, t(110)).unwrap();
    w.line("phase=Progressing weight=25").await;
    b.set_phase(&k, Phase::Promoting, t(120), None).unwrap();
    b.end_run(&k, RunResult::Promoted, "analysis complete", t(130))
        .unwrap();
    let (code, lines) = w.exit_code().await;
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(
        lines.last().unwrap(),
        "promoted: test/podinfo revision v2 (run 2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_1_when_the_current_revision_is_rolled_back() {
    let b = after_a_promotion();
    let server = serve(b.clone()).await;
    let mut w = Waiter::start(&server, &["--timeout", "60s"]);
    w.line("waiting for the controller").await;
    let k = podinfo();
    b.start_run(&k, "v2", t(100)).unwrap();
    w.line("phase=Progressing").await;
    b.end_run(
        &k,
        RunResult::RolledBack,
        "request-success-rate 91.2 below minimum 99",
        t(130),
    )
    .unwrap();
    let (code, lines) = w.exit_code().await;
    assert_eq!(code, 1, "{lines:#?}");
    assert_eq!(
        lines.last().unwrap(),
        "failed: test/podinfo: revision v2 rolled back (run 2): request-success-rate 91.2 below minimum 99"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_paused_exits_2_on_a_pause_or_a_confirm_gate_and_keeps_waiting_without_it() {
    let b = after_a_promotion();
    let server = serve(b.clone()).await;
    let k = podinfo();
    b.start_run(&k, "v2", t(100)).unwrap();

    // A person pauses through the CLI; `wait --until-paused` returns 2.
    let (code, out, err) = run(
        &server,
        &["pause", "podinfo", "--token", TOKEN, "--by", "dana"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("pause of test/podinfo recorded"), "{out}");
    let mut w = Waiter::start(&server, &["--timeout", "60s", "--until-paused"]);
    w.line("waiting for a person: test/podinfo: run 2 of revision v2 is paused")
        .await;
    assert_eq!(w.exit_code().await.0, 2);

    // Without --until-paused it keeps waiting (and times out here: exit 3).
    let w = Waiter::start(&server, &["--timeout", "500ms"]);
    let (code, lines) = w.exit_code().await;
    assert_eq!(code, 3, "{lines:#?}");

    // Resumed, then held by the confirm-promotion gate.
    let (code, _, err) = run(&server, &["resume", "podinfo", "--token", TOKEN]).await;
    assert_eq!(code, 0, "{err}");
    b.set_phase(&k, Phase::WaitingPromotion, t(200), None)
        .unwrap();
    let mut w = Waiter::start(&server, &["--timeout", "60s", "--until-paused"]);
    w.line("is waiting for confirm-promotion gate").await;
    assert_eq!(w.exit_code().await.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_3_on_timeout() {
    let b = after_a_promotion();
    b.start_run(&podinfo(), "v2", t(100)).unwrap();
    let server = serve(b).await;
    let w = Waiter::start(&server, &["--timeout", "300ms"]);
    let (code, lines) = w.exit_code().await;
    assert_eq!(code, 3, "{lines:#?}");
    assert!(
        lines.last().unwrap().starts_with(
            "timed out after 0s waiting for test/podinfo revision v2: phase Progressing"
        ),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_4_with_a_message_naming_the_cause() {
    let server = serve(after_a_promotion()).await;
    let (code, _, err) = run(&server, &["wait", "ghost", "--timeout", "5s"]).await;
    assert_eq!(code, 4);
    assert!(err.contains("canary test/ghost not found"), "{err}");

    let (code, _, err) = run(&server, &["wait", "podinfo", "--timeout", "5"]).await;
    assert_eq!(code, 4, "invalid flags exit 4, not clap's 2");
    assert!(err.contains("accepted: a number with a unit"), "{err}");

    let (code, _, err) = run(
        &server,
        &["wait", "podinfo", "--server", "http://127.0.0.1:1"],
    )
    .await;
    assert_eq!(code, 4);
    assert!(err.contains("unreachable"), "{err}");

    let (code, _, err) = run(&server, &["status", "--server", "localhost:7979"]).await;
    assert_eq!(code, 4);
    assert!(err.contains("missing http:// scheme"), "{err}");

    // Actions without the token are refused and nothing is recorded.
    let (code, _, err) = run(&server, &["promote", "podinfo"]).await;
    assert_eq!(code, 4);
    assert!(
        err.contains("pass --token or set SERIN_DASHBOARD_TOKEN"),
        "{err}"
    );
    let (code, _, err) = run(&server, &["promote", "podinfo", "--token", "wrong"]).await;
    assert_eq!(code, 4);
    assert!(err.contains("wrong token"), "{err}");
    // Promote while idle: the controller has nothing to promote.
    let (code, _, err) = run(&server, &["promote", "podinfo", "--token", TOKEN]).await;
    assert_eq!(code, 4);
    assert!(err.contains("no run in flight"), "{err}");
    let (code, _, err) = run(&server, &["gate", "open", "podinfo", "--gate", "sesame"]).await;
    assert_eq!(code, 4);
    assert!(
        err.contains("[possible values: confirm, rollback]"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_a_table_and_the_apis_json() {
    let b = after_a_promotion();
    b.start_run(&podinfo(), "v2", t(100)).unwrap();
    b.set_weight(&podinfo(), 20, t(110)).unwrap();
    let server = serve(b).await;
    let (code, out, err) = run(&server, &["status"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE   NAME      PHASE         WEIGHT   FAILED   REVISION   PROMOTED   LAST TRANSITION"), "{out}");
    assert!(
        lines[1].starts_with("test        podinfo   Progressing   20%      0        v2         v1"),
        "{out}"
    );

    let (code, out, _) = run(&server, &["status", "podinfo", "-o", "json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["phase"], "Progressing");
    assert_eq!(v["canaryWeight"], 20);
    assert_eq!(v["run"]["revision"], "v2");

    let (code, out, _) = run(&server, &["status", "-n", "other"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "No canaries found.\n");
    let (code, out, _) = run(&server, &["status", "-A", "-o", "json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_persisted_across_a_restart_and_recorded_with_who() {
    let dir = std::env::temp_dir().join(format!("serin-cli-ci-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    {
        let b = Arc::new(MemoryBackend::open(&path).unwrap());
        seed(&b);
        b.start_run(&podinfo(), "v2", t(100)).unwrap();
        let server = serve(b).await;
        for args in [
            &["gate", "open", "podinfo", "--token", TOKEN, "--by", "erin"][..],
            &[
                "gate", "open", "podinfo", "--gate", "rollback", "--token", TOKEN, "--by", "erin",
            ][..],
            &[
                "gate", "close", "podinfo", "--gate", "rollback", "--token", TOKEN, "--by", "erin",
            ][..],
            &["promote", "podinfo", "--token", TOKEN, "--by", "erin"][..],
        ] {
            let (code, out, err) = run(&server, args).await;
            assert_eq!(code, 0, "{args:?}: {out}{err}");
        }
    }
    // "Restart": a new server over the state file.
    let b = Arc::new(MemoryBackend::open(&path).unwrap());
    let server = serve(b.clone()).await;
    let (code, out, _) = run(&server, &["status", "podinfo", "-o", "json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["gates"],
        serde_json::json!({"confirm": true, "rollback": false})
    );
    let pending = b.pending_commands(&podinfo());
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].action, pending[0].by.as_str()),
        (Action::Promote, "erin")
    );
    let history = b.history(&podinfo(), &Default::default()).await.unwrap();
    let commands: Vec<String> = history
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Command {
                action, gate, by, ..
            } => Some(format!(
                "{action}{} by {by}",
                gate.as_deref().map(|g| format!(" {g}")).unwrap_or_default()
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        commands,
        [
            "gate-open confirm by erin",
            "gate-open rollback by erin",
            "gate-close rollback by erin",
            "promote by erin"
        ]
    );
    let (code, out, _) = run(&server, &["status", "podinfo"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Gates: confirm open, rollback closed"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_serins_api_is_named_not_taken_for_a_missing_canary() {
    // --server pointing at another service (a wrong port, a proxy's error page) answers 404 to
    // every path: that is not "canary not found (check the name and -n)".
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            axum::response::Html("<html>404 page not found</html>"),
        )
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let server = Server { url, task };
    for args in [
        &["status", "podinfo"][..],
        &["wait", "podinfo", "--timeout", "5s"][..],
        &["promote", "podinfo", "--token", TOKEN][..],
    ] {
        let (code, _, err) = run(&server, args).await;
        assert_eq!(code, 4, "{args:?}: {err}");
        assert!(!err.contains("not found at"), "{args:?}: {err}");
        assert!(err.contains("404 page not found"), "{args:?}: {err}");
        assert!(
            err.contains("is --server / SERIN_SERVER the controller's dashboard address?"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_wait_say_why_a_canary_does_not_move() {
    // A Canary held by the engine (its target does not exist, too few requests, ...) used to
    // show only its phase and the last transition's message: a wait that never moves read
    // like a hang, and the orphan's error blamed a missing --revision.
    let b = after_a_promotion();
    let k = podinfo();
    b.start_run(&k, "v2", t(100)).unwrap();
    let hold = |h: &str| {
        let h = h.to_string();
        b.update(&k, move |s| s.summary.holding = Some(h)).unwrap();
    };
    hold("waiting: 15 requests in 2s < noData.minRequests 50");
    let server = serve(b.clone()).await;
    let (code, out, err) = run(&server, &["status", "podinfo"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Holding: waiting: 15 requests in 2s < noData.minRequests 50\n"),
        "{out}"
    );
    let mut w = Waiter::start(&server, &["--timeout", "60s"]);
    w.line("; holding: waiting: 15 requests in 2s").await;
    // The same hold with other counts prints no new line; another hold does.
    hold("waiting: 31 requests in 3s < noData.minRequests 50");
    hold("check judge inconclusive");
    w.line("; holding: check judge inconclusive").await;
    b.end_run(&k, RunResult::Promoted, "analysis complete", t(130))
        .unwrap();
    let (code, lines) = w.exit_code().await;
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("31 requests")),
        "a hold that only counts prints once: {lines:#?}"
    );

    // A Canary whose target the controller cannot find reports no revision: say why.
    b.update(&k, |s| {
        s.summary.target_revision = None;
        s.summary.run = None;
        s.summary.promoted_revision = None;
        s.summary.holding = Some("target not found".into());
    })
    .unwrap();
    let (code, _, err) = run(&server, &["wait", "podinfo", "--timeout", "5s"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("does not report the target's revision yet (holding: target not found)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_wait_says_the_rollout_goes_on_and_exits_130() {
    // Ctrl-C, or SIGTERM from a cancelled CI job: only the wait stops.
    let b = after_a_promotion();
    b.start_run(&podinfo(), "v2", t(100)).unwrap();
    let server = serve(b).await;
    for signal in [rustix::process::Signal::INT, rustix::process::Signal::TERM] {
        let mut w = Waiter::start(&server, &["--timeout", "60s"]);
        w.line("phase=Progressing").await;
        let pid = rustix::process::Pid::from_raw(w.child.id().unwrap() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        let (code, lines) = w.exit_code().await;
        assert_eq!(code, 130, "{signal:?}: {lines:#?}");
        assert_eq!(
            lines.last().unwrap(),
            "interrupted: stopped waiting for test/podinfo; the rollout itself goes on"
        );
    }
}

/// A server that accepts connections, reads what comes and never answers: a stalled
/// controller, or an API server behind a proxy that lost its upstream.
async fn never_answers() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (url, task)
}

/// Runs `serin` to completion with `env` and returns (exit code, stdout, how long it took).
async fn timed(args: &[&str], env: &[(&str, &str)]) -> (i32, String, Duration) {
    let started = std::time::Instant::now();
    let mut cmd = Command::new(SERIN);
    cmd.args(args)
        .env("SERIN_LOG", "warn")
        .env_remove("SERIN_SERVER")
        .env_remove("KUBECONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("serin finished within 60s")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
    )
}

/// How late after its --timeout a wait may end: about one poll interval (50 ms here) plus the
/// binary's start on a busy machine; far below the 15 s a request could block before.
const LATE: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_3_at_its_timeout_when_the_server_stalls_mid_wait() {
    let b = after_a_promotion();
    b.start_run(&podinfo(), "v2", t(100)).unwrap();
    // The real API, until the test tells it to stop answering.
    let stall = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let flag = stall.clone();
    let app = router(b, DashboardConfig { token: None }).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let stalled = flag.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                if stalled {
                    std::future::pending::<()>().await;
                }
                next.run(req).await
            }
        },
    ));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let server = Server { url, task };
    let started = std::time::Instant::now();
    let mut w = Waiter::start(&server, &["--timeout", "3s"]);
    w.line("phase=Progressing").await;
    stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let (code, lines) = w.exit_code().await;
    let took = started.elapsed();
    assert_eq!(code, 3, "{lines:#?}");
    assert!(took < Duration::from_secs(3) + LATE, "took {took:?}");
    assert_eq!(
        lines.last().unwrap(),
        "timed out after 3s waiting for test/podinfo revision v2: phase Progressing, weight 0% \
         (the last look got no answer in time)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_3_at_its_timeout_when_the_server_never_answers() {
    let (url, _task) = never_answers().await;
    let (code, out, took) = timed(
        &["wait", "podinfo", "--timeout", "2s", "--server", &url],
        &[],
    )
    .await;
    assert_eq!(code, 3, "{out}");
    assert!(took < Duration::from_secs(2) + LATE, "took {took:?}");
    assert_eq!(
        out,
        "timed out after 2s waiting for default/podinfo: no answer from the server in time\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_kubernetes_exits_3_at_its_timeout_when_the_api_server_never_answers() {
    let (url, _task) = never_answers().await;
    let dir = std::env::temp_dir().join(format!("serin-ci-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stalled\n  cluster:\n    server: {url}\n\
             contexts:\n- name: stalled\n  context:\n    cluster: stalled\n    user: nobody\n\
             current-context: stalled\nusers:\n- name: nobody\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let (code, out, took) = timed(
        &["wait", "podinfo", "--kubernetes", "--timeout", "2s"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 3, "{out}");
    assert!(took < Duration::from_secs(2) + LATE, "took {took:?}");
    assert!(
        out.starts_with("timed out after 2s waiting for default/podinfo"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_4_when_the_canary_is_deleted_mid_wait_or_before() {
    let b = after_a_promotion();
    b.start_run(&podinfo(), "v2", t(100)).unwrap();
    let server = serve(b.clone()).await;
    let mut w = Waiter::start(&server, &["--timeout", "60s"]);
    w.line("phase=Progressing").await;
    // The Canary is deleted (a local manifest removed, `kubectl delete canary`) mid-run.
    b.set_phase(
        &podinfo(),
        Phase::Terminating,
        t(110),
        Some("Canary deleted"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, lines) = w.exit_code().await;
    assert_eq!(code, 4, "{lines:#?}");
    assert!(started.elapsed() < Duration::from_secs(10), "not at once");
    // Started after the deletion: the same, at once.
    let (code, _, err) = run(&server, &["wait", "podinfo", "--timeout", "60s"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("test/podinfo is being deleted (phase Terminating)"),
        "{err}"
    );
}

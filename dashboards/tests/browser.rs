//! The dashboard in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`): rows and phases visible, charts present, an action refused without the
//! token and accepted with it, live updates arriving without a reload, and a screenshot saved.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serin_dashboard::Backend;
use serin_dashboard::model::{Action, EntryKind};
use support::{TOKEN, call, key, sample, scenario, serve, t};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    process: Child,
    base: String,
    session: String,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: this test drives a real headless Chromium; install it with \
         `apt-get update && apt-get install -y {package}` (.ci/run installs chromium and chromium-driver)"
    );
}

impl Driver {
    async fn start() -> Driver {
        require(CHROMIUM, "chromium");
        require(CHROMEDRIVER, "chromium-driver");
        let mut process = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // chromedriver prints "... started successfully on port N." once it listens.
        let stdout = process.stdout.take().expect("piped stdout");
        let port = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return None;
                }
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    // Keep draining so chromedriver never blocks on a full pipe.
                    std::thread::spawn(move || {
                        let mut sink = String::new();
                        while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                            sink.clear();
                        }
                    });
                    return digits.parse::<u16>().ok();
                }
            }
        });
        let port = tokio::time::timeout(Duration::from_secs(20), port)
            .await
            .expect("chromedriver announced its port within 20s")
            .unwrap()
            .expect("chromedriver printed its port");
        let profile =
            std::env::temp_dir().join(format!("serin-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile).unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,1400",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let mut driver = Driver {
            process,
            base,
            session: String::new(),
            profile,
        };
        let v = driver.raw("POST", "/session", Some(caps)).await;
        driver.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        driver
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers = [("content-type", "application/json")];
        let (status, text, _) =
            call(method, &format!("{}{path}", self.base), &headers, &body).await;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status < 300, "webdriver {method} {path}: {status} {text}");
        v["value"].clone()
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Polls `script` until it returns a truthy value (the page changes asynchronously).
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64_decode(v.as_str().unwrap());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
        std::fs::write(path, png).unwrap();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let mut n = 0u32;
        for (i, &c) in data.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..data.len().saturating_sub(1)]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_canaries_live_and_can_act_only_with_the_token() {
    let backend = scenario();
    let server = serve(backend.clone(), Some(TOKEN)).await;
    let driver = Driver::start().await;

    // Overview: one row per canary with its phase.
    driver.goto(&server.url("/")).await;
    driver
        .until("SSE connected", "return document.body.dataset.live === '1'")
        .await;
    let rows = driver
        .js("return Array.from(document.querySelectorAll('tr[data-canary]')).map(r => [r.dataset.canary, r.querySelector('.phase').textContent])")
        .await;
    assert_eq!(
        rows,
        json!([["test/backend", "Initialized"], ["test/podinfo", "Failed"]])
    );
    let load_id = driver.js("return window.serinLoadId").await;

    // A rollout starts: the row changes without a reload.
    backend.start_run(&key("backend"), "r8", t(5000)).unwrap();
    backend.set_weight(&key("backend"), 20, t(5001)).unwrap();
    driver
        .until(
            "backend row shows Progressing at 20%",
            "var r = document.querySelector('tr[data-canary=\"test/backend\"]'); return r && r.querySelector('.phase').textContent === 'Progressing' && r.querySelector('.weight').textContent.trim() === '20%' && r.querySelector('.revision').textContent === 'r8'",
        )
        .await;
    assert_eq!(
        driver.js("return window.serinLoadId").await,
        load_id,
        "no reload"
    );

    // Detail: summary, three charts with lines, the timeline with the measured values.
    driver.goto(&server.url("/canaries/test/podinfo")).await;
    driver
        .until("SSE connected", "return document.body.dataset.live === '1'")
        .await;
    assert_eq!(
        driver
            .js("return document.querySelectorAll('svg.chart').length")
            .await,
        json!(3)
    );
    assert!(
        driver
            .js("return document.querySelectorAll('svg.chart polyline.series').length")
            .await
            .as_u64()
            .unwrap()
            >= 3
    );
    let text = driver
        .js("return document.getElementById('content').innerText")
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("request-success-rate: measured 90.5 vs min 99 → fail"),
        "{text}"
    );
    assert!(text.contains("rolled back"), "{text}");
    let load_id = driver.js("return window.serinLoadId").await;

    // A new run with samples arrives live.
    let k = key("podinfo");
    backend.start_run(&k, "v3", t(6000)).unwrap();
    for (i, w) in [10u32, 20, 30].into_iter().enumerate() {
        let at = t(6010 + 60 * i as i64);
        backend.set_weight(&k, w, at).unwrap();
        backend
            .record(
                &k,
                at,
                sample(w, 99.7 + 0.1 * i as f64, 99.9, 42.0 + i as f64, 40.0),
            )
            .unwrap();
    }
    driver
        .until(
            "detail shows run 3 progressing",
            "return document.getElementById('revision').textContent === 'v3' && document.querySelector('#phase .phase').textContent === 'Progressing' && !!document.querySelector('section.run[data-run=\"3\"]')",
        )
        .await;
    assert_eq!(
        driver.js("return window.serinLoadId").await,
        load_id,
        "no reload"
    );

    // Without the token the action is refused, and nothing is recorded.
    driver.click("button[data-action=pause]").await;
    let refused = driver
        .until(
            "pause refused",
            "var o = document.getElementById('action-result'); return o.dataset.status ? [o.dataset.status, o.textContent] : null",
        )
        .await;
    assert_eq!(refused[0], "401");
    assert!(
        refused[1]
            .as_str()
            .unwrap()
            .starts_with("refused (401): missing Authorization"),
        "{refused}"
    );
    assert!(!backend.get(&k).await.unwrap().unwrap().summary.paused);

    // With the token it is accepted, recorded with who, and the page shows the pause live.
    driver.type_into("#token", TOKEN).await;
    driver.type_into("#actor", "browser-test").await;
    driver.click("button[data-action=pause]").await;
    let accepted = driver
        .until(
            "pause accepted",
            "var o = document.getElementById('action-result'); return o.dataset.status === '202' ? o.textContent : null",
        )
        .await;
    assert_eq!(accepted, json!("accepted: pause recorded by browser-test"));
    driver
        .until(
            "summary shows the pause",
            "var s = document.getElementById('summary'); return s && s.innerText.includes('paused')",
        )
        .await;
    let history = backend.history(&k, &Default::default()).await.unwrap();
    let last = history.last().unwrap();
    match &last.kind {
        EntryKind::Command { action, by, .. } => {
            assert_eq!(*action, Action::Pause);
            assert_eq!(by, "browser-test");
        }
        other => panic!("expected the pause command, got {other:?}"),
    }
    driver
        .until(
            "timeline shows the command with who",
            "return Array.from(document.querySelectorAll('tr[data-type=command] .by')).some(e => e.textContent === 'browser-test')",
        )
        .await;

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shot = dir.join("dashboard-detail.png");
    driver.screenshot(&shot).await;
    driver.goto(&server.url("/")).await;
    driver
        .until("SSE connected", "return document.body.dataset.live === '1'")
        .await;
    driver.screenshot(&dir.join("dashboard-overview.png")).await;
    eprintln!("screenshots: {} and dashboard-overview.png", shot.display());
    driver.cmd("DELETE", "", None).await;
}

//! The dashboard in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`): rows and phases visible, charts present, an action refused without the
//! token and accepted with it, live updates arriving without a reload, and a screenshot saved.

use crate::support;
use crate::webdriver;

use std::path::PathBuf;

use serde_json::json;
use serin_dashboard::Backend;
use serin_dashboard::model::{Action, EntryKind};
use support::{TOKEN, key, sample, scenario, serve, t};
use webdriver::Driver;

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
    // The counts by phase follow the change (swapped in with the row, not the whole page).
    driver
        .until(
            "the counts show one Progressing",
            "var c = document.querySelector('#summary a[data-phase=\"Progressing\"] b'); return c && c.textContent === '1' && !document.querySelector('#summary a[data-phase=\"Initialized\"]')",
        )
        .await;

    // The search box narrows the list (server-side), the counts with it.
    driver.type_into("#search", "back").await;
    driver.click("#filter button[type=submit]").await;
    let rows = driver
        .until(
            "only the searched canary",
            "return location.search.indexOf('q=back') >= 0 && document.body.dataset.live === '1' ? Array.from(document.querySelectorAll('tr[data-canary]')).map(r => r.dataset.canary) : null",
        )
        .await;
    assert_eq!(rows, json!(["test/backend"]));
    assert_eq!(
        driver
            .js("return document.querySelector('#summary a[data-phase=\"\"] b').textContent")
            .await,
        json!("1")
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

/// A TCP relay in front of the dashboard that can drop every connection and refuse new ones
/// for a while: a server restart or a network drop as the browser sees it.
struct Relay {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let (o, c) = (open.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the browser sees the connection closed
                }
                c.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay {
            addr,
            open,
            conns,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Drops every connection and refuses new ones until [`Relay::reopen`].
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.conns.lock().unwrap().abort_all();
    }

    fn reopen(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.conns.lock().unwrap().abort_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_lost_its_connection_shows_what_changed_meanwhile_once_back() {
    let backend = scenario();
    let server = serve(backend.clone(), Some(TOKEN)).await;
    let relay = Relay::start(server.addr).await;
    let driver = Driver::start().await;
    let row = |what: &str| {
        format!(
            "var r = document.querySelector('tr[data-canary=\"test/backend\"]'); return r && r.querySelector('.phase').textContent === 'Progressing' && r.querySelector('.weight').textContent.trim() === '{what}'"
        )
    };
    for page in ["/", "/canaries/test/backend"] {
        driver.goto(&relay.url(page)).await;
        driver
            .until("SSE connected", "return document.body.dataset.live === '1'")
            .await;
        let load_id = driver.js("return window.serinLoadId").await;
        // The connection drops (a controller restart, a laptop waking up)...
        relay.cut();
        driver
            .until(
                "the page says it is reconnecting",
                "return document.body.dataset.live === '0'",
            )
            .await;
        // ...and the rollout moves on while the page cannot hear about it.
        let (phase_check, weight) = if page == "/" {
            backend.start_run(&key("backend"), "r8", t(5000)).unwrap();
            backend.set_weight(&key("backend"), 20, t(5001)).unwrap();
            (row("20%"), 20)
        } else {
            backend.set_weight(&key("backend"), 40, t(5002)).unwrap();
            (
                "var w = document.querySelector('#summary .bar i'); return w && w.style.width === '40%'".to_string(),
                40,
            )
        };
        relay.reopen();
        driver
            .until(
                "SSE connected again",
                "return document.body.dataset.live === '1'",
            )
            .await;
        // Nothing else changes now: only a refetch on reconnect can show it.
        driver
            .until(
                &format!("{page} shows the weight {weight}% set while disconnected"),
                &phase_check,
            )
            .await;
        assert_eq!(
            driver.js("return window.serinLoadId").await,
            load_id,
            "no reload"
        );
    }
    drop(driver);
}

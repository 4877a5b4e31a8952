//! The dashboard served by a REAL `serin controller --local`, in a real headless Chromium
//! (Debian's `chromium` + `chromium-driver`, over WebDriver), while real traffic flows through
//! a real `serin-proxy` to real `serin sample-app` processes: the row and its phase, a run
//! arriving live without a reload, the detail page's charts drawn from the samples the
//! controller recorded, the checks' measured values and the judge's evidence, an action refused
//! without the token and accepted with it, and a screenshot saved.

use crate::local_site;
#[path = "../../../../dashboards/tests/dashboard/support/webdriver.rs"]
mod webdriver;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use local_site::{NAME, PORT, Site, TOKEN};
use serde_json::json;
use serin_dashboard::model::{Action, EntryKind, Phase};
use webdriver::Driver;

/// Open-loop load through the proxy to `podinfo:9898` until the returned sender is dropped.
fn load(site: &Site, rate: f64, sent: Arc<AtomicUsize>) -> tokio::sync::oneshot::Sender<()> {
    let url: http::Uri = format!("http://{}/", site.proxy_addr.unwrap())
        .parse()
        .unwrap();
    let mut config = serin_demo::load::LoadConfig::new(url, rate, Duration::from_secs(600));
    config.host = Some(format!("{NAME}:{PORT}"));
    config.timeout = Duration::from_secs(5);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = serin_demo::load::run(
            config,
            async move {
                let _ = stop_rx.await;
            },
            move |_| {
                sent.fetch_add(1, Ordering::Relaxed);
            },
        )
        .await;
    });
    stop_tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_watches_a_real_local_rollout_live_and_acts_only_with_the_token() {
    let mut site = Site::start_with_proxy("browser").await;
    site.start_controller().await;
    site.write_measured_canary();
    site.await_summary("podinfo initialized on v1", |s| {
        s.phase == Phase::Initialized
    })
    .await;
    let sent = Arc::new(AtomicUsize::new(0));
    let _load = load(&site, 40.0, sent.clone());

    let driver = Driver::start().await;
    let dash = site.dashboard.clone();

    // Overview: the Canary's row with its phase, live.
    driver.goto(&format!("{dash}/")).await;
    driver
        .until("SSE connected", "return document.body.dataset.live === '1'")
        .await;
    let rows = driver
        .js("return Array.from(document.querySelectorAll('tr[data-canary]')).map(r => [r.dataset.canary, r.querySelector('.phase').textContent])")
        .await;
    assert_eq!(rows, json!([["default/podinfo", "Initialized"]]));
    let load_id = driver.js("return window.serinLoadId").await;

    // A deploy: the row turns Progressing on v2 without a reload.
    site.rollout("v2").await;
    driver
        .until(
            "the row shows the run of v2",
            "var r = document.querySelector('tr[data-canary=\"default/podinfo\"]'); return r && r.querySelector('.phase').textContent === 'Progressing' && r.querySelector('.revision').textContent === 'v2'",
        )
        .await;
    assert_eq!(
        driver.js("return window.serinLoadId").await,
        load_id,
        "no reload"
    );

    // The controller records samples with traffic on both arms, checks with their values and
    // the judge's evidence.
    let mut seen = (false, false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !(seen.0 && seen.1 && seen.2) {
        assert!(
            std::time::Instant::now() < deadline,
            "no sample/check/judge with traffic in 90s (sent {} requests): {seen:?}\n{}",
            sent.load(Ordering::Relaxed),
            site.logs()
        );
        for e in site.history().await {
            match e.kind {
                EntryKind::Sample {
                    canary, primary, ..
                } if canary.requests > 0 && primary.requests > 0 => {
                    assert!(canary.success_rate.is_some() && primary.success_rate.is_some());
                    seen.0 = true;
                }
                EntryKind::Check {
                    name,
                    value: Some(_),
                    min: Some(min),
                    ..
                } if name == "request-success-rate" => {
                    assert_eq!(min, 99.0);
                    seen.1 = true;
                }
                EntryKind::Judge {
                    evidence,
                    canary_requests,
                    ..
                } if canary_requests > 0 => {
                    assert_eq!(evidence[0].metric, "errorRate");
                    seen.2 = true;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Detail: charts drawn from those samples, the measured values and the judge in the timeline.
    driver
        .goto(&format!("{dash}/canaries/default/{NAME}"))
        .await;
    driver
        .until("SSE connected", "return document.body.dataset.live === '1'")
        .await;
    assert_eq!(
        driver
            .js("return document.querySelectorAll('svg.chart').length")
            .await,
        json!(3)
    );
    driver
        .until(
            "chart lines drawn",
            "return document.querySelectorAll('svg.chart polyline.series').length >= 3",
        )
        .await;
    let text = driver
        .js("return document.getElementById('content').innerText")
        .await;
    let text = text.as_str().unwrap();
    assert!(text.contains("request-success-rate: measured"), "{text}");
    assert!(text.contains("statistical judge"), "{text}");

    // Without the token the pause is refused; with it, accepted, applied and shown live.
    driver.click("button[data-action=pause]").await;
    let refused = driver
        .until(
            "pause refused",
            "var o = document.getElementById('action-result'); return o.dataset.status ? [o.dataset.status, o.textContent] : null",
        )
        .await;
    assert_eq!(refused[0], "401", "{refused}");
    assert!(!site.summary().await.paused);
    driver.type_into("#token", TOKEN).await;
    driver.type_into("#actor", "browser-test").await;
    driver.click("button[data-action=pause]").await;
    driver
        .until(
            "pause accepted",
            "var o = document.getElementById('action-result'); return o.dataset.status === '202'",
        )
        .await;
    driver
        .until(
            "the summary shows the pause, live",
            "var s = document.getElementById('summary'); return s && s.innerText.includes('paused')",
        )
        .await;
    let s = site
        .await_summary("the controller applied the pause", |s| s.paused)
        .await;
    assert_eq!(s.revision_in_flight(), Some("v2"));
    let by = site
        .history()
        .await
        .into_iter()
        .rev()
        .find_map(|e| match e.kind {
            EntryKind::Command {
                action: Action::Pause,
                by,
                ..
            } => Some(by),
            _ => None,
        });
    assert_eq!(by.as_deref(), Some("browser-test"));

    let shot =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("local-dashboard-detail.png");
    driver.screenshot(&shot).await;
    eprintln!("screenshot: {}", shot.display());
    driver.cmd("DELETE", "", None).await;
    drop(driver);
    site.stop().await;
}

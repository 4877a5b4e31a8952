//! Static-file mode: hot reload under load, and bad files kept out.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use http::StatusCode;
use serin_proxy::TableHandle;
use support::*;
use tokio::sync::Notify;

/// Replaces the file atomically (write + rename), as editors and ConfigMap updates do.
fn write(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename config");
}

fn config(a: &Upstream, b: &Upstream, wa: u32, wb: u32, n: u32) -> String {
    format!(
        "# generation {n}\nroutes:\n  - authority: svc\n    rules:\n      - backends:\n          - {{ name: a, weight: {wa}, endpoints: [\"{}\"] }}\n          - {{ name: b, weight: {wb}, endpoints: [\"{}\"] }}\n",
        a.addr, b.addr
    )
}

async fn applied_at_least(t: &TableHandle, n: u64) {
    let mut ev = t.events();
    within(30, ev.wait_for(|e| e.applied >= n))
        .await
        .expect("events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_under_continuous_load_fails_no_request() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let dir = tempdir();
    let path = dir.join("proxy.yaml");
    write(&path, &config(&a, &b, 1, 0, 0));
    let p = proxy().await;
    serin_proxy::reload::reload_once(&path, &p.table()).expect("initial config");
    let watcher = tokio::spawn(serin_proxy::reload::watch(
        path.clone(),
        p.table(),
        Duration::from_millis(10),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let to_b = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, served, to_b, progress) =
            (stop.clone(), served.clone(), to_b.clone(), progress.clone());
        let addr = p.outbound_addr();
        workers.spawn(async move {
            // One keep-alive client per worker: its connections must survive every swap.
            let client = h1_client();
            let mut failures = Vec::new();
            while !stop.load(SeqCst) {
                match try_send(&client, addr, "svc", "GET", "/", &[], bytes::Bytes::new()).await {
                    Ok(got) if got.status == StatusCode::OK => {
                        if got.body == "b" {
                            to_b.fetch_add(1, SeqCst);
                        }
                    }
                    Ok(got) => failures.push(format!("{} {}", got.status, got.body)),
                    Err(e) => failures.push(e.to_string()),
                }
                served.fetch_add(1, SeqCst);
                progress.notify_waiters();
            }
            failures
        });
    }

    for n in 1..=20u32 {
        let (wa, wb) = match n % 3 {
            0 => (1, 0),
            1 => (0, 1),
            _ => (1, 1),
        };
        write(&path, &config(&a, &b, wa, wb, n));
        applied_at_least(&p.table(), u64::from(n) + 1).await;
        // Let some requests through on this table before the next swap.
        let target = served.load(SeqCst) + 20;
        within(30, async {
            while served.load(SeqCst) < target {
                progress.notified().await;
            }
        })
        .await;
    }
    stop.store(true, SeqCst);
    let mut failures = Vec::new();
    while let Some(f) = workers.join_next().await {
        failures.extend(f.expect("worker"));
    }
    watcher.abort();
    assert!(
        failures.is_empty(),
        "failed requests during reloads: {failures:?}"
    );
    assert!(served.load(SeqCst) >= 400);
    assert!(to_b.load(SeqCst) > 0, "swaps took effect");
    assert_eq!(p.table().events().borrow().rejected, 0);
    let m = metrics(&p).await;
    assert!(
        m.contains("serin_proxy_config_reloads_total{result=\"success\"} 21"),
        "{m}"
    );
}

#[tokio::test]
async fn a_bad_file_is_rejected_with_key_and_line_and_the_last_good_table_stays() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let dir = tempdir();
    let path = dir.join("proxy.yaml");
    write(&path, &config(&a, &b, 1, 0, 0));
    let p = proxy().await;
    serin_proxy::reload::reload_once(&path, &p.table()).expect("initial config");
    let watcher = tokio::spawn(serin_proxy::reload::watch(
        path.clone(),
        p.table(),
        Duration::from_millis(10),
    ));
    let mut events = p.table().events();

    // A misspelt key: a decode error naming key and line.
    write(
        &path,
        &config(&a, &b, 0, 1, 1).replace("weight: 0", "wieght: 0"),
    );
    let e = within(30, events.wait_for(|e| e.rejected >= 1))
        .await
        .expect("events")
        .clone();
    let err = e.last_error.expect("error kept");
    assert!(
        err.contains("routes[0].rules[0].backends[0]: unknown field `wieght`"),
        "{err}"
    );
    assert!(err.contains("line 6"), "{err}");

    // A bad regex: a validation error naming key and line.
    write(
        &path,
        &format!(
            "routes:\n  - authority: svc\n    rules:\n      - matches:\n          - path: {{ type: RegularExpression, value: \"/(\" }}\n        backends: [{{ name: b, endpoints: [\"{}\"] }}]\n",
            b.addr
        ),
    );
    let e = within(30, events.wait_for(|e| e.rejected >= 2))
        .await
        .expect("events")
        .clone();
    let err = e.last_error.expect("error kept");
    assert!(
        err.contains("routes[0].rules[0].matches[0].path.value (line 5): regular expression"),
        "{err}"
    );

    // The first table is still in force.
    let c = h1_client();
    for _ in 0..10 {
        assert_eq!(get(&c, p.outbound_addr(), "svc", "/", &[]).await.body, "a");
    }
    let m = metrics(&p).await;
    assert!(
        m.contains("serin_proxy_config_reloads_total{result=\"failure\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("serin_proxy_config_last_reload_success 0"),
        "{m}"
    );

    // Fixing the file brings the new table in.
    write(&path, &config(&a, &b, 0, 1, 2));
    within(30, events.wait_for(|e| e.applied >= 2))
        .await
        .expect("events");
    assert_eq!(get(&c, p.outbound_addr(), "svc", "/", &[]).await.body, "b");
    assert!(
        metrics(&p)
            .await
            .contains("serin_proxy_config_last_reload_success 1")
    );
    watcher.abort();
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "serin-proxy-test-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[tokio::test]
async fn an_empty_or_routeless_file_is_rejected_and_the_last_good_table_stays() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let dir = tempdir();
    let path = dir.join("proxy.yaml");
    write(&path, &config(&a, &b, 1, 0, 0));
    let p = proxy().await;
    let reload = || serin_proxy::reload::reload_once(&path, &p.table());
    reload().expect("initial config");

    // What `cat > file` leaves for a moment: an empty file, written in place.
    std::fs::write(&path, "").expect("truncate");
    let err = reload().expect_err("an empty file is rejected");
    assert!(err.to_string().contains("the file is empty"), "{err}");
    // Half-written: the listener settings are there, the routes not yet.
    std::fs::write(&path, "# generation 1\nadmin:\n  listen: 127.0.0.1:0\n").expect("write");
    let err = reload().expect_err("a file without routes is rejected");
    assert!(err.to_string().contains("routes: missing"), "{err}");
    assert_eq!(p.table().events().borrow().rejected, 2);
    let got = get(&h1_client(), p.outbound_addr(), "svc", "/", &[]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (StatusCode::OK, "a"),
        "last good table"
    );
    let m = metrics(&p).await;
    assert_eq!(
        sample(&m, &["serin_proxy_config_last_reload_success"]),
        0.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &["serin_proxy_config_reloads_total{", "result=\"failure\""]
        ),
        2.0
    );

    // Said explicitly, no routes is a table like any other.
    write(&path, "routes: []\n");
    reload().expect("explicitly empty");
    let got = get(&h1_client(), p.outbound_addr(), "svc", "/", &[]).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
}

//! SIGHUP reloads the configuration file. Its own test binary (process), because the signal
//! goes to every watcher in the process.

#[path = "proxy/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

fn write(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename config");
}

fn config(a: &Upstream, b: &Upstream, wa: u32, wb: u32) -> String {
    format!(
        "routes:\n  - authority: svc\n    rules:\n      - backends:\n          - {{ name: a, weight: {wa}, endpoints: [\"{}\"] }}\n          - {{ name: b, weight: {wb}, endpoints: [\"{}\"] }}\n",
        a.addr, b.addr
    )
}

#[tokio::test]
async fn sighup_reloads_the_file() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let dir = tempdir();
    let path = dir.join("proxy.yaml");
    write(&path, &config(&a, &b, 1, 0));
    let p = proxy().await;
    serin_proxy::reload::reload_once(&path, &p.table()).expect("initial config");
    // An hour between checks: only the signal can trigger this reload.
    let watch = serin_proxy::reload::watch(path.clone(), p.table(), Duration::from_secs(3600));
    let watcher = tokio::spawn(watch);
    let mut events = p.table().events();
    write(&path, &config(&a, &b, 0, 1));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    within(30, events.wait_for(|e| e.applied >= 2))
        .await
        .expect("events");
    assert_eq!(
        get(&h1_client(), p.outbound_addr(), "svc", "/", &[])
            .await
            .body,
        "b"
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

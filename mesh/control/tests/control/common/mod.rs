//! What the control plane's integration tests share: a fresh directory for the local source, a
//! route set (an SMI TrafficSplit of `web` over two static backends), and a control plane
//! started on it.

// Each test crate uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serin_mesh_control::translate::Options;
use serin_mesh_control::{Config, Running, SourceConfig};

/// A fresh, empty directory named after the test crate (`tag`) and this process.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "serin-cp-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// `web` split 100/0 between `web-v1` (127.0.0.1:1001) and `web-v2` (127.0.0.1:1002).
pub const ROUTES: &str = r#"
apiVersion: serin.dev/v1beta1
kind: StaticEndpoints
metadata: {name: web-v1}
spec: {endpoints: ["127.0.0.1:1001"]}
---
apiVersion: serin.dev/v1beta1
kind: StaticEndpoints
metadata: {name: web-v2}
spec: {endpoints: ["127.0.0.1:1002"]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web}
spec:
  service: web
  backends: [{service: web-v1, weight: 100}, {service: web-v2, weight: 0}]
"#;

/// A control plane on 127.0.0.1:0 reading `dir`, re-reading it every `poll`.
pub async fn start_local(dir: &Path, poll: Duration) -> anyhow::Result<Running> {
    start_local_with(dir, poll, Options::default()).await
}

/// [`start_local`] with translation `options` (e.g. another cluster domain).
pub async fn start_local_with(
    dir: &Path,
    poll: Duration,
    options: Options,
) -> anyhow::Result<Running> {
    Ok(serin_mesh_control::start(Config {
        listen: "127.0.0.1:0".parse()?,
        source: SourceConfig::Local {
            dir: dir.to_path_buf(),
            poll,
        },
        options,
    })
    .await?)
}

//! Static mode: keep the route table in step with the configuration file.
//!
//! The file is re-read when its content changes and then stays the same for one more check
//! (checked every `interval`; polling also catches editors that replace the file and
//! Kubernetes ConfigMap symlink swaps, which a watch on the old inode would miss) and on
//! SIGHUP. An empty file, or one without `routes:`, is rejected (what a file being written in
//! place looks like); replace the file atomically (write a temporary file, then rename it). A file that fails to decode or validate
//! is rejected through [`TableHandle::reject`]/[`TableHandle::apply`]: logged with key and line,
//! counted, and the last good table stays in force.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, ConfigError};
use crate::table::TableHandle;

/// Loads the file once and applies its table. Listener and label changes in the file need a
/// restart; they are ignored here.
pub fn reload_once(path: &Path, table: &TableHandle) -> Result<(), ConfigError> {
    let loaded = config::load(path).and_then(|c| {
        if c.routes_given {
            Ok(c)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: vec![config::Problem {
                    key: "routes".into(),
                    line: None,
                    message: "missing (a file still being written?); write `routes: []` for a table with no routes".into(),
                }],
            })
        }
    });
    let loaded = match loaded {
        Ok(c) => c,
        Err(e) => {
            table.reject(&e.to_string());
            return Err(e);
        }
    };
    let mut t = loaded.table;
    if t.version == 0 {
        // No `version:` in the file: number the snapshots ourselves so /routes shows progress.
        t.version = table.events().borrow().applied + 1;
    }
    // The file passed validation already, so apply can only fail on a compile bug; either
    // way apply() records the rejection itself.
    table.apply(t).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems: vec![config::Problem {
            key: "routes".into(),
            line: None,
            message: e.to_string(),
        }],
    })
}

/// Watches `path` until the returned future is dropped: reloads on content change and on
/// SIGHUP. The SIGHUP handler is installed when this function is called (inside a Tokio
/// runtime), and the file's content noted, before the future is first polled, so neither a
/// signal nor a change made right after this call can be lost.
pub fn watch(
    path: PathBuf,
    table: TableHandle,
    interval: Duration,
) -> impl std::future::Future<Output = ()> + Send {
    let mut hup = sighup();
    // Taken now, not at first poll: a change made right after this call must count as a change.
    let mut last = std::fs::read(&path).ok();
    // A changed content is applied once it reads the same on two checks in a row: a file
    // written in place (`cat > file`, a slow copy) is caught between its writes at most once,
    // and then not applied. A SIGHUP applies at once.
    let mut pending: Option<Option<Vec<u8>>> = None;
    async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                _ = recv(&mut hup) => true,
            };
            let now = std::fs::read(&path).ok();
            if !forced && now == last {
                pending = None;
                continue;
            }
            if !forced && pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
            pending = None;
            last = now;
            tracing::info!(path = %path.display(), on_signal = forced, "reloading configuration");
            // Errors are already logged and counted by reject()/apply().
            let _ = reload_once(&path, &table);
        }
    }
}

type Hup = Option<tokio::signal::unix::Signal>;

fn sighup() -> Hup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file change only");
            None
        }
    }
}

async fn recv(h: &mut Hup) {
    match h {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

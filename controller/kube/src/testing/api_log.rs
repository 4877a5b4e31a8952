//! Every call a fake API server answers, appended to the file named by `SERIN_API_CALL_LOG`
//! when it is set (tests/kubernetes/rbac.rs collects them to check the install's RBAC rules).
//! Shared by every crate's mocked-API scenarios (mesh/control includes this file through
//! `#[path]`, so it depends on std only).

#![allow(dead_code)]

use std::io::Write;

/// Appends `METHOD PATH?QUERY` as one line (one `write` on an append-only file, so lines of
/// tests running in parallel never interleave).
pub fn record(method: &str, path: &str, query: &str) {
    let Some(file) = std::env::var_os("SERIN_API_CALL_LOG") else {
        return;
    };
    let line = format!("{method} {path}?{query}\n");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .expect("SERIN_API_CALL_LOG is writable");
    f.write_all(line.as_bytes())
        .expect("SERIN_API_CALL_LOG is writable");
}

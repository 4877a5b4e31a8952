//! How any command reports a mistake: one plain `error:` line naming the flag or field, the
//! same whatever the environment.

use std::process::Command;

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

#[test]
fn a_flag_error_is_one_plain_line_even_with_rust_backtrace_set() {
    // CI images and Rust developers often export RUST_BACKTRACE=1; a mistyped flag must still
    // read as a message, not as a stack dump.
    for args in [
        &["install", "--namespace", "Not_A_Name"][..],
        &["rollout", "podinfo", "--revision", "", "--dir", "."][..],
        &[
            "rollout",
            "podinfo",
            "--revision",
            "v2",
            "--dir",
            "/nonexistent-serin-dir",
        ][..],
        &[
            "load",
            "http://127.0.0.1:9/",
            "--rate",
            "0",
            "--duration",
            "1s",
        ][..],
    ] {
        let out = Command::new(SERIN)
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("serin runs");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("backtrace"), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        // No placeholder where a field path would go (`--revision: -: must not be empty`).
        assert!(!err.contains(": -:"), "{args:?}: {err}");
    }
}

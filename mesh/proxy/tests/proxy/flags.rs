//! Bad flag values and flag combinations: the binary exits at once with one line naming the
//! flag and what is accepted, never a panic, a silent default or a flag silently ignored.

use crate::support::exits_by_itself;

use std::path::PathBuf;
use std::process::Command;

/// A config file on ephemeral ports with no routes.
fn config_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("serin-flags-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("proxy.yaml");
    std::fs::write(
        &path,
        "outbound:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nroutes: []\n",
    )
    .expect("write config");
    path
}

/// Runs serin-proxy with `args`; it must exit by itself (a proxy that starts is killed and the
/// test fails). Returns the exit code and stderr.
fn refused(args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_serin-proxy"));
    cmd.args(args).env("NO_COLOR", "1");
    let (status, stderr) = exits_by_itself(cmd, &format!("serin-proxy {args:?}"));
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_zero_reload_interval_is_refused_naming_the_flag() {
    let cfg = config_file("reload");
    let cfg = cfg.to_str().expect("utf-8 path");
    let (code, err) = refused(&["--config", cfg, "--reload-interval", "0s"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--reload-interval"), "{err}");
    assert!(err.contains("above 0"), "{err}");
}

#[test]
fn zero_worker_threads_are_refused_naming_the_flag() {
    let (code, err) = refused(&[
        "--outbound",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--threads",
        "0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--threads"), "{err}");
}

#[test]
fn listener_flags_next_to_a_config_file_are_refused_not_ignored() {
    let cfg = config_file("listeners");
    let cfg = cfg.to_str().expect("utf-8 path");
    for flag in ["--outbound", "--admin"] {
        let (code, err) = refused(&["--config", cfg, flag, "127.0.0.1:0"]);
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(
            err.contains(flag) && err.contains("--config"),
            "{flag}: {err}"
        );
    }
    let (code, err) = refused(&[
        "--config",
        cfg,
        "--inbound",
        "127.0.0.1:0",
        "--inbound-forward",
        "127.0.0.1:9",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--inbound") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn ipv6_capture_flags_take_auto_on_or_off_and_only_where_they_apply() {
    let (code, err) = refused(&["--transparent", "--transparent-ipv6", "yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--transparent-ipv6") && err.contains("auto, on, off"),
        "{err}"
    );
    // Without --transparent there are no IPv6 twins to ask for: refused, not ignored.
    let (code, err) = refused(&[
        "--outbound",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--transparent-ipv6",
        "on",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--transparent-ipv6") && err.contains("--transparent"),
        "{err}"
    );
    let (code, err) = refused(&["init", "--dry-run", "--ipv6", "maybe"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--ipv6") && err.contains("auto, on, off"),
        "{err}"
    );
}

#[test]
fn timing_flags_refuse_zero_and_stand_aside_for_a_config_file() {
    for flag in [
        "--detect-timeout",
        "--shutdown-timeout",
        "--connect-timeout",
        "--body-idle-timeout",
        "--h2-idle-timeout",
    ] {
        let (code, err) = refused(&[
            "--outbound",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            flag,
            "0s",
        ]);
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(
            err.contains(flag) && err.contains("above 0"),
            "{flag}: {err}"
        );
    }
    let cfg = config_file("timings");
    let cfg = cfg.to_str().expect("utf-8 path");
    let (code, err) = refused(&["--config", cfg, "--body-idle-timeout", "5m"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--body-idle-timeout") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn identity_labels_the_proxy_sets_itself_are_refused_naming_the_label() {
    // Twice the same label name in a series fails the whole Prometheus scrape.
    for label in ["direction=x", "le=5", "dst_service=x", "__name__=x"] {
        let (code, err) = refused(&[
            "--outbound",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--label",
            label,
        ]);
        assert_eq!(code, 2, "{label}: {err}");
        assert!(
            err.contains("--label") && err.contains(label),
            "{label}: {err}"
        );
    }
    let dir = config_file("labels");
    let path = dir.with_file_name("labels.yaml");
    std::fs::write(
        &path,
        "outbound:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nlabels:\n  status_code: x\nroutes: []\n",
    )
    .expect("write config");
    let (code, err) = refused(&["--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("labels.status_code (line 6)") && err.contains("sets"),
        "{err}"
    );
}

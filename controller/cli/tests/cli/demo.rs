//! `serin demo` end to end: the real binary, real child processes, real HTTP on loopback.
//!
//! The demo's sample-app processes run with their working directory inside the demo's
//! directory, so "no process left" is checked by looking for any live process whose cwd is
//! there.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn serin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_serin"))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("serin-demo-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Live (not zombie) processes whose working directory is under `dir`.
fn processes_in(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) else {
            continue;
        };
        if !cwd.starts_with(dir) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        if state.starts_with('Z') || state.starts_with('X') {
            continue;
        }
        let cmd = std::fs::read_to_string(e.path().join("cmdline"))
            .unwrap_or_default()
            .replace('\0', " ");
        found.push(format!("{pid}: {cmd}"));
    }
    found
}

#[test]
fn the_demo_rolls_back_the_bad_release_and_promotes_the_good_one() {
    let dir = fresh_dir("full");
    let started = Instant::now();
    let out = serin()
        // Four times the default rate at a quarter of the interval: the same evidence per step,
        // sooner.
        .args(["demo", "--interval", "500ms", "--rate", "400", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(dir.join("serin.log")).unwrap_or_default();
    let tail: String = log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nlog tail:\n{tail}"
    );
    for expected in [
        "dashboard http://127.0.0.1:",
        "==> release v2 (10% of its requests fail); expected: the judge rolls it back",
        "ROLLED BACK",
        "as expected: v2: rolled back at canary",
        "by the judge (canary error rate",
        "==> release v3 (healthy); expected: promoted",
        "PROMOTED",
        "as expected: v3: promoted after the canary reached 60%",
        "Summary",
        "  ok    v1: primary, serving all traffic",
        "  result: as expected",
        "stopped: no process left running",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    // Each check shows its measured value against its threshold.
    assert!(stdout.contains("request-success-rate   pass"), "{stdout}");
    assert!(stdout.contains("(threshold >= 80%)"), "{stdout}");
    // The latency guard is 500 ms, or wider on a machine where v1 itself answers slowly
    // (measured in the same run, printed before the first release), and every request-duration
    // check is held to the guard the demo printed.
    let guard: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split_once("latency guard: p99 <= ")?
                .1
                .split_once(" ms")
                .map(|(n, _)| n.parse().ok())
        })
        .flatten()
        .unwrap_or_else(|| panic!("no latency guard line in:\n{stdout}"));
    assert!(guard >= 500.0, "{stdout}");
    assert!(
        stdout.contains(&format!("(threshold <= {guard} ms)")),
        "{stdout}"
    );
    // The bad release never went past the analysis weights.
    assert!(!stdout.contains("v2   Succeeded"), "{stdout}");
    // Zero failed requests while the healthy release rolled out.
    assert!(stdout.contains("v3 done: "), "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    assert_eq!(processes_in(&dir), Vec::<String>::new());
    eprintln!("serin demo took {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `serin demo` in `dir` whose bad release's analysis runs (a primary and a canary process
/// are up): the child, its stdout lines as they come, and what it printed so far.
fn demo_in_v2_analysis(dir: &Path) -> (std::process::Child, mpsc::Receiver<String>, String) {
    let mut child = serin()
        .args(["demo", "--interval", "1s", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    let mut releasing_v2 = false;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo never reached v2's analysis:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
        releasing_v2 |= line.contains("==> release v2");
        // "advanced" (not the run's first Progressing line): the canary process is up and
        // taking traffic by then.
        if releasing_v2 && line.contains("v2   Progressing") && line.contains("advanced") {
            break;
        }
    }
    let before = processes_in(dir);
    assert!(
        before.len() >= 2,
        "expected the primary and the canary to run: {before:?}\n{seen}"
    );
    (child, rx, seen)
}

#[test]
fn a_killed_demo_leaves_no_process_behind() {
    // SIGKILL (an IDE's stop button, an OOM kill, `kill -9`): no clean-up runs in the demo.
    let dir = fresh_dir("sigkill");
    let (mut child, _rx, seen) = demo_in_v2_analysis(&dir);
    child.kill().unwrap();
    child.wait().unwrap();
    // The sample apps notice their parent is gone and drain (--drain 2s) and exit.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_in(&dir);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after the demo was killed: {left:?}\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_mid_demo_stops_every_child_process() {
    let dir = fresh_dir("sigint");
    let (mut child, rx, seen) = demo_in_v2_analysis(&dir);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            Instant::now() < deadline,
            "serin demo did not exit within 60s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(code, Some(130), "{seen}{}", rest.join("\n"));
    assert!(
        rest.iter()
            .any(|l| l.contains("interrupted: stopping every process")),
        "{rest:?}"
    );
    assert_eq!(processes_in(&dir), Vec::<String>::new(), "{rest:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_name_the_flag_and_what_is_accepted() {
    let out = serin()
        .args(["demo", "--interval", "5ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--interval") && stderr.contains("200ms to 60s"),
        "{stderr}"
    );

    let out = serin()
        .args(["demo", "--bad-error-rate", "150%"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bad-error-rate"));

    let dir = fresh_dir("used");
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let out = serin().args(["demo", "--dir"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--dir") && stderr.contains("earlier demo"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

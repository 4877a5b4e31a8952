//! The cross-check of the closed-loop path with wrk (Debian `wrk`): one thread, 32
//! connections, the proxies taking turns in short runs, in a new random order every round.
//! Each figure is the median over the rounds of that run's requests per second and p99.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// One wrk run's requests per second and p99 latency.
pub struct Run {
    pub rps: f64,
    pub p99_us: u64,
}

/// Runs `wrk -t1 -c32` against `addr` for `secs` seconds (pinned to CPU 1 with `pin`).
pub fn run(wrk: &std::path::Path, addr: SocketAddr, secs: u64, pin: bool) -> anyhow::Result<Run> {
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(wrk);
        c
    } else {
        Command::new(wrk)
    };
    let out = cmd
        .args(["-t1", "-c32", "--latency", "-H", "Host: podinfo"])
        .arg(format!("-d{secs}s"))
        .arg(format!("http://{addr}/"))
        .stderr(Stdio::null())
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}");
    }
    parse(&text)
}

/// Reads `Requests/sec:` and the `99%` line of `--latency` output.
fn parse(text: &str) -> anyhow::Result<Run> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("no Requests/sec in wrk's output")?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_us(v.trim()))
        .context("no 99% latency in wrk's output")?;
    if text.contains("Non-2xx or 3xx responses") {
        bail!("wrk saw error responses: {text}");
    }
    Ok(Run { rps, p99_us: p99 })
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`.
fn duration_us(v: &str) -> Option<u64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let us = match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        _ => return None,
    };
    Some(Duration::from_secs_f64(us / 1e6).as_micros() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_output_is_read() {
        let out = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n  Latency Distribution\n     50%  610.00us\n     75%  700.00us\n     90%    1.02ms\n     99%    2.50ms\n  9000 requests in 1.00s, 1.00MB read\nRequests/sec:   8999.52\nTransfer/sec:      1.00MB\n";
        let r = super::parse(out).expect("parsed");
        assert_eq!(r.p99_us, 2500);
        assert!((r.rps - 8999.52).abs() < 1e-6);
    }
}

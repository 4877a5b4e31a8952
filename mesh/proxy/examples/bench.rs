//! Loopback benchmark: direct vs serin-proxy vs nginx vs HAProxy, in one run.
//!
//! `cargo run --release -p serin-proxy --example bench`
//!
//! - Upstream: a trivial HTTP/1.1 server pair (primary and canary) in this process.
//! - Paths: `direct` (to the primary), `serin` (the real `serin-proxy` binary, 90/10 split,
//!   metrics on), `nginx` and `haproxy` (Debian `nginx-light` / `haproxy`, weighted 90/10
//!   upstreams with keep-alive; skipped with a note when not installed). Each proxy runs as its
//!   own process pinned to CPU 0 with `taskset`; this process (load generator and upstreams) is
//!   pinned to CPU 1 when the machine has two or more CPUs.
//! - `serin-transparent` (root only, else skipped with a note): the same proxy and route in a
//!   network namespace the bench makes, as in an injected pod: `serin-proxy init` installs the
//!   capture rules, the proxy runs `--transparent` as UID 2102, and the client's connections
//!   (made inside the namespace) go to a Service address that only the rules send to the proxy.
//!   The upstreams are the same server threads, listening on the namespace's loopback too. Its
//!   CPU per request is compared with the explicit path's in the note
//!   `# path=serin-transparent cpu_per_request_vs_serin=+x.x%` (goal: at most +5%). It takes
//!   part in the fixed rates and the maximum throughput only. `SERIN_BENCH_UPSTREAMS=pod` puts
//!   both serin paths in pods of their own that reach the upstreams in a third pod over veth
//!   pairs (see `PodNet`), as sidecars reach other pods; `SERIN_BENCH_INIT_ARGS` passes flags
//!   to `serin-proxy init` (e.g. `--track-upstream`).
//! - Load: open loop at fixed rates; each connection follows its own schedule and latency is
//!   measured from the *intended* send time, so a stalled response delays (and is charged for)
//!   every request queued behind it. Then a closed-loop run for maximum throughput, driven by
//!   one event-loop thread (so the load generator costs far less per request than a proxy,
//!   and the proxy's CPU, not the generator's, sets the figure).
//! - Rounds: the CPU speed of a shared VM drifts over minutes and its vCPUs stall for
//!   milliseconds, so the paths are measured in interleaved rounds: at fixed rates the paths
//!   take turns in 10 ms slots (each once per cycle, in a new random order every cycle), for
//!   maximum throughput likewise in 100 ms slots. Each latency figure and `max_rps` is the median
//!   over the rounds (pooled percentiles, every round's p99 and a paired count of rounds
//!   follow as notes); `cpu_us_per_request` (CPU time of the proxy process per request over
//!   all rounds) is the figure least moved by the drift.
//!
//! `SERIN_BENCH_PROXY=/path/to/serin-proxy` measures that binary instead of this tree's;
//! `SERIN_BENCH_PATHS=serin,nginx` only the paths named; `SERIN_BENCH_RATES=1000,5000` and
//! `SERIN_BENCH_ROUNDS=15` other fixed rates (`0`: none) and rounds; `SERIN_BENCH_UNPIN_FIXED=1`
//! lets the proxies use either CPU during the fixed rates (see mesh/proxy/README.md).
//!
//! `SERIN_BENCH_IDLE=10000` idle keep-alive connections for the memory line (`0`: skip),
//! `SERIN_BENCH_IDLE_SETTLE_SECS=60` how long after they close memory is read again.
//!
//! - h2 head-of-line: an h2c upstream in this process; a client that asks for 3 × 10 MB and
//!   never reads holds the endpoint while a normal h2c client measures its latency
//!   ([`h2hol`]); serin and HAProxy (h2c both ways), and `direct` to the upstream. nginx 1.22
//!   speaks only HTTP/1.1 to upstreams (h2 only through `grpc_pass`), so it has no such line.
//! - wrk cross-check: when Debian's `wrk` is installed, `wrk -t1 -c32` against each path in
//!   short runs, the paths in a new random order every round ([`wrk`]).
//!
//! `SERIN_BENCH_ONLY=idle,fixed,max,h2hol,wrk` runs only the parts named (the quick way to the
//! new lines: `SERIN_BENCH_ONLY=h2hol,max,wrk SERIN_BENCH_ROUNDS=5`); `SERIN_BENCH_WRK_ROUNDS=5`
//! and `SERIN_BENCH_WRK_SECS=2` size the wrk runs.
//!
//! Output: one line per proxy `path=<p> idle_conns=<n> rss_mib=<n> rss_after_close_mib=<n>`,
//! one line per path and rate,
//! `path=<p> rate=<rps> p50_us=<n> p99_us=<n> p999_us=<n> rss_mib=<n>`,
//! `path=<p> max_rps=<n> p99_us=<n>` (the closed loop: one thread, 32 connections per path;
//! p99 is the median over the rounds of each round's p99),
//! `path=<p> h2_hol stalled_streams=<0|3> p50_us=<n> p99_us=<n> max_us=<n> requests=<n> errors=<n>`
//! and `path=<p> wrk_rps=<n> wrk_p99_us=<n>`. Lines starting with `#` are notes (skips,
//! machine load).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

// The example's own modules, in examples/bench/ (no main.rs there: not an example of its own).
#[path = "bench/h2hol.rs"]
mod h2hol;
#[path = "bench/wrk.rs"]
mod wrk;

const RATES: [u64; 3] = [1_000, 2_000, 5_000];
/// Interleaved rounds over all paths (odd, so the median round is one round). Many short
/// rounds rather than a few long ones: a noisy minute of the VM then spoils a few rounds of
/// every path instead of most of one path's.
const ROUNDS: usize = 15;
/// Per path before each round's maximum-throughput measurement (new connections, warm pools).
const WARMUP: Duration = Duration::from_millis(300);
/// Per round, path and rate.
const MEASURE: Duration = Duration::from_millis(1500);
/// At fixed rates the paths take turns in slots this long (see `open_loop`). Shorter than the
/// host's noisy stretches, so they fall on every path; 100 ms slots left a stretch to one or two.
const SLOT: Duration = Duration::from_millis(10);
/// Per round and path, for the closed-loop throughput run.
const MAX_MEASURE: Duration = Duration::from_secs(2);
/// In the closed-loop run the paths take turns in slots this long (see `closed_loop`).
const MAX_SLOT: Duration = Duration::from_millis(100);
/// Not counted at the start of each closed-loop slot: the last path's requests still finishing.
const MAX_SETTLE: Duration = Duration::from_millis(5);
/// Idle keep-alive connections held open for the memory line (`SERIN_BENCH_IDLE`).
const IDLE_CONNS: usize = 10_000;
/// How long after the idle connections close the proxy's memory is read again (the goal:
/// back within 20 % of its level before the storm a minute after it).
const IDLE_SETTLE: Duration = Duration::from_secs(60);
/// The parts `SERIN_BENCH_ONLY` may name.
const PARTS: [&str; 5] = ["idle", "fixed", "max", "h2hol", "wrk"];
const RATE_CONNECTIONS: usize = 16;
const MAX_CONNECTIONS: usize = 32;

fn main() -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cpus >= 2 && which("taskset").is_some();
    if pin {
        // This process (load generator + upstreams) on CPU 1; proxies get CPU 0 to themselves.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    } else {
        println!("# note: taskset or a second CPU missing; nothing is pinned");
    }
    println!("# load average before: {}", loadavg());

    let dir = std::env::temp_dir().join(format!("serin-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Which parts run (`SERIN_BENCH_ONLY`; all by default).
    let parts: Vec<String> = match std::env::var("SERIN_BENCH_ONLY") {
        Ok(v) => {
            let parts: Vec<String> = v.split(',').map(|p| p.trim().to_string()).collect();
            for p in &parts {
                if !PARTS.contains(&p.as_str()) {
                    bail!("SERIN_BENCH_ONLY: unknown part {p:?}; expected some of {PARTS:?}");
                }
            }
            println!("# note: only the parts {parts:?} (SERIN_BENCH_ONLY)");
            parts
        }
        Err(_) => PARTS.iter().map(|p| p.to_string()).collect(),
    };
    let part = |name: &str| parts.iter().any(|p| p == name);
    // The transparent path's pod: made before the upstreams, which listen in it too. Declared
    // before `paths`, so it is removed after the proxy in it has been stopped.
    let capture = match CaptureNs::create() {
        Ok(ns) => Some(ns),
        Err(e) => {
            println!("# note: path=serin-transparent skipped: {e:#}");
            None
        }
    };
    // Where the serin paths' upstreams are (see `PodNet`).
    let pods = match std::env::var("SERIN_BENCH_UPSTREAMS").as_deref() {
        Err(_) | Ok("loopback") => None,
        Ok("pod") => {
            let capture = capture
                .as_ref()
                .context("SERIN_BENCH_UPSTREAMS=pod needs the capture namespace (root)")?;
            if parts.iter().any(|p| p != "fixed" && p != "max") {
                bail!(
                    "SERIN_BENCH_UPSTREAMS=pod measures the fixed rates and maximum throughput only: set SERIN_BENCH_ONLY=max (or fixed,max)"
                );
            }
            println!(
                "# note: SERIN_BENCH_UPSTREAMS=pod: serin and serin-transparent each run in a pod of their own and reach the upstreams' pod over veth; the other paths are left out (their upstreams are on loopback)"
            );
            Some(PodNet::create(capture)?)
        }
        Ok(other) => bail!("SERIN_BENCH_UPSTREAMS: {other:?} is not one of loopback, pod"),
    };
    // Each upstream listens on loopback here and, for the serin paths, in their pods: the
    // capture namespace's loopback, or (pod upstreams) the upstream pod's two links.
    let pod_listeners = || -> anyhow::Result<Vec<TcpListener>> {
        Ok(match (&pods, &capture) {
            (Some(p), _) => vec![
                p.upstream
                    .listen_on(&format!("{}:0", PodNet::FOR_TRANSPARENT))?,
                p.upstream
                    .listen_on(&format!("{}:0", PodNet::FOR_EXPLICIT))?,
            ],
            (None, Some(c)) => vec![c.listen()?],
            (None, None) => Vec::new(),
        })
    };
    let primaries = spawn_upstream("primary", pod_listeners()?)?;
    let canaries = spawn_upstream("canary", pod_listeners()?)?;
    let (primary, canary) = (primaries[0], canaries[0]);
    let (primary_in_pod, canary_in_pod) = (primaries.get(1).copied(), canaries.get(1).copied());
    // Where a path's client connects (a path in a pod: from inside its namespace).
    let target_of = |name: &str, addr: SocketAddr| Target {
        addr,
        netns: match name {
            TRANSPARENT => capture.as_ref().map(|c| c.file.clone()),
            "serin" => pods.as_ref().map(|p| p.explicit.file.clone()),
            _ => None,
        },
    };
    let h2_upstream = h2hol::spawn_upstream()?;

    let mut paths: Vec<(&str, Option<Proc>, SocketAddr)> = vec![("direct", None, primary)];
    // Where each path takes h2c to the h2c upstream (for the head-of-line line).
    let mut h2_paths: Vec<(&str, SocketAddr, &str)> = vec![("direct", h2_upstream, "h2up")];
    let started = match &pods {
        None => start_serin(&dir, primary, canary, h2_upstream, pin),
        Some(p) => start_serin_in_pod(&p.explicit, &dir, primaries[2], canaries[2], pin),
    };
    match started {
        Ok((p, a)) => {
            paths.push(("serin", Some(p), a));
            h2_paths.push(("serin", a, "h2up"));
        }
        Err(e) => println!("# note: serin-proxy could not start: {e:#}"),
    }
    if let (Some(ns), Some(primary), Some(canary)) = (&capture, primary_in_pod, canary_in_pod) {
        match start_serin_transparent(ns, &dir, primary, canary, pin) {
            Ok((p, t)) => paths.push((TRANSPARENT, Some(p), t.addr)),
            Err(e) => println!("# note: path=serin-transparent skipped: {e:#}"),
        }
    }
    match which("nginx") {
        Some(bin) => match start_nginx(&bin, &dir, primary, canary, pin) {
            Ok((p, a)) => paths.push(("nginx", Some(p), a)),
            Err(e) => println!("# note: nginx skipped: {e:#}"),
        },
        None => println!("# note: nginx skipped: not installed (apt-get install -y nginx-light)"),
    }
    let mut haproxy_maxconn = None;
    match which("haproxy") {
        Some(bin) => match start_haproxy(&bin, &dir, primary, canary, h2_upstream, pin) {
            Ok((p, a, h2, maxconn)) => {
                paths.push(("haproxy", Some(p), a));
                h2_paths.push(("haproxy", h2, "h2up"));
                haproxy_maxconn = Some(maxconn);
            }
            Err(e) => println!("# note: haproxy skipped: {e:#}"),
        },
        None => println!("# note: haproxy skipped: not installed (apt-get install -y haproxy)"),
    }

    // For investigations: `SERIN_BENCH_PATHS=serin,nginx` measures only those paths.
    if let Ok(only) = std::env::var("SERIN_BENCH_PATHS") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        paths.retain(|(name, _, _)| only.contains(name));
        h2_paths.retain(|(name, _, _)| only.contains(name));
        println!("# note: only the paths {only:?} (SERIN_BENCH_PATHS)");
    }
    if pods.is_some() {
        paths.retain(|(name, _, _)| ["serin", TRANSPARENT].contains(name));
    }
    // For investigations (see the module comment).
    let rates: Vec<u64> = match std::env::var("SERIN_BENCH_RATES") {
        Ok(v) => {
            let r: Vec<u64> = v
                .split(',')
                .map(|r| {
                    r.trim()
                        .parse()
                        .context("SERIN_BENCH_RATES: expected rates like 1000,5000")
                })
                .collect::<anyhow::Result<_>>()?;
            r.into_iter().filter(|r| *r > 0).collect()
        }
        Err(_) => RATES.to_vec(),
    };
    let rates = if part("fixed") { rates } else { Vec::new() };
    let rounds_n: usize = match std::env::var("SERIN_BENCH_ROUNDS") {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .context("SERIN_BENCH_ROUNDS: expected a number of rounds, 1 or more")?,
        Err(_) => ROUNDS,
    };
    for (name, _, addr) in &paths {
        // Sanity: the path answers before it is measured.
        one_request(&target_of(name, *addr))
            .with_context(|| format!("{name}: first request failed"))?;
    }
    // Memory held by idle keep-alive connections, and whether it is given back.
    let idle_n: usize = match std::env::var("SERIN_BENCH_IDLE") {
        Ok(v) => v
            .trim()
            .parse()
            .context("SERIN_BENCH_IDLE: expected a number of connections (0: skip)")?,
        Err(_) => IDLE_CONNS,
    };
    if idle_n > 0 && part("idle") {
        idle_memory(&paths, idle_n, haproxy_maxconn)?;
    }
    if part("h2hol") {
        // Each path first without a stalled client (the control: the path answers h2c at
        // all, and how fast), then with one.
        for (name, addr, authority) in &h2_paths {
            for stalled in [0, h2hol::STALLED_STREAMS] {
                match h2hol::measure(*addr, authority, stalled) {
                    Ok(h) => println!(
                        "path={name} h2_hol stalled_streams={stalled} p50_us={} p99_us={} max_us={} requests={} errors={}",
                        h.p50_us, h.p99_us, h.max_us, h.requests, h.errors
                    ),
                    Err(e) => println!("# note: path={name} h2_hol skipped: {e:#}"),
                }
            }
        }
        if paths.iter().any(|(name, _, _)| *name == "nginx") {
            println!(
                "# note: path=nginx h2_hol skipped: nginx 1.22 proxies to upstreams over HTTP/1.1 only"
            );
        }
    }
    // This machine's CPU speed drifts over minutes, so measuring one path after the other
    // favours whichever ran in a fast phase. The paths take turns (in slots at fixed rates, in
    // rounds for maximum throughput), and every figure is the median of the rounds.
    // fixed[path][rate] = one Latencies per round.
    let mut fixed: Vec<Vec<Vec<Latencies>>> = paths
        .iter()
        .map(|_| rates.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut rss = vec![vec![0.0f64; rates.len()]; paths.len()];
    let addrs: Vec<Target> = paths.iter().map(|(n, _, a)| target_of(n, *a)).collect();
    let unpin = pin && std::env::var_os("SERIN_BENCH_UNPIN_FIXED").is_some();
    if unpin {
        for (_, p, _) in &paths {
            if let Some(p) = p {
                p.set_cpus("0,1");
            }
        }
    }
    // The slot order is shuffled per cycle from a fixed seed: the same figures for the same
    // machine behaviour, and no path always follows the same one.
    let mut order = fastrand::Rng::with_seed(0x5e41);
    for _round in 0..rounds_n {
        for (j, &rate) in rates.iter().enumerate() {
            let owners = slot_owners(&mut order, paths.len(), MEASURE, SLOT);
            for (i, lat) in open_loop(&addrs, rate, &owners).into_iter().enumerate() {
                fixed[i][j].push(lat);
            }
            for (i, (_, proc_, _)) in paths.iter().enumerate() {
                let r = proc_.as_ref().map_or(0.0, |p| p.rss_mib());
                rss[i][j] = rss[i][j].max(r);
            }
        }
    }
    // Each figure is the median over the rounds of that round's percentile: a stall of the VM
    // (this machine's vCPUs are sometimes descheduled for milliseconds) in one round then
    // moves one round's figure, not the path's. The percentiles of all rounds' samples pooled
    // follow as notes, so a stall that comes back in every round is visible either way.
    let mut notes = Vec::new();
    let mut p99s: Vec<Vec<u64>> = vec![vec![0; rates.len()]; paths.len()];
    // Each round's p99, per path and rate, for the paired comparison below.
    let mut round_p99s: Vec<Vec<Vec<u64>>> = vec![vec![Vec::new(); rates.len()]; paths.len()];
    for (i, (name, _, _)) in paths.iter().enumerate() {
        for (j, rate) in rates.iter().enumerate() {
            let rounds = std::mem::take(&mut fixed[i][j]);
            let errors: u64 = rounds.iter().map(|l| l.errors).sum();
            let per_round: Vec<(u64, u64, u64)> = rounds
                .iter()
                .map(|l| percentiles(l.samples.clone()))
                .collect();
            let median = |f: fn(&(u64, u64, u64)) -> u64| {
                let mut v: Vec<u64> = per_round.iter().map(f).collect();
                v.sort_unstable();
                v.get(v.len() / 2).copied().unwrap_or(0)
            };
            let (p50, p99, p999) = (median(|p| p.0), median(|p| p.1), median(|p| p.2));
            p99s[i][j] = p99;
            let errs = if errors > 0 {
                format!(" # {errors} errors")
            } else {
                String::new()
            };
            let rss = rss[i][j];
            println!(
                "path={name} rate={rate} p50_us={p50} p99_us={p99} p999_us={p999} rss_mib={rss:.1}{errs}"
            );
            let pooled = percentiles(rounds.into_iter().flat_map(|l| l.samples).collect());
            let each: Vec<u64> = per_round.iter().map(|p| p.1).collect();
            round_p99s[i][j] = each.clone();
            notes.push(format!(
                "# path={name} rate={rate} pooled p50_us={} p99_us={} p999_us={} p99_us_per_round={each:?}",
                pooled.0, pooled.1, pooled.2
            ));
        }
    }
    // What each proxy adds to the direct path's p99, rate by rate (the comparison).
    let direct = paths.iter().position(|(name, _, _)| *name == "direct");
    if let Some(d) = direct.filter(|_| !rates.is_empty()) {
        for (i, (name, _, _)) in paths.iter().enumerate().filter(|(i, _)| *i != d) {
            let added: Vec<String> = rates
                .iter()
                .enumerate()
                .map(|(j, rate)| format!("{rate}:{}", p99s[i][j] as i64 - p99s[d][j] as i64))
                .collect();
            notes.push(format!("# path={name} added_p99_us {}", added.join(" ")));
        }
    }
    // The rounds paired: in how many was serin's p99 at or below each other proxy's? A host
    // stall moves one round's figure for every path alike, so this shows a steady difference
    // that the medians, at this machine's noise, may hide or invent.
    let serin = paths.iter().position(|(name, _, _)| *name == "serin");
    if let Some(s) = serin {
        for (j, rate) in rates.iter().enumerate() {
            let others = paired(&paths, s, |i| &round_p99s[i][j], |a, b| a <= b);
            if !others.is_empty() {
                notes.push(format!(
                    "# path=serin rate={rate} rounds_p99_at_or_below {others}"
                ));
            }
        }
    }
    for n in notes {
        println!("{n}");
    }
    if unpin {
        for (_, p, _) in &paths {
            if let Some(p) = p {
                p.set_cpus("0");
            }
        }
    }
    let mut max_rps: Vec<Vec<u64>> = vec![Vec::new(); paths.len()];
    // Each round's p99 of the closed loop, per path.
    let mut max_p99: Vec<Vec<u64>> = vec![Vec::new(); paths.len()];
    // (user CPU ticks, system CPU ticks, requests) of each proxy over all rounds.
    let mut cpu: Vec<(u64, u64, u64)> = vec![(0, 0, 0); paths.len()];
    // (user, system) CPU ticks of this process while each path owned the load.
    let mut own_cpu: Vec<(u64, u64)> = vec![(0, 0); paths.len()];
    let max_rounds = if part("max") { rounds_n } else { 0 };
    for _round in 0..max_rounds {
        let owners = slot_owners(&mut order, paths.len(), MAX_MEASURE, MAX_SLOT);
        let before: Vec<Option<(u64, u64)>> = paths
            .iter()
            .map(|(_, p, _)| p.as_ref().map(Proc::cpu_ticks))
            .collect();
        for (i, r) in closed_loop(&addrs, &owners).into_iter().enumerate() {
            max_rps[i].push(r.rps);
            max_p99[i].push(r.p99);
            if let (Some(b), Some(p)) = (before[i], paths[i].1.as_ref()) {
                let (user, sys) = p.cpu_ticks();
                cpu[i].0 += user.saturating_sub(b.0);
                cpu[i].1 += sys.saturating_sub(b.1);
                cpu[i].2 += r.requests;
                own_cpu[i].0 += r.own_ticks.0;
                own_cpu[i].1 += r.own_ticks.1;
            }
        }
    }
    let mut cpu_notes = Vec::new();
    // The rounds paired, as for p99: in how many was serin's max_rps at or above each other
    // proxy's?
    if let Some(s) = serin.filter(|_| max_rounds > 0) {
        let others = paired(&paths, s, |i| &max_rps[i], |a, b| a >= b);
        if !others.is_empty() {
            cpu_notes.push(format!("# path=serin rounds_max_rps_at_or_above {others}"));
        }
    }
    if let Some(s) = serin.filter(|_| max_rounds > 0) {
        let others = paired(&paths, s, |i| &max_p99[i], |a, b| a <= b);
        if !others.is_empty() {
            cpu_notes.push(format!("# path=serin rounds_max_p99_at_or_below {others}"));
        }
    }
    for (i, (name, proc_, _)) in paths.iter().enumerate().filter(|_| max_rounds > 0) {
        let rounds = &mut max_rps[i];
        rounds.sort_unstable();
        let rps = rounds.get(rounds.len() / 2).copied().unwrap_or(0);
        let mut p99s = max_p99[i].clone();
        p99s.sort_unstable();
        let p99 = p99s.get(p99s.len() / 2).copied().unwrap_or(0);
        println!("path={name} max_rps={rps} p99_us={p99}");
        let (user, sys, requests) = cpu[i];
        if proc_.is_some() && requests > 0 {
            // CPU time the proxy itself spent per request: unlike rps, this barely moves when
            // other work shares the machine, so it compares the proxies' efficiency fairly.
            let us = |ticks: u64| ticks as f64 * 1e6 / clock_ticks_per_sec() / requests as f64;
            cpu_notes.push(format!(
                "# path={name} cpu_us_per_request={:.1} requests={requests}",
                us(user + sys)
            ));
            // Where it went: the proxy's own code (user) or the kernel (system: syscalls and
            // the network stack, netfilter included).
            cpu_notes.push(format!(
                "# path={name} user_us_per_request={:.1} sys_us_per_request={:.1}",
                us(user),
                us(sys)
            ));
        }
    }
    // The transparent path's goal: at most 5% more CPU per request than the explicit one.
    let us = |name: &str| {
        let i = paths.iter().position(|(n, _, _)| *n == name)?;
        let (user, sys, requests) = cpu[i];
        (requests > 0).then(|| (user as f64 / requests as f64, sys as f64 / requests as f64))
    };
    if let (Some(explicit), Some(transparent)) = (us("serin"), us(TRANSPARENT)) {
        let total = |c: (f64, f64)| c.0 + c.1;
        cpu_notes.push(format!(
            "# path=serin-transparent cpu_per_request_vs_serin={:+.1}% (goal: at most +5%)",
            (total(transparent) / total(explicit) - 1.0) * 100.0
        ));
        // The difference split: how much of the explicit path's CPU per request the
        // transparent path adds in user space and in the kernel.
        cpu_notes.push(format!(
            "# path=serin-transparent added_vs_serin user={:+.1}% sys={:+.1}% (of serin's total)",
            (transparent.0 - explicit.0) / total(explicit) * 100.0,
            (transparent.1 - explicit.1) / total(explicit) * 100.0
        ));
    }
    // The capture's kernel work is not all done in the proxy's context: the client's sends
    // cross the nat OUTPUT hooks in the client's, the upstreams' answers the capture
    // namespace's PREROUTING in the upstreams'. So the same comparison over the proxy plus this
    // process (load generator and upstreams, the same work for every path but for that).
    let whole = |name: &str| {
        let i = paths.iter().position(|(n, _, _)| *n == name)?;
        let ((user, sys, requests), (own_user, own_sys)) = (cpu[i], own_cpu[i]);
        (requests > 0).then(|| {
            let us = |ticks: u64| ticks as f64 * 1e6 / clock_ticks_per_sec() / requests as f64;
            (us(own_user + own_sys), us(user + sys + own_user + own_sys))
        })
    };
    for name in ["serin", TRANSPARENT] {
        if let Some((own, all)) = whole(name) {
            cpu_notes.push(format!(
                "# path={name} bench_process_cpu_us_per_request={own:.1} proxy_and_bench_cpu_us_per_request={all:.1}"
            ));
        }
    }
    if let (Some(explicit), Some(transparent)) = (whole("serin"), whole(TRANSPARENT)) {
        cpu_notes.push(format!(
            "# path=serin-transparent proxy_and_bench_cpu_per_request_vs_serin={:+.1}%",
            (transparent.1 / explicit.1 - 1.0) * 100.0
        ));
    }
    // Connection tracking in the capture namespace (the root namespace, with no NAT rule,
    // tracks nothing): what `serin-proxy init`'s rules leave tracked.
    if let (Some(ns), true) = (&capture, max_rounds > 0 && us(TRANSPARENT).is_some()) {
        match in_netns(&ns.file, || {
            std::fs::read_to_string("/proc/thread-self/net/nf_conntrack")
        }) {
            Ok(Ok(table)) => {
                let entries: Vec<&str> = table.lines().filter(|l| l.contains(" tcp ")).collect();
                let loopback = entries
                    .iter()
                    .filter(|l| l.contains("src=127.0.0.1 dst=127.0.0.1 "))
                    .count();
                cpu_notes.push(format!(
                    "# path=serin-transparent conntrack_entries={} loopback_to_loopback={loopback} (in the capture namespace)",
                    entries.len()
                ));
            }
            Ok(Err(e)) | Err(e) => cpu_notes.push(format!(
                "# note: the capture namespace's conntrack table is unreadable: {e}"
            )),
        }
    }
    for n in cpu_notes {
        println!("{n}");
    }
    let rounds: Vec<String> = paths
        .iter()
        .zip(&max_rps)
        .map(|((name, _, _), r)| format!("{name}={r:?}"))
        .collect();
    if max_rounds > 0 {
        println!("# max_rps rounds (sorted): {}", rounds.join(" "));
    }
    if part("wrk") {
        wrk_lines(&paths, pin, &mut order)?;
    }
    println!("# load average after: {}", loadavg());
    drop(paths);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The wrk cross-check (see [`wrk`]): every path in turn, a new random order each round.
fn wrk_lines(
    paths: &[(&str, Option<Proc>, SocketAddr)],
    pin: bool,
    order: &mut fastrand::Rng,
) -> anyhow::Result<()> {
    let Some(bin) = which("wrk") else {
        println!("# note: wrk lines skipped: wrk not installed (apt-get install -y wrk)");
        return Ok(());
    };
    let env_n = |var: &str, default: u64| -> anyhow::Result<u64> {
        match std::env::var(var) {
            Ok(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{var}: expected a whole number, 1 or more")),
            Err(_) => Ok(default),
        }
    };
    let rounds = env_n("SERIN_BENCH_WRK_ROUNDS", 5)?;
    let secs = env_n("SERIN_BENCH_WRK_SECS", 2)?;
    let mut runs: Vec<Vec<wrk::Run>> = paths.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        let mut turn: Vec<usize> = (0..paths.len()).collect();
        order.shuffle(&mut turn);
        // wrk runs in this namespace, where the transparent path's Service address goes nowhere.
        for i in turn.into_iter().filter(|i| paths[*i].0 != TRANSPARENT) {
            match wrk::run(&bin, paths[i].2, secs, pin) {
                Ok(r) => runs[i].push(r),
                Err(e) => println!("# note: path={} wrk run failed: {e:#}", paths[i].0),
            }
        }
    }
    for ((name, _, _), runs) in paths.iter().zip(&runs) {
        if runs.is_empty() {
            continue;
        }
        let mut rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
        rps.sort_by(f64::total_cmp);
        let mut p99: Vec<u64> = runs.iter().map(|r| r.p99_us).collect();
        p99.sort_unstable();
        println!(
            "path={name} wrk_rps={:.0} wrk_p99_us={}",
            rps[rps.len() / 2],
            p99[p99.len() / 2]
        );
        println!(
            "# path={name} wrk rounds={} secs={secs} rps={:?} p99_us={:?}",
            runs.len(),
            runs.iter()
                .map(|r| r.rps.round() as u64)
                .collect::<Vec<_>>(),
            runs.iter().map(|r| r.p99_us).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// `name=k/n` for every proxy but `s` (and `direct`): in `k` of `n` rounds `better(s's figure,
/// its figure)` held, the rounds paired by index.
fn paired<'a>(
    paths: &[(&str, Option<Proc>, SocketAddr)],
    s: usize,
    rounds: impl Fn(usize) -> &'a Vec<u64>,
    better: impl Fn(u64, u64) -> bool,
) -> String {
    let others: Vec<String> = paths
        .iter()
        .enumerate()
        .filter(|(i, (name, _, _))| *i != s && *name != "direct")
        .map(|(i, (name, _, _))| {
            let pairs: Vec<(u64, u64)> = rounds(s)
                .iter()
                .copied()
                .zip(rounds(i).iter().copied())
                .collect();
            let k = pairs.iter().filter(|(a, b)| better(*a, *b)).count();
            format!("{name}={k}/{}", pairs.len())
        })
        .collect();
    others.join(" ")
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process killed on drop.
struct Proc {
    child: Child,
}

impl Proc {
    /// The process and its children (nginx workers).
    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
            .collect()
    }

    /// RSS of the process and its children, in MiB.
    fn rss_mib(&self) -> f64 {
        self.pids().into_iter().map(rss_kib).sum::<u64>() as f64 / 1024.0
    }

    /// Moves the process and its children to `cpus` (taskset's list form).
    fn set_cpus(&self, cpus: &str) {
        for p in self.pids() {
            let _ = Command::new("taskset")
                .args(["-a", "-p", "-c", cpus, &p.to_string()])
                .stdout(Stdio::null())
                .status();
        }
    }

    /// User and system CPU ticks of the process and its children.
    fn cpu_ticks(&self) -> (u64, u64) {
        self.pids()
            .into_iter()
            .map(cpu_ticks)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

/// `(user, system)` CPU ticks of `pid`. System time includes the kernel's network work done
/// on the process's behalf: its own sends over loopback run the receive path (netfilter,
/// connection tracking, TCP) in its context.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (get(11), get(12))
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Children first (nginx workers): killing only the master would orphan them.
        for c in self.pids().into_iter().skip(1) {
            let _ = Command::new("kill")
                .args(["-KILL", &c.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn pinned(bin: &Path, pin: bool) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_listening(addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("exited with {status} before listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("not listening on {addr} after 20s")
}

/// The `serin-proxy` binary of this target directory. Under `cargo run` it is (re)built first
/// (a no-op when fresh), since building an example does not build the package's binaries.
fn serin_binary() -> anyhow::Result<PathBuf> {
    // Another build (e.g. of an older commit) to compare against, in the same conditions.
    if let Some(bin) = std::env::var_os("SERIN_BENCH_PROXY") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    // target/release/examples/bench -> target/dist/serin-proxy: the proxy as it ships, built
    // with the workspace's `dist` profile (see the root Cargo.toml).
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|d| d.join("dist").join("serin-proxy"))
        .context("locating the target directory")?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--profile",
                "dist",
                "-p",
                "serin-proxy",
                "--bin",
                "serin-proxy",
            ])
            .status()?;
        if !status.success() {
            bail!("cargo build --profile dist of serin-proxy failed");
        }
    }
    if !bin.is_file() {
        bail!(
            "{} not found; run `cargo build --profile dist -p serin-proxy` first",
            bin.display()
        );
    }
    Ok(bin)
}

fn start_serin(
    dir: &Path,
    primary: SocketAddr,
    canary: SocketAddr,
    h2_upstream: SocketAddr,
    pin: bool,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let listen = free_port()?;
    let admin = free_port()?;
    let cfg = dir.join("serin.yaml");
    std::fs::write(
        &cfg,
        format!(
            "outbound:\n  listen: {listen}\n  maxConnections: 20000\nadmin:\n  listen: {admin}\nlabels:\n  namespace: bench\n  deployment: bench\nroutes:\n  - authority: podinfo\n    rules:\n      - backends:\n          - {{ name: podinfo-primary, weight: 90, endpoints: [\"{primary}\"] }}\n          - {{ name: podinfo-canary, weight: 10, endpoints: [\"{canary}\"] }}\n  - authority: h2up\n    rules:\n      - backends:\n          - {{ name: h2up, endpoints: [\"{h2_upstream}\"] }}\n"
        ),
    )?;
    let bin = serin_binary()?;
    let mut child = pinned(&bin, pin)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("spawning serin-proxy")?;
    wait_listening(listen, &mut child)?;
    Ok((Proc { child }, listen))
}

/// The explicit serin path in its own pod (`SERIN_BENCH_UPSTREAMS=pod`): the same proxy and
/// route, listening on the pod's loopback, with no rule in its namespace.
fn start_serin_in_pod(
    ns: &CaptureNs,
    dir: &Path,
    primary: SocketAddr,
    canary: SocketAddr,
    pin: bool,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let bin = serin_binary()?;
    let cfg = dir.join("serin-pod.yaml");
    std::fs::write(
        &cfg,
        format!(
            "outbound:\n  listen: 127.0.0.1:4140\n  maxConnections: 20000\nadmin:\n  listen: 127.0.0.1:4191\nlabels:\n  namespace: bench\n  deployment: bench\nroutes:\n  - authority: podinfo\n    rules:\n      - backends:\n          - {{ name: podinfo-primary, weight: 90, endpoints: [\"{primary}\"] }}\n          - {{ name: podinfo-canary, weight: 10, endpoints: [\"{canary}\"] }}\n"
        ),
    )?;
    let ip = which("ip").context("ip not installed")?;
    let child = pinned(&ip, pin)
        .args(["netns", "exec", &ns.name])
        .arg(&bin)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("spawning serin-proxy in its pod")?;
    let target = Target {
        addr: "127.0.0.1:4140".parse().expect("an address"),
        netns: Some(ns.file.clone()),
    };
    let p = await_answer(child, &target)?;
    Ok((p, target.addr))
}

/// Waits until a request through `target` comes back (the proxy's route is in force), up to
/// 20 s; the proxy is killed when it never does.
fn await_answer(mut child: Child, target: &Target) -> anyhow::Result<Proc> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if Conn::open(target).and_then(|mut c| c.request()).is_ok() {
            return Ok(Proc { child });
        }
        if let Some(status) = child.try_wait()? {
            bail!("serin-proxy exited with {status}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer from serin-proxy after 20s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_nginx(
    bin: &Path,
    dir: &Path,
    primary: SocketAddr,
    canary: SocketAddr,
    pin: bool,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let listen = free_port()?;
    let d = dir.join("nginx");
    std::fs::create_dir_all(&d)?;
    let conf = d.join("nginx.conf");
    let p = d.display();
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
             events {{ worker_connections 12000; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 100000;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
               upstream podinfo {{\n    server {primary} weight=90;\n    server {canary} weight=10;\n    keepalive 64;\n    keepalive_requests 100000;\n  }}\n\
               server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://podinfo;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        ),
    )?;
    let mut child = pinned(bin, pin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning nginx")?;
    wait_listening(listen, &mut child)?;
    Ok((Proc { child }, listen))
}

/// The hard limit on open files this process (and so the proxies it starts) may raise to.
fn fd_hard_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line.split_whitespace().nth(4)? {
        "unlimited" => Some(usize::MAX),
        n => n.parse().ok(),
    }
}

/// HAProxy with the 90/10 split on one port and, on another, h2c both ways to the h2c
/// upstream. Returns the process, the split's address, the h2c address and its maxconn.
fn start_haproxy(
    bin: &Path,
    dir: &Path,
    primary: SocketAddr,
    canary: SocketAddr,
    h2_upstream: SocketAddr,
    pin: bool,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr, usize)> {
    let listen = free_port()?;
    let listen_h2 = free_port()?;
    let conf = dir.join("haproxy.cfg");
    // maxconn above the 10,000 idle connections when the file descriptor limit allows: HAProxy
    // reserves two descriptors per connection (client and server side) and refuses to start
    // when its limit, which only CAP_SYS_RESOURCE may raise past the hard limit, is below that.
    let hard = fd_hard_limit().unwrap_or(20_000);
    let maxconn = 10_050.min(hard.saturating_sub(200) / 2);
    let ulimit = (2 * maxconn + 100).min(hard);
    std::fs::write(
        &conf,
        format!(
            "global\n  maxconn {maxconn}\n  ulimit-n {ulimit}\n  nbthread 1\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n\
             frontend fe\n  bind {listen}\n  default_backend be\n\
             backend be\n  balance roundrobin\n  http-reuse always\n  server primary {primary} weight 90\n  server canary {canary} weight 10\n\
             frontend fe_h2\n  bind {listen_h2} proto h2\n  default_backend be_h2\n\
             backend be_h2\n  http-reuse always\n  server h2up {h2_upstream} proto h2\n"
        ),
    )?;
    let mut child = pinned(bin, pin)
        .arg("-f")
        .arg(&conf)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning haproxy")?;
    wait_listening(listen, &mut child)?;
    Ok((Proc { child }, listen, listen_h2, maxconn))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// Upstream: a trivial hyper server (keep-alive, fixed body).

/// An upstream answering `name` on a loopback port and on the `extra` listeners (made in the
/// pods' namespaces: the same server threads serve them, a socket stays in the namespace it
/// was made in), so the serin paths in pods reach the same upstreams. Returns the loopback
/// address, then the extra listeners' addresses.
fn spawn_upstream(name: &'static str, extra: Vec<TcpListener>) -> anyhow::Result<Vec<SocketAddr>> {
    let mut listeners = vec![TcpListener::bind("127.0.0.1:0")?];
    listeners.extend(extra);
    serve_on(
        &format!("upstream-{name}"),
        listeners,
        move |stream| async move {
            let svc = hyper::service::service_fn(move |_req| async move {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(if name == "primary" {
                        b"primary\n"
                    } else {
                        b"canary\n"
                    }),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        },
    )
}

/// A loopback server on a thread of its own (one current-thread runtime): `serve` runs as a
/// task for every accepted connection (`TCP_NODELAY` set). Returns its address.
fn spawn_server<F, Fut>(thread: &str, serve: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Ok(serve_on(thread, vec![TcpListener::bind("127.0.0.1:0")?], serve)?[0])
}

/// [`spawn_server`] on given listeners; returns their addresses.
fn serve_on<F, Fut>(
    thread: &str,
    listeners: Vec<TcpListener>,
    serve: F,
) -> anyhow::Result<Vec<SocketAddr>>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut addrs = Vec::new();
    for l in &listeners {
        l.set_nonblocking(true)?;
        addrs.push(l.local_addr()?);
    }
    let serve = Arc::new(serve);
    std::thread::Builder::new()
        .name(thread.to_string())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("upstream runtime");
            rt.block_on(async move {
                let mut accepts = tokio::task::JoinSet::new();
                for listener in listeners {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("upstream listener");
                    let serve = serve.clone();
                    accepts.spawn(async move {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(serve(stream));
                        }
                    });
                }
                while accepts.join_next().await.is_some() {}
            });
        })?;
    Ok(addrs)
}

// ---------------------------------------------------------------------------------------------
// The transparent path: a client and serin-proxy in a network namespace made by the bench, the
// client's connections to a Service address captured by `serin-proxy init`'s iptables rules,
// as in an injected pod. Root only (namespaces, iptables); skipped with a note otherwise.

/// Where the transparent path's client connects: an address nothing listens on, which only the
/// capture rules make reach the proxy (as a Service's cluster IP in a pod).
const SERVICE: &str = "10.96.0.10:80";
/// The transparent path's name.
const TRANSPARENT: &str = "serin-transparent";
/// The proxy's UID, exempt from capture (`serin-proxy init`'s default).
const PROXY_UID: &str = "2102";

/// Where a path's client connects: an address, in this process's network namespace or in
/// another one (sockets made there stay there).
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    netns: Option<Arc<std::fs::File>>,
}

impl Target {
    fn loopback(addr: SocketAddr) -> Target {
        Target { addr, netns: None }
    }

    /// A blocking connection, made inside the target's namespace when it has one.
    fn connect(&self) -> std::io::Result<TcpStream> {
        match &self.netns {
            None => TcpStream::connect(self.addr),
            Some(ns) => in_netns(ns, || TcpStream::connect(self.addr))?,
        }
    }

    /// The same, for the event loop (a namespace's connect goes through a blocking thread:
    /// connections are opened once per run, so its cost does not count).
    async fn connect_async(&self) -> std::io::Result<tokio::net::TcpStream> {
        if self.netns.is_none() {
            return tokio::net::TcpStream::connect(self.addr).await;
        }
        let t = self.clone();
        let s = tokio::task::spawn_blocking(move || t.connect())
            .await
            .map_err(std::io::Error::other)??;
        s.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(s)
    }
}

/// Runs `f` on a thread that entered network namespace `ns`.
fn in_netns<T: Send>(ns: &std::fs::File, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    use std::os::fd::AsFd as _;
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(std::io::Error::from)?;
            Ok(f())
        })
        .join()
        .map_err(|_| std::io::Error::other("namespace thread panicked"))?
    })
}

fn run_tool(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace made by the bench (loopback up), deleted on drop; namespaces of earlier
/// runs whose process is gone are deleted when the first one is made.
struct CaptureNs {
    name: String,
    file: Arc<std::fs::File>,
}

impl CaptureNs {
    const PREFIX: &str = "serin-bench";

    /// The transparent path's "pod": a namespace with loopback and an interface that routes
    /// the Service address (so a connect to it reaches the nat OUTPUT chain).
    fn create() -> anyhow::Result<CaptureNs> {
        if !rustix::process::geteuid().is_root() {
            bail!("needs root (a network namespace and iptables rules)");
        }
        for tool in ["ip", "iptables", "setpriv"] {
            if which(tool).is_none() {
                bail!("{tool} not installed (apt-get install -y iproute2 iptables util-linux)");
            }
        }
        Self::remove_stale();
        let ns = Self::named("")?;
        let n = ns.name.as_str();
        // A veth pair with both ends in the namespace: a route for the Service addresses that
        // is not loopback (the capture rules leave loopback traffic alone).
        run_tool(&[
            "ip", "-n", n, "link", "add", "svc0", "type", "veth", "peer", "name", "svc1",
        ])?;
        run_tool(&["ip", "-n", n, "addr", "add", "10.96.0.1/24", "dev", "svc0"])?;
        run_tool(&["ip", "-n", n, "link", "set", "svc0", "up"])?;
        run_tool(&["ip", "-n", n, "link", "set", "svc1", "up"])?;
        Ok(ns)
    }

    /// An empty namespace (loopback up) named after this process and `role`.
    fn named(role: &str) -> anyhow::Result<CaptureNs> {
        let name = format!("{}-{}{role}", Self::PREFIX, std::process::id());
        run_tool(&["ip", "netns", "add", &name])?;
        let file = match std::fs::File::open(format!("/run/netns/{name}")) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                let _ = run_tool(&["ip", "netns", "del", &name]);
                bail!("opening /run/netns/{name}: {e}");
            }
        };
        let ns = CaptureNs { name, file };
        run_tool(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Deletes the namespaces of bench runs that were killed before they could.
    fn remove_stale() {
        let Ok(list) = run_tool(&["ip", "netns", "list"]) else {
            return;
        };
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            let Some(rest) = name.strip_prefix(&format!("{}-", Self::PREFIX)) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = run_tool(&["ip", "netns", "del", name]);
            }
        }
    }

    /// A listener on the namespace's loopback.
    fn listen(&self) -> std::io::Result<TcpListener> {
        self.listen_on("127.0.0.1:0")
    }

    /// A listener on `addr` inside the namespace.
    fn listen_on(&self, addr: &str) -> std::io::Result<TcpListener> {
        in_netns(&self.file, || TcpListener::bind(addr))?
    }
}

impl Drop for CaptureNs {
    fn drop(&mut self) {
        let _ = run_tool(&["ip", "netns", "del", &self.name]);
    }
}

/// `SERIN_BENCH_UPSTREAMS=pod`: both serin paths in pods of their own that reach the upstreams
/// in a third pod over veth pairs, as sidecars reach other pods. The explicit proxy runs in a
/// namespace without any rule (so nothing there is connection-tracked, as in a pod without
/// capture); the transparent one in the capture namespace. Unlike the default (upstreams on
/// each pod's loopback, exempt from tracking either way), this exercises what `serin-proxy
/// init` does with the proxy's upstream connections (`SERIN_BENCH_INIT_ARGS=--track-upstream`
/// keeps them tracked, for the comparison).
struct PodNet {
    /// The upstreams' pod.
    upstream: CaptureNs,
    /// The explicit proxy's pod.
    explicit: CaptureNs,
}

impl PodNet {
    /// The upstream pod's address on its link to the capture namespace.
    const FOR_TRANSPARENT: &str = "10.98.1.2";
    /// The upstream pod's address on its link to the explicit proxy's pod.
    const FOR_EXPLICIT: &str = "10.98.2.2";

    fn create(capture: &CaptureNs) -> anyhow::Result<PodNet> {
        let net = PodNet {
            upstream: CaptureNs::named("-up")?,
            explicit: CaptureNs::named("-explicit")?,
        };
        net.link(capture, "up1", 1)?;
        net.link(&net.explicit, "up2", 2)?;
        Ok(net)
    }

    /// A veth pair from `pod` (`10.98.<i>.1`) to the upstream pod (`10.98.<i>.2`).
    fn link(&self, pod: &CaptureNs, ifname: &str, i: u8) -> anyhow::Result<()> {
        let (p, u) = (pod.name.as_str(), self.upstream.name.as_str());
        let peer = format!("{ifname}p");
        run_tool(&[
            "ip", "-n", p, "link", "add", ifname, "type", "veth", "peer", "name", &peer, "netns", u,
        ])?;
        for (ns, dev, addr) in [(p, ifname, 1), (u, peer.as_str(), 2)] {
            run_tool(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.98.{i}.{addr}/24"),
                "dev",
                dev,
            ])?;
            run_tool(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }
}

/// serin-proxy in `ns` as an injected pod runs it: `serin-proxy init` installs the capture rules,
/// then the proxy runs `--transparent` as its own UID, with the same route as the explicit path
/// (to the upstreams' listeners inside the namespace).
fn start_serin_transparent(
    ns: &CaptureNs,
    dir: &Path,
    primary: SocketAddr,
    canary: SocketAddr,
    pin: bool,
) -> anyhow::Result<(Proc, Target)> {
    let bin = serin_binary()?;
    let bin_s = bin.to_str().context("the serin-proxy path is not UTF-8")?;
    // `SERIN_BENCH_INIT_ARGS="--track-loopback"` measures the capture without the loopback
    // conntrack exemption (the comparison that shows what the exemption saves).
    let extra = std::env::var("SERIN_BENCH_INIT_ARGS").unwrap_or_default();
    let mut init = vec!["ip", "netns", "exec", &ns.name, bin_s, "init"];
    init.extend(extra.split_whitespace());
    let out = run_tool(&init).context("serin-proxy init")?;
    for line in out.lines() {
        println!("# {line}");
    }
    let cfg = dir.join("serin-transparent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "outbound:\n  listen: 127.0.0.1:4140\n  maxConnections: 20000\nadmin:\n  listen: 127.0.0.1:4191\nlabels:\n  namespace: bench\n  deployment: bench\nroutes:\n  - authority: podinfo\n    rules:\n      - backends:\n          - {{ name: podinfo-primary, weight: 90, endpoints: [\"{primary}\"] }}\n          - {{ name: podinfo-canary, weight: 10, endpoints: [\"{canary}\"] }}\n"
        ),
    )?;
    let ip = which("ip").context("ip not installed")?;
    let child = pinned(&ip, pin)
        .args(["netns", "exec", &ns.name, "setpriv", "--reuid", PROXY_UID])
        .args([
            "--regid",
            PROXY_UID,
            "--clear-groups",
            bin_s,
            "--transparent",
        ])
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("spawning serin-proxy in the capture namespace")?;
    let target = Target {
        addr: SERVICE.parse().expect("SERVICE is an address"),
        netns: Some(ns.file.clone()),
    };
    // Ready once a request to the Service address comes back through the proxy.
    let p = await_answer(child, &target).context("through the capture rules")?;
    Ok((p, target))
}

// ---------------------------------------------------------------------------------------------
// Load generator. Fixed rates: blocking sockets, one thread per connection, each sleeping until
// its next send (precise timing matters more than cost at these rates). Maximum throughput: see
// `closed_loop`. Both speak hand-written HTTP/1.1.

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: podinfo\r\nUser-Agent: serin-bench\r\n\r\n";

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet part of a response (none are expected).
    buf: Vec<u8>,
}

impl Conn {
    fn open(target: &Target) -> std::io::Result<Conn> {
        let stream = target.connect()?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads the whole response; Err on anything but a 200.
    fn request(&mut self) -> std::io::Result<()> {
        self.stream.write_all(REQUEST)?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((status, len)) = complete_response(&self.buf)? {
                self.buf.drain(..len);
                if status != 200 {
                    return Err(std::io::Error::other(format!("status {status}")));
                }
                return Ok(());
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The memory line of every proxy: its RSS before (having served one request), with `n` idle
/// keep-alive connections, and [`IDLE_SETTLE`] (`SERIN_BENCH_IDLE_SETTLE_SECS`) after they
/// closed. The proxies take the storm one after the other and then settle together, so the
/// settling costs one wait, not one per proxy (the first proxy settles longest).
fn idle_memory(
    paths: &[(&str, Option<Proc>, SocketAddr)],
    idle_n: usize,
    haproxy_maxconn: Option<usize>,
) -> anyhow::Result<()> {
    let settle = match std::env::var("SERIN_BENCH_IDLE_SETTLE_SECS") {
        Ok(v) => Duration::from_secs(
            v.trim()
                .parse()
                .context("SERIN_BENCH_IDLE_SETTLE_SECS: expected a number of seconds")?,
        ),
        Err(_) => IDLE_SETTLE,
    };
    // (name, proc, rss before, rss with the connections open); None when skipped.
    let mut measured = Vec::new();
    for (name, proc_, addr) in paths {
        let Some(p) = proc_ else { continue };
        if *name == TRANSPARENT {
            continue;
        }
        // HAProxy holds connections only up to its maxconn (see `start_haproxy`).
        let n = match haproxy_maxconn {
            Some(max) if *name == "haproxy" && max < idle_n + 50 => {
                let n = max.saturating_sub(50);
                println!(
                    "# note: path=haproxy idle_conns={n}, not {idle_n}: its maxconn is {max} under this process's file descriptor limit"
                );
                n
            }
            _ => idle_n,
        };
        let before = p.rss_mib();
        match idle_conns(p, *addr, n) {
            Ok(rss) => measured.push((*name, p, n, before, rss)),
            Err(e) => println!("# note: path={name} idle_conns skipped: {e:#}"),
        }
    }
    std::thread::sleep(settle);
    for (name, p, n, before, rss) in measured {
        let after = p.rss_mib();
        println!("path={name} idle_conns={n} rss_mib={rss:.1} rss_after_close_mib={after:.1}");
        println!(
            "# path={name} rss_before_mib={before:.1} kib_per_idle_conn={:.2} after_close_over_before={:.2} settle_s={}",
            (rss - before) * 1024.0 / n as f64,
            after / before,
            settle.as_secs()
        );
    }
    Ok(())
}

/// Opens `n` connections, one request each (so each is an HTTP/1.1 keep-alive connection the
/// proxy has served), holds them idle, and reads the proxy's RSS; then closes them.
fn idle_conns(p: &Proc, addr: SocketAddr, n: usize) -> anyhow::Result<f64> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut c =
            Conn::open(&Target::loopback(addr)).with_context(|| format!("connection {i}"))?;
        c.request()
            .with_context(|| format!("request on connection {i}"))?;
        held.push(c);
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss = p.rss_mib();
    drop(held);
    Ok(rss)
}

fn one_request(target: &Target) -> anyhow::Result<()> {
    Conn::open(target)?.request()?;
    Ok(())
}

#[derive(Default)]
struct Latencies {
    samples: Vec<u64>,
    errors: u64,
}

/// Which path owns each slot (`slot` long) of a run giving every one of `paths` paths
/// `per_path`: each path once per cycle of `paths` slots, in a new random order every cycle.
/// In a fixed order each proxy would always follow the same path, and the one after `direct`
/// would always start on a CPU that had been idle for a whole slot.
fn slot_owners(
    rng: &mut fastrand::Rng,
    paths: usize,
    per_path: Duration,
    slot: Duration,
) -> Vec<usize> {
    let cycles = per_path.as_nanos().div_ceil(slot.as_nanos()) as usize;
    let mut owners = Vec::with_capacity(cycles * paths);
    for _ in 0..cycles {
        let mut cycle: Vec<usize> = (0..paths).collect();
        rng.shuffle(&mut cycle);
        owners.extend(cycle);
    }
    owners
}

/// Open loop at `rate` to every path in `addrs`, the paths taking turns in slots of `SLOT` as
/// `owners` says (`slot_owners`): a stall of this VM, which lasts from milliseconds to a noisy
/// minute, then lands on every path about equally instead of on whichever path was being
/// measured. Each path has `RATE_CONNECTIONS` connections, opened (and used once) before the
/// start and kept through the slots; each connection follows its own fixed schedule inside its
/// path's slots, and latency is counted from the intended send time.
fn open_loop(addrs: &[Target], rate: u64, owners: &[usize]) -> Vec<Latencies> {
    let owners: Arc<[usize]> = owners.into();
    let total = SLOT * owners.len() as u32;
    // Time for 16 connections per path to open and warm up before the first send.
    let start = Instant::now() + Duration::from_millis(300);
    let interval = Duration::from_secs_f64(RATE_CONNECTIONS as f64 / rate as f64);
    let handles: Vec<Vec<_>> = addrs
        .iter()
        .enumerate()
        .map(|(p, addr)| {
            (0..RATE_CONNECTIONS)
                .map(|c| {
                    let (owners, addr) = (owners.clone(), addr.clone());
                    std::thread::spawn(move || {
                        let mut samples = Vec::new();
                        let mut errors = 0;
                        let mut conn = Conn::open(&addr).ok();
                        if let Some(c) = conn.as_mut()
                            && c.request().is_err()
                        {
                            conn = None;
                        }
                        // Stagger the connections evenly inside one interval.
                        let offset = interval.mul_f64(c as f64 / RATE_CONNECTIONS as f64);
                        for i in 0.. {
                            let at = offset + interval.mul_f64(i as f64);
                            if at >= total {
                                break;
                            }
                            let slot = (at.as_nanos() / SLOT.as_nanos()) as usize;
                            if owners.get(slot) != Some(&p) {
                                continue;
                            }
                            let intended = start + at;
                            let now = Instant::now();
                            if intended > now {
                                std::thread::sleep(intended - now);
                            }
                            let ok = match conn.as_mut() {
                                Some(c) => c.request().is_ok(),
                                None => false,
                            };
                            if ok {
                                samples.push(intended.elapsed().as_micros() as u64);
                            } else {
                                errors += 1;
                                conn = Conn::open(&addr).ok();
                            }
                        }
                        (samples, errors)
                    })
                })
                .collect()
        })
        .collect();
    handles
        .into_iter()
        .map(|path| {
            let mut all = Latencies::default();
            for h in path {
                if let Ok((s, e)) = h.join() {
                    all.samples.extend(s);
                    all.errors += e;
                }
            }
            all
        })
        .collect()
}

/// Closed loop over every path in `addrs`: `MAX_CONNECTIONS` connections per path, the paths
/// taking turns in slots of `MAX_SLOT` as `owners` says (`slot_owners`), each connection sending
/// its next request as soon as the last is answered while its path owns the slot. Returns per
/// path (requests per second, requests completed, p99 latency of the counted requests): the rate counts the requests answered inside
/// the path's slots, after the first `MAX_SETTLE` of each, while the last requests of the path
/// before are still being answered; the count is every request, warm-up included, for the CPU
/// time per request. A warm-up of `WARMUP` per path (same connections, not counted in the rate)
/// comes first.
///
/// Taking turns in short slots, the paths see the same minutes of this VM, whose speed drifts by
/// tens of percent: measured one after the other for seconds each, the order of the paths in
/// a round often decided which proxy came first.
///
/// One event-loop thread drives every connection (nonblocking sockets, one write and usually one
/// read per request): a thread per connection costs a context switch per request, and with this
/// process sharing one CPU with the upstreams the load generator, not the proxy on the other CPU,
/// then decided the figure (the direct path reached about what the proxies did).
fn closed_loop(addrs: &[Target], owners: &[usize]) -> Vec<MaxRound> {
    let paths = addrs.len();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => {
            return (0..paths)
                .map(|_| MaxRound {
                    rps: 0,
                    requests: 0,
                    p99: 0,
                    own_ticks: (0, 0),
                })
                .collect();
        }
    };
    let mut own = vec![(0u64, 0u64); paths];
    // Latencies of the counted requests, per path (each connection adds its own when done).
    let latencies: Arc<std::sync::Mutex<Vec<Vec<u64>>>> =
        Arc::new(std::sync::Mutex::new(vec![Vec::new(); paths]));
    // Which path may send now (`paths`: none; `STOP`: all done), and whether answers count.
    const STOP: usize = usize::MAX;
    let (owner_tx, owner_rx) = tokio::sync::watch::channel(paths);
    let counting = Arc::new(AtomicBool::new(false));
    let counted: Arc<Vec<AtomicU64>> = Arc::new((0..paths).map(|_| AtomicU64::new(0)).collect());
    let all: Arc<Vec<AtomicU64>> = Arc::new((0..paths).map(|_| AtomicU64::new(0)).collect());
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (p, addr) in addrs.iter().enumerate() {
            for _ in 0..MAX_CONNECTIONS {
                let (mut owner, counting) = (owner_rx.clone(), counting.clone());
                let addr = addr.clone();
                let (counted, all) = (counted.clone(), all.clone());
                let latencies = latencies.clone();
                tasks.spawn(async move {
                    let mut conn = None;
                    let mut buf = Vec::with_capacity(4096);
                    let mut mine = Vec::new();
                    loop {
                        match owner.wait_for(|o| *o == p || *o == STOP).await {
                            Ok(o) if *o == p => {}
                            _ => {
                                if let Ok(mut l) = latencies.lock() {
                                    l[p].append(&mut mine);
                                }
                                return;
                            }
                        }
                        if conn.is_none() {
                            conn = match addr.connect_async().await {
                                Ok(s) => {
                                    let _ = s.set_nodelay(true);
                                    buf.clear();
                                    Some(s)
                                }
                                // Nothing listens any more: this connection is done.
                                Err(_) => return,
                            };
                        }
                        let Some(s) = conn.as_mut() else { return };
                        let sent = Instant::now();
                        match async_request(s, &mut buf).await {
                            Ok(true) => {
                                all[p].fetch_add(1, Ordering::Relaxed);
                                if *owner.borrow() == p && counting.load(Ordering::Relaxed) {
                                    counted[p].fetch_add(1, Ordering::Relaxed);
                                    mine.push(sent.elapsed().as_micros() as u64);
                                }
                            }
                            // An error answer or a broken connection: not counted, reconnect.
                            Ok(false) | Err(_) => conn = None,
                        }
                    }
                });
            }
        }
        // This process's CPU (load generator, upstreams, and the kernel work their sends do:
        // over loopback and veth the receive path runs in the sender's context) while each
        // path owned the load: the part of a path's cost that is not the proxy's own.
        let mut mark = cpu_ticks(std::process::id());
        for (p, own) in own.iter_mut().enumerate() {
            let _ = owner_tx.send(p);
            tokio::time::sleep(WARMUP).await;
            charge(own, &mut mark);
        }
        let mut measured = vec![Duration::ZERO; paths];
        for &p in owners {
            let _ = owner_tx.send(p);
            tokio::time::sleep(MAX_SETTLE).await;
            counting.store(true, Ordering::Relaxed);
            let started = Instant::now();
            tokio::time::sleep(MAX_SLOT - MAX_SETTLE).await;
            counting.store(false, Ordering::Relaxed);
            measured[p] += started.elapsed();
            charge(&mut own[p], &mut mark);
        }
        let _ = owner_tx.send(STOP);
        // Requests still in flight finish (or the proxy is gone and they fail) within a
        // moment; don't wait on a stuck one.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        let mut latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
        (0..paths)
            .map(|p| {
                let n = counted[p].load(Ordering::Relaxed);
                let secs = measured[p].as_secs_f64();
                let rps = if secs > 0.0 {
                    (n as f64 / secs) as u64
                } else {
                    0
                };
                let p99 = percentiles(std::mem::take(&mut latencies[p])).1;
                MaxRound {
                    rps,
                    requests: all[p].load(Ordering::Relaxed),
                    p99,
                    own_ticks: own[p],
                }
            })
            .collect()
    })
}

/// One path's share of one closed-loop round.
struct MaxRound {
    /// Counted requests per second of the slots the path owned.
    rps: u64,
    /// Every request answered (warm-up included).
    requests: u64,
    /// p99 of the counted requests.
    p99: u64,
    /// This process's (user, system) CPU ticks while the path owned the load.
    own_ticks: (u64, u64),
}

/// Adds this process's CPU ticks since `mark` to `to` and moves the mark.
fn charge(to: &mut (u64, u64), mark: &mut (u64, u64)) {
    let now = cpu_ticks(std::process::id());
    to.0 += now.0.saturating_sub(mark.0);
    to.1 += now.1.saturating_sub(mark.1);
    *mark = now;
}

/// One request on a nonblocking connection; `buf` keeps bytes past the response (none are
/// expected). Ok(true) for a 200 read to its end.
async fn async_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(REQUEST).await?;
    loop {
        if let Some((status, len)) = complete_response(buf)? {
            buf.drain(..len);
            return Ok(status == 200);
        }
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// (status, length) of the complete response at the start of `buf`, or None while incomplete.
fn complete_response(buf: &[u8]) -> std::io::Result<Option<(u16, usize)>> {
    let bad = |what: &str| std::io::Error::other(format!("bad response: {what}"));
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).map_err(|e| bad(&e.to_string()))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let mut length = 0usize;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| bad("content-length"))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        }
    }
    if !chunked {
        return Ok((buf.len() >= head + length).then_some((status, head + length)));
    }
    // Chunked: walk the chunks; trailers are not expected from these upstreams.
    let mut at = head;
    loop {
        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&buf[at..at + eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .ok_or_else(|| bad("chunk size"))?;
        at += eol + 2 + size + 2;
        if buf.len() < at {
            return Ok(None);
        }
        if size == 0 {
            return Ok(Some((status, at)));
        }
    }
}

fn percentiles(mut v: Vec<u64>) -> (u64, u64, u64) {
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99), at(0.999))
}

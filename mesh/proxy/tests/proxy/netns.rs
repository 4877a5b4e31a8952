//! Transparent capture on a real kernel: network namespaces as pods, `serin-proxy init`'s real
//! iptables rules, serin-proxy in transparent mode.
//!
//! ```text
//!                 node (routes between the pods; DNATs the Service IP like kube-proxy)
//!        10.77.1.1 /      10.77.2.1 |          \ 10.77.3.1
//!   client pod 10.77.1.2    primary pod 10.77.2.2    canary pod 10.77.3.2
//!   client + proxy          app + proxy (inbound)    app + proxy (inbound)
//!   Service web: 10.96.0.10:80 -> primary/canary :8080
//! ```
//!
//! The same topology is dual-stack: each link also carries an IPv6 ULA network (node
//! `fd00:77:<i>::1`, pod `fd00:77:<i>::2`, added `nodad` so no duplicate-address detection is
//! waited for) and the Service has the IPv6 cluster IP `fd00:96::10`, so one run checks the
//! capture for both families.
//!
//! Needs root, `ip` (iproute2), `iptables`/`ip6tables` and `setpriv` (util-linux). Without them the test
//! says so loudly and passes, unless `SERIN_REQUIRE_NETNS` or `CI` is set (CI runs as root and
//! installs them), where it fails. Every namespace and process is removed by a guard, even when
//! an assertion fails; namespaces left by a killed earlier run are removed first.

use crate::support::exits_by_itself;
use serin_proxy::testing::write_executable;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROXY_UID: &str = "2102";
const SERVICE: &str = "10.96.0.10:80";
const PRIMARY: &str = "10.77.2.2";
const CANARY: &str = "10.77.3.2";
const SERVICE6: &str = "[fd00:96::10]:80";
const PRIMARY6: &str = "fd00:77:2::2";
const CANARY6: &str = "fd00:77:3::2";
/// Name prefix of every namespace this test makes (the pid part tells stale ones apart).
const PREFIX: &str = "srnt";
const DETECT: &str = "300ms";

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sh(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("{e}");
    }
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root".into());
    }
    for tool in [
        ["ip", "-V"],
        ["iptables", "--version"],
        ["ip6tables", "--version"],
        ["setpriv", "--version"],
    ] {
        if run(&tool).is_err() {
            return Some(format!("`{}` is not installed", tool[0]));
        }
    }
    None
}

/// Every namespace and process of one run; dropping it removes them all.
struct Topology {
    run_id: String,
    namespaces: Vec<String>,
    children: Mutex<Vec<Child>>,
    dir: std::path::PathBuf,
}

impl Topology {
    fn ns(&self, name: &str) -> String {
        format!("{PREFIX}-{}-{name}", self.run_id)
    }

    fn spawn(&self, mut cmd: Command) {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        self.children.lock().unwrap().push(child);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for mut c in self
            .children
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes namespaces of earlier runs whose process is gone (a run killed before its guard ran).
fn remove_stale_namespaces() {
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns`; sockets it makes stay in `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

/// An app in `ns`: HTTP on 8080 answering `name`, a byte echo on 7000 and 7001, and a
/// server-first banner service on 2525 (greets, then echoes lines). IPv4 on `0.0.0.0`; the
/// same on `[::]` IPv6-only, where HTTP answers `name6`: an answer tells which family's socket
/// the connection reached the app on.
fn start_apps(ns: &str, name: &'static str, name6: &'static str, stop: Arc<AtomicBool>) {
    start_apps_on(ns, false, name, stop.clone());
    start_apps_on(ns, true, name6, stop);
}

fn start_apps_on(ns: &str, v6: bool, name: &'static str, stop: Arc<AtomicBool>) {
    let bind = |port: u16| {
        in_ns(ns, || -> std::io::Result<TcpListener> {
            if !v6 {
                return TcpListener::bind(("0.0.0.0", port));
            }
            let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
            s.set_only_v6(true)?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
            s.listen(128)?;
            Ok(s.into())
        })
        .unwrap_or_else(|e| panic!("bind {port} (v6: {v6}) in {ns}: {e}"))
    };
    let serve = move |l: TcpListener, handle: fn(TcpStream, &'static str)| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(c) = conn {
                    std::thread::spawn(move || handle(c, name));
                }
            }
        });
    };
    serve(bind(8080), http_app);
    serve(bind(7000), echo);
    serve(bind(7001), echo);
    serve(bind(2525), banner);
}

fn http_app(mut c: TcpStream, name: &'static str) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request per connection is all the clients here send, but keep-alive from the
        // proxy's pool means several may come: answer each complete head.
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let body = format!("{name}\n");
            let close = head.to_ascii_lowercase().contains("connection: close");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-app: {name}\r\n{}\r\n{body}",
                body.len(),
                if close { "connection: close\r\n" } else { "" }
            );
            if c.write_all(resp.as_bytes()).is_err() || close {
                return;
            }
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn echo(mut c: TcpStream, _: &'static str) {
    let mut r = match c.try_clone() {
        Ok(r) => r,
        Err(_) => return,
    };
    let _ = std::io::copy(&mut r, &mut c);
}

fn banner(mut c: TcpStream, name: &'static str) {
    if c.write_all(format!("220 {name} ready\r\n").as_bytes())
        .is_err()
    {
        return;
    }
    echo(c, name);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One HTTP/1.1 request from inside `ns`; returns the body.
fn get(ns: &str, to: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let to: SocketAddr = to.parse().expect("address");
    let req = {
        let mut r = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        r
    };
    in_ns(ns, || {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(req.as_bytes()).expect("write");
        let mut resp = String::new();
        c.read_to_string(&mut resp)
            .unwrap_or_else(|e| panic!("read from {to}: {e} (got {resp:?})"));
        assert!(resp.starts_with("HTTP/1.1 200"), "{to}: {resp}");
        resp.split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

/// How many of `n` requests to `service` (Host `host`) the canary answered (`canary` is its
/// answer, `primary` the primary's; anything else fails).
fn canary_share(client: &str, service: &str, host: &str, n: u32, names: [&str; 2]) -> u32 {
    let [primary, canary] = names;
    let mut to_canary = 0;
    for _ in 0..n {
        let answer = get(client, service, host, &[]);
        if answer == canary {
            to_canary += 1;
        } else {
            assert_eq!(answer, primary, "unexpected answer from {service}");
        }
    }
    to_canary
}

/// Sends `payload` to the echo at `to` from inside `ns` (writing and reading at once, then a
/// half-close) and returns what came back.
fn echo_through(ns: &str, to: &str, payload: &[u8]) -> Vec<u8> {
    let addr: SocketAddr = to.parse().expect("address");
    in_ns(ns, || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut w = c.try_clone().expect("clone");
        let data = payload.to_vec();
        let writer = std::thread::spawn(move || {
            w.write_all(&data).expect("write");
            w.shutdown(std::net::Shutdown::Write).expect("shutdown");
        });
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("read echo");
        writer.join().expect("writer");
        got
    })
}

/// Connections the proxy's `dir` listener accepted, from its metrics.
fn opened(m: &str, dir: &str) -> f64 {
    sample(
        m,
        &[
            "tcp_open_total{",
            &format!("direction=\"{dir}\""),
            "peer=\"src\"",
        ],
    )
}

/// Writes `msg` to the echo at `to` from inside `ns` and reads it back.
fn echo_line(ns: &str, to: &str, msg: &[u8]) -> Vec<u8> {
    let addr: SocketAddr = to.parse().expect("address");
    in_ns(ns, || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(msg).expect("write");
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).expect("echo");
        back
    })
}

/// The proxy's metrics, scraped from inside its namespace.
fn metrics(ns: &str) -> String {
    scrape(ns, "127.0.0.1:4191")
}

/// `/metrics` of the admin listener at `admin`, scraped from inside `ns`.
fn scrape(ns: &str, admin: &str) -> String {
    in_ns(ns, || {
        let mut c = TcpStream::connect(admin).unwrap_or_else(|e| panic!("admin {admin}: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
            .expect("write");
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    })
}

/// Sum of the samples whose line starts with `parts[0]` and contains every other part.
fn sample(metrics: &str, parts: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(parts[0]) && parts[1..].iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Packets counted by the raw-table rule in `ns` whose line starts with `rule` and contains
/// every one of `parts` (from `iptables-save -c`).
fn packets_of(ns: &str, rule: &str, parts: &[&str]) -> u64 {
    packets_in("iptables", ns, rule, parts)
}

/// [`packets_of`] for `tool` (`iptables` or `ip6tables`).
fn packets_in(tool: &str, ns: &str, rule: &str, parts: &[&str]) -> u64 {
    let save = format!("{tool}-save");
    let raw = run(&["ip", "netns", "exec", ns, &save, "-c", "-t", "raw"]).expect("save");
    raw.lines()
        .find(|l| {
            l.split_once("] ")
                .is_some_and(|(_, r)| r.starts_with(rule) && parts.iter().all(|p| r.contains(p)))
        })
        .and_then(|l| l.strip_prefix('[')?.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counted rule {rule} {parts:?} in\n{raw}"))
}

fn packets(ns: &str, rule: &str) -> u64 {
    packets_of(ns, rule, &["--notrack"])
}

/// Waits until the proxy in `ns` answers `/ready` (its table is in force), up to 20 s.
fn await_ready(ns: &str) {
    await_admin(ns, "/ready");
}

/// Waits until the proxy in `ns` answers `/live` (started; no route table needed), up to 20 s.
fn await_live(ns: &str) {
    await_admin(ns, "/live");
}

fn await_admin(ns: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let request = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    loop {
        let ok = in_ns(ns, || {
            let Ok(mut c) = TcpStream::connect("127.0.0.1:4191") else {
                return false;
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.write_all(request.as_bytes());
            let mut s = String::new();
            let _ = c.read_to_string(&mut s);
            s.starts_with("HTTP/1.1 200")
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxy in {ns} never answered {path}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The client's route for the Service at `authority`: testers to the canary, else 90/10.
fn web_route(authority: &str, primary: &str, canary: &str) -> String {
    format!(
        "  - authority: {authority}
    rules:
      - name: testers
        matches: [{{headers: [{{name: x-canary, value: always}}]}}]
        backends: [{{name: web-canary, endpoints: ['{canary}']}}]
      - name: split
        backends:
          - {{name: web-primary, weight: 90, endpoints: ['{primary}']}}
          - {{name: web-canary, weight: 10, endpoints: ['{canary}']}}
"
    )
}

fn proxy_config(labels: &[(&str, &str)], routes: &str) -> String {
    let mut s = String::from(
        "outbound:\n  listen: 127.0.0.1:4140\nadmin:\n  listen: 0.0.0.0:4191\nlabels:\n",
    );
    for (k, v) in labels {
        s.push_str(&format!("  {k}: {v}\n"));
    }
    s.push_str(routes);
    s
}

/// Starts an injected proxy in `ns`, as its own UID, like the sidecar container.
fn start_proxy(t: &Topology, ns: &str, config: &str) {
    start_proxy_detecting(t, ns, config, DETECT);
}

/// The same with another `--detect-timeout`.
fn start_proxy_detecting(t: &Topology, ns: &str, config: &str, detect: &str) {
    let path = t.dir.join(format!("{ns}.yaml"));
    std::fs::write(&path, config).expect("write config");
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        "setpriv",
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
    ])
    .arg(env!("CARGO_BIN_EXE_serin-proxy"))
    .args(["--transparent", "--detect-timeout", detect, "--config"])
    .arg(&path)
    .env("RUST_LOG", "warn");
    t.spawn(cmd);
    await_ready(ns);
}

fn init(ns: &str, extra: &[&str]) -> Result<String, String> {
    let mut args = vec![
        "ip",
        "netns",
        "exec",
        ns,
        env!("CARGO_BIN_EXE_serin-proxy"),
        "init",
    ];
    args.extend(extra);
    run(&args)
}

fn build(t: &mut Topology) {
    let node = t.ns("node");
    for name in ["node", "client", "primary", "canary"] {
        lone_pod(t, name);
    }
    sh(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
    ]);
    for (i, name) in [(1, "client"), (2, "primary"), (3, "canary")] {
        let ns = t.ns(name);
        let host_if = format!("veth{i}");
        sh(&[
            "ip", "-n", &node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        sh(&["ip", "-n", &node, "link", "set", &host_if, "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        // Both families on the same link: IPv4, and an IPv6 ULA /64 (`nodad`: usable at once,
        // nothing else is on the link).
        for (family, node_ip, pod_ip, len, extra) in [
            (
                "-4",
                format!("10.77.{i}.1"),
                format!("10.77.{i}.2"),
                24,
                None,
            ),
            (
                "-6",
                format!("fd00:77:{i}::1"),
                format!("fd00:77:{i}::2"),
                64,
                Some("nodad"),
            ),
        ] {
            for (at, dev, ip) in [(&node, host_if.as_str(), &node_ip), (&ns, "eth0", &pod_ip)] {
                let cidr = format!("{ip}/{len}");
                let mut args = vec!["ip", "-n", at, family, "addr", "add", &cidr, "dev", dev];
                args.extend(extra);
                sh(&args);
            }
            sh(&[
                "ip", "-n", &ns, family, "route", "add", "default", "via", &node_ip,
            ]);
        }
    }
    // kube-proxy's part: the Service IP goes to the primary when nothing else routes it, for
    // each family.
    for (tool, service, primary) in [
        ("iptables", "10.96.0.10/32", format!("{PRIMARY}:8080")),
        ("ip6tables", "fd00:96::10/128", format!("[{PRIMARY6}]:8080")),
    ] {
        sh(&[
            "ip",
            "netns",
            "exec",
            &node,
            tool,
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            service,
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "DNAT",
            "--to-destination",
            &primary,
        ]);
    }
}

/// An empty topology for one test (`tag` keeps tests of one run apart), or None when the
/// test cannot run here (said loudly; a failure under `SERIN_REQUIRE_NETNS` or `CI`).
fn topology(tag: &str) -> Option<Topology> {
    if let Some(why) = missing_prerequisite() {
        let required =
            std::env::var_os("SERIN_REQUIRE_NETNS").is_some() || std::env::var_os("CI").is_some();
        eprintln!("\n!!!!!!!! SKIPPED: the netns capture test cannot run: {why} !!!!!!!!\n");
        assert!(
            !required,
            "the netns capture test must run here (SERIN_REQUIRE_NETNS/CI set) but {why}"
        );
        return None;
    }
    remove_stale_namespaces();
    let run_id = format!("{}-{tag}", std::process::id());
    let dir = std::env::temp_dir().join(format!("{PREFIX}-{run_id}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    Some(Topology {
        run_id,
        namespaces: Vec::new(),
        children: Mutex::new(Vec::new()),
        dir,
    })
}

/// One namespace of `t` with loopback up (a pod, or the node, with nothing in it yet).
fn lone_pod(t: &mut Topology, name: &str) -> String {
    let ns = t.ns(name);
    sh(&["ip", "netns", "add", &ns]);
    t.namespaces.push(ns.clone());
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    ns
}

/// The iptables-legacy tables that exist in `ns` for `families` (`ip`, `ip6`), one a line
/// (reading them creates nothing).
fn legacy_table_names(ns: &str, families: &[&str]) -> String {
    let files: Vec<String> = families
        .iter()
        .map(|f| format!("/proc/net/{f}_tables_names"))
        .collect();
    let script = format!("cat {} 2>/dev/null; true", files.join(" "));
    run(&["ip", "netns", "exec", ns, "sh", "-c", &script]).expect("read the legacy table names")
}

/// `iptables-legacy-save -t nat` in `ns` (which creates the legacy nat table there).
fn legacy_nat_save(ns: &str) -> String {
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "iptables-legacy-save",
        "-t",
        "nat",
    ])
    .expect("save")
}

/// What `ns` holds of Serin's rules, both families, both tables (empty: nothing).
fn serin_rules(ns: &str) -> String {
    let mut found = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        for table in ["nat", "raw"] {
            let saved = run(&["ip", "netns", "exec", ns, tool, "-t", table]).expect("save");
            for l in saved.lines().filter(|l| l.contains("SERIN_")) {
                found.push_str(&format!("{tool} -t {table}: {l}\n"));
            }
        }
    }
    found
}

#[test]
fn transparent_capture_routes_splits_relays_and_counts_on_a_real_kernel() {
    let Some(mut t) = topology("dual") else {
        return;
    };
    build(&mut t);
    let (client, primary, canary) = (t.ns("client"), t.ns("primary"), t.ns("canary"));
    let stop = Arc::new(AtomicBool::new(false));
    start_apps(&primary, "primary", "primary6", stop.clone());
    start_apps(&canary, "canary", "canary6", stop.clone());
    start_apps(&client, "local", "local6", stop.clone());

    // Before any rule: the Service IP reaches the primary directly (the node's DNAT), over
    // IPv4 and over IPv6 (to the app's IPv6 socket).
    assert_eq!(get(&client, SERVICE, "10.96.0.10", &[]), "primary");
    assert_eq!(get(&client, SERVICE6, "[fd00:96::10]", &[]), "primary6");

    // The pods' init containers, then their sidecars.
    for (ns, skip) in [(&primary, "4191,7001"), (&canary, "4191,7001")] {
        init(ns, &["--skip-inbound-ports", skip]).expect("init");
    }
    let out = init(&client, &["--skip-outbound-ports", "7001"]).expect("init");
    assert!(out.contains("capture rules installed"), "{out}");
    // The raw jump a few earlier development commits installed (a comment match), which the
    // next init must replace rather than keep beside its successor.
    let retired = [
        "iptables",
        "-t",
        "raw",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        "serin-proxy capture",
        "-j",
        "SERIN_NOTRACK",
    ];
    let in_client = |args: &[&str]| {
        let mut all = vec!["ip", "netns", "exec", client.as_str()];
        all.extend(args);
        run(&all)
    };
    in_client(&retired).expect("the retired jump");
    // Idempotent: a second run leaves exactly one jump per built-in chain.
    init(&client, &["--skip-outbound-ports", "7001"]).expect("init again");
    let saved = run(&["ip", "netns", "exec", &client, "iptables-save", "-t", "nat"]).expect("save");
    assert_eq!(saved.matches("-j SERIN_OUTBOUND\n").count(), 1, "{saved}");
    assert_eq!(saved.matches("-j SERIN_INBOUND\n").count(), 1, "{saved}");
    assert_eq!(
        saved.matches("--uid-owner 2102 -j RETURN").count(),
        1,
        "{saved}"
    );
    // IPv6 too (the namespace has IPv6, and --ipv6 defaults to auto): the same chains, once.
    let saved6 = run(&[
        "ip",
        "netns",
        "exec",
        &client,
        "ip6tables-save",
        "-t",
        "nat",
    ])
    .expect("save");
    assert_eq!(saved6.matches("-j SERIN_OUTBOUND\n").count(), 1, "{saved6}");
    assert_eq!(saved6.matches("-j SERIN_INBOUND\n").count(), 1, "{saved6}");
    assert!(
        saved6.contains("-A SERIN_OUTBOUND -d ::1/128 -j RETURN"),
        "{saved6}"
    );
    assert!(
        saved6.contains("-A SERIN_OUTBOUND -p tcp -m tcp --dport 7001 -j RETURN"),
        "{saved6}"
    );
    assert!(
        out.contains("IPv6 capture rules installed (ip6tables"),
        "{out}"
    );
    assert!(
        out.contains("loopback-only TCP exempt from connection tracking"),
        "{out}"
    );
    assert!(
        out.contains(
            "upstream connections and skip-port connections exempt from connection tracking"
        ),
        "{out}"
    );
    let raw = run(&["ip", "netns", "exec", &client, "iptables-save", "-t", "raw"]).expect("save");
    assert_eq!(
        raw.matches("-A OUTPUT -o lo -j SERIN_NOTRACK\n").count(),
        1,
        "{raw}"
    );
    assert_eq!(
        raw.matches("-s 127.0.0.0/8 -d 127.0.0.0/8 -p tcp -j CT --notrack")
            .count(),
        1,
        "{raw}"
    );
    assert!(!raw.contains("serin-proxy capture"), "{raw}");
    for jump in [
        "-A OUTPUT ! -o lo -p tcp -j SERIN_NOTRACK_OUT\n",
        "-A PREROUTING ! -i lo -p tcp -j SERIN_NOTRACK_IN\n",
    ] {
        assert_eq!(raw.matches(jump).count(), 1, "{jump} in\n{raw}");
    }

    let identity = |deployment: &'static str, pod: &'static str| {
        vec![
            ("namespace", "test"),
            ("deployment", deployment),
            ("pod", pod),
        ]
    };
    start_proxy(
        &t,
        &primary,
        &proxy_config(
            &identity("web-primary", "web-primary-7d9f-abcde"),
            "routes: []\n",
        ),
    );
    start_proxy(
        &t,
        &canary,
        &proxy_config(
            &identity("web-canary", "web-canary-5c4b-fghij"),
            "routes: []\n",
        ),
    );
    // The Service by each cluster IP, each family to its own pod addresses.
    let routes = format!(
        "routes:\n{}{}",
        web_route(
            "10.96.0.10:80",
            &format!("{PRIMARY}:8080"),
            &format!("{CANARY}:8080")
        ),
        web_route(
            "'[fd00:96::10]:80'",
            &format!("[{PRIMARY6}]:8080"),
            &format!("[{CANARY6}]:8080")
        ),
    );
    start_proxy(
        &t,
        &client,
        &proxy_config(&identity("client", "client-0"), &routes),
    );

    // 1. The 90/10 split applies to a client that only knows the Service IP (Host is the IP).
    let n = 200;
    let to_canary = canary_share(&client, SERVICE, "10.96.0.10", n, ["primary", "canary"]);
    // Binomial(200, 0.1): mean 20, sd 4.2; 4..=45 is beyond 3.8 sd on either side. Without
    // the proxy every answer would be "primary" (the node's DNAT).
    assert!(
        (4..=45).contains(&to_canary),
        "{to_canary} of {n} to the canary; expected about 20"
    );

    // 2. The header match too, with a Host the table does not know (routed by the IP).
    for _ in 0..10 {
        assert_eq!(
            get(&client, SERVICE, "web.test", &[("x-canary", "always")]),
            "canary"
        );
    }

    // 3. No loop: the proxy's own upstream connections were not captured again. Every client
    // connection was accepted once, and none came from the proxy itself.
    let m = metrics(&client);
    let accepted = sample(
        &m,
        &["tcp_open_total{", "direction=\"outbound\"", "peer=\"src\""],
    );
    assert_eq!(accepted, f64::from(n + 10), "{m}");
    let routed = sample(
        &m,
        &[
            "response_total{",
            "direction=\"outbound\"",
            "classification=\"success\"",
        ],
    );
    assert_eq!(routed, f64::from(n + 10), "{m}");

    // 4. Inbound: counted with direction="inbound" and the pod's identity.
    let pm = metrics(&primary);
    let inbound = sample(
        &pm,
        &[
            "request_total{",
            "direction=\"inbound\"",
            "namespace=\"test\"",
            "deployment=\"web-primary\"",
            "pod=\"web-primary-7d9f-abcde\"",
        ],
    );
    assert_eq!(inbound, f64::from(n - to_canary), "{pm}");
    let cm = metrics(&canary);
    let inbound = sample(
        &cm,
        &[
            "request_total{",
            "direction=\"inbound\"",
            "deployment=\"web-canary\"",
        ],
    );
    assert_eq!(inbound, f64::from(to_canary + 10), "{cm}");

    // 4b. The inbound proxies' loopback legs to their apps (127.0.0.1:8080) were not tracked,
    // while the redirected connections they came in on were (their REDIRECT needs it).
    let notracked = |ns: &str| packets(ns, "-A SERIN_NOTRACK -");
    let tracked = |ns: &str| run(&["ip", "netns", "exec", ns, "cat", "/proc/net/nf_conntrack"]);
    for ns in [&primary, &canary] {
        assert!(
            notracked(ns) > 0,
            "no loopback packet went untracked in {ns}"
        );
        let entries = tracked(ns).expect("conntrack table");
        assert!(
            !entries.contains("dst=127.0.0.1 "),
            "a loopback connection was tracked in {ns}:\n{entries}"
        );
        assert!(
            entries.contains("dport=8080"),
            "the redirected inbound connections are not tracked in {ns}:\n{entries}"
        );
    }

    // 5. A plain TCP echo to an address the table does not know passes byte for byte
    // (through both proxies as opaque TCP).
    let payload: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    let echoed = echo_through(&client, &format!("{PRIMARY}:7000"), &payload);
    assert!(
        echoed == payload,
        "echo differs: {} bytes back of {}",
        echoed.len(),
        payload.len()
    );
    let m = metrics(&client);
    let relayed = sample(
        &m,
        &[
            "tcp_write_bytes_total{",
            "direction=\"outbound\"",
            "peer=\"dst\"",
        ],
    );
    assert!(
        relayed >= payload.len() as f64,
        "opaque bytes not counted: {relayed}\n{m}"
    );

    // 6. A protocol where the server speaks first works after the detection timeout.
    let started = Instant::now();
    let greeting = in_ns(&client, || {
        let mut c = TcpStream::connect(format!("{PRIMARY}:2525")).expect("connect banner");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let k = c.read(&mut buf).expect("greeting");
        c.write_all(b"EHLO me\r\n").expect("write");
        let mut back = [0u8; 9];
        c.read_exact(&mut back).expect("echo after greeting");
        assert_eq!(&back, b"EHLO me\r\n");
        String::from_utf8_lossy(&buf[..k]).to_string()
    });
    assert_eq!(greeting, "220 primary ready\r\n");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "greeting came before the detection timeout"
    );

    // 7. Skip ports bypass the proxies (outbound on the client, inbound on the primary).
    let before_client = metrics(&client);
    let before_primary = metrics(&primary);
    let echoed = echo_line(&client, &format!("{PRIMARY}:7001"), b"\x01skip");
    assert_eq!(echoed, b"\x01skip");
    assert_eq!(
        opened(&metrics(&client), "outbound"),
        opened(&before_client, "outbound")
    );
    assert_eq!(
        opened(&metrics(&primary), "inbound"),
        opened(&before_primary, "inbound")
    );
    // Loopback is never captured: the client pod's own app answers directly.
    assert_eq!(get(&client, "127.0.0.1:8080", "localhost", &[]), "local");
    assert_eq!(
        opened(&metrics(&client), "outbound"),
        opened(&before_client, "outbound")
    );

    // 7b. The client pod's own outgoing connections that no rule translates went untracked
    // both ways: its proxy's upstream connections (to the pods, for the split, the echo and
    // the banner) and its app's connection to the skip port, while every redirected
    // connection (to the Service IP, to the pods' echo and banner) stayed tracked.
    let entries = run(&[
        "ip",
        "netns",
        "exec",
        &client,
        "cat",
        "/proc/net/nf_conntrack",
    ])
    .expect("conntrack table");
    // A tracked connection that reached a pod untranslated shows the pod as its reply's source
    // (a redirected one shows 127.0.0.1, the proxy), and so would one conntrack picked up
    // mid-stream from a reply.
    for pod in [PRIMARY, CANARY] {
        assert!(
            !entries.contains(&format!("src={pod} dst=10.77.1.2 ")),
            "a connection to {pod} was tracked in the client pod:\n{entries}"
        );
    }
    for redirected in ["dst=10.96.0.10 sport=", "dport=7000 ", "dport=2525 "] {
        assert!(
            entries.contains(redirected),
            "the redirected connections ({redirected}) are not tracked:\n{entries}"
        );
    }
    assert!(
        entries.contains("sport=4140 "),
        "the redirected connections are not translated to the outbound listener:\n{entries}"
    );
    for (rule, part) in [
        ("-A SERIN_NOTRACK_OUT -", "--uid-owner 2102"),
        ("-A SERIN_NOTRACK_OUT -", "--dports 7001"),
        ("-A SERIN_NOTRACK_IN -", "-m socket"),
    ] {
        assert!(
            packets_of(&client, rule, &[part]) > 0,
            "no packet matched {rule} ... {part} in the client pod"
        );
    }

    // 7c. The documented gap of the upstream exemption, and why the REDIRECT rules take only
    // SYNs: an app listening on its pod IP (not 0.0.0.0) on an ephemeral-range port. Its
    // listener matches `-m socket`, so the inbound connection goes untracked and bypasses the
    // primary's proxy; conntrack then picks the app's answers up mid-stream as a new
    // connection, which must not be redirected to the outbound listener (it would be reset).
    let pinned = in_ns(&primary, || TcpListener::bind((PRIMARY, 40000)))
        .expect("bind the pod IP in the primary pod");
    std::thread::spawn(move || {
        if let Ok((c, _)) = pinned.accept() {
            echo(c, "pinned");
        }
    });
    let before_primary = metrics(&primary);
    let echoed = in_ns(&client, || {
        let mut c = TcpStream::connect(format!("{PRIMARY}:40000")).expect("connect pinned");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut back = Vec::new();
        for line in [&b"one\n"[..], b"two\n", b"three\n"] {
            c.write_all(line).expect("write");
            let mut got = vec![0u8; line.len()];
            c.read_exact(&mut got)
                .expect("echo from the pinned listener");
            back.extend(got);
        }
        back
    });
    assert_eq!(echoed, b"one\ntwo\nthree\n");
    assert_eq!(
        opened(&metrics(&primary), "inbound"),
        opened(&before_primary, "inbound"),
        "the pinned listener's connection was expected to bypass the primary's proxy"
    );

    // IPv6: everything above that concerns the capture, through the ip6tables rules.
    ipv6_is_captured_as_ipv4_is(&t.ns("node"), &client, &primary, &canary);

    // 8. Removing the rules restores direct traffic: the Service IP goes back to the node's
    // DNAT (always the primary) and the client's proxy sees nothing, for both families. A
    // retired jump goes too.
    in_client(&retired).expect("the retired jump");
    let out = init(&client, &["--remove"]).expect("remove");
    assert!(out.contains("removed the IPv4 capture rules"), "{out}");
    assert!(out.contains("removed the IPv6 capture rules"), "{out}");
    assert_eq!(serin_rules(&client), "");
    let before = opened(&metrics(&client), "outbound");
    for _ in 0..20 {
        assert_eq!(get(&client, SERVICE, "10.96.0.10", &[]), "primary");
        assert_eq!(get(&client, SERVICE6, "[fd00:96::10]", &[]), "primary6");
    }
    assert_eq!(opened(&metrics(&client), "outbound"), before);

    // 9. Without the capabilities, init fails with a message naming them.
    let err = run(&[
        "ip",
        "netns",
        "exec",
        &client,
        "setpriv",
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
        "--inh-caps=-all",
        env!("CARGO_BIN_EXE_serin-proxy"),
        "init",
    ])
    .expect_err("init without capabilities must fail");
    assert!(err.contains("NET_ADMIN and NET_RAW"), "{err}");

    stop.store(true, Ordering::Relaxed);
}

/// The IPv6 half of the capture test, on the same pods and proxies: a client that knows only
/// the Service's IPv6 cluster IP is split and matched, opaque TCP is relayed byte for byte,
/// skip ports and loopback bypass the proxies, the proxy's own upstream connections are not
/// captured again, inbound traffic is counted with the pods' identity and reaches the apps on
/// `[::1]` (their IPv6 sockets: the HTTP apps answer `primary6` / `canary6` there), and the
/// admin port answers at the pod's IPv6 address (scraped from the `node`).
fn ipv6_is_captured_as_ipv4_is(node: &str, client: &str, primary: &str, canary: &str) {
    let counted = |m: &str, parts: &[&str]| sample(m, parts);
    let client_before = metrics(client);
    let primary_before = metrics(primary);
    let canary_before = metrics(canary);
    let inbound_requests = |m: &str, deployment: &str, pod: &str| {
        counted(
            m,
            &[
                "request_total{",
                "direction=\"inbound\"",
                "namespace=\"test\"",
                &format!("deployment=\"{deployment}\""),
                &format!("pod=\"{pod}\""),
            ],
        )
    };

    // 1. The 90/10 split, for a client that only knows the IPv6 Service IP.
    let n = 200;
    let to_canary = canary_share(
        client,
        SERVICE6,
        "[fd00:96::10]",
        n,
        ["primary6", "canary6"],
    );
    // Binomial(200, 0.1), as for IPv4; without the proxy every answer would be "primary6".
    assert!(
        (4..=45).contains(&to_canary),
        "{to_canary} of {n} to the canary over IPv6; expected about 20"
    );
    // 2. The header match, with a Host the table does not know (routed by the IPv6 address).
    for _ in 0..10 {
        assert_eq!(
            get(client, SERVICE6, "web.test", &[("x-canary", "always")]),
            "canary6"
        );
    }

    // 3. No loop: each client connection was accepted once, none came from the proxy itself.
    let m = metrics(client);
    let delta = |parts: &[&str]| counted(&m, parts) - counted(&client_before, parts);
    assert_eq!(
        delta(&["tcp_open_total{", "direction=\"outbound\"", "peer=\"src\""]),
        f64::from(n + 10),
        "{m}"
    );
    assert_eq!(
        delta(&[
            "response_total{",
            "direction=\"outbound\"",
            "classification=\"success\"",
        ]),
        f64::from(n + 10),
        "{m}"
    );

    // 4. Inbound: counted with direction="inbound" and each pod's identity.
    let pm = metrics(primary);
    assert_eq!(
        inbound_requests(&pm, "web-primary", "web-primary-7d9f-abcde")
            - inbound_requests(&primary_before, "web-primary", "web-primary-7d9f-abcde"),
        f64::from(n - to_canary),
        "{pm}"
    );
    let cm = metrics(canary);
    assert_eq!(
        inbound_requests(&cm, "web-canary", "web-canary-5c4b-fghij")
            - inbound_requests(&canary_before, "web-canary", "web-canary-5c4b-fghij"),
        f64::from(to_canary + 10),
        "{cm}"
    );
    // 4a. Prometheus (and the kubelet's probes) reach the admin port at the pod's IPv6
    // address: it is an inbound skip port, served by the admin listener's IPv6 twin.
    let scraped = scrape(node, &format!("[{PRIMARY6}]:4191"));
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(scraped.contains("deployment=\"web-primary\""), "{scraped}");

    // 4b. The IPv6 conntrack exemptions are in force: the inbound proxies' legs to their apps
    // on [::1], and the client proxy's upstream connections.
    for ns in [primary, canary] {
        assert!(
            packets_in("ip6tables", ns, "-A SERIN_NOTRACK -", &["--notrack"]) > 0,
            "no IPv6 loopback packet went untracked in {ns}"
        );
    }
    assert!(
        packets_in(
            "ip6tables",
            client,
            "-A SERIN_NOTRACK_OUT -",
            &["--uid-owner 2102"]
        ) > 0,
        "no IPv6 upstream packet of the client's proxy went untracked"
    );

    // 5. Opaque TCP to an IPv6 address the table does not know: byte for byte, counted.
    let payload: Vec<u8> = (0..128 * 1024u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let echoed = echo_through(client, &format!("[{PRIMARY6}]:7000"), &payload);
    assert!(
        echoed == payload,
        "IPv6 echo differs: {} bytes back of {}",
        echoed.len(),
        payload.len()
    );
    let relayed = |m: &str| {
        counted(
            m,
            &[
                "tcp_write_bytes_total{",
                "direction=\"outbound\"",
                "peer=\"dst\"",
            ],
        )
    };
    let after = metrics(client);
    assert!(
        relayed(&after) - relayed(&m) >= payload.len() as f64,
        "opaque IPv6 bytes not counted\n{after}"
    );

    // 6. Skip ports bypass both proxies; loopback ([::1]) is never captured.
    let (client_before, primary_before) = (metrics(client), metrics(primary));
    let echoed = echo_line(client, &format!("[{PRIMARY6}]:7001"), b"\x06skip");
    assert_eq!(echoed, b"\x06skip");
    assert_eq!(get(client, "[::1]:8080", "localhost", &[]), "local6");
    // Link-local destinations are not captured either (the proxy could not reach them: the
    // original destination comes back without its interface): an echo on the node's side of
    // the client's link, at a link-local address, answers directly.
    sh(&[
        "ip",
        "-n",
        node,
        "addr",
        "add",
        "fe80::77:1/64",
        "dev",
        "veth1",
        "nodad",
    ]);
    let linked = in_ns(node, || TcpListener::bind("[::]:7100")).expect("bind in the node");
    std::thread::spawn(move || {
        if let Ok((c, _)) = linked.accept() {
            echo(c, "node");
        }
    });
    let ifindex = run(&[
        "ip",
        "netns",
        "exec",
        client,
        "cat",
        "/sys/class/net/eth0/ifindex",
    ])
    .expect("eth0's index");
    let echoed = echo_line(
        client,
        &format!("[fe80::77:1%{}]:7100", ifindex.trim()),
        b"\xfelink",
    );
    assert_eq!(echoed, b"\xfelink");
    assert_eq!(
        opened(&metrics(client), "outbound"),
        opened(&client_before, "outbound")
    );
    assert_eq!(
        opened(&metrics(primary), "inbound"),
        opened(&primary_before, "inbound")
    );
}

#[test]
fn init_detects_the_iptables_backend_without_creating_a_legacy_table() {
    let Some(mut t) = topology("detect") else {
        return;
    };
    let pod = lone_pod(&mut t, "pod");
    let legacy_tables = || legacy_table_names(&pod, &["ip", "ip6"]);
    assert!(!legacy_tables().contains("nat"), "{}", legacy_tables());
    // Auto-detection (the default), then an install and a removal with what it picked.
    let out = init(&pod, &[]).expect("init");
    assert!(
        out.contains("capture rules installed (iptables-nft)"),
        "{out}"
    );
    init(&pod, &["--remove"]).expect("remove");
    assert!(
        !legacy_tables().lines().any(|l| l.trim() == "nat"),
        "detection created a legacy nat table in the pod:\n{}",
        legacy_tables()
    );
    // The check can see one: the legacy save that detection no longer runs creates it.
    legacy_nat_save(&pod);
    assert!(
        legacy_tables().lines().any(|l| l.trim() == "nat"),
        "{}",
        legacy_tables()
    );
}

/// A node where only iptables-legacy works (a kernel without nf_tables, stood for by an
/// `iptables-nft` that fails as it fails there): the pod's fresh namespace holds no rule in
/// either backend, and detection must not pick the one that cannot run.
#[test]
fn init_picks_iptables_legacy_where_iptables_nft_does_not_work() {
    let Some(mut t) = topology("nonft") else {
        return;
    };
    let pod = lone_pod(&mut t, "pod");
    let bin = t.dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    for tool in ["iptables-nft", "ip6tables-nft"] {
        for (name, body) in [
            // `--version` runs without the kernel; every other call needs nf_tables.
            (
                tool.to_string(),
                format!(
                    "[ \"$1\" = --version ] && {{ echo '{tool} v1.8.9 (nf_tables)'; exit 0; }}\n"
                ),
            ),
            (format!("{tool}-save"), String::new()),
            (format!("{tool}-restore"), String::new()),
        ] {
            let script = format!(
                "#!/bin/sh\n{body}echo '{name} v1.8.9 (nf_tables): Failed to initialize nft: Protocol not supported' >&2\nexit 1\n"
            );
            write_executable(&bin.join(&name), &script);
        }
    }
    let path = format!(
        "PATH={}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let init_here = |extra: &[&str]| {
        let mut args = vec!["ip", "netns", "exec", &pod, "env", &path];
        args.extend([env!("CARGO_BIN_EXE_serin-proxy"), "init", "--ipv6", "off"]);
        args.extend(extra);
        run(&args)
    };
    let out = init_here(&[]).expect("init");
    assert!(
        out.contains("capture rules installed (iptables-legacy)"),
        "{out}"
    );
    let legacy = legacy_nat_save(&pod);
    assert!(legacy.contains("-j SERIN_OUTBOUND"), "{legacy}");
    init_here(&["--remove"]).expect("remove");
    let legacy = legacy_nat_save(&pod);
    assert!(!legacy.contains("SERIN_"), "{legacy}");
}

/// `--remove` with the legacy backend must not create the legacy tables it has nothing to
/// remove from: `ip6tables-legacy -t nat -D ...` alone creates an empty IPv6 nat table (and
/// with it netfilter hooks every IPv6 packet of the pod passes).
#[test]
fn removing_with_the_legacy_backend_creates_no_table_for_a_family_never_captured() {
    let Some(mut t) = topology("legrm") else {
        return;
    };
    let pod = lone_pod(&mut t, "pod");
    let tables = |family: &str| legacy_table_names(&pod, &[family]);
    let out = init(&pod, &["--iptables-mode", "legacy", "--ipv6", "off"]).expect("init");
    assert!(
        out.contains("capture rules installed (iptables-legacy)"),
        "{out}"
    );
    assert_eq!(tables("ip6").trim(), "", "IPv6 was never captured");
    let out = init(&pod, &["--iptables-mode", "legacy", "--remove"]).expect("remove");
    assert_eq!(serin_rules(&pod), "");
    assert_eq!(
        tables("ip6").trim(),
        "",
        "the removal created legacy IPv6 tables:\n{out}"
    );
    assert!(
        !out.contains("removed the IPv6 capture rules"),
        "nothing of IPv6 was there to remove:\n{out}"
    );
    // A removal run twice leaves nothing either, IPv4 included (its tables stay: they exist).
    init(&pod, &["--iptables-mode", "legacy", "--remove"]).expect("remove again");
    assert_eq!(tables("ip6").trim(), "");
}

#[test]
fn ipv6_capture_is_installed_whole_or_not_at_all() {
    let Some(mut t) = topology("v6") else {
        return;
    };
    // A pod whose namespace has no IPv6 (switched off on loopback, so no ::1).
    let no_v6 = lone_pod(&mut t, "nov6");
    sh(&[
        "ip",
        "netns",
        "exec",
        &no_v6,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6",
    ]);
    // Asked for, IPv6 capture fails there, naming the flag, and installs nothing.
    let err = init(&no_v6, &["--ipv6", "on"]).expect_err("--ipv6 on without IPv6");
    assert!(
        err.contains("--ipv6 on") && err.contains("no IPv6"),
        "{err}"
    );
    assert_eq!(serin_rules(&no_v6), "");
    // By default (auto) the pod gets its IPv4 capture and the log says IPv6 is not captured.
    let out = init(&no_v6, &[]).expect("init without IPv6");
    assert!(
        out.contains("IPv4 captured only: the pod has no IPv6"),
        "{out}"
    );
    let rules = serin_rules(&no_v6);
    assert!(rules.contains("iptables-save -t nat"), "{rules}");
    assert!(!rules.contains("ip6tables-save"), "{rules}");
    // The proxy there: its IPv6 listeners are skipped by default and refused when required.
    let proxy = |ipv6: &str| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &no_v6])
            .arg(env!("CARGO_BIN_EXE_serin-proxy"))
            .args(["--transparent", "--transparent-ipv6", ipv6])
            .args(["--admin", "127.0.0.1:4191"])
            .env("RUST_LOG", "warn");
        cmd
    };
    // It must exit by itself; one that started anyway is killed, not waited for.
    let mut on = proxy("on");
    on.stdin(Stdio::null());
    let (status, stderr) = exits_by_itself(on, "the proxy with --transparent-ipv6 on and no IPv6");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("--transparent-ipv6 on") && stderr.contains("[::1]:4140"),
        "{stderr}"
    );
    t.spawn(proxy("auto"));
    await_live(&no_v6);
    init(&no_v6, &["--remove"]).expect("remove");
    assert_eq!(serin_rules(&no_v6), "");

    // A pod of an IPv4-only cluster: IPv6 on loopback (::1), no IPv6 address of its own. By
    // default (auto) it gets IPv4 capture only, so a node whose kernel lacks IPv6 NAT cannot
    // fail it for traffic that cannot exist; `--ipv6 on` captures IPv6 there all the same.
    let v4_only = lone_pod(&mut t, "v4only");
    let out = init(&v4_only, &[]).expect("init in an IPv4-only pod");
    assert!(
        out.contains("IPv4 captured only: the pod has no IPv6 address"),
        "{out}"
    );
    let rules = serin_rules(&v4_only);
    assert!(rules.contains("iptables-save -t nat"), "{rules}");
    assert!(!rules.contains("ip6tables-save"), "{rules}");
    init(&v4_only, &["--ipv6", "on"]).expect("init --ipv6 on in an IPv4-only pod");
    assert!(
        serin_rules(&v4_only).contains("ip6tables-save -t nat"),
        "{}",
        serin_rules(&v4_only)
    );
    // Removal takes both families away, whatever the flags were.
    init(&v4_only, &["--remove"]).expect("remove");
    assert_eq!(serin_rules(&v4_only), "");

    // A pod with IPv6 (an address of its own) whose ip6tables refuses the rules (an
    // ip6tables-restore that fails as one does on a kernel without the IPv6 nat table): the
    // IPv4 rules go again, the error says what to do.
    let v6 = lone_pod(&mut t, "badv6");
    sh(&[
        "ip",
        "-n",
        &v6,
        "addr",
        "add",
        "fd00:99::2/128",
        "dev",
        "lo",
        "nodad",
    ]);
    let fake = t.dir.join("bin");
    std::fs::create_dir_all(&fake).expect("fake bin dir");
    write_executable(
        &fake.join("ip6tables-nft-restore"),
        "#!/bin/sh\ncat >/dev/null\necho \"ip6tables-restore v1.8.9 (nf_tables): can't initialize ip6tables table \\`nat': Table does not exist\" >&2\nexit 1\n",
    );
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let err = run(&[
        "ip",
        "netns",
        "exec",
        &v6,
        "env",
        &format!("PATH={path}"),
        env!("CARGO_BIN_EXE_serin-proxy"),
        "init",
        "--iptables-mode",
        "nft",
    ])
    .expect_err("init with a failing ip6tables");
    assert!(
        err.contains("installing the IPv6 capture rules failed"),
        "{err}"
    );
    assert!(err.contains("--ipv6 off"), "{err}");
    assert!(err.contains("can't initialize ip6tables table"), "{err}");
    assert_eq!(serin_rules(&v6), "", "a failed init left rules behind");
    // With IPv6 capture turned off the same pod gets IPv4 capture, and the log says so.
    let out = init(&v6, &["--ipv6", "off"]).expect("init --ipv6 off");
    assert!(out.contains("IPv6 not captured (--ipv6 off)"), "{out}");
    assert!(
        !serin_rules(&v6).contains("ip6tables"),
        "{}",
        serin_rules(&v6)
    );
}

/// No root needed: the dry run touches nothing.
#[test]
fn the_dry_run_prints_both_families_unless_ipv6_is_off() {
    let dry = |extra: &[&str]| {
        let mut args = vec![env!("CARGO_BIN_EXE_serin-proxy"), "init", "--dry-run"];
        args.extend(extra);
        run(&args).expect("dry run")
    };
    let both = dry(&["--iptables-mode", "nft", "--skip-outbound-ports", "3306"]);
    let v6 = both
        .find("# IPv6 (ip6tables-nft)\n")
        .unwrap_or_else(|| panic!("no IPv6 section in\n{both}"));
    let (ipv4, ipv6) = both.split_at(v6);
    assert!(ipv4.starts_with("# IPv4 (iptables-nft)\n"), "{both}");
    assert!(
        ipv4.contains("-A SERIN_OUTBOUND -d 127.0.0.0/8 -j RETURN\n"),
        "{ipv4}"
    );
    for line in [
        "# ip6tables-nft-restore --noflush <<EOF\n*nat\n",
        "-A SERIN_OUTBOUND -d ::1/128 -j RETURN\n",
        "-A SERIN_OUTBOUND -p tcp --dport 3306 -j RETURN\n",
        "-A SERIN_NOTRACK -s ::1/128 -d ::1/128 -p tcp -j CT --notrack\n",
        "ip6tables-nft -t nat -A OUTPUT -p tcp -m comment --comment \"serin-proxy capture\" -j SERIN_OUTBOUND\n",
        "ip6tables-nft -t raw -A PREROUTING ! -i lo -p tcp -j SERIN_NOTRACK_IN\n",
    ] {
        assert!(ipv6.contains(line), "{line:?} not in\n{ipv6}");
    }
    let v4_only = dry(&["--ipv6", "off"]);
    assert!(!v4_only.contains("ip6tables"), "{v4_only}");
    assert!(
        v4_only.contains("# IPv6 not captured (--ipv6 off)"),
        "{v4_only}"
    );
}

/// Servers in `ns` for the opaque-TCP test, each reporting what it saw on `seen`:
/// - 7100 writes `partial` and then resets the connection;
/// - 7101 answers `got` to the first byte, then reports how the client left (`eof`/`reset`);
/// - 7102 writes `hello`, half-closes, and reports everything it reads until the client's end.
fn start_edge_apps(ns: &str) -> std::sync::mpsc::Receiver<String> {
    let (tx, seen) = std::sync::mpsc::channel();
    for (port, handle) in [
        (
            7100u16,
            reset_after_partial as fn(TcpStream) -> Option<String>,
        ),
        (7101, report_how_the_client_left),
        (7102, half_close_first),
    ] {
        let l = in_ns(ns, || TcpListener::bind(("0.0.0.0", port)))
            .unwrap_or_else(|e| panic!("bind {port} in {ns}: {e}"));
        let tx = tx.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                    if let Some(s) = handle(c) {
                        let _ = tx.send(s);
                    }
                });
            }
        });
    }
    seen
}

fn reset_after_partial(mut c: TcpStream) -> Option<String> {
    c.write_all(b"partial").ok()?;
    std::thread::sleep(Duration::from_millis(200));
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .ok()?;
    None
}

fn report_how_the_client_left(mut c: TcpStream) -> Option<String> {
    let mut b = [0u8; 64];
    c.read_exact(&mut b[..1]).ok()?;
    c.write_all(b"got").ok()?;
    loop {
        match c.read(&mut b) {
            Ok(0) => return Some("eof".into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some("reset".into());
            }
            Err(e) => return Some(format!("error: {e}")),
        }
    }
}

fn half_close_first(mut c: TcpStream) -> Option<String> {
    c.write_all(b"hello").ok()?;
    c.shutdown(std::net::Shutdown::Write).ok()?;
    let mut got = Vec::new();
    c.read_to_end(&mut got).ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn opaque_tcp_passes_half_closes_and_resets_and_keeps_no_descriptor() {
    let Some(mut t) = topology("opaque") else {
        return;
    };
    build(&mut t);
    let (client, primary) = (t.ns("client"), t.ns("primary"));
    let seen = start_edge_apps(&primary);
    let stop = Arc::new(AtomicBool::new(false));
    start_apps_on(&primary, false, "primary", stop.clone());
    init(&client, &[]).expect("init");
    start_proxy(&t, &client, &proxy_config(&[], "routes: []\n"));
    let next_seen = || {
        seen.recv_timeout(Duration::from_secs(20))
            .expect("the server reported")
    };

    // The server half-closes first: the client reads its end, then still sends.
    in_ns(&client, || {
        let mut c = TcpStream::connect(format!("{PRIMARY}:7102")).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("the server's half");
        assert_eq!(got, b"hello");
        c.write_all(b"late words")
            .expect("write after the server's end");
        c.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    assert_eq!(next_seen(), "late words");

    // The server resets: the client sees a reset, not an end (what came before the reset
    // could otherwise pass for a whole answer).
    let read = in_ns(&client, || {
        let mut c = TcpStream::connect(format!("{PRIMARY}:7100")).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut got = Vec::new();
        let r = c.read_to_end(&mut got);
        (got, r.map_err(|e| e.kind()))
    });
    assert_eq!(read.0, b"partial");
    assert_eq!(
        read.1,
        Err(std::io::ErrorKind::ConnectionReset),
        "the server's reset reached the client as {:?}",
        read.1
    );

    // The client resets: the server sees a reset.
    in_ns(&client, || {
        let mut c = TcpStream::connect(format!("{PRIMARY}:7101")).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(b"\x01").expect("write");
        let mut got = [0u8; 3];
        c.read_exact(&mut got).expect("got");
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
    });
    assert_eq!(
        next_seen(),
        "reset",
        "the client's reset reached the server"
    );

    // Clients that say nothing and leave: after the detection timeout each is relayed as
    // opaque TCP, and once they are gone the proxy holds no descriptor for them.
    let fds = |m: &str| sample(m, &["process_open_fds"]);
    let dst_opens = |m: &str| {
        sample(
            m,
            &["tcp_open_total{", "direction=\"outbound\"", "peer=\"dst\""],
        )
    };
    let before = metrics(&client);
    let silent: Vec<TcpStream> = in_ns(&client, || {
        (0..50)
            .map(|_| TcpStream::connect(format!("{PRIMARY}:7000")).expect("connect"))
            .collect()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while dst_opens(&metrics(&client)) < dst_opens(&before) + 50.0 {
        assert!(
            Instant::now() < deadline,
            "silent clients were never relayed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = fds(&metrics(&client));
        if now <= fds(&before) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy holds {now} descriptors, {} before the silent clients",
            fds(&before)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn clients_holding_a_partial_head_cost_no_cpu_while_the_protocol_is_detected() {
    let Some(mut t) = topology("sniff") else {
        return;
    };
    build(&mut t);
    let (client, primary) = (t.ns("client"), t.ns("primary"));
    let stop = Arc::new(AtomicBool::new(false));
    start_apps_on(&primary, false, "primary", stop.clone());
    init(&client, &[]).expect("init");
    // Long enough to watch the detection wait.
    start_proxy_detecting(&t, &client, &proxy_config(&[], "routes: []\n"), "30s");
    let cpu = |m: &str| sample(m, &["process_cpu_seconds_total"]);
    // Each sends the start of an HTTP/1 head and then waits: the proxy cannot tell yet.
    let held: Vec<TcpStream> = in_ns(&client, || {
        (0..500)
            .map(|_| {
                let mut c = TcpStream::connect(format!("{PRIMARY}:8080")).expect("connect");
                c.write_all(b"GET / HTTP/1.1\r\nhost: prim").expect("write");
                c
            })
            .collect()
    });
    // (A connection is counted in tcp_* only once its protocol is known, so there is no
    // event to wait for: give the accepts a moment, then measure two seconds of the wait.)
    std::thread::sleep(Duration::from_secs(1));
    let from = cpu(&metrics(&client));
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu(&metrics(&client)) - from;
    // 0.43 s for 200 when each connection looked again every millisecond.
    assert!(
        used < 0.2,
        "the proxy used {used:.2} s of CPU in 2 s waiting on 500 partial heads"
    );
    // The rest of a head is noticed when it comes, not at the 30 s detection timeout.
    let started = Instant::now();
    for mut c in held.into_iter().take(5) {
        c.write_all(b"ary\r\nconnection: close\r\n\r\n")
            .expect("the rest of the head");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut answer = String::new();
        c.read_to_string(&mut answer).expect("answer");
        assert!(answer.ends_with("primary\n"), "{answer}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the completed heads waited for the detection timeout"
    );
    stop.store(true, Ordering::Relaxed);
}

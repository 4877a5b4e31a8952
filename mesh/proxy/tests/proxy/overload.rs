//! Overload at the listeners: out of file descriptors, and the per-listener connection limit.
//! The descriptor test runs the real binary under `ulimit -n`, as a pod with a low limit would.

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serin_proxy::{Proxy, ProxyConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Total CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// The address after `key=` in a log line (`outbound=127.0.0.1:1234`, `admin=Some(...)`).
fn addr_after(line: &str, key: &str) -> Option<std::net::SocketAddr> {
    let at = line.find(key)? + key.len();
    let rest = line[at..].trim_start_matches("Some(");
    let end = rest.find([' ', ')']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn out_of_file_descriptors_the_listener_backs_off_logs_once_and_counts() {
    let dir = std::env::temp_dir().join(format!("serin-overload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("proxy.yaml");
    std::fs::write(
        &cfg,
        "outbound:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nroutes: []\n",
    )
    .expect("write config");
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 40 && exec \"$0\" --config \"$1\"",
            env!("CARGO_BIN_EXE_serin-proxy"),
        ])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serin-proxy");
    let logs = child.stdout.take().expect("stdout piped");
    let pid = child.id();
    let child = Child(child);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (warn_tx, warn_rx) = std::sync::mpsc::channel();
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(logs).lines().map_while(Result::ok) {
                if line.contains("serin-proxy listening") {
                    let _ =
                        addr_tx.send((addr_after(&line, "outbound="), addr_after(&line, "admin=")));
                }
                if line.contains("accept failing") {
                    let _ = warn_tx.send(());
                }
                lines.lock().expect("lines").push(line);
            }
        });
    }
    let (Some(outbound), Some(admin)) = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the proxy reports its addresses")
    else {
        panic!("addresses not found in {:?}", lines.lock().expect("lines"));
    };

    // More connections than the proxy has descriptors: the kernel completes them all (they
    // wait in the backlog), and the proxy's accept runs out.
    let clients: Vec<StdStream> = (0..80)
        .map(|_| StdStream::connect(outbound).expect("connect"))
        .collect();
    warn_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a warning that accepts fail");

    // While out of descriptors, the proxy must not spin (the old loop burned a whole core
    // and wrote a log line per failed accept).
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    let accept_lines = lines
        .lock()
        .expect("lines")
        .iter()
        .filter(|l| l.contains("accept"))
        .count();
    assert!(
        used < 20,
        "{used} ticks of CPU in 2 s while out of file descriptors"
    );
    assert!(
        accept_lines <= 3,
        "{accept_lines} log lines about failed accepts"
    );

    // Descriptors come back: the proxy serves again and the failures are in the metrics.
    drop(clients);
    let body = (0..300)
        .find_map(|_| {
            let got = (|| {
                let mut s = StdStream::connect(admin).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
                    .ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                out.contains("200 OK").then_some(out)
            })();
            if got.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            got
        })
        .expect("the admin listener answers once descriptors are free");
    let errors = sample(
        &body,
        &[
            "serin_proxy_accept_errors_total{",
            "listener=\"outbound\"",
            "errno=\"EMFILE\"",
        ],
    );
    assert!(
        (1.0..200.0).contains(&errors),
        "accept errors counted: {errors}\n{body}"
    );
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn ask(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn above_max_connections_the_listener_stops_accepting_until_one_closes() {
    let app = upstream("app").await;
    let p = Proxy::start(ProxyConfig {
        outbound: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        outbound_max_connections: 2,
        ..ProxyConfig::default()
    })
    .await
    .expect("proxy starts");
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: svc\n    rules:\n      - backends:\n          - {{ name: app, endpoints: [\"{}\"] }}\n",
            app.addr
        )))
        .expect("table");
    let mut a = TcpStream::connect(p.outbound_addr()).await.expect("a");
    let mut b = TcpStream::connect(p.outbound_addr()).await.expect("b");
    assert!(within(10, ask(&mut a)).await.starts_with("HTTP/1.1 200"));
    assert!(within(10, ask(&mut b)).await.starts_with("HTTP/1.1 200"));
    // The third connection completes in the kernel but is not accepted: no answer.
    let mut c = TcpStream::connect(p.outbound_addr()).await.expect("c");
    let waiting = tokio::time::timeout(Duration::from_millis(500), ask(&mut c)).await;
    assert!(
        waiting.is_err(),
        "a third connection was served: {waiting:?}"
    );
    // One closes: the third is accepted and its request (already sent) answered.
    drop(a);
    let mut buf = vec![0u8; 4096];
    let n = within(10, c.read(&mut buf)).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let m = metrics(&p).await;
    assert!(
        sample(
            &m,
            &["serin_proxy_accept_paused_total{", "listener=\"outbound\""]
        ) >= 1.0
    );
    drop(b);
}

async fn admin_proxy(max: usize, idle: Duration) -> Proxy {
    Proxy::start(ProxyConfig {
        outbound: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        admin_max_connections: max,
        admin_idle_timeout: idle,
        ..ProxyConfig::default()
    })
    .await
    .expect("proxy starts")
}

/// Reads until the proxy closes the connection; returns what came.
async fn until_closed(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got).await;
    got
}

#[tokio::test]
async fn admin_connections_that_go_quiet_are_closed() {
    let p = admin_proxy(100, Duration::from_millis(300)).await;
    let admin = p.admin_addr().expect("admin on");
    // One that never says anything (hyper waits for the first bytes to pick HTTP/1 or 2).
    let mut silent = TcpStream::connect(admin).await.expect("connect");
    // One that opens HTTP/2 and then says nothing more.
    let mut h2 = TcpStream::connect(admin).await.expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    // One keep-alive HTTP/1.1 connection after a scrape.
    let mut kept = TcpStream::connect(admin).await.expect("connect");
    kept.write_all(b"GET /live HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .expect("request");
    assert!(within(10, until_closed(&mut silent)).await.is_empty());
    within(10, until_closed(&mut h2)).await;
    let got = within(10, until_closed(&mut kept)).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "the scrape was answered before the close"
    );
}

#[tokio::test]
async fn above_admin_max_connections_the_admin_listener_waits_for_one_to_close() {
    let p = admin_proxy(2, Duration::from_secs(60)).await;
    let admin = p.admin_addr().expect("admin on");
    let a = TcpStream::connect(admin).await.expect("a");
    let _b = TcpStream::connect(admin).await.expect("b");
    let mut c = TcpStream::connect(admin).await.expect("c");
    c.write_all(b"GET /live HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 4096];
    let waiting = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await;
    assert!(waiting.is_err(), "a third admin connection was served");
    drop(a);
    let n = within(10, c.read(&mut buf)).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop((_b, c));
    let m = metrics(&p).await;
    assert!(
        sample(
            &m,
            &["serin_proxy_accept_paused_total{", "listener=\"admin\""]
        ) >= 1.0,
        "{m}"
    );
}

//! A small exporter serving Linkerd-named metrics over real HTTP/1.1, for the integration tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Per "tick" of the exporter, each arm serves 100 requests: the canary fails 2, the primary 1.
/// Latency per tick and arm: 90 requests <= 10 ms, 9 in (10, 20], 1 in (20, 50] — so the p99
/// is exactly 20 ms by Prometheus' interpolation.
pub const PER_TICK: u64 = 100;
pub const CANARY_FAILURES_PER_TICK: u64 = 2;
pub const PRIMARY_FAILURES_PER_TICK: u64 = 1;

pub struct Exporter {
    pub port: u16,
    ticks: Arc<AtomicU64>,
}

impl Exporter {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    pub fn tick(&self, n: u64) {
        self.ticks.fetch_add(n, Ordering::SeqCst);
    }
}

fn page(n: u64) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP response_total Total count of HTTP responses.\n# TYPE response_total counter\n",
    );
    let arms = [
        ("podinfo-canary", "podinfo", CANARY_FAILURES_PER_TICK),
        (
            "podinfo-primary",
            "podinfo-primary",
            PRIMARY_FAILURES_PER_TICK,
        ),
    ];
    for (backend, workload, fail) in arms {
        let ok = (PER_TICK - fail) * n;
        let bad = fail * n;
        // serin-proxy (outbound, per backend)
        out.push_str(&format!(
            "response_total{{direction=\"outbound\",authority=\"podinfo.test:9898\",dst_service=\"{backend}\",classification=\"success\",status_code=\"200\"}} {ok}\n\
             response_total{{direction=\"outbound\",authority=\"podinfo.test:9898\",dst_service=\"{backend}\",classification=\"failure\",status_code=\"503\"}} {bad}\n"
        ));
        // linkerd (inbound, per deployment)
        out.push_str(&format!(
            "response_total{{direction=\"inbound\",namespace=\"test\",deployment=\"{workload}\",classification=\"success\",status_code=\"200\"}} {ok}\n\
             response_total{{direction=\"inbound\",namespace=\"test\",deployment=\"{workload}\",classification=\"failure\",status_code=\"503\"}} {bad}\n"
        ));
        // istio (destination reporter)
        out.push_str(&format!(
            "istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"{workload}\",response_code=\"200\"}} {ok}\n\
             istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"{workload}\",response_code=\"503\"}} {bad}\n"
        ));
        let cumulative = [(1.0, 0), (10.0, 90), (20.0, 99), (50.0, 100), (100.0, 100)];
        for (le, c) in cumulative {
            let v = c * n;
            out.push_str(&format!(
                "response_latency_ms_bucket{{direction=\"outbound\",dst_service=\"{backend}\",le=\"{le}\"}} {v}\n\
                 response_latency_ms_bucket{{direction=\"inbound\",namespace=\"test\",deployment=\"{workload}\",le=\"{le}\"}} {v}\n\
                 istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"{workload}\",le=\"{le}\"}} {v}\n"
            ));
        }
        let total = PER_TICK * n;
        out.push_str(&format!(
            "response_latency_ms_bucket{{direction=\"outbound\",dst_service=\"{backend}\",le=\"+Inf\"}} {total}\n\
             response_latency_ms_bucket{{direction=\"inbound\",namespace=\"test\",deployment=\"{workload}\",le=\"+Inf\"}} {total}\n\
             istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"{workload}\",le=\"+Inf\"}} {total}\n"
        ));
    }
    out
}

/// Starts the exporter on 127.0.0.1:0. Counters only move when `tick` is called.
pub async fn start_exporter() -> Exporter {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind exporter");
    let port = listener.local_addr().expect("exporter address").port();
    let ticks = Arc::new(AtomicU64::new(0));
    let shared = ticks.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let ticks = shared.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.len() > 64 * 1024 {
                        return;
                    }
                }
                let request = String::from_utf8_lossy(&buf);
                let (status, body) = if request.starts_with("GET /metrics") {
                    ("200 OK", page(ticks.load(Ordering::SeqCst)))
                } else {
                    ("404 Not Found", String::from("not found\n"))
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Exporter { port, ticks }
}

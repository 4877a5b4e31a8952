//! Shared test fixtures: a dashboard server on 127.0.0.1:0 over a `MemoryBackend`, a canary
//! scenario builder, and a raw HTTP helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use serin_dashboard::memory::MemoryBackend;
use serin_dashboard::model::{
    AnalysisInfo, ArmSample, CanaryKey, EntryKind, MetricInfo, Phase, RunResult, Severity,
    TargetRef, Verdict,
};
use serin_dashboard::{DashboardConfig, router};

pub const TOKEN: &str = "s3cret-token";

pub struct Server {
    pub addr: SocketAddr,
    pub backend: Arc<MemoryBackend>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the dashboard over `backend` on a free loopback port.
pub async fn serve(backend: Arc<MemoryBackend>, token: Option<&str>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(
        backend.clone(),
        DashboardConfig {
            token: token.map(str::to_string),
        },
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        addr,
        backend,
        task,
    }
}

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + secs).unwrap()
}

pub fn key(name: &str) -> CanaryKey {
    CanaryKey::new("test", name)
}

/// A canary `podinfo` that promoted v1 in run 1, then rolled back v2 in run 2 after failed
/// success-rate checks, with samples for the charts; and an idle canary `backend`.
pub fn scenario() -> Arc<MemoryBackend> {
    let b = Arc::new(MemoryBackend::new());
    let k = key("podinfo");
    b.add_canary(&k, target("podinfo"), "v0", t(0)).unwrap();
    b.update(&k, |s| {
        s.analysis = Some(AnalysisInfo {
            strategy: "canary".into(),
            interval: Some("1m".into()),
            threshold: Some(2),
            max_weight: Some(50),
            step_weights: vec![10, 20, 30, 40, 50],
            iterations: None,
            metrics: vec![MetricInfo {
                name: "request-success-rate".into(),
                min: Some(99.0),
                max: None,
                interval: Some("1m".into()),
            }],
            webhooks: vec![],
            judge: true,
            plan: Some(serin_dashboard::model::PlanInfo {
                error_rate_pct: 1.0,
                trials: 200,
                lines: vec![serin_dashboard::model::PlanLine {
                    rps: 1.0,
                    healthy_promoted_pct: 0.0,
                    healthy_to_promote: None,
                    regression_failed_pct: 0.0,
                    regression_to_fail: None,
                    inconclusive_pct: 100.0,
                    summary: "at 1 rps this rollout can never prove anything; it will end by onInconclusive (rollback) after 15m".into(),
                }],
            }),
        })
    })
    .unwrap();
    b.start_run(&k, "v1", t(10)).unwrap();
    for (i, w) in [10, 20, 30, 40, 50].into_iter().enumerate() {
        let at = t(20 + 60 * i as i64);
        b.set_weight(&k, w, at).unwrap();
        b.record(&k, at, sample(w, 99.9, 99.95, 40.0, 38.0))
            .unwrap();
        b.record(&k, at, check("request-success-rate", Verdict::Pass, 99.9))
            .unwrap();
    }
    b.set_phase(&k, Phase::Promoting, t(400), Some("analysis complete"))
        .unwrap();
    b.end_run(
        &k,
        RunResult::Promoted,
        "analysis complete: 5 steps passed",
        t(420),
    )
    .unwrap();

    b.start_run(&k, "v2", t(1000)).unwrap();
    b.set_weight(&k, 10, t(1010)).unwrap();
    b.record(&k, t(1060), sample(10, 91.2, 99.9, 55.0, 38.0))
        .unwrap();
    b.record(
        &k,
        t(1060),
        check("request-success-rate", Verdict::Fail, 91.2),
    )
    .unwrap();
    b.update(&k, |s| s.summary.failed_checks = 1).unwrap();
    b.record(
        &k,
        t(1061),
        EntryKind::Webhook {
            name: "load-test".into(),
            webhook_type: "rollout".into(),
            ok: true,
            status: Some(200),
            message: None,
            duration_ms: Some(12),
        },
    )
    .unwrap();
    b.record(&k, t(1120), sample(10, 90.5, 99.9, 57.0, 39.0))
        .unwrap();
    b.record(
        &k,
        t(1120),
        check("request-success-rate", Verdict::Fail, 90.5),
    )
    .unwrap();
    b.update(&k, |s| s.summary.failed_checks = 2).unwrap();
    b.record(
        &k,
        t(1121),
        EntryKind::Event {
            severity: Severity::Error,
            message: "Canary analysis failed, rolling back".into(),
        },
    )
    .unwrap();
    b.end_run(
        &k,
        RunResult::RolledBack,
        "request-success-rate 90.5 below minimum 99 (2 of 2 checks failed)",
        t(1125),
    )
    .unwrap();
    b.add_canary(&key("backend"), target("backend"), "r7", t(5))
        .unwrap();
    b
}

pub fn target(name: &str) -> TargetRef {
    TargetRef {
        kind: "Deployment".into(),
        name: name.into(),
    }
}

pub fn sample(weight: u32, canary: f64, primary: f64, cl: f64, pl: f64) -> EntryKind {
    EntryKind::Sample {
        weight,
        canary: ArmSample {
            requests: 200,
            success_rate: Some(canary),
            latency_p99_ms: Some(cl),
        },
        primary: ArmSample {
            requests: 1800,
            success_rate: Some(primary),
            latency_p99_ms: Some(pl),
        },
    }
}

pub fn check(name: &str, verdict: Verdict, value: f64) -> EntryKind {
    EntryKind::Check {
        name: name.into(),
        verdict,
        value: Some(value),
        min: Some(99.0),
        max: None,
        sample_size: Some(200),
        failed_checks: None,
        message: None,
    }
}

/// A raw HTTP call: (status, body text, headers).
pub async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, http::HeaderMap) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        headers,
    )
}

pub async fn get_json(url: &str) -> serde_json::Value {
    let (status, body, _) = call("GET", url, &[], "").await;
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap()
}

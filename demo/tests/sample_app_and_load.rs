//! The sample app and the load generator against each other over real loopback HTTP.

use std::time::Duration;

use serin_demo::load::{self, LoadConfig, Outcome};
use serin_demo::loadtester::LoadTester;
use serin_demo::sample_app::{self, SampleAppConfig};

async fn get(url: &str) -> (u16, String, Option<String>) {
    let uri: http::Uri = url.parse().unwrap();
    let mut config = LoadConfig::new(uri, 1000.0, Duration::from_millis(1));
    config.timeout = Duration::from_secs(5);
    let mut last = None;
    // One request through the generator keeps the test on the same client code the CLI uses.
    load::run(config, std::future::pending(), |s| last = Some(s.clone()))
        .await
        .unwrap();
    let s = last.expect("one request was sent");
    let status = match s.outcome {
        Outcome::Status(code) => code,
        Outcome::Error(kind) => panic!("request to {url} failed: {kind}"),
    };
    (status, String::new(), s.version)
}

async fn raw(url: &str, method: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let (host, path) = addr.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("{method} /{path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test]
async fn sample_app_serves_every_endpoint_and_names_its_version() {
    let app = sample_app::spawn(SampleAppConfig {
        version: "v7".into(),
        ..SampleAppConfig::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", app.addr);

    let (status, body) = raw(&format!("{base}/"), "GET").await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(info["version"], "v7");
    assert_eq!(raw(&format!("{base}/version"), "GET").await.0, 200);
    assert_eq!(raw(&format!("{base}/status/418"), "GET").await.0, 418);
    assert_eq!(raw(&format!("{base}/status/503"), "GET").await.0, 503);
    assert_eq!(raw(&format!("{base}/status/abc"), "GET").await.0, 400);
    assert_eq!(raw(&format!("{base}/delay/0.05"), "GET").await.0, 200);
    assert_eq!(raw(&format!("{base}/delay/-1"), "GET").await.0, 400);
    assert_eq!(raw(&format!("{base}/healthz"), "GET").await.0, 200);
    assert_eq!(raw(&format!("{base}/nope"), "GET").await.0, 404);

    assert_eq!(raw(&format!("{base}/readyz"), "GET").await.0, 200);
    assert_eq!(raw(&format!("{base}/readyz/disable"), "POST").await.0, 202);
    assert_eq!(raw(&format!("{base}/readyz"), "GET").await.0, 503);
    assert_eq!(raw(&format!("{base}/readyz/enable"), "POST").await.0, 202);
    assert_eq!(raw(&format!("{base}/readyz"), "GET").await.0, 200);

    let (_, _, version) = get(&format!("{base}/")).await;
    assert_eq!(version.as_deref(), Some("v7"));
    app.stop().await;
}

#[tokio::test]
async fn a_bad_release_fails_about_its_error_rate_and_probes_stay_healthy() {
    let app = sample_app::spawn(SampleAppConfig {
        error_rate: 0.3,
        ..SampleAppConfig::default()
    })
    .await
    .unwrap();
    let uri: http::Uri = format!("http://{}/", app.addr).parse().unwrap();
    let report = load::run(
        LoadConfig::new(uri, 400.0, Duration::from_secs(1)),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.requests, 400);
    let share = report.errors as f64 / report.requests as f64;
    assert!((0.2..0.4).contains(&share), "error share {share}");
    assert_eq!(
        report.errors,
        report.statuses.get(&500).copied().unwrap_or(0)
    );

    let health: http::Uri = format!("http://{}/healthz", app.addr).parse().unwrap();
    let report = load::run(
        LoadConfig::new(health, 200.0, Duration::from_millis(500)),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.errors, 0, "{}", report.breakdown());
    app.stop().await;
}

#[tokio::test]
async fn latency_is_measured_from_the_intended_send_time() {
    let app = sample_app::spawn(SampleAppConfig {
        latency: Duration::from_millis(40),
        ..SampleAppConfig::default()
    })
    .await
    .unwrap();
    let uri: http::Uri = format!("http://{}/", app.addr).parse().unwrap();
    let report = load::run(
        LoadConfig::new(uri, 100.0, Duration::from_secs(1)),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.requests, 100);
    assert_eq!(report.errors, 0);
    assert!(report.quantile_ms(0.5) >= 40.0, "{}", report.summary());
    // Open loop: 100 rps for 1 s with 40 ms each needs ~4 in flight; the rate is kept.
    assert!(
        report.elapsed < Duration::from_millis(1500),
        "{}",
        report.summary()
    );
    let summary = report.summary();
    assert!(summary.starts_with("requests=100 errors=0 "), "{summary}");
    assert!(
        summary.contains("p50_ms=") && summary.contains("p99_ms="),
        "{summary}"
    );
    app.stop().await;
}

#[tokio::test]
async fn stopping_the_app_drains_in_flight_requests() {
    let app = sample_app::spawn(SampleAppConfig {
        latency: Duration::from_millis(300),
        ..SampleAppConfig::default()
    })
    .await
    .unwrap();
    let uri: http::Uri = format!("http://{}/", app.addr).parse().unwrap();
    let load = tokio::spawn(load::run(
        LoadConfig::new(uri, 20.0, Duration::from_millis(100)),
        std::future::pending(),
        |_| {},
    ));
    // Stop while the requests are still inside their 300 ms latency.
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.stop().await;
    let report = load.await.unwrap().unwrap();
    assert_eq!(report.requests, 2);
    assert_eq!(report.errors, 0, "{}", report.breakdown());
}

#[tokio::test]
async fn an_unreachable_target_counts_as_errors_not_as_a_hang() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri: http::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let report = load::run(
        LoadConfig::new(uri, 50.0, Duration::from_millis(200)),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.requests, 10);
    assert_eq!(report.errors, 10);
    assert_eq!(report.transport_errors.get("connect"), Some(&10));
}

#[tokio::test]
async fn bad_load_flags_are_refused_naming_the_flag() {
    let uri: http::Uri = "http://127.0.0.1:1/".parse().unwrap();
    let err = load::run(
        LoadConfig::new(uri.clone(), 0.0, Duration::from_secs(1)),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("--rate"), "{err}");
    let err = load::run(
        LoadConfig::new(uri, 10.0, Duration::ZERO),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("--duration"), "{err}");
    let err = load::run(
        LoadConfig::new(
            "https://example.invalid/".parse().unwrap(),
            10.0,
            Duration::from_secs(1),
        ),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("URL"), "{err}");
    assert!(sample_app::parse_error_rate("--error-rate", "150%").is_err());
    assert!(sample_app::parse_error_rate("--error-rate", "-0.1").is_err());
    assert_eq!(
        sample_app::parse_error_rate("--error-rate", "20%").unwrap(),
        0.2
    );
    assert_eq!(
        sample_app::parse_error_rate("--error-rate", "0.05").unwrap(),
        0.05
    );
}

#[tokio::test]
async fn the_load_tester_runs_a_flagger_webhook_cmd_once_and_refuses_shell() {
    let app = sample_app::spawn(SampleAppConfig::default()).await.unwrap();
    let tester = LoadTester::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tester_addr = tester.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tester.run_until(async move {
        let _ = stop_rx.await;
    }));

    let cmd = format!("hey -z 300ms -q 10 -c 2 -host podinfo http://{}/", app.addr);
    let body = serde_json::json!({"name": "podinfo", "namespace": "test", "phase": "Progressing", "metadata": {"type": "cmd", "cmd": cmd}});
    let post = |body: String| async move {
        let mut stream = tokio::net::TcpStream::connect(tester_addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(format!("POST / HTTP/1.1\r\nhost: loadtester\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        (out[9..12].parse::<u16>().unwrap(), out)
    };
    let (status, out) = post(body.to_string()).await;
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("started"), "{out}");
    let (status, out) = post(body.to_string()).await;
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("already running"), "{out}");

    let shell = serde_json::json!({"metadata": {"cmd": "curl http://127.0.0.1:1/ | sh"}});
    let (status, out) = post(shell.to_string()).await;
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("only `serin load"), "{out}");
    let bash = serde_json::json!({"metadata": {"type": "bash", "cmd": "ls"}});
    assert_eq!(post(bash.to_string()).await.0, 400);
    assert_eq!(post("not json".into()).await.0, 400);

    // Await the run's report instead of sleeping a fixed time.
    let report = loop {
        let (_, body) = raw(&format!("http://{tester_addr}/reports"), "GET").await;
        let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
        if let Some(done) = v["finished"].as_array().and_then(|f| f.first().cloned()) {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["requests"], 6, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let _ = stop_tx.send(());
    server.await.unwrap();
    app.stop().await;
}

//! `serin check` as a user runs it, against a small HTTP API server on loopback named by a
//! kubeconfig: exit 0 when every check passes, 1 when one fails, `-o json` is an array.

use std::process::Command;

use axum::Router;
use axum::extract::Json;
use axum::routing::{get, post};
use serde_json::{Value, json};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// Serves `app` on a loopback port from its own thread, as a fake API server.
pub(crate) fn serve_api(app: Router) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

/// An API server of Kubernetes `minor` that allows every access review.
fn api_server(minor: &'static str) -> std::net::SocketAddr {
    serve_api(
        Router::new()
            .route(
                "/version",
                get(move || async move {
                    Json(json!({"major": "1", "minor": minor, "gitVersion": format!("v1.{minor}.0"), "gitCommit": "x", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go", "compiler": "gc", "platform": "linux/amd64"}))
                }),
            )
            .route(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                post(|Json(mut review): Json<Value>| async move {
                    review["status"] = json!({"allowed": true});
                    (axum::http::StatusCode::CREATED, Json(review))
                }),
            )
            // Whatever is not installed: the API server's 404 Status.
            .fallback(|| async {
                (
                    axum::http::StatusCode::NOT_FOUND,
                    Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404})),
                )
            }),
    )
}

fn kubeconfig(addr: std::net::SocketAddr) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "serin-check-{}-{}.yaml",
        std::process::id(),
        addr.port()
    ));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake\n"
        ),
    )
    .unwrap();
    path
}

/// `serin COMMAND ARGS` with a kubeconfig naming the API server at `addr`.
pub(crate) fn serin_against(
    addr: std::net::SocketAddr,
    command: &str,
    args: &[&str],
) -> std::process::Output {
    let config = kubeconfig(addr);
    let out = Command::new(SERIN)
        .arg(command)
        .args(args)
        .env("KUBECONFIG", &config)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(config);
    out
}

fn check(addr: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    serin_against(addr, "check", args)
}

#[test]
fn pre_passes_on_a_recent_cluster_and_exits_zero() {
    let out = check(api_server("33"), &["--pre"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.lines().count() >= 7, "{text}");
    assert!(text.lines().all(|l| l.starts_with("✔ ")), "{text}");
}

#[test]
fn a_failing_check_exits_one_and_json_says_which() {
    let out = check(api_server("28"), &["--pre", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{v:#}");
    assert_eq!(failed[0]["check"], "Kubernetes version");
    assert!(failed[0]["hint"].is_string());
}

#[test]
fn an_installation_missing_everything_fails_with_hints() {
    let out = check(api_server("33"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✘ CRD canaries.serin.dev: not installed (hint: serin install --crds-only | kubectl apply -f -)"), "{text}");
}

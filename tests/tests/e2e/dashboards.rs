//! Serin's Grafana dashboards and alerting rules, and the queries of Linkerd's dashboards,
//! against a real Prometheus (Debian's `prometheus`) scraping a real local site: load through
//! two serin-proxies (`frontend` receives it on its inbound listener and hands it to `loadgen`'s
//! outbound listener, which splits it between podinfo's primary and canary), the control plane
//! and the controller running a failed and a promoted rollout (the failed one with injected
//! errors and latency).
//!
//! Every panel query, annotation and variable of `dashboards/grafana/*.json` and every alert of
//! `dashboards/prometheus/serin-rules.yaml`, with its variables substituted, must parse and
//! return at least one series (alerts: fire in the scenario made for them, silent otherwise).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use prometheus_http_query::Client;
use prometheus_http_query::response::Data;
use serde_json::Value;
use serin_tests::{CanaryShape, Site};

const STEP: Duration = Duration::from_secs(90);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_serin-e2e"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// The dashboards, by file name.
fn dashboards() -> anyhow::Result<Vec<(String, Value)>> {
    let dir = repo().join("dashboards/grafana");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&path)?;
            let json: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    ensure!(
        out.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
            == ["canary.json", "controller.json", "mesh.json"],
        "dashboards/grafana holds {:?}",
        out.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    Ok(out)
}

/// `(what, expr)` of every query of a dashboard: panel targets, annotations and variables
/// (a `label_values(selector, label)` variable is checked as its selector).
fn queries(name: &str, d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("{name} panel {:?} {}", p["title"], t["refId"]),
                t["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            out.push((format!("{name} annotation {:?}", a["name"]), over_run(e)));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().unwrap_or_default();
            let selector = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, label)| (sel.trim().to_string(), label.trim_end_matches(')').trim()));
            if let Some((sel, label)) = selector {
                out.push((
                    format!("{name} variable {:?}", v["name"]),
                    format!("count by ({label}) ({sel})"),
                ));
            }
        }
    }
    out
}

/// An annotation query as Grafana runs it, over the dashboard's range (here the test's last
/// 10 minutes) rather than at one instant: one series per label set it returned at any step.
fn over_run(expr: &str) -> String {
    format!("last_over_time(({expr})[10m:1s])")
}

/// The labels an annotation's title, text and tags name (`{{label}}`, `tagKeys`).
fn annotation_labels(a: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for key in ["titleFormat", "textFormat"] {
        let mut rest = a[key].as_str().unwrap_or_default();
        while let Some(i) = rest.find("{{") {
            let Some(j) = rest[i..].find("}}") else { break };
            out.insert(rest[i + 2..i + j].trim().to_string());
            rest = &rest[i + j + 2..];
        }
    }
    let tags = a["tagKeys"].as_str().unwrap_or_default();
    out.extend(
        tags.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from),
    );
    out
}

/// Substitutes the dashboards' variables for this site.
fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut e = expr.to_string();
    // Longest names first, so `$canary` never eats a prefix of a longer name.
    let mut vars = vars.to_vec();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (k, v) in vars {
        e = e
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    e
}

const VARS: &[(&str, &str)] = &[
    ("namespace", "default"),
    ("canary", "podinfo"),
    ("target", "podinfo"),
    ("primary_service", "podinfo-primary"),
    ("canary_service", "podinfo-canary"),
    // A multi-value variable as Grafana writes it into a regex matcher.
    ("deployment", "(loadgen|frontend)"),
    ("__range", "1h"),
    // Grafana's max(4 x scrape interval, $__interval + scrape interval) for a data source whose
    // scrape interval is set to the test Prometheus' 1 s, over a few minutes' range.
    ("__rate_interval", "15s"),
];

/// Linkerd's deployment, pod, authority and route dashboard queries, written from Linkerd's
/// documented metric and label names (`request_total`, `response_total`,
/// `response_latency_ms`, `tcp_*`, `route_*` with `dst` and `rt_route`; workloads by the
/// `namespace`, `deployment`, `pod` labels; destinations by `dst_deployment`, `dst_pod`,
/// `dst_pod_template_hash`; 30 s `irate` windows as those dashboards use), as
/// `(dashboard, panel, query)`. `$dst_pod` is a pod of podinfo's primary, as the pod
/// dashboard's variable lists it. Panels that need mTLS (`tls="true"`) are not among them:
/// Serin has no mTLS.
fn linkerd_queries() -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    let mut add =
        |dash: &'static str, what: &'static str, q: &str| out.push((dash, what, q.to_string()));
    for (dash, sel) in [
        (
            "deployment",
            r#"namespace="default", deployment="frontend", direction="inbound""#,
        ),
        (
            "pod",
            r#"namespace="default", pod="frontend-0", direction="inbound""#,
        ),
    ] {
        add(
            dash,
            "inbound success rate",
            &format!(
                "sum(irate(response_total{{{sel}, classification=\"success\"}}[30s])) / sum(irate(response_total{{{sel}}}[30s]))"
            ),
        );
        add(
            dash,
            "inbound request rate",
            &format!("sum(irate(request_total{{{sel}}}[30s]))"),
        );
        for q in ["0.5", "0.95", "0.99"] {
            add(
                dash,
                "inbound latency",
                &format!(
                    "histogram_quantile({q}, sum(irate(response_latency_ms_bucket{{{sel}}}[30s])) by (le))"
                ),
            );
        }
        add(
            dash,
            "inbound tcp connections",
            &format!("sum(tcp_open_connections{{{sel}}})"),
        );
        add(
            dash,
            "inbound tcp read",
            &format!("sum(irate(tcp_read_bytes_total{{{sel}}}[30s]))"),
        );
        add(
            dash,
            "inbound tcp write",
            &format!("sum(irate(tcp_write_bytes_total{{{sel}}}[30s]))"),
        );
    }
    for (dash, sel) in [
        (
            "deployment",
            r#"namespace="default", deployment="loadgen", direction="outbound""#,
        ),
        (
            "pod",
            r#"namespace="default", pod="loadgen-0", direction="outbound""#,
        ),
        (
            "authority",
            r#"authority="$authority", direction="outbound""#,
        ),
    ] {
        add(
            dash,
            "outbound success rate by destination",
            &format!(
                "sum(irate(response_total{{{sel}, classification=\"success\"}}[30s])) by (dst_service) / sum(irate(response_total{{{sel}}}[30s])) by (dst_service)"
            ),
        );
        add(
            dash,
            "outbound request rate by destination",
            &format!("sum(irate(request_total{{{sel}}}[30s])) by (dst_service)"),
        );
        add(
            dash,
            "outbound latency by destination",
            &format!(
                "histogram_quantile(0.95, sum(irate(response_latency_ms_bucket{{{sel}}}[30s])) by (le, dst_service))"
            ),
        );
        add(
            dash,
            "outbound failures by status",
            &format!(
                "sum(irate(response_total{{{sel}, classification=\"failure\"}}[30s])) by (status_code)"
            ),
        );
        add(
            dash,
            "identity",
            &format!("sum(irate(response_total{{{sel}, tls=\"no_identity\"}}[30s]))"),
        );
        // TCP series are per workload, not per authority (as in Linkerd).
        if dash != "authority" {
            add(
                dash,
                "outbound tcp connections",
                &format!("sum(tcp_open_connections{{{sel}}}) by (peer)"),
            );
            add(
                dash,
                "outbound tcp closes by errno",
                &format!("sum(irate(tcp_close_total{{{sel}}}[30s])) by (errno)"),
            );
            add(
                dash,
                "tcp connection duration",
                &format!(
                    "histogram_quantile(0.95, sum(irate(tcp_connection_duration_ms_bucket{{{sel}}}[5m])) by (le))"
                ),
            );
        }
    }
    // The deployment dashboard's traffic by source, from the callers' outbound series.
    add(
        "deployment",
        "inbound traffic by source",
        "sum(irate(response_total{dst_namespace=\"default\", dst_deployment=\"podinfo-primary\", direction=\"outbound\"}[30s])) by (deployment)",
    );
    add(
        "deployment",
        "outbound traffic by destination deployment",
        "sum(irate(response_total{namespace=\"default\", deployment=\"loadgen\", direction=\"outbound\", dst_deployment!=\"\"}[30s])) by (dst_deployment)",
    );
    // The namespace / deployment / pod variables of every Linkerd dashboard.
    add(
        "variables",
        "namespace variable",
        "count by (namespace) (process_start_time_seconds{deployment!=\"\"})",
    );
    add(
        "variables",
        "deployment variable",
        "count by (deployment) (process_start_time_seconds{namespace=\"default\", deployment!=\"\"})",
    );
    add(
        "variables",
        "pod variable",
        "count by (pod) (process_start_time_seconds{namespace=\"default\", pod!=\"\"})",
    );
    // Route dashboard.
    let rt = r#"namespace="default", deployment="loadgen", direction="outbound", dst="$authority""#;
    add(
        "route",
        "route success rate",
        &format!(
            "sum(irate(route_response_total{{{rt}, classification=\"success\"}}[30s])) by (rt_route) / sum(irate(route_response_total{{{rt}}}[30s])) by (rt_route)"
        ),
    );
    add(
        "route",
        "route request rate",
        &format!("sum(irate(route_request_total{{{rt}}}[30s])) by (rt_route)"),
    );
    for q in ["0.5", "0.95", "0.99"] {
        add(
            "route",
            "route latency",
            &format!(
                "histogram_quantile({q}, sum(irate(route_response_latency_ms_bucket{{{rt}}}[30s])) by (le, rt_route))"
            ),
        );
    }
    add(
        "route",
        "route variable",
        "count by (rt_route) (route_request_total{namespace=\"default\"})",
    );
    add(
        "route",
        "route failures",
        &format!(
            "sum(irate(route_response_total{{{rt}, classification=\"failure\"}}[30s])) by (rt_route, status_code)"
        ),
    );
    // The pod dashboard's panels by destination pod. Viewing podinfo's primary pod: who calls
    // it, from the callers' outbound series (it runs no proxy of its own here).
    let to_pod =
        r#"dst_namespace="default", dst_pod!="", dst_pod="$dst_pod", direction="outbound""#;
    add(
        "pod",
        "inbound pods",
        &format!("count(count(request_total{{{to_pod}}}) by (namespace, pod))"),
    );
    add(
        "pod",
        "inbound pods success rate",
        &format!(
            "sum(irate(response_total{{{to_pod}, classification=\"success\"}}[30s])) by (pod) / sum(irate(response_total{{{to_pod}}}[30s])) by (pod)"
        ),
    );
    add(
        "pod",
        "inbound pods request rate",
        &format!("sum(irate(request_total{{{to_pod}}}[30s])) by (pod)"),
    );
    for q in ["0.5", "0.95", "0.99"] {
        add(
            "pod",
            "inbound pods latency",
            &format!(
                "histogram_quantile({q}, sum(irate(response_latency_ms_bucket{{{to_pod}}}[30s])) by (le, pod))"
            ),
        );
    }
    // Viewing loadgen's pod: the pods it calls.
    let from_pod = r#"namespace="default", pod="loadgen-0", direction="outbound""#;
    add(
        "pod",
        "outbound pods",
        &format!("count(count(request_total{{{from_pod}}}) by (namespace, dst_pod))"),
    );
    add(
        "pod",
        "outbound pods success rate",
        &format!(
            "sum(irate(response_total{{{from_pod}, classification=\"success\"}}[30s])) by (dst_pod) / sum(irate(response_total{{{from_pod}}}[30s])) by (dst_pod)"
        ),
    );
    add(
        "pod",
        "outbound pods request rate",
        &format!("sum(irate(request_total{{{from_pod}}}[30s])) by (dst_pod)"),
    );
    for q in ["0.5", "0.95", "0.99"] {
        add(
            "pod",
            "outbound pods latency",
            &format!(
                "histogram_quantile({q}, sum(irate(response_latency_ms_bucket{{{from_pod}}}[30s])) by (le, dst_pod))"
            ),
        );
    }
    // The deployment dashboard's outbound traffic by destination pod, and by the destination's
    // pod-template-hash (Linkerd: "roughly the pod's ReplicaSet").
    let from_deploy = r#"namespace="default", deployment="loadgen", direction="outbound""#;
    add(
        "deployment",
        "outbound request rate by destination pod",
        &format!("sum(irate(request_total{{{from_deploy}, dst_pod!=\"\"}}[30s])) by (dst_pod)"),
    );
    add(
        "deployment",
        "outbound success rate by destination pod",
        &format!(
            "sum(irate(response_total{{{from_deploy}, classification=\"success\"}}[30s])) by (dst_pod) / sum(irate(response_total{{{from_deploy}, dst_pod!=\"\"}}[30s])) by (dst_pod)"
        ),
    );
    add(
        "deployment",
        "outbound request rate by destination pod-template-hash",
        &format!(
            "sum(irate(request_total{{{from_deploy}, dst_pod_template_hash!=\"\"}}[30s])) by (dst_deployment, dst_pod_template_hash)"
        ),
    );
    out
}

/// Series an instant query returns (an error names the query).
async fn series(client: &Client, expr: &str) -> anyhow::Result<usize> {
    let result = client
        .query(expr)
        .get()
        .await
        .with_context(|| format!("query {expr:?}"))?;
    Ok(match result.data() {
        Data::Vector(v) => v.len(),
        Data::Matrix(m) => m.len(),
        Data::Scalar(_) => 1,
    })
}

/// Polls until every query returns data; the error lists those that never did.
async fn all_answer(
    client: &Client,
    queries: &[(String, String)],
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut empty: Vec<&(String, String)> = queries.iter().collect();
    loop {
        let mut still = Vec::new();
        for q in empty {
            if series(client, &q.1).await? == 0 {
                still.push(q);
            }
        }
        empty = still;
        if empty.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no data after {limit:?} from:\n{empty:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The alerts of the rule file: name -> expression.
fn alerts() -> anyhow::Result<BTreeMap<String, String>> {
    let path = repo().join("dashboards/prometheus/serin-rules.yaml");
    let doc: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(&path)?)?;
    ensure!(doc["apiVersion"] == "monitoring.coreos.com/v1" && doc["kind"] == "PrometheusRule");
    let mut out = BTreeMap::new();
    for g in doc["spec"]["groups"].as_sequence().into_iter().flatten() {
        ensure!(g["name"].as_str().is_some(), "a group without a name");
        for r in g["rules"].as_sequence().into_iter().flatten() {
            let name = r["alert"].as_str().context("a rule without `alert`")?;
            let expr = r["expr"].as_str().context("a rule without `expr`")?;
            ensure!(
                r["annotations"]["summary"].as_str().is_some(),
                "{name}: no summary"
            );
            out.insert(name.to_string(), expr.to_string());
        }
    }
    ensure!(
        out.keys().map(String::as_str).collect::<Vec<_>>()
            == [
                "SerinCanaryStuck",
                "SerinControllerNoLeader",
                "SerinProxiesDisconnected",
                "SerinRolloutFailed"
            ],
        "{:?}",
        out.keys()
    );
    Ok(out)
}

async fn await_alert(client: &Client, name: &str, expr: &str, firing: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = series(client, expr).await?;
        if (n > 0) == firing {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} {} ({n} series): {expr}",
                if firing { "never fired" } else { "kept firing" }
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The identity labels of a meshed workload's one pod in `default`, as the injector sets them.
fn identity(deployment: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("namespace".into(), "default".into()),
        ("deployment".into(), deployment.into()),
        ("pod".into(), format!("{deployment}-0")),
    ])
}

/// `promtool check metrics` on a real scrape of a proxy's admin `/metrics` (`addr`): the text
/// parses, every family has HELP and TYPE, and nothing but Linkerd's own `_ms` names (kept for
/// its dashboards and Flagger's queries) draws a lint.
async fn promtool_checks_a_scrape(addr: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // HTTP/1.0: the answer is the body up to the close, never chunked.
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: admin\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await?;
    let answer = String::from_utf8(answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP answer from {addr}"))?;
    ensure!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{addr}: {head}"
    );
    let promtool = serin_analysis::testing::find_prometheus().with_file_name("promtool");
    let mut child = tokio::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", promtool.display()))?;
    let mut stdin = child.stdin.take().context("promtool's stdin")?;
    stdin.write_all(body.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let linkerd_names = [
        "response_latency_ms ",
        "route_response_latency_ms ",
        "tcp_connection_duration_ms ",
    ];
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| {
            let linkerd_unit = l.ends_with("metric names should not contain abbreviated units")
                && linkerd_names.iter().any(|n| l.starts_with(n));
            !l.trim().is_empty() && !linkerd_unit
        })
        .collect();
    ensure!(
        matches!(out.status.code(), Some(0 | 3)) && problems.is_empty(),
        "promtool check metrics on {addr} ({}):\n{}",
        out.status,
        problems.join("\n")
    );
    Ok(())
}

/// Waits until `expr` returns at least one series (an error names it).
async fn await_series(client: &Client, expr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP;
    while series(client, expr).await? == 0 {
        ensure!(Instant::now() < deadline, "never true: {expr}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// A loopback TCP relay to `to` that the test can cut: cutting closes its listener and every
/// connection it relays, so a client behind it sees its peer go away and cannot reconnect.
struct Relay {
    addr: std::net::SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().expect("relay connections").push(conn);
            }
        });
        Ok(Relay {
            addr,
            accept,
            conns,
        })
    }

    fn cut(&self) {
        self.accept.abort();
        for c in self.conns.lock().expect("relay connections").drain(..) {
            c.abort();
        }
    }
}

/// The progress deadline of the Canary held at a closed gate (short, so the stuck alert
/// fires within the test; the readiness of a sample-app process takes well under it).
const STUCK_DEADLINE_SECONDS: u32 = 3;

/// A confirm-rollout webhook target that refuses every call (403, as a closed Flagger
/// load-tester gate answers); serves until the test's runtime ends.
async fn refusing_gate() -> anyhow::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                // One request per connection: read its head, answer, close.
                let mut buf = vec![0u8; 8192];
                let mut seen = 0;
                while !buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") && seen < buf.len() {
                    match conn.read(&mut buf[seen..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen += n,
                    }
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 9\r\nconnection: close\r\n\r\nForbidden")
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Gives the site's Canary a confirm-rollout webhook at `url` and `progressDeadlineSeconds`,
/// as a user edits the manifest (the controller reloads it).
fn hold_next_rollout(site: &Site, url: &str, deadline: u32) -> anyhow::Result<()> {
    let path = site.manifests.join("podinfo.yaml");
    let text = std::fs::read_to_string(&path)?;
    // Documents are separated by `---` lines.
    let mut docs: Vec<serde_norway::Value> = Vec::new();
    let mut doc = String::new();
    for line in text.lines().chain(["---"]) {
        if line.trim_end() == "---" {
            if !doc.trim().is_empty() {
                docs.push(serde_norway::from_str(&doc)?);
            }
            doc.clear();
        } else {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    let canary = docs
        .iter_mut()
        .find(|d| d["kind"] == "Canary")
        .context("no Canary in the site's manifest")?;
    let spec = canary["spec"]
        .as_mapping_mut()
        .context("the Canary has a spec")?;
    spec.insert("progressDeadlineSeconds".into(), deadline.into());
    let hook: serde_norway::Value = serde_norway::from_str(&format!(
        "{{name: hold, type: confirm-rollout, url: \"{url}\"}}"
    ))?;
    spec.get_mut("analysis")
        .and_then(|a| a.as_mapping_mut())
        .context("the Canary has an analysis")?
        .insert("webhooks".into(), vec![hook].into());
    let text = docs
        .iter()
        .map(serde_norway::to_string)
        .collect::<Result<Vec<_>, _>>()?
        .join("---\n");
    std::fs::write(&path, text)?;
    Ok(())
}

#[test]
fn dashboard_json_has_the_structure_grafana_needs() -> anyhow::Result<()> {
    let mut uids = BTreeSet::new();
    for (name, d) in dashboards()? {
        let uid = d["uid"].as_str().context("uid")?;
        ensure!(!uid.is_empty() && uid.len() <= 40, "{name}: uid {uid:?}");
        ensure!(uids.insert(uid.to_string()), "{name}: uid {uid} used twice");
        ensure!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: title"
        );
        ensure!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}: schemaVersion for Grafana 10+"
        );
        let vars = d["templating"]["list"]
            .as_array()
            .context("templating.list")?;
        ensure!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{name}: no Prometheus data source variable"
        );
        let uses_var = |ds: &Value| ds["uid"] == "${datasource}";
        let mut ids = BTreeSet::new();
        let panels = d["panels"].as_array().context("panels")?;
        ensure!(!panels.is_empty(), "{name}: no panels");
        for p in panels {
            let title = &p["title"];
            ensure!(
                ids.insert(p["id"].as_u64().context("panel id")?),
                "{name}: panel id repeated at {title}"
            );
            ensure!(
                uses_var(&p["datasource"]),
                "{name}: panel {title} does not use ${{datasource}}"
            );
            for k in ["h", "w", "x", "y"] {
                ensure!(
                    p["gridPos"][k].as_u64().is_some(),
                    "{name}: panel {title} gridPos.{k}"
                );
            }
            let defaults = &p["fieldConfig"]["defaults"];
            ensure!(
                defaults["unit"].as_str().is_some_and(|u| !u.is_empty()),
                "{name}: panel {title} has no unit"
            );
            // Without thresholds of its own a panel gets Grafana's default (red from 80), which
            // paints a count of 100 proxies red.
            let steps = defaults["thresholds"]["steps"]
                .as_array()
                .with_context(|| format!("{name}: panel {title} has no thresholds"))?;
            ensure!(
                steps.first().is_some_and(|s| s["value"].is_null()),
                "{name}: panel {title}: the first threshold step must be the base (value null)"
            );
            let targets = p["targets"].as_array().context("targets")?;
            ensure!(!targets.is_empty(), "{name}: panel {title} has no query");
            for t in targets {
                ensure!(
                    uses_var(&t["datasource"]),
                    "{name}: a target of {title} does not use ${{datasource}}"
                );
                let expr = t["expr"].as_str().unwrap_or_default();
                if let Some(w) = fixed_short_window(expr) {
                    bail!(
                        "{name}: panel {title}: fixed window {w} in {expr}: use [$__rate_interval], which follows the data source's scrape interval (a fixed [1m] is empty at Prometheus' default 1m scrape interval)"
                    );
                }
                // A stat reduces each series over the range to its last value: a series that
                // ended within the range (a phase no Canary is in any more, a controller that
                // is gone) would still show its last value. Stats ask for the value now.
                if p["type"] == "stat" {
                    ensure!(
                        t["instant"] == true,
                        "{name}: stat {title} must be an instant query (a range query keeps the last value of series that ended within the range)"
                    );
                }
                // Over `$__range` a query is a total of the whole dashboard range: as a range
                // query each point would look back one whole range before it.
                if expr.contains("$__range") {
                    ensure!(
                        t["instant"] == true
                            && ["stat", "bargauge", "table"]
                                .contains(&p["type"].as_str().unwrap_or_default()),
                        "{name}: panel {title} sums over $__range, so it must be an instant query in a stat, bar gauge or table"
                    );
                }
            }
        }
        for v in vars.iter().filter(|v| v["type"] == "query") {
            ensure!(
                uses_var(&v["datasource"]),
                "{name}: variable {} does not use ${{datasource}}",
                v["name"]
            );
        }
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            let expr = a["expr"].as_str().unwrap_or_default();
            if let Some(w) = fixed_short_window(expr) {
                bail!(
                    "{name}: annotation {}: fixed window {w} in {expr}: use [$__rate_interval]",
                    a["name"]
                );
            }
        }
        for (what, expr) in queries(&name, &d) {
            // A Canary's name need not be its target's or its service's (Flagger allows any):
            // names derived from it select nothing for such a Canary. `serin_canary_info`
            // gives the real ones.
            ensure!(
                !expr.contains("$canary-") && !expr.contains("$canary|"),
                "{what}: derives a workload or service name from the Canary's name: {expr}"
            );
            let hard = regex_free_hardcoded_namespace(&expr);
            ensure!(!hard, "{what}: hard-coded namespace in {expr}");
        }
    }
    Ok(())
}

/// `promtool check rules` and `promtool test rules` (Debian's prometheus package ships
/// promtool) on the rule file's `spec`, with `serin-rules.test.yaml`'s cases: series on which
/// each alert must fire, and series on which it must not (a scale-down, a counter reset, a
/// standby replica, a healthy rollout).
#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() -> anyhow::Result<()> {
    let promtool = serin_analysis::testing::find_prometheus().with_file_name("promtool");
    ensure!(
        promtool.is_file(),
        "no promtool beside {}",
        promtool.display()
    );
    let src = repo().join("dashboards/prometheus");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let doc: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(src.join("serin-rules.yaml"))?)?;
    std::fs::write(
        dir.join("serin-rules.spec.yaml"),
        serde_norway::to_string(&doc["spec"])?,
    )?;
    std::fs::copy(
        src.join("serin-rules.test.yaml"),
        dir.join("serin-rules.test.yaml"),
    )?;
    for args in [
        ["check", "rules", "serin-rules.spec.yaml"],
        ["test", "rules", "serin-rules.test.yaml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .with_context(|| format!("running {}", promtool.display()))?;
        ensure!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The first range window of `expr` fixed below an hour (`[30s]`, `[5m]`), if any: such a
/// window holds too few samples at a long scrape interval. `[1h]` ("per hour") and longer are
/// meant as they are written.
fn fixed_short_window(expr: &str) -> Option<&str> {
    expr.match_indices('[').find_map(|(i, _)| {
        let rest = &expr[i + 1..];
        let end = rest.find(']')?;
        let w = &rest[..end];
        let digits = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &w[digits.len()..];
        (!digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && ["ms", "s", "m"].contains(&unit))
        .then_some(&expr[i..i + end + 2])
    })
}

/// Whether `expr` selects a namespace by a literal instead of a variable.
fn regex_free_hardcoded_namespace(expr: &str) -> bool {
    ["namespace=\"", "namespace=~\"", "namespace!=\""]
        .iter()
        .any(|pat| {
            expr.match_indices(pat)
                .any(|(i, _)| !expr[i + pat.len()..].starts_with('$'))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_alert_answers_from_a_real_prometheus() -> anyhow::Result<()> {
    let mut site = Site::start_labelled(
        bin(),
        "dashboards",
        // Half the default interval with twice the load below: each look sees the traffic of a
        // 1 s look at 50 requests per second.
        CanaryShape {
            interval: "500ms",
            ..CanaryShape::default()
        },
        &[
            ("namespace", "default"),
            ("deployment", "loadgen"),
            ("pod", "loadgen-0"),
        ],
    )
    .await?;
    let host = |url: &str| {
        url.trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string()
    };
    // `frontend`: a second meshed workload whose inbound listener receives the load and hands
    // it to loadgen's outbound listener (as if the frontend app called podinfo through it).
    let frontend = serin_proxy::Proxy::start(serin_proxy::ProxyConfig {
        outbound: "127.0.0.1:0".parse()?,
        inbound: Some(serin_proxy::config::InboundConfig {
            listen: "127.0.0.1:0".parse()?,
            forward: site.proxy_addr,
            timeout: Some(Duration::from_secs(5)),
            max_connections: 1024,
        }),
        admin: Some("127.0.0.1:0".parse()?),
        labels: identity("frontend"),
        shutdown_timeout: Duration::from_secs(2),
        ..serin_proxy::ProxyConfig::default()
    })
    .await?;
    // frontend reaches the control plane through a relay the test can cut, as a control plane
    // that goes away (or a network that parts them) is seen from a running proxy.
    let control_plane: std::net::SocketAddr = host(&site.control_plane_url).parse()?;
    let relay = Relay::start(control_plane).await?;
    let _frontend_stream = serin_proxy::control_client::spawn(
        format!("http://{}", relay.addr).parse()?,
        "default/frontend".parse()?,
        frontend.table(),
    );
    // `leaver`: a third meshed workload whose pod goes away later (a scale-down), which is not
    // a disconnected proxy.
    let leaver = serin_proxy::Proxy::start(serin_proxy::ProxyConfig {
        outbound: "127.0.0.1:0".parse()?,
        admin: Some("127.0.0.1:0".parse()?),
        labels: identity("leaver"),
        shutdown_timeout: Duration::from_secs(2),
        ..serin_proxy::ProxyConfig::default()
    })
    .await?;
    let leaver_stream = serin_proxy::control_client::spawn(
        site.control_plane_url.parse()?,
        "default/leaver".parse()?,
        leaver.table(),
    );
    // The controller binds its admin server on port 0 and says where; Prometheus scrapes
    // what it bound.
    site.controller_admin = Some("127.0.0.1:0".into());
    site.start_controller().await?;
    let controller_admin = site
        .controller_admin_addr()
        .context("the controller's admin address")?;
    let prometheus = serin_analysis::testing::start_prometheus_with(
        serin_analysis::testing::PrometheusOptions {
            scrape_targets: vec![
                host(&site.proxy_metrics),
                frontend.admin_addr().context("frontend admin")?.to_string(),
                leaver.admin_addr().context("leaver admin")?.to_string(),
                host(&site.control_plane_url),
                controller_admin.to_string(),
            ],
            ..Default::default()
        },
    )
    .await;
    // reqwest is built without a TLS provider of its own; the workspace's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_from(prometheus.address.as_str())?;
    let start = Instant::now();
    while series(&client, "up == 1").await.unwrap_or(0) < 5 {
        ensure!(start.elapsed() < STEP, "Prometheus never scraped the site");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut seen = Vec::new();
    site.await_status("initialized", STEP, &mut seen, |r| {
        r["status"]["phase"] == "Initialized"
    })
    .await?;
    let inbound = frontend.inbound_addr().context("frontend inbound")?;
    let load = site.start_load_via(inbound, 100.0);
    load.await_more(50, STEP).await?;

    // Quiet site: no alert fires.
    let alerts = alerts()?;
    for (name, expr) in &alerts {
        await_alert(&client, name, expr, false).await?;
    }

    // A bad release (errors and latency) is rolled back; a good one is promoted.
    site.rollout(
        "v2",
        &[
            ("SERIN_SAMPLE_APP_ERROR_RATE", "0.3"),
            ("SERIN_SAMPLE_APP_LATENCY", "20ms"),
        ],
    )?;
    site.await_status("v2 rolled back", STEP, &mut seen, |r| {
        r["status"]["run"]["revision"] == "v2" && r["status"]["phase"] == "Failed"
    })
    .await?;
    await_alert(
        &client,
        "SerinRolloutFailed",
        &alerts["SerinRolloutFailed"],
        true,
    )
    .await?;
    site.rollout("v3", &[("SERIN_SAMPLE_APP_ERROR_RATE", "0")])?;
    site.await_status("v3 promoted", STEP, &mut seen, |r| {
        r["status"]["run"]["revision"] == "v3" && r["status"]["phase"] == "Succeeded"
    })
    .await?;
    load.await_more(50, STEP).await?;

    // Every query of every Serin dashboard, variables substituted.
    let mut serin = Vec::new();
    for (name, d) in dashboards()? {
        for (what, expr) in queries(&name, &d) {
            serin.push((what, substitute(&expr, VARS)));
        }
    }
    ensure!(serin.len() >= 40, "only {} dashboard queries", serin.len());
    all_answer(&client, &serin, Duration::from_secs(30)).await?;
    // Each annotation's series carry every label its title, text and tags name, and the
    // Canary's phase annotations name every phase Prometheus saw the Canary in.
    await_series(
        &client,
        r#"serin_canary_phase{namespace="default", name="podinfo", phase="Succeeded"}"#,
    )
    .await?;
    let phases_seen = client
        .query(r#"count by (phase) (count_over_time(serin_canary_phase{namespace="default", name="podinfo"}[10m]))"#)
        .get()
        .await?;
    let phases_seen: BTreeSet<String> = phases_seen
        .data()
        .as_vector()
        .into_iter()
        .flatten()
        .filter_map(|s| s.metric().get("phase").cloned())
        .collect();
    for (name, d) in dashboards()? {
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            let Some(expr) = a["expr"].as_str() else {
                continue;
            };
            // The subquery's last step is the whole second before now: a phase scraped within
            // that second shows on a later look.
            let deadline = Instant::now() + Duration::from_secs(10);
            let returned = loop {
                let result = client
                    .query(substitute(&over_run(expr), VARS))
                    .get()
                    .await?;
                let returned = result.data().as_vector().cloned().unwrap_or_default();
                let phases: BTreeSet<String> = returned
                    .iter()
                    .filter_map(|s| s.metric().get("phase").cloned())
                    .collect();
                if name != "canary.json"
                    || phases_seen.is_subset(&phases)
                    || Instant::now() > deadline
                {
                    break returned;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            ensure!(
                !returned.is_empty(),
                "{name} annotation {}: no data",
                a["name"]
            );
            for l in annotation_labels(a) {
                ensure!(
                    returned.iter().all(|s| s.metric().contains_key(&l)),
                    "{name} annotation {}: its title, text or tags use {{{{{l}}}}}, a label its query does not return: {:?}",
                    a["name"],
                    returned.iter().map(|s| s.metric()).collect::<Vec<_>>()
                );
            }
            if name == "canary.json" {
                let phases: BTreeSet<String> = returned
                    .iter()
                    .filter_map(|s| s.metric().get("phase").cloned())
                    .collect();
                ensure!(
                    phases_seen.is_subset(&phases)
                        && phases_seen.contains("Failed")
                        && phases_seen.contains("Succeeded"),
                    "{name} annotation {}: phases {phases:?}, Prometheus saw {phases_seen:?}",
                    a["name"]
                );
            }
        }
    }
    // The proxies' own exposition, as scraped now (after errors, latency, two rollouts).
    for addr in [
        host(&site.proxy_metrics),
        frontend.admin_addr().context("frontend admin")?.to_string(),
    ] {
        promtool_checks_a_scrape(&addr).await?;
    }
    // Linkerd's dashboards' queries.
    // The authority the proxy routes podinfo's traffic on, as Linkerd's authority variable
    // lists it.
    let authority = client
        .query(r#"count by (authority) (request_total{deployment="loadgen", direction="outbound", authority!=""})"#)
        .get()
        .await?
        .data()
        .as_vector()
        .and_then(|v| v.first())
        .and_then(|s| s.metric().get("authority").cloned())
        .context("no outbound authority")?;
    // The pod dashboard's pod variable, here one of podinfo's primary pods as its callers'
    // series name it (`dst_pod`, from the endpoint labels serin-local writes).
    let dst_pod = client
        .query(r#"count by (dst_pod) (request_total{dst_namespace="default", dst_deployment="podinfo-primary", direction="outbound", dst_pod!=""})"#)
        .get()
        .await?
        .data()
        .as_vector()
        .and_then(|v| v.first())
        .and_then(|s| s.metric().get("dst_pod").cloned())
        .context("no outbound series names podinfo-primary's pod (dst_pod)")?;
    let queries = linkerd_queries();
    let linkerd: Vec<(String, String)> = queries
        .iter()
        .map(|(dash, w, q)| {
            (
                format!("linkerd {dash} {w}"),
                substitute(q, &[("authority", &authority), ("dst_pod", &dst_pod)]),
            )
        })
        .collect();
    all_answer(&client, &linkerd, Duration::from_secs(30)).await?;
    let mut per_dashboard: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (dash, _, q) in &queries {
        let e = per_dashboard.entry(dash).or_default();
        e.0 += 1;
        e.1 += usize::from(q.contains("dst_pod"));
    }
    for (dash, (n, by_pod)) in &per_dashboard {
        println!(
            "linkerd {dash}: {n} of {n} queries answered ({by_pod} of them by destination pod)"
        );
    }
    // Every destination pod is named as a Deployment's pods are, `<dst_deployment>-<hash>-<n>`;
    // each revision the primary and the canary ran had its own hash, and the two workloads
    // never shared one (so the ReplicaSet-like hash tells primary and canary apart).
    let named = client
        .query(r#"count by (dst_deployment, dst_pod, dst_pod_template_hash) (max_over_time(request_total{namespace="default", deployment="loadgen", direction="outbound", dst_pod!=""}[1h]))"#)
        .get()
        .await?;
    let mut hashes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for series in named.data().as_vector().into_iter().flatten() {
        let label = |k: &str| series.metric().get(k).cloned().unwrap_or_default();
        let (deployment, pod, hash) = (
            label("dst_deployment"),
            label("dst_pod"),
            label("dst_pod_template_hash"),
        );
        ensure!(
            !hash.is_empty() && pod.starts_with(&format!("{deployment}-{hash}-")),
            "dst_pod {pod:?} is not named <dst_deployment>-<dst_pod_template_hash>-<n> ({deployment}, {hash})"
        );
        hashes.entry(deployment).or_default().insert(hash);
    }
    println!("destination pod-template-hashes by workload: {hashes:?}");
    let (primary, canary) = (
        hashes.get("podinfo-primary").cloned().unwrap_or_default(),
        hashes.get("podinfo").cloned().unwrap_or_default(),
    );
    ensure!(
        primary.len() >= 2 && !canary.is_empty() && primary.is_disjoint(&canary),
        "expected the promotion to give the primary a new hash, and the canary hashes of its own: {hashes:?}"
    );
    for (name, expr) in &alerts {
        if name != "SerinRolloutFailed" {
            await_alert(&client, name, expr, false).await?;
        }
    }

    // A rollout held at a confirm-rollout gate that keeps refusing, under a short progress
    // deadline: the Canary sits in Waiting with no transition beyond its deadline.
    let gate = refusing_gate().await?;
    hold_next_rollout(
        &site,
        &format!("http://{gate}/gate/check"),
        STUCK_DEADLINE_SECONDS,
    )?;
    site.rollout("v4", &[("SERIN_SAMPLE_APP_ERROR_RATE", "0")])?;
    site.await_status("v4 held at the gate", STEP, &mut seen, |r| {
        r["status"]["run"]["revision"] == "v4" && r["status"]["phase"] == "Waiting"
    })
    .await?;
    await_alert(
        &client,
        "SerinCanaryStuck",
        &alerts["SerinCanaryStuck"],
        true,
    )
    .await?;

    // A proxy whose pod goes away (its process, its route stream and its metrics with it) is
    // not a disconnected proxy, even once the control plane counts one proxy fewer.
    await_series(
        &client,
        r#"serin_proxy_control_plane_connected{deployment="leaver"} == 1"#,
    )
    .await?;
    await_series(&client, "sum(serin_control_connected_proxies) == 3").await?;
    leaver_stream.abort();
    leaver.shutdown().await;
    await_series(&client, "sum(serin_control_connected_proxies) == 2").await?;
    await_series(
        &client,
        r#"absent(serin_proxy_control_plane_connected{deployment="leaver"})"#,
    )
    .await?;
    await_alert(
        &client,
        "SerinProxiesDisconnected",
        &alerts["SerinProxiesDisconnected"],
        false,
    )
    .await?;
    // A running proxy that loses its route stream (the control plane unreachable from it).
    relay.cut();
    await_alert(
        &client,
        "SerinProxiesDisconnected",
        &alerts["SerinProxiesDisconnected"],
        true,
    )
    .await?;
    site.kill_controller()?;
    await_alert(
        &client,
        "SerinControllerNoLeader",
        &alerts["SerinControllerNoLeader"],
        true,
    )
    .await?;
    // The dashboard agrees: with no controller running, Leader and Replicas read 0 (not their
    // last value, nor no data).
    let controller = dashboards()?
        .into_iter()
        .find(|(n, _)| n == "controller.json")
        .map(|(_, d)| d)
        .context("controller.json")?;
    for title in ["Leader", "Replicas"] {
        let p = controller["panels"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["title"] == title)
            .with_context(|| format!("controller.json: no panel {title}"))?;
        let expr = substitute(p["targets"][0]["expr"].as_str().unwrap_or_default(), VARS);
        let got = client.query(expr.as_str()).get().await?;
        let values: Vec<f64> = got
            .data()
            .as_vector()
            .into_iter()
            .flatten()
            .map(|s| s.sample().value())
            .collect();
        ensure!(
            values == [0.0],
            "controller.json {title} reads {values:?} with no controller running: {expr}"
        );
    }

    load.finish().await?;
    frontend.shutdown().await;
    site.stop().await;
    drop(prometheus);
    Ok(())
}

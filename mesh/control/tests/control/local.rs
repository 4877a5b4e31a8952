//! The local source and its HTTP API: file reloads, bad files kept out, weights API inputs.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use common::{ROUTES, temp_dir};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serin_mesh_api::table::{Authority, RouteTable};
use serin_mesh_control::Running;

async fn start(dir: &std::path::Path) -> anyhow::Result<Running> {
    common::start_local(dir, Duration::from_millis(20)).await
}

async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> anyhow::Result<(StatusCode, String)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let text = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
    Ok((status, text))
}

async fn table(addr: SocketAddr) -> anyhow::Result<RouteTable> {
    let (_, body) = call(addr, Method::GET, "/v1/table?namespace=default", "").await?;
    Ok(serde_json::from_str(&body)?)
}

fn split_weights(t: &RouteTable) -> Vec<u32> {
    let a: Authority = "web".parse().expect("authority");
    t.routes
        .iter()
        .find(|r| r.authority == a)
        .map(|r| r.rules[0].backends.iter().map(|b| b.weight).collect())
        .unwrap_or_default()
}

async fn until_version(cp: &Running, above: u64) -> anyhow::Result<u64> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let v = cp.hub.current().version;
            if v > above {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .context("no new version")
}

#[tokio::test]
async fn files_reload_on_change_and_a_bad_file_keeps_the_last_good_content() -> anyhow::Result<()> {
    let dir = temp_dir("local");
    std::fs::write(dir.join("web.yaml"), ROUTES)?;
    let cp = start(&dir).await?;
    let (status, _) = call(cp.addr, Method::GET, "/ready", "").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(split_weights(&table(cp.addr).await?), [100, 0]);

    let v = cp.hub.current().version;
    std::fs::write(
        dir.join("web.yaml"),
        ROUTES
            .replace("weight: 100}", "weight: 60}")
            .replace("weight: 0}", "weight: 40}"),
    )?;
    until_version(&cp, v).await?;
    assert_eq!(split_weights(&table(cp.addr).await?), [60, 40]);

    // A broken save: reported, and the 60/40 content stays in force.
    std::fs::write(
        dir.join("web.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: [oops",
    )?;
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cp
            .hub
            .metrics
            .encode()
            .contains(r#"serin_control_errors_total{kind="file",reason="Parse"} 1"#)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .context("parse error not counted")?;
    assert_eq!(split_weights(&table(cp.addr).await?), [60, 40]);

    // Removing the file removes its objects.
    let v = cp.hub.current().version;
    std::fs::remove_file(dir.join("web.yaml"))?;
    until_version(&cp, v).await?;
    assert!(table(cp.addr).await?.routes.is_empty());
    cp.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_weights_api_names_what_is_wrong_and_changes_nothing_then() -> anyhow::Result<()> {
    let dir = temp_dir("local");
    std::fs::write(dir.join("web.yaml"), ROUTES)?;
    let cp = start(&dir).await?;
    let path = "/v1/routes/trafficsplits/default/web/weights";
    for (body, status, needle) in [
        (
            r#"{"backends":[{"name":"nope","weight":1}]}"#,
            StatusCode::BAD_REQUEST,
            "\"nope\" is not a backend",
        ),
        (
            r#"{"backends":[{"name":"web-v1","weight":2000000}]}"#,
            StatusCode::BAD_REQUEST,
            "backends[0].weight",
        ),
        (
            r#"{"backends":[{"name":"web-v1","weight":0}]}"#,
            StatusCode::BAD_REQUEST,
            "every weight is 0",
        ),
        (
            r#"{"backends":[]}"#,
            StatusCode::BAD_REQUEST,
            "at least one backend",
        ),
        (
            r#"{"weights":{}}"#,
            StatusCode::BAD_REQUEST,
            "body: expected",
        ),
    ] {
        let (got, text) = call(cp.addr, Method::PUT, path, body).await?;
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
    let (got, _) = call(
        cp.addr,
        Method::PUT,
        "/v1/routes/trafficsplits/default/missing/weights",
        r#"{"backends":[{"name":"a","weight":1}]}"#,
    )
    .await?;
    assert_eq!(got, StatusCode::NOT_FOUND);
    let (got, _) = call(
        cp.addr,
        Method::PUT,
        "/v1/routes/gateways/default/web/weights",
        "{}",
    )
    .await?;
    assert_eq!(got, StatusCode::NOT_FOUND);
    assert_eq!(
        split_weights(&table(cp.addr).await?),
        [100, 0],
        "nothing changed"
    );

    let (got, text) = call(
        cp.addr,
        Method::PUT,
        path,
        r#"{"backends":[{"name":"web-v1","weight":0},{"name":"web-v2","weight":100}]}"#,
    )
    .await?;
    assert_eq!(got, StatusCode::OK, "{text}");
    let st: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(st["version"], st["latestVersion"]);
    assert_eq!(split_weights(&table(cp.addr).await?), [0, 100]);

    // Objects through the API: a bad one is refused with its field, a good one served.
    let bad = r#"{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"r"},
        "spec":{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[{"filters":[{"type":"URLRewrite"}]}]}}"#;
    let (got, text) = call(cp.addr, Method::PUT, "/v1/routes/httproutes/default/r", bad).await?;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert!(text.contains("spec.rules[0].filters[0].type"), "{text}");
    let good = bad.replace(
        r#""filters":[{"type":"URLRewrite"}]"#,
        r#""backendRefs":[{"name":"web-v2"}]"#,
    );
    let (got, text) = call(
        cp.addr,
        Method::PUT,
        "/v1/routes/httproutes/default/r",
        &good,
    )
    .await?;
    assert_eq!(got, StatusCode::OK, "{text}");
    let (got, _) = call(
        cp.addr,
        Method::DELETE,
        "/v1/routes/httproutes/default/r",
        "",
    )
    .await?;
    assert_eq!(got, StatusCode::NO_CONTENT);
    let (got, text) = call(
        cp.addr,
        Method::DELETE,
        "/v1/routes/trafficsplits/default/web",
        "",
    )
    .await?;
    assert_eq!(
        got,
        StatusCode::CONFLICT,
        "file objects are removed in the file: {text}"
    );

    // The stream refuses a bad subscription, naming the parameter.
    let (got, text) = call(cp.addr, Method::GET, "/v1/watch?workload=nope&proxy=p", "").await?;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert!(text.contains("workload"), "{text}");
    let (got, text) = call(
        cp.addr,
        Method::GET,
        "/v1/watch?workload=default/x&proxy=p&aliases=yes",
        "",
    )
    .await?;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert!(
        text.contains("`aliases`") && text.contains("1, 0, true, false"),
        "{text}"
    );
    let (got, _) = call(
        cp.addr,
        Method::POST,
        "/v1/ack",
        r#"{"proxy":"ghost","version":1}"#,
    )
    .await?;
    assert_eq!(got, StatusCode::NOT_FOUND);
    cp.stop().await;
    Ok(())
}

#[tokio::test]
async fn weights_leave_a_rule_that_pins_a_subset_of_the_backends_alone() -> anyhow::Result<()> {
    let dir = temp_dir("local");
    std::fs::write(
        dir.join("web.yaml"),
        format!(
            "{ROUTES}---\n{}",
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{headers: [{name: x-canary, value: insider}]}]
      backendRefs: [{name: web-v2}]
    - backendRefs: [{name: web-v1, weight: 100}, {name: web-v2, weight: 0}]
"#
        ),
    )?;
    let cp = start(&dir).await?;
    let (got, text) = call(
        cp.addr,
        Method::PUT,
        "/v1/routes/httproutes/default/web/weights",
        r#"{"backends":[{"name":"web-v1","weight":0},{"name":"web-v2","weight":100}]}"#,
    )
    .await?;
    assert_eq!(got, StatusCode::OK, "{text}");
    let t = table(cp.addr).await?;
    let a: Authority = "web".parse()?;
    let r = t.routes.iter().find(|r| r.authority == a).context("web")?;
    let w = |i: usize| -> Vec<(String, u32)> {
        r.rules[i]
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.weight))
            .collect()
    };
    assert_eq!(
        w(0),
        [("web-v2".to_string(), 1)],
        "the insider rule is untouched"
    );
    assert_eq!(
        w(1),
        [("web-v1".to_string(), 0), ("web-v2".to_string(), 100)]
    );
    cp.stop().await;
    Ok(())
}

#[tokio::test]
async fn static_endpoint_labels_reach_the_table_per_endpoint_and_a_conflict_drops_them()
-> anyhow::Result<()> {
    let dir = temp_dir("local");
    // As serin-local writes them: the apex and the primary list (and label) the same process.
    let labelled = |name: &str, addr: &str, pod: &str| {
        format!(
            "apiVersion: serin.dev/v1beta1\nkind: StaticEndpoints\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [\"{addr}\"]\n  labels: {{deployment: web-primary}}\n  endpointLabels: {{\"{addr}\": {{pod: {pod}, pod_template_hash: 5b8c7d9f6d}}}}\n---\n"
        )
    };
    let routes = format!(
        "{}{}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: web}}]\n  rules: [{{backendRefs: [{{name: web-primary, port: 80}}]}}]\n",
        labelled("web", "127.0.0.1:1001", "web-primary-5b8c7d9f6d-0"),
        labelled("web-primary", "127.0.0.1:1001", "web-primary-5b8c7d9f6d-0"),
    );
    std::fs::write(dir.join("web.yaml"), &routes)?;
    let cp = start(&dir).await?;
    let labels_of = |t: &RouteTable| {
        let a: Authority = "web".parse().expect("authority");
        let r = t.routes.iter().find(|r| r.authority == a).cloned();
        r.and_then(|r| r.backends.into_iter().find(|b| b.name == "web-primary"))
            .map(|b| (b.labels, b.endpoint_labels))
    };
    let (labels, per_endpoint) = labels_of(&table(cp.addr).await?).context("web-primary")?;
    assert_eq!(labels["deployment"], "web-primary");
    let ep: SocketAddr = "127.0.0.1:1001".parse()?;
    assert_eq!(per_endpoint[&ep]["pod"], "web-primary-5b8c7d9f6d-0");
    assert_eq!(per_endpoint[&ep]["pod_template_hash"], "5b8c7d9f6d");

    // Two objects naming one address as two different pods: neither name is trusted.
    let v = cp.hub.current().version;
    std::fs::write(
        dir.join("web.yaml"),
        routes.replacen("web-primary-5b8c7d9f6d-0", "web-primary-5b8c7d9f6d-1", 1),
    )?;
    until_version(&cp, v).await?;
    let (_, per_endpoint) = labels_of(&table(cp.addr).await?).context("web-primary")?;
    assert!(per_endpoint.is_empty(), "{per_endpoint:?}");
    cp.stop().await;
    Ok(())
}

const DANGLING: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: podinfo, namespace: test}
spec: {}
---
apiVersion: serin.dev/v1beta1
kind: StaticEndpoints
metadata: {name: podinfo-primary, namespace: test}
spec: {endpoints: ["127.0.0.1:19001"]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: podinfo, namespace: test}
spec:
  parentRefs: [{group: "", kind: Service, name: podinfo}]
  rules:
    - backendRefs:
        - {name: podinfo-primary, weight: 90}
        - {name: podinfo-canary, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orphan, namespace: test}
spec:
  parentRefs: [{group: "", kind: Service, name: nosuch}]
  rules:
    - backendRefs: [{name: podinfo-primary}]
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: split, namespace: test}
spec:
  service: podinfo-apex
  backends:
    - {service: podinfo-primary, weight: 90}
    - {service: podinfo-ghost, weight: 10}
"#;

/// `(valid, [(field, reason)])` of one route object on the status API.
async fn route_problems(
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(bool, Vec<(String, String)>)> {
    let (status, body) = call(addr, Method::GET, path, "").await?;
    anyhow::ensure!(status == StatusCode::OK, "{path}: {status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let problems = v["problems"]
        .as_array()
        .context("problems")?
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap_or_default().to_string(),
                p["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Ok((v["valid"] == true, problems))
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(f, r)| (f.to_string(), r.to_string()))
        .collect()
}

#[tokio::test]
async fn references_that_do_not_resolve_are_reported_on_the_status_api() -> anyhow::Result<()> {
    let dir = temp_dir("dangling");
    std::fs::write(dir.join("routes.yaml"), DANGLING)?;
    let cp = start(&dir).await?;
    // The canary's share is answered 500 (an invalid backendRef): the route still runs, and
    // says why.
    let route = "/v1/routes/httproutes/test/podinfo";
    assert_eq!(
        route_problems(cp.addr, route).await?,
        (
            true,
            pairs(&[("spec.rules[0].backendRefs[1]", "BackendNotFound")])
        )
    );
    assert_eq!(
        route_problems(cp.addr, "/v1/routes/httproutes/test/orphan").await?,
        (true, pairs(&[("spec.parentRefs[0]", "NoMatchingParent")]))
    );
    assert_eq!(
        route_problems(cp.addr, "/v1/routes/trafficsplits/test/split").await?,
        (
            true,
            pairs(&[
                ("spec.service", "NoMatchingParent"),
                ("spec.backends[1].service", "BackendNotFound")
            ])
        )
    );

    // The canary's Service appears: nothing left to report.
    let v = cp.hub.current().version;
    std::fs::write(
        dir.join("canary.yaml"),
        "apiVersion: serin.dev/v1beta1\nkind: StaticEndpoints\nmetadata: {name: podinfo-canary, namespace: test}\nspec: {endpoints: [\"127.0.0.1:19002\"]}\n",
    )?;
    until_version(&cp, v).await?;
    assert_eq!(route_problems(cp.addr, route).await?, (true, vec![]));
    cp.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_cluster_domain_no_route_table_can_hold_is_refused_at_start() -> anyhow::Result<()> {
    let dir = temp_dir("domain");
    std::fs::write(dir.join("web.yaml"), ROUTES)?;
    let start_with = |domain: &str| {
        let options = serin_mesh_control::translate::Options {
            cluster_domain: domain.into(),
        };
        common::start_local_with(&dir, Duration::from_secs(3600), options)
    };
    // Every proxy would refuse every snapshot holding `web.default.svc.bad domain`.
    for bad in ["bad domain", "", "cluster..local", "cluster.local:53"] {
        let err = match start_with(bad).await {
            Ok(_) => anyhow::bail!("{bad:?} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("--cluster-domain") && err.contains("e.g. cluster.local"),
            "{err}"
        );
    }
    let cp = start_with("Cluster.Example.").await?;
    let t = table(cp.addr).await?;
    let a: Authority = "web.default.svc.cluster.example".parse()?;
    assert!(t.routes.iter().any(|r| r.authority == a), "{t:?}");
    cp.stop().await;
    Ok(())
}

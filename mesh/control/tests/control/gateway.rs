//! Gateway API conformance situations (HTTPRoute in GAMMA mesh mode), played in Serin's own
//! fixtures: the same situations the upstream conformance suite sets up, with the same expected
//! outcomes, checked on the translated table and route status.

use serin_mesh_api::objects::HttpRoute;
use serin_mesh_api::table::{Authority, Route, RouteTable};
use serin_mesh_control::translate::{Options, check_route, route_verdicts, translate};
use serin_mesh_control::world::{EndpointSet, ObjKey, ServiceInfo, ServicePort, World};

/// Namespace `mesh`: Service `echo` with ports 80 (`http`) and 8080 (`admin`), and backends
/// `echo-v1`, `echo-v2` (one port each, one ready pod each).
fn mesh() -> World {
    let mut w = World::default();
    w.services.insert(
        ObjKey::new("mesh", "echo"),
        ServiceInfo {
            cluster_ips: vec!["10.96.1.1".parse().expect("ip")],
            ports: vec![
                ServicePort {
                    name: Some("http".into()),
                    port: 80,
                },
                ServicePort {
                    name: Some("admin".into()),
                    port: 8080,
                },
            ],
            ..ServiceInfo::default()
        },
    );
    for (i, name) in ["echo-v1", "echo-v2"].into_iter().enumerate() {
        w.services.insert(
            ObjKey::new("mesh", name),
            http_service(&format!("10.96.1.{}", i + 2)),
        );
        w.endpoints.insert(
            ObjKey::new("mesh", name),
            [(
                format!("{name}-slice"),
                EndpointSet::Slice {
                    ports: vec![(Some("http".into()), 8080)],
                    ready: vec![format!("10.1.1.{}", i + 1).parse().expect("ip")],
                },
            )]
            .into(),
        );
    }
    w
}

/// A Service at cluster IP `ip` with one port: 80, named `http`.
fn http_service(ip: &str) -> ServiceInfo {
    ServiceInfo {
        cluster_ips: vec![ip.parse().expect("ip")],
        ports: vec![ServicePort {
            name: Some("http".into()),
            port: 80,
        }],
        ..ServiceInfo::default()
    }
}

/// The table translated for namespace `mesh`'s clients, which the proxy must accept.
fn valid_table(w: &World) -> RouteTable {
    let t = translate(w, "mesh", &Options::default(), 1);
    t.validate().expect("the proxy accepts the table");
    t
}

fn route(yaml: &str) -> HttpRoute {
    serde_norway::from_str(yaml).expect("test route")
}

fn with(mut w: World, routes: &[&HttpRoute]) -> World {
    for r in routes {
        w.routes.insert(ObjKey::of(*r), (*r).clone());
    }
    w
}

fn at<'a>(t: &'a RouteTable, authority: &str) -> &'a Route {
    let a: Authority = authority.parse().expect("authority");
    t.routes
        .iter()
        .find(|r| r.authority == a)
        .unwrap_or_else(|| panic!("no route for {authority}"))
}

/// The backends the catch-all (last) rule of `authority` sends to, with weights.
fn split_at(t: &RouteTable, authority: &str) -> Vec<(String, u32)> {
    let r = at(t, authority);
    let rule = r.rules.last().expect("a rule");
    rule.backends
        .iter()
        .map(|b| (b.name.clone(), b.weight))
        .collect()
}

fn to_v2_on(parent: &str) -> HttpRoute {
    route(&format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: to-v2, namespace: mesh}}
spec:
  parentRefs: [{parent}]
  rules:
    - backendRefs: [{{name: echo-v2, port: 80}}]
"#
    ))
}

#[test]
fn a_route_on_one_port_of_a_multi_port_service_routes_that_port_only() {
    // mesh-ports: the parentRef names port 80; port 8080 keeps going to the Service itself.
    let r = to_v2_on(r#"{group: "", kind: Service, name: echo, port: 80}"#);
    assert!(check_route(&r).is_empty());
    let t = valid_table(&with(mesh(), &[&r]));
    for host in ["echo", "echo.mesh.svc.cluster.local", "10.96.1.1"] {
        assert_eq!(
            split_at(&t, &format!("{host}:80")),
            [("echo-v2".to_string(), 1)],
            "{host}:80"
        );
        assert_eq!(
            split_at(&t, &format!("{host}:8080")),
            [("echo".to_string(), 1)],
            "{host}:8080"
        );
    }
}

#[test]
fn a_section_name_attaches_the_route_to_the_named_port_only() {
    // ParentReference.sectionName on a Service parent names one of its ports.
    let r = to_v2_on(r#"{group: "", kind: Service, name: echo, sectionName: admin}"#);
    let w = with(mesh(), &[&r]);
    let t = valid_table(&w);
    assert_eq!(split_at(&t, "echo:8080"), [("echo-v2".to_string(), 1)]);
    assert_eq!(split_at(&t, "echo:80"), [("echo".to_string(), 1)]);
    let v = route_verdicts(&w, &r, &check_route(&r));
    assert!(v[0].accepted.0, "{:?}", v[0].accepted);

    // A section the Service does not have: not accepted, and the route applies to nothing.
    let r = to_v2_on(r#"{group: "", kind: Service, name: echo, sectionName: grpc}"#);
    let w = with(mesh(), &[&r]);
    let t = translate(&w, "mesh", &Options::default(), 1);
    assert_eq!(split_at(&t, "echo:8080"), [("echo".to_string(), 1)]);
    assert_eq!(split_at(&t, "echo:80"), [("echo".to_string(), 1)]);
    let v = route_verdicts(&w, &r, &check_route(&r));
    assert_eq!(
        (v[0].accepted.0, v[0].accepted.1),
        (false, "NoMatchingParent"),
        "{:?}",
        v[0].accepted
    );
    // Port and section name both given: the port must be the named one.
    let r = to_v2_on(r#"{group: "", kind: Service, name: echo, sectionName: admin, port: 80}"#);
    let w = with(mesh(), &[&r]);
    let v = route_verdicts(&w, &r, &check_route(&r));
    assert_eq!(
        (v[0].accepted.0, v[0].accepted.1),
        (false, "NoMatchingParent")
    );
    let t = translate(&w, "mesh", &Options::default(), 1);
    assert_eq!(split_at(&t, "echo:80"), [("echo".to_string(), 1)]);
}

fn verdict(w: &World, r: &HttpRoute) -> ((bool, String), (bool, String)) {
    let v = route_verdicts(w, r, &check_route(r));
    let v = &v[0];
    (
        (v.accepted.0, v.accepted.1.to_string()),
        (v.resolved_refs.0, v.resolved_refs.1.to_string()),
    )
}

#[test]
fn a_backend_ref_of_an_unsupported_kind_is_accepted_unresolved_and_answered_500() {
    // httproute-invalid-backendref-unknown-kind: the route is Accepted, ResolvedRefs=False
    // with reason InvalidKind, and the requests that would go to that backend get a 500.
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: odd-kind, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /odd}}]
      backendRefs: [{group: example.com, kind: Bucket, name: echo-v1}]
    - backendRefs: [{name: echo-v1, port: 80}]
"#,
    );
    assert!(check_route(&r).is_empty(), "{:?}", check_route(&r));
    let w = with(mesh(), &[&r]);
    assert_eq!(
        verdict(&w, &r),
        ((true, "Accepted".into()), (false, "InvalidKind".into()))
    );
    let t = valid_table(&w);
    let route = at(&t, "echo:80");
    let odd = &route.rules[0].backends[0].name;
    let def = route.resolve_backend(odd).expect("defined");
    assert_eq!(def.invalid, Some("InvalidKind"), "{odd}");
    assert!(def.endpoints.is_empty());
    // The Service of the same name stays valid for the rule that names it properly.
    let v1 = route
        .resolve_backend(&route.rules[1].backends[0].name)
        .expect("v1");
    assert_eq!((v1.name, v1.invalid), ("echo-v1", None));
    assert_eq!(v1.endpoints.len(), 1);
}

#[test]
fn a_rule_whose_every_weight_is_zero_is_accepted_and_answered_500() {
    // httproute-weight / backendRefs: weight 0 sends nothing to a backend; a rule with nothing
    // left to send to answers 500 (not a refusal of the route, which would keep an older
    // version routing traffic the user meant to stop).
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: drained, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
    - matches: [{path: {value: /drained}}]
      backendRefs: [{name: echo-v1, port: 80, weight: 0}, {name: echo-v2, port: 80, weight: 0}]
    - backendRefs: [{name: echo-v1, port: 80, weight: 0}, {name: echo-v2, port: 80, weight: 3}]
"#,
    );
    assert!(check_route(&r).is_empty(), "{:?}", check_route(&r));
    let w = with(mesh(), &[&r]);
    assert_eq!(
        verdict(&w, &r),
        ((true, "Accepted".into()), (true, "ResolvedRefs".into()))
    );
    let t = valid_table(&w);
    let route = at(&t, "echo:80");
    let drained = &route.rules[0].backends;
    assert_eq!(drained.len(), 1);
    let def = route.resolve_backend(&drained[0].name).expect("defined");
    assert!(def.invalid.is_some() && def.endpoints.is_empty(), "{def:?}");
    assert_eq!(
        split_at(&t, "echo:80"),
        [("echo-v1".to_string(), 0), ("echo-v2".to_string(), 3)]
    );
}

// ---- Through the real control plane (local files) and a real serin-proxy ----

use std::collections::BTreeMap as Map;
use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::e2e::{TestProxy, applied, client, control_plane, proxy, temp_dir};

/// A stub upstream answering every request with JSON naming itself and echoing the request's
/// method, path and headers (each header's values joined with `,`).
async fn echo(name: &'static str) -> anyhow::Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| async move {
                        let mut headers: Map<String, Vec<String>> = Map::new();
                        for (k, v) in req.headers() {
                            headers
                                .entry(k.as_str().to_string())
                                .or_default()
                                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                        }
                        let headers: Map<String, String> =
                            headers.into_iter().map(|(k, v)| (k, v.join(","))).collect();
                        let body = serde_json::json!({
                            "backend": name,
                            "method": req.method().as_str(),
                            "path": req.uri().path(),
                            "headers": headers,
                        });
                        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
                        resp.headers_mut()
                            .insert("x-upstream", hyper::header::HeaderValue::from_static("1"));
                        resp.headers_mut()
                            .append("x-multi", hyper::header::HeaderValue::from_static("up"));
                        Ok::<_, Infallible>(resp)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// What the proxy answered: status, response headers, and the upstream's echo (Null when the
/// proxy answered itself).
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    echo: serde_json::Value,
}

impl Answer {
    fn backend(&self) -> &str {
        self.echo["backend"].as_str().unwrap_or("(proxy)")
    }
    fn seen(&self, header: &str) -> Option<&str> {
        self.echo["headers"][header].as_str()
    }
}

/// One request through the proxy to authority `echo.mesh` (the proxy is in namespace `test`).
async fn ask(
    p: &TestProxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Answer> {
    ask_host(p, "echo.mesh", method, path, headers).await
}

/// [`ask`] with the given `Host`.
async fn ask_host(
    p: &TestProxy,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Answer> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", p.proxy.outbound_addr()))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client().request(req.body(Full::new(Bytes::new()))?).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    let echo = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok(Answer {
        status,
        headers,
        echo,
    })
}

/// Services `echo` (no endpoints of its own) and `echo-v1`..`echo-v3` with one stub each, plus
/// the given routes, served by a local control plane to one proxy.
async fn mesh_site(routes: &str) -> anyhow::Result<(serin_mesh_control::Running, TestProxy)> {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: mesh}\nspec: {}\n",
    );
    for name in ["echo-v1", "echo-v2", "echo-v3"] {
        let addr = echo(name).await?;
        yaml.push_str(&format!(
            "---\napiVersion: serin.dev/v1beta1\nkind: StaticEndpoints\nmetadata: {{name: {name}, namespace: mesh}}\nspec: {{endpoints: [\"{addr}\"]}}\n"
        ));
    }
    let dir = temp_dir();
    std::fs::write(dir.join("services.yaml"), yaml)?;
    std::fs::write(dir.join("routes.yaml"), routes)?;
    let cp = control_plane(&dir, "127.0.0.1:0".parse()?).await?;
    let p = proxy(cp.addr, 0).await?;
    applied(&p, 1).await?;
    Ok((cp, p))
}

const MATCHING: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-newer, namespace: mesh, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /same}}]
      backendRefs: [{name: echo-v3}]
    - matches: [{path: {type: PathPrefix, value: /foo}}]
      backendRefs: [{name: echo-v2}]
    - matches: [{path: {type: PathPrefix, value: /dir/}}]
      backendRefs: [{name: echo-v2}]
    - matches: [{headers: [{name: X-Version, value: two}]}]
      backendRefs: [{name: echo-v2}]
    - matches: [{path: {value: /q}, queryParams: [{name: animal, value: whale}]}]
      backendRefs: [{name: echo-v3}]
    - matches: [{path: {value: /m}, method: POST}]
      backendRefs: [{name: echo-v3}]
    - matches: [{path: {type: RegularExpression, value: "/re/[0-9]+"}}]
      backendRefs: [{name: echo-v3}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-older, namespace: mesh, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /same}}]
      backendRefs: [{name: echo-v2}]
    - matches: [{path: {type: Exact, value: /foo/exact}}]
      backendRefs: [{name: echo-v3}]
    - matches: [{path: {value: /q}, headers: [{name: x-a, value: "1"}, {name: x-b, value: "2"}]}]
      backendRefs: [{name: echo-v2}]
    - backendRefs: [{name: echo-v1}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_and_their_precedence_across_rules_and_routes_reach_the_proxy() -> anyhow::Result<()>
{
    // httproute-matching, -matching-across-routes, -path-match-order, -exact-path-matching,
    // -header-matching, -query-param-matching, -method-matching.
    let (_cp, p) = mesh_site(MATCHING).await?;
    for (method, path, headers, want) in [
        ("GET", "/", &[][..], "echo-v1"),
        // PathPrefix matches whole segments; a trailing slash in the prefix is ignored.
        ("GET", "/foo", &[], "echo-v2"),
        ("GET", "/foo/", &[], "echo-v2"),
        ("GET", "/foo/bar", &[], "echo-v2"),
        ("GET", "/foobar", &[], "echo-v1"),
        ("GET", "/dir", &[], "echo-v2"),
        ("GET", "/dir/x", &[], "echo-v2"),
        ("GET", "/dirx", &[], "echo-v1"),
        // Exact beats any prefix, even one of an older route... and of a newer one.
        ("GET", "/foo/exact", &[], "echo-v3"),
        ("GET", "/foo/exact/more", &[], "echo-v2"),
        // The same match in two routes: the older route wins.
        ("GET", "/same", &[], "echo-v2"),
        // Header names are case-insensitive, values are not.
        ("GET", "/", &[("x-version", "two")], "echo-v2"),
        ("GET", "/", &[("X-VERSION", "two")], "echo-v2"),
        ("GET", "/", &[("x-version", "Two")], "echo-v1"),
        // Same path: more header matches beat more query matches.
        (
            "GET",
            "/q?animal=whale",
            &[("x-a", "1"), ("x-b", "2")],
            "echo-v2",
        ),
        ("GET", "/q?animal=whale", &[], "echo-v3"),
        ("GET", "/q?animal=dolphin", &[], "echo-v1"),
        ("POST", "/m", &[], "echo-v3"),
        ("GET", "/m", &[], "echo-v1"),
        // A regular expression must match the whole path.
        ("GET", "/re/42", &[], "echo-v3"),
        ("GET", "/re/42x", &[], "echo-v1"),
    ] {
        let a = ask(&p, method, path, headers).await?;
        assert_eq!(
            (a.status, a.backend()),
            (200, want),
            "{method} {path} {headers:?}"
        );
    }
    Ok(())
}

const FILTERS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
    - matches: [{path: {value: /request}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Set, value: set-value}]
            add: [{name: X-Add, value: added}]
            remove: [X-Remove]
      backendRefs: [{name: echo-v1}]
    - matches: [{path: {value: /response}}]
      filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: X-Upstream, value: replaced}]
            add: [{name: X-Multi, value: route}]
            remove: [X-Gone]
      backendRefs: [{name: echo-v1}]
    - matches: [{path: {value: /odd-kind}}]
      backendRefs: [{group: example.com, kind: Bucket, name: echo-v2}]
    - matches: [{path: {value: /drained}}]
      backendRefs: [{name: echo-v2, weight: 0}, {name: echo-v3, weight: 0}]
    - matches: [{path: {value: /missing}}]
      backendRefs: [{name: echo-v9}]
    - backendRefs: [{name: echo-v1}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_invalid_backends_act_on_real_requests() -> anyhow::Result<()> {
    // httproute-request-header-modifier, -response-header-modifier,
    // -invalid-backendref-unknown-kind, -invalid-nonexistent-backendref, -weight (all 0).
    let (cp, p) = mesh_site(FILTERS).await?;

    // Set replaces (whatever the case of the name), add appends, remove removes.
    let a = ask(
        &p,
        "GET",
        "/request",
        &[
            ("x-set", "client"),
            ("x-add", "client"),
            ("x-remove", "gone"),
            ("x-keep", "kept"),
        ],
    )
    .await?;
    assert_eq!(a.status, 200);
    assert_eq!(a.seen("x-set"), Some("set-value"), "{}", a.echo);
    assert_eq!(a.seen("x-add"), Some("client,added"), "{}", a.echo);
    assert_eq!(a.seen("x-remove"), None, "{}", a.echo);
    assert_eq!(a.seen("x-keep"), Some("kept"), "{}", a.echo);
    let a = ask(&p, "GET", "/request", &[]).await?;
    assert_eq!(
        (a.seen("x-set"), a.seen("x-add")),
        (Some("set-value"), Some("added"))
    );

    let a = ask(&p, "GET", "/response", &[]).await?;
    let values = |n: &str| -> Vec<&str> {
        a.headers
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    assert_eq!(values("x-upstream"), ["replaced"]);
    assert_eq!(values("x-multi"), ["up", "route"]);

    // Invalid backends: 500 for their share, the route still serves the rest.
    for path in ["/odd-kind", "/drained", "/missing"] {
        let a = ask(&p, "GET", path, &[]).await?;
        assert_eq!((a.status, a.backend()), (500, "(proxy)"), "{path}");
    }
    assert_eq!(ask(&p, "GET", "/", &[]).await?.backend(), "echo-v1");

    // The status API names the unresolved references.
    let url = format!("http://{}/v1/routes/httproutes/mesh/filters", cp.addr);
    let resp = client()
        .request(Request::get(url).body(Full::new(Bytes::new()))?)
        .await?;
    let status: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
    assert_eq!(status["valid"], true, "{status}");
    let reasons: Vec<(&str, &str)> = status["problems"]
        .as_array()
        .context("problems")?
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap_or(""),
                p["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("spec.rules[2].backendRefs[0].kind", "InvalidKind"),
            ("spec.rules[4].backendRefs[0]", "BackendNotFound"),
        ],
        "{status}"
    );
    Ok(())
}

const REDIRECTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: redirects, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /hostname-redirect}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
    - matches: [{path: {type: PathPrefix, value: /status-code-301}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 301}}]
    - matches: [{path: {type: PathPrefix, value: /status-code-302}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 302}}]
    - matches: [{path: {type: PathPrefix, value: /port-and-host}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8083}}]
    - matches: [{path: {type: PathPrefix, value: /port}}]
      filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]
    - matches: [{path: {type: PathPrefix, value: /port-80}}]
      filters: [{type: RequestRedirect, requestRedirect: {port: 80}}]
    - matches: [{path: {type: PathPrefix, value: /scheme-and-port}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443}}]
    - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]
    - matches: [{path: {type: PathPrefix, value: /strip-prefix/}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: ""}}}]
    - matches: [{path: {type: PathPrefix, value: /full-path-original}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}}]
    - matches: [{path: {type: PathPrefix, value: /path-and-host}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix/}}}]
    - matches: [{path: {type: PathPrefix, value: /scheme}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
      # Ignored: the redirect answers, nothing is sent to a backend.
      backendRefs: [{name: echo-v2}]
    - backendRefs: [{name: echo-v1}]
"#;

#[test]
fn a_request_redirect_becomes_a_rule_without_backends() {
    let r = route(REDIRECTS);
    assert!(check_route(&r).is_empty(), "{:?}", check_route(&r));
    let w = with(mesh(), &[&r]);
    let ((accepted, reason), _) = verdict(&w, &r);
    assert_eq!((accepted, reason.as_str()), (true, "Accepted"));
    let t = valid_table(&w);
    let rules = &at(&t, "echo.mesh").rules;
    let redirect_of = |prefix: &str| {
        rules
            .iter()
            .find(|r| {
                r.matches
                    .first()
                    .and_then(|m| m.path.as_ref())
                    .map(|p| p.value.as_str())
                    == Some(prefix)
            })
            .unwrap_or_else(|| panic!("a rule for {prefix}"))
    };
    let scheme = redirect_of("/scheme");
    assert!(scheme.backends.is_empty(), "{scheme:?}");
    let r = scheme.redirect.as_ref().expect("a redirect");
    assert_eq!(
        (
            r.scheme.as_deref(),
            r.hostname.as_deref(),
            r.port,
            r.status_code
        ),
        (Some("https"), None, None, 301)
    );
    let r = redirect_of("/status-code-302")
        .redirect
        .as_ref()
        .expect("a redirect");
    assert_eq!(
        (r.hostname.as_deref(), r.status_code),
        (Some("example.org"), 302)
    );
    assert_eq!(
        redirect_of("/port").redirect.as_ref().and_then(|r| r.port),
        Some(8083)
    );
    assert!(rules.last().expect("catch-all").redirect.is_none());
}

#[test]
fn bad_redirects_are_refused_with_the_field() {
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-redirects, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
    - filters:
        - type: RequestRedirect
          requestRedirect: {statusCode: 307, hostname: "", port: 0, scheme: ftp}
    - filters:
        - type: RequestRedirect
          requestRedirect: {hostname: "*.example.org", port: 65536}
        - type: RequestRedirect
          requestRedirect: {port: 8080}
    - matches: [{path: {type: Exact, value: /exact}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}
    - filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: elsewhere}}
    - filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath}}}]
    - filters: [{type: RequestRedirect, requestRedirect: {path: {type: RegexReplace}}}]
"#,
    );
    let problems: Vec<(String, &str)> = check_route(&r)
        .into_iter()
        .map(|p| (p.field, p.reason))
        .collect();
    let f = |rule: usize, filter: usize, field: &str| {
        (
            format!("spec.rules[{rule}].filters[{filter}].{field}"),
            "UnsupportedValue",
        )
    };
    assert_eq!(
        problems,
        [
            f(0, 0, "requestRedirect.scheme"),
            f(0, 0, "requestRedirect.hostname"),
            f(0, 0, "requestRedirect.port"),
            f(0, 0, "requestRedirect.statusCode"),
            f(1, 0, "requestRedirect.hostname"),
            f(1, 0, "requestRedirect.port"),
            f(1, 1, "type"),
            f(2, 0, "requestRedirect.path"),
            f(3, 0, "requestRedirect.path.replaceFullPath"),
            f(4, 0, "requestRedirect.path"),
            f(5, 0, "requestRedirect.path.type"),
        ]
    );
    let messages: Vec<String> = check_route(&r).into_iter().map(|p| p.message).collect();
    assert!(
        messages[3].contains("307") && messages[3].contains("accepted: 301, 302"),
        "{messages:?}"
    );
    let w = with(mesh(), &[&r]);
    let ((accepted, reason), _) = verdict(&w, &r);
    assert_eq!((accepted, reason.as_str()), (false, "UnsupportedValue"));
}

/// The sum of the proxy's `name` samples whose labels contain every one of `labels`.
fn sample_sum(p: &TestProxy, name: &str, labels: &[&str]) -> f64 {
    p.proxy
        .registry()
        .render()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (l, v) = rest.rsplit_once("} ")?;
            labels
                .iter()
                .all(|want| l.contains(want))
                .then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_redirects_are_answered_by_the_proxy() -> anyhow::Result<()> {
    // httproute-redirect-hostname, -port, -scheme, -status-code (and port-and-hostname,
    // scheme-and-port): Location is the request's URL with the filter's parts replaced.
    let (_cp, p) = mesh_site(REDIRECTS).await?;
    let cases = [
        (
            "echo.mesh",
            "/hostname-redirect",
            301,
            "http://example.org/hostname-redirect",
        ),
        (
            "echo.mesh:8080",
            "/hostname-redirect?a=1",
            301,
            "http://example.org:8080/hostname-redirect?a=1",
        ),
        (
            "echo.mesh",
            "/status-code-301",
            301,
            "http://example.org/status-code-301",
        ),
        (
            "echo.mesh",
            "/status-code-302",
            302,
            "http://example.org/status-code-302",
        ),
        ("echo.mesh", "/port", 301, "http://echo.mesh:8083/port"),
        (
            "echo.mesh:8080",
            "/port-80",
            301,
            "http://echo.mesh/port-80",
        ),
        (
            "echo.mesh",
            "/port-and-host",
            301,
            "http://example.org:8083/port-and-host",
        ),
        // A new scheme without a port: its well-known one, which Location leaves out.
        ("echo.mesh:8080", "/scheme", 301, "https://echo.mesh/scheme"),
        (
            "echo.mesh",
            "/scheme-and-port",
            301,
            "https://echo.mesh:8443/scheme-and-port",
        ),
    ];
    for (host, path, status, location) in cases {
        let a = ask_host(&p, host, "GET", path, &[]).await?;
        assert_eq!(
            (
                a.status,
                a.headers.get("location").and_then(|v| v.to_str().ok())
            ),
            (status, Some(location)),
            "{host}{path}"
        );
        assert_eq!(
            a.backend(),
            "(proxy)",
            "{host}{path}: answered by an upstream"
        );
    }
    // No upstream request was made: the backends' series saw nothing, the proxy's own
    // (backendless) series counted each redirect with its status, as a success.
    for dst in ["echo-v1", "echo-v2"] {
        let sent = sample_sum(&p, "request_total", &[&format!("dst_service=\"{dst}\"")]);
        assert_eq!(sent, 0.0, "{dst}");
    }
    let own = |status: &str| {
        sample_sum(
            &p,
            "response_total",
            &[
                "authority=\"\"",
                &format!("status_code=\"{status}\""),
                "classification=\"success\"",
            ],
        )
    };
    let count = |status| cases.iter().filter(|c| c.2 == status).count() as f64;
    assert_eq!((own("301"), own("302")), (count(301), count(302)));
    // The rest of the route still goes upstream.
    assert_eq!(ask(&p, "GET", "/", &[]).await?.backend(), "echo-v1");
    Ok(())
}

#[test]
fn header_modifiers_that_would_break_the_request_are_refused_with_the_field() {
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-headers, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: Host, value: elsewhere}]
            add: [{name: Content-Length, value: "5"}]
            remove: [Transfer-Encoding]
        - type: RequestHeaderModifier
        - type: RequestRedirect
      backendRefs: [{name: echo-v1}]
"#,
    );
    let problems: Vec<(String, &str)> = check_route(&r)
        .into_iter()
        .map(|p| (p.field, p.reason))
        .collect();
    let f = "spec.rules[0].filters";
    assert_eq!(
        problems,
        [
            (
                format!("{f}[0].requestHeaderModifier.set[0]"),
                "UnsupportedValue"
            ),
            (
                format!("{f}[0].requestHeaderModifier.add[0]"),
                "UnsupportedValue"
            ),
            (
                format!("{f}[0].requestHeaderModifier.remove[0]"),
                "UnsupportedValue"
            ),
            (format!("{f}[1].requestHeaderModifier"), "UnsupportedValue"),
            (format!("{f}[2].requestRedirect"), "UnsupportedValue"),
        ]
    );
    let w = with(mesh(), &[&r]);
    let ((accepted, reason), _) = verdict(&w, &r);
    assert_eq!((accepted, reason.as_str()), (false, "UnsupportedValue"));
}

#[test]
fn of_repeated_header_or_query_names_in_a_match_only_the_first_counts() {
    // HTTPHeaderMatch / HTTPQueryParamMatch: entries with an equivalent name after the first
    // are ignored (header names compare case-insensitively, query names exactly).
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: repeated, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
    - matches:
        - headers: [{name: version, value: one}, {name: Version, value: two}, {name: x, value: "1"}]
          queryParams: [{name: a, value: "1"}, {name: a, value: "2"}, {name: A, value: "3"}]
      backendRefs: [{name: echo-v2, port: 80}]
"#,
    );
    let t = translate(&with(mesh(), &[&r]), "mesh", &Options::default(), 1);
    let m = &at(&t, "echo:80").rules[0].matches[0];
    let headers: Vec<(&str, &str)> = m
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(headers, [("version", "one"), ("x", "1")]);
    let query: Vec<(&str, &str)> = m
        .query_params
        .iter()
        .map(|q| (q.name.as_str(), q.value.as_str()))
        .collect();
    assert_eq!(query, [("a", "1"), ("A", "3")]);
}

#[test]
fn a_route_hostname_never_takes_another_services_name() {
    // A route's `hostnames` add names for its own Service; a name that is another Service's
    // (here `zzz.other`, which sorts after `mesh/echo`) stays that Service's, whichever comes
    // first, so no route author can pull a Service's traffic to their own backends.
    let mut w = mesh();
    w.services
        .insert(ObjKey::new("other", "zzz"), http_service("10.96.9.9"));
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: grabby, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  hostnames: [zzz.other.svc.cluster.local, zzz.other, echo.example.com]
  rules:
    - backendRefs: [{name: echo-v2, port: 80}]
"#,
    );
    let t = valid_table(&with(w, &[&r]));
    for host in ["zzz.other.svc.cluster.local", "zzz.other"] {
        assert_eq!(split_at(&t, host), [("zzz".to_string(), 1)], "{host}");
    }
    assert_eq!(
        split_at(&t, "echo.example.com"),
        [("echo-v2".to_string(), 1)]
    );
    // ... and the route's status says which names it cannot have.
    let mut w = with(mesh(), &[&r]);
    w.services.insert(
        ObjKey::new("other", "zzz"),
        ServiceInfo {
            cluster_ips: vec!["10.96.9.9".parse().expect("ip")],
            ..ServiceInfo::default()
        },
    );
    let fields: Vec<String> = serin_mesh_control::translate::route_reference_problems(&w, &r)
        .into_iter()
        .map(|p| format!("{} {}", p.field, p.reason))
        .collect();
    assert_eq!(
        fields,
        [
            "spec.hostnames[0] UnsupportedValue",
            "spec.hostnames[1] UnsupportedValue"
        ]
    );
}

#[test]
fn a_route_on_a_whole_multi_port_service_keeps_each_port_on_its_own_endpoints() {
    // A parentRef without port attaches to every port; a rule without backendRefs sends to
    // the parent Service on the port the request came to, not always on the first one.
    let mut w = mesh();
    w.endpoints.insert(
        ObjKey::new("mesh", "echo"),
        [(
            "echo-slice".to_string(),
            EndpointSet::Slice {
                ports: vec![(Some("http".into()), 8080), (Some("admin".into()), 9090)],
                ready: vec!["10.1.9.1".parse().expect("ip")],
            },
        )]
        .into(),
    );
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: whole, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
    - matches: [{path: {value: /v2}}]
      backendRefs: [{name: echo-v2, port: 80}]
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-via, value: mesh}]}
"#,
    );
    let t = valid_table(&with(w, &[&r]));
    for (authority, endpoint) in [("echo:80", "10.1.9.1:8080"), ("echo:8080", "10.1.9.1:9090")] {
        let route = at(&t, authority);
        assert_eq!(route.rules.len(), 2, "{authority}");
        let parent = route
            .resolve_backend(&route.rules[1].backends[0].name)
            .expect("parent backend");
        assert_eq!(
            parent.endpoints,
            [endpoint.parse::<SocketAddr>().expect("addr")],
            "{authority}"
        );
    }
}

#[test]
fn a_mirror_fraction_below_one_percent_is_kept_exactly() {
    // httproute-request-mirror with fraction: 1/1000 is a tenth of a percent, not 0%.
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shadowed, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
    - matches: [{path: {value: /tenth}}]
      filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: echo-v2, port: 80}, fraction: {numerator: 1, denominator: 1000}}
      backendRefs: [{name: echo-v1, port: 80}]
    - filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: echo-v2, port: 80}, percent: 30}
      backendRefs: [{name: echo-v1, port: 80}]
"#,
    );
    let t = valid_table(&with(mesh(), &[&r]));
    let route = at(&t, "echo:80");
    let share = |i: usize| {
        let m = route.rules[i].mirror.as_ref().expect("mirror");
        m.share()
    };
    assert_eq!(share(0), (1, 1000));
    assert_eq!(share(1), (30, 100));
}

#[test]
fn request_and_backend_request_timeouts_become_the_shorter_route_timeout() {
    // httproute-timeout-request, -timeout-backend-request; 0s disables a timeout.
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: timed, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
    - matches: [{path: {value: /both}}]
      timeouts: {request: 10s, backendRequest: 500ms}
      backendRefs: [{name: echo-v1, port: 80}]
    - matches: [{path: {value: /request}}]
      timeouts: {request: 1m30s}
      backendRefs: [{name: echo-v1, port: 80}]
    - matches: [{path: {value: /off}}]
      timeouts: {request: 0s, backendRequest: 2s}
      backendRefs: [{name: echo-v1, port: 80}]
    - backendRefs: [{name: echo-v1, port: 80}]
"#,
    );
    assert!(check_route(&r).is_empty());
    let t = translate(&with(mesh(), &[&r]), "mesh", &Options::default(), 1);
    let timeouts: Vec<Option<std::time::Duration>> =
        at(&t, "echo:80").rules.iter().map(|r| r.timeout).collect();
    let ms = |n| Some(std::time::Duration::from_millis(n));
    // Longest prefix first: /request, /both, /off, then the catch-all.
    assert_eq!(timeouts, [ms(90_000), ms(500), ms(2000), None]);
}

#[test]
fn a_route_that_attaches_to_no_port_does_not_displace_a_traffic_split() {
    // A parentRef naming a port the Service lacks attaches to nothing (NoMatchingParent), so
    // the Service's TrafficSplit keeps applying.
    let r = to_v2_on(r#"{group: "", kind: Service, name: echo, port: 9999}"#);
    let split: serin_mesh_api::objects::TrafficSplit = serde_norway::from_str(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: echo, namespace: mesh}\nspec: {service: echo, backends: [{service: echo-v1, weight: 1}, {service: echo-v2, weight: 3}]}\n",
    )
    .expect("split");
    let mut w = with(mesh(), &[&r]);
    w.splits.insert(ObjKey::new("mesh", "echo"), split);
    assert!(serin_mesh_control::translate::split_conflicts(&w).is_empty());
    let t = translate(&w, "mesh", &Options::default(), 1);
    assert_eq!(
        split_at(&t, "echo:80"),
        [("echo-v1".to_string(), 1), ("echo-v2".to_string(), 3)]
    );
}

#[test]
fn a_consumer_route_steers_only_its_own_namespace_and_replaces_the_producers_there() {
    // mesh-consumer-route / mesh-frontend: the producer's route applies to every client; a
    // route in the client's namespace whose parent is the producer's Service applies to that
    // namespace's clients only, in place of the producer's.
    let mut w = mesh();
    w.services
        .insert(ObjKey::new("client", "local-v2"), http_service("10.96.2.1"));
    let producer = to_v2_on(r#"{group: "", kind: Service, name: echo, port: 80}"#);
    let consumer = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mine, namespace: client}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, namespace: mesh, port: 80}]
  rules:
    - backendRefs: [{name: local-v2, port: 80}]
"#,
    );
    let w = with(w, &[&producer, &consumer]);
    let for_client = translate(&w, "client", &Options::default(), 1);
    assert_eq!(
        split_at(&for_client, "echo.mesh:80"),
        [("local-v2.client".to_string(), 1)]
    );
    for ns in ["mesh", "elsewhere"] {
        let t = translate(&w, ns, &Options::default(), 1);
        assert_eq!(
            split_at(&t, "echo.mesh:80"),
            [("echo-v2".to_string(), 1)],
            "{ns}"
        );
    }
    assert_eq!(
        verdict(&w, &consumer),
        ((true, "Accepted".into()), (true, "ResolvedRefs".into()))
    );
}

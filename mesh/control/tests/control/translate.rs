//! Translation of route objects into proxy route tables, and the state's last-valid semantics.

use std::collections::BTreeMap;
use std::time::Instant;

use serin_mesh_api::objects::{HttpRoute, TrafficSplit};
use serin_mesh_api::table::{Authority, PathMatchType, Route, RouteTable};
use serin_mesh_control::hub::Hub;
use serin_mesh_control::state::{RouteKind, State};
use serin_mesh_control::translate::{Options, check_route, translate};
use serin_mesh_control::world::{EndpointSet, ObjKey, ServiceInfo, ServicePort, World};

fn svc(ip: &str, port: u16) -> ServiceInfo {
    ServiceInfo {
        cluster_ips: vec![ip.parse().unwrap()],
        ports: vec![ServicePort {
            name: Some("http".into()),
            port,
        }],
        ..ServiceInfo::default()
    }
}

fn slice(ips: &[&str], port: u16) -> EndpointSet {
    EndpointSet::Slice {
        ports: vec![(Some("http".into()), port)],
        ready: ips.iter().map(|i| i.parse().unwrap()).collect(),
    }
}

/// podinfo (apex), podinfo-primary (2 ready pods), podinfo-canary (no ready pod).
fn world() -> World {
    let mut w = World::default();
    for (name, ip) in [
        ("podinfo", "10.96.0.1"),
        ("podinfo-primary", "10.96.0.2"),
        ("podinfo-canary", "10.96.0.3"),
    ] {
        w.services.insert(ObjKey::new("test", name), svc(ip, 9898));
    }
    w.endpoints.insert(
        ObjKey::new("test", "podinfo-primary"),
        BTreeMap::from([(
            "podinfo-primary-abc".to_string(),
            slice(&["10.1.0.1", "10.1.0.2"], 8080),
        )]),
    );
    w.endpoints.insert(
        ObjKey::new("test", "podinfo-canary"),
        BTreeMap::from([("podinfo-canary-abc".to_string(), slice(&[], 8080))]),
    );
    w
}

fn route(yaml: &str) -> HttpRoute {
    serde_norway::from_str(yaml).expect("test route")
}

fn podinfo_route(primary: i32, canary: i32) -> HttpRoute {
    route(&format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: podinfo, namespace: test}}
spec:
  parentRefs: [{{group: "", kind: Service, name: podinfo, port: 9898}}]
  rules:
    - matches: [{{headers: [{{name: x-canary, value: insider}}]}}]
      backendRefs: [{{name: podinfo-canary, port: 9898}}]
    - backendRefs:
        - {{name: podinfo-primary, port: 9898, weight: {primary}}}
        - {{name: podinfo-canary, port: 9898, weight: {canary}}}
      filters:
        - type: RequestMirror
          requestMirror: {{backendRef: {{name: podinfo-canary, port: 9898}}, percent: 20}}
      timeouts: {{request: 3s}}
"#
    ))
}

fn find<'a>(t: &'a RouteTable, authority: &str) -> &'a Route {
    let a: Authority = authority.parse().unwrap();
    t.routes
        .iter()
        .find(|r| r.authority == a)
        .unwrap_or_else(|| panic!("no route for {authority}: {:?}", authorities(t)))
}

fn authorities(t: &RouteTable) -> Vec<String> {
    t.routes.iter().map(|r| r.authority.to_string()).collect()
}

#[test]
fn an_httproute_on_a_service_resolves_every_authority_to_weighted_ready_endpoints() {
    let mut w = world();
    w.routes
        .insert(ObjKey::new("test", "podinfo"), podinfo_route(90, 10));
    let t = translate(&w, "test", &Options::default(), 7);
    assert_eq!(t.version, 7);
    t.validate().expect("the proxy accepts the table");
    for a in [
        "podinfo:9898",
        "podinfo.test:9898",
        "podinfo.test.svc:9898",
        "podinfo.test.svc.cluster.local:9898",
        "10.96.0.1:9898",
    ] {
        let r = find(&t, a);
        assert_eq!(r.rules.len(), 2, "{a}");
        // Header match first (more specific), then the weighted default.
        assert_eq!(r.rules[0].matches[0].headers[0].name, "x-canary");
        let weights: Vec<(&str, u32)> = r.rules[1]
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.weight))
            .collect();
        assert_eq!(weights, [("podinfo-primary", 90), ("podinfo-canary", 10)]);
        assert_eq!(r.rules[1].mirror.as_ref().unwrap().percent, 20);
        assert_eq!(r.rules[1].timeout, Some(std::time::Duration::from_secs(3)));
        let primary = r.resolve_backend("podinfo-primary").unwrap();
        assert_eq!(
            primary.endpoints,
            [
                "10.1.0.1:8080".parse().unwrap(),
                "10.1.0.2:8080".parse().unwrap()
            ]
        );
        // No ready canary pod: the backend exists with no endpoints (the proxy answers 503).
        assert!(
            r.resolve_backend("podinfo-canary")
                .unwrap()
                .endpoints
                .is_empty()
        );
    }
    // Short names only resolve inside the namespace, as in cluster DNS.
    let other = translate(&w, "other", &Options::default(), 7);
    assert!(!authorities(&other).iter().any(|a| a == "podinfo:9898"));
    assert!(authorities(&other).iter().any(|a| a == "podinfo.test:9898"));
}

#[test]
fn a_service_without_routes_sends_everything_to_itself() {
    let t = translate(&world(), "test", &Options::default(), 1);
    let r = find(&t, "podinfo-primary.test.svc.cluster.local");
    assert_eq!(r.rules.len(), 1);
    assert_eq!(r.rules[0].backends[0].name, "podinfo-primary");
    assert_eq!(
        r.resolve_backend("podinfo-primary")
            .unwrap()
            .endpoints
            .len(),
        2
    );
}

#[test]
fn rules_are_ordered_by_gateway_api_precedence_across_routes() {
    let mut w = world();
    w.routes.insert(
        ObjKey::new("test", "a"),
        route(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: test}
spec:
  parentRefs: [{group: "", kind: Service, name: podinfo}]
  rules:
    - backendRefs: [{name: podinfo-primary, port: 9898}]
    - matches: [{path: {type: PathPrefix, value: /api}}, {path: {type: Exact, value: /api/v2/x}}]
      backendRefs: [{name: podinfo-canary, port: 9898}]
"#,
        ),
    );
    w.routes.insert(
        ObjKey::new("test", "b"),
        route(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: test}
spec:
  parentRefs: [{group: "", kind: Service, name: podinfo}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /api/v2}, method: POST}]
      backendRefs: [{name: podinfo-canary, port: 9898}]
"#,
        ),
    );
    let t = translate(&w, "test", &Options::default(), 1);
    let r = find(&t, "podinfo");
    let order: Vec<(Option<PathMatchType>, Option<String>)> = r
        .rules
        .iter()
        .map(|rule| {
            let m = rule.matches.first();
            (
                m.and_then(|m| m.path.as_ref()).map(|p| p.kind),
                m.and_then(|m| m.path.as_ref()).map(|p| p.value.clone()),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (Some(PathMatchType::Exact), Some("/api/v2/x".into())),
            (Some(PathMatchType::PathPrefix), Some("/api/v2".into())),
            (Some(PathMatchType::PathPrefix), Some("/api".into())),
            (None, None),
        ]
    );
}

#[test]
fn a_traffic_split_applies_unless_an_httproute_owns_the_service() {
    let mut w = world();
    let split: TrafficSplit = serde_norway::from_str(
        r#"
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: podinfo, namespace: test}
spec:
  service: podinfo
  backends: [{service: podinfo-primary, weight: 80}, {service: podinfo-canary, weight: 20}]
"#,
    )
    .unwrap();
    w.splits.insert(ObjKey::new("test", "podinfo"), split);
    let t = translate(&w, "test", &Options::default(), 1);
    let r = find(&t, "podinfo");
    let weights: Vec<u32> = r.rules[0].backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [80, 20]);

    w.routes
        .insert(ObjKey::new("test", "podinfo"), podinfo_route(100, 0));
    let conflicts = serin_mesh_control::translate::split_conflicts(&w);
    assert_eq!(
        conflicts[&ObjKey::new("test", "podinfo")].reason,
        "Conflicted"
    );
    let t = translate(&w, "test", &Options::default(), 2);
    assert_eq!(
        find(&t, "podinfo:9898").rules.len(),
        2,
        "the HTTPRoute wins"
    );
}

#[test]
fn response_header_modifiers_reach_the_table_with_set_add_and_remove() {
    let mut w = world();
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: podinfo, namespace: test}
spec:
  parentRefs: [{group: "", kind: Service, name: podinfo}]
  rules:
    - backendRefs: [{name: podinfo-primary, port: 9898}]
      filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: set-cookie, value: "track=primary"}]
            add: [{name: x-served-by, value: serin}]
            remove: [server, x-powered-by]
"#,
    );
    assert!(check_route(&r).is_empty(), "{:?}", check_route(&r));
    w.routes.insert(ObjKey::new("test", "podinfo"), r);
    let t = translate(&w, "test", &Options::default(), 1);
    t.validate().expect("the proxy accepts the table");
    let h = &find(&t, "podinfo.test").rules[0].response_headers;
    let pairs = |l: &[serin_mesh_api::table::HeaderValue]| -> Vec<(String, String)> {
        l.iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect()
    };
    assert_eq!(
        pairs(&h.set),
        [("set-cookie".into(), "track=primary".into())]
    );
    assert_eq!(pairs(&h.add), [("x-served-by".into(), "serin".into())]);
    assert_eq!(h.remove, ["server", "x-powered-by"]);

    let bad = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: test}
spec:
  parentRefs: [{group: "", kind: Service, name: podinfo}]
  rules:
    - backendRefs: [{name: podinfo-primary, port: 9898}]
      filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: Content-Length, value: "3"}]
            add: [{name: "bad name", value: x}]
            remove: ["x:y", transfer-encoding]
        - type: ResponseHeaderModifier
"#,
    );
    let fields: Vec<String> = check_route(&bad).into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "spec.rules[0].filters[0].responseHeaderModifier.set[0]",
            "spec.rules[0].filters[0].responseHeaderModifier.add[0]",
            "spec.rules[0].filters[0].responseHeaderModifier.remove[0]",
            "spec.rules[0].filters[0].responseHeaderModifier.remove[1]",
            "spec.rules[0].filters[1].responseHeaderModifier",
        ]
    );
}

#[test]
fn cross_namespace_backends_need_a_reference_grant_from_the_routes_namespace() {
    use serin_mesh_api::objects::{ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo};
    use serin_mesh_control::translate::route_verdicts;
    let mut w = world();
    // A producer route in `edge` for its own Service, sending to podinfo-primary in `test`.
    w.services
        .insert(ObjKey::new("edge", "front"), svc("10.96.1.1", 80));
    let r = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: front, namespace: edge}
spec:
  parentRefs: [{group: "", kind: Service, name: front}]
  rules:
    - backendRefs: [{name: podinfo-primary, namespace: test, port: 9898}]
"#,
    );
    w.routes.insert(ObjKey::new("edge", "front"), r.clone());
    // Endpoints, and whether the backend is marked invalid (the proxy answers 500 for it).
    let primary_endpoints = |w: &World| {
        let t = translate(w, "edge", &Options::default(), 1);
        let route = find(&t, "front");
        let b = route.resolve_backend("podinfo-primary.test");
        assert_eq!(
            b.and_then(|b| b.invalid),
            (b.map(|b| b.endpoints.len()) == Some(0)).then_some("RefNotPermitted"),
        );
        b.map(|b| b.endpoints.len())
    };
    let resolved = |w: &World| {
        let v = route_verdicts(w, &r, &[]);
        (v[0].resolved_refs.0, v[0].resolved_refs.1)
    };
    assert_eq!(primary_endpoints(&w), Some(0), "no grant: no endpoints");
    assert_eq!(resolved(&w), (false, "RefNotPermitted"));

    let grant = |from_ns: &str, name: Option<&str>| ReferenceGrantSpec {
        from: vec![ReferenceGrantFrom {
            group: "gateway.networking.k8s.io".into(),
            kind: "HTTPRoute".into(),
            namespace: from_ns.into(),
        }],
        to: vec![ReferenceGrantTo {
            group: String::new(),
            kind: "Service".into(),
            name: name.map(Into::into),
        }],
    };
    // Grants that do not fit: from another namespace, for another Service, or in the wrong
    // namespace (a grant speaks only for objects of its own namespace).
    w.grants
        .insert(ObjKey::new("test", "other-ns"), grant("shop", None));
    w.grants.insert(
        ObjKey::new("test", "other-svc"),
        grant("edge", Some("podinfo-canary")),
    );
    w.grants
        .insert(ObjKey::new("edge", "wrong-place"), grant("edge", None));
    assert_eq!(primary_endpoints(&w), Some(0));
    assert_eq!(resolved(&w), (false, "RefNotPermitted"));

    w.grants.insert(
        ObjKey::new("test", "front"),
        grant("edge", Some("podinfo-primary")),
    );
    assert_eq!(
        primary_endpoints(&w),
        Some(2),
        "granted: its ready endpoints"
    );
    assert_eq!(resolved(&w), (true, "ResolvedRefs"));
}

#[test]
fn a_backend_ref_to_a_missing_service_is_marked_invalid_and_one_without_ready_pods_is_not() {
    let mut w = world();
    w.services.remove(&ObjKey::new("test", "podinfo-canary"));
    w.endpoints.remove(&ObjKey::new("test", "podinfo-canary"));
    w.routes
        .insert(ObjKey::new("test", "podinfo"), podinfo_route(90, 10));
    let t = translate(&w, "test", &Options::default(), 1);
    t.validate().expect("the proxy accepts the table");
    let r = find(&t, "podinfo:9898");
    let canary = r.resolve_backend("podinfo-canary").expect("defined");
    // Gateway API: requests for an invalid backendRef get 500 (the proxy's answer for
    // `invalid`); the valid primary keeps its endpoints.
    assert_eq!(canary.invalid, Some("BackendNotFound"));
    assert!(canary.endpoints.is_empty());
    assert_eq!(r.resolve_backend("podinfo-primary").unwrap().invalid, None);

    // The Service appears with no ready pod: valid, no endpoints (503 from the proxy).
    let w = world();
    let mut w2 = w.clone();
    w2.routes
        .insert(ObjKey::new("test", "podinfo"), podinfo_route(90, 10));
    let t = translate(&w2, "test", &Options::default(), 2);
    let canary = find(&t, "podinfo:9898")
        .resolve_backend("podinfo-canary")
        .expect("defined");
    assert_eq!(canary.invalid, None);
    assert!(canary.endpoints.is_empty());

    // SMI says nothing of invalid backends: a TrafficSplit's missing backend is not marked.
    let mut w3 = w;
    w3.services.remove(&ObjKey::new("test", "podinfo-canary"));
    let split: TrafficSplit = serde_norway::from_str(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: podinfo, namespace: test}\nspec: {service: podinfo, backends: [{service: podinfo-primary, weight: 80}, {service: podinfo-canary, weight: 20}]}\n",
    )
    .unwrap();
    w3.splits.insert(ObjKey::new("test", "podinfo"), split);
    let t = translate(&w3, "test", &Options::default(), 3);
    let canary = find(&t, "podinfo")
        .resolve_backend("podinfo-canary")
        .expect("defined");
    assert_eq!(canary.invalid, None);
}

#[test]
fn bad_routes_are_reported_with_the_field_and_reason() {
    let bad = route(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: test}
spec:
  parentRefs: [{group: "", kind: Service, name: podinfo}]
  rules:
    - matches: [{headers: [{type: RegularExpression, name: x, value: "(unclosed"}]}]
      filters: [{type: URLRewrite}]
      backendRefs: [{name: podinfo-primary, weight: 0}, {kind: Deployment, name: x}]
"#,
    );
    let problems = check_route(&bad);
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(
        fields.contains(&"spec.rules[0].matches[0].headers[0].value"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.rules[0].filters[0].type"),
        "{fields:?}"
    );
    // A backend of another kind is no fault of the route itself: it is reported in
    // ResolvedRefs (InvalidKind) and answered 500 (see gateway.rs).
    assert!(
        !fields.contains(&"spec.rules[0].backendRefs[1].kind"),
        "{fields:?}"
    );
    let no_parent = route(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: g}\nspec: {parentRefs: [{name: gw}]}\n",
    );
    assert_eq!(check_route(&no_parent)[0].reason, "NoMatchingParent");
}

#[test]
fn an_object_turning_invalid_keeps_its_last_valid_version_in_force() {
    let mut s = State::default();
    let w = world();
    s.set_services(w.services.clone());
    s.set_endpoints(w.endpoints.clone());
    s.set_routes([podinfo_route(90, 10)]);
    assert_eq!(s.commit(), Some(1));
    // Break it: a negative weight.
    s.set_routes([podinfo_route(-5, 10)]);
    let reports = s.take_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(s.commit(), None, "nothing changed for the proxies");
    let t = translate(s.world(), "test", &Options::default(), s.version());
    let r = find(&t, "podinfo:9898");
    assert_eq!(
        r.rules[1].backends[0].weight, 90,
        "last valid version still routes"
    );
    let info = &s.route_infos()[0];
    assert!(!info.valid);
    assert_eq!(
        info.problems[0].field,
        "spec.rules[1].backendRefs[0].weight"
    );
    // Fixed: applied, new version on the route.
    s.set_routes([podinfo_route(50, 50)]);
    assert_eq!(s.commit(), Some(2));
    assert_eq!(s.route_infos()[0].version, 2);
    assert!(s.route_infos()[0].valid);
    assert!(
        s.problems(RouteKind::HttpRoute, &ObjKey::new("test", "podinfo"))
            .is_empty()
    );
}

#[test]
fn the_hub_counts_invalid_objects_in_its_metrics() {
    let hub = Hub::new(Options::default());
    hub.update(Instant::now(), |s| {
        s.set_services(world().services);
        s.set_routes([podinfo_route(-1, 0)]);
    });
    let text = hub.metrics.encode();
    assert!(
        text.contains(
            r#"serin_control_errors_total{kind="HTTPRoute",reason="UnsupportedValue"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("serin_control_invalid_route_objects 1"),
        "{text}"
    );
}

/// A Service as the API server stores it: `clusterIP` and the dual-stack `clusterIPs`.
fn k8s_service(ips: &[&str], port: i32) -> ServiceInfo {
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "clusterIP": ips[0],
            "clusterIPs": ips,
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
        }
    }))
    .expect("a Service");
    ServiceInfo::from_k8s(&svc)
}

#[test]
fn a_dual_stack_or_ipv6_service_is_routed_by_each_of_its_cluster_ips() {
    // Transparent clients know only the address they dialled: the proxy looks a captured
    // connection up by its original destination as `ip:port` (`[v6]:port` for IPv6).
    for ips in [
        &["10.96.0.1", "fd00:10:96::1"][..],
        &["fd00:10:96::1", "10.96.0.1"][..],
        &["fd00:10:96::1"][..],
    ] {
        let mut w = world();
        w.services
            .insert(ObjKey::new("test", "podinfo"), k8s_service(ips, 9898));
        w.routes
            .insert(ObjKey::new("test", "podinfo"), podinfo_route(90, 10));
        let t = translate(&w, "test", &Options::default(), 1);
        t.validate().expect("the proxy accepts the table");
        for ip in ips {
            let dst: std::net::SocketAddr = (ip.parse::<std::net::IpAddr>().unwrap(), 9898).into();
            let (by_ip, by_name) = (find(&t, &dst.to_string()), find(&t, "podinfo.test:9898"));
            assert_eq!(by_ip.rules, by_name.rules, "{dst} in {ips:?}");
            assert_eq!(by_ip.backends, by_name.backends, "{dst} in {ips:?}");
        }
    }
}

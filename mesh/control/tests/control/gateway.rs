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
            ServiceInfo {
                cluster_ips: vec![format!("10.96.1.{}", i + 2).parse().expect("ip")],
                ports: vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                }],
                ..ServiceInfo::default()
            },
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
    let t = translate(&with(mesh(), &[&r]), "mesh", &Options::default(), 1);
    t.validate().expect("the proxy accepts the table");
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
    let t = translate(&w, "mesh", &Options::default(), 1);
    t.validate().expect("the proxy accepts the table");
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
    let t = translate(&w, "mesh", &Options::default(), 1);
    t.validate().expect("the proxy accepts the table");
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
    let t = translate(&w, "mesh", &Options::default(), 1);
    t.validate().expect("the proxy accepts the table");
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

//! Pure translation: [`World`] (Services, endpoints, HTTPRoutes, TrafficSplits) → the
//! [`RouteTable`] a proxy in a given namespace enforces, plus what is wrong with each object.
//!
//! Semantics (Gateway API GAMMA mesh mode, where it speaks):
//! - Every Service gets a route for each of its authorities: `name` (only for clients in the same
//!   namespace, as DNS search paths do), `name.ns`, `name.ns.svc`, `name.ns.svc.<cluster domain>`
//!   and each cluster IP; without an HTTPRoute or TrafficSplit it sends everything to itself.
//! - HTTPRoutes whose `parentRefs` name a Service replace that default. Several routes attached to
//!   one Service are merged; rules are ordered by Gateway API precedence (exact path, longest
//!   prefix, method, most header matches, most query matches, then oldest route, then name, then
//!   rule order). A route in another namespace than its Service (a consumer route) applies only to
//!   clients in the route's namespace and, for them, takes precedence over producer routes.
//! - A TrafficSplit applies to its apex Service unless an HTTPRoute is attached to that Service
//!   (the split is then reported as conflicting); of two splits for one apex the older wins.
//! - A backend whose Service is missing, or has no ready endpoints, gets no endpoints: the proxy
//!   answers 503 for its share of requests.
//! - An object that is invalid on its own (see [`check_route`], [`check_split`]) never reaches
//!   this module: the state keeps its last valid version (see [`crate::state`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serin_mesh_api::table::{
    Authority, Backend, BackendDef, HeaderValue, Match, Mirror, PathMatch, PathMatchType,
    ResponseHeaders, Route, RouteTable, Rule, ValueMatch, ValueMatchType, framing_header_problem,
    parse_duration,
};

use crate::k8s::types::{
    HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRule, ParentReference, TrafficSplit,
};
use crate::world::{ObjKey, ServiceInfo, ServicePort, World};

/// Translation options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// Something wrong with an object, as reported in logs, metrics and HTTPRoute status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Path of the offending field, e.g. `spec.rules[0].filters[1].type`.
    pub field: String,
    /// Gateway API condition reason (`UnsupportedValue`, `BackendNotFound`, ...), also the
    /// low-cardinality `reason` label of the error metric.
    pub reason: &'static str,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl Problem {
    fn new(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.reason)
    }
}

// ---------------------------------------------------------------------------------------------
// Object-local checks

/// Checks what makes an HTTPRoute unusable on its own (independent of other objects). An empty
/// list means it can be applied.
pub fn check_route(route: &HttpRoute) -> Vec<Problem> {
    let mut p = Vec::new();
    let spec = &route.spec;
    if route.metadata.name.as_deref().unwrap_or("").is_empty() {
        p.push(Problem::new(
            "metadata.name",
            "Invalid",
            "must not be empty",
        ));
    }
    if !spec.parent_refs.iter().any(ParentReference::is_service) {
        p.push(Problem::new(
            "spec.parentRefs",
            "NoMatchingParent",
            "no parentRef names a Service (group \"\", kind Service); Serin only serves mesh (GAMMA) routes",
        ));
    }
    for (i, h) in spec.hostnames.iter().enumerate() {
        if h.contains('*') || h.parse::<Authority>().is_err() {
            p.push(Problem::new(
                format!("spec.hostnames[{i}]"),
                "UnsupportedValue",
                format!("{h:?} is not a plain host name (wildcards are not supported)"),
            ));
        }
    }
    for (ri, rule) in spec.rules.iter().enumerate() {
        check_rule(&mut p, &format!("spec.rules[{ri}]"), rule);
    }
    p
}

fn check_rule(p: &mut Vec<Problem>, rf: &str, rule: &HttpRouteRule) {
    for (mi, m) in rule.matches.iter().enumerate() {
        let mf = format!("{rf}.matches[{mi}]");
        if let Some(path) = &m.path {
            let value = path.value.as_deref().unwrap_or("/");
            match path.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" | "PathPrefix" if !value.starts_with('/') => p.push(Problem::new(
                    format!("{mf}.path.value"),
                    "UnsupportedValue",
                    "must start with `/`",
                )),
                "Exact" | "PathPrefix" => {}
                "RegularExpression" => regex_check(p, &format!("{mf}.path.value"), value),
                other => p.push(Problem::new(
                    format!("{mf}.path.type"),
                    "UnsupportedValue",
                    format!("{other:?}; accepted: Exact, PathPrefix, RegularExpression"),
                )),
            }
        }
        if let Some(method) = &m.method
            && (method.is_empty() || http::Method::from_bytes(method.as_bytes()).is_err())
        {
            p.push(Problem::new(
                format!("{mf}.method"),
                "UnsupportedValue",
                format!("{method:?} is not an HTTP method"),
            ));
        }
        for (hi, h) in m.headers.iter().enumerate() {
            let hf = format!("{mf}.headers[{hi}]");
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                p.push(Problem::new(
                    format!("{hf}.name"),
                    "UnsupportedValue",
                    format!("{:?} is not a valid header name", h.name),
                ));
            }
            value_type_check(p, &hf, h.type_.as_deref(), &h.value);
        }
        for (qi, q) in m.query_params.iter().enumerate() {
            let qf = format!("{mf}.queryParams[{qi}]");
            if q.name.is_empty() {
                p.push(Problem::new(
                    format!("{qf}.name"),
                    "UnsupportedValue",
                    "must not be empty",
                ));
            }
            value_type_check(p, &qf, q.type_.as_deref(), &q.value);
        }
    }
    let mut mirrors = 0;
    for (fi, f) in rule.filters.iter().enumerate() {
        let ff = format!("{rf}.filters[{fi}]");
        match f.type_.as_str() {
            "RequestMirror" => {
                mirrors += 1;
                if mirrors > 1 {
                    p.push(Problem::new(
                        format!("{ff}.type"),
                        "UnsupportedValue",
                        "Serin mirrors to one backend per rule; keep one RequestMirror filter",
                    ));
                }
                let Some(m) = &f.request_mirror else {
                    p.push(Problem::new(
                        format!("{ff}.requestMirror"),
                        "UnsupportedValue",
                        "type RequestMirror needs requestMirror.backendRef",
                    ));
                    continue;
                };
                kind_check(
                    p,
                    &format!("{ff}.requestMirror.backendRef"),
                    m.backend_ref.group.as_deref(),
                    m.backend_ref.kind.as_deref(),
                );
                if let Some(pc) = m.percent
                    && !(0..=100).contains(&pc)
                {
                    p.push(Problem::new(
                        format!("{ff}.requestMirror.percent"),
                        "UnsupportedValue",
                        format!("{pc} is out of range; accepted: 0 to 100"),
                    ));
                }
                if let Some(fr) = &m.fraction {
                    let den = fr.denominator.unwrap_or(100);
                    if den <= 0 || fr.numerator < 0 || fr.numerator > den {
                        p.push(Problem::new(
                            format!("{ff}.requestMirror.fraction"),
                            "UnsupportedValue",
                            "needs 0 <= numerator <= denominator and denominator > 0",
                        ));
                    }
                    if m.percent.is_some() {
                        p.push(Problem::new(
                            format!("{ff}.requestMirror"),
                            "UnsupportedValue",
                            "set percent or fraction, not both",
                        ));
                    }
                }
            }
            "ResponseHeaderModifier" => {
                let Some(h) = &f.response_header_modifier else {
                    p.push(Problem::new(
                        format!("{ff}.responseHeaderModifier"),
                        "UnsupportedValue",
                        "type ResponseHeaderModifier needs responseHeaderModifier (set, add or remove)",
                    ));
                    continue;
                };
                for (list, headers) in [("set", &h.set), ("add", &h.add)] {
                    for (si, s) in headers.iter().enumerate() {
                        let why = if http::HeaderName::from_bytes(s.name.as_bytes()).is_err()
                            || http::HeaderValue::from_str(&s.value).is_err()
                        {
                            Some("not a valid header name and value".to_string())
                        } else {
                            framing_header_problem(&s.name)
                        };
                        if let Some(why) = why {
                            p.push(Problem::new(
                                format!("{ff}.responseHeaderModifier.{list}[{si}]"),
                                "UnsupportedValue",
                                why,
                            ));
                        }
                    }
                }
                for (si, name) in h.remove.iter().enumerate() {
                    let why = if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        Some("not a valid header name".to_string())
                    } else {
                        framing_header_problem(name)
                    };
                    if let Some(why) = why {
                        p.push(Problem::new(
                            format!("{ff}.responseHeaderModifier.remove[{si}]"),
                            "UnsupportedValue",
                            why,
                        ));
                    }
                }
            }
            other => p.push(Problem::new(
                format!("{ff}.type"),
                "UnsupportedValue",
                format!("filter {other:?} is not supported; accepted: RequestMirror, ResponseHeaderModifier"),
            )),
        }
    }
    let mut any_weight = rule.backend_refs.is_empty();
    for (bi, b) in rule.backend_refs.iter().enumerate() {
        let bf = format!("{rf}.backendRefs[{bi}]");
        kind_check(p, &bf, b.group.as_deref(), b.kind.as_deref());
        match b.weight {
            Some(w) if !(0..=1_000_000).contains(&w) => {
                // Reported here; not also as "every weight is 0".
                any_weight = true;
                p.push(Problem::new(
                    format!("{bf}.weight"),
                    "UnsupportedValue",
                    format!("{w} is out of range; accepted: 0 to 1000000"),
                ));
            }
            Some(0) => {}
            _ => any_weight = true,
        }
        if !b.filters.is_empty() {
            p.push(Problem::new(
                format!("{bf}.filters"),
                "UnsupportedValue",
                "per-backend filters are not supported; put filters on the rule",
            ));
        }
    }
    if !any_weight {
        p.push(Problem::new(
            format!("{rf}.backendRefs"),
            "UnsupportedValue",
            "every backendRef has weight 0; give at least one a weight above 0",
        ));
    }
    if let Some(t) = &rule.timeouts {
        for (name, v) in [
            ("request", &t.request),
            ("backendRequest", &t.backend_request),
        ] {
            if let Some(v) = v
                && parse_duration(v).is_err()
            {
                p.push(Problem::new(
                    format!("{rf}.timeouts.{name}"),
                    "UnsupportedValue",
                    format!("{v:?} is not a duration; accepted e.g. 10s, 500ms, 1m30s"),
                ));
            }
        }
    }
}

fn kind_check(p: &mut Vec<Problem>, field: &str, group: Option<&str>, kind: Option<&str>) {
    if !group.unwrap_or("").is_empty() || kind.unwrap_or("Service") != "Service" {
        p.push(Problem::new(
            format!("{field}.kind"),
            "InvalidKind",
            format!(
                "{}/{} is not supported; backends must be core Services",
                group.unwrap_or(""),
                kind.unwrap_or("Service")
            ),
        ));
    }
}

fn value_type_check(p: &mut Vec<Problem>, field: &str, kind: Option<&str>, value: &str) {
    match kind.unwrap_or("Exact") {
        "Exact" => {}
        "RegularExpression" => regex_check(p, &format!("{field}.value"), value),
        other => p.push(Problem::new(
            format!("{field}.type"),
            "UnsupportedValue",
            format!("{other:?}; accepted: Exact, RegularExpression"),
        )),
    }
}

fn regex_check(p: &mut Vec<Problem>, field: &str, pattern: &str) {
    // Validate with the same table validator the proxy runs, so the messages agree.
    let table = RouteTable {
        version: 0,
        routes: vec![Route {
            authority: Authority {
                host: "check".into(),
                port: None,
            },
            backends: vec![],
            rules: vec![Rule {
                matches: vec![Match {
                    headers: vec![ValueMatch {
                        kind: ValueMatchType::RegularExpression,
                        name: "x".into(),
                        value: pattern.into(),
                    }],
                    ..Match::default()
                }],
                backends: vec![Backend {
                    name: "b".into(),
                    weight: 1,
                    labels: BTreeMap::new(),
                    endpoints: Some(vec![]),
                }],
                ..Rule::default()
            }],
        }],
    };
    if let Err(e) = table.validate() {
        let msg = e.0.first().map(|e| e.message.clone()).unwrap_or_default();
        p.push(Problem::new(field, "UnsupportedValue", msg));
    }
}

/// Checks what makes a TrafficSplit unusable on its own.
pub fn check_split(split: &TrafficSplit) -> Vec<Problem> {
    let mut p = Vec::new();
    if split.spec.service.is_empty() {
        p.push(Problem::new(
            "spec.service",
            "Invalid",
            "must name the apex Service",
        ));
    }
    if split.spec.backends.is_empty() {
        p.push(Problem::new(
            "spec.backends",
            "Invalid",
            "must list at least one backend",
        ));
    }
    let mut total = 0u64;
    let mut seen = BTreeSet::new();
    for (i, b) in split.spec.backends.iter().enumerate() {
        if b.service.is_empty() {
            p.push(Problem::new(
                format!("spec.backends[{i}].service"),
                "Invalid",
                "must not be empty",
            ));
        }
        if !seen.insert(&b.service) {
            p.push(Problem::new(
                format!("spec.backends[{i}].service"),
                "Invalid",
                format!("{:?} is listed twice", b.service),
            ));
        }
        match b.weight.value() {
            Some(w) if w <= u64::from(u32::MAX) => total += w,
            _ => p.push(Problem::new(
                format!("spec.backends[{i}].weight"),
                "Invalid",
                format!(
                    "{:?} is not a weight; accepted: an integer from 0 to 4294967295 (or a quantity like \"500m\")",
                    b.weight
                ),
            )),
        }
    }
    if !split.spec.backends.is_empty() && total == 0 && p.is_empty() {
        p.push(Problem::new(
            "spec.backends",
            "Invalid",
            "every weight is 0; give at least one backend a weight above 0",
        ));
    }
    if !split.spec.matches.is_empty() {
        // Not fatal: the split still applies, to every request (reported so nobody is surprised).
        p.push(Problem::new(
            "spec.matches",
            "Ignored",
            "HTTPRouteGroup matches are not supported; the split applies to every request",
        ));
    }
    p
}

/// True when the problems make the object unusable (anything but a notice).
pub fn is_fatal(problems: &[Problem]) -> bool {
    problems.iter().any(|p| p.reason != "Ignored")
}

// ---------------------------------------------------------------------------------------------
// Status

/// Gateway API verdict for one parent of an HTTPRoute.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentVerdict {
    /// The parent reference as written.
    #[serde(skip)]
    pub parent_ref: ParentReference,
    /// `Accepted` condition: status, reason, message.
    pub accepted: (bool, &'static str, String),
    /// `ResolvedRefs` condition: status, reason, message.
    pub resolved_refs: (bool, &'static str, String),
}

/// The conditions Serin reports for each Service parent of HTTPRoute `key`. `problems` are the
/// route's object-local problems (from [`check_route`]), which make it not accepted.
pub fn route_verdicts(
    world: &World,
    route: &HttpRoute,
    problems: &[Problem],
) -> Vec<ParentVerdict> {
    let key = ObjKey::of(route);
    let mut unresolved = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let refs = rule
            .backend_refs
            .iter()
            .enumerate()
            .map(|(bi, b)| {
                (
                    format!("spec.rules[{ri}].backendRefs[{bi}]"),
                    b.namespace.as_deref(),
                    &b.name,
                )
            })
            .chain(rule.filters.iter().enumerate().filter_map(|(fi, f)| {
                let m = f.request_mirror.as_ref()?;
                Some((
                    format!("spec.rules[{ri}].filters[{fi}].requestMirror.backendRef"),
                    m.backend_ref.namespace.as_deref(),
                    &m.backend_ref.name,
                ))
            }));
        for (field, ns, name) in refs {
            let bk = ObjKey::new(ns.unwrap_or(&key.namespace), name.clone());
            // Not permitted comes first: without a grant the route must not learn whether a
            // Service exists in a namespace it may not reach.
            if !world.route_may_reach(&key.namespace, &bk) {
                unresolved.push((
                    "RefNotPermitted",
                    format!(
                        "{field}: Service {bk} is in another namespace and no ReferenceGrant in {} lets HTTPRoutes from {} refer to it",
                        bk.namespace, key.namespace
                    ),
                ));
            } else if !world.services.contains_key(&bk) {
                unresolved.push((
                    "BackendNotFound",
                    format!("{field}: Service {bk} not found"),
                ));
            }
        }
    }
    route
        .spec
        .parent_refs
        .iter()
        .filter(|p| p.is_service())
        .map(|pref| {
            let svc_key = ObjKey::new(
                pref.namespace.as_deref().unwrap_or(&key.namespace),
                pref.name.clone(),
            );
            let accepted = if !problems.is_empty() {
                let reason = problems[0].reason;
                let msg = problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    false,
                    if reason == "NoMatchingParent" {
                        reason
                    } else {
                        "UnsupportedValue"
                    },
                    msg,
                )
            } else {
                match world.services.get(&svc_key) {
                    None => (
                        false,
                        "NoMatchingParent",
                        format!("parent Service {svc_key} not found"),
                    ),
                    Some(svc) => match pref.port {
                        Some(port)
                            if !svc.ports.is_empty()
                                && !svc.ports.iter().any(|p| i32::from(p.port) == port) =>
                        {
                            (
                                false,
                                "NoMatchingParent",
                                format!("parent Service {svc_key} has no port {port}"),
                            )
                        }
                        _ => (true, "Accepted", "Route is accepted".into()),
                    },
                }
            };
            let resolved = match unresolved.first() {
                None => (true, "ResolvedRefs", "All references resolved".into()),
                Some((reason, _)) => (
                    false,
                    *reason,
                    unresolved
                        .iter()
                        .map(|(_, m)| m.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            };
            ParentVerdict {
                parent_ref: pref.clone(),
                accepted,
                resolved_refs: resolved,
            }
        })
        .collect()
}

/// Conflicts between TrafficSplits and HTTPRoutes (or other splits) over the same apex Service:
/// split key → problem. The losing split is not applied.
pub fn split_conflicts(world: &World) -> BTreeMap<ObjKey, Problem> {
    let routed: BTreeSet<ObjKey> = world
        .routes
        .iter()
        .flat_map(|(key, r)| {
            r.spec
                .parent_refs
                .iter()
                .filter(|p| p.is_service())
                .map(move |p| {
                    ObjKey::new(
                        p.namespace.as_deref().unwrap_or(&key.namespace),
                        p.name.clone(),
                    )
                })
        })
        .collect();
    let mut out = BTreeMap::new();
    let mut winners: BTreeMap<ObjKey, ObjKey> = BTreeMap::new();
    for (key, split) in ordered_splits(world) {
        let apex = ObjKey::new(key.namespace.clone(), split.spec.service.clone());
        if routed.contains(&apex) {
            out.insert(
                key.clone(),
                Problem::new(
                    "spec.service",
                    "Conflicted",
                    format!("an HTTPRoute is attached to Service {apex}; it takes precedence over this TrafficSplit"),
                ),
            );
        } else if let Some(winner) = winners.get(&apex) {
            out.insert(
                key.clone(),
                Problem::new(
                    "spec.service",
                    "Conflicted",
                    format!("TrafficSplit {winner} is older and already splits Service {apex}"),
                ),
            );
        } else {
            winners.insert(apex, key.clone());
        }
    }
    out
}

fn ordered_splits(world: &World) -> Vec<(&ObjKey, &TrafficSplit)> {
    let mut v: Vec<_> = world.splits.iter().collect();
    v.sort_by(|a, b| {
        let ta = a.1.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.1.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ta.cmp(&tb).then_with(|| a.0.cmp(b.0))
    });
    v
}

// ---------------------------------------------------------------------------------------------
// Translation

/// A route attached to one Service parent.
struct Attach<'a> {
    key: &'a ObjKey,
    route: &'a HttpRoute,
    port: Option<u16>,
    consumer: bool,
}

/// Builds the table for proxies whose workload lives in `client_ns`. `version` is stamped on it.
pub fn translate(world: &World, client_ns: &str, opts: &Options, version: u64) -> RouteTable {
    let mut attached: BTreeMap<ObjKey, Vec<Attach<'_>>> = BTreeMap::new();
    for (key, route) in &world.routes {
        for pref in route.spec.parent_refs.iter().filter(|p| p.is_service()) {
            let svc_key = ObjKey::new(
                pref.namespace.as_deref().unwrap_or(&key.namespace),
                pref.name.clone(),
            );
            let Some(svc) = world.services.get(&svc_key) else {
                continue;
            };
            let port = match pref.port {
                None => None,
                Some(p) => match u16::try_from(p) {
                    Ok(p) if svc.ports.is_empty() || svc.ports.iter().any(|sp| sp.port == p) => {
                        Some(p)
                    }
                    _ => continue,
                },
            };
            let consumer = key.namespace != svc_key.namespace;
            if consumer && key.namespace != client_ns {
                continue;
            }
            attached.entry(svc_key).or_default().push(Attach {
                key,
                route,
                port,
                consumer,
            });
        }
    }
    for list in attached.values_mut() {
        // Consumer routes of the client's namespace replace the producer's routes for it.
        if list.iter().any(|a| a.consumer) {
            list.retain(|a| a.consumer);
        }
        list.sort_by(|a, b| {
            let ta = a.route.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let tb = b.route.metadata.creation_timestamp.as_ref().map(|t| t.0);
            ta.cmp(&tb).then_with(|| a.key.cmp(b.key))
        });
    }
    let conflicts = split_conflicts(world);
    let mut splits: BTreeMap<ObjKey, &TrafficSplit> = BTreeMap::new();
    for (key, split) in ordered_splits(world) {
        if conflicts.contains_key(key) {
            continue;
        }
        splits
            .entry(ObjKey::new(
                key.namespace.clone(),
                split.spec.service.clone(),
            ))
            .or_insert(split);
    }

    let mut routes = Vec::new();
    let mut taken: BTreeSet<Authority> = BTreeSet::new();
    for (svc_key, svc) in &world.services {
        let ctx = SvcCtx {
            world,
            key: svc_key,
            svc,
        };
        let mut built: Vec<(Option<u16>, Route)> = Vec::new();
        if let Some(list) = attached.get(svc_key) {
            let ports: BTreeSet<u16> = list.iter().filter_map(|a| a.port).collect();
            let portless: Vec<&Attach<'_>> = list.iter().filter(|a| a.port.is_none()).collect();
            if portless.is_empty() {
                built.extend(ctx.default_routes());
            } else {
                built.push((None, ctx.http_route(&portless, None)));
            }
            for p in ports {
                let subset: Vec<&Attach<'_>> = list
                    .iter()
                    .filter(|a| a.port.is_none() || a.port == Some(p))
                    .collect();
                built.push((Some(p), ctx.http_route(&subset, Some(p))));
            }
        } else if let Some(split) = splits.get(svc_key) {
            built.extend(ctx.split_routes(split));
        } else {
            built.extend(ctx.default_routes());
        }
        let extra_hosts: Vec<&str> = attached
            .get(svc_key)
            .into_iter()
            .flatten()
            .filter(|a| a.port.is_none())
            .flat_map(|a| a.route.spec.hostnames.iter().map(String::as_str))
            .collect();
        for (port, template) in built {
            let template = ctx.safe(template, port);
            for authority in ctx.authorities(client_ns, opts, port, &extra_hosts) {
                // The first claim of an authority wins (Services iterate in key order, so this
                // is deterministic); a hostname that shadows another Service's name is dropped.
                if taken.insert(authority.clone()) {
                    routes.push(Route {
                        authority,
                        ..template.clone()
                    });
                }
            }
        }
    }
    RouteTable { version, routes }
}

struct SvcCtx<'a> {
    world: &'a World,
    key: &'a ObjKey,
    svc: &'a ServiceInfo,
}

/// Identity of a backend within one route: Service key and resolved Service port.
type BackendKey = (ObjKey, Option<u16>);

#[derive(Default)]
struct Backends {
    keys: Vec<BackendKey>,
    /// Indexes of backends the route may not reach (a cross-namespace reference without a
    /// ReferenceGrant): they get no endpoints, so the proxy answers their share with 503.
    denied: BTreeSet<usize>,
}

impl Backends {
    fn add(&mut self, key: BackendKey) -> usize {
        if let Some(i) = self.keys.iter().position(|k| *k == key) {
            return i;
        }
        self.keys.push(key);
        self.keys.len() - 1
    }

    /// Adds a backend an HTTPRoute in `route_ns` refers to, checking the reference.
    fn add_ref(&mut self, world: &World, route_ns: &str, key: BackendKey) -> usize {
        let permitted = world.route_may_reach(route_ns, &key.0);
        let idx = self.add(key);
        if !permitted {
            self.denied.insert(idx);
        }
        idx
    }
}

impl SvcCtx<'_> {
    fn authorities(
        &self,
        client_ns: &str,
        opts: &Options,
        port: Option<u16>,
        extra_hosts: &[&str],
    ) -> Vec<Authority> {
        let name = &self.key.name;
        let ns = &self.key.namespace;
        let mut hosts: Vec<String> = Vec::new();
        if ns == client_ns {
            hosts.push(name.clone());
        }
        hosts.push(format!("{name}.{ns}"));
        hosts.push(format!("{name}.{ns}.svc"));
        hosts.push(format!("{name}.{ns}.svc.{}", opts.cluster_domain));
        hosts.extend(self.svc.cluster_ips.iter().map(|ip| ip.to_string()));
        if port.is_none() {
            hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        }
        hosts
            .into_iter()
            .map(|host| Authority { host, port })
            .collect()
    }

    /// A Service with no route: everything to itself, one route per port when the ports'
    /// endpoints differ.
    fn default_routes(&self) -> Vec<(Option<u16>, Route)> {
        let ports: Vec<Option<u16>> = if self.svc.ports.len() <= 1 {
            vec![None]
        } else {
            self.svc.ports.iter().map(|p| Some(p.port)).collect()
        };
        ports
            .into_iter()
            .map(|port| {
                let mut b = Backends::default();
                b.add((
                    self.key.clone(),
                    port.or(self.svc.ports.first().map(|p| p.port)),
                ));
                let rule = Rule {
                    backends: vec![self.rule_backend(0, 1)],
                    ..Rule::default()
                };
                (port, self.finish(&b, vec![rule]))
            })
            .collect()
    }

    fn split_routes(&self, split: &TrafficSplit) -> Vec<(Option<u16>, Route)> {
        let ports: Vec<Option<u16>> = if self.svc.ports.len() <= 1 {
            vec![self.svc.ports.first().map(|p| p.port)]
        } else {
            self.svc.ports.iter().map(|p| Some(p.port)).collect()
        };
        let quantities = split.spec.backends.iter().any(|b| b.weight.is_quantity());
        ports
            .into_iter()
            .map(|port| {
                let mut b = Backends::default();
                let backends = split
                    .spec
                    .backends
                    .iter()
                    .map(|sb| {
                        let key = ObjKey::new(self.key.namespace.clone(), sb.service.clone());
                        let idx = b.add((key, port));
                        let mut w = sb.weight.value().unwrap_or(0);
                        if quantities && !sb.weight.is_quantity() {
                            w = w.saturating_mul(1000);
                        }
                        self.rule_backend(idx, u32::try_from(w).unwrap_or(u32::MAX))
                    })
                    .collect();
                let rule = Rule {
                    backends,
                    ..Rule::default()
                };
                let route_port = if self.svc.ports.len() <= 1 {
                    None
                } else {
                    port
                };
                (route_port, self.finish(&b, vec![rule]))
            })
            .collect()
    }

    fn http_route(&self, attaches: &[&Attach<'_>], port: Option<u16>) -> Route {
        let mut b = Backends::default();
        // (precedence, order) -> rule; the sort is stable so route age and rule order break ties.
        let mut rules: Vec<(Precedence, Rule)> = Vec::new();
        for a in attaches {
            let ns = &a.key.namespace;
            let parent_port = port.or_else(|| self.svc.ports.first().map(|p| p.port));
            for (ri, rule) in a.route.spec.rules.iter().enumerate() {
                let backends: Vec<Backend> = if rule.backend_refs.is_empty() {
                    let idx = b.add((self.key.clone(), parent_port));
                    vec![self.rule_backend(idx, 1)]
                } else {
                    rule.backend_refs
                        .iter()
                        .map(|br| {
                            let key = backend_key(self.world, ns, br, parent_port);
                            let idx = b.add_ref(self.world, ns, key);
                            let w = u32::try_from(br.weight.unwrap_or(1)).unwrap_or(0);
                            self.rule_backend(idx, w)
                        })
                        .collect()
                };
                let mut mirror = None;
                let mut response_headers = ResponseHeaders::default();
                for f in &rule.filters {
                    if let Some(m) = &f.request_mirror
                        && f.type_ == "RequestMirror"
                    {
                        let br = HttpBackendRef {
                            name: m.backend_ref.name.clone(),
                            namespace: m.backend_ref.namespace.clone(),
                            port: m.backend_ref.port,
                            ..HttpBackendRef::default()
                        };
                        let key = backend_key(self.world, ns, &br, parent_port);
                        let idx = b.add_ref(self.world, ns, key);
                        let percent = match (m.percent, &m.fraction) {
                            (Some(p), _) => p.clamp(0, 100) as u32,
                            (None, Some(fr)) => {
                                let den = f64::from(fr.denominator.unwrap_or(100).max(1));
                                (f64::from(fr.numerator) * 100.0 / den)
                                    .round()
                                    .clamp(0.0, 100.0) as u32
                            }
                            (None, None) => 100,
                        };
                        mirror = Some((idx, percent));
                    }
                    if let Some(h) = &f.response_header_modifier
                        && f.type_ == "ResponseHeaderModifier"
                    {
                        let copy = |s: &crate::k8s::types::HttpHeader| HeaderValue {
                            name: s.name.clone(),
                            value: s.value.clone(),
                        };
                        response_headers.set.extend(h.set.iter().map(copy));
                        response_headers.add.extend(h.add.iter().map(copy));
                        response_headers.remove.extend(h.remove.iter().cloned());
                    }
                }
                let timeout = rule.timeouts.as_ref().and_then(|t| {
                    [&t.request, &t.backend_request]
                        .into_iter()
                        .flatten()
                        .filter_map(|s| parse_duration(s).ok())
                        // Gateway API: a zero duration disables the timeout.
                        .filter(|d| *d > Duration::ZERO)
                        .min()
                });
                let name = rule
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}.rules[{ri}]", a.key));
                let base = Rule {
                    name: Some(name),
                    matches: Vec::new(),
                    backends,
                    mirror: mirror.map(|(idx, percent)| Mirror {
                        backend: format!("#{idx}"),
                        percent,
                    }),
                    response_headers,
                    timeout,
                };
                if rule.matches.is_empty() {
                    rules.push((Precedence::catch_all(), base));
                } else {
                    for m in &rule.matches {
                        let (prec, m) = convert_match(m);
                        let mut r = base.clone();
                        r.matches = m.into_iter().collect();
                        rules.push((prec, r));
                    }
                }
            }
        }
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        self.finish(&b, rules.into_iter().map(|(_, r)| r).collect())
    }

    /// A rule backend referring (by index, resolved to a name in `finish`) to a route backend.
    fn rule_backend(&self, idx: usize, weight: u32) -> Backend {
        Backend {
            name: format!("#{idx}"),
            weight,
            labels: BTreeMap::new(),
            endpoints: None,
        }
    }

    fn names(&self, b: &Backends) -> Vec<String> {
        b.keys
            .iter()
            .map(|(key, port)| {
                let mut name = if key.namespace == self.key.namespace {
                    key.name.clone()
                } else {
                    format!("{}.{}", key.name, key.namespace)
                };
                let ports_used = b.keys.iter().filter(|(k, _)| k == key).count();
                if ports_used > 1
                    && let Some(p) = port
                {
                    name = format!("{name}:{p}");
                }
                name
            })
            .collect()
    }

    /// Names are assigned once all backends of the route are known (a `:port` suffix is needed
    /// only when one Service is used on two ports), so rules carry `#index` placeholders until
    /// here.
    fn finish(&self, b: &Backends, mut rules: Vec<Rule>) -> Route {
        let names = self.names(b);
        let resolve = |n: &mut String| {
            if let Some(i) = n.strip_prefix('#').and_then(|s| s.parse::<usize>().ok())
                && let Some(name) = names.get(i)
            {
                *n = name.clone();
            }
        };
        for r in &mut rules {
            for be in &mut r.backends {
                resolve(&mut be.name);
            }
            if let Some(m) = &mut r.mirror {
                resolve(&mut m.backend);
            }
        }
        let backends = b
            .keys
            .iter()
            .zip(names)
            .enumerate()
            .map(|(i, ((key, port), name))| {
                let mut labels = BTreeMap::new();
                labels.insert("namespace".to_string(), key.namespace.clone());
                BackendDef {
                    name,
                    labels,
                    endpoints: if b.denied.contains(&i) {
                        Vec::new()
                    } else {
                        endpoints_of(self.world, key, *port)
                    },
                }
            })
            .collect();
        Route {
            authority: Authority {
                host: self.key.name.clone(),
                port: None,
            },
            backends,
            rules,
        }
    }

    /// Last line of defence: a route the proxy would reject is replaced by the Service's default
    /// route, so one bad object never makes a proxy refuse the whole table.
    fn safe(&self, route: Route, port: Option<u16>) -> Route {
        let check = RouteTable {
            version: 0,
            routes: vec![route],
        };
        match check.validate() {
            Ok(()) => check
                .routes
                .into_iter()
                .next()
                .unwrap_or_else(unreachable_route),
            Err(e) => {
                tracing::error!(service = %self.key, error = %e, "translated route failed validation; serving the Service's default route");
                let mut defaults = self.default_routes();
                defaults
                    .iter()
                    .position(|(p, _)| *p == port)
                    .map(|i| defaults.swap_remove(i).1)
                    .unwrap_or_else(|| defaults.swap_remove(0).1)
            }
        }
    }
}

fn unreachable_route() -> Route {
    // Only reached if validate() accepted a table and then it had no route, which cannot happen;
    // kept total so there is no panic path.
    Route {
        authority: Authority {
            host: "invalid".into(),
            port: None,
        },
        backends: vec![],
        rules: vec![],
    }
}

fn backend_key(
    world: &World,
    route_ns: &str,
    br: &HttpBackendRef,
    parent_port: Option<u16>,
) -> BackendKey {
    let key = ObjKey::new(br.namespace.as_deref().unwrap_or(route_ns), br.name.clone());
    let port = match br.port.and_then(|p| u16::try_from(p).ok()) {
        Some(p) => Some(p),
        None => match world.services.get(&key) {
            Some(svc) if svc.ports.len() == 1 => Some(svc.ports[0].port),
            _ => parent_port,
        },
    };
    (key, port)
}

/// Ready endpoints of Service `key` on Service port `port` (all static endpoints for a local
/// Service without ports). Missing Service or port → none.
pub fn endpoints_of(world: &World, key: &ObjKey, port: Option<u16>) -> Vec<SocketAddr> {
    let Some(svc) = world.services.get(key) else {
        return Vec::new();
    };
    let sp: Option<&ServicePort> = match port {
        Some(p) => svc.ports.iter().find(|sp| sp.port == p),
        None => svc.ports.first(),
    };
    if !svc.ports.is_empty() && sp.is_none() {
        return Vec::new();
    }
    let single = svc.ports.len() == 1;
    let mut out: Vec<SocketAddr> = world
        .endpoints
        .get(key)
        .into_iter()
        .flat_map(|sets| sets.values())
        .flat_map(|set| set.addresses_for(sp, single))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Gateway API match precedence, smallest first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    /// 0 exact, 1 regular expression, 2 prefix.
    path_class: u8,
    /// Longer paths first.
    path_len: std::cmp::Reverse<usize>,
    /// Rules with a method first.
    no_method: bool,
    headers: std::cmp::Reverse<usize>,
    query: std::cmp::Reverse<usize>,
}

impl Precedence {
    fn catch_all() -> Self {
        Precedence {
            path_class: 2,
            path_len: std::cmp::Reverse(1),
            no_method: true,
            headers: std::cmp::Reverse(0),
            query: std::cmp::Reverse(0),
        }
    }
}

fn convert_match(m: &HttpRouteMatch) -> (Precedence, Option<Match>) {
    let (kind, value) = match &m.path {
        None => (PathMatchType::PathPrefix, "/".to_string()),
        Some(p) => (
            match p.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" => PathMatchType::Exact,
                "RegularExpression" => PathMatchType::RegularExpression,
                _ => PathMatchType::PathPrefix,
            },
            p.value.clone().unwrap_or_else(|| "/".into()),
        ),
    };
    let prec = Precedence {
        path_class: match kind {
            PathMatchType::Exact => 0,
            PathMatchType::RegularExpression => 1,
            PathMatchType::PathPrefix => 2,
        },
        path_len: std::cmp::Reverse(if kind == PathMatchType::RegularExpression {
            0
        } else {
            value.len()
        }),
        no_method: m.method.is_none(),
        headers: std::cmp::Reverse(m.headers.len()),
        query: std::cmp::Reverse(m.query_params.len()),
    };
    let vm = |t: Option<&str>, name: &str, value: &str| ValueMatch {
        kind: if t == Some("RegularExpression") {
            ValueMatchType::RegularExpression
        } else {
            ValueMatchType::Exact
        },
        name: name.to_string(),
        value: value.to_string(),
    };
    let out = Match {
        path: if kind == PathMatchType::PathPrefix && value == "/" {
            None
        } else {
            Some(PathMatch { kind, value })
        },
        method: m.method.clone(),
        headers: m
            .headers
            .iter()
            .map(|h| vm(h.type_.as_deref(), &h.name, &h.value))
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| vm(q.type_.as_deref(), &q.name, &q.value))
            .collect(),
        cookies: Vec::new(),
    };
    if out == Match::default() {
        (prec, None)
    } else {
        (prec, Some(out))
    }
}

//! Status: each route's verdict per parent (accepted, resolved refs) and TrafficSplit conflicts,
//! written back to the objects.

use super::*;

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

/// One unresolved reference of an HTTPRoute: its field, the `ResolvedRefs` reason
/// (`RefNotPermitted`, `BackendNotFound`) and what is wrong.
struct Unresolved {
    field: String,
    reason: &'static str,
    message: String,
}

/// Every backendRef and mirror target of `route` that does not resolve to a Service it may use.
fn unresolved_refs(world: &World, route: &HttpRoute) -> Vec<Unresolved> {
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
                    (b.group.as_deref(), b.kind.as_deref()),
                    b.namespace.as_deref(),
                    &b.name,
                )
            })
            .chain(rule.filters.iter().enumerate().filter_map(|(fi, f)| {
                let m = f.request_mirror.as_ref()?;
                let b = &m.backend_ref;
                Some((
                    format!("spec.rules[{ri}].filters[{fi}].requestMirror.backendRef"),
                    (b.group.as_deref(), b.kind.as_deref()),
                    b.namespace.as_deref(),
                    &b.name,
                ))
            }));
        for (field, (group, kind), ns, name) in refs {
            let bk = ObjKey::new(ns.unwrap_or(&key.namespace), name.clone());
            if let Some(message) = unsupported_kind(group, kind) {
                unresolved.push(Unresolved {
                    field: format!("{field}.kind"),
                    reason: "InvalidKind",
                    message,
                });
            // Not permitted comes next: without a grant the route must not learn whether a
            // Service exists in a namespace it may not reach.
            } else if !world.route_may_reach(&key.namespace, &bk) {
                unresolved.push(Unresolved {
                    field,
                    reason: "RefNotPermitted",
                    message: format!(
                        "Service {bk} is in another namespace and no ReferenceGrant in {} lets HTTPRoutes from {} refer to it",
                        bk.namespace, key.namespace
                    ),
                });
            } else if !world.services.contains_key(&bk) {
                unresolved.push(Unresolved {
                    field,
                    reason: "BackendNotFound",
                    message: format!("Service {bk} not found"),
                });
            }
        }
    }
    unresolved
}

/// Whether the Service a parentRef names exists (and has the port it names): the `Accepted`
/// condition of a route that is valid on its own.
fn parent_accepted(
    world: &World,
    route_ns: &str,
    pref: &ParentReference,
) -> (bool, &'static str, String) {
    let svc_key = ObjKey::new(
        pref.namespace.as_deref().unwrap_or(route_ns),
        pref.name.clone(),
    );
    match world.services.get(&svc_key) {
        None => (
            false,
            "NoMatchingParent",
            format!("parent Service {svc_key} not found"),
        ),
        Some(svc) => match parent_port(svc, pref) {
            Err(why) => (
                false,
                "NoMatchingParent",
                format!("parent Service {svc_key} {why}"),
            ),
            Ok(_) => (true, "Accepted", "Route is accepted".into()),
        },
    }
}

/// The Service port a parentRef attaches to: `None` for the whole Service, `Some(port)` for
/// one port, named by `port` or by `sectionName` (a Service's sections are its named ports;
/// with both, they must be the same port). `Err` says why it names no port of `svc`.
pub(super) fn parent_port(
    svc: &ServiceInfo,
    pref: &ParentReference,
) -> Result<Option<u16>, String> {
    let by_number = match pref.port {
        None => None,
        Some(p) => match u16::try_from(p) {
            Ok(p) if svc.ports.is_empty() || svc.ports.iter().any(|sp| sp.port == p) => Some(p),
            _ => return Err(format!("has no port {p}")),
        },
    };
    let Some(section) = pref.section_name.as_deref() else {
        return Ok(by_number);
    };
    let Some(named) = svc
        .ports
        .iter()
        .find(|sp| sp.name.as_deref() == Some(section))
    else {
        return Err(format!("has no port named {section:?} (sectionName)"));
    };
    match by_number {
        Some(p) if p != named.port => Err(format!(
            "port {section:?} is {}, not port {p}; sectionName and port must name the same port",
            named.port
        )),
        _ => Ok(Some(named.port)),
    }
}

/// The conditions Serin reports for each Service parent of HTTPRoute `key`. `problems` are the
/// route's object-local problems (from [`check_route`]), which make it not accepted.
pub fn route_verdicts(
    world: &World,
    route: &HttpRoute,
    problems: &[Problem],
) -> Vec<ParentVerdict> {
    let key = ObjKey::of(route);
    let unresolved = unresolved_refs(world, route);
    route
        .spec
        .parent_refs
        .iter()
        .filter(|p| p.is_service())
        .map(|pref| {
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
                parent_accepted(world, &key.namespace, pref)
            };
            let resolved = match unresolved.first() {
                None => (true, "ResolvedRefs", "All references resolved".into()),
                Some(first) => (
                    false,
                    first.reason,
                    unresolved
                        .iter()
                        .map(|u| format!("{}: {}", u.field, u.message))
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

/// What keeps a route that is valid on its own from doing all it says, for the status API (the
/// Kubernetes source writes the same as the `Accepted` / `ResolvedRefs` conditions): parents
/// whose Service is missing, backends and mirror targets that do not resolve (their share of
/// requests gets a 500; a mirror copy is dropped). Not fatal: the route runs as far as it can.
pub fn route_reference_problems(world: &World, route: &HttpRoute) -> Vec<Problem> {
    let key = ObjKey::of(route);
    let parents = route
        .spec
        .parent_refs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_service())
        .filter_map(|(i, p)| {
            let (ok, reason, message) = parent_accepted(world, &key.namespace, p);
            (!ok).then(|| Problem::new(format!("spec.parentRefs[{i}]"), reason, message))
        });
    let refs = unresolved_refs(world, route)
        .into_iter()
        .map(|u| Problem::new(u.field, u.reason, u.message));
    // Hostnames that are another Service's own name are left out of every table (see
    // translate): said here so the route's author learns why that name is not theirs.
    let parents_of_route: Vec<ObjKey> = route
        .spec
        .parent_refs
        .iter()
        .filter(|p| p.is_service())
        .map(|p| {
            ObjKey::new(
                p.namespace.as_deref().unwrap_or(&key.namespace),
                p.name.clone(),
            )
        })
        .collect();
    let hostnames = route
        .spec
        .hostnames
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let owner = service_owning(world, &h.to_ascii_lowercase())?;
            (!parents_of_route.contains(&owner)).then(|| {
                Problem::new(
                    format!("spec.hostnames[{i}]"),
                    "UnsupportedValue",
                    format!("{h:?} is a name of Service {owner}; a route cannot take another Service's name, so it is ignored"),
                )
            })
        });
    parents.chain(refs).chain(hostnames).collect()
}

/// The Service whose own name `host` is: `name.ns`, `name.ns.svc`, `name.ns.svc.<domain>`, or
/// one of its cluster IPs.
fn service_owning(world: &World, host: &str) -> Option<ObjKey> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return world
            .services
            .iter()
            .find(|(_, s)| s.cluster_ips.contains(&ip))
            .map(|(k, _)| k.clone());
    }
    let mut labels = host.splitn(3, '.');
    let (name, ns) = (labels.next()?, labels.next()?);
    let rest = labels.next().unwrap_or("");
    let key = ObjKey::new(ns, name);
    (world.services.contains_key(&key)
        && (rest.is_empty() || rest == "svc" || rest.starts_with("svc.")))
    .then_some(key)
}

/// The same for a TrafficSplit: a missing apex Service (the split applies to nothing) and
/// backends without a Service (their share gets a 503).
pub fn split_reference_problems(world: &World, key: &ObjKey, split: &TrafficSplit) -> Vec<Problem> {
    let mut p = Vec::new();
    let apex = ObjKey::new(key.namespace.clone(), split.spec.service.clone());
    if !split.spec.service.is_empty() && !world.services.contains_key(&apex) {
        p.push(Problem::new(
            "spec.service",
            "NoMatchingParent",
            format!("apex Service {apex} not found"),
        ));
    }
    for (i, b) in split.spec.backends.iter().enumerate() {
        let bk = ObjKey::new(key.namespace.clone(), b.service.clone());
        if !b.service.is_empty() && !world.services.contains_key(&bk) {
            p.push(Problem::new(
                format!("spec.backends[{i}].service"),
                "BackendNotFound",
                format!("Service {bk} not found"),
            ));
        }
    }
    p
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
                    let svc = ObjKey::new(
                        p.namespace.as_deref().unwrap_or(&key.namespace),
                        p.name.clone(),
                    );
                    (svc, p)
                })
        })
        // Only a parentRef that attaches takes the Service from a split: one naming a port
        // or section the Service lacks applies to nothing (NoMatchingParent).
        .filter(|(svc, p)| {
            world
                .services
                .get(svc)
                .is_none_or(|info| parent_port(info, p).is_ok())
        })
        .map(|(svc, _)| svc)
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

pub(super) fn ordered_splits(world: &World) -> Vec<(&ObjKey, &TrafficSplit)> {
    let mut v: Vec<_> = world.splits.iter().collect();
    v.sort_by(|a, b| {
        let ta = a.1.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.1.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ta.cmp(&tb).then_with(|| a.0.cmp(b.0))
    });
    v
}

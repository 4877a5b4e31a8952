//! Translation: the [`World`] seen from one client namespace -> the [`RouteTable`] its proxies
//! enforce (authorities, merged rules in Gateway API precedence, backends and endpoints).

use super::*;

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
            // A parentRef naming no port of the Service attaches to nothing (its status says
            // NoMatchingParent).
            let Ok(port) = super::status::parent_port(svc, pref) else {
                continue;
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

    // Every Service's own names, whatever the order Services are built in: a route's
    // `hostnames` may add names for its Service but never take one of another Service's (a
    // route author could otherwise pull that Service's traffic to their own backends).
    let own_names: BTreeSet<String> = world
        .services
        .iter()
        .flat_map(|(key, svc)| {
            let ctx = SvcCtx { world, key, svc };
            ctx.authorities(client_ns, opts, None, &[])
        })
        .map(|a| a.host)
        .collect();
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
                // Ports with routes of their own are theirs: the first claim of an authority
                // wins below, so a default route for the same `host:port` would shadow them.
                built.extend(
                    ctx.default_routes()
                        .into_iter()
                        .filter(|(p, _)| p.is_none_or(|p| !ports.contains(&p))),
                );
            } else {
                built.push((None, ctx.http_route(&portless, None)));
                // On a multi-port Service, a request to `host:port` must reach the Service on
                // that port (a rule without backendRefs sends to the parent Service), so every
                // port gets its own copy; a port with routes of its own gets it below.
                if svc.ports.len() > 1 {
                    for sp in svc.ports.iter().filter(|sp| !ports.contains(&sp.port)) {
                        built.push((Some(sp.port), ctx.http_route(&portless, Some(sp.port))));
                    }
                }
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
            .filter(|h| !own_names.contains(&h.to_ascii_lowercase()))
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
    /// Backends an HTTPRoute refers to invalidly, with the `ResolvedRefs` reason: a Service the
    /// route may not reach (a cross-namespace reference without a ReferenceGrant;
    /// `RefNotPermitted`, which wins) or that does not exist (`BackendNotFound`). They get no
    /// endpoints and are marked invalid, so the proxy answers their share with 500 as Gateway
    /// API requires (a valid backend without ready endpoints gets 503).
    invalid: BTreeMap<usize, &'static str>,
}

impl Backends {
    fn add(&mut self, key: BackendKey) -> usize {
        if let Some(i) = self.keys.iter().position(|k| *k == key) {
            return i;
        }
        self.keys.push(key);
        self.keys.len() - 1
    }

    /// Adds a backend that no request may reach, for `reason` (`InvalidKind`, ...): its share
    /// of requests is answered 500. `key` must be one no Service can have.
    fn add_invalid(&mut self, key: BackendKey, reason: &'static str) -> usize {
        let idx = self.add(key);
        self.invalid.insert(idx, reason);
        idx
    }

    /// Adds a backend an HTTPRoute in `route_ns` refers to as `group`/`kind` (a core Service
    /// when both are unset), checking the reference.
    fn add_kind_ref(
        &mut self,
        world: &World,
        route_ns: &str,
        (group, kind): (Option<&str>, Option<&str>),
        key: BackendKey,
    ) -> usize {
        if unsupported_kind(group, kind).is_some() {
            // Named `Kind/name` (no Service name has a `/`), so it never merges with a Service
            // of the same name that another reference names properly.
            let (key, port) = key;
            let shown = ObjKey::new(
                key.namespace,
                format!("{}/{}", kind.unwrap_or("Service"), key.name),
            );
            return self.add_invalid((shown, port), "InvalidKind");
        }
        self.add_ref(world, route_ns, key)
    }

    /// Adds a backend an HTTPRoute in `route_ns` refers to, checking the reference.
    fn add_ref(&mut self, world: &World, route_ns: &str, key: BackendKey) -> usize {
        // The same order as the route's status (translate::status): not permitted first, so a
        // route never learns whether a Service it may not reach exists.
        let reason = if !world.route_may_reach(route_ns, &key.0) {
            Some("RefNotPermitted")
        } else if !world.services.contains_key(&key.0) {
            Some("BackendNotFound")
        } else {
            None
        };
        let idx = self.add(key);
        if let Some(reason) = reason {
            let kept = self.invalid.entry(idx).or_insert(reason);
            if reason == "RefNotPermitted" {
                *kept = reason;
            }
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
                let redirect = rule.filters.iter().find_map(redirect_of);
                let backends: Vec<Backend> = if redirect.is_some() {
                    // The proxy answers the redirect itself: nothing goes to a backend.
                    Vec::new()
                } else if rule.backend_refs.is_empty() {
                    let idx = b.add((self.key.clone(), parent_port));
                    vec![self.rule_backend(idx, 1)]
                } else if rule.backend_refs.iter().all(|br| br.weight == Some(0)) {
                    // Gateway API: weight 0 sends nothing to a backend, so a rule whose every
                    // backend has weight 0 sends its requests nowhere: they are answered 500.
                    // One backend stands for all (named `name/weight-0`, which no Service can
                    // be), since a proxy rule needs a weight above 0 to pick anything.
                    let first = &rule.backend_refs[0];
                    let key = ObjKey::new(ns.clone(), format!("{}/weight-0", first.name));
                    let idx = b.add_invalid((key, None), "EveryWeightZero");
                    vec![self.rule_backend(idx, 1)]
                } else {
                    rule.backend_refs
                        .iter()
                        .map(|br| {
                            let key = backend_key(self.world, ns, br, parent_port);
                            let kind = (br.group.as_deref(), br.kind.as_deref());
                            let idx = b.add_kind_ref(self.world, ns, kind, key);
                            let w = u32::try_from(br.weight.unwrap_or(1)).unwrap_or(0);
                            let mut backend = self.rule_backend(idx, w);
                            // A backendRef's own header changes: on the canary and the
                            // primary, the sticky-session cookies each sets.
                            for f in &br.filters {
                                add_response_headers(&mut backend.response_headers, f);
                            }
                            backend
                        })
                        .collect()
                };
                let mut mirror = None;
                let mut response_headers = ResponseHeaders::default();
                let mut request_headers = ResponseHeaders::default();
                for f in &rule.filters {
                    if let Some(m) = &f.request_mirror
                        && f.type_ == "RequestMirror"
                        && redirect.is_none()
                    {
                        let br = HttpBackendRef {
                            name: m.backend_ref.name.clone(),
                            namespace: m.backend_ref.namespace.clone(),
                            port: m.backend_ref.port,
                            ..HttpBackendRef::default()
                        };
                        let key = backend_key(self.world, ns, &br, parent_port);
                        let kind = (
                            m.backend_ref.group.as_deref(),
                            m.backend_ref.kind.as_deref(),
                        );
                        let idx = b.add_kind_ref(self.world, ns, kind, key);
                        // check_route refused negative and out-of-range shares; clamped so
                        // no value can make a table the proxy refuses.
                        let (percent, fraction) = match (m.percent, &m.fraction) {
                            (Some(p), _) => (u32::try_from(p.clamp(0, 100)).unwrap_or(100), None),
                            (None, Some(fr)) => {
                                let den = u32::try_from(fr.denominator.unwrap_or(100))
                                    .unwrap_or(100)
                                    .max(1);
                                let num = u32::try_from(fr.numerator).unwrap_or(0).min(den);
                                (
                                    100,
                                    Some(Fraction {
                                        numerator: num,
                                        denominator: den,
                                    }),
                                )
                            }
                            (None, None) => (100, None),
                        };
                        mirror = Some((idx, percent, fraction));
                    }
                    add_response_headers(&mut response_headers, f);
                    add_request_headers(&mut request_headers, f);
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
                    mirror: mirror.map(|(idx, percent, fraction)| Mirror {
                        backend: format!("#{idx}"),
                        percent,
                        fraction,
                    }),
                    response_headers,
                    request_headers,
                    redirect,
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
            endpoint_labels: Default::default(),
            response_headers: Default::default(),
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
                if let Some(svc) = self.world.services.get(key) {
                    labels.extend(svc.labels.clone());
                }
                labels.insert("namespace".to_string(), key.namespace.clone());
                let invalid = b.invalid.get(&i).map(|r| (*r).to_string());
                let endpoints = if invalid.is_some() {
                    Vec::new()
                } else {
                    endpoints_of(self.world, key, *port)
                };
                let endpoint_labels = endpoints
                    .iter()
                    .filter_map(|a| Some((*a, self.world.endpoint_meta.labels(a)?.clone())))
                    .collect();
                BackendDef {
                    name,
                    labels,
                    endpoints,
                    endpoint_labels,
                    invalid,
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
    // Gateway API: of entries with an equivalent name only the first counts (header names are
    // case-insensitive, query parameter names are not); the rest are ignored, in matching and
    // in precedence alike.
    let mut seen = BTreeSet::new();
    let headers: Vec<_> = m
        .headers
        .iter()
        .filter(|h| seen.insert(h.name.to_ascii_lowercase()))
        .collect();
    let mut seen = BTreeSet::new();
    let query_params: Vec<_> = m
        .query_params
        .iter()
        .filter(|q| seen.insert(q.name.as_str()))
        .collect();
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
        headers: std::cmp::Reverse(headers.len()),
        query: std::cmp::Reverse(query_params.len()),
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
        headers: headers
            .iter()
            .map(|h| vm(h.type_.as_deref(), &h.name, &h.value))
            .collect(),
        query_params: query_params
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

/// The table's redirect for a `RequestRedirect` filter (None for other filters). check_route
/// refused out-of-range values; they are clamped anyway, so no value makes a table the proxy
/// refuses.
fn redirect_of(f: &HttpRouteFilter) -> Option<Redirect> {
    if f.type_ != "RequestRedirect" {
        return None;
    }
    let r = f.request_redirect.as_ref()?;
    let status_code = r
        .status_code
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| REDIRECT_STATUS_CODES.contains(c))
        .unwrap_or(Redirect::default_status());
    Some(Redirect {
        scheme: r.scheme.clone(),
        hostname: r.hostname.clone(),
        port: r
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0),
        path: r.path.as_ref().and_then(|m| {
            let (kind, value) = match m.type_.as_str() {
                "ReplaceFullPath" => (PathChangeType::ReplaceFullPath, &m.replace_full_path),
                "ReplacePrefixMatch" => {
                    (PathChangeType::ReplacePrefixMatch, &m.replace_prefix_match)
                }
                _ => return None,
            };
            Some(PathChange {
                kind,
                value: value.clone()?,
            })
        }),
        status_code,
    })
}

/// Adds what a `ResponseHeaderModifier` filter changes to `out` (other filters add nothing).
fn add_response_headers(out: &mut ResponseHeaders, f: &HttpRouteFilter) {
    if f.type_ == "ResponseHeaderModifier" {
        add_header_changes(out, f.response_header_modifier.as_ref());
    }
}

/// Adds what a `RequestHeaderModifier` filter changes to `out` (other filters add nothing).
fn add_request_headers(out: &mut ResponseHeaders, f: &HttpRouteFilter) {
    if f.type_ == "RequestHeaderModifier" {
        add_header_changes(out, f.request_header_modifier.as_ref());
    }
}

fn add_header_changes(
    out: &mut ResponseHeaders,
    h: Option<&serin_mesh_api::objects::HttpHeaderFilter>,
) {
    if let Some(h) = h {
        let copy = |s: &serin_mesh_api::objects::HttpHeader| HeaderValue {
            name: s.name.clone(),
            value: s.value.clone(),
        };
        out.set.extend(h.set.iter().map(copy));
        out.add.extend(h.add.iter().map(copy));
        out.remove.extend(h.remove.iter().cloned());
    }
}

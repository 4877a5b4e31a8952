//! The compiled route table: authority lookup, rule matching and weighted backend choice.
//!
//! Compiling happens once per table swap (regexes built, header names parsed, metrics series
//! and endpoint balancer state resolved), so the per-request path only compares and counts.
//! Everything here is pure apart from the shared endpoint state that survives swaps.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use regex::Regex;
use serin_mesh_api::table::{
    Match, PathMatchType, RouteTable, ValidationErrors, ValueMatch, ValueMatchType,
};

use crate::balance::Endpoint;
use crate::metrics::{Registry, RouteMetrics};

/// A string condition, compiled.
#[derive(Debug)]
enum Cond {
    Exact(String),
    Regex(Regex),
}

impl Cond {
    fn new(kind: ValueMatchType, value: &str) -> Result<Self, regex::Error> {
        Ok(match kind {
            ValueMatchType::Exact => Cond::Exact(value.to_string()),
            ValueMatchType::RegularExpression => Cond::Regex(anchored(value)?),
        })
    }

    fn accepts(&self, v: &str) -> bool {
        match self {
            Cond::Exact(e) => e == v,
            Cond::Regex(r) => r.is_match(v),
        }
    }
}

fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

#[derive(Debug)]
enum PathCond {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl PathCond {
    fn accepts(&self, path: &str) -> bool {
        match self {
            PathCond::Exact(p) => p == path,
            PathCond::Prefix(p) => {
                // Segment-wise: `/api` takes `/api` and `/api/x`, not `/apix`. A prefix with a
                // trailing slash takes everything below it.
                let p = p.trim_end_matches('/');
                p.is_empty()
                    || (path.starts_with(p)
                        && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            PathCond::Regex(r) => r.is_match(path),
        }
    }
}

#[derive(Debug, Default)]
struct CompiledMatch {
    path: Option<PathCond>,
    method: Option<Method>,
    headers: Vec<(HeaderName, Cond)>,
    query: Vec<(String, Cond)>,
    cookies: Vec<(String, Cond)>,
}

/// The parts of a request that rules look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Path without the query.
    pub path: &'a str,
    /// Raw query string, if any.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

impl CompiledMatch {
    fn compile(m: &Match) -> Result<Self, regex::Error> {
        let path = match &m.path {
            None => None,
            Some(p) => Some(match p.kind {
                PathMatchType::Exact => PathCond::Exact(p.value.clone()),
                PathMatchType::PathPrefix => PathCond::Prefix(p.value.clone()),
                PathMatchType::RegularExpression => PathCond::Regex(anchored(&p.value)?),
            }),
        };
        let method = m
            .method
            .as_deref()
            .and_then(|s| Method::from_bytes(s.as_bytes()).ok());
        let mut headers = Vec::new();
        for h in &m.headers {
            // Validation guarantees the name parses; an unparsable one could never match anyway.
            if let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) {
                headers.push((name, Cond::new(h.kind, &h.value)?));
            }
        }
        let named = |list: &[ValueMatch]| -> Result<Vec<(String, Cond)>, regex::Error> {
            list.iter()
                .map(|v| Ok((v.name.clone(), Cond::new(v.kind, &v.value)?)))
                .collect()
        };
        Ok(CompiledMatch {
            path,
            method,
            headers,
            query: named(&m.query_params)?,
            cookies: named(&m.cookies)?,
        })
    }

    fn accepts(&self, req: &RequestView<'_>) -> bool {
        if let Some(p) = &self.path
            && !p.accepts(req.path)
        {
            return false;
        }
        if let Some(m) = &self.method
            && m != req.method
        {
            return false;
        }
        for (name, cond) in &self.headers {
            // Any value of a repeated header may satisfy the condition.
            let ok = req
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| cond.accepts(v)));
            if !ok {
                return false;
            }
        }
        for (name, cond) in &self.query {
            let ok = req
                .query
                .is_some_and(|q| query_pairs(q).any(|(k, v)| k == name && cond.accepts(v)));
            if !ok {
                return false;
            }
        }
        for (name, cond) in &self.cookies {
            let ok = req
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(cookie_pairs)
                .any(|(k, v)| k == name && cond.accepts(v));
            if !ok {
                return false;
            }
        }
        true
    }
}

/// `a=1&b=2` pairs; values are compared raw (not percent-decoded), as written in the request.
fn query_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// `a=1; b=2` pairs from one `Cookie` header.
fn cookie_pairs(h: &str) -> impl Iterator<Item = (&str, &str)> {
    h.split(';').filter_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        Some((k.trim(), v.trim().trim_matches('"')))
    })
}

/// A backend of a compiled rule.
pub struct BackendRt {
    /// Backend name (`dst_service`).
    pub name: String,
    /// Endpoints with their balancer state.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Why the reference this backend comes from is invalid (`BackendNotFound`, ...): requests
    /// picked for it are answered 500. None for a valid backend.
    pub invalid: Option<String>,
    /// The outbound metrics series of this backend.
    pub metrics: Arc<RouteMetrics>,
    /// The series of each endpoint (same order as `endpoints`) when the table labels endpoints
    /// (`dst_pod`, ...); empty when it does not, and `metrics` counts every request.
    pub endpoint_metrics: Vec<Arc<RouteMetrics>>,
}

impl BackendRt {
    /// The series a request sent to `endpoints[index]` is counted in.
    pub fn series(&self, index: usize) -> &Arc<RouteMetrics> {
        self.endpoint_metrics.get(index).unwrap_or(&self.metrics)
    }
}

/// A rule's request or response header changes, compiled: applied as `remove`, then `set`,
/// then `add`.
#[derive(Default)]
pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// No changes (the inbound listener's).
    pub const NONE: HeaderEdits = HeaderEdits {
        remove: Vec::new(),
        set: Vec::new(),
        add: Vec::new(),
    };

    fn compile(h: &serin_mesh_api::table::ResponseHeaders) -> HeaderEdits {
        // The table was validated, so every name and value parses; filter_map only keeps a
        // bad one from panicking.
        let pairs =
            |list: &[serin_mesh_api::table::HeaderValue]| -> Vec<(HeaderName, HeaderValue)> {
                list.iter()
                    .filter_map(|h| {
                        Some((
                            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                            HeaderValue::from_str(&h.value).ok()?,
                        ))
                    })
                    .collect()
            };
        HeaderEdits {
            remove: h
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            set: pairs(&h.set),
            add: pairs(&h.add),
        }
    }

    /// A rule's changes followed by one of its backends' (Gateway API applies a backendRef's
    /// filters after the rule's): removals of both, then sets, then adds, so that a backend's
    /// `Set-Cookie` joins the rule's instead of replacing it.
    fn compile_for_backend(
        rule: &serin_mesh_api::table::ResponseHeaders,
        backend: &serin_mesh_api::table::ResponseHeaders,
    ) -> HeaderEdits {
        let mut edits = HeaderEdits::compile(rule);
        let more = HeaderEdits::compile(backend);
        edits.remove.extend(more.remove);
        edits.set.extend(more.set);
        edits.add.extend(more.add);
        edits
    }

    /// Applies the changes to a request's or a response's headers.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}

/// The share of a rule's requests a mirror copies: `numerator` of every `denominator`.
#[derive(Debug, Clone, Copy)]
pub struct MirrorShare {
    numerator: u32,
    denominator: u32,
}

impl MirrorShare {
    /// From a validated (numerator, denominator); kept within 0..=1 whatever it is given.
    fn new((numerator, denominator): (u32, u32)) -> Self {
        let denominator = denominator.max(1);
        MirrorShare {
            numerator: numerator.min(denominator),
            denominator,
        }
    }

    /// Whether this request is copied, given a uniform draw over all of `u32`.
    pub fn takes(&self, draw: u32) -> bool {
        self.numerator > 0
            && u64::from(draw) * u64::from(self.denominator) < u64::from(self.numerator) * (1 << 32)
    }
}

/// A compiled rule.
pub struct RuleRt {
    matches: Vec<CompiledMatch>,
    /// (cumulative weight, backend, the rule's and that backend's response header changes);
    /// weight-0 backends are left out.
    weighted: Vec<(u64, Arc<BackendRt>, HeaderEdits)>,
    total_weight: u64,
    /// Changes to the request's headers before it is sent (to the backend and the mirror).
    pub request_headers: HeaderEdits,
    /// Mirror backend and percent.
    pub mirror: Option<(Arc<BackendRt>, MirrorShare)>,
    /// Time allowed until response headers.
    pub timeout: Option<Duration>,
    /// The rule's `route_*` series (`rt_route` = its name); unnamed rules have none.
    pub metrics: Option<Arc<RouteMetrics>>,
    /// A redirect the proxy answers itself (the rule then has no backends).
    pub redirect: Option<RedirectRt>,
}

/// A rule's redirect (Gateway API `RequestRedirect`), ready to answer requests.
pub struct RedirectRt {
    /// 301 or 302.
    pub status: http::StatusCode,
    scheme: Option<String>,
    hostname: Option<String>,
    port: Option<u16>,
    path: Option<serin_mesh_api::table::PathChange>,
    /// The rule's response header changes, applied to the redirect too.
    pub response_headers: HeaderEdits,
}

/// The port a scheme means when a URL names none.
fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl RedirectRt {
    fn compile(r: &serin_mesh_api::table::Redirect, response_headers: HeaderEdits) -> Self {
        RedirectRt {
            // validate() allowed 301 and 302 only; anything else answers 301.
            status: http::StatusCode::from_u16(r.status_code)
                .ok()
                .filter(|s| s.is_redirection())
                .unwrap_or(http::StatusCode::MOVED_PERMANENTLY),
            scheme: r.scheme.clone(),
            hostname: r.hostname.clone(),
            port: r.port,
            path: r.path.clone(),
            response_headers,
        }
    }

    /// The `Location` for a request with `scheme`, `authority` (`host[:port]`), `path` and
    /// `query`, taken by a match with path prefix `matched` (`/` for a match without a path
    /// condition): the request's URL with this redirect's parts replaced. Without a port of its
    /// own, the redirect keeps the request's port unless it changes the scheme (then the new
    /// scheme's well-known port); a scheme's well-known port is left out, as Gateway API asks.
    pub fn location(
        &self,
        scheme: &str,
        authority: &str,
        path: &str,
        query: Option<&str>,
        matched: &str,
    ) -> String {
        let (req_host, req_port) = split_authority(authority);
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let bracketed;
        let host = match &self.hostname {
            Some(h) => h.as_str(),
            // An IPv6 literal is written in brackets in a URL.
            None if req_host.contains(':') => {
                bracketed = format!("[{req_host}]");
                &bracketed
            }
            None => req_host,
        };
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(s)) => well_known_port(s),
            (None, None) => req_port,
        };
        let mut out = format!("{scheme}://{host}");
        if let Some(p) = port.filter(|p| Some(*p) != well_known_port(scheme)) {
            out.push_str(&format!(":{p}"));
        }
        match &self.path {
            Some(change) => out.push_str(&change.apply(path, matched)),
            None if path.starts_with('/') => out.push_str(path),
            None => out.push('/'),
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

impl RuleRt {
    fn accepts(&self, req: &RequestView<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.accepts(req))
    }

    /// The path prefix of the match that took `req` (the first that accepts it): `/` for a
    /// rule without matches or a match without a path condition; None for an exact or regex
    /// path match (which a prefix replacement is never paired with).
    pub fn matched_prefix(&self, req: &RequestView<'_>) -> Option<&str> {
        let Some(m) = self.matches.iter().find(|m| m.accepts(req)) else {
            return self.matches.is_empty().then_some("/");
        };
        match &m.path {
            None => Some("/"),
            Some(PathCond::Prefix(p)) => Some(p),
            Some(_) => None,
        }
    }

    /// Picks a backend in proportion to weights, given a uniform draw in `0..total_weight()`.
    pub fn pick(&self, draw: u64) -> &Arc<BackendRt> {
        self.pick_with_headers(draw).0
    }

    /// [`RuleRt::pick`], with the response header changes for an answer from that backend.
    pub fn pick_with_headers(&self, draw: u64) -> (&Arc<BackendRt>, &HeaderEdits) {
        let i = self.weighted.partition_point(|(cum, _, _)| *cum <= draw);
        // draw < total, so i < len; clamp anyway so a bad draw can never panic.
        let (_, backend, headers) = &self.weighted[i.min(self.weighted.len() - 1)];
        (backend, headers)
    }

    /// Sum of weights (> 0 for every validated rule).
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }
}

/// A compiled route.
pub struct RouteRt {
    /// The configured authority, used as the `authority` label.
    pub authority: String,
    /// Ordered rules.
    pub rules: Vec<RuleRt>,
}

/// FNV-1a: the host lookup runs on every request, and its keys come from the route table,
/// not from clients, so a cheap hash without flooding resistance is fine (a client's
/// authority is only looked up, never inserted).
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A compiled table, ready for lookups. Immutable; swapped whole.
pub struct Compiled {
    /// The source table (served on `/routes`).
    pub source: Arc<RouteTable>,
    hosts: HashMap<String, HostRoutes, BuildHasherDefault<Fnv>>,
}

#[derive(Default)]
struct HostRoutes {
    any_port: Option<Arc<RouteRt>>,
    ports: Vec<(u16, Arc<RouteRt>)>,
}

/// Why a table could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The table failed validation.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// Endpoint state shared across tables, so balancer statistics and connection pools survive
/// swaps. Entries are weak: an endpoint dropped from every table is forgotten.
#[derive(Default)]
pub struct EndpointStates {
    map: Mutex<HashMap<SocketAddr, Weak<Endpoint>>>,
}

impl EndpointStates {
    fn get(&self, addr: SocketAddr) -> Arc<Endpoint> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.get(&addr).and_then(Weak::upgrade) {
            return e;
        }
        let e = Arc::new(Endpoint::new(addr));
        m.insert(addr, Arc::downgrade(&e));
        m.retain(|_, w| w.strong_count() > 0);
        e
    }
}

impl Compiled {
    /// An empty table: every request gets a 404.
    pub fn empty() -> Self {
        Compiled {
            source: Arc::new(RouteTable::default()),
            hosts: HashMap::default(),
        }
    }

    /// Validates and compiles `table`.
    pub fn compile(
        table: RouteTable,
        registry: &Registry,
        endpoints: &EndpointStates,
    ) -> Result<Self, CompileError> {
        table.validate()?;
        let mut hosts: HashMap<String, HostRoutes, BuildHasherDefault<Fnv>> = HashMap::default();
        for route in &table.routes {
            let authority = route.authority.to_string();
            let mut backend_rt: HashMap<&str, Arc<BackendRt>> = HashMap::new();
            let mut backend = |name: &str| -> Option<Arc<BackendRt>> {
                if let Some(b) = backend_rt.get(name) {
                    return Some(b.clone());
                }
                let def = route.resolve_backend(name)?;
                let metrics = registry.outbound(&authority, def.name, def.labels);
                // Endpoint labels add to the backend's (and win over them); an endpoint the
                // table does not label is counted in the backend's series.
                let endpoint_metrics = if def.endpoint_labels.is_empty() {
                    Vec::new()
                } else {
                    def.endpoints
                        .iter()
                        .map(|a| match def.endpoint_labels.get(a) {
                            Some(extra) => {
                                let mut labels = def.labels.clone();
                                labels.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                                registry.outbound(&authority, def.name, &labels)
                            }
                            None => metrics.clone(),
                        })
                        .collect()
                };
                let b = Arc::new(BackendRt {
                    name: def.name.to_string(),
                    endpoints: def.endpoints.iter().map(|a| endpoints.get(*a)).collect(),
                    invalid: def.invalid.map(str::to_string),
                    metrics,
                    endpoint_metrics,
                });
                backend_rt.insert(def.name, b.clone());
                Some(b)
            };
            let mut rules = Vec::with_capacity(route.rules.len());
            for rule in &route.rules {
                let matches = rule
                    .matches
                    .iter()
                    .map(CompiledMatch::compile)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        // validate() compiled the same patterns, so this is unreachable in
                        // practice; report it as a validation error rather than panic.
                        ValidationErrors(vec![serin_mesh_api::ValidationError {
                            field: format!("routes[{}].rules", authority),
                            message: e.to_string(),
                        }])
                    })?;
                let mut weighted = Vec::new();
                let mut total = 0u64;
                for b in &rule.backends {
                    if b.weight == 0 {
                        continue;
                    }
                    if let Some(rt) = backend(&b.name) {
                        total += u64::from(b.weight);
                        let headers = HeaderEdits::compile_for_backend(
                            &rule.response_headers,
                            &b.response_headers,
                        );
                        weighted.push((total, rt, headers));
                    }
                }
                let mirror = rule
                    .mirror
                    .as_ref()
                    .and_then(|m| Some((backend(&m.backend)?, MirrorShare::new(m.share()))));
                rules.push(RuleRt {
                    matches,
                    weighted,
                    total_weight: total,
                    request_headers: HeaderEdits::compile(&rule.request_headers),
                    mirror,
                    timeout: rule.timeout,
                    redirect: rule.redirect.as_ref().map(|r| {
                        RedirectRt::compile(r, HeaderEdits::compile(&rule.response_headers))
                    }),
                    metrics: rule
                        .name
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .map(|n| registry.rt_route(&authority, n)),
                });
            }
            let rt = Arc::new(RouteRt { authority, rules });
            let h = hosts.entry(route.authority.host.clone()).or_default();
            match route.authority.port {
                Some(p) => h.ports.push((p, rt)),
                None => h.any_port = Some(rt),
            }
        }
        Ok(Compiled {
            source: Arc::new(table),
            hosts,
        })
    }

    /// The route for a request authority (`host` or `host:port`, any case): an exact host:port
    /// route first, then a host-only route.
    pub fn route(&self, authority: &str) -> Option<&Arc<RouteRt>> {
        let (host, port) = split_authority(authority);
        // A fully qualified name ends with the root's dot (`web.ns.svc.cluster.local.`, which
        // skips the resolver's search list): the same name as without it.
        let host = match host.strip_suffix('.') {
            Some(h) if !h.is_empty() => h,
            _ => host,
        };
        // Avoid allocating in the common case where the host is already lower-case (and not
        // an IPv6 literal, compared in its canonical spelling as the table keeps it).
        let lower;
        let host = if host.contains(':') {
            lower = host
                .parse::<std::net::Ipv6Addr>()
                .map_or_else(|_| host.to_ascii_lowercase(), |a| a.to_string());
            lower.as_str()
        } else if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let h = self.hosts.get(host)?;
        if let Some(p) = port
            && let Some((_, r)) = h.ports.iter().find(|(hp, _)| *hp == p)
        {
            return Some(r);
        }
        h.any_port.as_ref()
    }
}

/// Splits `host[:port]` / `[v6][:port]`; an unparsable port is treated as absent.
pub fn split_authority(a: &str) -> (&str, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            return (h, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
        return (a, None);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (a, None),
    }
}

impl RouteRt {
    /// The first rule accepting the request.
    pub fn rule(&self, req: &RequestView<'_>) -> Option<&RuleRt> {
        self.rules.iter().find(|r| r.accepts(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn compile(yaml: &str) -> Compiled {
        let t: RouteTable = serde_norway::from_str(yaml).expect("yaml");
        Compiled::compile(
            t,
            &Registry::new(&BTreeMap::new()),
            &EndpointStates::default(),
        )
        .expect("compile")
    }

    fn view<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        RequestView {
            method,
            path,
            query,
            headers,
        }
    }

    const TABLE: &str = r#"
routes:
  - authority: svc
    rules:
      - name: exact
        matches: [{ path: { type: Exact, value: /exact } }]
        backends: [{ name: a, endpoints: [127.0.0.1:1] }]
      - name: prefix-and-method
        matches: [{ path: { value: /api }, method: POST }]
        backends: [{ name: b, endpoints: [127.0.0.1:2] }]
      - name: cookie
        matches: [{ cookies: [{ name: canary, value: always }] }]
        backends: [{ name: c, endpoints: [127.0.0.1:3] }]
      - name: header-regex-or-query
        matches:
          - headers: [{ name: X-User, type: RegularExpression, value: "test-.*" }]
          - queryParams: [{ name: v, value: "2" }]
        backends: [{ name: d, endpoints: [127.0.0.1:4] }]
      - name: default
        backends: [{ name: e, endpoints: [127.0.0.1:5] }]
  - authority: svc:8080
    rules:
      - backends: [{ name: port, endpoints: [127.0.0.1:6] }]
"#;

    fn rule_name<'a>(c: &'a Compiled, auth: &str, req: RequestView<'_>) -> &'a str {
        let route = c.route(auth).expect("route");
        let rule = route.rule(&req).expect("rule");
        &rule.weighted[0].1.name
    }

    #[test]
    fn rules_are_tried_in_order_and_the_first_match_wins() {
        let c = compile(TABLE);
        let get = Method::GET;
        let post = Method::POST;
        let none = HeaderMap::new();
        assert_eq!(rule_name(&c, "svc", view(&get, "/exact", &none)), "a");
        assert_eq!(rule_name(&c, "svc", view(&get, "/exact/more", &none)), "e");
        assert_eq!(rule_name(&c, "svc", view(&post, "/api/x", &none)), "b");
        assert_eq!(rule_name(&c, "svc", view(&post, "/apix", &none)), "e");
        assert_eq!(rule_name(&c, "svc", view(&get, "/api/x", &none)), "e");
        let mut cookie = HeaderMap::new();
        cookie.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; canary=always"),
        );
        assert_eq!(rule_name(&c, "svc", view(&get, "/", &cookie)), "c");
        let mut user = HeaderMap::new();
        user.insert("x-user", HeaderValue::from_static("test-42"));
        assert_eq!(rule_name(&c, "svc", view(&get, "/", &user)), "d");
        let mut not_user = HeaderMap::new();
        not_user.insert("x-user", HeaderValue::from_static("prod-test-42"));
        assert_eq!(rule_name(&c, "svc", view(&get, "/", &not_user)), "e");
        assert_eq!(rule_name(&c, "svc", view(&get, "/?a=1&v=2", &none)), "d");
        assert_eq!(rule_name(&c, "svc", view(&get, "/?v=22", &none)), "e");
    }

    #[test]
    fn authorities_match_case_insensitively_and_prefer_the_exact_port() {
        let c = compile(TABLE);
        let get = Method::GET;
        let none = HeaderMap::new();
        assert_eq!(rule_name(&c, "SVC:8080", view(&get, "/", &none)), "port");
        assert_eq!(rule_name(&c, "svc:9090", view(&get, "/exact", &none)), "a");
        assert!(c.route("other").is_none());
    }

    #[test]
    fn weights_pick_in_proportion_and_zero_never() {
        let c = compile(
            r#"
routes:
  - authority: s
    rules:
      - backends:
          - { name: p, weight: 90, endpoints: [127.0.0.1:1] }
          - { name: z, weight: 0, endpoints: [127.0.0.1:3] }
          - { name: c, weight: 10, endpoints: [127.0.0.1:2] }
"#,
        );
        let rule = &c.route("s").expect("route").rules[0];
        assert_eq!(rule.total_weight(), 100);
        let names: Vec<&str> = (0..100).map(|d| rule.pick(d).name.as_str()).collect();
        assert_eq!(names.iter().filter(|n| **n == "p").count(), 90);
        assert_eq!(names.iter().filter(|n| **n == "c").count(), 10);
        assert!(!names.contains(&"z"));
    }

    #[test]
    fn a_mirror_share_takes_its_fraction_of_evenly_spread_draws() {
        let draws: Vec<u32> = (0..10_000u64)
            // The middle of each of 10,000 equal slices of the draw's range.
            .map(|i| u32::try_from((2 * i + 1) * (1 << 32) / 20_000).expect("below 2^32"))
            .collect();
        for ((num, den), want) in [
            ((1, 1000), 10),
            ((30, 100), 3000),
            ((1, 3), 3333),
            ((0, 100), 0),
            ((100, 100), 10_000),
            ((7, 0), 10_000),
        ] {
            let share = MirrorShare::new((num, den));
            let taken = draws.iter().filter(|d| share.takes(**d)).count();
            assert_eq!(taken, want, "{num}/{den}");
        }
        assert!(MirrorShare::new((1, 1)).takes(u32::MAX));
    }

    #[test]
    fn ipv6_literals_match_whatever_their_spelling() {
        let c = compile(
            r#"
routes:
  - authority: "[0:0::1]:8080"
    rules:
      - backends: [{ name: v6, endpoints: ["[::1]:9"] }]
"#,
        );
        for spelling in ["[::1]:8080", "[0:0:0:0:0:0:0:1]:8080", "[::0001]:8080"] {
            assert!(c.route(spelling).is_some(), "{spelling}");
        }
        assert!(c.route("[::2]:8080").is_none());
        assert!(c.route("[::1]:8081").is_none());
    }

    #[test]
    fn authority_splitting_handles_ports_and_ipv6() {
        assert_eq!(split_authority("a:80"), ("a", Some(80)));
        assert_eq!(split_authority("a"), ("a", None));
        assert_eq!(split_authority("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_authority("a:notaport"), ("a", None));
    }

    fn redirect(scheme: Option<&str>, hostname: Option<&str>, port: Option<u16>) -> RedirectRt {
        RedirectRt::compile(
            &serin_mesh_api::table::Redirect {
                scheme: scheme.map(Into::into),
                hostname: hostname.map(Into::into),
                port,
                path: None,
                status_code: 302,
            },
            HeaderEdits::default(),
        )
    }

    #[test]
    fn a_redirect_location_is_the_request_url_with_the_given_parts_replaced() {
        let cases = [
            // (scheme, hostname, port), request authority, expected Location
            (
                (None, Some("example.org"), None),
                "web:8080",
                "http://example.org:8080/a?b=c",
            ),
            (
                (None, Some("example.org"), None),
                "web",
                "http://example.org/a?b=c",
            ),
            ((None, None, Some(8083)), "web", "http://web:8083/a?b=c"),
            // The scheme's default port is left out.
            ((None, None, Some(80)), "web:8080", "http://web/a?b=c"),
            // A new scheme without a port: its well-known port, so none in Location.
            ((Some("https"), None, None), "web:8080", "https://web/a?b=c"),
            (
                (Some("https"), None, Some(8443)),
                "web",
                "https://web:8443/a?b=c",
            ),
            (
                (Some("https"), None, Some(80)),
                "web",
                "https://web:80/a?b=c",
            ),
            ((Some("http"), None, None), "web:8080", "http://web/a?b=c"),
            ((None, None, None), "[::1]:8080", "http://[::1]:8080/a?b=c"),
            (
                (None, Some("example.org"), None),
                "[::1]:8080",
                "http://example.org:8080/a?b=c",
            ),
        ];
        for ((scheme, host, port), authority, want) in cases {
            let r = redirect(scheme, host, port);
            assert_eq!(
                r.location("http", authority, "/a", Some("b=c"), "/"),
                want,
                "{scheme:?} {host:?} {port:?} from {authority}"
            );
        }
        assert_eq!(redirect(None, None, None).status, http::StatusCode::FOUND);
        // An asterisk-form or empty target still gives a path.
        assert_eq!(
            redirect(None, None, None).location("http", "web", "", None, "/"),
            "http://web/"
        );
        // A path change keeps the query.
        let mut r = redirect(None, None, None);
        r.path = Some(serin_mesh_api::table::PathChange {
            kind: serin_mesh_api::table::PathChangeType::ReplacePrefixMatch,
            value: "/new".into(),
        });
        assert_eq!(
            r.location("http", "web", "/old/x", Some("q=1"), "/old"),
            "http://web/new/x?q=1"
        );
    }
}

//! Object-local checks: what is wrong with one HTTPRoute or TrafficSplit on its own, before it
//! may enter the [`World`].

use super::*;

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
    let mut redirects = 0;
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
            "ResponseHeaderModifier" => header_modifier(p, &ff, f, Direction::Response),
            "RequestHeaderModifier" => header_modifier(p, &ff, f, Direction::Request),
            "RequestRedirect" => {
                redirects += 1;
                if redirects == 2 {
                    p.push(Problem::new(
                        format!("{ff}.type"),
                        "UnsupportedValue",
                        "a rule answers with one redirect; keep one RequestRedirect filter",
                    ));
                }
                request_redirect(p, &ff, f, rule);
            }
            other => p.push(Problem::new(
                format!("{ff}.type"),
                "UnsupportedValue",
                format!("filter {other:?} is not supported; accepted: RequestHeaderModifier, RequestMirror, RequestRedirect, ResponseHeaderModifier"),
            )),
        }
    }
    for (bi, b) in rule.backend_refs.iter().enumerate() {
        let bf = format!("{rf}.backendRefs[{bi}]");
        match b.weight {
            Some(w) if !(0..=1_000_000).contains(&w) => {
                p.push(Problem::new(
                    format!("{bf}.weight"),
                    "UnsupportedValue",
                    format!("{w} is out of range; accepted: 0 to 1000000"),
                ));
            }
            _ => {}
        }
        for (fi, f) in b.filters.iter().enumerate() {
            let ff = format!("{bf}.filters[{fi}]");
            match f.type_.as_str() {
                // Per backend: the canary's and the primary's own sticky-session cookies.
                "ResponseHeaderModifier" => header_modifier(p, &ff, f, Direction::Response),
                other => p.push(Problem::new(
                    format!("{ff}.type"),
                    "UnsupportedValue",
                    format!(
                        "per-backend filter {other:?} is not supported; accepted: ResponseHeaderModifier (put other filters on the rule)"
                    ),
                )),
            }
        }
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
                    endpoint_labels: Default::default(),
                    response_headers: Default::default(),
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

/// Problems of one `RequestRedirect` filter at `ff`: the checks of the route table's
/// [`serin_mesh_api::table::Redirect`], named by the HTTPRoute's fields.
fn request_redirect(p: &mut Vec<Problem>, ff: &str, f: &HttpRouteFilter, rule: &HttpRouteRule) {
    let Some(r) = &f.request_redirect else {
        p.push(Problem::new(
            format!("{ff}.requestRedirect"),
            "UnsupportedValue",
            "type RequestRedirect needs requestRedirect (scheme, hostname, port or statusCode)",
        ));
        return;
    };
    let rf = format!("{ff}.requestRedirect");
    let mut bad = |field: &str, why: String| {
        p.push(Problem::new(
            format!("{rf}.{field}"),
            "UnsupportedValue",
            why,
        ));
    };
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        bad(
            "scheme",
            format!("{s:?} is not supported; accepted: http, https"),
        );
    }
    if let Some(h) = &r.hostname
        && let Some(why) = redirect_hostname_problem(h)
    {
        bad("hostname", why);
    }
    if let Some(port) = r.port
        && !(1..=65535).contains(&port)
    {
        bad(
            "port",
            format!("{port} is out of range; accepted: 1 to 65535"),
        );
    }
    if let Some(code) = r.status_code
        && !REDIRECT_STATUS_CODES.iter().any(|c| i32::from(*c) == code)
    {
        bad(
            "statusCode",
            format!("{code} is not supported; accepted: 301, 302"),
        );
    }
    if let Some(m) = &r.path {
        let (key, value) = match m.type_.as_str() {
            "ReplaceFullPath" => ("replaceFullPath", &m.replace_full_path),
            "ReplacePrefixMatch" => ("replacePrefixMatch", &m.replace_prefix_match),
            other => {
                bad(
                    "path.type",
                    format!(
                        "{other:?} is not supported; accepted: ReplaceFullPath, ReplacePrefixMatch"
                    ),
                );
                return;
            }
        };
        let prefix = key == "replacePrefixMatch";
        match value {
            None => bad("path", format!("type {} needs {key}", m.type_)),
            Some(v) => {
                if let Some(why) = path_change_problem(v, prefix) {
                    bad(&format!("path.{key}"), why);
                }
            }
        }
        // Gateway API: ReplacePrefixMatch goes only with PathPrefix matches (a match without a
        // path is the prefix `/`).
        let all_prefix = rule.matches.iter().all(|m| {
            m.path
                .as_ref()
                .is_none_or(|pm| pm.type_.as_deref().unwrap_or("PathPrefix") == "PathPrefix")
        });
        if prefix && !all_prefix {
            bad(
                "path",
                "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match (it replaces the prefix matched)".into(),
            );
        }
    }
}

/// Which way a header modifier works.
#[derive(Clone, Copy)]
enum Direction {
    Request,
    Response,
}

/// Problems of one `RequestHeaderModifier` or `ResponseHeaderModifier` filter at `ff` (a
/// rule's, or for responses also a backendRef's).
fn header_modifier(p: &mut Vec<Problem>, ff: &str, f: &HttpRouteFilter, direction: Direction) {
    let (key, h, forbidden): (_, _, fn(&str) -> Option<String>) = match direction {
        Direction::Request => (
            "requestHeaderModifier",
            &f.request_header_modifier,
            request_header_problem,
        ),
        Direction::Response => (
            "responseHeaderModifier",
            &f.response_header_modifier,
            framing_header_problem,
        ),
    };
    let Some(h) = h else {
        p.push(Problem::new(
            format!("{ff}.{key}"),
            "UnsupportedValue",
            format!("type {} needs {key} (set, add or remove)", f.type_),
        ));
        return;
    };
    for (list, headers) in [("set", &h.set), ("add", &h.add)] {
        for (si, s) in headers.iter().enumerate() {
            let why = if http::HeaderName::from_bytes(s.name.as_bytes()).is_err()
                || http::HeaderValue::from_str(&s.value).is_err()
            {
                Some("not a valid header name and value".to_string())
            } else {
                forbidden(&s.name)
            };
            if let Some(why) = why {
                p.push(Problem::new(
                    format!("{ff}.{key}.{list}[{si}]"),
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
            forbidden(name)
        };
        if let Some(why) = why {
            p.push(Problem::new(
                format!("{ff}.{key}.remove[{si}]"),
                "UnsupportedValue",
                why,
            ));
        }
    }
}

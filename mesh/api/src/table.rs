//! The route table: what a proxy needs to decide where each request goes.
//!
//! A [`RouteTable`] is a snapshot. The proxy swaps whole tables, never edits one in place, so
//! every request sees exactly one consistent table. The same types are read from the proxy's
//! static YAML file (its `routes:` section) and streamed by the control plane.
//!
//! Shape (YAML, keys are camelCase like the Gateway API):
//!
//! ```yaml
//! version: 7
//! routes:
//!   - authority: podinfo            # host, or host:port; without a port any port matches
//!     backends:                     # optional shared definitions, referenced by name
//!       - name: podinfo-shadow
//!         endpoints: [127.0.0.1:19003]
//!     rules:                        # first matching rule wins; a rule without matches is the default
//!       - matches:
//!           - headers: [{ name: x-canary, value: insider }]
//!         backends:
//!           - name: podinfo-canary
//!             weight: 1
//!             endpoints: [127.0.0.1:19002]
//!       - backends:
//!           - { name: podinfo-primary, weight: 90, endpoints: [127.0.0.1:19001] }
//!           - { name: podinfo-canary, weight: 10, endpoints: [127.0.0.1:19002] }
//!         mirror: { backend: podinfo-shadow, percent: 5 }
//!         timeout: 10s
//! ```
//!
//! [`RouteTable::validate`] checks everything a decoder cannot (regexes compile, names are unique,
//! references resolve, weights can route) and names the offending field in every error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A complete, self-contained routing snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTable {
    /// Monotonic snapshot version chosen by the producer (control plane or file loader). The proxy
    /// reports the version in force on `/routes`; it does not interpret it otherwise.
    #[serde(default)]
    pub version: u64,
    /// Routes, one per authority. Requests whose authority matches none get a 404.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// Everything that applies to one authority (host with optional port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// The authority this route serves (`Host` header in HTTP/1.1, `:authority` in HTTP/2).
    pub authority: Authority,
    /// Backend definitions shared by the rules of this route: a rule backend or a mirror can name
    /// one of these instead of repeating its endpoints and labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendDef>,
    /// Ordered rules; the first whose matches accept the request decides. A rule without
    /// matches accepts every request (the default rule, usually last).
    pub rules: Vec<Rule>,
}

/// `host` or `host:port`. The host is compared case-insensitively; a missing port matches any port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Authority {
    /// Host name or IP literal, stored lower-case (IPv6 literals without brackets).
    pub host: String,
    /// Port, if the route is specific to one.
    pub port: Option<u16>,
}

/// One rule: which requests it takes and where it sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Optional name, only used in logs and `/routes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The rule applies when ANY of these matches accepts the request (each match is an AND of
    /// its conditions). Empty means every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
    /// Weighted backends; one is chosen per request in proportion to its weight.
    pub backends: Vec<Backend>,
    /// Copy a share of the requests to another backend; its responses are discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Headers to set on responses from this rule (replacing any the upstream sent), e.g. a
    /// `Set-Cookie` that pins a user to the canary.
    #[serde(default, skip_serializing_if = "ResponseHeaders::is_empty")]
    pub response_headers: ResponseHeaders,
    /// Header changes on the request before it goes upstream (and to the mirror): Gateway
    /// API's `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "ResponseHeaders::is_empty")]
    pub request_headers: RequestHeaders,
    /// Answer the request with a redirect made by the proxy instead of forwarding it (Gateway
    /// API's `RequestRedirect`); such a rule lists no backends and no mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Time allowed for the upstream to answer with response headers; past it the client gets a
    /// 504. Written as `10s`, `500ms`, `1m`, `1m30s`. None = no route timeout.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_opt"
    )]
    pub timeout: Option<Duration>,
}

/// A redirect the proxy answers itself: `Location` is the request's URL with the parts given
/// here replaced (Gateway API's `HTTPRequestRedirectFilter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`; None keeps the request's scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host name for `Location`; None keeps the request's (without its port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Port for `Location`. None: the well-known port of `scheme` when it is given, else the
    /// request's port. A scheme's well-known port (80 for http, 443 for https) is left out of
    /// `Location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Path for `Location`; None keeps the request's. The query is kept either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathChange>,
    /// `301` (the default) or `302`.
    #[serde(default = "Redirect::default_status")]
    pub status_code: u16,
}

impl Redirect {
    /// Gateway API's default status: 301 Moved Permanently.
    pub const fn default_status() -> u16 {
        301
    }
}

/// A new path for a request (Gateway API's `HTTPPathModifier`), written
/// `{type: ReplaceFullPath, value: /new}` or `{type: ReplacePrefixMatch, value: /new}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathChange {
    /// What `value` replaces.
    #[serde(rename = "type")]
    pub kind: PathChangeType,
    /// The new path, or the new prefix.
    pub value: String,
}

/// What a [`PathChange`] replaces, named as in the Gateway API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathChangeType {
    /// The whole path becomes `value` (starting with `/`).
    ReplaceFullPath,
    /// The part of the path the rule's `PathPrefix` match took (whole segments, its trailing
    /// `/` ignored) becomes `value` (empty, or starting with `/`; a trailing `/` ignored):
    /// `/foo/bar` matched by `/foo` becomes `/xyz/bar` with `/xyz` or `/xyz/`, `/bar` with an
    /// empty value; a path left empty becomes `/`. Only for rules whose every match is a
    /// `PathPrefix` one (or has no path condition, which is the prefix `/`).
    ReplacePrefixMatch,
}

impl PathChange {
    /// The new path of a request with `path`, which the prefix `matched` accepted (segment-wise,
    /// as [`PathMatchType::PathPrefix`] does).
    pub fn apply(&self, path: &str, matched: &str) -> String {
        let with = &self.value;
        match self.kind {
            PathChangeType::ReplaceFullPath => with.clone(),
            PathChangeType::ReplacePrefixMatch => {
                let matched = matched.trim_end_matches('/');
                // The prefix accepted the path, so it is a prefix of it; get() keeps a bad
                // argument from panicking.
                let rest = path.get(matched.len()..).unwrap_or(path);
                let out = format!("{}{rest}", with.trim_end_matches('/'));
                if out.is_empty() { "/".to_string() } else { out }
            }
        }
    }
}

/// Why `path` cannot be a [`PathChange`]'s value (`prefix`: a `ReplacePrefixMatch`, which may
/// be empty); None when it can.
pub fn path_change_problem(path: &str, prefix: bool) -> Option<String> {
    if prefix && path.is_empty() {
        return None;
    }
    if !path.starts_with('/') {
        return Some(format!("{path:?} must start with `/`"));
    }
    if path.contains(['?', '#']) || http::uri::PathAndQuery::try_from(path).is_err() {
        return Some(format!(
            "{path:?} is not a URL path (no query, fragment, spaces or control characters)"
        ));
    }
    None
}

/// Status codes a [`Redirect`] may answer with (Gateway API Core: 301 and 302).
pub const REDIRECT_STATUS_CODES: [u16; 2] = [301, 302];

/// Why `host` cannot be a redirect's hostname (Gateway API's PreciseHostname: lower-case RFC
/// 1123 labels, no wildcard, no port); None when it can.
pub fn redirect_hostname_problem(host: &str) -> Option<String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Some(format!(
            "{host:?} is not a host name; accepted: lower-case DNS labels of letters, digits and '-' separated by '.', e.g. example.com (no wildcard, no port)"
        ));
    }
    None
}

/// A conjunction of conditions on one request. An empty match accepts every request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Condition on the request path (without the query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP method, e.g. `GET` (compared exactly, methods are case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Every listed header must be present and match (names are case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Every listed query parameter must be present and match (names are case-sensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
    /// Every listed cookie (from the `Cookie` request headers) must be present and match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<ValueMatch>,
}

/// How a request path is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (default; segment-wise, `/api` matches `/api` and `/api/x` but not
    /// `/apix`) or `RegularExpression` (must match the whole path).
    #[serde(rename = "type", default = "PathMatchType::default_prefix")]
    pub kind: PathMatchType,
    /// The path or the pattern.
    pub value: String,
}

/// Path comparison kinds, named as in the Gateway API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatchType {
    /// The path equals the value.
    Exact,
    /// The path starts with the value at a segment boundary.
    PathPrefix,
    /// The whole path matches the regular expression (Rust `regex` syntax).
    RegularExpression,
}

impl PathMatchType {
    fn default_prefix() -> Self {
        PathMatchType::PathPrefix
    }
}

/// A named value condition, used for headers, query parameters and cookies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatch {
    /// `Exact` (default) or `RegularExpression` (must match the whole value).
    #[serde(rename = "type", default = "ValueMatchType::default_exact")]
    pub kind: ValueMatchType,
    /// Header, query parameter or cookie name.
    pub name: String,
    /// The expected value or the pattern.
    pub value: String,
}

/// Value comparison kinds, named as in the Gateway API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueMatchType {
    /// The value equals the given string.
    Exact,
    /// The whole value matches the regular expression (Rust `regex` syntax).
    RegularExpression,
}

impl ValueMatchType {
    fn default_exact() -> Self {
        ValueMatchType::Exact
    }
}

/// A weighted backend of a rule.
///
/// Either self-contained (`endpoints` given, `labels` optional) or a reference to a route-level
/// [`BackendDef`] of the same name (no `endpoints`, no `labels`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// Backend (service) name; reported as the `dst_service` metric label.
    pub name: String,
    /// Relative weight. 0 = never chosen (but still defined, e.g. as a mirror target).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Extra metric labels, exported with a `dst_` prefix (keys must be Prometheus label names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Endpoint addresses (`ip:port`). Absent = defined at route level; present but empty = the
    /// backend exists but has no endpoints now (requests to it get a 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<SocketAddr>>,
    /// Per-endpoint metric labels (keys: addresses of `endpoints`), exported with a `dst_`
    /// prefix on the series of requests sent to that endpoint, over the backend's `labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_labels: EndpointLabels,
    /// Headers changed on responses from this backend only, after the rule's own
    /// (Gateway API's per-backendRef `ResponseHeaderModifier`): e.g. the `Set-Cookie` that pins
    /// a user to the canary on the canary's answers and to the primary on the primary's.
    #[serde(default, skip_serializing_if = "ResponseHeaders::is_empty")]
    pub response_headers: ResponseHeaders,
}

/// Metric labels per endpoint address, e.g. `pod` and `pod_template_hash` (exported as
/// `dst_pod`, `dst_pod_template_hash`): the control plane fills them from EndpointSlice target
/// refs on Kubernetes and from process targets on one machine.
pub type EndpointLabels = BTreeMap<SocketAddr, BTreeMap<String, String>>;

fn default_weight() -> u32 {
    1
}

/// A backend definition shared by the rules of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendDef {
    /// Backend (service) name, unique within the route.
    pub name: String,
    /// Extra metric labels, exported with a `dst_` prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Endpoint addresses (`ip:port`); empty = requests to it get a 503.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// Per-endpoint metric labels (keys: addresses of `endpoints`), as on [`Backend`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_labels: EndpointLabels,
    /// Set when the reference this backend comes from is invalid (an HTTPRoute `backendRef` to
    /// a Service that does not exist or that no ReferenceGrant lets the route reach), to the
    /// Gateway API `ResolvedRefs` reason (`BackendNotFound`, `RefNotPermitted`). Gateway API
    /// wants the share of requests such a backend would get answered 500, which says "the
    /// configuration is wrong", where a valid backend without ready endpoints gets 503
    /// ("nothing is up yet"). An invalid backend has no endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// Traffic mirroring (shadowing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    /// Name of a backend of this route (route-level definition or any rule backend).
    pub backend: String,
    /// Share of the rule's requests copied, 0..=100 (default 100).
    #[serde(default = "default_percent")]
    pub percent: u32,
    /// A finer share than whole percents (Gateway API's `fraction`, e.g. 1/1000); when set it
    /// takes the place of `percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

impl Mirror {
    /// The share of requests copied, as (numerator, denominator).
    pub fn share(&self) -> (u32, u32) {
        match &self.fraction {
            Some(f) => (f.numerator, f.denominator),
            None => (self.percent, 100),
        }
    }
}

/// `numerator / denominator` of the requests; `0 <= numerator <= denominator`, `denominator > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fraction {
    /// Requests copied per `denominator` requests.
    pub numerator: u32,
    /// The whole (default 100).
    #[serde(default = "default_percent")]
    pub denominator: u32,
}

fn default_percent() -> u32 {
    100
}

/// Response header changes (Gateway API's `ResponseHeaderModifier`), applied in this order:
/// `remove`, then `set`, then `add`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseHeaders {
    /// Headers set on the response, replacing values of the same name.
    #[serde(default)]
    pub set: Vec<HeaderValue>,
    /// Headers added to the response, after any values of the same name the upstream sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Names of headers removed from the response (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl ResponseHeaders {
    /// True when nothing is changed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Request header changes (Gateway API's `RequestHeaderModifier`): the same three lists as
/// [`ResponseHeaders`], applied in the same order to the request a rule sends upstream.
pub type RequestHeaders = ResponseHeaders;

/// Why a route may not change request header `name`: the framing and hop-by-hop headers of
/// [`framing_header_problem`], and `host`, which chose the route and names the authority the
/// upstream connection was made for (HTTP/2 carries it as `:authority`, not as a header).
pub fn request_header_problem(name: &str) -> Option<String> {
    if name.eq_ignore_ascii_case("host") {
        return Some(format!(
            "{name:?} is the authority the route was chosen by; it cannot be changed by a header filter"
        ));
    }
    framing_header_problem(name)
}

/// Headers a route may not change on a response (case-insensitive): they frame the message
/// (`content-length`, `transfer-encoding`, `trailer`) or describe one hop (`connection` and the
/// headers it governs), so the proxy writes them itself for each connection. Letting a route
/// set or add one would break the framing the client sees.
///
/// Returns why, for an error message; None when a route may change `name`.
pub fn framing_header_problem(name: &str) -> Option<String> {
    const NAMES: [&str; 8] = [
        "content-length",
        "transfer-encoding",
        "trailer",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name)).then(|| {
        format!("{name:?} frames the message or describes one hop; the proxy sets it itself")
    })
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    /// Header name (case-insensitive).
    pub name: String,
    /// Header value (visible ASCII and spaces/tabs).
    pub value: String,
}

/// A backend with its definition resolved, as returned by [`Route::resolve_backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedBackend<'a> {
    /// Backend name.
    pub name: &'a str,
    /// Metric labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Endpoints (may be empty).
    pub endpoints: &'a [SocketAddr],
    /// Per-endpoint metric labels.
    pub endpoint_labels: &'a EndpointLabels,
    /// Why the backend's reference is invalid (see [`BackendDef::invalid`]); None when valid.
    pub invalid: Option<&'a str>,
}

impl Route {
    /// Finds the definition of backend `name` in this route: a route-level definition first, then
    /// any self-contained rule backend. None when the name is not defined (see `validate`).
    pub fn resolve_backend(&self, name: &str) -> Option<ResolvedBackend<'_>> {
        if let Some(def) = self.backends.iter().find(|b| b.name == name) {
            return Some(ResolvedBackend {
                name: &def.name,
                labels: &def.labels,
                endpoints: &def.endpoints,
                endpoint_labels: &def.endpoint_labels,
                invalid: def.invalid.as_deref(),
            });
        }
        self.rules
            .iter()
            .flat_map(|r| r.backends.iter())
            .find_map(|b| match &b.endpoints {
                Some(eps) if b.name == name => Some(ResolvedBackend {
                    name: &b.name,
                    labels: &b.labels,
                    endpoints: eps,
                    endpoint_labels: &b.endpoint_labels,
                    invalid: None,
                }),
                _ => None,
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Authority

/// Why an authority string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid authority {input:?}: {reason} (expected `host` or `host:port`)")]
pub struct AuthorityError {
    input: String,
    reason: &'static str,
}

impl FromStr for Authority {
    type Err = AuthorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| AuthorityError {
            input: s.to_string(),
            reason,
        };
        let s_trim = s.trim();
        if s_trim.is_empty() {
            return Err(err("empty"));
        }
        let (host, port) = if let Some(rest) = s_trim.strip_prefix('[') {
            // [v6] or [v6]:port
            let end = rest.find(']').ok_or_else(|| err("unclosed `[`"))?;
            let host = &rest[..end];
            let after = &rest[end + 1..];
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| err("junk after `]`"))?),
            };
            (host, port)
        } else {
            match s_trim.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s_trim, None),
            }
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        let bracketed = s_trim.starts_with('[');
        if !host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') || (bracketed && b == b':')
        }) {
            return Err(err(
                "host has characters outside letters, digits, `-`, `.`, `_`",
            ));
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| err("port is not a number from 0 to 65535"))?,
            ),
        };
        // An IPv6 literal has many spellings (`0:0::1`, `::1`, `::0001`): kept in its one
        // canonical form (RFC 5952), which is how the proxy compares a request's.
        let host = if bracketed {
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| err("not an IPv6 address inside `[` `]`"))?
                .to_string()
        } else {
            host.to_ascii_lowercase()
        };
        Ok(Authority { host, port })
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = self.host.contains(':');
        match (v6, self.port) {
            (false, None) => f.write_str(&self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
        }
    }
}

impl Serialize for Authority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Authority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Durations

/// Durations in route tables read as every Serin duration does: Go's grammar (`10s`, `500ms`,
/// `1.5s`, `1m30s`, `2h`), one parser for the workspace.
pub use serin_core::duration::{DURATION_FORM, DurationError, parse_duration};

/// Formats a duration the way [`parse_duration`] reads it (`10s`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

mod duration_opt {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

/// One problem found by [`RouteTable::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Path of the offending field, e.g. `routes[0].rules[1].matches[0].headers[0].value`.
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// All problems found in a table (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route table: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<ValidationError>);

struct Checker {
    errors: Vec<ValidationError>,
}

impl Checker {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn regex(&mut self, field: &str, pattern: &str) {
        // Patterns are matched against the whole value, so compile them the way the proxy will.
        if let Err(e) = regex::Regex::new(&format!("^(?:{pattern})$")) {
            let msg = e.to_string();
            // regex's messages are multi-line; keep the last line, which says what is wrong.
            let last = msg.lines().last().unwrap_or("invalid");
            let last = last.strip_prefix("error: ").unwrap_or(last);
            self.push(
                field,
                format!("regular expression {pattern:?} does not compile: {last}"),
            );
        }
    }

    fn header_name(&mut self, field: &str, name: &str) {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.push(
                field,
                format!(
                    "{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
                ),
            );
        }
    }

    fn not_forbidden(&mut self, field: &str, name: &str, forbidden: fn(&str) -> Option<String>) {
        if let Some(why) = forbidden(name) {
            self.push(field, why);
        }
    }

    fn endpoint_labels(&mut self, field: &str, labels: &EndpointLabels, endpoints: &[SocketAddr]) {
        for (addr, l) in labels {
            if !endpoints.contains(addr) {
                self.push(
                    format!("{field}.{addr}"),
                    "not one of the backend's endpoints; label only listed endpoints",
                );
            }
            self.labels(&format!("{field}.{addr}"), l);
        }
    }

    fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
        for key in labels.keys() {
            if !is_label_name(key) {
                self.push(
                    format!("{field}.{key}"),
                    "label names must match [a-zA-Z_][a-zA-Z0-9_]* (exported as dst_<name>)",
                );
            }
        }
    }
}

/// True for a valid Prometheus label name.
pub fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl RouteTable {
    /// Checks what decoding cannot: regexes compile, header names and methods are valid, names are
    /// unique, backend references resolve, every rule can route, percents are in range. Returns
    /// every problem found, each naming its field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker { errors: Vec::new() };
        let mut authorities = BTreeSet::new();
        for (ri, route) in self.routes.iter().enumerate() {
            let rf = format!("routes[{ri}]");
            if !authorities.insert(&route.authority) {
                c.push(
                    format!("{rf}.authority"),
                    format!("duplicate authority {:?}", route.authority.to_string()),
                );
            }
            self.validate_route(&mut c, &rf, route);
        }
        if c.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(c.errors))
        }
    }

    fn validate_route(&self, c: &mut Checker, rf: &str, route: &Route) {
        // Names defined by the route: route-level definitions and self-contained rule backends.
        type Definition<'r> = (
            &'r BTreeMap<String, String>,
            &'r [SocketAddr],
            &'r EndpointLabels,
        );
        let mut defined: BTreeMap<&str, Definition<'_>> = BTreeMap::new();
        for (bi, def) in route.backends.iter().enumerate() {
            let bf = format!("{rf}.backends[{bi}]");
            if def.name.is_empty() {
                c.push(format!("{bf}.name"), "must not be empty");
            }
            if defined
                .insert(
                    &def.name,
                    (&def.labels, &def.endpoints, &def.endpoint_labels),
                )
                .is_some()
            {
                c.push(
                    format!("{bf}.name"),
                    format!("duplicate backend name {:?}", def.name),
                );
            }
            c.labels(&format!("{bf}.labels"), &def.labels);
            c.endpoint_labels(
                &format!("{bf}.endpointLabels"),
                &def.endpoint_labels,
                &def.endpoints,
            );
            match def.invalid.as_deref() {
                Some("") => c.push(
                    format!("{bf}.invalid"),
                    "must not be empty when set (the reason the reference is invalid, e.g. BackendNotFound)",
                ),
                Some(_) if !def.endpoints.is_empty() => c.push(
                    format!("{bf}.invalid"),
                    "an invalid backend has no endpoints; remove `invalid` or the endpoints",
                ),
                _ => {}
            }
        }
        let shared: BTreeSet<&str> = route.backends.iter().map(|b| b.name.as_str()).collect();
        // First pass: collect inline definitions so references may point forward.
        for (ki, rule) in route.rules.iter().enumerate() {
            for (bi, b) in rule.backends.iter().enumerate() {
                let Some(eps) = &b.endpoints else { continue };
                let bf = format!("{rf}.rules[{ki}].backends[{bi}]");
                if shared.contains(b.name.as_str()) {
                    c.push(
                        format!("{bf}.endpoints"),
                        format!(
                            "backend {:?} is defined in {rf}.backends; name it without endpoints/labels or rename it",
                            b.name
                        ),
                    );
                    continue;
                }
                match defined.get(b.name.as_str()) {
                    Some((labels, endpoints, endpoint_labels))
                        if *labels != &b.labels
                            || *endpoints != &eps[..]
                            || *endpoint_labels != &b.endpoint_labels =>
                    {
                        c.push(
                            format!("{bf}.name"),
                            format!(
                                "backend {:?} is defined again with different endpoints or labels; one name, one definition",
                                b.name
                            ),
                        );
                    }
                    Some(_) => {}
                    None => {
                        defined.insert(&b.name, (&b.labels, eps, &b.endpoint_labels));
                    }
                }
            }
        }
        if route.rules.is_empty() {
            c.push(format!("{rf}.rules"), "must list at least one rule");
        }
        for (ki, rule) in route.rules.iter().enumerate() {
            let kf = format!("{rf}.rules[{ki}]");
            for (mi, m) in rule.matches.iter().enumerate() {
                validate_match(c, &format!("{kf}.matches[{mi}]"), m);
            }
            if let Some(r) = &rule.redirect {
                validate_redirect(c, &format!("{kf}.redirect"), r);
                if r.path.as_ref().map(|p| p.kind) == Some(PathChangeType::ReplacePrefixMatch)
                    && !rule.matches.iter().all(|m| {
                        m.path
                            .as_ref()
                            .is_none_or(|p| p.kind == PathMatchType::PathPrefix)
                    })
                {
                    c.push(
                        format!("{kf}.redirect.path"),
                        "replacePrefixMatch needs every match of the rule to be a PathPrefix match (it replaces the prefix matched)",
                    );
                }
                if !rule.backends.is_empty() {
                    c.push(
                        format!("{kf}.backends"),
                        "a redirect rule answers the request itself; leave backends empty",
                    );
                }
                if rule.mirror.is_some() {
                    c.push(
                        format!("{kf}.mirror"),
                        "a redirect rule sends nothing upstream, so nothing can be mirrored; remove the mirror",
                    );
                }
            } else if rule.backends.is_empty() {
                c.push(format!("{kf}.backends"), "must list at least one backend");
            } else if rule.backends.iter().all(|b| b.weight == 0) {
                c.push(
                    format!("{kf}.backends"),
                    "all weights are 0, so no request could be routed; give at least one backend a weight above 0",
                );
            }
            let mut names = BTreeSet::new();
            for (bi, b) in rule.backends.iter().enumerate() {
                let bf = format!("{kf}.backends[{bi}]");
                if b.name.is_empty() {
                    c.push(format!("{bf}.name"), "must not be empty");
                }
                if !names.insert(&b.name) {
                    c.push(
                        format!("{bf}.name"),
                        format!("duplicate backend name {:?} in this rule", b.name),
                    );
                }
                c.labels(&format!("{bf}.labels"), &b.labels);
                validate_header_changes(
                    c,
                    &format!("{bf}.responseHeaders"),
                    &b.response_headers,
                    framing_header_problem,
                );
                if let Some(eps) = &b.endpoints {
                    c.endpoint_labels(&format!("{bf}.endpointLabels"), &b.endpoint_labels, eps);
                }
                if b.endpoints.is_none() {
                    if !b.endpoint_labels.is_empty() {
                        c.push(
                            format!("{bf}.endpointLabels"),
                            "endpoint labels without endpoints; give endpoints too, or move them to the route-level definition",
                        );
                    }
                    if !b.labels.is_empty() {
                        c.push(
                            format!("{bf}.labels"),
                            "labels without endpoints; give endpoints too, or move the labels to the route-level definition",
                        );
                    }
                    if !defined.contains_key(b.name.as_str()) {
                        c.push(
                            format!("{bf}.name"),
                            format!(
                                "unknown backend {:?}: give it endpoints, or define it in {rf}.backends",
                                b.name
                            ),
                        );
                    }
                }
            }
            if let Some(m) = &rule.mirror {
                if !defined.contains_key(m.backend.as_str()) {
                    c.push(
                        format!("{kf}.mirror.backend"),
                        format!(
                            "unknown backend {:?}: define it in {rf}.backends or in a rule",
                            m.backend
                        ),
                    );
                }
                if m.percent > 100 {
                    c.push(
                        format!("{kf}.mirror.percent"),
                        format!("{} is out of range; accepted: 0 to 100", m.percent),
                    );
                }
                if let Some(f) = &m.fraction
                    && (f.denominator == 0 || f.numerator > f.denominator)
                {
                    c.push(
                        format!("{kf}.mirror.fraction"),
                        format!(
                            "{}/{} is not a share; accepted: 0 <= numerator <= denominator, denominator above 0",
                            f.numerator, f.denominator
                        ),
                    );
                }
            }
            validate_header_changes(
                c,
                &format!("{kf}.responseHeaders"),
                &rule.response_headers,
                framing_header_problem,
            );
            validate_header_changes(
                c,
                &format!("{kf}.requestHeaders"),
                &rule.request_headers,
                request_header_problem,
            );
            if rule.timeout == Some(Duration::ZERO) {
                c.push(
                    format!("{kf}.timeout"),
                    "must be above 0; leave it out for no timeout",
                );
            }
        }
    }
}

fn validate_redirect(c: &mut Checker, field: &str, r: &Redirect) {
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        c.push(
            format!("{field}.scheme"),
            format!("{s:?} is not supported; accepted: http, https"),
        );
    }
    if let Some(h) = &r.hostname
        && let Some(why) = redirect_hostname_problem(h)
    {
        c.push(format!("{field}.hostname"), why);
    }
    if r.port == Some(0) {
        c.push(
            format!("{field}.port"),
            "0 is out of range; accepted: 1 to 65535",
        );
    }
    if let Some(p) = &r.path
        && let Some(why) =
            path_change_problem(&p.value, p.kind == PathChangeType::ReplacePrefixMatch)
    {
        c.push(format!("{field}.path.value"), why);
    }
    if !REDIRECT_STATUS_CODES.contains(&r.status_code) {
        c.push(
            format!("{field}.statusCode"),
            format!("{} is not supported; accepted: 301, 302", r.status_code),
        );
    }
}

/// Checks one list of header changes; `forbidden` says why a name may not be changed.
fn validate_header_changes(
    c: &mut Checker,
    field: &str,
    rh: &ResponseHeaders,
    forbidden: fn(&str) -> Option<String>,
) {
    for (list, headers) in [("set", &rh.set), ("add", &rh.add)] {
        for (hi, h) in headers.iter().enumerate() {
            let hf = format!("{field}.{list}[{hi}]");
            c.header_name(&format!("{hf}.name"), &h.name);
            c.not_forbidden(&format!("{hf}.name"), &h.name, forbidden);
            if http::HeaderValue::from_str(&h.value).is_err() {
                c.push(
                    format!("{hf}.value"),
                    "not a valid header value (visible ASCII, spaces and tabs)",
                );
            }
        }
    }
    for (hi, name) in rh.remove.iter().enumerate() {
        let hf = format!("{field}.remove[{hi}]");
        c.header_name(&hf, name);
        c.not_forbidden(&hf, name, forbidden);
    }
}

fn validate_match(c: &mut Checker, mf: &str, m: &Match) {
    if let Some(p) = &m.path {
        match p.kind {
            PathMatchType::RegularExpression => c.regex(&format!("{mf}.path.value"), &p.value),
            PathMatchType::Exact | PathMatchType::PathPrefix => {
                if !p.value.starts_with('/') {
                    c.push(format!("{mf}.path.value"), "must start with `/`");
                }
            }
        }
    }
    if let Some(method) = &m.method
        && (method.is_empty() || http::Method::from_bytes(method.as_bytes()).is_err())
    {
        c.push(
            format!("{mf}.method"),
            format!("{method:?} is not a valid HTTP method (e.g. GET, POST)"),
        );
    }
    for (kind, list) in [
        ("headers", &m.headers),
        ("queryParams", &m.query_params),
        ("cookies", &m.cookies),
    ] {
        for (i, v) in list.iter().enumerate() {
            let vf = format!("{mf}.{kind}[{i}]");
            if v.name.is_empty() {
                c.push(format!("{vf}.name"), "must not be empty");
            } else if kind == "headers" {
                c.header_name(&format!("{vf}.name"), &v.name);
            }
            if v.kind == ValueMatchType::RegularExpression {
                c.regex(&format!("{vf}.value"), &v.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn split_table() -> RouteTable {
        RouteTable {
            version: 1,
            routes: vec![Route {
                authority: "podinfo".parse().expect("authority"),
                backends: vec![],
                rules: vec![Rule {
                    backends: vec![
                        Backend {
                            name: "podinfo-primary".into(),
                            weight: 90,
                            labels: BTreeMap::new(),
                            endpoints: Some(vec![ep("127.0.0.1:19001")]),
                            endpoint_labels: Default::default(),
                            response_headers: Default::default(),
                        },
                        Backend {
                            name: "podinfo-canary".into(),
                            weight: 10,
                            labels: BTreeMap::new(),
                            endpoints: Some(vec![ep("127.0.0.1:19002")]),
                            endpoint_labels: Default::default(),
                            response_headers: Default::default(),
                        },
                    ],
                    ..Rule::default()
                }],
            }],
        }
    }

    #[test]
    fn a_simple_split_is_valid_and_round_trips_through_json() {
        let t = split_table();
        t.validate().expect("valid");
        let json = serde_json::to_string(&t).expect("serialize");
        let back: RouteTable = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, t);
    }

    #[test]
    fn authorities_parse_with_and_without_port() {
        let a: Authority = "PodInfo.test:8080".parse().expect("parse");
        assert_eq!(a.host, "podinfo.test");
        assert_eq!(a.port, Some(8080));
        assert_eq!(a.to_string(), "podinfo.test:8080");
        let v6: Authority = "[::1]:80".parse().expect("parse");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:80");
        let spelled: Authority = "[0:0:0:0:0:0:0:1]:80".parse().expect("parse");
        assert_eq!(
            spelled, v6,
            "IPv6 literals are kept in their canonical form"
        );
        assert_eq!(
            "[2001:DB8::0:1]".parse::<Authority>().expect("parse").host,
            "2001:db8::1"
        );
        assert!("[not:v6]".parse::<Authority>().is_err());
        assert!("podinfo:http".parse::<Authority>().is_err());
        assert!("".parse::<Authority>().is_err());
        assert!("a b".parse::<Authority>().is_err());
    }

    #[test]
    fn durations_parse_in_the_documented_forms() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "10", "s", "10x", "1e400s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
    }

    #[test]
    fn validation_names_the_field_of_each_problem() {
        let mut t = split_table();
        t.routes.push(t.routes[0].clone());
        let rule = &mut t.routes[0].rules[0];
        rule.matches.push(Match {
            headers: vec![ValueMatch {
                kind: ValueMatchType::RegularExpression,
                name: "x-user".into(),
                value: "(unclosed".into(),
            }],
            ..Match::default()
        });
        rule.backends.push(rule.backends[0].clone());
        rule.mirror = Some(Mirror {
            fraction: Some(Fraction {
                numerator: 3,
                denominator: 2,
            }),
            backend: "nowhere".into(),
            percent: 150,
        });
        let errs = t.validate().expect_err("invalid").0;
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "routes[0].rules[0].matches[0].headers[0].value",
                "routes[0].rules[0].backends[2].name",
                "routes[0].rules[0].mirror.backend",
                "routes[0].rules[0].mirror.percent",
                "routes[0].rules[0].mirror.fraction",
                "routes[1].authority",
            ]
        );
        assert!(errs[0].message.contains("does not compile"));
        assert!(errs[2].message.contains("unknown backend \"nowhere\""));
    }

    #[test]
    fn references_resolve_to_route_level_definitions() {
        let mut t = split_table();
        let route = &mut t.routes[0];
        route.backends.push(BackendDef {
            name: "shadow".into(),
            labels: BTreeMap::from([("track".into(), "shadow".into())]),
            endpoints: vec![ep("127.0.0.1:19003")],
            endpoint_labels: Default::default(),
            invalid: None,
        });
        route.rules[0].mirror = Some(Mirror {
            fraction: None,
            backend: "shadow".into(),
            percent: 5,
        });
        t.validate().expect("valid");
        let r = t.routes[0].resolve_backend("shadow").expect("defined");
        assert_eq!(r.endpoints, &[ep("127.0.0.1:19003")]);
        assert!(t.routes[0].resolve_backend("podinfo-canary").is_some());
        assert!(t.routes[0].resolve_backend("nope").is_none());
    }

    #[test]
    fn an_invalid_backend_names_its_reason_and_has_no_endpoints() {
        let def = |name: &str, invalid: &str, endpoints: Vec<SocketAddr>| BackendDef {
            name: name.into(),
            labels: BTreeMap::new(),
            endpoints,
            endpoint_labels: Default::default(),
            invalid: Some(invalid.into()),
        };
        let mut t = split_table();
        t.routes[0]
            .backends
            .push(def("gone", "BackendNotFound", vec![]));
        t.validate().expect("valid");
        assert_eq!(
            t.routes[0].resolve_backend("gone").and_then(|b| b.invalid),
            Some("BackendNotFound")
        );
        assert_eq!(
            t.routes[0]
                .resolve_backend("podinfo-primary")
                .map(|b| b.invalid),
            Some(None)
        );
        let json = serde_json::to_string(&t).expect("serialises");
        assert!(json.contains(r#""invalid":"BackendNotFound""#), "{json}");
        assert_eq!(json.matches("invalid").count(), 1, "{json}");
        let back: RouteTable = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, t);

        t.routes[0].backends[0].invalid = Some(String::new());
        t.routes[0]
            .backends
            .push(def("denied", "RefNotPermitted", vec![ep("127.0.0.1:1")]));
        let errs = t.validate().expect_err("invalid").0;
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "routes[0].backends[0].invalid",
                "routes[0].backends[1].invalid"
            ]
        );
        assert!(errs[0].message.contains("must not be empty"), "{}", errs[0]);
        assert!(errs[1].message.contains("has no endpoints"), "{}", errs[1]);
    }

    #[test]
    fn a_rule_that_can_route_nothing_is_rejected() {
        let mut t = split_table();
        for b in &mut t.routes[0].rules[0].backends {
            b.weight = 0;
        }
        let errs = t.validate().expect_err("invalid").0;
        assert_eq!(errs[0].field, "routes[0].rules[0].backends");
    }

    #[test]
    fn conflicting_definitions_of_one_name_are_rejected() {
        let mut t = split_table();
        let mut other = t.routes[0].rules[0].clone();
        other.backends[0].endpoints = Some(vec![ep("127.0.0.1:1")]);
        t.routes[0].rules.insert(0, other);
        let errs = t.validate().expect_err("invalid").0;
        assert_eq!(errs[0].field, "routes[0].rules[1].backends[0].name");
    }

    fn redirect_rule(redirect: Redirect) -> Rule {
        Rule {
            redirect: Some(redirect),
            ..Rule::default()
        }
    }

    #[test]
    fn a_redirect_rule_needs_no_backend_and_round_trips_with_301_as_default() {
        let yaml = "routes:\n  - authority: web\n    rules:\n      - redirect: {scheme: https, hostname: example.org, port: 8443}\n        backends: []\n";
        let t: RouteTable = serde_norway::from_str(yaml).expect("parses");
        t.validate().expect("valid");
        let r = t.routes[0].rules[0].redirect.as_ref().expect("a redirect");
        assert_eq!(
            (
                r.scheme.as_deref(),
                r.hostname.as_deref(),
                r.port,
                r.status_code
            ),
            (Some("https"), Some("example.org"), Some(8443), 301)
        );
        let json = serde_json::to_string(&t).expect("serialises");
        assert!(json.contains(r#""statusCode":301"#), "{json}");
        assert_eq!(
            serde_json::from_str::<RouteTable>(&json).expect("parses"),
            t
        );
    }

    #[test]
    fn bad_redirects_are_refused_naming_each_field() {
        let mut t = split_table();
        let mut rule = redirect_rule(Redirect {
            scheme: Some("ftp".into()),
            hostname: Some(String::new()),
            port: Some(0),
            path: Some(PathChange {
                kind: PathChangeType::ReplaceFullPath,
                value: "elsewhere".into(),
            }),
            status_code: 307,
        });
        rule.backends = t.routes[0].rules[0].backends.clone();
        rule.mirror = Some(Mirror {
            backend: "podinfo-canary".into(),
            percent: 100,
            fraction: None,
        });
        t.routes[0].rules.insert(0, rule);
        let errs = t.validate().expect_err("invalid").0;
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        let f = "routes[0].rules[0]";
        assert_eq!(
            fields,
            [
                format!("{f}.redirect.scheme"),
                format!("{f}.redirect.hostname"),
                format!("{f}.redirect.port"),
                format!("{f}.redirect.path.value"),
                format!("{f}.redirect.statusCode"),
                format!("{f}.backends"),
                format!("{f}.mirror"),
            ]
        );
        assert!(
            errs[4].message.contains("accepted: 301, 302"),
            "{}",
            errs[4]
        );
        for host in ["*.example.org", "Example.org", "example.org:80", "a..b"] {
            assert!(redirect_hostname_problem(host).is_some(), "{host}");
        }
        assert_eq!(redirect_hostname_problem("www.example-1.org"), None);
    }

    #[test]
    fn a_prefix_replacement_follows_gateway_apis_trailing_slash_rules() {
        // (request path, prefix match, replacement, new path), as the HTTPPathModifier docs
        // list them.
        let cases = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
            ("/foo/bar", "/", "/xyz", "/xyz/foo/bar"),
        ];
        for (path, matched, with, want) in cases {
            let change = PathChange {
                kind: PathChangeType::ReplacePrefixMatch,
                value: with.into(),
            };
            assert_eq!(change.apply(path, matched), want, "{path} {matched} {with}");
        }
        let full = PathChange {
            kind: PathChangeType::ReplaceFullPath,
            value: "/elsewhere".into(),
        };
        assert_eq!(full.apply("/foo/bar", "/foo"), "/elsewhere");
    }

    #[test]
    fn a_prefix_replacement_needs_prefix_matches_only() {
        let yaml = "routes:\n  - authority: web\n    rules:\n      - matches: [{path: {type: Exact, value: /a}}, {path: {value: /b}}]\n        redirect: {path: {type: ReplacePrefixMatch, value: /c}}\n        backends: []\n";
        let t: RouteTable = serde_norway::from_str(yaml).expect("parses");
        let errs = t.validate().expect_err("invalid").0;
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["routes[0].rules[0].redirect.path"]);
        let ok = yaml.replace("{type: Exact, value: /a}", "{value: /a}");
        let t: RouteTable = serde_norway::from_str(&ok).expect("parses");
        t.validate().expect("valid");
        assert!(
            path_change_problem("/a b", false).is_some(),
            "a space is no URL path"
        );
        assert_eq!(path_change_problem("", true), None);
        assert!(path_change_problem("", false).is_some());
    }
}

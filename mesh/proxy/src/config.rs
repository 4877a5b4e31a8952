//! The static YAML configuration file (`serin-proxy --config FILE`).
//!
//! Listener and identity settings are the proxy's own; the `routes:` section is exactly the
//! route-table format of `serin-mesh-api` (what the control plane streams). See the crate
//! README for the format.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serin_mesh_api::table::{Route, RouteTable, is_label_name, parse_duration};

/// Settings of a running proxy (everything but the route table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Outbound listener (the app sends requests here).
    pub outbound: SocketAddr,
    /// Optional inbound listener in front of the local app.
    pub inbound: Option<InboundConfig>,
    /// Admin listener (`/metrics`, `/ready`, `/live`, `/routes`); None = off.
    pub admin: Option<SocketAddr>,
    /// Identity labels put on every metric (e.g. namespace, deployment, pod).
    pub labels: BTreeMap<String, String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long connecting to an endpoint may take before a 502.
    pub connect_timeout: Duration,
    /// Most client connections the outbound listener keeps open; above it, it stops
    /// accepting (new connections wait in the kernel's backlog) until one closes.
    pub outbound_max_connections: usize,
    /// An h2c client connection without open streams for this long is closed (GOAWAY).
    pub h2_idle_timeout: Duration,
    /// Longest pause inside a body, either way: an upstream that stops mid-body or sends no
    /// response head (on routes without `timeout`), a client that stops sending its request
    /// body or stops reading the response.
    pub body_idle_timeout: Duration,
    /// How long an endpoint's series (those with `dst_pod`) stay on `/metrics` after no route
    /// table or request holds the endpoint any more: long enough that a dashboard still shows
    /// why a rolled-back canary's pods failed, short enough that pods that come and go do not
    /// pile up. Zero drops them at the next table swap.
    pub metrics_retain_idle: Duration,
    /// Transparent mode (connections redirected by `serin-proxy init`'s rules); None = off.
    pub transparent: Option<TransparentConfig>,
    /// Most connections the admin listener keeps open (its IPv6 twin included); above it, it
    /// stops accepting until one closes. In a pod the admin port is reachable beyond the pod
    /// (for Prometheus and the kubelet), so without a limit anyone who can reach it could hold
    /// connections until the proxy runs out of memory or file descriptors.
    pub admin_max_connections: usize,
    /// An admin connection that moves no byte for this long is closed (one that never sends
    /// a request included).
    pub admin_idle_timeout: Duration,
}

/// Default `admin_max_connections`: far above what Prometheus and the kubelet's probes use.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 100;
/// Default `admin_idle_timeout`: longer than a scrape interval's keep-alive gap is not needed;
/// a closed keep-alive connection only costs the next scrape a connect.
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Transparent mode: the outbound listener reads each connection's original destination and
/// routes it (or forwards it byte for byte); an optional capture listener takes redirected
/// inbound connections and hands them to the app at `127.0.0.1:<original port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransparentConfig {
    /// The inbound capture listener (the REDIRECT target of inbound TCP); None = off.
    pub inbound: Option<SocketAddr>,
    /// How long the proxy waits for a client's first bytes before it treats the connection
    /// as opaque TCP (protocols where the server speaks first, e.g. MySQL, SMTP).
    pub detect_timeout: Duration,
    /// Most connections the capture inbound listener keeps open.
    pub inbound_max_connections: usize,
    /// The IPv6 twins of the outbound and inbound listeners (`[::1]` for a `127.0.0.1`
    /// listener, `[::]` for a `0.0.0.0` one, same port), where `serin-proxy init --ipv6`'s
    /// ip6tables rules redirect IPv6 connections: `Auto` binds them when the network namespace
    /// has IPv6, `On` fails to start without them, `Off` binds none.
    pub ipv6: crate::capture::Ipv6Mode,
}

impl Default for TransparentConfig {
    fn default() -> Self {
        TransparentConfig {
            inbound: Some(SocketAddr::from(([0, 0, 0, 0], 4143))),
            detect_timeout: Duration::from_secs(1),
            inbound_max_connections: DEFAULT_MAX_CONNECTIONS,
            ipv6: crate::capture::Ipv6Mode::Auto,
        }
    }
}

/// Default `maxConnections` per listener: enough for any app a sidecar serves, and a bound on
/// what a connection flood can take from a memory-limited pod.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Linkerd's proxy keeps idle metric series for 10 minutes by default; the same here, so
/// dashboards built for Linkerd show a gone pod's last minutes.
pub const DEFAULT_METRICS_RETAIN_IDLE: Duration = Duration::from_secs(600);

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            outbound: SocketAddr::from(([127, 0, 0, 1], 4140)),
            inbound: None,
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 4191))),
            labels: BTreeMap::new(),
            shutdown_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            outbound_max_connections: DEFAULT_MAX_CONNECTIONS,
            h2_idle_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(60),
            metrics_retain_idle: DEFAULT_METRICS_RETAIN_IDLE,
            transparent: None,
            admin_max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            admin_idle_timeout: DEFAULT_ADMIN_IDLE_TIMEOUT,
        }
    }
}

/// The inbound listener and where it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The local app.
    pub forward: SocketAddr,
    /// Time allowed until response headers; None = no timeout.
    pub timeout: Option<Duration>,
    /// Most client connections the inbound listener keeps open (see
    /// [`ProxyConfig::outbound_max_connections`]).
    pub max_connections: usize,
}

/// A parsed configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileConfig {
    /// Proxy settings.
    pub proxy: ProxyConfig,
    /// The route table (its `version` is the file's `version:` if given, else 0).
    pub table: RouteTable,
    /// The file has a `routes:` key (`routes: []` included). A reload needs one: a file
    /// without it is more likely cut short than meant to drop every route.
    pub routes_given: bool,
}

/// Why a configuration file was rejected. Every variant names the key and, where it can be
/// found, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not decode (syntax, unknown key, wrong type, bad address or duration).
    #[error("{path}: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// serde_norway's message: key path, problem, line and column.
        message: String,
        /// Line (1-based), when known.
        line: Option<usize>,
    },
    /// The file is empty or holds only comments: what `cat > file` leaves for a moment.
    #[error(
        "{path}: the file is empty (still being written?); write `routes: []` for a table with no routes"
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The YAML decodes but the content is invalid.
    #[error("{path}: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each problem with its key and line.
        problems: Vec<Problem>,
    },
}

/// One content problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `routes[0].rules[1].matches[0].headers[0].value`.
    pub key: String,
    /// Line (1-based) where the key is, when found.
    pub line: Option<usize>,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{} (line {l}): {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    version: u64,
    outbound: Option<RawOutbound>,
    inbound: Option<RawInbound>,
    admin: Option<RawListener>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    shutdown_timeout: Option<String>,
    connect_timeout: Option<String>,
    h2_idle_timeout: Option<String>,
    body_idle_timeout: Option<String>,
    metrics_retain_idle: Option<String>,
    routes: Option<Vec<Route>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawListener {
    listen: SocketAddr,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawOutbound {
    listen: SocketAddr,
    max_connections: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawInbound {
    listen: SocketAddr,
    forward: SocketAddr,
    timeout: Option<String>,
    max_connections: Option<usize>,
}

/// Label names the proxy puts on its series itself (and `le`, which histograms use). An
/// identity label with one of these names would give a series the same label twice, which
/// Prometheus refuses, failing the whole scrape.
pub const RESERVED_LABELS: &[&str] = &[
    "direction",
    "authority",
    "dst",
    "rt_route",
    "tls",
    "no_tls_reason",
    "status_code",
    "classification",
    "error",
    "grpc_status",
    "peer",
    "errno",
    "listener",
    "result",
    "le",
];

/// Why `name` cannot be an identity label (`labels:`, `--label`), or `None` when it can.
pub fn identity_label_problem(name: &str) -> Option<String> {
    if !is_label_name(name) {
        Some("label names must match [a-zA-Z_][a-zA-Z0-9_]*".into())
    } else if name.starts_with("__") {
        Some("names starting with `__` are reserved by Prometheus".into())
    } else if RESERVED_LABELS.contains(&name) || name.starts_with("dst_") {
        Some(format!(
            "the proxy sets {name:?} itself (reserved: {}, and every dst_* name)",
            RESERVED_LABELS.join(", ")
        ))
    } else {
        None
    }
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &src)
}

/// Parses and checks configuration text (`path` is only used in messages).
pub fn parse(path: &Path, src: &str) -> Result<FileConfig, ConfigError> {
    let blank = src.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---"
    });
    if blank {
        return Err(ConfigError::Empty {
            path: path.to_path_buf(),
        });
    }
    let raw: Raw = serde_norway::from_str(src).map_err(|e| ConfigError::Decode {
        path: path.to_path_buf(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })?;
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| {
        let line = locate(src, &key);
        problems.push(Problem { key, line, message });
    };
    let mut duration = |key: &str, v: &Option<String>| -> Option<Duration> {
        let s = v.as_deref()?;
        match parse_duration(s) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                problem(key.to_string(), "must be above 0".into());
                None
            }
            Err(e) => {
                problem(
                    key.to_string(),
                    format!("{e}; accepted: {}", serin_mesh_api::table::DURATION_FORM),
                );
                None
            }
        }
    };
    let defaults = ProxyConfig::default();
    let shutdown_timeout = duration("shutdownTimeout", &raw.shutdown_timeout);
    let connect_timeout = duration("connectTimeout", &raw.connect_timeout);
    let h2_idle_timeout = duration("h2IdleTimeout", &raw.h2_idle_timeout);
    let body_idle_timeout = duration("bodyIdleTimeout", &raw.body_idle_timeout);
    let inbound = raw.inbound.map(|i| InboundConfig {
        listen: i.listen,
        forward: i.forward,
        timeout: duration("inbound.timeout", &i.timeout),
        max_connections: i.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
    });
    // Zero is meaningful here (drop at the next swap), unlike the timeouts above.
    let metrics_retain_idle = match raw.metrics_retain_idle.as_deref().map(parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            problem(
                "metricsRetainIdle".to_string(),
                format!("{e}; accepted: {}", serin_mesh_api::table::DURATION_FORM),
            );
            None
        }
    };
    let limits = [
        (
            "outbound.maxConnections",
            raw.outbound.as_ref().and_then(|o| o.max_connections),
        ),
        (
            "inbound.maxConnections",
            inbound.as_ref().map(|i| i.max_connections),
        ),
    ];
    for (key, limit) in limits {
        if limit == Some(0) {
            problem(key.to_string(), "must be at least 1".into());
        }
    }
    for k in raw.labels.keys() {
        if let Some(why) = identity_label_problem(k) {
            problem(format!("labels.{k}"), why);
        }
    }
    let routes_given = raw.routes.is_some();
    let table = RouteTable {
        version: raw.version,
        routes: raw.routes.unwrap_or_default(),
    };
    if let Err(errs) = table.validate() {
        for e in errs.0 {
            problem(e.field, e.message);
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        });
    }
    Ok(FileConfig {
        proxy: ProxyConfig {
            outbound: raw
                .outbound
                .as_ref()
                .map_or(defaults.outbound, |l| l.listen),
            outbound_max_connections: raw
                .outbound
                .and_then(|o| o.max_connections)
                .unwrap_or(defaults.outbound_max_connections),
            inbound,
            admin: raw.admin.map(|l| l.listen).or(defaults.admin),
            labels: raw.labels,
            shutdown_timeout: shutdown_timeout.unwrap_or(defaults.shutdown_timeout),
            connect_timeout: connect_timeout.unwrap_or(defaults.connect_timeout),
            h2_idle_timeout: h2_idle_timeout.unwrap_or(defaults.h2_idle_timeout),
            body_idle_timeout: body_idle_timeout.unwrap_or(defaults.body_idle_timeout),
            metrics_retain_idle: metrics_retain_idle.unwrap_or(defaults.metrics_retain_idle),
            transparent: None,
            admin_max_connections: defaults.admin_max_connections,
            admin_idle_timeout: defaults.admin_idle_timeout,
        },
        table,
        routes_given,
    })
}

/// Finds the line (1-based) of a key path like `routes[0].rules[1].timeout` in YAML text.
///
/// serde does not keep positions past decoding, so this walks the text: for each segment it
/// finds the next `key:` at a deeper indentation than the parent, and for an index it counts
/// list items (`- `) at the first item's indentation. It understands the block style people
/// write and flow maps on one line (`- { name: a, weight: 1 }`); when it gets lost it returns
/// the best line found so far, or None.
pub fn locate(src: &str, key_path: &str) -> Option<usize> {
    let lines: Vec<&str> = src.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_content = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    // Cursor: the line where the current node starts and the indentation its children exceed.
    let mut line = 0usize;
    let mut parent_indent: isize = -1;
    let mut found: Option<usize> = None;
    for seg in key_path.split('.') {
        let (name, indices) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        // Find `name:` at or after `line`, deeper than the parent; stop when leaving the parent.
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(line) {
            if !is_content(l) {
                continue;
            }
            let ind = indent(l) as isize;
            if i > line && ind <= parent_indent {
                break;
            }
            let t = l
                .trim_start()
                .trim_start_matches("- ")
                .trim_start_matches('{')
                .trim_start();
            let key_here = t.starts_with(&format!("{name}:"))
                || l.contains(&format!(" {name}:"))
                || l.contains(&format!("{{{name}:"))
                || l.contains(&format!(",{name}:"));
            if key_here {
                hit = Some((i, ind));
                break;
            }
        }
        let (i, ind) = hit?;
        found = Some(i + 1);
        line = i;
        parent_indent = ind;
        // Each index: move to the n-th list item below the key.
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            let n: usize = idx.parse().ok()?;
            // Flow list on the key's own line: stay on that line.
            if lines[line].contains('[') && !lines[line].trim_end().ends_with(':') {
                break;
            }
            let mut item_indent = None;
            let mut count = 0usize;
            let mut item_line = None;
            for (j, l) in lines.iter().enumerate().skip(line + 1) {
                if !is_content(l) {
                    continue;
                }
                let ind2 = indent(l) as isize;
                let is_item = l.trim_start().starts_with('-');
                if ind2 < parent_indent || (ind2 == parent_indent && !is_item) {
                    break;
                }
                if is_item && item_indent.is_none_or(|ii| ii == ind2) {
                    item_indent = Some(ind2);
                    if count == n {
                        item_line = Some(j);
                        break;
                    }
                    count += 1;
                }
            }
            let j = item_line?;
            found = Some(j + 1);
            line = j;
            // Keys of the item are indented past the dash.
            parent_indent = item_indent.unwrap_or(parent_indent);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
outbound:
  listen: 127.0.0.1:1
routes:
  - authority: a
    rules:
      - backends:
          - name: x
            endpoints: [127.0.0.1:2]
  - authority: b
    rules:
      - matches:
          - headers:
              - name: x-a
                value: one
          - headers:
              - { name: x-b, type: RegularExpression, value: \"(\" }
        backends:
          - { name: y, endpoints: [127.0.0.1:3] }
        timeout: 0s
";

    #[test]
    fn locate_finds_nested_keys_and_list_items() {
        assert_eq!(locate(SRC, "routes[0].authority"), Some(4));
        assert_eq!(locate(SRC, "routes[1].authority"), Some(9));
        assert_eq!(
            locate(SRC, "routes[1].rules[0].matches[1].headers[0].value"),
            Some(16)
        );
        assert_eq!(locate(SRC, "routes[1].rules[0].timeout"), Some(19));
        assert_eq!(locate(SRC, "routes[0].rules[0].backends[0].name"), Some(7));
        assert_eq!(locate(SRC, "nothing"), None);
    }

    #[test]
    fn invalid_content_is_reported_with_key_and_line() {
        let err = parse(Path::new("f.yaml"), SRC).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains(
                "routes[1].rules[0].matches[1].headers[0].value (line 16): regular expression"
            ),
            "{text}"
        );
        assert!(
            text.contains("routes[1].rules[0].timeout (line 19): must be above 0"),
            "{text}"
        );
    }

    #[test]
    fn decode_errors_name_the_key_and_line() {
        let src = "routes:\n  - authority: a\n    rules:\n      - backends:\n          - name: x\n            weight: lots\n";
        let err = parse(Path::new("f.yaml"), src).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("routes[0].rules[0].backends[0].weight"),
            "{text}"
        );
        assert!(text.contains("line 6"), "{text}");
        let src = "outbound:\n  listen: 127.0.0.1:1\n  lisen: x\n";
        let text = parse(Path::new("f.yaml"), src)
            .expect_err("invalid")
            .to_string();
        assert!(text.contains("outbound: unknown field `lisen`"), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn max_connections_is_per_listener_and_at_least_one() {
        let src = "outbound:\n  listen: 127.0.0.1:1\n  maxConnections: 50\ninbound:\n  listen: 127.0.0.1:2\n  forward: 127.0.0.1:3\n";
        let cfg = parse(Path::new("f.yaml"), src).expect("valid");
        assert_eq!(cfg.proxy.outbound_max_connections, 50);
        let inbound = cfg.proxy.inbound.expect("inbound");
        assert_eq!(inbound.max_connections, DEFAULT_MAX_CONNECTIONS);
        let src = "outbound:\n  listen: 127.0.0.1:1\n  maxConnections: 0\n";
        let text = parse(Path::new("f.yaml"), src)
            .expect_err("invalid")
            .to_string();
        assert!(
            text.contains("outbound.maxConnections (line 3): must be at least 1"),
            "{text}"
        );
    }

    #[test]
    fn metrics_retain_idle_takes_a_duration_and_zero() {
        let cfg = parse(Path::new("f.yaml"), "labels: {}\n").expect("valid");
        assert_eq!(cfg.proxy.metrics_retain_idle, Duration::from_secs(600));
        let cfg = parse(Path::new("f.yaml"), "metricsRetainIdle: 0s\n").expect("valid");
        assert_eq!(cfg.proxy.metrics_retain_idle, Duration::ZERO);
        let cfg = parse(Path::new("f.yaml"), "metricsRetainIdle: 1.5m\n").expect("valid");
        assert_eq!(cfg.proxy.metrics_retain_idle, Duration::from_secs(90));
        let text = parse(Path::new("f.yaml"), "labels: {}\nmetricsRetainIdle: soon\n")
            .expect_err("invalid")
            .to_string();
        assert!(text.contains("metricsRetainIdle (line 2)"), "{text}");
        assert!(text.contains("accepted:"), "{text}");
    }
}

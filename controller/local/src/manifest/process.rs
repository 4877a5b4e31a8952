//! The `Process` kind: a workload Serin runs itself, its fields, defaults and validation, and
//! `$(VAR)` expansion.

use super::*;

/// The API version of local manifests.
pub const API_VERSION: &str = "serin.dev/v1beta1";

/// A manifest that failed to read or validate, naming the file and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{message}", field_prefix(path))]
pub struct ManifestError {
    /// The file (and document index when the file has several).
    pub file: String,
    /// The field path, e.g. `spec.readinessProbe.httpGet.path`.
    pub path: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// `path: ` for a field path; nothing for `-` or an empty path (an error about a whole file or
/// flag), so a message never reads `file: -: ...`.
fn field_prefix(path: &str) -> String {
    match path {
        "" | "-" => String::new(),
        p => format!("{p}: "),
    }
}

/// Object metadata, the subset local manifests use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Namespace; `default` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// A `Process`: a workload the local platform runs itself as primary and canary processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    /// `serin.dev/v1beta1`.
    pub api_version: String,
    /// `Process`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// What to run.
    pub spec: ProcessSpec,
}

/// What to run and how to tell it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessSpec {
    /// Program to run: a name looked up on `PATH`, or a path (relative paths are relative to the
    /// manifest's directory).
    pub command: String,
    /// Arguments; `$(VAR)` is expanded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables; `$(VAR)` in values is expanded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Working directory (relative to the manifest's directory); the manifest's directory when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The revision this spec represents. When unset, a hash of command, args, env and working
    /// directory stands in for it (as a pod-template hash does for a Deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Environment variable that carries the loopback port Serin picked for the process.
    #[serde(default = "default_port_env")]
    pub port_env: String,
    /// How Serin decides the process is ready; when unset, a TCP connect to the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// How long a stopping process may take to finish its requests after SIGTERM before SIGKILL.
    #[serde(default = "default_grace")]
    pub termination_grace_period_seconds: u64,
}

pub(super) fn default_port_env() -> String {
    "PORT".to_string()
}

pub(super) fn default_grace() -> u64 {
    30
}

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Value; `$(VAR)` is expanded.
    #[serde(default)]
    pub value: String,
}

/// A readiness probe, in the shape of a Kubernetes container probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// The HTTP GET to send; 2xx and 3xx mean ready.
    pub http_get: HttpGet,
    /// Seconds between probes once ready (before the first success Serin probes faster).
    #[serde(default = "one")]
    pub period_seconds: u64,
    /// Seconds a probe may take.
    #[serde(default = "one")]
    pub timeout_seconds: u64,
    /// Consecutive failures that make a ready process not ready.
    #[serde(default = "three")]
    pub failure_threshold: u32,
}

pub(super) fn one() -> u64 {
    1
}

pub(super) fn three() -> u32 {
    3
}

/// The path of an HTTP probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGet {
    /// Request path, starting with `/`.
    pub path: String,
}

impl ProcessSpec {
    /// The revision: the explicit one, or a stable hash of what would run.
    pub fn revision(&self) -> String {
        if let Some(r) = &self.revision {
            return r.clone();
        }
        format!("{:016x}", self.content_hash())
    }

    /// A hash of everything that changes what runs (FNV-1a: stable across builds and runs,
    /// unlike the standard library's hasher).
    pub fn content_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |s: &str| {
            for b in s.bytes().chain(std::iter::once(0xff)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        feed(&self.command);
        for a in &self.args {
            feed(a);
        }
        for e in &self.env {
            feed(&e.name);
            feed(&e.value);
        }
        feed(self.working_dir.as_deref().unwrap_or(""));
        feed(self.revision.as_deref().unwrap_or(""));
        feed(&self.port_env);
        h
    }

    /// The readiness probe's period and timeout.
    pub fn probe_timing(&self) -> (Duration, Duration, u32) {
        match &self.readiness_probe {
            Some(p) => (
                Duration::from_secs(p.period_seconds.max(1)),
                Duration::from_secs(p.timeout_seconds.max(1)),
                p.failure_threshold.max(1),
            ),
            None => (Duration::from_secs(1), Duration::from_secs(1), 3),
        }
    }

    pub(super) fn validate(&self, err: &mut impl FnMut(&str, String)) {
        if self.command.trim().is_empty() {
            err("spec.command", "must name a program to run".into());
        }
        if let Some(r) = &self.revision
            && r.trim().is_empty()
        {
            err("spec.revision", "must not be empty when set".into());
        }
        if !valid_env_name(&self.port_env) {
            err(
                "spec.portEnv",
                format!(
                    "`{}` is not an environment variable name (letters, digits, `_`, not starting with a digit)",
                    self.port_env
                ),
            );
        }
        for (i, e) in self.env.iter().enumerate() {
            if !valid_env_name(&e.name) {
                err(
                    &format!("spec.env[{i}].name"),
                    format!(
                        "`{}` is not an environment variable name (letters, digits, `_`, not starting with a digit)",
                        e.name
                    ),
                );
            }
            if e.name == self.port_env {
                err(
                    &format!("spec.env[{i}].name"),
                    format!(
                        "`{}` is set by Serin to the process's port (spec.portEnv); choose another name",
                        e.name
                    ),
                );
            }
        }
        if let Some(p) = &self.readiness_probe {
            if !p.http_get.path.starts_with('/') {
                err(
                    "spec.readinessProbe.httpGet.path",
                    format!("`{}` must start with `/`", p.http_get.path),
                );
            }
            if p.period_seconds == 0 {
                err(
                    "spec.readinessProbe.periodSeconds",
                    "must be at least 1".into(),
                );
            }
            if p.timeout_seconds == 0 {
                err(
                    "spec.readinessProbe.timeoutSeconds",
                    "must be at least 1".into(),
                );
            }
            if p.failure_threshold == 0 {
                err(
                    "spec.readinessProbe.failureThreshold",
                    "must be at least 1".into(),
                );
            }
        }
        if self.termination_grace_period_seconds > 3600 {
            err(
                "spec.terminationGracePeriodSeconds",
                "must be at most 3600".into(),
            );
        }
    }
}

pub(super) fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is a valid object name (DNS label: lower-case letters, digits, `-`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Expands `$(VAR)` using `lookup`; `$$(VAR)` stays literal `$(VAR)`; unknown variables are left
/// as written (Kubernetes does the same).
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = stripped;
            continue;
        }
        if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
            continue;
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

//! The local platform's manifests: the `Process` kind (a workload Serin runs itself) and the
//! reading of a directory of YAML files holding `Process` and `Canary` documents.
//!
//! ```yaml
//! apiVersion: serin.dev/v1beta1
//! kind: Process
//! metadata:
//!   name: podinfo
//! spec:
//!   command: serin                      # a name on PATH, or a path (relative to the file)
//!   args: ["sample-app", "--addr", "127.0.0.1:$(PORT)", "--app-version", "v1"]
//!   env:
//!     - name: GREETING
//!       value: hello
//!   revision: v1                        # optional; otherwise a hash of command, args, env
//!   portEnv: PORT                       # the variable carrying the port Serin picked
//!   readinessProbe:
//!     httpGet: { path: /readyz }
//!     periodSeconds: 1
//!     timeoutSeconds: 1
//!     failureThreshold: 3
//!   terminationGracePeriodSeconds: 30
//! ```
//!
//! `$(VAR)` in `args` and `env` values is replaced with the variable's value (the port variable,
//! the `env` entries, then the controller's own environment), as Kubernetes does for containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The API version of local manifests.
pub const API_VERSION: &str = "serin.dev/v1beta1";

/// A manifest that failed to read or validate, naming the file and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {path}: {message}")]
pub struct ManifestError {
    /// The file (and document index when the file has several).
    pub file: String,
    /// The field path, e.g. `spec.readinessProbe.httpGet.path`.
    pub path: String,
    /// What is wrong and what is accepted.
    pub message: String,
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

fn default_port_env() -> String {
    "PORT".to_string()
}

fn default_grace() -> u64 {
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

fn one() -> u64 {
    1
}

fn three() -> u32 {
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

    fn validate(&self, err: &mut impl FnMut(&str, String)) {
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

fn valid_env_name(name: &str) -> bool {
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

/// A document found in the manifest directory.
#[derive(Debug, Clone)]
pub enum Document {
    /// A `Process`, with the directory it came from (relative paths resolve against it).
    Process {
        /// The manifest.
        process: Box<Process>,
        /// Its file's directory.
        dir: PathBuf,
    },
    /// A `Canary` (any supported apiVersion), as raw YAML for the api crate to read.
    Canary {
        /// The document.
        value: serde_yaml::Value,
        /// Where it came from (for errors).
        file: String,
    },
}

/// Reads every `*.yaml`/`*.yml` file of `dir` (not recursive, sorted by name), several documents
/// per file allowed. Returns the documents that read well and one error per document that did
/// not, so one bad file never hides the others.
pub fn read_dir(dir: &Path) -> Result<(Vec<Document>, Vec<ManifestError>), std::io::Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
        })
        .collect();
    files.sort();
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ManifestError {
                    file: file.display().to_string(),
                    path: "-".into(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let (d, e) = read_str(
            &text,
            &file.display().to_string(),
            file.parent().unwrap_or(dir),
        );
        docs.extend(d);
        errors.extend(e);
    }
    Ok((docs, errors))
}

/// Reads the documents of one file's text.
pub fn read_str(text: &str, file: &str, dir: &Path) -> (Vec<Document>, Vec<ManifestError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let name = if i == 0 {
            file.to_string()
        } else {
            format!("{file} (document {})", i + 1)
        };
        let value = match serde_yaml::Value::deserialize(de) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(ManifestError {
                    file: name,
                    path: "-".into(),
                    message: format!("not valid YAML: {e}"),
                });
                continue;
            }
        };
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        match kind {
            "Process" => match parse_process(value, &name) {
                Ok(process) => docs.push(Document::Process {
                    process: Box::new(process),
                    dir: dir.to_path_buf(),
                }),
                Err(e) => errors.extend(e),
            },
            "Canary" => docs.push(Document::Canary { value, file: name }),
            // MetricTemplates, AlertProviders and the like are read by whoever needs them.
            "MetricTemplate" | "AlertProvider" => {}
            other => errors.push(ManifestError {
                file: name,
                path: "kind".into(),
                message: format!(
                    "`{other}` is not a local kind; accepted: Canary, Process, MetricTemplate, AlertProvider"
                ),
            }),
        }
    }
    (docs, errors)
}

/// Reads and validates one `Process` document.
pub fn parse_process(value: serde_yaml::Value, file: &str) -> Result<Process, Vec<ManifestError>> {
    let process: Process = serde_yaml::from_value(value).map_err(|e| {
        vec![ManifestError {
            file: file.to_string(),
            path: "spec".into(),
            message: e.to_string(),
        }]
    })?;
    let mut errors = Vec::new();
    let mut err = |path: &str, message: String| {
        errors.push(ManifestError {
            file: file.to_string(),
            path: path.to_string(),
            message,
        })
    };
    if process.api_version != API_VERSION {
        err(
            "apiVersion",
            format!(
                "`{}` is not supported for Process; use {API_VERSION}",
                process.api_version
            ),
        );
    }
    if !valid_name(&process.metadata.name) {
        err(
            "metadata.name",
            format!(
                "`{}` is not a name: 1 to 63 lower-case letters, digits or `-`, not starting or ending with `-`",
                process.metadata.name
            ),
        );
    }
    process.spec.validate(&mut err);
    if errors.is_empty() {
        Ok(process)
    } else {
        Err(errors)
    }
}

/// The variable Serin sets to the revision a process runs (usable as `$(SERIN_REVISION)` in
/// `args` and `env`, like the Kubernetes downward API), so one manifest serves every revision.
pub const REVISION_ENV: &str = "SERIN_REVISION";

/// The environment a process starts with: the port variable, [`REVISION_ENV`], and its `env`
/// entries (expanded; an entry may override `SERIN_REVISION`).
pub fn process_env(spec: &ProcessSpec, port: u16) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(REVISION_ENV.to_string(), spec.revision());
    env.insert(spec.port_env.clone(), port.to_string());
    for e in &spec.env {
        let value = {
            let known = &env;
            expand(&e.value, &|name| {
                known
                    .get(name)
                    .cloned()
                    .or_else(|| std::env::var(name).ok())
            })
        };
        env.insert(e.name.clone(), value);
    }
    env
}

/// The arguments a process starts with, `$(VAR)` expanded against `env` then the environment.
pub fn process_args(spec: &ProcessSpec, env: &BTreeMap<String, String>) -> Vec<String> {
    spec.args
        .iter()
        .map(|a| {
            expand(a, &|name| {
                env.get(name).cloned().or_else(|| std::env::var(name).ok())
            })
        })
        .collect()
}

/// The `MetricTemplate`s of a manifest directory, by `namespace/name`, with one error per
/// document that does not read as one (naming the file and what is wrong).
pub fn read_templates(
    dir: &Path,
) -> Result<
    (
        BTreeMap<String, serin_api::MetricTemplate>,
        Vec<ManifestError>,
    ),
    std::io::Error,
> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let Ok(text) = std::fs::read_to_string(&file) else {
            // read_dir reports unreadable files already.
            continue;
        };
        for de in serde_yaml::Deserializer::from_str(&text) {
            let Ok(value) = serde_yaml::Value::deserialize(de) else {
                continue;
            };
            if value.get("kind").and_then(|k| k.as_str()) != Some("MetricTemplate") {
                continue;
            }
            match serde_yaml::from_value::<serin_api::MetricTemplate>(value) {
                Ok(t) => {
                    let ns = t.metadata.namespace.as_deref().unwrap_or("default");
                    let key = format!("{ns}/{}", t.metadata.name.as_deref().unwrap_or_default());
                    out.insert(key, t);
                }
                Err(e) => errors.push(ManifestError {
                    file: name.clone(),
                    path: "spec".into(),
                    message: format!("not a MetricTemplate: {e}"),
                }),
            }
        }
    }
    Ok((out, errors))
}

/// What [`set_revision`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionEdit {
    /// The file that was rewritten.
    pub file: PathBuf,
    /// The Process whose revision was set.
    pub process: String,
    /// The Canary `name` named, when `name` was a Canary (otherwise it named the Process).
    pub canary: Option<String>,
    /// Whether the Process changed (setting the revision and env it already has changes
    /// nothing, and starts no run).
    pub changed: bool,
}

fn yaml_docs(text: &str, file: &str) -> Result<Vec<serde_yaml::Value>, ManifestError> {
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(de).map_err(|e| ManifestError {
            file: file.to_string(),
            path: "-".into(),
            message: format!("not valid YAML: {e}"),
        })?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn str_at<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

/// Starts a local rollout without editing files by hand (`serin rollout`, `serin demo`, tests):
/// finds the Canary `name` in `namespace` under `dir` (or, failing that, the Process `name`),
/// sets its target Process's `spec.revision` and the given `env` entries (replacing entries of
/// the same name), and rewrites that file atomically. The running controller notices the change
/// and starts a run. Comments in the rewritten file are not kept.
pub fn set_revision(
    dir: &Path,
    namespace: &str,
    name: &str,
    revision: &str,
    env: &[(String, String)],
) -> Result<RevisionEdit, ManifestError> {
    use serde_yaml::Value;
    let fail = |file: &str, path: &str, message: String| ManifestError {
        file: file.to_string(),
        path: path.to_string(),
        message,
    };
    if revision.trim().is_empty() {
        return Err(fail("--revision", "-", "must not be empty".into()));
    }
    for (k, _) in env {
        if !valid_env_name(k) {
            return Err(fail(
                "--env",
                k,
                format!(
                    "`{k}` is not an environment variable name (letters, digits, `_`, not starting with a digit)"
                ),
            ));
        }
    }
    let dir_name = dir.display().to_string();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            fail(
                &dir_name,
                "-",
                format!("cannot read the manifest directory: {e}"),
            )
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let in_ns = |v: &Value| str_at(v, &["metadata", "namespace"]).unwrap_or("default") == namespace;
    let mut texts = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| fail(&f.display().to_string(), "-", format!("cannot read: {e}")))?;
        texts.push(text);
    }
    // The Canary NAME's target, or NAME itself when it is a Process.
    let mut canary = None;
    let mut process = name.to_string();
    for (f, text) in files.iter().zip(&texts) {
        let Ok(docs) = yaml_docs(text, &f.display().to_string()) else {
            continue;
        };
        for d in docs {
            if str_at(&d, &["kind"]) == Some("Canary")
                && str_at(&d, &["metadata", "name"]) == Some(name)
                && in_ns(&d)
            {
                let Some(target) = str_at(&d, &["spec", "targetRef", "name"]) else {
                    return Err(fail(
                        &f.display().to_string(),
                        "spec.targetRef.name",
                        format!("Canary {name} names no target"),
                    ));
                };
                process = target.to_string();
                canary = Some(name.to_string());
            }
        }
    }
    for (f, text) in files.iter().zip(&texts) {
        let file = f.display().to_string();
        let mut docs = yaml_docs(text, &file)?;
        let mut changed = false;
        let mut differs = false;
        for d in docs.iter_mut() {
            if str_at(d, &["kind"]) != Some("Process")
                || str_at(d, &["metadata", "name"]) != Some(process.as_str())
                || !in_ns(d)
            {
                continue;
            }
            let port_env = str_at(d, &["spec", "portEnv"])
                .unwrap_or("PORT")
                .to_string();
            let before = d.clone();
            let Some(spec) = d.get_mut("spec").and_then(Value::as_mapping_mut) else {
                return Err(fail(
                    &file,
                    "spec",
                    format!("Process {process} has no spec"),
                ));
            };
            spec.insert("revision".into(), Value::String(revision.to_string()));
            if !env.is_empty() {
                let list = spec
                    .entry("env".into())
                    .or_insert_with(|| Value::Sequence(Vec::new()));
                let Some(seq) = list.as_sequence_mut() else {
                    return Err(fail(&file, "spec.env", "is not a list".into()));
                };
                for (k, v) in env {
                    if *k == port_env {
                        return Err(fail(
                            "--env",
                            k,
                            format!("`{k}` is set by Serin to the process's port (spec.portEnv)"),
                        ));
                    }
                    seq.retain(|e| str_at(e, &["name"]) != Some(k.as_str()));
                    let mut m = serde_yaml::Mapping::new();
                    m.insert("name".into(), Value::String(k.clone()));
                    m.insert("value".into(), Value::String(v.clone()));
                    seq.push(Value::Mapping(m));
                }
            }
            differs |= *d != before;
            changed = true;
        }
        if changed && !differs {
            return Ok(RevisionEdit {
                file: f.clone(),
                process,
                canary,
                changed: false,
            });
        }
        if changed {
            let mut out = String::new();
            for d in &docs {
                out.push_str("---\n");
                out.push_str(
                    &serde_yaml::to_string(d)
                        .map_err(|e| fail(&file, "-", format!("cannot encode: {e}")))?,
                );
            }
            super::store::write_atomic(f, out.as_bytes())
                .map_err(|e| fail(&file, "-", format!("cannot write: {e}")))?;
            return Ok(RevisionEdit {
                file: f.clone(),
                process,
                canary,
                changed: differs,
            });
        }
    }
    Err(fail(
        &dir_name,
        "-",
        format!(
            "no Process {process:?} in namespace {namespace} (NAME is a Canary or a Process name)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: serin.dev/v1beta1
kind: Process
metadata:
  name: podinfo
spec:
  command: serin
  args: ["sample-app", "--addr", "127.0.0.1:$(PORT)"]
  env:
    - name: GREETING
      value: "on $(PORT)"
  readinessProbe:
    httpGet: { path: /readyz }
"#;

    #[test]
    fn a_process_reads_with_defaults_and_expands_the_port() {
        let (docs, errors) = read_str(GOOD, "p.yaml", Path::new("."));
        assert!(errors.is_empty(), "{errors:?}");
        let Document::Process { process, .. } = &docs[0] else {
            panic!("not a process")
        };
        assert_eq!(process.spec.port_env, "PORT");
        assert_eq!(process.spec.termination_grace_period_seconds, 30);
        let env = process_env(&process.spec, 4242);
        assert_eq!(env["PORT"], "4242");
        assert_eq!(env["GREETING"], "on 4242");
        assert_eq!(process_args(&process.spec, &env)[2], "127.0.0.1:4242");
    }

    #[test]
    fn the_revision_is_explicit_or_a_stable_hash_of_what_runs() {
        let (docs, _) = read_str(GOOD, "p.yaml", Path::new("."));
        let Document::Process { process, .. } = &docs[0] else {
            panic!()
        };
        let mut spec = process.spec.clone();
        let hash = spec.revision();
        assert_eq!(hash.len(), 16);
        assert_eq!(hash, spec.revision(), "stable");
        spec.args.push("--app-version=v2".into());
        assert_ne!(hash, spec.revision(), "args change the revision");
        spec.revision = Some("v2".into());
        assert_eq!(spec.revision(), "v2");
    }

    #[test]
    fn expansion_keeps_unknown_and_escaped_variables() {
        let lookup = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("x$(A)y", &lookup), "x1y");
        assert_eq!(expand("$(B)", &lookup), "$(B)");
        assert_eq!(expand("$$(A)", &lookup), "$(A)");
        assert_eq!(expand("cost $5", &lookup), "cost $5");
    }

    #[test]
    fn bad_processes_name_each_field() {
        let bad = r#"
apiVersion: serin.dev/v1alpha1
kind: Process
metadata:
  name: Bad_Name
spec:
  command: ""
  portEnv: "1PORT"
  env:
    - name: "A-B"
      value: x
  readinessProbe:
    httpGet: { path: readyz }
    periodSeconds: 0
"#;
        let (docs, errors) = read_str(bad, "bad.yaml", Path::new("."));
        assert!(docs.is_empty());
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "apiVersion",
            "metadata.name",
            "spec.command",
            "spec.portEnv",
            "spec.env[0].name",
            "spec.readinessProbe.httpGet.path",
            "spec.readinessProbe.periodSeconds",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        assert!(errors[0].to_string().starts_with("bad.yaml: "));
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        let typo = GOOD.replace("readinessProbe", "readinesProbe");
        let (_, errors) = read_str(&typo, "t.yaml", Path::new("."));
        assert!(errors[0].message.contains("readinesProbe"), "{errors:?}");
        let (_, errors) = read_str(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
            "k.yaml",
            Path::new("."),
        );
        assert!(
            errors[0].message.contains("accepted: Canary, Process"),
            "{errors:?}"
        );
    }

    #[test]
    fn several_documents_per_file_and_empty_ones_are_fine() {
        let text = format!(
            "---\n{GOOD}\n---\n---\n{}",
            GOOD.replace("podinfo", "other")
        );
        let (docs, errors) = read_str(&text, "m.yaml", Path::new("."));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 2);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "serin-manifest-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const CANARY: &str = r#"
apiVersion: serin.dev/v1beta1
kind: Canary
metadata:
  name: web
spec:
  targetRef:
    apiVersion: serin.dev/v1beta1
    kind: Process
    name: podinfo
"#;

    #[test]
    fn every_process_knows_its_revision() {
        let (docs, _) = read_str(GOOD, "p.yaml", Path::new("."));
        let Document::Process { process, .. } = &docs[0] else {
            panic!("not a process")
        };
        let mut spec = process.spec.clone();
        spec.revision = Some("v7".into());
        spec.args = vec!["--app-version".into(), "$(SERIN_REVISION)".into()];
        let env = process_env(&spec, 1);
        assert_eq!(env[REVISION_ENV], "v7");
        assert_eq!(process_args(&spec, &env)[1], "v7");
    }

    #[test]
    fn set_revision_edits_the_canarys_target_and_reports_whether_anything_changed() {
        let dir = temp_dir("set");
        std::fs::write(dir.join("p.yaml"), GOOD).unwrap();
        std::fs::write(dir.join("c.yaml"), CANARY).unwrap();
        let env = [("ERROR_RATE".to_string(), "0.3".to_string())];
        let edit = set_revision(&dir, "default", "web", "v2", &env).unwrap();
        assert_eq!(edit.process, "podinfo");
        assert_eq!(edit.canary.as_deref(), Some("web"));
        assert!(edit.changed);
        let (docs, errors) = read_dir(&dir).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let spec = docs
            .iter()
            .find_map(|d| match d {
                Document::Process { process, .. } => Some(process.spec.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(spec.revision.as_deref(), Some("v2"));
        assert!(
            spec.env.iter().any(|e| e.name == "GREETING"),
            "other env kept"
        );
        assert!(
            spec.env
                .iter()
                .any(|e| e.name == "ERROR_RATE" && e.value == "0.3")
        );
        // Again with the same values: nothing changes; a new value replaces the old entry.
        assert!(
            !set_revision(&dir, "default", "web", "v2", &env)
                .unwrap()
                .changed
        );
        let env = [("ERROR_RATE".to_string(), "0".to_string())];
        let edit = set_revision(&dir, "default", "podinfo", "v2", &env).unwrap();
        assert!(edit.changed);
        assert_eq!(edit.canary, None, "named by its Process");
        let text = std::fs::read_to_string(dir.join("p.yaml")).unwrap();
        assert_eq!(text.matches("ERROR_RATE").count(), 1, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn set_revision_names_what_is_wrong() {
        let dir = temp_dir("bad");
        std::fs::write(dir.join("p.yaml"), GOOD).unwrap();
        let err = |name: &str, rev: &str, env: &[(&str, &str)]| {
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            set_revision(&dir, "default", name, rev, &env)
                .unwrap_err()
                .to_string()
        };
        assert!(err("podinfo", " ", &[]).contains("--revision"));
        assert!(err("podinfo", "v2", &[("1X", "a")]).contains("--env"));
        assert!(err("podinfo", "v2", &[("PORT", "1")]).contains("spec.portEnv"));
        assert!(err("nothing", "v2", &[]).contains("no Process \"nothing\""));
        assert!(
            set_revision(&dir.join("missing"), "default", "podinfo", "v2", &[])
                .unwrap_err()
                .to_string()
                .contains("cannot read the manifest directory")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn metric_templates_are_read_from_the_directory() {
        let dir = temp_dir("templates");
        std::fs::write(
            dir.join("t.yaml"),
            "apiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: errors, namespace: prod}\nspec:\n  provider: {type: prometheus}\n  query: up\n---\napiVersion: serin.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: broken}\nspec: {query: 3}\n",
        )
        .unwrap();
        std::fs::write(dir.join("c.yaml"), CANARY).unwrap();
        let (templates, errors) = read_templates(&dir).unwrap();
        assert_eq!(templates.keys().collect::<Vec<_>>(), ["prod/errors"]);
        assert_eq!(templates["prod/errors"].spec.query, "up");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("t.yaml"), "{}", errors[0]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! [`set_revision`]: starting a local rollout by rewriting the target Process's manifest.

use super::*;

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

pub(super) fn yaml_docs(text: &str, file: &str) -> Result<Vec<serde_norway::Value>, ManifestError> {
    let mut out = Vec::new();
    for de in serde_norway::Deserializer::from_str(text) {
        let v = serde_norway::Value::deserialize(de).map_err(|e| ManifestError {
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

pub(super) fn str_at<'a>(v: &'a serde_norway::Value, path: &[&str]) -> Option<&'a str> {
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
    use serde_norway::Value;
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
                    let mut m = serde_norway::Mapping::new();
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
                    &serde_norway::to_string(d)
                        .map_err(|e| fail(&file, "-", format!("cannot encode: {e}")))?,
                );
            }
            crate::store::write_atomic(f, out.as_bytes())
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

//! Reading a manifest directory: `Process`, `Canary` and `MetricTemplate` documents, with one
//! error per document that does not read (naming the file and the field).

use super::*;

/// A document found in the manifest directory.
#[derive(Debug, Clone)]
pub enum Document {
    /// A `Process`, with the directory it came from (relative paths resolve against it).
    Process {
        /// The manifest.
        process: Box<Process>,
        /// Its file's directory.
        dir: PathBuf,
        /// Where it came from (the file, and the document when the file has several).
        file: String,
    },
    /// A `Canary` (any supported apiVersion), as raw YAML for the api crate to read.
    Canary {
        /// The document.
        value: serde_norway::Value,
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
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let name = if i == 0 {
            file.to_string()
        } else {
            format!("{file} (document {})", i + 1)
        };
        let value = match serde_norway::Value::deserialize(de) {
            Ok(serde_norway::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(ManifestError {
                    file: name,
                    path: "-".into(),
                    message: format!("not valid YAML: {e}"),
                });
                // serde_norway's document iterator yields a scanner error again and again: the
                // rest of the file cannot be read, so stop here (one error, never a hang).
                break;
            }
        };
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        match kind {
            "Process" => match parse_process(value, &name) {
                Ok(process) => docs.push(Document::Process {
                    process: Box::new(process),
                    dir: dir.to_path_buf(),
                    file: name.clone(),
                }),
                Err(e) => errors.extend(e),
            },
            "Canary" => docs.push(Document::Canary { value, file: name }),
            // MetricTemplates, AlertProviders and the like are read by whoever needs them.
            // Secrets hold what MetricTemplates' `secretRef` names (read by `read_secrets`).
            "MetricTemplate" | "AlertProvider" | "Secret" => {}
            other => errors.push(ManifestError {
                file: name,
                path: "kind".into(),
                message: format!(
                    "`{other}` is not a local kind; accepted: Canary, Process, MetricTemplate, AlertProvider, Secret"
                ),
            }),
        }
    }
    (docs, errors)
}

/// Reads and validates one `Process` document.
pub fn parse_process(
    value: serde_norway::Value,
    file: &str,
) -> Result<Process, Vec<ManifestError>> {
    let process: Process = serde_norway::from_value(value).map_err(|e| {
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
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (file, value) in documents_of_kind(dir, "MetricTemplate")? {
        match serde_norway::from_value::<serin_api::MetricTemplate>(value) {
            Ok(t) => {
                let ns = t.metadata.namespace.as_deref().unwrap_or("default");
                let key = format!("{ns}/{}", t.metadata.name.as_deref().unwrap_or_default());
                out.insert(key, t);
            }
            Err(e) => errors.push(ManifestError {
                file,
                path: "spec".into(),
                message: format!("not a MetricTemplate: {e}"),
            }),
        }
    }
    Ok((out, errors))
}

/// Secrets by `namespace/name`: each key and its decoded text.
pub type Secrets = BTreeMap<String, BTreeMap<String, String>>;

/// The `v1` `Secret`s of a manifest directory (what a MetricTemplate's `secretRef` names on the
/// local platform, written exactly as for Kubernetes), by `namespace/name`, their `data`
/// (base64) and `stringData` decoded to text (`stringData` wins, as on the API server). One
/// error per document that does not read, naming the file and the key.
pub fn read_secrets(dir: &Path) -> Result<(Secrets, Vec<ManifestError>), std::io::Error> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SecretDoc {
        metadata: SecretMeta,
        #[serde(default)]
        data: BTreeMap<String, String>,
        #[serde(default)]
        string_data: BTreeMap<String, String>,
    }
    #[derive(serde::Deserialize)]
    struct SecretMeta {
        name: Option<String>,
        namespace: Option<String>,
    }
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (file, value) in documents_of_kind(dir, "Secret")? {
        let doc = match serde_norway::from_value::<SecretDoc>(value) {
            Ok(d) => d,
            Err(e) => {
                errors.push(ManifestError {
                    file,
                    path: "-".into(),
                    message: format!("not a Secret: {e}"),
                });
                continue;
            }
        };
        let mut data = BTreeMap::new();
        for (key, encoded) in doc.data {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            match decoded {
                Some(text) => {
                    data.insert(key, text);
                }
                None => errors.push(ManifestError {
                    file: file.clone(),
                    path: format!("data.{key}"),
                    message: "not base64 of UTF-8 text (put plain text under stringData)".into(),
                }),
            }
        }
        data.extend(doc.string_data);
        let ns = doc.metadata.namespace.as_deref().unwrap_or("default");
        let key = format!("{ns}/{}", doc.metadata.name.as_deref().unwrap_or_default());
        out.insert(key, data);
    }
    Ok((out, errors))
}

/// Every document of `kind` in the directory's `*.yaml`/`*.yml` files (sorted by file name), with
/// the file it came from. Unreadable files and YAML errors are `read_dir`'s to report.
fn documents_of_kind(
    dir: &Path,
    kind: &str,
) -> Result<Vec<(String, serde_norway::Value)>, std::io::Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for de in serde_norway::Deserializer::from_str(&text) {
            // A syntax error ends the file: the document iterator would yield it forever.
            // `read_dir` reports it (naming the file) once.
            let Ok(value) = serde_norway::Value::deserialize(de) else {
                break;
            };
            if value.get("kind").and_then(|k| k.as_str()) == Some(kind) {
                out.push((file.display().to_string(), value));
            }
        }
    }
    Ok(out)
}

/// Reads a `Canary` document. On failure the errors name each field and what is accepted, as
/// `serin validate` says them (serde's own message names only a type: "invalid type: integer
/// `10`, expected a string").
pub fn read_canary(value: serde_norway::Value) -> Result<serin_api::Canary, Vec<String>> {
    match serde_norway::from_value::<serin_api::Canary>(value.clone()) {
        Ok(c) => Ok(c),
        Err(error) => {
            let named: Vec<String> = serde_norway::to_string(&value)
                .map(|text| serin_api::check_manifests(&text))
                .unwrap_or_default()
                .into_iter()
                .flat_map(|doc| match doc.outcome {
                    serin_api::Outcome::Invalid(errors) => {
                        errors.iter().map(ToString::to_string).collect()
                    }
                    _ => Vec::new(),
                })
                .collect();
            Err(if named.is_empty() {
                vec![format!("not a Canary: {error}")]
            } else {
                named
            })
        }
    }
}

//! Checking manifests as files hold them: several YAML (or JSON) documents, each checked
//! against the CRD schema (types, unknown and required fields, enums) and then against the
//! semantic rules of [`crate::validate`]. This is what `serin validate` runs.

use std::fmt;
use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::schema_check::{BadValue, check_value_with_pointers, strip_nulls};
use crate::validate::{
    ValidationError, validate, validate_alert_provider, validate_metric_template,
};
use crate::{API_VERSION, AlertProvider, Canary, FLAGGER_API_VERSION, GROUP, MetricTemplate};

/// A checked resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A Canary.
    Canary(Box<Canary>),
    /// A MetricTemplate.
    MetricTemplate(Box<MetricTemplate>),
    /// An AlertProvider.
    AlertProvider(Box<AlertProvider>),
    /// Another `serin.dev` kind, checked by an [`ExtraKinds`] checker (e.g. the local
    /// platform's `Process`).
    Other(String),
}

/// Checks `serin.dev` kinds this crate does not define, such as the local platform's
/// `Process`: given the kind and the document, returns `None` when it does not know the kind.
pub type ExtraKinds<'a> =
    &'a dyn Fn(&str, &serde_yaml::Value) -> Option<Result<(), Vec<ValidationError>>>;

/// The verdict on one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The document is a valid Serin resource.
    Valid(Resource),
    /// The document breaks these rules.
    Invalid(Vec<ValidationError>),
    /// The document is not one of the three kinds checked here: another API group's resource
    /// (a Deployment in the same file) or the local platform's `Process`.
    Skipped,
    /// The YAML is malformed here; later documents cannot be read.
    Syntax {
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
}

/// One document of a manifest stream and its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based position in the stream (empty documents are counted too, as `---` separates).
    pub index: usize,
    /// `kind`, when readable.
    pub kind: Option<String>,
    /// `metadata.namespace`, when set.
    pub namespace: Option<String>,
    /// `metadata.name`, when set.
    pub name: Option<String>,
    /// The verdict.
    pub outcome: Outcome,
}

impl Document {
    /// `Kind ns/name`, `Kind name` or `Kind` — how reports name the document.
    pub fn label(&self) -> String {
        let kind = self.kind.as_deref().unwrap_or("unknown kind");
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
            (None, Some(name)) => format!("{kind} {name}"),
            _ => kind.to_string(),
        }
    }

    /// Report lines for this document, each prefixed with `source`.
    pub fn report_lines(&self, source: &str) -> Vec<String> {
        let head = format!("{source}: document {} ({})", self.index, self.label());
        match &self.outcome {
            Outcome::Valid(_) => vec![format!("{head}: valid")],
            Outcome::Skipped if self.kind.as_deref() == Some("Process") => {
                vec![format!(
                    "{head}: skipped (checked by the local platform when it loads it)"
                )]
            }
            Outcome::Skipped => vec![format!("{head}: skipped (not a {GROUP} resource)")],
            Outcome::Invalid(errors) => errors.iter().map(|e| format!("{head}: {e}")).collect(),
            Outcome::Syntax {
                line,
                column,
                message,
            } => {
                let at = match (line, column) {
                    (Some(l), Some(c)) => format!("line {l} column {c}: "),
                    (Some(l), None) => format!("line {l}: "),
                    _ => String::new(),
                };
                vec![format!(
                    "{source}: document {}: {at}YAML syntax error: {message}",
                    self.index
                )]
            }
        }
    }

    /// Whether this document makes the stream fail.
    pub fn is_error(&self) -> bool {
        matches!(self.outcome, Outcome::Invalid(_) | Outcome::Syntax { .. })
    }
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.report_lines("-").join("\n"))
    }
}

struct Schemas {
    canary: Value,
    metric_template: Value,
    alert_provider: Value,
}

fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).unwrap_or(Value::Null);
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or(Value::Null)
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| Schemas {
        canary: schema_of::<Canary>(),
        metric_template: schema_of::<MetricTemplate>(),
        alert_provider: schema_of::<AlertProvider>(),
    })
}

/// Checks every document of a YAML or JSON stream.
pub fn check_manifests(text: &str) -> Vec<Document> {
    check_manifests_with(text, &|_, _| None)
}

/// Like [`check_manifests`], with a checker for further `serin.dev` kinds.
pub fn check_manifests_with(text: &str, extra: ExtraKinds<'_>) -> Vec<Document> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        match serde_yaml::Value::deserialize(de) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(yaml) => out.push(check_document(index, yaml, extra)),
            Err(err) => {
                let loc = err.location();
                out.push(Document {
                    index,
                    kind: None,
                    namespace: None,
                    name: None,
                    outcome: Outcome::Syntax {
                        line: loc.as_ref().map(|l| l.line()),
                        column: loc.as_ref().map(|l| l.column()),
                        message: strip_location(&err.to_string()),
                    },
                });
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        }
    }
    out
}

/// serde_yaml appends " at line L column C"; the report prints the location up front.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn string_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn check_document(index: usize, yaml: serde_yaml::Value, extra: ExtraKinds<'_>) -> Document {
    let mut doc = Document {
        index,
        kind: None,
        namespace: None,
        name: None,
        outcome: Outcome::Skipped,
    };
    let mut value = match serde_json::to_value(&yaml) {
        Ok(v) => v,
        Err(e) => {
            doc.outcome = Outcome::Invalid(vec![ValidationError::new(
                "",
                format!("not representable as JSON: {e}; keys must be strings"),
            )]);
            return doc;
        }
    };
    strip_nulls(&mut value);
    if !value.is_object() {
        doc.outcome = Outcome::Invalid(vec![ValidationError::new(
            "",
            "expected a mapping with apiVersion, kind, metadata and spec",
        )]);
        return doc;
    }
    doc.kind = string_at(&value, "/kind").map(str::to_string);
    doc.namespace = string_at(&value, "/metadata/namespace").map(str::to_string);
    doc.name = string_at(&value, "/metadata/name").map(str::to_string);

    let api_version = string_at(&value, "/apiVersion").unwrap_or_default();
    let group = api_version.split('/').next().unwrap_or_default();
    let mut errors = Vec::new();
    match api_version {
        API_VERSION => {}
        FLAGGER_API_VERSION => errors.push(ValidationError::new(
            "apiVersion",
            format!("{FLAGGER_API_VERSION} is Flagger's; change apiVersion to {API_VERSION} (the fields are the same)"),
        )),
        "" if value.get("apiVersion").is_some() => errors.push(ValidationError::new(
            "apiVersion",
            format!("expected a string; accepted: {API_VERSION}"),
        )),
        "" => errors.push(ValidationError::new(
            "apiVersion",
            format!("required field is missing; accepted: {API_VERSION}"),
        )),
        _ if group == GROUP || group == "flagger.app" => errors.push(ValidationError::new(
            "apiVersion",
            format!("unknown version {api_version:?}; accepted: {API_VERSION}"),
        )),
        // Other resources (Deployments, Services, ...) often share the file.
        _ => return doc,
    }

    let kind = doc.kind.clone().unwrap_or_default();
    let (schema, validator): (&Value, Reader) = match kind.as_str() {
        "Canary" => (&schemas().canary, |v| {
            typed::<Canary>(v, validate).map(|c| Resource::Canary(Box::new(c)))
        }),
        "MetricTemplate" => (&schemas().metric_template, |v| {
            typed::<MetricTemplate>(v, validate_metric_template)
                .map(|t| Resource::MetricTemplate(Box::new(t)))
        }),
        "AlertProvider" => (&schemas().alert_provider, |v| {
            typed::<AlertProvider>(v, validate_alert_provider)
                .map(|p| Resource::AlertProvider(Box::new(p)))
        }),
        other
            if !["Canary", "MetricTemplate", "AlertProvider"].contains(&other)
                && errors.is_empty()
                && let Some(result) = extra(other, &yaml) =>
        {
            doc.outcome = match result {
                Ok(()) => Outcome::Valid(Resource::Other(other.to_string())),
                Err(e) => Outcome::Invalid(e),
            };
            return doc;
        }
        // The local platform's workload kind; the local controller validates it when it loads
        // the manifests.
        "Process" if errors.is_empty() => return doc,
        "" => {
            errors.push(ValidationError::new(
                "kind",
                "required field is missing; accepted: Canary, MetricTemplate, AlertProvider",
            ));
            doc.outcome = Outcome::Invalid(errors);
            return doc;
        }
        other => {
            errors.push(ValidationError::new(
                "kind",
                format!("unknown kind {other:?}; accepted: Canary, MetricTemplate, AlertProvider"),
            ));
            doc.outcome = Outcome::Invalid(errors);
            return doc;
        }
    };

    check_metadata(&value, &mut errors);
    if let Some(obj) = value.as_object() {
        for key in obj.keys() {
            if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&key.as_str()) {
                errors.push(ValidationError::new(
                    key.clone(),
                    format!("unknown field {key:?}; accepted here: apiVersion, kind, metadata, spec, status"),
                ));
            }
        }
    }
    let mut body = value.clone();
    if let Some(obj) = body.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata"] {
            obj.remove(key);
        }
    }
    let (schema_errors, bad_values) = check_value_with_pointers(&body, schema, "");
    errors.extend(schema_errors);

    // The semantic rules run on the typed object, so values of the wrong type are removed
    // first (a list goes as a whole when one item is bad); rules about removed fields are then
    // skipped, as their errors are already reported.
    let mut pruned_paths = Vec::new();
    for bad in &bad_values {
        let (pointer, path) = containing_member(bad);
        remove_at(&mut value, &pointer);
        pruned_paths.push(path);
    }
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), Value::String(API_VERSION.into()));
    }
    let is_pruned = |path: &str| {
        pruned_paths.iter().any(|p| {
            path == p || path.starts_with(&format!("{p}.")) || path.starts_with(&format!("{p}["))
        })
    };
    let strategy_pruned = pruned_paths.iter().any(|p| {
        ["stepWeight", "stepWeights", "iterations"]
            .iter()
            .any(|f| p == &format!("spec.analysis.{f}"))
    });
    match validator(&value) {
        Ok(resource) if errors.is_empty() => doc.outcome = Outcome::Valid(resource),
        Ok(_) => doc.outcome = Outcome::Invalid(errors),
        Err(semantic) => {
            let reported: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
            let schema_failed = !errors.is_empty();
            for e in semantic {
                let duplicate = reported.iter().any(|p| p == &e.path) || is_pruned(&e.path);
                // When the schema check failed, deserialization errors repeat it less precisely.
                let deser_noise = schema_failed && e.path.is_empty();
                let strategy_noise = strategy_pruned && e.message.starts_with("no strategy");
                if !duplicate && !deser_noise && !strategy_noise {
                    errors.push(e);
                }
            }
            doc.outcome = Outcome::Invalid(errors);
        }
    }
    doc
}

/// The object member holding a bad value: the value itself, or the list it is an item of.
fn containing_member(bad: &BadValue) -> (String, String) {
    let mut pointer = bad.pointer.clone();
    let mut path = bad.path.clone();
    while path.ends_with(']') {
        if let (Some(p), Some(q)) = (pointer.rfind('/'), path.rfind('[')) {
            pointer.truncate(p);
            path.truncate(q);
        } else {
            break;
        }
    }
    (pointer, path)
}

fn remove_at(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.remove(&key);
    }
}

/// Reads a well-typed document into its Rust type and applies the semantic rules.
type Reader = fn(&Value) -> Result<Resource, Vec<ValidationError>>;

fn check_metadata(value: &Value, errors: &mut Vec<ValidationError>) {
    let Some(meta) = value.get("metadata") else {
        errors.push(ValidationError::new(
            "metadata",
            "required field is missing",
        ));
        return;
    };
    let Some(meta) = meta.as_object() else {
        errors.push(ValidationError::new("metadata", "expected a mapping"));
        return;
    };
    for key in ["name", "namespace", "generateName"] {
        if let Some(v) = meta.get(key)
            && !v.is_string()
        {
            errors.push(ValidationError::new(
                format!("metadata.{key}"),
                "expected a string",
            ));
        }
    }
    for key in ["labels", "annotations"] {
        if let Some(v) = meta.get(key) {
            match v.as_object() {
                None => errors.push(ValidationError::new(
                    format!("metadata.{key}"),
                    "expected a mapping of strings",
                )),
                Some(map) => {
                    for (k, v) in map {
                        if !v.is_string() {
                            errors.push(ValidationError::new(
                                format!("metadata.{key}.{k}"),
                                "expected a string (quote numbers and booleans)",
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn typed<T: DeserializeOwned>(
    value: &Value,
    rules: fn(&T) -> Result<(), Vec<ValidationError>>,
) -> Result<T, Vec<ValidationError>> {
    let object: T = serde_json::from_value(value.clone())
        .map_err(|e| vec![ValidationError::new("", format!("cannot be read: {e}"))])?;
    rules(&object)?;
    Ok(object)
}

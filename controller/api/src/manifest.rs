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
use crate::support::{
    DEFAULT_PROVIDER, Verdict, alert_provider_verdict, canary_verdict, metric_template_verdict,
};
use crate::validate::{
    ValidationError, alert_provider_warnings, canary_warnings, validate, validate_alert_provider,
    validate_metric_template,
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
    &'a dyn Fn(&str, &serde_norway::Value) -> Option<Result<(), Vec<ValidationError>>>;

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
    /// For a valid document: what Serin reads differently from what was written.
    pub warnings: Vec<ValidationError>,
    /// For a valid document: whether this Serin runs it.
    pub verdict: Verdict,
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
            Outcome::Valid(_) => {
                let mut lines: Vec<String> = match &self.verdict {
                    Verdict::Runnable => vec![format!("{head}: valid and runnable")],
                    Verdict::NotRunnable(reasons) => reasons
                        .iter()
                        .map(|r| {
                            format!("{head}: valid for Flagger, not runnable by this Serin: {r}")
                        })
                        .collect(),
                };
                if let Outcome::Valid(Resource::MetricTemplate(t)) = &self.outcome
                    && let Some(how) =
                        crate::support::metric_provider_tested(&t.spec.provider.type_)
                {
                    lines.push(format!(
                        "{head}: note: provider {}: {how}",
                        t.spec.provider.type_
                    ));
                }
                lines.extend(
                    self.warnings
                        .iter()
                        .map(|w| format!("{head}: warning: {w}")),
                );
                lines
            }
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

    /// Whether this document is valid but not runnable by this Serin.
    pub fn is_not_runnable(&self) -> bool {
        matches!(self.outcome, Outcome::Valid(_)) && matches!(self.verdict, Verdict::NotRunnable(_))
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

/// Checks Flagger's manifests as they are: `flagger.app/v1beta1` documents are read as if their
/// `apiVersion` were already `serin.dev/v1beta1` (the one change a migration makes).
pub fn check_flagger_manifests(text: &str) -> Vec<Document> {
    check_stream(text, &|_, _| None, true)
}

/// Like [`check_manifests`], with a checker for further `serin.dev` kinds.
pub fn check_manifests_with(text: &str, extra: ExtraKinds<'_>) -> Vec<Document> {
    check_stream(text, extra, false)
}

fn check_stream(text: &str, extra: ExtraKinds<'_>, flagger: bool) -> Vec<Document> {
    let mut out = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        match serde_norway::Value::deserialize(de) {
            Ok(serde_norway::Value::Null) => {}
            Ok(yaml) => out.push(check_document(index, yaml, extra, flagger)),
            Err(err) => {
                let loc = err.location();
                out.push(Document {
                    index,
                    kind: None,
                    namespace: None,
                    name: None,
                    warnings: Vec::new(),
                    verdict: Verdict::Runnable,
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

/// serde_norway appends " at line L column C"; the report prints the location up front.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn string_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn check_document(
    index: usize,
    yaml: serde_norway::Value,
    extra: ExtraKinds<'_>,
    flagger: bool,
) -> Document {
    let mut doc = Document {
        index,
        kind: None,
        namespace: None,
        name: None,
        outcome: Outcome::Skipped,
        warnings: Vec::new(),
        verdict: Verdict::Runnable,
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

    let mut api_version = string_at(&value, "/apiVersion").unwrap_or_default();
    if flagger && api_version == FLAGGER_API_VERSION {
        api_version = API_VERSION;
    }
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
    if kind == "MetricTemplate" {
        let header_errors = check_header_shape(&value);
        if !header_errors.is_empty() {
            // The typed read would only repeat these, less precisely.
            remove_at(&mut value, "/spec/provider/headers");
            errors.extend(header_errors);
        }
    }

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
        Ok(resource) if errors.is_empty() => {
            (doc.warnings, doc.verdict) = match &resource {
                Resource::Canary(c) => (canary_warnings(c), canary_verdict(c, DEFAULT_PROVIDER)),
                Resource::MetricTemplate(t) => (Vec::new(), metric_template_verdict(t)),
                Resource::AlertProvider(p) => {
                    (alert_provider_warnings(p), alert_provider_verdict(p))
                }
                Resource::Other(_) => (Vec::new(), Verdict::Runnable),
            };
            doc.outcome = Outcome::Valid(resource);
        }
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

/// `spec.provider.headers` in one of its two shapes (the CRD schema cannot say "map or list"):
/// Flagger's map of header name to a list of values, or Serin's list of `{name, value}`.
fn check_header_shape(value: &Value) -> Vec<ValidationError> {
    const P: &str = "spec.provider.headers";
    let mut out = Vec::new();
    match value.pointer("/spec/provider/headers") {
        None => {}
        Some(Value::Object(map)) => {
            for (name, values) in map {
                match values.as_array() {
                    Some(items) if items.is_empty() => out.push(ValidationError::new(
                        format!("{P}.{name}"),
                        "no values; accepted: a list of one or more strings",
                    )),
                    Some(items) => {
                        for (i, v) in items.iter().enumerate() {
                            if !v.is_string() {
                                out.push(ValidationError::new(
                                    format!("{P}.{name}[{i}]"),
                                    "expected a string (quote numbers and booleans)",
                                ));
                            }
                        }
                    }
                    None => out.push(ValidationError::new(
                        format!("{P}.{name}"),
                        "expected a list of values (Flagger's form), e.g. [team-a]",
                    )),
                }
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{P}[{i}]");
                let Some(obj) = item.as_object() else {
                    out.push(ValidationError::new(path, "expected a mapping with name and value"));
                    continue;
                };
                for field in ["name", "value"] {
                    match obj.get(field) {
                        None => out.push(ValidationError::new(
                            format!("{path}.{field}"),
                            "required field is missing",
                        )),
                        Some(v) if !v.is_string() => out.push(ValidationError::new(
                            format!("{path}.{field}"),
                            "expected a string",
                        )),
                        _ => {}
                    }
                }
                for key in obj.keys() {
                    if key != "name" && key != "value" {
                        out.push(ValidationError::new(
                            format!("{path}.{key}"),
                            format!("unknown field {key:?}; accepted here: name, value"),
                        ));
                    }
                }
            }
        }
        Some(_) => out.push(ValidationError::new(
            P,
            "expected a map of header name to a list of values (Flagger's form) or a list of {name, value}",
        )),
    }
    out
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

/// Warns, on every valid MetricTemplate, AlertProvider and Canary that names a Secret
/// (`spec.provider.secretRef`, `spec.secretRef`, `webhooks[].signingSecretRef`) which is not
/// among `docs`: the local platform (`serin controller --local`) reads Secrets only from
/// `kind: Secret` documents beside the resources, and without it every check with that
/// template fails, an alert is not sent, a webhook is not signed — as Flagger's controller
/// fails when the Secret is missing from the namespace. On Kubernetes the Secret may be created
/// separately, hence a warning and not an error. Run it over every document of a directory.
pub fn apply_secret_checks(docs: &mut [Document]) {
    use std::collections::HashSet;
    let ns_of = |ns: &Option<String>| ns.clone().unwrap_or_else(|| "default".into());
    let secrets: HashSet<(String, String)> = docs
        .iter()
        .filter(|d| d.kind.as_deref() == Some("Secret") && matches!(d.outcome, Outcome::Skipped))
        .filter_map(|d| Some((ns_of(&d.namespace), d.name.clone()?)))
        .collect();
    for doc in docs.iter_mut() {
        let Outcome::Valid(resource) = &doc.outcome else {
            continue;
        };
        let (ns, refs): (&Option<String>, Vec<(String, &str)>) = match resource {
            Resource::MetricTemplate(t) => (
                &t.metadata.namespace,
                t.spec
                    .provider
                    .secret_ref
                    .iter()
                    .map(|r| ("spec.provider.secretRef.name".to_string(), r.name.as_str()))
                    .collect(),
            ),
            Resource::AlertProvider(p) => (
                &p.metadata.namespace,
                p.spec
                    .secret_ref
                    .iter()
                    .map(|r| ("spec.secretRef.name".to_string(), r.name.as_str()))
                    .collect(),
            ),
            Resource::Canary(c) => (
                &c.metadata.namespace,
                c.spec
                    .analysis
                    .webhooks
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| {
                        let r = w.signing_secret_ref.as_ref()?;
                        Some((
                            format!("spec.analysis.webhooks[{i}].signingSecretRef.name"),
                            r.name.as_str(),
                        ))
                    })
                    .collect(),
            ),
            Resource::Other(_) => continue,
        };
        let ns = ns_of(ns);
        let mut warnings = Vec::new();
        for (field, name) in refs {
            if !secrets.contains(&(ns.clone(), name.to_string())) {
                warnings.push(ValidationError::new(
                    field,
                    format!(
                        "Secret {ns}/{name} is not among the documents given; the local platform reads it only from a `kind: Secret` document (apiVersion v1, namespace {ns}) and fails without it, as Flagger's controller does when the Secret is missing; on Kubernetes create it in namespace {ns}"
                    ),
                ));
            }
        }
        doc.warnings.extend(warnings);
    }
}

/// Marks Canaries whose metrics use a MetricTemplate (found among `docs`) of a metric provider
/// this Serin does not query as not runnable, naming the metric and the template. Run it over
/// every document of a directory so templates in other files count too.
pub fn apply_template_verdicts(docs: &mut [Document]) {
    use std::collections::HashMap;
    let mut templates: HashMap<(Option<String>, String), String> = HashMap::new();
    for doc in docs.iter() {
        if let Outcome::Valid(Resource::MetricTemplate(t)) = &doc.outcome
            && let Some(name) = &t.metadata.name
        {
            templates.insert(
                (t.metadata.namespace.clone(), name.clone()),
                t.spec.provider.type_.clone(),
            );
        }
    }
    for doc in docs.iter_mut() {
        let Outcome::Valid(Resource::Canary(c)) = &doc.outcome else {
            continue;
        };
        let mut reasons = Vec::new();
        for m in &c.spec.analysis.metrics {
            let Some(r) = &m.template_ref else { continue };
            let ns = r.namespace.clone().or_else(|| c.metadata.namespace.clone());
            if let Some(type_) = templates.get(&(ns.clone(), r.name.clone()))
                && let Some(why) = crate::support::metric_provider_not_queried(type_)
            {
                let key = ns.map_or(r.name.clone(), |ns| format!("{ns}/{}", r.name));
                reasons.push(format!(
                    "metric {:?} uses MetricTemplate {key}: {why}",
                    m.name
                ));
            }
        }
        if !reasons.is_empty() {
            doc.verdict = match std::mem::take(&mut doc.verdict) {
                Verdict::Runnable => Verdict::NotRunnable(reasons),
                Verdict::NotRunnable(mut earlier) => {
                    earlier.extend(reasons);
                    Verdict::NotRunnable(earlier)
                }
            };
        }
    }
}

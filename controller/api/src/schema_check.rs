//! Two checks over OpenAPI v3 schemas as the Kubernetes API server reads them:
//!
//! - [`check_value`] checks a manifest against a CRD schema the way the API server does with
//!   strict field validation (types, unknown fields, required fields, enums), so
//!   `serin validate` catches a typo like `stepWieght` instead of the server pruning it silently.
//! - [`structural_problems`] lists the ways a schema breaks the API server's "structural
//!   schema" rules; the generated CRDs must have none.

use serde_json::{Map, Value};

use crate::duration::{DURATION_FORM, parse_duration};
use crate::validate::ValidationError;

/// Checks `value` against `schema`; `path` prefixes every reported field path.
pub fn check_value(value: &Value, schema: &Value, path: &str) -> Vec<ValidationError> {
    let mut out = Out::default();
    check(value, schema, path, "", &mut out);
    out.errors
}

/// A value that cannot be read as its Rust type (wrong type, unknown enum value, out of range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    /// JSON pointer relative to the checked value, e.g. `/spec/analysis/interval`.
    pub pointer: String,
    /// The same place as a field path, e.g. `spec.analysis.interval`.
    pub path: String,
}

/// Like [`check_value`], and also returns the values that have the wrong type or an unknown
/// enum value, so a caller can remove them and still check the rest of the document.
pub fn check_value_with_pointers(
    value: &Value,
    schema: &Value,
    path: &str,
) -> (Vec<ValidationError>, Vec<BadValue>) {
    let mut out = Out::default();
    check(value, schema, path, "", &mut out);
    (out.errors, out.bad_pointers)
}

#[derive(Default)]
struct Out {
    errors: Vec<ValidationError>,
    bad_pointers: Vec<BadValue>,
}

impl Out {
    fn push(&mut self, e: ValidationError) {
        self.errors.push(e);
    }

    /// An error that makes the value unreadable as its Rust type.
    fn bad(&mut self, pointer: &str, e: ValidationError) {
        self.bad_pointers.push(BadValue {
            pointer: pointer.to_string(),
            path: e.path.clone(),
        });
        self.errors.push(e);
    }
}

fn pointer_join(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", token.replace('~', "~0").replace('/', "~1"))
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn flag(schema: &Map<String, Value>, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn check(v: &Value, schema: &Value, path: &str, pointer: &str, out: &mut Out) {
    let Some(s) = schema.as_object() else {
        return;
    };
    if flag(s, "x-kubernetes-int-or-string") {
        let ok = v.is_string() || v.as_i64().is_some();
        if !ok {
            out.bad(
                pointer,
                ValidationError::new(
                    path,
                    format!("expected a port number or name, found {}", describe(v)),
                ),
            );
        }
        return;
    }
    let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    match s.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(obj) = v.as_object() else {
                out.bad(
                    pointer,
                    ValidationError::new(
                        path,
                        format!("expected a mapping, found {}", describe(v)),
                    ),
                );
                return;
            };
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties");
            for (key, child) in obj {
                if child.is_null() {
                    // The API server drops nulls of non-nullable fields; so does `strip_nulls`.
                    continue;
                }
                let child_path = join(path, key);
                let child_pointer = pointer_join(pointer, key);
                if let Some(child_schema) = props.and_then(|p| p.get(key)) {
                    check(child, child_schema, &child_path, &child_pointer, out);
                } else if let Some(extra) = additional.filter(|a| a.is_object()) {
                    check(child, extra, &child_path, &child_pointer, out);
                } else if preserve || additional.and_then(Value::as_bool) == Some(true) {
                    // Free-form by design.
                } else {
                    let accepted = props
                        .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default();
                    out.push(ValidationError::new(
                        child_path,
                        format!("unknown field {key:?}; accepted here: {accepted}"),
                    ));
                }
            }
            if let Some(required) = s.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if obj.get(name).is_none_or(Value::is_null) {
                        out.push(ValidationError::new(
                            join(path, name),
                            "required field is missing",
                        ));
                    }
                }
            }
        }
        Some("array") => {
            let Some(items) = v.as_array() else {
                out.bad(
                    pointer,
                    ValidationError::new(path, format!("expected a list, found {}", describe(v))),
                );
                return;
            };
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(
                        item,
                        item_schema,
                        &format!("{path}[{i}]"),
                        &format!("{pointer}/{i}"),
                        out,
                    );
                }
            }
        }
        Some("string") => match v.as_str() {
            None => {
                let is_duration = s.get("format").and_then(Value::as_str) == Some("duration");
                let message = if is_duration && v.is_number() {
                    format!("{v} has no unit; accepted: {DURATION_FORM}")
                } else {
                    format!("expected a string, found {}", describe(v))
                };
                out.bad(pointer, ValidationError::new(path, message));
            }
            Some(text) => {
                if let Some(allowed) = s.get("enum").and_then(Value::as_array)
                    && !allowed.iter().any(|a| a.as_str() == Some(text))
                {
                    // An empty string is Flagger's "default" for some enums; show it quoted.
                    let names: Vec<&str> = allowed
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|n| {
                            if n.is_empty() {
                                "\"\" (the default)"
                            } else {
                                n
                            }
                        })
                        .collect();
                    out.bad(
                        pointer,
                        ValidationError::new(
                            path,
                            format!("unknown value {text:?}; accepted: {}", names.join(", ")),
                        ),
                    );
                }
                if s.get("format").and_then(Value::as_str) == Some("duration")
                    && let Err(e) = parse_duration(text)
                {
                    out.push(ValidationError::new(
                        path,
                        format!("{e}; accepted: {DURATION_FORM}"),
                    ));
                }
            }
        },
        Some("integer") => {
            let Some(n) = v.as_i64() else {
                out.bad(
                    pointer,
                    ValidationError::new(
                        path,
                        format!("expected a whole number, found {}", describe(v)),
                    ),
                );
                return;
            };
            let (lo, hi) = match s.get("format").and_then(Value::as_str) {
                Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
                Some("uint32") => (0, i64::from(u32::MAX)),
                _ => (i64::MIN, i64::MAX),
            };
            let lo = s
                .get("minimum")
                .and_then(Value::as_i64)
                .unwrap_or(lo)
                .max(lo);
            if n < lo || n > hi {
                out.bad(
                    pointer,
                    ValidationError::new(
                        path,
                        format!("{n} is out of range; accepted: {lo}..={hi}"),
                    ),
                );
            }
        }
        Some("number") if !v.is_number() => {
            out.bad(
                pointer,
                ValidationError::new(path, format!("expected a number, found {}", describe(v))),
            );
        }
        Some("boolean") if !v.is_boolean() => {
            out.bad(
                pointer,
                ValidationError::new(
                    path,
                    format!("expected true or false, found {}", describe(v)),
                ),
            );
        }
        _ => {}
    }
}

/// Removes `key: null` entries from every mapping, as the API server does before validation.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, child| !child.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Lists every violation of the API server's structural-schema rules in `schema` (an
/// `openAPIV3Schema`), each as `path: problem`. Empty means the API server accepts it.
pub fn structural_problems(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    structural(schema, "openAPIV3Schema", &mut out);
    out
}

const JUNCTORS: [&str; 4] = ["allOf", "anyOf", "oneOf", "not"];

fn structural(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        out.push(format!("{path}: schema is not an object"));
        return;
    };
    let int_or_string = flag(s, "x-kubernetes-int-or-string");
    let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    let ty = s.get("type");
    match ty {
        None if !(int_or_string || preserve) => {
            out.push(format!("{path}: no type (and neither x-kubernetes-int-or-string nor x-kubernetes-preserve-unknown-fields)"));
        }
        Some(Value::String(t))
            if !["object", "array", "string", "integer", "number", "boolean"]
                .contains(&t.as_str()) =>
        {
            out.push(format!("{path}: unknown type {t:?}"));
        }
        Some(Value::String(_)) | None => {}
        Some(other) => out.push(format!(
            "{path}: type must be a single string, found {other}"
        )),
    }
    if int_or_string && ty.is_some() {
        out.push(format!(
            "{path}: x-kubernetes-int-or-string must not also set type"
        ));
    }
    for forbidden in [
        "$ref",
        "definitions",
        "$defs",
        "$schema",
        "patternProperties",
    ] {
        if s.contains_key(forbidden) {
            out.push(format!("{path}: {forbidden} is not allowed"));
        }
    }
    if s.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
        out.push(format!("{path}: uniqueItems: true is not allowed"));
    }
    if s.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.push(format!(
            "{path}: additionalProperties: false is not allowed"
        ));
    }
    if s.contains_key("properties") && s.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if (s.contains_key("properties") || s.contains_key("additionalProperties"))
        && ty.and_then(Value::as_str) != Some("object")
    {
        out.push(format!("{path}: properties need type: object"));
    }
    if s.contains_key("items") && ty.and_then(Value::as_str) != Some("array") {
        out.push(format!("{path}: items needs type: array"));
    }
    if ty.and_then(Value::as_str) == Some("array") {
        match s.get("items") {
            Some(Value::Object(_)) => {}
            Some(_) => out.push(format!("{path}: items must be a single schema")),
            None => out.push(format!("{path}: an array needs items")),
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        let ok = match ty.and_then(Value::as_str) {
            Some("string") => values.iter().all(Value::is_string),
            Some("integer") => values.iter().all(|v| v.as_i64().is_some()),
            _ => true,
        };
        if !ok {
            out.push(format!("{path}: enum values do not match the type"));
        }
    }
    for junctor in JUNCTORS {
        if let Some(j) = s.get(junctor) {
            // The int-or-string pattern is the one place types may appear in a junctor.
            let int_or_string_pattern = int_or_string && junctor == "anyOf";
            let branches: Vec<&Value> = match j {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for (i, branch) in branches.iter().enumerate() {
                junctor_branch(
                    branch,
                    &format!("{path}.{junctor}[{i}]"),
                    int_or_string_pattern,
                    out,
                );
            }
        }
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            structural(child, &format!("{path}.properties.{name}"), out);
        }
    }
    if let Some(extra) = s.get("additionalProperties").filter(|a| a.is_object()) {
        structural(extra, &format!("{path}.additionalProperties"), out);
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        structural(items, &format!("{path}.items"), out);
    }
}

/// Inside allOf/anyOf/oneOf/not only value validations may appear: no type, no defaults, no
/// descriptions, no nested structure the outer schema does not declare.
fn junctor_branch(branch: &Value, path: &str, types_allowed: bool, out: &mut Vec<String>) {
    let Some(b) = branch.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    for key in b.keys() {
        let forbidden = match key.as_str() {
            "type" => !types_allowed,
            "description" | "default" | "additionalProperties" | "nullable" | "title" => true,
            k if k.starts_with("x-kubernetes-") => true,
            "$ref" => true,
            _ => false,
        };
        if forbidden {
            out.push(format!(
                "{path}: {key} is not allowed inside a logical junctor"
            ));
        }
    }
    for key in ["properties", "items"] {
        if b.contains_key(key) {
            out.push(format!(
                "{path}: {key} inside a logical junctor (must be declared outside too; Serin never needs it)"
            ));
        }
    }
}

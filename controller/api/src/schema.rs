//! Hand-written schema fragments for fields the derive cannot describe structurally.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An object whose content Serin passes through without interpreting it (Istio traffic policy,
/// App Mesh service discovery, the engine's bookkeeping). `x-kubernetes-preserve-unknown-fields`
/// keeps the API server from pruning its fields.
pub(crate) fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Reads an optional enum where Flagger's Go types write an empty string for "unset" (`type: ""`
/// on a webhook, `severity: ""` on an alert).
pub(crate) fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::Deserialize;
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn string_enum_with_empty(names: &[&str]) -> Schema {
    let mut values = vec![serde_json::Value::String(String::new())];
    values.extend(names.iter().map(|n| serde_json::Value::String((*n).into())));
    json_schema!({ "type": "string", "enum": values })
}

/// `webhooks[].type`: the hook types, or `""` for the default.
pub(crate) fn hook_type(_: &mut SchemaGenerator) -> Schema {
    string_enum_with_empty(&crate::HookType::NAMES)
}

/// `alerts[].severity`: `info`, `warn`, `error`, or `""` for the default.
pub(crate) fn alert_severity(_: &mut SchemaGenerator) -> Schema {
    string_enum_with_empty(&["info", "warn", "error"])
}

/// `provider.headers`: Flagger's map of header name to values, or Serin's list of
/// `{name, value}`. A structural schema cannot say "object or array", so the API server keeps
/// the value as written and the semantic check reads both shapes.
pub(crate) fn provider_headers(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

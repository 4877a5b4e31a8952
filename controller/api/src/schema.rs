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

//! The committed CRDs match the types, and every schema is structural.

use serde_json::Value;
use serin_api::schema_check::structural_problems;

const COMMITTED: &str = include_str!("../../../../crds/serin.yaml");

#[test]
fn committed_crds_match_the_types() {
    let generated = serin_api::crds_yaml().expect("the CRDs render as YAML");
    if std::env::var_os("SERIN_UPDATE_CRDS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/serin.yaml");
        std::fs::write(path, &generated).expect("crds/serin.yaml is writable");
        return;
    }
    assert!(
        generated == COMMITTED,
        "crds/serin.yaml is out of date with the types in controller/api.\n\
         Regenerate it with:\n    cargo run -p serin-cli -- crds > crds/serin.yaml\n\
         or:\n    SERIN_UPDATE_CRDS=1 cargo test -p serin-api --test api crds::"
    );
}

fn schemas() -> Vec<(String, Value)> {
    serin_api::crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let json = serde_json::to_value(&crd).unwrap();
            let schema = json
                .pointer("/spec/versions/0/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or_else(|| panic!("{name} has a schema"));
            (name, schema)
        })
        .collect()
}

#[test]
fn every_schema_is_structural() {
    for (name, schema) in schemas() {
        let problems = structural_problems(&schema);
        assert!(
            problems.is_empty(),
            "{name} is not structural:\n{}",
            problems.join("\n")
        );
    }
}

#[test]
fn the_structural_check_catches_what_the_api_server_rejects() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "untyped": {"description": "no type"},
            "untagged": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "ref": {"$ref": "#/definitions/x"},
            "list": {"type": "array"},
            "closed": {"type": "object", "additionalProperties": false},
            "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }
    });
    let problems = structural_problems(&bad).join("\n");
    for expected in [
        "properties.untyped: no type",
        "properties.untagged.anyOf[0]: type is not allowed",
        "properties.untagged: no type",
        "properties.ref: $ref is not allowed",
        "properties.list: an array needs items",
        "properties.closed: additionalProperties: false",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in:\n{problems}"
        );
    }
    assert!(
        !problems.contains("properties.port"),
        "int-or-string is allowed:\n{problems}"
    );
    assert!(
        !problems.contains("properties.free"),
        "preserve-unknown is allowed:\n{problems}"
    );
}

#[test]
fn canary_crd_has_flagger_names_columns_and_status_subresource() {
    let crds = serin_api::crds();
    let canary = &crds[0];
    assert_eq!(canary.metadata.name.as_deref(), Some("canaries.serin.dev"));
    assert_eq!(canary.spec.group, "serin.dev");
    assert_eq!(canary.spec.names.kind, "Canary");
    assert_eq!(canary.spec.names.singular.as_deref(), Some("canary"));
    assert_eq!(
        canary.spec.names.short_names.as_deref(),
        Some(&["cd".to_string()][..])
    );
    let version = &canary.spec.versions[0];
    assert_eq!(version.name, "v1beta1");
    assert!(version.served && version.storage);
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<(&str, &str, i32)> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.json_path.as_str(),
                c.priority.unwrap_or(0),
            )
        })
        .collect();
    for expected in [
        ("Status", ".status.phase", 0),
        ("Weight", ".status.canaryWeight", 0),
        ("FailedChecks", ".status.failedChecks", 0),
        ("LastTransitionTime", ".status.lastTransitionTime", 0),
    ] {
        assert!(
            columns.contains(&expected),
            "missing column {expected:?} in {columns:?}"
        );
    }
    assert_eq!(
        crds[1].metadata.name.as_deref(),
        Some("metrictemplates.serin.dev")
    );
    assert_eq!(
        crds[2].metadata.name.as_deref(),
        Some("alertproviders.serin.dev")
    );
}

#[test]
fn free_form_fields_are_exactly_the_pass_through_ones() {
    let (_, canary) = &schemas()[0];
    let mut free = Vec::new();
    collect_preserved(canary, "", &mut free);
    free.sort();
    assert_eq!(
        free,
        [
            ".properties.spec.properties.service.properties.serviceDiscovery",
            ".properties.spec.properties.service.properties.trafficPolicy",
            ".properties.status.properties.serin",
        ]
    );
    let target_port = canary
        .pointer("/properties/spec/properties/service/properties/targetPort")
        .unwrap();
    assert_eq!(target_port["x-kubernetes-int-or-string"], true);
}

fn collect_preserved(schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        out.push(path.to_string());
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            collect_preserved(v, &format!("{path}.properties.{k}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            collect_preserved(&schema[key], &format!("{path}.{key}"), out);
        }
    }
}

//! The `MetricTemplate` custom resource: a reusable metric query, field-compatible with
//! Flagger's `flagger.app/v1beta1` MetricTemplate.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A metric query and the provider that answers it. Canaries reference it from
/// `spec.analysis.metrics[].templateRef`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "MetricTemplate",
    plural = "metrictemplates",
    singular = "metrictemplate",
    shortname = "mt",
    category = "all",
    category = "serin",
    namespaced,
    status = "MetricTemplateStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "MetricTemplate is a reusable metric query for canary analysis. Field-compatible with Flagger's flagger.app/v1beta1 MetricTemplate.",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider.type"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateSpec {
    /// Where the query runs.
    pub provider: MetricTemplateProvider,
    /// The query, a Go-style template: `{{ namespace }}`, `{{ target }}`, `{{ interval }}`,
    /// `{{ variables.<key> }}` and the other Flagger template functions are expanded.
    pub query: String,
}

/// Metric provider types Flagger defines; Serin's analysis decides which it can run.
pub const METRIC_PROVIDER_TYPES: [&str; 11] = [
    "prometheus",
    "influxdb",
    "datadog",
    "cloudwatch",
    "newrelic",
    "graphite",
    "dynatrace",
    "keptn",
    "splunk",
    "stackdriver",
    "externalmetrics",
];

/// The metrics backend a template queries.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateProvider {
    /// Provider type, e.g. `prometheus`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `http://` or `https://` address of the provider's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Secret holding the provider's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    /// Region of the provider (CloudWatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Skip TLS certificate verification.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// Extra HTTP headers sent with every query (e.g. `X-Scope-OrgID` for a multi-tenant Mimir
    /// or Cortex): Flagger's map of header name to values, or Serin's list of `{name, value}`.
    /// Credentials belong in `secretRef`, not here.
    #[serde(default, skip_serializing_if = "ProviderHeaders::is_empty")]
    #[schemars(schema_with = "crate::schema::provider_headers")]
    pub headers: ProviderHeaders,
}

/// Extra query headers in either accepted shape; kept in the shape written so it round-trips.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum ProviderHeaders {
    /// Serin's list of `{name, value}`.
    List(Vec<HttpHeader>),
    /// Flagger's shape (Go's `http.Header`): header name to its values.
    Map(BTreeMap<String, Vec<String>>),
}

impl Default for ProviderHeaders {
    fn default() -> Self {
        ProviderHeaders::List(Vec::new())
    }
}

impl ProviderHeaders {
    /// Whether no header is set.
    pub fn is_empty(&self) -> bool {
        match self {
            ProviderHeaders::List(l) => l.is_empty(),
            ProviderHeaders::Map(m) => m.is_empty(),
        }
    }

    /// Every `(name, value)` pair to send, a map entry with several values giving several pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        match self {
            ProviderHeaders::List(l) => l
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            ProviderHeaders::Map(m) => m
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for ProviderHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        const ACCEPTED: &str = "spec.provider.headers: accepted: a map of header name to a list of values (Flagger's form, e.g. X-Scope-OrgID: [team-a]) or a list of {name, value}";
        match serde_json::Value::deserialize(d)? {
            v @ serde_json::Value::Array(_) => serde_json::from_value(v)
                .map(ProviderHeaders::List)
                .map_err(|e| D::Error::custom(format!("{e}; {ACCEPTED}"))),
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(ProviderHeaders::Map)
                .map_err(|e| D::Error::custom(format!("{e}; {ACCEPTED}"))),
            other => Err(D::Error::custom(format!("found {other}; {ACCEPTED}"))),
        }
    }
}

/// One HTTP header.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// Header name, an HTTP token such as `X-Scope-OrgID`.
    pub name: String,
    /// Header value (visible ASCII).
    pub value: String,
}

/// Reference to a Secret in the same namespace. For a `prometheus` provider it holds either
/// `token` (sent as `Authorization: Bearer`) or `username` and `password` (basic auth).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    pub name: String,
}

/// Observed state of a MetricTemplate or AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateStatus {
    /// Conditions of this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ObjectCondition>,
}

/// A status condition of a MetricTemplate or AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCondition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition was last updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

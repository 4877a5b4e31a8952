//! The `AlertProvider` custom resource: where canary alerts are sent, field-compatible with
//! Flagger's `flagger.app/v1beta1` AlertProvider.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metric_template::{ObjectCondition, SecretReference};

/// A chat or webhook service canary alerts are sent to. Canaries reference it from
/// `spec.analysis.alerts[].providerRef`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "AlertProvider",
    plural = "alertproviders",
    singular = "alertprovider",
    shortname = "ap",
    category = "all",
    category = "serin",
    namespaced,
    status = "AlertProviderStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "AlertProvider is a destination for canary alerts. Field-compatible with Flagger's flagger.app/v1beta1 AlertProvider.",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AlertProviderSpec {
    /// Provider type: one of [`ALERT_PROVIDER_TYPES`].
    #[serde(rename = "type")]
    pub type_: String,
    /// Channel to post to (Slack, Rocket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Name the messages are posted as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `http://` or `https://` webhook address (or set `secretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP(S) proxy to reach the provider through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Secret whose `address` key holds the webhook address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// Alert provider types Flagger defines.
pub const ALERT_PROVIDER_TYPES: [&str; 5] = ["slack", "msteams", "discord", "rocket", "gchat"];

/// Alert provider types Serin adds to Flagger's: `generic`, a plain JSON document
/// (`{name, namespace, phase, severity, message, fields}`) for any receiver.
pub const SERIN_ALERT_PROVIDER_TYPES: [&str; 1] = ["generic"];

/// Observed state of an AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertProviderStatus {
    /// Conditions of this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ObjectCondition>,
}

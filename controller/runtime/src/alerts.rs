//! Alerts through `AlertProvider`s: Slack, Microsoft Teams, Discord and a generic JSON webhook.
//!
//! Severity filtering follows Flagger's documentation: an alert configured with `info` receives
//! everything, `warn` receives warnings and errors, `error` only errors — and an alert with no
//! severity set means `info` (Flagger documents that but its code drops such alerts).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::{HttpClient, HttpError, redirect_note, short_text};

/// How serious an event is, and the least serious an alert wants to hear about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Progress: a new revision, a weight change, a promotion.
    #[default]
    Info,
    /// Something a human should look at: halted advancement, a gate waiting.
    Warn,
    /// A rollback or a failed rollout.
    Error,
}

impl Severity {
    /// Parses the Canary's `analysis.alerts[].severity`; unset or empty means `info`.
    pub fn from_spec(value: Option<&str>) -> Result<Self, AlertError> {
        match value {
            None | Some("") => Ok(Severity::Info),
            Some(v) => v.parse(),
        }
    }

    /// Whether an alert configured at `self` wants an event of severity `event`.
    pub fn admits(self, event: Severity) -> bool {
        event >= self
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = AlertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "info" => Ok(Severity::Info),
            "warn" | "warning" => Ok(Severity::Warn),
            "error" => Ok(Severity::Error),
            other => Err(AlertError::Invalid {
                field: "severity",
                message: format!("{other:?} is not a severity; accepted: info, warn, error"),
            }),
        }
    }
}

/// Which chat or webhook format to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Slack incoming webhook (attachments). Rocket.Chat accepts the same body.
    Slack,
    /// Microsoft Teams incoming webhook (MessageCard).
    MsTeams,
    /// Discord webhook (embeds).
    Discord,
    /// Google Chat incoming webhook (`{"text": ...}`).
    GoogleChat,
    /// A plain JSON document for any receiver (see [`generic_body`]).
    Generic,
}

impl ProviderKind {
    /// Accepted values of `AlertProvider.spec.type`.
    pub const ACCEPTED: &'static str = "slack, rocket, msteams, discord, gchat, generic";
}

impl FromStr for ProviderKind {
    type Err = AlertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "slack" | "rocket" => Ok(ProviderKind::Slack),
            "msteams" => Ok(ProviderKind::MsTeams),
            "discord" => Ok(ProviderKind::Discord),
            "gchat" => Ok(ProviderKind::GoogleChat),
            "generic" | "webhook" => Ok(ProviderKind::Generic),
            other => Err(AlertError::Invalid {
                field: "spec.type",
                message: format!(
                    "alert provider type {other:?} is not supported; accepted: {}",
                    ProviderKind::ACCEPTED
                ),
            }),
        }
    }
}

/// How long one alert may take: 5 s, as Flagger's notifier allows each post (one attempt, no
/// retries). A receiver slower than that is reported as not delivered.
pub const ALERT_TIMEOUT: Duration = Duration::from_secs(5);

/// A resolved `AlertProvider` (address already read from its Secret when it had one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertTarget {
    /// Format.
    pub kind: ProviderKind,
    /// Webhook URL.
    pub address: String,
    /// Slack channel override.
    pub channel: Option<String>,
    /// Sender name shown by the chat (default `serin`).
    pub username: Option<String>,
    /// Per-send timeout ([`ALERT_TIMEOUT`] for every provider).
    pub timeout: Duration,
}

/// What to tell people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Canary name.
    pub name: String,
    /// Canary namespace.
    pub namespace: String,
    /// Phase when it happened.
    pub phase: String,
    /// How serious.
    pub severity: Severity,
    /// One human sentence.
    pub message: String,
    /// Extra facts shown as a table (target, revision, weight, failed checks…).
    pub fields: Vec<(String, String)>,
}

/// Why an alert could not be configured or delivered.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A configuration value is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// Field path.
        field: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// The receiver could not be reached.
    #[error("sending alert: {0}")]
    Http(#[from] HttpError),
    /// The receiver answered with an error status.
    #[error("alert receiver answered {status}: {body}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
}

impl AlertError {
    /// A stable, low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AlertError::Invalid { .. } => "invalid",
            AlertError::Http(HttpError::Timeout(_)) => "timeout",
            AlertError::Http(_) => "transport",
            AlertError::Rejected { .. } => "rejected",
        }
    }
}

fn slack_color(s: Severity) -> &'static str {
    match s {
        Severity::Info => "good",
        Severity::Warn => "warning",
        Severity::Error => "danger",
    }
}

fn hex_color(s: Severity) -> &'static str {
    match s {
        Severity::Info => "2EB886",
        Severity::Warn => "DAA038",
        Severity::Error => "A30200",
    }
}

/// Slack (and Rocket.Chat) incoming-webhook body.
pub fn slack_body(target: &AlertTarget, alert: &Alert) -> Value {
    let fields: Vec<Value> = alert
        .fields
        .iter()
        .map(|(k, v)| json!({"title": k, "value": v, "short": v.len() < 40}))
        .collect();
    let mut body = json!({
        "username": target.username.as_deref().unwrap_or("serin"),
        "attachments": [{
            "color": slack_color(alert.severity),
            "author_name": format!("{}.{}", alert.name, alert.namespace),
            "text": alert.message,
            "mrkdwn_in": ["text"],
            "fields": fields,
        }],
    });
    if let Some(ch) = &target.channel {
        body["channel"] = json!(ch);
    }
    body
}

/// Microsoft Teams MessageCard body.
pub fn msteams_body(alert: &Alert) -> Value {
    let facts: Vec<Value> = alert
        .fields
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "themeColor": hex_color(alert.severity),
        "summary": format!("{}.{}: {}", alert.name, alert.namespace, alert.message),
        "sections": [{
            "activityTitle": format!("{}.{}", alert.name, alert.namespace),
            "activitySubtitle": alert.message,
            "facts": facts,
        }],
    })
}

/// Discord webhook body (one embed).
pub fn discord_body(target: &AlertTarget, alert: &Alert) -> Value {
    let fields: Vec<Value> = alert
        .fields
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v, "inline": v.len() < 40}))
        .collect();
    let color = u32::from_str_radix(hex_color(alert.severity), 16).unwrap_or(0);
    json!({
        "username": target.username.as_deref().unwrap_or("serin"),
        "embeds": [{
            "title": format!("{}.{}", alert.name, alert.namespace),
            "description": alert.message,
            "color": color,
            "fields": fields,
        }],
    })
}

/// Whether a Discord webhook address is its Slack-compatible endpoint (`…/slack`).
fn speaks_slack(address: &str) -> bool {
    let path = address.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/').ends_with("/slack")
}

/// Google Chat body: one text message with the facts as lines.
pub fn gchat_body(alert: &Alert) -> Value {
    let mut text = format!(
        "*{}.{}* ({}): {}",
        alert.name, alert.namespace, alert.severity, alert.message
    );
    for (k, v) in &alert.fields {
        text.push_str(&format!("\n{k}: {v}"));
    }
    json!({ "text": text })
}

/// The generic body: `{name, namespace, phase, severity, message, fields: {k: v}}`.
pub fn generic_body(alert: &Alert) -> Value {
    let fields: serde_json::Map<String, Value> = alert
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "name": alert.name,
        "namespace": alert.namespace,
        "phase": alert.phase,
        "severity": alert.severity,
        "message": alert.message,
        "fields": fields,
    })
}

/// Sends alerts. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AlertClient {
    http: HttpClient,
}

impl AlertClient {
    /// Uses the shared HTTP client.
    pub fn new(http: HttpClient) -> Self {
        Self { http }
    }

    /// Posts one alert in the target's format; a status ≥ 300 is an error.
    #[tracing::instrument(skip_all, fields(canary = %alert.name, ns = %alert.namespace, severity = %alert.severity))]
    pub async fn send(&self, target: &AlertTarget, alert: &Alert) -> Result<(), AlertError> {
        let body = match target.kind {
            ProviderKind::Slack => slack_body(target, alert),
            ProviderKind::MsTeams => msteams_body(alert),
            // Discord's `/slack` endpoint reads Slack's format (Flagger always posts there).
            ProviderKind::Discord if speaks_slack(&target.address) => slack_body(target, alert),
            ProviderKind::Discord => discord_body(target, alert),
            ProviderKind::GoogleChat => gchat_body(alert),
            ProviderKind::Generic => generic_body(alert),
        };
        let bytes = Bytes::from(body.to_string());
        let resp = self
            .http
            .post_json(&target.address, bytes, &[], target.timeout)
            .await?;
        if resp.status.as_u16() >= 300 {
            return Err(AlertError::Rejected {
                status: resp.status.as_u16(),
                body: redirect_note(&resp).unwrap_or_else(|| short_text(&resp.body, 200)),
            });
        }
        Ok(())
    }
}

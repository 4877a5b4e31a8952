//! Kubernetes Events and alerts through `AlertProvider` objects.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder};
use kube::{Client, Resource};
use serin_api::{AlertProvider, Canary};
use serin_core::EventType;

use serin_controller::adapters::{
    AlertFailure, AlertRoute, CanaryContext, EventRecorder, Notifier,
};
use serin_controller::alerts::{
    ALERT_TIMEOUT, Alert, AlertClient, AlertError, AlertTarget, ProviderKind,
};
use serin_controller::metrics::Metrics;

/// Most bytes of an Event's note the API server accepts (events.k8s.io/v1 refuses longer ones).
pub const EVENT_NOTE_BYTES: usize = 1024;

/// `message` as an Event's note: at most [`EVENT_NOTE_BYTES`] bytes, cut at a character
/// boundary and ended with `…` when cut (a count of characters is not enough: a message with
/// non-ASCII text, such as a receiver's answer, is longer in bytes).
pub fn event_note(message: &str) -> String {
    if message.len() <= EVENT_NOTE_BYTES {
        return message.to_string();
    }
    let mut end = EVENT_NOTE_BYTES - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Publishes engine events as Kubernetes Events (events.k8s.io/v1) on the Canary.
pub struct KubeEvents {
    recorder: Recorder,
    canary: Arc<Canary>,
}

impl KubeEvents {
    /// Events about `canary` through `recorder`.
    pub fn new(recorder: Recorder, canary: Arc<Canary>) -> Self {
        Self { recorder, canary }
    }
}

#[async_trait]
impl EventRecorder for KubeEvents {
    async fn event(&self, ctx: &CanaryContext, kind: EventType, reason: &str, message: &str) {
        let ev = Event {
            type_: match kind {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: reason.to_string(),
            note: Some(event_note(message)),
            action: reason.to_string(),
            secondary: None,
        };
        let reference = self.canary.object_ref(&());
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            // An event that cannot be written must not fail a rollout step.
            tracing::warn!(canary = %ctx.id.name, ns = %ctx.id.namespace, error = %e, "publishing event failed");
        }
    }
}

/// Sends alerts through the AlertProviders the Canary's `analysis.alerts` reference.
pub struct KubeNotifier {
    client: Client,
    alerts: AlertClient,
    metrics: Arc<Metrics>,
}

impl KubeNotifier {
    /// A notifier reading AlertProviders (and their Secrets) with `client`.
    pub fn new(client: Client, alerts: AlertClient, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            alerts,
            metrics,
        }
    }

    async fn resolve(&self, route: &AlertRoute) -> Result<AlertTarget, AlertError> {
        let invalid = |field: &'static str, message: String| AlertError::Invalid { field, message };
        let api: Api<AlertProvider> =
            Api::namespaced(self.client.clone(), &route.provider_namespace);
        let provider = api
            .get_opt(&route.provider)
            .await
            .map_err(|e| {
                invalid(
                    "spec.analysis.alerts[].providerRef",
                    format!(
                        "reading AlertProvider {}/{}: {e}",
                        route.provider_namespace, route.provider
                    ),
                )
            })?
            .ok_or_else(|| {
                invalid(
                    "spec.analysis.alerts[].providerRef",
                    format!(
                        "AlertProvider {}/{} does not exist",
                        route.provider_namespace, route.provider
                    ),
                )
            })?;
        let kind: ProviderKind = provider.spec.type_.parse()?;
        if provider.spec.proxy.is_some() {
            return Err(invalid(
                "spec.proxy",
                "sending alerts through an HTTP proxy is not supported; remove spec.proxy".into(),
            ));
        }
        let address = match (&provider.spec.secret_ref, &provider.spec.address) {
            (Some(sref), _) => {
                let secrets: Api<Secret> =
                    Api::namespaced(self.client.clone(), &route.provider_namespace);
                let secret = secrets
                    .get_opt(&sref.name)
                    .await
                    .map_err(|e| {
                        invalid(
                            "spec.secretRef",
                            format!("reading Secret {}: {e}", sref.name),
                        )
                    })?
                    .ok_or_else(|| {
                        invalid(
                            "spec.secretRef",
                            format!("Secret {} does not exist", sref.name),
                        )
                    })?;
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get("address"))
                    .map(|b| b.0.clone())
                    .ok_or_else(|| {
                        invalid(
                            "spec.secretRef",
                            format!("Secret {} has no key `address`", sref.name),
                        )
                    })?;
                String::from_utf8(bytes).map_err(|_| {
                    invalid("spec.secretRef", "the `address` key is not UTF-8".into())
                })?
            }
            (None, Some(a)) => a.clone(),
            (None, None) => {
                return Err(invalid(
                    "spec.address",
                    "set spec.address or spec.secretRef".into(),
                ));
            }
        };
        Ok(AlertTarget {
            kind,
            address: address.trim().to_string(),
            channel: provider.spec.channel.clone(),
            username: provider.spec.username.clone(),
            timeout: ALERT_TIMEOUT,
        })
    }
}

#[async_trait]
impl Notifier for KubeNotifier {
    async fn alert(&self, ctx: &CanaryContext, alert: &Alert) {
        self.deliver(ctx, alert).await;
    }

    async fn deliver(&self, ctx: &CanaryContext, alert: &Alert) -> Vec<AlertFailure> {
        let mut failures = Vec::new();
        for route in ctx
            .alerts
            .iter()
            .filter(|r| r.severity.admits(alert.severity))
        {
            let result = match self.resolve(route).await {
                Ok(target) => self.alerts.send(&target, alert).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                self.metrics.error(&format!("alert-{}", e.kind()));
                tracing::warn!(canary = %ctx.id.name, ns = %ctx.id.namespace, alert = %route.name, error = %e, "alert not delivered");
                failures.push(AlertFailure {
                    alert: route.name.clone(),
                    provider: format!("{}/{}", route.provider_namespace, route.provider),
                    reason: e.to_string(),
                });
            }
        }
        failures
    }
}

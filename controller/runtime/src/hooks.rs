//! [`HttpHooks`]: the [`Hooks`] adapter that calls webhooks over HTTP with the
//! [`WebhookClient`]; the same on Kubernetes and locally.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serin_core::{Phase, Webhook};

use crate::adapters::{CanaryContext, Hooks};
use crate::webhook::{WebhookCall, WebhookClient, WebhookOutcome, WebhookPayload};

/// Calls each webhook at the address its [`crate::adapters::HookConfig`] gives.
#[derive(Debug, Clone, Default)]
pub struct HttpHooks {
    client: WebhookClient,
}

impl HttpHooks {
    /// Uses `client` for every call.
    pub fn new(client: WebhookClient) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Hooks for HttpHooks {
    async fn call(
        &self,
        canary: &CanaryContext,
        webhook: &Webhook,
        phase: Phase,
        checksum: &str,
        extra: BTreeMap<String, String>,
    ) -> WebhookOutcome {
        let Some(config) = canary.hooks.get(&webhook.name) else {
            // The plan and the hook table come from the same Canary; a miss is a bug upstream,
            // reported as a failed call so the history shows it.
            return WebhookOutcome {
                ok: false,
                status: None,
                body: String::new(),
                error: Some(format!(
                    "webhook {:?} has no address configured",
                    webhook.name
                )),
                attempts: 0,
                elapsed_ms: 0,
            };
        };
        if let (Some(field), None) = (&config.signing_secret_field, &config.signing_key) {
            // Calling unsigned would let a receiver that checks signatures reject it at best,
            // or trust an unsigned call at worst; fail the call and say why.
            return WebhookOutcome {
                ok: false,
                status: None,
                body: String::new(),
                error: Some(format!(
                    "{field}: no signing key was read (this platform reads it from a Kubernetes Secret); the webhook was not called"
                )),
                attempts: 0,
                elapsed_ms: 0,
            };
        }
        let mut metadata = config.metadata.clone();
        metadata.extend(extra);
        let call = WebhookCall {
            name: webhook.name.clone(),
            url: config.url.clone(),
            timeout: config.timeout,
            retries: config.retries,
            signing_key: config.signing_key.clone(),
            payload: WebhookPayload {
                name: canary.id.name.clone(),
                namespace: canary.id.namespace.clone(),
                phase: phase.as_str().to_string(),
                checksum: checksum.to_string(),
                metadata,
            },
        };
        self.client.call(&call).await
    }
}

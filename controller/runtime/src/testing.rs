//! Test doubles for the runtime's and the platforms' tests (feature `test-support`): never part
//! of a production build.

pub mod receiver;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serin_core::{Phase, Webhook};

use crate::adapters::{CanaryContext, Hooks};
use crate::webhook::WebhookOutcome;

/// Hooks for a test that is not about webhooks: every call is answered `200` on its first
/// attempt with an empty body.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptingHooks;

#[async_trait]
impl Hooks for AcceptingHooks {
    async fn call(
        &self,
        _canary: &CanaryContext,
        _webhook: &Webhook,
        _phase: Phase,
        _checksum: &str,
        _extra: BTreeMap<String, String>,
    ) -> WebhookOutcome {
        WebhookOutcome {
            ok: true,
            status: Some(200),
            body: String::new(),
            error: None,
            attempts: 1,
            elapsed_ms: 0,
        }
    }
}

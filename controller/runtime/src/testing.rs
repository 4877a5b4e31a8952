//! Test doubles for the runtime's and the platforms' tests (feature `test-support`): never part
//! of a production build.

pub mod receiver;

use crate::webhook::WebhookOutcome;

/// A webhook call answered `200` on its first attempt with an empty body: what a fake `Hooks`
/// returns when the test is not about webhooks.
pub fn accepted_webhook() -> WebhookOutcome {
    WebhookOutcome {
        ok: true,
        status: Some(200),
        body: String::new(),
        error: None,
        attempts: 1,
        elapsed_ms: 0,
    }
}

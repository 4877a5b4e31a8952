//! From a validated `Canary` (through `serin_api::Normalized`) to what the driver needs: the
//! engine's [`Plan`] and the runtime's [`CanaryContext`] (webhook addresses, alert routes).
//! Shared by the Kubernetes and the local controllers, so both read a Canary the same way.

use serin_api::{Canary, HookType, Normalized, StringMatch as ApiStringMatch, ValidationError};
use serin_core::{
    InconclusiveBudget, InconclusivePolicy, Mirror, Plan, RouteMatch, SessionAffinity, Strategy,
    StringMatch, Webhook, WebhookKind,
};

use crate::adapters::{AlertRoute, CanaryContext, CanaryId, HookConfig};
use crate::alerts::Severity;

/// The name under which the statistical judge's verdict appears among the checks.
pub const JUDGE_CHECK: &str = "judge";

/// Flagger's webhook type to the engine's.
pub fn webhook_kind(t: HookType) -> WebhookKind {
    match t {
        HookType::ConfirmRollout => WebhookKind::ConfirmRollout,
        HookType::PreRollout => WebhookKind::PreRollout,
        HookType::Rollout => WebhookKind::Rollout,
        HookType::ConfirmTrafficIncrease => WebhookKind::ConfirmTrafficIncrease,
        HookType::ConfirmPromotion => WebhookKind::ConfirmPromotion,
        HookType::PostRollout => WebhookKind::PostRollout,
        HookType::Rollback => WebhookKind::Rollback,
        HookType::Event => WebhookKind::Event,
    }
}

fn string_match(m: &ApiStringMatch) -> Option<StringMatch> {
    // Validation guarantees exactly one is set.
    if let Some(v) = &m.exact {
        Some(StringMatch::Exact(v.clone()))
    } else if let Some(v) = &m.prefix {
        Some(StringMatch::Prefix(v.clone()))
    } else if let Some(v) = &m.suffix {
        Some(StringMatch::Suffix(v.clone()))
    } else {
        m.regex.as_ref().map(|v| StringMatch::Regex(v.clone()))
    }
}

/// Flagger's A/B `match` entries to the engine's route matches (headers and query parameters;
/// other conditions are for Istio and are not routable by Gateway API backends).
pub fn route_matches(matches: &[serin_api::HttpMatchRequest]) -> Vec<RouteMatch> {
    matches
        .iter()
        .map(|m| RouteMatch {
            headers: m
                .headers
                .iter()
                .filter_map(|(k, v)| string_match(v).map(|s| (k.to_ascii_lowercase(), s)))
                .collect(),
            query_params: m
                .query_params
                .iter()
                .filter_map(|(k, v)| string_match(v).map(|s| (k.clone(), s)))
                .collect(),
        })
        .collect()
}

/// The engine's plan for a normalized Canary.
pub fn plan(n: &Normalized) -> Plan {
    let mirror = n.mirror_weight.map(|weight| Mirror { weight });
    let strategy = match &n.strategy {
        serin_api::Strategy::Canary { weights, .. } => Strategy::Canary {
            step_weights: weights.clone(),
            step_weight_promotion: n.step_weight_promotion,
            mirror,
        },
        serin_api::Strategy::AbTesting {
            iterations,
            matches,
        } => Strategy::AbTesting {
            iterations: *iterations,
            matches: route_matches(matches),
        },
        serin_api::Strategy::BlueGreen { iterations } => Strategy::BlueGreen {
            iterations: *iterations,
            mirror,
        },
    };
    let mut checks: Vec<String> = n.metrics.iter().map(|m| m.name.clone()).collect();
    if n.judge.is_some() {
        checks.push(JUDGE_CHECK.to_string());
    }
    Plan {
        strategy,
        interval: n.interval,
        threshold: n.threshold.max(1),
        progress_deadline: n.progress_deadline,
        skip_analysis: n.skip_analysis,
        suspend: n.suspend,
        webhooks: n
            .webhooks
            .iter()
            .map(|w| Webhook {
                name: w.name.clone(),
                kind: webhook_kind(w.hook_type),
            })
            .collect(),
        checks,
        // Without a judge an inconclusive check holds, as in Flagger.
        on_inconclusive: n
            .judge
            .as_ref()
            .map(|j| j.on_inconclusive)
            .unwrap_or(InconclusivePolicy::Wait),
        // Budgets come with the judge: without one, inconclusive checks hold as in Flagger.
        inconclusive_budget: n
            .judge
            .as_ref()
            .map(|j| InconclusiveBudget {
                step: Some(j.step_budget),
                run: Some(j.run_budget),
            })
            .unwrap_or_default(),
        primary_ready_threshold: n.primary_ready_threshold,
        canary_ready_threshold: n.canary_ready_threshold,
        session_affinity: n.session_affinity.as_ref().map(|(cookie_name, max_age)| {
            SessionAffinity {
                cookie_name: cookie_name.clone(),
                max_age: u32::try_from(max_age.as_secs()).unwrap_or(u32::MAX),
                primary_cookie_name: n.session_primary_cookie.clone(),
                attributes: n.session_cookie.clone(),
            }
        }),
        revert_on_deletion: n.revert_on_deletion,
    }
}

/// Validates and normalizes `canary`, then builds its [`CanaryContext`]. Webhook signing keys
/// live in Secrets (`webhooks[].signingSecretRef`); platforms read them and fill in
/// [`HookConfig::signing_key`] afterwards (see [`signing_secrets`]).
pub fn context(
    namespace: &str,
    canary: &Canary,
) -> Result<(Normalized, CanaryContext), Vec<ValidationError>> {
    let n = Normalized::from_canary(canary)?;
    let name = canary.metadata.name.clone().unwrap_or_default();
    let mut ctx = CanaryContext::new(
        CanaryId::new(namespace, name),
        plan(&n),
        n.target_name.clone(),
    );
    ctx.spec = Some(std::sync::Arc::new(n.clone()));
    ctx.metrics_server = canary.spec.metrics_server.clone();
    for (i, w) in n.webhooks.iter().enumerate() {
        ctx.hooks.insert(
            w.name.clone(),
            HookConfig {
                url: w.url.clone(),
                timeout: w.timeout,
                retries: w.retries,
                metadata: w.metadata.clone(),
                signing_key: None,
                signing_secret_field: w
                    .signing_secret
                    .as_ref()
                    .map(|_| format!("spec.analysis.webhooks[{i}].signingSecretRef")),
                mute_alert: w.mute_alert,
            },
        );
    }
    for a in &n.alerts {
        ctx.alerts.push(AlertRoute {
            name: a.name.clone(),
            severity: match a.severity {
                serin_api::AlertSeverity::Info => Severity::Info,
                serin_api::AlertSeverity::Warn => Severity::Warn,
                serin_api::AlertSeverity::Error => Severity::Error,
            },
            provider: a.provider.name.clone(),
            provider_namespace: a
                .provider
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.to_string()),
        });
    }
    Ok((n, ctx))
}

/// The webhooks whose calls must be signed: (webhook name, field path of its
/// `signingSecretRef`, the Secret reference), in spec order.
pub fn signing_secrets(n: &Normalized) -> Vec<(String, String, serin_api::SecretKeyReference)> {
    n.webhooks
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            w.signing_secret.as_ref().map(|s| {
                (
                    w.name.clone(),
                    format!("spec.analysis.webhooks[{i}].signingSecretRef"),
                    s.clone(),
                )
            })
        })
        .collect()
}

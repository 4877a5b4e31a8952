//! [`Plan`]: everything the engine needs to know from a `Canary` spec, already validated and
//! defaulted (the api crate turns a `Canary` into a `Plan`; the engine trusts it).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The validated, defaulted description of how one canary is analysed and promoted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// How traffic moves to the canary during the analysis.
    pub strategy: Strategy,
    /// Time between two analysis ticks (`analysis.interval`, default 60s).
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    /// Failed checks tolerated before a rollback (`analysis.threshold`; at least 1).
    pub threshold: u32,
    /// How long the canary or the primary may stay not ready before the run fails
    /// (`progressDeadlineSeconds`, default 600s).
    #[serde(with = "duration_ms")]
    pub progress_deadline: Duration,
    /// Promote a new revision straight away, without any analysis (`skipAnalysis`).
    pub skip_analysis: bool,
    /// Do nothing at all while set (`suspend`), except record that the canary is suspended.
    pub suspend: bool,
    /// Webhooks in spec order; the runtime calls gate kinds when [`crate::Needs`] asks for them and
    /// the engine emits notification kinds as actions.
    pub webhooks: Vec<Webhook>,
    /// Names of the metric checks (and of the statistical judge, when on) the runtime evaluates on
    /// every analysis tick; their results come back in [`crate::Observation::checks`].
    pub checks: Vec<String>,
    /// How an inconclusive verdict ends the run once [`Plan::inconclusive_budget`] is spent (the
    /// judge's `onInconclusive`; without a judge, wait).
    pub on_inconclusive: InconclusivePolicy,
    /// How long checks may stay inconclusive before `on_inconclusive` ends the run (the judge's
    /// `stepBudget` and `runBudget`; none without a judge).
    #[serde(default)]
    pub inconclusive_budget: InconclusiveBudget,
    /// Percentage of the primary's updated replicas that must be available
    /// (`analysis.primaryReadyThreshold`, default 100).
    pub primary_ready_threshold: u32,
    /// Percentage of the canary's updated replicas that must be available
    /// (`analysis.canaryReadyThreshold`, default 100).
    pub canary_ready_threshold: u32,
    /// Sticky sessions for users who reached the canary (`analysis.sessionAffinity`).
    pub session_affinity: Option<SessionAffinity>,
    /// Whether deleting the Canary hands the target back to its original owner
    /// (`revertOnDeletion`): scale the target back up and route all traffic to it.
    pub revert_on_deletion: bool,
}

/// How traffic moves from the primary to the canary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Strategy {
    /// Progressive traffic shifting: the canary weight climbs through `step_weights`; after the
    /// last one the canary is promoted.
    #[serde(rename_all = "camelCase")]
    Canary {
        /// The canary weights of the analysis steps, strictly increasing, each in 1..=100; the
        /// last one is the weight at which promotion starts (Flagger's maxWeight). Built by
        /// [`Strategy::linear`] from `stepWeight`/`maxWeight`, or taken from `stepWeights`.
        step_weights: Vec<u32>,
        /// Weight step used to shift traffic back to the primary while promoting
        /// (`stepWeightPromotion`); `None` moves all traffic at once.
        step_weight_promotion: Option<u32>,
        /// Mirror traffic to the canary for one tick before the first weight step.
        mirror: Option<Mirror>,
    },
    /// A/B testing: requests that match go to the canary for `iterations` ticks, the rest stay
    /// on the primary.
    #[serde(rename_all = "camelCase")]
    AbTesting {
        /// Number of analysis ticks before promotion (at least 1).
        iterations: u32,
        /// Requests matching any of these go to the canary.
        matches: Vec<RouteMatch>,
    },
    /// Blue/Green: the canary receives no user traffic (only load-test webhooks reach it, or a
    /// mirrored copy) for `iterations` ticks, then everything switches.
    #[serde(rename_all = "camelCase")]
    BlueGreen {
        /// Number of analysis ticks before promotion (at least 1).
        iterations: u32,
        /// Mirror user traffic to the canary during the iterations.
        mirror: Option<Mirror>,
    },
}

impl Strategy {
    /// Step weights `step, 2*step, ...` up to and including `max_weight` (Flagger's
    /// `stepWeight`/`maxWeight`). When `max_weight` is not a multiple of `step`, the last step is
    /// `max_weight` itself so the canary never receives more than `maxWeight`. Returns an empty
    /// list when `step` is 0; callers validate before building a plan.
    pub fn linear(step: u32, max_weight: u32) -> Vec<u32> {
        let max_weight = max_weight.min(100);
        if step == 0 || max_weight == 0 {
            return Vec::new();
        }
        let mut weights: Vec<u32> = (1..)
            .map(|i| step.saturating_mul(i))
            .take_while(|w| *w < max_weight)
            .collect();
        weights.push(max_weight);
        weights
    }

    /// The weight at which promotion starts (canary strategy) or `None` (A/B, Blue/Green).
    pub fn max_weight(&self) -> Option<u32> {
        match self {
            Strategy::Canary { step_weights, .. } => step_weights.last().copied(),
            _ => None,
        }
    }

    /// The number of iterations before promotion (A/B, Blue/Green) or `None` (canary).
    pub fn iterations(&self) -> Option<u32> {
        match self {
            Strategy::AbTesting { iterations, .. } | Strategy::BlueGreen { iterations, .. } => {
                Some(*iterations)
            }
            Strategy::Canary { .. } => None,
        }
    }

    /// The mirror settings, when traffic is mirrored.
    pub fn mirror(&self) -> Option<Mirror> {
        match self {
            Strategy::Canary { mirror, .. } | Strategy::BlueGreen { mirror, .. } => *mirror,
            Strategy::AbTesting { .. } => None,
        }
    }
}

/// Traffic mirroring (`analysis.mirror` / `analysis.mirrorWeight`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Percentage of primary traffic copied to the canary (`mirrorWeight`; 100 when unset).
    pub weight: u32,
}

/// One A/B match rule: every listed header and query parameter must match (Flagger's `match`
/// entries are ORed; the conditions within one entry are ANDed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Header name (lower case) to the condition on its value.
    pub headers: Vec<(String, StringMatch)>,
    /// Query parameter name to the condition on its value.
    pub query_params: Vec<(String, StringMatch)>,
}

/// A condition on a string value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// The value equals this.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
    /// The value ends with this.
    Suffix(String),
    /// The value matches this regular expression (RE2 syntax).
    Regex(String),
}

/// Sticky sessions: a user routed to the canary gets a cookie that keeps them there for the rest
/// of the run (`analysis.sessionAffinity`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// Cookie name (`cookieName`, default `flagger-cookie`).
    pub cookie_name: String,
    /// Cookie lifetime in seconds (`maxAge`, default 86400).
    pub max_age: u32,
    /// Name of the cookie that pins users the primary answered to the primary for the rest of
    /// the run (`primaryCookieName`); none = users who reached the primary may still be moved
    /// to the canary as its weight grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    /// The cookie's other `Set-Cookie` attributes (domain, path, SameSite, flags).
    #[serde(default, skip_serializing_if = "CookieAttributes::is_empty")]
    pub attributes: CookieAttributes,
}

/// The `SameSite` attribute of a cookie.
// One definition for the engine's plan and the Canary's `sessionAffinity.sameSite` (serin-api
// re-exports it): the doc line above is the CRD schema's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Also sent on top-level cross-site navigations.
    Lax,
    /// Sent on every request (browsers then require `secure`).
    None,
}

impl SameSite {
    /// The attribute value as written in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// `Set-Cookie` attributes of the affinity cookie besides its value and `Max-Age`.
// Also the Canary's `sessionAffinity` attributes (serin-api flattens this struct into its
// block): the field docs are the CRD schema's descriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CookieAttributes {
    /// `Domain` attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `Path` attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `SameSite` attribute of the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    /// Send the cookie over HTTPS only (`Secure`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure: bool,
    /// Hide the cookie from scripts (`HttpOnly`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http_only: bool,
    /// Store the cookie per top-level site (`Partitioned`, CHIPS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partitioned: bool,
}

impl CookieAttributes {
    /// Whether no attribute is set.
    pub fn is_empty(&self) -> bool {
        *self == CookieAttributes::default()
    }

    /// The attributes as they follow `name=value; Max-Age=N` in a `Set-Cookie` header, each
    /// with its leading `"; "` (empty when none is set). The order is RFC 6265's.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(d) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(d);
        }
        if let Some(p) = &self.path {
            out.push_str("; Path=");
            out.push_str(p);
        }
        if self.secure {
            out.push_str("; Secure");
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        if let Some(s) = self.same_site {
            out.push_str("; SameSite=");
            out.push_str(s.as_str());
        }
        if self.partitioned {
            out.push_str("; Partitioned");
        }
        out
    }
}

/// A webhook the engine knows by name and kind; URL, timeout and metadata stay with the runtime.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// The webhook's unique name within the canary.
    pub name: String,
    /// When and how it is used.
    #[serde(rename = "type")]
    pub kind: WebhookKind,
}

/// The eight Flagger webhook types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WebhookKind {
    /// Gate before a new revision starts; failing keeps the canary `Waiting` (never a failure).
    #[serde(rename = "confirm-rollout")]
    ConfirmRollout,
    /// Called once on the first analysis tick; failing counts as a failed check.
    #[serde(rename = "pre-rollout")]
    PreRollout,
    /// Called on every analysis tick (load tests, custom checks); failing counts as a failed check.
    #[serde(rename = "rollout")]
    Rollout,
    /// Gate before every weight increase; failing holds the weight (never a failure).
    #[serde(rename = "confirm-traffic-increase")]
    ConfirmTrafficIncrease,
    /// Gate before promotion; failing keeps the canary `WaitingPromotion` (never a failure).
    #[serde(rename = "confirm-promotion")]
    ConfirmPromotion,
    /// Notification after the run ends (Succeeded or Failed).
    #[serde(rename = "post-rollout")]
    PostRollout,
    /// Polled while the run is waiting or progressing; a success rolls the canary back.
    #[serde(rename = "rollback")]
    Rollback,
    /// Notification for every event the engine emits.
    #[serde(rename = "event")]
    Event,
}

impl WebhookKind {
    /// The name used in manifests (`confirm-rollout`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::ConfirmRollout => "confirm-rollout",
            WebhookKind::PreRollout => "pre-rollout",
            WebhookKind::Rollout => "rollout",
            WebhookKind::ConfirmTrafficIncrease => "confirm-traffic-increase",
            WebhookKind::ConfirmPromotion => "confirm-promotion",
            WebhookKind::PostRollout => "post-rollout",
            WebhookKind::Rollback => "rollback",
            WebhookKind::Event => "event",
        }
    }

    /// Whether the runtime calls this kind and feeds the result back (as opposed to the engine
    /// emitting it as a notification action).
    pub fn is_gate(self) -> bool {
        !matches!(self, WebhookKind::PostRollout | WebhookKind::Event)
    }
}

/// What an inconclusive check verdict does to the run. Within the [`InconclusiveBudget`] every
/// policy holds the step; once a budget is spent the run ends as the policy says.
///
/// The Canary's `spec.analysis.judge.onInconclusive` is this enum (serin-api re-exports it as
/// `OnInconclusive`, and so does serin-analysis); there an unset field means
/// [`judge_defaults::ON_INCONCLUSIVE`](crate::judge_defaults::ON_INCONCLUSIVE) (`rollback`),
/// here the default (no judge) is `wait`. The variants are in the CRD schema's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        description = "How a run ends when the judge stays inconclusive past its budget (`stepBudget`,\n`runBudget`). While within budget an inconclusive judge always holds the weight."
    )
)]
pub enum InconclusivePolicy {
    /// Roll back: never promote without evidence (the judge's default).
    Rollback,
    /// Promote without evidence.
    Promote,
    /// Hold the step (no advance, no failure) and look again next tick, however long it takes.
    #[default]
    Wait,
    /// Pause the run until a human resumes, promotes or aborts it (at once when no budget is
    /// set).
    Pause,
}

impl InconclusivePolicy {
    /// The spelling in the Canary (`onInconclusive`).
    pub fn as_str(self) -> &'static str {
        match self {
            InconclusivePolicy::Wait => "wait",
            InconclusivePolicy::Pause => "pause",
            InconclusivePolicy::Rollback => "rollback",
            InconclusivePolicy::Promote => "promote",
        }
    }
}

/// How long an inconclusive analysis may go on (see [`InconclusivePolicy`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InconclusiveBudget {
    /// Longest time at one step without a decision, measured from the step's start.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_ms"
    )]
    pub step: Option<Duration>,
    /// Longest run without a decision, measured from the first analysis tick.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_ms"
    )]
    pub run: Option<Duration>,
}

impl InconclusiveBudget {
    /// Whether any budget is set.
    pub fn is_set(&self) -> bool {
        self.step.is_some() || self.run.is_some()
    }
}

/// Millisecond (de)serialization for optional durations.
mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Millisecond (de)serialization for durations in [`Plan`], so plans read well as JSON.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_steps_stop_at_max_weight() {
        assert_eq!(Strategy::linear(10, 50), vec![10, 20, 30, 40, 50]);
        assert_eq!(Strategy::linear(20, 50), vec![20, 40, 50]);
        assert_eq!(Strategy::linear(60, 50), vec![50]);
        assert_eq!(Strategy::linear(5, 100).len(), 20);
        assert_eq!(Strategy::linear(0, 50), Vec::<u32>::new());
    }
}

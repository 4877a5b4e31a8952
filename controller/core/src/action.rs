//! [`Action`]: what the engine decided the runtime must do, and [`HistoryEntry`]: why.

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::observation::{CheckResult, Command, GateResult};
use crate::plan::{RouteMatch, Webhook};
use crate::status::Phase;

/// One thing for the runtime to do. Actions are listed in the order they must be carried out.
///
/// Workload and routing actions are idempotent (they state a desired state), so carrying out one
/// transition's actions twice after a crash is harmless; notifications may then repeat once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Create (or update) the primary workload from the target's current template, scaled like
    /// the target, and the primary/canary services.
    InitializePrimary,
    /// Scale the target (the canary) to zero.
    ScaleCanaryToZero,
    /// Scale the target (the canary) back up from zero for analysis.
    ScaleCanaryUp,
    /// Route traffic as stated.
    SetRoutes(Routes),
    /// Copy the canary's template (and tracked configs) to the primary.
    PromoteCanaryToPrimary {
        /// The revision being promoted.
        revision: String,
    },
    /// Hand the target back to its owner when the Canary is deleted (`revertOnDeletion`): scale
    /// the target up and route all traffic to it.
    RevertTarget,
    /// Send a notification webhook (`post-rollout` or `event`).
    Notify {
        /// The webhook to call.
        webhook: Webhook,
        /// The phase to report in the payload.
        phase: Phase,
        /// The event message (for `event` webhooks) or the run's conclusion (`post-rollout`).
        message: String,
        /// For `event` webhooks, the type of the Kubernetes Event this call mirrors (sent as
        /// `metadata.eventType`, `Normal` or `Warning`, as Flagger sends it); `None` for
        /// `post-rollout`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_type: Option<EventType>,
    },
    /// Send an alert to the canary's alert providers.
    Alert {
        /// How bad it is.
        severity: Severity,
        /// What happened.
        message: String,
    },
    /// Record a Kubernetes-style event on the Canary.
    Event {
        /// Normal or Warning.
        #[serde(rename = "type")]
        kind: EventType,
        /// Short machine-readable reason (`Synced`, `Progressing`, ...).
        reason: String,
        /// Human-readable message.
        message: String,
    },
    /// Append to the canary's history.
    Record(HistoryEntry),
}

/// How traffic is split between primary and canary. `primary_weight + canary_weight == 100`.
///
/// With `matches` (A/B testing), requests matching any rule go to the canary and the weights
/// split the remaining requests (the engine then sends 100/0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Routes {
    /// Percentage to the primary.
    pub primary_weight: u32,
    /// Percentage to the canary.
    pub canary_weight: u32,
    /// Percentage of primary traffic mirrored to the canary (responses discarded); `None` = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_weight: Option<u32>,
    /// A/B: requests matching any rule go to the canary; the weights split the rest. Empty =
    /// weights apply to all requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// Sticky sessions for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityRoutes>,
}

impl Routes {
    /// All traffic to the primary, nothing mirrored.
    pub fn all_primary() -> Self {
        Routes {
            primary_weight: 100,
            canary_weight: 0,
            mirror_weight: None,
            matches: Vec::new(),
            affinity: None,
        }
    }
}

/// Session affinity while shifting: a response from the canary sets `cookie`, and requests that
/// carry it go to the canary; requests carrying `expire` (an earlier run's cookie) get it expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffinityRoutes {
    /// Cookie name.
    pub cookie_name: String,
    /// `name=value` set on responses from the canary; `None` once the run is over (the primary
    /// then expires it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Cookie lifetime in seconds.
    pub max_age: u32,
    /// `name=value` of an earlier cookie the primary expires (`Max-Age=-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<String>,
    /// Domain, path, SameSite and flags of every cookie.
    #[serde(default, skip_serializing_if = "crate::CookieAttributes::is_empty")]
    pub attributes: crate::CookieAttributes,
    /// `primaryCookieName`: while the run is live, responses from the primary set a cookie of
    /// this name (with the run's value) and requests carrying it stay on the primary; the
    /// primary expires an earlier run's one as it does the canary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
}

impl AffinityRoutes {
    /// The whole `Set-Cookie` value responses from the canary carry, if any.
    pub fn set_cookie(&self) -> Option<String> {
        self.cookie
            .as_ref()
            .map(|c| format!("{c}; Max-Age={}{}", self.max_age, self.attributes.render()))
    }

    /// The whole `Set-Cookie` value that expires an earlier cookie, if any. It carries the same
    /// Domain and Path, without which a browser keeps the original.
    pub fn expire_cookie(&self) -> Option<String> {
        self.expire
            .as_ref()
            .map(|c| format!("{c}; Max-Age=-1{}", self.attributes.render()))
    }

    /// `name=value` of the primary's cookie while the run is live (`primaryCookieName` with the
    /// run's cookie value), if one is configured.
    pub fn primary_cookie(&self) -> Option<String> {
        let name = self.primary_cookie_name.as_ref()?;
        let (_, value) = self.cookie.as_ref()?.split_once('=')?;
        Some(format!("{name}={value}"))
    }

    /// The whole `Set-Cookie` value responses from the primary carry while the run is live.
    pub fn set_primary_cookie(&self) -> Option<String> {
        self.primary_cookie()
            .map(|c| format!("{c}; Max-Age={}{}", self.max_age, self.attributes.render()))
    }

    /// The whole `Set-Cookie` value that expires an earlier run's primary cookie, if any.
    pub fn expire_primary_cookie(&self) -> Option<String> {
        let name = self.primary_cookie_name.as_ref()?;
        let (_, value) = self.expire.as_ref()?.split_once('=')?;
        Some(format!(
            "{name}={value}; Max-Age=-1{}",
            self.attributes.render()
        ))
    }

    /// Every `Set-Cookie` value a response from the primary carries, in order: the primary's
    /// own cookie, then the expiries of an earlier run's cookies.
    pub fn primary_set_cookies(&self) -> Vec<String> {
        [
            self.set_primary_cookie(),
            self.expire_cookie(),
            self.expire_primary_cookie(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Alert severity (Flagger's `info`, `warn`, `error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs attention.
    Warn,
    /// Something failed.
    Error,
}

/// Kubernetes event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Routine progress.
    Normal,
    /// Something held or failed.
    Warning,
}

/// One line of the canary's history: what happened and why, with the evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When.
    pub at: Timestamp,
    /// The run (0 before the first run).
    pub run: u64,
    /// The revision concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What kind of moment this was.
    pub kind: HistoryKind,
    /// Phase after this tick.
    pub phase: Phase,
    /// Step within the run after this tick.
    pub step: u32,
    /// Canary weight after this tick.
    pub canary_weight: u32,
    /// Iterations after this tick.
    pub iterations: u32,
    /// Failed checks after this tick.
    pub failed_checks: u32,
    /// The run's threshold, so `failed_checks` reads as "2 of 5".
    pub threshold: u32,
    /// Every check result seen this tick: value versus bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Every gate result seen this tick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
    /// Commands applied this tick, with who and when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<Command>,
    /// The reason in words (e.g. "check request-success-rate 91.2 < 99: failed 2 of 5").
    pub message: String,
    /// What the tick measured, canary and primary side by side (entries of kind `Measured`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Box<crate::Sample>>,
}

/// What kind of history moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HistoryKind {
    /// The primary was created and is ready.
    Initialized,
    /// A new revision was detected and a run started.
    RunStarted,
    /// A newer revision arrived mid-run; the analysis restarted.
    RunRestarted,
    /// A confirm gate is holding the run.
    Waiting,
    /// The analysis advanced (weight step, mirror step or iteration).
    Advanced,
    /// Nothing advanced this tick (inconclusive verdict, gate, not ready, paused).
    Held,
    /// A check or a pre-rollout/rollout webhook failed.
    CheckFailed,
    /// A manual command was applied.
    Command,
    /// Promotion started.
    Promoting,
    /// The run ended with the revision promoted.
    Succeeded,
    /// The run ended with the revision rolled back.
    RolledBack,
    /// The Canary is being deleted.
    Terminating,
    /// What one analysis tick measured (`sample`), for charts; recorded by the runtime every
    /// tick that ran the checks, not by the engine.
    Measured,
    /// A notification (a post-rollout or event webhook, or an alert) was not delivered; the
    /// rollout went on regardless. Recorded by the runtime, not by the engine.
    NotificationFailed,
}

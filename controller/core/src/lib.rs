//! The canary engine: a pure state machine implementing Flagger's canary lifecycle.
//!
//! [`step`]`(plan, status, observation, now)` returns a [`Transition`]: the next [`Status`] and the
//! [`Action`]s the runtime must carry out (scale, route, promote, notify, record history).
//! [`needs`]`(plan, status, now)` tells the runtime what to observe before the next step: whether a
//! tick is due, which gate webhooks to call, whether to run the metric checks.
//!
//! What this crate is not: it does no I/O, reads no clock (time is an argument), knows nothing of
//! Kubernetes, HTTP or metric providers, and is not async. The runtime owns all of that and
//! persists [`Status`] between ticks; everything the engine needs to stay correct across a restart
//! lives in [`Status`].
//!
//! The runtime's loop, in order:
//! 1. `needs(plan, status, now)`; if not `due` and there are no commands, sleep until `wake_at`.
//! 2. Observe what [`Needs`] asks for (target revision, readiness, gate webhooks, checks) and any
//!    pending manual commands into an [`Observation`].
//! 3. `step(plan, status, observation, now)`.
//! 4. Carry out the transition's actions in order, then persist its status.
//!
//! Phases, webhook semantics and the order of checks within a tick follow Flagger's scheduler.
//! Where Serin deliberately differs:
//! - it rolls back on the tick the failed checks reach the threshold (Flagger waits one more
//!   interval), and keeps `failedChecks` on the Failed status so it still says why;
//! - a `stepWeight` that does not divide `maxWeight` ends on `maxWeight` instead of overshooting;
//! - confirm-traffic-increase is not asked at max weight (there is no increase left);
//! - a target reverted to the promoted revision mid-run ends the run (Flagger keeps analysing);
//! - a primary that never becomes ready during initialization fails the canary without scaling
//!   the target down (it may be what serves users);
//! - stepwise promotion from a zero canary weight (A/B, manual promote) finalises instead of
//!   staying in Promoting; skipAnalysis promotions send post-rollout notifications too;
//! - holds (not ready, waiting for a gate, inconclusive checks) are reported once per reason, not
//!   on every tick, and gate webhooks that passed are not called again within the same step.

mod action;
pub mod duration;
mod engine;
pub mod judge_defaults;
mod observation;
mod plan;
mod sample;
/// The simulated world: a test double of the runtime (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod sim;
mod status;
mod time;

pub use action::{Action, AffinityRoutes, EventType, HistoryEntry, HistoryKind, Routes, Severity};
pub use engine::{
    GateCall, Needs, ON_INCONCLUSIVE, Transition, awaits_workload, may_await_workload, needs, step,
};
pub use observation::{
    Bound, CheckResult, Command, CommandAction, GateResult, Observation, Readiness, TargetState,
    Verdict,
};
pub use plan::{
    CookieAttributes, InconclusiveBudget, InconclusivePolicy, Mirror, Plan, RouteMatch, SameSite,
    SessionAffinity, Strategy, StringMatch, Webhook, WebhookKind,
};
pub use sample::{ArmSample, JudgeEvidence, JudgeSample, Sample};
pub use status::{
    CONDITION_PROMOTED, Condition, ConditionStatus, GateState, Pause, Phase, Run, RunOutcome,
    Status,
};
pub use time::{Timestamp, TimestampError};

//! The generic driver: one tick of one canary, independent of the platform.
//!
//! ```text
//! needs(plan, status, now) ──► observe (workloads, routes in force, gates, checks, commands)
//!        ──► step(plan, status, observation, now) ──► carry out actions in order ──► save status
//! ```
//!
//! Ordering guarantees that make a killed controller resume correctly:
//! - Actions run in the order the engine listed them; the first failing idempotent action stops
//!   the tick and *nothing is saved*, so the next tick decides again from the same status (the
//!   engine's actions are desired states, so repeating them is harmless).
//! - The status is saved once, after every action succeeded, together with the history entries
//!   of the tick. A gate that passed is remembered in the saved status, so it is not called
//!   again after a restart; a promotion is marked in the status only once it was carried out.
//! - A tick that changes nothing but the engine's scheduling time (`lastTickAt`: an idle Canary's
//!   tick, a hold that holds) writes nothing. Its time is kept in memory ([`Schedule`]) and laid
//!   over the persisted status of the next tick, so the next tick is still due an interval
//!   later. A restarted controller has no memory and reads the persisted time, which is older:
//!   its first tick comes early, observes, and again changes nothing. Everything a tick decides
//!   is in the status; only the time of a tick that decided nothing is lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serin_core::{
    Action, Command, GateResult, HistoryEntry, HistoryKind, Observation, Phase, Routes, Status,
    Timestamp, Transition,
};

use crate::adapters::{
    AdapterError, Analyzer, CanaryContext, CanaryId, ErrorKind, EventRecorder, Hooks, Notifier,
    Router, Store, Workloads,
};
use crate::alerts::{Alert, Severity};
use crate::deliveries::{Notification, Outgoing, alert_failed, push_once, webhook_failed};
use crate::metrics::Metrics;

/// How long a tick waits for a weight change to be in force before it judges anyway (in
/// multiples of the analysis interval), so one dead proxy cannot stall every rollout.
pub const IN_FORCE_PATIENCE_INTERVALS: u32 = 2;

/// How soon to look again while waiting for routes to be in force.
pub const IN_FORCE_RECHECK: Duration = Duration::from_secs(2);

/// The adapters one driver uses. Cheap to clone.
#[derive(Clone)]
pub struct Driver {
    /// Target and primary workloads.
    pub workloads: Arc<dyn Workloads>,
    /// Traffic routing.
    pub router: Arc<dyn Router>,
    /// Metric checks and the judge.
    pub analyzer: Arc<dyn Analyzer>,
    /// Webhook calls.
    pub hooks: Arc<dyn Hooks>,
    /// Status, history and commands.
    pub store: Arc<dyn Store>,
    /// Alerts.
    pub notifier: Arc<dyn Notifier>,
    /// Events.
    pub events: Arc<dyn EventRecorder>,
    /// Controller metrics.
    pub metrics: Arc<Metrics>,
    /// The times of ticks that were not written (shared by every driver of one controller).
    pub schedule: Arc<Schedule>,
}

/// The scheduling time (`lastTickAt`) of each Canary whose last due tick changed nothing else and
/// so was not written, with the persisted time it was taken over. It is laid over the persisted
/// status only while that status still carries the same persisted time: once anything (this
/// controller's next save, another replica) wrote the status, the written one counts.
#[derive(Debug, Default)]
pub struct Schedule(Mutex<HashMap<CanaryId, Unsaved>>);

#[derive(Debug, Clone, Copy)]
struct Unsaved {
    persisted: Option<Timestamp>,
    ticked: Timestamp,
}

impl Schedule {
    /// Replaces `status.last_tick_at` with the unsaved tick's time when `status` is the one that
    /// tick started from.
    pub fn overlay(&self, id: &CanaryId, status: &mut Status) {
        let Ok(mut m) = self.0.lock() else { return };
        match m.get(id) {
            Some(u) if u.persisted == status.last_tick_at => status.last_tick_at = Some(u.ticked),
            Some(_) => {
                m.remove(id);
            }
            None => {}
        }
    }

    /// Remembers an unsaved tick at `ticked` taken over a status persisted with `persisted`.
    pub fn remember(&self, id: &CanaryId, persisted: Option<Timestamp>, ticked: Timestamp) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(id.clone(), Unsaved { persisted, ticked });
        }
    }

    /// Forgets a Canary (its status was written, or it is gone).
    pub fn forget(&self, id: &CanaryId) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(id);
        }
    }

    /// How many Canaries have an unsaved tick.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no Canary has an unsaved tick.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

/// What one tick did.
#[derive(Debug, Clone, PartialEq)]
pub enum TickOutcome {
    /// The engine stepped; its actions were carried out and `status` was saved.
    Stepped {
        /// The saved status.
        status: Box<Status>,
        /// The actions carried out, in order.
        actions: Vec<Action>,
        /// When the next tick is due (`None`: only on a change).
        wake_at: Option<Timestamp>,
    },
    /// The tick was due and observed, and the engine changed nothing but its scheduling time:
    /// nothing was carried out or written (the time is kept in the [`Schedule`]).
    Unchanged {
        /// When the next tick is due.
        wake_at: Option<Timestamp>,
    },
    /// Nothing was due and no command was pending; nothing was observed or saved.
    Idle {
        /// When the next tick is due.
        wake_at: Option<Timestamp>,
    },
    /// The last weight change is not in force everywhere yet; judging now would mix two weights.
    /// Nothing was saved; look again after `retry`.
    WaitingForRoutes {
        /// When to look again.
        retry: Duration,
    },
    /// A Canary being deleted with revertOnDeletion: its target is scaled up but not ready
    /// yet, so the traffic is not handed back to it. Nothing was saved; look again after
    /// `retry` (the wait is bounded from [`CanaryContext::deleting_since`]).
    WaitingForTarget {
        /// When to look again.
        retry: Duration,
        /// What the target still lacks.
        missing: String,
    },
}

impl TickOutcome {
    /// How long to sleep before the next tick, measured from `now`; `None` = until a change.
    pub fn requeue_after(&self, now: Timestamp) -> Option<Duration> {
        match self {
            TickOutcome::Stepped { wake_at, .. }
            | TickOutcome::Unchanged { wake_at }
            | TickOutcome::Idle { wake_at } => wake_at.map(|w| w.since(now)),
            TickOutcome::WaitingForRoutes { retry }
            | TickOutcome::WaitingForTarget { retry, .. } => Some(*retry),
        }
    }
}

/// A tick that could not complete.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Observing failed; nothing was decided.
    #[error("observing: {0}")]
    Observe(#[source] AdapterError),
    /// An action failed; the status was not saved.
    #[error("carrying out {action}: {source}")]
    Act {
        /// The action's name.
        action: &'static str,
        /// Why.
        #[source]
        source: AdapterError,
    },
    /// Saving the status failed after every action succeeded.
    #[error("saving status: {0}")]
    Save(#[source] AdapterError),
}

impl DriverError {
    /// The class of the underlying adapter error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DriverError::Observe(e) | DriverError::Save(e) => e.kind,
            DriverError::Act { source, .. } => source.kind,
        }
    }
}

/// The name of an action, for errors and logs.
pub fn action_name(a: &Action) -> &'static str {
    match a {
        Action::InitializePrimary => "initialize-primary",
        Action::ScaleCanaryToZero => "scale-canary-to-zero",
        Action::ScaleCanaryUp => "scale-canary-up",
        Action::SetRoutes(_) => "set-routes",
        Action::PromoteCanaryToPrimary { .. } => "promote",
        Action::RevertTarget => "revert-target",
        Action::Notify { .. } => "notify",
        Action::Alert { .. } => "alert",
        Action::Event { .. } => "event",
        Action::Record(_) => "record",
    }
}

/// The checksum sent in webhook payloads: the revision under analysis and its configs, so a
/// receiver can tell two runs apart.
pub fn checksum(status: &Status) -> String {
    let (rev, configs) = match &status.run {
        Some(run) => (run.revision.as_str(), &run.configs),
        None => (
            status.last_applied_spec.as_deref().unwrap_or(""),
            &status.tracked_configs,
        ),
    };
    if configs.is_empty() {
        return rev.to_string();
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(rev.as_bytes());
    for (k, v) in configs {
        ctx.update(b"\0");
        ctx.update(k.as_bytes());
        ctx.update(b"=");
        ctx.update(v.as_bytes());
    }
    let d = ctx.finish();
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The routes the status says are in effect (weights only; what `in_force` compares).
pub fn current_routes(status: &Status) -> Routes {
    Routes {
        primary_weight: status.primary_weight(),
        canary_weight: status.canary_weight,
        ..Routes::all_primary()
    }
}

/// Flagger's finalizer waits for a reverted target: 3 s doubling, four times (each capped at
/// the analysis interval), so at most 45 s with a one-minute interval. Serin looks again every
/// [`REVERT_RETRY`] within the same total, each look a tick of its own: a wait never holds a
/// reconcile slot, a shutdown or a lost lease.
const REVERT_WAITS: [Duration; 4] = [
    Duration::from_secs(3),
    Duration::from_secs(6),
    Duration::from_secs(12),
    Duration::from_secs(24),
];

/// How often a reverted target that is not ready yet is looked at again.
const REVERT_RETRY: Duration = Duration::from_secs(2);

/// How long a deletion waits for its reverted target (Flagger's total).
fn revert_budget(plan: &serin_core::Plan) -> Duration {
    let cap = plan.interval.max(Duration::from_secs(1));
    REVERT_WAITS.iter().map(|w| (*w).min(cap)).sum()
}

impl Driver {
    /// One tick: loads status and pending commands from the store, then [`Driver::tick_with`].
    pub async fn tick(
        &self,
        ctx: &CanaryContext,
        deleting: bool,
        now: Timestamp,
    ) -> Result<TickOutcome, DriverError> {
        let status = self
            .store
            .load(&ctx.id)
            .await
            .map_err(DriverError::Observe)?
            .unwrap_or_default();
        let commands = self
            .store
            .pending_commands(&ctx.id)
            .await
            .map_err(DriverError::Observe)?;
        self.tick_with(ctx, status, commands, deleting, now).await
    }

    /// One tick from a given persisted `status` and pending `commands` (platforms that already
    /// hold them, like the Kubernetes controller reading the Canary object, call this).
    #[tracing::instrument(skip_all, fields(canary = %ctx.id.name, ns = %ctx.id.namespace))]
    pub async fn tick_with(
        &self,
        ctx: &CanaryContext,
        status: Status,
        commands: Vec<Command>,
        deleting: bool,
        now: Timestamp,
    ) -> Result<TickOutcome, DriverError> {
        let outcome = self.step_once(ctx, status, commands, deleting, now).await;
        if let Err(e) = &outcome {
            self.metrics.reconcile_error(e.kind().as_str());
        }
        outcome
    }

    async fn step_once(
        &self,
        ctx: &CanaryContext,
        mut status: Status,
        commands: Vec<Command>,
        deleting: bool,
        now: Timestamp,
    ) -> Result<TickOutcome, DriverError> {
        self.metrics.canary_seen(&ctx.id.name, &ctx.id.namespace);
        let persisted_tick = status.last_tick_at;
        self.schedule.overlay(&ctx.id, &mut status);
        let fresh: Vec<Command> = commands
            .into_iter()
            .filter(|c| !status.applied_command_ids.contains(&c.id))
            .collect();
        let needs = serin_core::needs(&ctx.plan, &status, now);
        // Early looks: a command, deletion, a target the platform saw change, or a workload the
        // canary waits for (reading it is cheap where watches hold it; the engine moves only
        // once it is ready).
        let early = ctx.target_changed || serin_core::awaits_workload(&ctx.plan, &status);
        if !needs.due && fresh.is_empty() && !deleting && !early {
            return Ok(TickOutcome::Idle {
                wake_at: Some(needs.wake_at),
            });
        }

        let workloads = self
            .workloads
            .observe(ctx)
            .await
            .map_err(DriverError::Observe)?;

        let mut checks = Vec::new();
        let mut analysis = None;
        let mut sample = None;
        if needs.run_checks && !deleting {
            // A window must not mix two weights: wait until the last routing change is in force
            // (bounded, so one stuck proxy cannot stall the rollout forever).
            let in_force = self
                .router
                .in_force(ctx, &current_routes(&status))
                .await
                .map_err(DriverError::Observe)?;
            if !in_force {
                let patience = ctx.plan.interval * IN_FORCE_PATIENCE_INTERVALS;
                let waited = status
                    .last_tick_at
                    .map(|t| now.since(t))
                    .unwrap_or_default();
                if waited < patience {
                    tracing::info!("waiting for the new weight to be in force before judging");
                    return Ok(TickOutcome::WaitingForRoutes {
                        retry: IN_FORCE_RECHECK.min(ctx.plan.interval),
                    });
                }
                tracing::warn!(
                    waited_secs = waited.as_secs(),
                    "routing still not in force everywhere; judging anyway"
                );
            }
            // The analyzer continues from the state saved with the status, so the judge's
            // sequential test survives a restart; its new state is saved with this tick's
            // status below, or not at all when the tick fails (the looks are then repeated
            // from the same saved state, never counted twice).
            let saved = self
                .store
                .load_analysis(&ctx.id)
                .await
                .map_err(DriverError::Observe)?;
            let checked = self
                .analyzer
                .run_checks_from(ctx, &status, saved.as_ref())
                .await
                .map_err(DriverError::Observe)?;
            checks = checked.checks;
            analysis = checked.state;
            // Both arms side by side for the charts, and the judge's evidence; a sample that
            // cannot be measured only leaves a gap in the charts.
            sample = match self.analyzer.sample(ctx, &status).await {
                Ok(s) => s.map(|mut s| {
                    // Measured at the weight in force before this tick's step.
                    s.canary_weight = status.canary_weight;
                    s
                }),
                Err(error) => {
                    tracing::debug!(%error, "no chart sample this tick");
                    None
                }
            };
        }

        let sum = checksum(&status);
        let mut gates = Vec::new();
        if !deleting {
            for call in &needs.gates {
                let webhook = &call.webhook;
                let outcome = self
                    .hooks
                    .call(ctx, webhook, call.phase, &sum, BTreeMap::new())
                    .await;
                gates.push(GateResult {
                    name: webhook.name.clone(),
                    kind: webhook.kind,
                    passed: outcome.ok,
                    detail: outcome.summary(),
                });
            }
        }

        let observation = Observation {
            target: workloads.target,
            primary: workloads.primary,
            canary: workloads.canary,
            checks,
            gates,
            commands: fresh,
            deleting,
        };
        let before = status.clone();
        let Transition { status, actions } =
            serin_core::step(&ctx.plan, &before, &observation, now);
        if !needs.due
            && !deleting
            && observation.commands.is_empty()
            && actions.is_empty()
            && status == before
        {
            // An early look (the target changed) that the engine had nothing to do about.
            return Ok(TickOutcome::Idle {
                wake_at: Some(needs.wake_at),
            });
        }

        if actions.iter().all(reasserts)
            && !deleting
            && observation.checks.is_empty()
            && sample.is_none()
            && analysis.is_none()
            && same_besides_schedule(&before, &status)
            // Notifications that failed since the last write are recorded by this tick.
            && !self.notifier.queue().is_some_and(|q| q.has_failed(&ctx.id))
        {
            // Nothing to write but the tick's time (an idle Canary, a hold that holds): keep
            // that in memory. The desired states the engine asserts again (the primary while it
            // is waited for) are carried out; adapters skip what is already so. The store
            // still writes what else it keeps, if that changed.
            self.act_all(
                ctx,
                &status,
                &actions,
                now,
                &mut Vec::new(),
                &mut Notifying::default(),
            )
            .await?;
            let wrote = self
                .store
                .save_if_changed(ctx, &status)
                .await
                .map_err(DriverError::Save)?;
            match status.last_tick_at {
                Some(ticked) if !wrote => self.schedule.remember(&ctx.id, persisted_tick, ticked),
                _ => self.schedule.forget(&ctx.id),
            }
            self.record_metrics(ctx, &before, &status, &observation, None, now);
            return Ok(TickOutcome::Unchanged {
                wake_at: Some(serin_core::needs(&ctx.plan, &status, now).wake_at),
            });
        }

        let mut history: Vec<HistoryEntry> = Vec::new();
        if actions.iter().any(|a| matches!(a, Action::RevertTarget)) {
            // As Flagger's finalizer: the target first, then (once it is ready, or after a
            // bounded wait) the traffic, which `act` hands back. Routing first would send every
            // request to a target still scaled to zero until its pods start.
            self.workloads
                .revert(ctx)
                .await
                .map_err(|source| DriverError::Act {
                    action: "revert-target",
                    source,
                })?;
            if let Some((missing, may_come_up)) = self.target_missing(ctx).await {
                let waited = ctx.deleting_since.map(|since| now.since(since));
                let budget = revert_budget(&ctx.plan);
                if let Some(waited) = waited.filter(|w| may_come_up && *w < budget) {
                    tracing::info!(%missing, waited_secs = waited.as_secs(), budget_secs = budget.as_secs(), "waiting for the reverted target before handing the traffic back");
                    return Ok(TickOutcome::WaitingForTarget {
                        retry: REVERT_RETRY,
                        missing,
                    });
                }
                tracing::warn!(%missing, "target not ready after the revert wait; handing the traffic back anyway, as Flagger does");
                let message = if may_come_up {
                    format!(
                        "the target was not ready after the revert wait ({missing}); the traffic was handed back to it anyway"
                    )
                } else {
                    format!("{missing}: the traffic was handed back without waiting")
                };
                history.push(runtime_entry(
                    ctx,
                    &status,
                    now,
                    HistoryKind::Terminating,
                    message,
                ));
            }
        }
        let mut notifying = Notifying::default();
        self.act_all(ctx, &status, &actions, now, &mut history, &mut notifying)
            .await?;
        let judged = sample
            .as_ref()
            .and_then(|s| s.judge.as_ref())
            .map(|j| j.verdict);
        if let Some(entry) = measured(ctx, &status, now, sample, &observation.checks, &history) {
            history.push(entry);
        }
        // What the queue could not deliver since the last write happened before this tick's
        // entries; it is taken only for this write and handed back if the write fails.
        let queue = self.notifier.queue();
        let earlier = queue.map(|q| q.take_failed(&ctx.id)).unwrap_or_default();
        if !earlier.is_empty() {
            history.splice(0..0, earlier.iter().cloned());
        }
        if let Err(e) = self
            .store
            .save_with_analysis(ctx, &status, &history, analysis.as_ref())
            .await
        {
            if let Some(q) = queue {
                q.give_back(&ctx.id, earlier);
            }
            return Err(DriverError::Save(e));
        }
        // Handed over only now: a tick that failed is decided again (and its notifications
        // sent again) by the next one.
        if let Some(q) = queue {
            q.enqueue(ctx, std::mem::take(&mut notifying.queued));
        }
        self.schedule.forget(&ctx.id);
        self.record_metrics(ctx, &before, &status, &observation, judged, now);
        let wake_at = Some(serin_core::needs(&ctx.plan, &status, now).wake_at);
        Ok(TickOutcome::Stepped {
            status: Box::new(status),
            actions,
            wake_at,
        })
    }

    /// What the target (the canary workload) still lacks after a revert, and whether it can
    /// still come up (worth waiting for); `None` once it is ready.
    async fn target_missing(&self, ctx: &CanaryContext) -> Option<(String, bool)> {
        match self.workloads.observe(ctx).await {
            Ok(state) => match state.canary {
                Some(r) if r.desired > 0 => r
                    .check(ctx.plan.canary_ready_threshold)
                    .err()
                    .map(|missing| (missing, true)),
                Some(_) => Some(("the target asks for no replicas".to_string(), true)),
                // Deleted with its Canary (one `kubectl delete -f`, a namespace being
                // deleted): nothing will come up, so no wait holds the deletion for it.
                None => Some(("the target does not exist".to_string(), false)),
            },
            Err(error) => Some((error.to_string(), true)),
        }
    }

    /// Carries out `actions` in order; the first failure stops them.
    async fn act_all(
        &self,
        ctx: &CanaryContext,
        status: &Status,
        actions: &[Action],
        now: Timestamp,
        history: &mut Vec<HistoryEntry>,
        notifying: &mut Notifying,
    ) -> Result<(), DriverError> {
        for action in actions {
            self.act(ctx, status, action, now, history, notifying)
                .await
                .map_err(|source| DriverError::Act {
                    action: action_name(action),
                    source,
                })?;
        }
        Ok(())
    }

    async fn act(
        &self,
        ctx: &CanaryContext,
        status: &Status,
        action: &Action,
        now: Timestamp,
        history: &mut Vec<HistoryEntry>,
        notifying: &mut Notifying,
    ) -> Result<(), AdapterError> {
        match action {
            Action::InitializePrimary => self.workloads.initialize_primary(ctx).await,
            Action::ScaleCanaryToZero => self.workloads.scale_canary_to_zero(ctx).await,
            Action::ScaleCanaryUp => self.workloads.scale_canary_up(ctx).await,
            Action::SetRoutes(routes) => self.router.set_routes(ctx, routes).await,
            Action::PromoteCanaryToPrimary { revision } => {
                self.workloads.promote(ctx, revision).await
            }
            // The workloads were reverted, and the target waited for, before the actions ran.
            Action::RevertTarget => self.router.revert(ctx).await,
            Action::Notify {
                webhook,
                phase,
                message,
                event_type,
            } => {
                if notifying.unanswered.contains(&webhook.name) {
                    tracing::debug!(hook = %webhook.name, "not called again this tick: it did not answer");
                    return Ok(());
                }
                let mut extra = BTreeMap::new();
                if webhook.kind == serin_core::WebhookKind::Event {
                    let event_type = match event_type {
                        Some(serin_core::EventType::Warning) => "Warning",
                        Some(serin_core::EventType::Normal) | None => "Normal",
                    };
                    extra.insert("eventMessage".to_string(), message.clone());
                    extra.insert("eventType".to_string(), event_type.to_string());
                    extra.insert("timestamp".to_string(), now.as_millis().to_string());
                }
                let failed = notification_failed(ctx, status, now, String::new());
                if self.notifier.queue().is_some() {
                    notifying.queued.push(Outgoing {
                        notification: Notification::Webhook {
                            webhook: webhook.clone(),
                            phase: *phase,
                            checksum: checksum(status),
                            extra,
                        },
                        failed,
                    });
                    return Ok(());
                }
                let outcome = self
                    .hooks
                    .call(ctx, webhook, *phase, &checksum(status), extra)
                    .await;
                // A notification that fails does not fail the tick (Flagger logs it); the
                // history keeps the answer so the failure is visible where people look.
                if !outcome.ok && outcome.status.is_none() && outcome.attempts > 0 {
                    notifying.unanswered.insert(webhook.name.clone());
                }
                if !outcome.ok {
                    tracing::warn!(hook = %webhook.name, result = %outcome.summary(), "notification webhook failed");
                    self.metrics.error("webhook");
                    push_once(history, webhook_failed(failed, webhook, &outcome));
                }
                Ok(())
            }
            Action::Alert { severity, message } => {
                let alert = Alert {
                    name: ctx.id.name.clone(),
                    namespace: ctx.id.namespace.clone(),
                    phase: status.phase.as_str().to_string(),
                    severity: Severity::from(*severity),
                    message: message.clone(),
                    fields: alert_fields(ctx, status),
                };
                let entry = notification_failed(ctx, status, now, String::new());
                if self.notifier.queue().is_some() {
                    notifying.queued.push(Outgoing {
                        notification: Notification::Alert(alert),
                        failed: entry,
                    });
                    return Ok(());
                }
                for failed in self.notifier.deliver(ctx, &alert).await {
                    push_once(history, alert_failed(entry.clone(), &alert, &failed));
                }
                Ok(())
            }
            Action::Event {
                kind,
                reason,
                message,
            } => {
                self.events.event(ctx, *kind, reason, message).await;
                Ok(())
            }
            Action::Record(entry) => {
                history.push(entry.clone());
                Ok(())
            }
        }
    }

    fn record_metrics(
        &self,
        ctx: &CanaryContext,
        before: &Status,
        after: &Status,
        observation: &Observation,
        judged: Option<serin_core::Verdict>,
        now: Timestamp,
    ) {
        let (name, ns) = (&ctx.id.name, &ctx.id.namespace);
        self.metrics.set_phase(name, ns, after.phase.as_str());
        let (primary, canary) = match &ctx.spec {
            Some(n) => (n.primary_name.clone(), n.canary_name.clone()),
            None => (
                format!("{}-primary", ctx.target),
                format!("{}-canary", ctx.target),
            ),
        };
        self.metrics
            .set_info(name, ns, &ctx.target, &primary, &canary);
        self.metrics
            .rollout_counters(name, ns, ctx.strategy_name, &ctx.plan.checks);
        // Progress as Flagger stamps `lastTransitionTime`: a phase change, and also each weight
        // step or iteration and each change of the failed-check count within a phase, so a long
        // healthy analysis never reads as stuck to `SerinCanaryStuck`.
        let stepped = after.canary_weight != before.canary_weight
            || after.failed_checks != before.failed_checks
            || after.iterations != before.iterations;
        let progress = [
            after.last_transition_time,
            after.run.as_ref().and_then(|r| r.step_started_at),
            stepped.then_some(now),
        ]
        .into_iter()
        .flatten()
        .max();
        self.metrics.set_progress(
            name,
            ns,
            progress.map(|t| t.as_millis() as f64 / 1000.0),
            ctx.plan.progress_deadline.as_secs_f64(),
        );
        self.metrics
            .set_weights(&ctx.target, ns, after.primary_weight(), after.canary_weight);
        for check in &observation.checks {
            if let Some(v) = check.value {
                self.metrics.set_metric(name, ns, &check.name, v);
            }
            self.metrics
                .check_verdict(name, ns, &check.name, verdict_label(check.verdict));
        }
        if let Some(v) = judged {
            self.metrics.judge_verdict(name, ns, verdict_label(v));
        }
        let ended = |p: Phase| matches!(p, Phase::Succeeded | Phase::Failed);
        if ended(after.phase) && (!ended(before.phase) || before.runs != after.runs) {
            let seconds = after
                .run
                .as_ref()
                .map(|r| now.since(r.started_at).as_secs_f64());
            self.metrics.rollout_finished(
                name,
                ns,
                ctx.strategy_name,
                after.phase == Phase::Succeeded,
                seconds,
            );
        }
    }
}

/// What the notifications of one tick leave for the rest of it.
#[derive(Default)]
struct Notifying {
    /// Webhooks that gave no answer in this tick (sent from the tick): each further call would
    /// cost its whole timeout again (an event hook is called once per event), so they are not
    /// called again until the next tick; the failure is in the history once.
    unanswered: BTreeSet<String>,
    /// For the background queue, handed over once the tick is saved.
    queued: Vec<Outgoing>,
}

/// Whether `action` only asserts a desired state again, recording and telling nobody (so a tick
/// made only of such actions and an unchanged status has nothing to write).
fn reasserts(action: &Action) -> bool {
    matches!(
        action,
        Action::InitializePrimary
            | Action::ScaleCanaryToZero
            | Action::ScaleCanaryUp
            | Action::SetRoutes(_)
    )
}

/// Whether `after` differs from `before` in nothing but the engine's scheduling time.
fn same_besides_schedule(before: &Status, after: &Status) -> bool {
    *before
        == Status {
            last_tick_at: before.last_tick_at,
            ..after.clone()
        }
}

/// The `verdict` label value.
fn verdict_label(v: serin_core::Verdict) -> &'static str {
    match v {
        serin_core::Verdict::Pass => "pass",
        serin_core::Verdict::Fail => "fail",
        serin_core::Verdict::Inconclusive => "inconclusive",
    }
}

impl From<serin_core::Severity> for Severity {
    fn from(s: serin_core::Severity) -> Self {
        match s {
            serin_core::Severity::Info => Severity::Info,
            serin_core::Severity::Warn => Severity::Warn,
            serin_core::Severity::Error => Severity::Error,
        }
    }
}

/// The `Measured` entry of a tick that ran the checks: the chart sample, and the checks
/// themselves when no entry of the engine carries them (it reports a hold once, so the checks of
/// the repeated ticks of a long hold would otherwise leave no trace).
fn measured(
    ctx: &CanaryContext,
    status: &Status,
    now: Timestamp,
    sample: Option<serin_core::Sample>,
    checks: &[serin_core::CheckResult],
    recorded: &[HistoryEntry],
) -> Option<HistoryEntry> {
    let unrecorded = !checks.is_empty() && recorded.iter().all(|e| e.checks.is_empty());
    if sample.is_none() && !unrecorded {
        return None;
    }
    let mut entry = runtime_entry(ctx, status, now, HistoryKind::Measured, String::new());
    entry.sample = sample.map(Box::new);
    if unrecorded {
        entry.checks = checks.to_vec();
    }
    Some(entry)
}

/// A history entry for a notification that was not delivered, at the status it was sent for.
fn notification_failed(
    ctx: &CanaryContext,
    status: &Status,
    now: Timestamp,
    message: String,
) -> HistoryEntry {
    runtime_entry(ctx, status, now, HistoryKind::NotificationFailed, message)
}

/// A history entry the runtime records itself (not the engine), with the position fields of
/// `status`.
fn runtime_entry(
    ctx: &CanaryContext,
    status: &Status,
    now: Timestamp,
    kind: HistoryKind,
    message: String,
) -> HistoryEntry {
    let run = status.run.as_ref();
    HistoryEntry {
        at: now,
        run: run.map_or(0, |r| r.id),
        revision: run
            .map(|r| r.revision.clone())
            .or_else(|| status.last_applied_spec.clone()),
        kind,
        phase: status.phase,
        step: run.map_or(0, |r| r.step),
        canary_weight: status.canary_weight,
        iterations: status.iterations,
        failed_checks: status.failed_checks,
        threshold: ctx.plan.threshold.max(1),
        checks: Vec::new(),
        gates: Vec::new(),
        commands: Vec::new(),
        message,
        sample: None,
    }
}

fn alert_fields(ctx: &CanaryContext, status: &Status) -> Vec<(String, String)> {
    let mut fields = vec![
        ("Target".to_string(), ctx.target.clone()),
        ("Phase".to_string(), status.phase.as_str().to_string()),
        (
            "Traffic".to_string(),
            format!(
                "primary {}% / canary {}%",
                status.primary_weight(),
                status.canary_weight
            ),
        ),
        (
            "Failed checks".to_string(),
            format!("{} of {}", status.failed_checks, ctx.plan.threshold),
        ),
    ];
    if let Some(run) = &status.run {
        fields.push(("Revision".to_string(), run.revision.clone()));
    }
    fields
}

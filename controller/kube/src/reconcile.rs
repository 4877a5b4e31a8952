//! One reconcile of a Canary, in three parts:
//! - [`prepare`] reads the Canary (the freshest copy, see [`crate::adapters::LastWrites`]) and
//!   decides what this reconcile is: forget a Canary that is gone, reject a spec that cannot
//!   run, add or remove the finalizer first, or tick;
//! - [`apply`] ticks a live Canary and asks for the next tick when it is due;
//! - [`cleanup`] ticks a Canary being deleted (the driver hands the target back for
//!   `revertOnDeletion`) and then lets the deletion proceed.
//!
//! Apply and cleanup are the two events of kube-runtime's `finalizer` helper; Serin keeps its
//! own finalizer handling because the finalizer follows `revertOnDeletion` (only a Canary that
//! must hand its target back holds one) and a rejected Canary must still be deletable.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use serin_api::Canary;

use super::adapters::Prepared;
use super::config_watch::ConfigWatch;
use super::context::Context;
use super::routing::{Provider, parse_provider};
use super::status::{
    self, CONDITION_IGNORED, CONDITION_PROVIDER, CONDITION_SYNCED, CONDITION_VALID,
    RuntimeCondition,
};
use super::{FINALIZER, STORES_READY_WAIT, kube_error};
use serin_controller::adapters::{AdapterError, CanaryContext, ErrorKind};
use serin_controller::driver::{DriverError, TickOutcome};

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The tick failed.
    #[error(transparent)]
    Tick(#[from] DriverError),
    /// A direct API call (finalizer, status) failed.
    #[error(transparent)]
    Api(#[from] AdapterError),
}

impl ReconcileError {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::Tick(e) => e.kind(),
            ReconcileError::Api(e) => e.kind,
        }
    }
}

/// What a reconcile is about: a live Canary, or one being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Apply,
    Cleanup,
}

/// What the prepare step decided.
enum Decision {
    /// Deleted and not held by our finalizer: nothing of ours is left to do.
    Forget,
    /// The spec cannot run (invalid, or a provider this Serin does not drive); the conditions
    /// say why, and the Canary waits for an edit.
    Reject(Vec<RuntimeCondition>),
    /// The finalizer must be added (`true`) or removed first; that edit wakes the Canary again.
    Finalizer(bool),
    /// Something the tick needs is missing; the conditions say what, the error backs off.
    Blocked(Vec<RuntimeCondition>, AdapterError),
    /// The stored `status.serin.state` does not read: the engine does not run and the stored
    /// status stays as it is; the conditions (and a Warning event) say why, and the Canary
    /// waits for a change (a controller that reads it, or a person removing the state).
    Hold(Vec<RuntimeCondition>),
    /// Tick it.
    Tick(Box<Ticket>),
}

/// One tick to make: the driver's view of the Canary and what the adapters read.
struct Ticket {
    canary: CanaryContext,
    prepared: Arc<Prepared>,
}

/// Reconciles one Canary: one tick of the driver, then a requeue when the next tick is due.
#[tracing::instrument(skip_all, fields(canary = %canary.name_any(), ns = %canary.namespace().unwrap_or_default()))]
pub async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue, ReconcileError> {
    let canary = ctx.written.freshest(canary);
    let (ns, name) = (canary.namespace().unwrap_or_default(), canary.name_any());
    if let Some(late) = ctx.ticks.started(&ns, &name, (ctx.config.clock)()) {
        ctx.metrics.tick_late(late);
    }
    let event = match canary.meta().deletion_timestamp {
        Some(_) => Event::Cleanup,
        None => Event::Apply,
    };
    match prepare(&ctx, &canary, event).await? {
        Decision::Forget => {
            ctx.forget(&canary);
            Ok(Requeue::await_change())
        }
        Decision::Reject(conditions) => {
            write_conditions(&ctx, &canary, conditions).await?;
            if event == Event::Cleanup {
                set_finalizer(&ctx, &canary, false).await?;
            }
            Ok(Requeue::await_change())
        }
        Decision::Finalizer(present) => {
            set_finalizer(&ctx, &canary, present).await?;
            Ok(Requeue::await_change())
        }
        Decision::Blocked(conditions, e) => {
            report_stuck(&ctx, &canary, conditions).await;
            Err(e.into())
        }
        Decision::Hold(conditions) => {
            hold(&ctx, &canary, conditions).await?;
            Ok(Requeue::await_change())
        }
        Decision::Tick(ticket) => match event {
            Event::Apply => apply(&ctx, *ticket).await,
            Event::Cleanup => cleanup(&ctx, *ticket).await,
        },
    }
}

/// Reads what the tick needs and decides what this reconcile does (see [`Decision`]).
async fn prepare(
    ctx: &Context,
    canary: &Arc<Canary>,
    event: Event,
) -> Result<Decision, AdapterError> {
    let deleting = event == Event::Cleanup;
    if deleting && !has_finalizer(canary) {
        return Ok(Decision::Forget);
    }
    let ns = canary.namespace().unwrap_or_default();
    // A Canary that fails validation gets a condition naming the field, and waits for an edit.
    let (spec, mut cctx) = match serin_controller::plan::context(&ns, canary) {
        Ok(x) => x,
        Err(errors) => {
            let message = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(%message, "invalid canary");
            let invalid = cond(CONDITION_VALID, false, "InvalidSpec", message);
            return Ok(Decision::Reject(vec![invalid]));
        }
    };
    let provider_name = spec
        .provider
        .clone()
        .unwrap_or_else(|| ctx.config.default_provider.clone());
    let provider = match runnable(canary, &provider_name) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Decision::Reject(vec![
                cond(CONDITION_VALID, true, "Valid", "the spec is valid"),
                cond(CONDITION_PROVIDER, false, "UnsupportedProvider", e),
            ]));
        }
    };
    // revertOnDeletion needs a finalizer so the target is handed back before the Canary goes.
    if !deleting && spec.revert_on_deletion != has_finalizer(canary) {
        return Ok(Decision::Finalizer(spec.revert_on_deletion));
    }
    let mut runtime = runtime_conditions(canary, &provider_name);
    // A state this version cannot read is never replaced by a fresh one (a controller rolled
    // back one version mid-run would otherwise start the Canary over): nothing runs, deletion
    // included, since handing the target back needs the engine too.
    if let Some(error) = status::unreadable_state(canary) {
        let message = status::unreadable_state_message(error, deleting);
        runtime.retain(|c| c.type_ != CONDITION_SYNCED);
        runtime.push(cond(
            CONDITION_SYNCED,
            false,
            status::REASON_STATE_UNREADABLE,
            message,
        ));
        return Ok(Decision::Hold(runtime));
    }

    // Signed webhooks: their keys come from Secrets. Without its key a gate cannot be called
    // as configured, so the tick waits (Synced=False names the field) instead of calling
    // unsigned; on deletion the Canary must still go, so a missing key is only logged.
    if let Err(e) = signing_keys(
        &ctx.client,
        ctx.stores.as_ref().map(|s| &s.configs),
        &ns,
        &spec,
        &mut cctx,
    )
    .await
    {
        if !deleting {
            mark_unsynced(&mut runtime, e.kind, e.to_string());
            return Ok(Decision::Blocked(runtime, e));
        }
        tracing::warn!(error = %e, "webhook signing key unavailable during deletion");
    }
    watches_listed(ctx).await?;

    let spec = Arc::new(spec);
    cctx.spec = Some(spec.clone());
    cctx.target_changed = ctx.targets().changed_for(canary);
    let prepared = Prepared {
        canary: canary.clone(),
        spec,
        provider,
        runtime,
        now: (ctx.config.clock)(),
    };
    Ok(Decision::Tick(Box::new(Ticket {
        canary: cctx,
        prepared: Arc::new(prepared),
    })))
}

/// The routing provider the Canary asks for, when this Serin runs it; the same verdict and
/// words as `serin validate` (exit 3) otherwise.
fn runnable(canary: &Canary, provider_name: &str) -> Result<Provider, String> {
    match serin_api::support::canary_verdict(canary, provider_name) {
        serin_api::support::Verdict::Runnable => {
            parse_provider(provider_name).map_err(|e| e.to_string())
        }
        serin_api::support::Verdict::NotRunnable(reasons) => Err(reasons.join("; ")),
    }
}

/// The runtime conditions of a Canary that runs: valid, provider supported, the fields its
/// provider ignores, and synced (until a tick says otherwise).
fn runtime_conditions(canary: &Canary, provider_name: &str) -> Vec<RuntimeCondition> {
    let mut runtime = vec![
        cond(CONDITION_VALID, true, "Valid", "the spec is valid"),
        cond(
            CONDITION_PROVIDER,
            true,
            "Supported",
            format!("routing with provider {provider_name}"),
        ),
    ];
    // The same list, and the same reasons, as `serin validate` prints.
    let ignored: Vec<&str> = serin_api::support::ignored_fields(canary, provider_name)
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    if !ignored.is_empty() {
        runtime.push(cond(
            CONDITION_IGNORED,
            true,
            "NotUsedByProvider",
            format!(
                "accepted but not used with provider {provider_name}: {}",
                ignored.join(", ")
            ),
        ));
    }
    runtime.push(cond(
        CONDITION_SYNCED,
        true,
        "Synced",
        "the last tick completed",
    ));
    runtime
}

/// Until every watch has listed, an object missing from a store may still exist.
async fn watches_listed(ctx: &Context) -> Result<(), AdapterError> {
    let Some(stores) = &ctx.stores else {
        return Ok(());
    };
    match tokio::time::timeout(STORES_READY_WAIT, stores.ready()).await {
        Ok(true) => Ok(()),
        _ => Err(AdapterError::new(
            ErrorKind::Timeout,
            "watching Deployments, DaemonSets and Services",
            "the watches have not listed yet (check the controller's list/watch permissions)",
        )),
    }
}

/// Ticks a live Canary and asks for the next tick when it is due.
async fn apply(ctx: &Context, t: Ticket) -> Result<Requeue, ReconcileError> {
    let now = t.prepared.now;
    // A route someone else changed is put back at once, not at the next step.
    ctx.adapters.restore_route(&t.prepared).await?;
    let outcome = tick(ctx, &t, false).await?;
    let interval = t.prepared.spec.interval;
    let next = match outcome.requeue_after(now) {
        Some(d) => d.max(Duration::from_millis(500)),
        None => interval,
    };
    // Due from when the requeue starts counting (the end of this reconcile), so the lateness is
    // the queue's, not this tick's own duration.
    let id = &t.canary.id;
    ctx.ticks
        .due(&id.namespace, &id.name, (ctx.config.clock)() + next);
    Ok(Requeue::requeue(next))
}

/// Ticks a Canary being deleted; once the driver has reverted the target (revertOnDeletion), the
/// finalizer goes and the deletion proceeds.
async fn cleanup(ctx: &Context, t: Ticket) -> Result<Requeue, ReconcileError> {
    if let TickOutcome::Stepped { .. } = tick(ctx, &t, true).await? {
        let canary = &t.prepared.canary;
        set_finalizer(ctx, canary, false).await?;
        ctx.forget(canary);
    }
    Ok(Requeue::await_change())
}

/// One tick of the shared driver, with the Canary handed to the adapters for its length. A
/// failed tick says on the Canary why it is stuck; the error itself drives the backoff.
async fn tick(ctx: &Context, t: &Ticket, deleting: bool) -> Result<TickOutcome, ReconcileError> {
    let p = &t.prepared;
    let outcome = {
        let _ticking = ctx.reconciling.enter(t.canary.id.clone(), p.clone());
        ctx.driver.tick(&t.canary, deleting, p.now).await
    };
    match outcome {
        Ok(o) => {
            if let Ok(mut f) = ctx.failures.lock() {
                f.remove(&(t.canary.id.namespace.clone(), t.canary.id.name.clone()));
            }
            Ok(o)
        }
        Err(e) => {
            let id = &t.canary.id;
            let failed_before = ctx.failures.lock().map_or(0, |f| {
                f.get(&(id.namespace.clone(), id.name.clone()))
                    .copied()
                    .unwrap_or(0)
            });
            if e.kind() == ErrorKind::Conflict && failed_before == 0 {
                // Optimistic concurrency: something wrote between our read and our write, and
                // the retry (soon, from a fresh read) nearly always goes through. Under
                // contention a Synced=False write and a Warning event each time would only be
                // noise (Flagger logs it and emits nothing); the error policy logs it, and a
                // conflict that happens again is reported below.
                tracing::info!(canary = %id.name, ns = %id.namespace, kind = "conflict", error = %e, "conflict; retrying from a fresh read");
                return Err(e.into());
            }
            let mut runtime = p.runtime.clone();
            mark_unsynced(&mut runtime, e.kind(), e.to_string());
            report_stuck(ctx, &p.canary, runtime).await;
            Err(e.into())
        }
    }
}

/// Replaces `Synced` with False, naming the error and its kind.
fn mark_unsynced(runtime: &mut Vec<RuntimeCondition>, kind: ErrorKind, message: String) {
    runtime.retain(|c| c.type_ != CONDITION_SYNCED);
    runtime.push(cond(CONDITION_SYNCED, false, error_reason(kind), message));
}

/// Writes the conditions of a Canary that is stuck; a failure to say so is only logged (the
/// error that got it stuck is what the caller returns).
///
/// When the Canary says so already (a retry of the same failure) nothing is written: each write
/// would wake the Canary again ahead of its backoff. A new failure is also a Warning event
/// (`SyncFailed`), where `kubectl get events` and `kubectl describe canary` show it, as
/// Flagger's warnings are.
async fn report_stuck(ctx: &Context, canary: &Canary, runtime: Vec<RuntimeCondition>) {
    if status::conditions_current(canary, &runtime) {
        return;
    }
    let note = runtime
        .iter()
        .find(|c| c.type_ == CONDITION_SYNCED)
        .map(|c| c.message.clone());
    if let Err(we) = write_conditions(ctx, canary, runtime).await {
        tracing::debug!(error = %we, "could not record the error on the canary");
    }
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: "SyncFailed".to_string(),
        note: note.map(|n| super::notify::event_note(&n)),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &canary.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event failed");
    }
}

fn has_finalizer(c: &Canary) -> bool {
    c.finalizers().iter().any(|f| f == FINALIZER)
}

async fn set_finalizer(ctx: &Context, c: &Canary, present: bool) -> Result<(), AdapterError> {
    let ns = c.namespace().unwrap_or_default();
    let name = c.name_any();
    let mut list: Vec<String> = c
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        list.push(FINALIZER.to_string());
    }
    // The resourceVersion makes this a compare-and-swap: a concurrent edit gets a 409, not a
    // lost finalizer.
    let patch = json!({"metadata": {"finalizers": list, "resourceVersion": c.resource_version()}});
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &ns);
    let stored = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| kube_error(e, format!("updating finalizers of canary {ns}/{name}")))?;
    ctx.written.record(stored);
    Ok(())
}

/// Says on a Canary whose state does not read why it is held: the conditions when they
/// changed, with a Warning event (each reconcile that finds them current writes nothing, so the
/// write that wakes the Canary again does not loop).
async fn hold(
    ctx: &Context,
    canary: &Canary,
    conds: Vec<RuntimeCondition>,
) -> Result<(), AdapterError> {
    if status::conditions_current(canary, &conds) {
        return Ok(());
    }
    let note = conds
        .iter()
        .find(|c| c.type_ == CONDITION_SYNCED)
        .map(|c| c.message.clone());
    tracing::warn!(message = note.as_deref().unwrap_or_default(), "canary held");
    write_conditions(ctx, canary, conds).await?;
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: status::REASON_STATE_UNREADABLE.to_string(),
        note: note.map(|n| super::notify::event_note(&n)),
        action: "Hold".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &canary.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event failed");
    }
    Ok(())
}

/// Writes only runtime conditions (the engine state is kept as it is; one that does not read
/// is written back as stored, with Flagger's fields).
async fn write_conditions(
    ctx: &Context,
    canary: &Canary,
    conds: Vec<RuntimeCondition>,
) -> Result<(), AdapterError> {
    let now = (ctx.config.clock)();
    let body = match status::unreadable_state(canary) {
        Some(_) => status::conditions_body(canary, &conds, now),
        None => status::status_body(
            canary,
            &status::engine_status(canary),
            &[],
            &conds,
            None,
            now,
        ),
    };
    let stored = status::apply_status(&ctx.client, canary, &body).await?;
    ctx.written.record(stored);
    Ok(())
}

fn cond(
    type_: &'static str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
) -> RuntimeCondition {
    RuntimeCondition {
        type_,
        ok,
        reason: reason.to_string(),
        message: message.into(),
    }
}

/// Reads the HMAC key of every signed webhook from its Secret in the Canary's namespace into
/// the webhook's [`serin_controller::adapters::HookConfig`]; through the config watch's cache
/// when there is one (`configs`), so a tick reads no Secret that did not change.
pub async fn signing_keys(
    client: &Client,
    configs: Option<&ConfigWatch>,
    ns: &str,
    n: &serin_api::Normalized,
    cctx: &mut CanaryContext,
) -> Result<(), AdapterError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for (hook, field, sref) in serin_controller::plan::signing_secrets(n) {
        let read = match configs {
            Some(c) => c.secret(client, ns, &sref.name).await,
            None => secrets.get_opt(&sref.name).await.map(|s| s.map(Arc::new)),
        };
        let secret = read
            .map_err(|e| kube_error(e, format!("{field}: reading Secret {ns}/{}", sref.name)))?
            .ok_or_else(|| {
                AdapterError::new(
                    ErrorKind::NotFound,
                    field.clone(),
                    format!(
                        "Secret {ns}/{} does not exist; create it with the HMAC key under {:?}",
                        sref.name, sref.key
                    ),
                )
            })?;
        let key = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&sref.key))
            .map(|b| b.0.clone())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                AdapterError::new(
                    ErrorKind::Invalid,
                    format!("{field}.key"),
                    format!(
                        "Secret {ns}/{} has no non-empty key {:?}",
                        sref.name, sref.key
                    ),
                )
            })?;
        if let Some(h) = cctx.hooks.get_mut(&hook) {
            h.signing_key = Some(key);
        }
    }
    Ok(())
}

pub(crate) fn error_reason(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Conflict => "Conflict",
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Forbidden => "Forbidden",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::Invalid => "Invalid",
        ErrorKind::Other => "Error",
    }
}

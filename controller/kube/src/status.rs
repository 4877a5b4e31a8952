//! The Canary's status on Kubernetes: Flagger's fields (so `kubectl get canaries`, `kubectl wait
//! --for=condition=Promoted` and tools written for Flagger work), the engine's full state under
//! `status.serin.state`, the last [`HISTORY_LIMIT`] history entries under
//! `status.serin.history`, and the current run's analysis state (the judge's sequential test)
//! under `status.serin.analysis`. Written with server-side apply on the status subresource.
//!
//! Manual commands arrive in the annotation `serin.dev/command` as JSON
//! `{"id","action","gate","by","at"}`; each id is applied once (the engine remembers applied ids
//! and `status.lastCommandId` names the last one).

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use serin_api::{Canary, CanaryCondition, CanaryStatus, SerinStatus, Stored};
use serin_core::{Command, HistoryEntry, HistoryKind, Status, Timestamp};

use super::adapters::LastWrites;
use super::{FIELD_MANAGER, kube_error};
use serin_controller::adapters::{
    AdapterError, AnalysisState, CanaryContext, CanaryId, ErrorKind, Store,
};

/// Annotation carrying a manual command.
pub const COMMAND_ANNOTATION: &str = "serin.dev/command";
/// History entries kept in the status, not counting `measured` samples (older ones are dropped;
/// events and logs keep the rest).
pub const HISTORY_LIMIT: usize = 30;
/// `measured` entries (one per analysis tick, for the charts) kept besides [`HISTORY_LIMIT`], so
/// samples never push the run's real moments out.
pub const MEASURED_LIMIT: usize = 60;

/// A condition the runtime maintains next to the engine's `Promoted`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeCondition {
    /// Condition type.
    pub type_: &'static str,
    /// True/False.
    pub ok: bool,
    /// Reason (CamelCase).
    pub reason: String,
    /// Message.
    pub message: String,
}

/// Condition: the spec is valid (False names the field).
pub const CONDITION_VALID: &str = "Valid";
/// Condition: the routing provider is one Serin drives.
pub const CONDITION_PROVIDER: &str = "ProviderSupported";
/// Condition: fields accepted but not used by this provider.
pub const CONDITION_IGNORED: &str = "IgnoredFields";
/// Condition: the last reconcile reached the API server without error.
pub const CONDITION_SYNCED: &str = "Synced";

/// The engine state stored in the Canary; the default (a Canary never run) when none is stored
/// or it does not read. Only for guesses that may be wrong (which Canaries a watch event wakes):
/// a reconcile first checks [`unreadable_state`] and never runs the engine on a state that does
/// not read.
pub fn engine_status(canary: &Canary) -> Status {
    stored_serin(canary)
        .and_then(SerinStatus::state)
        .cloned()
        .unwrap_or_default()
}

/// Why the stored `status.serin.state` does not read, when one is stored and does not (written
/// by a newer controller, or edited by hand). Such a Canary is not run: its state and Flagger's
/// fields are kept exactly as stored (see [`conditions_body`]) until a controller that reads
/// the state runs it, or a person removes the state.
pub fn unreadable_state(canary: &Canary) -> Option<&str> {
    canary
        .status
        .as_ref()?
        .serin
        .as_ref()?
        .state
        .as_ref()?
        .error()
}

/// What a Canary whose `status.serin.state` does not read (`error`) reports, in its `Synced`
/// condition and Warning event and to the CLI and dashboard: the controller holds it as it is.
pub fn unreadable_state_message(error: &str, deleting: bool) -> String {
    let held = if deleting {
        format!(
            "the deletion waits (remove the finalizer {} to delete the Canary without handing the target back)",
            super::FINALIZER
        )
    } else {
        "the Canary is held where it is (traffic, status and history unchanged)".to_string()
    };
    format!(
        "status.serin.state does not read ({error}); it was written by a newer Serin or edited by hand. \
         This controller does not run the Canary and keeps the stored state: {held}. \
         Run a controller version that reads it, or remove status.serin.state to start the Canary over"
    )
}

/// Reason of the `Synced=False` condition (and the Warning event) of a Canary whose
/// `status.serin.state` does not read.
pub const REASON_STATE_UNREADABLE: &str = "StateUnreadable";

/// The Canary's `status.serin`, when there is one. A part this version cannot read (written by
/// a newer controller, or edited by hand) is logged with its field and reason (once per Canary
/// and set of problems, see [`UnreadableLog`]) and then treated as unknown by the readers below,
/// never silently; the writers keep it as stored.
pub(crate) fn stored_serin(canary: &Canary) -> Option<&SerinStatus> {
    let serin = canary.status.as_ref()?.serin.as_ref()?;
    let unreadable = serin.unreadable();
    if !unreadable.is_empty() {
        let (ns, name) = (canary.namespace().unwrap_or_default(), canary.name_any());
        if UNREADABLE_LOG.first_time(&ns, &name, &unreadable) {
            for (field, error) in unreadable {
                tracing::warn!(
                    canary = %name,
                    ns = %ns,
                    %field,
                    %error,
                    "stored status does not read; treated as unknown"
                );
            }
        }
    }
    Some(serin)
}

/// Which unreadable parts were logged for which Canary. Readers look at a Canary's status many
/// times per tick (reconcile, watches on every workload event, the dashboard), and a history
/// entry of an unknown kind is kept on purpose for as long as the history holds it: logging it
/// at each look would bury everything else. A Canary's problems are logged when first seen and
/// again when they change (history positions aside: entries move as the history grows).
#[derive(Default)]
pub(crate) struct UnreadableLog(std::sync::Mutex<std::collections::HashMap<(String, String), u64>>);

static UNREADABLE_LOG: std::sync::LazyLock<UnreadableLog> =
    std::sync::LazyLock::new(UnreadableLog::default);

impl UnreadableLog {
    /// Whether `unreadable` (field, reason) differs from what was last logged for the Canary
    /// (and remembers it).
    fn first_time(&self, ns: &str, name: &str, unreadable: &[(String, &str)]) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (field, error) in unreadable {
            // `status.serin.history[7]` and `[6]` are the same entry one trim later.
            field.split('[').next().hash(&mut h);
            error.hash(&mut h);
        }
        let signature = h.finish();
        let Ok(mut seen) = self.0.lock() else {
            return true;
        };
        seen.insert((ns.to_string(), name.to_string()), signature) != Some(signature)
    }

    fn forget(&self, ns: &str, name: &str) {
        if let Ok(mut seen) = self.0.lock() {
            seen.remove(&(ns.to_string(), name.to_string()));
        }
    }
}

/// Forgets what was logged about a Canary that is gone (a Canary of the same name logs anew).
pub(crate) fn forget_logged(ns: &str, name: &str) {
    UNREADABLE_LOG.forget(ns, name);
}

/// The analysis state (the judge's sequential test) stored in the Canary under
/// `status.serin.analysis`; the default (run 0) when none is stored or it does not read.
pub fn stored_analysis(canary: &Canary) -> AnalysisState {
    stored_serin(canary)
        .and_then(SerinStatus::analysis)
        .cloned()
        .unwrap_or_default()
}

/// The history entries stored in the Canary that this version reads, oldest first.
pub fn stored_history(canary: &Canary) -> Vec<HistoryEntry> {
    stored_serin(canary)
        .map(|s| s.entries().cloned().collect())
        .unwrap_or_default()
}

/// The pending command, if the annotation holds one; a malformed annotation is an error naming
/// it.
pub fn pending_command(canary: &Canary) -> Result<Option<Command>, AdapterError> {
    let Some(raw) = canary.annotations().get(COMMAND_ANNOTATION) else {
        return Ok(None);
    };
    serde_json::from_str::<Command>(raw).map(Some).map_err(|e| {
        AdapterError::new(
            ErrorKind::Invalid,
            format!("metadata.annotations[\"{COMMAND_ANNOTATION}\"]"),
            format!(
                "{e}; expected {{\"id\":\"...\",\"action\":\"promote|abort|pause|resume|gate-open|gate-close\",\"gate\":\"<for gate-*>\",\"by\":\"...\",\"at\":\"<RFC 3339>\"}}"
            ),
        )
    })
}

fn existing_condition<'a>(
    canary: &'a Canary,
    type_: &str,
) -> Option<&'a serin_api::CanaryCondition> {
    canary
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// The status subresource body for `status` plus the runtime's conditions. `analysis` replaces
/// the stored analysis state; `None` keeps the stored one while its run is still the current run
/// (server-side apply would otherwise drop the field this manager no longer sends).
///
/// Nothing stored is lost by the write (server-side apply removes every field this manager
/// wrote before and leaves out, and the conditions list is replaced whole): fields this version
/// does not know (a newer version's) go back as stored — beside `status.serin`'s parts, at any
/// depth of a stored history entry, at the top of the state and the analysis state (the values
/// written in their place carry them; deeper ones go with the replaced value), beside Flagger's
/// fields, in a condition — and so do conditions of types neither the engine nor the runtime
/// maintains (another tool's, or a newer version's).
pub fn status_body(
    canary: &Canary,
    status: &Status,
    history: &[HistoryEntry],
    runtime: &[RuntimeCondition],
    analysis: Option<&AnalysisState>,
    now: Timestamp,
) -> Value {
    let stored_status = canary.status.as_ref();
    let stored = stored_status.and_then(|s| s.serin.as_ref());
    let mut conditions: Vec<CanaryCondition> = status
        .conditions
        .iter()
        .map(|c| CanaryCondition {
            type_: c.condition_type.clone(),
            status: condition_status(c.status),
            last_update_time: Some(time(c.last_update_time)),
            last_transition_time: Some(time(c.last_transition_time)),
            reason: Some(c.reason.clone()),
            message: Some(c.message.clone()),
            unknown: unknown_condition_fields(canary, &c.condition_type),
        })
        .collect();
    conditions.extend(runtime.iter().map(|rc| runtime_condition(canary, rc, now)));
    conditions.extend(foreign_conditions(canary, status).cloned());
    // Every stored entry goes back, those this version cannot read included.
    let mut hist: Vec<Stored<HistoryEntry>> = stored.map(|s| s.history.clone()).unwrap_or_default();
    for h in history {
        if h.kind == HistoryKind::NotificationFailed {
            // A receiver that stays down fails the same way every tick: keep its latest
            // failure only, so it cannot push the checks and gates out of the bounded history.
            hist.retain(|old| {
                old.read()
                    .is_none_or(|o| !(o.kind == h.kind && o.message == h.message))
            });
        }
        hist.push(Stored::Read(h.clone()));
    }
    trim_history(&mut hist, |e| match e.read() {
        Some(h) => h.kind == HistoryKind::Measured,
        None => matches!(e, Stored::Unreadable { raw, .. } if raw["kind"] == "measured"),
    });
    let analysis = analysis.cloned().unwrap_or_else(|| stored_analysis(canary));
    // Only the current run's state is worth keeping; a finished run's is dropped, and with it
    // the fields a newer version kept beside it for that run.
    let kept_analysis = stored
        .and_then(|s| s.analysis.as_ref())
        .filter(|a| a.read().is_some_and(|a| a.run == analysis.run));
    let serin = SerinStatus {
        state: Some(Stored::keeping_unknown(
            status.clone(),
            stored.and_then(|s| s.state.as_ref()),
        )),
        history: hist,
        analysis: status
            .run
            .as_ref()
            .is_some_and(|r| r.id == analysis.run)
            .then(|| Stored::keeping_unknown(analysis, kept_analysis)),
        unknown: stored.map(|s| s.unknown.clone()).unwrap_or_default(),
    };
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let written = CanaryStatus {
        phase: Some(status.phase),
        failed_checks: count(status.failed_checks),
        canary_weight: count(status.canary_weight),
        iterations: count(status.iterations),
        previous_session_affinity_cookie: status.previous_affinity_cookie.clone(),
        session_affinity_cookie: status.run.as_ref().and_then(|r| r.affinity_cookie.clone()),
        tracked_configs: (!status.tracked_configs.is_empty())
            .then(|| status.tracked_configs.clone()),
        last_applied_spec: status.last_applied_spec.clone(),
        last_promoted_spec: status.last_promoted_spec.clone(),
        last_transition_time: status.last_transition_time.map(time),
        conditions,
        last_command_id: status.last_command_id.clone(),
        serin: Some(serin),
        unknown: stored_status.map(|s| s.unknown.clone()).unwrap_or_default(),
    };
    // Only the status: server-side apply on the status subresource takes the object's identity
    // from the path, and a typed Canary would also send its (required) spec.
    json!({
        "apiVersion": serin_api::API_VERSION,
        "kind": "Canary",
        "status": written,
    })
}

/// The condition types this controller writes: the engine's and the runtime's. A stored
/// condition of another type is someone else's and goes back as stored.
fn maintained(type_: &str, status: &Status) -> bool {
    type_ == serin_core::CONDITION_PROMOTED
        || RUNTIME_CONDITIONS.contains(&type_)
        || status.conditions.iter().any(|c| c.condition_type == type_)
}

/// The stored conditions of types this controller does not maintain (another tool's, or a newer
/// version's), in their stored order.
fn foreign_conditions<'a>(
    canary: &'a Canary,
    status: &'a Status,
) -> impl Iterator<Item = &'a CanaryCondition> {
    canary
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .filter(move |c| !maintained(&c.type_, status))
}

/// The fields this version does not know of the stored condition of type `type_`, which the
/// rewritten condition keeps.
fn unknown_condition_fields(canary: &Canary, type_: &str) -> BTreeMap<String, Value> {
    existing_condition(canary, type_)
        .map(|c| c.unknown.clone())
        .unwrap_or_default()
}

/// The status subresource body of a Canary whose `status.serin.state` does not read (see
/// [`unreadable_state`]): everything stored goes back as it is (the state, history and analysis
/// under `status.serin`, and Flagger's fields, which server-side apply would remove if this
/// manager left out the ones it wrote), with the `runtime` conditions in place of the stored
/// ones of their types (the engine's, such as `Promoted`, stay as stored).
pub fn conditions_body(canary: &Canary, runtime: &[RuntimeCondition], now: Timestamp) -> Value {
    let mut kept = canary.status.clone().unwrap_or_default();
    kept.conditions
        .retain(|c| !RUNTIME_CONDITIONS.contains(&c.type_.as_str()));
    kept.conditions
        .extend(runtime.iter().map(|rc| runtime_condition(canary, rc, now)));
    json!({
        "apiVersion": serin_api::API_VERSION,
        "kind": "Canary",
        "status": kept,
    })
}

/// Whether the Canary already carries exactly the `runtime` conditions (same status, reason and
/// message; times aside) and no other condition of the runtime's types, so writing them with
/// [`conditions_body`] would change nothing but timestamps.
pub fn conditions_current(canary: &Canary, runtime: &[RuntimeCondition]) -> bool {
    let stored = canary
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let stored_runtime = stored
        .iter()
        .filter(|c| RUNTIME_CONDITIONS.contains(&c.type_.as_str()))
        .count();
    stored_runtime == runtime.len()
        && runtime.iter().all(|rc| {
            stored.iter().any(|c| {
                c.type_ == rc.type_
                    && c.status == if rc.ok { "True" } else { "False" }
                    && c.reason.as_deref() == Some(rc.reason.as_str())
                    && c.message.as_deref() == Some(rc.message.as_str())
            })
        })
}

/// The condition types the runtime maintains (the engine maintains the others).
const RUNTIME_CONDITIONS: [&str; 4] = [
    CONDITION_VALID,
    CONDITION_PROVIDER,
    CONDITION_IGNORED,
    CONDITION_SYNCED,
];

/// `rc` as the Canary's condition, written at `now`.
fn runtime_condition(canary: &Canary, rc: &RuntimeCondition, now: Timestamp) -> CanaryCondition {
    let st = if rc.ok { "True" } else { "False" };
    // Keep the transition time while the status does not flip.
    let transition = existing_condition(canary, rc.type_)
        .filter(|c| c.status == st)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time(now));
    CanaryCondition {
        type_: rc.type_.to_string(),
        status: st.to_string(),
        last_update_time: Some(time(now)),
        last_transition_time: Some(transition),
        reason: Some(rc.reason.clone()),
        message: Some(rc.message.clone()),
        unknown: unknown_condition_fields(canary, rc.type_),
    }
}

/// A Kubernetes condition status (`True`, `False`, `Unknown`) as the CRD spells it.
fn condition_status(s: serin_core::ConditionStatus) -> String {
    match s {
        serin_core::ConditionStatus::True => "True",
        serin_core::ConditionStatus::False => "False",
        serin_core::ConditionStatus::Unknown => "Unknown",
    }
    .to_string()
}

/// An engine timestamp as a Kubernetes `Time` (written to the second, as Kubernetes and Flagger
/// write condition and transition times).
fn time(t: Timestamp) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_millisecond(t.as_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Drops the oldest entries beyond [`HISTORY_LIMIT`] moments and [`MEASURED_LIMIT`] samples
/// (`measured` tells them apart), keeping the chronological order of the rest.
fn trim_history<T>(hist: &mut Vec<T>, measured: impl Fn(&T) -> bool) {
    let samples = hist.iter().filter(|v| measured(v)).count();
    let mut drop_samples = samples.saturating_sub(MEASURED_LIMIT);
    let mut drop_moments = (hist.len() - samples).saturating_sub(HISTORY_LIMIT);
    hist.retain(|v| {
        let budget = if measured(v) {
            &mut drop_samples
        } else {
            &mut drop_moments
        };
        if *budget > 0 {
            *budget -= 1;
            false
        } else {
            true
        }
    });
}

/// Writes `body` to the status subresource with server-side apply; returns the Canary as the
/// API server stored it.
pub async fn apply_status(
    client: &Client,
    canary: &Canary,
    body: &Value,
) -> Result<Canary, AdapterError> {
    let ns = canary.namespace().unwrap_or_default();
    let name = canary.name_any();
    let api: Api<Canary> = Api::namespaced(client.clone(), &ns);
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(|e| kube_error(e, format!("writing status of canary {ns}/{name}")))
}

/// The [`Store`] of one Canary object: status from the object, commands from its annotation,
/// saves by server-side apply.
pub struct KubeStore {
    client: Client,
    canary: std::sync::Arc<Canary>,
    runtime: Vec<RuntimeCondition>,
    now: Timestamp,
    written: Option<std::sync::Arc<LastWrites>>,
}

impl KubeStore {
    /// The store for `canary`, adding `runtime` conditions to every save.
    pub fn new(
        client: Client,
        canary: std::sync::Arc<Canary>,
        runtime: Vec<RuntimeCondition>,
        now: Timestamp,
    ) -> Self {
        Self {
            client,
            canary,
            runtime,
            now,
            written: None,
        }
    }

    /// Remembers each save's answer in `written`, so the next reconcile never acts on a status
    /// older than this one (see [`LastWrites`]).
    pub fn recording(mut self, written: std::sync::Arc<LastWrites>) -> Self {
        self.written = Some(written);
        self
    }
}

#[async_trait]
impl Store for KubeStore {
    async fn load(&self, _id: &CanaryId) -> Result<Option<Status>, AdapterError> {
        // The reconcile holds such a Canary before any tick; should a tick still get here, it
        // fails rather than run the engine from a default state and write it over the stored one.
        if let Some(error) = unreadable_state(&self.canary) {
            return Err(AdapterError::new(
                ErrorKind::Invalid,
                "status.serin.state",
                unreadable_state_message(error, false),
            ));
        }
        Ok(Some(engine_status(&self.canary)))
    }

    async fn save(
        &self,
        ctx: &CanaryContext,
        status: &Status,
        history: &[HistoryEntry],
    ) -> Result<(), AdapterError> {
        self.save_with_analysis(ctx, status, history, None).await
    }

    async fn pending_commands(&self, _id: &CanaryId) -> Result<Vec<Command>, AdapterError> {
        Ok(pending_command(&self.canary)?.into_iter().collect())
    }

    async fn load_analysis(&self, _id: &CanaryId) -> Result<Option<AnalysisState>, AdapterError> {
        Ok(Some(stored_analysis(&self.canary)))
    }

    async fn save_with_analysis(
        &self,
        _ctx: &CanaryContext,
        status: &Status,
        history: &[HistoryEntry],
        analysis: Option<&AnalysisState>,
    ) -> Result<(), AdapterError> {
        let body = status_body(
            &self.canary,
            status,
            history,
            &self.runtime,
            analysis,
            self.now,
        );
        let stored = apply_status(&self.client, &self.canary, &body).await?;
        if let Some(w) = &self.written {
            w.record(stored);
        }
        Ok(())
    }

    async fn save_if_changed(
        &self,
        ctx: &CanaryContext,
        status: &Status,
    ) -> Result<bool, AdapterError> {
        if runtime_conditions_current(&self.canary, status, &self.runtime) {
            return Ok(false);
        }
        self.save_with_analysis(ctx, status, &[], None).await?;
        Ok(true)
    }
}

/// Whether the Canary already carries exactly the engine's conditions of `status` and the
/// `runtime` conditions (same status, reason and message; times aside), so writing them again
/// would change nothing but timestamps.
pub fn runtime_conditions_current(
    canary: &Canary,
    status: &Status,
    runtime: &[RuntimeCondition],
) -> bool {
    let stored = canary
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let engine = status.conditions.iter().map(|c| {
        (
            c.condition_type.as_str(),
            condition_status(c.status),
            c.reason.as_str(),
            c.message.as_str(),
        )
    });
    let runtime = runtime.iter().map(|rc| {
        let st = if rc.ok { "True" } else { "False" };
        (
            rc.type_,
            st.to_string(),
            rc.reason.as_str(),
            rc.message.as_str(),
        )
    });
    let wanted: Vec<_> = engine.chain(runtime).collect();
    // Conditions of other types are written back as stored (see [`status_body`]): they
    // change nothing.
    let stored: Vec<&CanaryCondition> = stored
        .iter()
        .filter(|c| maintained(&c.type_, status))
        .collect();
    wanted.len() == stored.len()
        && wanted.iter().all(|(t, st, reason, message)| {
            stored.iter().any(|c| {
                c.type_ == *t
                    && c.status == *st
                    && c.reason.as_deref() == Some(*reason)
                    && c.message.as_deref() == Some(*message)
            })
        })
}

/// Labels for log lines and the like.
pub fn describe(canary: &Canary) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("name", canary.name_any()),
        ("namespace", canary.namespace().unwrap_or_default()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(v: &Value) -> bool {
        v["kind"] == "measured"
    }

    #[test]
    fn samples_and_moments_have_separate_budgets_in_one_chronological_history() {
        // 36 moments interleaved with 100 samples, oldest first.
        let mut hist = Vec::new();
        for i in 0..100 {
            hist.push(json!({"kind": "measured", "i": i}));
            if i % 5 == 0 || i >= 80 {
                hist.push(json!({"kind": "advanced", "i": i}));
            }
        }
        let moments = hist.iter().filter(|v| v["kind"] != "measured").count();
        assert_eq!(moments, 36);
        trim_history(&mut hist, measured);
        let kept_moments: Vec<i64> = hist
            .iter()
            .filter(|v| v["kind"] != "measured")
            .map(|v| v["i"].as_i64().unwrap())
            .collect();
        let kept_samples: Vec<i64> = hist
            .iter()
            .filter(|v| v["kind"] == "measured")
            .map(|v| v["i"].as_i64().unwrap())
            .collect();
        assert_eq!(kept_moments.len(), HISTORY_LIMIT);
        assert_eq!(kept_moments[0], 30, "the 6 oldest moments went");
        assert_eq!(kept_samples, (40..100).collect::<Vec<_>>());
        // Still chronological.
        let order: Vec<i64> = hist.iter().map(|v| v["i"].as_i64().unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
        // Under both budgets nothing is dropped.
        let mut small = vec![json!({"kind": "measured"}), json!({"kind": "held"})];
        trim_history(&mut small, measured);
        assert_eq!(small.len(), 2);
    }

    /// What `f` logs at `warn` and above, with the value it returns.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        (out, text)
    }

    /// A Canary a newer controller ran: its state and one history entry do not read here.
    fn written_by_a_newer_controller(name: &str) -> (Canary, Value) {
        let status = json!({
            "phase": "Progressing", "canaryWeight": 20, "failedChecks": 1, "iterations": 0,
            "lastAppliedSpec": "abc", "lastPromotedSpec": "9f8", "trackedConfigs": {"configmap/cfg": "c1"},
            "lastTransitionTime": "2026-11-21T10:01:00Z", "lastCommandId": "cmd-1",
            "conditions": [
                {"type": "Promoted", "status": "Unknown", "reason": "Progressing", "message": "New revision detected",
                 "lastUpdateTime": "2026-11-21T10:00:00Z", "lastTransitionTime": "2026-11-21T10:00:00Z"},
                {"type": "Synced", "status": "True", "reason": "Synced", "message": "the last tick completed",
                 "lastUpdateTime": "2026-11-21T10:02:00Z", "lastTransitionTime": "2026-11-21T09:00:00Z"}
            ],
            "serin": {
                "state": {"phase": "Exploded", "canaryWeight": 20},
                "history": [
                    {"at": "2026-11-21T10:00:00Z", "run": 2, "revision": "abc",
                     "kind": "runStarted", "phase": "Progressing", "step": 0, "canaryWeight": 0,
                     "iterations": 0, "failedChecks": 0, "threshold": 5, "message": "new revision abc"},
                    {"at": "2026-11-21T10:02:00Z", "kind": "teleported", "message": "?"}
                ],
                "analysis": {"run": 2, "judge": {"looks": 3}}
            }
        });
        let canary = serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": "prod"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 9898},
                     "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10}},
            "status": status.clone(),
        }))
        .expect("an unreadable status.serin does not make the Canary unreadable");
        (canary, status)
    }

    fn serin_mut(canary: &mut Canary) -> &mut SerinStatus {
        canary.status.as_mut().unwrap().serin.as_mut().unwrap()
    }

    #[test]
    fn a_stored_state_that_does_not_read_is_written_back_as_stored_with_flaggers_fields() {
        let (canary, stored) = written_by_a_newer_controller("podinfo");
        let error = unreadable_state(&canary).expect("the state does not read");
        assert!(error.contains("Exploded"), "{error}");
        // Watches guess from it as from a Canary never run; the reconcile does not run it.
        assert_eq!(engine_status(&canary), Status::default());

        let held = RuntimeCondition {
            type_: CONDITION_SYNCED,
            ok: false,
            reason: REASON_STATE_UNREADABLE.to_string(),
            message: unreadable_state_message(error, false),
        };
        assert!(!conditions_current(&canary, std::slice::from_ref(&held)));
        let now = Timestamp::from_secs(1_795_000_000);
        let body = conditions_body(&canary, std::slice::from_ref(&held), now);
        let written = &body["status"];
        // Every stored field goes back as it is (server-side apply removes the ones this
        // manager wrote before and leaves out), the unreadable state and history entry included.
        let mut expected = stored.clone();
        expected["conditions"] = json!([stored["conditions"][0], {
            "type": "Synced", "status": "False", "reason": "StateUnreadable",
            "message": held.message,
            "lastUpdateTime": "2026-11-18T11:06:40Z", "lastTransitionTime": "2026-11-18T11:06:40Z"
        }]);
        assert_eq!(written, &expected);
        assert!(
            held.message.contains("status.serin.state") && held.message.contains("Exploded"),
            "{}",
            held.message
        );

        // Written, the conditions are current: the next reconcile writes nothing.
        let mut after = canary.clone();
        after.status = Some(serde_json::from_value(written.clone()).unwrap());
        assert!(conditions_current(&after, std::slice::from_ref(&held)));
        assert_eq!(unreadable_state(&after), Some(error));
    }

    #[test]
    fn an_unreadable_history_entry_is_kept_in_its_place_when_the_state_reads() {
        let (mut canary, stored) = written_by_a_newer_controller("podinfo-history");
        let state = Status {
            phase: serin_core::Phase::Progressing,
            canary_weight: 20,
            ..Status::default()
        };
        serin_mut(&mut canary).state = Some(Stored::Read(state.clone()));
        // Readers skip the entry they cannot read; the writer keeps it, in its place.
        assert_eq!(stored_history(&canary).len(), 1);
        let body = status_body(
            &canary,
            &state,
            &[],
            &[],
            None,
            Timestamp::from_secs(1_795_000_000),
        );
        assert_eq!(
            body["status"]["serin"]["history"],
            stored["serin"]["history"]
        );
        let back: serin_api::CanaryStatus =
            serde_json::from_value(body["status"].clone()).expect("the body is a CanaryStatus");
        assert_eq!(
            back.serin.as_ref().and_then(SerinStatus::state),
            Some(&state)
        );
    }

    #[test]
    fn unreadable_parts_are_logged_when_first_seen_and_when_they_change_not_at_every_look() {
        let (canary, _) = written_by_a_newer_controller("podinfo-logged");
        let (_, log) = logged(|| engine_status(&canary));
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains("status.serin.state"), "{log}");
        assert!(log.contains("Exploded"), "{log}");
        assert!(log.contains("status.serin.history[1]"), "{log}");
        assert!(log.contains("podinfo-logged"), "{log}");
        // Every other reader, every other tick: nothing new to say.
        let (_, again) = logged(|| {
            stored_analysis(&canary);
            stored_history(&canary);
            engine_status(&canary)
        });
        assert_eq!(again, "");
        // The same entry one position further (the history grew and was trimmed): still known.
        let mut moved = canary.clone();
        let serin = serin_mut(&mut moved);
        serin.history.insert(0, serin.history[0].clone());
        let (_, moved_log) = logged(|| engine_status(&moved));
        assert_eq!(moved_log, "");
        // A new problem is logged, with the old ones.
        let mut changed = moved.clone();
        serin_mut(&mut changed).analysis = Some(Stored::from_raw(json!({"run": "two"})));
        let (_, changed_log) = logged(|| engine_status(&changed));
        assert!(
            changed_log.contains("status.serin.analysis"),
            "{changed_log}"
        );
        assert!(changed_log.contains("status.serin.state"), "{changed_log}");
        // A Canary gone and created again under the same name is logged anew.
        forget_logged("prod", "podinfo-logged");
        let (_, anew) = logged(|| engine_status(&canary));
        assert!(anew.contains("status.serin.state"), "{anew}");
    }
}

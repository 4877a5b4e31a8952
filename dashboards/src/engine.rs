//! [`EngineBackend`]: a complete [`Backend`] over a store that speaks the engine's types.
//!
//! The runtimes persist `serin_core::Status`, the engine's history and pending commands; they
//! implement the small [`EngineStore`] trait over that (the local file store, the Kubernetes
//! Canary status) and wrap it in [`EngineBackend`] to serve the dashboard. The conversion to the
//! API's types, the run list, and the immediate effect of gate commands live here once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::backend::{Backend, BackendError, HistoryQuery};
use crate::convert;
use crate::model::{
    Action, AnalysisInfo, CanaryKey, CanaryState, CanarySummary, Command, CommandReceipt,
    CommandState, EntryKind, HistoryEntry, Outcome, RunResult, RunSummary, TargetRef, Update, gate,
};
use serin_core::Phase;

/// Everything a runtime keeps about one Canary, in the engine's types.
#[derive(Debug, Clone)]
pub struct EngineCanary {
    /// Namespace and name.
    pub key: CanaryKey,
    /// The target.
    pub target: TargetRef,
    /// The engine's persisted status.
    pub status: serin_core::Status,
    /// The engine's history, oldest first.
    pub history: Vec<serin_core::HistoryEntry>,
    /// Commands received and persisted but not yet applied by the engine, oldest first.
    pub pending: Vec<serin_core::Command>,
    /// The revision the target declares now.
    pub target_revision: Option<String>,
    /// Analysis settings for display.
    pub analysis: Option<AnalysisInfo>,
}

/// What a runtime provides so [`EngineBackend`] can serve the dashboard.
pub trait EngineStore: Send + Sync + 'static {
    /// Every Canary.
    fn canaries(&self) -> impl Future<Output = Result<Vec<EngineCanary>, BackendError>> + Send;

    /// One Canary, or `None`.
    fn canary(
        &self,
        key: &CanaryKey,
    ) -> impl Future<Output = Result<Option<EngineCanary>, BackendError>> + Send;

    /// Persists a command for the engine's next tick (it must survive a restart). Returns
    /// [`BackendError::NotFound`] for an unknown Canary.
    fn enqueue(
        &self,
        key: &CanaryKey,
        command: serin_core::Command,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The keys of Canaries whose state changed (status, history or pending commands).
    fn changes(&self) -> broadcast::Receiver<CanaryKey>;
}

/// A [`Backend`] over an [`EngineStore`].
///
/// It keeps every Canary's summary in memory, primed from the store once and kept current by
/// the store's change notifications, so listing (the overview, `GET /api/v1/canaries`) reads
/// memory: a render of a thousand Canaries costs no call to the store's source (the API server
/// on Kubernetes) and no conversion of their histories.
pub struct EngineBackend<S> {
    store: Arc<S>,
    updates: broadcast::Sender<Update>,
    /// Summaries by key; `None` until primed (listing then asks the store).
    index: RwLock<Option<BTreeMap<CanaryKey, CanarySummary>>>,
}

impl<S: EngineStore> EngineBackend<S> {
    /// Wraps `store`. Spawns a task (on the current tokio runtime) that turns the store's change
    /// notifications into [`Update`]s; it ends when the store's channel closes.
    pub fn new(store: Arc<S>) -> Arc<Self> {
        let updates = broadcast::channel(1024).0;
        let backend = Arc::new(Self {
            store,
            updates,
            index: RwLock::new(None),
        });
        let weak = Arc::downgrade(&backend);
        // Subscribed before the index is primed: a change the priming read misses is still
        // delivered below.
        let mut changes = backend.store.changes();
        tokio::spawn(async move {
            // Remember how many timeline entries each Canary had, to publish only new ones.
            let mut seen: std::collections::HashMap<CanaryKey, usize> = Default::default();
            if let Some(backend) = weak.upgrade() {
                match backend.store.canaries().await {
                    Ok(all) => {
                        let mut index = BTreeMap::new();
                        for c in &all {
                            seen.insert(c.key.clone(), timeline(c).len());
                            index.insert(c.key.clone(), summary(c));
                        }
                        backend.set_index(Some(index));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dashboard could not read the canaries; listing asks the store each time")
                    }
                }
            }
            loop {
                let key = match changes.recv().await {
                    Ok(k) => k,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(backend) = weak.upgrade() else {
                    return;
                };
                match backend.store.canary(&key).await {
                    Ok(Some(c)) => {
                        let entries = timeline(&c);
                        let from = seen.get(&key).copied().unwrap_or(entries.len());
                        seen.insert(key.clone(), entries.len());
                        let canary = summary(&c);
                        backend.edit_index(|index| {
                            index.insert(key.clone(), canary.clone());
                        });
                        let _ = backend.updates.send(Update::Canary { canary });
                        for entry in entries.into_iter().skip(from) {
                            let _ = backend.updates.send(Update::Entry {
                                namespace: key.namespace.clone(),
                                name: key.name.clone(),
                                entry,
                            });
                        }
                    }
                    Ok(None) => {
                        seen.remove(&key);
                        backend.edit_index(|index| {
                            index.remove(&key);
                        });
                        let _ = backend.updates.send(Update::Removed {
                            namespace: key.namespace.clone(),
                            name: key.name.clone(),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, canary = %key.name, ns = %key.namespace, "dashboard could not read a changed canary")
                    }
                }
            }
        });
        backend
    }

    fn set_index(&self, index: Option<BTreeMap<CanaryKey, CanarySummary>>) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
    }

    /// Edits the index once primed (before, the priming read sees the change anyway).
    fn edit_index(&self, edit: impl FnOnce(&mut BTreeMap<CanaryKey, CanarySummary>)) {
        if let Some(index) = self
            .index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            edit(index);
        }
    }

    /// The summaries in memory, sorted by namespace and name (`None` before the first read).
    fn indexed(&self) -> Option<Vec<CanarySummary>> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|index| index.values().cloned().collect())
    }
}

/// The summary, with pending gate commands already in effect (the gate endpoints must see a
/// gate opened a moment ago, before the engine's next tick applies it).
fn summary(c: &EngineCanary) -> CanarySummary {
    let mut s = convert::summary(
        &c.key,
        c.target.clone(),
        &c.status,
        c.target_revision.clone(),
    );
    for p in &c.pending {
        let cmd = convert::command_from_core(p);
        let open = match cmd.action {
            Action::GateOpen => true,
            Action::GateClose => false,
            _ => continue,
        };
        match cmd.gate_name() {
            gate::CONFIRM => s.gates.confirm = open,
            gate::ROLLBACK => s.gates.rollback = open,
            _ => {}
        }
    }
    s
}

/// The runs, oldest first, from the history and the current run.
fn runs(c: &EngineCanary) -> Vec<RunSummary> {
    use serin_core::HistoryKind as K;
    let mut runs: Vec<RunSummary> = Vec::new();
    for e in &c.history {
        if e.run == 0 {
            continue;
        }
        if !runs.iter().any(|r| r.id == e.run) {
            runs.push(RunSummary {
                id: e.run,
                revision: e.revision.clone().unwrap_or_default(),
                started_at: convert::time(e.at),
                ended_at: None,
                outcome: None,
            });
        }
        let run = runs
            .iter_mut()
            .find(|r| r.id == e.run)
            .expect("pushed above");
        if run.revision.is_empty()
            && let Some(rev) = &e.revision
        {
            run.revision = rev.clone();
        }
        if matches!(e.kind, K::Succeeded | K::RolledBack) {
            run.ended_at = Some(convert::time(e.at));
            run.outcome = Some(Outcome {
                result: if e.kind == K::Succeeded {
                    RunResult::Promoted
                } else if e.message.to_ascii_lowercase().contains("abort") {
                    RunResult::Aborted
                } else {
                    RunResult::RolledBack
                },
                reason: e.message.clone(),
            });
        }
    }
    // The status knows the current run best (and runs whose history was trimmed).
    if let Some(current) = &c.status.run {
        let current = convert::run(current);
        match runs.iter_mut().find(|r| r.id == current.id) {
            Some(r) => *r = current,
            None => runs.push(current),
        }
    }
    runs.sort_by_key(|r| r.id);
    runs
}

/// The API timeline: the engine's history expanded, then pending commands as `received`.
fn timeline(c: &EngineCanary) -> Vec<HistoryEntry> {
    let mut out = convert::history(&c.history);
    let current = c
        .status
        .run
        .as_ref()
        .filter(|r| r.outcome.is_none())
        .map(|r| r.id);
    for p in &c.pending {
        let cmd = convert::command_from_core(p);
        out.push(HistoryEntry {
            at: cmd.at,
            run: current,
            kind: EntryKind::Command {
                id: cmd.id,
                action: cmd.action,
                gate: cmd.gate,
                by: cmd.by,
                state: CommandState::Received,
                message: None,
            },
        });
    }
    out
}

fn validate(c: &EngineCanary, command: &Command) -> Result<(), BackendError> {
    match command.action {
        Action::GateOpen | Action::GateClose => match command.gate_name() {
            gate::CONFIRM | gate::ROLLBACK => Ok(()),
            other => Err(BackendError::Invalid(format!(
                "gate: unknown gate {other:?}; accepted: \"confirm\" (the default) or \"rollback\""
            ))),
        },
        action if command.gate.is_some() => Err(BackendError::Invalid(format!(
            "gate: only gate-open and gate-close take a gate, not {action}"
        ))),
        action if ignored_in(action, c.status.phase).is_some() => {
            Err(BackendError::Conflict(format!(
                "{action}: {} for {} (phase {}); the controller would ignore it",
                ignored_in(action, c.status.phase).unwrap_or_default(),
                c.key,
                c.status.phase
            )))
        }
        Action::Pause if c.status.paused.is_some() => Err(BackendError::Conflict(format!(
            "pause: {} is already paused",
            c.key
        ))),
        Action::Resume if c.status.paused.is_none() && !pending(c, Action::Pause) => Err(
            BackendError::Conflict(format!("resume: {} is not paused", c.key)),
        ),
        _ => Ok(()),
    }
}

/// Why the engine would ignore `action` in `phase`, or `None` when it applies it: promote and
/// abort act only during an analysis (Waiting, Progressing, WaitingPromotion); any other is
/// recorded as ignored. Every writer of commands refuses these up front, so the caller hears
/// it instead of a receipt for nothing.
pub fn ignored_in(action: Action, phase: Phase) -> Option<&'static str> {
    match action {
        Action::Promote | Action::Abort
            if !matches!(
                phase,
                Phase::Waiting | Phase::Progressing | Phase::WaitingPromotion
            ) =>
        {
            Some(
                if action == Action::Abort && matches!(phase, Phase::Promoting | Phase::Finalising)
                {
                    "promotion already under way"
                } else {
                    "no analysis in progress"
                },
            )
        }
        _ => None,
    }
}

fn pending(c: &EngineCanary, action: Action) -> bool {
    c.pending
        .iter()
        .any(|p| convert::command_from_core(p).action == action)
}

impl<S: EngineStore> Backend for EngineBackend<S> {
    async fn list(&self) -> Result<Vec<CanarySummary>, BackendError> {
        if let Some(items) = self.indexed() {
            return Ok(items);
        }
        let mut items: Vec<CanarySummary> =
            self.store.canaries().await?.iter().map(summary).collect();
        items.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(items)
    }

    async fn get(&self, key: &CanaryKey) -> Result<Option<CanaryState>, BackendError> {
        Ok(self.store.canary(key).await?.map(|c| CanaryState {
            summary: summary(&c),
            analysis: c.analysis.clone(),
            runs: runs(&c),
        }))
    }

    async fn history(
        &self,
        key: &CanaryKey,
        query: &HistoryQuery,
    ) -> Result<Vec<HistoryEntry>, BackendError> {
        let c = self
            .store
            .canary(key)
            .await?
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        let mut items: Vec<HistoryEntry> = timeline(&c)
            .into_iter()
            .filter(|e| query.run.is_none() || e.run == query.run)
            .collect();
        if let Some(limit) = query.limit {
            let skip = items.len().saturating_sub(limit);
            items.drain(..skip);
        }
        Ok(items)
    }

    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    async fn apply(
        &self,
        key: &CanaryKey,
        command: Command,
    ) -> Result<CommandReceipt, BackendError> {
        let c = self
            .store
            .canary(key)
            .await?
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        let already = c.pending.iter().any(|p| p.id == command.id)
            || c.status.applied_command_ids.contains(&command.id);
        if !already {
            validate(&c, &command)?;
            self.store
                .enqueue(key, convert::command_to_core(&command))
                .await?;
        }
        let c = self
            .store
            .canary(key)
            .await?
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        Ok(CommandReceipt {
            command,
            canary: summary(&c),
        })
    }
}

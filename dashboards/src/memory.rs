//! [`MemoryBackend`]: a complete [`Backend`] that keeps state in memory, optionally
//! snapshotted to a JSON file so it survives a restart.
//!
//! Tests drive it the way a controller would (start a run, move the phase, record checks, end
//! the run) and the local runtime can read it as a reference for the trait's contract. It has no
//! engine: gate commands and pause/resume take effect at once; promote and abort are queued in
//! the pending list for whoever plays the controller ([`MemoryBackend::take_commands`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::backend::{Backend, BackendError, HistoryQuery};
use crate::model::{
    Action, CanaryKey, CanaryState, CanarySummary, Command, CommandReceipt, CommandState,
    EntryKind, Gates, HistoryEntry, Outcome, Phase, RunResult, RunSummary, TargetRef, Update,
    WaitReason, Waiting, gate,
};

/// How many updates a slow subscriber may fall behind before it must resynchronise.
const UPDATE_BUFFER: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    state: CanaryState,
    history: Vec<HistoryEntry>,
    pending: Vec<Command>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    canaries: BTreeMap<String, Stored>,
}

/// An in-memory [`Backend`], persisted to a JSON file when opened with [`MemoryBackend::open`].
#[derive(Debug)]
pub struct MemoryBackend {
    inner: Mutex<BTreeMap<CanaryKey, Stored>>,
    path: Option<PathBuf>,
    updates: broadcast::Sender<Update>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// A backend that forgets everything when dropped.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(BTreeMap::new()),
            path: None,
            updates: broadcast::channel(UPDATE_BUFFER).0,
        }
    }

    /// A backend persisted to `path` (created on the first change); an existing file is loaded.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let path = path.into();
        let mut map = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let snap: Snapshot =
                    serde_json::from_slice(&bytes).map_err(|e| BackendError::Unavailable {
                        message: format!("reading state file {}", path.display()),
                        source: Some(Box::new(e)),
                    })?;
                for stored in snap.canaries.into_values() {
                    map.insert(stored.state.summary.key(), stored);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::Unavailable {
                    message: format!("reading state file {}", path.display()),
                    source: Some(Box::new(e)),
                });
            }
        }
        Ok(Self {
            inner: Mutex::new(map),
            path: Some(path),
            updates: broadcast::channel(UPDATE_BUFFER).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<CanaryKey, Stored>> {
        // A panic while holding the lock leaves consistent data (every mutation is a single
        // assignment or push), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the snapshot atomically (temporary file, then rename) so a crash never leaves a
    /// half-written file.
    fn persist(&self, map: &BTreeMap<CanaryKey, Stored>) -> Result<(), BackendError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let snap = Snapshot {
            canaries: map
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let unavailable = |e: std::io::Error| BackendError::Unavailable {
            message: format!("writing state file {}", path.display()),
            source: Some(Box::new(e)),
        };
        let bytes = serde_json::to_vec_pretty(&snap).map_err(|e| BackendError::Unavailable {
            message: "encoding state".into(),
            source: Some(Box::new(e)),
        })?;
        let tmp = tmp_path(path);
        std::fs::write(&tmp, bytes).map_err(unavailable)?;
        std::fs::rename(&tmp, path).map_err(unavailable)?;
        Ok(())
    }

    fn publish(&self, update: Update) {
        // No subscribers is fine: nobody is watching.
        let _ = self.updates.send(update);
    }

    /// Adds or replaces a Canary's state (history is kept).
    pub fn upsert(&self, state: CanaryState) -> Result<(), BackendError> {
        let mut map = self.lock();
        let key = state.summary.key();
        let summary = state.summary.clone();
        match map.get_mut(&key) {
            Some(stored) => stored.state = state,
            None => {
                map.insert(
                    key,
                    Stored {
                        state,
                        history: Vec::new(),
                        pending: Vec::new(),
                    },
                );
            }
        }
        self.persist(&map)?;
        drop(map);
        self.publish(Update::Canary { canary: summary });
        Ok(())
    }

    /// Adds an idle Canary (phase Initialized) serving `revision`.
    pub fn add_canary(
        &self,
        key: &CanaryKey,
        target: TargetRef,
        revision: &str,
        at: Timestamp,
    ) -> Result<(), BackendError> {
        self.upsert(CanaryState {
            summary: CanarySummary {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                target,
                phase: Phase::Initialized,
                canary_weight: 0,
                failed_checks: 0,
                iterations: 0,
                last_transition_time: Some(at),
                target_revision: Some(revision.to_string()),
                promoted_revision: Some(revision.to_string()),
                run: None,
                paused: false,
                waiting: None,
                gates: Gates::default(),
                message: None,
                holding: None,
            },
            analysis: None,
            runs: Vec::new(),
        })
    }

    /// Changes a Canary's state with `f` and publishes the new summary.
    pub fn update(
        &self,
        key: &CanaryKey,
        f: impl FnOnce(&mut CanaryState),
    ) -> Result<CanarySummary, BackendError> {
        let mut map = self.lock();
        let stored = map
            .get_mut(key)
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        f(&mut stored.state);
        let summary = stored.state.summary.clone();
        self.persist(&map)?;
        drop(map);
        self.publish(Update::Canary {
            canary: summary.clone(),
        });
        Ok(summary)
    }

    /// Appends a history entry to the Canary's current run (or outside runs when idle).
    pub fn record(
        &self,
        key: &CanaryKey,
        at: Timestamp,
        kind: EntryKind,
    ) -> Result<HistoryEntry, BackendError> {
        let mut map = self.lock();
        let stored = map
            .get_mut(key)
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        let entry = HistoryEntry {
            at,
            run: current_run(&stored.state),
            kind,
        };
        stored.history.push(entry.clone());
        self.persist(&map)?;
        drop(map);
        self.publish(Update::Entry {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            entry: entry.clone(),
        });
        Ok(entry)
    }

    /// The target now declares `revision` (what a deploy does); no run starts by itself.
    pub fn set_target_revision(&self, key: &CanaryKey, revision: &str) -> Result<(), BackendError> {
        self.update(key, |s| {
            s.summary.target_revision = Some(revision.to_string())
        })
        .map(drop)
    }

    /// Starts a run for `revision`: phase Progressing at weight 0, failed checks reset.
    pub fn start_run(
        &self,
        key: &CanaryKey,
        revision: &str,
        at: Timestamp,
    ) -> Result<u64, BackendError> {
        let mut previous = None;
        let mut from = None;
        let mut id = 0;
        self.update(key, |s| {
            id = s.runs.last().map_or(1, |r| r.id + 1);
            previous = s.summary.promoted_revision.clone();
            from = Some(s.summary.phase);
            let run = RunSummary {
                id,
                revision: revision.to_string(),
                started_at: at,
                ended_at: None,
                outcome: None,
            };
            s.runs.push(run.clone());
            s.summary.run = Some(run);
            s.summary.target_revision = Some(revision.to_string());
            s.summary.phase = Phase::Progressing;
            s.summary.canary_weight = 0;
            s.summary.failed_checks = 0;
            s.summary.iterations = 0;
            s.summary.last_transition_time = Some(at);
            s.summary.message = None;
        })?;
        self.record(
            key,
            at,
            EntryKind::RunStarted {
                revision: revision.to_string(),
                previous_revision: previous,
            },
        )?;
        self.record(
            key,
            at,
            EntryKind::Phase {
                from,
                to: Phase::Progressing,
                message: Some(format!("new revision {revision} detected")),
            },
        )?;
        Ok(id)
    }

    /// Moves the phase and records the transition.
    pub fn set_phase(
        &self,
        key: &CanaryKey,
        phase: Phase,
        at: Timestamp,
        message: Option<&str>,
    ) -> Result<(), BackendError> {
        let mut from = None;
        self.update(key, |s| {
            from = Some(s.summary.phase);
            s.summary.phase = phase;
            s.summary.last_transition_time = Some(at);
            s.summary.waiting = match phase {
                Phase::Waiting => Some(waiting(WaitReason::ConfirmRollout, at)),
                Phase::WaitingPromotion => Some(waiting(WaitReason::ConfirmPromotion, at)),
                _ if s.summary.paused => s.summary.waiting.clone(),
                _ => None,
            };
        })?;
        self.record(
            key,
            at,
            EntryKind::Phase {
                from,
                to: phase,
                message: message.map(str::to_string),
            },
        )
        .map(drop)
    }

    /// Moves the canary weight and records the step.
    pub fn set_weight(
        &self,
        key: &CanaryKey,
        weight: u32,
        at: Timestamp,
    ) -> Result<(), BackendError> {
        let mut from = 0;
        self.update(key, |s| {
            from = s.summary.canary_weight;
            s.summary.canary_weight = weight;
        })?;
        self.record(
            key,
            at,
            EntryKind::Weight {
                from,
                to: weight,
                iteration: None,
            },
        )
        .map(drop)
    }

    /// Ends the current run: Succeeded (weight 0, revision promoted) or Failed (weight 0).
    pub fn end_run(
        &self,
        key: &CanaryKey,
        result: RunResult,
        reason: &str,
        at: Timestamp,
    ) -> Result<(), BackendError> {
        let outcome = Outcome {
            result,
            reason: reason.to_string(),
        };
        let phase = if result.is_success() {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
        // Record before closing the run so the entry belongs to it.
        self.record(
            key,
            at,
            EntryKind::RunEnded {
                outcome: outcome.clone(),
            },
        )?;
        let mut from = None;
        let mut run_id = None;
        self.update(key, |s| {
            from = Some(s.summary.phase);
            if let Some(run) = s.summary.run.as_mut() {
                run.ended_at = Some(at);
                run.outcome = Some(outcome.clone());
                run_id = Some(run.id);
                if result.is_success() {
                    s.summary.promoted_revision = Some(run.revision.clone());
                }
                let updated = run.clone();
                if let Some(r) = s.runs.iter_mut().find(|r| r.id == updated.id) {
                    *r = updated;
                }
            }
            s.summary.phase = phase;
            s.summary.canary_weight = 0;
            s.summary.last_transition_time = Some(at);
            s.summary.waiting = None;
            s.summary.message = Some(reason.to_string());
        })?;
        // The phase entry still belongs to the run that just ended.
        let mut map = self.lock();
        if let Some(stored) = map.get_mut(key) {
            let entry = HistoryEntry {
                at,
                run: run_id,
                kind: EntryKind::Phase {
                    from,
                    to: phase,
                    message: Some(reason.to_string()),
                },
            };
            stored.history.push(entry.clone());
            self.persist(&map)?;
            drop(map);
            self.publish(Update::Entry {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                entry,
            });
        }
        Ok(())
    }

    /// Commands received but not yet taken by the controller, oldest first.
    pub fn pending_commands(&self, key: &CanaryKey) -> Vec<Command> {
        self.lock()
            .get(key)
            .map(|s| s.pending.clone())
            .unwrap_or_default()
    }

    /// Takes the pending commands (as a controller tick does) and persists their removal.
    pub fn take_commands(&self, key: &CanaryKey) -> Result<Vec<Command>, BackendError> {
        let mut map = self.lock();
        let taken = map
            .get_mut(key)
            .map(|s| std::mem::take(&mut s.pending))
            .unwrap_or_default();
        self.persist(&map)?;
        Ok(taken)
    }

    /// Removes a Canary.
    pub fn remove(&self, key: &CanaryKey) -> Result<(), BackendError> {
        let mut map = self.lock();
        map.remove(key)
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        self.persist(&map)?;
        drop(map);
        self.publish(Update::Removed {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        });
        Ok(())
    }
}

fn waiting(reason: WaitReason, at: Timestamp) -> Waiting {
    Waiting {
        reason,
        since: Some(at),
        message: None,
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn current_run(state: &CanaryState) -> Option<u64> {
    state
        .summary
        .run
        .as_ref()
        .filter(|r| r.outcome.is_none())
        .map(|r| r.id)
}

/// Checks a command against the Canary's state and applies the parts that take effect at once.
fn admit(state: &mut CanaryState, command: &Command) -> Result<(), BackendError> {
    let s = &mut state.summary;
    match command.action {
        Action::GateOpen | Action::GateClose => {
            let open = command.action == Action::GateOpen;
            match command.gate_name() {
                gate::CONFIRM => s.gates.confirm = open,
                gate::ROLLBACK => s.gates.rollback = open,
                other => {
                    return Err(BackendError::Invalid(format!(
                        "gate: unknown gate {other:?}; accepted: \"confirm\" (the default) or \"rollback\""
                    )));
                }
            }
        }
        action => {
            if command.gate.is_some() {
                return Err(BackendError::Invalid(format!(
                    "gate: only gate-open and gate-close take a gate, not {action}"
                )));
            }
            let running = s.revision_in_flight().is_some();
            match action {
                Action::Promote | Action::Abort if !running => {
                    return Err(BackendError::Conflict(format!(
                        "{action}: no run in flight for {} (phase {})",
                        s.key(),
                        s.phase
                    )));
                }
                Action::Pause if s.paused => {
                    return Err(BackendError::Conflict(format!(
                        "pause: {} is already paused",
                        s.key()
                    )));
                }
                Action::Pause => {
                    s.paused = true;
                    s.waiting = Some(waiting(WaitReason::Paused, command.at));
                }
                Action::Resume if !s.paused => {
                    return Err(BackendError::Conflict(format!(
                        "resume: {} is not paused",
                        s.key()
                    )));
                }
                Action::Resume => {
                    s.paused = false;
                    s.waiting = None;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

impl Backend for MemoryBackend {
    async fn list(&self) -> Result<Vec<CanarySummary>, BackendError> {
        Ok(self
            .lock()
            .values()
            .map(|s| s.state.summary.clone())
            .collect())
    }

    async fn get(&self, key: &CanaryKey) -> Result<Option<CanaryState>, BackendError> {
        Ok(self.lock().get(key).map(|s| s.state.clone()))
    }

    async fn history(
        &self,
        key: &CanaryKey,
        query: &HistoryQuery,
    ) -> Result<Vec<HistoryEntry>, BackendError> {
        let map = self.lock();
        let stored = map
            .get(key)
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        let mut items: Vec<HistoryEntry> = stored
            .history
            .iter()
            .filter(|e| query.run.is_none() || e.run == query.run)
            .cloned()
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
        let mut map = self.lock();
        let stored = map
            .get_mut(key)
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        // The same id twice is one command: answer as the first time, record nothing new.
        let seen = stored
            .history
            .iter()
            .any(|e| matches!(&e.kind, EntryKind::Command { id, .. } if *id == command.id));
        if !seen {
            admit(&mut stored.state, &command)?;
            if matches!(command.action, Action::Promote | Action::Abort) {
                stored.pending.push(command.clone());
            }
            let entry = HistoryEntry {
                at: command.at,
                run: current_run(&stored.state),
                kind: EntryKind::Command {
                    id: command.id.clone(),
                    action: command.action,
                    gate: command.gate.clone(),
                    by: command.by.clone(),
                    state: CommandState::Received,
                    message: None,
                },
            };
            stored.history.push(entry.clone());
            let summary = stored.state.summary.clone();
            self.persist(&map)?;
            drop(map);
            self.publish(Update::Entry {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                entry,
            });
            self.publish(Update::Canary {
                canary: summary.clone(),
            });
            return Ok(CommandReceipt {
                command,
                canary: summary,
            });
        }
        Ok(CommandReceipt {
            command,
            canary: stored.state.summary.clone(),
        })
    }
}

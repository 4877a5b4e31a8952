//! The seam between the dashboard and a controller runtime.
//!
//! The Kubernetes and local runtimes implement [`Backend`] over their persisted state; the
//! router serves whatever it returns. `memory::MemoryBackend` (feature `test-support`) is a
//! complete implementation to test against and to read as a reference.

use std::future::Future;

use tokio::sync::broadcast;

use crate::model::{
    CanaryKey, CanaryState, CanarySummary, Command, CommandReceipt, HistoryEntry, Update,
};

/// Why a backend call failed. The router maps each variant to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No Canary with that namespace and name (404).
    #[error("canary {0} not found")]
    NotFound(CanaryKey),
    /// The command does not fit the Canary's state, e.g. resume while not paused (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed, e.g. an unknown gate name (400).
    #[error("{0}")]
    Invalid(String),
    /// The state could not be read or written (503); the cause is kept.
    #[error("state unavailable: {message}")]
    Unavailable {
        /// What was being done.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Which history entries to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only entries of this run.
    pub run: Option<u64>,
    /// At most this many of the newest matching entries.
    pub limit: Option<usize>,
}

/// A controller's state as the dashboard, the gate endpoints and the CLI see it.
///
/// Contract for implementers:
/// - every change to a Canary's summary is published on [`Backend::subscribe`] as
///   [`Update::Canary`], every appended history entry as [`Update::Entry`];
/// - [`Backend::apply`] persists the command *before* answering (a controller restart must not
///   lose it), records a [`crate::model::EntryKind::Command`] entry with `state: received` and
///   the command's `by`, and applies gate commands at once (the gate check endpoints read
///   [`CanarySummary::gates`] right after); promote/abort/pause/resume are applied by the
///   controller on its next tick, which records them again with `state: applied`;
/// - history is append-only and returned oldest first.
pub trait Backend: Send + Sync + 'static {
    /// Every Canary, sorted by namespace and name.
    fn list(&self) -> impl Future<Output = Result<Vec<CanarySummary>, BackendError>> + Send;

    /// One Canary, or `None` when it does not exist.
    fn get(
        &self,
        key: &CanaryKey,
    ) -> impl Future<Output = Result<Option<CanaryState>, BackendError>> + Send;

    /// History entries of one Canary, oldest first. [`BackendError::NotFound`] for an unknown
    /// Canary.
    fn history(
        &self,
        key: &CanaryKey,
        query: &HistoryQuery,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, BackendError>> + Send;

    /// A receiver of every later change. Slow receivers may lag; the router then tells the
    /// page to resynchronise.
    fn subscribe(&self) -> broadcast::Receiver<Update>;

    /// Persists and records a manual command (see the trait's contract).
    fn apply(
        &self,
        key: &CanaryKey,
        command: Command,
    ) -> impl Future<Output = Result<CommandReceipt, BackendError>> + Send;
}

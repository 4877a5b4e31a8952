//! The local store: each Canary's status and rollout history in one JSON file, written
//! atomically (temp file, fsync, rename, fsync of the directory), plus its pending manual
//! commands in a second file.
//!
//! Why JSON files and not SQLite: the state of one Canary is small (a status and a bounded
//! history), it is always read and written whole, and one rename makes status and history change
//! together, so a crash keeps either the old pair or the new one, never a mix. Files need no C
//! build (this machine has two cores shared by many builds), can be read with `cat` and `jq`
//! while debugging, and one writer (the controller) owns them. SQLite would buy queries we do not
//! need.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serin_core::{Command, HistoryEntry, Status};
use tokio::sync::{Mutex, broadcast};

use serin_controller::adapters::{AdapterError, CanaryContext, CanaryId, ErrorKind, Store};

/// History entries kept per Canary (oldest dropped first).
pub const HISTORY_LIMIT: usize = 5_000;

/// Writes `bytes` to `path` so that readers (and a crash) see either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Unique per write: two writers of the same file in one process must not share a temp file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|f| f.to_str()).unwrap_or("state"),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What one Canary's state file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryRecord {
    /// Namespace and name.
    pub id: Option<CanaryId>,
    /// The engine's status.
    pub status: Status,
    /// The rollout history, oldest first (at most [`HISTORY_LIMIT`]).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// The target's name (the Process), for tools reading the file.
    #[serde(default)]
    pub target: String,
}

/// A change the store publishes after each save (for the dashboard's live updates and `serin
/// demo`'s terminal output).
#[derive(Debug, Clone)]
pub struct Saved {
    /// Which Canary.
    pub id: CanaryId,
    /// Its new status.
    pub status: Status,
    /// The entries recorded by this save.
    pub entries: Vec<HistoryEntry>,
}

/// Status, history and commands in a directory of JSON files.
pub struct FileStore {
    dir: PathBuf,
    lock: Mutex<()>,
    saved: broadcast::Sender<Saved>,
}

impl FileStore {
    /// A store in `dir` (created when missing).
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            lock: Mutex::new(()),
            saved: broadcast::channel(1024).0,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Receives every save.
    pub fn subscribe(&self) -> broadcast::Receiver<Saved> {
        self.saved.subscribe()
    }

    fn file(&self, id: &CanaryId, what: &str) -> PathBuf {
        self.dir
            .join(format!("{}_{}.{what}.json", id.namespace, id.name))
    }

    fn io_error(what: String, e: impl std::error::Error + Send + Sync + 'static) -> AdapterError {
        AdapterError::new(ErrorKind::Other, what, e.to_string()).with_source(e)
    }

    /// Reads one Canary's record; `None` when it was never saved.
    pub fn read(&self, id: &CanaryId) -> Result<Option<CanaryRecord>, AdapterError> {
        let path = self.file(id, "state");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Self::io_error(format!("reading {}", path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io_error(format!("reading {}", path.display()), e)),
        }
    }

    /// Every Canary with a state file.
    pub fn list(&self) -> Result<Vec<CanaryRecord>, AdapterError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Self::io_error(format!("listing {}", self.dir.display()), e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.ends_with(".state.json") && !f.starts_with('.'))
                && let Ok(bytes) = std::fs::read(&path)
                && let Ok(record) = serde_json::from_slice::<CanaryRecord>(&bytes)
            {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Persists a manual command before it is applied (the next tick hands it to the engine).
    pub async fn push_command(&self, id: &CanaryId, command: Command) -> Result<(), AdapterError> {
        let _guard = self.lock.lock().await;
        let mut commands = self.read_commands(id)?;
        if !commands.iter().any(|c| c.id == command.id) {
            commands.push(command);
        }
        self.write_commands(id, &commands)
    }

    fn read_commands(&self, id: &CanaryId) -> Result<Vec<Command>, AdapterError> {
        let path = self.file(id, "commands");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Self::io_error(format!("reading {}", path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Self::io_error(format!("reading {}", path.display()), e)),
        }
    }

    fn write_commands(&self, id: &CanaryId, commands: &[Command]) -> Result<(), AdapterError> {
        let path = self.file(id, "commands");
        let bytes = serde_json::to_vec_pretty(commands)
            .map_err(|e| Self::io_error("encoding commands".into(), e))?;
        write_atomic(&path, &bytes)
            .map_err(|e| Self::io_error(format!("writing {}", path.display()), e))
    }
}

#[async_trait]
impl Store for FileStore {
    async fn load(&self, id: &CanaryId) -> Result<Option<Status>, AdapterError> {
        let _guard = self.lock.lock().await;
        Ok(self.read(id)?.map(|r| r.status))
    }

    async fn save(
        &self,
        canary: &CanaryContext,
        status: &Status,
        history: &[HistoryEntry],
    ) -> Result<(), AdapterError> {
        let _guard = self.lock.lock().await;
        let mut record = self.read(&canary.id)?.unwrap_or_default();
        record.id = Some(canary.id.clone());
        record.target = canary.target.clone();
        record.status = status.clone();
        record.history.extend(history.iter().cloned());
        if record.history.len() > HISTORY_LIMIT {
            let excess = record.history.len() - HISTORY_LIMIT;
            record.history.drain(..excess);
        }
        let path = self.file(&canary.id, "state");
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| Self::io_error("encoding state".into(), e))?;
        write_atomic(&path, &bytes)
            .map_err(|e| Self::io_error(format!("writing {}", path.display()), e))?;
        // Commands the engine has applied are dropped from the queue; the engine would ignore
        // them anyway, this only keeps the file short.
        let commands = self.read_commands(&canary.id)?;
        if !commands.is_empty() {
            let applied: Vec<&String> = status.applied_command_ids.iter().collect();
            let left: Vec<Command> = commands
                .into_iter()
                .filter(|c| !applied.contains(&&c.id))
                .collect();
            self.write_commands(&canary.id, &left)?;
        }
        let _ = self.saved.send(Saved {
            id: canary.id.clone(),
            status: status.clone(),
            entries: history.to_vec(),
        });
        Ok(())
    }

    async fn pending_commands(&self, id: &CanaryId) -> Result<Vec<Command>, AdapterError> {
        let _guard = self.lock.lock().await;
        self.read_commands(id)
    }
}

//! The dashboard over the local controller's file store: an [`EngineStore`] for
//! [`FileStore`](crate::store::FileStore), and [`serve`] to run the dashboard (pages, API,
//! SSE, Flagger gates) on a listener. `serin controller --local` serves it next to its loop,
//! sharing one `FileStore` (one lock, one stream of change notifications).
//!
//! The revision a target declares and the analysis settings come from the manifest directory
//! (the `Process`'s `spec.revision`, the Canary's `spec.analysis`), read when asked, so `serin
//! wait` sees a new revision the moment the manifest changes, before the controller's next tick.

use std::path::PathBuf;
use std::sync::Arc;

use crate::manifest::{self, Document};
use crate::store::{CanaryRecord, FileStore};
use serin_controller::adapters::CanaryId;
use serin_controller::dashboard::analysis_info;
use serin_dashboard::engine::{EngineBackend, EngineCanary, EngineStore};
use serin_dashboard::model::{AnalysisInfo, CanaryKey, TargetRef};
use serin_dashboard::{BackendError, DashboardConfig};
use tokio::sync::broadcast;

/// The local file store as the dashboard's engine store.
pub struct LocalStore {
    store: Arc<FileStore>,
    manifests: Option<PathBuf>,
    changes: broadcast::Sender<CanaryKey>,
}

impl LocalStore {
    /// Wraps `store` and forwards its saves as change notifications (on the current runtime).
    /// `manifests` is the controller's manifest directory (target revisions and analysis
    /// settings are read from it); without it the revision last taken into account stands in.
    pub fn new(store: Arc<FileStore>, manifests: Option<PathBuf>) -> Arc<Self> {
        let changes = broadcast::channel(1024).0;
        let mut saved = store.subscribe();
        let tx = changes.clone();
        tokio::spawn(async move {
            loop {
                match saved.recv().await {
                    Ok(s) => {
                        let _ = tx.send(CanaryKey::new(s.id.namespace, s.id.name));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Arc::new(Self {
            store,
            manifests,
            changes,
        })
    }

    /// What the manifest directory declares now.
    fn declared(&self) -> Declared {
        let Some(dir) = &self.manifests else {
            return Declared::default();
        };
        let docs = match manifest::read_dir(dir) {
            Ok((docs, _errors)) => docs,
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "dashboard cannot read the manifest directory");
                return Declared::default();
            }
        };
        let mut out = Declared::default();
        for doc in docs {
            match doc {
                Document::Process { process, .. } => {
                    out.revisions.push((
                        process.metadata.namespace().to_string(),
                        process.metadata.name.clone(),
                        process.spec.revision(),
                    ));
                }
                Document::Canary { value, .. } => {
                    let Ok(canary) = serde_norway::from_value::<serin_api::Canary>(value) else {
                        continue;
                    };
                    let ns = canary
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".to_string());
                    let name = canary.metadata.name.clone().unwrap_or_default();
                    if let Ok(n) = serin_api::Normalized::from_canary(&canary) {
                        out.analysis
                            .push((CanaryKey::new(ns, name), analysis_info(&n)));
                    }
                }
            }
        }
        out
    }
}

#[derive(Default)]
struct Declared {
    /// (namespace, process, revision)
    revisions: Vec<(String, String, String)>,
    analysis: Vec<(CanaryKey, AnalysisInfo)>,
}

impl Declared {
    fn revision(&self, ns: &str, process: &str) -> Option<String> {
        self.revisions
            .iter()
            .find(|(n, p, _)| n == ns && p == process)
            .map(|(_, _, r)| r.clone())
    }

    fn analysis(&self, key: &CanaryKey) -> Option<AnalysisInfo> {
        self.analysis
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, a)| a.clone())
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> BackendError {
    BackendError::Unavailable {
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

async fn canary(
    store: &FileStore,
    declared: &Declared,
    record: CanaryRecord,
) -> Result<Option<EngineCanary>, BackendError> {
    let Some(id) = record.id else { return Ok(None) };
    let key = CanaryKey::new(&id.namespace, &id.name);
    let pending = serin_controller::adapters::Store::pending_commands(store, &id)
        .await
        .map_err(unavailable)?;
    Ok(Some(EngineCanary {
        // What the manifest declares now; the revision the controller last took into account
        // only when the Process is gone from the directory (or no directory is known).
        target_revision: declared
            .revision(&id.namespace, &record.target)
            .or_else(|| record.status.last_applied_spec.clone()),
        analysis: declared.analysis(&key),
        key,
        target: TargetRef {
            kind: "Process".into(),
            name: record.target.clone(),
        },
        status: record.status,
        history: record.history,
        pending,
    }))
}

impl EngineStore for LocalStore {
    async fn canaries(&self) -> Result<Vec<EngineCanary>, BackendError> {
        let declared = self.declared();
        let mut out = Vec::new();
        for record in self.store.list().map_err(unavailable)? {
            if let Some(c) = canary(&self.store, &declared, record).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn canary(&self, key: &CanaryKey) -> Result<Option<EngineCanary>, BackendError> {
        let id = CanaryId {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        };
        match self.store.read(&id).map_err(unavailable)? {
            Some(record) => canary(&self.store, &self.declared(), record).await,
            None => Ok(None),
        }
    }

    async fn enqueue(
        &self,
        key: &CanaryKey,
        command: serin_core::Command,
    ) -> Result<(), BackendError> {
        let id = CanaryId {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        };
        if self.store.read(&id).map_err(unavailable)?.is_none() {
            return Err(BackendError::NotFound(key.clone()));
        }
        self.store
            .push_command(&id, command)
            .await
            .map_err(unavailable)?;
        let _ = self.changes.send(key.clone());
        Ok(())
    }

    fn changes(&self) -> broadcast::Receiver<CanaryKey> {
        self.changes.subscribe()
    }
}

/// Serves the dashboard over the local store on `listener` until the task is dropped or fails,
/// reading target revisions and analysis settings from `manifests`, the controller's manifest
/// directory (see [`LocalStore::new`]).
pub async fn serve_with_manifests(
    store: Arc<FileStore>,
    manifests: Option<PathBuf>,
    listener: tokio::net::TcpListener,
    token: Option<String>,
) -> std::io::Result<()> {
    let backend = EngineBackend::new(LocalStore::new(store, manifests));
    let app = serin_dashboard::router(backend, DashboardConfig { token });
    axum::serve(listener, app).await
}

/// `serin controller --local`: opens the store, serves the dashboard on it (when a listener and
/// its action token are given) and runs the controller loop until `shutdown` completes.
pub async fn run_controller(
    opts: crate::controller::LocalOptions,
    dashboard: Option<(tokio::net::TcpListener, Option<String>)>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), crate::controller::LocalError> {
    let store = Arc::new(FileStore::open(&opts.state_dir).map_err(|source| {
        crate::controller::LocalError::Io {
            what: format!("opening the state directory {}", opts.state_dir.display()),
            source,
        }
    })?);
    let server = dashboard.map(|(listener, token)| {
        let store = store.clone();
        let dir = opts.dir.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_with_manifests(store, Some(dir), listener, token).await {
                tracing::error!(%error, "the dashboard stopped serving");
            }
        })
    });
    let result = crate::controller::run_with_store(opts, store, shutdown).await;
    if let Some(server) = server {
        server.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use serin_dashboard::Backend;
    use serin_dashboard::model::Action;

    use super::*;

    #[tokio::test]
    async fn the_dashboard_reads_the_file_store_and_persists_commands_there() {
        let dir = std::env::temp_dir().join(format!("serin-local-dash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(FileStore::open(&dir).unwrap());
        let id = CanaryId {
            namespace: "default".into(),
            name: "podinfo".into(),
        };
        let record = CanaryRecord {
            id: Some(id.clone()),
            status: serin_core::Status {
                phase: serin_core::Phase::Progressing,
                canary_weight: 10,
                last_applied_spec: Some("v2".into()),
                last_promoted_spec: Some("v1".into()),
                run: Some(serin_core::Run {
                    id: 1,
                    revision: "v2".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            history: vec![],
            target: "podinfo".into(),
        };
        crate::store::write_atomic(
            &dir.join("default_podinfo.state.json"),
            &serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        let backend = EngineBackend::new(LocalStore::new(store.clone(), None));
        let list = backend.list().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].revision_in_flight(), Some("v2"));
        let key = CanaryKey::new("default", "podinfo");
        let at = jiff::Timestamp::now();
        let receipt = backend
            .apply(
                &key,
                serin_dashboard::model::Command {
                    id: "c1".into(),
                    action: Action::GateOpen,
                    gate: None,
                    by: "tester".into(),
                    at,
                },
            )
            .await
            .unwrap();
        assert!(receipt.canary.gates.confirm);
        // Persisted in the store's command file: a fresh store (a restart) sees it.
        let reopened = FileStore::open(&dir).unwrap();
        let pending = serin_controller::adapters::Store::pending_commands(&reopened, &id)
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].by, "tester");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

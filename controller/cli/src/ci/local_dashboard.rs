//! The dashboard over the local controller's file store: an [`EngineStore`] for
//! `serin_controller::local::store::FileStore`, and [`serve`] to run the dashboard (pages, API,
//! SSE, Flagger gates) on a listener. The local controller spawns [`serve`] next to its loop.

use std::sync::Arc;

use serin_controller::adapters::CanaryId;
use serin_controller::local::store::{CanaryRecord, FileStore};
use serin_dashboard::engine::{EngineBackend, EngineCanary, EngineStore};
use serin_dashboard::model::{CanaryKey, TargetRef};
use serin_dashboard::{BackendError, DashboardConfig};
use tokio::sync::broadcast;

/// The local file store as the dashboard's engine store.
pub struct LocalStore {
    store: Arc<FileStore>,
    changes: broadcast::Sender<CanaryKey>,
}

impl LocalStore {
    /// Wraps `store` and forwards its saves as change notifications (on the current runtime).
    pub fn new(store: Arc<FileStore>) -> Arc<Self> {
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
        Arc::new(Self { store, changes })
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
    record: CanaryRecord,
) -> Result<Option<EngineCanary>, BackendError> {
    let Some(id) = record.id else { return Ok(None) };
    let pending = serin_controller::adapters::Store::pending_commands(store, &id)
        .await
        .map_err(unavailable)?;
    Ok(Some(EngineCanary {
        key: CanaryKey::new(&id.namespace, &id.name),
        target: TargetRef {
            kind: "Process".into(),
            name: record.target.clone(),
        },
        // The revision the controller last took into account; `serin wait --revision` is
        // exact when the manifest changed a moment ago.
        target_revision: record.status.last_applied_spec.clone(),
        status: record.status,
        history: record.history,
        pending,
        analysis: None,
    }))
}

impl EngineStore for LocalStore {
    async fn canaries(&self) -> Result<Vec<EngineCanary>, BackendError> {
        let mut out = Vec::new();
        for record in self.store.list().map_err(unavailable)? {
            if let Some(c) = canary(&self.store, record).await? {
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
            Some(record) => canary(&self.store, record).await,
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

/// Serves the dashboard over the local store on `listener` until the task is dropped or fails.
pub async fn serve(
    store: Arc<FileStore>,
    listener: tokio::net::TcpListener,
    token: Option<String>,
) -> std::io::Result<()> {
    let backend = EngineBackend::new(LocalStore::new(store));
    let app = serin_dashboard::router(backend, DashboardConfig { token });
    axum::serve(listener, app).await
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
        serin_controller::local::store::write_atomic(
            &dir.join("default_podinfo.state.json"),
            &serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        let backend = EngineBackend::new(LocalStore::new(store.clone()));
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

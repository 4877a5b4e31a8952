//! The dashboard over Kubernetes: an [`EngineStore`] reading each Canary's status (the engine
//! state under `status.serin.state`, its history under `status.serin.history`) and writing
//! manual commands as the `serin.dev/command` annotation, which the controller applies once per
//! id and records in the history. `serin controller --kubernetes` serves it next to its loop.
//!
//! Changes are found by polling the Canary list (resource versions), so the page and the SSE
//! stream follow the controller's status writes within a poll interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use serin_dashboard::engine::{EngineBackend, EngineCanary, EngineStore};
use serin_dashboard::model::{CanaryKey, TargetRef};
use serin_dashboard::{BackendError, DashboardConfig};
use tokio::sync::broadcast;

use crate::source::{COMMAND_ANNOTATION, KubeSource};

/// How often the Canary list is polled for changes.
pub const POLL: Duration = Duration::from_secs(2);

/// Canaries in a cluster as the dashboard's engine store.
pub struct KubeStore {
    source: KubeSource,
    namespace: Option<String>,
    changes: broadcast::Sender<CanaryKey>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable {
        message: format!("{what}: {e}"),
        source: None,
    }
}

fn key_of(obj: &DynamicObject) -> CanaryKey {
    CanaryKey::new(
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

impl KubeStore {
    /// A store over `client`, for the Canaries of `namespace` (all when `None`). With `poll`,
    /// a task (on the current runtime) lists the Canaries at that period and publishes the
    /// keys whose resource version changed or which disappeared.
    pub fn new(
        client: kube::Client,
        namespace: Option<String>,
        poll: Option<Duration>,
    ) -> Arc<Self> {
        let store = Arc::new(Self {
            source: KubeSource::from_client(client),
            namespace,
            changes: broadcast::channel(1024).0,
        });
        if let Some(period) = poll {
            let weak = Arc::downgrade(&store);
            tokio::spawn(async move {
                let mut seen: HashMap<CanaryKey, String> = HashMap::new();
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    let Some(store) = weak.upgrade() else { return };
                    let list = match store
                        .source
                        .canary_api(store.namespace.as_deref())
                        .list(&ListParams::default())
                        .await
                    {
                        Ok(l) => l,
                        Err(error) => {
                            tracing::warn!(%error, "dashboard: listing canaries failed");
                            continue;
                        }
                    };
                    let mut now = HashMap::new();
                    for obj in &list.items {
                        let key = key_of(obj);
                        let version = obj.metadata.resource_version.clone().unwrap_or_default();
                        if seen.get(&key) != Some(&version) {
                            let _ = store.changes.send(key.clone());
                        }
                        now.insert(key, version);
                    }
                    for gone in seen.keys().filter(|k| !now.contains_key(*k)) {
                        let _ = store.changes.send(gone.clone());
                    }
                    seen = now;
                }
            });
        }
        store
    }

    async fn engine_canary(&self, obj: &DynamicObject) -> Result<EngineCanary, BackendError> {
        let key = key_of(obj);
        let target = TargetRef {
            kind: str_at(&obj.data, "/spec/targetRef/kind")
                .unwrap_or("Deployment")
                .to_string(),
            name: str_at(&obj.data, "/spec/targetRef/name")
                .unwrap_or_default()
                .to_string(),
        };
        let target_revision = self
            .source
            .target_revision(&key.namespace, &target)
            .await
            .map_err(|e| unavailable("reading the target", e))?;
        let history = obj
            .data
            .pointer("/status/serin/history")
            .and_then(Value::as_array)
            .map(|items| {
                // An entry this version cannot read (a newer controller) is skipped, not fatal.
                items
                    .iter()
                    .filter_map(|v| serde_json::from_value(v.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let analysis = serde_json::from_value::<serin_api::Canary>(json!({
            "apiVersion": obj.types.as_ref().map(|t| t.api_version.clone()).unwrap_or_else(|| "serin.dev/v1beta1".into()),
            "kind": "Canary",
            "metadata": {"name": key.name, "namespace": key.namespace},
            "spec": obj.data.get("spec").cloned().unwrap_or(Value::Null),
        }))
        .ok()
        .and_then(|c| serin_api::Normalized::from_canary(&c).ok())
        .map(|n| serin_controller::dashboard::analysis_info(&n));
        Ok(EngineCanary {
            status: crate::source::engine_status(&obj.data),
            pending: crate::source::pending_command(obj).into_iter().collect(),
            key,
            target,
            history,
            target_revision,
            analysis,
        })
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

impl EngineStore for KubeStore {
    async fn canaries(&self) -> Result<Vec<EngineCanary>, BackendError> {
        let list = self
            .source
            .canary_api(self.namespace.as_deref())
            .list(&ListParams::default())
            .await
            .map_err(|e| unavailable("listing canaries", e))?;
        let mut out = Vec::new();
        for obj in &list.items {
            out.push(self.engine_canary(obj).await?);
        }
        Ok(out)
    }

    async fn canary(&self, key: &CanaryKey) -> Result<Option<EngineCanary>, BackendError> {
        if self
            .namespace
            .as_deref()
            .is_some_and(|ns| ns != key.namespace)
        {
            return Ok(None);
        }
        let obj = self
            .source
            .canary_api(Some(&key.namespace))
            .get_opt(&key.name)
            .await
            .map_err(|e| unavailable(&format!("reading canary {key}"), e))?;
        match obj {
            Some(obj) => Ok(Some(self.engine_canary(&obj).await?)),
            None => Ok(None),
        }
    }

    async fn enqueue(
        &self,
        key: &CanaryKey,
        command: serin_core::Command,
    ) -> Result<(), BackendError> {
        let Some(obj) = self
            .source
            .canary_api(Some(&key.namespace))
            .get_opt(&key.name)
            .await
            .map_err(|e| unavailable(&format!("reading canary {key}"), e))?
        else {
            return Err(BackendError::NotFound(key.clone()));
        };
        // One annotation holds one command: overwriting an unapplied one would lose it.
        if let Some(pending) = crate::source::pending_command(&obj)
            && pending.id != command.id
        {
            return Err(BackendError::Conflict(format!(
                "{key}: the previous command {} ({} by {}) is not applied yet; retry once the controller has applied it (status.lastCommandId)",
                pending.id,
                serin_dashboard::convert::command_from_core(&pending).action,
                pending.by
            )));
        }
        let text = serde_json::to_string(&command).map_err(|e| unavailable("encoding", e))?;
        let patch = json!({"metadata": {"annotations": {COMMAND_ANNOTATION: text}}});
        self.source
            .canary_api(Some(&key.namespace))
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| unavailable(&format!("writing the command to canary {key}"), e))?;
        let _ = self.changes.send(key.clone());
        Ok(())
    }

    fn changes(&self) -> broadcast::Receiver<CanaryKey> {
        self.changes.subscribe()
    }
}

/// Serves the dashboard over the cluster's Canaries on `listener` until the task is dropped.
pub async fn serve(
    client: kube::Client,
    namespace: Option<String>,
    listener: tokio::net::TcpListener,
    token: Option<String>,
) -> std::io::Result<()> {
    let backend = EngineBackend::new(KubeStore::new(client, namespace, Some(POLL)));
    let app = serin_dashboard::router(backend, DashboardConfig { token });
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    //! Scenarios against a mocked API server: each expected call asserted by method, URI and
    //! body and answered as the API server would; a missing or extra call fails the test.

    use serin_dashboard::Backend;
    use serin_dashboard::model::{Action, CommandState, EntryKind, Phase};

    use super::*;

    use crate::testing::{Call, Handle, assert_no_more_calls, expect, mock_client, respond};

    const CANARY: &str = "/apis/serin.dev/v1beta1/namespaces/prod/canaries/podinfo";
    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/prod/deployments/podinfo";

    fn canary(annotations: Value) -> Value {
        json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "prod", "resourceVersion": "7",
                         "annotations": annotations},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 9898},
                     "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                                  "metrics": [{"name": "request-success-rate",
                                               "thresholdRange": {"min": 99}, "interval": "1m"}]}},
            "status": {"phase": "Progressing", "canaryWeight": 20, "lastCommandId": "c0",
                "serin": {"state": {"phase": "Progressing", "canaryWeight": 20, "failedChecks": 1,
                    "iterations": 0, "runs": 2, "lastCommandId": "c0",
                    "run": {"id": 2, "revision": "abc", "startedAt": "2026-11-21T10:00:00Z", "step": 2}},
                  "history": [
                    {"at": "2026-11-21T10:00:00Z", "run": 2, "revision": "abc", "kind": "runStarted",
                     "phase": "Progressing", "step": 0, "canaryWeight": 0, "iterations": 0,
                     "failedChecks": 0, "threshold": 5, "message": "new revision abc"},
                    {"at": "2026-11-21T10:01:00Z", "run": 2, "revision": "abc", "kind": "checkFailed",
                     "phase": "Progressing", "step": 1, "canaryWeight": 10, "iterations": 0,
                     "failedChecks": 1, "threshold": 5, "message": "request-success-rate 91.2 < 99",
                     "checks": [{"name": "request-success-rate", "verdict": "fail", "value": 91.2,
                                 "bound": {"min": 99.0}, "samples": 400}]}
                  ]}}
        })
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "podinfo", "namespace": "prod"},
               "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
                        "template": {"metadata": {"labels": {"app": "podinfo"}},
                                     "spec": {"containers": [{"name": "podinfo", "image": "podinfo:2"}]}}}})
    }

    fn backend() -> (Arc<EngineBackend<KubeStore>>, Handle) {
        let (client, handle) = mock_client("default");
        (
            EngineBackend::new(KubeStore::new(client, None, None)),
            handle,
        )
    }

    #[tokio::test]
    async fn a_canary_is_served_from_its_status_with_the_measured_values_in_the_timeline() {
        let (backend, mut handle) = backend();
        let key = CanaryKey::new("prod", "podinfo");
        let b = backend.clone();
        let k = key.clone();
        let call = tokio::spawn(async move {
            let state = b.get(&k).await.unwrap().unwrap();
            let history = b.history(&k, &Default::default()).await.unwrap();
            (state, history)
        });
        for _ in 0..2 {
            expect("GET", CANARY)
                .reply(200, canary(json!({})))
                .serve(&mut handle)
                .await;
            expect("GET", DEPLOYMENT)
                .reply(200, deployment())
                .serve(&mut handle)
                .await;
        }
        let (state, history) = call.await.unwrap();
        assert_no_more_calls(&mut handle).await;
        assert_eq!(state.summary.phase, Phase::Progressing);
        assert_eq!(state.summary.canary_weight, 20);
        assert_eq!(state.summary.revision_in_flight(), Some("abc"));
        assert!(state.summary.target_revision.is_some());
        let analysis = state.analysis.unwrap();
        assert_eq!(analysis.max_weight, Some(50));
        assert_eq!(analysis.metrics[0].min, Some(99.0));
        let check = history
            .iter()
            .find_map(|e| match &e.kind {
                EntryKind::Check { value, min, .. } => Some((*value, *min)),
                _ => None,
            })
            .expect("the failed check is in the timeline");
        assert_eq!(check, (Some(91.2), Some(99.0)));
    }

    #[tokio::test]
    async fn an_action_is_written_as_the_command_annotation_and_shown_as_received() {
        let (backend, mut handle) = backend();
        let key = CanaryKey::new("prod", "podinfo");
        let at = jiff::Timestamp::from_second(1_795_000_000).unwrap();
        let b = backend.clone();
        let k = key.clone();
        let call = tokio::spawn(async move {
            b.apply(
                &k,
                serin_dashboard::model::Command {
                    id: "c1".into(),
                    action: Action::Pause,
                    gate: None,
                    by: "dana".into(),
                    at,
                },
            )
            .await
        });
        // Read to validate, read again to enqueue, patch, read for the receipt.
        expect("GET", CANARY)
            .reply(200, canary(json!({})))
            .serve(&mut handle)
            .await;
        expect("GET", DEPLOYMENT)
            .reply(200, deployment())
            .serve(&mut handle)
            .await;
        expect("GET", CANARY)
            .reply(200, canary(json!({})))
            .serve(&mut handle)
            .await;
        let patch = expect("PATCH", format!("{CANARY}?"))
            .reply(200, canary(json!({})))
            .serve(&mut handle)
            .await;
        let annotated = canary(
            json!({COMMAND_ANNOTATION: r#"{"id":"c1","action":"pause","by":"dana","at":"2026-11-18T07:06:40Z"}"#}),
        );
        // Two readers now, in either order: the receipt, and the live update the change
        // notification triggers. Each reads the Canary and its target once.
        let mut reads = Vec::new();
        for _ in 0..4 {
            let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                .await
                .expect("the receipt and the live update read the canary")
                .unwrap();
            let call = Call::read(req).await;
            let uri = match call.query.as_str() {
                "" => call.path.clone(),
                q => format!("{}?{q}", call.path),
            };
            assert_eq!(call.method, "GET", "{uri}");
            let answer = match uri.as_str() {
                CANARY => annotated.clone(),
                DEPLOYMENT => deployment(),
                other => panic!("unexpected call GET {other}"),
            };
            reads.push(uri);
            respond(send, 200, &answer);
        }
        reads.sort();
        assert_eq!(reads, [DEPLOYMENT, DEPLOYMENT, CANARY, CANARY]);
        let receipt = call.await.unwrap().unwrap();
        assert_eq!(receipt.command.id, "c1");
        let written: serin_core::Command = serde_json::from_str(
            patch["metadata"]["annotations"][COMMAND_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(written.id, "c1");
        assert_eq!(written.by, "dana");
        assert_eq!(written.action, serin_core::CommandAction::Pause);
        // The timeline shows it as received, with who.
        let b = backend.clone();
        let k = key.clone();
        let call = tokio::spawn(async move { b.history(&k, &Default::default()).await });
        expect("GET", CANARY).reply(200, canary(json!({COMMAND_ANNOTATION: r#"{"id":"c1","action":"pause","by":"dana","at":"2026-11-18T07:06:40Z"}"#}))).serve(&mut handle)
        .await;
        expect("GET", DEPLOYMENT)
            .reply(200, deployment())
            .serve(&mut handle)
            .await;
        let history = call.await.unwrap().unwrap();
        assert!(history.iter().any(|e| matches!(&e.kind,
            EntryKind::Command { id, by, state: CommandState::Received, .. } if id == "c1" && by == "dana")));
        assert_no_more_calls(&mut handle).await;
    }

    #[tokio::test]
    async fn an_unapplied_command_is_never_overwritten() {
        let (backend, mut handle) = backend();
        let key = CanaryKey::new("prod", "podinfo");
        let b = backend.clone();
        let call = tokio::spawn(async move {
            b.apply(
                &key,
                serin_dashboard::model::Command {
                    id: "c2".into(),
                    action: Action::Abort,
                    gate: None,
                    by: "ci".into(),
                    at: jiff::Timestamp::from_second(1_795_000_000).unwrap(),
                },
            )
            .await
        });
        let pending = json!({COMMAND_ANNOTATION: r#"{"id":"c1","action":"promote","by":"dana","at":"2026-11-18T07:06:40Z"}"#});
        expect("GET", CANARY)
            .reply(200, canary(pending.clone()))
            .serve(&mut handle)
            .await;
        expect("GET", DEPLOYMENT)
            .reply(200, deployment())
            .serve(&mut handle)
            .await;
        expect("GET", CANARY)
            .reply(200, canary(pending))
            .serve(&mut handle)
            .await;
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("previous command c1 (promote by dana)")),
            "{err}"
        );
        assert_no_more_calls(&mut handle).await;
    }
}

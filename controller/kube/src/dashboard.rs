//! The dashboard over Kubernetes: an [`EngineStore`] over a reflector of the Canaries (one
//! list, then one watch), reading each Canary's status (the engine state under
//! `status.serin.state`, its history under `status.serin.history`) from memory, and writing
//! manual commands as the `serin.dev/command` annotation, which the controller applies once per
//! id and records in the history. `serin controller --kubernetes` serves it next to its loop (on
//! every replica: a standby's watch is as current as the leader's).
//!
//! A render or a live update costs no API call: the watch's events are the change notifications
//! (one per changed Canary, so the live stream carries only what changed), and the page reads the
//! reflector. The only calls after the start are the watch itself and a command's patch.
//!
//! The revision a target declares is not watched here (the controller watches targets and
//! starts a run within a second of a new revision); the revision in flight or last taken into
//! account stands in.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use serin_dashboard::engine::{EngineBackend, EngineCanary, EngineStore};
use serin_dashboard::model::{CanaryKey, TargetRef};
use serin_dashboard::{BackendError, DashboardConfig};
use tokio::sync::broadcast;

use crate::source::{COMMAND_ANNOTATION, KubeSource, canary_resource};

/// Canaries in a cluster as the dashboard's engine store.
pub struct KubeStore {
    source: KubeSource,
    namespace: Option<String>,
    canaries: Store<DynamicObject>,
    /// Canaries as this replica's own command patch answered them, until the watch delivers
    /// that version (a gate opened a moment ago must read as open at once).
    written: Mutex<HashMap<CanaryKey, Arc<DynamicObject>>>,
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

/// A resourceVersion as a number to compare, when it is one (etcd's are; other stores may use
/// opaque strings, which then never count as newer).
fn version(obj: &DynamicObject) -> Option<u64> {
    obj.metadata.resource_version.as_deref()?.parse().ok()
}

impl KubeStore {
    /// A store over the Canaries of `namespace` (all when `None`): a task on the current runtime
    /// lists them once and then watches (re-listing after a broken watch, with backoff), keeps
    /// the reflector and publishes the key of every Canary that changed or went away.
    pub fn watch(client: kube::Client, namespace: Option<String>) -> Arc<Self> {
        let source = KubeSource::from_client(client);
        let api = source.canary_api(namespace.as_deref());
        let mut writer = reflector::store::Writer::<DynamicObject>::new(canary_resource());
        let store = Arc::new(Self {
            source,
            namespace,
            canaries: writer.as_reader(),
            written: Mutex::new(HashMap::new()),
            changes: broadcast::channel(4096).0,
        });
        let weak = Arc::downgrade(&store);
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        tokio::spawn(async move {
            // Keys listed by the current (re-)list, to tell which Canaries went away meanwhile.
            let mut known: HashSet<CanaryKey> = HashSet::new();
            let mut listing: HashSet<CanaryKey> = HashSet::new();
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(error) => {
                        tracing::warn!(%error, "dashboard: watching canaries failed; retrying");
                        continue;
                    }
                };
                // The reflector first, then the notification: a reader woken by the key finds
                // the new state.
                writer.apply_watcher_event(&event);
                let Some(store) = weak.upgrade() else { return };
                let mut changed = Vec::new();
                match &event {
                    watcher::Event::Apply(obj) => {
                        known.insert(key_of(obj));
                        changed.push(key_of(obj));
                    }
                    watcher::Event::Delete(obj) => {
                        known.remove(&key_of(obj));
                        changed.push(key_of(obj));
                    }
                    watcher::Event::Init => listing.clear(),
                    watcher::Event::InitApply(obj) => {
                        listing.insert(key_of(obj));
                        changed.push(key_of(obj));
                    }
                    watcher::Event::InitDone => {
                        changed.extend(known.difference(&listing).cloned());
                        known = std::mem::take(&mut listing);
                    }
                }
                for key in changed {
                    store.settled(&key);
                    let _ = store.changes.send(key);
                }
            }
        });
        store
    }

    /// Drops this replica's own write of `key` once the reflector holds it or a newer version.
    fn settled(&self, key: &CanaryKey) {
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        if let Some(mine) = written.get(key) {
            let seen = self.reflected(key);
            if seen.is_none_or(|s| version(&s) >= version(mine)) {
                written.remove(key);
            }
        }
    }

    fn reflected(&self, key: &CanaryKey) -> Option<Arc<DynamicObject>> {
        self.canaries
            .get(&ObjectRef::new_with(&key.name, canary_resource()).within(&key.namespace))
    }

    /// The newest version of one Canary this replica knows: the reflector's, or its own write
    /// while the watch has not delivered it yet.
    fn object(&self, key: &CanaryKey) -> Option<Arc<DynamicObject>> {
        let seen = self.reflected(key);
        let mine = self.written.lock().ok()?.get(key).cloned();
        match (seen, mine) {
            (Some(s), Some(m)) if version(&m) > version(&s) => Some(m),
            (s, m) => s.or(m),
        }
    }

    fn engine_canary(&self, obj: &DynamicObject) -> EngineCanary {
        let key = key_of(obj);
        // Read through the typed Canary (serin-api). The reflector stays untyped so that one
        // object that does not read leaves the rest listed; that one shows with its name only.
        let canary: Option<serin_api::Canary> = obj.clone().try_parse().ok();
        let target = canary
            .as_ref()
            .map(crate::source::target_of)
            .unwrap_or_else(|| TargetRef {
                kind: "Deployment".into(),
                name: String::new(),
            });
        // An entry this version cannot read (a newer controller) is skipped, not fatal.
        let history = canary
            .as_ref()
            .map(crate::status::stored_history)
            .unwrap_or_default();
        let analysis = canary
            .as_ref()
            .and_then(|c| serin_api::Normalized::from_canary(c).ok())
            .map(|n| serin_controller::dashboard::analysis_info(&n));
        let status = canary
            .as_ref()
            .map(crate::source::reported_status)
            .unwrap_or_default();
        let target_revision = status
            .run
            .as_ref()
            .filter(|r| r.outcome.is_none())
            .map(|r| r.revision.clone())
            .or_else(|| status.last_applied_spec.clone());
        EngineCanary {
            pending: canary
                .as_ref()
                .and_then(crate::source::pending_command)
                .into_iter()
                .collect(),
            status,
            key,
            target,
            history,
            target_revision,
            analysis,
        }
    }

    fn in_scope(&self, key: &CanaryKey) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == key.namespace)
    }
}

impl EngineStore for KubeStore {
    async fn canaries(&self) -> Result<Vec<EngineCanary>, BackendError> {
        Ok(self
            .canaries
            .state()
            .iter()
            .map(|obj| {
                let key = key_of(obj);
                match self.object(&key) {
                    Some(newest) => self.engine_canary(&newest),
                    None => self.engine_canary(obj),
                }
            })
            .collect())
    }

    async fn canary(&self, key: &CanaryKey) -> Result<Option<EngineCanary>, BackendError> {
        if !self.in_scope(key) {
            return Ok(None);
        }
        Ok(self.object(key).map(|obj| self.engine_canary(&obj)))
    }

    async fn enqueue(
        &self,
        key: &CanaryKey,
        command: serin_core::Command,
    ) -> Result<(), BackendError> {
        let Some(obj) = self.object(key).filter(|_| self.in_scope(key)) else {
            return Err(BackendError::NotFound(key.clone()));
        };
        // One annotation holds one command: overwriting an unapplied one would lose it.
        if let Some(pending) = obj
            .as_ref()
            .clone()
            .try_parse::<serin_api::Canary>()
            .ok()
            .as_ref()
            .and_then(crate::source::pending_command)
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
        // The resourceVersion makes the patch a compare-and-swap against the version read from
        // the watch: if the controller applied (or someone wrote) a command meanwhile, the API
        // server answers 409 instead of this overwriting it.
        let patch = json!({"metadata": {
            "annotations": {COMMAND_ANNOTATION: text},
            "resourceVersion": obj.metadata.resource_version,
        }});
        let written = self
            .source
            .canary_api(Some(&key.namespace))
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 409 => BackendError::Conflict(format!(
                    "{key} changed while the command was sent (the controller may have applied one); retry"
                )),
                kube::Error::Api(s) if s.code == 404 => BackendError::NotFound(key.clone()),
                e => unavailable(&format!("writing the command to canary {key}"), e),
            })?;
        if let Ok(mut mine) = self.written.lock() {
            mine.insert(key.clone(), Arc::new(written));
        }
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
    let backend = EngineBackend::new(KubeStore::watch(client, namespace));
    let app = serin_dashboard::router(backend, DashboardConfig { token });
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    //! Scenarios against a mocked API server that logs every call: the Canaries are listed once
    //! and watched; renders, the list API and live updates must make no further call, and a
    //! command is one patch.

    use std::time::Duration;

    use http::Response;
    use kube::client::Body;
    use serde_json::Value;
    use serin_dashboard::Backend;
    use serin_dashboard::model::{Action, CommandState, EntryKind, Phase, Update};
    use tokio::sync::mpsc;
    use tower_test::mock::SendResponse;

    use super::*;
    use crate::testing::{Call, mock_client, respond, status_err};

    const CANARIES: &str = "/apis/serin.dev/v1beta1/canaries";
    const CANARY: &str = "/apis/serin.dev/v1beta1/namespaces/prod/canaries/podinfo";

    fn canary_named(name: &str, annotations: Value) -> Value {
        json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": "prod", "resourceVersion": "7",
                         "annotations": annotations},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
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

    fn canary(annotations: Value) -> Value {
        canary_named("podinfo", annotations)
    }

    /// The API server's side: lists answer `items`, watches are handed to the test (held open
    /// until it answers them), patches are handed to the test with their body; every call is
    /// logged as `METHOD path?query`.
    struct FakeApi {
        calls: Arc<Mutex<Vec<String>>>,
        watches: mpsc::UnboundedReceiver<SendResponse<Response<Body>>>,
        patches: mpsc::UnboundedReceiver<(Value, SendResponse<Response<Body>>)>,
    }

    impl FakeApi {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        async fn next_watch(&mut self) -> SendResponse<Response<Body>> {
            tokio::time::timeout(Duration::from_secs(5), self.watches.recv())
                .await
                .expect("the dashboard watches the canaries")
                .expect("the fake API server runs")
        }

        async fn next_patch(&mut self) -> (Value, SendResponse<Response<Body>>) {
            tokio::time::timeout(Duration::from_secs(5), self.patches.recv())
                .await
                .expect("the command is patched")
                .expect("the fake API server runs")
        }
    }

    fn fake_api(items: Vec<Value>) -> (kube::Client, FakeApi) {
        let (client, mut handle) = mock_client("default");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (watch_tx, watches) = mpsc::unbounded_channel();
        let (patch_tx, patches) = mpsc::unbounded_channel();
        let log = calls.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let call = Call::read(req).await;
                log.lock()
                    .unwrap()
                    .push(format!("{} {}?{}", call.method, call.path, call.query));
                match (call.method.as_str(), call.path.as_str()) {
                    ("GET", CANARIES) if call.is_watch() => {
                        let _ = watch_tx.send(send);
                    }
                    ("GET", CANARIES) => respond(
                        send,
                        200,
                        &json!({"apiVersion": "serin.dev/v1beta1", "kind": "CanaryList",
                                "metadata": {"resourceVersion": "100"}, "items": items}),
                    ),
                    ("PATCH", _) => {
                        let _ = patch_tx.send((call.body, send));
                    }
                    _ => respond(send, 404, &status_err(404, "NotFound", "unexpected call")),
                }
            }
        });
        (
            client,
            FakeApi {
                calls,
                watches,
                patches,
            },
        )
    }

    /// A backend whose reflector holds `items` (listed, watch open).
    async fn watching(
        items: Vec<Value>,
    ) -> (
        Arc<EngineBackend<KubeStore>>,
        FakeApi,
        Vec<SendResponse<Response<Body>>>,
    ) {
        let n = items.len();
        let (client, mut api) = fake_api(items);
        let backend = EngineBackend::new(KubeStore::watch(client, None));
        let watch = api.next_watch().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while backend.list().await.unwrap().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the list never filled the store"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (backend, api, vec![watch])
    }

    #[tokio::test]
    async fn a_canary_is_served_from_its_status_with_the_measured_values_in_the_timeline() {
        let (backend, api, _held) = watching(vec![canary(json!({}))]).await;
        let key = CanaryKey::new("prod", "podinfo");
        let state = backend.get(&key).await.unwrap().unwrap();
        let history = backend.history(&key, &Default::default()).await.unwrap();
        assert_eq!(state.summary.phase, Phase::Progressing);
        assert_eq!(state.summary.canary_weight, 20);
        assert_eq!(state.summary.revision_in_flight(), Some("abc"));
        assert_eq!(state.summary.target_revision.as_deref(), Some("abc"));
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
        assert_eq!(
            api.calls().len(),
            2,
            "one list, one watch: {:?}",
            api.calls()
        );
    }

    #[tokio::test]
    async fn renders_and_the_list_api_make_no_api_call_at_a_thousand_canaries() {
        let items: Vec<Value> = (0..1000)
            .map(|i| canary_named(&format!("app-{i:04}"), json!({})))
            .collect();
        let (backend, api, _held) = watching(items).await;
        let before = api.calls();
        assert_eq!(
            before.iter().filter(|c| c.starts_with("GET ")).count(),
            2,
            "one list and one watch: {before:?}"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = serin_dashboard::router(backend.clone(), DashboardConfig::default());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = serin_dashboard::client::Client::new(&url, None).unwrap();
        for _ in 0..5 {
            assert_eq!(client.list().await.unwrap().len(), 1000);
            let page = backend.list().await.unwrap();
            let first = serin_dashboard::listing::select(
                &page,
                &serin_dashboard::listing::ListQuery {
                    search: Some("app-09".into()),
                    limit: Some(serin_dashboard::listing::PAGE_SIZE),
                    ..Default::default()
                },
            );
            assert_eq!(first.total, 100);
        }
        assert_eq!(api.calls(), before, "a render is served from the reflector");
    }

    #[tokio::test]
    async fn a_watch_event_is_one_delta_on_the_live_stream() {
        let (backend, mut api, mut held) =
            watching(vec![canary(json!({})), canary_named("backend", json!({}))]).await;
        let mut updates = backend.subscribe();
        let mut promoted = canary(json!({}));
        promoted["metadata"]["resourceVersion"] = json!("101");
        promoted["status"]["serin"]["state"]["phase"] = json!("Promoting");
        let line = serde_json::to_vec(&json!({"type": "MODIFIED", "object": promoted})).unwrap();
        held.pop().unwrap().send_response(
            Response::builder()
                .status(200)
                .body(Body::from(line))
                .unwrap(),
        );
        let update = tokio::time::timeout(Duration::from_secs(5), updates.recv())
            .await
            .expect("the change is published")
            .unwrap();
        match update {
            Update::Canary { canary } => {
                assert_eq!(canary.key(), CanaryKey::new("prod", "podinfo"));
                assert_eq!(canary.phase, Phase::Promoting);
            }
            other => panic!("expected the canary's new summary, got {other:?}"),
        }
        // The watch resumes from the event's version; nothing else changed, nothing else is sent.
        let _resumed = api.next_watch().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(200), updates.recv())
                .await
                .is_err(),
            "only the changed canary is sent"
        );
        let listed = backend.list().await.unwrap();
        assert_eq!(
            listed[1].phase,
            Phase::Promoting,
            "the list reads the new state"
        );
        assert!(
            api.calls().last().unwrap().contains("resourceVersion=101"),
            "{:?}",
            api.calls()
        );
    }

    #[tokio::test]
    async fn an_action_is_one_compare_and_swap_patch_and_shown_as_received_at_once() {
        let (backend, mut api, _held) = watching(vec![canary(json!({}))]).await;
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
        let (patch, send) = api.next_patch().await;
        assert_eq!(patch["metadata"]["resourceVersion"], "7", "{patch}");
        let mut annotated = canary(
            json!({COMMAND_ANNOTATION: patch["metadata"]["annotations"][COMMAND_ANNOTATION].clone()}),
        );
        annotated["metadata"]["resourceVersion"] = json!("8");
        respond(send, 200, &annotated);
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
        // Before the watch delivers the new version, the timeline shows it as received.
        let history = backend.history(&key, &Default::default()).await.unwrap();
        assert!(history.iter().any(|e| matches!(&e.kind,
            EntryKind::Command { id, by, state: CommandState::Received, .. } if id == "c1" && by == "dana")));
        let calls = api.calls();
        assert_eq!(calls.len(), 3, "list, watch, one patch: {calls:?}");
        assert!(
            calls[2].starts_with(&format!("PATCH {CANARY}?")),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn an_unapplied_command_is_never_overwritten() {
        let pending = json!({COMMAND_ANNOTATION: r#"{"id":"c1","action":"promote","by":"dana","at":"2026-11-18T07:06:40Z"}"#});
        let (backend, api, _held) = watching(vec![canary(pending)]).await;
        let err = backend
            .apply(
                &CanaryKey::new("prod", "podinfo"),
                serin_dashboard::model::Command {
                    id: "c2".into(),
                    action: Action::Abort,
                    gate: None,
                    by: "ci".into(),
                    at: jiff::Timestamp::from_second(1_795_000_000).unwrap(),
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("previous command c1 (promote by dana)")),
            "{err}"
        );
        assert_eq!(api.calls().len(), 2, "no call: {:?}", api.calls());
    }

    #[tokio::test]
    async fn a_command_racing_another_write_is_a_conflict_not_an_overwrite() {
        let (backend, mut api, _held) = watching(vec![canary(json!({}))]).await;
        let b = backend.clone();
        let call = tokio::spawn(async move {
            b.apply(
                &CanaryKey::new("prod", "podinfo"),
                serin_dashboard::model::Command {
                    id: "c3".into(),
                    action: Action::Promote,
                    gate: None,
                    by: "ci".into(),
                    at: jiff::Timestamp::from_second(1_795_000_000).unwrap(),
                },
            )
            .await
        });
        let (_, send) = api.next_patch().await;
        respond(
            send,
            409,
            &status_err(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
        );
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("changed while the command was sent")),
            "{err}"
        );
    }
}

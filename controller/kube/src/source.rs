//! The CLI's Kubernetes side: reads Canary status (the engine state the controller keeps under
//! `status.serin.state`, Flagger's fields otherwise) and the target's current revision, and
//! writes manual commands as the `serin.dev/command` annotation.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;
use serin_api::Canary;
use serin_dashboard::convert;
use serin_dashboard::model::{Action, CanaryKey, CanarySummary, TargetRef};

pub use crate::status::COMMAND_ANNOTATION;

/// A Kubernetes failure, worded for the person at the terminal.
#[derive(Debug)]
pub struct KubeError(String);

impl std::fmt::Display for KubeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn api_error(what: &str, e: kube::Error) -> KubeError {
    let hint = match &e {
        kube::Error::Api(s) if s.code == 403 => {
            " (RBAC: the CLI needs get/list/patch on canaries.serin.dev and get on deployments/daemonsets)"
        }
        kube::Error::Api(s) if s.code == 404 => {
            " (is the Canary CRD installed? `serin crds | kubectl apply -f -`)"
        }
        kube::Error::SerdeError(_) => {
            " (the object does not read as a serin.dev/v1beta1 Canary; `serin validate` names the field)"
        }
        _ => " (API server unreachable?)",
    };
    KubeError(format!("{what}: {e}{hint}"))
}

/// Reads and steers Canaries through the Kubernetes API.
pub struct KubeSource {
    client: kube::Client,
}

pub(crate) fn canary_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serin.dev", "v1beta1", "Canary"),
        "canaries",
    )
}

impl KubeSource {
    /// Connects with the kubeconfig (or in-cluster configuration).
    pub async fn connect() -> Result<Self, KubeError> {
        let client = kube::Client::try_default().await.map_err(|e| {
            KubeError(format!(
                "--kubernetes: no usable Kubernetes configuration: {e} (set KUBECONFIG, or run in a cluster)"
            ))
        })?;
        Ok(Self { client })
    }

    /// A source over an existing client (the controller's, or a mocked one in tests).
    pub fn from_client(client: kube::Client) -> Self {
        Self { client }
    }

    #[cfg(test)]
    pub fn with_client(client: kube::Client) -> Self {
        Self::from_client(client)
    }

    /// The Canary API of `namespace` (all namespaces when `None`), untyped: the dashboard's
    /// reflector keeps listing when one object does not read.
    pub(crate) fn canary_api(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = canary_resource();
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// The typed Canary API of `namespace` (all namespaces when `None`).
    fn canaries(&self, namespace: Option<&str>) -> Api<Canary> {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    async fn object(&self, key: &CanaryKey) -> Result<Canary, KubeError> {
        self.canaries(Some(&key.namespace))
            .get_opt(&key.name)
            .await
            .map_err(|e| api_error(&format!("reading canary {key}"), e))?
            .ok_or_else(|| {
                KubeError(format!(
                    "canary {key} not found (check the name and -n/--namespace)"
                ))
            })
    }

    /// One Canary's summary, with the target's current revision.
    pub async fn get(&self, key: &CanaryKey) -> Result<CanarySummary, KubeError> {
        let obj = self.object(key).await?;
        self.summary(key, &obj).await
    }

    /// Every Canary of `namespace` (all namespaces when `None`).
    pub async fn list(&self, namespace: Option<&str>) -> Result<Vec<CanarySummary>, KubeError> {
        let list = self
            .canaries(namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("listing canaries", e))?;
        let mut out = Vec::new();
        for obj in &list.items {
            let key = CanaryKey::new(
                obj.metadata.namespace.clone().unwrap_or_default(),
                obj.metadata.name.clone().unwrap_or_default(),
            );
            out.push(self.summary(&key, obj).await?);
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(out)
    }

    /// The run's maximum weight, for the progress bar.
    pub async fn max_weight(&self, key: &CanaryKey) -> Option<u32> {
        let obj = self.object(key).await.ok()?;
        let analysis = &obj.spec.analysis;
        analysis
            .max_weight
            .or_else(|| analysis.step_weights.as_ref()?.last().copied())
            .and_then(|w| u32::try_from(w).ok())
    }

    async fn summary(&self, key: &CanaryKey, obj: &Canary) -> Result<CanarySummary, KubeError> {
        let target = target_of(obj);
        let revision = self.target_revision(&key.namespace, &target).await?;
        Ok(summary_of(key, target, obj, revision))
    }

    /// The target's current revision, computed as the controller does (pod-template hash).
    pub(crate) async fn target_revision(
        &self,
        ns: &str,
        target: &TargetRef,
    ) -> Result<Option<String>, KubeError> {
        let what = format!("reading {} {ns}/{}", target.kind, target.name);
        let template = match target.kind.as_str() {
            "Deployment" => Api::<Deployment>::namespaced(self.client.clone(), ns)
                .get_opt(&target.name)
                .await
                .map_err(|e| api_error(&what, e))?
                .and_then(|d| d.spec.map(|s| s.template)),
            "DaemonSet" => Api::<DaemonSet>::namespaced(self.client.clone(), ns)
                .get_opt(&target.name)
                .await
                .map_err(|e| api_error(&what, e))?
                .and_then(|d| d.spec.map(|s| s.template)),
            _ => None,
        };
        Ok(template.map(|t| crate::workloads::template_revision(&t)))
    }

    /// Writes a command to the annotation; refuses while an earlier command is not applied yet
    /// (one annotation holds one command: overwriting it would lose the earlier one).
    pub async fn command(
        &self,
        key: &CanaryKey,
        action: Action,
        gate: Option<String>,
        by: String,
    ) -> Result<String, KubeError> {
        let obj = self.object(key).await?;
        if let Some(pending) = unapplied_command(&obj) {
            return Err(KubeError(format!(
                "{key}: the previous command {pending} in the {COMMAND_ANNOTATION} annotation is not applied yet; retry once the controller has applied it (status.lastCommandId)"
            )));
        }
        let phase = reported_status(&obj).phase;
        if let Some(why) = serin_dashboard::engine::ignored_in(action, phase) {
            return Err(KubeError(format!(
                "{key}: {action}: {why} (phase {phase}); the controller would ignore it"
            )));
        }
        let at = jiff::Timestamp::now();
        let command = serin_dashboard::model::Command {
            id: serin_dashboard::new_command_id(at),
            action,
            gate,
            by,
            at,
        };
        let json = serde_json::to_string(&convert::command_to_core(&command))
            .map_err(|e| KubeError(e.to_string()))?;
        // The resourceVersion makes the patch a compare-and-swap against the version checked
        // above: a command written meanwhile (by the dashboard, another `serin`) gets a 409
        // instead of being overwritten before the controller applied it.
        let patch = json!({"metadata": {
            "annotations": {COMMAND_ANNOTATION: json},
            "resourceVersion": obj.metadata.resource_version,
        }});
        self.canaries(Some(&key.namespace))
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 409 => KubeError(format!(
                    "{key}: the Canary changed while the command was sent (another command may have been written); retry"
                )),
                e => api_error(&format!("writing the command to canary {key}"), e),
            })?;
        Ok(command.id)
    }
}

/// The Canary's target as the dashboard names it.
pub(crate) fn target_of(canary: &Canary) -> TargetRef {
    TargetRef {
        kind: canary.spec.target_ref.kind.as_str().to_string(),
        name: canary.spec.target_ref.name.clone(),
    }
}

/// The state a Canary reports: the engine's under `status.serin.state` when the controller
/// wrote it, otherwise the Flagger-compatible status fields (same names), so a Canary a Flagger
/// controller ran still shows its phase and weights. When the stored state does not read
/// (a newer controller wrote it), those fields are what that controller last wrote and what
/// this one keeps (it holds the Canary there, see [`crate::status::unreadable_state`]).
pub(crate) fn reported_status(canary: &Canary) -> serin_core::Status {
    let status = canary.status.as_ref();
    crate::status::stored_serin(canary)
        .and_then(serin_api::SerinStatus::state)
        .cloned()
        .or_else(|| {
            status
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| serde_json::from_value(v).ok())
        })
        .unwrap_or_default()
}

fn last_command_id(canary: &Canary) -> Option<&str> {
    canary.status.as_ref()?.last_command_id.as_deref()
}

/// The summary of a Canary object.
pub fn summary_of(
    key: &CanaryKey,
    target: TargetRef,
    canary: &Canary,
    target_revision: Option<String>,
) -> CanarySummary {
    let status = reported_status(canary);
    let mut summary = convert::summary(key, target, &status, target_revision);
    if let Some(error) = crate::status::unreadable_state(canary) {
        // Word for word the controller's Synced condition: it holds the Canary as it is.
        let deleting = canary.metadata.deletion_timestamp.is_some();
        summary.message = Some(crate::status::unreadable_state_message(error, deleting));
    }
    summary
}

/// The command in the annotation, when the controller has not applied it yet.
pub(crate) fn pending_command(canary: &Canary) -> Option<serin_core::Command> {
    let command = crate::status::pending_command(canary).ok()??;
    let state = reported_status(canary);
    let applied = last_command_id(canary) == Some(command.id.as_str())
        || state.last_command_id.as_deref() == Some(command.id.as_str())
        || state.applied_command_ids.contains(&command.id);
    (!applied).then_some(command)
}

/// The id (and action) of a command in the annotation that the controller has not applied,
/// read as the controller reads it (`serin_core::Command`).
fn unapplied_command(canary: &Canary) -> Option<String> {
    pending_command(canary).map(|c| format!("{} ({} by {})", c.id, c.action.as_str(), c.by))
}

#[cfg(test)]
mod tests {
    //! Scenarios against a mocked API server: each expected call asserted by method, URI and
    //! body and answered as the API server would; a missing or extra call fails the test.

    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use serde_json::Value;
    use serin_dashboard::wait::{Assessment, assess};

    use super::*;

    use crate::testing::{Handle, assert_no_more_calls, expect, mock_client, status_err};

    fn source() -> (KubeSource, Handle) {
        let (client, handle) = mock_client("default");
        (KubeSource::with_client(client), handle)
    }

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "podinfo"}},
               "spec": {"containers": [{"name": "podinfo", "image": image}]}})
    }

    fn canary(status: Value, annotations: Value) -> Value {
        json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "prod", "annotations": annotations,
                         "resourceVersion": "7"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "analysis": {"interval": "1m", "maxWeight": 50, "stepWeight": 10}},
            "status": status
        })
    }

    fn deployment(image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "podinfo", "namespace": "prod"},
               "spec": {"selector": {"matchLabels": {"app": "podinfo"}}, "template": template(image)}})
    }

    fn revision(image: &str) -> String {
        let t: PodTemplateSpec = serde_json::from_value(template(image)).unwrap();
        crate::workloads::template_revision(&t)
    }

    #[tokio::test]
    async fn a_new_image_is_not_mistaken_for_the_promoted_one() {
        let (src, mut handle) = source();
        let old = revision("podinfo:1");
        let status = json!({
            "phase": "Succeeded", "canaryWeight": 0, "failedChecks": 0,
            "lastAppliedSpec": old, "lastPromotedSpec": old,
            "serin": {"state": {"phase": "Succeeded", "canaryWeight": 0, "failedChecks": 0,
                "iterations": 0, "lastAppliedSpec": old, "lastPromotedSpec": old, "runs": 1,
                "run": {"id": 1, "revision": old, "startedAt": "2026-11-21T10:00:00Z", "step": 5,
                        "outcome": {"result": "promoted", "reason": "analysis complete",
                                    "at": "2026-11-21T10:10:00Z"}}}}
        });
        let key = CanaryKey::new("prod", "podinfo");
        let call = tokio::spawn(async move { src.get(&key).await });
        expect(
            "GET",
            "/apis/serin.dev/v1beta1/namespaces/prod/canaries/podinfo",
        )
        .reply(200, canary(status, json!({})))
        .serve(&mut handle)
        .await;
        expect("GET", "/apis/apps/v1/namespaces/prod/deployments/podinfo")
            .reply(200, deployment("podinfo:2"))
            .serve(&mut handle)
            .await;
        let summary = call.await.unwrap().unwrap();
        let new = revision("podinfo:2");
        assert_ne!(new, old);
        assert_eq!(summary.target_revision.as_deref(), Some(new.as_str()));
        assert_eq!(summary.run.as_ref().unwrap().revision, old);
        assert!(matches!(
            assess(&summary, &new, false),
            Assessment::Pending { .. }
        ));
        assert!(matches!(
            assess(&summary, &old, false),
            Assessment::Promoted { run: Some(1) }
        ));
    }

    /// Plays the API server for `serin` sending a command to a Canary whose previous command
    /// (`old-1`) is applied: the Canary is read, and the PATCH is answered `code`, `answer`.
    /// Returns the PATCH body.
    async fn command_over_applied_one(
        handle: &mut Handle,
        code: u16,
        answer: Option<Value>,
    ) -> Value {
        let applied = json!({"phase": "Progressing", "lastCommandId": "old-1"});
        let prev = json!({COMMAND_ANNOTATION: r#"{"id":"old-1","action":"pause","by":"x","at":"2026-11-21T10:00:00Z"}"#});
        let obj = canary(applied, prev);
        expect(
            "GET",
            "/apis/serin.dev/v1beta1/namespaces/prod/canaries/podinfo",
        )
        .reply(200, obj.clone())
        .serve(handle)
        .await;
        expect(
            "PATCH",
            "/apis/serin.dev/v1beta1/namespaces/prod/canaries/podinfo?",
        )
        .reply(code, answer.unwrap_or(obj))
        .serve(handle)
        .await
    }

    #[tokio::test]
    async fn a_command_is_written_as_the_annotation_once_the_previous_one_is_applied() {
        let (src, mut handle) = source();
        let key = CanaryKey::new("prod", "podinfo");
        let call = tokio::spawn(async move {
            src.command(&key, Action::GateOpen, Some("confirm".into()), "ci".into())
                .await
        });
        let patch = command_over_applied_one(&mut handle, 200, None).await;
        let id = call.await.unwrap().unwrap();
        // Written only over the version read, in which the previous command was applied.
        assert_eq!(patch["metadata"]["resourceVersion"], "7", "{patch}");
        let written: Value = serde_json::from_str(
            patch["metadata"]["annotations"][COMMAND_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(written["id"], id.as_str());
        assert_eq!(written["action"], "gate-open");
        assert_eq!(written["gate"], "confirm");
        assert_eq!(written["by"], "ci");
        // What the controller parses.
        let _: serin_core::Command = serde_json::from_value(written).unwrap();
    }

    #[tokio::test]
    async fn a_command_written_meanwhile_is_not_overwritten() {
        let (src, mut handle) = source();
        let key = CanaryKey::new("prod", "podinfo");
        let call =
            tokio::spawn(async move { src.command(&key, Action::Abort, None, "ci".into()).await });
        // The dashboard wrote its command after the read: the API server refuses the stale
        // version, as it does for a merge patch that names one.
        let message = "Operation cannot be fulfilled on canaries.serin.dev \"podinfo\": the object has been modified; please apply your changes to the latest version and try again";
        let conflict = status_err(409, "Conflict", message);
        let patch = command_over_applied_one(&mut handle, 409, Some(conflict)).await;
        assert_eq!(patch["metadata"]["resourceVersion"], "7", "{patch}");
        let err = call.await.unwrap().unwrap_err();
        assert!(
            err.to_string()
                .contains("prod/podinfo: the Canary changed while the command was sent"),
            "{err}"
        );
        assert!(err.to_string().contains("retry"), "{err}");
        assert_no_more_calls(&mut handle).await;
    }

    #[tokio::test]
    async fn promote_or_abort_the_controller_would_ignore_is_refused_before_any_write() {
        // `serin promote --kubernetes` on a Canary with no analysis in progress wrote the
        // annotation and exited 0; the controller then ignored it.
        for (phase, action, why) in [
            ("Succeeded", Action::Promote, "no analysis in progress"),
            ("Promoting", Action::Abort, "promotion already under way"),
        ] {
            let (src, mut handle) = source();
            let key = CanaryKey::new("prod", "podinfo");
            let call =
                tokio::spawn(async move { src.command(&key, action, None, "ci".into()).await });
            expect(
                "GET",
                "/apis/serin.dev/v1beta1/namespaces/prod/canaries/podinfo",
            )
            .reply(200, canary(json!({"phase": phase}), json!({})))
            .serve(&mut handle)
            .await;
            let err = call.await.unwrap().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(phase), "{err}");
            assert_no_more_calls(&mut handle).await;
        }
    }

    #[tokio::test]
    async fn an_unapplied_command_is_never_overwritten() {
        let (src, mut handle) = source();
        let key = CanaryKey::new("prod", "podinfo");
        let call =
            tokio::spawn(async move { src.command(&key, Action::Abort, None, "ci".into()).await });
        let status = json!({"phase": "Progressing", "lastCommandId": "old-1"});
        let pending = json!({COMMAND_ANNOTATION: r#"{"id":"new-2","action":"promote","by":"dana","at":"2026-11-21T10:00:00Z"}"#});
        expect(
            "GET",
            "/apis/serin.dev/v1beta1/namespaces/prod/canaries/podinfo",
        )
        .reply(200, canary(status, pending))
        .serve(&mut handle)
        .await;
        let err = call.await.unwrap().unwrap_err();
        assert!(
            err.to_string()
                .contains("previous command new-2 (promote by dana)"),
            "{err}"
        );
        // No PATCH follows.
        assert_no_more_calls(&mut handle).await;
    }

    #[test]
    fn a_state_a_newer_controller_wrote_shows_its_flagger_fields_and_why_it_is_held() {
        let status = json!({
            "phase": "Progressing", "canaryWeight": 20, "failedChecks": 1, "iterations": 0,
            "lastAppliedSpec": "abc", "lastPromotedSpec": "9f8",
            "lastTransitionTime": "2026-11-21T10:01:00Z",
            "conditions": [{"type": "Promoted", "status": "Unknown", "reason": "Progressing",
                "message": "New revision detected", "lastUpdateTime": "2026-11-21T10:00:00Z",
                "lastTransitionTime": "2026-11-21T10:00:00Z"}],
            "serin": {"state": {"phase": "Verifying", "canaryWeight": 20}}
        });
        let c: Canary = serde_json::from_value(canary(status, json!({}))).unwrap();
        let key = CanaryKey::new("prod", "podinfo");
        let s = summary_of(&key, target_of(&c), &c, None);
        // What the newer controller last wrote, which this one keeps as it is.
        assert_eq!(s.phase, serin_dashboard::model::Phase::Progressing);
        assert_eq!((s.canary_weight, s.failed_checks), (20, 1));
        assert_eq!(s.promoted_revision.as_deref(), Some("9f8"));
        // And why it does not move, in the controller's words.
        let error = crate::status::unreadable_state(&c).unwrap();
        assert_eq!(
            s.message,
            Some(crate::status::unreadable_state_message(error, false))
        );
        assert!(s.message.unwrap().contains("Verifying"));
    }
}

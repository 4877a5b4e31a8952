//! What is being measured: the canary, its two arms, and the names queries refer to.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::template::TemplateContext;

/// Which side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArmRole {
    /// The new version.
    Canary,
    /// The stable version.
    Primary,
}

/// How one arm is found in metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// Workload name as Linkerd's `deployment` / Istio's `destination_workload` label shows it
    /// (`podinfo` for the canary, `podinfo-primary` for the primary in Flagger's naming).
    pub workload: String,
    /// Backend name as `serin-proxy`'s `dst_service` label shows it (`podinfo-canary`,
    /// `podinfo-primary`).
    pub backend: String,
}

/// The canary under analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `metadata.name` of the Canary.
    pub name: String,
    /// `metadata.namespace` of the Canary.
    pub namespace: String,
    /// `spec.targetRef.name`.
    pub target: String,
    /// `spec.service.name` (Flagger defaults it to the target name).
    pub service: String,
    /// `spec.ingressRef.name`, when set.
    pub ingress: Option<String>,
    /// `spec.routeRef.name`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The canary arm.
    pub canary: Arm,
    /// The primary arm.
    pub primary: Arm,
}

impl Target {
    /// A target with Flagger's naming: workloads `<target>` and `<target>-primary`, backends
    /// `<service>-canary` and `<service>-primary`; `service` defaults to `target`.
    pub fn flagger(name: &str, namespace: &str, target: &str, service: Option<&str>) -> Self {
        let service = service.unwrap_or(target).to_string();
        Target {
            name: name.to_string(),
            namespace: namespace.to_string(),
            target: target.to_string(),
            canary: Arm {
                workload: target.to_string(),
                backend: format!("{service}-canary"),
            },
            primary: Arm {
                workload: format!("{target}-primary"),
                backend: format!("{service}-primary"),
            },
            service,
            ingress: None,
            route: None,
        }
    }

    /// The arm playing `role`.
    pub fn arm(&self, role: ArmRole) -> &Arm {
        match role {
            ArmRole::Canary => &self.canary,
            ArmRole::Primary => &self.primary,
        }
    }

    /// The template variables for a metric with this window and `templateVariables`.
    pub fn template_context(
        &self,
        interval: Duration,
        variables: &BTreeMap<String, String>,
    ) -> TemplateContext {
        TemplateContext {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            target: self.target.clone(),
            service: self.service.clone(),
            ingress: self.ingress.clone(),
            route: self.route.clone(),
            interval,
            variables: variables.clone(),
        }
    }
}

//! Which workload a pod belongs to, named as Linkerd's metrics name it: the proxy's own
//! identity labels (set by the injector) and the `dst_*` labels of the endpoints the control
//! plane streams are derived the same way, so a pod's `deployment` and its callers'
//! `dst_deployment` always agree.

/// The label names a pod's workload can have (`dst_` prefixed on outbound series).
pub const WORKLOAD_LABELS: [&str; 7] = [
    "deployment",
    "statefulset",
    "daemonset",
    "job",
    "replicaset",
    "replicationcontroller",
    "cronjob",
];

/// The metric label of a workload kind (`Deployment` -> `deployment`), for kinds that own pods.
pub fn workload_label(kind: &str) -> Option<&'static str> {
    let lower = kind.to_ascii_lowercase();
    WORKLOAD_LABELS.iter().copied().find(|l| *l == lower)
}

/// The workload of a pod owned (controlled) by `owner_kind`/`owner_name`, with the pod's
/// `pod-template-hash` label if it has one: a ReplicaSet whose name ends in `-<hash>` is a
/// Deployment's (`web-7d9f8c` -> `("deployment", "web")`); any other owner of a known kind is the
/// workload itself. None for kinds that are not workloads.
pub fn owner_workload(
    owner_kind: &str,
    owner_name: &str,
    pod_template_hash: Option<&str>,
) -> Option<(&'static str, String)> {
    if owner_kind == "ReplicaSet"
        && let Some(d) = pod_template_hash.and_then(|h| deployment_of(owner_name, h))
    {
        return Some(("deployment", d.to_string()));
    }
    workload_label(owner_kind).map(|l| (l, owner_name.to_string()))
}

/// `name` without its `-<hash>` suffix (a ReplicaSet's or a pod's generateName stem).
pub fn deployment_of<'a>(name: &'a str, hash: &str) -> Option<&'a str> {
    name.strip_suffix(hash)?
        .strip_suffix('-')
        .filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_map_to_linkerds_label_names() {
        assert_eq!(
            owner_workload("ReplicaSet", "web-7d9f8c", Some("7d9f8c")),
            Some(("deployment", "web".into()))
        );
        assert_eq!(
            owner_workload("ReplicaSet", "legacy", Some("7d9f8c")),
            Some(("replicaset", "legacy".into()))
        );
        assert_eq!(
            owner_workload("ReplicaSet", "legacy", None),
            Some(("replicaset", "legacy".into()))
        );
        assert_eq!(
            owner_workload("StatefulSet", "db", Some("db-0")),
            Some(("statefulset", "db".into()))
        );
        assert_eq!(owner_workload("Node", "n1", None), None);
        assert_eq!(deployment_of("web-7d9f8c", "7d9f8c"), Some("web"));
        assert_eq!(deployment_of("-7d9f8c", "7d9f8c"), None);
    }
}

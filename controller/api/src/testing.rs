//! Builders for other crates' tests (feature `test-support`; never in a production build).

use crate::{Canary, CanaryAnalysis, CanaryService, CanarySpec, TargetKind, TargetRef};

/// The Canary `test/podinfo` of a Deployment `podinfo` on port 9898 with `analysis`: the
/// smallest valid Canary, for tests that vary one block.
pub fn canary(analysis: CanaryAnalysis) -> Canary {
    let mut c = Canary::new(
        "podinfo",
        CanarySpec {
            target_ref: TargetRef {
                api_version: Some("apps/v1".into()),
                kind: TargetKind::Deployment,
                name: "podinfo".into(),
            },
            service: CanaryService {
                port: 9898,
                ..Default::default()
            },
            analysis,
            ..Default::default()
        },
    );
    c.metadata.namespace = Some("test".into());
    c
}

//! Serin's custom resources — `Canary`, `MetricTemplate` and `AlertProvider` in group
//! `serin.dev`, version `v1beta1` — field-compatible with Flagger's `flagger.app/v1beta1` so a
//! Flagger manifest is accepted after changing only `apiVersion`.
//!
//! This crate holds the types and their generated CRDs ([`crds_yaml`]), the validation rules
//! shared by `serin validate` and the controller ([`validate`], [`check_manifests`]), and
//! Flagger's defaults applied in one place ([`Normalized`]), which the runtime turns into the
//! engine's `Plan`. It does no I/O and talks to no API server.

mod alert_provider;
mod canary;
mod crds;
mod defaults;
/// Go durations live in the engine crate so every crate parses them one way.
pub use serin_core::duration;
mod manifest;
mod metric_template;
mod schema;
pub mod schema_check;
mod status;
pub mod support;
#[cfg(feature = "test-support")]
pub mod testing;
mod validate;

pub use alert_provider::*;
pub use canary::*;
pub use crds::{HEADER as CRDS_HEADER, RenderError, crds, crds_yaml};
pub use defaults::*;
pub use manifest::*;
pub use metric_template::*;
pub use status::{AnalysisState, SerinStatus, Stored};
pub use validate::{
    BUILTIN_METRICS, MAX_WEBHOOK_RETRIES, MIN_INTERVAL_SECS, ValidationError, ValidationErrors,
    alert_provider_warnings, canary_warnings, validate, validate_alert_provider,
    validate_metric_template,
};

/// The API group of Serin's resources.
pub const GROUP: &str = "serin.dev";
/// The `apiVersion` of Serin's resources.
pub const API_VERSION: &str = "serin.dev/v1beta1";
/// Flagger's `apiVersion`, recognised to point users at the one change they need.
pub const FLAGGER_API_VERSION: &str = "flagger.app/v1beta1";

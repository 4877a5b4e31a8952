//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong while configuring providers, rendering queries or measuring.
///
/// Each variant has a stable, low-cardinality [`AnalysisError::kind`] usable as a metric label.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// A user-supplied setting is invalid; `field` names it as it appears in the Canary or
    /// MetricTemplate, `accepted` says what would be accepted.
    #[error("invalid {field}: {message} (accepted: {accepted})")]
    InvalidConfig {
        /// The offending field, e.g. `spec.analysis.metrics[0].interval`.
        field: String,
        /// What is wrong with the value given.
        message: String,
        /// What the field accepts.
        accepted: String,
    },
    /// A query template refers to a variable that is not defined.
    #[error("template variable `{name}` is not defined (known: {known})")]
    UnknownVariable {
        /// The variable as written, e.g. `variables.region`.
        name: String,
        /// The variables that are defined, comma separated.
        known: String,
    },
    /// A query template is malformed (unclosed `{{`, empty expression, ...).
    #[error("query template is malformed at byte {offset}: {message}")]
    Template {
        /// Byte offset in the template where the problem starts.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// The metrics backend could not be reached or answered with an error.
    #[error("metrics provider {provider} unavailable at {address}: {message}")]
    Unavailable {
        /// `prometheus` or `proxy-scrape`.
        provider: &'static str,
        /// The address that was tried.
        address: String,
        /// What failed.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend did not answer within the configured timeout.
    #[error("metrics provider {provider} timed out after {timeout:?} at {address}")]
    Timeout {
        /// `prometheus` or `proxy-scrape`.
        provider: &'static str,
        /// The address that was tried.
        address: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The backend answered, but the answer is not what the query should produce.
    #[error("unexpected answer from {provider} for query `{query}`: {message}")]
    BadResponse {
        /// `prometheus` or `proxy-scrape`.
        provider: &'static str,
        /// The query (or scrape URL) that produced it.
        query: String,
        /// What is wrong with the answer.
        message: String,
    },
    /// A `/metrics` page could not be parsed as Prometheus text exposition format.
    #[error("cannot parse metrics text at line {line}: {message}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The provider cannot answer this kind of question (e.g. a free PromQL query sent to the
    /// proxy-scrape provider, which has no query language).
    #[error("provider {provider} does not support {what}")]
    Unsupported {
        /// The provider's name.
        provider: &'static str,
        /// What was asked.
        what: String,
    },
}

impl AnalysisError {
    /// A stable label for metrics and logs (never contains object names).
    pub fn kind(&self) -> &'static str {
        match self {
            AnalysisError::InvalidConfig { .. } => "invalid_config",
            AnalysisError::UnknownVariable { .. } => "unknown_variable",
            AnalysisError::Template { .. } => "template",
            AnalysisError::Unavailable { .. } => "unavailable",
            AnalysisError::Timeout { .. } => "timeout",
            AnalysisError::BadResponse { .. } => "bad_response",
            AnalysisError::Parse { .. } => "parse",
            AnalysisError::Unsupported { .. } => "unsupported",
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        message: impl Into<String>,
        accepted: impl Into<String>,
    ) -> Self {
        AnalysisError::InvalidConfig {
            field: field.into(),
            message: message.into(),
            accepted: accepted.into(),
        }
    }
}

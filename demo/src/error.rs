//! The crate's one error type.

use std::net::SocketAddr;

/// Everything that can go wrong in the sample app, the load generator and the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A flag or field has a value outside what is accepted.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The flag or field name, e.g. `--error-rate`.
        field: String,
        /// What was wrong and what is accepted.
        message: String,
    },
    /// Binding a listener failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O error, with what was being done.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A step of the demo did not go as expected.
    #[error("{0}")]
    Demo(String),
    /// A part of the platform (control plane, proxy, controller) failed.
    #[error("{what}: {source}")]
    Platform {
        /// Which part, doing what.
        what: String,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DemoError {
    /// Shorthand for [`DemoError::Invalid`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`DemoError::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

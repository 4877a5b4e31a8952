//! The local platform's manifests: the `Process` kind (a workload Serin runs itself) and the
//! reading of a directory of YAML files holding `Process` and `Canary` documents.
//!
//! ```yaml
//! apiVersion: serin.dev/v1beta1
//! kind: Process
//! metadata:
//!   name: podinfo
//! spec:
//!   command: serin                      # a name on PATH, or a path (relative to the file)
//!   args: ["sample-app", "--addr", "127.0.0.1:$(PORT)", "--app-version", "v1"]
//!   env:
//!     - name: GREETING
//!       value: hello
//!   revision: v1                        # optional; otherwise a hash of command, args, env
//!   portEnv: PORT                       # the variable carrying the port Serin picked
//!   readinessProbe:
//!     httpGet: { path: /readyz }
//!     periodSeconds: 1
//!     timeoutSeconds: 1
//!     failureThreshold: 3
//!   terminationGracePeriodSeconds: 30
//! ```
//!
//! `$(VAR)` in `args` and `env` values is replaced with the variable's value (the port variable,
//! the `env` entries, then the controller's own environment), as Kubernetes does for containers.

mod edit;
mod launch;
mod process;
mod read;
#[cfg(test)]
mod tests;

pub use edit::*;
pub use launch::*;
pub use process::*;
pub use read::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

//! What a process starts with: its environment (port, revision, `env`) and expanded arguments.

use super::*;

/// The variable Serin sets to the revision a process runs (usable as `$(SERIN_REVISION)` in
/// `args` and `env`, like the Kubernetes downward API), so one manifest serves every revision.
pub const REVISION_ENV: &str = "SERIN_REVISION";

/// The environment a process starts with: the port variable, [`REVISION_ENV`], and its `env`
/// entries (expanded; an entry may override `SERIN_REVISION`).
pub fn process_env(spec: &ProcessSpec, port: u16) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(REVISION_ENV.to_string(), spec.revision());
    env.insert(spec.port_env.clone(), port.to_string());
    for e in &spec.env {
        let value = {
            let known = &env;
            expand(&e.value, &|name| {
                known
                    .get(name)
                    .cloned()
                    .or_else(|| std::env::var(name).ok())
            })
        };
        env.insert(e.name.clone(), value);
    }
    env
}

/// The arguments a process starts with, `$(VAR)` expanded against `env` then the environment.
pub fn process_args(spec: &ProcessSpec, env: &BTreeMap<String, String>) -> Vec<String> {
    spec.args
        .iter()
        .map(|a| {
            expand(a, &|name| {
                env.get(name).cloned().or_else(|| std::env::var(name).ok())
            })
        })
        .collect()
}

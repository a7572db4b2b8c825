//! `state:` — the state store that keeps established calls so that they
//! outlive the process: `state: { path: calls.db }`, a local file (SQLite,
//! no server to run).

use std::path::PathBuf;

use serde::Deserialize;

/// `state:` as written.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StateFile {
    /// The store's file (created if missing); `calls.db` when not given.
    #[serde(default)]
    pub(super) path: Option<PathBuf>,
}

/// Where established calls are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The SQLite file of the embedded store.
    pub path: PathBuf,
}

impl StateFile {
    /// The config, or what is wrong with it as `(key, message)`.
    pub(super) fn check(self) -> Result<StateConfig, (&'static str, String)> {
        let path = self.path.unwrap_or_else(|| PathBuf::from("calls.db"));
        if path.as_os_str().is_empty() {
            return Err(("state.path", "must name a file".into()));
        }
        Ok(StateConfig { path })
    }
}

//! `state:` — the state store that keeps established calls so that they
//! outlive the process: `state: { path: calls.db }`, a local file (SQLite,
//! no server to run), or `state: { redis: "redis://127.0.0.1:6379" }`, a
//! Redis server that several Vigil nodes share (one active, the others on
//! standby, taking over when its lease lapses).

use std::path::PathBuf;

use serde::Deserialize;

/// `state:` as written.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StateFile {
    /// The store's file (created if missing); `calls.db` when neither this
    /// nor `redis` is given.
    #[serde(default)]
    pub(super) path: Option<PathBuf>,
    /// A Redis server's URL (`redis://host:port[/db]`).
    #[serde(default)]
    pub(super) redis: Option<String>,
}

/// Where established calls are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateConfig {
    /// The embedded SQLite file.
    File { path: PathBuf },
    /// A Redis server shared by an active node and its standbys.
    Redis { url: String },
}

impl StateFile {
    /// The config, or what is wrong with it as `(key, message)`.
    pub(super) fn check(self) -> Result<StateConfig, (&'static str, String)> {
        match (self.path, self.redis) {
            (Some(_), Some(_)) => Err((
                "state.redis",
                "give either path (a local file) or redis, not both".into(),
            )),
            (_, Some(url)) => {
                if !url.starts_with("redis://") {
                    return Err(("state.redis", format!("{url:?} is not a redis:// URL")));
                }
                match redis::Client::open(url.as_str()) {
                    Ok(_) => Ok(StateConfig::Redis { url }),
                    Err(e) => Err(("state.redis", format!("{url:?}: {e}"))),
                }
            }
            (path, None) => {
                let path = path.unwrap_or_else(|| PathBuf::from("calls.db"));
                if path.as_os_str().is_empty() {
                    return Err(("state.path", "must name a file".into()));
                }
                Ok(StateConfig::File { path })
            }
        }
    }
}

impl StateConfig {
    /// The local file, for the embedded store.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            StateConfig::File { path } => Some(path),
            StateConfig::Redis { .. } => None,
        }
    }
}

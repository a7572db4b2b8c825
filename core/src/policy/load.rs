//! Loading the policy sources a config names: plugins once per process, Lua
//! scripts once per worker (a Lua state is not shared), and the check behind
//! `vigil check`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::chain::{Policies, PolicyChain};
use super::lua::{LuaLimits, LuaLoadError, LuaPolicy};
use super::plugin::{PluginError, PluginPolicy};
use super::{BuiltinPolicy, PolicySource, SessionPolicy};
use crate::config::{Config, PolicySources};
use crate::metrics::Metrics;

/// A policy source that could not be loaded: its trunk falls back to the
/// default (at start-up), or `vigil check` fails.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("{key}.lua: {source}")]
    Lua {
        key: String,
        #[source]
        source: LuaLoadError,
    },
    #[error("{key}.plugin: {source}")]
    Plugin {
        key: String,
        #[source]
        source: PluginError,
    },
}

/// Loads what the config names. Plugins are loaded once per process and shared
/// by every worker; Lua states are made per worker (a state is not shared).
pub struct PolicyLoader {
    plugins: HashMap<PathBuf, LoadedPlugin>,
    limits: LuaLimits,
    metrics: Arc<Metrics>,
}

/// Every place the config names sources: (config key, sources).
fn named_sources(config: &Config) -> Vec<(String, &PolicySources)> {
    let mut out = vec![("policy".to_string(), &config.policy.default)];
    for (i, t) in config.trunks.iter().enumerate() {
        if let Some(sources) = &t.policy {
            out.push((format!("trunks[{i}].policy"), sources));
        }
    }
    out
}

/// A loaded plugin and the file it was loaded from, as it was then.
struct LoadedPlugin {
    policy: Arc<PluginPolicy>,
    file: Option<FileIdentity>,
}

/// What tells a replaced file from the same one: a rename-over changes the
/// inode, an in-place write the size or the modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileIdentity {
    fn of(path: &std::path::Path) -> Option<FileIdentity> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        Some(FileIdentity {
            device,
            inode,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl PolicyLoader {
    /// Loads every plugin the config names; the errors say which could not be.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> (PolicyLoader, Vec<PolicyLoadError>) {
        PolicyLoader::with_previous(config, metrics, &HashMap::new())
    }

    /// The loader for a reloaded config: a plugin whose file is unchanged is
    /// the one already loaded (its state carries on); a new or replaced file
    /// is loaded as a new copy. A plugin that is no longer used stays loaded
    /// (see the plugin module: libraries are never unloaded).
    pub fn reload(&self, config: &Config) -> (PolicyLoader, Vec<PolicyLoadError>) {
        PolicyLoader::with_previous(config, self.metrics.clone(), &self.plugins)
    }

    fn with_previous(
        config: &Config,
        metrics: Arc<Metrics>,
        previous: &HashMap<PathBuf, LoadedPlugin>,
    ) -> (PolicyLoader, Vec<PolicyLoadError>) {
        let mut plugins = HashMap::new();
        let mut errors = Vec::new();
        for (key, sources) in named_sources(config) {
            let Some(path) = &sources.plugin else {
                continue;
            };
            if plugins.contains_key(path) {
                continue;
            }
            let file = FileIdentity::of(path);
            if let Some(old) = previous.get(path)
                && old.file.is_some()
                && old.file == file
            {
                let policy = old.policy.clone();
                plugins.insert(path.clone(), LoadedPlugin { policy, file });
                continue;
            }
            match PluginPolicy::load(path) {
                Ok(plugin) => {
                    let policy = Arc::new(plugin);
                    plugins.insert(path.clone(), LoadedPlugin { policy, file });
                }
                Err(source) => errors.push(PolicyLoadError::Plugin { key, source }),
            }
        }
        let limits = LuaLimits {
            instructions: config.policy.lua_instruction_limit,
            memory_bytes: config.policy.lua_memory_limit_mb as usize * 1024 * 1024,
        };
        (
            PolicyLoader {
                plugins,
                limits,
                metrics,
            },
            errors,
        )
    }

    /// One worker's policies, with fresh Lua states (each script compiled once
    /// for this worker). A source that fails to load is left out of its chain.
    pub fn policies(&self, config: &Config) -> (Policies, Vec<PolicyLoadError>) {
        let mut scripts: HashMap<PathBuf, Arc<LuaPolicy>> = HashMap::new();
        let mut errors = Vec::new();
        let mut chain = |key: String, sources: &PolicySources| -> Option<Arc<dyn SessionPolicy>> {
            let mut list: Vec<Arc<dyn PolicySource>> = Vec::new();
            if let Some(plugin) = sources.plugin.as_ref().and_then(|p| self.plugins.get(p)) {
                list.push(plugin.policy.clone());
            }
            if let Some(path) = &sources.lua {
                match scripts.get(path.as_path()) {
                    Some(script) => list.push(script.clone()),
                    None => match LuaPolicy::load(path, self.limits) {
                        Ok(script) => {
                            let script = Arc::new(script);
                            scripts.insert(path.clone(), script.clone());
                            list.push(script);
                        }
                        Err(source) => errors.push(PolicyLoadError::Lua { key, source }),
                    },
                }
            }
            (!list.is_empty()).then(|| {
                Arc::new(PolicyChain::new(list, self.metrics.clone())) as Arc<dyn SessionPolicy>
            })
        };
        let default = chain("policy".into(), &config.policy.default)
            .unwrap_or_else(|| Arc::new(BuiltinPolicy));
        let trunks = config
            .trunks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let policy = match &t.policy {
                    Some(sources) => chain(format!("trunks[{i}].policy"), sources)
                        .unwrap_or_else(|| default.clone()),
                    None => default.clone(),
                };
                (t.name.clone(), policy)
            })
            .collect();
        (Policies { default, trunks }, errors)
    }
}

/// What `vigil check` reports: every script that does not compile and every
/// plugin that does not load.
pub fn check(config: &Config) -> Vec<PolicyLoadError> {
    let (loader, mut errors) = PolicyLoader::new(config, Arc::default());
    errors.extend(loader.policies(config).1);
    errors
}

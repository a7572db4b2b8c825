//! `policy:` and `trunks[].policy` — where a trunk's decisions come from: a Lua
//! script, a vendor plugin, or both (plugin asked first), and the bounds every
//! script runs within. Whether a script compiles or a plugin loads is checked
//! by the policy module (`vigil check` and start-up), not here.

use std::path::PathBuf;

use serde::Deserialize;

/// A trunk's `policy:` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct PolicySources {
    /// A Lua script defining hook functions.
    #[serde(default)]
    pub lua: Option<PathBuf>,
    /// A shared library built against `vigil-plugin-api`.
    #[serde(default)]
    pub plugin: Option<PathBuf>,
}

impl PolicySources {
    pub fn is_empty(&self) -> bool {
        self.lua.is_none() && self.plugin.is_none()
    }
}

/// The global `policy:` section as written: the default sources (for trunks
/// without their own, registered users' legs and keep-alives) and Lua's bounds.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct PolicyFile {
    #[serde(default)]
    pub lua: Option<PathBuf>,
    #[serde(default)]
    pub plugin: Option<PathBuf>,
    /// Lua VM instructions one hook call may run before it is cut off.
    #[serde(default)]
    pub lua_instruction_limit: Option<u64>,
    /// Memory one script's state may hold, MiB.
    #[serde(default)]
    pub lua_memory_limit_mb: Option<u32>,
}

/// The validated global section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub default: PolicySources,
    pub lua_instruction_limit: u64,
    pub lua_memory_limit_mb: u32,
}

/// A million instructions is a few milliseconds: far more than any sane hook
/// needs, far less than a stalled worker would cost.
pub const DEFAULT_LUA_INSTRUCTION_LIMIT: u64 = 1_000_000;
pub const DEFAULT_LUA_MEMORY_LIMIT_MB: u32 = 16;

impl PolicyFile {
    pub fn validated(&self) -> (PolicyConfig, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let instructions = self
            .lua_instruction_limit
            .unwrap_or(DEFAULT_LUA_INSTRUCTION_LIMIT);
        if !(1_000..=1_000_000_000).contains(&instructions) {
            problems.push((
                "lua_instruction_limit",
                format!("{instructions} is not in 1000..=1000000000"),
            ));
        }
        let memory = self
            .lua_memory_limit_mb
            .unwrap_or(DEFAULT_LUA_MEMORY_LIMIT_MB);
        if !(1..=4096).contains(&memory) {
            problems.push((
                "lua_memory_limit_mb",
                format!("{memory} is not in 1..=4096"),
            ));
        }
        let config = PolicyConfig {
            default: PolicySources {
                lua: self.lua.clone(),
                plugin: self.plugin.clone(),
            },
            lua_instruction_limit: instructions,
            lua_memory_limit_mb: memory,
        };
        (config, problems)
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyFile::default().validated().0
    }
}

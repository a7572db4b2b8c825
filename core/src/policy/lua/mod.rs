//! Lua policy scripts (mlua, Lua 5.4): a [`PolicySource`] whose hooks are
//! global functions of an operator's script. The contract a script sees —
//! hook names, argument tables, return values, the sandbox and its bounds —
//! is documented for operators in `scripts/README.md`; this module keeps it.
//!
//! A [`LuaPolicy`] owns one Lua state. The script is compiled and run once, at
//! [`LuaPolicy::load`]; its hook functions are looked up then, and each hook
//! call runs under an instruction budget and the state's memory limit. A hook
//! that fails (error, endless loop, memory bomb, nonsense answer) is reported
//! as a [`HookError`] and leaves the state usable for the next call.

mod convert;
mod sandbox;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use mlua::{ChunkMode, Function, IntoLuaMulti, Lua, Value};

use self::sandbox::{Budget, Failure};
use mlua::Variadic;

use super::{
    CallStartDecision, CallStartView, CallView, ContactView, ExtraFields, FailureDecision,
    HookError, KeepaliveDecision, Leg, LegView, MediaTimeoutDecision, MediaTimeoutView,
    PolicySource, RefreshDecision, RefreshFailure, Refresher, RouteDecision, RouteView,
};

/// The bounds one script runs within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LuaLimits {
    /// Lua VM instructions one hook call (or the script's top-level chunk) may
    /// run. Counted in steps of 1000, so an overrun is noticed within 1000
    /// instructions.
    pub instructions: u64,
    /// Memory the whole state may hold, bytes (0: no limit).
    pub memory_bytes: usize,
}

impl Default for LuaLimits {
    /// A million instructions is a few milliseconds: far more than a sane hook
    /// needs, far less than a stalled worker would cost. 16 MiB holds plenty
    /// of per-call state for thousands of calls.
    fn default() -> Self {
        LuaLimits {
            instructions: 1_000_000,
            memory_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a script could not be loaded. Messages from Lua carry `file:line`.
#[derive(Debug, thiserror::Error)]
pub enum LuaLoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The script (or a module it requires at load) does not compile.
    #[error("syntax error: {message}")]
    Syntax { path: PathBuf, message: String },
    /// The top-level chunk raised an error.
    #[error("error running {}: {message}", path.display())]
    Runtime { path: PathBuf, message: String },
    #[error("{}: instruction budget of {budget} exhausted while running the script (endless loop?)", path.display())]
    InstructionBudget { path: PathBuf, budget: u64 },
    #[error("{}: memory limit of {bytes} bytes reached while running the script", path.display())]
    MemoryLimit { path: PathBuf, bytes: usize },
    /// A global named after a hook is set, but not to a function.
    #[error("{}: global `{hook}` is a {found}, not a function", path.display())]
    NotAFunction {
        path: PathBuf,
        hook: &'static str,
        found: &'static str,
    },
    /// The Lua state itself could not be set up (e.g. the memory limit is
    /// below what the standard libraries need).
    #[error("{}: cannot set up the Lua state: {message}", path.display())]
    Setup { path: PathBuf, message: String },
}

/// A leg's fields as the binders take them: call_id, b_call_id, trunk,
/// caller, callee, leg, session_expires, refresher, refresh_count,
/// since_answer.
type LegArgs<'v> = (
    &'v str,
    &'v str,
    &'v str,
    &'v str,
    &'v str,
    &'static str,
    u32,
    &'static str,
    u32,
    f64,
);

/// The script's hook functions, each bound to the Lua function that builds
/// its argument tables; `None` where the script defines no such function.
#[derive(Default)]
struct Hooks {
    call_start: Option<Function>,
    refresh_due: Option<Function>,
    refresh_failed: Option<Function>,
    keepalive_tick: Option<Function>,
    hangup: Option<Function>,
    media_timeout: Option<Function>,
    route: Option<Function>,
}

/// One loaded script: a sandboxed Lua state and its hook functions.
///
/// Send + Sync so the daemon can hold it as a `dyn PolicySource`; it is meant
/// to be used by one worker (a state runs one hook at a time, so concurrent
/// callers would wait for each other).
pub struct LuaPolicy {
    hooks: Hooks,
    /// The script's path as configured: `name()` and the logs' `script` field.
    name: Arc<str>,
    limits: LuaLimits,
    budget: Arc<Budget>,
    /// One hook call at a time: the budget counts for the call in progress.
    serial: Mutex<()>,
    lua: Lua,
}

impl fmt::Debug for LuaPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let defined = [
            ("call_start", self.hooks.call_start.is_some()),
            ("refresh_due", self.hooks.refresh_due.is_some()),
            ("refresh_failed", self.hooks.refresh_failed.is_some()),
            ("keepalive_tick", self.hooks.keepalive_tick.is_some()),
            ("hangup", self.hooks.hangup.is_some()),
            ("media_timeout", self.hooks.media_timeout.is_some()),
            ("route", self.hooks.route.is_some()),
        ];
        let hooks: Vec<&str> = defined
            .iter()
            .filter(|(_, d)| *d)
            .map(|(n, _)| *n)
            .collect();
        f.debug_struct("LuaPolicy")
            .field("name", &self.name)
            .field("hooks", &hooks)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl LuaPolicy {
    /// Compiles and runs the script at `path` in a fresh sandboxed state and
    /// looks up its hook functions. Its messages name the file as `path` is
    /// written (`scripts/carrier.lua:12: ...`); `require` looks for modules in
    /// `path`'s directory.
    pub fn load(path: &Path, limits: LuaLimits) -> Result<LuaPolicy, LuaLoadError> {
        let source = std::fs::read(path).map_err(|source| LuaLoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name: Arc<str> = path.display().to_string().into();
        let setup = |e: mlua::Error| LuaLoadError::Setup {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let (lua, budget, binders) = sandbox::new_state(path, &name, limits).map_err(setup)?;

        let run = lua
            .load(&source[..])
            .set_name(format!("@{name}"))
            .set_mode(ChunkMode::Text)
            .into_function()
            .and_then(|chunk| {
                budget.start(&lua)?;
                chunk.call::<()>(())
            });
        if let Err(e) = run {
            let path = path.to_path_buf();
            return Err(if budget.exceeded() {
                LuaLoadError::InstructionBudget {
                    path,
                    budget: limits.instructions,
                }
            } else {
                match sandbox::classify(&e) {
                    Failure::Memory => LuaLoadError::MemoryLimit {
                        path,
                        bytes: limits.memory_bytes,
                    },
                    Failure::Syntax(message) => LuaLoadError::Syntax { path, message },
                    Failure::Runtime(message) => LuaLoadError::Runtime { path, message },
                }
            });
        }

        let globals = lua.globals();
        let lookup = |hook: &'static str| -> Result<Option<Function>, LuaLoadError> {
            match globals.raw_get::<Value>(hook).map_err(setup)? {
                Value::Nil => Ok(None),
                Value::Function(f) => sandbox::bind_hook(&binders, hook, f)
                    .map(Some)
                    .map_err(setup),
                other => Err(LuaLoadError::NotAFunction {
                    path: path.to_path_buf(),
                    hook,
                    found: other.type_name(),
                }),
            }
        };
        let hooks = Hooks {
            call_start: lookup("call_start")?,
            refresh_due: lookup("refresh_due")?,
            refresh_failed: lookup("refresh_failed")?,
            keepalive_tick: lookup("keepalive_tick")?,
            hangup: lookup("hangup")?,
            media_timeout: lookup("media_timeout")?,
            route: lookup("route")?,
        };
        // The top-level chunk's garbage (source text, temporaries) need not
        // count against the first hook call's memory.
        lua.gc_collect().map_err(setup)?;
        tracing::debug!(script = %name, "lua policy loaded");
        Ok(LuaPolicy {
            hooks,
            name,
            limits,
            budget,
            serial: Mutex::new(()),
            lua,
        })
    }

    /// Calls a bound hook under the budget and turns its failures into
    /// [`HookError`]s. Returns the first two values it returned.
    fn invoke(
        &self,
        hook: &Function,
        args: impl IntoLuaMulti,
    ) -> Result<(Value, Value), HookError> {
        // The guarded data is `()`: a poisoned lock holds nothing broken.
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        self.budget
            .start(&self.lua)
            .map_err(|e| HookError::Script(format!("cannot arm the instruction budget: {e}")))?;
        let result = hook.call::<(Value, Value)>(args);
        if self.budget.exceeded() {
            return Err(HookError::InstructionBudget {
                limit: self.limits.instructions,
                at: self.budget.cut_at(),
            });
        }
        result.map_err(|e| match sandbox::classify(&e) {
            Failure::Memory => {
                self.collect_after_memory_error();
                HookError::MemoryLimit(self.limits.memory_bytes)
            }
            Failure::Syntax(message) | Failure::Runtime(message) => HookError::Script(message),
        })
    }

    /// After a memory error the garbage that caused it is unreachable but
    /// still counted: collect it now, so the next call starts with room.
    /// Twice, as a cycle in progress may have to finish before a full one.
    fn collect_after_memory_error(&self) {
        for _ in 0..2 {
            if let Err(e) = self.lua.gc_collect() {
                tracing::warn!(script = %self.name, error = %e, "lua: collecting garbage after a memory error failed");
                break;
            }
        }
    }

    /// The arguments of a leg's table, in the order the binders take them.
    fn leg_args<'v>(view: &'v LegView<'_>) -> LegArgs<'v> {
        (
            view.call_id,
            view.b_call_id,
            view.trunk,
            view.caller,
            view.callee,
            match view.leg {
                Leg::A => "a",
                Leg::B => "b",
            },
            view.session_expires,
            match view.refresher {
                Refresher::Vigil => "vigil",
                Refresher::Peer => "peer",
            },
            view.refresh_count,
            view.since_answer.as_secs_f64(),
        )
    }
}

impl PolicySource for LuaPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> super::PolicyBackend {
        super::PolicyBackend::Lua
    }

    fn call_start(&self, view: &CallStartView<'_>) -> Result<Option<CallStartDecision>, HookError> {
        let Some(hook) = &self.hooks.call_start else {
            return Ok(None);
        };
        let args = (
            view.call_id,
            view.trunk_in,
            view.trunk_out,
            view.caller,
            view.callee,
            view.source,
        );
        let (value, _) = self.invoke(hook, args)?;
        convert::call_start(value)
    }

    fn refresh_due(&self, view: &LegView<'_>) -> Result<Option<RefreshDecision>, HookError> {
        let Some(hook) = &self.hooks.refresh_due else {
            return Ok(None);
        };
        let (value, _) = self.invoke(hook, Self::leg_args(view))?;
        convert::refresh_due(value)
    }

    fn refresh_failed(
        &self,
        view: &LegView<'_>,
        failure: RefreshFailure,
    ) -> Result<Option<FailureDecision>, HookError> {
        let Some(hook) = &self.hooks.refresh_failed else {
            return Ok(None);
        };
        let (kind, status) = match failure {
            RefreshFailure::Timeout => ("timeout", None),
            RefreshFailure::Status(code) => ("status", Some(code)),
            RefreshFailure::Expired => ("expired", None),
            RefreshFailure::Policy => ("policy", None),
        };
        let (a, b, c, d, e, f, g, h, i, j) = Self::leg_args(view);
        let (value, seconds) = self.invoke(hook, (a, b, c, d, e, f, g, h, i, j, kind, status))?;
        convert::refresh_failed(value, seconds)
    }

    fn keepalive_tick(
        &self,
        view: &ContactView<'_>,
    ) -> Result<Option<KeepaliveDecision>, HookError> {
        let Some(hook) = &self.hooks.keepalive_tick else {
            return Ok(None);
        };
        // Lua integers are i64; no contact is sent 2^63 keep-alives.
        let sent = i64::try_from(view.sent).unwrap_or(i64::MAX);
        let args = (view.user, view.contact, view.received, sent);
        let (value, _) = self.invoke(hook, args)?;
        convert::keepalive_tick(value)
    }

    fn hangup(&self, view: &CallView<'_>, extra: &mut ExtraFields) -> Result<(), HookError> {
        let Some(hook) = &self.hooks.hangup else {
            return Ok(());
        };
        let args = (
            view.call_id,
            view.b_call_id,
            view.trunk_in,
            view.trunk_out,
            view.caller,
            view.callee,
            view.end_reason,
            view.since_answer.map(|d| d.as_secs_f64()),
        );
        let (value, _) = self.invoke(hook, args)?;
        convert::hangup(value, extra)
    }

    fn media_timeout(
        &self,
        view: &MediaTimeoutView<'_>,
    ) -> Result<Option<MediaTimeoutDecision>, HookError> {
        let Some(hook) = &self.hooks.media_timeout else {
            return Ok(None);
        };
        let args = (
            view.call_id,
            view.b_call_id,
            view.trunk,
            view.caller,
            view.callee,
            view.direction.as_str(),
            view.silent_for.as_secs_f64(),
            view.on_hold,
            view.since_answer.as_secs_f64(),
        );
        let (value, _) = self.invoke(hook, args)?;
        convert::media_timeout(value)
    }

    fn route(&self, view: &RouteView<'_>) -> Result<Option<RouteDecision>, HookError> {
        let Some(hook) = &self.hooks.route else {
            return Ok(None);
        };
        // The headers go as name, value, name, value, …: the binder groups
        // them into `call.headers`, in Lua, under the budget.
        let headers: Variadic<&str> = view
            .headers
            .iter()
            .flat_map(|h| [h.name, h.value])
            .collect();
        let args = (
            view.call_id,
            view.trunk_in,
            view.caller,
            view.callee,
            view.source,
            headers,
        );
        let (value, _) = self.invoke(hook, args)?;
        convert::route(value)
    }
}

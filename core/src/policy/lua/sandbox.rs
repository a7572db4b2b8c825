//! The Lua state a script runs in, and the bounds it runs within.
//!
//! A state gets the `base`, `string`, `table`, `math`, `utf8` and `coroutine`
//! libraries and nothing that reaches the host: no `io`, `debug`, `package`,
//! `dofile` or `loadfile`, and of `os` only its clock ([`OS_CLOCK`]), so a
//! script can route by the time of day. `load` only takes text, `require` only
//! reads modules next to the script, `print` logs. Two holes the standard
//! library leaves in a sandbox are closed here: a `__gc` metamethod runs with
//! hooks disabled (so it would escape the instruction budget), and
//! `collectgarbage("stop")` would let garbage pile up to the memory limit;
//! and `xpcall`'s message handler, called for the budget's error, would run
//! with hooks disabled.
//!
//! The instruction budget is a count hook shared by every thread of the state
//! (scripts' coroutines inherit it), see [`Budget`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use mlua::{ChunkMode, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, Variadic, VmState};

use super::LuaLimits;

/// What a script keeps of the `os` library: reading the clock and the
/// calendar (`os.time`, `os.date`, in the daemon's time zone, `TZ`), and
/// durations. Nothing that starts a process, touches a file, reads the
/// environment or exits. Lua 5.4's `os.date` checks its conversions itself,
/// so a script cannot pass `strftime` one it does not know.
pub(super) const OS_CLOCK: [&str; 4] = ["clock", "date", "difftime", "time"];

/// Instructions between two looks at the budget: rare enough that the hook
/// costs nothing measurable, often enough that an overrun is cut within 0.1 %
/// of the default budget.
const HOOK_STEP: u32 = 1000;

/// Where `require` keeps the modules it loaded (a table in the registry, not
/// reachable from the script).
const LOADED_KEY: &str = "vigil.require.loaded";

/// What every state runs before the script: wrappers that close the holes the
/// Lua functions themselves leave open.
const PRELUDE: &str = r##"
local budget_exceeded = ...
local raw_load, raw_setmetatable, raw_collectgarbage = load, setmetatable, collectgarbage
local raw_xpcall = xpcall
local error, rawget, select, tostring, type = error, rawget, select, tostring, type

-- Text only: a binary chunk can break the VM's invariants.
load = function(chunk, chunkname, _mode, ...)
  if select("#", ...) > 0 then
    return raw_load(chunk, chunkname, "t", ...)
  end
  return raw_load(chunk, chunkname, "t")
end

-- Finalizers run with hooks disabled: an endless loop in one would stall the
-- worker beyond the instruction budget's reach.
setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not allowed in policy scripts", 2)
  end
  return raw_setmetatable(t, mt)
end

-- Lua calls a message handler before it unwinds, so for the budget's error
-- (raised from the count hook) the handler would run with hooks disabled and
-- an endless loop in it would never be cut. Once over budget, the handler is
-- not called at all.
xpcall = function(f, msgh, ...)
  return raw_xpcall(f, function(e)
    if budget_exceeded() then return e end
    return msgh(e)
  end, ...)
end

-- Stopping or retuning the collector would let garbage reach the memory limit.
local gc_allowed = { collect = true, count = true, step = true, isrunning = true }
collectgarbage = function(opt, ...)
  opt = opt or "collect"
  if not gc_allowed[opt] then
    error("collectgarbage: option '" .. tostring(opt) .. "' is not allowed in policy scripts", 2)
  end
  return raw_collectgarbage(opt, ...)
end
"##;

/// Binds a hook function to a Lua function that builds its argument tables.
/// Building them in Lua costs one protected call per hook call, where setting
/// each field from Rust would cost one per field; the keys are constants of
/// the chunk, interned once.
const BINDERS: &str = r#"
-- The script may replace globals; the binders keep the originals.
local select = select

return {
  call_start = function(f)
    return function(call_id, trunk_in, trunk_out, caller, callee, source)
      return f({
        call_id = call_id, trunk_in = trunk_in, trunk_out = trunk_out,
        caller = caller, callee = callee, source = source,
      })
    end
  end,
  refresh_due = function(f)
    return function(call_id, b_call_id, trunk, caller, callee, leg,
                    session_expires, refresher, refresh_count, since_answer)
      return f({
        call_id = call_id, b_call_id = b_call_id, trunk = trunk,
        caller = caller, callee = callee, leg = leg,
        session_expires = session_expires, refresher = refresher,
        refresh_count = refresh_count, since_answer = since_answer,
      })
    end
  end,
  refresh_failed = function(f)
    return function(call_id, b_call_id, trunk, caller, callee, leg,
                    session_expires, refresher, refresh_count, since_answer,
                    kind, status)
      return f({
        call_id = call_id, b_call_id = b_call_id, trunk = trunk,
        caller = caller, callee = callee, leg = leg,
        session_expires = session_expires, refresher = refresher,
        refresh_count = refresh_count, since_answer = since_answer,
      }, { kind = kind, status = status })
    end
  end,
  keepalive_tick = function(f)
    return function(user, contact, received, sent)
      return f({ user = user, contact = contact, received = received, sent = sent })
    end
  end,
  hangup = function(f)
    return function(call_id, b_call_id, trunk_in, trunk_out, caller, callee,
                    end_reason, since_answer)
      return f({
        call_id = call_id, b_call_id = b_call_id, trunk_in = trunk_in,
        trunk_out = trunk_out, caller = caller, callee = callee,
        end_reason = end_reason, since_answer = since_answer,
      })
    end
  end,
  media_timeout = function(f)
    return function(call_id, b_call_id, trunk, caller, callee, direction,
                    silent_for, on_hold, since_answer)
      return f({
        call_id = call_id, b_call_id = b_call_id, trunk = trunk,
        caller = caller, callee = callee, direction = direction,
        silent_for = silent_for, on_hold = on_hold, since_answer = since_answer,
      })
    end
  end,
  route = function(f)
    return function(call_id, trunk_in, caller, callee, source, ...)
      -- `...` is name, value, name, value, … in message order.
      local headers, args = {}, { ... }
      for i = 1, select('#', ...), 2 do
        local name, value = args[i], args[i + 1]
        local values = headers[name]
        if values == nil then
          values = {}
          headers[name] = values
        end
        values[#values + 1] = value
      end
      return f({
        call_id = call_id, trunk_in = trunk_in, caller = caller,
        callee = callee, source = source, headers = headers,
      })
    end
  end,
}
"#;

/// The instruction count of the hook call in progress, shared with the count
/// hook.
///
/// An overrun raises an error from the hook, but a script can catch errors
/// with `pcall`; a loop around a `pcall` would then run on. So once over
/// budget, the hook moves the thread it fires in to a count of one: every
/// further instruction of that thread raises, which unwinds any nest of
/// `pcall`s and coroutines in a bounded number of steps. The next hook call
/// puts the count back.
pub(super) struct Budget {
    limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
    /// Some thread runs with a count of one: the next call resets it.
    escalated: AtomicBool,
    /// `file:line: ` of the code running when the budget ran out, for the log.
    cut_at: Mutex<String>,
}

impl Budget {
    fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
            escalated: AtomicBool::new(false),
            cut_at: Mutex::new(String::new()),
        })
    }

    /// Starts counting for one hook call (or the script's top-level chunk).
    pub(super) fn start(self: &Arc<Self>, lua: &Lua) -> mlua::Result<()> {
        self.used.store(0, Ordering::Relaxed);
        // `cut_at` needs no clearing: it is read only after a call that ran
        // over, and the hook writes it when that call first does.
        self.exceeded.store(false, Ordering::Relaxed);
        if self.escalated.swap(false, Ordering::Relaxed) {
            install_budget(lua, self.clone(), HOOK_STEP)?;
        }
        Ok(())
    }

    /// Whether the call since [`Budget::start`] ran past the budget (even if
    /// the script caught the error).
    pub(super) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Where the script was when the budget ran out (`file:line: `), or empty.
    pub(super) fn cut_at(&self) -> String {
        self.cut_at.lock().map(|at| at.clone()).unwrap_or_default()
    }
}

/// Sets the count hook on the running thread, every `every` instructions.
/// It is a global hook in mlua's terms, so the threads a script creates with
/// `coroutine.create` (which copy their creator's hook) are counted too.
fn install_budget(lua: &Lua, budget: Arc<Budget>, every: u32) -> mlua::Result<()> {
    let triggers = HookTriggers::new().every_nth_instruction(every);
    lua.set_global_hook(triggers, move |lua, debug| {
        let used = budget
            .used
            .fetch_add(u64::from(every), Ordering::Relaxed)
            .saturating_add(u64::from(every));
        if used <= budget.limit {
            return Ok(VmState::Continue);
        }
        if !budget.exceeded.swap(true, Ordering::Relaxed)
            && let Ok(mut at) = budget.cut_at.lock()
        {
            let source = debug.source();
            *at = match (source.short_src, debug.current_line()) {
                (Some(src), Some(line)) => format!("{src}:{line}: "),
                _ => String::new(),
            };
        }
        budget.escalated.store(true, Ordering::Relaxed);
        install_budget(lua, budget.clone(), 1)?;
        Err(mlua::Error::runtime(format!(
            "instruction budget of {} exhausted",
            budget.limit
        )))
    })
}

/// A fresh sandboxed state for the script at `script` (named `name` in logs),
/// its budget, and the binders of its hooks (see [`bind_hook`]).
pub(super) fn new_state(
    script: &Path,
    name: &Arc<str>,
    limits: LuaLimits,
) -> mlua::Result<(Lua, Arc<Budget>, Table)> {
    let libs = StdLib::COROUTINE
        | StdLib::TABLE
        | StdLib::STRING
        | StdLib::UTF8
        | StdLib::MATH
        | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::new())?;
    lua.set_memory_limit(limits.memory_bytes)?;
    let budget = Budget::new(limits.instructions);
    install_budget(&lua, budget.clone(), HOOK_STEP)?;
    budget.start(&lua)?;

    let globals = lua.globals();
    globals.raw_set("os", os_clock(&lua, &globals)?)?;
    globals.raw_set("dofile", Value::Nil)?;
    globals.raw_set("loadfile", Value::Nil)?;
    globals.raw_set("print", print_function(&lua, name.clone())?)?;
    globals.raw_set("vigil", vigil_table(&lua, name.clone())?)?;
    let dir = script.parent().map(Path::to_path_buf).unwrap_or_default();
    globals.raw_set("require", require_function(&lua, dir)?)?;
    lua.set_named_registry_value(LOADED_KEY, lua.create_table()?)?;

    let exceeded = {
        let budget = budget.clone();
        lua.create_function(move |_lua, ()| Ok(budget.exceeded()))?
    };
    lua.load(PRELUDE)
        .set_name("=vigil.prelude")
        .call::<()>(exceeded)?;
    let binders: Table = lua.load(BINDERS).set_name("=vigil.hooks").call(())?;
    Ok((lua, budget, binders))
}

/// A fresh `os` table with only the [`OS_CLOCK`] functions of the loaded
/// library. The full table stays only in the registry's `_LOADED`, which no
/// script can reach (there is no `debug` and no `package`).
fn os_clock(lua: &Lua, globals: &Table) -> mlua::Result<Table> {
    let full: Table = globals.raw_get("os")?;
    let clock = lua.create_table()?;
    for name in OS_CLOCK {
        clock.raw_set(name, full.raw_get::<Value>(name)?)?;
    }
    Ok(clock)
}

/// The function the core calls for `hook`: the script's function wrapped by
/// the binder that builds its argument tables.
pub(super) fn bind_hook(
    binders: &Table,
    hook: &str,
    f: mlua::Function,
) -> mlua::Result<mlua::Function> {
    let binder: mlua::Function = binders.raw_get(hook)?;
    binder.call(f)
}

/// `print(...)`: the values as Lua's `print` would write them, logged at info.
fn print_function(lua: &Lua, name: Arc<str>) -> mlua::Result<mlua::Function> {
    lua.create_function(move |_lua, args: Variadic<Value>| {
        let mut line = String::new();
        for (i, value) in args.iter().enumerate() {
            if i > 0 {
                line.push('\t');
            }
            line.push_str(&display(value));
        }
        emit(LogLevel::Info, &name, &line);
        Ok(())
    })
}

/// The `vigil` table: `vigil.log(level, msg)` and `vigil.now()`.
fn vigil_table(lua: &Lua, name: Arc<str>) -> mlua::Result<Table> {
    let vigil = lua.create_table()?;
    let log = lua.create_function(move |lua, (level, msg): (Value, Value)| {
        let parsed = match &level {
            Value::String(s) => LogLevel::parse(&s.as_bytes()),
            _ => None,
        };
        let Some(level) = parsed else {
            return Err(mlua::Error::runtime(format!(
                "{}vigil.log: level must be \"error\", \"warn\", \"info\", \"debug\" or \"trace\", not {}",
                location(lua),
                super::convert::describe(&level)
            )));
        };
        emit(level, &name, &display(&msg));
        Ok(())
    })?;
    vigil.raw_set("log", log)?;
    let now = lua.create_function(|_lua, ()| {
        // A clock before 1970 is a broken host, not the script's problem.
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Ok(secs)
    })?;
    vigil.raw_set("now", now)?;
    Ok(vigil)
}

/// `require(name)`: loads `<script dir>/<name with . as />.lua` once, in
/// this state, and returns what it returned (`true` for nothing).
fn require_function(lua: &Lua, dir: PathBuf) -> mlua::Result<mlua::Function> {
    lua.create_function(move |lua, name: Value| {
        let Value::String(name) = &name else {
            return Err(mlua::Error::runtime(format!(
                "{}require: module name must be a string, not {}",
                location(lua),
                super::convert::describe(&name)
            )));
        };
        let name = name.to_string_lossy();
        if !is_module_name(&name) {
            return Err(mlua::Error::runtime(format!(
                "{}require: invalid module name {name:?} (letters, digits and _ separated by dots; \
                 modules are looked up next to the script only)",
                location(lua)
            )));
        }
        let loaded: Table = lua.named_registry_value(LOADED_KEY)?;
        match loaded.raw_get::<Value>(name.as_str())? {
            Value::Nil => {}
            // `false` marks a module being loaded.
            Value::Boolean(false) => {
                return Err(mlua::Error::runtime(format!(
                    "{}require: module {name:?} requires itself (cycle)",
                    location(lua)
                )));
            }
            module => return Ok(module),
        }
        let path = dir.join(format!("{}.lua", name.replace('.', "/")));
        let source = std::fs::read(&path).map_err(|e| {
            mlua::Error::runtime(format!(
                "{}require: module {name:?} not found: {}: {e}",
                location(lua),
                path.display()
            ))
        })?;
        let chunk = lua
            .load(&source[..])
            .set_name(format!("@{}", path.display()))
            .set_mode(ChunkMode::Text)
            .into_function()?;
        loaded.raw_set(name.as_str(), false)?;
        let module = match chunk.call::<Value>((name.as_str(), path.display().to_string())) {
            Ok(Value::Nil | Value::Boolean(false)) => Value::Boolean(true),
            Ok(module) => module,
            Err(e) => {
                // Forget the marker so a later require tries again; the
                // error being returned matters more than this one.
                let _ = loaded.raw_set(name.as_str(), Value::Nil);
                return Err(e);
            }
        };
        loaded.raw_set(name.as_str(), module.clone())?;
        Ok(module)
    })
}

/// `^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$`: no path separators, no `..`, so a
/// module name cannot leave the script's directory.
fn is_module_name(name: &str) -> bool {
    name.split('.').all(|part| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// `file:line: ` of the Lua code calling a Rust function, for its errors.
fn location(lua: &Lua) -> String {
    lua.inspect_stack(1, |debug| {
        let source = debug.source();
        match (source.short_src, debug.current_line()) {
            (Some(src), Some(line)) => format!("{src}:{line}: "),
            _ => String::new(),
        }
    })
    .unwrap_or_default()
}

/// A value as `tostring` would write it (strings as they are, lossily).
fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string_lossy(),
        other => other
            .to_string()
            .unwrap_or_else(|_| other.type_name().to_string()),
    }
}

#[derive(Debug, Clone, Copy)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn parse(s: &[u8]) -> Option<LogLevel> {
        Some(match s {
            b"error" => LogLevel::Error,
            b"warn" => LogLevel::Warn,
            b"info" => LogLevel::Info,
            b"debug" => LogLevel::Debug,
            b"trace" => LogLevel::Trace,
            _ => return None,
        })
    }
}

/// A script's log line: target `vigil::script`, field `script` = its path.
fn emit(level: LogLevel, script: &str, msg: &str) {
    match level {
        LogLevel::Error => tracing::error!(target: "vigil::script", script, "{msg}"),
        LogLevel::Warn => tracing::warn!(target: "vigil::script", script, "{msg}"),
        LogLevel::Info => tracing::info!(target: "vigil::script", script, "{msg}"),
        LogLevel::Debug => tracing::debug!(target: "vigil::script", script, "{msg}"),
        LogLevel::Trace => tracing::trace!(target: "vigil::script", script, "{msg}"),
    }
}

/// What went wrong in a call into the state, once mlua's wrapping is peeled.
pub(super) enum Failure {
    /// The state hit its memory limit.
    Memory,
    /// A syntax error (the script's own, or a required module's).
    Syntax(String),
    /// Any other error, with the message Lua gave it (`file:line: ...`).
    Runtime(String),
}

/// Sorts an error from mlua; the budget is told apart by [`Budget::exceeded`]
/// instead, because a script may catch and rethrow that error as a string.
pub(super) fn classify(error: &mlua::Error) -> Failure {
    match root_cause(error) {
        mlua::Error::MemoryError(_) => Failure::Memory,
        mlua::Error::SyntaxError { message, .. } => Failure::Syntax(message.clone()),
        mlua::Error::RuntimeError(message) => {
            Failure::Runtime(without_traceback(message).to_string())
        }
        other => Failure::Runtime(without_traceback(&other.to_string()).to_string()),
    }
}

/// The error under mlua's wrappers (a Rust callback's error, a context).
fn root_cause(error: &mlua::Error) -> &mlua::Error {
    match error {
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            root_cause(cause)
        }
        other => other,
    }
}

/// The message without the traceback mlua appends: logs want one line, and
/// the message already says `file:line`.
fn without_traceback(message: &str) -> &str {
    match message.find("\nstack traceback:") {
        Some(i) => &message[..i],
        None => message,
    }
}

//! Vendor plugins: shared libraries built against `vigil-plugin-api`, loaded
//! with libloading and asked as a [`PolicySource`] (see plugins/README.md).
//!
//! Loading checks, in order, and stops at the first failure with an error that
//! names the file: the file opens and is a loadable library;
//! `vigil_plugin_abi_version` exists and equals [`VIGIL_PLUGIN_ABI_VERSION`];
//! `vigil_plugin_vtable` exists and agrees; the plugin's `create` succeeds.
//!
//! Every hook call lends the policy view's strings to the ABI's `#[repr(C)]`
//! view (the views are the API crate's own types: only the layout changes),
//! calls the plugin, and validates what comes back: an unknown discriminant, a
//! reject status outside 400..=699, a missing reason or payload, a string that
//! is not UTF-8, more route trunks than the ABI allows are
//! [`HookError::InvalidDecision`]; a caught panic is
//! [`HookError::Panic`]; any other non-zero status is
//! [`HookError::PluginStatus`]. A call that declines or answers with a plain
//! decision allocates nothing.
//!
//! A library is opened from a private copy (see [`PrivateImage`]) and never
//! unloaded: an operator who overwrites the configured file in place cannot
//! crash the running code, a replaced file is loaded as a new copy on reload
//! (dlopen would return the old one for the same path), and code a plugin left
//! behind (thread-local destructors, threads, callbacks) stays mapped. Each
//! version loaded costs its mapped size for the life of the process.

// This module is the host side of the plugin FFI: loading a library, calling
// through its function pointers and taking strings back through callbacks
// cannot be done without `unsafe`. The rest of the core stays free of it; every
// unsafe block here carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

mod convert;
mod sink;

use std::ffi::c_void;
use std::fmt;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};

use vigil_plugin_api::VIGIL_PLUGIN_ABI_VERSION;
use vigil_plugin_api::abi::{
    self, AbiVersionFn, CallStartFn, DestroyFn, HangupFn, KeepaliveTickFn, MediaTimeoutFn,
    PluginVTable, RawCallStartDecision, RawFailureDecision, RawKeepaliveDecision,
    RawMediaTimeoutDecision, RawRefreshDecision, RawRouteDecision, RawStr, RefreshDueFn,
    RefreshFailedFn, RouteFn, VTableFn,
};

use self::convert::{
    call_start_decision, failure_decision, keepalive_decision, media_timeout_decision, raw_call,
    raw_call_start, raw_contact, raw_failure, raw_headers, raw_leg, raw_media_timeout, raw_route,
    refresh_decision, route_decision,
};
use self::sink::{Collector, Hook};
use super::{
    CallStartDecision, CallStartView, CallView, ContactView, ExtraFields, FailureDecision,
    HookError, KeepaliveDecision, LegView, MediaTimeoutDecision, MediaTimeoutView, PolicySource,
    RefreshDecision, RefreshFailure, RouteDecision, RouteView,
};

/// Why a plugin could not be loaded. Every message starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file cannot be opened (missing, unreadable).
    #[error("{}: cannot open plugin: {error}", file.display())]
    Missing {
        file: PathBuf,
        error: std::io::Error,
    },
    /// The dynamic loader refused the file (not a shared library, wrong
    /// architecture, unresolved symbols); `message` is the loader's.
    #[error("{}: cannot load plugin: {message}", file.display())]
    Open { file: PathBuf, message: String },
    /// A symbol every Vigil plugin exports is missing.
    #[error("{}: not a Vigil plugin: no `{symbol}` symbol ({message})", file.display())]
    MissingSymbol {
        file: PathBuf,
        symbol: &'static str,
        message: String,
    },
    /// The plugin was built for another ABI.
    #[error(
        "{}: plugin ABI version {found}, this Vigil speaks {expected}: rebuild the plugin against this release's vigil-plugin-api",
        file.display()
    )]
    AbiVersion {
        file: PathBuf,
        found: u32,
        expected: u32,
    },
    /// The plugin's function table is unusable.
    #[error("{}: broken plugin table: {problem}", file.display())]
    VTable { file: PathBuf, problem: String },
    /// The plugin's `create` failed or panicked.
    #[error("{}: plugin failed to start: {reason}", file.display())]
    Create { file: PathBuf, reason: String },
}

/// The hooks a plugin provides; `None` never decides.
#[derive(Clone, Copy)]
struct Hooks {
    call_start: Option<CallStartFn>,
    refresh_due: Option<RefreshDueFn>,
    refresh_failed: Option<RefreshFailedFn>,
    keepalive_tick: Option<KeepaliveTickFn>,
    hangup: Option<HangupFn>,
    media_timeout: Option<MediaTimeoutFn>,
    route: Option<RouteFn>,
}

/// A loaded plugin and its one instance, shared by every worker.
///
/// Plugins must be thread-safe: hooks run concurrently on all workers (the
/// api's `Plugin` trait requires `Send + Sync`). Dropping it destroys the
/// instance, then unloads the library.
pub struct PluginPolicy {
    /// The path as configured: the name in logs and metrics.
    name: String,
    path: PathBuf,
    /// What the plugin calls itself, for the start-up log.
    plugin_name: String,
    plugin_version: String,
    hooks: Hooks,
    destroy: DestroyFn,
    /// The plugin's opaque instance; the plugin's hooks take it back.
    instance: *mut c_void,
    /// Held only to keep the code loaded: the hooks and `destroy` are in it.
    /// Never dropped: the library stays mapped for the life of the process
    /// (see the module docs).
    _library: ManuallyDrop<libloading::Library>,
}

// SAFETY: the instance is reached only through the plugin's hooks, which the
// ABI requires to be callable from any thread, concurrently (the api's
// `Plugin: Send + Sync`); the function pointers are plain code and the library
// handle is itself Send + Sync. `destroy` runs from `Drop`, with `&mut self`,
// so never concurrently with a hook.
unsafe impl Send for PluginPolicy {}
// SAFETY: see `Send` above.
unsafe impl Sync for PluginPolicy {}

impl fmt::Debug for PluginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginPolicy")
            .field("path", &self.path)
            .field("plugin_name", &self.plugin_name)
            .field("plugin_version", &self.plugin_version)
            .finish_non_exhaustive()
    }
}

impl PluginPolicy {
    /// Loads the plugin at `path` and creates its instance (see the module docs
    /// for the checks, in order).
    pub fn load(path: &Path) -> Result<PluginPolicy, PluginError> {
        let file = path.to_path_buf();
        // A bare `libfoo.so` would send dlopen searching the library path; the
        // configured path is a file, so hand dlopen an absolute one.
        let resolved = std::fs::canonicalize(path).map_err(|error| PluginError::Missing {
            file: file.clone(),
            error,
        })?;
        let image = PrivateImage::copy(&resolved).map_err(|error| PluginError::Missing {
            file: file.clone(),
            error,
        })?;
        let library = open(image.path()).map_err(|e| PluginError::Open {
            file: file.clone(),
            message: e.to_string(),
        })?;
        // The mapping outlives the file: the copy can go now.
        drop(image);

        let abi_version: AbiVersionFn = symbol(&library, abi::ABI_VERSION_SYMBOL, &file)?;
        // SAFETY: the ABI (every version) defines this symbol as
        // `extern "C" fn() -> u32`, which takes nothing and returns a value.
        let found = unsafe { abi_version() };
        if found != VIGIL_PLUGIN_ABI_VERSION {
            return Err(PluginError::AbiVersion {
                file,
                found,
                expected: VIGIL_PLUGIN_ABI_VERSION,
            });
        }

        let vtable_fn: VTableFn = symbol(&library, abi::VTABLE_SYMBOL, &file)?;
        // SAFETY: the plugin speaks our ABI version (checked above), where this
        // symbol is `extern "C" fn() -> *const PluginVTable`.
        let vtable_ptr = unsafe { vtable_fn() };
        let broken = |problem: String| PluginError::VTable {
            file: file.clone(),
            problem,
        };
        if vtable_ptr.is_null() {
            return Err(broken(format!("{} returned null", abi::VTABLE_SYMBOL)));
        }
        // SAFETY: non-null, and per the ABI a table that lives as long as the
        // library; copied out so nothing keeps pointing into it.
        let vtable: PluginVTable = unsafe { vtable_ptr.read() };
        if vtable.abi_version != found {
            return Err(broken(format!(
                "the table says ABI version {}, {} said {found}",
                vtable.abi_version,
                abi::ABI_VERSION_SYMBOL
            )));
        }
        let (Some(create), Some(destroy)) = (vtable.create, vtable.destroy) else {
            return Err(broken("no create or destroy function".into()));
        };
        // SAFETY: the table's strings are 'static in the library, which is loaded.
        let (plugin_name, plugin_version) = unsafe { (lossy(vtable.name), lossy(vtable.version)) };

        let mut collector = Collector::new(Hook::Create);
        let mut instance: *mut c_void = std::ptr::null_mut();
        let sink = collector.sink();
        // SAFETY: `create` per the ABI: our sink (alive for the call) and a
        // writable out-pointer.
        let status = unsafe { create(&sink, &mut instance) };
        if let Err(e) = collector.outcome(status) {
            return Err(PluginError::Create {
                file,
                reason: e.to_string(),
            });
        }
        if instance.is_null() {
            return Err(PluginError::Create {
                file,
                reason: "it returned no instance".into(),
            });
        }

        Ok(PluginPolicy {
            name: path.display().to_string(),
            path: file,
            plugin_name,
            plugin_version,
            hooks: Hooks {
                call_start: vtable.call_start,
                refresh_due: vtable.refresh_due,
                refresh_failed: vtable.refresh_failed,
                keepalive_tick: vtable.keepalive_tick,
                hangup: vtable.hangup,
                media_timeout: vtable.media_timeout,
                route: vtable.route,
            },
            destroy,
            instance,
            _library: ManuallyDrop::new(library),
        })
    }

    /// The path as configured.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name the plugin gives itself (its crate name for Rust plugins).
    pub fn plugin_name(&self) -> &str {
        &self.plugin_name
    }

    /// The version the plugin gives itself.
    pub fn plugin_version(&self) -> &str {
        &self.plugin_version
    }

    fn instance(&self) -> *const c_void {
        self.instance.cast_const()
    }
}

impl Drop for PluginPolicy {
    fn drop(&mut self) {
        // SAFETY: the instance came from this plugin's `create` and is
        // destroyed once; `&mut self` means no hook is running. The library
        // stays loaded (it is never unloaded).
        unsafe { (self.destroy)(self.instance) };
    }
}

/// A private copy of a plugin file, removed when dropped (once opened, the
/// mapping no longer needs the file). It lives in a fresh directory that only
/// this process's user can enter, created here (never one that already
/// existed), so nobody can swap the file between the copy and the open.
struct PrivateImage {
    path: PathBuf,
}

impl PrivateImage {
    fn copy(source: &Path) -> std::io::Result<PrivateImage> {
        let dir = std::env::temp_dir().join(format!(
            "vigil-plugin-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        create_private_dir(&dir)?;
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin.so".into());
        let image = PrivateImage {
            path: dir.join(name),
        };
        std::fs::copy(source, &image.path)?;
        Ok(image)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dir)
}

/// Opens with every symbol resolved now, so a plugin missing a dependency fails
/// at start-up rather than on its first call; locally, so two plugins cannot
/// see each other's symbols.
#[cfg(unix)]
fn open(path: &Path) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers. The operator named this
    // file as a Vigil plugin; trusting its code is what configuring it means.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Into::into)
}

#[cfg(not(unix))]
fn open(path: &Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: as above: the operator named this file as a Vigil plugin.
    unsafe { libloading::Library::new(path) }
}

/// Looks up a function symbol, copied out as a plain function pointer (valid as
/// long as `library` stays loaded, which the caller ensures).
fn symbol<T: Copy>(
    library: &libloading::Library,
    name: &'static str,
    file: &Path,
) -> Result<T, PluginError> {
    // SAFETY: `T` is the function type the ABI gives this symbol; whether the
    // plugin honours it is checked through the version symbol first.
    let found = unsafe { library.get::<T>(name.as_bytes()) };
    found.map(|s| *s).map_err(|e| PluginError::MissingSymbol {
        file: file.to_path_buf(),
        symbol: name,
        message: e.to_string(),
    })
}

/// A plugin's string for logs, whatever its bytes.
///
/// # Safety
/// `s` must be valid while this runs.
unsafe fn lossy(s: RawStr) -> String {
    // SAFETY: forwarded.
    let bytes = unsafe { s.as_bytes() }.unwrap_or_default();
    String::from_utf8_lossy(bytes).into_owned()
}

impl PolicySource for PluginPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> super::PolicyBackend {
        super::PolicyBackend::Plugin
    }

    fn call_start(&self, view: &CallStartView<'_>) -> Result<Option<CallStartDecision>, HookError> {
        let Some(hook) = self.hooks.call_start else {
            return Ok(None);
        };
        let raw_view = raw_call_start(view);
        let mut collector = Collector::new(Hook::CallStart);
        let mut out = RawCallStartDecision::default();
        let sink = collector.sink();
        // SAFETY: the instance is live (`&self`); the view, sink and out-pointer
        // are valid for the call, and the collector is untouched until it returns.
        let status = unsafe { hook(self.instance(), &raw_view, &sink, &mut out) };
        collector.outcome(status)?;
        call_start_decision(out, collector.reason)
    }

    fn refresh_due(&self, view: &LegView<'_>) -> Result<Option<RefreshDecision>, HookError> {
        let Some(hook) = self.hooks.refresh_due else {
            return Ok(None);
        };
        let raw_view = raw_leg(view);
        let mut collector = Collector::new(Hook::RefreshDue);
        let mut out = RawRefreshDecision::default();
        let sink = collector.sink();
        // SAFETY: as in `call_start`.
        let status = unsafe { hook(self.instance(), &raw_view, &sink, &mut out) };
        collector.outcome(status)?;
        refresh_decision(out)
    }

    fn refresh_failed(
        &self,
        view: &LegView<'_>,
        failure: RefreshFailure,
    ) -> Result<Option<FailureDecision>, HookError> {
        let Some(hook) = self.hooks.refresh_failed else {
            return Ok(None);
        };
        let raw_view = raw_leg(view);
        let raw_failure = raw_failure(failure);
        let mut collector = Collector::new(Hook::RefreshFailed);
        let mut out = RawFailureDecision::default();
        let sink = collector.sink();
        // SAFETY: as in `call_start`; the failure is valid for the call too.
        let status = unsafe { hook(self.instance(), &raw_view, &raw_failure, &sink, &mut out) };
        collector.outcome(status)?;
        failure_decision(out)
    }

    fn keepalive_tick(
        &self,
        view: &ContactView<'_>,
    ) -> Result<Option<KeepaliveDecision>, HookError> {
        let Some(hook) = self.hooks.keepalive_tick else {
            return Ok(None);
        };
        let raw_view = raw_contact(view);
        let mut collector = Collector::new(Hook::KeepaliveTick);
        let mut out = RawKeepaliveDecision::default();
        let sink = collector.sink();
        // SAFETY: as in `call_start`.
        let status = unsafe { hook(self.instance(), &raw_view, &sink, &mut out) };
        collector.outcome(status)?;
        keepalive_decision(out, collector.payload)
    }

    /// Fields reach `extra` only if the whole hook succeeds: a plugin that
    /// panics or sends a bad field halfway leaves `extra` as it was.
    fn hangup(&self, view: &CallView<'_>, extra: &mut ExtraFields) -> Result<(), HookError> {
        let Some(hook) = self.hooks.hangup else {
            return Ok(());
        };
        let raw_view = raw_call(view);
        let before = extra.len();
        let outcome = {
            let mut collector = Collector::new(Hook::Hangup);
            collector.extra = Some(&mut *extra);
            let sink = collector.sink();
            // SAFETY: as in `call_start`.
            let status = unsafe { hook(self.instance(), &raw_view, &sink) };
            collector.outcome(status)
        };
        if outcome.is_err() {
            extra.truncate(before);
        }
        outcome
    }

    fn media_timeout(
        &self,
        view: &MediaTimeoutView<'_>,
    ) -> Result<Option<MediaTimeoutDecision>, HookError> {
        let Some(hook) = self.hooks.media_timeout else {
            return Ok(None);
        };
        let raw_view = raw_media_timeout(view);
        let mut collector = Collector::new(Hook::MediaTimeout);
        let mut out = RawMediaTimeoutDecision::default();
        let sink = collector.sink();
        // SAFETY: as in `call_start`.
        let status = unsafe { hook(self.instance(), &raw_view, &sink, &mut out) };
        collector.outcome(status)?;
        media_timeout_decision(out)
    }

    fn route(&self, view: &RouteView<'_>) -> Result<Option<RouteDecision>, HookError> {
        let Some(hook) = self.hooks.route else {
            return Ok(None);
        };
        let headers = raw_headers(view);
        let raw_view = raw_route(view, &headers);
        let mut collector = Collector::new(Hook::Route);
        let mut out = RawRouteDecision::default();
        let sink = collector.sink();
        // SAFETY: as in `call_start`; the headers the view points to live
        // until the end of this function.
        let status = unsafe { hook(self.instance(), &raw_view, &sink, &mut out) };
        collector.outcome(status)?;
        route_decision(out, std::mem::take(&mut collector.route), collector.reason)
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
#[path = "../../../tests/support/plugin_build.rs"]
mod plugin_build;

/// Builds a plugin crate of this workspace (an example or a fixture under
/// plugins/) and returns the path of its shared library. The first call builds
/// every plugin crate the tests use in one cargo run; a crate built once is
/// not built again by the same process.
#[cfg(test)]
pub(crate) fn build_fixture(crate_name: &str) -> PathBuf {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, PoisonError};

    /// The crates the tests load, built together on first use.
    const KNOWN: [&str; 5] = [
        "vigil-plugin-example",
        "vigil-plugin-fixture-old-abi",
        "vigil-plugin-fixture-no-vtable",
        "vigil-plugin-fixture-panicking",
        "vigil-plugin-fixture-bad-decisions",
    ];
    /// Libraries already built by this test process.
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = built.get(crate_name) {
        return path.clone();
    }
    let mut crates: Vec<&str> = vec![crate_name];
    if built.is_empty() {
        crates.extend(KNOWN.iter().filter(|k| **k != crate_name));
    }
    let paths = plugin_build::build_plugin_libraries(&crates);
    for (name, path) in crates.iter().zip(&paths) {
        built.insert((*name).to_owned(), path.clone());
    }
    paths[0].clone()
}

#[cfg(test)]
mod tests;

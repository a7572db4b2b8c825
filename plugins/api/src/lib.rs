//! The contract between Vigil and a vendor plugin: a shared library (`cdylib`)
//! that Vigil loads at start-up and asks at its decision points — a call
//! starts, a session refresh is due, a refresh failed, a NAT keep-alive is due,
//! the call hangs up, a relayed call's media went silent, a new call is to be
//! routed.
//!
//! Two layers:
//! - [`abi`]: the stable C ABI. `#[repr(C)]` views and decisions made of fixed
//!   width integers and pointer + length strings, hook function types returning
//!   an `i32` status, a host callback table ([`abi::HostSink`]) and the
//!   [`abi::PluginVTable`]. A plugin may be written against it in any language.
//! - The safe Rust side: implement [`Plugin`] (every method defaults to "no
//!   decision") and call [`declare_plugin!`] once; the macro exports the two
//!   symbols and the `extern "C"` shims. Its views and decisions
//!   ([`LegView`], [`RefreshDecision`], …) are the ones Vigil's core decides
//!   with for every kind of policy (built in, Lua, plugin): one definition, so
//!   what a plugin sees is what the core means.
//!
//! # Features
//!
//! - `serde` (off): `Deserialize` for [`RefreshMethod`] (`auto`, `update`,
//!   `reinvite`), which Vigil's config reads. A plugin does not need it.
//!
//! # Versioning
//!
//! [`VIGIL_PLUGIN_ABI_VERSION`] names the layout of everything in [`abi`]. Any
//! change to it — a field added, removed, retyped or moved, a constant
//! renumbered, a hook's signature changed — bumps the version; there are no
//! "compatible" additions. Vigil calls `vigil_plugin_abi_version` before it
//! touches anything else and refuses a plugin whose version differs from its
//! own, naming both, so an old plugin fails at start-up instead of misreading a
//! struct mid-call. Rebuild plugins against the `vigil-plugin-api` of the Vigil
//! release you run.
//!
//! # Symbols
//!
//! - `vigil_plugin_abi_version: extern "C" fn() -> u32` — looked up and called first.
//! - `vigil_plugin_vtable: extern "C" fn() -> *const PluginVTable` — a table that
//!   lives as long as the library: ABI version (again), name, version, `create`,
//!   `destroy` and one nullable function per hook (null = never decides).
//!
//! # Safety contract
//!
//! - **Borrowing.** Every view and string Vigil passes is valid for the hook
//!   call only; copy what you keep. Vigil's strings are UTF-8.
//! - **Allocation.** Neither side frees the other's memory. What a hook produces
//!   beyond its fixed-size decision (a reject reason, a keep-alive payload, CDR
//!   fields, a route's trunks and numbers, a panic message) goes through the
//!   [`abi::HostSink`] callbacks, which copy it before returning. Call them
//!   during the hook call only, on the calling thread.
//! - **Decisions.** Vigil zeroes the decision ("no decision") before each call
//!   and validates what comes back: an unknown discriminant, a reject status
//!   outside 400..=699, a missing or non-UTF-8 reason, a missing payload, a
//!   route with no trunk or more than [`MAX_ROUTE_TRUNKS`], or a trunk name or
//!   number that is empty or not plain are rejected as invalid decisions, and
//!   the next policy source decides.
//! - **Status.** Every hook returns 0 (ok) or a negative status:
//!   [`abi::STATUS_ERROR`], [`abi::STATUS_PANICKED`],
//!   [`abi::STATUS_INVALID_ARGUMENT`], or the plugin's own codes at or below
//!   [`abi::STATUS_FIRST_PLUGIN_CODE`].
//! - **Threads.** One instance serves all of Vigil's workers at once, so hooks
//!   run concurrently on several threads: the instance must be thread-safe
//!   ([`Plugin`] requires `Send + Sync`). `create` runs once before any hook,
//!   `destroy` once after the last; the library is unloaded after `destroy`.
//! - **Panics.** Nothing may unwind across the boundary. The shims of
//!   [`declare_plugin!`] catch every panic with `catch_unwind`, report its
//!   message through the sink and return [`abi::STATUS_PANICKED`]. That needs
//!   the plugin built with `panic = "unwind"` (Cargo's default): with
//!   `panic = "abort"` a panic would take Vigil down, so `declare_plugin!`
//!   refuses to compile under it. A hand-written plugin must catch its own
//!   panics or exceptions the same way.
//!
//! # Example
//!
//! A carrier whose gateways answer UPDATE with 501: always refresh with
//! re-INVITE, and tag the CDR.
//!
//! ```
//! use vigil_plugin_api::{
//!     declare_plugin, CallView, CdrFields, HookFailure, HookResult, LegView, Plugin,
//!     RefreshDecision,
//! };
//!
//! struct NoUpdate;
//!
//! impl Plugin for NoUpdate {
//!     fn refresh_due(&self, _leg: &LegView<'_>) -> HookResult<RefreshDecision> {
//!         Ok(Some(RefreshDecision::Reinvite))
//!     }
//!
//!     fn hangup(&self, _call: &CallView<'_>, extra: &mut CdrFields<'_>) -> Result<(), HookFailure> {
//!         extra.add("refresh_method", "reinvite");
//!         Ok(())
//!     }
//! }
//!
//! declare_plugin!(NoUpdate, NoUpdate);
//! # fn main() {}
//! ```
//!
//! Build it as a `cdylib` (`[lib] crate-type = ["cdylib"]`) and point a trunk's
//! `policy.plugin` at the `.so`.

// This crate is the FFI boundary: raw pointers from the host, `extern "C"`
// shims and exported symbols cannot be written without `unsafe`. Every unsafe
// block carries a `// SAFETY:` comment; the safe API it offers has none.
#![allow(unsafe_code)]

pub mod abi;
mod plugin;
mod shim;

pub use plugin::{
    CallOverrides, CallStartDecision, CallStartView, CallView, CdrFields, ContactView,
    FailureDecision, HeaderView, HookFailure, HookResult, KeepaliveDecision, Leg, LegView,
    MAX_ROUTE_TRUNKS, MediaDirection, MediaTimeoutDecision, MediaTimeoutView, Plugin,
    ROUTE_HEADERS, RefreshDecision, RefreshFailure, RefreshMethod, Refresher, RouteDecision,
    RouteView,
};

/// The ABI version this crate speaks. Any change to a layout or a signature in
/// [`abi`] bumps it (see the crate docs).
///
/// - 1: the first: `call_start`, `refresh_due`, `refresh_failed`,
///   `keepalive_tick`, `hangup`.
/// - 2: the `media_timeout` hook (a function added at the end of
///   [`abi::PluginVTable`], [`abi::RawMediaTimeoutView`],
///   [`abi::RawMediaTimeoutDecision`]).
/// - 3: the `route` hook (a function added at the end of
///   [`abi::PluginVTable`], [`abi::RawRouteView`], [`abi::RawHeader`],
///   [`abi::RawRouteDecision`], and [`abi::HostSink`] grew `add_trunk`,
///   `set_callee` and `set_caller`).
pub const VIGIL_PLUGIN_ABI_VERSION: u32 = 3;

/// For `declare_plugin!` only; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::shim::{create, vtable};
}

/// Exports a [`Plugin`] type as a Vigil plugin: `declare_plugin!(MyPlugin,
/// MyPlugin::new())`. The expression is evaluated once, when Vigil loads the
/// library (a panic in it fails the load with its message). The plugin's name
/// and version in Vigil's logs are the crate's `CARGO_PKG_NAME` and
/// `CARGO_PKG_VERSION`.
///
/// Use it once per library. It generates `vigil_plugin_abi_version`,
/// `vigil_plugin_vtable` and the shims, which catch panics, so the library must
/// be built with `panic = "unwind"`; under `panic = "abort"` this macro does not
/// compile.
#[macro_export]
macro_rules! declare_plugin {
    ($plugin:ty, $constructor:expr $(,)?) => {
        #[cfg(panic = "abort")]
        ::core::compile_error!(
            "vigil plugins must be built with panic = \"unwind\": a panic would otherwise abort Vigil"
        );

        #[doc(hidden)]
        fn __vigil_construct() -> $plugin {
            $constructor
        }

        #[doc(hidden)]
        #[allow(unsafe_code)]
        unsafe extern "C" fn __vigil_create(
            sink: *const $crate::abi::HostSink,
            out: *mut *mut ::core::ffi::c_void,
        ) -> i32 {
            // SAFETY: Vigil calls `create` with its sink and a writable
            // out-pointer, as `shim::create` requires.
            unsafe { $crate::__private::create::<$plugin>(__vigil_construct, sink, out) }
        }

        #[doc(hidden)]
        static __VIGIL_VTABLE: $crate::abi::PluginVTable = $crate::__private::vtable::<$plugin>(
            ::core::env!("CARGO_PKG_NAME"),
            ::core::env!("CARGO_PKG_VERSION"),
            __vigil_create,
        );

        /// The ABI version this plugin was built for; Vigil checks it first.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn vigil_plugin_abi_version() -> u32 {
            $crate::VIGIL_PLUGIN_ABI_VERSION
        }

        /// The plugin's function table.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn vigil_plugin_vtable() -> *const $crate::abi::PluginVTable {
            &__VIGIL_VTABLE
        }
    };
}

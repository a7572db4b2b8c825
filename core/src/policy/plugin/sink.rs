//! The host's side of [`HostSink`]: what a plugin sends besides its fixed-size
//! decision (a reject reason, a keep-alive payload, CDR fields, a route's
//! trunks and numbers, a panic message) is copied into a per-call
//! [`Collector`], which allocates only when the plugin sends something.

use std::ffi::c_void;
use std::fmt;

use vigil_plugin_api::abi::{self, HostSink, RawBytes, RawStr};

use crate::policy::{ExtraFields, HookError, MAX_ROUTE_TRUNKS};

/// Which call a [`Collector`] serves: each takes only its own kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    Create,
    CallStart,
    RefreshDue,
    RefreshFailed,
    KeepaliveTick,
    Hangup,
    MediaTimeout,
    Route,
}

impl Hook {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Hook::Create => "create",
            Hook::CallStart => "call_start",
            Hook::RefreshDue => "refresh_due",
            Hook::RefreshFailed => "refresh_failed",
            Hook::KeepaliveTick => "keepalive_tick",
            Hook::Hangup => "hangup",
            Hook::MediaTimeout => "media_timeout",
            Hook::Route => "route",
        }
    }
}

/// What a route hook sent through the sink.
#[derive(Debug, Default)]
pub(super) struct RouteParts {
    pub(super) trunks: Vec<String>,
    pub(super) callee: Option<String>,
    pub(super) caller: Option<String>,
}

/// The longest panic message kept: a plugin must not flood the log.
const PANIC_MESSAGE_MAX: usize = 1024;

/// Collects one hook call's sink calls; a `HostSink`'s `ctx` points to it.
/// Nothing is allocated unless the plugin sends something.
pub(super) struct Collector<'e> {
    hook: Hook,
    pub(super) reason: Option<String>,
    pub(super) payload: Option<Vec<u8>>,
    /// Hang-up only: where CDR fields go.
    pub(super) extra: Option<&'e mut ExtraFields>,
    /// Route only: the trunks in the order given (at most
    /// [`MAX_ROUTE_TRUNKS`]: a plugin cannot make Vigil copy without bound)
    /// and the B leg's numbers.
    pub(super) route: RouteParts,
    panic: Option<String>,
    /// The first thing the plugin sent that Vigil cannot take.
    refused: Option<&'static str>,
}

impl<'e> Collector<'e> {
    pub(super) fn new(hook: Hook) -> Collector<'e> {
        Collector {
            hook,
            reason: None,
            payload: None,
            extra: None,
            route: RouteParts::default(),
            panic: None,
            refused: None,
        }
    }

    /// The sink for one call. Valid while `self` is neither moved nor used:
    /// the caller hands it to the plugin, and reads `self` only once the plugin
    /// has returned.
    pub(super) fn sink(&mut self) -> HostSink {
        HostSink {
            ctx: std::ptr::from_mut(self).cast(),
            set_reason: sink_set_reason,
            set_payload: sink_set_payload,
            add_field: sink_add_field,
            report_panic: sink_report_panic,
            add_trunk: sink_add_trunk,
            set_callee: sink_set_callee,
            set_caller: sink_set_caller,
        }
    }

    fn refuse(&mut self, problem: &'static str) {
        self.refused.get_or_insert(problem);
    }

    /// The hook's status and what the sink saw, as the hook's outcome.
    pub(super) fn outcome(&mut self, status: i32) -> Result<(), HookError> {
        match status {
            abi::STATUS_OK => match self.refused {
                None => Ok(()),
                Some(problem) => Err(invalid(self.hook, problem)),
            },
            abi::STATUS_PANICKED => Err(HookError::Panic(
                self.panic
                    .take()
                    .unwrap_or_else(|| "(no message)".to_owned()),
            )),
            other => Err(HookError::PluginStatus(other)),
        }
    }
}

pub(super) fn invalid(hook: Hook, problem: impl fmt::Display) -> HookError {
    HookError::InvalidDecision(format!("{}: {problem}", hook.as_str()))
}

/// # Safety
/// `ctx` is the `Collector` whose `sink()` the plugin was given, during the
/// hook call it was given for.
unsafe fn collector<'a>(ctx: *mut c_void) -> &'a mut Collector<'a> {
    // SAFETY: forwarded; the collector is not otherwise used during the call.
    unsafe { &mut *ctx.cast::<Collector<'a>>() }
}

unsafe extern "C" fn sink_set_reason(ctx: *mut c_void, value: RawStr) {
    // SAFETY: the plugin calls back with our ctx during the hook call.
    let c = unsafe { collector(ctx) };
    if !matches!(c.hook, Hook::CallStart | Hook::Route) {
        return c.refuse("a reason phrase outside call_start and route");
    }
    // SAFETY: the plugin's string is valid during the callback.
    match unsafe { value.to_str() } {
        Some(reason) => c.reason = Some(reason.to_owned()),
        None => c.refuse("the reason phrase is not UTF-8"),
    }
}

unsafe extern "C" fn sink_set_payload(ctx: *mut c_void, value: RawBytes) {
    // SAFETY: the plugin calls back with our ctx during the hook call.
    let c = unsafe { collector(ctx) };
    if c.hook != Hook::KeepaliveTick {
        return c.refuse("a keep-alive payload outside keepalive_tick");
    }
    // SAFETY: the plugin's bytes are valid during the callback.
    match unsafe { value.as_slice() } {
        Some(bytes) => c.payload = Some(bytes.to_vec()),
        None => c.refuse("a malformed payload (null with a length)"),
    }
}

unsafe extern "C" fn sink_add_field(ctx: *mut c_void, key: RawStr, value: RawStr) {
    // SAFETY: the plugin calls back with our ctx during the hook call.
    let c = unsafe { collector(ctx) };
    // SAFETY: the plugin's strings are valid during the callback.
    let (key, value) = unsafe { (key.to_str(), value.to_str()) };
    let Some(extra) = c.extra.as_deref_mut() else {
        return c.refuse("a CDR field outside hangup");
    };
    match (key, value) {
        (Some(""), _) => c.refuse("a CDR field with an empty key"),
        (Some(key), Some(value)) => extra.push((key.to_owned(), value.to_owned())),
        _ => c.refuse("a CDR field that is not UTF-8"),
    }
}

/// A route's string, copied if this is a route call and it is UTF-8.
///
/// # Safety
/// As for the sink's callbacks: `ctx` is our collector, `value` valid during
/// the callback.
unsafe fn route_text<'a>(
    ctx: *mut c_void,
    value: RawStr,
    what: &'static str,
) -> Option<(&'a mut Collector<'a>, String)> {
    // SAFETY: forwarded.
    let c = unsafe { collector(ctx) };
    if c.hook != Hook::Route {
        c.refuse(what);
        return None;
    }
    // SAFETY: forwarded.
    match unsafe { value.to_str() } {
        Some(text) => Some((c, text.to_owned())),
        None => {
            c.refuse("a trunk name or number that is not UTF-8");
            None
        }
    }
}

unsafe extern "C" fn sink_add_trunk(ctx: *mut c_void, value: RawStr) {
    // SAFETY: the plugin calls back with our ctx during the hook call, with
    // its string valid during the callback.
    let Some((c, trunk)) = (unsafe { route_text(ctx, value, "a trunk outside route") }) else {
        return;
    };
    if c.route.trunks.len() == MAX_ROUTE_TRUNKS {
        return c.refuse("more trunks than MAX_ROUTE_TRUNKS (16)");
    }
    c.route.trunks.push(trunk);
}

unsafe extern "C" fn sink_set_callee(ctx: *mut c_void, value: RawStr) {
    // SAFETY: as in `sink_add_trunk`.
    if let Some((c, callee)) = unsafe { route_text(ctx, value, "a callee outside route") } {
        c.route.callee = Some(callee);
    }
}

unsafe extern "C" fn sink_set_caller(ctx: *mut c_void, value: RawStr) {
    // SAFETY: as in `sink_add_trunk`.
    if let Some((c, caller)) = unsafe { route_text(ctx, value, "a caller outside route") } {
        c.route.caller = Some(caller);
    }
}

unsafe extern "C" fn sink_report_panic(ctx: *mut c_void, value: RawStr) {
    // SAFETY: the plugin calls back with our ctx during the hook call.
    let c = unsafe { collector(ctx) };
    // SAFETY: the plugin's string is valid during the callback.
    let bytes = unsafe { value.as_bytes() }.unwrap_or_default();
    let kept = bytes.get(..PANIC_MESSAGE_MAX).unwrap_or(bytes);
    c.panic = Some(String::from_utf8_lossy(kept).into_owned());
}

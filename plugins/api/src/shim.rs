//! The `extern "C"` functions `declare_plugin!` puts in a plugin's vtable,
//! generic over the [`Plugin`] type: they read the host's raw views into safe
//! ones, call the plugin inside `catch_unwind`, and write its answer back as a
//! raw decision. Nothing unwinds out of them.
//!
//! Public only for the macro; not part of the API.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::abi::{self, *};
use crate::plugin::*;

/// The table `vigil_plugin_vtable` returns for plugin type `P`.
pub const fn vtable<P: Plugin>(
    name: &'static str,
    version: &'static str,
    create: CreateFn,
) -> PluginVTable {
    PluginVTable {
        abi_version: crate::VIGIL_PLUGIN_ABI_VERSION,
        name: RawStr::new(name),
        version: RawStr::new(version),
        create: Some(create),
        destroy: Some(destroy::<P>),
        call_start: Some(call_start::<P>),
        refresh_due: Some(refresh_due::<P>),
        refresh_failed: Some(refresh_failed::<P>),
        keepalive_tick: Some(keepalive_tick::<P>),
        hangup: Some(hangup::<P>),
        media_timeout: Some(media_timeout::<P>),
        route: Some(route::<P>),
    }
}

/// Runs `f`, turning a panic into [`STATUS_PANICKED`] (its message reported to
/// the sink) and an error into its status.
fn guard(sink: *const HostSink, f: impl FnOnce() -> Result<(), i32>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(status)) => status,
        Err(payload) => {
            // SAFETY: the host passes its sink for this call, or null.
            if let Some(sink) = unsafe { sink.as_ref() } {
                let message = panic_message(payload.as_ref());
                // SAFETY: the sink is the host's for this call; the message
                // outlives the callback.
                unsafe { (sink.report_panic)(sink.ctx, RawStr::new(message)) };
            }
            drop_payload(payload);
            STATUS_PANICKED
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "panic with a non-string payload"
    }
}

/// A payload whose `Drop` panics must not unwind out of the shim either.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// # Safety
/// `instance` is what `create` made for `P` and has not been destroyed.
unsafe fn instance<'a, P: Plugin>(instance: *const c_void) -> Result<&'a P, i32> {
    // SAFETY: per the contract above, a non-null instance is a live `Box<P>`.
    unsafe { instance.cast::<P>().as_ref() }.ok_or(STATUS_INVALID_ARGUMENT)
}

/// # Safety
/// `s` points to memory valid for the hook call.
unsafe fn text<'a>(s: RawStr) -> Result<&'a str, i32> {
    // SAFETY: forwarded.
    unsafe { s.to_str() }.ok_or(STATUS_INVALID_ARGUMENT)
}

/// # Safety
/// `view` points to a valid view for the hook call, or is null.
unsafe fn leg_view<'a>(view: *const RawLegView) -> Result<LegView<'a>, i32> {
    // SAFETY: forwarded.
    let v = unsafe { view.as_ref() }.ok_or(STATUS_INVALID_ARGUMENT)?;
    // SAFETY: the strings of a valid view are valid for the call.
    unsafe {
        Ok(LegView {
            call_id: text(v.call_id)?,
            b_call_id: text(v.b_call_id)?,
            trunk: text(v.trunk)?,
            caller: text(v.caller)?,
            callee: text(v.callee)?,
            leg: match v.leg {
                LEG_A => Leg::A,
                LEG_B => Leg::B,
                _ => return Err(STATUS_INVALID_ARGUMENT),
            },
            session_expires: v.session_expires,
            refresher: match v.refresher {
                REFRESHER_VIGIL => Refresher::Vigil,
                REFRESHER_PEER => Refresher::Peer,
                _ => return Err(STATUS_INVALID_ARGUMENT),
            },
            refresh_count: v.refresh_count,
            since_answer: Duration::from_millis(v.since_answer_ms),
        })
    }
}

/// Makes the instance with `construct`.
///
/// # Safety
/// `sink` is the host's sink or null; `out` is writable or null.
pub unsafe fn create<P: Plugin>(
    construct: fn() -> P,
    sink: *const HostSink,
    out: *mut *mut c_void,
) -> i32 {
    if out.is_null() {
        return STATUS_INVALID_ARGUMENT;
    }
    guard(sink, || {
        let instance = Box::into_raw(Box::new(construct()));
        // SAFETY: `out` is non-null and writable (contract above).
        unsafe { out.write(instance.cast::<c_void>()) };
        Ok(())
    })
}

/// # Safety
/// `instance` is what `create` made for `P`, destroyed once, with no hook
/// running.
unsafe extern "C" fn destroy<P: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A panic in the plugin's Drop is swallowed: there is no one left to tell.
    let _ = guard(std::ptr::null(), || {
        // SAFETY: per the contract, this is the `Box<P>` `create` leaked.
        drop(unsafe { Box::from_raw(instance.cast::<P>()) });
        Ok(())
    });
}

/// # Safety
/// The arguments follow [`CallStartFn`]'s contract (crate docs).
unsafe extern "C" fn call_start<P: Plugin>(
    instance_ptr: *const c_void,
    view: *const RawCallStartView,
    sink: *const HostSink,
    out: *mut RawCallStartDecision,
) -> i32 {
    // SAFETY: the host's pointers are valid for this call, or null.
    let (Some(sink_ref), false) = (unsafe { sink.as_ref() }, out.is_null()) else {
        return STATUS_INVALID_ARGUMENT;
    };
    guard(sink, || {
        // SAFETY: see the function's contract.
        let (plugin, v) = unsafe {
            (
                instance::<P>(instance_ptr)?,
                view.as_ref().ok_or(STATUS_INVALID_ARGUMENT)?,
            )
        };
        // SAFETY: the view's strings are valid for this call.
        let call = unsafe {
            CallStartView {
                call_id: text(v.call_id)?,
                trunk_in: text(v.trunk_in)?,
                trunk_out: text(v.trunk_out)?,
                caller: text(v.caller)?,
                callee: text(v.callee)?,
                source: text(v.source)?,
            }
        };
        let mut raw = RawCallStartDecision::default();
        match plugin.call_start(&call).map_err(HookFailure::status)? {
            None => {}
            Some(CallStartDecision::Accept(o)) => {
                raw.kind = CALL_START_ACCEPT;
                raw.has_ttl = o.ttl.is_some().into();
                raw.ttl = o.ttl.unwrap_or(0);
                raw.has_update_segment = o.update_segment.is_some().into();
                raw.update_segment = o.update_segment.unwrap_or(0);
                raw.has_no_timer_max_duration = o.no_timer_max_duration.is_some().into();
                raw.no_timer_max_duration = o.no_timer_max_duration.unwrap_or(0);
                raw.refresh_method = match o.refresh_method {
                    None => METHOD_UNSET,
                    Some(RefreshMethod::Auto) => METHOD_AUTO,
                    Some(RefreshMethod::Update) => METHOD_UPDATE,
                    Some(RefreshMethod::Reinvite) => METHOD_REINVITE,
                };
            }
            Some(CallStartDecision::Reject { status, reason }) => {
                raw.kind = CALL_START_REJECT;
                raw.reject_status = status;
                // SAFETY: the sink is the host's for this call; `reason`
                // outlives the callback.
                unsafe { (sink_ref.set_reason)(sink_ref.ctx, RawStr::new(&reason)) };
            }
        }
        // SAFETY: `out` is non-null and the host's for this call.
        unsafe { out.write(raw) };
        Ok(())
    })
}

/// # Safety
/// The arguments follow [`RefreshDueFn`]'s contract (crate docs).
unsafe extern "C" fn refresh_due<P: Plugin>(
    instance_ptr: *const c_void,
    view: *const RawLegView,
    sink: *const HostSink,
    out: *mut RawRefreshDecision,
) -> i32 {
    if out.is_null() {
        return STATUS_INVALID_ARGUMENT;
    }
    guard(sink, || {
        // SAFETY: see the function's contract.
        let (plugin, leg) = unsafe { (instance::<P>(instance_ptr)?, leg_view(view)?) };
        let kind = match plugin.refresh_due(&leg).map_err(HookFailure::status)? {
            None => REFRESH_NONE,
            Some(RefreshDecision::Default) => REFRESH_DEFAULT,
            Some(RefreshDecision::Update) => REFRESH_UPDATE,
            Some(RefreshDecision::Reinvite) => REFRESH_REINVITE,
            Some(RefreshDecision::Skip) => REFRESH_SKIP,
            Some(RefreshDecision::Hangup) => REFRESH_HANGUP,
        };
        // SAFETY: `out` is non-null and the host's for this call.
        unsafe { out.write(RawRefreshDecision { kind }) };
        Ok(())
    })
}

/// # Safety
/// The arguments follow [`RefreshFailedFn`]'s contract (crate docs).
unsafe extern "C" fn refresh_failed<P: Plugin>(
    instance_ptr: *const c_void,
    view: *const RawLegView,
    failure: *const RawRefreshFailure,
    sink: *const HostSink,
    out: *mut RawFailureDecision,
) -> i32 {
    if out.is_null() {
        return STATUS_INVALID_ARGUMENT;
    }
    guard(sink, || {
        // SAFETY: see the function's contract.
        let (plugin, leg, f) = unsafe {
            (
                instance::<P>(instance_ptr)?,
                leg_view(view)?,
                failure.as_ref().ok_or(STATUS_INVALID_ARGUMENT)?,
            )
        };
        let failure = match f.kind {
            abi::FAILURE_TIMEOUT => RefreshFailure::Timeout,
            abi::FAILURE_STATUS => RefreshFailure::Status(f.status),
            abi::FAILURE_EXPIRED => RefreshFailure::Expired,
            abi::FAILURE_POLICY => RefreshFailure::Policy,
            _ => return Err(STATUS_INVALID_ARGUMENT),
        };
        let raw = match plugin
            .refresh_failed(&leg, failure)
            .map_err(HookFailure::status)?
        {
            None => RawFailureDecision::default(),
            Some(FailureDecision::Hangup) => RawFailureDecision {
                kind: FAILURE_DECISION_HANGUP,
                retry_after_ms: 0,
            },
            Some(FailureDecision::Retry(after)) => RawFailureDecision {
                kind: FAILURE_DECISION_RETRY,
                retry_after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            },
            Some(FailureDecision::Ignore) => RawFailureDecision {
                kind: FAILURE_DECISION_IGNORE,
                retry_after_ms: 0,
            },
        };
        // SAFETY: `out` is non-null and the host's for this call.
        unsafe { out.write(raw) };
        Ok(())
    })
}

/// # Safety
/// The arguments follow [`KeepaliveTickFn`]'s contract (crate docs).
unsafe extern "C" fn keepalive_tick<P: Plugin>(
    instance_ptr: *const c_void,
    view: *const RawContactView,
    sink: *const HostSink,
    out: *mut RawKeepaliveDecision,
) -> i32 {
    // SAFETY: the host's pointers are valid for this call, or null.
    let (Some(sink_ref), false) = (unsafe { sink.as_ref() }, out.is_null()) else {
        return STATUS_INVALID_ARGUMENT;
    };
    guard(sink, || {
        // SAFETY: see the function's contract.
        let (plugin, v) = unsafe {
            (
                instance::<P>(instance_ptr)?,
                view.as_ref().ok_or(STATUS_INVALID_ARGUMENT)?,
            )
        };
        // SAFETY: the view's strings are valid for this call.
        let contact = unsafe {
            ContactView {
                user: text(v.user)?,
                contact: text(v.contact)?,
                received: text(v.received)?,
                sent: v.sent,
            }
        };
        let kind = match plugin
            .keepalive_tick(&contact)
            .map_err(HookFailure::status)?
        {
            None => KEEPALIVE_NONE,
            Some(KeepaliveDecision::Default) => KEEPALIVE_DEFAULT,
            Some(KeepaliveDecision::Skip) => KEEPALIVE_SKIP,
            Some(KeepaliveDecision::Payload(bytes)) => {
                // SAFETY: the sink is the host's for this call; `bytes`
                // outlives the callback.
                unsafe { (sink_ref.set_payload)(sink_ref.ctx, RawBytes::new(&bytes)) };
                KEEPALIVE_PAYLOAD
            }
        };
        // SAFETY: `out` is non-null and the host's for this call.
        unsafe { out.write(RawKeepaliveDecision { kind }) };
        Ok(())
    })
}

/// # Safety
/// The arguments follow [`HangupFn`]'s contract (crate docs).
unsafe extern "C" fn hangup<P: Plugin>(
    instance_ptr: *const c_void,
    view: *const RawCallView,
    sink: *const HostSink,
) -> i32 {
    // SAFETY: the host's sink is valid for this call, or null.
    let Some(sink_ref) = (unsafe { sink.as_ref() }) else {
        return STATUS_INVALID_ARGUMENT;
    };
    guard(sink, || {
        // SAFETY: see the function's contract.
        let (plugin, v) = unsafe {
            (
                instance::<P>(instance_ptr)?,
                view.as_ref().ok_or(STATUS_INVALID_ARGUMENT)?,
            )
        };
        // SAFETY: the view's strings are valid for this call.
        let call = unsafe {
            CallView {
                call_id: text(v.call_id)?,
                b_call_id: text(v.b_call_id)?,
                trunk_in: text(v.trunk_in)?,
                trunk_out: text(v.trunk_out)?,
                caller: text(v.caller)?,
                callee: text(v.callee)?,
                end_reason: text(v.end_reason)?,
                since_answer: (v.answered != 0).then(|| Duration::from_millis(v.since_answer_ms)),
            }
        };
        // SAFETY: the sink is the host's for this running call.
        let mut extra = unsafe { CdrFields::new(sink_ref) };
        plugin
            .hangup(&call, &mut extra)
            .map_err(HookFailure::status)
    })
}

/// # Safety
/// The arguments follow [`MediaTimeoutFn`]'s contract (crate docs).
unsafe extern "C" fn media_timeout<P: Plugin>(
    instance_ptr: *const c_void,
    view: *const RawMediaTimeoutView,
    sink: *const HostSink,
    out: *mut RawMediaTimeoutDecision,
) -> i32 {
    if out.is_null() {
        return STATUS_INVALID_ARGUMENT;
    }
    guard(sink, || {
        // SAFETY: see the function's contract.
        let (plugin, v) = unsafe {
            (
                instance::<P>(instance_ptr)?,
                view.as_ref().ok_or(STATUS_INVALID_ARGUMENT)?,
            )
        };
        let direction = match v.direction {
            MEDIA_CALLER_TO_CALLEE => MediaDirection::CallerToCallee,
            MEDIA_CALLEE_TO_CALLER => MediaDirection::CalleeToCaller,
            MEDIA_BOTH => MediaDirection::Both,
            _ => return Err(STATUS_INVALID_ARGUMENT),
        };
        // SAFETY: the view's strings are valid for this call.
        let call = unsafe {
            MediaTimeoutView {
                call_id: text(v.call_id)?,
                b_call_id: text(v.b_call_id)?,
                trunk: text(v.trunk)?,
                caller: text(v.caller)?,
                callee: text(v.callee)?,
                direction,
                silent_for: Duration::from_millis(v.silent_for_ms),
                on_hold: v.on_hold != 0,
                since_answer: Duration::from_millis(v.since_answer_ms),
            }
        };
        let kind = match plugin.media_timeout(&call).map_err(HookFailure::status)? {
            None => MEDIA_TIMEOUT_NONE,
            Some(MediaTimeoutDecision::Hangup) => MEDIA_TIMEOUT_HANGUP,
            Some(MediaTimeoutDecision::Ignore) => MEDIA_TIMEOUT_IGNORE,
        };
        // SAFETY: `out` is non-null and the host's for this call.
        unsafe { out.write(RawMediaTimeoutDecision { kind }) };
        Ok(())
    })
}

/// # Safety
/// The arguments follow [`RouteFn`]'s contract (crate docs).
unsafe extern "C" fn route<P: Plugin>(
    instance_ptr: *const c_void,
    view: *const RawRouteView,
    sink: *const HostSink,
    out: *mut RawRouteDecision,
) -> i32 {
    // SAFETY: the host's pointers are valid for this call, or null.
    let (Some(sink_ref), false) = (unsafe { sink.as_ref() }, out.is_null()) else {
        return STATUS_INVALID_ARGUMENT;
    };
    guard(sink, || {
        // SAFETY: see the function's contract.
        let (plugin, v) = unsafe {
            (
                instance::<P>(instance_ptr)?,
                view.as_ref().ok_or(STATUS_INVALID_ARGUMENT)?,
            )
        };
        // SAFETY: the view's headers and strings are valid for this call.
        let headers = unsafe {
            v.headers()
                .ok_or(STATUS_INVALID_ARGUMENT)?
                .iter()
                .map(|h| {
                    Ok(HeaderView {
                        name: text(h.name)?,
                        value: text(h.value)?,
                    })
                })
                .collect::<Result<Vec<_>, i32>>()?
        };
        // SAFETY: as above.
        let call = unsafe {
            RouteView {
                call_id: text(v.call_id)?,
                trunk_in: text(v.trunk_in)?,
                caller: text(v.caller)?,
                callee: text(v.callee)?,
                source: text(v.source)?,
                headers: &headers,
            }
        };
        let put = |f: PutStrFn, value: &str| {
            // SAFETY: the sink is the host's for this call; `value` outlives
            // the callback.
            unsafe { f(sink_ref.ctx, RawStr::new(value)) }
        };
        let mut raw = RawRouteDecision::default();
        match plugin.route(&call).map_err(HookFailure::status)? {
            None => {}
            Some(RouteDecision::Default) => raw.kind = ROUTE_DEFAULT,
            Some(RouteDecision::Reject { status, reason }) => {
                raw.kind = ROUTE_REJECT;
                raw.reject_status = status;
                put(sink_ref.set_reason, &reason);
            }
            Some(RouteDecision::Route {
                trunks,
                callee,
                caller,
            }) => {
                raw.kind = ROUTE_TRUNKS;
                for trunk in &trunks {
                    put(sink_ref.add_trunk, trunk);
                }
                if let Some(callee) = &callee {
                    put(sink_ref.set_callee, callee);
                }
                if let Some(caller) = &caller {
                    put(sink_ref.set_caller, caller);
                }
            }
        }
        // SAFETY: `out` is non-null and the host's for this call.
        unsafe { out.write(raw) };
        Ok(())
    })
}

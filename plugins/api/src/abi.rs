//! The wire format between Vigil and a plugin: `#[repr(C)]` structs of fixed
//! width integers and pointer + length views, the function types of the hooks,
//! and the numbers (discriminants, status codes) both sides agree on.
//!
//! Everything here is ABI: changing a field, its type or its order, adding a
//! field, renumbering a constant or changing a function type means bumping
//! [`VIGIL_PLUGIN_ABI_VERSION`](crate::VIGIL_PLUGIN_ABI_VERSION).
//!
//! Ownership: every pointer Vigil hands to a hook is borrowed for that call
//! only. A plugin never frees what Vigil gave it and never hands Vigil memory to
//! free: strings and bytes a hook produces go through the [`HostSink`]
//! callbacks, which copy them, so each side's allocator stays its own.

use std::ffi::c_void;

/// Name of the first symbol Vigil looks up: `extern "C" fn() -> u32`.
pub const ABI_VERSION_SYMBOL: &str = "vigil_plugin_abi_version";
/// Name of the symbol giving the [`PluginVTable`]: `extern "C" fn() -> *const PluginVTable`.
pub const VTABLE_SYMBOL: &str = "vigil_plugin_vtable";

// ---------------------------------------------------------------------------
// Status codes every hook returns.

/// The hook ran; its decision (possibly "none") is in the out-pointer.
pub const STATUS_OK: i32 = 0;
/// The plugin failed without a more specific code.
pub const STATUS_ERROR: i32 = -1;
/// The plugin panicked; the panic was caught inside the plugin and its message
/// sent to [`HostSink::report_panic`].
pub const STATUS_PANICKED: i32 = -2;
/// The host passed something the plugin cannot read (null pointer, a string
/// that is not UTF-8, an unknown leg). A host bug, not a plugin one.
pub const STATUS_INVALID_ARGUMENT: i32 = -3;
/// Codes from here down (`<= -16`) are the plugin's own; -4..=-15 are reserved.
pub const STATUS_FIRST_PLUGIN_CODE: i32 = -16;

// ---------------------------------------------------------------------------
// Numbers inside the views.

/// [`RawLegView::leg`]: the caller's leg (Vigil is the UAS).
pub const LEG_A: u8 = 0;
/// [`RawLegView::leg`]: the trunk's leg (Vigil is the UAC).
pub const LEG_B: u8 = 1;

/// [`RawLegView::refresher`]: Vigil refreshes this leg.
pub const REFRESHER_VIGIL: u8 = 0;
/// [`RawLegView::refresher`]: the peer refreshes this leg.
pub const REFRESHER_PEER: u8 = 1;

/// [`RawRefreshFailure::kind`]: no final answer within the transaction timeout.
pub const FAILURE_TIMEOUT: u8 = 0;
/// [`RawRefreshFailure::kind`]: a final error status, in [`RawRefreshFailure::status`].
pub const FAILURE_STATUS: u8 = 1;
/// [`RawRefreshFailure::kind`]: the peer was the refresher and never refreshed.
pub const FAILURE_EXPIRED: u8 = 2;
/// [`RawRefreshFailure::kind`]: a policy's `refresh_due` decided to hang up.
pub const FAILURE_POLICY: u8 = 3;

/// [`RawMediaTimeoutView::direction`]: the caller's RTP towards the callee stopped.
pub const MEDIA_CALLER_TO_CALLEE: u8 = 0;
/// [`RawMediaTimeoutView::direction`]: the callee's RTP towards the caller stopped.
pub const MEDIA_CALLEE_TO_CALLER: u8 = 1;
/// [`RawMediaTimeoutView::direction`]: no RTP either way.
pub const MEDIA_BOTH: u8 = 2;

// ---------------------------------------------------------------------------
// Decision discriminants: 0 is always "no decision".

pub const CALL_START_NONE: u32 = 0;
/// Place the call, with the overrides that are set.
pub const CALL_START_ACCEPT: u32 = 1;
/// Answer the caller with `reject_status` and the reason given to
/// [`HostSink::set_reason`] (required).
pub const CALL_START_REJECT: u32 = 2;

/// [`RawCallStartDecision::refresh_method`]: not overridden.
pub const METHOD_UNSET: u8 = 0;
pub const METHOD_AUTO: u8 = 1;
pub const METHOD_UPDATE: u8 = 2;
pub const METHOD_REINVITE: u8 = 3;

pub const REFRESH_NONE: u32 = 0;
/// The configured `refresh_method`.
pub const REFRESH_DEFAULT: u32 = 1;
pub const REFRESH_UPDATE: u32 = 2;
pub const REFRESH_REINVITE: u32 = 3;
/// Do not refresh now; treat the session as refreshed once.
pub const REFRESH_SKIP: u32 = 4;
/// End the call.
pub const REFRESH_HANGUP: u32 = 5;

pub const FAILURE_DECISION_NONE: u32 = 0;
/// End the call.
pub const FAILURE_DECISION_HANGUP: u32 = 1;
/// Try again after `retry_after_ms`.
pub const FAILURE_DECISION_RETRY: u32 = 2;
/// Carry on as if the refresh had succeeded.
pub const FAILURE_DECISION_IGNORE: u32 = 3;

pub const KEEPALIVE_NONE: u32 = 0;
/// Send what `nat_keepalive` says.
pub const KEEPALIVE_DEFAULT: u32 = 1;
/// Send nothing this period.
pub const KEEPALIVE_SKIP: u32 = 2;
/// Send the bytes given to [`HostSink::set_payload`] (required).
pub const KEEPALIVE_PAYLOAD: u32 = 3;

pub const MEDIA_TIMEOUT_NONE: u32 = 0;
/// End the call (BYE both legs, CDR `media-timeout`).
pub const MEDIA_TIMEOUT_HANGUP: u32 = 1;
/// Keep the call; ask again if the media is still silent after another
/// `media.timeout`.
pub const MEDIA_TIMEOUT_IGNORE: u32 = 2;

pub const ROUTE_NONE: u32 = 0;
/// Route as configured (prefix routes, the source's default route); the
/// script is not asked.
pub const ROUTE_DEFAULT: u32 = 1;
/// Try the trunks given to [`HostSink::add_trunk`] in order (1..=16 of them,
/// required), with the B leg's callee and caller given to
/// [`HostSink::set_callee`] and [`HostSink::set_caller`] if any.
pub const ROUTE_TRUNKS: u32 = 2;
/// Answer the caller with `reject_status` and the reason given to
/// [`HostSink::set_reason`] (required).
pub const ROUTE_REJECT: u32 = 3;

// ---------------------------------------------------------------------------
// Borrowed strings and bytes.

/// A borrowed UTF-8 string: `len` bytes at `ptr`, no terminating NUL.
/// `ptr` may be null only when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawStr {
    pub ptr: *const u8,
    pub len: usize,
}

/// Borrowed bytes: `len` bytes at `ptr`. `ptr` may be null only when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawBytes {
    pub ptr: *const u8,
    pub len: usize,
}

/// The slice behind a pointer + length pair, or `None` if the pair cannot be a
/// slice (null with a length, misaligned, or more than `isize::MAX` bytes).
///
/// # Safety
/// Unless null, `ptr` must point to `len` initialised values that stay valid and
/// unchanged for `'a`.
unsafe fn slice_of<'a, T>(ptr: *const T, len: usize) -> Option<&'a [T]> {
    if len == 0 {
        return Some(&[]);
    }
    let bytes = len.checked_mul(size_of::<T>())?;
    if ptr.is_null() || !ptr.is_aligned() || bytes > isize::MAX as usize {
        return None;
    }
    // SAFETY: non-null, length checked above; validity for 'a is the caller's promise.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

impl RawStr {
    /// The empty string (null pointer, length 0).
    pub const EMPTY: RawStr = RawStr {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `s`; the view is valid as long as `s` is.
    pub const fn new(s: &str) -> RawStr {
        RawStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The bytes, or `None` if the view is malformed.
    ///
    /// # Safety
    /// The view must point to memory valid for `'a` (see [`RawStr`]).
    pub unsafe fn as_bytes<'a>(self) -> Option<&'a [u8]> {
        // SAFETY: forwarded to the caller.
        unsafe { slice_of(self.ptr, self.len) }
    }

    /// The string, or `None` if the view is malformed or not UTF-8.
    ///
    /// # Safety
    /// The view must point to memory valid for `'a` (see [`RawStr`]).
    pub unsafe fn to_str<'a>(self) -> Option<&'a str> {
        // SAFETY: forwarded to the caller.
        let bytes = unsafe { self.as_bytes() }?;
        std::str::from_utf8(bytes).ok()
    }
}

impl RawBytes {
    /// No bytes (null pointer, length 0).
    pub const EMPTY: RawBytes = RawBytes {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `b`; the view is valid as long as `b` is.
    pub const fn new(b: &[u8]) -> RawBytes {
        RawBytes {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }

    /// The bytes, or `None` if the view is malformed.
    ///
    /// # Safety
    /// The view must point to memory valid for `'a` (see [`RawBytes`]).
    pub unsafe fn as_slice<'a>(self) -> Option<&'a [u8]> {
        // SAFETY: forwarded to the caller.
        unsafe { slice_of(self.ptr, self.len) }
    }
}

// ---------------------------------------------------------------------------
// Views: what a hook sees. Valid for the duration of the hook call only.

/// A new INVITE that was admitted and routed.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawCallStartView {
    pub call_id: RawStr,
    /// The trunk (or `user:<name>`) the call comes from.
    pub trunk_in: RawStr,
    /// The trunk (or `user:<name>`) the call goes to.
    pub trunk_out: RawStr,
    pub caller: RawStr,
    pub callee: RawStr,
    /// The address the INVITE came from, `ip:port` (`[v6]:port` for IPv6).
    pub source: RawStr,
}

/// One leg of an answered call, when its refresh is due or has failed.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawLegView {
    /// The A leg's Call-ID (the call's identity in CDRs and logs).
    pub call_id: RawStr,
    pub b_call_id: RawStr,
    pub trunk: RawStr,
    pub caller: RawStr,
    pub callee: RawStr,
    /// Time since the call was answered, milliseconds.
    pub since_answer_ms: u64,
    /// The negotiated Session-Expires, seconds.
    pub session_expires: u32,
    pub refresh_count: u32,
    /// [`LEG_A`] or [`LEG_B`].
    pub leg: u8,
    /// [`REFRESHER_VIGIL`] or [`REFRESHER_PEER`].
    pub refresher: u8,
}

/// Why a refresh failed.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawRefreshFailure {
    /// One of the `FAILURE_*` kinds ([`FAILURE_TIMEOUT`], …).
    pub kind: u8,
    /// The final status when `kind` is [`FAILURE_STATUS`], else 0.
    pub status: u16,
}

/// The call as it ends.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawCallView {
    pub call_id: RawStr,
    pub b_call_id: RawStr,
    pub trunk_in: RawStr,
    pub trunk_out: RawStr,
    pub caller: RawStr,
    pub callee: RawStr,
    /// The CDR's end reason: `caller-bye`, `session-timeout`, ….
    pub end_reason: RawStr,
    /// Time since answer, milliseconds; meaningless when `answered` is 0.
    pub since_answer_ms: u64,
    /// 1 if the call was answered, 0 if it ended before answer.
    pub answered: u8,
}

/// A registered contact whose NAT keep-alive is due.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawContactView {
    pub user: RawStr,
    /// The Contact URI as registered.
    pub contact: RawStr,
    /// Where the REGISTER came from, `ip:port` (`[v6]:port` for IPv6).
    pub received: RawStr,
    /// Keep-alives sent to this contact so far.
    pub sent: u64,
}

/// An answered, relayed call whose RTP has been silent for `media.timeout`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawMediaTimeoutView {
    /// The A leg's Call-ID (the call's identity in CDRs and logs).
    pub call_id: RawStr,
    pub b_call_id: RawStr,
    /// The trunk (or `user:<name>`) of the side whose media died; the
    /// inbound trunk when both did.
    pub trunk: RawStr,
    pub caller: RawStr,
    pub callee: RawStr,
    /// Time since the silent media's last packet, milliseconds.
    pub silent_for_ms: u64,
    /// Time since the call was answered, milliseconds.
    pub since_answer_ms: u64,
    /// [`MEDIA_CALLER_TO_CALLEE`], [`MEDIA_CALLEE_TO_CALLER`] or [`MEDIA_BOTH`].
    pub direction: u8,
    /// 1 if the call is on hold, else 0.
    pub on_hold: u8,
}

/// One header field of the INVITE, as [`RawRouteView::headers`] lists it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawHeader {
    /// The canonical name (`P-Asserted-Identity`, …).
    pub name: RawStr,
    pub value: RawStr,
}

/// A new INVITE, before Vigil picks its outbound trunk. Since ABI version 3.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawRouteView {
    pub call_id: RawStr,
    /// The trunk (or `user:<name>`) the call comes from.
    pub trunk_in: RawStr,
    pub caller: RawStr,
    pub callee: RawStr,
    /// The address the INVITE came from, `ip:port` (`[v6]:port` for IPv6).
    pub source: RawStr,
    /// `header_count` fields of the INVITE, in message order, among
    /// `ROUTE_HEADERS` only. May be null when `header_count` is 0.
    pub headers: *const RawHeader,
    pub header_count: usize,
}

impl RawRouteView {
    /// The header fields, or `None` if the pointer and count cannot be a
    /// slice.
    ///
    /// # Safety
    /// The view must point to memory valid for `'a` (see [`RawStr`]).
    pub unsafe fn headers<'a>(&self) -> Option<&'a [RawHeader]> {
        // SAFETY: forwarded to the caller.
        unsafe { slice_of(self.headers, self.header_count) }
    }
}

// ---------------------------------------------------------------------------
// Decisions: what a hook answers. The host zeroes them ("no decision") before
// the call, so a hook that writes nothing declines.

/// The call-start decision. Overrides apply to [`CALL_START_ACCEPT`] only and
/// count only when their `has_*` flag is non-zero (or, for the method, when it
/// is not [`METHOD_UNSET`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawCallStartDecision {
    /// [`CALL_START_NONE`], [`CALL_START_ACCEPT`] or [`CALL_START_REJECT`].
    pub kind: u32,
    /// The final status for a reject, 400..=699.
    pub reject_status: u16,
    /// One of the `METHOD_*` values.
    pub refresh_method: u8,
    pub has_ttl: u8,
    pub has_update_segment: u8,
    pub has_no_timer_max_duration: u8,
    /// Session-Expires Vigil asks for, seconds.
    pub ttl: u32,
    /// Refresh after `ttl / update_segment`, 2..=10.
    pub update_segment: u32,
    /// Longest call, seconds, when a leg has no session timer.
    pub no_timer_max_duration: u32,
}

/// The refresh-due decision.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawRefreshDecision {
    /// One of the `REFRESH_*` values.
    pub kind: u32,
}

/// The refresh-failed decision.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawFailureDecision {
    /// One of the `FAILURE_DECISION_*` values.
    pub kind: u32,
    /// For [`FAILURE_DECISION_RETRY`]: wait this long, milliseconds (Vigil
    /// never waits past the session's expiry).
    pub retry_after_ms: u64,
}

/// The keep-alive-tick decision.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawKeepaliveDecision {
    /// One of the `KEEPALIVE_*` values.
    pub kind: u32,
}

/// The media-timeout decision.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawMediaTimeoutDecision {
    /// One of the `MEDIA_TIMEOUT_*` values.
    pub kind: u32,
}

/// The route decision. Its strings (trunks, callee, caller, a reject's
/// reason) go through the [`HostSink`], which copies them.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawRouteDecision {
    /// [`ROUTE_NONE`], [`ROUTE_DEFAULT`], [`ROUTE_TRUNKS`] or [`ROUTE_REJECT`].
    pub kind: u32,
    /// The final status for a reject, 400..=699.
    pub reject_status: u16,
}

// ---------------------------------------------------------------------------
// The host's callbacks.

/// Takes a string from the plugin (copied before it returns).
pub type PutStrFn = unsafe extern "C" fn(ctx: *mut c_void, value: RawStr);
/// Takes bytes from the plugin (copied before it returns).
pub type PutBytesFn = unsafe extern "C" fn(ctx: *mut c_void, value: RawBytes);
/// Takes a key and a value from the plugin (both copied before it returns).
pub type PutFieldFn = unsafe extern "C" fn(ctx: *mut c_void, key: RawStr, value: RawStr);

/// Where a hook sends what does not fit in its decision struct. The host builds
/// one per hook call; the plugin may call its functions (passing `ctx` back)
/// during that call only, on the calling thread. The host copies what it gets,
/// so the plugin's strings need only live until the callback returns. None of
/// the callbacks unwinds or keeps the pointers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostSink {
    /// The host's per-call state; opaque to the plugin.
    pub ctx: *mut c_void,
    /// A reject's reason phrase (call start, route).
    pub set_reason: PutStrFn,
    /// A custom keep-alive payload.
    pub set_payload: PutBytesFn,
    /// An extra CDR field (hang-up).
    pub add_field: PutFieldFn,
    /// The message of a panic caught in the plugin.
    pub report_panic: PutStrFn,
    /// A trunk to try, after those added before (route; at most 16). Since
    /// ABI version 3, like the two below.
    pub add_trunk: PutStrFn,
    /// The callee (Request-URI user) of the B leg (route).
    pub set_callee: PutStrFn,
    /// The caller (From user) of the B leg (route).
    pub set_caller: PutStrFn,
}

// ---------------------------------------------------------------------------
// The plugin's side.

/// `vigil_plugin_abi_version`.
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;
/// `vigil_plugin_vtable`.
pub type VTableFn = unsafe extern "C" fn() -> *const PluginVTable;

/// Makes the plugin's instance and writes it to `out`. Called once, at load.
pub type CreateFn = unsafe extern "C" fn(sink: *const HostSink, out: *mut *mut c_void) -> i32;
/// Drops the instance. Called once, after the last hook call, before unloading.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

pub type CallStartFn = unsafe extern "C" fn(
    instance: *const c_void,
    view: *const RawCallStartView,
    sink: *const HostSink,
    out: *mut RawCallStartDecision,
) -> i32;
pub type RefreshDueFn = unsafe extern "C" fn(
    instance: *const c_void,
    view: *const RawLegView,
    sink: *const HostSink,
    out: *mut RawRefreshDecision,
) -> i32;
pub type RefreshFailedFn = unsafe extern "C" fn(
    instance: *const c_void,
    view: *const RawLegView,
    failure: *const RawRefreshFailure,
    sink: *const HostSink,
    out: *mut RawFailureDecision,
) -> i32;
pub type KeepaliveTickFn = unsafe extern "C" fn(
    instance: *const c_void,
    view: *const RawContactView,
    sink: *const HostSink,
    out: *mut RawKeepaliveDecision,
) -> i32;
/// Hang-up has no decision struct: its answer is the fields sent to
/// [`HostSink::add_field`].
pub type HangupFn = unsafe extern "C" fn(
    instance: *const c_void,
    view: *const RawCallView,
    sink: *const HostSink,
) -> i32;
/// Since ABI version 2.
pub type MediaTimeoutFn = unsafe extern "C" fn(
    instance: *const c_void,
    view: *const RawMediaTimeoutView,
    sink: *const HostSink,
    out: *mut RawMediaTimeoutDecision,
) -> i32;

/// Since ABI version 3.
pub type RouteFn = unsafe extern "C" fn(
    instance: *const c_void,
    view: *const RawRouteView,
    sink: *const HostSink,
    out: *mut RawRouteDecision,
) -> i32;

/// What `vigil_plugin_vtable` returns: a table that lives as long as the library
/// is loaded. A null hook means "never decides".
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginVTable {
    /// Must equal what `vigil_plugin_abi_version` returned.
    pub abi_version: u32,
    /// For logs: the plugin's name and version.
    pub name: RawStr,
    pub version: RawStr,
    /// Required.
    pub create: Option<CreateFn>,
    /// Required.
    pub destroy: Option<DestroyFn>,
    pub call_start: Option<CallStartFn>,
    pub refresh_due: Option<RefreshDueFn>,
    pub refresh_failed: Option<RefreshFailedFn>,
    pub keepalive_tick: Option<KeepaliveTickFn>,
    pub hangup: Option<HangupFn>,
    /// Since ABI version 2.
    pub media_timeout: Option<MediaTimeoutFn>,
    /// Since ABI version 3.
    pub route: Option<RouteFn>,
}

// SAFETY: a vtable is immutable once built; its pointers are to 'static strings
// and to functions, which any thread may read and call (the hooks' own thread
// safety is the plugin's contract, see the crate docs).
unsafe impl Sync for PluginVTable {}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::*;

    /// Pins the layout on 64-bit targets. If this fails, the ABI changed: bump
    /// `VIGIL_PLUGIN_ABI_VERSION`, then update the numbers here.
    #[test]
    fn layout_is_pinned() {
        let sizes = [
            ("RawStr", size_of::<RawStr>(), 16),
            ("RawBytes", size_of::<RawBytes>(), 16),
            ("RawCallStartView", size_of::<RawCallStartView>(), 96),
            ("RawLegView", size_of::<RawLegView>(), 104),
            ("RawRefreshFailure", size_of::<RawRefreshFailure>(), 4),
            ("RawCallView", size_of::<RawCallView>(), 128),
            ("RawContactView", size_of::<RawContactView>(), 56),
            (
                "RawCallStartDecision",
                size_of::<RawCallStartDecision>(),
                24,
            ),
            ("RawRefreshDecision", size_of::<RawRefreshDecision>(), 4),
            ("RawFailureDecision", size_of::<RawFailureDecision>(), 16),
            ("RawKeepaliveDecision", size_of::<RawKeepaliveDecision>(), 4),
            ("RawMediaTimeoutView", size_of::<RawMediaTimeoutView>(), 104),
            (
                "RawMediaTimeoutDecision",
                size_of::<RawMediaTimeoutDecision>(),
                4,
            ),
            ("RawHeader", size_of::<RawHeader>(), 32),
            ("RawRouteView", size_of::<RawRouteView>(), 96),
            ("RawRouteDecision", size_of::<RawRouteDecision>(), 8),
            ("HostSink", size_of::<HostSink>(), 64),
            ("PluginVTable", size_of::<PluginVTable>(), 112),
        ];
        for (name, size, pinned) in sizes {
            assert_eq!(
                size, pinned,
                "size of {name} changed: bump VIGIL_PLUGIN_ABI_VERSION"
            );
        }
        assert_eq!(offset_of!(RawLegView, since_answer_ms), 80);
        assert_eq!(offset_of!(RawLegView, leg), 96);
        assert_eq!(offset_of!(RawLegView, refresher), 97);
        assert_eq!(offset_of!(RawCallView, answered), 120);
        assert_eq!(offset_of!(RawRefreshFailure, status), 2);
        assert_eq!(offset_of!(RawCallStartDecision, reject_status), 4);
        assert_eq!(offset_of!(RawCallStartDecision, refresh_method), 6);
        assert_eq!(
            offset_of!(RawCallStartDecision, has_no_timer_max_duration),
            9
        );
        assert_eq!(offset_of!(RawCallStartDecision, ttl), 12);
        assert_eq!(offset_of!(RawFailureDecision, retry_after_ms), 8);
        assert_eq!(offset_of!(PluginVTable, name), 8);
        assert_eq!(offset_of!(PluginVTable, create), 40);
        assert_eq!(offset_of!(PluginVTable, hangup), 88);
        assert_eq!(offset_of!(PluginVTable, media_timeout), 96);
        assert_eq!(offset_of!(RawMediaTimeoutView, silent_for_ms), 80);
        assert_eq!(offset_of!(RawMediaTimeoutView, since_answer_ms), 88);
        assert_eq!(offset_of!(RawMediaTimeoutView, direction), 96);
        assert_eq!(offset_of!(RawMediaTimeoutView, on_hold), 97);
        assert_eq!(offset_of!(PluginVTable, route), 104);
        assert_eq!(offset_of!(RawRouteView, headers), 80);
        assert_eq!(offset_of!(RawRouteView, header_count), 88);
        assert_eq!(offset_of!(RawRouteDecision, reject_status), 4);
        assert_eq!(offset_of!(HostSink, add_trunk), 40);
        assert_eq!(offset_of!(HostSink, set_caller), 56);
        assert_eq!(align_of::<PluginVTable>(), 8);
    }

    #[test]
    fn raw_views_refuse_what_cannot_be_a_slice() {
        // SAFETY: each view is either empty, points to 'static data, or is
        // malformed on purpose (and then never dereferenced).
        unsafe {
            assert_eq!(RawStr::EMPTY.to_str(), Some(""));
            assert_eq!(RawStr::new("sip").to_str(), Some("sip"));
            let null_with_len = RawStr {
                ptr: std::ptr::null(),
                len: 1,
            };
            assert_eq!(null_with_len.to_str(), None);
            let not_utf8 = RawStr {
                ptr: b"\xff".as_ptr(),
                len: 1,
            };
            assert_eq!(not_utf8.to_str(), None);
            assert_eq!(not_utf8.as_bytes(), Some(&b"\xff"[..]));
            assert_eq!(RawBytes::new(b"\r\n").as_slice(), Some(&b"\r\n"[..]));
        }
    }
}

//! `declare_plugin!` seen from the host's side, in-process: the exported
//! symbols, each hook's decision as raw structs and sink calls, failures and
//! panics turned into statuses, and bad arguments refused instead of trusted.

// The test plays the host: it calls the exported C functions with raw pointers.
#![allow(unsafe_code)]

use std::borrow::Cow;
use std::ffi::c_void;
use std::ptr;
use std::time::Duration;

use vigil_plugin_api::abi::*;
use vigil_plugin_api::*;

/// Decides from the callee / trunk / user so one plugin covers every case.
struct Scripted;

impl Plugin for Scripted {
    fn call_start(&self, call: &CallStartView<'_>) -> HookResult<CallStartDecision> {
        match call.callee {
            "reject" => Ok(Some(CallStartDecision::Reject {
                status: 403,
                reason: Cow::Borrowed("Forbidden by plugin"),
            })),
            "override" => Ok(Some(CallStartDecision::Accept(CallOverrides {
                ttl: Some(1800),
                update_segment: None,
                refresh_method: Some(RefreshMethod::Reinvite),
                no_timer_max_duration: Some(0),
            }))),
            "fail" => Err(HookFailure::with_status(-42)),
            "panic" => panic!("no route for {}", call.source),
            _ => Ok(None),
        }
    }

    fn refresh_due(&self, leg: &LegView<'_>) -> HookResult<RefreshDecision> {
        Ok(match (leg.leg, leg.refresher) {
            (Leg::B, Refresher::Vigil) if leg.refresh_count >= 2 => Some(RefreshDecision::Hangup),
            (Leg::B, Refresher::Vigil) => Some(RefreshDecision::Update),
            _ => None,
        })
    }

    fn refresh_failed(
        &self,
        leg: &LegView<'_>,
        failure: RefreshFailure,
    ) -> HookResult<FailureDecision> {
        Ok(Some(match failure {
            RefreshFailure::Status(501) => FailureDecision::Ignore,
            RefreshFailure::Timeout => {
                FailureDecision::Retry(leg.since_answer.min(Duration::from_secs(7)))
            }
            _ => FailureDecision::Hangup,
        }))
    }

    fn keepalive_tick(&self, contact: &ContactView<'_>) -> HookResult<KeepaliveDecision> {
        Ok(Some(match contact.user {
            "quiet" => KeepaliveDecision::Skip,
            "stun" => KeepaliveDecision::Payload(Cow::Borrowed(b"\0\x01")),
            _ => KeepaliveDecision::Default,
        }))
    }

    fn hangup(&self, call: &CallView<'_>, extra: &mut CdrFields<'_>) -> Result<(), HookFailure> {
        extra.add("end", call.end_reason);
        let answered = match call.since_answer {
            Some(d) => d.as_millis().to_string(),
            None => "never".to_owned(),
        };
        extra.add("answered_ms", &answered);
        Ok(())
    }

    fn media_timeout(&self, call: &MediaTimeoutView<'_>) -> HookResult<MediaTimeoutDecision> {
        if call.callee == "panic" {
            panic!(
                "media of {} died {} ms into the call",
                call.b_call_id,
                call.since_answer.as_millis()
            );
        }
        Ok(match call.direction {
            _ if call.on_hold => Some(MediaTimeoutDecision::Ignore),
            MediaDirection::Both => Some(MediaTimeoutDecision::Hangup),
            // One-way silence on the carrier's side is its silence
            // suppression, for a minute.
            _ if call.trunk == "carrier" && call.silent_for < Duration::from_secs(60) => {
                Some(MediaTimeoutDecision::Ignore)
            }
            _ => None,
        })
    }

    fn route(&self, call: &RouteView<'_>) -> HookResult<RouteDecision> {
        Ok(Some(match call.callee {
            "none" => return Ok(None),
            "panic" => panic!("no trunk for {}", call.call_id),
            "premium" => RouteDecision::Reject {
                status: 403,
                reason: Cow::Borrowed("Premium Numbers Barred"),
            },
            "diverted" => RouteDecision::Route {
                // The diverting party's and the asserted identity's values,
                // to see the headers arrive in order and by name.
                trunks: call
                    .header("diversion")
                    .chain(call.header("P-Asserted-Identity"))
                    .map(str::to_owned)
                    .collect(),
                callee: None,
                caller: Some(call.caller.to_owned()),
            },
            "lcr" => RouteDecision::Route {
                trunks: vec!["cheap".into(), "backup".into()],
                callee: Some("+3225552000".into()),
                caller: None,
            },
            _ => RouteDecision::Default,
        }))
    }
}

declare_plugin!(Scripted, Scripted);

/// What the host's sink collected during one call.
#[derive(Default)]
struct Collected {
    reason: Option<String>,
    payload: Option<Vec<u8>>,
    fields: Vec<(String, String)>,
    panic: Option<String>,
    trunks: Vec<String>,
    callee: Option<String>,
    caller: Option<String>,
}

fn text(s: RawStr) -> String {
    // SAFETY: the plugin's views are valid during the callback.
    String::from_utf8_lossy(unsafe { s.as_bytes() }.unwrap_or_default()).into_owned()
}

fn collected<'a>(ctx: *mut c_void) -> &'a mut Collected {
    // SAFETY: every sink in this file carries a `&mut Collected` as its ctx.
    unsafe { &mut *ctx.cast::<Collected>() }
}

unsafe extern "C" fn set_reason(ctx: *mut c_void, value: RawStr) {
    collected(ctx).reason = Some(text(value));
}

unsafe extern "C" fn set_payload(ctx: *mut c_void, value: RawBytes) {
    // SAFETY: the plugin's view is valid during the callback.
    collected(ctx).payload = Some(unsafe { value.as_slice() }.unwrap_or_default().to_vec());
}

unsafe extern "C" fn add_field(ctx: *mut c_void, key: RawStr, value: RawStr) {
    collected(ctx).fields.push((text(key), text(value)));
}

unsafe extern "C" fn report_panic(ctx: *mut c_void, value: RawStr) {
    collected(ctx).panic = Some(text(value));
}

unsafe extern "C" fn add_trunk(ctx: *mut c_void, value: RawStr) {
    collected(ctx).trunks.push(text(value));
}

unsafe extern "C" fn set_callee(ctx: *mut c_void, value: RawStr) {
    collected(ctx).callee = Some(text(value));
}

unsafe extern "C" fn set_caller(ctx: *mut c_void, value: RawStr) {
    collected(ctx).caller = Some(text(value));
}

fn sink(c: &mut Collected) -> HostSink {
    HostSink {
        ctx: ptr::from_mut(c).cast(),
        set_reason,
        set_payload,
        add_field,
        report_panic,
        add_trunk,
        set_callee,
        set_caller,
    }
}

struct Loaded {
    vtable: &'static PluginVTable,
    instance: *mut c_void,
}

impl Loaded {
    fn new() -> Loaded {
        assert_eq!(vigil_plugin_abi_version(), VIGIL_PLUGIN_ABI_VERSION);
        // SAFETY: the macro's vtable is a static.
        let vtable = unsafe { &*vigil_plugin_vtable() };
        let mut c = Collected::default();
        let mut instance = ptr::null_mut();
        let create = vtable.create.expect("create");
        // SAFETY: a valid sink and out-pointer.
        let status = unsafe { create(&sink(&mut c), &mut instance) };
        assert_eq!(status, STATUS_OK);
        assert!(!instance.is_null());
        Loaded { vtable, instance }
    }

    fn call_start(&self, callee: &str) -> (i32, RawCallStartDecision, Collected) {
        let view = RawCallStartView {
            call_id: RawStr::new("abc@10.0.0.1"),
            trunk_in: RawStr::new("pbx"),
            trunk_out: RawStr::new("carrier"),
            caller: RawStr::new("+3225551000"),
            callee: RawStr::new(callee),
            source: RawStr::new("10.0.0.1:5060"),
        };
        let mut c = Collected::default();
        let mut out = RawCallStartDecision::default();
        let hook = self.vtable.call_start.expect("hook");
        // SAFETY: live instance, valid view, sink and out.
        let status = unsafe { hook(self.instance, &view, &sink(&mut c), &mut out) };
        (status, out, c)
    }

    fn refresh_due(&self, view: &RawLegView) -> (i32, RawRefreshDecision) {
        let mut c = Collected::default();
        let mut out = RawRefreshDecision::default();
        let hook = self.vtable.refresh_due.expect("hook");
        // SAFETY: live instance, valid view, sink and out.
        let status = unsafe { hook(self.instance, view, &sink(&mut c), &mut out) };
        (status, out)
    }

    fn refresh_failed(&self, kind: u8, status: u16) -> (i32, RawFailureDecision) {
        let failure = RawRefreshFailure { kind, status };
        let mut c = Collected::default();
        let mut out = RawFailureDecision::default();
        let hook = self.vtable.refresh_failed.expect("hook");
        // SAFETY: live instance, valid view, failure, sink and out.
        let status = unsafe { hook(self.instance, &leg(), &failure, &sink(&mut c), &mut out) };
        (status, out)
    }

    fn keepalive_tick(&self, user: &str) -> (i32, RawKeepaliveDecision, Collected) {
        let view = RawContactView {
            user: RawStr::new(user),
            contact: RawStr::new("sip:alice@192.0.2.7:5060"),
            received: RawStr::new("198.51.100.1:40000"),
            sent: 12,
        };
        let mut c = Collected::default();
        let mut out = RawKeepaliveDecision::default();
        let hook = self.vtable.keepalive_tick.expect("hook");
        // SAFETY: live instance, valid view, sink and out.
        let status = unsafe { hook(self.instance, &view, &sink(&mut c), &mut out) };
        (status, out, c)
    }

    fn route(&self, view: &RawRouteView) -> (i32, RawRouteDecision, Collected) {
        let mut c = Collected::default();
        let mut out = RawRouteDecision::default();
        let hook = self.vtable.route.expect("hook");
        // SAFETY: live instance, valid view, sink and out.
        let status = unsafe { hook(self.instance, view, &sink(&mut c), &mut out) };
        (status, out, c)
    }

    fn media_timeout(
        &self,
        view: &RawMediaTimeoutView,
    ) -> (i32, RawMediaTimeoutDecision, Collected) {
        let mut c = Collected::default();
        let mut out = RawMediaTimeoutDecision::default();
        let hook = self.vtable.media_timeout.expect("hook");
        // SAFETY: live instance, valid view, sink and out.
        let status = unsafe { hook(self.instance, view, &sink(&mut c), &mut out) };
        (status, out, c)
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let destroy = self.vtable.destroy.expect("destroy");
        // SAFETY: the instance from `create`, destroyed once.
        unsafe { destroy(self.instance) };
    }
}

fn leg() -> RawLegView {
    RawLegView {
        call_id: RawStr::new("abc@10.0.0.1"),
        b_call_id: RawStr::new("w1-xyz"),
        trunk: RawStr::new("carrier"),
        caller: RawStr::new("+3225551000"),
        callee: RawStr::new("+3225552000"),
        since_answer_ms: 90_000,
        session_expires: 90,
        refresh_count: 0,
        leg: LEG_B,
        refresher: REFRESHER_VIGIL,
    }
}

/// The callee's media has been silent for 30 s, 90 s into the call.
fn media() -> RawMediaTimeoutView {
    RawMediaTimeoutView {
        call_id: RawStr::new("abc@10.0.0.1"),
        b_call_id: RawStr::new("w1-xyz"),
        trunk: RawStr::new("carrier"),
        caller: RawStr::new("+3225551000"),
        callee: RawStr::new("+3225552000"),
        silent_for_ms: 30_000,
        since_answer_ms: 90_000,
        direction: MEDIA_CALLEE_TO_CALLER,
        on_hold: 0,
    }
}

#[test]
fn exports_version_and_vtable_with_the_crate_name() {
    let p = Loaded::new();
    assert_eq!(p.vtable.abi_version, VIGIL_PLUGIN_ABI_VERSION);
    assert_eq!(text(p.vtable.name), "vigil-plugin-api");
    assert_eq!(text(p.vtable.version), env!("CARGO_PKG_VERSION"));
}

#[test]
fn call_start_decisions_cross_as_raw_structs_and_sink_calls() {
    let p = Loaded::new();

    let (status, out, c) = p.call_start("+3225552000");
    assert_eq!((status, out), (STATUS_OK, RawCallStartDecision::default()));
    assert!(c.reason.is_none());

    let (status, out, c) = p.call_start("reject");
    assert_eq!(status, STATUS_OK);
    assert_eq!((out.kind, out.reject_status), (CALL_START_REJECT, 403));
    assert_eq!(c.reason.as_deref(), Some("Forbidden by plugin"));

    let (status, out, _) = p.call_start("override");
    assert_eq!(status, STATUS_OK);
    assert_eq!(
        out,
        RawCallStartDecision {
            kind: CALL_START_ACCEPT,
            reject_status: 0,
            refresh_method: METHOD_REINVITE,
            has_ttl: 1,
            has_update_segment: 0,
            has_no_timer_max_duration: 1,
            ttl: 1800,
            update_segment: 0,
            no_timer_max_duration: 0,
        }
    );
}

#[test]
fn a_failure_returns_the_plugins_status() {
    let (status, out, _) = Loaded::new().call_start("fail");
    assert_eq!((status, out.kind), (-42, CALL_START_NONE));
    assert_eq!(HookFailure::with_status(3), HookFailure::GENERIC);
    assert_eq!(
        HookFailure::with_status(STATUS_PANICKED),
        HookFailure::GENERIC
    );
}

#[test]
fn a_panic_is_caught_and_its_message_reported() {
    let p = Loaded::new();
    let (status, out, c) = p.call_start("panic");
    assert_eq!(status, STATUS_PANICKED);
    assert_eq!(out.kind, CALL_START_NONE);
    assert_eq!(c.panic.as_deref(), Some("no route for 10.0.0.1:5060"));
    // The instance is still usable.
    assert_eq!(p.call_start("reject").0, STATUS_OK);
}

#[test]
fn refresh_hooks_read_the_leg_and_answer() {
    let p = Loaded::new();
    assert_eq!(
        p.refresh_due(&leg()),
        (
            STATUS_OK,
            RawRefreshDecision {
                kind: REFRESH_UPDATE
            }
        )
    );
    let third = RawLegView {
        refresh_count: 2,
        ..leg()
    };
    assert_eq!(p.refresh_due(&third).1.kind, REFRESH_HANGUP);
    let a_leg = RawLegView {
        leg: LEG_A,
        ..leg()
    };
    assert_eq!(p.refresh_due(&a_leg).1.kind, REFRESH_NONE);

    assert_eq!(
        p.refresh_failed(FAILURE_TIMEOUT, 0),
        (
            STATUS_OK,
            RawFailureDecision {
                kind: FAILURE_DECISION_RETRY,
                retry_after_ms: 7_000
            }
        )
    );
    assert_eq!(
        p.refresh_failed(FAILURE_STATUS, 501).1.kind,
        FAILURE_DECISION_IGNORE
    );
    assert_eq!(
        p.refresh_failed(FAILURE_EXPIRED, 0).1.kind,
        FAILURE_DECISION_HANGUP
    );
}

#[test]
fn keepalive_payload_goes_through_the_sink() {
    let p = Loaded::new();
    let (status, out, c) = p.keepalive_tick("stun");
    assert_eq!((status, out.kind), (STATUS_OK, KEEPALIVE_PAYLOAD));
    assert_eq!(c.payload.as_deref(), Some(&b"\0\x01"[..]));
    assert_eq!(p.keepalive_tick("quiet").1.kind, KEEPALIVE_SKIP);
    assert_eq!(p.keepalive_tick("alice").1.kind, KEEPALIVE_DEFAULT);
}

#[test]
fn hangup_fields_go_through_the_sink() {
    let p = Loaded::new();
    let view = RawCallView {
        call_id: RawStr::new("abc@10.0.0.1"),
        b_call_id: RawStr::new("w1-xyz"),
        trunk_in: RawStr::new("pbx"),
        trunk_out: RawStr::new("carrier"),
        caller: RawStr::new("+3225551000"),
        callee: RawStr::new("+3225552000"),
        end_reason: RawStr::new("session-timeout"),
        since_answer_ms: 0,
        answered: 0,
    };
    let mut c = Collected::default();
    let hook = p.vtable.hangup.expect("hook");
    // SAFETY: live instance, valid view and sink.
    let status = unsafe { hook(p.instance, &view, &sink(&mut c)) };
    assert_eq!(status, STATUS_OK);
    assert_eq!(
        c.fields,
        [
            ("end".to_owned(), "session-timeout".to_owned()),
            ("answered_ms".to_owned(), "never".to_owned())
        ]
    );
}

#[test]
fn media_timeout_reads_the_view_and_answers() {
    let p = Loaded::new();
    let kind = |view: RawMediaTimeoutView| {
        let (status, out, c) = p.media_timeout(&view);
        assert_eq!(status, STATUS_OK);
        assert!(c.panic.is_none() && c.fields.is_empty());
        out.kind
    };
    assert_eq!(kind(media()), MEDIA_TIMEOUT_IGNORE);
    let long = RawMediaTimeoutView {
        silent_for_ms: 60_000,
        ..media()
    };
    assert_eq!(kind(long), MEDIA_TIMEOUT_NONE);
    let other_trunk = RawMediaTimeoutView {
        trunk: RawStr::new("pbx"),
        direction: MEDIA_CALLER_TO_CALLEE,
        ..media()
    };
    assert_eq!(kind(other_trunk), MEDIA_TIMEOUT_NONE);
    let dead = RawMediaTimeoutView {
        direction: MEDIA_BOTH,
        ..media()
    };
    assert_eq!(kind(dead), MEDIA_TIMEOUT_HANGUP);
    let held = RawMediaTimeoutView { on_hold: 1, ..dead };
    assert_eq!(kind(held), MEDIA_TIMEOUT_IGNORE);
}

#[test]
fn media_timeout_panics_and_unknown_directions_become_statuses() {
    let p = Loaded::new();
    let panics = RawMediaTimeoutView {
        callee: RawStr::new("panic"),
        ..media()
    };
    let (status, out, c) = p.media_timeout(&panics);
    assert_eq!((status, out.kind), (STATUS_PANICKED, MEDIA_TIMEOUT_NONE));
    assert_eq!(
        c.panic.as_deref(),
        Some("media of w1-xyz died 90000 ms into the call")
    );

    let sideways = RawMediaTimeoutView {
        direction: 3,
        ..media()
    };
    assert_eq!(p.media_timeout(&sideways).0, STATUS_INVALID_ARGUMENT);
    let hook = p.vtable.media_timeout.expect("hook");
    let mut c = Collected::default();
    // SAFETY: a null out-pointer is what is being tested; the shim checks it.
    let status = unsafe { hook(p.instance, &media(), &sink(&mut c), ptr::null_mut()) };
    assert_eq!(status, STATUS_INVALID_ARGUMENT);
    // The instance is still usable.
    assert_eq!(p.media_timeout(&media()).0, STATUS_OK);
}

/// The INVITE's identity and diversion headers, as Vigil lends them.
const HEADERS: [RawHeader; 3] = [
    RawHeader {
        name: RawStr::new("P-Asserted-Identity"),
        value: RawStr::new("<sip:+3225551000@pbx.example.com>"),
    },
    RawHeader {
        name: RawStr::new("Diversion"),
        value: RawStr::new("<sip:+3225553000@pbx.example.com>;reason=no-answer"),
    },
    RawHeader {
        name: RawStr::new("Diversion"),
        value: RawStr::new("<sip:+3225554000@pbx.example.com>;reason=unconditional"),
    },
];

/// A call to `callee` from the PBX, with [`HEADERS`].
fn routing(callee: &str) -> RawRouteView {
    RawRouteView {
        call_id: RawStr::new("abc@10.0.0.1"),
        trunk_in: RawStr::new("pbx"),
        caller: RawStr::new("+3225551000"),
        callee: RawStr::new(callee),
        source: RawStr::new("10.0.0.1:5060"),
        headers: HEADERS.as_ptr(),
        header_count: HEADERS.len(),
    }
}

#[test]
fn route_answers_with_trunks_and_numbers_through_the_sink() {
    let p = Loaded::new();
    let (status, out, c) = p.route(&routing("none"));
    assert_eq!((status, out.kind), (STATUS_OK, ROUTE_NONE));
    assert!(c.trunks.is_empty() && c.reason.is_none());

    let (status, out, _) = p.route(&routing("4930123"));
    assert_eq!((status, out.kind), (STATUS_OK, ROUTE_DEFAULT));

    let (status, out, c) = p.route(&routing("lcr"));
    assert_eq!((status, out.kind), (STATUS_OK, ROUTE_TRUNKS));
    assert_eq!(c.trunks, ["cheap", "backup"]);
    assert_eq!(c.callee.as_deref(), Some("+3225552000"));
    assert_eq!(c.caller, None);

    let (status, out, c) = p.route(&routing("premium"));
    assert_eq!(
        (status, out.kind, out.reject_status),
        (STATUS_OK, ROUTE_REJECT, 403)
    );
    assert_eq!(c.reason.as_deref(), Some("Premium Numbers Barred"));
    assert!(c.trunks.is_empty());
}

#[test]
fn route_sees_the_headers_in_order_by_name() {
    let p = Loaded::new();
    let (status, out, c) = p.route(&routing("diverted"));
    assert_eq!((status, out.kind), (STATUS_OK, ROUTE_TRUNKS));
    assert_eq!(
        c.trunks,
        [
            "<sip:+3225553000@pbx.example.com>;reason=no-answer",
            "<sip:+3225554000@pbx.example.com>;reason=unconditional",
            "<sip:+3225551000@pbx.example.com>",
        ]
    );
    assert_eq!(c.caller.as_deref(), Some("+3225551000"));

    // No headers at all: a null list with no length is an empty one.
    let bare = RawRouteView {
        headers: ptr::null(),
        header_count: 0,
        ..routing("diverted")
    };
    let (status, _, c) = p.route(&bare);
    assert_eq!(status, STATUS_OK);
    assert!(c.trunks.is_empty());
}

#[test]
fn route_panics_and_bad_views_become_statuses() {
    let p = Loaded::new();
    let (status, out, c) = p.route(&routing("panic"));
    assert_eq!((status, out.kind), (STATUS_PANICKED, ROUTE_NONE));
    assert_eq!(c.panic.as_deref(), Some("no trunk for abc@10.0.0.1"));

    let null_with_count = RawRouteView {
        headers: ptr::null(),
        header_count: 2,
        ..routing("lcr")
    };
    assert_eq!(p.route(&null_with_count).0, STATUS_INVALID_ARGUMENT);
    let not_utf8 = [RawHeader {
        name: RawStr::new("Privacy"),
        value: RawStr {
            ptr: b"\xff".as_ptr(),
            len: 1,
        },
    }];
    let bad_value = RawRouteView {
        headers: not_utf8.as_ptr(),
        header_count: 1,
        ..routing("lcr")
    };
    assert_eq!(p.route(&bad_value).0, STATUS_INVALID_ARGUMENT);
    let hook = p.vtable.route.expect("hook");
    let mut c = Collected::default();
    // SAFETY: a null out-pointer is what is being tested; the shim checks it.
    let status = unsafe { hook(p.instance, &routing("lcr"), &sink(&mut c), ptr::null_mut()) };
    assert_eq!(status, STATUS_INVALID_ARGUMENT);
    // The instance is still usable.
    assert_eq!(p.route(&routing("lcr")).0, STATUS_OK);
}

#[test]
fn bad_arguments_are_refused_not_trusted() {
    let p = Loaded::new();
    let mut c = Collected::default();
    let hook = p.vtable.refresh_due.expect("hook");
    let mut out = RawRefreshDecision::default();

    // SAFETY: null view and out are what is being tested; the shim checks them.
    let status = unsafe { hook(p.instance, ptr::null(), &sink(&mut c), &mut out) };
    assert_eq!(status, STATUS_INVALID_ARGUMENT);
    // SAFETY: as above.
    let status = unsafe { hook(p.instance, &leg(), &sink(&mut c), ptr::null_mut()) };
    assert_eq!(status, STATUS_INVALID_ARGUMENT);

    let unknown_leg = RawLegView { leg: 7, ..leg() };
    assert_eq!(p.refresh_due(&unknown_leg).0, STATUS_INVALID_ARGUMENT);
    let not_utf8 = RawLegView {
        trunk: RawStr {
            ptr: b"\xff".as_ptr(),
            len: 1,
        },
        ..leg()
    };
    assert_eq!(p.refresh_due(&not_utf8).0, STATUS_INVALID_ARGUMENT);
    let null_with_length = RawLegView {
        caller: RawStr {
            ptr: ptr::null(),
            len: 3,
        },
        ..leg()
    };
    assert_eq!(p.refresh_due(&null_with_length).0, STATUS_INVALID_ARGUMENT);
    assert_eq!(p.refresh_failed(9, 0).0, STATUS_INVALID_ARGUMENT);
}

#[test]
fn a_panicking_constructor_fails_create_with_its_message() {
    fn construct() -> Scripted {
        panic!("license file missing")
    }
    let mut c = Collected::default();
    let mut instance = ptr::null_mut();
    // SAFETY: a valid sink and out-pointer.
    let status = unsafe { __private::create(construct, &sink(&mut c), &mut instance) };
    assert_eq!(status, STATUS_PANICKED);
    assert!(instance.is_null());
    assert_eq!(c.panic.as_deref(), Some("license file missing"));
}

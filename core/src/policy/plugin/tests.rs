//! Loading the example plugin and the fixtures under plugins/fixtures, each
//! hook's answer, and every way a plugin can fail to load or to decide.

use std::fmt;
use std::time::Duration;

use super::*;
use crate::cdr::EndReason;
use crate::policy::{HeaderView, Leg, MediaDirection, Refresher};

fn load(crate_name: &str) -> PluginPolicy {
    let path = build_fixture(crate_name);
    PluginPolicy::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(crate_name: &str) -> (PathBuf, PluginError) {
    let path = build_fixture(crate_name);
    match PluginPolicy::load(&path) {
        Ok(p) => panic!("{} loaded: {p:?}", path.display()),
        Err(e) => (path, e),
    }
}

fn call_start_view(callee: &str) -> CallStartView<'_> {
    CallStartView {
        call_id: "a84b4c76e66710@pc33.example.com",
        trunk_in: "pbx",
        trunk_out: "carrier",
        caller: "+3225551000",
        callee,
        source: "192.0.2.10:5060",
    }
}

fn leg_view(call_id: &str) -> LegView<'_> {
    LegView {
        call_id,
        b_call_id: "w1-7f3a",
        trunk: "carrier",
        caller: "+3225551000",
        callee: "+3225552000",
        leg: Leg::B,
        session_expires: 90,
        refresher: Refresher::Vigil,
        refresh_count: 1,
        since_answer: Duration::from_secs(45),
    }
}

fn call_view(call_id: &str) -> CallView<'_> {
    CallView {
        call_id,
        b_call_id: "w1-7f3a",
        trunk_in: "pbx",
        trunk_out: "carrier",
        caller: "+3225551000",
        callee: "+3225552000",
        end_reason: EndReason::SessionTimeout.as_str(),
        since_answer: Some(Duration::from_secs(135)),
    }
}

fn media_view(direction: MediaDirection, silent_secs: u64) -> MediaTimeoutView<'static> {
    MediaTimeoutView {
        call_id: "a84b4c76e66710@pc33.example.com",
        b_call_id: "w1-7f3a",
        trunk: "carrier",
        caller: "+3225551000",
        callee: "+3225552000",
        direction,
        silent_for: Duration::from_secs(silent_secs),
        on_hold: false,
        since_answer: Duration::from_secs(600),
    }
}

/// The INVITE's identity and diversion headers, as the engine picks them.
const HEADERS: [HeaderView<'static>; 2] = [
    HeaderView {
        name: "P-Asserted-Identity",
        value: "<sip:+3225551000@pbx.example.com>",
    },
    HeaderView {
        name: "Diversion",
        value: "<sip:+3225553000@pbx.example.com>;reason=no-answer",
    },
];

fn route_view(callee: &str) -> RouteView<'_> {
    RouteView {
        call_id: "a84b4c76e66710@pc33.example.com",
        trunk_in: "pbx",
        caller: "+3225551000",
        callee,
        source: "192.0.2.10:5060",
        headers: &HEADERS,
    }
}

fn contact_view() -> ContactView<'static> {
    ContactView {
        user: "alice",
        contact: "sip:alice@192.168.1.20:5060",
        received: "198.51.100.7:40112",
        sent: 3,
    }
}

#[test]
fn plugin_policy_is_shared_by_workers() {
    fn shareable<T: Send + Sync>() {}
    shareable::<PluginPolicy>();
}

#[test]
fn example_plugin_refreshes_with_reinvite_and_hangs_up_after_three_failures() {
    let plugin = load("vigil-plugin-example");
    assert_eq!(plugin.plugin_name(), "vigil-plugin-example");
    assert_eq!(plugin.name(), plugin.path().display().to_string());

    // It has no opinion on new calls or keep-alives.
    assert_eq!(plugin.call_start(&call_start_view("+3225552000")), Ok(None));
    assert_eq!(plugin.keepalive_tick(&contact_view()), Ok(None));

    // 45 s into a 90 s session: refresh, always with re-INVITE.
    let leg = leg_view("call-1");
    assert_eq!(
        plugin.refresh_due(&leg),
        Ok(Some(RefreshDecision::Reinvite))
    );

    // The first two failures are retried, the third hangs up; another
    // call's count is its own.
    let retry = Ok(Some(FailureDecision::Retry(Duration::from_secs(5))));
    assert_eq!(plugin.refresh_failed(&leg, RefreshFailure::Timeout), retry);
    assert_eq!(
        plugin.refresh_failed(&leg, RefreshFailure::Status(503)),
        retry
    );
    assert_eq!(
        plugin.refresh_failed(&leg_view("call-2"), RefreshFailure::Timeout),
        retry
    );
    assert_eq!(
        plugin.refresh_failed(&leg, RefreshFailure::Timeout),
        Ok(Some(FailureDecision::Hangup))
    );

    // The CDR is tagged, with the failures; the count is forgotten.
    let mut extra = vec![("route".to_owned(), "primary".to_owned())];
    assert_eq!(plugin.hangup(&call_view("call-1"), &mut extra), Ok(()));
    assert_eq!(
        extra,
        [
            ("route".to_owned(), "primary".to_owned()),
            ("plugin".to_owned(), "vigil-plugin-example".to_owned()),
            ("refresh_failures".to_owned(), "3".to_owned()),
        ]
    );
    assert_eq!(plugin.refresh_failed(&leg, RefreshFailure::Timeout), retry);

    let mut extra = Vec::new();
    let clean = CallView {
        end_reason: EndReason::CallerBye.as_str(),
        since_answer: None,
        ..call_view("call-3")
    };
    assert_eq!(plugin.hangup(&clean, &mut extra), Ok(()));
    assert_eq!(
        extra,
        [("plugin".to_owned(), "vigil-plugin-example".to_owned())]
    );
}

#[test]
fn example_plugin_ignores_the_carriers_one_way_silence_for_five_minutes() {
    let plugin = load("vigil-plugin-example");
    let ask = |direction, secs| plugin.media_timeout(&media_view(direction, secs));
    let ignore = Ok(Some(MediaTimeoutDecision::Ignore));
    assert_eq!(ask(MediaDirection::CalleeToCaller, 30), ignore);
    // Asked again after another timeout, still silent: still the carrier's
    // silence suppression, until it has lasted five minutes.
    assert_eq!(ask(MediaDirection::CalleeToCaller, 60), ignore);
    assert_eq!(ask(MediaDirection::CalleeToCaller, 300), Ok(None));
    assert_eq!(ask(MediaDirection::CallerToCallee, 30), Ok(None));
    assert_eq!(ask(MediaDirection::Both, 30), Ok(None));
}

#[test]
fn example_plugin_routes_freephone_calls_in_e164_and_leaves_the_rest() {
    let plugin = load("vigil-plugin-example");
    assert_eq!(
        plugin.route(&route_view("080012345")),
        Ok(Some(RouteDecision::Route {
            trunks: vec!["carrier-freephone".into(), "carrier".into()],
            callee: Some("+3280012345".into()),
            caller: None,
        }))
    );
    assert_eq!(plugin.route(&route_view("025552000")), Ok(None));
    // Without headers too (the view's list may be empty).
    let bare = RouteView {
        headers: &[],
        ..route_view("0800999")
    };
    assert!(matches!(
        plugin.route(&bare),
        Ok(Some(RouteDecision::Route { .. }))
    ));
}

#[test]
fn example_plugin_serves_workers_concurrently() {
    let plugin = load("vigil-plugin-example");
    std::thread::scope(|s| {
        for worker in 0..4 {
            let plugin = &plugin;
            s.spawn(move || {
                for n in 0..200 {
                    let call_id = format!("w{worker}-{n}");
                    let leg = leg_view(&call_id);
                    assert_eq!(
                        plugin.refresh_due(&leg),
                        Ok(Some(RefreshDecision::Reinvite))
                    );
                    assert!(plugin.refresh_failed(&leg, RefreshFailure::Timeout).is_ok());
                    let mut extra = Vec::new();
                    assert_eq!(plugin.hangup(&call_view(&call_id), &mut extra), Ok(()));
                    assert_eq!(extra.len(), 2);
                }
            });
        }
    });
}

#[test]
fn an_old_abi_is_refused_naming_both_versions_and_the_file() {
    let (path, err) = load_err("vigil-plugin-fixture-old-abi");
    assert!(
        matches!(
            err,
            PluginError::AbiVersion {
                found: 2,
                expected: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "{}: plugin ABI version 2, this Vigil speaks {VIGIL_PLUGIN_ABI_VERSION}",
            path.display()
        )),
        "{message}"
    );
}

#[test]
fn a_library_without_a_vtable_is_not_a_plugin() {
    let (path, err) = load_err("vigil-plugin-fixture-no-vtable");
    assert!(
        matches!(
            err,
            PluginError::MissingSymbol {
                symbol: "vigil_plugin_vtable",
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("not a Vigil plugin: no `vigil_plugin_vtable`"),
        "{message}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let path = Path::new("/nonexistent/plugins/libcarrier.so");
    let err = PluginPolicy::load(path).expect_err("nothing to load");
    assert!(matches!(err, PluginError::Missing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("/nonexistent/plugins/libcarrier.so: cannot open plugin: "),
        "{message}"
    );
}

#[test]
fn a_file_that_is_not_a_library_gets_the_loaders_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("libnotes.so");
    std::fs::write(&path, "policy: carrier\n").expect("write");
    let err = PluginPolicy::load(&path).expect_err("not a library");
    let PluginError::Open { file, message } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(file, &path);
    assert!(!message.is_empty());
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot load plugin: ", path.display()))
    );
}

#[test]
fn a_panicking_plugin_fails_each_hook_and_vigil_carries_on() {
    let plugin = load("vigil-plugin-fixture-panicking");
    for round in 0..2 {
        assert_eq!(
            plugin.call_start(&call_start_view("+3225552000")),
            Err(HookError::Panic(
                "call_start panicked for a84b4c76e66710@pc33.example.com".into()
            )),
            "round {round}"
        );
        let leg = leg_view("call-1");
        assert_eq!(
            plugin.refresh_due(&leg),
            Err(HookError::Panic("refresh_due panicked".into()))
        );
        assert_eq!(
            plugin.refresh_failed(&leg, RefreshFailure::Expired),
            Err(HookError::Panic("refresh_failed panicked".into()))
        );
        assert_eq!(
            plugin.keepalive_tick(&contact_view()),
            Err(HookError::Panic("keepalive_tick panicked".into()))
        );
        assert_eq!(
            plugin.media_timeout(&media_view(MediaDirection::Both, 30)),
            Err(HookError::Panic("media_timeout panicked for both".into()))
        );
        assert_eq!(
            plugin.route(&route_view("+3225552000")),
            Err(HookError::Panic("route panicked for +3225552000".into()))
        );
        let mut extra = vec![("route".to_owned(), "primary".to_owned())];
        assert_eq!(
            plugin.hangup(&call_view("call-1"), &mut extra),
            Err(HookError::Panic("hangup panicked".into()))
        );
        // The field added before the panic was dropped.
        assert_eq!(extra, [("route".to_owned(), "primary".to_owned())]);
    }
}

fn assert_invalid<T: fmt::Debug>(result: Result<T, HookError>, expected: &str) {
    match result {
        Err(HookError::InvalidDecision(message)) => {
            assert!(message.contains(expected), "{message:?} lacks {expected:?}")
        }
        other => panic!("expected an invalid decision ({expected}), got {other:?}"),
    }
}

#[test]
fn decisions_vigil_cannot_carry_out_are_invalid() {
    let plugin = load("vigil-plugin-fixture-bad-decisions");
    let call_start = |callee| plugin.call_start(&call_start_view(callee));

    assert_invalid(
        call_start("+3225552000"),
        "call_start: unknown decision kind 7",
    );
    assert_invalid(
        call_start("status-200"),
        "reject status 200 is not in 400..=699",
    );
    assert_invalid(call_start("crlf"), "control characters");
    assert_invalid(call_start("not-utf8"), "not UTF-8");
    assert_invalid(call_start("no-reason"), "without a reason phrase");
    assert_invalid(call_start("bad-method"), "unknown refresh method 9");
    // A well-formed reject from the same plugin goes through.
    assert_eq!(
        call_start("ok-reject"),
        Ok(Some(CallStartDecision::Reject {
            status: 603,
            reason: "Declined".into()
        }))
    );

    let leg = leg_view("call-1");
    assert_invalid(
        plugin.refresh_due(&leg),
        "refresh_due: unknown decision kind 99",
    );
    assert_eq!(
        plugin.refresh_failed(&leg, RefreshFailure::Timeout),
        Err(HookError::PluginStatus(-20))
    );
    assert_invalid(plugin.keepalive_tick(&contact_view()), "without a payload");
    assert_invalid(
        plugin.media_timeout(&media_view(MediaDirection::CallerToCallee, 30)),
        "media_timeout: unknown decision kind 42",
    );

    let route = |callee| plugin.route(&route_view(callee));
    assert_invalid(route("+3225552000"), "route: unknown decision kind 42");
    assert_invalid(
        route("seventeen-trunks"),
        "route: more trunks than MAX_ROUTE_TRUNKS (16)",
    );
    assert_invalid(
        route("not-utf8-trunk"),
        "route: a trunk name or number that is not UTF-8",
    );
    assert_invalid(route("status-200"), "reject status 200 is not in 400..=699");
    assert_invalid(
        route("no-reason"),
        "route: a reject without a reason phrase",
    );
    // Well-formed as far as the ABI goes; the chain refuses them (see
    // policy::chain's tests).
    assert!(matches!(
        route("no-trunks"),
        Ok(Some(RouteDecision::Route { trunks, .. })) if trunks.is_empty()
    ));
    assert!(matches!(
        route("bad-callee"),
        Ok(Some(RouteDecision::Route { callee: Some(c), .. })) if c.contains("\r\n")
    ));

    let mut extra = vec![("route".to_owned(), "primary".to_owned())];
    assert_invalid(
        plugin.hangup(&call_view("call-1"), &mut extra),
        "hangup: a CDR field that is not UTF-8",
    );
    assert_eq!(extra, [("route".to_owned(), "primary".to_owned())]);
}

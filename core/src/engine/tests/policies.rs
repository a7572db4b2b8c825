//! Policy hooks changing calls, with real Lua scripts and plugins loaded from a
//! config the way the daemon loads them: each hook's decision shows on the
//! wire or in the CDR, and a broken script or plugin leaves the call to the
//! built-in behaviour.

use std::path::PathBuf;

use super::session_timers::{methods, timed_call, timer_answer, timer_invite};
use super::*;
use crate::policy::PolicyLoader;
use crate::policy::plugin::build_fixture;

/// A harness whose config is `CONFIG` plus `extra`, with `carrier_policy` as
/// the carrier trunk's `policy:` (if any) and its policies loaded like the
/// daemon's.
fn with_policies(extra: &str, carrier_policy: Option<&str>) -> Harness {
    let mut text = format!("{CONFIG}{extra}\n");
    if let Some(policy) = carrier_policy {
        text = text.replace(
            "    outbound: { to: \"127.0.0.3:5080\" }\n",
            &format!("    outbound: {{ to: \"127.0.0.3:5080\" }}\n    policy: {policy}\n"),
        );
    }
    with_policies_text(&text)
}

fn with_policies_text(text: &str) -> Harness {
    let config = Config::parse(text, FsPath::new("test.yaml")).expect("config");
    let metrics = Arc::new(Metrics::default());
    let (loader, errors) = PolicyLoader::new(&config, metrics.clone());
    assert!(errors.is_empty(), "{errors:?}");
    let (policies, errors) = loader.policies(&config);
    assert!(errors.is_empty(), "{errors:?}");
    Harness::with_deps(text, |deps| {
        deps.policies = policies;
        deps.metrics = metrics;
    })
}

/// Writes a script into a directory that lives as long as the test.
fn script(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write script");
    path
}

fn policy_errors(h: &Harness) -> u64 {
    h.engine
        .metrics
        .policy_errors
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// The callee's first refresh after 300 s of a call where Vigil refreshes it.
fn first_refresh(h: &mut Harness, call_id: &str) -> Request {
    let (_, a_tag) = timed_call(h, call_id, "600;refresher=uac", "600;refresher=uac");
    h.a_tag = a_tag;
    h.advance(Duration::from_secs(300));
    let msgs = h.take(CALLEE);
    msgs.into_iter()
        .find_map(|m| match m {
            Message::Request(r) if r.method == Method::Update || r.method == Method::Invite => {
                Some(r)
            }
            _ => None,
        })
        .expect("a refresh at ttl/2")
}

#[test]
fn refresh_due_reinvite_makes_vigil_refresh_with_reinvite_where_it_would_update() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function refresh_due(leg) return 'reinvite' end\n",
    );
    let mut h = with_policies("", Some(&format!("{{ lua: \"{}\" }}", lua.display())));
    let refresh = first_refresh(&mut h, "pol-1");
    assert_eq!(refresh.method, Method::Invite, "the callee allows UPDATE");
    assert_eq!(refresh.body, SDP.as_bytes());
}

#[test]
fn a_trunk_without_a_policy_keeps_the_builtin_behaviour() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function refresh_due(leg) return 'reinvite' end\n",
    );
    // The script serves the pbx trunk (the A leg) only.
    let text = CONFIG.replace(
        "    route_to: carrier\n",
        &format!(
            "    route_to: carrier\n    policy: {{ lua: \"{}\" }}\n",
            lua.display()
        ),
    );
    let mut h = with_policies_text(&text);
    let refresh = first_refresh(&mut h, "pol-2");
    assert_eq!(
        refresh.method,
        Method::Update,
        "the carrier's leg has no policy"
    );
}

#[test]
fn refresh_failed_retry_sends_a_second_refresh_after_a_408() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function refresh_failed(leg, failure)\n  if failure.status == 408 then return 'retry', 2 end\nend\n",
    );
    let mut h = with_policies("", Some(&format!("{{ lua: \"{}\" }}", lua.display())));
    let refresh = first_refresh(&mut h, "pol-3");
    h.callee_sends(&timer_answer(&refresh, 408, ""));
    assert!(
        methods(&h.take(CALLEE)).iter().all(|m| m != "BYE"),
        "not hung up"
    );
    h.advance(Duration::from_millis(1900));
    assert!(h.take(CALLEE).is_empty(), "not before 2 s");
    h.advance(Duration::from_millis(200));
    let again = h.take_one_request(CALLEE, Method::Update);
    assert_ne!(again.top_via().branch(), refresh.top_via().branch());
    h.callee_sends(&timer_answer(
        &again,
        200,
        "Session-Expires: 600;refresher=uac",
    ));
    assert!(h.cdrs.is_empty(), "the call lives on");
}

#[test]
fn refresh_failed_is_asked_about_a_timeout_too() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function refresh_failed(leg, failure)\n  if failure.kind == 'timeout' then return 'ignore' end\nend\n",
    );
    let mut h = with_policies("", Some(&format!("{{ lua: \"{}\" }}", lua.display())));
    first_refresh(&mut h, "pol-4");
    h.advance(Duration::from_secs(40));
    assert!(
        methods(&h.take(CALLEE)).iter().all(|m| m != "BYE"),
        "ignored: the call goes on"
    );
    assert!(h.cdrs.is_empty());
}

#[test]
fn a_481_still_ends_the_call_whatever_the_policy() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function refresh_failed() return 'ignore' end\n",
    );
    let mut h = with_policies("", Some(&format!("{{ lua: \"{}\" }}", lua.display())));
    let refresh = first_refresh(&mut h, "pol-5");
    h.callee_sends(&timer_answer(&refresh, 481, ""));
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::SessionTimeout);
}

#[test]
fn hangup_adds_cdr_fields() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function hangup(call)\n  return { route_class = 'gold', answered = call.since_answer ~= nil, reason = call.end_reason }\nend\n",
    );
    let mut h = with_policies(&format!("policy: {{ lua: \"{}\" }}", lua.display()), None);
    let (_, a_tag) = super::connected_call(&mut h, "pol-6");
    h.caller_sends(&caller_in_dialog("BYE", 2, &a_tag, "pol-6", "bye", ""));
    assert_eq!(h.cdrs.len(), 1);
    let mut extra = h.cdrs[0].extra.clone();
    extra.sort();
    assert_eq!(
        extra,
        vec![
            ("answered".to_string(), "true".to_string()),
            ("reason".to_string(), "caller-bye".to_string()),
            ("route_class".to_string(), "gold".to_string()),
        ],
        "asked once, though both trunks share the default policy"
    );
}

#[test]
fn call_start_reject_gives_the_caller_the_chosen_code() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function call_start(call)\n  if call.callee:sub(1, 3) == '009' then return { reject = 403, reason = 'Destination Barred' } end\nend\n",
    );
    let mut h = with_policies(&format!("policy: {{ lua: \"{}\" }}", lua.display()), None);
    h.caller_sends(&invite("pol-7", "0093123", SDP));
    let finals = h.finals(CALLER);
    assert_eq!(finals[0].status, 403);
    assert_eq!(finals[0].reason, "Destination Barred");
    assert!(h.take(CALLEE).is_empty(), "no B leg");
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::PolicyRejected);
    assert_eq!(h.cdrs[0].sip_code, Some(403));
    assert_eq!(h.cdrs[0].trunk_out.as_deref(), Some("carrier"));
    // Other numbers go through.
    h.caller_sends(&invite("pol-8", "0049301234", SDP));
    h.take_one_request(CALLEE, Method::Invite);
}

#[test]
fn call_start_overrides_the_calls_session_timer() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function call_start(call) return { ttl = 1800, refresh_method = 'reinvite' } end\n",
    );
    let mut h = with_policies("", Some(&format!("{{ lua: \"{}\" }}", lua.display())));
    h.caller_sends(&timer_invite(
        "pol-9",
        "Supported: timer\r\nSession-Expires: 3600",
    ));
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(b.headers.get(&HeaderName::SessionExpires), Some("1800"));
    h.callee_sends(&timer_answer(
        &b,
        200,
        "Require: timer\r\nSession-Expires: 1800;refresher=uac\r\nAllow: INVITE, ACK, BYE, UPDATE",
    ));
    let ok = h.finals(CALLER);
    assert_eq!(
        ok[0].headers.get(&HeaderName::SessionExpires),
        Some("1800;refresher=uac"),
        "the caller's 3600 is reduced to the overridden ttl"
    );
    let a_tag = ok[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "pol-9", "ack", ""));
    h.take(CALLEE);
    h.advance(Duration::from_secs(900));
    h.take_one_request(CALLEE, Method::Invite);
}

#[test]
fn invalid_overrides_are_refused_and_the_trunks_settings_apply() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function call_start(call) return { ttl = 30 } end\n",
    );
    let mut h = with_policies("", Some(&format!("{{ lua: \"{}\" }}", lua.display())));
    h.caller_sends(&timer_invite("pol-10", "Supported: timer"));
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(
        b.headers.get(&HeaderName::SessionExpires),
        Some("600"),
        "30 s is below min_se: not applied"
    );
    assert_eq!(policy_errors(&h), 1);
}

#[test]
fn broken_scripts_leave_calls_to_the_builtin_policy() {
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "broken.lua",
        "function call_start(call) while true do end end\n\
         function refresh_due(leg) error('no refresh for ' .. leg.trunk) end\n\
         function hangup(call) local t = {} while true do t[#t + 1] = string.rep('x', 1e6) end end\n",
    );
    let mut h = with_policies(&format!("policy: {{ lua: \"{}\" }}", lua.display()), None);
    let refresh = first_refresh(&mut h, "pol-11");
    assert_eq!(refresh.method, Method::Update, "the built-in refresh");
    h.callee_sends(&timer_answer(
        &refresh,
        200,
        "Session-Expires: 600;refresher=uac",
    ));
    h.caller_sends(&caller_in_dialog(
        "BYE",
        2,
        &h.a_tag.clone(),
        "pol-11",
        "bye",
        "",
    ));
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::CallerBye);
    assert!(h.cdrs[0].extra.is_empty());
    // call_start looped (once: both trunks share the default policy), each
    // refresh_due of Vigil's refreshes on both legs raised, hangup ran out of
    // memory.
    assert!(policy_errors(&h) >= 3, "{}", policy_errors(&h));
}

#[test]
fn plugin_first_then_lua_then_the_default() {
    let plugin = build_fixture("vigil-plugin-example");
    let dir = tempfile::tempdir().expect("dir");
    let lua = script(
        &dir,
        "p.lua",
        "function refresh_due(leg) return 'update' end\n\
         function hangup(call) return { script = 'yes' } end\n",
    );
    let mut h = with_policies(
        "",
        Some(&format!(
            "{{ plugin: \"{}\", lua: \"{}\" }}",
            plugin.display(),
            lua.display()
        )),
    );
    let refresh = first_refresh(&mut h, "pol-12");
    assert_eq!(
        refresh.method,
        Method::Invite,
        "the example plugin's re-INVITE wins over the script's UPDATE"
    );
    h.callee_sends(&timer_answer(
        &refresh,
        200,
        "Session-Expires: 600;refresher=uac",
    ));
    h.take(CALLEE);
    h.caller_sends(&caller_in_dialog(
        "BYE",
        2,
        &h.a_tag.clone(),
        "pol-12",
        "bye",
        "",
    ));
    let keys: Vec<&str> = h.cdrs[0].extra.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["plugin", "script"], "both observe the hang-up");
}

#[test]
fn a_panicking_plugin_leaves_calls_to_the_default() {
    let plugin = build_fixture("vigil-plugin-fixture-panicking");
    let mut h = with_policies("", Some(&format!("{{ plugin: \"{}\" }}", plugin.display())));
    let refresh = first_refresh(&mut h, "pol-13");
    assert_eq!(refresh.method, Method::Update);
    h.callee_sends(&timer_answer(
        &refresh,
        200,
        "Session-Expires: 600;refresher=uac",
    ));
    h.caller_sends(&caller_in_dialog(
        "BYE",
        2,
        &h.a_tag.clone(),
        "pol-13",
        "bye",
        "",
    ));
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::CallerBye);
    assert!(policy_errors(&h) >= 3);
}

/// `CONFIG` with a second outbound trunk and `route` in a script serving
/// the pbx trunk (where calls come from).
fn with_route_script(dir: &tempfile::TempDir, body: &str) -> Harness {
    let lua = script(dir, "route.lua", body);
    let text = CONFIG
        .replace(
            "    route_to: carrier\n",
            &format!(
                "    route_to: carrier\n    policy: {{ lua: \"{}\" }}\n",
                lua.display()
            ),
        )
        .replace(
            "routes:",
            "  - name: premium\n    outbound: { to: \"127.0.0.4:5080\" }\nroutes:",
        );
    with_policies_text(&text)
}

#[test]
fn a_route_script_chooses_the_trunks_and_rewrites_the_numbers() {
    let dir = tempfile::tempdir().expect("dir");
    let mut h = with_route_script(
        &dir,
        "function route(call)\n\
           if call.callee:sub(1, 3) == '090' then return { reject = 403, reason = 'Premium Barred' } end\n\
           if call.callee:sub(1, 2) == '00' then\n\
             return { trunks = { 'premium', 'carrier' }, callee = '+' .. call.callee:sub(3), caller = '+4930123' }\n\
           end\n\
           return nil\n\
         end\n",
    );
    h.caller_sends(&invite("rt-1", "0049301234", SDP));
    let b = h.take_one_request("127.0.0.4:5080", Method::Invite);
    assert_eq!(b.uri.to_string(), "sip:+49301234@127.0.0.4:5080");
    assert_eq!(b.from.uri.user_part().as_deref(), Some("+4930123"));
    // premium fails with 503: the route's next trunk gets the call.
    h.receive_from("127.0.0.4:5080", &answer(&b, 503, "p", ""), true);
    let c = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(
        c.uri.to_string(),
        "sip:+49301234@127.0.0.3:5080",
        "still rewritten"
    );
    h.callee_sends(&answer(&c, 486, "c", ""));
    let cdr = h.cdrs.last().expect("cdr");
    assert_eq!(cdr.trunk_out.as_deref(), Some("carrier"));
    assert_eq!(cdr.attempts.len(), 2);
    assert_eq!(&*cdr.attempts[0].trunk, "premium");

    h.caller_sends(&invite("rt-2", "0901234", SDP));
    let finals = h.finals(CALLER);
    assert_eq!(finals.last().map(|r| r.status), Some(403));
    assert_eq!(
        h.cdrs.last().map(|c| c.end_reason),
        Some(EndReason::PolicyRejected)
    );

    // No decision: the configured routes (route_to: carrier).
    h.caller_sends(&invite("rt-3", "555", SDP));
    let d = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(d.uri.to_string(), "sip:555@127.0.0.3:5080");
}

#[test]
fn a_route_naming_an_unknown_trunk_or_failing_leaves_the_configured_routes() {
    let dir = tempfile::tempdir().expect("dir");
    let mut h = with_route_script(
        &dir,
        "function route(call)\n\
           if call.callee == '1' then return { trunks = { 'nowhere' } } end\n\
           if call.callee == '2' then error('broken') end\n\
           while true do end\n\
         end\n",
    );
    for (i, callee) in ["1", "2", "3"].iter().enumerate() {
        h.caller_sends(&invite(&format!("rt-u{i}"), callee, SDP));
        let b = h.take_one_request(CALLEE, Method::Invite);
        assert_eq!(b.uri.to_string(), format!("sip:{callee}@127.0.0.3:5080"));
    }
    assert_eq!(policy_errors(&h), 3, "each reported");
}

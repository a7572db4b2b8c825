//! RFC 4028 session timers end to end: sipp peers that refresh, stop answering,
//! answer 481, stop refreshing, demand a longer interval (422) or do no timers at
//! all, with `allow_short_intervals` so a refresh cycle takes two seconds.

mod support;

use std::time::Duration;

use support::{Net, Vigil, callee, caller, scenario};

/// ttl 4 s refreshed every 2 s: lab values, allowed only by the explicit switch.
const SHORT_TIMERS: &str =
    "session_timer: { ttl: 4, min_se: 2, update_segment: 2, allow_short_intervals: true }";

fn short_timers_with(extra: &str) -> String {
    format!(
        "session_timer: {{ ttl: 4, min_se: 2, update_segment: 2, allow_short_intervals: true{extra} }}"
    )
}

const SE: [&str; 2] = ["-set", "se"];

fn one_cdr(vigil: Vigil) -> serde_json::Value {
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    stopped.cdrs[0].clone()
}

/// Asserts the billed duration is within 2 s of `expected_ms` (and never more).
fn assert_ended_near(cdr: &serde_json::Value, expected_ms: u64) {
    let ms = cdr["duration_ms"].as_u64().expect("duration");
    assert!(
        ms + 2_000 >= expected_ms && ms <= expected_ms + 2_000,
        "ended at {ms} ms, expected about {expected_ms} ms: {cdr}"
    );
}

#[test]
fn both_peers_answer_refreshes_and_the_call_lives_until_the_caller_hangs_up() {
    let net = Net::new(30);
    let vigil = Vigil::start(net, SHORT_TIMERS);
    let uas = callee(
        net,
        Some(&scenario("uas_refresh.xml")),
        &[SE[0], SE[1], "4", "-m", "1", "-trace_msg"],
    );
    caller(
        net,
        net.caller,
        Some(&scenario("uac_refresher.xml")),
        "0049301234",
        &[SE[0], SE[1], "4", "-d", "1500", "-m", "1"],
    )
    .expect_success(Duration::from_secs(30));
    let uas = uas.expect_success(Duration::from_secs(10));
    let refreshes = uas.messages.matches("UPDATE sip:").count();
    assert!(
        refreshes >= 3,
        "Vigil refreshed the callee {refreshes} times in 7.5 s, want >= 3"
    );
    let cdr = one_cdr(vigil);
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    assert!(cdr["refresh_failure"].is_null(), "{cdr}");
    assert_ended_near(&cdr, 7_500);
}

#[test]
fn a_callee_that_stops_answering_refreshes_is_hung_up_on_both_sides() {
    let net = Net::new(31);
    let vigil = Vigil::start(net, SHORT_TIMERS);
    // It answers the refreshes at 2 s and 4 s; the one at 6 s gets nothing, so the
    // session expires 4 s after the last answered one.
    let uas = callee(
        net,
        Some(&scenario("uas_refresh_then_silent.xml")),
        &[SE[0], SE[1], "4", "-m", "1"],
    );
    caller(
        net,
        net.caller,
        Some(&scenario("uac_refreshed_wait_bye.xml")),
        "0049301234",
        &[SE[0], SE[1], "4", "-m", "1"],
    )
    .expect_success(Duration::from_secs(30));
    uas.expect_success(Duration::from_secs(10));
    let cdr = one_cdr(vigil);
    assert_eq!(cdr["end_reason"], "session-timeout", "{cdr}");
    assert_eq!(cdr["ended_by"], "switch", "{cdr}");
    assert_eq!(cdr["refresh_failure"], "timeout", "{cdr}");
    assert_ended_near(&cdr, 8_000);
}

#[test]
fn a_refresh_answered_481_ends_the_call() {
    let net = Net::new(32);
    let vigil = Vigil::start(net, SHORT_TIMERS);
    let uas = callee(
        net,
        Some(&scenario("uas_refresh_481.xml")),
        &[SE[0], SE[1], "4", "-m", "1"],
    );
    caller(
        net,
        net.caller,
        Some(&scenario("uac_refreshed_wait_bye.xml")),
        "0049301234",
        &[SE[0], SE[1], "4", "-m", "1"],
    )
    .expect_success(Duration::from_secs(30));
    uas.expect_success(Duration::from_secs(10));
    let cdr = one_cdr(vigil);
    assert_eq!(cdr["end_reason"], "session-timeout", "{cdr}");
    assert_eq!(cdr["refresh_failure"], "481", "{cdr}");
    assert_ended_near(&cdr, 2_000);
}

#[test]
fn a_caller_refresher_that_stops_refreshing_is_ended_at_expiry() {
    let net = Net::new(33);
    let vigil = Vigil::start(net, SHORT_TIMERS);
    let uas = callee(
        net,
        Some(&scenario("uas_refresh.xml")),
        &[SE[0], SE[1], "4", "-m", "1"],
    );
    caller(
        net,
        net.caller,
        Some(&scenario("uac_refresher_silent.xml")),
        "0049301234",
        &[SE[0], SE[1], "4", "-m", "1"],
    )
    .expect_success(Duration::from_secs(30));
    uas.expect_success(Duration::from_secs(10));
    let cdr = one_cdr(vigil);
    assert_eq!(cdr["end_reason"], "session-timeout", "{cdr}");
    assert_eq!(cdr["refresh_failure"], "expired", "{cdr}");
    // RFC 4028 §10: at expiry minus min(32, 4/3) s.
    assert_ended_near(&cdr, 2_667);
}

#[test]
fn a_422_from_the_callee_is_retried_with_its_min_se() {
    let net = Net::new(34);
    let vigil = Vigil::start(net, SHORT_TIMERS);
    let uas = callee(
        net,
        Some(&scenario("uas_422.xml")),
        &[SE[0], SE[1], "6", "-m", "1", "-trace_msg"],
    );
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "1", "-d", "1000"],
    )
    .expect_success(Duration::from_secs(30));
    let uas = uas.expect_success(Duration::from_secs(10));
    assert!(
        uas.messages.contains("Session-Expires: 6"),
        "the second INVITE offers the callee's Min-SE"
    );
    let cdr = one_cdr(vigil);
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
}

#[test]
fn a_callee_without_timers_is_cut_at_max_duration_when_not_refreshed() {
    let net = Net::new(35);
    let vigil = Vigil::start(
        net,
        &short_timers_with(", refresh_non_timer_peers: false, no_timer_max_duration: 5"),
    );
    let uas = callee(net, None, &["-m", "1"]);
    caller(
        net,
        net.caller,
        Some(&scenario("uac_wait_bye.xml")),
        "0049301234",
        &["-m", "1"],
    )
    .expect_success(Duration::from_secs(30));
    uas.expect_success(Duration::from_secs(10));
    let cdr = one_cdr(vigil);
    assert_eq!(cdr["end_reason"], "max-duration", "{cdr}");
    assert_ended_near(&cdr, 5_000);
}

#[test]
fn a_callee_without_timers_is_refreshed_by_vigil_and_found_dead() {
    let net = Net::new(36);
    let vigil = Vigil::start(net, &short_timers_with(", refresh_non_timer_peers: true"));
    let uas = callee(
        net,
        Some(&scenario("uas_no_timer_silent.xml")),
        &["-m", "1"],
    );
    caller(
        net,
        net.caller,
        Some(&scenario("uac_refreshed_wait_bye.xml")),
        "0049301234",
        &[SE[0], SE[1], "4", "-m", "1"],
    )
    .expect_success(Duration::from_secs(30));
    uas.expect_success(Duration::from_secs(10));
    let cdr = one_cdr(vigil);
    assert_eq!(cdr["end_reason"], "session-timeout", "{cdr}");
    assert_eq!(cdr["refresh_failure"], "timeout", "{cdr}");
    assert_ended_near(&cdr, 4_000);
}

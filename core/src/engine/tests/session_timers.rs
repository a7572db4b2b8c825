//! RFC 4028 session timers on both legs, call by call, with the clock jumped:
//! negotiation, 422 both ways, Vigil refreshing, refreshes failing every way the
//! issue lists, a silent peer refresher, early_hangup and the maximum duration of
//! a call without timers.

use super::*;
use crate::metrics::RefreshFailureCause;

/// Adds headers to a message text just before its blank line.
pub(super) fn with_headers(text: &str, headers: &str) -> String {
    let (head, body) = text.split_once("\r\n\r\n").expect("a blank line");
    format!("{head}\r\n{headers}\r\n\r\n{body}")
}

pub(super) fn timer_invite(call_id: &str, headers: &str) -> String {
    with_headers(&invite(call_id, "0049301234", SDP), headers)
}

/// The callee's answer with session-timer headers (and Allow, for UPDATE).
pub(super) fn timer_answer(req: &Request, status: u16, headers: &str) -> String {
    with_headers(
        &answer(
            req,
            status,
            "callee-tag",
            if status == 200 && req.method == Method::Invite {
                SDP
            } else {
                ""
            },
        ),
        headers,
    )
}

fn config_with(session_timer: &str) -> String {
    format!("{CONFIG}session_timer: {session_timer}\n")
}

/// A connected call whose caller refreshes (uac) and whose callee leaves the
/// refreshing to Vigil (refresher=uac on the B leg); returns the B INVITE and the
/// A-leg tag.
pub(super) fn timed_call(
    h: &mut Harness,
    call_id: &str,
    a_se: &str,
    b_se: &str,
) -> (Request, String) {
    h.caller_sends(&timer_invite(
        call_id,
        &format!("Supported: timer\r\nSession-Expires: {a_se}"),
    ));
    assert_eq!(h.statuses(CALLER), vec![100]);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&timer_answer(
        &b,
        200,
        &format!(
            "Require: timer\r\nSession-Expires: {b_se}\r\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE"
        ),
    ));
    let ok = h.finals(CALLER);
    let a_tag = ok[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, call_id, "ack", ""));
    h.take_one_request(CALLEE, Method::Ack);
    (b, a_tag)
}

pub(super) fn methods(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            Message::Request(r) => r.method.to_string(),
            Message::Response(r) => r.status.to_string(),
        })
        .collect()
}

#[test]
fn both_legs_negotiate_and_the_answers_say_so() {
    let mut h = Harness::new();
    h.caller_sends(&timer_invite(
        "st-1",
        "Supported: timer\r\nSession-Expires: 1800;refresher=uac\r\nMin-SE: 90",
    ));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(
        b.headers.get(&HeaderName::SessionExpires),
        Some("600"),
        "the B leg is offered ttl"
    );
    assert_eq!(b.headers.get(&HeaderName::MinSe), Some("90"));
    assert!(b.headers.has_tag(&HeaderName::Supported, "timer"));
    h.callee_sends(&timer_answer(
        &b,
        200,
        "Require: timer\r\nSession-Expires: 600;refresher=uac",
    ));
    let ok = h.finals(CALLER);
    assert_eq!(
        ok[0].headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uac"),
        "reduced to ttl; the caller refreshes"
    );
    assert!(ok[0].headers.has_tag(&HeaderName::Require, "timer"));
}

#[test]
fn a_too_small_interval_from_the_caller_is_422_with_min_se() {
    let mut h = Harness::new();
    h.caller_sends(&timer_invite("st-2", "Supported: timer\r\nx: 60"));
    let r = h.finals(CALLER);
    assert_eq!(r[0].status, 422);
    assert_eq!(r[0].headers.get(&HeaderName::MinSe), Some("90"));
    assert!(h.take(CALLEE).is_empty(), "nothing is routed");
    assert!(h.cdrs.is_empty());
}

#[test]
fn a_caller_without_timer_support_is_refreshed_by_vigil_without_require() {
    let mut h = Harness::new();
    h.caller_sends(&invite("st-3", "0049301234", SDP));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&timer_answer(&b, 200, "Session-Expires: 600;refresher=uas"));
    let ok = h.finals(CALLER);
    assert_eq!(
        ok[0].headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uas")
    );
    assert!(!ok[0].headers.has_tag(&HeaderName::Require, "timer"));
    let a_tag = ok[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "st-3", "ack", ""));
    h.take(CALLEE);
    // 300 s later Vigil refreshes the caller, by re-INVITE (its Allow has no UPDATE)
    // carrying the SDP the caller already has.
    h.advance(Duration::from_secs(300));
    let reinvite = h.take_one_request(CALLER, Method::Invite);
    assert_eq!(
        reinvite.headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uac")
    );
    assert_eq!(reinvite.body, SDP.as_bytes());
    assert_eq!(reinvite.cseq.seq, 1);
    // The callee is the refresher of the B leg (refresher=uas): nothing goes there.
    assert!(h.take(CALLEE).is_empty());
}

#[test]
fn a_422_from_the_callee_is_retried_once_with_its_min_se() {
    let mut h = Harness::new();
    h.caller_sends(&timer_invite("st-4", "Supported: timer"));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&timer_answer(&b, 422, "Min-SE: 1800"));
    let msgs = h.take(CALLEE);
    assert_eq!(methods(&msgs), vec!["ACK", "INVITE"]);
    let Message::Request(retry) = &msgs[1] else {
        unreachable!()
    };
    assert_eq!(retry.headers.get(&HeaderName::SessionExpires), Some("1800"));
    assert_eq!(retry.headers.get(&HeaderName::MinSe), Some("1800"));
    assert_eq!(
        (retry.call_id.as_str(), retry.cseq.seq),
        (b.call_id.as_str(), 2)
    );
    assert_ne!(retry.top_via().branch(), b.top_via().branch());
    assert!(
        h.finals(CALLER).is_empty(),
        "the caller knows nothing of it"
    );
    // A second 422 is not retried again: the caller gets a failure, the CDR says 422.
    h.callee_sends(&timer_answer(retry, 422, "Min-SE: 3600"));
    assert_eq!(methods(&h.take(CALLEE)), vec!["ACK"]);
    assert_eq!(h.finals(CALLER)[0].status, 500);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Rejected);
    assert_eq!(h.cdrs[0].sip_code, Some(422));
}

#[test]
fn a_two_hour_call_refreshed_24_times_by_vigil_and_the_caller() {
    let mut h = Harness::new();
    let (b, a_tag) = timed_call(&mut h, "st-5", "600;refresher=uac", "600;refresher=uac");
    for i in 1..=24u32 {
        h.advance(Duration::from_secs(300));
        // The caller refreshes the A leg (UPDATE without SDP): answered by Vigil,
        // never relayed.
        h.caller_sends(
            &caller_in_dialog("UPDATE", 1 + i, &a_tag, "st-5", &format!("upd{i}"), "").replace(
                "Contact:",
                "Supported: timer\r\nSession-Expires: 600;refresher=uac\r\nContact:",
            ),
        );
        let ok = h.responses(CALLER);
        assert_eq!(ok[0].status, 200);
        assert_eq!(
            ok[0].headers.get(&HeaderName::SessionExpires),
            Some("600;refresher=uac")
        );
        // Vigil refreshes the B leg with UPDATE (the callee allows it).
        let update = h.take_one_request(CALLEE, Method::Update);
        assert_eq!(update.cseq.seq, 1 + i);
        assert_eq!(
            update.headers.get(&HeaderName::SessionExpires),
            Some("600;refresher=uac")
        );
        h.callee_sends(&timer_answer(
            &update,
            200,
            "Session-Expires: 600;refresher=uac",
        ));
    }
    assert_eq!(h.engine.active_calls(), 1);
    h.caller_sends(&caller_in_dialog("BYE", 99, &a_tag, "st-5", "bye", ""));
    assert_eq!(h.cdrs[0].end_reason, EndReason::CallerBye);
    assert_eq!(h.cdrs[0].duration_ms(), 7_200_000);
    let _ = b;
}

/// Runs a call where Vigil refreshes the B leg and the callee answers its first
/// refresh with `status` (or not at all); returns what the caller and callee got
/// after that.
fn refresh_answered(status: Option<u16>) -> (Harness, Vec<Message>, Vec<Message>) {
    let mut h = Harness::new();
    let (_, a_tag) = timed_call(&mut h, "st-6", "600;refresher=uac", "600;refresher=uac");
    h.a_tag = a_tag;
    h.advance(Duration::from_secs(300));
    let mut to_callee = h.take(CALLEE);
    let mut to_caller = h.take(CALLER);
    let refresh = to_callee
        .iter()
        .find_map(|m| match m {
            Message::Request(r) if r.method == Method::Update => Some(r.clone()),
            _ => None,
        })
        .expect("Vigil refreshes the callee at ttl/2");
    if let Some(status) = status {
        h.callee_sends(&timer_answer(&refresh, status, ""));
    } else {
        h.advance(Duration::from_secs(40));
    }
    to_callee = h.take(CALLEE);
    to_caller.extend(h.take(CALLER));
    (h, to_caller, to_callee)
}

fn assert_session_timeout(
    h: &Harness,
    to_caller: &[Message],
    to_callee: &[Message],
    failure: &str,
) {
    for (who, msgs) in [("caller", to_caller), ("callee", to_callee)] {
        let bye = msgs
            .iter()
            .find_map(|m| match m {
                Message::Request(r) if r.method == Method::Bye => Some(r),
                _ => None,
            })
            .unwrap_or_else(|| panic!("the {who} gets BYE: {:?}", methods(msgs)));
        assert_eq!(
            bye.headers.get(&HeaderName::Reason),
            Some("SIP;cause=408;text=\"Session expired\"")
        );
    }
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::SessionTimeout);
    assert_eq!(h.cdrs[0].ended_by, EndedBy::Switch);
    assert_eq!(h.cdrs[0].refresh_failure.as_deref(), Some(failure));
}

#[test]
fn an_unanswered_refresh_ends_the_call_after_the_transaction_timeout() {
    let (h, to_caller, to_callee) = refresh_answered(None);
    assert_session_timeout(&h, &to_caller, &to_callee, "timeout");
    // 300 s to the refresh, 32 s of Timer F: billed up to then, not beyond.
    assert_eq!(h.cdrs[0].duration_ms(), 332_000);
}

/// Issue 23: a refresh still waiting for its answer when the session expired
/// was missing from the `session refreshes` summary's failures.
#[test]
fn a_refresh_cut_short_by_the_session_expiry_counts_as_failed() {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let mut h = Harness::with_deps(
        &config_with("{ ttl: 20, min_se: 2, allow_short_intervals: true }"),
        |deps| deps.metrics = metrics.clone(),
    );
    let (_, a_tag) = timed_call(&mut h, "st-cut", "20;refresher=uac", "20;refresher=uac");
    h.a_tag = a_tag;
    // The caller keeps its leg alive; Vigil refreshes the callee at 10 s, the
    // callee never answers, and its session expires at 20 s, long before
    // Timer F (10 + 32 s).
    h.advance(Duration::from_secs(8));
    caller_refreshes(&mut h, "st-cut", 2);
    h.advance(Duration::from_secs(3));
    assert!(methods(&h.take(CALLEE)).contains(&"UPDATE".to_string()));
    h.advance(Duration::from_secs(10));
    let (to_caller, to_callee) = (h.take(CALLER), h.take(CALLEE));
    assert_session_timeout(&h, &to_caller, &to_callee, "timeout");
    assert_eq!(h.cdrs[0].duration_ms(), 20_000);
    assert_eq!(
        metrics.refreshes_failed(RefreshFailureCause::SessionExpired),
        1
    );
    h.advance(Duration::from_secs(60));
    let summary = metrics.refresh_summary();
    assert!(
        summary.contains("failed=1 [timeout=0 status=0 session_expired=1]"),
        "counted once, with its cause, even after Timer F: {summary}"
    );
}

#[test]
fn a_refresh_answered_481_or_408_ends_the_call_at_once() {
    for status in [481, 408] {
        let (h, to_caller, to_callee) = refresh_answered(Some(status));
        assert_session_timeout(&h, &to_caller, &to_callee, &status.to_string());
        assert_eq!(h.cdrs[0].duration_ms(), 300_000);
    }
}

#[test]
fn other_refresh_errors_end_the_call_by_default() {
    let (h, to_caller, to_callee) = refresh_answered(Some(500));
    assert_session_timeout(&h, &to_caller, &to_callee, "500");
}

#[test]
fn a_491_is_retried_after_rfc_3261_back_off() {
    let (mut h, _, to_callee) = refresh_answered(Some(491));
    assert!(methods(&to_callee).iter().all(|m| m != "BYE"));
    h.advance(Duration::from_millis(2000));
    assert!(
        h.take(CALLEE).is_empty(),
        "not before 2.1 s (Vigil owns the B Call-ID)"
    );
    h.advance(Duration::from_millis(2100));
    h.take_one_request(CALLEE, Method::Update);
    assert!(h.cdrs.is_empty());
}

#[test]
fn update_refused_with_501_falls_back_to_reinvite_for_the_dialog() {
    let (mut h, _, to_callee) = refresh_answered(Some(501));
    let reinvite = to_callee
        .iter()
        .find_map(|m| match m {
            Message::Request(r) if r.method == Method::Invite => Some(r.clone()),
            _ => None,
        })
        .expect("re-INVITE at once");
    assert_eq!(
        reinvite.body,
        SDP.as_bytes(),
        "carries the SDP the callee already has"
    );
    h.callee_sends(&timer_answer(
        &reinvite,
        200,
        "Session-Expires: 600;refresher=uac",
    ));
    assert_eq!(methods(&h.take(CALLEE)), vec!["ACK"]);
    // The caller keeps its own leg alive meanwhile.
    h.advance(Duration::from_secs(200));
    caller_refreshes(&mut h, "st-6", 2);
    h.advance(Duration::from_secs(100));
    h.take_one_request(CALLEE, Method::Invite);
}

#[test]
fn a_silent_peer_refresher_is_ended_at_expiry_minus_a_third() {
    let mut h = Harness::new();
    timed_call(&mut h, "st-7", "600;refresher=uac", "600;refresher=uas");
    h.advance(Duration::from_secs(567));
    assert!(h.cdrs.is_empty());
    h.advance(Duration::from_secs(2));
    let (to_caller, to_callee) = (h.take(CALLER), h.take(CALLEE));
    assert_session_timeout(&h, &to_caller, &to_callee, "expired");
    assert_eq!(h.cdrs[0].duration_ms(), 568_000, "600 - min(32, 600/3)");
}

#[test]
fn early_hangup_ends_the_call_that_much_sooner() {
    let mut h = Harness::with_config(&config_with("{ early_hangup: 20 }"));
    timed_call(&mut h, "st-8", "600;refresher=uac", "600;refresher=uas");
    h.advance(Duration::from_secs(600));
    assert_eq!(h.cdrs[0].end_reason, EndReason::SessionTimeout);
    assert_eq!(h.cdrs[0].duration_ms(), 548_000);
}

#[test]
fn a_callee_without_timers_and_refresh_non_timer_peers_off_hits_max_duration() {
    let mut h = Harness::with_config(&config_with(
        "{ refresh_non_timer_peers: false, no_timer_max_duration: 5 }",
    ));
    h.caller_sends(&timer_invite("st-9", "Supported: timer"));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&timer_answer(&b, 200, ""));
    let a_tag = h.finals(CALLER)[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "st-9", "ack", ""));
    h.take(CALLEE);
    h.advance(Duration::from_secs(4));
    assert!(h.cdrs.is_empty());
    h.advance(Duration::from_secs(2));
    h.take_one_request(CALLER, Method::Bye);
    h.take_one_request(CALLEE, Method::Bye);
    assert_eq!(h.cdrs[0].end_reason, EndReason::MaxDuration);
    assert_eq!(h.cdrs[0].duration_ms(), 5_000);
}

#[test]
fn a_callee_without_timers_is_refreshed_when_refresh_non_timer_peers_is_on() {
    let mut h = Harness::new();
    h.caller_sends(&timer_invite("st-10", "Supported: timer"));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&timer_answer(&b, 200, ""));
    let a_tag = h.finals(CALLER)[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "st-10", "ack", ""));
    h.take(CALLEE);
    h.advance(Duration::from_secs(300));
    let reinvite = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(
        reinvite.headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uac")
    );
    // It stops answering: the call ends as a session timeout.
    h.advance(Duration::from_secs(40));
    assert_eq!(h.cdrs[0].end_reason, EndReason::SessionTimeout);
}

#[test]
fn a_peer_reinvite_refresh_is_answered_locally_with_our_sdp_and_restarts_the_timer() {
    let mut h = Harness::new();
    let (_, a_tag) = timed_call(&mut h, "st-11", "600;refresher=uac", "600;refresher=uas");
    h.advance(Duration::from_secs(500));
    // Same SDP as before: a refresh, not an offer. A new interval replaces the old.
    h.caller_sends(
        &caller_in_dialog("INVITE", 2, &a_tag, "st-11", "re", SDP).replace(
            "Contact:",
            "Supported: timer\r\nSession-Expires: 900;refresher=uac\r\nContact:",
        ),
    );
    let r = h.responses(CALLER);
    let ok = r.iter().find(|r| r.status == 200).expect("200");
    assert_eq!(ok.body, SDP.as_bytes(), "the SDP this leg already has");
    assert_eq!(
        ok.headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uac"),
        "reduced to ttl"
    );
    assert!(h.take(CALLEE).is_empty(), "not relayed");
    h.caller_sends(&caller_in_dialog("ACK", 2, &a_tag, "st-11", "ack2", ""));
    assert!(h.take(CALLEE).is_empty());
    // The callee refreshes its leg at its own pace; the caller's timer restarted at 500 s.
    for i in 0..2 {
        let update = callee_in_dialog("UPDATE", 10 + i, &h_b_invite(&h), &format!("cu{i}"));
        h.callee_sends(&with_headers(
            &update,
            "Supported: timer\r\nSession-Expires: 600;refresher=uac",
        ));
        assert_eq!(h.statuses(CALLEE), vec![200]);
        h.advance(Duration::from_secs(280));
    }
    assert!(
        h.cdrs.is_empty(),
        "alive past 568 s thanks to the refresh at 500 s"
    );
    h.advance(Duration::from_secs(40));
    assert_eq!(h.cdrs[0].refresh_failure.as_deref(), Some("expired"));
}

/// The caller refreshes its leg with an UPDATE (refresher=uac).
fn caller_refreshes(h: &mut Harness, call_id: &str, cseq: u32) {
    let a_tag = h.a_tag.clone();
    let update = caller_in_dialog("UPDATE", cseq, &a_tag, call_id, &format!("cr{cseq}"), "");
    h.caller_sends(&with_headers(
        &update,
        "Supported: timer\r\nSession-Expires: 600;refresher=uac",
    ));
    assert_eq!(h.statuses(CALLER), vec![200]);
}

/// The B INVITE of the only call (rebuilt from what the callee was sent).
fn h_b_invite(h: &Harness) -> Request {
    h.last_b_invite.clone().expect("a B INVITE was sent")
}

#[test]
fn a_relayed_reinvite_with_new_sdp_refreshes_both_legs() {
    let mut h = Harness::new();
    let (_, a_tag) = timed_call(&mut h, "st-12", "600;refresher=uac", "600;refresher=uac");
    h.advance(Duration::from_secs(200));
    let new_sdp = SDP.replace("4000", "4444");
    h.caller_sends(
        &caller_in_dialog("INVITE", 2, &a_tag, "st-12", "re", &new_sdp).replace(
            "Contact:",
            "Supported: timer\r\nSession-Expires: 600;refresher=uac\r\nContact:",
        ),
    );
    h.take(CALLER);
    let relayed = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(relayed.body, new_sdp.as_bytes());
    assert_eq!(
        relayed.headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uac"),
        "the B leg's own timer"
    );
    h.callee_sends(&timer_answer(
        &relayed,
        200,
        "Session-Expires: 600;refresher=uac",
    ));
    let ok = h.finals(CALLER);
    assert_eq!(
        ok[0].headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uac")
    );
    h.caller_sends(&caller_in_dialog("ACK", 2, &a_tag, "st-12", "ack2", ""));
    h.take_one_request(CALLEE, Method::Ack);
    // The B leg's refresh is now due 300 s after the relayed 2xx, not after answer.
    h.advance(Duration::from_secs(299));
    assert!(h.take(CALLEE).is_empty());
    h.advance(Duration::from_secs(2));
    h.take_one_request(CALLEE, Method::Update);
}

#[test]
fn glare_with_vigils_own_refresh_gets_491() {
    let mut h = Harness::new();
    let (b, _) = timed_call(&mut h, "st-13", "600;refresher=uas", "600;refresher=uac");
    h.advance(Duration::from_secs(300));
    h.take(CALLEE);
    h.take(CALLER);
    h.callee_sends(&callee_in_dialog_with(
        "INVITE",
        5,
        &b,
        "glare",
        &SDP.replace("4000", "4100"),
    ));
    assert_eq!(h.statuses(CALLEE), vec![100, 491]);
}

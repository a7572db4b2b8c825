//! Calls that outlive the process (issue 21): an established call is saved,
//! goes through JSON as the state store keeps it, and is restored into a new
//! engine with the wall clock jumped — the way a restart finds it. A refresh
//! that fell due meanwhile goes at once; a session that expired meanwhile
//! ends as `session-timeout` at its expiry, not at the restart.

use super::session_timers::{timed_call, timer_answer};
use super::*;

/// The wall clock (ms since the epoch) when the first process saved.
pub(super) const SAVED_AT: u64 = 1_800_000_000_000;

fn persisting() -> Harness {
    Harness::with_deps(CONFIG, |d| d.persist = true)
}

/// Every save the engine has for the store now, through JSON and back.
pub(super) fn saves(h: &mut Harness) -> Vec<SavedCall> {
    let mut out = Vec::new();
    while let Some(change) = h.engine.poll_state(h.now, SAVED_AT) {
        if let StateChange::Save(call) = change {
            let json = serde_json::to_string(&call).expect("serialise");
            out.push(serde_json::from_str(&json).expect("read back"));
        }
    }
    out
}

/// A call whose caller refreshes the A leg (90 s, expiry at 60 s by RFC 4028
/// §10) and where Vigil refreshes the B leg every 45 s; saved once confirmed.
fn saved_call(call_id: &str) -> (Harness, SavedCall, Request, String) {
    let mut h = persisting();
    let (b, a_tag) = timed_call(&mut h, call_id, "90;refresher=uac", "90;refresher=uac");
    let mut saved = saves(&mut h);
    assert_eq!(saved.len(), 1, "the confirmed call is saved once");
    (h, saved.remove(0), b, a_tag)
}

/// A new process (engine) that restores `saved` when the wall clock has
/// moved on `jump` since the save, at the same monotonic instant.
fn restarted(first: &Harness, saved: &SavedCall, jump: Duration) -> Harness {
    let mut h = persisting();
    h.now = first.now;
    let wall = SAVED_AT + jump.as_millis() as u64;
    assert!(h.engine.restore_call(h.now, wall, saved));
    assert!(
        !h.engine.restore_call(h.now, wall, saved),
        "a call is restored once"
    );
    h
}

#[test]
fn a_saved_call_keeps_its_dialogs_timers_and_cdr_fields() {
    let (h, saved, b, _) = saved_call("rs-1");
    assert_eq!(saved.a.dialog.call_id, "rs-1");
    assert_eq!(saved.a.dialog.remote_tag, "caller-tag");
    assert_eq!(saved.b.dialog.call_id, b.call_id);
    assert_eq!(saved.b.dialog.remote_tag, "callee-tag");
    assert_eq!(saved.a.dialog.remote_seq, Some(1));
    assert_eq!(saved.b.dialog.local_seq, 1);
    assert_eq!(
        saved.b.dialog.remote_target, "sip:callee@127.0.0.3:5080",
        "the callee's Contact"
    );
    let a = saved.a.session.as_ref().expect("A timer");
    let b_timer = saved.b.session.as_ref().expect("B timer");
    assert!(!a.vigil_refreshes && b_timer.vigil_refreshes);
    assert_eq!(
        (a.expiry_at, b_timer.refresh_at, b_timer.expiry_at),
        (Some(60_000), Some(45_000), Some(90_000)),
        "deadlines from the moment of saving"
    );
    assert!(saved.a.remote_body.is_some() && saved.b.remote_body.is_some());
    assert_eq!(
        (saved.trunk_in.as_str(), saved.trunk_out.as_str()),
        ("pbx", "carrier")
    );
    assert_eq!(saved.saved_at_ms, SAVED_AT);
    assert!(
        saved.id.parse::<crate::cdr::CdrId>().is_ok(),
        "{}",
        saved.id
    );
    drop(h);
}

#[test]
fn a_restored_call_refreshes_on_time_and_ends_with_one_cdr_of_its_own() {
    let (first, saved, _, a_tag) = saved_call("rs-2");
    // Restarted 2 s later: nothing is due yet.
    let mut h = restarted(&first, &saved, Duration::from_secs(2));
    h.advance(Duration::from_secs(1));
    assert!(h.take(CALLEE).is_empty() && h.take(CALLER).is_empty());
    // The B-leg refresh falls due 45 s after the save: 42 s from now.
    h.advance(Duration::from_secs(42));
    let update = h.take_one_request(CALLEE, Method::Update);
    assert_eq!(update.call_id, saved.b.dialog.call_id);
    assert!(
        update.cseq.seq > saved.b.dialog.local_seq,
        "a CSeq the callee has not seen"
    );
    h.callee_sends(&timer_answer(
        &update,
        200,
        "Session-Expires: 90;refresher=uac",
    ));
    let resaved = saves(&mut h);
    assert!(
        !resaved.is_empty(),
        "the refresh moved the deadlines: saved"
    );
    let b_timer = resaved
        .last()
        .and_then(|c| c.b.session.clone())
        .expect("B timer");
    assert_eq!(
        b_timer.refresh_at,
        Some(45_000),
        "the next refresh, 45 s on"
    );
    // The caller refreshes the A leg with its next CSeq, and hangs up.
    h.caller_sends(
        &caller_in_dialog("UPDATE", 2, &a_tag, "rs-2", "upd", "").replace(
            "Contact:",
            "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\nContact:",
        ),
    );
    assert_eq!(h.statuses(CALLER), vec![200]);
    h.caller_sends(&caller_in_dialog("BYE", 3, &a_tag, "rs-2", "bye", ""));
    assert_eq!(h.statuses(CALLER), vec![200]);
    let bye = h.take_one_request(CALLEE, Method::Bye);
    h.callee_sends(&answer(&bye, 200, "callee-tag", ""));
    assert_eq!(h.cdrs.len(), 1);
    let cdr = &h.cdrs[0];
    assert_eq!(cdr.id.to_string(), saved.id, "the CDR keeps the call's id");
    assert_eq!(cdr.end_reason, EndReason::CallerBye);
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str()),
        ("1001", "0049301234")
    );
    // Start and answer are the first process's, 2 s of wall clock earlier
    // than the restart instant.
    let answer_at = cdr.answer.expect("answered");
    assert_eq!(first.now - answer_at, Duration::from_secs(2));
    let ended = saves_and_ends(&mut h);
    assert_eq!(ended, vec![saved.id.clone()], "the store hears of the end");
    assert_eq!(h.engine.active_calls(), 0);
}

/// The ids of the saved calls the engine reports ended.
fn saves_and_ends(h: &mut Harness) -> Vec<String> {
    let mut ended = Vec::new();
    while let Some(change) = h.engine.poll_state(h.now, SAVED_AT) {
        if let StateChange::Ended(record) = change {
            ended.push(record.id.to_string());
        }
    }
    ended
}

#[test]
fn a_refresh_that_fell_due_while_down_is_sent_at_once() {
    let (first, saved, _, _) = saved_call("rs-3");
    // Down for 50 s: the B refresh was due at 45 s, the session lasts 90.
    let mut h = restarted(&first, &saved, Duration::from_secs(50));
    h.advance(Duration::ZERO);
    let update = h.take_one_request(CALLEE, Method::Update);
    assert_eq!(update.call_id, saved.b.dialog.call_id);
    h.callee_sends(&timer_answer(
        &update,
        200,
        "Session-Expires: 90;refresher=uac",
    ));
    assert!(h.cdrs.is_empty(), "the call goes on");
    assert_eq!(h.engine.active_calls(), 1);
}

#[test]
fn a_session_that_expired_while_down_ends_at_its_expiry_with_bye_on_both_legs() {
    let (first, saved, _, _) = saved_call("rs-4");
    // Down for 100 s: the A leg's session ran out 60 s after the save (the
    // caller's refreshes went nowhere), the B leg's at 90 s.
    let mut h = restarted(&first, &saved, Duration::from_secs(100));
    h.advance(Duration::ZERO);
    let a_bye = h.take_one_request(CALLER, Method::Bye);
    let b_bye = h.take_one_request(CALLEE, Method::Bye);
    for bye in [&a_bye, &b_bye] {
        assert!(
            bye.headers
                .get(&HeaderName::Reason)
                .is_some_and(|r| r.contains("408")),
            "Reason: session expired"
        );
    }
    assert!(
        h.take(CALLEE).is_empty(),
        "no refresh goes to a session that is over"
    );
    assert_eq!(h.cdrs.len(), 1);
    let cdr = &h.cdrs[0];
    assert_eq!(cdr.end_reason, EndReason::SessionTimeout);
    assert_eq!(cdr.id.to_string(), saved.id);
    // The restart is at `first.now`; the A session expired 40 s before it.
    assert_eq!(first.now - cdr.end, Duration::from_secs(40));
    assert_eq!(cdr.duration_ms(), 60_000, "billed until the expiry");
}

#[test]
fn calls_not_yet_confirmed_are_not_saved_and_nothing_is_saved_without_a_store() {
    let mut h = persisting();
    h.caller_sends(&invite("rs-5", "0049301234", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    assert!(
        saves(&mut h).is_empty(),
        "answered but not ACKed: not saved"
    );
    let mut plain = Harness::new();
    connected_call(&mut plain, "rs-6");
    assert!(plain.engine.poll_state(plain.now, SAVED_AT).is_none());
}

/// Over TCP, the caller's connection died with the first process. A caller
/// behind NAT connects again and refreshes on its new connection (another
/// port): Vigil answers there and sends its own requests there from then on
/// (here the BYE for the callee's hang-up), not to the dead connection's
/// address, where nothing would take them.
#[test]
fn a_caller_on_tcp_is_reached_on_the_connection_it_opened_after_the_restart() {
    use crate::sip::Protocol;
    let (first, mut saved, b, a_tag) = saved_call("rs-tcp");
    saved.a.proto = Protocol::Tcp;
    let mut h = restarted(&first, &saved, Duration::from_secs(2));
    const NEW_FLOW: &str = "127.0.0.2:40001";
    let refresh = caller_in_dialog("UPDATE", 2, &a_tag, "rs-tcp", "upd", "").replace(
        "Contact:",
        "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\nContact:",
    );
    h.receive_over(NEW_FLOW, Protocol::Tcp, &refresh, true);
    assert_eq!(
        h.statuses(NEW_FLOW),
        vec![200],
        "answered on its connection"
    );
    h.callee_sends(&callee_in_dialog("BYE", 2, &b, "cbye"));
    assert!(
        h.sent
            .iter()
            .any(|t| t.remote == addr(NEW_FLOW) && t.proto == Protocol::Tcp),
        "over TCP"
    );
    let bye = h.take_one_request(NEW_FLOW, Method::Bye);
    assert_eq!(bye.call_id, "rs-tcp");
    assert!(
        h.take(CALLER).is_empty(),
        "nothing to the dead connection's address"
    );
}

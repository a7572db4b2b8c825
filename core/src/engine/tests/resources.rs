//! Nothing outlives its call: after thousands of calls of every ending —
//! hung up by either side, busy, cancelled, never answered — and the time it
//! takes their transactions to linger out, the engine holds no call, dialog,
//! transaction or timer, and the shared transaction budget is back to zero.

use std::sync::Arc;

use super::*;
use crate::transaction::TxBudget;

/// Calls per kind of ending.
const EACH: usize = 400;

/// One call, ended the way `kind` says; the silent ones are left to time out.
fn one_call(h: &mut Harness, kind: usize, call_id: &str) {
    match kind {
        // Answered, the caller hangs up.
        0 => {
            let (_, a_tag) = connected_call(h, call_id);
            h.caller_sends(&caller_in_dialog(
                "BYE",
                2,
                &a_tag,
                call_id,
                &format!("bye-{call_id}"),
                "",
            ));
            let bye = h.take_one_request(CALLEE, Method::Bye);
            h.callee_sends(&answer(&bye, 200, "callee-tag", ""));
        }
        // Answered, the callee hangs up.
        1 => {
            let (b, _) = connected_call(h, call_id);
            h.callee_sends(&callee_in_dialog("BYE", 1, &b, &format!("cbye-{call_id}")));
            let bye = h.take_one_request(CALLER, Method::Bye);
            h.caller_sends(&String::from_utf8(bye.response(200).encode()).expect("utf8"));
        }
        // Busy.
        2 => {
            h.caller_sends(&invite(call_id, "0049301234", SDP));
            let b = h.take_one_request(CALLEE, Method::Invite);
            h.callee_sends(&answer(&b, 486, "callee-tag", ""));
            let ack = invite_as("ACK", call_id);
            h.caller_sends(&ack);
        }
        // Cancelled while ringing.
        3 => {
            h.caller_sends(&invite(call_id, "0049301234", SDP));
            let b = h.take_one_request(CALLEE, Method::Invite);
            h.callee_sends(&answer(&b, 180, "callee-tag", ""));
            let cancel = invite_as("CANCEL", call_id);
            h.caller_sends(&cancel);
            let b_cancel = h.take_one_request(CALLEE, Method::Cancel);
            h.callee_sends(&answer(&b_cancel, 200, "callee-tag", ""));
            h.callee_sends(&answer(&b, 487, "callee-tag", ""));
            let ack = invite_as("ACK", call_id);
            h.caller_sends(&ack);
        }
        // The callee never answers (Timer B, then 408 to the caller).
        4 => h.caller_sends(&invite(call_id, "0049301234", SDP)),
        // The callee rings forever (max_ring_time, then a CANCEL nobody answers).
        _ => {
            h.caller_sends(&invite(call_id, "0049301234", SDP));
            let b = h.take_one_request(CALLEE, Method::Invite);
            h.callee_sends(&answer(&b, 180, "callee-tag", ""));
        }
    }
    h.sent.clear();
}

#[test]
fn after_calls_of_every_ending_nothing_is_left_behind() {
    let budget = Arc::new(TxBudget::default());
    let mut h = Harness::with_deps(CONFIG, |deps| deps.budget = budget.clone());
    let idle = h.engine.resources();
    assert_eq!(idle, EngineResources::default());
    let kinds = 6;
    for i in 0..EACH * kinds {
        one_call(&mut h, i % kinds, &format!("leak-{i}"));
        // A second of traffic passes every 50 calls.
        if i % 50 == 49 {
            h.advance(Duration::from_secs(1));
            h.sent.clear();
        }
    }
    assert!(
        h.engine.resources().transactions > 0,
        "the run left work in flight"
    );
    // Long enough for max_ring_time, Timer B, the CANCEL's 64*T1 and every
    // transaction's lingering (Timer D's 32 s).
    h.advance(Duration::from_secs(600));
    h.collect();
    assert_eq!(h.cdrs.len(), EACH * kinds, "one CDR per call");
    assert_eq!(
        h.engine.resources(),
        EngineResources::default(),
        "back to idle"
    );
    assert_eq!((budget.live(), budget.sources()), (0, 0));
    assert_eq!(h.engine.poll_timeout(), None, "no timer armed");
}

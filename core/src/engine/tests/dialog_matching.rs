//! Regression (issue 15): an in-dialog request was matched by Call-ID and the
//! caller's From tag only, so a BYE with `To: …;tag=WRONG` from anyone who saw
//! the INVITE hung up a live call. A dialog is named by Call-ID, local tag and
//! remote tag together (RFC 3261 §12.2.2); a request that does not name one gets
//! 481 and changes nothing, on both legs, for every method, during teardown too.

use super::*;

const STRANGER: &str = "127.0.0.9:5061";
const IN_DIALOG: [&str; 6] = ["BYE", "INVITE", "UPDATE", "INFO", "NOTIFY", "PRACK"];

/// Nothing went to either peer but the answers to the caller and callee listed.
fn assert_untouched(h: &mut Harness) {
    let callee: Vec<Message> = h.take(CALLEE);
    assert!(callee.is_empty(), "nothing reaches the callee: {callee:?}");
    let caller: Vec<Message> = h.take(CALLER);
    assert!(caller.is_empty(), "nothing reaches the caller: {caller:?}");
    assert_eq!(h.engine.active_calls(), 1, "the call goes on");
    assert!(h.cdrs.is_empty(), "no CDR: the call did not end");
}

#[test]
fn a_caller_side_request_with_a_wrong_to_tag_gets_481_and_changes_nothing() {
    let mut h = Harness::new();
    let (_, a_tag) = connected_call(&mut h, "dm-1");
    for (n, method) in IN_DIALOG.iter().enumerate() {
        let seq = 10 + n as u32;
        let body = if *method == "INVITE" { SDP } else { "" };
        let wrong = caller_in_dialog(method, seq, "WRONG", "dm-1", &format!("w{n}"), body);
        h.caller_sends(&wrong);
        assert_eq!(
            h.finals(CALLER)[0].status,
            481,
            "{method} with To tag WRONG"
        );
        assert_untouched(&mut h);
        // The same from an address no trunk admits: refused, nothing more.
        let wrong = wrong.replace(&format!("z9hG4bK-w{n}"), &format!("z9hG4bK-s{n}"));
        h.receive_from(STRANGER, &wrong, false);
        let finals: Vec<u16> = h.finals(STRANGER).iter().map(|r| r.status).collect();
        assert_eq!(finals, vec![403], "{method}: refused, nothing more");
        assert_untouched(&mut h);
    }
    // The right tags still work: the CSeq space was not advanced by the forgeries.
    h.caller_sends(&caller_in_dialog("BYE", 2, &a_tag, "dm-1", "bye", ""));
    assert_eq!(h.statuses(CALLER), vec![200]);
    h.take_one_request(CALLEE, Method::Bye);
    assert_eq!(h.cdrs[0].end_reason, EndReason::CallerBye);
}

#[test]
fn a_request_with_the_right_to_tag_but_another_from_tag_is_not_in_the_dialog() {
    let mut h = Harness::new();
    let (_, a_tag) = connected_call(&mut h, "dm-2");
    let bye = caller_in_dialog("BYE", 2, &a_tag, "dm-2", "bye", "")
        .replace("tag=caller-tag", "tag=someone-else");
    h.caller_sends(&bye);
    assert_eq!(h.statuses(CALLER), vec![481]);
    assert_untouched(&mut h);
}

#[test]
fn an_ack_with_a_wrong_to_tag_does_not_confirm_the_answer() {
    let mut h = Harness::new();
    h.caller_sends(&invite("dm-3", "0049301234", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    let a_tag = h.finals(CALLER)[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog("ACK", 1, "WRONG", "dm-3", "ack-w", ""));
    assert!(h.take(CALLEE).is_empty(), "no ACK crosses to the callee");
    h.advance(Duration::from_millis(600));
    assert_eq!(
        h.statuses(CALLER),
        vec![200],
        "the 2xx is still retransmitted"
    );
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "dm-3", "ack", ""));
    h.take_one_request(CALLEE, Method::Ack);
}

#[test]
fn a_callee_side_request_must_carry_both_tags_of_the_b_dialog() {
    let mut h = Harness::new();
    let (b, _) = connected_call(&mut h, "dm-4");
    let our_tag = b.from.tag().expect("B-leg From tag").to_string();
    for (n, method) in IN_DIALOG.iter().enumerate() {
        let right = callee_in_dialog(method, 10 + n as u32, &b, &format!("c{n}"));
        // Vigil's tag replaced: not Vigil's dialog.
        let wrong_local = right.replace(&format!("tag={our_tag}"), "tag=WRONG");
        h.callee_sends(&wrong_local);
        assert_eq!(h.finals(CALLEE)[0].status, 481, "{method}, To tag WRONG");
        assert_untouched(&mut h);
        // The callee's tag replaced: another fork, not the answered one.
        let wrong_remote = right
            .replace("tag=callee-tag", "tag=other-fork")
            .replace(&format!("z9hG4bK-c{n}"), &format!("z9hG4bK-f{n}"));
        h.callee_sends(&wrong_remote);
        assert_eq!(h.finals(CALLEE)[0].status, 481, "{method}, From tag other");
        assert_untouched(&mut h);
    }
    h.callee_sends(&callee_in_dialog("BYE", 2, &b, "cbye"));
    assert_eq!(h.statuses(CALLEE), vec![200]);
    h.take_one_request(CALLER, Method::Bye);
    assert_eq!(h.cdrs[0].end_reason, EndReason::CalleeBye);
}

#[test]
fn nothing_matches_the_b_leg_before_the_callee_answers() {
    let mut h = Harness::new();
    h.caller_sends(&invite("dm-5", "0049301234", SDP));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 180, "callee-tag", ""));
    h.take(CALLER);
    h.callee_sends(&callee_in_dialog("BYE", 1, &b, "early-bye"));
    assert_eq!(h.statuses(CALLEE), vec![481]);
    assert_untouched(&mut h);
}

#[test]
fn a_cancel_on_the_invites_branch_must_name_the_same_call() {
    let mut h = Harness::new();
    h.caller_sends(&invite("dm-6", "0049301234", SDP));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 180, "callee-tag", ""));
    h.take(CALLER);
    let cancel = invite_as("CANCEL", "dm-6");
    // The right CANCEL from another address: the transaction is the caller's.
    h.receive_from(STRANGER, &cancel, true);
    assert_eq!(h.statuses(STRANGER), vec![481]);
    // Same source and branch (a spoofer), another Call-ID: not this call.
    h.caller_sends(&cancel.replace("Call-ID: dm-6", "Call-ID: other-call"));
    assert_eq!(h.statuses(CALLER), vec![481]);
    assert_untouched(&mut h);
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    assert_eq!(
        h.finals(CALLER)[0].status,
        200,
        "the call was not cancelled"
    );
}

#[test]
fn a_cancel_with_another_from_tag_is_not_the_callers() {
    let mut h = Harness::new();
    h.caller_sends(&invite("dm-8", "0049301234", SDP));
    h.take(CALLER);
    h.take_one_request(CALLEE, Method::Invite);
    let cancel = invite_as("CANCEL", "dm-8").replace("tag=caller-tag", "tag=intruder");
    h.caller_sends(&cancel);
    assert_eq!(h.statuses(CALLER), vec![481]);
    assert_untouched(&mut h);
}

#[test]
fn while_the_caller_owes_its_ack_a_closed_b_leg_answers_only_bye() {
    let mut h = Harness::new();
    h.caller_sends(&invite("dm-7", "0049301234", SDP));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    let a_tag = h.finals(CALLER)[0].to.tag().expect("tag").to_string();
    h.take(CALLEE);
    // The callee hangs up before the caller ACKed Vigil's 2xx: Vigil holds
    // the call until that ACK (§15) to BYE the caller.
    h.callee_sends(&callee_in_dialog("BYE", 1, &b, "cbye"));
    assert_eq!(h.statuses(CALLEE), vec![200]);
    assert_eq!(h.engine.active_calls(), 1);
    // The callee's dialog is over: anything but BYE is 481.
    h.callee_sends(&callee_in_dialog_with("INVITE", 2, &b, "late-reinv", SDP));
    assert_eq!(h.finals(CALLEE)[0].status, 481);
    h.callee_sends(&callee_in_dialog("INFO", 3, &b, "late-info"));
    assert_eq!(h.finals(CALLEE)[0].status, 481);
    h.callee_sends(&callee_in_dialog("BYE", 4, &b, "second-bye"));
    assert_eq!(h.statuses(CALLEE), vec![200]);
    // A forged BYE for the caller's side matches nothing, and the caller's
    // ACK with a wrong tag confirms nothing.
    h.receive_from(
        STRANGER,
        &caller_in_dialog("BYE", 2, "WRONG", "dm-7", "forged", ""),
        false,
    );
    assert_eq!(h.statuses(STRANGER), vec![403]);
    h.caller_sends(&caller_in_dialog("ACK", 1, "WRONG", "dm-7", "ack-w", ""));
    assert!(
        h.take(CALLER)
            .iter()
            .all(|m| matches!(m, Message::Response(_)))
    );
    // The caller's real ACK: now Vigil says BYE.
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "dm-7", "ack", ""));
    h.take_one_request(CALLER, Method::Bye);
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::CalleeBye);
}

#[test]
fn after_the_call_is_gone_its_dialogs_are_481() {
    let mut h = Harness::new();
    let (b, a_tag) = connected_call(&mut h, "dm-9");
    h.caller_sends(&caller_in_dialog("BYE", 2, &a_tag, "dm-9", "bye", ""));
    assert_eq!(h.statuses(CALLER), vec![200]);
    h.take_one_request(CALLEE, Method::Bye);
    h.callee_sends(&callee_in_dialog("BYE", 1, &b, "crossing"));
    assert_eq!(h.statuses(CALLEE), vec![481]);
    h.caller_sends(&caller_in_dialog(
        "INVITE",
        3,
        &a_tag,
        "dm-9",
        "after-bye",
        SDP,
    ));
    assert_eq!(h.finals(CALLER)[0].status, 481);
    assert!(h.take(CALLEE).is_empty());
    assert_eq!(h.cdrs.len(), 1);
}

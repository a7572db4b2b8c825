//! RFC 3262 through the engine, each leg on its own: reliable provisionals
//! to a caller that takes them (RSeq, retransmission, the 2xx held for the
//! PRACK, 5xx when no PRACK comes), PRACKs to a callee that sends them,
//! and the late offer whose answer travels in the PRACKs.

use super::*;
use crate::sip::{RAck, RSeq};

/// The caller's INVITE with a `Supported` or `Require` of `100rel`.
fn invite_100rel(call_id: &str, header: &str, body: &str) -> String {
    invite(call_id, "0049301234", body).replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{header}: 100rel\r\n"),
    )
}

/// A reliable provisional from the callee (RFC 3262 §3).
fn reliable(req: &Request, status: u16, rseq: u32, body: &str) -> String {
    answer(req, status, "callee-tag", body).replacen(
        "\r\n",
        &format!("\r\nRequire: 100rel\r\nRSeq: {rseq}\r\nContact: <sip:callee@127.0.0.3:5080>\r\n"),
        1,
    )
}

/// The caller's PRACK for a reliable provisional Vigil sent it.
fn caller_prack(call_id: &str, a_tag: &str, cseq: u32, rseq: u32, body: &str) -> String {
    caller_in_dialog("PRACK", cseq, a_tag, call_id, &format!("pr{cseq}"), body).replacen(
        "Contact:",
        &format!("RAck: {rseq} 1 INVITE\r\nContact:"),
        1,
    )
}

fn rseq(r: &Response) -> u32 {
    RSeq::of(&r.headers).expect("RSeq").0
}

fn requests(msgs: Vec<Message>, method: Method) -> Vec<Request> {
    msgs.into_iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method == method => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn a_caller_requiring_100rel_gets_every_provisional_reliably_and_the_2xx_after_its_prack() {
    let mut h = Harness::new();
    h.caller_sends(&invite_100rel("r1", "Require", SDP));
    assert_eq!(h.statuses(CALLER), vec![100]);
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert!(b.headers.has_tag(&HeaderName::Supported, "100rel"));
    assert!(!b.headers.has_tag(&HeaderName::Require, "100rel"));
    // The callee knows nothing of 100rel: a plain 180, then 183 with SDP.
    h.callee_sends(&answer(&b, 180, "callee-tag", ""));
    h.callee_sends(&answer(&b, 183, "callee-tag", SDP));
    let r = h.responses(CALLER);
    assert_eq!(r.len(), 1, "the 183 waits for the 180's PRACK");
    assert_eq!(r[0].status, 180);
    assert!(r[0].headers.has_tag(&HeaderName::Require, "100rel"));
    let first = rseq(&r[0]);
    let a_tag = r[0].to.tag().expect("tag").to_string();
    // The callee answers while the 183 is still held: the 2xx waits too.
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    assert!(h.responses(CALLER).is_empty());
    h.caller_sends(&caller_prack("r1", &a_tag, 2, first, ""));
    let r = h.responses(CALLER);
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 183]
    );
    assert_eq!(r[0].cseq.method, Method::Prack);
    assert_eq!(rseq(&r[1]), first + 1, "RSeq counts up by one");
    // A PRACK for something never sent, or already acknowledged: 481.
    h.caller_sends(&caller_prack("r1", &a_tag, 3, first, ""));
    assert_eq!(h.statuses(CALLER), vec![481]);
    h.caller_sends(&caller_prack("r1", &a_tag, 4, first + 1, ""));
    let r = h.responses(CALLER);
    assert_eq!(
        r.iter()
            .map(|r| (r.status, r.cseq.method.clone()))
            .collect::<Vec<_>>(),
        vec![(200, Method::Prack), (200, Method::Invite)]
    );
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "r1", "ack", ""));
    let ack = h.take_one_request(CALLEE, Method::Ack);
    assert_eq!(ack.cseq.seq, 1);
    h.caller_sends(&caller_in_dialog("BYE", 5, &a_tag, "r1", "bye", ""));
    assert_eq!(h.statuses(CALLER), vec![200]);
    let _ = h.take_one_request(CALLEE, Method::Bye);
    assert_eq!(h.cdrs.len(), 1);
    assert!(h.cdrs[0].answer.is_some());
    assert_eq!(h.cdrs[0].end_reason, EndReason::CallerBye);
}

#[test]
fn a_callee_requiring_100rel_is_pracked_in_order_whatever_the_caller_supports() {
    let mut h = Harness::new();
    h.caller_sends(&invite("r2", "0049301234", SDP));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&reliable(&b, 183, 5, SDP));
    let msgs = h.take(CALLEE);
    let pracks = requests(msgs, Method::Prack);
    assert_eq!(pracks.len(), 1);
    let prack = &pracks[0];
    assert_eq!(
        RAck::of(&prack.headers),
        Some(RAck {
            rseq: 5,
            cseq: 1,
            method: Method::Invite
        })
    );
    assert_eq!(prack.cseq.seq, 2, "the early dialog's next CSeq");
    assert_eq!(prack.to.tag(), Some("callee-tag"));
    assert_eq!(prack.uri.to_string(), "sip:callee@127.0.0.3:5080");
    // The caller (no 100rel) gets the 183 unreliably.
    let r = h.responses(CALLER);
    assert_eq!(r.len(), 1);
    assert!(r[0].headers.get(&HeaderName::RSeq).is_none());
    assert!(!r[0].headers.has_tag(&HeaderName::Require, "100rel"));
    // A retransmission (same RSeq) and one past a gap (7) are dropped.
    h.callee_sends(&reliable(&b, 183, 5, SDP));
    h.callee_sends(&reliable(&b, 180, 7, ""));
    assert!(requests(h.take(CALLEE), Method::Prack).is_empty());
    assert!(h.responses(CALLER).is_empty(), "neither is relayed");
    // The missing 6, then 7: each PRACKed, in order.
    h.callee_sends(&reliable(&b, 180, 6, ""));
    h.callee_sends(&reliable(&b, 180, 7, ""));
    let pracks = requests(h.take(CALLEE), Method::Prack);
    let racks: Vec<(u32, u32)> = pracks
        .iter()
        .map(|p| (RAck::of(&p.headers).expect("RAck").rseq, p.cseq.seq))
        .collect();
    assert_eq!(racks, vec![(6, 3), (7, 4)]);
    // Answered: the confirmed dialog counts on after the PRACKs.
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    let ok = h.finals(CALLER);
    let a_tag = ok[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "r2", "ack", ""));
    h.caller_sends(&caller_in_dialog("BYE", 2, &a_tag, "r2", "bye", ""));
    let bye = requests(h.take(CALLEE), Method::Bye);
    assert_eq!(bye.len(), 1);
    assert_eq!(
        bye[0].cseq.seq, 5,
        "after the early dialog's PRACKs (2..=4)"
    );
}

#[test]
fn a_reliable_provisional_never_pracked_fails_the_call_with_5xx_and_cancels_the_callee() {
    let mut h = Harness::new();
    h.caller_sends(&invite_100rel("r3", "Supported", SDP));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 180, "callee-tag", ""));
    h.callee_sends(&answer(&b, 183, "callee-tag", SDP));
    let r = h.responses(CALLER);
    assert_eq!(r.len(), 2);
    assert!(
        r[0].headers.get(&HeaderName::RSeq).is_none(),
        "180 without SDP: unreliable"
    );
    assert!(
        r[1].headers.has_tag(&HeaderName::Require, "100rel"),
        "183 with SDP: reliable"
    );
    let sent_rseq = rseq(&r[1]);
    h.advance(Duration::from_secs(20));
    let resent = h.responses(CALLER);
    assert_eq!(resent.len(), 5, "at 0.5, 1.5, 3.5, 7.5 and 15.5 s");
    assert!(
        resent
            .iter()
            .all(|r| r.status == 183 && rseq(r) == sent_rseq)
    );
    assert!(h.cdrs.is_empty());
    h.advance(Duration::from_secs(13));
    let r = h.responses(CALLER);
    assert_eq!(r.last().map(|r| r.status), Some(504), "{r:?}");
    let _cancel = h.take_one_request(CALLEE, Method::Cancel);
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Rejected);
    assert_eq!(h.cdrs[0].ended_by, EndedBy::Switch);
    assert_eq!(h.cdrs[0].sip_code, Some(504));
}

#[test]
fn a_late_offer_in_a_reliable_183_is_answered_in_the_callers_prack() {
    let mut h = Harness::new();
    h.caller_sends(&invite_100rel("r4", "Supported", ""));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert!(b.body.is_empty());
    h.callee_sends(&reliable(&b, 183, 1, SDP));
    assert!(
        requests(h.take(CALLEE), Method::Prack).is_empty(),
        "the PRACK waits for the caller's answer"
    );
    let r = h.responses(CALLER);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].body, SDP.as_bytes(), "the offer crosses");
    let a_tag = r[0].to.tag().expect("tag").to_string();
    let answer_sdp = SDP.replace("4000", "4002");
    h.caller_sends(&caller_prack("r4", &a_tag, 2, rseq(&r[0]), &answer_sdp));
    assert_eq!(h.statuses(CALLER), vec![200]);
    let pracks = requests(h.take(CALLEE), Method::Prack);
    assert_eq!(pracks.len(), 1);
    assert_eq!(pracks[0].body, answer_sdp.as_bytes(), "the answer crosses");
    assert_eq!(RAck::of(&pracks[0].headers).map(|r| r.rseq), Some(1));
}

#[test]
fn prack_disabled_refuses_a_caller_that_requires_it_and_required_one_that_lacks_it() {
    let disabled = CONFIG.replace(
        "    route_to: carrier\n",
        "    route_to: carrier\n    prack: disabled\n",
    );
    let mut h = Harness::with_config(&disabled);
    h.caller_sends(&invite_100rel("r5", "Require", SDP));
    let r = h.responses(CALLER);
    assert_eq!(r.last().map(|r| r.status), Some(420));
    assert_eq!(
        r.last()
            .and_then(|r| r.headers.get(&HeaderName::Unsupported)),
        Some("100rel")
    );
    // Merely supported: the call goes on, with unreliable provisionals.
    h.caller_sends(&invite_100rel("r6", "Supported", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 183, "callee-tag", SDP));
    let r = h.responses(CALLER);
    assert_eq!(r.last().map(|r| r.status), Some(183));
    assert!(r.iter().all(|r| r.headers.get(&HeaderName::RSeq).is_none()));

    let required = CONFIG.replace(
        "    route_to: carrier\n",
        "    route_to: carrier\n    prack: required\n",
    );
    let mut h = Harness::with_config(&required);
    h.caller_sends(&invite("r7", "0049301234", SDP));
    let r = h.responses(CALLER);
    assert_eq!(r.last().map(|r| r.status), Some(421));
    assert_eq!(
        r.last().and_then(|r| r.headers.get(&HeaderName::Require)),
        Some("100rel")
    );
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn a_trunk_with_prack_required_gets_require_100rel_on_its_invites() {
    let required = CONFIG.replace(
        "    outbound: { to: \"127.0.0.3:5080\" }\n",
        "    outbound: { to: \"127.0.0.3:5080\" }\n    prack: required\n",
    );
    let mut h = Harness::with_config(&required);
    h.caller_sends(&invite("r8", "0049301234", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert!(b.headers.has_tag(&HeaderName::Require, "100rel"));
    assert!(b.headers.has_tag(&HeaderName::Supported, "100rel"));
}

/// An UPDATE from the callee inside the B leg's early dialog.
fn callee_update(b_invite: &Request, cseq: u32, body: &str) -> String {
    callee_in_dialog_with("UPDATE", cseq, b_invite, &format!("up{cseq}"), body)
}

#[test]
fn an_update_in_the_early_dialog_crosses_both_ways_before_the_answer() {
    let mut h = Harness::new();
    h.caller_sends(&invite_100rel("u1", "Supported", SDP));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&reliable(&b, 183, 1, SDP));
    let prack = requests(h.take(CALLEE), Method::Prack);
    assert_eq!(prack.len(), 1);
    assert_eq!(prack[0].cseq.seq, 2);
    let r = h.responses(CALLER);
    let a_tag = r[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_prack("u1", &a_tag, 2, rseq(&r[0]), ""));
    assert_eq!(h.statuses(CALLER), vec![200]);
    // The caller changes codecs before the answer.
    let pcma = SDP.replace("RTP/AVP 0", "RTP/AVP 8");
    h.caller_sends(&caller_in_dialog("UPDATE", 3, &a_tag, "u1", "upd3", &pcma));
    let updates = requests(h.take(CALLEE), Method::Update);
    assert_eq!(updates.len(), 1);
    let update = &updates[0];
    assert_eq!(update.cseq.seq, 3, "after the PRACK in the early dialog");
    assert_eq!(update.to.tag(), Some("callee-tag"));
    assert_eq!(update.body, pcma.as_bytes());
    assert!(
        update.headers.get(&HeaderName::SessionExpires).is_none(),
        "no refresh before answer"
    );
    let ok = callee_answers(update, 200, &pcma);
    h.callee_sends(&ok);
    let r = h.responses(CALLER);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].status, r[0].cseq.method.clone()),
        (200, Method::Update)
    );
    assert_eq!(r[0].body, pcma.as_bytes());
    // The callee's own UPDATE goes to the caller in the A early dialog.
    h.callee_sends(&callee_update(&b, 5, SDP));
    let to_caller = requests(h.take(CALLER), Method::Update);
    assert_eq!(to_caller.len(), 1);
    assert_eq!(to_caller[0].to.tag(), Some("caller-tag"));
    assert_eq!(to_caller[0].from.tag(), Some(a_tag.as_str()));
    let a_seq = to_caller[0].cseq.seq;
    h.caller_sends(&caller_answers(&to_caller[0], 200, SDP));
    assert_eq!(h.statuses(CALLEE), vec![200]);
    // A stale CSeq in the early dialog: 500.
    h.callee_sends(&callee_update(&b, 4, SDP));
    assert_eq!(h.statuses(CALLEE), vec![500]);
    // Answered: both confirmed dialogs count on after the early requests.
    h.callee_sends(&answer(&b, 200, "callee-tag", ""));
    let ok = h.finals(CALLER);
    assert_eq!(ok.len(), 1);
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "u1", "ack", ""));
    h.callee_sends(&callee_in_dialog("BYE", 6, &b, "bye6"));
    let bye = requests(h.take(CALLER), Method::Bye);
    assert_eq!(bye.len(), 1);
    assert!(bye[0].cseq.seq > a_seq, "{} after {a_seq}", bye[0].cseq.seq);
}

#[test]
fn an_early_update_before_any_early_dialog_is_481_and_glare_491() {
    let mut h = Harness::new();
    h.caller_sends(&invite("u2", "0049301234", SDP));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    // The callee's UPDATE before any provisional made an early dialog.
    h.callee_sends(&callee_update(&b, 2, SDP));
    assert_eq!(h.statuses(CALLEE), vec![481]);
    h.callee_sends(&answer(&b, 183, "callee-tag", SDP));
    let r = h.responses(CALLER);
    let a_tag = r[0].to.tag().expect("tag").to_string();
    // The caller's offer is in flight when the callee's crosses it: 491.
    h.caller_sends(&caller_in_dialog("UPDATE", 2, &a_tag, "u2", "upd2", SDP));
    assert_eq!(requests(h.take(CALLEE), Method::Update).len(), 1);
    h.callee_sends(&callee_update(&b, 3, SDP));
    assert_eq!(h.statuses(CALLEE), vec![491]);
}

/// A response from the callee to a request Vigil sent it in a dialog.
fn callee_answers(req: &Request, status: u16, body: &str) -> String {
    let mut r = req.response(status);
    r.headers
        .push(HeaderName::Contact, "<sip:callee@127.0.0.3:5080>");
    if !body.is_empty() {
        r.headers.push(HeaderName::ContentType, "application/sdp");
        r.body = body.as_bytes().to_vec();
    }
    String::from_utf8(r.encode()).expect("utf8")
}

/// The same from the caller.
fn caller_answers(req: &Request, status: u16, body: &str) -> String {
    callee_answers(req, status, body).replace("callee@127.0.0.3:5080", "1001@127.0.0.2:5061")
}

#[test]
fn failover_after_a_pracked_provisional_starts_afresh_at_the_next_gateway() {
    use super::failover::{GW1, GW2, THREE_GATEWAYS};
    let mut h = Harness::with_config(THREE_GATEWAYS);
    h.caller_sends(&invite_100rel("fo-r", "Supported", SDP));
    h.take(CALLER);
    let first = h.take_one_request(GW1, Method::Invite);
    h.receive_from(GW1, &reliable(&first, 180, 7, ""), true);
    let pracks = requests(h.take(GW1), Method::Prack);
    assert_eq!(
        RAck::of(&pracks[0].headers).map(|r| (r.rseq, r.cseq)),
        Some((7, 1))
    );
    let r = h.responses(CALLER);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].headers.get(&HeaderName::RSeq).is_none(),
        "no SDP: unreliable"
    );
    h.receive_from(GW1, &answer(&first, 503, "callee-tag", ""), true);
    h.take_one_request(GW1, Method::Ack);
    let second = h.take_one_request(GW2, Method::Invite);
    assert_eq!(second.cseq.seq, 2);
    assert!(second.headers.has_tag(&HeaderName::Supported, "100rel"));
    // The next gateway's early dialog starts its own RSeq sequence.
    let at_gw2 = |m: String| m.replace("callee@127.0.0.3:5080", "callee@127.0.0.4:5080");
    h.receive_from(GW2, &at_gw2(reliable(&second, 183, 1, SDP)), true);
    let pracks = requests(h.take(GW2), Method::Prack);
    assert_eq!(pracks.len(), 1);
    assert_eq!(
        RAck::of(&pracks[0].headers).map(|r| (r.rseq, r.cseq)),
        Some((1, 2))
    );
    assert_eq!(pracks[0].cseq.seq, 3);
    let r = h.responses(CALLER);
    assert_eq!(r.len(), 1);
    let a_tag = r[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_prack("fo-r", &a_tag, 2, rseq(&r[0]), ""));
    h.receive_from(GW2, &at_gw2(answer(&second, 200, "callee-tag", SDP)), true);
    let finals = h.finals(CALLER);
    assert_eq!(
        finals
            .iter()
            .map(|r| (r.status, r.cseq.method.clone()))
            .collect::<Vec<_>>(),
        vec![(200, Method::Prack), (200, Method::Invite)]
    );
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "fo-r", "ack", ""));
    h.caller_sends(&caller_in_dialog("BYE", 3, &a_tag, "fo-r", "bye", ""));
    let bye = h.take_one_request(GW2, Method::Bye);
    assert_eq!(bye.cseq.seq, 4, "after the PRACK");
    assert_eq!(h.cdrs.len(), 1);
    let attempts: Vec<&str> = h.cdrs[0]
        .attempts
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
}

/// The callee answered, but its 2xx waits for the caller's PRACK, which
/// never comes: the caller gets 504, the callee ACK and BYE, and the CDR
/// bills nothing (the caller was never connected).
#[test]
fn a_held_answer_whose_prack_never_comes_is_not_billed() {
    let mut h = Harness::new();
    h.caller_sends(&invite_100rel("r9", "Supported", SDP));
    h.take(CALLER);
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 183, "callee-tag", SDP));
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    let r = h.responses(CALLER);
    assert_eq!(r.iter().map(|r| r.status).collect::<Vec<_>>(), vec![183]);
    h.advance(Duration::from_secs(33));
    let finals = h.finals(CALLER);
    assert!(
        !finals.is_empty() && finals.iter().all(|r| r.status == 504),
        "{finals:?}"
    );
    let msgs = h.take(CALLEE);
    assert_eq!(requests(msgs.clone(), Method::Ack).len(), 1);
    let mut byes = requests(msgs, Method::Bye);
    byes.dedup_by(|a, b| a.top_via().branch() == b.top_via().branch());
    assert_eq!(byes.len(), 1, "one BYE (and its retransmissions)");
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].sip_code, Some(504));
    assert!(
        h.cdrs[0].answer.is_none(),
        "never connected: {:?}",
        h.cdrs[0].answer
    );
}

#[test]
fn options_lists_100rel_unless_prack_is_disabled() {
    let options = |h: &mut Harness| {
        let req =
            invite_as("OPTIONS", "o1").replace("Contact:", "Accept: application/sdp\r\nContact:");
        h.caller_sends(&req);
        let r = h.responses(CALLER);
        r.last()
            .and_then(|r| r.headers.get(&HeaderName::Supported).map(str::to_string))
    };
    let mut h = Harness::new();
    assert_eq!(options(&mut h).as_deref(), Some("timer, 100rel"));
    let mut h = Harness::with_config(&(CONFIG.to_string() + "sip: { prack: disabled }\n"));
    assert_eq!(options(&mut h).as_deref(), Some("timer"));
}

//! Failover across a trunk's gateways (issue 18), with the gateways played
//! by the test and the clock jumped: a 503 with Retry-After rests its
//! gateway, a silent one is left after `invite_timeout`, the caller sees
//! one call, and the CDR lists every attempt.

use super::*;

pub(super) const GW1: &str = "127.0.0.3:5080";
pub(super) const GW2: &str = "127.0.0.4:5080";
const GW3: &str = "127.0.0.5:5080";

pub(super) const THREE_GATEWAYS: &str = r#"
listen: ["udp:127.0.0.1:5060"]
trunks:
  - name: pbx
    inbound: { from: ["127.0.0.2"] }
    route_to: carrier
  - name: carrier
    outbound:
      gateways:
        - { to: "127.0.0.3:5080", priority: 1 }
        - { to: "127.0.0.4:5080", priority: 2 }
        - { to: "127.0.0.5:5080", priority: 3 }
      invite_timeout: 3
cdr: { path: "cdr.jsonl" }
"#;

/// The one new INVITE sent to `gateway` (retransmissions count once).
fn invite_at(h: &mut Harness, gateway: &str) -> Request {
    h.take_one_request(gateway, Method::Invite)
}

fn with_retry_after(response: String, seconds: u32) -> String {
    response.replacen(
        "Content-Length",
        &format!("Retry-After: {seconds}\r\nContent-Length"),
        1,
    )
}

fn outcomes(cdr: &CdrRecord) -> Vec<(&str, &str)> {
    cdr.attempts
        .iter()
        .map(|a| (a.gateway.as_str(), a.outcome.as_str()))
        .collect()
}

#[test]
fn a_call_fails_over_past_a_503_and_a_silent_gateway_and_the_caller_sees_one_call() {
    let mut h = Harness::with_config(THREE_GATEWAYS);
    h.caller_sends(&invite("fo-1", "0049301234", SDP));
    assert_eq!(h.statuses(CALLER), vec![100]);
    let first = invite_at(&mut h, GW1);
    h.receive_from(
        GW1,
        &with_retry_after(answer(&first, 503, "gw1", ""), 60),
        true,
    );
    h.take_one_request(GW1, Method::Ack);
    let second = invite_at(&mut h, GW2);
    assert_eq!(second.call_id, first.call_id, "one B-leg dialog-to-be");
    assert_eq!(second.from.tag(), first.from.tag());
    assert_eq!(second.cseq.seq, first.cseq.seq + 1);
    assert_ne!(second.top_via().branch(), first.top_via().branch());
    assert_eq!(second.uri.to_string(), "sip:0049301234@127.0.0.4:5080");
    assert_eq!(second.body, first.body, "the caller's offer again");
    assert!(
        h.statuses(CALLER).is_empty(),
        "the caller never sees the 503"
    );
    // The second gateway never answers: after invite_timeout, the third.
    h.advance(Duration::from_millis(2900));
    assert!(h.take(GW3).is_empty());
    h.advance(Duration::from_millis(200));
    let third = invite_at(&mut h, GW3);
    assert_eq!(third.cseq.seq, second.cseq.seq + 1);
    h.receive_from(GW3, &answer(&third, 180, "gw3", ""), true);
    h.receive_from(GW3, &answer(&third, 200, "gw3", SDP), true);
    let to_caller = h.responses(CALLER);
    let statuses: Vec<u16> = to_caller.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [180, 200]);
    let a_tag = to_caller[1].to.tag().expect("a To tag").to_string();
    assert!(
        h.take(GW2)
            .iter()
            .all(|m| matches!(m, Message::Request(r) if r.method == Method::Invite)),
        "only the silent gateway's own INVITE retransmissions, nothing after the timeout"
    );
    h.caller_sends(&caller_in_dialog(
        "ACK",
        1,
        &a_tag,
        "fo-1",
        "z9hG4bK-ack",
        "",
    ));
    h.caller_sends(&caller_in_dialog(
        "BYE",
        2,
        &a_tag,
        "fo-1",
        "z9hG4bK-bye",
        "",
    ));
    let cdr = h.cdrs.last().expect("a CDR");
    assert_eq!(cdr.end_reason, EndReason::CallerBye);
    assert_eq!(
        outcomes(cdr),
        [
            ("127.0.0.3:5080", "503"),
            ("127.0.0.4:5080", "no-response"),
            ("127.0.0.5:5080", "200")
        ]
    );
    // The 503's gateway rests for its Retry-After: the next call starts at
    // the second.
    h.advance(Duration::from_secs(1));
    h.sent.clear();
    h.caller_sends(&invite("fo-2", "0049301234", SDP));
    assert!(h.take(GW1).is_empty(), "resting for 60 s");
    invite_at(&mut h, GW2);
    let snapshot = h.engine.gateways().snapshot(h.now);
    assert_eq!(snapshot[0].state, "resting");
    assert_eq!(snapshot[0].failures, 1);
    assert_eq!(snapshot[1].calls_in_flight, 1);
}

#[test]
fn a_busy_callee_is_not_a_gateway_failure() {
    let mut h = Harness::with_config(THREE_GATEWAYS);
    h.caller_sends(&invite("fo-3", "0049301234", SDP));
    let first = invite_at(&mut h, GW1);
    h.receive_from(GW1, &answer(&first, 486, "gw1", ""), true);
    assert_eq!(h.finals(CALLER)[0].status, 486);
    assert!(h.take(GW2).is_empty());
    assert_eq!(outcomes(&h.cdrs[0]), [("127.0.0.3:5080", "486")]);
}

#[test]
fn after_early_media_a_failure_is_the_callers() {
    let mut h = Harness::with_config(THREE_GATEWAYS);
    h.caller_sends(&invite("fo-4", "0049301234", SDP));
    let first = invite_at(&mut h, GW1);
    h.receive_from(GW1, &answer(&first, 183, "gw1", SDP), true);
    h.receive_from(GW1, &answer(&first, 503, "gw1", ""), true);
    let statuses: Vec<u16> = h.responses(CALLER).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [100, 183, 503], "the caller heard this gateway");
    assert!(h.take(GW2).is_empty());

    let allowed = THREE_GATEWAYS.replace("cdr:", "sip: { failover_after_early_media: true }\ncdr:");
    let mut h = Harness::with_config(&allowed);
    h.caller_sends(&invite("fo-5", "0049301234", SDP));
    let first = invite_at(&mut h, GW1);
    h.receive_from(GW1, &answer(&first, 183, "gw1", SDP), true);
    h.receive_from(GW1, &answer(&first, 503, "gw1", ""), true);
    invite_at(&mut h, GW2);
}

#[test]
fn the_last_gateways_failure_reaches_the_caller() {
    let mut h = Harness::with_config(THREE_GATEWAYS);
    h.caller_sends(&invite("fo-6", "0049301234", SDP));
    for (gw, tag) in [(GW1, "gw1"), (GW2, "gw2"), (GW3, "gw3")] {
        let inv = invite_at(&mut h, gw);
        h.receive_from(gw, &answer(&inv, 502, tag, ""), true);
    }
    assert_eq!(h.finals(CALLER)[0].status, 502);
    let cdr = &h.cdrs[0];
    assert_eq!(cdr.sip_code, Some(502));
    assert_eq!(cdr.attempts.len(), 3);
    assert!(cdr.attempts.iter().all(|a| a.outcome == "502"));
}

#[test]
fn a_cancel_during_failover_cancels_the_gateway_being_tried() {
    let mut h = Harness::with_config(THREE_GATEWAYS);
    let inv = invite("fo-7", "0049301234", SDP);
    h.caller_sends(&inv);
    let first = invite_at(&mut h, GW1);
    h.receive_from(GW1, &answer(&first, 500, "gw1", ""), true);
    let second = invite_at(&mut h, GW2);
    h.receive_from(GW2, &answer(&second, 180, "gw2", ""), true);
    h.caller_sends(
        &inv.replacen("INVITE sip", "CANCEL sip", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
    );
    let cancel = h.take_one_request(GW2, Method::Cancel);
    assert_eq!(cancel.top_via().branch(), second.top_via().branch());
    assert_eq!(h.cdrs[0].end_reason, EndReason::Cancelled);
    assert_eq!(
        outcomes(&h.cdrs[0]),
        [("127.0.0.3:5080", "500"), ("127.0.0.4:5080", "none")]
    );
}

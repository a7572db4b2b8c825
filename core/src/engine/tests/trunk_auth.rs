//! A carrier that challenges Vigil's requests in its dialogs (issue 18): the
//! trunk's `auth` answers each 401/407 once — refreshes, relayed requests and
//! BYE — and the caller never sees the challenge; a second challenge to the
//! same request fails it with that status.

use super::session_timers::{methods, timed_call, timer_answer, with_headers};
use super::*;
use crate::sip::{DigestAlgorithm, DigestCredentials, digest_response};

fn config() -> String {
    CONFIG.replace(
        "    outbound: { to: \"127.0.0.3:5080\" }\n",
        "    outbound: { to: \"127.0.0.3:5080\" }\n    auth: { user: vigil, password: s3cret }\n",
    )
}

/// The carrier's challenge to `req`.
fn challenge(req: &Request, status: u16, nonce: &str) -> String {
    let header = if status == 407 {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    with_headers(
        &answer(req, status, "callee-tag", ""),
        &format!(
            "{header}: Digest realm=\"carrier\", nonce=\"{nonce}\", algorithm=SHA-256, qop=\"auth\""
        ),
    )
}

/// The one `method` Vigil sent the callee, checked to carry valid
/// credentials in `header` for the carrier's `nonce`.
fn authorized(h: &mut Harness, method: Method, header: HeaderName, nonce: &str) -> Request {
    let req = h.take_one_request(CALLEE, method.clone());
    let creds = DigestCredentials::parse(req.headers.get(&header).expect("credentials"))
        .expect("valid credentials");
    assert_eq!(
        (creds.username.as_str(), creds.nonce.as_str()),
        ("vigil", nonce)
    );
    assert_eq!(creds.uri, req.uri.to_string());
    assert_eq!(
        creds.response,
        digest_response(DigestAlgorithm::Sha256, &creds, "s3cret", method.as_str()),
        "the carrier accepts them"
    );
    req
}

/// UPDATE refresh → 407 → the same UPDATE with Proxy-Authorization and the
/// next CSeq → 200: refreshed, the caller saw nothing. Then the caller hangs
/// up: BYE → 401 → BYE with Authorization → 200, and the call is gone.
#[test]
fn refreshes_and_bye_answer_the_carriers_challenges_once() {
    let mut h = Harness::with_config(&config());
    let (_, a_tag) = timed_call(&mut h, "auth-1", "600;refresher=uac", "600;refresher=uac");
    h.advance(Duration::from_secs(300));
    let update = h.take_one_request(CALLEE, Method::Update);
    assert_eq!(update.headers.get(&HeaderName::ProxyAuthorization), None);
    h.callee_sends(&challenge(&update, 407, "n-upd"));
    let retry = authorized(
        &mut h,
        Method::Update,
        HeaderName::ProxyAuthorization,
        "n-upd",
    );
    assert_eq!(retry.cseq.seq, update.cseq.seq + 1);
    assert_ne!(retry.top_via().branch(), update.top_via().branch());
    h.callee_sends(&timer_answer(
        &retry,
        200,
        "Session-Expires: 600;refresher=uac",
    ));
    assert!(h.take(CALLER).is_empty(), "the caller sees no challenge");
    assert!(h.cdrs.is_empty(), "refreshed, not failed");

    h.caller_sends(&caller_in_dialog("BYE", 2, &a_tag, "auth-1", "bye", ""));
    assert_eq!(h.statuses(CALLER), vec![200]);
    let bye = h.take_one_request(CALLEE, Method::Bye);
    assert_eq!(bye.cseq.seq, retry.cseq.seq + 1, "CSeq counts on");
    h.callee_sends(&challenge(&bye, 401, "n-bye"));
    let bye2 = authorized(&mut h, Method::Bye, HeaderName::Authorization, "n-bye");
    assert_eq!(bye2.cseq.seq, bye.cseq.seq + 1);
    assert_eq!(h.cdrs.len(), 1, "the call has ended");
    assert_eq!(h.cdrs[0].end_reason, EndReason::CallerBye);
    assert_eq!(h.engine.active_calls(), 1, "kept for its BYE's answer");
    h.callee_sends(&answer(&bye2, 200, "callee-tag", ""));
    assert_eq!(h.engine.active_calls(), 0);
    // Nothing is left waiting: no retransmission after the transaction timeout.
    h.advance(Duration::from_secs(64));
    assert!(h.take(CALLEE).is_empty());
}

/// A request that carried credentials and is challenged again was refused:
/// the refresh fails with 407 and the call ends like any failed refresh.
#[test]
fn a_second_challenge_fails_the_refresh_with_its_status() {
    let mut h = Harness::with_config(&config());
    timed_call(&mut h, "auth-2", "600;refresher=uac", "600;refresher=uac");
    h.advance(Duration::from_secs(300));
    let update = h.take_one_request(CALLEE, Method::Update);
    h.callee_sends(&challenge(&update, 407, "n1"));
    let retry = authorized(&mut h, Method::Update, HeaderName::ProxyAuthorization, "n1");
    h.callee_sends(&challenge(&retry, 407, "n2"));
    let to_callee = h.take(CALLEE);
    assert!(
        methods(&to_callee).iter().any(|m| m == "BYE"),
        "the call ends: {:?}",
        methods(&to_callee)
    );
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::SessionTimeout);
    assert_eq!(h.cdrs[0].refresh_failure.as_deref(), Some("407"));
}

/// An INFO relayed from the caller is challenged: resent with credentials,
/// and the caller gets the carrier's final answer to that, never the 401.
#[test]
fn a_relayed_request_is_authorized_and_its_answer_relayed() {
    let mut h = Harness::with_config(&config());
    let (_, a_tag) = connected_call(&mut h, "auth-3");
    h.caller_sends(&caller_in_dialog("INFO", 2, &a_tag, "auth-3", "info", ""));
    let info = h.take_one_request(CALLEE, Method::Info);
    h.callee_sends(&challenge(&info, 401, "n-info"));
    assert!(h.finals(CALLER).is_empty(), "the challenge is not relayed");
    let retry = authorized(&mut h, Method::Info, HeaderName::Authorization, "n-info");
    h.callee_sends(&answer(&retry, 200, "callee-tag", ""));
    let finals = h.finals(CALLER);
    assert_eq!(
        finals.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200]
    );
    assert_eq!(finals[0].cseq.seq, 2, "the caller's own CSeq");
}

/// A trunk without `auth`: a challenge is a failure like any other, and
/// Vigil keeps no copy of what it sent.
#[test]
fn without_auth_a_challenge_is_relayed_as_a_failure() {
    let mut h = Harness::new();
    let (_, a_tag) = connected_call(&mut h, "auth-4");
    h.caller_sends(&caller_in_dialog("INFO", 2, &a_tag, "auth-4", "info", ""));
    let info = h.take_one_request(CALLEE, Method::Info);
    h.callee_sends(&challenge(&info, 401, "n"));
    let finals = h.finals(CALLER);
    assert_eq!(
        finals.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![401]
    );
    assert_eq!(
        finals[0].headers.get(&HeaderName::WwwAuthenticate),
        None,
        "the carrier's challenge stays with Vigil"
    );
    assert!(h.take(CALLEE).is_empty());
}

/// A re-INVITE refresh answered 407, sent again with credentials and
/// answered 2xx: its ACK carries the same credentials (RFC 3261 §13.2.2.4).
#[test]
fn the_ack_of_an_authorized_reinvite_repeats_its_credentials() {
    let text = format!(
        "{}session_timer: {{ refresh_method: reinvite }}\n",
        config()
    );
    let mut h = Harness::with_config(&text);
    timed_call(&mut h, "auth-5", "600;refresher=uac", "600;refresher=uac");
    h.advance(Duration::from_secs(300));
    let reinvite = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&challenge(&reinvite, 407, "n-re"));
    let msgs = h.take(CALLEE);
    assert!(
        msgs.iter()
            .any(|m| matches!(m, Message::Request(r) if r.method == Method::Ack)),
        "the 407 is ACKed by the transaction: {:?}",
        methods(&msgs)
    );
    let retry = msgs
        .into_iter()
        .find_map(|m| match m {
            Message::Request(r) if r.method == Method::Invite => Some(r),
            _ => None,
        })
        .expect("the re-INVITE again");
    let creds = retry
        .headers
        .get(&HeaderName::ProxyAuthorization)
        .expect("credentials")
        .to_string();
    h.callee_sends(&timer_answer(
        &retry,
        200,
        "Session-Expires: 600;refresher=uac",
    ));
    let ack = h.take_one_request(CALLEE, Method::Ack);
    assert_eq!(ack.cseq.seq, retry.cseq.seq);
    assert_eq!(
        ack.headers.get(&HeaderName::ProxyAuthorization),
        Some(creds.as_str())
    );
    assert!(h.cdrs.is_empty());
}

/// The B-leg INVITE → 407 → the INVITE again with Proxy-Authorization (same
/// Call-ID and From tag, next CSeq) → 200, whose ACK repeats the
/// credentials; the caller saw one call.
#[test]
fn the_invite_answers_the_carriers_challenge_and_its_ack_repeats_the_credentials() {
    let mut h = Harness::with_config(&config());
    h.caller_sends(&invite("auth-inv-1", "0049301234", SDP));
    let first = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&challenge(&first, 407, "n-invite"));
    let second = authorized(
        &mut h,
        Method::Invite,
        HeaderName::ProxyAuthorization,
        "n-invite",
    );
    assert_eq!(second.call_id, first.call_id);
    assert_eq!(second.from.tag(), first.from.tag());
    assert_eq!(second.cseq.seq, first.cseq.seq + 1);
    h.callee_sends(&answer(&second, 200, "callee-tag", SDP));
    let to_caller = h.responses(CALLER);
    let statuses: Vec<u16> = to_caller.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [100, 200], "no challenge crossed");
    let a_tag = to_caller[1].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog(
        "ACK",
        1,
        &a_tag,
        "auth-inv-1",
        "z9hG4bK-ack1",
        "",
    ));
    let ack = h.take_one_request(CALLEE, Method::Ack);
    assert_eq!(ack.cseq.seq, second.cseq.seq);
    assert_eq!(
        ack.headers.get(&HeaderName::ProxyAuthorization),
        second.headers.get(&HeaderName::ProxyAuthorization),
        "RFC 3261 §13.2.2.4: the ACK repeats the INVITE's credentials"
    );
}

/// A second challenge to the authorised INVITE: the carrier refused the
/// credentials. The caller gets 403 (never the carrier's challenge).
#[test]
fn a_second_challenge_to_the_invite_fails_the_call_without_showing_it() {
    let mut h = Harness::with_config(&config());
    h.caller_sends(&invite("auth-inv-2", "0049301234", SDP));
    let first = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&challenge(&first, 401, "n-1"));
    let second = authorized(&mut h, Method::Invite, HeaderName::Authorization, "n-1");
    h.callee_sends(&challenge(&second, 401, "n-2"));
    let finals = h.finals(CALLER);
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].status, 403);
    assert!(
        finals[0]
            .headers
            .get(&HeaderName::WwwAuthenticate)
            .is_none()
    );
    assert!(
        h.take(CALLEE)
            .iter()
            .all(|m| !matches!(m, Message::Request(r) if r.method == Method::Invite))
    );
    assert_eq!(h.cdrs[0].sip_code, Some(401));
    assert_eq!(h.cdrs[0].attempts[0].outcome, "401");
}

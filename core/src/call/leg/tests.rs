//! Each leg on its own, with the clock jumped from deadline to deadline: the
//! 2xx Vigil retransmits until ACKed, the ACK it keeps for the peer's 2xx
//! retransmissions, its session refreshes and their answers (the shared
//! [`CallLeg`]); the caller's INVITE answered and hung up ([`ALeg`]); the
//! callee's INVITE retried after 422, CANCELled and its forks ([`BLeg`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::call::{CallSettings, Inbound, Outbound};
use crate::cdr::CdrRecord;
use crate::config::SessionTimerConfig;
use crate::ids::IdGen;
use crate::policy::Policies;
use crate::session_timer::{Agreed, Refresher};
use crate::sip::{Message, decode};
use crate::transaction::{Inbound as TxInbound, TimerValues, TransactionLayer, Transmit};

const LOCAL: &str = "127.0.0.1:5060";
const PEER: &str = "127.0.0.2:5061";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn path() -> Path {
    Path {
        local: addr(LOCAL),
        remote: addr(PEER),
        proto: crate::sip::Protocol::Udp,
    }
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn invite() -> Request {
    let text = format!(
        "INVITE sip:0049301234@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-leg-1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@127.0.0.2:5061>;tag=peer-tag\r\n\
To: <sip:0049301234@127.0.0.1:5060>\r\n\
Call-ID: leg-call\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:1001@127.0.0.2:5061>\r\n\
Supported: timer\r\n\
Allow: INVITE, ACK, BYE, UPDATE\r\n\
Content-Type: application/sdp\r\n\r\n{SDP}"
    );
    match decode(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// The worker around a leg: its transaction layer, ids and clock.
struct World {
    tx: TransactionLayer<TxOwner>,
    ids: IdGen,
    cdrs: VecDeque<CdrRecord>,
    settings: CallSettings,
    policies: Policies,
    metrics: crate::metrics::Metrics,
    now: Instant,
}

impl World {
    fn new() -> World {
        let timers = TimerValues::default();
        World {
            tx: TransactionLayer::new(timers, true),
            ids: IdGen::seeded(0, 11),
            cdrs: VecDeque::new(),
            settings: CallSettings {
                user_agent: "Vigil".into(),
                max_ring_time: Duration::from_secs(180),
                timers,
                failover_after_early_media: false,
            },
            policies: Policies::builtin(),
            metrics: Default::default(),
            now: Instant::now(),
        }
    }

    fn env(&mut self) -> Env<'_> {
        Env {
            tx: &mut self.tx,
            ids: &mut self.ids,
            cdrs: &mut self.cdrs,
            settings: &self.settings,
            policies: &self.policies,
            metrics: &self.metrics,
            media: None,
            sockets: &[],
        }
    }

    /// What was sent, decoded.
    fn sent(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(Transmit { bytes, .. }) = self.tx.poll_transmit() {
            out.push(decode(&bytes).expect("Vigil sends what it can decode"));
        }
        out
    }

    fn requests(&mut self) -> Vec<Request> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Message::Request(r) => Some(r),
                Message::Response(_) => None,
            })
            .collect()
    }

    fn statuses(&mut self) -> Vec<u16> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Message::Response(r) => Some(r.status),
                Message::Request(_) => None,
            })
            .collect()
    }

    /// The INVITE arrives as a new server transaction.
    fn receive_invite(&mut self) -> (ServerTxId, Request) {
        match self.tx.receive_request(self.now, invite(), path()) {
            TxInbound::New(tx, request) => (tx, request),
            _ => panic!("a new INVITE is a new transaction"),
        }
    }

    /// Jumps to `at`, firing the leg's timers on the way.
    fn advance_leg(&mut self, leg: &mut CallLeg, by: Duration) -> Vec<LegTimeout> {
        let until = self.now + by;
        let mut fired = Vec::new();
        while let Some(at) = leg.next_deadline().filter(|&at| at <= until) {
            self.now = self.now.max(at);
            let now = self.now;
            fired.extend(leg.handle_timeout(now, &mut self.env()));
        }
        self.now = until;
        fired
    }
}

/// A leg in a confirmed dialog with the peer (as UAS of `invite()`).
fn established() -> CallLeg {
    let mut leg = CallLeg::new(
        1,
        Leg::A,
        path(),
        addr(LOCAL),
        SessionTimerConfig::default(),
    );
    leg.establish(crate::dialog::Dialog::as_uas(
        &invite(),
        "vigil-tag".into(),
        leg.contact(),
    ));
    leg
}

fn ok_to(request: &Request, status: u16) -> Response {
    let mut r = request.response(status);
    r.to.set_tag("peer-tag");
    r
}

#[test]
fn a_2xx_is_retransmitted_doubling_to_t2_until_its_ack() {
    let mut w = World::new();
    let (tx, request) = w.receive_invite();
    let mut leg = established();
    let ok = request.response(200);
    let now = w.now;
    leg.send_2xx(now, tx, ok, Some(7), &mut w.env());
    assert!(w.statuses().contains(&200));
    // T1, 2*T1, 4*T1 and then T2 (4 s) apart: at 0.5, 1.5, 3.5, 7.5, 11.5 s.
    w.advance_leg(&mut leg, Duration::from_millis(11_600));
    assert_eq!(w.statuses(), vec![200; 5]);
    assert_eq!(leg.take_ack(2), None, "an ACK for another INVITE");
    assert_eq!(
        leg.take_ack(1),
        Some(Some(7)),
        "the ACK: the other leg's INVITE 7 follows"
    );
    assert!(!leg.awaits_ack());
    w.advance_leg(&mut leg, Duration::from_secs(60));
    assert!(w.sent().is_empty(), "no retransmission after the ACK");
}

#[test]
fn an_unacked_2xx_times_out_after_64_t1() {
    let mut w = World::new();
    let (tx, request) = w.receive_invite();
    let mut leg = established();
    let now = w.now;
    leg.send_2xx(now, tx, request.response(200), None, &mut w.env());
    assert!(
        w.advance_leg(&mut leg, Duration::from_millis(31_900))
            .is_empty()
    );
    let fired = w.advance_leg(&mut leg, Duration::from_millis(200));
    assert_eq!(
        fired,
        vec![LegTimeout::AckTimeout {
            ack_other_seq: None
        }]
    );
    assert!(!leg.awaits_ack());
    assert_eq!(leg.next_deadline(), None, "nothing left to retransmit");
}

#[test]
fn the_ack_is_kept_for_the_peers_2xx_retransmissions_then_forgotten() {
    let mut w = World::new();
    let mut leg = established();
    let now = w.now;
    leg.send_ack(now, 1, None, &mut w.env());
    let acks = w.requests();
    assert_eq!((acks.len(), &acks[0].method), (1, &Method::Ack));
    assert_eq!(acks[0].to.tag(), Some("peer-tag"));
    leg.resend_ack(1, &mut w.env());
    leg.resend_ack(2, &mut w.env());
    assert_eq!(w.requests().len(), 1, "only the ACK for CSeq 1 exists");
    w.advance_leg(&mut leg, Duration::from_secs(33));
    leg.resend_ack(1, &mut w.env());
    assert!(w.requests().is_empty(), "forgotten after 64*T1");
}

fn with_session(leg: &mut CallLeg, now: Instant, refresher: Refresher) {
    leg.start_session(
        now,
        Agreed {
            interval: 600,
            refresher,
            peer_supports: true,
        },
    );
}

#[test]
fn vigils_refresh_is_an_update_then_a_reinvite_with_the_sdp_after_a_501() {
    let mut w = World::new();
    let mut leg = established();
    leg.set_local_body(
        crate::call::build::Body::of(&invite().headers, SDP.as_bytes()).expect("body"),
    );
    let now = w.now;
    with_session(&mut leg, now, Refresher::Vigil);
    // Due at half the interval.
    assert_eq!(leg.poll_session(now), None);
    w.now += Duration::from_secs(300);
    assert!(matches!(
        leg.poll_session(w.now),
        Some(crate::session_timer::LegEvent::RefreshDue { .. })
    ));
    let now = w.now;
    leg.send_refresh(now, RefreshKind::Update, &mut w.env());
    let update = w.requests().remove(0);
    assert_eq!(update.method, Method::Update);
    assert_eq!(
        update.headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uac")
    );
    assert!(update.body.is_empty());
    assert!(leg.refreshing());
    let answer = leg.on_refresh_answer(now, &ok_to(&update, 501), &mut w.env());
    assert_eq!(answer, RefreshAnswer::SwitchedToReinvite);
    let reinvite = w.requests().remove(0);
    assert_eq!(reinvite.method, Method::Invite);
    assert_eq!(
        reinvite.body,
        SDP.as_bytes(),
        "a re-INVITE refresh re-sends the SDP"
    );
    let answer = leg.on_refresh_answer(now, &ok_to(&reinvite, 200), &mut w.env());
    assert_eq!(answer, RefreshAnswer::Refreshed);
    let ack = w.requests().remove(0);
    assert_eq!((ack.method, ack.cseq.seq), (Method::Ack, reinvite.cseq.seq));
    assert!(!leg.refreshing());
}

#[test]
fn refresh_answers_491_481_and_other_failures() {
    let mut w = World::new();
    let mut leg = established();
    let now = w.now;
    with_session(&mut leg, now, Refresher::Vigil);
    leg.send_refresh(now, RefreshKind::Update, &mut w.env());
    let update = w.requests().remove(0);
    // 491 on the A leg: retried 0-2 s later (§14.1).
    let answer = leg.on_refresh_answer(now, &ok_to(&update, 491), &mut w.env());
    assert_eq!(answer, RefreshAnswer::Retrying);
    let retry_at = leg.next_deadline().expect("a retry is scheduled");
    assert!(
        retry_at <= now + Duration::from_secs(2),
        "{:?}",
        retry_at - now
    );
    assert_eq!(
        leg.on_refresh_answer(now, &ok_to(&update, 481), &mut w.env()),
        RefreshAnswer::DialogGone
    );
    assert_eq!(
        leg.on_refresh_answer(now, &ok_to(&update, 500), &mut w.env()),
        RefreshAnswer::Failed(500)
    );
    assert_eq!(
        leg.on_refresh_answer(now, &ok_to(&update, 180), &mut w.env()),
        RefreshAnswer::Ignored
    );
}

#[test]
fn a_peer_that_stops_refreshing_expires() {
    let mut w = World::new();
    let mut leg = established();
    let now = w.now;
    with_session(&mut leg, now, Refresher::Peer);
    // RFC 4028 §10: the peer refreshes; the session ends min(32, SE/3) before
    // it expires without one.
    w.now += Duration::from_secs(567);
    assert_eq!(leg.poll_session(w.now), None);
    w.now += Duration::from_secs(2);
    assert!(matches!(
        leg.poll_session(w.now),
        Some(crate::session_timer::LegEvent::Expired { at }) if at <= w.now
    ));
}

#[test]
fn an_sdp_the_peer_already_sent_is_no_offer() {
    let mut leg = established();
    let request = invite();
    assert!(leg.sdp_changed(&request), "nothing seen yet");
    leg.set_remote_body(
        crate::call::build::Body::of(&request.headers, &request.body).expect("body"),
    );
    assert!(!leg.sdp_changed(&request));
    let mut other = request.clone();
    other.body = SDP.replace("4000", "4002").into_bytes();
    assert!(leg.sdp_changed(&other));
}

// ----- the A leg -------------------------------------------------------------

fn a_leg(w: &mut World) -> ALeg {
    let (tx, request) = w.receive_invite();
    let inbound = Inbound {
        tx,
        invite: request,
        path: path(),
        advertised: addr(LOCAL),
        timer: SessionTimerConfig::default(),
        negotiated: crate::session_timer::UasOutcome::Timer(Agreed {
            interval: 600,
            refresher: Refresher::Peer,
            peer_supports: true,
        }),
        prack: crate::config::PrackMode::Supported,
    };
    let leg = ALeg::new(1, inbound, "vigil-a".into(), &mut w.env());
    assert_eq!(w.statuses(), vec![100]);
    leg
}

#[test]
fn the_a_leg_answers_with_its_own_tag_and_timer_and_waits_for_the_ack() {
    let mut w = World::new();
    let mut a = a_leg(&mut w);
    assert!(a.leg.allows_update(), "the caller's Allow lists UPDATE");
    assert!(!a.leg.is_established());
    let callee_ok = {
        let mut r = invite().response(200);
        r.to.set_tag("callee-tag");
        r
    };
    let now = w.now;
    a.answer(now, &callee_ok, 1, &mut w.env());
    let ok = match w.sent().remove(0) {
        Message::Response(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ok.to.tag(),
        Some("vigil-a"),
        "Vigil's tag, not the callee's"
    );
    assert_eq!(
        ok.headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uac")
    );
    assert_eq!(ok.headers.get(&HeaderName::Require), Some("timer"));
    assert_eq!(a.state(), AState::Answered);
    assert!(a.leg.is_established());
    // The callee hangs up before the caller's ACK: the BYE waits (§15)...
    a.hang_up(now, false, None, &mut w.env());
    assert!(w.requests().is_empty());
    assert_eq!(a.state(), AState::Answered);
    // ...for the ACK, which confirms the dialog and says a BYE is owed.
    assert_eq!(a.leg.take_ack(1), Some(Some(1)));
    assert!(a.confirm());
    a.send_owed_bye(now, &mut w.env());
    let bye = w.requests().remove(0);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.from.tag(), Some("vigil-a"));
    assert_eq!(bye.to.tag(), Some("peer-tag"));
    assert_eq!(a.state(), AState::Done);
}

#[test]
fn the_a_leg_fails_once_and_only_before_an_answer() {
    let mut w = World::new();
    let mut a = a_leg(&mut w);
    let now = w.now;
    a.fail(now, 486, None, &mut w.env());
    a.fail(now, 503, None, &mut w.env());
    assert_eq!(w.statuses(), vec![486]);
    assert_eq!(a.state(), AState::Done);
}

// ----- the B leg -------------------------------------------------------------

fn b_leg(w: &mut World) -> BLeg {
    let outbound = Outbound {
        path: path(),
        advertised: addr(LOCAL),
        timer: SessionTimerConfig::default(),
        request_uri: None,
        to: None,
        invite_timeout: None,
        callee: None,
        caller: None,
        auth: None,
        prack: crate::config::PrackMode::Supported,
    };
    let ids = BIdentity {
        call_id: "b-call".into(),
        from_tag: "vigil-b".into(),
        branch: "z9hG4bK-b-1".into(),
    };
    let now = w.now;
    let mut b = BLeg::new(2, &invite(), outbound, ids, &w.env());
    assert_eq!(b.state(), BState::Waiting);
    assert!(w.sent().is_empty(), "built, not sent");
    b.send_invite(now, None, &mut w.env());
    assert_eq!(b.state(), BState::Calling);
    b
}

#[test]
fn a_b_leg_waiting_for_its_sdp_sends_the_one_it_is_given_and_ends_quietly() {
    let mut w = World::new();
    let outbound = Outbound {
        path: path(),
        advertised: addr(LOCAL),
        timer: SessionTimerConfig::default(),
        request_uri: None,
        to: None,
        invite_timeout: None,
        callee: None,
        caller: None,
        auth: None,
        prack: crate::config::PrackMode::Supported,
    };
    let ids = || BIdentity {
        call_id: "b-call".into(),
        from_tag: "vigil-b".into(),
        branch: "z9hG4bK-b-1".into(),
    };
    // Cancelled before rtpengine answered: nothing was sent, nothing is.
    let mut b = BLeg::new(2, &invite(), outbound, ids(), &w.env());
    let now = w.now;
    b.cancel(now, None, &mut w.env());
    assert_eq!(b.state(), BState::Done);
    assert!(w.sent().is_empty());
    // Given rtpengine's SDP, the INVITE carries it, and the leg keeps it as
    // its own (a re-INVITE refresh re-sends it).
    let outbound = Outbound {
        path: path(),
        advertised: addr(LOCAL),
        timer: SessionTimerConfig::default(),
        request_uri: None,
        to: None,
        invite_timeout: None,
        callee: None,
        caller: None,
        auth: None,
        prack: crate::config::PrackMode::Supported,
    };
    let mut b = BLeg::new(2, &invite(), outbound, ids(), &w.env());
    let relayed = SDP
        .replace("127.0.0.2", "127.0.0.1")
        .replace("4000", "30000");
    let mut headers = crate::sip::Headers::new();
    headers.push(HeaderName::ContentType, "application/sdp");
    let body = crate::call::build::Body::of(&headers, relayed.as_bytes()).expect("body");
    b.send_invite(now, Some(&body), &mut w.env());
    let sent = w.requests().remove(0);
    assert_eq!(sent.body, relayed.as_bytes());
    assert_eq!(sent.headers.count(&HeaderName::ContentType), 1);
    assert_eq!(b.leg.local_body(), Some(&body));
}

/// Feeds the callee's response through the transaction layer, as the engine does.
fn callee_answers(w: &mut World, status: u16, tag: &str) -> Response {
    let sent = w.requests();
    let request = sent.last().expect("a request to answer").clone();
    let mut r = request.response(status);
    if status > 100 {
        r.to.set_tag(tag);
    }
    if status == 422 {
        r.headers.push(HeaderName::MinSe, "1200");
    }
    r.headers
        .push(HeaderName::Contact, "<sip:callee@127.0.0.2:5061>");
    let (_, _, r) = w.tx.receive_response(w.now, r).expect("matches the INVITE");
    r
}

#[test]
fn the_b_leg_offers_timers_and_retries_a_422_once_with_the_callees_min_se() {
    let mut w = World::new();
    let mut b = b_leg(&mut w);
    let first = w.requests();
    assert_eq!(
        first[0].headers.get(&HeaderName::SessionExpires),
        Some("600")
    );
    assert_eq!(first[0].body, SDP.as_bytes());
    let mut r = first[0].response(422);
    r.to.set_tag("callee-tag");
    r.headers.push(HeaderName::MinSe, "1200");
    let now = w.now;
    assert!(b.retry_after_422(now, &r, &mut w.env()));
    let again = w.requests().remove(0);
    assert_eq!(again.cseq.seq, 2);
    assert_eq!(again.call_id, "b-call", "same dialog identifiers");
    assert_eq!(again.headers.get(&HeaderName::SessionExpires), Some("1200"));
    assert_eq!(again.headers.get(&HeaderName::MinSe), Some("1200"));
    assert_eq!(b.invite_seq(), 2);
    assert!(
        !b.retry_after_422(now, &r, &mut w.env()),
        "only once (RFC 4028 §7.4)"
    );
}

#[test]
fn a_cancel_waits_for_a_provisional_and_gives_up_after_64_t1() {
    let mut w = World::new();
    let mut b = b_leg(&mut w);
    let now = w.now;
    b.cancel(now, None, &mut w.env());
    assert_eq!(
        b.state(),
        BState::Calling,
        "§9.1: no CANCEL before a provisional"
    );
    let _ringing = callee_answers(&mut w, 180, "callee-tag");
    assert!(
        !b.on_provisional(now, &mut w.env()),
        "not for the caller: it cancelled"
    );
    let cancel = w.requests().remove(0);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(b.state(), BState::Cancelling);
    // No final answer ever comes: 64*T1 later the INVITE is given up.
    let until = w.now + Duration::from_secs(33);
    while let Some(at) = b.next_deadline().filter(|&at| at <= until) {
        w.now = at;
        let now = w.now;
        b.handle_timeout(now, &mut w.env());
    }
    assert_eq!(b.state(), BState::Done);
}

#[test]
fn an_answered_b_leg_is_acked_and_hung_up_and_another_fork_too() {
    let mut w = World::new();
    let mut b = b_leg(&mut w);
    let ok = callee_answers(&mut w, 200, "callee-tag");
    let agreed = b.on_answered(&ok);
    assert_eq!(
        agreed.map(|a| a.refresher),
        Some(Refresher::Vigil),
        "no Session-Expires: Vigil refreshes"
    );
    assert!(b.owns(&{
        let mut bye = invite();
        bye.to.set_tag("vigil-b");
        bye.from.set_tag("callee-tag");
        bye
    }));
    let now = w.now;
    // A second fork answers: ACKed and BYEd with its own tag.
    let mut fork = ok.clone();
    fork.to.set_tag("other-fork");
    b.on_2xx_again(now, &fork, &mut w.env());
    let sent = w.requests();
    let methods: Vec<(Method, Option<&str>)> = sent
        .iter()
        .map(|r| (r.method.clone(), r.to.tag()))
        .collect();
    assert_eq!(
        methods,
        vec![
            (Method::Ack, Some("other-fork")),
            (Method::Bye, Some("other-fork"))
        ]
    );
    // Hanging up the answered leg before the caller's ACK: ACK, then BYE.
    b.hang_up(now, Some("SIP;cause=408"), &mut w.env());
    let sent = w.requests();
    assert_eq!(sent[0].method, Method::Ack);
    assert_eq!(sent[1].method, Method::Bye);
    assert_eq!(
        sent[1].headers.get(&HeaderName::Reason),
        Some("SIP;cause=408")
    );
    assert_eq!(b.state(), BState::Done);
}

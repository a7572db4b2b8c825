//! Call flows through one worker's engine, with the caller and the callee played
//! by scripts and the clock jumped from deadline to deadline. Each test reads as
//! the call flow it proves.

mod dialog_matching;
mod failover;
mod media;
mod policies;
mod reliable_provisionals;
mod resources;
mod restore;
mod session_timers;
mod trunk_auth;
mod uplink;
mod users;

use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::time::{Duration, Instant};

use super::*;
use crate::cdr::{EndReason, EndedBy};
use crate::sip::{Response, decode};

const CONFIG: &str = r#"
listen: ["udp:127.0.0.1:5060"]
trunks:
  - name: pbx
    inbound: { from: ["127.0.0.2"] }
    route_to: carrier
  - name: carrier
    outbound: { to: "127.0.0.3:5080" }
routes: [ { prefix: "999", trunk: carrier } ]
cdr: { path: "cdr.jsonl" }
"#;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

pub(super) struct Harness {
    engine: Engine,
    now: Instant,
    sent: Vec<Transmit>,
    cdrs: Vec<CdrRecord>,
    /// The last initial INVITE Vigil sent the callee (a B leg).
    last_b_invite: Option<Request>,
    /// The A-leg tag of the call a test set up, for requests it sends later.
    a_tag: String,
    /// When the harness was made (tests that need a wall clock start it here).
    epoch: Instant,
}

const LOCAL: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.2:5061";
const CALLEE: &str = "127.0.0.3:5080";

impl Harness {
    fn new() -> Harness {
        Harness::with_config(CONFIG)
    }

    fn with_config(text: &str) -> Harness {
        Harness::with_deps(text, |_| {})
    }

    /// An engine on `text` whose dependencies `wire` sets (policies, shared
    /// counters, limits, users); the rest is [`EngineDeps::standalone`].
    fn with_deps(text: &str, wire: impl FnOnce(&mut EngineDeps)) -> Harness {
        let config = Arc::new(Config::parse(text, FsPath::new("test.yaml")).expect("config"));
        let mut deps = EngineDeps::standalone(IdGen::seeded(0, 7));
        wire(&mut deps);
        let sockets: Arc<[LocalSocket]> = Arc::from(vec![LocalSocket {
            bind: addr(LOCAL),
            advertised: addr(LOCAL),
            proto: crate::sip::Protocol::Udp,
        }]);
        let now = Instant::now();
        Harness {
            engine: Engine::new(config, sockets, deps),
            now,
            sent: Vec::new(),
            cdrs: Vec::new(),
            last_b_invite: None,
            a_tag: String::new(),
            epoch: now,
        }
    }

    fn collect(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            assert_eq!(t.local, addr(LOCAL));
            if t.remote == addr(CALLEE)
                && let Ok(Message::Request(r)) = decode(&t.bytes)
                && r.method == Method::Invite
                && !r.is_in_dialog()
            {
                self.last_b_invite = Some(r);
            }
            self.sent.push(t);
        }
        while let Some(c) = self.engine.poll_cdr() {
            self.cdrs.push(c);
        }
    }

    fn receive_from(&mut self, from: &str, text: &str, admitted: bool) {
        self.receive_over(from, crate::sip::Protocol::Udp, text, admitted);
    }

    /// `text` arrives from `from` over `proto` (over TCP or TLS, `from` is
    /// the connection's far end).
    fn receive_over(
        &mut self,
        from: &str,
        proto: crate::sip::Protocol,
        text: &str,
        admitted: bool,
    ) {
        let message = decode(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
        self.engine.handle_message(
            self.now,
            message,
            Path {
                local: addr(LOCAL),
                remote: addr(from),
                proto,
            },
            admitted,
        );
        self.collect();
    }

    fn caller_sends(&mut self, text: &str) {
        self.receive_from(CALLER, text, true);
    }

    fn callee_sends(&mut self, text: &str) {
        self.receive_from(CALLEE, text, true);
    }

    /// Moves the clock forward by `d`, firing every deadline on the way.
    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(at) = self.engine.poll_timeout() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            self.engine.handle_timeout(self.now);
            self.collect();
        }
        self.now = until;
    }

    /// Takes what was sent to `to`, decoded.
    fn take(&mut self, to: &str) -> Vec<Message> {
        let to = addr(to);
        let (mine, rest): (Vec<_>, Vec<_>) = self.sent.drain(..).partition(|t| t.remote == to);
        self.sent = rest;
        mine.into_iter()
            .map(|t| {
                decode(&t.bytes)
                    .unwrap_or_else(|e| panic!("Vigil sent something it cannot decode: {e}"))
            })
            .collect()
    }

    /// Takes what was sent to `to` and returns the one `method` request among it
    /// (retransmissions, which share its branch, count once).
    fn take_one_request(&mut self, to: &str, method: Method) -> Request {
        let msgs = self.take(to);
        let mut requests: Vec<Request> = msgs
            .into_iter()
            .filter_map(|m| match m {
                Message::Request(r) if r.method == method => Some(r),
                _ => None,
            })
            .collect();
        requests.dedup_by(|a, b| a.top_via().branch() == b.top_via().branch());
        assert_eq!(requests.len(), 1, "expected exactly one {method} to {to}");
        requests.remove(0)
    }

    fn statuses(&mut self, to: &str) -> Vec<u16> {
        self.take(to)
            .into_iter()
            .filter_map(|m| match m {
                Message::Response(r) => Some(r.status),
                _ => None,
            })
            .collect()
    }

    /// The final responses sent to `to` (provisionals dropped).
    fn finals(&mut self, to: &str) -> Vec<Response> {
        self.responses(to)
            .into_iter()
            .filter(|r| r.status >= 200)
            .collect()
    }

    fn responses(&mut self, to: &str) -> Vec<Response> {
        self.take(to)
            .into_iter()
            .filter_map(|m| match m {
                Message::Response(r) => Some(r),
                _ => None,
            })
            .collect()
    }
}

fn invite(call_id: &str, callee: &str, body: &str) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "INVITE sip:{callee}@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-{call_id};rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:1001@127.0.0.2:5061>;tag=caller-tag\r\n\
To: <sip:{callee}@127.0.0.1:5060>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:1001@127.0.0.2:5061>\r\n\
P-Asserted-Identity: <sip:+4930111@carrier.example>\r\n\
X-Secret-Internal: do-not-leak\r\n\
{ct}\r\n{body}"
    )
}

/// The caller's CANCEL or non-2xx ACK for `invite(call_id, …)`: same branch
/// and CSeq number (RFC 3261 §9.1, §17.1.1.3), no body.
fn invite_as(method: &str, call_id: &str) -> String {
    invite(call_id, "0049301234", "")
        .replace("INVITE sip:", &format!("{method} sip:"))
        .replace("CSeq: 1 INVITE", &format!("CSeq: 1 {method}"))
}

/// A response from the callee to the request Vigil sent it.
fn answer(req: &Request, status: u16, to_tag: &str, body: &str) -> String {
    let mut r = req.response(status);
    if status > 100 {
        r.to.set_tag(to_tag);
    }
    if (200..300).contains(&status) || status == 180 {
        r.headers
            .push(HeaderName::Contact, "<sip:callee@127.0.0.3:5080>");
    }
    if !body.is_empty() {
        r.headers.push(HeaderName::ContentType, "application/sdp");
        r.body = body.as_bytes().to_vec();
    }
    String::from_utf8(r.encode()).expect("utf8")
}

/// A request from the caller inside the A dialog.
fn caller_in_dialog(
    method: &str,
    cseq: u32,
    to_tag: &str,
    call_id: &str,
    branch: &str,
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:vigil@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-{branch};rport\r\n\
From: \"Alice\" <sip:1001@127.0.0.2:5061>;tag=caller-tag\r\n\
To: <sip:0049301234@127.0.0.1:5060>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:1001@127.0.0.2:5061>\r\n\
{ct}\r\n{body}"
    )
}

/// A request from the callee inside the B dialog, mirroring the B INVITE.
fn callee_in_dialog(method: &str, cseq: u32, b_invite: &Request, branch: &str) -> String {
    callee_in_dialog_with(method, cseq, b_invite, branch, "")
}

/// The same, with a body (an SDP).
fn callee_in_dialog_with(
    method: &str,
    cseq: u32,
    b_invite: &Request,
    branch: &str,
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:1001@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.3:5080;branch=z9hG4bK-{branch};rport\r\n\
From: <sip:callee@127.0.0.3:5080>;tag=callee-tag\r\n\
To: {}\r\n\
Call-ID: {}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:callee@127.0.0.3:5080>\r\n\
{ct}\r\n{body}",
        b_invite.from, b_invite.call_id
    )
}

/// Drives a call to the confirmed state; returns the B INVITE and the A-leg tag.
fn connected_call(h: &mut Harness, call_id: &str) -> (Request, String) {
    h.caller_sends(&invite(call_id, "0049301234", SDP));
    assert_eq!(h.statuses(CALLER), vec![100]);
    let b_invite = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b_invite, 200, "callee-tag", SDP));
    let ok = h.responses(CALLER);
    assert_eq!(ok.len(), 1);
    let a_tag = ok[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, call_id, "ack1", ""));
    let ack = h.take_one_request(CALLEE, Method::Ack);
    assert_eq!(ack.call_id, b_invite.call_id);
    (b_invite, a_tag)
}

#[test]
fn a_call_is_relayed_as_a_new_dialog_and_the_caller_hangs_up() {
    let mut h = Harness::new();
    // INVITE with SDP → 100 at once, and a new INVITE towards the trunk.
    h.caller_sends(&invite("call-1", "0049301234", SDP));
    assert_eq!(h.statuses(CALLER), vec![100]);
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(b.uri.to_string(), "sip:0049301234@127.0.0.3:5080");
    assert_ne!(b.call_id, "call-1", "the B leg has its own Call-ID");
    assert_ne!(b.from.tag(), Some("caller-tag"));
    assert_eq!(b.to.tag(), None);
    assert_eq!(b.max_forwards, 69);
    assert_eq!(b.from.display.as_deref(), Some("\"Alice\""));
    assert_eq!(b.from.uri.user_part().as_deref(), Some("1001"));
    assert!(b.top_via().sent_by().starts_with("127.0.0.1:5060"));
    assert_eq!(b.body, SDP.as_bytes());
    assert_eq!(
        b.headers.get(&HeaderName::PAssertedIdentity),
        Some("<sip:+4930111@carrier.example>")
    );
    assert_eq!(
        b.headers
            .get(&HeaderName::Other("X-Secret-Internal".into())),
        None
    );

    // 180 and 200 are relayed with Vigil's own tag and Contact.
    h.callee_sends(&answer(&b, 100, "", ""));
    assert!(h.take(CALLER).is_empty(), "100 is hop-by-hop");
    h.callee_sends(&answer(&b, 180, "callee-tag", ""));
    let ringing = h.responses(CALLER);
    assert_eq!(ringing[0].status, 180);
    let a_tag = ringing[0].to.tag().expect("tag").to_string();
    assert_ne!(a_tag, "callee-tag");
    h.now += Duration::from_secs(2);
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    let ok = h.responses(CALLER);
    assert_eq!(ok[0].status, 200);
    assert_eq!(ok[0].to.tag(), Some(a_tag.as_str()));
    assert_eq!(
        ok[0].contact().expect("contact").uri.to_string(),
        "sip:127.0.0.1:5060"
    );
    assert_eq!(ok[0].body, SDP.as_bytes());

    // ACK crosses; a retransmitted 200 from the callee is re-ACKed.
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "call-1", "ack1", ""));
    let ack = h.take_one_request(CALLEE, Method::Ack);
    assert_eq!(ack.cseq.seq, 1);
    assert_eq!(ack.to.tag(), Some("callee-tag"));
    assert_eq!(ack.uri.to_string(), "sip:callee@127.0.0.3:5080");
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    h.take_one_request(CALLEE, Method::Ack);

    // 60 s later the caller hangs up.
    h.advance(Duration::from_secs(60));
    assert!(
        h.take(CALLER).is_empty(),
        "no 2xx retransmission after the ACK"
    );
    h.caller_sends(&caller_in_dialog("BYE", 2, &a_tag, "call-1", "bye1", ""));
    assert_eq!(h.statuses(CALLER), vec![200]);
    let bye = h.take_one_request(CALLEE, Method::Bye);
    assert_eq!(bye.call_id, b.call_id);
    assert_eq!(bye.cseq.seq, 2);
    assert_eq!(h.engine.active_calls(), 0);

    assert_eq!(h.cdrs.len(), 1);
    let cdr = &h.cdrs[0];
    assert_eq!(cdr.end_reason, EndReason::CallerBye);
    assert_eq!(cdr.ended_by, EndedBy::Caller);
    assert_eq!(cdr.duration_ms(), 60_000);
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str()),
        ("1001", "0049301234")
    );
    assert_eq!(
        (&*cdr.trunk_in, cdr.trunk_out.as_deref()),
        ("pbx", Some("carrier"))
    );
    assert_eq!(cdr.b_call_id.as_deref(), Some(b.call_id.as_str()));
}

#[test]
fn the_callee_hangs_up() {
    let mut h = Harness::new();
    let (b, _) = connected_call(&mut h, "call-2");
    h.callee_sends(&callee_in_dialog("BYE", 1, &b, "cbye"));
    assert_eq!(h.statuses(CALLEE), vec![200]);
    let bye = h.take_one_request(CALLER, Method::Bye);
    assert_eq!(bye.call_id, "call-2");
    assert_eq!(bye.to.tag(), Some("caller-tag"));
    assert_eq!(bye.uri.to_string(), "sip:1001@127.0.0.2:5061");
    assert_eq!(h.cdrs[0].end_reason, EndReason::CalleeBye);
    assert_eq!(h.cdrs[0].ended_by, EndedBy::Callee);
}

#[test]
fn a_cancel_before_answer_is_487_to_the_caller_and_cancel_to_the_callee() {
    let mut h = Harness::new();
    h.caller_sends(&invite("call-3", "0049301234", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 180, "callee-tag", ""));
    h.take(CALLER);
    let cancel = invite_as("CANCEL", "call-3");
    h.caller_sends(&cancel);
    let mut statuses = h.statuses(CALLER);
    statuses.sort();
    assert_eq!(statuses, vec![200, 487]);
    let b_cancel = h.take_one_request(CALLEE, Method::Cancel);
    assert_eq!(b_cancel.top_via().branch(), b.top_via().branch());
    h.callee_sends(&answer(&b_cancel, 200, "callee-tag", ""));
    h.callee_sends(&answer(&b, 487, "callee-tag", ""));
    h.take_one_request(CALLEE, Method::Ack);
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.cdrs.len(), 1);
    assert_eq!(h.cdrs[0].end_reason, EndReason::Cancelled);
    assert_eq!(h.cdrs[0].sip_code, Some(487));
    assert_eq!(h.cdrs[0].answer, None);
}

#[test]
fn a_cancel_waits_for_the_callees_first_provisional() {
    let mut h = Harness::new();
    h.caller_sends(&invite("call-4", "0049301234", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    let cancel = invite_as("CANCEL", "call-4");
    h.caller_sends(&cancel);
    assert!(
        h.take(CALLEE).is_empty(),
        "RFC 3261 §9.1: no CANCEL before a provisional"
    );
    h.callee_sends(&answer(&b, 100, "", ""));
    h.take_one_request(CALLEE, Method::Cancel);
}

#[test]
fn an_answer_crossing_the_cancel_is_acked_and_hung_up() {
    let mut h = Harness::new();
    h.caller_sends(&invite("call-5", "0049301234", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 180, "callee-tag", ""));
    let cancel = invite_as("CANCEL", "call-5");
    h.caller_sends(&cancel);
    h.take(CALLEE);
    h.take(CALLER);
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    let msgs = h.take(CALLEE);
    let methods: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r.method.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    assert!(
        h.take(CALLER)
            .iter()
            .all(|m| !matches!(m, Message::Response(r) if r.status == 200))
    );
    assert_eq!(h.cdrs[0].end_reason, EndReason::Cancelled);
}

#[test]
fn busy_stays_busy() {
    let mut h = Harness::new();
    h.caller_sends(&invite("call-6", "0049301234", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(
        &answer(&b, 486, "callee-tag", "")
            .replace("486 Busy Here", "486 Busy Here - On Another Call"),
    );
    h.take_one_request(CALLEE, Method::Ack);
    let r = h.finals(CALLER);
    assert_eq!(r[0].status, 486);
    assert_eq!(r[0].reason, "Busy Here - On Another Call");
    assert!(r[0].to.tag().is_some());
    assert_eq!(h.cdrs[0].end_reason, EndReason::Rejected);
    assert_eq!(h.cdrs[0].ended_by, EndedBy::Callee);
    assert_eq!(h.cdrs[0].sip_code, Some(486));
}

#[test]
fn a_silent_callee_is_408_after_its_invite_timeout() {
    let mut h = Harness::new();
    h.caller_sends(&invite("call-7", "0049301234", SDP));
    assert_eq!(h.statuses(CALLER), vec![100]);
    h.take(CALLEE);
    h.advance(Duration::from_millis(4900));
    assert_eq!(
        h.take(CALLEE).len(),
        3,
        "Timer A: retransmitted at 0.5, 1.5 and 3.5 s"
    );
    assert!(h.statuses(CALLER).is_empty());
    h.advance(Duration::from_millis(200));
    assert_eq!(h.statuses(CALLER), vec![408], "sip.invite_timeout: 5 s");
    assert_eq!(h.cdrs[0].end_reason, EndReason::Rejected);
    assert_eq!(h.cdrs[0].ended_by, EndedBy::Switch);
    assert_eq!(h.cdrs[0].sip_code, Some(408));
    assert_eq!(h.cdrs[0].attempts.len(), 1);
    assert_eq!(h.cdrs[0].attempts[0].outcome, "no-response");
    h.advance(Duration::from_secs(40));
    assert!(h.take(CALLEE).is_empty(), "the INVITE was given up");
}

#[test]
fn ringing_forever_is_cut_at_max_ring_time() {
    let mut h = Harness::new();
    h.caller_sends(&invite("call-8", "0049301234", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 180, "callee-tag", ""));
    h.take(CALLER);
    h.advance(Duration::from_secs(179));
    assert!(h.take(CALLER).is_empty());
    h.advance(Duration::from_millis(1100));
    assert_eq!(h.statuses(CALLER), vec![408]);
    h.take_one_request(CALLEE, Method::Cancel);
    // The callee never answers the CANCEL either: the call is forgotten after 64*T1.
    h.advance(Duration::from_secs(40));
    assert_eq!(h.engine.active_calls(), 0);
    assert_eq!(h.engine.transactions(), 0, "no transaction leaks");
}

#[test]
fn a_reinvite_from_the_caller_is_relayed_with_its_sdp_and_acked_across() {
    let mut h = Harness::new();
    let (b, a_tag) = connected_call(&mut h, "call-9");
    let new_sdp = SDP.replace("4000", "4002");
    h.caller_sends(&caller_in_dialog(
        "INVITE", 2, &a_tag, "call-9", "reinv", &new_sdp,
    ));
    assert_eq!(h.statuses(CALLER), vec![100]);
    let reinvite = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(reinvite.call_id, b.call_id);
    assert_eq!(reinvite.cseq.seq, 2);
    assert_eq!(reinvite.body, new_sdp.as_bytes());
    h.callee_sends(&answer(&reinvite, 200, "callee-tag", SDP));
    let ok = h.responses(CALLER);
    assert_eq!((ok[0].status, ok[0].cseq.seq), (200, 2));
    h.caller_sends(&caller_in_dialog("ACK", 2, &a_tag, "call-9", "ack2", ""));
    let ack = h.take_one_request(CALLEE, Method::Ack);
    assert_eq!(ack.cseq.seq, 2);
}

#[test]
fn an_update_with_a_new_sdp_from_the_callee_is_relayed_to_the_caller() {
    let mut h = Harness::new();
    let (b, _) = connected_call(&mut h, "call-10");
    let new_sdp = SDP.replace("4000", "4010");
    h.callee_sends(&callee_in_dialog_with("UPDATE", 1, &b, "upd", &new_sdp));
    let update = h.take_one_request(CALLER, Method::Update);
    assert_eq!(update.call_id, "call-10");
    assert_eq!(update.body, new_sdp.as_bytes());
    let mut ok = update.response(200);
    ok.headers
        .push(HeaderName::Contact, "<sip:1001@127.0.0.2:5061>");
    h.caller_sends(&String::from_utf8(ok.encode()).expect("utf8"));
    let r = h.responses(CALLEE);
    assert_eq!(
        (r[0].status, r[0].cseq.method.clone()),
        (200, Method::Update)
    );
}

#[test]
fn glare_gets_491() {
    let mut h = Harness::new();
    let (b, a_tag) = connected_call(&mut h, "call-11");
    h.caller_sends(&caller_in_dialog(
        "INVITE", 2, &a_tag, "call-11", "re1", SDP,
    ));
    h.take(CALLEE);
    h.callee_sends(&callee_in_dialog("INVITE", 1, &b, "re2"));
    assert_eq!(h.statuses(CALLEE), vec![100, 491]);
}

#[test]
fn an_unacknowledged_answer_is_retransmitted_then_both_legs_get_bye() {
    let mut h = Harness::new();
    h.caller_sends(&invite("call-12", "0049301234", SDP));
    let b = h.take_one_request(CALLEE, Method::Invite);
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    h.take(CALLER);
    h.advance(Duration::from_secs(31));
    let retransmitted = h.statuses(CALLER);
    assert!(
        retransmitted.len() >= 7 && retransmitted.iter().all(|&s| s == 200),
        "{retransmitted:?}"
    );
    h.advance(Duration::from_millis(1100));
    h.take_one_request(CALLER, Method::Bye);
    let to_callee = h.take(CALLEE);
    let methods: Vec<String> = to_callee
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r.method.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    assert_eq!(h.cdrs[0].end_reason, EndReason::AckTimeout);
}

#[test]
fn a_late_offer_answer_travels_in_the_ack() {
    let mut h = Harness::new();
    h.caller_sends(&invite("call-13", "0049301234", ""));
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert!(b.body.is_empty());
    h.callee_sends(&answer(&b, 200, "callee-tag", SDP));
    let ok = h.finals(CALLER);
    let a_tag = ok[0].to.tag().expect("tag").to_string();
    h.caller_sends(&caller_in_dialog("ACK", 1, &a_tag, "call-13", "ack", SDP));
    let ack = h.take_one_request(CALLEE, Method::Ack);
    assert_eq!(ack.body, SDP.as_bytes());
    assert_eq!(
        ack.headers.get(&HeaderName::ContentType),
        Some("application/sdp")
    );
}

#[test]
fn a_second_fork_answering_is_acked_and_released() {
    let mut h = Harness::new();
    let (b, _) = connected_call(&mut h, "call-14");
    h.callee_sends(&answer(&b, 200, "other-fork", SDP));
    let msgs = h.take(CALLEE);
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs.iter()
            .all(|m| matches!(m, Message::Request(r) if r.to.tag() == Some("other-fork")))
    );
    assert!(h.take(CALLER).is_empty());
}

#[test]
fn shutdown_ends_every_call_with_bye_on_both_legs() {
    let mut h = Harness::new();
    connected_call(&mut h, "call-15");
    h.caller_sends(&invite("call-16", "0049301234", SDP));
    h.take(CALLEE);
    h.engine.begin_shutdown(h.now);
    h.collect();
    let to_caller = h.take(CALLER);
    assert!(to_caller.iter().any(
        |m| matches!(m, Message::Request(r) if r.method == Method::Bye && r.call_id == "call-15")
    ));
    assert!(
        to_caller.iter().any(
            |m| matches!(m, Message::Response(r) if r.status == 503 && r.call_id == "call-16")
        ),
        "the ringing call is refused"
    );
    let to_callee = h.take(CALLEE);
    assert!(
        to_callee
            .iter()
            .any(|m| matches!(m, Message::Request(r) if r.method == Method::Bye))
    );
    let reasons: Vec<EndReason> = h.cdrs.iter().map(|c| c.end_reason).collect();
    assert_eq!(reasons, vec![EndReason::Shutdown, EndReason::Shutdown]);
    h.caller_sends(&invite("call-17", "0049301234", SDP));
    assert_eq!(h.statuses(CALLER), vec![100, 503]);
}

/// Issue 23: at the end of a drain Vigil logged `calls still active … calls=0`
/// when all that was left was a BYE to a peer that never answered.
#[test]
fn after_a_shutdown_the_unanswered_byes_are_what_is_pending_not_calls() {
    let mut h = Harness::new();
    connected_call(&mut h, "call-dead");
    h.engine.begin_shutdown(h.now);
    h.collect();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.engine.active_calls(), 0, "the call itself is over");
    assert_eq!(h.engine.requests_in_flight(), 2);
    assert_eq!(
        h.engine.requests_in_flight_summary(5),
        "BYE to 127.0.0.2:5061, BYE to 127.0.0.3:5080"
    );
    assert_eq!(
        h.engine.requests_in_flight_summary(1),
        "BYE to 127.0.0.2:5061 and 1 more"
    );
}

#[test]
fn a_shutdown_paces_its_byes_in_batches() {
    let mut h = Harness::new();
    for i in 0..250 {
        let call_id = format!("paced-{i}");
        connected_call(&mut h, &call_id);
    }
    h.sent.clear();
    let byes_to_caller = |h: &mut Harness| {
        h.take(CALLER)
            .iter()
            .filter(|m| matches!(m, Message::Request(r) if r.method == Method::Bye))
            .count()
    };
    h.engine.begin_shutdown(h.now);
    h.collect();
    assert_eq!(byes_to_caller(&mut h), 100, "the first batch at once");
    // Every CDR at once, BYEs or not: with 100,000 calls up the 4 s drain
    // BYEd 36,000 of them, and the others had no CDR at all.
    assert_eq!(h.cdrs.len(), 250);
    h.advance(Duration::from_millis(10));
    assert_eq!(byes_to_caller(&mut h), 100, "the next one tick later");
    h.advance(Duration::from_millis(10));
    assert_eq!(byes_to_caller(&mut h), 50);
    assert_eq!(h.cdrs.len(), 250);
    assert!(
        h.cdrs.iter().all(|c| c.end_reason == EndReason::Shutdown),
        "every call ended by the shutdown"
    );
    // Calls arriving meanwhile are refused at once.
    h.caller_sends(&invite("late", "0049301234", SDP));
    assert_eq!(h.statuses(CALLER), vec![100, 503]);
}

/// Regression (found by the 100,000-call benchmark): a worker with more calls
/// than its paced BYEs reach within the drain sends bigger batches, so every
/// call is hung up in about three seconds.
#[test]
fn a_shutdown_with_many_calls_spreads_them_over_three_seconds() {
    let mut h = Harness::new();
    for i in 0..900 {
        connected_call(&mut h, &format!("many-{i}"));
    }
    h.sent.clear();
    h.engine.begin_shutdown(h.now);
    h.collect();
    assert_eq!(h.cdrs.len(), 900, "every CDR at once");
    h.advance(Duration::from_millis(2_990));
    let byed: std::collections::HashSet<String> = h
        .take(CALLER)
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method == Method::Bye => Some(r.call_id),
            _ => None,
        })
        .collect();
    assert_eq!(byed.len(), 900, "every call BYEd within the spread");
}

#[test]
fn a_caller_uri_of_another_scheme_makes_a_valid_b_leg_from() {
    // Found by the engine fuzzer: `sip00:11@127.0.0.2:5061` (any scheme but
    // sip) went into the B leg's From as a user part with `@` and `:` in it.
    let mut h = Harness::new();
    let text = invite("odd-from", "0049301234", SDP).replace(
        "<sip:1001@127.0.0.2:5061>;tag=caller-tag",
        "<sip00:11@127.0.0.2:5061>;tag=caller-tag",
    );
    h.caller_sends(&text);
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(b.from.uri.user_part().as_deref(), Some("11@127.0.0.2:5061"));
    assert!(
        b.from
            .uri
            .to_string()
            .starts_with("sip:11%40127.0.0.2%3A5061@"),
        "{}",
        b.from.uri
    );
    let tel = invite("tel-from", "0049301234", SDP).replace(
        "<sip:1001@127.0.0.2:5061>;tag=caller-tag",
        "<tel:+4930111>;tag=caller-tag",
    );
    h.caller_sends(&tel);
    let b = h.take_one_request(CALLEE, Method::Invite);
    assert_eq!(b.from.uri.user_part().as_deref(), Some("+4930111"));
}

#[test]
fn requests_vigil_answers_itself() {
    let mut h = Harness::new();
    let options = "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-o\r\n\
From: <sip:ping@127.0.0.2>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: opt\r\nCSeq: 1 OPTIONS\r\n\r\n";
    h.caller_sends(options);
    let r = h.responses(CALLER);
    assert_eq!(r[0].status, 200);
    assert!(r[0].headers.has_tag(&HeaderName::Allow, "INVITE"));
    assert!(r[0].to.tag().is_some());
    for (method, status) in [
        ("NEWMETHOD", 501),
        ("REGISTER", 405),
        ("SUBSCRIBE", 405),
        ("BYE", 481),
    ] {
        let text = options
            .replace("OPTIONS", method)
            .replace("z9hG4bK-o", &format!("z9hG4bK-{method}"));
        h.caller_sends(&text);
        assert_eq!(h.statuses(CALLER), vec![status], "{method}");
    }
    h.caller_sends(
        &options
            .replace("CSeq: 1 OPTIONS", "Require: 100rel\r\nCSeq: 1 OPTIONS")
            .replace("z9hG4bK-o", "z9hG4bK-r"),
    );
    let r = h.responses(CALLER);
    assert_eq!(r[0].status, 420);
    assert_eq!(r[0].headers.get(&HeaderName::Unsupported), Some("100rel"));
    assert!(h.cdrs.is_empty());
}

#[test]
fn no_route_is_404_with_a_cdr() {
    let text = CONFIG.replace("    route_to: carrier\n", "");
    let mut h = Harness::with_config(&text);
    h.caller_sends(&invite("call-18", "0049301234", SDP));
    assert_eq!(h.statuses(CALLER), vec![100, 404]);
    assert_eq!(h.cdrs[0].end_reason, EndReason::NoRoute);
    assert_eq!(h.cdrs[0].trunk_out, None);
    // The prefix route still works.
    h.caller_sends(&invite("call-19", "9991234", SDP));
    h.take_one_request(CALLEE, Method::Invite);
}

#[test]
fn bad_invites_are_refused_before_routing() {
    let mut h = Harness::new();
    h.caller_sends(
        &invite("c20", "0049301234", SDP).replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(h.statuses(CALLER), vec![100, 483]);
    h.caller_sends(
        &invite("c21", "0049301234", SDP).replace("application/sdp", "application/unknownformat"),
    );
    assert_eq!(h.statuses(CALLER), vec![100, 415]);
    h.caller_sends(
        &invite("c22", "0049301234", SDP)
            .replace("Max-Forwards: 70", "Max-Forwards: 70\r\nAccept: text/plain"),
    );
    assert_eq!(h.statuses(CALLER), vec![100, 406]);
    h.caller_sends(
        &invite("c23", "0049301234", SDP)
            .replace("Max-Forwards: 70", "Max-Forwards: 70\r\nRequire: foo"),
    );
    assert_eq!(h.statuses(CALLER), vec![100, 420]);
    assert!(h.take(CALLEE).is_empty());
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn in_dialog_requests_without_a_dialog() {
    let mut h = Harness::new();
    let bye = caller_in_dialog("BYE", 2, "nosuchtag", "nosuchcall", "b", "");
    h.caller_sends(&bye);
    assert_eq!(h.statuses(CALLER), vec![481]);
    h.receive_from(CALLER, &bye.replace("z9hG4bK-b", "z9hG4bK-b2"), false);
    assert_eq!(
        h.statuses(CALLER),
        vec![403],
        "an unknown source learns nothing"
    );
}

#[test]
fn out_of_order_cseq_is_500() {
    let mut h = Harness::new();
    let (_, a_tag) = connected_call(&mut h, "call-24");
    h.caller_sends(&caller_in_dialog("INFO", 1, &a_tag, "call-24", "info", ""));
    assert_eq!(h.statuses(CALLER), vec![500]);
}

#[test]
fn the_same_invite_on_another_branch_is_a_merged_request() {
    let mut h = Harness::new();
    h.caller_sends(&invite("call-25", "0049301234", SDP));
    h.take(CALLER);
    h.take_one_request(CALLEE, Method::Invite);
    h.caller_sends(
        &invite("call-25", "0049301234", SDP)
            .replace("branch=z9hG4bK-call-25", "branch=z9hG4bK-other-path"),
    );
    assert_eq!(h.statuses(CALLER), vec![100, 482]);
    assert!(h.take(CALLEE).is_empty(), "no second B leg");
    assert_eq!(h.engine.active_calls(), 1);
}

//! Transaction state machines driven by a fake clock: every RFC 3261 timer is
//! checked by jumping time, so the 32 s of Timer B run in microseconds.

use std::time::{Duration, Instant};

use super::*;
use crate::sip::{Message, Via, decode};

const PEER: &str = "192.0.2.10:5070";
const LOCAL: &str = "192.0.2.1:5060";

fn path() -> Path {
    Path {
        local: LOCAL.parse().expect("addr"),
        remote: PEER.parse().expect("addr"),
        proto: crate::sip::Protocol::Udp,
    }
}

fn request(method: &str, branch: &str, extra_via: &str) -> Request {
    let text = format!(
        "{method} sip:bob@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5070;branch={branch}{extra_via}\r\n\
From: <sip:alice@192.0.2.1>;tag=f1\r\nTo: <sip:bob@192.0.2.10>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\n\r\n"
    );
    match decode(text.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn response_to(req: &Request, status: u16) -> Response {
    let mut r = req.response(status);
    if status > 100 {
        r.to.set_tag("t1");
    }
    r
}

fn layer() -> TransactionLayer<u32> {
    TransactionLayer::new(TimerValues::default(), false)
}

fn drain(l: &mut TransactionLayer<u32>) -> Vec<String> {
    std::iter::from_fn(|| l.poll_transmit())
        .map(|t| {
            String::from_utf8_lossy(&t.bytes)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Runs the clock to `until`, firing timers at each deadline; returns when each
/// transmit happened (seconds from `t0`).
fn run_until(l: &mut TransactionLayer<u32>, t0: Instant, until: Duration) -> Vec<f64> {
    let mut sends = Vec::new();
    while let Some(at) = l.poll_timeout() {
        if at > t0 + until {
            break;
        }
        l.handle_timeout(at);
        for _ in std::iter::from_fn(|| l.poll_transmit()) {
            sends.push((at - t0).as_secs_f64());
        }
    }
    sends
}

#[test]
fn invite_client_retransmits_on_timer_a_and_gives_up_on_timer_b() {
    let t0 = Instant::now();
    let mut l = layer();
    let tx = l.send_request(t0, request("INVITE", "z9hG4bKa", ""), path(), 7);
    assert_eq!(drain(&mut l).len(), 1);
    let sends = run_until(&mut l, t0, Duration::from_secs(40));
    assert_eq!(sends, vec![0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
    assert_eq!(l.poll_event(), Some(TxEvent::Timeout { tx, owner: 7 }));
    assert!(l.is_empty(), "terminated transactions are removed");
}

#[test]
fn non_invite_client_caps_retransmissions_at_t2() {
    let t0 = Instant::now();
    let mut l = layer();
    let tx = l.send_request(t0, request("OPTIONS", "z9hG4bKo", ""), path(), 1);
    drain(&mut l);
    let sends = run_until(&mut l, t0, Duration::from_secs(40));
    assert_eq!(
        sends,
        vec![0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert_eq!(l.poll_event(), Some(TxEvent::Timeout { tx, owner: 1 }));
}

#[test]
fn invite_client_acks_a_failure_hop_by_hop_and_absorbs_its_retransmission() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKb", "");
    let tx = l.send_request(t0, invite.clone(), path(), 3);
    drain(&mut l);
    let busy = response_to(&invite, 486);
    let (id, owner, resp) = l.receive_response(t0, busy.clone()).expect("passed up");
    assert_eq!((id, owner, resp.status), (tx, 3, 486));
    let sent = std::iter::from_fn(|| l.poll_transmit()).collect::<Vec<_>>();
    assert_eq!(sent.len(), 1);
    let ack = String::from_utf8(sent[0].bytes.clone()).expect("utf8");
    assert!(
        ack.starts_with("ACK sip:bob@192.0.2.10 SIP/2.0\r\n"),
        "{ack}"
    );
    assert!(
        ack.contains("branch=z9hG4bKb"),
        "same branch as the INVITE: {ack}"
    );
    assert!(ack.contains(";tag=t1"), "To tag of the response: {ack}");
    assert!(ack.contains("CSeq: 1 ACK"), "{ack}");
    // The retransmitted 486 is absorbed and re-ACKed.
    assert!(l.receive_response(t0, busy).is_none());
    assert_eq!(drain(&mut l), vec!["ACK sip:bob@192.0.2.10 SIP/2.0"]);
    assert_eq!(l.client_state(tx), Some(ClientState::Completed));
    run_until(&mut l, t0, Duration::from_secs(33));
    assert!(l.is_empty(), "Timer D ended it");
}

#[test]
fn invite_client_passes_2xx_retransmissions_while_accepted() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKc", "");
    let tx = l.send_request(t0, invite.clone(), path(), 3);
    drain(&mut l);
    assert!(l.receive_response(t0, response_to(&invite, 100)).is_some());
    assert_eq!(l.client_state(tx), Some(ClientState::Proceeding));
    // No retransmission once a provisional arrived.
    assert!(run_until(&mut l, t0, Duration::from_secs(10)).is_empty());
    let ok = response_to(&invite, 200);
    assert!(l.receive_response(t0, ok.clone()).is_some());
    assert!(
        l.receive_response(t0, ok.clone()).is_some(),
        "RFC 6026: 2xx copies go to the user"
    );
    assert!(
        drain(&mut l).is_empty(),
        "the user ACKs a 2xx, not the transaction"
    );
    run_until(&mut l, t0, Duration::from_secs(60));
    assert!(l.is_empty());
    assert!(l.receive_response(t0, ok).is_none(), "stray after Timer M");
}

#[test]
fn invite_server_sends_100_then_retransmits_failure_until_ack() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKs", ";rport");
    let Inbound::New(tx, req) = l.receive_request(t0, invite.clone(), path()) else {
        panic!("new transaction expected");
    };
    assert_eq!(
        req.top_via().to_string(),
        "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKs;rport=5070;received=192.0.2.10"
    );
    assert_eq!(drain(&mut l), vec!["SIP/2.0 100 Trying"]);
    assert!(matches!(
        l.receive_request(t0, invite.clone(), path()),
        Inbound::Absorbed
    ));
    assert_eq!(
        drain(&mut l),
        vec!["SIP/2.0 100 Trying"],
        "retransmission answered with the last response"
    );
    l.respond(t0, tx, response_to(&req, 486));
    assert_eq!(drain(&mut l), vec!["SIP/2.0 486 Busy Here"]);
    let sends = run_until(&mut l, t0, Duration::from_secs(8));
    assert_eq!(sends, vec![0.5, 1.5, 3.5, 7.5]);
    let mut ack = invite.clone();
    ack.method = Method::Ack;
    ack.cseq.method = Method::Ack;
    assert!(matches!(
        l.receive_request(t0, ack, path()),
        Inbound::Absorbed
    ));
    assert_eq!(l.server_state(tx), Some(ServerState::Confirmed));
    assert!(run_until(&mut l, t0, Duration::from_secs(60)).is_empty());
    assert!(l.is_empty());
}

#[test]
fn invite_server_reports_a_missing_ack_on_timer_h() {
    let t0 = Instant::now();
    let mut l = layer();
    let Inbound::New(tx, req) = l.receive_request(t0, request("INVITE", "z9hG4bKh", ""), path())
    else {
        panic!("new");
    };
    l.set_server_owner(tx, 9);
    l.respond(t0, tx, response_to(&req, 503));
    run_until(&mut l, t0, Duration::from_secs(40));
    assert_eq!(
        l.poll_event(),
        Some(TxEvent::AckTimeout { tx, owner: Some(9) })
    );
}

#[test]
fn ack_for_2xx_goes_to_the_user_and_accepted_absorbs_invite_copies() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKk", "");
    let Inbound::New(tx, req) = l.receive_request(t0, invite.clone(), path()) else {
        panic!("new");
    };
    drain(&mut l);
    l.respond(t0, tx, response_to(&req, 200));
    assert_eq!(l.server_state(tx), Some(ServerState::Accepted));
    drain(&mut l);
    assert!(matches!(
        l.receive_request(t0, invite, path()),
        Inbound::Absorbed
    ));
    assert!(drain(&mut l).is_empty());
    let mut ack = request("ACK", "z9hG4bKnew", "");
    ack.to.set_tag("t1");
    assert!(matches!(
        l.receive_request(t0, ack, path()),
        Inbound::Ack(_)
    ));
}

#[test]
fn non_invite_server_repeats_its_final_and_lingers_for_timer_j() {
    let t0 = Instant::now();
    let mut l = layer();
    let bye = request("BYE", "z9hG4bKbye", "");
    let Inbound::New(tx, req) = l.receive_request(t0, bye.clone(), path()) else {
        panic!("new");
    };
    assert!(drain(&mut l).is_empty(), "no 100 for non-INVITE");
    l.respond(t0, tx, response_to(&req, 200));
    drain(&mut l);
    assert!(matches!(
        l.receive_request(t0 + Duration::from_secs(1), bye, path()),
        Inbound::Absorbed
    ));
    assert_eq!(drain(&mut l), vec!["SIP/2.0 200 OK"]);
    run_until(&mut l, t0, Duration::from_secs(33));
    assert!(l.is_empty());
}

#[test]
fn cancel_finds_its_invite_and_is_its_own_transaction() {
    let t0 = Instant::now();
    let mut l = layer();
    let Inbound::New(invite_tx, _) =
        l.receive_request(t0, request("INVITE", "z9hG4bKq", ""), path())
    else {
        panic!("new");
    };
    let cancel = request("CANCEL", "z9hG4bKq", "");
    assert_eq!(l.invite_for_cancel(&cancel, path().remote), Some(invite_tx));
    let elsewhere: SocketAddr = "192.0.2.99:5070".parse().expect("addr");
    assert_eq!(
        l.invite_for_cancel(&cancel, elsewhere),
        None,
        "a CANCEL from elsewhere cancels nothing"
    );
    assert!(matches!(
        l.receive_request(t0, cancel, path()),
        Inbound::New(..)
    ));
}

#[test]
fn client_cancel_copies_the_invite() {
    let t0 = Instant::now();
    let mut l = layer();
    let tx = l.send_request(t0, request("INVITE", "z9hG4bKcc", ""), path(), 1);
    let (cancel, p) = l.build_cancel(tx).expect("cancel");
    assert_eq!(p, path());
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.top_via().branch(), Some("z9hG4bKcc"));
    assert_eq!(cancel.cseq.seq, 1);
    let cancel_tx = l.send_request(t0, cancel, p, 1);
    assert_ne!(cancel_tx, tx);
    assert_eq!(l.len(), 2);
}

#[test]
fn rfc2543_requests_match_without_a_cookie() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", "oldstyle", "");
    assert!(matches!(
        l.receive_request(t0, invite.clone(), path()),
        Inbound::New(..)
    ));
    assert!(matches!(
        l.receive_request(t0, invite, path()),
        Inbound::Absorbed
    ));
}

#[test]
fn responses_go_where_rfc3261_and_3581_say() {
    let source: SocketAddr = "203.0.113.5:40000".parse().expect("addr");
    let with_rport = Via::parse("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKx;rport").expect("via");
    assert_eq!(response_target(&with_rport, source, false), source);
    let mut without = Via::parse("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKx").expect("via");
    without.stamp_received(source);
    assert_eq!(
        response_target(&without, source, false),
        "203.0.113.5:5062".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(response_target(&without, source, true), source);
    let named = Via::parse("SIP/2.0/UDP host.example.com;branch=z9hG4bKx").expect("via");
    assert_eq!(response_target(&named, source, false).ip(), source.ip());
}

#[test]
fn past_the_budget_new_requests_are_refused_while_dialogs_and_cancels_go_on() {
    let t0 = Instant::now();
    let limits = crate::config::LimitsConfig {
        max_transactions: Some(2),
        ..Default::default()
    };
    let budget = Arc::new(TxBudget::new(&limits));
    let mut l = layer();
    l.set_budget(budget.clone());
    let Inbound::New(invite_tx, invite) =
        l.receive_request(t0, request("INVITE", "z9hG4bKb1", ""), path())
    else {
        panic!("new");
    };
    l.send_request(t0, request("OPTIONS", "z9hG4bKmine", ""), path(), 1);
    assert_eq!(budget.live(), 2, "server and client transactions count");
    drain(&mut l);
    // A new INVITE or OPTIONS would open a third: refused, with no state.
    let Inbound::Refused(refused, why, reply) =
        l.receive_request(t0, request("OPTIONS", "z9hG4bKb2", ";rport"), path())
    else {
        panic!("refused");
    };
    assert_eq!(why, TxShed::MaxTransactions);
    assert_eq!(refused.method, Method::Options);
    assert_eq!(reply.remote, path().remote);
    assert_eq!(l.len(), 2);
    // A request inside a dialog and a CANCEL are never refused.
    let mut bye = request("BYE", "z9hG4bKb3", "");
    bye.to.set_tag("t9");
    let Inbound::New(bye_tx, bye) = l.receive_request(t0, bye, path()) else {
        panic!("a BYE inside a dialog passes");
    };
    let cancel = request("CANCEL", "z9hG4bKb1", "");
    let Inbound::New(cancel_tx, cancel) = l.receive_request(t0, cancel, path()) else {
        panic!("a CANCEL passes");
    };
    assert_eq!(budget.live(), 4);
    // Once they end, their slots come back, to the last one.
    l.respond(t0, bye_tx, response_to(&bye, 200));
    l.respond(t0, cancel_tx, response_to(&cancel, 200));
    l.respond(t0, invite_tx, response_to(&invite, 486));
    run_until(&mut l, t0, Duration::from_secs(64));
    assert!(l.is_empty());
    assert_eq!((budget.live(), budget.sources()), (0, 0));
    assert_eq!(l.timer_entries(), 0);
}

#[test]
fn a_dropped_layer_gives_its_slots_back() {
    let t0 = Instant::now();
    let budget = Arc::new(TxBudget::default());
    let mut l = layer();
    l.set_budget(budget.clone());
    let _ = l.receive_request(t0, request("OPTIONS", "z9hG4bKd1", ""), path());
    l.send_request(t0, request("OPTIONS", "z9hG4bKd2", ""), path(), 1);
    assert_eq!(budget.live(), 2);
    drop(l);
    assert_eq!((budget.live(), budget.sources()), (0, 0));
}

fn tcp_path() -> Path {
    Path {
        proto: crate::sip::Protocol::Tcp,
        ..path()
    }
}

/// RFC 3261 §17.1.1.2 and §17.1.2.2: over a reliable transport the client
/// sends once; Timer B and F still bound the wait, and a final answer ends
/// the transaction at once (Timers D and K are zero).
#[test]
fn over_tcp_a_client_never_retransmits_and_does_not_linger() {
    let t0 = Instant::now();
    let mut l = layer();
    let tx = l.send_request(t0, request("INVITE", "z9hG4bKtcp1", ""), tcp_path(), 7);
    let sent: Vec<Transmit> = std::iter::from_fn(|| l.poll_transmit()).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].proto, crate::sip::Protocol::Tcp);
    let sends = run_until(&mut l, t0, Duration::from_secs(40));
    assert!(sends.is_empty(), "no Timer A over TCP: {sends:?}");
    assert_eq!(
        l.poll_event(),
        Some(TxEvent::Timeout { tx, owner: 7 }),
        "Timer B still runs"
    );

    let invite = request("INVITE", "z9hG4bKtcp2", "");
    l.send_request(t0, invite.clone(), tcp_path(), 8);
    drain(&mut l);
    l.receive_response(t0, response_to(&invite, 486));
    assert_eq!(drain(&mut l), vec!["ACK sip:bob@192.0.2.10 SIP/2.0"]);
    l.handle_timeout(t0);
    assert!(l.is_empty(), "Timer D is zero over TCP");

    let bye = request("BYE", "z9hG4bKtcp3", "");
    l.send_request(t0, bye.clone(), tcp_path(), 9);
    drain(&mut l);
    assert!(
        run_until(&mut l, t0, Duration::from_secs(3)).is_empty(),
        "no Timer E"
    );
    l.receive_response(t0, response_to(&bye, 200));
    l.handle_timeout(t0 + Duration::from_secs(3));
    assert!(l.is_empty(), "Timer K is zero over TCP");
}

/// §17.2.1, §17.2.2: the server never retransmits its final over TCP and
/// forgets the transaction once done (Timers G, I and J are zero).
#[test]
fn over_tcp_a_server_never_retransmits_and_does_not_linger() {
    let t0 = Instant::now();
    let mut l = layer();
    let Inbound::New(tx, invite) =
        l.receive_request(t0, request("INVITE", "z9hG4bKtcps", ""), tcp_path())
    else {
        panic!("a new transaction");
    };
    l.respond(t0, tx, response_to(&invite, 486));
    let sent: Vec<Transmit> = std::iter::from_fn(|| l.poll_transmit()).collect();
    assert_eq!(sent.len(), 2, "100 Trying and the 486");
    assert!(sent.iter().all(|t| t.proto == crate::sip::Protocol::Tcp));
    assert!(
        run_until(&mut l, t0, Duration::from_secs(5)).is_empty(),
        "no Timer G"
    );
    let mut ack = request("ACK", "z9hG4bKtcps", "");
    ack.to.set_tag("t1");
    l.receive_request(t0 + Duration::from_secs(5), ack, tcp_path());
    l.handle_timeout(t0 + Duration::from_secs(5));
    assert!(l.is_empty(), "Timer I is zero over TCP");

    let Inbound::New(tx, options) =
        l.receive_request(t0, request("OPTIONS", "z9hG4bKtcpo", ""), tcp_path())
    else {
        panic!("a new transaction");
    };
    l.respond(t0, tx, response_to(&options, 200));
    drain(&mut l);
    l.handle_timeout(t0);
    assert!(l.is_empty(), "Timer J is zero over TCP");
}

/// RFC 3261 §17.1.4: a connection that closes under a request is a
/// transport error, reported at once like a timeout; a request on another
/// flow (UDP to the same peer) is not touched.
#[test]
fn a_closed_connection_fails_its_requests_at_once() {
    let t0 = Instant::now();
    let mut l = layer();
    let on_tcp = l.send_request(t0, request("INVITE", "z9hG4bKflow1", ""), tcp_path(), 1);
    l.send_request(t0, request("INVITE", "z9hG4bKflow2", ""), path(), 2);
    drain(&mut l);
    l.flow_closed(tcp_path());
    assert_eq!(
        l.poll_event(),
        Some(TxEvent::Timeout {
            tx: on_tcp,
            owner: 1
        })
    );
    assert_eq!(l.poll_event(), None, "the UDP request is not on that flow");
    assert_eq!(l.clients_awaiting_final(), 1);
}

/// RFC 3262 §3: a reliable provisional is retransmitted at T1, doubling
/// (without T2's cap), and reported unacknowledged after 64*T1.
#[test]
fn a_reliable_provisional_is_retransmitted_until_64_t1_then_reported() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKrel", "");
    let Inbound::New(tx, _) = l.receive_request(t0, invite.clone(), path()) else {
        panic!("new");
    };
    l.set_server_owner(tx, 9);
    assert_eq!(drain(&mut l), vec!["SIP/2.0 100 Trying"]);
    l.respond_reliably(t0, tx, response_to(&invite, 183));
    assert_eq!(drain(&mut l), vec!["SIP/2.0 183 Session Progress"]);
    let sends = run_until(&mut l, t0, Duration::from_secs(40));
    assert_eq!(sends, vec![0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
    assert_eq!(
        l.poll_event(),
        Some(TxEvent::PrackTimeout { tx, owner: Some(9) })
    );
    assert_eq!(l.server_state(tx), Some(ServerState::Proceeding));
    // The user now rejects the INVITE (5xx), as §3 says.
    l.respond(t0 + Duration::from_secs(32), tx, response_to(&invite, 500));
    assert_eq!(drain(&mut l), vec!["SIP/2.0 500 Server Internal Error"]);
}

#[test]
fn a_prack_stops_the_retransmissions_and_a_final_does_too() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKrel2", "");
    let Inbound::New(tx, _) = l.receive_request(t0, invite.clone(), path()) else {
        panic!("new");
    };
    drain(&mut l);
    l.respond_reliably(t0, tx, response_to(&invite, 180));
    drain(&mut l);
    let sends = run_until(&mut l, t0, Duration::from_millis(1600));
    assert_eq!(
        sends,
        vec![0.5, 1.5],
        "two retransmissions: the PRACK is late"
    );
    l.provisional_acknowledged(tx);
    assert!(run_until(&mut l, t0, Duration::from_secs(40)).is_empty());
    assert_eq!(l.poll_event(), None);
    // A second one, then the 2xx: the 2xx ends the retransmissions (§3).
    let t1 = t0 + Duration::from_secs(2);
    l.respond_reliably(t1, tx, response_to(&invite, 183));
    l.respond(t1, tx, response_to(&invite, 200));
    assert_eq!(drain(&mut l).len(), 2);
    let sends = run_until(&mut l, t0, Duration::from_secs(70));
    assert!(sends.is_empty(), "{sends:?}");
    assert_eq!(l.poll_event(), None);
}

#[test]
fn over_tcp_a_reliable_provisional_is_not_resent_but_still_times_out() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKrel3", "");
    let Inbound::New(tx, _) = l.receive_request(t0, invite.clone(), tcp_path()) else {
        panic!("new");
    };
    drain(&mut l);
    l.respond_reliably(t0, tx, response_to(&invite, 183));
    drain(&mut l);
    assert!(run_until(&mut l, t0, Duration::from_secs(40)).is_empty());
    assert!(matches!(
        l.poll_event(),
        Some(TxEvent::PrackTimeout { tx: t, .. }) if t == tx
    ));
}

/// The per-connection index that makes a close cheap forgets a transaction
/// once it ends: a connection per call leaves nothing behind.
#[test]
fn a_finished_request_leaves_nothing_on_its_connection() {
    let t0 = Instant::now();
    let mut l = layer();
    let options = request("OPTIONS", "z9hG4bKidx1", "");
    l.send_request(t0, options.clone(), tcp_path(), 1);
    assert_eq!(l.clients_on_flows[&tcp_path()].len(), 1);
    drain(&mut l);
    let mut ok = response_to(&options, 200);
    ok.to.set_tag("t1");
    assert!(l.receive_response(t0, ok).is_some());
    l.handle_timeout(t0);
    assert!(l.is_empty(), "Timer K is zero over TCP");
    assert!(l.clients_on_flows.is_empty(), "{:?}", l.clients_on_flows);
    l.flow_closed(tcp_path());
    assert_eq!(l.poll_event(), None, "nothing was waiting on it");
}

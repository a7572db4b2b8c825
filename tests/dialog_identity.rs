//! Regression (issue 15): a BYE with the call's Call-ID and the caller's From
//! tag but `To: …;tag=WRONG` hung up a live call, from any address. Here a real
//! sipp call runs while forged requests — every in-dialog method, on both legs,
//! from a stranger and from the trunks' own addresses — are sent into it: each
//! gets 481 (403 for the stranger) and the call ends only when the caller's sipp
//! says BYE, with one CDR that says so.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::{CALLEE_PORT, Net, Vigil, callee, caller, exchange, scenario, status_of};

/// The answered call `vigil ctl calls` lists: (A-leg Call-ID, B-leg Call-ID).
fn answered_call(vigil: &Vigil) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, stdout, stderr) = vigil.ctl(&["calls"]);
        assert!(ok, "{stderr}");
        let calls: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        if let Some(call) = calls
            .as_array()
            .and_then(|c| c.first())
            .filter(|c| !c["answered_for"].is_null())
        {
            let id = |k: &str| call[k].as_str().expect("call id").to_string();
            return (id("call_id"), id("b_call_id"));
        }
        assert!(Instant::now() < deadline, "no answered call: {stdout}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An in-dialog request with the given identifiers, sent from `from`.
fn forged(method: &str, from: SocketAddr, call_id: &str, from_tag: &str, n: u32) -> String {
    let body = if method == "INVITE" {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
            ip = from.ip()
        )
    } else {
        String::new()
    };
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:vigil@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP {from};branch=z9hG4bK-forged-{n};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@{ip}>;tag={from_tag}\r\n\
To: <sip:0049301234@127.0.0.1>;tag=WRONG\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:1001@{from}>\r\n\
Event: dialog\r\nSubscription-State: active\r\nRAck: 1 1 INVITE\r\n\
{ct}Content-Length: {len}\r\n\r\n{body}",
        ip = from.ip(),
        cseq = 100 + n,
        len = body.len(),
    )
}

/// The final status Vigil answered `request` with, sent from `from` (waiting
/// at most 3 s for it).
fn final_status(from: SocketAddr, vigil: SocketAddr, request: &str) -> Option<u16> {
    let socket = UdpSocket::bind(from).expect("bind");
    socket.send_to(request.as_bytes(), vigil).expect("send");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 65_536];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket.set_read_timeout(Some(left)).expect("timeout");
        let (len, _) = socket.recv_from(&mut buf).ok()?;
        let status = status_of(&String::from_utf8_lossy(&buf[..len]));
        if status.is_some_and(|s| s >= 200) {
            return status;
        }
    }
    None
}

#[test]
fn forged_in_dialog_requests_cannot_touch_a_live_call() {
    let net = Net::new(80);
    let vigil = Vigil::start(net, "");
    let uas = callee(net, None, &["-m", "1"]);
    let uac = caller(
        net,
        net.caller,
        Some(&scenario("uac_talk_bye.xml")),
        "0049301234",
        &["-m", "1"],
    );
    let (a_call_id, b_call_id) = answered_call(&vigil);
    let at = |ip: IpAddr, port: u16| SocketAddr::new(ip, port);
    let stranger = at(net.stranger, 5099);
    // The caller's own address (admitted) on another port, and the carrier's.
    let caller_side = at(net.caller, 5098);
    let callee_side = at(net.callee, CALLEE_PORT + 19);
    let methods = ["BYE", "INVITE", "UPDATE", "INFO", "NOTIFY", "PRACK"];
    let mut n = 0;
    for method in methods {
        for (from, call_id, from_tag, expected) in [
            // The A leg: everything the INVITE showed, a wrong To tag.
            (stranger, a_call_id.as_str(), "caller-1", 403),
            (caller_side, a_call_id.as_str(), "caller-1", 481),
            // The B leg: Vigil's Call-ID, tags guessed.
            (stranger, b_call_id.as_str(), "WRONG", 403),
            (callee_side, b_call_id.as_str(), "WRONG", 481),
        ] {
            n += 1;
            let request = forged(method, from, call_id, from_tag, n);
            assert_eq!(
                final_status(from, net.vigil_addr(), &request),
                Some(expected),
                "{method} from {from} on {call_id}"
            );
        }
    }
    // An ACK with a wrong tag gets no answer and confirms nothing; a CANCEL on
    // a branch that is not the INVITE's matches no transaction.
    // (From ports of their own: the forged INVITEs' 481s are retransmitted
    // to the port they came from until ACKed.)
    let ack_from = at(net.caller, 5097);
    let ack = forged("ACK", ack_from, &a_call_id, "caller-1", 90);
    let answers = exchange(
        ack_from,
        net.vigil_addr(),
        ack.as_bytes(),
        Duration::from_millis(500),
    );
    assert!(answers.is_empty(), "{answers:?}");
    let cancel_from = at(net.caller, 5096);
    let cancel = forged("CANCEL", cancel_from, &a_call_id, "caller-1", 91);
    assert_eq!(
        final_status(cancel_from, net.vigil_addr(), &cancel),
        Some(481)
    );

    // The call is still up, and ends when the caller hangs up.
    let (ok, stdout, _) = vigil.ctl(&["calls"]);
    assert!(
        ok && stdout.contains(&a_call_id),
        "the call survived: {stdout}"
    );
    uac.expect_success(Duration::from_secs(40));
    uas.expect_success(Duration::from_secs(10));
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 1, "{:?}", stopped.cdrs);
    let cdr = &stopped.cdrs[0];
    assert_eq!(cdr["end_reason"], "caller-bye");
    assert!(
        cdr["duration_ms"].as_u64().unwrap_or(0) >= 7_500,
        "the call ran its 8 s: {cdr}"
    );
}

//! Malformed datagrams thrown at the running daemon while it carries calls: every
//! one is answered 400 when it can be addressed or dropped with a log line, and
//! the switch keeps serving.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use support::{Net, Vigil, callee, caller, collect, status_of};

fn request(net: Net, branch: &str, headers: &str) -> String {
    format!(
        "INVITE sip:0049301234@{vigil}:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {caller}:5999;branch=z9hG4bK-{branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{caller}>;tag=m-{branch}\r\nTo: <sip:0049301234@{vigil}>\r\n\
Call-ID: malformed-{branch}\r\n{headers}\r\n",
        vigil = net.vigil,
        caller = net.caller
    )
}

/// Sends `bytes` from a fresh socket on the caller's address; returns the status
/// lines of what came back.
fn send(net: Net, bytes: &[u8]) -> Vec<String> {
    let socket = UdpSocket::bind(SocketAddr::new(net.caller, 0)).expect("bind");
    socket.send_to(bytes, net.vigil_addr()).expect("send");
    collect(&socket, Duration::from_millis(300))
        .into_iter()
        .map(|r| r.lines().next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn malformed_datagrams_are_answered_or_dropped_and_calls_go_on() {
    let net = Net::new(21);
    let mut vigil = Vigil::start(net, "");
    let uas = callee(net, None, &["-m", "15"]);
    // Five calls held for 3 s are in progress while the garbage arrives.
    let in_progress = caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "5", "-r", "50", "-d", "3000"],
    );
    std::thread::sleep(Duration::from_millis(300));

    let bad_cseq = request(net, "cseq", "CSeq: one INVITE\r\nContent-Length: 0\r\n");
    assert_eq!(
        send(net, bad_cseq.as_bytes()),
        vec!["SIP/2.0 400 Invalid CSeq: CSeq must start with a sequence number"]
    );

    let lying_length = request(net, "len", "CSeq: 1 INVITE\r\nContent-Length: 500\r\n") + "v=0\r\n";
    let replies = send(net, lying_length.as_bytes());
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].starts_with("SIP/2.0 400 Content-Length 500 Exceeds Body"),
        "{replies:?}"
    );

    let absurd_timer = request(
        net,
        "se",
        "CSeq: 1 INVITE\r\nSession-Expires: -1\r\nContent-Length: 0\r\n",
    );
    assert!(
        send(net, absurd_timer.as_bytes())[0].starts_with("SIP/2.0 400 Invalid Session-Expires")
    );

    let hops = request(net, "mf", "CSeq: 1 INVITE\r\nContent-Length: 0\r\n")
        .replace("Max-Forwards: 70", "Max-Forwards: 9999");
    assert!(send(net, hops.as_bytes())[0].starts_with("SIP/2.0 400 Invalid Max-Forwards"));

    let no_via = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: nv\r\nCSeq: 1 OPTIONS\r\n\r\n";
    assert!(
        send(net, no_via.as_bytes()).is_empty(),
        "nothing to address a response with"
    );

    let truncated = &bad_cseq.as_bytes()[..40];
    assert!(send(net, truncated).is_empty());

    let junk: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(send(net, &junk).is_empty());
    assert!(send(net, b"").is_empty());
    assert!(
        send(net, b"\r\n\r\n").is_empty(),
        "a keep-alive is not answered"
    );
    let huge = vec![b'A'; 65_000];
    assert!(send(net, &huge).is_empty());
    let bad_response =
        "SIP/2.0 99999 Nope\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKvgl00-x\r\n\r\n";
    assert!(send(net, bad_response.as_bytes()).is_empty());

    assert!(vigil.is_running());
    in_progress.expect_success(Duration::from_secs(20));
    let ok = send(net, &support::options_request(net.caller, "after"));
    assert_eq!(
        ok.iter().filter_map(|r| status_of(r)).collect::<Vec<_>>(),
        vec![200]
    );
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "10", "-r", "20"],
    )
    .expect_success(Duration::from_secs(30));
    uas.expect_success(Duration::from_secs(10));
    let stopped = vigil.stop();
    assert!(stopped.status.success());
    assert!(
        stopped.log.contains("malformed datagram"),
        "junk is logged:\n{}",
        stopped.log
    );
    assert_eq!(
        stopped
            .cdrs
            .iter()
            .filter(|c| c["end_reason"] == "caller-bye")
            .count(),
        15
    );
}

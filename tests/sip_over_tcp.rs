//! SIP over TCP end to end (issue 19): sipp calls through Vigil over TCP,
//! one connection for all its calls (`-t t1`, as a trunk does) and one per
//! call (`-t tn`, as phones do), to a sipp callee over UDP; session timers
//! run on both legs, the TCP leg's refreshes going back on the caller's
//! connection. Bad streams are refused without hurting anyone else.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{Net, Vigil, callee, caller, scenario};

fn with_tcp(net: Net) -> String {
    format!(
        "listen: [\"udp:{v}:5060\", \"tcp:{v}:5060\"]\n",
        v = net.vigil
    )
}

fn start(net: Net, extra: &str) -> Vigil {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = net.config(&dir.path().join("cdr.jsonl"), extra).replacen(
        &format!("listen: [\"udp:{}:5060\"]\n", net.vigil),
        &with_tcp(net),
        1,
    );
    Vigil::start_with(net, dir, &config)
}

#[test]
fn calls_over_one_tcp_connection_and_over_one_each_reach_a_udp_callee() {
    let net = Net::new(184);
    let vigil = start(net, "");
    let uas = callee(net, None, &[]);
    for mode in ["t1", "tn"] {
        caller(
            net,
            net.caller,
            None,
            "0049301234",
            &["-m", "5", "-r", "10", "-t", mode, "-max_socket", "100"],
        )
        .expect_success(Duration::from_secs(30));
    }
    uas.stop();
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 10, "{}", stopped.log);
    for cdr in &stopped.cdrs {
        assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    }
}

#[test]
fn session_refreshes_reach_a_tcp_caller_on_its_connection() {
    let net = Net::new(185);
    let vigil = start(
        net,
        "session_timer: { ttl: 4, min_se: 2, update_segment: 2, allow_short_intervals: true }\n",
    );
    // The caller leaves its refreshes to Vigil (refresher=uas) and answers
    // them on its connection; the callee answers its own; after 7 s the
    // operator hangs the call up, and the caller's BYE comes over TCP too.
    let uas = callee(
        net,
        Some(&scenario("uas_refresh.xml")),
        &["-set", "se", "4", "-m", "1"],
    );
    let uac = caller(
        net,
        net.caller,
        Some(&scenario("uac_refreshed_wait_bye.xml")),
        "0049301234",
        &[
            "-set",
            "se",
            "4",
            "-m",
            "1",
            "-t",
            "t1",
            "-max_socket",
            "100",
            "-trace_msg",
        ],
    );
    std::thread::sleep(Duration::from_secs(7));
    let (ok, calls, err) = vigil.ctl(&["calls"]);
    assert!(ok, "{err}");
    let calls: serde_json::Value = serde_json::from_str(&calls).expect("json");
    let call_id = calls[0]["call_id"].as_str().expect("a call up").to_string();
    let (ok, _, err) = vigil.ctl(&["hangup", &call_id]);
    assert!(ok, "{err}");
    let uac = uac.expect_success(Duration::from_secs(10));
    uas.expect_success(Duration::from_secs(10));
    let refreshes = uac.messages.matches("UPDATE sip:").count()
        + uac
            .messages
            .matches("INVITE sip:")
            .count()
            .saturating_sub(1);
    assert!(
        refreshes >= 2,
        "Vigil refreshed the TCP caller {refreshes} times in 7 s:\n{}",
        uac.messages
    );
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    assert_eq!(stopped.cdrs[0]["end_reason"], "admin");
}

/// Sends `bytes` on a new connection and returns what came back before
/// Vigil closed it (or `wait` passed).
fn exchange_tcp(
    from: std::net::IpAddr,
    to: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> (String, bool) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::new(from, 0).into()).expect("bind");
    socket.connect(&to.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(wait)).expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[test]
fn bad_streams_are_closed_and_a_keepalive_ping_gets_its_pong() {
    let net = Net::new(186);
    let vigil = start(net, "");
    let at = net.vigil_addr();
    let (answer, _) = exchange_tcp(net.caller, at, b"\r\n\r\n", Duration::from_millis(500));
    assert_eq!(answer, "\r\n", "RFC 5626: a ping gets a pong");
    let no_length = format!(
        "OPTIONS sip:{v} SIP/2.0\r\nVia: SIP/2.0/TCP {c}:5999;branch=z9hG4bK-nolen\r\n\
         From: <sip:a@{c}>;tag=1\r\nTo: <sip:{v}>\r\nCall-ID: nolen\r\nCSeq: 1 OPTIONS\r\n\r\n",
        v = net.vigil,
        c = net.caller
    );
    let (_, closed) = exchange_tcp(net.caller, at, no_length.as_bytes(), Duration::from_secs(5));
    assert!(
        closed,
        "a message without Content-Length closes the connection"
    );
    let garbage = vec![b'x'; 70_000];
    let (_, closed) = exchange_tcp(net.caller, at, &garbage, Duration::from_secs(5));
    assert!(closed, "headers that never end close the connection");
    // Vigil still answers over TCP.
    let options = format!(
        "OPTIONS sip:{v} SIP/2.0\r\nVia: SIP/2.0/TCP {c}:5999;branch=z9hG4bK-ok\r\n\
         From: <sip:a@{c}>;tag=1\r\nTo: <sip:{v}>\r\nCall-ID: ok\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        v = net.vigil,
        c = net.caller
    );
    let (answer, _) = exchange_tcp(
        net.caller,
        at,
        options.as_bytes(),
        Duration::from_millis(1500),
    );
    assert!(
        answer.starts_with("SIP/2.0 200"),
        "{answer:?}\n{}",
        vigil.log()
    );
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
}

#[test]
fn a_trunk_over_tcp_gets_its_calls_on_a_connection_vigil_opens() {
    let net = Net::new(188);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = net.config(&dir.path().join("cdr.jsonl"), "").replacen(
        &format!("outbound: {{ to: \"{}:5080\" }}", net.callee),
        &format!(
            "outbound: {{ to: \"{}:5080\" }}\n    transport: tcp",
            net.callee
        ),
        1,
    );
    assert!(config.contains("transport: tcp"), "{config}");
    let vigil = Vigil::start_with(net, dir, &config);
    let uas = callee(net, None, &["-t", "t1", "-max_socket", "100"]);
    caller(net, net.caller, None, "0049301234", &["-m", "3", "-r", "5"])
        .expect_success(Duration::from_secs(30));
    uas.stop();
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 3, "{}", stopped.log);
    for cdr in &stopped.cdrs {
        assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    }
}

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
    let extra = extra.replace("{dir}", &dir.path().display().to_string());
    let config = net.config(&dir.path().join("cdr.jsonl"), &extra).replacen(
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

/// A phone on one TCP connection: it registers (with digest), then answers
/// what comes on that connection.
struct TcpPhone {
    stream: TcpStream,
    framer: vigil::transport::stream::StreamFramer,
    /// Everything that arrived, as frames.
    pings: usize,
}

impl TcpPhone {
    fn connect(from: std::net::IpAddr, to: SocketAddr) -> TcpPhone {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.bind(&SocketAddr::new(from, 0).into()).expect("bind");
        socket.connect(&to.into()).expect("connect");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        TcpPhone {
            stream,
            framer: vigil::transport::stream::StreamFramer::new(Default::default()),
            pings: 0,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next SIP message within `wait` (CRLF pings are counted).
    fn next(&mut self, wait: Duration) -> Option<vigil::sip::Message> {
        use vigil::transport::stream::Frame;
        let deadline = std::time::Instant::now() + wait;
        loop {
            while let Some(frame) = self.framer.next(std::time::Instant::now()) {
                match frame.expect("Vigil frames its messages") {
                    Frame::Message(bytes) => return vigil::sip::decode(&bytes).ok(),
                    Frame::Ping => self.pings += 1,
                    Frame::Pong => {}
                }
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.framer.push(&buf[..n]),
                Err(_) => {}
            }
        }
    }

    fn request(&mut self, wait: Duration) -> vigil::sip::Request {
        loop {
            match self.next(wait) {
                Some(vigil::sip::Message::Request(r)) => return r,
                Some(_) => continue,
                None => panic!("no request within {wait:?}"),
            }
        }
    }

    fn response(&mut self, wait: Duration) -> vigil::sip::Response {
        loop {
            match self.next(wait) {
                Some(vigil::sip::Message::Response(r)) if r.status >= 200 => return r,
                Some(_) => continue,
                None => panic!("no response within {wait:?}"),
            }
        }
    }
}

#[test]
fn a_phone_registered_over_tcp_is_called_and_pinged_on_its_connection_and_gone_with_it() {
    let net = Net::new(191);
    let vigil = start(
        net,
        "registrar: { domain: vigil.local, db: \"{dir}/registrar.db\", min_expires: 1 }\n\
         users:\n  - { user: \"1002\", password: secret1002 }\n\
         nat_keepalive: { period: 1, allow_short_intervals: true }\n",
    );
    let phone_ip: std::net::IpAddr = "127.0.191.5".parse().expect("ip");
    let mut phone = TcpPhone::connect(phone_ip, net.vigil_addr());
    let local = phone.stream.local_addr().expect("local");
    let register = format!(
        "REGISTER sip:vigil.local SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-reg1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1002@vigil.local>;tag=p1\r\nTo: <sip:1002@vigil.local>\r\n\
         Call-ID: tcp-phone\r\nCSeq: 1 REGISTER\r\nContact: <sip:1002@{local};transport=tcp>\r\n\
         Expires: 300\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send(register.as_bytes());
    let challenge = phone.response(Duration::from_secs(5));
    assert_eq!(challenge.status, 401);
    let Ok(vigil::sip::Message::Request(sent)) = vigil::sip::decode(register.as_bytes()) else {
        panic!("our REGISTER decodes");
    };
    let auth = vigil::config::TrunkAuth {
        user: "1002".into(),
        password: "secret1002".into(),
    };
    let again =
        vigil::uplink::auth::authorize(&sent, &challenge, &auth, "z9hG4bK-reg2".into(), "c")
            .expect("credentials");
    phone.send(&again.encode());
    assert_eq!(phone.response(Duration::from_secs(5)).status, 200);

    // A call from the trunk comes on the phone's connection.
    let uac = caller(net, net.caller, None, "1002", &["-m", "1", "-d", "500"]);
    let invite = phone.request(Duration::from_secs(10));
    assert_eq!(invite.method, vigil::sip::Method::Invite);
    assert!(
        invite.top_via().transport.eq_ignore_ascii_case("TCP"),
        "{:?}",
        invite.via
    );
    let mut ok = invite.response(200);
    ok.to.set_tag("phone");
    ok.headers.push(
        vigil::sip::HeaderName::Contact,
        format!("<sip:1002@{local};transport=tcp>"),
    );
    ok.headers
        .push(vigil::sip::HeaderName::ContentType, "application/sdp");
    ok.body = format!(
        "v=0\r\no=- 1 1 IN IP4 {phone_ip}\r\ns=-\r\nc=IN IP4 {phone_ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    .into_bytes();
    phone.send(&ok.encode());
    let ack = phone.request(Duration::from_secs(5));
    assert_eq!(ack.method, vigil::sip::Method::Ack);
    let bye = phone.request(Duration::from_secs(5));
    assert_eq!(bye.method, vigil::sip::Method::Bye);
    phone.send(&bye.response(200).encode());
    uac.expect_success(Duration::from_secs(10));
    // Keep-alives: CRLF pings on the connection, every second.
    let _ = phone.next(Duration::from_millis(2500));
    assert!(
        phone.pings >= 1,
        "RFC 5626 CRLF keep-alives on the connection"
    );

    // The connection closes: the phone is unreachable until it registers again.
    drop(phone);
    std::thread::sleep(Duration::from_millis(300));
    let unreachable = support::scenario_expecting(
        &tempfile::tempdir().expect("dir").keep(),
        "uac_rejected.xml",
        480,
    );
    caller(net, net.caller, Some(&unreachable), "1002", &["-m", "1"])
        .expect_success(Duration::from_secs(10));
    let stopped = vigil.stop();
    let ends: Vec<&str> = stopped
        .cdrs
        .iter()
        .filter_map(|c| c["end_reason"].as_str())
        .collect();
    assert_eq!(ends, ["caller-bye", "rejected"], "{}", stopped.log);
}

/// One address opening connections past the per-source limit (1,000) gets
/// the extra ones closed at once; another address still gets in.
#[test]
fn connections_past_the_per_source_limit_are_refused_and_others_still_get_in() {
    let net = Net::new(192);
    let vigil = start(net, "");
    let at = net.vigil_addr();
    let connect = |from: std::net::IpAddr| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.bind(&SocketAddr::new(from, 0).into()).expect("bind");
        socket.connect(&at.into()).expect("connect");
        let stream: TcpStream = socket.into();
        // Open ones answer a read with WouldBlock at once, closed ones with 0.
        stream.set_nonblocking(true).expect("nonblocking");
        stream
    };
    let mut held = Vec::new();
    for _ in 0..1_050 {
        held.push(connect(net.stranger));
    }
    std::thread::sleep(Duration::from_millis(500));
    let closed = held
        .iter_mut()
        .map(|s| s.read(&mut [0u8; 1]))
        .filter(|r| matches!(r, Ok(0)))
        .count();
    assert!(
        (50..=60).contains(&closed),
        "{closed} of 1,050 closed at a limit of 1,000 per source"
    );
    let (answer, _) = exchange_tcp(net.caller, at, b"\r\n\r\n", Duration::from_millis(500));
    assert_eq!(answer, "\r\n", "another address still gets in");
    let (ok, status, err) = vigil.ctl(&["status"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert!(
        status["connections"][0]["refused"].as_u64() >= Some(50),
        "{status}"
    );
    drop(held);
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
}

/// A gateway whose connection closes under an INVITE is failed at once
/// (a transport error, RFC 3261 §17.1.4): the call moves to the next
/// gateway without waiting for `invite_timeout` (20 s here).
#[test]
fn a_gateway_whose_connection_closes_is_failed_over_at_once() {
    let net = Net::new(194);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = net.config(&dir.path().join("cdr.jsonl"), "").replacen(
        &format!("outbound: {{ to: \"{}:5080\" }}", net.callee),
        &format!(
            "outbound:\n      gateways:\n        - {{ to: \"{c}:5071\", priority: 1 }}\n        - {{ to: \"{c}:5072\", priority: 2 }}\n      invite_timeout: 20\n    transport: tcp",
            c = net.callee
        ),
        1,
    );
    let vigil = Vigil::start_with(net, dir, &config);
    let tcp = ["-t", "t1", "-max_socket", "100"];
    let dying = support::callee_at(net, 5071, Some(&scenario("uas_silent.xml")), &tcp);
    let answering = support::callee_at(net, 5072, None, &tcp);
    let started = std::time::Instant::now();
    let uac = caller(net, net.caller, None, "0049301234", &["-m", "1"]);
    std::thread::sleep(Duration::from_secs(1));
    dying.stop();
    uac.expect_success(Duration::from_secs(15));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed over at once, not after invite_timeout: {:?}",
        started.elapsed()
    );
    answering.stop();
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    let attempts = stopped.cdrs[0]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(attempts.len(), 2, "{}", stopped.cdrs[0]);
    assert_eq!(attempts[0]["outcome"], "timeout", "{}", stopped.cdrs[0]);
    assert_eq!(attempts[1]["outcome"], "200");
}

/// A caller on TCP outlives a restart of Vigil (issues 19 and 21): its
/// connection dies with the process; the phone connects again from another
/// port (as a phone behind NAT does) and refreshes on the new connection;
/// when the callee hangs up, Vigil's BYE reaches the caller on that
/// connection, not at the dead connection's address. (sipp ends a TCP call
/// when its connection breaks, so the caller is the test's own socket.)
#[test]
fn a_tcp_caller_is_reached_on_its_new_connection_after_a_restart() {
    let net = Net::new(195);
    let vigil = start(
        net,
        "session_timer: { min_se: 2, allow_short_intervals: true }\n\
         state: { path: \"{dir}/calls.db\" }\n",
    );
    let uas = callee(
        net,
        Some(&scenario("uas_hangup.xml")),
        &["-d", "6000", "-m", "1"],
    );
    let (c, v) = (net.caller, net.vigil);
    let request = |phone: &TcpPhone, line: &str, cseq: &str, to: &str, extra: &str, body: &str| {
        let p = phone.stream.local_addr().expect("local").port();
        format!(
            "{line} SIP/2.0\r\nVia: SIP/2.0/TCP {c}:{p};branch=z9hG4bK-tcp-{n};rport\r\n\
             From: <sip:1001@{c}>;tag=phone\r\nTo: {to}\r\nCall-ID: tcp-restart\r\n\
             CSeq: {cseq}\r\nContact: <sip:1001@{c}:{p};transport=tcp>\r\nMax-Forwards: 70\r\n\
             {extra}Content-Length: {len}\r\n\r\n{body}",
            n = cseq.replace(' ', ""),
            len = body.len()
        )
    };
    let timer = "Supported: timer\r\nSession-Expires: 10;refresher=uac\r\n";
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {c}\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
    );
    let mut phone = TcpPhone::connect(c, net.vigil_addr());
    let invite = request(
        &phone,
        &format!("INVITE sip:0049301234@{v}"),
        "1 INVITE",
        &format!("<sip:0049301234@{v}>"),
        &format!("{timer}Content-Type: application/sdp\r\n"),
        &sdp,
    );
    phone.send(invite.as_bytes());
    let ok = phone.response(Duration::from_secs(10));
    assert_eq!(ok.status, 200);
    let answered = ok.to.to_string();
    let target = ok.contact().expect("Contact").uri.to_string();
    let ack = request(&phone, &format!("ACK {target}"), "1 ACK", &answered, "", "");
    phone.send(ack.as_bytes());

    // The call is saved; Vigil dies and comes back.
    vigil.wait_saved(1);
    let old = phone.stream.local_addr().expect("local");
    let dir = vigil.kill_hard();
    std::thread::sleep(Duration::from_millis(500));
    let vigil = Vigil::restart(net, dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !vigil.ctl(&["calls"]).1.contains("tcp-restart") {
        assert!(
            std::time::Instant::now() < deadline,
            "the call is not resumed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The phone connects again and refreshes on its new connection.
    let mut phone = TcpPhone::connect(c, net.vigil_addr());
    assert_ne!(phone.stream.local_addr().expect("local"), old);
    let refresh = request(
        &phone,
        &format!("UPDATE {target}"),
        "2 UPDATE",
        &answered,
        timer,
        "",
    );
    phone.send(refresh.as_bytes());
    assert_eq!(phone.response(Duration::from_secs(10)).status, 200);

    // The callee hangs up (6 s after its answer): the BYE comes on the
    // phone's new connection.
    let bye = phone.request(Duration::from_secs(15));
    assert_eq!(bye.method, vigil::sip::Method::Bye);
    phone.send(&bye.response(200).encode());
    uas.expect_success(Duration::from_secs(30));
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    assert_eq!(
        stopped.cdrs[0]["end_reason"], "callee-bye",
        "{}",
        stopped.cdrs[0]
    );
}

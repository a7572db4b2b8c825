//! Overload and flood control end to end: past `limits.max_calls` a new call
//! gets 503 with Retry-After while the calls up carry on, and a source over
//! `limits.per_source_rps` is cut off silently while a trunk's calls complete.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use support::{
    Net, Vigil, callee, caller, collect, options_request, scenario_expecting, scrape, series,
    status_of,
};

#[test]
fn past_max_calls_a_new_call_gets_503_and_the_calls_up_carry_on() {
    let net = Net::new(66);
    let vigil = Vigil::start(net, "limits: { max_calls: 3 }");
    let dir = tempfile::tempdir().expect("dir");
    let uas = callee(net, None, &["-m", "4"]);
    // Three calls held 4 s each: the switch is full.
    let up = caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "3", "-l", "3", "-r", "10", "-d", "4000"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let refused = caller(
        net,
        net.caller,
        Some(&scenario_expecting(dir.path(), "uac_rejected.xml", 503)),
        "0049301234",
        &["-m", "1", "-p", "5062", "-trace_msg"],
    )
    .expect_success(Duration::from_secs(20));
    assert!(
        refused.messages.contains("Retry-After: 5"),
        "the 503 says when to come back:\n{}",
        refused.messages
    );
    up.expect_success(Duration::from_secs(30));
    // Room again: the next call goes through.
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "1", "-p", "5063"],
    )
    .expect_success(Duration::from_secs(20));
    uas.expect_success(Duration::from_secs(10));
    let stopped = vigil.stop();
    assert_eq!(
        stopped.cdrs.len(),
        4,
        "no CDR for a shed call: {}",
        stopped.log
    );
    assert!(stopped.cdrs.iter().all(|c| c["end_reason"] == "caller-bye"));
}

#[test]
fn a_flooding_source_is_cut_off_while_a_trunk_keeps_calling() {
    let net = Net::new(67);
    let vigil = Vigil::start(
        net,
        "limits: { per_source_rps: 50, per_source_cooldown: 30 }",
    );
    let flood = UdpSocket::bind(SocketAddr::new(net.stranger, 0)).expect("bind");
    flood
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    for i in 0..2_000 {
        let request = options_request(net.stranger, &format!("flood{i}"));
        flood.send_to(&request, net.vigil_addr()).expect("send");
    }
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    while flood.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    assert!(
        answered <= 60,
        "{answered} of 2,000 flood requests were answered: only a second's worth may be"
    );
    // The trunk's calls are not affected.
    let uas = callee(net, None, &["-m", "3"]);
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "3", "-r", "10"],
    )
    .expect_success(Duration::from_secs(20));
    uas.expect_success(Duration::from_secs(10));
    // The flooder is still cooling down.
    flood
        .send_to(&options_request(net.stranger, "after"), net.vigil_addr())
        .expect("send");
    assert!(flood.recv_from(&mut buf).is_err(), "still cut off");
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 3, "{}", stopped.log);
    assert!(
        stopped.log.contains("over limits.per_source_rps"),
        "logged once"
    );
}

#[test]
fn a_source_holding_too_many_transactions_gets_503_but_its_calls_go_on() {
    let net = Net::new(71);
    let vigil = Vigil::start(net, "limits: { max_transactions_per_source: 20 }");
    // A call from the trunk's address is up for 4 s...
    let uas = callee(net, None, &["-m", "1"]);
    let call = caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "1", "-d", "4000"],
    );
    std::thread::sleep(Duration::from_millis(1000));
    // ...while the same address opens transactions that linger 32 s (Timer J).
    let probe = UdpSocket::bind(SocketAddr::new(net.caller, 0)).expect("bind");
    for i in 0..40 {
        let request = options_request(net.caller, &format!("many{i}"));
        probe.send_to(&request, net.vigil_addr()).expect("send");
    }
    let replies = collect(&probe, Duration::from_millis(1500));
    let status = |code: u16| {
        replies
            .iter()
            .filter(|r| status_of(r) == Some(code))
            .count()
    };
    // The ready-check and the call's INVITE took slots too: at most 20 in all.
    assert!(
        (15..=20).contains(&status(200)),
        "{} OPTIONS answered 200",
        status(200)
    );
    assert_eq!(status(200) + status(503), 40, "every OPTIONS answered");
    assert!(
        replies
            .iter()
            .filter(|r| status_of(r) == Some(503))
            .all(|r| r.contains("Retry-After: ")),
        "the 503s say when to come back"
    );
    // The call's BYE is inside a dialog: never refused.
    call.expect_success(Duration::from_secs(20));
    uas.expect_success(Duration::from_secs(10));
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    assert_eq!(stopped.cdrs[0]["end_reason"], "caller-bye");
    assert!(
        stopped.log.contains("over the transaction limits"),
        "logged: {}",
        stopped.log
    );
}

/// INVITEs offered for two seconds at 30,000 a second: far beyond what the
/// switch can take (a release build carries about 6,000 calls/s on these
/// machines, a debug build much less), so they pile up in the kernel's
/// socket buffer, and the receive loop reads datagrams that waited there
/// longer and longer. Once it has read only datagrams 200 ms old for 100 ms,
/// it answers new calls `503` (`vigil_calls_shed_total{reason="backlog"}`)
/// until it has caught up; then the switch takes calls again at once.
#[test]
fn a_backlog_in_the_kernel_sheds_new_calls_and_the_switch_recovers() {
    const FLOOD_RATE: f64 = 30_000.0;
    const FLOOD: usize = 60_000;
    const METRICS_PORT: u16 = 9140;
    // A socket buffer of 200 ms of this flood or more is what lets datagrams
    // wait that long (Vigil asks for 4 MiB; the kernel caps it at rmem_max).
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        rmem_max >= 4 << 20,
        "net.core.rmem_max is {rmem_max}: a socket buffer this small overflows before a datagram waits 200 ms, and this test cannot build a backlog"
    );
    let net = Net::new(140);
    let dir = tempfile::tempdir().expect("dir");
    // No route for the flood's number: an INVITE let in costs a 404 and a
    // CDR, and leaves no call ringing.
    let config = format!(
        r#"listen: ["udp:{vigil}:5060"]
trunks:
  - name: pbx
    inbound: {{ from: ["{caller}/32"] }}
  - name: carrier
    outbound: {{ to: "{callee}:5080" }}
routes:
  - {{ prefix: "00", trunk: carrier }}
cdr: {{ path: "{cdr}" }}
log: {{ level: "warn", format: json }}
metrics: {{ listen: "{vigil}:{METRICS_PORT}" }}
"#,
        vigil = net.vigil,
        caller = net.caller,
        callee = net.callee,
        cdr = dir.path().join("cdr.jsonl").display(),
    );
    let mut vigil = Vigil::start_with(net, dir, &config);
    let flood = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    // Room for the answers, read after the flood.
    let _ = flood.set_recv_buffer_size(4 << 20);
    flood
        .bind(&SocketAddr::new(net.caller, 0).into())
        .expect("bind");
    let flood = UdpSocket::from(flood);
    let me = flood.local_addr().expect("addr");
    let started = std::time::Instant::now();
    let mut sent = 0;
    while sent < FLOOD {
        let due = ((started.elapsed().as_secs_f64() * FLOOD_RATE) as usize).min(FLOOD);
        for i in sent..due {
            flood
                .send_to(&flood_invite(net, me, i), net.vigil_addr())
                .expect("send");
        }
        sent = due;
        std::thread::sleep(Duration::from_millis(1));
    }
    let flood_time = started.elapsed();
    let replies = collect(&flood, Duration::from_secs(3));
    assert!(
        vigil.is_running(),
        "vigil died in the flood:\n{}",
        vigil.log()
    );
    let backlog = metric(
        net,
        METRICS_PORT,
        r#"vigil_calls_shed_total{reason="backlog"}"#,
    );
    let queue = metric(
        net,
        METRICS_PORT,
        r#"vigil_calls_shed_total{reason="overload"}"#,
    );
    let waited_long = metric(net, METRICS_PORT, "vigil_receive_wait_seconds_count")
        - metric(
            net,
            METRICS_PORT,
            r#"vigil_receive_wait_seconds_bucket{le="0.25"}"#,
        );
    let refused: Vec<_> = replies
        .iter()
        .filter(|r| status_of(r) == Some(503))
        .collect();
    eprintln!(
        "flood: {FLOOD} INVITEs in {flood_time:?}; shed: backlog {backlog}, worker queue {queue}; \
         {waited_long} datagrams waited over 250 ms; {} answers read, {} of them 503",
        replies.len(),
        refused.len()
    );
    assert!(
        waited_long > 0,
        "no datagram waited long: the flood did not build a backlog"
    );
    assert!(
        backlog > 0,
        "datagrams waited over 250 ms, yet no new call was shed for it"
    );
    assert!(
        refused.iter().all(|r| r.contains("Retry-After: 2")),
        "a 503 for overload says when to come back"
    );

    // Caught up: calls go through again, none refused.
    let uas = callee(net, None, &["-m", "5"]);
    caller(net, net.caller, None, "0049301234", &["-m", "5", "-r", "5"])
        .expect_success(Duration::from_secs(60));
    uas.expect_success(Duration::from_secs(10));
    let shed_after = metric(
        net,
        METRICS_PORT,
        r#"vigil_calls_shed_total{reason="backlog"}"#,
    ) + metric(
        net,
        METRICS_PORT,
        r#"vigil_calls_shed_total{reason="overload"}"#,
    );
    assert_eq!(shed_after, backlog + queue, "nothing shed after the flood");
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    let answered = stopped
        .cdrs
        .iter()
        .filter(|c| c["end_reason"] == "caller-bye")
        .count();
    assert_eq!(answered, 5, "the calls after the flood");
    assert!(
        stopped
            .cdrs
            .iter()
            .all(|c| c["end_reason"] == "caller-bye" || c["end_reason"] == "no-route"),
        "a flood INVITE let in found no route; a shed one left no CDR"
    );
}

/// The flood's `i`th INVITE: a new call each, to a number with no route.
fn flood_invite(net: Net, me: SocketAddr, i: usize) -> Vec<u8> {
    format!(
        "INVITE sip:999{i}@{vigil}:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP {me};branch=z9hG4bK-flood-{i};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@{caller}>;tag=f{i}\r\nTo: <sip:999{i}@{vigil}>\r\n\
Call-ID: flood-{i}@{caller}\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@{me}>\r\n\
Content-Length: 0\r\n\r\n",
        vigil = net.vigil,
        caller = net.caller,
    )
    .into_bytes()
}

/// One series of Vigil's `/metrics` (0 when absent).
fn metric(net: Net, port: u16, name: &str) -> u64 {
    series(&scrape(SocketAddr::new(net.vigil, port)), name)
}

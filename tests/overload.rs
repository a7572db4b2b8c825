//! Overload and flood control end to end: past `limits.max_calls` a new call
//! gets 503 with Retry-After while the calls up carry on, and a source over
//! `limits.per_source_rps` is cut off silently while a trunk's calls complete.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use support::{
    Net, Vigil, callee, caller, collect, options_request, scenario_expecting, status_of,
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

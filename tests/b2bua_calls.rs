//! End-to-end B2BUA calls through the real daemon with sipp on both sides:
//! bulk calls with one correct CDR each, the callee hanging up, the caller
//! cancelling, the callee busy, a stranger refused, IPv6, and a graceful shutdown
//! with calls up.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::{Net, Vigil, callee, caller, scenario, scenario_expecting};

/// Runs five calls between a callee and a caller scenario (both must succeed)
/// and returns the CDRs the daemon wrote.
fn five_calls(
    net: Net,
    vigil: Vigil,
    uas: &std::path::Path,
    uas_args: &[&str],
    uac: &std::path::Path,
) -> Vec<serde_json::Value> {
    let mut args = vec!["-m", "5"];
    args.extend_from_slice(uas_args);
    let callee = callee(net, Some(uas), &args);
    caller(
        net,
        net.caller,
        Some(uac),
        "0049301234",
        &["-m", "5", "-r", "10"],
    )
    .expect_success(Duration::from_secs(30));
    callee.expect_success(Duration::from_secs(10));
    let cdrs = vigil.stop().cdrs;
    assert_eq!(cdrs.len(), 5, "one CDR per call");
    cdrs
}

#[test]
fn two_hundred_calls_complete_with_one_cdr_each() {
    let net = Net::new(10);
    let vigil = Vigil::start(net, "");
    let uas = callee(net, None, &[]);
    caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "200", "-r", "100", "-l", "100", "-d", "300"],
    )
    .expect_success(Duration::from_secs(60));
    uas.stop();
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    let cdrs = stopped.cdrs;
    assert_eq!(cdrs.len(), 200, "one CDR per call");
    let call_ids: HashSet<&str> = cdrs.iter().filter_map(|c| c["call_id"].as_str()).collect();
    let b_call_ids: HashSet<&str> = cdrs
        .iter()
        .filter_map(|c| c["b_call_id"].as_str())
        .collect();
    let ids: HashSet<&str> = cdrs.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(
        (call_ids.len(), b_call_ids.len(), ids.len()),
        (200, 200, 200),
        "each CDR is a different call, with an id of its own"
    );
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
        assert_eq!(cdr["ended_by"], "caller", "{cdr}");
        assert_eq!(cdr["callee"], "0049301234", "{cdr}");
        assert_eq!(
            (cdr["trunk_in"].as_str(), cdr["trunk_out"].as_str()),
            (Some("pbx"), Some("carrier"))
        );
        assert!(cdr["sip_code"].is_null(), "{cdr}");
        assert!(cdr["answer"].is_string(), "{cdr}");
        let ms = cdr["duration_ms"].as_u64().expect("duration");
        assert!(
            (250..2_000).contains(&ms),
            "held ~300 ms, billed {ms} ms: {cdr}"
        );
        for field in ["start", "answer", "end"] {
            let t = cdr[field].as_str().expect("time");
            assert!(
                t.ends_with('Z') && t.len() == 24,
                "RFC 3339 UTC with millis: {t}"
            );
        }
    }
}

#[test]
fn the_callee_hangs_up_and_the_caller_gets_bye() {
    let net = Net::new(11);
    let vigil = Vigil::start(net, "");
    let cdrs = five_calls(
        net,
        vigil,
        &scenario("uas_hangup.xml"),
        &["-d", "300"],
        &scenario("uac_wait_bye.xml"),
    );
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "callee-bye", "{cdr}");
        assert_eq!(cdr["ended_by"], "callee", "{cdr}");
    }
}

#[test]
fn the_caller_cancels_before_answer() {
    let net = Net::new(12);
    let vigil = Vigil::start(net, "");
    let cdrs = five_calls(
        net,
        vigil,
        &scenario("uas_ring_cancel.xml"),
        &[],
        &scenario("uac_cancel.xml"),
    );
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "cancelled", "{cdr}");
        assert_eq!(cdr["sip_code"], 487, "{cdr}");
        assert!(cdr["answer"].is_null(), "{cdr}");
        assert_eq!(cdr["duration_ms"], 0, "{cdr}");
    }
}

#[test]
fn a_busy_callee_stays_486() {
    let net = Net::new(13);
    let vigil = Vigil::start(net, "");
    let expects_486 = scenario_expecting(vigil.dir.path(), "uac_rejected.xml", 486);
    let cdrs = five_calls(net, vigil, &scenario("uas_busy.xml"), &[], &expects_486);
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "rejected", "{cdr}");
        assert_eq!(cdr["ended_by"], "callee", "{cdr}");
        assert_eq!(cdr["sip_code"], 486, "{cdr}");
    }
}

#[test]
fn a_caller_no_trunk_admits_gets_403_and_leaves_no_trace() {
    let net = Net::new(14);
    let vigil = Vigil::start(net, "");
    let expects_403 = scenario_expecting(vigil.dir.path(), "uac_rejected.xml", 403);
    caller(
        net,
        net.stranger,
        Some(&expects_403),
        "0049301234",
        &["-m", "3", "-r", "10"],
    )
    .expect_success(Duration::from_secs(30));
    let stopped = vigil.stop();
    assert!(stopped.cdrs.is_empty(), "no state, no CDR for a stranger");
    assert!(
        stopped.log.contains("no trunk admits"),
        "the refusal is logged:\n{}",
        stopped.log
    );
}

#[test]
fn calls_work_over_ipv6() {
    let net = Net::new(15);
    let extra_listen = "";
    let dir = tempfile::tempdir().expect("dir");
    let config = net
        .config(&dir.path().join("cdr.jsonl"), extra_listen)
        .replace(
            &format!("listen: [\"udp:{}:5060\"]", net.vigil),
            &format!("listen: [\"udp:{}:5060\", \"udp:[::1]:5062\"]", net.vigil),
        )
        .replace(
            &format!("[\"{}/32\"]", net.caller),
            &format!("[\"{}/32\", \"::1/128\"]", net.caller),
        );
    let vigil = Vigil::start_with(net, dir, &config);
    let uas = callee(net, None, &[]);
    let uac = support::Sipp::spawn(
        "ipv6 caller",
        &[
            "-sn",
            "uac",
            "-i",
            "::1",
            "-p",
            "5063",
            "-s",
            "0049301234",
            "-m",
            "3",
            "-r",
            "10",
            "-timeout",
            "30s",
            "-timeout_error",
            "[::1]:5062",
        ]
        .map(String::from),
    );
    uac.expect_success(Duration::from_secs(30));
    uas.stop();
    let cdrs = vigil.stop().cdrs;
    assert_eq!(cdrs.len(), 3);
    assert!(cdrs.iter().all(|c| c["end_reason"] == "caller-bye"));
}

#[test]
fn shutdown_sends_bye_on_both_legs_and_writes_every_cdr() {
    let net = Net::new(16);
    let vigil = Vigil::start(net, "");
    let uas = callee(net, None, &["-m", "4"]);
    let uac = caller(
        net,
        net.caller,
        Some(&scenario("uac_wait_bye.xml")),
        "0049301234",
        &["-m", "4", "-r", "20"],
    );
    // Let the four calls connect; nobody hangs up on their own.
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = vigil.stop();
    assert!(
        stopped.status.success(),
        "exit 0 on SIGTERM: {}\n{}",
        stopped.status,
        stopped.log
    );
    assert!(
        stopped.took < Duration::from_secs(5),
        "stopped within 5 s: {:?}",
        stopped.took
    );
    uac.expect_success(Duration::from_secs(10));
    uas.expect_success(Duration::from_secs(10));
    assert_eq!(stopped.cdrs.len(), 4, "{}", stopped.log);
    for cdr in &stopped.cdrs {
        assert_eq!(cdr["end_reason"], "shutdown", "{cdr}");
        assert_eq!(cdr["ended_by"], "switch", "{cdr}");
        assert!(cdr["answer"].is_string(), "{cdr}");
    }
}

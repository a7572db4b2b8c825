//! `vigil ctl` against a running daemon carrying a sipp call: the call is
//! listed with each leg's session timer, `hangup` ends it with BYE on both legs
//! and a CDR that says an operator did it, and `status` tells the config's
//! version.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Net, Vigil, callee, caller, scenario};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn ctl_lists_a_live_call_with_its_timers_and_hangs_it_up() {
    let net = Net::new(63);
    let vigil = Vigil::start(net, "");
    let uas = callee(net, None, &["-m", "1"]);
    let uac = caller(
        net,
        net.caller,
        Some(&scenario("uac_wait_bye.xml")),
        "0049301234",
        &["-m", "1"],
    );
    // Wait for the call to be answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    let call = loop {
        let (ok, stdout, stderr) = vigil.ctl(&["calls"]);
        assert!(ok, "{stderr}");
        let calls = json(&stdout);
        if let Some(call) = calls
            .as_array()
            .and_then(|c| c.first())
            .filter(|c| !c["answered_for"].is_null())
        {
            break call.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no answered call listed: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(call["callee"], "0049301234", "{call}");
    assert_eq!(call["trunk_in"], "pbx", "{call}");
    assert_eq!(call["trunk_out"], "carrier", "{call}");
    for leg in ["a_leg", "b_leg"] {
        // Neither sipp does timers: Vigil refreshes both, every 300 s of 600.
        let timer = &call[leg];
        assert_eq!(timer["session_expires"], 600, "{call}");
        assert_eq!(timer["refresher"], "vigil", "{call}");
        assert_eq!(timer["refreshes"], 0, "{call}");
        let next = timer["next_refresh_in"].as_f64().expect("next refresh");
        assert!(next > 290.0 && next <= 300.0, "{call}");
    }
    let call_id = call["call_id"].as_str().expect("call_id").to_string();
    let (ok, stdout, _) = vigil.ctl(&["call", &call_id]);
    assert!(ok);
    assert_eq!(json(&stdout)["call_id"], call_id.as_str());

    let (ok, stdout, stderr) = vigil.ctl(&["hangup", &call_id]);
    assert!(ok, "{stderr}");
    assert_eq!(json(&stdout)["call_id"], call_id.as_str());
    // Both sipps got their BYE and answered it.
    uac.expect_success(Duration::from_secs(10));
    uas.expect_success(Duration::from_secs(10));

    let (ok, _, stderr) = vigil.ctl(&["hangup", &call_id]);
    assert!(!ok && stderr.contains("no call with Call-ID"), "{stderr}");
    let (ok, stdout, _) = vigil.ctl(&["status"]);
    assert!(ok);
    let status = json(&stdout);
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["calls"], 0, "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    let (ok, _, stderr) = vigil.ctl(&["registrations"]);
    assert!(!ok && stderr.contains("no registrar"), "{stderr}");
    let (ok, _, stderr) = vigil.ctl(&["dance"]);
    assert!(!ok && stderr.contains("unknown command"), "{stderr}");

    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    let cdr = &stopped.cdrs[0];
    assert_eq!(cdr["end_reason"], "admin", "{cdr}");
    assert_eq!(cdr["ended_by"], "switch", "{cdr}");
    assert_eq!(cdr["call_id"], call_id.as_str(), "{cdr}");
}

#[test]
fn ctl_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("vigil.yaml");
    std::fs::write(&config, "listen: []\n").expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["ctl", "--config"])
        .arg(&config)
        .arg("calls")
        .output()
        .expect("run vigil ctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("vigil.sock"), "names the socket: {stderr}");
}

#[test]
fn trace_switched_on_and_off_at_run_time_logs_the_trunks_messages() {
    let net = Net::new(64);
    let vigil = Vigil::start(net, "trace: { file: \"{dir}/sip-trace.log\" }");
    let trace_file = vigil.dir.path().join("sip-trace.log");
    let call = || {
        let uas = callee(net, None, &["-m", "1"]);
        caller(net, net.caller, None, "0049301234", &["-m", "1"])
            .expect_success(Duration::from_secs(20));
        uas.expect_success(Duration::from_secs(10));
    };
    let (ok, stdout, stderr) = vigil.ctl(&["trace", "on", "carrier"]);
    assert!(ok, "{stderr}");
    assert_eq!(json(&stdout), serde_json::json!(["carrier"]));
    call();
    let traced = std::fs::read_to_string(&trace_file).expect("trace file");
    let carrier = format!("{}:5080", net.callee);
    assert!(
        traced.contains(&format!("-> {carrier} [carrier]"))
            && traced.contains("INVITE sip:0049301234"),
        "the INVITE to the carrier is traced:\n{traced}"
    );
    assert!(
        traced.contains(&format!("received {carrier} ->")) && traced.contains("SIP/2.0 200 OK"),
        "the carrier's answer is traced:\n{traced}"
    );
    assert!(
        !traced.contains(&format!("{}:5061", net.caller)),
        "the pbx trunk is not traced:\n{traced}"
    );

    let (ok, stdout, _) = vigil.ctl(&["trace", "off", "carrier"]);
    assert!(ok);
    assert_eq!(json(&stdout), serde_json::json!([]));
    let before = traced.len();
    call();
    let after = std::fs::read_to_string(&trace_file).expect("trace file");
    assert_eq!(after.len(), before, "nothing traced once switched off");
    let (ok, _, stderr) = vigil.ctl(&["trace", "on", "nowhere"]);
    assert!(!ok && stderr.contains("no trunk named"), "{stderr}");
    vigil.stop();
}

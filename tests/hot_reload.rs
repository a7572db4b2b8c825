//! Hot reload end to end, with the daemon carrying sipp calls: a changed
//! session timer applies to the next call and not to the one in progress, a
//! broken file is refused while the switch keeps serving, a Lua script edited
//! on disk changes behaviour within a second, a plugin replaced on disk answers
//! the next hook, and twenty reloads under two hundred calls lose nothing.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Net, Vigil, callee, caller, plugin_library, scenario, scenario_expecting};

const SHORT_TIMERS: &str =
    "session_timer: { ttl: 4, min_se: 2, update_segment: 2, allow_short_intervals: true }";

/// `vigil reload --config FILE`: (exit ok, stdout, stderr).
fn vigil_reload(config: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["reload", "--config"])
        .arg(config)
        .output()
        .expect("run vigil reload");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rewrites the running daemon's config as an editor would: a temporary file
/// renamed over it.
fn rewrite(path: &Path, text: &str) {
    let temp = path.with_extension("yaml.tmp");
    std::fs::write(&temp, text).expect("write config");
    std::fs::rename(&temp, path).expect("rename config");
}

fn edit_config(vigil: &Vigil, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(vigil.config_path()).expect("config");
    assert!(text.contains(from), "{from} is not in the config:\n{text}");
    text.replacen(from, to, 1)
}

/// Waits until the daemon's log has `count` lines containing `needle`.
fn wait_for_log(vigil: &Vigil, needle: &str, count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while vigil.log().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {count}× {needle:?} in the log within {limit:?}:\n{}",
            vigil.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Session-Expires of each INVITE (not re-INVITE: Vigil refreshes with
/// UPDATE here) the callee received, in order.
fn offered_session_expires(messages: &str) -> Vec<String> {
    messages
        .split("INVITE sip:")
        .skip(1)
        .filter_map(|request| {
            let head = request.split("\n\n").next().unwrap_or_default();
            head.lines()
                .find_map(|l| l.trim().strip_prefix("Session-Expires:"))
                .map(|v| v.trim().to_string())
        })
        .collect()
}

#[test]
fn a_new_ttl_applies_to_the_next_call_and_the_call_in_progress_keeps_its_own() {
    let net = Net::new(56);
    let vigil = Vigil::start(net, SHORT_TIMERS);
    let uas = callee(
        net,
        Some(&scenario("uas_refresh.xml")),
        &["-set", "se", "4", "-m", "2", "-trace_msg"],
    );
    // Ten seconds of call, refreshed by the caller on its leg and by Vigil on
    // the callee's every 2 s.
    let first = caller(
        net,
        net.caller,
        Some(&scenario("uac_refresher.xml")),
        "0049301234",
        &["-set", "se", "4", "-d", "2000", "-m", "1"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    rewrite(
        &vigil.config_path(),
        &edit_config(&vigil, "ttl: 4,", "ttl: 6,"),
    );
    let (ok, stdout, stderr) = vigil_reload(&vigil.config_path());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("reloaded"), "{stdout}");
    caller(
        net,
        net.caller,
        Some(&scenario("uac_refresher.xml")),
        "0049301234",
        &["-set", "se", "6", "-d", "1000", "-m", "1", "-p", "5062"],
    )
    .expect_success(Duration::from_secs(30));
    first.expect_success(Duration::from_secs(30));
    let messages = uas.expect_success(Duration::from_secs(10)).messages;
    assert_eq!(
        offered_session_expires(&messages),
        vec!["4".to_string(), "6".to_string()],
        "the first call was offered the old ttl, the second the new one"
    );
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 2, "{}", stopped.log);
    for cdr in &stopped.cdrs {
        // The first call's timers were not cut short by the reload.
        assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    }
}

#[test]
fn a_broken_file_is_refused_with_line_and_key_and_the_switch_keeps_serving() {
    let net = Net::new(57);
    let vigil = Vigil::start(net, "");
    let good = std::fs::read_to_string(vigil.config_path()).expect("config");
    rewrite(
        &vigil.config_path(),
        &good.replacen("route_to: carrier", "route_to: nowhere", 1),
    );
    let (ok, stdout, stderr) = vigil_reload(&vigil.config_path());
    assert!(!ok, "a broken file must be refused: {stdout}");
    assert!(
        stderr.contains("vigil.yaml:5: trunks[0].route_to: no trunk named \"nowhere\""),
        "{stderr}"
    );
    wait_for_log(&vigil, "config reload refused", 1, Duration::from_secs(5));

    // Still the old config: the call is routed to the carrier.
    let uas = callee(net, None, &["-m", "1"]);
    caller(net, net.caller, None, "0049301234", &["-m", "1"])
        .expect_success(Duration::from_secs(20));
    uas.expect_success(Duration::from_secs(10));

    // Fixed, with a change that shows: a route for 0049 numbers.
    rewrite(
        &vigil.config_path(),
        &format!("{good}routes: [{{ prefix: \"0049\", trunk: carrier }}]\n"),
    );
    let (ok, stdout, stderr) = vigil_reload(&vigil.config_path());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("1 routes"), "{stdout}");

    // SIGHUP reloads the same way (after the watcher's own reloads settled).
    std::thread::sleep(Duration::from_millis(600));
    let before = vigil.log().matches("config reloaded").count();
    let status = Command::new("kill")
        .args(["-HUP", &vigil.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_for_log(&vigil, "SIGHUP", 1, Duration::from_secs(5));
    wait_for_log(
        &vigil,
        "config reloaded",
        before + 1,
        Duration::from_secs(5),
    );
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
}

#[test]
fn a_lua_script_edited_on_disk_changes_behaviour_within_a_second() {
    let net = Net::new(58);
    let scripts = tempfile::tempdir().expect("dir");
    let script = scripts.path().join("screen.lua");
    let version = |code: u16, reason: &str| {
        format!(
            "function call_start(call)\n  return {{ reject = {code}, reason = \"{reason}\" }}\nend\n"
        )
    };
    std::fs::write(&script, version(486, "Script One")).expect("script");
    let vigil = Vigil::start(net, &format!("policy: {{ lua: \"{}\" }}", script.display()));
    caller(
        net,
        net.caller,
        Some(&scenario_expecting(scripts.path(), "uac_rejected.xml", 486)),
        "0049301234",
        &["-m", "1"],
    )
    .expect_success(Duration::from_secs(20));

    // An editor's save: a temporary file renamed over the script.
    let temp = scripts.path().join(".screen.lua.swp");
    std::fs::write(&temp, version(603, "Script Two")).expect("script");
    std::fs::rename(&temp, &script).expect("rename");
    std::thread::sleep(Duration::from_secs(1));
    caller(
        net,
        net.caller,
        Some(&scenario_expecting(scripts.path(), "uac_rejected.xml", 603)),
        "0049301234",
        &["-m", "1"],
    )
    .expect_success(Duration::from_secs(20));
    let stopped = vigil.stop();
    let codes: Vec<&serde_json::Value> = stopped.cdrs.iter().map(|c| &c["sip_code"]).collect();
    assert_eq!(codes, [486, 603], "{}", stopped.log);
}

#[test]
fn a_plugin_replaced_on_disk_answers_the_next_hook() {
    let net = Net::new(59);
    let example = plugin_library("vigil-plugin-example");
    let tagger = plugin_library("vigil-plugin-fixture-tagger");
    let libs = tempfile::tempdir().expect("dir");
    let installed = libs.path().join("libvendor.so");
    std::fs::copy(&example, &installed).expect("install plugin");
    let vigil = Vigil::start(
        net,
        &format!("policy: {{ plugin: \"{}\" }}", installed.display()),
    );
    let call = || {
        let uas = callee(net, None, &["-m", "1"]);
        caller(net, net.caller, None, "0049301234", &["-m", "1"])
            .expect_success(Duration::from_secs(20));
        uas.expect_success(Duration::from_secs(10));
    };
    call();
    // Overwritten in place, as `cp` does: the running copy must not notice.
    std::fs::copy(&tagger, &installed).expect("replace plugin");
    let (ok, stdout, stderr) = vigil_reload(&vigil.config_path());
    assert!(ok, "{stdout}{stderr}");
    call();
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    let tags: Vec<&serde_json::Value> =
        stopped.cdrs.iter().map(|c| &c["extra"]["plugin"]).collect();
    assert_eq!(tags, ["vigil-plugin-example", "tagger"], "{}", stopped.log);
}

#[test]
fn twenty_reloads_under_two_hundred_calls_drop_nothing() {
    let net = Net::new(60);
    let vigil = Vigil::start(net, "");
    let uas = callee(net, None, &["-m", "200"]);
    // 200 calls opened at 100/s, each held 6 s: all up together for seconds.
    let uac = caller(
        net,
        net.caller,
        None,
        "0049301234",
        &["-m", "200", "-r", "100", "-l", "200", "-d", "6000"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let config = std::fs::read_to_string(vigil.config_path()).expect("config");
    for i in 0..20 {
        // Each reload changes something (the ring time), so each is a real swap.
        rewrite(
            &vigil.config_path(),
            &format!("{config}sip: {{ max_ring_time: {} }}\n", 100 + i),
        );
        let (ok, stdout, stderr) = vigil_reload(&vigil.config_path());
        assert!(ok, "reload {i}: {stdout}{stderr}");
        std::thread::sleep(Duration::from_millis(150));
    }
    uac.expect_success(Duration::from_secs(40));
    uas.expect_success(Duration::from_secs(10));
    let stopped = vigil.stop();
    assert_eq!(stopped.cdrs.len(), 200, "{}", stopped.log);
    let mut ids: Vec<&str> = stopped
        .cdrs
        .iter()
        .map(|c| c["call_id"].as_str().expect("call_id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "a call has two CDRs");
    assert!(
        stopped.cdrs.iter().all(|c| c["end_reason"] == "caller-bye"),
        "{}",
        stopped.log
    );
    // The watcher may add reloads of its own to the twenty asked for.
    assert!(stopped.log.matches("config reloaded").count() >= 20);
}

#[test]
fn a_new_listen_address_is_bound_and_a_removed_one_closes_after_its_grace() {
    let net = Net::new(61);
    let vigil = Vigil::start(net, "");
    let old = format!("\"udp:{}:5060\"", net.vigil);
    let extra = std::net::SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 61, 9)),
        5060,
    );
    let options_answered = |to: std::net::SocketAddr| {
        support::exchange(
            std::net::SocketAddr::new(net.caller, 0),
            to,
            &support::options_request(net.caller, "listen-check"),
            Duration::from_millis(500),
        )
        .iter()
        .any(|r| r.starts_with("SIP/2.0 200"))
    };
    assert!(!options_answered(extra), "nothing listens there yet");

    rewrite(
        &vigil.config_path(),
        &edit_config(&vigil, &old, &format!("{old}, \"udp:{extra}\"")),
    );
    let (ok, stdout, stderr) = vigil_reload(&vigil.config_path());
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("listening on [\"{extra}\"]")),
        "{stdout}"
    );
    assert!(options_answered(extra), "the new address answers");

    rewrite(
        &vigil.config_path(),
        &edit_config(&vigil, &format!("{old}, "), ""),
    );
    let (ok, stdout, stderr) = vigil_reload(&vigil.config_path());
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("closing [{}] in 32 s", net.vigil_addr())),
        "{stdout}"
    );
    // In-flight transactions may still need it: it answers until the grace ends.
    assert!(options_answered(net.vigil_addr()));
    assert!(options_answered(extra));
    vigil.stop();
}

#[test]
fn a_reload_reopens_the_cdr_file_so_rotation_loses_nothing() {
    let net = Net::new(65);
    let vigil = Vigil::start(net, "");
    let call = || {
        let uas = callee(net, None, &["-m", "1"]);
        caller(net, net.caller, None, "0049301234", &["-m", "1"])
            .expect_success(Duration::from_secs(20));
        uas.expect_success(Duration::from_secs(10));
    };
    call();
    // logrotate without copytruncate: move the file, then reload.
    let rotated = vigil.dir.path().join("cdr.jsonl.1");
    std::fs::rename(vigil.cdr_path(), &rotated).expect("rotate");
    let (ok, stdout, stderr) = vigil_reload(&vigil.config_path());
    assert!(ok, "{stdout}{stderr}");
    call();
    // Read before stopping: the daemon's directory goes with it.
    let old = support::read_cdrs(&rotated);
    let stopped = vigil.stop();
    assert_eq!(
        stopped.cdrs.len(),
        1,
        "the second call in the new file: {}",
        stopped.log
    );
    assert_eq!(old.len(), 1, "the first call stays in the rotated file");
    assert_ne!(old[0]["call_id"], stopped.cdrs[0]["call_id"]);
}

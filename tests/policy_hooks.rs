//! Policy hooks end to end: Lua scripts and vendor plugins attached to trunks
//! change what the running daemon does with real sipp peers — how it
//! refreshes, whether it retries a failed refresh, which calls it refuses and
//! what the CDR says — and broken scripts or plugins leave calls to the
//! built-in policy. Session timers use `allow_short_intervals` so a refresh
//! cycle takes seconds.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{
    Net, Vigil, callee, caller, example_script, plugin_library, scenario, scenario_expecting,
};

/// ttl 4 s refreshed every 2 s: lab values, allowed only by the explicit switch.
/// Sessions of 8 s that Vigil refreshes every 2 s, and that callers refresh
/// every [`PAUSE_MS`]: a refresh may come seconds late, as on a loaded machine
/// it does, and still keep its session (with 4 s sessions and 2 s of slack a
/// call failed there, issue 23).
const SHORT_TIMERS: &str =
    "session_timer: { ttl: 8, min_se: 2, update_segment: 4, allow_short_intervals: true }";
/// The session interval callers ask for, and their pause between refreshes:
/// five of them make a call of 10 s.
const SESSION: &str = "8";
const PAUSE_MS: &str = "2000";

const SE: &str = "se";

/// Starts Vigil on the standard config plus `extra`, with `policies` — (trunk
/// name, the trunk's `policy:` value in YAML flow style) — added to trunks.
fn start_with_policies(net: Net, extra: &str, policies: &[(&str, String)]) -> Vigil {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = net.config(&dir.path().join("cdr.jsonl"), extra);
    for (trunk, policy) in policies {
        let entry = format!("  - name: {trunk}\n");
        let at = config
            .find(&entry)
            .unwrap_or_else(|| panic!("no trunk {trunk} in the standard config"));
        config.insert_str(at + entry.len(), &format!("    policy: {policy}\n"));
    }
    Vigil::start_with(net, dir, &config)
}

fn lua(path: &Path) -> String {
    format!("{{ lua: \"{}\" }}", path.display())
}

fn plugin(path: &Path) -> String {
    format!("{{ plugin: \"{}\" }}", path.display())
}

/// Writes a script into the daemon's test directory's sibling (a temp dir that
/// outlives the daemon) and returns its path.
fn write_script(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write script");
    path
}

/// Runs one refreshed call: the caller refreshes its own leg every `pause_ms`
/// five times, then hangs up; the callee (`uas`) leaves refreshing to Vigil
/// and its messages are traced. Returns what the callee saw.
fn refreshed_call(net: Net, uas: &str, se: &str, pause_ms: &str, number: &str) -> String {
    let callee = callee(
        net,
        Some(&scenario(uas)),
        &["-set", SE, se, "-m", "1", "-trace_msg"],
    );
    caller(
        net,
        net.caller,
        Some(&scenario("uac_refresher.xml")),
        number,
        &["-set", SE, se, "-d", pause_ms, "-m", "1"],
    )
    .expect_success(Duration::from_secs(40));
    callee.expect_success(Duration::from_secs(10)).messages
}

fn only_cdr(vigil: Vigil) -> (serde_json::Value, String) {
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    (stopped.cdrs[0].clone(), stopped.log)
}

/// Counts the refreshes Vigil sent the callee, by method (the initial INVITE
/// is not one).
fn refreshes(messages: &str) -> (usize, usize) {
    let invites = messages.matches("INVITE sip:").count();
    let updates = messages.matches("UPDATE sip:").count();
    (invites.saturating_sub(1), updates)
}

#[test]
fn a_refresh_due_script_makes_vigil_refresh_with_reinvite_where_it_would_update() {
    let net = Net::new(47);
    let vigil = start_with_policies(
        net,
        SHORT_TIMERS,
        &[("carrier", lua(&example_script("reinvite_only.lua")))],
    );
    let messages = refreshed_call(net, "uas_refresh.xml", SESSION, PAUSE_MS, "0049301234");
    let (reinvites, updates) = refreshes(&messages);
    assert!(
        reinvites >= 3 && updates == 0,
        "the callee got {reinvites} re-INVITEs and {updates} UPDATEs in 10 s; \
         without the script it gets UPDATEs"
    );
    let (cdr, _) = only_cdr(vigil);
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
}

#[test]
fn a_refresh_failed_script_retries_a_refresh_answered_408_and_the_call_lives_on() {
    let net = Net::new(48);
    // Session-Expires 12 s, refreshed at 6 s: the 408 comes at 6 s, the
    // script's retry 2 s later is 4 s before the session expires at 12 s.
    let vigil = start_with_policies(
        net,
        "session_timer: { ttl: 12, min_se: 2, update_segment: 2, allow_short_intervals: true }",
        &[("carrier", lua(&example_script("retry_408.lua")))],
    );
    let messages = refreshed_call(net, "uas_refresh_fail_once.xml", "12", "3000", "0049301234");
    let (_, updates) = refreshes(&messages);
    assert!(
        updates >= 2,
        "the callee got {updates} UPDATEs: the refresh answered 408 was not retried"
    );
    assert!(
        messages.contains("SIP/2.0 408"),
        "the callee never answered 408"
    );
    let (cdr, log) = only_cdr(vigil);
    // Without the script the 408 would have ended the call at 6 s.
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}\n{log}");
    assert!(cdr["refresh_failure"].is_null(), "{cdr}");
    assert!(log.contains("retrying in 2 s"), "the script logs: {log}");
}

#[test]
fn a_call_start_script_rejects_a_call_with_the_code_and_reason_it_chose() {
    let net = Net::new(49);
    let scripts = tempfile::tempdir().expect("dir");
    let script = write_script(
        scripts.path(),
        "premium.lua",
        r#"
        function call_start(call)
          if call.callee:sub(1, 4) == "0900" then
            return { reject = 603, reason = "Premium Blocked" }
          end
        end
        "#,
    );
    let vigil = start_with_policies(net, SHORT_TIMERS, &[("pbx", lua(&script))]);
    let uas = callee(net, None, &["-trace_msg"]);
    let result = caller(
        net,
        net.caller,
        Some(&scenario_expecting(scripts.path(), "uac_rejected.xml", 603)),
        "09001234",
        &["-m", "1", "-trace_msg"],
    )
    .expect_success(Duration::from_secs(20));
    assert!(
        result.messages.contains("SIP/2.0 603 Premium Blocked"),
        "{}",
        result.messages
    );
    assert!(
        !uas.stop().messages.contains("INVITE sip:"),
        "a refused call must not reach the carrier"
    );
    let (cdr, _) = only_cdr(vigil);
    assert_eq!(cdr["end_reason"], "policy-rejected", "{cdr}");
    assert_eq!(cdr["sip_code"], 603, "{cdr}");
}

#[test]
fn a_hangup_script_adds_fields_to_the_cdr_from_the_global_default_policy() {
    let net = Net::new(50);
    let vigil = start_with_policies(
        net,
        &format!(
            "{SHORT_TIMERS}\npolicy: {}",
            lua(&example_script("cdr_tags.lua"))
        ),
        &[],
    );
    // Five refreshes 1 s apart: a call of 5 s, longer on a slow machine.
    refreshed_call(net, "uas_refresh.xml", SESSION, "1000", "0049301234");
    let (cdr, _) = only_cdr(vigil);
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    let extra = &cdr["extra"];
    assert_eq!(extra["route_class"], "international", "{cdr}");
    assert_eq!(extra["answered"], "true", "{cdr}");
    let billsec: u64 = extra["billsec"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("billsec: {cdr}"));
    assert!((4..=10).contains(&billsec), "{cdr}");
}

#[test]
fn broken_scripts_are_cut_off_and_logged_and_calls_follow_the_default() {
    let net = Net::new(51);
    let scripts = tempfile::tempdir().expect("dir");
    let script = write_script(
        scripts.path(),
        "faulty.lua",
        "local hog = {}\n\
         function call_start(call)\n\
           while true do hog[#hog + 1] = string.rep('x', 65536) end\n\
         end\n\
         function refresh_due(leg)\n\
           local missing = nil\n\
           return missing.decision\n\
         end\n\
         function hangup(call)\n\
           while true do end\n\
         end\n",
    );
    let vigil = start_with_policies(
        net,
        &format!("{SHORT_TIMERS}\npolicy: {{ lua_memory_limit_mb: 4 }}"),
        &[("carrier", lua(&script))],
    );
    let messages = refreshed_call(net, "uas_refresh.xml", SESSION, PAUSE_MS, "0049301234");
    let (_, updates) = refreshes(&messages);
    assert!(
        updates >= 3,
        "the default refresh (UPDATE) went on: {updates}"
    );
    let (cdr, log) = only_cdr(vigil);
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    assert!(
        cdr.get("extra")
            .is_none_or(|e| e.as_object().is_none_or(|o| o.is_empty())),
        "{cdr}"
    );
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("policy hook failed"))
        .collect();
    let logged = |hook: &str, what: &str| {
        failures
            .iter()
            .any(|l| l.contains(&format!("\"hook\":\"{hook}\"")) && l.contains(what))
    };
    assert!(logged("call_start", "memory limit"), "{log}");
    assert!(logged("refresh_due", "faulty.lua:7:"), "{log}");
    assert!(
        logged("hangup", "faulty.lua:10: instruction budget"),
        "{log}"
    );
}

#[test]
fn the_example_plugin_refreshes_with_reinvite_and_tags_the_cdr() {
    let net = Net::new(52);
    let library = plugin_library("vigil-plugin-example");
    let vigil = start_with_policies(net, SHORT_TIMERS, &[("carrier", plugin(&library))]);
    let messages = refreshed_call(net, "uas_refresh.xml", SESSION, PAUSE_MS, "0049301234");
    let (reinvites, updates) = refreshes(&messages);
    assert!(
        reinvites >= 3 && updates == 0,
        "{reinvites} re-INVITEs, {updates} UPDATEs"
    );
    let (cdr, _) = only_cdr(vigil);
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    assert_eq!(cdr["extra"]["plugin"], "vigil-plugin-example", "{cdr}");
}

#[test]
fn plugins_that_panic_have_another_abi_or_are_missing_leave_calls_to_the_default() {
    let net = Net::new(53);
    let panicking = plugin_library("vigil-plugin-fixture-panicking");
    let old_abi = plugin_library("vigil-plugin-fixture-old-abi");
    let vigil = start_with_policies(
        net,
        &format!("{SHORT_TIMERS}\npolicy: {{ plugin: \"/nonexistent/libvendor.so\" }}"),
        &[("carrier", plugin(&panicking)), ("pbx", plugin(&old_abi))],
    );
    let messages = refreshed_call(net, "uas_refresh.xml", SESSION, PAUSE_MS, "0049301234");
    let (_, updates) = refreshes(&messages);
    assert!(
        updates >= 3,
        "the default refresh (UPDATE) went on: {updates}"
    );
    let (cdr, log) = only_cdr(vigil);
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    let not_loaded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("policy not loaded"))
        .collect();
    assert!(
        not_loaded
            .iter()
            .any(|l| l.contains("libvigil_plugin_fixture_old_abi")
                && l.contains("plugin ABI version 2, this Vigil speaks 3")),
        "{log}"
    );
    assert!(
        not_loaded
            .iter()
            .any(|l| l.contains("/nonexistent/libvendor.so") && l.contains("cannot open plugin")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("policy hook failed") && l.contains("plugin panicked")),
        "{log}"
    );
}

#[test]
fn vigil_check_refuses_scripts_that_do_not_compile_and_plugins_that_do_not_load() {
    let net = Net::new(54);
    let dir = tempfile::tempdir().expect("dir");
    let script = write_script(
        dir.path(),
        "typo.lua",
        "function refresh_due(leg)\n  return \"update\"\nen\n",
    );
    let old_abi = plugin_library("vigil-plugin-fixture-old-abi");
    let mut config = net.config(&dir.path().join("cdr.jsonl"), "");
    config = config.replace(
        "  - name: carrier\n",
        &format!("  - name: carrier\n    policy: {}\n", lua(&script)),
    );
    config = config.replace(
        "  - name: pbx\n",
        &format!("  - name: pbx\n    policy: {}\n", plugin(&old_abi)),
    );
    let path = dir.path().join("vigil.yaml");
    std::fs::write(&path, &config).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run vigil check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("trunks[1].policy.lua") && stderr.contains("typo.lua:3:"),
        "the syntax error is named with file:line: {stderr}"
    );
    assert!(
        stderr.contains("trunks[0].policy.plugin")
            && stderr.contains("plugin ABI version 2, this Vigil speaks 3"),
        "the ABI mismatch names both versions: {stderr}"
    );
}

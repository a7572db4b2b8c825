//! Calls that outlive the process (issue 21): Vigil keeps established calls
//! in its state store (`state: { path: calls.db }`), is killed with SIGKILL
//! in the middle of 200 calls between sipp peers, and started again on the
//! same address within 2 s: every call goes on refreshing on both legs, ends
//! by the caller's BYE, and has exactly one CDR with its original start and
//! answer. A call whose session expired while Vigil was down ends as
//! `session-timeout` at its expiry, not at the restart.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use support::{Net, Vigil, callee, caller, scenario};

const SE: [&str; 2] = ["-set", "se"];

/// Lab timers: Session-Expires 10 s, Vigil refreshes every 5 s; and the store.
fn config(ttl: u32) -> String {
    format!(
        "session_timer: {{ ttl: {ttl}, min_se: 2, update_segment: 2, allow_short_intervals: true }}\n\
         state: {{ path: \"{{dir}}/calls.db\" }}\n"
    )
}

/// A CDR time (RFC 3339) as a wall-clock time.
fn wall(cdr: &serde_json::Value, field: &str) -> SystemTime {
    let text = cdr[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field}: {cdr}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{field} {text}: {e}"))
}

/// Waits (at most 3 s) for the running daemon's state store to be empty:
/// every call billed and forgotten, as its file and `vigil ctl status` say.
fn assert_store_empties(vigil: &Vigil) {
    let db = rusqlite::Connection::open(vigil.dir.path().join("calls.db")).expect("open calls.db");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let rows: i64 = db
            .query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))
            .expect("count");
        let (_, status, _) = vigil.ctl(&["status"]);
        let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
        if rows == 0 && status["state"]["calls"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{rows} rows left in the store: {}",
            status["state"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_hundred_calls_survive_a_kill_and_a_restart_within_two_seconds() {
    const CALLS: usize = 200;
    let net = Net::new(240);
    let vigil = Vigil::start(net, &config(10));
    // The callee leaves refreshing to Vigil (every 5 s on the B leg); the
    // caller refreshes the A leg itself every 2.5 s, five times, then hangs
    // up: a call lasts 12.5 s.
    let uas = callee(
        net,
        Some(&scenario("uas_refresh.xml")),
        &[SE[0], SE[1], "10", "-m", &CALLS.to_string(), "-trace_msg"],
    );
    let uac = caller(
        net,
        net.caller,
        Some(&scenario("uac_refresher.xml")),
        "0049301234",
        &[
            SE[0],
            SE[1],
            "10",
            "-d",
            "2500",
            "-m",
            &CALLS.to_string(),
            "-r",
            "100",
            "-l",
            &CALLS.to_string(),
        ],
    );
    // Every call is up (2 s of ramp) and has been refreshed on both legs.
    std::thread::sleep(Duration::from_secs(6));
    let (ok, status, _) = vigil.ctl(&["status"]);
    assert!(ok, "{status}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    assert_eq!(
        status["state"]["calls"], CALLS,
        "every call saved: {status}"
    );
    assert_eq!(status["state"]["backend"], "file", "{status}");
    let killed_at = SystemTime::now();
    let killed = Instant::now();
    let dir = vigil.kill_hard();
    std::thread::sleep(Duration::from_millis(800));
    let vigil = Vigil::restart(net, dir);
    let back_after = killed.elapsed();
    assert!(
        back_after < Duration::from_secs(2),
        "answering again {back_after:?} after the kill"
    );
    let uac = uac.wait(Duration::from_secs(60));
    assert!(
        uac.status.success(),
        "a caller saw a failed refresh or BYE:\n{}\n{}\n{}",
        support::tail(&uac.output, 40),
        support::tail(&uac.errors, 40),
        support::tail(&vigil.log(), 40)
    );
    let uas = uas.expect_success(Duration::from_secs(20));
    if let Some(first) = support::first_request_after(&uas.messages, "UPDATE", killed_at) {
        println!("kill -9 to the first refresh the new process sent: {first:?}");
    }
    // Vigil refreshed every callee before and after the restart: at 5 and
    // 10 s of a 12.5 s call.
    let refreshes = uas.messages.matches("UPDATE sip:").count();
    assert!(
        refreshes >= 2 * CALLS,
        "{refreshes} refreshes reached the callees, want >= {}",
        2 * CALLS
    );
    assert_store_empties(&vigil);
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert!(
        stopped.log.contains("calls resumed from the state store"),
        "{}",
        stopped.log
    );
    let cdrs = stopped.cdrs;
    assert_eq!(cdrs.len(), CALLS, "one CDR per call:\n{}", stopped.log);
    let ids: HashSet<&str> = cdrs.iter().filter_map(|c| c["id"].as_str()).collect();
    let call_ids: HashSet<&str> = cdrs.iter().filter_map(|c| c["call_id"].as_str()).collect();
    assert_eq!(
        (ids.len(), call_ids.len()),
        (CALLS, CALLS),
        "no call billed twice"
    );
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
        assert!(
            wall(cdr, "start") < killed_at && wall(cdr, "answer") < killed_at,
            "start and answer are the first process's: {cdr}"
        );
        assert!(wall(cdr, "end") > killed_at, "{cdr}");
        let ms = cdr["duration_ms"].as_u64().expect("duration");
        assert!(
            (11_500..=15_000).contains(&ms),
            "billed {ms} ms for a 12.5 s call: {cdr}"
        );
    }
}

#[test]
fn a_call_whose_session_expired_while_vigil_was_down_ends_at_its_expiry() {
    let net = Net::new(241);
    let vigil = Vigil::start(net, &config(4));
    // Vigil refreshes both legs every 2 s; the session expires 4 s after
    // the last refresh.
    let uas = callee(
        net,
        Some(&scenario("uas_refresh.xml")),
        &[SE[0], SE[1], "4", "-m", "1"],
    );
    let uac = caller(
        net,
        net.caller,
        Some(&scenario("uac_refreshed_wait_bye.xml")),
        "0049301234",
        &[SE[0], SE[1], "4", "-m", "1"],
    );
    std::thread::sleep(Duration::from_millis(1000));
    let dir = vigil.kill_hard();
    // Down for 6 s: the session ran out 3 s or so after the kill.
    std::thread::sleep(Duration::from_secs(6));
    let restarted_at = SystemTime::now();
    let vigil = Vigil::restart(net, dir);
    uac.expect_success(Duration::from_secs(10));
    uas.expect_success(Duration::from_secs(10));
    assert_store_empties(&vigil);
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    let cdr = &stopped.cdrs[0];
    assert_eq!(cdr["end_reason"], "session-timeout", "{cdr}");
    assert_eq!(cdr["ended_by"], "switch", "{cdr}");
    let ms = cdr["duration_ms"].as_u64().expect("duration");
    assert!(
        (3_500..=4_500).contains(&ms),
        "billed until the expiry, 4 s after the answer: {ms} ms: {cdr}"
    );
    assert!(
        wall(cdr, "end") + Duration::from_secs(1) < restarted_at,
        "the end is the expiry, not the restart: {cdr}"
    );
}

//! Two Vigil nodes on one real Redis (`state: { redis: … }`, issue 21): the
//! active holds the lease, the standby waits without binding anything. The
//! active is killed with SIGKILL during 200 calls; the standby takes the
//! lease within 3 s, binds the same address, loads the calls and goes on
//! refreshing them: the sipp peers see no failed refresh and no lost call,
//! and every call has one CDR. Registered contacts live in Redis too and keep
//! their keep-alives from the new active. And a Redis stopped during calls:
//! the calls go on, the failure is loud, and the store catches up when Redis
//! is back.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use support::phone::Phone;
use support::redis::RedisServer;
use support::{Net, Vigil, callee, caller, read_cdrs, scenario};

const SE: [&str; 2] = ["-set", "se"];

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn config(redis: &RedisServer) -> String {
    format!(
        "session_timer: {{ ttl: 10, min_se: 2, update_segment: 2, allow_short_intervals: true }}\n\
         state: {{ redis: \"{}\" }}\n",
        redis.url()
    )
}

fn status(vigil: &Vigil) -> serde_json::Value {
    let (ok, out, err) = vigil.ctl(&["status"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("status json")
}

/// Waits (at most `limit`) for `check` to hold.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the active (SIGKILL) and waits (at most 3 s) for the standby to
/// take the lease; the dead node's directory (its CDR file) is kept.
fn kill_and_take_over(active: Vigil, standby: &Vigil) -> tempfile::TempDir {
    let dir = active.kill_hard();
    eventually(
        Duration::from_secs(3),
        "the standby takes the lease",
        || standby.log().contains("lease taken: this node is active"),
    );
    dir
}

fn callers(net: Net, calls: usize, every_ms: &str) -> (support::Sipp, support::Sipp) {
    let n = calls.to_string();
    let uas = callee(
        net,
        Some(&scenario("uas_refresh.xml")),
        &[SE[0], SE[1], "10", "-m", &n, "-trace_msg"],
    );
    let uac = caller(
        net,
        net.caller,
        Some(&scenario("uac_refresher.xml")),
        "0049301234",
        &[
            SE[0], SE[1], "10", "-d", every_ms, "-m", &n, "-r", "100", "-l", &n,
        ],
    );
    (uas, uac)
}

#[test]
fn the_standby_takes_over_the_calls_of_an_active_killed_during_200_calls() {
    const CALLS: usize = 200;
    let net = Net::new(242);
    let redis_dir = tempfile::tempdir().expect("dir");
    let redis = RedisServer::start(redis_dir.path(), free_tcp_port());
    let active = Vigil::start(net, &config(&redis));
    // The standby runs the same config (same address, same CDR file) from a
    // directory of its own (its own log and control socket).
    let shared_config = std::fs::read_to_string(active.config_path()).expect("config");
    let standby = Vigil::start_with(net, tempfile::tempdir().expect("dir"), &shared_config);
    eventually(
        Duration::from_secs(5),
        "the second node is a standby",
        || {
            standby
                .log()
                .contains("standby: another node holds the lease")
        },
    );
    // An operator (or a health check) tells the standby from a dead node.
    let waiting = status(&standby);
    assert_eq!(
        (&waiting["state"]["role"], &waiting["state"]["state"]),
        (&"standby".into(), &"ok".into()),
        "{waiting}"
    );
    let (ok, _, err) = standby.ctl(&["calls"]);
    assert!(!ok && err.contains("standby"), "{err}");
    let (uas, uac) = callers(net, CALLS, "2500");
    std::thread::sleep(Duration::from_secs(6));
    let before = status(&active);
    assert_eq!(before["state"]["role"], "active", "{before}");
    assert_eq!(before["state"]["backend"], "redis", "{before}");
    assert_eq!(redis.cli(&["HLEN", "vigil:calls"]), CALLS.to_string());
    let cdr_path = active.cdr_path();
    let killed_at = SystemTime::now();
    let killed = Instant::now();
    let _active_dir = kill_and_take_over(active, &standby);
    let took_over = killed.elapsed();
    eventually(
        Duration::from_secs(2),
        "the standby resumes the calls",
        || standby.log().contains("calls resumed from the state store"),
    );
    let after = status(&standby);
    assert_eq!(after["state"]["role"], "active", "{after}");
    let uac = uac.wait(Duration::from_secs(60));
    assert!(
        uac.status.success(),
        "a caller saw a failed refresh or BYE:\n{}\n{}\n{}",
        support::tail(&uac.output, 40),
        support::tail(&uac.errors, 40),
        support::tail(&standby.log(), 40)
    );
    let uas = uas.expect_success(Duration::from_secs(20));
    if let Some(first) = support::first_request_after(&uas.messages, "UPDATE", killed_at) {
        println!("kill -9 to the first refresh the standby sent: {first:?}");
    }
    let refreshes = uas.messages.matches("UPDATE sip:").count();
    assert!(
        refreshes >= 2 * CALLS,
        "{refreshes} refreshes reached the callees, want >= {}",
        2 * CALLS
    );
    eventually(
        Duration::from_secs(3),
        "every billed call leaves Redis",
        || redis.cli(&["HLEN", "vigil:calls"]) == "0" && redis.cli(&["HLEN", "vigil:ended"]) == "0",
    );
    let stopped = standby.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    let cdrs = read_cdrs(&cdr_path);
    assert_eq!(cdrs.len(), CALLS, "one CDR per call");
    let ids: HashSet<&str> = cdrs.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), CALLS, "no call billed twice");
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
        let start =
            humantime::parse_rfc3339(cdr["start"].as_str().expect("start")).expect("rfc3339");
        assert!(start < killed_at, "the active's start: {cdr}");
    }
    println!("kill -9 to the standby holding the lease: {took_over:?}");
}

#[test]
fn calls_go_on_while_redis_is_down_and_the_store_catches_up() {
    const CALLS: usize = 50;
    let net = Net::new(243);
    let redis_dir = tempfile::tempdir().expect("dir");
    let port = free_tcp_port();
    let mut redis = RedisServer::start(redis_dir.path(), port);
    let vigil = Vigil::start(net, &config(&redis));
    // Calls of 10 s, the caller refreshing every 2 s.
    let (uas, uac) = callers(net, CALLS, "2000");
    eventually(Duration::from_secs(5), "every call saved", || {
        redis.cli(&["HLEN", "vigil:calls"]) == CALLS.to_string()
    });
    redis.kill();
    eventually(Duration::from_secs(5), "the failure is reported", || {
        status(&vigil)["state"]["state"] == "failing"
    });
    assert!(
        vigil.log().contains("state store write failed"),
        "{}",
        vigil.log()
    );
    // Back, empty (no persistence): each call's next refresh saves it again.
    let redis = RedisServer::start(redis_dir.path(), port);
    eventually(Duration::from_secs(5), "the store catches up", || {
        let s = status(&vigil);
        s["state"]["state"] == "ok" && redis.cli(&["HLEN", "vigil:calls"]) == CALLS.to_string()
    });
    uac.expect_success(Duration::from_secs(60));
    uas.expect_success(Duration::from_secs(20));
    eventually(
        Duration::from_secs(3),
        "every billed call leaves Redis",
        || redis.cli(&["HLEN", "vigil:calls"]) == "0",
    );
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), CALLS);
    assert!(stopped.cdrs.iter().all(|c| c["end_reason"] == "caller-bye"));
}

#[test]
fn registered_contacts_keep_their_keepalives_after_a_takeover() {
    let net = Net::new(244);
    let redis_dir = tempfile::tempdir().expect("dir");
    let redis = RedisServer::start(redis_dir.path(), free_tcp_port());
    let extra = format!(
        "{}registrar: {{ domain: vigil.local, min_expires: 1 }}\n\
         users:\n  - {{ user: \"1001\", password: secret1001 }}\n\
         nat_keepalive: {{ period: 1, allow_short_intervals: true }}\n",
        config(&redis)
    );
    let active = Vigil::start(net, &extra);
    let shared_config = std::fs::read_to_string(active.config_path()).expect("config");
    let standby = Vigil::start_with(net, tempfile::tempdir().expect("dir"), &shared_config);
    let mut phone = Phone::new(net.caller, "1001", "secret1001");
    assert_eq!(phone.register(net.vigil_addr(), 300), 200);
    assert_eq!(
        redis.cli(&["HLEN", "vigil:contacts"]),
        "1",
        "the contact is in Redis"
    );
    assert!(
        !phone.keepalives(Duration::from_secs(3)).is_empty(),
        "keep-alives from the active"
    );
    let _active_dir = kill_and_take_over(active, &standby);
    let after = phone.keepalives(Duration::from_secs(4));
    assert!(
        after.len() >= 2,
        "the new active keeps the contact alive: {} keep-alives in 4 s\n{}",
        after.len(),
        standby.log()
    );
    let (ok, out, err) = standby.ctl(&["registrations"]);
    assert!(ok && out.contains("1001"), "{out}{err}");
}

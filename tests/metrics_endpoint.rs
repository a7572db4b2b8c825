//! The Prometheus endpoint of a real daemon: `GET /metrics` on `metrics.listen`
//! answers the text exposition, and its counters follow what happened — three
//! calls answered and hung up by the caller, one refused 486 by a busy callee,
//! the Lua hooks each call ran, a stranger's request refused 403, a junk
//! datagram, a reload. A taken metrics port stops the daemon at start.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    Net, Vigil, callee, caller, example_script, exchange, options_request, scenario,
    scenario_expecting, status_of,
};

const METRICS: &str = "127.0.62.1:9060";

/// One HTTP/1.1 request; the status line, the headers (lower-cased names) and
/// the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP head and body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

/// Every series of a scrape (`name{labels}` → value).
fn scrape() -> HashMap<String, f64> {
    let (status, headers, body) = http_get(METRICS.parse().expect("addr"), "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{headers}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            let value = value.parse().unwrap_or_else(|_| panic!("a value: {l}"));
            (series.to_string(), value)
        })
        .collect()
}

/// How much `series` moved between two scrapes (absent counts as 0).
fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    let at = |m: &HashMap<String, f64>| m.get(series).copied().unwrap_or(0.0);
    at(after) - at(before)
}

/// Scrapes until `done` holds (the daemon finishes tearing legs down, or a
/// reload, a moment after the peers are done), at most 10 s.
fn scrape_until(done: impl Fn(&HashMap<String, f64>) -> bool) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape();
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn counters_follow_calls_hooks_refusals_and_reloads() {
    let net = Net::new(62);
    let script = example_script("cdr_tags.lua");
    let vigil = Vigil::start(
        net,
        &format!(
            "metrics: {{ listen: \"{METRICS}\" }}\npolicy: {{ lua: \"{}\" }}\n",
            script.display()
        ),
    );
    let before = scrape();
    let (_, _, text) = http_get(METRICS.parse().expect("addr"), "/metrics");
    for family in [
        "# TYPE vigil_calls_active gauge",
        "# TYPE vigil_calls_started_total counter",
        "# TYPE vigil_calls_failed_total counter",
        "# TYPE vigil_calls_ended_total counter",
        "# TYPE vigil_refresh_lateness_seconds histogram",
        "# TYPE vigil_policy_hook_seconds_total counter",
        "# HELP vigil_calls_answered_total ",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    let (status, _, _) = http_get(METRICS.parse().expect("addr"), "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // Three calls, answered, the caller hangs up.
    let uas = callee(net, None, &["-m", "3"]);
    caller(net, net.caller, None, "0049301234", &["-m", "3"])
        .expect_success(Duration::from_secs(30));
    uas.expect_success(Duration::from_secs(10));
    // One call to a busy callee.
    let busy = callee(net, Some(&scenario("uas_busy.xml")), &["-m", "1"]);
    let expects_486 = scenario_expecting(vigil.dir.path(), "uac_rejected.xml", 486);
    caller(
        net,
        net.caller,
        Some(&expects_486),
        "0049301234",
        &["-m", "1"],
    )
    .expect_success(Duration::from_secs(30));
    busy.expect_success(Duration::from_secs(10));
    // A stranger's request (403) and a datagram that is no SIP at all.
    let stranger = SocketAddr::new(net.stranger, 0);
    let replies = exchange(
        stranger,
        net.vigil_addr(),
        &options_request(net.stranger, "stranger"),
        Duration::from_millis(500),
    );
    assert_eq!(replies.first().and_then(|r| status_of(r)), Some(403));
    exchange(
        SocketAddr::new(net.caller, 0),
        net.vigil_addr(),
        b"\x16\x03\x01 not SIP",
        Duration::from_millis(200),
    );
    // A reload of the same file.
    let hup = Command::new("kill")
        .args(["-HUP", &vigil.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());

    let after = scrape_until(|m| {
        m.get("vigil_legs_active") == Some(&0.0)
            && moved(&before, m, "vigil_config_reloads_total{result=\"ok\"}") >= 1.0
    });
    let delta = |series: &str| moved(&before, &after, series);
    assert_eq!(delta("vigil_calls_started_total"), 4.0, "{after:#?}");
    assert_eq!(delta("vigil_calls_answered_total"), 3.0, "{after:#?}");
    assert_eq!(
        delta("vigil_calls_failed_total{code=\"486\"}"),
        1.0,
        "{after:#?}"
    );
    assert_eq!(
        delta("vigil_calls_ended_total{end_reason=\"caller-bye\"}"),
        3.0
    );
    assert_eq!(
        delta("vigil_calls_ended_total{end_reason=\"rejected\"}"),
        1.0
    );
    assert_eq!(
        delta("vigil_calls_ended_total{end_reason=\"session-timeout\"}"),
        0.0
    );
    assert_eq!(after["vigil_calls_active"], 0.0);
    assert_eq!(after["vigil_legs_active"], 0.0, "every leg torn down");
    let lua = |hook: &str, family: &str| {
        delta(&format!(
            "vigil_policy_hook_{family}_total{{hook=\"{hook}\",backend=\"lua\"}}"
        ))
    };
    assert_eq!(lua("call_start", "calls"), 4.0, "{after:#?}");
    assert_eq!(lua("hangup", "calls"), 4.0, "{after:#?}");
    assert_eq!(lua("call_start", "errors") + lua("hangup", "errors"), 0.0);
    assert!(lua("call_start", "seconds") > 0.0, "{after:#?}");
    assert_eq!(
        delta("vigil_datagrams_dropped_total{reason=\"forbidden\"}"),
        1.0
    );
    assert_eq!(
        delta("vigil_datagrams_dropped_total{reason=\"malformed\"}"),
        1.0
    );
    assert_eq!(
        delta("vigil_config_reloads_total{result=\"ok\"}"),
        1.0,
        "{}",
        vigil.log()
    );
    assert_eq!(delta("vigil_config_reloads_total{result=\"failed\"}"), 0.0);

    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    assert_eq!(stopped.cdrs.len(), 4, "one CDR per call counted");
    assert!(
        stopped.log.contains("metrics endpoint ready"),
        "{}",
        stopped.log
    );
}

#[test]
fn a_taken_metrics_port_stops_the_start_with_a_clear_error() {
    let taken = TcpListener::bind("127.0.62.5:9060").expect("hold the port");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("vigil.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"udp:127.0.62.5:5060\"]\ncdr: {{ path: \"{}\" }}\nmetrics: {{ listen: \"127.0.62.5:9060\" }}\n",
            dir.path().join("cdr.jsonl").display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vigil");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vigil kept running on a taken metrics port");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot serve metrics on 127.0.62.5:9060 (metrics.listen)"),
        "{stderr}"
    );
    drop(taken);
}

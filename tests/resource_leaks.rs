//! 18,000 calls through the real daemon, of every ending a carrier sees —
//! answered and hung up, busy, cancelled while ringing, never answered — and
//! afterwards the switch holds what it held idle: no call, dialog, transaction
//! or timer, the same tokio tasks and the same open file descriptors
//! (`vigil ctl status`'s `resources`).

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::{
    CALLER_PORT, Net, Vigil, caller, overload_summary, scenario, scenario_expecting, scrape, tail,
};

/// Calls of each failing kind; the rest of the 18,000 are answered.
const EACH_FAILING: usize = 1_000;
const TOTAL: usize = 18_000;
const ANSWERED: usize = TOTAL - 3 * EACH_FAILING;

/// Answered calls per second. The test proves that nothing is left behind,
/// not speed, so the rate is one a debug build carries on a loaded 2-core
/// machine. The debug build spends about 1.4 ms of CPU per call (the test
/// prints what it spent). 1,000 calls/s, 1.4 cores, is more than a 2-core
/// machine with a CPU hog or another build beside it has to give (issue 23):
/// datagrams waited in the kernel for seconds and a third of the calls were
/// shed, rightly. Even 300 calls/s (0.4 core) was too much with two CPU hogs
/// and other test suites running (load average 10–12): datagrams waited up
/// to a second and 1,095 calls were shed. 150 calls/s is half of that.
/// Every caller sets `-l` (open calls): sipp's default derives it from the
/// call's length and would throttle the 32 s unanswered calls to a crawl.
const ANSWERED_RATE: usize = 150;
const FAILING_RATE: usize = 25;
const METRICS_PORT: u16 = 9070;

/// Every outbound trunk on the callee address, one per way a call can end.
fn config(net: Net, dir: &std::path::Path) -> String {
    format!(
        r#"listen: ["udp:{vigil}:5060"]
trunks:
  - name: pbx
    inbound: {{ from: ["{caller}/32"] }}
    route_to: carrier
  - name: carrier
    outbound: {{ to: "{callee}:5080" }}
  - name: busy
    outbound: {{ to: "{callee}:5081" }}
  - name: ringing
    outbound: {{ to: "{callee}:5082" }}
  - name: silent
    outbound: {{ to: "{callee}:5083" }}
routes:
  - {{ prefix: "2", trunk: busy }}
  - {{ prefix: "3", trunk: ringing }}
  - {{ prefix: "4", trunk: silent }}
cdr: {{ path: "{cdr}" }}
log: {{ level: "warn", format: json }}
metrics: {{ listen: "{vigil}:{METRICS_PORT}" }}
"#,
        vigil = net.vigil,
        caller = net.caller,
        callee = net.callee,
        cdr = dir.join("cdr.jsonl").display(),
    )
}

/// A sipp UAS on the callee address at `port`.
fn callee_on(
    net: Net,
    port: u16,
    scenario_file: Option<&std::path::Path>,
    calls: usize,
) -> support::Sipp {
    let mut args: Vec<String> = match scenario_file {
        Some(f) => vec!["-sf".into(), f.display().to_string()],
        None => vec!["-sn".into(), "uas".into()],
    };
    args.extend([
        "-i".to_string(),
        net.callee.to_string(),
        "-p".into(),
        port.to_string(),
        "-m".into(),
        calls.to_string(),
    ]);
    support::Sipp::spawn(&format!("callee-{port}"), &args)
}

fn resources(vigil: &Vigil) -> serde_json::Value {
    let (ok, out, err) = vigil.ctl(&["status"]);
    assert!(ok, "vigil ctl status failed: {err}");
    let status: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    status["resources"].clone()
}

#[test]
fn after_18000_calls_of_every_ending_the_switch_is_back_to_idle() {
    let net = Net::new(70);
    let dir = tempfile::tempdir().expect("dir");
    let text = config(net, dir.path());
    let vigil = Vigil::start_with(net, dir, &text);
    // Tasks and descriptors idle; the readiness probe's OPTIONS transaction
    // may still linger (Timer J), so state counts are checked at the end only.
    let idle = resources(&vigil);
    assert_eq!(idle["calls"], 0, "idle: {idle}");
    let cpu_before = cpu_time(vigil.pid());

    // The callee that never answers: a socket that takes INVITEs and says nothing.
    let _silent = UdpSocket::bind(SocketAddr::new(net.callee, 5083)).expect("bind silent callee");
    let answering = callee_on(net, 5080, None, ANSWERED);
    let busy = callee_on(net, 5081, Some(&scenario("uas_busy.xml")), EACH_FAILING);
    let ringing = callee_on(
        net,
        5082,
        Some(&scenario("uas_ring_cancel.xml")),
        EACH_FAILING,
    );
    std::thread::sleep(Duration::from_millis(300));

    let scenarios = tempfile::tempdir().expect("dir");
    let rejected = |code| scenario_expecting(scenarios.path(), "uac_rejected.xml", code);
    let started = Instant::now();
    // (scenario, number dialled, calls, rate): the answered calls on sipp's
    // built-in UAC, each failing kind on its own port.
    let kinds = [
        (None, "0049301234", ANSWERED, ANSWERED_RATE),
        (Some(rejected(486)), "2000", EACH_FAILING, FAILING_RATE),
        (
            Some(scenario("uac_cancel.xml")),
            "3000",
            EACH_FAILING,
            FAILING_RATE,
        ),
        (Some(rejected(408)), "4000", EACH_FAILING, FAILING_RATE),
    ];
    let callers: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(i, (file, number, calls, rate))| {
            let (calls, rate) = (calls.to_string(), rate.to_string());
            let port = (CALLER_PORT + i as u16).to_string();
            let args = [
                "-r", &rate, "-m", &calls, "-d", "100", "-p", &port, "-timeout", "200s", "-l",
                "5000",
            ];
            caller(net, net.caller, file.as_deref(), number, &args)
        })
        .collect();
    let called: Vec<_> = callers
        .into_iter()
        .map(|sipp| sipp.wait(Duration::from_secs(240)))
        .collect();
    let traffic = started.elapsed();
    let cpu = cpu_time(vigil.pid()).saturating_sub(cpu_before);
    let overload = overload_summary(&scrape(SocketAddr::new(net.vigil, METRICS_PORT)));
    eprintln!(
        "{TOTAL} calls in {traffic:?}, Vigil's CPU {cpu:?} ({} µs per call); {overload}",
        cpu.as_micros() / TOTAL as u128
    );
    for sipp in &called {
        assert!(
            sipp.status.success(),
            "a caller failed ({overload}):\n{}\n--- errors ---\n{}",
            tail(&sipp.output, 40),
            tail(&sipp.errors, 20)
        );
    }
    // Every call the callers completed reached its callee, so these end too.
    for sipp in [answering, busy, ringing] {
        sipp.expect_success(Duration::from_secs(30));
    }

    // Every call has its CDR, each with the ending it had.
    let cdrs = vigil.cdrs();
    assert_eq!(cdrs.len(), TOTAL, "one CDR per call");
    let ended = |reason: &str, code: Option<u64>| {
        cdrs.iter()
            .filter(|c| c["end_reason"] == reason && code.is_none_or(|code| c["sip_code"] == code))
            .count()
    };
    assert_eq!(ended("caller-bye", None), ANSWERED);
    assert_eq!(ended("rejected", Some(486)), EACH_FAILING);
    assert_eq!(ended("cancelled", None), EACH_FAILING);
    assert_eq!(ended("rejected", Some(408)), EACH_FAILING);

    // Transactions linger at most 32 s (Timer D); then nothing is left.
    let deadline = Instant::now() + Duration::from_secs(45);
    let after = loop {
        let now = resources(&vigil);
        let drained = [
            "calls",
            "dialogs",
            "transactions",
            "timers",
            "transactions_counted",
        ]
        .iter()
        .all(|k| now[*k] == 0);
        if drained || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    for key in [
        "calls",
        "dialogs",
        "transactions",
        "timers",
        "cdrs_pending",
        "transactions_counted",
        "transaction_sources",
    ] {
        assert_eq!(after[key], 0, "{key} after {TOTAL} calls: {after}");
    }
    assert_eq!(
        after["tasks"], idle["tasks"],
        "tokio tasks: idle {idle}, after {after}"
    );
    assert_eq!(
        after["open_fds"], idle["open_fds"],
        "file descriptors: idle {idle}, after {after}"
    );
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    eprintln!("idle {idle}; after {after}");
}

/// The CPU time a process has spent, all its threads, living or gone
/// (`/proc/PID/stat`'s utime and stime, in ticks of 10 ms: Linux's USER_HZ).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

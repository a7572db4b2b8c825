//! A call spike end to end: sipp offers three times the rate the switch is
//! configured to take for 30 s. Vigil stays up, answers the excess `503` with a
//! `Retry-After`, completes every call it admitted (one `caller-bye` CDR each,
//! none for a refused call), keeps its memory within a bound, and takes the
//! full rate again, without a single `503`, right after.
//!
//! `limits: { max_cps: 40 }` stands in for a measured capacity: an operator sets
//! `max_cps` to what the box sustains. The real capacity is measured, and the
//! same spike run at scale with Vigil's CPU constrained, by
//! `tests/load/overload.sh` (BENCHMARKS.md); here the debug build has CPU to
//! spare, so what this pins down is the admission behaviour, not speed.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use support::{Net, Vigil, callee, caller};

/// The configured capacity, calls per second.
const MAX_CPS: u64 = 40;
/// What sipp offers during the spike: three times the capacity.
const SPIKE_CPS: u64 = 3 * MAX_CPS;
const SPIKE_SECS: u64 = 30;
/// Seconds at the configured rate right after the spike.
const RECOVERY_SECS: u64 = 5;
/// Each admitted call is held this long between ACK and BYE.
const HOLD_MS: u64 = 500;
/// How far Vigil's resident memory may grow over its idle size during the
/// spike. Refused calls keep no state, so only the admitted calls count: 40
/// calls/s, each call's transactions lingering 32 s after it (RFC 3261 Timers
/// D and K), about 1,300 calls' worth, which grew the debug build by ~3 MiB
/// when this was written. 8 KiB kept per refused call (2,360 of them) would
/// add 18 MiB and break the bound, as would a queue that grows without end.
const RSS_GROWTH_BOUND_KIB: u64 = 16 * 1024;
const NUMBER: &str = "0049301234";

/// The caller of the load benchmark: a call either completes (200, ACK, hold,
/// BYE, 200; counter `admitted_done`) or is refused (a 503 whose Retry-After
/// it checks, then ACK; counter `refused`). Anything else fails the call.
fn spike_scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/load/uac_spike.xml")
}

#[test]
fn three_times_max_cps_gets_503_for_the_excess_and_every_admitted_call_completes() {
    let net = Net::new(69);
    let mut vigil = Vigil::start(net, &format!("limits: {{ max_cps: {MAX_CPS} }}"));
    let dir = tempfile::tempdir().expect("dir");
    let uas = callee(net, None, &[]);
    let idle_kib = vm_rss_kib(vigil.pid()).expect("vigil's VmRSS");
    let rss = RssSampler::start(vigil.pid());

    // The spike: 3,600 calls at 120 calls/s, into a switch that takes 40.
    let spike_screen = dir.path().join("spike-screen.log");
    let offered_asked = SPIKE_CPS * SPIKE_SECS;
    let args = sipp_args(SPIKE_CPS, offered_asked, &spike_screen);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let spike = caller(net, net.caller, Some(&spike_scenario()), NUMBER, &args)
        .wait(Duration::from_secs(SPIKE_SECS + 30));
    let peak_kib = rss.stop();
    assert!(
        vigil.is_running(),
        "vigil died in the spike:\n{}",
        vigil.log()
    );
    let screen = std::fs::read_to_string(&spike_screen).expect("sipp's screen dump");
    let offered = screen_counter(&screen, "Total Calls created");
    let refused = screen_counter(&screen, "Counter refused");
    let completed = screen_counter(&screen, "Counter admitted_done");
    let failed = screen_counter(&screen, "Failed call");
    assert!(
        spike.status.success() && failed == 0,
        "every call ends completed or refused with 503 + Retry-After ({failed} failed, sipp {}):\n{}\n--- errors ---\n{}",
        spike.status,
        screen,
        spike.errors
    );
    assert_eq!(offered, offered_asked, "sipp made every call:\n{screen}");

    // With three times the rate offered the bucket never idles: Vigil admits
    // max_cps per second of the spike, plus the bucket it starts with (one
    // second deep, full). sipp's start-up and pacing shift its 30 s window by
    // a fraction of a second either way: allow two seconds' worth.
    let admitted = offered - refused;
    let expected = MAX_CPS * (SPIKE_SECS + 1);
    let tolerance = 2 * MAX_CPS;
    assert!(
        admitted.abs_diff(expected) <= tolerance,
        "admitted {admitted} of {offered}: max_cps lets in {expected} ± {tolerance}"
    );
    assert!(
        refused.abs_diff(offered - expected) <= tolerance,
        "{refused} refused: the excess is {} ± {tolerance}",
        offered - expected
    );
    // At least 99.9 % of the admitted calls complete (at this size: all).
    assert!(
        completed * 1000 >= admitted * 999,
        "{completed} of {admitted} admitted calls completed:\n{screen}"
    );
    assert!(
        peak_kib <= idle_kib + RSS_GROWTH_BOUND_KIB,
        "RSS peaked at {peak_kib} KiB, idle {idle_kib} KiB: more than {RSS_GROWTH_BOUND_KIB} KiB of growth"
    );

    // Right after: the configured rate goes through whole, nothing refused.
    let recovery_screen = dir.path().join("recovery-screen.log");
    let recovery_calls = MAX_CPS * RECOVERY_SECS;
    let mut args = sipp_args(MAX_CPS, recovery_calls, &recovery_screen);
    args.extend(["-p".to_string(), "5062".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    caller(net, net.caller, Some(&spike_scenario()), NUMBER, &args)
        .expect_success(Duration::from_secs(RECOVERY_SECS + 30));
    let screen = std::fs::read_to_string(&recovery_screen).expect("sipp's screen dump");
    assert_eq!(
        screen_counter(&screen, "Counter refused"),
        0,
        "no 503 once the spike is over:\n{screen}"
    );
    assert_eq!(
        screen_counter(&screen, "Counter admitted_done"),
        recovery_calls,
        "{screen}"
    );

    assert!(vigil.is_running(), "vigil died:\n{}", vigil.log());
    uas.stop();
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    // One CDR per admitted call, none for a refused one (a CDR more would be
    // a call Vigil started while its caller was told 503).
    assert_eq!(
        stopped.cdrs.len() as u64,
        admitted + recovery_calls,
        "{}",
        stopped.log
    );
    let abnormal: Vec<_> = stopped
        .cdrs
        .iter()
        .filter(|c| c["end_reason"] != "caller-bye")
        .collect();
    assert!(
        abnormal.is_empty(),
        "every admitted call ended normally: {abnormal:?}"
    );
    eprintln!(
        "spike: offered {offered}, refused {refused}, admitted {admitted} (expected {expected}), \
         completed {completed}; RSS idle {idle_kib} KiB, peak {peak_kib} KiB"
    );
}

/// sipp's rate, call count, hold and screen dump (read for the counters).
fn sipp_args(rate: u64, calls: u64, screen: &Path) -> Vec<String> {
    [
        "-r",
        &rate.to_string(),
        "-m",
        &calls.to_string(),
        "-d",
        &HOLD_MS.to_string(),
        "-trace_screen",
        "-screen_file",
        &screen.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// The cumulative value of a counter in sipp's final screen dump (its last
/// screen), e.g. `  Counter refused        |        0         |      451   `.
fn screen_counter(screen: &str, name: &str) -> u64 {
    screen
        .lines()
        .rev()
        .find_map(|line| {
            let mut fields = line.split('|');
            let key = fields.next()?.trim();
            let cumulative = fields.nth(1)?;
            (key == name).then(|| cumulative.trim().parse::<u64>().ok())?
        })
        .unwrap_or_else(|| panic!("no counter {name:?} in sipp's screen:\n{screen}"))
}

/// `VmRSS` of a process, in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's resident memory every 100 ms until stopped; the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(vm_rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        RssSampler { stop, handle }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("RSS sampler")
    }
}

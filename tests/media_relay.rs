//! Relayed calls end to end (issue 17): a real rtpengine (Debian's
//! `rtpengine-daemon`, userspace), a real `vigil` whose carrier trunk is
//! `media: relay`, and sipp peers that send real RTP (sip-tester's
//! `g711a.pcap`, or `-rtp_echo`), with the test's own sockets standing in
//! for a phone where a test must see where media goes.
//!
//! What each test proves:
//! - media flows through rtpengine's ports both ways: each leg's SDP names
//!   rtpengine, packets arrive, the CDR has rtpengine's totals both ways;
//! - a callee that stops sending ends the call (`timeout_mode: either`)
//!   within `timeout` + 2 s, BYE on both legs with the Reason; with `both`
//!   the same one-way audio goes on;
//! - media that keeps flowing is never ended; a call on hold outlives
//!   `timeout` (it has `hold_timeout`);
//! - a late offer, and a re-INVITE that moves the callee's media;
//! - a resumed call whose media then dies is ended as any other; so is a
//!   call whose dead media rtpengine's own `--timeout` deleted first;
//! - a relayed call outlives a `kill -9` of Vigil (issue 21): the restarted
//!   Vigil keeps looking at its media through the same rtpengine session,
//!   and its end deletes that session and bills its totals from both
//!   processes' time;
//! - rtpengine killed under calls: they go on and end with their CDRs, a
//!   new call gets `on_failure` (503, or no relay), and a restarted
//!   rtpengine takes calls again; a stalled rtpengine and a caller who
//!   gives up meanwhile still make a CDR; a delete lost while rtpengine
//!   was cut off is sent again when it is back;
//! - calls that fail, are cancelled or end at shutdown are deleted from
//!   rtpengine, each with its CDR;
//! - a registered user behind NAT is relayed by default, and its audio goes
//!   where it sends from (symmetric RTP), not where its SDP says.
//!
//! After each test, rtpengine holds no call and no worker waits for it.
//!
//! Every address in every SDP is loopback. Each test has its own network
//! (127.0.160–177.0/24), ng port (23100–23117) and 50 of rtpengine's media
//! ports (31200–31999, 32400–32449), so they run in parallel. Timeouts are generous: the tests
//! assert behaviour, not speed, on a busy 2-core machine.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::rtpengine::{G711A_PCAP, Rtpengine, g711a_packets};
use support::{
    CALLEE_PORT, CALLER_PORT, Net, Sipp, Vigil, callee, caller, scenario, scenario_expecting,
};

/// How long a sipp peer may take, at most, for any of these calls.
const SIPP_LIMIT: Duration = Duration::from_secs(90);
/// The media port sipp binds (and its SDP names) unless told otherwise.
const SIPP_MEDIA_PORT: u16 = 6000;
/// The `Reason` of Vigil's BYE for dead media.
const MEDIA_TIMEOUT_REASON: &str = "Reason: Q.850;cause=102;text=\"Media timeout\"";

// ---------------------------------------------------------------------------
// The switch and its rtpengine

/// One test's rtpengine and the Vigil that drives it.
struct Relay {
    engine: Rtpengine,
    vigil: Vigil,
    metrics: SocketAddr,
    /// rtpengine's working directory and logs.
    engine_dir: tempfile::TempDir,
}

impl Relay {
    /// rtpengine on `ng_port` and `ports`, then Vigil with the standard
    /// trunks (the carrier `media: relay`), `media:` pointing at it (plus
    /// `media_keys`, indented YAML lines), and a metrics endpoint; waits
    /// until Vigil sees rtpengine up.
    fn start(net: Net, ng_port: u16, ports: RangeInclusive<u16>, media_keys: &str) -> Relay {
        Relay::start_with(net, ng_port, ports, 60, media_keys)
    }

    /// The same, with rtpengine's own `--timeout` (seconds).
    fn start_with(
        net: Net,
        ng_port: u16,
        ports: RangeInclusive<u16>,
        engine_timeout: u32,
        media_keys: &str,
    ) -> Relay {
        let engine_dir = tempfile::tempdir().expect("rtpengine dir");
        let engine =
            Rtpengine::start_with_timeout(engine_dir.path(), 1, ng_port, ports, engine_timeout);
        let metrics = SocketAddr::new(net.vigil, 9090);
        let dir = tempfile::tempdir().expect("vigil dir");
        // `{dir}` names Vigil's directory (the state store's file).
        let media_keys = media_keys.replace("{dir}", &dir.path().display().to_string());
        let extra = format!(
            "metrics: {{ listen: \"{metrics}\" }}\nmedia:\n  rtpengines: [\"udp:{}\"]\n  ping_interval: 1\n{media_keys}",
            engine.ng
        );
        let carrier = format!("outbound: {{ to: \"{}:{CALLEE_PORT}\" }}", net.callee);
        let config = net
            .config(&dir.path().join("cdr.jsonl"), &extra)
            .replace(&carrier, &format!("{carrier}\n    media: relay"));
        assert!(config.contains("media: relay"), "{config}");
        let vigil = Vigil::start_with(net, dir, &config);
        let relay = Relay {
            engine,
            vigil,
            metrics,
            engine_dir,
        };
        relay.wait_engine(true);
        relay
    }

    /// Waits (at most 20 s) until every worker sees rtpengine up, or any
    /// sees it down.
    fn wait_engine(&self, up: bool) {
        let series = format!("vigil_rtpengine_up{{engine=\"{}\"}}", self.engine.ng);
        let want = if up { 1.0 } else { 0.0 };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = scrape(self.metrics);
            if now.get(&series) == Some(&want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rtpengine not seen {} within 20 s: {series} = {:?}\n{}",
                if up { "up" } else { "down" },
                now.get(&series),
                self.vigil.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills Vigil with SIGKILL and starts it again `down_for` later on
    /// the same directory (its config and state store); waits until it
    /// sees rtpengine up.
    fn kill_and_restart_vigil(self, net: Net, down_for: Duration) -> Relay {
        let dir = self.vigil.kill_hard();
        std::thread::sleep(down_for);
        let relay = Relay {
            vigil: Vigil::restart(net, dir),
            ..self
        };
        relay.wait_engine(true);
        relay
    }

    /// Restarts a killed rtpengine on the same ports.
    fn restart_engine(&mut self) {
        let (ng, ports) = (self.engine.ng.port(), self.engine.ports.clone());
        self.engine = Rtpengine::start(self.engine_dir.path(), 2, ng, ports);
    }

    fn metric(&self, series: &str) -> f64 {
        scrape(self.metrics).get(series).copied().unwrap_or(0.0)
    }

    /// Waits (at most 30 s) for an answered call whose caller's Call-ID
    /// `matches`, as `vigil ctl calls` shows it.
    fn answered_call(&self, matches: impl Fn(&str) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, stdout, stderr) = self.vigil.ctl(&["calls"]);
            assert!(ok, "vigil ctl calls: {stderr}");
            let calls: serde_json::Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
            let found = calls.as_array().into_iter().flatten().find(|c| {
                !c["answered_for"].is_null() && matches(c["call_id"].as_str().unwrap_or_default())
            });
            if let Some(call) = found {
                return call.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no answered call within 30 s: {stdout}\n{}",
                self.vigil.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (at most 20 s) for `count` CDRs.
    fn cdrs(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let cdrs = self.vigil.cdrs();
            if cdrs.len() >= count {
                return cdrs;
            }
            assert!(
                Instant::now() < deadline,
                "{} CDRs of {count} within 20 s: {cdrs:?}\n{}",
                cdrs.len(),
                self.vigil.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Once every call is over: no relayed call is counted, no worker
    /// waits for rtpengine (the operator's leak check), and rtpengine holds
    /// no call (each was deleted, its ports freed).
    fn assert_idle(&self) {
        self.assert_idle_but(0);
    }

    /// The same, with `deletes` deletes still waiting for a dead rtpengine
    /// to come back.
    fn assert_idle_but(&self, deletes: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ok, stdout, stderr) = self.vigil.ctl(&["status"]);
            assert!(ok, "vigil ctl status: {stderr}");
            let status: serde_json::Value =
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e})"));
            let resources = &status["resources"];
            let relayed = self.metric("vigil_relayed_calls");
            let held = if self.engine.is_running() {
                self.engine.calls()
            } else {
                Vec::new()
            };
            if resources["calls"] == 0
                && resources["ng_waiting"] == 0
                && resources["ng_deletes_to_retry"] == deletes
                && relayed == 0.0
                && held.is_empty()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not idle: relayed calls {relayed}, resources {resources}, rtpengine holds {held:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Every series of a `GET /metrics` (`name{labels}` → value).
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The peers and what they saw

/// A sipp callee with `scenario_file` and `extra` arguments, logging every
/// message.
fn sipp_callee(net: Net, scenario_file: &str, extra: &[&str]) -> Sipp {
    let mut args = vec!["-trace_msg"];
    args.extend_from_slice(extra);
    callee(net, Some(&scenario(scenario_file)), &args)
}

/// A sipp caller on `port`, dialling the carrier, logging every message.
fn sipp_caller(net: Net, port: u16, scenario_file: &std::path::Path, extra: &[&str]) -> Sipp {
    let port = port.to_string();
    let mut args = vec!["-m", "1", "-trace_msg", "-p", &port];
    args.extend_from_slice(extra);
    caller(net, net.caller, Some(scenario_file), "0049301234", &args)
}

/// One message in sipp's `-trace_msg` log.
#[derive(Debug)]
struct Traced {
    /// Seconds (of the local clock, with microseconds).
    at: f64,
    received: bool,
    text: String,
}

impl Traced {
    fn is_request(&self, method: &str) -> bool {
        self.text.starts_with(&format!("{method} "))
    }

    fn is_response(&self, status: u16) -> bool {
        self.text.starts_with(&format!("SIP/2.0 {status} "))
    }

    fn cseq_method(&self) -> &str {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix("CSeq:"))
            .and_then(|v| v.split_whitespace().nth(1))
            .unwrap_or_default()
    }
}

/// sipp's message log, parsed: a line of dashes and a timestamp
/// (`2026-12-07 01:06:25.552650`) before each message.
fn traced(log: &str) -> Vec<Traced> {
    let mut out: Vec<Traced> = Vec::new();
    for line in log.lines() {
        let stamp = line
            .strip_prefix("-----")
            .map(|rest| rest.trim_start_matches('-'))
            .and_then(|rest| rest.strip_prefix(' '));
        if let Some(stamp) = stamp {
            out.push(Traced {
                at: seconds(stamp.trim()),
                received: false,
                text: String::new(),
            });
        } else if let Some(last) = out.last_mut() {
            if line.contains("message received") {
                last.received = true;
            } else if line.contains("message sent") || (last.text.is_empty() && line.is_empty()) {
            } else {
                last.text.push_str(line.trim_start());
                last.text.push('\n');
            }
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS.micros` as seconds since the epoch (of that clock).
fn seconds(stamp: &str) -> f64 {
    let (date, time) = stamp
        .split_once(' ')
        .unwrap_or_else(|| panic!("a timestamp: {stamp}"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().expect("date")).collect();
    let t: Vec<f64> = time.split(':').map(|p| p.parse().expect("time")).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

/// The first message of `log` that `matches`.
fn find<'a>(log: &'a [Traced], what: &str, matches: impl Fn(&Traced) -> bool) -> &'a Traced {
    log.iter()
        .find(|m| matches(m))
        .unwrap_or_else(|| panic!("no {what} in the log:\n{log:#?}"))
}

/// The audio address an SDP (in a message's text) names.
fn sdp_audio(text: &str) -> SocketAddr {
    let ip = text
        .lines()
        .filter_map(|l| l.strip_prefix("c=IN IP4 "))
        .next_back()
        .unwrap_or_else(|| panic!("no c= line in:\n{text}"));
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no m=audio line in:\n{text}"));
    format!("{}:{port}", ip.trim())
        .parse()
        .unwrap_or_else(|_| panic!("an audio address in:\n{text}"))
}

/// A stream of `vigil ctl calls`' `a_media`/`b_media` as an address.
fn stream_addr(stream: &serde_json::Value) -> SocketAddr {
    let ip: IpAddr = stream["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address: {stream}"));
    let port = stream["port"].as_u64().expect("a port") as u16;
    SocketAddr::new(ip, port)
}

/// How long sip-tester's g711a.pcap plays (its last packet's time after its
/// first's).
fn pcap_seconds() -> f64 {
    let pcap = std::fs::read(G711A_PCAP).expect("g711a.pcap");
    let mut times = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let word = |i: usize| {
            u32::from_le_bytes([
                pcap[at + i],
                pcap[at + i + 1],
                pcap[at + i + 2],
                pcap[at + i + 3],
            ])
        };
        times.push(f64::from(word(0)) + f64::from(word(4)) / 1e6);
        at += 16 + word(8) as usize;
    }
    times.last().expect("packets") - times[0]
}

/// A CDR's media totals one way: (packets, bytes).
fn flow(cdr: &serde_json::Value, way: &str) -> (u64, u64) {
    let f = &cdr["media"][way];
    (
        f["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("{way}: {cdr}")),
        f["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("{way}: {cdr}")),
    )
}

/// A CDR's time field (a JSON pointer: `/end`, `/media/last_media_at`) as
/// seconds since the epoch.
fn cdr_time(cdr: &serde_json::Value, field: &str) -> f64 {
    let text = cdr
        .pointer(field)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{field}: {cdr}"));
    let t = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{field} {text}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// What a test's own socket received: when, from where, and the packet.
type Heard = Arc<Mutex<Vec<(Instant, SocketAddr, Vec<u8>)>>>;

/// A test's own media socket (a phone's), recording what arrives until
/// dropped; with `echo`, it sends each packet back where it came from.
struct Ear {
    addr: SocketAddr,
    heard: Heard,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    socket: UdpSocket,
}

impl Ear {
    fn bind(addr: SocketAddr, echo: bool) -> Ear {
        let socket = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let heard: Heard = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (socket, heard, stop) = (
                socket.try_clone().expect("clone"),
                heard.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        if echo {
                            let _ = socket.send_to(&buf[..n], from);
                        }
                        heard
                            .lock()
                            .expect("lock")
                            .push((Instant::now(), from, buf[..n].to_vec()));
                    }
                }
            })
        };
        Ear {
            addr,
            heard,
            stop,
            thread: Some(thread),
            socket,
        }
    }

    /// What arrived so far.
    fn heard(&self) -> Vec<(Instant, SocketAddr, Vec<u8>)> {
        self.heard.lock().expect("lock").clone()
    }

    /// Waits (at most 20 s) until `count` packets arrived since `since`.
    fn wait_for(&self, count: usize, since: Instant, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.heard().iter().filter(|(at, ..)| *at >= since).count();
            if n >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {n} of {count} packets on {} within 20 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ear {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The test's socket is a phone (port 7000 of the caller's address) that
/// calls through sipp (`uac_media_elsewhere.xml`, hanging up after `ms`)
/// a sipp callee echoing its RTP.
fn phone_calls_echo(net: Net, ms: &str) -> (Ear, Sipp, Sipp) {
    let phone = Ear::bind(SocketAddr::new(net.caller, 7000), false);
    let uas = sipp_callee(net, "uas_rtp.xml", &["-m", "1", "-rtp_echo"]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_media_elsewhere.xml"),
        &["-d", ms, "-set", "rtp_port", "7000"],
    );
    (phone, uas, uac)
}

/// RTP's SSRC.
fn ssrc(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
}

// ---------------------------------------------------------------------------

/// The caller's media is the test's own socket, the callee sipp echoing:
/// what the socket sends comes back through rtpengine, so it crossed both
/// ways, and each peer only ever saw rtpengine's addresses.
#[test]
fn media_flows_through_rtpengine_both_ways() {
    let net = Net::new(160);
    let relay = Relay::start(net, 23100, 31200..=31249, "");
    let (phone, uas, uac) = phone_calls_echo(net, "15000");

    // What each leg's SDP names, as the operator sees it: the peers' own
    // addresses, and rtpengine's (two ports of its range) given to them.
    let call = relay.answered_call(|_| true);
    assert_eq!(call["relayed"], true, "{call}");
    let to_engine_from_caller = stream_addr(&call["a_media"]["local"][0]);
    let to_engine_from_callee = stream_addr(&call["b_media"]["local"][0]);
    assert!(
        relay.engine.owns(to_engine_from_caller) && relay.engine.owns(to_engine_from_callee),
        "each leg's SDP names rtpengine: {call}"
    );
    assert_ne!(to_engine_from_caller, to_engine_from_callee);
    assert_eq!(
        stream_addr(&call["a_media"]["peer"][0]),
        phone.addr,
        "{call}"
    );
    assert_eq!(
        stream_addr(&call["b_media"]["peer"][0]),
        SocketAddr::new(net.callee, SIPP_MEDIA_PORT),
        "{call}"
    );
    assert_eq!(relay.metric("vigil_relayed_calls"), 1.0);

    // The phone talks: 150 packets of g711a.pcap, 10 ms apart, to the
    // address its SDP answer named; the callee echoes them back.
    let packets = g711a_packets();
    let sent_at = Instant::now();
    for packet in packets.iter().take(150) {
        phone
            .socket
            .send_to(packet, to_engine_from_caller)
            .expect("send RTP");
        std::thread::sleep(Duration::from_millis(10));
    }
    phone.wait_for(140, sent_at, "the callee's echo of the caller's RTP");
    let heard = phone.heard();
    assert!(
        heard
            .iter()
            .all(|(_, from, packet)| *from == to_engine_from_caller
                && ssrc(packet) == ssrc(&packets[0])),
        "every packet is our RTP, back from the rtpengine port we sent to"
    );

    uac.expect_success(SIPP_LIMIT);
    let uas = uas.expect_success(SIPP_LIMIT);
    // The callee saw only rtpengine in the INVITE.
    let log = traced(&uas.messages);
    let invite = find(&log, "INVITE", |m| m.received && m.is_request("INVITE"));
    assert_eq!(sdp_audio(&invite.text), to_engine_from_callee);

    // rtpengine's totals, both ways, and when the media stopped.
    let cdrs = relay.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    let (a_packets, a_bytes) = flow(cdr, "caller_to_callee");
    let (b_packets, _) = flow(cdr, "callee_to_caller");
    assert!(a_packets >= 140 && a_bytes >= 140 * 252, "{cdr}");
    assert!(b_packets >= 140, "the echo crossed back: {cdr}");
    let last = cdr_time(cdr, "/media/last_media_at");
    assert!(
        last >= cdr_time(cdr, "/answer") - 1.0 && last <= cdr_time(cdr, "/end"),
        "{cdr}"
    );
    relay.assert_idle();
}

/// The callee plays its 7 s of audio once, then sends nothing while the
/// caller talks on. With `timeout_mode: either` that is dead media: Vigil
/// ends the call, BYE on both legs with the Reason, within `timeout` + 2 s
/// of the callee's last packet, and not before `timeout` (less the test's
/// half second for sipp's own timing).
#[test]
fn one_way_audio_ends_the_call_in_either_mode() {
    let net = Net::new(161);
    let relay = Relay::start(
        net,
        23101,
        31250..=31299,
        "  timeout: 4\n  timeout_mode: either\n  allow_short_intervals: true\n",
    );
    let uas = sipp_callee(net, "uas_rtp_once.xml", &["-m", "1"]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "10"],
    );
    let uas = uas.expect_success(SIPP_LIMIT);
    let uac = uac.expect_success(SIPP_LIMIT);

    // When the callee went silent (its ACK started 7 s of audio), and when
    // each leg got Vigil's BYE.
    let callee_log = traced(&uas.messages);
    let ack = find(&callee_log, "ACK", |m| m.received && m.is_request("ACK"));
    let silent_from = ack.at + pcap_seconds();
    let timeout = 4.0;
    for (who, log) in [("callee", callee_log), ("caller", traced(&uac.messages))] {
        let bye = find(&log, "BYE", |m| m.received && m.is_request("BYE"));
        assert!(
            bye.text.contains(MEDIA_TIMEOUT_REASON),
            "{who}: {}",
            bye.text
        );
        let after = bye.at - silent_from;
        eprintln!("the {who}'s BYE came {after:.2} s after the callee's last RTP");
        assert!(
            (timeout - 0.5..=timeout + 2.0).contains(&after),
            "the {who}'s BYE came {after:.2} s after the callee's last RTP (timeout {timeout} s)"
        );
    }

    let cdrs = relay.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["end_reason"], "media-timeout", "{cdr}");
    assert_eq!(cdr["ended_by"], "switch", "{cdr}");
    let (to_callee, _) = flow(cdr, "caller_to_callee");
    let (to_caller, _) = flow(cdr, "callee_to_caller");
    let pcap_packets = g711a_packets().len() as u64;
    assert!(
        (pcap_packets * 9 / 10..=pcap_packets).contains(&to_caller),
        "the callee's one play of g711a.pcap: {cdr}"
    );
    assert!(to_callee > pcap_packets, "the caller talked on: {cdr}");
    assert_eq!(relay.metric("vigil_media_timeouts_total"), 1.0);
    relay.assert_idle();
}

/// The same one-way audio with `timeout_mode: both`: one direction still
/// flows, so the media is alive; the callee hangs up itself 18 s after its
/// ACK, 11 s after its audio stopped.
#[test]
fn one_way_audio_goes_on_in_both_mode() {
    let net = Net::new(162);
    let relay = Relay::start(
        net,
        23102,
        31300..=31349,
        "  timeout: 4\n  timeout_mode: both\n  allow_short_intervals: true\n",
    );
    let uas = sipp_callee(net, "uas_rtp_once.xml", &["-m", "1"]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "10"],
    );
    let uas = uas.expect_success(SIPP_LIMIT);
    let uac = uac.expect_success(SIPP_LIMIT);

    let callee_log = traced(&uas.messages);
    let ack = find(&callee_log, "ACK", |m| m.received && m.is_request("ACK"));
    let bye = find(&callee_log, "its own BYE", |m| {
        !m.received && m.is_request("BYE")
    });
    let one_way = bye.at - (ack.at + pcap_seconds());
    assert!(
        one_way > 4.0 + 6.0,
        "the call outlived the callee's audio ({one_way:.1} s) until the callee hung up"
    );
    let caller_log = traced(&uac.messages);
    let relayed_bye = find(&caller_log, "BYE", |m| m.received && m.is_request("BYE"));
    assert!(
        !relayed_bye.text.contains("Reason:"),
        "{}",
        relayed_bye.text
    );

    let cdrs = relay.cdrs(1);
    assert_eq!(cdrs[0]["end_reason"], "callee-bye", "{}", cdrs[0]);
    assert_eq!(relay.metric("vigil_media_timeouts_total"), 0.0);
    relay.assert_idle();
}

/// Both sides talk (the caller plays two rounds of g711a.pcap, 13.6 s; the
/// callee echoes): three times `timeout` of live media, and the call is
/// not ended, even with `timeout_mode: either`.
#[test]
fn media_that_keeps_flowing_is_never_ended() {
    let net = Net::new(163);
    let relay = Relay::start(
        net,
        23103,
        31350..=31399,
        "  timeout: 4\n  timeout_mode: either\n  allow_short_intervals: true\n",
    );
    let uas = sipp_callee(net, "uas_rtp.xml", &["-m", "1", "-rtp_echo"]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "2"],
    );
    uac.expect_success(SIPP_LIMIT);
    uas.expect_success(SIPP_LIMIT);

    let cdrs = relay.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    assert!(
        cdr["duration_ms"].as_u64().expect("duration") >= 12_000,
        "{cdr}"
    );
    let (to_callee, _) = flow(cdr, "caller_to_callee");
    let (to_caller, _) = flow(cdr, "callee_to_caller");
    assert!(to_callee >= 300 && to_caller >= 300, "both ways: {cdr}");
    assert_eq!(relay.metric("vigil_media_timeouts_total"), 0.0);
    relay.assert_idle();
}

/// The caller talks, puts the call on hold (re-INVITE, `a=sendonly`) 3 s in,
/// and hangs up 14 s later: about 10 s without any RTP, over twice
/// `timeout`, which a held call may (`hold_timeout`).
#[test]
fn a_call_on_hold_outlives_the_media_timeout() {
    let net = Net::new(164);
    let relay = Relay::start(
        net,
        23104,
        31400..=31449,
        "  timeout: 4\n  timeout_mode: both\n  hold_timeout: 30\n  allow_short_intervals: true\n",
    );
    let uas = sipp_callee(net, "uas_rtp.xml", &["-m", "1", "-rtp_echo"]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp_hold.xml"),
        &["-d", "14000"],
    );
    let uac = uac.expect_success(SIPP_LIMIT);
    let uas = uas.expect_success(SIPP_LIMIT);

    // The hold crossed through rtpengine both ways.
    let callee_log = traced(&uas.messages);
    let hold = find(&callee_log, "the re-INVITE", |m| {
        m.received && m.is_request("INVITE") && m.text.contains("a=sendonly")
    });
    assert!(relay.engine.owns(sdp_audio(&hold.text)), "{}", hold.text);
    let caller_log = traced(&uac.messages);
    let held = find(&caller_log, "the re-INVITE's 200", |m| {
        m.received
            && m.is_response(200)
            && m.cseq_method() == "INVITE"
            && m.text.contains("a=recvonly")
    });
    assert!(relay.engine.owns(sdp_audio(&held.text)), "{}", held.text);

    let cdrs = relay.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    let silent = cdr_time(cdr, "/end") - cdr_time(cdr, "/media/last_media_at");
    assert!(
        silent > 8.0,
        "{silent:.1} s without RTP before the BYE: {cdr}"
    );
    assert_eq!(relay.metric("vigil_media_timeouts_total"), 0.0);
    relay.assert_idle();
}

/// A late offer: the caller's INVITE has no SDP, the callee offers in its
/// 200 and the caller answers in its ACK; each through rtpengine. The
/// callee plays g711a.pcap and the caller echoes it: media both ways.
#[test]
fn a_late_offer_call_is_relayed() {
    let net = Net::new(165);
    let relay = Relay::start(net, 23105, 31450..=31499, "");
    let uas = sipp_callee(net, "uas_late_offer.xml", &["-m", "1"]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_late_offer.xml"),
        &["-d", "9000", "-rtp_echo"],
    );
    let uac = uac.expect_success(SIPP_LIMIT);
    let uas = uas.expect_success(SIPP_LIMIT);

    let caller_log = traced(&uac.messages);
    let ok = find(&caller_log, "the 200", |m| m.received && m.is_response(200));
    assert!(relay.engine.owns(sdp_audio(&ok.text)), "{}", ok.text);
    let callee_log = traced(&uas.messages);
    let ack = find(&callee_log, "the ACK", |m| {
        m.received && m.is_request("ACK")
    });
    assert!(relay.engine.owns(sdp_audio(&ack.text)), "{}", ack.text);

    let cdrs = relay.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    let (from_callee, _) = flow(cdr, "callee_to_caller");
    let (echoed, _) = flow(cdr, "caller_to_callee");
    assert!(from_callee >= 200, "the callee's g711a.pcap: {cdr}");
    assert!(echoed >= 100, "the caller got it and echoed it: {cdr}");
    relay.assert_idle();
}

/// The callee re-INVITEs to move its media to another port: the caller's
/// RTP (g711a.pcap) goes there from then on, and no longer to the old one.
#[test]
fn a_reinvite_moves_the_media_to_the_new_port() {
    let net = Net::new(166);
    let t0 = Instant::now();
    let relay = Relay::start(net, 23106, 31500..=31549, "");
    let old = Ear::bind(SocketAddr::new(net.callee, 7000), false);
    let new = Ear::bind(SocketAddr::new(net.callee, 7002), false);
    let uas = sipp_callee(
        net,
        "uas_rtp_move.xml",
        &[
            "-m", "1", "-set", "rtp_port", "7000", "-set", "new_port", "7002",
        ],
    );
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "10"],
    );
    let call = relay.answered_call(|_| true);
    let engine_side = stream_addr(&call["b_media"]["local"][0]);
    assert!(relay.engine.owns(engine_side), "{call}");

    old.wait_for(20, t0, "before the move");
    new.wait_for(20, t0, "after the move");
    let moved_at = new.heard()[0].0;
    // Packets in flight at the move may still land on the old port.
    let grace = moved_at + Duration::from_millis(500);
    std::thread::sleep(Duration::from_secs(1));
    let late = old.heard().iter().filter(|(at, ..)| *at > grace).count();
    assert_eq!(late, 0, "nothing goes to the old port after the move");
    for ear in [&old, &new] {
        assert!(
            ear.heard().iter().all(|(_, from, _)| *from == engine_side),
            "the callee's media comes from the rtpengine port its SDP named"
        );
    }

    uas.expect_success(SIPP_LIMIT);
    let uac = uac.expect_success(SIPP_LIMIT);
    // The caller was re-offered rtpengine's address, not the callee's new port.
    let caller_log = traced(&uac.messages);
    let reinvite = find(&caller_log, "the re-INVITE", |m| {
        m.received && m.is_request("INVITE")
    });
    assert!(
        relay.engine.owns(sdp_audio(&reinvite.text)),
        "{}",
        reinvite.text
    );

    let cdrs = relay.cdrs(1);
    assert_eq!(cdrs[0]["end_reason"], "callee-bye", "{}", cdrs[0]);
    relay.assert_idle();
}

/// rtpengine dies under a call: the call goes on and its BYE still works,
/// with a CDR without media totals; a new call is refused 503
/// (`on_failure: reject`); rtpengine started again takes the next call.
#[test]
fn rtpengine_killed_under_calls_then_restarted() {
    let net = Net::new(167);
    let mut relay = Relay::start(net, 23107, 31550..=31599, "  on_failure: reject\n");
    let uas = sipp_callee(net, "uas_rtp.xml", &["-m", "2", "-rtp_echo"]);
    // Four rounds of g711a.pcap (27 s), then BYE.
    let up = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "4"],
    );
    let call = relay.answered_call(|_| true);
    assert_eq!(call["relayed"], true, "{call}");
    let up_call_id = call["call_id"].as_str().expect("call_id").to_string();

    relay.engine.kill();
    relay.wait_engine(false);
    let scenarios = tempfile::tempdir().expect("dir");
    let refused = sipp_caller(
        net,
        CALLER_PORT + 1,
        &scenario_expecting(scenarios.path(), "uac_rejected.xml", 503),
        &[],
    );
    refused.expect_success(SIPP_LIMIT);

    relay.restart_engine();
    relay.wait_engine(true);
    let next = sipp_caller(
        net,
        CALLER_PORT + 2,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "1"],
    );
    let again = relay.answered_call(|id| id != up_call_id);
    assert_eq!(again["relayed"], true, "{again}");
    assert!(
        relay
            .engine
            .owns(stream_addr(&again["b_media"]["local"][0]))
    );
    next.expect_success(SIPP_LIMIT);
    up.expect_success(SIPP_LIMIT);
    uas.expect_success(SIPP_LIMIT);

    let cdrs = relay.cdrs(3);
    let by_id = |id: &str| {
        cdrs.iter()
            .find(|c| c["call_id"] == id)
            .unwrap_or_else(|| panic!("no CDR for {id}: {cdrs:?}"))
    };
    let up_cdr = by_id(&up_call_id);
    assert_eq!(up_cdr["end_reason"], "caller-bye", "{up_cdr}");
    assert!(
        up_cdr["media"].is_null(),
        "rtpengine lost its totals: {up_cdr}"
    );
    let refused_cdr = cdrs
        .iter()
        .find(|c| c["end_reason"] == "rejected")
        .unwrap_or_else(|| panic!("no rejected call: {cdrs:?}"));
    assert_eq!(refused_cdr["sip_code"], 503, "{refused_cdr}");
    let again_cdr = by_id(again["call_id"].as_str().expect("call_id"));
    assert_eq!(again_cdr["end_reason"], "caller-bye", "{again_cdr}");
    assert!(flow(again_cdr, "caller_to_callee").0 > 0, "{again_cdr}");
    relay.assert_idle();
}

/// The same death with `on_failure: passthrough`: the new call goes on
/// without relay, each leg seeing the other's own address.
#[test]
fn with_rtpengine_dead_a_new_call_passes_through_unrelayed() {
    let net = Net::new(168);
    let mut relay = Relay::start(net, 23108, 31600..=31649, "  on_failure: passthrough\n");
    let uas = sipp_callee(net, "uas_rtp.xml", &["-m", "2", "-rtp_echo"]);
    let up = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "3"],
    );
    let call = relay.answered_call(|_| true);
    assert_eq!(call["relayed"], true, "{call}");
    let up_call_id = call["call_id"].as_str().expect("call_id").to_string();

    relay.engine.kill();
    relay.wait_engine(false);
    let unrelayed = sipp_caller(
        net,
        CALLER_PORT + 1,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "1", "-mp", "6100"],
    );
    let passed = relay.answered_call(|id| id != up_call_id);
    assert_eq!(passed["relayed"], false, "{passed}");
    assert_eq!(
        stream_addr(&passed["b_media"]["local"][0]),
        SocketAddr::new(net.caller, 6100),
        "the callee sees the caller's own address: {passed}"
    );
    assert_eq!(
        stream_addr(&passed["a_media"]["local"][0]),
        SocketAddr::new(net.callee, SIPP_MEDIA_PORT),
        "the caller sees the callee's own address: {passed}"
    );
    unrelayed.expect_success(SIPP_LIMIT);
    up.expect_success(SIPP_LIMIT);
    uas.expect_success(SIPP_LIMIT);

    let cdrs = relay.cdrs(2);
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
        assert!(cdr["media"].is_null(), "{cdr}");
    }
    // The relayed call's delete waits for its rtpengine to come back.
    relay.assert_idle_but(1);
}

/// The caller holds (2 s in) and resumes (3 s later); its 7 s of audio end
/// soon after, and the callee's echo with them. Resumed, the call has
/// `timeout` again, not the `hold_timeout` it had on hold: Vigil ends it
/// within `timeout` + 2 s of the last packet.
#[test]
fn a_resumed_call_whose_media_dies_is_ended() {
    let net = Net::new(169);
    let relay = Relay::start(
        net,
        23109,
        31650..=31699,
        "  timeout: 4\n  timeout_mode: both\n  hold_timeout: 30\n  allow_short_intervals: true\n",
    );
    let uas = sipp_callee(net, "uas_rtp.xml", &["-m", "1", "-rtp_echo"]);
    let uac = sipp_caller(net, CALLER_PORT, &scenario("uac_rtp_hold_resume.xml"), &[]);
    let uac = uac.expect_success(SIPP_LIMIT);
    uas.expect_success(SIPP_LIMIT);

    let caller_log = traced(&uac.messages);
    let ack = find(&caller_log, "the ACK", |m| {
        !m.received && m.is_request("ACK")
    });
    let silent_from = ack.at + pcap_seconds();
    let bye = find(&caller_log, "Vigil's BYE", |m| {
        m.received && m.is_request("BYE")
    });
    assert!(bye.text.contains(MEDIA_TIMEOUT_REASON), "{}", bye.text);
    let after = bye.at - silent_from;
    eprintln!("the BYE came {after:.2} s after the last RTP");
    assert!(
        (4.0 - 0.5..=4.0 + 2.0).contains(&after),
        "the BYE came {after:.2} s after the last RTP (timeout 4 s, hold_timeout 30 s)"
    );
    let cdrs = relay.cdrs(1);
    assert_eq!(cdrs[0]["end_reason"], "media-timeout", "{}", cdrs[0]);
    relay.assert_idle();
}

/// A relayed call outlives Vigil (issue 21): the state store keeps it with
/// its rtpengine session, Vigil is killed with SIGKILL while the phone
/// talks and started again. rtpengine kept relaying meanwhile; the new
/// process looks at the call's media (4 s timeout, so it looks several
/// times) and, the media being alive, leaves the call be until the caller
/// hangs up. The end deletes the call from rtpengine, and the CDR has
/// rtpengine's totals for the whole call, from before and after the kill.
#[test]
fn a_relayed_call_outlives_a_kill_and_a_restart_of_vigil() {
    let net = Net::new(177);
    let relay = Relay::start(
        net,
        23117,
        32400..=32449,
        "  timeout: 4\n  timeout_mode: either\n  allow_short_intervals: true\nstate: { path: \"{dir}/calls.db\" }\n",
    );
    let (phone, uas, uac) = phone_calls_echo(net, "14000");
    let call = relay.answered_call(|_| true);
    let to_engine = stream_addr(&call["a_media"]["local"][0]);

    // The phone talks every 20 ms until the call is over.
    let talking = Arc::new(AtomicBool::new(true));
    let talker = {
        let (socket, talking) = (phone.socket.try_clone().expect("clone"), talking.clone());
        std::thread::spawn(move || {
            let mut sent = 0u64;
            for packet in g711a_packets().iter().cycle() {
                if !talking.load(Ordering::Relaxed) || sent >= 1_500 {
                    break;
                }
                let _ = socket.send_to(packet, to_engine);
                sent += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            sent
        })
    };
    let started = Instant::now();
    phone.wait_for(50, started, "the echo before the kill");

    // The call is in the store; Vigil dies and comes back within a second.
    relay.vigil.wait_saved(1);
    let relay = relay.kill_and_restart_vigil(net, Duration::from_millis(500));
    phone.wait_for(50, Instant::now(), "the echo after the restart");

    let uac = uac.expect_success(SIPP_LIMIT);
    uas.expect_success(SIPP_LIMIT);
    talking.store(false, Ordering::Relaxed);
    let sent = talker.join().expect("talker");
    let caller_log = traced(&uac.messages);
    assert!(
        !caller_log.iter().any(|m| m.received && m.is_request("BYE")),
        "live media: Vigil did not hang up"
    );
    let cdrs = relay.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["end_reason"], "caller-bye", "{cdr}");
    let (to_callee, _) = flow(cdr, "caller_to_callee");
    let (to_caller, _) = flow(cdr, "callee_to_caller");
    // About 14 s of a packet every 20 ms, most of it after the restart:
    // the totals are the whole call's, from the one rtpengine session.
    assert!(
        to_callee >= 500 && to_callee <= sent && to_caller >= 500,
        "{sent} sent; {cdr}"
    );
    let log = relay.vigil.log();
    assert!(log.contains("calls resumed from the state store"), "{log}");
    relay.assert_idle();
}

/// rtpengine stalls (SIGSTOP) as a call starts, and the caller cancels
/// while the offer waits for it; then the offer fails. With
/// `on_failure: passthrough` the call must still be the cancelled call it
/// is, with its CDR, and no INVITE may reach the callee.
#[test]
fn a_call_cancelled_while_rtpengine_stalls_still_gets_its_cdr() {
    let net = Net::new(170);
    let relay = Relay::start(net, 23110, 31700..=31749, "  on_failure: passthrough\n");
    let callee = Ear::bind(SocketAddr::new(net.callee, CALLEE_PORT), false);
    relay.engine.stall();
    let uac = sipp_caller(net, CALLER_PORT, &scenario("uac_cancel_early.xml"), &[]);
    uac.expect_success(SIPP_LIMIT);
    // The offer times out (3.5 s), and the delete the CANCEL sent too.
    let cdrs = relay.cdrs(1);
    relay.engine.resume();
    let cdr = &cdrs[0];
    assert_eq!(cdr["end_reason"], "cancelled", "{cdr}");
    assert_eq!(cdr["sip_code"], 487, "{cdr}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        callee.heard().is_empty(),
        "nothing reaches the callee of a cancelled call"
    );
    relay.assert_idle();
    assert_eq!(relay.vigil.cdrs().len(), 1, "one CDR");
}

/// Calls that never connect still went through rtpengine (the caller's
/// offer did): a busy callee's and one cancelled while ringing are each
/// deleted there, with their CDRs.
#[test]
fn failed_and_cancelled_calls_are_deleted_from_rtpengine() {
    let net = Net::new(171);
    let relay = Relay::start(net, 23111, 31750..=31799, "");
    let scenarios = tempfile::tempdir().expect("dir");

    let busy = callee(net, Some(&scenario("uas_busy.xml")), &["-m", "1"]);
    let refused = sipp_caller(
        net,
        CALLER_PORT,
        &scenario_expecting(scenarios.path(), "uac_rejected.xml", 486),
        &[],
    );
    refused.expect_success(SIPP_LIMIT);
    busy.expect_success(SIPP_LIMIT);

    let ringing = callee(net, Some(&scenario("uas_ring_cancel.xml")), &["-m", "1"]);
    let cancelled = sipp_caller(net, CALLER_PORT + 1, &scenario("uac_cancel.xml"), &[]);
    cancelled.expect_success(SIPP_LIMIT);
    ringing.expect_success(SIPP_LIMIT);

    let cdrs = relay.cdrs(2);
    let reasons: Vec<(&str, u64)> = cdrs
        .iter()
        .map(|c| {
            (
                c["end_reason"].as_str().unwrap_or_default(),
                c["sip_code"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(reasons, [("rejected", 486), ("cancelled", 487)]);
    relay.assert_idle();
}

/// A graceful shutdown with a relayed call up: BYE both legs, and the CDR
/// (end reason `shutdown`) has rtpengine's totals; rtpengine holds nothing.
#[test]
fn a_shutdown_ends_relayed_calls_with_their_totals() {
    let net = Net::new(172);
    let relay = Relay::start(net, 23112, 31800..=31849, "");
    let uas = sipp_callee(net, "uas_rtp.xml", &["-m", "1", "-rtp_echo"]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "10"],
    );
    relay.answered_call(|_| true);
    // Some media first.
    std::thread::sleep(Duration::from_secs(2));
    let Relay { engine, vigil, .. } = relay;
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    uac.expect_success(SIPP_LIMIT);
    uas.expect_success(SIPP_LIMIT);
    assert_eq!(stopped.cdrs.len(), 1, "{}", stopped.log);
    let cdr = &stopped.cdrs[0];
    assert_eq!(cdr["end_reason"], "shutdown", "{cdr}");
    assert!(flow(cdr, "caller_to_callee").0 > 0, "{cdr}");
    assert!(flow(cdr, "callee_to_caller").0 > 0, "{cdr}");
    assert_eq!(engine.calls(), Vec::<String>::new(), "deleted at shutdown");
}

/// rtpengine is cut off (stalled, and what Vigil sends it lost) when a
/// call ends: the BYE works, and the CDR comes without totals once the
/// delete times out; when rtpengine answers again, Vigil sends the delete
/// again and rtpengine frees the call, rather than holding its ports until
/// its own timeout.
#[test]
fn a_delete_lost_while_rtpengine_was_cut_off_is_sent_again() {
    let net = Net::new(173);
    let relay = Relay::start(net, 23113, 31850..=31899, "");
    let uas = sipp_callee(net, "uas_rtp.xml", &["-m", "1", "-rtp_echo"]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp.xml"),
        &["-set", "rounds", "1"],
    );
    relay.answered_call(|_| true);
    relay.engine.stall();
    relay.engine.fill_ng_buffer();
    uac.expect_success(SIPP_LIMIT);
    uas.expect_success(SIPP_LIMIT);
    let cdrs = relay.cdrs(1);
    assert_eq!(cdrs[0]["end_reason"], "caller-bye", "{}", cdrs[0]);
    assert!(cdrs[0]["media"].is_null(), "{}", cdrs[0]);
    relay.wait_engine(false);
    relay.engine.resume();
    relay.wait_engine(true);
    relay.assert_idle();
}

/// rtpengine's own `--timeout` (3 s here) is shorter than Vigil's
/// `media.timeout` (5 s), against the README's advice: when both sides go
/// silent, rtpengine forgets the call before Vigil looks. Its media is dead
/// all the same (rtpengine relays nothing for it any more): Vigil ends the
/// call at its next look, BYE on both legs with the Reason, within
/// `timeout` + 2 s of the last packet. (Not before rtpengine's own timeout,
/// which counts whole seconds: it may forget a call up to 1 s early, and
/// Vigil then counts the silence from the last packet it saw.)
#[test]
fn dead_media_that_rtpengine_deleted_first_still_ends_the_call() {
    let net = Net::new(174);
    let relay = Relay::start_with(
        net,
        23114,
        31900..=31949,
        3,
        "  timeout: 5\n  timeout_mode: both\n  allow_short_intervals: true\n",
    );
    // The callee talks for 7 s and the caller echoes it; then both are silent.
    let uas = sipp_callee(net, "uas_rtp_once.xml", &["-m", "1"]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_wait_bye.xml"),
        &["-rtp_echo"],
    );
    let uas = uas.expect_success(SIPP_LIMIT);
    let uac = uac.expect_success(SIPP_LIMIT);

    let callee_log = traced(&uas.messages);
    let ack = find(&callee_log, "ACK", |m| m.received && m.is_request("ACK"));
    let silent_from = ack.at + pcap_seconds();
    for (who, log) in [("callee", callee_log), ("caller", traced(&uac.messages))] {
        let bye = find(&log, "Vigil's BYE", |m| m.received && m.is_request("BYE"));
        assert!(
            bye.text.contains(MEDIA_TIMEOUT_REASON),
            "{who}: {}",
            bye.text
        );
        let after = bye.at - silent_from;
        eprintln!("the {who}'s BYE came {after:.2} s after the last RTP");
        assert!(
            (3.0 - 1.5..=5.0 + 2.0).contains(&after),
            "the {who}'s BYE came {after:.2} s after the last RTP (timeout 5 s, rtpengine's 3 s)"
        );
    }
    let cdrs = relay.cdrs(1);
    assert_eq!(cdrs[0]["end_reason"], "media-timeout", "{}", cdrs[0]);
    relay.assert_idle();
}

/// A registered user behind NAT (its REGISTER's Contact names a "private"
/// 127.0.175.50 while it sends from 127.0.175.5), with no `media:` of its
/// own and a carrier that does not relay: its calls are relayed all the
/// same. Its SDP names the private address too, but it sends its RTP from
/// its real one (the test's socket): rtpengine sends the caller's audio
/// back there (symmetric RTP), and not before it has heard from it.
#[test]
fn a_user_behind_nat_is_relayed_and_gets_its_audio_where_it_sends_from() {
    let net = Net::new(175);
    let engine_dir = tempfile::tempdir().expect("rtpengine dir");
    let engine = Rtpengine::start(engine_dir.path(), 1, 23115, 31950..=31999);
    let metrics = SocketAddr::new(net.vigil, 9090);
    let dir = tempfile::tempdir().expect("vigil dir");
    let extra = format!(
        "metrics: {{ listen: \"{metrics}\" }}\n\
media: {{ rtpengines: [\"udp:{}\"], ping_interval: 1 }}\n\
registrar: {{ domain: vigil.local, db: \"{}/registrar.db\" }}\n\
users:\n  - {{ user: \"1001\", password: secret1001 }}\n",
        engine.ng,
        dir.path().display()
    );
    let config = net.config(&dir.path().join("cdr.jsonl"), &extra);
    let vigil = Vigil::start_with(net, dir, &config);
    let relay = Relay {
        engine,
        vigil,
        metrics,
        engine_dir,
    };
    relay.wait_engine(true);

    // The phone: its SIP on 127.0.175.5:5070, its "private" address .50.
    let phone_ip: IpAddr = "127.0.175.5".parse().expect("ip");
    let private = "127.0.175.50";
    let register = Sipp::spawn(
        "register",
        &[
            "-sf",
            &scenario("register_nat.xml").display().to_string(),
            "-au",
            "1001",
            "-ap",
            "secret1001",
            "-set",
            "expires",
            "300",
            "-set",
            "contact",
            &format!("{private}:5090"),
            "-s",
            "1001",
            "-i",
            &phone_ip.to_string(),
            "-p",
            "5070",
            "-m",
            "1",
            "-timeout",
            "20s",
            "-timeout_error",
            &net.vigil_addr().to_string(),
        ]
        .map(String::from),
    );
    register.expect_success(SIPP_LIMIT);
    // Answers on its real address; its SDP names the private one.
    let phone_sip = Sipp::spawn(
        "phone",
        &[
            "-sf",
            &scenario("uas_rtp.xml").display().to_string(),
            "-i",
            &phone_ip.to_string(),
            "-p",
            "5070",
            "-mi",
            private,
            "-m",
            "1",
            "-trace_msg",
        ]
        .map(String::from),
    );
    std::thread::sleep(Duration::from_millis(200));
    // Its audio, sent from its real address.
    let phone = Ear::bind(SocketAddr::new(phone_ip, 7002), false);
    let uac = caller(
        net,
        net.caller,
        Some(&scenario("uac_rtp.xml")),
        "1001",
        &["-m", "1", "-set", "rounds", "2"],
    );
    let call = relay.answered_call(|_| true);
    assert_eq!(
        call["relayed"], true,
        "a user behind NAT is relayed: {call}"
    );
    let engine_side = stream_addr(&call["b_media"]["local"][0]);
    assert!(relay.engine.owns(engine_side), "{call}");
    assert_eq!(
        stream_addr(&call["b_media"]["peer"][0]),
        SocketAddr::new(private.parse().expect("ip"), SIPP_MEDIA_PORT),
        "{call}"
    );
    // Nothing reaches the real address before the phone has sent from it.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        phone.heard().is_empty(),
        "rtpengine sends where the SDP says first"
    );
    let started = Instant::now();
    for packet in g711a_packets().iter().take(150) {
        phone.socket.send_to(packet, engine_side).expect("send RTP");
        std::thread::sleep(Duration::from_millis(20));
    }
    phone.wait_for(
        50,
        started,
        "the caller's audio at the phone's real address",
    );
    assert!(
        phone
            .heard()
            .iter()
            .all(|(_, from, _)| *from == engine_side),
        "from the rtpengine port the phone sends to"
    );
    uac.expect_success(SIPP_LIMIT);
    phone_sip.expect_success(SIPP_LIMIT);
    let cdrs = relay.cdrs(1);
    let cdr = &cdrs[0];
    assert_eq!(cdr["trunk_out"], "user:1001", "{cdr}");
    assert!(flow(cdr, "callee_to_caller").0 >= 140, "{cdr}");
    relay.assert_idle();
}

// ---------------------------------------------------------------------------
// Benchmark (not part of the suite: `cargo test --release --test media_relay
// -- --ignored --nocapture media_timeout_detection_latency`)

/// How fast dead media is noticed (issue 17's benchmark): 500 calls, 10 a
/// second, each callee playing g711a.pcap once and then going silent while
/// its caller talks on (`timeout_mode: either`, `timeout: 5`). For each
/// call and each leg: the time from the callee's last RTP packet (its ACK
/// plus the pcap's length, as sipp plays it) to Vigil's BYE arriving;
/// prints p50/p90/p99/max, and asserts every call was ended as
/// media-timeout, none before `timeout` (less sipp's own half second).
#[test]
#[ignore = "benchmark: run by hand, figures go in BENCHMARKS.md"]
fn media_timeout_detection_latency() {
    const CALLS: usize = 500;
    const TIMEOUT: f64 = 5.0;
    let net = Net::new(176);
    let relay = Relay::start(
        net,
        23116,
        40000..=44999,
        "  timeout: 5\n  timeout_mode: either\n  allow_short_intervals: true\n",
    );
    let calls = CALLS.to_string();
    let uas = sipp_callee(net, "uas_rtp_once.xml", &["-m", &calls]);
    let uac = sipp_caller(
        net,
        CALLER_PORT,
        &scenario("uac_rtp.xml"),
        &[
            "-m", &calls, "-r", "10", "-l", "400", "-timeout", "300s", "-set", "rounds", "3",
        ],
    );
    let limit = Duration::from_secs(300);
    let uas = uas.expect_success(limit);
    let uac = uac.expect_success(limit);

    // Each leg's messages by Call-ID; the CDRs pair the caller's Call-ID
    // with the callee's.
    let by_call = |log: Vec<Traced>| {
        let mut calls: HashMap<String, Vec<Traced>> = HashMap::new();
        for m in log {
            let id = m
                .text
                .lines()
                .find_map(|l| l.strip_prefix("Call-ID:"))
                .map(|v| v.trim().to_string())
                .unwrap_or_default();
            calls.entry(id).or_default().push(m);
        }
        calls
    };
    let callee_calls = by_call(traced(&uas.messages));
    let caller_calls = by_call(traced(&uac.messages));
    let cdrs = relay.cdrs(CALLS);
    let received_bye = |log: &[Traced]| {
        let bye = find(log, "BYE", |m| m.received && m.is_request("BYE"));
        assert!(bye.text.contains(MEDIA_TIMEOUT_REASON), "{}", bye.text);
        bye.at
    };
    let (mut to_callee, mut to_caller) = (Vec::new(), Vec::new());
    for cdr in &cdrs {
        assert_eq!(cdr["end_reason"], "media-timeout", "{cdr}");
        let a_id = cdr["call_id"].as_str().expect("call_id");
        let b_id = cdr["b_call_id"].as_str().expect("b_call_id");
        let callee_log = &callee_calls[b_id];
        let ack = find(callee_log, "ACK", |m| m.received && m.is_request("ACK"));
        let silent_from = ack.at + pcap_seconds();
        to_callee.push(received_bye(callee_log) - silent_from);
        to_caller.push(received_bye(&caller_calls[a_id]) - silent_from);
    }
    for (leg, mut after) in [("callee", to_callee), ("caller", to_caller)] {
        after.sort_by(f64::total_cmp);
        let at = |q: f64| after[((after.len() - 1) as f64 * q).round() as usize];
        println!(
            "media timeout {TIMEOUT} s, {} calls: BYE to the {leg} after the last RTP: \
             p50 {:.2} s, p90 {:.2} s, p99 {:.2} s, min {:.2} s, max {:.2} s",
            after.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            after[0],
            after[after.len() - 1]
        );
        assert!(after[0] >= TIMEOUT - 0.5, "{leg}: a BYE before the timeout");
    }
    assert_eq!(relay.metric("vigil_media_timeouts_total"), CALLS as f64);
    relay.assert_idle();
}

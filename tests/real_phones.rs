//! A real softphone against Vigil's default registrar config (issue 23: baresip
//! could not register with the shipped config, whose 401 offered SHA-256):
//! baresip 1.0 registers with digest (401 with one MD5 challenge, then 200),
//! gets Vigil's keep-alives (a decode error per `HELLO`, silence for `crlf`),
//! answers a call from a trunk, places a call to a carrier (after a `407 Proxy
//! Authentication Required`), and answers every re-INVITE refresh Vigil sends
//! it with 200 while both calls go on to their hang-up.
//!
//! Everything is on `127.0.120.0/24`; baresip runs headless (no audio device:
//! its `aubridge` module loops the call's audio back) and takes commands on
//! its `cons` UDP port.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{CALLEE_PORT, Net, VIGIL_PORT, Vigil, callee, caller};

const NET: u8 = 120;
const PHONE_SIP_PORT: u16 = 5090;
const PHONE_CONS_PORT: u16 = 5555;
const METRICS_PORT: u16 = 9060;

fn phone_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, NET, 5))
}

// ---------------------------------------------------------------------------
// baresip

/// The baresip binary; tests/run.sh installs Debian's `baresip` when missing.
fn baresip_bin() -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join("baresip"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("baresip is not installed: run tests/run.sh (it installs it), or apt-get install baresip")
        })
}

/// A headless baresip with one account, bound to loopback only. Stopped by
/// its PID when dropped (SIGTERM, then SIGKILL).
struct Baresip {
    child: Option<Child>,
    dir: tempfile::TempDir,
    cons: SocketAddr,
}

impl Baresip {
    fn start(account: &str) -> Baresip {
        let dir = tempfile::tempdir().expect("temp dir");
        let ip = phone_ip();
        // Only what a call needs: G.711, aubridge as the audio device (what is
        // played comes back as the source; no ALSA or PulseAudio), the cons
        // UI on a UDP port, accounts, and menu's commands (/dial, /hangup).
        // `net_interface` set to the address keeps SDP and Contact on it.
        let config = format!(
            "poll_method epoll\n\
sip_listen {ip}:{PHONE_SIP_PORT}\n\
net_interface {ip}\n\
call_local_timeout 120\n\
call_max_calls 4\n\
audio_player aubridge,vigil\n\
audio_source aubridge,vigil\n\
audio_alert aubridge,alert\n\
rtp_ports 31200-31299\n\
module_path /usr/lib/baresip/modules\n\
module g711.so\n\
module aubridge.so\n\
module cons.so\n\
module_tmp account.so\n\
module_app menu.so\n\
cons_listen {ip}:{PHONE_CONS_PORT}\n"
        );
        std::fs::write(dir.path().join("config"), config).expect("write config");
        std::fs::write(dir.path().join("accounts"), format!("{account}\n"))
            .expect("write accounts");
        let log = std::fs::File::create(dir.path().join("baresip.log")).expect("log");
        let child = Command::new(baresip_bin())
            .arg("-f")
            .arg(dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("start baresip");
        let phone = Baresip {
            child: Some(child),
            dir,
            cons: SocketAddr::new(ip, PHONE_CONS_PORT),
        };
        phone.wait_for("baresip is ready.", Duration::from_secs(15));
        phone
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Waits until the log contains `text` (at least `count` times).
    fn wait_for_n(&self, text: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.log().matches(text).count() < count {
            assert!(
                Instant::now() < deadline,
                "baresip did not log {text:?} {count} time(s) within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for(&self, text: &str, limit: Duration) {
        self.wait_for_n(text, 1, limit);
    }

    fn count(&self, text: &str) -> usize {
        self.log().matches(text).count()
    }

    /// A command to baresip's console (`/dial 123`, `/hangup`), over UDP.
    fn command(&self, line: &str) {
        let socket = UdpSocket::bind(SocketAddr::new(phone_ip(), 0)).expect("bind");
        socket
            .send_to(format!("{line}\n").as_bytes(), self.cons)
            .expect("send command");
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// What Vigil traced for user 1001 (every message to or from the phone, and the
// trunk legs of its calls).

#[derive(Debug)]
struct Traced {
    sent: bool,
    remote: SocketAddr,
    text: String,
}

impl Traced {
    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }

    fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .lines()
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    fn header(&self, name: &str) -> &str {
        self.headers(name).first().copied().unwrap_or_default()
    }

    fn is_request(&self, method: &str) -> bool {
        self.first_line().starts_with(&format!("{method} "))
    }

    fn status(&self) -> Option<u16> {
        support::status_of(self.first_line())
    }
}

/// Parses the trace file: `TIME received|sent FROM -> TO [WHOM] N bytes`, then
/// the N bytes as they were on the wire.
fn trace(path: &Path) -> Vec<Traced> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(end) = rest.find('\n') {
        let header = &rest[..end];
        let words: Vec<&str> = header.split(' ').collect();
        let (Some(&direction), Some(&from), Some(&to)) = (words.get(1), words.get(2), words.get(4))
        else {
            break;
        };
        let len: usize = words[words.len() - 2].parse().expect("byte count");
        let body = &rest[end + 1..end + 1 + len];
        let sent = direction == "sent";
        out.push(Traced {
            sent,
            remote: (if sent { to } else { from }).parse().expect("address"),
            text: body.to_string(),
        });
        rest = rest[end + 1 + len..].trim_start_matches('\n');
    }
    out
}

/// The re-INVITEs Vigil sent the phone in the dialog `call_id` (every INVITE
/// after the first CSeq seen), and whether each got a 200 from the phone.
fn refreshes_to_phone(trace: &[Traced], call_id: &str) -> Vec<(u32, bool)> {
    let phone = SocketAddr::new(phone_ip(), PHONE_SIP_PORT);
    let cseq_of = |t: &Traced| -> (u32, String) {
        let mut parts = t.header("CSeq").split_whitespace();
        let seq = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (seq, parts.next().unwrap_or_default().to_string())
    };
    let in_call: Vec<&Traced> = trace
        .iter()
        .filter(|t| t.remote == phone && t.header("Call-ID") == call_id)
        .collect();
    in_call
        .iter()
        .filter(|t| t.sent && t.is_request("INVITE"))
        .filter(|t| {
            // A re-INVITE carries the phone's To tag: the dialog exists.
            t.header("To").contains("tag=")
        })
        .map(|invite| {
            let (seq, _) = cseq_of(invite);
            let answered = in_call.iter().any(|t| {
                !t.sent && t.status() == Some(200) && cseq_of(t) == (seq, "INVITE".to_string())
            });
            (seq, answered)
        })
        .collect()
}

/// One line per traced message, for failure messages.
fn summary(trace: &[Traced]) -> String {
    trace
        .iter()
        .map(|t| {
            format!(
                "{} {} {} | {} | {}",
                if t.sent { "->" } else { "<-" },
                t.remote,
                t.first_line(),
                t.header("Call-ID"),
                t.header("CSeq")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------

fn metric(addr: SocketAddr, series: &str) -> f64 {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Polls `vigil ctl registrations` until `user` is registered from `from`.
fn wait_registered(vigil: &Vigil, user: &str, from: SocketAddr, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (ok, out, err) = vigil.ctl(&["registrations"]);
        assert!(ok, "vigil ctl registrations: {err}");
        let registrations: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        let found = registrations
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["user"] == user && r["received"] == from.to_string());
        if found {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{user} not registered from {from} within {limit:?}: {out}\n{}",
            vigil.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The calls `vigil ctl calls` lists.
fn calls(vigil: &Vigil) -> Vec<serde_json::Value> {
    let (ok, out, err) = vigil.ctl(&["calls"]);
    assert!(ok, "vigil ctl calls: {err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("JSON")
}

/// The config under test: the registrar as shipped (no `digest_algorithms`),
/// lab-short keep-alive and session-timer intervals so that both happen within
/// seconds, Vigil refreshing with re-INVITE, and the trunks' sipp peers (which
/// cannot take a re-INVITE) left without timers.
fn config(net: Net, dir: &Path, keepalive_mode: &str) -> String {
    let dir = dir.display();
    format!(
        r#"listen: ["udp:{vigil}:{VIGIL_PORT}"]
trunks:
  - name: pbx
    inbound: {{ from: ["{caller}/32"] }}
    route_to: carrier
    session_timer: {{ refresh_non_timer_peers: false }}
  - name: carrier
    outbound: {{ to: "{callee}:{CALLEE_PORT}" }}
    session_timer: {{ refresh_non_timer_peers: false }}
cdr: {{ path: "{dir}/cdr.jsonl" }}
log: {{ level: "info", format: json }}
metrics: {{ listen: "{vigil}:{METRICS_PORT}" }}
registrar: {{ domain: vigil.local, db: "{dir}/registrar.db" }}
users:
  - {{ user: "1001", password: secret1001, route_to: carrier }}
nat_keepalive: {{ period: 2, allow_short_intervals: true, mode: {keepalive_mode} }}
session_timer: {{ ttl: 8, min_se: 2, allow_short_intervals: true, refresh_method: reinvite }}
trace: {{ users: ["1001"], file: "{dir}/trace.log" }}
"#,
        vigil = net.vigil,
        caller = net.caller,
        callee = net.callee,
    )
}

#[test]
fn baresip_registers_calls_both_ways_and_answers_refreshes_with_the_default_config() {
    let net = Net::new(NET);
    let phone_sip = SocketAddr::new(phone_ip(), PHONE_SIP_PORT);
    let metrics = SocketAddr::new(net.vigil, METRICS_PORT);
    let dir = tempfile::tempdir().expect("temp dir");
    let trace_file = dir.path().join("trace.log");
    let text = config(net, dir.path(), "payload");
    let vigil = Vigil::start_with(net, dir, &text);
    let phone = Baresip::start(&format!(
        "<sip:1001@vigil.local>;auth_pass=secret1001;outbound=\"sip:{}\";answermode=auto;regint=300",
        net.vigil_addr()
    ));

    // Registration: one MD5 challenge, answered, 200.
    wait_registered(&vigil, "1001", phone_sip, Duration::from_secs(20));
    phone.wait_for("200 OK (Vigil)", Duration::from_secs(5));
    let registers: Vec<Traced> = trace(&trace_file)
        .into_iter()
        .filter(|t| t.header("CSeq").ends_with("REGISTER"))
        .take(4)
        .collect();
    let steps: Vec<(bool, &str)> = registers.iter().map(|t| (t.sent, t.first_line())).collect();
    assert_eq!(
        steps,
        [
            (false, "REGISTER sip:vigil.local SIP/2.0"),
            (true, "SIP/2.0 401 Unauthorized"),
            (false, "REGISTER sip:vigil.local SIP/2.0"),
            (true, "SIP/2.0 200 OK"),
        ],
        "{registers:#?}"
    );
    let challenges = registers[1].headers("WWW-Authenticate");
    assert_eq!(challenges.len(), 1, "one challenge: {challenges:?}");
    assert!(challenges[0].contains("algorithm=MD5"), "{challenges:?}");
    // baresip leaves `algorithm` out of its answer: MD5 (RFC 7616 §3.4.1).
    let answer = registers[2].header("Authorization");
    assert!(
        answer.starts_with("Digest ")
            && (!answer.contains("algorithm=") || answer.contains("algorithm=MD5")),
        "{answer}"
    );

    // Keep-alives: baresip reads each HELLO as a broken SIP message and says so.
    let before = phone.count("msg decode err");
    let sent_before = metric(metrics, "vigil_keepalives_sent_total");
    std::thread::sleep(Duration::from_millis(6_500));
    let heard = phone.count("msg decode err") - before;
    let sent = metric(metrics, "vigil_keepalives_sent_total") - sent_before;
    assert!(
        heard >= 2 && sent >= 2.0,
        "HELLO every 2 s reaches the phone: {heard} heard, {sent} sent in 6.5 s"
    );

    // Keep-alives as SIP stacks expect them (RFC 5626's CRLF): no more errors.
    std::fs::write(vigil.config_path(), config(net, vigil.dir.path(), "crlf"))
        .expect("rewrite config");
    let (ok, out, err) = vigil.ctl(&["reload"]);
    assert!(ok, "reload: {out}{err}");
    std::thread::sleep(Duration::from_millis(2_500));
    let errors_after_reload = phone.count("msg decode err");
    let sent_after_reload = metric(metrics, "vigil_keepalives_sent_total");

    // A call from the trunk to the phone: auto-answered, refreshed by
    // re-INVITE every 4 s (Session-Expires 8), hung up by the caller at 13 s.
    let trunk_call = caller(net, net.caller, None, "1001", &["-m", "1", "-d", "13000"]);
    phone.wait_for("Call established", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(6_000));
    let up = calls(&vigil);
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["trunk_out"], "user:1001", "{}", up[0]);
    assert_eq!(up[0]["b_leg"]["refresher"], "vigil", "{}", up[0]);
    assert!(
        up[0]["b_leg"]["refreshes"].as_u64() >= Some(1),
        "refreshed and still up at 6 s: {}",
        up[0]
    );
    trunk_call.expect_success(Duration::from_secs(40));
    phone.wait_for("terminated", Duration::from_secs(10));

    // A call from the phone to a carrier number: 407, then placed; Vigil
    // refreshes the phone's leg; the phone hangs up at about 12 s.
    let carrier = callee(net, None, &["-m", "1"]);
    phone.command("/dial 0049301234");
    phone.wait_for_n("Call established", 2, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(6_000));
    let up = calls(&vigil);
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["trunk_in"], "user:1001", "{}", up[0]);
    assert_eq!(up[0]["a_leg"]["refresher"], "vigil", "{}", up[0]);
    assert!(
        up[0]["a_leg"]["refreshes"].as_u64() >= Some(1),
        "refreshed and still up at 6 s: {}",
        up[0]
    );
    std::thread::sleep(Duration::from_millis(6_000));
    phone.command("/hangup");
    carrier.expect_success(Duration::from_secs(20));

    let errors_at_end = phone.count("msg decode err");
    let crlf_sent = metric(metrics, "vigil_keepalives_sent_total") - sent_after_reload;
    assert!(
        crlf_sent >= 10.0,
        "CRLF keep-alives went on during the calls: {crlf_sent}"
    );
    assert_eq!(
        errors_at_end, errors_after_reload,
        "baresip takes CRLF keep-alives silently"
    );
    assert_eq!(
        metric(metrics, "vigil_refreshes_answered_total"),
        metric(metrics, "vigil_refreshes_sent_total")
    );
    for cause in ["timeout", "status", "session_expired"] {
        assert_eq!(
            metric(
                metrics,
                &format!("vigil_refreshes_failed_total{{cause=\"{cause}\"}}")
            ),
            0.0,
            "{cause}"
        );
    }

    // Read before the stop: stopping removes the daemon's directory.
    let traced = trace(&trace_file);
    let stopped = vigil.stop();
    assert!(stopped.status.success(), "{}", stopped.log);
    // The phone stayed on its loopback address: in its Contacts and its SDP.
    for t in traced.iter().filter(|t| !t.sent && t.remote == phone_sip) {
        let contact = t.header("Contact");
        assert!(
            contact.is_empty() || contact.contains(&format!("@{phone_sip}")),
            "{}",
            t.text
        );
        for c in t.text.lines().filter(|l| l.starts_with("c=")) {
            assert_eq!(c, format!("c=IN IP4 {}", phone_ip()), "{}", t.text);
        }
    }
    let cdrs = stopped.cdrs;
    assert_eq!(cdrs.len(), 2, "{cdrs:?}");

    let inbound = &cdrs[0];
    assert_eq!(
        (&inbound["trunk_in"], &inbound["trunk_out"]),
        (&"pbx".into(), &"user:1001".into()),
        "{inbound}"
    );
    assert_eq!(inbound["end_reason"], "caller-bye", "{inbound}");
    assert!(inbound["duration_ms"].as_u64() >= Some(12_500), "{inbound}");
    let b_call_id = inbound["b_call_id"].as_str().expect("B leg");
    let refreshes = refreshes_to_phone(&traced, b_call_id);
    assert!(
        refreshes.len() >= 2 && refreshes.iter().all(|&(_, ok)| ok),
        "every re-INVITE to the called phone got its 200: {refreshes:?}\n{}",
        summary(&traced)
    );

    let outbound = &cdrs[1];
    assert_eq!(
        (&outbound["trunk_in"], &outbound["trunk_out"]),
        (&"user:1001".into(), &"carrier".into()),
        "{outbound}"
    );
    assert_eq!(outbound["end_reason"], "caller-bye", "{outbound}");
    assert!(
        outbound["duration_ms"].as_u64() >= Some(11_000),
        "{outbound}"
    );
    let a_call_id = outbound["call_id"].as_str().expect("A leg");
    let challenge = traced
        .iter()
        .find(|t| t.sent && t.header("Call-ID") == a_call_id && t.status() == Some(407))
        .expect("the phone's INVITE is challenged");
    assert_eq!(
        challenge.first_line(),
        "SIP/2.0 407 Proxy Authentication Required"
    );
    let challenges = challenge.headers("Proxy-Authenticate");
    assert!(
        challenges.len() == 1 && challenges[0].contains("algorithm=MD5"),
        "{challenges:?}"
    );
    let refreshes = refreshes_to_phone(&traced, a_call_id);
    assert!(
        refreshes.len() >= 2 && refreshes.iter().all(|&(_, ok)| ok),
        "every re-INVITE to the calling phone got its 200: {refreshes:?}\n{}",
        summary(&traced)
    );
}

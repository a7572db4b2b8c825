//! The harness for end-to-end tests: a real `vigil` process on a loopback address
//! of its own, and real SIP peers (sipp) around it.
//!
//! Each test takes a distinct `127.0.N.0/24` network (see [`Net`]) so tests can run
//! in parallel without sharing ports. Everything is bounded in time: a peer or a
//! daemon that hangs is killed and the test fails saying so.

#![allow(dead_code)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The addresses of one test: Vigil, the caller (a trunk's inbound network), the
/// callee (the outbound trunk) and a stranger no trunk admits.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    pub vigil: IpAddr,
    pub caller: IpAddr,
    pub callee: IpAddr,
    pub stranger: IpAddr,
}

pub const VIGIL_PORT: u16 = 5060;
pub const CALLER_PORT: u16 = 5061;
pub const CALLEE_PORT: u16 = 5080;

impl Net {
    /// The network `127.0.n.0/24`; every test uses its own `n`.
    pub fn new(n: u8) -> Net {
        let ip = |host| IpAddr::V4(Ipv4Addr::new(127, 0, n, host));
        Net {
            vigil: ip(1),
            caller: ip(2),
            callee: ip(3),
            stranger: ip(4),
        }
    }

    pub fn vigil_addr(&self) -> SocketAddr {
        SocketAddr::new(self.vigil, VIGIL_PORT)
    }

    /// The standard config: `pbx` (the caller) routes to `carrier` (the callee).
    pub fn config(&self, cdr_path: &Path, extra: &str) -> String {
        format!(
            r#"listen: ["udp:{vigil}:{VIGIL_PORT}"]
trunks:
  - name: pbx
    inbound: {{ from: ["{caller}/32"] }}
    route_to: carrier
  - name: carrier
    outbound: {{ to: "{callee}:{CALLEE_PORT}" }}
cdr: {{ path: "{cdr}" }}
log: {{ level: "info", format: json }}
{extra}"#,
            vigil = self.vigil,
            caller = self.caller,
            callee = self.callee,
            cdr = cdr_path.display(),
        )
    }
}

/// A running `vigil run` process.
pub struct Vigil {
    child: Option<Child>,
    pub dir: TempDir,
    pub net: Net,
}

/// What a stopped daemon left behind.
pub struct Stopped {
    pub status: ExitStatus,
    pub took: Duration,
    pub log: String,
    pub cdrs: Vec<serde_json::Value>,
}

impl Vigil {
    /// Starts Vigil with the standard config plus `extra` YAML, and waits until it
    /// answers OPTIONS.
    pub fn start(net: Net, extra: &str) -> Vigil {
        let dir = tempfile::tempdir().expect("temp dir");
        // `{dir}` in the extra YAML names the test's own directory (a database…).
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        let config = net.config(&dir.path().join("cdr.jsonl"), &extra);
        Vigil::start_with(net, dir, &config)
    }

    /// Waits (at most 10 s) until the state store holds `calls` calls, as
    /// `vigil ctl status` says.
    pub fn wait_saved(&self, calls: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, stdout, _) = self.ctl(&["status"]);
            let status: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
            if status["state"]["calls"] == calls {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the store holds {} calls, want {calls}",
                status["state"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the daemon with SIGKILL (no shutdown at all) and returns its
    /// directory, config and all, to start it again.
    pub fn kill_hard(mut self) -> TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Starts the daemon again on a directory left by [`Vigil::kill_hard`].
    pub fn restart(net: Net, dir: TempDir) -> Vigil {
        let config = std::fs::read_to_string(dir.path().join("vigil.yaml")).expect("config");
        Vigil::start_with(net, dir, &config)
    }

    /// Starts Vigil on a config text written into `dir`.
    pub fn start_with(net: Net, dir: TempDir, config: &str) -> Vigil {
        let config_path = dir.path().join("vigil.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("vigil.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vigil");
        let mut vigil = Vigil {
            child: Some(child),
            dir,
            net,
        };
        vigil.wait_ready();
        vigil
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("vigil exited at start ({status}):\n{}", self.log());
            }
            let replies = exchange(
                SocketAddr::new(self.net.caller, 0),
                self.net.vigil_addr(),
                &options_request(self.net.caller, "ready-check"),
                Duration::from_millis(200),
            );
            if replies.iter().any(|r| r.starts_with("SIP/2.0 200")) {
                return;
            }
        }
        panic!("vigil did not answer OPTIONS within 10 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vigil.log")).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("vigil.yaml")
    }

    /// The daemon's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn cdr_path(&self) -> PathBuf {
        self.dir.path().join("cdr.jsonl")
    }

    /// The CDRs written so far, parsed (a line that is not JSON fails the test).
    pub fn cdrs(&self) -> Vec<serde_json::Value> {
        read_cdrs(&self.cdr_path())
    }

    /// `vigil ctl --config FILE ARGS...` on this daemon: (exit ok, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("ctl")
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .output()
            .expect("run vigil ctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits (at most 10 s) for the daemon to exit.
    pub fn stop(mut self) -> Stopped {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
        let status = wait_child(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
            panic!("vigil did not stop within 10 s of SIGTERM:\n{}", self.log())
        });
        Stopped {
            status,
            took: started.elapsed(),
            log: self.log(),
            cdrs: read_cdrs(&self.cdr_path()),
        }
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn read_cdrs(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("CDR line is not JSON ({e}): {l}"))
        })
        .collect()
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// sipp

/// The sipp binary; the test command (tests/run.sh) installs it when missing.
pub fn sipp_bin() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("sipp");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "sipp is not installed: run tests/run.sh (it installs Debian's sip-tester), or apt-get install sip-tester"
    );
}

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios")
        .join(name)
}

/// A sipp process. Killed when dropped.
pub struct Sipp {
    child: Option<Child>,
    name: String,
    dir: TempDir,
}

/// How a sipp run ended.
pub struct SippResult {
    pub status: ExitStatus,
    pub output: String,
    pub errors: String,
    /// What `-trace_msg` logged (empty without it).
    pub messages: String,
}

impl Sipp {
    /// Starts sipp with `args` (plus -nostdin and an error log); `name` labels it in
    /// failure messages.
    pub fn spawn(name: &str, args: &[String]) -> Sipp {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::fs::File::create(dir.path().join("out.log")).expect("out");
        let err = out.try_clone().expect("clone");
        let child = Command::new(sipp_bin())
            .args(args)
            .args(["-nostdin", "-trace_err", "-error_file"])
            .arg(dir.path().join("errors.log"))
            .current_dir(dir.path())
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .expect("start sipp");
        Sipp {
            child: Some(child),
            name: name.to_string(),
            dir,
        }
    }

    /// Waits for sipp to finish on its own (at most `limit`).
    pub fn wait(mut self, limit: Duration) -> SippResult {
        let mut child = self.child.take().expect("running");
        let status = wait_child(&mut child, limit);
        let result = self.result(status);
        match status {
            Some(_) => result,
            None => panic!(
                "sipp {} did not finish within {limit:?}:\n{}\n{}",
                self.name, result.output, result.errors
            ),
        }
    }

    /// Waits and asserts sipp exited 0 (every call succeeded).
    pub fn expect_success(self, limit: Duration) -> SippResult {
        let name = self.name.clone();
        let r = self.wait(limit);
        assert!(
            r.status.success(),
            "sipp {name} failed ({}):\n{}\n--- errors ---\n{}",
            r.status,
            tail(&r.output, 60),
            tail(&r.errors, 60)
        );
        r
    }

    /// Stops a sipp that would run forever (a UAS), returning what it saw.
    pub fn stop(mut self) -> SippResult {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let status = child.wait().expect("wait sipp");
        self.result(Some(status))
    }

    /// The messages sipp logged with `-trace_msg`.
    pub fn messages(&self) -> String {
        std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    }

    fn result(&self, status: Option<ExitStatus>) -> SippResult {
        let read = |f: &str| {
            let mut s = String::new();
            if let Ok(mut file) = std::fs::File::open(self.dir.path().join(f)) {
                let _ = file.read_to_string(&mut s);
            }
            s
        };
        SippResult {
            status: status.unwrap_or_default(),
            output: read("out.log"),
            errors: read("errors.log"),
            messages: self.messages(),
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `lines` lines of `s`.
pub fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A callee: sipp as UAS on the net's callee address, with a scenario file (or
/// `-sn uas` when `scenario_file` is None).
pub fn callee(net: Net, scenario_file: Option<&Path>, extra: &[&str]) -> Sipp {
    callee_at(net, CALLEE_PORT, scenario_file, extra)
}

/// [`callee`] on another port of the callee address (a trunk's other
/// gateways).
pub fn callee_at(net: Net, port: u16, scenario_file: Option<&Path>, extra: &[&str]) -> Sipp {
    let mut args: Vec<String> = match scenario_file {
        Some(f) => vec!["-sf".into(), f.display().to_string()],
        None => vec!["-sn".into(), "uas".into()],
    };
    args.extend([
        "-i".into(),
        net.callee.to_string(),
        "-p".into(),
        port.to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let sipp = Sipp::spawn(&format!("callee:{port}"), &args);
    // sipp binds at once; give it a moment so the first INVITE finds it.
    std::thread::sleep(Duration::from_millis(200));
    sipp
}

/// A caller: sipp as UAC from `from` to Vigil, dialling `number`.
pub fn caller(
    net: Net,
    from: IpAddr,
    scenario_file: Option<&Path>,
    number: &str,
    extra: &[&str],
) -> Sipp {
    let mut args: Vec<String> = match scenario_file {
        Some(f) => vec!["-sf".into(), f.display().to_string()],
        None => vec!["-sn".into(), "uac".into()],
    };
    args.extend([
        "-i".into(),
        from.to_string(),
        "-p".into(),
        CALLER_PORT.to_string(),
        "-s".into(),
        number.into(),
        "-timeout".into(),
        "60s".into(),
        "-timeout_error".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(net.vigil_addr().to_string());
    Sipp::spawn("caller", &args)
}

/// Writes a copy of a scenario with `__EXPECTED__` replaced, into `dir`.
pub fn scenario_expecting(dir: &Path, name: &str, code: u16) -> PathBuf {
    let text = std::fs::read_to_string(scenario(name)).expect("scenario");
    let path = dir.join(format!("{code}-{name}"));
    std::fs::write(&path, text.replace("__EXPECTED__", &code.to_string())).expect("write scenario");
    path
}

// ---------------------------------------------------------------------------
// Raw SIP over UDP

/// Sends `message` from a socket bound at `from` to `to` and collects every
/// datagram that comes back within `wait`.
pub fn exchange(from: SocketAddr, to: SocketAddr, message: &[u8], wait: Duration) -> Vec<String> {
    let socket = UdpSocket::bind(from).expect("bind test socket");
    socket.send_to(message, to).expect("send");
    collect(&socket, wait)
}

/// Every datagram arriving on `socket` within `wait`.
pub fn collect(socket: &UdpSocket, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut replies = Vec::new();
    let mut buf = [0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return replies;
        }
        socket.set_read_timeout(Some(left)).expect("timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => replies.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => return replies,
        }
    }
}

/// An OPTIONS request from `from`, unique per `tag`.
pub fn options_request(from: IpAddr, tag: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:vigil@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from}:5999;branch=z9hG4bK-{tag}-{nonce};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@{from}>;tag={tag}\r\nTo: <sip:vigil@127.0.0.1>\r\n\
Call-ID: {tag}-{nonce}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    )
    .into_bytes()
}

/// Vigil's `/metrics` page, scraped over HTTP from `addr` (its `metrics.listen`).
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::Write;
    let mut http = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    http.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    http.read_to_string(&mut text).expect("response");
    text
}

/// One series of a scraped `/metrics` page, e.g.
/// `vigil_calls_shed_total{reason="backlog"}` (0 when absent).
pub fn series(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// What Vigil's own overload control did, from a scraped `/metrics` page:
/// new calls shed because a worker's queue was half full or because
/// datagrams had waited in the kernel, and how many datagrams waited over
/// 250 ms (for failure messages: did the machine fall behind?).
pub fn overload_summary(metrics: &str) -> String {
    let waited = |le: &str| {
        series(metrics, "vigil_receive_wait_seconds_count")
            - series(
                metrics,
                &format!("vigil_receive_wait_seconds_bucket{{le=\"{le}\"}}"),
            )
    };
    format!(
        "calls shed: {} for a worker queue half full, {} for datagrams that waited in the kernel; \
         of {} datagrams, {} waited over 250 ms, {} over 1 s",
        series(metrics, r#"vigil_calls_shed_total{reason="overload"}"#),
        series(metrics, r#"vigil_calls_shed_total{reason="backlog"}"#),
        series(metrics, "vigil_receive_wait_seconds_count"),
        waited("0.25"),
        waited("1"),
    )
}

/// The status code of a response's first line.
pub fn status_of(response: &str) -> Option<u16> {
    response.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

// ---------------------------------------------------------------------------
// rtpengine

#[path = "rtpengine.rs"]
pub mod rtpengine;

// ---------------------------------------------------------------------------
// PostgreSQL

#[path = "postgres.rs"]
pub mod postgres;

#[path = "tmpfs.rs"]
pub mod tmpfs;

// ---------------------------------------------------------------------------
// dnsmasq

#[path = "dnsmasq.rs"]
pub mod dnsmasq;

// ---------------------------------------------------------------------------
// Redis, the state store several nodes share

#[path = "redis.rs"]
pub mod redis;

// A registering phone

#[path = "phone.rs"]
pub mod phone;

// Kamailio as a carrier

#[path = "kamailio.rs"]
pub mod kamailio;

// ---------------------------------------------------------------------------
// Policy plugins

#[path = "plugin_build.rs"]
mod plugin_build;

/// Builds the workspace's plugin crate `crate_name` (see [`plugin_build`]) and
/// returns its shared library.
pub fn plugin_library(crate_name: &str) -> PathBuf {
    plugin_build::build_plugin_libraries(&[crate_name]).remove(0)
}

/// A script from the repository's `scripts/` folder.
pub fn example_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

/// How long after `after` the first `method` request in a sipp `-trace_msg`
/// log arrived (sipp stamps each message with the local time; the test
/// machines run on UTC): the time from a kill to the first refresh a new
/// process sent. `None` without one.
pub fn first_request_after(
    messages: &str,
    method: &str,
    after: std::time::SystemTime,
) -> Option<Duration> {
    let mut stamp = None;
    let start = format!("{method} sip:");
    for line in messages.lines() {
        if let Some(rest) = line.strip_prefix("----------------------------------------------- ") {
            // `2026-12-07\t06:36:04.123456`
            let text = rest.trim().replace('\t', "T");
            stamp = humantime::parse_rfc3339_weak(&text).ok();
        } else if line.starts_with(&start)
            && let Some(at) = stamp
            && let Ok(later) = at.duration_since(after)
        {
            return Some(later);
        }
    }
    None
}

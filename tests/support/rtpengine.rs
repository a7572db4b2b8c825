//! A real rtpengine (Debian's `rtpengine-daemon`, which tests/run.sh installs
//! when missing) for the tests that anchor media on it: userspace only (no
//! kernel table), bound to loopback, in the test's own directory, its ng
//! port and media port range the test's own. Stopped by its PID when
//! dropped (SIGTERM, then SIGKILL after 3 s).

use std::net::{SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The rtpengine binary.
pub fn rtpengine_bin() -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join("rtpengine"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "rtpengine is not installed: run tests/run.sh (it installs it), \
or apt-get install rtpengine-daemon"
            )
        })
}

/// sip-tester's 7 s of G.711 A-law RTP, which the scenarios' `play_pcap_audio`
/// names by this path.
pub const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

/// The RTP packets of [`G711A_PCAP`] (Ethernet, IPv4 and UDP headers cut),
/// for a test's own socket to send as a phone would.
pub fn g711a_packets() -> Vec<Vec<u8>> {
    let pcap = std::fs::read(G711A_PCAP)
        .unwrap_or_else(|e| panic!("{G711A_PCAP}: {e} (sip-tester ships it; run tests/run.sh)"));
    // A little-endian pcap: a 24-byte file header, then per packet a 16-byte
    // record header whose third word is the captured length.
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len =
            u32::from_le_bytes([pcap[at + 8], pcap[at + 9], pcap[at + 10], pcap[at + 11]]) as usize;
        let frame = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        // Ethernet (14) + IPv4 without options (20) + UDP (8).
        if frame.len() > 42 {
            packets.push(frame[42..].to_vec());
        }
        at += 16 + len;
    }
    assert!(
        packets.len() > 100 && packets.iter().all(|p| p[0] == 0x80),
        "g711a.pcap holds RTP"
    );
    packets
}

/// One rtpengine process.
pub struct Rtpengine {
    child: Option<Child>,
    /// Where its ng control protocol listens.
    pub ng: SocketAddr,
    /// Its media ports.
    pub ports: RangeInclusive<u16>,
    log: PathBuf,
}

impl Rtpengine {
    /// Starts rtpengine with ng on `127.0.0.1:ng_port` and media on
    /// 127.0.0.1 in `ports`, logging to `DIR/rtpengine-RUN.log`; waits until
    /// it answers an ng `ping`. Its own `--timeout` (all streams dead) is
    /// 60 s: longer than any test call, so only Vigil ends calls.
    pub fn start(dir: &Path, run: u32, ng_port: u16, ports: RangeInclusive<u16>) -> Rtpengine {
        Rtpengine::start_with_timeout(dir, run, ng_port, ports, 60)
    }

    /// The same with its own `--timeout` (seconds): it forgets a call whose
    /// streams were all silent that long.
    pub fn start_with_timeout(
        dir: &Path,
        run: u32,
        ng_port: u16,
        ports: RangeInclusive<u16>,
        timeout: u32,
    ) -> Rtpengine {
        let log = dir.join(format!("rtpengine-{run}.log"));
        let out = std::fs::File::create(&log).expect("rtpengine log file");
        let child = Command::new(rtpengine_bin())
            .args([
                "--config-file=none",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng=127.0.0.1:{ng_port}"),
                &format!("--port-min={}", ports.start()),
                &format!("--port-max={}", ports.end()),
                &format!("--timeout={timeout}"),
                "--foreground",
                "--log-stderr",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .spawn()
            .expect("start rtpengine");
        let engine = Rtpengine {
            child: Some(child),
            ng: SocketAddr::from(([127, 0, 0, 1], ng_port)),
            ports,
            log,
        };
        engine.wait_ready();
        engine
    }

    /// Pings until rtpengine answers `pong` (at most 15 s).
    fn wait_ready(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind an ng socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            let _ = socket.send_to(b"ready-1 d7:command4:pinge", self.ng);
            if let Ok((n, _)) = socket.recv_from(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains("pong")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("rtpengine did not answer ping within 15 s:\n{}", self.log());
    }

    /// The Call-IDs rtpengine holds (ng `list`): a call Vigil forgot to
    /// `delete` stays here, its ports taken, until rtpengine's own timeout.
    pub fn calls(&self) -> Vec<String> {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind an ng socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = vec![0u8; 65_536];
        for attempt in 0..5 {
            let cookie = format!("list-{}-{attempt}", std::process::id());
            let request = format!("{cookie} d7:command4:liste");
            socket
                .send_to(request.as_bytes(), self.ng)
                .expect("send list");
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Some(dict) = buf[..n].iter().position(|&b| b == b' ').and_then(|space| {
                bt_bencode::from_slice::<bt_bencode::Value>(&buf[space + 1..n]).ok()
            }) else {
                continue;
            };
            let calls = dict
                .get("calls")
                .and_then(|c| c.as_array())
                .unwrap_or_else(|| panic!("ng list answered without calls: {dict:?}"));
            return calls
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
        }
        panic!("rtpengine did not answer ng list:\n{}", self.log());
    }

    /// Whether `addr` is one of this rtpengine's media addresses.
    pub fn owns(&self, addr: SocketAddr) -> bool {
        addr.ip().to_string() == "127.0.0.1" && self.ports.contains(&addr.port())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Freezes it (SIGSTOP): alive but answering nothing, a stalled
    /// rtpengine; what it is sent waits in its socket's buffer.
    pub fn stall(&self) {
        self.signal("-STOP");
    }

    /// Fills a stalled rtpengine's ng receive buffer (with 4 MB of pings
    /// from another socket), so that what Vigil sends it next is lost, as on
    /// a network that drops it.
    pub fn fill_ng_buffer(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a flood socket");
        let pad = "x".repeat(1000);
        for i in 0..4000 {
            let ping = format!("fill-{i} d7:command4:ping3:pad{}:{pad}e", pad.len());
            let _ = socket.send_to(ping.as_bytes(), self.ng);
        }
    }

    /// Lets a stalled rtpengine go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("rtpengine running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} rtpengine");
    }

    /// Whether it was started and not killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills it at once (SIGKILL by its PID): a crash, as Vigil sees it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Rtpengine {
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
